/* exec.c: the threads and scratch memory a tape lends its kernels, the
 * cost model that says how many threads a job gets, and elementwise passes
 * split over the threads. */
#define _POSIX_C_SOURCE 200809L /* sysconf */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity: the CPUs this process may run on */
#include <sched.h>
#endif
#include "exec.h"

#include <stdio.h>
#include <string.h>
#include <threads.h>
#include <unistd.h>

#if defined(__linux__)
/* core_of[c]: the lowest-numbered CPU of c's core (its SMT siblings share
 * it), read once per process from sysfs; c itself where that is unknown. */
static short core_of[CPU_SETSIZE];
static once_flag cores_read = ONCE_FLAG_INIT;

static void read_cores(void)
{
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    int n = conf > 0 && conf < CPU_SETSIZE ? (int)conf : CPU_SETSIZE;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        core_of[c] = (short)c;
        char path[80];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", c);
        FILE *f = c < n ? fopen(path, "r") : NULL;
        int first; /* the list is sorted: "0,8" or "0-1" */
        if (f && fscanf(f, "%d", &first) == 1 && first >= 0 && first < c)
            core_of[c] = (short)first;
        if (f)
            fclose(f);
    }
}
#endif

/* The CPUs this process may run on (*cpus) and their cores (returned):
 * under taskset or a cpuset that is fewer than the machine has, and a
 * thread per online CPU would make the pool's threads wait on each other;
 * and two threads on one core's SMT siblings share its vector units and
 * caches, so a product gains nothing from the second while every job pays
 * for waking it (PyTorch's default is likewise one per core). */
static size_t usable_cores(size_t *cpus)
{
#if defined(__linux__)
    cpu_set_t set, cores;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
        call_once(&cores_read, read_cores);
        CPU_ZERO(&cores);
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set))
                CPU_SET(core_of[c], &cores);
        *cpus = (size_t)CPU_COUNT(&set);
        return (size_t)CPU_COUNT(&cores);
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    *cpus = n > 0 ? (size_t)n : 1;
    return *cpus;
}

void ag__exec_init(ag_exec *x)
{
    memset(x, 0, sizeof *x);
    x->cores = usable_cores(&x->cpus);
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
    size_t n = x->threads ? x->threads : x->cores;
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

/* ------------------------------------------------------------ cost model */

size_t ag__exec_threads_for(const ag_exec *x, size_t work, size_t grain)
{
    size_t k = grain ? work / grain : work, most = ag__exec_threads(x);
    return k < 1 ? 1 : k < most ? k : most;
}

/* ------------------------------------------------------------ ranges */

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
    size_t threads = n < 2 * RANGE_ALIGN ? 1 : ag__exec_threads_for(x, work, AG_EXEC_GRAIN_ELEMS);
    ag_pool *pool = threads > 1 ? ag__exec_pool(x) : NULL;
    if (threads > ag__pool_threads(pool))
        threads = ag__pool_threads(pool);
    if (threads < 2) {
        fn(ctx, 0, n);
        return;
    }
    size_t chunk = (n + threads - 1) / threads;
    chunk = (chunk + RANGE_ALIGN - 1) / RANGE_ALIGN * RANGE_ALIGN;
    range_job j = {fn, ctx, n, chunk};
    ag__pool_run(pool, (n + chunk - 1) / chunk, range_task, &j);
}
