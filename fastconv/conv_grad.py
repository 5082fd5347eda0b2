"""Gradients of convolution, with the signatures of ``torch.nn.grad``.

``conv{1,2,3}d_input`` and ``conv{1,2,3}d_weight`` take the forward call's arguments (the
input or weight as a shape) and the gradient of its output; ``conv_bias`` sums the output
gradient. They accept every padding form and padding mode of the forward convolution: a
reflect/replicate/circular pad is run on the explicitly padded input and its gradient folded
back onto the input pixels it copied.
"""
import contextlib
import functools
from math import prod

import numpy as np

from fastconv import _args, _conv, _conv_backward, _parallel
from fastconv.convolution import _NUMPY_PAD_MODE, _as_5d, _conv_problem
from fastconv.dispatch import (ConvProblem, blas_runs_full_width, fits_blas, gemm_band_rows,
                               input_grad_phase_grid, input_grad_work_split, phase_grid_tile,
                               select_input_grad, weight_grad_chunks, weight_grad_phase_grid)

_parallel.register_blas_hook(_conv_backward)

__all__ = ["conv1d_input", "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight",
           "conv3d_weight", "conv_bias"]


def shape_argument(value, name, ndim):
    """A shape given as a sequence of `ndim` non-negative ints, as a tuple."""
    if not isinstance(value, (tuple, list)) or not all(_args.is_int(v) for v in value):
        raise TypeError(f"{name} must be a tuple of {ndim} ints; got {value!r}")
    if len(value) != ndim:
        raise ValueError(f"{name} must have {ndim} entries; got {tuple(value)}")
    if any(v < 0 for v in value):
        raise ValueError(f"{name} must be non-negative; got {tuple(value)}")
    return tuple(int(v) for v in value)


def check_grad_output(grad_output, expected_shape, forward):
    if grad_output.shape != tuple(expected_shape):
        raise ValueError(f"grad_output must have the shape of the {forward} output, "
                         f"{tuple(expected_shape)}; got {grad_output.shape}")


def explicitly_padded(problem):
    """The problem a non-zero padding mode becomes once its padding is copied into the input."""
    if problem.padding_mode == "zeros" or all(p == (0, 0) for p in problem.padding):
        return problem
    size = tuple(n + a + b for n, (a, b) in zip(problem.in_size, problem.padding))
    return ConvProblem(problem.batch, problem.in_channels, problem.out_channels, problem.groups,
                       size, problem.kernel_size, problem.stride, ((0, 0),) * problem.ndim,
                       problem.dilation)


def fold_padding(grad_padded, problem):
    """The gradient of ``np.pad(x, problem.padding, mode)`` applied to `grad_padded`: every
    padded pixel's gradient is added to the input pixel it was copied from."""
    grad = grad_padded
    for axis, (size, (before, after)) in enumerate(zip(problem.in_size, problem.padding)):
        # for every padded position, the index of its source along this axis
        source = np.pad(np.arange(size), (before, after),
                        mode=_NUMPY_PAD_MODE[problem.padding_mode])
        moved = np.moveaxis(grad, axis + 2, 0)
        folded = moved[before:before + size].copy()
        np.add.at(folded, source[:before], moved[:before])
        np.add.at(folded, source[before + size:], moved[before + size:])
        grad = np.moveaxis(folded, 0, axis + 2)
    return np.ascontiguousarray(grad)


def subpixel_phases(problem):
    """The input gradient of `problem` (a transposed convolution) as stride-1 convolutions.

    Along an axis with stride s, input position i = o * s - p + k * d receives from the taps
    k of one residue class: for phase f = (i + p) mod s those with k = f + m * s. So the
    input positions i = i0 + q * s of phase f are a stride-1 correlation of the output
    gradient with that phase's taps, reversed (d = 1; with s = 1, any d, there is one phase:
    the whole kernel, reversed, dilated). Returns, per axis, a list of phases
    (start i0, count, taps, padding before, padding after, phase); padding may be negative
    (a crop of the gradient). None for a stride and a dilation on one axis."""
    per_axis = []
    for n_in, n_out, k, s, (p, _), d in zip(problem.in_size, problem.out_size,
                                            problem.kernel_size, problem.stride,
                                            problem.padding, problem.dilation):
        if s > 1 and d > 1:
            return None
        phases = []
        for f in range(s):
            taps = -(-(k - f) // s) if f < k else 0            # k = f, f + s, ... < kernel
            q_lo = -((f - p) // s)                              # ceil((p - f) / s)
            q_hi = (n_in - 1 + p - f) // s
            count = q_hi - q_lo + 1
            if count <= 0:
                continue
            start = q_lo * s + f - p
            span = (taps - 1) * d + 1 if taps else 0
            before = span - 1 - q_lo if s > 1 else (k - 1) * d - p
            after = count + span - 1 - n_out - before
            phases.append((start, count, taps, before, after, f))
        per_axis.append(phases)
    return per_axis


def subpixel_plan(problem):
    """The stride-1 convolutions (one per combination of phases along the axes) that make up
    the input gradient of `problem`, as (output slices, tap slices, gradient slices, padding,
    dilation) tuples; phases that no tap reaches are left out (their gradient is zero).
    None when some phase would need more cropping than the gradient has (use col2im)."""
    per_axis = subpixel_phases(problem)
    if per_axis is None:
        return None
    plan = []
    for combo in np.ndindex(*[len(p) for p in per_axis]):
        phases = [per_axis[a][i] for a, i in enumerate(combo)]
        if any(taps == 0 for _, _, taps, _, _, _ in phases):
            continue
        out_index, taps_index, g_index, padding = [], [], [], []
        for (start, count, taps, before, after, f), n_out, s, d in zip(
                phases, problem.out_size, problem.stride, problem.dilation):
            out_index.append(slice(start, start + count * s, s))
            taps_index.append(slice(f, None, s) if s > 1 else slice(None))
            lo, hi = max(0, -before), n_out + min(0, after)
            if hi - lo <= 0:
                return None
            g_index.append(slice(lo, hi))
            padding.append((max(0, before), max(0, after)))
            span = ((taps - 1) * (d if s == 1 else 1)) + 1
            if hi - lo + padding[-1][0] + padding[-1][1] < span:
                return None
        dilation = tuple(d if s == 1 else 1 for s, d in zip(problem.stride, problem.dilation))
        plan.append((tuple(out_index), tuple(taps_index), tuple(g_index), tuple(padding),
                     dilation))
    return plan


def _run_subpixel(problem, w, g, dtype, plan):
    """Input gradient by phases (see subpixel_phases), each on the forward kernels."""
    nd = problem.ndim
    everything = (slice(None), slice(None))
    dx = np.zeros((problem.batch, problem.in_channels) + tuple(problem.in_size), dtype)
    groups = problem.groups
    w5 = _as_5d(w, nd)
    for out_index, taps_index, g_index, padding, dilation in plan:
        # this phase's taps, reversed, channels transposed per group (one pass in Cython)
        phase = tuple(t.start or 0 for t in taps_index)
        step = tuple(t.step or 1 for t in taps_index)
        taps = tuple(len(range(k)[t]) for k, t in zip(w.shape[2:], taps_index))
        sub_w = np.empty((problem.in_channels, problem.out_per_group) + taps, dtype)
        _conv.adjoint_phase_weight(w5, _as_5d(sub_w, nd), groups, (0,) * (3 - nd) + phase,
                                   (1,) * (3 - nd) + step)
        sub_g = g[everything + g_index]
        dx[everything + out_index] = _stride1_conv(sub_g, sub_w, padding, dilation, groups,
                                                   dtype)
    return dx


def _stride1_conv(x, w, padding, dilation, groups, dtype):
    """conv(x, w) with stride 1, zero `padding` pairs and `dilation`, on the forward kernels."""
    from fastconv.convolution import run_conv
    from fastconv.dispatch import select

    nd = w.ndim - 2
    problem = ConvProblem(x.shape[0], x.shape[1], w.shape[0], groups, tuple(x.shape[2:]),
                          tuple(w.shape[2:]), (1,) * nd, tuple(padding), tuple(dilation))
    y = np.empty(problem.out_shape, dtype)
    run_conv(problem, x, w, None, y, select(problem))
    return y


def _own_gemm(problem):
    """True if the GEMMs of `problem` run on fastconv's micro-kernel rather than BLAS."""
    return not blas_runs_full_width() or not fits_blas(problem)


@functools.lru_cache(maxsize=512)
def _kernel_geometry(problem):
    """(stride, padding before, dilation) of `problem` in 3-d, as the kernels take them."""
    unit, zero = (1,) * (3 - problem.ndim), (0,) * (3 - problem.ndim)
    return (unit + problem.stride, zero + tuple(p[0] for p in problem.padding),
            unit + problem.dilation)


def run_input_grad(problem, weight, grad_output, dtype, algorithm="auto"):
    """The input gradient of the zero-padded convolution `problem` (shape problem.batch,
    problem.in_channels, *problem.in_size); padding pairs only their `before` part matters."""
    nd = problem.ndim
    choice = select_input_grad(problem, algorithm)
    w = np.ascontiguousarray(weight, dtype=dtype)
    g = np.ascontiguousarray(grad_output, dtype=dtype)
    shape = (problem.batch, problem.in_channels) + tuple(problem.in_size)
    if prod(shape) == 0 or g.size == 0:
        return np.zeros(shape, dtype)
    if choice.algorithm == "subpixel":
        return _run_subpixel(problem, w, g, dtype, subpixel_plan(problem))
    dx = np.empty(shape, dtype)   # every kernel writes (or first zeroes) all of it
    threads = _parallel.threads_for(problem.multiply_adds)
    band, chunks = input_grad_work_split(problem, dtype.itemsize, threads)
    kernel = choice.algorithm
    if kernel == "col2im" and input_grad_phase_grid(problem, dtype.itemsize, w):
        kernel = "col2im-phase"
        band = phase_grid_tile(problem, dtype.itemsize, _conv.packed_tile_width(
            dtype == np.float64)[1])
    own_gemm = _own_gemm(problem)
    uses_blas = kernel == "gemm1x1" or (kernel == "col2im" and not own_gemm)
    with _parallel.single_threaded_blas if uses_blas else contextlib.nullcontext():
        _conv_backward.conv_input_grad(_as_5d(g, nd), _as_5d(w, nd), _as_5d(dx, nd),
                                       *_kernel_geometry(problem), problem.groups,
                                       kernel, band, chunks, threads, own_gemm)
    return dx


def run_weight_grad(problem, input, grad_output, weight_shape, dtype, bias_out=None):
    """The weight gradient of the zero-padded convolution `problem` on `input`; with
    `bias_out` (an array of C_out elements), the bias gradient too, written there (on the
    phase grid it is summed while the output gradient is read anyway)."""
    nd = problem.ndim
    x = np.ascontiguousarray(input, dtype=dtype)
    g = np.ascontiguousarray(grad_output, dtype=dtype)
    dw = np.zeros(weight_shape, dtype)
    if g.size == 0:
        if bias_out is not None:
            bias_out[...] = 0
        return dw
    threads = _parallel.threads_for(problem.multiply_adds)
    band = gemm_band_rows(problem, dtype.itemsize)
    phase_images = weight_grad_phase_grid(problem, dtype.itemsize, threads)
    if phase_images:   # work units: blocks of phase_images images of one group
        units = -(-problem.batch // phase_images) * problem.groups
        chunks = int(max(1, min(units, 4 * threads)))
    else:
        chunks = weight_grad_chunks(problem, threads, band)
    own_gemm = _own_gemm(problem)
    uses_blas = not phase_images and not own_gemm
    with _parallel.single_threaded_blas if uses_blas else contextlib.nullcontext():
        _conv_backward.conv_weight_grad(_as_5d(x, nd), _as_5d(g, nd), _as_5d(dw, nd),
                                        *_kernel_geometry(problem), problem.groups,
                                        problem.pointwise and fits_blas(problem), band,
                                        chunks, threads, own_gemm, phase_images,
                                        bias_out if phase_images else None)
    if bias_out is not None and not phase_images:
        bias_out[...] = bias_grad_of(g, dtype)
    return dw


def _input_grad(nd, input_shape, weight, grad_output, stride, padding, dilation, groups,
                padding_mode, algorithm):
    w = _args.as_array(weight, "weight")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(weight=w, grad_output=g)
    input_shape = shape_argument(input_shape, "input_shape", nd + 2)
    problem = _conv_problem(nd, input_shape, w.shape, None, stride, padding, dilation, groups,
                            padding_mode)
    check_grad_output(g, problem.out_shape, f"conv{nd}d")
    return input_grad_of(problem, w, g, dtype, algorithm)


def _weight_grad(nd, input, weight_shape, grad_output, stride, padding, dilation, groups,
                 padding_mode):
    x = _args.as_array(input, "input")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(input=x, grad_output=g)
    weight_shape = shape_argument(weight_shape, "weight_shape", nd + 2)
    problem = _conv_problem(nd, x.shape, weight_shape, None, stride, padding, dilation, groups,
                            padding_mode)
    check_grad_output(g, problem.out_shape, f"conv{nd}d")
    return weight_grad_of(problem, x, g, weight_shape, dtype)


# The gradients of a checked call (its ConvProblem, operands of its shapes): the public
# functions above after their checks, and the framework wrappers, which keep the problem of
# the forward call and skip checking it again (fastconv.torch).

def input_grad_of(problem, weight, grad_output, dtype, algorithm="auto"):
    """The input gradient of the checked convolution `problem`, any padding mode."""
    padded = explicitly_padded(problem)
    grad = run_input_grad(padded, weight, grad_output, dtype, algorithm)
    return grad if padded is problem else fold_padding(grad, problem)


def weight_grad_of(problem, input, grad_output, weight_shape, dtype, bias_out=None):
    """The weight gradient of the checked convolution `problem` on `input`, any padding mode
    (and the bias gradient into `bias_out`, if given: see run_weight_grad)."""
    padded = explicitly_padded(problem)
    if padded is not problem:
        input = np.pad(input, ((0, 0), (0, 0)) + problem.padding,
                       mode=_NUMPY_PAD_MODE[problem.padding_mode])
    return run_weight_grad(padded, input, grad_output, weight_shape, dtype, bias_out)


def bias_grad_of(grad_output, dtype):
    """The bias gradient from a checked output gradient of at least 3 dimensions."""
    out = np.zeros(grad_output.shape[1], dtype)
    if grad_output.size:
        planes = np.ascontiguousarray(grad_output, dtype=dtype).reshape(
            grad_output.shape[0], grad_output.shape[1], -1)
        _conv_backward.bias_grad(planes, out, _parallel.threads_for(grad_output.size))
    return out


_INPUT_DOC = """Gradient of ``conv{nd}d`` with respect to its input
    (``torch.nn.grad.conv{nd}d_input``).

    Parameters
    ----------
    input_shape : tuple of {n} ints
        Shape of the forward call's input (N, C_in, {dims}).
    weight : array_like, shape (C_out, C_in / groups, {kdims})
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, dilation, groups, padding_mode
        As in the forward call (every padding form and mode of :func:`fastconv.conv{nd}d`).
    algorithm : {{'auto', 'direct', 'col2im', 'gemm1x1'}}
        'auto' lets the dispatcher choose (``fastconv.dispatch.INPUT_GRAD_RULES``).

    Returns
    -------
    ndarray of shape `input_shape`, float32 or float64.

    Examples
    --------
    {example}
    """

_WEIGHT_DOC = """Gradient of ``conv{nd}d`` with respect to its weight
    (``torch.nn.grad.conv{nd}d_weight``).

    Parameters
    ----------
    input : array_like, shape (N, C_in, {dims})
        The forward call's input.
    weight_shape : tuple of {n} ints
        Shape of the forward call's weight (C_out, C_in / groups, {kdims}).
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, dilation, groups, padding_mode
        As in the forward call.

    Returns
    -------
    ndarray of shape `weight_shape`, float32 or float64. Deterministic for a given thread
    count: partial sums over fixed runs of the work are added in a fixed order.

    Examples
    --------
    {example}
    """


def conv1d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, algorithm="auto"):
    return _input_grad(1, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode, algorithm)


def conv2d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, algorithm="auto"):
    return _input_grad(2, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode, algorithm)


def conv3d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, algorithm="auto"):
    return _input_grad(3, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode, algorithm)


def conv1d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _weight_grad(1, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode)


def conv2d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _weight_grad(2, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode)


def conv3d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _weight_grad(3, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode)


def conv_bias(grad_output):
    """Gradient of any convolution (or transposed convolution) with respect to its bias: the
    output gradient summed over the batch and every spatial axis.

    Parameters
    ----------
    grad_output : array_like, shape (N, C_out, *spatial)

    Returns
    -------
    ndarray, shape (C_out,)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.conv_bias(np.ones((2, 3, 4, 4), np.float32))
    array([32., 32., 32.], dtype=float32)
    """
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(grad_output=g)
    if g.ndim < 3:
        raise ValueError(f"grad_output must be at least 3-d (N, C_out, *spatial); got shape "
                         f"{g.shape}")
    return bias_grad_of(g, dtype)


_EXAMPLES = {
    1: (""">>> import numpy as np, fastconv
    >>> w = np.ones((1, 1, 2), np.float32)
    >>> fastconv.grad.conv1d_input((1, 1, 4), w, np.ones((1, 1, 3), np.float32))
    array([[[1., 2., 2., 1.]]], dtype=float32)""",
        """>>> import numpy as np, fastconv
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    >>> fastconv.grad.conv1d_weight(x, (1, 1, 2), np.ones((1, 1, 3), np.float32))
    array([[[3., 6.]]], dtype=float32)"""),
    2: (""">>> import numpy as np, fastconv
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> g = np.ones((1, 4, 8, 8), np.float32)
    >>> fastconv.grad.conv2d_input((1, 3, 8, 8), w, g, padding=1).shape
    (1, 3, 8, 8)""",
        """>>> import numpy as np, fastconv
    >>> x = np.ones((1, 3, 8, 8), np.float32)
    >>> g = np.ones((1, 4, 8, 8), np.float32)
    >>> fastconv.grad.conv2d_weight(x, (4, 3, 3, 3), g, padding=1).shape
    (4, 3, 3, 3)"""),
    3: (""">>> import numpy as np, fastconv
    >>> w = np.ones((2, 1, 3, 3, 3), np.float32)
    >>> g = np.ones((1, 2, 2, 2, 2), np.float32)
    >>> fastconv.grad.conv3d_input((1, 1, 4, 4, 4), w, g).shape
    (1, 1, 4, 4, 4)""",
        """>>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 4, 4, 4), np.float32)
    >>> g = np.ones((1, 2, 2, 2, 2), np.float32)
    >>> fastconv.grad.conv3d_weight(x, (2, 1, 3, 3, 3), g).shape
    (2, 1, 3, 3, 3)"""),
}
_DIMS = {1: ("L", "kL"), 2: ("H, W", "kH, kW"), 3: ("D, H, W", "kD, kH, kW")}

for _nd, (_fi, _fw) in ((1, (conv1d_input, conv1d_weight)), (2, (conv2d_input, conv2d_weight)),
                        (3, (conv3d_input, conv3d_weight))):
    _fi.__doc__ = _INPUT_DOC.format(nd=_nd, n=_nd + 2, dims=_DIMS[_nd][0], kdims=_DIMS[_nd][1],
                                    example=_EXAMPLES[_nd][0])
    _fw.__doc__ = _WEIGHT_DOC.format(nd=_nd, n=_nd + 2, dims=_DIMS[_nd][0], kdims=_DIMS[_nd][1],
                                     example=_EXAMPLES[_nd][1])
