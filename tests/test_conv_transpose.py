"""Transposed convolution (fastconv.conv_transpose{1,2,3}d) and its gradients.

Specification:
- it equals the scatter definition in tests/reference.py for every algorithm, and PyTorch;
- it is the adjoint of the convolution: <conv(x, w), y> == <x, conv_transpose(y, w)>;
- its gradients are derivatives of its forward pass (finite differences) and match autograd;
- bad calls (output_padding too large, mismatched shapes) raise errors naming the argument.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv
from fastconv import grad

import reference

TRANSPOSE = {1: fastconv.conv_transpose1d, 2: fastconv.conv_transpose2d,
             3: fastconv.conv_transpose3d}
CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
INPUT_GRAD = {1: grad.conv_transpose1d_input, 2: grad.conv_transpose2d_input,
              3: grad.conv_transpose3d_input}
WEIGHT_GRAD = {1: grad.conv_transpose1d_weight, 2: grad.conv_transpose2d_weight,
               3: grad.conv_transpose3d_weight}

# id: (input shape, weight shape (C_in, C_out/groups, *kernel), keyword arguments)
CASES = {
    "1d": ((2, 3, 6), (3, 4, 3), {}),
    "1d-stride2-outpad1": ((2, 2, 5), (2, 3, 3), dict(stride=2, output_padding=1)),
    "1d-stride3>kernel2": ((1, 2, 4), (2, 2, 2), dict(stride=3)),
    "1d-dilation2-pad2": ((2, 2, 6), (2, 3, 3), dict(dilation=2, padding=2)),
    "1d-outpad>=stride-with-dilation": ((1, 2, 5), (2, 2, 3), dict(stride=2, dilation=3,
                                                                   output_padding=2)),
    "2d": ((2, 3, 5, 4), (3, 2, 3, 3), {}),
    "2d-stride2-pad1-k4": ((2, 4, 4, 5), (4, 3, 4, 4), dict(stride=2, padding=1)),
    "2d-upsample-k2s2": ((1, 8, 4, 3), (8, 4, 2, 2), dict(stride=2)),
    # kernel == stride: the taps tile the output (each pixel written once, no zero-fill)
    "1d-k3s3-tiles": ((2, 3, 5), (3, 2, 3), dict(stride=3)),
    "2d-k(1,2)s(1,2)-groups-tiles": ((2, 4, 3, 5), (4, 2, 1, 2), dict(stride=(1, 2), groups=2)),
    "2d-k2s2-outpad1": ((1, 4, 3, 3), (4, 2, 2, 2), dict(stride=2, output_padding=1)),
    "3d-upsample-k2s2": ((1, 4, 3, 2, 3), (4, 3, 2, 2, 2), dict(stride=2)),
    "2d-groups2": ((2, 4, 4, 4), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2,
                                                    output_padding=1)),
    "2d-stride(3,2)-dilation(1,2)": ((1, 2, 4, 5), (2, 3, 2, 3), dict(stride=(3, 2),
                                                                      dilation=(1, 2),
                                                                      output_padding=(2, 1))),
    "2d-asymmetric-pads": ((2, 2, 4, 4), (2, 2, 3, 3), dict(padding=((1, 0), (0, 2)),
                                                            stride=2)),
    "2d-gemm-sized": ((2, 16, 5, 4), (16, 12, 3, 3), dict(stride=2, padding=1,
                                                          output_padding=1)),
    "2d-gemm-groups": ((1, 32, 4, 4), (32, 8, 4, 4), dict(stride=2, padding=1, groups=2)),
    "2d-pointwise": ((2, 16, 4, 5), (16, 8, 1, 1), {}),
    "2d-depthwise": ((2, 4, 5, 5), (4, 1, 3, 3), dict(groups=4, stride=2)),
    "3d": ((1, 2, 3, 4, 3), (2, 3, 2, 3, 2), dict(stride=2, padding=1)),
    "3d-groups-outpad": ((2, 4, 3, 3, 2), (4, 2, 3, 2, 3), dict(stride=(2, 1, 3), groups=2,
                                                                output_padding=(1, 0, 2))),
}
IDS = list(CASES)


def make_arrays(case, dtype=np.float64, seed=0):
    x_shape, w_shape, kwargs = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    groups = kwargs.get("groups", 1)
    b = rng.standard_normal(w_shape[1] * groups).astype(dtype)
    nd = len(w_shape) - 2
    g = rng.standard_normal(reference.conv_transpose_nd(x, w, **kwargs).shape).astype(dtype)
    return nd, x, w, b, g, kwargs


def algorithms_for(case):
    x_shape, w_shape, kwargs = CASES[case]
    pointwise = all(k == 1 for k in w_shape[2:]) and not kwargs
    options = dict(stride=1, padding=0, output_padding=0, groups=1, dilation=1)
    options.update(kwargs)
    problem = fastconv.planning.conv_transpose_problem(
        len(w_shape) - 2, x_shape, w_shape, None, options["stride"], options["padding"],
        options["output_padding"], options["groups"], options["dilation"])
    subpixel = fastconv.planning.SUPPORTS["subpixel"](problem)
    return ["auto", "direct", "col2im"] + (["gemm1x1"] if pointwise else []) \
        + (["subpixel"] if subpixel else [])


@pytest.mark.parametrize("case", IDS)
def test_forward_matches_reference_for_every_algorithm(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    expected = reference.conv_transpose_nd(x, w, b, **kwargs)
    for algorithm in algorithms_for(case):
        got = TRANSPOSE[nd](x, w, b, algorithm=algorithm, **kwargs)
        assert got.shape == expected.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=algorithm)


@pytest.mark.parametrize("case", IDS)
def test_gradients_match_reference(case):
    """The input gradient is the convolution it transposes; the weight gradient correlates."""
    nd, x, w, b, g, kwargs = make_arrays(case)
    dx = INPUT_GRAD[nd](x.shape, w, g, **kwargs)
    dw = WEIGHT_GRAD[nd](x, w.shape, g, **kwargs)
    conv_kwargs = {k: v for k, v in kwargs.items() if k != "output_padding"}
    # the transposed convolution's input gradient is the forward convolution of grad_output
    np.testing.assert_allclose(dx, reference.conv_nd(g, w, **conv_kwargs)[
        (Ellipsis,) + tuple(slice(0, n) for n in x.shape[2:])], rtol=1e-12, atol=1e-12)
    # and its weight gradient the convolution's weight gradient with the roles swapped
    np.testing.assert_allclose(dw, reference.conv_weight_grad(g, w.shape, x, **conv_kwargs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", IDS)
def test_gradients_are_derivatives_of_the_forward_pass(case):
    nd, x, w, b, g, kwargs = make_arrays(case)
    rng = np.random.default_rng(1)
    forward = TRANSPOSE[nd]
    losses = (lambda x_: np.vdot(forward(x_, w, b, **kwargs), g),
              lambda w_: np.vdot(forward(x, w_, b, **kwargs), g),
              lambda b_: np.vdot(forward(x, w, b_, **kwargs), g))
    grads = (INPUT_GRAD[nd](x.shape, w, g, **kwargs), WEIGHT_GRAD[nd](x, w.shape, g, **kwargs),
             grad.conv_bias(g))
    eps = 1e-6
    for value, gradient, loss in zip((x, w, b), grads, losses):
        v = rng.standard_normal(value.shape)
        expected = (loss(value + eps * v) - loss(value - eps * v)) / (2 * eps)
        assert np.vdot(gradient, v) == pytest.approx(expected, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", [c for c in IDS if c != "2d-asymmetric-pads"])
def test_forward_and_gradients_match_torch(case, dtype):
    torch = pytest.importorskip("torch")
    nd, x, w, b, g, kwargs = make_arrays(case, dtype)
    fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
          3: torch.nn.functional.conv_transpose3d}[nd]
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = fn(xt, wt, bt, **kwargs)
    out.backward(torch.tensor(g))
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(TRANSPOSE[nd](x, w, b, **kwargs), out.detach().numpy(), **tol)
    for got, expected in ((INPUT_GRAD[nd](x.shape, w, g, **kwargs), xt.grad),
                          (WEIGHT_GRAD[nd](x, w.shape, g, **kwargs), wt.grad),
                          (grad.conv_bias(g), bt.grad)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected.numpy(), **tol)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_transposed_convolution_is_the_adjoint_of_convolution(data):
    """<conv(x, w), y> == <x, conv_transpose(y, w)> for matching parameters."""
    nd = data.draw(st.integers(1, 3), label="nd")
    groups = data.draw(st.integers(1, 2), label="groups")
    c_in = groups * data.draw(st.integers(1, 3), label="c_in/groups")
    c_out = groups * data.draw(st.integers(1, 3), label="c_out/groups")
    kernel = data.draw(st.tuples(*[st.integers(1, 3)] * nd), label="kernel")
    stride = data.draw(st.tuples(*[st.integers(1, 3)] * nd), label="stride")
    dilation = data.draw(st.tuples(*[st.integers(1, 2)] * nd), label="dilation")
    padding = data.draw(st.tuples(*[st.integers(0, 2)] * nd), label="padding")
    size = tuple(data.draw(st.integers(d * (k - 1) + 1, 7), label="size")
                 for k, d in zip(kernel, dilation))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    x = rng.standard_normal((2, c_in) + size)
    w = rng.standard_normal((c_out, c_in // groups) + kernel)
    y_conv = CONV[nd](x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = rng.standard_normal(y_conv.shape)
    # the output_padding that makes the transposed output the size of x
    output_padding = tuple((n + 2 * p - d * (k - 1) - 1) % s
                           for n, p, d, k, s in zip(size, padding, dilation, kernel, stride))
    x_adj = TRANSPOSE[nd](y, w, stride=stride, padding=padding, output_padding=output_padding,
                          dilation=dilation, groups=groups)
    assert x_adj.shape == x.shape
    assert np.vdot(y_conv, y) == pytest.approx(np.vdot(x, x_adj), rel=1e-10, abs=1e-10)


def test_float32_stays_float32_and_bias_is_added_per_channel():
    x = np.zeros((1, 2, 3, 3), np.float32)
    w = np.ones((2, 3, 2, 2), np.float32)
    out = fastconv.conv_transpose2d(x, w, np.float32([1, 2, 3]), stride=2)
    assert out.dtype == np.float32 and out.shape == (1, 3, 6, 6)
    np.testing.assert_array_equal(out[0, :, 0, 0], [1, 2, 3])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsampling_layers_write_every_output_pixel(nd, dtype):
    """Kernel == stride (UNet's and V-Net's up-sampling): each output pixel is one tap's
    product, stored once with no zero-fill first. Rows 19 pairs wide cover a whole vector
    block and a ragged tail; the output's memory is taken from the pool after NaNs were
    written into it, so a pixel left unwritten would show."""
    rng = np.random.default_rng(nd)
    spatial = {1: (19,), 2: (3, 19), 3: (2, 3, 19)}[nd]
    x = rng.standard_normal((2, 24) + spatial).astype(dtype)[:, ::2]    # non-contiguous
    w = rng.standard_normal((12, 5) + (2,) * nd).astype(dtype)
    expected = reference.conv_transpose_nd(x.astype(np.float64), w.astype(np.float64),
                                           stride=2)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for algorithm in ("auto", "col2im"):
        junk = TRANSPOSE[nd](x, w, stride=2, algorithm=algorithm)
        junk[...] = np.nan
        del junk
        got = TRANSPOSE[nd](x, w, stride=2, algorithm=algorithm)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=algorithm)


def test_large_problem_with_batch_one_uses_every_thread_split():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 32, 6, 6), dtype=np.float32)
    w = rng.standard_normal((32, 24, 4, 4), dtype=np.float32)
    expected = reference.conv_transpose_nd(x, w, stride=2, padding=1)
    for threads in (1, 2, 4):
        with fastconv.num_threads(threads):
            got = fastconv.conv_transpose2d(x, w, stride=2, padding=1)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------
# bad input

def test_output_padding_must_be_smaller_than_stride_or_dilation():
    x, w = np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or "
                                         "dilation"):
        fastconv.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding"):
        fastconv.conv_transpose2d(x, w, output_padding=(0, 1))
    with pytest.raises(ValueError, match="output_padding must be >= 0"):
        fastconv.conv_transpose2d(x, w, output_padding=-1)
    # allowed when the dilation is larger (PyTorch's rule)
    assert fastconv.conv_transpose2d(x, w, output_padding=1, dilation=2).shape == (1, 3, 9, 9)


@pytest.mark.parametrize("weight_shape, bias, words", [
    ((3, 3, 3, 3), None, r"weight.shape\[0\] must be C_in = input.shape\[1\] = 2"),
    ((2, 3, 3), None, "weight must be 4-d"),
    ((2, 3, 3, 3), np.ones(2), r"bias must have shape \(C_out,\) = \(3,\)"),
    ((2, 0, 3, 3), None, "weight must have non-empty"),
], ids=["c_in-mismatch", "weight-ndim", "bias-shape", "empty-weight"])
def test_weight_and_bias_that_do_not_fit_are_rejected(weight_shape, bias, words):
    with pytest.raises(ValueError, match=words):
        fastconv.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones(weight_shape), bias)


def test_other_bad_calls_are_rejected():
    x, w = np.ones((1, 4, 4, 4)), np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match="groups=3 must divide C_in=4"):
        fastconv.conv_transpose2d(x, np.ones((4, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match="padding of conv_transpose2d"):
        fastconv.conv_transpose2d(x, w, padding="same")
    with pytest.raises(ValueError, match="padding .* is too large"):
        fastconv.conv_transpose2d(np.ones((1, 4, 1, 1)), np.ones((4, 3, 1, 1)), padding=1)
    with pytest.raises(ValueError, match="input must be 4-d"):
        fastconv.conv_transpose2d(np.ones((4, 4, 4)), w)
    with pytest.raises(ValueError, match="algorithm"):
        fastconv.conv_transpose2d(x, w, algorithm="fft")


def test_gradients_reject_shapes_that_do_not_match_the_forward_call():
    x, w = np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3))
    good = np.ones((1, 3, 9, 9))
    assert grad.conv_transpose2d_input(x.shape, w, good, stride=2).shape == x.shape
    with pytest.raises(ValueError, match=r"grad_output must have the shape .*\(1, 3, 10, 10\)"):
        grad.conv_transpose2d_input(x.shape, w, good, stride=2, output_padding=1)
    with pytest.raises(ValueError, match="grad_output"):
        grad.conv_transpose2d_weight(x, w.shape, np.ones((1, 3, 8, 9)), stride=2)
    with pytest.raises(ValueError, match="weight_shape must have 4 entries"):
        grad.conv_transpose2d_weight(x, (2, 3, 3), good, stride=2)
    with pytest.raises(ValueError, match="input_shape must have 4 entries"):
        grad.conv_transpose2d_input((1, 2, 4), w, good, stride=2)
