/* The inner loop of the depthwise weight gradient by rows (conv_direct.pyx,
 * WEIGHT_GRAD_DEPTHWISE_ROWS): over one (image, channel) plane, the sums of the output
 * gradient times the input that each tap reads,
 *
 *     acc[h][w][lane] += sum over input rows r, vectors v of
 *                        g[g_rows[r * g_stride + h] + v * V + lane]
 *                        * lines[r][shifts[w] + v * V + lane]
 *
 * for a block of tap rows h (g_rows[r * g_stride + h]: where the output row that reads input
 * row r at tap row h starts in the plane g, or -1 for none) and of tap columns w, over the first n outputs of each row. The lines are the
 * zero-padded input rows (fill_line), so every load lies inside its line; each input row's
 * shifted vectors are loaded once for all the output rows that read it. The last vector of a
 * row masks its g and input lanes past n (they may hold the next row, and zero times inf is
 * NaN), and never loads g past g_end, its array's end (a copy of the tail on every row
 * instead: its store, not forwarded to the vector load, cost half of the kernel's time). The
 * accumulators stay in registers over the whole plane (one vector per tap; the caller adds
 * the lanes), loaded and stored once per call.
 */
#ifndef FASTCONV_TAP_ROWS_H
#define FASTCONV_TAP_ROWS_H
#include <stddef.h>
#include <string.h>
/* the micro-kernel's vector type and width (FC_VEC_*, fc_gvec_*) */
#include "gemm_microkernel.h"

/* tap rows of a call: at most FC_TAP_ROWS_MAX columns of taps (kw) and, per input row,
 * FC_TAP_BLOCK_ROWS output rows (tap rows kh), their product at most FC_TAP_BLOCK_SUMS */
#define FC_TAP_ROWS_MAX 8
#define FC_TAP_BLOCK_ROWS 3
#define FC_TAP_BLOCK_SUMS 16

/* FC_TAP_EACH(KWB, M): M(0) M(1) ... M(KWB - 1), so that each tap column's input vector is
 * a variable of its own (x0, x1, ...): GCC folded an array of them into every multiply-add
 * as a memory operand again (a load per use, mostly split across cache lines), and an array
 * element kept in a register by an empty asm went to the stack */
#define FC_TAP_EACH_1(M) M(0)
#define FC_TAP_EACH_2(M) FC_TAP_EACH_1(M) M(1)
#define FC_TAP_EACH_3(M) FC_TAP_EACH_2(M) M(2)
#define FC_TAP_EACH_4(M) FC_TAP_EACH_3(M) M(3)
#define FC_TAP_EACH_5(M) FC_TAP_EACH_4(M) M(4)
#define FC_TAP_EACH_6(M) FC_TAP_EACH_5(M) M(5)
#define FC_TAP_EACH_7(M) FC_TAP_EACH_6(M) M(6)
#define FC_TAP_EACH_8(M) FC_TAP_EACH_7(M) M(7)
#define FC_TAP_EACH(KWB, M) FC_TAP_EACH_##KWB(M)

/* tap column w's input vector at `offset`, its lanes past the row masked if `masked` */
#define FC_TAP_LOAD_X(w)                                                                        \
    tap_vec x##w;                                                                              \
    memcpy(&x##w, line + sh[w] + offset, sizeof(x##w));                                        \
    if (masked) x##w = (tap_vec)((tap_mask)x##w & keep);                                       \
    FC_KEEP_IN_REGISTER(x##w);
#define FC_TAP_FMA(w) a[h][w] += gv * x##w;

/* a[h][w] += g_h * x_w over one vector of outputs, the KWB shifted inputs loaded once for the
 * KHB output rows that read them (the rows without one skipped) */
#define FC_TAP_BLOCK_VECTOR(SUFFIX, KHB, KWB, OFFSET, MASKED, G_LOAD)                            \
    {                                                                                          \
        typedef fc_gvec_##SUFFIX tap_vec;                                                      \
        typedef fc_gmask_##SUFFIX tap_mask;                                                    \
        const ptrdiff_t offset = (OFFSET);                                                     \
        const int masked = (MASKED);                                                           \
        FC_TAP_EACH(KWB, FC_TAP_LOAD_X)                                                        \
        FC_UNROLL for (int h = 0; h < KHB; h++) {                                              \
            if (g_row[h] == NULL) continue;                                                    \
            tap_vec gv;                                                                        \
            G_LOAD                                                                             \
            FC_KEEP_IN_REGISTER(gv);                                                           \
            FC_TAP_EACH(KWB, FC_TAP_FMA)                                                       \
        }                                                                                      \
    }

#define FC_TAP_BLOCK_BODY(SUFFIX, T, KHB, KWB)                                                  \
    { {                                                                                        \
        fc_gvec_##SUFFIX a[KHB][KWB];                                                          \
        ptrdiff_t sh[KWB];                                                                     \
        FC_UNROLL for (int h = 0; h < KHB; h++)                                                \
            FC_UNROLL for (int w = 0; w < KWB; w++)                                            \
                memcpy(&a[h][w], acc + (h * acc_row + w) * V, sizeof(a[h][w]));                \
        FC_UNROLL for (int w = 0; w < KWB; w++) sh[w] = shifts[w];                             \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                 \
            const T* line = lines[r];                                                          \
            const T* g_row[KHB];                                                               \
            int any = 0;                                                                       \
            FC_UNROLL for (int h = 0; h < KHB; h++) {                                          \
                ptrdiff_t at = g_rows[r * g_stride + h];                                       \
                g_row[h] = at < 0 ? NULL : g + at;                                             \
                any |= at >= 0;                                                                \
            }                                                                                  \
            if (!any) continue;                                                                \
            for (ptrdiff_t v = 0; v < full; v++)                                               \
                FC_TAP_BLOCK_VECTOR(SUFFIX, KHB, KWB, v * V, 0,                                \
                                    memcpy(&gv, g_row[h] + v * V, sizeof(gv));)                \
            if (tail > 0)                                                                      \
                FC_TAP_BLOCK_VECTOR(SUFFIX, KHB, KWB, full * V, 1,                             \
                    if (g_row[h] + (full + 1) * V <= g_end) {                                  \
                        memcpy(&gv, g_row[h] + full * V, sizeof(gv));                          \
                        gv = (fc_gvec_##SUFFIX)((fc_gmask_##SUFFIX)gv & keep);                 \
                    } else {                                                                   \
                        /* the array's last row: no load past its end */                       \
                        FC_UNROLL for (int i = 0; i < V; i++)                                  \
                            gv[i] = i < tail ? g_row[h][full * V + i] : 0;                     \
                    })                                                                         \
        }                                                                                      \
        FC_UNROLL for (int h = 0; h < KHB; h++)                                                \
            FC_UNROLL for (int w = 0; w < KWB; w++)                                            \
                memcpy(acc + (h * acc_row + w) * V, &a[h][w], sizeof(a[h][w]));                \
    }                                                                                          \
    return; }

#define FC_TAP_BLOCK_CASE(SUFFIX, T, KWB)                                                       \
    case KWB:                                                                                  \
        if (khb == 1) FC_TAP_BLOCK_BODY(SUFFIX, T, 1, KWB)                                     \
        if (khb == 2 || 3 * KWB > FC_TAP_BLOCK_SUMS) FC_TAP_BLOCK_BODY(SUFFIX, T, 2, KWB)      \
        FC_TAP_BLOCK_BODY(SUFFIX, T, 3, KWB)

/* acc[(h * acc_row + w) * V + lane] += sum over input rows r, vectors v of
 *     g[g_rows[r * g_stride + h] + v * V + lane] * lines[r][shifts[w] + v * V + lane]
 * (rows whose g_rows entry is -1 skipped) for h < khb, w < kwb (khb * kwb <= FC_TAP_BLOCK_SUMS): each input row's shifted vectors
 * serve the khb output rows that read it (a row per tap row, loading the inputs again for
 * each, was bound by its loads on Zen 4: two per multiply-add, most of them split across
 * cache lines). */
#define FC_DEFINE_TAP_ROWS(SUFFIX, T)                                                           \
static inline void fc_tap_rows_##SUFFIX(const T* const* lines, const T* g,                   \
                                        const ptrdiff_t* g_rows, ptrdiff_t g_stride,          \
                                        ptrdiff_t rows, ptrdiff_t n, const T* g_end,          \
                                        const ptrdiff_t* shifts, int khb, int kwb, T* acc,    \
                                        ptrdiff_t acc_row) {                                   \
    enum { V = FC_VEC_##SUFFIX };                                                              \
    ptrdiff_t full = n / V, tail = n % V;                                                      \
    fc_gmask_##SUFFIX keep;                                                                    \
    for (int i = 0; i < V; i++) keep[i] = i < tail ? -1 : 0;                                   \
    switch (kwb) {                                                                             \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 1)                                                            \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 2)                                                            \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 3)                                                            \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 4)                                                            \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 5)                                                            \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 6)                                                            \
    FC_TAP_BLOCK_CASE(SUFFIX, T, 7)                                                            \
    default: FC_TAP_BLOCK_CASE(SUFFIX, T, 8)                                                   \
    }                                                                                          \
}

FC_DEFINE_TAP_ROWS(f32, float)
FC_DEFINE_TAP_ROWS(f64, double)

#endif
