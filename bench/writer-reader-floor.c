/* The floor of BENCHMARKS.md, "The reader's cursor watch off the lock's
 * line (stop 28)" and "Lines fetched for writing (stop 31)": one thread on
 * CPU 0 writing 1514-byte frames (a 24-byte header, then the payload) back
 * to back into a ring of N MiB (argv[1]), publishing its position every 32
 * frames, and one thread on CPU 1 that follows it and reads each frame's
 * first words where they lie, as a registered reader in place does; the
 * writer never laps the reader. What plain C gets from this host's caches
 * for the extended bus's 1 -> 1 row, with no ring code at all.
 *
 * Options (environment), each a feature of the library's writer:
 *   EVICT=1   load each header about to be overwritten first, as the
 *             eviction walk does;
 *   CTL=1     three stores a frame to a control line, as gen/first/last;
 *   NSRC=N    copy from N source frames in turn (the library's writer
 *             sends batches of 31 distinct frames), not one;
 *   SHM=1     a MAP_SHARED mapping of /dev/shm/wrfloor, not private memory;
 *   PFW=K     before each frame, fetch the lines of frame n+K for writing
 *             (K=1 is what `send_batch` does since stop 31). Built with
 *             -mprfchw this is PREFETCHW; without, gcc emits PREFETCHT0.
 *   NOREAD=1  the reader publishes its position without reading frames.
 *
 * Build: gcc -O2 -mprfchw -pthread bench/writer-reader-floor.c -o /tmp/wr
 * Run:   EVICT=1 CTL=1 NSRC=31 SHM=1 /tmp/wr 4; the same with PFW=1 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SLOT 1544

static size_t ring;
static char *r;
static _Atomic long wpos __attribute__((aligned(64)));
static _Atomic long rpos __attribute__((aligned(64)));
static _Atomic long ctl[8] __attribute__((aligned(64)));
static int noread;
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
            if (!noread)
                sink += *(long *)(r + off) + *(long *)(r + off + 24);
        }
        atomic_store_explicit(&rpos, p, memory_order_release);
    }
    return 0;
}

static double secs(struct timespec a, struct timespec b) {
    return b.tv_sec - a.tv_sec + (b.tv_nsec - a.tv_nsec) / 1e9;
}

static int env(const char *name, int dflt) {
    const char *v = getenv(name);
    return v ? atoi(v) : dflt;
}

int main(int argc, char **argv) {
    ring = (size_t)atoi(argc > 1 ? argv[1] : "4") << 20;
    int evict = env("EVICT", 0), ctlon = env("CTL", 0), nsrc = env("NSRC", 1);
    int pfw = env("PFW", 0);
    noread = env("NOREAD", 0);
    if (nsrc < 1)
        nsrc = 1;
    if (env("SHM", 0)) {
        int fd = open("/dev/shm/wrfloor", O_RDWR | O_CREAT, 0600);
        if (fd < 0 || ftruncate(fd, ring) != 0)
            return perror("/dev/shm/wrfloor"), 1;
        r = mmap(0, ring, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        unlink("/dev/shm/wrfloor");
        if (r == MAP_FAILED)
            return perror("mmap"), 1;
    } else {
        r = aligned_alloc(64, ring);
    }
    memset(r, 0, ring);
    char *srcs = malloc((size_t)nsrc * 1600);
    memset(srcs, 1, (size_t)nsrc * 1600);
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
            if (pfw) {
                size_t next = ((n + pfw) % slots) * SLOT;
                for (int q = 0; q < SLOT; q += 64)
                    __builtin_prefetch(r + next + q, 1, 3);
            }
            if (evict && *(volatile long *)(r + off) < 0)
                abort();
            *(long *)(r + off) = n;
            memcpy(r + off + 24, srcs + (size_t)(k % nsrc) * 1600, 1514);
            if (ctlon) {
                atomic_store_explicit(&ctl[0], n, memory_order_relaxed);
                atomic_store_explicit(&ctl[1], off, memory_order_relaxed);
                atomic_store_explicit(&ctl[2], off, memory_order_relaxed);
            }
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
    printf("ring %zu MiB%s%s: %.2f Mframes/s\n", ring >> 20, evict ? ", header loaded first" : "",
           pfw ? ", next lines fetched for writing" : "", n / secs(a, b) / 1e6);
    return 0;
}
