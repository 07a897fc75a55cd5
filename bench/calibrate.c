/* calibrate: measures the numbers behind the thread cost model
 * (AG_EXEC_GRAIN_ELEMS and AG_EXEC_GRAIN_MACS in autograd/kernels/exec.h)
 * on the machine at hand. Prints RESULT lines as bench does:
 *
 *   RESULT calib dispatch-K <ns> ns    a job of K empty tasks on a warm
 *                                      pool (best of many)
 *   RESULT calib PASS-N-K <ratio> x    a pass over N f32 elements the
 *                                      calling thread has just written, and
 *                                      the caller reading its output back,
 *                                      on K threads: one thread's time over
 *                                      K threads' (above 1: K threads win)
 *   RESULT calib grain-PASS-K <n> elems/thread   the least N/K from which
 *                                      on K threads win by 10% at every
 *                                      larger N measured
 *   RESULT calib gemm-MxKxN-T <gflops> GFLOP/s   ag_matmul at T threads
 *
 * PASS: sgd (p -= lr·g, the optimizer's step), zero (the zero-grad), add
 * (y = a + b) and sigmoid (a pass with an exp per element).
 *
 *   calibrate [--threads T] [--quick]     T: most threads (default: the
 *                                         tape's default count)
 *   calibrate --default                   prints that count and stops
 *
 * Best of many repetitions: on a busy machine the best is the figure that
 * the machine's own speed sets, not its neighbours. */
#define _POSIX_C_SOURCE 200809L
#include "autograd.h"
#include "internal.h" /* the pool, driven directly at every split */

#include <math.h>
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

static void result(const char *name, double value, const char *unit)
{
    printf("RESULT calib %s %.4g %s\n", name, value, unit);
    fflush(stdout);
}

/* ------------------------------------------------------------ dispatch */

static void nothing(void *ctx, size_t task)
{
    (void)ctx;
    (void)task;
}

static void dispatch(ag_pool *p, size_t k, int reps)
{
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        ag__pool_run(p, k, nothing, NULL);
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    char name[64];
    snprintf(name, sizeof name, "dispatch-%zu", k);
    result(name, best * 1e9, "ns");
}

/* ------------------------------------------------------------ passes */

enum { SGD, ZERO, ADD, SIGMOID, N_PASSES };
static const char *const pass_names[N_PASSES] = {"sgd", "zero", "add", "sigmoid"};

typedef struct {
    int pass;
    float *a, *b, *y; /* sgd: p = a, g = b; zero: b; add, sigmoid: y = f(a, b) */
    size_t n, chunk;
} pass_job;

static void pass_range(const pass_job *j, size_t lo, size_t hi)
{
    float *a = j->a, *b = j->b, *y = j->y;
    switch (j->pass) {
    case SGD:
        for (size_t i = lo; i < hi; i++)
            a[i] -= 0.01f * b[i];
        break;
    case ZERO:
        memset(b + lo, 0, (hi - lo) * sizeof *b);
        break;
    case ADD:
        for (size_t i = lo; i < hi; i++)
            y[i] = a[i] + b[i];
        break;
    case SIGMOID:
        for (size_t i = lo; i < hi; i++)
            y[i] = 1 / (1 + expf(-a[i]));
        break;
    }
}

static void pass_task(void *ctx, size_t task)
{
    const pass_job *j = ctx;
    size_t lo = task * j->chunk, hi = lo + j->chunk < j->n ? lo + j->chunk : j->n;
    pass_range(j, lo < j->n ? lo : j->n, hi);
}

static volatile float sink;

/* The caller writes the inputs (as the op before would), the pass runs on
 * k threads, and the caller reads the output (as the op after would);
 * returns the best time of the pass and the read. */
static double time_pass(ag_pool *p, pass_job *j, size_t k, int reps)
{
    float *in = j->pass == ZERO ? j->b : j->a, *out = j->pass == SGD ? j->a : j->pass == ZERO ? j->b : j->y;
    j->chunk = ((j->n + k - 1) / k + 15) / 16 * 16;
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        for (size_t i = 0; i < j->n; i++)
            in[i] = (float)(i & 255) * (1.0f / 256);
        if (j->pass != ZERO)
            for (size_t i = 0; i < j->n; i++)
                j->b[i] = 0.5f;
        double t0 = now();
        ag__pool_run(p, k, pass_task, j);
        float s = 0;
        for (size_t i = 0; i < j->n; i += 16)
            s += out[i];
        double dt = now() - t0;
        sink = s;
        best = dt < best ? dt : best;
    }
    return best;
}

/* For each k, the least n/k from which k threads win by 10% at every
 * larger n measured (0: never within the sizes measured). */
static void passes(ag_pool *p, size_t most, bool quick)
{
    size_t n_max = (size_t)1 << (quick ? 20 : 22);
    float *a = malloc(n_max * sizeof *a), *b = malloc(n_max * sizeof *b), *y = malloc(n_max * sizeof *y);
    if (!a || !b || !y) {
        fprintf(stderr, "calibrate: out of memory\n");
        exit(1);
    }
    for (int pass = 0; pass < N_PASSES; pass++)
        for (size_t k = 2; k <= most; k *= 2) {
            size_t grain = 0;
            for (size_t n = (size_t)1 << 10; n <= n_max; n *= 2) {
                pass_job j = {pass, a, b, y, n, 0};
                int reps = (int)((quick ? 4e6 : 2e7) / (double)n);
                reps = reps < 5 ? 5 : reps > 400 ? 400 : reps;
                double t1 = time_pass(p, &j, 1, reps), tk = time_pass(p, &j, k, reps);
                char name[64];
                snprintf(name, sizeof name, "%s-%zu-%zu", pass_names[pass], n, k);
                result(name, t1 / tk, "x");
                if (tk > t1 / 1.1)
                    grain = 0;
                else if (!grain)
                    grain = n / k;
            }
            char name[64];
            snprintf(name, sizeof name, "grain-%s-%zu", pass_names[pass], k);
            result(name, (double)grain, "elems/thread");
        }
    free(a);
    free(b);
    free(y);
}

/* ------------------------------------------------------------ GEMM */

static void gemm(size_t m, size_t k, size_t n, size_t most, bool quick)
{
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *a = ag_rand_normal(AG_F32, AG_SHAPE(m, k), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(AG_F32, AG_SHAPE(k, n), 0, 1, &rng);
    ag_set_requires_grad(b, true); /* recorded, as in training */
    for (size_t threads = 1; threads <= most; threads *= 2) {
        ag_tape *t = ag_tape_new();
        ag_tape_set_threads(t, threads);
        double flops = 2.0 * (double)(m * n * k), best = 1e9;
        int reps = (int)((quick ? 2e8 : 1e9) / flops);
        reps = reps < 3 ? 3 : reps > 2000 ? 2000 : reps;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            if (!ag_matmul(t, a, b)) {
                fprintf(stderr, "calibrate: %s\n", ag_tape_error(t));
                exit(1);
            }
            double dt = now() - t0;
            best = dt < best ? dt : best;
            ag_tape_reset(t);
        }
        char name[64];
        snprintf(name, sizeof name, "gemm-%zux%zux%zu-%zu", m, k, n, threads);
        result(name, flops / best * 1e-9, "GFLOP/s");
        ag_tape_free(t);
    }
    ag_tensor_free(a);
    ag_tensor_free(b);
}

int main(int argc, char **argv)
{
    size_t most = 0;
    bool quick = false, only_default = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--default"))
            only_default = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            most = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: calibrate [--threads T] [--quick] | --default\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    ag_tape *t = ag_tape_new();
    size_t dflt = ag_tape_threads(t);
    ag_tape_free(t);
    if (only_default) {
        printf("%zu\n", dflt);
        return 0;
    }
    result("default-threads", (double)dflt, "threads");
    most = most ? most : dflt;
    ag_pool *p = most > 1 ? ag__pool_new(most - 1) : NULL;
    if (most > 1 && !p) {
        fprintf(stderr, "calibrate: no pool\n");
        return 1;
    }
    ag__pool_run(p, most, nothing, NULL); /* started and warm */
    for (size_t k = 2; k <= most; k *= 2)
        dispatch(p, k, quick ? 200 : 2000);
    passes(p, most, quick);
    ag__pool_free(p);
    static const size_t shapes[][3] = {{10, 784, 30}, {128, 784, 256}, {128, 256, 256},
                                       {64, 64, 64}, {128, 128, 128}, {256, 256, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        gemm(shapes[s][0], shapes[s][1], shapes[s][2], most, quick);
    return 0;
}
