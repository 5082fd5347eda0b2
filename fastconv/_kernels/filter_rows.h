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

#endif /* FASTCONV_FILTER_ROWS_H */
