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
#if defined(__AVX2__) || defined(__AVX512F__)
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

/* One row of a linear (two-tap) resampling with per-output tables:
 *     out[i] = w0[i] * r[s0[i]] + w1[i] * r[s1[i]]      (i < n; the second product
 *                                                        rounded, the first fused into the
 *                                                        sum: GCC's contraction of the scalar
 *                                                        loop, so both give the same bits)
 * for tables where the V outputs of each block b read inputs within [base[b], base[b] + 2V)
 * (rel0 = s0 - base, rel1 = s1 - base as 32-bit lanes, padded to whole blocks): the block's
 * inputs are two vector loads (masked at the row's end, `len` inputs) and a two-source permute
 * puts each output's pair in place. A vector gather does the same but ran slower than the
 * scalar loop on Zen 4; the scalar loop through the tables took over half of bilinear x2
 * upsampling. base[b] < 0 marks a block whose inputs spread wider (downsampling): scalar. */
#define FC_LINEAR_ROW_SCALAR(T)                                                                \
    for (ptrdiff_t i = i0; i < i1; i++) out[i] = w0[i] * r[s0[i]] + w1[i] * r[s1[i]];

static inline void fc_linear_row_f32(float* out, const float* r, ptrdiff_t len,
                                     const int64_t* s0, const int64_t* s1, const float* w0,
                                     const float* w1, const int32_t* base, const int32_t* rel0,
                                     const int32_t* rel1, ptrdiff_t n) {
#if defined(__AVX512F__)
    enum { V = 16 };
    for (ptrdiff_t b = 0; b * V < n; b++) {
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;
        if (base[b] < 0) { FC_LINEAR_ROW_SCALAR(float) continue; }
        const float* p = r + base[b];
        ptrdiff_t avail = len - base[b];
        __mmask16 m_lo = avail >= V ? 0xFFFF : (__mmask16)((1u << avail) - 1);
        __mmask16 m_hi = avail >= 2 * V ? 0xFFFF
                       : avail <= V ? 0 : (__mmask16)((1u << (avail - V)) - 1);
        __m512 lo = _mm512_maskz_loadu_ps(m_lo, p), hi = _mm512_maskz_loadu_ps(m_hi, p + V);
        __m512 a = _mm512_permutex2var_ps(lo, _mm512_loadu_si512(rel0 + i0), hi);
        __m512 c = _mm512_permutex2var_ps(lo, _mm512_loadu_si512(rel1 + i0), hi);
        __mmask16 m_out = i1 - i0 == V ? 0xFFFF : (__mmask16)((1u << (i1 - i0)) - 1);
        __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m_out, w0 + i0), a,
                                   _mm512_mul_ps(_mm512_maskz_loadu_ps(m_out, w1 + i0), c));
        _mm512_mask_storeu_ps(out + i0, m_out, v);
    }
#else
    (void)len; (void)base; (void)rel0; (void)rel1;
    ptrdiff_t i0 = 0, i1 = n;
    FC_LINEAR_ROW_SCALAR(float)
#endif
}

static inline void fc_linear_row_f64(double* out, const double* r, ptrdiff_t len,
                                     const int64_t* s0, const int64_t* s1, const double* w0,
                                     const double* w1, const int32_t* base,
                                     const int32_t* rel0, const int32_t* rel1, ptrdiff_t n) {
#if defined(__AVX512F__)
    enum { V = 8 };
    for (ptrdiff_t b = 0; b * V < n; b++) {
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;
        if (base[b] < 0) { FC_LINEAR_ROW_SCALAR(double) continue; }
        const double* p = r + base[b];
        ptrdiff_t avail = len - base[b];
        __mmask8 m_lo = avail >= V ? 0xFF : (__mmask8)((1u << avail) - 1);
        __mmask8 m_hi = avail >= 2 * V ? 0xFF
                      : avail <= V ? 0 : (__mmask8)((1u << (avail - V)) - 1);
        __m512d lo = _mm512_maskz_loadu_pd(m_lo, p), hi = _mm512_maskz_loadu_pd(m_hi, p + V);
        __m512i i_a = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(rel0 + i0)));
        __m512i i_c = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(rel1 + i0)));
        __m512d a = _mm512_permutex2var_pd(lo, i_a, hi);
        __m512d c = _mm512_permutex2var_pd(lo, i_c, hi);
        __mmask8 m_out = i1 - i0 == V ? 0xFF : (__mmask8)((1u << (i1 - i0)) - 1);
        __m512d v = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(m_out, w0 + i0), a,
                                    _mm512_mul_pd(_mm512_maskz_loadu_pd(m_out, w1 + i0), c));
        _mm512_mask_storeu_pd(out + i0, m_out, v);
    }
#else
    (void)len; (void)base; (void)rel0; (void)rel1;
    ptrdiff_t i0 = 0, i1 = n;
    FC_LINEAR_ROW_SCALAR(double)
#endif
}

/* fc_gather_row_<t> for tables whose blocks of V outputs each read values within
 * [base[b], base[b] + 3V) (every block's first value `base`, then each entry's offset from it
 * in rel[f * n_pad + i], -1 for a padding entry): the block's values are three vector loads
 * (masked past `len` values), and two permutes and a blend put each entry's value in its lane,
 * zero for padding (what the gather reads at the table's padding position). The same
 * products and sums in the same order as fc_gather_row: the same bits. base[b] < 0 marks a
 * block that reads wider: fc_gather_row's gathers for it. AVX-512 only (else the gather). */
static inline void fc_window_row_f32(float* out, const float* values, ptrdiff_t len,
                                     const int32_t* src, const float* weight,
                                     const int32_t* base, const int32_t* rel, ptrdiff_t n_pad,
                                     ptrdiff_t n, ptrdiff_t fan_in) {
#if defined(__AVX512F__)
    enum { V = 16 };
    const __m512i zero = _mm512_setzero_si512(), two_v = _mm512_set1_epi32(2 * V);
    for (ptrdiff_t b = 0; b * V < n; b++) {
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;
        if (base[b] < 0) {
            for (ptrdiff_t i = i0; i < i1; i++) {
                float sum = weight[i] * values[src[i]];
                for (ptrdiff_t f = 1; f < fan_in; f++)
                    sum += weight[f * n + i] * values[src[f * n + i]];
                out[i] = sum;
            }
            continue;
        }
        const float* p = values + base[b];
        ptrdiff_t avail = len - base[b];
        __m512 win[3];
        for (int q = 0; q < 3; q++) {
            ptrdiff_t k = avail - q * V;
            __mmask16 m = k >= V ? 0xFFFF : k <= 0 ? 0 : (__mmask16)((1u << k) - 1);
            win[q] = _mm512_maskz_loadu_ps(m, p + q * V);
        }
        __mmask16 m_out = i1 - i0 == V ? 0xFFFF : (__mmask16)((1u << (i1 - i0)) - 1);
        __m512 sum = _mm512_setzero_ps();
        for (ptrdiff_t f = 0; f < fan_in; f++) {
            __m512i idx = _mm512_loadu_si512(rel + f * n_pad + i0);
            __mmask16 valid = _mm512_cmpge_epi32_mask(idx, zero);
            __mmask16 third = _mm512_cmpge_epi32_mask(idx, two_v);
            __m512 v = _mm512_mask_blend_ps(third, _mm512_permutex2var_ps(win[0], idx, win[1]),
                                            _mm512_permutexvar_ps(idx, win[2]));
            v = _mm512_maskz_mov_ps(valid, v);
            __m512 w = _mm512_maskz_loadu_ps(m_out, weight + f * n + i0);
            sum = f == 0 ? _mm512_mul_ps(w, v) : _mm512_fmadd_ps(w, v, sum);
        }
        _mm512_mask_storeu_ps(out + i0, m_out, sum);
    }
#else
    (void)len; (void)base; (void)rel; (void)n_pad;
    fc_gather_row_f32(out, values, src, weight, n, fan_in);
#endif
}

static inline void fc_window_row_f64(double* out, const double* values, ptrdiff_t len,
                                     const int32_t* src, const double* weight,
                                     const int32_t* base, const int32_t* rel, ptrdiff_t n_pad,
                                     ptrdiff_t n, ptrdiff_t fan_in) {
#if defined(__AVX512F__)
    enum { V = 8 };
    const __m512i zero = _mm512_setzero_si512(), two_v = _mm512_set1_epi64(2 * V);
    for (ptrdiff_t b = 0; b * V < n; b++) {
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;
        if (base[b] < 0) {
            for (ptrdiff_t i = i0; i < i1; i++) {
                double sum = weight[i] * values[src[i]];
                for (ptrdiff_t f = 1; f < fan_in; f++)
                    sum += weight[f * n + i] * values[src[f * n + i]];
                out[i] = sum;
            }
            continue;
        }
        const double* p = values + base[b];
        ptrdiff_t avail = len - base[b];
        __m512d win[3];
        for (int q = 0; q < 3; q++) {
            ptrdiff_t k = avail - q * V;
            __mmask8 m = k >= V ? 0xFF : k <= 0 ? 0 : (__mmask8)((1u << k) - 1);
            win[q] = _mm512_maskz_loadu_pd(m, p + q * V);
        }
        __mmask8 m_out = i1 - i0 == V ? 0xFF : (__mmask8)((1u << (i1 - i0)) - 1);
        __m512d sum = _mm512_setzero_pd();
        for (ptrdiff_t f = 0; f < fan_in; f++) {
            __m512i idx = _mm512_cvtepi32_epi64(
                _mm256_loadu_si256((const __m256i*)(rel + f * n_pad + i0)));
            __mmask8 valid = _mm512_cmpge_epi64_mask(idx, zero);
            __mmask8 third = _mm512_cmpge_epi64_mask(idx, two_v);
            __m512d v = _mm512_mask_blend_pd(third,
                                             _mm512_permutex2var_pd(win[0], idx, win[1]),
                                             _mm512_permutexvar_pd(idx, win[2]));
            v = _mm512_maskz_mov_pd(valid, v);
            __m512d w = _mm512_maskz_loadu_pd(m_out, weight + f * n + i0);
            sum = f == 0 ? _mm512_mul_pd(w, v) : _mm512_fmadd_pd(w, v, sum);
        }
        _mm512_mask_storeu_pd(out + i0, m_out, sum);
    }
#else
    (void)len; (void)base; (void)rel; (void)n_pad;
    fc_gather_row_f64(out, values, src, weight, n, fan_in);
#endif
}

/* Lanes of a block of fc_linear_row_<t>: 16 / 8 with AVX-512, else 1 (the scalar loop). */
#if defined(__AVX512F__)
enum { FC_LINEAR_LANES_f32 = 16, FC_LINEAR_LANES_f64 = 8 };
#else
enum { FC_LINEAR_LANES_f32 = 1, FC_LINEAR_LANES_f64 = 1 };
#endif

#endif /* FASTCONV_GATHER_ROWS_H */
