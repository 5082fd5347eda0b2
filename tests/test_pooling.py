"""Specification of max, average and adaptive pooling, max-unpooling and their gradients.

Oracles: the plain float64 loops in tests/reference.py, and PyTorch (values and indices
identical) where it is installed.
"""
import numpy as np
import pytest

import fastconv
import fastconv.grad
import reference as ref

MAX_POOL = {1: fastconv.max_pool1d, 2: fastconv.max_pool2d, 3: fastconv.max_pool3d}
AVG_POOL = {1: fastconv.avg_pool1d, 2: fastconv.avg_pool2d, 3: fastconv.avg_pool3d}
ADAPTIVE_AVG = {1: fastconv.adaptive_avg_pool1d, 2: fastconv.adaptive_avg_pool2d,
                3: fastconv.adaptive_avg_pool3d}
ADAPTIVE_MAX = {1: fastconv.adaptive_max_pool1d, 2: fastconv.adaptive_max_pool2d,
                3: fastconv.adaptive_max_pool3d}
MAX_UNPOOL = {1: fastconv.max_unpool1d, 2: fastconv.max_unpool2d, 3: fastconv.max_unpool3d}
GRAD = fastconv.grad


def rand(shape, dtype=np.float64, seed=0, ties=False):
    """Random input; with ties, small integers so that windows hold equal maxima."""
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(0, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def shape_of(nd, spatial, n=2, c=3):
    return (n, c) + tuple(spatial)


# (id, spatial size, keyword arguments): dense where bugs hide -- ceil_mode edges, padding
# k // 2, dilation, stride > kernel, 1x1 windows, odd sizes, rectangular windows.
MAX_CASES = [
    ("1d-k3s2p1", (11,), dict(kernel_size=3, stride=2, padding=1)),
    ("1d-k2-ceil-odd", (7,), dict(kernel_size=2, ceil_mode=True)),
    ("1d-k3-d2-p1", (10,), dict(kernel_size=3, padding=1, dilation=2)),
    ("1d-k4s3p2-ceil", (10,), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    ("2d-k2s2", (8, 6), dict(kernel_size=2, stride=2)),
    ("2d-k3s2p1", (9, 11), dict(kernel_size=3, stride=2, padding=1)),
    ("2d-k3s2p1-ceil", (10, 10), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("2d-k2s2-ceil-odd", (7, 9), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ("2d-k1", (5, 4), dict(kernel_size=1)),
    ("2d-k1s2", (5, 4), dict(kernel_size=1, stride=2)),
    ("2d-stride>kernel", (9, 10), dict(kernel_size=2, stride=3)),
    ("2d-k3s1p1", (6, 7), dict(kernel_size=3, stride=1, padding=1)),
    ("2d-rect-dilated", (9, 12), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                                     dilation=(1, 2))),
    ("2d-d2p1-ceil", (8, 9), dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                  ceil_mode=True)),
    ("2d-k5s2p2", (11, 9), dict(kernel_size=5, stride=2, padding=2)),
    ("3d-k2s2-ceil", (5, 6, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ("3d-k3s2p1-dil", (5, 6, 9), dict(kernel_size=3, stride=2, padding=1, dilation=(1, 1, 2))),
    ("3d-k(1,3,3)s(1,2,2)", (3, 7, 7), dict(kernel_size=(1, 3, 3), stride=(1, 2, 2),
                                           padding=(0, 1, 1))),
]
MAX_IDS = [c[0] for c in MAX_CASES]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("name,spatial,kwargs", MAX_CASES, ids=MAX_IDS)
def test_max_pool_matches_reference(name, spatial, kwargs, ties):
    nd = len(spatial)
    x = rand(shape_of(nd, spatial), ties=ties)
    out, idx = MAX_POOL[nd](x, return_indices=True, **kwargs)
    want, want_idx = ref.max_pool_nd(x, **kwargs)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(MAX_POOL[nd](x, **kwargs), want)   # without indices


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,spatial,kwargs", MAX_CASES, ids=MAX_IDS)
def test_max_pool_matches_torch(name, spatial, kwargs, dtype):
    torch = pytest.importorskip("torch")
    nd = len(spatial)
    x = rand(shape_of(nd, spatial), dtype, seed=1, ties=True)
    out, idx = MAX_POOL[nd](x, return_indices=True, **kwargs)
    fn = getattr(torch.nn.functional, f"max_pool{nd}d")
    t_out, t_idx = fn(torch.from_numpy(x), return_indices=True, **kwargs)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())


def test_max_pool_nan_wins_and_ties_take_the_first_element():
    x = np.array([[[[1., 2., 5., 5.],
                    [np.nan, 0., 5., 5.],
                    [-np.inf, -np.inf, 3., 3.],
                    [-np.inf, -np.inf, 3., np.nan]]]])
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out, [[[[np.nan, 5.], [-np.inf, np.nan]]]])
    np.testing.assert_array_equal(idx, [[[[4, 2], [8, 15]]]])


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_nan_matches_torch(nd):
    torch = pytest.importorskip("torch")
    x = rand(shape_of(nd, (6,) * nd), np.float32, seed=2, ties=True)
    x.reshape(-1)[::7] = np.nan
    x.reshape(-1)[3::11] = -np.inf
    out, idx = MAX_POOL[nd](x, 3, 2, 1, return_indices=True)
    fn = getattr(torch.nn.functional, f"max_pool{nd}d")
    t_out, t_idx = fn(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=2, stride=2, ceil_mode=True), dict(kernel_size=5, stride=2, padding=2),
    dict(kernel_size=4, stride=1, padding=2), dict(kernel_size=(2, 5, 3), stride=(1, 1, 2),
                                                   padding=(1, 2, 1), ceil_mode=True),
], ids=["k3s2p1", "k3s1p1", "k2s2-ceil", "k5s2p2", "k4s1p2", "3d-rect"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_float32_rows_with_padding_match_reference(nd, kwargs):
    """float32 rows of several 16-output vector blocks whose first and last blocks hold
    padding: ties, NaN, and windows of -inf only (the index is then the window's first
    element inside the input, never a padding position)."""
    kwargs = {k: (v[3 - nd:] if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    spatial = {1: (70,), 2: (5, 41), 3: (3, 4, 37)}[nd]
    x = rand(shape_of(nd, spatial), np.float32, seed=5, ties=True)
    flat = x.reshape(x.shape[:2] + (-1,))
    flat[0, 0, ::13] = np.nan
    flat[0, 1, :] = -np.inf                 # a plane of -inf
    flat[1, 2, ::3] = -np.inf
    out, idx = MAX_POOL[nd](x, return_indices=True, **kwargs)
    want, want_idx = ref.max_pool_nd(x, **kwargs)
    np.testing.assert_array_equal(out, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(MAX_POOL[nd](x, **kwargs), out)   # without indices


def test_max_pool_specialized_rows_match_reference_on_big_planes():
    """The 2x2/s2, 3x3/s2 and 3x3/s1 register paths (interior outputs, blocks) and their
    W-edge outputs."""
    x = rand((1, 2, 9, 46), ties=True, seed=3)     # rows of a block and an overlapping one
    x[0, 1, 3, 5] = np.nan
    wide = rand((1, 1, 5, 301), ties=True, seed=4)  # 3x3 rows of several 64-output blocks
    wide[0, 0, 2, 150:153] = np.nan
    for kwargs in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2),
                   dict(kernel_size=3, stride=1, padding=1)):
        out, idx = fastconv.max_pool2d(wide, return_indices=True, **kwargs)
        want, want_idx = ref.max_pool_nd(wide, **kwargs)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(idx, want_idx)
    for kwargs in (dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1),
                   dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                   dict(kernel_size=2, stride=2, ceil_mode=True),
                   dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=1)):
        out, idx = fastconv.max_pool2d(x, return_indices=True, **kwargs)
        want, want_idx = ref.max_pool_nd(x, **kwargs)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(idx, want_idx)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nd,spatial", [(1, (301,)), (2, (7, 75)), (3, (5, 4, 70))],
                         ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2, stride=2), dict(kernel_size=2, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=2, padding=1,
                                                   ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1)],
    ids=["k2s2", "k2s2-ceil", "k3s2p1", "k3s2", "k3s1p1", "k3s2p1-ceil", "k2s2p1"])
def test_max_pool_specialized_rows_match_reference(nd, spatial, kwargs, dtype):
    """The written-out kernels on 1-d rows (one row per window), 2-d windows and 3-d windows
    (all rows of a 2x2x2 window at once; 3x3x3 and padding-cut windows depth by depth, each
    depth continuing the scan of the one before), rows long enough for several vector blocks
    and a ragged last one (float32 2x2 windows run an AVX-512 kernel of their own); with
    ties, NaN and -inf (also as a window's first element), and without indices (a kernel
    variant of its own). The float64 reference scans the same values, so values and indices
    must match exactly."""
    x = rand(shape_of(nd, spatial, n=1, c=2), ties=True, seed=5)
    flat = x.reshape(-1)
    flat[::37] = np.nan
    flat[5::23] = -np.inf
    flat[::29] = -np.inf
    x = x.astype(dtype)
    out, idx = MAX_POOL[nd](x, return_indices=True, **kwargs)
    want, want_idx = ref.max_pool_nd(x.astype(np.float64), **kwargs)
    np.testing.assert_array_equal(out, want.astype(dtype))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(MAX_POOL[nd](x, **kwargs), want.astype(dtype))


def noncontiguous(x):
    """The same values as `x` in a transposed, strided view."""
    big = np.zeros((x.shape[1], x.shape[0]) + tuple(2 * n for n in x.shape[2:]), x.dtype)
    view = big[(slice(None), slice(None)) + (slice(None, None, 2),) * (x.ndim - 2)]
    view[...] = np.swapaxes(x, 0, 1)
    result = np.swapaxes(view, 0, 1)
    assert not result.flags.c_contiguous
    return result


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_accepts_noncontiguous_input(dtype):
    x = rand((2, 3, 9, 8), dtype)
    view = noncontiguous(x)
    for fn, kwargs in [(fastconv.max_pool2d, dict(kernel_size=3, stride=2, padding=1,
                                                  return_indices=True)),
                       (fastconv.avg_pool2d, dict(kernel_size=3, stride=2, padding=1)),
                       (fastconv.adaptive_avg_pool2d, dict(output_size=(4, 3))),
                       (fastconv.adaptive_max_pool2d, dict(output_size=(4, 3)))]:
        got, want = fn(view, **kwargs), fn(x, **kwargs)
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            np.testing.assert_array_equal(g, w)


def test_dtypes_follow_compute_dtype():
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    assert fastconv.max_pool2d(x, 2).dtype == np.float64            # ints compute in float64
    assert fastconv.avg_pool2d(x.astype(np.float16), 2).dtype == np.float32
    assert fastconv.avg_pool2d(x.astype(np.float32), 2).dtype == np.float32
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), ref.max_pool_nd(x, 2)[0])


def test_read_only_inputs_are_accepted():
    x = rand((2, 3, 8, 8))
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    for a in (x, out, idx):
        a.setflags(write=False)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), out)
    np.testing.assert_array_equal(fastconv.avg_pool2d(x, 2), ref.avg_pool_nd(x, 2))
    restored = fastconv.max_unpool2d(out, idx, 2)
    np.testing.assert_array_equal(GRAD.max_pool2d(out, idx, x.shape), restored)
    np.testing.assert_array_equal(GRAD.max_unpool2d(restored, idx, out.shape), out)


def test_empty_batch_gives_empty_output():
    out, idx = fastconv.max_pool2d(np.zeros((0, 3, 4, 4)), 2, return_indices=True)
    assert out.shape == idx.shape == (0, 3, 2, 2)
    assert fastconv.avg_pool2d(np.zeros((2, 0, 4, 4)), 2).shape == (2, 0, 2, 2)


# ---------------------------------------------------------------------------------------------
# average pooling

AVG_CASES = [
    ("1d-k3s2p1", (11,), dict(kernel_size=3, stride=2, padding=1)),
    ("1d-k2-ceil", (7,), dict(kernel_size=2, ceil_mode=True)),
    ("2d-k2s2", (8, 6), dict(kernel_size=2, stride=2)),
    ("2d-k3s2p1-ceil", (10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("2d-k3s1p1", (6, 7), dict(kernel_size=3, stride=1, padding=1)),
    ("2d-rect-stride>kernel", (9, 11), dict(kernel_size=(2, 3), stride=(3, 4), padding=(1, 1))),
    ("2d-k1", (4, 5), dict(kernel_size=1)),
    ("3d-k3s2p1-ceil", (5, 6, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("3d-k2", (4, 4, 5), dict(kernel_size=2)),
    # rows wide enough for the written-out kernels' vector loops (whole vectors, then a tail)
    ("1d-k2s2-wide", (135,), dict(kernel_size=2)),
    ("2d-k2s2-wide", (5, 75), dict(kernel_size=2, stride=2, padding=1)),
    ("2d-k3s1p1-wide", (4, 53), dict(kernel_size=3, stride=1, padding=1)),
    ("2d-k3s2p1-wide", (5, 67), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("3d-k2-wide", (3, 4, 70), dict(kernel_size=2)),
    # windows side by side along an odd row: the backward's expanded rows leave the last
    # input, which no window reads, at zero
    ("2d-k2s2-odd-wide", (5, 41), dict(kernel_size=2)),
]
AVG_IDS = [c[0] for c in AVG_CASES]
DIVISOR_MODES = [dict(), dict(count_include_pad=False), dict(divisor_override=3)]
DIVISOR_IDS = ["include-pad", "exclude-pad", "override3"]


@pytest.mark.parametrize("divisor", DIVISOR_MODES, ids=DIVISOR_IDS)
@pytest.mark.parametrize("name,spatial,kwargs", AVG_CASES, ids=AVG_IDS)
def test_avg_pool_matches_reference(name, spatial, kwargs, divisor):
    nd = len(spatial)
    x = rand(shape_of(nd, spatial))
    out = AVG_POOL[nd](x, **kwargs, **divisor)
    np.testing.assert_allclose(out, ref.avg_pool_nd(x, **kwargs, **divisor), rtol=1e-13,
                               atol=1e-14)


@pytest.mark.parametrize("divisor", DIVISOR_MODES, ids=DIVISOR_IDS)
@pytest.mark.parametrize("spatial,kwargs", [
    ((24, 24), dict(kernel_size=8)),
    ((19, 23), dict(kernel_size=(5, 4), stride=(3, 2), padding=2, ceil_mode=True)),
    ((14, 14), dict(kernel_size=7, stride=1, padding=3)),
    ((5, 9, 12), dict(kernel_size=(2, 4, 5), stride=(1, 2, 3), padding=(1, 2, 2))),
    ((50,), dict(kernel_size=6, stride=4, padding=1, ceil_mode=True))],
    ids=["k8", "k5x4-s3x2-p2-ceil", "k7s1p3", "3d", "1d"])
def test_wide_average_pools_of_many_planes_sum_each_window_in_window_order(spatial, kwargs,
                                                                           divisor):
    """Regular average pools with windows at least 4 wide over many planes take the vector
    lanes of the adaptive pools (16 planes side by side after a transpose): the bits of a
    few planes' scan (random float32 data, where another order rounds differently), and the
    definition's values."""
    nd = len(spatial)
    if nd == 1 and "divisor_override" in divisor:
        divisor = {}
    x = np.random.default_rng(6).standard_normal((3, 50) + spatial).astype(np.float32)
    many = AVG_POOL[nd](x, **kwargs, **divisor)
    for planes in (slice(0, 5), slice(44, 50)):
        few = AVG_POOL[nd](np.ascontiguousarray(x[2:, planes]), **kwargs, **divisor)
        np.testing.assert_array_equal(many[2:, planes], few)
    np.testing.assert_allclose(many, ref.avg_pool_nd(x.astype(np.float64), **kwargs, **divisor),
                               rtol=1e-5, atol=1e-6)


# torch.nn.functional.avg_pool1d has no divisor_override: those pairs are not in the grid
AVG_TORCH_GRID = [pytest.param(case, divisor, id=f"{case[0]}-{divisor_id}")
                  for case in AVG_CASES for divisor, divisor_id in zip(DIVISOR_MODES, DIVISOR_IDS)
                  if not (len(case[1]) == 1 and "divisor_override" in divisor)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case,divisor", AVG_TORCH_GRID)
def test_avg_pool_matches_torch(case, divisor, dtype):
    torch = pytest.importorskip("torch")
    name, spatial, kwargs = case
    nd = len(spatial)
    x = rand(shape_of(nd, spatial), dtype, seed=4)
    fn = getattr(torch.nn.functional, f"avg_pool{nd}d")
    want = fn(torch.from_numpy(x), **kwargs, **divisor).numpy()
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(AVG_POOL[nd](x, **kwargs, **divisor), want, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# adaptive pooling

ADAPTIVE_CASES = [
    ("1d-7to3", (7,), 3), ("1d-5to5", (5,), 5), ("1d-3to5", (3,), 5), ("1d-global", (9,), 1),
    ("2d-7x9to3x4", (7, 9), (3, 4)), ("2d-global", (5, 6), 1), ("2d-keep-H", (5, 6), (None, 2)),
    ("2d-upsample", (3, 2), (4, 5)), ("3d-5x6x7to2x3x4", (5, 6, 7), (2, 3, 4)),
    ("3d-global", (3, 4, 5), 1),
    # windows side by side of one width along W run the regular pools' row kernels: 2 wide
    # over 4 rows (the vector kernel, several blocks), 3 wide at stride 3, 8 wide (VGG's head)
    ("1d-64to16", (64,), 16), ("2d-16x112to4x56", (16, 112), (4, 56)),
    ("2d-9x48to3x16", (9, 48), (3, 16)), ("2d-16x56to2x7", (16, 56), (2, 7)),
    ("3d-4x6x40to2x3x20", (4, 6, 40), (2, 3, 20)),
]
ADAPTIVE_IDS = [c[0] for c in ADAPTIVE_CASES]


def _full_size(spatial, output_size):
    if isinstance(output_size, int):
        return (output_size,) * len(spatial)
    return tuple(n if o is None else o for n, o in zip(spatial, output_size))


@pytest.mark.parametrize("name,spatial,output_size", ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adaptive_pools_match_reference(name, spatial, output_size):
    nd = len(spatial)
    x = rand(shape_of(nd, spatial), ties=True)
    size = _full_size(spatial, output_size)
    np.testing.assert_allclose(ADAPTIVE_AVG[nd](x, output_size),
                               ref.adaptive_pool_nd(x, size, "avg"), rtol=1e-13)
    out, idx = ADAPTIVE_MAX[nd](x, output_size, return_indices=True)
    want, want_idx = ref.adaptive_pool_nd(x, size, "max")
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,spatial,output_size", ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adaptive_pools_match_torch(name, spatial, output_size, dtype):
    torch = pytest.importorskip("torch")
    nd = len(spatial)
    x = rand(shape_of(nd, spatial), dtype, seed=5, ties=True)
    x.reshape(-1)[::13] = np.nan
    t = torch.from_numpy(x)
    F = torch.nn.functional
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(ADAPTIVE_AVG[nd](x, output_size),
                               getattr(F, f"adaptive_avg_pool{nd}d")(t, output_size).numpy(),
                               rtol=tol, atol=tol)
    out, idx = ADAPTIVE_MAX[nd](x, output_size, return_indices=True)
    t_out, t_idx = getattr(F, f"adaptive_max_pool{nd}d")(t, output_size, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nd,spatial,output_size", [
    (1, (29,), 6), (2, (9, 13), (4, 5)), (2, (14, 14), 1), (2, (16, 56), (2, 7)),
    (3, (4, 5, 6), (3, 2, 4)),
    # windows of whole rows, read as one run per window (and per depth tap)
    (2, (9, 13), (2, 1)), (3, (4, 5, 6), (3, 2, 1)), (1, (70,), 1)],
    ids=["1d", "2d", "2d-global", "2d-8x8-windows", "3d", "2d-whole-rows", "3d-whole-rows",
         "1d-global"])
def test_adaptive_pools_of_many_planes_match_reference(nd, spatial, output_size, dtype):
    """With enough planes (135: blocks of 8 side by side, the last one ragged) the adaptive
    kernel scans the planes side by side: each plane's values and indices must be those of
    the one-plane scan, with NaN, ties and -inf."""
    x = rand((3, 45) + spatial, ties=True, seed=8)
    flat = x.reshape(-1)
    flat[::31] = np.nan
    flat[3::17] = -np.inf
    x = x.astype(dtype)
    size = _full_size(spatial, output_size)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(ADAPTIVE_AVG[nd](x, output_size),
                               ref.adaptive_pool_nd(x.astype(np.float64), size, "avg"),
                               rtol=tol, atol=tol)
    out, idx = ADAPTIVE_MAX[nd](x, output_size, return_indices=True)
    want, want_idx = ref.adaptive_pool_nd(x.astype(np.float64), size, "max")
    np.testing.assert_array_equal(out, want.astype(dtype))
    np.testing.assert_array_equal(idx, want_idx)
    # the same planes a few at a time take the one-plane path: the same bits
    few = ADAPTIVE_AVG[nd](x[:1, :5], output_size)
    np.testing.assert_array_equal(ADAPTIVE_AVG[nd](x, output_size)[:1, :5], few)


@pytest.mark.parametrize("nd,spatial,output_size", [
    (2, (56, 56), 7), (2, (56, 56), 1), (2, (15, 17), (4, 6)), (3, (5, 9, 10), (2, 3, 4)),
    (1, (300,), 7)], ids=["56-to-7", "global", "irregular", "3d", "1d"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_average_pools_of_many_planes_sum_each_window_in_window_order(
        nd, spatial, output_size, dtype):
    """Many planes go through vector lanes, 16 planes side by side after a transpose: each
    window must still be summed in window order, the bits of a few planes' scan (random
    data, where another order rounds differently)."""
    x = np.random.default_rng(5).standard_normal((3, 50) + spatial).astype(dtype)
    many = ADAPTIVE_AVG[nd](x, output_size)
    for planes in (slice(0, 5), slice(44, 50)):
        few = ADAPTIVE_AVG[nd](np.ascontiguousarray(x[2:, planes]), output_size)
        np.testing.assert_array_equal(many[2:, planes], few)
    size = _full_size(spatial, output_size)
    np.testing.assert_allclose(many, ref.adaptive_pool_nd(x.astype(np.float64), size, "avg"),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_global_pooling_is_mean_and_max_over_the_plane():
    x = rand((2, 3, 5, 7))
    np.testing.assert_allclose(fastconv.adaptive_avg_pool2d(x, 1)[..., 0, 0],
                               x.mean(axis=(2, 3)), rtol=1e-13)
    np.testing.assert_array_equal(fastconv.adaptive_max_pool2d(x, 1)[..., 0, 0],
                                  x.max(axis=(2, 3)))


# ---------------------------------------------------------------------------------------------
# max-unpooling

@pytest.mark.parametrize("name,spatial,kwargs", [c for c in MAX_CASES if "dilated" not in c[0]
                                                 and "d2" not in c[0] and "dil" not in c[0]],
                         ids=[c[0] for c in MAX_CASES if "dilated" not in c[0]
                              and "d2" not in c[0] and "dil" not in c[0]])
def test_max_unpool_restores_every_max_at_its_place(name, spatial, kwargs):
    nd = len(spatial)
    x = rand(shape_of(nd, spatial))
    out, idx = MAX_POOL[nd](x, return_indices=True, **kwargs)
    kw = {k: v for k, v in kwargs.items() if k in ("kernel_size", "stride", "padding")}
    restored = MAX_UNPOOL[nd](out, idx, output_size=x.shape, **kw)
    assert restored.shape == x.shape
    flat_x = x.reshape(x.shape[:2] + (-1,))
    flat_r = restored.reshape(flat_x.shape)
    flat_idx = idx.reshape(idx.shape[:2] + (-1,))
    # every max is back at its place, with its value; everything else is zero
    np.testing.assert_array_equal(np.take_along_axis(flat_r, flat_idx, axis=2),
                                  np.take_along_axis(flat_x, flat_idx, axis=2))
    mask = np.zeros(flat_x.shape, bool)
    np.put_along_axis(mask, flat_idx, True, axis=2)
    np.testing.assert_array_equal(flat_r[~mask], 0)
    np.testing.assert_array_equal(restored, ref.max_unpool_nd(out, idx, x.shape[2:]))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_unpool_matches_torch_and_exchanges_indices(nd, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rand(shape_of(nd, (7,) * nd), dtype, seed=6)
    out, idx = MAX_POOL[nd](x, 3, 2, 1, return_indices=True)
    t_out, t_idx = getattr(F, f"max_pool{nd}d")(torch.from_numpy(x), 3, 2, 1,
                                                return_indices=True)
    unpool_t = getattr(F, f"max_unpool{nd}d")
    want = unpool_t(t_out, t_idx, 3, 2, 1, output_size=x.shape[2:]).numpy()
    # fastconv's indices into torch, and torch's into fastconv
    np.testing.assert_array_equal(unpool_t(torch.from_numpy(out), torch.from_numpy(idx), 3, 2,
                                           1, output_size=x.shape[2:]).numpy(), want)
    np.testing.assert_array_equal(MAX_UNPOOL[nd](t_out.numpy(), t_idx.numpy(), 3, 2, 1,
                                                 output_size=x.shape[2:]), want)
    # default output size: (in - 1) * stride - 2 * padding + kernel
    np.testing.assert_array_equal(MAX_UNPOOL[nd](out, idx, 3, 2, 1),
                                  unpool_t(t_out, t_idx, 3, 2, 1).numpy())


def test_max_unpool_with_noncontiguous_input_and_int32_indices():
    x = rand((2, 3, 8, 8))
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    want = fastconv.max_unpool2d(out, idx, 2)
    np.testing.assert_array_equal(fastconv.max_unpool2d(noncontiguous(out), idx.astype(np.int32),
                                                        2), want)


# ---------------------------------------------------------------------------------------------
# translation invariance

@pytest.mark.parametrize("shift", [(0, 1), (1, 0), (2, 1), (1, 3), (2, 2), (-1, 2), (-2, -2)],
                         ids=lambda s: f"shift{s[0]},{s[1]}")
def test_max_pool_is_invariant_to_shifts_that_stay_inside_the_pooling_region(shift):
    """One positive spike per k x k region on a zero background. Shifting the image by less
    than the window moves each spike within its region or into a neighbour. Theory: the
    pooled value of a region is unchanged exactly where its spike stays inside it and no other
    spike enters it; where the spike leaves, the value changes (so the test can fail)."""
    k, regions = 4, 5
    rng = np.random.default_rng(7)
    offsets = rng.integers(0, k, size=(regions, regions, 2))
    values = rng.permutation(regions * regions).reshape(regions, regions) + 1.0
    size = (regions + 2) * k                     # a margin of one region on each side
    image = np.zeros((1, 1, size, size))
    for i in range(regions):
        for j in range(regions):
            oi, oj = offsets[i, j]
            image[0, 0, (i + 1) * k + oi, (j + 1) * k + oj] = values[i, j]
    shifted = np.roll(image, shift, axis=(2, 3))
    before = fastconv.max_pool2d(image, k)[0, 0, 1:-1, 1:-1]
    after = fastconv.max_pool2d(shifted, k)[0, 0, 1:-1, 1:-1]
    dest = (offsets + np.array(shift)) // k       # region offset each spike lands in
    stays = (dest == 0).all(axis=2)
    entered = np.zeros((regions, regions), bool)
    for i in range(regions):
        for j in range(regions):
            di, dj = i + dest[i, j, 0], j + dest[i, j, 1]
            if (di, dj) != (i, j) and 0 <= di < regions and 0 <= dj < regions:
                entered[di, dj] = True
    invariant = stays & ~entered
    assert invariant.any()
    np.testing.assert_array_equal(after[invariant], before[invariant])
    assert (~stays).any()
    assert (after[~stays & ~entered] == 0).all()            # the spike left, nothing came in


# ---------------------------------------------------------------------------------------------
# gradients

def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f at x (float64)."""
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


@pytest.mark.parametrize("name,spatial,kwargs", [
    ("1d-k3s1p1-overlap", (8,), dict(kernel_size=3, stride=1, padding=1)),
    ("2d-k3s2p1-ceil", (7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("2d-k3s1-overlap", (5, 6), dict(kernel_size=3, stride=1)),
    ("2d-rect-dilated", (7, 8), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                                     dilation=(1, 2))),
    ("3d-k2s1", (3, 4, 3), dict(kernel_size=2, stride=1)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_max_pool_backward_finite_differences(name, spatial, kwargs):
    nd = len(spatial)
    x = rand(shape_of(nd, spatial, n=1, c=2), seed=8)        # distinct values: differentiable
    out, idx = MAX_POOL[nd](x, return_indices=True, **kwargs)
    w = rand(out.shape, seed=9)
    grad = getattr(GRAD, f"max_pool{nd}d")(w, idx, x.shape)
    numeric = numerical_gradient(lambda v: (MAX_POOL[nd](v, **kwargs) * w).sum(), x.copy())
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


# overlapping, padded, strided past the kernel, ceil mode; and windows side by side (kernel ==
# stride 2, no padding: the backward expands each gradient row instead of gathering it)
BACKWARD_AVG_IDS = ["1d-k3s2p1", "2d-k3s2p1-ceil", "2d-k3s1p1", "2d-rect-stride>kernel",
                    "3d-k3s2p1-ceil", "2d-k2s2", "3d-k2", "1d-k2s2-wide", "3d-k2-wide",
                    "2d-k2s2-odd-wide", "1d-k2-ceil"]


@pytest.mark.parametrize("divisor", DIVISOR_MODES, ids=DIVISOR_IDS)
@pytest.mark.parametrize("name,spatial,kwargs",
                         [c for c in AVG_CASES if c[0] in BACKWARD_AVG_IDS],
                         ids=[c[0] for c in AVG_CASES if c[0] in BACKWARD_AVG_IDS])
def test_avg_pool_backward_finite_differences(name, spatial, kwargs, divisor):
    nd = len(spatial)
    x = rand(shape_of(nd, spatial, n=1, c=2), seed=10)
    out = AVG_POOL[nd](x, **kwargs, **divisor)
    w = rand(out.shape, seed=11)
    grad = getattr(GRAD, f"avg_pool{nd}d")(w, x.shape, **kwargs, **divisor)
    numeric = numerical_gradient(lambda v: (AVG_POOL[nd](v, **kwargs, **divisor) * w).sum(),
                                 x.copy())
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def _torch_grad(torch, fn, x, w):
    t = torch.from_numpy(x).requires_grad_(True)
    out = fn(t)
    out = out[0] if isinstance(out, tuple) else out
    (out * torch.from_numpy(w)).sum().backward()
    return t.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_backward_matches_torch_autograd(nd, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rand(shape_of(nd, (7,) * nd), dtype, seed=12, ties=True)    # ties: first index wins
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)

    out, idx = MAX_POOL[nd](x, 3, 1, 1, return_indices=True)       # overlapping windows
    w = rand(out.shape, dtype, seed=13)
    np.testing.assert_allclose(getattr(GRAD, f"max_pool{nd}d")(w, idx, x.shape),
                               _torch_grad(torch, lambda t: getattr(F, f"max_pool{nd}d")(
                                   t, 3, 1, 1), x, w), **tol)

    kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    out = AVG_POOL[nd](x, **kwargs)
    w = rand(out.shape, dtype, seed=14)
    np.testing.assert_allclose(getattr(GRAD, f"avg_pool{nd}d")(w, x.shape, **kwargs),
                               _torch_grad(torch, lambda t: getattr(F, f"avg_pool{nd}d")(
                                   t, **kwargs), x, w), **tol)

    size = (3, 5, 2)[:nd]
    w = rand(x.shape[:2] + size, dtype, seed=15)
    np.testing.assert_allclose(getattr(GRAD, f"adaptive_avg_pool{nd}d")(w, x.shape),
                               _torch_grad(torch, lambda t: getattr(
                                   F, f"adaptive_avg_pool{nd}d")(t, size), x, w), **tol)
    _, idx = ADAPTIVE_MAX[nd](x, size, return_indices=True)
    np.testing.assert_allclose(getattr(GRAD, f"adaptive_max_pool{nd}d")(w, idx, x.shape),
                               _torch_grad(torch, lambda t: getattr(
                                   F, f"adaptive_max_pool{nd}d")(t, size), x, w), **tol)

    x6 = x[(Ellipsis,) + (slice(0, 6),) * nd]      # k2 windows tile it: indices < 6 ** nd
    pooled, idx = MAX_POOL[nd](x6, 2, return_indices=True)
    w = rand(x6.shape, dtype, seed=16)
    t_idx = torch.from_numpy(idx)
    np.testing.assert_allclose(getattr(GRAD, f"max_unpool{nd}d")(w, idx, pooled.shape),
                               _torch_grad(torch, lambda t: getattr(F, f"max_unpool{nd}d")(
                                   t, t_idx, 2), pooled, w), **tol)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_linear_backward_passes_are_adjoint_to_forward(nd):
    """<A x, g> == <x, A^T g> for the linear operators: average pools and max-unpool."""
    x = rand(shape_of(nd, (9,) * nd), seed=17)
    cases = [
        (lambda v: AVG_POOL[nd](v, 3, 2, 1, ceil_mode=True),
         lambda g: getattr(GRAD, f"avg_pool{nd}d")(g, x.shape, 3, 2, 1, ceil_mode=True), x),
        (lambda v: ADAPTIVE_AVG[nd](v, 4),
         lambda g: getattr(GRAD, f"adaptive_avg_pool{nd}d")(g, x.shape), x),
    ]
    pooled, idx = MAX_POOL[nd](x, 3, 3, return_indices=True)
    cases.append((lambda v: MAX_UNPOOL[nd](v, idx, 3, output_size=x.shape),
                  lambda g: getattr(GRAD, f"max_unpool{nd}d")(g, idx, pooled.shape),
                  rand(pooled.shape, seed=18)))
    for forward, backward, v in cases:
        out = forward(v)
        g = rand(out.shape, seed=19)
        np.testing.assert_allclose((out * g).sum(), (v * backward(g)).sum(), rtol=1e-12)


def test_backward_is_deterministic_across_thread_counts():
    x = rand((4, 8, 30, 30), ties=True, seed=20)
    out, idx = fastconv.max_pool2d(x, 3, 1, 1, return_indices=True)
    g = rand(out.shape, seed=21)
    results = []
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            results.append((GRAD.max_pool2d(g, idx, x.shape),
                            GRAD.avg_pool2d(g, x.shape, 3, 1, 1)))
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            assert a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------------------------
# bad input raises errors that name the argument

X4 = np.zeros((1, 2, 6, 6))


@pytest.mark.parametrize("call,error,match", [
    (lambda: fastconv.max_pool2d(X4, 3, padding=2), ValueError, "padding"),
    (lambda: fastconv.avg_pool2d(X4, 2, padding=2), ValueError, "padding"),
    (lambda: fastconv.max_pool2d(X4, 7), ValueError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X4, 3, dilation=3), ValueError, "kernel_size"),
    (lambda: fastconv.max_pool1d(np.zeros((1, 1, 2)), 2, dilation=3, padding=1), ValueError,
     "padding"),
    (lambda: fastconv.max_pool2d(X4, 0), ValueError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X4, 2, stride=0), ValueError, "stride"),
    (lambda: fastconv.max_pool2d(X4, 2, padding=-1), ValueError, "padding"),
    (lambda: fastconv.max_pool2d(X4, (2, 2, 2)), TypeError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X4, 2, ceil_mode="yes"), TypeError, "ceil_mode"),
    (lambda: fastconv.max_pool2d(np.zeros((2, 6, 6)), 2), ValueError, "input"),
    (lambda: fastconv.max_pool2d(np.zeros((1, 1, 0, 6)), 2), ValueError, "input"),
    (lambda: fastconv.max_pool2d(X4.astype(complex), 2), TypeError, "input"),
    (lambda: fastconv.avg_pool2d(X4, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: fastconv.avg_pool2d(X4, 2, count_include_pad=None), TypeError,
     "count_include_pad"),
    (lambda: fastconv.adaptive_avg_pool2d(X4, 0), ValueError, "output_size"),
    (lambda: fastconv.adaptive_max_pool2d(X4, (3, 0)), ValueError, "output_size"),
    (lambda: fastconv.adaptive_avg_pool2d(X4, None), TypeError, "output_size"),
    (lambda: fastconv.max_unpool2d(X4[..., :3, :3], np.zeros((1, 2, 3, 3), np.int64), 2,
                                   output_size=(9, 9)), ValueError, "output_size"),
    (lambda: fastconv.max_unpool2d(X4[..., :3, :3], np.zeros((1, 2, 3, 2), np.int64), 2),
     ValueError, "indices"),
    (lambda: fastconv.max_unpool2d(X4[..., :3, :3], np.zeros((1, 2, 3, 3)), 2), TypeError,
     "indices"),
    (lambda: fastconv.max_unpool2d(X4[..., :3, :3], np.full((1, 2, 3, 3), 36), 2), ValueError,
     "indices"),
    (lambda: fastconv.max_unpool2d(X4[..., :3, :3], np.full((1, 2, 3, 3), -1), 2), ValueError,
     "indices"),
    (lambda: GRAD.max_pool2d(X4[..., :3, :3], np.full((1, 2, 3, 3), 36), X4.shape), ValueError,
     "indices"),
    (lambda: GRAD.max_pool2d(X4[..., :3, :3], np.zeros((1, 2, 3, 3), np.float32), X4.shape),
     TypeError, "indices"),
    (lambda: GRAD.max_pool2d(X4[..., :3, :3], np.zeros((1, 2, 3), np.int64), X4.shape),
     ValueError, "indices"),
    (lambda: GRAD.max_pool2d(X4[..., :3, :3], np.zeros((1, 2, 3, 3), np.int64), (1, 3, 6, 6)),
     ValueError, "grad_output"),
    (lambda: GRAD.max_pool2d(X4[..., :3, :3], np.zeros((1, 2, 3, 3), np.int64), (1, 2, 6)),
     TypeError, "input_shape"),
    (lambda: GRAD.avg_pool2d(X4[..., :2, :3], X4.shape, 2), ValueError, "grad_output"),
    (lambda: GRAD.max_unpool2d(X4, np.full((1, 2, 3, 3), 36), (1, 2, 3, 3)), ValueError,
     "indices"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bad", [4, 10 ** 12, -1, -(10 ** 12)])
def test_invalid_indices_raise_and_are_never_followed(bad, layout):
    """The scatters and gathers check each index as they read it: one outside the plane is
    skipped (nothing written or read out of bounds) and the call raises, naming the range
    that the indices span, in every layout and on both sides of the plane."""
    x = np.ones((1, 3, 2, 2))
    idx = np.zeros((1, 3, 2, 2), np.int64)
    idx[0, 1, 1, 1] = bad
    if layout == "channels_last":
        x, idx = _channels_last(x), _channels_last(idx)
    lo, hi = min(0, bad), max(0, bad)
    message = rf"indices must lie in \[0, 4\) .* got values from {lo} to {hi}"
    calls = [lambda: fastconv.max_unpool2d(x, idx, 1, output_size=(2, 2)),
             lambda: GRAD.max_pool2d(x, idx, (1, 3, 2, 2)),
             lambda: GRAD.max_unpool2d(x, idx, (1, 3, 2, 2))]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


def test_an_invalid_index_in_a_large_streamed_scatter_raises():
    """Planes past the streaming threshold go through the per-thread buffer: a bad index
    there is skipped and reported too, whichever thread meets it."""
    x = rand((4, 16, 128, 128), np.float32, seed=3)
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    idx = idx.copy()
    idx[3, 15, 63, 63] = 128 * 128
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16384\)"):
        GRAD.max_pool2d(out, idx, x.shape)
    idx[3, 15, 63, 63] = -5
    with pytest.raises(ValueError, match=r"from -5 to"):
        fastconv.max_unpool2d(out, idx, 2)


# --- outputs larger than the caches: planes built in a buffer and streamed out -----------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_scatters_stream_out_exactly_what_the_plain_loops_give(dtype):
    """Past 4 MiB of output the scatter builds each plane in a per-thread buffer and writes
    it with streaming stores; planes of an odd number of elements start off the vectors'
    alignment, so the ragged ends are exercised too."""
    x = rand((3, 16, 151, 153), dtype, seed=21)
    assert x.nbytes >= 4 << 20
    out, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    g = rand(out.shape, dtype, seed=22)
    want = np.zeros((x.shape[0] * x.shape[1], x.shape[2] * x.shape[3]))
    for plane, (gp, ip) in enumerate(zip(g.reshape(len(want), -1), idx.reshape(len(want), -1))):
        np.add.at(want[plane], ip, gp)      # overlapping windows: some inputs get two
    got = GRAD.max_pool2d(g, idx, x.shape)
    tol = 1e-12 if dtype == np.float64 else 1e-6    # a sum of two rounds once in float32
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(fastconv.max_unpool2d(out, idx, 3, 2, 1, output_size=x.shape),
                                  ref.max_unpool_nd(out, idx, x.shape[2:]))
    with fastconv.num_threads(1):
        np.testing.assert_array_equal(GRAD.max_pool2d(g, idx, x.shape), got)
