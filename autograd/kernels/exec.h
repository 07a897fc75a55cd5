/* exec.h: what the kernels run on, lent to them by their caller (a tape):
 * a thread pool started on first use and a grow-only scratch buffer. The
 * kernels depend on nothing above this: errors come back as a status. */
#ifndef AG_EXEC_H
#define AG_EXEC_H

#include "../base.h"

typedef struct ag_pool ag_pool;

typedef struct {
    size_t threads;     /* asked for; 0 = one per core we may use */
    size_t cpus;        /* CPUs we may use, read when made */
    size_t cores;       /* the cores they are on: the default thread count */
    ag_pool *pool;      /* started on first parallel job */
    bool pool_failed;   /* it could not start: jobs run on the caller */
    void *scratch;      /* packing space, grow-only, AG_ALIGN-aligned inside */
    size_t scratch_size;
} ag_exec;

/* A context for this process's CPUs (affinity mask on Linux). */
void ag__exec_init(ag_exec *x);
void ag__exec_free(ag_exec *x);
/* Asks for n threads (0: one per core of the CPUs we may use; capped at
 * AG_EXEC_MAX_THREADS); a running pool of another size stops, the next job
 * starts the new one. */
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

/* The cost model, the one place that decides how many threads a job gets:
 * work / grain threads, at least 1 and at most ag__exec_threads(x), where
 * grain is the least work one thread must be handed to pay for its share
 * of the job's dispatch and for the cache lines it pulls from the caller's
 * cache. A job below two grains stays on the calling thread and starts no
 * pool. bench/calibrate measures the numbers behind the grains; on a
 * 16-core Xeon (2 MB L2 per core): a job reaches k threads and returns in
 * 0.08 (k = 2) to 1.0 us (k = 16); a pass with an exp per element gains
 * from threads from 64-512 elements per thread; a memory-bound pass over
 * data the caller has just written (an SGD step, a zeroing, an add) gains
 * only from 3-4 MB in all (2x the caller's L2), at any k. */
size_t ag__exec_threads_for(const ag_exec *x, size_t work, size_t grain);
/* Elementwise passes (ag__exec_range, ag_parallel_for; work: elements):
 * between the two kinds of pass above, whose cost callers do not tell
 * apart: the optimizer's 23,860-parameter step and zeroing in W1 and every
 * elementwise pass of W1 (at most 7,840 elements) stay on one thread, W2's
 * 269,322-parameter step is split. With it, on 16 cores, W1 runs as fast
 * at the default count as on one thread and W2 fastest at the default. */
#define AG_EXEC_GRAIN_ELEMS ((size_t)1 << 14)
/* GEMM (work: multiply-adds): a 128x128x128 product (2M) still gains 5.5x
 * from 16 threads, 128k each (76 -> 419 GFLOP/s on that Xeon); smaller
 * products were not measured split (gemm.c keeps them on one thread). */
#define AG_EXEC_GRAIN_MACS ((size_t)1 << 17)

/* Calls fn(ctx, lo, hi) over chunks covering [0, n), one per thread the
 * cost model gives work (about how many elements the job touches); with
 * one, fn(ctx, 0, n) on the calling thread. fn must give the same result
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
 * the caller and at most n_tasks - 1 of the pool's threads (the others are
 * not woken); run returns when all are done. */
typedef void (*ag_task_fn)(void *ctx, size_t task);
ag_pool *ag__pool_new(size_t n_workers);   /* NULL on failure */
void ag__pool_free(ag_pool *p);
void ag__pool_run(ag_pool *p, size_t n_tasks, ag_task_fn fn, void *ctx); /* p NULL: inline */
size_t ag__pool_threads(const ag_pool *p);  /* workers + the caller */

#endif
