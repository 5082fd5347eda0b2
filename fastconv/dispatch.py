"""Deprecated alias from fastconv 0.1's flat layout: these names live in fastconv.planning.

Importing this module still works, with a DeprecationWarning (see ARCHITECTURE.md)."""
from fastconv._deprecated import warn_moved

from fastconv._plan.dispatch import (  # noqa: F401
    ALGORITHMS, INPUT_GRAD_ALGORITHMS, RULES, INPUT_GRAD_RULES, SUPPORTS, REQUIREMENT,
    MAX_DIRECT_OUT_CHANNELS, BLAS_INDEX_LIMIT, Rule, ConvProblem, fits_blas,
    blas_runs_full_width,
)

__all__ = [
    "ALGORITHMS", "INPUT_GRAD_ALGORITHMS", "RULES", "INPUT_GRAD_RULES", "SUPPORTS", "REQUIREMENT",
    "MAX_DIRECT_OUT_CHANNELS", "BLAS_INDEX_LIMIT", "Rule", "ConvProblem", "fits_blas",
    "blas_runs_full_width",
]

warn_moved(__name__, "fastconv.planning")
