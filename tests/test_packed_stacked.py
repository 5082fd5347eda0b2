"""1x1 convolution, and its input gradient, over the batch's positions stacked end to end
(CONV_PACKED_STACKED, INPUT_GRAD_GEMM1X1_STACKED).

A panel of the micro-kernel's positions may hold the end of one image and the start of the
next (or dozens of 1-pixel images); every output is still one sum over the input channels in
the packed kernels' order, so the stacked and per-image (packed_segments) kernels agree bit
for bit, and both match the float64 reference.
"""
import numpy as np
import pytest

import fastconv
from fastconv import grad
from fastconv._plan import dispatch, tiling
from fastconv.planning import Kernel, plan_conv, plan_input_grad, problem_from_call

import reference

try:
    import torch
except ImportError:   # PyTorch is an optional oracle
    torch = None

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
INPUT_GRAD = {1: grad.conv1d_input, 2: grad.conv2d_input, 3: grad.conv3d_input}
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}

# (batch, C_in, C_out, size, groups): planes smaller and larger than a panel, 1-pixel images
# (a panel of many images), channel counts off the register tile, groups, 1/2/3-d
GRID = [
    (8, 24, 20, (7, 7), 1),
    (5, 3, 13, (1, 3), 1),
    (100, 6, 9, (1, 1), 1),
    (3, 16, 40, (14, 14), 2),
    (2, 7, 5, (61,), 1),
    (4, 8, 8, (2, 3, 5), 4),
    (9, 33, 17, (5, 5), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=str)
def test_stacked_matches_the_reference_and_the_per_image_kernel(case, dtype):
    batch, c_in, c_out, size, groups = case
    rng = np.random.default_rng(batch * 7 + c_in)
    x = rng.standard_normal((batch, c_in) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups) + (1,) * len(size)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    conv = CONV[len(size)]
    got = conv(x, w, b, groups=groups, algorithm="packed_stacked")
    want = reference.conv_nd(x.astype(np.float64), w, b, groups=groups)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_array_equal(got, conv(x, w, b, groups=groups,
                                            algorithm="packed_segments"))


def test_every_split_gives_the_same_bits():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 40, 7, 7)).astype(np.float32)
    w = rng.standard_normal((50, 40, 1, 1)).astype(np.float32)
    want = fastconv.conv2d(x, w, algorithm="packed_segments")
    for threads in (1, 2, 3, 5):
        with fastconv.num_threads(threads):
            np.testing.assert_array_equal(fastconv.conv2d(x, w, algorithm="packed_stacked"),
                                          want)


def test_non_contiguous_operands():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 12, 9, 8)).astype(np.float32)[:, ::2, 1:, ::-1]
    w = rng.standard_normal((10, 12, 1, 1)).astype(np.float32)[::2, ::2]
    got = fastconv.conv2d(x, w, algorithm="packed_stacked")
    want = reference.conv_nd(x.astype(np.float64), w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_a_mobilenet_layer_matches_pytorch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 96, 7, 7)).astype(np.float32)
    w = rng.standard_normal((40, 96, 1, 1)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    got = fastconv.conv2d(x, w, b)
    want = torch.nn.functional.conv2d(*(torch.from_numpy(a).double() for a in (x, w, b)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, stacked", [
    # positions used per image of the panels' (float32: 8 wide in the baseline build, 16 on
    # AVX2, 48 on AVX-512)
    ((8, 960, 7, 7), (160, 960, 1, 1), True),       # 49 of 56 / 64 / 96
    ((8, 384, 5, 5), (64, 384, 1, 1), True),        # 25 of 32 / 32 / 48
    ((8, 32, 28, 28), (192, 32, 1, 1), False),      # 784 of 784 / 784 / 816: nothing to gain
    ((1, 96, 7, 7), (160, 96, 1, 1), False),        # one image, shallow
    ((8, 64, 7, 7), (64, 64, 3, 3), False),         # not 1x1
    # at least 192 input channels: stacked whatever the planes (one image, full panels)
    ((1, 960, 7, 7), (160, 960, 1, 1), True),
    ((8, 256, 56, 56), (64, 256, 1, 1), True),
    ((8, 128, 56, 56), (64, 128, 1, 1), False),
])
def test_auto_stacks_small_planes_of_a_batch(x_shape, w_shape, stacked):
    plan = fastconv.choose_algorithm(x_shape, w_shape)
    assert (plan.kernel == Kernel.CONV_PACKED_STACKED) == stacked, plan.explain()
    if stacked:
        assert "stacked" in plan.reason


def test_auto_stacks_where_the_last_panel_would_be_a_twentieth_empty():
    """14x14 planes (196 positions): 4 of 200 empty on 8-wide panels, 12 of 208 on 16-wide,
    44 of 240 on 48-wide."""
    problem = problem_from_call((8, 160, 14, 14), (64, 160, 1, 1))
    nr = tiling.packed_tile(problem, 4)[2]
    empty = -196 % nr
    plan = plan_conv(problem, np.float32)
    assert (plan.kernel == Kernel.CONV_PACKED_STACKED) == (empty > 196 / 20), plan.explain()


def test_forcing_stacked_needs_a_pointwise_layer():
    x, w = np.ones((2, 4, 6, 6)), np.ones((4, 4, 1, 1))
    with pytest.raises(ValueError, match="algorithm='packed_stacked' needs a 1x1 kernel"):
        fastconv.conv2d(x, w, padding=1, algorithm="packed_stacked")
    with pytest.raises(ValueError, match="algorithm='packed_stacked' needs a 1x1 kernel"):
        fastconv.conv2d(x, w, stride=2, algorithm="packed_stacked")
    problem = problem_from_call(x, np.ones((4, 4, 3, 3)))
    assert not dispatch.SUPPORTS["packed_stacked"](problem)
    assert tiling.packed_stacks_images(problem_from_call((2, 4, 6, 8), w.shape), 48) is False
    assert tiling.packed_stacks_images(problem_from_call(x, w), 48) is True   # 36 of 48
    assert plan_conv(problem_from_call((2, 4, 7, 7), w.shape), np.float32,
                     "packed").kernel == Kernel.CONV_PACKED_STACKED


# The input gradient of a 1x1 layer is the 1x1 convolution of the output gradient by the
# transposed weights: INPUT_GRAD_GEMM1X1_STACKED runs it on the same stacked kernel, the
# weights transposed while they are packed.

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=str)
def test_stacked_input_grad_matches_the_reference(case, dtype):
    batch, c_in, c_out, size, groups = case
    rng = np.random.default_rng(batch * 5 + c_out)
    w = rng.standard_normal((c_out, c_in // groups) + (1,) * len(size)).astype(dtype)
    g = rng.standard_normal((batch, c_out) + size).astype(dtype)
    x_shape = (batch, c_in) + size
    got = INPUT_GRAD[len(size)](x_shape, w, g, groups=groups, algorithm="gemm1x1_stacked")
    want = reference.conv_input_grad(x_shape, w, g, groups=groups)
    tol = TOLERANCE[dtype]
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # the same sums, in the same order, as the forward kernel on the transposed weights
    w_t = np.ascontiguousarray(np.swapaxes(w.reshape((groups, c_out // groups) + w.shape[1:]),
                                           1, 2).reshape((c_in, c_out // groups) + w.shape[2:]))
    np.testing.assert_array_equal(got, CONV[len(size)](g, w_t, groups=groups,
                                                       algorithm="packed_stacked"))


def test_stacked_input_grad_is_the_same_for_every_thread_count_and_operand_layout():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 24, 1, 1)).astype(np.float32)
    g = rng.standard_normal((6, 40, 7, 7)).astype(np.float32)
    want = grad.conv2d_input((6, 24, 7, 7), w, g, algorithm="gemm1x1_stacked")
    for threads in (1, 2, 3, 5):
        with fastconv.num_threads(threads):
            np.testing.assert_array_equal(
                grad.conv2d_input((6, 24, 7, 7), w, g, algorithm="gemm1x1_stacked"), want)
    g_strided = np.zeros((6, 80, 7, 14), np.float32)[:, ::2, :, ::2]
    g_strided[...] = g
    np.testing.assert_array_equal(
        grad.conv2d_input((6, 24, 7, 7), np.asfortranarray(w), g_strided,
                          algorithm="gemm1x1_stacked"), want)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_a_resnet_input_grad_matches_pytorch():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((128, 64, 1, 1)).astype(np.float32)
    g = rng.standard_normal((4, 128, 7, 7)).astype(np.float32)
    got = grad.conv2d_input((4, 64, 7, 7), w, g)
    want = torch.nn.grad.conv2d_input((4, 64, 7, 7), torch.from_numpy(w).double(),
                                      torch.from_numpy(g).double())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, stacked", [
    ((8, 512, 7, 7), (2048, 512, 1, 1), True),      # 49 positions of 64 per image
    # the adjoint's depth is the layer's output channels: at least 192, stacked whatever
    # the planes
    ((1, 512, 7, 7), (2048, 512, 1, 1), True),
    ((8, 64, 56, 56), (256, 64, 1, 1), True),
    ((1, 512, 7, 7), (128, 512, 1, 1), False),      # one image, shallow adjoint
    ((8, 256, 56, 56), (64, 256, 1, 1), False),     # whole panels all but the last, shallow
    ((8, 64, 7, 7), (64, 64, 3, 3), False),         # not 1x1
])
def test_auto_stacks_the_input_grad_of_small_planes(x_shape, w_shape, stacked):
    problem = problem_from_call(x_shape, w_shape)
    plan = plan_input_grad(problem, np.float32)
    assert (plan.kernel == Kernel.INPUT_GRAD_GEMM1X1_STACKED) == stacked, plan.explain()
    if stacked:
        assert plan.algorithm == "gemm1x1" and "stacked" in plan.reason


def test_forcing_the_stacked_input_grad_needs_a_pointwise_layer():
    w, g = np.ones((4, 4, 1, 1)), np.ones((2, 4, 6, 6))
    with pytest.raises(ValueError, match="algorithm='gemm1x1_stacked' needs a 1x1 kernel"):
        grad.conv2d_input((2, 4, 12, 12), w, np.ones((2, 4, 6, 6)), stride=2,
                          algorithm="gemm1x1_stacked")
    with pytest.raises(ValueError, match="algorithm='gemm1x1_stacked' needs a 1x1 kernel"):
        grad.conv2d_input((2, 4, 6, 6), np.ones((4, 4, 3, 3)), g, padding=1,
                          algorithm="gemm1x1_stacked")
