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
#endif
