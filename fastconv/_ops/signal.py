"""SciPy-style ``convolve`` / ``correlate`` of two real arrays of any number of dimensions,
with ``scipy.signal``'s modes, methods and result dtypes.

1-3 d arrays are a batch of one image of one channel for conv1d/2d/3d's kernels; more
dimensions go through the n-d filter kernel (filters.pyx) with zero-extension tables; 0-d
arrays multiply. method='fft' is SciPy's ``fftconvolve`` (fastconv has no FFT of its own);
'auto' takes it only where the kernel is so large that direct summation would cost far more.
"""
import math

import numpy as np

from fastconv._ops.conv import conv1d, conv2d, conv3d
from fastconv._ops.ndimage import filter_through_tables
from fastconv._plan import args as _args
from fastconv._runtime.memory import pooled

__all__ = ["convolve", "correlate"]

_SIGNAL_MODES = ("full", "same", "valid")
_METHODS = ("auto", "direct", "fft")

# method='auto' picks the FFT where direct multiply-adds exceed this many times the FFT's
# n log2 n (n: the padded transform's size): near this ratio SciPy's fftconvolve
# and fastconv's direct kernels took the same time (2 threads, Zen 4)
_FFT_BREAK_EVEN = 80.0


def _signal_operands(in1, in2, mode, method):
    a = _args.real_array(in1, "in1")
    b = _args.real_array(in2, "in2")
    _args.choice(mode, "mode", _SIGNAL_MODES)
    _args.choice(method, "method", _METHODS)
    if a.ndim != b.ndim:
        raise ValueError(f"in1 and in2 must have the same number of dimensions; got {a.ndim} "
                         f"and {b.ndim}")
    return a, b, np.result_type(a, b)


def _result(out, dtype):
    """The float result in SciPy's result dtype: integers rounded, then wrapped as integer
    arithmetic wraps (exact while |values| < 2**53)."""
    if dtype.kind in "biu":
        rounded = np.rint(out)
        if dtype.kind == "b":
            return rounded != 0
        return rounded.astype(np.int64).astype(dtype)
    return out.astype(dtype, copy=False)


def _empty(a, b, mode, dtype):
    """SciPy's answers for an empty input: 'same' keeps an empty in1's shape, anything else
    has nothing to convolve."""
    if mode == "same" and a.size == 0 and b.size > 0:
        return np.zeros(a.shape, dtype=dtype)
    raise ValueError(f"in1 and in2 must be non-empty (except in1 with mode='same'); got "
                     f"shapes {a.shape} and {b.shape}")


def _uses_fft(a, b, mode, method):
    if method != "auto":
        return method == "fft"
    padded = 1
    for m, n in zip(a.shape, b.shape):
        padded *= m + n - 1
    direct = float(_out_size(a.shape, b.shape, mode)) * b.size
    return direct > _FFT_BREAK_EVEN * padded * max(1.0, math.log2(padded))


def _out_size(s1, s2, mode):
    size = 1
    for m, n in zip(s1, s2):
        size *= {"full": m + n - 1, "same": m, "valid": m - n + 1}[mode]
    return size


@pooled
def convolve(in1, in2, mode="full", method="auto"):
    """N-d convolution of two real arrays (the kernel flipped), like ``scipy.signal.convolve``.

    Parameters
    ----------
    in1, in2 : array_like, real, with the same number of dimensions (any; 0-d multiplies)
    mode : {'full', 'same', 'valid'}
        'full': every overlap; 'same': the size of `in1`, centred on 'full'; 'valid': only
        complete overlaps (the larger input comes first, as convolution commutes).
    method : {'auto', 'direct', 'fft'}
        'direct': fastconv's kernels; 'fft': ``scipy.signal.fftconvolve``; 'auto': the FFT
        only where direct summation would cost far more (a large kernel).

    The result has SciPy's dtype, ``numpy.result_type(in1, in2)``: integer inputs give
    integers (rounded, and wrapped on overflow as integer arithmetic is).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.convolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    a, b, dtype = _signal_operands(in1, in2, mode, method)
    if a.ndim == 0:
        return a * b
    if a.size == 0 or b.size == 0:
        return _empty(a, b, mode, dtype)
    if mode == "valid":
        if all(m >= n for m, n in zip(b.shape, a.shape)) and b.shape != a.shape:
            a, b = b, a
        elif not all(m >= n for m, n in zip(a.shape, b.shape)):
            raise ValueError(f"mode='valid' needs one input at least as large as the other in "
                             f"every dimension; got shapes {a.shape} and {b.shape}")
    compute = _args.compute_dtype(in1=a, in2=b)
    if _uses_fft(a, b, mode, method):
        from scipy.signal import fftconvolve
        out = fftconvolve(a.astype(compute, copy=False), b.astype(compute, copy=False), mode)
    else:
        out = _correlate_flipped(a, np.flip(b), mode, compute)
    return _result(out, dtype)


@pooled
def correlate(in1, in2, mode="full", method="auto"):
    """N-d cross-correlation of two real arrays (no flip), like ``scipy.signal.correlate``.

    ``correlate(a, b, mode) == convolve(a, b[::-1, ...], mode)``, as in SciPy; the same
    arguments and result dtypes as ``convolve``.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.correlate([1.0, 2.0, 3.0], [0.0, 1.0, 0.5], mode="valid")
    array([3.5])
    """
    a, b, _ = _signal_operands(in1, in2, mode, method)
    return convolve(a, np.flip(b), mode, method)


def _correlate_flipped(a, kernel, mode, dtype):
    """Cross-correlate `a` with `kernel` (already flipped), lined up with SciPy's convolution
    in `mode`: output index o of axis a reads input o + start, start = -(K - 1) for 'full',
    -(K // 2) for 'same', 0 for 'valid'."""
    starts = [{"full": -(k - 1), "same": -(k // 2), "valid": 0}[mode] for k in kernel.shape]
    a = a.astype(dtype, copy=False)
    kernel = kernel.astype(dtype, copy=False)
    if a.ndim <= 3:
        # the same geometry as zero padding (-start before, the rest after)
        padding = tuple((-s, {"full": k - 1, "same": (k - 1) // 2, "valid": 0}[mode])
                        for s, k in zip(starts, kernel.shape))
        fn = (conv1d, conv2d, conv3d)[a.ndim - 1]
        return fn(a[None, None], kernel[None, None], padding=padding)[0, 0]
    out_shape = tuple({"full": m + k - 1, "same": m, "valid": m - k + 1}[mode]
                      for m, k in zip(a.shape, kernel.shape))
    tables = []
    for m, k, o, s in zip(a.shape, kernel.shape, out_shape, starts):
        q = np.arange(s, s + o + k - 1, dtype=np.int64)
        tables.append(np.where((q >= 0) & (q < m), q, -1))
    return filter_through_tables(np.ascontiguousarray(a), np.ascontiguousarray(kernel), tables,
                                 out_shape, 0.0)
