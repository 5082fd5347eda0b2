# cython: language_level=3
"""Facts about the compiled runtime: whether OpenMP is there, and how many threads it offers.

The thread *policy* (what count each kernel uses, how BLAS is kept from oversubscribing)
lives in fastconv/_parallel.py; kernels receive their thread count as an argument.
"""

cdef extern from "_openmp.h":
    int FASTCONV_HAVE_OPENMP
    int FASTCONV_OPENMP_VERSION
    int omp_get_max_threads() nogil


def openmp_enabled():
    """True if the extensions were compiled with OpenMP (else every kernel runs serially)."""
    return bool(FASTCONV_HAVE_OPENMP)


def openmp_version():
    """The _OPENMP date macro of the compiler (for example 201511), or 0 without OpenMP."""
    return FASTCONV_OPENMP_VERSION


def openmp_max_threads():
    """omp_get_max_threads(): the OpenMP runtime's default team size (honours OMP_NUM_THREADS)."""
    return omp_get_max_threads()
