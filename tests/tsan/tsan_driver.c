/* tsan_driver.c: the engine's threaded paths, run in a ThreadSanitizer
 * build (meson suite 'tsan'). Criterion does not start under TSan, so this
 * is a plain program: each check prints what failed, and the exit status is
 * non-zero when any did. TSan's own reports end the run with its exit code
 * (66) under TSAN_OPTIONS=halt_on_error=1, or at exit otherwise.
 *
 * Covered: GEMM split over threads (forward and the two backward products,
 * f32 and f64, stripes of rows and of columns), elementwise passes over
 * more than 16k elements, ag_parallel_for, the pool itself (many jobs, some
 * after its threads went to sleep; an absurd thread count), training steps
 * of an MLP at 1, 2 and 3 threads and with the count changed between steps,
 * and two tapes on two threads sharing one model for inference. Every
 * threaded result must also be bitwise the one-thread result.
 *
 *   tsan_driver               run every check
 *   tsan_driver NAME...       run the named checks
 *   tsan_driver --plant-race  a callback that races on purpose: TSan must
 *                             report it (the 'tsan-sees-planted-race' test) */
#define _POSIX_C_SOURCE 200809L
#include "autograd.h"
#include "internal.h" /* the pool, tested directly */
#include "nn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
            return false;                                             \
        }                                                             \
    } while (0)

static bool same_bits(const void *a, const void *b, size_t bytes)
{
    return memcmp(a, b, bytes) == 0;
}

/* ------------------------------------------------------------ GEMM */

/* y = a·b and the gradients of Σ y∘y for a [m,k], b [k,n] with a given
 * thread count, copied into out (y, ga, gb). m >= n splits C by rows,
 * m < n by columns; m·n·k is above the 2M multiply-adds that split. */
static bool product(ag_dtype dt, size_t m, size_t n, size_t k, size_t threads, void *out)
{
    ag_rng rng;
    ag_rng_seed(&rng, m * 31 + n * 7 + k);
    ag_tensor *a = ag_rand_normal(dt, AG_SHAPE(m, k), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(dt, AG_SHAPE(k, n), 0, 1, &rng);
    CHECK(a && b, "out of memory");
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    ag_tape *t = ag_tape_new();
    CHECK(t, "out of memory");
    ag_tape_set_threads(t, threads);
    ag_tensor *y = ag_matmul(t, a, b);
    ag_status s = ag_backward(t, ag_sum(t, ag_mul(t, y, y)));
    CHECK(s == AG_OK, "%s", ag_tape_error(t));
    size_t es = ag_dtype_size(dt);
    char *o = out;
    memcpy(o, ag_data(y), m * n * es);
    memcpy(o + m * n * es, ag_grad(a), m * k * es);
    memcpy(o + (m * n + m * k) * es, ag_grad(b), k * n * es);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    return true;
}

static bool gemm_split_over_threads(void)
{
    static const struct { ag_dtype dt; size_t m, n, k; } cases[] = {
        {AG_F32, 203, 97, 157},  /* by rows */
        {AG_F32, 61, 301, 131},  /* by columns */
        {AG_F64, 150, 150, 100}, /* by rows, f64 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t m = cases[c].m, n = cases[c].n, k = cases[c].k;
        size_t bytes = (m * n + m * k + k * n) * ag_dtype_size(cases[c].dt);
        char *ref = malloc(bytes), *got = malloc(bytes);
        CHECK(ref && got, "out of memory");
        bool ok = product(cases[c].dt, m, n, k, 1, ref);
        for (size_t threads = 2; ok && threads <= 3; threads++) {
            ok = product(cases[c].dt, m, n, k, threads, got);
            if (ok && !same_bits(ref, got, bytes)) {
                fprintf(stderr, "gemm %zux%zux%zu differs with %zu threads\n", m, n, k, threads);
                ok = false;
            }
        }
        free(ref);
        free(got);
        if (!ok)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------ elementwise */

enum { ROWS = 320, COLS = 320 }; /* 102400 elements: 6 grains of 16k, split over 3 threads */

/* y = sigmoid(x + b) · c + exp(-|x|), L = Σ y, for x [ROWS,COLS], b [COLS],
 * c [ROWS,1]: broadcasting forward passes and their reductions backward.
 * out: y, dx, db, dc. */
static bool elementwise(size_t threads, float *out)
{
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    ag_tensor *x = ag_rand_normal(AG_F32, AG_SHAPE(ROWS, COLS), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(AG_F32, AG_SHAPE(COLS), 0, 1, &rng);
    ag_tensor *c = ag_rand_normal(AG_F32, AG_SHAPE(ROWS, 1), 0, 1, &rng);
    CHECK(x && b && c, "out of memory");
    ag_set_requires_grad(x, true);
    ag_set_requires_grad(b, true);
    ag_set_requires_grad(c, true);
    ag_tape *t = ag_tape_new();
    CHECK(t, "out of memory");
    ag_tape_set_threads(t, threads);
    ag_tensor *y = ag_add(t, ag_mul(t, ag_sigmoid(t, ag_add(t, x, b)), c),
                          ag_exp(t, ag_neg(t, ag_abs(t, x))));
    ag_status s = ag_backward(t, ag_sum(t, ag_relu(t, y)));
    CHECK(s == AG_OK, "%s", ag_tape_error(t));
    memcpy(out, ag_data(y), ROWS * COLS * sizeof *out);
    memcpy(out + ROWS * COLS, ag_grad(x), ROWS * COLS * sizeof *out);
    memcpy(out + 2 * ROWS * COLS, ag_grad(b), COLS * sizeof *out);
    memcpy(out + 2 * ROWS * COLS + COLS, ag_grad(c), ROWS * sizeof *out);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(b);
    ag_tensor_free(c);
    return true;
}

static bool elementwise_split_over_threads(void)
{
    enum { N = 2 * ROWS * COLS + COLS + ROWS };
    static float out[3][N];
    for (size_t i = 0; i < 3; i++)
        if (!elementwise(i + 1, out[i]))
            return false;
    for (size_t i = 1; i < 3; i++)
        CHECK(same_bits(out[0], out[i], sizeof out[0]), "differs with %zu threads", i + 1);
    return true;
}

/* ------------------------------------------------------------ ag_parallel_for */

typedef struct {
    unsigned char *seen;
    _Atomic size_t calls;
} cover;

static void mark(void *ctx, size_t lo, size_t hi)
{
    cover *c = ctx;
    c->calls++;
    for (size_t i = lo; i < hi; i++)
        c->seen[i]++; /* each chunk its own elements: no race */
}

static bool parallel_for_covers_each_index_once(void)
{
    enum { N = 50021 };
    static unsigned char seen[N];
    for (size_t threads = 1; threads <= 3; threads++) {
        ag_tape *t = ag_tape_new();
        CHECK(t, "out of memory");
        ag_tape_set_threads(t, threads);
        for (int rep = 0; rep < 4; rep++) {
            memset(seen, 0, sizeof seen);
            cover c = {seen, 0};
            ag_parallel_for(t, N, mark, &c);
            for (size_t i = 0; i < N; i++)
                CHECK(seen[i] == 1, "index %zu seen %d times with %zu threads", i, seen[i], threads);
            CHECK(c.calls == threads, "%zu chunks with %zu threads", (size_t)c.calls, threads);
        }
        ag_tape_free(t);
    }
    return true;
}

/* ------------------------------------------------------------ the pool */

typedef struct {
    size_t job;
    size_t *out;
} pool_job;

static void write_slot(void *ctx, size_t task)
{
    pool_job *j = ctx;
    j->out[task] = j->job * 1000 + task;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Many jobs back to back (threads still spinning) and some after a pause
 * long enough for them to sleep on the condition variable. */
static bool pool_runs_many_jobs(void)
{
    enum { MAX_TASKS = 37 };
    size_t out[MAX_TASKS];
    ag_pool *p = ag__pool_new(2);
    CHECK(p && ag__pool_threads(p) == 3, "no pool of 2 workers");
    for (size_t job = 1; job <= 300; job++) {
        if (job % 100 == 0)
            sleep_ms(30);
        size_t n = job % MAX_TASKS + 1;
        memset(out, 0, sizeof out);
        pool_job j = {job, out};
        ag__pool_run(p, n, write_slot, &j);
        for (size_t i = 0; i < n; i++)
            CHECK(out[i] == job * 1000 + i, "job %zu task %zu not run", job, i);
    }
    ag__pool_free(p);
    return true;
}

static size_t inline_calls;

static void count_call(void *ctx, size_t task)
{
    (void)ctx;
    (void)task;
    inline_calls++;
}

/* A count whose thread array overflows size_t (2^61 + 2 threads of 8
 * bytes) gets no pool, and work then runs on the calling thread. */
static bool pool_absurd_count_fails_cleanly(void)
{
    static const size_t counts[] = {((size_t)1 << 61) + 2, SIZE_MAX, SIZE_MAX / sizeof(void *) + 1};
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++) {
        ag_pool *p = ag__pool_new(counts[i]);
        CHECK(p == NULL, "a pool of %zu threads", counts[i]);
    }
    CHECK(ag__pool_threads(NULL) == 1, "%zu threads without a pool", ag__pool_threads(NULL));
    inline_calls = 0;
    ag__pool_run(NULL, 5, count_call, NULL);
    CHECK(inline_calls == 5, "%zu calls", inline_calls);
    return true;
}

/* ------------------------------------------------------------ an MLP */

enum { IN = 256, HIDDEN = 128, OUT = 10, BATCH = 128 }; /* 4.2M multiply-adds, 16k activations */

static bool make_net(ag_dtype dt, nn_mlp **net)
{
    static const size_t sizes[] = {IN, HIDDEN, OUT};
    static const nn_act acts[] = {NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = dt,
                    .init = NN_INIT_HE, .seed = 17};
    nn_error err;
    CHECK(nn_mlp_new(&spec, net, &err) == AG_OK, "%s", err.msg);
    return true;
}

/* x [BATCH, IN] normal, y [BATCH] class indices. */
static bool make_data(ag_dtype dt, ag_tensor **x, ag_tensor **y)
{
    ag_rng rng;
    ag_rng_seed(&rng, 23);
    *x = ag_rand_normal(dt, AG_SHAPE(BATCH, IN), 0, 1, &rng);
    float c32[BATCH];
    double c64[BATCH];
    for (size_t i = 0; i < BATCH; i++)
        c32[i] = (float)(c64[i] = (double)ag_rng_below(&rng, OUT));
    *y = ag_from_data(dt, AG_SHAPE(BATCH), dt == AG_F32 ? (const void *)c32 : (const void *)c64);
    CHECK(*x && *y, "out of memory");
    return true;
}

/* Trains a fresh model for a few steps, the tape's thread count taken from
 * threads[step] (changed between steps when they differ), and copies the
 * parameters and the losses out. */
static bool train(ag_dtype dt, nn_optim_config cfg, const size_t *threads, size_t steps,
                  void *params, size_t *n_params, double *losses)
{
    nn_mlp *net;
    ag_tensor *x, *y;
    if (!make_net(dt, &net) || !make_data(dt, &x, &y))
        return false;
    size_t n;
    const nn_param *ps = nn_mlp_params(net, &n);
    nn_optim *opt;
    nn_error err;
    CHECK(nn_optim_new(&cfg, ps, n, &opt, &err) == AG_OK, "%s", err.msg);
    ag_tape *t = ag_tape_new();
    CHECK(t, "out of memory");
    for (size_t s = 0; s < steps; s++) {
        ag_tape_set_threads(t, threads[s]);
        CHECK(nn_mlp_train_step(net, t, opt, NN_COST_CROSS_ENTROPY, x, y, &losses[s], &err) == AG_OK,
              "%s", err.msg);
    }
    *n_params = nn_mlp_param_count(net);
    memcpy(params, nn_mlp_data(net), *n_params * ag_dtype_size(dt));
    ag_tape_free(t);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return true;
}

enum { STEPS = 3, MAX_PARAMS = IN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT };

static bool train_and_compare(ag_dtype dt, nn_optim_config cfg, const char *what)
{
    static const size_t runs[][STEPS] = {{1, 1, 1}, {2, 2, 2}, {3, 3, 3}, {3, 1, 2}};
    static double ref[MAX_PARAMS], got[MAX_PARAMS]; /* room for f64 */
    double ref_loss[STEPS], loss[STEPS];
    size_t n_ref, n;
    if (!train(dt, cfg, runs[0], STEPS, ref, &n_ref, ref_loss))
        return false;
    for (size_t r = 1; r < sizeof runs / sizeof *runs; r++) {
        if (!train(dt, cfg, runs[r], STEPS, got, &n, loss))
            return false;
        CHECK(n == n_ref && same_bits(ref, got, n * ag_dtype_size(dt)),
              "%s: parameters differ with threads %zu,%zu,%zu", what, runs[r][0], runs[r][1], runs[r][2]);
        CHECK(same_bits(ref_loss, loss, sizeof loss), "%s: losses differ with threads %zu,%zu,%zu",
              what, runs[r][0], runs[r][1], runs[r][2]);
    }
    return true;
}

static bool mlp_train_steps_at_1_2_3_threads(void)
{
    return train_and_compare(AG_F32, nn_adam(1e-3), "f32 adam") &&
           train_and_compare(AG_F64, (nn_optim_config){.kind = NN_SGD, .lr = 0.05, .momentum = 0.9},
                             "f64 sgd momentum");
}

/* ------------------------------------------------------------ shared model */

typedef struct {
    nn_mlp *net;      /* shared, read only */
    ag_tensor *x, *y; /* shared, read only */
    const float *ref; /* the one-thread output [BATCH, OUT] */
    double ref_acc;
    size_t threads;   /* this tape's */
    bool ok;
} infer_job;

/* The model's output written out in engine ops, relu(x·W1 + b1)·W2 + b2,
 * so that it reads the shared parameters through the engine itself (the
 * model's own forward runs in nn_mlp_accuracy). */
static ag_tensor *forward(nn_mlp *net, ag_tape *t, ag_tensor *x)
{
    size_t n;
    const nn_param *p = nn_mlp_params(net, &n);
    if (n != 4)
        return NULL;
    ag_tensor *h = ag_relu(t, ag_add(t, ag_matmul(t, x, p[0].tensor), p[1].tensor));
    return ag_add(t, ag_matmul(t, h, p[2].tensor), p[3].tensor);
}

static bool infer(infer_job *j)
{
    ag_tape *t = ag_tape_new();
    CHECK(t, "out of memory");
    ag_tape_set_threads(t, j->threads);
    for (int rep = 0; rep < 4; rep++) {
        /* recording off, as inference is; on, so that both tapes also
         * record ops on (and hold) the same leaves */
        ag_tape_set_recording(t, rep % 2 == 1);
        ag_tensor *out = forward(j->net, t, j->x);
        CHECK(out, "%s", ag_tape_error(t));
        CHECK(same_bits(ag_data(out), j->ref, BATCH * OUT * sizeof(float)),
              "output differs on a tape of %zu threads", j->threads);
        ag_tape_reset(t);
        double acc;
        nn_error err;
        CHECK(nn_mlp_accuracy(j->net, t, j->x, j->y, &acc, &err) == AG_OK, "%s", err.msg);
        CHECK(acc == j->ref_acc, "accuracy %g, not %g", acc, j->ref_acc);
    }
    ag_tape_free(t);
    return true;
}

static void *infer_thread(void *arg)
{
    infer_job *j = arg;
    j->ok = infer(j);
    return NULL;
}

/* Each thread has its own tape (with a pool of its own); the model and the
 * inputs are shared, their values only read. */
static bool two_tapes_share_one_model_for_inference(void)
{
    nn_mlp *net;
    ag_tensor *x, *y;
    if (!make_net(AG_F32, &net) || !make_data(AG_F32, &x, &y))
        return false;
    static float ref[BATCH * OUT];
    ag_tape *t = ag_tape_new();
    CHECK(t, "out of memory");
    ag_tape_set_threads(t, 1);
    ag_tape_set_recording(t, false);
    ag_tensor *out = forward(net, t, x);
    CHECK(out, "%s", ag_tape_error(t));
    memcpy(ref, ag_data(out), sizeof ref);
    ag_tape_reset(t);
    double acc;
    nn_error err;
    CHECK(nn_mlp_accuracy(net, t, x, y, &acc, &err) == AG_OK, "%s", err.msg);
    ag_tape_free(t);

    infer_job jobs[2] = {{net, x, y, ref, acc, 2, false}, {net, x, y, ref, acc, 3, false}};
    pthread_t th[2];
    size_t started = 0;
    for (; started < 2; started++)
        if (pthread_create(&th[started], NULL, infer_thread, &jobs[started]))
            break;
    for (size_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    CHECK(started == 2, "could not start a thread");
    CHECK(jobs[0].ok && jobs[1].ok, "a thread failed");
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return true;
}

/* ------------------------------------------------------------ a planted race */

static volatile long racy_total; /* written by every chunk without a lock */
static atomic_int arrived;        /* chunks that have started */

/* Each chunk waits (up to 2 s) until both chunks have started, so that two
 * threads surely write the total at once, however the pool hands out the
 * tasks; the wait itself creates no ordering between the writes. */
static void planted_race(void *ctx, size_t lo, size_t hi)
{
    (void)ctx;
    atomic_fetch_add_explicit(&arrived, 1, memory_order_relaxed);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1; atomic_load_explicit(&arrived, memory_order_relaxed) < 2; i++)
        if (i % 1024 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec > 2)
                break;
        }
    for (size_t i = lo; i < hi; i++)
        racy_total += (long)i;
}

/* Not a check: a bug on purpose, which TSan must report. */
static int plant_race(void)
{
    ag_tape *t = ag_tape_new();
    if (!t)
        return 2;
    ag_tape_set_threads(t, 2); /* two chunks: the caller's and the worker's */
    ag_parallel_for(t, (size_t)1 << 16, planted_race, NULL);
    ag_tape_free(t);
    printf("planted race ran; %d chunks met\n", atomic_load(&arrived));
    return 0;
}

/* ------------------------------------------------------------ main */

static const struct {
    const char *name;
    bool (*fn)(void);
} checks[] = {
    {"gemm_split_over_threads", gemm_split_over_threads},
    {"elementwise_split_over_threads", elementwise_split_over_threads},
    {"parallel_for_covers_each_index_once", parallel_for_covers_each_index_once},
    {"pool_runs_many_jobs", pool_runs_many_jobs},
    {"pool_absurd_count_fails_cleanly", pool_absurd_count_fails_cleanly},
    {"mlp_train_steps_at_1_2_3_threads", mlp_train_steps_at_1_2_3_threads},
    {"two_tapes_share_one_model_for_inference", two_tapes_share_one_model_for_inference},
};
enum { N_CHECKS = sizeof checks / sizeof *checks };

static bool wanted(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--plant-race") == 0)
        return plant_race();
    for (int i = 1; i < argc; i++) {
        size_t c = 0;
        while (c < N_CHECKS && strcmp(argv[i], checks[c].name) != 0)
            c++;
        if (c == N_CHECKS) {
            fprintf(stderr, "tsan_driver: no check named '%s'\n", argv[i]);
            return 2;
        }
    }
    size_t passed = 0, failed = 0;
    for (size_t c = 0; c < N_CHECKS; c++) {
        if (!wanted(checks[c].name, argc, argv))
            continue;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool ok = checks[c].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("%s %s (%.0f ms)\n", ok ? "PASS" : "FAIL", checks[c].name, ms);
        fflush(stdout);
        if (ok)
            passed++;
        else
            failed++;
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}
