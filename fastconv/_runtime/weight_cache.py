"""Transformed weights kept between calls.

Winograd multiplies transformed weights (36 values per 3x3 filter, laid out for the GEMM),
and transforming them costs as much as the convolution itself on layers with many channels
and few pixels (512 channels on 7x7: 36% of the call). An inference loop calls with the same
weights every time, so the transform is remembered, keyed by where the weights lie and how,
and reused only if their bytes are unchanged since (compared in full, without the GIL): an
array changed in place, or a new array at a freed one's address, is transformed afresh.
Entries beyond CACHE_BYTES (transformed weights plus their copy) are dropped, least
recently used first.
"""
import threading
from collections import OrderedDict

import numpy as np

CACHE_BYTES = 512 << 20

_entries = OrderedDict()    # key -> (copy of the weight, transformed weight)
_size = 0
_lock = threading.Lock()


def cached_transform(name, weight, transform, equal_bytes):
    """transform(weight), remembered under `name` (what transform computes) and weight's
    memory; equal_bytes(a, b) compares two uint8 views."""
    global _size
    interface = weight.__array_interface__
    key = (name, interface["data"][0], weight.shape, weight.strides, weight.dtype.str)
    raw = weight.reshape(-1).view(np.uint8) if weight.flags.c_contiguous else None
    with _lock:
        entry = _entries.get(key)
    if entry is not None and raw is not None and equal_bytes(raw, entry[0]):
        with _lock:
            if key in _entries:
                _entries.move_to_end(key)
        return entry[1]
    result = transform(weight)
    if raw is None or raw.nbytes + result.nbytes > CACHE_BYTES:
        return result
    with _lock:
        old = _entries.pop(key, None)
        if old is not None:
            _size -= old[0].nbytes + old[1].nbytes
        _entries[key] = (raw.copy(), result)
        _size += raw.nbytes + result.nbytes
        while _size > CACHE_BYTES:
            _, (copy, transformed) = _entries.popitem(last=False)
            _size -= copy.nbytes + transformed.nbytes
    return result


def forget_transforms():
    """Drop every remembered transform."""
    global _size
    with _lock:
        _entries.clear()
        _size = 0
