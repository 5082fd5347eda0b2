"""Memoized construction of the small tables that describe a call: pooling windows,
interpolation sources and weights, the gathers of their adjoints, the ndimage filters'
boundary-extension tables.

Building them with NumPy took 40-170 us a call, more than the kernel takes on small inputs
(measured on Zen 4: max_pool2d of a (1, 2, 8, 8) input 63 us, avg_pool2d's gradient 169 us,
conv2d 17 us), and a network calls the same shapes step after step. A cached table is
returned read-only, so no caller can change it for the next one. Arguments are keyed with
their types (True and 1, 0.0 and -0.0 are different calls; one may raise where the other
does not); a call with any argument that is not a plain value (a list, a NumPy scalar or
array) is computed afresh, as is a call that raises. (conv_problem in _plan/problems.py
keeps its own, narrower cache: ints, strs and tuples of them only, keyed by the arguments
alone, 1.0 against this one's 2.3 us a call on Zen 4; every convolution call asks it.)
"""
import functools

import numpy as np

# entries per memoized function: a table is a few int64 and float entries per output (or
# input) position of each axis, so a few KiB for network layers, ~100 KiB for a 4096-wide
# image; 256 of the largest a program plausibly cycles through (random-size resizing) stay
# in the tens of MiB
TABLE_CACHE_SIZE = 256


class _Unkeyable(Exception):
    pass


def _key(args):
    """A dictionary key for a call's arguments: the arguments themselves, with the types of
    the values in them (and the bits of its floats) beside them, since True == 1 == 1.0 and
    0.0 == -0.0 hash alike. Plain values only: ints, strs, bools, floats, None, NumPy dtypes,
    and tuples of ints, floats, None or tuples of ints (a call's shapes and window arguments);
    anything else raises _Unkeyable. Asked on every call, so flat loops, no recursion."""
    kinds = []
    for value in args:
        kind = type(value)
        if kind is tuple:
            for item in value:
                item_kind = type(item)
                if item_kind is tuple:
                    for v in item:
                        if type(v) is not int:
                            raise _Unkeyable
                elif item_kind is float:
                    kinds.append(item.hex())
                elif item_kind is not int and item is not None:
                    raise _Unkeyable
                kinds.append(item_kind)
        elif kind is float:
            kinds.append(value.hex())
        elif not (kind is int or kind is str or kind is bool or value is None
                  or isinstance(value, np.dtype)):
            raise _Unkeyable
        kinds.append(kind)
    return args, tuple(kinds)


def _frozen(value):
    """value with every array in it read-only (tuples, named ones included, rebuilt)."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
        return value
    if isinstance(value, tuple):
        items = [_frozen(v) for v in value]
        return type(value)._make(items) if hasattr(value, "_fields") else tuple(items)
    return value


def memoized_tables(fn):
    """fn(*args) (positional, plain values) remembered per argument tuple; its arrays frozen."""
    cache = {}

    @functools.wraps(fn)
    def call(*args):
        try:
            key = _key(args)
        except _Unkeyable:
            return fn(*args)
        try:
            return cache[key]
        except KeyError:
            pass
        result = _frozen(fn(*args))
        if len(cache) >= TABLE_CACHE_SIZE:
            # the oldest entry; another thread may have evicted it first
            cache.pop(next(iter(cache), None), None)
        cache[key] = result
        return result

    call.cache = cache
    return call
