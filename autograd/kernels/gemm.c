/* gemm.c: C = beta·C + op(A)·op(B), row-major, for the matmul op and its
 * two backward products (which read an operand transposed, never copied).
 * Loop orders keep the innermost loop running along contiguous rows of B
 * and C so the compiler vectorises it. */
#include "../internal.h"

#include <string.h>

#define GEMM_BODY(T)                                                                    \
    do {                                                                                \
        if (beta == 0)                                                                  \
            memset(C, 0, m * n * sizeof(T));                                            \
        if (!tb) {                                                                      \
            for (size_t i = 0; i < m; i++) {                                            \
                T *c = C + i * n;                                                       \
                for (size_t p = 0; p < k; p++) {                                        \
                    T a = ta ? A[p * m + i] : A[i * k + p];                             \
                    const T *b = B + p * n;                                             \
                    for (size_t j = 0; j < n; j++)                                      \
                        c[j] += a * b[j];                                               \
                }                                                                       \
            }                                                                           \
        } else {                                                                        \
            for (size_t i = 0; i < m; i++)                                              \
                for (size_t j = 0; j < n; j++) {                                        \
                    const T *b = B + j * k;                                             \
                    T s = 0;                                                            \
                    for (size_t p = 0; p < k; p++)                                      \
                        s += (ta ? A[p * m + i] : A[i * k + p]) * b[p];                 \
                    C[i * n + j] += s;                                                  \
                }                                                                       \
        }                                                                               \
    } while (0)

void ag__gemm_f32(bool ta, bool tb, size_t m, size_t n, size_t k,
                  const float *A, const float *B, float beta, float *C)
{
    GEMM_BODY(float);
}

void ag__gemm_f64(bool ta, bool tb, size_t m, size_t n, size_t k,
                  const double *A, const double *B, double beta, double *C)
{
    GEMM_BODY(double);
}
