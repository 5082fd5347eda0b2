# cython: language_level=3
"""The bias gradient: out[c] = sum over images and positions of g[n, c, p], one channel per
task, each plane summed by sums.h (the phase-grid weight gradient sums the same way)."""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels.sums cimport plane_sum


def bias_grad(const floating[:, :, ::1] g, floating[::1] out, int num_threads):
    """out[c] := sum_{n, p} g[n, c, p] (summed in double per block of 1024 elements); an
    empty g leaves out as it is."""
    cdef Py_ssize_t N = g.shape[0], C = g.shape[1], P = g.shape[2]
    cdef Py_ssize_t c, n
    cdef double total
    if N == 0 or C == 0 or P == 0:
        return
    with nogil:
        for c in prange(C, num_threads=num_threads, schedule='static'):
            total = 0
            for n in range(N):
                total = total + plane_sum(&g[n, c, 0], P)
            out[c] = <floating> total
