/* pool.c: a small pool of C11 threads that runs the tasks of one job, the
 * calling thread taking part. Tasks are numbered and each always does the
 * same work, so results never depend on which thread ran what.
 *
 * A job of n tasks is offered to the first n - 1 workers only, each through
 * a flag on a cache line of its own: a two-task job on a 16-thread pool
 * touches one other core, not fifteen. Worker i accepts the offer (a
 * compare-and-swap on its flag) and runs task i + 1; the caller runs task
 * 0, then takes back the offers not yet accepted and runs those tasks
 * itself, so a worker that is not on a CPU (a busy machine, more threads
 * than CPUs) delays nothing. Tasks beyond the threads are claimed from a
 * counter. The caller returns once every worker that accepted has left the
 * job, and only then may the next job reuse the job's fields.
 *
 * Waking a sleeping thread costs tens of microseconds, as long as a whole
 * mid-sized product: so a thread that has just finished spins a little on
 * its flag before it sleeps, and the next job of a training step usually
 * finds it awake. Workers no job was offered to for a while sleep. */
/* POSIX for the ThreadSanitizer build, whose <threads.h> is a pthreads shim
 * (tests/tsan/threads.h); the C11 threads used here need nothing more. */
#define _POSIX_C_SOURCE 200809L
#include "exec.h"

#include <stdatomic.h>
#include <threads.h>

enum { SPIN = 20000 }; /* polls before sleeping: some tens of microseconds */

/* A worker's flag, go: 4·job + state, where the caller offers job j as
 * OFFERED, and either the worker accepts it (TAKEN) or the caller takes it
 * back (CANCELLED); QUIT ends the worker. */
enum { OFFERED, TAKEN, CANCELLED };
#define QUIT UINT64_MAX

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

/* One worker, alone on its cache lines (the array is padded, not aligned:
 * the allocator hook promises no more than malloc's alignment). */
typedef struct {
    atomic_uint_fast64_t go;
    atomic_bool asleep; /* waiting on wake (set under the pool's mu) */
    cnd_t wake;
    thrd_t thread;
    struct ag_pool *pool;
    size_t index;
} worker_slot;

typedef union {
    worker_slot w;
    char pad[128 * ((sizeof(worker_slot) + 127) / 128)];
} worker_line;

struct ag_pool {
    mtx_t mu;              /* only for sleeping and waking */
    cnd_t done;            /* the caller sleeps on it */
    worker_line *workers;
    size_t cap;            /* slots allocated */
    size_t n_threads;      /* workers started, not counting the caller */
    /* the current job: written by the caller before it offers the job,
     * read by the workers that accept it until they leave it */
    ag_task_fn fn;
    void *ctx;
    size_t n_tasks, helpers;
    uint64_t job;          /* jobs run, so workers see a new one */
    char pad0[64];
    atomic_size_t next;    /* the next task beyond one per thread */
    char pad1[64];
    atomic_size_t left;    /* offers not yet settled: accepted and running,
                            * or neither accepted nor taken back */
    atomic_bool caller_asleep;
    char pad2[64];
};

/* Runs the tasks beyond one per thread until none is left. */
static void drain(ag_pool *p)
{
    size_t n = p->n_tasks, task;
    while ((task = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed)) < n)
        p->fn(p->ctx, task);
}

/* Waits for a go value other than seen: spinning, then asleep. */
static uint64_t await_change(ag_pool *p, worker_slot *w, uint64_t seen)
{
    uint64_t go;
    for (int i = 0; i < SPIN; i++) {
        if ((go = atomic_load_explicit(&w->go, memory_order_acquire)) != seen)
            return go;
        relax(i);
    }
    mtx_lock(&p->mu);
    atomic_store(&w->asleep, true); /* then read go: the caller stores go, then reads asleep */
    while ((go = atomic_load(&w->go)) == seen)
        cnd_wait(&w->wake, &p->mu);
    atomic_store(&w->asleep, false);
    mtx_unlock(&p->mu);
    return go;
}

/* One offer settled (run, or taken back); the last wakes the caller if it
 * sleeps. After a worker's, the job's fields are the caller's again. */
static void settle(ag_pool *p)
{
    if (atomic_fetch_sub(&p->left, 1) == 1 && atomic_load(&p->caller_asleep)) {
        mtx_lock(&p->mu);
        cnd_signal(&p->done);
        mtx_unlock(&p->mu);
    }
}

/* Accepts the offer in go, if it is one: the task is then this worker's. A
 * flag that changed meanwhile (taken back, a newer offer) is read again.
 * Returns the flag's value as this worker leaves it. */
static uint64_t accept(worker_slot *w, uint64_t go, bool *taken)
{
    *taken = false;
    while (go != QUIT && go % 4 == OFFERED) {
        uint64_t seen = go;
        if (atomic_compare_exchange_strong(&w->go, &seen, go - OFFERED + TAKEN)) {
            *taken = true;
            return go - OFFERED + TAKEN;
        }
        go = seen;
    }
    return go;
}

static int worker(void *arg)
{
    worker_slot *w = arg;
    ag_pool *p = w->pool;
    uint64_t seen = 0;
    for (;;) {
        bool taken;
        seen = accept(w, await_change(p, w, seen), &taken);
        if (seen == QUIT)
            return 0;
        if (!taken)
            continue; /* taken back before we came */
        p->fn(p->ctx, w->index + 1);
        drain(p);
        settle(p);
    }
}

/* Stops and joins the workers started, then frees the pool. */
static void pool_destroy(ag_pool *p)
{
    mtx_lock(&p->mu);
    for (size_t i = 0; i < p->n_threads; i++) {
        atomic_store(&p->workers[i].w.go, QUIT);
        cnd_signal(&p->workers[i].w.wake);
    }
    mtx_unlock(&p->mu);
    for (size_t i = 0; i < p->n_threads; i++) {
        thrd_join(p->workers[i].w.thread, NULL);
        cnd_destroy(&p->workers[i].w.wake);
    }
    cnd_destroy(&p->done);
    mtx_destroy(&p->mu);
    ag__free(p->workers, p->cap * sizeof *p->workers);
    ag__free(p, sizeof *p);
}

ag_pool *ag__pool_new(size_t n_threads)
{
    size_t bytes;
    if (!ag__mul_size(n_threads, sizeof(worker_line), &bytes)) /* an absurd count: no pool */
        return NULL;
    ag_pool *p = ag__calloc(sizeof *p);
    if (!p)
        return NULL;
    p->cap = n_threads;
    p->workers = n_threads ? ag__calloc(bytes) : NULL;
    if ((n_threads && !p->workers) || mtx_init(&p->mu, mtx_plain) != thrd_success) {
        ag__free(p->workers, bytes);
        ag__free(p, sizeof *p);
        return NULL;
    }
    if (cnd_init(&p->done) != thrd_success) {
        mtx_destroy(&p->mu);
        ag__free(p->workers, bytes);
        ag__free(p, sizeof *p);
        return NULL;
    }
    for (; p->n_threads < n_threads; p->n_threads++) { /* fewer threads if some fail */
        worker_slot *w = &p->workers[p->n_threads].w;
        w->pool = p;
        w->index = p->n_threads;
        if (cnd_init(&w->wake) != thrd_success)
            break;
        if (thrd_create(&w->thread, worker, w) != thrd_success) {
            cnd_destroy(&w->wake);
            break;
        }
    }
    return p;
}

void ag__pool_free(ag_pool *p)
{
    if (p)
        pool_destroy(p);
}

size_t ag__pool_threads(const ag_pool *p)
{
    return p ? p->n_threads + 1 : 1;
}

/* Offers the job to the first k workers and wakes those asleep. */
static void offer(ag_pool *p, size_t k)
{
    uint64_t go = 4 * p->job + OFFERED;
    for (size_t i = 0; i < k; i++)
        atomic_store_explicit(&p->workers[i].w.go, go, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst); /* go before asleep, as the worker's reverse */
    bool sleepers = false;
    for (size_t i = 0; i < k && !sleepers; i++)
        sleepers = atomic_load(&p->workers[i].w.asleep);
    if (!sleepers)
        return;
    mtx_lock(&p->mu);
    for (size_t i = 0; i < k; i++)
        if (atomic_load(&p->workers[i].w.asleep))
            cnd_signal(&p->workers[i].w.wake);
    mtx_unlock(&p->mu);
}

/* Takes back the offers not yet accepted and runs their tasks. */
static void take_back(ag_pool *p)
{
    uint64_t go = 4 * p->job + OFFERED;
    for (size_t i = 0; i < p->helpers; i++) {
        atomic_uint_fast64_t *flag = &p->workers[i].w.go;
        uint64_t offer = go;
        if (atomic_load_explicit(flag, memory_order_relaxed) == go &&
            atomic_compare_exchange_strong(flag, &offer, go - OFFERED + CANCELLED)) {
            p->fn(p->ctx, i + 1);
            settle(p);
        }
    }
}

void ag__pool_run(ag_pool *p, size_t n_tasks, ag_task_fn fn, void *ctx)
{
    size_t helpers = p && n_tasks > 1 ? n_tasks - 1 : 0;
    if (p && helpers > p->n_threads)
        helpers = p->n_threads;
    if (!helpers) {
        for (size_t i = 0; i < n_tasks; i++)
            fn(ctx, i);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    p->helpers = helpers;
    atomic_store_explicit(&p->next, helpers + 1, memory_order_relaxed);
    atomic_store_explicit(&p->left, helpers, memory_order_relaxed);
    p->job++;
    offer(p, helpers);
    fn(ctx, 0);
    drain(p);
    take_back(p);
    for (int i = 0; i < SPIN; i++) {
        if (atomic_load_explicit(&p->left, memory_order_acquire) == 0)
            return;
        relax(i);
    }
    mtx_lock(&p->mu);
    atomic_store(&p->caller_asleep, true); /* then read left: the worker's reverse */
    while (atomic_load(&p->left) > 0)
        cnd_wait(&p->done, &p->mu);
    atomic_store(&p->caller_asleep, false);
    mtx_unlock(&p->mu);
}
