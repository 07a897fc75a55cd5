/* OpenBLAS reference for workload W4 (f32 square matmul, forward and
 * backward), printing the shared RESULT protocol:
 *
 *   RESULT openblas W4-<n>-fwd <GFLOP/s> GFLOP/s    C  = A·B           2n³ flops
 *   RESULT openblas W4-<n>-bwd <GFLOP/s> GFLOP/s    dA = dC·Bᵀ and
 *                                                   dB = Aᵀ·dC         4n³ flops
 *
 * for n = 1024 and 2048 (or the sizes given on the command line), best of
 * REPS timed repetitions after one untimed warm-up.  OpenBLAS uses its own
 * thread pool; we ask it for 2 threads (the machine's core count) unless
 * OPENBLAS_NUM_THREADS is set, which then wins.  Before the results it
 * prints `OPENBLAS_CORE <name>` on stdout: the kernel set OpenBLAS chose
 * (openblas_get_corename(), e.g. Prescott, Haswell, Zen, SkylakeX), which
 * OPENBLAS_CORETYPE can force on a DYNAMIC_ARCH build.
 *
 * --core prints only that name and exits: run.sh asks it which core
 * OpenBLAS picks as is and whether it accepts a forced OPENBLAS_CORETYPE
 * (it falls back to its own choice, quietly, on a name it does not know).
 *
 * Build: cc -O2 -std=c11 bench/gemm_openblas.c -o gemm_openblas -lopenblas
 * Usage: gemm_openblas [--reps N] [n ...]
 *        gemm_openblas --core
 */
#define _POSIX_C_SOURCE 199309L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *alloc_rand(size_t count, unsigned *state)
{
    float *p = aligned_alloc(64, ((count * sizeof(float) + 63) / 64) * 64);
    if (!p) {
        fprintf(stderr, "gemm_openblas: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < count; i++) {
        *state = *state * 1664525u + 1013904223u;
        p[i] = (float)(*state >> 8) / 16777216.0f - 0.5f;
    }
    return p;
}

static void bench_size(int n, int reps)
{
    unsigned seed = 12345u + (unsigned)n;
    size_t nn = (size_t)n * (size_t)n;
    float *A = alloc_rand(nn, &seed), *B = alloc_rand(nn, &seed);
    float *dC = alloc_rand(nn, &seed);
    float *C = alloc_rand(nn, &seed), *dA = alloc_rand(nn, &seed);
    float *dB = alloc_rand(nn, &seed);
    double best_f = 1e300, best_b = 1e300;

    for (int r = -1; r < reps; r++) { /* r == -1: warm-up */
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n,
                    1.0f, A, n, B, n, 0.0f, C, n);
        double t1 = now();
        if (r >= 0 && t1 - t0 < best_f)
            best_f = t1 - t0;
    }
    for (int r = -1; r < reps; r++) {
        double t0 = now();
        /* dA = dC · Bᵀ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n,
                    1.0f, dC, n, B, n, 0.0f, dA, n);
        /* dB = Aᵀ · dC */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, n,
                    1.0f, A, n, dC, n, 0.0f, dB, n);
        double t1 = now();
        if (r >= 0 && t1 - t0 < best_b)
            best_b = t1 - t0;
    }
    double n3 = (double)n * (double)n * (double)n;
    printf("RESULT openblas W4-%d-fwd %.2f GFLOP/s\n", n, 2.0 * n3 / best_f / 1e9);
    printf("RESULT openblas W4-%d-bwd %.2f GFLOP/s\n", n, 4.0 * n3 / best_b / 1e9);
    fflush(stdout);
    /* Keep the results observable so nothing is optimised away. */
    volatile float sink = C[nn / 2] + dA[nn / 3] + dB[nn / 5];
    (void)sink;
    free(A); free(B); free(C); free(dC); free(dA); free(dB);
}

int main(int argc, char **argv)
{
    int reps = 5, nsizes = 0;
    int sizes[16];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--core") == 0 && argc == 2) {
            printf("%s\n", openblas_get_corename());
            return 0;
        }
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1)
                reps = 1;
        } else if (nsizes < 16 && atoi(argv[i]) > 0) {
            sizes[nsizes++] = atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: %s [--reps N] [n ...] | --core\n", argv[0]);
            return 2;
        }
    }
    if (nsizes == 0) {
        sizes[0] = 1024;
        sizes[1] = 2048;
        nsizes = 2;
    }
    if (!getenv("OPENBLAS_NUM_THREADS"))
        openblas_set_num_threads(2);
    fprintf(stderr, "# gemm_openblas: %s; core %s, %d threads\n",
            openblas_get_config(), openblas_get_corename(),
            openblas_get_num_threads());
    printf("OPENBLAS_CORE %s\n", openblas_get_corename());
    fflush(stdout);
    for (int i = 0; i < nsizes; i++)
        bench_size(sizes[i], reps);
    return 0;
}
