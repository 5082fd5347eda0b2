# cython: language_level=3
"""Shared description of an N-d convolution problem for the compiled kernels.

Every problem is three-dimensional inside the kernels: a 1d or 2d convolution is a 3d one
with unit leading spatial dimensions. Arrays are C-contiguous:
x (n, c_in, D, H, W), w (c_out, c_in_g, KD, KH, KW), out (n, c_out, OD, OH, OW).
"""

ctypedef struct ConvShape:
    Py_ssize_t n, c_in, c_out, groups, c_in_g, c_out_g
    Py_ssize_t in_size[3]      # D, H, W
    Py_ssize_t kernel[3]       # KD, KH, KW
    Py_ssize_t out_size[3]     # OD, OH, OW
    Py_ssize_t stride[3]
    Py_ssize_t pad[3]          # zero padding before each axis (after-padding only sets out_size)
    Py_ssize_t dilation[3]


cdef inline ConvShape make_shape(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride,
                                 tuple pad, tuple dilation, Py_ssize_t groups) except *:
    cdef ConvShape s
    cdef int i
    s.n, s.c_in = x_shape[0], x_shape[1]
    s.c_out, s.c_in_g = w_shape[0], w_shape[1]
    s.groups = groups
    s.c_out_g = s.c_out // groups
    for i in range(3):
        s.in_size[i] = x_shape[2 + i]
        s.kernel[i] = w_shape[2 + i]
        s.out_size[i] = out_shape[2 + i]
        s.stride[i] = stride[i]
        s.pad[i] = pad[i]
        s.dilation[i] = dilation[i]
    return s


cdef inline void output_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t in_len,
                              Py_ssize_t out_len, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs o with 0 <= o * stride + offset < in_len (the rest read padding),
    within [0, out_len]: a caller may zero outputs [0, lo) and [hi, out_len)."""
    cdef Py_ssize_t last = in_len - 1 - offset
    lo[0] = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi[0] = 0 if last < 0 else last // stride + 1
    # a tap whose padding covers more than the whole output (padding past a short axis):
    # without the clamp, zeroing [0, lo) would write past the output row
    if lo[0] > out_len:
        lo[0] = out_len
    if hi[0] > out_len:
        hi[0] = out_len
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef inline void decode_tap(Py_ssize_t k, const ConvShape* s, Py_ssize_t* c, Py_ssize_t* kd,
                            Py_ssize_t* kh, Py_ssize_t* kw) noexcept nogil:
    """Row k of an unfolded matrix is input channel c (of the group) at tap (kd, kh, kw)."""
    cdef Py_ssize_t taps = s.kernel[0] * s.kernel[1] * s.kernel[2], tap = k % taps
    c[0] = k // taps
    kd[0] = tap // (s.kernel[1] * s.kernel[2])
    kh[0] = (tap // s.kernel[2]) % s.kernel[1]
    kw[0] = tap % s.kernel[2]


cdef inline tuple shape5(Py_ssize_t* shape):
    """The shape of a 5-d memoryview as a tuple."""
    return (shape[0], shape[1], shape[2], shape[3], shape[4])
