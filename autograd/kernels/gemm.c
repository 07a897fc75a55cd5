/* gemm.c: C = op(A)·op(B) (+ C), row-major, for the matmul op and its two
 * backward products. Large products run the packed, cache-blocked kernels
 * of gemm_impl.h, compiled once per instruction set (portable, AVX2 + FMA,
 * AVX-512) and picked at run time from the CPU's feature bits (isa.h);
 * tiny ones a plain loop, where packing would cost more than it saves. */
#include "exec.h"
#include "isa.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define GEMM_X86 1 /* AVX2 and AVX-512 kernels, each in a region of its own target */
#include <cpuid.h>
#include <immintrin.h>
#else
#define GEMM_X86 0
#endif

/* An operand read through strides: element (i, j) is data[i·rs + j·cs]. */
typedef struct {
    const void *data;
    size_t rs, cs;
} gemm_op;

/* One instance of gemm_impl.h: its register tile (mr x nr), its cache
 * blocks, and its driver (C[m,n] = or += A·B, pb and pa the packing space
 * of scratch_elems). */
typedef void gemm_run_fn(size_t m, size_t n, size_t k, const gemm_op *A, const gemm_op *B, void *C,
                         size_t ldc, void *pb, void *pa, bool overwrite);
typedef struct {
    size_t mr, nr, kc, mc, nc;
    gemm_run_fn *run;
} gemm_kernel;

/* Before a loop over a tile's rows or vectors: unrolled in full, so that
 * the tile's accumulators live in registers (clang needs its own words). */
#if defined(__clang__)
#define GEMM_UNROLL _Pragma("clang loop unroll(full)")
#else
#define GEMM_UNROLL _Pragma("GCC unroll 16")
#endif

#define STR_(x) #x
#define STR(x) STR_(x)

/* ------------------------------------------------------------ portable
 * The compiler's baseline: vectors of 16 bytes (SSE2 on x86-64, NEON on
 * arm64), a 6x8 f32 / 6x4 f64 tile: 12 accumulators, two vectors of B and
 * a broadcast fit x86-64's 16 registers. (Vectors of 32 bytes, two SSE
 * registers each, spilled the tile to the stack: 2.5 GFLOP/s.) */
#define PORTABLE_F32 6x8
#define PORTABLE_F64 6x4
#define MR 6
#define NV 2
#define KC 512
#define MC 96
#define NC 2048
#define B_IN_PLACE_ROWS (4 * MR)
#define A_IN_PLACE_COLS (4 * NV * VL)
#define MASKED 0
#define T float
#define VL 4
#define SUFFIX f32_portable
#include "gemm_impl.h"
#undef T
#undef VL
#undef SUFFIX
#define T double
#define VL 2
#define SUFFIX f64_portable
#include "gemm_impl.h"
#undef T
#undef VL
#undef SUFFIX
#undef MR
#undef NV
#undef KC
#undef MC
#undef NC
#undef B_IN_PLACE_ROWS
#undef A_IN_PLACE_COLS
#undef MASKED

#if GEMM_X86
/* ------------------------------------------------------------ AVX2 + FMA
 * 16 ymm registers: a 6x16 f32 / 6x8 f64 tile is 12 accumulators, two
 * vectors of B and a broadcast. Edge tiles run in place with AVX's masked
 * loads and stores (vmaskmov). */
#define AVX2_F32 6x16
#define AVX2_F64 6x8
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define MR 6
#define NV 2
#define KC 512
#define MC 96
#define NC 2048
#define B_IN_PLACE_ROWS (4 * MR)
#define A_IN_PLACE_COLS (4 * NV * VL)
#define MASKED 1
#define VMASK_T __m256i
/* the first n lanes of v to p: vmaskmov's store is slow on AMD's cores */
#define AVX2_STOREN(p, n, v)                   \
    do {                                       \
        V tmp_ = (v);                          \
        for (size_t i_ = 0; i_ < (n); i_++)    \
            (p)[i_] = tmp_[i_];                \
    } while (0)
#define T float
#define VL 8
#define SUFFIX f32_avx2
#define VMASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define VLOADM(p, m) ((V)_mm256_maskload_ps((p), (m)))
#define VSTOREM(p, m, n, v) AVX2_STOREN(p, n, v)
#include "gemm_impl.h"
#undef T
#undef VL
#undef SUFFIX
#undef VMASK
#undef VLOADM
#undef VSTOREM
#define T double
#define VL 4
#define SUFFIX f64_avx2
#define VMASK(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n)), _mm256_setr_epi64x(0, 1, 2, 3))
#define VLOADM(p, m) ((V)_mm256_maskload_pd((p), (m)))
#define VSTOREM(p, m, n, v) AVX2_STOREN(p, n, v)
#include "gemm_impl.h"
#undef T
#undef VL
#undef SUFFIX
#undef VMASK
#undef VLOADM
#undef VSTOREM
#undef VMASK_T
#undef AVX2_STOREN
#undef MR
#undef NV
#undef KC
#undef MC
#undef NC
#undef B_IN_PLACE_ROWS
#undef A_IN_PLACE_COLS
#undef MASKED
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ------------------------------------------------------------ AVX-512
 * 32 zmm registers: a 14x32 f32 / 14x16 f64 tile is 28 accumulators, two
 * vectors of B and a broadcast; 14 rows take W1's batch of 10 in one tile
 * and its 784-row products in whole tiles. Edge tiles run in place with
 * masked loads and stores. Measured on one core (f32 2048^3, CPU time):
 * a 16-core Xeon with 2 FMA units and a 48 KB L1: KC 512: 81 GFLOP/s, KC
 * 192 / 256 / 320: 136-143 (the B panel a tile streams, KC x 32, in L1);
 * 12 rows as fast as 14. A Zen 4 (double-pumped, 32 KB L1), 1024^3: KC
 * 128 / 256 / 384 / 512: 87 / 97 / 99 / 102 GFLOP/s (its FMA peak); MC
 * 112, 224 and 448 within 1%. -D AVX512_F32_KC=... retunes. */
#ifndef AVX512_F32_MR
#define AVX512_F32_MR 14
#endif
#ifndef AVX512_F64_MR
#define AVX512_F64_MR 14
#endif
#ifndef AVX512_F32_KC
#define AVX512_F32_KC 256
#endif
#ifndef AVX512_F64_KC
#define AVX512_F64_KC 256
#endif
#ifndef AVX512_MC
#define AVX512_MC 224
#endif
#ifndef AVX512_NC
#define AVX512_NC 2048
#endif
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#define NV 2
#define MC (AVX512_MC / MR * MR)
#define NC AVX512_NC
#define B_IN_PLACE_ROWS (4 * MR)
#define A_IN_PLACE_COLS (4 * NV * VL)
#define MASKED 1
#define T float
#define VL 16
#define MR AVX512_F32_MR
#define KC AVX512_F32_KC
#define SUFFIX f32_avx512
#define VMASK_T __mmask16
#define VMASK(n) ((__mmask16)((1u << (n)) - 1))
#define VLOADM(p, m) ((V)_mm512_maskz_loadu_ps((m), (p)))
#define VSTOREM(p, m, n, v) _mm512_mask_storeu_ps((p), (m), (__m512)(v))
#include "gemm_impl.h"
#undef T
#undef VL
#undef MR
#undef KC
#undef SUFFIX
#undef VMASK_T
#undef VMASK
#undef VLOADM
#undef VSTOREM
#define T double
#define VL 8
#define MR AVX512_F64_MR
#define KC AVX512_F64_KC
#define SUFFIX f64_avx512
#define VMASK_T __mmask8
#define VMASK(n) ((__mmask8)((1u << (n)) - 1))
#define VLOADM(p, m) ((V)_mm512_maskz_loadu_pd((m), (p)))
#define VSTOREM(p, m, n, v) _mm512_mask_storeu_pd((p), (m), (__m512d)(v))
#include "gemm_impl.h"
#undef T
#undef VL
#undef MR
#undef KC
#undef SUFFIX
#undef VMASK_T
#undef VMASK
#undef VLOADM
#undef VSTOREM
#undef NV
#undef MC
#undef NC
#undef B_IN_PLACE_ROWS
#undef A_IN_PLACE_COLS
#undef MASKED
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* GEMM_X86 */

/* ------------------------------------------------------------ dispatch */

typedef struct {
    const char *name;
    const gemm_kernel *f32, *f64;
} gemm_isa_kernels;

static const gemm_isa_kernels isa_kernels[AG_ISA_COUNT] = {
    [AG_ISA_PORTABLE] = {"portable (f32 " STR(PORTABLE_F32) ", f64 " STR(PORTABLE_F64) ")",
                         &gemm_f32_portable, &gemm_f64_portable},
#if GEMM_X86
    [AG_ISA_AVX2] = {"avx2 (f32 " STR(AVX2_F32) ", f64 " STR(AVX2_F64) ")", &gemm_f32_avx2,
                     &gemm_f64_avx2},
    [AG_ISA_AVX512] = {"avx512 (f32 " STR(AVX512_F32_MR) "x32, f64 " STR(AVX512_F64_MR) "x16)",
                       &gemm_f32_avx512, &gemm_f64_avx512},
#endif
};

ag_cpu_bits ag__cpu_bits(void)
{
    ag_cpu_bits b = {0, 0, 0};
#if GEMM_X86
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return b;
    b.leaf1_ecx = ecx;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        b.leaf7_ebx = ebx;
    }
    if (b.leaf1_ecx & (1u << 27)) { /* OSXSAVE: XGETBV may be executed */
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        b.xcr0 = (uint64_t)hi << 32 | lo;
    }
#endif
    return b;
}

ag_isa ag__isa_from_bits(const ag_cpu_bits *b)
{
    const uint32_t fma = 1u << 12, osxsave = 1u << 27, avx = 1u << 28, avx2 = 1u << 5;
    const uint32_t avx512 = 1u << 16 | 1u << 17 | 1u << 30 | 1u << 31; /* F, DQ, BW, VL */
    const uint64_t ymm_state = 0x6, zmm_state = 0xe6;                 /* XCR0 bits 1-2, 5-7 */
    uint32_t want1 = fma | osxsave | avx;
    if (!GEMM_X86 || (b->leaf1_ecx & want1) != want1 || !(b->leaf7_ebx & avx2) ||
        (b->xcr0 & ymm_state) != ymm_state)
        return AG_ISA_PORTABLE;
    if ((b->leaf7_ebx & avx512) != avx512 || (b->xcr0 & zmm_state) != zmm_state)
        return AG_ISA_AVX2;
    return AG_ISA_AVX512;
}

static const char *const isa_names[AG_ISA_COUNT] = {"portable", "avx2", "avx512"};

const char *ag__isa_name(ag_isa isa)
{
    return (unsigned)isa < AG_ISA_COUNT ? isa_names[isa] : "?";
}

ag_isa ag__isa_parse(const char *s)
{
    for (int i = 0; s && i < AG_ISA_COUNT; i++)
        if (strcmp(s, isa_names[i]) == 0)
            return (ag_isa)i;
    return AG_ISA_COUNT;
}

/* The set in use, -1 until the first product: one value for the process,
 * as the CPU's bits are (a test may cap it). Threads that race to set it
 * first compute the same value. */
static atomic_int isa_now = -1;

static ag_isa best_isa(void)
{
    ag_cpu_bits b = ag__cpu_bits();
    return ag__isa_from_bits(&b);
}

/* The best set there is, capped by AG_ISA. */
static ag_isa auto_isa(void)
{
    ag_isa best = best_isa(), cap = ag__isa_parse(getenv("AG_ISA"));
    return cap < best ? cap : best;
}

ag_isa ag__gemm_isa(void)
{
    int isa = atomic_load_explicit(&isa_now, memory_order_relaxed);
    if (isa < 0) {
        isa = (int)auto_isa();
        atomic_store_explicit(&isa_now, isa, memory_order_relaxed);
    }
    return (ag_isa)isa;
}

ag_isa ag__gemm_set_isa(ag_isa cap)
{
    ag_isa best = best_isa(), isa = (unsigned)cap >= AG_ISA_COUNT ? auto_isa() : cap < best ? cap : best;
    atomic_store_explicit(&isa_now, (int)isa, memory_order_relaxed);
    return isa;
}

const char *ag__gemm_kernel_name(void)
{
    return isa_kernels[ag__gemm_isa()].name;
}

const char *ag_kernel_name(void)
{
    return ag__gemm_kernel_name();
}

/* ------------------------------------------------------------ driver */

static size_t round_up(size_t x, size_t unit) { return (x + unit - 1) / unit * unit; }

/* Packing space of one task for an m x n x k product, in elements: a B
 * block (kc x nc) and, after it at b_elems, an A block (mc x kc), each no
 * bigger than the product needs. */
static size_t scratch_elems(const gemm_kernel *g, size_t m, size_t n, size_t k, size_t *b_elems)
{
    size_t kc = k < g->kc ? k : g->kc;
    size_t nc = round_up(n < g->nc ? n : g->nc, g->nr);
    size_t mc = round_up(m < g->mc ? m : g->mc, g->mr);
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

/* A product split into a grid of blocks of C, one task each, in whole
 * tiles but at the edges. A block's elements are summed in the same order
 * whichever thread runs it and whatever the grid (an element's sums depend
 * only on k and the kernel), so any thread count gives the same bits. */
typedef struct {
    const gemm_kernel *g;
    size_t es;               /* element size */
    size_t m, n, k;
    size_t rows, cols;       /* a task's block of C */
    size_t grid_cols;        /* tasks along n */
    bool accumulate;         /* C += A·B, else C = A·B */
    gemm_op A, B;
    char *C, *scratch;
    size_t scratch_bytes;    /* per task */
    size_t b_elems;          /* where a task's A block starts in its scratch */
} gemm_job;

static void gemm_block(void *ctx, size_t task)
{
    const gemm_job *j = ctx;
    size_t es = j->es, i0 = task / j->grid_cols * j->rows, j0 = task % j->grid_cols * j->cols;
    size_t m = j->m - i0 < j->rows ? j->m - i0 : j->rows, n = j->n - j0 < j->cols ? j->n - j0 : j->cols;
    gemm_op a = j->A, b = j->B;
    a.data = (const char *)a.data + i0 * a.rs * es;
    b.data = (const char *)b.data + j0 * b.cs * es;
    char *c = j->C + (i0 * j->n + j0) * es, *scratch = j->scratch + task * j->scratch_bytes;
    j->g->run(m, n, j->k, &a, &b, c, j->n, scratch, scratch + j->b_elems * es, !j->accumulate);
}

/* Packing an element costs about as many multiply-adds as this (an
 * AVX-512 core does 32 f32 multiply-adds a cycle, and copies about one
 * element a cycle). */
#ifndef GEMM_PACK_MACS
#define GEMM_PACK_MACS 32
#endif

/* The grid for at most `tasks` blocks: the one whose largest block costs
 * least, its tiles' multiply-adds plus its packing (each task packs its
 * block's rows of A and columns of B), per step of k. Sets the job's rows,
 * cols and grid_cols; returns the number of blocks. With two tasks that
 * is rows when C is tall, columns when it is wide; with 16, 4 x 4 blocks
 * of a 2048 x 2048 product (each packs a quarter of A and of B, where 16
 * stripes would each pack all of one), 2 x 8 of W2's 128 x 256. */
static size_t gemm_grid(gemm_job *j, size_t tasks)
{
    size_t mr = j->g->mr, nr = j->g->nr, um = (j->m + mr - 1) / mr, un = (j->n + nr - 1) / nr;
    size_t best = SIZE_MAX, bm = um, bn = un;
    for (size_t gr = 1; gr <= tasks && gr <= um; gr++) {
        size_t gc = tasks / gr < un ? tasks / gr : un;
        size_t tm = (um + gr - 1) / gr, tn = (un + gc - 1) / gc; /* tiles of a block */
        size_t cost = tm * tn * mr * nr + GEMM_PACK_MACS * (tm * mr + tn * nr);
        if (cost < best) {
            best = cost;
            bm = tm, bn = tn;
        }
    }
    j->rows = bm * mr;
    j->cols = bn * nr;
    j->grid_cols = (un + bn - 1) / bn;
    return (um + bm - 1) / bm * j->grid_cols;
}

/* Products below this many multiply-adds stay on one thread: waking the
 * others costs more than they would save. Above, a thread for each
 * AG_EXEC_GRAIN_MACS (exec.h's cost model). */
#define GEMM_PARALLEL_MIN ((size_t)1 << 21)

/* Products of at most this many multiply-adds take the plain loop. */
#define GEMM_SMALL_MAX 512

ag_status ag__gemm(ag_exec *x, ag_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k,
                   const void *A, const void *B, bool accumulate, void *C)
{
    size_t es = ag_dtype_size(dt), macs = m * n * k;
    const gemm_isa_kernels *isa = &isa_kernels[ag__gemm_isa()];
    gemm_job j = {.g = dt == AG_F32 ? isa->f32 : isa->f64, .es = es, .m = m, .n = n, .k = k,
                  .C = C, .accumulate = accumulate,
                  .A = {A, ta ? 1 : k, ta ? m : 1}, .B = {B, tb ? 1 : n, tb ? k : 1}};
    if (macs <= GEMM_SMALL_MAX || k == 0) { /* the packed path overwrites C, this one adds */
        if (!accumulate)
            memset(C, 0, m * n * es);
        gemm_small(dt, m, n, k, &j.A, &j.B, C);
        return AG_OK;
    }
    size_t want = macs >= GEMM_PARALLEL_MIN ? ag__exec_threads_for(x, macs, AG_EXEC_GRAIN_MACS) : 1;
    ag_pool *pool = want > 1 ? ag__exec_pool(x) : NULL;
    size_t have = ag__pool_threads(pool), tasks = gemm_grid(&j, want < have ? want : have);
    j.scratch_bytes = round_up(scratch_elems(j.g, j.rows, j.cols, k, &j.b_elems) * es, AG_ALIGN);
    if (!(j.scratch = ag__exec_scratch(x, tasks * j.scratch_bytes)))
        return AG_ERR_NOMEM;
    ag__pool_run(pool, tasks, gemm_block, &j);
    return AG_OK;
}
