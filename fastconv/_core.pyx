# cython: language_level=3
"""The compiled runtime core: whether OpenMP is there and how many threads it offers, the
one registration of the per-thread BLAS thread setter, the kernel ids, the denormal
mode of the threads a call runs on, and the cache of large freed blocks behind fastconv's
allocations (NumPy's memory handler; the policy is fastconv/_runtime/memory.py).

The thread *policy* (what count each kernel uses, how BLAS is kept from oversubscribing)
lives in fastconv/_runtime/threads.py; kernels receive their thread count as an argument.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport uint64_t
from libc.string cimport memcmp
cimport numpy as cnp

cnp.import_array()

from fastconv._kernels cimport kernel_ids as ids

cdef extern from "openmp.h":
    int FASTCONV_HAVE_OPENMP
    int FASTCONV_OPENMP_VERSION
    int omp_get_max_threads() nogil
    int omp_get_thread_num() nogil

cdef extern from "fp_mode.h":
    int FASTCONV_HAVE_FP_MODE
    unsigned int fc_fp_mode_get() noexcept nogil
    void fc_fp_mode_set(unsigned int mode) noexcept nogil
    unsigned int fc_fp_mode_flush() noexcept nogil

cdef extern from "_runtime/memory_pool.h":
    size_t FC_POOL_MIN_BYTES
    object fc_pool_new_capsule()
    void fc_pool_set_limit(size_t limit_bytes) noexcept nogil
    void fc_pool_release() noexcept nogil
    void fc_pool_stats(uint64_t out[5]) noexcept nogil
    uint64_t fc_pool_handed_since(const void* ptr) noexcept nogil
    int fc_pool_register_fork_handler() noexcept nogil

cdef extern from "numpy/ndarraytypes.h":
    void* PyArray_HANDLER(cnp.ndarray arr)


cdef set_local_threads_t blas_set_local_threads = NULL


cdef set_local_threads_t blas_local_threads() noexcept nogil:
    """The registered openblas_set_num_threads_local, or NULL (see _kernels/blas.pxd)."""
    return blas_set_local_threads


def set_blas_local_threads_hook(size_t address):
    """Register openblas_set_num_threads_local (its address; 0 for none) for every kernel
    module (see fastconv/_kernels/blas.pxd)."""
    global blas_set_local_threads
    blas_set_local_threads = <set_local_threads_t> address


def kernel_ids():
    """{name: id} of the kernel variants (fastconv/_kernels/kernel_ids.pxd): the first
    argument of every kernel entry point."""
    return {
        "CONV_DIRECT_ROWS": ids.CONV_DIRECT_ROWS,
        "CONV_IM2COL_BLAS": ids.CONV_IM2COL_BLAS,
        "CONV_GEMM1X1_BLAS": ids.CONV_GEMM1X1_BLAS,
        "CONV_PACKED_SEGMENTS": ids.CONV_PACKED_SEGMENTS,
        "CONV_PACKED_PHASE": ids.CONV_PACKED_PHASE,
        "CONV_WINOGRAD": ids.CONV_WINOGRAD,
        "CONV_FFT": ids.CONV_FFT,
        "CONV_DIRECT_PLANES": ids.CONV_DIRECT_PLANES,
        "CONV_PACKED_STACKED": ids.CONV_PACKED_STACKED,
        "INPUT_GRAD_DIRECT_ROWS": ids.INPUT_GRAD_DIRECT_ROWS,
        "INPUT_GRAD_COL2IM_BLAS": ids.INPUT_GRAD_COL2IM_BLAS,
        "INPUT_GRAD_COL2IM_PACKED": ids.INPUT_GRAD_COL2IM_PACKED,
        "INPUT_GRAD_GEMM1X1_BLAS": ids.INPUT_GRAD_GEMM1X1_BLAS,
        "INPUT_GRAD_PHASE_CLASSES": ids.INPUT_GRAD_PHASE_CLASSES,
        "INPUT_GRAD_PHASE_SCATTER": ids.INPUT_GRAD_PHASE_SCATTER,
        "INPUT_GRAD_SUBPIXEL": ids.INPUT_GRAD_SUBPIXEL,
        "INPUT_GRAD_WINOGRAD": ids.INPUT_GRAD_WINOGRAD,
        "INPUT_GRAD_GEMM1X1_STACKED": ids.INPUT_GRAD_GEMM1X1_STACKED,
        "INPUT_GRAD_DIRECT_PHASES": ids.INPUT_GRAD_DIRECT_PHASES,
        "INPUT_GRAD_CHANNELS_LAST_PHASES": ids.INPUT_GRAD_CHANNELS_LAST_PHASES,
        "WEIGHT_GRAD_IM2COL_BLAS": ids.WEIGHT_GRAD_IM2COL_BLAS,
        "WEIGHT_GRAD_IM2COL_PACKED": ids.WEIGHT_GRAD_IM2COL_PACKED,
        "WEIGHT_GRAD_GEMM1X1_BLAS": ids.WEIGHT_GRAD_GEMM1X1_BLAS,
        "WEIGHT_GRAD_GEMM1X1_PACKED": ids.WEIGHT_GRAD_GEMM1X1_PACKED,
        "WEIGHT_GRAD_PHASE": ids.WEIGHT_GRAD_PHASE,
        "WEIGHT_GRAD_DEPTHWISE_ROWS": ids.WEIGHT_GRAD_DEPTHWISE_ROWS,
        "WEIGHT_GRAD_WINOGRAD": ids.WEIGHT_GRAD_WINOGRAD,
    }


def openmp_enabled():
    """True if the extensions were compiled with OpenMP (else every kernel runs serially)."""
    return bool(FASTCONV_HAVE_OPENMP)


def openmp_version():
    """The _OPENMP date macro of the compiler (for example 201511), or 0 without OpenMP."""
    return FASTCONV_OPENMP_VERSION


def openmp_max_threads():
    """omp_get_max_threads(): the OpenMP runtime's default team size (honours OMP_NUM_THREADS)."""
    return omp_get_max_threads()


def fp_mode_supported():
    """True if this build can flush denormals (x86: the MXCSR's FTZ and DAZ bits)."""
    return bool(FASTCONV_HAVE_FP_MODE)


def fp_mode():
    """The calling thread's floating-point control word (MXCSR on x86, else 0)."""
    return fc_fp_mode_get()


def start_workers(int threads):
    """Run an empty parallel region of `threads` threads, so that OpenMP creates the workers
    of the calling thread's team now: a new thread starts in its creator's floating-point
    mode, and one created inside a call that flushes on the calling thread alone would keep
    flushing in every later call."""
    cdef int thread
    if threads < 2:
        return
    with nogil, parallel(num_threads=threads):
        thread = omp_get_thread_num()


def flush_denormals(unsigned int[::1] saved):
    """Flush denormals on the calling thread and on the OpenMP workers of a team of
    len(saved) threads (the workers the kernels' parallel regions reuse), saving each
    thread's mode in saved[thread]. restore_fp_mode(saved) undoes it."""
    cdef int threads = <int> saved.shape[0]
    if threads < 1:
        raise ValueError(f"saved must hold one mode per thread; got {threads}")
    if threads == 1:
        saved[0] = fc_fp_mode_flush()
        return
    with nogil, parallel(num_threads=threads):
        saved[omp_get_thread_num()] = fc_fp_mode_flush()


def restore_fp_mode(unsigned int[::1] saved):
    """Give each thread of the team its mode from before flush_denormals(saved)."""
    cdef int threads = <int> saved.shape[0]
    if threads < 1:
        raise ValueError(f"saved must hold one mode per thread; got {threads}")
    if threads == 1:
        fc_fp_mode_set(saved[0])
        return
    with nogil, parallel(num_threads=threads):
        fc_fp_mode_set(saved[omp_get_thread_num()])


# Below this many bytes a compare runs on the calling thread alone (a team costs more).
PARALLEL_COMPARE_BYTES = 1 << 20


def bytes_equal_at(size_t address, const unsigned char[::1] copy, int num_threads=1):
    """True if the len(copy) bytes at `address` equal copy's (memcmp without the GIL, in
    chunks over `num_threads` threads from PARALLEL_COMPARE_BYTES on: one thread streams a
    large layer's weights well below the memory's bandwidth, and a batch-1 network compares
    every layer's on every call). The caller vouches that the bytes at `address` are an
    array's own memory while it holds the array (the weight cache: a hit on an entry keyed by
    address, shape, strides and dtype is the same dense block it copied)."""
    cdef const unsigned char* here = <const unsigned char*> address
    cdef Py_ssize_t n = copy.shape[0]
    cdef Py_ssize_t chunks = 8 * num_threads, chunk, i, begin, length
    cdef int differ = 0
    if n == 0:
        return True
    if num_threads < 2 or n < PARALLEL_COMPARE_BYTES:
        with nogil:
            differ = memcmp(here, &copy[0], n)
        return differ == 0
    chunk = (n + chunks - 1) // chunks
    with nogil:
        for i in prange(chunks, num_threads=num_threads, schedule='dynamic'):
            begin = i * chunk
            length = n - begin if n - begin < chunk else chunk
            if length > 0 and memcmp(here + begin, &copy[begin], length) != 0:
                differ += 1
    return differ == 0


# NumPy's memory handler for the arrays fastconv allocates: large freed blocks are kept for
# reuse (fastconv/_runtime/memory_pool.h). One capsule for the process; an array allocated
# under it keeps a reference and frees through it wherever it dies.
POOL_HANDLER = fc_pool_new_capsule()
fc_pool_register_fork_handler()
POOL_MIN_BYTES = FC_POOL_MIN_BYTES


def use_allocator(handler):
    """Make `handler` (a NumPy "mem_handler" capsule) allocate the calling context's new
    arrays; returns the one it replaces (NumPy's PyDataMem_SetHandler)."""
    return cnp.PyDataMem_SetHandler(handler)


def set_pool_limit(size_t limit_bytes):
    """Keep at most `limit_bytes` of freed blocks (0: none); the excess is freed now."""
    with nogil:
        fc_pool_set_limit(limit_bytes)


def release_pool():
    """Give every cached block back to the system."""
    with nogil:
        fc_pool_release()


def pool_stats():
    """(cached bytes, cached blocks, limit in bytes, hits, misses) of the block cache."""
    cdef uint64_t out[5]
    fc_pool_stats(out)
    return tuple(out[i] for i in range(5))


def pool_handed_since(cnp.ndarray array):
    """For an array that owns a block of the cache: the bytes the cache handed out between
    the block's last free and this reuse (2**64 - 1 for a block new from the system: cold);
    -1 for any other array (unknown)."""
    if PyArray_HANDLER(array) != <void*> POOL_HANDLER \
            or not cnp.PyArray_CHKFLAGS(array, cnp.NPY_ARRAY_OWNDATA):
        return -1
    return fc_pool_handed_since(cnp.PyArray_DATA(array))
