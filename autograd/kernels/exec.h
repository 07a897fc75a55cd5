/* exec.h: what the kernels run on, lent to them by their caller (a tape):
 * a thread pool started on first use and a grow-only scratch buffer. The
 * kernels depend on nothing above this: errors come back as a status. */
#ifndef AG_EXEC_H
#define AG_EXEC_H

#include "../base.h"

typedef struct ag_pool ag_pool;

typedef struct {
    size_t threads;     /* asked for; 0 = one per CPU we may use */
    size_t cpus;        /* CPUs we may use, read when made */
    ag_pool *pool;      /* started on first parallel job */
    bool pool_failed;   /* it could not start: jobs run on the caller */
    void *scratch;      /* packing space, grow-only, AG_ALIGN-aligned inside */
    size_t scratch_size;
} ag_exec;

/* A context for this process's CPUs (affinity mask on Linux). */
void ag__exec_init(ag_exec *x);
void ag__exec_free(ag_exec *x);
/* Asks for n threads (0: one per CPU; capped at AG_EXEC_MAX_THREADS); a
 * running pool of another size stops, the next job starts the new one. */
#define AG_EXEC_MAX_THREADS 1024
void ag__exec_set_threads(ag_exec *x, size_t n);
/* The threads jobs run on, the caller included (see ag_tape_threads). */
size_t ag__exec_threads(const ag_exec *x);
/* The pool, started on first use; NULL when one thread is asked for or
 * none could start (jobs then run on the calling thread). */
ag_pool *ag__exec_pool(ag_exec *x);
/* At least n bytes of scratch, 64-byte aligned, kept until the next call;
 * NULL when it cannot grow. */
void *ag__exec_scratch(ag_exec *x, size_t n);

/* Calls fn(ctx, lo, hi) over chunks covering [0, n), one per thread, when
 * the job is worth sharing (work: about how many elements it touches);
 * else fn(ctx, 0, n) on the calling thread. fn must give the same result
 * however [0, n) is cut: each chunk writes only its own outputs. */
void ag__exec_range(ag_exec *x, size_t n, size_t work, ag_range_fn fn, void *ctx);

/* GEMM (gemm.c): C[m,n] = op(A)·op(B), or C += op(A)·op(B) when
 * accumulate, where op(A) is [m,k]: A stored [m,k], or [k,m] read
 * transposed when ta; likewise B [k,n], or [n,k] when tb. Row-major,
 * contiguous. AG_ERR_NOMEM when the packing space cannot grow (C is then
 * untouched). */
ag_status ag__gemm(ag_exec *x, ag_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k,
                   const void *A, const void *B, bool accumulate, void *C);

/* Thread pool (pool.c). A job is n_tasks calls fn(ctx, task), spread over
 * the pool's threads and the caller; run returns when all are done. */
typedef void (*ag_task_fn)(void *ctx, size_t task);
ag_pool *ag__pool_new(size_t n_workers);   /* NULL on failure */
void ag__pool_free(ag_pool *p);
void ag__pool_run(ag_pool *p, size_t n_tasks, ag_task_fn fn, void *ctx); /* p NULL: inline */
size_t ag__pool_threads(const ag_pool *p);  /* workers + the caller */

#endif
