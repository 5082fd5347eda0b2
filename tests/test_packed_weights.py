"""The packed kernels' weights. The forward kernels read each filter where it lies (a row of
the micro-kernel's product): nothing is packed, remembered or compared per call, and a weight
changed in place gives the new answer at once. The 1x1 input gradient multiplies by the
weights' transpose: read where it lies too when a group's input channels fill whole panels of
the register tile (24 and 48 do for every tile: 8 or 12 rows with AVX-512, 6 with AVX2 and at
the baseline) and the positions are few (at most 8 panels of them: 32 at the baseline in
float64), else packed once and reused while the weights do not change (the cache compares the
bytes, see weight_cache). The col2im input gradient reads the transpose in place on the same
terms."""
import numpy as np
import pytest

import fastconv
from fastconv import grad
from fastconv._kernels import conv_im2col, conv_packed
from fastconv._plan.dispatch import Kernel
from fastconv._runtime import weight_cache
from fastconv.planning import plan_conv, problem_from_call

import reference

# (algorithm, input shape, weight shape, keyword arguments): the three packed forward kernels
CASES = [
    ("packed_segments", (2, 6, 9, 11), (10, 6, 3, 3), dict(padding=1)),
    ("packed_stacked", (3, 8, 5, 5), (13, 8, 1, 1), dict()),
    ("packed_phase", (2, 4, 12, 13), (6, 2, 3, 3), dict(stride=2, groups=2)),
]


def packed_entries():
    return [key for key in weight_cache._entries if key[0][0] == "packed"]


@pytest.fixture(autouse=True)
def empty_cache():
    weight_cache.forget_transforms()
    yield
    weight_cache.forget_transforms()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("algorithm, x_shape, w_shape, kwargs", CASES, ids=[c[0] for c in CASES])
def test_forward_kernels_read_the_weights_where_they_lie(algorithm, x_shape, w_shape, kwargs,
                                                         dtype):
    rng = np.random.default_rng(len(x_shape) + w_shape[0])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    first = fastconv.conv2d(x, w, algorithm=algorithm, **kwargs)
    np.testing.assert_allclose(first, reference.conv_nd(x, w, **kwargs), rtol=tol, atol=tol)
    assert packed_entries() == []
    # changed in place: the new weights' answer at once
    w[-1, 0, 0, 0] += 1.0
    second = fastconv.conv2d(x, w, algorithm=algorithm, **kwargs)
    np.testing.assert_allclose(second, reference.conv_nd(x, w, **kwargs), rtol=tol, atol=tol)
    assert not np.array_equal(second, first)
    # a copy at another address, or a channels-last weight: the same bits
    np.testing.assert_array_equal(fastconv.conv2d(x, w.copy(), algorithm=algorithm, **kwargs),
                                  second)
    w_channels_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(w, 1, -1)), -1, 1)
    np.testing.assert_array_equal(
        fastconv.conv2d(x, w_channels_last, algorithm=algorithm, **kwargs), second)
    assert packed_entries() == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("groups", [1, 2])
def test_the_1x1_input_gradient_reads_a_transpose_of_whole_panels_where_it_lies(groups,
                                                                                dtype):
    rng = np.random.default_rng(2)
    c_in = 48 * groups            # 48 per group: whole panels of every register tile
    x_shape, w = (1, c_in, 5, 5), rng.standard_normal((20 * groups, 48, 1, 1)).astype(dtype)
    g = rng.standard_normal((1, 20 * groups, 5, 5)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for step in range(2):
        dx = grad.conv2d_input(x_shape, w, g, groups=groups, algorithm="gemm1x1_stacked")
        np.testing.assert_allclose(dx, reference.conv_input_grad(x_shape, w, g, groups=groups),
                                   rtol=tol, atol=tol)
        assert packed_entries() == []
        w *= 1.5     # in place: the new weights' answer at once


def test_the_1x1_input_gradient_remembers_the_transposed_packing_of_partial_panels():
    rng = np.random.default_rng(3)
    # 13 input channels: a last panel of the tile part empty, packed with zeros past them
    x_shape, w = (4, 13, 7, 7), rng.standard_normal((20, 13, 1, 1))
    g = rng.standard_normal((4, 20, 7, 7))
    for step in range(2):
        dx = grad.conv2d_input(x_shape, w, g, algorithm="gemm1x1_stacked")
        np.testing.assert_allclose(dx, reference.conv_input_grad(x_shape, w, g), atol=1e-11)
        # one entry, in the transposed (adjoint) layout
        assert [name[3] for name, *_ in packed_entries()] == [True]
        w *= 1.5     # in place


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("stride", [1, 2])
def test_col2im_reads_the_transpose_in_place_with_the_bits_of_its_packed_copy(stride, dtype):
    """The col2im input gradient on the micro-kernel multiplies by W^T where it lies when
    each chunk of input channels is whole panels (48 channels in 2 chunks: 216 rows, whole
    for 6, 8 and 12 rows a tile) and a band few panels of positions; in 7 chunks (63 rows) it
    packs W^T first. Every element is the same sum in the same order either way."""
    rng = np.random.default_rng(stride)
    x_shape, w = (2, 48, 9, 9), rng.standard_normal((20, 48, 3, 3)).astype(dtype)
    g = rng.standard_normal(fastconv.output_shape(x_shape, w.shape, stride=stride,
                                                  padding=1)).astype(dtype)
    out_w, taps, double = g.shape[-1], 9, dtype == np.float64
    assert conv_im2col.input_grad_reads_weight_in_place(48, taps, 2, 3 * out_w, double)
    assert not conv_im2col.input_grad_reads_weight_in_place(48, taps, 7, 3 * out_w, double)
    expected = reference.conv_input_grad(x_shape, w, g, stride=stride, padding=1)
    results = []
    for chunks in (2, 7):
        dx = np.empty((2, 48, 1, 9, 9), dtype)
        conv_im2col.input_grad(Kernel.INPUT_GRAD_COL2IM_PACKED, g[:, :, None], w[:, :, None],
                               dx, (1, stride, stride), (0, 1, 1), (1, 1, 1), 1, 3, chunks, 2)
        tol = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(dx[:, :, 0], expected, rtol=tol, atol=tol)
        results.append(dx)
    np.testing.assert_array_equal(results[0], results[1])
    assert packed_entries() == []


def test_the_rule_takes_col2im_for_one_or_two_images_of_small_planes():
    """Batch 1 and 2 of ResNet-50's 3x3 layers on 7x7 and 14x14 (channels-last phases'
    territory): col2im on the micro-kernel, with W^T read in place; from batch 4 the phases'
    one GEMM over every image wins and keeps them."""
    def kernel(batch, channels, size, stride):
        x_shape = (batch, channels, size, size)
        w_shape = (channels, channels, 3, 3)
        return fastconv.planning.choose_grad_algorithms(x_shape, w_shape, stride=stride,
                                                        padding=1).input.kernel
    for batch in (1, 2):
        assert kernel(batch, 512, 7, 1) == Kernel.INPUT_GRAD_COL2IM_PACKED
        assert kernel(batch, 512, 14, 2) == Kernel.INPUT_GRAD_COL2IM_PACKED
    # (256 on 14x14 at batch 1 is 16 tiles: Winograd with the weights transformed as it
    # goes, test_winograd.py)
    assert kernel(2, 256, 14, 1) == Kernel.INPUT_GRAD_WINOGRAD     # 32 tiles
    # 3 or 16 input channels (27 or 144 rows in one chunk): packed, still col2im
    few = fastconv.planning.choose_grad_algorithms((2, 3, 30, 30), (8, 3, 3, 3), stride=2,
                                                   padding=1).input.kernel
    assert few == Kernel.INPUT_GRAD_COL2IM_PACKED
    # 16 tiles of 512 channels: Winograd, its weights transformed as the GEMM goes
    assert kernel(4, 512, 7, 1) == Kernel.INPUT_GRAD_WINOGRAD
    assert kernel(4, 96, 7, 1) == Kernel.INPUT_GRAD_CHANNELS_LAST_PHASES
    assert kernel(8, 512, 14, 2) == Kernel.INPUT_GRAD_CHANNELS_LAST_PHASES


def test_weights_made_for_one_call_are_not_remembered():
    # a strided input gradient runs its phases on weights built for the call
    rng = np.random.default_rng(4)
    w, g = rng.standard_normal((6, 5, 3, 3)), rng.standard_normal((2, 6, 8, 8))
    dx = grad.conv2d_input((2, 5, 16, 16), w, g, stride=2, padding=1, algorithm="subpixel")
    np.testing.assert_allclose(dx, reference.conv_input_grad((2, 5, 16, 16), w, g, stride=2,
                                                             padding=1), atol=1e-11)
    assert packed_entries() == []


@pytest.mark.parametrize("adjoint, channels", [(False, 9), (True, 9), (True, 24)],
                         ids=["forward", "adjoint-packed-here", "adjoint-where-it-lies"])
def test_the_entry_point_takes_prepacked_weights_with_the_same_bits(adjoint, channels):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1 if channels == 24 else 3, channels, 6, 6)).astype(np.float32)
    w = rng.standard_normal((channels, channels, 1, 1) if adjoint else (11, channels, 3, 3)
                            ).astype(np.float32)
    problem = problem_from_call(x, w, padding=0 if adjoint else 1)
    plan = plan_conv(problem, np.float32, "packed_segments")
    w5 = w[:, :, None]
    packed = np.empty(conv_packed.layer_weights_size(w5.shape, 1, plan.tile_shape, adjoint),
                      np.float32)
    conv_packed.pack_layer_weights(w5, 1, plan.tile_shape, adjoint, packed, 1)
    if adjoint:
        g5 = x[:, :, None]
        want = np.empty_like(g5)
        got = np.empty_like(g5)
        args = (Kernel.INPUT_GRAD_GEMM1X1_STACKED, g5, w5)
        tail = ((1, 1, 1), (0, 0, 0), (1, 1, 1), 1, 2, 1, plan.tile_shape, 1)
        conv_packed.input_grad(*args, want, *tail)
        conv_packed.input_grad(*args, got, *tail, packed)
        np.testing.assert_allclose(want[:, :, 0], reference.conv_input_grad(x.shape, w, x),
                                   rtol=1e-4, atol=1e-4)
    else:
        # the same bits from weights read where they lie (what fastconv.conv2d runs) as
        # from prepacked ones
        want = fastconv.conv2d(x, w, padding=1, algorithm="packed_segments")
        got = np.empty_like(want)[:, :, None]
        conv_packed.conv_forward(Kernel.CONV_PACKED_SEGMENTS, x[:, :, None], w5,
                                 np.empty(0, np.float32), got, (1, 1, 1), (0, 1, 1),
                                 (1, 1, 1), 1, plan.tile_panels, plan.channel_panels,
                                 plan.tile_shape, 1, packed)
        got = got[:, :, 0]
    np.testing.assert_array_equal(got, want)


def test_prepacked_weights_of_the_wrong_size_or_dtype_are_refused():
    x = np.ones((1, 4, 5, 5))[:, :, None]
    w = np.ones((6, 4, 1, 3, 3))
    out = np.empty((1, 6, 1, 5, 5))
    args = (Kernel.CONV_PACKED_SEGMENTS, x, w, np.empty(0), out, (1, 1, 1), (0, 1, 1),
            (1, 1, 1), 1, 1, 1, 0, 1)
    size = conv_packed.layer_weights_size(w.shape, 1, 0, False)
    with pytest.raises(ValueError, match="packed_weights: expected"):
        conv_packed.conv_forward(*args, np.zeros(size - 1))
    with pytest.raises(ValueError):
        conv_packed.conv_forward(*args, np.zeros(size, np.float32))
    with pytest.raises(ValueError, match="packed needs"):
        conv_packed.pack_layer_weights(w, 1, 0, False, np.zeros(size + 1), 1)
    with pytest.raises(ValueError, match="adjoint packing takes 1x1"):
        conv_packed.layer_weights_size(w.shape, 1, 0, True)
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        conv_packed.layer_weights_size(w.shape, 4, 0, False)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("size", [0, 1, 1000, (3 << 20) + 5])
def test_the_caches_byte_compare_finds_a_change_anywhere(size, threads):
    """A hit compares the weight's bytes with the entry's copy, large ones in chunks over the
    threads: one flipped bit anywhere (first byte, a chunk's inside, the last byte) misses."""
    from fastconv import _core
    data = np.random.default_rng(size).integers(0, 256, size, np.uint8)
    copy = data.copy()
    address = data.__array_interface__["data"][0]
    assert _core.bytes_equal_at(address, copy, threads)
    for where in sorted({0, size // 3, size - 1}) if size else []:
        data[where] ^= 1
        assert not _core.bytes_equal_at(address, copy, threads)
        data[where] ^= 1
    assert _core.bytes_equal_at(address, copy, threads)
