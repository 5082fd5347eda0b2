"""fastconv.convolve / correlate take what scipy.signal.convolve / correlate take for real
input: any number of dimensions, 0-d arrays, empty arrays where SciPy gives a result, method=,
and SciPy's result dtypes. Checked against the plain reference (tests/reference.py: the sum
from the definition) and against SciPy."""
import numpy as np
import pytest
from scipy import signal

import fastconv
import reference

ND_SHAPES = [((4, 3, 5, 2), (2, 2, 3, 1)), ((3, 1, 4, 2, 3), (2, 1, 2, 2, 2)),
             ((2, 3, 2, 3), (3, 3, 3, 3)), ((1, 1, 1, 9), (1, 1, 1, 4))]


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shapes", ND_SHAPES, ids=[f"{a}-{b}" for a, b in ND_SHAPES])
def test_more_than_three_dimensions_match_the_reference_and_scipy(shapes, mode):
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    if mode == "valid" and not (all(m >= n for m, n in zip(a.shape, b.shape))
                                or all(m >= n for m, n in zip(b.shape, a.shape))):
        with pytest.raises(ValueError, match="valid"):
            fastconv.convolve(a, b, mode=mode)
        return
    for ours, ref, theirs in [(fastconv.convolve, reference.convolve, signal.convolve),
                              (fastconv.correlate, reference.correlate, signal.correlate)]:
        got = ours(a, b, mode=mode)
        np.testing.assert_allclose(got, ref(a, b, mode), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got, theirs(a, b, mode=mode, method="direct"), rtol=1e-10,
                                   atol=1e-10)


def test_a_non_contiguous_4d_input_matches_its_copy():
    rng = np.random.default_rng(12)
    a = rng.standard_normal((6, 5, 4, 8))[::2, :, ::-1, 1::2]
    b = rng.standard_normal((2, 3, 2, 2)).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(fastconv.correlate(a, b), reference.correlate(a, b),
                               rtol=1e-10, atol=1e-10)


def test_zero_dimensional_inputs_multiply_as_in_scipy():
    assert fastconv.convolve(np.array(2.0), np.array(3.0)) == 6.0
    got = fastconv.correlate(np.array(2), np.array(3))
    assert got == 6 and got.dtype == signal.correlate(np.array(2), np.array(3)).dtype


def test_empty_inputs_give_scipys_answers():
    got = fastconv.convolve(np.zeros((0, 3)), np.ones((2, 2)), mode="same")
    assert got.shape == (0, 3) and got.shape == signal.convolve(np.zeros((0, 3)), np.ones((2, 2)),
                                                                mode="same").shape
    for a, b, mode in [(np.zeros(0), np.ones(3), "full"), (np.ones(3), np.zeros(0), "same"),
                       (np.zeros(0), np.ones(3), "valid")]:
        with pytest.raises(ValueError, match="non-empty"):
            fastconv.convolve(a, b, mode=mode)
        with pytest.raises(ValueError):
            signal.convolve(a, b, mode=mode)


@pytest.mark.parametrize("dtypes", [(np.int16, np.int16), (np.uint8, np.uint8),
                                    (np.int32, np.float32), (np.float32, np.float32),
                                    (np.int64, np.float64), (np.float32, np.float64)])
@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
def test_result_dtypes_and_integer_results_are_scipys(dtypes, method):
    rng = np.random.default_rng(13)
    a = (rng.standard_normal((7, 6)) * 20).astype(dtypes[0])
    b = (rng.standard_normal((3, 2)) * 20).astype(dtypes[1])
    for ours, theirs in [(fastconv.convolve, signal.convolve),
                         (fastconv.correlate, signal.correlate)]:
        got = ours(a, b, method=method)
        want = theirs(a, b, method=method)
        assert got.dtype == want.dtype
        if want.dtype.kind in "iu":   # uint8 wraps: 100 * 100 is 16 in both
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_integer_overflow_wraps_as_scipys_direct_method():
    a = np.arange(4, dtype=np.uint8) * 100
    np.testing.assert_array_equal(fastconv.convolve(a, a[:3]),
                                  signal.convolve(a, a[:3], method="direct"))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_both_methods_compute_the_same_convolution(method):
    rng = np.random.default_rng(14)
    a, b = rng.standard_normal((40, 30)), rng.standard_normal((9, 5))
    for mode in ["full", "same", "valid"]:
        np.testing.assert_allclose(fastconv.convolve(a, b, mode, method=method),
                                   reference.convolve(a, b, mode), rtol=1e-9, atol=1e-9)


def test_auto_takes_the_fft_only_for_a_large_kernel():
    from fastconv._ops.signal import _uses_fft
    small, large = np.ones(3), np.ones(5000)
    signal_1d = np.ones(100000)
    assert not _uses_fft(signal_1d, small, "full", "auto")
    assert _uses_fft(signal_1d, large, "full", "auto")
    assert not _uses_fft(signal_1d, large, "full", "direct")
    assert _uses_fft(signal_1d, small, "full", "fft")


def test_complex_input_is_refused_by_name():
    with pytest.raises(TypeError, match="in2"):
        fastconv.correlate(np.ones(3), np.ones(2, complex))
