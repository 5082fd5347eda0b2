"""How fastconv rounds: which algorithms ``algorithm="auto"`` may choose, and denormals.

Precision:

- ``"fast"`` (the default): the dispatcher may choose Winograd convolution for 3x3 stride-1
  layers and the FFT for large filters. Winograd's float32 results differ from the direct
  sum by a few times the direct sum's own rounding error, the FFT's by a bound on the norms
  of whole planes (bounds and measurements: README, "Accuracy"; notes/winograd.md).
- ``"exact"``: every output is one sum of the products input x weight, as PyTorch computes it
  (rounded only as that sum is): Winograd and the FFT are never chosen (nor timed by the
  autotuner), though either can still be forced with ``algorithm=``.

Denormals (numbers below the dtype's smallest normal, 1.2e-38 in float32, which many CPUs
compute a hundred times slower):

- ``"flush"`` (the default): fastconv's kernels read denormal inputs as zero and write zero
  for denormal results (x86's DAZ and FTZ), set for the call on the calling thread and on
  the OpenMP threads the kernels run on, and restored before the call returns: the caller's
  floating-point mode never changes.
- ``"ieee"``: denormals are computed as IEEE 754 says, at whatever speed the CPU has.

Each setting is its ``set_...(mode)`` if called, else its environment variable
(``FASTCONV_PRECISION``, ``FASTCONV_DENORMALS``), else the default; ``precision(mode)`` and
``denormals(mode)`` set one for a ``with`` block.
"""
import contextlib
import functools
import os
import threading

import numpy as np

from fastconv import _core
from fastconv._runtime import threads as _threads

__all__ = ["set_precision", "get_precision", "precision", "set_denormals", "get_denormals",
           "denormals"]


class Setting:
    """A process-wide choice among `modes`: the last set() if any, else the environment
    variable `env`, else `default`."""

    def __init__(self, name, env, modes, default):
        self.name, self.env, self.modes, self.default = name, env, modes, default
        self.requested = None

    def check(self, mode, name):
        if not isinstance(mode, str) or mode not in self.modes:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, self.modes))}; "
                             f"got {mode!r}")
        return mode

    def set(self, mode):
        mode = self.check(mode, self.name)
        previous = self.get()
        self.requested = mode
        return previous

    def get(self):
        if self.requested is not None:
            return self.requested
        env = os.environ.get(self.env)
        return self.check(env, self.env) if env else self.default

    @contextlib.contextmanager
    def scope(self, mode):
        previous = self.set(mode)
        try:
            yield
        finally:
            self.set(previous)


_FP_MODE_SUPPORTED = _core.fp_mode_supported()

PRECISION = Setting("precision", "FASTCONV_PRECISION", ("fast", "exact"), "fast")
DENORMALS = Setting("denormals", "FASTCONV_DENORMALS", ("flush", "ieee"), "flush")
# per calling thread (each has its own OpenMP team): how many threads its team has started
_workers = threading.local()


def set_precision(mode):
    """Set which algorithms ``algorithm="auto"`` may choose ("fast" or "exact"); returns the
    previous mode.

    Examples
    --------
    >>> import fastconv
    >>> old = fastconv.set_precision("exact")
    >>> fastconv.get_precision()
    'exact'
    >>> _ = fastconv.set_precision(old)
    """
    return PRECISION.set(mode)


def get_precision():
    """The current mode: "fast" (Winograd and the FFT allowed) or "exact" (see the module
    docstring)."""
    return PRECISION.get()


def precision(mode):
    """``with fastconv.precision("exact"): ...`` runs the block in `mode`, then restores the
    previous one."""
    return PRECISION.scope(mode)


def set_denormals(mode):
    """Set how the kernels treat denormal numbers: "flush" (to zero, the default) or "ieee";
    returns the previous mode.

    Examples
    --------
    >>> import fastconv
    >>> old = fastconv.set_denormals("ieee")
    >>> fastconv.get_denormals()
    'ieee'
    >>> _ = fastconv.set_denormals(old)
    """
    return DENORMALS.set(mode)


def get_denormals():
    """The current denormal mode: "flush" or "ieee" (see the module docstring)."""
    return DENORMALS.get()


def denormals(mode):
    """``with fastconv.denormals("ieee"): ...`` runs the block in `mode`, then restores the
    previous one."""
    return DENORMALS.scope(mode)


class denormals_flushed:   # noqa: N801 - used as a function, like contextlib's
    """In mode "flush", denormals flushed for the block on the calling thread and on the
    OpenMP workers of a team of `threads` (those every kernel's parallel region of that size
    reuses: OpenMP keeps its workers, in order, between regions); each thread's previous
    mode restored when the block ends or raises (nested blocks save and restore the flushed
    mode). `threads` 1 touches the calling thread only, with no parallel region: code that
    runs threads of its own (scipy.fft's) then keeps OpenMP's workers from spinning beside
    them."""
    # a class, not a generator: every kernel call enters one, and small layers pay its time
    __slots__ = ("threads", "saved")

    def __init__(self, threads):
        self.threads = threads
        self.saved = None

    def __enter__(self):
        if _FP_MODE_SUPPORTED and DENORMALS.get() == "flush":
            team = _threads.team_size()
            if getattr(_workers, "started", 0) < team:
                # before any flush: workers OpenMP would create inside this block (a kernel
                # of more threads than were flushed) would start flushing, and keep on
                _core.start_workers(team)
                _workers.started = team
            self.saved = np.empty(max(1, min(self.threads, team)), np.uintc)
            _core.flush_denormals(self.saved)
        return self

    def __exit__(self, *exc_info):
        if self.saved is not None:
            _core.restore_fp_mode(self.saved)
            self.saved = None
        return False


def flushing_denormals(run):
    """Decorator of the functions that run kernels: `run` inside denormals_flushed for the
    largest team any kernel runs on (threads.team_size())."""
    @functools.wraps(run)
    def flushed(*args, **kwargs):
        with denormals_flushed(_threads.team_size()):
            return run(*args, **kwargs)
    return flushed
