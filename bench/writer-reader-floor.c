/* The floor of BENCHMARKS.md, "The reader's cursor watch off the lock's
 * line (stop 28)": one thread on CPU 0 writing 1514-byte frames (a 24-byte
 * header, then the payload) back to back into a ring of N MiB (argv[1]),
 * publishing its position every 32 frames, and one thread on CPU 1 that
 * follows it and reads each frame's first words where they lie, as a
 * registered reader in place does; the writer never laps the reader. What
 * plain C gets from this host's caches for the extended bus's 1 -> 1 row,
 * with no ring code at all. EVICT=1 makes the writer load each header it
 * is about to overwrite first, as the eviction walk does.
 * Build: gcc -O2 -pthread bench/writer-reader-floor.c -o /tmp/wr; run: /tmp/wr 4 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define SLOT 1544
static size_t ring;
static char *r;
static _Atomic long wpos, rpos;
static _Atomic int stop;
static void pin(int cpu) {
    cpu_set_t c;
    CPU_ZERO(&c);
    CPU_SET(cpu, &c);
    sched_setaffinity(0, sizeof c, &c);
}
static void *reader(void *x) {
    (void)x;
    pin(1);
    long p = 0;
    volatile long sink = 0;
    while (!stop) {
        long w = atomic_load_explicit(&wpos, memory_order_acquire);
        for (; p < w; p++) {
            size_t off = (p % (ring / SLOT)) * SLOT;
            sink += *(long *)(r + off) + *(long *)(r + off + 24);
        }
        atomic_store_explicit(&rpos, p, memory_order_release);
    }
    return 0;
}
static double secs(struct timespec a, struct timespec b) {
    return b.tv_sec - a.tv_sec + (b.tv_nsec - a.tv_nsec) / 1e9;
}
int main(int argc, char **argv) {
    ring = (size_t)atoi(argc > 1 ? argv[1] : "4") << 20;
    int evict = getenv("EVICT") != 0;
    r = aligned_alloc(64, ring);
    memset(r, 0, ring);
    char src[1600];
    memset(src, 1, sizeof src);
    pin(0);
    pthread_t t;
    pthread_create(&t, 0, reader, 0);
    long slots = ring / SLOT, n = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (;;) {
        while (n - atomic_load_explicit(&rpos, memory_order_acquire) >= slots - 64)
            ;
        for (int k = 0; k < 32; k++, n++) {
            size_t off = (n % slots) * SLOT;
            if (evict && *(volatile long *)(r + off) < 0)
                abort();
            *(long *)(r + off) = n;
            memcpy(r + off + 24, src, 1514);
        }
        atomic_store_explicit(&wpos, n, memory_order_release);
        if ((n & 0xffff) < 32) {
            clock_gettime(CLOCK_MONOTONIC, &b);
            if (secs(a, b) > 1.0)
                break;
        }
    }
    stop = 1;
    pthread_join(t, 0);
    printf("ring %zu MiB%s: %.2f Mframes/s\n", ring >> 20, evict ? ", header loaded first" : "",
           n / secs(a, b) / 1e6);
    return 0;
}
