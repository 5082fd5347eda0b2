"""SciPy-style ``convolve`` / ``correlate`` on plain 1-3 d arrays, computed by the same
kernels as conv1d/2d/3d (a batch of one image of one channel)."""
import numpy as np

from fastconv._ops.conv import conv1d, conv2d, conv3d
from fastconv._plan import args as _args

__all__ = ["convolve", "correlate"]

_SIGNAL_MODES = ("full", "same", "valid")


def _signal_operands(in1, in2, mode):
    a = _args.as_array(in1, "in1")
    b = _args.as_array(in2, "in2")
    dtype = _args.compute_dtype(in1=a, in2=b)
    _args.choice(mode, "mode", _SIGNAL_MODES)
    if a.ndim != b.ndim:
        raise ValueError(f"in1 and in2 must have the same number of dimensions; got {a.ndim} "
                         f"and {b.ndim}")
    if a.ndim not in (1, 2, 3):
        raise ValueError(f"in1 and in2 must be 1-, 2- or 3-d; got {a.ndim}-d")
    if a.size == 0 or b.size == 0:
        raise ValueError(f"in1 and in2 must be non-empty; got shapes {a.shape} and {b.shape}")
    return a, b, dtype


def convolve(in1, in2, mode="full"):
    """N-d convolution of two arrays (the kernel flipped), like ``scipy.signal.convolve``.

    Parameters
    ----------
    in1, in2 : array_like, 1-, 2- or 3-d with the same number of dimensions
    mode : {'full', 'same', 'valid'}
        'full': every overlap; 'same': the size of `in1`, centred on 'full'; 'valid': only
        complete overlaps (the larger input comes first, as convolution commutes).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.convolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    a, b, dtype = _signal_operands(in1, in2, mode)
    if mode == "valid":
        if all(m >= n for m, n in zip(b.shape, a.shape)) and b.shape != a.shape:
            a, b = b, a
        elif not all(m >= n for m, n in zip(a.shape, b.shape)):
            raise ValueError(f"mode='valid' needs one input at least as large as the other in "
                             f"every dimension; got shapes {a.shape} and {b.shape}")
    return _correlate_flipped(a, np.flip(b), mode, dtype)


def correlate(in1, in2, mode="full"):
    """N-d cross-correlation of two arrays (no flip), like ``scipy.signal.correlate``.

    ``correlate(a, b, mode) == convolve(a, b[::-1, ...], mode)``, as in SciPy.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.correlate([1.0, 2.0, 3.0], [0.0, 1.0, 0.5], mode="valid")
    array([3.5])
    """
    a, b, dtype = _signal_operands(in1, in2, mode)
    return convolve(a, np.flip(b), mode)


def _correlate_flipped(a, kernel, mode, dtype):
    """Cross-correlate `a` with `kernel` (already flipped), padded so the result lines up with
    SciPy's convolution in `mode`."""
    if mode == "full":
        padding = tuple((k - 1, k - 1) for k in kernel.shape)
    elif mode == "same":
        padding = tuple((k // 2, (k - 1) // 2) for k in kernel.shape)
    else:
        padding = 0
    nd = a.ndim
    fn = (conv1d, conv2d, conv3d)[nd - 1]
    return fn(a.astype(dtype, copy=False)[None, None], kernel.astype(dtype, copy=False)[None, None],
              padding=padding)[0, 0]
