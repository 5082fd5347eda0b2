# cython: language_level=3
"""The runtime core that every kernel module cimports (fastconv/_core.pyx).

The per-thread BLAS thread setter is registered once, here (set_blas_local_threads_hook);
kernel modules read it through blas_local_threads() (see fastconv/_kernels/blas.pxd).
"""

# OpenBLAS's openblas_set_num_threads_local: sets the calling thread's BLAS thread count and
# returns the previous one (see fastconv/_kernels/blas.pxd).
ctypedef int (*set_local_threads_t)(int) noexcept nogil

cdef set_local_threads_t blas_local_threads() noexcept nogil
