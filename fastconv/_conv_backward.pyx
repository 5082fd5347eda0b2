# cython: language_level=3
"""Backward kernels of convolution: input gradient (= transposed convolution), weight
gradient, and locally connected layers (convolution without weight sharing).

Every problem is described by the forward convolution's ConvShape (see _conv.pxd):
x (n, c_in, D, H, W) is the convolution's input, w (c_out, c_in_g, KD, KH, KW) its weight and
g (n, c_out, OD, OH, OW) the gradient of its output. A transposed convolution is the input
gradient of the convolution whose input has the transposed convolution's output shape.
The Python layer validates everything; these kernels trust their inputs.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, calloc, free

cdef extern from "_simd.h":
    double fc_sum_f32(const float* x, Py_ssize_t n) noexcept nogil
    double fc_sum_f64(const double* x, Py_ssize_t n) noexcept nogil
    int FC_DOT_M, FC_DOT_K
    void fc_dot_tile_f32(const float* g, Py_ssize_t g_stride, const float* grid,
                         const Py_ssize_t* offsets, const int* mask, Py_ssize_t length,
                         float* acc, Py_ssize_t acc_stride) noexcept nogil
    void fc_dot_tile_f64(const double* g, Py_ssize_t g_stride, const double* grid,
                         const Py_ssize_t* offsets, const long long* mask, Py_ssize_t length,
                         double* acc, Py_ssize_t acc_stride) noexcept nogil

    void fc_copy_rows(void* dst, size_t dst_stride, const void* src, size_t src_stride,
                      size_t bytes, Py_ssize_t rows) noexcept nogil
    void fc_merge_pairs_rows_f32(const float* even, const float* odd, Py_ssize_t src_stride,
                                 float* dst, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil
    void fc_merge_pairs_rows_f64(const double* even, const double* odd, Py_ssize_t src_stride,
                                 double* dst, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil

cdef extern from "_workspace.h":
    void* fc_workspace(int slot, size_t bytes) noexcept nogil
    void fc_workspace_trim() noexcept nogil

# Slots of the per-thread workspace (_workspace.h): buffers reused from call to call.
cdef enum:
    WS_COL, WS_W_PACKED, WS_G_PACKED, WS_COL_PACKED, WS_PARTIAL, WS_PATCHES, WS_POSITION,
    WS_PHASE, WS_G_EXTENDED, WS_PHASE_OFFSETS, WS_MASK
from libc.string cimport memset, memcpy

from fastconv._blas cimport gemm, set_local_threads_t, hold_blas_single_threaded, release_blas

cdef set_local_threads_t blas_set_local_threads = NULL


def set_blas_local_threads_hook(size_t address):
    """Register openblas_set_num_threads_local (its address; 0 for none), see _blas.pxd."""
    global blas_set_local_threads
    blas_set_local_threads = <set_local_threads_t> address
from fastconv._conv cimport ConvShape, make_shape, output_range, unfold_band, pack_a_panels, \
    pack_b_panels, multiply_tile, vector_width, tile_mr, tile_nr, choose_tile, PhaseGrid, \
    PhaseRun, phase_grid, phase_run, phase_runs, phase_offsets, fill_phase_grid, \
    clear_phase_grid


# ---------------------------------------------------------------------------------------------
# col2im: the adjoint of im2col_rows.

cdef void col2im_rows(floating* x_g, const ConvShape* s, Py_ssize_t c_begin, Py_ssize_t c_end,
                      Py_ssize_t row_begin, Py_ssize_t row_end,
                      const floating* col) noexcept nogil:
    """x_g[c, d, h, w] += col[k, j] for every tap k = (c, kd, kh, kw) of the channels
    [c_begin, c_end) that reads input pixel (d, h, w) at output position j of the band of
    output rows [row_begin, row_end); taps that read padding are dropped."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t band = (row_end - row_begin) * OW
    cdef Py_ssize_t taps = s.kernel[0] * KH * KW
    cdef Py_ssize_t k, c, tap, kd, kh, kw, r, od, oh, i_d, i_h, off, lo, hi, o
    cdef Py_ssize_t od_first = row_begin // OH, oh_first = row_begin % OH
    cdef floating* x_row
    cdef const floating* src
    for k in range((c_end - c_begin) * taps):
        c = c_begin + k // taps
        tap = k % taps
        kd = tap // (KH * KW)
        kh = (tap // KW) % KH
        kw = tap % KW
        off = kw * s.dilation[2] - s.pad[2]
        output_range(off, sw, W, OW, &lo, &hi)
        src = col + k * band
        # (od, oh) of row r advance by counting: no division per row in this hot loop
        od = od_first
        oh = oh_first
        for r in range(row_begin, row_end):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
            if 0 <= i_d < D and 0 <= i_h < H:
                x_row = x_g + ((c * D + i_d) * H + i_h) * W
                if sw == 1:
                    # unit stride: a contiguous add the compiler vectorizes
                    for o in range(lo, hi):
                        x_row[o + off] += src[o]
                else:
                    for o in range(lo, hi):
                        x_row[o * sw + off] += src[o]
            src += OW
            oh = oh + 1
            if oh == OH:
                oh = 0
                od = od + 1


cdef int input_grad_gemm(const floating* g, const floating* w, floating* dx, const ConvShape* s,
                         bint pointwise, Py_ssize_t band_rows, Py_ssize_t channel_chunks,
                         bint own_gemm, int num_threads) noexcept nogil:
    """dx := conv^T(g): per band, col = W_g^T @ g_band (one single-threaded GEMM), then col2im.

    A work item owns whole input channels (image, group, chunk of input channels) and walks
    every band, so the scatter of col2im never races; chunks split the channels of a group
    when there are too few images x groups to keep every thread busy (batch 1). With
    `own_gemm` the GEMM is fastconv's micro-kernel (W^T packed once per call, each band of g
    packed per item) instead of BLAS."""
    cdef int blas_threads_before
    cdef Py_ssize_t OW = s.out_size[2]
    cdef Py_ssize_t rows = s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t out_plane = rows * OW
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t taps = s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t K = s.c_in_g * taps
    cdef Py_ssize_t chunk_channels = (s.c_in_g + channel_chunks - 1) // channel_chunks
    cdef Py_ssize_t bands = (rows + band_rows - 1) // band_rows
    cdef Py_ssize_t items = s.n * s.groups * channel_chunks
    cdef Py_ssize_t item, chunk, n, g_idx, c0, c1, band, r0, r1, cols
    cdef floating* col = NULL
    cdef floating* dx_g
    cdef const floating* g_block
    cdef int failed = 0
    cdef int* failed_flag = &failed
    # the register tile that wastes least on (channels x taps) x (positions of a band)
    cdef int shape = choose_tile(chunk_channels * taps, <floating*> NULL)
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t m_panels = (chunk_channels * taps + MR - 1) // MR
    cdef floating* w_packed = NULL
    cdef floating* g_packed = NULL

    own_gemm = own_gemm and not pointwise
    if own_gemm:
        # W_g^T of every (group, chunk of input channels), in micro-kernel panels
        w_packed = <floating*> fc_workspace(
            WS_W_PACKED, s.groups * channel_chunks * m_panels * s.c_out_g * MR * sizeof(floating))
        if w_packed == NULL:
            return 1
        for g_idx in range(s.groups):
            for chunk in range(channel_chunks):
                c0 = chunk * chunk_channels
                c1 = c0 + chunk_channels if c0 + chunk_channels < s.c_in_g else s.c_in_g
                if c0 < c1:
                    pack_a_panels(w + g_idx * s.c_out_g * K + c0 * taps, 1, K, (c1 - c0) * taps,
                                  s.c_out_g, w_packed + (g_idx * channel_chunks + chunk)
                                  * m_panels * s.c_out_g * MR, shape)

    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_set_local_threads)
        if not pointwise:
            col = <floating*> fc_workspace(WS_COL,
                                           chunk_channels * taps * band_rows * OW * sizeof(floating))
            if col == NULL:
                failed_flag[0] = 1
        if own_gemm:
            g_packed = <floating*> fc_workspace(WS_G_PACKED,
                                                s.c_out_g * (band_rows * OW + NR) * sizeof(floating))
            if g_packed == NULL:
                failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if not pointwise and col == NULL or own_gemm and g_packed == NULL:
                continue
            chunk = item % channel_chunks
            g_idx = (item // channel_chunks) % s.groups
            n = item // (channel_chunks * s.groups)
            c0 = chunk * chunk_channels
            c1 = c0 + chunk_channels
            if c1 > s.c_in_g:
                c1 = s.c_in_g
            if c0 >= c1:
                continue
            dx_g = dx + (n * s.c_in + g_idx * s.c_in_g) * in_plane
            g_block = g + (n * s.c_out + g_idx * s.c_out_g) * out_plane
            if not pointwise:
                memset(dx_g + c0 * in_plane, 0, (c1 - c0) * in_plane * sizeof(floating))
            for band in range(bands):
                r0 = band * band_rows
                r1 = r0 + band_rows
                if r1 > rows:
                    r1 = rows
                cols = (r1 - r0) * OW
                if pointwise:
                    # 1x1, stride 1, no padding: the band of dx is the GEMM's output itself
                    gemm(True, False, <int> ((c1 - c0) * taps), <int> cols, <int> s.c_out_g,
                         <floating> 1, w + g_idx * s.c_out_g * K + c0 * taps, <int> K,
                         g_block + r0 * OW, <int> out_plane, <floating> 0,
                         dx_g + c0 * in_plane + r0 * OW, <int> in_plane)
                elif own_gemm:
                    pack_b_panels(g_block + r0 * OW, out_plane, 1, s.c_out_g, cols, NR, g_packed)
                    multiply_tile(s.c_out_g, ((c1 - c0) * taps + MR - 1) // MR,
                                  (c1 - c0) * taps, cols, NR,
                                  w_packed + (g_idx * channel_chunks + chunk) * m_panels
                                  * s.c_out_g * MR, g_packed, col, cols, NULL, False, shape)
                    col2im_rows(dx_g, s, c0, c1, r0, r1, col)
                else:
                    gemm(True, False, <int> ((c1 - c0) * taps), <int> cols, <int> s.c_out_g,
                         <floating> 1, w + g_idx * s.c_out_g * K + c0 * taps, <int> K,
                         g_block + r0 * OW, <int> out_plane, <floating> 0, col, <int> cols)
                    col2im_rows(dx_g, s, c0, c1, r0, r1, col)
        release_blas(blas_set_local_threads, blas_threads_before)
    fc_workspace_trim()   # the main thread's buffers; the other threads' are band-sized
    return failed


# ---------------------------------------------------------------------------------------------
# The input gradient through the phase grid (the adjoint of _conv.pyx's conv_packed_phase):
# the output gradient of one (image, group) is laid out on the extended grid (zeros past OW
# and OH, and before its first row), each stride class of the grid is computed as a product
# on the micro-kernel (input_grad_phase), and the grid is read back into dx. The zeros of the
# extended gradient contribute exact zeros only if the weights are finite (0 * inf is NaN):
# the Python layer checks.

cdef void extend_rows(const floating* g_plane, const ConvShape* s, const PhaseGrid* pg,
                      floating* g_ext) noexcept nogil:
    """g_ext[(od * Q1 + oh) * Q2 + ow] = g_plane[(od * OH + oh) * OW + ow]; the rest is zero."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t od
    for od in range(OD):
        fc_copy_rows(g_ext + od * pg.q[1] * pg.q[2], pg.q[2] * sizeof(floating),
                     g_plane + od * OH * OW, OW * sizeof(floating), OW * sizeof(floating), OH)


cdef void extend_gradient(const floating* g_block, const ConvShape* s, const PhaseGrid* pg,
                          floating* g_ext, Py_ssize_t row_length, Py_ssize_t lead) noexcept nogil:
    """Row co of g_ext (row_length apart): `lead` zeros, then channel co of the group's output
    gradient g_block on the extended grid (extend_rows), zeros elsewhere."""
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t co
    memset(g_ext, 0, s.c_out_g * row_length * sizeof(floating))
    for co in range(s.c_out_g):
        extend_rows(g_block + co * out_plane, s, pg, g_ext + co * row_length + lead)


cdef inline void merge_pairs_rows(const floating* even, const floating* odd,
                                  Py_ssize_t src_stride, floating* dst, Py_ssize_t dst_stride,
                                  Py_ssize_t n, Py_ssize_t rows) noexcept nogil:
    """dst[r * dst_stride + 2i] = even[r * src_stride + i], dst[... + 2i + 1] = odd[...]
    for i < n, r < rows (vector shuffles, _simd.h)."""
    if floating is float:
        fc_merge_pairs_rows_f32(even, odd, src_stride, dst, dst_stride, n, rows)
    else:
        fc_merge_pairs_rows_f64(even, odd, src_stride, dst, dst_stride, n, rows)


cdef inline Py_ssize_t phase_reach(Py_ssize_t q, Py_ssize_t stride, Py_ssize_t pad,
                                   Py_ssize_t size) noexcept nogil:
    """Input positions [0, reach) along an axis lie on the grid; those past it are read by
    no window."""
    cdef Py_ssize_t reach = q * stride - pad
    return 0 if reach < 0 else (size if reach > size else reach)


cdef inline void read_phase_rows(const floating* row, floating* dx_row, Py_ssize_t dx_stride,
                                 Py_ssize_t rows, Py_ssize_t W, Py_ssize_t s2, Py_ssize_t p2,
                                 Py_ssize_t reach, Py_ssize_t Q2,
                                 Py_ssize_t phase_stride) noexcept nogil:
    """For `rows` rows (grid rows Q2 apart, dx rows dx_stride apart): dx_row[x] = phase row
    (x + p2) % s2 (at row + r2 * phase_stride) at (x + p2) // s2, zero past the grid's reach
    (scalars and batches of rows: see fill_phase_rows)."""
    cdef Py_ssize_t r2, first, x, r
    cdef const floating* phase_row
    if reach < W:
        for r in range(rows):
            memset(dx_row + r * dx_stride + reach, 0, (W - reach) * sizeof(floating))
    if s2 == 1:
        fc_copy_rows(dx_row, dx_stride * sizeof(floating), row + p2, Q2 * sizeof(floating),
                     reach * sizeof(floating), rows)
    elif s2 == 2:   # interleave the two phase rows by vector shuffles
        merge_pairs_rows(row + (p2 % 2) * phase_stride + p2 // 2,
                         row + ((p2 + 1) % 2) * phase_stride + (p2 + 1) // 2, Q2, dx_row,
                         dx_stride, reach // 2, rows)
        if reach % 2:
            for r in range(rows):
                dx_row[r * dx_stride + reach - 1] = \
                    row[r * Q2 + (p2 % 2) * phase_stride + (reach - 1 + p2) // 2]
    else:
        for r in range(rows):
            for r2 in range(s2):
                # columns x with (x + p2) % s2 == r2, from `first` on, step s2
                first = ((r2 - p2) % s2 + s2) % s2
                phase_row = row + r * Q2 + r2 * phase_stride + (first + p2) // s2
                for x in range((reach - first + s2 - 1) // s2 if first < reach else 0):
                    dx_row[r * dx_stride + first + x * s2] = phase_row[x]


cdef void read_phase_grid(const floating* grid, const ConvShape* s, const PhaseGrid* pg,
                          floating* dx_g) noexcept nogil:
    """dx_g[c, d, h, w] = the grid at padded position (d + pad0, h + pad1, w + pad2), zero
    where the grid does not reach (no window reads that input)."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t reach0 = phase_reach(pg.q[0], s.stride[0], s.pad[0], D)
    cdef Py_ssize_t reach1 = phase_reach(pg.q[1], s.stride[1], s.pad[1], H)
    cdef Py_ssize_t reach2 = phase_reach(pg.q[2], s.stride[2], s.pad[2], W)
    cdef Py_ssize_t c, d, k
    cdef PhaseRun run
    for c in range(s.c_in_g):
        # planes and rows past the reach: no window reads them
        memset(dx_g + (c * D + reach0) * H * W, 0, (D - reach0) * H * W * sizeof(floating))
        for d in range(reach0):
            memset(dx_g + ((c * D + d) * H + reach1) * W, 0,
                   (H - reach1) * W * sizeof(floating))
    # the same runs of rows as the fill (fill_phase_grid), read back
    for k in range(phase_runs(s, pg)):
        if phase_run(s, pg, k, &run):
            read_phase_rows(grid + run.grid, dx_g + run.image, s.stride[1] * W, run.rows, W,
                            s.stride[2], s.pad[2], reach2, pg.q[2], pg.phase_stride)


cdef int input_grad_phase_scatter(const floating* g, const floating* w, floating* dx,
                          const ConvShape* s, Py_ssize_t tile_panels,
                          int num_threads) noexcept nogil:
    """dx := conv^T(g) through the phase grid for groups of few input channels (the stride
    classes of input_grad_phase would waste most of each register tile): col = W^T @ g_ext
    tile by tile, each tap's row of col added as one contiguous run into the grid."""
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t M = s.c_out_g
    cdef int shape = choose_tile(K, <floating*> NULL)
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t tile = tile_panels * NR
    cdef Py_ssize_t m_panels = (K + MR - 1) // MR
    cdef PhaseGrid pg
    cdef Py_ssize_t extended, item, n, g_idx, p_begin, count, k, j
    cdef floating* w_packed = <floating*> fc_workspace(
        WS_W_PACKED, s.groups * m_panels * M * MR * sizeof(floating))
    cdef Py_ssize_t* offsets = <Py_ssize_t*> fc_workspace(WS_PHASE_OFFSETS,
                                                          (K + M) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* g_rows = offsets + K   # B = g_ext read in place: row j at j * extended
    cdef floating* grid = NULL
    cdef floating* g_ext = NULL
    cdef floating* col = NULL
    cdef floating* target
    cdef const floating* source
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if w_packed == NULL or offsets == NULL:
        return 1
    phase_grid(s, tile, 1, &pg)
    phase_offsets(s, &pg, offsets)
    extended = (pg.positions + tile - 1) // tile * tile
    for j in range(M):
        g_rows[j] = j * extended
    for g_idx in range(s.groups):
        # A = W_g^T: rows are the taps (c, kd, kh, kw), columns the group's output channels
        pack_a_panels(w + g_idx * M * K, 1, K, K, M, w_packed + g_idx * m_panels * M * MR,
                      shape)
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        g_ext = <floating*> fc_workspace(WS_G_EXTENDED, M * extended * sizeof(floating))
        col = <floating*> fc_workspace(WS_COL, K * tile * sizeof(floating))
        if grid == NULL or g_ext == NULL or col == NULL:
            failed_flag[0] = 1
        for item in prange(s.n * s.groups, schedule='dynamic'):
            if grid == NULL or g_ext == NULL or col == NULL:
                continue
            n = item // s.groups
            g_idx = item % s.groups
            extend_gradient(g + (n * s.c_out + g_idx * M) * out_plane, s, &pg, g_ext, extended,
                            0)
            memset(grid, 0, pg.size * sizeof(floating))
            p_begin = 0
            while p_begin < pg.positions:
                count = pg.positions - p_begin if pg.positions - p_begin < tile else tile
                multiply_tile(M, m_panels, K, count, NR, w_packed + g_idx * m_panels * M * MR,
                              g_ext + p_begin, col, tile, NULL, False, shape, g_rows)
                for k in range(K):
                    target = grid + offsets[k] + p_begin
                    source = col + k * tile
                    for j in range(count):
                        target[j] += source[j]
                p_begin = p_begin + tile
            read_phase_grid(grid, s, &pg, dx + (n * s.c_in + g_idx * s.c_in_g) * in_plane)
    fc_workspace_trim()
    return failed


cdef int input_grad_phase(const floating* g, const floating* w, floating* dx,
                          const ConvShape* s, Py_ssize_t tile_panels,
                          int num_threads) noexcept nogil:
    """dx := conv^T(g) through the phase grid, one stride class at a time; work items are
    (image, group) planes. The inputs of one class (padded position = j * stride + r along
    every axis) receive exactly the taps whose offset is r modulo the stride, each from the
    output gradient shifted by the tap's offset divided by the stride: so each class's plane
    of the grid is a plain product W_class^T @ g_ext, written by the micro-kernel reading
    g_ext in place at one shift per tap (no scatter), and the grid is then read into dx."""
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t taps = s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t C = s.c_in_g, M = s.c_out_g
    cdef Py_ssize_t phases = s.stride[0] * s.stride[1] * s.stride[2]
    cdef int shape = choose_tile(C, <floating*> NULL)
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t tile = tile_panels * NR
    cdef Py_ssize_t c_panels = (C + MR - 1) // MR
    cdef Py_ssize_t per_group = c_panels * M * taps * MR
    cdef PhaseGrid pg
    cdef Py_ssize_t lead, row_length, item, n, g_idx, p_begin, count, t, e, r, co, c, m, p
    cdef Py_ssize_t kd, kh, kw, t0, t1, t2, k_class, base
    cdef Py_ssize_t* tap_class = <Py_ssize_t*> malloc((3 * taps + phases + 1 + M * taps)
                                                      * sizeof(Py_ssize_t))
    cdef Py_ssize_t* tap_shift = tap_class + taps
    cdef Py_ssize_t* order = tap_shift + taps              # taps sorted by class
    cdef Py_ssize_t* class_start = order + taps            # class r: order[start[r]:start[r+1]]
    cdef Py_ssize_t* b_offsets = class_start + phases + 1  # per class, tap-major: (tap, co)
    cdef floating* a_packed = <floating*> malloc(s.groups * per_group * sizeof(floating))
    cdef floating* grid = NULL
    cdef floating* g_ext = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if tap_class == NULL or a_packed == NULL:
        free(tap_class)
        free(a_packed)
        return 1
    phase_grid(s, tile, 1, &pg)
    # each tap's class (its offset modulo the stride) and shift on the extended grid
    for t in range(taps):
        kd = t // (s.kernel[1] * s.kernel[2])
        kh = (t // s.kernel[2]) % s.kernel[1]
        kw = t % s.kernel[2]
        t0 = kd * s.dilation[0]
        t1 = kh * s.dilation[1]
        t2 = kw * s.dilation[2]
        tap_class[t] = ((t0 % s.stride[0]) * s.stride[1] + t1 % s.stride[1]) * s.stride[2] \
            + t2 % s.stride[2]
        tap_shift[t] = ((t0 // s.stride[0]) * pg.q[1] + t1 // s.stride[1]) * pg.q[2] \
            + t2 // s.stride[2]
    lead = tap_shift[taps - 1]            # the largest shift: zeros before g_ext's rows
    row_length = lead + pg.plane + NR     # reads reach one panel past the plane
    e = 0
    for r in range(phases):
        class_start[r] = e
        for t in range(taps):
            if tap_class[t] == r:
                order[e] = t
                e = e + 1
    class_start[phases] = e
    # B rows (tap, co) of each class: g_ext's row co, shifted back by the tap's shift
    for e in range(taps):
        for co in range(M):
            b_offsets[e * M + co] = co * row_length + lead - tap_shift[order[e]]
    # A = W_class^T per group and class: rows (tap, co) of the class, columns the input
    # channels of the group in panels of MR (zero past C)
    for g_idx in range(s.groups):
        for r in range(phases):
            k_class = (class_start[r + 1] - class_start[r]) * M
            base = g_idx * per_group + class_start[r] * M * c_panels * MR
            for p in range(c_panels):
                for e in range(class_start[r], class_start[r + 1]):
                    for co in range(M):
                        for m in range(MR):
                            c = p * MR + m
                            a_packed[base + (p * k_class + (e - class_start[r]) * M + co) * MR
                                     + m] = w[((g_idx * M + co) * C + c) * taps + order[e]] \
                                if c < C else 0
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        g_ext = <floating*> fc_workspace(WS_G_EXTENDED, M * row_length * sizeof(floating))
        if grid == NULL or g_ext == NULL:
            failed_flag[0] = 1
        for item in prange(s.n * s.groups, schedule='dynamic'):
            if grid == NULL or g_ext == NULL:
                continue
            n = item // s.groups
            g_idx = item % s.groups
            extend_gradient(g + (n * s.c_out + g_idx * M) * out_plane, s, &pg, g_ext,
                            row_length, lead)
            for r in range(phases):
                k_class = (class_start[r + 1] - class_start[r]) * M
                if k_class == 0:   # no tap lands on this class: its inputs get nothing
                    for c in range(C):
                        memset(grid + (c * phases + r) * pg.phase_stride, 0,
                               pg.plane * sizeof(floating))
                    continue
                p_begin = 0
                while p_begin < pg.plane:
                    count = pg.plane - p_begin if pg.plane - p_begin < tile else tile
                    multiply_tile(k_class, c_panels, C, count, NR,
                                  a_packed + g_idx * per_group
                                  + class_start[r] * M * c_panels * MR,
                                  g_ext + p_begin, grid + r * pg.phase_stride + p_begin,
                                  phases * pg.phase_stride, NULL, False, shape,
                                  b_offsets + class_start[r] * M)
                    p_begin = p_begin + tile
            read_phase_grid(grid, s, &pg, dx + (n * s.c_in + g_idx * s.c_in_g) * in_plane)
    free(tap_class)
    free(a_packed)
    fc_workspace_trim()
    return failed


# ---------------------------------------------------------------------------------------------
# direct transposed kernel: one input-gradient row (fixed n, c_in, d, h) at a time, gathering
# from every output channel of its group. Best when the GEMM would be thin (few channels).

cdef void input_grad_direct_row(const floating* g, const floating* w, floating* dx,
                                const ConvShape* s, Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t i_h = row % H, t = row // H
    cdef Py_ssize_t i_d = t % D
    t = t // D
    cdef Py_ssize_t ci = t % s.c_in, n = t // s.c_in
    cdef Py_ssize_t g_idx = ci // s.c_in_g, c = ci % s.c_in_g
    cdef floating* dx_row = dx + row * W
    cdef const floating* g_row
    cdef floating wv
    cdef Py_ssize_t co, kd, kh, kw, num_d, num_h, od, oh, off, lo, hi, o

    for o in range(W):
        dx_row[o] = 0
    for kd in range(KD):
        # the output row od whose tap kd reads input row i_d, if any
        num_d = i_d + s.pad[0] - kd * s.dilation[0]
        if num_d < 0 or num_d % s.stride[0] != 0:
            continue
        od = num_d // s.stride[0]
        if od >= OD:
            continue
        for kh in range(KH):
            num_h = i_h + s.pad[1] - kh * s.dilation[1]
            if num_h < 0 or num_h % s.stride[1] != 0:
                continue
            oh = num_h // s.stride[1]
            if oh >= OH:
                continue
            for kw in range(KW):
                off = kw * s.dilation[2] - s.pad[2]
                output_range(off, sw, W, OW, &lo, &hi)
                # the output channels of the group innermost: the range above is shared
                for co in range(g_idx * s.c_out_g, (g_idx + 1) * s.c_out_g):
                    wv = w[((co * s.c_in_g + c) * KD + kd) * KH * KW + kh * KW + kw]
                    g_row = g + ((n * s.c_out + co) * OD + od) * OH * OW + oh * OW
                    if sw == 1:
                        for o in range(lo, hi):
                            dx_row[o + off] += wv * g_row[o]
                    else:
                        for o in range(lo, hi):
                            dx_row[o * sw + off] += wv * g_row[o]


cdef int input_grad_direct(const floating* g, const floating* w, floating* dx,
                           const ConvShape* s, int num_threads) noexcept nogil:
    cdef Py_ssize_t rows = s.n * s.c_in * s.in_size[0] * s.in_size[1]
    cdef Py_ssize_t row
    for row in prange(rows, num_threads=num_threads, schedule='static'):
        input_grad_direct_row(g, w, dx, s, row)
    return 0


# ---------------------------------------------------------------------------------------------
# weight gradient: dW_g += g_band @ col^T over every (image, group, band). The work items are
# cut into `chunks` fixed contiguous runs, each summed into its own zeroed buffer by whichever
# thread takes it (dynamic scheduling copes with a busy core); the buffers are then added in
# chunk order, so the result does not depend on which thread ran what.

cdef int weight_grad_gemm(const floating* x, const floating* g, floating* dw, const ConvShape* s,
                          bint pointwise, Py_ssize_t band_rows, Py_ssize_t chunks,
                          bint own_gemm, int num_threads) noexcept nogil:
    """dw := sum over (image, band) of g_band @ col^T, summed per chunk of work items into
    private partial buffers added in a fixed order. With `own_gemm` each product runs on
    fastconv's micro-kernel (both operands packed per band) instead of BLAS."""
    cdef int blas_threads_before
    cdef Py_ssize_t OW = s.out_size[2]
    cdef Py_ssize_t rows = s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t out_plane = rows * OW
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t bands = (rows + band_rows - 1) // band_rows
    cdef Py_ssize_t items = s.n * s.groups * bands
    cdef Py_ssize_t size = s.c_out * K
    cdef Py_ssize_t chunk, item, band, n, g_idx, r0, r1, cols, i, t
    cdef floating* partial = <floating*> calloc(chunks * size, sizeof(floating))
    cdef floating* mine
    cdef floating* col = NULL
    cdef const floating* operand
    cdef floating total
    cdef int failed = 0
    cdef int* failed_flag = &failed
    # the register tile that wastes least on (output channels) x (taps)
    cdef int shape = choose_tile(s.c_out_g, <floating*> NULL)
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t m_panels = (s.c_out_g + MR - 1) // MR
    cdef floating* g_packed = NULL
    cdef floating* col_packed = NULL
    if partial == NULL:
        return 1

    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_set_local_threads)
        if not pointwise:
            col = <floating*> fc_workspace(WS_COL, K * band_rows * OW * sizeof(floating))
            if col == NULL:
                failed_flag[0] = 1
        if own_gemm:
            g_packed = <floating*> fc_workspace(WS_G_PACKED,
                                                m_panels * MR * band_rows * OW * sizeof(floating))
            col_packed = <floating*> fc_workspace(WS_COL_PACKED,
                                                  (K + NR) * band_rows * OW * sizeof(floating))
            if g_packed == NULL or col_packed == NULL:
                failed_flag[0] = 1
        for chunk in prange(chunks, schedule='dynamic'):
            if not pointwise and col == NULL or own_gemm and (g_packed == NULL
                                                              or col_packed == NULL):
                continue
            mine = partial + chunk * size
            for item in range(items * chunk // chunks, items * (chunk + 1) // chunks):
                band = item % bands
                g_idx = (item // bands) % s.groups
                n = item // (bands * s.groups)
                r0 = band * band_rows
                r1 = r0 + band_rows
                if r1 > rows:
                    r1 = rows
                cols = (r1 - r0) * OW
                operand = unfold_band(x + (n * s.c_in + g_idx * s.c_in_g) * in_plane, s, r0,
                                      r1, pointwise, col)
                if own_gemm:
                    # A = g_band (channels x positions), B = operand^T (positions x taps)
                    pack_a_panels(g + (n * s.c_out + g_idx * s.c_out_g) * out_plane + r0 * OW,
                                  out_plane, 1, s.c_out_g, cols, g_packed, shape)
                    pack_b_panels(operand, 1, in_plane if pointwise else cols, cols, K, NR,
                                  col_packed)
                    multiply_tile(cols, m_panels, s.c_out_g, K, NR, g_packed, col_packed,
                                  mine + g_idx * s.c_out_g * K, K, NULL, True, shape)
                else:
                    gemm(False, True, <int> s.c_out_g, <int> K, <int> cols, <floating> 1,
                         g + (n * s.c_out + g_idx * s.c_out_g) * out_plane + r0 * OW,
                         <int> out_plane, operand, <int> (in_plane if pointwise else cols),
                         <floating> 1, mine + g_idx * s.c_out_g * K, <int> K)
        release_blas(blas_set_local_threads, blas_threads_before)

    if failed == 0:
        for i in prange(size, num_threads=num_threads, schedule='static'):
            total = partial[i]
            for t in range(1, chunks):
                total = total + partial[t * size + i]
            dw[i] = total
    free(partial)
    fc_workspace_trim()   # the main thread's buffers; the other threads' are band-sized
    return failed


# ---------------------------------------------------------------------------------------------
# weight gradient on the phase grid: dW_g[m, k] = sum over (image, extended position p) of
# g_ext[m, p] * grid[offset[k] + p], the extended positions masked out. Both operands are read
# as contiguous rows (no unfolding, no transposition): register tiles of FC_DOT_M channels x
# FC_DOT_K taps accumulate unreduced vectors, summed per fixed chunk of work items and then
# across chunks and lanes in a fixed order.

cdef inline void dot_tile(const floating* g, Py_ssize_t g_stride, const floating* grid,
                          const Py_ssize_t* offsets, const void* mask, Py_ssize_t length,
                          floating* acc, Py_ssize_t acc_stride) noexcept nogil:
    if floating is float:
        fc_dot_tile_f32(g, g_stride, grid, offsets, <const int*> mask, length, acc, acc_stride)
    else:
        fc_dot_tile_f64(g, g_stride, grid, offsets, <const long long*> mask, length, acc,
                        acc_stride)


cdef void valid_mask(const ConvShape* s, const PhaseGrid* pg, Py_ssize_t length,
                     floating* dummy, void* mask) noexcept nogil:
    """mask[p] = all ones where position p of a batched grid's planes is an output (within
    its image's plane: p % plane < positions, ow < OW, oh < OH), else 0, in the integer type
    as wide as `floating`."""
    cdef Py_ssize_t p, q, keep
    cdef int* mask32 = <int*> mask
    cdef long long* mask64 = <long long*> mask
    for p in range(length):
        q = p % pg.plane
        keep = p < pg.phase_stride and q < pg.positions and q % pg.q[2] < s.out_size[2] \
            and (q // pg.q[2]) % pg.q[1] < s.out_size[1]
        if floating is float:
            mask32[p] = -1 if keep else 0
        else:
            mask64[p] = -1 if keep else 0


cdef int weight_grad_phase(const floating* x, const floating* g, floating* dw,
                           const ConvShape* s, Py_ssize_t images_per_unit, Py_ssize_t chunks,
                           int num_threads, double* plane_sums=NULL) noexcept nogil:
    """With `plane_sums` (not NULL), also plane_sums[n * c_out + c] = the sum of g[n, c] (as
    bias_grad sums it), taken while each plane is copied anyway.
    Work units are (block of `images_per_unit` images, group): the block's phase grids sit
    side by side in each phase plane, so one run of dot products covers all of its images.
    Channels and taps are padded to whole register tiles (zero rows of g, repeated taps)
    whose extra sums are dropped."""
    cdef Py_ssize_t V = vector_width(<floating*> NULL)
    cdef Py_ssize_t B = images_per_unit
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t M = s.c_out_g
    cdef Py_ssize_t K_pad = (K + FC_DOT_K - 1) // FC_DOT_K * FC_DOT_K
    cdef Py_ssize_t M_pad = (M + FC_DOT_M - 1) // FC_DOT_M * FC_DOT_M
    cdef Py_ssize_t blocks = (s.n + B - 1) // B
    cdef Py_ssize_t units = blocks * s.groups
    cdef Py_ssize_t size = s.groups * M_pad * K_pad
    cdef Py_ssize_t phases = s.c_in_g * s.stride[0] * s.stride[1] * s.stride[2]
    cdef PhaseGrid pg
    cdef Py_ssize_t row_length, length, chunk, unit, first, count, g_idx, m0, k0, i, t, j, b
    cdef Py_ssize_t* offsets = <Py_ssize_t*> fc_workspace(WS_PHASE_OFFSETS,
                                                          K_pad * sizeof(Py_ssize_t))
    cdef floating* partial = NULL
    cdef void* mask = NULL
    cdef floating* grid = NULL
    cdef floating* g_ext = NULL
    cdef floating* mine
    cdef floating total
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if offsets == NULL:
        return 1
    phase_grid(s, 1, B, &pg)
    # a row of g_ext: the block's planes, rounded up to whole vectors; reads at masked
    # positions may run one plane plus a vector past the last image, into the slack
    row_length = (B * pg.plane + V - 1) // V * V
    phase_grid(s, pg.plane + 2 * V, B, &pg)
    phase_offsets(s, &pg, offsets)
    for k0 in range(K, K_pad):
        offsets[k0] = offsets[0]
    # the calling thread's buffers, reused from call to call (calloc'ed ones came as fresh
    # pages to fault in on every call)
    partial = <floating*> fc_workspace(WS_PARTIAL, chunks * size * sizeof(floating))
    mask = fc_workspace(WS_MASK, row_length * sizeof(floating))
    if partial == NULL or mask == NULL:
        return 1
    valid_mask(s, &pg, row_length, <floating*> NULL, mask)
    # one parallel region: the chunks, then (after prange's barrier) their reduction
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        g_ext = <floating*> fc_workspace(WS_G_EXTENDED, M_pad * row_length * sizeof(floating))
        if grid == NULL or g_ext == NULL:
            failed_flag[0] = 1
        else:
            # padding positions are never written by the fill (zero for every image), and
            # the slack is read at masked positions only: nothing uninitialized is read
            clear_phase_grid(&pg, grid)
        for chunk in prange(chunks, schedule='dynamic'):
            if grid == NULL or g_ext == NULL:
                continue
            mine = partial + chunk * size
            memset(mine, 0, size * sizeof(floating))
            for unit in range(units * chunk // chunks, units * (chunk + 1) // chunks):
                g_idx = unit % s.groups
                first = (unit // s.groups) * B
                count = s.n - first if s.n - first < B else B
                memset(g_ext, 0, M_pad * row_length * sizeof(floating))
                if count < B:
                    # a short last block: the mask keeps positions of its empty image slots
                    # (g_ext is zero there), so they must hold zeros, not an earlier unit's
                    # planes: zero times inf is NaN
                    for j in range(phases):
                        memset(grid + j * pg.phase_stride + count * pg.plane, 0,
                               (B - count) * pg.plane * sizeof(floating))
                for b in range(count):
                    fill_phase_grid(x + ((first + b) * s.c_in + g_idx * s.c_in_g) * in_plane,
                                    s, &pg, grid + b * pg.plane)
                    for j in range(M):
                        extend_rows(g + ((first + b) * s.c_out + g_idx * M + j) * out_plane,
                                    s, &pg, g_ext + j * row_length + b * pg.plane)
                        if plane_sums != NULL:
                            plane_sums[(first + b) * s.c_out + g_idx * M + j] = plane_sum(
                                g + ((first + b) * s.c_out + g_idx * M + j) * out_plane,
                                out_plane)
                length = (count * pg.plane + V - 1) // V * V
                m0 = 0
                while m0 < M_pad:
                    k0 = 0
                    while k0 < K_pad:
                        dot_tile(g_ext + m0 * row_length, row_length, grid, offsets + k0, mask,
                                 length, mine + (g_idx * M_pad + m0) * K_pad + k0, K_pad)
                        k0 = k0 + FC_DOT_K
                    m0 = m0 + FC_DOT_M
        # the chunks' partial sums, added in chunk order (row by row: no index divisions
        # per element, which cost more than the additions)
        for i in prange(s.c_out, schedule='static'):
            if failed_flag[0] != 0:
                continue
            j = ((i // M) * M_pad + i % M) * K_pad
            for k0 in range(K):
                total = 0
                for t in range(chunks):
                    total = total + partial[t * size + j + k0]
                dw[i * K + k0] = total
    fc_workspace_trim()
    return failed


# ---------------------------------------------------------------------------------------------
# locally connected: out[n, o, p] = bias[o, p] + sum_k w[p, o, k] * patch(n, p)[k], with a
# separate weight matrix w[p] (c_out x K) at every output position p: per position, one small
# GEMM over a block of images' gathered patches.

cdef void gather_patch(const floating* x_n, const ConvShape* s, Py_ssize_t p,
                       floating* patch) noexcept nogil:
    """patch[k] = x_n[c, d, h, w] read by tap k = (c, kd, kh, kw) at output position p; 0 in
    padding."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t ow = p % OW, oh = (p // OW) % OH, od = p // (OW * OH)
    cdef Py_ssize_t c, kd, kh, kw, i_d, i_h, i_w, k = 0
    for c in range(s.c_in):
        for kd in range(KD):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            for kh in range(KH):
                i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
                for kw in range(KW):
                    i_w = ow * s.stride[2] - s.pad[2] + kw * s.dilation[2]
                    if 0 <= i_d < D and 0 <= i_h < H and 0 <= i_w < W:
                        patch[k] = x_n[((c * D + i_d) * H + i_h) * W + i_w]
                    else:
                        patch[k] = 0
                    k = k + 1


cdef void scatter_patch(floating* x_n, const ConvShape* s, Py_ssize_t p,
                        const floating* patch) noexcept nogil:
    """The adjoint of gather_patch: x_n[c, d, h, w] += patch[k]; taps in padding are dropped."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t ow = p % OW, oh = (p // OW) % OH, od = p // (OW * OH)
    cdef Py_ssize_t c, kd, kh, kw, i_d, i_h, i_w, k = 0
    for c in range(s.c_in):
        for kd in range(KD):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            for kh in range(KH):
                i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
                for kw in range(KW):
                    i_w = ow * s.stride[2] - s.pad[2] + kw * s.dilation[2]
                    if 0 <= i_d < D and 0 <= i_h < H and 0 <= i_w < W:
                        x_n[((c * D + i_d) * H + i_h) * W + i_w] += patch[k]
                    k = k + 1


# Images per GEMM block: bounds each thread's patch buffer (block x K) while keeping the
# per-position GEMMs tall enough for BLAS to pay off.
cdef enum:
    IMAGE_BLOCK = 64


cdef inline void gather_position_grad(const floating* g, const ConvShape* s, Py_ssize_t P,
                                      Py_ssize_t p, Py_ssize_t n0, Py_ssize_t n1,
                                      floating* g_p) noexcept nogil:
    """g_p[i, o] = g[n0 + i, o, p]: the output gradient at position p as a (block x c_out)
    matrix."""
    cdef Py_ssize_t i, o
    for i in range(n1 - n0):
        for o in range(s.c_out):
            g_p[i * s.c_out + o] = g[((n0 + i) * s.c_out + o) * P + p]


cdef int locally_connected_forward_kernel(const floating* x, const floating* w,
                                          const floating* bias, floating* out,
                                          const ConvShape* s, int num_threads) noexcept nogil:
    """Per position p and block of images: out_p (block x c_out) = patches (block x K) @ w[p]^T."""
    cdef int blas_threads_before
    cdef Py_ssize_t P = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t K = s.c_in * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t in_image = s.c_in * s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t blocks = (s.n + IMAGE_BLOCK - 1) // IMAGE_BLOCK
    cdef Py_ssize_t item, p, n0, n1, i, o
    cdef floating b
    cdef floating* patches = NULL
    cdef floating* out_p = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_set_local_threads)
        patches = <floating*> fc_workspace(WS_PATCHES, IMAGE_BLOCK * K * sizeof(floating))
        out_p = <floating*> fc_workspace(WS_POSITION, IMAGE_BLOCK * s.c_out * sizeof(floating))
        if patches == NULL or out_p == NULL:
            failed_flag[0] = 1
        for item in prange(P * blocks, schedule='dynamic'):
            if patches == NULL or out_p == NULL:
                continue
            p = item // blocks
            n0 = (item % blocks) * IMAGE_BLOCK
            n1 = n0 + IMAGE_BLOCK
            if n1 > s.n:
                n1 = s.n
            for i in range(n1 - n0):
                gather_patch(x + (n0 + i) * in_image, s, p, patches + i * K)
            gemm(False, True, <int> (n1 - n0), <int> s.c_out, <int> K, <floating> 1, patches,
                 <int> K, w + p * s.c_out * K, <int> K, <floating> 0, out_p, <int> s.c_out)
            for i in range(n1 - n0):
                for o in range(s.c_out):
                    b = bias[o * P + p] if bias != NULL else 0
                    out[((n0 + i) * s.c_out + o) * P + p] = out_p[i * s.c_out + o] + b
        release_blas(blas_set_local_threads, blas_threads_before)
    return failed


cdef int locally_connected_input_grad_kernel(const floating* g, const floating* w,
                                             floating* dx, const ConvShape* s,
                                             Py_ssize_t images_per_item,
                                             int num_threads) noexcept nogil:
    """Per position: dpatches (block x K) = g_p (block x c_out) @ w[p], scattered back. A work
    item owns a block of whole images, since the patches of neighbouring positions overlap."""
    cdef int blas_threads_before
    cdef Py_ssize_t P = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t K = s.c_in * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t in_image = s.c_in * s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t items = (s.n + images_per_item - 1) // images_per_item
    cdef Py_ssize_t item, p, n0, n1, i
    cdef floating* patches = NULL
    cdef floating* g_p = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_set_local_threads)
        patches = <floating*> fc_workspace(WS_PATCHES, images_per_item * K * sizeof(floating))
        g_p = <floating*> fc_workspace(WS_POSITION, images_per_item * s.c_out * sizeof(floating))
        if patches == NULL or g_p == NULL:
            failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if patches == NULL or g_p == NULL:
                continue
            n0 = item * images_per_item
            n1 = n0 + images_per_item
            if n1 > s.n:
                n1 = s.n
            memset(dx + n0 * in_image, 0, (n1 - n0) * in_image * sizeof(floating))
            for p in range(P):
                gather_position_grad(g, s, P, p, n0, n1, g_p)
                gemm(False, False, <int> (n1 - n0), <int> K, <int> s.c_out, <floating> 1, g_p,
                     <int> s.c_out, w + p * s.c_out * K, <int> K, <floating> 0, patches, <int> K)
                for i in range(n1 - n0):
                    scatter_patch(dx + (n0 + i) * in_image, s, p, patches + i * K)
        release_blas(blas_set_local_threads, blas_threads_before)
    return failed


cdef int locally_connected_weight_grad_kernel(const floating* x, const floating* g,
                                              floating* dw, const ConvShape* s,
                                              int num_threads) noexcept nogil:
    """Per position: dw[p] (c_out x K) = sum over image blocks of g_p^T @ patches. Each work
    item owns whole positions and sums the blocks in order: deterministic."""
    cdef int blas_threads_before
    cdef Py_ssize_t P = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t K = s.c_in * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t in_image = s.c_in * s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t p, block, n0, n1, i
    cdef floating* patches = NULL
    cdef floating* g_p = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_set_local_threads)
        patches = <floating*> fc_workspace(WS_PATCHES, IMAGE_BLOCK * K * sizeof(floating))
        g_p = <floating*> fc_workspace(WS_POSITION, IMAGE_BLOCK * s.c_out * sizeof(floating))
        if patches == NULL or g_p == NULL:
            failed_flag[0] = 1
        for p in prange(P, schedule='dynamic'):
            if patches == NULL or g_p == NULL:
                continue
            memset(dw + p * s.c_out * K, 0, s.c_out * K * sizeof(floating))
            for block in range((s.n + IMAGE_BLOCK - 1) // IMAGE_BLOCK):
                n0 = block * IMAGE_BLOCK
                n1 = n0 + IMAGE_BLOCK
                if n1 > s.n:
                    n1 = s.n
                for i in range(n1 - n0):
                    gather_patch(x + (n0 + i) * in_image, s, p, patches + i * K)
                gather_position_grad(g, s, P, p, n0, n1, g_p)
                gemm(True, False, <int> s.c_out, <int> K, <int> (n1 - n0), <floating> 1, g_p,
                     <int> s.c_out, patches, <int> K, <floating> 1, dw + p * s.c_out * K,
                     <int> K)
        release_blas(blas_set_local_threads, blas_threads_before)
    return failed


# ---------------------------------------------------------------------------------------------
# Entry points from Python: 5-d C-contiguous arrays (1d and 2d problems with unit leading
# spatial axes), already validated by fastconv/conv_grad.py, conv_transpose.py and
# locally_connected.py.

cdef inline tuple _shape5(Py_ssize_t* shape):
    return (shape[0], shape[1], shape[2], shape[3], shape[4])


def _raise_if(int status):
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")


def conv_input_grad(const floating[:, :, :, :, ::1] g, const floating[:, :, :, :, ::1] w,
                    floating[:, :, :, :, ::1] dx, tuple stride, tuple pad, tuple dilation,
                    Py_ssize_t groups, str algorithm, Py_ssize_t band_rows,
                    Py_ssize_t channel_chunks, int num_threads, bint own_gemm=False):
    """dx := the input gradient of conv(dx-shaped input, w) for output gradient g (zero padding
    `pad` before each axis), by `algorithm` ('direct', 'col2im' or 'gemm1x1'; 'col2im-phase':
    through the phase grid, by stride classes, or by scattering a col buffer for groups of
    fewer input channels than a register tile has rows; `band_rows` then being position
    panels per tile)."""
    cdef ConvShape s = make_shape(_shape5(dx.shape), _shape5(w.shape), _shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    cdef int kind = {"direct": 0, "col2im": 1, "gemm1x1": 2, "col2im-phase": 3}[algorithm]
    if dx.shape[0] == 0:
        return
    with nogil:
        if kind == 0:
            status = input_grad_direct(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &dx[0, 0, 0, 0, 0],
                                       &s, num_threads)
        elif kind == 3 and s.c_in_g < tile_mr(0):
            status = input_grad_phase_scatter(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0],
                                              &dx[0, 0, 0, 0, 0], &s, band_rows, num_threads)
        elif kind == 3:
            status = input_grad_phase(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &dx[0, 0, 0, 0, 0],
                                      &s, band_rows, num_threads)
        else:
            status = input_grad_gemm(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &dx[0, 0, 0, 0, 0],
                                     &s, kind == 2, band_rows, channel_chunks, own_gemm,
                                     num_threads)
    _raise_if(status)


def conv_weight_grad(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] g,
                     floating[:, :, :, :, ::1] dw, tuple stride, tuple pad, tuple dilation,
                     Py_ssize_t groups, bint pointwise, Py_ssize_t band_rows, Py_ssize_t chunks,
                     int num_threads, bint own_gemm=False, Py_ssize_t phase_images=0,
                     floating[::1] db=None):
    """dw := the weight gradient of conv(x, dw-shaped weight) for output gradient g, summed in
    `chunks` fixed partial sums (by dot products on the phase grid, in work units of
    `phase_images` images, if that is positive). On the phase grid only, also db := the bias
    gradient (as bias_grad computes it) if db is given."""
    cdef ConvShape s = make_shape(_shape5(x.shape), _shape5(dw.shape), _shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    cdef double* plane_sums = NULL
    cdef double total
    cdef Py_ssize_t c, n
    if db is not None and phase_images > 0:
        plane_sums = <double*> malloc(max(1, s.n * s.c_out) * sizeof(double))
        if plane_sums == NULL:
            raise MemoryError("fastconv: could not allocate a convolution work buffer")
    with nogil:
        if phase_images > 0:
            status = weight_grad_phase(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0],
                                       &dw[0, 0, 0, 0, 0], &s, phase_images, chunks,
                                       num_threads, plane_sums)
            if plane_sums != NULL and status == 0:
                for c in range(s.c_out):   # images in order, as bias_grad adds them
                    total = 0
                    for n in range(s.n):
                        total = total + plane_sums[n * s.c_out + c]
                    db[c] = <floating> total
        else:
            status = weight_grad_gemm(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0],
                                      &dw[0, 0, 0, 0, 0], &s, pointwise, band_rows, chunks,
                                      own_gemm, num_threads)
    free(plane_sums)
    _raise_if(status)


cdef ConvShape _local_shape(tuple x_shape, tuple out_shape, tuple kernel, tuple stride,
                            tuple pad, tuple dilation) except *:
    w_shape = (out_shape[1], x_shape[1]) + kernel
    return make_shape(x_shape, w_shape, out_shape, stride, pad, dilation, 1)


def locally_connected_forward(const floating[:, :, :, :, ::1] x, const floating[:, :, ::1] w,
                              const floating[:, ::1] bias, floating[:, :, :, :, ::1] out,
                              tuple kernel, tuple stride, tuple pad, tuple dilation,
                              int num_threads):
    """out := locally connected layer of x with w (P, C_out, K) and bias (C_out, P) or empty."""
    cdef ConvShape s = _local_shape(_shape5(x.shape), _shape5(out.shape), kernel, stride, pad,
                                    dilation)
    cdef const floating* bias_ptr = &bias[0, 0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    with nogil:
        status = locally_connected_forward_kernel(&x[0, 0, 0, 0, 0], &w[0, 0, 0], bias_ptr,
                                                  &out[0, 0, 0, 0, 0], &s, num_threads)
    _raise_if(status)


def locally_connected_input_grad(const floating[:, :, :, :, ::1] g, const floating[:, :, ::1] w,
                                 floating[:, :, :, :, ::1] dx, tuple kernel, tuple stride,
                                 tuple pad, tuple dilation, int num_threads):
    """dx := the input gradient of the locally connected layer for output gradient g."""
    cdef ConvShape s = _local_shape(_shape5(dx.shape), _shape5(g.shape), kernel, stride, pad,
                                    dilation)
    # whole images per work item, as many items as threads (batch 1 runs on one thread)
    cdef Py_ssize_t images_per_item = min((s.n + num_threads - 1) // num_threads, IMAGE_BLOCK)
    cdef int status = 0
    with nogil:
        status = locally_connected_input_grad_kernel(&g[0, 0, 0, 0, 0], &w[0, 0, 0],
                                                     &dx[0, 0, 0, 0, 0], &s, images_per_item,
                                                     num_threads)
    _raise_if(status)


def locally_connected_weight_grad(const floating[:, :, :, :, ::1] x,
                                  const floating[:, :, :, :, ::1] g, floating[:, :, ::1] dw,
                                  tuple kernel, tuple stride, tuple pad, tuple dilation,
                                  int num_threads):
    """dw := the weight gradient (P, C_out, K) of the locally connected layer."""
    cdef ConvShape s = _local_shape(_shape5(x.shape), _shape5(g.shape), kernel, stride, pad,
                                    dilation)
    cdef int status = 0
    with nogil:
        status = locally_connected_weight_grad_kernel(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0],
                                                      &dw[0, 0, 0], &s, num_threads)
    _raise_if(status)


# ---------------------------------------------------------------------------------------------
# bias gradient: out[c] = sum over images and positions of g[n, c, p], one channel per task.

cdef inline double plane_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fc_sum_f32(x, n)
    return fc_sum_f64(x, n)


def bias_grad(const floating[:, :, ::1] g, floating[::1] out, int num_threads):
    """out[c] := sum_{n, p} g[n, c, p] (summed in double per block of 1024 elements); an
    empty g leaves out as it is."""
    cdef Py_ssize_t N = g.shape[0], C = g.shape[1], P = g.shape[2]
    cdef Py_ssize_t c, n
    cdef double total
    if N == 0 or C == 0 or P == 0:
        return
    with nogil:
        for c in prange(C, num_threads=num_threads, schedule='static'):
            total = 0
            for n in range(N):
                total = total + plane_sum(&g[n, c, 0], P)
            out[c] = <floating> total
