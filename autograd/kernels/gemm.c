/* gemm.c: C = op(A)·op(B) (+ C), row-major, for the matmul op and its two
 * backward products. Large products run the packed, cache-blocked kernels
 * of gemm_impl.h; tiny ones a plain loop, where packing would cost more
 * than it saves. */
#include "../internal.h"

#include <string.h>

/* An operand read through strides: element (i, j) is data[i·rs + j·cs]. */
typedef struct {
    const void *data;
    size_t rs, cs;
} gemm_op;

enum { GEMM_MR = 6, GEMM_KC = 256, GEMM_MC = 144, GEMM_NC = 1024 };

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define AG_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AG_KERNEL_CLONES
#endif

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

/* Elements of scratch the packed path needs: a B block and an A block. */
static size_t scratch_elems(void)
{
    return (size_t)GEMM_KC * GEMM_NC + (size_t)(GEMM_MC + GEMM_MR) * GEMM_KC;
}

/* The plain triple loop, for products too small to pay for packing. */
static void gemm_small(ag_dtype dt, size_t m, size_t n, size_t k, const gemm_op *A,
                       const gemm_op *B, void *C)
{
    AG_DISPATCH(dt, T, {
        const T *a = A->data, *b = B->data;
        T *c = C;
        for (size_t i = 0; i < m; i++)
            for (size_t p = 0; p < k; p++) {
                T aip = a[i * A->rs + p * A->cs];
                for (size_t j = 0; j < n; j++)
                    c[i * n + j] += aip * b[p * B->rs + j * B->cs];
            }
    });
}

ag_status ag__gemm(ag_tape *t, ag_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k,
                   const void *A, const void *B, bool accumulate, void *C)
{
    size_t es = ag_dtype_size(dt);
    if (!accumulate)
        memset(C, 0, m * n * es);
    if (m == 0 || n == 0 || k == 0)
        return AG_OK;
    gemm_op a = {A, ta ? 1 : k, ta ? m : 1}, b = {B, tb ? 1 : n, tb ? k : 1};
    if (m * n * k <= 4096) {
        gemm_small(dt, m, n, k, &a, &b, C);
        return AG_OK;
    }
    void *scratch = ag__scratch(t, scratch_elems() * es);
    if (!scratch)
        return ag_tape_status(t);
    if (dt == AG_F32)
        gemm_packed_f32(m, n, k, &a, &b, C, scratch);
    else
        gemm_packed_f64(m, n, k, &a, &b, C, scratch);
    return AG_OK;
}
