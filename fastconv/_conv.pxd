# cython: language_level=3
"""Shared description of an N-d convolution problem for the compiled kernels.

Every problem is three-dimensional inside the kernels: a 1d or 2d convolution is a 3d one
with unit leading spatial dimensions. Arrays are C-contiguous:
x (n, c_in, D, H, W), w (c_out, c_in_g, KD, KH, KW), out (n, c_out, OD, OH, OW).
"""
from cython cimport floating

ctypedef struct ConvShape:
    Py_ssize_t n, c_in, c_out, groups, c_in_g, c_out_g
    Py_ssize_t in_size[3]      # D, H, W
    Py_ssize_t kernel[3]       # KD, KH, KW
    Py_ssize_t out_size[3]     # OD, OH, OW
    Py_ssize_t stride[3]
    Py_ssize_t pad[3]          # zero padding before each axis (after-padding only sets out_size)
    Py_ssize_t dilation[3]

cdef ConvShape make_shape(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride,
                          tuple pad, tuple dilation, Py_ssize_t groups) except *

cdef void output_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t in_len,
                       Py_ssize_t out_len, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil

cdef void im2col_rows(const floating* x_g, const ConvShape* s, Py_ssize_t row_begin,
                      Py_ssize_t row_end, floating* col) noexcept nogil

cdef void pack_a_panels(const floating* src, Py_ssize_t row_stride, Py_ssize_t col_stride,
                        Py_ssize_t M, Py_ssize_t K, floating* packed, int shape=*) noexcept nogil

cdef void pack_b_panels(const floating* src, Py_ssize_t row_stride, Py_ssize_t col_stride,
                        Py_ssize_t K, Py_ssize_t N, Py_ssize_t NR,
                        floating* packed) noexcept nogil

cdef void multiply_tile(Py_ssize_t K, Py_ssize_t m_panels, Py_ssize_t channels,
                        Py_ssize_t count, Py_ssize_t NR, const floating* a_packed,
                        const floating* b_packed, floating* out, Py_ssize_t out_plane,
                        const floating* bias, bint accumulate=*, int shape=*,
                        const Py_ssize_t* b_offsets=*) noexcept nogil

cdef Py_ssize_t gemm_mr() noexcept nogil
cdef Py_ssize_t gemm_nr(floating* dummy) noexcept nogil
cdef Py_ssize_t vector_width(floating* dummy) noexcept nogil
cdef Py_ssize_t tile_mr(int shape) noexcept nogil
cdef Py_ssize_t tile_nr(int shape, floating* dummy) noexcept nogil
cdef int choose_tile(Py_ssize_t M, floating* dummy) noexcept nogil

cdef const floating* unfold_band(const floating* x_g, const ConvShape* s, Py_ssize_t r0,
                                 Py_ssize_t r1, bint pointwise, floating* col) noexcept nogil

# The stride-phase grid of the packed algorithm (_conv.pyx, conv_packed_phase): one (image,
# group) of the input, zero-padded and split by stride phase along every axis, so that the
# input read by tap k at output (od, oh, ow) is buffer[offset[k] + (od * q[1] + oh) * q[2] + ow]
ctypedef struct PhaseGrid:
    Py_ssize_t q[3]          # phase length along each axis: ceil(padded length / stride)
    Py_ssize_t plane         # q[0] * q[1] * q[2]: one phase of one input channel
    Py_ssize_t phase_stride  # from one phase plane to the next: `batch` planes, one per image
    Py_ssize_t positions     # extended positions covering every output
    Py_ssize_t slack         # zeroed elements past the last plane, for reads past the end
    Py_ssize_t size          # elements of the buffer, slack included

cdef void phase_grid(const ConvShape* s, Py_ssize_t slack, Py_ssize_t batch,
                     PhaseGrid* pg) noexcept nogil
cdef void clear_phase_grid(const PhaseGrid* pg, floating* buf) noexcept nogil
cdef void phase_offsets(const ConvShape* s, const PhaseGrid* pg,
                        Py_ssize_t* offsets) noexcept nogil
ctypedef struct PhaseRun:
    Py_ssize_t grid          # the run's first row in the phase grid (its phase r2 = 0 row)
    Py_ssize_t image         # its first input row in the image's (c_in_g, D, H, W) planes
    Py_ssize_t rows          # rows: s1 * W apart in the image, Q2 apart in the grid

cdef bint phase_run(const ConvShape* s, const PhaseGrid* pg, Py_ssize_t k,
                    PhaseRun* run) noexcept nogil
cdef Py_ssize_t phase_runs(const ConvShape* s, const PhaseGrid* pg) noexcept nogil
cdef void fill_phase_grid(const floating* x_g, const ConvShape* s, const PhaseGrid* pg,
                          floating* buf) noexcept nogil
