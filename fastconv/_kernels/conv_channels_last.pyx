# cython: language_level=3
"""2-d convolution of channels-last (NHWC) arrays, output channels-last: the memory format
PyTorch calls ``channels_last`` and JAX / TensorFlow use by default.

- ``conv_gemm_nhwc`` (groups == 1): the output's pixels are the rows of a GEMM,
  out (pixels, C_out) = patches (pixels, KH * KW * C_in) @ W (KH * KW * C_in, C_out). A
  patch row is KH * KW runs of C_in contiguous channels, copied as they lie; a 1x1 stride-1
  convolution without padding needs no copy at all (the input is the operand). Blocks of
  pixels run in parallel, each its own single-threaded BLAS GEMM.
- ``conv_depthwise_nhwc`` (groups == C_in == C_out): for each output pixel, each tap adds
  w[tap, :] * x[pixel, :] over the contiguous channels, which the compiler vectorizes.

Kernels trust their inputs: the Python layer (fastconv/_ops/conv.py) checked the call.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from fastconv._core cimport blas_local_threads
from fastconv._kernels.blas cimport gemm, hold_blas_single_threaded, release_blas


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


cdef inline void fill_patches(const floating* x, const NHWCShape* s, Py_ssize_t p0,
                              Py_ssize_t count, floating* patches) noexcept nogil:
    """patches[i] := the receptive field of output pixel p0 + i: KH * KW runs of C channels
    (zeros where the tap falls in the padding)."""
    cdef Py_ssize_t i, p, n, oh, ow, kh, kw, ih, iw
    cdef Py_ssize_t K = s.KH * s.KW * s.C
    cdef floating* row
    for i in range(count):
        p = p0 + i
        ow = p % s.OW
        oh = (p // s.OW) % s.OH
        n = p // (s.OW * s.OH)
        row = patches + i * K
        for kh in range(s.KH):
            ih = oh * s.sh - s.ph + kh * s.dh
            iw = ow * s.sw - s.pw
            if s.dw == 1 and 0 <= ih < s.H and iw >= 0 and iw + s.KW <= s.W:
                # the row of taps lies inside: one run of KW * C elements (a 3-channel stem
                # would otherwise copy 12 bytes at a time)
                memcpy(row, x + ((n * s.H + ih) * s.W + iw) * s.C,
                       s.KW * s.C * sizeof(floating))
                row += s.KW * s.C
                continue
            for kw in range(s.KW):
                iw = ow * s.sw - s.pw + kw * s.dw
                if 0 <= ih < s.H and 0 <= iw < s.W:
                    memcpy(row, x + ((n * s.H + ih) * s.W + iw) * s.C, s.C * sizeof(floating))
                else:
                    memset(row, 0, s.C * sizeof(floating))
                row += s.C


def conv_gemm_nhwc(const floating[:, :, :, ::1] x, const floating[:, ::1] w,
                   const floating[::1] bias, floating[:, :, :, ::1] out, tuple kernel,
                   tuple stride, tuple padding, tuple dilation, Py_ssize_t block,
                   int num_threads):
    """out (N, OH, OW, C_out) := conv(x (N, H, W, C), w (KH * KW * C, C_out) in (kh, kw, c)
    row order) + bias (C_out, or empty); `block`: output pixels per GEMM."""
    cdef NHWCShape s = make_shape(x.shape, out.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t K = s.KH * s.KW * s.C
    cdef Py_ssize_t pixels = s.N * s.OH * s.OW
    cdef Py_ssize_t blocks = (pixels + block - 1) // block
    cdef bint pointwise = (s.KH == 1 and s.KW == 1 and s.sh == 1 and s.sw == 1 and s.ph == 0
                           and s.pw == 0)
    cdef bint with_bias = bias.shape[0] > 0
    cdef Py_ssize_t b, p0, count, i
    cdef floating* patches = NULL
    cdef const floating* operand
    cdef floating* out_rows
    cdef floating beta
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    cdef int blas_threads_before
    if pixels == 0 or s.C_out == 0 or K == 0:     # the Python layer keeps these
        return
    with nogil, parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
        if not pointwise:
            patches = <floating*> malloc(block * K * sizeof(floating))
            if patches == NULL:
                failed_flag[0] = 1
        for b in prange(blocks, schedule='dynamic'):
            if not pointwise and patches == NULL:
                continue
            p0 = b * block
            count = pixels - p0 if pixels - p0 < block else block
            if pointwise:
                operand = &x[0, 0, 0, 0] + p0 * s.C
            else:
                fill_patches(&x[0, 0, 0, 0], &s, p0, count, patches)
                operand = patches
            out_rows = &out[0, 0, 0, 0] + p0 * s.C_out
            beta = 0
            if with_bias:
                for i in range(count):
                    memcpy(out_rows + i * s.C_out, &bias[0], s.C_out * sizeof(floating))
                beta = 1
            gemm(False, False, <int> count, <int> s.C_out, <int> K, <floating> 1, operand,
                 <int> K, &w[0, 0], <int> s.C_out, beta, out_rows, <int> s.C_out)
        free(patches)
        release_blas(blas_local_threads(), blas_threads_before)
    if failed:
        raise MemoryError("fastconv: could not allocate the channels-last patch buffers")


cdef void depthwise_rows(const floating* x, const floating* w, const floating* bias,
                         floating* out, const NHWCShape* s, Py_ssize_t r0,
                         Py_ssize_t r1) noexcept nogil:
    """Output rows r0..r1-1 (row = n * OH + oh) of a depthwise convolution: each tap adds
    w[tap, c] * x[pixel, c] over the contiguous channels c."""
    cdef Py_ssize_t r, n, oh, ow, kh, kw, ih, iw, c, C = s.C
    cdef floating* acc
    cdef const floating* xp
    cdef const floating* wp
    for r in range(r0, r1):
        n = r // s.OH
        oh = r - n * s.OH
        for ow in range(s.OW):
            acc = out + (r * s.OW + ow) * C
            if bias != NULL:
                for c in range(C):
                    acc[c] = bias[c]
            else:
                for c in range(C):
                    acc[c] = 0
            for kh in range(s.KH):
                ih = oh * s.sh - s.ph + kh * s.dh
                if ih < 0 or ih >= s.H:
                    continue
                for kw in range(s.KW):
                    iw = ow * s.sw - s.pw + kw * s.dw
                    if iw < 0 or iw >= s.W:
                        continue
                    xp = x + ((n * s.H + ih) * s.W + iw) * C
                    wp = w + (kh * s.KW + kw) * C
                    for c in range(C):
                        acc[c] += wp[c] * xp[c]


def conv_depthwise_nhwc(const floating[:, :, :, ::1] x, const floating[:, ::1] w,
                        const floating[::1] bias, floating[:, :, :, ::1] out, tuple kernel,
                        tuple stride, tuple padding, tuple dilation, int num_threads):
    """out (N, OH, OW, C) := depthwise conv(x (N, H, W, C), w (KH * KW, C)) + bias."""
    cdef NHWCShape s = make_shape(x.shape, out.shape, kernel, stride, padding, dilation)
    cdef Py_ssize_t rows = s.N * s.OH
    cdef Py_ssize_t pieces = num_threads * 8 if rows > num_threads * 8 else rows
    cdef Py_ssize_t piece
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    if rows == 0 or s.OW == 0 or s.C == 0:
        return
    with nogil:
        for piece in prange(pieces, num_threads=num_threads, schedule='dynamic'):
            depthwise_rows(&x[0, 0, 0, 0], &w[0, 0], b, &out[0, 0, 0, 0], &s,
                           piece * rows // pieces, (piece + 1) * rows // pieces)
