"""Transposed convolution in 1, 2 and 3 dimensions (PyTorch's ``conv_transpose{1,2,3}d``),
and its gradients.

A transposed convolution is the input gradient of the strided convolution whose input has the
transposed convolution's output shape: it runs on the same kernels (GEMM + col2im, or direct
gathering loops, chosen by ``fastconv.planning.INPUT_GRAD_RULES``). Its input gradient is that
convolution's forward pass, and its weight gradient that convolution's weight gradient.
"""
import numpy as np

from fastconv._ops.conv import run_conv
from fastconv._ops.conv_grad import input_grad_of, weight_grad_of
from fastconv._ops.docs import document
from fastconv._plan import args as _args
from fastconv._plan.dispatch import plan_conv
from fastconv._plan.problems import check_grad_output, conv_transpose_problem
from fastconv._runtime.memory import pooled

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "conv_transpose1d_input", "conv_transpose2d_input", "conv_transpose3d_input",
           "conv_transpose1d_weight", "conv_transpose2d_weight", "conv_transpose3d_weight"]


def transpose_call(nd, input, weight, bias, stride, padding, output_padding, groups, dilation,
                   algorithm="auto"):
    """(problem, output) of a checked conv_transpose{nd}d call; the problem is the convolution
    it transposes (front ends keep it for the backward pass)."""
    x = _args.as_array(input, "input")
    w = _args.as_array(weight, "weight")
    b = None if bias is None else _args.as_array(bias, "bias")
    dtype = _args.compute_dtype(input=x, weight=w, bias=b)
    problem = conv_transpose_problem(nd, x.shape, w.shape, None if b is None else b.shape,
                                     stride, padding, output_padding, groups, dilation)
    out = input_grad_of(problem, w, x, dtype, algorithm)
    if b is not None:
        out += b.astype(dtype).reshape((1, -1) + (1,) * nd)
    return problem, out


@pooled
def transpose_input_grad_of(problem, weight, grad_output, dtype):
    """The input gradient of a checked transposed convolution: the convolution it
    transposes, run forward on the output gradient."""
    out = np.empty(problem.out_shape, dtype)
    return run_conv(problem, plan_conv(problem, dtype), grad_output, weight, None, out)


def transpose_weight_grad_of(problem, input, grad_output, weight_shape, dtype):
    """The weight gradient of a checked transposed convolution: roles swap, the convolution's
    input is our output gradient, its output gradient our input."""
    return weight_grad_of(problem, grad_output, input, weight_shape, dtype)


def _transpose_input_grad(nd, input_shape, weight, grad_output, stride, padding, output_padding,
                          groups, dilation):
    w = _args.as_array(weight, "weight")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(weight=w, grad_output=g)
    input_shape = _args.shape_argument(input_shape, "input_shape", nd + 2)
    problem = conv_transpose_problem(nd, input_shape, w.shape, None, stride, padding,
                                     output_padding, groups, dilation)
    check_grad_output(g, problem.in_shape, f"conv_transpose{nd}d")
    return transpose_input_grad_of(problem, w, g, dtype)


def _transpose_weight_grad(nd, input, weight_shape, grad_output, stride, padding, output_padding,
                           groups, dilation):
    x = _args.as_array(input, "input")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(input=x, grad_output=g)
    weight_shape = _args.shape_argument(weight_shape, "weight_shape", nd + 2)
    problem = conv_transpose_problem(nd, x.shape, weight_shape, None, stride, padding,
                                     output_padding, groups, dilation)
    check_grad_output(g, problem.in_shape, f"conv_transpose{nd}d")
    return transpose_weight_grad_of(problem, x, g, weight_shape, dtype)


_FORWARD_DOC = """{nd}-d transposed convolution (PyTorch's ``conv_transpose{nd}d``).

    The adjoint of ``conv{nd}d`` with the same weight, stride, padding, dilation and groups:
    every input pixel scatters ``input[n, c, i] * weight[c, o, k]`` to output position
    ``i * stride + k * dilation - padding``. The output size per axis is
    ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.

    Parameters
    ----------
    input : array_like, shape (N, C_in, {dims})
    weight : array_like, shape (C_in, C_out / groups, {kdims})
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or tuple of {nd} ints
    padding : int, tuple of {nd} ints, or tuple of {nd} (before, after) pairs
        Removed from the output (the padding of the convolution this transposes).
    output_padding : int or tuple of {nd} ints
        Extra size added after each axis, to pick among the input sizes a strided convolution
        maps to the same output size; must be smaller than stride or dilation.
    groups : int
    algorithm : str
        'auto' lets the dispatcher choose (``fastconv.planning.INPUT_GRAD_RULES``); a family
        or a kernel variant (``fastconv.planning.algorithm_names("input_grad")``) forces it.

    Returns
    -------
    ndarray, shape (N, C_out, {odims}), float32 or float64.

    Examples
    --------
    {example}
    """

_INPUT_DOC = """Gradient of ``conv_transpose{nd}d`` with respect to its input: the convolution
    it transposes, applied to `grad_output`.

    Parameters
    ----------
    input_shape : tuple of {n} ints
        Shape of the forward call's input (N, C_in, {dims}).
    weight : array_like, shape (C_in, C_out / groups, {kdims})
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, output_padding, groups, dilation
        As in the forward call.

    Returns
    -------
    ndarray of shape `input_shape`.

    Examples
    --------
    {example}
    """

_WEIGHT_DOC = """Gradient of ``conv_transpose{nd}d`` with respect to its weight.

    Parameters
    ----------
    input : array_like, shape (N, C_in, {dims})
        The forward call's input.
    weight_shape : tuple of {n} ints
        Shape of the forward call's weight (C_in, C_out / groups, {kdims}).
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, output_padding, groups, dilation
        As in the forward call.

    Returns
    -------
    ndarray of shape `weight_shape`.

    Examples
    --------
    {example}
    """


_EXAMPLES = {
    1: (""">>> import numpy as np, fastconv
    >>> x = np.array([[[1., 2., 3.]]], np.float32)
    >>> fastconv.conv_transpose1d(x, np.ones((1, 1, 2), np.float32), stride=2)
    array([[[1., 1., 2., 2., 3., 3.]]], dtype=float32)""",
        """>>> import numpy as np, fastconv
    >>> w = np.ones((1, 1, 2), np.float32)
    >>> fastconv.grad.conv_transpose1d_input((1, 1, 3), w, np.arange(6.).reshape(1, 1, 6), stride=2)
    array([[[1., 5., 9.]]])""",
        """>>> import numpy as np, fastconv
    >>> x = np.array([[[1., 2., 3.]]])
    >>> fastconv.grad.conv_transpose1d_weight(x, (1, 1, 2), np.ones((1, 1, 6)), stride=2)
    array([[[6., 6.]]])"""),
    2: (""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 8, 4, 4), np.float32)
    >>> w = np.ones((8, 3, 4, 4), np.float32)
    >>> fastconv.conv_transpose2d(x, w, stride=2, padding=1).shape
    (1, 3, 8, 8)""",
        """>>> import numpy as np, fastconv
    >>> w = np.ones((8, 3, 4, 4), np.float32)
    >>> g = np.ones((1, 3, 8, 8), np.float32)
    >>> fastconv.grad.conv_transpose2d_input((1, 8, 4, 4), w, g, stride=2, padding=1).shape
    (1, 8, 4, 4)""",
        """>>> import numpy as np, fastconv
    >>> x = np.ones((1, 8, 4, 4), np.float32)
    >>> g = np.ones((1, 3, 8, 8), np.float32)
    >>> fastconv.grad.conv_transpose2d_weight(x, (8, 3, 4, 4), g, stride=2, padding=1).shape
    (8, 3, 4, 4)"""),
    3: (""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 4, 2, 3, 3), np.float32)
    >>> w = np.ones((4, 2, 2, 2, 2), np.float32)
    >>> fastconv.conv_transpose3d(x, w, stride=2).shape
    (1, 2, 4, 6, 6)""",
        """>>> import numpy as np, fastconv
    >>> w = np.ones((4, 2, 2, 2, 2), np.float32)
    >>> g = np.ones((1, 2, 4, 6, 6), np.float32)
    >>> fastconv.grad.conv_transpose3d_input((1, 4, 2, 3, 3), w, g, stride=2).shape
    (1, 4, 2, 3, 3)""",
        """>>> import numpy as np, fastconv
    >>> x = np.ones((1, 4, 2, 3, 3), np.float32)
    >>> g = np.ones((1, 2, 4, 6, 6), np.float32)
    >>> fastconv.grad.conv_transpose3d_weight(x, (4, 2, 2, 2, 2), g, stride=2).shape
    (4, 2, 2, 2, 2)"""),
}


@document(_FORWARD_DOC, nd=1, example=_EXAMPLES[1][0])
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return transpose_call(1, input, weight, bias, stride, padding, output_padding, groups,
                          dilation, algorithm)[1]


@document(_FORWARD_DOC, nd=2, example=_EXAMPLES[2][0])
@_args.keeps_channels_last(0, "input")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return transpose_call(2, input, weight, bias, stride, padding, output_padding, groups,
                          dilation, algorithm)[1]


@document(_FORWARD_DOC, nd=3, example=_EXAMPLES[3][0])
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return transpose_call(3, input, weight, bias, stride, padding, output_padding, groups,
                          dilation, algorithm)[1]


@document(_INPUT_DOC, nd=1, example=_EXAMPLES[1][1])
def conv_transpose1d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input_grad(1, input_shape, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


@document(_INPUT_DOC, nd=2, example=_EXAMPLES[2][1])
@_args.keeps_channels_last(2, "grad_output")
def conv_transpose2d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input_grad(2, input_shape, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


@document(_INPUT_DOC, nd=3, example=_EXAMPLES[3][1])
def conv_transpose3d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input_grad(3, input_shape, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


@document(_WEIGHT_DOC, nd=1, example=_EXAMPLES[1][2])
def conv_transpose1d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight_grad(1, input, weight_shape, grad_output, stride, padding,
                                  output_padding, groups, dilation)


@document(_WEIGHT_DOC, nd=2, example=_EXAMPLES[2][2])
def conv_transpose2d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight_grad(2, input, weight_shape, grad_output, stride, padding,
                                  output_padding, groups, dilation)


@document(_WEIGHT_DOC, nd=3, example=_EXAMPLES[3][2])
def conv_transpose3d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight_grad(3, input, weight_shape, grad_output, stride, padding,
                                  output_padding, groups, dilation)
