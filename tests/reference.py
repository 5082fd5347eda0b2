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


# ---------------------------------------------------------------------------------------------
# Training support (issue #4): transposed convolution, gradients of convolution, locally
# connected layers. Each is written from its definition, as loops over taps and strided slices.

def tap_window(tap, dilation, stride, count):
    """The strided slices of the pixels that `tap` touches at `count` consecutive positions."""
    return tuple(slice(t * d, t * d + s * (m - 1) + 1, s)
                 for t, d, s, m in zip(tap, dilation, stride, count))


def fold_padding(grad_padded, pads, padding_mode):
    """The gradient of np.pad(x, pads, mode): each padded pixel adds to the pixel it copies."""
    grad = np.asarray(grad_padded, dtype=np.float64)
    for axis, (before, after) in enumerate(pads):
        axis += 2
        size = grad.shape[axis] - before - after
        source = np.pad(np.arange(size), (before, after), mode=NUMPY_PAD_MODE[padding_mode])
        folded = np.zeros(grad.shape[:axis] + (size,) + grad.shape[axis + 1:])
        for padded_index, source_index in enumerate(source):
            folded[(slice(None),) * axis + (source_index,)] += \
                grad[(slice(None),) * axis + (padded_index,)]
        grad = folded
    return grad


def conv_input_grad(input_shape, w, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """dL/dx of conv_nd: every output gradient flows back through the taps that read a pixel:

        dx_padded[n, c, p * stride + t * dilation] += w[o, c, t] * grad_output[n, o, p]
    """
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(grad_output, dtype=np.float64)
    nd = w.ndim - 2
    kernel = w.shape[2:]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = padding_pairs(padding, kernel, dilation)
    padded = [n + a + b for n, (a, b) in zip(input_shape[2:], pads)]
    dx = np.zeros(tuple(input_shape[:2]) + tuple(padded))
    c_out, c_in_g = w.shape[:2]
    out_per_group = c_out // groups
    for o in range(c_out):
        for c in range(c_in_g):
            channel = (o // out_per_group) * c_in_g + c
            for tap in itertools.product(*[range(k) for k in kernel]):
                window = tap_window(tap, dilation, stride, g.shape[2:])
                dx[(slice(None), channel) + window] += w[(o, c) + tap] * g[:, o]
    if padding_mode == "zeros":
        return dx[(slice(None), slice(None)) + tuple(slice(a, a + n) for (a, _), n
                                                      in zip(pads, input_shape[2:]))]
    return fold_padding(dx, pads, padding_mode)


def conv_weight_grad(x, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                     padding_mode="zeros"):
    """dL/dw of conv_nd: dw[o, c, t] = sum over n, p of grad_output[n, o, p] *
    x_padded[n, c, p * stride + t * dilation]."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(grad_output, dtype=np.float64)
    nd = len(weight_shape) - 2
    kernel = weight_shape[2:]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = padding_pairs(padding, kernel, dilation)
    x = np.pad(x, [(0, 0), (0, 0)] + list(pads), mode=NUMPY_PAD_MODE[padding_mode])
    c_out, c_in_g = weight_shape[:2]
    out_per_group = c_out // groups
    dw = np.zeros(weight_shape)
    for o in range(c_out):
        for c in range(c_in_g):
            channel = (o // out_per_group) * c_in_g + c
            for tap in itertools.product(*[range(k) for k in kernel]):
                window = tap_window(tap, dilation, stride, g.shape[2:])
                dw[(o, c) + tap] = np.sum(g[:, o] * x[(slice(None), channel) + window])
    return dw


def conv_transpose_nd(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                      dilation=1):
    """Transposed convolution as PyTorch defines it, a scatter:

        out[n, g * C_out_g + o, i * stride + t * dilation - padding] += x[n, c, i] * w[c, o, t]

    for every input channel c of group g; the output size per axis is
    (in - 1) * stride - p_before - p_after + dilation * (k - 1) + output_padding + 1.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    nd = w.ndim - 2
    kernel = w.shape[2:]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    output_padding = as_tuple(output_padding, nd)
    pads = padding_pairs(padding, kernel, dilation)
    in_size = x.shape[2:]
    # scatter into the unpadded "full" grid, then cut the output window out of it
    full_size = [(n - 1) * s + d * (k - 1) + 1 + op
                 for n, s, d, k, op in zip(in_size, stride, dilation, kernel, output_padding)]
    c_in, c_out_g = w.shape[:2]
    in_per_group = c_in // groups
    full = np.zeros((x.shape[0], c_out_g * groups) + tuple(full_size))
    for c in range(c_in):
        group = c // in_per_group
        for o in range(c_out_g):
            for tap in itertools.product(*[range(k) for k in kernel]):
                window = tap_window(tap, dilation, stride, in_size)
                full[(slice(None), group * c_out_g + o) + window] += w[(c, o) + tap] * x[:, c]
    out_size = [f - a - b for f, (a, b) in zip(full_size, pads)]
    out = full[(slice(None), slice(None)) + tuple(slice(a, a + m) for (a, _), m
                                                  in zip(pads, out_size))].copy()
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape((1, -1) + (1,) * nd)
    return out


def _local_patches(x, kernel, stride, padding, dilation):
    """x zero-padded, the output grid, and a function giving the window of a position."""
    nd = len(kernel)
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = padding_pairs(padding, kernel, dilation)
    xp = np.pad(np.asarray(x, dtype=np.float64), [(0, 0), (0, 0)] + list(pads))
    grid = tuple((n - d * (k - 1) - 1) // s + 1
                 for n, k, s, d in zip(xp.shape[2:], kernel, stride, dilation))

    def window(position):
        return (slice(None), slice(None)) + tuple(
            slice(p * s, p * s + d * (k - 1) + 1, d)
            for p, s, d, k in zip(position, stride, dilation, kernel))
    return xp, grid, window


def locally_connected_nd(x, w, bias=None, stride=1, padding=0, dilation=1):
    """out[n, o, p] = bias[o, p] + sum over c, t of w[p, o, c, t] * x_padded[n, c, p*s + t*d],
    with w of shape (*grid, C_out, C_in, *kernel): one filter bank per output position p."""
    w = np.asarray(w, dtype=np.float64)
    nd = (w.ndim - 2) // 2
    xp, grid, window = _local_patches(x, w.shape[nd + 2:], stride, padding, dilation)
    out = np.zeros((xp.shape[0], w.shape[nd]) + grid)
    for p in np.ndindex(*grid):
        patch = xp[window(p)]                      # (N, C_in, *kernel)
        out[(slice(None), slice(None)) + p] = np.tensordot(
            patch, w[p], axes=(list(range(1, nd + 2)), list(range(1, nd + 2))))
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    return out


def locally_connected_input_grad(input_shape, w, grad_output, stride=1, padding=0, dilation=1):
    """dx_padded[n, c, p*s + t*d] += w[p, o, c, t] * grad_output[n, o, p]."""
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(grad_output, dtype=np.float64)
    nd = (w.ndim - 2) // 2
    kernel = w.shape[nd + 2:]
    xp, grid, window = _local_patches(np.zeros(input_shape), kernel, stride, padding, dilation)
    for p in np.ndindex(*grid):
        xp[window(p)] += np.tensordot(g[(slice(None), slice(None)) + p], w[p], axes=(1, 0))
    pads = padding_pairs(padding, kernel, as_tuple(dilation, nd))
    return xp[(slice(None), slice(None)) + tuple(slice(a, a + n) for (a, _), n
                                                 in zip(pads, input_shape[2:]))]


def locally_connected_weight_grad(x, weight_shape, grad_output, stride=1, padding=0,
                                  dilation=1):
    """dw[p, o, c, t] = sum over n of grad_output[n, o, p] * x_padded[n, c, p*s + t*d]."""
    g = np.asarray(grad_output, dtype=np.float64)
    nd = (len(weight_shape) - 2) // 2
    xp, grid, window = _local_patches(x, weight_shape[nd + 2:], stride, padding, dilation)
    dw = np.zeros(weight_shape)
    for p in np.ndindex(*grid):
        dw[p] = np.tensordot(g[(slice(None), slice(None)) + p], xp[window(p)], axes=(0, 0))
    return dw
