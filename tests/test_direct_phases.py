"""The input gradient by stride phases (INPUT_GRAD_DIRECT_PHASES): one input and one output
channel per group (depthwise layers, 1-channel images).

Each stride phase of an input plane is a stride-1 correlation of the zero-padded output
gradient with the taps that reach it; the phases are interleaved into the rows. Every input
position sums its taps in one order whatever the band split or the thread count, so those
never change a bit; the results are checked against the float64 reference and PyTorch.
"""
import numpy as np
import pytest

import fastconv
from fastconv import grad
from fastconv._plan import tiling
from fastconv.planning import Kernel, plan_input_grad, problem_from_call

import reference

try:
    import torch
except ImportError:   # PyTorch is an optional oracle
    torch = None

INPUT_GRAD = {1: grad.conv1d_input, 2: grad.conv2d_input, 3: grad.conv3d_input}
TOLERANCE = {np.float32: 3e-5, np.float64: 1e-12}

# (batch, channels, size, kernel, kwargs of the forward call, groups = channels): strides 2
# (the paired interleave) and 3 (the general one), kernels narrower than the stride (phases no
# tap reaches), dilations, asymmetric and wide padding, odd widths, planes narrower than a
# vector, 1-channel images, 1-d and 3-d
GRID = [
    (2, 3, (9, 10), (3, 3), dict(stride=2, padding=1)),
    (3, 5, (14, 14), (3, 3), dict(stride=2, padding=1)),
    (1, 4, (15, 13), (5, 5), dict(stride=2, padding=2)),
    (2, 3, (28, 27), (3, 3), dict(stride=2, padding=1)),
    (1, 2, (11, 10), (2, 2), dict(stride=3)),
    (1, 2, (12, 9), (3, 2), dict(stride=(2, 3), dilation=(2, 1), padding=2)),
    (1, 2, (10, 11), (3, 3), dict(stride=3, padding=((2, 0), (0, 1)))),
    (1, 2, (3, 2), (3, 3), dict(stride=2, padding=4, dilation=2)),     # padding past the plane
    (2, 1, (31, 33), (7, 7), dict(stride=2, padding=3)),               # 1-channel images
    (1, 2, (5, 70), (1, 1), dict(stride=2)),
    (1, 3, (1, 9), (1, 3), dict(stride=2, padding=(0, 1))),
    (2, 3, (40,), (9,), dict(stride=2, padding=4)),
    (1, 2, (33,), (4,), dict(stride=3, padding=3, dilation=2)),
    (2, 3, (5, 6, 7), (3, 3, 3), dict(stride=2, padding=1)),
    (1, 2, (4, 9, 8), (3, 3, 3), dict(stride=(2, 1, 2), padding=(2, 1, 1),
                                      dilation=(2, 1, 1))),
    (1, 2, (7, 5, 5), (2, 3, 3), dict(stride=3, padding=(0, 1, 1))),   # depths no tap reaches
    (2, 4, (9, 10), (3, 3), dict(padding=1)),                          # stride 1: one phase
]


def depthwise_call(rng, batch, channels, size, kernel, kwargs, dtype):
    nd = len(size)
    w = rng.standard_normal((channels, 1) + kernel).astype(dtype)
    kw = dict(kwargs, groups=channels)
    out_shape = reference.conv_nd(np.zeros((1, channels) + size), w.astype(np.float64),
                                  **kw).shape[2:]
    g = rng.standard_normal((batch, channels) + out_shape).astype(dtype)
    return nd, (batch, channels) + size, w, g, kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", range(len(GRID)))
def test_phases_match_the_reference(case, dtype):
    rng = np.random.default_rng(case)
    nd, x_shape, w, g, kw = depthwise_call(rng, *GRID[case], dtype)
    got = INPUT_GRAD[nd](x_shape, w, g, algorithm="direct_phases", **kw)
    want = reference.conv_input_grad(x_shape, w.astype(np.float64), g, **kw)
    tol = TOLERANCE[dtype]
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    rows = INPUT_GRAD[nd](x_shape, w, g, algorithm="direct_rows", **kw)
    np.testing.assert_allclose(got, rows, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("case", range(len(GRID)))
def test_streamed_out_rows_are_the_same_bits(case):
    """dx assembled band by band and streamed out past the caches (a large or cold dx,
    memory.streams_output) holds what the straight stores give, on every grid case."""
    from fastconv._kernels import conv_direct
    from fastconv._ops.conv import as_5d
    rng = np.random.default_rng(case)
    nd, x_shape, w, g, kw = depthwise_call(rng, *GRID[case], np.float32)
    problem = problem_from_call(x_shape, w.shape, **kw)
    plan = plan_input_grad(problem, np.float32, "direct_phases")
    got = {}
    for stream in (False, True):
        dx = np.full(x_shape, np.nan, np.float32)
        conv_direct.input_grad(int(plan.kernel), as_5d(g, nd), as_5d(w, nd), as_5d(dx, nd),
                               *plan.geometry, problem.groups, plan.band_rows, 2, stream)
        got[stream] = dx
    np.testing.assert_array_equal(got[True], got[False])
    np.testing.assert_array_equal(got[False], INPUT_GRAD[nd](x_shape, w, g,
                                                             algorithm="direct_phases", **kw))


def test_bands_threads_and_streaming_do_not_change_a_bit():
    """A 1-channel 301x300 image at stride 2 in bands of a few rows: every band split and
    thread count gives the same bits, written straight or streamed out from a band buffer
    (the kernel at its entry point, bands down to one row, which it rounds up to the
    stride)."""
    from fastconv._kernels import conv_direct
    rng = np.random.default_rng(3)
    nd, x_shape, w, g, kw = depthwise_call(rng, 1, 1, (301, 300), (7, 7),
                                           dict(stride=2, padding=3), np.float32)
    problem = problem_from_call(x_shape, w.shape, **kw)
    assert 2 <= tiling.direct_phases_band(problem, 4, 2) < 301
    kernel = int(Kernel.INPUT_GRAD_DIRECT_PHASES)
    want = None
    for band in (1, 2, 5, 64, 301, 10**6):
        for threads, stream in ((1, False), (2, True), (3, False), (3, True)):
            dx = np.full((1, 1, 1) + x_shape[2:], np.nan, np.float32)
            conv_direct.input_grad(kernel, g[:, :, None], w[:, :, None], dx, (1, 2, 2),
                                   (0, 3, 3), (1, 1, 1), 1, band, threads, stream)
            if want is None:
                want = dx
            np.testing.assert_array_equal(dx, want)
    expected = reference.conv_input_grad(x_shape, w.astype(np.float64), g, **kw)
    np.testing.assert_allclose(want[:, :, 0], expected, rtol=3e-5,
                               atol=3e-5 * np.abs(expected).max())


def test_non_contiguous_operands():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 1, 3, 6)).astype(np.float32)[:, :, :, ::2]
    g = rng.standard_normal((2, 12, 9, 10)).astype(np.float32)[:, ::2, :, 1:]
    x_shape = (2, 6, 17, 18)
    kw = dict(stride=2, padding=1, groups=6)
    assert not (w.flags.c_contiguous or g.flags.c_contiguous)
    got = grad.conv2d_input(x_shape, w, g, algorithm="direct_phases", **kw)
    want = reference.conv_input_grad(x_shape, w.astype(np.float64), g, **kw)
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5 * np.abs(want).max())


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_fold_the_gradient(mode):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 1, 3, 3))
    x_shape = (2, 3, 9, 10)
    kw = dict(stride=2, padding=1, groups=3, padding_mode=mode)
    g = rng.standard_normal(reference.conv_nd(np.zeros(x_shape), w, **kw).shape)
    got = grad.conv2d_input(x_shape, w, g, algorithm="direct_phases", **kw)
    np.testing.assert_allclose(got, reference.conv_input_grad(x_shape, w, g, **kw),
                               rtol=1e-12, atol=1e-12)


def test_non_finite_weights_take_the_row_kernel():
    """The phases multiply the zeros around the output gradient by every weight: with an inf
    weight the plan falls back to the row kernel, and forcing the phases is refused."""
    w = np.ones((3, 1, 3, 3))
    w[1, 0, 0, 0] = np.inf
    x_shape = (2, 3, 9, 8)
    kw = dict(stride=2, padding=1, groups=3)
    g = np.ones(reference.conv_nd(np.zeros(x_shape), np.ones(w.shape), **kw).shape)
    problem = problem_from_call(x_shape, w.shape, **kw)
    assert plan_input_grad(problem, np.float64, "auto", w).kernel == \
        Kernel.INPUT_GRAD_DIRECT_ROWS
    with pytest.raises(ValueError, match="finite weights"):
        grad.conv2d_input(x_shape, w, g, algorithm="direct_phases", **kw)
    got = grad.conv2d_input(x_shape, w, g, **kw)
    np.testing.assert_array_equal(got, reference.conv_input_grad(x_shape, w, g, **kw))
    assert np.isinf(got[:, 1]).any() and not np.isnan(got).any()


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((8, 144, 56, 56), (144, 1, 3, 3), dict(stride=2, padding=1, groups=144)),
    ((8, 240, 28, 28), (240, 1, 5, 5), dict(stride=2, padding=2, groups=240)),
    ((2, 32, 16, 32, 32), (32, 1, 3, 3, 3), dict(stride=2, padding=1, groups=32)),
    ((4, 64, 1000), (64, 1, 5), dict(stride=2, padding=2, groups=64)),
    ((1, 1, 512, 512), (1, 1, 7, 7), dict(stride=2, padding=3)),
])
def test_auto_runs_the_phases_for_strided_one_to_one_layers(x_shape, w_shape, kwargs):
    problem = problem_from_call(x_shape, w_shape, **kwargs)
    plan = plan_input_grad(problem, np.float32)
    assert plan.kernel == Kernel.INPUT_GRAD_DIRECT_PHASES and plan.algorithm == "direct"
    assert "stride phases" in plan.explain()


def test_auto_keeps_subpixel_at_stride_one():
    problem = problem_from_call((8, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144)
    assert plan_input_grad(problem, np.float32).kernel == Kernel.INPUT_GRAD_SUBPIXEL


def test_the_depthwise_transposed_convolution_upsamples_by_phases():
    """A depthwise transposed convolution is this input gradient."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
    w = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    got = fastconv.conv_transpose2d(x, w, stride=2, padding=1, groups=4)
    want = reference.conv_input_grad((2, 4, 14, 18), w.astype(np.float64), x, stride=2,
                                     padding=1, groups=4)
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5 * np.abs(want).max())


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("shape, kernel", [((8, 96, 112, 112), 3), ((4, 144, 56, 56), 3),
                                           ((4, 240, 28, 28), 5), ((2, 576, 14, 14), 3)])
def test_mobilenet_strided_layers_match_pytorch(shape, kernel):
    rng = np.random.default_rng(6)
    channels = shape[1]
    w = rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
    kw = dict(stride=2, padding=kernel // 2, groups=channels)
    out = fastconv.planning.output_shape(shape, w.shape, **kw)
    g = rng.standard_normal(out).astype(np.float32)
    got = grad.conv2d_input(shape, w, g, **kw)
    want = torch.nn.grad.conv2d_input(shape, torch.from_numpy(w), torch.from_numpy(g),
                                      **kw).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
