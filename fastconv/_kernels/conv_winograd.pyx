# cython: language_level=3
"""Winograd F(4x4, 3x3) convolution (CONV_WINOGRAD): 3x3 kernels, stride 1, dilation 1, 2-d;
and 3-d (KD, 3, 3) kernels as KD 2-d ones over the input's depth slices.

Each 4x4 tile of outputs needs 36 products per (input, output) channel pair instead of 144
multiply-adds (winograd.h has the transforms). Per group, the weights are transformed straight
into the A panels of fastconv's micro-kernel (packed_gemm.pxd; the Python layer keeps them
between calls with the same weights); then the
tiles of the whole batch are worked in super-blocks of `tile_panels` x NR tiles, in three
steps, which the threads either share block by block or (`per_thread_blocks`, for many tiles
of few channels) run end to end on whole blocks of their own:

1. input transform: each (depth tap, channel, vector of tiles) is gathered and transformed
   into the B panels V[e] (e = 0..35, the transformed elements);
2. 36 GEMMs on the micro-kernel: M[e] (K_g x tiles) = U[e] (K_g x KD C_g) . V[e] (KD C_g x
   tiles);
3. output transform: each (output channel, vector of tiles) of M is transformed back into
   4x4 outputs, bias added, and stored.

A tile transforms its 36 inputs together, so an inf or NaN anywhere in the 6x6 input tile (or
a filter) reaches all 16 outputs, where the direct sum would give finite values to some: the
output step counts non-finite results, and the Python layer recomputes such a call exactly.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memset

from fastconv._kernels.conv_shape cimport ConvShape, make_shape, shape5
from fastconv._kernels.kernel_ids cimport CONV_WINOGRAD, WEIGHT_GRAD_WINOGRAD
from fastconv._kernels.packed_gemm cimport (TILE_NARROW, TILE_WIDE, K_BLOCK_BYTES, tile_mr,
                                            tile_nr, multiply_tile, choose_tile, gemm_tile,
                                            transpose_block)
from fastconv._kernels.blas cimport gemm, hold_blas_single_threaded, release_blas
from fastconv._core cimport blas_local_threads
from fastconv._kernels.workspace cimport fc_workspace, fc_workspace_trim

cdef extern from "openmp.h":
    void fc_team_barrier() noexcept nogil

cdef extern from "winograd.h":
    int FC_WINO_LANES_f32
    int FC_WINO_LANES_f64
    void fc_wino_weight_f32(const float* w, Py_ssize_t filter_stride, Py_ssize_t m_valid,
                            int reversed, float* u, Py_ssize_t e_stride) noexcept nogil
    void fc_wino_weight_f64(const double* w, Py_ssize_t filter_stride, Py_ssize_t m_valid,
                            int reversed, double* u, Py_ssize_t e_stride) noexcept nogil
    void fc_wino_input_f32(const float* x, const Py_ssize_t* plane_offset,
                           const Py_ssize_t* h0, const Py_ssize_t* w0, Py_ssize_t n_lanes,
                           Py_ssize_t H, Py_ssize_t W, Py_ssize_t rs, Py_ssize_t ps, float* v,
                           Py_ssize_t e_stride) noexcept nogil
    void fc_wino_input_f64(const double* x, const Py_ssize_t* plane_offset,
                           const Py_ssize_t* h0, const Py_ssize_t* w0, Py_ssize_t n_lanes,
                           Py_ssize_t H, Py_ssize_t W, Py_ssize_t rs, Py_ssize_t ps, double* v,
                           Py_ssize_t e_stride) noexcept nogil
    int fc_wino_output_f32(const float* m, Py_ssize_t e_stride, float bias, float* out,
                           const Py_ssize_t* plane_offset, const Py_ssize_t* h0,
                           const Py_ssize_t* w0, Py_ssize_t n_lanes, Py_ssize_t OH,
                           Py_ssize_t OW, Py_ssize_t rs, Py_ssize_t ps) noexcept nogil
    int fc_wino_output_f64(const double* m, Py_ssize_t e_stride, double bias, double* out,
                           const Py_ssize_t* plane_offset, const Py_ssize_t* h0,
                           const Py_ssize_t* w0, Py_ssize_t n_lanes, Py_ssize_t OH,
                           Py_ssize_t OW, Py_ssize_t rs, Py_ssize_t ps) noexcept nogil
    void fc_wino_input_channels_f32(const float* x, Py_ssize_t cb,
                                    const Py_ssize_t* plane_offset, const Py_ssize_t* h0,
                                    const Py_ssize_t* w0, Py_ssize_t n_lanes, Py_ssize_t H,
                                    Py_ssize_t W, Py_ssize_t rs, Py_ssize_t ps, float* v,
                                    Py_ssize_t c_stride, Py_ssize_t e_stride) noexcept nogil
    void fc_wino_input_channels_f64(const double* x, Py_ssize_t cb,
                                    const Py_ssize_t* plane_offset, const Py_ssize_t* h0,
                                    const Py_ssize_t* w0, Py_ssize_t n_lanes, Py_ssize_t H,
                                    Py_ssize_t W, Py_ssize_t rs, Py_ssize_t ps, double* v,
                                    Py_ssize_t c_stride, Py_ssize_t e_stride) noexcept nogil
    int fc_wino_output_channels_f32(const float* m, Py_ssize_t k_stride, Py_ssize_t e_stride,
                                    Py_ssize_t kb, const float* bias, float* out,
                                    const Py_ssize_t* plane_offset, const Py_ssize_t* h0,
                                    const Py_ssize_t* w0, Py_ssize_t n_lanes, Py_ssize_t OH,
                                    Py_ssize_t OW, Py_ssize_t rs, Py_ssize_t ps) noexcept nogil
    int fc_wino_output_channels_f64(const double* m, Py_ssize_t k_stride, Py_ssize_t e_stride,
                                    Py_ssize_t kb, const double* bias, double* out,
                                    const Py_ssize_t* plane_offset, const Py_ssize_t* h0,
                                    const Py_ssize_t* w0, Py_ssize_t n_lanes, Py_ssize_t OH,
                                    Py_ssize_t OW, Py_ssize_t rs, Py_ssize_t ps) noexcept nogil
    void fc_wino1d_input_f32(const float* row, const Py_ssize_t* image, const Py_ssize_t* start,
                             Py_ssize_t step, Py_ssize_t n_lanes, Py_ssize_t L, Py_ssize_t ps,
                             float* v, Py_ssize_t e_stride) noexcept nogil
    void fc_wino1d_input_f64(const double* row, const Py_ssize_t* image,
                             const Py_ssize_t* start, Py_ssize_t step, Py_ssize_t n_lanes,
                             Py_ssize_t L, Py_ssize_t ps, double* v,
                             Py_ssize_t e_stride) noexcept nogil
    int fc_wino1d_output_f32(const float* m, Py_ssize_t e_stride, float bias, float* out,
                             const Py_ssize_t* image, const Py_ssize_t* first, Py_ssize_t step,
                             Py_ssize_t n_lanes, Py_ssize_t OL, Py_ssize_t ps) noexcept nogil
    int fc_wino1d_output_f64(const double* m, Py_ssize_t e_stride, double bias, double* out,
                             const Py_ssize_t* image, const Py_ssize_t* first, Py_ssize_t step,
                             Py_ssize_t n_lanes, Py_ssize_t OL, Py_ssize_t ps) noexcept nogil

    Py_ssize_t fc_wino2_plane_scratch_f32(Py_ssize_t tiles_h, Py_ssize_t tiles_w) noexcept nogil
    Py_ssize_t fc_wino2_plane_scratch_f64(Py_ssize_t tiles_h, Py_ssize_t tiles_w) noexcept nogil
    void fc_wino2_input_plane_f32(const float* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_h,
                                  Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                  float* v, Py_ssize_t run, float* scratch) noexcept nogil
    void fc_wino2_input_plane_f64(const double* x, Py_ssize_t H, Py_ssize_t W,
                                  Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t tiles_h,
                                  Py_ssize_t tiles_w, double* v, Py_ssize_t run,
                                  double* scratch) noexcept nogil
    void fc_wino2_gradient_plane_f32(const float* g, Py_ssize_t OH, Py_ssize_t OW,
                                     Py_ssize_t tiles_h, Py_ssize_t tiles_w, float* v,
                                     Py_ssize_t run, float* scratch) noexcept nogil
    void fc_wino2_gradient_plane_f64(const double* g, Py_ssize_t OH, Py_ssize_t OW,
                                     Py_ssize_t tiles_h, Py_ssize_t tiles_w, double* v,
                                     Py_ssize_t run, double* scratch) noexcept nogil
    void fc_wino2_input_cl_f32(const float* x, Py_ssize_t rs, Py_ssize_t ld, Py_ssize_t tiles_h,
                               Py_ssize_t tiles_w, Py_ssize_t channels, float* out,
                               Py_ssize_t es) noexcept nogil
    void fc_wino2_input_cl_f64(const double* x, Py_ssize_t rs, Py_ssize_t ld,
                               Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t channels,
                               double* out, Py_ssize_t es) noexcept nogil
    void fc_wino2_gradient_cl_f32(const float* g, Py_ssize_t rs, Py_ssize_t ld,
                                  Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t channels,
                                  float* out, Py_ssize_t es) noexcept nogil
    void fc_wino2_gradient_cl_f64(const double* g, Py_ssize_t rs, Py_ssize_t ld,
                                  Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t channels,
                                  double* out, Py_ssize_t es) noexcept nogil
    void fc_wino2_filter_grad_f32(const float* m, Py_ssize_t e_stride, Py_ssize_t count,
                                  float* dw, Py_ssize_t filter_stride) noexcept nogil
    void fc_wino2_filter_grad_f64(const double* m, Py_ssize_t e_stride, Py_ssize_t count,
                                  double* dw, Py_ssize_t filter_stride) noexcept nogil

# the weight gradient's transformed elements per tile (F(2x2, 3x3): 4x4)
cdef enum:
    ELEMENTS_F23 = 16
GRADIENT_ELEMENTS = ELEMENTS_F23
# Slots of the per-thread workspace (workspace.h).
cdef enum:
    WS_INPUT, WS_PRODUCTS, WS_TILES, WS_GRADIENT_PLANE, WS_GRADIENT_BLOCK, WS_FILTER_BLOCK

# A status of conv_forward: some output is inf or NaN (see the module's docstring).
cdef enum:
    STATUS_NONFINITE = 2
NONFINITE = STATUS_NONFINITE


cdef inline Py_ssize_t transform_chunk(Py_ssize_t items, int num_threads) noexcept nogil:
    """Items per grab of the transforms' dynamic schedule: 16 grabs per thread, so a thread
    that runs slower (a shared machine's busy core) takes fewer of them instead of holding
    the whole team at the region's end, as a static split did."""
    cdef Py_ssize_t chunk = items // (16 * num_threads)
    return chunk if chunk > 0 else 1


cdef inline Py_ssize_t lanes(floating* dummy) noexcept nogil:
    """Tiles transformed together: one vector register's elements."""
    if floating is float:
        return FC_WINO_LANES_f32
    return FC_WINO_LANES_f64


# Channels transformed per work item of the 2-d weight transform: their 36 elements are
# written as runs of TRANSFORM_BLOCK x MR values, one after the other. Item by item, each
# item's 36 writes of MR values went to 36 lines e_stride apart, a multiple of 4 KiB, all in
# one L1 set, each evicted before the next item wrote its other half (Zen 4, 2 threads,
# 256 -> 256 channels: 0.85 ms, 11 GB/s).
cdef enum:
    TRANSFORM_BLOCK = 8
    TRANSFORM_MAX_MR = 16

# transform_block's stack buffer holds TRANSFORM_MAX_MR rows of a panel: a wider tile built
# for some other SIMD level must not load (it would write past the buffer)
if tile_mr(TILE_WIDE) > TRANSFORM_MAX_MR:
    raise ImportError(f"conv_winograd: the wide tile's {tile_mr(TILE_WIDE)} rows exceed "
                      f"the weight transform's buffer of {TRANSFORM_MAX_MR}")


cdef void transform_group(const floating* w, Py_ssize_t Kg, Py_ssize_t Cg, Py_ssize_t KD,
                          Py_ssize_t g, bint adjoint, bint one_d, floating* u,
                          int num_threads) noexcept nogil:
    """u[e][panel][kd * C_g + c][m] = (G f(panel * MR + m, c, kd) G^T)[e], zero past K_g:
    one group's transformed filters in the A panels of the micro-kernel's wide tile, f(k, c,
    kd) the 3x3 filter at depth tap kd from input channel c to output channel k of group g:
    w[g * K_g + k, c, kd] (w is (groups * K_g, C_g, KD, 3, 3)); if `adjoint`, that of the
    input gradient of the convolution by w (groups * C_g, K_g, KD, 3, 3), its filter
    w[g * C_g + c, k, KD - 1 - kd] turned by 180 degrees (so the reversed, transposed weights
    are never written out)."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE)
    cdef Py_ssize_t m_panels = (Kg + MR - 1) // MR, depth = KD * Cg
    cdef Py_ssize_t blocks = (depth + TRANSFORM_BLOCK - 1) // TRANSFORM_BLOCK
    cdef Py_ssize_t item
    if one_d:
        transform_group_1d(w, Kg, Cg, g, adjoint, u)
        return
    for item in prange(m_panels * blocks, num_threads=num_threads, schedule='static'):
        transform_block(w, Kg, Cg, KD, g, adjoint, item // blocks,
                        (item % blocks) * TRANSFORM_BLOCK, u)


cdef void transform_block(const floating* w, Py_ssize_t Kg, Py_ssize_t Cg, Py_ssize_t KD,
                          Py_ssize_t g, bint adjoint, Py_ssize_t panel, Py_ssize_t c0,
                          floating* u) noexcept nogil:
    """transform_group's work item: panel `panel`'s filters for depth channels c0 .. c0 +
    TRANSFORM_BLOCK - 1 (fewer at the end), through a buffer on this thread's stack."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE)
    cdef Py_ssize_t m_panels = (Kg + MR - 1) // MR, depth = KD * Cg
    cdef Py_ssize_t count = depth - c0 if depth - c0 < TRANSFORM_BLOCK else TRANSFORM_BLOCK
    cdef Py_ssize_t e
    cdef floating buffer[36 * TRANSFORM_BLOCK * TRANSFORM_MAX_MR]
    transform_filters(w, Kg, Cg, KD, g, adjoint, panel, c0, count, buffer, count * MR)
    for e in range(36):
        memcpy(u + e * m_panels * depth * MR + (panel * depth + c0) * MR,
               buffer + e * count * MR, count * MR * sizeof(floating))


cdef void transform_filters(const floating* w, Py_ssize_t Kg, Py_ssize_t Cg, Py_ssize_t KD,
                            Py_ssize_t g, bint adjoint, Py_ssize_t panel, Py_ssize_t c0,
                            Py_ssize_t count, floating* buffer,
                            Py_ssize_t e_stride) noexcept nogil:
    """buffer[e * e_stride + (channel - c0) * MR + m] := element e of filter (panel * MR +
    m, channel) transformed, for the depth channels channel = kd * C_g + c of c0 .. c0 +
    count - 1, zero past K_g (w and `adjoint` as transform_group's): each element's run of
    count x MR values is an A panel of the micro-kernel's wide tile over those channels."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE)
    cdef Py_ssize_t m_valid = Kg - panel * MR if Kg - panel * MR < MR else MR
    cdef Py_ssize_t channel, c, kd, first, step
    for channel in range(c0, c0 + count):
        kd = channel // Cg
        c = channel % Cg
        if adjoint:
            # the panel's filters lie side by side in w's row of output channel c, depth
            # reversed
            first = (((g * Cg + c) * Kg + panel * MR) * KD + KD - 1 - kd) * 9
            step = KD * 9
        else:
            first = (((g * Kg + panel * MR) * Cg + c) * KD + kd) * 9
            step = Cg * KD * 9
        if floating is float:
            fc_wino_weight_f32(w + first, step, m_valid, adjoint,
                               buffer + (channel - c0) * MR, e_stride)
        else:
            fc_wino_weight_f64(w + first, step, m_valid, adjoint,
                               buffer + (channel - c0) * MR, e_stride)


cdef void transform_group_1d(const floating* w, Py_ssize_t Kg, Py_ssize_t Cg, Py_ssize_t g,
                             bint adjoint, floating* u) noexcept nogil:
    """transform_group for 1-d F(4, 3): u[e][panel][c][m] = (G f(panel * MR + m, c))[e], e <
    6, f(k, c) the 3 taps w[g * K_g + k, c] (w (groups * K_g, C_g, 1, 1, 3)); if `adjoint`,
    w[g * C_g + c, k] read back to front (w (groups * C_g, K_g, 1, 1, 3))."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE)
    cdef Py_ssize_t m_panels = (Kg + MR - 1) // MR
    cdef Py_ssize_t e_stride = m_panels * Cg * MR     # between transformed elements
    cdef Py_ssize_t panel, c, m, k, first
    cdef floating g0, g1, g2
    cdef floating* dst
    for panel in range(m_panels):
        for c in range(Cg):
            dst = u + (panel * Cg + c) * MR
            for m in range(MR):
                k = panel * MR + m
                if k >= Kg:
                    g0 = g1 = g2 = 0
                elif adjoint:
                    first = ((g * Cg + c) * Kg + k) * 3
                    g0, g1, g2 = w[first + 2], w[first + 1], w[first]
                else:
                    first = ((g * Kg + k) * Cg + c) * 3
                    g0, g1, g2 = w[first], w[first + 1], w[first + 2]
                dst[m] = g0
                dst[e_stride + m] = (g0 + g1 + g2) * <floating> (1.0 / 3.0)
                dst[2 * e_stride + m] = (g1 - g0 - g2) * <floating> (1.0 / 3.0)
                dst[3 * e_stride + m] = (16 * g0 + 8 * g1 + 4 * g2) * <floating> (-1.0 / 15.0)
                dst[4 * e_stride + m] = (g0 - 2 * g1 + 4 * g2) * <floating> (1.0 / 15.0)
                dst[5 * e_stride + m] = g2


cdef void describe_tiles_1d(const ConvShape* s, const Py_ssize_t* xs, const Py_ssize_t* os,
                            Py_ssize_t blocks, Py_ssize_t t0, Py_ssize_t count,
                            Py_ssize_t* in_offset, Py_ssize_t* out_offset, Py_ssize_t* start,
                            Py_ssize_t* first) noexcept nogil:
    """For 1-d tiles t0 .. t0 + count - 1 (row-major over images, blocks of 4 outputs of a
    phase, phases: consecutive tiles are consecutive phases, so with a dilation of a vector
    or more the lanes read consecutive inputs): the offset of their image's row in x and out
    (element strides xs and os over (n, c, d, h, w)),
    the input position of their first tap (`pad` before the output), their first output."""
    cdef Py_ssize_t dilation = s.dilation[2]
    cdef Py_ssize_t q, t, n, b, r
    for q in range(count):
        t = t0 + q
        n = t // (blocks * dilation)
        b = (t // dilation) % blocks
        r = t % dilation
        in_offset[q] = n * xs[0]
        out_offset[q] = n * os[0]
        first[q] = r + 4 * b * dilation
        start[q] = first[q] - s.pad[2]


cdef void describe_tiles(const ConvShape* s, const Py_ssize_t* xs, const Py_ssize_t* os,
                         Py_ssize_t t0, Py_ssize_t count, Py_ssize_t* in_offset,
                         Py_ssize_t* out_offset, Py_ssize_t* d0, Py_ssize_t* h0,
                         Py_ssize_t* w0) noexcept nogil:
    """For tiles t0 .. t0 + count - 1 (row-major over images, output depths, tile rows, tile
    columns): the offset of their image in x and of their output plane in out (element
    strides xs and os over (n, c, d, h, w)), the input
    depth their first depth tap reads (d0, maybe in the padding) and their output origin
    (4 th, 4 tw). The input tile starts `pad` above and left of it."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t TH = (OH + 3) // 4, TW = (OW + 3) // 4
    cdef Py_ssize_t q, t, plane, n, od, r
    for q in range(count):
        t = t0 + q
        plane = t // (TH * TW)       # image n, output depth od
        n = plane // OD
        od = plane % OD
        r = t % (TH * TW)
        in_offset[q] = n * xs[0]
        out_offset[q] = n * os[0] + od * os[2]
        d0[q] = od - s.pad[0]
        h0[q] = (r // TW) * 4
        w0[q] = (r % TW) * 4


cdef int winograd_block(const floating* x, const Py_ssize_t* xs, const floating* u,
                        const floating* bias, floating* out, const Py_ssize_t* os,
                        const ConvShape* s, Py_ssize_t g, Py_ssize_t t0, Py_ssize_t count,
                        Py_ssize_t S, floating* v, floating* m, Py_ssize_t* desc,
                        const floating* w_fused, bint adjoint, int* failed,
                        int num_threads) noexcept nogil:
    """Tiles t0 .. t0 + count - 1 (count <= S) of group g through the three steps, each
    parallel over num_threads threads: u is the group's transformed weights, or with
    `w_fused` (u NULL) the weights themselves, transformed as the GEMM step goes
    (fused_multiply; `adjoint` as transform_group's); v, m and desc the super-block's
    buffers, sized by conv_winograd for S tiles (a multiple of NR). Returns the number of
    output vectors with an inf or NaN; sets failed[0] if a buffer could not be had."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE), NR = tile_nr(TILE_WIDE, <floating*> NULL)
    cdef Py_ssize_t L = lanes(<floating*> NULL)
    cdef Py_ssize_t Cg = s.c_in_g, Kg = s.c_out_g, KD = s.kernel[0]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t depth_taps = KD * Cg        # the GEMM's depth: (depth tap, channel)
    cdef Py_ssize_t m_panels = (Kg + MR - 1) // MR
    cdef bint one_d = s.kernel[1] == 1      # (1, 1, 3) on (1, 1, L) planes: F(4, 3)
    cdef Py_ssize_t E = 6 if one_d else 36   # transformed elements per tile
    cdef Py_ssize_t dilation = s.dilation[2]
    # 1-d: blocks of 4 outputs of each of the dilation's phases
    cdef Py_ssize_t blocks = ((OW + dilation - 1) // dilation + 3) // 4
    # the GEMM step's work split: E elements, times blocks of weight panels when there are
    # threads to spare
    cdef Py_ssize_t m_blocks = (num_threads * 4 + E - 1) // E
    cdef Py_ssize_t groups_of_lanes = (count + L - 1) // L
    # the block's own strides, not the buffers' S: a short block's values stay together
    # V's panels: NR tiles wide, or one vector of them for a block that fits one (a 14x14
    # plane's 16 tiles in 48-wide panels tripled V's bytes, all read for every weight panel)
    cdef Py_ssize_t VR = L if count <= L else NR
    cdef Py_ssize_t SV = (count + VR - 1) // VR * VR      # V's tiles per element: whole panels
    # M's, in whole vectors: each row of products starts on a vector's boundary, as in a
    # full block
    cdef Py_ssize_t SM = (count + L - 1) // L * L
    cdef Py_ssize_t* in_offset = desc
    cdef Py_ssize_t* out_offset = desc + S
    cdef Py_ssize_t* d0 = desc + 2 * S
    cdef Py_ssize_t* h0 = desc + 3 * S
    cdef Py_ssize_t* w0 = desc + 4 * S
    cdef Py_ssize_t* slice_offset = desc + 5 * S       # [kd][tile]: the plane tap kd reads
    cdef Py_ssize_t* top = desc + (5 + KD) * S         # [kd][tile]: its first input row
    cdef Py_ssize_t item, c, q, k, e, block, p0, p1, per_block, kd, depth, channel
    # channels-last: the channels of a pixel are neighbours, so consecutive items of the
    # transforms take consecutive channels of one group of tiles
    cdef bint channels_inner_in = xs[1] < xs[4], channels_inner_out = os[1] < os[4]
    # ... and with channels one element apart, a pixel's channels are one run
    cdef bint pixel_runs_in = xs[1] == 1 and xs[4] > 1 and not one_d
    cdef bint pixel_runs_out = os[1] == 1 and os[4] > 1 and not one_d
    cdef Py_ssize_t in_blocks = (Cg + L - 1) // L
    cdef Py_ssize_t channel_blocks = (Kg + L - 1) // L
    cdef int nonfinite = 0
    if m_blocks > m_panels:
        m_blocks = m_panels
    per_block = (m_panels + m_blocks - 1) // m_blocks
    if Cg == 0:
        # no input channels: every product is an empty sum
        memset(m, 0, E * Kg * SM * sizeof(floating))
    if one_d:
        # h0: each tile's first input position, w0: its first output
        describe_tiles_1d(s, xs, os, blocks, t0, count, in_offset, out_offset, h0, w0)
    else:
        describe_tiles(s, xs, os, t0, count, in_offset, out_offset, d0, h0, w0)
    for kd in range(0 if one_d else KD):
        for q in range(count):
            depth = d0[q] + kd
            if 0 <= depth < D:
                slice_offset[kd * S + q] = in_offset[q] + depth * xs[2]
                top[kd * S + q] = h0[q] - s.pad[1]
            else:
                # a slice of depth padding: every row of the tile is outside the plane
                slice_offset[kd * S + q] = in_offset[q]
                top[kd * S + q] = -H - 6
    # the input tiles start `pad` to the left of their outputs
    for q in range(0 if one_d else count):
        w0[q] -= s.pad[2]
    if pixel_runs_in:
        # a channels-last input: L channels (of one depth tap) of L tiles per item, each
        # pixel's channels loaded as one run
        for item in prange(KD * in_blocks * groups_of_lanes, num_threads=num_threads,
                           schedule='dynamic', chunksize=transform_chunk(
                               KD * in_blocks * groups_of_lanes, num_threads)):
            block = item % (KD * in_blocks)
            q = (item // (KD * in_blocks)) * L
            kd = block // in_blocks
            c = (block % in_blocks) * L
            channel = kd * Cg + c
            if floating is float:
                fc_wino_input_channels_f32(
                    x + g * Cg + c, Cg - c if Cg - c < L else L, slice_offset + kd * S + q,
                    top + kd * S + q, w0 + q, count - q if count - q < L else L, H, W,
                    xs[3], xs[4], v + (q // VR) * depth_taps * VR + channel * VR + q % VR,
                    VR, SV * depth_taps)
            else:
                fc_wino_input_channels_f64(
                    x + g * Cg + c, Cg - c if Cg - c < L else L, slice_offset + kd * S + q,
                    top + kd * S + q, w0 + q, count - q if count - q < L else L, H, W,
                    xs[3], xs[4], v + (q // VR) * depth_taps * VR + channel * VR + q % VR,
                    VR, SV * depth_taps)
    else:
        for item in prange(depth_taps * groups_of_lanes,
                           num_threads=num_threads, schedule='dynamic',
                           chunksize=transform_chunk(depth_taps * groups_of_lanes, num_threads)):
            if channels_inner_in:
                channel = item % depth_taps         # kd * Cg + c
                q = (item // depth_taps) * L
            else:
                channel = item // groups_of_lanes
                q = (item % groups_of_lanes) * L
            kd = channel // Cg
            c = channel % Cg
            if one_d:
                if floating is float:
                    fc_wino1d_input_f32(x + (g * Cg + c) * xs[1], in_offset + q, h0 + q,
                                        dilation, count - q if count - q < L else L, W,
                                        xs[4],
                                        v + (q // VR) * depth_taps * VR + channel * VR
                                        + q % VR, SV * depth_taps)
                else:
                    fc_wino1d_input_f64(x + (g * Cg + c) * xs[1], in_offset + q, h0 + q,
                                        dilation, count - q if count - q < L else L, W,
                                        xs[4],
                                        v + (q // VR) * depth_taps * VR + channel * VR
                                        + q % VR, SV * depth_taps)
            elif floating is float:
                fc_wino_input_f32(x + (g * Cg + c) * xs[1], slice_offset + kd * S + q,
                                  top + kd * S + q, w0 + q,
                                  count - q if count - q < L else L, H, W, xs[3], xs[4],
                                  v + (q // VR) * depth_taps * VR + channel * VR + q % VR,
                                  SV * depth_taps)
            else:
                fc_wino_input_f64(x + (g * Cg + c) * xs[1], slice_offset + kd * S + q,
                                  top + kd * S + q, w0 + q,
                                  count - q if count - q < L else L, H, W, xs[3], xs[4],
                                  v + (q // VR) * depth_taps * VR + channel * VR + q % VR,
                                  SV * depth_taps)
    for q in range(0 if one_d else count):
        w0[q] += s.pad[2]
    if w_fused != NULL:
        fused_multiply(w_fused, s, g, adjoint, count, v, VR, m, SV, SM, failed, num_threads)
    for item in prange(0 if w_fused != NULL else E * m_blocks, num_threads=num_threads,
                       schedule='dynamic'):
        e = item // m_blocks
        block = item % m_blocks
        p0 = block * per_block
        p1 = p0 + per_block if p0 + per_block < m_panels else m_panels
        if p0 >= p1 or Cg == 0:
            continue
        multiply_tile(depth_taps, p1 - p0, Kg - p0 * MR, count, VR,
                      u + (e * m_panels + p0) * depth_taps * MR,
                      v + e * SV * depth_taps,
                      m + (e * Kg + p0 * MR) * SM, SM, NULL, False, TILE_WIDE, NULL)
    if pixel_runs_out:
        # a channels-last output: L channels of L tiles per item, each pixel's channels
        # stored as one run
        for item in prange(channel_blocks * groups_of_lanes, num_threads=num_threads,
                           schedule='dynamic', chunksize=transform_chunk(
                               channel_blocks * groups_of_lanes, num_threads)):
            k = (item % channel_blocks) * L
            q = (item // channel_blocks) * L
            if floating is float:
                nonfinite += fc_wino_output_channels_f32(
                    m + k * SM + q, SM, Kg * SM, Kg - k if Kg - k < L else L,
                    bias + g * Kg + k if bias != NULL else NULL, out + g * Kg + k,
                    out_offset + q, h0 + q, w0 + q, count - q if count - q < L else L,
                    OH, OW, os[3], os[4])
            else:
                nonfinite += fc_wino_output_channels_f64(
                    m + k * SM + q, SM, Kg * SM, Kg - k if Kg - k < L else L,
                    bias + g * Kg + k if bias != NULL else NULL, out + g * Kg + k,
                    out_offset + q, h0 + q, w0 + q, count - q if count - q < L else L,
                    OH, OW, os[3], os[4])
        return nonfinite
    for item in prange(Kg * groups_of_lanes, num_threads=num_threads,
                       schedule='dynamic', chunksize=transform_chunk(
                           Kg * groups_of_lanes, num_threads)):
        if channels_inner_out:
            k = item % Kg
            q = (item // Kg) * L
        else:
            k = item // groups_of_lanes
            q = (item % groups_of_lanes) * L
        if one_d:
            if floating is float:
                nonfinite += fc_wino1d_output_f32(
                    m + k * SM + q, Kg * SM, bias[g * Kg + k] if bias != NULL else 0,
                    out + (g * Kg + k) * os[1], out_offset + q, w0 + q, dilation,
                    count - q if count - q < L else L, OW, os[4])
            else:
                nonfinite += fc_wino1d_output_f64(
                    m + k * SM + q, Kg * SM, bias[g * Kg + k] if bias != NULL else 0,
                    out + (g * Kg + k) * os[1], out_offset + q, w0 + q, dilation,
                    count - q if count - q < L else L, OW, os[4])
        elif floating is float:
            nonfinite += fc_wino_output_f32(
                m + k * SM + q, Kg * SM, bias[g * Kg + k] if bias != NULL else 0,
                out + (g * Kg + k) * os[1], out_offset + q, h0 + q, w0 + q,
                count - q if count - q < L else L, OH, OW, os[3], os[4])
        else:
            nonfinite += fc_wino_output_f64(
                m + k * SM + q, Kg * SM, bias[g * Kg + k] if bias != NULL else 0,
                out + (g * Kg + k) * os[1], out_offset + q, h0 + q, w0 + q,
                count - q if count - q < L else L, OH, OW, os[3], os[4])
    return nonfinite


# The transformed weights take 4x the weight's bytes (36 values per 3x3 filter). A call of
# one super-block uses each of them once: transformed as the GEMM goes, a panel's filters at
# a time into a buffer in L2, they are never written out and read back (measurements:
# tiling.WINOGRAD_FUSED_MAX_TILES).
cdef void fused_multiply(const floating* w, const ConvShape* s, Py_ssize_t g, bint adjoint,
                         Py_ssize_t count, const floating* v, Py_ssize_t VR, floating* m,
                         Py_ssize_t SV, Py_ssize_t SM, int* failed,
                         int num_threads) noexcept nogil:
    """winograd_block's GEMM step for `count` tiles of group g (V in panels VR wide) with
    w's filters (w and `adjoint` as transform_group's) transformed as it goes: each panel of
    MR output channels is a work item that transforms its filters a K block at a time
    (transform_filters) and multiplies every element's block by V's, M[e] (+)= U[e] . V[e].
    The same K blocks, in the same order, as multiply_tile over transform_weights' panels:
    the same bits. Sets failed[0] if a thread's buffer could not be had."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE)
    cdef Py_ssize_t Cg = s.c_in_g, Kg = s.c_out_g
    cdef Py_ssize_t depth = s.kernel[0] * Cg
    cdef Py_ssize_t m_panels = (Kg + MR - 1) // MR
    cdef Py_ssize_t k_block = K_BLOCK_BYTES // (MR * sizeof(floating))
    # the elements' A panels a cache line more than a multiple of 4 KiB apart: each filter's
    # 36 values are written together, and 36 stores to one L1 set took 2.4x the GEMM's time
    cdef Py_ssize_t e_stride = k_block * MR + 64 // sizeof(floating)
    cdef Py_ssize_t panel, kb, k0, k_len, e, j, m_valid, n_valid
    cdef floating* filters = NULL
    if depth == 0:
        return
    with parallel(num_threads=num_threads):
        filters = <floating*> fc_workspace(WS_FILTER_BLOCK, 36 * e_stride * sizeof(floating))
        for panel in prange(m_panels, schedule='dynamic'):
            if filters == NULL:
                failed[0] = 1
                continue
            m_valid = Kg - panel * MR if Kg - panel * MR < MR else MR
            for kb in range((depth + k_block - 1) // k_block):
                k0 = kb * k_block
                k_len = depth - k0 if depth - k0 < k_block else k_block
                transform_filters(w, Kg, Cg, s.kernel[0], g, adjoint, panel, k0, k_len,
                                  filters, e_stride)
                for e in range(36):
                    for j in range((count + VR - 1) // VR):
                        n_valid = count - j * VR if count - j * VR < VR else VR
                        gemm_tile(TILE_WIDE, k_len, filters + e * e_stride, 0,
                                  v + e * SV * depth + j * depth * VR + k0 * VR, VR, NULL,
                                  m + (e * Kg + panel * MR) * SM + j * VR, SM, m_valid,
                                  n_valid, NULL, k0 > 0)


cdef inline bint spread_evenly(Py_ssize_t tiles, Py_ssize_t S, int num_threads,
                               Py_ssize_t L) noexcept nogil:
    """True if threads running whole blocks should share the tiles out evenly (see
    block_start) rather than in blocks of S (whole panels, which the GEMM runs fastest): when
    the busiest thread's tiles in blocks of S exceed an even share of whole vectors by more
    than a quarter. 49 tiles in blocks of 48 left one thread a single tile; 196 in blocks of
    96 (96 + 4 and 96) and 1568 (800 and 768) stay whole."""
    cdef Py_ssize_t blocks = (tiles + S - 1) // S
    cdef Py_ssize_t rest = tiles - (blocks - 1) * S        # the last block's tiles
    cdef Py_ssize_t busiest = 0, load
    cdef Py_ssize_t even = ((tiles + L - 1) // L + num_threads - 1) // num_threads * L
    cdef int t
    for t in range(num_threads):
        load = (blocks - t + num_threads - 1) // num_threads * S
        if (blocks - 1) % num_threads == t:
            load -= S - rest
        if load > busiest:
            busiest = load
    return busiest * 4 > even * 5


cdef inline Py_ssize_t thread_blocks(Py_ssize_t tiles, Py_ssize_t S,
                                     int num_threads) noexcept nogil:
    """Blocks per group for spread_evenly's split: those S allows, rounded up to a multiple
    of num_threads."""
    cdef Py_ssize_t blocks = (tiles + S - 1) // S
    return (blocks + num_threads - 1) // num_threads * num_threads


cdef inline Py_ssize_t block_start(Py_ssize_t b, Py_ssize_t blocks, Py_ssize_t tiles,
                                   Py_ssize_t L) noexcept nogil:
    """The first tile of block b of `blocks` in spread_evenly's split: the tiles' vectors of
    L shared out evenly. With S a multiple of L and blocks >= tiles / S, no block holds more
    than S tiles."""
    cdef Py_ssize_t vectors = (tiles + L - 1) // L
    cdef Py_ssize_t t = (b * vectors // blocks) * L
    return t if t < tiles else tiles


cdef int conv_winograd(const floating* x, const Py_ssize_t* xs, const floating* u_all,
                       const floating* bias, floating* out, const Py_ssize_t* os,
                       const ConvShape* s, Py_ssize_t tile_panels, bint per_thread_blocks,
                       const floating* w_fused, bint adjoint, int num_threads) noexcept nogil:
    """out := conv(x, w) + bias with u_all the weights transformed by transform_weights; xs
    and os: the element strides of x and out over (n, c, d, h, w), so channels-last arrays
    are read and written where they lie (their steps then run channel by channel within a
    group of tiles, the neighbours in memory).
    A 3-d kernel of depth KD is KD 2-d ones, one per input depth slice: the GEMM's depth runs
    over (depth tap, channel), each slice's input tiles transformed as a channel of their own.
    A 1-d kernel of 3 taps (any dilation) runs F(4, 3): 6 elements per tile instead of 36.
    The tiles go in super-blocks of tile_panels x NR (or fewer: spread_evenly). With
    `per_thread_blocks`, each thread takes whole super-blocks (dynamic schedule) and runs
    their three steps alone in its own
    buffers: one parallel region per call, no barrier between steps, so a thread slowed by
    a busy core takes fewer blocks instead of holding the team at every step's end. Else
    the threads share each super-block, step by step (for few tiles, or large weights).
    With `w_fused` (u_all NULL), the weights are transformed as the GEMM step goes
    (fused_multiply), for each super-block: callers fuse only calls of one super-block.
    Returns 0, 1 (out of memory) or NONFINITE (done, but some output is inf or NaN)."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE), NR = tile_nr(TILE_WIDE, <floating*> NULL)
    cdef Py_ssize_t Cg = s.c_in_g, Kg = s.c_out_g, KD = s.kernel[0]
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t depth_taps = KD * Cg
    cdef Py_ssize_t m_panels = (Kg + MR - 1) // MR
    cdef bint one_d = s.kernel[1] == 1
    cdef Py_ssize_t E = 6 if one_d else 36
    cdef Py_ssize_t dilation = s.dilation[2]
    cdef Py_ssize_t tiles = s.n * dilation * (((OW + dilation - 1) // dilation + 3) // 4) \
        if one_d else s.n * OD * ((OH + 3) // 4) * ((OW + 3) // 4)
    cdef Py_ssize_t S = tile_panels * NR
    cdef Py_ssize_t per_group = (tiles + S - 1) // S      # super-blocks per group
    cdef Py_ssize_t L = lanes(<floating*> NULL)
    cdef bint even = False          # per_thread_blocks in spread_evenly's split
    cdef Py_ssize_t u_group = E * m_panels * depth_taps * MR
    cdef size_t v_bytes = E * S * depth_taps * sizeof(floating)
    cdef size_t m_bytes = E * Kg * S * sizeof(floating)
    cdef size_t desc_bytes = (5 + 2 * KD) * S * sizeof(Py_ssize_t)
    cdef floating* v = NULL       # each thread's own, with per_thread_blocks
    cdef floating* m = NULL
    cdef Py_ssize_t* desc = NULL
    cdef Py_ssize_t g, t0, count, item
    cdef int nonfinite = 0, failed = 0, fused_failed = 0
    cdef int* fused_failed_flag = &fused_failed     # written through: shared by the threads
    cdef const floating* u_of_group
    if per_thread_blocks and num_threads > 1:
        even = spread_evenly(tiles, S, num_threads, L)
        if even:
            per_group = thread_blocks(tiles, S, num_threads)
        with parallel(num_threads=num_threads):
            v = <floating*> fc_workspace(WS_INPUT, v_bytes)
            m = <floating*> fc_workspace(WS_PRODUCTS, m_bytes)
            desc = <Py_ssize_t*> fc_workspace(WS_TILES, desc_bytes)
            for item in prange(s.groups * per_group, schedule='dynamic'):
                if v == NULL or m == NULL or desc == NULL:
                    failed += 1
                    continue
                g = item // per_group
                if even:
                    t0 = block_start(item % per_group, per_group, tiles, L)
                    count = block_start(item % per_group + 1, per_group, tiles, L) - t0
                    if count == 0:
                        continue
                else:
                    t0 = (item % per_group) * S
                    count = tiles - t0 if tiles - t0 < S else S
                u_of_group = u_all + g * u_group if u_all != NULL else NULL
                nonfinite += winograd_block(x, xs, u_of_group, bias, out, os, s, g, t0, count,
                                            S, v, m, desc, w_fused, adjoint,
                                            fused_failed_flag, 1)
            fc_workspace_trim()
        if failed:
            return 1
    else:
        v = <floating*> fc_workspace(WS_INPUT, v_bytes)
        m = <floating*> fc_workspace(WS_PRODUCTS, m_bytes)
        desc = <Py_ssize_t*> fc_workspace(WS_TILES, desc_bytes)
        if v == NULL or m == NULL or desc == NULL:
            return 1
        for g in range(s.groups):
            for item in range(per_group):
                t0 = item * S
                count = tiles - t0 if tiles - t0 < S else S
                u_of_group = u_all + g * u_group if u_all != NULL else NULL
                nonfinite += winograd_block(x, xs, u_of_group, bias, out, os, s, g, t0, count,
                                            S, v, m, desc, w_fused, adjoint,
                                            fused_failed_flag, num_threads)
    fc_workspace_trim()
    if fused_failed:
        return 1
    return STATUS_NONFINITE if nonfinite else 0


def weights_size(Py_ssize_t c_out, Py_ssize_t c_in_g, Py_ssize_t groups,
                 tuple kernel=(1, 3, 3)):
    """Elements of the transformed weights of a (c_out, c_in_g, *kernel) weight: kernel
    (KD, 3, 3), or (1, 1, 3) for 1-d."""
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE), Kg = c_out // groups
    cdef Py_ssize_t elements = 6 if tuple(kernel) == (1, 1, 3) else 36
    return groups * elements * ((Kg + MR - 1) // MR) * MR * c_in_g * kernel[0]


def transform_weights(const floating[:, :, :, :, ::1] w, Py_ssize_t groups,
                      floating[::1] u, int num_threads):
    """u := the transformed weights of w (c_out, c_in_g, KD, 3, 3), or (c_out, c_in_g, 1, 1,
    3) for 1-d, as conv_forward takes them (weights_size(c_out, c_in_g, groups, kernel)
    elements)."""
    _transform(w, groups, False, u, num_threads)


def transform_adjoint_weights(const floating[:, :, :, :, ::1] w, Py_ssize_t groups,
                              floating[::1] u, int num_threads):
    """u := the transformed weights of the stride-1 convolution that is the input gradient
    of the convolution by w (c_out, c_in_g, *kernel), kernel (KD, 3, 3) or (1, 1, 3): its
    weight (c_in_g * groups, c_out / groups, *kernel) is w's, channels transposed per group
    and each filter turned by 180 degrees along every axis (weights_size(c_in_g * groups,
    c_out // groups, groups, kernel) elements)."""
    _transform(w, groups, True, u, num_threads)


cdef _transform(const floating[:, :, :, :, ::1] w, Py_ssize_t groups, bint adjoint,
                floating[::1] u, int num_threads):
    cdef Py_ssize_t c_out = w.shape[0], c_in_g = w.shape[1], KD = w.shape[2]
    # the convolution whose weights are transformed: K_g outputs, C_g inputs per group
    cdef Py_ssize_t Kg = c_in_g if adjoint else (c_out // groups if groups > 0 else 0)
    cdef Py_ssize_t Cg = (c_out // groups if groups > 0 else 0) if adjoint else c_in_g
    cdef bint one_d = (w.shape[2], w.shape[3], w.shape[4]) == (1, 1, 3)
    cdef Py_ssize_t MR = tile_mr(TILE_WIDE)
    cdef Py_ssize_t per_group = (6 if one_d else 36) * ((Kg + MR - 1) // MR) * MR * Cg * KD
    cdef Py_ssize_t g
    name = "transform_adjoint_weights" if adjoint else "transform_weights"
    if not (one_d or (w.shape[3], w.shape[4]) == (3, 3)) or KD < 1 or groups < 1 \
            or c_out % groups:
        raise ValueError(f"conv_winograd.{name}: a (C_out, C_in_g, KD, 3, 3) or (C_out, "
                         f"C_in_g, 1, 1, 3) weight and groups dividing C_out; got "
                         f"{shape5(w.shape)}, groups {groups}")
    if u.shape[0] != groups * per_group:
        raise ValueError(f"conv_winograd.{name}: u must have {groups * per_group} elements; "
                         f"got {u.shape[0]}")
    if u.shape[0] == 0:
        return
    with nogil:
        for g in range(groups):
            transform_group(&w[0, 0, 0, 0, 0], Kg, Cg, KD, g, adjoint, one_d,
                            &u[0] + g * per_group, num_threads)


def tile_geometry(bint double_precision):
    """(MR, NR, lanes): the register tile the GEMM step runs on and the tiles transformed
    together, for this precision on this CPU."""
    if double_precision:
        return tile_mr(TILE_WIDE), tile_nr(TILE_WIDE, <double*> NULL), lanes(<double*> NULL)
    return tile_mr(TILE_WIDE), tile_nr(TILE_WIDE, <float*> NULL), lanes(<float*> NULL)


# ---------------------------------------------------------------------------------------------
# Entry point from Python: 5-d arrays (x and out C-contiguous or channels-last, any strides
# in fact), already validated by the Python layer.

def conv_forward(int kernel, const floating[:, :, :, :, :] x,
                 const floating[:, :, :, :, :] w, const floating[::1] bias,
                 floating[:, :, :, :, :] out, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, Py_ssize_t tile_panels, bint per_thread_blocks,
                 int num_threads, const floating[::1] u,
                 const floating[:, :, :, :, ::1] fused_weights=None, bint adjoint=False):
    """out := conv(x, w) + bias (bias: empty for none) with zero padding `pad` before each
    axis, by Winograd F(4x4, 3x3) over each (KD, 3, 3) kernel's depth taps (F(4, 3) for a 1-d
    (1, 1, 3) kernel, any dilation), in super-blocks of `tile_panels` panels of tiles (each
    thread running whole super-blocks alone if `per_thread_blocks`); `u`
    holds w transformed by transform_weights (w itself is only read for its shape). x and
    out are read and written through their strides: a channels-last (N, C, D, H, W) view
    (memory (N, D, H, W, C)) in, or out, is computed where it lies. Returns 0, or NONFINITE
    if some output is inf or NaN (then it may differ from the direct sum's where the direct
    sum is finite: the caller recomputes). `kernel`: CONV_WINOGRAD.

    With `fused_weights` (u then empty), the weights are transformed as the GEMM step goes
    instead (2-d and 3-d kernels; meant for calls whose tiles fit one super-block, see
    fused_multiply): w's own values, C-contiguous, or with `adjoint` those of the
    convolution whose input gradient this one is (C_in, C_out / groups, KD, 3, 3), read as
    transform_adjoint_weights reads them."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(w.shape), shape5(out.shape),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t xs[5]
    cdef Py_ssize_t os[5]
    cdef Py_ssize_t i
    cdef int status = 0
    if kernel != CONV_WINOGRAD:
        raise ValueError(f"conv_winograd.conv_forward does not run kernel {kernel}")
    one_d = (s.kernel[0], s.kernel[1], s.kernel[2]) == (1, 1, 3)
    if one_d:
        # 1-d: (1, 1, L) planes, any dilation along them
        if (s.in_size[0], s.in_size[1], s.out_size[0], s.out_size[1], s.pad[0], s.pad[1]) \
                != (1, 1, 1, 1, 0, 0) or (s.stride[0], s.stride[1], s.stride[2]) != (1, 1, 1) \
                or s.dilation[2] < 1:
            raise ValueError("conv_winograd.conv_forward: a (1, 1, 3) kernel takes (1, 1, L) "
                             f"planes, stride 1; got input {shape5(x.shape)}, output "
                             f"{shape5(out.shape)}, stride {stride}, padding {pad}, dilation "
                             f"{dilation}")
    elif (s.kernel[1], s.kernel[2]) != (3, 3) \
            or (s.stride[0], s.stride[1], s.stride[2]) != (1, 1, 1) \
            or (s.dilation[0], s.dilation[1], s.dilation[2]) != (1, 1, 1):
        raise ValueError("conv_winograd.conv_forward: (KD, 3, 3) kernels, stride 1, dilation 1 "
                         f"only (or 1-d (1, 1, 3)); got kernel {shape5(w.shape)[2:]}, stride "
                         f"{stride}, dilation {dilation}")
    if tile_panels < 1:
        raise ValueError(f"conv_winograd.conv_forward: tile_panels must be >= 1, got "
                         f"{tile_panels}")
    cdef const floating* w_fused = NULL
    if fused_weights is not None:
        expected_shape = ((s.c_in, s.c_out_g) if adjoint else (s.c_out, s.c_in_g)) \
            + tuple(shape5(w.shape)[2:])
        if one_d or shape5(fused_weights.shape) != expected_shape:
            raise ValueError(f"conv_winograd.conv_forward: fused_weights must be "
                             f"{expected_shape} for a 2-d or 3-d kernel; got "
                             f"{shape5(fused_weights.shape)}, kernel {shape5(w.shape)[2:]}")
        if u.shape[0] != 0:
            raise ValueError(f"conv_winograd.conv_forward: u must be empty with "
                             f"fused_weights; got {u.shape[0]} elements")
        if fused_weights.size > 0:
            w_fused = &fused_weights[0, 0, 0, 0, 0]
    else:
        expected = weights_size(s.c_out, s.c_in_g, groups, shape5(w.shape)[2:])
        if u.shape[0] != expected:
            raise ValueError(f"conv_winograd.conv_forward: u must have {expected} elements; "
                             f"got {u.shape[0]}")
    if out.shape[0] == 0 or out.shape[1] == 0 or out.shape[3] == 0 or out.shape[4] == 0:
        return 0
    for i in range(5):
        xs[i] = x.strides[i] // <Py_ssize_t> sizeof(floating)
        os[i] = out.strides[i] // <Py_ssize_t> sizeof(floating)
        if out.shape[i] > 1 and os[i] <= 0:
            raise ValueError(f"conv_winograd.conv_forward: out must not overlap itself; got "
                             f"strides {tuple(out.strides)}")
    with nogil:
        status = conv_winograd(&x[0, 0, 0, 0, 0], xs, &u[0] if u.shape[0] else NULL,
                               bias_ptr, &out[0, 0, 0, 0, 0], os, &s, tile_panels,
                               per_thread_blocks, w_fused, adjoint, num_threads)
    if status == 1:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")
    return status


# ---------------------------------------------------------------------------------------------
# The weight gradient (winograd.h, FC_DEFINE_WINOGRAD_GRAD), F(2x2, 3x3), of (KD, 3, 3)
# kernels (KD = 1: 2-d): the 2x2 tiles of a chunk of images transformed, the input's into
# xhat (16, C_in, tiles) and the output gradient's into ghat (16, C_out, tiles), tiles side by
# side in whole vectors of lanes; then for every element e, depth tap kd and group a GEMM over
# the tiles, M[kd, e] (+)= ghat[e] xhat[e]^T, on BLAS (single-threaded in each of our
# threads); after the last chunk, each filter's G^T M G.
#
# Depth: a chunk's tiles are stored depth slice by depth slice, the chunk's images side by
# side within a slice (tile t of image n at input depth d: (d * images + n) * per_slice + t;
# the gradient's slices likewise). Depth tap kd pairs gradient slice i with input depth
# i + kd - pad, so its GEMM reads xhat (kd - pad) x images x per_slice tiles on from ghat,
# one offset for every image, and runs over just the gradient slices whose input depth lies
# inside the input: no zero slices are stored or multiplied (a 4-deep volume with one slice
# of padding a side spent a third of its GEMMs on them). The input's tiles are transformed
# once for all KD taps.

cdef inline Py_ssize_t gradient_depths(const ConvShape* s) noexcept nogil:
    """Depth slices a chunk holds of each image: D for the input's, D_out for the output
    gradient's, room for the larger."""
    return max(s.in_size[0], s.out_size[0])


cdef inline Py_ssize_t tap_first_slice(const ConvShape* s, Py_ssize_t kd) noexcept nogil:
    """The first gradient slice whose input depth i + kd - pad lies in [0, D)."""
    return max(0, s.pad[0] - kd)


cdef inline Py_ssize_t tap_end_slice(const ConvShape* s, Py_ssize_t kd) noexcept nogil:
    """One past the last gradient slice whose input depth lies in [0, D) (at least the first:
    none where the tap sees only padding). Returned, not written through pointers: inside a
    prange, a variable assigned only through its address is shared by the threads."""
    return max(tap_first_slice(s, kd), min(s.out_size[0], s.in_size[0] + s.pad[0] - kd))


cdef inline Py_ssize_t plane_run(Py_ssize_t per_slice, floating* dummy) noexcept nogil:
    """Elements of a transformed plane's run in gradient_plane's buffer: its tiles and the
    lanes of a last vector past them."""
    return per_slice + lanes(<floating*> NULL)


cdef Py_ssize_t plane_buffer(Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                             floating* dummy) noexcept nogil:
    """Elements of gradient_plane's per-thread buffer: 16 runs of a plane's transformed
    tiles, then the split rows (winograd.h, fc_wino2_plane_scratch)."""
    cdef Py_ssize_t scratch
    if floating is float:
        scratch = fc_wino2_plane_scratch_f32(tiles_h, tiles_w)
    else:
        scratch = fc_wino2_plane_scratch_f64(tiles_h, tiles_w)
    return ELEMENTS_F23 * plane_run(tiles_h * tiles_w, <floating*> NULL) + scratch


cdef void gradient_plane(const floating* x, const floating* g, const ConvShape* s,
                         Py_ssize_t n0, Py_ssize_t images, Py_ssize_t tiles_h,
                         Py_ssize_t tiles_w, Py_ssize_t item, Py_ssize_t capacity,
                         floating* xhat, floating* ghat, floating* buffer) noexcept nogil:
    """Work item `item` of a chunk's transforms, images x gradient_depths per channel c (<
    C_in: the input's; else the output gradient's channel c - C_in): the plane at depth slice
    i of image n0 + n, for item i * images + n of the channel, transformed into its tiles'
    places (an item past the gradient's D_out slices does nothing). The plane is transformed
    into `buffer` (plane_buffer elements), then copied out run by run: the runs lie C x
    capacity elements apart, a multiple of 4 KiB for most channel counts, so storing a row of
    tiles into all 16 at once evicted each line before its other half was written."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t per_slice = tiles_h * tiles_w
    cdef Py_ssize_t per_channel = images * gradient_depths(s)
    cdef Py_ssize_t c = item // per_channel, p = item % per_channel
    cdef Py_ssize_t i = p // images, n = p % images
    cdef Py_ssize_t run = plane_run(per_slice, <floating*> NULL)
    cdef bint is_input = c < s.c_in
    cdef floating* dst = xhat + c * capacity if is_input else ghat + (c - s.c_in) * capacity
    cdef Py_ssize_t e_stride = (s.c_in if is_input else s.c_out) * capacity
    cdef Py_ssize_t start = p * per_slice, e
    if i >= (D if is_input else OD):
        return
    if floating is float:
        if is_input:
            fc_wino2_input_plane_f32(x + (((n0 + n) * s.c_in + c) * D + i) * H * W, H, W,
                                     s.pad[1], s.pad[2], tiles_h, tiles_w, buffer, run,
                                     buffer + ELEMENTS_F23 * run)
        else:
            fc_wino2_gradient_plane_f32(g + (((n0 + n) * s.c_out + c - s.c_in) * OD + i)
                                        * OH * OW, OH, OW, tiles_h, tiles_w, buffer, run,
                                        buffer + ELEMENTS_F23 * run)
    else:
        if is_input:
            fc_wino2_input_plane_f64(x + (((n0 + n) * s.c_in + c) * D + i) * H * W, H, W,
                                     s.pad[1], s.pad[2], tiles_h, tiles_w, buffer, run,
                                     buffer + ELEMENTS_F23 * run)
        else:
            fc_wino2_gradient_plane_f64(g + (((n0 + n) * s.c_out + c - s.c_in) * OD + i)
                                        * OH * OW, OH, OW, tiles_h, tiles_w, buffer, run,
                                        buffer + ELEMENTS_F23 * run)
    for e in range(ELEMENTS_F23):
        memcpy(dst + e * e_stride + start, buffer + e * run, per_slice * sizeof(floating))


cdef int winograd_weight_grad(const floating* x, const floating* g, floating* dw,
                              const ConvShape* s, Py_ssize_t images_per_chunk,
                              floating* xhat, floating* ghat, floating* m,
                              Py_ssize_t capacity, int num_threads) noexcept nogil:
    """0, or 1 where a thread's transform buffer could not be allocated."""
    cdef Py_ssize_t KD = s.kernel[0]
    cdef Py_ssize_t tiles_w = (s.out_size[2] + 1) // 2
    cdef Py_ssize_t tiles_h = (s.out_size[1] + 1) // 2
    cdef Py_ssize_t per_slice = tiles_h * tiles_w
    cdef Py_ssize_t Kg = s.c_out_g, Cg = s.c_in_g
    cdef Py_ssize_t per_tap = ELEMENTS_F23 * s.c_out * Cg   # M's elements per depth tap
    cdef size_t buffer_bytes = plane_buffer(tiles_h, tiles_w, <floating*> NULL) \
        * sizeof(floating)
    cdef Py_ssize_t run = plane_run(per_slice, <floating*> NULL)
    cdef Py_ssize_t n0, images, depth, item, items, e, grp, kd, co, first, end, per_depth
    cdef int blas_threads_before
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    cdef floating beta
    cdef floating* buffer = NULL
    n0 = 0
    while n0 < s.n:
        images = min(images_per_chunk, s.n - n0)
        per_depth = images * per_slice     # a depth slice's tiles
        items = (s.c_in + s.c_out) * images * gradient_depths(s)
        with parallel(num_threads=num_threads):
            buffer = <floating*> fc_workspace(WS_GRADIENT_PLANE, buffer_bytes)
            if buffer == NULL:
                failed_flag[0] = 1
            else:   # the split rows' zeros (winograd.h, fc_wino2_plane_scratch), per chunk:
                    # a thread's buffer is known only inside the parallel region
                memset(buffer + ELEMENTS_F23 * run, 0,
                       buffer_bytes - ELEMENTS_F23 * run * sizeof(floating))
            # a 7x7 plane is 16 tiles: items one at a time spent a sixth of a call in the
            # schedule's bookkeeping
            for item in prange(items, schedule='dynamic',
                               chunksize=transform_chunk(items, num_threads)):
                if buffer != NULL:
                    gradient_plane(x, g, s, n0, images, tiles_h, tiles_w, item, capacity,
                                   xhat, ghat, buffer)
        if failed:
            return 1
        # the tiles' products, added to the chunks' before (the same order whatever the
        # thread that runs an element: one single-threaded GEMM each)
        beta = 0 if n0 == 0 else 1
        with parallel(num_threads=num_threads):
            blas_threads_before = hold_blas_single_threaded(blas_local_threads())
            for item in prange(ELEMENTS_F23 * KD * s.groups, schedule='dynamic'):
                e = item // (KD * s.groups)
                kd = item // s.groups % KD
                grp = item % s.groups
                first = tap_first_slice(s, kd)
                end = tap_end_slice(s, kd)
                depth = (end - first) * per_depth
                if depth == 0:      # every gradient slice's input depth is padding
                    if n0 == 0:
                        memset(m + kd * per_tap + (e * s.c_out + grp * Kg) * Cg, 0,
                               Kg * Cg * sizeof(floating))
                    continue
                gemm(False, True, <int> Kg, <int> Cg, <int> depth, <floating> 1,
                     ghat + (e * s.c_out + grp * Kg) * capacity + first * per_depth,
                     <int> capacity,
                     xhat + (e * s.c_in + grp * Cg) * capacity
                     + (first + kd - s.pad[0]) * per_depth,
                     <int> capacity, beta, m + kd * per_tap + (e * s.c_out + grp * Kg) * Cg,
                     <int> Cg)
            release_blas(blas_local_threads(), blas_threads_before)
        n0 = n0 + images
    for item in prange(s.c_out * KD, num_threads=num_threads, schedule='static'):
        co = item // KD
        kd = item % KD
        if floating is float:
            fc_wino2_filter_grad_f32(m + kd * per_tap + co * Cg, s.c_out * Cg, Cg,
                                     dw + (co * Cg * KD + kd) * 9, KD * 9)
        else:
            fc_wino2_filter_grad_f64(m + kd * per_tap + co * Cg, s.c_out * Cg, Cg,
                                     dw + (co * Cg * KD + kd) * 9, KD * 9)
    return 0


# ---------------------------------------------------------------------------------------------
# The weight gradient in blocks of tile rows (2-d, one group; weight_grad_blocks): the
# products M[e] (C_out x C_in, 16 of them) are small enough to stay in a core's cache, while
# the batch's transformed tiles are not (64 channels on 56x56 planes: 51 MB for a batch of 8,
# written, read back, and packed again by BLAS: two thirds of that path's time). So each work
# unit, a few rows of tiles of one image, is transformed into cache-sized buffers and
# multiplied at once on fastconv's micro-kernel. The unit's input and gradient rows are first
# laid out channels-last (8 x 8 register transposes of the raw rows, 4 values a tile), then
# transformed with channels as the vector lanes, straight into the layouts the micro-kernel
# reads: B's rows (tile t: the input channels' element e) and A's columns (the output
# channels'), so nothing is packed. Units go to the plan's number of chunks, each with its own
# M, summed in chunk order at the end: the thread count never changes a bit.

cdef inline Py_ssize_t odd_lines(Py_ssize_t elements, floating* dummy) noexcept nogil:
    """`elements` rounded up to an odd number of cache lines: the 16 element blocks a
    transform writes at once then fall in different cache sets (a multiple of 4 KiB apart
    they evict each other)."""
    cdef Py_ssize_t per_line = 64 // sizeof(floating)
    return ((elements + per_line - 1) // per_line | 1) * per_line


cdef inline Py_ssize_t padded_channels(Py_ssize_t channels, floating* dummy) noexcept nogil:
    cdef Py_ssize_t L = lanes(<floating*> NULL)
    return (channels + L - 1) // L * L


ctypedef struct BlockLayout:
    # a thread's buffer for units of `rows` rows of tiles of `images` images (every unit, the
    # last ones shorter included, uses the same places: the zeros written once per call stay)
    Py_ssize_t rows, images, tiles_h, tiles_w, c_ld, k_ld
    bint nhwc                       # the operands are channels-last (N, H, W, C)
    Py_ssize_t x_rs, g_rs           # row strides of the channels-last input and gradient rows
    Py_ssize_t x_es, g_es           # element strides of the transformed tiles
    Py_ssize_t x_rows, g_rows, x_tiles, g_tiles, elements


ctypedef struct SliceMap:
    # where the blocks' "images" lie: image i is depth slice i % slices (plus x_first in x,
    # g_first in g) of image i // slices of x (N, C, x_depth, H, W) and g (N, K, g_depth, OH,
    # OW), or of their channels-last forms (N, depth, H, W, C); a 2-d call's map is one slice
    Py_ssize_t slices, x_first, g_first, x_depth, g_depth


cdef inline const floating* slice_plane(const floating* a, const SliceMap* map, Py_ssize_t i,
                                        bint x_side, bint nhwc, Py_ssize_t channels,
                                        Py_ssize_t plane) noexcept nogil:
    """Where block image i of x (x_side) or g starts: its first channel's plane of `plane`
    elements (channels-first: the channels map.x_depth or map.g_depth planes apart), or its
    first pixel (channels-last)."""
    cdef Py_ssize_t depth = map.x_depth if x_side else map.g_depth
    cdef Py_ssize_t d = i % map.slices + (map.x_first if x_side else map.g_first)
    if nhwc:
        return a + ((i // map.slices) * depth + d) * channels * plane
    return a + ((i // map.slices) * channels * depth + d) * plane


cdef inline BlockLayout block_layout(const ConvShape* s, Py_ssize_t rows, Py_ssize_t images,
                                     bint nhwc, floating* dummy) noexcept nogil:
    cdef BlockLayout b
    cdef Py_ssize_t tiles
    b.nhwc = nhwc
    b.rows = rows
    b.images = images
    b.tiles_h = (s.out_size[1] + 1) // 2
    b.tiles_w = (s.out_size[2] + 1) // 2
    b.c_ld = padded_channels(s.c_in, <floating*> NULL)
    b.k_ld = padded_channels(s.c_out, <floating*> NULL)
    b.x_rs = (2 * b.tiles_w + 2) * b.c_ld
    b.g_rs = 2 * b.tiles_w * b.k_ld
    tiles = images * rows * b.tiles_w
    b.x_es = odd_lines(tiles * b.c_ld, <floating*> NULL)
    b.g_es = odd_lines(tiles * b.k_ld, <floating*> NULL)
    b.x_rows = 0
    b.g_rows = b.x_rows + (2 * rows + 2) * b.x_rs
    b.x_tiles = b.g_rows + 2 * rows * b.g_rs
    # the micro-kernel reads whole vectors past B's last column and all MR rows of A's last
    # column: a tile's width of slack after each
    b.g_tiles = b.x_tiles + ELEMENTS_F23 * b.x_es + tile_nr(TILE_WIDE, <floating*> NULL)
    b.elements = b.g_tiles + ELEMENTS_F23 * b.g_es + max(tile_mr(TILE_WIDE),
                                                          tile_mr(TILE_NARROW))
    return b


cdef void clear_block_borders(const ConvShape* s, const BlockLayout* b,
                              floating* buffer) noexcept nogil:
    """Zero the columns outside the planes and the lanes past the channels in every row of
    the channels-last copies: the same for every unit, never written by them."""
    cdef Py_ssize_t W = s.in_size[2], OW = s.out_size[2], pad_w = s.pad[2]
    cdef Py_ssize_t r, q, w
    cdef floating* row
    for r in range(2 * b.rows + 2):
        row = buffer + b.x_rows + r * b.x_rs
        for q in range(2 * b.tiles_w + 2):
            w = q - pad_w
            if w < 0 or w >= W:
                memset(row + q * b.c_ld, 0, b.c_ld * sizeof(floating))
            else:
                memset(row + q * b.c_ld + s.c_in, 0, (b.c_ld - s.c_in) * sizeof(floating))
    for r in range(2 * b.rows):
        row = buffer + b.g_rows + r * b.g_rs
        for q in range(2 * b.tiles_w):
            if q >= OW:
                memset(row + q * b.k_ld, 0, b.k_ld * sizeof(floating))
            else:
                memset(row + q * b.k_ld + s.c_out, 0, (b.k_ld - s.c_out) * sizeof(floating))


cdef void channels_last_rows(const floating* image, bint nhwc, Py_ssize_t channels,
                             Py_ssize_t channel_step, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t h0, Py_ssize_t rows, Py_ssize_t w0, floating* dst,
                             Py_ssize_t rs, Py_ssize_t ld) noexcept nogil:
    """Rows r < rows of dst: row h0 + r of an image of `channels` planes (H x W each,
    `channel_step` elements apart from `image`; with `nhwc` channels-last, H x W x channels),
    element (r, w0 + w, c) at dst[r * rs + (w0 + w) * ld + c]; a row outside the image all
    zero (w0 columns before each row are left as they are)."""
    cdef Py_ssize_t r, h, w
    cdef const floating* src
    for r in range(rows):
        h = h0 + r
        if h < 0 or h >= H:
            memset(dst + r * rs, 0, rs * sizeof(floating))
        elif not nhwc:
            transpose_block(image + h * W, channel_step, dst + r * rs + w0 * ld, ld, channels,
                            W)
        elif ld == channels:
            memcpy(dst + r * rs + w0 * ld, image + h * W * channels,
                   W * channels * sizeof(floating))
        else:
            src = image + h * W * channels
            for w in range(W):
                memcpy(dst + r * rs + (w0 + w) * ld, src + w * channels,
                       channels * sizeof(floating))


cdef void gradient_block(const floating* x, const floating* g, const ConvShape* s,
                         const BlockLayout* b, const SliceMap* map, Py_ssize_t n0,
                         Py_ssize_t images, Py_ssize_t th0, Py_ssize_t th1, floating* buffer,
                         int shape, floating* m) noexcept nogil:
    """m[e, k, c] += the sum over the tiles of rows [th0, th1) of block images n0.. n0 +
    images - 1 (`map`) of (A dY A^T)[e] of output channel k times (B^T d B)[e] of input
    channel c: one GEMM over all of them (a 7x7 plane's 16 tiles alone would read and write
    the products for a few multiply-adds each)."""
    cdef Py_ssize_t H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t C = s.c_in, K = s.c_out
    cdef Py_ssize_t rows = th1 - th0, per_image = (th1 - th0) * b.tiles_w
    cdef Py_ssize_t T = images * per_image
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef floating* xt = buffer + b.x_tiles
    cdef floating* gt = buffer + b.g_tiles
    cdef Py_ssize_t e, m0, j0, i, n
    for i in range(images):
        n = n0 + i
        # the input rows 2 th0 - pad_h.. (zero padding: the columns before the plane, pad_w
        # of them, and after it were cleared once)
        channels_last_rows(slice_plane(x, map, n, True, b.nhwc, C, H * W), b.nhwc, C,
                           map.x_depth * H * W, H, W, 2 * th0 - s.pad[1], 2 * rows + 2,
                           s.pad[2], buffer + b.x_rows, b.x_rs, b.c_ld)
        channels_last_rows(slice_plane(g, map, n, False, b.nhwc, K, OH * OW), b.nhwc, K,
                           map.g_depth * OH * OW, OH, OW, 2 * th0, 2 * rows, 0,
                           buffer + b.g_rows, b.g_rs, b.k_ld)
        if floating is float:
            fc_wino2_input_cl_f32(buffer + b.x_rows, b.x_rs, b.c_ld, rows, b.tiles_w, C,
                                  xt + i * per_image * b.c_ld, b.x_es)
            fc_wino2_gradient_cl_f32(buffer + b.g_rows, b.g_rs, b.k_ld, rows, b.tiles_w, K,
                                     gt + i * per_image * b.k_ld, b.g_es)
        else:
            fc_wino2_input_cl_f64(buffer + b.x_rows, b.x_rs, b.c_ld, rows, b.tiles_w, C,
                                  xt + i * per_image * b.c_ld, b.x_es)
            fc_wino2_gradient_cl_f64(buffer + b.g_rows, b.g_rs, b.k_ld, rows, b.tiles_w, K,
                                     gt + i * per_image * b.k_ld, b.g_es)
    for e in range(ELEMENTS_F23):
        m0 = 0
        while m0 < K:
            j0 = 0
            while j0 < C:
                gemm_tile(shape, T, gt + e * b.g_es + m0, -b.k_ld, xt + e * b.x_es + j0, b.c_ld,
                          NULL, m + (e * K + m0) * C + j0, C, min(MR, K - m0), min(NR, C - j0),
                          NULL, True)
                j0 = j0 + NR
            m0 = m0 + MR


cdef int winograd_weight_grad_blocks(const floating* x, const floating* g, floating* dw,
                                     Py_ssize_t filter_step, const ConvShape* s,
                                     const SliceMap* map, Py_ssize_t rows_per_block,
                                     Py_ssize_t images_per_unit, bint nhwc,
                                     Py_ssize_t chunks, floating* partial,
                                     int num_threads) noexcept nogil:
    """dw[(k * C_in + c) * filter_step + t] := tap t < 9 of the 2-d weight gradient of output
    channel k, input channel c, over the s.n block images of `map`. 0, or 1 where a thread's
    buffer could not be allocated. partial: chunks x 16 x C_out x C_in elements."""
    cdef Py_ssize_t C = s.c_in, K = s.c_out
    cdef BlockLayout b = block_layout(s, rows_per_block, images_per_unit, nhwc,
                                      <floating*> NULL)
    cdef Py_ssize_t per_image = (b.tiles_h + rows_per_block - 1) // rows_per_block
    cdef Py_ssize_t units = (s.n + images_per_unit - 1) // images_per_unit * per_image
    cdef Py_ssize_t size = ELEMENTS_F23 * K * C
    cdef int shape = choose_tile(K, <floating*> NULL)
    cdef Py_ssize_t chunk, unit, th0, n0, i, j, t
    cdef floating* buffer = NULL
    cdef floating* mine
    cdef floating* total
    cdef int failed = 0
    cdef int* failed_flag = &failed
    with parallel(num_threads=num_threads):
        buffer = <floating*> fc_workspace(WS_GRADIENT_BLOCK, b.elements * sizeof(floating))
        if buffer == NULL:
            failed_flag[0] = 1
        else:
            clear_block_borders(s, &b, buffer)
        for chunk in prange(chunks, schedule='dynamic'):
            if buffer == NULL:
                continue
            mine = partial + chunk * size
            memset(mine, 0, size * sizeof(floating))
            for unit in range(units * chunk // chunks, units * (chunk + 1) // chunks):
                th0 = unit % per_image * rows_per_block
                n0 = unit // per_image * images_per_unit
                gradient_block(x, g, s, &b, map, n0, min(images_per_unit, s.n - n0), th0,
                               min(th0 + rows_per_block, b.tiles_h), buffer, shape, mine)
        # the chunks' products, once all are done, added to the first in chunk order
        fc_team_barrier()
        for i in prange(ELEMENTS_F23 * K, schedule='static'):
            if failed_flag[0] != 0:
                continue
            total = partial + i * C
            for t in range(1, chunks):
                for j in range(C):
                    total[j] = total[j] + partial[t * size + i * C + j]
    if failed:
        return 1
    for i in prange(K, num_threads=num_threads, schedule='static'):
        if floating is float:
            fc_wino2_filter_grad_f32(partial + i * C, K * C, C, dw + i * C * filter_step,
                                     filter_step)
        else:
            fc_wino2_filter_grad_f64(partial + i * C, K * C, C, dw + i * C * filter_step,
                                     filter_step)
    return 0


def weight_grad(int kernel, const floating[:, :, :, :, ::1] x,
                const floating[:, :, :, :, ::1] g,
                floating[:, :, :, :, ::1] dw, tuple pad, Py_ssize_t groups,
                Py_ssize_t images_per_chunk, floating[::1] xhat, floating[::1] ghat,
                floating[::1] products, int num_threads):
    """`kernel` WEIGHT_GRAD_WINOGRAD: dw := the weight gradient of the (KD, 3, 3), stride-1
    convolution of x (N, C_in, D, H, W) with zero padding `pad` (before each axis) for output
    gradient g, by Winograd F(2x2, 3x3) for each depth tap, the images in chunks of
    `images_per_chunk`. Scratch: xhat and ghat of at least GRADIENT_ELEMENTS x C_in (C_out) x
    gradient_capacity(...) elements, products of GRADIENT_ELEMENTS x KD x C_out x C_in /
    groups. Every read stays inside x and g whatever `pad` (tiles are clipped to the planes
    and depths they cover). The sums of a call do not depend on the thread count."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(dw.shape), shape5(g.shape),
                                  (1, 1, 1), pad, (1, 1, 1), groups)
    cdef Py_ssize_t capacity
    cdef int status
    if kernel != WEIGHT_GRAD_WINOGRAD:
        raise ValueError(f"conv_winograd.weight_grad does not run kernel {kernel}")
    if (s.kernel[1], s.kernel[2]) != (3, 3):
        raise ValueError(f"conv_winograd.weight_grad: (KD, 3, 3) kernels; got kernel "
                         f"{shape5(dw.shape)[2:]}")
    if groups < 1 or g.shape[0] != x.shape[0] or g.shape[1] != dw.shape[0] \
            or dw.shape[0] % groups or x.shape[1] != dw.shape[1] * groups:
        raise ValueError(f"conv_winograd.weight_grad: x (N, C_in, ...), g (N, C_out, ...) and "
                         f"dw (C_out, C_in / groups, ...) with groups dividing C_out; got "
                         f"{shape5(x.shape)}, {shape5(g.shape)}, {shape5(dw.shape)}, groups "
                         f"{groups}")
    if images_per_chunk < 1:
        raise ValueError(f"conv_winograd.weight_grad: images_per_chunk must be >= 1, got "
                         f"{images_per_chunk}")
    capacity = gradient_capacity(min(images_per_chunk, s.n), g.shape[3], g.shape[4],
                                 x.itemsize == 8, g.shape[2], x.shape[2])
    if capacity > INT_MAX or max(s.c_out_g, s.c_in_g) > INT_MAX:
        raise ValueError("conv_winograd.weight_grad: a GEMM dimension past BLAS's 32-bit sizes")
    if xhat.shape[0] < ELEMENTS_F23 * s.c_in * capacity \
            or ghat.shape[0] < ELEMENTS_F23 * s.c_out * capacity \
            or products.shape[0] < ELEMENTS_F23 * s.kernel[0] * s.c_out * s.c_in_g:
        raise ValueError("conv_winograd.weight_grad: scratch arrays too small")
    if dw.size == 0:
        return
    if s.n == 0 or g.shape[2] == 0 or g.shape[3] == 0 or g.shape[4] == 0:
        dw[...] = 0
        return
    with nogil:
        status = winograd_weight_grad(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0],
                                      &dw[0, 0, 0, 0, 0], &s, images_per_chunk, &xhat[0],
                                      &ghat[0], &products[0], capacity, num_threads)
    if status:
        raise MemoryError("fastconv: could not allocate the weight gradient's transform buffer")


def weight_grad_blocks(int kernel, const floating[:, :, :, :, ::1] x,
                       const floating[:, :, :, :, ::1] g, floating[:, :, :, :, ::1] dw,
                       tuple pad, Py_ssize_t rows_per_block, Py_ssize_t images_per_unit,
                       Py_ssize_t chunks, floating[::1] partial, int num_threads,
                       bint channels_last=False):
    """`kernel` WEIGHT_GRAD_WINOGRAD, one group: dw := the weight gradient of the 3x3 (in 3-d
    KD x 3 x 3), stride-1 convolution of x (N, C_in, D, H, W) with zero padding `pad` for
    output gradient g (N, C_out, OD, OH, OW), by Winograd F(2x2, 3x3) in work units of
    `rows_per_block` rows of tiles of `images_per_unit` planes, summed in `chunks` partial
    products (scratch `partial`: chunks x 16 x C_out x C_in elements). In 3-d each depth tap
    kd is such a 2-d gradient over the planes of g whose input plane (od + kd - pad[0]) lies
    inside x, every image's taken in turn as the units' planes, the taps one after another
    (reusing `partial`). With `channels_last`, x and g are (N, D, H, W, C) arrays, read where
    they lie. The sums depend on the units and chunks, not on the layout or the thread
    count."""
    cdef tuple x_shape = shape5(x.shape), g_shape = shape5(g.shape), dw_shape = shape5(dw.shape)
    if channels_last:       # (N, D, H, W, C) -> the (N, C, D, H, W) the checks read
        x_shape = (x_shape[0], x_shape[4]) + x_shape[1:4]
        g_shape = (g_shape[0], g_shape[4]) + g_shape[1:4]
    cdef Py_ssize_t n = x_shape[0], depth = x_shape[2], out_depth = g_shape[2]
    cdef Py_ssize_t taps = dw_shape[2], tiles_h = (g_shape[3] + 1) // 2, pad_d
    cdef Py_ssize_t kd, lo, hi, slices, rows, images, units, i, c
    cdef ConvShape s
    cdef SliceMap map
    cdef floating* dw_tap
    cdef int status
    if kernel != WEIGHT_GRAD_WINOGRAD:
        raise ValueError(f"conv_winograd.weight_grad_blocks does not run kernel {kernel}")
    if dw_shape[3:] != (3, 3) or taps < 1:
        raise ValueError(f"conv_winograd.weight_grad_blocks: 3x3 kernels (in 3-d KD x 3 x 3); "
                         f"got dw {dw_shape}")
    if g_shape[0] != n or g_shape[1] != dw_shape[0] or x_shape[1] != dw_shape[1]:
        raise ValueError(f"conv_winograd.weight_grad_blocks: x (N, C_in, ...), g (N, C_out, "
                         f"...) and dw (C_out, C_in, ...); got {x_shape}, {g_shape}, "
                         f"{dw_shape}")
    if len(pad) != 3 or pad[0] < 0 or pad[1] < 0 or pad[2] < 0 \
            or pad[2] + x_shape[4] > 2 * ((g_shape[4] + 1) // 2) + 2 \
            or pad[0] + depth > out_depth + taps - 1:
        raise ValueError(f"conv_winograd.weight_grad_blocks: padding before each axis (3 of "
                         f"them) >= 0, an output gradient as wide as the padded input less 2 "
                         f"and as deep as it less KD - 1; got pad {pad}, x {x_shape}, g "
                         f"{g_shape}, dw {dw_shape}")
    if rows_per_block < 1 or images_per_unit < 1 or chunks < 1:
        raise ValueError(f"conv_winograd.weight_grad_blocks: rows_per_block, images_per_unit "
                         f"and chunks must be >= 1, got {rows_per_block}, {images_per_unit} "
                         f"and {chunks}")
    if partial.shape[0] < chunks * ELEMENTS_F23 * dw_shape[0] * dw_shape[1]:
        raise ValueError("conv_winograd.weight_grad_blocks: partial too small")
    if dw.size == 0:
        return
    if n == 0 or out_depth == 0 or g_shape[3] == 0 or g_shape[4] == 0:
        dw[...] = 0
        return
    pad_d = pad[0]
    for kd in range(taps):
        # the gradient's planes [lo, hi) read input planes od + kd - pad_d inside x
        lo = max(0, pad_d - kd)
        hi = min(out_depth, depth + pad_d - kd)
        if hi <= lo:        # every plane of this tap's reads is padding
            for i in range(dw_shape[0]):
                for c in range(dw_shape[1]):
                    memset(&dw[i, c, kd, 0, 0], 0, 9 * sizeof(floating))
            continue
        slices = hi - lo
        s = make_shape((n * slices, x_shape[1], 1) + x_shape[3:],
                       (dw_shape[0], dw_shape[1], 1, 3, 3),
                       (n * slices, g_shape[1], 1) + g_shape[3:], (1, 1, 1),
                       (0, pad[1], pad[2]), (1, 1, 1), 1)
        map.slices, map.x_first, map.g_first = slices, lo + kd - pad_d, lo
        map.x_depth, map.g_depth = depth, out_depth
        rows = min(rows_per_block, tiles_h)
        images = min(images_per_unit, s.n)
        units = (s.n + images - 1) // images * ((tiles_h + rows - 1) // rows)
        dw_tap = &dw[0, 0, 0, 0, 0] + kd * 9
        with nogil:
            status = winograd_weight_grad_blocks(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0], dw_tap,
                                                 taps * 9, &s, &map, rows, images,
                                                 channels_last, min(chunks, units), &partial[0],
                                                 num_threads)
        if status:
            raise MemoryError("fastconv: could not allocate the weight gradient's block "
                              "buffers")


def gradient_capacity(Py_ssize_t images, Py_ssize_t out_h, Py_ssize_t out_w,
                      bint double_precision, Py_ssize_t out_d=1, Py_ssize_t in_d=1):
    """Tiles a chunk of `images` holds of each channel in the weight gradient's scratch: its
    images' tiles over max(in_d, out_d) depth slices (the input's D, the gradient's D_out), in
    whole vectors."""
    cdef Py_ssize_t L = lanes(<double*> NULL) if double_precision else lanes(<float*> NULL)
    cdef Py_ssize_t per_slice = ((out_h + 1) // 2) * ((out_w + 1) // 2)
    cdef Py_ssize_t tiles = images * max(out_d, in_d) * per_slice
    return (tiles + L - 1) // L * L
