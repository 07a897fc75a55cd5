/* exec.c: the threads and scratch memory a tape lends its kernels, and
 * elementwise passes split over the threads. */
#define _POSIX_C_SOURCE 200809L /* sysconf */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity: the CPUs this process may run on */
#include <sched.h>
#endif
#include "exec.h"

#include <string.h>
#include <unistd.h>

/* The CPUs this process may run on: under taskset or a cpuset that is
 * fewer than the machine has, and a thread per online CPU would make the
 * pool's threads wait on each other. */
static size_t usable_cpus(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

void ag__exec_init(ag_exec *x)
{
    memset(x, 0, sizeof *x);
    x->cpus = usable_cpus();
}

void ag__exec_free(ag_exec *x)
{
    ag__pool_free(x->pool);
    ag__free(x->scratch, x->scratch_size + AG_ALIGN);
    memset(x, 0, sizeof *x);
}

/* The count the pool starts with (or has). */
static size_t planned_threads(const ag_exec *x)
{
    size_t n = x->threads ? x->threads : x->cpus;
    return n < AG_EXEC_MAX_THREADS ? n : AG_EXEC_MAX_THREADS;
}

size_t ag__exec_threads(const ag_exec *x)
{
    if (x->pool)
        return ag__pool_threads(x->pool);
    return x->pool_failed ? 1 : planned_threads(x);
}

void ag__exec_set_threads(ag_exec *x, size_t n)
{
    if (n == x->threads)
        return;
    ag__pool_free(x->pool); /* the next parallel job starts one of the new size */
    x->pool = NULL;
    x->pool_failed = false;
    x->threads = n;
}

ag_pool *ag__exec_pool(ag_exec *x)
{
    size_t n = planned_threads(x);
    if (n > 1 && !x->pool && !x->pool_failed) {
        x->pool = ag__pool_new(n - 1);
        x->pool_failed = !x->pool;
    }
    return n > 1 ? x->pool : NULL;
}

void *ag__exec_scratch(ag_exec *x, size_t n)
{
    if (n > x->scratch_size) {
        void *p = n <= SIZE_MAX - AG_ALIGN ? ag__alloc(n + AG_ALIGN) : NULL;
        if (!p)
            return NULL;
        ag__free(x->scratch, x->scratch_size + AG_ALIGN);
        x->scratch = p;
        x->scratch_size = n;
    }
    uintptr_t base = (uintptr_t)x->scratch;
    return (void *)((base + AG_ALIGN - 1) & ~(uintptr_t)(AG_ALIGN - 1));
}

/* ------------------------------------------------------------ ranges */

/* Below this many elements an elementwise pass stays on the calling thread:
 * it takes a few microseconds, about what handing out a job costs. */
#define RANGE_PARALLEL_MIN ((size_t)1 << 14)
enum { RANGE_ALIGN = 16 }; /* chunk edges on 64-byte lines for f32 */

typedef struct {
    ag_range_fn fn;
    void *ctx;
    size_t n, chunk;
} range_job;

static void range_task(void *ctx, size_t task)
{
    const range_job *j = ctx;
    size_t lo = task * j->chunk, hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
    j->fn(j->ctx, lo, hi);
}

void ag__exec_range(ag_exec *x, size_t n, size_t work, ag_range_fn fn, void *ctx)
{
    ag_pool *pool = work >= RANGE_PARALLEL_MIN ? ag__exec_pool(x) : NULL;
    size_t threads = ag__pool_threads(pool);
    if (threads < 2 || n < 2 * RANGE_ALIGN) {
        fn(ctx, 0, n);
        return;
    }
    size_t chunk = (n + threads - 1) / threads;
    chunk = (chunk + RANGE_ALIGN - 1) / RANGE_ALIGN * RANGE_ALIGN;
    range_job j = {fn, ctx, n, chunk};
    ag__pool_run(pool, (n + chunk - 1) / chunk, range_task, &j);
}
