/* fc_max_rows_f32(rows, row_pos, nrows, kw_taps, sw, pw, W, out, indices, lo, hi): outputs
 * [lo, hi) of one output row of a max pool whose windows are kw_taps (1 to 16) wide at
 * stride sw (1 or 2) over `nrows` (1 to 16) input rows of W elements, window ow starting at
 * column w = sw * ow - pw; columns outside [0, W) are padding, never read:
 *   out[ow] = the maximum of rows[r][w + k] (r, then k, in order, padding skipped), NaN
 *             winning and the first one on ties (PyTorch's rule: start from -inf at the first
 *             column inside the row, take v when v > best or v is NaN);
 *   indices[ow] = row_pos[r] + w + k of it, where indices is not NULL.
 * With AVX-512, 16 outputs a step: each tap's 16 inputs are one load (stride 1) or two loads
 * split into even columns by a vector permute (stride 2); a running maximum, with a vector
 * of the row and one of the tap each lane took, from which the indices are built in two
 * 8-lane int64 halves. Blocks are masked: the last one to the row's end, and those holding
 * padding lanes by the columns each tap may read (masked loads touch nothing outside), so
 * no scalar loop runs for the W edges either (it was a fifth of the ResNet stem pool's time:
 * its branches mispredict on random data). Each row's taps are scanned in order, the rows
 * side by side, then the rows merged in order by the same rule: the result of the scan in
 * window order, values and indices bit for bit (a row's winner is the first of its maxima
 * or its last NaN; a later row takes over only with a larger value or a NaN), in half the
 * dependent steps of a 3x3 window (measured: the ResNet stem pool 1.18x). The common window
 * shapes are compiled with their sizes constant (taps unrolled; no index work without
 * indices).
 * Returns 0 (nothing written) without AVX-512 or for other shapes: the caller's loops run
 * (pooling.pyx, max_rows_k2s2 and its kin), which GCC vectorizes less well (the int64 index
 * selects, deinterleaving through buffers). */
#ifndef FASTCONV_MAX_POOL_ROWS_H
#define FASTCONV_MAX_POOL_ROWS_H
#include <stddef.h>
#include <stdint.h>
#include "pair_rows.h"      /* fc_mask16 */

#ifdef __AVX512F__
#include <immintrin.h>

#define FC_MAX_POOL_ROWS 16
#define FC_MAX_POOL_TAPS 16

/* lanes i < n whose column c0 + sw * i lies in [0, W) */
static inline __mmask16 fc_lanes_inside(ptrdiff_t c0, ptrdiff_t sw, ptrdiff_t n, ptrdiff_t W) {
    ptrdiff_t first = c0 >= 0 ? 0 : (-c0 + sw - 1) / sw;
    ptrdiff_t end = c0 > W - 1 ? 0 : (W - 1 - c0) / sw + 1;
    return (__mmask16)(fc_mask16(end < n ? end : n) & ~fc_mask16(first));
}

/* the inputs p[sw * i] of one tap, lanes outside `lanes` zero; for stride 2 `lo` and `hi`
 * mask the two loads of 16 consecutive columns each */
static inline __m512 fc_max_tap_inputs(const float* p, int sw, __mmask16 lanes, __mmask16 lo,
                                       __mmask16 hi, __m512i even) {
    if (sw == 1) return _mm512_maskz_loadu_ps(lanes, p);
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo, p), even,
                                  _mm512_maskz_loadu_ps(hi, p + 16));
}

/* one block of n <= 16 outputs from ow (window start w); `edge`: it holds padding lanes */
static inline __attribute__((always_inline)) void fc_max_block_f32(
        const float* const* rows, int nrows, int kw_taps, int sw, ptrdiff_t W, ptrdiff_t ow,
        ptrdiff_t w, ptrdiff_t n, int edge, float* out, int64_t* indices,
        __m512i positions_lo, __m512i positions_hi) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i columns = sw == 2 ? _mm512_add_epi64(lanes, lanes) : lanes;  /* sw * lane */
    const __m512 minus_inf = _mm512_set1_ps(-__builtin_inff());
    const __mmask16 keep = fc_mask16(n);
    /* per tap, the lanes inside the row and the columns the loads may touch; a padding
     * lane's scan starts at the first tap inside the row */
    __mmask16 inside[FC_MAX_POOL_TAPS], load_lo[FC_MAX_POOL_TAPS], load_hi[FC_MAX_POOL_TAPS];
    __m512i tap = _mm512_setzero_si512();   /* the row and tap each lane's maximum is at */
    __m512i row = _mm512_setzero_si512();
    __m512 best = minus_inf;
    for (int k = 0; k < kw_taps; k++) {
        inside[k] = edge ? fc_lanes_inside(w + k, sw, n, W) : keep;
        load_lo[k] = edge ? fc_lanes_inside(w + k, 1, 2 * n - 1, W) : fc_mask16(2 * n - 1);
        load_hi[k] = edge ? fc_lanes_inside(w + k + 16, 1, 2 * n - 17, W)
                          : fc_mask16(2 * n - 17);
    }
    __m512i first_tap = _mm512_setzero_si512();
    if (edge && indices)
        for (int k = kw_taps - 1; k >= 0; k--)
            first_tap = _mm512_mask_mov_epi32(first_tap, inside[k], _mm512_set1_epi32(k));
    /* Each row's maximum first, the rows side by side (independent chains), then the rows
     * merged in order by the same rule: the window order's result, as a row's winner is the
     * first of its maxima (or its last NaN) and a later row only takes over with a larger
     * value or a NaN. */
    for (int r = 0; r < nrows; r++) {
        __m512 row_best = minus_inf;
        __m512i row_tap = first_tap;
        for (int k = 0; k < kw_taps; k++) {
            __m512 v = fc_max_tap_inputs(rows[r] + w + k, sw, inside[k], load_lo[k],
                                         load_hi[k], even);
            if (k == 0) {
                /* as taking it over -inf: a -inf keeps the first position */
                row_best = edge ? _mm512_mask_mov_ps(minus_inf, inside[0], v) : v;
                continue;
            }
            __mmask16 t = _mm512_cmp_ps_mask(v, row_best, _CMP_GT_OQ)
                          | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            if (edge)
                t &= inside[k];
            row_best = _mm512_mask_mov_ps(row_best, t, v);
            if (indices)
                row_tap = _mm512_mask_mov_epi32(row_tap, t, _mm512_set1_epi32(k));
        }
        if (r == 0) {
            best = row_best;
            tap = row_tap;
            continue;
        }
        __mmask16 t = _mm512_cmp_ps_mask(row_best, best, _CMP_GT_OQ)
                      | _mm512_cmp_ps_mask(row_best, row_best, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, t, row_best);
        if (indices) {
            row = _mm512_mask_mov_epi32(row, t, _mm512_set1_epi32(r));
            tap = _mm512_mask_mov_epi32(tap, t, row_tap);
        }
    }
    _mm512_mask_storeu_ps(out + ow, keep, best);
    if (indices) {
        for (int half = 0; half < 2; half++) {
            __m256i r32 = half ? _mm512_extracti64x4_epi64(row, 1) : _mm512_castsi512_si256(row);
            __m256i k32 = half ? _mm512_extracti64x4_epi64(tap, 1) : _mm512_castsi512_si256(tap);
            /* row_pos[row] + w + sw * lane + tap */
            __m512i at = nrows <= 8
                ? _mm512_permutexvar_epi64(_mm512_cvtepi32_epi64(r32), positions_lo)
                : _mm512_permutex2var_epi64(positions_lo, _mm512_cvtepi32_epi64(r32),
                                            positions_hi);
            __m512i col = _mm512_add_epi64(_mm512_set1_epi64(w + sw * 8 * half), columns);
            at = _mm512_add_epi64(_mm512_add_epi64(at, col), _mm512_cvtepi32_epi64(k32));
            _mm512_mask_storeu_epi64(indices + ow + 8 * half, (__mmask8)(keep >> (8 * half)),
                                     at);
        }
    }
}

static inline __attribute__((always_inline)) void fc_max_rows_f32_body(
        const float* const* rows, const int64_t* row_pos, int nrows, int kw_taps, int sw,
        ptrdiff_t pw, ptrdiff_t W, float* out, int64_t* indices, ptrdiff_t lo, ptrdiff_t hi) {
    __m512i positions_lo = _mm512_setzero_si512(), positions_hi = _mm512_setzero_si512();
    if (indices) {
        positions_lo = _mm512_maskz_loadu_epi64((__mmask8)fc_mask16(nrows), row_pos);
        positions_hi = _mm512_maskz_loadu_epi64((__mmask8)fc_mask16(nrows - 8), row_pos + 8);
    }
    for (ptrdiff_t ow = lo; ow < hi; ow += 16) {
        const ptrdiff_t n = hi - ow < 16 ? hi - ow : 16, w = sw * ow - pw;
        if (w < 0 || w + sw * (n - 1) + kw_taps - 1 >= W)
            fc_max_block_f32(rows, nrows, kw_taps, sw, W, ow, w, n, 1, out, indices,
                             positions_lo, positions_hi);
        else
            fc_max_block_f32(rows, nrows, kw_taps, sw, W, ow, w, n, 0, out, indices,
                             positions_lo, positions_hi);
    }
}

/* the body with the shape constant: `indices` NULL or not, one of the common windows */
#define FC_MAX_ROWS_CASE(NR, KW, SW)                                                           \
    if (nrows == NR && kw_taps == KW && sw == SW) {                                            \
        if (indices) fc_max_rows_f32_body(rows, row_pos, NR, KW, SW, pw, W, out, indices, lo,  \
                                          hi);                                                 \
        else fc_max_rows_f32_body(rows, row_pos, NR, KW, SW, pw, W, out, NULL, lo, hi);        \
        return 1;                                                                              \
    }

static inline int fc_max_rows_f32(const float* const* rows, const int64_t* row_pos, int nrows,
                                  int kw_taps, int sw, ptrdiff_t pw, ptrdiff_t W, float* out,
                                  int64_t* indices, ptrdiff_t lo, ptrdiff_t hi) {
    if (nrows < 1 || nrows > FC_MAX_POOL_ROWS || kw_taps < 1 || kw_taps > FC_MAX_POOL_TAPS
            || sw < 1 || sw > 2)
        return 0;
    FC_MAX_ROWS_CASE(2, 2, 2)       /* 2x2 stride 2 */
    FC_MAX_ROWS_CASE(3, 3, 2)       /* 3x3 stride 2 (ResNet's stem pool) */
    FC_MAX_ROWS_CASE(2, 3, 2)       /* its first and last rows with padding */
    FC_MAX_ROWS_CASE(3, 3, 1)
    FC_MAX_ROWS_CASE(1, 2, 2)       /* 1-d */
    FC_MAX_ROWS_CASE(1, 3, 2)
    FC_MAX_ROWS_CASE(1, 3, 1)
    FC_MAX_ROWS_CASE(4, 2, 2)       /* 2x2x2 */
    fc_max_rows_f32_body(rows, row_pos, nrows, kw_taps, sw, pw, W, out, indices, lo, hi);
    return 1;
}
#undef FC_MAX_ROWS_CASE

#else

static inline int fc_max_rows_f32(const float* const* rows, const int64_t* row_pos, int nrows,
                                  int kw_taps, int sw, ptrdiff_t pw, ptrdiff_t W, float* out,
                                  int64_t* indices, ptrdiff_t lo, ptrdiff_t hi) {
    (void)rows; (void)row_pos; (void)nrows; (void)kw_taps; (void)sw; (void)pw; (void)W;
    (void)out; (void)indices; (void)lo; (void)hi;
    return 0;
}

#endif
#endif /* FASTCONV_MAX_POOL_ROWS_H */
