# cython: language_level=3
"""Row copies shared by the kernels that de-interleave (or interleave) rows: the packed
unfolding (conv_packed.pyx), the phase grid (conv_phase_grid.pyx) and the direct kernels'
stride phases (conv_direct.pyx); pair_rows.h."""
from cython cimport floating
from libc.string cimport memcpy

cdef extern from "pair_rows.h":
    void fc_take_even_f32(const float* src, float* dst, Py_ssize_t n) noexcept nogil
    void fc_take_even_f64(const double* src, double* dst, Py_ssize_t n) noexcept nogil
    void fc_split_pairs_f32(const float* src, float* even, float* odd, Py_ssize_t n) noexcept nogil
    void fc_split_pairs_f64(const double* src, double* even, double* odd,
                            Py_ssize_t n) noexcept nogil
    void fc_split_pairs_rows_f32(const float* src, Py_ssize_t src_stride, float* even,
                                 float* odd, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil
    void fc_split_pairs_rows_f64(const double* src, Py_ssize_t src_stride, double* even,
                                 double* odd, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil
    void fc_merge_pairs_rows_f32(const float* even, const float* odd, Py_ssize_t src_stride,
                                 float* dst, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil
    void fc_merge_pairs_rows_f64(const double* even, const double* odd, Py_ssize_t src_stride,
                                 double* dst, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil
    void fc_copy_short(void* dst, const void* src, size_t bytes) noexcept nogil
    void fc_zero_short(void* dst, size_t bytes) noexcept nogil
    void fc_copy_rows(void* dst, size_t dst_stride, const void* src, size_t src_stride,
                      size_t bytes, Py_ssize_t rows) noexcept nogil
    void fc_pad_rows(void* dst, size_t dst_stride, const void* src, size_t src_stride,
                     size_t first, size_t bytes, size_t width, Py_ssize_t rows) noexcept nogil


cdef inline void copy_strided(floating* dst, const floating* src, Py_ssize_t n,
                              Py_ssize_t stride) noexcept nogil:
    """dst[i] = src[i * stride] for i < n; stride 2 (every downsampling layer) by shuffles."""
    cdef Py_ssize_t i
    if stride == 1:
        memcpy(dst, src, n * sizeof(floating))
    elif stride == 2:
        if floating is float:
            fc_take_even_f32(src, dst, n)
        else:
            fc_take_even_f64(src, dst, n)
    else:
        for i in range(n):
            dst[i] = src[i * stride]


cdef inline void split_pairs(const floating* src, floating* even, floating* odd,
                             Py_ssize_t n) noexcept nogil:
    """even[i] = src[2i], odd[i] = src[2i + 1] for i < n, by shuffles."""
    if floating is float:
        fc_split_pairs_f32(src, even, odd, n)
    else:
        fc_split_pairs_f64(src, even, odd, n)


cdef inline void split_pairs_rows(const floating* src, Py_ssize_t src_stride, floating* even,
                                  floating* odd, Py_ssize_t dst_stride, Py_ssize_t n,
                                  Py_ssize_t rows) noexcept nogil:
    """even[r * dst_stride + i] = src[r * src_stride + 2i], odd[...] = src[... + 2i + 1]
    for i < n, r < rows (vector shuffles)."""
    if floating is float:
        fc_split_pairs_rows_f32(src, src_stride, even, odd, dst_stride, n, rows)
    else:
        fc_split_pairs_rows_f64(src, src_stride, even, odd, dst_stride, n, rows)


cdef inline void merge_pairs_rows(const floating* even, const floating* odd,
                                  Py_ssize_t src_stride, floating* dst, Py_ssize_t dst_stride,
                                  Py_ssize_t n, Py_ssize_t rows) noexcept nogil:
    """dst[r * dst_stride + 2i] = even[r * src_stride + i], dst[... + 2i + 1] = odd[...]
    for i < n, r < rows (vector shuffles): the inverse of split_pairs_rows."""
    if floating is float:
        fc_merge_pairs_rows_f32(even, odd, src_stride, dst, dst_stride, n, rows)
    else:
        fc_merge_pairs_rows_f64(even, odd, src_stride, dst, dst_stride, n, rows)
