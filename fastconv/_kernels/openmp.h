/* OpenMP runtime calls that also compile without OpenMP (serial build). */
#ifndef FASTCONV_OPENMP_H
#define FASTCONV_OPENMP_H
#ifdef _OPENMP
#include <omp.h>
#define FASTCONV_HAVE_OPENMP 1
#define FASTCONV_OPENMP_VERSION _OPENMP
#else
#define FASTCONV_HAVE_OPENMP 0
#define FASTCONV_OPENMP_VERSION 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif

/* A barrier for the team of the innermost enclosing parallel region (an orphaned directive:
   called from code inside one, by every thread of its team). A Cython prange inside a `with
   parallel()` block is an `omp for nowait`: where a second loop reads what the first wrote,
   this says so rather than relying on the barrier GCC happens to put before a loop whose
   variables are both firstprivate and lastprivate. */
static inline void fc_team_barrier(void) {
#ifdef _OPENMP
#pragma omp barrier
#endif
}
#endif
