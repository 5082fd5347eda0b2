/* Transposed copies of row-major blocks:
 *   fc_transpose_<t>(src, src_stride, dst, dst_stride, rows, cols):
 *       dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols
 * (strides in elements). The weights' B panels (a channels-last weight's output channels
 * become the panels' contiguous columns) and channels-first <-> channels-last images are such
 * copies. An element-by-element loop writes or reads across rows one element at a time (the
 * weight packing of a channels-last ResNet-50 training step ran at 4 GB/s, 20 ms a step);
 * here square tiles go through vector registers: 8 x 8 floats or 4 x 4 doubles with AVX (two
 * rounds of unpacks and a swap of 128-bit halves), whole rows in and whole rows out. The
 * edges past the last whole tile, and builds without AVX, copy element by element. Nothing
 * is read or written outside the two blocks. */
#ifndef FASTCONV_TRANSPOSE_TILES_H
#define FASTCONV_TRANSPOSE_TILES_H
#include <stddef.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

static inline void fc_transpose_edge_f32(const float* src, ptrdiff_t ss, float* dst,
                                         ptrdiff_t ds, ptrdiff_t rows, ptrdiff_t cols) {
    for (ptrdiff_t j = 0; j < cols; j++)
        for (ptrdiff_t i = 0; i < rows; i++)
            dst[j * ds + i] = src[i * ss + j];
}

static inline void fc_transpose_edge_f64(const double* src, ptrdiff_t ss, double* dst,
                                         ptrdiff_t ds, ptrdiff_t rows, ptrdiff_t cols) {
    for (ptrdiff_t j = 0; j < cols; j++)
        for (ptrdiff_t i = 0; i < rows; i++)
            dst[j * ds + i] = src[i * ss + j];
}

#ifdef __AVX__
/* four rows of 8 floats from src (rows ss apart) as four vectors, pairs of rows interleaved
 * and then pairs of pairs: u[c] holds column c's 4 values in its low 128-bit half and column
 * c + 4's in its high half */
static inline void fc_columns_of_4_rows_f32(const float* src, ptrdiff_t ss, __m256 u[4]) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss);
    __m256 r2 = _mm256_loadu_ps(src + 2 * ss), r3 = _mm256_loadu_ps(src + 3 * ss);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    u[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    u[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    u[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    u[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

/* one 8 x 8 tile of floats: each column's rows 0-3 half and rows 4-7 half joined */
static inline void fc_transpose_8x8_f32(const float* src, ptrdiff_t ss, float* dst,
                                        ptrdiff_t ds) {
    __m256 lo[4], hi[4];
    fc_columns_of_4_rows_f32(src, ss, lo);
    fc_columns_of_4_rows_f32(src + 4 * ss, ss, hi);
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_ps(dst + c * ds, _mm256_permute2f128_ps(lo[c], hi[c], 0x20));
        _mm256_storeu_ps(dst + (c + 4) * ds, _mm256_permute2f128_ps(lo[c], hi[c], 0x31));
    }
}

/* four rows of 8 floats (the rows past the last 8 of a 12-row A panel): each column's 4
 * values one 128-bit half */
static inline void fc_transpose_4x8_f32(const float* src, ptrdiff_t ss, float* dst,
                                        ptrdiff_t ds) {
    __m256 u[4];
    fc_columns_of_4_rows_f32(src, ss, u);
    for (int c = 0; c < 4; c++) {
        _mm_storeu_ps(dst + c * ds, _mm256_castps256_ps128(u[c]));
        _mm_storeu_ps(dst + (c + 4) * ds, _mm256_extractf128_ps(u[c], 1));
    }
}

/* one 4 x 4 tile of doubles */
static inline void fc_transpose_4x4_f64(const double* src, ptrdiff_t ss, double* dst,
                                        ptrdiff_t ds) {
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ss);
    __m256d r2 = _mm256_loadu_pd(src + 2 * ss), r3 = _mm256_loadu_pd(src + 3 * ss);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ds, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ds, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ds, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#define FC_TILE_F32 8
#define FC_TILE_F64 4
#endif

/* fc_transpose_<t>: whole tiles of TILE rows through registers, then (floats) a band of 4
 * rows by the half tile, then the edges element by element */
#ifdef __AVX__
#define FC_DEFINE_TRANSPOSE(t, T, TILE, tile_fn, HALF, half_fn)                              \
static inline void fc_transpose_##t(const T* src, ptrdiff_t ss, T* dst, ptrdiff_t ds,       \
                                    ptrdiff_t rows, ptrdiff_t cols) {                       \
    ptrdiff_t i = 0, j;                                                                     \
    for (; i + TILE <= rows; i += TILE) {                                                   \
        for (j = 0; j + TILE <= cols; j += TILE)                                            \
            tile_fn(src + i * ss + j, ss, dst + j * ds + i, ds);                            \
        fc_transpose_edge_##t(src + i * ss + j, ss, dst + j * ds + i, ds, TILE, cols - j);  \
    }                                                                                       \
    if (HALF < TILE && i + HALF <= rows) {                                                  \
        for (j = 0; j + TILE <= cols; j += TILE)                                            \
            half_fn(src + i * ss + j, ss, dst + j * ds + i, ds);                            \
        fc_transpose_edge_##t(src + i * ss + j, ss, dst + j * ds + i, ds, HALF, cols - j);  \
        i += HALF;                                                                          \
    }                                                                                       \
    fc_transpose_edge_##t(src + i * ss, ss, dst + i, ds, rows - i, cols);                   \
}
#else
#define FC_DEFINE_TRANSPOSE(t, T, TILE, tile_fn, HALF, half_fn)                              \
static inline void fc_transpose_##t(const T* src, ptrdiff_t ss, T* dst, ptrdiff_t ds,       \
                                    ptrdiff_t rows, ptrdiff_t cols) {                       \
    fc_transpose_edge_##t(src, ss, dst, ds, rows, cols);                                    \
}
#endif
FC_DEFINE_TRANSPOSE(f32, float, FC_TILE_F32, fc_transpose_8x8_f32, 4, fc_transpose_4x8_f32)
/* (doubles: no half tile; HALF == TILE turns the band off) */
FC_DEFINE_TRANSPOSE(f64, double, FC_TILE_F64, fc_transpose_4x4_f64, FC_TILE_F64,
                    fc_transpose_4x4_f64)

#endif
