"""Deprecated alias from fastconv 0.1's flat layout: these names live in fastconv.

Importing this module still works, with a DeprecationWarning (see ARCHITECTURE.md)."""
from fastconv._deprecated import warn_moved

from fastconv import (  # noqa: F401
    conv1d, conv2d, conv3d, convolve, correlate, output_shape, receptive_field,
    choose_algorithm, ReceptiveField,
)

__all__ = [
    "conv1d", "conv2d", "conv3d", "convolve", "correlate", "output_shape", "receptive_field",
    "choose_algorithm", "ReceptiveField",
]

warn_moved(__name__, "fastconv")
