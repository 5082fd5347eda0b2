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
# Pooling, unpooling and interpolation (issue #3)

def pool_output_len(n, kernel, stride, padding, dilation=1, ceil_mode=False):
    """PyTorch's pooled length: windows of span dilation * (kernel - 1) + 1 over the padded
    axis; with ceil_mode a partial last window counts if it starts inside input or left pad."""
    span = dilation * (kernel - 1) + 1
    if ceil_mode:
        out = -(-(n + 2 * padding - span) // stride) + 1
        if (out - 1) * stride >= n + padding:
            out -= 1
    else:
        out = (n + 2 * padding - span) // stride + 1
    return out


def _window(o, kernel, stride, padding, dilation):
    """Input positions (possibly in the padding) of output o's window along one axis."""
    return [o * stride - padding + t * dilation for t in range(kernel)]


def max_pool_nd(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pool from the definition. Returns (values, indices): for each output, the largest
    element of its window inside the input (padding never wins), scanning the window in order
    and replacing the current best by a larger element or by a NaN; the index is the flat
    position of the chosen element in its (n, c) plane."""
    x = np.asarray(x, dtype=np.float64)
    nd = x.ndim - 2
    kernel = as_tuple(kernel_size, nd)
    stride = kernel if stride is None else as_tuple(stride, nd)
    padding, dilation = as_tuple(padding, nd), as_tuple(dilation, nd)
    in_size = x.shape[2:]
    out_size = [pool_output_len(*a, ceil_mode) for a in zip(in_size, kernel, stride, padding,
                                                             dilation)]
    values = np.empty(x.shape[:2] + tuple(out_size))
    indices = np.empty(values.shape, dtype=np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for out_pos in itertools.product(*[range(m) for m in out_size]):
            windows = [_window(*a) for a in zip(out_pos, kernel, stride, padding, dilation)]
            best, best_index = -np.inf, None
            for pos in itertools.product(*windows):
                if not all(0 <= p < m for p, m in zip(pos, in_size)):
                    continue            # padding
                v = x[(n, c) + pos]
                if best_index is None:
                    best_index = np.ravel_multi_index(pos, in_size)
                if v > best or np.isnan(v):
                    best, best_index = v, np.ravel_multi_index(pos, in_size)
            values[(n, c) + out_pos] = best
            indices[(n, c) + out_pos] = best_index
    return values, indices


def avg_pool_nd(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    """Average pool from the definition: the sum of the window's input elements divided by
    divisor_override, or by the window size clipped to the padded input (count_include_pad),
    or by the number of input elements in the window."""
    x = np.asarray(x, dtype=np.float64)
    nd = x.ndim - 2
    kernel = as_tuple(kernel_size, nd)
    stride = kernel if stride is None else as_tuple(stride, nd)
    padding = as_tuple(padding, nd)
    in_size = x.shape[2:]
    out_size = [pool_output_len(*a, 1, ceil_mode) for a in zip(in_size, kernel, stride, padding)]
    out = np.empty(x.shape[:2] + tuple(out_size))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for out_pos in itertools.product(*[range(m) for m in out_size]):
            windows = [_window(*a, 1) for a in zip(out_pos, kernel, stride, padding)]
            inside = [[p for p in w if 0 <= p < m] for w, m in zip(windows, in_size)]
            padded = [[p for p in w if p < m + pad] for w, m, pad in zip(windows, in_size,
                                                                           padding)]
            total = sum(x[(n, c) + pos] for pos in itertools.product(*inside))
            if divisor_override:
                divisor = divisor_override
            elif count_include_pad:
                divisor = np.prod([len(w) for w in padded])
            else:
                divisor = np.prod([len(w) for w in inside])
            out[(n, c) + out_pos] = total / divisor
    return out


def adaptive_pool_nd(x, output_size, kind):
    """Adaptive pooling: output i of an axis of length n pools [floor(i n / m), ceil((i+1) n / m)).
    kind 'avg' returns the means; 'max' returns (values, indices) as max_pool_nd."""
    x = np.asarray(x, dtype=np.float64)
    in_size = x.shape[2:]
    output_size = as_tuple(output_size, len(in_size))
    values = np.empty(x.shape[:2] + tuple(output_size))
    indices = np.empty(values.shape, dtype=np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for out_pos in itertools.product(*[range(m) for m in output_size]):
            ranges = [range(int(np.floor(i * n_ / m)), int(np.ceil((i + 1) * n_ / m)))
                      for i, n_, m in zip(out_pos, in_size, output_size)]
            positions = list(itertools.product(*ranges))
            window = np.array([x[(n, c) + pos] for pos in positions])
            if kind == "avg":
                values[(n, c) + out_pos] = window.mean()
                continue
            best, best_k = -np.inf, 0
            for k, v in enumerate(window):
                if v > best or np.isnan(v):
                    best, best_k = v, k
            values[(n, c) + out_pos] = best
            indices[(n, c) + out_pos] = np.ravel_multi_index(positions[best_k], in_size)
    return values if kind == "avg" else (values, indices)


def max_unpool_nd(x, indices, out_size):
    """Zeros of spatial size out_size with each value placed at its flat plane index."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape[:2] + tuple(out_size))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        plane = out[n, c].reshape(-1)
        for v, i in zip(x[n, c].reshape(-1), indices[n, c].reshape(-1)):
            plane[i] = v
    return out


def interpolate_nd(x, out_size, mode, align_corners=False, scales=None):
    """Nearest or (multi)linear resampling, one axis after the other, in float64.

    Source coordinate of output o along an axis of n inputs and m outputs, with s the inverse
    scale (1 / scale_factor if given, else n / m):
      nearest:                 floor(o * s), clipped to n - 1
      linear, align_corners:   o * (n - 1) / (m - 1)
      linear, otherwise:       max((o + 0.5) * s - 0.5, 0)
    Linear interpolates between floor(src) and the next input (clamped to the last one).
    """
    out = np.asarray(x, dtype=np.float64)
    nd = out.ndim - 2
    scales = scales or (None,) * nd
    for axis, (m, scale) in enumerate(zip(out_size, scales)):
        n = out.shape[2 + axis]
        s = 1.0 / scale if scale else n / m
        moved = np.moveaxis(out, 2 + axis, -1)
        result = np.empty(moved.shape[:-1] + (m,))
        for o in range(m):
            if mode == "nearest":
                result[..., o] = moved[..., min(int(np.floor(o * s)), n - 1)]
                continue
            if m == n:
                src = float(o)
            elif align_corners:
                src = o * (n - 1) / (m - 1) if m > 1 else 0.0
            else:
                src = max((o + 0.5) * s - 0.5, 0.0)
            i0 = min(int(np.floor(src)), n - 1)
            i1 = min(i0 + 1, n - 1)
            lam = min(max(src - i0, 0.0), 1.0)
            result[..., o] = (1 - lam) * moved[..., i0] + lam * moved[..., i1]
        out = np.moveaxis(result, -1, 2 + axis)
    return out
