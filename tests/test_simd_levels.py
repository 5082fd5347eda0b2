"""One build, several SIMD levels (setup.py, fastconv/_runtime/cpu.py, fastconv/_kernels):
the best level the CPU runs is chosen at import, FASTCONV_SIMD forces one, a level the CPU
cannot run is refused with an ImportError that says why, and every level computes the same
results. .ci/run runs the whole suite once per level the CI machine's CPU has."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _kernels
from fastconv._runtime import cpu

BUILT = cpu.built_levels()
RUNNABLE = cpu.runnable_levels(BUILT)
KERNEL_SOURCES = sorted(p.stem for p in pathlib.Path(_kernels.__file__).parent.glob("*.pyx"))

# Fake levels and CPUs for the selection rules: the compiler macros each level assumes.
LEVELS = {"baseline": ([], []),
          "avx2": (["-mavx2", "-mfma", "-mf16c"], ["AVX", "AVX2", "FMA", "F16C"]),
          "avx512": (["-mavx512f"], ["AVX", "AVX2", "FMA", "F16C", "AVX512F", "AVX512BW",
                                     "AVX512DQ", "AVX512VL"])}
SSE_CPU = {"SSE42": True, "AVX": False, "AVX2": False}
AVX2_CPU = {"SSE42": True, "AVX": True, "AVX2": True, "FMA3": True, "F16C": True,
            "AVX512F": False}
AVX512_CPU = dict(AVX2_CPU, AVX512F=True, AVX512BW=True, AVX512DQ=True, AVX512VL=True)


@pytest.fixture(autouse=True)
def no_level_forced_in_this_process(monkeypatch):
    # choose_simd_level(forced=None) reads FASTCONV_SIMD, which .ci/run sets for a whole run;
    # the rules below are tested with and without it explicitly
    monkeypatch.delenv(cpu.SIMD_ENV, raising=False)


def run_python(code, simd=None):
    env = {k: v for k, v in os.environ.items() if k != cpu.SIMD_ENV}
    if simd is not None:
        env[cpu.SIMD_ENV] = simd
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)


# --- choosing a level -------------------------------------------------------------------------

@pytest.mark.parametrize("features, expected", [
    (SSE_CPU, "baseline"), (AVX2_CPU, "avx2"), (AVX512_CPU, "avx512")])
def test_the_best_level_the_cpu_runs_is_chosen(features, expected):
    assert cpu.choose_simd_level(LEVELS, forced=None, features=features) == expected


@pytest.mark.parametrize("forced", ["baseline", "avx2"])
def test_a_forced_level_the_cpu_runs_is_taken_even_if_a_better_one_exists(forced):
    assert cpu.choose_simd_level(LEVELS, forced=forced, features=AVX512_CPU) == forced


def test_a_forced_level_the_cpu_lacks_is_refused_naming_what_is_missing():
    with pytest.raises(ImportError, match=r"FASTCONV_SIMD='avx512' needs AVX512F.*"
                                          r"levels this CPU runs: baseline, avx2"):
        cpu.choose_simd_level(LEVELS, forced="avx512", features=AVX2_CPU)


@pytest.mark.parametrize("forced, message", [
    ("avx1024", r"'avx1024' is not a SIMD level: expected one of baseline, avx2, avx512"),
    ("AVX2", r"'AVX2' is not a SIMD level"),
])
def test_an_unknown_level_is_refused_naming_the_levels_built(forced, message):
    with pytest.raises(ImportError, match=message):
        cpu.choose_simd_level(LEVELS, forced=forced, features=AVX512_CPU)


def test_a_known_level_that_was_not_built_is_refused_as_such():
    with pytest.raises(ImportError, match=r"'avx512' was not built: expected one of baseline"):
        cpu.choose_simd_level({"baseline": ([], [])}, forced="avx512", features=AVX512_CPU)


def test_a_native_build_on_a_cpu_without_its_features_refuses_to_load():
    native = {"native": (["-march=znver5"], ["AVX2", "AVX512F"])}
    with pytest.raises(ImportError, match=r"compiled for a CPU with AVX512F.*-march=znver5"):
        cpu.choose_simd_level(native, forced=None, features=AVX2_CPU)
    assert cpu.choose_simd_level(native, forced=None, features=AVX512_CPU) == "native"


def test_without_numpy_s_answer_the_cpuinfo_flags_decide(monkeypatch):
    monkeypatch.setattr(cpu, "_cpuinfo_flags", lambda: {"sse4_2", "avx", "avx2", "fma", "f16c"})
    assert cpu.choose_simd_level(LEVELS, forced=None, features={}) == "avx2"
    # nothing can tell: only code without SIMD assumptions is safe
    monkeypatch.setattr(cpu, "_cpuinfo_flags", lambda: None)
    assert cpu.choose_simd_level(LEVELS, forced=None, features={}) == "baseline"


def test_a_tree_built_by_an_older_setup_py_asks_to_be_rebuilt(monkeypatch):
    class OldBuildInfo:   # fastconv 0.2: one -march for everything, no levels
        simd_required = ["AVX2"]
        compile_args = ["-march=native"]

    monkeypatch.setattr(cpu, "_build_info", lambda: OldBuildInfo)
    with pytest.raises(ImportError, match="older setup.py.*rebuild"):
        cpu.built_levels()


# --- this build ------------------------------------------------------------------------------

def test_every_kernel_source_is_bound_and_built_for_every_level():
    assert sorted(_kernels.MODULES) == KERNEL_SOURCES
    folder = pathlib.Path(_kernels.__file__).parent
    for level in BUILT:
        built = sorted(p.name.split(".")[0] for p in (folder / level).glob("*.so"))
        assert built == KERNEL_SOURCES, level


def test_the_loaded_kernels_are_the_chosen_level_s_and_no_other():
    level = cpu.simd_level()
    assert _kernels.LEVEL == level
    for name in _kernels.MODULES:
        module = getattr(_kernels, name)
        assert module.__name__ == f"fastconv._kernels.{level}.{name}"
        assert sys.modules[f"fastconv._kernels.{name}"] is module
    others = [m for m in sys.modules
              if any(m.startswith(f"fastconv._kernels.{other}.") for other in BUILT
                     if other != level)]
    assert others == []


def test_without_the_variable_the_best_runnable_level_is_loaded():
    run = run_python("import fastconv; print(fastconv._kernels.LEVEL)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == RUNNABLE[-1]


def test_a_dispatching_build_has_the_baseline_level():
    if fastconv.config.config_info()["arch"] != "dispatch":
        pytest.skip("a single-level build (FASTCONV_ARCH=native or another -march)")
    assert list(BUILT)[0] == "baseline" and BUILT["baseline"] == ([], [])


def test_show_config_names_the_level_in_use_and_the_levels_built():
    info = fastconv.config.config_info()
    assert info["simd_level"] == cpu.simd_level()
    assert info["simd_levels_built"] == list(BUILT)
    run = run_python("import fastconv; fastconv.show_config()")
    assert f"simd level:     {RUNNABLE[-1]}" in run.stdout
    assert "built: " + " ".join(BUILT) in run.stdout


def test_forcing_a_level_the_cpu_lacks_fails_the_import_with_the_reason():
    lacking = [level for level in BUILT if level not in RUNNABLE]
    for level in lacking + ["avx1024"]:
        run = run_python("import fastconv", simd=level)
        assert run.returncode != 0
        assert "ImportError" in run.stderr and f"FASTCONV_SIMD={level!r}" in run.stderr


# Every level computes the same results: each runs in its own process (a level is fixed for a
# process) on the same inputs, and the answers are compared with the float64 reference's
# tolerance (levels differ in FMA contraction and vector width, so not bit for bit).
CASES = """
import json, sys, numpy as np, fastconv
rng = np.random.default_rng(7)
x = rng.standard_normal((2, 6, 17, 19)).astype(np.float32)
w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
g = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
out = {}
operations = {
    "forward": lambda a: fastconv.conv2d(x, w, stride=2, padding=1, algorithm=a),
    "input_grad": lambda a: fastconv.grad.conv2d_input(x.shape, w, g, stride=2, padding=1,
                                                      algorithm=a),
    "weight_grad": lambda a: fastconv.grad.conv2d_weight(x, w.shape, g, stride=2, padding=1,
                                                        algorithm=a),
}
for operation, call in operations.items():
    for algorithm in fastconv.planning.algorithm_names(operation):
        try:
            out[operation + "/" + algorithm] = call(algorithm).ravel().tolist()
        except ValueError:   # an algorithm that does not take this problem
            pass
y, idx = fastconv.max_pool2d(x, 3, stride=2, return_indices=True)
out["max_pool2d"] = y.ravel().tolist(); out["indices"] = idx.ravel().tolist()
out["avg_pool3d"] = fastconv.avg_pool3d(x[None], 2).ravel().tolist()
out["bilinear"] = fastconv.interpolate(x, scale_factor=1.7, mode="bilinear").ravel().tolist()
out["depthwise"] = fastconv.conv2d(x, w[:6, :1], groups=6, padding=2, dilation=2).ravel().tolist()
out["conv1d"] = fastconv.conv1d(x[:, :, 0], w[:, :, 0]).ravel().tolist()
x5 = np.stack([x, 0.5 * x, -x], axis=2)
out["conv3d"] = fastconv.conv3d(x5, np.stack([w, w], axis=2), padding=1).ravel().tolist()
json.dump(out, sys.stdout)
"""


def test_every_level_the_cpu_runs_computes_the_same_results():
    results = {}
    for level in RUNNABLE:
        run = run_python(CASES, simd=level)
        assert run.returncode == 0, run.stderr[-2000:]
        results[level] = json.loads(run.stdout)
    first, *others = RUNNABLE
    assert len(results[first]) >= 20
    for level in others:
        assert results[level].keys() == results[first].keys()
        for key, expected in results[first].items():
            got = np.asarray(results[level][key])
            if key == "indices":
                np.testing.assert_array_equal(got, expected, err_msg=f"{level}: {key}")
            else:
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5,
                                           err_msg=f"{level} against {first}: {key}")
