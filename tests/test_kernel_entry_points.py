"""The compiled kernels' interface (fastconv/_kernels): one kernel id per variant, declared
once; every entry point runs exactly the variant it is given or raises ValueError."""
import numpy as np
import pytest

from fastconv import _core
from fastconv._kernels import conv_direct, conv_fft, conv_im2col, conv_packed, \
    conv_phase_grid, conv_winograd

import reference

IDS = {
    "CONV_DIRECT_ROWS": 1, "CONV_IM2COL_BLAS": 2, "CONV_GEMM1X1_BLAS": 3, "CONV_PACKED_SEGMENTS": 4,
    "CONV_PACKED_PHASE": 5, "CONV_WINOGRAD": 6, "CONV_FFT": 7, "CONV_DIRECT_PLANES": 8, "CONV_PACKED_STACKED": 9,
    "INPUT_GRAD_DIRECT_ROWS": 11, "INPUT_GRAD_COL2IM_BLAS": 12, "INPUT_GRAD_COL2IM_PACKED": 13,
    "INPUT_GRAD_GEMM1X1_BLAS": 14, "INPUT_GRAD_PHASE_CLASSES": 15,
    "INPUT_GRAD_PHASE_SCATTER": 16, "INPUT_GRAD_SUBPIXEL": 17, "INPUT_GRAD_WINOGRAD": 18,
    "INPUT_GRAD_GEMM1X1_STACKED": 19, "INPUT_GRAD_DIRECT_PHASES": 20,
    "INPUT_GRAD_CHANNELS_LAST_PHASES": 27,
    "WEIGHT_GRAD_IM2COL_BLAS": 21, "WEIGHT_GRAD_IM2COL_PACKED": 22,
    "WEIGHT_GRAD_GEMM1X1_BLAS": 23, "WEIGHT_GRAD_GEMM1X1_PACKED": 24, "WEIGHT_GRAD_PHASE": 25,
    "WEIGHT_GRAD_DEPTHWISE_ROWS": 26, "WEIGHT_GRAD_WINOGRAD": 28,
}
GEOMETRY = ((1, 1, 1), (0, 1, 1), (1, 1, 1), 1)   # stride, padding before, dilation, groups


def test_kernel_ids_are_the_documented_table():
    assert _core.kernel_ids() == IDS


def arrays(dtype=np.float64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 1, 6, 7)).astype(dtype)
    w = rng.standard_normal((5, 4, 1, 3, 3)).astype(dtype)
    out = np.empty((2, 5, 1, 6, 7), dtype)
    return x, w, np.empty(0, dtype), out


ENTRIES = {
    "conv_direct.conv_forward": (
        {"CONV_DIRECT_ROWS", "CONV_DIRECT_PLANES"},
        lambda k, x, w, b, out: conv_direct.conv_forward(k, x, w, b, out, *GEOMETRY, 2, 1,
                                                         1)),
    "conv_direct.input_grad": (
        {"INPUT_GRAD_DIRECT_ROWS", "INPUT_GRAD_DIRECT_PHASES"},
        lambda k, x, w, b, out: conv_direct.input_grad(k, out, w, x, *GEOMETRY, 1, 1)),
    "conv_direct.weight_grad": (
        {"WEIGHT_GRAD_DEPTHWISE_ROWS"},
        lambda k, x, w, b, out: conv_direct.weight_grad(k, x, out, w.copy(), *GEOMETRY, 1)),
    "conv_im2col.conv_forward": (
        {"CONV_IM2COL_BLAS", "CONV_GEMM1X1_BLAS"},
        lambda k, x, w, b, out: conv_im2col.conv_forward(k, x, w, b, out, *GEOMETRY, 6, 1)),
    "conv_im2col.input_grad": (
        {"INPUT_GRAD_COL2IM_BLAS", "INPUT_GRAD_COL2IM_PACKED", "INPUT_GRAD_GEMM1X1_BLAS"},
        lambda k, x, w, b, out: conv_im2col.input_grad(k, out, w, x, *GEOMETRY, 6, 1, 1)),
    "conv_im2col.weight_grad": (
        {"WEIGHT_GRAD_IM2COL_BLAS", "WEIGHT_GRAD_IM2COL_PACKED", "WEIGHT_GRAD_GEMM1X1_BLAS",
         "WEIGHT_GRAD_GEMM1X1_PACKED"},
        lambda k, x, w, b, out: conv_im2col.weight_grad(k, x, out, w.copy(), *GEOMETRY, 6, 1,
                                                        1)),
    "conv_im2col.weight_grad_stacked": (
        {"WEIGHT_GRAD_GEMM1X1_BLAS"},
        lambda k, x, w, b, out: conv_im2col.weight_grad_stacked(
            k, x.reshape(1, 4, -1), out.reshape(1, 5, -1), w.reshape(5, -1)[:, :4].copy(), 1, 2,
            1)),
    "conv_packed.conv_forward": (
        {"CONV_PACKED_SEGMENTS", "CONV_PACKED_STACKED"},
        lambda k, x, w, b, out: conv_packed.conv_forward(k, x, w, b, out, *GEOMETRY, 1, 1, 0,
                                                         1)),
    "conv_packed.input_grad": (
        {"INPUT_GRAD_GEMM1X1_STACKED"},
        lambda k, x, w, b, out: conv_packed.input_grad(k, out, w, x, *GEOMETRY, 1, 1, 0, 1)),
    "conv_phase_grid.conv_forward": (
        {"CONV_PACKED_PHASE"},
        lambda k, x, w, b, out: conv_phase_grid.conv_forward(k, x, w, b, out, *GEOMETRY, 1, 0,
                                                             1)),
    "conv_winograd.conv_forward": (
        {"CONV_WINOGRAD"},
        lambda k, x, w, b, out: conv_winograd.conv_forward(k, x, w, b, out, *GEOMETRY, 1, False,
                                                           1, np.empty(0, x.dtype))),
    "conv_winograd.weight_grad": (
        {"WEIGHT_GRAD_WINOGRAD"},
        lambda k, x, w, b, out: conv_winograd.weight_grad(
            k, x, out, w.copy(), GEOMETRY[1], 1, 1, *(np.empty(1 << 12, x.dtype),) * 3, 1)),
    "conv_fft.mix_spectra": (
        {"CONV_FFT"},
        lambda k, x, w, b, out: conv_fft.mix_spectra(
            k, *(np.ascontiguousarray(a[:, :, 0, 0, :6]) for a in (x, w[:4], x)), 1, 64, 1)),
    "conv_fft.finish_output": (
        {"CONV_FFT"},
        lambda k, x, w, b, out: conv_fft.finish_output(k, out[:, :, 0], b, out[:, :, 0].copy())),
    "conv_phase_grid.input_grad": (
        {"INPUT_GRAD_PHASE_CLASSES", "INPUT_GRAD_PHASE_SCATTER"},
        lambda k, x, w, b, out: conv_phase_grid.input_grad(k, out, w, x, *GEOMETRY, 1, 1)),
    "conv_phase_grid.weight_grad": (
        {"WEIGHT_GRAD_PHASE"},
        lambda k, x, w, b, out: conv_phase_grid.weight_grad(k, x, out, w.copy(), *GEOMETRY, 1,
                                                            1, 1)),
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_an_entry_point_refuses_every_kernel_it_does_not_run(entry):
    runs, call = ENTRIES[entry]
    for name, kernel in list(IDS.items()) + [("none", 0), ("unknown", 99)]:
        if name in runs:
            continue
        with pytest.raises(ValueError, match="does not run kernel"):
            call(kernel, *arrays())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c_in_g", [1, 3, 8, 16])
@pytest.mark.parametrize("kernel", ["INPUT_GRAD_PHASE_CLASSES", "INPUT_GRAD_PHASE_SCATTER"])
def test_either_phase_grid_input_grad_is_exact_for_any_input_channels(kernel, c_in_g, dtype):
    """The Python layer picks scatter or classes by the input channels per group; either
    variant, forced, computes the gradient for any count."""
    rng = np.random.default_rng(c_in_g)
    groups = 2
    x_shape = (3, c_in_g * groups, 1, 9, 10)
    w = rng.standard_normal((6, c_in_g, 1, 3, 3)).astype(dtype)
    kw = dict(stride=(1, 2, 2), padding=(0, 1, 1), dilation=(1, 1, 2), groups=groups)
    out_shape = reference.conv_nd(np.zeros((1,) + x_shape[1:]), w, None, **kw).shape[2:]
    g = rng.standard_normal(x_shape[:1] + (6,) + out_shape).astype(dtype)
    dx = np.full(x_shape, np.nan, dtype)
    conv_phase_grid.input_grad(IDS[kernel], g, w, dx, kw["stride"], kw["padding"],
                               kw["dilation"], groups, 2, 2)
    want = reference.conv_input_grad(x_shape, w.astype(np.float64), g, **kw)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(dx, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("stride, dilation, w_shape", [
    ((1, 2, 1), (1, 1, 1), (5, 4, 1, 3, 3)),
    ((1, 1, 1), (1, 1, 2), (5, 4, 1, 3, 3)),
    ((1, 1, 1), (1, 1, 1), (5, 4, 1, 3, 5)),
    ((2, 1, 1), (1, 1, 1), (5, 4, 3, 3, 3)),
    ((1, 1, 1), (2, 1, 1), (5, 4, 3, 3, 3)),
])
def test_the_winograd_entry_point_refuses_what_it_cannot_compute(stride, dilation, w_shape):
    """The kernel itself checks its geometry: a wrong call from Python raises, never reads
    out of bounds."""
    x, _, b, _ = arrays()
    x = np.zeros((2, 4, w_shape[2], 6, 7))
    w = np.zeros(w_shape)
    out = np.empty((2, 5, 1, 4, 5))
    with pytest.raises(ValueError, match=r"\(KD, 3, 3\) kernels, stride 1, dilation 1"):
        conv_winograd.conv_forward(IDS["CONV_WINOGRAD"], x, w, b, out, stride, (0, 0, 0),
                                   dilation, 1, 1, False, 1, np.empty(0))


def test_the_direct_planes_entry_point_refuses_what_it_cannot_compute():
    """One input channel per group, and bands of at least one row; anything else raises
    before a byte is read."""
    x, w, b, out = arrays()
    planes = IDS["CONV_DIRECT_PLANES"]
    with pytest.raises(ValueError, match="one input channel per group, got 4"):
        conv_direct.conv_forward(planes, x, w, b, out, *GEOMETRY, 2, 1, 1)
    depthwise = np.zeros((4, 1, 1, 3, 3))
    out = np.empty((2, 4, 1, 6, 7))
    for band in (0, -3):
        with pytest.raises(ValueError, match="band_rows must be at least 1"):
            conv_direct.conv_forward(planes, x, depthwise, b, out, (1, 1, 1), (0, 1, 1),
                                     (1, 1, 1), 4, band, 1, 1)
    for per_item in (0, 65):
        with pytest.raises(ValueError, match="planes_per_item must be in"):
            conv_direct.conv_forward(planes, x, depthwise, b, out, (1, 1, 1), (0, 1, 1),
                                     (1, 1, 1), 4, 3, per_item, 1)
    conv_direct.conv_forward(planes, x, depthwise, b, out, (1, 1, 1), (0, 1, 1), (1, 1, 1), 4,
                             10**15, 5, 1)   # a band past the plane is the whole plane
    np.testing.assert_array_equal(out, 0)


def test_the_direct_phases_entry_point_refuses_what_it_cannot_compute():
    """One input and one output channel per group, and bands of at least one row; anything
    else raises before a byte is read."""
    x, w, _, out = arrays()
    phases = IDS["INPUT_GRAD_DIRECT_PHASES"]
    with pytest.raises(ValueError, match="one input and one output channel per group, got 4"):
        conv_direct.input_grad(phases, out, w, x, *GEOMETRY, 1, 1)
    g = np.zeros((2, 4, 1, 6, 7))
    with pytest.raises(ValueError, match="one input and one output channel per group, got 1 "
                                         "and 2"):
        conv_direct.input_grad(phases, np.zeros((2, 8, 1, 6, 7)), np.zeros((8, 1, 1, 3, 3)),
                               x, (1, 1, 1), (0, 1, 1), (1, 1, 1), 4, 1, 1)
    depthwise = np.zeros((4, 1, 1, 3, 3))
    for band in (0, -3):
        with pytest.raises(ValueError, match="band_rows must be at least 1"):
            conv_direct.input_grad(phases, g, depthwise, x, (1, 1, 1), (0, 1, 1), (1, 1, 1), 4,
                                   band, 1)
    conv_direct.input_grad(phases, g, depthwise, x, (1, 1, 1), (0, 1, 1), (1, 1, 1), 4,
                           10**15, 1)   # a band past the plane is the whole plane
    np.testing.assert_array_equal(x, 0)


@pytest.mark.parametrize("w_shape, out_shape, stride, pad", [
    ((5, 4, 1, 3, 3), (2, 5, 1, 6, 7), (1, 1, 1), (0, 1, 1)),    # 3x3
    ((5, 4, 1, 1, 1), (2, 5, 1, 8, 9), (1, 1, 1), (0, 1, 1)),    # padded
    ((5, 4, 1, 1, 1), (2, 5, 1, 3, 4), (1, 2, 2), (0, 0, 0)),    # strided
])
def test_the_stacked_entry_point_takes_only_pointwise_calls(w_shape, out_shape, stride, pad):
    x, _, b, _ = arrays()
    with pytest.raises(ValueError, match="takes a 1x1 kernel with stride 1 and no padding"):
        conv_packed.conv_forward(IDS["CONV_PACKED_STACKED"], x, np.zeros(w_shape), b,
                                 np.empty(out_shape), stride, pad, (1, 1, 1), 1, 1, 1, 0, 1)


def plain_im2col(x, w_shape, out_size, stride, pad, dilation, groups):
    """col[n, (g * C_g + c) * taps + tap, j]: the pixel that tap (kd, kh, kw) of input
    channel c of group g reads at output position j of image n, from a zero-padded copy."""
    n, c_in = x.shape[:2]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    rows = []
    for c in range(c_in):
        for tap in np.ndindex(*w_shape[2:]):
            window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                           for t, d, o, s in zip(tap, dilation, out_size, stride))
            rows.append(padded[(slice(None), c) + window].reshape(n, -1))
    return np.stack(rows, axis=1)


@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", [
    ((1, 16, 1, 14, 14), (8, 16, 1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), 1),
    ((1, 6, 1, 13, 11), (4, 6, 1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), 1),
    ((2, 6, 1, 9, 10), (4, 3, 1, 3, 2), (1, 1, 2), (0, 2, 0), (1, 2, 1), 2),
    ((1, 3, 4, 6, 5), (2, 3, 2, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
    ((1, 1, 1, 7, 7), (1, 1, 1, 2, 2), (1, 1, 1), (0, 0, 0), (1, 1, 1), 1),   # fewer rows than pieces
])
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_the_stacked_im2col_is_the_plain_one_whatever_the_split(x_shape, w_shape, stride,
                                                                pad, dilation, groups, threads):
    # a batch-1 plane is cut into blocks of taps for the threads: every block must land
    # where the plain im2col puts it
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    out_size = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                     zip(x_shape[2:], pad, dilation, w_shape[2:], stride))
    want = plain_im2col(x, w_shape, out_size, stride, pad, dilation, groups)
    col = np.full(want.shape, np.nan, np.float32)
    conv_im2col.unfold_stacked(x, w_shape, (x_shape[0], w_shape[0]) + out_size, col, stride,
                               pad, dilation, groups, threads)
    np.testing.assert_array_equal(col, want)


@pytest.mark.parametrize("g_shape, w_shape, dx_shape, stride, pad, groups", [
    ((2, 5, 1, 6, 7), (5, 4, 1, 3, 3), (2, 4, 1, 6, 7), (1, 1, 1), (0, 0, 0), 1),   # 3x3
    ((2, 5, 1, 6, 7), (5, 4, 1, 1, 1), (2, 4, 1, 6, 7), (1, 1, 1), (0, 1, 0), 1),   # padded
    ((2, 5, 1, 3, 4), (5, 4, 1, 1, 1), (2, 4, 1, 6, 7), (1, 2, 2), (0, 0, 0), 1),   # strided
    ((2, 5, 1, 6, 7), (5, 4, 1, 1, 1), (2, 4, 1, 6, 8), (1, 1, 1), (0, 0, 0), 1),   # sizes
    ((2, 5, 1, 6, 7), (5, 4, 1, 1, 1), (3, 4, 1, 6, 7), (1, 1, 1), (0, 0, 0), 1),   # batch
    ((2, 6, 1, 6, 7), (5, 4, 1, 1, 1), (2, 4, 1, 6, 7), (1, 1, 1), (0, 0, 0), 1),   # C_out
    ((2, 5, 1, 6, 7), (5, 2, 1, 1, 1), (2, 4, 1, 6, 7), (1, 1, 1), (0, 0, 0), 2),   # 5 / 2
    ((2, 5, 1, 6, 7), (5, 4, 1, 1, 1), (2, 4, 1, 6, 7), (1, 1, 1), (0, 0, 0), 0),   # groups
])
def test_the_stacked_input_grad_entry_point_takes_only_pointwise_calls(
        g_shape, w_shape, dx_shape, stride, pad, groups):
    with pytest.raises(ValueError, match="takes a 1x1 kernel"):
        conv_packed.input_grad(IDS["INPUT_GRAD_GEMM1X1_STACKED"], np.zeros(g_shape),
                               np.zeros(w_shape), np.empty(dx_shape), stride, pad, (1, 1, 1),
                               groups, 1, 1, 0, 1)


def test_the_winograd_entry_point_checks_the_transformed_weights_size():
    x, w, b, out = arrays()
    with pytest.raises(ValueError, match="u must have"):
        conv_winograd.conv_forward(IDS["CONV_WINOGRAD"], x, w, b, out, *GEOMETRY, 1, False,
                                   1, np.empty(7))
    with pytest.raises(ValueError, match="u must have"):
        conv_winograd.transform_weights(w, 1, np.empty(7), 1)


@pytest.mark.parametrize("x_shape, w_shape, y_shape, groups", [
    ((2, 4, 8), (6, 2, 8), (2, 6, 8), 1),     # 4 input channels are not 1 group of 2
    ((2, 4, 8), (5, 2, 8), (2, 5, 8), 2),     # 5 filters in 2 groups
    ((2, 4, 8), (6, 2, 6), (2, 6, 8), 2),     # spectra of other lengths
    ((2, 4, 8), (6, 2, 8), (2, 6, 6), 2),
    ((2, 4, 7), (6, 2, 7), (2, 6, 7), 2),     # not whole complex numbers
    ((2, 4, 8), (6, 2, 8), (1, 6, 8), 2),
])
def test_the_spectrum_mix_refuses_spectra_that_do_not_fit(x_shape, w_shape, y_shape, groups):
    with pytest.raises(ValueError, match="spectra|groups"):
        conv_fft.mix_spectra(IDS["CONV_FFT"], np.zeros(x_shape), np.zeros(w_shape),
                             np.zeros(y_shape), groups, 64, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("step", [1, 3])
def test_finishing_adds_the_bias_per_plane_and_tells_if_all_is_finite(step, dtype):
    rng = np.random.default_rng(step)
    signal = rng.standard_normal((6, 2, 3, 5 * step)).astype(dtype)[..., ::step]
    bias = rng.standard_normal(3).astype(dtype)
    out = np.full((6, 2, 3, 5), np.nan, dtype)
    assert conv_fft.finish_output(IDS["CONV_FFT"], signal, bias, out)
    np.testing.assert_array_equal(out, signal + np.tile(bias, 2)[:, None, None, None])
    assert conv_fft.finish_output(IDS["CONV_FFT"], signal, bias[:0], out)
    np.testing.assert_array_equal(out, signal)
    for value in (np.inf, -np.inf, np.nan):
        bad = signal.copy()
        bad[4, 1, 2, 3] = value
        assert not conv_fft.finish_output(IDS["CONV_FFT"], bad, bias, out)
        assert out[4, 1, 2, 3] == value or np.isnan(value) and np.isnan(out[4, 1, 2, 3])


@pytest.mark.parametrize("signal_shape, out_shape, channels", [
    ((6, 2, 3, 5), (6, 2, 3, 4), 3),
    ((6, 2, 3, 5), (5, 2, 3, 5), 3),
    ((6, 2, 3, 5), (6, 2, 3, 5), 4),       # 6 planes are not a whole number of 4 channels
])
def test_finishing_refuses_arrays_that_do_not_fit(signal_shape, out_shape, channels):
    with pytest.raises(ValueError, match="do not fit"):
        conv_fft.finish_output(IDS["CONV_FFT"], np.zeros(signal_shape), np.zeros(channels),
                               np.zeros(out_shape))


def test_the_spectrum_mix_is_a_complex_product_summed_over_a_group():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5)) + 1j * rng.standard_normal((2, 4, 5))
    w = rng.standard_normal((6, 2, 5)) + 1j * rng.standard_normal((6, 2, 5))
    y = np.full((2, 6, 5), np.nan, complex)
    conv_fft.mix_spectra(IDS["CONV_FFT"], x.view(np.float64), w.view(np.float64),
                         y.view(np.float64), 2, 2, 2)
    want = np.stack([np.einsum("ncf,ocf->nof", x[:, 2 * g:2 * g + 2], w[3 * g:3 * g + 3])
                     for g in range(2)], axis=1).reshape(2, 6, 5)
    np.testing.assert_allclose(y, want, rtol=1e-14)



@pytest.mark.parametrize("entry, name, call", [
    ("conv_forward", "band_rows", lambda k, x, w, b, out, band, chunks:
        conv_im2col.conv_forward(IDS["CONV_IM2COL_BLAS"], x, w, b, out, *GEOMETRY, band, 1)),
    ("input_grad", "band_rows", lambda k, x, w, b, out, band, chunks:
        conv_im2col.input_grad(IDS["INPUT_GRAD_COL2IM_PACKED"], out, w, x, *GEOMETRY, band,
                               chunks, 1)),
    ("input_grad", "channel_chunks", lambda k, x, w, b, out, band, chunks:
        conv_im2col.input_grad(IDS["INPUT_GRAD_COL2IM_PACKED"], out, w, x, *GEOMETRY, band,
                               chunks, 1)),
    ("weight_grad", "band_rows", lambda k, x, w, b, out, band, chunks:
        conv_im2col.weight_grad(IDS["WEIGHT_GRAD_IM2COL_PACKED"], x, out, w.copy(),
                                *GEOMETRY, band, chunks, 1)),
    ("weight_grad", "chunks", lambda k, x, w, b, out, band, chunks:
        conv_im2col.weight_grad(IDS["WEIGHT_GRAD_IM2COL_PACKED"], x, out, w.copy(),
                                *GEOMETRY, band, chunks, 1)),
])
@pytest.mark.parametrize("value", [0, -1])
def test_im2col_entry_points_refuse_tiling_counts_below_one(entry, name, call, value):
    """Counts the kernels divide by: zero would be a division by zero in C (SIGFPE)."""
    x, w, b, out = arrays()
    band, chunks = (value, 1) if name == "band_rows" else (1, value)
    with pytest.raises(ValueError, match=f"conv_im2col.{entry}: {name} must be at least 1"):
        call(None, x, w, b, out, band, chunks)
    with pytest.raises(ValueError, match="channel_chunks must be at least 1"):
        conv_im2col.input_grad_reads_weight_in_place(4, 9, value, 10, False)
