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
 * (rel0 = s0 - base, rel1 = s1 - base as 32-bit lanes, padded to whole blocks; resample.pyx's
 * block_tables): the block's inputs are two vector loads (masked at the row's end, `len`
 * inputs) and a two-source permute puts each output's pair in place. A vector gather does the
 * same but ran slower than the scalar loop on Zen 4; the scalar loop through the tables took
 * over half of bilinear x2 upsampling. base[b] < 0 marks a block whose inputs spread wider
 * (downsampling): scalar.
 *
 * fc_nearest_row_<t>: the one-tap form, out[i] = r[s0[i]], the values moved by the permute
 * alone (no arithmetic: -0.0 and NaN payloads survive). The scalar loop through the table was
 * a load of the index, a load and a store per output: nearest x2 upsampling at 62-68% of the
 * copy bandwidth (Intel Xeon), where linear, with twice the work, reached 90-97%.
 *
 * fc_window_row_<t>: fc_gather_row_<t> for tables whose blocks of V outputs each read values
 * within [base[b], base[b] + 3V) (every block's first value `base`, then each entry's offset
 * from it in rel[f * n_pad + i], -1 for a padding entry; block_tables again): the block's
 * values are three vector loads (masked past `len` values), and two permutes and a blend put
 * each entry's value in its lane, zero for padding (what the gather reads at the table's
 * padding position). The same products and sums in the same order as fc_gather_row: the same
 * bits. base[b] < 0 marks a block that reads wider: a scalar loop for it (the same sums; the
 * gathers ran slower). AVX-512 only (elsewhere the scalar loop and fc_gather_row). One body
 * each for float and double, over the per-type vector helpers below. */
#define FC_LINEAR_ROW_SCALAR(T)                                                                \
    for (ptrdiff_t i = i0; i < i1; i++) out[i] = w0[i] * r[s0[i]] + w1[i] * r[s1[i]];

#define FC_NEAREST_ROW_SCALAR                                                                  \
    for (ptrdiff_t i = i0; i < i1; i++) out[i] = r[s0[i]];

#define FC_WINDOW_ROW_SCALAR(T)                                                                \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                      \
        T sum = weight[i] * values[src[i]];                                                    \
        for (ptrdiff_t f = 1; f < fan_in; f++)                                                 \
            sum += weight[f * n + i] * values[src[f * n + i]];                                 \
        out[i] = sum;                                                                          \
    }

#if defined(__AVX512F__)
/* lanes of a block (1 without AVX-512: no blocks, the scalar loop or the gather) */
enum { FC_PERMUTE_LANES_f32 = 16, FC_PERMUTE_LANES_f64 = 8 };
typedef __m512 fc_pvec_f32;
typedef __m512d fc_pvec_f64;
typedef __mmask16 fc_pmask_f32;
typedef __mmask8 fc_pmask_f64;
/* the first k lanes */
static inline __mmask16 fc_pfirst_f32(ptrdiff_t k) {
    return k >= 16 ? 0xFFFF : k <= 0 ? 0 : (__mmask16)((1u << k) - 1);
}
static inline __mmask8 fc_pfirst_f64(ptrdiff_t k) {
    return k >= 8 ? 0xFF : k <= 0 ? 0 : (__mmask8)((1u << k) - 1);
}
static inline __m512 fc_pload_f32(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512d fc_pload_f64(__mmask8 m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
static inline void fc_pstore_f32(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
static inline void fc_pstore_f64(double* p, __mmask8 m, __m512d v) { _mm512_mask_storeu_pd(p, m, v); }
static inline __m512 fc_pmul_f32(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
static inline __m512d fc_pmul_f64(__m512d a, __m512d b) { return _mm512_mul_pd(a, b); }
static inline __m512 fc_pfma_f32(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline __m512d fc_pfma_f64(__m512d a, __m512d b, __m512d c) { return _mm512_fmadd_pd(a, b, c); }
/* a block's offsets, one lane each */
static inline __m512i fc_pindex_f32(const int32_t* rel) { return _mm512_loadu_si512(rel); }
static inline __m512i fc_pindex_f64(const int32_t* rel) {
    return _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)rel));
}
/* lane l: lo:hi's value idx[l] (< 2V) */
static inline __m512 fc_ppick2_f32(__m512 lo, __m512i idx, __m512 hi) {
    return _mm512_permutex2var_ps(lo, idx, hi);
}
static inline __m512d fc_ppick2_f64(__m512d lo, __m512i idx, __m512d hi) {
    return _mm512_permutex2var_pd(lo, idx, hi);
}
/* lane l: win[0..2]'s value idx[l] (< 3V), zero where idx[l] < 0 */
static inline __m512 fc_ppick3_f32(const __m512* win, __m512i idx) {
    __mmask16 valid = _mm512_cmpge_epi32_mask(idx, _mm512_setzero_si512());
    __mmask16 third = _mm512_cmpge_epi32_mask(idx, _mm512_set1_epi32(32));
    return _mm512_maskz_mov_ps(valid, _mm512_mask_blend_ps(
        third, _mm512_permutex2var_ps(win[0], idx, win[1]), _mm512_permutexvar_ps(idx, win[2])));
}
static inline __m512d fc_ppick3_f64(const __m512d* win, __m512i idx) {
    __mmask8 valid = _mm512_cmpge_epi64_mask(idx, _mm512_setzero_si512());
    __mmask8 third = _mm512_cmpge_epi64_mask(idx, _mm512_set1_epi64(16));
    return _mm512_maskz_mov_pd(valid, _mm512_mask_blend_pd(
        third, _mm512_permutex2var_pd(win[0], idx, win[1]), _mm512_permutexvar_pd(idx, win[2])));
}

#define FC_DEFINE_PERMUTE_ROWS(SUFFIX, T)                                                       \
static inline void fc_linear_row_##SUFFIX(T* out, const T* r, ptrdiff_t len,                   \
        const int64_t* s0, const int64_t* s1, const T* w0, const T* w1, const int32_t* base,   \
        const int32_t* rel0, const int32_t* rel1, ptrdiff_t n) {                               \
    enum { V = FC_PERMUTE_LANES_##SUFFIX };                                                    \
    for (ptrdiff_t b = 0; b * V < n; b++) {                                                    \
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;                                    \
        if (base[b] < 0) { FC_LINEAR_ROW_SCALAR(T) continue; }                                 \
        const T* p = r + base[b];                                                              \
        ptrdiff_t avail = len - base[b];                                                       \
        fc_pvec_##SUFFIX lo = fc_pload_##SUFFIX(fc_pfirst_##SUFFIX(avail), p);                 \
        fc_pvec_##SUFFIX hi = fc_pload_##SUFFIX(fc_pfirst_##SUFFIX(avail - V), p + V);         \
        fc_pvec_##SUFFIX a = fc_ppick2_##SUFFIX(lo, fc_pindex_##SUFFIX(rel0 + i0), hi);        \
        fc_pvec_##SUFFIX c = fc_ppick2_##SUFFIX(lo, fc_pindex_##SUFFIX(rel1 + i0), hi);        \
        fc_pmask_##SUFFIX m_out = fc_pfirst_##SUFFIX(i1 - i0);                                 \
        fc_pstore_##SUFFIX(out + i0, m_out, fc_pfma_##SUFFIX(                                  \
            fc_pload_##SUFFIX(m_out, w0 + i0), a,                                              \
            fc_pmul_##SUFFIX(fc_pload_##SUFFIX(m_out, w1 + i0), c)));                          \
    }                                                                                          \
}                                                                                              \
static inline void fc_nearest_row_##SUFFIX(T* out, const T* r, ptrdiff_t len,                  \
        const int64_t* s0, const int32_t* base, const int32_t* rel0, ptrdiff_t n) {             \
    enum { V = FC_PERMUTE_LANES_##SUFFIX };                                                    \
    for (ptrdiff_t b = 0; b * V < n; b++) {                                                    \
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;                                    \
        if (base[b] < 0) { FC_NEAREST_ROW_SCALAR continue; }                                   \
        const T* p = r + base[b];                                                              \
        ptrdiff_t avail = len - base[b];                                                       \
        fc_pvec_##SUFFIX lo = fc_pload_##SUFFIX(fc_pfirst_##SUFFIX(avail), p);                 \
        fc_pvec_##SUFFIX hi = fc_pload_##SUFFIX(fc_pfirst_##SUFFIX(avail - V), p + V);         \
        fc_pstore_##SUFFIX(out + i0, fc_pfirst_##SUFFIX(i1 - i0),                              \
                           fc_ppick2_##SUFFIX(lo, fc_pindex_##SUFFIX(rel0 + i0), hi));         \
    }                                                                                          \
}                                                                                              \
static inline void fc_window_row_##SUFFIX(T* out, const T* values, ptrdiff_t len,             \
        const int32_t* src, const T* weight, const int32_t* base, const int32_t* rel,          \
        ptrdiff_t n_pad, ptrdiff_t n, ptrdiff_t fan_in) {                                      \
    enum { V = FC_PERMUTE_LANES_##SUFFIX };                                                    \
    for (ptrdiff_t b = 0; b * V < n; b++) {                                                    \
        ptrdiff_t i0 = b * V, i1 = i0 + V < n ? i0 + V : n;                                    \
        if (base[b] < 0) { FC_WINDOW_ROW_SCALAR(T) continue; }                                 \
        const T* p = values + base[b];                                                         \
        ptrdiff_t avail = len - base[b];                                                       \
        fc_pvec_##SUFFIX win[3], sum = fc_pload_##SUFFIX(0, p);   /* zero */                   \
        for (int q = 0; q < 3; q++)                                                            \
            win[q] = fc_pload_##SUFFIX(fc_pfirst_##SUFFIX(avail - q * V), p + q * V);          \
        fc_pmask_##SUFFIX m_out = fc_pfirst_##SUFFIX(i1 - i0);                                 \
        for (ptrdiff_t f = 0; f < fan_in; f++) {                                               \
            fc_pvec_##SUFFIX v = fc_ppick3_##SUFFIX(win, fc_pindex_##SUFFIX(rel + f * n_pad + i0));\
            fc_pvec_##SUFFIX w = fc_pload_##SUFFIX(m_out, weight + f * n + i0);                \
            sum = f == 0 ? fc_pmul_##SUFFIX(w, v) : fc_pfma_##SUFFIX(w, v, sum);               \
        }                                                                                      \
        fc_pstore_##SUFFIX(out + i0, m_out, sum);                                              \
    }                                                                                          \
}
#else
enum { FC_PERMUTE_LANES_f32 = 1, FC_PERMUTE_LANES_f64 = 1 };
#define FC_DEFINE_PERMUTE_ROWS(SUFFIX, T)                                                       \
static inline void fc_linear_row_##SUFFIX(T* out, const T* r, ptrdiff_t len,                   \
        const int64_t* s0, const int64_t* s1, const T* w0, const T* w1, const int32_t* base,   \
        const int32_t* rel0, const int32_t* rel1, ptrdiff_t n) {                               \
    (void)len; (void)base; (void)rel0; (void)rel1;                                             \
    ptrdiff_t i0 = 0, i1 = n;                                                                  \
    FC_LINEAR_ROW_SCALAR(T)                                                                    \
}                                                                                              \
static inline void fc_nearest_row_##SUFFIX(T* out, const T* r, ptrdiff_t len,                  \
        const int64_t* s0, const int32_t* base, const int32_t* rel0, ptrdiff_t n) {             \
    (void)len; (void)base; (void)rel0;                                                         \
    ptrdiff_t i0 = 0, i1 = n;                                                                  \
    FC_NEAREST_ROW_SCALAR                                                                      \
}                                                                                              \
static inline void fc_window_row_##SUFFIX(T* out, const T* values, ptrdiff_t len,             \
        const int32_t* src, const T* weight, const int32_t* base, const int32_t* rel,          \
        ptrdiff_t n_pad, ptrdiff_t n, ptrdiff_t fan_in) {                                      \
    (void)len; (void)base; (void)rel; (void)n_pad;                                             \
    fc_gather_row_##SUFFIX(out, values, src, weight, n, fan_in);                               \
}
#endif

FC_DEFINE_PERMUTE_ROWS(f32, float)
FC_DEFINE_PERMUTE_ROWS(f64, double)

#endif /* FASTCONV_GATHER_ROWS_H */
