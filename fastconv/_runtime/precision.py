"""Which algorithms ``algorithm="auto"`` may choose, by their rounding.

- ``"fast"`` (the default): the dispatcher may choose Winograd convolution for 3x3 stride-1
  layers and the FFT for large filters. Winograd's float32 results differ from the direct
  sum by a few times the direct sum's own rounding error, the FFT's by a bound on the norms
  of whole planes (bounds and measurements: README, "Accuracy"; notes/winograd.md).
- ``"exact"``: every output is one sum of the products input x weight, as PyTorch computes it
  (rounded only as that sum is): Winograd and the FFT are never chosen (nor timed by the
  autotuner), though either can still be forced with ``algorithm=``.

The setting is ``set_precision(mode)`` if called, else the environment variable
``FASTCONV_PRECISION``, else ``"fast"``; ``precision(mode)`` sets it for a ``with`` block.
"""
import contextlib
import os

__all__ = ["set_precision", "get_precision", "precision"]

MODES = ("fast", "exact")
ENV = "FASTCONV_PRECISION"
_requested = None


def _check_mode(mode, name):
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    return mode


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
    global _requested
    mode = _check_mode(mode, "precision")
    previous = get_precision()
    _requested = mode
    return previous


def get_precision():
    """The current mode: "fast" (Winograd and the FFT allowed) or "exact" (see the module
    docstring)."""
    if _requested is not None:
        return _requested
    env = os.environ.get(ENV)
    return _check_mode(env, ENV) if env else "fast"


@contextlib.contextmanager
def precision(mode):
    """``with fastconv.precision("exact"): ...`` runs the block in `mode`, then restores the
    previous one."""
    previous = set_precision(mode)
    try:
        yield
    finally:
        set_precision(previous)
