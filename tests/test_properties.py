"""Properties from the theory of convolution, and the SciPy-style convolve/correlate."""
import numpy as np
import pytest

import fastconv

import reference


def test_translation_equivariance():
    """Shifting the input shifts the output by the same amount (away from the borders)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 30, 30))
    w = rng.standard_normal((4, 3, 5, 5))
    shift = (3, 7)
    shifted = np.roll(x, shift, axis=(2, 3))
    for algorithm in ("direct", "im2col"):
        y = fastconv.conv2d(x, w, algorithm=algorithm)
        y_shifted = fastconv.conv2d(shifted, w, algorithm=algorithm)
        # y_shifted[i, j] = y[i - 3, j - 7] wherever the window never met wrapped pixels
        np.testing.assert_allclose(y_shifted[:, :, 3:, 7:], y[:, :, :-3, :-7],
                                   rtol=1e-12, atol=1e-12)


def test_translation_equivariance_circular_is_exact_everywhere():
    """With circular padding and 'same' size, convolution commutes with cyclic shifts."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 16, 12))
    w = rng.standard_normal((3, 2, 3, 5))
    conv = lambda a: fastconv.conv2d(a, w, padding="same", padding_mode="circular")
    np.testing.assert_allclose(conv(np.roll(x, (5, -2), axis=(2, 3))),
                               np.roll(conv(x), (5, -2), axis=(2, 3)), rtol=1e-12, atol=1e-12)


def test_pointwise_convolution_is_a_matrix_product_over_channels():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 16, 7, 9)).astype(np.float32)
    w = rng.standard_normal((8, 16, 1, 1)).astype(np.float32)
    want = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    for algorithm in ("gemm1x1", "im2col", "direct"):
        np.testing.assert_allclose(fastconv.conv2d(x, w, algorithm=algorithm), want,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shapes", [((7,), (3,)), ((6, 5), (3, 2)), ((4, 5, 6), (2, 3, 2))],
                         ids=["1d", "2d", "3d"])
def test_convolve_is_commutative(shapes):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    np.testing.assert_allclose(fastconv.convolve(a, b), fastconv.convolve(b, a), rtol=1e-12,
                               atol=1e-12)


def test_convolve_is_associative():
    rng = np.random.default_rng(4)
    a, b, c = (rng.standard_normal(s) for s in [(9, 8), (3, 4), (2, 5)])
    left = fastconv.convolve(fastconv.convolve(a, b), c)
    right = fastconv.convolve(a, fastconv.convolve(b, c))
    np.testing.assert_allclose(left, right, rtol=1e-10, atol=1e-10)


def test_convolve_with_a_delta_is_identity_and_shift():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 7))
    delta = np.zeros((3, 3))
    delta[1, 1] = 1
    np.testing.assert_array_equal(fastconv.convolve(a, delta, mode="same"), a)
    delta = np.zeros((1, 3))
    delta[0, 0] = 1   # convolution with a delta at index 0 of a width-3 kernel: no shift
    np.testing.assert_array_equal(fastconv.convolve(a, delta, mode="full")[:, :7], a)


SIGNAL_SHAPES = [((10,), (3,)), ((5,), (8,)), ((9, 7), (3, 4)), ((4, 6), (5, 2)),
                 ((6, 5, 4), (3, 2, 3)), ((3, 3), (3, 3)), ((8,), (8,))]


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shapes", SIGNAL_SHAPES, ids=[f"{a}-{b}" for a, b in SIGNAL_SHAPES])
def test_convolve_and_correlate_match_reference_and_scipy(shapes, mode):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    valid_ok = all(m >= n for m, n in zip(a.shape, b.shape)) or \
        all(m >= n for m, n in zip(b.shape, a.shape))
    if mode == "valid" and not valid_ok:
        with pytest.raises(ValueError, match="valid"):
            fastconv.convolve(a, b, mode=mode)
        return
    for ours, ref, theirs in [(fastconv.convolve, reference.convolve, signal.convolve),
                              (fastconv.correlate, reference.correlate, signal.correlate)]:
        got = ours(a, b, mode=mode)
        np.testing.assert_allclose(got, ref(a, b, mode), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got, theirs(a, b, mode=mode, method="direct"), rtol=1e-10,
                                   atol=1e-10)


def test_convolve_flips_and_correlate_does_not():
    assert fastconv.convolve([1.0, 0.0, 0.0], [1.0, 2.0, 3.0], mode="same").tolist() == \
        [2.0, 3.0, 0.0]
    assert fastconv.correlate([1.0, 0.0, 0.0], [1.0, 2.0, 3.0], mode="same").tolist() == \
        [2.0, 1.0, 0.0]


def test_sobel_edge_detection_finds_a_vertical_edge():
    image = np.zeros((8, 8), np.float32)
    image[:, 4:] = 1.0
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    edges = fastconv.correlate(image, sobel_x, mode="valid")
    assert edges.shape == (6, 6)
    # the edge lies between columns 3 and 4: the valid windows centred on them respond
    np.testing.assert_array_equal(np.nonzero(edges.sum(axis=0))[0], [2, 3])
    assert (edges[:, 2:4] == 4).all()
