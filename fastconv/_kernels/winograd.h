/* Winograd F(4x4, 3x3) transforms (Lavin & Gray 2016), interpolation points 0, 1, -1, 1/2, -2
 * and infinity.
 *
 * A 4x4 output tile of a 3x3 stride-1 correlation is Y = A^T [(G g G^T) . (B^T d B)] A with
 * d the 6x6 input tile and g the 3x3 filter: 36 element-wise products replace 144 multiply-
 * adds, and summed over input channels those products are 36 independent GEMMs. The
 * transforms below are the 1-d matrices applied along columns, then rows, each on vectors
 * whose lanes are independent problems (tiles, or output channels for the weights):
 *
 *   B^T = [1 -3/2   -2  3/2 1 0]   G = [    1     0     0]   A^T = [1 1  1   1  1 0]
 *         [0   -1  1/2  5/2 1 0]       [  1/3   1/3   1/3]         [0 1 -1 1/2 -2 0]
 *         [0    1 -5/2  1/2 1 0]       [ -1/3   1/3  -1/3]         [0 1  1 1/4  4 0]
 *         [0   -2   -1    2 1 0]       [-16/15 -8/15 -4/15]        [0 1 -1 1/8 -8 1]
 *         [0  1/2   -1 -1/2 1 0]       [ 1/15 -2/15  4/15]
 *         [0    1 -3/2   -2 3/2 1]     [    0     0     1]
 *
 * These points (rather than the usual 0, +-1, +-2) give about half the float32 error
 * (Barabasz et al., "Error analysis and improving the accuracy of Winograd convolution for
 * deep neural networks", 2020; measured: notes/winograd.md).
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H
#include <stddef.h>
#include <string.h>
#include "gemm_microkernel.h"
#include "transpose_tiles.h"

#define FC_WINO_TILE 4      /* outputs per tile side */
#define FC_WINO_INPUT 6     /* input tile side */
#define FC_WINO_ELEMENTS 36 /* transformed elements per tile */
/* The weight transform's lanes: a panel's FC_GEMM_MR filters rounded up to a multiple of 8,
 * whole vectors (6 lanes on AVX2 compiled to scalar code: 15 ms for 512 x 512 filters) */
#define FC_WINO_WEIGHT_LANES ((FC_GEMM_MR + 7) / 8 * 8)

/* eight lanes of the weight transform's type, and the shuffle masks that go with them */
typedef float fc_w8_f32 __attribute__((vector_size(8 * sizeof(float))));
typedef double fc_w8_f64 __attribute__((vector_size(8 * sizeof(double))));
typedef int fc_w8_mask_f32 __attribute__((vector_size(8 * sizeof(int))));
typedef long long fc_w8_mask_f64 __attribute__((vector_size(8 * sizeof(long long))));
#if FC_WINO_WEIGHT_LANES != 8
#error "fc_wino_taps transposes eight filters: FC_WINO_WEIGHT_LANES must be 8"
#endif

#define FC_DEFINE_WINOGRAD(SUFFIX, T)                                                           \
typedef fc_gvec_##SUFFIX fc_wvec_##SUFFIX;                                                      \
enum { FC_WINO_LANES_##SUFFIX = FC_VEC_##SUFFIX };                                              \
                                                                                                \
/* t = B^T d for d[0..5] at stride `s` (in and out) */                                          \
static inline void fc_wino_bt_##SUFFIX(fc_wvec_##SUFFIX* d, ptrdiff_t s) {                      \
    fc_wvec_##SUFFIX d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s],         \
                     d5 = d[5 * s];                                                             \
    const T half = (T)0.5, three_halves = (T)1.5, five_halves = (T)2.5;                         \
    d[0] = d0 + d4 + three_halves * (d3 - d1) - 2 * d2;                                         \
    d[s] = d4 - d1 + half * d2 + five_halves * d3;                                              \
    d[2 * s] = d4 + d1 - five_halves * d2 + half * d3;                                          \
    d[3 * s] = d4 - d2 + 2 * (d3 - d1);                                                         \
    d[4 * s] = d4 - d2 + half * (d1 - d3);                                                      \
    d[5 * s] = d5 + d1 + three_halves * (d4 - d2) - 2 * d3;                                     \
}                                                                                               \
                                                                                                \
/* o[0..3] = A^T m for m[0..5] at stride `s` */                                                 \
static inline void fc_wino_at_##SUFFIX(const fc_wvec_##SUFFIX* m, ptrdiff_t s,                  \
                                       fc_wvec_##SUFFIX* o, ptrdiff_t os) {                     \
    fc_wvec_##SUFFIX a = m[s] + m[2 * s], b = m[s] - m[2 * s];                                  \
    o[0] = m[0] + a + m[3 * s] + m[4 * s];                                                      \
    o[os] = b + (T)0.5 * m[3 * s] - 2 * m[4 * s];                                               \
    o[2 * os] = a + (T)0.25 * m[3 * s] + 4 * m[4 * s];                                          \
    o[3 * os] = b + (T)0.125 * m[3 * s] - 8 * m[4 * s] + m[5 * s];                              \
}                                                                                               \
                                                                                                \
/* r[0..5] = G g for g[0..2], each lane an independent filter */                               \
static inline void fc_wino_g_##SUFFIX(fc_w8_##SUFFIX g0, fc_w8_##SUFFIX g1, fc_w8_##SUFFIX g2,  \
                                      fc_w8_##SUFFIX* r) {                                      \
    r[0] = g0;                                                                                  \
    r[1] = (g0 + g1 + g2) * (T)(1.0 / 3.0);                                                     \
    r[2] = (g1 - g0 - g2) * (T)(1.0 / 3.0);                                                     \
    r[3] = ((T)16 * g0 + (T)8 * g1 + (T)4 * g2) * (T)(-1.0 / 15.0);                             \
    r[4] = (g0 - (T)2 * g1 + (T)4 * g2) * (T)(1.0 / 15.0);                                      \
    r[5] = g2;                                                                                  \
}                                                                                               \
                                                                                                \
/* lane m of g[k] = tap k of filter m (w + m * filter_stride, 9 taps, read back to front if \
 * `reversed`), zero for m >= m_valid: eight filters' first or last eight taps loaded as rows \
 * and transposed in registers, the ninth gathered (one strided scalar load per tap and      \
 * filter took half of the transform's time) */                                               \
static inline void fc_wino_taps_##SUFFIX(const T* w, ptrdiff_t filter_stride,                   \
                                         ptrdiff_t m_valid, int reversed, fc_w8_##SUFFIX* g) {  \
    typedef fc_w8_##SUFFIX v8;                                                                  \
    typedef fc_w8_mask_##SUFFIX m8;                                                             \
    v8 r[8];                                                                                    \
    T ninth[8];                                                                                 \
    if (sizeof(v8) > FC_GEMM_VEC_BYTES) {                                                       \
        /* eight lanes span several registers (SSE; doubles on AVX2): shuffles across them  \
         * cost more than the strided loads */                                               \
        T taps[9][8];                                                                           \
        for (ptrdiff_t m = 0; m < 8; m++)                                                       \
            for (ptrdiff_t k = 0; k < 9; k++)                                                   \
                taps[k][m] = m < m_valid ? w[m * filter_stride + (reversed ? 8 - k : k)] : 0;   \
        for (ptrdiff_t k = 0; k < 9; k++) memcpy(&g[k], taps[k], sizeof(v8));                   \
        return;                                                                                 \
    }                                                                                           \
    if (m_valid >= 8) {                                                                         \
        /* a whole panel: the rows loaded straight into registers, the ninth taps gathered    \
         * into one (eight scalar stores read back as a vector stalled store forwarding: a   \
         * third of the transform's time) */                                                  \
        const T* n = w + (reversed ? 0 : 8);                                                    \
        FC_UNROLL for (ptrdiff_t m = 0; m < 8; m++)                                             \
            memcpy(&r[m], w + m * filter_stride + (reversed ? 1 : 0), sizeof(v8));              \
        g[8] = (v8){n[0], n[filter_stride], n[2 * filter_stride], n[3 * filter_stride],         \
                    n[4 * filter_stride], n[5 * filter_stride], n[6 * filter_stride],           \
                    n[7 * filter_stride]};                                                      \
    } else {                                                                                    \
        for (ptrdiff_t m = 0; m < 8; m++) {                                                     \
            if (m < m_valid) {                                                                  \
                memcpy(&r[m], w + m * filter_stride + (reversed ? 1 : 0), sizeof(v8));          \
                ninth[m] = w[m * filter_stride + (reversed ? 0 : 8)];                           \
            } else {                                                                            \
                r[m] = (v8){0};                                                                 \
                ninth[m] = 0;                                                                   \
            }                                                                                   \
        }                                                                                       \
        memcpy(&g[8], ninth, sizeof(v8));                                                       \
    }                                                                                           \
    /* pairs of rows interleaved, then pairs of pairs, then halves: column j of the rows */     \
    v8 t0 = __builtin_shuffle(r[0], r[1], (m8){0, 8, 1, 9, 4, 12, 5, 13});                      \
    v8 t1 = __builtin_shuffle(r[0], r[1], (m8){2, 10, 3, 11, 6, 14, 7, 15});                    \
    v8 t2 = __builtin_shuffle(r[2], r[3], (m8){0, 8, 1, 9, 4, 12, 5, 13});                      \
    v8 t3 = __builtin_shuffle(r[2], r[3], (m8){2, 10, 3, 11, 6, 14, 7, 15});                    \
    v8 t4 = __builtin_shuffle(r[4], r[5], (m8){0, 8, 1, 9, 4, 12, 5, 13});                      \
    v8 t5 = __builtin_shuffle(r[4], r[5], (m8){2, 10, 3, 11, 6, 14, 7, 15});                    \
    v8 t6 = __builtin_shuffle(r[6], r[7], (m8){0, 8, 1, 9, 4, 12, 5, 13});                      \
    v8 t7 = __builtin_shuffle(r[6], r[7], (m8){2, 10, 3, 11, 6, 14, 7, 15});                    \
    v8 s0 = __builtin_shuffle(t0, t2, (m8){0, 1, 8, 9, 4, 5, 12, 13});                          \
    v8 s1 = __builtin_shuffle(t0, t2, (m8){2, 3, 10, 11, 6, 7, 14, 15});                        \
    v8 s2 = __builtin_shuffle(t1, t3, (m8){0, 1, 8, 9, 4, 5, 12, 13});                          \
    v8 s3 = __builtin_shuffle(t1, t3, (m8){2, 3, 10, 11, 6, 7, 14, 15});                        \
    v8 s4 = __builtin_shuffle(t4, t6, (m8){0, 1, 8, 9, 4, 5, 12, 13});                          \
    v8 s5 = __builtin_shuffle(t4, t6, (m8){2, 3, 10, 11, 6, 7, 14, 15});                        \
    v8 s6 = __builtin_shuffle(t5, t7, (m8){0, 1, 8, 9, 4, 5, 12, 13});                          \
    v8 s7 = __builtin_shuffle(t5, t7, (m8){2, 3, 10, 11, 6, 7, 14, 15});                        \
    v8 col[8];                                                                                  \
    col[0] = __builtin_shuffle(s0, s4, (m8){0, 1, 2, 3, 8, 9, 10, 11});                         \
    col[4] = __builtin_shuffle(s0, s4, (m8){4, 5, 6, 7, 12, 13, 14, 15});                       \
    col[1] = __builtin_shuffle(s1, s5, (m8){0, 1, 2, 3, 8, 9, 10, 11});                         \
    col[5] = __builtin_shuffle(s1, s5, (m8){4, 5, 6, 7, 12, 13, 14, 15});                       \
    col[2] = __builtin_shuffle(s2, s6, (m8){0, 1, 2, 3, 8, 9, 10, 11});                         \
    col[6] = __builtin_shuffle(s2, s6, (m8){4, 5, 6, 7, 12, 13, 14, 15});                       \
    col[3] = __builtin_shuffle(s3, s7, (m8){0, 1, 2, 3, 8, 9, 10, 11});                         \
    col[7] = __builtin_shuffle(s3, s7, (m8){4, 5, 6, 7, 12, 13, 14, 15});                       \
    /* not reversed: rows hold taps 0..7, tap 8 gathered; reversed: taps 1..8, so tap 8 - k  \
     * is column 7 - k, and tap 0 (the last one read back to front) gathered */               \
    /* constant indices (the loop unrolled): the columns stay in registers (two loops, one   \
     * per branch, became a 256-byte copy through the stack whose 64-byte loads of two      \
     * 32-byte stores stalled store forwarding: a quarter of the transform's time) */         \
    FC_UNROLL for (ptrdiff_t k = 0; k < 8; k++) g[k] = reversed ? col[7 - k] : col[k];          \
}                                                                                               \
                                                                                                \
/* The weight transform of MR = FC_GEMM_MR filters (lanes: the output channels m of one panel \
 * of the micro-kernel's wide tile, its A layout) for input channel c:                        \
 *   u[e * e_stride + m] = (G g_m G^T)[e],  g_m = w + m * filter_stride (m < m_valid, else 0), \
 * each filter's 9 taps read back to front if `reversed` (a filter turned by 180 degrees),    \
 * on vectors of eight lanes (kept in registers: arrays of lanes went through the stack,      \
 * where a wide load of two narrow stores stalled) */                                         \
static inline void fc_wino_weight_##SUFFIX(const T* w, ptrdiff_t filter_stride,                 \
                                           ptrdiff_t m_valid, int reversed, T* u,              \
                                           ptrdiff_t e_stride) {                                \
    enum { MR = FC_GEMM_MR };                                                                   \
    fc_w8_##SUFFIX g[9], h[3][6], r[6];                                                         \
    ptrdiff_t i, j;                                                                             \
    fc_wino_taps_##SUFFIX(w, filter_stride, m_valid, reversed, g);                              \
    /* columns: h[j][.] = G g[., j]; the loops unrolled so that g, h and r are registers      \
     * (as arrays on the stack, a 64-byte copy of two 32-byte halves stored apart stalled      \
     * store forwarding: a quarter of the transform's time) */                                \
    FC_UNROLL for (j = 0; j < 3; j++) fc_wino_g_##SUFFIX(g[j], g[3 + j], g[6 + j], h[j]);       \
    /* rows: u[i][.] = G h[.][i] */                                                             \
    FC_UNROLL for (i = 0; i < 6; i++) {                                                         \
        fc_wino_g_##SUFFIX(h[0][i], h[1][i], h[2][i], r);                                       \
        FC_UNROLL for (j = 0; j < 6; j++)                                                       \
            memcpy(u + (i * 6 + j) * e_stride, &r[j], MR * sizeof(T));                          \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* v[e * e_stride + lane] = (B^T d_lane B)[e] for gathered tiles: element e of LANES tiles at \
 * d + e * d_stride */                                                                         \
static inline void fc_wino_input_tile_##SUFFIX(const T* d, ptrdiff_t d_stride, T* v,           \
                                              ptrdiff_t e_stride) {                             \
    fc_wvec_##SUFFIX dv[36];                                                                    \
    ptrdiff_t i, j;                                                                             \
    for (i = 0; i < 36; i++) memcpy(&dv[i], d + i * d_stride, sizeof(dv[i]));                   \
    for (j = 0; j < 6; j++) fc_wino_bt_##SUFFIX(dv + j, 6);      /* columns */                  \
    for (i = 0; i < 6; i++) fc_wino_bt_##SUFFIX(dv + 6 * i, 1);  /* rows */                     \
    for (i = 0; i < 36; i++) memcpy(v + i * e_stride, &dv[i], sizeof(dv[i]));                   \
}                                                                                               \
                                                                                                \
/* The input transform of one channel for LANES tiles:                                        \
 *   v[e * e_stride + lane] = (B^T d_lane B)[e],                                              \
 * d_lane the 6x6 block of `plane` (H x W, pixel (h, w) at h * rs + w * ps: rs = W, ps = 1   \
 * channels-first, W C and C channels-last) at (h0[lane], w0[lane]), zero outside the plane;  \
 * lanes >= n_lanes are zero. plane_offset[lane] selects the image. */                         \
static inline void fc_wino_input_##SUFFIX(const T* x, const ptrdiff_t* plane_offset,            \
        const ptrdiff_t* h0, const ptrdiff_t* w0, ptrdiff_t n_lanes, ptrdiff_t H, ptrdiff_t W,  \
        ptrdiff_t rs, ptrdiff_t ps, T* v, ptrdiff_t e_stride) {                                 \
    /* each tile gathered whole into its own row of `tiles`, then transposed into the tiles'   \
     * vectors through vector registers: gathered straight into the vectors lane by lane, its  \
     * scalar stores stalled the vector loads that followed (30% of a 64-channel 56x56 layer) */\
    enum { L = FC_WINO_LANES_##SUFFIX, E = 40 };   /* 36 elements, padded to whole 8-wide tiles */\
    T tiles[L][E];                                                                              \
    T d[E][L];                                                                                  \
    ptrdiff_t lane, i, j;                                                                       \
    for (lane = 0; lane < L; lane++) {                                                          \
        T* tile = tiles[lane];                                                                  \
        memset(tile + 36, 0, (E - 36) * sizeof(T));                                             \
        if (lane >= n_lanes) {                                                                  \
            memset(tile, 0, 36 * sizeof(T));                                                   \
            continue;                                                                           \
        }                                                                                       \
        const T* src = x + plane_offset[lane];                                                  \
        ptrdiff_t top = h0[lane], left = w0[lane];                                              \
        if (top >= 0 && top + 6 <= H && left >= 0 && left + 6 <= W) {                           \
            const T* row = src + top * rs + left * ps;                                          \
            if (ps == 1)                                                                        \
                for (i = 0; i < 6; i++, row += rs) memcpy(tile + i * 6, row, 6 * sizeof(T));    \
            else                                                                                \
                for (i = 0; i < 6; i++, row += rs)                                              \
                    for (j = 0; j < 6; j++) tile[i * 6 + j] = row[j * ps];                      \
        } else {                                                                                \
            for (i = 0; i < 6; i++) {                                                           \
                ptrdiff_t h = top + i;                                                          \
                for (j = 0; j < 6; j++) {                                                       \
                    ptrdiff_t c = left + j;                                                     \
                    tile[i * 6 + j] = (h >= 0 && h < H && c >= 0 && c < W)                      \
                        ? src[h * rs + c * ps] : (T)0;                                          \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    fc_transpose_##SUFFIX(&tiles[0][0], E, &d[0][0], L, L, E);                                  \
    fc_wino_input_tile_##SUFFIX(&d[0][0], L, v, e_stride);                                      \
}                                                                                               \
                                                                                                \
/* The input transform of `cb` <= LANES consecutive channels of a channels-last plane         \
 * (channel stride 1, x at the first channel; channel c's transforms at v + c * c_stride) for  \
 * LANES tiles, as fc_wino_input channel by channel, but each pixel's cb channels loaded as    \
 * one run, and each tile element's LANES x cb block transposed through vector registers      \
 * (transpose_tiles.h) into the channels' vectors over the tiles. Channel by channel, an      \
 * item's 36 x LANES loads came from as many lines C elements apart (a power-of-2 C maps them  \
 * to a few sets of the L1 cache), and scalar stores assembling the vectors stalled their     \
 * loads. */                                                                                   \
static inline void fc_wino_input_channels_##SUFFIX(const T* x, ptrdiff_t cb,                   \
        const ptrdiff_t* plane_offset, const ptrdiff_t* h0, const ptrdiff_t* w0,                \
        ptrdiff_t n_lanes, ptrdiff_t H, ptrdiff_t W, ptrdiff_t rs, ptrdiff_t ps, T* v,          \
        ptrdiff_t c_stride, ptrdiff_t e_stride) {                                               \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    T block[36][L][L];     /* [element of the tile][lane][channel], then [..][channel][lane] */ \
    T columns[L][L];                                                                            \
    ptrdiff_t c, lane, i, j;                                                                    \
    for (lane = 0; lane < L; lane++) {                                                          \
        const T* src = x + plane_offset[lane < n_lanes ? lane : 0];                             \
        ptrdiff_t top = h0[lane < n_lanes ? lane : 0], left = w0[lane < n_lanes ? lane : 0];    \
        for (i = 0; i < 6; i++) {                                                               \
            ptrdiff_t h = top + i;                                                              \
            for (j = 0; j < 6; j++) {                                                           \
                ptrdiff_t w = left + j;                                                         \
                T* run = block[i * 6 + j][lane];                                                \
                if (lane < n_lanes && h >= 0 && h < H && w >= 0 && w < W) {                     \
                    if (cb == L) memcpy(run, src + h * rs + w * ps, L * sizeof(T));             \
                    else memcpy(run, src + h * rs + w * ps, cb * sizeof(T));                    \
                } else {                                                                        \
                    memset(run, 0, L * sizeof(T));                                              \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    for (i = 0; i < 36; i++) {                                                                  \
        fc_transpose_##SUFFIX(&block[i][0][0], L, &columns[0][0], L, L, cb);                    \
        memcpy(block[i], columns, cb * L * sizeof(T));                                          \
    }                                                                                           \
    for (c = 0; c < cb; c++)                                                                    \
        fc_wino_input_tile_##SUFFIX(&block[0][c][0], L * L, v + c * c_stride, e_stride);        \
}                                                                                               \
                                                                                                \
/* y[e'] = (A^T m_lane A)[e'] + bias for the 16 outputs e' of LANES tiles' 4x4 tiles,         \
 * m[e * e_stride + lane]; returns a vector whose lanes are NaN where a tile's output is inf   \
 * or NaN (inf * 0 and NaN * 0 are NaN), else 0. */                                            \
static inline fc_wvec_##SUFFIX fc_wino_output_tile_##SUFFIX(const T* m, ptrdiff_t e_stride,    \
                                                          T bias, fc_wvec_##SUFFIX* y) {       \
    fc_wvec_##SUFFIX mv[36], t[24];                                                             \
    ptrdiff_t i, j;                                                                             \
    for (i = 0; i < 36; i++) memcpy(&mv[i], m + i * e_stride, sizeof(mv[i]));                   \
    for (j = 0; j < 6; j++) fc_wino_at_##SUFFIX(mv + j, 6, t + j, 6);       /* columns */       \
    for (i = 0; i < 4; i++) fc_wino_at_##SUFFIX(t + 6 * i, 1, y + 4 * i, 1); /* rows */         \
    fc_wvec_##SUFFIX nan_if_nonfinite = {0};                                                    \
    for (i = 0; i < 16; i++) {                                                                  \
        y[i] += bias;                                                                           \
        nan_if_nonfinite += y[i] * 0;                                                           \
    }                                                                                           \
    return nan_if_nonfinite;                                                                    \
}                                                                                               \
                                                                                                \
static inline int fc_wino_any_nan_##SUFFIX(fc_wvec_##SUFFIX flags_vector, ptrdiff_t n_lanes) {  \
    T flags[FC_WINO_LANES_##SUFFIX];                                                            \
    ptrdiff_t lane;                                                                             \
    memcpy(flags, &flags_vector, sizeof(flags));                                                \
    for (lane = 0; lane < n_lanes; lane++)                                                      \
        if (flags[lane] != flags[lane]) return 1;                                               \
    return 0;                                                                                   \
}                                                                                               \
                                                                                                \
/* The output transform of one output channel for LANES tiles: the 4x4 tile                   \
 * A^T m_lane A + bias goes to `plane` (OH x OW, offset by plane_offset[lane], pixel (h, w)   \
 * at h * rs + w * ps) at (4 * th, 4 * tw) = (h0[lane], w0[lane]), clipped to the plane;      \
 * m[e * e_stride + lane]. Returns 1 if an output of the tile (stored or not) is inf or NaN,  \
 * else 0. */                                                                                  \
static inline int fc_wino_output_##SUFFIX(const T* m, ptrdiff_t e_stride, T bias, T* out,      \
        const ptrdiff_t* plane_offset, const ptrdiff_t* h0, const ptrdiff_t* w0,                \
        ptrdiff_t n_lanes, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t rs, ptrdiff_t ps) {            \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    fc_wvec_##SUFFIX y[16];                                                                     \
    T ys[16][L];                                                                                \
    ptrdiff_t lane, i, j;                                                                       \
    fc_wvec_##SUFFIX nan_if_nonfinite = fc_wino_output_tile_##SUFFIX(m, e_stride, bias, y);     \
    memcpy(ys, y, sizeof(ys));                                                                  \
    for (lane = 0; lane < n_lanes; lane++) {                                                    \
        T* dst = out + plane_offset[lane];                                                      \
        ptrdiff_t top = h0[lane], left = w0[lane];                                              \
        ptrdiff_t rows = OH - top < 4 ? OH - top : 4, cols = OW - left < 4 ? OW - left : 4;     \
        for (i = 0; i < rows; i++)                                                              \
            for (j = 0; j < cols; j++)                                                          \
                dst[(top + i) * rs + (left + j) * ps] = ys[i * 4 + j][lane];                    \
    }                                                                                           \
    return fc_wino_any_nan_##SUFFIX(nan_if_nonfinite, n_lanes);                                 \
}                                                                                               \
                                                                                                \
/* The output transform of `kb` <= LANES consecutive output channels (channel k's products at  \
 * m + k * k_stride, its bias bias[k] or 0 without bias) for LANES tiles, into a channels-last \
 * plane (channel stride 1, out at the first channel): as fc_wino_output channel by channel,   \
 * but each output element's kb x LANES block transposed through vector registers and each    \
 * pixel's kb channels stored as one run. Channel by channel, the 16 x LANES scalar stores of  \
 * an item went to as many lines C elements apart, which a power-of-2 C maps to a few sets of  \
 * the L1 cache: they missed, and took 36% of a 64-channel 56x56 layer. Returns the number of  \
 * channels with an inf or NaN output. */                                                      \
static inline int fc_wino_output_channels_##SUFFIX(const T* m, ptrdiff_t k_stride,             \
        ptrdiff_t e_stride, ptrdiff_t kb, const T* bias, T* out,                                \
        const ptrdiff_t* plane_offset, const ptrdiff_t* h0, const ptrdiff_t* w0,                \
        ptrdiff_t n_lanes, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t rs, ptrdiff_t ps) {            \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    fc_wvec_##SUFFIX y[16];                                                                     \
    T block[16][L][L];     /* [output of the tile][channel][lane] */                            \
    T runs[L][L];          /* [lane][channel] */                                                \
    ptrdiff_t k, lane, i;                                                                       \
    int nonfinite = 0;                                                                          \
    for (k = 0; k < kb; k++) {                                                                  \
        nonfinite += fc_wino_any_nan_##SUFFIX(fc_wino_output_tile_##SUFFIX(                     \
            m + k * k_stride, e_stride, bias != NULL ? bias[k] : (T)0, y), n_lanes);            \
        for (i = 0; i < 16; i++) memcpy(block[i][k], &y[i], sizeof(y[i]));                     \
    }                                                                                           \
    for (i = 0; i < 16; i++) {                                                                  \
        fc_transpose_##SUFFIX(&block[i][0][0], L, &runs[0][0], L, kb, n_lanes);                 \
        for (lane = 0; lane < n_lanes; lane++) {                                                \
            ptrdiff_t h = h0[lane] + i / 4, w = w0[lane] + i % 4;                               \
            if (h >= OH || w >= OW) continue;                                                   \
            T* dst = out + plane_offset[lane] + h * rs + w * ps;                                \
            if (kb == L) memcpy(dst, runs[lane], L * sizeof(T));                                \
            else memcpy(dst, runs[lane], kb * sizeof(T));                                       \
        }                                                                                       \
    }                                                                                           \
    return nonfinite;                                                                           \
}

FC_DEFINE_WINOGRAD(f32, float)
FC_DEFINE_WINOGRAD(f64, double)

/* w[0..2] = G^T u for u[0..3] at stride `s` (w at stride `ws`), for elements of type VT
 * (a scalar T, or a vector of T) */
#define FC_WINO2_GT(NAME, VT, T)                                                    \
static inline void NAME(const VT* u, ptrdiff_t s, VT* w, ptrdiff_t ws) {            \
    VT sum = (u[s] + u[2 * s]) * (T)0.5;                                            \
    w[0] = u[0] + sum;                                                              \
    w[ws] = (u[s] - u[2 * s]) * (T)0.5;                                             \
    w[2 * ws] = sum + u[3 * s];                                                     \
}

/* The weight gradient by Winograd F(2x2, 3x3) (conv_winograd.pyx, weight_grad). A forward
 * tile is Y = A^T [(G g G^T) . (B^T d B)] A, so the gradient of its filter for the output
 * gradient dY of the tile is G^T [(B^T d B) . (A dY A^T)] G: summed over tiles (and images)
 * inside the brackets, that is 16 GEMMs over the tiles, M[e] (C_out x C_in) = sum over tiles
 * of (A dY A^T)[e] (B^T d B)[e], then one G^T M G per filter: 16 products per 2x2 tile and
 * channel pair instead of 36 multiply-adds. Not F(4x4, 3x3) as the forward pass: its 36
 * products per 4x4 tile were 1.3-1.5x faster, but the sum over thousands of tiles of its
 * transforms' large terms (A's 8s squared) cancelling in G^T M G left 24-33x the direct sum's
 * float32 error (F(2x2, 3x3)'s transforms add and subtract only).
 *   B^T = [1 0 -1 0]   G = [  1    0   0]   A^T = [1 1  1  0]
 *         [0 1  1 0]       [1/2  1/2 1/2]         [0 1 -1 -1]
 *         [0 -1 1 0]       [1/2 -1/2 1/2]
 *         [0 1  0 -1]      [  0    0   1]
 *   fc_wino2_input_plane: v[e * run + th * tiles_w + tw] = (B^T d B)[e] for every tile of a
 *       plane (H x W, row-major at x), d its 4x4 tile at rows 2 th - pad_h..,
 *       columns 2 tw - pad_w.., zero outside the plane (th < tiles_h, tw < tiles_w); each run
 *       of v needs room for tiles_h * tiles_w + L elements (see below).
 *   fc_wino2_gradient_plane: the same with (A dY A^T)[e], dY the 2x2 tile of the output
 *       gradient plane (OH x OW) at (2 th, 2 tw).
 *   fc_wino2_plane_scratch(tiles_h, tiles_w): the elements of scratch both need, zero before
 *       a call's first plane (then left so by both whatever the plane's values).
 *   fc_wino2_filter_grad: dw[c * filter_stride + k] = (G^T M_c G)[k] for c < count, M_c[e]
 *       = m[e * e_stride + c].
 * A plane at a time, by rows of tiles: its rows, zero-padded, are first split into their even
 * and odd columns, so that component (i, j) of L consecutive tiles of a row is one vector load
 * (column 2 tw + j: the even or odd half at tw + j / 2), where gathering it lane by lane took
 * half of a call. Each row's vectors are stored whole: the lanes past a row's end spill into
 * the next row's tiles (written after them) or past the run's end (never read). */
#define FC_DEFINE_WINOGRAD_GRAD(SUFFIX, T)                                                      \
/* the input's split rows, then the gradient's (each zero where its planes are not) */          \
static inline ptrdiff_t fc_wino2_input_scratch_##SUFFIX(ptrdiff_t tiles_h, ptrdiff_t tiles_w) { \
    return 2 * (2 * tiles_h + 2) * (tiles_w + 1 + FC_WINO_LANES_##SUFFIX);                      \
}                                                                                               \
static inline ptrdiff_t fc_wino2_plane_scratch_##SUFFIX(ptrdiff_t tiles_h, ptrdiff_t tiles_w) { \
    return fc_wino2_input_scratch_##SUFFIX(tiles_h, tiles_w)                                    \
        + 2 * (2 * tiles_h) * (tiles_w + FC_WINO_LANES_##SUFFIX);                               \
}                                                                                               \
                                                                                                \
/* rows [0, rows) of the split plane: padded row r is the plane's row r - pad_h, padded column  \
 * c its column c - pad_w; even[r * rs + k] = (r, 2k), odd: (r, 2k + 1). Only the plane's      \
 * elements are written: the places outside it, the same for every plane of a call, hold the   \
 * zeros the caller wrote once (a memset per row took a fifth of a call). */                   \
static inline void fc_wino2_split_##SUFFIX(const T* x, ptrdiff_t H, ptrdiff_t W,                \
        ptrdiff_t pad_h, ptrdiff_t pad_w, ptrdiff_t rows, ptrdiff_t rs, T* even, T* odd) {      \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                      \
        T* e = even + r * rs;                                                                   \
        T* o = odd + r * rs;                                                                    \
        ptrdiff_t h = r - pad_h;                                                                \
        if (h < 0 || h >= H) continue;                                                          \
        const T* src = x + h * W;                                                               \
        /* columns c with padded column c + pad_w inside the split row (2 rs of them) */        \
        ptrdiff_t c0 = pad_w < 0 ? -pad_w : 0;                                                  \
        ptrdiff_t c1 = 2 * rs - pad_w < W ? 2 * rs - pad_w : W;                                 \
        ptrdiff_t c;                                                                            \
        for (c = c0 + ((c0 + pad_w) & 1); c < c1; c += 2) e[(c + pad_w) >> 1] = src[c];         \
        for (c = c0 + 1 - ((c0 + pad_w) & 1); c < c1; c += 2) o[(c + pad_w) >> 1] = src[c];     \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* (B^T d B)[e] = o[e] of a 4x4 input tile d (row-major), and (A dY A^T)[e] of a 2x2 gradient \
 * tile, on vectors of independent lanes (tiles, or channels) */                               \
static inline void fc_wino2_input_tile_##SUFFIX(const fc_wvec_##SUFFIX d[16],                   \
                                                fc_wvec_##SUFFIX o[16]) {                       \
    fc_wvec_##SUFFIX t[16];                                                                     \
    for (int j = 0; j < 4; j++) {                              /* columns: t = B^T d */         \
        t[j] = d[j] - d[8 + j];                                                                 \
        t[4 + j] = d[4 + j] + d[8 + j];                                                         \
        t[8 + j] = d[8 + j] - d[4 + j];                                                         \
        t[12 + j] = d[4 + j] - d[12 + j];                                                       \
    }                                                                                           \
    for (int i = 0; i < 4; i++) {                              /* rows: (B^T d) B */            \
        const fc_wvec_##SUFFIX* r = t + 4 * i;                                                  \
        o[4 * i] = r[0] - r[2];                                                                 \
        o[4 * i + 1] = r[1] + r[2];                                                             \
        o[4 * i + 2] = r[2] - r[1];                                                             \
        o[4 * i + 3] = r[1] - r[3];                                                             \
    }                                                                                           \
}                                                                                               \
static inline void fc_wino2_gradient_tile_##SUFFIX(const fc_wvec_##SUFFIX d[4],                 \
                                                   fc_wvec_##SUFFIX o[16]) {                    \
    fc_wvec_##SUFFIX t[8];                                                                      \
    for (int j = 0; j < 2; j++) {                              /* columns: t = A dY (4 x 2) */  \
        t[j] = d[j];                                                                            \
        t[2 + j] = d[j] + d[2 + j];                                                             \
        t[4 + j] = d[j] - d[2 + j];                                                             \
        t[6 + j] = -d[2 + j];                                                                   \
    }                                                                                           \
    for (int i = 0; i < 4; i++) {                              /* rows: (A dY) A^T */           \
        const fc_wvec_##SUFFIX* r = t + 2 * i;                                                  \
        o[4 * i] = r[0];                                                                        \
        o[4 * i + 1] = r[0] + r[1];                                                             \
        o[4 * i + 2] = r[0] - r[1];                                                             \
        o[4 * i + 3] = -r[1];                                                                   \
    }                                                                                           \
}                                                                                               \
                                                                                                \
static inline void fc_wino2_input_plane_##SUFFIX(const T* x, ptrdiff_t H, ptrdiff_t W,          \
        ptrdiff_t pad_h, ptrdiff_t pad_w, ptrdiff_t tiles_h, ptrdiff_t tiles_w, T* v,           \
        ptrdiff_t run, T* scratch) {                                                            \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    ptrdiff_t rows = 2 * tiles_h + 2, rs = tiles_w + 1 + L;                                     \
    T* even = scratch;                                                                          \
    T* odd = even + rows * rs;                                                                  \
    fc_wino2_split_##SUFFIX(x, H, W, pad_h, pad_w, rows, rs, even, odd);                        \
    for (ptrdiff_t th = 0; th < tiles_h; th++)                                                  \
        for (ptrdiff_t k0 = 0; k0 < tiles_w; k0 += L) {                                         \
            fc_wvec_##SUFFIX d[16], o[16];                                                      \
            for (int i = 0; i < 4; i++) {                                                       \
                const T* e = even + (2 * th + i) * rs + k0;                                     \
                const T* od = odd + (2 * th + i) * rs + k0;                                     \
                memcpy(&d[4 * i], e, sizeof(d[0]));                                             \
                memcpy(&d[4 * i + 1], od, sizeof(d[0]));                                        \
                memcpy(&d[4 * i + 2], e + 1, sizeof(d[0]));                                     \
                memcpy(&d[4 * i + 3], od + 1, sizeof(d[0]));                                    \
            }                                                                                   \
            fc_wino2_input_tile_##SUFFIX(d, o);                                                 \
            T* out = v + th * tiles_w + k0;                                                     \
            for (int e = 0; e < 16; e++) memcpy(out + e * run, &o[e], sizeof(o[e]));            \
        }                                                                                       \
}                                                                                               \
                                                                                                \
static inline void fc_wino2_gradient_plane_##SUFFIX(const T* g, ptrdiff_t OH, ptrdiff_t OW,     \
        ptrdiff_t tiles_h, ptrdiff_t tiles_w, T* v, ptrdiff_t run, T* scratch) {                \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    ptrdiff_t rows = 2 * tiles_h, rs = tiles_w + L;                                             \
    T* even = scratch + fc_wino2_input_scratch_##SUFFIX(tiles_h, tiles_w);                      \
    T* odd = even + rows * rs;                                                                  \
    fc_wino2_split_##SUFFIX(g, OH, OW, 0, 0, rows, rs, even, odd);                              \
    for (ptrdiff_t th = 0; th < tiles_h; th++)                                                  \
        for (ptrdiff_t k0 = 0; k0 < tiles_w; k0 += L) {                                         \
            fc_wvec_##SUFFIX d[4], o[16];                                                       \
            for (int i = 0; i < 2; i++) {                                                       \
                memcpy(&d[2 * i], even + (2 * th + i) * rs + k0, sizeof(d[0]));                 \
                memcpy(&d[2 * i + 1], odd + (2 * th + i) * rs + k0, sizeof(d[0]));              \
            }                                                                                   \
            fc_wino2_gradient_tile_##SUFFIX(d, o);                                              \
            T* out = v + th * tiles_w + k0;                                                     \
            for (int e = 0; e < 16; e++) memcpy(out + e * run, &o[e], sizeof(o[e]));            \
        }                                                                                       \
}                                                                                               \
                                                                                                \
/* The same transforms on a channels-last block (conv_winograd.pyx, weight_grad_blocks): the   \
 * lanes of a vector are channels. x: element (row r, column q, channel c) at x[r * rs + q * ld  \
 * + c], zero-padded (the caller's copy); tile (th, tw) of the block, t = th * tiles_w + tw,     \
 * reads rows 2 th.. and columns 2 tw..; out[e * es + t * ld + c] = its transformed element e,  \
 * for channels c < `channels` rounded up to whole vectors (ld, rs and es multiples of L).     \
 * The arithmetic is the plane transforms' (the same tile functions): the same values. */      \
static inline __attribute__((always_inline)) void fc_wino2_block_cl_##SUFFIX(                   \
        const T* x, ptrdiff_t rs, ptrdiff_t ld, ptrdiff_t tiles_h, ptrdiff_t tiles_w,           \
        ptrdiff_t channels, T* out, ptrdiff_t es, const int side) {                             \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    for (ptrdiff_t th = 0; th < tiles_h; th++)                                                  \
        for (ptrdiff_t tw = 0; tw < tiles_w; tw++)                                              \
            for (ptrdiff_t c = 0; c < channels; c += L) {                                       \
                const T* p = x + 2 * th * rs + 2 * tw * ld + c;                                 \
                fc_wvec_##SUFFIX d[16], o[16];                                                  \
                for (int i = 0; i < side; i++)                                                  \
                    for (int j = 0; j < side; j++)                                              \
                        memcpy(&d[side * i + j], p + i * rs + j * ld, sizeof(d[0]));            \
                if (side == 4) fc_wino2_input_tile_##SUFFIX(d, o);                              \
                else fc_wino2_gradient_tile_##SUFFIX(d, o);                                     \
                T* at = out + (th * tiles_w + tw) * ld + c;                                     \
                for (int e = 0; e < 16; e++) memcpy(at + e * es, &o[e], sizeof(o[e]));          \
            }                                                                                   \
}                                                                                               \
/* the input's 4x4 tiles, and the output gradient's 2x2 ones (A dY A^T), laid out alike */     \
static inline void fc_wino2_input_cl_##SUFFIX(const T* x, ptrdiff_t rs, ptrdiff_t ld,           \
        ptrdiff_t tiles_h, ptrdiff_t tiles_w, ptrdiff_t channels, T* out, ptrdiff_t es) {       \
    fc_wino2_block_cl_##SUFFIX(x, rs, ld, tiles_h, tiles_w, channels, out, es, 4);              \
}                                                                                               \
static inline void fc_wino2_gradient_cl_##SUFFIX(const T* g, ptrdiff_t rs, ptrdiff_t ld,        \
        ptrdiff_t tiles_h, ptrdiff_t tiles_w, ptrdiff_t channels, T* out, ptrdiff_t es) {       \
    fc_wino2_block_cl_##SUFFIX(g, rs, ld, tiles_h, tiles_w, channels, out, es, 2);              \
}                                                                                               \
                                                                                                \
/* G^T on a column of 4 (w[0..2] = G^T u, u at stride `s`, w at `ws`): on scalars, and on       \
 * vectors of L filters side by side (FC_WINO2_GT) */                                           \
FC_WINO2_GT(fc_wino2_gt_##SUFFIX, T, T)                                                         \
FC_WINO2_GT(fc_wino2_gt_vec_##SUFFIX, fc_wvec_##SUFFIX, T)                                      \
                                                                                                \
/* L filters at a time from 16 vector reads of M (a filter at a time, its 16 scalar reads       \
 * e_stride apart took a fifth of a 512-channel call), then the rest one by one */             \
static inline void fc_wino2_filter_grad_##SUFFIX(const T* m, ptrdiff_t e_stride,                \
                                                 ptrdiff_t count, T* dw,                        \
                                                 ptrdiff_t filter_stride) {                     \
    enum { L = FC_WINO_LANES_##SUFFIX };                                                        \
    T u[16], t[12];                                                                             \
    ptrdiff_t c = 0;                                                                            \
    for (; c + L <= count; c += L) {                                                            \
        fc_wvec_##SUFFIX uv[16], tv[12], fv[9];                                                 \
        T f[9][L];                                                                              \
        for (int e = 0; e < 16; e++) memcpy(&uv[e], m + e * e_stride + c, sizeof(uv[e]));       \
        for (int j = 0; j < 4; j++) fc_wino2_gt_vec_##SUFFIX(uv + j, 4, tv + j, 4);             \
        for (int i = 0; i < 3; i++) fc_wino2_gt_vec_##SUFFIX(tv + 4 * i, 1, fv + 3 * i, 1);     \
        memcpy(f, fv, sizeof(f));                                                               \
        for (int lane = 0; lane < L; lane++)                                                    \
            for (int k = 0; k < 9; k++) dw[(c + lane) * filter_stride + k] = f[k][lane];        \
    }                                                                                           \
    for (; c < count; c++) {                                                                    \
        T* f = dw + c * filter_stride;                                                          \
        for (int e = 0; e < 16; e++) u[e] = m[e * e_stride + c];                                \
        for (int j = 0; j < 4; j++) fc_wino2_gt_##SUFFIX(u + j, 4, t + j, 4);  /* columns */    \
        for (int i = 0; i < 3; i++) fc_wino2_gt_##SUFFIX(t + 4 * i, 1, f + 3 * i, 1);           \
    }                                                                                           \
}

FC_DEFINE_WINOGRAD_GRAD(f32, float)
FC_DEFINE_WINOGRAD_GRAD(f64, double)

/* 1-d F(4, 3): a tile is 4 outputs `step` apart (the dilation: a dilated 1-d convolution is
 * `step` interleaved undilated ones), read from 6 inputs `step` apart; 6 products per tile
 * and channel pair instead of 12, the transforms the 2-d ones' 1-d matrices.
 *   fc_wino1d_input: v[e * e_stride + lane] = (B^T d_lane)[e], d_lane[j] = row[image[lane] +
 *       (start[lane] + j * step) * ps] (0 outside [0, L)); lanes >= n_lanes are zero.
 *   fc_wino1d_output: out[image[lane] + (first[lane] + j * step) * ps] = (A^T m_lane)[j] +
 *       bias for the j whose output is inside [0, OL); returns 1 if a result of a lane
 *       (stored or not) is inf or NaN, else 0.
 * ps: the stride between positions (1 channels-first, C channels-last). */
#define FC_DEFINE_WINOGRAD_1D(SUFFIX, T)                                                        \
static inline void fc_wino1d_input_##SUFFIX(const T* row, const ptrdiff_t* image,               \
        const ptrdiff_t* start, ptrdiff_t step, ptrdiff_t n_lanes, ptrdiff_t L, ptrdiff_t ps,   \
        T* v, ptrdiff_t e_stride) {                                                             \
    enum { LANES = FC_WINO_LANES_##SUFFIX };                                                    \
    T d[6][LANES];                                                                              \
    fc_wvec_##SUFFIX dv[6];                                                                     \
    ptrdiff_t lane, j;                                                                          \
    for (lane = 0; lane < LANES; lane++) {                                                      \
        if (lane >= n_lanes) {                                                                  \
            for (j = 0; j < 6; j++) d[j][lane] = 0;                                             \
            continue;                                                                           \
        }                                                                                       \
        const T* src = row + image[lane];                                                       \
        ptrdiff_t first = start[lane];                                                          \
        if (first >= 0 && first + 5 * step < L) {                                               \
            for (j = 0; j < 6; j++) d[j][lane] = src[(first + j * step) * ps];                  \
        } else {                                                                                \
            for (j = 0; j < 6; j++) {                                                           \
                ptrdiff_t i = first + j * step;                                                 \
                d[j][lane] = (i >= 0 && i < L) ? src[i * ps] : (T)0;                            \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    memcpy(dv, d, sizeof(dv));                                                                  \
    fc_wino_bt_##SUFFIX(dv, 1);                                                                 \
    for (j = 0; j < 6; j++) memcpy(v + j * e_stride, &dv[j], sizeof(dv[j]));                    \
}                                                                                               \
                                                                                                \
static inline int fc_wino1d_output_##SUFFIX(const T* m, ptrdiff_t e_stride, T bias, T* out,    \
        const ptrdiff_t* image, const ptrdiff_t* first, ptrdiff_t step, ptrdiff_t n_lanes,     \
        ptrdiff_t OL, ptrdiff_t ps) {                                                           \
    enum { LANES = FC_WINO_LANES_##SUFFIX };                                                    \
    fc_wvec_##SUFFIX mv[6], y[4];                                                               \
    T ys[4][LANES];                                                                             \
    ptrdiff_t lane, j;                                                                          \
    for (j = 0; j < 6; j++) memcpy(&mv[j], m + j * e_stride, sizeof(mv[j]));                    \
    fc_wino_at_##SUFFIX(mv, 1, y, 1);                                                           \
    fc_wvec_##SUFFIX nan_if_nonfinite = {0};                                                    \
    for (j = 0; j < 4; j++) {                                                                   \
        y[j] += bias;                                                                           \
        nan_if_nonfinite += y[j] * 0;   /* inf * 0 and NaN * 0 are NaN */                       \
    }                                                                                           \
    memcpy(ys, y, sizeof(ys));                                                                  \
    for (lane = 0; lane < n_lanes; lane++) {                                                    \
        T* dst = out + image[lane];                                                             \
        for (j = 0; j < 4; j++) {                                                               \
            ptrdiff_t o = first[lane] + j * step;                                               \
            if (o < OL) dst[o * ps] = ys[j][lane];                                              \
        }                                                                                       \
    }                                                                                           \
    T flags[LANES];                                                                             \
    memcpy(flags, &nan_if_nonfinite, sizeof(flags));                                            \
    for (lane = 0; lane < n_lanes; lane++)                                                      \
        if (flags[lane] != flags[lane]) return 1;                                               \
    return 0;                                                                                   \
}

FC_DEFINE_WINOGRAD_1D(f32, float)
FC_DEFINE_WINOGRAD_1D(f64, double)

#endif /* FASTCONV_WINOGRAD_H */
