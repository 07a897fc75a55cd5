/* pool.c: a small pool of C11 threads that runs the tasks of one job, the
 * calling thread taking part. Tasks are numbered and each always does the
 * same work, so results never depend on which thread ran what.
 *
 * Waking a sleeping thread costs tens of microseconds, as long as a whole
 * mid-sized product: so a thread that has just finished spins a little on
 * the job counter before it sleeps, and the next job of a training step
 * usually finds it awake. */
/* POSIX for the ThreadSanitizer build, whose <threads.h> is a pthreads shim
 * (tests/tsan/threads.h); the C11 threads used here need nothing more. */
#define _POSIX_C_SOURCE 200809L
#include "exec.h"

#include <stdatomic.h>
#include <threads.h>

enum { SPIN = 20000 }; /* polls before sleeping: some tens of microseconds */

/* One poll of a spin. Every 256th gives the CPU away, so that spinning
 * threads do not starve the one they wait for when there are more threads
 * than CPUs (a cgroup quota, a busy machine). */
static void relax(int i)
{
    if (i % 256 == 255) {
        thrd_yield();
        return;
    }
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#endif
}

struct ag_pool {
    mtx_t mu;
    cnd_t work, done;
    thrd_t *threads;
    size_t cap;           /* threads allocated */
    size_t n_threads;     /* workers started, not counting the caller */
    ag_task_fn fn;        /* the current job */
    void *ctx;
    size_t n_tasks, next;
    atomic_size_t finished;
    atomic_uint_fast64_t job; /* counts jobs, so workers see a new one */
    atomic_bool quit;
};

/* Takes and runs tasks of the current job until none is left; mu held. */
static void drain(ag_pool *p)
{
    while (p->next < p->n_tasks) {
        size_t task = p->next++;
        mtx_unlock(&p->mu);
        p->fn(p->ctx, task);
        mtx_lock(&p->mu);
        if (atomic_fetch_add(&p->finished, 1) + 1 == p->n_tasks)
            cnd_broadcast(&p->done);
    }
}

static int worker(void *arg)
{
    ag_pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN && atomic_load(&p->job) == seen && !atomic_load(&p->quit); i++)
            relax(i);
        mtx_lock(&p->mu);
        while (!atomic_load(&p->quit) && atomic_load(&p->job) == seen)
            cnd_wait(&p->work, &p->mu);
        if (atomic_load(&p->quit)) {
            mtx_unlock(&p->mu);
            return 0;
        }
        seen = atomic_load(&p->job);
        drain(p);
        mtx_unlock(&p->mu);
    }
}

ag_pool *ag__pool_new(size_t n_threads)
{
    size_t bytes;
    if (!ag__mul_size(n_threads, sizeof(thrd_t), &bytes)) /* an absurd count: no pool */
        return NULL;
    ag_pool *p = ag__calloc(sizeof *p);
    if (!p)
        return NULL;
    p->cap = n_threads;
    p->threads = n_threads ? ag__calloc(bytes) : NULL;
    if ((n_threads && !p->threads) || mtx_init(&p->mu, mtx_plain) != thrd_success) {
        ag__free(p->threads, bytes);
        ag__free(p, sizeof *p);
        return NULL;
    }
    cnd_init(&p->work);
    cnd_init(&p->done);
    for (; p->n_threads < n_threads; p->n_threads++) /* fewer threads if some fail */
        if (thrd_create(&p->threads[p->n_threads], worker, p) != thrd_success)
            break;
    return p;
}

void ag__pool_free(ag_pool *p)
{
    if (!p)
        return;
    mtx_lock(&p->mu);
    atomic_store(&p->quit, true);
    cnd_broadcast(&p->work);
    mtx_unlock(&p->mu);
    for (size_t i = 0; i < p->n_threads; i++)
        thrd_join(p->threads[i], NULL);
    cnd_destroy(&p->work);
    cnd_destroy(&p->done);
    mtx_destroy(&p->mu);
    ag__free(p->threads, p->cap * sizeof *p->threads);
    ag__free(p, sizeof *p);
}

size_t ag__pool_threads(const ag_pool *p)
{
    return p ? p->n_threads + 1 : 1;
}

void ag__pool_run(ag_pool *p, size_t n_tasks, ag_task_fn fn, void *ctx)
{
    if (!p || p->n_threads == 0 || n_tasks < 2) {
        for (size_t i = 0; i < n_tasks; i++)
            fn(ctx, i);
        return;
    }
    mtx_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    p->next = 0;
    atomic_store(&p->finished, 0);
    atomic_fetch_add(&p->job, 1);
    cnd_broadcast(&p->work);
    drain(p);
    mtx_unlock(&p->mu);
    for (int i = 0; i < SPIN && atomic_load(&p->finished) < n_tasks; i++)
        relax(i);
    mtx_lock(&p->mu);
    while (atomic_load(&p->finished) < n_tasks)
        cnd_wait(&p->done, &p->mu);
    mtx_unlock(&p->mu);
}
