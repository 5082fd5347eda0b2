"""The packed algorithm's two ways of unfolding its input (row segments into each panel, or
the stride-phase grid with its extended rows) compute every output as the same sum in the
same order: bit-for-bit equal results, and both equal to the float64 reference."""
import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import conv_grad, convolution, dispatch

import reference

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}


def packed_with(monkeypatch, phase_grid, conv, *args, **kwargs):
    monkeypatch.setattr(convolution, "packed_phase_grid", lambda *a: phase_grid)
    convolution._kernel_plan.cache_clear()   # plans are remembered per problem
    try:
        return conv(*args, algorithm="packed", **kwargs)
    finally:
        monkeypatch.undo()
        convolution._kernel_plan.cache_clear()


CASES = [
    # nd, batch, c_in, c_out, size, kernel, stride, padding, dilation, groups
    (2, 3, 16, 32, (28, 28), 3, 2, 1, 1, 1),      # the small CNN's strided layer
    (2, 2, 5, 20, (7, 9), 3, 1, 1, 1, 1),         # rows much shorter than a panel
    (2, 2, 4, 17, (11, 13), (2, 4), (3, 2), (0, 2), (2, 1), 1),
    (2, 2, 6, 24, (9, 10), 3, 2, 2, 2, 3),        # groups, dilation, stride
    (2, 1, 3, 16, (20, 21), 7, 2, 3, 1, 1),       # a stem: 7x7 stride 2 on 3 channels
    (1, 4, 8, 16, 37, 5, 3, 2, 2, 1),
    (3, 2, 4, 12, (5, 6, 7), 3, (2, 1, 2), 1, 1, 1),
    (3, 2, 2, 16, (4, 9, 5), (2, 3, 1), 1, (1, 0, 0), (2, 1, 1), 2),
    # 8 or more input channels per group: the input gradient goes by stride classes
    (2, 2, 8, 12, (9, 10), 3, 2, 2, 2, 1),
    (2, 2, 16, 8, (11, 9), (4, 3), (3, 2), (1, 0), 1, 2),
    (3, 2, 8, 8, (5, 6, 7), 3, (2, 1, 2), 1, 1, 1),
    # long stride-2 rows: every vector block of the phase split and merge (37 and 40 pairs)
    (2, 2, 3, 8, (6, 75), 3, 2, 1, 1, 1),
    (2, 2, 8, 8, (5, 80), 3, 2, (1, 0), 1, 1),
]


def make_case(case, dtype):
    """(nd, input, weight, bias, keyword arguments) of a CASES row, seeded by the row."""
    nd, batch, c_in, c_out, size, kernel, stride, padding, dilation, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    size = (size,) * nd if isinstance(size, int) else size
    kernel = (kernel,) * nd if isinstance(kernel, int) else kernel
    x = rng.standard_normal((batch, c_in) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups) + kernel).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return nd, x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[4]}-k{c[5]}-s{c[6]}")
def test_phase_grid_equals_segments_bit_for_bit(monkeypatch, case, dtype):
    nd, x, w, b, kw = make_case(case, dtype)
    segments = packed_with(monkeypatch, False, CONV[nd], x, w, b, **kw)
    phase = packed_with(monkeypatch, True, CONV[nd], x, w, b, **kw)
    np.testing.assert_array_equal(phase, segments)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(phase, reference.conv_nd(x.astype(np.float64), w, b, **kw),
                               rtol=tol, atol=tol)


def test_phase_grid_is_chosen_for_batches_of_small_planes_only():
    small = convolution._problem_from_call((32, 16, 28, 28), (32, 16, 3, 3), stride=2,
                                           padding=1)
    assert dispatch.packed_phase_grid(small, 4, num_threads=2)
    # fewer (image, group) planes than threads: the segment path splits each plane instead
    assert not dispatch.packed_phase_grid(dataclasses.replace(small, batch=1), 4, num_threads=2)
    # nothing to unfold in a 1x1 convolution; a huge plane would need a huge copy
    pointwise = convolution._problem_from_call((8, 64, 28, 28), (64, 64, 1, 1))
    assert not dispatch.packed_phase_grid(pointwise, 4, num_threads=2)
    huge = convolution._problem_from_call((4, 64, 512, 512), (64, 64, 3, 3), padding=1)
    assert not dispatch.packed_phase_grid(huge, 4, num_threads=2)


# The gradients through the phase grid: the input gradient (col2im as one contiguous add per
# tap) and the weight gradient (dot products over blocks of images side by side) against the
# float64 reference, and against their segment-by-segment versions.

GRAD_INPUT = {1: fastconv.grad.conv1d_input, 2: fastconv.grad.conv2d_input,
              3: fastconv.grad.conv3d_input}
GRAD_WEIGHT = {1: fastconv.grad.conv1d_weight, 2: fastconv.grad.conv2d_weight,
               3: fastconv.grad.conv3d_weight}


def gradient_case(case, dtype):
    """make_case with an output gradient in place of the bias."""
    nd, x, w, _, kw = make_case(case, dtype)
    y_shape = reference.conv_nd(x[:1], w, None, **kw).shape[2:]
    rng = np.random.default_rng(hash(case) % 2**32 + 1)
    g = rng.standard_normal(x.shape[:1] + w.shape[:1] + y_shape).astype(dtype)
    return nd, x, w, g, kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[4]}-k{c[5]}-s{c[6]}")
def test_input_grad_through_phase_grid(monkeypatch, case, dtype):
    nd, x, w, g, kw = gradient_case(case, dtype)
    results = {}
    for phase in (False, True):
        monkeypatch.setattr(conv_grad, "input_grad_phase_grid", lambda *a: phase)
        results[phase] = GRAD_INPUT[nd](x.shape, w, g, **kw)
    monkeypatch.undo()
    tol = 2e-4 if dtype == np.float32 else 1e-10
    expected = reference.conv_input_grad(x.shape, w.astype(np.float64), g, **kw)
    for result in results.values():
        np.testing.assert_allclose(result, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("images_per_unit", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[4]}-k{c[5]}-s{c[6]}")
def test_weight_grad_through_phase_grid(monkeypatch, case, dtype, images_per_unit):
    nd, x, w, g, kw = gradient_case(case, dtype)
    monkeypatch.setattr(conv_grad, "weight_grad_phase_grid", lambda *a: images_per_unit)
    result = GRAD_WEIGHT[nd](x, w.shape, g, **kw)
    monkeypatch.undo()
    tol = 2e-4 if dtype == np.float32 else 1e-10
    expected = reference.conv_weight_grad(x.astype(np.float64), w.shape, g, **kw)
    np.testing.assert_allclose(result, expected, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("images_per_unit", [0, 1, 3])   # 0: not on the phase grid
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: f"{c[0]}d-{c[4]}-k{c[5]}-s{c[6]}")
def test_bias_gradient_taken_with_the_weight_gradient_is_conv_bias_exactly(
        monkeypatch, case, dtype, images_per_unit):
    """weight_grad_of(..., bias_out) (what fastconv.torch's backward pass calls) sums the
    bias gradient while it reads the output gradient: the same sums as grad.conv_bias, in the
    same order, and the weight gradient is unchanged by it."""
    nd, x, w, g, kw = gradient_case(case, dtype)
    monkeypatch.setattr(conv_grad, "weight_grad_phase_grid", lambda *a: images_per_unit)
    problem = convolution._conv_problem(nd, x.shape, w.shape, None, kw["stride"],
                                        kw["padding"], kw["dilation"], kw["groups"], "zeros")
    bias_out = np.full(w.shape[0], np.nan, dtype)
    with_bias = conv_grad.weight_grad_of(problem, x, g, w.shape, np.dtype(dtype), bias_out)
    without = conv_grad.weight_grad_of(problem, x, g, w.shape, np.dtype(dtype))
    np.testing.assert_array_equal(bias_out, fastconv.grad.conv_bias(g))
    np.testing.assert_array_equal(with_bias, without)


def test_phase_grid_gradients_keep_infinities_where_they_belong(monkeypatch):
    """The extended grid reads past each output row; an inf there must not leak into the
    gradients as NaN (0 * inf): the input gradient is taken only for finite weights, the
    weight gradient masks the extra positions bit by bit."""
    x = np.ones((3, 2, 5, 6))
    x[:, :, :, -1] = np.inf            # read by the last valid window and by extra positions
    g = np.ones((3, 3, 3, 4))
    for images_per_unit in (1, 2):     # 2: a short last block of one image
        monkeypatch.setattr(conv_grad, "weight_grad_phase_grid", lambda *a: images_per_unit)
        got = fastconv.grad.conv2d_weight(x, (3, 2, 3, 3), g)
        np.testing.assert_array_equal(got, reference.conv_weight_grad(x, (3, 2, 3, 3), g))
    monkeypatch.undo()
    w = np.ones((3, 2, 3, 3))
    w[0, 0, 0, 0] = np.inf
    assert not dispatch.input_grad_phase_grid(
        convolution._problem_from_call((32, 2, 5, 6), w.shape), 8, w)
