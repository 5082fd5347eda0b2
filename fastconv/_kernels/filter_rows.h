/* The vectorized inner loop of the n-d filters (filters.pyx): one stretch of one output row,
 *
 *     out[j] = c + sum over rows r < nrows, taps k < taps of  w[r][k] * src[r][j + k],
 *
 * for j in [j0, j1), where every src[r][j + k] lies inside its input row (the caller passes
 * the borders as copies made through the mode's index table). Four vectors of outputs stay in
 * registers across all rows and taps, so each output is stored once (reading the rows one
 * after another into an L1-resident segment instead measured 1.3-2x slower on Zen 4). */
#ifndef FASTCONV_FILTER_ROWS_H
#define FASTCONV_FILTER_ROWS_H
#include <stddef.h>
#include <string.h>
/* the micro-kernel's vector type and width (FC_VEC_*, fc_gvec_*) */
#include "gemm_microkernel.h"

#define FC_DEFINE_FILTER_ROW(SUFFIX, T)                                                         \
static inline void fc_filter_row_##SUFFIX(const T* const* src, const T* const* w,              \
                                          ptrdiff_t nrows, ptrdiff_t taps, T c, T* out,        \
                                          ptrdiff_t j0, ptrdiff_t j1) {                        \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    ptrdiff_t j = j0;                                                                          \
    for (; j + 4 * V <= j1; j += 4 * V) {                                                      \
        vec a0 = (vec){0} + c, a1 = a0, a2 = a0, a3 = a0, v0, v1, v2, v3;                      \
        for (ptrdiff_t r = 0; r < nrows; r++) {                                                \
            const T* p = src[r] + j;                                                           \
            const T* wr = w[r];                                                                \
            for (ptrdiff_t k = 0; k < taps; k++) {                                             \
                T wk = wr[k];                                                                  \
                memcpy(&v0, p + k, sizeof(vec));                                               \
                memcpy(&v1, p + k + V, sizeof(vec));                                           \
                memcpy(&v2, p + k + 2 * V, sizeof(vec));                                       \
                memcpy(&v3, p + k + 3 * V, sizeof(vec));                                       \
                a0 += wk * v0; a1 += wk * v1; a2 += wk * v2; a3 += wk * v3;                    \
            }                                                                                  \
        }                                                                                      \
        memcpy(out + j, &a0, sizeof(vec));                                                     \
        memcpy(out + j + V, &a1, sizeof(vec));                                                 \
        memcpy(out + j + 2 * V, &a2, sizeof(vec));                                             \
        memcpy(out + j + 3 * V, &a3, sizeof(vec));                                             \
    }                                                                                          \
    for (; j + V <= j1; j += V) {                                                              \
        vec a0 = (vec){0} + c, v0;                                                             \
        for (ptrdiff_t r = 0; r < nrows; r++)                                                  \
            for (ptrdiff_t k = 0; k < taps; k++) {                                             \
                memcpy(&v0, src[r] + j + k, sizeof(vec));                                      \
                a0 += w[r][k] * v0;                                                            \
            }                                                                                  \
        memcpy(out + j, &a0, sizeof(vec));                                                     \
    }                                                                                          \
    for (; j < j1; j++) {                                                                      \
        T acc = c;                                                                             \
        for (ptrdiff_t r = 0; r < nrows; r++)                                                  \
            for (ptrdiff_t k = 0; k < taps; k++) acc += w[r][k] * src[r][j + k];               \
        out[j] = acc;                                                                          \
    }                                                                                          \
}

FC_DEFINE_FILTER_ROW(f32, float)
FC_DEFINE_FILTER_ROW(f64, double)

/* Four output rows at once of a column filter (one tap per input row):
 *
 *     out[m][j] = c[m] + sum over u < n of  w[4 u + m] * src[u][j],   m < 4, j < len,
 *
 * where the four outputs are consecutive rows, so that they read the same n input rows (with
 * weights shifted by one row each, zero where a row is not among an output's taps). Each
 * input vector is loaded once for four outputs: a column pass of k taps reads k + 3 rows for
 * four output rows instead of 4 k. */
#define FC_DEFINE_FILTER_COLUMNS4(SUFFIX, T)                                                    \
static inline void fc_filter_columns4_##SUFFIX(const T* const* src, const T* w, ptrdiff_t n,   \
                                               const T* c, T* const* out, ptrdiff_t len) {     \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    ptrdiff_t j = 0;                                                                           \
    for (; j + 2 * V <= len; j += 2 * V) {                                                     \
        vec a00 = (vec){0} + c[0], a01 = a00, a10 = (vec){0} + c[1], a11 = a10;                \
        vec a20 = (vec){0} + c[2], a21 = a20, a30 = (vec){0} + c[3], a31 = a30, v0, v1;        \
        for (ptrdiff_t u = 0; u < n; u++) {                                                    \
            const T* wu = w + 4 * u;                                                           \
            memcpy(&v0, src[u] + j, sizeof(vec));                                              \
            memcpy(&v1, src[u] + j + V, sizeof(vec));                                          \
            a00 += wu[0] * v0; a01 += wu[0] * v1;                                              \
            a10 += wu[1] * v0; a11 += wu[1] * v1;                                              \
            a20 += wu[2] * v0; a21 += wu[2] * v1;                                              \
            a30 += wu[3] * v0; a31 += wu[3] * v1;                                              \
        }                                                                                      \
        memcpy(out[0] + j, &a00, sizeof(vec)); memcpy(out[0] + j + V, &a01, sizeof(vec));      \
        memcpy(out[1] + j, &a10, sizeof(vec)); memcpy(out[1] + j + V, &a11, sizeof(vec));      \
        memcpy(out[2] + j, &a20, sizeof(vec)); memcpy(out[2] + j + V, &a21, sizeof(vec));      \
        memcpy(out[3] + j, &a30, sizeof(vec)); memcpy(out[3] + j + V, &a31, sizeof(vec));      \
    }                                                                                          \
    for (; j < len; j++) {                                                                     \
        T a0 = c[0], a1 = c[1], a2 = c[2], a3 = c[3];                                          \
        for (ptrdiff_t u = 0; u < n; u++) {                                                    \
            T v = src[u][j];                                                                   \
            a0 += w[4 * u] * v; a1 += w[4 * u + 1] * v;                                        \
            a2 += w[4 * u + 2] * v; a3 += w[4 * u + 3] * v;                                    \
        }                                                                                      \
        out[0][j] = a0; out[1][j] = a1; out[2][j] = a2; out[3][j] = a3;                        \
    }                                                                                          \
}

FC_DEFINE_FILTER_COLUMNS4(f32, float)
FC_DEFINE_FILTER_COLUMNS4(f64, double)

#endif /* FASTCONV_FILTER_ROWS_H */
