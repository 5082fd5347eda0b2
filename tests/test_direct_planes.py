"""The direct kernel over whole planes (CONV_DIRECT_PLANES): one input channel per group.

It copies each input plane (a band of it) once into zero-padded stride phases and computes the
outputs as one flat run of taps (at stride 1 on wide rows: four output rows at a time from
the input rows they share). Every output sums the same products in the same order as the
row kernel (CONV_DIRECT_ROWS), so the two agree bit for bit, whatever the band split or the
thread count; both are checked against the float64 reference.
"""
import numpy as np
import pytest

import fastconv
from fastconv._plan import dispatch, tiling
from fastconv.planning import Kernel, plan_conv, problem_from_call

import reference

try:
    import torch
except ImportError:   # PyTorch is an optional oracle
    torch = None

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}

# (batch, channels, multiplier, size, kernel, kwargs): depthwise and 1-channel layers in 1, 2
# and 3 dimensions, with strides (2 takes the paired split), dilations, asymmetric padding,
# padding wider than the plane, kernels as large as the padded plane, planes narrower than a
# vector and wider than several
GRID = [
    (2, 3, 1, (7, 7), (3, 3), dict(padding=1)),
    (4, 40, 1, (7, 7), (3, 3), dict(padding=1)),                      # 8 planes an item
    (3, 13, 1, (9, 9), (3, 3), dict(stride=2, padding=1)),            # ... the last item short
    (1, 5, 1, (14, 14), (3, 3), dict(stride=2, padding=1)),
    (2, 4, 1, (15, 13), (5, 5), dict(stride=2, padding=2)),
    (1, 3, 1, (28, 28), (5, 5), dict(padding=2)),
    (1, 2, 1, (9, 40), (7, 7), dict(padding=3)),
    (1, 2, 2, (11, 12), (3, 3), dict(padding=1)),                     # multiplier 2
    (3, 1, 6, (28, 28), (5, 5), dict()),                              # 1-channel images
    (1, 2, 1, (10, 11), (3, 3), dict(stride=3, padding=(2, 0))),
    (1, 2, 1, (12, 9), (3, 2), dict(stride=(2, 3), dilation=(2, 1), padding=2)),
    (1, 2, 1, (6, 5), (3, 3), dict(padding=((4, 0), (0, 5)))),
    (1, 2, 1, (3, 2), (3, 3), dict(padding=4, dilation=2)),           # padding past the plane
    (2, 3, 1, (8, 8), (10, 10), dict(padding=1)),                     # kernel = padded plane
    (1, 2, 1, (5, 70), (1, 1), dict(stride=2)),
    (2, 3, 1, (40,), (9,), dict(padding=4)),
    (1, 2, 2, (33,), (4,), dict(stride=2, padding=(3,), dilation=2)),
    (2, 3, 1, (5, 6, 7), (3, 3, 3), dict(padding=1)),
    (1, 2, 1, (4, 9, 8), (3, 3, 3), dict(stride=2, padding=(2, 1, 1), dilation=(2, 1, 1))),
    (1, 2, 1, (1, 5, 5), (1, 3, 3), dict(padding=(2, 1, 1))),   # depths all in the padding
    # stride 1 on rows of two vectors or more: output rows computed four at a time from the
    # input rows they share (13 rows: a last group of one), dilated along W (taps dw apart in
    # a row) and along H (rows that are no longer consecutive: the flat loop)
    (1, 3, 1, (13, 37), (3, 4), dict(padding=(1, 2))),
    (2, 2, 1, (10, 50), (3, 3), dict(padding=(1, 4), dilation=(1, 2))),
    (1, 2, 1, (10, 50), (3, 3), dict(padding=2, dilation=(2, 1))),
    # 3x3 at stride 1: its own four-row block, every weight in a register (13 and 9 rows:
    # blocks of four, then the general loop's last rows; 70 columns: a last block overlapping
    # the one before it)
    (1, 3, 1, (13, 37), (3, 3), dict(padding=1)),
    (2, 2, 1, (9, 70), (3, 3), dict(padding=(1, 0))),
    # rows wider than one vector but narrower than two (float32 16-31 wide, float64 8-15):
    # one block a row whose second vector overlaps the first
    (1, 3, 1, (13, 21), (3, 3), dict(padding=1)),
    (2, 2, 1, (9, 12), (3, 3), dict(padding=1)),
    (1, 2, 1, (10, 29), (5, 5), dict(padding=2)),
    (1, 3, 1, (13, 19), (3, 4), dict(padding=(1, 2))),
    (6, 8, 1, (28, 28), (3, 3), dict(padding=1)),                     # planes 4 an item
    # 5x5 at stride 1: its own four-row block (weights broadcast as they are used); several
    # planes an item, each computed straight into its output rows; 13 rows and 50 columns:
    # a last row alone, a last block overlapping the one before it
    (4, 12, 1, (28, 28), (5, 5), dict(padding=2)),
    (1, 2, 1, (13, 50), (5, 5), dict(padding=(2, 1))),
    # 5 and 7 taps along W: their own unrolled loops (dilated along W: taps 2 apart)
    (1, 2, 1, (10, 50), (3, 5), dict(padding=(1, 4), dilation=(1, 2))),
    (2, 2, 1, (11, 40), (2, 7), dict(padding=(0, 3))),
    # ... written straight into output rows narrower than the rectangle's (3-d: at the depth
    # border only one depth tap reads the input, whose rows are shared again)
    (1, 2, 1, (2, 5, 40), (3, 3, 3), dict(padding=(2, 1, 1))),
]


def depthwise_call(rng, batch, channels, multiplier, size, kernel, dtype):
    x = rng.standard_normal((batch, channels) + size).astype(dtype)
    w = rng.standard_normal((channels * multiplier, 1) + kernel).astype(dtype)
    b = rng.standard_normal(channels * multiplier).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=str)
def test_planes_match_the_reference_and_the_row_kernel_bit_for_bit(case, dtype):
    batch, channels, multiplier, size, kernel, kwargs = case
    if channels == 40:
        problem = problem_from_call((batch, channels) + size, (channels, 1) + kernel,
                                    groups=channels, **kwargs)
        assert plan_conv(problem, dtype, "direct_planes").planes_per_item == 8
    rng = np.random.default_rng(len(size) * 100 + channels)
    x, w, b = depthwise_call(rng, batch, channels, multiplier, size, kernel, dtype)
    conv = CONV[len(size)]
    got = conv(x, w, b, groups=channels, algorithm="direct_planes", **kwargs)
    want = reference.conv_nd(x.astype(np.float64), w, b, groups=channels, **kwargs)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    rows = conv(x, w, b, groups=channels, algorithm="direct_rows", **kwargs)
    np.testing.assert_array_equal(got, rows)


def test_depth_taps_all_in_the_padding_give_the_bias():
    x = np.ones((1, 2, 1, 5, 5), np.float32)
    w = np.ones((2, 1, 1, 3, 3), np.float32)
    b = np.array([0.5, -2.0], np.float32)
    out = fastconv.conv3d(x, w, b, padding=(2, 1, 1), groups=2, algorithm="direct_planes")
    assert out.shape == (1, 2, 5, 5, 5)
    np.testing.assert_array_equal(out[:, :, :2], np.broadcast_to(b[:, None, None, None],
                                                                 (1, 2, 2, 5, 5)))
    assert np.all(out[:, :, 2] != out[:, :, 0])


def test_bands_and_threads_do_not_change_a_bit():
    """A plane larger than a band (here 1-channel 300x300, 7x7, bands of a few rows): every
    split gives the row kernel's answer exactly."""
    rng = np.random.default_rng(3)
    x, w, b = depthwise_call(rng, 1, 1, 2, (300, 300), (7, 7), np.float32)
    problem = problem_from_call(x, w, b, padding=3)
    assert 1 < tiling.direct_planes_band(problem, 4, 1) < 300
    want = fastconv.conv2d(x, w, b, padding=3, algorithm="direct_rows")
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            got = fastconv.conv2d(x, w, b, padding=3, algorithm="direct_planes")
        np.testing.assert_array_equal(got, want)


def test_non_contiguous_operands_and_an_out_array():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 12, 16, 18)).astype(np.float32)[:, ::2, ::2, 1:]
    w = rng.standard_normal((6, 1, 3, 6)).astype(np.float32)[:, :, :, ::2]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous)
    got = fastconv.conv2d(x, w, padding=1, groups=6, algorithm="direct_planes")
    want = reference.conv_nd(x.astype(np.float64), w, padding=1, groups=6)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    out = np.full(got.shape, np.nan, np.float32)
    assert fastconv.conv2d(x, w, padding=1, groups=6, algorithm="direct_planes",
                           out=out) is out
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes(mode):
    rng = np.random.default_rng(5)
    x, w, b = depthwise_call(rng, 2, 3, 1, (9, 10), (3, 3), np.float64)
    got = fastconv.conv2d(x, w, b, padding=1, groups=3, padding_mode=mode,
                          algorithm="direct_planes")
    want = reference.conv_nd(x, w, b, padding=1, groups=3, padding_mode=mode)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("shape, stride, kernel", [
    ((8, 96, 7, 7), 1, 3), ((4, 64, 14, 14), 2, 3), ((2, 40, 28, 28), 1, 5),
    ((2, 24, 56, 56), 2, 5)])
def test_mobilenet_layers_match_pytorch(shape, stride, kernel):
    rng = np.random.default_rng(6)
    x, w, b = depthwise_call(rng, *shape[:2], 1, shape[2:], (kernel, kernel), np.float32)
    kwargs = dict(stride=stride, padding=kernel // 2, groups=shape[1])
    got = fastconv.conv2d(x, w, b, **kwargs)
    want = torch.nn.functional.conv2d(*(torch.from_numpy(a).double() for a in (x, w, b)),
                                      **kwargs).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((8, 960, 7, 7), (960, 1, 3, 3), dict(padding=1, groups=960)),
    ((8, 576, 14, 14), (576, 1, 3, 3), dict(stride=2, padding=1, groups=576)),
    ((8, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32)),
    ((1, 240, 28, 28), (240, 1, 5, 5), dict(padding=2, groups=240)),
    ((64, 1, 28, 28), (6, 1, 5, 5), dict()),
    ((2, 16, 8, 30, 30), (16, 1, 3, 3, 3), dict(padding=1, groups=16)),
])
def test_auto_runs_planes_where_bands_fit_l1(x_shape, w_shape, kwargs):
    plan = fastconv.choose_algorithm(x_shape, w_shape, **kwargs)
    assert plan.kernel == Kernel.CONV_DIRECT_PLANES and plan.band_rows >= 1
    assert "whole planes" in plan.reason
    # several whole planes an item where they are small, one where banded or 3-d
    out_h = problem_from_call(x_shape, w_shape, **kwargs).out_size[-2]
    whole = plan.band_rows == out_h and len(x_shape) == 4 and w_shape[0] == x_shape[1]
    assert (plan.planes_per_item > 1) == whole, plan.explain()


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 1, 1024, 1024), (1, 1, 7, 7), dict(padding=3)),       # bands of 1-2 rows would fit
    ((1, 64, 100000), (64, 1, 9), dict(groups=64)),            # one row, longer than L1
    ((2, 8, 20, 20), (8, 2, 3, 3), dict(groups=4)),            # two input channels a group
])
def test_auto_keeps_the_row_kernel_elsewhere(x_shape, w_shape, kwargs):
    plan = fastconv.choose_algorithm(x_shape, w_shape, **kwargs)
    assert plan.kernel == Kernel.CONV_DIRECT_ROWS


def test_forcing_planes_needs_one_input_channel_per_group():
    x, w = np.ones((1, 4, 6, 6)), np.ones((4, 2, 3, 3))
    with pytest.raises(ValueError, match="algorithm='direct_planes' needs one input channel"):
        fastconv.conv2d(x, w, groups=2, algorithm="direct_planes")
    problem = problem_from_call(x, w, groups=2)
    assert not dispatch.SUPPORTS["direct_planes"](problem)
    assert plan_conv(problem, np.float32, "direct").kernel == Kernel.CONV_DIRECT_ROWS
