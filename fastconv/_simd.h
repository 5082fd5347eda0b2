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
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H
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

/* ------------------------------------------------------------------------------------------
 * GEMM micro-kernel for the "packed" convolution: C tile (MR x NR) (+)= A panel^T . B panel,
 *   c[m * ldc + j] = (c[m * ldc + j] if accumulate) + bias[m] (if bias)
 *                    + sum_{k < k_len} a[k * MR + m] * b[k * NR + j]   (m < m_valid, j < n_valid)
 * A panels hold MR output channels' filters tap-major (packed once per call); B panels hold
 * NR = NRV vectors of output positions tap-major (written there directly by im2col). The
 * MR x NRV accumulators stay in vector registers for the whole K loop: 8 x 3 AVX-512
 * registers (MR = 8 divides the usual channel counts, so no rows are wasted), or 6 x 2 AVX2
 * registers (of 16) otherwise.
 */
#ifdef __AVX512F__
#define FC_GEMM_VEC_BYTES 64
#define FC_GEMM_MR 8
#define FC_GEMM_NRV 3
/* a second shape for planes of few positions: 32-wide panels waste less of a 49- or 64-wide
   plane than 48-wide ones (7x7 and 8x8 feature maps) */
#define FC_GEMM_MR_NARROW 12
#define FC_GEMM_NRV_NARROW 2
#else
#define FC_GEMM_VEC_BYTES 32
#define FC_GEMM_MR 6
#define FC_GEMM_NRV 2
#define FC_GEMM_MR_NARROW 6
#define FC_GEMM_NRV_NARROW 2
#endif

typedef float fc_gvec_f32 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
typedef double fc_gvec_f64 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
enum { FC_VEC_f32 = FC_GEMM_VEC_BYTES / sizeof(float),
       FC_VEC_f64 = FC_GEMM_VEC_BYTES / sizeof(double),
       FC_NR_f32 = FC_GEMM_NRV * FC_VEC_f32, FC_NR_f64 = FC_GEMM_NRV * FC_VEC_f64,
       FC_NR_NARROW_f32 = FC_GEMM_NRV_NARROW * FC_VEC_f32,
       FC_NR_NARROW_f64 = FC_GEMM_NRV_NARROW * FC_VEC_f64 };

/* The K loop of the micro-kernel, B's row k at ROW (an expression of k). */
#define FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, ROW)                                                 \
    for (k = 0; k < k_len; k++) {                                                              \
        const T* b_row = ROW;                                                                  \
        fc_gvec_##SUFFIX bv[NRV];                                                              \
        for (v = 0; v < NRV; v++)                                                              \
            memcpy(&bv[v], b_row + v * FC_VEC_##SUFFIX, sizeof(bv[v]));                        \
        for (m = 0; m < MR; m++) {                                                             \
            T am = a[k * MR + m];                                                              \
            for (v = 0; v < NRV; v++) acc[m][v] += am * bv[v];                                 \
        }                                                                                      \
    }

/* B's row k is b + k * b_stride (a packed panel), or with `offsets` (not NULL) b + offsets[k]:
 * NR contiguous elements anywhere (the phase grid's rows, read in place). */
#define FC_DEFINE_GEMM_TILE(NAME, SUFFIX, T, MR, NRV)                                           \
static inline void fc_gemm_tile_##NAME(ptrdiff_t k_len, const T* a, const T* b,                 \
        ptrdiff_t b_stride, const ptrdiff_t* offsets, T* c, ptrdiff_t ldc, ptrdiff_t m_valid,  \
        ptrdiff_t n_valid, const T* bias, int accumulate) {                                    \
    enum { NR = NRV * FC_VEC_##SUFFIX };                                                       \
    fc_gvec_##SUFFIX acc[MR][NRV];                                                             \
    ptrdiff_t k, m, j, v;                                                                      \
    for (m = 0; m < MR; m++)                                                                   \
        for (v = 0; v < NRV; v++) acc[m][v] = (fc_gvec_##SUFFIX){0};                           \
    if (offsets != NULL) {                                                                     \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, b + offsets[k])                                     \
    } else {                                                                                   \
        FC_GEMM_K_LOOP(SUFFIX, T, MR, NRV, b + k * b_stride)                                   \
    }                                                                                          \
    for (m = 0; m < m_valid; m++) {                                                            \
        T* c_row = c + m * ldc;                                                                \
        if (bias != NULL)                                                                      \
            for (v = 0; v < NRV; v++) acc[m][v] += bias[m];                                    \
        if (n_valid == NR) {                                                                   \
            for (v = 0; v < NRV; v++) {                                                        \
                if (accumulate) {                                                              \
                    fc_gvec_##SUFFIX old;                                                      \
                    memcpy(&old, c_row + v * FC_VEC_##SUFFIX, sizeof(old));                    \
                    acc[m][v] += old;                                                          \
                }                                                                              \
                memcpy(c_row + v * FC_VEC_##SUFFIX, &acc[m][v], sizeof(acc[m][v]));            \
            }                                                                                  \
        } else {                                                                               \
            T row[NR];                                                                         \
            memcpy(row, acc[m], sizeof(row));                                                  \
            for (j = 0; j < n_valid; j++)                                                      \
                c_row[j] = accumulate ? c_row[j] + row[j] : row[j];                            \
        }                                                                                      \
    }                                                                                          \
}

FC_DEFINE_GEMM_TILE(f32, f32, float, FC_GEMM_MR, FC_GEMM_NRV)
FC_DEFINE_GEMM_TILE(f64, f64, double, FC_GEMM_MR, FC_GEMM_NRV)
FC_DEFINE_GEMM_TILE(narrow_f32, f32, float, FC_GEMM_MR_NARROW, FC_GEMM_NRV_NARROW)
FC_DEFINE_GEMM_TILE(narrow_f64, f64, double, FC_GEMM_MR_NARROW, FC_GEMM_NRV_NARROW)
/* Tails: the last panel of a row of positions, when it needs fewer vectors than the tile
 * has, is computed with only those (a 7x7 plane's extended grid of 55 positions is one
 * 48-wide panel and 7 more, not two full panels). Same sums in the same order: the same
 * results as the full tile. */
FC_DEFINE_GEMM_TILE(tail1_f32, f32, float, FC_GEMM_MR, 1)
FC_DEFINE_GEMM_TILE(tail1_f64, f64, double, FC_GEMM_MR, 1)
FC_DEFINE_GEMM_TILE(tail2_f32, f32, float, FC_GEMM_MR, 2)
FC_DEFINE_GEMM_TILE(tail2_f64, f64, double, FC_GEMM_MR, 2)
FC_DEFINE_GEMM_TILE(narrow_tail1_f32, f32, float, FC_GEMM_MR_NARROW, 1)
FC_DEFINE_GEMM_TILE(narrow_tail1_f64, f64, double, FC_GEMM_MR_NARROW, 1)

/* fc_gemm_<t>(narrow, ...): the wide (narrow = 0) or narrow register tile, or the tail variant
 * for a last panel of fewer vectors; the arguments of fc_gemm_tile_*. */
#define FC_DEFINE_GEMM(SUFFIX, T)                                                               \
static inline void fc_gemm_##SUFFIX(int narrow, ptrdiff_t k_len, const T* a, const T* b,        \
        ptrdiff_t b_stride, const ptrdiff_t* offsets, T* c, ptrdiff_t ldc, ptrdiff_t m_valid,  \
        ptrdiff_t n_valid, const T* bias, int accumulate) {                                    \
    ptrdiff_t vectors = (n_valid + FC_VEC_##SUFFIX - 1) / FC_VEC_##SUFFIX;                      \
    if (narrow && vectors == 1 && FC_GEMM_NRV_NARROW > 1)                                      \
        fc_gemm_tile_narrow_tail1_##SUFFIX(k_len, a, b, b_stride, offsets, c, ldc, m_valid,    \
                                           n_valid, bias, accumulate);                         \
    else if (narrow)                                                                           \
        fc_gemm_tile_narrow_##SUFFIX(k_len, a, b, b_stride, offsets, c, ldc, m_valid,          \
                                     n_valid, bias, accumulate);                               \
    else if (vectors == 1 && FC_GEMM_NRV > 1)                                                  \
        fc_gemm_tile_tail1_##SUFFIX(k_len, a, b, b_stride, offsets, c, ldc, m_valid, n_valid,  \
                                    bias, accumulate);                                         \
    else if (vectors == 2 && FC_GEMM_NRV > 2)                                                  \
        fc_gemm_tile_tail2_##SUFFIX(k_len, a, b, b_stride, offsets, c, ldc, m_valid, n_valid,  \
                                    bias, accumulate);                                         \
    else                                                                                       \
        fc_gemm_tile_##SUFFIX(k_len, a, b, b_stride, offsets, c, ldc, m_valid, n_valid, bias,  \
                              accumulate);                                                     \
}

FC_DEFINE_GEMM(f32, float)
FC_DEFINE_GEMM(f64, double)

/* Sum of n elements, for bias gradients: four vector accumulators over blocks of 1024
 * elements, each block's sum added in double, so that a plane of millions of float32 values
 * loses no more than a float32 sum of 1024 values does. */
#define FC_DEFINE_SUM(SUFFIX, T)                                                                \
static inline double fc_sum_##SUFFIX(const T* x, ptrdiff_t n) {                                 \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    double total = 0;                                                                          \
    for (ptrdiff_t start = 0; start < n; start += 1024) {                                      \
        ptrdiff_t end = n - start < 1024 ? n : start + 1024, i = start;                        \
        fc_gvec_##SUFFIX a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, v0, v1, v2, v3;               \
        for (; i + 4 * V <= end; i += 4 * V) {                                                 \
            memcpy(&v0, x + i, sizeof(v0));                                                    \
            memcpy(&v1, x + i + V, sizeof(v1));                                                \
            memcpy(&v2, x + i + 2 * V, sizeof(v2));                                            \
            memcpy(&v3, x + i + 3 * V, sizeof(v3));                                            \
            a0 += v0; a1 += v1; a2 += v2; a3 += v3;                                            \
        }                                                                                      \
        a0 += a1; a2 += a3; a0 += a2;                                                          \
        T block = 0;                                                                           \
        for (int j = 0; j < V; j++) block += a0[j];                                            \
        for (; i < end; i++) block += x[i];                                                    \
        total += block;                                                                        \
    }                                                                                          \
    return total;                                                                              \
}

FC_DEFINE_SUM(f32, float)
FC_DEFINE_SUM(f64, double)

/* Weight-gradient dot products on the phase grid (_conv_backward.pyx, weight_grad_phase):
 *   acc[i * acc_stride + j] += sum_p g[i * g_stride + p] * (grid[offsets[j] + p] if mask[p])
 * for p < length (a multiple of the vector width), i < FC_DOT_M, j < FC_DOT_K: a register
 * tile of FC_DOT_M x FC_DOT_K vector accumulators, reduced across lanes (by halves, a fixed
 * order) once at the end. The mask drops the extended grid's extra positions exactly (a bitwise
 * and, so that an inf or NaN read there never leaks in). */
#ifdef __AVX512F__
#define FC_DOT_M 4
#define FC_DOT_K 6
#else
#define FC_DOT_M 2
#define FC_DOT_K 4
#endif
typedef int fc_gmask_f32 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));
typedef long long fc_gmask_f64 __attribute__((vector_size(FC_GEMM_VEC_BYTES)));

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
    memcpy(&h32, &v, 32);                                                                      \
    if (sizeof(v) == 64) { memcpy(&u32, (const char*)&v + 32, 32); h32 += u32; }               \
    memcpy(&h16, &h32, 16); memcpy(&u16, (const char*)&h32 + 16, 16); h16 += u16;              \
    memcpy(&h8, &h16, 8); memcpy(&u8, (const char*)&h16 + 8, 8); h8 += u8;                     \
    memcpy(lanes, &h8, 8);                                                                     \
    total = lanes[0];                                                                          \
    for (size_t i = 1; i < 8 / sizeof(T); i++) total += lanes[i];                              \
    return total;                                                                              \
}

FC_DEFINE_LANE_SUM(f32, float)
FC_DEFINE_LANE_SUM(f64, double)

#define FC_DEFINE_DOT_TILE(SUFFIX, T, MASK_T)                                                   \
static inline void fc_dot_tile_##SUFFIX(const T* g, ptrdiff_t g_stride, const T* grid,          \
        const ptrdiff_t* offsets, const MASK_T* mask, ptrdiff_t length, T* acc,               \
        ptrdiff_t acc_stride) {                                                                \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    typedef fc_gmask_##SUFFIX mvec;                                                            \
    fc_gvec_##SUFFIX a[FC_DOT_M][FC_DOT_K];                                                    \
    ptrdiff_t i, j, p;                                                                         \
    for (i = 0; i < FC_DOT_M; i++)                                                             \
        for (j = 0; j < FC_DOT_K; j++) a[i][j] = (fc_gvec_##SUFFIX){0};                        \
    for (p = 0; p < length; p += V) {                                                          \
        mvec keep; fc_gvec_##SUFFIX gv[FC_DOT_M];                                              \
        memcpy(&keep, mask + p, sizeof(keep));                                                 \
        for (i = 0; i < FC_DOT_M; i++) memcpy(&gv[i], g + i * g_stride + p, sizeof(gv[i]));    \
        for (j = 0; j < FC_DOT_K; j++) {                                                       \
            fc_gvec_##SUFFIX xv;                                                               \
            memcpy(&xv, grid + offsets[j] + p, sizeof(xv));                                    \
            xv = (fc_gvec_##SUFFIX)((mvec)xv & keep);                                          \
            for (i = 0; i < FC_DOT_M; i++) a[i][j] += gv[i] * xv;                              \
        }                                                                                      \
    }                                                                                          \
    for (i = 0; i < FC_DOT_M; i++)                                                             \
        for (j = 0; j < FC_DOT_K; j++)                                                         \
            acc[i * acc_stride + j] += fc_lane_sum_##SUFFIX(a[i][j]);                          \
}

FC_DEFINE_DOT_TILE(f32, float, int)
FC_DEFINE_DOT_TILE(f64, double, long long)

/* Stride-2 phase split and merge for the phase grid (_conv.pyx fill_phase_rows,
 * _conv_backward.pyx read_phase_rows), and short row copies, each over `rows` rows:
 *   fc_split_pairs_rows_<t>(src, src_stride, even, odd, dst_stride, n, rows):
 *       even[r * dst_stride + i] = src[r * src_stride + 2i], odd[...] = src[... + 2i + 1]
 *   fc_merge_pairs_rows_<t>(even, odd, src_stride, dst, dst_stride, n, rows): the inverse
 *   fc_copy_rows(dst, dst_stride, src, src_stride, bytes, rows): memcpy per row (strides in
 *       bytes, a whole number of 4-byte words)
 * for i < n, r < rows. The rows of small planes hold 7-30 pairs, too few for the compiler's
 * own vector loop to start (it was a scalar loop at 40% of the fill's time). Nothing is read
 * or written outside the rows. With AVX-512 each block of a row is one masked load and one
 * masked store per vector (masked-off lanes are not accessed, so they cannot fault), the
 * masks of a block made once for all rows; without it, blocks of halving width in GCC vector
 * extensions, then single elements. */
#ifdef __AVX512F__
#include <immintrin.h>

static inline __mmask16 fc_mask16(ptrdiff_t lanes) {   /* the first `lanes` of 16 (none if <= 0) */
    return (__mmask16)(lanes >= 16 ? 0xFFFF : lanes <= 0 ? 0 : (1u << lanes) - 1);
}

/* One block of up to 16 (float) or 8 (double) pairs, its masks made by the caller: a row's
 * length is the same for every row of a plane, so the row loops below make them once. */
typedef struct { __mmask16 lo, hi, pairs; } fc_pair_masks;

static inline fc_pair_masks fc_pair_masks_of(ptrdiff_t pairs, ptrdiff_t lanes) {
    fc_pair_masks m = { fc_mask16(2 * pairs), fc_mask16(2 * pairs - lanes), fc_mask16(pairs) };
    return m;
}

static inline void fc_split_block_f32(const float* src, float* even, float* odd,
                                      fc_pair_masks m) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 a = _mm512_maskz_loadu_ps(m.lo, src), b = _mm512_maskz_loadu_ps(m.hi, src + 16);
    _mm512_mask_storeu_ps(even, m.pairs, _mm512_permutex2var_ps(a, ie, b));
    _mm512_mask_storeu_ps(odd, m.pairs, _mm512_permutex2var_ps(a, io, b));
}

static inline void fc_merge_block_f32(const float* even, const float* odd, float* dst,
                                      fc_pair_masks m) {
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                         15, 31);
    __m512 e = _mm512_maskz_loadu_ps(m.pairs, even), o = _mm512_maskz_loadu_ps(m.pairs, odd);
    _mm512_mask_storeu_ps(dst, m.lo, _mm512_permutex2var_ps(e, il, o));
    _mm512_mask_storeu_ps(dst + 16, m.hi, _mm512_permutex2var_ps(e, ih, o));
}

static inline void fc_split_block_f64(const double* src, double* even, double* odd,
                                      fc_pair_masks m) {
    const __m512i ie = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i io = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    __m512d a = _mm512_maskz_loadu_pd((__mmask8)m.lo, src);
    __m512d b = _mm512_maskz_loadu_pd((__mmask8)m.hi, src + 8);
    _mm512_mask_storeu_pd(even, (__mmask8)m.pairs, _mm512_permutex2var_pd(a, ie, b));
    _mm512_mask_storeu_pd(odd, (__mmask8)m.pairs, _mm512_permutex2var_pd(a, io, b));
}

static inline void fc_merge_block_f64(const double* even, const double* odd, double* dst,
                                      fc_pair_masks m) {
    const __m512i il = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i ih = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    __m512d e = _mm512_maskz_loadu_pd((__mmask8)m.pairs, even);
    __m512d o = _mm512_maskz_loadu_pd((__mmask8)m.pairs, odd);
    _mm512_mask_storeu_pd(dst, (__mmask8)m.lo, _mm512_permutex2var_pd(e, il, o));
    _mm512_mask_storeu_pd(dst + 8, (__mmask8)m.hi, _mm512_permutex2var_pd(e, ih, o));
}

#define FC_DEFINE_PAIRS_AVX512(SUFFIX, T, L)                                                    \
static inline void fc_split_pairs_rows_##SUFFIX(const T* src, ptrdiff_t src_stride, T* even,    \
        T* odd, ptrdiff_t dst_stride, ptrdiff_t n, ptrdiff_t rows) {                           \
    for (ptrdiff_t i = 0; i < n; i += L) {   /* block i of every row: its masks once */        \
        fc_pair_masks m = fc_pair_masks_of(n - i < L ? n - i : L, L);                          \
        for (ptrdiff_t r = 0; r < rows; r++)                                                   \
            fc_split_block_##SUFFIX(src + r * src_stride + 2 * i, even + r * dst_stride + i,   \
                                    odd + r * dst_stride + i, m);                              \
    }                                                                                          \
}                                                                                              \
static inline void fc_merge_pairs_rows_##SUFFIX(const T* even, const T* odd,                   \
        ptrdiff_t src_stride, T* dst, ptrdiff_t dst_stride, ptrdiff_t n, ptrdiff_t rows) {     \
    for (ptrdiff_t i = 0; i < n; i += L) {                                                     \
        fc_pair_masks m = fc_pair_masks_of(n - i < L ? n - i : L, L);                          \
        for (ptrdiff_t r = 0; r < rows; r++)                                                   \
            fc_merge_block_##SUFFIX(even + r * src_stride + i, odd + r * src_stride + i,       \
                                    dst + r * dst_stride + 2 * i, m);                          \
    }                                                                                          \
}

FC_DEFINE_PAIRS_AVX512(f32, float, 16)
FC_DEFINE_PAIRS_AVX512(f64, double, 8)

static inline void fc_copy_rows(void* dst, size_t dst_stride, const void* src,
                                size_t src_stride, size_t bytes, ptrdiff_t rows) {
    ptrdiff_t words = (ptrdiff_t)(bytes / 4);
    for (ptrdiff_t i = 0; i < words; i += 16) {   /* block i of every row: its mask once */
        __mmask16 m = fc_mask16(words - i);
        for (ptrdiff_t r = 0; r < rows; r++)
            _mm512_mask_storeu_epi32((int*)((char*)dst + r * dst_stride) + i, m,
                                     _mm512_maskz_loadu_epi32(
                                         m, (const int*)((const char*)src + r * src_stride) + i));
    }
}

#else

#define FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, L)                                                   \
typedef T fc_pv##L##_##SUFFIX __attribute__((vector_size(L * sizeof(T))));                      \
typedef I fc_pi##L##_##SUFFIX __attribute__((vector_size(L * sizeof(T))));                      \
static inline void fc_split_##L##_##SUFFIX(const T* src, T* even, T* odd) {                    \
    fc_pv##L##_##SUFFIX a, b, e, o;                                                            \
    fc_pi##L##_##SUFFIX ie, io;                                                                \
    for (int i = 0; i < L; i++) { ie[i] = 2 * i; io[i] = 2 * i + 1; }                          \
    memcpy(&a, src, sizeof(a)); memcpy(&b, src + L, sizeof(b));                               \
    e = __builtin_shuffle(a, b, ie); o = __builtin_shuffle(a, b, io);                          \
    memcpy(even, &e, sizeof(e)); memcpy(odd, &o, sizeof(o));                                   \
}                                                                                              \
static inline void fc_merge_##L##_##SUFFIX(const T* even, const T* odd, T* dst) {              \
    fc_pv##L##_##SUFFIX e, o, lo, hi;                                                          \
    fc_pi##L##_##SUFFIX il, ih;                                                                \
    for (int i = 0; i < L; i++) {                                                              \
        il[i] = i / 2 + (i % 2) * L; ih[i] = (L + i) / 2 + ((L + i) % 2) * L;                \
    }                                                                                          \
    memcpy(&e, even, sizeof(e)); memcpy(&o, odd, sizeof(o));                                   \
    lo = __builtin_shuffle(e, o, il); hi = __builtin_shuffle(e, o, ih);                        \
    memcpy(dst, &lo, sizeof(lo)); memcpy(dst + L, &hi, sizeof(hi));                            \
}

#define FC_DEFINE_PAIRS(SUFFIX, T, I, BIG, MID, SMALL, TINY)                                    \
FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, BIG)                                                        \
FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, MID)                                                        \
FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, SMALL)                                                      \
FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, TINY)                                                       \
static inline void fc_split_pairs_##SUFFIX(const T* src, T* even, T* odd, ptrdiff_t n) {       \
    ptrdiff_t i = 0;                                                                           \
    for (; i + BIG <= n; i += BIG) fc_split_##BIG##_##SUFFIX(src + 2 * i, even + i, odd + i);  \
    if (i + MID <= n) { fc_split_##MID##_##SUFFIX(src + 2 * i, even + i, odd + i); i += MID; } \
    if (i + SMALL <= n) {                                                                      \
        fc_split_##SMALL##_##SUFFIX(src + 2 * i, even + i, odd + i); i += SMALL;               \
    }                                                                                          \
    if (i + TINY <= n) { fc_split_##TINY##_##SUFFIX(src + 2 * i, even + i, odd + i); i += TINY; } \
    for (; i < n; i++) { even[i] = src[2 * i]; odd[i] = src[2 * i + 1]; }                      \
}                                                                                              \
static inline void fc_merge_pairs_##SUFFIX(const T* even, const T* odd, T* dst, ptrdiff_t n) { \
    ptrdiff_t i = 0;                                                                           \
    for (; i + BIG <= n; i += BIG) fc_merge_##BIG##_##SUFFIX(even + i, odd + i, dst + 2 * i);  \
    if (i + MID <= n) { fc_merge_##MID##_##SUFFIX(even + i, odd + i, dst + 2 * i); i += MID; } \
    if (i + SMALL <= n) {                                                                      \
        fc_merge_##SMALL##_##SUFFIX(even + i, odd + i, dst + 2 * i); i += SMALL;               \
    }                                                                                          \
    if (i + TINY <= n) { fc_merge_##TINY##_##SUFFIX(even + i, odd + i, dst + 2 * i); i += TINY; } \
    for (; i < n; i++) { dst[2 * i] = even[i]; dst[2 * i + 1] = odd[i]; }                      \
}

FC_DEFINE_PAIRS(f32, float, int, 16, 8, 4, 2)
FC_DEFINE_PAIRS(f64, double, long long, 8, 4, 2, 1)

#define FC_DEFINE_PAIRS_ROWS(SUFFIX, T)                                                         \
static inline void fc_split_pairs_rows_##SUFFIX(const T* src, ptrdiff_t src_stride, T* even,    \
        T* odd, ptrdiff_t dst_stride, ptrdiff_t n, ptrdiff_t rows) {                           \
    for (ptrdiff_t r = 0; r < rows; r++)                                                       \
        fc_split_pairs_##SUFFIX(src + r * src_stride, even + r * dst_stride,                   \
                                odd + r * dst_stride, n);                                      \
}                                                                                              \
static inline void fc_merge_pairs_rows_##SUFFIX(const T* even, const T* odd,                   \
        ptrdiff_t src_stride, T* dst, ptrdiff_t dst_stride, ptrdiff_t n, ptrdiff_t rows) {     \
    for (ptrdiff_t r = 0; r < rows; r++)                                                       \
        fc_merge_pairs_##SUFFIX(even + r * src_stride, odd + r * src_stride,                   \
                                dst + r * dst_stride, n);                                      \
}

FC_DEFINE_PAIRS_ROWS(f32, float)
FC_DEFINE_PAIRS_ROWS(f64, double)

static inline void fc_copy_short(void* dst, const void* src, size_t bytes) {
    char* d = (char*)dst;
    const char* s = (const char*)src;
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) memcpy(d + i, s + i, 64);
    if (i + 32 <= bytes) { memcpy(d + i, s + i, 32); i += 32; }
    if (i + 16 <= bytes) { memcpy(d + i, s + i, 16); i += 16; }
    if (i + 8 <= bytes) { memcpy(d + i, s + i, 8); i += 8; }
    if (i + 4 <= bytes) { memcpy(d + i, s + i, 4); i += 4; }
}

static inline void fc_copy_rows(void* dst, size_t dst_stride, const void* src,
                                size_t src_stride, size_t bytes, ptrdiff_t rows) {
    for (ptrdiff_t r = 0; r < rows; r++)
        fc_copy_short((char*)dst + r * dst_stride, (const char*)src + r * src_stride, bytes);
}
#endif

#endif /* FASTCONV_SIMD_H */
