"""The per-call tables (pooling windows, interpolation sources, adjoint gathers) are built once
per argument tuple and reused: a cached call must behave exactly as a fresh one."""
import numpy as np
import pytest

import fastconv
import fastconv.grad
from fastconv._ops import interpolate as _interpolate
from fastconv._ops import ndimage as _ndimage
from fastconv._ops import pooling as _pooling
from fastconv._runtime.memo import _key, memoized_tables


def test_keys_tell_types_and_signed_zeros_apart():
    assert _key((1,)) != _key((True,))
    assert _key(((2, 2), 1)) != _key(((2, 2), True))
    assert _key((0.0,)) != _key((-0.0,))
    assert _key((np.dtype(np.float32),)) != _key((np.dtype(np.float64),))
    assert _key(((2, None), "bilinear")) == _key(((2, None), "bilinear"))


def test_unkeyable_arguments_are_computed_afresh():
    calls = []

    @memoized_tables
    def table(n):
        calls.append(n)
        return np.arange(len(n) if isinstance(n, list) else n)

    table(3)
    table(3)
    table([1, 2])
    table([1, 2])
    table(np.int64(3))
    assert calls == [3, [1, 2], [1, 2], np.int64(3)]


def test_cached_tables_are_read_only():
    x = np.ones((1, 1, 6, 6), np.float32)
    fastconv.max_pool2d(x, 2)
    windows = _pooling._pool_windows(2, (6, 6), 2, None, 0, 1, False, "max_pool2d")
    assert windows is _pooling._pool_windows(2, (6, 6), 2, None, 0, 1, False, "max_pool2d")
    for table in (windows.win, windows.div):
        with pytest.raises(ValueError):
            table[...] = 0
    taps, src, weight = _interpolate._tables(2, (6, 6), (12, 12), (2.0, 2.0), "bilinear",
                                             False, np.dtype(np.float32))
    with pytest.raises(ValueError):
        weight[...] = 0
    table = _ndimage.extension_table(6, -1, 8, "reflect")
    np.testing.assert_array_equal(table, [0, 0, 1, 2, 3, 4, 5, 5])
    with pytest.raises(ValueError):
        table[0] = 1


def test_calls_that_raise_are_not_cached():
    x = np.ones((1, 1, 5, 5), np.float32)
    assert fastconv.max_pool2d(x, 2, ceil_mode=True).shape == (1, 1, 3, 3)
    for _ in range(2):
        with pytest.raises(TypeError, match="ceil_mode"):
            fastconv.max_pool2d(x, 2, ceil_mode=1)
    assert fastconv.max_pool2d(x, (1, 2)).shape == (1, 1, 5, 2)
    for _ in range(2):
        with pytest.raises(TypeError, match="kernel_size"):
            fastconv.max_pool2d(x, (True, 2))
    for _ in range(2):
        with pytest.raises(ValueError, match="padding"):
            fastconv.avg_pool2d(x, 2, padding=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_calls_give_the_same_answers_as_the_first(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 7)).astype(dtype)
    calls = [
        lambda: fastconv.max_pool2d(x, 3, 2, 1, return_indices=True),
        lambda: fastconv.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        lambda: fastconv.adaptive_avg_pool2d(x, (4, 3)),
        lambda: fastconv.interpolate(x, scale_factor=1.5, mode="bilinear"),
        lambda: fastconv.grad.avg_pool2d(np.ones((2, 3, 4, 3), dtype), x.shape, 3, 2),
        lambda: fastconv.grad.adaptive_avg_pool2d(np.ones((2, 3, 4, 3), dtype), x.shape),
        lambda: fastconv.grad.interpolate(np.ones((2, 3, 18, 14), dtype), x.shape,
                                          scale_factor=2, mode="bilinear"),
    ]
    for call in calls:
        first = call()
        again = call()
        for a, b in zip(first if isinstance(first, tuple) else (first,),
                        again if isinstance(again, tuple) else (again,)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
            assert a.flags.writeable and b.flags.writeable
    # the float32 and float64 tables are kept apart
    assert fastconv.interpolate(x, scale_factor=1.5, mode="bilinear").dtype == dtype


def test_the_cache_is_bounded_and_keeps_working_from_many_threads():
    import threading
    from fastconv._runtime import memo

    @memoized_tables
    def table(n):
        return np.arange(n)

    errors = []

    def work(offset):
        try:
            for n in range(offset, offset + 3 * memo.TABLE_CACHE_SIZE):
                np.testing.assert_array_equal(table(n % 997), np.arange(n % 997))
        except Exception as e:          # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k * 101,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # (threads racing past the size check may each add one entry)
    assert len(table.cache) <= memo.TABLE_CACHE_SIZE + len(threads)
