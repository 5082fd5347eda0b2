/* Register-blocked inner loop of the direct convolution, written with GCC/Clang vector
 * extensions so it is vectorized whatever the optimizer's cost model thinks: the compiler
 * lowers a 64-byte vector to one AVX-512 register, two AVX2 registers or four SSE registers,
 * so the same source is right for every -march (no run-time dispatch needed).
 *
 * fc_direct_chunk_<t>(out, out_step, channels, bias, taps, xs, x_offset, ws, w_step, kw, dw,
 *                     wide, x_wide, out_wide):
 *   for c < channels, i < VEC, v < (4 if wide else 1):
 *     out[c * out_step + v * out_wide + i] = (bias ? bias[c] : 0)
 *         + sum_{t < taps, k < kw} ws[t][c * w_step + k] * xs[t][x_offset + v * x_wide + k * dw + i]
 * xs[t] points at the input row read by tap row t (a fixed input channel, kd, kh), ws[t] at
 * the kw weights of that row for the first of the `channels` filters. `wide` computes four
 * vectors at once (four independent FMA chains): four consecutive chunks of a row
 * (x_wide = out_wide = VEC) or the same chunk of four consecutive rows.
 */
#ifndef FASTCONV_DIRECT_ROWS_H
#define FASTCONV_DIRECT_ROWS_H
#include <stddef.h>
#include <string.h>

#define FC_DEFINE_DIRECT_CHUNK(SUFFIX, T, VEC)                                                  \
typedef T fc_vec_##SUFFIX __attribute__((vector_size(VEC * sizeof(T))));                       \
static inline fc_vec_##SUFFIX fc_load_##SUFFIX(const T* p) {                                    \
    fc_vec_##SUFFIX v; memcpy(&v, p, sizeof(v)); return v;  /* unaligned load */              \
}                                                                                              \
static inline void fc_store_##SUFFIX(T* p, fc_vec_##SUFFIX v, T b) {                            \
    v += b; memcpy(p, &v, sizeof(v));                                                          \
}                                                                                              \
static inline void fc_direct_chunk_##SUFFIX(T* out, ptrdiff_t out_step, ptrdiff_t channels,     \
        const T* bias, ptrdiff_t taps, const T* const* xs, ptrdiff_t x_offset,                 \
        const T* const* ws, ptrdiff_t w_step, ptrdiff_t kw, ptrdiff_t dw, int wide,            \
        ptrdiff_t x_wide, ptrdiff_t out_wide) {                                                \
    ptrdiff_t t, k, c;                                                                         \
    if (channels == 4 && !wide) {  /* four filters share every input load */                  \
        fc_vec_##SUFFIX a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                \
        for (t = 0; t < taps; t++) {                                                           \
            const T* x = xs[t] + x_offset; const T* w = ws[t];                                 \
            for (k = 0; k < kw; k++) {                                                         \
                fc_vec_##SUFFIX v = fc_load_##SUFFIX(x + k * dw);                              \
                a0 += w[k] * v;                                                                \
                a1 += w[w_step + k] * v;                                                       \
                a2 += w[2 * w_step + k] * v;                                                   \
                a3 += w[3 * w_step + k] * v;                                                   \
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
        if (wide) {  /* four vectors at once: four independent FMA chains */                  \
            fc_vec_##SUFFIX a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                            \
            for (t = 0; t < taps; t++) {                                                       \
                const T* x = xs[t] + x_offset; const T* w = ws[t] + c * w_step;                \
                for (k = 0; k < kw; k++) {                                                     \
                    const T* xk = x + k * dw;                                                  \
                    a0 += w[k] * fc_load_##SUFFIX(xk);                                         \
                    a1 += w[k] * fc_load_##SUFFIX(xk + x_wide);                                \
                    a2 += w[k] * fc_load_##SUFFIX(xk + 2 * x_wide);                            \
                    a3 += w[k] * fc_load_##SUFFIX(xk + 3 * x_wide);                            \
                }                                                                              \
            }                                                                                  \
            fc_store_##SUFFIX(out + c * out_step, a0, b);                                      \
            fc_store_##SUFFIX(out + c * out_step + out_wide, a1, b);                           \
            fc_store_##SUFFIX(out + c * out_step + 2 * out_wide, a2, b);                       \
            fc_store_##SUFFIX(out + c * out_step + 3 * out_wide, a3, b);                       \
        } else {                                                                               \
            /* one chain, taps in the same order as every other path: which path computes  \
               an output depends on the band split (so on the thread count), and a second   \
               chain would round differently (found by tests/test_reliability.py) */        \
            fc_vec_##SUFFIX a0 = {0};                                                          \
            for (t = 0; t < taps; t++) {                                                       \
                const T* x = xs[t] + x_offset; const T* w = ws[t] + c * w_step;                \
                for (k = 0; k < kw; k++)                                                       \
                    a0 += w[k] * fc_load_##SUFFIX(x + k * dw);                                 \
            }                                                                                  \
            fc_store_##SUFFIX(out + c * out_step, a0, b);                                      \
        }                                                                                      \
    }                                                                                          \
}

FC_DEFINE_DIRECT_CHUNK(f32, float, 16)
FC_DEFINE_DIRECT_CHUNK(f64, double, 8)

#endif /* FASTCONV_DIRECT_ROWS_H */
