"""Check a call and see its plan without running it.

Every convolution-family call is checked once into a frozen :class:`ConvProblem` (shapes,
stride, per-side padding, padding mode, dilation, groups) and planned once into a
:class:`Plan`: the :class:`Kernel` that runs, why, and how it cuts its work. The operators do
exactly this before they compute; this module lets a front end, or a user planning a
network, do it alone: output shapes, receptive fields, which kernel a layer will run.

>>> import fastconv.planning as fp
>>> problem = fp.conv_problem(2, (8, 64, 56, 56), (64, 64, 3, 3), padding=1)
>>> problem.out_shape
(8, 64, 56, 56)
>>> fp.plan_conv(problem, "float32").algorithm
'winograd'
"""
from collections import namedtuple

import numpy as np

from fastconv._ops.interpolate import interpolate_output_size
from fastconv._ops.pooling import pool_output_size, unpool_output_size
from fastconv._plan import args as _args
from fastconv._plan import dispatch as _dispatch
from fastconv._plan.args import as_channels_last, is_channels_last  # noqa: F401
from fastconv._plan.dispatch import (
    ALGORITHMS, CHANNELS_LAST_ALGORITHMS, INPUT_GRAD_ALGORITHMS, INPUT_GRAD_RULES, RULES,
    SUPPORTS, WEIGHT_GRAD_ALGORITHMS, WEIGHT_GRAD_RULES, ChannelsLastPlan, Kernel, Plan, Rule,
    algorithm_names, plan_channels_last, supports, variants,
)
from fastconv._plan.problems import (
    ConvProblem, conv_problem, conv_transpose_problem, locally_connected_problem,
    normalize_padding, problem_from_call,
)

__all__ = [
    "ConvProblem", "Plan", "Kernel", "Rule", "conv_problem", "conv_transpose_problem",
    "locally_connected_problem", "problem_from_call", "plan_conv", "plan_input_grad",
    "plan_weight_grad", "choose_algorithm", "choose_grad_algorithms", "GradPlans",
    "algorithm_names", "variants", "output_shape", "receptive_field", "ReceptiveField",
    "pool_output_size", "unpool_output_size", "interpolate_output_size", "RULES",
    "INPUT_GRAD_RULES", "WEIGHT_GRAD_RULES", "ALGORITHMS", "INPUT_GRAD_ALGORITHMS",
    "WEIGHT_GRAD_ALGORITHMS", "SUPPORTS", "supports", "pool_output_shape", "adaptive_pool_output_shape",
    "unpool_output_shape", "compute_dtype", "ntuple", "normalize_padding",
    "interpolation_tables", "ChannelsLastPlan", "plan_channels_last", "is_channels_last",
    "as_channels_last", "CHANNELS_LAST_ALGORITHMS",
]


def _checked(problem, dtype):
    if not isinstance(problem, ConvProblem):
        raise TypeError(f"problem must be a ConvProblem (from conv_problem, "
                        f"conv_transpose_problem or problem_from_call); got "
                        f"{type(problem).__name__}")
    return _dtype_of(dtype)


def plan_conv(problem, dtype="float32", algorithm="auto"):
    """The Plan that ``conv{n}d`` runs for the checked `problem` in `dtype` ('auto', a
    family of ALGORITHMS or a kernel's name: ``algorithm_names("forward")``)."""
    return _dispatch.plan_conv(problem, _checked(problem, dtype), algorithm)


def plan_input_grad(problem, dtype="float32", algorithm="auto", weight=None):
    """The Plan of the input gradient (or transposed convolution) of `problem`; with
    `weight`, as for those weights (the phase-grid kernels need finite ones)."""
    dtype = _checked(problem, dtype)
    w = None if weight is None else _args.as_array(weight, "weight")
    if w is not None:
        _args.compute_dtype(weight=w)   # a real numeric array, or TypeError naming it
    return _dispatch.plan_input_grad(problem, dtype, algorithm, w)


def plan_weight_grad(problem, dtype="float32", algorithm="auto"):
    """The Plan of the weight gradient of `problem`."""
    return _dispatch.plan_weight_grad(problem, _checked(problem, dtype), algorithm)


def _dtype_of(dtype, **operands):
    """The compute dtype: `dtype`'s if given, else the array operands', else float32."""
    if dtype is not None:
        try:
            probe = np.empty(0, dtype)
        except TypeError as err:
            raise TypeError(f"dtype must be a NumPy dtype; got {dtype!r} ({err})") from None
        return _args.compute_dtype(dtype=probe)
    arrays = {k: _args.as_array(v, k) for k, v in operands.items()
              if v is not None and not isinstance(v, (tuple, list))}
    return _args.compute_dtype(**arrays) if arrays else np.dtype(np.float32)


def choose_algorithm(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     padding_mode="zeros", *, dtype=None):
    """The plan ``algorithm='auto'`` runs for this convolution call, and why.

    `input` and `weight` may be arrays or shapes; the dimensionality follows the weight. The
    dtype is `dtype`, else the arrays' (float32 for shapes): tiles depend on it. A
    channels-last `input` array (NHWC memory, as ``x_nhwc.transpose(0, 3, 1, 2)`` gives) gets
    a :class:`ChannelsLastPlan` where the channels-last kernels compute the call.

    Returns
    -------
    Plan
        ``plan.algorithm`` (the family), ``plan.kernel`` (the exact variant), ``plan.reason``;
        ``plan.explain()`` says it all in one line.

    Examples
    --------
    >>> import fastconv
    >>> plan = fastconv.choose_algorithm((1, 144, 56, 56), (144, 1, 3, 3), padding=1,
    ...                                  groups=144)
    >>> plan.algorithm, plan.kernel.name
    ('direct', 'CONV_DIRECT_PLANES')
    """
    problem = problem_from_call(input, weight, bias, stride, padding, dilation, groups,
                                padding_mode)
    if _args.is_channels_last(input):
        channels_last = _dispatch.plan_channels_last(
            problem, _dtype_of(dtype, input=input, weight=weight, bias=bias))
        if channels_last is not None:
            return channels_last
    return plan_conv(problem, _dtype_of(dtype, input=input, weight=weight, bias=bias))


GradPlans = namedtuple("GradPlans", ["input", "weight"])
GradPlans.__doc__ = "The plans of a convolution's input gradient and weight gradient."


def choose_grad_algorithms(input, weight, stride=1, padding=0, dilation=1, groups=1,
                           padding_mode="zeros", *, dtype=None):
    """The plans ``algorithm='auto'`` runs for the input and weight gradients of this
    convolution call (``fastconv.grad.conv{n}d_input`` / ``_weight``), and why.

    Examples
    --------
    >>> import fastconv.planning as fp
    >>> plans = fp.choose_grad_algorithms((32, 64, 28, 28), (64, 64, 3, 3), padding=1)
    >>> plans.input.algorithm, plans.weight.algorithm
    ('winograd', 'winograd')
    >>> fp.choose_grad_algorithms((32, 64, 28, 28), (64, 64, 3, 3), stride=2,
    ...                           padding=1).weight.algorithm
    'phase'
    """
    problem = problem_from_call(input, weight, None, stride, padding, dilation, groups,
                                padding_mode)
    dtype = _dtype_of(dtype, input=input, weight=weight)
    w = None if isinstance(weight, (tuple, list)) else _args.as_array(weight, "weight")
    return GradPlans(plan_input_grad(problem, dtype, "auto", w),
                     plan_weight_grad(problem, dtype))


def output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Shape of ``conv{1,2,3}d(input, weight, ...)``: per spatial axis
    ``(in + p_before + p_after - dilation * (k - 1) - 1) // stride + 1``.

    Raises the same errors as the convolution itself for shapes that do not fit.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.output_shape((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    (1, 64, 112, 112)
    """
    return problem_from_call(tuple(input_shape), tuple(weight_shape), None, stride, padding,
                             dilation, groups).out_shape


ReceptiveField = namedtuple("ReceptiveField", ["size", "jump", "start"])
ReceptiveField.__doc__ = """Receptive field of one output of a layer stack, per spatial axis.

size: input pixels one output sees; jump: input pixels between neighbouring outputs (the
product of strides); start: input index where the first output's field begins (negative when
it reaches into padding)."""


def receptive_field(layers):
    """Receptive field of a stack of convolution/pooling layers, applied first to last.

    Parameters
    ----------
    layers : sequence of dict
        Each with ``kernel_size`` and optionally ``stride`` (1), ``padding`` (0) and
        ``dilation`` (1): ints, or tuples with one value per spatial axis (padding may also
        give (before, after) pairs). Pooling layers are described the same way.

    Returns
    -------
    ReceptiveField of tuples, one value per axis.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.receptive_field([dict(kernel_size=3, padding=1)] * 2)
    ReceptiveField(size=(5,), jump=(1,), start=(-2,))
    >>> fastconv.receptive_field([dict(kernel_size=7, stride=2, padding=3),
    ...                           dict(kernel_size=3, stride=2, padding=1)]).size
    (11,)
    """
    if isinstance(layers, dict) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a sequence of dicts; got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError("layers must contain at least one layer; got an empty sequence")
    nd = None
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or "kernel_size" not in layer:
            raise TypeError(f"layers[{i}] must be a dict with a 'kernel_size'; got {layer!r}")
        unknown = set(layer) - {"kernel_size", "stride", "padding", "dilation"}
        if unknown:
            raise ValueError(f"layers[{i}] has unknown keys {sorted(unknown)}")
        k = layer["kernel_size"]
        n = len(k) if isinstance(k, (tuple, list)) else None
        nd = nd or n
    nd = nd or 1
    size, jump, start = [1] * nd, [1] * nd, [0] * nd
    for i, layer in enumerate(layers):
        k = _args.ntuple(layer["kernel_size"], nd, f"layers[{i}]['kernel_size']", minimum=1)
        s = _args.ntuple(layer.get("stride", 1), nd, f"layers[{i}]['stride']", minimum=1)
        d = _args.ntuple(layer.get("dilation", 1), nd, f"layers[{i}]['dilation']", minimum=1)
        pads = normalize_padding(layer.get("padding", 0), nd, k, s, d)
        for a in range(nd):
            start[a] -= pads[a][0] * jump[a]
            size[a] += d[a] * (k[a] - 1) * jump[a]
            jump[a] *= s[a]
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


def _shape(input_shape, nd):
    if nd not in (1, 2, 3):
        raise ValueError(f"nd must be 1, 2 or 3; got {nd!r}")
    return _args.shape_argument(input_shape, "input_shape", nd + 2)


def pool_output_shape(nd, input_shape, kernel_size, stride=None, padding=0, dilation=1,
                      ceil_mode=False):
    """Shape of ``max_pool{nd}d`` / ``avg_pool{nd}d`` on an input of `input_shape` (PyTorch's
    rule per axis, :func:`pool_output_size`); stride defaults to the kernel size.

    >>> import fastconv.planning as fp
    >>> fp.pool_output_shape(2, (1, 64, 112, 112), 3, 2, 1)
    (1, 64, 56, 56)
    """
    input_shape = _shape(input_shape, nd)
    kernel = _args.ntuple(kernel_size, nd, "kernel_size", minimum=1)
    stride = kernel if stride is None else _args.ntuple(stride, nd, "stride", minimum=1)
    padding = _args.ntuple(padding, nd, "padding", minimum=0)
    dilation = _args.ntuple(dilation, nd, "dilation", minimum=1)
    return tuple(input_shape[:2]) + tuple(
        pool_output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(input_shape[2:], kernel, stride, padding, dilation))


def adaptive_pool_output_shape(nd, input_shape, output_size):
    """Shape of ``adaptive_{avg,max}_pool{nd}d`` with `output_size` on `input_shape`."""
    return _shape(input_shape, nd)[:2] + _args.ntuple(output_size, nd, "output_size",
                                                       minimum=1)


def unpool_output_shape(nd, input_shape, kernel_size, stride=None, padding=0,
                        output_size=None):
    """Shape of ``max_unpool{nd}d`` on an input of `input_shape` (see
    :func:`unpool_output_size`)."""
    input_shape = _shape(input_shape, nd)
    kernel = _args.ntuple(kernel_size, nd, "kernel_size", minimum=1)
    stride = kernel if stride is None else _args.ntuple(stride, nd, "stride", minimum=1)
    padding = _args.ntuple(padding, nd, "padding", minimum=0)
    return tuple(input_shape[:2]) + tuple(
        unpool_output_size(tuple(input_shape[2:]), kernel, stride, padding, output_size))


def compute_dtype(*arrays):
    """The dtype fastconv computes in for these arrays (float32 or float64; NumPy's promotion,
    integers in float64), or TypeError for complex, object and other dtypes."""
    return _args.compute_dtype(**{f"array {i}": a for i, a in enumerate(arrays)
                                  if a is not None})


def ntuple(value, n, name, minimum=None):
    """An int or a sequence of `n` ints as a tuple of `n` ints (each >= `minimum`), or a
    ValueError/TypeError naming `name`: the normalisation every operator applies."""
    return _args.ntuple(value, n, name, minimum)


def interpolation_tables(input_shape, size=None, scale_factor=None, mode="nearest",
                         align_corners=None, dtype="float64"):
    """(out_size, taps, src, weight): the checked output size of an ``interpolate`` call and
    the per-axis source positions and weights the resampling kernel applies (PyTorch's
    rules), for front ends that resample an image block by block with
    :func:`fastconv.operators.resample_with_tables`."""
    from fastconv._ops.interpolate import interpolation_tables as tables
    return tables(tuple(input_shape), size, scale_factor, mode, align_corners, dtype)
