# cython: language_level=3
"""Weights for the sub-pixel input gradient (INPUT_GRAD_SUBPIXEL, composed in Python from
forward kernels, fastconv/_ops/conv_grad.py): the forward weight of one stride phase of the
transposed convolution."""
from cython cimport floating


def adjoint_phase_weight(const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] out,
                         Py_ssize_t groups, tuple phase, tuple stride):
    """out[g * C_in_g + ci, co, j] := w[g * C_out_g + co, ci, k(j)] with, per axis,
    k(j) = phase + (M - 1 - j) * stride (M = out's size along the axis): the reversed taps of one stride phase, channels transposed per group — the forward weight
    of one phase of the transposed convolution (see fastconv/_ops/conv_grad.py, _run_subpixel)."""
    cdef Py_ssize_t c_out = w.shape[0], c_in_g = w.shape[1]
    cdef Py_ssize_t c_out_g = c_out // groups
    cdef Py_ssize_t M0 = out.shape[2], M1 = out.shape[3], M2 = out.shape[4]
    cdef Py_ssize_t f0 = phase[0], f1 = phase[1], f2 = phase[2]
    cdef Py_ssize_t s0 = stride[0], s1 = stride[1], s2 = stride[2]
    cdef Py_ssize_t g, ci, co, j0, j1, j2
    with nogil:
        for g in range(groups):
            for ci in range(c_in_g):
                for co in range(c_out_g):
                    for j0 in range(M0):
                        for j1 in range(M1):
                            for j2 in range(M2):
                                out[g * c_in_g + ci, co, j0, j1, j2] = w[
                                    g * c_out_g + co, ci, f0 + (M0 - 1 - j0) * s0,
                                    f1 + (M1 - 1 - j1) * s1, f2 + (M2 - 1 - j2) * s2]
