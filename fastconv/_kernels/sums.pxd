# cython: language_level=3
"""Sums of planes for bias gradients (sums.h): used by the bias gradient (conv_bias.pyx)
and by the phase-grid weight gradient, which sums each plane while it copies it anyway
(conv_phase_grid.pyx); both must add in the same order."""
from cython cimport floating

cdef extern from "sums.h":
    double fc_sum_f32(const float* x, Py_ssize_t n) noexcept nogil
    double fc_sum_f64(const double* x, Py_ssize_t n) noexcept nogil


cdef inline double plane_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fc_sum_f32(x, n)
    return fc_sum_f64(x, n)
