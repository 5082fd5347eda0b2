/* Output written past the caches: fc_stream_copy(dst, src, bytes) is memcpy with
 * non-temporal stores to dst's whole aligned vectors (its ragged ends by plain stores). A
 * plain store that misses the cache first reads the line it writes (read for ownership), so
 * an output written once costs twice its bytes in memory traffic; a streaming store writes
 * the line without reading it. For outputs assembled in a small buffer that stays in cache
 * (a plane of a max-pool gradient: zeroed, scattered into, then streamed out), and only
 * where the output is larger than the caches (a streamed line is evicted: a reader soon
 * after would miss). fc_stream_fence() orders the streamed stores before later ones (call
 * it before another thread may read dst). x86-64 always has SSE2; elsewhere both fall back
 * to memcpy and nothing. */
#ifndef FASTCONV_STREAM_STORE_H
#define FASTCONV_STREAM_STORE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

static inline void fc_stream_copy(void* dst, const void* src, size_t bytes) {
#if defined(__AVX__)
    enum { V = 32 };
#elif defined(__SSE2__)
    enum { V = 16 };
#endif
#if defined(__SSE2__)
    char* d = (char*)dst;
    const char* s = (const char*)src;
    size_t head = (V - ((uintptr_t)d & (V - 1))) & (V - 1);
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head; s += head; bytes -= head;
    for (; bytes >= V; d += V, s += V, bytes -= V) {
#if defined(__AVX__)
        _mm256_stream_si256((__m256i*)d, _mm256_loadu_si256((const __m256i*)s));
#else
        _mm_stream_si128((__m128i*)d, _mm_loadu_si128((const __m128i*)s));
#endif
    }
    memcpy(d, s, bytes);
#else
    memcpy(dst, src, bytes);
#endif
}

static inline void fc_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

#endif
