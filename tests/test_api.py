"""Planning helpers, the dispatcher, the thread policy and the build configuration."""
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv._plan import dispatch


@pytest.mark.parametrize("x_shape, w_shape, kwargs, expected", [
    ((1, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), (1, 64, 112, 112)),
    ((8, 128, 4096), (128, 128, 3), dict(padding=4, dilation=4), (8, 128, 4096)),
    ((1, 32, 8, 56, 56), (64, 32, 3, 3, 3), dict(padding=1), (1, 64, 8, 56, 56)),
    ((2, 4, 10, 11), (6, 2, 3, 2), dict(groups=2, stride=(2, 3), padding=((1, 0), (0, 2))),
     (2, 6, 5, 4)),
    ((1, 1, 9, 9), (1, 1, 4, 4), dict(padding="same"), (1, 1, 9, 9)),
    ((1, 1, 9, 9), (1, 1, 4, 4), dict(padding="valid"), (1, 1, 6, 6)),
])
def test_output_shape_formula_and_agreement_with_the_convolution(x_shape, w_shape, kwargs,
                                                                  expected):
    assert fastconv.output_shape(x_shape, w_shape, **kwargs) == expected
    nd = len(w_shape) - 2
    conv = (fastconv.conv1d, fastconv.conv2d, fastconv.conv3d)[nd - 1]
    small = tuple(min(s, 40) if i > 1 else s for i, s in enumerate(x_shape))
    assert conv(np.zeros(small, np.float32), np.zeros(w_shape, np.float32), **kwargs).shape == \
        fastconv.output_shape(small, w_shape, **kwargs)


def test_receptive_field_of_a_resnet_stem():
    rf = fastconv.receptive_field([dict(kernel_size=7, stride=2, padding=3),   # conv1
                                   dict(kernel_size=3, stride=2, padding=1),   # max-pool
                                   dict(kernel_size=3, padding=1),
                                   dict(kernel_size=3, padding=1)])
    # 7, then +2*2 = 11, then +2*4 = 19, then +2*4 = 27
    assert rf == fastconv.ReceptiveField(size=(27,), jump=(4,), start=(-3 - 2 - 4 - 4,))


def test_receptive_field_per_axis_and_dilation():
    rf = fastconv.receptive_field([dict(kernel_size=(3, 1), dilation=(1, 1)),
                                   dict(kernel_size=(3, 3), dilation=(2, 4))])
    assert rf.size == (3 + 4, 1 + 8)
    assert rf.jump == (1, 1)


def test_receptive_field_matches_an_impulse_response():
    """The receptive field is exactly the set of inputs that change one output."""
    layers = [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=5, dilation=2,
                                                             padding=4)]
    rf = fastconv.receptive_field(layers)
    x = np.zeros((1, 1, 64))
    y0 = x
    for layer in layers:
        y0 = fastconv.conv1d(y0, np.ones((1, 1, layer["kernel_size"])), stride=layer.get(
            "stride", 1), padding=layer.get("padding", 0), dilation=layer.get("dilation", 1))
    out_index = 10
    affecting = []
    for i in range(64):
        e = np.zeros((1, 1, 64))
        e[0, 0, i] = 1
        y = e
        for layer in layers:
            y = fastconv.conv1d(y, np.ones((1, 1, layer["kernel_size"])),
                                stride=layer.get("stride", 1), padding=layer.get("padding", 0),
                                dilation=layer.get("dilation", 1))
        if y[0, 0, out_index] != 0:
            affecting.append(i)
    first = rf.start[0] + out_index * rf.jump[0]
    assert affecting[0] >= first and affecting[-1] <= first + rf.size[0] - 1
    assert affecting[0] == first and affecting[-1] == first + rf.size[0] - 1


@pytest.mark.parametrize("full_width_blas", [True, False], ids=["avx512-blas", "capped-blas"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs, algorithm", [
    ((1, 256, 56, 56), (64, 256, 1, 1), dict(), "packed"),
    ((1, 144, 56, 56), (144, 1, 3, 3), dict(padding=1, groups=144), "direct"),
    ((64, 1, 28, 28), (6, 1, 5, 5), dict(), "direct"),
    ((1, 1, 1024, 1024), (1, 1, 7, 7), dict(padding=3), "direct"),
    ((1, 64, 64, 64), (64, 2, 3, 3), dict(padding=1, groups=32), "direct"),
    ((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "winograd"),
    ((1, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), "packed"),
    ((1, 256, 56, 56), (64, 256, 1, 1), dict(stride=2), "packed"),
])
def test_choose_algorithm_for_the_benchmark_shapes(x_shape, w_shape, kwargs, algorithm,
                                                    full_width_blas, monkeypatch):
    monkeypatch.setattr(dispatch, "_BLAS_FULL_WIDTH", full_width_blas)
    choice = fastconv.choose_algorithm(x_shape, w_shape, **kwargs)
    assert choice.algorithm == algorithm
    assert isinstance(choice.reason, str) and len(choice.reason) > 20
    x = np.zeros(x_shape, np.float32)
    assert fastconv.choose_algorithm(x, np.zeros(w_shape, np.float32), **kwargs) == choice
    name, reason = choice            # unpacks as fastconv 0.1's (algorithm, reason) did
    assert (name, reason) == (choice.algorithm, choice.reason)


def test_dispatcher_rules_are_data_with_reasons():
    assert dispatch.RULES[-1].applies(None) is True   # a catch-all ends the list
    for rule in dispatch.RULES:
        assert rule.algorithm in dispatch.ALGORITHMS and rule.why


def test_forcing_an_algorithm_is_honoured():
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10))
    w = np.random.default_rng(1).standard_normal((8, 8, 1, 1))
    problem = fastconv.planning.problem_from_call(x.shape, w.shape)
    names = [a for a in dispatch.ALGORITHMS if dispatch.SUPPORTS[a](problem)]
    assert "winograd" not in names   # 1x1: forcing it raises (tests/test_winograd.py)
    results = {a: fastconv.conv2d(x, w, algorithm=a) for a in names}
    for a in names:
        np.testing.assert_allclose(results[a], results["gemm1x1"], rtol=1e-12, atol=1e-12)


def test_thread_count_setting_and_context_manager():
    original = fastconv.get_num_threads()
    previous = fastconv.set_num_threads(1)
    assert previous == original and fastconv.get_num_threads() == 1
    with fastconv.num_threads(2):
        assert fastconv.get_num_threads() == 2
    assert fastconv.get_num_threads() == 1
    fastconv.set_num_threads(original)


def test_environment_variable_sets_the_default():
    code = "import fastconv; print(fastconv.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "FASTCONV_NUM_THREADS": "3"})
    expected = "3" if fastconv._core.openmp_enabled() else "1"
    assert out.stdout.strip() == expected, out.stderr


def test_blas_is_single_threaded_during_a_call_and_restored_after():
    controllers = fastconv._runtime.threads.single_threaded_blas._blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl cannot see SciPy's BLAS here")
    before = [c.get_num_threads() for c in controllers]
    with fastconv._runtime.threads.single_threaded_blas:
        assert all(c.get_num_threads() == 1 for c in controllers)
    assert [c.get_num_threads() for c in controllers] == before


def test_concurrent_calls_from_python_threads_agree_with_serial_calls():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    algorithms = ("direct", "packed", "im2col")
    want = {a: fastconv.conv2d(x, w, padding=1, algorithm=a) for a in algorithms}
    got, errors = [], []

    def work(algorithm):
        try:
            for _ in range(5):
                got.append((algorithm, fastconv.conv2d(x, w, padding=1, algorithm=algorithm)))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(a,)) for a in algorithms * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(got) == 45
    for algorithm, result in got:
        if algorithm == "im2col":
            # OpenBLAS may pick another blocking for a GEMM run from a fresh thread: the same
            # sums, rounded differently. fastconv's own kernels are bit-for-bit reproducible.
            np.testing.assert_allclose(result, want[algorithm], rtol=1e-5, atol=1e-4)
        else:
            np.testing.assert_array_equal(result, want[algorithm])


def test_show_config_reports_build_and_runtime(capsys):
    fastconv.show_config()
    text = capsys.readouterr().out
    for word in ("fastconv", "openmp", "threads", "blas", "simd", "compile args"):
        assert word in text
    info = fastconv.config.config_info()
    assert info["num_threads"] == fastconv.get_num_threads()


def test_command_line_help_and_config():
    out = subprocess.run([sys.executable, "-m", "fastconv", "config"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "openmp" in out.stdout
