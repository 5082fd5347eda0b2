/* fc_max_rows_f32(rows, row_pos, nrows, kw_taps, sw, pw, out, indices, lo, hi): outputs
 * [lo, hi) of one output row of a max pool whose windows are kw_taps (2 or 3) wide at stride
 * sw (1 or 2) over `nrows` (<= 8) input rows, every window inside the rows
 * (w = sw * ow - pw):
 *   out[ow] = the maximum of rows[r][w + k] (r, then k, in order), NaN winning and the first
 *             one on ties (PyTorch's rule: take v when v > best or v is NaN);
 *   indices[ow] = row_pos[r] + w + k of it, where indices is not NULL.
 * With AVX-512, 16 outputs a step: each tap's 16 inputs are one load (stride 1) or two loads
 * split into even columns by a vector permute (stride 2); a running maximum, with a vector
 * of the row and one of the tap each lane took, from which the indices are built in two
 * 8-lane int64 halves; the last block masked (no scalar remainder, no access past the
 * window). The scan is the scalar loop's, tap by tap in window order, so values and indices
 * are the same bits. Returns 0 (nothing written) without AVX-512: the caller's loops run
 * (pooling.pyx, max_rows_k2s2 and its kin), which GCC vectorizes less well (the int64 index
 * selects, deinterleaving through buffers). */
#ifndef FASTCONV_MAX_POOL_ROWS_H
#define FASTCONV_MAX_POOL_ROWS_H
#include <stddef.h>
#include <stdint.h>
#include "pair_rows.h"      /* fc_mask16 */

#ifdef __AVX512F__
#include <immintrin.h>

/* the 16 inputs p[sw * i], i < n, of one tap */
static inline __m512 fc_max_tap_inputs(const float* p, int sw, ptrdiff_t n, __m512i even) {
    if (sw == 1) return _mm512_maskz_loadu_ps(fc_mask16(n), p);
    __m512 a = _mm512_maskz_loadu_ps(fc_mask16(2 * n - 1), p);
    __m512 b = _mm512_maskz_loadu_ps(fc_mask16(2 * n - 17), p + 16);
    return _mm512_permutex2var_ps(a, even, b);
}

static inline int fc_max_rows_f32(const float* const* rows, const int64_t* row_pos, int nrows,
                                  int kw_taps, int sw, ptrdiff_t pw, float* out,
                                  int64_t* indices, ptrdiff_t lo, ptrdiff_t hi) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i columns = sw == 2 ? _mm512_add_epi64(lanes, lanes) : lanes;  /* sw * lane */
    __m512i positions = _mm512_setzero_si512();
    if (nrows < 1 || nrows > 8 || kw_taps < 1 || kw_taps > 3 || sw < 1 || sw > 2) return 0;
    if (indices) positions = _mm512_maskz_loadu_epi64((__mmask8)((1u << nrows) - 1), row_pos);
    for (ptrdiff_t ow = lo; ow < hi; ow += 16) {
        const ptrdiff_t n = hi - ow < 16 ? hi - ow : 16, w = sw * ow - pw;
        __m512 best = _mm512_setzero_ps();
        __m512i row = _mm512_setzero_si512();   /* the row and tap each lane's maximum is at */
        __m512i tap = _mm512_setzero_si512();
        for (int r = 0; r < nrows; r++) {
            for (int k = 0; k < kw_taps; k++) {
                __m512 v = fc_max_tap_inputs(rows[r] + w + k, sw, n, even);
                if (r == 0 && k == 0) {
                    best = v;     /* as taking it over -inf: a -inf keeps the first position */
                    continue;
                }
                __mmask16 t = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)
                              | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                best = _mm512_mask_mov_ps(best, t, v);
                row = _mm512_mask_mov_epi32(row, t, _mm512_set1_epi32(r));
                tap = _mm512_mask_mov_epi32(tap, t, _mm512_set1_epi32(k));
            }
        }
        const __mmask16 keep = fc_mask16(n);
        _mm512_mask_storeu_ps(out + ow, keep, best);
        if (indices) {
            for (int half = 0; half < 2; half++) {
                __m256i r32 = half ? _mm512_extracti64x4_epi64(row, 1)
                                   : _mm512_castsi512_si256(row);
                __m256i k32 = half ? _mm512_extracti64x4_epi64(tap, 1)
                                   : _mm512_castsi512_si256(tap);
                /* row_pos[row] + w + sw * lane + tap */
                __m512i at = _mm512_permutexvar_epi64(_mm512_cvtepi32_epi64(r32), positions);
                __m512i col = _mm512_add_epi64(_mm512_set1_epi64(w + sw * 8 * half), columns);
                at = _mm512_add_epi64(_mm512_add_epi64(at, col), _mm512_cvtepi32_epi64(k32));
                _mm512_mask_storeu_epi64(indices + ow + 8 * half, (__mmask8)(keep >> (8 * half)),
                                         at);
            }
        }
    }
    return 1;
}

#else

static inline int fc_max_rows_f32(const float* const* rows, const int64_t* row_pos, int nrows,
                                  int kw_taps, int sw, ptrdiff_t pw, float* out,
                                  int64_t* indices, ptrdiff_t lo, ptrdiff_t hi) {
    (void)rows; (void)row_pos; (void)nrows; (void)kw_taps; (void)sw; (void)pw; (void)out;
    (void)indices; (void)lo; (void)hi;
    return 0;
}

#endif
#endif /* FASTCONV_MAX_POOL_ROWS_H */
