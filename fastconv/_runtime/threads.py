"""fastconv's one thread policy: how many OpenMP threads a kernel uses, and how BLAS is kept
from multiplying them.

- The count is ``set_num_threads(n)`` if called, else the environment variable
  ``FASTCONV_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs this process may run on
  (its affinity mask, which also reflects ``taskset`` and most container limits); the
  environment and the mask are read once, at the first call that needs them.
- Kernels that call BLAS do so from inside their own OpenMP threads, one GEMM per thread,
  so each of those GEMMs must run single-threaded: total threads = fastconv's count, never
  fastconv's count x BLAS's count. Two holds make that true with OpenBLAS (SciPy's wheels),
  which keeps a per-thread count beside the global one: every OpenMP thread of a kernel sets
  its own count to 1 and restores it (``openblas_set_num_threads_local``, registered with the
  compiled runtime core by ``register_blas_hook``), and ``blas_guard()`` holds the global
  count at 1 for the duration of the call, restored when the last concurrent fastconv call returns. Either
  alone was measured to leave some GEMMs multi-threaded (and their rounding unstable).
- A workload too small to amortize starting a parallel region runs on one thread.
"""
import contextlib
import os
import threading

from fastconv import _core

__all__ = ["set_num_threads", "get_num_threads", "num_threads"]

# A parallel region costs a few microseconds to wake the team; below this many
# multiply-adds the serial loop finishes first (measured on the benchmark cases: ~10 us).
MIN_PARALLEL_WORK = 1 << 16

_requested = None

# More threads than this are refused (set_num_threads) or capped (environment variables):
# no CPU has that many cores, and libgomp crashed the process with a segmentation fault when
# asked for a team of 100,000 threads it could not create (tests/test_reliability.py).
MAX_THREADS = 1024


def _cpus_available():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive_int_from_env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        count = int(value.split(",")[0])
    except ValueError:
        return None
    return min(count, MAX_THREADS) if count > 0 else None


def _check_count(n, name="n"):
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"{name} must be a positive int; got {type(n).__name__}")
    n = int(n.__index__())
    if n < 1 or n > MAX_THREADS:
        raise ValueError(f"{name} must be a positive int at most {MAX_THREADS}; got {n}")
    return n


def set_num_threads(n):
    """Set the number of threads fastconv's kernels use (BLAS included); returns the old count.

    Examples
    --------
    >>> import fastconv
    >>> old = fastconv.set_num_threads(1)
    >>> fastconv.get_num_threads()
    1
    >>> _ = fastconv.set_num_threads(old)
    """
    global _requested
    n = _check_count(n)
    previous = get_num_threads()
    _requested = n
    return previous


def get_num_threads():
    """The number of threads fastconv's kernels use (see the module docstring for the order)."""
    if _requested is not None:
        return _requested
    return _default_threads()


_default = None


def _default_threads():
    # read once, as OpenMP reads OMP_NUM_THREADS once: every kernel call asks, and the
    # environment lookups and the affinity syscall cost ~50 us per small CNN training step
    global _default
    if _default is None:
        if not _core.openmp_enabled():
            _default = 1
        else:
            from_env = [_positive_int_from_env(name)
                        for name in ("FASTCONV_NUM_THREADS", "OMP_NUM_THREADS")]
            _default = next((n for n in from_env if n is not None), None) or _cpus_available()
    return _default


@contextlib.contextmanager
def num_threads(n):
    """Context manager: use `n` threads inside the block, the previous count after it.

    Examples
    --------
    >>> import fastconv
    >>> with fastconv.num_threads(1):
    ...     fastconv.get_num_threads()
    1
    """
    global _requested
    n = _check_count(n)
    saved = _requested
    _requested = n
    try:
        yield n
    finally:
        _requested = saved


# GNU libgomp cannot start a team in a process forked from one that already ran a parallel
# region: the child waits forever for pool threads that were not copied (measured: every
# algorithm hung in a multiprocessing "fork" child). A team of one never touches that pool,
# so kernels in a forked child run on one thread. True in such a child.
_in_forked_child = False


def _after_fork_in_child():
    global _in_forked_child
    _in_forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def threads_for(work):
    """Threads for a kernel doing about `work` multiply-adds (1 when a team would not pay, and
    in a forked child process)."""
    if not _core.openmp_enabled() or work < MIN_PARALLEL_WORK or _in_forked_child:
        return 1
    return get_num_threads()


def team_size():
    """The most threads any kernel runs on now (get_num_threads(); 1 without OpenMP and in a
    forked child process)."""
    return threads_for(MIN_PARALLEL_WORK)


class _SingleThreadedBlas:
    """Holds the BLAS behind scipy.linalg.cython_blas at one thread while any call is inside.

    Reference-counted so that concurrent calls from several Python threads restore the user's
    setting exactly once, when the last of them leaves.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = []
        self._controllers = None

    def _blas_controllers(self):
        if self._controllers is None:
            try:
                import scipy.linalg.cython_blas  # noqa: F401  (loads the library to control)
                from threadpoolctl import ThreadpoolController
                import scipy

                scipy_dir = os.path.dirname(os.path.dirname(scipy.__file__))
                ctl = ThreadpoolController().select(user_api="blas")
                # SciPy's BLAS only: NumPy may carry a second one that fastconv never calls.
                self._controllers = [c for c in ctl.lib_controllers
                                     if c.filepath.startswith(scipy_dir)
                                     and "numpy" not in c.filepath] or list(ctl.lib_controllers)
            except Exception:  # threadpoolctl missing or unable to inspect: nothing to hold
                self._controllers = []
        return self._controllers

    def describe(self):
        return [c.info() for c in self._blas_controllers()]

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = []
                for c in self._blas_controllers():
                    current = c.get_num_threads()
                    self._saved.append((c, current))
                    if current != 1:
                        c.set_num_threads(1)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for c, count in self._saved:
                    if count != 1:
                        c.set_num_threads(count)
                self._saved = []
        return False


single_threaded_blas = _SingleThreadedBlas()


def _blas_local_setter_address():
    """Address of SciPy's OpenBLAS openblas_set_num_threads_local, or 0 if it has none."""
    import ctypes
    for controller in single_threaded_blas._blas_controllers():
        if getattr(controller, "internal_api", "") != "openblas":
            continue
        prefix = getattr(controller, "prefix", "") or ""
        for name in ("openblas_set_num_threads_local", f"{prefix}_set_num_threads_local",
                     "scipy_openblas_set_num_threads_local"):
            fn = getattr(controller.dynlib, name, None)
            if fn is not None:
                return ctypes.cast(fn, ctypes.c_void_p).value or 0
    return 0


def register_blas_hook():
    """Give the compiled runtime core (which every kernel module reads) the per-thread BLAS
    thread setter (see the module docstring). Called once, when fastconv is imported."""
    _core.set_blas_local_threads_hook(_blas_local_setter_address())


def blas_guard():
    """Context for a call whose kernels run BLAS GEMMs in OpenMP threads (see module doc)."""
    return single_threaded_blas
