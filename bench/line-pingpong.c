/*
 * The cost of moving one cache line between the two processors: two
 * threads, pinned to processors 0 and 1, hand a counter in one cache line
 * back and forth (each waits, spinning, for the other's store). Prints the
 * round trip. Every frame that crosses a bus from a writer on one
 * processor to a reader on the other pays this for each line it touches,
 * so it says how much of a throughput figure is the host's (it changed
 * between 230 and 290 ns within one session on the 2-vCPU machines here;
 * two processors of one socket usually take 100-150 ns).
 *
 * Build: gcc -O2 -pthread bench/line-pingpong.c -o /tmp/lp; run: /tmp/lp
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Atomic long turn __attribute__((aligned(64)));
#define ROUNDS 2000000L

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *echo(void *unused)
{
	(void)unused;
	pin(1);
	for (long i = 0; i < ROUNDS; i++) {
		while (atomic_load(&turn) != 2 * i + 1)
			;
		atomic_store(&turn, 2 * i + 2);
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	struct timespec a, b;
	pthread_create(&t, NULL, echo, NULL);
	pin(0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < ROUNDS; i++) {
		atomic_store(&turn, 2 * i + 1);
		while (atomic_load(&turn) != 2 * i + 2)
			;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(t, NULL);
	printf("cache line round trip between processors 0 and 1: %.1f ns\n",
	       ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / ROUNDS);
	return 0;
}
