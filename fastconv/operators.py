"""The operator table: every public operator once, with its dimensionalities, its forward
and backward passes and its arguments.

The front ends (``fastconv.torch``, ``fastconv.jax``) wrap operators from this table, one
autograd Function (one ``custom_vjp``) per kind of operator:

- ``weighted`` (convolution, transposed convolution, locally connected): input, weight and an
  optional bias; the forward keeps a checked state (the problem) for the three gradients;
- ``indexed`` (max pooling, adaptive max pooling, max-unpooling): indices route the gradient;
- ``plain`` (average and adaptive average pooling, interpolation): the backward needs only
  the forward's arguments.

The generic tests (bad input, fuzzing) iterate over it too, so a new operator is added here
and is tested and wrapped from here.

>>> import fastconv.operators as ops
>>> ops.OPERATORS["conv"].dims
(1, 2, 3)
>>> ops.OPERATORS["max_pool"].forward(2).__name__
'max_pool2d'
"""
from dataclasses import dataclass

import fastconv
from fastconv import grad as _grad
from fastconv._ops.conv import conv_call
from fastconv._ops.conv_grad import bias_grad_of, conv_grads_of, input_grad_of, weight_grad_of
from fastconv._ops.conv_transpose import (transpose_call, transpose_input_grad_of,
                                          transpose_weight_grad_of)

from fastconv._ops.interpolate import resample_with_tables

__all__ = ["Operator", "OPERATORS", "WeightedGradients", "resample_with_tables"]


@dataclass(frozen=True)
class WeightedGradients:
    """How a weighted operator runs and differentiates, with one signature for all of them.

    call(nd, x, w, b, kwargs) -> (state, out); input_grad(state, input_shape, w, g) -> dx;
    weight_grad(state, x, weight_shape, g, bias_out) -> (dw, bias filled?);
    bias_grad(state, g) -> db. `state` is whatever the forward checked (a ConvProblem), so the
    backward pass does not check the call again.
    """
    call: object
    input_grad: object
    weight_grad: object
    bias_grad: object
    # grads(state, x, w, g, bias_out) -> (dx, dw, bias filled?): both at once, where the
    # operator has a pass that shares them (None: the two calls)
    grads: object = None


@dataclass(frozen=True)
class Operator:
    """One public operator: its name (the functions are ``{name}{nd}d``), kind, dims and the
    non-tensor arguments in PyTorch's order with their defaults."""
    name: str
    kind: str                       # 'weighted', 'indexed' or 'plain'
    dims: tuple
    args: tuple                     # ((name, default), ...)
    weighted: WeightedGradients = None
    forward_only_args: tuple = ()   # arguments the backward pass does not take

    def forward(self, nd):
        """The public forward function for `nd` dimensions (``fastconv.conv2d``)."""
        return getattr(fastconv, self._function_name(nd))

    def backward(self, nd):
        """``fastconv.grad``'s backward pass of a pooling or resampling operator."""
        return getattr(_grad, self._function_name(nd))

    def gradients(self, nd):
        """(input gradient, weight gradient, bias gradient) of a weighted operator as
        ``fastconv.grad``'s public functions, which check their arguments."""
        name = self._function_name(nd)
        bias = _grad.locally_connected_bias if self.name == "locally_connected" \
            else _grad.conv_bias
        return getattr(_grad, f"{name}_input"), getattr(_grad, f"{name}_weight"), bias

    def _function_name(self, nd):
        if self.name == "interpolate":   # one function for every dimensionality
            return self.name
        if nd not in self.dims:
            raise ValueError(f"{self.name} exists in {self.dims} dimensions; got {nd}")
        return f"{self.name}{nd}d"


def _conv_weight_grad(problem, x, weight_shape, g, bias_out):
    return weight_grad_of(problem, x, g, weight_shape, g.dtype, bias_out), bias_out is not None


def _transpose_weight_grad(problem, x, weight_shape, g, bias_out):
    return transpose_weight_grad_of(problem, x, g, weight_shape, g.dtype), False


_CONV = WeightedGradients(
    call=lambda nd, x, w, b, kw: conv_call(nd, x, w, b, **kw),
    input_grad=lambda problem, shape, w, g: input_grad_of(problem, w, g, g.dtype),
    weight_grad=_conv_weight_grad,
    bias_grad=lambda problem, g: bias_grad_of(g, g.dtype),
    grads=lambda problem, x, w, g, bias_out: conv_grads_of(problem, x, w, g, g.dtype,
                                                           bias_out) + (bias_out is not None,))

_CONV_TRANSPOSE = WeightedGradients(
    call=lambda nd, x, w, b, kw: transpose_call(nd, x, w, b, **kw),
    input_grad=lambda problem, shape, w, g: transpose_input_grad_of(problem, w, g, g.dtype),
    weight_grad=_transpose_weight_grad,
    bias_grad=lambda problem, g: bias_grad_of(g, g.dtype))

_LOCALLY_CONNECTED = WeightedGradients(
    call=lambda nd, x, w, b, kw: ((nd, kw), getattr(fastconv, f"locally_connected{nd}d")(
        x, w, b, **kw)),
    input_grad=lambda state, shape, w, g: getattr(_grad, f"locally_connected{state[0]}d_input")(
        shape, w, g, **state[1]),
    weight_grad=lambda state, x, shape, g, bias_out: (getattr(
        _grad, f"locally_connected{state[0]}d_weight")(x, shape, g, **state[1]), False),
    bias_grad=lambda state, g: _grad.locally_connected_bias(g))

_POOL_ARGS = (("kernel_size", None), ("stride", None), ("padding", 0))

OPERATORS = {op.name: op for op in (
    Operator("conv", "weighted", (1, 2, 3),
             (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1),
              ("padding_mode", "zeros")), _CONV),
    Operator("conv_transpose", "weighted", (1, 2, 3),
             (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1),
              ("dilation", 1)), _CONV_TRANSPOSE),
    Operator("locally_connected", "weighted", (1, 2),
             (("stride", 1), ("padding", 0), ("dilation", 1)), _LOCALLY_CONNECTED),
    Operator("max_pool", "indexed", (1, 2, 3),
             _POOL_ARGS + (("dilation", 1), ("ceil_mode", False), ("return_indices", False))),
    Operator("adaptive_max_pool", "indexed", (1, 2, 3),
             (("output_size", None), ("return_indices", False))),
    Operator("max_unpool", "indexed", (1, 2, 3), _POOL_ARGS + (("output_size", None),)),
    Operator("avg_pool", "plain", (1, 2, 3),
             _POOL_ARGS + (("ceil_mode", False), ("count_include_pad", True),
                           ("divisor_override", None))),
    Operator("adaptive_avg_pool", "plain", (1, 2, 3), (("output_size", None),),
             forward_only_args=("output_size",)),   # the gradient's shape says it
    Operator("interpolate", "plain", (1, 2, 3),
             (("size", None), ("scale_factor", None), ("mode", "nearest"),
              ("align_corners", None))),
)}
