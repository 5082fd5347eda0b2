"""FFT convolution: what it computes, how accurately, and when auto runs it.

The FFT spreads its rounding over a whole plane, so its error is bounded by the norms of the
input planes and filters rather than by an output's own terms (README, "Accuracy"):

    |fft - exact| <= eps log2(P) sum over the group's c of ||x[n, c]||_2 ||w[o, c]||_2
                     + eps |b[o]|

with eps the dtype's machine epsilon and P the transform's points. Inputs and weights with
inf or NaN give exactly the direct sums' answer (the call is recomputed).
"""
import math
import warnings

import numpy as np
import pytest

import fastconv
from fastconv._plan import dispatch, tiling
from fastconv.planning import plan_conv, problem_from_call

import reference
from fuzzing import assert_direct_sums_when_not_finite, fft_bound

try:
    import torch
except ImportError:   # PyTorch is an optional oracle
    torch = None

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}


def random_call(rng, batch, c_in, c_out, size, kernel, groups, dtype):
    x = rng.standard_normal((batch, c_in) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups) + kernel).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, w, b


def assert_within_fft_bound(got, want, x, w, b, kwargs):
    """`got` (dtype's FFT result) is within the stated bound of the float64 `want`."""
    problem = problem_from_call(x.shape, w.shape, **kwargs)
    points = math.prod(tiling.fft_shape(problem.explicitly_padded))
    bound = fft_bound(x, w, b, kwargs, got.dtype, points)
    error = np.abs(np.asarray(got, np.float64) - want)
    assert np.all(error <= bound), \
        f"max error {error.max():.3g}, {np.max(error / bound):.3g} of the bound"


# (batch, C_in, C_out, size, kernel, kwargs): every axis count, strides, dilations, groups,
# asymmetric padding and padding wider than the plane, kernels larger than the input
GRID = [
    (2, 3, 4, (40,), (9,), dict(padding=4)),
    (1, 2, 2, (17,), (31,), dict(padding=15)),
    (2, 4, 6, (33,), (5,), dict(stride=3, padding=(7,), dilation=2, groups=2)),
    (1, 1, 1, (50,), (8,), dict(padding=((3, 9),))),
    (1, 1, 1, (24, 24), (7, 7), dict(padding=3)),
    (2, 3, 5, (13, 17), (5, 3), dict(padding="same")),
    (1, 4, 4, (9, 11), (6, 6), dict(padding=((8, 2), (0, 9)))),
    (1, 6, 6, (20, 20), (5, 5), dict(padding=2, groups=6)),      # depthwise
    (1, 4, 8, (20, 20), (5, 5), dict(padding=2, groups=4)),      # depthwise, multiplier 2
    (2, 2, 3, (15, 16), (4, 4), dict(stride=2, dilation=(1, 3), padding=1)),
    (1, 3, 2, (4, 5), (9, 9), dict(padding=8)),                  # kernel larger than the plane
    (1, 2, 2, (6, 7, 8), (3, 5, 5), dict(padding=2)),
    (1, 2, 4, (5, 9, 9), (5, 3, 3), dict(stride=(1, 2, 1), padding=(2, 1, 0), groups=2)),
]


@pytest.mark.parametrize("batch, c_in, c_out, size, kernel, kwargs", GRID)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forced_fft_is_within_its_bound_of_the_reference(batch, c_in, c_out, size, kernel,
                                                         kwargs, dtype):
    rng = np.random.default_rng(len(size) * 100 + c_out)
    x, w, b = random_call(rng, batch, c_in, c_out, size, kernel, kwargs.get("groups", 1), dtype)
    want = reference.conv_nd(x.astype(np.float64), w.astype(np.float64),
                             b.astype(np.float64), **kwargs)
    got = CONV[len(size)](x, w, b, algorithm="fft", **kwargs)
    assert got.dtype == dtype and got.shape == want.shape
    assert_within_fft_bound(got, want, x, w, b, kwargs)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_padding_modes_pad_first_then_run_the_fft(padding_mode):
    rng = np.random.default_rng(5)
    x, w, b = random_call(rng, 2, 3, 4, (12, 14), (5, 5), 1, np.float64)
    kwargs = dict(padding=2, padding_mode=padding_mode)
    want = reference.conv_nd(x, w, b, **kwargs)
    np.testing.assert_allclose(fastconv.conv2d(x, w, b, algorithm="fft", **kwargs), want,
                               rtol=1e-12, atol=1e-12)


def test_non_contiguous_operands_and_out():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 8, 30, 40))[::2, ::2, :, ::2]     # (2, 4, 30, 20), strided
    w = rng.standard_normal((5, 4, 7, 7)).transpose(0, 1, 3, 2)  # transposed taps
    out = np.full((2, 5, 30, 20), np.nan)
    got = fastconv.conv2d(x, w, padding=3, algorithm="fft", out=out)
    assert got is out
    np.testing.assert_allclose(got, reference.conv_nd(x, w, padding=3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels, size, kernel", [(1, 300, 31), (64, 30, 7), (256, 12, 5)])
def test_the_bound_holds_for_large_filters_channel_counts_and_uneven_planes(channels, size,
                                                                             kernel):
    """Half of each plane a thousand times larger: the error of the small half follows the
    large half's norm, as the bound says, not its own."""
    rng = np.random.default_rng(channels)
    x, w, b = random_call(rng, 1, channels, 8, (size, size), (kernel, kernel), 1, np.float32)
    x[..., : size // 2] *= 1000
    kwargs = dict(padding=kernel // 2)
    want = reference.conv_nd(x.astype(np.float64), w.astype(np.float64),
                             b.astype(np.float64), **kwargs)
    assert_within_fft_bound(fastconv.conv2d(x, w, b, algorithm="fft", **kwargs), want, x, w, b,
                            kwargs)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_agrees_with_pytorch_on_a_large_filter():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    w = rng.standard_normal((4, 3, 15, 15)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    want = torch.nn.functional.conv2d(*(torch.from_numpy(a).double() for a in (x, w, b)),
                                      padding=7).numpy()
    assert_within_fft_bound(fastconv.conv2d(x, w, b, padding=7, algorithm="fft"), want, x, w,
                            b, dict(padding=7))


@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_inf_and_nan_give_the_direct_sums_answer(where, value):
    """One inf in a plane's transform turns its whole spectrum into NaN, where the direct sum
    leaves the outputs that never read it finite. The result must be the direct sums'."""
    rng = np.random.default_rng(8)
    x, w, b = random_call(rng, 2, 3, 4, (40, 40), (9, 9), 1, np.float32)
    assert_direct_sums_when_not_finite(x, w, b, where, value, (1, 2, 5, 6), (3, 1, 4, 2),
                                       "fft", padding=4)


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_data_raise_no_numpy_warning(value):
    """The check that finds a non-finite result (then recomputed by the direct sums) may sum
    inf - inf (a bias of inf on one channel, -inf on another): the caller's data is not at
    fault, so no RuntimeWarning reaches them."""
    rng = np.random.default_rng(8)
    x, w, b = random_call(rng, 2, 3, 4, (40, 40), (9, 9), 1, np.float32)
    b[0], b[1] = np.inf, -np.inf
    x[0, 1, 5, 6] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastconv.conv2d(x, w, b, padding=4, algorithm="fft")


def test_result_does_not_depend_on_the_thread_count():
    rng = np.random.default_rng(9)
    x, w, b = random_call(rng, 2, 16, 24, (40, 36), (9, 9), 1, np.float32)
    with fastconv.num_threads(1):
        one = fastconv.conv2d(x, w, b, padding=4, algorithm="fft")
    with fastconv.num_threads(2):
        two = fastconv.conv2d(x, w, b, padding=4, algorithm="fft")
    np.testing.assert_array_equal(one, two)


def test_weights_changed_in_place_are_transformed_again():
    rng = np.random.default_rng(10)
    x, w, b = random_call(rng, 1, 2, 3, (30, 30), (11, 11), 1, np.float64)
    first = fastconv.conv2d(x, w, b, padding=5, algorithm="fft")
    np.testing.assert_allclose(first, reference.conv_nd(x, w, b, padding=5), atol=1e-11)
    w[2, 1, 3, 4] += 1.0           # same array, same address, new values
    second = fastconv.conv2d(x, w, b, padding=5, algorithm="fft")
    np.testing.assert_allclose(second, reference.conv_nd(x, w, b, padding=5), atol=1e-11)
    # the same weights with another padding: spectra of their own (the padding is rolled in)
    third = fastconv.conv2d(x, w, b, padding=2, algorithm="fft")
    np.testing.assert_allclose(third, reference.conv_nd(x, w, b, padding=2), atol=1e-11)


# --- when auto runs it ----------------------------------------------------------------------

def algorithm(x_shape, w_shape, **kwargs):
    return plan_conv(problem_from_call(x_shape, w_shape, **kwargs), "float32").algorithm


def test_auto_runs_the_fft_on_large_filters_only():
    assert algorithm((1, 1, 1024, 1024), (1, 1, 31, 31), padding=15) == "fft"
    assert algorithm((1, 1, 1024, 1024), (1, 1, 63, 63), padding=31) == "fft"
    assert algorithm((1, 1, 512, 512), (1, 1, 31, 31), padding=15) == "fft"
    assert algorithm((1, 1, 1024, 1024), (1, 1, 15, 15), padding=7) != "fft"
    assert algorithm((1, 1, 1024, 1024), (1, 1, 7, 7), padding=3) != "fft"
    assert algorithm((1, 1, 1024, 1024), (1, 1, 31, 31), padding=15, stride=2) != "fft"
    assert algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1) != "fft"
    # many channels: the weights' spectra (C_out x C_in planes) make the mix memory-bound
    assert algorithm((8, 64, 32, 32), (64, 64, 5, 5), padding=2) != "fft"


def test_the_rule_is_its_cost_estimate():
    problem = problem_from_call((1, 1, 1024, 1024), (1, 1, 31, 31), padding=15)
    assert dispatch.fft_work(problem) < dispatch.FFT_MARGIN * problem.multiply_adds
    plan = fastconv.choose_algorithm((1, 1, 1024, 1024), (1, 1, 31, 31), padding=15)
    assert plan.kernel == dispatch.Kernel.CONV_FFT and "scipy.fft" in plan.explain()


def test_exact_precision_keeps_auto_away_from_the_fft():
    with fastconv.precision("exact"):
        assert algorithm((1, 1, 1024, 1024), (1, 1, 31, 31), padding=15) != "fft"
        # forcing it still works
        problem = problem_from_call((1, 1, 64, 64), (1, 1, 31, 31), padding=15)
        assert plan_conv(problem, "float32", "fft").algorithm == "fft"
    assert algorithm((1, 1, 1024, 1024), (1, 1, 31, 31), padding=15) == "fft"


def test_auto_on_a_large_filter_is_the_fft_and_right():
    rng = np.random.default_rng(11)
    x, w, b = random_call(rng, 1, 1, 1, (256, 256), (31, 31), 1, np.float32)
    kwargs = dict(padding=15)
    assert fastconv.choose_algorithm(x, w, b, **kwargs).algorithm == "fft"
    want = reference.conv_nd(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                             **kwargs)
    assert_within_fft_bound(fastconv.conv2d(x, w, b, **kwargs), want, x, w, b, kwargs)


# --- buffers ---------------------------------------------------------------------------

def test_buffers_kept_between_calls_carry_nothing_over():
    """The zero-padded input is reused by the next call of a thread with the same shapes:
    calls of other shapes in between still give the right answer."""
    rng = np.random.default_rng(13)
    calls = [random_call(rng, 2, 3, 4, (30, 33), (9, 9), 1, np.float64),
             random_call(rng, 1, 2, 2, (12, 10), (7, 7), 1, np.float64),
             random_call(rng, 2, 3, 4, (30, 33), (9, 9), 1, np.float64)]
    for x, w, b in calls + calls[::-1]:
        np.testing.assert_allclose(fastconv.conv2d(x, w, b, padding=4, algorithm="fft"),
                                   reference.conv_nd(x, w, b, padding=4), atol=1e-11)
