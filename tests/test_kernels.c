/* test_kernels.c: the packed GEMM behind ag_matmul against a naive triple
 * loop written here, at sizes that cross every blocking boundary (MR, NR,
 * KC, MC, NC) and at the tiny sizes that take the unpacked path; then each
 * instruction set's kernels in turn (portable, AVX2, AVX-512, capped
 * through the internal kernels/isa.h, so a CPU without one tests the
 * fallback), and the choice of set from CPU feature bits. */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_setaffinity */
#include <sched.h>
#else
#define _POSIX_C_SOURCE 200809L /* setenv */
#endif
#include "autograd.h"
#include "kernels/exec.h" /* internal: ag__gemm itself, with its exec context */
#include "kernels/isa.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y = a·b for a [m,k], b [k,n], in double. */
static void naive(size_t m, size_t n, size_t k, const double *a, const double *b, double *y)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t p = 0; p < k; p++)
                s += a[i * k + p] * b[p * n + j];
            y[i * n + j] = s;
        }
}

/* Checks forward and both backward products of ag_matmul for one size:
 * with seed G, ga = G·bᵀ and gb = aᵀ·G, computed naively. */
static void check_size(ag_dtype dt, size_t m, size_t n, size_t k, double tol)
{
    ag_rng rng;
    ag_rng_seed(&rng, m * 1000003 + n * 1009 + k);
    ag_tensor *a = ag_rand_normal(dt, AG_SHAPE(m, k), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(dt, AG_SHAPE(k, n), 0, 1, &rng);
    ag_tensor *g = ag_rand_normal(dt, AG_SHAPE(m, n), 0, 1, &rng);
    cr_assert(a && b && g);
    cr_assert_eq(ag_set_requires_grad(a, true), AG_OK);
    cr_assert_eq(ag_set_requires_grad(b, true), AG_OK);
    double *A = malloc(m * k * sizeof *A), *B = malloc(k * n * sizeof *B), *G = malloc(m * n * sizeof *G);
    double *Y = malloc(m * n * sizeof *Y), *BT = malloc(k * n * sizeof *BT), *AT = malloc(m * k * sizeof *AT);
    double *GA = malloc(m * k * sizeof *GA), *GB = malloc(k * n * sizeof *GB);
    cr_assert(A && B && G && Y && BT && AT && GA && GB);
    for (size_t i = 0; i < m * k; i++) A[i] = ag_get(a, i);
    for (size_t i = 0; i < k * n; i++) B[i] = ag_get(b, i);
    for (size_t i = 0; i < m * n; i++) G[i] = ag_get(g, i);
    for (size_t p = 0; p < k; p++)
        for (size_t j = 0; j < n; j++) BT[j * k + p] = B[p * n + j];
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++) AT[p * m + i] = A[i * k + p];
    naive(m, n, k, A, B, Y);
    naive(m, k, n, G, BT, GA);
    naive(k, n, m, AT, G, GB);

    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_matmul(t, a, b);
    cr_assert_eq(ag_backward_seed(t, y, g), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < m * n; i++)
        cr_assert(fabs(ag_get(y, i) - Y[i]) <= tol * (1 + fabs(Y[i])), "y[%zu] m=%zu n=%zu k=%zu", i, m, n, k);
    for (size_t i = 0; i < m * k; i++)
        cr_assert(fabs(ag_get_grad(a, i) - GA[i]) <= tol * (1 + fabs(GA[i])), "ga[%zu]: %.9g vs %.9g",
                  i, ag_get_grad(a, i), GA[i]);
    for (size_t i = 0; i < k * n; i++)
        cr_assert(fabs(ag_get_grad(b, i) - GB[i]) <= tol * (1 + fabs(GB[i])), "gb[%zu]: %.9g vs %.9g",
                  i, ag_get_grad(b, i), GB[i]);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(g);
    free(A); free(B); free(G); free(Y); free(BT); free(AT); free(GA); free(GB);
}

Test(gemm, tiny_sizes_take_the_plain_loop)
{
    check_size(AG_F64, 1, 1, 1, 1e-12);
    check_size(AG_F64, 3, 5, 7, 1e-12);
    check_size(AG_F64, 8, 8, 8, 1e-12); /* 512 multiply-adds: the last plain one */
    check_size(AG_F32, 8, 8, 8, 1e-5);
    check_size(AG_F64, 8, 8, 9, 1e-12); /* packed */
    check_size(AG_F64, 16, 16, 16, 1e-12);
}

Test(gemm, edges_of_register_tiles)
{
    for (size_t m = 5; m <= 13; m += 4)
        for (size_t n = 15; n <= 33; n += 9)
            check_size(AG_F64, m, n, 40, 1e-12);
}

Test(gemm, every_cache_block_boundary_f64)
{
    check_size(AG_F64, 150, 2100, 600, 1e-11); /* m > MC = 96, n > NC = 2048, k > KC = 512 */
}

Test(gemm, every_cache_block_boundary_f32)
{
    /* ga sums 2100 products of N(0,1) values in f32: a result near 0 can be
     * off by 1e-4 (rounding of ~1600 in magnitudes, 7e-8 relative) */
    check_size(AG_F32, 150, 2100, 600, 1e-3);
}

/* Few rows: B's panels read in place (m <= 24); few columns: A's when A
 * is read transposed (n <= 4 NR: 64 f32, 32 f64), as in the backward
 * product of a layer's weights. Each at, below and above the threshold,
 * with edge panels, and deeper than KC so a second k-block starts. */
Test(gemm, panels_read_in_place_for_few_rows_or_columns)
{
    static const size_t ms[] = {6, 10, 24, 25}, ns[] = {16, 30, 32, 33, 64, 65};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 6; j++) {
            check_size(AG_F32, ms[i], ns[j], 700, 1e-4);
            check_size(AG_F64, ms[i], ns[j], 700, 1e-11);
        }
}

Test(gemm, nielsen_layer_shapes)
{
    check_size(AG_F32, 10, 30, 784, 1e-4);
    check_size(AG_F64, 10, 10, 30, 1e-12);
}

Test(gemm, batched_with_shared_weight_matches_per_entry_products)
{
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    ag_tensor *x = ag_rand_normal(AG_F64, AG_SHAPE(3, 20, 70), 0, 1, &rng);
    ag_tensor *w = ag_rand_normal(AG_F64, AG_SHAPE(70, 40), 0, 1, &rng);
    cr_assert_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_matmul(t, x, w);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    /* d(Σy)/dw[p][j] = Σ over batch and rows of x[b][i][p] */
    for (size_t p = 0; p < 70; p++) {
        double s = 0;
        for (size_t b = 0; b < 3; b++)
            for (size_t i = 0; i < 20; i++)
                s += ag_get(x, (b * 20 + i) * 70 + p);
        for (size_t j = 0; j < 40; j++)
            cr_assert(fabs(ag_get_grad(w, p * 40 + j) - s) <= 1e-12 * (1 + fabs(s)));
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

/* The product and both gradients of a product big enough to be split,
 * computed with a given thread count. */
static void product_with_threads(size_t threads, double *y, double *ga, double *gb)
{
    ag_rng rng;
    ag_rng_seed(&rng, 99);
    ag_tensor *a = ag_rand_normal(AG_F32, AG_SHAPE(203, 157), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(AG_F32, AG_SHAPE(157, 301), 0, 1, &rng);
    cr_assert_eq(ag_set_requires_grad(a, true), AG_OK);
    cr_assert_eq(ag_set_requires_grad(b, true), AG_OK);
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, threads);
    cr_assert_eq(ag_tape_threads(t), threads);
    ag_tensor *p = ag_matmul(t, a, b);
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, p, p))), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < 203 * 301; i++) y[i] = ag_get(p, i);
    for (size_t i = 0; i < 203 * 157; i++) ga[i] = ag_get_grad(a, i);
    for (size_t i = 0; i < 157 * 301; i++) gb[i] = ag_get_grad(b, i);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(gemm, bitwise_identical_for_1_2_and_3_threads)
{
    static double y[3][203 * 301], ga[3][203 * 157], gb[3][157 * 301];
    for (size_t i = 0; i < 3; i++)
        product_with_threads(i + 1, y[i], ga[i], gb[i]);
    for (size_t i = 1; i < 3; i++) {
        cr_assert(memcmp(y[0], y[i], sizeof y[0]) == 0, "product differs with %zu threads", i + 1);
        cr_assert(memcmp(ga[0], ga[i], sizeof ga[0]) == 0, "grad a differs with %zu threads", i + 1);
        cr_assert(memcmp(gb[0], gb[i], sizeof gb[0]) == 0, "grad b differs with %zu threads", i + 1);
    }
}

Test(gemm, default_threads_is_at_least_one)
{
    ag_tape *t = ag_tape_new();
    cr_assert_geq(ag_tape_threads(t), 1);
    ag_tape_set_threads(t, 1);
    cr_assert_eq(ag_tape_threads(t), 1);
    ag_tape_free(t);
}

#if defined(__linux__)
/* Pinned to one CPU (this test runs in a process of its own), a new tape
 * starts no extra threads: they would only wait on each other. */
Test(gemm, default_threads_follow_the_affinity_mask)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    ag_tape *t = ag_tape_new();
    cr_assert_eq(ag_tape_threads(t), 1);
    ag_tape_free(t);
}
#endif

/* ------------------------------------------------------------ each ISA
 * ag__gemm called directly, on each instruction set in turn, with every
 * combination of transposed operands and accumulation, in f32 and f64, on
 * shapes that cross each set's blocks: the register tile (MR 6 and 14 rows;
 * NR 8, 16 and 32 f32, 4, 8 and 16 f64 columns), the cache blocks (KC 256
 * and 512, MC 96 and 224, NC 2048), the limits below which panels are read
 * in place (4 MR rows, 4 NR columns), ragged edges of every size, and the plain
 * loop of tiny products. Each result is checked against a naive product
 * in long double, within a bound of rounding, and against the portable
 * kernels' result within twice that bound. */

static uint64_t lcg_state;

static double lcg_uniform(void) /* in [-1, 1) */
{
    lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
    return (double)(lcg_state >> 11) / 4503599627370496.0 - 1.0;
}

typedef struct {
    size_t m, n, k;
} gemm_shape;

static const gemm_shape isa_shapes[] = {
    {1, 1, 1}, {3, 5, 7}, {8, 8, 8}, {8, 8, 9},             /* the plain loop and just past it */
    {1, 1, 600}, {1, 40, 3}, {40, 1, 3}, {2, 3, 700},       /* vectors and slivers */
    {5, 15, 40}, {6, 16, 40}, {7, 17, 40}, {13, 31, 9},      /* about the AVX2 tile */
    {14, 32, 33}, {15, 33, 33}, {28, 64, 5}, {29, 63, 5},    /* about the AVX-512 tile */
    {10, 30, 784}, {10, 10, 30}, {30, 10, 10}, {784, 30, 10}, /* W1's products */
    {128, 10, 256}, {256, 10, 128}, {3, 9, 17}, {17, 8, 3},  /* narrow: one vector */
    {24, 40, 520}, {25, 40, 520}, {56, 47, 100}, {57, 47, 100}, /* B in place up to 4 MR rows */
    {40, 64, 60}, {40, 65, 60}, {33, 128, 60}, {33, 129, 60}, /* A in place up to 4 NR columns */
    {97, 70, 515}, {225, 49, 1030}, {230, 17, 513},           /* MC and KC */
    {15, 2100, 40}, {3, 2049, 7},                             /* NC */
};
enum { N_ISA_SHAPES = sizeof isa_shapes / sizeof *isa_shapes };

/* C = op(A)·op(B) (+ C0 when acc) in long double; A holds m x k values in
 * its stored layout ([k,m] when ta), B k x n ([n,k] when tb). bound[i]:
 * the rounding error allowed element i, from the sum of |terms|. */
static void naive_ld(bool ta, bool tb, const gemm_shape *s, const double *A, const double *B,
                     const double *C0, bool acc, double eps, double *ref, double *bound)
{
    size_t m = s->m, n = s->n, k = s->k;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            long double sum = acc ? C0[i * n + j] : 0, mag = acc ? fabs(C0[i * n + j]) : 0;
            for (size_t p = 0; p < k; p++) {
                double a = ta ? A[p * m + i] : A[i * k + p], b = tb ? B[j * k + p] : B[p * n + j];
                sum += (long double)a * b;
                mag += fabs(a * b);
            }
            ref[i * n + j] = (double)sum;
            bound[i * n + j] = 2.0 * (double)(k + 2) * eps * (double)mag + 1e-300;
        }
}

/* The product on the set now in use, into C (as dt) converted to double. */
static void gemm_as_double(ag_dtype dt, bool ta, bool tb, const gemm_shape *s, const double *A,
                           const double *B, const double *C0, bool acc, size_t threads, double *out)
{
    size_t m = s->m, n = s->n, k = s->k, es = dt == AG_F32 ? 4 : 8;
    /* exact sizes, so that a read past an operand is caught under ASan */
    void *a = malloc(m * k * es), *b = malloc(k * n * es), *c = malloc(m * n * es);
    cr_assert(a && b && c);
    for (size_t i = 0; i < m * k; i++)
        dt == AG_F32 ? (void)(((float *)a)[i] = (float)A[i]) : (void)(((double *)a)[i] = A[i]);
    for (size_t i = 0; i < k * n; i++)
        dt == AG_F32 ? (void)(((float *)b)[i] = (float)B[i]) : (void)(((double *)b)[i] = B[i]);
    for (size_t i = 0; i < m * n; i++) /* C0, or a value the product must overwrite */
        dt == AG_F32 ? (void)(((float *)c)[i] = acc ? (float)C0[i] : NAN)
                     : (void)(((double *)c)[i] = acc ? C0[i] : NAN);
    ag_exec x;
    ag__exec_init(&x);
    ag__exec_set_threads(&x, threads);
    cr_assert_eq(ag__gemm(&x, dt, ta, tb, m, n, k, a, b, acc, c), AG_OK);
    ag__exec_free(&x);
    for (size_t i = 0; i < m * n; i++)
        out[i] = dt == AG_F32 ? ((float *)c)[i] : ((double *)c)[i];
    free(a);
    free(b);
    free(c);
}

/* Every shape, operand layout and accumulation on ISA `isa` (capped: the
 * best there is when the CPU lacks it) against the naive product and the
 * portable kernels. Returns the number of products checked. */
static size_t check_isa(ag_isa isa, ag_dtype dt)
{
    double eps = dt == AG_F32 ? 0x1p-24 : 0x1p-53;
    size_t checked = 0;
    for (size_t si = 0; si < N_ISA_SHAPES; si++) {
        const gemm_shape *s = &isa_shapes[si];
        size_t m = s->m, n = s->n, k = s->k;
        double *A = malloc(m * k * sizeof *A), *B = malloc(k * n * sizeof *B);
        double *C0 = malloc(m * n * sizeof *C0), *ref = malloc(m * n * sizeof *ref);
        double *bound = malloc(m * n * sizeof *bound), *got = malloc(m * n * sizeof *got);
        double *port = malloc(m * n * sizeof *port);
        cr_assert(A && B && C0 && ref && bound && got && port);
        lcg_state = si * 7919 + 1;
        for (size_t i = 0; i < m * k; i++) A[i] = dt == AG_F32 ? (float)lcg_uniform() : lcg_uniform();
        for (size_t i = 0; i < k * n; i++) B[i] = dt == AG_F32 ? (float)lcg_uniform() : lcg_uniform();
        for (size_t i = 0; i < m * n; i++) C0[i] = dt == AG_F32 ? (float)lcg_uniform() : lcg_uniform();
        for (int mode = 0; mode < 8; mode++) {
            bool ta = mode & 1, tb = mode & 2, acc = mode & 4;
            naive_ld(ta, tb, s, A, B, C0, acc, eps, ref, bound);
            cr_assert_eq(ag__gemm_set_isa(AG_ISA_PORTABLE), AG_ISA_PORTABLE);
            gemm_as_double(dt, ta, tb, s, A, B, C0, acc, 1, port);
            ag__gemm_set_isa(isa);
            gemm_as_double(dt, ta, tb, s, A, B, C0, acc, 1, got);
            for (size_t i = 0; i < m * n; i++) {
                cr_assert(fabs(got[i] - ref[i]) <= bound[i],
                          "%s %s: [%zu,%zu,%zu] ta=%d tb=%d acc=%d: C[%zu] = %.17g, expected %.17g (bound %.3g)",
                          ag__gemm_kernel_name(), dt == AG_F32 ? "f32" : "f64", m, n, k, ta, tb, acc, i,
                          got[i], ref[i], bound[i]);
                cr_assert(fabs(got[i] - port[i]) <= 2 * bound[i],
                          "%s vs portable: [%zu,%zu,%zu] ta=%d tb=%d acc=%d: C[%zu] = %.17g vs %.17g",
                          ag__gemm_kernel_name(), m, n, k, ta, tb, acc, i, got[i], port[i]);
            }
            checked++;
        }
        free(A); free(B); free(C0); free(ref); free(bound); free(got); free(port);
    }
    return checked;
}

static void check_isa_both_dtypes(ag_isa isa)
{
    ag_isa got = ag__gemm_set_isa(isa);
    ag_cpu_bits bits = ag__cpu_bits();
    ag_isa best = ag__isa_from_bits(&bits);
    cr_assert_eq(got, isa < best ? isa : best, "asked for %s, got %s", ag__isa_name(isa), ag__isa_name(got));
    if (got != isa)
        cr_log_info("this CPU has no %s: checked its fallback, %s", ag__isa_name(isa), ag__isa_name(got));
    cr_assert_eq(check_isa(isa, AG_F32), 8 * N_ISA_SHAPES);
    cr_assert_eq(check_isa(isa, AG_F64), 8 * N_ISA_SHAPES);
}

Test(gemm_isa, portable_kernels_match_the_naive_product) { check_isa_both_dtypes(AG_ISA_PORTABLE); }
Test(gemm_isa, avx2_kernels_match_portable, .timeout = 120) { check_isa_both_dtypes(AG_ISA_AVX2); }
Test(gemm_isa, avx512_kernels_match_portable, .timeout = 120) { check_isa_both_dtypes(AG_ISA_AVX512); }

/* Products big enough to be split between threads, tall and wide, each
 * operand layout: the same bits for 1, 2, 3, 4, 7 and 16 threads on each
 * set (16 cuts a grid of blocks both ways, whatever the CPUs). */
Test(gemm_isa, each_isa_gives_the_same_bits_for_any_thread_count, .timeout = 240)
{
    static const gemm_shape shapes[] = {{301, 203, 157}, {61, 1030, 157}};
    static const size_t threads[] = {1, 2, 3, 4, 7, 16};
    enum { N_THREADS = sizeof threads / sizeof *threads };
    for (int isa = 0; isa < AG_ISA_COUNT; isa++) {
        ag__gemm_set_isa((ag_isa)isa);
        for (size_t si = 0; si < 2; si++)
            for (int dt = 0; dt < 2; dt++)
                for (int mode = 0; mode < 8; mode++) {
                    const gemm_shape *s = &shapes[si];
                    size_t m = s->m, n = s->n, k = s->k;
                    bool ta = mode & 1, tb = mode & 2, acc = mode & 4;
                    double *A = malloc(m * k * sizeof *A), *B = malloc(k * n * sizeof *B);
                    double *C0 = malloc(m * n * sizeof *C0), *out[N_THREADS];
                    cr_assert(A && B && C0);
                    lcg_state = (uint64_t)mode * 31 + si;
                    for (size_t i = 0; i < m * k; i++) A[i] = lcg_uniform();
                    for (size_t i = 0; i < k * n; i++) B[i] = lcg_uniform();
                    for (size_t i = 0; i < m * n; i++) C0[i] = lcg_uniform();
                    for (size_t t = 0; t < N_THREADS; t++) {
                        cr_assert(out[t] = malloc(m * n * sizeof *out[t]));
                        gemm_as_double(dt ? AG_F64 : AG_F32, ta, tb, s, A, B, C0, acc, threads[t], out[t]);
                    }
                    for (size_t t = 1; t < N_THREADS; t++)
                        cr_assert(memcmp(out[0], out[t], m * n * sizeof *out[0]) == 0,
                                  "%s %s [%zu,%zu,%zu] ta=%d tb=%d acc=%d: %zu threads differ from 1",
                                  ag__gemm_kernel_name(), dt ? "f64" : "f32", m, n, k, ta, tb, acc,
                                  threads[t]);
                    for (size_t t = 0; t < N_THREADS; t++)
                        free(out[t]);
                    free(A); free(B); free(C0);
                }
    }
}

/* ------------------------------------------------------------ dispatch */

enum {
    FMA = 1u << 12, OSXSAVE = 1u << 27, AVX = 1u << 28,               /* CPUID.1:ECX */
    AVX2 = 1u << 5, F = 1u << 16, DQ = 1u << 17, BW = 1u << 30,       /* CPUID.7.0:EBX */
};
#define VL_BIT (1u << 31)
#define AVX512_BITS (F | DQ | BW | VL_BIT)

static ag_isa from_bits(uint32_t ecx1, uint32_t ebx7, uint64_t xcr0)
{
    ag_cpu_bits b = {ecx1, ebx7, xcr0};
    return ag__isa_from_bits(&b);
}

/* The choice reads feature bits and the OS's saved state, as a CPU
 * without AVX-512 (or a VM that hides it) would report them: this runs
 * anywhere. */
Test(gemm_dispatch, feature_bits_pick_the_best_set_the_os_supports)
{
#if defined(__GNUC__) && defined(__x86_64__)
    const uint32_t v3 = FMA | OSXSAVE | AVX;
    cr_assert_eq(from_bits(0, 0, 0), AG_ISA_PORTABLE);
    cr_assert_eq(from_bits(v3, AVX2, 0x7), AG_ISA_AVX2);
    cr_assert_eq(from_bits(v3, AVX2 | AVX512_BITS, 0xe7), AG_ISA_AVX512);
    /* the OS does not save the zmm registers (or the opmasks): AVX2 */
    cr_assert_eq(from_bits(v3, AVX2 | AVX512_BITS, 0x7), AG_ISA_AVX2);
    cr_assert_eq(from_bits(v3, AVX2 | AVX512_BITS, 0xc7), AG_ISA_AVX2);
    /* nor the ymm registers: nothing past SSE */
    cr_assert_eq(from_bits(v3, AVX2 | AVX512_BITS, 0x3), AG_ISA_PORTABLE);
    /* AVX-512 F alone (Xeon Phi), or without VL: AVX2 */
    cr_assert_eq(from_bits(v3, AVX2 | F, 0xe7), AG_ISA_AVX2);
    cr_assert_eq(from_bits(v3, AVX2 | F | DQ | BW, 0xe7), AG_ISA_AVX2);
    /* AVX2 without FMA, or with XSAVE off in the OS: portable */
    cr_assert_eq(from_bits(OSXSAVE | AVX, AVX2 | AVX512_BITS, 0xe7), AG_ISA_PORTABLE);
    cr_assert_eq(from_bits(FMA | AVX, AVX2 | AVX512_BITS, 0xe7), AG_ISA_PORTABLE);
    cr_assert_eq(from_bits(v3, 0, 0x7), AG_ISA_PORTABLE);
#else
    cr_assert_eq(from_bits(~0u, ~0u, ~(uint64_t)0), AG_ISA_PORTABLE, "no x86 kernels in this build");
#endif
}

Test(gemm_dispatch, a_cap_above_the_cpu_falls_back_to_its_best)
{
    ag_cpu_bits bits = ag__cpu_bits();
    ag_isa best = ag__isa_from_bits(&bits);
    for (int cap = 0; cap < AG_ISA_COUNT; cap++) {
        ag_isa isa = ag__gemm_set_isa((ag_isa)cap);
        cr_assert_eq(isa, cap < (int)best ? (ag_isa)cap : best);
        cr_assert_eq(ag__gemm_isa(), isa);
        const char *name = ag__gemm_kernel_name();
        cr_assert(strncmp(name, ag__isa_name(isa), strlen(ag__isa_name(isa))) == 0, "%s", name);
        cr_assert_str_eq(ag_kernel_name(), name);
    }
    cr_log_info("this CPU: %s", ag__isa_name(best));
}

Test(gemm_dispatch, the_environment_caps_the_set)
{
    ag_cpu_bits bits = ag__cpu_bits();
    ag_isa best = ag__isa_from_bits(&bits);
    static const char *const values[] = {"portable", "avx2", "avx512", "AVX2", "", "fast"};
    static const ag_isa caps[] = {AG_ISA_PORTABLE, AG_ISA_AVX2, AG_ISA_AVX512,
                                  AG_ISA_COUNT, AG_ISA_COUNT, AG_ISA_COUNT};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        cr_assert_eq(setenv("AG_ISA", values[i], 1), 0);
        ag_isa want = caps[i] < best ? caps[i] : best;
        cr_assert_eq(ag__gemm_set_isa(AG_ISA_COUNT), want, "AG_ISA=%s", values[i]);
        cr_assert_eq(ag__gemm_isa(), want);
    }
    cr_assert_eq(unsetenv("AG_ISA"), 0);
    cr_assert_eq(ag__gemm_set_isa(AG_ISA_COUNT), best);
    cr_assert_eq(ag__isa_parse("avx512"), AG_ISA_AVX512);
    cr_assert_eq(ag__isa_parse(NULL), AG_ISA_COUNT);
    cr_assert_str_eq(ag__isa_name(AG_ISA_AVX2), "avx2");
    cr_assert_str_eq(ag__isa_name(AG_ISA_COUNT), "?");
}

/* ------------------------------------------------------------ elementwise
 * Passes over 60,000 elements are cut between threads: the results must be
 * the plain loops' and the same bits for any thread count. */

enum { ROWS = 300, COLS = 200 };

/* L = Σ relu(x + b) · c for x [ROWS,COLS], b [COLS], c [ROWS,1]; returns
 * the tape's values and gradients in out (y, then dx, db, dc). */
static void bias_relu_scale(size_t threads, double *out)
{
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    ag_tensor *x = ag_rand_normal(AG_F64, AG_SHAPE(ROWS, COLS), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(AG_F64, AG_SHAPE(COLS), 0, 1, &rng);
    ag_tensor *c = ag_rand_normal(AG_F64, AG_SHAPE(ROWS, 1), 0, 1, &rng);
    cr_assert(x && b && c);
    ag_set_requires_grad(x, true);
    ag_set_requires_grad(b, true);
    ag_set_requires_grad(c, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, threads);
    ag_tensor *y = ag_mul(t, ag_relu(t, ag_add(t, x, b)), c);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    size_t k = 0;
    for (size_t i = 0; i < ROWS * COLS; i++) out[k++] = ag_get(y, i);
    for (size_t i = 0; i < ROWS * COLS; i++) out[k++] = ag_get_grad(x, i);
    for (size_t j = 0; j < COLS; j++) out[k++] = ag_get_grad(b, j);
    for (size_t i = 0; i < ROWS; i++) out[k++] = ag_get_grad(c, i);

    /* the same by plain loops */
    for (size_t i = 0; i < ROWS; i++) {
        double ci = ag_get(c, i), dc = 0;
        for (size_t j = 0; j < COLS; j++) {
            double z = ag_get(x, i * COLS + j) + ag_get(b, j), r = z > 0 ? z : 0;
            cr_assert_eq(ag_get(y, i * COLS + j), r * ci);
            cr_assert_eq(ag_get_grad(x, i * COLS + j), z > 0 ? ci : 0);
            dc += r;
        }
        cr_assert(fabs(ag_get_grad(c, i) - dc) <= 1e-12 * (1 + fabs(dc)));
    }
    for (size_t j = 0; j < COLS; j++) {
        double db = 0;
        for (size_t i = 0; i < ROWS; i++)
            db += ag_get(x, i * COLS + j) + ag_get(b, j) > 0 ? ag_get(c, i) : 0;
        cr_assert(fabs(ag_get_grad(b, j) - db) <= 1e-12 * (1 + fabs(db)));
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(b);
    ag_tensor_free(c);
}

Test(elementwise, large_broadcast_ops_match_plain_loops_for_1_2_and_3_threads)
{
    enum { N = 2 * ROWS * COLS + COLS + ROWS };
    static double out[3][N];
    for (size_t i = 0; i < 3; i++)
        bias_relu_scale(i + 1, out[i]);
    for (size_t i = 1; i < 3; i++)
        cr_assert(memcmp(out[0], out[i], sizeof out[0]) == 0, "differs with %zu threads", i + 1);
}

typedef ag_tensor *(*unary_fn)(ag_tape *, ag_tensor *);

static ag_tensor *leaky(ag_tape *t, ag_tensor *x) { return ag_leaky_relu(t, x, 0.1); }
static ag_tensor *cube(ag_tape *t, ag_tensor *x) { return ag_pow(t, x, 3); }
static ag_tensor *shift(ag_tape *t, ag_tensor *x) { return ag_add_scalar(t, x, 0.5); }
static ag_tensor *halve(ag_tape *t, ag_tensor *x) { return ag_scale(t, x, 0.5); }
static ag_tensor *sqrt_abs(ag_tape *t, ag_tensor *x) { return ag_sqrt(t, ag_abs(t, x)); }
static ag_tensor *log_abs(ag_tape *t, ag_tensor *x) { return ag_log(t, ag_abs(t, x)); }
static ag_tensor *x_over_x(ag_tape *t, ag_tensor *x) { return ag_div(t, x, ag_exp(t, x)); }
static ag_tensor *x_minus_x(ag_tape *t, ag_tensor *x) { return ag_sub(t, ag_neg(t, x), ag_tanh(t, x)); }

/* Σ f(x) and its gradient for x of ROWS·COLS f32 values; out: y then dx. */
static void unary_with_threads(unary_fn f, size_t threads, float *out)
{
    ag_rng rng;
    ag_rng_seed(&rng, 6);
    ag_tensor *x = ag_rand_normal(AG_F32, AG_SHAPE(ROWS * COLS), 0, 2, &rng);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, threads);
    ag_tensor *y = f(t, x);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    memcpy(out, ag_data(y), ROWS * COLS * sizeof *out);
    memcpy(out + ROWS * COLS, ag_grad(x), ROWS * COLS * sizeof *out);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(elementwise, every_unary_op_gives_the_same_bits_for_1_2_and_3_threads)
{
    static const unary_fn ops[] = {ag_neg, ag_exp, ag_sigmoid, ag_tanh, ag_relu, ag_softplus,
                                   leaky, cube, shift, halve, sqrt_abs, log_abs, x_over_x, x_minus_x};
    static float out[3][2 * ROWS * COLS];
    for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
        for (size_t i = 0; i < 3; i++)
            unary_with_threads(ops[o], i + 1, out[i]);
        for (size_t i = 1; i < 3; i++)
            cr_assert(memcmp(out[0], out[i], sizeof out[0]) == 0, "op %zu differs with %zu threads",
                      o, i + 1);
    }
}

/* ------------------------------------------------------------ parallel_for */

typedef struct {
    unsigned char *seen;
    _Atomic size_t calls;
} cover;

static void mark(void *ctx, size_t lo, size_t hi)
{
    cover *c = ctx;
    c->calls++;
    for (size_t i = lo; i < hi; i++)
        c->seen[i]++;
}

Test(parallel_for, covers_every_index_once_for_1_2_and_3_threads)
{
    enum { N = 100003 };
    static unsigned char seen[N];
    for (size_t threads = 1; threads <= 3; threads++) {
        ag_tape *t = ag_tape_new();
        ag_tape_set_threads(t, threads);
        memset(seen, 0, sizeof seen);
        cover c = {seen, 0};
        ag_parallel_for(t, N, mark, &c);
        for (size_t i = 0; i < N; i++)
            cr_assert_eq(seen[i], 1, "index %zu seen %d times with %zu threads", i, seen[i], threads);
        cr_assert_eq(c.calls, threads, "one chunk per thread");
        ag_tape_free(t);
    }
}

Test(parallel_for, small_ranges_and_no_tape_run_in_one_call)
{
    static unsigned char seen[1000];
    cover c = {seen, 0};
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, 3);
    ag_parallel_for(t, 1000, mark, &c);
    cr_assert_eq(c.calls, 1);
    ag_parallel_for(NULL, 1000, mark, &c);
    cr_assert_eq(c.calls, 2);
    ag_parallel_for(t, 0, mark, &c); /* an empty range: one call with lo == hi */
    cr_assert_eq(c.calls, 3);
    ag_parallel_for(t, 10, NULL, &c); /* no function: nothing */
    for (size_t i = 0; i < 1000; i++)
        cr_assert_eq(seen[i], 2);
    ag_tape_free(t);
}
