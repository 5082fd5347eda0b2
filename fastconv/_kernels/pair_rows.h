/* Stride-2 phase split and merge for the phase grid (conv_phase_grid.pyx: fill_phase_rows
 * and read_phase_rows), and short row copies, each over `rows` rows:
 *   fc_split_pairs_rows_<t>(src, src_stride, even, odd, dst_stride, n, rows):
 *       even[r * dst_stride + i] = src[r * src_stride + 2i], odd[...] = src[... + 2i + 1]
 *   fc_split_pairs_<t>(src, even, odd, n): the same for one row
 *   fc_merge_pairs_rows_<t>(even, odd, src_stride, dst, dst_stride, n, rows): the inverse
 *   fc_copy_rows(dst, dst_stride, src, src_stride, bytes, rows): memcpy per row (strides in
 *       bytes, a whole number of 4-byte words)
 *   fc_pad_rows(dst, dst_stride, src, src_stride, first, bytes, width, rows): each dst row
 *       `width` bytes of zeros but for the src row's `bytes` at byte `first` (the direct
 *       planes' zero-padded input rows; all sizes whole 4-byte words)
 *   fc_copy_short(dst, src, bytes), fc_zero_short(dst, bytes): one such row, copied or
 *       zeroed inline (a libc call per short row cost as much as the row's data: the
 *       direct kernel's zero-padded lines)
 *   fc_take_even_<t>(src, dst, n): dst[i] = src[2i] for i < n, reading no further than
 *       src[2n - 2] (the stride-2 unfolding of conv_packed.pyx; a strided scalar loop there
 *       was vectorized or not depending on GCC's -mtune)
 *   fc_add_even_<t>(dst, src, n): dst[2i] += src[i] for i < n, touching no further than
 *       dst[2n - 2] (the stride-2 col2im of conv_im2col.pyx); the odd elements in between
 *       are read and written back unchanged, so dst's row must be the caller's alone
 * for i < n, r < rows. The rows of small planes hold 7-30 pairs, too few for the compiler's
 * own vector loop to start (it was a scalar loop at 40% of the fill's time). Nothing is read
 * or written outside the rows. With AVX-512 each block of a row is one masked load and one
 * masked store per vector (masked-off lanes are not accessed, so they cannot fault), the
 * masks made once for all rows (FC_SHORT_ROW_BLOCKS); without it, blocks of the register width
 * and of half of it in GCC vector extensions, then single elements (a block wider than a
 * register was shuffled element by element through general registers). */
#ifndef FASTCONV_PAIR_ROWS_H
#define FASTCONV_PAIR_ROWS_H
#include <stddef.h>
#include <string.h>

/* short rows copied or zeroed inline, at every level */
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

static inline void fc_zero_short(void* dst, size_t bytes) {
    static const char zeros[64] = {0};
    char* d = (char*)dst;
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) memcpy(d + i, zeros, 64);
    fc_copy_short(d + i, zeros, bytes - i);   /* the last < 64 bytes */
}

/* Rows of up to this many 64-byte blocks are padded block by block across all rows (each
 * block's masks made once); longer ones row by row. The other row loops go row by row, the
 * masks of whole blocks and of the tail made once: block by block across the rows read a
 * plane from memory as strided passes (the depthwise weight gradient's fills waited on
 * those loads for half of its time). */
#define FC_SHORT_ROW_BLOCKS 2

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

static inline void fc_even_block_f32(const float* src, float* even, fc_pair_masks m) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512 a = _mm512_maskz_loadu_ps(m.lo, src), b = _mm512_maskz_loadu_ps(m.hi, src + 16);
    _mm512_mask_storeu_ps(even, m.pairs, _mm512_permutex2var_ps(a, ie, b));
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

static inline void fc_even_block_f64(const double* src, double* even, fc_pair_masks m) {
    const __m512i ie = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    __m512d a = _mm512_maskz_loadu_pd((__mmask8)m.lo, src);
    __m512d b = _mm512_maskz_loadu_pd((__mmask8)m.hi, src + 8);
    _mm512_mask_storeu_pd(even, (__mmask8)m.pairs, _mm512_permutex2var_pd(a, ie, b));
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
    ptrdiff_t full = n / L * L;   /* whole blocks, then a tail: both masks made once */       \
    fc_pair_masks all = fc_pair_masks_of(L, L), tail = fc_pair_masks_of(n - full, L);          \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                     \
        const T* s = src + r * src_stride;                                                     \
        T* e = even + r * dst_stride;                                                          \
        T* o = odd + r * dst_stride;                                                           \
        for (ptrdiff_t i = 0; i < full; i += L)                                                \
            fc_split_block_##SUFFIX(s + 2 * i, e + i, o + i, all);                             \
        if (n > full) fc_split_block_##SUFFIX(s + 2 * full, e + full, o + full, tail);         \
    }                                                                                          \
}                                                                                              \
static inline void fc_merge_pairs_rows_##SUFFIX(const T* even, const T* odd,                   \
        ptrdiff_t src_stride, T* dst, ptrdiff_t dst_stride, ptrdiff_t n, ptrdiff_t rows) {     \
    ptrdiff_t full = n / L * L;                                                                \
    fc_pair_masks all = fc_pair_masks_of(L, L), tail = fc_pair_masks_of(n - full, L);          \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                     \
        const T* e = even + r * src_stride;                                                    \
        const T* o = odd + r * src_stride;                                                     \
        T* d = dst + r * dst_stride;                                                           \
        for (ptrdiff_t i = 0; i < full; i += L)                                                \
            fc_merge_block_##SUFFIX(e + i, o + i, d + 2 * i, all);                             \
        if (n > full) fc_merge_block_##SUFFIX(e + full, o + full, d + 2 * full, tail);         \
    }                                                                                          \
}

FC_DEFINE_PAIRS_AVX512(f32, float, 16)
FC_DEFINE_PAIRS_AVX512(f64, double, 8)

/* one row (the direct kernel's stride-2 lines) */
static inline void fc_split_pairs_f32(const float* src, float* even, float* odd, ptrdiff_t n) {
    fc_split_pairs_rows_f32(src, 0, even, odd, 0, n, 1);
}
static inline void fc_split_pairs_f64(const double* src, double* even, double* odd,
                                      ptrdiff_t n) {
    fc_split_pairs_rows_f64(src, 0, even, odd, 0, n, 1);
}

#define FC_DEFINE_EVEN_AVX512(SUFFIX, T, L)                                                     \
static inline fc_pair_masks fc_even_masks_##SUFFIX(ptrdiff_t pairs) {                          \
    /* 2 * pairs - 1 elements: the last pair's odd element is not touched */                 \
    fc_pair_masks m = { fc_mask16(2 * pairs - 1), fc_mask16(2 * pairs - 1 - L),                 \
                        fc_mask16(pairs) };                                                    \
    return m;                                                                                  \
}                                                                                              \
static inline void fc_take_even_##SUFFIX(const T* src, T* dst, ptrdiff_t n) {                  \
    /* the even lanes alone: storing the odd ones too, into a scratch block to be dropped,    \
       cost 13% of a batch-1 3x3 stride-2 layer (256 channels on 28x28, Zen 4) */            \
    for (ptrdiff_t i = 0; i < n; i += L)                                                       \
        fc_even_block_##SUFFIX(src + 2 * i, dst + i,                                           \
                               fc_even_masks_##SUFFIX(n - i < L ? n - i : L));                 \
}                                                                                              \
static inline void fc_add_even_##SUFFIX(T* dst, const T* src, ptrdiff_t n) {                   \
    T even[L], odd[L];                                                                         \
    for (ptrdiff_t i = 0; i < n; i += L) {                                                     \
        ptrdiff_t pairs = n - i < L ? n - i : L;                                               \
        fc_pair_masks m = fc_even_masks_##SUFFIX(pairs);                                       \
        fc_split_block_##SUFFIX(dst + 2 * i, even, odd, m);                                    \
        for (ptrdiff_t j = 0; j < pairs; j++) even[j] += src[i + j];                           \
        fc_merge_block_##SUFFIX(even, odd, dst + 2 * i, m);                                    \
    }                                                                                          \
}

FC_DEFINE_EVEN_AVX512(f32, float, 16)
FC_DEFINE_EVEN_AVX512(f64, double, 8)

static inline void fc_copy_rows(void* dst, size_t dst_stride, const void* src,
                                size_t src_stride, size_t bytes, ptrdiff_t rows) {
    ptrdiff_t words = (ptrdiff_t)(bytes / 4), full = words / 16 * 16;
    __mmask16 tail = fc_mask16(words - full);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const int* s = (const int*)((const char*)src + r * src_stride);
        int* d = (int*)((char*)dst + r * dst_stride);
        for (ptrdiff_t i = 0; i < full; i += 16)
            _mm512_storeu_si512(d + i, _mm512_loadu_si512(s + i));
        if (tail)
            _mm512_mask_storeu_epi32(d + full, tail, _mm512_maskz_loadu_epi32(tail, s + full));
    }
}

static inline void fc_pad_rows(void* dst, size_t dst_stride, const void* src,
                               size_t src_stride, size_t first, size_t bytes, size_t width,
                               ptrdiff_t rows) {
    ptrdiff_t lo = (ptrdiff_t)(first / 4), hi = (ptrdiff_t)((first + bytes) / 4);
    ptrdiff_t words = (ptrdiff_t)(width / 4);
    if (words > FC_SHORT_ROW_BLOCKS * 16) {   /* long rows: row by row, each read in order */
        for (ptrdiff_t r = 0; r < rows; r++) {
            const int* s = (const int*)((const char*)src + r * src_stride);
            int* d = (int*)((char*)dst + r * dst_stride);
            for (ptrdiff_t i = 0; i < words; i += 16) {
                __mmask16 take = (__mmask16)(fc_mask16(hi - i) & ~fc_mask16(lo - i));
                __m512i v = take ? _mm512_maskz_loadu_epi32(take, s + (i - lo))
                                 : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(d + i, fc_mask16(words - i), v);
            }
        }
        return;
    }
    for (ptrdiff_t i = 0; i < words; i += 16) {   /* block i of every row: its masks once */
        /* lanes l of the block with lo <= i + l < hi come from src[i + l - lo] */
        __mmask16 take = (__mmask16)(fc_mask16(hi - i) & ~fc_mask16(lo - i));
        __mmask16 keep = fc_mask16(words - i);
        for (ptrdiff_t r = 0; r < rows; r++) {
            const int* s = (const int*)((const char*)src + r * src_stride);
            __m512i v = take ? _mm512_maskz_loadu_epi32(take, s + (i - lo))
                             : _mm512_setzero_si512();
            _mm512_mask_storeu_epi32((int*)((char*)dst + r * dst_stride) + i, keep, v);
        }
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

#define FC_DEFINE_PAIRS(SUFFIX, T, I, BIG, MID)                                                  \
FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, BIG)                                                        \
FC_DEFINE_PAIR_BLOCK(SUFFIX, T, I, MID)                                                        \
static inline void fc_split_pairs_##SUFFIX(const T* src, T* even, T* odd, ptrdiff_t n) {       \
    ptrdiff_t i = 0;                                                                           \
    for (; i + BIG <= n; i += BIG) fc_split_##BIG##_##SUFFIX(src + 2 * i, even + i, odd + i);  \
    if (i + MID <= n) { fc_split_##MID##_##SUFFIX(src + 2 * i, even + i, odd + i); i += MID; } \
    for (; i < n; i++) { even[i] = src[2 * i]; odd[i] = src[2 * i + 1]; }                      \
}                                                                                              \
static inline void fc_merge_pairs_##SUFFIX(const T* even, const T* odd, T* dst, ptrdiff_t n) { \
    ptrdiff_t i = 0;                                                                           \
    for (; i + BIG <= n; i += BIG) fc_merge_##BIG##_##SUFFIX(even + i, odd + i, dst + 2 * i);  \
    if (i + MID <= n) { fc_merge_##MID##_##SUFFIX(even + i, odd + i, dst + 2 * i); i += MID; } \
    for (; i < n; i++) { dst[2 * i] = even[i]; dst[2 * i + 1] = odd[i]; }                      \
}

#ifdef __AVX__   /* 32-byte registers */
FC_DEFINE_PAIRS(f32, float, int, 8, 4)
FC_DEFINE_PAIRS(f64, double, long long, 4, 2)
#else            /* 16-byte registers */
FC_DEFINE_PAIRS(f32, float, int, 4, 2)
FC_DEFINE_PAIRS(f64, double, long long, 2, 1)
#endif

/* a block of BIG pairs touches 2 * BIG elements: only while a further pair follows it */
#define FC_DEFINE_EVEN(SUFFIX, T, BIG)                                                          \
static inline void fc_take_even_##SUFFIX(const T* src, T* dst, ptrdiff_t n) {                  \
    T odd[BIG];   /* the odd elements, not kept */                                             \
    ptrdiff_t i = 0;                                                                           \
    for (; i + BIG < n; i += BIG) fc_split_##BIG##_##SUFFIX(src + 2 * i, dst + i, odd);        \
    for (; i < n; i++) dst[i] = src[2 * i];                                                    \
}                                                                                              \
static inline void fc_add_even_##SUFFIX(T* dst, const T* src, ptrdiff_t n) {                   \
    T even[BIG], odd[BIG];                                                                     \
    ptrdiff_t i = 0;                                                                           \
    for (; i + BIG < n; i += BIG) {                                                            \
        fc_split_##BIG##_##SUFFIX(dst + 2 * i, even, odd);                                     \
        for (int j = 0; j < BIG; j++) even[j] += src[i + j];                                   \
        fc_merge_##BIG##_##SUFFIX(even, odd, dst + 2 * i);                                     \
    }                                                                                          \
    for (; i < n; i++) dst[2 * i] += src[i];                                                   \
}

#ifdef __AVX__
FC_DEFINE_EVEN(f32, float, 8)
FC_DEFINE_EVEN(f64, double, 4)
#else
FC_DEFINE_EVEN(f32, float, 4)
FC_DEFINE_EVEN(f64, double, 2)
#endif

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

static inline void fc_copy_rows(void* dst, size_t dst_stride, const void* src,
                                size_t src_stride, size_t bytes, ptrdiff_t rows) {
    for (ptrdiff_t r = 0; r < rows; r++)
        fc_copy_short((char*)dst + r * dst_stride, (const char*)src + r * src_stride, bytes);
}

static inline void fc_pad_rows(void* dst, size_t dst_stride, const void* src,
                               size_t src_stride, size_t first, size_t bytes, size_t width,
                               ptrdiff_t rows) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        char* d = (char*)dst + r * dst_stride;
        fc_zero_short(d, first);
        fc_copy_short(d + first, (const char*)src + r * src_stride, bytes);
        fc_zero_short(d + first + bytes, width - first - bytes);
    }
}
#endif

#endif /* FASTCONV_PAIR_ROWS_H */
