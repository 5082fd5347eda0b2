"""Deprecated alias from fastconv 0.1's flat layout: these names now live
in fastconv, fastconv.grad and fastconv.planning.

Importing this module still works, with a DeprecationWarning (see ARCHITECTURE.md)."""
from fastconv._deprecated import warn_moved

from fastconv._ops.pooling import *  # noqa: F401,F403
from fastconv._ops.pooling import __all__ as _names  # noqa: F401
from fastconv._ops.pooling import pool_output_size, unpool_output_size  # noqa: F401

__all__ = list(_names) + ["pool_output_size", "unpool_output_size"]

warn_moved(__name__, "fastconv, fastconv.grad and fastconv.planning")
