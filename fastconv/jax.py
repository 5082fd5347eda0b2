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

from fastconv.operators import OPERATORS
from fastconv.planning import (adaptive_pool_output_shape, conv_transpose_problem,
                               interpolate_output_size, output_shape, pool_output_shape,
                               unpool_output_shape)

__all__ = ["conv_general_dilated", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "locally_connected1d", "locally_connected2d", "max_pool1d",
           "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "interpolate",
           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
           "max_unpool1d", "max_unpool2d", "max_unpool3d"]


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


def _with_vjp(op, nd, out_shape, input, weight, bias, kwargs):
    """A custom_vjp function of (input, weight[, bias]) for one static configuration of the
    weighted operator `op` (fastconv.operators) in `nd` dimensions."""
    forward_fn = OPERATORS[op].forward(nd)
    input_grad, weight_grad, bias_grad = OPERATORS[op].gradients(nd)
    dtype = _dtype(input, weight, bias)
    x_shape, w_shape = tuple(input.shape), tuple(weight.shape)

    def forward(x, w, *b):
        return _host(lambda *a: forward_fn(*a, **kwargs), out_shape, dtype,
                     x, w, *b)

    def grads(x, w, g, with_bias):
        dx = _host(lambda w, g: input_grad(x_shape, w, g, **kwargs), x_shape, dtype,
                   w, g)
        dw = _host(lambda x, g: weight_grad(x, w_shape, g, **kwargs), w_shape,
                   dtype, x, g)
        if not with_bias:
            return dx, dw
        return dx, dw, _host(bias_grad, bias.shape, dtype, g)

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
    out_shape = output_shape(input.shape, weight.shape, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)
    return _with_vjp("conv", nd, out_shape, input, weight, bias, kwargs)


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
    >>> w, x = jnp.ones((1, 1, 3, 3), jnp.float32), jnp.ones((1, 1, 4, 4), jnp.float32)
    >>> jax.jit(jax.grad(loss))(w, x)[0, 0, 0]
    Array([ 9., 12.,  9.], dtype=float32)
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """:func:`fastconv.conv3d` as a differentiable, jit-able JAX function."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """``jax.lax.conv_general_dilated`` computed by fastconv: the same signature, so code
    written for ``lax`` swaps by changing the import, differentiable and jit-able.

    - `window_strides`: one per spatial axis; `padding`: 'SAME', 'SAME_LOWER', 'VALID' or one
      (low, high) pair per spatial axis (negative pairs crop; pairs only with an
      `lhs_dilation`, as in lax);
    - `lhs_dilation` (transposed convolution) and `rhs_dilation` (atrous convolution);
    - `dimension_numbers`: None (NCHW / OIHW / NCHW), strings such as Flax's
      ``("NHWC", "HWIO", "NHWC")``, or a ``lax.ConvDimensionNumbers``;
    - `feature_group_count` (grouped and depthwise convolution).

    1-3 spatial dimensions, float32 or float64. `batch_group_count` must be 1 (lax uses it to
    express weight gradients; fastconv computes those itself). `precision` is accepted and
    ignored: fastconv computes in the inputs' precision; `preferred_element_type` casts the
    result. A 2-d NHWC input with an NHWC output is read in place by fastconv's channels-last
    kernels in the forward pass (only the small weight is transposed); its gradients, and
    other layouts, are transposed to channels-first and back (one copy each way). An `lhs_dilation` above 1 or a negative
    padding is applied with ``lax.pad`` (the dilated input is materialized) first.

    Examples
    --------
    >>> import jax.numpy as jnp, fastconv.jax as fj
    >>> x = jnp.ones((1, 5, 5, 2), jnp.float32)                       # NHWC
    >>> w = jnp.ones((3, 3, 2, 4), jnp.float32)                       # HWIO
    >>> fj.conv_general_dilated(x, w, (1, 1), "SAME",
    ...                         dimension_numbers=("NHWC", "HWIO", "NHWC"))[0, 2, 2]
    Array([18., 18., 18., 18.], dtype=float32)
    """
    nd = lhs.ndim - 2
    if nd not in (1, 2, 3) or rhs.ndim != lhs.ndim:
        raise ValueError(f"lhs and rhs must have 3 to 5 dimensions, the same number; got "
                         f"shapes {tuple(lhs.shape)} and {tuple(rhs.shape)}")
    if batch_group_count != 1:
        raise ValueError(f"batch_group_count must be 1 (fastconv computes weight gradients "
                         f"itself); got {batch_group_count!r}")
    dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    strides = _spatial_tuple(window_strides, nd, "window_strides")
    lhs_dil = _spatial_tuple(lhs_dilation or 1, nd, "lhs_dilation")
    rhs_dil = _spatial_tuple(rhs_dilation or 1, nd, "rhs_dilation")
    in_spatial = [lhs.shape[i] for i in dn.lhs_spec[2:]]
    w = _permuted(rhs, dn.rhs_spec)                 # (O, I / groups, spatial...)
    if isinstance(padding, str) and any(d != 1 for d in lhs_dil):
        raise ValueError("padding: a string padding is not defined with lhs_dilation (as in "
                         "lax); give (low, high) pairs, or use conv_transpose2d")
    if isinstance(padding, str):
        dilated_in = [(n - 1) * d + 1 for n, d in zip(in_spatial, lhs_dil)]
        dilated_k = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], rhs_dil)]
        pads = [tuple(p) for p in jax.lax.padtype_to_pads(dilated_in, dilated_k, strides,
                                                          padding)]
    else:
        pads = [tuple(int(v) for v in p) for p in padding]
        if len(pads) != nd or any(len(p) != 2 for p in pads):
            raise ValueError(f"padding must be a string or {nd} (low, high) pairs; got "
                             f"{padding!r}")
    padded = any(d != 1 for d in lhs_dil) or any(lo < 0 or hi < 0 for lo, hi in pads)
    if nd == 2 and not padded and tuple(dn.lhs_spec) == _NHWC and tuple(dn.out_spec) == _NHWC:
        # NHWC in and out: the host views the arrays channels-last, no transpose in JAX
        y = _conv_nhwc(lhs, w, strides, tuple(pads), rhs_dil, feature_group_count)
    else:
        x = _permuted(lhs, dn.lhs_spec)             # (N, C, spatial...)
        if padded:
            x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0)]
                            + [(lo, hi, d - 1) for (lo, hi), d in zip(pads, lhs_dil)])
            pads = [(0, 0)] * nd
        y = _conv(nd, x, w, None, strides, tuple(pads), rhs_dil, feature_group_count, "zeros")
        y = _permuted(y, tuple(int(i) for i in np.argsort(dn.out_spec)))
    if preferred_element_type is not None:
        y = y.astype(preferred_element_type)
    return y


_NHWC = (0, 3, 1, 2)     # lax's spec of an NHWC array: batch, feature, then the spatial dims


def _conv_nhwc(x, w, stride, padding, dilation, groups):
    """conv2d of an NHWC `x` with an OIHW `w`, NHWC out, as a custom_vjp whose forward host
    function sees the NHWC arrays as channels-last (N, C, H, W) views: fastconv's
    channels-last kernels read them in place, and its channels-last output is the NHWC array
    as it lies. The backward pass runs channels-first."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    dtype = _dtype(x, w)
    n, h, wd, c = x.shape
    out_nchw = output_shape((n, c, h, wd), tuple(w.shape), **kwargs)
    out_shape = (out_nchw[0],) + tuple(out_nchw[2:]) + (out_nchw[1],)
    x_nchw_shape = (n, c, h, wd)
    forward_fn = OPERATORS["conv"].forward(2)
    input_grad, weight_grad, _ = OPERATORS["conv"].gradients(2)

    def nchw(a):
        return a.transpose(0, 3, 1, 2)

    def nhwc(a):
        return a.transpose(0, 2, 3, 1)

    def forward(x, w):
        return _host(lambda x, w: nhwc(forward_fn(nchw(x), w, **kwargs)), out_shape, dtype,
                     x, w)

    def grads(res, g):
        # the gradient kernels are channels-first: XLA transposes (in parallel, faster than
        # the host's copies of strided views: 3x3 64 channels, batch 8, 41 -> 67 ms that way)
        x, w = res
        g_nchw, x_nchw = jnp.transpose(g, _NHWC), jnp.transpose(x, _NHWC)
        dx = _host(lambda w, g: input_grad(x_nchw_shape, w, g, **kwargs), x_nchw_shape,
                   dtype, w, g_nchw)
        dw = _host(lambda x, g: weight_grad(x, tuple(w.shape), g, **kwargs), tuple(w.shape),
                   dtype, x_nchw, g_nchw)
        return jnp.transpose(dx, (0, 2, 3, 1)), dw

    @jax.custom_vjp
    def f(x, w):
        return forward(x, w)

    f.defvjp(lambda x, w: (forward(x, w), (x, w)), grads)
    return f(x, w)


def _spatial_tuple(value, nd, name):
    values = (value,) * nd if isinstance(value, int) else tuple(value)
    if len(values) != nd or not all(isinstance(v, (int, np.integer)) and v >= 1
                                    for v in values):
        raise ValueError(f"{name} must be {nd} positive ints; got {value!r}")
    return tuple(int(v) for v in values)


def _permuted(array, order):
    """array transposed to `order` (no transpose for the identity)."""
    order = tuple(order)
    return array if order == tuple(range(array.ndim)) else jnp.transpose(array, order)


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation):
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    # the output shape from a zero-cost probe: fastconv checks the call as it would run it
    problem = conv_transpose_problem(nd, tuple(input.shape), tuple(weight.shape), None, stride,
                                 padding, output_padding, groups, dilation)
    return _with_vjp("conv_transpose", nd, problem.in_shape, input, weight, bias, kwargs)


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
    return _with_vjp("locally_connected", nd, out_shape, input, weight, bias, kwargs)


def locally_connected1d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """:func:`fastconv.locally_connected1d` as a differentiable, jit-able JAX function."""
    return _locally_connected(1, input, weight, bias, stride, padding, dilation)


def locally_connected2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """:func:`fastconv.locally_connected2d` as a differentiable, jit-able JAX function."""
    return _locally_connected(2, input, weight, bias, stride, padding, dilation)


# ---------------------------------------------------------------------------------------------
# Pooling and resampling: functions of the input alone


def _index_dtype():
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


def _single_input(forward_fn, backward, out_shape, input, kwargs, with_indices=False,
                  return_indices=False):
    """custom_vjp of one input. `backward(g, residual)` is fastconv's backward call: the
    indices of max pooling travel as the residual (computed once, in the forward callback);
    with `return_indices` they are also an output (with no gradient)."""
    dtype = _dtype(input)
    x_shape = tuple(input.shape)

    if with_indices:
        def forward(x):
            return jax.pure_callback(
                lambda a: tuple(np.asarray(r) for r in forward_fn(
                    a, **kwargs, return_indices=True)),
                (jax.ShapeDtypeStruct(out_shape, dtype),
                 jax.ShapeDtypeStruct(out_shape, _index_dtype())),
                x, vmap_method="sequential")
    else:
        def forward(x):
            return _host(lambda a: forward_fn(a, **kwargs), out_shape, dtype, x), None

    def grad_input(residual, g):
        return (_host(lambda *a: backward(x_shape, *a), x_shape, dtype, g,
                      *(() if residual is None else (residual,))),)

    if return_indices:
        @jax.custom_vjp
        def f(x):
            return forward(x)

        def f_fwd(x):
            out, indices = forward(x)
            return (out, indices), indices

        def f_bwd(indices, cotangents):
            return grad_input(indices, cotangents[0])   # the indices carry no gradient
    else:
        @jax.custom_vjp
        def f(x):
            return forward(x)[0]

        def f_fwd(x):
            return forward(x)

        f_bwd = grad_input

    f.defvjp(f_fwd, f_bwd)
    return f(input)


def _pooled_shape(input, nd, kernel_size, stride, padding, dilation, ceil_mode):
    return pool_output_shape(nd, tuple(input.shape), kernel_size, stride, padding, dilation,
                             ceil_mode)


def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                  ceil_mode=ceil_mode)
    out_shape = _pooled_shape(input, nd, kernel_size, stride, padding, dilation, ceil_mode)
    backward = (lambda shape, g, idx: OPERATORS["max_pool"].backward(nd)(
        g, idx.astype(np.int64), shape))
    return _single_input(OPERATORS["max_pool"].forward(nd), backward, out_shape, input, kwargs,
                         True, bool(return_indices))


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`fastconv.max_pool1d` as a differentiable, jit-able JAX function (indices, when
    returned, are int64 with jax_enable_x64, else int32)."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`fastconv.max_pool2d` as a differentiable, jit-able JAX function."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`fastconv.max_pool3d` as a differentiable, jit-able JAX function."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, divisor_override=divisor_override)
    out_shape = _pooled_shape(input, nd, kernel_size, stride, padding, 1, ceil_mode)
    backward = (lambda shape, g: OPERATORS["avg_pool"].backward(nd)(g, shape, **kwargs))
    return _single_input(OPERATORS["avg_pool"].forward(nd), backward, out_shape, input, kwargs)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """:func:`fastconv.avg_pool1d` as a differentiable, jit-able JAX function."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """:func:`fastconv.avg_pool2d` as a differentiable, jit-able JAX function."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """:func:`fastconv.avg_pool3d` as a differentiable, jit-able JAX function."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """:func:`fastconv.interpolate` as a differentiable, jit-able JAX function."""
    kwargs = dict(size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)
    nd = input.ndim - 2
    out_size, _ = interpolate_output_size(tuple(input.shape[2:]), size, scale_factor)
    out_shape = tuple(input.shape[:2]) + tuple(out_size)
    backward = (lambda shape, g: OPERATORS["interpolate"].backward(nd)(g, shape, **kwargs))
    return _single_input(OPERATORS["interpolate"].forward(nd), backward, out_shape, input, kwargs)


# ---------------------------------------------------------------------------------------------
# Adaptive pooling and max-unpooling


def _adaptive_shape(input, nd, output_size):
    in_size = tuple(input.shape[2:])
    if isinstance(output_size, (tuple, list)) and len(output_size) == nd:
        output_size = tuple(n if o is None else o for o, n in zip(output_size, in_size))
    return adaptive_pool_output_shape(nd, tuple(input.shape), output_size)


def _adaptive_avg(nd, input, output_size):
    out_shape = _adaptive_shape(input, nd, output_size)
    backward = (lambda shape, g: OPERATORS["adaptive_avg_pool"].backward(nd)(g, shape))
    return _single_input(OPERATORS["adaptive_avg_pool"].forward(nd), backward, out_shape, input,
                         dict(output_size=output_size))


def _adaptive_max(nd, input, output_size, return_indices):
    out_shape = _adaptive_shape(input, nd, output_size)
    backward = (lambda shape, g, idx: OPERATORS["adaptive_max_pool"].backward(nd)(
        g, idx.astype(np.int64), shape))
    return _single_input(OPERATORS["adaptive_max_pool"].forward(nd), backward, out_shape, input,
                         dict(output_size=output_size), True, bool(return_indices))


def adaptive_avg_pool1d(input, output_size):
    """:func:`fastconv.adaptive_avg_pool1d` as a differentiable, jit-able JAX function."""
    return _adaptive_avg(1, input, output_size)


def adaptive_avg_pool2d(input, output_size):
    """:func:`fastconv.adaptive_avg_pool2d` as a differentiable, jit-able JAX function."""
    return _adaptive_avg(2, input, output_size)


def adaptive_avg_pool3d(input, output_size):
    """:func:`fastconv.adaptive_avg_pool3d` as a differentiable, jit-able JAX function."""
    return _adaptive_avg(3, input, output_size)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """:func:`fastconv.adaptive_max_pool1d` as a differentiable, jit-able JAX function."""
    return _adaptive_max(1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """:func:`fastconv.adaptive_max_pool2d` as a differentiable, jit-able JAX function."""
    return _adaptive_max(2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """:func:`fastconv.adaptive_max_pool3d` as a differentiable, jit-able JAX function."""
    return _adaptive_max(3, input, output_size, return_indices)


def _max_unpool(nd, input, indices, kernel_size, stride, padding, output_size):
    dtype = _dtype(input)
    out_shape = unpool_output_shape(nd, tuple(input.shape), kernel_size, stride, padding,
                                    output_size)
    x_shape = tuple(input.shape)
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                  output_size=output_size)

    def forward(x, idx):
        return _host(lambda a, i: OPERATORS["max_unpool"].forward(nd)(a, i.astype(np.int64),
                                                                 **kwargs),
                     out_shape, dtype, x, idx)

    @jax.custom_vjp
    def f(x, idx):
        return forward(x, idx)

    def f_fwd(x, idx):
        return forward(x, idx), idx

    def f_bwd(idx, g):
        dx = _host(lambda a, i: OPERATORS["max_unpool"].backward(nd)(a, i.astype(np.int64),
                                                                    x_shape),
                   x_shape, dtype, g, idx)
        return dx, None   # the indices carry no gradient

    f.defvjp(f_fwd, f_bwd)
    return f(input, indices)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """:func:`fastconv.max_unpool1d` as a differentiable, jit-able JAX function."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """:func:`fastconv.max_unpool2d` as a differentiable, jit-able JAX function."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """:func:`fastconv.max_unpool3d` as a differentiable, jit-able JAX function."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size)
