/* Weight-gradient dot products on the phase grid (conv_phase_grid.pyx, weight_grad_phase):
 *   acc[i * acc_stride + j] += sum_p g[i * g_stride + p] * (grid[offsets[j] + p] if mask[p])
 * for p < length (a multiple of the vector width), i < FC_DOT_M, j < FC_DOT_K: a register
 * tile of FC_DOT_M x FC_DOT_K vector accumulators, reduced across lanes (by halves, a fixed
 * order) once at the end. The mask drops the extended grid's extra positions exactly (a bitwise
 * and, so that an inf or NaN read there never leaks in).
 * fc_dot_row_<t>: the same for one row of g (i < 1) and FC_DOT_ROW_K taps, for one output
 * channel per group (depthwise), where FC_DOT_M rows would be all but one zero rows. Each
 * accumulator sums its products in the same order in either tile, so both give the same bits.
 * FC_DOT_ROW_K = 9: a 3x3 kernel's taps, 3 passes for 5x5 or 3x3x3. */
#ifndef FASTCONV_DOT_TILES_H
#define FASTCONV_DOT_TILES_H
#include <stddef.h>
/* the micro-kernel's vector type and width (FC_GEMM_VEC_BYTES, fc_gvec_*) */
#include "gemm_microkernel.h"

#ifdef __AVX512F__
#define FC_DOT_M 4
#define FC_DOT_K 6
#else
#define FC_DOT_M 2
#define FC_DOT_K 4
#endif

/* The sum of a vector's lanes by halves (a fixed order): a lane-by-lane loop was 16
 * dependent scalar additions per accumulator, as long as the dot products of a 7x7 plane. */
#define FC_DEFINE_LANE_SUM(SUFFIX, T)                                                           \
typedef T fc_h32_##SUFFIX __attribute__((vector_size(32)));                                     \
typedef T fc_h16_##SUFFIX __attribute__((vector_size(16)));                                     \
typedef T fc_h8_##SUFFIX __attribute__((vector_size(8)));                                       \
static inline T fc_lane_sum_##SUFFIX(fc_gvec_##SUFFIX v) {                                      \
    fc_h32_##SUFFIX h32, u32;                                                                  \
    fc_h16_##SUFFIX h16, u16;                                                                  \
    fc_h8_##SUFFIX h8, u8;                                                                     \
    T lanes[8 / sizeof(T)], total;                                                             \
    if (sizeof(v) >= 32) {                                                                     \
        memcpy(&h32, &v, 32);                                                                  \
        if (sizeof(v) == 64) { memcpy(&u32, (const char*)&v + 32, 32); h32 += u32; }           \
        memcpy(&h16, &h32, 16); memcpy(&u16, (const char*)&h32 + 16, 16); h16 += u16;          \
    } else {                   /* 16-byte vectors (the baseline level) */                      \
        memcpy(&h16, &v, 16);                                                                  \
    }                                                                                          \
    memcpy(&h8, &h16, 8); memcpy(&u8, (const char*)&h16 + 8, 8); h8 += u8;                     \
    memcpy(lanes, &h8, 8);                                                                     \
    total = lanes[0];                                                                          \
    for (size_t i = 1; i < 8 / sizeof(T); i++) total += lanes[i];                              \
    return total;                                                                              \
}

FC_DEFINE_LANE_SUM(f32, float)
FC_DEFINE_LANE_SUM(f64, double)

#define FC_DOT_ROW_K 9

#define FC_DEFINE_DOT_TILE(NAME, SUFFIX, T, MASK_T, TILE_M, TILE_K)                            \
static inline void NAME##_##SUFFIX(const T* g, ptrdiff_t g_stride, const T* grid,               \
        const ptrdiff_t* offsets, const MASK_T* mask, ptrdiff_t length, T* acc,               \
        ptrdiff_t acc_stride) {                                                                \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gmask_##SUFFIX mvec;                                                            \
    fc_gvec_##SUFFIX a[TILE_M][TILE_K];                                                        \
    ptrdiff_t i, j, p;                                                                         \
    for (i = 0; i < TILE_M; i++)                                                               \
        for (j = 0; j < TILE_K; j++) a[i][j] = (fc_gvec_##SUFFIX){0};                          \
    for (p = 0; p < length; p += V) {                                                          \
        mvec keep; fc_gvec_##SUFFIX gv[TILE_M];                                                \
        memcpy(&keep, mask + p, sizeof(keep));                                                 \
        for (i = 0; i < TILE_M; i++) memcpy(&gv[i], g + i * g_stride + p, sizeof(gv[i]));      \
        for (j = 0; j < TILE_K; j++) {                                                         \
            fc_gvec_##SUFFIX xv;                                                               \
            memcpy(&xv, grid + offsets[j] + p, sizeof(xv));                                    \
            xv = (fc_gvec_##SUFFIX)((mvec)xv & keep);                                          \
            for (i = 0; i < TILE_M; i++) a[i][j] += gv[i] * xv;                                \
        }                                                                                      \
    }                                                                                          \
    for (i = 0; i < TILE_M; i++)                                                               \
        for (j = 0; j < TILE_K; j++)                                                           \
            acc[i * acc_stride + j] += fc_lane_sum_##SUFFIX(a[i][j]);                          \
}

FC_DEFINE_DOT_TILE(fc_dot_tile, f32, float, int, FC_DOT_M, FC_DOT_K)
FC_DEFINE_DOT_TILE(fc_dot_tile, f64, double, long long, FC_DOT_M, FC_DOT_K)
FC_DEFINE_DOT_TILE(fc_dot_row, f32, float, int, 1, FC_DOT_ROW_K)
FC_DEFINE_DOT_TILE(fc_dot_row, f64, double, long long, 1, FC_DOT_ROW_K)

#endif /* FASTCONV_DOT_TILES_H */
