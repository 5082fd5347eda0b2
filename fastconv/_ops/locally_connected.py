"""Locally connected layers: convolution without weight sharing, in 1 and 2 dimensions.

Every output position p has its own filter bank ``weight[p]`` of shape (C_out, C_in, *kernel):

    out[n, o, p] = bias[o, p] + sum over c, taps t of
                   weight[p, o, c, t] * x_pad[n, c, p * stride + t * dilation]

The output grid is the convolution's (same stride, padding, dilation), so the weight's leading
axes must equal it.
"""
from math import prod

import numpy as np

from fastconv._kernels import locally_connected as _kernels
from fastconv._ops.conv import as_5d
from fastconv._plan import args as _args
from fastconv._plan.problems import check_grad_output, locally_connected_problem
from fastconv._runtime import threads as _threads
from fastconv._runtime.memory import pooled
from fastconv._runtime.precision import flushing_denormals

__all__ = ["locally_connected1d", "locally_connected2d", "locally_connected1d_input",
           "locally_connected2d_input", "locally_connected1d_weight",
           "locally_connected2d_weight", "locally_connected_bias"]


def _kernel_args(problem):
    nd = problem.ndim
    unit, zero = (1,) * (3 - nd), (0,) * (3 - nd)
    return (unit + tuple(problem.kernel_size), unit + problem.stride,
            zero + tuple(p[0] for p in problem.padding), unit + problem.dilation,
            _threads.threads_for(problem.multiply_adds))


def _flat_weight(w, problem, dtype):
    """(P, C_out, K): one C_out x K matrix per output position."""
    return np.ascontiguousarray(w, dtype=dtype).reshape(
        prod(problem.out_size), problem.out_channels, problem.gemm_depth)


@flushing_denormals
@pooled
def _locally_connected(nd, input, weight, bias, stride, padding, dilation):
    x = _args.as_array(input, "input")
    w = _args.as_array(weight, "weight")
    b = None if bias is None else _args.as_array(bias, "bias")
    dtype = _args.compute_dtype(input=x, weight=w, bias=b)
    problem = locally_connected_problem(nd, x.shape, w.shape, None if b is None else b.shape,
                                        stride, padding, dilation)
    out = np.empty(problem.out_shape, dtype)
    if out.size == 0:
        return out
    x = np.ascontiguousarray(x, dtype=dtype)
    flat_bias = np.empty((0, 0), dtype) if b is None else \
        np.ascontiguousarray(b, dtype=dtype).reshape(problem.out_channels, -1)
    with _threads.single_threaded_blas:
        _kernels.forward(as_5d(x, nd), _flat_weight(w, problem, dtype), flat_bias,
                         as_5d(out, nd), *_kernel_args(problem))
    return out


@flushing_denormals
@pooled
def _locally_connected_input(nd, input_shape, weight, grad_output, stride, padding, dilation):
    w = _args.as_array(weight, "weight")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(weight=w, grad_output=g)
    input_shape = _args.shape_argument(input_shape, "input_shape", nd + 2)
    problem = locally_connected_problem(nd, input_shape, w.shape, None, stride, padding, dilation)
    check_grad_output(g, problem.out_shape, f"locally_connected{nd}d")
    dx = np.empty(input_shape, dtype)   # the kernel zeroes each block of images it owns
    if dx.size == 0:
        return dx
    g = np.ascontiguousarray(g, dtype=dtype)
    with _threads.single_threaded_blas:
        _kernels.input_grad(as_5d(g, nd), _flat_weight(w, problem, dtype), as_5d(dx, nd),
                            *_kernel_args(problem))
    return dx


@flushing_denormals
@pooled
def _locally_connected_weight(nd, input, weight_shape, grad_output, stride, padding, dilation):
    x = _args.as_array(input, "input")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(input=x, grad_output=g)
    weight_shape = _args.shape_argument(weight_shape, "weight_shape", 2 * nd + 2)
    problem = locally_connected_problem(nd, x.shape, weight_shape, None, stride, padding, dilation)
    check_grad_output(g, problem.out_shape, f"locally_connected{nd}d")
    dw = np.zeros(weight_shape, dtype)
    if dw.size == 0 or g.size == 0:
        return dw
    x = np.ascontiguousarray(x, dtype=dtype)
    g = np.ascontiguousarray(g, dtype=dtype)
    with _threads.single_threaded_blas:
        _kernels.weight_grad(as_5d(x, nd), as_5d(g, nd),
                             dw.reshape(prod(problem.out_size), problem.out_channels,
                                        problem.gemm_depth),
                             *_kernel_args(problem))
    return dw


def locally_connected1d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """1-d locally connected layer: a convolution with a separate filter at every position.

    Parameters
    ----------
    input : array_like, shape (N, C_in, L)
    weight : array_like, shape (L_out, C_out, C_in, kL)
        L_out must be the convolution's output length for this kernel, stride, padding and
        dilation.
    bias : array_like, shape (C_out, L_out), optional
    stride, dilation : int or tuple of 1 int
    padding : int, (before, after) pair in a 1-tuple, 'same' or 'valid' (zero padding)

    Returns
    -------
    ndarray, shape (N, C_out, L_out)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    >>> w = np.ones((3, 1, 1, 2), np.float32) * np.float32([1, 2, 3]).reshape(3, 1, 1, 1)
    >>> fastconv.locally_connected1d(x, w)
    array([[[ 1.,  6., 15.]]], dtype=float32)
    """
    return _locally_connected(1, input, weight, bias, stride, padding, dilation)


def locally_connected2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-d locally connected layer: a convolution with a separate filter at every position.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W)
    weight : array_like, shape (H_out, W_out, C_out, C_in, kH, kW)
        (H_out, W_out) must be the convolution's output grid for this kernel, stride, padding
        and dilation.
    bias : array_like, shape (C_out, H_out, W_out), optional
    stride, dilation : int or tuple of 2 ints
    padding : int, 2 ints, 2 (before, after) pairs, 'same' or 'valid' (zero padding)

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((2, 3, 8, 8), np.float32)
    >>> w = np.ones((4, 4, 5, 3, 3, 3), np.float32)
    >>> fastconv.locally_connected2d(x, w, stride=2, padding=1).shape
    (2, 5, 4, 4)
    """
    return _locally_connected(2, input, weight, bias, stride, padding, dilation)


def locally_connected1d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1):
    """Gradient of :func:`fastconv.locally_connected1d` with respect to its input.

    Parameters
    ----------
    input_shape : tuple of 3 ints
        Shape of the forward call's input (N, C_in, L).
    weight : array_like, shape (L_out, C_out, C_in, kL)
    grad_output : array_like, shape (N, C_out, L_out)
    stride, padding, dilation
        As in the forward call.

    Returns
    -------
    ndarray of shape `input_shape`.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> w = np.ones((3, 1, 1, 2))
    >>> fastconv.grad.locally_connected1d_input((1, 1, 4), w, np.ones((1, 1, 3)))
    array([[[1., 2., 2., 1.]]])
    """
    return _locally_connected_input(1, input_shape, weight, grad_output, stride, padding,
                                    dilation)


def locally_connected2d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1):
    """Gradient of :func:`fastconv.locally_connected2d` with respect to its input.

    Parameters
    ----------
    input_shape : tuple of 4 ints
        Shape of the forward call's input (N, C_in, H, W).
    weight : array_like, shape (H_out, W_out, C_out, C_in, kH, kW)
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, dilation
        As in the forward call.

    Returns
    -------
    ndarray of shape `input_shape`.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> w = np.ones((4, 4, 5, 3, 3, 3))
    >>> g = np.ones((2, 5, 4, 4))
    >>> fastconv.grad.locally_connected2d_input((2, 3, 8, 8), w, g, stride=2, padding=1).shape
    (2, 3, 8, 8)
    """
    return _locally_connected_input(2, input_shape, weight, grad_output, stride, padding,
                                    dilation)


def locally_connected1d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                               dilation=1):
    """Gradient of :func:`fastconv.locally_connected1d` with respect to its weight.

    Parameters
    ----------
    input : array_like, shape (N, C_in, L)
    weight_shape : tuple of 4 ints
        (L_out, C_out, C_in, kL)
    grad_output : array_like, shape (N, C_out, L_out)
    stride, padding, dilation
        As in the forward call.

    Returns
    -------
    ndarray of shape `weight_shape`.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(4.).reshape(1, 1, 4)
    >>> fastconv.grad.locally_connected1d_weight(x, (3, 1, 1, 2), np.ones((1, 1, 3)))[:, 0, 0]
    array([[0., 1.],
           [1., 2.],
           [2., 3.]])
    """
    return _locally_connected_weight(1, input, weight_shape, grad_output, stride, padding,
                                     dilation)


def locally_connected2d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                               dilation=1):
    """Gradient of :func:`fastconv.locally_connected2d` with respect to its weight.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W)
    weight_shape : tuple of 6 ints
        (H_out, W_out, C_out, C_in, kH, kW)
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, dilation
        As in the forward call.

    Returns
    -------
    ndarray of shape `weight_shape`.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((2, 3, 8, 8))
    >>> g = np.ones((2, 5, 4, 4))
    >>> fastconv.grad.locally_connected2d_weight(x, (4, 4, 5, 3, 3, 3), g, stride=2,
    ...                                          padding=1).shape
    (4, 4, 5, 3, 3, 3)
    """
    return _locally_connected_weight(2, input, weight_shape, grad_output, stride, padding,
                                     dilation)


def locally_connected_bias(grad_output):
    """Gradient of a locally connected layer with respect to its bias (C_out, *out_grid): the
    output gradient summed over the batch.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.locally_connected_bias(np.ones((4, 2, 3), np.float32))
    array([[4., 4., 4.],
           [4., 4., 4.]], dtype=float32)
    """
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(grad_output=g)
    if g.ndim < 3:
        raise ValueError(f"grad_output must be at least 3-d (N, C_out, *out_grid); got shape "
                         f"{g.shape}")
    return g.sum(axis=0, dtype=dtype)
