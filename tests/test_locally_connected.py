"""Locally connected layers (fastconv.locally_connected{1,2}d) and their gradients.

Specification:
- they equal the per-position definition in tests/reference.py;
- with the same filter at every position they are the convolution;
- their gradients are derivatives of the forward pass (finite differences, float64), equal
  the reference gradients, and match PyTorch's autograd through an unfold-based layer;
- a weight that does not fit the output grid, or mismatched shapes, raise errors naming the
  argument.
"""
import numpy as np
import pytest

import fastconv
from fastconv import grad

import reference

LOCAL = {1: fastconv.locally_connected1d, 2: fastconv.locally_connected2d}
CONV = {1: fastconv.conv1d, 2: fastconv.conv2d}
INPUT_GRAD = {1: grad.locally_connected1d_input, 2: grad.locally_connected2d_input}
WEIGHT_GRAD = {1: grad.locally_connected1d_weight, 2: grad.locally_connected2d_weight}

# id: (input shape, (C_out, kernel...), keyword arguments)
CASES = {
    "1d": ((2, 3, 9), (4, 3), {}),
    "1d-stride2-pad1": ((2, 2, 10), (3, 3), dict(stride=2, padding=1)),
    "1d-stride3>kernel2": ((1, 2, 11), (2, 2), dict(stride=3)),
    "1d-dilation2-asymmetric": ((2, 2, 9), (2, 3), dict(dilation=2, padding=((2, 1),))),
    "2d": ((2, 3, 6, 5), (4, 3, 3), {}),
    "2d-stride2-pad1": ((2, 2, 7, 8), (3, 3, 3), dict(stride=2, padding=1)),
    "2d-stride(1,3)-dilation(2,1)": ((1, 2, 8, 10), (2, 2, 3), dict(stride=(1, 3),
                                                                    dilation=(2, 1))),
    "2d-asymmetric-pads": ((2, 3, 5, 5), (2, 3, 2), dict(padding=((1, 0), (0, 2)))),
    "2d-same": ((2, 2, 5, 6), (3, 3, 3), dict(padding="same")),
}
IDS = list(CASES)


def make_arrays(case, dtype=np.float64, seed=0):
    x_shape, (c_out, *kernel), kwargs = CASES[case]
    nd = len(kernel)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    grid = fastconv.output_shape(x_shape, (c_out, x_shape[1]) + tuple(kernel),
                                 **kwargs)[2:]
    w = rng.standard_normal(grid + (c_out, x_shape[1]) + tuple(kernel)).astype(dtype)
    b = rng.standard_normal((c_out,) + grid).astype(dtype)
    g = rng.standard_normal((x_shape[0], c_out) + grid).astype(dtype)
    return nd, x, w, b, g, kwargs


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", IDS)
def test_forward_matches_reference(case, dtype):
    nd, x, w, b, g, kwargs = make_arrays(case, dtype)
    got = LOCAL[nd](x, w, b, **kwargs)
    assert got.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, reference.locally_connected_nd(x, w, b, **kwargs),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("case", IDS)
def test_shared_filters_are_the_convolution(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    conv_weight = w[(0,) * nd]
    shared = np.broadcast_to(conv_weight, w.shape)
    conv_bias = b[(slice(None),) + (0,) * nd]
    shared_bias = np.broadcast_to(conv_bias.reshape((-1,) + (1,) * nd), b.shape)
    np.testing.assert_allclose(LOCAL[nd](x, shared, shared_bias, **kwargs),
                               CONV[nd](x, conv_weight, conv_bias, **kwargs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", IDS)
def test_gradients_match_reference(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    np.testing.assert_allclose(INPUT_GRAD[nd](x.shape, w, g, **kwargs),
                               reference.locally_connected_input_grad(x.shape, w, g, **kwargs),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(WEIGHT_GRAD[nd](x, w.shape, g, **kwargs),
                               reference.locally_connected_weight_grad(x, w.shape, g, **kwargs),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(grad.locally_connected_bias(g), g.sum(axis=0))


@pytest.mark.parametrize("case", IDS)
def test_gradients_are_derivatives_of_the_forward_pass(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    rng = np.random.default_rng(1)
    forward = LOCAL[nd]
    losses = (lambda x_: np.vdot(forward(x_, w, b, **kwargs), g),
              lambda w_: np.vdot(forward(x, w_, b, **kwargs), g),
              lambda b_: np.vdot(forward(x, w, b_, **kwargs), g))
    grads = (INPUT_GRAD[nd](x.shape, w, g, **kwargs), WEIGHT_GRAD[nd](x, w.shape, g, **kwargs),
             grad.locally_connected_bias(g))
    eps = 1e-6
    for value, gradient, loss in zip((x, w, b), grads, losses):
        v = rng.standard_normal(value.shape)
        expected = (loss(value + eps * v) - loss(value - eps * v)) / (2 * eps)
        assert np.vdot(gradient, v) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def torch_locally_connected(torch, nd, x, w, b, kwargs):
    """The layer in PyTorch: F.unfold gathers every patch, one einsum applies the filters."""
    F = torch.nn.functional
    kernel = tuple(w.shape[nd + 2:])
    stride = reference.as_tuple(kwargs.get("stride", 1), nd)
    dilation = reference.as_tuple(kwargs.get("dilation", 1), nd)
    pads = reference.padding_pairs(kwargs.get("padding", 0), kernel, dilation)
    x = F.pad(x, [v for pair in reversed(pads) for v in pair])
    if nd == 1:   # unfold is 2-d only: a 1-d layer is a 2-d one of height 1
        x, kernel, stride, dilation = x[:, :, None], (1,) + kernel, (1,) + stride, (1,) + dilation
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)       # (N, C_in * K, P)
    grid = w.shape[:nd]
    w_flat = w.reshape(-1, w.shape[nd], cols.shape[1])                 # (P, C_out, C_in * K)
    out = torch.einsum("nkp,pok->nop", cols, w_flat)
    return out.reshape((x.shape[0], w.shape[nd]) + tuple(grid)) + b


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", IDS)
def test_forward_and_gradients_match_torch_autograd(case, dtype):
    torch = pytest.importorskip("torch")
    nd, x, w, b, g, kwargs = make_arrays(case, dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = torch_locally_connected(torch, nd, xt, wt, bt, kwargs)
    out.backward(torch.tensor(g))
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(LOCAL[nd](x, w, b, **kwargs), out.detach().numpy(), **tol)
    for got, expected in ((INPUT_GRAD[nd](x.shape, w, g, **kwargs), xt.grad),
                          (WEIGHT_GRAD[nd](x, w.shape, g, **kwargs), wt.grad),
                          (grad.locally_connected_bias(g), bt.grad)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected.numpy(), **tol)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batches_larger_than_one_gemm_block(threads):
    """The kernels multiply blocks of 64 images per position; 130 images span three blocks."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((130, 2, 5, 6))
    w = rng.standard_normal((2, 2, 3, 2, 3, 3))
    b = rng.standard_normal((3, 2, 2))
    g = rng.standard_normal((130, 3, 2, 2))
    kwargs = dict(stride=(2, 1), padding=((1, 0), (0, 0)), dilation=(1, 2))
    with fastconv.num_threads(threads):
        np.testing.assert_allclose(fastconv.locally_connected2d(x, w, b, **kwargs),
                                   reference.locally_connected_nd(x, w, b, **kwargs),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            grad.locally_connected2d_input(x.shape, w, g, **kwargs),
            reference.locally_connected_input_grad(x.shape, w, g, **kwargs),
            rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            grad.locally_connected2d_weight(x, w.shape, g, **kwargs),
            reference.locally_connected_weight_grad(x, w.shape, g, **kwargs),
            rtol=1e-12, atol=1e-12)


def test_threads_give_the_same_result():
    nd, x, w, b, g, kwargs = make_arrays("2d-stride2-pad1")
    with fastconv.num_threads(1):
        serial = (LOCAL[2](x, w, b, **kwargs), INPUT_GRAD[2](x.shape, w, g, **kwargs),
                  WEIGHT_GRAD[2](x, w.shape, g, **kwargs))
    with fastconv.num_threads(3):
        parallel = (LOCAL[2](x, w, b, **kwargs), INPUT_GRAD[2](x.shape, w, g, **kwargs),
                    WEIGHT_GRAD[2](x, w.shape, g, **kwargs))
    for a, b_ in zip(serial, parallel):
        np.testing.assert_array_equal(a, b_)


# ------------------------------------------------------------------------------------------
# bad input

def test_weight_that_does_not_fit_the_output_grid_is_rejected():
    x = np.ones((1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"weight.shape\[:2\] must be the output grid "
                                         r"\(H_out, W_out\) = \(6, 6\)"):
        fastconv.locally_connected2d(x, np.ones((8, 8, 3, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"weight.shape\[:2\] .* = \(3, 3\)"):
        fastconv.locally_connected2d(x, np.ones((6, 6, 3, 2, 3, 3)), stride=2)


@pytest.mark.parametrize("weight_shape, bias_shape, words", [
    ((6, 6, 3, 4, 3, 3), None, r"weight.shape\[3\] must be C_in = input.shape\[1\] = 2"),
    ((6, 6, 3, 2, 3), None, "weight must be 6-d"),
    ((6, 6, 3, 2, 3, 3), (3,), r"bias must have shape \(C_out, H_out, W_out\)"),
    ((6, 6, 3, 2, 3, 3), (3, 6, 5), r"bias must have shape .*\(3, 6, 6\)"),
], ids=["c_in-mismatch", "weight-ndim", "bias-per-channel-only", "bias-grid"])
def test_shapes_that_do_not_match_are_rejected(weight_shape, bias_shape, words):
    bias = None if bias_shape is None else np.ones(bias_shape)
    with pytest.raises(ValueError, match=words):
        fastconv.locally_connected2d(np.ones((1, 2, 8, 8)), np.ones(weight_shape), bias)


def test_gradient_calls_check_their_shapes():
    w = np.ones((6, 6, 3, 2, 3, 3))
    with pytest.raises(ValueError, match="grad_output must have the shape"):
        grad.locally_connected2d_input((1, 2, 8, 8), w, np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="weight_shape must have 6 entries"):
        grad.locally_connected2d_weight(np.ones((1, 2, 8, 8)), (6, 6, 3, 2, 3),
                                        np.ones((1, 3, 6, 6)))
    with pytest.raises(ValueError, match="input must be 3-d"):
        fastconv.locally_connected1d(np.ones((1, 2, 8, 8)), np.ones((6, 3, 2, 3)))
