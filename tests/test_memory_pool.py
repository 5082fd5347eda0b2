"""The cache of freed blocks behind fastconv's arrays (fastconv/_runtime/memory.py): what
fastconv allocates comes from it and goes back to it, a block is reused for the next array of
its size, results never depend on it, and the caller's own allocations never touch it."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
import fastconv.ndimage
from fastconv import _core
from fastconv.operators import OPERATORS
from fastconv._runtime.memory import pooled

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:     # NumPy 1.x
    from numpy.core.multiarray import get_handler_name

POOL = "fastconv_pool"
BIG = (4, 16, 64, 64)       # 1 MiB of float32: above the cache's smallest block


def owner(a):
    """The array that owns `a`'s memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def allocator_of(a):
    return get_handler_name(owner(a))


@pytest.fixture
def pool():
    """The cache on, empty, with its default limit; restored after."""
    previous = fastconv.set_memory_pool(1 << 30)
    fastconv.empty_memory_pool()
    yield
    fastconv.set_memory_pool(previous)


def random(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


FORWARD_CALLS = {
    "conv": lambda x: fastconv.conv2d(x, random((8, 16, 3, 3)), padding=1),
    "conv_transpose": lambda x: fastconv.conv_transpose2d(x, random((16, 4, 2, 2)), stride=2),
    "locally_connected": lambda x: fastconv.locally_connected2d(
        x[:, :2], random((64, 64, 4, 2, 3, 3)), padding=1),
    "max_pool": lambda x: fastconv.max_pool2d(x, 2),
    "adaptive_max_pool": lambda x: fastconv.adaptive_max_pool2d(x, 32),
    "max_unpool": lambda x: fastconv.max_unpool2d(*fastconv.max_pool2d(x, 2, return_indices=True),
                                                  2),
    "avg_pool": lambda x: fastconv.avg_pool2d(x, 2),
    "adaptive_avg_pool": lambda x: fastconv.adaptive_avg_pool2d(x, 32),
    "interpolate": lambda x: fastconv.interpolate(x, scale_factor=2, mode="bilinear"),
}


def test_every_operator_is_covered():
    assert set(FORWARD_CALLS) == set(OPERATORS)


@pytest.mark.parametrize("name", sorted(FORWARD_CALLS))
def test_large_outputs_come_from_the_cache(pool, name):
    out = FORWARD_CALLS[name](random(BIG))
    assert out.nbytes >= _core.POOL_MIN_BYTES     # (else the cache would not serve it)
    assert allocator_of(out) == POOL


@pytest.mark.parametrize("name", sorted(FORWARD_CALLS))
def test_results_do_not_depend_on_the_cache(pool, name):
    x = random(BIG)
    with_cache = FORWARD_CALLS[name](x)
    fastconv.set_memory_pool(0)
    without = FORWARD_CALLS[name](x)
    assert allocator_of(without) != POOL
    np.testing.assert_array_equal(with_cache, without)


IMAGE_CALLS = {
    "ndimage.correlate": lambda x: fastconv.ndimage.correlate(x, np.ones((3, 3)) / 9),
    "ndimage.convolve1d": lambda x: fastconv.ndimage.convolve1d(x, [1.0, 2.0, 1.0], axis=0),
    "ndimage.uniform_filter": lambda x: fastconv.ndimage.uniform_filter(x, 5, mode="wrap"),
    "ndimage.gaussian_filter": lambda x: fastconv.ndimage.gaussian_filter(x, 2.0),
    "signal.convolve": lambda x: fastconv.convolve(x, np.ones((5, 5), np.float32)),
    "signal.correlate": lambda x: fastconv.correlate(x, np.ones((3, 3), np.float32), "same"),
}


@pytest.mark.parametrize("name", sorted(IMAGE_CALLS))
def test_image_filters_take_their_outputs_from_the_cache_with_the_same_results(pool, name):
    image = random((512, 512))          # 1 MiB of float32
    out = IMAGE_CALLS[name](image)
    assert allocator_of(out) == POOL
    fastconv.set_memory_pool(0)
    np.testing.assert_array_equal(out, IMAGE_CALLS[name](image))


def test_gradients_come_from_the_cache(pool):
    x, w = random(BIG), random((8, 16, 3, 3))
    g = random((4, 8, 64, 64))
    dx = fastconv.grad.conv2d_input(x.shape, w, g, padding=1)
    assert allocator_of(dx) == POOL
    dpool = fastconv.grad.max_pool2d(random((4, 16, 32, 32)),
                                     fastconv.max_pool2d(x, 2, return_indices=True)[1], x.shape)
    assert allocator_of(dpool) == POOL


def test_a_freed_output_is_reused_by_the_next_call_of_its_size(pool):
    x, w = random(BIG), random((16, 16, 1, 1))
    first = fastconv.conv2d(x, w)
    address = owner(first).ctypes.data
    del first
    info = fastconv.memory_pool_info()
    assert info["cached_blocks"] >= 1 and info["cached_bytes"] >= x.nbytes
    second = fastconv.conv2d(x, w)
    assert owner(second).ctypes.data == address
    assert fastconv.memory_pool_info()["hits"] > info["hits"]
    np.testing.assert_array_equal(second, fastconv.conv2d(x, w))


def test_a_reused_block_says_how_many_bytes_were_handed_out_since_its_free(pool):
    """(how cold it is: memory.is_cold, which kernels write by streaming stores)"""
    first = pooled(np.empty)(1 << 20, np.float32)                  # 4 MiB, new
    assert _core.pool_handed_since(first) == 2**64 - 1
    del first
    other = pooled(np.empty)(1 << 18, np.float32)                  # 1 MiB, new
    again = pooled(np.empty)(1 << 20, np.float32)                  # the first one's block
    assert _core.pool_handed_since(again) == other.nbytes
    assert _core.pool_handed_since(np.empty(1 << 20)) == -1        # not the cache's
    assert _core.pool_handed_since(again[1:]) == -1                # a view: not the owner


def test_a_block_is_not_given_to_a_much_smaller_array(pool):
    big = pooled(np.empty)(1 << 22, np.float32)
    address = big.ctypes.data
    del big
    small = pooled(np.empty)(1 << 20, np.float32)     # a quarter of the block
    assert small.ctypes.data != address


def test_zeroed_arrays_from_a_reused_block_are_zero(pool):
    dirty = pooled(np.empty)(1 << 20, np.float32)
    dirty[...] = np.nan
    address = dirty.ctypes.data
    del dirty
    clean = pooled(np.zeros)(1 << 20, np.float32)
    assert clean.ctypes.data == address
    assert not clean.any()


def test_resizing_a_cached_array_keeps_its_data(pool):
    a = pooled(np.arange)(1 << 18, dtype=np.float64)     # 2 MiB
    a.resize(1 << 19, refcheck=False)
    np.testing.assert_array_equal(a[:1 << 18], np.arange(1 << 18))
    assert not a[1 << 18:].any()
    a.resize(10, refcheck=False)
    np.testing.assert_array_equal(a, np.arange(10))


def test_addresses_are_aligned_for_the_widest_vectors(pool):
    for size in (1, 100, 1 << 20):
        assert pooled(np.empty)(size, np.uint8).ctypes.data % 64 == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_blocks_it_may_keep_are_mapped_apart_from_mallocs_heap(pool):
    """Held between uses inside malloc's heap, they pinned its middle, and the caller's own
    temporaries freed above them were given back to the system and faulted in afresh on
    every step of a network: large blocks are mapped on their own, small ones (never kept)
    still come from malloc."""
    def region_of(address):
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                start, end = (int(v, 16) for v in fields[0].split("-"))
                if start <= address < end:
                    return fields[5] if len(fields) > 5 else ""
        return None
    freed = np.empty(8 << 20, np.uint8)    # malloc maps it, and once it is freed, serves
    del freed                              # blocks up to its size from the heap
    large = pooled(np.empty)(1 << 20, np.uint8)
    small = pooled(np.empty)(1 << 10, np.uint8)
    assert region_of(large.ctypes.data) != "[heap]"
    assert region_of(large.ctypes.data) is not None
    del large
    again = pooled(np.empty)(1 << 20, np.uint8)     # reused from the cache, still mapped
    assert region_of(again.ctypes.data) not in ("[heap]", None)
    assert small.ctypes.data % 64 == 0


def test_the_limit_bounds_what_is_kept(pool):
    blocks = [pooled(np.empty)(1 << 18, np.float32) for _ in range(8)]    # 1 MiB each
    del blocks
    assert fastconv.memory_pool_info()["cached_bytes"] >= 8 << 20
    assert fastconv.set_memory_pool(3 << 20) == 1 << 30
    info = fastconv.memory_pool_info()
    assert info["cached_bytes"] <= 3 << 20 and info["limit_bytes"] == 3 << 20
    fastconv.empty_memory_pool()
    assert fastconv.memory_pool_info()["cached_bytes"] == 0


def test_a_block_larger_than_the_limit_is_given_back(pool):
    fastconv.set_memory_pool(1 << 20)
    a = pooled(np.empty)(1 << 20, np.float32)        # 4 MiB
    del a
    assert fastconv.memory_pool_info()["cached_bytes"] == 0


def test_running_out_of_memory_gives_the_cached_blocks_back_first(pool):
    kept = pooled(np.empty)(1 << 20, np.float32)
    del kept
    assert fastconv.memory_pool_info()["cached_bytes"] > 0
    with pytest.raises(MemoryError):
        pooled(np.empty)(1 << 62, np.uint8)         # no machine has it
    assert fastconv.memory_pool_info()["cached_bytes"] == 0


def test_a_forked_child_allocates_from_it():
    """(the lock is fresh in the child)"""
    code = ("import os, numpy as np, fastconv\n"
            "from fastconv._runtime.memory import pooled\n"
            "a = pooled(np.empty)(1 << 20, np.float32); del a\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    b = pooled(np.zeros)(1 << 20, np.float32)\n"
            "    os._exit(0 if not b.any() else 1)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["0"]


def test_off_means_numpys_allocator(pool):
    fastconv.set_memory_pool(0)
    assert fastconv.get_memory_pool() == 0
    out = fastconv.conv2d(random(BIG), random((16, 16, 1, 1)))
    assert allocator_of(out) != POOL
    assert fastconv.memory_pool_info()["cached_bytes"] == 0


def test_the_callers_arrays_never_come_from_it(pool):
    fastconv.conv2d(random(BIG), random((16, 16, 1, 1)))
    assert get_handler_name(np.empty(1 << 20, np.float32)) != POOL


def test_the_callers_allocator_is_restored_when_a_call_raises(pool):
    with pytest.raises(ValueError):
        fastconv.conv2d(random(BIG), random((16, 16, 3, 3)), padding=-1)
    assert get_handler_name(np.empty(1 << 20, np.float32)) != POOL


def test_threads_share_it_safely(pool):
    x, w = random(BIG), random((16, 16, 3, 3))
    expected = fastconv.conv2d(x, w, padding=1)
    failures = []

    def work():
        for _ in range(20):
            if not np.array_equal(fastconv.conv2d(x, w, padding=1), expected):
                failures.append(1)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert fastconv.memory_pool_info()["cached_bytes"] <= 1 << 30


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                        ("1GB", TypeError)])
def test_a_bad_limit_names_the_argument(pool, bad, error):
    with pytest.raises(error, match="max_bytes"):
        fastconv.set_memory_pool(bad)


@pytest.mark.parametrize("value, limit", [("0", 0), ("64", 64 << 20)])
def test_the_environment_sets_the_limit(value, limit):
    code = "import fastconv; print(fastconv.get_memory_pool(), " \
           "fastconv.memory_pool_info()['limit_bytes'])"
    env = dict(os.environ, FASTCONV_MEMORY_POOL=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(limit), str(limit)]


def test_a_bad_environment_value_warns_and_keeps_the_default():
    code = "import fastconv; print(fastconv.get_memory_pool() > 0)"
    env = dict(os.environ, FASTCONV_MEMORY_POOL="lots")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert run.stdout.split() == ["True"] and "FASTCONV_MEMORY_POOL" in run.stderr


def test_an_output_streams_out_only_when_large_and_past_the_caches():
    """memory.streams_output: an output of STREAM_MIN_BYTES or more goes out by streaming
    stores when the call moves COLD_AFTER_BYTES or more (its own reads, or the caller's
    after it); a small output never, and a large one whose call fits the caches only if its
    block is cold (a fresh NumPy array is not the pool's: unknown, so not cold)."""
    from fastconv._runtime.memory import COLD_AFTER_BYTES, STREAM_MIN_BYTES, streams_output
    out = np.empty(STREAM_MIN_BYTES, np.uint8)
    small = np.empty(STREAM_MIN_BYTES - 1, np.uint8)
    rest = np.empty(COLD_AFTER_BYTES - out.nbytes, np.uint8)
    assert streams_output(out, rest)
    assert not streams_output(out, rest[1:])
    assert streams_output(out, rest[1:], then_reads=1)
    assert not streams_output(small, rest, rest)


def _fake_caches(root, caches):
    for i, (level, size) in enumerate(caches):
        entry = root / f"index{i}"
        entry.mkdir()
        (entry / "level").write_text(f"{level}\n")
        (entry / "size").write_text(f"{size}\n")
    return str(root)


@pytest.mark.parametrize("caches, expected", [
    ([(1, "48K"), (1, "32K"), (2, "2048K"), (3, "32768K")], 32 << 20),   # Zen: 32 MiB L3
    ([(1, "48K"), (2, "2048K"), (3, "491520K")], 480 << 20),             # a VM shown its host's
    ([(1, "32K"), (2, "1M")], 1 << 20),                                  # no L3: the L2
    ([(2, "1G"), (3, "12M")], 12 << 20),                                 # the level decides
])
def test_the_last_level_cache_is_read_from_sysfs(tmp_path, caches, expected):
    from fastconv._runtime.memory import _last_level_cache_bytes
    assert _last_level_cache_bytes(_fake_caches(tmp_path, caches)) == expected


def test_an_unreadable_cache_description_is_unknown(tmp_path):
    from fastconv._runtime.memory import _last_level_cache_bytes
    assert _last_level_cache_bytes(str(tmp_path / "missing")) is None
    assert _last_level_cache_bytes(_fake_caches(tmp_path, [(3, "lots")])) is None


@pytest.mark.parametrize("last_level, expected", [
    (None, 32 << 20), (0, 32 << 20),      # unknown: the 32 MiB measured on Zen 3/4/5
    (8 << 20, 8 << 20), (32 << 20, 32 << 20),
    (480 << 20, 96 << 20),                # a VM's view of its host's cache: capped
])
def test_outputs_count_as_cold_past_about_a_last_level_cache(last_level, expected):
    from fastconv._runtime.memory import _cold_after_bytes
    assert _cold_after_bytes(last_level) == expected
