/* GEMM micro-kernel for the "packed" convolution: C tile (MR x NR) (+)= A panel^T . B panel,
 *   c[m * ldc + j] = (c[m * ldc + j] if accumulate) + bias[m] (if bias)
 *                    + sum_{k < k_len} a[k * MR + m] * b[k * NR + j]   (m < m_valid, j < n_valid)
 * A panels hold MR output channels' filters tap-major (packed once per call); B panels hold
 * NR = NRV vectors of output positions tap-major (written there directly by im2col). The
 * MR x NRV accumulators stay in vector registers for the whole K loop: 8 x 3 AVX-512
 * registers (MR = 8 divides the usual channel counts, so no rows are wasted), or 6 x 2 AVX2
 * registers (of 16), or 6 x 2 16-byte registers without AVX (the baseline level).
 */
#ifndef FASTCONV_GEMM_MICROKERNEL_H
#define FASTCONV_GEMM_MICROKERNEL_H
#include <stddef.h>
#include <string.h>

#ifdef __AVX512F__
#define FC_GEMM_VEC_BYTES 64
#define FC_GEMM_MR 8
#define FC_GEMM_NRV 3
/* a second shape for planes of few positions: 32-wide panels waste less of a 49- or 64-wide
   plane than 48-wide ones (7x7 and 8x8 feature maps) */
#define FC_GEMM_MR_NARROW 12
#define FC_GEMM_NRV_NARROW 2
/* a third for 17-24 columns (float32): a vector and a half-width one per row. Where a
   512-bit FMA takes both halves of a 256-bit unit (Zen 4) the half vector costs half an FMA,
   so 24 columns cost 1.5 FMAs a row instead of the narrow tile's 2 (conv.tile_cost has the
   measurements); where it does not (two 512-bit units) it costs what the narrow
   tile does. Its rows are the narrow tile's (FC_GEMM_MR_MIXED), so are its A panels. */
#else
/* 6 x 2 tiles of AVX2 registers; without AVX (SSE2, NEON) the same tile on 16-byte vectors
   (32-byte ones were emulated in pairs and the tile spilled: 27x slower on one Zen 3) */
#ifdef __AVX__
#define FC_GEMM_VEC_BYTES 32
#else
#define FC_GEMM_VEC_BYTES 16
#endif
#define FC_GEMM_MR 6
#define FC_GEMM_NRV 2
#define FC_GEMM_MR_NARROW 6
#define FC_GEMM_NRV_NARROW 2
#endif
#define FC_GEMM_MR_MIXED FC_GEMM_MR_NARROW

typedef float fc_gvec_f32 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
typedef double fc_gvec_f64 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
/* half-width vectors: the mixed tile's last column block */
typedef float fc_ghvec_f32 __attribute__((vector_size(FC_GEMM_VEC_BYTES / 2)));
typedef double fc_ghvec_f64 __attribute__((vector_size(FC_GEMM_VEC_BYTES / 2)));
/* lane masks of the same width (all ones or zero per lane), to AND with a vector's bits */
typedef int fc_gmask_f32 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
typedef long long fc_gmask_f64 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
enum { FC_VEC_f32 = FC_GEMM_VEC_BYTES / sizeof(float),
       FC_VEC_f64 = FC_GEMM_VEC_BYTES / sizeof(double),
       FC_NR_f32 = FC_GEMM_NRV * FC_VEC_f32, FC_NR_f64 = FC_GEMM_NRV * FC_VEC_f64,
       FC_NR_NARROW_f32 = FC_GEMM_NRV_NARROW * FC_VEC_f32,
       FC_NR_NARROW_f64 = FC_GEMM_NRV_NARROW * FC_VEC_f64,
       FC_NR_MIXED_f32 = FC_VEC_f32 + FC_VEC_f32 / 2,
       FC_NR_MIXED_f64 = FC_VEC_f64 + FC_VEC_f64 / 2 };

/* loops over the tile's rows and vectors unrolled, so the accumulators are registers */
#define FC_UNROLL _Pragma("GCC unroll 16")

/* GCC folds a vector that several accumulators use into each FMA as a memory operand (a load
 * per use again, mostly splitting cache lines): an empty asm keeps it in a register */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FC_KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define FC_KEEP_IN_REGISTER(v) ((void)0)
#endif

/* The four-output-rows kernels (filter_rows.h, direct_rows.h): an input row read by outputs
 * LO..HI of the four (0 <= LO <= HI < 4, CODE = 4 LO + HI) runs BODY(LO, HI), the span a
 * constant so that the accumulators it leaves out stay untouched registers. */
#define FC_ROW_SPAN_SWITCH(CODE, BODY)                                                         \
    switch (CODE) {                                                                            \
    case 0: BODY(0, 0) break;                                                                  \
    case 1: BODY(0, 1) break;                                                                  \
    case 2: BODY(0, 2) break;                                                                  \
    case 3: BODY(0, 3) break;                                                                  \
    case 5: BODY(1, 1) break;                                                                  \
    case 6: BODY(1, 2) break;                                                                  \
    case 7: BODY(1, 3) break;                                                                  \
    case 10: BODY(2, 2) break;                                                                 \
    case 11: BODY(2, 3) break;                                                                 \
    default: BODY(3, 3) break;                                                                 \
    }

/* The K loop of the micro-kernel, B's row k at ROW (an expression of k) and A's element
 * (m, k) at A_MK; with HALF (a constant) a half-width vector of columns after the NRV. */
#define FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, ROW, A_MK)                                    \
    for (k = 0; k < k_len; k++) {                                                              \
        const T* b_row = ROW;                                                                  \
        fc_gvec_##SUFFIX bv[NRV];                                                              \
        fc_ghvec_##SUFFIX bh = {0};                                                            \
        FC_UNROLL for (v = 0; v < NRV; v++)                                                    \
            memcpy(&bv[v], b_row + v * FC_VEC_##SUFFIX, sizeof(bv[v]));                        \
        if (HALF) memcpy(&bh, b_row + NRV * FC_VEC_##SUFFIX, sizeof(bh));                      \
        FC_UNROLL for (m = 0; m < MR; m++) {                                                   \
            T am = A_MK;                                                                       \
            FC_UNROLL for (v = 0; v < NRV; v++) acc[m][v] += am * bv[v];                       \
            if (HALF) acc_half[m] += am * bh;                                                  \
        }                                                                                      \
    }

/* one vector of a row's sums, of type VT, to P: (+ bias[m]) (+ what P holds) */
#define FC_GEMM_STORE_VECTOR(VT, SUM, P)                                                       \
    {                                                                                          \
        VT sum = SUM;                                                                          \
        if (bias != NULL) sum += bias[m];                                                      \
        if (accumulate) {                                                                      \
            VT old;                                                                            \
            memcpy(&old, P, sizeof(old));                                                      \
            sum += old;                                                                        \
        }                                                                                      \
        memcpy(P, &sum, sizeof(sum));                                                          \
    }
/* The tile's end: rows m < m_valid, columns j < n_valid of acc (+ bias[m]) written to, or with
 * `accumulate` added to, c. acc is indexed by constants only (the loops over MR and NRV unroll),
 * so it stays in registers: a runtime index anywhere put all of it on the stack, stored there
 * after the K loop and reloaded, which cost as much as a short K loop (1x1 layers of 16-32
 * channels). A partial tile goes through a copy. */
#define FC_GEMM_STORE(SUFFIX, T, MR, NRV, HALF)                                                \
    if (m_valid == MR && n_valid == NR) {                                                      \
        FC_UNROLL for (m = 0; m < MR; m++) {                                                   \
            T* c_row = c + m * ldc;                                                            \
            FC_UNROLL for (v = 0; v < NRV; v++)                                                \
                FC_GEMM_STORE_VECTOR(fc_gvec_##SUFFIX, acc[m][v], c_row + v * FC_VEC_##SUFFIX) \
            if (HALF)                                                                          \
                FC_GEMM_STORE_VECTOR(fc_ghvec_##SUFFIX, acc_half[m],                           \
                                     c_row + NRV * FC_VEC_##SUFFIX)                            \
        }                                                                                      \
    } else {                                                                                   \
        T tile[MR][NR];                                                                        \
        FC_UNROLL for (m = 0; m < MR; m++) {                                                   \
            FC_UNROLL for (v = 0; v < NRV; v++)                                                \
                memcpy(&tile[m][v * FC_VEC_##SUFFIX], &acc[m][v], sizeof(acc[m][v]));          \
            if (HALF)                                                                          \
                memcpy(&tile[m][NRV * FC_VEC_##SUFFIX], &acc_half[m], sizeof(acc_half[m]));    \
        }                                                                                      \
        for (m = 0; m < m_valid; m++) {                                                        \
            T* c_row = c + m * ldc;                                                            \
            for (j = 0; j < n_valid; j++) {                                                    \
                T sum = bias != NULL ? tile[m][j] + bias[m] : tile[m][j];                      \
                c_row[j] = accumulate ? sum + c_row[j] : sum;                                  \
            }                                                                                  \
        }                                                                                      \
    }

/* B's row k is b + k * b_stride (a packed panel), or with `offsets` (not NULL) b + offsets[k]:
 * NR contiguous elements anywhere (the phase grid's rows, read in place). A's element (m, k)
 * is a[k * MR + m] (a packed panel), or with lda > 0 a[m * lda + k]: A's rows where they lie
 * (a layer's filters, one per output channel), rows past m_valid read as the last valid one
 * (computed, never stored), or with lda < 0 a[k * -lda + m]: A's columns where they lie (a
 * 1x1 layer's weight read as its transpose, for its input gradient; all MR rows are read,
 * and `offsets` must be NULL). Read in place, a layer's weights need no packed copy to keep
 * nor to check against the weights on every call.
 * fc_gemm_rows_tile_*: the same product with A read where it lies, A's element (m, k) at
 * a_rows[m][a_offsets[k]] (rows m < m_valid are read): the patches of a tile of channels-last
 * pixels (a_rows[m] the pixel's first tap, a_offsets[k] tap k's place after it), which
 * packing would copy one scalar at a time. */
#define FC_DEFINE_GEMM_TILE(NAME, SUFFIX, T, MR, NRV, HALF)                                    \
static inline void fc_gemm_tile_##NAME(ptrdiff_t k_len, const T* a, ptrdiff_t lda, const T* b, \
        ptrdiff_t b_stride, const ptrdiff_t* offsets, T* c, ptrdiff_t ldc, ptrdiff_t m_valid,  \
        ptrdiff_t n_valid, const T* bias, int accumulate) {                                    \
    enum { NR = NRV * FC_VEC_##SUFFIX + HALF * (FC_VEC_##SUFFIX / 2) };                        \
    fc_gvec_##SUFFIX acc[MR][NRV];                                                             \
    fc_ghvec_##SUFFIX acc_half[MR];                                                            \
    const T* a_row[MR];                                                                        \
    ptrdiff_t k, m, j, v;                                                                      \
    FC_UNROLL for (m = 0; m < MR; m++) {                                                       \
        a_row[m] = a + (m < m_valid ? m : m_valid - 1) * lda;                                  \
        FC_UNROLL for (v = 0; v < NRV; v++) acc[m][v] = (fc_gvec_##SUFFIX){0};                 \
        acc_half[m] = (fc_ghvec_##SUFFIX){0};                                                  \
    }                                                                                          \
    if (lda > 0 && offsets != NULL) {                                                          \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, b + offsets[k], a_row[m][k])                  \
    } else if (lda > 0) {                                                                      \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, b + k * b_stride, a_row[m][k])                \
    } else if (lda < 0) {                                                                      \
        const ptrdiff_t a_step = -lda;                                                         \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, b + k * b_stride, a[k * a_step + m])          \
    } else if (offsets != NULL) {                                                              \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, b + offsets[k], a[k * MR + m])                \
    } else {                                                                                   \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, b + k * b_stride, a[k * MR + m])              \
    }                                                                                          \
    FC_GEMM_STORE(SUFFIX, T, MR, NRV, HALF)                                                    \
}                                                                                              \
static inline void fc_gemm_rows_tile_##NAME(ptrdiff_t k_len, const T* const* a_rows,           \
        const ptrdiff_t* a_offsets, const T* b, ptrdiff_t b_stride, T* c, ptrdiff_t ldc,       \
        ptrdiff_t m_valid, ptrdiff_t n_valid, const T* bias, int accumulate) {                 \
    enum { NR = NRV * FC_VEC_##SUFFIX + HALF * (FC_VEC_##SUFFIX / 2) };                        \
    fc_gvec_##SUFFIX acc[MR][NRV];                                                             \
    fc_ghvec_##SUFFIX acc_half[MR];                                                            \
    const T* a_row[MR];                                                                        \
    ptrdiff_t k, m, j, v;                                                                      \
    FC_UNROLL for (m = 0; m < MR; m++) {                                                       \
        a_row[m] = a_rows[m < m_valid ? m : m_valid - 1];                                      \
        FC_UNROLL for (v = 0; v < NRV; v++) acc[m][v] = (fc_gvec_##SUFFIX){0};                 \
        acc_half[m] = (fc_ghvec_##SUFFIX){0};                                                  \
    }                                                                                          \
    FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, HALF, b + k * b_stride, a_row[m][a_offsets[k]])         \
    FC_GEMM_STORE(SUFFIX, T, MR, NRV, HALF)                                                    \
}

FC_DEFINE_GEMM_TILE(f32, f32, float, FC_GEMM_MR, FC_GEMM_NRV, 0)
FC_DEFINE_GEMM_TILE(f64, f64, double, FC_GEMM_MR, FC_GEMM_NRV, 0)
FC_DEFINE_GEMM_TILE(narrow_f32, f32, float, FC_GEMM_MR_NARROW, FC_GEMM_NRV_NARROW, 0)
FC_DEFINE_GEMM_TILE(narrow_f64, f64, double, FC_GEMM_MR_NARROW, FC_GEMM_NRV_NARROW, 0)
FC_DEFINE_GEMM_TILE(mixed_f32, f32, float, FC_GEMM_MR_MIXED, 1, 1)
FC_DEFINE_GEMM_TILE(mixed_f64, f64, double, FC_GEMM_MR_MIXED, 1, 1)
/* Tails: the last panel of a row of positions, when it needs fewer vectors than the tile
 * has, is computed with only those (a 7x7 plane's extended grid of 55 positions is one
 * 48-wide panel and 7 more, not two full panels). Same sums in the same order: the same
 * results as the full tile. */
FC_DEFINE_GEMM_TILE(tail1_f32, f32, float, FC_GEMM_MR, 1, 0)
FC_DEFINE_GEMM_TILE(tail1_f64, f64, double, FC_GEMM_MR, 1, 0)
FC_DEFINE_GEMM_TILE(tail2_f32, f32, float, FC_GEMM_MR, 2, 0)
FC_DEFINE_GEMM_TILE(tail2_f64, f64, double, FC_GEMM_MR, 2, 0)
FC_DEFINE_GEMM_TILE(narrow_tail1_f32, f32, float, FC_GEMM_MR_NARROW, 1, 0)
FC_DEFINE_GEMM_TILE(narrow_tail1_f64, f64, double, FC_GEMM_MR_NARROW, 1, 0)

/* The register tile SHAPE (0 wide, 1 narrow, 2 mixed), or the tail variant for a last panel
 * of fewer vectors, of micro-kernel KIND (gemm_tile or gemm_rows_tile) called with ARGS. */
#define FC_GEMM_DISPATCH(KIND, SUFFIX, ARGS)                                                   \
    ptrdiff_t vectors = (n_valid + FC_VEC_##SUFFIX - 1) / FC_VEC_##SUFFIX;                     \
    int narrow = shape == 1;                                                                   \
    if (shape == 2 && vectors == 1 && FC_GEMM_NRV_NARROW > 1)                                  \
        fc_##KIND##_narrow_tail1_##SUFFIX ARGS;                                                \
    else if (shape == 2)                                                                       \
        fc_##KIND##_mixed_##SUFFIX ARGS;                                                       \
    else if (narrow && vectors == 1 && FC_GEMM_NRV_NARROW > 1)                                 \
        fc_##KIND##_narrow_tail1_##SUFFIX ARGS;                                                \
    else if (narrow)                                                                           \
        fc_##KIND##_narrow_##SUFFIX ARGS;                                                      \
    else if (vectors == 1 && FC_GEMM_NRV > 1)                                                  \
        fc_##KIND##_tail1_##SUFFIX ARGS;                                                       \
    else if (vectors == 2 && FC_GEMM_NRV > 2)                                                  \
        fc_##KIND##_tail2_##SUFFIX ARGS;                                                       \
    else                                                                                       \
        fc_##KIND##_##SUFFIX ARGS;

/* A last panel of one column (a 7x7 plane's 49th position after a 48-wide panel) with the
 * wide tile's 8 rows as the lanes of one 256-bit vector: per k one multiply-add of A's column
 * k by B's element k, where the tail tile spends 8 (a broadcast of each A element times a
 * vector of B of which one lane counts: a fifth of a 512 -> 512 3x3 layer's time at batch
 * 1). Every output is the same chain of fused multiply-adds over k as in the tail tile, so
 * the same bits. A's rows read where they lie (lda > 0) are transposed 8 k at a time in
 * registers. Returns 0 (not computed) for other shapes and levels. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline int fc_gemm_column_f32(int shape, ptrdiff_t k_len, const float* a, ptrdiff_t lda,
        const float* b, ptrdiff_t b_stride, const ptrdiff_t* offsets, float* c, ptrdiff_t ldc,
        ptrdiff_t m_valid, const float* bias, int accumulate) {
    if (shape != 0 || FC_GEMM_MR != 8) return 0;
    __m256 acc = _mm256_setzero_ps();
    ptrdiff_t k = 0;
#define FC_COLUMN_B(K) _mm256_set1_ps(offsets != NULL ? b[offsets[K]] : b[(K) * b_stride])
    if (lda > 0) {
        const float* r[8];
        for (int m = 0; m < 8; m++) r[m] = a + (m < m_valid ? m : m_valid - 1) * lda;
        for (; k + 8 <= k_len; k += 8) {
            __m256 t0 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[0] + k), _mm256_loadu_ps(r[1] + k));
            __m256 t1 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[0] + k), _mm256_loadu_ps(r[1] + k));
            __m256 t2 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[2] + k), _mm256_loadu_ps(r[3] + k));
            __m256 t3 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[2] + k), _mm256_loadu_ps(r[3] + k));
            __m256 t4 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[4] + k), _mm256_loadu_ps(r[5] + k));
            __m256 t5 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[4] + k), _mm256_loadu_ps(r[5] + k));
            __m256 t6 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[6] + k), _mm256_loadu_ps(r[7] + k));
            __m256 t7 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[6] + k), _mm256_loadu_ps(r[7] + k));
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            /* column j: A[0..7][k + j] */
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s0, s4, 0x20), FC_COLUMN_B(k), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s1, s5, 0x20), FC_COLUMN_B(k + 1), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s2, s6, 0x20), FC_COLUMN_B(k + 2), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s3, s7, 0x20), FC_COLUMN_B(k + 3), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s0, s4, 0x31), FC_COLUMN_B(k + 4), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s1, s5, 0x31), FC_COLUMN_B(k + 5), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s2, s6, 0x31), FC_COLUMN_B(k + 6), acc);
            acc = _mm256_fmadd_ps(_mm256_permute2f128_ps(s3, s7, 0x31), FC_COLUMN_B(k + 7), acc);
        }
        for (; k < k_len; k++)
            acc = _mm256_fmadd_ps(_mm256_setr_ps(r[0][k], r[1][k], r[2][k], r[3][k], r[4][k],
                                                 r[5][k], r[6][k], r[7][k]),
                                  FC_COLUMN_B(k), acc);
    } else {
        /* packed (a[k * 8 + m]) or A's columns where they lie (a[k * -lda + m]) */
        const ptrdiff_t step = lda < 0 ? -lda : 8;
        for (; k < k_len; k++)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k * step), FC_COLUMN_B(k), acc);
    }
#undef FC_COLUMN_B
    float sums[8];
    _mm256_storeu_ps(sums, acc);
    for (ptrdiff_t m = 0; m < m_valid; m++) {   /* as FC_GEMM_STORE's partial tile */
        float sum = bias != NULL ? sums[m] + bias[m] : sums[m];
        c[m * ldc] = accumulate ? sum + c[m * ldc] : sum;
    }
    return 1;
}
#else
static inline int fc_gemm_column_f32(int shape, ptrdiff_t k_len, const float* a, ptrdiff_t lda,
        const float* b, ptrdiff_t b_stride, const ptrdiff_t* offsets, float* c, ptrdiff_t ldc,
        ptrdiff_t m_valid, const float* bias, int accumulate) {
    return 0;
}
#endif
static inline int fc_gemm_column_f64(int shape, ptrdiff_t k_len, const double* a,
        ptrdiff_t lda, const double* b, ptrdiff_t b_stride, const ptrdiff_t* offsets,
        double* c, ptrdiff_t ldc, ptrdiff_t m_valid, const double* bias, int accumulate) {
    return 0;   /* (the tail tile) */
}

/* fc_gemm_<t>(shape, ...): the arguments of fc_gemm_tile_*; fc_gemm_rows_<t>(shape, ...):
 * those of fc_gemm_rows_tile_*. */
#define FC_DEFINE_GEMM(SUFFIX, T)                                                              \
static inline void fc_gemm_##SUFFIX(int shape, ptrdiff_t k_len, const T* a, ptrdiff_t lda,     \
        const T* b, ptrdiff_t b_stride, const ptrdiff_t* offsets, T* c, ptrdiff_t ldc,         \
        ptrdiff_t m_valid, ptrdiff_t n_valid, const T* bias, int accumulate) {                 \
    if (n_valid == 1 && fc_gemm_column_##SUFFIX(shape, k_len, a, lda, b, b_stride, offsets,    \
                                                c, ldc, m_valid, bias, accumulate))            \
        return;                                                                                \
    FC_GEMM_DISPATCH(gemm_tile, SUFFIX, (k_len, a, lda, b, b_stride, offsets, c, ldc, m_valid, \
                                         n_valid, bias, accumulate))                           \
}                                                                                              \
static inline void fc_gemm_rows_##SUFFIX(int shape, ptrdiff_t k_len, const T* const* a_rows,   \
        const ptrdiff_t* a_offsets, const T* b, ptrdiff_t b_stride, T* c, ptrdiff_t ldc,       \
        ptrdiff_t m_valid, ptrdiff_t n_valid, const T* bias, int accumulate) {                 \
    FC_GEMM_DISPATCH(gemm_rows_tile, SUFFIX, (k_len, a_rows, a_offsets, b, b_stride, c, ldc,   \
                                              m_valid, n_valid, bias, accumulate))             \
}

FC_DEFINE_GEMM(f32, float)
FC_DEFINE_GEMM(f64, double)

#endif /* FASTCONV_GEMM_MICROKERNEL_H */
