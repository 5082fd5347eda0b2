/* Sum of n elements, for bias gradients: four vector accumulators over blocks of 1024
 * elements, each block's sum added in double, so that a plane of millions of float32 values
 * loses no more than a float32 sum of 1024 values does. */
#ifndef FASTCONV_SUMS_H
#define FASTCONV_SUMS_H
#include <stddef.h>
#include <string.h>
/* the micro-kernel's vector type and width (FC_VEC_*, fc_gvec_*) */
#include "gemm_microkernel.h"

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

#endif /* FASTCONV_SUMS_H */
