/* The vectorized inner loop of the n-d filters (filters.pyx): one stretch of one output row,
 *
 *     out[j] = c + sum over rows r < nrows, taps k < taps of  w[r][k] * src[r][j + k],
 *
 * for j in [j0, j1), where every src[r][j + k] lies inside its input row (the caller passes
 * the borders as copies made through the mode's index table, fc_filter_short). Four vectors of outputs stay in
 * registers across all rows and taps, so each output is stored once (reading the rows one
 * after another into an L1-resident segment instead measured 1.3-2x slower on Zen 4). */
#ifndef FASTCONV_FILTER_ROWS_H
#define FASTCONV_FILTER_ROWS_H
#include <stddef.h>
#include <string.h>
/* the micro-kernel's vector type and width (FC_VEC_*, fc_gvec_*) */
#include "gemm_microkernel.h"

#define FC_DEFINE_FILTER_ROW(SUFFIX, T)                                                         \
static inline fc_gvec_##SUFFIX fc_filter_vector_##SUFFIX(const T* const* src,                  \
                                                         const T* const* w, ptrdiff_t nrows,   \
                                                         ptrdiff_t taps, T c, ptrdiff_t j) {   \
    fc_gvec_##SUFFIX a0 = (fc_gvec_##SUFFIX){0} + c, v0;                                       \
    for (ptrdiff_t r = 0; r < nrows; r++)                                                      \
        for (ptrdiff_t k = 0; k < taps; k++) {                                                 \
            memcpy(&v0, src[r] + j + k, sizeof(v0));                                           \
            a0 += w[r][k] * v0;                                                                \
        }                                                                                      \
    return a0;                                                                                 \
}                                                                                              \
                                                                                               \
/* n < V outputs of a row whose inputs are readable for V + taps - 1 elements (a border     \
 * block's padded copy): one vector, of which the first n lanes are stored */                 \
static inline void fc_filter_short_##SUFFIX(const T* const* src, const T* const* w,            \
                                            ptrdiff_t nrows, ptrdiff_t taps, T c, T* out,      \
                                            ptrdiff_t n) {                                     \
    fc_gvec_##SUFFIX a0 = fc_filter_vector_##SUFFIX(src, w, nrows, taps, c, 0);                \
    memcpy(out, &a0, n * sizeof(T));                                                           \
}                                                                                              \
                                                                                               \
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
    /* the last vector overlaps the one before it rather than leave a scalar tail (which     \
     * took a tenth of a 7x7 filter's time): its outputs come out with the same bits */        \
    for (; j < j1 && j1 - j0 >= V; j += V) {                                                   \
        if (j + V > j1) j = j1 - V;                                                            \
        vec a0 = fc_filter_vector_##SUFFIX(src, w, nrows, taps, c, j);                         \
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

/* Up to four consecutive output rows at once, sharing the input rows they read:
 *
 *     out[m][j] = c[m] + sum over entries e with lo[e] <= m <= hi[e], taps k of
 *                 w[4 e + m][k] * src[e][j + k],     m < 4, j in [j0, j1),
 *
 * where the entries are the input rows of the group in the order each output meets them (so
 * every output sums its terms in the order fc_filter_row does: the same bits). Each input
 * vector is loaded once for all the outputs that read it, which makes the loop bound by its
 * multiply-adds rather than by the (mostly cache-line-splitting) loads: a 7x7 filter loads
 * 10 rows for 4 output rows instead of 28. Only out[m < rows] is written. Returns the first j
 * not computed: j1, or j0 for a stretch narrower than the block (the caller then computes it
 * row by row with fc_filter_row). */
#define FC_ROWS4_TAPS(LO, HI)                                                                  \
    for (ptrdiff_t k = 0; k < taps; k++) {                                                     \
        memcpy(&v0, p + k, sizeof(vec));                                                       \
        memcpy(&v1, p + k + V, sizeof(vec));                                                   \
        FC_KEEP_IN_REGISTER(v0);                                                               \
        FC_KEEP_IN_REGISTER(v1);                                                               \
        if (LO <= 0 && 0 <= HI) { a00 += w0[k] * v0; a01 += w0[k] * v1; }                      \
        if (LO <= 1 && 1 <= HI) { a10 += w1[k] * v0; a11 += w1[k] * v1; }                      \
        if (LO <= 2 && 2 <= HI) { a20 += w2[k] * v0; a21 += w2[k] * v1; }                      \
        if (LO <= 3 && 3 <= HI) { a30 += w3[k] * v0; a31 += w3[k] * v1; }                      \
    }

#define FC_DEFINE_FILTER_ROWS4(SUFFIX, T)                                                       \
static inline ptrdiff_t fc_filter_rows4_##SUFFIX(const T* const* src, const T* const* w,       \
                                                 const unsigned char* lo,                      \
                                                 const unsigned char* hi, ptrdiff_t n,         \
                                                 ptrdiff_t taps, const T* c, T* const* out,    \
                                                 ptrdiff_t rows, ptrdiff_t j0, ptrdiff_t j1) { \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    ptrdiff_t j = j0;                                                                          \
    for (; j < j1 && j1 - j0 >= 2 * V; j += 2 * V) {                                           \
        if (j + 2 * V > j1) j = j1 - 2 * V;     /* the last block overlaps: same bits */       \
        vec a00 = (vec){0} + c[0], a01 = a00, a10 = (vec){0} + c[1], a11 = a10;                \
        vec a20 = (vec){0} + c[2], a21 = a20, a30 = (vec){0} + c[3], a31 = a30, v0, v1;        \
        for (ptrdiff_t e = 0; e < n; e++) {                                                    \
            const T* p = src[e] + j;                                                           \
            const T *w0 = w[4 * e], *w1 = w[4 * e + 1], *w2 = w[4 * e + 2], *w3 = w[4 * e + 3];\
            FC_ROW_SPAN_SWITCH(lo[e] * 4 + hi[e], FC_ROWS4_TAPS)                               \
        }                                                                                      \
        memcpy(out[0] + j, &a00, sizeof(vec)); memcpy(out[0] + j + V, &a01, sizeof(vec));      \
        if (rows > 1) {                                                                        \
            memcpy(out[1] + j, &a10, sizeof(vec)); memcpy(out[1] + j + V, &a11, sizeof(vec));  \
        }                                                                                      \
        if (rows > 2) {                                                                        \
            memcpy(out[2] + j, &a20, sizeof(vec)); memcpy(out[2] + j + V, &a21, sizeof(vec));  \
        }                                                                                      \
        if (rows > 3) {                                                                        \
            memcpy(out[3] + j, &a30, sizeof(vec)); memcpy(out[3] + j + V, &a31, sizeof(vec));  \
        }                                                                                      \
    }                                                                                          \
    return j;                                                                                  \
}

FC_DEFINE_FILTER_ROWS4(f32, float)
FC_DEFINE_FILTER_ROWS4(f64, double)

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
    for (; j < len && len >= 2 * V; j += 2 * V) {                                              \
        if (j + 2 * V > len) j = len - 2 * V;   /* the last block overlaps: same bits */       \
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
