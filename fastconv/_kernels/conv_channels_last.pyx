# cython: language_level=3
"""2-d convolution of channels-last (NHWC) arrays, output channels-last: the memory format
PyTorch calls ``channels_last`` and JAX / TensorFlow use by default.

- ``conv_gemm_nhwc`` (groups == 1): the output's pixels are the rows of a GEMM on
  fastconv's micro-kernel, out (pixels, C_out) = patches (pixels, KH * KW * C_in) @ W
  (KH * KW * C_in, C_out). A patch row is KH * KW runs of C_in contiguous channels, packed
  as they lie into the micro-kernel's A panels; W is read in place. Tiles of pixels (and
  chunks of output channels, when the pixels are few) run in parallel. The output may be
  every stride-th pixel of a larger array (a stride phase of an input gradient).
- ``conv_depthwise_nhwc`` (groups == C_in == C_out): for each output pixel, each tap adds
  w[tap, :] * x[pixel, :] over the contiguous channels, pixels two or four at a time
  (tap_sums.h).
- ``weight_grad_nhwc`` (dW = G^T patches, packed or read in place),
  ``weight_grad_nhwc_taps`` (its transpose for few input channels, the patches read in place
  from a copy padded by ``pad_nhwc``), ``depthwise_weight_grad_nhwc`` and
  ``depthwise_input_grad_nhwc``: the gradients.
- ``transpose_images``: channels-first <-> channels-last, in tiles (the channels-first calls
  that run on these kernels); ``pack_panels``: the weights' B panels;
  ``pack_tap_panels``: those of the input gradient's convolutions (adjoint, stride phases).

Kernels trust their inputs: the Python layer (fastconv/_ops/conv.py, conv_grad.py) checked
the call; what would write out of bounds if it were wrong (shapes, an output view's strides,
taps outside the input) is checked here too.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from fastconv._kernels.pair_rows cimport fc_copy_short, fc_pad_rows, fc_zero_short
from fastconv._kernels.packed_gemm cimport TILE_MIXED, gemm_rows_tile, gemm_tile, pack_b_panels, \
    tile_mr, tile_nr, transpose_block, vector_width
from fastconv._kernels.workspace cimport fc_workspace

cdef extern from "transpose_tiles.h":
    void fc_transpose_f32(const float* src, Py_ssize_t ss, float* dst, Py_ssize_t ds,
                          Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
    void fc_transpose_f64(const double* src, Py_ssize_t ss, double* dst, Py_ssize_t ds,
                          Py_ssize_t rows, Py_ssize_t cols) noexcept nogil

cdef extern from "stream_store.h":
    void fc_stream_copy(void* dst, const void* src, size_t bytes) noexcept nogil
    void fc_stream_fence() noexcept nogil

# Slots of the per-thread workspace (workspace.h): the GEMMs' tile buffers (a few hundred KiB
# per thread), reused from call to call like the other kernels' instead of allocated per call
cdef enum:
    WS_PATCH_PANELS, WS_PATCH_ROWS, WS_PANEL_IN_PLACE, WS_GRAD_A, WS_GRAD_B, WS_GRAD_ROWS,
    WS_OUT_TILE, WS_PIXEL_OFFSETS, WS_PATCH_GATHER, WS_WEIGHT_BLOCK


ctypedef struct NHWCShape:
    Py_ssize_t N, H, W, C, OH, OW, C_out
    Py_ssize_t KH, KW, sh, sw, ph, pw, dh, dw


cdef NHWCShape make_shape(Py_ssize_t* in_shape, Py_ssize_t* out_shape, tuple kernel,
                          tuple stride, tuple padding, tuple dilation) except *:
    """The geometry of a call: input (N, H, W, C), output (N, OH, OW, C_out) and the
    per-axis (height, width) pairs."""
    cdef NHWCShape s
    s.N, s.H, s.W, s.C = in_shape[0], in_shape[1], in_shape[2], in_shape[3]
    s.OH, s.OW, s.C_out = out_shape[1], out_shape[2], out_shape[3]
    s.KH, s.KW = kernel
    s.sh, s.sw = stride
    s.ph, s.pw = padding
    s.dh, s.dw = dilation
    return s


cdef inline void pixel_coordinates(const NHWCShape* s, Py_ssize_t p, Py_ssize_t* n,
                                   Py_ssize_t* oh, Py_ssize_t* ow) noexcept nogil:
    """(n, oh, ow) of output pixel p (pixels numbered image by image, row by row)."""
    ow[0] = p % s.OW
    oh[0] = (p // s.OW) % s.OH
    n[0] = p // (s.OW * s.OH)


cdef inline void next_pixel(const NHWCShape* s, Py_ssize_t* n, Py_ssize_t* oh,
                            Py_ssize_t* ow) noexcept nogil:
    """Step (n, oh, ow) to the next output pixel without a division."""
    ow[0] += 1
    if ow[0] == s.OW:
        ow[0] = 0
        oh[0] += 1
        if oh[0] == s.OH:
            oh[0] = 0
            n[0] += 1


cdef void fill_pixel_panels(const floating* x, const NHWCShape* s, Py_ssize_t p0,
                            Py_ssize_t count, Py_ssize_t MR, floating* a,
                            floating* rows) noexcept nogil:
    """a[k][m] := patch row k of output pixel p0 + m (zero past `count`): the receptive
    fields of one panel of MR pixels in the micro-kernel's A panel layout. Each pixel's
    patch row is gathered into `rows` (MR x K: KH * KW runs of C contiguous channels, zeros
    in the padding), then the block is transposed into the panel through vector registers
    (written element by element, MR apart, the packing took a sixth of a 4x4 stride-2
    transposed convolution's time on 8x8 inputs, whose panels all touch the padding)."""
    cdef Py_ssize_t K = s.KH * s.KW * s.C
    cdef Py_ssize_t m, n, oh, ow, kh, kw, ih, iw, iw0, k0
    cdef size_t run = s.C * sizeof(floating), row_run = s.KW * s.C * sizeof(floating)
    cdef bint whole_rows
    cdef floating* dst
    # the pixel's coordinates, stepped along with m (no divisions per pixel)
    pixel_coordinates(s, p0, &n, &oh, &ow)
    for m in range(MR):
        dst = rows + m * K
        if m >= count:
            fc_zero_short(dst, K * sizeof(floating))
            continue
        k0 = 0
        iw0 = ow * s.sw - s.pw
        # a row of taps inside the input, dilation 1: one run of KW * C (a stem's 3 channels
        # copied as 7 runs of 21, not 49 of 3)
        whole_rows = s.dw == 1 and iw0 >= 0 and iw0 + s.KW <= s.W
        for kh in range(s.KH):
            ih = oh * s.sh - s.ph + kh * s.dh
            if whole_rows and 0 <= ih < s.H:
                fc_copy_short(dst + k0, x + ((n * s.H + ih) * s.W + iw0) * s.C, row_run)
                k0 += s.KW * s.C
                continue
            for kw in range(s.KW):
                iw = iw0 + kw * s.dw
                if 0 <= ih < s.H and 0 <= iw < s.W:
                    fc_copy_short(dst + k0, x + ((n * s.H + ih) * s.W + iw) * s.C, run)
                else:
                    fc_zero_short(dst + k0, run)
                k0 += s.C
        next_pixel(s, &n, &oh, &ow)
    transpose_block(rows, K, a, MR, MR, K)


cdef bint panel_in_place(const floating* x, const NHWCShape* s, Py_ssize_t p0,
                         Py_ssize_t count, const floating** rows) noexcept nogil:
    """Whether every tap of output pixels p0 .. p0 + count - 1 lies inside the input; if so,
    rows[m] := the first tap's pixel of pixel p0 + m (its patch row k then lies at
    rows[m] + patch_offsets[k])."""
    cdef Py_ssize_t m, ih, iw, n, oh, ow
    pixel_coordinates(s, p0, &n, &oh, &ow)
    for m in range(count):
        ih = oh * s.sh - s.ph
        iw = ow * s.sw - s.pw
        if ih < 0 or iw < 0 or ih + (s.KH - 1) * s.dh >= s.H or iw + (s.KW - 1) * s.dw >= s.W:
            return False
        rows[m] = x + ((n * s.H + ih) * s.W + iw) * s.C
        next_pixel(s, &n, &oh, &ow)
    return True


cdef void scatter_tile(const NHWCShape* s, const floating* rows, Py_ssize_t ldc,
                       Py_ssize_t p0, Py_ssize_t count, floating* out, Py_ssize_t sn,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t width,
                       bint stream) noexcept nogil:
    """Output pixels p0 .. p0 + count - 1 of a strided output (strides sn, sh, sw elements):
    out[pixel][0 .. width - 1] := rows[i * ldc + 0 .. width - 1], with streaming stores
    when `stream` (stream_store.h)."""
    cdef Py_ssize_t i, n, oh, ow
    pixel_coordinates(s, p0, &n, &oh, &ow)
    for i in range(count):
        if stream:
            fc_stream_copy(out + n * sn + oh * sh + ow * sw, rows + i * ldc,
                           width * sizeof(floating))
        else:
            fc_copy_short(out + n * sn + oh * sh + ow * sw, rows + i * ldc,
                          width * sizeof(floating))
        next_pixel(s, &n, &oh, &ow)


def conv_gemm_nhwc(const floating[:, :, :, ::1] x, const floating[:, ::1] w,
                   const floating[::1] bias, floating[:, :, :, :] out, tuple kernel,
                   tuple stride, tuple padding, tuple dilation, int shape,
                   Py_ssize_t tile_panels, Py_ssize_t column_chunks, bint read_in_place,
                   int num_threads, bint stream=False, bint weight_rows=False):
    """out (N, OH, OW, C_out) := conv(x (N, H, W, C), w) + bias (C_out, or empty), w the
    weight matrix W (KH * KW * C, C_out) in (kh, kw, c) row order as the micro-kernel's B
    panels: w[j * K + k, c] = W[k, j * NR + c], zero past C_out.

    The output's pixels are the rows of a GEMM on fastconv's micro-kernel (register tile
    `shape`): out (pixels, C_out) = patches (pixels, K) @ w (K, C_out). A work item is a
    tile of `tile_panels` x MR pixels times one of `column_chunks` chunks of the output
    channels' panels. A panel of MR pixels is read where it lies when `read_in_place` and
    all its taps are inside the input (a patch row is KH * KW runs of C channels at fixed
    offsets from the pixel's first tap); otherwise its patches are packed into A panels,
    zeros in the padding. Loops: K in blocks, then column panels, then pixel panels, so a
    column panel's K block stays in L1 while every pixel panel passes.

    `out` is any view whose channels are contiguous: a strided one (every stride-th pixel of
    a larger array, as the stride phases of an input gradient write) gets each tile through
    a per-thread buffer, its rows then copied to their pixels. With `stream`, so does a
    dense one, copied out by streaming stores: an output larger than the caches, each of
    whose elements one K block writes once, is then written without first being read.

    With `weight_rows`, w is W's transpose (C_out, K) instead, a channels-last weight's own
    rows, and each K block of a column panel is transposed into the panel layout by the item
    that uses it, in a per-thread buffer: for a call of one or two tiles of pixels (a batch-1
    layer on a small plane) that reads the weight once, where kept panels are read, and
    checked against a kept copy of the weight, three times over."""
    cdef NHWCShape s = make_shape(x.shape, out.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t K = s.KH * s.KW * s.C, C_out = s.C_out
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t pixels = s.N * s.OH * s.OW
    cdef Py_ssize_t tile = tile_panels * MR
    cdef Py_ssize_t tiles = (pixels + tile - 1) // tile
    cdef Py_ssize_t n_panels = (C_out + NR - 1) // NR
    cdef Py_ssize_t per_chunk, k_block, item, t, chunk, p0, count, i, j, j0, j1, k0, k_len
    cdef Py_ssize_t panel, m_panels, kb, kh, kw, c, m_valid, ldc, cols0
    cdef bint with_bias = bias.shape[0] > 0
    # a 1x1, stride-1, unpadded layer's patches are the input's rows: A where it lies, C apart
    # (no pointers per pixel to work out: 32 -> 16 channels on 112x112, batch 8, Zen 4, 0.80-0.91
    # -> 0.54-0.75 ms)
    cdef bint pointwise = read_in_place and s.KH == 1 and s.KW == 1 and s.sh == 1 \
        and s.sw == 1 and s.ph == 0 and s.pw == 0 and s.OH == s.H and s.OW == s.W
    # a strided (or streamed) output: each tile computed into `tile_out` (ldc columns), then
    # scattered
    cdef bint dense = out.is_c_contig() and not stream
    cdef Py_ssize_t out_sn = out.strides[0] // sizeof(floating)
    cdef Py_ssize_t out_sh = out.strides[1] // sizeof(floating)
    cdef Py_ssize_t out_sw = out.strides[2] // sizeof(floating)
    cdef floating* tile_out = NULL
    cdef floating* a = NULL
    cdef floating* gathered = NULL
    cdef const floating** a_rows = NULL
    cdef char* in_place = NULL
    cdef Py_ssize_t* patch_offsets = NULL
    cdef floating* rows
    cdef floating* weight_block = NULL
    cdef const floating* b
    cdef Py_ssize_t n_valid, kr
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    if pixels == 0 or C_out == 0 or K == 0:     # the Python layer keeps these
        return
    if out.strides[3] != sizeof(floating) or out.strides[0] % sizeof(floating) \
            or out.strides[1] % sizeof(floating) or out.strides[2] % sizeof(floating):
        raise ValueError(f"conv_gemm_nhwc: out's channels must be contiguous; got strides "
                         f"{[out.strides[i] for i in range(4)]}")
    if tile_panels < 1 or column_chunks < 1 or (
            (w.shape[0], w.shape[1]) != ((C_out, K) if weight_rows else (n_panels * K, NR))):
        raise ValueError(f"conv_gemm_nhwc: w must be "
                         f"{(C_out, K) if weight_rows else (n_panels * K, NR)} and the tiling "
                         f"positive; got w {tuple(w.shape)}, tile_panels {tile_panels}, "
                         f"column_chunks {column_chunks}")
    per_chunk = (n_panels + column_chunks - 1) // column_chunks
    ldc = C_out if dense else per_chunk * NR
    # a K block of one column panel (k_block x NR) of 64 KiB, in L2: blocks that fit half of
    # L1 (16 KiB) cost every tile more passes over its output and more calls of short K
    # loops (Zen 4, 2 threads, batch 8, ms, 16 -> 64 KiB: 1x1 256 -> 1024 on 14x14 4.31 ->
    # 3.84, 512 -> 128 on 28x28 4.29 -> 3.86, 256 -> 64 on 56x56 5.30 -> 4.89; 256 KiB no
    # better)
    k_block = (64 * 1024) // (NR * sizeof(floating))
    patch_offsets = <Py_ssize_t*> malloc(K * sizeof(Py_ssize_t))
    if patch_offsets == NULL:
        raise MemoryError("fastconv: could not allocate the channels-last patch offsets")
    for kh in range(s.KH):
        for kw in range(s.KW):
            for c in range(s.C):
                patch_offsets[(kh * s.KW + kw) * s.C + c] = (kh * s.dh * s.W + kw * s.dw) * s.C + c
    with nogil, parallel(num_threads=num_threads):
        a = <floating*> fc_workspace(WS_PATCH_PANELS, tile * K * sizeof(floating))
        a_rows = <const floating**> fc_workspace(WS_PATCH_ROWS, tile * sizeof(floating*))
        in_place = <char*> fc_workspace(WS_PANEL_IN_PLACE, tile_panels)
        gathered = <floating*> fc_workspace(WS_PATCH_GATHER, MR * K * sizeof(floating))
        if not dense:
            tile_out = <floating*> fc_workspace(WS_OUT_TILE, tile * ldc * sizeof(floating))
        if weight_rows:
            weight_block = <floating*> fc_workspace(WS_WEIGHT_BLOCK,
                                                    k_block * NR * sizeof(floating))
        if a == NULL or a_rows == NULL or in_place == NULL or gathered == NULL \
                or (not dense and tile_out == NULL) or (weight_rows and weight_block == NULL):
            failed_flag[0] = 1
        for item in prange(tiles * column_chunks, schedule='dynamic'):
            if a == NULL or a_rows == NULL or in_place == NULL or gathered == NULL \
                    or (not dense and tile_out == NULL) \
                    or (weight_rows and weight_block == NULL):
                continue
            t = item // column_chunks
            chunk = item % column_chunks
            j0 = chunk * per_chunk
            j1 = j0 + per_chunk if j0 + per_chunk < n_panels else n_panels
            if j0 >= j1:
                continue
            p0 = t * tile
            count = pixels - p0 if pixels - p0 < tile else tile
            m_panels = (count + MR - 1) // MR
            for panel in range(m_panels):
                if pointwise:
                    break
                m_valid = count - panel * MR if count - panel * MR < MR else MR
                in_place[panel] = read_in_place and panel_in_place(
                    &x[0, 0, 0, 0], &s, p0 + panel * MR, m_valid, a_rows + panel * MR)
                if not in_place[panel]:
                    fill_pixel_panels(&x[0, 0, 0, 0], &s, p0 + panel * MR, m_valid, MR,
                                      a + panel * K * MR, gathered)
            # rows + i * ldc + j - cols0: output channel j of pixel p0 + i
            if dense:
                rows = &out[0, 0, 0, 0] + p0 * C_out
                cols0 = 0
            else:
                rows = tile_out
                cols0 = j0 * NR
            if with_bias:
                for i in range(count):
                    for j in range(j0 * NR, j1 * NR if j1 * NR < C_out else C_out):
                        rows[i * ldc + j - cols0] = bias[j]
            for kb in range((K + k_block - 1) // k_block):
                k0 = kb * k_block
                k_len = K - k0 if K - k0 < k_block else k_block
                for j in range(j0, j1):
                    n_valid = C_out - j * NR if C_out - j * NR < NR else NR
                    if weight_rows:
                        # this K block of panel j: rows k0.. of W^T's columns j * NR..
                        if n_valid < NR:    # the panel's columns past C_out: zeros
                            for kr in range(k_len):
                                memset(weight_block + kr * NR + n_valid, 0,
                                       (NR - n_valid) * sizeof(floating))
                        if floating is float:
                            fc_transpose_f32(&w[j * NR, k0], K, weight_block, NR, n_valid,
                                             k_len)
                        else:
                            fc_transpose_f64(&w[j * NR, k0], K, weight_block, NR, n_valid,
                                             k_len)
                        b = weight_block
                    else:
                        b = &w[0, 0] + (j * K + k0) * NR
                    for panel in range(m_panels):
                        m_valid = count - panel * MR if count - panel * MR < MR else MR
                        if pointwise:
                            gemm_tile(shape, k_len, &x[0, 0, 0, 0] + (p0 + panel * MR) * K + k0,
                                      K, b, NR, NULL,
                                      rows + panel * MR * ldc + j * NR - cols0, ldc, m_valid,
                                      n_valid, NULL, with_bias or k0 > 0)
                        elif in_place[panel]:
                            gemm_rows_tile(shape, k_len, a_rows + panel * MR,
                                           patch_offsets + k0, b, NR,
                                           rows + panel * MR * ldc + j * NR - cols0, ldc,
                                           m_valid, n_valid, NULL, with_bias or k0 > 0)
                        else:
                            gemm_tile(shape, k_len, a + (panel * K + k0) * MR, 0, b, NR, NULL,
                                      rows + panel * MR * ldc + j * NR - cols0, ldc, m_valid,
                                      n_valid, NULL, with_bias or k0 > 0)
            if not dense:
                scatter_tile(&s, rows, ldc, p0, count, &out[0, 0, 0, 0] + cols0, out_sn,
                             out_sh, out_sw, (j1 * NR if j1 * NR < C_out else C_out) - cols0,
                             stream)
        if stream:
            fc_stream_fence()
    free(patch_offsets)
    if failed:
        raise MemoryError("fastconv: could not allocate the channels-last patch buffers")


def tile_columns(bint double_precision, int shape):
    """(MR, NR) of register tile `shape` for this precision on this CPU: the pixels and
    output channels one micro-kernel call computes."""
    if double_precision:
        return tile_mr(shape), tile_nr(shape, <double*> NULL)
    return tile_mr(shape), tile_nr(shape, <float*> NULL)


cdef extern from "tap_sums.h":
    void fc_gather_run_f32(const float** src, Py_ssize_t step, Py_ssize_t count,
                           const float* const* w, Py_ssize_t taps, const float* b, float* out,
                           Py_ssize_t C) noexcept nogil
    void fc_gather_run_f64(const double** src, Py_ssize_t step, Py_ssize_t count,
                           const double* const* w, Py_ssize_t taps, const double* b,
                           double* out, Py_ssize_t C) noexcept nogil
    void fc_gather_rows_f32(const float** src, Py_ssize_t step, Py_ssize_t count,
                            const float* const* w, Py_ssize_t taps, const float* b, float* out,
                            Py_ssize_t C, Py_ssize_t KW, Py_ssize_t dilation) noexcept nogil
    void fc_gather_rows_f64(const double** src, Py_ssize_t step, Py_ssize_t count,
                            const double* const* w, Py_ssize_t taps, const double* b,
                            double* out, Py_ssize_t C, Py_ssize_t KW,
                            Py_ssize_t dilation) noexcept nogil
    void fc_accumulate_run_f32(const float* const* src, Py_ssize_t step, Py_ssize_t count,
                               float* const* acc, Py_ssize_t taps, const float* g,
                               Py_ssize_t C) noexcept nogil
    void fc_accumulate_run_f64(const double* const* src, Py_ssize_t step, Py_ssize_t count,
                               double* const* acc, Py_ssize_t taps, const double* g,
                               Py_ssize_t C) noexcept nogil


cdef inline void gather_run(const floating** src, Py_ssize_t step, Py_ssize_t count,
                            floating** w, Py_ssize_t taps, const floating* b, floating* out,
                            Py_ssize_t C) noexcept nogil:
    """out[i * C + c] := b[c] + sum over t of w[t][c] * src[t][i * step + c], i < count
    (src is advanced past the run)."""
    if floating is float:
        fc_gather_run_f32(src, step, count, <const float* const*> w, taps, b, out, C)
    else:
        fc_gather_run_f64(src, step, count, <const double* const*> w, taps, b, out, C)


cdef inline void gather_rows(const floating** src, Py_ssize_t step, Py_ssize_t count,
                             floating** w, Py_ssize_t taps, const floating* b, floating* out,
                             Py_ssize_t C, Py_ssize_t KW, Py_ssize_t dilation) noexcept nogil:
    """gather_run for a run of pixels whose taps are whole kernel rows (KW taps `dilation`
    apart each): stride 1, dilation 1 and KW 3 or 5 load each input vector once per kernel
    row, not once per tap (tap_sums.h: fc_gather_rows)."""
    if floating is float:
        fc_gather_rows_f32(src, step, count, <const float* const*> w, taps, b, out, C, KW,
                           dilation)
    else:
        fc_gather_rows_f64(src, step, count, <const double* const*> w, taps, b, out, C, KW,
                           dilation)


cdef inline void accumulate_run(const floating** src, Py_ssize_t step, Py_ssize_t count,
                                floating** acc, Py_ssize_t taps, const floating* g,
                                Py_ssize_t C) noexcept nogil:
    """acc[t][c] += sum over i < count of g[i * C + c] * src[t][i * step + c]."""
    if floating is float:
        fc_accumulate_run_f32(src, step, count, acc, taps, g, C)
    else:
        fc_accumulate_run_f64(src, step, count, acc, taps, g, C)


cdef void interior_columns(const NHWCShape* s, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the output columns whose taps all lie inside the input row
    (0 <= ow * sw - pw and ow * sw - pw + (KW - 1) * dw < W); empty if there are none."""
    cdef Py_ssize_t last = s.W - 1 + s.pw - (s.KW - 1) * s.dw
    lo[0] = (s.pw + s.sw - 1) // s.sw
    hi[0] = last // s.sw + 1 if last >= 0 else 0
    if hi[0] > s.OW:
        hi[0] = s.OW
    if lo[0] > s.OW:
        lo[0] = s.OW
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef Py_ssize_t output_pixel_taps(const floating* x, floating* per_tap, const NHWCShape* s,
                                  Py_ssize_t n, Py_ssize_t oh, Py_ssize_t ow,
                                  const floating** src, floating** tap_rows) noexcept nogil:
    """The taps of output pixel (n, oh, ow) that fall inside the input: src[t] its input
    pixel's channels in x, tap_rows[t] the tap's row of per_tap ((KH * KW, C): the weights,
    or the weight gradient's sums); returns their count."""
    cdef Py_ssize_t kh, kw, ih, iw, t = 0
    for kh in range(s.KH):
        ih = oh * s.sh - s.ph + kh * s.dh
        if ih < 0 or ih >= s.H:
            continue
        for kw in range(s.KW):
            iw = ow * s.sw - s.pw + kw * s.dw
            if iw < 0 or iw >= s.W:
                continue
            src[t] = x + ((n * s.H + ih) * s.W + iw) * s.C
            tap_rows[t] = per_tap + (kh * s.KW + kw) * s.C
            t += 1
    return t


cdef void depthwise_rows(const floating* x, const floating* w, const floating* bias,
                         floating* out, const NHWCShape* s, Py_ssize_t r0, Py_ssize_t r1,
                         const floating** src, floating** w_rows) noexcept nogil:
    """Output rows r0..r1-1 (row = n * OH + oh) of a depthwise convolution: each pixel's
    channels summed over its taps (w[tap, c] * x[tap's pixel, c]) and written once; the
    row's interior as one run."""
    cdef Py_ssize_t r, n, oh, ow, taps, lo, hi, count
    interior_columns(s, &lo, &hi)
    for r in range(r0, r1):
        n = r // s.OH
        oh = r - n * s.OH
        ow = 0
        while ow < s.OW:
            taps = output_pixel_taps(x, <floating*> w, s, n, oh, ow, src, w_rows)
            count = hi - lo if ow == lo and hi > lo else 1
            # an interior run's pixels have every tap of each kernel row inside the input
            gather_rows(src, s.sw * s.C, count, w_rows, taps, bias,
                        out + (r * s.OW + ow) * s.C, s.C, s.KW if count > 1 else 0, s.dw)
            ow += count


def conv_depthwise_nhwc(const floating[:, :, :, ::1] x, const floating[:, ::1] w,
                        const floating[::1] bias, floating[:, :, :, ::1] out, tuple kernel,
                        tuple stride, tuple padding, tuple dilation, int num_threads):
    """out (N, OH, OW, C) := depthwise conv(x (N, H, W, C), w (KH * KW, C)) + bias."""
    cdef NHWCShape s = make_shape(x.shape, out.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t rows = s.N * s.OH
    cdef Py_ssize_t pieces = num_threads * 8 if rows > num_threads * 8 else rows
    cdef Py_ssize_t piece
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef const floating** src = NULL
    cdef floating** w_rows = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    if rows == 0 or s.OW == 0 or s.C == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        src = <const floating**> malloc(s.KH * s.KW * sizeof(floating*))
        w_rows = <floating**> malloc(s.KH * s.KW * sizeof(floating*))
        if src == NULL or w_rows == NULL:
            failed_flag[0] = 1
        for piece in prange(pieces, schedule='dynamic'):
            if src != NULL and w_rows != NULL:
                depthwise_rows(&x[0, 0, 0, 0], &w[0, 0], b, &out[0, 0, 0, 0], &s,
                               piece * rows // pieces, (piece + 1) * rows // pieces, src,
                               w_rows)
        free(src)
        free(w_rows)
    if failed:
        raise MemoryError("fastconv: could not allocate the depthwise kernel's tap lists")


# ---------------------------------------------------------------------------------------------
# Weight gradient: dW (C_out, K) = G^T (C_out, pixels) @ patches (pixels, K), K in (kh, kw, c)
# order, both operands read from channels-last memory where each pixel's channels are
# contiguous: G^T's A panels take MR contiguous output channels of a pixel, the patches' B
# panels NR contiguous elements of its patch row.

cdef void fill_patch_run(const floating* x, const NHWCShape* s, Py_ssize_t n, Py_ssize_t oh,
                         Py_ssize_t ow, Py_ssize_t tap, Py_ssize_t c, Py_ssize_t count,
                         floating* dst) noexcept nogil:
    """dst[0 .. count - 1] := `count` elements of output pixel (n, oh, ow)'s patch row from
    channel c of tap `tap` on (KH * KW runs of C channels; zeros where a tap falls in the
    padding). Runs are copied inline: a stem's are 3 channels, and a libc call per run
    cost more than its data."""
    cdef Py_ssize_t kh = tap // s.KW, kw = tap - (tap // s.KW) * s.KW, run, ih, iw
    cdef Py_ssize_t ih0 = oh * s.sh - s.ph, iw0 = ow * s.sw - s.pw
    while count > 0:
        run = s.C - c if s.C - c < count else count
        ih = ih0 + kh * s.dh
        iw = iw0 + kw * s.dw
        if 0 <= ih < s.H and 0 <= iw < s.W:
            fc_copy_short(dst, x + ((n * s.H + ih) * s.W + iw) * s.C + c,
                          run * sizeof(floating))
        else:
            fc_zero_short(dst, run * sizeof(floating))
        dst += run
        count -= run
        c = 0
        kw += 1
        if kw == s.KW:
            kw = 0
            kh += 1


cdef inline bint reads_just(int shape, Py_ssize_t width, Py_ssize_t NR,
                            Py_ssize_t VEC) noexcept nogil:
    """Whether register tile `shape` (NR columns) reads just the first `width` columns of a
    panel: all of them, or a tail of whole vectors (the mixed tile's tail is one vector)."""
    return width == NR or (width % VEC == 0 and (shape != TILE_MIXED or width == VEC))


cdef void weight_grad_block_in_place(const floating* x, const floating* g,
                                     const NHWCShape* s, Py_ssize_t o0, Py_ssize_t rows,
                                     Py_ssize_t k0, Py_ssize_t cols, Py_ssize_t p0,
                                     Py_ssize_t depth, int shape, floating* b, floating* dw,
                                     Py_ssize_t ldw, const Py_ssize_t* pixel_offsets,
                                     const floating** g_rows, bint accumulate) noexcept nogil:
    """One block of `depth` pixels from p0 of weight_grad_block for a 1x1, stride-1,
    unpadded layer, read where it lies (a partial last column panel packed into b: the
    micro-kernel reads NR columns, which past the last pixel's channels would leave x)."""
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t m_panels = (rows + MR - 1) // MR, n_panels = (cols + NR - 1) // NR
    cdef Py_ssize_t VEC = vector_width(<floating*> NULL)
    cdef Py_ssize_t q, i, j, panel, width, m_valid
    cdef const floating* panel_b
    cdef Py_ssize_t b_stride
    for j in range(n_panels):
        width = cols - j * NR if cols - j * NR < NR else NR
        # in place where the tile (or its tail of fewer vectors) reads just these columns
        if reads_just(shape, width, NR, VEC):
            panel_b = x + p0 * s.C + k0 + j * NR
            b_stride = s.C
        else:
            for q in range(depth):
                memcpy(b + q * NR, x + (p0 + q) * s.C + k0 + j * NR, width * sizeof(floating))
                for i in range(width, NR):
                    b[q * NR + i] = 0
            panel_b = b
            b_stride = NR
        for panel in range(m_panels):
            m_valid = rows - panel * MR if rows - panel * MR < MR else MR
            for i in range(m_valid):
                g_rows[i] = g + p0 * s.C_out + o0 + panel * MR + i
            gemm_rows_tile(shape, depth, g_rows, pixel_offsets, panel_b, b_stride,
                           dw + (o0 + panel * MR) * ldw + k0 + j * NR, ldw, m_valid, width,
                           NULL, accumulate)


cdef void weight_grad_block(const floating* x, const floating* g, const NHWCShape* s,
                            Py_ssize_t o0, Py_ssize_t rows, Py_ssize_t k0, Py_ssize_t cols,
                            Py_ssize_t p_start, Py_ssize_t p_end, Py_ssize_t pixel_block,
                            int shape, floating* a, floating* b, floating* row,
                            floating* dw, Py_ssize_t ldw, const Py_ssize_t* pixel_offsets,
                            const floating** g_rows) noexcept nogil:
    """dw[o0 + i, k0 + j] := sum over pixels p_start .. p_end - 1 of g[p, o0 + i] * patch(p)
    [k0 + j] for i < rows, j < cols, in blocks of `pixel_block` pixels (the GEMM's depth):
    each block's operands packed into a (rows rounded up to MR, pixel_block) and b (cols
    rounded up to NR, pixel_block; through `row`, cols elements), each panel PANEL_SKEW past
    the last, then every (column panel, row panel) on the micro-kernel. With `pixel_offsets` (q * C_out for q <
    pixel_block; a 1x1, stride-1, unpadded layer, whose patch row is the pixel's channels)
    nothing is packed but a last partial column panel: A's rows are g's channels read where
    they lie (through the MR pointers `g_rows`), B's rows x's pixels (stride C). Same sums in
    the same order."""
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t m_panels = (rows + MR - 1) // MR, n_panels = (cols + NR - 1) // NR
    cdef Py_ssize_t p0, depth, q, i, j, panel, width, n, oh, ow, a_panel, b_panel
    cdef Py_ssize_t tap0 = k0 // s.C, c0 = k0 - (k0 // s.C) * s.C
    cdef const floating* src
    cdef floating* dst
    p0 = p_start
    while p0 < p_end:
        depth = p_end - p0 if p_end - p0 < pixel_block else pixel_block
        # the panels of A and of B each a line more than depth x MR (NR) apart: a multiple
        # of 4 KiB put the MR values each pixel writes into every panel in one L1 set (the
        # stores were three fifths of the packing's time on a 576-channel layer)
        a_panel = depth * MR + PANEL_SKEW
        b_panel = depth * NR + PANEL_SKEW
        if pixel_offsets != NULL:
            weight_grad_block_in_place(x, g, s, o0, rows, k0, cols, p0, depth, shape, b,
                                       dw, ldw, pixel_offsets, g_rows, p0 > p_start)
            p0 += depth
            continue
        pixel_coordinates(s, p0, &n, &oh, &ow)
        for q in range(depth):
            src = g + (p0 + q) * s.C_out + o0
            for panel in range(m_panels):
                dst = a + panel * a_panel + q * MR
                width = rows - panel * MR if rows - panel * MR < MR else MR
                for i in range(width):
                    dst[i] = src[panel * MR + i]
                for i in range(width, MR):
                    dst[i] = 0
            # the pixel's patch elements k0 .. k0 + cols - 1 once (its geometry worked out
            # once), then dealt out NR at a time
            fill_patch_run(x, s, n, oh, ow, tap0, c0, cols, row)
            next_pixel(s, &n, &oh, &ow)
            for panel in range(n_panels):
                dst = b + panel * b_panel + q * NR
                width = cols - panel * NR if cols - panel * NR < NR else NR
                fc_copy_short(dst, row + panel * NR, width * sizeof(floating))
                if width < NR:
                    fc_zero_short(dst + width, (NR - width) * sizeof(floating))
        for j in range(n_panels):
            for panel in range(m_panels):
                gemm_tile(shape, depth, a + panel * a_panel, 0, b + j * b_panel, NR, NULL,
                          dw + (o0 + panel * MR) * ldw + k0 + j * NR, ldw,
                          rows - panel * MR if rows - panel * MR < MR else MR,
                          cols - j * NR if cols - j * NR < NR else NR, NULL, p0 > p_start)
        p0 += depth


cdef enum:
    # elements between the end of one packed panel of the weight gradient and the next
    PANEL_SKEW = 16


def weight_grad_nhwc(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] g,
                     floating[:, :, ::1] dw, tuple kernel, tuple stride, tuple padding,
                     tuple dilation, int shape, Py_ssize_t block_rows, Py_ssize_t block_cols,
                     Py_ssize_t pixel_block, bint read_in_place, int num_threads):
    """dw[split] (C_out, KH * KW * C, (kh, kw, c) order) := the weight gradient of the
    one-group convolution of x (N, H, W, C) whose output gradient is g (N, OH, OW, C_out),
    summed over the split-th of dw.shape[0] equal parts of the pixels (the caller adds the
    parts). Work items: blocks of `block_rows` output channels x `block_cols` patch columns
    x parts, each a GEMM over its pixels in blocks of `pixel_block` on the micro-kernel
    (register tile `shape`). A 1x1, stride-1, unpadded layer's operands are read where they
    lie when `read_in_place` (the caller's rule: where packing them costs more than it
    saves)."""
    cdef NHWCShape s = make_shape(x.shape, g.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t K = s.KH * s.KW * s.C, C_out = s.C_out, splits = dw.shape[0]
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t pixels = s.N * s.OH * s.OW
    cdef Py_ssize_t row_blocks, col_blocks, item, rb, cb, part, o0, k0, p_start, p_end, row
    cdef floating* a = NULL
    cdef floating* b = NULL
    cdef const floating** g_rows = NULL
    cdef Py_ssize_t* pixel_offsets = NULL
    cdef Py_ssize_t q
    cdef Py_ssize_t b_panels
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    if dw.shape[1] != C_out or dw.shape[2] != K or splits < 1 or block_rows < 1 \
            or block_cols < 1 or pixel_block < 1:
        raise ValueError(f"weight_grad_nhwc: dw must be (parts, {C_out}, {K}) and the blocks "
                         f"positive; got dw {tuple(dw.shape)}, blocks {block_rows}, "
                         f"{block_cols}, {pixel_block}")
    if C_out == 0 or K == 0:
        return
    if pixels == 0:
        dw[:, :, :] = 0
        return
    block_rows = (block_rows + MR - 1) // MR * MR
    block_cols = (block_cols + NR - 1) // NR * NR
    row_blocks = (C_out + block_rows - 1) // block_rows
    col_blocks = (K + block_cols - 1) // block_cols
    # packed panels each PANEL_SKEW past their depth x MR (NR); b's are followed by `row`
    b_panels = block_cols * pixel_block + block_cols // NR * PANEL_SKEW
    # output pixel p's patch row is input pixel p's channels (no padding after either)
    if read_in_place and s.KH == 1 and s.KW == 1 and s.sh == 1 and s.sw == 1 \
            and s.ph == 0 and s.pw == 0 and s.OH == s.H and s.OW == s.W:
        pixel_offsets = <Py_ssize_t*> malloc(pixel_block * sizeof(Py_ssize_t))
        if pixel_offsets == NULL:
            raise MemoryError("fastconv: could not allocate the weight gradient's offsets")
        for q in range(pixel_block):
            pixel_offsets[q] = q * C_out
    with nogil, parallel(num_threads=num_threads):
        a = <floating*> fc_workspace(WS_GRAD_A, (block_rows * pixel_block + block_rows // MR
                                                 * PANEL_SKEW) * sizeof(floating))
        b = <floating*> fc_workspace(WS_GRAD_B, (b_panels + block_cols) * sizeof(floating))
        g_rows = <const floating**> fc_workspace(WS_GRAD_ROWS, MR * sizeof(floating*))
        if a == NULL or b == NULL or g_rows == NULL:
            failed_flag[0] = 1
        for item in prange(row_blocks * col_blocks * splits, schedule='dynamic'):
            if a == NULL or b == NULL or g_rows == NULL:
                continue
            part = item % splits
            rb = (item // splits) % row_blocks
            cb = item // (splits * row_blocks)
            o0 = rb * block_rows
            k0 = cb * block_cols
            p_start = part * pixels // splits
            p_end = (part + 1) * pixels // splits
            if p_start == p_end:
                # an empty part: its sums are zero
                for row in range(o0, o0 + block_rows if o0 + block_rows < C_out else C_out):
                    memset(&dw[part, row, k0], 0, (block_cols if k0 + block_cols < K
                                                   else K - k0) * sizeof(floating))
                continue
            weight_grad_block(&x[0, 0, 0, 0], &g[0, 0, 0, 0], &s, o0,
                              block_rows if o0 + block_rows < C_out else C_out - o0, k0,
                              block_cols if k0 + block_cols < K else K - k0, p_start, p_end,
                              pixel_block, shape, a, b, b + b_panels,
                              &dw[part, 0, 0], K, pixel_offsets, g_rows)
    free(pixel_offsets)
    if failed:
        raise MemoryError("fastconv: could not allocate the channels-last weight-gradient "
                          "buffers")


# Layout changes between channels-first and channels-last: each image's (rows, columns) matrix
# transposed in square tiles, so that a tile's reads and its writes each touch a few cache
# lines (numpy's element-order copy of a transposed view strides through one side).
cdef enum:
    TRANSPOSE_TILE = 16


def transpose_images(const floating[:, :, ::1] src, floating[:, :, ::1] dst, int num_threads):
    """dst[n, j, i] := src[n, i, j]: (N, A, B) -> (N, B, A). With A the channels and B the
    pixels of an image, channels-first to channels-last; the other way round, back."""
    cdef Py_ssize_t N = src.shape[0], A = src.shape[1], B = src.shape[2]
    cdef Py_ssize_t tiles_a = (A + TRANSPOSE_TILE - 1) // TRANSPOSE_TILE
    cdef Py_ssize_t tiles_b = (B + TRANSPOSE_TILE - 1) // TRANSPOSE_TILE
    cdef Py_ssize_t item, n, i0, j0, i1, j1
    if dst.shape[0] != N or dst.shape[1] != B or dst.shape[2] != A:
        raise ValueError(f"transpose_images: dst must be ({N}, {B}, {A}); got "
                         f"{tuple(dst.shape)[:3]}")
    if N * A * B == 0:
        return
    for item in prange(N * tiles_a * tiles_b, nogil=True, num_threads=num_threads,
                       schedule='static'):
        n = item // (tiles_a * tiles_b)
        i0 = (item // tiles_b) % tiles_a * TRANSPOSE_TILE
        j0 = item % tiles_b * TRANSPOSE_TILE
        i1 = i0 + TRANSPOSE_TILE if i0 + TRANSPOSE_TILE < A else A
        j1 = j0 + TRANSPOSE_TILE if j0 + TRANSPOSE_TILE < B else B
        transpose_block(&src[n, i0, j0], B, &dst[n, j0, i0], A, i1 - i0, j1 - j0)



# The B panels of a channels-last GEMM's weights, from the rows that hold each output
# column's K weights contiguous (a channels-last weight's own memory): a transpose, blocked
# so that a block's source rows and its part of the panel stay in L1 (numpy's element-order
# copy of the transposed view, then a second copy into panels, ran at 1.5 GB/s on Zen 4: 6 ms
# for a 512 x 512 x 3 x 3 weight, repacked on every training step).
cdef enum:
    PANEL_BLOCK_K = 64


cdef Py_ssize_t panel_count(str kernel, Py_ssize_t columns, Py_ssize_t K, Py_ssize_t out_rows,
                            Py_ssize_t NR, str operand) except -1:
    """The B panels of NR columns that `columns` need, checked against out's rows (K each)."""
    if NR < 1:
        raise ValueError(f"{kernel}: out must have at least one column; got {NR}")
    cdef Py_ssize_t panels = (columns + NR - 1) // NR
    if out_rows != panels * K:
        raise ValueError(f"{kernel}: out must be ({panels * K}, {NR}) for {operand}; got "
                         f"({out_rows}, {NR})")
    return panels


def pack_panels(const floating[:, ::1] rows, floating[:, ::1] out, int num_threads):
    """out[p * K + k, c] := rows[p * NR + c, k], zero past the N rows: rows (N, K), out
    (ceil(N / NR) * K, NR), the micro-kernel's B panels of the K x N matrix rows^T."""
    cdef Py_ssize_t N = rows.shape[0], K = rows.shape[1], NR = out.shape[1]
    cdef Py_ssize_t panels, blocks, item, p, k0, k1, width
    panels = panel_count("pack_panels", N, K, out.shape[0], NR, f"rows ({N}, {K})")
    if panels * K == 0:
        return
    blocks = (K + PANEL_BLOCK_K - 1) // PANEL_BLOCK_K
    for item in prange(panels * blocks, nogil=True, num_threads=num_threads,
                       schedule='static'):
        p = item // blocks
        k0 = item % blocks * PANEL_BLOCK_K
        k1 = k0 + PANEL_BLOCK_K if k0 + PANEL_BLOCK_K < K else K
        width = N - p * NR if N - p * NR < NR else NR
        # rows k0 .. k1 of panel p: B = rows^T, B's columns contiguous
        pack_b_panels(&rows[p * NR, k0], 1, K, k1 - k0, width, NR, &out[p * K + k0, 0])


# The B panels of an input gradient's convolutions (the stride-1 adjoint, or one stride
# phase's): W[(t, o), c] = w[o, c, taps[t]], the taps a tap list names (reversed for the
# adjoint, every stride-th for a phase), read from w in whatever strides it has. One work
# item is one output channel's weights of one panel of input channels: a contiguous block of
# a channels-first weight (NR * KH * KW values) scattered into T rows of NR (numpy's copy of
# the transposed, tap-sliced view ran at 1.5 GB/s: 13 ms of a 512 -> 512 stride-2 layer's
# input gradient on Zen 4, repacked on every training step).

def pack_tap_panels(const floating[:, :, :, :] w, const Py_ssize_t[:, ::1] taps,
                    floating[:, ::1] out, int num_threads):
    """out[p * K + t * C_out + o, c] := w[o, p * NR + c, taps[t, 0], taps[t, 1]], zero past
    C_in: w (C_out, C_in, KH, KW) in any strides, taps (T, 2), out (ceil(C_in / NR) * K, NR)
    with K = T * C_out, the micro-kernel's B panels of the (K, C_in) matrix W."""
    cdef Py_ssize_t C_out = w.shape[0], C_in = w.shape[1], KH = w.shape[2], KW = w.shape[3]
    cdef Py_ssize_t T = taps.shape[0], NR = out.shape[1], K = T * C_out
    cdef Py_ssize_t panels, item, p, o, t, c, row, width, th, tw
    cdef Py_ssize_t item_size = sizeof(floating)
    cdef bint channels_inner, filters_dense
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    cdef floating* block
    if taps.shape[1] != 2:
        raise ValueError(f"pack_tap_panels: taps must be (T, 2); got {tuple(taps.shape)[:2]}")
    for t in range(T):
        if not (0 <= taps[t, 0] < KH and 0 <= taps[t, 1] < KW):
            raise ValueError(f"pack_tap_panels: tap {t} ({taps[t, 0]}, {taps[t, 1]}) lies "
                             f"outside the {KH} x {KW} kernel")
    panels = panel_count("pack_tap_panels", C_in, K, out.shape[0], NR,
                         f"{T} taps of a ({C_out}, {C_in}) weight")
    if panels * K == 0:
        return
    # a channels-last weight: each tap's input channels are a contiguous run, copied as
    # they lie; a channels-first one: a panel's filters of one output channel are one
    # (width, KH * KW) block, transposed through vector registers into (KH * KW, NR) rows
    channels_inner = w.strides[1] == item_size
    filters_dense = w.strides[3] == item_size and w.strides[2] == KW * item_size \
        and w.strides[1] == KH * KW * item_size
    with nogil, parallel(num_threads=num_threads):
        block = <floating*> malloc(KH * KW * NR * sizeof(floating)) if filters_dense \
            and not channels_inner else NULL
        if filters_dense and not channels_inner and block == NULL:
            failed_flag[0] = 1
        for item in prange(panels * C_out, schedule='static'):
            p = item // C_out
            o = item - p * C_out
            width = C_in - p * NR if C_in - p * NR < NR else NR
            if block != NULL:
                transpose_block(&w[o, p * NR, 0, 0], KH * KW, block, NR, width, KH * KW)
            for t in range(T):
                row = p * K + t * C_out + o
                th = taps[t, 0]
                tw = taps[t, 1]
                if channels_inner:
                    memcpy(&out[row, 0], &w[o, p * NR, th, tw], width * sizeof(floating))
                elif block != NULL:
                    memcpy(&out[row, 0], &block[(th * KW + tw) * NR],
                           width * sizeof(floating))
                elif not filters_dense:
                    for c in range(width):
                        out[row, c] = w[o, p * NR + c, th, tw]
                if width < NR:
                    memset(&out[row, width], 0, (NR - width) * sizeof(floating))
        free(block)
    if failed:
        raise MemoryError("pack_tap_panels: out of memory for a thread's block")


# The weight gradient of a layer with few input channels (a stem's 3): its patch rows are
# runs of a few channels, which cost more to pack than their products, so it runs transposed,
# dW^T (KH * KW * C, C_out) = patches^T G, read where the operands lie: the output gradient's
# channels of a pixel in the micro-kernel's vector lanes, the patch elements on its broadcast
# side, element e of every pixel at a fixed offset (its tap's) from the pixel's first tap.
# The input is zero-padded first (a copy of it), so that every tap lies inside.

def pad_nhwc(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] padded, Py_ssize_t top,
             Py_ssize_t left, int num_threads):
    """padded (N, HP, WP, C) := x (N, H, W, C) at row `top`, column `left`, zeros around."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t HP = padded.shape[1], WP = padded.shape[2], row, n, h
    if padded.shape[0] != N or padded.shape[3] != C or top < 0 or left < 0 \
            or top + H > HP or left + W > WP:
        raise ValueError(f"pad_nhwc: padded {tuple(padded.shape)[:4]} cannot hold x "
                         f"{tuple(x.shape)[:4]} at ({top}, {left})")
    if padded.size == 0:
        return
    for row in prange(N * HP, nogil=True, num_threads=num_threads, schedule='static'):
        n = row // HP
        h = row - n * HP - top
        if 0 <= h < H and W > 0:
            fc_pad_rows(&padded[n, h + top, 0, 0], 0, &x[n, h, 0, 0], 0,
                        left * C * sizeof(floating), W * C * sizeof(floating),
                        WP * C * sizeof(floating), 1)
        else:
            fc_zero_short(&padded[n, row - n * HP, 0, 0], WP * C * sizeof(floating))


cdef void weight_grad_taps_part(const floating* const* tap_rows, const floating* g,
                                const NHWCShape* s, Py_ssize_t p_start, Py_ssize_t p_end,
                                Py_ssize_t pixel_block, int shape, Py_ssize_t* offsets,
                                floating* b, floating* dwt) noexcept nogil:
    """dwt (K, C_out) := sum over pixels p_start .. p_end - 1 of patch(p)[e] * g[p, :], the
    patch element e of pixel p at tap_rows[e][offsets[q]], in blocks of `pixel_block` pixels
    (a last partial panel of output channels packed into b where the micro-kernel would read
    past them)."""
    cdef Py_ssize_t K = s.KH * s.KW * s.C, C_out = s.C_out
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t VEC = vector_width(<floating*> NULL)
    cdef Py_ssize_t m_panels = (K + MR - 1) // MR, n_panels = (C_out + NR - 1) // NR
    cdef Py_ssize_t p0, depth, q, j, panel, width, n, oh, ow, b_stride
    cdef const floating* panel_b
    pixel_coordinates(s, p_start, &n, &oh, &ow)
    p0 = p_start
    while p0 < p_end:
        depth = p_end - p0 if p_end - p0 < pixel_block else pixel_block
        for q in range(depth):
            offsets[q] = ((n * s.H + oh * s.sh) * s.W + ow * s.sw) * s.C
            next_pixel(s, &n, &oh, &ow)
        for j in range(n_panels):
            width = C_out - j * NR if C_out - j * NR < NR else NR
            # in place where the tile (or its tail of fewer vectors) reads just these columns
            # (a 32-channel stem's, on a 48-wide tile, were copied: a third of its time)
            if reads_just(shape, width, NR, VEC):
                panel_b = g + p0 * C_out + j * NR
                b_stride = C_out
            else:
                for q in range(depth):
                    fc_copy_short(b + q * NR, g + (p0 + q) * C_out + j * NR,
                                  width * sizeof(floating))
                    fc_zero_short(b + q * NR + width, (NR - width) * sizeof(floating))
                panel_b = b
                b_stride = NR
            for panel in range(m_panels):
                gemm_rows_tile(shape, depth, tap_rows + panel * MR, offsets, panel_b, b_stride,
                               dwt + panel * MR * C_out + j * NR, C_out,
                               K - panel * MR if K - panel * MR < MR else MR, width, NULL,
                               p0 > p_start)
        p0 += depth


def weight_grad_nhwc_taps(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] g,
                          floating[:, :, ::1] dwt, tuple kernel, tuple stride, tuple dilation,
                          int shape, Py_ssize_t pixel_block, int num_threads):
    """dwt[part] (KH * KW * C, C_out), rows in (kh, kw, c) order := the transposed weight
    gradient of the one-group convolution of x (N, H, W, C), its padding already in it (every
    tap inside: pad_nhwc), whose output gradient is g (N, OH, OW, C_out), summed over the
    part-th of dwt.shape[0] equal parts of the pixels (the caller adds the parts). Both read
    where they lie, on the micro-kernel (register tile `shape`)."""
    cdef NHWCShape s = make_shape(x.shape, g.shape, kernel, stride, (0, 0), dilation)
    cdef Py_ssize_t K = s.KH * s.KW * s.C, parts = dwt.shape[0], pixels = s.N * s.OH * s.OW
    cdef Py_ssize_t NR = tile_nr(shape, <floating*> NULL), part, p_start, p_end, e, kh, kw, c
    cdef const floating** tap_rows = NULL
    cdef Py_ssize_t* offsets = NULL
    cdef floating* b = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    if dwt.shape[1] != K or dwt.shape[2] != s.C_out or parts < 1 or pixel_block < 1 \
            or g.shape[0] != s.N:
        raise ValueError(f"weight_grad_nhwc_taps: dwt must be (parts, {K}, {s.C_out}), g hold "
                         f"{s.N} images and the block positive; got dwt {tuple(dwt.shape)[:3]}, "
                         f"g {tuple(g.shape)[:4]}, block {pixel_block}")
    if pixels and ((s.OH - 1) * s.sh + (s.KH - 1) * s.dh >= s.H
                   or (s.OW - 1) * s.sw + (s.KW - 1) * s.dw >= s.W):
        raise ValueError(f"weight_grad_nhwc_taps: taps of the output {s.OH}x{s.OW} fall "
                         f"outside the (padded) input {s.H}x{s.W}")
    if K == 0 or s.C_out == 0:
        return
    if pixels == 0:
        dwt[:, :, :] = 0
        return
    tap_rows = <const floating**> malloc(K * sizeof(floating*))
    if tap_rows == NULL:
        raise MemoryError("fastconv: could not allocate the weight gradient's tap rows")
    for kh in range(s.KH):
        for kw in range(s.KW):
            for c in range(s.C):
                e = (kh * s.KW + kw) * s.C + c
                tap_rows[e] = &x[0, 0, 0, 0] + (kh * s.dh * s.W + kw * s.dw) * s.C + c
    with nogil, parallel(num_threads=num_threads):
        offsets = <Py_ssize_t*> fc_workspace(WS_PIXEL_OFFSETS, pixel_block * sizeof(Py_ssize_t))
        b = <floating*> fc_workspace(WS_GRAD_B, pixel_block * NR * sizeof(floating))
        if offsets == NULL or b == NULL:
            failed_flag[0] = 1
        for part in prange(parts, schedule='dynamic'):
            if offsets == NULL or b == NULL:
                continue
            p_start = part * pixels // parts
            p_end = (part + 1) * pixels // parts
            if p_start == p_end:
                memset(&dwt[part, 0, 0], 0, K * s.C_out * sizeof(floating))
                continue
            weight_grad_taps_part(tap_rows, &g[0, 0, 0, 0], &s, p_start, p_end, pixel_block,
                                  shape, offsets, b, &dwt[part, 0, 0])
    free(tap_rows)
    if failed:
        raise MemoryError("fastconv: could not allocate the weight gradient's buffers")


cdef void depthwise_weight_grad_rows(const floating* x, const floating* g, const NHWCShape* s,
                                     Py_ssize_t r0, Py_ssize_t r1, floating* acc,
                                     const floating** src, floating** acc_rows) noexcept nogil:
    """acc[tap, c] += sum over output rows r0 .. r1 - 1 (row = n * OH + oh) of g[pixel, c] *
    x[the tap's input pixel, c], the channels side by side; the row's interior as one run."""
    cdef Py_ssize_t r, n, oh, ow, taps, lo, hi, count
    interior_columns(s, &lo, &hi)
    for r in range(r0, r1):
        n = r // s.OH
        oh = r - n * s.OH
        ow = 0
        while ow < s.OW:
            taps = output_pixel_taps(x, acc, s, n, oh, ow, src, acc_rows)
            count = hi - lo if ow == lo and hi > lo else 1
            accumulate_run(src, s.sw * s.C, count, acc_rows, taps, g + (r * s.OW + ow) * s.C,
                           s.C)
            ow += count


def depthwise_weight_grad_nhwc(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] g,
                               floating[:, :, ::1] dw, tuple kernel, tuple stride,
                               tuple padding, tuple dilation, int num_threads):
    """dw[part] (KH * KW, C) := the depthwise convolution's weight gradient (x (N, H, W, C),
    output gradient g (N, OH, OW, C)) summed over the part-th of dw.shape[0] equal parts of
    the output rows (the caller adds the parts)."""
    cdef NHWCShape s = make_shape(x.shape, g.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t parts = dw.shape[0], rows = s.N * s.OH, part
    if dw.shape[1] != s.KH * s.KW or dw.shape[2] != s.C or g.shape[3] != s.C or parts < 1:
        raise ValueError(f"depthwise_weight_grad_nhwc: dw must be (parts, {s.KH * s.KW}, "
                         f"{s.C}) and g's channels {s.C}; got dw {tuple(dw.shape)}, g "
                         f"{tuple(g.shape)}")
    cdef const floating** src = NULL
    cdef floating** acc_rows = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    dw[:, :, :] = 0
    if rows == 0 or s.OW == 0 or s.C == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        src = <const floating**> malloc(s.KH * s.KW * sizeof(floating*))
        acc_rows = <floating**> malloc(s.KH * s.KW * sizeof(floating*))
        if src == NULL or acc_rows == NULL:
            failed_flag[0] = 1
        for part in prange(parts, schedule='dynamic'):
            if src != NULL and acc_rows != NULL:
                depthwise_weight_grad_rows(&x[0, 0, 0, 0], &g[0, 0, 0, 0], &s,
                                           part * rows // parts, (part + 1) * rows // parts,
                                           &dw[part, 0, 0], src, acc_rows)
        free(src)
        free(acc_rows)
    if failed:
        raise MemoryError("fastconv: could not allocate the depthwise kernel's tap lists")


cdef void depthwise_input_grad_rows(const floating* g, const floating* w, floating* dx,
                                    const NHWCShape* s, Py_ssize_t r0, Py_ssize_t r1,
                                    const floating** src, floating** w_rows) noexcept nogil:
    """Input rows r0 .. r1 - 1 (row = n * H + ih) of a depthwise convolution's input
    gradient, each pixel written once: the sum over the taps that read it of w[tap, c] *
    g[the output pixel that tap serves, c], over the contiguous channels c."""
    cdef Py_ssize_t r, n, ih, iw, kh, kw, th, tw, taps
    for r in range(r0, r1):
        n = r // s.H
        ih = r - n * s.H
        for iw in range(s.W):
            taps = 0
            for kh in range(s.KH):
                th = ih + s.ph - kh * s.dh
                if th < 0 or th % s.sh != 0 or th // s.sh >= s.OH:
                    continue
                for kw in range(s.KW):
                    tw = iw + s.pw - kw * s.dw
                    if tw < 0 or tw % s.sw != 0 or tw // s.sw >= s.OW:
                        continue
                    src[taps] = g + ((n * s.OH + th // s.sh) * s.OW + tw // s.sw) * s.C
                    w_rows[taps] = <floating*> w + (kh * s.KW + kw) * s.C
                    taps += 1
            gather_run(src, 0, 1, w_rows, taps, NULL, dx + (r * s.W + iw) * s.C, s.C)


def depthwise_input_grad_nhwc(const floating[:, :, :, ::1] g, const floating[:, ::1] w,
                              floating[:, :, :, ::1] dx, tuple kernel, tuple stride,
                              tuple padding, tuple dilation, int num_threads):
    """dx (N, H, W, C) := the input gradient of the depthwise convolution by w (KH * KW, C)
    whose output gradient is g (N, OH, OW, C), any stride: a gather, each input pixel
    written once."""
    cdef NHWCShape s = make_shape(dx.shape, g.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t rows = s.N * s.H
    cdef Py_ssize_t pieces = num_threads * 8 if rows > num_threads * 8 else rows
    cdef Py_ssize_t piece
    if w.shape[0] != s.KH * s.KW or w.shape[1] != s.C or g.shape[3] != s.C:
        raise ValueError(f"depthwise_input_grad_nhwc: w must be ({s.KH * s.KW}, {s.C}) and "
                         f"g's channels {s.C}; got w {tuple(w.shape)}, g {tuple(g.shape)}")
    cdef const floating** src = NULL
    cdef floating** w_rows = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    if rows == 0 or s.W == 0 or s.C == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        src = <const floating**> malloc(s.KH * s.KW * sizeof(floating*))
        w_rows = <floating**> malloc(s.KH * s.KW * sizeof(floating*))
        if src == NULL or w_rows == NULL:
            failed_flag[0] = 1
        for piece in prange(pieces, schedule='dynamic'):
            if src != NULL and w_rows != NULL:
                depthwise_input_grad_rows(&g[0, 0, 0, 0], &w[0, 0], &dx[0, 0, 0, 0], &s,
                                          piece * rows // pieces, (piece + 1) * rows // pieces,
                                          src, w_rows)
        free(src)
        free(w_rows)
    if failed:
        raise MemoryError("fastconv: could not allocate the depthwise kernel's tap lists")
