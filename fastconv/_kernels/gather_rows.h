/* One row of a gather with per-position tables (the adjoint kernels of resample.pyx):
 *     out[i] = sum over f < fan_in of weight[f * n + i] * values[src[f * n + i]]
 * entries added in f order, each block of outputs summed in registers and stored once.
 * The vector gathers are written out: GCC 12's generic tuning never emits them, and the
 * scalar loop it made instead (a load and a store through memory per add) ran bilinear x2
 * backward at 6% of the copy bandwidth (Zen 4). */
#ifndef FASTCONV_GATHER_ROWS_H
#define FASTCONV_GATHER_ROWS_H
#include <stddef.h>
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define FC_GATHER_ROW_TAIL(T)                                                                  \
    for (; i < n; i++) {                                                                       \
        T sum = weight[i] * values[src[i]];                                                    \
        for (ptrdiff_t f = 1; f < fan_in; f++)                                                 \
            sum += weight[f * n + i] * values[src[f * n + i]];                                 \
        out[i] = sum;                                                                          \
    }

/* One vector of outputs: LOADI(p) loads the indices at p, GATHER(idx) the values they name. */
#define FC_GATHER_ROW_BODY(V, VEC, LOADI, LOADW, GATHER, FMA, MUL, STORE)                     \
    for (; i + V <= n; i += V) {                                                               \
        VEC sum = MUL(LOADW(weight + i), GATHER(LOADI(src + i)));                              \
        for (ptrdiff_t f = 1; f < fan_in; f++)                                                 \
            sum = FMA(LOADW(weight + f * n + i), GATHER(LOADI(src + f * n + i)), sum);         \
        STORE(out + i, sum);                                                                   \
    }

static inline void fc_gather_row_f32(float* out, const float* values, const int32_t* src,
                                     const float* weight, ptrdiff_t n, ptrdiff_t fan_in) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
#define FC_G(idx) _mm512_i32gather_ps(idx, values, 4)
    FC_GATHER_ROW_BODY(16, __m512, _mm512_loadu_si512, _mm512_loadu_ps, FC_G,
                       _mm512_fmadd_ps, _mm512_mul_ps, _mm512_storeu_ps)
#undef FC_G
#elif defined(__AVX2__) && defined(__FMA__)
#define FC_LOADI(p) _mm256_loadu_si256((const __m256i*) (p))
#define FC_G(idx) _mm256_i32gather_ps(values, idx, 4)
    FC_GATHER_ROW_BODY(8, __m256, FC_LOADI, _mm256_loadu_ps, FC_G,
                       _mm256_fmadd_ps, _mm256_mul_ps, _mm256_storeu_ps)
#undef FC_G
#undef FC_LOADI
#endif
    FC_GATHER_ROW_TAIL(float)
}

static inline void fc_gather_row_f64(double* out, const double* values, const int32_t* src,
                                     const double* weight, ptrdiff_t n, ptrdiff_t fan_in) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
#define FC_LOADI(p) _mm256_loadu_si256((const __m256i*) (p))
#define FC_G(idx) _mm512_i32gather_pd(idx, values, 8)
    FC_GATHER_ROW_BODY(8, __m512d, FC_LOADI, _mm512_loadu_pd, FC_G,
                       _mm512_fmadd_pd, _mm512_mul_pd, _mm512_storeu_pd)
#undef FC_G
#undef FC_LOADI
#elif defined(__AVX2__) && defined(__FMA__)
#define FC_LOADI(p) _mm_loadu_si128((const __m128i*) (p))
#define FC_G(idx) _mm256_i32gather_pd(values, idx, 8)
    FC_GATHER_ROW_BODY(4, __m256d, FC_LOADI, _mm256_loadu_pd, FC_G,
                       _mm256_fmadd_pd, _mm256_mul_pd, _mm256_storeu_pd)
#undef FC_G
#undef FC_LOADI
#endif
    FC_GATHER_ROW_TAIL(double)
}

#endif /* FASTCONV_GATHER_ROWS_H */
