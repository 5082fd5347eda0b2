/* The calling thread's denormal handling (x86 MXCSR: FTZ flushes denormal results to zero,
   DAZ reads denormal operands as zero), saved and set around a kernel call and restored
   after it. Elsewhere these are no-ops: the mode stays the platform's. */
#ifndef FASTCONV_FP_MODE_H
#define FASTCONV_FP_MODE_H
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FC_MXCSR_FTZ_DAZ 0x8040u
#define FASTCONV_HAVE_FP_MODE 1
static inline unsigned int fc_fp_mode_get(void) { return _mm_getcsr(); }
static inline void fc_fp_mode_set(unsigned int mode) { _mm_setcsr(mode); }
/* the current mode with denormals flushed; returns the mode it replaced */
static inline unsigned int fc_fp_mode_flush(void) {
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | FC_MXCSR_FTZ_DAZ);
    return saved;
}
#else
#define FASTCONV_HAVE_FP_MODE 0
static inline unsigned int fc_fp_mode_get(void) { return 0; }
static inline void fc_fp_mode_set(unsigned int mode) { (void)mode; }
static inline unsigned int fc_fp_mode_flush(void) { return 0; }
#endif
#endif
