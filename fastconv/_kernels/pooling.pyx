# cython: language_level=3
"""Pooling and unpooling kernels, forward and backward.

Every problem is three-dimensional inside: arrays are C-contiguous (P, D, H, W) with
P = N * C planes (a 1d or 2d pool has unit leading spatial dimensions). The Python layer
(pooling.py) describes the pooling windows of each spatial axis as a table, so one kernel
serves max pools, average pools and their adaptive forms:

    win[0, a_off + o]  first input position read by output o along axis a (never padding)
    win[1, a_off + o]  number of input positions it reads (>= 1), `step[a]` apart
    div[a_off + o]     the average pool's divisor factor along the axis (product over axes)

where a_off = 0, OD, OD + OH for axes D, H, W. Indices are flat positions inside one input
plane, (d * H + h) * W + w, PyTorch's convention. Kernels trust their shapes (the Python
layer validated them); the scatters and gathers check each index as they read it (a second
pass over the indices to find their range cost a fifth of max-pool backward), skip one that
lies outside the plane and return whether they skipped any, for the caller to raise.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset
from libc.math cimport INFINITY

from fastconv._kernels.workspace cimport fc_workspace

cdef extern from "max_pool_rows.h":
    int fc_max_rows_f32(const float** rows, const int64_t* row_pos, int nrows, int kw_taps,
                        int sw, Py_ssize_t pw, Py_ssize_t W, float* out, int64_t* indices,
                        Py_ssize_t lo, Py_ssize_t hi) noexcept nogil

cdef extern from "stream_store.h":
    void fc_stream_copy(void* dst, const void* src, size_t bytes) noexcept nogil
    void fc_stream_fence() noexcept nogil

# Slots of the per-thread workspace (workspace.h).
cdef enum:
    WS_SCATTER_PLANE
    WS_PLANE_LANES

cdef extern from "transpose_tiles.h":
    void fc_transpose_f32(const float* src, Py_ssize_t src_stride, float* dst,
                          Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
    void fc_transpose_f64(const double* src, Py_ssize_t src_stride, double* dst,
                          Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil

# The scatter's planes are built in a per-thread buffer and streamed out when a plane fits
# this (well inside L2) and the whole output is past this (larger than the caches hold for
# its reader).
cdef enum:
    STREAM_PLANE_BYTES = 256 * 1024
    STREAM_MIN_BYTES = 4 * 1024 * 1024

cdef enum:
    MAX_ROWS = 16       # the register path of max pools handles windows up to 16 rows (d x h)
    VECTOR_BLOCK = 16   # outputs per AVX-512 vector of float32 (a multiple of narrower ones)
    DEINTERLEAVE_BLOCK = 64     # outputs per block of the 3x3 stride-2 path (2 KiB of buffers)


ctypedef struct PoolShape:
    Py_ssize_t planes
    Py_ssize_t in_size[3]           # D, H, W
    Py_ssize_t out_size[3]          # OD, OH, OW
    Py_ssize_t step[3]              # distance between the positions a window reads (dilation)
    const int64_t* first[3]         # per axis, per output: first position read
    const int64_t* count[3]         # per axis, per output: number of positions read
    const double* divisor[3]        # per axis, per output: average-pool divisor factor
    Py_ssize_t kernel_w, stride_w, pad_w    # a regular pool's W windows; kernel_w 0: adaptive


cdef PoolShape make_shape(tuple in_shape, tuple out_shape, tuple step,
                          const int64_t[:, ::1] win, const double[::1] div,
                          tuple regular_w) except *:
    cdef PoolShape s
    cdef Py_ssize_t offset = 0
    cdef int a
    s.planes = in_shape[0]
    s.kernel_w, s.stride_w, s.pad_w = regular_w
    for a in range(3):
        s.in_size[a] = in_shape[1 + a]
        s.out_size[a] = out_shape[1 + a]
        s.step[a] = step[a]
        s.first[a] = &win[0, offset]
        s.count[a] = &win[1, offset]
        s.divisor[a] = &div[offset] if div.shape[0] > 0 else NULL
        offset += s.out_size[a]
    return s


# ---------------------------------------------------------------------------------------------
# forward: one output row (plane p, od, oh) per work item; rows write disjoint outputs.
# Per output the window is always scanned in window order (d, h, w), so the NaN and tie rules
# match the element-by-element definition; what differs is how the scan is laid out:
# - regular max pools reading at most MAX_ROWS input rows per window (1-, 2- and 3-d): the
#   whole window of an output in registers, outputs in a branch-free loop; windows 2 wide at
#   stride 2 and 3 wide at stride 1 or 2 (one row per depth for 1-d, 2 or 3 for 2-d and 3-d)
#   have their taps written out, the form the compiler vectorizes (measured on the benchmark
#   cases: 3-6x faster than the generic loop, whose data-dependent branches mispredict on
#   random data); a 3-d window runs them depth by depth, each continuing the scan in place.
# - other regular pools (larger windows, average): tap by tap along W, each tap updating the
#   whole output row in one branch-free loop.
# - adaptive pools (irregular windows): one output at a time through the window tables.

cdef inline void tap_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t in_len,
                           Py_ssize_t out_len, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs o with 0 <= o * stride + offset < in_len."""
    cdef Py_ssize_t last = in_len - 1 - offset
    lo[0] = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi[0] = 0 if last < 0 else last // stride + 1
    if hi[0] > out_len:
        hi[0] = out_len
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef inline void max_tap(const floating* src, Py_ssize_t stride, floating* best, int64_t* pos,
                         int64_t pos0, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """best[o], pos[o] := src[o * stride], pos0 + o * stride where that is larger or NaN."""
    cdef Py_ssize_t o
    cdef floating v, b
    cdef bint take
    if pos == NULL:
        for o in range(lo, hi):
            v = src[o * stride]
            b = best[o]
            best[o] = v if (v > b) | (v != v) else b
    else:
        for o in range(lo, hi):
            v = src[o * stride]
            b = best[o]
            take = (v > b) | (v != v)
            best[o] = v if take else b
            pos[o] = pos0 + o * stride if take else pos[o]


cdef inline void sum_tap(const floating* src, Py_ssize_t stride, floating* total,
                         Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t o
    for o in range(lo, hi):
        total[o] = total[o] + src[o * stride]


cdef inline void max_outputs(const floating** rows, const int64_t* row_pos, Py_ssize_t nrows,
                             Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dw, Py_ssize_t pw,
                             floating* out, int64_t* indices, Py_ssize_t lo,
                             Py_ssize_t hi) noexcept nogil:
    """Outputs [lo, hi) of a row whose W windows lie inside the input: the maximum over the
    `nrows` input rows x KW taps in window order, kept in registers (branch-free selects)."""
    cdef Py_ssize_t ow, r, kw, w
    cdef floating v, best
    cdef int64_t pos
    cdef bint take
    for ow in range(lo, hi):
        w = ow * sw - pw
        best = -INFINITY
        pos = row_pos[0] + w
        for r in range(nrows):
            for kw in range(KW):
                v = rows[r][w + kw * dw]
                take = (v > best) | (v != v)
                best = v if take else best
                pos = row_pos[r] + w + kw * dw if take else pos
        out[ow] = best
        if indices != NULL:
            indices[ow] = pos


cdef inline void max_tap_update(floating v, int64_t p, floating* best,
                                int64_t* pos) noexcept nogil:
    """PyTorch's rule for one window element: take v when v > best or v is NaN."""
    cdef bint take = (v > best[0]) | (v != v)
    best[0] = v if take else best[0]
    pos[0] = p if take else pos[0]


cdef inline void max_window_start(const floating* out, const int64_t* indices, Py_ssize_t o,
                                  bint update, int64_t first, floating* best,
                                  int64_t* pos) noexcept nogil:
    """The state a window's scan starts from: nothing seen yet, or (update) the maximum and
    its position over the rows that an earlier call scanned (a 3-d window, depth by depth)."""
    best[0] = out[o] if update else -INFINITY
    pos[0] = first
    if update and indices != NULL:
        pos[0] = indices[o]


cdef inline void max_rows_k2s2(const floating** rows, const int64_t* row_pos, int nrows,
                               bint update, Py_ssize_t pw, floating* out, int64_t* indices,
                               const Py_ssize_t* ranges) noexcept nogil:
    """max_outputs for windows 2 wide at stride 2 over `nrows` rows, taps written out: with
    nrows a constant at the call, the form the compiler vectorizes across outputs (measured:
    a loop over runtime taps kept it scalar, 3-4x slower)."""
    cdef Py_ssize_t segment, ow, w
    cdef int r
    cdef floating best
    cdef int64_t pos
    for segment in range(2):   # outputs [ranges[0], ranges[1]), then [ranges[2], ranges[3])
        for ow in range(ranges[2 * segment], ranges[2 * segment + 1]):
            w = 2 * ow - pw
            max_window_start(out, indices, ow, update, row_pos[0] + w, &best, &pos)
            for r in range(nrows):
                max_tap_update(rows[r][w], row_pos[r] + w, &best, &pos)
                max_tap_update(rows[r][w + 1], row_pos[r] + w + 1, &best, &pos)
            out[ow] = best
            if indices != NULL:
                indices[ow] = pos


cdef inline void max_rows_k3s1(const floating** rows, const int64_t* row_pos, int nrows,
                               bint update, Py_ssize_t pw, floating* out, int64_t* indices,
                               const Py_ssize_t* ranges) noexcept nogil:
    """max_rows_k2s2 for windows 3 wide at stride 1 (contiguous reads: no deinterleaving)."""
    cdef Py_ssize_t segment, ow, w
    cdef int r
    cdef floating best
    cdef int64_t pos
    for segment in range(2):
        for ow in range(ranges[2 * segment], ranges[2 * segment + 1]):
            w = ow - pw
            max_window_start(out, indices, ow, update, row_pos[0] + w, &best, &pos)
            for r in range(nrows):
                max_tap_update(rows[r][w], row_pos[r] + w, &best, &pos)
                max_tap_update(rows[r][w + 1], row_pos[r] + w + 1, &best, &pos)
                max_tap_update(rows[r][w + 2], row_pos[r] + w + 2, &best, &pos)
            out[ow] = best
            if indices != NULL:
                indices[ow] = pos


cdef inline void max_rows_k3s2(const floating** rows, const int64_t* row_pos, int nrows,
                               bint update, Py_ssize_t pw, floating* out, int64_t* indices,
                               Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """max_rows_k2s2 for windows 3 wide at stride 2 (nrows at most 3). Taps w and w + 2 of
    neighbouring outputs overlap, which the compiler turns into (slow) gathers; so each block
    of outputs first splits its input rows into even and odd columns, then reads them
    contiguously: even[j], odd[j], even[j + 1] (measured: ~3x faster than the strided reads).
    Blocks are whole vectors, the last one overlapping its predecessor (recomputing an output
    is harmless: it starts again from the same state), so no scalar remainder runs either."""
    cdef floating even[3][DEINTERLEAVE_BLOCK + 1]
    cdef floating odd[3][DEINTERLEAVE_BLOCK]
    cdef Py_ssize_t start = lo, n, j, b
    cdef int r
    cdef floating best
    cdef int64_t pos
    cdef int64_t q[3]
    while start < hi:
        n = hi - start if hi - start < DEINTERLEAVE_BLOCK else DEINTERLEAVE_BLOCK
        if n % VECTOR_BLOCK != 0 and hi - lo >= VECTOR_BLOCK:
            if n >= VECTOR_BLOCK:       # whole vectors now, the rest in the last block
                n = n // VECTOR_BLOCK * VECTOR_BLOCK
            else:                       # the last block: one vector ending at hi
                if update:              # an output computed twice must not update twice
                    break
                start = hi - VECTOR_BLOCK
                n = VECTOR_BLOCK
        b = 2 * start - pw              # input column of the first tap of output `start`
        for r in range(nrows):
            for j in range(n):
                even[r][j] = rows[r][b + 2 * j]
                odd[r][j] = rows[r][b + 2 * j + 1]
            even[r][n] = rows[r][b + 2 * n]
            q[r] = row_pos[r] + b
        for j in range(n):
            max_window_start(out, indices, start + j, update, q[0] + 2 * j, &best, &pos)
            for r in range(nrows):
                max_tap_update(even[r][j], q[r] + 2 * j, &best, &pos)
                max_tap_update(odd[r][j], q[r] + 2 * j + 1, &best, &pos)
                max_tap_update(even[r][j + 1], q[r] + 2 * j + 2, &best, &pos)
            out[start + j] = best
            if indices != NULL:
                indices[start + j] = pos
        start = start + n
    if start < hi:                      # update's last outputs, one at a time
        for j in range(start, hi):
            b = 2 * j - pw
            max_window_start(out, indices, j, update, row_pos[0] + b, &best, &pos)
            for r in range(nrows):
                max_tap_update(rows[r][b], row_pos[r] + b, &best, &pos)
                max_tap_update(rows[r][b + 1], row_pos[r] + b + 1, &best, &pos)
                max_tap_update(rows[r][b + 2], row_pos[r] + b + 2, &best, &pos)
            out[j] = best
            if indices != NULL:
                indices[j] = pos


# The written-out kernels below are called with the number of rows a constant (so that the
# compiler unrolls the taps) and with NULL itself for no indices (so that those loops store
# none): one small function per kernel holds its constant calls, few enough for the compiler
# to inline them all (with all 14 in one function it stopped: 2x2 pools ran 5-7x slower).

cdef void max_rows_k2s2_fixed(int nrows, const floating** rows, const int64_t* row_pos,
                              bint update, Py_ssize_t pw, floating* out, int64_t* indices,
                              const Py_ssize_t* ranges) noexcept nogil:
    """max_rows_k2s2 over 1, 2 or 4 rows (1-d, 2x2, 2x2x2 windows)."""
    if nrows == 1 and indices != NULL:
        max_rows_k2s2(rows, row_pos, 1, update, pw, out, indices, ranges)
    elif nrows == 1:
        max_rows_k2s2(rows, row_pos, 1, update, pw, out, NULL, ranges)
    elif nrows == 2 and indices != NULL:
        max_rows_k2s2(rows, row_pos, 2, update, pw, out, indices, ranges)
    elif nrows == 2:
        max_rows_k2s2(rows, row_pos, 2, update, pw, out, NULL, ranges)
    elif indices != NULL:
        max_rows_k2s2(rows, row_pos, 4, update, pw, out, indices, ranges)
    else:
        max_rows_k2s2(rows, row_pos, 4, update, pw, out, NULL, ranges)


cdef void max_rows_k3s1_fixed(int nrows, const floating** rows, const int64_t* row_pos,
                              bint update, Py_ssize_t pw, floating* out, int64_t* indices,
                              const Py_ssize_t* ranges) noexcept nogil:
    """max_rows_k3s1 over 1 or 3 rows."""
    if nrows == 1 and indices != NULL:
        max_rows_k3s1(rows, row_pos, 1, update, pw, out, indices, ranges)
    elif nrows == 1:
        max_rows_k3s1(rows, row_pos, 1, update, pw, out, NULL, ranges)
    elif indices != NULL:
        max_rows_k3s1(rows, row_pos, 3, update, pw, out, indices, ranges)
    else:
        max_rows_k3s1(rows, row_pos, 3, update, pw, out, NULL, ranges)


cdef void max_rows_k3s2_fixed(int nrows, const floating** rows, const int64_t* row_pos,
                              bint update, Py_ssize_t pw, floating* out, int64_t* indices,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """max_rows_k3s2 over 1 or 3 rows."""
    if nrows == 1 and indices != NULL:
        max_rows_k3s2(rows, row_pos, 1, update, pw, out, indices, lo, hi)
    elif nrows == 1:
        max_rows_k3s2(rows, row_pos, 1, update, pw, out, NULL, lo, hi)
    elif indices != NULL:
        max_rows_k3s2(rows, row_pos, 3, update, pw, out, indices, lo, hi)
    else:
        max_rows_k3s2(rows, row_pos, 3, update, pw, out, NULL, lo, hi)


cdef inline void window_rows(const floating* x_p, const PoolShape* s, Py_ssize_t d0,
                             Py_ssize_t nd, Py_ssize_t h0, Py_ssize_t nh, const floating** rows,
                             int64_t* row_pos) noexcept nogil:
    """rows[r], row_pos[r]: the input rows a window of this output row reads (nd x nh of
    them, in window order), as pointers and as flat positions in the plane."""
    cdef Py_ssize_t td, th, r
    for td in range(nd):
        for th in range(nh):
            r = td * nh + th
            row_pos[r] = ((d0 + td * s.step[0]) * s.in_size[1] + h0 + th * s.step[1]) \
                * s.in_size[2]
            rows[r] = x_p + row_pos[r]


cdef inline void interior_outputs(const PoolShape* s, Py_ssize_t* lo,
                                  Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs of a regular pool's row whose windows lie inside the input
    along W (the others read padding)."""
    cdef Py_ssize_t W = s.in_size[2], OW = s.out_size[2]
    cdef Py_ssize_t KW = s.kernel_w, sw = s.stride_w, pw = s.pad_w, dw = s.step[2]
    lo[0] = (pw + sw - 1) // sw
    hi[0] = (W - 1 + pw - (KW - 1) * dw) // sw + 1 if W - 1 + pw - (KW - 1) * dw >= 0 else 0
    if hi[0] > OW:
        hi[0] = OW
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef inline void sum_rows(const floating** rows, int nrows, int KW, int sw, Py_ssize_t pw,
                          floating* out, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """out[o] := the sum over a window KW wide at stride sw of `nrows` rows, in window order
    (the generic loop's order, so the same bits), for the interior outputs [lo, hi). Called
    with constant nrows, KW and sw: the taps unroll and the compiler vectorizes across
    outputs (the generic loop, a pass over the row per tap, ran at 40% of the copy
    bandwidth on the avgpool_2x2 case)."""
    cdef Py_ssize_t ow, w
    cdef int r, kw
    cdef floating total
    for ow in range(lo, hi):
        w = sw * ow - pw
        total = 0
        for r in range(nrows):
            for kw in range(KW):
                total = total + rows[r][w + kw]
        out[ow] = total


cdef bint sum_row_regular(const floating* x_p, floating* out_row, const PoolShape* s,
                          Py_ssize_t d0, Py_ssize_t nd, Py_ssize_t h0,
                          Py_ssize_t nh) noexcept nogil:
    """The window sums of one output row of a regular average pool whose windows are 2 wide
    at stride 2 over 1, 2 or 4 rows (1-d, 2x2, 2x2x2) or 3 wide at stride 1 or 2 over 1 or 3
    rows: interior outputs by a written-out kernel, the W-edge ones through the window
    tables. False (nothing written) for any other window: the caller's generic loop."""
    cdef const floating* rows[4]
    cdef int64_t row_pos[4]
    cdef Py_ssize_t nrows = nd * nh, KW = s.kernel_w, sw = s.stride_w, pw = s.pad_w
    cdef Py_ssize_t lo, hi, i, ow, w0, tw, OW = s.out_size[2]
    cdef int r
    cdef floating total
    if s.step[2] != 1 or not ((KW == 2 and sw == 2 and (nrows == 1 or nrows == 2 or nrows == 4))
                              or (KW == 3 and sw <= 2 and (nrows == 1 or nrows == 3))):
        return False
    window_rows(x_p, s, d0, nd, h0, nh, rows, row_pos)
    interior_outputs(s, &lo, &hi)
    if KW == 2 and nrows == 1:
        sum_rows(rows, 1, 2, 2, pw, out_row, lo, hi)
    elif KW == 2 and nrows == 2:
        sum_rows(rows, 2, 2, 2, pw, out_row, lo, hi)
    elif KW == 2:
        sum_rows(rows, 4, 2, 2, pw, out_row, lo, hi)
    elif sw == 1 and nrows == 1:
        sum_rows(rows, 1, 3, 1, pw, out_row, lo, hi)
    elif sw == 1:
        sum_rows(rows, 3, 3, 1, pw, out_row, lo, hi)
    elif nrows == 1:
        sum_rows(rows, 1, 3, 2, pw, out_row, lo, hi)
    else:
        sum_rows(rows, 3, 3, 2, pw, out_row, lo, hi)
    for i in range(OW - (hi - lo)):      # the W-edge outputs: [0, lo) and [hi, OW)
        ow = i if i < lo else i + hi - lo
        w0 = s.first[2][ow]
        total = 0
        for r in range(nrows):
            for tw in range(s.count[2][ow]):
                total = total + rows[r][w0 + tw]
        out_row[ow] = total
    return True


cdef void max_row_regular(const floating* x_p, floating* out_row, int64_t* idx_row,
                          const PoolShape* s, Py_ssize_t d0, Py_ssize_t nd, Py_ssize_t h0,
                          Py_ssize_t nh) noexcept nogil:
    """One output row of a regular max pool whose window reads nd x nh <= MAX_ROWS input rows:
    float32 with AVX-512 (undilated, stride 1 or 2) all by the vector kernel
    (max_pool_rows.h); otherwise interior outputs in registers, the few W-edge outputs
    (padding) through the window tables. Common window shapes (2 or 3 wide: 1-d, 2x2, 3x3,
    2x2x2) run a written-out kernel over all their rows; other 3-d windows of 2 or 3 rows per
    depth (3x3x3, or cut by padding) run it depth by depth, each depth after the first
    continuing the scan from where the previous one stopped."""
    cdef const floating* rows[MAX_ROWS]
    cdef int64_t row_pos[MAX_ROWS]
    cdef Py_ssize_t OW = s.out_size[2]
    cdef Py_ssize_t KW = s.kernel_w, sw = s.stride_w, pw = s.pad_w, dw = s.step[2]
    cdef Py_ssize_t nrows = nd * nh
    cdef Py_ssize_t r, lo, hi, i, ow, tw, w0, pos
    cdef Py_ssize_t ranges[4]
    cdef floating v, best
    cdef int64_t best_pos
    cdef bint whole, by_depth
    cdef Py_ssize_t group
    window_rows(x_p, s, d0, nd, h0, nh, rows, row_pos)
    # float32 with AVX-512: the whole row, W edges included, by the vector kernel
    if floating is float and dw == 1 and fc_max_rows_f32(
            rows, row_pos, <int> nrows, <int> KW, <int> sw, pw, s.in_size[2], out_row, idx_row,
            0, OW):
        return
    interior_outputs(s, &lo, &hi)
    # Constant window shapes let the compiler unroll the taps and vectorize across outputs.
    # k2s2: whole vector blocks, then one last block overlapping the previous outputs
    # (recomputing an output is harmless), so the scalar remainder loop, whose branches
    # mispredict on random data, never runs (measured: ~2x faster on the k2s2 benchmark's
    # 28-wide rows); k3s1 likewise; k3s2 blocks its outputs itself. A depth after the first
    # updates its outputs in place, so its overlap must not revisit any: one pass each.
    ranges[0] = lo
    ranges[1] = lo + (hi - lo) // VECTOR_BLOCK * VECTOR_BLOCK
    ranges[2] = hi - VECTOR_BLOCK if hi - lo >= VECTOR_BLOCK else ranges[1]
    ranges[3] = hi if ranges[1] < hi else ranges[2]
    # one call over all rows (up to a whole 2x2x2 window), else one per depth
    whole = dw == 1 and ((KW == 2 and sw == 2 and (nrows == 1 or nrows == 2 or nrows == 4)) or
                         (KW == 3 and sw <= 2 and (nrows == 1 or nrows == 3)))
    by_depth = not whole and dw == 1 and ((KW == 2 and sw == 2 and nh <= 2) or
                                          (KW == 3 and sw <= 2 and (nh == 1 or nh == 3)))
    if whole or by_depth:
        group = nrows if whole else nh
        if group < nrows:       # a depth updates its outputs in place: one pass over each
            ranges[1] = hi
            ranges[2] = hi
            ranges[3] = hi
        for r in range(nrows // group):
            if KW == 2:
                max_rows_k2s2_fixed(<int> group, rows + r * group, row_pos + r * group, r > 0,
                                    pw, out_row, idx_row, ranges)
            elif sw == 1:
                max_rows_k3s1_fixed(<int> group, rows + r * group, row_pos + r * group, r > 0,
                                    pw, out_row, idx_row, ranges)
            else:
                max_rows_k3s2_fixed(<int> group, rows + r * group, row_pos + r * group, r > 0,
                                    pw, out_row, idx_row, lo, hi)
    else:
        max_outputs(rows, row_pos, nrows, KW, sw, dw, pw, out_row, idx_row, lo, hi)
    for i in range(OW - (hi - lo)):      # the W-edge outputs: [0, lo) and [hi, OW)
        ow = i if i < lo else i + hi - lo
        w0 = s.first[2][ow]
        best = -INFINITY
        best_pos = row_pos[0] + w0
        for r in range(nrows):
            for tw in range(s.count[2][ow]):
                pos = w0 + tw * dw
                v = rows[r][pos]
                if v > best or v != v:
                    best = v
                    best_pos = row_pos[r] + pos
        out_row[ow] = best
        if idx_row != NULL:
            idx_row[ow] = best_pos


cdef void pool_row(const floating* x, floating* out, int64_t* indices, const PoolShape* s,
                   bint is_max, double divisor_override, Py_ssize_t row, Py_ssize_t p,
                   Py_ssize_t od, Py_ssize_t oh) noexcept nogil:
    """Output row `row`, (plane p, od, oh). Max: out[o] = max over the window of o, NaN
    winning, the first position on ties (PyTorch's rule: take v when v > best or v is NaN),
    indices[o] = its flat position. Average: out[o] = (sum over the window of o, in window
    order) / divisor."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t sd = s.step[0], sh = s.step[1], dw = s.step[2]
    cdef Py_ssize_t sw = s.stride_w
    cdef Py_ssize_t d0 = s.first[0][od], nd = s.count[0][od]
    cdef Py_ssize_t h0 = s.first[1][oh], nh = s.count[1][oh]
    cdef const floating* x_p = x + p * s.in_size[0] * H * W
    cdef const floating* x_row
    cdef floating* out_row = out + row * OW
    cdef int64_t* idx_row = indices + row * OW if indices != NULL else NULL
    cdef Py_ssize_t ow, td, th, kw, tw, w0, nw, base, pos, best_pos, off, lo, hi
    cdef floating v, best
    if is_max and s.kernel_w > 0 and nd * nh <= MAX_ROWS:
        max_row_regular(x_p, out_row, idx_row, s, d0, nd, h0, nh)
        return
    if not is_max and s.kernel_w > 0 and sum_row_regular(x_p, out_row, s, d0, nd, h0, nh):
        pass                # the sums are in out_row; the divisors below
    elif s.kernel_w == 0:     # adaptive windows: one output at a time
        for ow in range(OW):
            w0 = s.first[2][ow]
            nw = s.count[2][ow]
            best = -INFINITY if is_max else 0
            best_pos = (d0 * H + h0) * W + w0
            for td in range(nd):
                for th in range(nh):
                    base = ((d0 + td * sd) * H + h0 + th * sh) * W
                    x_row = x_p + base
                    for tw in range(nw):
                        pos = w0 + tw * dw
                        v = x_row[pos]
                        if not is_max:
                            best = best + v
                        elif v > best or v != v:
                            best = v
                            best_pos = base + pos
            out_row[ow] = best
            if idx_row != NULL:
                idx_row[ow] = best_pos
    else:
        for ow in range(OW):
            out_row[ow] = -INFINITY if is_max else 0
        if idx_row != NULL:
            for ow in range(OW):   # stays when every element is -inf: the first one
                idx_row[ow] = (d0 * H + h0) * W + s.first[2][ow]
        for td in range(nd):
            for th in range(nh):
                base = ((d0 + td * sd) * H + h0 + th * sh) * W
                x_row = x_p + base
                for kw in range(s.kernel_w):
                    off = kw * dw - s.pad_w
                    tap_range(off, sw, W, OW, &lo, &hi)
                    # constant strides let the compiler vectorize the strided loads
                    if is_max and sw == 2:
                        max_tap(x_row + off, 2, out_row, idx_row, base + off, lo, hi)
                    elif is_max and sw == 1:
                        max_tap(x_row + off, 1, out_row, idx_row, base + off, lo, hi)
                    elif is_max:
                        max_tap(x_row + off, sw, out_row, idx_row, base + off, lo, hi)
                    elif sw == 2:
                        sum_tap(x_row + off, 2, out_row, lo, hi)
                    elif sw == 1:
                        sum_tap(x_row + off, 1, out_row, lo, hi)
                    else:
                        sum_tap(x_row + off, sw, out_row, lo, hi)
    if not is_max:
        # two loops, each vectorized (with the branch inside, one scalar loop was a third of
        # the avgpool_2x2 case's time)
        if divisor_override != 0:
            divide_row(out_row, OW, <floating> divisor_override)
        else:
            divide_row_by(out_row, OW, s.divisor[0][od] * s.divisor[1][oh], s.divisor[2])


cdef inline void divide_row(floating* row, Py_ssize_t n, floating divisor) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        row[i] = row[i] / divisor


cdef inline void divide_row_by(floating* row, Py_ssize_t n, double row_divisor,
                               const double* divisors) noexcept nogil:
    """row[i] /= the float of row_divisor * divisors[i] (the product in double, rounded to
    the data's type, as window_divisor rounds it)."""
    cdef Py_ssize_t i
    for i in range(n):
        row[i] = row[i] / <floating> (row_divisor * divisors[i])


cdef inline floating window_divisor(const PoolShape* s, Py_ssize_t od, Py_ssize_t oh,
                                    Py_ssize_t ow, double divisor_override,
                                    floating like) noexcept nogil:
    """An average pool's divisor of output (od, oh, ow): divisor_override if not 0, else
    (D factor * H factor) * W factor, in double, rounded to the data's type (`like`)."""
    if divisor_override != 0:
        return <floating> divisor_override
    return <floating> (s.divisor[0][od] * s.divisor[1][oh] * s.divisor[2][ow])


# Adaptive windows (irregular: their widths vary from output to output) are scanned one output
# at a time, a chain of dependent additions or comparisons per output: 64 of them for 56 -> 7,
# 196 for a global pool of 14x14 planes. With enough planes, PLANE_BLOCK planes go side by
# side instead, each step of the scan taking one element of every plane (independent chains;
# each plane still scans its window in window order, so the bits are the row path's).
cdef enum:
    PLANE_BLOCK = 8

cdef inline void adaptive_plane_block(const floating* x, floating* out, int64_t* indices,
                                      const PoolShape* s, bint is_max, double divisor_override,
                                      Py_ssize_t p0, Py_ssize_t count) noexcept nogil:
    """Every output of planes p0 .. p0 + count - 1 (count <= PLANE_BLOCK): pool_row's
    adaptive branch, the planes side by side."""
    cdef Py_ssize_t H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * H * W, out_plane = OD * OH * OW
    cdef Py_ssize_t od, oh, ow, o, td, th, tw, l, base, pos, first
    cdef Py_ssize_t d0, nd, h0, nh, w0, nw
    cdef const floating* xb = x + p0 * in_plane
    cdef floating acc[PLANE_BLOCK]
    cdef int64_t at[PLANE_BLOCK]
    cdef floating v, divisor
    cdef bint take
    for od in range(OD):
        d0 = s.first[0][od]
        nd = s.count[0][od]
        for oh in range(OH):
            h0 = s.first[1][oh]
            nh = s.count[1][oh]
            for ow in range(OW):
                w0 = s.first[2][ow]
                nw = s.count[2][ow]
                o = (od * OH + oh) * OW + ow
                first = (d0 * H + h0) * W + w0
                for l in range(count):
                    acc[l] = -INFINITY if is_max else 0
                    at[l] = first
                for td in range(nd):
                    for th in range(nh):
                        base = ((d0 + td * s.step[0]) * H + h0 + th * s.step[1]) * W + w0
                        for tw in range(nw):
                            pos = base + tw * s.step[2]
                            if is_max:
                                for l in range(count):
                                    v = xb[l * in_plane + pos]
                                    take = (v > acc[l]) | (v != v)
                                    acc[l] = v if take else acc[l]
                                    at[l] = pos if take else at[l]
                            else:
                                for l in range(count):
                                    acc[l] = acc[l] + xb[l * in_plane + pos]
                if is_max:
                    for l in range(count):
                        out[(p0 + l) * out_plane + o] = acc[l]
                    if indices != NULL:
                        for l in range(count):
                            indices[(p0 + l) * out_plane + o] = at[l]
                else:
                    divisor = window_divisor(s, od, oh, ow, divisor_override, <floating> 0)
                    for l in range(count):
                        out[(p0 + l) * out_plane + o] = acc[l] / divisor


# An average pool's planes side by side in vector lanes (adaptive pools, and regular ones with
# windows at least LANES_MIN_KERNEL_W wide): LANE_PLANES planes' rows of one output row's
# windows are transposed (transpose_tiles.h) into a buffer where each
# position holds the planes' values next to each other, and each window is summed there in
# window order, one vector addition per element for all the planes (the same additions per
# plane as adaptive_plane_block, so the same bits). The scalar side-by-side scan read 8 planes
# one element at a time: about 10 GB/s (Zen 4, 2 threads: (32, 64, 56, 56) -> 7x7 2.7 ms, a
# global pool of it 1.3 ms, PyTorch 1.7-2.4 and 0.32).
cdef enum:
    LANE_PLANES = 16
    LANE_BAND_BYTES = 256 * 1024    # the transposed rows of one output row, per thread
    LANES_MIN_KERNEL_W = 4          # narrower regular windows have written-out row kernels

cdef bint lanes_apply(const PoolShape* s, Py_ssize_t itemsize, int num_threads) noexcept nogil:
    """True if the average pool `s` runs on adaptive_avg_lanes: adaptive or at least
    LANES_MIN_KERNEL_W wide windows, contiguous, every output row's band of input rows within
    LANE_BAND_BYTES, enough blocks of planes."""
    cdef Py_ssize_t widest = 0, oh, od, deepest = 0
    if 0 < s.kernel_w < LANES_MIN_KERNEL_W or s.step[0] != 1 or s.step[1] != 1 \
            or s.step[2] != 1:
        return False
    for oh in range(s.out_size[1]):
        if s.count[1][oh] > widest:
            widest = s.count[1][oh]
    for od in range(s.out_size[0]):
        if s.count[0][od] > deepest:
            deepest = s.count[0][od]
    return (s.planes // LANE_PLANES >= 2 * num_threads
            and LANE_PLANES * deepest * widest * s.in_size[2] * itemsize <= LANE_BAND_BYTES)


cdef inline void adaptive_avg_lanes(const floating* x, floating* out, const PoolShape* s,
                                    double divisor_override, Py_ssize_t p0,
                                    floating* band) noexcept nogil:
    """Every output of the LANE_PLANES planes from p0 of the average pool `s` (lanes_apply),
    through `band` (room for LANE_BAND_BYTES); its window tables serve regular pools too."""
    cdef Py_ssize_t H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * H * W, out_plane = OD * OH * OW
    cdef Py_ssize_t row, od, oh, ow, td, th, tw, l, nd, nh, w0, run
    cdef const floating* first
    cdef const floating* e
    cdef floating acc[LANE_PLANES]
    cdef floating divisor
    for row in range(OD * OH):      # (od, oh): one row of windows
        od = row // OH
        oh = row % OH
        nd = s.count[0][od]
        nh = s.count[1][oh]
        first = x + p0 * in_plane + (s.first[0][od] * H + s.first[1][oh]) * W
        run = nh * W        # the window rows of one depth slice, contiguous in a plane
        for td in range(nd):
            if floating is float:
                fc_transpose_f32(first + td * H * W, in_plane, band + td * run * LANE_PLANES,
                                 LANE_PLANES, LANE_PLANES, run)
            else:
                fc_transpose_f64(first + td * H * W, in_plane, band + td * run * LANE_PLANES,
                                 LANE_PLANES, LANE_PLANES, run)
        for ow in range(OW):
            w0 = s.first[2][ow]
            for l in range(LANE_PLANES):
                acc[l] = 0
            for td in range(nd):
                for th in range(nh):
                    e = band + ((td * nh + th) * W + w0) * LANE_PLANES
                    for tw in range(s.count[2][ow]):
                        for l in range(LANE_PLANES):
                            acc[l] = acc[l] + e[tw * LANE_PLANES + l]
            divisor = window_divisor(s, od, oh, ow, divisor_override, <floating> 0)
            for l in range(LANE_PLANES):
                out[(p0 + l) * out_plane + row * OW + ow] = acc[l] / divisor


cdef enum:
    ROW_RUN = 64        # most output rows a scheduling step of the row loop takes

cdef int pool_forward(const floating* x, floating* out, int64_t* indices, const PoolShape* s,
                      bint is_max, double divisor_override, int num_threads) noexcept nogil:
    cdef Py_ssize_t rows = s.planes * s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t blocks = (s.planes + PLANE_BLOCK - 1) // PLANE_BLOCK
    cdef Py_ssize_t row, block, lane_blocks, rest, run, first, p, od, oh
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1]
    cdef floating* band = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if not is_max and lanes_apply(s, sizeof(floating), num_threads):
        lane_blocks = s.planes // LANE_PLANES
        with parallel(num_threads=num_threads):
            band = <floating*> fc_workspace(WS_PLANE_LANES, LANE_BAND_BYTES)
            if band == NULL:
                failed_flag[0] = 1
            for block in prange(lane_blocks, schedule='guided'):
                if band != NULL:
                    adaptive_avg_lanes(x, out, s, divisor_override, block * LANE_PLANES, band)
        if failed:
            return 1
        # the planes past the last whole block, side by side as below
        rest = lane_blocks * LANE_PLANES
        while rest < s.planes:
            adaptive_plane_block(x, out, indices, s, False, divisor_override, rest,
                                 min(PLANE_BLOCK, s.planes - rest))
            rest += PLANE_BLOCK
        return 0
    if s.kernel_w == 0 and blocks >= 4 * num_threads:
        for block in prange(blocks, num_threads=num_threads, schedule='guided'):
            if (block + 1) * PLANE_BLOCK <= s.planes:   # a constant count: unrolled lanes
                adaptive_plane_block(x, out, indices, s, is_max, divisor_override,
                                     block * PLANE_BLOCK, PLANE_BLOCK)
            else:
                adaptive_plane_block(x, out, indices, s, is_max, divisor_override,
                                     block * PLANE_BLOCK, s.planes - block * PLANE_BLOCK)
        return 0
    # rows in runs of `run`, a few per thread's share, each run's (plane, od, oh) found by
    # division once and then counted on (with four divisions per row, a row of 28 outputs
    # spent about a quarter of its time outside the kernel: max_pool2d 2x2, one thread)
    run = max(1, min(ROW_RUN, rows // (8 * num_threads)))
    for block in prange((rows + run - 1) // run, num_threads=num_threads, schedule='guided'):
        first = block * run
        oh = first % OH
        od = (first // OH) % OD
        p = first // (OH * OD)
        for row in range(first, min(rows, first + run)):
            pool_row(x, out, indices, s, is_max, divisor_override, row, p, od, oh)
            oh = oh + 1
            if oh == OH:
                oh = 0
                od = od + 1
                if od == OD:
                    od = 0
                    p = p + 1
    return 0


# ---------------------------------------------------------------------------------------------
# forward on channels-last (P images, D, H, W, C) arrays: one output row (image, od, oh) per
# work item; each output pixel scans its window in window order (d, h, w) as the rows above
# do, with the C channels side by side in each step (the compiler vectorizes them), so the
# values and indices are those of the channels-first kernels, bit for bit.

cdef void pool_row_nhwc(const floating* x, floating* out, int64_t* indices, const PoolShape* s,
                        Py_ssize_t C, bint is_max, double divisor_override,
                        Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t oh = row % OH, t = row // OH
    cdef Py_ssize_t od = t % OD, p = t // OD
    cdef Py_ssize_t d0 = s.first[0][od], nd = s.count[0][od]
    cdef Py_ssize_t h0 = s.first[1][oh], nh = s.count[1][oh]
    cdef Py_ssize_t ow, w0, nw, td, th, tw, c
    cdef int64_t pos
    cdef const floating* src
    cdef floating* best
    cdef int64_t* at
    cdef floating v, divisor
    cdef bint take
    for ow in range(OW):
        w0 = s.first[2][ow]
        nw = s.count[2][ow]
        best = out + (row * OW + ow) * C
        at = indices + (row * OW + ow) * C if indices != NULL else NULL
        for c in range(C):
            best[c] = -INFINITY if is_max else 0
        if at != NULL:   # stays when every element is -inf: the first one
            for c in range(C):
                at[c] = (d0 * H + h0) * W + w0
        for td in range(nd):
            for th in range(nh):
                for tw in range(nw):
                    pos = ((d0 + td * s.step[0]) * H + h0 + th * s.step[1]) * W + w0 \
                        + tw * s.step[2]
                    src = x + (p * D * H * W + pos) * C
                    if not is_max:
                        for c in range(C):
                            best[c] = best[c] + src[c]
                    elif at != NULL:
                        for c in range(C):
                            v = src[c]
                            take = (v > best[c]) | (v != v)
                            best[c] = v if take else best[c]
                            at[c] = pos if take else at[c]
                    else:
                        for c in range(C):
                            v = src[c]
                            best[c] = v if (v > best[c]) | (v != v) else best[c]
        if not is_max:
            divisor = window_divisor(s, od, oh, ow, divisor_override, <floating> 0)
            for c in range(C):
                best[c] = best[c] / divisor


def pool_forward_nhwc(const floating[:, :, :, :, ::1] x, floating[:, :, :, :, ::1] out,
                      int64_t[:, :, :, :, ::1] indices, bint is_max, tuple step,
                      const int64_t[:, ::1] win, const double[::1] div,
                      double divisor_override, int num_threads):
    """Max (indices may be an empty array: not written) or average pooling of channels-last
    x (P, D, H, W, C) into out (P, OD, OH, OW, C), indices flat within each (D, H, W) plane
    (PyTorch's convention, as the channels-first kernels write them)."""
    cdef PoolShape s = make_shape(tuple([x.shape[i] for i in range(4)]),
                                  tuple([out.shape[i] for i in range(4)]), step, win,
                                  div, (0, 0, 0))
    cdef Py_ssize_t C = x.shape[4], rows = out.shape[0] * out.shape[1] * out.shape[2], row
    cdef int64_t* idx = &indices[0, 0, 0, 0, 0] if indices.shape[0] > 0 else NULL
    if out.shape[4] != C or (not is_max and div.shape[0] == 0 and divisor_override == 0):
        raise ValueError(f"pool_forward_nhwc: out must have x's {C} channels (and an average "
                         f"pool its divisors); got out {tuple(out.shape)}")
    if rows == 0 or out.shape[3] == 0 or C == 0:
        return
    with nogil:
        for row in prange(rows, num_threads=num_threads, schedule='guided'):
            pool_row_nhwc(&x[0, 0, 0, 0, 0], &out[0, 0, 0, 0, 0], idx, &s, C, is_max,
                          divisor_override, row)


def scatter_nhwc(const floating[:, :, ::1] src, const int64_t[:, :, ::1] indices,
                 floating[:, :, ::1] dst, bint accumulate, Py_ssize_t channel_block,
                 int num_threads):
    """Channels-last scatter: per image p and channel c, dst[p, indices[p, o, c], c] (+)=
    src[p, o, c] in the order of o (accumulate: max-pool backward; else the last o wins:
    max-unpool), after zeroing: each channel's sums in the channels-first kernel's order.
    Work items are (image, block of `channel_block` channels), disjoint in dst. Returns
    whether an index lay outside [0, M) (skipped)."""
    cdef Py_ssize_t P = dst.shape[0], M = dst.shape[1], C = dst.shape[2], L = src.shape[1]
    cdef Py_ssize_t blocks, item, p, c0, c1, m, o, c
    cdef int64_t j
    cdef int outside = 0
    cdef int* outside_flag = &outside   # written through a pointer: shared, not lastprivate
    cdef const int64_t* at
    cdef const floating* v
    cdef floating* d
    if src.shape[0] != P or src.shape[2] != C or indices.shape[0] != P \
            or indices.shape[1] != L or indices.shape[2] != C or channel_block < 1:
        raise ValueError(f"scatter_nhwc: src and indices must be ({P}, L, {C}); got "
                         f"{tuple(src.shape)}, {tuple(indices.shape)}")
    if P == 0 or C == 0:
        return 0
    if M == 0:
        return L > 0
    blocks = (C + channel_block - 1) // channel_block
    with nogil:
        for item in prange(P * blocks, num_threads=num_threads, schedule='dynamic'):
            p = item // blocks
            c0 = (item % blocks) * channel_block
            c1 = c0 + channel_block if c0 + channel_block < C else C
            d = &dst[p, 0, 0]
            for m in range(M):
                memset(d + m * C + c0, 0, (c1 - c0) * sizeof(floating))
            for o in range(L):
                at = &indices[p, o, 0]
                v = &src[p, o, 0]
                for c in range(c0, c1):
                    j = at[c]
                    if <uint64_t> j >= <uint64_t> M:
                        outside_flag[0] = 1
                    elif accumulate:
                        d[j * C + c] += v[c]
                    else:
                        d[j * C + c] = v[c]
    return outside


def gather_nhwc(const floating[:, :, ::1] src, const int64_t[:, :, ::1] indices,
                floating[:, :, ::1] dst, int num_threads):
    """Channels-last gather: dst[p, o, c] := src[p, indices[p, o, c], c]. Returns whether an
    index lay outside [0, M) (its element is set to zero)."""
    cdef Py_ssize_t P = dst.shape[0], L = dst.shape[1], C = dst.shape[2], M = src.shape[1]
    cdef Py_ssize_t row, p, o, c
    cdef int64_t j
    cdef int outside = 0
    cdef int* outside_flag = &outside   # written through a pointer: shared, not lastprivate
    cdef const int64_t* at
    cdef const floating* s
    cdef floating* d
    if src.shape[0] != P or src.shape[2] != C or indices.shape[0] != P \
            or indices.shape[1] != L or indices.shape[2] != C:
        raise ValueError(f"gather_nhwc: src ({P}, M, {C}) and indices ({P}, {L}, {C}); got "
                         f"{tuple(src.shape)}, {tuple(indices.shape)}")
    if P == 0 or L == 0 or C == 0:
        return 0
    if M == 0:
        return 1
    with nogil:
        for row in prange(P * L, num_threads=num_threads, schedule='static'):
            p = row // L
            at = &indices[p, row % L, 0]
            s = &src[p, 0, 0]
            d = &dst[p, row % L, 0]
            for c in range(C):
                j = at[c]
                if <uint64_t> j < <uint64_t> M:
                    d[c] = s[j * C + c]
                else:
                    d[c] = 0
                    outside_flag[0] = 1
    return outside


# ---------------------------------------------------------------------------------------------
# backward of max pooling (and max-unpooling's forward): one plane per work item, so no two
# threads write the same element and the sums are taken in the same order whatever the thread
# count (deterministic). Average pooling's backward is a gather: resample.pyx's adjoint_gather.

cdef int scatter_planes(const floating* src, const int64_t* indices, floating* dst,
                        Py_ssize_t planes, Py_ssize_t src_plane, Py_ssize_t dst_plane,
                        bint accumulate, int num_threads) noexcept nogil:
    """Per plane: dst[indices[o]] += src[o] (accumulate: max-pool backward) or
    dst[indices[o]] = src[o], the last o winning (max-unpool forward), after zeroing the plane.
    A plane is zeroed and scattered into in a per-thread buffer that stays in cache, then
    streamed out (stream_store.h): dst is written to memory once and never read (zeroing it
    in place read each line first; np.zeros cost a pass of its own). Planes too large for
    the buffer, or a dst small enough to stay in the caches for its reader, are built in
    place. Returns whether an index lay outside [0, dst_plane) (skipped)."""
    cdef Py_ssize_t p, o
    cdef int64_t j
    cdef int outside = 0
    cdef int* outside_flag = &outside   # written through a pointer: shared, not lastprivate
    cdef size_t plane_bytes = dst_plane * sizeof(floating)
    cdef bint streamed = plane_bytes <= STREAM_PLANE_BYTES \
        and planes * plane_bytes >= STREAM_MIN_BYTES
    cdef floating* d
    cdef floating* t
    cdef floating* buffer = NULL
    cdef const floating* v
    cdef const int64_t* idx
    with parallel(num_threads=num_threads):
        buffer = <floating*> fc_workspace(WS_SCATTER_PLANE, plane_bytes) if streamed \
            else NULL
        for p in prange(planes, schedule='guided'):
            d = dst + p * dst_plane
            t = buffer if buffer != NULL else d
            v = src + p * src_plane
            idx = indices + p * src_plane
            memset(t, 0, plane_bytes)
            for o in range(src_plane):
                j = idx[o]
                if <uint64_t> j >= <uint64_t> dst_plane:
                    outside_flag[0] = 1
                elif accumulate:
                    t[j] += v[o]
                else:
                    t[j] = v[o]
            if buffer != NULL:
                fc_stream_copy(d, buffer, plane_bytes)
        fc_stream_fence()
    return outside


cdef int gather_planes(const floating* src, const int64_t* indices, floating* dst,
                       Py_ssize_t planes, Py_ssize_t src_plane, Py_ssize_t dst_plane,
                       int num_threads) noexcept nogil:
    """Per plane: dst[o] = src[indices[o]] (max-unpool backward). Returns whether an index
    lay outside [0, src_plane) (its element is set to zero)."""
    cdef Py_ssize_t p, o
    cdef int64_t j
    cdef int outside = 0
    cdef int* outside_flag = &outside   # written through a pointer: shared, not lastprivate
    cdef floating* d
    cdef const floating* v
    cdef const int64_t* idx
    for p in prange(planes, num_threads=num_threads, schedule='guided'):
        d = dst + p * dst_plane
        v = src + p * src_plane
        idx = indices + p * dst_plane
        for o in range(dst_plane):
            j = idx[o]
            if <uint64_t> j < <uint64_t> src_plane:
                d[o] = v[j]
            else:
                d[o] = 0
                outside_flag[0] = 1
    return outside


# ---------------------------------------------------------------------------------------------
# Python entry points: arrays are 4-d (P, D, H, W), already validated by pooling.py.

def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     int64_t[:, :, :, ::1] indices, tuple step,
                     const int64_t[:, ::1] win, tuple regular_w, int num_threads):
    """out, indices := max over each window (indices may be an empty array: not written).
    regular_w = (kernel, stride, padding) along W for a regular pool, (0, 0, 0) if adaptive."""
    cdef PoolShape s = make_shape(tuple([x.shape[i] for i in range(4)]),
                                  tuple([out.shape[i] for i in range(4)]), step, win,
                                  _NO_DIVISOR, regular_w)
    cdef int64_t* idx = &indices[0, 0, 0, 0] if indices.shape[0] > 0 else NULL
    if out.shape[0] == 0:
        return
    with nogil:
        pool_forward(&x[0, 0, 0, 0], &out[0, 0, 0, 0], idx, &s, True, 0, num_threads)


def avg_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, tuple step,
                     const int64_t[:, ::1] win, const double[::1] div, tuple regular_w,
                     double divisor_override, int num_threads):
    """out := window sums / divisor (divisor_override != 0 replaces the per-axis product)."""
    cdef PoolShape s = make_shape(tuple([x.shape[i] for i in range(4)]),
                                  tuple([out.shape[i] for i in range(4)]), step, win, div,
                                  regular_w)
    if out.shape[0] == 0:
        return
    cdef int status
    with nogil:
        status = pool_forward(&x[0, 0, 0, 0], &out[0, 0, 0, 0], NULL, &s, False,
                              divisor_override, num_threads)
    if status:
        raise MemoryError("avg_pool_forward: no memory for a thread's transposed input rows")


def scatter(const floating[:, ::1] src, const int64_t[:, ::1] indices, floating[:, ::1] dst,
            bint accumulate, int num_threads):
    """Per plane p: dst[p, indices[p, o]] (+)= src[p, o], dst zeroed first (its contents on
    entry do not matter). Returns whether an index lay outside the plane (skipped)."""
    cdef int outside
    if dst.shape[0] == 0:
        return 0
    if dst.shape[1] == 0:
        return src.shape[1] > 0
    with nogil:
        outside = scatter_planes(&src[0, 0] if src.shape[1] > 0 else NULL,
                                 &indices[0, 0] if src.shape[1] > 0 else NULL, &dst[0, 0],
                                 dst.shape[0], src.shape[1], dst.shape[1], accumulate,
                                 num_threads)
    return outside


def gather(const floating[:, ::1] src, const int64_t[:, ::1] indices, floating[:, ::1] dst,
           int num_threads):
    """Per plane p: dst[p, o] := src[p, indices[p, o]]. Returns whether an index lay outside
    the plane (its element zeroed)."""
    cdef int outside
    if dst.shape[0] == 0 or dst.shape[1] == 0:
        return 0
    if src.shape[1] == 0:
        return 1
    with nogil:
        outside = gather_planes(&src[0, 0], &indices[0, 0], &dst[0, 0], dst.shape[0],
                                src.shape[1], dst.shape[1], num_threads)
    return outside


import numpy as _np
_NO_DIVISOR = _np.empty(0, dtype=_np.float64)
