"""Transformed weights kept between calls.

Winograd multiplies transformed weights (36 values per 3x3 filter, laid out for the GEMM),
and transforming them costs as much as the convolution itself on layers with many channels
and few pixels (512 channels on 7x7: 36% of the call). An inference loop calls with the same
weights every time, so the transform is remembered, keyed by where the weights lie and how,
and reused only if their bytes are unchanged since (compared in full, without the GIL, over
the threads for large ones): an array changed in place, or a new array at a freed one's
address, is transformed afresh.

A training loop changes its weights in place every step: then the entry's buffers are
refilled where they lie (no new allocation, whose fresh pages the system would have to
fault in and zero). A weight found changed on VOLATILE_AFTER lookups in a row is being
trained: its entry then refills without comparing or copying the weight (the copy, a pass
over every weight, took 12 ms of a channels-last ResNet-50 training step at batch 1), and
takes the copy again on every VOLATILE_PROBE-th lookup, so that a weight that stops changing
(inference after training) is remembered again from the next lookup on. Every lookup that
does not compare refills, so no stale transform is ever returned. A caller that can
transform as it computes (Winograd's fused weights) says so, and is then told to (None)
instead of a refill on those lookups, and also where its entry has gone cold: other
entries of at least COLD_LOOKUP_BYTES looked up since its last use (a layer inside a
network, whose transform then comes from memory: reading it and comparing the weight with
its copy moves 6x the weight's bytes, where transforming as it goes reads them once).
Entries beyond
CACHE_BYTES (transformed weights plus their copy) are dropped, least recently used first.
``scratch`` gives a calling thread a reusable buffer for transforms of weights that are
never the same twice (the reversed weights of an input gradient).
"""
import threading
from collections import OrderedDict

import numpy as np

from fastconv import _core
from fastconv._runtime import memory, threads
from fastconv._runtime.precision import get_denormals

CACHE_BYTES = 512 << 20
VOLATILE_AFTER = 2
VOLATILE_PROBE = 8
# The weight cache sees only its own entries' bytes; a network moves its activations and the
# weights its other kernels read where they lie beside them, so a quarter of what the
# last-level cache holds (ResNet-50 at batch 1: 70 MB of entries a step). Intel Xeon, 2
# threads, ResNet-50 batch 1 inference (five 256 -> 256 layers on 14x14 whose weights can be
# transformed as Winograd goes), ms: kept 60.1-63.2, transformed as it goes 58.9-62.2; a
# loop over one such layer, kept 0.64, transformed 0.71.
COLD_LOOKUP_BYTES = memory.COLD_AFTER_BYTES // 4

# key -> [copy of the weight, transformed weight, changes found in a row, lookups since the
# copy was last taken while volatile, _clock after its last lookup]
_entries = OrderedDict()
_size = 0
_clock = 0      # bytes of the entries (copy and transform) looked up so far
_lock = threading.Lock()
_local = threading.local()


def _raw_bytes(weight):
    """weight's memory as bytes, if it is one dense block in some axis order (C-contiguous,
    or a channels-last weight: (O, I, H, W) over (O, H, W, I) memory); else None."""
    order = sorted(range(weight.ndim), key=lambda axis: -weight.strides[axis])
    dense = weight.transpose(order)
    if not dense.flags.c_contiguous:
        return None
    return dense.reshape(-1).view(np.uint8)


def cached_transform(name, weight, size, fill, caller_can_transform=False):
    """The transform of `weight`: `size` elements of weight's dtype that fill(weight, out)
    writes, remembered under `name` (what fill computes) and weight's memory. With
    `caller_can_transform`, None for a weight being trained (except on the lookups that take
    its copy) and for an entry gone cold (COLD_LOOKUP_BYTES): the caller then transforms it
    itself, as it goes."""
    global _size, _clock
    address = weight.__array_interface__["data"][0]
    # the denormal mode too: a transform filled while flushing has its denormal values zeroed,
    # which an IEEE call must not reuse
    key = (name, address, weight.shape, weight.strides, weight.dtype.str, get_denormals())
    since = 0
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            _entries.move_to_end(key)
            since = _clock - entry[4]
            _clock += entry[0].nbytes + entry[1].nbytes
            entry[4] = _clock
    if entry is not None and entry[1].size == size:
        copy, result, changes, skipped, _ = entry
        if caller_can_transform and since >= COLD_LOOKUP_BYTES:
            return None
        if changes >= VOLATILE_AFTER:
            # being trained: refill, and only now and then take the copy that lets the
            # next lookup see whether the weight has stopped changing
            if skipped + 1 < VOLATILE_PROBE:
                entry[3] = skipped + 1
                if caller_can_transform:
                    return None
                fill(weight, result)
            else:
                fill(weight, result)
                np.copyto(copy, _raw_bytes(weight))
                entry[2], entry[3] = VOLATILE_AFTER - 1, 0
            return result
        # only dense weights are remembered, and the key fixes the layout: the entry's copy
        # is compared with the bytes where the weight lies (no views made per call)
        if _core.bytes_equal_at(address, copy, threads.team_size()):
            entry[2] = 0
        else:
            # changed in place (a training step): refill the same buffers; the copy only
            # while the next lookup will compare with it
            fill(weight, result)
            if changes + 1 < VOLATILE_AFTER:
                np.copyto(copy, _raw_bytes(weight))
            entry[2] = changes + 1
        return result
    raw = _raw_bytes(weight)
    result = np.empty(size, weight.dtype)
    fill(weight, result)
    if raw is None or raw.nbytes + result.nbytes > CACHE_BYTES:
        return result
    with _lock:
        old = _entries.pop(key, None)
        if old is not None:
            _size -= old[0].nbytes + old[1].nbytes
        _clock += raw.nbytes + result.nbytes
        _entries[key] = [raw.copy(), result, 0, 0, _clock]
        _size += raw.nbytes + result.nbytes
        while _size > CACHE_BYTES:
            _, (copy, transformed, *_) = _entries.popitem(last=False)
            _size -= copy.nbytes + transformed.nbytes
    return result


def scratch(size, dtype):
    """A buffer of `size` elements of `dtype` owned by the calling thread and reused by its
    next call (its contents are overwritten then)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    dtype = np.dtype(dtype)
    buffer = buffers.get(dtype.str)
    if buffer is None or buffer.size < size:
        buffer = buffers[dtype.str] = np.empty(size, dtype)
    return buffer[:size]


def forget_transforms():
    """Drop every remembered transform (and this thread's scratch buffers)."""
    global _size
    with _lock:
        _entries.clear()
        _size = 0
    _local.buffers = {}
