/* bench_mpi: W2 (784-256-256-10 ReLU, softmax cross-entropy, SGD lr 0.01,
 * global batch 128, synthetic uniform data as bench's) trained
 * data-parallel with nn_mpi against one process on the same cores. Run as
 * mpirun -np N bench_mpi [--threads T] [--shards S] [--steps K]; prints
 *   RESULT ours W2-f32-1proc-<NT>t        one process, N·T threads, nn_mlp_train_step
 *   RESULT ours W2-f32-mpi-1x<NT>t-S<S>   nn_mpi alone on rank 0, N·T threads
 *   RESULT ours W2-f32-mpi-<N>x<T>t-S<S>  nn_mpi on N ranks x T threads
 * in examples/s (the first two run on rank 0 while the others sleep), the
 * ratio of the last to the first, and the bytes each rank sent per step to
 * reduce the gradients against a ring's bound, P·4·2(N-1)/N. */
#define _POSIX_C_SOURCE 200809L
#include "flags.h"
#include "nn_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ROWS = 8192, WARM_STEPS = 10 };

static int rank, size;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_mpi: rank %d: %s: %s\n", rank, what, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* A barrier the other ranks wait at without spinning on the cores rank 0
 * is measuring on. */
static void idle_until_rank0(void)
{
    MPI_Request req;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    while (!done) {
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (!done)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

typedef struct {
    ag_tensor *x, *y, *bx, *by;
    nn_mlp *net;
    nn_optim *opt;
    nn_batches *it;
    ag_tape *t;
} workload;

static workload make_workload(size_t threads)
{
    static const size_t sizes[] = {784, 256, 256, 10};
    static const nn_act acts[] = {NN_RELU, NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 3, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_NORMAL_SCALED, .seed = 1};
    nn_optim_config cfg = nn_sgd(0.01);
    nn_error err = {0};
    workload w = {0};
    ag_rng rng;
    ag_rng_seed(&rng, 2024);
    w.x = ag_rand_uniform(AG_F32, AG_SHAPE(ROWS, 784), 0, 1, &rng);
    w.y = ag_zeros(AG_F32, AG_SHAPE(ROWS));
    w.bx = ag_zeros(AG_F32, AG_SHAPE(128, 784));
    w.by = ag_zeros(AG_F32, AG_SHAPE(128));
    w.t = ag_tape_new();
    if (!w.x || !w.y || !w.bx || !w.by || !w.t)
        die("W2", "out of memory");
    ag_tape_set_threads(w.t, threads);
    for (size_t i = 0; i < ROWS; i++)
        ((float *)ag_data(w.y))[i] = (float)ag_rng_below(&rng, 10);
    if (nn_mlp_new(&spec, &w.net, &err) || nn_mlp_optim_new(w.net, &cfg, &w.opt, &err) ||
        nn_batches_new(w.x, w.y, w.bx, w.by, true, 7, &w.it, &err))
        die("W2", err.msg);
    return w;
}

static void free_workload(workload *w)
{
    nn_batches_free(w->it);
    nn_optim_free(w->opt);
    nn_mlp_free(w->net);
    ag_tape_free(w->t);
    ag_tensor_free(w->x);
    ag_tensor_free(w->y);
    ag_tensor_free(w->bx);
    ag_tensor_free(w->by);
}

/* One training step: data-parallel when dp is set, else the plain one. */
static void step(workload *w, nn_mpi *dp)
{
    ag_tensor *px, *py;
    nn_error err = {0};
    if (!nn_batches_next(w->it, &px, &py))
        nn_batches_next(w->it, &px, &py);
    ag_status s = dp ? nn_mpi_train_step(dp, w->t, w->opt, NN_COST_CROSS_ENTROPY, px, py, NULL, &err)
                     : nn_mlp_train_step(w->net, w->t, w->opt, NN_COST_CROSS_ENTROPY, px, py, NULL,
                                         &err);
    if (s != AG_OK)
        die("step", err.msg);
}

/* Examples/s of `steps` steps after a warm-up, on comm (MPI_COMM_NULL:
 * the plain step). *bytes: what this rank sent per step. */
static double measure(MPI_Comm comm, size_t threads, size_t shards, size_t steps, uint64_t *bytes)
{
    workload w = make_workload(threads);
    nn_mpi *dp = NULL;
    nn_error err = {0};
    if (comm != MPI_COMM_NULL && nn_mpi_new(comm, w.net, shards, &dp, &err) != AG_OK)
        die("nn_mpi_new", err.msg);
    for (size_t i = 0; i < WARM_STEPS; i++)
        step(&w, dp);
    if (comm != MPI_COMM_NULL)
        MPI_Barrier(comm);
    double t0 = now();
    for (size_t i = 0; i < steps; i++)
        step(&w, dp);
    double seconds = now() - t0;
    if (bytes)
        *bytes = nn_mpi_bytes_sent(dp);
    nn_mpi_free(dp);
    free_workload(&w);
    return (double)(steps * 128) / seconds;
}

static void result(const char *name, double value, const char *unit)
{
    printf("RESULT ours %s %.6g %s\n", name, value, unit);
    fflush(stdout);
}

/* Rank 0's last lines: the N-rank rate, its ratio to one process (one),
 * and the bytes sent per step against a ring's bound. */
static void report_parallel(double many, double one, size_t threads, size_t S, uint64_t bytes)
{
    char name[96];
    snprintf(name, sizeof name, "W2-f32-mpi-%dx%zut-S%zu", size, threads, S);
    result(name, many, "ex/s");
    printf("ratio %d ranks x %zu threads / 1 process x %zu threads: %.3f\n", size, threads,
           (size_t)size * threads, many / one);
    double P = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10;
    printf("bytes sent per step by rank 0: %llu; ring bound P x 4 x 2(N-1)/N = %.0f (P = %.0f)\n",
           (unsigned long long)bytes, P * 4 * 2 * (size - 1) / size, P);
}

int main(int argc, char **argv)
{
    uint64_t threads = 1, shards = 0, steps = 200;
    const flag_spec flags[] = {
        {"--threads", FLAG_UINT, &threads, 1, 1024, false, "engine threads per rank"},
        {"--shards", FLAG_UINT, &shards, 0, NN_MPI_SHARDS_MAX, false,
         "micro-shards per batch (0: as many as ranks)"},
        {"--steps", FLAG_UINT, &steps, 1, 1e6, false, "timed steps per configuration"},
    };
    const cli_spec cli = {"bench_mpi", NULL,
                          "W2 data-parallel on MPI against one process on the same cores;\n"
                          "run it with mpirun -np N.",
                          flags, sizeof flags / sizeof flags[0], NULL, 0};
    parse_flags(argc, argv, &cli);
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t S = shards ? (size_t)shards : (size_t)size, all = (size_t)size * (size_t)threads;
    char name[96];
    double one = 0;
    if (rank == 0) { /* the baselines, on every core the ranks have */
        one = measure(MPI_COMM_NULL, all, S, (size_t)steps, NULL);
        snprintf(name, sizeof name, "W2-f32-1proc-%zut", all);
        result(name, one, "ex/s");
        snprintf(name, sizeof name, "W2-f32-mpi-1x%zut-S%zu", all, S);
        result(name, measure(MPI_COMM_SELF, all, S, (size_t)steps, NULL), "ex/s");
    }
    idle_until_rank0();
    uint64_t bytes = 0;
    double many = measure(MPI_COMM_WORLD, (size_t)threads, S, (size_t)steps, &bytes);
    if (rank == 0)
        report_parallel(many, one, (size_t)threads, S, bytes);
    MPI_Finalize();
    return 0;
}
