"""fastconv inside JAX: the operators as differentiable JAX functions.

Each function is a ``jax.custom_vjp`` whose forward and backward run fastconv's kernels on the
host through ``jax.pure_callback``, so it works under ``jax.jit``, ``jax.grad`` and
``jax.vmap`` (sequentially over the mapped axis). Shapes are static, as in any JAX function;
the arrays are float32 or float64 (float64 needs ``jax.config.update("jax_enable_x64",
True)``). First-order gradients only (the backward pass is itself a callback).

Install with ``pip install "fastconv[jax]"``.
"""
import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as err:  # pragma: no cover - exercised only without jax
    raise ImportError("fastconv.jax needs JAX; install the extra: "
                      "pip install \"fastconv[jax]\"") from err

import fastconv

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "locally_connected1d", "locally_connected2d"]


def _operator(name):
    module = fastconv
    for part in name.split("."):
        module = getattr(module, part)
    return module


def _host(fn, shape, dtype, *arrays):
    """fn(*arrays) computed by fastconv on the host, as a JAX value of `shape` and `dtype`."""
    def run(*host_arrays):
        # the callback receives NumPy arrays; fastconv views them (read-only is fine)
        return np.asarray(fn(*host_arrays), dtype=dtype)
    return jax.pure_callback(run, jax.ShapeDtypeStruct(tuple(shape), dtype), *arrays,
                             vmap_method="sequential")


def _dtype(*arrays):
    dtype = jnp.result_type(*[a for a in arrays if a is not None])
    if dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"fastconv.jax computes float32 or float64 arrays; got {dtype}")
    return dtype


def _with_vjp(names, out_shape, input, weight, bias, kwargs):
    """A custom_vjp function of (input, weight[, bias]) for one static configuration.

    `names` are fastconv's forward, input-gradient, weight-gradient and bias-gradient
    functions, looked up when the callback runs.
    """
    forward_name, input_grad, weight_grad, bias_grad = names
    dtype = _dtype(input, weight, bias)
    x_shape, w_shape = tuple(input.shape), tuple(weight.shape)

    def forward(x, w, *b):
        return _host(lambda *a: _operator(forward_name)(*a, **kwargs), out_shape, dtype,
                     x, w, *b)

    def grads(x, w, g, with_bias):
        dx = _host(lambda w, g: _operator(input_grad)(x_shape, w, g, **kwargs), x_shape, dtype,
                   w, g)
        dw = _host(lambda x, g: _operator(weight_grad)(x, w_shape, g, **kwargs), w_shape,
                   dtype, x, g)
        if not with_bias:
            return dx, dw
        return dx, dw, _host(_operator(bias_grad), bias.shape, dtype, g)

    if bias is None:
        @jax.custom_vjp
        def f(x, w):
            return forward(x, w)

        f.defvjp(lambda x, w: (forward(x, w), (x, w)),
                 lambda res, g: grads(*res, g, False))
        return f(input, weight)

    @jax.custom_vjp
    def f(x, w, b):
        return forward(x, w, b)

    f.defvjp(lambda x, w, b: (forward(x, w, b), (x, w)),
             lambda res, g: grads(*res, g, True))
    return f(input, weight, bias)


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode)
    out_shape = fastconv.output_shape(input.shape, weight.shape, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)
    names = (f"conv{nd}d", f"grad.conv{nd}d_input", f"grad.conv{nd}d_weight", "grad.conv_bias")
    return _with_vjp(names, out_shape, input, weight, bias, kwargs)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """:func:`fastconv.conv1d` as a differentiable, jit-able JAX function."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """:func:`fastconv.conv2d` as a differentiable, jit-able JAX function.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, fastconv.jax as fj
    >>> loss = lambda w, x: fj.conv2d(x, w, padding=1).sum()
    >>> jax.jit(jax.grad(loss))(jnp.ones((1, 1, 3, 3)), jnp.ones((1, 1, 4, 4)))[0, 0, 0]
    Array([ 9., 12.,  9.], dtype=float32)
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """:func:`fastconv.conv3d` as a differentiable, jit-able JAX function."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation):
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    # the output shape from a zero-cost probe: fastconv checks the call as it would run it
    from fastconv.conv_transpose import _transpose_problem  # lazily: an internal module
    problem = _transpose_problem(nd, tuple(input.shape), tuple(weight.shape), None, stride,
                                 padding, output_padding, groups, dilation)
    out_shape = (problem.batch, problem.in_channels) + tuple(problem.in_size)
    names = (f"conv_transpose{nd}d", f"grad.conv_transpose{nd}d_input",
             f"grad.conv_transpose{nd}d_weight", "grad.conv_bias")
    return _with_vjp(names, out_shape, input, weight, bias, kwargs)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`fastconv.conv_transpose1d` as a differentiable, jit-able JAX function."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`fastconv.conv_transpose2d` as a differentiable, jit-able JAX function."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`fastconv.conv_transpose3d` as a differentiable, jit-able JAX function."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def _locally_connected(nd, input, weight, bias, stride, padding, dilation):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    out_grid = tuple(weight.shape[:nd])
    out_shape = (input.shape[0], weight.shape[nd]) + out_grid
    names = (f"locally_connected{nd}d", f"grad.locally_connected{nd}d_input",
             f"grad.locally_connected{nd}d_weight", "grad.locally_connected_bias")
    return _with_vjp(names, out_shape, input, weight, bias, kwargs)


def locally_connected1d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """:func:`fastconv.locally_connected1d` as a differentiable, jit-able JAX function."""
    return _locally_connected(1, input, weight, bias, stride, padding, dilation)


def locally_connected2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """:func:`fastconv.locally_connected2d` as a differentiable, jit-able JAX function."""
    return _locally_connected(2, input, weight, bias, stride, padding, dilation)
