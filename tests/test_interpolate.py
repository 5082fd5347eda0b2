"""Specification of ``interpolate`` (nearest, linear, bilinear, trilinear) and its gradient.

Oracles: tests/reference.interpolate_nd (float64, one axis at a time, from the definition) and
PyTorch where installed.
"""
import numpy as np
import pytest

import fastconv
import fastconv.grad
import reference as ref

LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def rand(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def expected_size(spatial, size, scale_factor):
    if size is not None:
        return (size,) * len(spatial) if isinstance(size, int) else tuple(size)
    scales = scale_factor if isinstance(scale_factor, tuple) else (scale_factor,) * len(spatial)
    return tuple(int(np.floor(n * s)) for n, s in zip(spatial, scales))


# (id, spatial size, size, scale_factor): up, down, identity, non-integer and per-axis factors
RESIZE_CASES = [
    ("1d-x2", (5,), None, 2), ("1d-x0.5", (8,), None, 0.5), ("1d-size7", (4,), 7, None),
    ("1d-size3", (7,), 3, None), ("1d-same", (6,), 6, None), ("1d-to1", (5,), 1, None),
    ("2d-x2", (4, 5), None, 2), ("2d-x(2,3)", (3, 4), None, (2.0, 3.0)),
    ("2d-size(7,3)", (4, 6), (7, 3), None), ("2d-x1.5", (4, 6), None, 1.5),
    ("2d-keepH", (4, 5), (4, 9), None),
    ("3d-x2", (2, 3, 4), None, 2), ("3d-size(3,5,2)", (4, 3, 5), (3, 5, 2), None),
    # rows of several vector blocks (with AVX-512 each block of outputs permutes its inputs
    # out of two vector loads): masked at the row's end, blocks that read too wide a stretch
    # (downsampling past 1/2) done one output at a time, milder downsampling in vectors
    ("2d-wide-x2", (3, 37), None, 2), ("2d-wide-size(9,131)", (5, 70), (9, 131), None),
    ("1d-wide-size41", (100,), 41, None), ("1d-wide-size37", (50,), 37, None),
]
RESIZE_IDS = [c[0] for c in RESIZE_CASES]


@pytest.mark.parametrize("align_corners", [False, True], ids=["area", "corners"])
@pytest.mark.parametrize("name,spatial,size,scale", RESIZE_CASES, ids=RESIZE_IDS)
def test_linear_modes_match_reference(name, spatial, size, scale, align_corners):
    nd = len(spatial)
    x = rand((2, 3) + spatial)
    out = fastconv.interpolate(x, size=size, scale_factor=scale, mode=LINEAR_MODE[nd],
                               align_corners=align_corners)
    scales = None if scale is None else (scale if isinstance(scale, tuple) else (scale,) * nd)
    want = ref.interpolate_nd(x, expected_size(spatial, size, scale), "linear", align_corners,
                              scales)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,spatial,size,scale", RESIZE_CASES, ids=RESIZE_IDS)
def test_nearest_matches_reference_exactly(name, spatial, size, scale, dtype):
    nd = len(spatial)
    x = rand((2, 3) + spatial, dtype)
    out = fastconv.interpolate(x, size=size, scale_factor=scale)
    scales = None if scale is None else (scale if isinstance(scale, tuple) else (scale,) * nd)
    np.testing.assert_array_equal(out, ref.interpolate_nd(x, expected_size(spatial, size, scale),
                                                          "nearest", scales=scales))


def test_nearest_x2_duplicates_every_element():
    x = rand((1, 2, 3, 4), np.float32)
    out = fastconv.interpolate(x, scale_factor=2)
    np.testing.assert_array_equal(out, x.repeat(2, axis=2).repeat(2, axis=3))
    x[0, 0, 0, 0] = -0.0
    assert np.signbit(fastconv.interpolate(x, scale_factor=2)[0, 0, :2, :2]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["nearest", "linear-area", "linear-corners"])
@pytest.mark.parametrize("name,spatial,size,scale", RESIZE_CASES
                         + [("2d-x1.7", (5, 6), None, 1.7), ("2d-x0.3", (11, 13), None, 0.3),
                            ("1d-size13", (7,), 13, None)],
                         ids=RESIZE_IDS + ["2d-x1.7", "2d-x0.3", "1d-size13"])
def test_matches_torch(name, spatial, size, scale, mode, dtype):
    torch = pytest.importorskip("torch")
    nd = len(spatial)
    torch_mode = "nearest" if mode == "nearest" else LINEAR_MODE[nd]
    align = None if mode == "nearest" else mode.endswith("corners")
    x = rand((2, 3) + spatial, dtype, seed=1)
    out = fastconv.interpolate(x, size=size, scale_factor=scale, mode=torch_mode,
                               align_corners=align)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, scale_factor=scale,
                                           mode=torch_mode, align_corners=align).numpy()
    assert out.dtype == dtype and out.shape == want.shape
    if mode == "nearest":
        np.testing.assert_array_equal(out, want)
    else:
        # float32: both round each product and sum (and PyTorch its source coordinates),
        # errors that scale with the values' magnitude
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1, np.abs(want).max()))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("n,scale", [(3, 2.04), (5, 1.1), (8, 2.12), (4, 0.5), (7, 1.0)])
def test_nearest_scale_factor_edge_rules_match_torch(nd, n, scale):
    """Outputs exactly 1x or 2x the input while scale_factor says otherwise: torch 2.13 takes
    the shortcut (copy, o // 2) for 2-d input only; fastconv follows it."""
    torch = pytest.importorskip("torch")
    x = rand((2, 3) + (n,) * nd, np.float32, seed=9)
    out = fastconv.interpolate(x, scale_factor=scale)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=scale).numpy()
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("nd", [1, 3])
def test_nearest_backward_is_the_adjoint_where_torch_is_not(nd):
    """3 -> 6 with scale_factor 2.04: the 1-d/3-d forward (like torch's) reads floor(o / 2.04);
    the gradient must route to the same inputs (torch 2.13's backward uses o // 2 instead)."""
    x = rand((1, 2) + (3,) * nd, seed=10)
    out = fastconv.interpolate(x, scale_factor=2.04)
    g = rand(out.shape, seed=11)
    grad = fastconv.grad.interpolate(g, x.shape, scale_factor=2.04)
    numeric = numerical_gradient(lambda v: (fastconv.interpolate(v, scale_factor=2.04) * g).sum(),
                                 x.copy())
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_noncontiguous_and_integer_input():
    x = rand((3, 2, 5, 6))
    view = np.swapaxes(x, 0, 1)
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(
        fastconv.interpolate(view, scale_factor=2, mode="bilinear"),
        fastconv.interpolate(np.ascontiguousarray(view), scale_factor=2, mode="bilinear"))
    ints = np.arange(12).reshape(1, 1, 3, 4)
    out = fastconv.interpolate(ints, size=(5, 7), mode="bilinear", align_corners=True)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref.interpolate_nd(ints, (5, 7), "linear", True))


def test_read_only_input_is_accepted():
    x = rand((1, 2, 3, 4))
    x.setflags(write=False)
    out = fastconv.interpolate(x, scale_factor=2, mode="bilinear")
    out.setflags(write=False)
    np.testing.assert_allclose(out, ref.interpolate_nd(x, (6, 8), "linear", scales=(2, 2)))
    assert fastconv.grad.interpolate(out, x.shape, scale_factor=2, mode="bilinear").shape == \
        x.shape


def test_align_corners_keeps_the_corners():
    x = rand((1, 1, 4, 5))
    out = fastconv.interpolate(x, size=(9, 13), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(out[..., ::-8, ::-12], x[..., ::-3, ::-4], rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# gradient

def numerical_gradient(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = f(x)
        flat[i] = saved - eps
        down = f(x)
        flat[i] = saved
        gflat[i] = (up - down) / (2 * eps)
    return grad


GRAD_CASES = [("1d-x2.5", (4,), None, 2.5), ("2d-size(5,3)", (3, 4), (5, 3), None),
              ("2d-down", (7, 6), (3, 4), None), ("3d-x2", (2, 3, 2), None, 2),
              # rows of several vector blocks (with AVX-512 the W gather of each block of
              # inputs permutes the outputs they read out of three vector loads): masked at
              # the row's end, and blocks that read too many outputs (x4) one at a time
              ("2d-wide-x2", (3, 37), None, 2), ("1d-wide-size100", (41,), 100, None),
              ("1d-wide-x4", (30,), None, 4), ("1d-wide-size37", (100,), 37, None)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spatial,size", [((40,), 80), ((41,), 100), ((30,), 120), ((3, 37), (6, 74))])
def test_an_infinite_output_gradient_spreads_as_in_torch(spatial, size, dtype):
    """An infinite output gradient reaches the inputs that output's taps read (NaN through a
    tap of weight 0, as in PyTorch) and no other: entries that only pad the gather tables
    read a zero, never a neighbour's value."""
    torch = pytest.importorskip("torch")
    nd = len(spatial)
    shape = (1, 1) + spatial
    out_shape = (1, 1) + ((size,) if nd == 1 else size)
    for k in (0, 1, out_shape[-1] // 2, out_shape[-1] - 1):
        g = np.ones(out_shape, dtype)
        g[..., k] = np.inf
        got = fastconv.grad.interpolate(g, shape, size=size, mode=LINEAR_MODE[nd])
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        torch.nn.functional.interpolate(x, size=size, mode=LINEAR_MODE[nd]).backward(
            torch.from_numpy(g.astype(np.float64)))
        want = x.grad.numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize("mode", ["nearest", "linear-area", "linear-corners"])
@pytest.mark.parametrize("name,spatial,size,scale", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_backward_finite_differences_and_adjointness(name, spatial, size, scale, mode):
    nd = len(spatial)
    kwargs = dict(size=size, scale_factor=scale,
                  mode="nearest" if mode == "nearest" else LINEAR_MODE[nd],
                  align_corners=None if mode == "nearest" else mode.endswith("corners"))
    x = rand((1, 2) + spatial, seed=2)
    out = fastconv.interpolate(x, **kwargs)
    g = rand(out.shape, seed=3)
    grad = fastconv.grad.interpolate(g, x.shape, **kwargs)
    numeric = numerical_gradient(lambda v: (fastconv.interpolate(v, **kwargs) * g).sum(),
                                 x.copy())
    np.testing.assert_allclose(grad, numeric, atol=1e-7)
    np.testing.assert_allclose((out * g).sum(), (x * grad).sum(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["nearest", "linear-area", "linear-corners"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_backward_matches_torch_autograd(nd, mode, dtype):
    torch = pytest.importorskip("torch")
    kwargs = dict(scale_factor=1.5, mode="nearest" if mode == "nearest" else LINEAR_MODE[nd],
                  align_corners=None if mode == "nearest" else mode.endswith("corners"))
    x = rand((2, 3) + (5,) * nd, dtype, seed=4)
    out = fastconv.interpolate(x, **kwargs)
    g = rand(out.shape, dtype, seed=5)
    t = torch.from_numpy(x).requires_grad_(True)
    (torch.nn.functional.interpolate(t, **kwargs) * torch.from_numpy(g)).sum().backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fastconv.grad.interpolate(g, x.shape, **kwargs), t.grad.numpy(),
                               rtol=tol, atol=tol)


def test_backward_is_deterministic_across_thread_counts():
    g = rand((4, 8, 61, 47), seed=6)
    results = []
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            results.append(fastconv.grad.interpolate(g, (4, 8, 20, 20), size=(61, 47),
                                                     mode="bilinear").tobytes())
    assert results[0] == results[1] == results[2]


# ---------------------------------------------------------------------------------------------
# bad input

X = np.zeros((1, 2, 4, 4))


@pytest.mark.parametrize("call,error,match", [
    (lambda: fastconv.interpolate(X), ValueError, "size and scale_factor"),
    (lambda: fastconv.interpolate(X, size=8, scale_factor=2), ValueError,
     "size and scale_factor"),
    (lambda: fastconv.interpolate(X, size=0), ValueError, "size"),
    (lambda: fastconv.interpolate(X, size=(8, 8, 8)), TypeError, "size"),
    (lambda: fastconv.interpolate(X, scale_factor=0.1), ValueError, "scale_factor"),
    (lambda: fastconv.interpolate(X, scale_factor=-2), ValueError, "scale_factor"),
    (lambda: fastconv.interpolate(X, scale_factor=(2, 2, 2)), ValueError, "scale_factor"),
    (lambda: fastconv.interpolate(X, scale_factor="2"), TypeError, "scale_factor"),
    (lambda: fastconv.interpolate(X, scale_factor=2, mode="bicubic"), ValueError, "mode"),
    (lambda: fastconv.interpolate(X, scale_factor=2, mode="linear"), ValueError, "mode"),
    (lambda: fastconv.interpolate(X, scale_factor=2, mode="trilinear"), ValueError, "mode"),
    (lambda: fastconv.interpolate(X, scale_factor=2, align_corners=True), ValueError,
     "align_corners"),
    (lambda: fastconv.interpolate(X, scale_factor=2, mode="bilinear", align_corners="yes"),
     TypeError, "align_corners"),
    (lambda: fastconv.interpolate(np.zeros((2, 4)), scale_factor=2), ValueError, "input"),
    (lambda: fastconv.interpolate(np.zeros((1, 1, 0, 3)), scale_factor=2), ValueError, "input"),
    (lambda: fastconv.grad.interpolate(np.zeros((1, 2, 8, 7)), X.shape, scale_factor=2),
     ValueError, "grad_output"),
    (lambda: fastconv.grad.interpolate(np.zeros((1, 2, 8, 8)), (1, 2), scale_factor=2),
     ValueError, "input_shape"),
    (lambda: fastconv.grad.interpolate(np.zeros((1, 2, 8, 8)), X.shape), ValueError,
     "size and scale_factor"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
