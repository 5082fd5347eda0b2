"""fastconv.jax: jax.grad of a loss through fastconv equals the gradient of the same loss
through jax.lax, under jax.jit."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

import fastconv  # noqa: E402
import fastconv.jax as fj  # noqa: E402

DN = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def lax_conv(nd, x, w, b, stride, padding, dilation, groups):
    y = jax.lax.conv_general_dilated(x, w, stride, padding, rhs_dilation=dilation,
                                     dimension_numbers=DN[nd], feature_group_count=groups)
    return y + b.reshape((1, -1) + (1,) * nd)


def lax_conv_transpose(nd, x, w, b, stride, padding, output_padding, groups, dilation):
    # the transposed convolution as the input-gradient (VJP) of the strided convolution
    # its weight (C_in, C_out / groups, k) is that convolution's (out, in / groups, k) weight
    c_in, c_out_g, kernel = w.shape[0], w.shape[1], w.shape[2:]
    out_size = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                     zip(x.shape[2:], stride, padding, dilation, kernel, output_padding))
    probe = jnp.zeros((x.shape[0], c_out_g * groups) + out_size, x.dtype)
    _, vjp = jax.vjp(lambda z: lax_conv(nd, z, w, jnp.zeros(c_in, x.dtype), stride,
                                        [(p, p) for p in padding], dilation, groups), probe)
    return vjp(x)[0] + b.reshape((1, -1) + (1,) * nd)


def loss(y):
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)


def inputs(shapes, dtype=jnp.float64):
    keys = jax.random.split(jax.random.PRNGKey(0), len(shapes))
    return [jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes)]


@pytest.mark.parametrize("nd, x_shape, w_shape, stride, padding, dilation, groups", [
    (1, (2, 3, 11), (4, 3, 3), (2,), 1, (1,), 1),
    (2, (2, 4, 9, 8), (6, 2, 3, 2), (2, 1), 1, (1, 2), 2),
    (3, (1, 2, 5, 6, 5), (3, 2, 2, 3, 2), (1, 2, 1), 0, (1, 1, 1), 1),
], ids=["1d", "2d-grouped-dilated", "3d"])
def test_conv_grad_equals_lax(nd, x_shape, w_shape, stride, padding, dilation, groups):
    x, w, b = inputs([x_shape, w_shape, (w_shape[0],)])
    ours = jax.jit(jax.grad(lambda x, w, b: loss(getattr(fj, f"conv{nd}d")(
        x, w, b, stride, padding, dilation, groups)), argnums=(0, 1, 2)))(x, w, b)
    theirs = jax.grad(lambda x, w, b: loss(lax_conv(
        nd, x, w, b, stride, [(padding, padding)] * nd, dilation, groups)),
        argnums=(0, 1, 2))(x, w, b)
    for name, a, e in zip(("input", "weight", "bias"), ours, theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("nd, x_shape, w_shape, stride, padding, output_padding, groups", [
    (1, (2, 4, 6), (4, 3, 3), (2,), (1,), (1,), 1),
    (2, (1, 4, 5, 4), (4, 2, 3, 3), (2, 1), (1, 0), (0, 0), 2),
], ids=["1d", "2d-grouped"])
def test_conv_transpose_grad_equals_lax(nd, x_shape, w_shape, stride, padding, output_padding,
                                        groups):
    x, w, b = inputs([x_shape, w_shape, (w_shape[1] * groups,)])
    dilation = (1,) * nd
    ours = jax.jit(jax.grad(lambda x, w, b: loss(getattr(fj, f"conv_transpose{nd}d")(
        x, w, b, stride, padding, output_padding, groups)), argnums=(0, 1, 2)))(x, w, b)
    theirs = jax.grad(lambda x, w, b: loss(lax_conv_transpose(
        nd, x, w, b, stride, padding, output_padding, groups, dilation)),
        argnums=(0, 1, 2))(x, w, b)
    for name, a, e in zip(("input", "weight", "bias"), ours, theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_locally_connected_grad_matches_numpy_gradients():
    x, w, b = inputs([(2, 3, 6, 5), (4, 3, 2, 3, 3, 3), (2, 4, 3)])
    y = fj.locally_connected2d(x, w, b)
    g = jax.grad(lambda y: loss(y))(y)
    dx, dw, db = jax.grad(lambda x, w, b: loss(fj.locally_connected2d(x, w, b)),
                          argnums=(0, 1, 2))(x, w, b)
    xn, wn, gn = np.asarray(x), np.asarray(w), np.asarray(g)
    np.testing.assert_allclose(np.asarray(y), fastconv.locally_connected2d(xn, wn, np.asarray(b)))
    np.testing.assert_allclose(np.asarray(dx), fastconv.grad.locally_connected2d_input(
        xn.shape, wn, gn))
    np.testing.assert_allclose(np.asarray(dw), fastconv.grad.locally_connected2d_weight(
        xn, wn.shape, gn))
    np.testing.assert_allclose(np.asarray(db), gn.sum(axis=0))


def test_float32_under_jit_and_vmap():
    x, w = inputs([(3, 2, 1, 8, 8), (4, 1, 3, 3)], jnp.float32)
    y = jax.jit(jax.vmap(lambda xi: fj.conv2d(xi, w, padding=1)))(x)
    assert y.dtype == jnp.float32 and y.shape == (3, 2, 4, 8, 8)
    expected = lax_conv(2, x.reshape(6, 1, 8, 8), w, jnp.zeros(4, jnp.float32), (1, 1),
                        [(1, 1)] * 2, (1, 1), 1).reshape(3, 2, 4, 8, 8)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="float32 or float64"):
        fj.conv2d(jnp.ones((1, 1, 4, 4), jnp.int32), jnp.ones((1, 1, 3, 3), jnp.int32))


# ---------------------------------------------------------------------------------------------
# Pooling and resampling: PyTorch's autograd is the oracle for the gradients


@pytest.mark.parametrize("name, shape, kwargs", [
    ("max_pool1d", (2, 3, 11), dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", (1, 2, 9, 8), dict(kernel_size=(3, 2), stride=2, ceil_mode=True)),
    ("max_pool3d", (1, 2, 4, 5, 4), dict(kernel_size=2)),
    ("avg_pool2d", (1, 2, 9, 8), dict(kernel_size=3, stride=2, padding=1,
                                      count_include_pad=False)),
    ("avg_pool3d", (1, 1, 4, 5, 6), dict(kernel_size=2, ceil_mode=True)),
    ("interpolate", (1, 2, 4, 5), dict(size=(7, 9), mode="bilinear")),
    ("interpolate", (1, 2, 6), dict(scale_factor=2, mode="nearest")),
], ids=["max1d", "max2d-ceil", "max3d", "avg2d", "avg3d-ceil", "bilinear", "nearest1d"])
def test_pool_and_resample_grad_equals_torch(name, shape, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape)  # no ties
    ours_fn = getattr(fj, name)
    y = jax.jit(lambda x: ours_fn(x, **kwargs))(jnp.asarray(x))
    dx = jax.jit(jax.grad(lambda x: loss(ours_fn(x, **kwargs))))(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, name)(xt, **kwargs)
    weights = torch.arange(yt.numel(), dtype=yt.dtype).reshape(yt.shape) / yt.numel()
    (torch.sin(yt) * weights).sum().backward()
    np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, shape, kwargs", [
    ("adaptive_avg_pool1d", (2, 3, 11), dict(output_size=4)),
    ("adaptive_avg_pool2d", (1, 2, 9, 7), dict(output_size=(4, 3))),
    ("adaptive_avg_pool3d", (1, 1, 5, 6, 4), dict(output_size=2)),
    ("adaptive_max_pool1d", (2, 3, 11), dict(output_size=4)),
    ("adaptive_max_pool2d", (1, 2, 9, 7), dict(output_size=(4, 3))),
    ("adaptive_max_pool3d", (1, 1, 5, 6, 4), dict(output_size=2)),
], ids=["aavg1d", "aavg2d", "aavg3d", "amax1d", "amax2d", "amax3d"])
def test_adaptive_pool_grad_equals_torch(name, shape, kwargs):
    test_pool_and_resample_grad_equals_torch(name, shape, kwargs)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_indices_and_unpool_grad_equal_torch(nd):
    torch = pytest.importorskip("torch")
    shape = (1, 2) + (6, 5, 4)[:nd]
    rng = np.random.default_rng(nd)
    x = rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape)   # no ties
    pool = getattr(fj, f"max_pool{nd}d")
    unpool = getattr(fj, f"max_unpool{nd}d")
    y, idx = jax.jit(lambda x: pool(x, 2, return_indices=True))(jnp.asarray(x))
    yt, idxt = getattr(torch.nn.functional, f"max_pool{nd}d")(torch.tensor(x), 2,
                                                              return_indices=True)
    np.testing.assert_array_equal(np.asarray(idx), idxt.numpy())
    np.testing.assert_array_equal(np.asarray(y), yt.numpy())

    def through_both(x):   # pool (values and indices), unpool, a weighted loss
        values, indices = pool(x, 2, return_indices=True)
        return loss(unpool(values, indices, 2, output_size=x.shape[2:]))

    dx = jax.jit(jax.grad(through_both))(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    vt, it = getattr(torch.nn.functional, f"max_pool{nd}d")(xt, 2, return_indices=True)
    ut = getattr(torch.nn.functional, f"max_unpool{nd}d")(vt, it, 2, output_size=xt.shape[2:])
    weights = torch.arange(ut.numel(), dtype=ut.dtype).reshape(ut.shape) / ut.numel()
    (torch.sin(ut) * weights).sum().backward()
    np.testing.assert_allclose(np.asarray(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


# jax.lax.conv_general_dilated's signature: (lhs shape, rhs shape, dimension_numbers, kwargs)
GENERAL_CASES = [
    ((2, 3, 9, 8), (4, 3, 3, 3), None, dict(window_strides=(1, 1), padding="SAME")),
    ((2, 9, 8, 3), (3, 3, 3, 4), ("NHWC", "HWIO", "NHWC"),
     dict(window_strides=(2, 1), padding="VALID")),
    ((2, 9, 8, 4), (3, 2, 2, 6), ("NHWC", "HWIO", "NHWC"),
     dict(window_strides=(1, 2), padding="SAME", feature_group_count=2, rhs_dilation=(2, 1))),
    ((1, 7, 6, 3), (3, 3, 3, 5), ("NHWC", "HWIO", "NHWC"),
     dict(window_strides=(1, 1), padding=((2, 1), (1, 2)), lhs_dilation=(2, 2))),
    ((1, 7, 6, 3), (4, 4, 3, 5), ("NHWC", "HWIO", "NHWC"),
     dict(window_strides=(2, 1), padding="SAME_LOWER", rhs_dilation=(1, 2))),
    ((1, 3, 7, 6), (5, 3, 4, 4), None,
     dict(window_strides=(1, 1), padding=((3, 3), (2, 4)), lhs_dilation=(3, 2))),
    ((2, 3, 10, 9), (4, 3, 3, 2), None,
     dict(window_strides=(1, 1), padding=((-1, 2), (0, -2)))),
    ((2, 11, 3), (5, 3, 4), ("NWC", "WIO", "NWC"),
     dict(window_strides=(2,), padding="SAME", rhs_dilation=(2,))),
    ((1, 5, 6, 7, 2), (3, 3, 2, 2, 4), ("NDHWC", "DHWIO", "NDHWC"),
     dict(window_strides=(1, 2, 1), padding="SAME")),
    ((2, 8, 6, 4), (3, 3, 1, 4), ("NHWC", "HWIO", "NCHW"),
     dict(window_strides=(1, 1), padding="SAME", feature_group_count=4)),
]


@pytest.mark.parametrize("lhs_shape, rhs_shape, dn, kwargs", GENERAL_CASES,
                         ids=[str(i) for i in range(len(GENERAL_CASES))])
def test_conv_general_dilated_and_its_gradients_equal_lax(lhs_shape, rhs_shape, dn, kwargs):
    rng = np.random.default_rng(21)
    lhs = jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32)
    rhs = jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32)
    want = jax.lax.conv_general_dilated(lhs, rhs, dimension_numbers=dn, **kwargs)
    got = fj.conv_general_dilated(lhs, rhs, dimension_numbers=dn, **kwargs)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    cotangent = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)

    def loss(conv):
        return lambda a, b: (conv(a, b, dimension_numbers=dn, **kwargs) * cotangent).sum()
    want_grads = jax.grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(lhs, rhs)
    got_grads = jax.jit(jax.grad(loss(fj.conv_general_dilated), argnums=(0, 1)))(lhs, rhs)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3)


def test_conv_general_dilated_refuses_what_it_does_not_compute():
    x, w = jnp.ones((1, 2, 5, 5)), jnp.ones((2, 2, 3, 3))
    with pytest.raises(ValueError, match="batch_group_count"):
        fj.conv_general_dilated(x, w, (1, 1), "SAME", batch_group_count=2)
    with pytest.raises(ValueError, match="window_strides"):
        fj.conv_general_dilated(x, w, (1, 0), "SAME")
    with pytest.raises(ValueError, match="padding"):
        fj.conv_general_dilated(x, w, (1, 1), ((1, 1),))
    with pytest.raises(ValueError, match="padding"):     # as lax
        fj.conv_general_dilated(x, w, (1, 1), "SAME", lhs_dilation=(2, 2))


def test_an_nhwc_convolution_transposes_only_the_weight():
    # NHWC in and out: fastconv's channels-last kernels read the input where it lies
    x, w = jnp.ones((2, 9, 8, 16), jnp.float32), jnp.ones((3, 3, 16, 4), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    jaxpr = str(jax.make_jaxpr(lambda x, w: fj.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=dn))(x, w))
    assert jaxpr.count("transpose") == 1        # the 3x3x16x4 weight, HWIO -> OIHW
    jaxpr = str(jax.make_jaxpr(lambda x, w: fj.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NCHW")))(x, w))
    assert jaxpr.count("transpose") == 2        # other layouts: the input and the weight
