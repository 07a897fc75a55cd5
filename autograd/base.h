/* base.h: what every part of the engine shares, kernels included: the
 * allocator hook, alignment, size arithmetic and the vector-clone macro. */
#ifndef AG_BASE_H
#define AG_BASE_H

#include "autograd.h"

#define AG_ALIGN 64

/* Put before a hot loop's function to have it compiled twice, for x86-64-v3
 * (AVX2, FMA) and for the baseline, the loader picking what the CPU runs:
 * one portable build, full vector width where there is one. GCC on x86-64
 * only; not under ThreadSanitizer, whose GCC build cannot run the loader's
 * picker before it starts. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define AG_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AG_TARGET_CLONES
#endif


/* Allocator (alloc.c). Sizes are passed back to free, as the hook wants. */
void *ag__alloc(size_t n);
void *ag__calloc(size_t n);
void ag__free(void *p, size_t n);

/* Element i of n values of dtype dt at p, as a double. */
static inline double ag__elem(ag_dtype dt, const void *p, size_t i)
{
    return dt == AG_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

/* ag_dtype_size for a valid dtype, inlined for the hot paths. */
#define AG_DTYPE_SIZE(dt) ((dt) == AG_F32 ? sizeof(float) : sizeof(double))

/* Size arithmetic that reports overflow by returning false. */
static inline bool ag__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

static inline bool ag__numel(const size_t *shape, size_t rank, size_t *out)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        if (!ag__mul_size(n, shape[i], &n))
            return false;
    *out = n;
    return true;
}

/* Runs a block once with T = float or T = double, as dt says: one loop
 * body serves both dtypes (with <tgmath.h>, exp(x) is expf for floats). */
#define AG_DISPATCH(dt, T, ...)          \
    do {                                 \
        if ((dt) == AG_F32) {            \
            typedef float T;             \
            __VA_ARGS__                  \
        } else {                         \
            typedef double T;            \
            __VA_ARGS__                  \
        }                                \
    } while (0)

#endif
