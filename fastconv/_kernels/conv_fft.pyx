# cython: language_level=3
"""FFT convolution (CONV_FFT): the channel sums of a convolution done in the frequency domain.

The Python layer (fastconv/_ops/conv_fft.py) transforms the input planes and the weights
with scipy.fft; what is left is, for every frequency f, a small complex matrix product over
the channels of a group:

    Y[n, o, f] = sum over c of X[n, g*C_g + c, f] * W[o, c, f]      (g = o's group)

which this module computes. Spectra are complex arrays seen as their real and imaginary
parts interleaved (real_t[..., 2F]). Frequencies are cut into blocks so that one block of
a group's input spectra stays in cache while every output channel of the group reads it.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels.kernel_ids cimport CONV_FFT


def mix_spectra(int kernel, floating[:, :, ::1] x, floating[:, :, ::1] w,
                floating[:, :, ::1] y, Py_ssize_t groups, Py_ssize_t block, int threads):
    """y[n, o] = sum over the group's c of x[n, c] * w[o, c], complex and element-wise over
    frequencies: x (N, C_in, 2F), w (C_out, C_in/groups, 2F), y (N, C_out, 2F), each row the
    interleaved real and imaginary parts of F frequencies; `block` frequencies per work item."""
    if kernel != CONV_FFT:
        raise ValueError(f"conv_fft.mix_spectra does not run kernel {kernel}")
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1], width = x.shape[2]
    cdef Py_ssize_t c_out = w.shape[0], c_group = w.shape[1]
    if groups < 1 or c_in != groups * c_group or c_out % groups:
        raise ValueError(f"spectra of {c_in} input channels, weights {c_out}x{c_group}, "
                         f"{groups} groups do not fit together")
    if w.shape[2] != width or y.shape[0] != n_img or y.shape[1] != c_out \
            or y.shape[2] != width or width % 2:
        raise ValueError("the spectra must have the same even last axis and y must be "
                         f"({n_img}, {c_out}, {width}); got w {tuple(w.shape)[:3]}, "
                         f"y {tuple(y.shape)[:3]}")
    if block < 1 or threads < 1:
        raise ValueError(f"block and threads must be >= 1; got {block}, {threads}")
    cdef Py_ssize_t freqs = width // 2, out_group = c_out // groups
    cdef Py_ssize_t blocks = (freqs + block - 1) // block
    cdef Py_ssize_t items = blocks * n_img * c_out, item, n, o, b, c, f, f0, f1
    cdef floating *xp
    cdef floating *wp
    cdef floating *yp
    cdef floating xr, xi, wr, wi
    if items == 0:
        return
    with nogil:
        # blocks outermost: consecutive items (one thread's) share a block of x
        for item in prange(items, num_threads=threads, schedule="static"):
            o = item % c_out
            n = (item // c_out) % n_img
            b = item // (c_out * n_img)
            f0 = b * block
            f1 = min(freqs, f0 + block)
            yp = &y[n, o, 0]
            memset(&yp[2 * f0], 0, 2 * (f1 - f0) * sizeof(floating))
            for c in range(c_group):
                xp = &x[n, (o // out_group) * c_group + c, 0]
                wp = &w[o, c, 0]
                for f in range(f0, f1):
                    xr = xp[2 * f]
                    xi = xp[2 * f + 1]
                    wr = wp[2 * f]
                    wi = wp[2 * f + 1]
                    yp[2 * f] += xr * wr - xi * wi
                    yp[2 * f + 1] += xr * wi + xi * wr


CONV_FFT_ID = CONV_FFT


def finish_output(int kernel, floating[:, :, :, :] signal, floating[::1] bias,
                  floating[:, :, :, ::1] out):
    """out[p] = signal[p] + bias[p % C_out] (no bias where bias is empty) over planes p of
    (A, B, C) outputs, signal strided as the inverse transform left it; returns True if every
    output is finite. One pass on the calling thread: the transforms' threads are scipy.fft's,
    and an OpenMP team woken here would spin into the next call's transforms."""
    if kernel != CONV_FFT:
        raise ValueError(f"conv_fft.finish_output does not run kernel {kernel}")
    cdef Py_ssize_t planes = out.shape[0], a_n = out.shape[1], b_n = out.shape[2]
    cdef Py_ssize_t c_n = out.shape[3], channels = bias.shape[0], p, a, b, c
    if tuple(signal.shape)[:4] != tuple(out.shape)[:4] or (channels and planes % channels):
        raise ValueError(f"signal {tuple(signal.shape)[:4]}, out {tuple(out.shape)[:4]} and "
                         f"{channels} biases do not fit together")
    cdef floating shift, v, gap           # v - v is 0 for a finite v, NaN otherwise
    cdef int bad = 0
    cdef floating *row
    cdef const floating *source
    cdef Py_ssize_t step = signal.strides[3] // <Py_ssize_t>sizeof(floating)
    if planes == 0 or a_n == 0 or b_n == 0 or c_n == 0:
        return True
    with nogil:
        for p in range(planes):
            shift = bias[p % channels] if channels else 0
            for a in range(a_n):
                for b in range(b_n):
                    row = &out[p, a, b, 0]
                    source = &signal[p, a, b, 0]
                    if step == 1:       # a stride-1 convolution: a vector loop
                        for c in range(c_n):
                            v = source[c] + shift
                            row[c] = v
                            gap = v - v
                            bad |= gap != gap
                    else:
                        for c in range(c_n):
                            v = source[c * step] + shift
                            row[c] = v
                            gap = v - v
                            bad |= gap != gap
    return not bad
