/* kann peer for the benchmark suite (bench/run.sh builds and runs it).
 *
 *   kann_peer [--quick] [--threads N] [WORKLOAD ...]   default: W1-f32 W2-f32
 *
 * Trains, through the public API of attractivechaos/kann (kann.h), the two
 * networks our bench times, on synthetic data of the same kind and size
 * (60,000 images of 784 uniform [0,1) pixels, uniform random labels 0..9,
 * seeded, built before timing):
 *   W1-f32  784-30-10, sigmoid hidden and output layers, quadratic cost
 *           sum ||a - y||^2 / (2 batch), plain SGD, batch 10, lr 3.0
 *   W2-f32  784-256-256-10 ReLU, softmax cross-entropy (mean over the batch),
 *           plain SGD, batch 128 (the epoch's last batch 96), lr 0.01
 *   W1-f32-rss, W2-f32-rss  run that workload, then print the peak RSS (KiB)
 * Like our bench: one untimed warm-up epoch, then one timed epoch, each with
 * a fresh shuffle (kann_shuffle); prints `RESULT kann <workload> <v> ex/s`.
 *
 * Each step copies the shuffled rows into the buffers bound with
 * kann_feed_bind, calls kann_cost(ann, 0, 1) (forward and backward; the
 * gradient lands in ann->g) and steps ann->x -= lr * ann->g with kad_saxpy.
 * kann's own trainer (kann_train_fnn1) uses RMSprop, another workload.
 * kann_layer_cost(KANN_C_MSE) has a linear output, so W1's graph is built
 * from kad_sigm and kad_mse; kad_mse is the mean over batch x 10 outputs, a
 * fifth of the quadratic cost, so W1 steps with 5 x 3.0 for the same update
 * (and reports 5 x its cost).  W2 uses kann_layer_cost(KANN_C_CEM): dense,
 * softmax, cross-entropy against one-hot rows.
 *
 * --threads N > 1 calls kann_mt(ann, N, batch): kann then splits every
 * mini-batch across N threads (only if kann.c was compiled with
 * -DHAVE_PTHREAD; otherwise kann_mt does nothing).  --quick is accepted for
 * the other peers' command line and changes nothing.
 *
 * Built with -DHAVE_CBLAS (kann's sgemm replaced by OpenBLAS's cblas_sgemm),
 * it prints `OPENBLAS_CORE <name>` on stdout before its results: the
 * kernel set OpenBLAS chose (openblas_get_corename()), which run.sh files
 * the results under.
 *
 * kann (MIT licence) is not part of this repository: compile this file with
 * a kann checkout's kann.c and kautodiff.c (run.sh does, given KANN_DIR).
 */
#define _POSIX_C_SOURCE 200809L
#include "kann.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef HAVE_CBLAS
char *openblas_get_corename(void); /* OpenBLAS's, beside its cblas_sgemm */
#endif

#ifndef KANN_BUILD /* how kann was compiled, for the note; run.sh defines it */
#define KANN_BUILD "build flags not recorded"
#endif

enum { N_TRAIN = 60000, N_IN = 784, N_OUT = 10, N_CHECK = 10000 };

typedef struct {
    const char *name;
    int wide, batch;
    float lr, cost_scale; /* our cost = cost_scale * kann's cost */
} workload;

static const workload W1 = {"W1-f32", 0, 10, 3.0f, N_OUT / 2.0f};
static const workload W2 = {"W2-f32", 1, 128, 0.01f, 1.0f};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n);
    if (!p) {
        fprintf(stderr, "kann_peer: out of memory\n");
        exit(1);
    }
    return p;
}

static kann_t *build(int wide)
{
    kad_node_t *t = kann_layer_input(N_IN), *truth, *cost;
    if (!wide) {
        t = kad_sigm(kann_layer_dense(t, 30));
        t = kad_sigm(kann_layer_dense(t, N_OUT));
        truth = kad_feed(2, 1, N_OUT);
        truth->ext_flag |= KANN_F_TRUTH;
        t->ext_flag |= KANN_F_OUT;
        cost = kad_mse(t, truth);
    } else {
        t = kad_relu(kann_layer_dense(t, 256));
        t = kad_relu(kann_layer_dense(t, 256));
        cost = kann_layer_cost(t, N_OUT, KANN_C_CEM);
    }
    return kann_new(cost, 0);
}

/* One pass over examples idx[0..n) in mini-batches; returns the mean cost
 * (kann's scale).  With lr > 0 it trains (SGD), else it only evaluates. */
static double pass(kann_t *ann, const workload *w, const float *x, const float *y,
                   const int *idx, int n, float *bx, float *by, float lr)
{
    int n_var = kann_size_var(ann);
    double sum = 0.0;
    for (int k = 0; k < n; k += w->batch) {
        int ms = n - k < w->batch ? n - k : w->batch;
        for (int b = 0; b < ms; b++) {
            memcpy(&bx[b * N_IN], &x[(size_t)idx[k + b] * N_IN], N_IN * sizeof(float));
            memcpy(&by[b * N_OUT], &y[(size_t)idx[k + b] * N_OUT], N_OUT * sizeof(float));
        }
        kann_set_batch_size(ann, ms);
        sum += (double)kann_cost(ann, 0, lr > 0.0f) * ms;
        if (lr > 0.0f)
            kad_saxpy(n_var, -lr, ann->g, ann->x);
    }
    return sum / n;
}

static void run(const workload *w, int n_threads, int rss)
{
    float *x = xmalloc(sizeof(float) * N_TRAIN * N_IN);
    float *y = xmalloc(sizeof(float) * N_TRAIN * N_OUT); /* one-hot rows */
    float *bx = xmalloc(sizeof(float) * w->batch * N_IN);
    float *by = xmalloc(sizeof(float) * w->batch * N_OUT);
    int *idx = xmalloc(sizeof(int) * N_TRAIN);
    double cost[3], secs = 0.0;

    kann_srand(1);
    for (size_t i = 0; i < (size_t)N_TRAIN * N_IN; i++)
        x[i] = (float)kann_drand();
    for (int i = 0; i < N_TRAIN; i++)
        y[i * N_OUT + (int)(kann_drand() * N_OUT)] = 1.0f;

    kann_t *ann = build(w->wide);
    if (!ann) {
        fprintf(stderr, "kann_peer: %s: kann_new failed\n", w->name);
        exit(1);
    }
    kann_mt(ann, n_threads, w->batch);
    kann_feed_bind(ann, KANN_F_IN, 0, &bx);
    kann_feed_bind(ann, KANN_F_TRUTH, 0, &by);

    for (int i = 0; i < N_TRAIN; i++)
        idx[i] = i;
    cost[0] = pass(ann, w, x, y, idx, N_CHECK, bx, by, 0.0f); /* untrained */
    for (int epoch = 1; epoch <= 2; epoch++) { /* a warm-up epoch, then the timed one */
        double t0 = now();
        kann_shuffle(N_TRAIN, idx);
        cost[epoch] = pass(ann, w, x, y, idx, N_TRAIN, bx, by, w->lr * w->cost_scale);
        secs = now() - t0;
    }
    fprintf(stderr, "# kann %s, %d thread(s): %s cost %.4g untrained (first %d examples),"
            " mean %.4g over the warm-up epoch, %.4g over the timed epoch\n",
            w->name, n_threads, w->wide ? "cross-entropy" : "quadratic",
            w->cost_scale * cost[0], N_CHECK, w->cost_scale * cost[1], w->cost_scale * cost[2]);
    if (rss) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru); /* ru_maxrss is in KiB on Linux */
        printf("RESULT kann %s-rss %ld KiB\n", w->name, ru.ru_maxrss);
    } else {
        printf("RESULT kann %s %.6g ex/s\n", w->name, N_TRAIN / secs);
    }
    fflush(stdout);

    kann_delete(ann);
    free(idx);
    free(by);
    free(bx);
    free(y);
    free(x);
}

int main(int argc, char **argv)
{
    int n_threads = 1, n_work = 0;
    const char *work[8];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            continue;
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            n_threads = atoi(argv[++i]);
            continue;
        }
        if (n_work == 8 || (strcmp(argv[i], "W1-f32") && strcmp(argv[i], "W2-f32") &&
                            strcmp(argv[i], "W1-f32-rss") && strcmp(argv[i], "W2-f32-rss"))) {
            fprintf(stderr, "kann_peer: unknown argument '%s'; known: --quick --threads N"
                    " W1-f32 W2-f32 W1-f32-rss W2-f32-rss\n", argv[i]);
            return 2;
        }
        work[n_work++] = argv[i];
    }
    if (n_threads < 1) {
        fprintf(stderr, "kann_peer: --threads wants a positive integer\n");
        return 2;
    }
    if (n_work == 0) {
        work[n_work++] = "W1-f32";
        work[n_work++] = "W2-f32";
    }
    fprintf(stderr, "# kann %s (kautodiff %s), %s: %d thread(s)%s\n", KANN_VERSION, KAD_VERSION,
            KANN_BUILD, n_threads, n_threads > 1 ? " via kann_mt, each mini-batch split" : "");
#ifdef HAVE_CBLAS
    fprintf(stderr, "# kann's CBLAS build: OpenBLAS core %s\n", openblas_get_corename());
    printf("OPENBLAS_CORE %s\n", openblas_get_corename());
    fflush(stdout);
#endif
    for (int i = 0; i < n_work; i++) {
        int rss = strstr(work[i], "-rss") != NULL;
        run(strncmp(work[i], "W1", 2) == 0 ? &W1 : &W2, n_threads, rss);
    }
    return 0;
}
