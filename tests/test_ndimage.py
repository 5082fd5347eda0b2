"""fastconv.ndimage gives scipy.ndimage's results: every border mode, odd and even kernels,
origins, integer and float dtypes, output=, axes=, non-contiguous inputs. Each filter is
checked against a plain float64 reference written here (np.pad for the border, then a sum of
shifted slices) and against SciPy."""
import numpy as np
import pytest
from scipy import ndimage as scipy_ndimage

import fastconv
from fastconv import ndimage

MODES = ["reflect", "mirror", "nearest", "wrap", "constant",
         "grid-mirror", "grid-wrap", "grid-constant"]
# scipy.ndimage's modes as numpy.pad's (an independent description of the same extension)
NUMPY_PAD = {"reflect": "symmetric", "grid-mirror": "symmetric", "mirror": "reflect",
             "nearest": "edge", "wrap": "wrap", "grid-wrap": "wrap",
             "constant": "constant", "grid-constant": "constant"}


def reference_correlate(x, w, mode, cval=0.0, origin=0):
    """out[i] = sum_k w[k] * xpad[i + k], xpad: x extended by k // 2 + origin before and the
    rest after, each axis as numpy.pad extends it."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    origins = (origin,) * x.ndim if np.isscalar(origin) else origin
    before = [k // 2 + o for k, o in zip(w.shape, origins)]
    padded = x
    for axis, (b, k) in enumerate(zip(before, w.shape)):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (b, k - 1 - b)
        pad_mode = NUMPY_PAD[mode]
        if pad_mode == "reflect" and x.shape[axis] == 1:
            pad_mode = "edge"       # the mirror of one sample repeats it
        extra = dict(constant_values=cval) if pad_mode == "constant" else {}
        padded = np.pad(padded, widths, mode=pad_mode, **extra)
    out = np.zeros(x.shape)
    for k in np.ndindex(*w.shape):
        out += w[k] * padded[tuple(slice(t, t + n) for t, n in zip(k, x.shape))]
    return out


def origins_of(size):
    return sorted({-(size // 2), 0, (size - 1) // 2})


SHAPES = [(9,), (1,), (2,), (6, 7), (3, 1), (2, 5), (4, 3, 5)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_correlate_and_convolve_match_the_reference_and_scipy(shape, mode, size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((size,) * len(shape))
    for origin in origins_of(size):
        got = ndimage.correlate(x, w, mode=mode, cval=0.75, origin=origin)
        want = reference_correlate(x, w, mode, 0.75, origin)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        # SciPy's n-d correlate reads out of bounds where a border reaches 2n past an axis
        # of length n (1.17: garbage values); its 1-d filters do not: compare where it is sound
        if all(size <= n for n in shape):
            np.testing.assert_allclose(
                got, scipy_ndimage.correlate(x, w, mode=mode, cval=0.75, origin=origin),
                rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                ndimage.convolve(x, w, mode=mode, cval=0.75, origin=origin),
                scipy_ndimage.convolve(x, w, mode=mode, cval=0.75, origin=origin),
                rtol=1e-12, atol=1e-12)
        flipped = w[(slice(None, None, -1),) * w.ndim]
        mirrored = -origin - (1 - size % 2)
        if 0 <= size // 2 + mirrored < size:
            np.testing.assert_allclose(ndimage.convolve(x, flipped, mode=mode, cval=0.75,
                                                        origin=mirrored), got,
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [1, 2, 3, 6, 11])
def test_1d_filters_match_scipy_along_every_axis_even_past_short_axes(mode, size):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 8, 2))
    w = rng.standard_normal(size)
    for axis in range(-3, 3):
        for origin in origins_of(size):
            for ours, theirs in [(ndimage.correlate1d, scipy_ndimage.correlate1d),
                                 (ndimage.convolve1d, scipy_ndimage.convolve1d)]:
                np.testing.assert_allclose(
                    ours(x, w, axis=axis, mode=mode, cval=-2.0, origin=origin),
                    theirs(x, w, axis=axis, mode=mode, cval=-2.0, origin=origin),
                    rtol=1e-12, atol=1e-12, err_msg=f"{ours.__name__} axis {axis}")


def test_a_filter_wider_than_the_row_uses_its_scalar_border_path_everywhere():
    # no output of a 40-tap filter on 30 samples has all its taps inside: no vector stretch
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((5, 30)), rng.standard_normal(40)
    for mode in ["reflect", "wrap", "constant"]:
        np.testing.assert_allclose(ndimage.correlate1d(x, w, mode=mode),
                                   scipy_ndimage.correlate1d(x, w, mode=mode),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_images_agree_with_scipy_in_every_thread_count(dtype):
    # long rows are split into pieces when rows are few; results do not depend on threads
    rng = np.random.default_rng(4)
    signal_1d = rng.standard_normal(200_003).astype(dtype)
    image = rng.standard_normal((301, 517)).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for x, w in [(signal_1d, rng.standard_normal(9)), (image, rng.standard_normal((5, 7)))]:
        want = scipy_ndimage.correlate(x, w, mode="mirror")
        results = []
        for threads in (1, 2, 3):
            with fastconv.num_threads(threads):
                results.append(ndimage.correlate(x, w, mode="mirror"))
        for got in results:
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, **tol)
            np.testing.assert_array_equal(got, results[0])


# Rows wide enough for the vector loops (several 2 x 16 float32 blocks, a last block that
# overlaps the one before, borders narrower than a vector), heights that leave groups of 1 to
# 3 output rows at the end of a line, and 3-d filters whose outer taps leave the input
WIDE_ROWS = [((13, 70), (7, 7)), ((6, 37), (3, 3)), ((3, 6, 45), (3, 2, 5)),
             ((2, 9, 40), (3, 3, 3)), ((11, 33), (1, 4)), ((5, 71), (6, 1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
@pytest.mark.parametrize("shape, size", WIDE_ROWS, ids=str)
def test_rows_computed_together_match_the_reference(shape, size, mode, dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(size).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for origin in [0, -(min(size) // 2)]:
        np.testing.assert_allclose(ndimage.correlate(x, w, mode=mode, cval=0.5, origin=origin),
                                   reference_correlate(x, w, mode, 0.5, origin),
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_output_row_has_the_same_bits_wherever_its_group_of_rows_starts(dtype):
    # output rows are computed four at a time from the input rows they share: each output
    # still sums its terms in one fixed order, so a row whose taps all lie inside the image
    # comes out the same from any piece of the image that holds those taps
    rng = np.random.default_rng(12)
    x = rng.standard_normal((23, 75)).astype(dtype)
    w = rng.standard_normal((7, 5)).astype(dtype)
    whole = ndimage.correlate(x, w, mode="nearest")
    for first in range(3, 8):
        for height in range(7, 12):
            piece = ndimage.correlate(x[first - 3:first - 3 + height], w, mode="nearest")
            inner = slice(3, height - 3)
            np.testing.assert_array_equal(
                piece[inner], whole[first - 3:first - 3 + height][inner],
                err_msg=f"rows {first - 3}..{first - 3 + height}")


def test_non_contiguous_inputs_give_the_results_of_their_copies():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((20, 30, 4))
    views = [base[::2, 1::3, 0], base[:, :, 1].T, base[::-1, ::-2, 2]]
    w = rng.standard_normal((3, 4))
    for x in views:
        np.testing.assert_allclose(ndimage.correlate(x, w, mode="wrap"),
                                   scipy_ndimage.correlate(np.ascontiguousarray(x), w,
                                                           mode="wrap"), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ndimage.gaussian_filter(x, 1.5),
                                   scipy_ndimage.gaussian_filter(x.copy(), 1.5),
                                   rtol=1e-12, atol=1e-12)


def assert_scipys_integers(got, want, exact):
    """got == want, except where SciPy's exact float result is (within 1e-9) an integer that
    its float rounding put a hair below: there fastconv gives that integer, SciPy one less."""
    assert got.dtype == want.dtype
    differ = got.astype(np.int64) != want.astype(np.int64)
    near_integer = np.abs(exact - np.rint(exact)) <= 1e-9 * np.maximum(1, np.abs(exact))
    assert np.all(near_integer[differ]), f"{differ.sum()} outputs differ from SciPy's"
    np.testing.assert_array_equal(got[differ].astype(np.int64),
                                  np.rint(exact[differ]).astype(np.int64))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint16, np.bool_])
def test_integer_images_give_scipys_integers(dtype):
    rng = np.random.default_rng(6)
    x = (np.abs(rng.standard_normal((25, 33))) * 60).astype(dtype)
    x[5:15, 5:20] = 7       # a constant region: filters that sum to 1 give exactly 7 there
    for mode in ["reflect", "constant", "wrap"]:
        for size in [2, 3, (3, 5)]:
            got = ndimage.uniform_filter(x, size, mode=mode, cval=3)
            want = scipy_ndimage.uniform_filter(x, size, mode=mode, cval=3)
            assert got.dtype == dtype
            exact = scipy_ndimage.uniform_filter(x.astype(np.float64), size, mode=mode,
                                                 cval=3)
            if dtype != np.bool_:   # a bool's passes truncate in between; no exact value
                assert_scipys_integers(got, want, exact)
            else:
                np.testing.assert_array_equal(got, want)
        for sigma in [0.7, 2.0]:
            got = ndimage.gaussian_filter1d(x, sigma, axis=0, mode=mode, cval=3)
            want = scipy_ndimage.gaussian_filter1d(x, sigma, axis=0, mode=mode, cval=3)
            exact = scipy_ndimage.gaussian_filter1d(x.astype(np.float64), sigma, axis=0,
                                                    mode=mode, cval=3)
            assert_scipys_integers(got, want, exact)
        w = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16   # exact in binary
        np.testing.assert_array_equal(ndimage.correlate(x, w, mode=mode),
                                      scipy_ndimage.correlate(x, w, mode=mode))


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_gaussian_filter_and_its_derivatives_match_scipy(mode, order):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((17, 23, 5))
    for sigma in [0.6, 1.0, 2.5, (1.0, 0.0, 2.0)]:
        np.testing.assert_allclose(ndimage.gaussian_filter(x, sigma, order=order, mode=mode,
                                                           cval=0.5),
                                   scipy_ndimage.gaussian_filter(x, sigma, order=order,
                                                                 mode=mode, cval=0.5),
                                   rtol=1e-11, atol=1e-11)
    for axis in [0, -1]:
        np.testing.assert_allclose(
            ndimage.gaussian_filter1d(x, 1.7, axis=axis, order=order, mode=mode, truncate=3.0),
            scipy_ndimage.gaussian_filter1d(x, 1.7, axis=axis, order=order, mode=mode,
                                            truncate=3.0), rtol=1e-11, atol=1e-11)


def test_gaussian_kernel_is_the_sampled_derivative_of_a_normalised_gaussian():
    from fastconv._ops.ndimage import gaussian_kernel1d
    sigma, radius = 1.3, 6
    x = np.arange(-radius, radius + 1.0)
    phi = np.exp(-x**2 / (2 * sigma**2))
    phi /= phi.sum()
    np.testing.assert_allclose(gaussian_kernel1d(sigma, 0, radius), phi, rtol=1e-14)
    np.testing.assert_allclose(gaussian_kernel1d(sigma, 1, radius), -x / sigma**2 * phi,
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gaussian_kernel1d(sigma, 2, radius),
                               (x**2 - sigma**2) / sigma**4 * phi, rtol=1e-12, atol=1e-15)


def test_per_axis_arguments_radius_and_axes_match_scipy():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 12, 7))
    cases = [
        ("gaussian_filter", (x, [1.0, 2.0]), dict(axes=(2, 0), mode=["wrap", "nearest"],
                                                  order=[0, 1], radius=[2, 5])),
        ("gaussian_filter", (x, 1.5), dict(axes=1, truncate=2.0)),
        ("uniform_filter", (x, [2, 5]), dict(axes=(-1, 0), origin=[0, -2],
                                              mode=["mirror", "constant"], cval=1.0)),
        ("uniform_filter", (x,), dict(size=(1, 4, 3))),
        ("correlate", (x, rng.standard_normal((3, 2))), dict(axes=(2, 0), origin=(0, -1))),
        ("convolve", (x, rng.standard_normal((4,))), dict(axes=[1], mode="wrap")),
        ("uniform_filter1d", (x, 4), dict(axis=1, origin=1)),
    ]
    for name, args, kwargs in cases:
        np.testing.assert_allclose(getattr(ndimage, name)(*args, **kwargs),
                                   getattr(scipy_ndimage, name)(*args, **kwargs),
                                   rtol=1e-12, atol=1e-12, err_msg=f"{name} {kwargs}")


def test_output_argument_as_scipy_takes_it():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 11)).astype(np.float32)
    w = rng.standard_normal((3, 3))
    out = np.empty((10, 11), dtype=np.float64)
    returned = ndimage.correlate(x, w, output=out)
    assert returned is out
    np.testing.assert_allclose(out, scipy_ndimage.correlate(x, w, output=np.float64),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ndimage.correlate1d(x * 3, w[0], output=bool),
                                  scipy_ndimage.correlate1d(x * 3, w[0], output=bool))
    # (not bool: SciPy's bool output of a multi-pass filter holds the truncated bytes of the
    # first pass, 2 or 255, and the second pass reads them as such; fastconv's holds booleans)
    for dtype in [np.int16, "float32", np.float64]:
        got = ndimage.gaussian_filter(x * 10, 1.0, output=dtype)
        want = scipy_ndimage.gaussian_filter(x * 10, 1.0, output=dtype)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-5, atol=1e-4)


def test_an_output_that_is_the_input_gives_the_out_of_place_result():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((12, 13))
    want = scipy_ndimage.uniform_filter(x, 3)
    ndimage.uniform_filter(x, 3, output=x)
    np.testing.assert_allclose(x, want, rtol=1e-12, atol=1e-12)
    y = rng.standard_normal((12, 13))
    want = scipy_ndimage.correlate(y, np.ones((3, 3)))
    ndimage.correlate(y, np.ones((3, 3)), output=y)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_zero_dimensional_and_empty_inputs():
    assert ndimage.correlate(np.array(2.0), np.array(3.0)) == 6.0
    empty = np.zeros((0, 4))
    assert ndimage.correlate(empty, np.ones((3, 3))).shape == (0, 4)
    assert ndimage.gaussian_filter(empty, 2.0).shape == (0, 4)


@pytest.mark.parametrize("call, error, names", [
    (lambda: ndimage.correlate(np.ones((4, 4)), np.ones(3)), ValueError, ("weights",)),
    (lambda: ndimage.correlate(np.ones((4, 4)), np.ones((0, 3))), ValueError, ("weights",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3), mode="same"), ValueError, ("mode",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3), origin=2), ValueError, ("origin",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3), origin=1.5), TypeError, ("origin",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3), cval="x"), TypeError, ("cval",)),
    (lambda: ndimage.correlate(np.ones(4, complex), np.ones(3)), TypeError, ("input",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3, complex)), TypeError, ("weights",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3), output=np.ones(5)), ValueError,
     ("output",)),
    (lambda: ndimage.correlate(np.ones(4), np.ones(3), output="nonsense"), TypeError,
     ("output",)),
    (lambda: ndimage.correlate1d(np.ones((4, 4)), np.ones(3), axis=2), ValueError, ("axis",)),
    (lambda: ndimage.correlate1d(np.ones((4, 4)), np.ones((3, 1))), ValueError, ("weights",)),
    (lambda: ndimage.correlate(np.ones((4, 4)), np.ones(3), axes=(0, 0)), ValueError,
     ("axes",)),
    (lambda: ndimage.uniform_filter(np.ones((4, 4)), 0), ValueError, ("size",)),
    (lambda: ndimage.uniform_filter(np.ones((4, 4)), [3, 3, 3]), ValueError, ("size",)),
    (lambda: ndimage.gaussian_filter(np.ones((4, 4)), -1.0), ValueError, ("sigma",)),
    (lambda: ndimage.gaussian_filter(np.ones((4, 4)), float("nan")), ValueError, ("sigma",)),
    (lambda: ndimage.gaussian_filter(np.ones((4, 4)), 1.0, order=-1), ValueError, ("order",)),
    (lambda: ndimage.gaussian_filter(np.ones((4, 4)), 1.0, truncate=-1), ValueError,
     ("truncate",)),
    (lambda: ndimage.gaussian_filter1d(np.ones(4), 1.0, radius=-2), ValueError, ("radius",)),
])
def test_bad_arguments_raise_errors_that_name_them(call, error, names):
    with pytest.raises(error) as raised:
        call()
    for name in names:
        assert name in str(raised.value)


@pytest.mark.parametrize("shape", [(23, 40), (3, 5, 70), (2, 1, 9), (7, 3), (4, 6, 2)], ids=str)
@pytest.mark.parametrize("mode", ["reflect", "mirror", "wrap", "constant", "nearest"])
def test_the_fused_last_two_passes_match_the_pass_by_pass_filter(shape, mode):
    # float outputs run the last two axes' passes as one kernel (groups of four rows, row
    # buffers); integer outputs run pass by pass: both are SciPy's filter
    rng = np.random.default_rng(15)
    x = rng.standard_normal(shape)
    for sigma in [0.8, 3.0]:
        got = ndimage.gaussian_filter(x, sigma, mode=mode, cval=-1.0)
        want = scipy_ndimage.gaussian_filter(x, sigma, mode=mode, cval=-1.0)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        one_by_one = x
        for axis in range(x.ndim):
            one_by_one = ndimage.gaussian_filter1d(one_by_one, sigma, axis=axis, mode=mode,
                                                   cval=-1.0)
        np.testing.assert_allclose(got, one_by_one, rtol=1e-12, atol=1e-12)
    for size in [2, 5, (3, 4, 1)[:len(shape)]]:
        np.testing.assert_allclose(
            ndimage.uniform_filter(x.astype(np.float32), size, mode=mode, origin=-1 if
                                   np.all(np.asarray(size) > 1) else 0),
            scipy_ndimage.uniform_filter(x.astype(np.float32), size, mode=mode, origin=-1 if
                                         np.all(np.asarray(size) > 1) else 0),
            rtol=2e-5, atol=2e-5)


from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def filter_calls(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 7)) for _ in range(nd))
    taps = tuple(draw(st.integers(1, 9)) for _ in range(nd))
    origin = tuple(draw(st.integers(-(k // 2), (k - 1) // 2)) for k in taps)
    mode = draw(st.sampled_from(MODES))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return shape, taps, origin, mode, dtype, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(filter_calls())
def test_random_filters_match_the_reference(call):
    # any shape, however short its axes against the taps: the tables and the border copies
    shape, taps, origin, mode, dtype, seed = call
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(taps)
    got = ndimage.correlate(x, w, mode=mode, cval=0.5, origin=origin)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, reference_correlate(x, w, mode, 0.5, origin),
                               rtol=tol, atol=tol * np.abs(w).sum())
    if len(shape) >= 2:
        sigma = float(rng.uniform(0.3, 2.0))
        np.testing.assert_allclose(ndimage.gaussian_filter(x, sigma, mode=mode, cval=0.5),
                                   scipy_ndimage.gaussian_filter(x, sigma, mode=mode,
                                                                 cval=0.5),
                                   rtol=tol * 10, atol=tol * 10)
