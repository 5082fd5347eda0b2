"""fastconv inside PyTorch: autograd functions and ``nn.Module`` layers.

Every operator is a ``torch.autograd.Function`` whose forward and backward call fastconv's
kernels on NumPy views of the tensors (``Tensor.numpy()`` / ``torch.from_numpy``: no copy);
the layers subclass PyTorch's own (``fastconv.torch.Conv2d`` is a ``torch.nn.Conv2d``), so
parameters, initialization, ``state_dict`` and ``repr`` are PyTorch's, and a model swaps its
layers by changing one import::

    from fastconv import torch as fnn       # instead of: from torch import nn as fnn
    layer = fnn.Conv2d(3, 16, 3, padding=1)

CPU float32/float64 tensors only: a CUDA tensor, another dtype, or mixed dtypes raise
TypeError (never a silent copy to another device or type). First-order gradients only.

Install with ``pip install "fastconv[torch]"``.
"""
import math

import numpy as np

try:
    import torch
    from torch.autograd.function import once_differentiable
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise ImportError("fastconv.torch needs PyTorch; install the extra: "
                      "pip install \"fastconv[torch]\"") from err

from fastconv.operators import OPERATORS
from fastconv.planning import as_channels_last, is_channels_last, output_shape

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "locally_connected1d", "locally_connected2d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d", "interpolate",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "LocallyConnected1d", "LocallyConnected2d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d",
    "Upsample",
]

_COMPUTED_DTYPES = (torch.float32, torch.float64)


def as_numpy(tensor, name):
    """A NumPy view of a CPU float32/float64 tensor (no copy), or TypeError naming `name`."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
    if not tensor.is_cpu:
        raise TypeError(f"{name} must be a CPU tensor (fastconv computes on the CPU and never "
                        f"copies between devices); got a tensor on {tensor.device}")
    if tensor.dtype not in _COMPUTED_DTYPES:
        raise TypeError(f"{name} must be float32 or float64; got {tensor.dtype}")
    try:
        return tensor.detach().numpy()
    except (RuntimeError, TypeError):
        if tensor.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor; got layout "
                            f"{tensor.layout}") from None
        # a lazily negated view: numpy() refuses it, resolve_neg materializes it
        return tensor.detach().resolve_neg().numpy()


def _numpy_operands(**tensors):
    """NumPy views of the operands (None stays None), checked once: one dtype for all
    (PyTorch does not mix float32 and float64 either)."""
    arrays = tuple(None if t is None else as_numpy(t, k) for k, t in tensors.items())
    dtypes = {a.dtype for a in arrays if a is not None}
    if len(dtypes) > 1:
        given = ", ".join(f"{k}: {t.dtype}" for k, t in tensors.items() if t is not None)
        raise TypeError(f"tensors must share one dtype (float32 or float64); got {given}")
    return arrays


def _tensor(array):
    """A tensor sharing `array`'s memory (fastconv returns fresh, writeable arrays)."""
    return torch.from_numpy(array)


def _grad_numpy(grad):
    # gradients arriving from autograd are often expanded views (stride 0); the kernels want
    # a contiguous array, so this is the one place a copy may happen, and only then (a
    # channels-last gradient stays as it is: the operators keep that memory format)
    g = as_numpy(grad, "grad_output")
    if g.flags.c_contiguous or is_channels_last(g):
        return g
    return np.ascontiguousarray(g)


# ---------------------------------------------------------------------------------------------
# Autograd functions. Non-tensor arguments travel as one keyword dict, so one Function class
# serves every dimensionality; each also gets its operands' NumPy views, made and checked
# once by the caller (the per-call overhead is what small inputs pay).

class WeightedFunction(torch.autograd.Function):
    """Every weighted operator of fastconv.operators (conv, conv_transpose,
    locally_connected): forward, input, weight and bias gradients by fastconv."""

    @staticmethod
    def forward(ctx, input, weight, bias, op, nd, kwargs, arrays):
        # the checked state (the problem) travels to the backward pass, which runs the
        # gradient kernels without checking the call again (small layers pay Python time)
        ops = OPERATORS[op].weighted
        ctx.state, out = ops.call(nd, *arrays, kwargs)
        ctx.ops = ops
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        return _tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        g = _grad_numpy(grad_output)
        ops, state = ctx.ops, ctx.state
        wants_db = ctx.has_bias and ctx.needs_input_grad[2]
        bias_out = np.empty(g.shape[1], g.dtype) if wants_db else None  # may come filled
        dx = dw = None
        filled = False
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] and ops.grads is not None:
            # both in one call: some layers (depthwise) compute them in one pass
            dx, dw, filled = ops.grads(state, as_numpy(input, "input"),
                                       as_numpy(weight, "weight"), g, bias_out)
        else:
            if ctx.needs_input_grad[0]:
                dx = ops.input_grad(state, tuple(input.shape), as_numpy(weight, "weight"), g)
            if ctx.needs_input_grad[1]:
                dw, filled = ops.weight_grad(state, as_numpy(input, "input"),
                                             tuple(weight.shape), g, bias_out)
        if dx is not None and is_channels_last(g):   # in the input's memory format
            dx = as_channels_last(dx)
        db = None
        if wants_db:
            db = _tensor(bias_out if filled else ops.bias_grad(state, g))
        return (None if dx is None else _tensor(dx), None if dw is None else _tensor(dw), db,
                None, None, None, None)


class MaxPoolFunction(torch.autograd.Function):
    """max_pool{n}d with indices; the backward scatters through the indices."""

    @staticmethod
    def forward(ctx, input, name, spec, array):
        op, nd = name
        out, indices = OPERATORS[op].forward(nd)(array, **dict(spec), return_indices=True)
        indices = _tensor(indices)
        ctx.mark_non_differentiable(indices)
        ctx.name, ctx.input_shape = name, tuple(input.shape)
        ctx.save_for_backward(indices)
        return _tensor(out), indices

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_indices):
        (indices,) = ctx.saved_tensors
        op, nd = ctx.name
        dx = OPERATORS[op].backward(nd)(_grad_numpy(grad_output), indices.numpy(),
                                        ctx.input_shape)
        return _tensor(dx), None, None, None


class PlainFunction(torch.autograd.Function):
    """Every plain operator of fastconv.operators (avg_pool, adaptive_avg_pool, interpolate):
    the backward pass needs only the forward call's arguments."""

    @staticmethod
    def forward(ctx, input, name, spec, array):
        kwargs = dict(spec)
        op, nd = name
        out = OPERATORS[op].forward(nd)(array, **kwargs)
        ctx.name, ctx.kwargs, ctx.input_shape = name, kwargs, tuple(input.shape)
        return _tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        op, nd = ctx.name
        kwargs = {k: v for k, v in ctx.kwargs.items()
                  if k not in OPERATORS[op].forward_only_args}
        dx = OPERATORS[op].backward(nd)(_grad_numpy(grad_output), ctx.input_shape, **kwargs)
        return _tensor(dx), None, None, None


class MaxUnpoolFunction(torch.autograd.Function):
    """max_unpool{n}d: scatter by indices; its gradient gathers by the same indices."""

    @staticmethod
    def forward(ctx, input, indices, nd, spec, array):
        idx = indices.detach().numpy()
        out = OPERATORS["max_unpool"].forward(nd)(array, idx, **dict(spec))
        ctx.nd, ctx.input_shape = nd, tuple(input.shape)
        ctx.save_for_backward(indices)
        return _tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (indices,) = ctx.saved_tensors
        dx = OPERATORS["max_unpool"].backward(ctx.nd)(_grad_numpy(grad_output), indices.numpy(),
                                                      ctx.input_shape)
        return _tensor(dx), None, None, None, None


# ---------------------------------------------------------------------------------------------
# Functional API: torch.nn.functional's names, argument order and defaults.

def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def _spec(**kwargs):
    return tuple((k, _hashable(v)) for k, v in kwargs.items())


# Nothing to differentiate (inference, torch.no_grad, tensors without requires_grad): the
# operators run without an autograd Function, whose bookkeeping cost a small layer more than
# its kernel (1x1, 8 channels on 4x4: 80 -> 58 us a call), and max pooling records no indices
# it was not asked for.

def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _weighted(op, nd, input, weight, bias, kwargs):
    arrays = _numpy_operands(input=input, weight=weight, bias=bias)
    if not _needs_grad(input, weight, bias):
        _, out = OPERATORS[op].weighted.call(nd, *arrays, kwargs)
        return _tensor(out)
    return WeightedFunction.apply(input, weight, bias, op, nd, kwargs, arrays)


def _plain(name, input, spec):
    (array,) = _numpy_operands(input=input)
    if not _needs_grad(input):
        op, nd = name
        return _tensor(OPERATORS[op].forward(nd)(array, **dict(spec)))
    return PlainFunction.apply(input, name, spec, array)


def _max_pooled(name, input, spec, return_indices):
    (array,) = _numpy_operands(input=input)
    if not _needs_grad(input):
        op, nd = name
        result = OPERATORS[op].forward(nd)(array, **dict(spec), return_indices=return_indices)
        return tuple(map(_tensor, result)) if return_indices else _tensor(result)
    out, indices = MaxPoolFunction.apply(input, name, spec, array)
    return (out, indices) if return_indices else out


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode)
    return _weighted("conv", nd, input, weight, bias, kwargs)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """``torch.nn.functional.conv1d`` computed by :func:`fastconv.conv1d` (differentiable)."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """``torch.nn.functional.conv2d`` computed by :func:`fastconv.conv2d` (differentiable).

    Examples
    --------
    >>> import torch, fastconv.torch as ft
    >>> x = torch.ones(1, 1, 4, 4, requires_grad=True)
    >>> ft.conv2d(x, torch.ones(1, 1, 3, 3)).sum().backward()
    >>> x.grad[0, 0, 0]
    tensor([1., 2., 2., 1.])
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """``torch.nn.functional.conv3d`` computed by :func:`fastconv.conv3d` (differentiable)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation):
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    return _weighted("conv_transpose", nd, input, weight, bias, kwargs)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose1d`` computed by fastconv (differentiable)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose2d`` computed by fastconv (differentiable)."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose3d`` computed by fastconv (differentiable)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def _locally_connected(nd, input, weight, bias, stride, padding, dilation):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    return _weighted("locally_connected", nd, input, weight, bias, kwargs)


def locally_connected1d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """:func:`fastconv.locally_connected1d` as a differentiable function of tensors."""
    return _locally_connected(1, input, weight, bias, stride, padding, dilation)


def locally_connected2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """:func:`fastconv.locally_connected2d` as a differentiable function of tensors."""
    return _locally_connected(2, input, weight, bias, stride, padding, dilation)


def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    spec = _spec(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                 ceil_mode=ceil_mode)
    return _max_pooled(("max_pool", nd), input, spec, return_indices)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool1d`` computed by fastconv (differentiable)."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d`` computed by fastconv (differentiable)."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool3d`` computed by fastconv (differentiable)."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    spec = _spec(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                 count_include_pad=count_include_pad, divisor_override=divisor_override)
    return _plain(("avg_pool", nd), input, spec)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """``torch.nn.functional.avg_pool1d`` computed by fastconv (differentiable)."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` computed by fastconv (differentiable)."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool3d`` computed by fastconv (differentiable)."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def _adaptive_avg_pool(nd, input, output_size):
    return _plain(("adaptive_avg_pool", nd), input, _spec(output_size=output_size))


def adaptive_avg_pool1d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool1d`` computed by fastconv (differentiable)."""
    return _adaptive_avg_pool(1, input, output_size)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` computed by fastconv (differentiable)."""
    return _adaptive_avg_pool(2, input, output_size)


def adaptive_avg_pool3d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool3d`` computed by fastconv (differentiable)."""
    return _adaptive_avg_pool(3, input, output_size)


def _adaptive_max_pool(nd, input, output_size, return_indices):
    return _max_pooled(("adaptive_max_pool", nd), input, _spec(output_size=output_size),
                       return_indices)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool1d`` computed by fastconv (differentiable)."""
    return _adaptive_max_pool(1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool2d`` computed by fastconv (differentiable)."""
    return _adaptive_max_pool(2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool3d`` computed by fastconv (differentiable)."""
    return _adaptive_max_pool(3, input, output_size, return_indices)


def _max_unpool(nd, input, indices, kernel_size, stride, padding, output_size):
    (array,) = _numpy_operands(input=input)
    if output_size is not None:
        output_size = tuple(int(n) for n in output_size)
    spec = _spec(kernel_size=kernel_size, stride=stride, padding=padding,
                 output_size=output_size)
    return MaxUnpoolFunction.apply(input, indices, nd, spec, array)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """``torch.nn.functional.max_unpool1d`` computed by fastconv (differentiable in input)."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """``torch.nn.functional.max_unpool2d`` computed by fastconv (differentiable in input)."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """``torch.nn.functional.max_unpool3d`` computed by fastconv (differentiable in input)."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """``torch.nn.functional.interpolate`` computed by :func:`fastconv.interpolate`."""
    spec = _spec(size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)
    nd = input.dim() - 2 if isinstance(input, torch.Tensor) else 0   # _plain checks input
    return _plain(("interpolate", nd), input, spec)


# ---------------------------------------------------------------------------------------------
# Layers: PyTorch's own classes (parameters, init, repr, state_dict), forward by fastconv.

def _padding_argument(module):
    # nn.Conv keeps 'same'/'valid' as given and ints as a tuple; fastconv takes both
    return module.padding


class _ConvForward:
    _nd = None

    def forward(self, input):
        return _conv(self._nd, input, self.weight, self.bias, self.stride,
                     _padding_argument(self), self.dilation, self.groups, self.padding_mode)


class Conv1d(_ConvForward, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` computed by fastconv."""
    _nd = 1


class Conv2d(_ConvForward, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fastconv."""
    _nd = 2


class Conv3d(_ConvForward, torch.nn.Conv3d):
    """``torch.nn.Conv3d`` computed by fastconv."""
    _nd = 3


class _ConvTransposeForward:
    _nd = None

    def forward(self, input, output_size=None):
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, self._nd, self.dilation)
        return _conv_transpose(self._nd, input, self.weight, self.bias, self.stride,
                               self.padding, tuple(output_padding), self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeForward, torch.nn.ConvTranspose1d):
    """``torch.nn.ConvTranspose1d`` computed by fastconv."""
    _nd = 1


class ConvTranspose2d(_ConvTransposeForward, torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed by fastconv."""
    _nd = 2


class ConvTranspose3d(_ConvTransposeForward, torch.nn.ConvTranspose3d):
    """``torch.nn.ConvTranspose3d`` computed by fastconv."""
    _nd = 3


class _MaxPoolForward:
    _nd = None

    def forward(self, input):
        return _max_pool(self._nd, input, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.ceil_mode, self.return_indices)


class MaxPool1d(_MaxPoolForward, torch.nn.MaxPool1d):
    """``torch.nn.MaxPool1d`` computed by fastconv."""
    _nd = 1


class MaxPool2d(_MaxPoolForward, torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by fastconv."""
    _nd = 2


class MaxPool3d(_MaxPoolForward, torch.nn.MaxPool3d):
    """``torch.nn.MaxPool3d`` computed by fastconv."""
    _nd = 3


class AvgPool1d(torch.nn.AvgPool1d):
    """``torch.nn.AvgPool1d`` computed by fastconv."""

    def forward(self, input):
        return _avg_pool(1, input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                         self.count_include_pad, None)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` computed by fastconv."""

    def forward(self, input):
        return _avg_pool(2, input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                         self.count_include_pad, self.divisor_override)


class AvgPool3d(torch.nn.AvgPool3d):
    """``torch.nn.AvgPool3d`` computed by fastconv."""

    def forward(self, input):
        return _avg_pool(3, input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                         self.count_include_pad, self.divisor_override)


class _AdaptiveAvgPoolForward:
    _nd = None

    def forward(self, input):
        return _adaptive_avg_pool(self._nd, input, self.output_size)


class AdaptiveAvgPool1d(_AdaptiveAvgPoolForward, torch.nn.AdaptiveAvgPool1d):
    """``torch.nn.AdaptiveAvgPool1d`` computed by fastconv."""
    _nd = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolForward, torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` computed by fastconv."""
    _nd = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolForward, torch.nn.AdaptiveAvgPool3d):
    """``torch.nn.AdaptiveAvgPool3d`` computed by fastconv."""
    _nd = 3


class _AdaptiveMaxPoolForward:
    _nd = None

    def forward(self, input):
        return _adaptive_max_pool(self._nd, input, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxPoolForward, torch.nn.AdaptiveMaxPool1d):
    """``torch.nn.AdaptiveMaxPool1d`` computed by fastconv."""
    _nd = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolForward, torch.nn.AdaptiveMaxPool2d):
    """``torch.nn.AdaptiveMaxPool2d`` computed by fastconv."""
    _nd = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolForward, torch.nn.AdaptiveMaxPool3d):
    """``torch.nn.AdaptiveMaxPool3d`` computed by fastconv."""
    _nd = 3


class _MaxUnpoolForward:
    _nd = None

    def forward(self, input, indices, output_size=None):
        if output_size is not None:
            output_size = tuple(output_size)[-self._nd:]
        return _max_unpool(self._nd, input, indices, self.kernel_size, self.stride,
                           self.padding, output_size)


class MaxUnpool1d(_MaxUnpoolForward, torch.nn.MaxUnpool1d):
    """``torch.nn.MaxUnpool1d`` computed by fastconv."""
    _nd = 1


class MaxUnpool2d(_MaxUnpoolForward, torch.nn.MaxUnpool2d):
    """``torch.nn.MaxUnpool2d`` computed by fastconv."""
    _nd = 2


class MaxUnpool3d(_MaxUnpoolForward, torch.nn.MaxUnpool3d):
    """``torch.nn.MaxUnpool3d`` computed by fastconv."""
    _nd = 3


class Upsample(torch.nn.Upsample):
    """``torch.nn.Upsample`` computed by :func:`fastconv.interpolate`."""

    def forward(self, input):
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners)


class _LocallyConnected(torch.nn.Module):
    _nd = None

    def __init__(self, in_channels, out_channels, input_size, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True, device=None, dtype=None):
        super().__init__()
        nd = self._nd
        as_tuple = (lambda v: (int(v),) * nd if isinstance(v, int) else tuple(int(n) for n in v))
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.input_size, self.kernel_size = as_tuple(input_size), as_tuple(kernel_size)
        self.stride, self.padding, self.dilation = as_tuple(stride), as_tuple(padding), \
            as_tuple(dilation)
        shape = output_shape(
            (1, self.in_channels) + self.input_size,
            (self.out_channels, self.in_channels) + self.kernel_size,
            stride=self.stride, padding=self.padding, dilation=self.dilation)
        self.output_size = tuple(shape[2:])
        factory = dict(device=device, dtype=dtype)
        self.weight = torch.nn.Parameter(torch.empty(
            self.output_size + (self.out_channels, self.in_channels) + self.kernel_size,
            **factory))
        self.bias = torch.nn.Parameter(torch.empty((self.out_channels,) + self.output_size,
                                                   **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # the bound nn.Conv uses: uniform(+-1/sqrt(fan_in)), fan_in = C_in x kernel volume
        bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
        torch.nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")

    def forward(self, input):
        return _locally_connected(self._nd, input, self.weight, self.bias, self.stride,
                                  self.padding, self.dilation)


class LocallyConnected1d(_LocallyConnected):
    """A 1-d locally connected layer (a convolution with its own filter at every position).

    Weight (L_out, C_out, C_in, kL), bias (C_out, L_out); `input_size` is L.
    """
    _nd = 1


class LocallyConnected2d(_LocallyConnected):
    """A 2-d locally connected layer (a convolution with its own filter at every position).

    Weight (H_out, W_out, C_out, C_in, kH, kW), bias (C_out, H_out, W_out); `input_size` is
    (H, W).
    """
    _nd = 2
