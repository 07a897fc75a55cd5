/* gemm.c: C = op(A)·op(B) (+ C), row-major, for the matmul op and its two
 * backward products. Large products run the packed, cache-blocked kernels
 * of gemm_impl.h; tiny ones a plain loop, where packing would cost more
 * than it saves. */
#include "exec.h"

#include <string.h>

/* An operand read through strides: element (i, j) is data[i·rs + j·cs]. */
typedef struct {
    const void *data;
    size_t rs, cs;
} gemm_op;

enum { GEMM_MR = 6, GEMM_KC = 512, GEMM_MC = 96, GEMM_NC = 2048 };

#define T float
#define V v8f
#define VU v8f_u
#define VL 8
#define SUFFIX f32
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
#include "gemm_impl.h"
#undef T
#undef V
#undef VU
#undef VL
#undef SUFFIX

#define T double
#define V v4d
#define VU v4d_u
#define VL 4
#define SUFFIX f64
typedef double v4d __attribute__((vector_size(32)));
typedef double v4d_u __attribute__((vector_size(32), aligned(8)));
#include "gemm_impl.h"
#undef T
#undef V
#undef VU
#undef VL
#undef SUFFIX

static size_t round_up(size_t x, size_t unit) { return (x + unit - 1) / unit * unit; }

/* Packing space of one task for an m x n x k product, in elements: a B
 * block (kc x nc) and, after it at b_elems, an A block (mc x kc), each no
 * bigger than the product needs. */
static size_t scratch_elems(size_t m, size_t n, size_t k, size_t nr, size_t *b_elems)
{
    size_t kc = k < GEMM_KC ? k : GEMM_KC;
    size_t nc = round_up(n < GEMM_NC ? n : GEMM_NC, nr);
    size_t mc = round_up(m < GEMM_MC ? m : GEMM_MC, GEMM_MR);
    *b_elems = round_up(kc * nc, AG_ALIGN);
    return *b_elems + mc * kc;
}

/* The plain triple loop, for products too small to pay for packing; its
 * inner loop runs along a row of B, which vectorises when B is row-major.
 * Each element of C still sums its products in order of p. */
static void gemm_small(ag_dtype dt, size_t m, size_t n, size_t k, const gemm_op *A,
                       const gemm_op *B, void *C)
{
    AG_DISPATCH(dt, T, {
        const T *a = A->data, *b = B->data;
        T *c = C;
        for (size_t i = 0; i < m; i++)
            for (size_t p = 0; p < k; p++) {
                T aip = a[i * A->rs + p * A->cs], *ci = c + i * n;
                const T *bp = b + p * B->rs;
                if (B->cs == 1)
                    for (size_t j = 0; j < n; j++)
                        ci[j] += aip * bp[j];
                else
                    for (size_t j = 0; j < n; j++)
                        ci[j] += aip * bp[j * B->cs];
            }
    });
}

/* A product split into stripes of C, one task each: rows when C is tall,
 * columns when it is wide. A stripe's elements are summed in the same
 * order whichever thread runs it, so any thread count gives the same bits. */
typedef struct {
    ag_dtype dt;
    size_t m, n, k, stripe; /* stripe: rows or columns per task */
    bool by_rows;
    bool accumulate;         /* C += A·B, else C = A·B */
    gemm_op A, B;
    char *C, *scratch;
    size_t scratch_bytes;    /* per task */
    size_t b_elems;          /* where a task's A block starts in its scratch */
} gemm_job;

static void gemm_stripe(void *ctx, size_t task)
{
    const gemm_job *j = ctx;
    size_t es = ag_dtype_size(j->dt), lo = task * j->stripe;
    size_t len = (j->by_rows ? j->m : j->n) - lo;
    if (len > j->stripe)
        len = j->stripe;
    gemm_op a = j->A, b = j->B;
    char *c = j->C;
    if (j->by_rows) {
        a.data = (const char *)a.data + lo * a.rs * es;
        c += lo * j->n * es;
    } else {
        b.data = (const char *)b.data + lo * b.cs * es;
        c += lo * es;
    }
    size_t m = j->by_rows ? len : j->m, n = j->by_rows ? j->n : len;
    void *scratch = j->scratch + task * j->scratch_bytes;
    if (j->dt == AG_F32)
        gemm_packed_f32(m, n, j->k, &a, &b, (float *)c, j->n, scratch, (float *)scratch + j->b_elems,
                        !j->accumulate);
    else
        gemm_packed_f64(m, n, j->k, &a, &b, (double *)c, j->n, scratch, (double *)scratch + j->b_elems,
                        !j->accumulate);
}

/* Products below this many multiply-adds stay on one thread: waking the
 * others costs more than they would save. */
#define GEMM_PARALLEL_MIN ((size_t)1 << 21)

/* Products of at most this many multiply-adds take the plain loop. */
#define GEMM_SMALL_MAX 512

ag_status ag__gemm(ag_exec *x, ag_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k,
                   const void *A, const void *B, bool accumulate, void *C)
{
    size_t es = ag_dtype_size(dt);
    gemm_job j = {.dt = dt, .m = m, .n = n, .k = k, .by_rows = m >= n, .C = C, .accumulate = accumulate,
                  .A = {A, ta ? 1 : k, ta ? m : 1}, .B = {B, tb ? 1 : n, tb ? k : 1}};
    if (m * n * k <= GEMM_SMALL_MAX || k == 0) { /* the packed path overwrites C, this one adds */
        if (!accumulate)
            memset(C, 0, m * n * es);
        gemm_small(dt, m, n, k, &j.A, &j.B, C);
        return AG_OK;
    }
    ag_pool *pool = m * n * k >= GEMM_PARALLEL_MIN ? ag__exec_pool(x) : NULL;
    size_t unit_cols = 2 * 32 / es; /* NR: two 32-byte vectors */
    size_t tasks = ag__pool_threads(pool), unit = j.by_rows ? GEMM_MR : unit_cols;
    size_t len = j.by_rows ? m : n, units = (len + unit - 1) / unit;
    if (tasks > units)
        tasks = units;
    j.stripe = (units + tasks - 1) / tasks * unit;
    tasks = (len + j.stripe - 1) / j.stripe;
    size_t rows = j.by_rows ? j.stripe : m, cols = j.by_rows ? n : j.stripe;
    j.scratch_bytes = round_up(scratch_elems(rows, cols, k, unit_cols, &j.b_elems) * es, AG_ALIGN);
    if (!(j.scratch = ag__exec_scratch(x, tasks * j.scratch_bytes)))
        return AG_ERR_NOMEM;
    ag__pool_run(pool, tasks, gemm_stripe, &j);
    return AG_OK;
}
