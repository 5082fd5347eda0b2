"""Deprecated alias from fastconv 0.1's flat layout: these names now live
in fastconv and fastconv.grad.

Importing this module still works, with a DeprecationWarning (see ARCHITECTURE.md)."""
from fastconv._deprecated import warn_moved

from fastconv._ops.conv_transpose import *  # noqa: F401,F403
from fastconv._ops.conv_transpose import __all__  # noqa: F401

warn_moved(__name__, "fastconv and fastconv.grad")
