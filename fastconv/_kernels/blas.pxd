# cython: language_level=3
"""Row-major GEMM over fused float/double on SciPy's BLAS, callable without the GIL.

Kernels call it from inside their own OpenMP threads; the Python layer keeps the BLAS library
single-threaded for the duration of a call (fastconv/_runtime/threads.py), so threads never multiply.
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm

from fastconv._core cimport set_local_threads_t, blas_local_threads


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C with C (m x n), op(A) (m x k), op(B) (k x n), row-major."""
    # A column-major BLAS reads a row-major matrix as its transpose, so it computes
    # C^T = op(B)^T op(A)^T: swap the operands and the dimensions m and n.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda, &beta, c, &ldc)


# OpenBLAS (0.3.27+) keeps a per-thread thread count: openblas_set_num_threads_local(n) sets
# it for the calling thread and returns the previous one. Each OpenMP thread of a kernel sets
# it to 1 before its GEMMs and restores it after, so BLAS never spawns threads of its own
# inside ours, and nothing global changes. The Python layer registers the function's address
# once, in fastconv._core (fastconv/_runtime/threads.py); kernels pass blas_local_threads() here.
# Without it (other BLAS) the Python layer holds BLAS at one thread.


cdef inline int hold_blas_single_threaded(set_local_threads_t set_local) noexcept nogil:
    """Make this thread's BLAS calls single-threaded; returns the count to restore (or 0)."""
    if set_local == NULL:
        return 0
    return set_local(1)


cdef inline void release_blas(set_local_threads_t set_local, int previous) noexcept nogil:
    if set_local != NULL and previous > 0 and previous != 1:
        set_local(previous)
