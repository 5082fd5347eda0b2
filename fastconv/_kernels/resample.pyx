# cython: language_level=3
"""Resampling kernels (nearest and (bi/tri)linear interpolation), forward and backward.

Every problem is three-dimensional inside: arrays are C-contiguous (P, D, H, W) with
P = N * C planes. Interpolation is separable, so the Python layer (resample.py) describes each
spatial axis as a table of source positions and weights:

    src[t, a_off + o]     input position of tap t (0 or 1) of output o along axis a
    weight[t, a_off + o]  its weight
    taps[a]               1 (nearest, or an axis that is not resampled) or 2 (linear)

where a_off = 0, OD, OD + OH for axes D, H, W, and

    out[p, od, oh, ow] = sum over taps of weight_D * weight_H * weight_W * x[p, d, h, w].

A one-tap axis has weight 1, so nearest-neighbour output is an exact copy. Kernels trust their
inputs: the Python layer built every position inside the input.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, INT32_MAX
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset


ctypedef struct ResampleShape:
    Py_ssize_t planes
    Py_ssize_t in_size[3]           # D, H, W
    Py_ssize_t out_size[3]          # OD, OH, OW
    Py_ssize_t taps[3]
    const int64_t* src[2][3]        # [tap][axis] -> per output: input position
    const void* weight[2][3]        # [tap][axis] -> per output: weight (floating)


cdef ResampleShape make_shape(tuple in_shape, tuple out_shape, tuple taps,
                              const int64_t[:, ::1] src, const floating[:, ::1] weight) except *:
    cdef ResampleShape s
    cdef Py_ssize_t offset = 0
    cdef int a, t
    s.planes = in_shape[0]
    for a in range(3):
        s.in_size[a] = in_shape[1 + a]
        s.out_size[a] = out_shape[1 + a]
        s.taps[a] = taps[a]
        for t in range(2):
            s.src[t][a] = &src[t, offset]
            s.weight[t][a] = &weight[t, offset]
        offset += s.out_size[a]
    return s


cdef extern from "gather_rows.h":
    enum:
        FC_PERMUTE_LANES_f32
        FC_PERMUTE_LANES_f64
    void fc_linear_row_f32(float* out, const float* r, Py_ssize_t len, const int64_t* s0,
                           const int64_t* s1, const float* w0, const float* w1,
                           const int32_t* base, const int32_t* rel0, const int32_t* rel1,
                           Py_ssize_t n) noexcept nogil
    void fc_window_row_f32(float* out, const float* values, Py_ssize_t len,
                           const int32_t* src, const float* weight, const int32_t* base,
                           const int32_t* rel, Py_ssize_t n_pad, Py_ssize_t n,
                           Py_ssize_t fan_in) noexcept nogil
    void fc_window_row_f64(double* out, const double* values, Py_ssize_t len,
                           const int32_t* src, const double* weight, const int32_t* base,
                           const int32_t* rel, Py_ssize_t n_pad, Py_ssize_t n,
                           Py_ssize_t fan_in) noexcept nogil
    void fc_linear_row_f64(double* out, const double* r, Py_ssize_t len, const int64_t* s0,
                           const int64_t* s1, const double* w0, const double* w1,
                           const int32_t* base, const int32_t* rel0, const int32_t* rel1,
                           Py_ssize_t n) noexcept nogil
    void fc_nearest_row_f32(float* out, const float* r, Py_ssize_t len, const int64_t* s0,
                            const int32_t* base, const int32_t* rel0, Py_ssize_t n) noexcept nogil
    void fc_nearest_row_f64(double* out, const double* r, Py_ssize_t len, const int64_t* s0,
                            const int32_t* base, const int32_t* rel0, Py_ssize_t n) noexcept nogil
    void fc_gather_row_f32(float* out, const float* values, const int32_t* src,
                           const float* weight, Py_ssize_t n, Py_ssize_t fan_in) noexcept nogil
    void fc_gather_row_f64(double* out, const double* values, const int32_t* src,
                           const double* weight, Py_ssize_t n, Py_ssize_t fan_in) noexcept nogil


cdef inline void gather_row(floating* out, const floating* values, const int32_t* src,
                            const floating* weight, Py_ssize_t n,
                            Py_ssize_t fan_in) noexcept nogil:
    if floating is float:
        fc_gather_row_f32(out, values, src, weight, n, fan_in)
    else:
        fc_gather_row_f64(out, values, src, weight, n, fan_in)


ctypedef struct LinearW:
    # a two-tap W axis as blocks of fc_linear_row (gather_rows.h): per block its first input
    # (-1: wider than two vectors), per output its inputs relative to that
    const int32_t* base
    const int32_t* rel0
    const int32_t* rel1


cdef inline Py_ssize_t linear_lanes(floating dummy) noexcept nogil:
    if floating is float:
        return FC_PERMUTE_LANES_f32
    else:
        return FC_PERMUTE_LANES_f64


ctypedef fused table_index:
    int32_t
    int64_t


cdef int32_t* block_tables(const table_index* src, Py_ssize_t entry_stride, Py_ssize_t fan_in,
                           Py_ssize_t n, Py_ssize_t n_values, Py_ssize_t lanes,
                           Py_ssize_t window) noexcept nogil:
    """The tables of fc_linear_row and fc_window_row for the gather table src (entry f of
    output i at src[f * entry_stride + i], i < n; entries equal to n_values are padding), in
    one malloc'd block: per block of `lanes` outputs the first value it reads (-1 where its
    values span `window` or more), then per entry f its offset from that in
    rel[f * n_pad + i] (-1 for padding, and past n). NULL if out of memory."""
    cdef Py_ssize_t blocks = (n + lanes - 1) // lanes, n_pad = blocks * lanes
    cdef Py_ssize_t b, i, f, q, lo, hi
    cdef int32_t* tables = <int32_t*> malloc(max(1, blocks + fan_in * n_pad)
                                             * sizeof(int32_t))   # never malloc(0): NULL
    cdef int32_t* rel = tables + blocks
    if tables == NULL:
        return NULL
    for b in range(blocks):
        lo, hi = n_values, -1
        for f in range(fan_in):
            for i in range(b * lanes, min(n, (b + 1) * lanes)):
                q = src[f * entry_stride + i]
                if q < n_values:
                    lo = min(lo, q)
                    hi = max(hi, q)
        if hi < 0:
            lo = hi = 0         # padding only: every lane zero
        tables[b] = <int32_t> lo if hi - lo < window and hi < INT32_MAX else -1
        for f in range(fan_in):
            for i in range(b * lanes, (b + 1) * lanes):
                q = src[f * entry_stride + i] if i < n else n_values
                rel[f * n_pad + i] = <int32_t> (q - lo) if q < n_values and tables[b] >= 0 \
                    else -1
    return tables


cdef inline void linear_row(floating* out, const floating* r, const ResampleShape* s,
                            const LinearW* lw) noexcept nogil:
    cdef Py_ssize_t W = s.in_size[2], OW = s.out_size[2]
    if floating is float:
        fc_linear_row_f32(out, r, W, s.src[0][2], s.src[1][2], <const float*> s.weight[0][2],
                          <const float*> s.weight[1][2], lw.base, lw.rel0, lw.rel1, OW)
    else:
        fc_linear_row_f64(out, r, W, s.src[0][2], s.src[1][2], <const double*> s.weight[0][2],
                          <const double*> s.weight[1][2], lw.base, lw.rel0, lw.rel1, OW)


cdef inline void nearest_row(floating* out, const floating* r, const ResampleShape* s,
                             const LinearW* lw) noexcept nogil:
    cdef Py_ssize_t W = s.in_size[2], OW = s.out_size[2]
    if floating is float:
        fc_nearest_row_f32(out, r, W, s.src[0][2], lw.base, lw.rel0, OW)
    else:
        fc_nearest_row_f64(out, r, W, s.src[0][2], lw.base, lw.rel0, OW)


cdef inline void window_row(floating* out, const floating* values, Py_ssize_t n_values,
                            const int32_t* src, const floating* weight, const int32_t* tables,
                            Py_ssize_t n, Py_ssize_t fan_in) noexcept nogil:
    """gather_row through its block_tables (NULL: gather_row itself)."""
    cdef Py_ssize_t lanes = linear_lanes(<floating> 0), blocks = (n + lanes - 1) // lanes
    if tables == NULL:
        gather_row(out, values, src, weight, n, fan_in)
    elif floating is float:
        fc_window_row_f32(out, values, n_values, src, weight, tables, tables + blocks,
                          blocks * lanes, n, fan_in)
    else:
        fc_window_row_f64(out, values, n_values, src, weight, tables, tables + blocks,
                          blocks * lanes, n, fan_in)


cdef inline void resample_w(const floating* r, floating* dst,
                            const ResampleShape* s) noexcept nogil:
    """dst[ow] = the input row r resampled along W (one or two taps)."""
    cdef Py_ssize_t ow, OW = s.out_size[2]
    cdef const int64_t* w0 = s.src[0][2]
    cdef const int64_t* w1 = s.src[1][2]
    cdef const floating* lw0 = <const floating*> s.weight[0][2]
    cdef const floating* lw1 = <const floating*> s.weight[1][2]
    if s.taps[2] == 1:
        for ow in range(OW):
            dst[ow] = r[w0[ow]]
    else:
        for ow in range(OW):
            dst[ow] = lw0[ow] * r[w0[ow]] + lw1[ow] * r[w1[ow]]


cdef int resample_rows(const floating* x, floating* out, const ResampleShape* s,
                       Py_ssize_t row_begin, Py_ssize_t row_end,
                       const LinearW* lw) noexcept nogil:
    """Output rows [row_begin, row_end), each (p, od, oh) the weighted sum over its (d, h) taps
    of input rows resampled along W. Consecutive output rows share input rows, so the (at most
    4) W-resampled rows are cached and each is resampled once, not once per output row
    (measured: ~2.5x faster bilinear x2 upsampling than resampling per output row). With `lw`
    (a linear W axis) the rows are resampled in vectors by fc_linear_row: the same sums."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t row, oh, od, p, t, a, b, k, j, slot, ow, d, h, n_taps
    cdef Py_ssize_t cached[4]
    cdef Py_ssize_t wanted[4]
    cdef floating coef[4]
    cdef floating* rows_w = <floating*> malloc(4 * OW * sizeof(floating))
    cdef floating* src_row[4]
    cdef floating* out_row
    cdef floating c
    cdef bint in_use
    if rows_w == NULL:
        return -1
    for k in range(4):
        cached[k] = -1
    for row in range(row_begin, row_end):
        oh = row % OH
        t = row // OH
        od = t % OD
        p = t // OD
        out_row = out + row * OW
        n_taps = 0
        for a in range(s.taps[0]):
            d = s.src[a][0][od]
            for b in range(s.taps[1]):
                h = s.src[b][1][oh]
                wanted[n_taps] = (p * D + d) * H + h
                coef[n_taps] = (<const floating*> s.weight[a][0])[od] \
                    * (<const floating*> s.weight[b][1])[oh]
                n_taps = n_taps + 1
        for k in range(n_taps):
            slot = -1
            for j in range(4):
                if cached[j] == wanted[k]:
                    slot = j
            if slot < 0:    # resample into a slot that this output row does not need
                for j in range(4):
                    in_use = False
                    for a in range(n_taps):
                        if cached[j] == wanted[a]:
                            in_use = True
                    if not in_use:
                        slot = j
                cached[slot] = wanted[k]
                if lw != NULL:
                    linear_row(rows_w + slot * OW, x + wanted[k] * W, s, lw)
                else:
                    resample_w(x + wanted[k] * W, rows_w + slot * OW, s)
            src_row[k] = rows_w + slot * OW
        c = coef[0]
        for ow in range(OW):
            out_row[ow] = c * src_row[0][ow]
        for k in range(1, n_taps):
            c = coef[k]
            for ow in range(OW):
                out_row[ow] += c * src_row[k][ow]
    free(rows_w)
    return 0


cdef void nearest_rows(const floating* x, floating* out, const ResampleShape* s,
                       Py_ssize_t row_begin, Py_ssize_t row_end,
                       const LinearW* lw) noexcept nogil:
    """Nearest-neighbour rows: a pure gather (no multiply: -0.0 and NaN payloads survive),
    in vectors by fc_nearest_row with `lw` (its block tables); an output row with the same
    source row as the one before it is a copy of it."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t row, oh, od, t, p, source, previous = -1
    cdef floating* out_row
    for row in range(row_begin, row_end):
        oh = row % OH
        t = row // OH
        od = t % OD
        p = t // OD
        source = (p * D + s.src[0][0][od]) * H + s.src[0][1][oh]
        out_row = out + row * OW
        if source == previous:
            memcpy(out_row, out_row - OW, OW * sizeof(floating))
        elif lw != NULL:
            nearest_row(out_row, x + source * W, s, lw)
        else:
            resample_w(x + source * W, out_row, s)
        previous = source


cdef int resample_forward(const floating* x, floating* out, const ResampleShape* s,
                          int num_threads) noexcept nogil:
    """Rows are split into a few contiguous chunks per thread (row reuse stays in a chunk)."""
    cdef Py_ssize_t rows = s.planes * s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t chunks = num_threads * 8 if rows > num_threads * 8 else rows
    cdef Py_ssize_t chunk, lanes = linear_lanes(<floating> 0)
    cdef Py_ssize_t blocks = (s.out_size[2] + lanes - 1) // lanes
    cdef bint nearest = s.taps[0] == 1 and s.taps[1] == 1 and s.taps[2] == 1
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    cdef int32_t* tables = NULL
    cdef LinearW w_axis
    cdef const LinearW* lw = NULL
    if lanes > 1 and (nearest or s.taps[2] == 2):
        # a W axis in vectors: linear (two taps) or nearest (one)
        tables = block_tables(s.src[0][2], s.src[1][2] - s.src[0][2] if s.taps[2] == 2 else 0,
                              s.taps[2], s.out_size[2], s.in_size[2], lanes, 2 * lanes)
        if tables == NULL:
            return -1
        w_axis.base = tables
        w_axis.rel0 = tables + blocks
        w_axis.rel1 = tables + blocks + blocks * lanes if s.taps[2] == 2 else NULL
        lw = &w_axis
    for chunk in prange(chunks, num_threads=num_threads, schedule='dynamic'):
        if nearest:
            nearest_rows(x, out, s, chunk * rows // chunks, (chunk + 1) * rows // chunks, lw)
        elif resample_rows(x, out, s, chunk * rows // chunks, (chunk + 1) * rows // chunks,
                           lw) != 0:
            failed_flag[0] = 1
    free(tables)
    return -failed


# ---------------------------------------------------------------------------------------------
# the adjoint (interpolate's and average pooling's backward) as a gather: every input position
# i lists the outputs that read it, per axis, as a table transposed from the forward one:
#
#     src[f * n + i]     output position of entry f of input position i (int32; the axis's
#                        output length: a padding entry)
#     weight[f * n + i]  its weight (0 for padding)
#
# with f < fan_in, the largest number of outputs any position of that axis feeds. Each
# gradient row is then a sum of whole gradient-output rows followed by a W-gather: written
# once, no scatter (whose read-modify-write chains through memory ran at 6% of the copy
# bandwidth on bilinear x2) and no zero-fill pass.

ctypedef struct AdjointAxis:
    Py_ssize_t fan_in
    const int32_t* src
    const void* weight


cdef inline void expand_row(floating* out, const floating* row, Py_ssize_t n,
                            Py_ssize_t n_src, floating c, floating pre) noexcept nogil:
    """out[i] = c * (pre * row[i // 2]) (0 from i // 2 = n_src on), i < n: the W gather of a
    map whose every input position takes one output's value, two inputs in a row alike (a
    pool's windows of 2 side by side: kernel == stride, no padding), without the gather's
    per-position tables (vector gathers ran average-pool 2x2 backward at a quarter of the
    copy bandwidth). `pre`: the D and H weights, rounded as the summed rows are."""
    cdef Py_ssize_t j, i
    cdef Py_ssize_t whole = n // 2 if n // 2 < n_src else n_src
    cdef floating v
    for j in range(whole):
        v = c * (pre * row[j])
        out[2 * j] = v
        out[2 * j + 1] = v
    for i in range(2 * whole, n):
        out[i] = c * (pre * row[i // 2]) if i // 2 < n_src else 0


cdef extern from "prefetch.h":
    void fc_prefetch_l2(const void* p, size_t bytes) noexcept nogil


cdef enum:
    ADJOINT_PREFETCH_ROWS = 2
    ADJOINT_ROWS_AT_ONCE = 4    # bilinear's H fan-in: x2 up-sampling reads 4 rows


cdef void add_rows(floating* acc, Py_ssize_t n, const floating** rows, const floating* coefs,
                   Py_ssize_t count, bint first) noexcept nogil:
    """acc[i] (:= 0 if first) + coefs[0] * rows[0][i] + ... in that order, i < n, all the rows
    in one pass: acc's vectors stay in registers (added row by row, each pass loaded and
    stored acc, and one thread ran bilinear x2's gradient at 9 GB/s of rows read)."""
    cdef Py_ssize_t i, k
    cdef floating c0 = coefs[0], c1 = coefs[1] if count > 1 else 0
    cdef floating c2 = coefs[2] if count > 2 else 0, c3 = coefs[3] if count > 3 else 0
    cdef const floating* r0 = rows[0]
    cdef const floating* r1 = rows[1] if count > 1 else NULL
    cdef const floating* r2 = rows[2] if count > 2 else NULL
    cdef const floating* r3 = rows[3] if count > 3 else NULL
    if first and count == 4:
        for i in range(n):
            acc[i] = c0 * r0[i] + c1 * r1[i] + c2 * r2[i] + c3 * r3[i]
    elif first and count == 3:
        for i in range(n):
            acc[i] = c0 * r0[i] + c1 * r1[i] + c2 * r2[i]
    elif first and count == 2:
        for i in range(n):
            acc[i] = c0 * r0[i] + c1 * r1[i]
    else:
        for k in range(count):
            if first and k == 0:
                for i in range(n):
                    acc[i] = coefs[0] * rows[0][i]
            else:
                for i in range(n):
                    acc[i] += coefs[k] * rows[k][i]


cdef int adjoint_rows(const floating* grad_out, floating* grad_in, const Py_ssize_t* in_size,
                      const Py_ssize_t* out_size, const AdjointAxis* axes,
                      bint pairs_w, const int32_t* w_windows, Py_ssize_t row_begin,
                      Py_ssize_t row_end) noexcept nogil:
    """grad_in rows [row_begin, row_end), each (p, d, h): the sum over the (od, oh) entries of
    (d, h) of weight_D * weight_H * grad_out row (p, od, oh), then gathered along W (by
    expand_row where `pairs_w`: W's table is input i <- output i // 2, one weight; else
    through `w_windows`, W's block_tables, where given)."""
    cdef Py_ssize_t D = in_size[0], H = in_size[1], W = in_size[2]
    cdef Py_ssize_t OD = out_size[0], OH = out_size[1], OW = out_size[2]
    cdef const int32_t* src_d = axes[0].src
    cdef const int32_t* src_h = axes[1].src
    cdef const int32_t* src_w = axes[2].src
    cdef const floating* weight_d = <const floating*> axes[0].weight
    cdef const floating* weight_h = <const floating*> axes[1].weight
    cdef const floating* weight_w = <const floating*> axes[2].weight
    # the sum of the rows, plus one zero that the W padding entries read
    cdef floating* acc = <floating*> malloc((OW + 1) * sizeof(floating))
    cdef const floating* g_rows[ADJOINT_ROWS_AT_ONCE]
    cdef floating coefs[ADJOINT_ROWS_AT_ONCE]
    cdef Py_ssize_t row, p, d, h, t, a, b, od, oh, entries
    cdef bint first
    if acc == NULL:
        return -1
    acc[OW] = 0
    for row in range(row_begin, row_end):
        h = row % H
        t = row // H
        d = t % D
        p = t // D
        first = True
        entries = 0
        for a in range(axes[0].fan_in):
            od = src_d[a * D + d]
            if od == OD:            # padding: no more outputs read this depth
                break
            for b in range(axes[1].fan_in):
                oh = src_h[b * H + h]
                if oh == OH:
                    break
                if entries == ADJOINT_ROWS_AT_ONCE:
                    add_rows(acc, OW, g_rows, coefs, entries, first)
                    first = False
                    entries = 0
                coefs[entries] = weight_d[a * D + d] * weight_h[b * H + h]
                g_rows[entries] = grad_out + ((p * OD + od) * OH + oh) * OW
                entries += 1
        if entries > 0:
            add_rows(acc, OW, g_rows, coefs, entries, first)
            first = False
            # the rows after the last one read: the next rows' (a stream the prefetchers
            # lost at each row's W gather, with the array beyond the caches)
            fc_prefetch_l2(g_rows[entries - 1] + OW,
                           ADJOINT_PREFETCH_ROWS * OW * sizeof(floating))
        if first:                   # no output reads this row
            memset(acc, 0, OW * sizeof(floating))
        if pairs_w:
            expand_row(grad_in + row * W, acc, W, OW, weight_w[0], 1)
        else:
            window_row(grad_in + row * W, acc, OW, src_w, weight_w, w_windows, W,
                       axes[2].fan_in)
    free(acc)
    return 0


cdef void expand_rows(const floating* grad_out, floating* grad_in, const Py_ssize_t* in_size,
                      const Py_ssize_t* out_size, const AdjointAxis* axes,
                      Py_ssize_t row_begin, Py_ssize_t row_end) noexcept nogil:
    """adjoint_rows where each input row takes one output row (D and H fan-in 1) and W's
    table is windows side by side (windows_side_by_side): each row expanded straight from
    its output row, written once. (Streaming the rows past the caches was tried: 1.5x slower
    on an 8 x 64 x 56 x 56 gradient, which the caches hold for its reader.)"""
    cdef Py_ssize_t D = in_size[0], H = in_size[1], W = in_size[2]
    cdef Py_ssize_t OD = out_size[0], OH = out_size[1], OW = out_size[2]
    cdef const floating* weight_d = <const floating*> axes[0].weight
    cdef const floating* weight_h = <const floating*> axes[1].weight
    cdef floating c = (<const floating*> axes[2].weight)[0]
    cdef Py_ssize_t row, p, d, h, od, oh, t
    for row in range(row_begin, row_end):
        h = row % H
        t = row // H
        d = t % D
        p = t // D
        od = axes[0].src[d]
        oh = axes[1].src[h]
        if od == OD or oh == OH:
            memset(grad_in + row * W, 0, W * sizeof(floating))
        else:
            expand_row(grad_in + row * W, grad_out + ((p * OD + od) * OH + oh) * OW, W, OW,
                       c, weight_d[d] * weight_h[h])


cdef bint windows_side_by_side(const int32_t[:, ::1] src, const floating[:, ::1] weight,
                               Py_ssize_t n_out):
    """True if the W table (fan_in x n) maps input i to output i // 2 with one weight (i < 2
    n_out; past that, to the padding position n_out): the case expand_row writes out."""
    cdef Py_ssize_t i, n = src.shape[1]
    if src.shape[0] != 1 or n == 0 or n_out == 0:
        return False
    for i in range(n):
        if src[0, i] != (i // 2 if i < 2 * n_out else n_out):
            return False
        if i < 2 * n_out and weight[0, i] != weight[0, 0]:
            return False
    return True


def adjoint_gather(const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_in,
                   tuple src, tuple weight, int num_threads):
    """grad_in := the separable linear map whose per-axis gather tables are src[a], weight[a]
    (2-d, fan_in x size, for axes D, H, W; see the comment above) applied to grad_out."""
    cdef const int32_t[:, ::1] src_d = src[0], src_h = src[1], src_w = src[2]
    cdef const floating[:, ::1] weight_d = weight[0], weight_h = weight[1], weight_w = weight[2]
    cdef AdjointAxis axes[3]
    cdef Py_ssize_t in_size[3]
    cdef Py_ssize_t out_size[3]
    cdef bint pairs_w
    cdef int a
    axes[0] = AdjointAxis(src_d.shape[0], &src_d[0, 0], &weight_d[0, 0])
    axes[1] = AdjointAxis(src_h.shape[0], &src_h[0, 0], &weight_h[0, 0])
    axes[2] = AdjointAxis(src_w.shape[0], &src_w[0, 0], &weight_w[0, 0])
    for a in range(3):
        in_size[a] = grad_in.shape[1 + a]
        out_size[a] = grad_out.shape[1 + a]
    pairs_w = windows_side_by_side(src_w, weight_w, out_size[2])
    cdef bint expand = pairs_w and axes[0].fan_in == 1 and axes[1].fan_in == 1
    cdef Py_ssize_t rows = grad_in.shape[0] * in_size[0] * in_size[1]
    cdef Py_ssize_t chunks = num_threads * 8 if rows > num_threads * 8 else rows
    cdef Py_ssize_t chunk
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    # the W gather by permutes of a few vector loads (AVX-512 gathers ran slower than
    # scalar loads on Zen 4): its tables, once per call
    cdef int32_t* w_windows = NULL
    cdef Py_ssize_t lanes = linear_lanes(<floating> 0)
    if rows == 0 or in_size[2] == 0:
        return
    if not expand and not pairs_w and lanes > 1:
        w_windows = block_tables(axes[2].src, in_size[2], axes[2].fan_in, in_size[2],
                                 out_size[2], lanes, 3 * lanes)
        if w_windows == NULL:
            raise MemoryError("fastconv: could not allocate the gradient gather tables")
    with nogil:
        for chunk in prange(chunks, num_threads=num_threads, schedule='dynamic'):
            if expand:
                expand_rows(&grad_out[0, 0, 0, 0], &grad_in[0, 0, 0, 0], in_size, out_size,
                            axes, chunk * rows // chunks,
                            (chunk + 1) * rows // chunks)
            elif adjoint_rows(&grad_out[0, 0, 0, 0], &grad_in[0, 0, 0, 0], in_size, out_size,
                              axes, pairs_w, w_windows, chunk * rows // chunks,
                              (chunk + 1) * rows // chunks) != 0:
                failed_flag[0] = 1
    free(w_windows)
    if failed:
        raise MemoryError("fastconv: could not allocate the gradient row buffers")


def interpolate_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, tuple taps,
                        const int64_t[:, ::1] src, const floating[:, ::1] weight,
                        int num_threads):
    """out := the separable resampling of x described by (taps, src, weight)."""
    cdef ResampleShape s = make_shape(tuple([x.shape[i] for i in range(4)]),
                                      tuple([out.shape[i] for i in range(4)]), taps, src, weight)
    if out.shape[0] == 0:
        return
    cdef int status
    with nogil:
        status = resample_forward(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &s, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate the interpolation row buffers")
