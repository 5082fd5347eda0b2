# cython: language_level=3
"""im2col / col2im kernels: the convolution, its input gradient and its weight gradient as
GEMMs over unfolded bands of the input, on BLAS or on fastconv's packed micro-kernel
(packed_gemm.pxd). Kernel ids: CONV_IM2COL_BLAS, CONV_GEMM1X1_BLAS (forward);
INPUT_GRAD_COL2IM_BLAS, INPUT_GRAD_COL2IM_PACKED, INPUT_GRAD_GEMM1X1_BLAS (input gradient);
WEIGHT_GRAD_IM2COL_BLAS, WEIGHT_GRAD_IM2COL_PACKED, WEIGHT_GRAD_GEMM1X1_BLAS,
WEIGHT_GRAD_GEMM1X1_PACKED (weight gradient). The GEMM1X1 variants are for pointwise
problems (1x1, stride 1, no padding): the input band itself is the GEMM operand.

Every problem is described by the forward convolution's ConvShape (conv_shape.pxd):
x (n, c_in, D, H, W) is the convolution's input, w (c_out, c_in_g, KD, KH, KW) its weight and
g (n, c_out, OD, OH, OW) the gradient of its output. The Python layer validates everything;
these kernels trust their inputs.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memset, memcpy

from fastconv._core cimport blas_local_threads
from fastconv._kernels.blas cimport gemm, hold_blas_single_threaded, release_blas
from fastconv._kernels.conv_shape cimport ConvShape, make_shape, output_range, decode_tap, \
    shape5
from fastconv._kernels.kernel_ids cimport CONV_IM2COL_BLAS, CONV_GEMM1X1_BLAS, \
    INPUT_GRAD_COL2IM_BLAS, INPUT_GRAD_COL2IM_PACKED, INPUT_GRAD_GEMM1X1_BLAS, \
    WEIGHT_GRAD_IM2COL_BLAS, WEIGHT_GRAD_IM2COL_PACKED, WEIGHT_GRAD_GEMM1X1_BLAS, \
    WEIGHT_GRAD_GEMM1X1_PACKED
from fastconv._kernels.pair_rows cimport merge_pairs_rows
from fastconv._kernels.packed_gemm cimport pack_a_panels, pack_b_panels, multiply_tile, \
    tile_mr, tile_nr, choose_tile, adjoint_in_place
from fastconv._kernels.workspace cimport fc_workspace, fc_workspace_trim

# Slots of the per-thread workspace (workspace.h): buffers reused from call to call.
cdef enum:
    WS_IM2COL, WS_COL, WS_W_PACKED, WS_G_PACKED, WS_COL_PACKED, WS_PARTIAL

cdef enum:
    # bands per thread of a stacked im2col (dynamic: a slower core takes fewer)
    UNFOLD_PIECES_PER_THREAD = 4


# ---------------------------------------------------------------------------------------------
# im2col + GEMM, blocked: each work item (image, group, band of output rows) unfolds only its
# band into a thread-private buffer sized for the cache, then one single-threaded GEMM writes
# the band of every output channel of the group. The full im2col matrix never exists.

cdef const floating* unfold_band(const floating* x_g, const ConvShape* s, Py_ssize_t r0,
                                 Py_ssize_t r1, bint pointwise, floating* col) noexcept nogil:
    """The GEMM operand for output rows [r0, r1): for a pointwise convolution the input band
    itself (row stride: the input plane), else its im2col written into `col`."""
    if pointwise:
        return x_g + r0 * s.out_size[2]
    im2col_rows(x_g, s, r0, r1, col, (r1 - r0) * s.out_size[2])
    return col


cdef inline void im2col_rows(const floating* x_g, const ConvShape* s, Py_ssize_t row_begin,
                             Py_ssize_t row_end, floating* col, Py_ssize_t ld) noexcept nogil:
    """col[k * ld + j] = x_g[c, d, h, w] read by tap k = (c, kd, kh, kw) at output position j
    of the band of output rows [row_begin, row_end) (a row is a fixed (od, oh)); zero where
    padding."""
    im2col_taps(x_g, s, row_begin, row_end, 0, s.c_in_g * s.kernel[0] * s.kernel[1]
                * s.kernel[2], col, ld)


cdef void im2col_taps(const floating* x_g, const ConvShape* s, Py_ssize_t row_begin,
                      Py_ssize_t row_end, Py_ssize_t k_begin, Py_ssize_t k_end, floating* col,
                      Py_ssize_t ld) noexcept nogil:
    """im2col_rows for the taps k in [k_begin, k_end) only (col still indexed by k)."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t taps = KD * KH * KW
    cdef Py_ssize_t k, c, tap, kd, kh, kw, r, od, oh, i_d, i_h, off, lo, hi, o
    cdef Py_ssize_t od_first = row_begin // OH, oh_first = row_begin % OH
    cdef const floating* x_row
    cdef floating* dst
    for k in range(k_begin, k_end):
        decode_tap(k, s, &c, &kd, &kh, &kw)
        off = kw * s.dilation[2] - s.pad[2]
        output_range(off, sw, W, OW, &lo, &hi)
        dst = col + k * ld
        # (od, oh) of row r advance by counting: no division per row in this hot loop
        od = od_first
        oh = oh_first
        for r in range(row_begin, row_end):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
            if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                memset(dst, 0, OW * sizeof(floating))
            else:
                x_row = x_g + ((c * D + i_d) * H + i_h) * W
                for o in range(lo):
                    dst[o] = 0
                if sw == 1:
                    memcpy(dst + lo, x_row + lo + off, (hi - lo) * sizeof(floating))
                else:
                    for o in range(lo, hi):
                        dst[o] = x_row[o * sw + off]
                for o in range(hi, OW):
                    dst[o] = 0
            dst += OW
            oh = oh + 1
            if oh == OH:
                oh = 0
                od = od + 1


cdef inline void fill_bias(floating* out_block, const floating* bias, Py_ssize_t channels,
                           Py_ssize_t cols, Py_ssize_t ld) noexcept nogil:
    cdef Py_ssize_t c, j
    for c in range(channels):
        for j in range(cols):
            out_block[c * ld + j] = bias[c]


cdef int conv_gemm(const floating* x, const floating* w, const floating* bias, floating* out,
                   const ConvShape* s, bint pointwise, Py_ssize_t band_rows,
                   int num_threads) noexcept nogil:
    """im2col + GEMM; with `pointwise` (1x1, stride 1, no padding) the input band already is
    the GEMM operand and nothing is copied."""
    cdef Py_ssize_t OW = s.out_size[2]
    cdef Py_ssize_t rows = s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t out_plane = rows * OW
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t bands = (rows + band_rows - 1) // band_rows
    cdef Py_ssize_t items = s.n * s.groups * bands
    cdef Py_ssize_t item, band, n, g, r0, r1, cols
    cdef floating* col = NULL
    cdef floating* out_block
    cdef const floating* operand
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef floating beta
    cdef int blas_threads_before

    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
        if not pointwise:
            col = <floating*> fc_workspace(WS_IM2COL, K * band_rows * OW * sizeof(floating))
            if col == NULL:
                failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if not pointwise and col == NULL:
                continue
            band = item % bands
            g = (item // bands) % s.groups
            n = item // (bands * s.groups)
            r0 = band * band_rows
            r1 = r0 + band_rows
            if r1 > rows:
                r1 = rows
            cols = (r1 - r0) * OW
            operand = unfold_band(x + (n * s.c_in + g * s.c_in_g) * in_plane, s, r0, r1,
                                  pointwise, col)
            out_block = out + (n * s.c_out + g * s.c_out_g) * out_plane + r0 * OW
            beta = 0
            if bias != NULL:
                fill_bias(out_block, bias + g * s.c_out_g, s.c_out_g, cols, out_plane)
                beta = 1
            gemm(False, False, <int> s.c_out_g, <int> cols, <int> K, <floating> 1,
                 w + g * s.c_out_g * K, <int> K, operand,
                 <int> (in_plane if pointwise else cols), beta, out_block, <int> out_plane)
        release_blas(blas_local_threads(), blas_threads_before)
    return failed



# ---------------------------------------------------------------------------------------------
# col2im: the adjoint of im2col_rows.

cdef extern from "pair_rows.h":
    void fc_add_even_f32(float* dst, const float* src, Py_ssize_t n) noexcept nogil
    void fc_add_even_f64(double* dst, const double* src, Py_ssize_t n) noexcept nogil


cdef inline void add_even(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[2 * i] += src[i] for i < n."""
    if floating is float:
        fc_add_even_f32(dst, src, n)
    else:
        fc_add_even_f64(dst, src, n)


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
                elif sw == 2 and hi > lo:
                    # by shuffles (pair_rows.h): this thread owns channel c's plane
                    add_even(x_row + lo * 2 + off, src + lo, hi - lo)
                else:
                    for o in range(lo, hi):
                        x_row[o * sw + off] += src[o]
            src += OW
            oh = oh + 1
            if oh == OH:
                oh = 0
                od = od + 1


cdef inline void scatter_band(floating* x_g, const ConvShape* s, Py_ssize_t c_begin,
                              Py_ssize_t c_end, Py_ssize_t row_begin, Py_ssize_t row_end,
                              const floating* col, bint tiled) noexcept nogil:
    if tiled:
        tile_rows(x_g, s, c_begin, c_end, row_begin, row_end, col)
    else:
        col2im_rows(x_g, s, c_begin, c_end, row_begin, row_end, col)


cdef bint taps_tile_input(const ConvShape* s) noexcept nogil:
    """Whether every input pixel is read by exactly one (output position, tap): windows side
    by side with no gap, overlap or padding (kernel == stride, dilation 1 where the kernel is
    wider than 1, and the input exactly out_size * stride long) on every axis. The UNet and
    V-Net up-sampling layers (transposed, kernel 2 stride 2) are such problems: their col2im
    stores each value once, with no zero-fill and no read-modify-write."""
    cdef int a
    for a in range(3):
        if s.kernel[a] != s.stride[a] or s.pad[a] != 0 \
                or s.kernel[a] > 1 and s.dilation[a] != 1 \
                or s.in_size[a] != s.out_size[a] * s.stride[a]:
            return False
    return True


cdef void tile_rows(floating* x_g, const ConvShape* s, Py_ssize_t c_begin, Py_ssize_t c_end,
                    Py_ssize_t row_begin, Py_ssize_t row_end,
                    const floating* col) noexcept nogil:
    """col2im_rows for problems whose taps tile the input (taps_tile_input): x_g[c, d, h, w]
    := col[k, j], each input pixel of the band's rows written once. Kernel width 2 merges the
    two taps' rows by vector shuffles; width 1 copies; wider ones store with a stride."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t band = (row_end - row_begin) * OW
    cdef Py_ssize_t k, c, kd, kh, kw, r, od, oh, o
    cdef floating* x_row
    cdef const floating* src
    for k in range((c_end - c_begin) * KD * KH):
        c = c_begin + k // (KD * KH)
        kd = (k // KH) % KD
        kh = k % KH
        src = col + k * KW * band
        for r in range(row_begin, row_end):
            od = r // OH
            oh = r % OH
            x_row = x_g + ((c * D + od * KD + kd) * H + oh * KH + kh) * W
            if KW == 1:
                memcpy(x_row, src, OW * sizeof(floating))
            elif KW == 2:
                merge_pairs_rows(src, src + band, 0, x_row, 0, OW, 1)
            else:
                for kw in range(KW):
                    for o in range(OW):
                        x_row[o * KW + kw] = src[kw * band + o]
            src += OW


cdef inline bint weight_read_in_place(Py_ssize_t c_in_g, Py_ssize_t taps,
                                      Py_ssize_t channel_chunks, Py_ssize_t band_cols,
                                      Py_ssize_t MR, Py_ssize_t NR) noexcept nogil:
    """True if input_grad_gemm's micro-kernel reads W_g^T where it lies (adjoint_in_place):
    every chunk's rows (channels x taps), the last one's too, whole panels of MR, and bands of
    at most a few panels of NR positions."""
    cdef Py_ssize_t chunk_channels = (c_in_g + channel_chunks - 1) // channel_chunks
    cdef Py_ssize_t last_rows = (c_in_g - (channel_chunks - 1) * chunk_channels) * taps
    return adjoint_in_place(chunk_channels * taps, band_cols, MR, NR) \
        and (last_rows <= 0 or last_rows % MR == 0)


cdef int check_at_least_one(str entry, str name, Py_ssize_t value) except -1:
    """A tiling argument of an entry point is a count the kernels divide by: at least 1."""
    if value < 1:
        raise ValueError(f"conv_im2col.{entry}: {name} must be at least 1; got {value}")
    return 0


def input_grad_reads_weight_in_place(Py_ssize_t c_in_g, Py_ssize_t taps,
                                     Py_ssize_t channel_chunks, Py_ssize_t band_cols,
                                     bint double_precision):
    """weight_read_in_place for Python (the planner): whether INPUT_GRAD_COL2IM_PACKED
    multiplies by the weight's transpose where it lies instead of packing it first."""
    cdef Py_ssize_t chunk_rows
    cdef int shape
    check_at_least_one("input_grad_reads_weight_in_place", "channel_chunks", channel_chunks)
    chunk_rows = (c_in_g + channel_chunks - 1) // channel_chunks * taps
    if double_precision:
        shape = choose_tile(chunk_rows, <double*> NULL)
        return weight_read_in_place(c_in_g, taps, channel_chunks, band_cols, tile_mr(shape),
                                    tile_nr(shape, <double*> NULL))
    shape = choose_tile(chunk_rows, <float*> NULL)
    return weight_read_in_place(c_in_g, taps, channel_chunks, band_cols, tile_mr(shape),
                                tile_nr(shape, <float*> NULL))


cdef int input_grad_gemm(const floating* g, const floating* w, floating* dx, const ConvShape* s,
                         bint pointwise, Py_ssize_t band_rows, Py_ssize_t channel_chunks,
                         bint own_gemm, int num_threads) noexcept nogil:
    """dx := conv^T(g): per band, col = W_g^T @ g_band (one single-threaded GEMM), then col2im.

    A work item owns whole input channels (image, group, chunk of input channels) and walks
    every band, so the scatter of col2im never races; chunks split the channels of a group
    when there are too few images x groups to keep every thread busy (batch 1). With
    `own_gemm` the GEMM is fastconv's micro-kernel (each band of g packed per item; W^T read
    where it lies when a chunk's rows are whole panels and a band few panels of positions,
    else packed once per call) instead of BLAS."""
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
    cdef bint tiled = taps_tile_input(s)
    cdef bint w_in_place = weight_read_in_place(s.c_in_g, taps, channel_chunks,
                                                band_rows * OW, MR, NR)

    own_gemm = own_gemm and not pointwise
    if own_gemm and not w_in_place:
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
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
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
            if not pointwise and not tiled:
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
                    if w_in_place:
                        multiply_tile(s.c_out_g, (c1 - c0) * taps // MR, (c1 - c0) * taps,
                                      cols, NR, w + g_idx * s.c_out_g * K + c0 * taps,
                                      g_packed, col, cols, NULL, False, shape, NULL, -K)
                    else:
                        multiply_tile(s.c_out_g, ((c1 - c0) * taps + MR - 1) // MR,
                                      (c1 - c0) * taps, cols, NR,
                                      w_packed + (g_idx * channel_chunks + chunk) * m_panels
                                      * s.c_out_g * MR, g_packed, col, cols, NULL, False,
                                      shape, NULL)
                    scatter_band(dx_g, s, c0, c1, r0, r1, col, tiled)
                else:
                    gemm(True, False, <int> ((c1 - c0) * taps), <int> cols, <int> s.c_out_g,
                         <floating> 1, w + g_idx * s.c_out_g * K + c0 * taps, <int> K,
                         g_block + r0 * OW, <int> out_plane, <floating> 0, col, <int> cols)
                    scatter_band(dx_g, s, c0, c1, r0, r1, col, tiled)
        release_blas(blas_local_threads(), blas_threads_before)
    fc_workspace_trim()   # the main thread's buffers; the other threads' are band-sized
    return failed



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
    # the calling thread's buffer, reused from call to call: a calloc'ed one came as fresh
    # pages to fault in and zero on every call (a tenth of a ResNet-50 layer's weight gradient)
    cdef floating* partial = <floating*> fc_workspace(WS_PARTIAL,
                                                      chunks * size * sizeof(floating))
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
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
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
            memset(mine, 0, size * sizeof(floating))   # by the thread that sums into it
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
                                  mine + g_idx * s.c_out_g * K, K, NULL, True, shape, NULL)
                else:
                    gemm(False, True, <int> s.c_out_g, <int> K, <int> cols, <floating> 1,
                         g + (n * s.c_out + g_idx * s.c_out_g) * out_plane + r0 * OW,
                         <int> out_plane, operand, <int> (in_plane if pointwise else cols),
                         <floating> 1, mine + g_idx * s.c_out_g * K, <int> K)
        release_blas(blas_local_threads(), blas_threads_before)

    if failed == 0:
        for i in prange(size, num_threads=num_threads, schedule='static'):
            total = partial[i]
            for t in range(1, chunks):
                total = total + partial[t * size + i]
            dw[i] = total
    fc_workspace_trim()   # the main thread's buffers; the other threads' are band-sized
    return failed



# ---------------------------------------------------------------------------------------------
# Entry points from Python: 5-d C-contiguous arrays (1d and 2d problems with unit leading
# spatial axes), already validated by the Python layer.

def conv_forward(int kernel, const floating[:, :, :, :, ::1] x,
                 const floating[:, :, :, :, ::1] w, const floating[::1] bias,
                 floating[:, :, :, :, ::1] out, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, Py_ssize_t band_rows, int num_threads):
    """out := conv(x, w) + bias (bias: empty for none) with zero padding `pad` before each
    axis, by im2col bands of `band_rows` output rows and a BLAS GEMM per band. `kernel`:
    CONV_IM2COL_BLAS, or CONV_GEMM1X1_BLAS for a pointwise problem (nothing unfolded)."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(w.shape), shape5(out.shape),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    cdef bint pointwise
    if kernel == CONV_IM2COL_BLAS:
        pointwise = False
    elif kernel == CONV_GEMM1X1_BLAS:
        pointwise = True
    else:
        raise ValueError(f"conv_im2col.conv_forward does not run kernel {kernel}")
    check_at_least_one("conv_forward", "band_rows", band_rows)
    if out.shape[0] == 0:
        return
    with nogil:
        status = conv_gemm(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                           &out[0, 0, 0, 0, 0], &s, pointwise, band_rows, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")


def input_grad(int kernel, const floating[:, :, :, :, ::1] g,
               const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] dx,
               tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
               Py_ssize_t band_rows, Py_ssize_t channel_chunks, int num_threads):
    """dx := the input gradient of conv(dx-shaped input, w) for output gradient g (zero
    padding `pad` before each axis): per band of `band_rows` output rows, col = W^T @ g_band,
    then col2im; work items own `channel_chunks` chunks of a group's input channels.
    `kernel`: INPUT_GRAD_COL2IM_BLAS or INPUT_GRAD_COL2IM_PACKED (the GEMM on BLAS or on the
    packed micro-kernel), or INPUT_GRAD_GEMM1X1_BLAS for a pointwise problem (the band of dx
    is the GEMM's output itself)."""
    cdef ConvShape s = make_shape(shape5(dx.shape), shape5(w.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    cdef bint pointwise, own_gemm
    if kernel == INPUT_GRAD_COL2IM_BLAS:
        pointwise, own_gemm = False, False
    elif kernel == INPUT_GRAD_COL2IM_PACKED:
        pointwise, own_gemm = False, True
    elif kernel == INPUT_GRAD_GEMM1X1_BLAS:
        pointwise, own_gemm = True, False
    else:
        raise ValueError(f"conv_im2col.input_grad does not run kernel {kernel}")
    check_at_least_one("input_grad", "band_rows", band_rows)
    check_at_least_one("input_grad", "channel_chunks", channel_chunks)
    if dx.shape[0] == 0:
        return
    with nogil:
        status = input_grad_gemm(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &dx[0, 0, 0, 0, 0],
                                 &s, pointwise, band_rows, channel_chunks, own_gemm,
                                 num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")


def weight_grad(int kernel, const floating[:, :, :, :, ::1] x,
                const floating[:, :, :, :, ::1] g, floating[:, :, :, :, ::1] dw,
                tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                Py_ssize_t band_rows, Py_ssize_t chunks, int num_threads):
    """dw := the weight gradient of conv(x, dw-shaped weight) for output gradient g, summed
    over bands of `band_rows` output rows in `chunks` fixed partial sums. `kernel`:
    WEIGHT_GRAD_IM2COL_BLAS or WEIGHT_GRAD_IM2COL_PACKED (im2col bands; the GEMM on BLAS or
    on the packed micro-kernel), WEIGHT_GRAD_GEMM1X1_BLAS or WEIGHT_GRAD_GEMM1X1_PACKED
    (a pointwise problem: the input band is the operand)."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(dw.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    cdef bint pointwise, own_gemm
    if kernel == WEIGHT_GRAD_IM2COL_BLAS:
        pointwise, own_gemm = False, False
    elif kernel == WEIGHT_GRAD_IM2COL_PACKED:
        pointwise, own_gemm = False, True
    elif kernel == WEIGHT_GRAD_GEMM1X1_BLAS:
        pointwise, own_gemm = True, False
    elif kernel == WEIGHT_GRAD_GEMM1X1_PACKED:
        pointwise, own_gemm = True, True
    else:
        raise ValueError(f"conv_im2col.weight_grad does not run kernel {kernel}")
    check_at_least_one("weight_grad", "band_rows", band_rows)
    check_at_least_one("weight_grad", "chunks", chunks)
    with nogil:
        status = weight_grad_gemm(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0], &dw[0, 0, 0, 0, 0],
                                  &s, pointwise, band_rows, chunks, own_gemm, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")


def weight_grad_stacked(int kernel, const floating[:, :, ::1] x, const floating[:, :, ::1] g,
                        floating[:, ::1] dw, Py_ssize_t groups, Py_ssize_t blocks,
                        int num_threads):
    """dw[o, c] := sum over n, p of g[n, o, p] * x[n, group(o) * C_g + c, p]: the weight
    gradient of a pointwise convolution over the positions of all N images as one deep sum
    (x (N, C, P), g (N, K, P), dw (K, C_g)). The larger of a group's output channels and
    input rows is cut into `blocks` blocks that run in parallel, each a BLAS GEMM per image
    accumulated in image order: every element is one sum in a fixed order, whatever the
    split. The images are read in place (stacking them end to end first was a
    single-threaded copy of both operands, a fifth of the call). `kernel`:
    WEIGHT_GRAD_GEMM1X1_BLAS."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], K = g.shape[1], P = x.shape[2]
    cdef Py_ssize_t Cg, Kg, item, grp, b0, size, step, n
    cdef bint by_columns
    cdef int blas_threads_before
    if kernel != WEIGHT_GRAD_GEMM1X1_BLAS:
        raise ValueError(f"conv_im2col.weight_grad_stacked does not run kernel {kernel}")
    if groups < 1 or C % groups or K % groups or g.shape[0] != N or g.shape[2] != P \
            or blocks < 1 or dw.shape[0] != K or dw.shape[1] != C // groups:
        raise ValueError("conv_im2col.weight_grad_stacked: x (N, C, P), g (N, K, P), dw (K, "
                         f"C / groups), blocks >= 1; got {(N, C, P)}, "
                         f"{(g.shape[0], K, g.shape[2])}, {(dw.shape[0], dw.shape[1])}, "
                         f"groups {groups}, blocks {blocks}")
    Cg, Kg = C // groups, K // groups
    if K == 0 or Cg == 0:
        return
    if P == 0 or N == 0:
        dw[:, :] = 0
        return
    # split the longer side: each GEMM packs the whole of the other operand
    by_columns = Cg > Kg
    step = ((Cg if by_columns else Kg) + blocks - 1) // blocks
    with nogil, parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
        for item in prange(groups * blocks, schedule='dynamic'):
            grp = item // blocks
            b0 = (item % blocks) * step
            size = (Cg if by_columns else Kg) - b0
            if size > step:
                size = step
            if size <= 0:
                continue
            for n in range(N):
                if by_columns:
                    gemm(False, True, <int> Kg, <int> size, <int> P, <floating> 1,
                         &g[n, grp * Kg, 0], <int> P, &x[n, grp * Cg + b0, 0], <int> P,
                         <floating> (n > 0), &dw[grp * Kg, b0], <int> Cg)
                else:
                    gemm(False, True, <int> size, <int> Cg, <int> P, <floating> 1,
                         &g[n, grp * Kg + b0, 0], <int> P, &x[n, grp * Cg, 0], <int> P,
                         <floating> (n > 0), &dw[grp * Kg + b0, 0], <int> Cg)
        release_blas(blas_local_threads(), blas_threads_before)


def unfold_stacked(const floating[:, :, :, :, ::1] x, tuple w_shape, tuple out_shape,
                   floating[:, :, ::1] col, tuple stride, tuple pad, tuple dilation,
                   Py_ssize_t groups, int num_threads):
    """col[n, (g * C_in_g + c) * taps + tap, j] := the input pixel tap (c, kd, kh, kw) of
    group g reads at output position j of image n (zero where padding): every image's
    im2col, the operand of weight_grad_stacked."""
    cdef ConvShape s = make_shape(shape5(x.shape), w_shape, out_shape, stride, pad, dilation,
                                  groups)
    cdef Py_ssize_t taps = s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t rows = s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t P = rows * s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t item, n, g, piece, k0, k1
    # (image, group) planes are few where stacking pays (batch 1: one): each plane's rows of
    # taps are cut into blocks, enough for every thread (a copy: the split changes no value)
    cdef Py_ssize_t planes = s.n * s.groups, K = s.c_in_g * taps, pieces
    if col.shape[0] != s.n or col.shape[1] != s.c_in * taps or col.shape[2] != P:
        raise ValueError(f"conv_im2col.unfold_stacked: col must be {(s.n, s.c_in * taps, P)}; "
                         f"got {(col.shape[0], col.shape[1], col.shape[2])}")
    if col.shape[0] == 0 or col.shape[1] == 0 or col.shape[2] == 0 or planes == 0:
        return
    pieces = (UNFOLD_PIECES_PER_THREAD * max(num_threads, 1) + planes - 1) // planes
    if pieces > K:
        pieces = K
    with nogil:
        for item in prange(planes * pieces, num_threads=num_threads, schedule='dynamic'):
            n = item // (s.groups * pieces)
            g = item // pieces % s.groups
            piece = item % pieces
            k0 = piece * K // pieces
            k1 = (piece + 1) * K // pieces
            im2col_taps(&x[0, 0, 0, 0, 0] + (n * s.c_in + g * s.c_in_g) * in_plane, &s, 0,
                        rows, k0, k1, &col[n, 0, 0] + g * K * P, P)
