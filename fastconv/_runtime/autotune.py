"""The opt-in autotuner: time the candidates once per problem, remember the fastest.

Off by default: the dispatcher's rules decide. On (``set_autotune(True)``, the ``autotune()``
context, or ``FASTCONV_AUTOTUNE=1``), a forward convolution with ``algorithm="auto"`` whose
problem has no remembered winner runs every algorithm family that computes it (Winograd and
the FFT only where the precision setting allows them) on the call's own arrays: one run that
also fills the weight caches, then the best of up to three timed runs. The fastest family is
remembered for the process and, given a cache file (``set_autotune(True, cache_file=path)`` or
``FASTCONV_AUTOTUNE_CACHE``), on disk, so that a service measures once. Every later call of
the problem, and :func:`fastconv.choose_algorithm`, use it and say so, with the times.

A winner is keyed by the operation, the problem, the dtype, the thread count, the precision
setting, the SIMD level, the CPU's name and fastconv's version: a file written on another
machine or by another version is never read as this one's.
"""
import contextlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass

from fastconv._version import __version__

__all__ = ["set_autotune", "get_autotune", "autotune", "forget_autotuned"]

ENV = "FASTCONV_AUTOTUNE"
ENV_CACHE = "FASTCONV_AUTOTUNE_CACHE"
FILE_VERSION = 1
# a candidate's first run under this many seconds is followed by 3 timed runs, else by 1
_SHORT_RUN = 0.05

_requested = None          # None: the environment decides
_requested_file = None
_lock = threading.Lock()
_winners = {}              # key -> Tuned
_loaded_files = set()


@dataclass(frozen=True)
class Tuned:
    """A remembered winner: the family and every candidate's best time (seconds)."""
    algorithm: str
    times: tuple           # ((family, seconds), ...) fastest first

    def reason(self):
        measured = ", ".join(f"{name} {seconds * 1e3:.3g} ms" for name, seconds in self.times)
        return (f"autotuned (fastconv.set_autotune): {self.algorithm} was the fastest of "
                f"{measured}, measured on this problem")


def _flag_from_env():
    value = os.environ.get(ENV, "")
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ValueError(f"{ENV} must be '0' or '1'; got {value!r}")


def get_autotune():
    """True if ``algorithm="auto"`` measures the candidates (see the module docstring)."""
    return _requested if _requested is not None else _flag_from_env()


def cache_file():
    """The file winners are kept in, or None (set_autotune's, else FASTCONV_AUTOTUNE_CACHE)."""
    if _requested_file is not None:
        return _requested_file
    return os.environ.get(ENV_CACHE) or None


def set_autotune(enabled, cache_file=None):
    """Turn the autotuner on or off; `cache_file` (a path) keeps its winners between
    processes. Returns the previous on/off setting.

    Examples
    --------
    >>> import fastconv
    >>> previous = fastconv.set_autotune(True)
    >>> fastconv.get_autotune()
    True
    >>> _ = fastconv.set_autotune(previous)
    """
    global _requested, _requested_file
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False; got {enabled!r}")
    if cache_file is not None and not isinstance(cache_file, (str, os.PathLike)):
        raise TypeError(f"cache_file must be a path (str or os.PathLike) or None; got "
                        f"{cache_file!r}")
    previous = get_autotune()
    _requested = enabled
    _requested_file = None if cache_file is None else os.fspath(cache_file)
    return previous


@contextlib.contextmanager
def autotune(enabled=True, cache_file=None):
    """``with fastconv.autotune(): ...`` runs the block with the autotuner on (or off), then
    restores the previous setting."""
    global _requested, _requested_file
    saved = (_requested, _requested_file)
    set_autotune(enabled, cache_file)
    try:
        yield
    finally:
        _requested, _requested_file = saved


def forget_autotuned():
    """Drop the winners remembered in this process (a cache file is read again when next
    needed; its contents are kept)."""
    with _lock:
        _winners.clear()
        _loaded_files.clear()


def key(operation, problem, dtype, threads, precision, simd_level, cpu_name):
    """The string a winner is remembered under."""
    return "|".join(str(part) for part in (
        __version__, cpu_name, simd_level, operation, threads, precision, dtype, problem))


def _load(path):
    """Read the winners of `path` into memory (once per path); a missing file is empty, an
    unreadable or foreign one is ignored with a warning."""
    if path is None or path in _loaded_files:
        return
    _loaded_files.add(path)
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data.get("winners") if isinstance(data, dict) \
            and data.get("version") == FILE_VERSION else None
        if not isinstance(entries, dict):
            raise ValueError(f"not a version {FILE_VERSION} fastconv autotune file")
        for name, entry in entries.items():
            times = tuple((str(family), float(seconds)) for family, seconds in entry["times"])
            _winners.setdefault(name, Tuned(str(entry["algorithm"]), times))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"fastconv autotune cache {path!r} ignored: {err}", RuntimeWarning,
                      stacklevel=4)


def _save(path):
    """Write every remembered winner to `path` (atomically: a temporary file, renamed)."""
    data = {"version": FILE_VERSION, "winners": {
        name: {"algorithm": t.algorithm, "times": [list(pair) for pair in t.times]}
        for name, t in _winners.items()}}
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(temporary, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        warnings.warn(f"fastconv autotune cache {path!r} not written: {err}", RuntimeWarning,
                      stacklevel=4)


def lookup(name):
    """The Tuned winner remembered under `name`, or None."""
    with _lock:
        _load(cache_file())
        return _winners.get(name)


def measure(run):
    """The best time of `run()` in seconds: one run (caches filled), then the best of three
    more, or of one if the first took long."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(3 if first < _SHORT_RUN else 1):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def remember(name, times):
    """Remember the fastest of `times` ({family: seconds}) under `name`; returns the Tuned."""
    ordered = tuple(sorted(times.items(), key=lambda pair: pair[1]))
    tuned = Tuned(ordered[0][0], ordered)
    with _lock:
        path = cache_file()
        _load(path)
        _winners[name] = tuned
        if path is not None:
            _save(path)
    return tuned
