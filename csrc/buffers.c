/*
 * buffers.c -- the kernel's reusable scratch buffers (ncalc_buffer_get,
 * ncalc_buffer_put, ncalc_release_buffers; see ncalc.h).
 *
 * Why: the octave DoG needs about 3 bytes per pixel of scratch for its
 * coarser levels. Allocated afresh on every call, each page of it is
 * faulted in and zeroed by the operating system on first touch; on a
 * virtual machine that cost a 4096x3328 detection about 4000 page faults
 * and several milliseconds. Buffers given back here are kept (up to
 * NCALC_POOL_MAX_BYTES in all) and handed out again for requests of up to
 * their size and at least half of it, so repeated detections on images of
 * similar size reuse pages that are already mapped.
 *
 * Each buffer carries a 64-byte header holding its capacity; its data are
 * aligned as malloc's are. Buffers of 4 MiB or more are allocated 2 MiB-aligned
 * and advised for transparent huge pages on Linux (as NumPy does for its
 * arrays). A lock makes the pool safe for concurrent callers (Python
 * threads run the kernel without the GIL); where no lock is available, or
 * when compiled with -DNCALC_NO_POOL, the pool is off and buffers go
 * straight to malloc and free (exact-size blocks, e.g. for valgrind).
 * Under AddressSanitizer the bytes past the n asked for, and a whole
 * buffer while it is held here, are poisoned, so overruns and uses after
 * ncalc_buffer_put are reported as they would be with malloc and free.
 */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* madvise, posix_memalign */
#endif
#include "ncalc.h"

#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(_WIN32)
#include <windows.h>
static SRWLOCK pool_lock = SRWLOCK_INIT;
#define POOL_LOCK() AcquireSRWLockExclusive(&pool_lock)
#define POOL_UNLOCK() ReleaseSRWLockExclusive(&pool_lock)
#elif defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
/* fork() while another thread holds the lock would leave it locked for
 * ever in the child: the forking thread takes it first and both sides
 * release it after (registered on first use) */
static pthread_once_t pool_atfork_once = PTHREAD_ONCE_INIT;
static void pool_prepare(void) { pthread_mutex_lock(&pool_lock); }
static void pool_release(void) { pthread_mutex_unlock(&pool_lock); }
static void pool_atfork(void) { pthread_atfork(pool_prepare, pool_release, pool_release); }
#define POOL_LOCK() (pthread_once(&pool_atfork_once, pool_atfork), pthread_mutex_lock(&pool_lock))
#define POOL_UNLOCK() pthread_mutex_unlock(&pool_lock)
#else
#ifndef NCALC_NO_POOL
#define NCALC_NO_POOL
#endif
#define POOL_LOCK() ((void)0)
#define POOL_UNLOCK() ((void)0)
#endif

#if defined(__SANITIZE_ADDRESS__)
#define NCALC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NCALC_ASAN 1
#endif
#endif
#ifdef NCALC_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define HEADER 64
#define NCALC_POOL_SLOTS 16
#define NCALC_POOL_MAX_BYTES ((size_t)256 << 20)

typedef struct {
    void *base;   /* what the allocator returned (header at base) */
    size_t cap;   /* usable bytes after the header */
    unsigned long age; /* when it was given back (larger: later) */
} slot_t;

static slot_t pool[NCALC_POOL_SLOTS];
static size_t pool_bytes;
#ifndef NCALC_NO_POOL
static unsigned long pool_clock;
#endif

static void *raw_alloc(size_t cap)
{
    const size_t n = cap + HEADER;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (n >= 2 * huge) {
        void *p = NULL;
        if (posix_memalign(&p, huge, n) != 0) return NULL;
        madvise(p, n & ~(huge - 1), MADV_HUGEPAGE); /* advice only: failure is harmless */
        return p;
    }
#endif
    return malloc(n);
}

void *ncalc_buffer_get(size_t n)
{
    if (n == 0) n = 1;
    if (n > (size_t)-1 / 2 - HEADER) return NULL;
#ifndef NCALC_NO_POOL
    POOL_LOCK();
    int best = -1;
    for (int i = 0; i < NCALC_POOL_SLOTS; i++) {
        const size_t c = pool[i].cap;
        if (pool[i].base && c >= n && c / 2 <= n && (best < 0 || c < pool[best].cap)) best = i;
    }
    void *base = NULL;
    size_t cap = 0;
    if (best >= 0) {
        base = pool[best].base;
        cap = pool[best].cap;
        pool_bytes -= cap;
        pool[best].base = NULL;
        pool[best].cap = 0;
    }
    POOL_UNLOCK();
    if (base) {
        char *data = (char *)base + HEADER;
        UNPOISON(data, n);
        POISON(data + n, cap - n);
        return data;
    }
#endif
    void *p = raw_alloc(n);
    if (!p) return NULL;
    *(size_t *)p = n;
    return (char *)p + HEADER;
}

void ncalc_buffer_put(void *buf)
{
    if (!buf) return;
    void *base = (char *)buf - HEADER;
#ifndef NCALC_NO_POOL
    const size_t cap = *(size_t *)base;
    if (cap <= NCALC_POOL_MAX_BYTES) {
        POISON(buf, cap);
        void *evicted[NCALC_POOL_SLOTS];
        int ne = 0;
        POOL_LOCK();
        /* room: drop the buffers given back longest ago until it fits */
        for (;;) {
            int free_slot = -1, oldest = -1;
            for (int i = 0; i < NCALC_POOL_SLOTS; i++) {
                if (!pool[i].base) {
                    if (free_slot < 0) free_slot = i;
                } else if (oldest < 0 || pool[i].age < pool[oldest].age) {
                    oldest = i;
                }
            }
            if (free_slot >= 0 && pool_bytes + cap <= NCALC_POOL_MAX_BYTES) {
                pool[free_slot].base = base;
                pool[free_slot].cap = cap;
                pool[free_slot].age = ++pool_clock;
                pool_bytes += cap;
                base = NULL;
                break;
            }
            if (oldest < 0) break; /* cannot happen: cap <= the maximum */
            evicted[ne++] = pool[oldest].base;
            pool_bytes -= pool[oldest].cap;
            pool[oldest].base = NULL;
            pool[oldest].cap = 0;
        }
        POOL_UNLOCK();
        for (int i = 0; i < ne; i++) free(evicted[i]);
    }
#endif
    free(base); /* NULL when kept */
}

size_t ncalc_buffers_held(void)
{
    POOL_LOCK();
    const size_t n = pool_bytes;
    POOL_UNLOCK();
    return n;
}

void ncalc_release_buffers(void)
{
    void *all[NCALC_POOL_SLOTS];
    int n = 0;
    POOL_LOCK();
    for (int i = 0; i < NCALC_POOL_SLOTS; i++) {
        if (pool[i].base) all[n++] = pool[i].base;
        pool[i].base = NULL;
        pool[i].cap = 0;
    }
    pool_bytes = 0;
    POOL_UNLOCK();
    for (int i = 0; i < n; i++) free(all[i]);
}
