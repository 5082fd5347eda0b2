"""Where fastconv's arrays get their memory: a cache of large freed blocks.

A block of more than a few hundred KiB comes fresh from the operating system on every
allocation, and the first write to each of its pages faults and has the page zeroed: for a
memory-bound layer that costs more than the layer (a 38 MB output written fresh takes 5-6 ms
on Zen 4, 1.5 ms when its pages are reused). A network allocates the same sizes every step,
and an image pipeline filters image after image of one size, so fastconv's operators (those
of fastconv.operators.OPERATORS and their gradients, convolve / correlate, fastconv.ndimage's
filters) allocate their outputs, gradients and temporaries through NumPy's memory-handler
interface (NEP 49) from a cache of the blocks that earlier results freed: an array
allocated by fastconv returns its block to the cache wherever it dies, and the next call of
the same size reuses it (fastconv/_runtime/memory_pool.h). Arrays the caller allocates never
come from it, and NumPy's allocator is changed only inside fastconv's calls. On Linux the
blocks it may keep are mapped from the system on their own, outside malloc's heap: kept
there, they pinned the heap, and the caller's own temporaries (PyTorch's, between fastconv's
layers) were given back to the system and faulted in again on every step.

The cache holds at most ``get_memory_pool()`` bytes (by default the smaller of 1 GiB and an
eighth of the machine's memory; the ``FASTCONV_MEMORY_POOL`` environment variable, in MiB,
sets another at import), giving back the least recently freed blocks first;
``set_memory_pool(0)`` turns it off (fastconv then allocates as NumPy does) and
``empty_memory_pool()`` gives its blocks back now, as ``torch.cuda.empty_cache()`` does.
The cache also tells a kernel how cold an output's block is (``is_cold``), so that one it
writes whole, past the caches, goes out by streaming stores.
"""
import functools
import os

from fastconv import _core

__all__ = ["pooled", "set_memory_pool", "get_memory_pool", "empty_memory_pool",
           "memory_pool_info", "is_cold", "streams_output"]

_DEFAULT_CAP = 1 << 30


def _default_limit():
    configured = os.environ.get("FASTCONV_MEMORY_POOL")
    if configured is not None:
        try:
            mib = int(configured)
        except ValueError:
            mib = -1
        if mib >= 0:
            return mib << 20
        import warnings
        warnings.warn(f"FASTCONV_MEMORY_POOL must be a count of MiB (0 turns the cache off); "
                      f"got {configured!r}; using the default", RuntimeWarning, stacklevel=3)
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 8 * _DEFAULT_CAP
    return min(_DEFAULT_CAP, physical // 8)


_limit = _default_limit()
_core.set_pool_limit(_limit)


def set_memory_pool(max_bytes):
    """Keep at most `max_bytes` of freed blocks for fastconv's next arrays (0 turns the cache
    off; blocks over a new, lower limit are given back now). Returns the previous limit."""
    global _limit
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int (bytes; 0 turns the cache off); got "
                        f"{type(max_bytes).__name__}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0; got {max_bytes}")
    previous, _limit = _limit, max_bytes
    _core.set_pool_limit(max_bytes)
    return previous


def get_memory_pool():
    """The byte limit of the cache of freed blocks (0: off)."""
    return _limit


def empty_memory_pool():
    """Give every cached block back to the system (arrays in use keep theirs)."""
    _core.release_pool()


def memory_pool_info():
    """The cache's state: cached bytes and blocks, its limit, and how many large allocations
    it served (hits) or sent to the system (misses) since the process began."""
    cached, blocks, limit, hits, misses = _core.pool_stats()
    return {"cached_bytes": cached, "cached_blocks": blocks, "limit_bytes": limit,
            "hits": hits, "misses": misses, "min_block_bytes": _core.POOL_MIN_BYTES}


def _last_level_cache_bytes(root="/sys/devices/system/cpu/cpu0/cache"):
    """The size in bytes of the largest cache level that Linux reports for CPU 0 (sysfs); None
    where it reports none (another system, a container without /sys)."""
    best_level, best_size = -1, None
    try:
        entries = os.listdir(root)
    except OSError:
        return None
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(os.path.join(root, entry, "level")) as f:
                level = int(f.read())
            with open(os.path.join(root, entry, "size")) as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
        digits = text[:-1] if scale != 1 else text
        if not digits.isdigit():
            continue
        if level > best_level:
            best_level, best_size = level, int(digits) * scale
    return best_size


def _cold_after_bytes(last_level):
    """COLD_AFTER_BYTES for a last-level cache of `last_level` bytes (None: unknown)."""
    if not last_level:
        return _COLD_AFTER_UNKNOWN
    return min(last_level, _COLD_AFTER_MAX)


# A block of the cache reused after it handed out at least this many bytes of others (about a
# last-level cache) is taken to be out of the caches: a kernel writing it whole gains nothing
# from plain stores, which first read each line, and the streaming ones skip that read. A
# forward pass during training writes into blocks the previous backward pass freed (Zen 4,
# MobileNetV2 channels-last b8, its convolutions' forward: 48.0 -> 43.7 ms streamed); at
# inference the block is the one a layer or two before freed, still in cache (plain stores:
# 38.7 against 40.3 streamed). The size is the machine's last-level cache as Linux reports it
# (32 MiB on the Zen 3, Zen 4 and Zen 5 machines measured, where 32 MiB was first chosen),
# at most _COLD_AFTER_MAX: a virtual machine is shown its host's whole cache (480 MiB on an
# Intel Xeon measured) and keeps a share of it: there a copy's read + write bandwidth, 2
# threads, stays at 44-52 GB/s up to arrays of 48 MiB, reads 37-42 at 64 MiB and 27-30 GB/s
# from 96 MiB up. On that Xeon the depthwise backward of 144 channels of 56x56, batch 8 (43
# MB moved) took 2.16-2.22 ms with dx streamed, 1.88-1.93 ms with plain stores; inside the
# networks' training steps (MobileNetV2, ResNet-50 contiguous and channels-last) 32 MiB,
# 96 MiB and no limit read the same within their noise.
_COLD_AFTER_UNKNOWN = 32 << 20
_COLD_AFTER_MAX = 96 << 20
COLD_AFTER_BYTES = _cold_after_bytes(_last_level_cache_bytes())


def is_cold(array):
    """Whether `array` owns a block of the cache that is out of the caches (COLD_AFTER_BYTES)
    or new from the system; False for any other array (unknown)."""
    return _core.pool_handed_since(array) >= COLD_AFTER_BYTES


# An output of at least this many bytes that is written whole and read only after the caches
# have turned over goes out by streaming stores (streams_output).
STREAM_MIN_BYTES = 2 << 20


def streams_output(out, *read, then_reads=0):
    """Whether a kernel that writes `out` whole, reading the arrays `read`, should write it by
    streaming stores: out is large (STREAM_MIN_BYTES), and the call moves more than the
    caches hold (COLD_AFTER_BYTES; `then_reads`: the bytes the caller moves after it, before
    out's reader), or out's block is cold."""
    return out.nbytes >= STREAM_MIN_BYTES and (
        out.nbytes + sum(a.nbytes for a in read) + then_reads >= COLD_AFTER_BYTES
        or is_cold(out))


def pooled(function):
    """Decorator: the arrays `function` allocates come from the cache (while it is on); the
    caller's allocator is restored on the way out, exception or not."""
    @functools.wraps(function)
    def with_pool(*args, **kwargs):
        if not _limit:
            return function(*args, **kwargs)
        previous = _core.use_allocator(_core.POOL_HANDLER)
        try:
            return function(*args, **kwargs)
        finally:
            _core.use_allocator(previous)
    return with_pool
