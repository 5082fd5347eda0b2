"""``interpolate`` (nearest and (bi/tri)linear up- and downsampling) and its backward pass,
with PyTorch's semantics and argument names.

The Python layer computes, per spatial axis, the source positions and weights of every output
with PyTorch's rules (in the compute dtype, as PyTorch computes them in its accumulation type)
and the compiled kernel (fastconv/_kernels/resample.pyx) applies them separably.
"""
import math
import numbers

import numpy as np

from fastconv._kernels import resample as _resample
from fastconv._plan import args as _args
from fastconv._runtime import threads as _parallel
from fastconv._runtime.memo import memoized_tables
from fastconv._runtime.memory import pooled
from fastconv._runtime.precision import flushing_denormals

__all__ = ["interpolate", "interpolate_backward", "interpolate_output_size"]

MODES = ("nearest", "linear", "bilinear", "trilinear")
_LINEAR_NDIM = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _scales(scale_factor, nd):
    if isinstance(scale_factor, (tuple, list)):
        if len(scale_factor) != nd:
            raise ValueError(f"scale_factor must be a number or a sequence of {nd} numbers "
                             f"(one per spatial axis); got {scale_factor!r}")
        values = tuple(scale_factor)
    else:
        values = (scale_factor,) * nd
    if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
               for v in values):
        raise TypeError(f"scale_factor must be a positive number or a sequence of {nd}; got "
                        f"{scale_factor!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"scale_factor must be positive and finite; got {scale_factor!r}")
    return tuple(float(v) for v in values)


def interpolate_output_size(in_size, size=None, scale_factor=None):
    """The spatial output size of an ``interpolate`` call and the scales it uses.

    Exactly one of `size` and `scale_factor` is given. With `scale_factor` each axis has
    floor(in * scale) outputs and the scale itself maps outputs to inputs (PyTorch's default,
    ``recompute_scale_factor=None``); with `size` the scale is in / out.

    Returns
    -------
    out_size : tuple of ints
    scales : tuple of floats or Nones (None where the size was given)

    Examples
    --------
    >>> from fastconv.planning import interpolate_output_size
    >>> interpolate_output_size((5, 7), scale_factor=1.5)
    ((7, 10), (1.5, 1.5))
    """
    nd = len(in_size)
    if (size is None) == (scale_factor is None):
        raise ValueError("exactly one of size and scale_factor must be given; got "
                         + ("both" if size is not None else "neither"))
    if size is not None:
        out_size = _args.ntuple(size, nd, "size")
        if any(o < 1 for o in out_size):
            raise ValueError(f"size must be positive; got {size!r}")
        return out_size, (None,) * nd
    scales = _scales(scale_factor, nd)
    out_size = tuple(int(math.floor(n * s)) for n, s in zip(in_size, scales))
    if any(o > _args.SIZE_LIMIT for o in out_size):   # as `size` is limited
        raise ValueError(f"scale_factor={scale_factor!r} gives an output size past 2**32 for "
                         f"input spatial size {tuple(in_size)}: {out_size}")
    if any(o < 1 for o in out_size):
        raise ValueError(f"scale_factor={scale_factor!r} gives an empty output for input "
                         f"spatial size {tuple(in_size)}: output size {out_size}")
    return out_size, scales


def _nearest_axis(in_size, out_size, scale, shortcuts):
    """PyTorch's 'nearest': src = min(floor(o * s), in - 1) computed in float32, with
    s = 1 / scale_factor when given, else in / out. With `shortcuts` an output exactly as long
    as the input copies it and one exactly twice as long takes o // 2, whatever scale_factor
    says: torch 2.13's CPU kernels do this for 2-d input only (measured), so we do the same."""
    o = np.arange(out_size, dtype=np.int64)
    if shortcuts and out_size == in_size:
        src = o
    elif shortcuts and out_size == 2 * in_size:
        src = o >> 1
    else:
        s = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
        src = np.minimum(np.floor(o.astype(np.float32) * s).astype(np.int64), in_size - 1)
    return 1, np.stack([src, src]), None


def _linear_axis(in_size, out_size, scale, align_corners, dtype):
    """PyTorch's linear source index and weights, computed in the compute dtype."""
    o = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        return 1, np.stack([o, o]), None
    one, half = dtype.type(1), dtype.type(0.5)
    if align_corners:
        ratio = dtype.type(in_size - 1) / dtype.type(out_size - 1) if out_size > 1 \
            else dtype.type(0)
        real = ratio * o.astype(dtype)
    else:
        ratio = dtype.type(1.0 / scale) if scale else dtype.type(in_size) / dtype.type(out_size)
        real = np.maximum(ratio * (o.astype(dtype) + half) - half, dtype.type(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    lam1 = np.clip(real - i0.astype(dtype), dtype.type(0), one).astype(dtype)
    i1 = i0 + (i0 < in_size - 1)
    return 2, np.stack([i0, i1]), np.stack([one - lam1, lam1])


def _axes(nd, in_size, out_size, scales, mode, align_corners, dtype):
    """Per axis, padded to three: (taps, src, weight) with src and weight (2, out) arrays."""
    axes = [(1, np.zeros((2, 1), np.int64), None)] * (3 - nd)
    for n, o, s in zip(in_size, out_size, scales):
        axes.append(_nearest_axis(n, o, s, nd == 2) if mode == "nearest"
                    else _linear_axis(n, o, s, align_corners, dtype))
    return [(taps, src, weight if weight is not None else
             np.stack([np.ones(src.shape[1]), np.zeros(src.shape[1])]).astype(dtype))
            for taps, src, weight in axes]


@memoized_tables
def _tables(nd, in_size, out_size, scales, mode, align_corners, dtype):
    """(taps, src, weight) for the kernel, padded to three axes."""
    axes = _axes(nd, in_size, out_size, scales, mode, align_corners, dtype)
    taps = tuple(a[0] for a in axes)
    src = np.ascontiguousarray(np.concatenate([a[1] for a in axes], axis=1), dtype=np.int64)
    weight = np.concatenate([a[2] for a in axes], axis=1)
    return taps, src, np.ascontiguousarray(weight, dtype=dtype)


def ranks_in_groups(counts):
    """For consecutive groups of counts[k] elements: each element's place in its group."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def adjoint_axis(in_size, out_size, i, o, w, dtype):
    """One axis of a separable linear map's adjoint, as the gather tables of
    _resample.adjoint_gather: the entries (input position i, output position o, weight w) of
    the forward map grouped by input position, in output order, padded to the largest fan-in
    with position `out_size` (read as zero) and weight 0."""
    if out_size >= 2**31 - 1:      # the tables are int32 (the kernel's vector gathers)
        raise ValueError(f"the gradient of an axis of {out_size} outputs is not supported "
                         f"(at most 2**31 - 2)")
    order = np.lexsort((o, i))
    i, o, w = i[order], o[order], w[order]
    counts = np.bincount(i, minlength=in_size)
    rank = ranks_in_groups(counts)
    src = np.full((max(int(counts.max(initial=0)), 1), in_size), out_size, np.int32)
    weight = np.zeros(src.shape, dtype)
    src[rank, i] = o
    weight[rank, i] = w
    return src, weight


@flushing_denormals
def apply_adjoint(grad_out, grad_in, axes, nd):
    """grad_in (N, C, *in) := the adjoint map given by `axes` (three adjoint_axis tables, D, H,
    W, with unit leading axes) applied to grad_out (N, C, *out)."""
    if grad_in.size:
        _resample.adjoint_gather(
            _planes(np.ascontiguousarray(grad_out, dtype=grad_in.dtype), nd), _planes(grad_in, nd),
            tuple(a[0] for a in axes), tuple(a[1] for a in axes),
            _parallel.threads_for(grad_out.size + grad_in.size))
    return grad_in


def _check_call(ndim, mode, align_corners, name, op):
    if ndim not in (3, 4, 5):
        raise ValueError(f"{name} must be 3-, 4- or 5-d (N, C, *spatial) for {op}; got "
                         f"{ndim}-d")
    _args.choice(mode, "mode", MODES)
    nd = ndim - 2
    if mode in _LINEAR_NDIM and _LINEAR_NDIM[mode] != nd:
        need = _LINEAR_NDIM[mode] + 2
        raise ValueError(f"mode={mode!r} needs {need}-d {name} (N, C, "
                         f"{_args.SPATIAL_NAMES[need - 2]}); got {ndim}-d")
    if mode == "nearest":
        if align_corners is not None:
            raise ValueError(f"align_corners can only be set with the linear modes (linear, "
                             f"bilinear, trilinear); got align_corners={align_corners!r} with "
                             f"mode='nearest'")
        return nd, False
    if align_corners is None:
        align_corners = False
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"align_corners must be None or a bool; got {align_corners!r}")
    return nd, bool(align_corners)


def interpolation_tables(input_shape, size, scale_factor, mode, align_corners, dtype):
    """(out_size, taps, src, weight) of a checked interpolate call on `input_shape`."""
    nd, align = _check_call(len(input_shape), mode, align_corners, "input", "interpolate")
    out_size, scales = interpolate_output_size(tuple(input_shape[2:]), size, scale_factor)
    taps, src, weight = _tables(nd, tuple(input_shape[2:]), out_size, scales, mode, align,
                                np.dtype(dtype))
    return out_size, taps, src, weight


@flushing_denormals
def resample_with_tables(x, out_shape, taps, src, weight):
    """interpolate's kernel on `x` (N, C, *spatial) with given tables, into a new array."""
    nd = x.ndim - 2
    out = np.empty(out_shape, weight.dtype)
    if out.size:
        _resample.interpolate_forward(
            _planes(np.ascontiguousarray(x, dtype=weight.dtype), nd), _planes(out, nd), taps,
            np.ascontiguousarray(src), np.ascontiguousarray(weight),
            _parallel.threads_for(out.size * max(taps)))
    return out


def _planes(a, nd):
    return a.reshape((a.shape[0] * a.shape[1],) + (1,) * (3 - nd) + a.shape[2:])


@pooled
@_args.keeps_channels_last(0, "input")
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize by nearest-neighbour duplication or (bi/tri)linear interpolation (PyTorch's
    ``interpolate``).

    Parameters
    ----------
    input : array_like, shape (N, C, L), (N, C, H, W) or (N, C, D, H, W)
    size : int or tuple of ints, optional
        Output spatial size.
    scale_factor : float or tuple of floats, optional
        Multiplier of the spatial size (floor(in * scale) outputs); exactly one of `size` and
        `scale_factor` is given.
    mode : {'nearest', 'linear', 'bilinear', 'trilinear'}
        'nearest' copies input ``min(floor(o * in / out), in - 1)`` (``1 / scale_factor`` when
        given); the linear modes are for 3-, 4- and 5-d input respectively.
    align_corners : bool, optional
        Linear modes only (default False). True maps the corner pixels' centres onto each other:
        ``src = o * (in - 1) / (out - 1)``; False maps pixel areas:
        ``src = max((o + 0.5) * in / out - 0.5, 0)``.

    Returns
    -------
    ndarray, shape (N, C, *out_size), float32 or float64

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[0., 1., 2.]]])
    >>> fastconv.interpolate(x, scale_factor=2)
    array([[[0., 0., 1., 1., 2., 2.]]])
    >>> fastconv.interpolate(x, size=5, mode="linear", align_corners=True)
    array([[[0. , 0.5, 1. , 1.5, 2. ]]])
    """
    x = _args.as_array(input, "input")
    dtype = _args.compute_dtype(input=x)
    nd, align = _check_call(x.ndim, mode, align_corners, "input", "interpolate")
    if any(n == 0 for n in x.shape[2:]):
        raise ValueError(f"input must have non-empty spatial dimensions for interpolate; got "
                         f"shape {x.shape}")
    out_size, scales = interpolate_output_size(x.shape[2:], size, scale_factor)
    _args.check_output_size(x.shape[:2] + out_size, np.float64, "size or scale_factor")
    taps, src, weight = _tables(nd, x.shape[2:], out_size, scales, mode, align, dtype)
    out = np.empty(x.shape[:2] + out_size, dtype)
    _resample.interpolate_forward(_planes(np.ascontiguousarray(x, dtype=dtype), nd),
                                  _planes(out, nd), taps, src, weight,
                                  _parallel.threads_for(out.size * max(taps)))
    return out


@pooled
@_args.keeps_channels_last(0, "grad_output")
def interpolate_backward(grad_output, input_shape, size=None, scale_factor=None,
                         mode="nearest", align_corners=None):
    """Gradient of :func:`interpolate` with respect to its input (``fastconv.grad.interpolate``).

    Parameters
    ----------
    grad_output : array_like, shape (N, C, *out_size)
        Gradient of the loss with respect to the interpolated output.
    input_shape : tuple of ints
        Shape of the forward input.
    size, scale_factor, mode, align_corners
        Those of the forward call (they define the same source positions and weights).

    Returns
    -------
    ndarray of shape `input_shape`: every output's gradient sent back to the inputs it was
    interpolated from, with the same weights (nearest: summed over the duplicates).
    Deterministic: each gradient row is summed by one thread, in a fixed order.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> g = fastconv.grad.interpolate(np.ones((1, 1, 6)), (1, 1, 3), scale_factor=2)
    >>> g
    array([[[2., 2., 2.]]])
    """
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(grad_output=g)
    op = "interpolate backward"
    if not isinstance(input_shape, (tuple, list)) or not all(_args.is_int(n) for n in input_shape):
        raise TypeError(f"input_shape must be a sequence of ints for {op}; got {input_shape!r}")
    shape = tuple(int(n) for n in input_shape)
    nd, align = _check_call(len(shape), mode, align_corners, "input_shape", op)
    if any(n < 0 for n in shape) or any(n == 0 for n in shape[2:]):
        raise ValueError(f"input_shape must be non-negative with non-empty spatial dimensions "
                         f"for {op}; got {shape}")
    out_size, scales = interpolate_output_size(shape[2:], size, scale_factor)
    expected = shape[:2] + out_size
    if g.shape != expected:
        raise ValueError(f"grad_output must have the forward output's shape {expected} for "
                         f"{op}; got {g.shape}")
    _args.check_output_size(shape, np.float64, "input_shape")
    axes = _adjoint_tables(nd, shape[2:], out_size, scales, mode, align, dtype)
    return apply_adjoint(g, np.empty(shape, dtype), axes, nd)


@memoized_tables
def _adjoint_tables(nd, in_size, out_size, scales, mode, align_corners, dtype):
    """interpolate's adjoint as three adjoint_axis tables (D, H, W)."""
    axes = []
    for n, m, (taps, src, weight) in zip((1,) * (3 - nd) + in_size, (1,) * (3 - nd) + out_size,
                                         _axes(nd, in_size, out_size, scales, mode,
                                               align_corners, dtype)):
        o = np.tile(np.arange(m, dtype=np.int64), taps)
        axes.append(adjoint_axis(n, m, src[:taps].ravel(), o, weight[:taps].ravel(), dtype))
    return tuple(axes)
