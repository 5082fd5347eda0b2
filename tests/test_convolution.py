"""conv1d/2d/3d: every algorithm against the plain float64 reference and PyTorch."""
import numpy as np
import pytest

import fastconv
from fastconv.planning import ALGORITHMS

import reference

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def random_problem(rng, nd, batch, c_in, c_out, size, kernel, groups=1, dtype=np.float64,
                   bias=True):
    x = rng.standard_normal((batch, c_in) + (size,) * nd if isinstance(size, int)
                            else (batch, c_in) + tuple(size)).astype(dtype)
    kernel = (kernel,) * nd if isinstance(kernel, int) else tuple(kernel)
    w = rng.standard_normal((c_out, c_in // groups) + kernel).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype) if bias else None
    return x, w, b


def applicable(algorithm, x, w, **kwargs):
    try:
        fastconv.planning.plan_conv(fastconv.planning.problem_from_call(x.shape, w.shape,
                                                                         **kwargs),
                                    np.float64, algorithm)
        return True
    except ValueError:
        return False


def check_all_algorithms(x, w, b, **kwargs):
    """Every algorithm that applies (and 'auto') agrees with the reference."""
    nd = w.ndim - 2
    expected = reference.conv_nd(x, w, b, **kwargs)
    tol = TOLERANCE[x.dtype.type]
    ran = []
    for algorithm in ("auto",) + ALGORITHMS:
        if algorithm != "auto" and not applicable(algorithm, x, w, **kwargs):
            continue
        got = CONV[nd](x, w, b, algorithm=algorithm, **kwargs)
        assert got.dtype == x.dtype
        assert got.shape == expected.shape, algorithm
        np.testing.assert_allclose(got, expected, err_msg=algorithm, **tol)
        ran.append(algorithm)
    assert {"auto", "direct", "im2col"} <= set(ran)
    return expected


# (nd, batch, c_in, c_out, size, kernel, kwargs): dense where bugs hide
GRID = [
    (1, 2, 3, 4, 17, 3, dict()),
    (1, 1, 4, 8, 20, 5, dict(stride=2, padding=2)),
    (1, 2, 6, 6, 33, 3, dict(padding=4, dilation=4)),
    (1, 1, 4, 4, 9, 1, dict()),
    (1, 3, 2, 5, 40, 4, dict(padding="same")),
    (2, 2, 3, 5, 9, 3, dict()),
    (2, 1, 4, 6, (11, 7), 3, dict(padding=1)),
    (2, 2, 4, 8, 12, 3, dict(stride=2, padding=1)),
    (2, 1, 3, 8, 23, 7, dict(stride=2, padding=3)),
    (2, 1, 6, 6, 10, (2, 3), dict(stride=(1, 2), padding=(0, 1), dilation=(2, 1))),
    (2, 2, 4, 4, 8, 3, dict(padding=2, dilation=2)),
    (2, 1, 8, 4, 9, 1, dict()),
    (2, 1, 8, 4, 9, 1, dict(stride=2)),
    (2, 2, 6, 6, 9, 3, dict(padding=1, groups=3)),
    (2, 1, 6, 6, 19, 3, dict(padding=1, groups=6)),            # depthwise
    (2, 1, 4, 8, 15, 3, dict(padding=1, groups=4)),            # depthwise, multiplier 2
    (2, 1, 1, 1, 40, 7, dict(padding=3)),                      # single-channel image
    (2, 3, 1, 6, 28, 5, dict()),                               # lenet
    (2, 1, 2, 3, 37, 4, dict(padding="same", dilation=3)),
    (2, 1, 3, 4, 64, 3, dict(stride=3)),
    (2, 1, 3, 4, 70, 2, dict(padding=((1, 0), (2, 3)))),       # asymmetric pairs
    (2, 1, 16, 40, 6, 3, dict(padding=1)),                     # few tiles: shared panels
    (1, 1, 8, 64, 10, 3, dict(padding=1, groups=2)),
    (3, 1, 2, 3, 6, 3, dict(padding=1)),
    (3, 1, 4, 24, 4, 3, dict(padding=1)),
    (3, 2, 3, 4, (4, 7, 9), (2, 3, 3), dict(stride=(1, 2, 2), padding=(0, 1, 1))),
    (3, 1, 4, 4, 5, 3, dict(padding=1, groups=4)),
    (3, 1, 2, 2, (5, 6, 20), (1, 2, 5), dict(dilation=(1, 2, 2), padding="same")),
]


def grid_id(case):
    nd, batch, c_in, c_out, size, kernel, kwargs = case
    extra = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{nd}d-n{batch}-{c_in}to{c_out}-s{size}-k{kernel}" + (f"-{extra}" if extra else "")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[grid_id(c) for c in GRID])
def test_every_algorithm_matches_reference(case, dtype):
    nd, batch, c_in, c_out, size, kernel, kwargs = case
    rng = np.random.default_rng(abs(hash(grid_id(case))) % 2**32)
    x, w, b = random_problem(rng, nd, batch, c_in, c_out, size, kernel,
                             kwargs.get("groups", 1), dtype)
    check_all_algorithms(x, w, b, **kwargs)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_modes(mode, nd):
    rng = np.random.default_rng(nd)
    x, w, b = random_problem(rng, nd, 2, 4, 4, 7, 3)
    check_all_algorithms(x, w, b, padding=2, padding_mode=mode)
    check_all_algorithms(x, w, b, padding="same", padding_mode=mode, dilation=2)


def test_without_bias_and_wide_rows():
    rng = np.random.default_rng(5)
    # rows wider than several vector chunks, a kernel wider than a chunk, odd widths
    x, w, _ = random_problem(rng, 2, 1, 3, 5, (5, 150), (3, 21), bias=False)
    check_all_algorithms(x, w, None, padding=(1, 10))
    x, w, _ = random_problem(rng, 1, 2, 2, 2, 301, 17, groups=2, bias=False)
    check_all_algorithms(x, w, None, padding=8, groups=2)


# The direct kernel splits each input row into its stride phases (every tap then reads
# contiguous inputs): strides 2 and 3 against dilations sharing a factor with them or not,
# a stride wider than the dilated kernel (only some phases read), a 1-wide kernel, odd and
# even paddings and widths, rows wider than four vector chunks and shorter than one.
STRIDED_ROWS = [
    ((1, 3), 2, dict(stride=(1, 2), padding=(0, 1))),
    ((3, 5), 2, dict(stride=2, padding=2)),
    ((3, 5), 145, dict(stride=(1, 2), padding=(1, 2))),
    ((3, 3), 200, dict(stride=(1, 3), padding=(1, 0))),
    ((2, 3), 31, dict(stride=(1, 2), dilation=(1, 2), padding=(0, 3))),
    ((2, 3), 31, dict(stride=(1, 2), dilation=(1, 3), padding=(0, 2))),
    ((2, 4), 40, dict(stride=(2, 3), dilation=(1, 2))),
    ((3, 2), 29, dict(stride=(1, 5), padding=(1, 4))),
    ((1, 1), 33, dict(stride=(1, 2))),
    ((7, 7), 133, dict(stride=2, padding=3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel, width, kwargs", STRIDED_ROWS,
                         ids=[f"k{k}-w{w}-" + ",".join(f"{a}={v}" for a, v in kw.items())
                              for k, w, kw in STRIDED_ROWS])
def test_strided_rows_every_algorithm(kernel, width, kwargs, dtype):
    rng = np.random.default_rng(width)
    for c_in, c_out, groups in ((4, 4, 4), (2, 4, 1), (3, 6, 3)):
        x, w, b = random_problem(rng, 2, 2, c_in, c_out, (9, width), kernel, groups, dtype)
        check_all_algorithms(x, w, b, groups=groups, **kwargs)
        # a sliced input: its rows are not contiguous in memory
        check_all_algorithms(x[:, :, ::-1, 1:], w, b, groups=groups, **kwargs)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "fortran", "negative"])
def test_non_contiguous_inputs(layout):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((3, 8, 12, 14))
    views = {
        "transposed": base.transpose(0, 1, 3, 2),
        "sliced": base[::2, ::2, 1:, ::2],
        "fortran": np.asfortranarray(base),
        "negative": base[:, :, ::-1, ::-1],
    }
    x = views[layout]
    w = rng.standard_normal((6, x.shape[1], 3, 3))[:, :, ::-1]
    b = rng.standard_normal(12)[::2]
    assert not (x.flags.c_contiguous and w.flags.c_contiguous and b.flags.c_contiguous)
    check_all_algorithms(x, w, b, padding=1)


def test_batch_of_zero_gives_empty_output():
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    assert fastconv.conv2d(x, w, padding=1).shape == (0, 4, 8, 8)


@pytest.mark.parametrize("dtypes, expected", [
    ((np.float32, np.float32), np.float32),
    ((np.float64, np.float32), np.float64),
    ((np.int32, np.int64), np.float64),
    ((np.uint8, np.float32), np.float32),
    ((np.float16, np.float16), np.float32),
    ((np.bool_, np.float64), np.float64),
])
def test_dtype_promotion(dtypes, expected):
    x = (np.arange(2 * 3 * 6 * 6) % 5).reshape(2, 3, 6, 6).astype(dtypes[0])
    w = (np.arange(4 * 3 * 3 * 3) % 3).reshape(4, 3, 3, 3).astype(dtypes[1])
    got = fastconv.conv2d(x, w)
    assert got.dtype == expected
    np.testing.assert_allclose(got, reference.conv_nd(x, w), rtol=1e-5)


def test_out_argument_is_written_and_returned():
    rng = np.random.default_rng(1)
    x, w, b = random_problem(rng, 2, 2, 3, 4, 8, 3, dtype=np.float32)
    out = np.full((2, 4, 6, 6), np.nan, np.float32)
    result = fastconv.conv2d(x, w, b, out=out)
    assert result is out
    np.testing.assert_allclose(out, reference.conv_nd(x, w, b), rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(2)
    x, w, b = random_problem(rng, 2, 3, 16, 16, 20, 3, dtype=np.float32)
    results = []
    for n in (1, 2, 3):
        with fastconv.num_threads(n):
            results.append([fastconv.conv2d(x, w, b, padding=1, algorithm=a)
                            for a in ("direct", "im2col")])
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


def test_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    cases = [
        (2, dict(stride=2, padding=1, dilation=1, groups=2), (2, 4, 15, 13), (6, 2, 3, 3)),
        (1, dict(stride=1, padding=4, dilation=4, groups=1), (3, 5, 40), (7, 5, 3)),
        (3, dict(stride=(1, 2, 1), padding=1, dilation=(2, 1, 1), groups=1),
         (1, 3, 7, 8, 9), (4, 3, 3, 3, 3)),
        (2, dict(stride=1, padding=1, dilation=1, groups=8), (2, 8, 12, 12), (8, 1, 3, 3)),
    ]
    for nd, kwargs, x_shape, w_shape in cases:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            b = rng.standard_normal(w_shape[0]).astype(dtype)
            fn = getattr(torch.nn.functional, f"conv{nd}d")
            want = fn(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                      **kwargs).numpy()
            for algorithm in ("direct", "im2col"):
                got = CONV[nd](x, w, b, algorithm=algorithm, **kwargs)
                np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


def test_padding_modes_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 10))
    w = rng.standard_normal((4, 3, 3, 3))
    for mode in ("zeros", "reflect", "replicate", "circular"):
        layer = torch.nn.Conv2d(3, 4, 3, padding=2, padding_mode=mode, bias=False,
                                dtype=torch.float64)
        layer.weight.data = torch.from_numpy(w)
        want = layer(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(fastconv.conv2d(x, w, padding=2, padding_mode=mode), want,
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("positions, tile_panels, runs, threads, expected", [
    (3136, 5, 1, 2, 4),    # 56x56: tiles of 5 leave one thread 35 panels, the other 30.3
    (784, 5, 1, 2, 4),     # 28x28: 5+5 against 5+1.3
    (3136, 5, 8, 2, 5),    # eight images: the scraps spread out, the big tiles stay
    (3136, 5, 4096, 2, 5),  # thousands of items: left as sized, without simulating them
    (3136, 5, 1, 1, 5),    # one thread: nothing to balance
    (96, 2, 1, 2, 1),      # one tile of two panels would leave a thread idle
])
def test_the_packed_tiles_are_sized_so_that_the_threads_finish_together(
        positions, tile_panels, runs, threads, expected):
    """A call's last tile is short; the packed algorithm shrinks its tiles (to no less than
    half) where that evens out the threads' shares of position panels."""
    from fastconv._plan import tiling
    got = tiling.balanced_tile_panels(positions, 48, tile_panels, runs, 6, 6, threads)
    assert got == expected
    assert tile_panels // 2 <= got <= tile_panels

    def longest_share(panels):
        tiles = [min(panels * 48, positions - p) / 48 for p in range(0, positions, panels * 48)]
        return tiling.dynamic_makespan(tiles * runs, threads)
    assert longest_share(got) <= longest_share(tile_panels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [0, 1], ids=["wide-tile", "narrow-tile"])
def test_both_register_tile_shapes_of_the_packed_kernel(shape, dtype):
    """The packed algorithm picks a register-tile shape per call; each must be exact."""
    from fastconv._kernels import conv_packed
    from fastconv._plan.tiling import packed_partition
    from fastconv.planning import ConvProblem, Kernel
    rng = np.random.default_rng(11)
    for c_in, c_out, size, groups in [(6, 20, (7, 9), 1), (8, 26, (8, 8), 2), (3, 13, (5, 50), 1)]:
        x = rng.standard_normal((2, c_in, *size)).astype(dtype)
        w = rng.standard_normal((c_out, c_in // groups, 3, 3)).astype(dtype)
        b = rng.standard_normal(c_out).astype(dtype)
        want = reference.conv_nd(x, w, b, padding=1, groups=groups)
        problem = ConvProblem(2, c_in, c_out, groups, size, (3, 3), (1, 1), ((1, 1), (1, 1)),
                              (1, 1))
        mr, nr = conv_packed.tile_size(dtype == np.float64, shape)
        band, channel_panels = packed_partition(problem, np.dtype(dtype).itemsize, mr, nr, 2)
        out = np.empty(want.shape, dtype)
        conv_packed.conv_forward(Kernel.CONV_PACKED_SEGMENTS, x[:, :, None], w[:, :, None], b,
                                 out[:, :, None], (1, 1, 1), (0, 1, 1), (1, 1, 1), groups,
                                 band, channel_panels, shape, 2)
        np.testing.assert_allclose(out, want, **TOLERANCE[dtype])
