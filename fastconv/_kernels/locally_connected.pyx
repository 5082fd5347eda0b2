# cython: language_level=3
"""Locally connected layers (convolution without weight sharing): forward, input gradient and
weight gradient, as small BLAS GEMMs per output position.

Every problem is described by a ConvShape (conv_shape.pxd) with one group:
x (n, c_in, D, H, W), w (P, c_out, K) with P the output positions and K = c_in * taps,
out and g (n, c_out, OD, OH, OW). The Python layer validates everything; these kernels trust
their inputs.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memset

from fastconv._core cimport blas_local_threads
from fastconv._kernels.blas cimport gemm, hold_blas_single_threaded, release_blas
from fastconv._kernels.conv_shape cimport ConvShape, make_shape, shape5
from fastconv._kernels.workspace cimport fc_workspace

# Slots of the per-thread workspace (workspace.h): buffers reused from call to call.
cdef enum:
    WS_PATCHES, WS_POSITION


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
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
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
        release_blas(blas_local_threads(), blas_threads_before)
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
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
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
        release_blas(blas_local_threads(), blas_threads_before)
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
        blas_threads_before = hold_blas_single_threaded(blas_local_threads())
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
        release_blas(blas_local_threads(), blas_threads_before)
    return failed

# ---------------------------------------------------------------------------------------------
# Entry points from Python: 5-d C-contiguous arrays (1d and 2d problems with unit leading
# spatial axes), already validated by fastconv/locally_connected.py.

cdef int _raise_if(int status) except -1:
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")
    return 0


cdef ConvShape _local_shape(tuple x_shape, tuple out_shape, tuple kernel, tuple stride,
                            tuple pad, tuple dilation) except *:
    w_shape = (out_shape[1], x_shape[1]) + kernel
    return make_shape(x_shape, w_shape, out_shape, stride, pad, dilation, 1)


def forward(const floating[:, :, :, :, ::1] x, const floating[:, :, ::1] w,
            const floating[:, ::1] bias, floating[:, :, :, :, ::1] out, tuple kernel,
            tuple stride, tuple pad, tuple dilation, int num_threads):
    """out := locally connected layer of x with w (P, C_out, K) and bias (C_out, P) or empty."""
    cdef ConvShape s = _local_shape(shape5(x.shape), shape5(out.shape), kernel, stride, pad,
                                    dilation)
    cdef const floating* bias_ptr = &bias[0, 0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    with nogil:
        status = locally_connected_forward_kernel(&x[0, 0, 0, 0, 0], &w[0, 0, 0], bias_ptr,
                                                  &out[0, 0, 0, 0, 0], &s, num_threads)
    _raise_if(status)


def input_grad(const floating[:, :, :, :, ::1] g, const floating[:, :, ::1] w,
               floating[:, :, :, :, ::1] dx, tuple kernel, tuple stride, tuple pad,
               tuple dilation, int num_threads):
    """dx := the input gradient of the locally connected layer for output gradient g."""
    cdef ConvShape s = _local_shape(shape5(dx.shape), shape5(g.shape), kernel, stride, pad,
                                    dilation)
    # whole images per work item, as many items as threads (batch 1 runs on one thread)
    cdef Py_ssize_t images_per_item = min((s.n + num_threads - 1) // num_threads, IMAGE_BLOCK)
    cdef int status = 0
    with nogil:
        status = locally_connected_input_grad_kernel(&g[0, 0, 0, 0, 0], &w[0, 0, 0],
                                                     &dx[0, 0, 0, 0, 0], &s, images_per_item,
                                                     num_threads)
    _raise_if(status)


def weight_grad(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] g,
                floating[:, :, ::1] dw, tuple kernel, tuple stride, tuple pad,
                tuple dilation, int num_threads):
    """dw := the weight gradient (P, C_out, K) of the locally connected layer."""
    cdef ConvShape s = _local_shape(shape5(x.shape), shape5(g.shape), kernel, stride, pad,
                                    dilation)
    cdef int status = 0
    with nogil:
        status = locally_connected_weight_grad_kernel(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0],
                                                      &dw[0, 0, 0], &s, num_threads)
    _raise_if(status)

