"""Channels-last memory format (PyTorch's ``channels_last``): an (N, C, H, W) array whose memory
is that of the (N, H, W, C) array ``x_nhwc.transpose(0, 3, 1, 2)``. Convolutions read it in
place (the channels-last kernels) and every 2-d operator returns its output in the same
memory format, with the values of the channels-first call; fastconv.torch keeps the format of
its input through the forward and backward passes."""
import numpy as np
import pytest

import fastconv
import fastconv.grad
import reference
from fastconv.planning import as_channels_last, is_channels_last

rng = np.random.default_rng(31)


def channels_last(shape, dtype=np.float32):
    """A random (N, C, H, W) array with channels-last memory."""
    n, c, h, w = shape
    return rng.standard_normal((n, h, w, c)).astype(dtype).transpose(0, 3, 1, 2)


CONV_CASES = [  # x shape, weight shape, kwargs
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(padding=1)),
    ((2, 8, 10, 7), (6, 8, 3, 3), dict(stride=2, padding=1)),
    ((2, 5, 6, 6), (7, 5, 1, 1), {}),                                # 1x1: no patch copy
    ((2, 5, 8, 8), (7, 5, 1, 1), dict(stride=2)),
    ((1, 6, 9, 9), (6, 6, 3, 3), dict(padding=2, dilation=2)),
    ((2, 4, 7, 9), (5, 4, 2, 4), dict(padding=((1, 0), (2, 1)))),
    ((1, 3, 12, 12), (8, 3, 7, 7), dict(stride=2, padding=3)),       # a stem
    ((1, 4, 6, 6), (3, 4, 3, 3), dict(padding="same")),
    ((1, 16, 7, 7), (16, 1, 3, 3), dict(padding=1, groups=16)),      # depthwise
    ((2, 12, 9, 9), (12, 1, 5, 5), dict(stride=2, padding=2, groups=12)),
    ((1, 6, 9, 9), (6, 1, 3, 3), dict(padding=2, dilation=2, groups=6)),
    ((2, 4, 8, 8), (6, 2, 3, 3), dict(padding=1, groups=2)),         # channels-first kernels
    ((1, 4, 8, 8), (4, 4, 3, 3), dict(padding=1, padding_mode="reflect")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONV_CASES,
                         ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_of_a_channels_last_input_is_channels_last_and_correct(x_shape, w_shape,
                                                                        kwargs, dtype):
    x = channels_last(x_shape, dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    got = fastconv.conv2d(x, w, b, **kwargs)
    assert is_channels_last(got) and got.dtype == dtype
    want = reference.conv_nd(x.astype(np.float64), w, b, **kwargs)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # the same values as the channels-first call, and as any forced (channels-first) algorithm
    np.testing.assert_allclose(got, fastconv.conv2d(np.ascontiguousarray(x), w, b, **kwargs),
                               rtol=tol, atol=tol)
    forced = fastconv.conv2d(x, w, b, **kwargs, algorithm="im2col")
    assert is_channels_last(forced)
    np.testing.assert_allclose(forced, got, rtol=tol, atol=tol)


def test_the_plan_says_which_channels_last_kernel_runs():
    x = channels_last((2, 16, 8, 8))
    plan = fastconv.choose_algorithm(x, np.ones((32, 16, 3, 3), np.float32), padding=1)
    assert plan.algorithm == "channels_last_gemm" and "channels-last" in plan.explain()
    plan = fastconv.choose_algorithm(x, np.ones((16, 1, 3, 3), np.float32), groups=16)
    assert plan.algorithm == "channels_last_depthwise"
    # grouped but not depthwise, or a channels-first input: the usual plan
    assert fastconv.choose_algorithm(x, np.ones((16, 8, 3, 3), np.float32), groups=2
                                     ).algorithm in fastconv.planning.ALGORITHMS
    assert fastconv.choose_algorithm(np.ascontiguousarray(x), np.ones((32, 16, 3, 3),
                                                                      np.float32)
                                     ).algorithm in fastconv.planning.ALGORITHMS


def test_the_gemm_kernel_reads_the_input_in_place(monkeypatch):
    from fastconv._kernels import conv_channels_last
    seen = []
    real = conv_channels_last.conv_gemm_nhwc

    def spy(x, *args):
        seen.append(np.asarray(x).__array_interface__["data"][0])
        return real(x, *args)
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", spy)
    x = channels_last((2, 8, 6, 6))
    fastconv.conv2d(x, np.ones((4, 8, 1, 1), np.float32))
    assert seen == [x.__array_interface__["data"][0]]


OPERATOR_CASES = [  # name, call on a 4-d array
    ("max_pool2d", lambda x: fastconv.max_pool2d(x, 3, stride=2, padding=1,
                                                 return_indices=True)),
    ("avg_pool2d", lambda x: fastconv.avg_pool2d(x, 2, ceil_mode=True)),
    ("adaptive_avg_pool2d", lambda x: fastconv.adaptive_avg_pool2d(x, (3, 2))),
    ("adaptive_max_pool2d", lambda x: fastconv.adaptive_max_pool2d(x, 3, return_indices=True)),
    ("interpolate", lambda x: fastconv.interpolate(x, scale_factor=2, mode="bilinear",
                                                   align_corners=False)),
    ("conv_transpose2d", lambda x: fastconv.conv_transpose2d(
        x, np.ones((x.shape[1], 3, 3, 3), x.dtype), stride=2, padding=1)),
    ("conv2d_input", lambda g: fastconv.grad.conv2d_input(
        (g.shape[0], 3) + g.shape[2:], np.ones((g.shape[1], 3, 3, 3), g.dtype), g,
        padding=1)),
    ("max_pool2d_backward", lambda g: fastconv.grad.max_pool2d(
        g, np.zeros(g.shape, np.int64), g.shape[:2] + (g.shape[2] * 2, g.shape[3] * 2))),
    ("avg_pool2d_backward", lambda g: fastconv.grad.avg_pool2d(
        g, g.shape[:2] + (g.shape[2] * 2, g.shape[3] * 2), 2)),
    ("interpolate_backward", lambda g: fastconv.grad.interpolate(
        g, g.shape[:2] + (g.shape[2] // 2, g.shape[3] // 2), scale_factor=2, mode="nearest")),
]


@pytest.mark.parametrize("name, call", OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_every_2d_operator_keeps_the_channels_last_format(name, call):
    x = channels_last((2, 5, 8, 6))
    got = call(x)
    want = call(np.ascontiguousarray(x))
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert is_channels_last(g), name
        assert not is_channels_last(w)
        np.testing.assert_array_equal(g, w)


def test_max_unpool2d_keeps_the_format_of_its_input():
    x = channels_last((2, 5, 8, 6))
    values, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    got = fastconv.max_unpool2d(values, indices, 2)
    assert is_channels_last(got)
    np.testing.assert_array_equal(got, fastconv.max_unpool2d(np.ascontiguousarray(values),
                                                             np.ascontiguousarray(indices), 2))


def test_as_channels_last_copies_only_when_needed():
    x = channels_last((1, 3, 4, 5))
    assert as_channels_last(x) is x
    y = np.ascontiguousarray(x)
    z = as_channels_last(y)
    assert is_channels_last(z) and not np.shares_memory(y, z)
    np.testing.assert_array_equal(z, y)
    # one channel: both layouts at once, so the array counts as channels-first
    assert not is_channels_last(np.zeros((2, 1, 4, 4)).transpose(0, 1, 2, 3))


torch = pytest.importorskip("torch")


def test_fastconv_torch_keeps_channels_last_through_a_layer_stack_and_its_gradients():
    import torch.nn.functional as F
    from fastconv import torch as fnn
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 12).to(memory_format=torch.channels_last).requires_grad_()
    w1 = torch.randn(16, 8, 3, 3, requires_grad=True)
    w2 = torch.randn(16, 1, 3, 3, requires_grad=True)
    w3 = torch.randn(8, 16, 1, 1, requires_grad=True)

    def net(conv2d, max_pool2d, interpolate, x):
        y = conv2d(x, w1, padding=1)
        y = conv2d(torch.relu(y), w2, padding=1, groups=16)
        y = max_pool2d(y, 2)
        y = conv2d(y, w3)
        return interpolate(y, scale_factor=2, mode="nearest")

    out = net(fnn.conv2d, fnn.max_pool2d, fnn.interpolate, x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    want = net(F.conv2d, F.max_pool2d, F.interpolate, x)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    g = torch.randn(want.shape).to(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out, (x, w1, w2, w3), g)
    want_grads = torch.autograd.grad(want, (x, w1, w2, w3), g)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_fastconv_torch_reads_a_channels_last_tensor_in_place(monkeypatch):
    from fastconv import torch as fnn
    from fastconv._kernels import conv_channels_last
    seen = []
    real = conv_channels_last.conv_gemm_nhwc

    def spy(x, w, b, out, *args):
        seen.append((np.asarray(x).__array_interface__["data"][0],
                     np.asarray(out).__array_interface__["data"][0]))
        return real(x, w, b, out, *args)
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", spy)
    x = torch.randn(2, 8, 6, 6).to(memory_format=torch.channels_last)
    y = fnn.conv2d(x, torch.randn(4, 8, 3, 3), padding=1)
    assert seen == [(x.data_ptr(), y.data_ptr())]     # no copy in, none out
    assert y.is_contiguous(memory_format=torch.channels_last)
