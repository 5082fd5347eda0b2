/* Software prefetch for the kernels whose streams the hardware prefetchers lose (the direct
 * gradient's next work item, the interpolation gradient's next rows). */
#ifndef FASTCONV_PREFETCH_H
#define FASTCONV_PREFETCH_H
#include <stddef.h>

/* Ask for `bytes` from p on into L2 ahead of use, a line at a time: asked a little at a time
 * while the current work is summed, the loads overlap its arithmetic (asked all at once, the
 * requests fill the queue ahead of the work's own loads). Addresses past an array's end are
 * harmless: a prefetch never faults. */
static inline void fc_prefetch_l2(const void* p, size_t bytes) {
    const char* c = (const char*)p;
    for (size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 2);
}

#endif
