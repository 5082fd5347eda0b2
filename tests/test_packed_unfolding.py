"""The packed algorithm's two ways of unfolding its input (row segments into each panel, or
the stride-phase grid with its extended rows) compute every output as the same sum in the
same order: bit-for-bit equal results, and both equal to the float64 reference."""
import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import planning
from fastconv._ops import conv_grad
from fastconv._plan import dispatch, tiling

import reference

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}


def with_images_per_unit(monkeypatch, images_per_unit, fn, *args, **kwargs):
    """fn(...) with the weight gradient on the phase grid in work units of this many images
    (0: not on the phase grid), whatever the dispatcher would choose."""
    monkeypatch.setattr(tiling, "weight_grad_phase_images", lambda *a: images_per_unit)
    dispatch.forget_plans()   # plans are remembered per problem
    try:
        return fn(*args, **kwargs, algorithm="phase" if images_per_unit else "gemm")
    finally:
        monkeypatch.undo()
        dispatch.forget_plans()


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
def test_phase_grid_equals_segments_bit_for_bit(case, dtype):
    nd, x, w, b, kw = make_case(case, dtype)
    segments = CONV[nd](x, w, b, **kw, algorithm="packed_segments")
    phase = CONV[nd](x, w, b, **kw, algorithm="packed_phase")
    np.testing.assert_array_equal(phase, segments)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(phase, reference.conv_nd(x.astype(np.float64), w, b, **kw),
                               rtol=tol, atol=tol)


def test_phase_grid_is_chosen_for_batches_of_small_planes_only():
    small = planning.problem_from_call((32, 16, 28, 28), (32, 16, 3, 3), stride=2,
                                           padding=1)
    assert dispatch.packed_phase_grid(small, 4, num_threads=2)
    # fewer (image, group) planes than threads: the segment path splits each plane instead,
    # but for a strided stem, whose one plane's tiles the phase grid shares out
    assert not dispatch.packed_phase_grid(dataclasses.replace(small, batch=1), 4, num_threads=2)
    stem = planning.problem_from_call((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert dispatch.packed_phase_grid(stem, 4, num_threads=2)
    # nothing to unfold in a 1x1 convolution; a huge plane would need a huge copy
    pointwise = planning.problem_from_call((8, 64, 28, 28), (64, 64, 1, 1))
    assert not dispatch.packed_phase_grid(pointwise, 4, num_threads=2)
    huge = planning.problem_from_call((4, 64, 512, 512), (64, 64, 3, 3), padding=1)
    assert not dispatch.packed_phase_grid(huge, 4, num_threads=2)


@pytest.mark.parametrize("case, threads", [
    ((2, 1, 3, 16, (40, 41), 7, 2, 3, 1, 1), 2),                  # a stem, one image
    ((2, 1, 3, 16, (40, 41), 7, 2, 3, 1, 1), 3),
    ((2, 1, 4, 12, (60, 66), (3, 5), (2, 3), (1, 2), 1, 2), 3),   # two planes: two groups
    ((2, 3, 3, 10, (30, 30), 5, 2, 2, 1, 1), 4),                  # three images
    ((1, 1, 3, 16, 500, 7, 2, 3, 1, 1), 2),
    ((3, 1, 3, 8, (8, 20, 20), 3, 2, 1, 1, 1), 2),
], ids=lambda c: f"{c[0]}d-b{c[1]}-g{c[9]}" if isinstance(c, tuple) else f"t{c}")
def test_phase_grid_with_fewer_planes_than_threads_equals_segments(case, threads):
    """Each plane's tiles of positions shared out among the threads, its grid filled once:
    the segments' bits, and the reference."""
    nd, x, w, b, kw = make_case(case, np.float32)
    problem = planning.problem_from_call(x.shape, w.shape, **kw)
    assert problem.batch * problem.groups < threads
    with fastconv.num_threads(threads):
        # enough work for a team: the planes really are fewer than the threads
        assert planning.plan_conv(problem, np.float32, "packed_phase").threads == threads
        phase = CONV[nd](x, w, b, **kw, algorithm="packed_phase")
    np.testing.assert_array_equal(phase, CONV[nd](x, w, b, **kw, algorithm="packed_segments"))
    np.testing.assert_allclose(phase, reference.conv_nd(x.astype(np.float64), w, b, **kw),
                               rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("x_shape, w_shape, stride", [
    ((1, 5, 13, 13), (64, 5, 3, 3), 2),     # 49 positions: a tile and a one-column tile
    ((1, 7, 7, 7), (40, 7, 3, 3), 1),       # input channels in uneven ranges at 2 and 3
    ((1, 2, 9, 9), (48, 2, 3, 3), 1),       # fewer input channels than 3 threads: by tiles
], ids=str)
def test_shared_unfolding_split_by_input_channels_changes_no_bit(x_shape, w_shape, stride):
    """One image's plane of few tiles, its output channels in blocks: the plane is unfolded
    once into panels the blocks share, each thread unfolding a range of input channels of
    every tile. The thread count changes the ranges, never a bit of the result."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    problem = planning.problem_from_call(x_shape, w_shape, stride=stride, padding=1)
    _, mr, _ = tiling.packed_tile(problem, 4)
    results = []
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            plan = planning.plan_conv(problem, np.float32, "packed_segments")
            assert plan.channel_panels < -(-w_shape[0] // mr)    # blocks of channels: shared
            results.append(fastconv.conv2d(x, w, b, stride=stride, padding=1,
                                           algorithm="packed_segments"))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    np.testing.assert_allclose(results[0], reference.conv_nd(x.astype(np.float64), w, b,
                                                             stride=stride, padding=1),
                               rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("c_in, c_out, kernel", [(5, 37, 3), (64, 40, 3), (96, 21, 1)],
                         ids=str)
def test_a_lone_last_column_gives_the_bits_of_a_panels_column(c_in, c_out, kernel):
    """A 7x7 output plane is 49 positions: a 48-wide panel and a last panel of one column,
    which the micro-kernel computes with the rows as vector lanes (gemm_microkernel.h:
    fc_gemm_column_f32). Its outputs are the same sums in the same order as inside a wider
    panel: the plane computed alone equals the same outputs of a plane one column wider
    (56 positions, the last panel 8 columns), bit for bit; 37 output channels leave a last
    weight panel of 5 rows, 5 input channels a depth that is not a multiple of 8."""
    rng = np.random.default_rng(c_in * 100 + c_out)
    size = 7 + kernel - 1
    wide = rng.standard_normal((1, c_in, size, size + 1)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    alone = np.ascontiguousarray(wide[..., :size])
    for algorithm in ("packed_segments", "packed_phase"):
        got = fastconv.conv2d(alone, w, b, algorithm=algorithm)
        inside = fastconv.conv2d(wide, w, b, algorithm=algorithm)[..., :7]
        np.testing.assert_array_equal(got, inside)
    np.testing.assert_allclose(got, reference.conv_nd(alone.astype(np.float64), w, b),
                               rtol=2e-4, atol=2e-4)


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
def test_input_grad_through_phase_grid(case, dtype):
    nd, x, w, g, kw = gradient_case(case, dtype)
    results = {algorithm: GRAD_INPUT[nd](x.shape, w, g, **kw, algorithm=algorithm)
               for algorithm in ("col2im_packed", "phase_classes", "phase_scatter")}
    tol = 2e-4 if dtype == np.float32 else 1e-10
    expected = reference.conv_input_grad(x.shape, w.astype(np.float64), g, **kw)
    for result in results.values():
        np.testing.assert_allclose(result, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("images_per_unit", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[4]}-k{c[5]}-s{c[6]}")
def test_weight_grad_through_phase_grid(monkeypatch, case, dtype, images_per_unit):
    nd, x, w, g, kw = gradient_case(case, dtype)
    result = with_images_per_unit(monkeypatch, images_per_unit, GRAD_WEIGHT[nd], x, w.shape, g,
                                  **kw)
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
    problem = planning.conv_problem(nd, x.shape, w.shape, None, kw["stride"], kw["padding"],
                                    kw["dilation"], kw["groups"], "zeros")
    bias_out = np.full(w.shape[0], np.nan, dtype)
    with_bias = with_images_per_unit(monkeypatch, images_per_unit, conv_grad.weight_grad_of,
                                     problem, x, g, w.shape, np.dtype(dtype), bias_out)
    without = with_images_per_unit(monkeypatch, images_per_unit, conv_grad.weight_grad_of,
                                   problem, x, g, w.shape, np.dtype(dtype))
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
        got = with_images_per_unit(monkeypatch, images_per_unit, fastconv.grad.conv2d_weight,
                                   x, (3, 2, 3, 3), g)
        np.testing.assert_array_equal(got, reference.conv_weight_grad(x, (3, 2, 3, 3), g))
    w = np.ones((3, 2, 3, 3))
    w[0, 0, 0, 0] = np.inf
    problem = planning.problem_from_call((32, 2, 5, 6), w.shape)
    assert planning.plan_input_grad(problem, np.float64, "auto", np.ones(w.shape)).kernel \
        in dispatch.FINITE_WEIGHT_KERNELS   # finite weights: the phase grid is chosen
    assert planning.plan_input_grad(problem, np.float64, "auto", w).kernel \
        not in dispatch.FINITE_WEIGHT_KERNELS
    with pytest.raises(ValueError, match="finite weights"):
        fastconv.grad.conv2d_input((32, 2, 5, 6), w, np.ones((32, 3, 3, 4)),
                                   algorithm="phase_scatter")
