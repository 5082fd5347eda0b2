"""Plain float64 references, written from the definitions so a reader can check them by eye.

Nothing here imports fastconv: these are the independent oracles every kernel is tested against.
They favour clarity over speed; test shapes are kept small accordingly.
"""
import itertools

import numpy as np

NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                  "circular": "wrap"}


def padding_pairs(padding, kernel_size, dilation):
    """(before, after) per spatial axis for any padding form conv accepts."""
    nd = len(kernel_size)
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def as_tuple(value, nd):
    return (value,) * nd if isinstance(value, int) else tuple(value)


def conv_nd(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Cross-correlation as PyTorch defines it, for any number of spatial axes:

        out[n, o, p] = bias[o] + sum over c in o's group, taps t of
                       x_padded[n, c, p * stride + t * dilation] * w[o, c, t]
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    nd = w.ndim - 2
    kernel = w.shape[2:]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = padding_pairs(padding, kernel, dilation)
    x = np.pad(x, [(0, 0), (0, 0)] + list(pads), mode=NUMPY_PAD_MODE[padding_mode])
    out_size = [(n - d * (k - 1) - 1) // s + 1
                for n, k, s, d in zip(x.shape[2:], kernel, stride, dilation)]
    c_out, c_in_g = w.shape[:2]
    out_per_group = c_out // groups
    out = np.zeros((x.shape[0], c_out, *out_size))
    for o in range(c_out):
        group = o // out_per_group
        for c in range(c_in_g):
            channel = group * c_in_g + c
            for tap in itertools.product(*[range(k) for k in kernel]):
                # the input pixels this tap reads for every output position, as one strided slice
                window = tuple(slice(t * d, t * d + s * (m - 1) + 1, s)
                               for t, d, s, m in zip(tap, dilation, stride, out_size))
                out[:, o] += w[(o, c) + tap] * x[(slice(None), channel) + window]
        if bias is not None:
            out[:, o] += bias[o]
    return out


def convolve_full(a, b):
    """Full N-d convolution from the definition: out[i] = sum_j a[j] * b[i - j]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.zeros([m + n - 1 for m, n in zip(a.shape, b.shape)])
    for j in np.ndindex(*a.shape):
        region = tuple(slice(ji, ji + n) for ji, n in zip(j, b.shape))
        out[region] += a[j] * b
    return out


def convolve(a, b, mode="full"):
    """scipy.signal.convolve's modes cut from the full convolution."""
    full = convolve_full(a, b)
    a, b = np.asarray(a), np.asarray(b)
    if mode == "full":
        return full
    if mode == "same":
        starts = [(k - 1) // 2 for k in b.shape]
        return full[tuple(slice(s, s + n) for s, n in zip(starts, a.shape))]
    # valid: only complete overlaps
    big, small = (a, b) if all(m >= n for m, n in zip(a.shape, b.shape)) else (b, a)
    return full[tuple(slice(n - 1, m) for m, n in zip(big.shape, small.shape))]


def correlate(a, b, mode="full"):
    """scipy.signal.correlate for real inputs: convolution with the flipped second input."""
    return convolve(a, np.flip(np.asarray(b)), mode)
