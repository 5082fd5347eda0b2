"""Max, average and adaptive pooling, max-unpooling, and their backward passes, in 1, 2 and 3
dimensions with PyTorch's semantics and argument names.

Each public function normalizes its arguments, describes the pooling windows of every spatial
axis as a small table (first input position read, number of positions read, divisor factor;
see fastconv/_kernels/pooling.pyx), checks it, allocates the output and calls one compiled
kernel. Max-pool indices are flat positions inside each (n, c) input plane, as in PyTorch, so they can be exchanged with
``torch.nn.functional.max_unpool2d`` and back.
"""
from collections import namedtuple
from math import prod

import numpy as np

from fastconv._kernels import pooling as _pool
from fastconv._ops.interpolate import adjoint_axis, apply_adjoint, ranks_in_groups
from fastconv._plan import args as _args
from fastconv._runtime import threads as _parallel
from fastconv._runtime.memo import memoized_tables
from fastconv._runtime.memory import pooled
from fastconv._runtime.precision import flushing_denormals

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d",
    "max_pool1d_backward", "max_pool2d_backward", "max_pool3d_backward",
    "avg_pool1d_backward", "avg_pool2d_backward", "avg_pool3d_backward",
    "adaptive_avg_pool1d_backward", "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool3d_backward", "adaptive_max_pool1d_backward",
    "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward",
    "max_unpool1d_backward", "max_unpool2d_backward", "max_unpool3d_backward",
]

# The windows of one pooling call: spatial sizes in and out, the distance between the positions
# a window reads along each axis, the per-axis window tables concatenated over the axes
# (win: 2 x sum(out_size) int64, div: sum(out_size) float64) -- all padded to three axes.
# regular_w: (kernel, stride, padding) along W for a regular pool, (0, 0, 0) for an adaptive one.
Windows = namedtuple("Windows", "in_size out_size step win div regular_w")


# ---------------------------------------------------------------------------------------------
# argument checks

def _check_input(x, nd, name, op):
    dims = _args.SPATIAL_NAMES[nd]
    if x.ndim != nd + 2:
        raise ValueError(f"{name} must be {nd + 2}-d (N, C, {dims}) for {op}; got shape "
                         f"{x.shape}")
    if any(n == 0 for n in x.shape[2:]):
        raise ValueError(f"{name} must have non-empty spatial dimensions for {op}; got shape "
                         f"{x.shape}")


def _check_shape(shape, nd, name, op):
    """`shape` (an input_shape argument) as a tuple of nd + 2 ints with non-empty spatial axes."""
    if not isinstance(shape, (tuple, list)) or len(shape) != nd + 2 \
            or not all(_args.is_int(n) for n in shape):
        raise TypeError(f"{name} must be a sequence of {nd + 2} ints (N, C, "
                        f"{_args.SPATIAL_NAMES[nd]}) for {op}; got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape) or any(n == 0 for n in shape[2:]):
        raise ValueError(f"{name} must be non-negative with non-empty spatial dimensions for "
                         f"{op}; got {shape}")
    _args.check_output_size(shape, np.float64, name)
    return shape


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {value!r}")
    return bool(value)


def _check_indices(indices, shape, op, channels_last=False):
    """indices as a C-contiguous int64 array of `shape` (with `channels_last`, a channels-last
    one where it is channels-last). Their range is checked by the kernel that reads them (see
    `_raise_outside`)."""
    idx = _args.as_array(indices, "indices")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must have an integer dtype (int64, as max_pool returns) for "
                        f"{op}; got {idx.dtype}")
    if idx.shape != tuple(shape):
        raise ValueError(f"indices must have shape {tuple(shape)} for {op}; got {idx.shape}")
    if channels_last and _args.is_channels_last(idx):
        return idx.astype(np.int64, copy=False)
    return np.ascontiguousarray(idx, dtype=np.int64)


def _raise_outside(outside, indices, plane, op):
    """The error for indices that a scatter or gather kernel found outside [0, plane) (it
    skipped them: nothing was written or read out of bounds)."""
    if outside:
        idx = np.asarray(indices)
        raise ValueError(f"indices must lie in [0, {plane}) (positions in one input plane) "
                         f"for {op}; got values from {int(idx.min())} to {int(idx.max())}")


# channels-last scatters: work items of an image's channels in blocks of this many, or of all
# its channels when the images alone give each thread a few items
_SCATTER_CHANNEL_BLOCK = 16


def _nhwc_rows(a):
    """A channels-last (N, C, H, W) array as its (N, H * W, C) memory."""
    return a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1, a.shape[1])


def _channels_last_scatter(src, idx, shape, accumulate, dtype, op):
    """The scatter of max-pool backward / max-unpool on channels-last operands: (N, C, H, W)
    channels-last output of `shape`."""
    n, c = shape[:2]
    out = np.empty((n,) + tuple(shape[2:]) + (c,), dtype)
    threads = _threads(out.size)
    block = c if n >= 4 * threads else _SCATTER_CHANNEL_BLOCK
    outside = _pool.scatter_nhwc(_nhwc_rows(src.astype(dtype, copy=False)), _nhwc_rows(idx),
                                 out.reshape(n, -1, c), accumulate, block, threads)
    _raise_outside(outside, idx, int(np.prod(shape[2:])), op)
    return out.transpose(0, 3, 1, 2)


def _planes(a, nd):
    """View (N, C, *spatial) as (N * C, D, H, W), inserting unit leading spatial axes."""
    return a.reshape((a.shape[0] * a.shape[1],) + (1,) * (3 - nd) + a.shape[2:])


def _rows(a, planes):
    """(N, C, *spatial) as (N * C, elements per plane), an empty batch included (reshape's -1
    cannot be inferred for zero planes)."""
    return a.reshape(planes, prod(a.shape[2:]))


def _threads(elements):
    """Threads for a memory-bound kernel touching about `elements` array elements."""
    return _parallel.threads_for(elements)


# ---------------------------------------------------------------------------------------------
# window tables

def pool_output_size(in_size, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """PyTorch's pooled length of one axis: floor (or ceil) of
    (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1, where with ceil_mode the last
    window must start inside the input or its left padding.

    Examples
    --------
    >>> from fastconv.planning import pool_output_size
    >>> pool_output_size(112, 3, 2, 1), pool_output_size(5, 2, 2, 0, ceil_mode=True)
    (56, 3)
    """
    span = dilation * (kernel_size - 1) + 1
    numerator = in_size + 2 * padding - span + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= in_size + padding:
        out -= 1
    return out


def _axis_windows(in_size, kernel, stride, pad, dilation, out_size):
    """Per output: first valid position, number of valid positions, and PyTorch's
    count_include_pad divisor (window clipped to the padded input, not to ceil_mode's overhang)."""
    start = np.arange(out_size, dtype=np.int64) * stride - pad
    skip = np.where(start < 0, (-start + dilation - 1) // dilation, 0)
    last = np.minimum(kernel - 1, (in_size - 1 - start) // dilation)
    count = np.maximum(last - skip + 1, 0)
    first = start + skip * dilation
    padded = np.minimum(start + kernel, in_size + pad) - start
    return first, count, padded.astype(np.float64)


def _adaptive_axis_windows(in_size, out_size):
    """PyTorch's adaptive windows: [floor(o * in / out), ceil((o + 1) * in / out))."""
    o = np.arange(out_size, dtype=np.int64)
    start = o * in_size // out_size
    end = ((o + 1) * in_size + out_size - 1) // out_size
    return start, end - start, (end - start).astype(np.float64)


def _pack(nd, in_size, out_size, step, axes, regular_w=(0, 0, 0)):
    """Windows padded to three axes (unit leading axes read their one position)."""
    unit = 3 - nd
    axes = [(np.zeros(1, np.int64), np.ones(1, np.int64), np.ones(1))] * unit + list(axes)
    win = np.ascontiguousarray(np.stack([np.concatenate([a[0] for a in axes]),
                                         np.concatenate([a[1] for a in axes])]), dtype=np.int64)
    div = np.ascontiguousarray(np.concatenate([a[2] for a in axes]), dtype=np.float64)
    return Windows((1,) * unit + tuple(in_size), (1,) * unit + tuple(out_size),
                   (1,) * unit + tuple(step), win, div, regular_w)


@memoized_tables
def _pool_windows(nd, in_size, kernel_size, stride, padding, dilation, ceil_mode, op):
    """Normalize a pooling call's window arguments and build its Windows (or raise)."""
    kernel = _args.ntuple(kernel_size, nd, "kernel_size", minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = _args.ntuple(stride, nd, "stride", minimum=1)
    pad = _args.ntuple(padding, nd, "padding", minimum=0)
    dilation = _args.ntuple(dilation, nd, "dilation", minimum=1)
    ceil_mode = _check_bool(ceil_mode, "ceil_mode")
    if any(p > k // 2 for p, k in zip(pad, kernel)):
        raise ValueError(f"padding must be at most half of kernel_size (as in PyTorch) for "
                         f"{op}; got padding={pad} for kernel_size={kernel}")
    out_size = tuple(pool_output_size(n, k, s, p, d, ceil_mode)
                     for n, k, s, p, d in zip(in_size, kernel, stride, pad, dilation))
    if any(o < 1 for o in out_size):
        raise ValueError(f"kernel_size={kernel} with dilation={dilation} does not fit the input "
                         f"of spatial size {tuple(in_size)} padded by {pad} for {op}: the output "
                         f"size would be {out_size}")
    axes = [_axis_windows(n, k, s, p, d, o)
            for n, k, s, p, d, o in zip(in_size, kernel, stride, pad, dilation, out_size)]
    if any((a[1] == 0).any() for a in axes):
        raise ValueError(f"a window of kernel_size={kernel} with dilation={dilation} reads only "
                         f"padding for {op} (input spatial size {tuple(in_size)}, padding "
                         f"{pad}); reduce padding or dilation")
    return _pack(nd, in_size, out_size, dilation, axes, (kernel[-1], stride[-1], pad[-1]))


@memoized_tables
def _adaptive_windows(nd, in_size, output_size, op):
    if output_size is None:
        raise TypeError(f"output_size must be an int or a sequence of {nd} ints (or None to "
                        f"keep an axis) for {op}; got None")
    if isinstance(output_size, (tuple, list)) and len(output_size) == nd:
        output_size = tuple(n if o is None else o for o, n in zip(output_size, in_size))
    out_size = _args.ntuple(output_size, nd, "output_size", minimum=1)
    _args.check_output_size(out_size, np.float64, "output_size")   # before any table exists
    axes = [_adaptive_axis_windows(n, o) for n, o in zip(in_size, out_size)]
    return _pack(nd, in_size, out_size, (1,) * nd, axes)


# ---------------------------------------------------------------------------------------------
# forward

def _channels_last_pool(x, windows, is_max, return_indices, divisor_override, dtype):
    """A 2-d pool of a channels-last x, computed where it lies (the channels of each pixel
    side by side) into channels-last outputs: (out, indices or None)."""
    n, c = x.shape[:2]
    out_size = windows.out_size[1:]
    out = np.empty((n,) + out_size + (c,), dtype)
    indices = np.empty(out.shape, np.int64) if return_indices else None
    as_5d = (lambda a: a.reshape((n, 1) + a.shape[1:]))
    _pool.pool_forward_nhwc(as_5d(x.transpose(0, 2, 3, 1)), as_5d(out),
                            as_5d(indices) if return_indices
                            else np.empty((0, 1, 1, 1, 1), np.int64),
                            is_max, windows.step, windows.win,
                            np.empty(0) if is_max else windows.div,
                            float(divisor_override or 0), _threads(x.size + out.size))
    return (out.transpose(0, 3, 1, 2),
            indices.transpose(0, 3, 1, 2) if return_indices else None)


def _max_pool(nd, x, windows, return_indices, dtype):
    n, c = x.shape[:2]
    out_shape = (n, c) + windows.out_size[3 - nd:]
    _args.check_output_size(out_shape, np.float64, "output_size, kernel_size and stride")
    if nd == 2 and _args.is_channels_last(x) and x.dtype == dtype:
        out, indices = _channels_last_pool(x, windows, True, return_indices, None, dtype)
        return (out, indices) if return_indices else out
    out = np.empty(out_shape, dtype)
    indices = np.empty(out_shape, np.int64) if return_indices else None
    # an empty index array tells the kernel not to write indices
    idx_planes = _planes(indices, nd) if return_indices else np.empty((0, 1, 1, 1), np.int64)
    _pool.max_pool_forward(_planes(np.ascontiguousarray(x, dtype=dtype), nd), _planes(out, nd),
                           idx_planes, windows.step, windows.win, windows.regular_w,
                           _threads(x.size + out.size))
    return (out, indices) if return_indices else out


@pooled
def _max_poolnd(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    op = f"max_pool{nd}d"
    x = _args.as_array(input, "input")
    dtype = _args.compute_dtype(input=x)
    _check_input(x, nd, "input", op)
    return_indices = _check_bool(return_indices, "return_indices")
    windows = _pool_windows(nd, x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode,
                            op)
    return _max_pool(nd, x, windows, return_indices, dtype)


@flushing_denormals
def _avg_pool(nd, x, windows, divisor_override, dtype):
    n, c = x.shape[:2]
    _args.check_output_size((n, c) + windows.out_size[3 - nd:], np.float64,
                            "output_size, kernel_size and stride")
    if nd == 2 and _args.is_channels_last(x) and x.dtype == dtype:
        return _channels_last_pool(x, windows, False, False, divisor_override, dtype)[0]
    out = np.empty((n, c) + windows.out_size[3 - nd:], dtype)
    _pool.avg_pool_forward(_planes(np.ascontiguousarray(x, dtype=dtype), nd), _planes(out, nd),
                           windows.step, windows.win, windows.div, windows.regular_w,
                           float(divisor_override or 0), _threads(x.size + out.size))
    return out


@memoized_tables
def _avg_windows(nd, in_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override, op):
    count_include_pad = _check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        if not _args.is_int(divisor_override):
            raise TypeError(f"divisor_override must be None or a non-zero int for {op}; got "
                            f"{divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"divisor_override must be non-zero for {op}; got 0")
        if abs(divisor_override) > np.iinfo(np.int64).max:   # PyTorch's int64; float() fails
            raise ValueError(f"divisor_override must fit in int64 for {op}; got "
                             f"{divisor_override!r}")
    windows = _pool_windows(nd, in_size, kernel_size, stride, padding, 1, ceil_mode, op)
    if not count_include_pad:   # divide by the number of input elements in the window
        windows = windows._replace(div=windows.win[1].astype(np.float64))
    return windows


@pooled
def _avg_poolnd(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
    op = f"avg_pool{nd}d"
    x = _args.as_array(input, "input")
    dtype = _args.compute_dtype(input=x)
    _check_input(x, nd, "input", op)
    windows = _avg_windows(nd, x.shape[2:], kernel_size, stride, padding, ceil_mode,
                           count_include_pad, divisor_override, op)
    return _avg_pool(nd, x, windows, divisor_override, dtype)


@pooled
def _adaptive_poolnd(nd, kind, input, output_size, return_indices=False):
    op = f"adaptive_{kind}_pool{nd}d"
    x = _args.as_array(input, "input")
    dtype = _args.compute_dtype(input=x)
    _check_input(x, nd, "input", op)
    windows = _adaptive_windows(nd, x.shape[2:], output_size, op)
    if kind == "max":
        return _max_pool(nd, x, windows, _check_bool(return_indices, "return_indices"), dtype)
    return _avg_pool(nd, x, windows, None, dtype)


def unpool_output_size(in_size, kernel_size, stride, padding, output_size=None):
    """The spatial size max_unpool produces: (in - 1) * stride - 2 * padding + kernel_size per
    axis, or `output_size` (spatial or full (N, C, ...) shape) within one stride of it, as
    PyTorch allows.

    Examples
    --------
    >>> from fastconv.planning import unpool_output_size
    >>> unpool_output_size((28, 28), (2, 2), (2, 2), (0, 0))
    (56, 56)
    >>> unpool_output_size((28, 28), (2, 2), (2, 2), (0, 0), output_size=(57, 57))
    (57, 57)
    """
    nd = len(in_size)
    default = tuple((n - 1) * s - 2 * p + k
                    for n, k, s, p in zip(in_size, kernel_size, stride, padding))
    if output_size is None:
        size = default
    else:
        if isinstance(output_size, (tuple, list)) and len(output_size) == nd + 2:
            output_size = tuple(output_size)[2:]
        size = _args.ntuple(output_size, nd, "output_size")
        for axis, (o, d, s) in enumerate(zip(size, default, stride)):
            if not d - s < o < d + s:
                raise ValueError(f"output_size must lie strictly between {d - s} and {d + s} "
                                 f"along spatial axis {axis} (the default size {d} +- stride); "
                                 f"got {size}")
    if any(o < 1 for o in size):
        raise ValueError(f"the max_unpool output size must be positive; got {size} (from "
                         f"kernel_size={tuple(kernel_size)}, stride={tuple(stride)}, "
                         f"padding={tuple(padding)})")
    return size


@pooled
def _max_unpoolnd(nd, input, indices, kernel_size, stride, padding, output_size):
    op = f"max_unpool{nd}d"
    x = _args.as_array(input, "input")
    dtype = _args.compute_dtype(input=x)
    _check_input(x, nd, "input", op)
    kernel = _args.ntuple(kernel_size, nd, "kernel_size", minimum=1)
    stride = kernel if stride is None else _args.ntuple(stride, nd, "stride", minimum=1)
    pad = _args.ntuple(padding, nd, "padding", minimum=0)
    size = unpool_output_size(x.shape[2:], kernel, stride, pad, output_size)
    _args.check_output_size(x.shape[:2] + size, np.float64, "output_size, kernel_size and "
                            "stride")
    plane = prod(size)
    idx = _check_indices(indices, x.shape, op, channels_last=nd == 2)
    if nd == 2 and _args.is_channels_last(x) and _args.is_channels_last(idx):
        return _channels_last_scatter(x, idx, x.shape[:2] + size, False, dtype, op)
    idx = np.ascontiguousarray(idx)
    out = np.empty(x.shape[:2] + size, dtype)      # the kernel zeroes it, then writes the maxima
    src = np.ascontiguousarray(x, dtype=dtype)
    p = x.shape[0] * x.shape[1]
    outside = _pool.scatter(_rows(src, p), _rows(idx, p), _rows(out, p), False,
                            _threads(out.size))
    _raise_outside(outside, idx, plane, op)
    return out


# ---------------------------------------------------------------------------------------------
# backward

def _grad_output(grad_output, nd, op):
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(grad_output=g)
    if g.ndim != nd + 2:
        raise ValueError(f"grad_output must be {nd + 2}-d (N, C, {_args.SPATIAL_NAMES[nd]}) for "
                         f"{op}; got shape {g.shape}")
    return g, dtype


def _scatter_backward(nd, grad_output, indices, input_shape, op):
    """grad_input[n, c, indices[n, c, o]] += grad_output[n, c, o] (overlaps add up)."""
    g, dtype = _grad_output(grad_output, nd, op)
    shape = _check_shape(input_shape, nd, "input_shape", op)
    if g.shape[:2] != shape[:2]:
        raise ValueError(f"grad_output must have N, C = {shape[:2]} (from input_shape) for "
                         f"{op}; got shape {g.shape}")
    idx = _check_indices(indices, g.shape, op, channels_last=nd == 2)
    if nd == 2 and _args.is_channels_last(g) and _args.is_channels_last(idx):
        return _channels_last_scatter(g, idx, shape, True, dtype, op)
    idx = np.ascontiguousarray(idx)
    grad_in = np.empty(shape, dtype)       # the kernel zeroes it, then adds into it
    p = shape[0] * shape[1]
    outside = _pool.scatter(_rows(np.ascontiguousarray(g, dtype=dtype), p), _rows(idx, p),
                            _rows(grad_in, p), True, _threads(grad_in.size))
    _raise_outside(outside, idx, int(np.prod(shape[2:])), op)
    return grad_in


@pooled
def _max_poolnd_backward(nd, grad_output, indices, input_shape):
    return _scatter_backward(nd, grad_output, indices, input_shape, f"max_pool{nd}d backward")


@pooled
def _adaptive_max_poolnd_backward(nd, grad_output, indices, input_shape):
    return _scatter_backward(nd, grad_output, indices, input_shape,
                             f"adaptive_max_pool{nd}d backward")


def _avg_adjoint_axes(windows, divisor_override, dtype):
    """The average pool's adjoint as three adjoint_axis tables: per axis, output o reads
    first[o] + t * step (t < count[o]) with weight 1 / divisor[o]; a divisor_override divides
    the whole sum instead (folded into the W axis)."""
    axes, offset = [], 0
    for a, (n, m, step) in enumerate(zip(windows.in_size, windows.out_size, windows.step)):
        first, count = windows.win[:, offset:offset + m]
        o = np.repeat(np.arange(m, dtype=np.int64), count)
        t = ranks_in_groups(count)
        if divisor_override:
            weight = np.full(m, 1.0 / divisor_override if a == 2 else 1.0)
        else:
            weight = 1.0 / windows.div[offset:offset + m]
        axes.append(adjoint_axis(n, m, first[o] + t * step, o, weight[o], dtype))
        offset += m
    return tuple(axes)


@memoized_tables
def _avg_backward_tables(nd, in_size, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override, op, dtype):
    """(output spatial size, adjoint tables) of avg_pool{nd}d's gradient."""
    windows = _avg_windows(nd, in_size, kernel_size, stride, padding, ceil_mode,
                           count_include_pad, divisor_override, op)
    return windows.out_size[3 - nd:], _avg_adjoint_axes(windows, divisor_override, dtype)


@memoized_tables
def _adaptive_avg_backward_tables(nd, in_size, out_size, op, dtype):
    """(output spatial size, adjoint tables) of adaptive_avg_pool{nd}d's gradient."""
    windows = _adaptive_windows(nd, in_size, out_size, op)
    return windows.out_size[3 - nd:], _avg_adjoint_axes(windows, None, dtype)


@flushing_denormals
def _avg_backward(nd, g, dtype, shape, tables, op):
    out_size, axes = tables
    expected = shape[:2] + out_size
    if g.shape != expected:
        raise ValueError(f"grad_output must have the forward output's shape {expected} for "
                         f"{op}; got {g.shape}")
    return apply_adjoint(g, np.empty(shape, dtype), axes, nd)


@pooled
def _avg_poolnd_backward(nd, grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override):
    op = f"avg_pool{nd}d backward"
    g, dtype = _grad_output(grad_output, nd, op)
    shape = _check_shape(input_shape, nd, "input_shape", op)
    tables = _avg_backward_tables(nd, shape[2:], kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override, op, dtype)
    return _avg_backward(nd, g, dtype, shape, tables, op)


@pooled
def _adaptive_avg_poolnd_backward(nd, grad_output, input_shape):
    op = f"adaptive_avg_pool{nd}d backward"
    g, dtype = _grad_output(grad_output, nd, op)
    shape = _check_shape(input_shape, nd, "input_shape", op)
    tables = _adaptive_avg_backward_tables(nd, shape[2:], tuple(g.shape[2:]), op, dtype)
    return _avg_backward(nd, g, dtype, shape, tables, op)


@pooled
def _max_unpoolnd_backward(nd, grad_output, indices, input_shape):
    """grad_input[n, c, o] = grad_output[n, c, indices[n, c, o]]."""
    op = f"max_unpool{nd}d backward"
    g, dtype = _grad_output(grad_output, nd, op)
    shape = _check_shape(input_shape, nd, "input_shape", op)
    if g.shape[:2] != shape[:2]:
        raise ValueError(f"grad_output must have N, C = {shape[:2]} (from input_shape) for "
                         f"{op}; got shape {g.shape}")
    plane = int(np.prod(g.shape[2:]))
    idx = _check_indices(indices, shape, op, channels_last=nd == 2)
    if nd == 2 and _args.is_channels_last(g) and _args.is_channels_last(idx):
        n, c = shape[:2]
        grad_in = np.empty((n,) + tuple(shape[2:]) + (c,), dtype)
        outside = _pool.gather_nhwc(_nhwc_rows(g.astype(dtype, copy=False)), _nhwc_rows(idx),
                                    grad_in.reshape(n, -1, c), _threads(grad_in.size))
        _raise_outside(outside, idx, plane, op)
        return grad_in.transpose(0, 3, 1, 2)
    idx = np.ascontiguousarray(idx)
    grad_in = np.empty(shape, dtype)
    p = shape[0] * shape[1]
    outside = _pool.gather(_rows(np.ascontiguousarray(g, dtype=dtype), p), _rows(idx, p),
                           _rows(grad_in, p), _threads(grad_in.size))
    _raise_outside(outside, idx, plane, op)
    return grad_in


# ---------------------------------------------------------------------------------------------
# public functions, one per operator and dimensionality, documented from shared templates

_DIMS = {1: ("L", "L_out", "x = np.array([[[1., 5., 2., 0., 3.]]])"),
         2: ("H, W", "H_out, W_out", "x = np.arange(16.).reshape(1, 1, 4, 4)"),
         3: ("D, H, W", "D_out, H_out, W_out", "x = np.arange(64.).reshape(1, 1, 4, 4, 4)")}


def _document(fn, template, nd, example):
    dims, odims, make_x = _DIMS[nd]
    fn.__doc__ = template.format(nd=nd, dims=dims, odims=odims,
                                 example=f">>> import numpy as np, fastconv\n    >>> {make_x}\n"
                                         f"    {example}")
    return fn


def _pool_doc(template, nd, example):
    """Decorator: the pooling docstring `template` for `nd` dimensions, its example preceded
    by the input it pools."""
    return lambda fn: _document(fn, template, nd, example)


_MAX_POOL_DOC = """{nd}-d max pooling (PyTorch's ``max_pool{nd}d``).

    Parameters
    ----------
    input : array_like, shape (N, C, {dims})
    kernel_size : int or tuple of {nd} ints
    stride : int or tuple of {nd} ints, optional
        Defaults to `kernel_size`.
    padding : int or tuple of {nd} ints
        Implicit -inf padding on both sides, at most half of `kernel_size`.
    dilation : int or tuple of {nd} ints
        Distance between the elements of a window.
    ceil_mode : bool
        Round the output size up (the last window must still start inside the input or its
        left padding).
    return_indices : bool
        Also return, for each output, the flat position of the chosen element inside its
        (n, c) input plane (int64, PyTorch's convention, accepted by ``max_unpool{nd}d``).

    Returns
    -------
    out : ndarray, shape (N, C, {odims}), float32 or float64
        NaN in a window propagates; on ties the first element of the window is chosen.
    indices : ndarray of int64, same shape (only with ``return_indices=True``)

    Examples
    --------
    {example}
    """


@_pool_doc(_MAX_POOL_DOC, 1, """>>> out, idx = fastconv.max_pool1d(x, 2, return_indices=True)
    >>> out, idx
    (array([[[5., 2.]]]), array([[[1, 2]]]))""")
def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_poolnd(1, input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices)


@_pool_doc(_MAX_POOL_DOC, 2, """>>> fastconv.max_pool2d(x, 2)
    array([[[[ 5.,  7.],
             [13., 15.]]]])""")
@_args.keeps_channels_last(0, "input")
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_poolnd(2, input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices)


@_pool_doc(_MAX_POOL_DOC, 3, """>>> fastconv.max_pool3d(x, 2, stride=2).shape
    (1, 1, 2, 2, 2)""")
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_poolnd(3, input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices)


_AVG_POOL_DOC = """{nd}-d average pooling (PyTorch's ``avg_pool{nd}d``).

    Parameters
    ----------
    input : array_like, shape (N, C, {dims})
    kernel_size : int or tuple of {nd} ints
    stride : int or tuple of {nd} ints, optional
        Defaults to `kernel_size`.
    padding : int or tuple of {nd} ints
        Implicit zero padding on both sides, at most half of `kernel_size`.
    ceil_mode : bool
        Round the output size up (the last window must still start inside the input or its
        left padding).
    count_include_pad : bool
        Divide by the window size clipped to the padded input (True) or by the number of input
        elements in the window (False).
    divisor_override : int, optional
        Divide every window sum by this instead.

    Returns
    -------
    ndarray, shape (N, C, {odims}), float32 or float64

    Examples
    --------
    {example}
    """


@_pool_doc(_AVG_POOL_DOC, 1, """>>> fastconv.avg_pool1d(x, 2)
    array([[[3., 1.]]])""")
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_poolnd(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)


@_pool_doc(_AVG_POOL_DOC, 2, """>>> fastconv.avg_pool2d(x, 2)
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])""")
@_args.keeps_channels_last(0, "input")
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_poolnd(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)


@_pool_doc(_AVG_POOL_DOC, 3, """>>> fastconv.avg_pool3d(x, 4)
    array([[[[[31.5]]]]])""")
def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_poolnd(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)


_ADAPTIVE_DOC = """{nd}-d adaptive {kind} pooling (PyTorch's ``adaptive_{kind}_pool{nd}d``).

    Output position i of an axis of input length n and output length m pools the input
    positions [floor(i * n / m), ceil((i + 1) * n / m)); ``output_size=1`` is global pooling.

    Parameters
    ----------
    input : array_like, shape (N, C, {dims})
    output_size : int or tuple of {nd} ints (None keeps that axis' input size)
{extra}
    Returns
    -------
    ndarray, shape (N, C, *output_size), float32 or float64{extra_returns}

    Examples
    --------
    {example}
    """

_ADAPTIVE_MAX_EXTRA = ("    return_indices : bool\n        Also return the int64 flat positions "
                       "of the maxima inside each (n, c) input plane.\n",
                       "\n    indices : ndarray of int64 (only with ``return_indices=True``)")


def adaptive_avg_pool1d(input, output_size):
    return _adaptive_poolnd(1, "avg", input, output_size)


@_args.keeps_channels_last(0, "input")
def adaptive_avg_pool2d(input, output_size):
    return _adaptive_poolnd(2, "avg", input, output_size)


def adaptive_avg_pool3d(input, output_size):
    return _adaptive_poolnd(3, "avg", input, output_size)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _adaptive_poolnd(1, "max", input, output_size, return_indices)


@_args.keeps_channels_last(0, "input")
def adaptive_max_pool2d(input, output_size, return_indices=False):
    return _adaptive_poolnd(2, "max", input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    return _adaptive_poolnd(3, "max", input, output_size, return_indices)


for _fn, _nd, _kind, _example in [
        (adaptive_avg_pool1d, 1, "avg", ">>> fastconv.adaptive_avg_pool1d(x, 2)\n"
                                        "    array([[[2.66666667, 1.66666667]]])"),
        (adaptive_avg_pool2d, 2, "avg", ">>> fastconv.adaptive_avg_pool2d(x, 1)\n"
                                        "    array([[[[7.5]]]])"),
        (adaptive_avg_pool3d, 3, "avg", ">>> fastconv.adaptive_avg_pool3d(x, (1, 2, 2)).shape\n"
                                        "    (1, 1, 1, 2, 2)"),
        (adaptive_max_pool1d, 1, "max", ">>> fastconv.adaptive_max_pool1d(x, 2)\n"
                                        "    array([[[5., 3.]]])"),
        (adaptive_max_pool2d, 2, "max", ">>> fastconv.adaptive_max_pool2d(x, 1, "
                                        "return_indices=True)\n"
                                        "    (array([[[[15.]]]]), array([[[[15]]]]))"),
        (adaptive_max_pool3d, 3, "max", ">>> fastconv.adaptive_max_pool3d(x, 3).shape\n"
                                        "    (1, 1, 3, 3, 3)")]:
    _extra = _ADAPTIVE_MAX_EXTRA if _kind == "max" else ("", "")
    _document(_fn, _ADAPTIVE_DOC.replace("{kind}", _kind).replace("{extra}", _extra[0])
              .replace("{extra_returns}", _extra[1]), _nd, _example)


_MAX_UNPOOL_DOC = """{nd}-d max-unpooling (PyTorch's ``max_unpool{nd}d``): the partial inverse of
    ``max_pool{nd}d``. Each value goes back to the position its index names inside its (n, c)
    output plane; every other element is zero (if two indices coincide, the later value wins).

    Parameters
    ----------
    input : array_like, shape (N, C, {dims})
    indices : array_like of ints, same shape
        Flat positions inside each output plane, as ``max_pool{nd}d(..., return_indices=True)``
        returns them; out-of-range indices raise ValueError.
    kernel_size, stride, padding : int or tuple of {nd} ints
        Those of the max pool (stride defaults to `kernel_size`).
    output_size : tuple of ints, optional
        The spatial (or full) output shape, within one stride of the default
        (in - 1) * stride - 2 * padding + kernel_size.

    Returns
    -------
    ndarray, shape (N, C, {odims}), float32 or float64

    Examples
    --------
    {example}
    """


@_pool_doc(_MAX_UNPOOL_DOC, 1, """>>> out, idx = fastconv.max_pool1d(x, 2, return_indices=True)
    >>> fastconv.max_unpool1d(out, idx, 2)
    array([[[0., 5., 2., 0.]]])""")
def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpoolnd(1, input, indices, kernel_size, stride, padding, output_size)


@_pool_doc(_MAX_UNPOOL_DOC, 2, """>>> out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> fastconv.max_unpool2d(out, idx, 2)[0, 0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  5.,  0.,  7.],
           [ 0.,  0.,  0.,  0.],
           [ 0., 13.,  0., 15.]])""")
@_args.keeps_channels_last(0, "input")
def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpoolnd(2, input, indices, kernel_size, stride, padding, output_size)


@_pool_doc(_MAX_UNPOOL_DOC, 3, """>>> out, idx = fastconv.max_pool3d(x, 2, return_indices=True)
    >>> fastconv.max_unpool3d(out, idx, 2).shape
    (1, 1, 4, 4, 4)""")
def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpoolnd(3, input, indices, kernel_size, stride, padding, output_size)


_BACKWARD_DOC = """Gradient of ``{op}`` with respect to its input (``fastconv.grad.{name}``).

    Parameters
    ----------
    {params}

    Returns
    -------
    ndarray of shape `input_shape`, float32 or float64: {formula}.
    Deterministic: each (n, c) plane is summed by one thread, in output order.

    Examples
    --------
    >>> import numpy as np, fastconv
    {example}
    """

_SCATTER_PARAMS = """grad_output : array_like, shape (N, C, {odims})
        Gradient of the loss with respect to the pooled output.
    indices : array_like of ints, same shape
        The indices the forward pass returned (``return_indices=True``).
    input_shape : tuple of ints
        Shape of the forward input (N, C, {dims})."""
_SCATTER_FORMULA = ("grad_input[n, c, indices[n, c, o]] += grad_output[n, c, o], so overlapping "
                    "windows add up")


def max_pool1d_backward(grad_output, indices, input_shape):
    return _max_poolnd_backward(1, grad_output, indices, input_shape)


@_args.keeps_channels_last(0, "grad_output")
def max_pool2d_backward(grad_output, indices, input_shape):
    return _max_poolnd_backward(2, grad_output, indices, input_shape)


def max_pool3d_backward(grad_output, indices, input_shape):
    return _max_poolnd_backward(3, grad_output, indices, input_shape)


def adaptive_max_pool1d_backward(grad_output, indices, input_shape):
    return _adaptive_max_poolnd_backward(1, grad_output, indices, input_shape)


@_args.keeps_channels_last(0, "grad_output")
def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    return _adaptive_max_poolnd_backward(2, grad_output, indices, input_shape)


def adaptive_max_pool3d_backward(grad_output, indices, input_shape):
    return _adaptive_max_poolnd_backward(3, grad_output, indices, input_shape)


def avg_pool1d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_poolnd_backward(1, grad_output, input_shape, kernel_size, stride, padding,
                                ceil_mode, count_include_pad, divisor_override)


@_args.keeps_channels_last(0, "grad_output")
def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_poolnd_backward(2, grad_output, input_shape, kernel_size, stride, padding,
                                ceil_mode, count_include_pad, divisor_override)


def avg_pool3d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_poolnd_backward(3, grad_output, input_shape, kernel_size, stride, padding,
                                ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool1d_backward(grad_output, input_shape):
    return _adaptive_avg_poolnd_backward(1, grad_output, input_shape)


@_args.keeps_channels_last(0, "grad_output")
def adaptive_avg_pool2d_backward(grad_output, input_shape):
    return _adaptive_avg_poolnd_backward(2, grad_output, input_shape)


def adaptive_avg_pool3d_backward(grad_output, input_shape):
    return _adaptive_avg_poolnd_backward(3, grad_output, input_shape)


def max_unpool1d_backward(grad_output, indices, input_shape):
    return _max_unpoolnd_backward(1, grad_output, indices, input_shape)


@_args.keeps_channels_last(0, "grad_output")
def max_unpool2d_backward(grad_output, indices, input_shape):
    return _max_unpoolnd_backward(2, grad_output, indices, input_shape)


def max_unpool3d_backward(grad_output, indices, input_shape):
    return _max_unpoolnd_backward(3, grad_output, indices, input_shape)


def _document_backward(nd):
    dims, odims, _ = _DIMS[nd]
    shape = {1: "(1, 1, 4)", 2: "(1, 1, 4, 4)", 3: "(1, 1, 2, 2, 2)"}[nd]
    ones = {1: "np.ones((1, 1, 2))", 2: "np.ones((1, 1, 2, 2))", 3: "np.ones((1, 1, 1, 1, 1))"}[nd]
    x = f"x = np.arange({4 ** nd if nd < 3 else 8}.).reshape{shape}"
    avg_params = (f"grad_output : array_like, shape (N, C, {odims})\n    input_shape : tuple of "
                  f"ints\n        Shape of the forward input (N, C, {dims}).\n    kernel_size, "
                  f"stride, padding, ceil_mode, count_include_pad, divisor_override\n        "
                  f"Those of the forward ``avg_pool{nd}d`` call.")
    adaptive_params = (f"grad_output : array_like, shape (N, C, *output_size)\n    input_shape "
                       f": tuple of ints\n        Shape of the forward input (N, C, {dims}); "
                       f"the output size is grad_output's.")
    unpool_params = (f"grad_output : array_like, shape (N, C, {odims})\n        Gradient with "
                     f"respect to the unpooled output.\n    indices : array_like of ints\n"
                     f"        The indices given to the forward ``max_unpool{nd}d``.\n"
                     f"    input_shape : tuple of ints\n        Shape of the forward input, "
                     f"which is also the shape of `indices`.")
    k = 2
    specs = [
        (globals()[f"max_pool{nd}d_backward"], f"max_pool{nd}d",
         _SCATTER_PARAMS.format(dims=dims, odims=odims), _SCATTER_FORMULA,
         f">>> {x}\n    >>> out, idx = fastconv.max_pool{nd}d(x, {k}, return_indices=True)\n"
         f"    >>> g = fastconv.grad.max_pool{nd}d(np.ones_like(out), idx, x.shape)\n"
         f"    >>> int(g.sum()), float(g.reshape(-1)[-1])\n    ({_out_count(nd)}, 1.0)"),
        (globals()[f"adaptive_max_pool{nd}d_backward"], f"adaptive_max_pool{nd}d",
         _SCATTER_PARAMS.format(dims=dims, odims="*output_size"), _SCATTER_FORMULA,
         f">>> {x}\n    >>> out, idx = fastconv.adaptive_max_pool{nd}d(x, 1, return_indices="
         f"True)\n    >>> g = fastconv.grad.adaptive_max_pool{nd}d(np.ones_like(out), idx, "
         f"x.shape)\n    >>> float(g.reshape(-1)[-1]), float(g.sum())\n    (1.0, 1.0)"),
        (globals()[f"avg_pool{nd}d_backward"], f"avg_pool{nd}d", avg_params,
         "each window's element receives grad_output / divisor",
         f">>> g = fastconv.grad.avg_pool{nd}d({ones}, {shape}, {k})\n"
         f"    >>> float(g.sum()), float(g.reshape(-1)[0])\n"
         f"    ({float(_out_count(nd))}, {1 / 2 ** nd})"),
        (globals()[f"adaptive_avg_pool{nd}d_backward"], f"adaptive_avg_pool{nd}d",
         adaptive_params, "each window's element receives grad_output / window size",
         f">>> g = fastconv.grad.adaptive_avg_pool{nd}d({ones}, {shape})\n"
         f"    >>> float(g.sum())\n    {float(_out_count(nd))}"),
        (globals()[f"max_unpool{nd}d_backward"], f"max_unpool{nd}d", unpool_params,
         "grad_input[n, c, o] = grad_output[n, c, indices[n, c, o]]",
         f">>> {x}\n    >>> out, idx = fastconv.max_pool{nd}d(x, {k}, return_indices=True)\n"
         f"    >>> g = fastconv.grad.max_unpool{nd}d(x, idx, out.shape)\n"
         f"    >>> bool((g == out).all())\n    True"),
    ]
    for fn, op, params, formula, example in specs:
        fn.__doc__ = _BACKWARD_DOC.format(op=op, name=op, params=params, formula=formula,
                                          example=example)


def _out_count(nd):
    """Outputs of the backward docstring examples: 2-wide pools of a 4**nd (8 for 3d) input."""
    return {1: 2, 2: 4, 3: 1}[nd]


for _nd in (1, 2, 3):
    _document_backward(_nd)
