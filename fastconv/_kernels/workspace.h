/* Per-thread scratch buffers that outlive a call.
 *
 * Kernels need work buffers of a few hundred KiB to a few MiB per call (packed weights,
 * unfolded panels, padded lines). Allocated and freed on every call, blocks that size come
 * from mmap and return fresh pages that the OS must zero on first touch: measured to cost
 * up to 2x on a 1 ms convolution. Here each thread keeps one buffer per slot, grown as needed
 * and freed when the thread exits (a pthread key destructor); fc_workspace_trim frees slots
 * above FC_WORKSPACE_KEEP bytes, so a rare huge call does not pin memory for good.
 */
#ifndef FASTCONV_WORKSPACE_H
#define FASTCONV_WORKSPACE_H
#include <pthread.h>
#include <stdlib.h>

#define FC_WORKSPACE_SLOTS 16
#define FC_WORKSPACE_KEEP ((size_t)64 << 20)

typedef struct {
    void* ptr[FC_WORKSPACE_SLOTS];
    size_t size[FC_WORKSPACE_SLOTS];
} fc_workspace_t;

static pthread_key_t fc_workspace_key;
static pthread_once_t fc_workspace_once = PTHREAD_ONCE_INIT;
static int fc_workspace_key_ok = 0;

static void fc_workspace_destroy(void* p) {
    fc_workspace_t* ws = (fc_workspace_t*)p;
    for (int i = 0; i < FC_WORKSPACE_SLOTS; i++) free(ws->ptr[i]);
    free(ws);
}

static void fc_workspace_make_key(void) {
    fc_workspace_key_ok = pthread_key_create(&fc_workspace_key, fc_workspace_destroy) == 0;
}

static fc_workspace_t* fc_workspace_of_thread(void) {
    pthread_once(&fc_workspace_once, fc_workspace_make_key);
    if (!fc_workspace_key_ok) return NULL;
    fc_workspace_t* ws = (fc_workspace_t*)pthread_getspecific(fc_workspace_key);
    if (ws == NULL) {
        ws = (fc_workspace_t*)calloc(1, sizeof(fc_workspace_t));
        if (ws == NULL || pthread_setspecific(fc_workspace_key, ws) != 0) {
            free(ws);
            return NULL;
        }
    }
    return ws;
}

/* This thread's buffer `slot` with room for `bytes` (contents undefined), or NULL. */
static inline void* fc_workspace(int slot, size_t bytes) {
    fc_workspace_t* ws = fc_workspace_of_thread();
    if (ws == NULL) return NULL;
    if (bytes == 0) bytes = 1;
    if (ws->size[slot] < bytes) {
        void* p = NULL;
        free(ws->ptr[slot]);
        /* cache-line aligned, so the packed panels' vector loads never split a line */
        ws->ptr[slot] = posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
        ws->size[slot] = ws->ptr[slot] ? bytes : 0;
    }
    return ws->ptr[slot];
}

/* Free this thread's buffers that grew past FC_WORKSPACE_KEEP. */
static inline void fc_workspace_trim(void) {
    fc_workspace_t* ws = fc_workspace_of_thread();
    if (ws == NULL) return;
    for (int i = 0; i < FC_WORKSPACE_SLOTS; i++) {
        if (ws->size[i] > FC_WORKSPACE_KEEP) {
            free(ws->ptr[i]);
            ws->ptr[i] = NULL;
            ws->size[i] = 0;
        }
    }
}
#endif
