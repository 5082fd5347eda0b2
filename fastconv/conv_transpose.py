"""Transposed convolution in 1, 2 and 3 dimensions (PyTorch's ``conv_transpose{1,2,3}d``),
and its gradients.

A transposed convolution is the input gradient of the strided convolution whose input has the
transposed convolution's output shape: it runs on the same kernels (GEMM + col2im, or direct
gathering loops, chosen by ``fastconv.dispatch.INPUT_GRAD_RULES``). Its input gradient is that
convolution's forward pass, and its weight gradient that convolution's weight gradient.
"""
import numpy as np

from fastconv import _args
from fastconv.conv_grad import check_grad_output, run_input_grad, run_weight_grad, \
    shape_argument
from fastconv.convolution import _normalize_padding, run_conv
from fastconv.dispatch import ConvProblem, select

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "conv_transpose1d_input", "conv_transpose2d_input", "conv_transpose3d_input",
           "conv_transpose1d_weight", "conv_transpose2d_weight", "conv_transpose3d_weight"]


def _transpose_problem(nd, x_shape, w_shape, bias_shape, stride, padding, output_padding,
                       groups, dilation):
    """Check a transposed convolution call; describe it as the ConvProblem of the convolution
    it transposes (whose input has this call's output shape, and whose output this input's)."""
    dims = _args.SPATIAL_NAMES[nd]
    name = f"conv_transpose{nd}d"
    if len(x_shape) != nd + 2:
        raise ValueError(f"input must be {nd + 2}-d (N, C_in, {dims}) for {name}; got shape "
                         f"{tuple(x_shape)}")
    if len(w_shape) != nd + 2:
        raise ValueError(f"weight must be {nd + 2}-d (C_in, C_out/groups, {dims}) for {name}; "
                         f"got shape {tuple(w_shape)}")
    groups = _args.positive_int(groups, "groups")
    stride = _args.ntuple(stride, nd, "stride", minimum=1)
    dilation = _args.ntuple(dilation, nd, "dilation", minimum=1)
    output_padding = _args.ntuple(output_padding, nd, "output_padding", minimum=0)
    if isinstance(padding, str):
        raise ValueError(f"padding of {name} must be an int, {nd} ints or {nd} (before, after) "
                         f"pairs (string padding is for convolution only); got {padding!r}")
    batch, c_in = x_shape[:2]
    w_in, c_out_g = w_shape[:2]
    kernel = tuple(w_shape[2:])
    pads = _normalize_padding(padding, nd, kernel, stride, dilation)
    if c_in == 0 or any(n == 0 for n in x_shape[2:]):
        raise ValueError(f"input must have non-empty channel and spatial dimensions; got shape "
                         f"{tuple(x_shape)}")
    if w_in == 0 or c_out_g == 0 or any(k == 0 for k in kernel):
        raise ValueError(f"weight must have non-empty dimensions; got shape {tuple(w_shape)}")
    if w_in != c_in:
        raise ValueError(f"weight.shape[0] must be C_in = input.shape[1] = {c_in}; got weight "
                         f"shape {tuple(w_shape)}")
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide C_in={c_in} (input.shape[1])")
    c_out = c_out_g * groups
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(f"bias must have shape (C_out,) = ({c_out},) (weight.shape[1] x "
                         f"groups); got {tuple(bias_shape)}")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(f"output_padding must be smaller than stride or dilation (as in "
                             f"PyTorch); got output_padding {output_padding}, stride {stride}, "
                             f"dilation {dilation}")
    out_size = tuple((n - 1) * s - p0 - p1 + d * (k - 1) + op + 1
                     for n, s, (p0, p1), d, k, op in zip(x_shape[2:], stride, pads, dilation,
                                                          kernel, output_padding))
    if any(n < 1 for n in out_size):
        raise ValueError(f"padding {padding!r} is too large: the output size would be "
                         f"{out_size} for input shape {tuple(x_shape)}, kernel {kernel}, "
                         f"stride {stride}, dilation {dilation}")
    _args.check_output_size((batch, c_out_g * groups) + out_size, np.float64,
                            "the input size, stride, padding, output_padding and dilation")
    # The convolution with (p0, p1 - output_padding) maps out_size back to exactly the input
    # size; only its `before` padding reaches the kernels.
    conv_pads = tuple((p0, p1 - op) for (p0, p1), op in zip(pads, output_padding))
    return ConvProblem(batch=int(batch), in_channels=int(c_out), out_channels=int(c_in),
                       groups=groups, in_size=out_size, kernel_size=kernel, stride=stride,
                       padding=conv_pads, dilation=dilation)


def _output_shape(problem):
    return (problem.batch, problem.in_channels) + tuple(problem.in_size)


def _conv_transposend(nd, input, weight, bias, stride, padding, output_padding, groups, dilation,
                      algorithm):
    x = _args.as_array(input, "input")
    w = _args.as_array(weight, "weight")
    b = None if bias is None else _args.as_array(bias, "bias")
    dtype = _args.compute_dtype(input=x, weight=w, bias=b)
    problem = _transpose_problem(nd, x.shape, w.shape, None if b is None else b.shape, stride,
                                 padding, output_padding, groups, dilation)
    out = run_input_grad(problem, w, x, dtype, algorithm)
    if b is not None:
        out += b.astype(dtype).reshape((1, -1) + (1,) * nd)
    return out


def _transpose_input_grad(nd, input_shape, weight, grad_output, stride, padding, output_padding,
                          groups, dilation):
    w = _args.as_array(weight, "weight")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(weight=w, grad_output=g)
    input_shape = shape_argument(input_shape, "input_shape", nd + 2)
    problem = _transpose_problem(nd, input_shape, w.shape, None, stride, padding,
                                 output_padding, groups, dilation)
    check_grad_output(g, _output_shape(problem), f"conv_transpose{nd}d")
    # the convolution this transposes, run forward on the output gradient
    out = np.empty(problem.out_shape, dtype)
    return run_conv(problem, g, w, None, out, select(problem))


def _transpose_weight_grad(nd, input, weight_shape, grad_output, stride, padding, output_padding,
                           groups, dilation):
    x = _args.as_array(input, "input")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(input=x, grad_output=g)
    weight_shape = shape_argument(weight_shape, "weight_shape", nd + 2)
    problem = _transpose_problem(nd, x.shape, weight_shape, None, stride, padding,
                                 output_padding, groups, dilation)
    check_grad_output(g, _output_shape(problem), f"conv_transpose{nd}d")
    # roles swap: the convolution's input is our output gradient, its output gradient our input
    return run_weight_grad(problem, g, x, weight_shape, dtype)


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
    algorithm : {{'auto', 'direct', 'col2im', 'gemm1x1'}}
        'auto' lets the dispatcher choose (``fastconv.dispatch.INPUT_GRAD_RULES``).

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


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return _conv_transposend(1, input, weight, bias, stride, padding, output_padding, groups,
                             dilation, algorithm)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return _conv_transposend(2, input, weight, bias, stride, padding, output_padding, groups,
                             dilation, algorithm)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return _conv_transposend(3, input, weight, bias, stride, padding, output_padding, groups,
                             dilation, algorithm)


def conv_transpose1d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input_grad(1, input_shape, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def conv_transpose2d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input_grad(2, input_shape, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def conv_transpose3d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input_grad(3, input_shape, weight, grad_output, stride, padding,
                                 output_padding, groups, dilation)


def conv_transpose1d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight_grad(1, input, weight_shape, grad_output, stride, padding,
                                  output_padding, groups, dilation)


def conv_transpose2d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight_grad(2, input, weight_shape, grad_output, stride, padding,
                                  output_padding, groups, dilation)


def conv_transpose3d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight_grad(3, input, weight_shape, grad_output, stride, padding,
                                  output_padding, groups, dilation)


_DIMS = {1: ("L", "kL", "L_out"), 2: ("H, W", "kH, kW", "H_out, W_out"),
         3: ("D, H, W", "kD, kH, kW", "D_out, H_out, W_out")}
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

for _nd, _fns in ((1, (conv_transpose1d, conv_transpose1d_input, conv_transpose1d_weight)),
                  (2, (conv_transpose2d, conv_transpose2d_input, conv_transpose2d_weight)),
                  (3, (conv_transpose3d, conv_transpose3d_input, conv_transpose3d_weight))):
    _dims, _kdims, _odims = _DIMS[_nd]
    for _fn, _doc, _example in zip(_fns, (_FORWARD_DOC, _INPUT_DOC, _WEIGHT_DOC),
                                   _EXAMPLES[_nd]):
        _fn.__doc__ = _doc.format(nd=_nd, n=_nd + 2, dims=_dims, kdims=_kdims, odims=_odims,
                                  example=_example)
