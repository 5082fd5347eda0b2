"""Reliability: concurrent calls, thread pools, forked children, thread-count changes while
calls run, leaks over 10,000 calls, Ctrl-C during a long call, arrays past 2**31 elements,
and regressions for the defects the fuzzers found (notes/reliability.md lists them).
"""
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
import fastconv.grad as grad
import reference

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 8, 20, 20)).astype(np.float32)
W = RNG.standard_normal((8, 4, 3, 3)).astype(np.float32)       # groups=2
W_THIN = RNG.standard_normal((2, 8, 3, 3)).astype(np.float32)  # direct's case
B = RNG.standard_normal(8).astype(np.float32)
G = RNG.standard_normal((2, 8, 20, 20)).astype(np.float32)     # grad of conv(X, W, pad 1)
WT = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)       # transposed, groups=2: 6 out
X1 = RNG.standard_normal((2, 3, 12)).astype(np.float32)
WL = RNG.standard_normal((10, 4, 3, 3)).astype(np.float32)      # locally connected 1d
GL = RNG.standard_normal((2, 4, 10)).astype(np.float32)
X3 = RNG.standard_normal((1, 4, 6, 7, 8)).astype(np.float32)
POOLED = fastconv.max_pool2d(X, 2, return_indices=True)              # (2, 8, 10, 10)
W3 = RNG.standard_normal((5, 4, 3, 2, 3)).astype(np.float32)
XD = RNG.standard_normal((2, 8, 32, 33)).astype(np.float32)    # depthwise, both gradients
WD = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)      # in one pass

# Every public operator, as (name, call, exact): `exact` when the result is bit-for-bit the
# same from any thread and thread count (fastconv's own kernels); BLAS-based algorithms may
# round differently when a GEMM runs from a fresh thread (see tests/test_api.py).
OPERATORS = [
    ("conv2d direct", lambda: fastconv.conv2d(X, W, B, padding=1, groups=2,
                                              algorithm="direct"), True),
    ("conv2d packed", lambda: fastconv.conv2d(X, W, B, padding=1, groups=2,
                                              algorithm="packed"), True),
    ("conv2d im2col", lambda: fastconv.conv2d(X, W, B, padding=1, groups=2,
                                              algorithm="im2col"), False),
    ("conv2d gemm1x1", lambda: fastconv.conv2d(X, W[:, :, :1, :1], groups=2,
                                               algorithm="gemm1x1"), False),
    ("conv2d reflect thin", lambda: fastconv.conv2d(X, W_THIN, padding=2, dilation=2,
                                                    padding_mode="reflect"), True),
    ("conv1d", lambda: fastconv.conv1d(X1, W[:4, :3, 0], stride=2, padding=1), True),
    ("conv3d", lambda: fastconv.conv3d(X3, W3, padding=1, dilation=(1, 2, 1)), True),
    ("convolve", lambda: fastconv.convolve(X[0, 0], W[0, 0], mode="same"), True),
    ("correlate", lambda: fastconv.correlate(X[0, 0], W[0, 0]), True),
    ("conv_transpose2d", lambda: fastconv.conv_transpose2d(X, WT, stride=2, padding=1,
                                                           output_padding=1, groups=2), False),
    ("conv_transpose1d", lambda: fastconv.conv_transpose1d(X1, WT[:3, :, 0], stride=3), False),
    ("conv2d_input", lambda: grad.conv2d_input(X.shape, W, G, padding=1, groups=2), False),
    ("conv2d_weight", lambda: grad.conv2d_weight(X, W.shape, G, padding=1, groups=2), False),
    ("conv2d_backward", lambda: np.concatenate([d.ravel() for d in grad.conv2d_backward(
        XD, WD, XD[:, ::-1], padding=1, groups=8)]), False),
    ("conv_bias", lambda: grad.conv_bias(G), True),
    ("conv_transpose2d_input", lambda: grad.conv_transpose2d_input(
        X.shape, WT, np.ones((2, 6, 39, 39), np.float32), stride=2, padding=1, groups=2),
     False),
    ("conv_transpose2d_weight", lambda: grad.conv_transpose2d_weight(
        X, WT.shape, np.ones((2, 6, 39, 39), np.float32), stride=2, padding=1, groups=2),
     False),
    ("locally_connected1d", lambda: fastconv.locally_connected1d(X1, WL, padding=0), False),
    ("locally_connected1d_input", lambda: grad.locally_connected1d_input(X1.shape, WL, GL),
     False),
    ("locally_connected1d_weight", lambda: grad.locally_connected1d_weight(X1, WL.shape, GL),
     False),
    ("locally_connected_bias", lambda: grad.locally_connected_bias(GL), True),
    ("max_pool2d", lambda: fastconv.max_pool2d(X, 3, 2, 1, return_indices=True)[1], True),
    ("max_pool1d", lambda: fastconv.max_pool1d(X1, 2, dilation=2, ceil_mode=True), True),
    ("max_pool3d", lambda: fastconv.max_pool3d(X3, 2), True),
    ("avg_pool2d", lambda: fastconv.avg_pool2d(X, 3, 2, 1, count_include_pad=False), True),
    ("adaptive_avg_pool2d", lambda: fastconv.adaptive_avg_pool2d(X, (7, 5)), True),
    ("adaptive_max_pool2d", lambda: fastconv.adaptive_max_pool2d(X, 6), True),
    ("max_unpool2d", lambda: fastconv.max_unpool2d(*POOLED, 2), True),
    ("interpolate", lambda: fastconv.interpolate(X, scale_factor=1.5, mode="bilinear"), True),
    ("grad.max_pool2d", lambda: grad.max_pool2d(POOLED[0], POOLED[1], X.shape), True),
    ("grad.avg_pool2d", lambda: grad.avg_pool2d(POOLED[0], X.shape, 2), True),
    ("grad.adaptive_avg_pool2d", lambda: grad.adaptive_avg_pool2d(POOLED[0], X.shape), True),
    ("grad.adaptive_max_pool2d", lambda: grad.adaptive_max_pool2d(POOLED[0], POOLED[1],
                                                                  X.shape), True),
    ("grad.max_unpool2d", lambda: grad.max_unpool2d(X, POOLED[1], POOLED[0].shape), True),
    ("grad.interpolate", lambda: grad.interpolate(np.ones((2, 8, 30, 30), np.float32), X.shape,
                                                  scale_factor=1.5, mode="bilinear"), True),
]
OPERATOR_IDS = [name for name, _, _ in OPERATORS]


def assert_same(got, want, exact, what):
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4, err_msg=what)


def test_every_public_operator_is_exercised_here():
    """The harness must grow with the package: a new public operator fails this test until it
    joins OPERATORS (and the fuzzers)."""
    public = set(fastconv.__all__) | {f"grad.{n}" for n in grad.__all__}
    helpers = {"__version__", "show_config", "set_num_threads", "get_num_threads",
               "set_precision", "get_precision", "precision",
               "set_denormals", "get_denormals", "denormals",
               "set_autotune", "get_autotune", "autotune", "forget_autotuned",
               "set_memory_pool", "get_memory_pool", "empty_memory_pool", "memory_pool_info",
               "num_threads", "output_shape", "receptive_field", "ReceptiveField",
               "choose_algorithm"}
    covered = {name.split()[0] for name in OPERATOR_IDS}
    # the gradients listed under their module's own names (conv2d_input is in fastconv.grad)
    covered |= {f"grad.{c}" for c in covered if c in grad.__all__ and c not in fastconv.__all__}

    def family(name):   # conv_transpose3d_input and conv_transpose1d_input are one family
        for d in ("1d", "2d", "3d"):
            name = name.replace(d, "Nd")
        return name
    missing = {n for n in public - helpers if family(n) not in {family(c) for c in covered}}
    assert not missing, f"operators without a reliability check: {sorted(missing)}"


# ---------------------------------------------------------------------------------------------
# Concurrency

@pytest.mark.timeout(120)
def test_eight_threads_on_shared_inputs_agree_with_serial_calls():
    serial = [call() for _, call, _ in OPERATORS]
    results, errors = {}, []
    barrier = threading.Barrier(8)

    def work(worker):
        try:
            barrier.wait()
            for repeat in range(3):
                for index in np.random.default_rng(worker * 10 + repeat).permutation(
                        len(OPERATORS)):
                    results.setdefault(int(index), []).append(OPERATORS[index][1]())
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    for index, (name, _, exact) in enumerate(OPERATORS):
        assert len(results[index]) == 24
        for got in results[index]:
            assert_same(got, serial[index], exact, name)
    # the inputs were shared, never written
    assert np.array_equal(X, np.random.default_rng(7).standard_normal(
        (2, 8, 20, 20)).astype(np.float32))


@pytest.mark.timeout(120)
def test_calls_from_a_thread_pool_executor():
    serial = {name: call() for name, call, _ in OPERATORS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [(name, exact, pool.submit(call)) for name, call, exact in OPERATORS * 4]
        for name, exact, future in futures:
            assert_same(future.result(timeout=60), serial[name], exact, name)


@pytest.mark.timeout(120)
def test_thread_count_changes_while_other_threads_compute():
    x = np.random.default_rng(1).standard_normal((4, 16, 40, 40)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((16, 16, 3, 3)).astype(np.float32)
    want = fastconv.conv2d(x, w, padding=1, algorithm="packed")
    stop, errors, done = threading.Event(), [], []

    def compute():
        try:
            while not stop.is_set():
                got = fastconv.conv2d(x, w, padding=1, algorithm="packed")
                np.testing.assert_array_equal(got, want)
                done.append(1)
        except Exception as err:
            errors.append(err)

    original = fastconv.get_num_threads()
    workers = [threading.Thread(target=compute) for _ in range(3)]
    for t in workers:
        t.start()
    try:
        for n in [1, 2, 3, 1, 4, 2, 8, 1, 2] * 3:
            fastconv.set_num_threads(n)
            with fastconv.num_threads(max(1, n // 2)):
                time.sleep(0.01)
            time.sleep(0.01)
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=60)
        fastconv.set_num_threads(original)
    assert not errors, errors
    assert len(done) >= 3


@pytest.mark.timeout(120)
def test_the_gil_is_released_while_a_kernel_runs():
    """A pure-Python thread keeps running while another thread is inside fastconv. Were the
    GIL held, it would only run between kernel calls; released, it shares the CPU (about half
    its solo rate on one free core, all of it on two)."""
    # calls of ~70 ms: a call holding the GIL would leave the loop ~8% of its rate (measured
    # with sorted() on a list of strings), fastconv leaves it ~47% on one free core
    x = np.random.default_rng(0).standard_normal((1, 64, 160, 160)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((64, 64, 3, 3)).astype(np.float32)
    ticks, stop = [0], threading.Event()

    def python_loop():
        while not stop.is_set():
            ticks[0] += 1

    def rate_while(action, seconds=1.0):
        start_ticks, start = ticks[0], time.perf_counter()
        while time.perf_counter() - start < seconds:
            action()
        return (ticks[0] - start_ticks) / (time.perf_counter() - start)

    counter = threading.Thread(target=python_loop)
    counter.start()
    try:
        with fastconv.num_threads(1):
            fastconv.conv2d(x, w, padding=1)
            alone = rate_while(lambda: time.sleep(0.05))
            during = rate_while(lambda: fastconv.conv2d(x, w, padding=1, algorithm="packed"))
            alone = max(alone, rate_while(lambda: time.sleep(0.05)))
    finally:
        stop.set()
        counter.join()
    assert during > 0.25 * alone, f"Python ran at {during / alone:.0%} of its rate"


def _child_conv(queue):
    x = np.ones((2, 8, 64, 64), np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    dx = grad.conv2d_input(x.shape, w, y, padding=1)
    queue.put((float(y[0, 0, 10, 10]), float(dx[0, 0, 10, 10]),
               fastconv._runtime.threads.threads_for(10**9)))


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux's default")
def test_a_forked_child_computes_after_the_parent_used_openmp():
    # the parent runs parallel regions first (GNU libgomp's pool is then live in the parent)
    with fastconv.num_threads(2):
        fastconv.conv2d(np.ones((4, 8, 64, 64), np.float32), np.ones((8, 8, 3, 3), np.float32))
        fastconv.conv2d(np.ones((4, 8, 64, 64), np.float32), np.ones((8, 8, 3, 3), np.float32),
                        algorithm="im2col")
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_conv, args=(queue,))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung in fastconv")
    assert child.exitcode == 0
    y, dx, child_threads = queue.get(timeout=5)
    assert y == 8 * 9 and dx == 8 * 9 * 72
    assert child_threads == 1      # a team of one: libgomp's pool is not usable after fork


# ---------------------------------------------------------------------------------------------
# Resources

def _sanitizer_build():
    try:
        from fastconv import _build_info
    except ImportError:
        return False
    return bool(_build_info.sanitize)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


LEAK_CALLS = 10_000
# The bounds: RSS may move by allocator noise (a few arenas), never by a leak of even 100
# bytes per call (1 MB over 10,000 calls); Python objects still alive must be a few KiB.
RSS_BOUND = 4 << 20
TRACED_BOUND = 64 << 10


@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.skipif(_sanitizer_build(), reason="AddressSanitizer keeps freed memory in "
                    "quarantine: RSS grows without a leak (the release build runs this)")
def test_ten_thousand_calls_of_each_operator_leak_nothing():
    small = {"X": X[:1, :, :6, :6], "G": G[:1, :, :6, :6]}
    calls = [
        lambda: fastconv.conv2d(small["X"], W, B, padding=1, groups=2, algorithm="direct"),
        lambda: fastconv.conv2d(small["X"], W, B, padding=1, groups=2, algorithm="packed"),
        lambda: fastconv.conv2d(small["X"], W, B, padding=1, groups=2, algorithm="im2col"),
        lambda: fastconv.conv2d(small["X"], W[:, :, :1, :1], groups=2, algorithm="gemm1x1"),
        lambda: fastconv.conv2d(small["X"], W_THIN, padding=1, padding_mode="circular"),
        lambda: fastconv.convolve(X[0, 0, :5, :5], W[0, 0]),
        lambda: fastconv.conv_transpose2d(small["X"], WT, stride=2, groups=2),
        lambda: fastconv.conv_transpose2d(small["X"], WT, stride=2, groups=2,
                                          algorithm="col2im"),
        lambda: grad.conv2d_input(small["X"].shape, W, small["G"], padding=1, groups=2),
        lambda: grad.conv2d_weight(small["X"], W.shape, small["G"], padding=1, groups=2),
        lambda: fastconv.locally_connected1d(X1[:1], WL),
        lambda: grad.locally_connected1d_input(X1[:1].shape, WL, GL[:1]),
        lambda: grad.locally_connected1d_weight(X1[:1], WL.shape, GL[:1]),
        lambda: fastconv.max_pool2d(small["X"], 3, 2, 1, return_indices=True),
        lambda: fastconv.avg_pool2d(small["X"], 2, ceil_mode=True),
        lambda: fastconv.adaptive_max_pool2d(small["X"], 4, return_indices=True),
        lambda: fastconv.adaptive_avg_pool2d(small["X"], 4),
        lambda: fastconv.max_unpool2d(POOLED[0][:1, :, :3, :3], POOLED[1][:1, :, :3, :3] % 36,
                                      2),
        lambda: fastconv.interpolate(small["X"], size=(9, 7), mode="bilinear"),
        lambda: grad.max_pool2d(POOLED[0][:1, :, :3, :3], POOLED[1][:1, :, :3, :3] % 36,
                                (1, 8, 6, 6)),
        lambda: grad.avg_pool2d(small["G"], (1, 8, 6, 6), 1),
        lambda: grad.interpolate(small["G"], (1, 8, 3, 3), scale_factor=2),
    ]
    for index, call in enumerate(calls):
        for _ in range(500):          # warm up: caches, arenas, lazily created objects
            call()
        gc.collect()
        tracemalloc.start()
        rss_before = _rss_bytes()
        traced_before, _ = tracemalloc.get_traced_memory()
        for _ in range(LEAK_CALLS):
            call()
        gc.collect()
        traced_after, _ = tracemalloc.get_traced_memory()
        rss_after = _rss_bytes()
        tracemalloc.stop()
        assert traced_after - traced_before < TRACED_BOUND, (index, traced_after - traced_before)
        assert rss_after - rss_before < RSS_BOUND, (index, rss_after - rss_before)


# ---------------------------------------------------------------------------------------------
# Ctrl-C

INTERRUPTED_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import fastconv
    x = np.ones((64, 16, 256, 256), np.float32)
    w = np.ones((64, 16, 11, 11), np.float32)
    out = np.empty((64, 64, 246, 246), np.float32)
    print("start", flush=True)
    try:
        # 4-6 s on 2 Zen 5 cores (a 3x3 kernel took under 1 s once the kernels got faster)
        fastconv.conv2d(x, w, out=out, algorithm="{algorithm}")
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
        # nothing is corrupted: another call works and is right
        y = fastconv.conv2d(x[:1, :, :12, :12], w)
        assert (y == 16 * 121).all()
        print("ok", flush=True)
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("algorithm", ["packed", "direct", "im2col"])
def test_ctrl_c_stops_a_long_convolution_within_a_second(algorithm):
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_CHILD.format(
        algorithm=algorithm)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "start"
        time.sleep(1.0)                       # well inside the call
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert line and line[0] == "interrupted", line
        assert float(line[1]) - sent < 1.0, f"stopped {float(line[1]) - sent:.2f} s after Ctrl-C"
        assert child.stdout.readline().strip() == "ok"
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()


# ---------------------------------------------------------------------------------------------
# Regressions: one test per defect found by the harness (notes/reliability.md)

def test_regression_a_huge_thread_count_is_refused_instead_of_crashing():
    # set_num_threads(100000) was accepted, then the next call crashed the process (SIGSEGV
    # in libgomp creating the team); set_num_threads(2**40) broke every later call.
    before = fastconv.get_num_threads()
    for n in (100_000, 2**40):
        with pytest.raises(ValueError, match="at most 1024"):
            fastconv.set_num_threads(n)
    assert fastconv.get_num_threads() == before
    code = ("import numpy as np, fastconv; print(fastconv.get_num_threads()); "
            "print(fastconv.conv2d(np.ones((1, 4, 300, 300)), np.ones((4, 4, 3, 3))).sum())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "FASTCONV_NUM_THREADS": "100000"})
    assert run.returncode == 0, run.stderr
    expected = "1024" if fastconv._core.openmp_enabled() else "1"
    assert run.stdout.split()[0] == expected


@pytest.mark.parametrize("call, name", [
    (lambda: fastconv.conv1d(np.ones((1, 1, 5)), np.ones((1, 1, 3)), stride=2**70), "stride"),
    (lambda: fastconv.conv1d(np.ones((1, 1, 5)), np.ones((1, 1, 3)), padding=2**62),
     "padding"),
    (lambda: fastconv.conv3d(np.ones((1, 1, 2, 2, 2)), np.ones((1, 1, 1, 1, 1)),
                             padding=2**32), "output shape"),
    (lambda: fastconv.output_shape((1, 1, 2**62), (1, 1, 3), padding=2**32), "output shape"),
    (lambda: fastconv.conv_transpose3d(np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 1, 1, 1)),
                                       stride=2**32), "output shape"),
], ids=["stride-2**70", "padding-2**62", "conv3d-output-past-2**63",
        "output_shape-past-2**63", "conv_transpose3d-output-past-2**63"])
def test_regression_sizes_past_int64_raise_a_clear_error(call, name):
    # these raised OverflowError, NumPy's unnamed "array is too big", or returned a shape
    # with entries past 2**63
    with pytest.raises(ValueError, match=name):
        call()


def test_regression_pooling_backward_and_unpooling_of_an_empty_batch():
    # raised NumPy's "cannot reshape array of size 0 into shape (0,newaxis)"
    values, indices = fastconv.max_pool2d(np.ones((0, 2, 4, 4)), 2, return_indices=True)
    assert grad.max_pool2d(values, indices, (0, 2, 4, 4)).shape == (0, 2, 4, 4)
    assert grad.adaptive_max_pool2d(values, indices, (0, 2, 4, 4)).shape == (0, 2, 4, 4)
    assert fastconv.max_unpool2d(values, indices, 2).shape == (0, 2, 4, 4)
    assert grad.max_unpool2d(np.ones((0, 2, 4, 4)), indices, values.shape).shape == (0, 2, 2, 2)


@pytest.mark.parametrize("call, name", [
    (lambda: fastconv.avg_pool2d(np.ones((1, 1, 4, 4)), 2, divisor_override=2**1100),
     "divisor_override"),
    (lambda: grad.max_pool1d(np.ones((2, 3, 3)), np.zeros((2, 3, 3), np.int64), (2, 3, 2**62)),
     "input_shape"),
    (lambda: fastconv.adaptive_avg_pool3d(np.ones((1, 1, 2, 2, 2)), 2**32), "output_size"),
    (lambda: fastconv.max_unpool3d(np.ones((1, 1, 1, 1, 1)), np.zeros((1, 1, 1, 1, 1), int),
                                   2**32), "output_size"),
    (lambda: fastconv.interpolate(np.ones((1, 1, 6)), scale_factor=1e300), "scale_factor"),
    (lambda: fastconv.interpolate(np.ones((1, 1, 2, 2, 2)), size=2**32), "size"),
    (lambda: grad.interpolate(np.ones((1, 1, 2)), (1, 1, 2**62), size=2), "input_shape"),
], ids=["divisor_override-2**1100", "pool-backward-input_shape-2**62", "adaptive-2**96",
        "unpool-2**96", "interpolate-scale-1e300", "interpolate-size-2**96",
        "interpolate-backward-input_shape"])
def test_regression_pooling_sizes_past_int64_raise_a_clear_error(call, name):
    # these raised OverflowError or NumPy's unnamed "array is too big" / "Maximum allowed
    # dimension exceeded"
    with pytest.raises(ValueError, match=name):
        call()


def test_regression_a_legal_huge_stride_and_padding_compute_correctly():
    """Stride and padding of 2**32 are legal (one output per axis reads the input): the
    kernels see the stride as 1 where it is never applied."""
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5)
    w = np.ones((1, 1, 3))
    for algorithm in ("direct", "packed", "im2col"):
        got = fastconv.conv1d(x, w, padding=2**32, stride=2**32, algorithm=algorithm)
        np.testing.assert_array_equal(got, [[[0.0, 3.0, 0.0]]])
        got = fastconv.conv1d(x, w, stride=2**32, algorithm=algorithm)
        np.testing.assert_array_equal(got, [[[3.0]]])


@pytest.mark.parametrize("full_width_blas", [True, False])
def test_regression_planes_past_2_to_the_31_never_go_to_blas(full_width_blas, monkeypatch):
    # BLAS sizes and leading dimensions are 32-bit ints: the im2col/gemm1x1 kernels passed
    # plane sizes of 2**31 or more to it truncated (wrong results or a crash, for a legal call)
    monkeypatch.setattr(fastconv._plan.dispatch, "_BLAS_FULL_WIDTH", full_width_blas)
    side = 46341                                            # side**2 > 2**31
    x = np.broadcast_to(np.float32(0), (1, 1, side, side))   # no memory behind it
    w = np.ones((1, 1, 1, 1), np.float32)
    assert fastconv.choose_algorithm(x.shape, w.shape).algorithm != "gemm1x1"
    for algorithm in ("im2col", "gemm1x1"):
        with pytest.raises(ValueError, match=r"2\*\*31"):
            fastconv.conv2d(x, w, algorithm=algorithm)
    problem = fastconv.planning.problem_from_call(x.shape, w.shape)
    assert fastconv.planning.plan_input_grad(problem, x.dtype).algorithm != "gemm1x1"
    with pytest.raises(ValueError, match=r"2\*\*31"):
        grad.conv2d_input(x.shape, w, x, algorithm="gemm1x1")


@pytest.mark.parametrize("algorithm", ["direct", "packed", "im2col"])
def test_long_calls_run_in_pieces_with_the_same_result(algorithm, monkeypatch):
    x = np.random.default_rng(3).standard_normal((3, 6, 9, 9)).astype(np.float32)
    w = np.random.default_rng(4).standard_normal((12, 3, 3, 3)).astype(np.float32)
    b = np.random.default_rng(5).standard_normal(12).astype(np.float32)
    whole = fastconv.conv2d(x, w, b, padding=1, groups=2, algorithm=algorithm)
    monkeypatch.setattr(fastconv._plan.tiling, "INTERRUPT_WORK", 1)
    plan = fastconv.planning.plan_conv(fastconv.planning.problem_from_call(
        x, w, b, padding=1, groups=2), x.dtype, algorithm)
    split = fastconv.conv2d(x, w, b, padding=1, groups=2, algorithm=algorithm)
    assert len(plan.pieces) == 3 * 2          # per image, per group
    assert_same(split, whole, algorithm != "im2col", algorithm)
    np.testing.assert_allclose(split, reference.conv_nd(x, w, b, padding=1, groups=2),
                               rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Large arrays (run with --runslow; about 11 GiB of memory and a few minutes)

@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_convolution_and_max_pool_of_an_array_past_2_to_the_31_elements():
    side = 46341                             # side**2 = 2**31 + 9,282
    x = np.empty((1, 1, side, side), np.float32)
    columns = (np.arange(side) % 241).astype(np.float32) * 0.5
    for r0 in range(0, side, 4096):        # in blocks: no 8 GiB temporaries
        rows = (np.arange(r0, min(r0 + 4096, side)) % 251).astype(np.float32)
        np.subtract(rows[:, None], columns[None, :], out=x[0, 0, r0:r0 + 4096])
    w = np.random.default_rng(0).standard_normal((1, 1, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1, stride=2)
    assert y.shape == (1, 1, 23171, 23171)
    rng = np.random.default_rng(1)
    # sampled positions, the last rows and columns (past 2**31 in the flat input) included
    positions = list(zip(rng.integers(0, 23171, 200), rng.integers(0, 23171, 200)))
    positions += [(23170, 23170), (23170, 0), (0, 23170), (23169, 23170)]
    for i, j in positions:
        window = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                r, c = 2 * i - 1 + a, 2 * j - 1 + b
                if 0 <= r < side and 0 <= c < side:
                    window[a, b] = x[0, 0, r, c]
        want = reference.conv_nd(window[None, None], w)[0, 0, 0, 0]
        assert abs(y[0, 0, i, j] - want) <= 1e-4 * (1 + abs(want)), (i, j)
    # the GEMM-shaped path too (64-bit panels; BLAS paths refuse planes this large)
    packed = fastconv.conv2d(x, w, padding=1, stride=2, algorithm="packed")
    for r0 in range(0, y.shape[2], 2048):   # in blocks: assert_allclose's float64
        np.testing.assert_allclose(packed[0, 0, r0:r0 + 2048], y[0, 0, r0:r0 + 2048],
                                   rtol=1e-5, atol=1e-3)   # temporaries would take 12 GiB
    del y, packed
    # max-pool with indices: flat positions past 2**31 must be exact int64
    values, indices = fastconv.max_pool2d(x, 3, return_indices=True)
    assert values.shape == (1, 1, 15447, 15447) and indices.dtype == np.int64
    assert indices.max() > 2**31
    positions = list(zip(rng.integers(0, 15447, 200), rng.integers(0, 15447, 200)))
    positions += [(15446, 15446), (15446, 0), (0, 15446)]
    for i, j in positions:
        window = x[0, 0, 3 * i:3 * i + 3, 3 * j:3 * j + 3]
        a, b = np.unravel_index(np.argmax(window), (3, 3))   # first maximum, as PyTorch
        assert values[0, 0, i, j] == window[a, b], (i, j)
        assert indices[0, 0, i, j] == (3 * i + a) * side + 3 * j + b, (i, j)


# ---------------------------------------------------------------------------------------------
# The sanitizer build (.ci/sanitize) really checks: a kernel handed inconsistent shapes (what
# the Python layer exists to prevent) must be reported, or a clean sanitizer run proves nothing.

@pytest.mark.skipif(not _sanitizer_build(), reason="only in the sanitizer build: .ci/sanitize")
def test_the_sanitizer_reports_an_out_of_bounds_read_in_a_kernel():
    code = ("import numpy as np, fastconv; from fastconv._kernels import conv_direct; "
            "x = np.ones((1, 1, 1, 4, 4)); w = np.ones((1, 8, 1, 1, 1)); "   # 8 channels of 1
            "out = np.empty((1, 1, 1, 4, 4)); "
            "conv_direct.conv_forward(int(fastconv.planning.Kernel.CONV_DIRECT_ROWS), x, w, "
            "np.empty(0), out, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1, 1, 1, 1)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in run.stderr, run.stderr[-2000:]
