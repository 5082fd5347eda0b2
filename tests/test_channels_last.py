"""Channels-last memory format (PyTorch's ``channels_last``): an (N, C, H, W) array whose memory
is that of the (N, H, W, C) array ``x_nhwc.transpose(0, 3, 1, 2)``. Convolutions read it in
place (the channels-last kernels) and every 2-d operator returns its output in the same
memory format, with the values of the channels-first call; fastconv.torch keeps the format of
its input through the forward and backward passes."""
import numpy as np
import pytest

import fastconv
import fastconv.grad
import reference
from fastconv.planning import as_channels_last, is_channels_last

rng = np.random.default_rng(31)


def channels_last(shape, dtype=np.float32):
    """A random (N, C, H, W) array with channels-last memory."""
    n, c, h, w = shape
    return rng.standard_normal((n, h, w, c)).astype(dtype).transpose(0, 3, 1, 2)


CONV_CASES = [  # x shape, weight shape, kwargs
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(padding=1)),
    ((2, 8, 10, 7), (6, 8, 3, 3), dict(stride=2, padding=1)),
    ((2, 5, 6, 6), (7, 5, 1, 1), {}),                                # 1x1: no patch copy
    ((1, 5, 5, 7), (9, 5, 1, 1), {}),            # the pixels end inside a register tile
    ((1, 300, 3, 5), (20, 300, 1, 1), {}),       # K in several blocks
    # the mixed tile (17-24 columns in float32, 9-12 in float64): whole and part tiles, in
    # place and packed
    ((2, 150, 6, 7), (24, 150, 1, 1), {}),
    ((1, 5, 7, 9), (22, 5, 3, 3), dict(stride=2, padding=1)),
    ((2, 6, 8, 9), (11, 6, 3, 3), dict(padding=1)),
    ((2, 5, 8, 8), (7, 5, 1, 1), dict(stride=2)),
    ((1, 6, 9, 9), (6, 6, 3, 3), dict(padding=2, dilation=2)),
    ((2, 4, 7, 9), (5, 4, 2, 4), dict(padding=((1, 0), (2, 1)))),
    ((1, 3, 12, 12), (8, 3, 7, 7), dict(stride=2, padding=3)),       # a stem
    ((1, 4, 6, 6), (3, 4, 3, 3), dict(padding="same")),
    ((1, 16, 7, 7), (16, 1, 3, 3), dict(padding=1, groups=16)),      # depthwise
    ((2, 12, 9, 9), (12, 1, 5, 5), dict(stride=2, padding=2, groups=12)),
    ((1, 6, 9, 9), (6, 1, 3, 3), dict(padding=2, dilation=2, groups=6)),
    # depthwise: whole, part and no vectors of channels; interior runs of odd and no length
    ((2, 43, 9, 10), (43, 1, 3, 3), dict(padding=1, groups=43)),
    ((1, 8, 5, 2), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ((1, 36, 4, 3), (36, 1, 3, 3), dict(padding=(1, 3), stride=(1, 2), groups=36)),
    # four pixels at a time: 2 and 1 vectors x 4, 4 vectors as two pairs, scalars; a kernel
    # of more taps than the four-pixel gather takes (9x9)
    ((2, 32, 6, 13), (32, 1, 3, 3), dict(padding=1, groups=32)),
    ((1, 96, 5, 12), (96, 1, 5, 5), dict(padding=2, groups=96)),
    ((1, 200, 4, 11), (200, 1, 3, 3), dict(padding=1, groups=200)),
    ((1, 24, 12, 14), (24, 1, 9, 9), dict(padding=4, groups=24)),
    # stride 1: a row's interior slides 8 and 4 pixels at a time over 3- and 5-wide kernels
    # (each input vector loaded once per kernel row), channels past the last vector scalar
    ((2, 36, 5, 8), (36, 1, 3, 3), dict(padding=1, groups=36)),
    ((1, 21, 6, 9), (21, 1, 5, 5), dict(padding=2, groups=21)),
    ((1, 17, 3, 30), (17, 1, 3, 5), dict(padding=(1, 2), groups=17)),
    ((2, 4, 8, 8), (6, 2, 3, 3), dict(padding=1, groups=2)),         # channels-first kernels
    ((1, 4, 8, 8), (4, 4, 3, 3), dict(padding=1, padding_mode="reflect")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONV_CASES,
                         ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_of_a_channels_last_input_is_channels_last_and_correct(x_shape, w_shape,
                                                                        kwargs, dtype):
    x = channels_last(x_shape, dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    got = fastconv.conv2d(x, w, b, **kwargs)
    assert is_channels_last(got) and got.dtype == dtype
    want = reference.conv_nd(x.astype(np.float64), w, b, **kwargs)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # the same values as the channels-first call, and as any forced (channels-first) algorithm
    np.testing.assert_allclose(got, fastconv.conv2d(np.ascontiguousarray(x), w, b, **kwargs),
                               rtol=tol, atol=tol)
    forced = fastconv.conv2d(x, w, b, **kwargs, algorithm="im2col")
    assert is_channels_last(forced)
    np.testing.assert_allclose(forced, got, rtol=tol, atol=tol)


def test_the_plan_says_which_channels_last_kernel_runs():
    x = channels_last((2, 16, 8, 8))
    plan = fastconv.choose_algorithm(x, np.ones((32, 16, 3, 3), np.float32), padding=1)
    assert plan.algorithm == "channels_last_gemm" and "channels-last" in plan.explain()
    plan = fastconv.choose_algorithm(x, np.ones((16, 1, 3, 3), np.float32), groups=16)
    assert plan.algorithm == "channels_last_depthwise"
    # grouped but not depthwise, or a channels-first input: the usual plan
    assert fastconv.choose_algorithm(x, np.ones((16, 8, 3, 3), np.float32), groups=2
                                     ).algorithm in fastconv.planning.ALGORITHMS
    assert fastconv.choose_algorithm(np.ascontiguousarray(x), np.ones((32, 16, 3, 3),
                                                                      np.float32)
                                     ).algorithm in fastconv.planning.ALGORITHMS


def test_the_gemm_kernel_reads_the_input_in_place(monkeypatch):
    from fastconv._kernels import conv_channels_last
    seen = []
    real = conv_channels_last.conv_gemm_nhwc

    def spy(x, *args):
        seen.append(np.asarray(x).__array_interface__["data"][0])
        return real(x, *args)
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", spy)
    x = channels_last((2, 8, 6, 6))
    fastconv.conv2d(x, np.ones((4, 8, 1, 1), np.float32))
    assert seen == [x.__array_interface__["data"][0]]


# Wide 3x3 stride-1 layers run Winograd on the channels-last arrays themselves: the same
# arithmetic in the same order as the channels-first call, so the same bits.
WINOGRAD_CASES = [  # x shape, weight shape, kwargs
    ((2, 32, 16, 16), (32, 32, 3, 3), dict(padding=1)),
    ((2, 40, 13, 11), (48, 40, 3, 3), dict(padding=1)),                # tiles cut by borders
    ((3, 33, 9, 7), (35, 33, 3, 3), dict(padding=((2, 0), (1, 3)))),   # asymmetric padding
    ((2, 64, 10, 10), (64, 32, 3, 3), dict(padding="same", groups=2)),
    ((9, 32, 12, 12), (32, 32, 3, 3), {}),                            # many super-blocks
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", WINOGRAD_CASES,
                         ids=[str(i) for i in range(len(WINOGRAD_CASES))])
def test_wide_3x3_layers_run_winograd_on_the_channels_last_arrays(x_shape, w_shape, kwargs,
                                                                   dtype):
    x = channels_last(x_shape, dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    groups = kwargs.get("groups", 1)
    assert fastconv.choose_algorithm(x, w, b, **kwargs).algorithm == "channels_last_winograd"
    got = fastconv.conv2d(x, w, b, **kwargs)
    assert is_channels_last(got) and got.dtype == dtype
    channels_first = fastconv.conv2d(np.ascontiguousarray(x), w, b, **kwargs,
                                     algorithm="winograd")
    np.testing.assert_array_equal(got, channels_first)
    tol = 2e-3 if dtype == np.float32 else 1e-9     # Winograd's bound: test_winograd.py
    want = reference.conv_nd(x.astype(np.float64), w, b, **kwargs)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * w_shape[1] * 9 / groups)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 3, 17, 15), (32, 3, 3, 3), dict(stride=2, padding=1)),     # a stem
    ((1, 5, 9, 11), (7, 5, 1, 1), {}),
    ((1, 40, 8, 9), (20, 40, 3, 2), dict(padding=(2, 0), dilation=(2, 1))),
    ((1, 300, 4, 5), (9, 300, 3, 3), {}),                          # K in blocks
])
def test_channels_last_gemm_reads_interior_pixels_in_place_with_the_packed_sums(
        x_shape, w_shape, kwargs, monkeypatch):
    """Panels of pixels whose taps lie inside the input are read where they lie; the others
    are packed with zeros for the padding: the same sums, bit for bit."""
    import fastconv._ops.conv as conv
    x = channels_last(x_shape)
    w = rng.standard_normal(w_shape).astype(np.float32)
    assert fastconv.choose_algorithm(x, w, **kwargs).algorithm == "channels_last_gemm"
    got = fastconv.conv2d(x, w, **kwargs)
    monkeypatch.setattr(conv, "_NHWC_READ_IN_PLACE", False)
    np.testing.assert_array_equal(got, fastconv.conv2d(x, w, **kwargs))
    np.testing.assert_allclose(got, reference.conv_nd(x.astype(np.float64), w, **kwargs),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 3, 17, 15), (32, 3, 3, 3), dict(stride=2, padding=1)),     # a stem
    ((1, 5, 9, 11), (7, 5, 1, 1), {}),
    ((2, 16, 5, 7), (100, 16, 1, 1), {}),                          # several column panels
    ((1, 300, 4, 5), (9, 300, 3, 3), {}),                          # K in blocks
])
def test_channels_last_gemm_streams_its_output_with_the_same_bits(x_shape, w_shape, kwargs,
                                                                   dtype, monkeypatch):
    """A large (or cold) output goes through a per-thread tile and out by streaming stores:
    the same sums, bit for bit, bias included."""
    import fastconv._ops.conv as conv
    x = channels_last(x_shape, dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    plain = fastconv.conv2d(x, w, b, **kwargs)
    streamed = []
    real = conv._streams
    monkeypatch.setattr(conv, "_streams", lambda out: streamed.append(True) or True)
    got = fastconv.conv2d(x, w, b, **kwargs)
    assert streamed and is_channels_last(got)
    np.testing.assert_array_equal(got, plain)
    monkeypatch.setattr(conv, "_streams", real)
    monkeypatch.setattr(conv, "_NHWC_STREAM_BYTES", 0)       # the rule itself
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **kwargs), plain)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 64, 7, 7), (64, 64, 3, 3), dict(padding=1)),     # a batch-1 layer on a small plane
    ((1, 300, 4, 5), (100, 300, 3, 3), {}),               # K in blocks, a part column panel
    ((1, 5, 9, 11), (7, 5, 1, 1), {}),                    # 1x1: the input read in place
    ((2, 16, 5, 7), (40, 16, 1, 1), dict(stride=2)),
    ((1, 3, 17, 15), (32, 3, 7, 7), dict(stride=2, padding=3)),    # a stem
])
def test_a_small_call_packs_a_channels_last_weight_as_it_goes_with_the_same_bits(
        x_shape, w_shape, kwargs, dtype, monkeypatch):
    """A call of one or two tiles of pixels transposes a channels-last weight's rows into the
    GEMM's panels block by block as it uses them (nothing kept between calls): the same sums
    in the same order as with the kept panels, so the same bits."""
    import fastconv._ops.conv as conv
    from fastconv._kernels import conv_channels_last
    from fastconv._runtime import weight_cache
    x = channels_last(x_shape, dtype)
    w = channels_last(w_shape, dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    assert fastconv.choose_algorithm(x, w, b, **kwargs).algorithm == "channels_last_gemm"
    weight_rows = []
    real = conv_channels_last.conv_gemm_nhwc

    def spy(*args):
        weight_rows.append(args[-1])
        return real(*args)
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", spy)
    weight_cache.forget_transforms()
    got = fastconv.conv2d(x, w, b, **kwargs)
    assert weight_rows == [True] and not weight_cache._entries
    assert is_channels_last(got)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, reference.conv_nd(x.astype(np.float64), w, b, **kwargs),
                               rtol=tol, atol=tol)
    monkeypatch.setattr(conv, "_NHWC_PACK_PER_CALL_TILES", 0)     # the kept panels instead
    kept = fastconv.conv2d(x, w, b, **kwargs)
    assert weight_rows == [True, False] and weight_cache._entries
    np.testing.assert_array_equal(got, kept)
    # a channels-first weight has no such rows (but a 1x1 one, the same memory either way):
    # its panels are kept
    monkeypatch.setattr(conv, "_NHWC_PACK_PER_CALL_TILES", 2)
    np.testing.assert_array_equal(fastconv.conv2d(x, np.ascontiguousarray(w), b, **kwargs),
                                  kept)
    assert weight_rows[-1] is (w_shape[2:] == (1, 1))
    weight_cache.forget_transforms()


def test_a_call_of_more_output_channels_than_pixels_is_one_tile_with_the_same_bits(
        monkeypatch):
    """A batch-1 layer on a small plane reads more weight than patches: one tile of every
    pixel (so the weight is read once, and packed as it goes), its output channels split
    into two chunks a thread; tiles of the usual size give the same bits."""
    import fastconv._ops.conv as conv
    from fastconv.planning import problem_from_call
    tiling = conv.nhwc_gemm_tiling
    one = tiling(problem_from_call((1, 512, 7, 7), (512, 512, 3, 3), padding=1), "float32", 2)
    _, mr, _ = conv.nhwc_tile_shape(512, "float32")
    assert one[4] == 1 and one[1] * mr >= 49 and one[2] == 4
    assert tiling(problem_from_call((8, 512, 7, 7), (512, 512, 3, 3), padding=1),
                  "float32", 2)[4] > 1                   # 392 pixels: more than channels
    x = channels_last((1, 40, 9, 7))
    w = channels_last((96, 40, 3, 3))
    got = fastconv.conv2d(x, w, padding=1)              # 63 pixels, 96 channels
    monkeypatch.setattr(conv, "_NHWC_TILE_PANELS", (2, 2))
    conv._nhwc_gemm_tiling.cache_clear()
    assert tiling(problem_from_call(x.shape, w.shape, padding=1), "float32", 2)[4] > 1
    np.testing.assert_array_equal(fastconv.conv2d(x, w, padding=1), got)
    conv._nhwc_gemm_tiling.cache_clear()
    np.testing.assert_allclose(got, reference.conv_nd(x.astype(np.float64), w, padding=1),
                               rtol=1e-4, atol=1e-4)


def test_outputs_stream_when_large_or_cold(monkeypatch):
    import fastconv._ops.conv as conv
    from fastconv._runtime import memory
    monkeypatch.setattr(conv, "_NHWC_STREAM_BYTES", 1 << 20)
    monkeypatch.setattr(conv, "_NHWC_STREAM_MIN_BYTES", 1 << 16)
    assert conv._streams(np.empty(1 << 18, np.float32))              # 1 MiB: large
    assert not conv._streams(np.empty(1 << 14, np.float32))          # small, not the cache's
    monkeypatch.setattr(memory, "COLD_AFTER_BYTES", 0)               # every cached block cold
    mid = memory.pooled(np.empty)(1 << 17, np.float32)               # 512 KiB
    assert memory.is_cold(mid) and conv._streams(mid)
    monkeypatch.setattr(memory, "COLD_AFTER_BYTES", 1 << 64)       # none
    assert not conv._streams(mid)


def test_precision_exact_keeps_channels_last_layers_off_winograd():
    x = channels_last((2, 32, 16, 16))
    w = np.ones((32, 32, 3, 3), np.float32)
    with fastconv.precision("exact"):
        assert fastconv.choose_algorithm(x, w, padding=1).algorithm == "channels_last_gemm"
    # too few channels for Winograd to pay: the GEMM kernel
    assert fastconv.choose_algorithm(channels_last((2, 8, 16, 16)), w[:, :8], padding=1
                                     ).algorithm == "channels_last_gemm"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_last_gemm_writes_every_stride_th_pixel_of_a_larger_array(dtype):
    """The kernel behind the stride phases: an output view of every other pixel (channels
    contiguous) gets the dense output's values, and nothing between them is touched."""
    from fastconv._kernels import conv_channels_last
    from fastconv._ops.conv import nhwc_weight_panels, nhwc_tile_shape
    x = np.ascontiguousarray(channels_last((2, 70, 9, 8), dtype).transpose(0, 2, 3, 1))
    w = rng.standard_normal((50, 70, 2, 3)).astype(dtype)
    shape, _, nr = nhwc_tile_shape(50, dtype)
    panels = nhwc_weight_panels(w, nr, dtype)
    bias = rng.standard_normal(50).astype(dtype)
    geometry = ((2, 3), (1, 1), (1, 1), (1, 1))
    dense = np.empty((2, 10, 8, 50), dtype)
    conv_channels_last.conv_gemm_nhwc(x, panels, bias, dense, *geometry, shape, 2, 2, True, 2)
    big = np.full((2, 21, 16, 50), 7.0, dtype)
    conv_channels_last.conv_gemm_nhwc(x, panels, bias, big[:, 1::2, ::2], *geometry, shape, 2,
                                      2, True, 2)
    np.testing.assert_array_equal(big[:, 1::2, ::2], dense)
    untouched = np.ones(big.shape[:3], bool)
    untouched[:, 1::2, ::2] = False
    assert (big[untouched] == 7.0).all()
    every_other_channel = np.empty((2, 10, 8, 100), dtype)[..., ::2]
    with pytest.raises(ValueError, match="channels must be contiguous"):
        conv_channels_last.conv_gemm_nhwc(x, panels, bias, every_other_channel, *geometry,
                                          shape, 2, 2, True, 2)


def test_channels_last_winograd_reads_and_writes_in_place(monkeypatch):
    from fastconv._kernels import conv_winograd
    seen = []
    real = conv_winograd.conv_forward

    def spy(kernel, x, w, b, out, *args):
        seen.append((np.asarray(x).__array_interface__["data"][0],
                     np.asarray(out).__array_interface__["data"][0]))
        return real(kernel, x, w, b, out, *args)
    monkeypatch.setattr(conv_winograd, "conv_forward", spy)
    x = channels_last((2, 32, 12, 12))
    y = fastconv.conv2d(x, rng.standard_normal((32, 32, 3, 3)).astype(np.float32), padding=1)
    assert seen == [(x.__array_interface__["data"][0], y.__array_interface__["data"][0])]


def test_a_channels_last_weight_is_transformed_once_where_it_lies():
    """An inference loop with a channels-last layer's (channels-last) weight transforms it
    on the first call only, remembered under the weight itself, not a fresh copy's address;
    changed in place (a training step), it is transformed again into the same buffers."""
    from fastconv._runtime import weight_cache
    weight_cache.forget_transforms()
    x = channels_last((2, 32, 10, 10))      # 18 tiles: auto runs Winograd
    w = channels_last((32, 32, 3, 3))
    for step in range(3):
        got = fastconv.conv2d(x, w, padding=1)
        np.testing.assert_array_equal(
            got, fastconv.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), padding=1,
                                 algorithm="winograd"))
        winograd = [entry for key, entry in weight_cache._entries.items()
                    if key[0][0] == "winograd" and key[1] == w.__array_interface__["data"][0]]
        assert len(winograd) == 1
        if step:
            assert winograd[0][1] is first_buffer
        first_buffer = winograd[0][1]
        w[0, 0, 0, 0] += 1    # in place
    weight_cache.forget_transforms()


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_channels_last_winograd_gives_the_direct_sums_answer_on_inf_and_nan(value):
    x = channels_last((1, 32, 12, 12))
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    x[0, 3, 5, 6] = value
    got = fastconv.conv2d(x, w, padding=1)
    assert is_channels_last(got)
    want = fastconv.conv2d(np.ascontiguousarray(x), w, padding=1, algorithm="direct")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)   # nan where nan, inf at inf


@pytest.mark.parametrize("per_thread_blocks", [False, True])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_winograd_kernel_reads_and_writes_any_strides(dims, per_thread_blocks):
    """The kernel itself on views of every layout: channels-last, and arrays with a step
    along every axis; the same bits as on C-contiguous copies, with either work split."""
    from fastconv._kernels import conv_winograd
    from fastconv._plan.dispatch import Kernel
    kernel = {1: (1, 1, 3), 2: (1, 3, 3), 3: (2, 3, 3)}[dims]
    size = {1: (1, 1, 21), 2: (1, 9, 11), 3: (4, 7, 6)}[dims]
    pad = {1: (0, 0, 2), 2: (0, 1, 0), 3: (1, 1, 1)}[dims]
    dilation = (1, 1, 2) if dims == 1 else (1, 1, 1)
    out_size = tuple(n + 2 * p - d * (k - 1) for n, p, k, d in zip(size, pad, kernel, dilation))
    c_in, c_out, groups, batch = 6, 8, 2, 3
    w = rng.standard_normal((c_out, c_in // groups) + kernel)
    b = rng.standard_normal(c_out)
    u = np.empty(conv_winograd.weights_size(c_out, c_in // groups, groups, kernel))
    conv_winograd.transform_weights(w, groups, u, 1)
    x_dense = rng.standard_normal((batch, c_in) + size)
    want = np.empty((batch, c_out) + out_size)
    args = ((1, 1, 1), pad, dilation, groups, 2, per_thread_blocks, 2)
    conv_winograd.conv_forward(Kernel.CONV_WINOGRAD, x_dense, w, b, want, *args, u)
    channels_last_in = np.ascontiguousarray(np.moveaxis(x_dense, 1, -1))
    views = [np.moveaxis(channels_last_in, -1, 1),                   # channels-last
             np.pad(x_dense, [(0, 1)] * 5)[:-1, :-1, :-1, :-1, :-1],  # rows with a gap
             np.repeat(x_dense, 2, axis=4)[..., ::2]]                # a step along W
    for x in views:
        for out in (np.empty((batch, c_out) + out_size),
                    np.moveaxis(np.empty((batch,) + out_size + (c_out,)), -1, 1)):
            conv_winograd.conv_forward(Kernel.CONV_WINOGRAD, x, w, b, out, *args, u)
            np.testing.assert_array_equal(out, want)
    # an output whose images share memory (stride 0) would be written by racing threads
    one_image = np.empty(want.shape[1:])
    shared = np.lib.stride_tricks.as_strided(one_image, want.shape, (0,) + one_image.strides)
    with pytest.raises(ValueError, match="overlap"):
        conv_winograd.conv_forward(Kernel.CONV_WINOGRAD, x_dense, w, b, shared, *args, u)


# The input gradient of a stride-1 layer is a forward convolution of the output gradient
# (reversed, transposed weights); a strided layer's, one such convolution per stride phase
# (the input pixels a given subset of the taps reaches), each written straight to every
# stride-th pixel: all computed on the channels-last kernels where the arrays lie.
INPUT_GRAD_CASES = [  # input shape, weight shape, kwargs
    ((2, 8, 9, 7), (5, 8, 1, 1), {}),
    ((2, 6, 10, 9), (7, 6, 3, 3), dict(padding=1)),
    ((1, 6, 11, 9), (4, 6, 3, 3), dict(padding=((2, 1), (0, 2)), dilation=(2, 1))),
    ((2, 5, 8, 8), (3, 5, 2, 4), {}),
    ((2, 32, 12, 12), (48, 32, 3, 3), dict(padding=1)),            # Winograd
    ((2, 8, 9, 7), (6, 8, 1, 1), dict(stride=2)),                  # every other pixel
    ((1, 5, 10, 11), (4, 5, 1, 1), dict(stride=(3, 2))),
    ((2, 6, 11, 10), (5, 6, 3, 3), dict(stride=2, padding=1)),     # ResNet's strided 3x3
    ((2, 6, 11, 10), (5, 6, 3, 3), dict(stride=2)),
    ((2, 3, 15, 14), (8, 3, 3, 3), dict(stride=2, padding=1)),     # MobileNet's stem
    ((1, 4, 10, 9), (5, 4, 3, 2), dict(stride=(2, 3), padding=(1, 0))),
    ((1, 4, 10, 9), (5, 4, 3, 3), dict(stride=(1, 2), padding=(1, 0))),
    ((2, 5, 11, 13), (3, 5, 2, 2), dict(stride=3)),                # phases no tap reaches
    ((1, 100, 7, 7), (9, 100, 3, 3), dict(stride=2, padding=1)),   # several column panels
    ((2, 24, 9, 7), (40, 24, 1, 1), {}),                           # the mixed tile
    ((2, 10, 9, 7), (6, 10, 3, 3), dict(padding=1)),
    ((2, 20, 11, 10), (5, 20, 3, 3), dict(stride=2, padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", INPUT_GRAD_CASES,
                         ids=[str(i) for i in range(len(INPUT_GRAD_CASES))])
def test_input_gradients_run_on_the_channels_last_gradient(x_shape, w_shape, kwargs, dtype,
                                                           monkeypatch):
    from fastconv._kernels import conv_channels_last, conv_winograd
    w = rng.standard_normal(w_shape).astype(dtype)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape, dtype), w, **kwargs).shape, dtype)
    seen = []
    for module, name in ((conv_channels_last, "conv_gemm_nhwc"),
                         (conv_winograd, "conv_forward")):
        real = getattr(module, name)

        def spy(*args, real=real):
            seen.extend(np.asarray(a).__array_interface__["data"][0] for a in args
                        if isinstance(a, np.ndarray) and a.ndim >= 4)
            return real(*args)
        monkeypatch.setattr(module, name, spy)
    got = fastconv.grad.conv2d_input(x_shape, w, g, **kwargs)
    assert g.__array_interface__["data"][0] in seen          # read where it lies
    start = got.__array_interface__["data"][0]               # written where it lies
    assert any(start <= address < start + got.nbytes for address in seen)
    assert is_channels_last(got) and got.dtype == dtype
    want = reference.conv_input_grad(x_shape, w.astype(np.float64), g.astype(np.float64),
                                     **kwargs)
    tol = 2e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * w_shape[0] * 9)


@pytest.mark.parametrize("w_shape, kwargs", [
    ((8, 3, 7, 7), dict(stride=2, padding=3)),      # ResNet's stem
    ((6, 4, 5, 5), dict(stride=2, padding=2)),
])
def test_few_channels_under_a_large_strided_kernel_take_col2im_and_stay_channels_last(
        w_shape, kwargs, monkeypatch):
    """A strided kernel of more than 9 taps over fewer than 16 input channels: the
    channels-last GEMM's columns (the input channels) would be mostly empty, so the gradient
    goes channels-first (col2im, whose rows are channels x taps) and comes back channels-last."""
    from fastconv._kernels import conv_channels_last
    x_shape = (2, w_shape[1], 15, 14)
    w = rng.standard_normal(w_shape)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape), w, **kwargs).shape, np.float64)

    def refuse(*args):
        raise AssertionError("the channels-last GEMM ran")
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", refuse)
    got = fastconv.grad.conv2d_input(x_shape, w, g, **kwargs)
    assert is_channels_last(got)
    np.testing.assert_allclose(got, reference.conv_input_grad(x_shape, w, g, **kwargs),
                               rtol=1e-9, atol=1e-9)
    plan = fastconv.planning.plan_input_grad(
        fastconv.planning.problem_from_call(x_shape, w_shape, **kwargs), "float32")
    assert plan.algorithm == "col2im"


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 64, 5, 5), (64, 64, 3, 3), dict(padding=1)),             # weights 23x the input
    ((2, 32, 6, 6), (128, 32, 3, 3), dict(stride=2, padding=1)),  # 2 images, 16x
])
def test_few_images_under_large_weights_take_col2im_and_stay_channels_last(
        x_shape, w_shape, kwargs, monkeypatch):
    """One or two images whose weights dwarf the gradients (ResNet-50's 512-channel layers
    at batch 1): packing the adjoint weight for the channels-last GEMM would cost more than
    col2im's two layout copies, so the gradient goes channels-first (the weight's transpose
    read where it lies) and comes back channels-last."""
    from fastconv._kernels import conv_channels_last, conv_winograd
    w = rng.standard_normal(w_shape).astype(np.float32)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape, np.float32), w, **kwargs).shape,
                      np.float32)

    def refuse(*args):
        raise AssertionError("a channels-last kernel ran")
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", refuse)
    monkeypatch.setattr(conv_winograd, "conv_forward", refuse)
    got = fastconv.grad.conv2d_input(x_shape, w, g, **kwargs)
    assert is_channels_last(got) and got.dtype == np.float32
    want = reference.conv_input_grad(x_shape, w.astype(np.float64), g.astype(np.float64),
                                     **kwargs)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_strided_or_grouped_input_gradients_stay_correct_in_channels_last():
    for w_shape, kwargs in (((4, 6, 3, 3), dict(stride=2, padding=1)),
                            ((4, 6, 1, 1), dict(stride=2, padding=1)),
                            ((4, 6, 3, 3), dict(stride=2, padding=1, dilation=2)),
                            ((4, 6, 2, 2), dict(stride=2, padding=(1, 0))),
                            ((6, 3, 3, 3), dict(padding=1, groups=2)),
                            ((4, 6, 3, 3), dict(padding=1, padding_mode="reflect"))):
        x_shape = (2, 6, 9, 8)
        w = rng.standard_normal(w_shape)
        g = channels_last(fastconv.conv2d(np.zeros(x_shape), w, **kwargs).shape, np.float64)
        got = fastconv.grad.conv2d_input(x_shape, w, g, **kwargs)
        assert is_channels_last(got)
        np.testing.assert_allclose(got, fastconv.grad.conv2d_input(
            x_shape, w, np.ascontiguousarray(g), **kwargs), rtol=1e-12, atol=1e-12)


# The weight gradient of a one-group layer whose input and output gradient are channels-last
# is a GEMM over the pixels of the two arrays where they lie.
WEIGHT_GRAD_CASES = [  # input shape, weight shape, kwargs
    ((2, 8, 9, 7), (5, 8, 1, 1), {}),
    ((2, 8, 10, 9), (12, 8, 1, 1), dict(stride=2)),
    ((2, 6, 10, 9), (7, 6, 3, 3), dict(padding=1)),
    ((1, 5, 11, 9), (4, 5, 3, 3), dict(padding=((2, 1), (0, 3)), dilation=(2, 1),
                                       stride=(1, 2))),
    ((2, 3, 15, 15), (16, 3, 7, 7), dict(stride=2, padding=3)),        # a stem
    ((3, 40, 12, 12), (100, 40, 3, 3), dict(padding=1)),
    ((1, 2, 3, 3), (3, 2, 2, 2), {}),                                  # four pixels
    ((2, 4, 30, 30), (50, 4, 3, 3), dict(padding=1)),                  # parts of the pixels
    ((2, 70, 8, 8), (20, 70, 3, 3), dict(padding=1)),                  # packed patches
    ((3, 80, 12, 12), (200, 80, 3, 3), dict(padding=1)),               # several blocks
    ((2, 6, 10, 9), (24, 6, 3, 3), dict(padding=1)),                   # the mixed tile
    ((2, 5, 10, 9), (11, 5, 3, 3), dict(padding=1)),
    ((2, 70, 8, 8), (24, 70, 3, 3), dict(padding=1)),
    # MobileNetV2's stem: 32 output channels, two vectors of a wider tile read in place
    ((2, 3, 15, 15), (32, 3, 3, 3), dict(stride=2, padding=1)),
    # whole vectors of channels both sides: Winograd's blocks copy whole rows
    ((2, 32, 9, 10), (48, 32, 3, 3), dict(padding=1)),
]
# (at most this many input channels: the transposed product with the patches in place)
TAPS_MAX_CHANNELS = 64


@pytest.mark.parametrize("precision", ["fast", "exact"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", WEIGHT_GRAD_CASES,
                         ids=[str(i) for i in range(len(WEIGHT_GRAD_CASES))])
def test_weight_gradients_run_on_the_channels_last_arrays(x_shape, w_shape, kwargs, dtype,
                                                          precision, monkeypatch):
    """Every channels-last weight gradient reads both operands where they lie: the GEMM over
    the pixels, the transposed one over the patches (after a padded copy of the input), or
    (precision "fast", a 3x3 stride-1 layer of 16 channels a side or more, small enough)
    Winograd's blocks."""
    from fastconv._kernels import conv_channels_last, conv_winograd
    x = channels_last(x_shape, dtype)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape, dtype), np.zeros(w_shape, dtype),
                                      **kwargs).shape, dtype)
    seen = []
    for module, name in ((conv_channels_last, "weight_grad_nhwc"),
                         (conv_channels_last, "weight_grad_nhwc_taps"),
                         (conv_channels_last, "pad_nhwc"), (conv_winograd, "weight_grad_blocks")):
        def spy(*args, real=getattr(module, name), name=name):
            xv, gv = args[1:3] if name == "weight_grad_blocks" else args[:2]
            seen.append((name, xv.__array_interface__["data"][0],
                         gv.__array_interface__["data"][0]))
            return real(*args)
        monkeypatch.setattr(module, name, spy)
    with fastconv.precision(precision):
        got = fastconv.grad.conv2d_weight(x, w_shape, g, **kwargs)
    x_at, g_at = x.__array_interface__["data"][0], g.__array_interface__["data"][0]
    blocks = (precision == "fast" and w_shape[2:] == (3, 3) and set(kwargs) == {"padding"}
              and min(w_shape[:2]) >= 16      # and its 16 products fit in 2 MiB
              and 16 * w_shape[0] * w_shape[1] * np.dtype(dtype).itemsize <= 2 << 20)
    if blocks:
        assert seen == [("weight_grad_blocks", x_at, g_at)]
    elif x_shape[1] > TAPS_MAX_CHANNELS or (w_shape[2:] == (1, 1) and not kwargs):
        assert seen == [("weight_grad_nhwc", x_at, g_at)]
    elif "padding" in kwargs:   # the input padded into a copy, then both read in place
        assert [call[:2] for call in seen] == [("pad_nhwc", x_at), ("weight_grad_nhwc_taps",
                                                                    seen[0][2])]
        assert seen[1][2] == g_at
    else:
        assert seen == [("weight_grad_nhwc_taps", x_at, g_at)]
    assert got.shape == w_shape and got.dtype == dtype
    want = reference.conv_weight_grad(x.astype(np.float64), w_shape, g.astype(np.float64),
                                      **kwargs)
    scale = np.abs(x).max() * np.abs(g).max() * g.shape[0] * g.shape[2] * g.shape[3]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("shape", [(2, 17, 33), (1, 16, 16), (3, 1, 40), (2, 50, 1),
                                   (0, 4, 4), (2, 0, 5),
                                   # bands of 4 rows past the whole tiles (12-row A panels)
                                   (2, 12, 21), (1, 5, 19), (2, 22, 9), (1, 7, 8)])
def test_layout_transposes_give_numpys_transpose(shape):
    """transpose_images turns each image's (A, B) matrix to (B, A) in tiles: whole tiles,
    ragged edges and empty arrays alike; a destination of another shape is refused."""
    from fastconv._kernels import conv_channels_last
    for dtype in (np.float32, np.float64):
        src = rng.standard_normal(shape).astype(dtype)
        dst = np.full((shape[0], shape[2], shape[1]), np.nan, dtype)
        conv_channels_last.transpose_images(src, dst, 2)
        np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))
    with pytest.raises(ValueError, match="dst must be"):
        conv_channels_last.transpose_images(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), 1)


def test_the_transposed_weight_gradient_kernel_refuses_taps_outside_its_input():
    """weight_grad_nhwc_taps reads every tap where it lies, so its input must hold them all
    (the caller pads it with pad_nhwc): a call whose taps would fall outside raises, as does
    a padded array too small for the input."""
    from fastconv._kernels import conv_channels_last
    x = np.zeros((1, 6, 6, 2), np.float32)
    g = np.zeros((1, 6, 6, 4), np.float32)      # a 3x3 layer padded by 1: 6x6 out of 6x6
    sums = np.zeros((1, 18, 4), np.float32)
    with pytest.raises(ValueError, match="outside"):
        conv_channels_last.weight_grad_nhwc_taps(x, g, sums, (3, 3), (1, 1), (1, 1), 0, 256, 1)
    with pytest.raises(ValueError, match="dwt must be"):
        conv_channels_last.weight_grad_nhwc_taps(x, g[:, :4, :4].copy(), sums[:, :9].copy(),
                                                 (3, 3), (1, 1), (1, 1), 0, 256, 1)
    with pytest.raises(ValueError, match="cannot hold"):
        conv_channels_last.pad_nhwc(x, np.zeros((1, 6, 7, 2), np.float32), 1, 1, 1)
    padded = np.full((1, 8, 9, 2), 5.0, np.float32)
    x[...] = rng.standard_normal(x.shape)
    conv_channels_last.pad_nhwc(x, padded, 1, 2, 2)
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (1, 1), (2, 1), (0, 0))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, c_out", [
    ((2, 24, 13, 11), 10),      # a whole and a part column panel, a part row panel
    ((1, 16, 23, 23), 6),       # pixels: two blocks of 256 and a rest
    ((2, 5, 7, 9), 3),          # less than one panel each way
    ((1, 300, 5, 5), 7),        # wide rows, not 2 KiB apart: in place
    ((1, 512, 3, 3), 7),        # rows 2 KiB apart (4 KiB in float64): packed
    ((2, 24, 13, 11), 24),      # the mixed tile (float32), whole
    ((2, 20, 7, 9), 24),        # and part of one
    ((1, 12, 9, 9), 12),        # the mixed tile (float64)
    ((2, 32, 9, 9), 16),        # 16 rows on two 8-row tiles
])
@pytest.mark.parametrize("padding", [0, ((0, 1), (0, 2))])   # padding after: packed
def test_1x1_weight_gradients_read_their_operands_in_place_with_the_packed_sums(
        x_shape, c_out, padding, dtype, monkeypatch):
    """A 1x1, stride-1 layer's weight gradient reads the input's and the output gradient's
    rows where they lie (packing only a partial last column panel): the sums of the packed
    path, bit for bit, whatever the thread count (which splits the pixels)."""
    import fastconv._ops.conv_grad as conv_grad
    x = channels_last(x_shape, dtype)
    w_shape = (c_out, x_shape[1], 1, 1)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape, dtype), np.zeros(w_shape, dtype),
                                      padding=padding).shape, dtype)
    want = reference.conv_weight_grad(x.astype(np.float64), w_shape, g.astype(np.float64),
                                      padding=padding)
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            got = fastconv.grad.conv2d_weight(x, w_shape, g, padding=padding)
            monkeypatch.setattr(conv_grad, "_NHWC_GRAD_IN_PLACE", False)
            packed = fastconv.grad.conv2d_weight(x, w_shape, g, padding=padding)
            monkeypatch.setattr(conv_grad, "_NHWC_GRAD_IN_PLACE", True)
        np.testing.assert_array_equal(got, packed)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        scale = np.abs(x).max() * np.abs(g).max() * g.shape[0] * g.shape[2] * g.shape[3]
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


def test_1x1_weight_gradients_pack_only_rows_that_alias_in_l1():
    """In place unless an operand's rows are over 1 KiB and a multiple of 2 KiB apart."""
    from fastconv._ops.conv_grad import _nhwc_grad_in_place
    assert _nhwc_grad_in_place(576, 96, np.float32)
    assert _nhwc_grad_in_place(1280, 320, np.float32)
    assert _nhwc_grad_in_place(256, 64, np.float32)      # 1 KiB rows
    assert not _nhwc_grad_in_place(256, 64, np.float64)  # 2 KiB rows
    assert not _nhwc_grad_in_place(2048, 512, np.float32)
    assert not _nhwc_grad_in_place(96, 512, np.float32)


def test_1x1_weight_gradients_put_one_vector_of_channels_on_the_broadcast_side():
    """dW^T = X^T G (swapped) where that fills more lanes, or, as full either way, where
    the vector side would be one vector wide; wider vector sides stay."""
    from fastconv._ops.conv_grad import _nhwc_grad_swaps
    from fastconv._kernels import conv_channels_last
    if conv_channels_last.tile_columns(False, 0) == (8, 48):    # AVX-512's 8 x 48 tile
        # 16 -> 96: 96 rows of 1 vector or 16 rows of 6, as full either way
        assert _nhwc_grad_swaps(96, 16, np.float32)
        assert not _nhwc_grad_swaps(16, 96, np.float32)
    assert not _nhwc_grad_swaps(256, 64, np.float32)
    assert not _nhwc_grad_swaps(2048, 512, np.float32)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 20, 3, 3), (70, 20, 1, 1), {}),                # 9 pixels: one part, rows re-blocked
    ((2, 33, 5, 4), (50, 33, 1, 1), {}),                # swapped (more outputs than inputs)
    ((4, 70, 9, 9), (30, 70, 3, 3), dict(padding=1)),   # patches packed, parts of the pixels
    ((1, 300, 5, 5), (45, 300, 1, 1), dict(padding=((0, 1), (0, 0)))),
])
def test_channels_last_weight_gradient_blocks_of_rows_and_columns(x_shape, w_shape, kwargs,
                                                                  monkeypatch):
    """Blocks smaller than the layer (as ResNet's 2048-channel layers are cut): several
    blocks of output channels and of patch columns, ragged last ones, the rows re-cut into
    whole rounds of the threads where the pixels are too few to split; the float64
    reference's sums whatever the thread count."""
    import fastconv._ops.conv_grad as conv_grad
    import fastconv._runtime.threads as threads_module
    monkeypatch.setattr(conv_grad, "_NHWC_GRAD_BLOCK", 24)
    monkeypatch.setattr(threads_module, "MIN_PARALLEL_WORK", 0)    # teams on small layers
    x = channels_last(x_shape, np.float64)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape), np.zeros(w_shape), **kwargs).shape,
                      np.float64)
    want = reference.conv_weight_grad(x, w_shape, g, **kwargs)
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            got = fastconv.grad.conv2d_weight(x, w_shape, g, **kwargs)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_channels_last_weight_gradient_splits_pixels_among_threads_and_fuses_the_bias():
    """A layer with few output channels and patch columns splits its pixels into parts
    (summed after): the result does not depend on the thread count."""
    x = channels_last((8, 4, 32, 32), np.float64)
    g = channels_last((8, 6, 32, 32), np.float64)
    results = []
    for threads in (1, 2, 3):
        with fastconv.num_threads(threads):
            results.append(fastconv.grad.conv2d_weight(x, (6, 4, 3, 3), g, padding=1))
    want = reference.conv_weight_grad(x, (6, 4, 3, 3), g, padding=1)
    for got in results:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fastconv.grad.conv_bias(g), g.sum(axis=(0, 2, 3)), rtol=1e-12)


DEPTHWISE_GRAD_CASES = [  # channels, kernel, kwargs
    (16, 3, dict(padding=1)),
    (12, 5, dict(stride=2, padding=2)),
    (8, 3, dict(padding=2, dilation=2)),
    (6, 3, dict(padding=((1, 0), (2, 1)), stride=(1, 2))),
    (43, 3, dict(padding=1, stride=2)),       # whole, part and no vectors of channels
    (37, 3, dict(padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels, kernel, kwargs", DEPTHWISE_GRAD_CASES,
                         ids=[str(i) for i in range(len(DEPTHWISE_GRAD_CASES))])
def test_depthwise_gradients_run_on_the_channels_last_arrays(channels, kernel, kwargs, dtype,
                                                             monkeypatch):
    """The weight gradient sums each tap's products over the pixels, channels side by side;
    a stride-1 layer's input gradient is the depthwise convolution by the turned filters, a
    strided one's a gather of the taps that read each pixel."""
    from fastconv._kernels import conv_channels_last
    x_shape = (2, channels, 11, 10)
    w = rng.standard_normal((channels, 1, kernel, kernel)).astype(dtype)
    x = channels_last(x_shape, dtype)
    g = channels_last(fastconv.conv2d(np.zeros(x_shape, dtype), w, groups=channels,
                                      **kwargs).shape, dtype)
    seen = []
    for name in ("depthwise_weight_grad_nhwc", "conv_depthwise_nhwc",
                 "depthwise_input_grad_nhwc"):
        real = getattr(conv_channels_last, name)

        def spy(*args, real=real, name=name):
            seen.append(name)
            return real(*args)
        monkeypatch.setattr(conv_channels_last, name, spy)
    dw = fastconv.grad.conv2d_weight(x, w.shape, g, groups=channels, **kwargs)
    dx = fastconv.grad.conv2d_input(x_shape, w, g, groups=channels, **kwargs)
    stride_1 = "stride" not in kwargs
    assert seen == ["depthwise_weight_grad_nhwc",
                    "conv_depthwise_nhwc" if stride_1 else "depthwise_input_grad_nhwc"]
    assert is_channels_last(dx) and dw.shape == w.shape and dw.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-11
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(dw, reference.conv_weight_grad(x64, w.shape, g64,
                                                              groups=channels, **kwargs),
                               rtol=tol, atol=tol * 100)
    np.testing.assert_allclose(dx, reference.conv_input_grad(x_shape, w.astype(np.float64),
                                                             g64, groups=channels, **kwargs),
                               rtol=tol, atol=tol * 10)


OPERATOR_CASES = [  # name, call on a 4-d array
    ("max_pool2d", lambda x: fastconv.max_pool2d(x, 3, stride=2, padding=1,
                                                 return_indices=True)),
    ("avg_pool2d", lambda x: fastconv.avg_pool2d(x, 2, ceil_mode=True)),
    ("adaptive_avg_pool2d", lambda x: fastconv.adaptive_avg_pool2d(x, (3, 2))),
    ("adaptive_max_pool2d", lambda x: fastconv.adaptive_max_pool2d(x, 3, return_indices=True)),
    ("interpolate", lambda x: fastconv.interpolate(x, scale_factor=2, mode="bilinear",
                                                   align_corners=False)),
    ("conv_transpose2d", lambda x: fastconv.conv_transpose2d(
        x, np.ones((x.shape[1], 3, 3, 3), x.dtype), stride=2, padding=1)),
    ("conv2d_input", lambda g: fastconv.grad.conv2d_input(
        (g.shape[0], 3) + g.shape[2:], np.ones((g.shape[1], 3, 3, 3), g.dtype), g,
        padding=1)),
    ("max_pool2d_backward", lambda g: fastconv.grad.max_pool2d(
        g, np.zeros(g.shape, np.int64), g.shape[:2] + (g.shape[2] * 2, g.shape[3] * 2))),
    ("avg_pool2d_backward", lambda g: fastconv.grad.avg_pool2d(
        g, g.shape[:2] + (g.shape[2] * 2, g.shape[3] * 2), 2)),
    ("interpolate_backward", lambda g: fastconv.grad.interpolate(
        g, g.shape[:2] + (g.shape[2] // 2, g.shape[3] // 2), scale_factor=2, mode="nearest")),
]


@pytest.mark.parametrize("name, call", OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_every_2d_operator_keeps_the_channels_last_format(name, call):
    x = channels_last((2, 5, 8, 6))
    got = call(x)
    want = call(np.ascontiguousarray(x))
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert is_channels_last(g), name
        assert not is_channels_last(w)
        if name in ("conv2d_input", "conv_transpose2d"):
            # (a convolution's input gradient runs channels-last kernels: other rounding)
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(g, w)


POOL_CASES = [  # pools of channels-last inputs computed where they lie
    lambda a: fastconv.max_pool2d(a, 3, stride=2, padding=1, return_indices=True),
    lambda a: fastconv.max_pool2d(a, 2, dilation=2, ceil_mode=True, return_indices=True),
    lambda a: fastconv.max_pool2d(a, (2, 3)),
    lambda a: fastconv.avg_pool2d(a, 3, stride=2, padding=1, count_include_pad=False),
    lambda a: fastconv.avg_pool2d(a, 2, ceil_mode=True, divisor_override=3),
    lambda a: fastconv.adaptive_avg_pool2d(a, (3, 2)),
    lambda a: fastconv.adaptive_max_pool2d(a, 3, return_indices=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("call", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_pools_of_channels_last_inputs_run_in_place_with_the_same_bits(call, dtype,
                                                                        monkeypatch):
    """NaN wins, ties and all -inf windows keep the first position, sums run in window
    order: values and indices equal the channels-first kernels' bit for bit."""
    from fastconv._kernels import pooling
    x = channels_last((2, 5, 9, 8), dtype)
    x[0, 1, 2, 3] = np.nan
    x[1, 2, :3, :3] = -np.inf
    x[1, 3, 4:6, 4:6] = 1.0
    seen = []
    real = pooling.pool_forward_nhwc

    def spy(xv, *args):
        seen.append(xv.__array_interface__["data"][0])
        return real(xv, *args)
    monkeypatch.setattr(pooling, "pool_forward_nhwc", spy)
    got = call(x)
    assert seen == [x.__array_interface__["data"][0]]
    want = call(np.ascontiguousarray(x))
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        assert is_channels_last(g) and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 40])      # one block of channels, and several
def test_max_pool_backward_and_unpooling_scatter_in_place_with_the_same_bits(channels, dtype,
                                                                             monkeypatch):
    """Overlapping windows send several gradients to one pixel: summed in the channels-first
    kernel's order; unpooling's duplicates keep the last; its backward gathers."""
    from fastconv._kernels import pooling
    x = channels_last((2, channels, 9, 8), dtype)
    x[:, :, 3:6, 3:6] = 0.0                        # ties: many windows pick the same pixel
    values, indices = fastconv.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    assert is_channels_last(indices)
    g = channels_last(values.shape, dtype)
    calls = []
    for name in ("scatter_nhwc", "gather_nhwc"):
        real = getattr(pooling, name)

        def spy(*args, real=real, name=name):
            calls.append(name)
            return real(*args)
        monkeypatch.setattr(pooling, name, spy)
    dense = np.ascontiguousarray
    cases = [
        (lambda a, i: fastconv.grad.max_pool2d(a, i, x.shape), g),
        (lambda a, i: fastconv.max_unpool2d(a, i, 3, stride=1, padding=1), values),
        (lambda a, i: fastconv.grad.max_unpool2d(a, i, values.shape),
         channels_last(x.shape, dtype)),
    ]
    for call, operand in cases:
        got = call(operand, indices)
        assert is_channels_last(got)
        np.testing.assert_array_equal(got, call(dense(operand), dense(indices)))
    assert calls == ["scatter_nhwc", "scatter_nhwc", "gather_nhwc"]


def test_max_unpool2d_keeps_the_format_of_its_input():
    x = channels_last((2, 5, 8, 6))
    values, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    got = fastconv.max_unpool2d(values, indices, 2)
    assert is_channels_last(got)
    np.testing.assert_array_equal(got, fastconv.max_unpool2d(np.ascontiguousarray(values),
                                                             np.ascontiguousarray(indices), 2))


def test_as_channels_last_copies_only_when_needed():
    x = channels_last((1, 3, 4, 5))
    assert as_channels_last(x) is x
    y = np.ascontiguousarray(x)
    z = as_channels_last(y)
    assert is_channels_last(z) and not np.shares_memory(y, z)
    np.testing.assert_array_equal(z, y)
    # one channel: both layouts at once, so the array counts as channels-first
    assert not is_channels_last(np.zeros((2, 1, 4, 4)).transpose(0, 1, 2, 3))


torch = pytest.importorskip("torch")


def test_fastconv_torch_keeps_channels_last_through_a_layer_stack_and_its_gradients():
    import torch.nn.functional as F
    from fastconv import torch as fnn
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 12).to(memory_format=torch.channels_last).requires_grad_()
    w1 = torch.randn(16, 8, 3, 3, requires_grad=True)
    w2 = torch.randn(16, 1, 3, 3, requires_grad=True)
    w3 = torch.randn(8, 16, 1, 1, requires_grad=True)

    def net(conv2d, max_pool2d, interpolate, x):
        y = conv2d(x, w1, padding=1)
        y = conv2d(torch.relu(y), w2, padding=1, groups=16)
        y = max_pool2d(y, 2)
        y = conv2d(y, w3)
        return interpolate(y, scale_factor=2, mode="nearest")

    out = net(fnn.conv2d, fnn.max_pool2d, fnn.interpolate, x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    want = net(F.conv2d, F.max_pool2d, F.interpolate, x)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    g = torch.randn(want.shape).to(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out, (x, w1, w2, w3), g)
    want_grads = torch.autograd.grad(want, (x, w1, w2, w3), g)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_fastconv_torch_reads_a_channels_last_tensor_in_place(monkeypatch):
    from fastconv import torch as fnn
    from fastconv._kernels import conv_channels_last
    seen = []
    real = conv_channels_last.conv_gemm_nhwc

    def spy(x, w, b, out, *args):
        seen.append((np.asarray(x).__array_interface__["data"][0],
                     np.asarray(out).__array_interface__["data"][0]))
        return real(x, w, b, out, *args)
    monkeypatch.setattr(conv_channels_last, "conv_gemm_nhwc", spy)
    x = torch.randn(2, 8, 6, 6).to(memory_format=torch.channels_last)
    y = fnn.conv2d(x, torch.randn(4, 8, 3, 3), padding=1)
    assert seen == [(x.data_ptr(), y.data_ptr())]     # no copy in, none out
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k, nr", [(2048, 512, 48), (35, 130, 32), (5, 1, 48), (48, 64, 48)])
def test_weight_panels_are_the_weights_transposed_panel_by_panel(n, k, nr, dtype):
    """pack_panels: out[p * K + k, c] = rows[p * NR + c, k], zero past the last row."""
    from fastconv._kernels import conv_channels_last
    rows = rng.standard_normal((n, k)).astype(dtype)
    panels = -(-n // nr)
    out = np.full((panels * k, nr), np.nan, dtype)
    conv_channels_last.pack_panels(rows, out, 2)
    padded = np.zeros((panels * nr, k), dtype)
    padded[:n] = rows
    want = padded.reshape(panels, nr, k).transpose(0, 2, 1).reshape(panels * k, nr)
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="pack_panels: out must be"):
        conv_channels_last.pack_panels(rows, np.empty((panels * k + 1, nr), dtype), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("w_shape, taps, nr", [
    ((64, 40, 3, 3), [(2, 2), (2, 1), (2, 0), (1, 2), (1, 1), (1, 0), (0, 2), (0, 1), (0, 0)], 32),
    ((7, 100, 3, 3), [(0, 0), (0, 2), (2, 0), (2, 2)], 48),     # a stride-2 phase's taps
    ((5, 3, 1, 1), [(0, 0)], 16),
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "reversed view"])
def test_tap_panels_are_the_named_taps_transposed_panel_by_panel(w_shape, taps, nr, layout,
                                                                 dtype):
    """pack_tap_panels: out[p * K + t * C_out + o, c] = w[o, p * NR + c, taps[t]] with K =
    T * C_out, zero past C_in, from a weight in any strides."""
    from fastconv._kernels import conv_channels_last
    w = rng.standard_normal(w_shape).astype(dtype)
    if layout == "channels_last":
        w = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "reversed view":
        w = np.ascontiguousarray(w[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
    c_out, c_in = w_shape[:2]
    panels, k = -(-c_in // nr), len(taps) * c_out
    out = np.full((panels * k, nr), np.nan, dtype)
    conv_channels_last.pack_tap_panels(w, np.array(taps, np.intp), out, 2)
    matrix = np.zeros((k, panels * nr), dtype)          # W[(t, o), c], zero past C_in
    for t, (i, j) in enumerate(taps):
        matrix[t * c_out:(t + 1) * c_out, :c_in] = w[:, :, i, j]
    want = matrix.reshape(k, panels, nr).transpose(1, 0, 2).reshape(panels * k, nr)
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="pack_tap_panels: out must be"):
        conv_channels_last.pack_tap_panels(w, np.array(taps, np.intp),
                                           np.empty((panels * k + 1, nr), dtype), 1)
    with pytest.raises(ValueError, match="lies outside"):
        conv_channels_last.pack_tap_panels(w, np.array([(0, w_shape[3])], np.intp),
                                           np.empty((panels * c_out, nr), dtype), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 40, 3, 3), (5, 3, 7, 7), (6, 4, 2, 3, 3), (9, 17, 1, 1)])
def test_a_channels_last_weight_is_made_contiguous_by_the_tiled_transpose(shape, dtype):
    """contiguous_weight: the same values, C-contiguous, from a weight whose channels are
    innermost in memory (2-d and 3-d); a contiguous weight is returned as it is, and other
    layouts are copied the plain way."""
    from fastconv._ops.conv import contiguous_weight
    w = rng.standard_normal(shape).astype(dtype)
    channels_last_w = np.moveaxis(np.ascontiguousarray(np.moveaxis(w, 1, -1)), -1, 1)
    got = contiguous_weight(channels_last_w)
    assert got.flags.c_contiguous and got.dtype == dtype
    np.testing.assert_array_equal(got, w)
    assert contiguous_weight(w) is w
    reversed_view = w[:, :, ::-1]
    np.testing.assert_array_equal(contiguous_weight(reversed_view), reversed_view)
    np.testing.assert_array_equal(contiguous_weight(channels_last_w, np.float64),
                                  w.astype(np.float64))
