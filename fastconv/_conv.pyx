# cython: language_level=3
"""Convolution (cross-correlation) kernels: direct loops, im2col + GEMM, 1x1 as GEMM.

One kernel per algorithm serves 1d, 2d and 3d (see _conv.pxd) and float32/float64 through
the fused type `floating`. The Python layer validates everything and pads non-zero padding
modes beforehand; these kernels trust their inputs and only ever pad with zeros, implicitly.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy

from fastconv._blas cimport gemm


cdef ConvShape make_shape(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride,
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
    """[lo, hi): the outputs o with 0 <= o * stride + offset < in_len (the rest read padding)."""
    cdef Py_ssize_t last = in_len - 1 - offset
    lo[0] = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi[0] = 0 if last < 0 else last // stride + 1
    if hi[0] > out_len:
        hi[0] = out_len
    if hi[0] < lo[0]:
        hi[0] = lo[0]


# ---------------------------------------------------------------------------------------------
# direct: one output row (fixed n, c_out, od, oh) at a time, accumulated tap by tap.
# Best when the GEMM would be thin: few channels per group, depthwise, single-channel images.

cdef void direct_row(const floating* x, const floating* w, const floating* bias,
                     floating* out, const ConvShape* s, Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t oh = row % OH, t = row // OH
    cdef Py_ssize_t od = t % OD
    t = t // OD
    cdef Py_ssize_t co = t % s.c_out, n = t // s.c_out
    cdef Py_ssize_t g = co // s.c_out_g
    cdef floating* out_row = out + row * OW
    cdef const floating* x_c
    cdef const floating* x_row
    cdef const floating* w_c
    cdef floating wv
    cdef floating b = bias[co] if bias != NULL else 0
    cdef Py_ssize_t ci, kd, kh, kw, i_d, i_h, off, lo, hi, o

    for o in range(OW):
        out_row[o] = b
    for ci in range(s.c_in_g):
        x_c = x + (n * s.c_in + g * s.c_in_g + ci) * D * H * W
        w_c = w + (co * s.c_in_g + ci) * KD * KH * KW
        for kd in range(KD):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            if i_d < 0 or i_d >= D:
                continue
            for kh in range(KH):
                i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
                if i_h < 0 or i_h >= H:
                    continue
                x_row = x_c + (i_d * H + i_h) * W
                for kw in range(KW):
                    wv = w_c[(kd * KH + kh) * KW + kw]
                    off = kw * s.dilation[2] - s.pad[2]
                    output_range(off, sw, W, OW, &lo, &hi)
                    if sw == 1:
                        # unit stride: a contiguous axpy the compiler vectorizes
                        for o in range(lo, hi):
                            out_row[o] += wv * x_row[o + off]
                    else:
                        for o in range(lo, hi):
                            out_row[o] += wv * x_row[o * sw + off]


cdef int conv_direct(const floating* x, const floating* w, const floating* bias,
                     floating* out, const ConvShape* s, int num_threads) noexcept nogil:
    cdef Py_ssize_t rows = s.n * s.c_out * s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t row
    for row in prange(rows, num_threads=num_threads, schedule='static'):
        direct_row(x, w, bias, out, s, row)
    return 0


# ---------------------------------------------------------------------------------------------
# im2col + GEMM, blocked: each work item (image, group, band of output rows) unfolds only its
# band into a thread-private buffer sized for the cache, then one single-threaded GEMM writes
# the band of every output channel of the group. The full im2col matrix never exists.

cdef void im2col_rows(const floating* x_g, const ConvShape* s, Py_ssize_t row_begin,
                      Py_ssize_t row_end, floating* col) noexcept nogil:
    """col[k, j] = x_g[c, d, h, w] read by tap k = (c, kd, kh, kw) at output position j of the
    band of output rows [row_begin, row_end) (a row is a fixed (od, oh)); zero where padding."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t band = (row_end - row_begin) * OW
    cdef Py_ssize_t taps = KD * KH * KW
    cdef Py_ssize_t k, c, tap, kd, kh, kw, r, od, oh, i_d, i_h, off, lo, hi, o
    cdef Py_ssize_t od_first = row_begin // OH, oh_first = row_begin % OH
    cdef const floating* x_row
    cdef floating* dst
    for k in range(s.c_in_g * taps):
        c = k // taps
        tap = k % taps
        kd = tap // (KH * KW)
        kh = (tap // KW) % KH
        kw = tap % KW
        off = kw * s.dilation[2] - s.pad[2]
        output_range(off, sw, W, OW, &lo, &hi)
        dst = col + k * band
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
    cdef const floating* x_g
    cdef const floating* operand
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef floating beta

    with parallel(num_threads=num_threads):
        if not pointwise:
            col = <floating*> malloc(K * band_rows * OW * sizeof(floating))
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
            x_g = x + (n * s.c_in + g * s.c_in_g) * in_plane
            if pointwise:
                operand = x_g + r0 * OW
            else:
                im2col_rows(x_g, s, r0, r1, col)
                operand = col
            out_block = out + (n * s.c_out + g * s.c_out_g) * out_plane + r0 * OW
            beta = 0
            if bias != NULL:
                fill_bias(out_block, bias + g * s.c_out_g, s.c_out_g, cols, out_plane)
                beta = 1
            gemm(False, False, <int> s.c_out_g, <int> cols, <int> K, <floating> 1,
                 w + g * s.c_out_g * K, <int> K, operand,
                 <int> (in_plane if pointwise else cols), beta, out_block, <int> out_plane)
        free(col)
    return failed


# ---------------------------------------------------------------------------------------------
# Entry point from Python: 5-d C-contiguous arrays, already validated by fastconv/convolution.py.

def conv_forward(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] w,
                 const floating[::1] bias, floating[:, :, :, :, ::1] out,
                 tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                 str algorithm, Py_ssize_t band_rows, int num_threads):
    """out := conv(x, w) + bias with zero padding `pad` before each axis, by `algorithm`."""
    cdef ConvShape s = make_shape(tuple([x.shape[i] for i in range(5)]), tuple([w.shape[i] for i in range(5)]),
                                  tuple([out.shape[i] for i in range(5)]),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    cdef int kind = {"direct": 0, "im2col": 1, "gemm1x1": 2}[algorithm]
    if out.shape[0] == 0:
        return
    with nogil:
        if kind == 0:
            status = conv_direct(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                 &out[0, 0, 0, 0, 0], &s, num_threads)
        else:
            status = conv_gemm(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                               &out[0, 0, 0, 0, 0], &s, kind == 2, band_rows, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate the im2col work buffer")
