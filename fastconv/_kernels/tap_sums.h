/* The inner loops of the channels-last depthwise kernels (conv_channels_last.pyx): per-channel
 * sums over a pixel's taps, the channels side by side in memory.
 *
 *     fc_gather_run:      out[i][c]  = b[c] + sum over t < taps of w[t][c] * src[t][i][c]
 *     fc_accumulate_run:  acc[t][c] += sum over i of g[i][c] * src[t][i][c]  for every t
 *
 * over a run of pixels i whose taps lie a fixed step apart (the interior of an output row),
 * or a single pixel.
 *
 * The forward pass and the input gradient are gathers (an output pixel's taps, or the taps
 * that read an input pixel); the weight gradient accumulates. The gather keeps four vectors
 * of channels of two pixels in registers across all taps (each weight load serves both), and
 * fewer channels of four pixels (a run's pixels four at a time), and stores each output once:
 * each sum is a chain of dependent multiply-adds, one per tap, and 32 channels of two pixels
 * were four chains, too few to hide their latency (MobileNetV2's 32-channel 3x3 layer on
 * 112x112, batch 8, Zen 4, 2 threads: 1.85 -> 0.97 ms with eight). The accumulation keeps
 * three taps' sums in registers across the run. The loops written over memory (which the compiler must assume aliases the inputs)
 * reloaded and stored the sums at every tap: about 3x (forward) and 5.5x (weight gradient)
 * slower on 32 channels of 112 x 112 (Zen 3). */
#ifndef FASTCONV_TAP_SUMS_H
#define FASTCONV_TAP_SUMS_H
#include <stddef.h>
#include <string.h>
/* the micro-kernel's vector type and width (FC_VEC_*, fc_gvec_*) */
#include "gemm_microkernel.h"

#define FC_DEFINE_ADD_TO(SUFFIX, T)                                                              \
static inline void fc_add_to_##SUFFIX(T* p, fc_gvec_##SUFFIX v) {                              \
    fc_gvec_##SUFFIX m;                                                                        \
    memcpy(&m, p, sizeof(m));                                                                  \
    m += v;                                                                                    \
    memcpy(p, &m, sizeof(m));                                                                  \
}
FC_DEFINE_ADD_TO(f32, float)
FC_DEFINE_ADD_TO(f64, double)

/* runs of kernels of at most this many taps gather four pixels at a time */
#define FC_TAP_SUMS_MAX_TAPS 64

#define FC_DEFINE_TAP_SUMS(SUFFIX, T)                                                            \
/* out[i * C + c] = b[c] + sum over t of w[t][c] * src[t][i * step + c], for i < 2: two        \
 * pixels a step apart sharing each weight load */                                             \
static inline void fc_gather_pair_##SUFFIX(const T* const* src, ptrdiff_t step,                \
                                           const T* const* w, ptrdiff_t taps, const T* b,      \
                                           T* out, ptrdiff_t C, ptrdiff_t ldo) {               \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    vec zero = {0};                                                                            \
    ptrdiff_t c = 0;                                                                           \
    for (; c + 4 * V <= C; c += 4 * V) {                                                       \
        vec a0 = zero, a1 = zero, a2 = zero, a3 = zero, x0, x1, w0, w1, w2, w3;                \
        if (b) {                                                                               \
            memcpy(&a0, b + c, sizeof(vec)); memcpy(&a1, b + c + V, sizeof(vec));              \
            memcpy(&a2, b + c + 2 * V, sizeof(vec)); memcpy(&a3, b + c + 3 * V, sizeof(vec));  \
        }                                                                                      \
        vec e0 = a0, e1 = a1, e2 = a2, e3 = a3;                                                \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            const T* s = src[t] + c;                                                           \
            const T* k = w[t] + c;                                                             \
            memcpy(&w0, k, sizeof(vec)); memcpy(&w1, k + V, sizeof(vec));                      \
            memcpy(&w2, k + 2 * V, sizeof(vec)); memcpy(&w3, k + 3 * V, sizeof(vec));          \
            memcpy(&x0, s, sizeof(vec)); memcpy(&x1, s + step, sizeof(vec)); a0 += w0 * x0;    \
            e0 += w0 * x1;                                                                     \
            memcpy(&x0, s + V, sizeof(vec)); memcpy(&x1, s + step + V, sizeof(vec));           \
            a1 += w1 * x0; e1 += w1 * x1;                                                      \
            memcpy(&x0, s + 2 * V, sizeof(vec)); memcpy(&x1, s + step + 2 * V, sizeof(vec));   \
            a2 += w2 * x0; e2 += w2 * x1;                                                      \
            memcpy(&x0, s + 3 * V, sizeof(vec)); memcpy(&x1, s + step + 3 * V, sizeof(vec));   \
            a3 += w3 * x0; e3 += w3 * x1;                                                      \
        }                                                                                      \
        memcpy(out + c, &a0, sizeof(vec)); memcpy(out + c + V, &a1, sizeof(vec));              \
        memcpy(out + c + 2 * V, &a2, sizeof(vec)); memcpy(out + c + 3 * V, &a3, sizeof(vec));  \
        memcpy(out + ldo + c, &e0, sizeof(vec)); memcpy(out + ldo + c + V, &e1, sizeof(vec)); \
        memcpy(out + ldo + c + 2 * V, &e2, sizeof(vec));                                       \
        memcpy(out + ldo + c + 3 * V, &e3, sizeof(vec));                                       \
    }                                                                                          \
    for (; c + V <= C; c += V) {                                                               \
        vec a0 = zero, x0, x1, w0;                                                             \
        if (b) memcpy(&a0, b + c, sizeof(vec));                                                \
        vec e0 = a0;                                                                           \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            memcpy(&w0, w[t] + c, sizeof(vec));                                                \
            memcpy(&x0, src[t] + c, sizeof(vec)); memcpy(&x1, src[t] + step + c, sizeof(vec)); \
            a0 += w0 * x0; e0 += w0 * x1;                                                      \
        }                                                                                      \
        memcpy(out + c, &a0, sizeof(vec)); memcpy(out + ldo + c, &e0, sizeof(vec));            \
    }                                                                                          \
    for (; c < C; c++) {                                                                       \
        T a = b ? b[c] : 0, e = a;                                                             \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            a += w[t][c] * src[t][c];                                                          \
            e += w[t][c] * src[t][step + c];                                                   \
        }                                                                                      \
        out[c] = a;                                                                            \
        out[ldo + c] = e;                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* out[c] = b[c] + sum over t of w[t][c] * src[t][c]: one pixel */                             \
static inline void fc_gather_taps_##SUFFIX(const T* const* src, const T* const* w,             \
                                           ptrdiff_t taps, const T* b, T* out, ptrdiff_t C) {  \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    vec zero = {0};                                                                            \
    ptrdiff_t c = 0;                                                                           \
    for (; c + 4 * V <= C; c += 4 * V) {                                                       \
        vec a0 = zero, a1 = zero, a2 = zero, a3 = zero, x0, x1, x2, x3, w0, w1, w2, w3;        \
        if (b) {                                                                               \
            memcpy(&a0, b + c, sizeof(vec)); memcpy(&a1, b + c + V, sizeof(vec));              \
            memcpy(&a2, b + c + 2 * V, sizeof(vec)); memcpy(&a3, b + c + 3 * V, sizeof(vec));  \
        }                                                                                      \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            const T* s = src[t] + c;                                                           \
            const T* k = w[t] + c;                                                             \
            memcpy(&x0, s, sizeof(vec)); memcpy(&x1, s + V, sizeof(vec));                      \
            memcpy(&x2, s + 2 * V, sizeof(vec)); memcpy(&x3, s + 3 * V, sizeof(vec));          \
            memcpy(&w0, k, sizeof(vec)); memcpy(&w1, k + V, sizeof(vec));                      \
            memcpy(&w2, k + 2 * V, sizeof(vec)); memcpy(&w3, k + 3 * V, sizeof(vec));          \
            a0 += w0 * x0; a1 += w1 * x1; a2 += w2 * x2; a3 += w3 * x3;                        \
        }                                                                                      \
        memcpy(out + c, &a0, sizeof(vec)); memcpy(out + c + V, &a1, sizeof(vec));              \
        memcpy(out + c + 2 * V, &a2, sizeof(vec)); memcpy(out + c + 3 * V, &a3, sizeof(vec));  \
    }                                                                                          \
    for (; c + V <= C; c += V) {                                                               \
        vec a0 = zero, x0, w0;                                                                 \
        if (b) memcpy(&a0, b + c, sizeof(vec));                                                \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            memcpy(&x0, src[t] + c, sizeof(vec));                                              \
            memcpy(&w0, w[t] + c, sizeof(vec));                                                \
            a0 += w0 * x0;                                                                     \
        }                                                                                      \
        memcpy(out + c, &a0, sizeof(vec));                                                     \
    }                                                                                          \
    for (; c < C; c++) {                                                                       \
        T a = b ? b[c] : 0;                                                                    \
        for (ptrdiff_t t = 0; t < taps; t++) a += w[t][c] * src[t][c];                         \
        out[c] = a;                                                                            \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* out[i * C + c] = b[c] + sum over t of w[t][c] * src[t][i * step + c], for i < 4, the      \
 * channels below 4V of the pair's blocks as two pairs, the rest (a layer of 32 channels is   \
 * two vectors) as 2 vectors x 4 pixels and 1 x 4: eight or four sums in flight where a pair \
 * had two or four, each a chain of dependent multiply-adds one per tap */                    \
static inline void fc_gather_quad_##SUFFIX(const T* const* src, ptrdiff_t step,                \
                                           const T* const* w, ptrdiff_t taps, const T* b,      \
                                           T* out, ptrdiff_t C) {                              \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    vec zero = {0};                                                                            \
    ptrdiff_t wide = C / (4 * V) * (4 * V), c = wide;                                          \
    if (wide) {                                                                                \
        const T* shifted[FC_TAP_SUMS_MAX_TAPS];                                                \
        fc_gather_pair_##SUFFIX(src, step, w, taps, b, out, wide, C);                          \
        for (ptrdiff_t t = 0; t < taps; t++) shifted[t] = src[t] + 2 * step;                   \
        fc_gather_pair_##SUFFIX(shifted, step, w, taps, b, out + 2 * C, wide, C);              \
    }                                                                                          \
    for (; c + 2 * V <= C; c += 2 * V) {                                                       \
        vec a0 = zero, a1 = zero, w0, w1, x;                                                   \
        if (b) { memcpy(&a0, b + c, sizeof(vec)); memcpy(&a1, b + c + V, sizeof(vec)); }       \
        vec e0 = a0, e1 = a1, f0 = a0, f1 = a1, h0 = a0, h1 = a1;                              \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            const T* s = src[t] + c;                                                           \
            memcpy(&w0, w[t] + c, sizeof(vec)); memcpy(&w1, w[t] + c + V, sizeof(vec));        \
            memcpy(&x, s, sizeof(vec)); a0 += w0 * x;                                          \
            memcpy(&x, s + V, sizeof(vec)); a1 += w1 * x;                                      \
            memcpy(&x, s + step, sizeof(vec)); e0 += w0 * x;                                   \
            memcpy(&x, s + step + V, sizeof(vec)); e1 += w1 * x;                               \
            memcpy(&x, s + 2 * step, sizeof(vec)); f0 += w0 * x;                               \
            memcpy(&x, s + 2 * step + V, sizeof(vec)); f1 += w1 * x;                           \
            memcpy(&x, s + 3 * step, sizeof(vec)); h0 += w0 * x;                               \
            memcpy(&x, s + 3 * step + V, sizeof(vec)); h1 += w1 * x;                           \
        }                                                                                      \
        memcpy(out + c, &a0, sizeof(vec)); memcpy(out + c + V, &a1, sizeof(vec));              \
        memcpy(out + C + c, &e0, sizeof(vec)); memcpy(out + C + c + V, &e1, sizeof(vec));      \
        memcpy(out + 2 * C + c, &f0, sizeof(vec)); memcpy(out + 2 * C + c + V, &f1, sizeof(vec)); \
        memcpy(out + 3 * C + c, &h0, sizeof(vec)); memcpy(out + 3 * C + c + V, &h1, sizeof(vec)); \
    }                                                                                          \
    for (; c + V <= C; c += V) {                                                               \
        vec a0 = zero, w0, x;                                                                  \
        if (b) memcpy(&a0, b + c, sizeof(vec));                                                \
        vec e0 = a0, f0 = a0, h0 = a0;                                                         \
        for (ptrdiff_t t = 0; t < taps; t++) {                                                 \
            const T* s = src[t] + c;                                                           \
            memcpy(&w0, w[t] + c, sizeof(vec));                                                \
            memcpy(&x, s, sizeof(vec)); a0 += w0 * x;                                          \
            memcpy(&x, s + step, sizeof(vec)); e0 += w0 * x;                                   \
            memcpy(&x, s + 2 * step, sizeof(vec)); f0 += w0 * x;                               \
            memcpy(&x, s + 3 * step, sizeof(vec)); h0 += w0 * x;                               \
        }                                                                                      \
        memcpy(out + c, &a0, sizeof(vec)); memcpy(out + C + c, &e0, sizeof(vec));              \
        memcpy(out + 2 * C + c, &f0, sizeof(vec)); memcpy(out + 3 * C + c, &h0, sizeof(vec));  \
    }                                                                                          \
    for (; c < C; c++)                                                                         \
        for (ptrdiff_t i = 0; i < 4; i++) {                                                    \
            T a = b ? b[c] : 0;                                                                \
            for (ptrdiff_t t = 0; t < taps; t++) a += w[t][c] * src[t][i * step + c];          \
            out[i * C + c] = a;                                                                \
        }                                                                                      \
}                                                                                              \
                                                                                               \
/* the gathers of `count` pixels whose taps lie `step` apart in src (a run of interior         \
 * output pixels along a row), written to out[i * C ...] */                                    \
static inline void fc_gather_run_##SUFFIX(const T** src, ptrdiff_t step, ptrdiff_t count,      \
                                          const T* const* w, ptrdiff_t taps, const T* b,       \
                                          T* out, ptrdiff_t C) {                               \
    ptrdiff_t i = 0;                                                                           \
    if (taps <= FC_TAP_SUMS_MAX_TAPS)                                                          \
        for (; i + 4 <= count; i += 4) {                                                       \
            fc_gather_quad_##SUFFIX(src, step, w, taps, b, out + i * C, C);                    \
            for (ptrdiff_t t = 0; t < taps; t++) src[t] += 4 * step;                           \
        }                                                                                      \
    for (; i + 2 <= count; i += 2) {                                                           \
        fc_gather_pair_##SUFFIX(src, step, w, taps, b, out + i * C, C, C);                     \
        for (ptrdiff_t t = 0; t < taps; t++) src[t] += 2 * step;                               \
    }                                                                                          \
    if (i < count) fc_gather_taps_##SUFFIX(src, w, taps, b, out + i * C, C);                   \
}                                                                                              \
                                                                                               \
/* acc[t][c] += sum over i < count of g[i * C + c] * src[t][i * step + c] for taps t < n,     \
 * n <= 3 (a row of a 3x3 kernel): the sums of 2V channels of each tap stay in registers      \
 * while a run of pixels passes */                                                             \
static inline void fc_accumulate_taps3_##SUFFIX(const T* const* src, ptrdiff_t step,           \
                                                ptrdiff_t count, T* const* acc, ptrdiff_t n,   \
                                                const T* g, ptrdiff_t C) {                     \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    const T* s0 = src[0];                                                                      \
    const T* s1 = n > 1 ? src[1] : src[0];                                                     \
    const T* s2 = n > 2 ? src[2] : src[0];                                                     \
    T* r0 = acc[0];                                                                            \
    T* r1 = n > 1 ? acc[1] : acc[0];                                                           \
    T* r2 = n > 2 ? acc[2] : acc[0];                                                           \
    vec zero = {0};                                                                            \
    ptrdiff_t c = 0;                                                                           \
    for (; c + 2 * V <= C; c += 2 * V) {                                                       \
        vec a00 = zero, a01 = zero, a10 = zero, a11 = zero, a20 = zero, a21 = zero;            \
        vec g0, g1, x0, x1;                                                                    \
        for (ptrdiff_t i = 0; i < count; i++) {                                                \
            ptrdiff_t o = i * step + c;                                                        \
            memcpy(&g0, g + i * C + c, sizeof(vec)); memcpy(&g1, g + i * C + c + V, sizeof(vec)); \
            memcpy(&x0, s0 + o, sizeof(vec)); memcpy(&x1, s0 + o + V, sizeof(vec));            \
            a00 += g0 * x0; a01 += g1 * x1;                                                    \
            memcpy(&x0, s1 + o, sizeof(vec)); memcpy(&x1, s1 + o + V, sizeof(vec));            \
            a10 += g0 * x0; a11 += g1 * x1;                                                    \
            memcpy(&x0, s2 + o, sizeof(vec)); memcpy(&x1, s2 + o + V, sizeof(vec));            \
            a20 += g0 * x0; a21 += g1 * x1;                                                    \
        }                                                                                      \
        fc_add_to_##SUFFIX(r0 + c, a00); fc_add_to_##SUFFIX(r0 + c + V, a01);                  \
        if (n > 1) { fc_add_to_##SUFFIX(r1 + c, a10); fc_add_to_##SUFFIX(r1 + c + V, a11); }   \
        if (n > 2) { fc_add_to_##SUFFIX(r2 + c, a20); fc_add_to_##SUFFIX(r2 + c + V, a21); }   \
    }                                                                                          \
    for (; c + V <= C; c += V) {                                                               \
        vec a0 = zero, a1 = zero, a2 = zero, g0, x0;                                           \
        for (ptrdiff_t i = 0; i < count; i++) {                                                \
            ptrdiff_t o = i * step + c;                                                        \
            memcpy(&g0, g + i * C + c, sizeof(vec));                                           \
            memcpy(&x0, s0 + o, sizeof(vec)); a0 += g0 * x0;                                   \
            memcpy(&x0, s1 + o, sizeof(vec)); a1 += g0 * x0;                                   \
            memcpy(&x0, s2 + o, sizeof(vec)); a2 += g0 * x0;                                   \
        }                                                                                      \
        fc_add_to_##SUFFIX(r0 + c, a0);                                                        \
        if (n > 1) fc_add_to_##SUFFIX(r1 + c, a1);                                             \
        if (n > 2) fc_add_to_##SUFFIX(r2 + c, a2);                                             \
    }                                                                                          \
    for (; c < C; c++)                                                                         \
        for (ptrdiff_t t = 0; t < n; t++) {                                                    \
            T a = 0;                                                                           \
            for (ptrdiff_t i = 0; i < count; i++) a += g[i * C + c] * src[t][i * step + c];    \
            acc[t][c] += a;                                                                    \
        }                                                                                      \
}                                                                                              \
                                                                                               \
/* acc[t][c] += sum over i < count of g[i * C + c] * src[t][i * step + c], every t < taps: a   \
 * run of pixels (one, or the interior of an output row) into a depthwise weight gradient */   \
static inline void fc_accumulate_run_##SUFFIX(const T* const* src, ptrdiff_t step,             \
                                              ptrdiff_t count, T* const* acc, ptrdiff_t taps,  \
                                              const T* g, ptrdiff_t C) {                       \
    for (ptrdiff_t t = 0; t < taps; t += 3)                                                    \
        fc_accumulate_taps3_##SUFFIX(src + t, step, count, acc + t,                            \
                                     taps - t < 3 ? taps - t : 3, g, C);                       \
}                                                                                              \

FC_DEFINE_TAP_SUMS(f32, float)
FC_DEFINE_TAP_SUMS(f64, double)

/* Stride 1, dilation 1, a kernel KW wide: P output pixels of a run at a time,
 * each input vector of a kernel row loaded once and added into the KW pixels that read it
 * (the gathers load it once per tap: KW times). src[r * KW + kw] is the first pixel's tap
 * (r, kw) for the nrows kernel rows inside the input, w[r * KW + kw] its weights. The sums
 * are added in the gathers' order (rows, then taps along a row): the same results. 3x3,
 * batch 8, Zen 4, 2 threads, ms, gathers -> slides: 576 channels on 14x14 0.22-0.30 -> 0.16
 * (PyTorch 0.17), 192 on 28x28 0.27-0.36 -> 0.19 (0.20), at batch 32 3.0 -> 2.0 (2.4). */
#define FC_DEFINE_SLIDE(SUFFIX, T, KW, P)                                                       \
static inline void fc_slide##KW##x##P##_##SUFFIX(const T* const* src, ptrdiff_t nrows,         \
                                                 const T* const* w, const T* b, T* out,        \
                                                 ptrdiff_t C) {                                \
    enum { V = FC_VEC_##SUFFIX, J = P + KW - 1 };                                              \
    typedef fc_gvec_##SUFFIX vec;                                                              \
    ptrdiff_t c = 0, r, j, k, p;                                                               \
    for (; c + V <= C; c += V) {                                                               \
        vec acc[P], start = {0};                                                               \
        if (b) memcpy(&start, b + c, sizeof(vec));                                             \
        FC_UNROLL for (p = 0; p < P; p++) acc[p] = start;                                      \
        for (r = 0; r < nrows; r++) {                                                          \
            const T* row = src[r * KW] + c;                                                    \
            vec wk[KW];                                                                        \
            FC_UNROLL for (k = 0; k < KW; k++) memcpy(&wk[k], w[r * KW + k] + c, sizeof(vec)); \
            FC_UNROLL for (j = 0; j < J; j++) {                                                \
                vec x;                                                                         \
                memcpy(&x, row + j * C, sizeof(vec));                                          \
                FC_KEEP_IN_REGISTER(x);     /* one load, not one per multiply-add */           \
                FC_UNROLL for (k = 0; k < KW; k++)                                             \
                    if (j - k >= 0 && j - k < P) acc[j - k] += wk[k] * x;                      \
            }                                                                                  \
        }                                                                                      \
        FC_UNROLL for (p = 0; p < P; p++) memcpy(out + p * C + c, &acc[p], sizeof(vec));       \
    }                                                                                          \
    for (; c < C; c++)                                                                         \
        for (p = 0; p < P; p++) {                                                              \
            T a = b ? b[c] : 0;                                                                \
            for (r = 0; r < nrows; r++)                                                        \
                for (k = 0; k < KW; k++) a += w[r * KW + k][c] * src[r * KW][(p + k) * C + c]; \
            out[p * C + c] = a;                                                                \
        }                                                                                      \
}
FC_DEFINE_SLIDE(f32, float, 3, 8)
FC_DEFINE_SLIDE(f64, double, 3, 8)
FC_DEFINE_SLIDE(f32, float, 5, 8)
FC_DEFINE_SLIDE(f64, double, 5, 8)
FC_DEFINE_SLIDE(f32, float, 3, 4)
FC_DEFINE_SLIDE(f64, double, 3, 4)
FC_DEFINE_SLIDE(f32, float, 5, 4)
FC_DEFINE_SLIDE(f64, double, 5, 4)

/* fc_gather_run for a run whose taps are whole kernel rows KW wide, `dilation` apart, the
 * pixels `step` apart: stride 1 and dilation 1 with KW 3 or 5 slide over the run 8 pixels
 * at a time, then 4, the rest (and every other geometry) gathers */
#define FC_SLIDE_RUN(SUFFIX, P)                                                                \
    for (; i + P <= count; i += P) {                                                           \
        if (KW == 3)                                                                           \
            fc_slide3x##P##_##SUFFIX(src, taps / KW, w, b, out + i * C, C);                    \
        else                                                                                   \
            fc_slide5x##P##_##SUFFIX(src, taps / KW, w, b, out + i * C, C);                    \
        for (ptrdiff_t t = 0; t < taps; t++) src[t] += P * step;                               \
    }
#define FC_DEFINE_GATHER_ROWS(SUFFIX, T)                                                        \
static inline void fc_gather_rows_##SUFFIX(const T** src, ptrdiff_t step, ptrdiff_t count,     \
                                           const T* const* w, ptrdiff_t taps, const T* b,      \
                                           T* out, ptrdiff_t C, ptrdiff_t KW,                  \
                                           ptrdiff_t dilation) {                               \
    ptrdiff_t i = 0;                                                                           \
    if (step == C && dilation == 1 && (KW == 3 || KW == 5) && taps % KW == 0) {                \
        FC_SLIDE_RUN(SUFFIX, 8)                                                                \
        FC_SLIDE_RUN(SUFFIX, 4)                                                                \
    }                                                                                          \
    if (i < count) fc_gather_run_##SUFFIX(src, step, count - i, w, taps, b, out + i * C, C);   \
}
FC_DEFINE_GATHER_ROWS(f32, float)
FC_DEFINE_GATHER_ROWS(f64, double)

#endif
