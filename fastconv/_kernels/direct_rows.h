/* Register-blocked inner loop of the direct convolution, written with GCC/Clang vector
 * extensions so it is vectorized whatever the optimizer's cost model thinks.
 *
 * fc_direct_chunk_<t>(out, out_step, channels, bias, taps, xs, x_offset, ws, w_step, kw, dw,
 *                     wide, x_wide, out_wide):
 *   for c < channels, i < CHUNK, v < (4 if wide else 1):
 *     out[c * out_step + v * out_wide + i] = (bias ? bias[c] : 0)
 *         + sum_{t < taps, k < kw} ws[t][c * w_step + k] * xs[t][x_offset + v * x_wide + k * dw + i]
 * xs[t] points at the input row read by tap row t (a fixed input channel, kd, kh), ws[t] at
 * the kw weights of that row for the first of the `channels` filters. `wide` computes four
 * chunks at once (independent FMA chains): four consecutive chunks of a row
 * (x_wide = out_wide = CHUNK) or the same chunk of four consecutive rows.
 *
 * A chunk is FC_DIRECT_CHUNK_BYTES (64) of outputs at every SIMD level, so the tiling (and
 * every output's sum, tap by tap in the same order) is the same everywhere; it is computed
 * as FC_DIRECT_PARTS vectors of the level's own register width (one AVX-512 register, two
 * AVX ones, four SSE ones). One 64-byte GCC vector on an AVX2 build was lowered through the
 * stack: the broadcast weight was stored lane by lane and reloaded (a store-forwarding stall
 * per tap) and the accumulators spilled, 4 GFLOP/s per core on Zen 3.
 */
#ifndef FASTCONV_DIRECT_ROWS_H
#define FASTCONV_DIRECT_ROWS_H
#include <stddef.h>
#include <string.h>
/* the level's register width (FC_GEMM_VEC_BYTES), decided once for every kernel */
#include "gemm_microkernel.h"

#define FC_DIRECT_CHUNK_BYTES 64
#define FC_DIRECT_VEC_BYTES FC_GEMM_VEC_BYTES
#define FC_DIRECT_PARTS (FC_DIRECT_CHUNK_BYTES / FC_DIRECT_VEC_BYTES)

/* acc[p] += s * (vector p of the chunk at x), for every part p */
#define FC_DIRECT_FMA(SUFFIX, acc, s, x)                                                        \
    for (int p_ = 0; p_ < FC_DIRECT_PARTS; p_++)                                               \
        (acc)[p_] += (s) * fc_load_##SUFFIX((x) + p_ * FC_DIRECT_LANES_##SUFFIX)

#define FC_DEFINE_DIRECT_CHUNK(SUFFIX, T)                                                       \
typedef T fc_vec_##SUFFIX __attribute__((vector_size(FC_DIRECT_VEC_BYTES)));                    \
enum { FC_DIRECT_LANES_##SUFFIX = FC_DIRECT_VEC_BYTES / sizeof(T) };                            \
static inline fc_vec_##SUFFIX fc_load_##SUFFIX(const T* p) {                                    \
    fc_vec_##SUFFIX v; memcpy(&v, p, sizeof(v)); return v;  /* unaligned load */              \
}                                                                                              \
static inline void fc_store_##SUFFIX(T* p, const fc_vec_##SUFFIX* acc, T b) {                   \
    for (int p_ = 0; p_ < FC_DIRECT_PARTS; p_++) {                                             \
        fc_vec_##SUFFIX v = acc[p_] + b;                                                       \
        memcpy(p + p_ * FC_DIRECT_LANES_##SUFFIX, &v, sizeof(v));                              \
    }                                                                                          \
}                                                                                              \
static inline void fc_direct_chunk_##SUFFIX(T* out, ptrdiff_t out_step, ptrdiff_t channels,     \
        const T* bias, ptrdiff_t taps, const T* const* xs, ptrdiff_t x_offset,                 \
        const T* const* ws, ptrdiff_t w_step, ptrdiff_t kw, ptrdiff_t dw, int wide,            \
        ptrdiff_t x_wide, ptrdiff_t out_wide) {                                                \
    ptrdiff_t t, k, c;                                                                         \
    if (channels == 4 && !wide) {  /* four filters share every input load */                  \
        fc_vec_##SUFFIX a0[FC_DIRECT_PARTS] = {{0}}, a1[FC_DIRECT_PARTS] = {{0}};               \
        fc_vec_##SUFFIX a2[FC_DIRECT_PARTS] = {{0}}, a3[FC_DIRECT_PARTS] = {{0}};               \
        for (t = 0; t < taps; t++) {                                                           \
            const T* x = xs[t] + x_offset; const T* w = ws[t];                                 \
            for (k = 0; k < kw; k++) {                                                         \
                for (int p_ = 0; p_ < FC_DIRECT_PARTS; p_++) {                                 \
                    fc_vec_##SUFFIX v = fc_load_##SUFFIX(x + k * dw + p_ * FC_DIRECT_LANES_##SUFFIX); \
                    a0[p_] += w[k] * v;                                                        \
                    a1[p_] += w[w_step + k] * v;                                               \
                    a2[p_] += w[2 * w_step + k] * v;                                           \
                    a3[p_] += w[3 * w_step + k] * v;                                           \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        fc_store_##SUFFIX(out, a0, bias ? bias[0] : 0);                                        \
        fc_store_##SUFFIX(out + out_step, a1, bias ? bias[1] : 0);                             \
        fc_store_##SUFFIX(out + 2 * out_step, a2, bias ? bias[2] : 0);                         \
        fc_store_##SUFFIX(out + 3 * out_step, a3, bias ? bias[3] : 0);                         \
        return;                                                                                \
    }                                                                                          \
    for (c = 0; c < channels; c++) {                                                           \
        T b = bias ? bias[c] : 0;                                                              \
        if (wide) {  /* four chunks at once: independent FMA chains */                        \
            fc_vec_##SUFFIX a0[FC_DIRECT_PARTS] = {{0}}, a1[FC_DIRECT_PARTS] = {{0}};           \
            fc_vec_##SUFFIX a2[FC_DIRECT_PARTS] = {{0}}, a3[FC_DIRECT_PARTS] = {{0}};           \
            for (t = 0; t < taps; t++) {                                                       \
                const T* x = xs[t] + x_offset; const T* w = ws[t] + c * w_step;                \
                for (k = 0; k < kw; k++) {                                                     \
                    const T* xk = x + k * dw;                                                  \
                    T s = w[k];                                                                \
                    FC_DIRECT_FMA(SUFFIX, a0, s, xk);                                          \
                    FC_DIRECT_FMA(SUFFIX, a1, s, xk + x_wide);                                 \
                    FC_DIRECT_FMA(SUFFIX, a2, s, xk + 2 * x_wide);                             \
                    FC_DIRECT_FMA(SUFFIX, a3, s, xk + 3 * x_wide);                             \
                }                                                                              \
            }                                                                                  \
            fc_store_##SUFFIX(out + c * out_step, a0, b);                                      \
            fc_store_##SUFFIX(out + c * out_step + out_wide, a1, b);                           \
            fc_store_##SUFFIX(out + c * out_step + 2 * out_wide, a2, b);                       \
            fc_store_##SUFFIX(out + c * out_step + 3 * out_wide, a3, b);                       \
        } else {                                                                               \
            /* one chunk, taps in the same order as every other path: which path computes  \
               an output depends on the band split (so on the thread count), and another    \
               order would round differently (found by tests/test_reliability.py) */        \
            fc_vec_##SUFFIX a0[FC_DIRECT_PARTS] = {{0}};                                       \
            for (t = 0; t < taps; t++) {                                                       \
                const T* x = xs[t] + x_offset; const T* w = ws[t] + c * w_step;                \
                for (k = 0; k < kw; k++)                                                       \
                    FC_DIRECT_FMA(SUFFIX, a0, w[k], x + k * dw);                               \
            }                                                                                  \
            fc_store_##SUFFIX(out + c * out_step, a0, b);                                      \
        }                                                                                      \
    }                                                                                          \
}

FC_DEFINE_DIRECT_CHUNK(f32, float)
FC_DEFINE_DIRECT_CHUNK(f64, double)

/* fc_plane_taps_<t>(out, count, bias, x, offsets, w, taps):
 *   out[f] = bias + sum_{t < taps} w[t] * x[offsets[t] + f]   for f < count,
 * count a multiple of one chunk (64 bytes). The direct kernel's flat form over a whole
 * (band of a) plane (conv_direct.pyx, CONV_DIRECT_PLANES): x holds the plane's stride
 * phases, each a zero-padded rectangle whose rows are as wide as the output's plus the
 * kernel's reach, so that every tap is one fixed offset and the outputs, row after row, are
 * one contiguous run (the columns past a row's end are computed and dropped). Four chunks at
 * once (independent FMA chains), the taps in order: every output sums its taps in the order
 * fc_direct_chunk does, so both kernels give the same bits. */
#define FC_DEFINE_PLANE_TAPS(SUFFIX, T)                                                         \
static inline void fc_plane_taps_##SUFFIX(T* out, ptrdiff_t count, T bias, const T* x,          \
        const ptrdiff_t* offsets, const T* w, ptrdiff_t taps) {                                 \
    const ptrdiff_t chunk = FC_DIRECT_CHUNK_BYTES / sizeof(T);                                 \
    ptrdiff_t f = 0, t;                                                                        \
    for (; f + 4 * chunk <= count; f += 4 * chunk) {                                           \
        fc_vec_##SUFFIX a0[FC_DIRECT_PARTS] = {{0}}, a1[FC_DIRECT_PARTS] = {{0}};               \
        fc_vec_##SUFFIX a2[FC_DIRECT_PARTS] = {{0}}, a3[FC_DIRECT_PARTS] = {{0}};               \
        for (t = 0; t < taps; t++) {                                                           \
            const T* p = x + offsets[t] + f;                                                   \
            T s = w[t];                                                                        \
            FC_DIRECT_FMA(SUFFIX, a0, s, p);                                                   \
            FC_DIRECT_FMA(SUFFIX, a1, s, p + chunk);                                           \
            FC_DIRECT_FMA(SUFFIX, a2, s, p + 2 * chunk);                                       \
            FC_DIRECT_FMA(SUFFIX, a3, s, p + 3 * chunk);                                       \
        }                                                                                      \
        fc_store_##SUFFIX(out + f, a0, bias);                                                  \
        fc_store_##SUFFIX(out + f + chunk, a1, bias);                                          \
        fc_store_##SUFFIX(out + f + 2 * chunk, a2, bias);                                      \
        fc_store_##SUFFIX(out + f + 3 * chunk, a3, bias);                                      \
    }                                                                                          \
    for (; f < count; f += chunk) {                                                            \
        fc_vec_##SUFFIX a0[FC_DIRECT_PARTS] = {{0}};                                           \
        for (t = 0; t < taps; t++)                                                             \
            FC_DIRECT_FMA(SUFFIX, a0, w[t], x + offsets[t] + f);                               \
        fc_store_##SUFFIX(out + f, a0, bias);                                                  \
    }                                                                                          \
}

FC_DEFINE_PLANE_TAPS(f32, float)
FC_DEFINE_PLANE_TAPS(f64, double)

/* fc_plane_rows4_<t>(out, out_stride, out_width, rows, width, bias, x, kh_taps, kw_taps, dw, w):
 *   out[r * out_stride + f] = bias + sum_{kh, kw} w[kh * kw_taps + kw]
 *                                               * x[(r + kh) * width + kw * dw + f]
 * for r < rows, f < out_width (<= width): fc_plane_taps where the taps are rows of one
 * rectangle (stride 1, no dilation along H), computed four output rows at a time from the
 * input rows they share, each input vector loaded once for every output row that reads it
 * (the flat loop loads it once per tap: bound by loads that mostly split cache lines). The
 * same bits as fc_plane_taps: every output sums its taps in the same order, then adds the
 * bias. The rows go straight to their place in the output (out_stride apart; the flat loop's
 * run of rows as wide as the rectangle's needs a copy to drop the columns past each row's
 * end). A block is two vectors, h apart: h = V, the last block of a row overlapping the
 * one before it; a row narrower than two vectors (28 wide in float32) is one block whose
 * second vector starts h = out_width - V in, overlapping the first. Returns 0 (nothing
 * written) where a row is at most one vector wide: then the four rows' sums are four chains
 * of dependent FMAs, the first and last input rows feeding one of them alone (measured
 * slower than the flat loop on 14x14 planes). */
/* the input row at p (of kernel row index u) into the accumulators of outputs LO..HI */
#define FC_PLANE_ROWS4_TAPS(LO, HI)                                                             \
    for (k = 0; k < kw_taps; k++) {                                                            \
        vec v0, v1;                                                                            \
        memcpy(&v0, p + k * dw, sizeof(vec));                                                  \
        memcpy(&v1, p + k * dw + h, sizeof(vec));                                              \
        FC_KEEP_IN_REGISTER(v0);                                                               \
        FC_KEEP_IN_REGISTER(v1);                                                               \
        for (int m = LO; m <= HI; m++) {                                                       \
            elem s = w[(u - m) * kw_taps + k];                                                 \
            a[m][0] += s * v0;                                                                 \
            a[m][1] += s * v1;                                                                 \
        }                                                                                      \
    }

/* constant indices (a runtime one would keep the accumulators in memory) */
#define FC_PLANE_ROWS4_STORE(M)                                                                 \
    if (M < g)                                                                                 \
        for (int q = 0; q < 2; q++) {                                                          \
            vec o = a[M][q] + bias;                                                            \
            memcpy(out + (r + M) * out_stride + j + q * h, &o, sizeof(o));                     \
        }

/* Four output rows of a 3x3 kernel, every index a constant: the nine weights broadcast into
 * registers of their own once per call (w<kh><kw>), the accumulators named (a<row><half>),
 * each input row's three shifted pairs of vectors loaded once (v<half>_<kw>). The loop
 * above loads a weight for every pair of multiply-adds: bound by its loads on Zen 4 (one
 * 512-bit load a cycle), this one by its multiply-adds. The same sums in the same order. */
#define FC_R3_LOAD(K)                                                                           \
    vec v0_##K, v1_##K;                                                                        \
    memcpy(&v0_##K, p + K * dw, sizeof(vec));                                                 \
    memcpy(&v1_##K, p + K * dw + h, sizeof(vec));                                             \
    FC_KEEP_IN_REGISTER(v0_##K);                                                               \
    FC_KEEP_IN_REGISTER(v1_##K);
/* the input row loaded above is kernel row KH of output row M */
#define FC_R3_ROW(M, KH)                                                                        \
    a##M##0 += w##KH##0 * v0_0; a##M##1 += w##KH##0 * v1_0;                                    \
    a##M##0 += w##KH##1 * v0_1; a##M##1 += w##KH##1 * v1_1;                                    \
    a##M##0 += w##KH##2 * v0_2; a##M##1 += w##KH##2 * v1_2;
/* input row U of the block (rows r + U), read by the output rows it reaches */
#define FC_R3_INPUT(U, ROWS)                                                                    \
    { const elem* p = x + (r + U) * width + j; FC_R3_LOAD(0) FC_R3_LOAD(1) FC_R3_LOAD(2) ROWS }
#define FC_R3_STORE(M)                                                                          \
    { vec o0 = a##M##0 + bias, o1 = a##M##1 + bias;                                            \
      memcpy(out + (r + M) * out_stride + j, &o0, sizeof(o0));                                 \
      memcpy(out + (r + M) * out_stride + j + h, &o1, sizeof(o1)); }
#define FC_R3_WEIGHT(KH, KW)                                                                    \
    vec w##KH##KW = (vec){0} + w[KH * 3 + KW];
#define FC_R3_KEEP(KH)                                                                          \
    FC_KEEP_IN_REGISTER(w##KH##0); FC_KEEP_IN_REGISTER(w##KH##1); FC_KEEP_IN_REGISTER(w##KH##2);

/* fc_plane_rows4_<name>_<t>: rows [0, full) of out (full a multiple of 4) by a block of four
 * rows with constant indices (the 3x3 and 5x5 ones), blocks of two vectors h apart
 * (fc_plane_rows4's): WEIGHTS once per call, KEEP at every block, then INPUTS, the input rows
 * into the sums a<row><half>, which are then stored */
#define FC_DEFINE_PLANE_ROWS4_BLOCKS(NAME, SUFFIX, T, WEIGHTS, KEEP, INPUTS)                    \
static inline void fc_plane_rows4_##NAME##_##SUFFIX(T* out, ptrdiff_t out_stride,               \
        ptrdiff_t out_width, ptrdiff_t full, ptrdiff_t width, T bias, const T* x,               \
        ptrdiff_t dw, const T* w, ptrdiff_t h) {                                                \
    enum { V = FC_DIRECT_LANES_##SUFFIX };                                                     \
    typedef fc_vec_##SUFFIX vec;                                                               \
    typedef T elem;                                                                            \
    WEIGHTS                                                                                    \
    for (ptrdiff_t r = 0; r < full; r += 4) {                                                  \
        for (ptrdiff_t j = 0; j < out_width; j += V + h) {                                     \
            if (j + V + h > out_width) j = out_width - V - h;                                  \
            KEEP                                                                               \
            vec a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0};                                    \
            vec a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};                                    \
            INPUTS                                                                             \
            FC_R3_STORE(0) FC_R3_STORE(1) FC_R3_STORE(2) FC_R3_STORE(3)                        \
        }                                                                                      \
    }                                                                                          \
}

#define FC_DEFINE_PLANE_ROWS4_3X3(SUFFIX, T)                                                    \
FC_DEFINE_PLANE_ROWS4_BLOCKS(3x3, SUFFIX, T,                                                    \
    FC_R3_WEIGHT(0, 0) FC_R3_WEIGHT(0, 1) FC_R3_WEIGHT(0, 2)                                   \
    FC_R3_WEIGHT(1, 0) FC_R3_WEIGHT(1, 1) FC_R3_WEIGHT(1, 2)                                   \
    FC_R3_WEIGHT(2, 0) FC_R3_WEIGHT(2, 1) FC_R3_WEIGHT(2, 2),                                  \
    FC_R3_KEEP(0) FC_R3_KEEP(1) FC_R3_KEEP(2),                                                 \
    FC_R3_INPUT(0, FC_R3_ROW(0, 0))                                                            \
    FC_R3_INPUT(1, FC_R3_ROW(0, 1) FC_R3_ROW(1, 0))                                            \
    FC_R3_INPUT(2, FC_R3_ROW(0, 2) FC_R3_ROW(1, 1) FC_R3_ROW(2, 0))                            \
    FC_R3_INPUT(3, FC_R3_ROW(1, 2) FC_R3_ROW(2, 1) FC_R3_ROW(3, 0))                            \
    FC_R3_INPUT(4, FC_R3_ROW(2, 2) FC_R3_ROW(3, 1))                                            \
    FC_R3_INPUT(5, FC_R3_ROW(3, 2)))

FC_DEFINE_PLANE_ROWS4_3X3(f32, float)
FC_DEFINE_PLANE_ROWS4_3X3(f64, double)

/* Four output rows of a 5x5 kernel, every index a constant, as the 3x3 block above: each
 * input row's five shifted pairs of vectors loaded once (v<half>_<kw>) and added into the
 * output rows it reaches, the weight broadcast at each pair of multiply-adds (25 of them do
 * not fit in registers beside the 8 sums and 10 inputs). The loop below, over a runtime
 * span of rows, ran these at one multiply-add a cycle (a jump table per input row, sums
 * moved between registers; Intel Xeon). Tap kw is added into every output row the input row
 * reaches before tap kw + 1 (FC_R5_TAPS_<n>): up to eight independent chains of
 * multiply-adds side by side, where five taps of one row in a row were two chains (Intel
 * Xeon, one thread, 240 planes of 28x28 in L2: 380 -> 355 ns a plane). Each sum still adds
 * its taps in the same order: the same bits. */
#define FC_R5_LOAD(K) FC_R3_LOAD(K)
/* tap K of kernel row KH into output row M */
#define FC_R5_TAP(K, M, KH)                                                                     \
    { elem s = w[KH * 5 + K]; a##M##0 += s * v0_##K; a##M##1 += s * v1_##K; }
/* tap K for each (output row, kernel row) pair the input row reaches */
#define FC_R5_TAPS_1(K, M0, H0) FC_R5_TAP(K, M0, H0)
#define FC_R5_TAPS_2(K, M0, H0, M1, H1) FC_R5_TAP(K, M0, H0) FC_R5_TAP(K, M1, H1)
#define FC_R5_TAPS_3(K, M0, H0, M1, H1, M2, H2)                                                 \
    FC_R5_TAP(K, M0, H0) FC_R5_TAP(K, M1, H1) FC_R5_TAP(K, M2, H2)
#define FC_R5_TAPS_4(K, M0, H0, M1, H1, M2, H2, M3, H3)                                         \
    FC_R5_TAP(K, M0, H0) FC_R5_TAP(K, M1, H1) FC_R5_TAP(K, M2, H2) FC_R5_TAP(K, M3, H3)
/* input row U of the block, read by N output rows: the pairs (M, KH) */
#define FC_R5_INPUT(U, N, ...)                                                                  \
    { const elem* p = x + (r + U) * width + j;                                                 \
      FC_R5_LOAD(0) FC_R5_LOAD(1) FC_R5_LOAD(2) FC_R5_LOAD(3) FC_R5_LOAD(4)                    \
      FC_R5_TAPS_##N(0, __VA_ARGS__) FC_R5_TAPS_##N(1, __VA_ARGS__)                            \
      FC_R5_TAPS_##N(2, __VA_ARGS__) FC_R5_TAPS_##N(3, __VA_ARGS__)                            \
      FC_R5_TAPS_##N(4, __VA_ARGS__) }

#define FC_DEFINE_PLANE_ROWS4_5X5(SUFFIX, T)                                                    \
FC_DEFINE_PLANE_ROWS4_BLOCKS(5x5, SUFFIX, T, , ,                                                \
    FC_R5_INPUT(0, 1, 0, 0)                                                                    \
    FC_R5_INPUT(1, 2, 0, 1, 1, 0)                                                              \
    FC_R5_INPUT(2, 3, 0, 2, 1, 1, 2, 0)                                                        \
    FC_R5_INPUT(3, 4, 0, 3, 1, 2, 2, 1, 3, 0)                                                  \
    FC_R5_INPUT(4, 4, 0, 4, 1, 3, 2, 2, 3, 1)                                                  \
    FC_R5_INPUT(5, 3, 1, 4, 2, 3, 3, 2)                                                        \
    FC_R5_INPUT(6, 2, 2, 4, 3, 3)                                                              \
    FC_R5_INPUT(7, 1, 3, 4))

FC_DEFINE_PLANE_ROWS4_5X5(f32, float)
FC_DEFINE_PLANE_ROWS4_5X5(f64, double)

/* rows [r, rows) of out, four at a time, by the loop below: always inlined, so that a call
 * with a constant kw_taps (5, 7) unrolls the taps along W, every weight's index a constant
 * (the loop over a runtime count spent a compare and an add on every two multiply-adds) */
#define FC_DEFINE_PLANE_ROWS4_LOOP(SUFFIX, T)                                                   \
static inline __attribute__((always_inline)) void fc_plane_rows4_loop_##SUFFIX(               \
        T* out, ptrdiff_t out_stride, ptrdiff_t out_width, ptrdiff_t r, ptrdiff_t rows,         \
        ptrdiff_t width, T bias, const T* x, ptrdiff_t kh_taps, ptrdiff_t kw_taps,              \
        ptrdiff_t dw, const T* w, ptrdiff_t h) {                                                \
    enum { V = FC_DIRECT_LANES_##SUFFIX };                                                     \
    typedef fc_vec_##SUFFIX vec;                                                               \
    typedef T elem;                                                                            \
    ptrdiff_t j, u, k, g;                                                                      \
    for (; r < rows; r += 4) {                                                                 \
        g = rows - r < 4 ? rows - r : 4;                                                       \
        for (j = 0; j < out_width; j += V + h) {                                               \
            if (j + V + h > out_width) j = out_width - V - h;                                  \
            vec a[4][2] = {{{0}}};                                                             \
            for (u = 0; u < kh_taps + g - 1; u++) {                                            \
                const T* p = x + (r + u) * width + j;                                          \
                ptrdiff_t lo = u - kh_taps + 1 > 0 ? u - kh_taps + 1 : 0;                      \
                ptrdiff_t hi = u < g - 1 ? u : g - 1;                                          \
                FC_ROW_SPAN_SWITCH(lo * 4 + hi, FC_PLANE_ROWS4_TAPS)                           \
            }                                                                                  \
            FC_PLANE_ROWS4_STORE(0) FC_PLANE_ROWS4_STORE(1)                                    \
            FC_PLANE_ROWS4_STORE(2) FC_PLANE_ROWS4_STORE(3)                                    \
        }                                                                                      \
    }                                                                                          \
}

FC_DEFINE_PLANE_ROWS4_LOOP(f32, float)
FC_DEFINE_PLANE_ROWS4_LOOP(f64, double)

#define FC_DEFINE_PLANE_ROWS4(SUFFIX, T)                                                        \
static inline int fc_plane_rows4_##SUFFIX(T* out, ptrdiff_t out_stride, ptrdiff_t out_width,   \
        ptrdiff_t rows, ptrdiff_t width, T bias, const T* x, ptrdiff_t kh_taps,                 \
        ptrdiff_t kw_taps, ptrdiff_t dw, const T* w) {                                          \
    enum { V = FC_DIRECT_LANES_##SUFFIX };                                                     \
    ptrdiff_t r = 0;                                                                           \
    /* the block's second vector: h past its first (overlapping it in a narrow row) */      \
    const ptrdiff_t h = out_width < 2 * V ? out_width - V : V;                                 \
    if (out_width <= V || out_width > width) return 0;                                         \
    if (kh_taps == 3 && kw_taps == 3) {                                                        \
        r = rows / 4 * 4;                                                                      \
        fc_plane_rows4_3x3_##SUFFIX(out, out_stride, out_width, r, width, bias, x, dw, w, h);  \
    } else if (kh_taps == 5 && kw_taps == 5) {                                                 \
        r = rows / 4 * 4;                                                                      \
        fc_plane_rows4_5x5_##SUFFIX(out, out_stride, out_width, r, width, bias, x, dw, w, h);  \
    }                                                                                          \
    if (kw_taps == 5)                                                                          \
        fc_plane_rows4_loop_##SUFFIX(out, out_stride, out_width, r, rows, width, bias, x,      \
                                     kh_taps, 5, dw, w, h);                                    \
    else if (kw_taps == 7)                                                                     \
        fc_plane_rows4_loop_##SUFFIX(out, out_stride, out_width, r, rows, width, bias, x,      \
                                     kh_taps, 7, dw, w, h);                                    \
    else                                                                                       \
        fc_plane_rows4_loop_##SUFFIX(out, out_stride, out_width, r, rows, width, bias, x,      \
                                     kh_taps, kw_taps, dw, w, h);                              \
    return 1;                                                                                  \
}

FC_DEFINE_PLANE_ROWS4(f32, float)
FC_DEFINE_PLANE_ROWS4(f64, double)

#endif /* FASTCONV_DIRECT_ROWS_H */
