# cython: language_level=3
"""fastconv's own packed GEMM on its register-blocked micro-kernel (gemm_microkernel.h): the
register-tile geometry, packing of A (weights or any matrix) and B panels, and the product
of one tile of positions. Shared by the packed forward (conv_packed.pyx), the phase grid
(conv_phase_grid.pyx) and the micro-kernel variants of col2im and of the weight gradient
(conv_im2col.pyx).

The packed layout: im2col writes straight into the panel layout of the micro-kernel, instead
of a row-major matrix that a BLAS would pack again. Every output is one complete sum over the
taps in a fixed order, so the result does not depend on the tiling or the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels.conv_shape cimport ConvShape

cdef extern from "transpose_tiles.h":
    void fc_transpose_f32(const float* src, Py_ssize_t src_stride, float* dst,
                          Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
    void fc_transpose_f64(const double* src, Py_ssize_t src_stride, double* dst,
                          Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil

cdef extern from "gemm_microkernel.h":
    int FC_GEMM_MR
    int FC_GEMM_MR_NARROW
    int FC_NR_f32
    int FC_NR_f64
    int FC_NR_NARROW_f32
    int FC_NR_NARROW_f64
    int FC_GEMM_MR_MIXED
    int FC_NR_MIXED_f32
    int FC_NR_MIXED_f64
    int FC_VEC_f32
    int FC_VEC_f64
    void fc_gemm_f32(int shape, Py_ssize_t k_len, const float* a, Py_ssize_t lda,
                     const float* b, Py_ssize_t b_stride, const Py_ssize_t* offsets, float* c,
                     Py_ssize_t ldc,
                     Py_ssize_t m_valid, Py_ssize_t n_valid, const float* bias,
                     int accumulate) noexcept nogil
    void fc_gemm_f64(int shape, Py_ssize_t k_len, const double* a, Py_ssize_t lda,
                     const double* b, Py_ssize_t b_stride, const Py_ssize_t* offsets, double* c,
                     Py_ssize_t ldc,
                     Py_ssize_t m_valid, Py_ssize_t n_valid, const double* bias,
                     int accumulate) noexcept nogil
    void fc_gemm_rows_f32(int shape, Py_ssize_t k_len, const float* const* a_rows,
                          const Py_ssize_t* a_offsets, const float* b, Py_ssize_t b_stride,
                          float* c, Py_ssize_t ldc, Py_ssize_t m_valid, Py_ssize_t n_valid,
                          const float* bias, int accumulate) noexcept nogil
    void fc_gemm_rows_f64(int shape, Py_ssize_t k_len, const double* const* a_rows,
                          const Py_ssize_t* a_offsets, const double* b, Py_ssize_t b_stride,
                          double* c, Py_ssize_t ldc, Py_ssize_t m_valid, Py_ssize_t n_valid,
                          const double* bias, int accumulate) noexcept nogil


cdef enum:
    # An A panel's K block (K_BLOCK x MR) of 12 KiB: with the matching B panel block it fits L1.
    K_BLOCK_BYTES = 12 * 1024
    # weights of fewer elements are packed on one thread (a team costs more)
    PACK_PARALLEL_ELEMENTS = 1 << 16
    # The micro-kernel's register-tile shapes (gemm_microkernel.h): 8 x 48, 12 x 32 and
    # 12 x 24 (a vector and a half one a row) with AVX-512 in float32.
    TILE_WIDE = 0
    TILE_NARROW = 1
    TILE_MIXED = 2




cdef inline Py_ssize_t vector_width(floating* dummy) noexcept nogil:
    """Elements of one vector register of the micro-kernels for this precision."""
    if floating is float:
        return FC_VEC_f32
    return FC_VEC_f64


cdef inline Py_ssize_t tile_mr(int shape) noexcept nogil:
    """Rows (output channels) of a register tile."""
    if shape == TILE_MIXED:
        return FC_GEMM_MR_MIXED
    return FC_GEMM_MR_NARROW if shape == TILE_NARROW else FC_GEMM_MR


cdef inline Py_ssize_t tile_nr(int shape, floating* dummy) noexcept nogil:
    """Columns (positions) of a register tile for this precision."""
    if floating is float:
        if shape == TILE_MIXED:
            return FC_NR_MIXED_f32
        return FC_NR_NARROW_f32 if shape == TILE_NARROW else FC_NR_f32
    if shape == TILE_MIXED:
        return FC_NR_MIXED_f64
    return FC_NR_NARROW_f64 if shape == TILE_NARROW else FC_NR_f64


cdef inline int choose_tile(Py_ssize_t M, floating* dummy) noexcept nogil:
    """The tile shape that wastes least on a product of M rows. Both shapes compute whole
    vectors of columns (a last panel goes to a tail kernel of fewer vectors), so the rows
    decide: M rounded up to whole tiles, the narrow shape's extra broadcasts costing it
    about 8%."""
    cdef Py_ssize_t mr_w = tile_mr(TILE_WIDE), mr_n = tile_mr(TILE_NARROW)
    cdef double wide = <double> ((M + mr_w - 1) // mr_w * mr_w)
    cdef double narrow = <double> ((M + mr_n - 1) // mr_n * mr_n)
    return TILE_NARROW if narrow * 1.08 < wide else TILE_WIDE



cdef inline void pack_weights(const floating* w, const ConvShape* s, floating* packed,
                              int shape, int num_threads, bint adjoint=False) noexcept nogil:
    """packed[g][panel][k][m] = w[g * c_out_g + panel * MR + m][k], zero past c_out_g (K =
    c_in_g x taps columns). With `adjoint` (a 1x1 input gradient: s describes the convolution
    of the output gradient into the input gradient, w is the forward layer's (C_out, C_in /
    groups)), the transpose: packed[g][panel][k][m] = w[g * K + k][panel * MR + m]. Reads run
    along w's rows either way. The (group, panel)s split among `num_threads` (a 512 x 512 x
    3 x 3 layer's 9 MB packed on one thread was a fifth of its batch-1 call, the other thread
    waiting)."""
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2], M = s.c_out_g
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t panels = (M + MR - 1) // MR
    cdef Py_ssize_t gp, g, panel, k, m, width
    cdef const floating* src
    cdef floating* dst
    cdef int threads = num_threads if s.groups * panels * K * MR >= PACK_PARALLEL_ELEMENTS \
        else 1
    for gp in prange(s.groups * panels, num_threads=threads, schedule='static'):
        g = gp // panels
        panel = gp - g * panels
        dst = packed + gp * K * MR
        width = M - panel * MR if M - panel * MR < MR else MR
        if adjoint:
            # row k of the forward weight holds the panel's MR filters side by side
            for k in range(K):
                src = w + (g * K + k) * M + panel * MR
                for m in range(width):
                    dst[k * MR + m] = src[m]
                for m in range(width, MR):
                    dst[k * MR + m] = 0
        else:
            # one filter at a time: contiguous reads of w, writes MR apart
            for m in range(MR):
                src = w + (g * M + panel * MR + m) * K
                if m < width:
                    for k in range(K):
                        dst[k * MR + m] = src[k]
                else:
                    for k in range(K):
                        dst[k * MR + m] = 0


cdef inline Py_ssize_t packed_weights_size(const ConvShape* s, int shape) noexcept nogil:
    """Elements of pack_weights' result for `s`: groups x c_out_g rounded up to whole
    panels of MR x K."""
    cdef Py_ssize_t MR = tile_mr(shape)
    return s.groups * ((s.c_out_g + MR - 1) // MR) * MR \
        * s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]


cdef inline const floating* prepacked_pointer(object packed, const ConvShape* s, int shape,
                                              const floating* like) except *:
    """The data of `packed` (weights packed beforehand, a 1-d array of the kernel's dtype,
    like `like`'s), or NULL for None (the kernel packs them itself). The caller holds
    `packed` while the kernel runs."""
    cdef const floating[::1] view
    if packed is None:
        return NULL
    view = packed
    if view.shape[0] != packed_weights_size(s, shape):
        raise ValueError(f"packed_weights: expected {packed_weights_size(s, shape)} "
                         f"elements for this layer and tile shape {shape}, got "
                         f"{view.shape[0]}")
    return &view[0]


cdef inline void transpose_block(const floating* src, Py_ssize_t src_stride, floating* dst,
                                 Py_ssize_t dst_stride, Py_ssize_t rows,
                                 Py_ssize_t cols) noexcept nogil:
    """dst[j * dst_stride + i] := src[i * src_stride + j] for i < rows, j < cols, through
    vector registers (transpose_tiles.h)."""
    if floating is float:
        fc_transpose_f32(src, src_stride, dst, dst_stride, rows, cols)
    else:
        fc_transpose_f64(src, src_stride, dst, dst_stride, rows, cols)


cdef inline void zero_columns(floating* panel, Py_ssize_t rows, Py_ssize_t width,
                              Py_ssize_t first) noexcept nogil:
    """panel[r * width + c] := 0 for c >= first, r < rows (a last panel's missing columns)."""
    cdef Py_ssize_t r, c
    for r in range(rows):
        for c in range(first, width):
            panel[r * width + c] = 0


cdef inline void pack_a_panels(const floating* src, Py_ssize_t row_stride,
                               Py_ssize_t col_stride, Py_ssize_t M, Py_ssize_t K,
                               floating* packed, int shape) noexcept nogil:
    """packed[panel][k][m] = A[panel * MR + m][k] with A[i][j] = src[i * row_stride +
    j * col_stride] (any layout, transposed included), zero past M: A in micro-kernel panels.
    Rows of A contiguous (col_stride 1): each panel is a transposed copy, through vector
    registers."""
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t panel, k, m, i, m_valid
    for panel in range((M + MR - 1) // MR):
        m_valid = M - panel * MR if M - panel * MR < MR else MR
        if col_stride == 1:
            transpose_block(src + panel * MR * row_stride, row_stride, packed + panel * K * MR,
                            MR, m_valid, K)
            if m_valid < MR:
                zero_columns(packed + panel * K * MR, K, MR, m_valid)
            continue
        for k in range(K):
            for m in range(MR):
                i = panel * MR + m
                packed[(panel * K + k) * MR + m] = src[i * row_stride + k * col_stride] \
                    if i < M else 0


cdef inline void pack_b_panels(const floating* src, Py_ssize_t row_stride,
                               Py_ssize_t col_stride, Py_ssize_t K, Py_ssize_t N,
                               Py_ssize_t NR, floating* packed) noexcept nogil:
    """packed[j][k][c] = B[k][j * NR + c] with B[k][n] = src[k * row_stride + n * col_stride]
    (any layout, transposed included), zero past N: B in micro-kernel panels. B's columns
    contiguous (row_stride 1, B^T's rows): each panel is a transposed copy, through vector
    registers (a channels-last weight's B panels, conv_channels_last.pack_panels)."""
    cdef Py_ssize_t j, k, c, width
    for j in range((N + NR - 1) // NR):
        width = N - j * NR if N - j * NR < NR else NR
        if row_stride == 1 and col_stride != 1:
            transpose_block(src + j * NR * col_stride, col_stride, packed + j * K * NR, NR,
                            width, K)
            if width < NR:
                zero_columns(packed + j * K * NR, K, NR, width)
            continue
        for k in range(K):
            if col_stride == 1:
                for c in range(width):
                    packed[(j * K + k) * NR + c] = src[k * row_stride + j * NR + c]
            else:
                for c in range(width):
                    packed[(j * K + k) * NR + c] = src[k * row_stride + (j * NR + c) * col_stride]
            for c in range(width, NR):
                packed[(j * K + k) * NR + c] = 0



cdef inline void gemm_tile(int shape, Py_ssize_t k_len, const floating* a, Py_ssize_t lda,
                           const floating* b, Py_ssize_t b_stride, const Py_ssize_t* offsets,
                           floating* c, Py_ssize_t ldc, Py_ssize_t m_valid, Py_ssize_t n_valid,
                           const floating* bias, bint accumulate) noexcept nogil:
    """The register tile `shape`, or for a last panel of fewer vectors its tail; A a packed
    panel (lda 0), rows lda apart where they lie, or columns -lda apart where they lie (lda <
    0) (gemm_microkernel.h)."""
    if floating is float:
        fc_gemm_f32(shape, k_len, a, lda, b, b_stride, offsets, c, ldc,
                    m_valid, n_valid, bias, accumulate)
    else:
        fc_gemm_f64(shape, k_len, a, lda, b, b_stride, offsets, c, ldc,
                    m_valid, n_valid, bias, accumulate)


cdef inline void gemm_rows_tile(int shape, Py_ssize_t k_len, const floating* const* a_rows,
                                const Py_ssize_t* a_offsets, const floating* b,
                                Py_ssize_t b_stride, floating* c, Py_ssize_t ldc,
                                Py_ssize_t m_valid, Py_ssize_t n_valid, const floating* bias,
                                bint accumulate) noexcept nogil:
    """gemm_tile with A read where it lies: A[m, k] = a_rows[m][a_offsets[k]]
    (gemm_microkernel.h)."""
    if floating is float:
        fc_gemm_rows_f32(shape, k_len, a_rows, a_offsets, b, b_stride, c, ldc,
                         m_valid, n_valid, bias, accumulate)
    else:
        fc_gemm_rows_f64(shape, k_len, a_rows, a_offsets, b, b_stride, c, ldc,
                         m_valid, n_valid, bias, accumulate)


cdef enum:
    # A GEMM whose A is a weight's transpose (an input gradient: A[c, o] = w[o, c]) reads it
    # where it lies when each A panel meets at most this many panels of positions (AMD Zen 4,
    # in one process: 2048 <-> 512 channels 1x1 on 7x7 and 256 <-> 1024 on 14x14 at batch 1,
    # 2 and 5 panels, 7-40% faster than packing it first; at batch 8, 9-33 panels, level
    # within 5% either way, and a packed copy is remembered for calls with the same weights).
    ADJOINT_IN_PLACE_MAX_PANELS = 8


cdef inline bint adjoint_in_place(Py_ssize_t rows, Py_ssize_t positions, Py_ssize_t MR,
                                  Py_ssize_t NR) noexcept nogil:
    """True if a product of a weight's transpose (`rows` rows: a group's input channels
    times taps) by `positions` columns reads that transpose where it lies (multiply_tile's
    a_stride < 0): whole panels of MR rows (a panel's MR values of one output channel lie
    side by side in the weight's row), few panels of NR positions to reuse each A panel
    over."""
    return rows % MR == 0 and positions <= ADJOINT_IN_PLACE_MAX_PANELS * NR


cdef inline const floating* group_panels(const floating* a, Py_ssize_t a_stride,
                                         const ConvShape* s, int shape,
                                         Py_ssize_t g, Py_ssize_t first_panel) noexcept nogil:
    """Where group g's weights start, from panel first_panel on, for multiply_tile: in
    pack_weights' panels (a_stride 0), or a layer's filters where they lie (a_stride > 0: the
    K taps of each output channel's filter, rows a_stride apart), or a 1x1 layer's weight
    where it lies, read as its transpose (a_stride < 0: pack_weights' adjoint operand, the
    group's K rows -a_stride apart)."""
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    if a_stride > 0:
        return a + (g * s.c_out_g + first_panel * MR) * a_stride
    if a_stride < 0:
        return a - g * K * a_stride + first_panel * MR
    return a + (g * ((s.c_out_g + MR - 1) // MR) + first_panel) * K * MR


cdef inline void multiply_tile(Py_ssize_t K, Py_ssize_t m_panels, Py_ssize_t channels,
                               Py_ssize_t count, Py_ssize_t NR, const floating* a_packed,
                               const floating* b_packed, floating* out, Py_ssize_t out_plane,
                               const floating* bias, bint accumulate,
                               int shape, const Py_ssize_t* b_offsets,
                               Py_ssize_t a_stride=0) noexcept nogil:
    """out[c, j] (+)= bias[c] + sum_k a[c, k] b[k, j] for one group's `channels` and `count`
    positions, K in blocks whose A and B panel slices stay in L1 while C accumulates. With
    `b_offsets`, B is read in place: b[k, j] = b_packed[b_offsets[k] + j]; with a_stride > 0,
    A too: a[c, k] = a_packed[c * a_stride + k] (a group's filters where they lie); with
    a_stride < 0 (and no b_offsets), a[c, k] = a_packed[k * -a_stride + c] (a weight's
    transpose where it lies; `channels` a whole number of panels)."""
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t k_block = K_BLOCK_BYTES // (MR * sizeof(floating))
    cdef Py_ssize_t k0, k_len, panel, j, m_valid, n_valid
    k0 = 0
    while k0 < K:
        k_len = K - k0 if K - k0 < k_block else k_block
        for panel in range(m_panels):
            m_valid = channels - panel * MR if channels - panel * MR < MR else MR
            for j in range((count + NR - 1) // NR):
                n_valid = count - j * NR if count - j * NR < NR else NR
                gemm_tile(shape, k_len, a_packed + panel * MR * a_stride + k0 if a_stride > 0
                          else a_packed + panel * MR - k0 * a_stride if a_stride < 0
                          else a_packed + panel * K * MR + k0 * MR, a_stride,
                          b_packed + j * NR if b_offsets != NULL
                          else b_packed + j * K * NR + k0 * NR, NR,
                          b_offsets + k0 if b_offsets != NULL else NULL,
                          out + panel * MR * out_plane + j * NR, out_plane, m_valid, n_valid,
                          bias + panel * MR if bias != NULL and k0 == 0 else NULL,
                          accumulate or k0 > 0)
        k0 += k_block


ctypedef struct PackedGeometry:
    Py_ssize_t MR, NR       # the register tile
    Py_ssize_t K            # GEMM depth: taps of one group
    Py_ssize_t out_plane, in_plane
    Py_ssize_t m_panels     # weight panels of MR output channels per group
    Py_ssize_t tile         # positions per tile: tile_panels panels of NR


cdef inline PackedGeometry packed_geometry(const ConvShape* s, int shape,
                                           Py_ssize_t tile_panels,
                                           floating* dummy) noexcept nogil:
    """The sizes every packed kernel starts from, for register tile `shape`."""
    cdef PackedGeometry geo
    geo.MR = tile_mr(shape)
    geo.NR = tile_nr(shape, dummy)
    geo.K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    geo.out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    geo.in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    geo.m_panels = (s.c_out_g + geo.MR - 1) // geo.MR
    geo.tile = tile_panels * geo.NR
    return geo
