"""Gradients of convolution (fastconv.grad.conv{1,2,3}d_input/_weight, conv_bias).

Specification:
- they equal the plain float64 references in tests/reference.py, for every algorithm;
- they are the derivatives of fastconv's own forward convolution (finite differences, float64);
- they match PyTorch's autograd in float32 and float64;
- every padding form and mode of the forward call works (a non-zero mode folds its gradient);
- the weight gradient is deterministic; bad calls raise errors that name the argument.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv
from fastconv import grad
from fastconv._plan import dispatch, tiling
from fastconv.planning import Kernel

import reference

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
INPUT_GRAD = {1: grad.conv1d_input, 2: grad.conv2d_input, 3: grad.conv3d_input}
WEIGHT_GRAD = {1: grad.conv1d_weight, 2: grad.conv2d_weight, 3: grad.conv3d_weight}

# id: (input shape, weight shape, keyword arguments of the forward call)
CASES = {
    "1d": ((2, 3, 11), (4, 3, 3), {}),
    "1d-stride3>kernel2": ((2, 2, 13), (3, 2, 2), dict(stride=3)),
    "1d-dilation3-pad2": ((1, 3, 12), (2, 3, 3), dict(padding=2, dilation=3)),
    "1d-asymmetric-pad": ((2, 2, 9), (3, 2, 4), dict(padding=((3, 1),), stride=2)),
    "1d-same-even-kernel": ((2, 2, 8), (2, 2, 4), dict(padding="same")),
    "1d-reflect": ((2, 2, 9), (3, 2, 3), dict(padding=2, padding_mode="reflect")),
    "1d-circular-stride2": ((1, 2, 7), (2, 2, 3), dict(padding=3, stride=2,
                                                        padding_mode="circular")),
    "2d-pad1": ((2, 3, 7, 6), (4, 3, 3, 3), dict(padding=1)),
    "2d-stride2-groups2": ((2, 4, 9, 8), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    "2d-stride(2,3)-dilation2": ((1, 2, 11, 12), (3, 2, 3, 2), dict(stride=(2, 3),
                                                                    dilation=2)),
    "2d-asymmetric-pads": ((2, 2, 6, 7), (3, 2, 3, 3), dict(padding=((1, 0), (2, 1)))),
    "2d-stride>kernel": ((1, 3, 10, 9), (2, 3, 2, 2), dict(stride=3)),
    "2d-depthwise": ((2, 4, 7, 7), (4, 1, 3, 3), dict(padding=1, groups=4)),
    "2d-depthwise-stride2": ((2, 6, 9, 10), (6, 1, 3, 3), dict(stride=2, padding=1, groups=6)),
    "2d-depthwise-5x5-dilation2": ((1, 4, 12, 13), (4, 1, 5, 5), dict(padding=(4, 3),
                                                                     dilation=2, groups=4)),
    "2d-single-channel-stride2": ((2, 1, 15, 16), (1, 1, 7, 7), dict(stride=2, padding=3)),
    "1d-depthwise-stride2": ((2, 5, 17), (5, 1, 5), dict(stride=2, padding=2, groups=5)),
    "2d-depthwise-stride3>kernel2": ((2, 3, 11, 10), (3, 1, 2, 2), dict(stride=3, groups=3)),
    "2d-depthwise-stride(2,3)-dilation(1,2)-asymmetric": (
        (1, 4, 9, 14), (4, 1, 3, 3), dict(stride=(2, 3), dilation=(1, 2),
                                          padding=((2, 0), (1, 3)), groups=4)),
    "2d-depthwise-reflect-stride2": ((2, 3, 8, 9), (3, 1, 3, 3), dict(stride=2, padding=1,
                                                                      groups=3,
                                                                      padding_mode="reflect")),
    "3d-depthwise-stride2-dilation2": ((1, 2, 7, 6, 9), (2, 1, 3, 2, 3),
                                       dict(stride=2, dilation=(2, 1, 1), padding=1, groups=2)),
    "3d-depthwise": ((1, 3, 5, 6, 7), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),
    "2d-pointwise": ((2, 16, 5, 6), (12, 16, 1, 1), {}),
    "2d-gemm-sized": ((2, 16, 8, 7), (16, 16, 3, 3), dict(padding=1, stride=(1, 2))),
    "2d-gemm-groups-dilation": ((1, 16, 9, 9), (16, 8, 3, 3), dict(groups=2, dilation=2,
                                                                   padding=(2, 1))),
    "2d-reflect": ((2, 2, 6, 5), (3, 2, 3, 3), dict(padding=(2, 1), padding_mode="reflect")),
    "2d-replicate-stride2": ((1, 3, 7, 8), (2, 3, 3, 3), dict(padding=2, stride=2,
                                                              padding_mode="replicate")),
    "2d-circular-asymmetric": ((1, 2, 5, 6), (3, 2, 3, 2), dict(padding=((2, 1), (1, 0)),
                                                                padding_mode="circular")),
    "3d": ((1, 2, 5, 4, 6), (3, 2, 2, 3, 3), dict(padding=1)),
    "3d-stride2-groups2": ((2, 4, 5, 6, 5), (4, 2, 3, 2, 3), dict(stride=2, groups=2)),
    "3d-replicate": ((1, 2, 4, 4, 4), (2, 2, 3, 3, 3), dict(padding=1,
                                                            padding_mode="replicate")),
}
IDS = list(CASES)


def make_arrays(case, dtype=np.float64, seed=0):
    x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    nd = len(w_shape) - 2
    out_shape = CONV[nd](x, w, **kwargs).shape
    g = rng.standard_normal(out_shape).astype(dtype)
    return nd, x, w, b, g, kwargs


def algorithms_for(case):
    x_shape, w_shape, kwargs = CASES[case]
    pointwise = all(k == 1 for k in w_shape[2:]) and not kwargs
    nd = len(w_shape) - 2
    options = dict(stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros")
    options.update(kwargs)
    problem = fastconv.planning.conv_problem(
        nd, x_shape, w_shape, None, options["stride"], options["padding"], options["dilation"],
        options["groups"], options["padding_mode"]).explicitly_padded
    subpixel = fastconv.planning.SUPPORTS["subpixel"](problem)
    one_to_one = problem.in_per_group == 1 and problem.out_per_group == 1
    return ["auto", "direct", "direct_rows", "col2im"] + (["gemm1x1"] if pointwise else []) \
        + (["subpixel"] if subpixel else []) + (["direct_phases"] if one_to_one else [])


@pytest.mark.parametrize("case", IDS)
def test_input_grad_matches_reference_for_every_algorithm(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    expected = reference.conv_input_grad(x.shape, w, g, **kwargs)
    for algorithm in algorithms_for(case):
        got = INPUT_GRAD[nd](x.shape, w, g, algorithm=algorithm, **kwargs)
        assert got.shape == x.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=algorithm)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_input_grad_keeps_infinities_where_they_belong(stride):
    """With an inf weight, the gradient is inf only where that weight reaches a gradient
    pixel, never NaN (subpixel, chosen for finite weights at stride 1, would multiply the
    zeros padding the output gradient by it: 0 * inf)."""
    w = np.ones((3, 1, 3, 3))
    w[1, 0, 0, 0] = np.inf
    x_shape = (2, 3, 8, 9)
    kw = dict(stride=stride, padding=1, groups=3)
    g = np.ones(fastconv.conv2d(np.zeros(x_shape), w, **kw).shape)
    problem = fastconv.planning.problem_from_call(x_shape, w.shape, **kw)
    if stride == 1:
        assert fastconv.planning.plan_input_grad(problem, np.float64, "auto",
                                                 np.ones(w.shape)).algorithm == "subpixel"
        with pytest.raises(ValueError, match="finite weights"):
            grad.conv2d_input(x_shape, w, g, algorithm="subpixel", **kw)
    got = grad.conv2d_input(x_shape, w, g, **kw)
    np.testing.assert_array_equal(got, reference.conv_input_grad(x_shape, w, g, **kw))
    assert np.isinf(got[:, 1]).any() and not np.isnan(got).any()


def weight_grad_algorithms_for(case):
    x_shape, w_shape, kwargs = CASES[case]
    groups = kwargs.get("groups", 1)
    one_to_one = x_shape[1] == groups and w_shape[0] == groups
    problem = fastconv.planning.problem_from_call(x_shape, w_shape, **kwargs).explicitly_padded
    winograd = fastconv.planning.supports("weight_grad", "winograd", problem)
    return ["auto", "gemm", "phase"] + (["depthwise_rows"] if one_to_one else []) \
        + (["winograd"] if winograd else [])


@pytest.mark.parametrize("case", IDS)
def test_weight_grad_matches_reference(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    expected = reference.conv_weight_grad(x, w.shape, g, **kwargs)
    for algorithm in weight_grad_algorithms_for(case):
        got = WEIGHT_GRAD[nd](x, w.shape, g, algorithm=algorithm, **kwargs)
        assert got.shape == w.shape
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=algorithm)


@pytest.mark.parametrize("shape, kwargs", [
    ((3, 5, 9, 21), dict(padding=1)),                       # rows of one vector and a tail
    ((2, 4, 7, 40), dict(padding=2, stride=(1, 2))),        # stride phases along W
    ((2, 3, 6, 17), dict(padding=(1, 3), dilation=(1, 2))),
    ((1, 6, 33), dict(padding=3)),                          # 1-d: rows of one
])
def test_depthwise_weight_grad_by_rows_keeps_infinities_where_they_belong(shape, kwargs):
    """The row kernel reads whole vectors of every row, its last one past the row's outputs:
    an inf input there must not meet those lanes' zero gradients (0 * inf is NaN), and no
    read may run past the output gradient's end (its last row ends the array)."""
    nd, c = len(shape) - 2, shape[1]
    kernel = (3,) * nd
    x = np.random.default_rng(5).standard_normal(shape)
    x[..., -1] = np.inf             # the last input column of every row
    x[0, 1] = -np.inf               # a whole plane
    w_shape = (c, 1) + kernel
    g = 0.1 + np.abs(np.random.default_rng(6).standard_normal(   # positive: inf, not NaN
        CONV[nd](np.zeros(shape), np.zeros(w_shape), groups=c, **kwargs).shape))
    got = WEIGHT_GRAD[nd](x, w_shape, g, groups=c, algorithm="depthwise_rows", **kwargs)
    with np.errstate(invalid="ignore"):
        want = reference.conv_weight_grad(x, w_shape, g, groups=c, **kwargs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)
    assert np.isinf(got).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_weight_grad_by_rows_on_many_channels_and_images(dtype):
    """One channel per work item, summed over the batch in its own registers: the same
    result whichever thread runs it, close to the reference in either precision."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 24, 30, 35)).astype(dtype)
    g = rng.standard_normal((5, 24, 15, 35)).astype(dtype)
    kw = dict(stride=(2, 1), padding=(1, 2), groups=24)
    want = reference.conv_weight_grad(x.astype(np.float64), (24, 1, 3, 5), g.astype(np.float64),
                                      **kw)
    got = grad.conv2d_weight(x, (24, 1, 3, 5), g, algorithm="depthwise_rows", **kw)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    with fastconv.num_threads(1):
        one = grad.conv2d_weight(x, (24, 1, 3, 5), g, algorithm="depthwise_rows", **kw)
    np.testing.assert_array_equal(got, one)


def test_depthwise_weight_grad_by_rows_needs_one_channel_each_way():
    x = np.zeros((1, 4, 8, 8))
    with pytest.raises(ValueError, match="depthwise_rows"):
        grad.conv2d_weight(x, (4, 2, 3, 3), np.zeros((1, 4, 6, 6)), groups=2,
                           algorithm="depthwise_rows")


@pytest.mark.parametrize("case", IDS)
def test_forward_im2col_that_weight_grad_shares_matches_reference(case):
    """The weight gradient reuses the forward pass's im2col; both must read the same taps."""
    nd, x, w, b, g, kwargs = make_arrays(case)
    np.testing.assert_allclose(CONV[nd](x, w, b, algorithm="im2col", **kwargs),
                               reference.conv_nd(x, w, b, **kwargs), rtol=1e-12, atol=1e-12)


def test_bias_grad_sums_batch_and_space():
    g = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(grad.conv_bias(g), g.sum(axis=(0, 2, 3)))
    assert grad.conv_bias(g.astype(np.float32)).dtype == np.float32


def directional_derivative(f, x, v, eps=1e-6):
    return (f(x + eps * v) - f(x - eps * v)) / (2 * eps)


@pytest.mark.parametrize("case", IDS)
def test_gradients_are_derivatives_of_the_forward_pass(case):
    """Finite differences in float64 of L = <conv(x, w, b), g> along random directions."""
    nd, x, w, b, g, kwargs = make_arrays(case)
    rng = np.random.default_rng(1)
    conv = CONV[nd]
    loss_x = lambda x_: np.vdot(conv(x_, w, b, **kwargs), g)
    loss_w = lambda w_: np.vdot(conv(x, w_, b, **kwargs), g)
    loss_b = lambda b_: np.vdot(conv(x, w, b_, **kwargs), g)
    dx = INPUT_GRAD[nd](x.shape, w, g, **kwargs)
    dw = WEIGHT_GRAD[nd](x, w.shape, g, **kwargs)
    db = grad.conv_bias(g)
    for _ in range(2):
        for value, gradient, loss in ((x, dx, loss_x), (w, dw, loss_w), (b, db, loss_b)):
            v = rng.standard_normal(value.shape)
            expected = directional_derivative(loss, value, v)
            assert np.vdot(gradient, v) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def torch_forward(torch, nd, x, w, b, kwargs):
    """PyTorch's conv with fastconv's padding forms: any pad applied explicitly by F.pad."""
    F = torch.nn.functional
    kwargs = dict(kwargs)
    mode = kwargs.pop("padding_mode", "zeros")
    padding = kwargs.pop("padding", 0)
    pads = reference.padding_pairs(padding, w.shape[2:],
                                   reference.as_tuple(kwargs.get("dilation", 1), nd))
    flat = [v for pair in reversed(pads) for v in pair]   # F.pad wants last axis first
    x = F.pad(x, flat, mode={"zeros": "constant"}.get(mode, mode))
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd](x, w, b, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", IDS)
def test_gradients_match_torch_autograd(case, dtype):
    torch = pytest.importorskip("torch")
    nd, x, w, b, g, kwargs = make_arrays(case, dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch_forward(torch, nd, xt, wt, bt, kwargs).backward(torch.tensor(g))
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    dx = INPUT_GRAD[nd](x.shape, w, g, **kwargs)
    dw = WEIGHT_GRAD[nd](x, w.shape, g, **kwargs)
    db = grad.conv_bias(g)
    for got, expected in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected.numpy(), **tol)


def test_torch_nn_grad_signature_is_accepted():
    torch = pytest.importorskip("torch")
    nd, x, w, b, g, kwargs = make_arrays("2d-stride2-groups2")
    args = dict(stride=2, padding=1, dilation=1, groups=2)
    np.testing.assert_allclose(
        grad.conv2d_input(x.shape, w, g, **args),
        torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(g), **args).numpy(),
        rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        grad.conv2d_weight(x, w.shape, g, **args),
        torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(g), **args).numpy(),
        rtol=1e-12, atol=1e-12)


def test_weight_grad_is_deterministic_and_close_across_thread_counts():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16, 20, 20), dtype=np.float32)
    g = rng.standard_normal((4, 32, 20, 20), dtype=np.float32)
    with fastconv.num_threads(2):
        first = grad.conv2d_weight(x, (32, 16, 3, 3), g, padding=1)
        second = grad.conv2d_weight(x, (32, 16, 3, 3), g, padding=1)
    with fastconv.num_threads(1):
        serial = grad.conv2d_weight(x, (32, 16, 3, 3), g, padding=1)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, serial, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_input_grad_with_channel_split_and_threads(batch, threads):
    """Batch 1 splits input channels across threads; every split gives the same gradient."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 24, 3, 3))
    g = rng.standard_normal((batch, 16, 9, 10))
    with fastconv.num_threads(threads):
        got = grad.conv2d_input((batch, 24, 11, 12), w, g, algorithm="col2im")
    np.testing.assert_allclose(got, reference.conv_input_grad((batch, 24, 11, 12), w, g),
                               rtol=1e-12, atol=1e-12)


def test_integer_and_float32_inputs_follow_forward_dtype_rules():
    w = np.ones((2, 1, 3), np.float32)
    g = np.ones((1, 2, 3), np.float32)
    assert grad.conv1d_input((1, 1, 5), w, g).dtype == np.float32
    assert grad.conv1d_input((1, 1, 5), w.astype(int), g.astype(int)).dtype == np.float64


# ------------------------------------------------------------------------------------------
# bad input

def test_grad_output_of_the_wrong_shape_is_rejected():
    x, w = np.ones((1, 2, 8, 8)), np.ones((3, 2, 3, 3))
    bad = np.ones((1, 3, 7, 7))
    with pytest.raises(ValueError, match=r"grad_output must have the shape .*\(1, 3, 6, 6\)"):
        grad.conv2d_input(x.shape, w, bad)
    with pytest.raises(ValueError, match="grad_output"):
        grad.conv2d_weight(x, w.shape, bad)
    with pytest.raises(ValueError, match="grad_output"):
        grad.conv2d_input(x.shape, w, np.ones((1, 3, 6, 6)), stride=2)


@pytest.mark.parametrize("input_shape, error, words", [
    ((1, 2, 8), ValueError, "input_shape must have 4 entries"),
    ("1, 2, 8, 8", TypeError, "input_shape must be a tuple"),
    ((1, 2, 8.0, 8), TypeError, "input_shape must be a tuple of 4 ints"),
    ((1, 4, 8, 8), ValueError, "weight.shape"),
], ids=["too-short", "string", "float-entry", "channels-mismatch"])
def test_bad_input_shape_is_rejected(input_shape, error, words):
    with pytest.raises(error, match=words):
        grad.conv2d_input(input_shape, np.ones((3, 2, 3, 3)), np.ones((1, 3, 6, 6)))


def test_bad_weight_shape_is_rejected():
    x = np.ones((1, 2, 8, 8))
    with pytest.raises(ValueError, match="weight_shape must have 4 entries"):
        grad.conv2d_weight(x, (3, 2, 3), np.ones((1, 3, 6, 6)))
    with pytest.raises(ValueError, match="weight.shape"):
        grad.conv2d_weight(x, (3, 1, 3, 3), np.ones((1, 3, 6, 6)))


def test_bad_forward_arguments_are_rejected_as_in_the_forward_call():
    x, w, g = np.ones((1, 2, 8, 8)), np.ones((3, 2, 3, 3)), np.ones((1, 3, 6, 6))
    with pytest.raises(ValueError, match="padding_mode"):
        grad.conv2d_input(x.shape, w, g, padding_mode="mirror")
    with pytest.raises(ValueError, match="stride"):
        grad.conv2d_weight(x, w.shape, g, stride=0)
    with pytest.raises(ValueError, match="algorithm"):
        grad.conv2d_input(x.shape, w, g, algorithm="im2col")
    with pytest.raises(ValueError, match="gemm1x1"):
        grad.conv2d_input(x.shape, w, g, algorithm="gemm1x1")
    with pytest.raises(ValueError, match="grad_output must be at least 3-d"):
        grad.conv_bias(np.ones((2, 3)))
    with pytest.raises(TypeError, match="grad_output must be real"):
        grad.conv_bias(np.ones((1, 2, 3), complex))


@pytest.mark.parametrize("band_rows", [1, 2, 3, 5, 7, 100])
def test_every_band_size_gives_the_same_gradients(band_rows, monkeypatch):
    """Bands of output rows may start and end anywhere, across depth slices (3-d)."""
    from fastconv._plan import dispatch, tiling
    nd, x, w, b, g, kwargs = make_arrays("3d-stride2-groups2")
    monkeypatch.setattr(tiling, "gemm_band_rows", lambda *args: band_rows)
    monkeypatch.setattr(tiling, "input_grad_work_split", lambda *args: (band_rows, 2))
    dispatch.forget_plans()   # plans are remembered per problem
    try:
        np.testing.assert_allclose(grad.conv3d_input(x.shape, w, g, algorithm="col2im",
                                                     **kwargs),
                                   reference.conv_input_grad(x.shape, w, g, **kwargs),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad.conv3d_weight(x, w.shape, g, **kwargs),
                                   reference.conv_weight_grad(x, w.shape, g, **kwargs),
                                   rtol=1e-12, atol=1e-12)
    finally:
        monkeypatch.undo()
        dispatch.forget_plans()


@pytest.mark.parametrize("algorithm", ["im2col_blas", "im2col_packed"])
@pytest.mark.parametrize("chunks", [1, 2, 3, 5, 8])
def test_every_count_of_partial_sums_gives_the_weight_gradient(chunks, algorithm,
                                                                monkeypatch):
    """The partial sums live in a buffer reused from call to call: a larger call before
    leaves other values there, which no chunk may add to its sum."""
    from fastconv._plan import dispatch, tiling
    nd, x, w, b, g, kwargs = make_arrays("3d-stride2-groups2")
    monkeypatch.setattr(tiling, "weight_grad_chunks", lambda *args: chunks)
    dispatch.forget_plans()
    try:
        rng = np.random.default_rng(5)
        big = rng.standard_normal((2, 4, 9, 12, 12))
        grad.conv3d_weight(big, (6, 4, 3, 3, 3), rng.standard_normal((2, 6, 7, 10, 10)),
                           algorithm=algorithm)
        np.testing.assert_allclose(grad.conv3d_weight(x, w.shape, g, algorithm=algorithm,
                                                      **kwargs),
                                   reference.conv_weight_grad(x, w.shape, g, **kwargs),
                                   rtol=1e-12, atol=1e-12)
    finally:
        monkeypatch.undo()
        dispatch.forget_plans()


@pytest.mark.parametrize("rows, threads, expected", [
    (56, 2, 2),     # 14 bands of 4 rows: one chunk a thread, not 8 chunks of 1-2 bands
    (96, 2, 6),     # 24 bands: three chunks a thread, each of at least four bands
    (448, 2, 8),    # at most four a thread
    (448, 3, 12),
    (8, 4, 2),      # fewer bands than threads: one chunk a band
])
def test_partial_sums_are_a_whole_number_per_thread_each_of_several_items(rows, threads,
                                                                          expected):
    from fastconv._plan import tiling
    from fastconv._plan.problems import conv_problem
    problem = conv_problem(2, (1, 8, rows, 16), (8, 8, 3, 3), None, 1, 1)
    assert tiling.weight_grad_chunks(problem, threads, 4) == expected


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_calls_match_the_reference(data):
    """Any valid combination of stride, per-side padding, padding mode, dilation and groups."""
    nd = data.draw(st.integers(1, 3), label="nd")
    groups = data.draw(st.integers(1, 2), label="groups")
    c_in = groups * data.draw(st.integers(1, 3), label="c_in/groups")
    c_out = groups * data.draw(st.integers(1, 3), label="c_out/groups")
    kernel = data.draw(st.tuples(*[st.integers(1, 3)] * nd), label="kernel")
    stride = data.draw(st.tuples(*[st.integers(1, 3)] * nd), label="stride")
    dilation = data.draw(st.tuples(*[st.integers(1, 2)] * nd), label="dilation")
    mode = data.draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
                     label="padding_mode")
    size = tuple(data.draw(st.integers(max(3, d * (k - 1) + 1), 7), label="size")
                 for k, d in zip(kernel, dilation))
    padding = tuple(data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="pads")
                    for _ in range(nd))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=mode)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    x = rng.standard_normal((2, c_in) + size)
    w = rng.standard_normal((c_out, c_in // groups) + kernel)
    g = rng.standard_normal(CONV[nd](x, w, **kwargs).shape)
    np.testing.assert_allclose(INPUT_GRAD[nd](x.shape, w, g, **kwargs),
                               reference.conv_input_grad(x.shape, w, g, **kwargs),
                               rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(WEIGHT_GRAD[nd](x, w.shape, g, **kwargs),
                               reference.conv_weight_grad(x, w.shape, g, **kwargs),
                               rtol=1e-11, atol=1e-11)


# --- 1x1 weight gradient with the images' positions stacked ----------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, c_out, kernel, kwargs", [
    ((3, 64, 5, 4), 1100, 1, dict()),                   # 7x7-like planes: few positions
    ((2, 128, 7, 7), 1040, 1, dict(stride=2, groups=2)),   # ResNet's downsampling shortcut
    ((4, 96, 6, 9), 1400, 1, dict(stride=(2, 3), groups=2)),
    ((5, 72, 11), 1000, 1, dict()),                       # 1-d
    ((3, 32, 6, 5), 260, 3, dict(padding=1)),             # VGG's small planes: an im2col
    ((2, 64, 7, 8), 256, 3, dict(padding=(2, 1), stride=2, dilation=(2, 1), groups=2)),
    ((2, 32, 5, 6), 260, 3, dict(padding=1, padding_mode="reflect")),
    ((2, 8, 3, 4, 5), 320, 3, dict(padding=1)),           # 3-d
    ((1, 64, 7, 7), 1100, 1, dict()),                   # one image: blocks, no partial sums
    ((1, 48, 7, 7), 300, 3, dict(padding=1)),
])
def test_weight_gradient_with_stacked_images(x_shape, c_out, kernel, kwargs, dtype):
    """Small planes are stacked end to end into deep GEMMs (the plan says so); the gradient
    and the bias gradient equal the reference."""
    from fastconv._ops.conv_grad import weight_grad_of
    from fastconv.planning import plan_weight_grad, problem_from_call
    rng = np.random.default_rng(c_out)
    nd = len(x_shape) - 2
    groups = kwargs.get("groups", 1)
    stride = kwargs.get("stride", 1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w_shape = (c_out, x_shape[1] // groups) + (kernel,) * nd
    shape_kwargs = {k: v for k, v in kwargs.items() if k != "padding_mode"}
    g = rng.standard_normal(fastconv.output_shape(x_shape, w_shape, **shape_kwargs)
                            ).astype(dtype)
    problem = problem_from_call(x_shape, w_shape, **kwargs)
    # exact precision: the 3x3 stride-1 ones would otherwise take Winograd's blocks
    with fastconv.precision("exact"):
        plan = plan_weight_grad(problem, dtype)
        assert plan.stacked and "stacked" in plan.explain()
        bias = np.empty(c_out, dtype)
        got = weight_grad_of(problem, x, g, w_shape, dtype, bias_out=bias)
        # the same through the public function, and thread-count independent
        with fastconv.num_threads(1):
            one = WEIGHT_GRAD[nd](x, w_shape, g, **kwargs)
        np.testing.assert_array_equal(WEIGHT_GRAD[nd](x, w_shape, g, **kwargs), one)
    want = reference.conv_weight_grad(x, w_shape, g, **kwargs)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(bias, g.sum(axis=(0,) + tuple(range(2, nd + 2))), rtol=tol,
                               atol=tol * np.abs(g).sum(axis=0).max())


def test_the_phase_weight_gradient_needs_a_plane_per_thread_or_an_image_of_few_channels():
    """Its work units are (image, group) planes, one per thread; with fewer planes than
    threads each plane's dot products are shared out instead, which pays only for a
    strided stem (a few colour channels, whose strided im2col is mostly gathering): a
    64-channel image, or a stride-1 colour one, goes to the GEMM, whose bands split among the
    threads."""
    from fastconv.planning import plan_weight_grad, problem_from_call
    one = problem_from_call((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    two = problem_from_call((2, 64, 56, 56), (64, 64, 3, 3), padding=1)
    stem = problem_from_call((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    colour = problem_from_call((1, 3, 128, 128), (64, 3, 3, 3), padding=1)   # stride 1
    # (exact precision: in "fast", 64 channels at stride 1 take Winograd's blocks)
    with fastconv.num_threads(2), fastconv.precision("exact"):
        assert plan_weight_grad(one, "float32").algorithm == "gemm"
        assert plan_weight_grad(colour, "float32").algorithm == "gemm"
        assert plan_weight_grad(two, "float32").algorithm == "phase"
        assert plan_weight_grad(stem, "float32").algorithm == "phase"
    with fastconv.num_threads(1), fastconv.precision("exact"):
        assert plan_weight_grad(one, "float32").algorithm == "phase"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 3, 30, 29), (10, 3, 7, 7), dict(stride=2, padding=3)),     # a stem
    ((1, 4, 34, 40), (6, 2, 3, 3), dict(padding=1, groups=2)),      # two planes
    ((1, 4, 60, 63), (1, 4, 3, 3), dict(padding=(2, 1), dilation=2)),  # one output channel
    ((3, 2, 40, 45), (5, 2, 3, 3), dict(stride=(1, 2), padding=1)),  # 3 planes, 4 threads
    ((1, 3, 5, 6, 7), (4, 3, 3, 3, 3), dict(padding=1)),            # 3-d
])
def test_phase_weight_gradient_with_fewer_planes_than_threads(x_shape, w_shape, kwargs,
                                                               dtype):
    """Each plane's dot-product tiles shared out among the threads: the reference's gradient
    and bias gradient, and the same bits as on one thread (one chunk per plane)."""
    from fastconv._ops.conv_grad import weight_grad_of
    from fastconv.planning import plan_weight_grad, problem_from_call
    rng = np.random.default_rng(w_shape[0])
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal(fastconv.output_shape(x_shape, w_shape, **kwargs)).astype(dtype)
    problem = problem_from_call(x_shape, w_shape, **kwargs)
    runs = {}
    for threads in (1, 2, 4):
        bias = np.empty(w_shape[0], dtype)
        with fastconv.num_threads(threads):
            # enough work for a team: the planes really are fewer than the threads
            assert plan_weight_grad(problem, dtype, "phase").threads == threads
            got = weight_grad_of(problem, x, g, w_shape, dtype, bias_out=bias,
                                 algorithm="phase")
        runs[threads] = got, bias
    want = reference.conv_weight_grad(x, w_shape, g, **kwargs)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(runs[2][0], want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(runs[2][1], g.sum(axis=(0,) + tuple(range(2, g.ndim))),
                               rtol=tol, atol=tol * np.abs(g).sum())
    for threads in (2, 4):
        np.testing.assert_array_equal(runs[threads][0], runs[1][0])
        np.testing.assert_array_equal(runs[threads][1], runs[1][1])



@pytest.mark.parametrize("x_shape, w_shape, stride, algorithm", [
    ((8, 128, 56, 56), (128, 128, 3, 3), 2, "phase"),      # 147456 weights: partials of 2^18
    ((4, 64, 64, 64), (128, 64, 3, 3), 1, "phase"),
    ((8, 256, 28, 28), (256, 256, 3, 3), 2, "gemm"),       # 589824: GEMM
    ((2, 32, 16, 32, 32), (64, 32, 3, 3, 3), 1, "phase"),  # 3-d: 55296
    ((2, 48, 8, 16, 16), (96, 48, 3, 3, 3), 1, "gemm"),    # 3-d: 124416, past 2^16
    ((8, 128, 28, 28), (256, 128, 1, 1), 2, "phase"),      # one tap: 32768
    ((8, 256, 56, 56), (512, 256, 1, 1), 2, "gemm"),       # one tap: 131072, past 2^16
    ((8, 96, 7, 7), (96, 96, 3, 3), 1, "gemm"),            # small planes: the GEMM stacks them
])
def test_the_phase_weight_gradient_keeps_partial_gradients_bounded(x_shape, w_shape, stride,
                                                                   algorithm):
    from fastconv.planning import plan_weight_grad, problem_from_call
    problem = problem_from_call(x_shape, w_shape, stride=stride, padding=w_shape[-1] // 2)
    # (exact precision: in "fast", stride-1 3x3 layers of few channels take Winograd's blocks)
    with fastconv.num_threads(2), fastconv.precision("exact"):
        assert plan_weight_grad(problem, "float32").algorithm == algorithm

@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    # a tap whose padding covers more than the whole output row (found by test_fuzz_training:
    # the im2col row wrote one zero past its row, into the next image's stacked positions)
    ((2, 1, 1, 2, 1), (1, 1, 1, 1, 3), dict(padding=(0, 0, 2), dilation=(1, 1, 2))),
    ((2, 3, 2, 1), (4, 3, 1, 3), dict(padding=(0, 2), dilation=(1, 2))),
    ((3, 2, 4, 2), (5, 2, 3, 3), dict(padding=3, stride=(1, 2))),
    ((2, 2, 1), (3, 2, 5), dict(padding=4, dilation=1)),
])
def test_padding_wider_than_a_short_axis(x_shape, w_shape, kwargs):
    """Every algorithm of all three computations, forced, on padding that reaches past a
    short axis: the reference's values."""
    nd = len(x_shape) - 2
    rng = np.random.default_rng(len(x_shape) + w_shape[0])
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g = rng.standard_normal(fastconv.output_shape(x_shape, w_shape, **kwargs))
    problem = fastconv.planning.problem_from_call(x_shape, w_shape, **kwargs)
    want_y = reference.conv_nd(x, w, None, **kwargs)
    want_dx = reference.conv_input_grad(x_shape, w, g, **kwargs)
    want_dw = reference.conv_weight_grad(x, w_shape, g, **kwargs)
    for operation, call, want in [
            ("forward", lambda a: CONV[nd](x, w, algorithm=a, **kwargs), want_y),
            ("input_grad", lambda a: INPUT_GRAD[nd](x_shape, w, g, algorithm=a, **kwargs),
             want_dx),
            ("weight_grad", lambda a: WEIGHT_GRAD[nd](x, w_shape, g, algorithm=a, **kwargs),
             want_dw)]:
        for name in ("auto",) + tuple(fastconv.planning.variants(operation)):
            if name != "auto" and not fastconv.planning.SUPPORTS.get(name, lambda p: True)(
                    problem):
                continue
            try:
                got = call(name)
            except ValueError as error:   # a kernel that cannot compute this geometry
                assert "needs" in str(error), (operation, name, error)
                continue
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10,
                                       err_msg=f"{operation} {name}")


@pytest.mark.parametrize("x_shape, w_shape, kwargs, chosen", [
    ((8, 64, 14, 14), (48, 64, 3, 3), dict(stride=2, padding=1), True),   # ResNet's 3x3 s2
    ((4, 16, 56, 56), (16, 16, 3, 3), dict(stride=2, padding=1), True),   # small in bytes
    ((4, 3, 30, 30), (8, 3, 3, 3), dict(stride=2, padding=1), True),      # MobileNet's stem
    ((4, 16, 33, 31), (5, 16, 5, 3), dict(stride=(3, 2), padding=(1, 1)), True),
    # few channels, more than 9 taps: col2im's rows (channels x taps) fill its tiles
    ((2, 3, 30, 30), (8, 3, 7, 7), dict(stride=2, padding=3), False),     # ResNet's stem
    ((2, 6, 33, 31), (5, 6, 5, 3), dict(stride=(3, 2), padding=(1, 1)), False),
    ((4, 64, 72, 72), (64, 64, 3, 3), dict(stride=2, padding=1), False),  # large: col2im
    ((8, 64, 14, 14), (64, 64, 2, 2), dict(stride=2), False),             # one tap a phase
    ((8, 64, 14, 14), (64, 64, 1, 1), dict(stride=2), False),
    ((8, 64, 14, 14), (64, 32, 3, 3), dict(stride=2, padding=1, groups=2), False),
    ((8, 64, 14, 14), (64, 64, 3, 3), dict(stride=2, padding=2, dilation=2), False),
    ((8, 64, 14, 14), (64, 64, 3, 3), dict(padding=1), False),            # Winograd's
    ((4, 64, 6, 6), (64, 64, 3, 3), dict(padding=1), True),     # stride 1, too few tiles
    ((4, 32, 10, 10), (24, 32, 5, 5), dict(padding=2), True),   # stride 1, 5x5
    ((4, 32, 9, 9), (24, 32, 3, 3), dict(), True),              # stride 1, no padding
    ((1, 3, 12, 12), (16, 3, 3, 3), dict(padding=1), False),    # stride 1, few channels
    ((2, 16, 9, 9), (8, 16, 1, 1), dict(padding=1), False),     # stride 1, one tap
])
def test_layers_with_small_inputs_take_the_channels_last_stride_phases(
        x_shape, w_shape, kwargs, chosen):
    """The input gradient of a small layer runs as one stride-1 channels-last GEMM per
    stride phase (a stride-1 layer is one phase of every tap) between two layout
    transposes; it gives the reference's gradient, in both precisions, forced or chosen,
    and the forcing name is refused where the phases do not compute the layer. (At one or
    two images col2im takes these layers: test_packed_weights.py.)"""
    problem = fastconv.planning.problem_from_call(x_shape, w_shape, **kwargs)
    plan = fastconv.planning.plan_input_grad(problem, np.float32)
    assert (plan.kernel == Kernel.INPUT_GRAD_CHANNELS_LAST_PHASES) == chosen, plan.explain()
    computes = fastconv.planning.SUPPORTS["channels_last"](problem)
    rng = np.random.default_rng(27)
    for dtype in (np.float32, np.float64):
        w = rng.standard_normal(w_shape).astype(dtype)
        g = rng.standard_normal(problem.out_shape).astype(dtype)
        want = reference.conv_input_grad(x_shape, w.astype(np.float64), g.astype(np.float64),
                                         **kwargs)
        tol = 1e-4 if dtype == np.float32 else 1e-11
        for algorithm in ("auto", "channels_last", "channels_last_phases"):
            if algorithm != "auto" and not computes:
                with pytest.raises(ValueError, match="needs a 2-d layer of one group"):
                    grad.conv2d_input(x_shape, w, g, algorithm=algorithm, **kwargs)
                continue
            got = grad.conv2d_input(x_shape, w, g, algorithm=algorithm, **kwargs)
            assert got.flags.c_contiguous and got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("x_shape, w_shape, stride, packed", [
    ((8, 64, 14, 14), (64, 64, 3, 3), 2, True),       # 7x7 outputs: a narrow GEMM per image
    ((8, 32, 32, 32), (32, 32, 3, 3), 2, True),       # 16x16 = 256 outputs
    # else the micro-kernel where it reads W^T in place: whole panels of rows (channels x
    # taps) and bands of at most 8 panels of positions (17x17 is at AVX-512, not at AVX2)
    ((8, 32, 34, 34), (32, 32, 3, 3), 2, "in place"),
    ((1, 64, 14, 14), (64, 64, 3, 3), 2, "in place"),  # one image
    ((8, 64, 14, 14), (128, 64, 1, 1), 2, "in place"),  # one tap
    # BLAS: 189, 99 and 62 rows are no whole panels (of 6, 8 or 12)
    ((8, 21, 34, 34), (32, 21, 3, 3), 2, False),
    ((1, 21, 230, 230), (64, 21, 3, 3), 2, False),    # one large image
    ((8, 62, 14, 14), (128, 62, 1, 1), 2, False),
])
def test_the_col2im_input_gradient_of_small_planes_multiplies_on_the_micro_kernel(
        x_shape, w_shape, stride, packed):
    problem = fastconv.planning.problem_from_call(x_shape, w_shape, stride=stride, padding=1
                                                  if w_shape[-1] == 3 else 0)
    # (a strided layer this small runs as channels-last phases unless col2im is forced)
    plan = fastconv.planning.plan_input_grad(problem, np.float32, "col2im")
    assert plan.algorithm == "col2im", plan.explain()
    in_place = tiling.col2im_weight_in_place(problem.explicitly_padded, 4, plan.threads)
    if packed == "in place":
        packed = in_place
        if plan.threads == 2 and dispatch.cpu.simd_level() == "avx512":
            assert in_place
    elif not packed:
        assert not in_place
    if dispatch.blas_runs_full_width():
        assert (plan.kernel == Kernel.INPUT_GRAD_COL2IM_PACKED) == packed, plan.explain()
    else:   # BLAS held to narrower kernels than the CPU's: the micro-kernel everywhere
        assert plan.kernel == Kernel.INPUT_GRAD_COL2IM_PACKED


# --- both gradients in one call: conv{1,2,3}d_backward ---------------------------------------

BACKWARD = {1: grad.conv1d_backward, 2: grad.conv2d_backward, 3: grad.conv3d_backward}


@pytest.mark.parametrize("x_shape, w_shape, rows", [
    ((1, 512, 14, 14), (512, 512, 3, 3), 14),   # 512 channels, 14 wide: the whole plane
    ((2, 256, 32, 32), (256, 256, 3, 3), 8),    # 256 columns: 8 rows of 32
    ((8, 64, 56, 56), (64, 64, 3, 3), 4),       # few channels: L2 decides (4 rows of 56)
    # capped: a thread per half of the channels, 7 rows of (1024 x 9) x 64 = 15.75 MiB
    ((1, 2048, 64, 64), (2048, 2048, 3, 3), 7),
])
def test_a_col2im_band_is_as_wide_as_the_output_gradient_has_channels(x_shape, w_shape, rows):
    """Each band reads the whole W^T again, so a band keeps at least C_out/groups columns
    (unfolded columns up to tiling.COL2IM_BAND_MAX_BYTES), else what fits L2."""
    problem = fastconv.planning.problem_from_call(x_shape, w_shape, padding=1)
    plan = fastconv.planning.plan_input_grad(problem, np.float32, "col2im")
    assert plan.band_rows == rows, plan.explain()


@pytest.mark.parametrize("case", IDS)
def test_backward_gives_both_gradients_of_the_two_functions(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    dx, dw = BACKWARD[nd](x, w, g, **kwargs)
    np.testing.assert_array_equal(dx, INPUT_GRAD[nd](x.shape, w, g, **kwargs))
    np.testing.assert_array_equal(dw, WEIGHT_GRAD[nd](x, w.shape, g, **kwargs))
    np.testing.assert_allclose(dx, reference.conv_input_grad(x.shape, w, g, **kwargs),
                               rtol=1e-12, atol=1e-12)


# depthwise layers at stride 1 whose two gradients run in one pass (asserted below, so that a
# change of the dispatcher's rules cannot turn these into tests of the two calls): odd widths
# (a vector tail on every row), dilation, asymmetric and no padding, 5x5 and 7x7, 1-d and 3-d
FUSED_CASES = {
    "3x3": ((2, 8, 32, 33), (8, 1, 3, 3), dict(padding=1)),
    "5x5-tail": ((3, 8, 30, 47), (8, 1, 5, 5), dict(padding=2)),
    "dilation(2,1)": ((2, 8, 40, 29), (8, 1, 3, 3), dict(padding=(2, 1), dilation=(2, 1))),
    "3x5-asymmetric-pads": ((2, 8, 31, 40), (8, 1, 3, 5), dict(padding=((1, 0), (2, 1)))),
    "unpadded": ((2, 8, 33, 34), (8, 1, 3, 3), {}),
    "7x7": ((2, 8, 20, 23), (8, 1, 7, 7), dict(padding=3)),
    "1d": ((2, 8, 2000), (8, 1, 5), dict(padding=2)),
    "3d": ((1, 8, 9, 20, 21), (8, 1, 3, 3, 3), dict(padding=1)),
    # blocks of several channels, the last one short, at 1 and 2 threads
    "37-channels": ((3, 37, 28, 35), (37, 1, 3, 3), dict(padding=1)),
}


def fused_arrays(case, dtype, seed=11):
    x_shape, w_shape, kwargs = FUSED_CASES[case]
    kwargs = dict(kwargs, groups=x_shape[1])
    rng = np.random.default_rng(seed)
    nd = len(x_shape) - 2
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    g = rng.standard_normal(CONV[nd](x, w, **kwargs).shape).astype(dtype)
    return nd, x, w, g, kwargs


def runs_fused(nd, x, w, g, kwargs):
    from fastconv._ops.conv_grad import _fused_depthwise
    problem = fastconv.planning.problem_from_call(x.shape, w.shape, **kwargs)
    return _fused_depthwise(problem, x, w, g, x.dtype) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_depthwise_gradients_in_one_pass_are_those_of_the_two_kernels(case, dtype):
    """One pass over each channel's output gradient for both gradients: the same bits as the
    input gradient's and the weight gradient's own kernels, and the float64 reference's
    values, whatever the thread count."""
    nd, x, w, g, kwargs = fused_arrays(case, dtype)
    with fastconv.num_threads(2):
        assert runs_fused(nd, x, w, g, kwargs)
        dx, dw = BACKWARD[nd](x, w, g, **kwargs)
        np.testing.assert_array_equal(dx, INPUT_GRAD[nd](x.shape, w, g, **kwargs))
        np.testing.assert_array_equal(dw, WEIGHT_GRAD[nd](x, w.shape, g, **kwargs))
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    want_dx = reference.conv_input_grad(x.shape, w64, g64, **kwargs)
    want_dw = reference.conv_weight_grad(x64, w.shape, g64, **kwargs)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert dx.dtype == dw.dtype == dtype
    np.testing.assert_allclose(dx, want_dx, rtol=tol, atol=tol * np.abs(want_dx).max())
    np.testing.assert_allclose(dw, want_dw, rtol=tol, atol=tol * np.abs(want_dw).max())
    with fastconv.num_threads(1):   # each channel's sums in one order, whoever runs it
        assert runs_fused(nd, x, w, g, kwargs)
        again = BACKWARD[nd](x, w, g, **kwargs)
    np.testing.assert_array_equal(again[0], dx)
    np.testing.assert_array_equal(again[1], dw)


def test_depthwise_gradients_in_one_pass_of_non_contiguous_operands():
    nd, x, w, g, kwargs = fused_arrays("3x3", np.float64)
    x_strided = np.asfortranarray(x)
    g_strided = np.repeat(g, 2, axis=-1)[..., ::2]
    w_strided = np.asfortranarray(w)
    with fastconv.num_threads(2):
        assert runs_fused(nd, x_strided, w_strided, g_strided, kwargs)
        dx, dw = grad.conv2d_backward(x_strided, w_strided, g_strided, **kwargs)
    np.testing.assert_allclose(dx, reference.conv_input_grad(x.shape, w, g, **kwargs),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, reference.conv_weight_grad(x, w.shape, g, **kwargs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("band_rows", [1, 2, 3, 5, 31, 32, 100])
def test_depthwise_gradients_in_one_pass_by_any_band_of_rows(band_rows, stream):
    """The input gradient's planes are computed in bands of output rows: any band size gives
    the same gradients, written by plain or by streaming stores."""
    from fastconv._kernels import conv_direct
    x_shape = (2, 4, 2, 32, 19)     # 3-d: bands restart at every depth
    rng = np.random.default_rng(12)
    x, g = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
    w = rng.standard_normal((4, 1, 1, 3, 5))
    kwargs = dict(padding=(0, 1, 2), groups=4)
    reversed_w = np.ascontiguousarray(w[..., ::-1, ::-1])
    dx, dw = np.empty_like(x), np.empty_like(w)
    conv_direct.depthwise_grads(x, g, reversed_w, dx, dw, (1, 1, 1), (0, 1, 2), (1, 1, 1),
                                (0, 1, 2), 4, band_rows, 2, stream)
    np.testing.assert_allclose(dx, reference.conv_input_grad(x_shape, w, g, **kwargs),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, reference.conv_weight_grad(x, w.shape, g, **kwargs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", [(2, 5, 1, 56, 56), (3, 7, 1, 19, 37), (1, 3, 2, 40, 33)])
def test_depthwise_gradients_streamed_out_are_the_same_bits(x_shape, dtype):
    """dx written by streaming stores (a large or cold dx, memory.streams_output) holds the
    same bits as by plain stores, planes of any size and alignment."""
    from fastconv._kernels import conv_direct
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w = rng.standard_normal((x.shape[1], 1, 1, 3, 3)).astype(dtype)
    reversed_w = np.ascontiguousarray(w[..., ::-1, ::-1])
    grads = {}
    for stream in (False, True):
        dx, dw = np.empty_like(x), np.empty_like(w)
        conv_direct.depthwise_grads(x, g, reversed_w, dx, dw, (1, 1, 1), (0, 1, 1),
                                    (1, 1, 1), (0, 1, 1), x.shape[1], 100, 2, stream)
        grads[stream] = dx, dw
    np.testing.assert_array_equal(grads[True][0], grads[False][0])
    np.testing.assert_array_equal(grads[True][1], grads[False][1])
    kwargs = dict(padding=(0, 1, 1), groups=x.shape[1])
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    want = reference.conv_input_grad(x.shape, w64, g64, **kwargs)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(grads[True][0], want, rtol=tol, atol=tol * np.abs(want).max())


def test_backward_of_mixed_dtypes_gives_each_gradient_its_own_dtype():
    """As the two functions: the input gradient in the weight's and output gradient's
    dtype, the weight gradient in the input's and output gradient's."""
    nd, x, w, g, kwargs = fused_arrays("3x3", np.float32)
    dx, dw = grad.conv2d_backward(x.astype(np.float64), w, g, **kwargs)
    assert dx.dtype == np.float32 and dw.dtype == np.float64
    np.testing.assert_array_equal(dx, grad.conv2d_input(x.shape, w, g, **kwargs))
    np.testing.assert_array_equal(dw, grad.conv2d_weight(x.astype(np.float64), w.shape, g,
                                                         **kwargs))


def test_backward_rejects_bad_calls_naming_the_argument():
    x, w = np.zeros((1, 4, 8, 8)), np.zeros((4, 1, 3, 3))
    with pytest.raises(ValueError, match="grad_output"):
        grad.conv2d_backward(x, w, np.zeros((1, 4, 8, 8)), groups=4)
    with pytest.raises(ValueError, match="groups"):
        grad.conv2d_backward(x, w, np.zeros((1, 4, 6, 6)), groups=3)
    with pytest.raises(TypeError, match="input"):
        grad.conv2d_backward("x", w, np.zeros((1, 4, 6, 6)), groups=4)
