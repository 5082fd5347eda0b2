/* A cache of large freed blocks for the arrays fastconv allocates (its outputs, gradients
 * and temporaries), behind NumPy's memory-handler interface (NEP 49).
 *
 * Why: a block of more than a few hundred KiB comes from the operating system fresh on every
 * allocation (glibc maps it, and unmaps it when freed), so the first write to each of its pages
 * faults and the kernel zeroes the page. A network repeats its layers' sizes every step, and
 * for a memory-bound layer that first touch costs more than the layer: a 38 MB output (Zen 4)
 * takes 5-6 ms to write fresh against 1.5 ms reused. Freed blocks of at least
 * FC_POOL_MIN_BYTES are kept here (up to a byte limit, the least recently freed given back
 * first) and handed out again for a request of about the same size.
 *
 * Every block carries a header of FC_POOL_HEADER bytes before the address handed out: its
 * capacity, so a free or realloc knows where the block came from whatever size it is told,
 * and how many bytes the cache handed out between the block's last free and its reuse (a
 * measure of how cold it is: a kernel writes a cold block with streaming stores, a warm one,
 * whose lines may still be cached, with plain ones; the same count orders the cached blocks
 * for eviction). Addresses are 64-byte aligned. All functions are thread-safe (one mutex;
 * they run at allocation, never inside a kernel's loops).
 */
#ifndef FASTCONV_MEMORY_POOL_H
#define FASTCONV_MEMORY_POOL_H

#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <pthread.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define FC_POOL_HEADER 64     /* an fc_pool_header, padded to keep 64-byte alignment */
#define FC_POOL_MIN_BYTES ((size_t)1 << 18)
/* a block serves a request of at least 7/8 of its capacity (layer sizes repeat exactly; a
 * looser fit would keep large blocks busy with small arrays) */
#define FC_POOL_FIT_SHIFT 3
#define FC_POOL_SLOTS 256
/* blocks of at least this size are asked to be backed by huge pages, as NumPy does */
#define FC_POOL_HUGE_BYTES ((size_t)4 << 20)

typedef struct {
    char *base;
    size_t capacity;
} fc_pool_block;

typedef struct {
    pthread_mutex_t lock;
    fc_pool_block blocks[FC_POOL_SLOTS];
    int count;
    size_t cached_bytes, limit_bytes;
    uint64_t hits, misses;
    uint64_t handed_bytes;      /* bytes of large blocks handed out so far */
} fc_pool_state;

static fc_pool_state fc_pool = {PTHREAD_MUTEX_INITIALIZER};

/* the header in front of every block */
typedef struct {
    size_t capacity;
    uint64_t handed_at_free;    /* fc_pool.handed_bytes when the block was last cached */
    uint64_t handed_since;      /* bytes handed out from then to its reuse; UINT64_MAX new */
} fc_pool_header;

static fc_pool_header *fc_pool_header_of(const void *ptr)
{
    return (fc_pool_header *)((char *)ptr - FC_POOL_HEADER);
}

static size_t fc_pool_capacity_of(const void *ptr)
{
    return fc_pool_header_of(ptr)->capacity;
}

/* bytes the cache handed out between the block's last free and its reuse (UINT64_MAX: a
 * block new from the system; 0 for small blocks, which are not cached) */
static uint64_t fc_pool_handed_since(const void *ptr)
{
    return fc_pool_header_of(ptr)->handed_since;
}

/* Blocks the cache may keep (capacity >= FC_POOL_MIN_BYTES) are mapped from the system
 * directly on Linux, not taken from malloc's heap: held there between uses, they pinned the
 * heap's middle, so that the caller's own temporaries freed above them left a free top that
 * malloc gave back to the system and faulted in again on the next allocation (PyTorch's
 * batch norms, ReLUs and sums in ResNet-50 at batch 1 through fastconv.torch: 4,400 page
 * faults and 7-9 ms of system time a forward pass, none without fastconv's arrays). */
#if defined(__linux__)
#define FC_POOL_MAPPED(capacity) ((capacity) >= FC_POOL_MIN_BYTES)
#else
#define FC_POOL_MAPPED(capacity) 0
#endif

static void fc_pool_system_free(char *base, size_t capacity)
{
#if defined(__linux__)
    if (FC_POOL_MAPPED(capacity)) {
        munmap(base, capacity + FC_POOL_HEADER);
        return;
    }
#endif
    free(base);
}

/* a new block of `capacity` bytes from the system (NULL when there is none) */
static void *fc_pool_new_block(size_t capacity)
{
    char *base = NULL;
    if (capacity > SIZE_MAX - FC_POOL_HEADER)
        return NULL;
#if defined(__linux__)
    if (FC_POOL_MAPPED(capacity)) {
        void *mapped = mmap(NULL, capacity + FC_POOL_HEADER, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mapped == MAP_FAILED)
            return NULL;
        base = (char *)mapped;      /* page-aligned */
    }
#endif
    if (base == NULL && posix_memalign((void **)&base, 64, capacity + FC_POOL_HEADER) != 0)
        return NULL;
    ((fc_pool_header *)base)->capacity = capacity;
    ((fc_pool_header *)base)->handed_at_free = 0;
    ((fc_pool_header *)base)->handed_since = capacity >= FC_POOL_MIN_BYTES ? UINT64_MAX : 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (capacity >= FC_POOL_HUGE_BYTES) {
        /* the whole pages inside the block */
        uintptr_t page = 4096, start = ((uintptr_t)base + page - 1) & ~(page - 1);
        uintptr_t end = ((uintptr_t)base + capacity + FC_POOL_HEADER) & ~(page - 1);
        if (end > start)
            madvise((void *)start, end - start, MADV_HUGEPAGE);
    }
#endif
    return base + FC_POOL_HEADER;
}

/* the smallest cached block that serves `size` bytes, of those the most recently freed (its
 * lines likeliest still cached: a network's layers of one size free several blocks of that
 * size, and one taken at random was as often cold, its writes then read from memory first),
 * taken out of the cache; NULL if none */
static void *fc_pool_take(size_t size)
{
    int best = -1;
    void *ptr = NULL;
    pthread_mutex_lock(&fc_pool.lock);
    for (int i = 0; i < fc_pool.count; i++) {
        size_t capacity = fc_pool.blocks[i].capacity;
        if (capacity >= size && capacity - (capacity >> FC_POOL_FIT_SHIFT) <= size
                && (best < 0 || capacity < fc_pool.blocks[best].capacity
                    || (capacity == fc_pool.blocks[best].capacity
                        && ((fc_pool_header *)fc_pool.blocks[i].base)->handed_at_free
                           > ((fc_pool_header *)fc_pool.blocks[best].base)->handed_at_free)))
            best = i;
    }
    if (best >= 0) {
        fc_pool_header *header = (fc_pool_header *)fc_pool.blocks[best].base;
        ptr = fc_pool.blocks[best].base + FC_POOL_HEADER;
        header->handed_since = fc_pool.handed_bytes - header->handed_at_free;
        fc_pool.cached_bytes -= fc_pool.blocks[best].capacity;
        fc_pool.blocks[best] = fc_pool.blocks[--fc_pool.count];
        fc_pool.hits++;
    } else {
        fc_pool.misses++;
    }
    fc_pool.handed_bytes += size;
    pthread_mutex_unlock(&fc_pool.lock);
    return ptr;
}

/* give the least recently freed blocks back to the system until `bytes` more fit under the
 * limit (all of them for bytes = SIZE_MAX); call with the lock held */
static void fc_pool_evict_locked(size_t bytes)
{
    while (fc_pool.count > 0 && (fc_pool.count == FC_POOL_SLOTS || bytes == SIZE_MAX
            || fc_pool.cached_bytes + bytes > fc_pool.limit_bytes)) {
        int oldest = 0;
        for (int i = 1; i < fc_pool.count; i++)
            if (((fc_pool_header *)fc_pool.blocks[i].base)->handed_at_free
                    < ((fc_pool_header *)fc_pool.blocks[oldest].base)->handed_at_free)
                oldest = i;
        fc_pool_system_free(fc_pool.blocks[oldest].base, fc_pool.blocks[oldest].capacity);
        fc_pool.cached_bytes -= fc_pool.blocks[oldest].capacity;
        fc_pool.blocks[oldest] = fc_pool.blocks[--fc_pool.count];
    }
}

static void fc_pool_release(void);

static void *fc_pool_malloc(void *ctx, size_t size)
{
    void *ptr;
    (void)ctx;
    if (size >= FC_POOL_MIN_BYTES) {
        ptr = fc_pool_take(size);
        if (ptr != NULL)
            return ptr;
    }
    ptr = fc_pool_new_block(size ? size : 1);
    if (ptr == NULL && fc_pool.count > 0) {
        /* out of memory with blocks cached: give them back and try once more */
        fc_pool_release();
        ptr = fc_pool_new_block(size ? size : 1);
    }
    return ptr;
}

static void *fc_pool_calloc(void *ctx, size_t count, size_t item_size)
{
    size_t size;
    void *ptr;
    if (item_size != 0 && count > SIZE_MAX / item_size)
        return NULL;
    size = count * item_size;
    ptr = fc_pool_malloc(ctx, size);
    if (ptr != NULL)
        memset(ptr, 0, size);
    return ptr;
}

static void fc_pool_free(void *ctx, void *ptr, size_t size)
{
    size_t capacity;
    char *base;
    (void)ctx; (void)size;
    if (ptr == NULL)
        return;
    capacity = fc_pool_capacity_of(ptr);
    base = (char *)ptr - FC_POOL_HEADER;
    if (capacity >= FC_POOL_MIN_BYTES) {
        pthread_mutex_lock(&fc_pool.lock);
        if (capacity <= fc_pool.limit_bytes) {
            fc_pool_evict_locked(capacity);
            ((fc_pool_header *)base)->handed_at_free = fc_pool.handed_bytes;
            fc_pool.blocks[fc_pool.count].base = base;
            fc_pool.blocks[fc_pool.count].capacity = capacity;
            fc_pool.count++;
            fc_pool.cached_bytes += capacity;
            base = NULL;
        }
        pthread_mutex_unlock(&fc_pool.lock);
    }
    if (base != NULL)
        fc_pool_system_free(base, capacity);
}

static void *fc_pool_realloc(void *ctx, void *ptr, size_t new_size)
{
    void *moved;
    size_t capacity;
    if (ptr == NULL)
        return fc_pool_malloc(ctx, new_size);
    capacity = fc_pool_capacity_of(ptr);
    if (new_size <= capacity && capacity - (capacity >> FC_POOL_FIT_SHIFT) <= new_size)
        return ptr;
    moved = fc_pool_malloc(ctx, new_size);
    if (moved == NULL)
        return NULL;
    memcpy(moved, ptr, capacity < new_size ? capacity : new_size);
    fc_pool_free(ctx, ptr, capacity);
    return moved;
}

/* the byte limit of the cache; blocks over it are given back at once */
static void fc_pool_set_limit(size_t limit_bytes)
{
    pthread_mutex_lock(&fc_pool.lock);
    fc_pool.limit_bytes = limit_bytes;
    fc_pool_evict_locked(0);
    pthread_mutex_unlock(&fc_pool.lock);
}

static void fc_pool_release(void)
{
    pthread_mutex_lock(&fc_pool.lock);
    fc_pool_evict_locked(SIZE_MAX);
    pthread_mutex_unlock(&fc_pool.lock);
}

#ifdef NPY_1_22_API_VERSION
static PyDataMem_Handler fc_pool_handler = {
    "fastconv_pool", 1,
    {NULL, fc_pool_malloc, fc_pool_calloc, fc_pool_realloc, fc_pool_free}
};

/* the handler as NumPy's PyDataMem_SetHandler takes it */
static PyObject *fc_pool_new_capsule(void)
{
    return PyCapsule_New(&fc_pool_handler, "mem_handler", NULL);
}
#endif

/* In a child forked while another thread held the lock (NumPy allocates under the GIL, so
 * only a thread that released it could), the lock would stay held: the child starts with a
 * fresh one (registered once, at import). */
static void fc_pool_reset_lock_in_child(void)
{
    pthread_mutex_init(&fc_pool.lock, NULL);
}

static int fc_pool_register_fork_handler(void)
{
    return pthread_atfork(NULL, NULL, fc_pool_reset_lock_in_child);
}

/* cached bytes, cached blocks, limit, hits, misses */
static void fc_pool_stats(uint64_t out[5])
{
    pthread_mutex_lock(&fc_pool.lock);
    out[0] = fc_pool.cached_bytes;
    out[1] = (uint64_t)fc_pool.count;
    out[2] = fc_pool.limit_bytes;
    out[3] = fc_pool.hits;
    out[4] = fc_pool.misses;
    pthread_mutex_unlock(&fc_pool.lock);
}

#endif
