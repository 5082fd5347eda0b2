"""Denormal numbers: flushed to zero inside fastconv's kernels by default (x86 FTZ and DAZ, set
for the call on every thread it runs on, restored before it returns), computed as IEEE 754
says with set_denormals("ieee"). The caller's floating-point mode never changes."""
import numpy as np
import pytest

import fastconv
from fastconv import _core
from fastconv._runtime import precision as precision_setting

x86_only = pytest.mark.skipif(not _core.fp_mode_supported(),
                              reason="denormal flushing is x86 only (MXCSR)")

TINY = np.float32(1e-39)               # a float32 denormal: below 1.18e-38
# the MXCSR's control bits (rounding, exception masks, FTZ, DAZ); the low 6 are sticky
# exception flags that any arithmetic of the caller's own may set
CONTROL_BITS = ~0x3F


def control():
    return _core.fp_mode() & CONTROL_BITS


def denormal_layer(channels=16, size=64):
    """A 3x3 layer large enough to run on every thread, its input all denormal."""
    x = np.full((1, channels, size, size), TINY, np.float32)
    w = np.full((channels, channels, 3, 3), 1 / (9 * channels), np.float32)
    return x, w


# the kernels fastconv compiles (scipy.fft's and BLAS's own threads are outside its reach)
FORWARD = ["direct", "packed_segments", "packed_phase", "im2col", "winograd"]


@x86_only
@pytest.mark.parametrize("algorithm", FORWARD)
def test_by_default_denormal_inputs_read_as_zero_on_every_thread(algorithm):
    x, w = denormal_layer()
    assert fastconv.get_denormals() == "flush"
    with fastconv.num_threads(2):
        out = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
    assert np.all(out == 0)


@x86_only
@pytest.mark.parametrize("algorithm", FORWARD)
def test_ieee_mode_computes_them(algorithm):
    x, w = denormal_layer()
    with fastconv.denormals("ieee"), fastconv.num_threads(2):
        out = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
    interior = out[:, :, 1:-1, 1:-1]      # every tap reads TINY: the sum is about TINY
    np.testing.assert_allclose(interior, TINY, rtol=1e-3)


@x86_only
@x86_only
def test_workers_first_started_inside_a_flushing_call_do_not_keep_flushing():
    """A new thread starts in its creator's floating-point mode. A small first call flushes
    on the calling thread alone; were OpenMP to create its workers during it (a parallel
    region wider than the flushed team), they would flush in every later call, IEEE ones
    too (half a winograd output zero). Checked in a fresh process: the workers are created
    once per process."""
    import subprocess
    import sys
    code = """
import numpy as np, fastconv
x = np.ascontiguousarray(np.ones((2, 6, 6, 8), np.float32)).transpose(0, 3, 1, 2)
fastconv.conv2d(x, np.ones((4, 8, 1, 1), np.float32))       # one thread, channels-last
x = np.full((1, 16, 64, 64), np.float32(1e-39), np.float32)
w = np.full((16, 16, 3, 3), 1 / 144, np.float32)
for algorithm in ("winograd", "packed"):
    with fastconv.denormals("ieee"), fastconv.num_threads(2):
        out = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
    assert np.all(out != 0), (algorithm, np.mean(out == 0))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@x86_only
def test_a_transform_made_while_flushing_is_not_reused_in_ieee_mode():
    """Winograd's transformed weights are remembered between calls; those made while
    flushing have their denormal weights zeroed, so an IEEE call makes its own."""
    x = np.ones((1, 32, 16, 16), np.float32)
    w = np.full((32, 32, 3, 3), TINY, np.float32)
    with fastconv.num_threads(2):
        flushed = fastconv.conv2d(x, w, padding=1, algorithm="winograd")
    with fastconv.denormals("ieee"), fastconv.num_threads(2):
        ieee = fastconv.conv2d(x, w, padding=1, algorithm="winograd")
    assert np.all(flushed == 0)
    np.testing.assert_allclose(ieee[0, :, 5, 5], 32 * 9 * float(TINY), rtol=1e-3)


def test_worker_threads_get_their_mode_back():
    """A worker left flushing would zero its share of the next IEEE call's outputs."""
    x, w = denormal_layer()
    with fastconv.num_threads(2):
        fastconv.conv2d(x, w, padding=1, algorithm="packed")          # flushed
        with fastconv.denormals("ieee"):
            out = fastconv.conv2d(x, w, padding=1, algorithm="packed")
    assert np.all(out[:, :, 1:-1, 1:-1] != 0)


@x86_only
@pytest.mark.parametrize("mode", ["flush", "ieee"])
def test_the_callers_mode_never_changes(mode):
    before = control()
    x, w = denormal_layer()
    g = np.full((1, 16, 64, 64), TINY, np.float32)
    with fastconv.denormals(mode):
        fastconv.conv2d(x, w, padding=1)
        fastconv.grad.conv2d_input(x.shape, w, g, padding=1)
        fastconv.grad.conv2d_weight(x, w.shape, g, padding=1)
        fastconv.avg_pool2d(x, 2)
        fastconv.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert control() == before


@x86_only
def test_the_callers_mode_is_restored_when_a_kernel_raises(monkeypatch):
    import fastconv._ops.conv as conv_ops

    def broken(*args, **kwargs):
        raise RuntimeError("kernel failed")
    monkeypatch.setattr(conv_ops, "forward_kernel", broken)
    before = control()
    x, w = denormal_layer(4, 8)
    with pytest.raises(RuntimeError, match="kernel failed"):
        fastconv.conv2d(x, w, padding=1)
    assert control() == before


@x86_only
def test_gradients_pooling_and_resampling_flush_too():
    x, w = denormal_layer()
    g = np.full((1, 16, 64, 64), TINY, np.float32)
    assert np.all(fastconv.grad.conv2d_input(x.shape, w * 9, g, padding=1) == 0)
    assert np.all(fastconv.grad.conv2d_weight(x, w.shape, g, padding=1) == 0)
    assert np.all(fastconv.avg_pool2d(x, 2) == 0)
    with fastconv.denormals("ieee"):
        np.testing.assert_allclose(fastconv.avg_pool2d(x, 2), TINY, rtol=1e-3)


# (setting, a bad value): the precision and denormal settings check alike
BAD_MODES = [("precision", m) for m in ("fastest", "", None, 1)] + \
    [("denormals", m) for m in ("FLUSH", "ftz", "", None, 0)]
CHOICES = {"precision": "'fast', 'exact'", "denormals": "'flush', 'ieee'"}


@pytest.mark.parametrize("name, mode", BAD_MODES)
def test_a_bad_mode_names_the_choices(name, mode, monkeypatch):
    with pytest.raises(ValueError, match=f"{name} must be one of {CHOICES[name]}; got"):
        getattr(fastconv, f"set_{name}")(mode)
    if isinstance(mode, str):
        setting = getattr(precision_setting, name.upper())
        monkeypatch.setattr(setting, "requested", None)
        monkeypatch.setenv(f"FASTCONV_{name.upper()}", mode or "bogus")
        with pytest.raises(ValueError, match=f"FASTCONV_{name.upper()} must be one of"):
            getattr(fastconv, f"get_{name}")()


def test_the_environment_sets_the_default(monkeypatch):
    monkeypatch.setattr(precision_setting.DENORMALS, "requested", None)
    monkeypatch.setenv("FASTCONV_DENORMALS", "ieee")
    assert fastconv.get_denormals() == "ieee"
    previous = fastconv.set_denormals("flush")
    try:
        assert previous == "ieee" and fastconv.get_denormals() == "flush"
    finally:
        precision_setting.DENORMALS.requested = None
