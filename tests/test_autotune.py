"""The opt-in autotuner: off by default; on, the first call of a problem times every family
that computes it, the fastest is remembered (in the process and, with a cache file, on disk)
and runs from then on, and choose_algorithm says so."""
import json
import warnings

import numpy as np
import pytest

import fastconv
from fastconv._plan import dispatch
from fastconv._runtime import autotune as autotune_module
from fastconv.planning import problem_from_call

import reference

X_SHAPE, W_SHAPE, KWARGS = (2, 3, 12, 12), (4, 3, 5, 5), dict(padding=2)


@pytest.fixture(autouse=True)
def fresh_autotuner(monkeypatch):
    """Each test starts with the autotuner unset and nothing remembered."""
    monkeypatch.delenv(autotune_module.ENV, raising=False)
    monkeypatch.delenv(autotune_module.ENV_CACHE, raising=False)
    monkeypatch.setattr(autotune_module, "_requested", None)
    monkeypatch.setattr(autotune_module, "_requested_file", None)
    fastconv.forget_autotuned()
    yield
    fastconv.forget_autotuned()


@pytest.fixture
def fake_clock(monkeypatch):
    """measure() returns a chosen time per family: which is fastest is then the test's to
    say, not the machine's. Returns (the families timed, in order; the times)."""
    import fastconv._ops.conv as conv_ops
    timed = []
    speeds = {"direct": 3.0, "im2col": 1.0, "gemm1x1": 9.0, "packed": 2.0, "winograd": 9.0,
              "fft": 4.0}
    real_plan_conv = conv_ops.plan_conv

    def plan_conv(problem, dtype, algorithm="auto"):
        if algorithm != "auto":      # the autotuner plans each candidate, then measures it
            timed.append(algorithm)
        return real_plan_conv(problem, dtype, algorithm)

    def measure(run):
        run()
        return speeds[timed[-1]]
    monkeypatch.setattr(conv_ops, "plan_conv", plan_conv)
    monkeypatch.setattr(autotune_module, "measure", measure)
    return timed, speeds


def call(rng=None):
    rng = rng or np.random.default_rng(0)
    x, w = rng.standard_normal(X_SHAPE), rng.standard_normal(W_SHAPE)
    return x, w, fastconv.conv2d(x, w, **KWARGS)


def test_off_by_default_the_rules_decide():
    assert fastconv.get_autotune() is False
    plan = fastconv.choose_algorithm(X_SHAPE, W_SHAPE, **KWARGS, dtype=np.float64)
    assert "autotuned" not in plan.reason


def test_the_first_call_times_every_candidate_and_the_fastest_runs_after(fake_clock):
    calls, _ = fake_clock
    problem = problem_from_call(X_SHAPE, W_SHAPE, **KWARGS)
    candidates = dispatch.autotune_candidates(problem)
    assert {"direct", "im2col", "packed", "fft"} <= set(candidates)
    with fastconv.autotune():
        x, w, got = call()
        assert len(calls) == len(candidates)
        np.testing.assert_allclose(got, reference.conv_nd(x, w, **KWARGS), atol=1e-10)
        plan = fastconv.choose_algorithm(X_SHAPE, W_SHAPE, **KWARGS, dtype=np.float64)
        assert plan.algorithm == "im2col"           # the fake clock's fastest
        assert "autotuned" in plan.reason and "im2col 1e+03 ms" in plan.reason
        call()                                      # remembered: no second measurement
        assert len(calls) == len(candidates)
    # off again: the rules decide, the winner is kept for when it is on
    plan = fastconv.choose_algorithm(X_SHAPE, W_SHAPE, **KWARGS, dtype=np.float64)
    assert "autotuned" not in plan.reason


def test_winners_are_per_dtype_and_per_thread_count(fake_clock):
    calls, _ = fake_clock
    with fastconv.autotune():
        call()
        first = len(calls)
        x = np.ones(X_SHAPE, np.float32)
        fastconv.conv2d(x, np.ones(W_SHAPE, np.float32), **KWARGS)
        assert len(calls) == 2 * first
    problem = problem_from_call(X_SHAPE, W_SHAPE, **KWARGS)
    assert dispatch.autotune_key("forward", problem, "float32") != \
        dispatch.autotune_key("forward", problem, "float64")


def test_exact_precision_never_times_the_approximate_algorithms():
    problem = problem_from_call((1, 64, 20, 20), (64, 64, 3, 3), padding=1)
    assert {"winograd", "fft"} <= set(dispatch.autotune_candidates(problem))
    with fastconv.precision("exact"):
        assert not {"winograd", "fft"} & set(dispatch.autotune_candidates(problem))


def test_a_cache_file_keeps_winners_between_processes(fake_clock, tmp_path):
    calls, speeds = fake_clock
    path = tmp_path / "tuned.json"
    with fastconv.autotune(cache_file=path):
        call()
    measured = len(calls)
    data = json.loads(path.read_text())
    assert data["version"] == autotune_module.FILE_VERSION
    (entry,) = data["winners"].values()
    assert entry["algorithm"] == "im2col"
    fastconv.forget_autotuned()                     # as a new process would start
    speeds["packed"] = 0.1                          # would win if measured again
    with fastconv.autotune(cache_file=path):
        call()
        assert len(calls) == measured               # read from the file, not measured
        plan = fastconv.choose_algorithm(X_SHAPE, W_SHAPE, **KWARGS, dtype=np.float64)
        assert plan.algorithm == "im2col"


def test_a_winner_the_file_names_wrongly_is_not_run(fake_clock, tmp_path):
    path = tmp_path / "edited.json"
    with fastconv.autotune(cache_file=path):
        call()
    data = json.loads(path.read_text())
    for entry in data["winners"].values():
        entry["algorithm"] = "winograd_f6"          # a name no version of fastconv has
    path.write_text(json.dumps(data))
    fastconv.forget_autotuned()
    with fastconv.autotune(cache_file=path):
        x, w, got = call()                          # the rules decide; no error
        np.testing.assert_allclose(got, reference.conv_nd(x, w, **KWARGS), atol=1e-10)
        plan = fastconv.choose_algorithm(X_SHAPE, W_SHAPE, **KWARGS, dtype=np.float64)
        assert "autotuned" not in plan.reason


def test_the_environment_turns_it_on(fake_clock, tmp_path, monkeypatch):
    calls, _ = fake_clock
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "1")
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", str(tmp_path / "env.json"))
    assert fastconv.get_autotune() is True
    call()
    assert calls and (tmp_path / "env.json").exists()


@pytest.mark.parametrize("content", ["not json", '{"version": 99, "winners": {}}',
                                     '{"version": 1, "winners": {"k": {"times": 3}}}', "[]"])
def test_a_damaged_cache_file_is_ignored_with_a_warning(content, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with fastconv.autotune(cache_file=path):
        with pytest.warns(RuntimeWarning, match="autotune cache"):
            x, w, got = call()
    np.testing.assert_allclose(got, reference.conv_nd(x, w, **KWARGS), atol=1e-10)
    # the measurements replaced it with a good file
    assert json.loads(path.read_text())["version"] == autotune_module.FILE_VERSION


def test_an_unwritable_cache_file_warns_and_the_call_still_runs(tmp_path):
    path = tmp_path / "no such directory" / "tuned.json"
    with fastconv.autotune(cache_file=path):
        with pytest.warns(RuntimeWarning, match="not written"):
            x, w, got = call()
        np.testing.assert_allclose(got, reference.conv_nd(x, w, **KWARGS), atol=1e-10)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            call()                                  # remembered in the process: no retry


def test_real_measurements_pick_a_family_that_computes_the_call():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 200, 200)).astype(np.float32)
    w = rng.standard_normal((1, 1, 21, 21)).astype(np.float32)
    with fastconv.autotune():
        got = fastconv.conv2d(x, w, padding=10)
        plan = fastconv.choose_algorithm(x, w, padding=10)
    assert plan.algorithm in dispatch.autotune_candidates(problem_from_call(x, w, padding=10))
    assert plan.reason.startswith("autotuned")
    want = reference.conv_nd(x.astype(np.float64), w.astype(np.float64), padding=10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("enabled", ["yes", 1, None])
def test_a_bad_setting_names_what_is_expected(enabled, monkeypatch):
    with pytest.raises(TypeError, match="enabled must be True or False"):
        fastconv.set_autotune(enabled)
    with pytest.raises(TypeError, match="cache_file must be a path"):
        fastconv.set_autotune(True, cache_file=3)
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "yes")
    with pytest.raises(ValueError, match="FASTCONV_AUTOTUNE must be '0' or '1'"):
        fastconv.get_autotune()
