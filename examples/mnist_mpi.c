/* mnist_mpi: mnist_mlp's network trained data-parallel on MPI (nn_mpi.h):
 * 784-256-256-10, ReLU, softmax cross-entropy, He initialisation, Adam
 * (lr 1e-3, cosine-annealed to 0 over the epochs), global mini-batch 128
 * in 8 micro-shards, 10 epochs, f32. Every rank loads the data and walks
 * the same seeded batch order; each computes its shards' gradients and
 * the sum reaches every rank, so the models stay identical. Rank 0 prints
 * a line per epoch with the test accuracy and the parameters' CRC-32 (the
 * same on 1, 2, 4 or 8 ranks), saves the model, and every rank loads it
 * back (rank 0 reads, the others receive) and checks that it scores the
 * same.
 *
 * Without MNIST it trains 64-256-256-10 on the bundled 8x8 digits.
 *
 * Usage: mpirun -np N mnist_mpi [MNIST_DIR] [--epochs N] [--batch N] [--lr X]
 *            [--seed N] [--shards S] [--threads T] [--save PATH] [--digits]
 * (N must divide S; --help lists the flags with their defaults) */
#include "common.h"
#include "nn_mpi.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const char *mnist_dir, *save_path;
    bool digits;
    uint64_t epochs, batch, seed, shards, threads;
    double lr;
} options;

static options parse(int argc, char **argv)
{
    options o = {NULL, "mnist_mpi.nnm", false, 10, 128, 1, 8, 0, 1e-3};
    const flag_spec flags[] = {
        {"--epochs", FLAG_UINT, &o.epochs, 1, 1e6, false, "passes over the training set"},
        {"--batch", FLAG_UINT, &o.batch, 1, 60000, false, "global mini-batch size (all ranks)"},
        {"--lr", FLAG_REAL, &o.lr, 0, INFINITY, true, "Adam's initial learning rate"},
        {"--seed", FLAG_UINT, &o.seed, 0, INFINITY, false, "seed of the weights and the shuffles"},
        {"--shards", FLAG_UINT, &o.shards, 1, NN_MPI_SHARDS_MAX, false,
         "micro-shards per batch, a power of two the rank count divides"},
        {"--threads", FLAG_UINT, &o.threads, 0, 1024, false,
         "engine threads per rank (0: this machine's cores shared among its ranks)"},
        {"--save", FLAG_PATH, &o.save_path, 0, 0, false, "where rank 0 saves the trained model"},
        {"--digits", FLAG_BOOL, &o.digits, 0, 0, false, "the bundled digits, even if MNIST is there"},
    };
    const cli_spec cli = {"mnist_mpi", " [MNIST_DIR]",
                          "mnist_mlp's 784-256-256-10 MLP trained data-parallel on MPI: run it\n"
                          "with mpirun -np N (N divides --shards). The parameters are bitwise\n"
                          "the same for every such N. MNIST_DIR holds the four IDX files;\n"
                          "without it data/mnist and ../shared/data/mnist are tried, then the\n"
                          "bundled digits.",
                          flags, sizeof flags / sizeof flags[0], &o.mnist_dir, 1};
    parse_flags(argc, argv, &cli);
    if (o.mnist_dir && o.digits) {
        fprintf(stderr, "mnist_mpi: give MNIST_DIR or --digits, not both\n");
        exit(2);
    }
    return o;
}

static int rank; /* in MPI_COMM_WORLD: only rank 0 prints */

/* Every rank fails together (the errors are collective), so one prints. */
static int fail(const char *what, const nn_error *err)
{
    if (rank == 0)
        fprintf(stderr, "mnist_mpi: %s: %s\n", what, err->msg);
    return 1;
}

/* The engine's threads per rank: the given count, or this machine's
 * (the engine's default) divided among the ranks running on it. */
static size_t threads_per_rank(uint64_t given, ag_tape *t)
{
    if (given)
        return (size_t)given;
    MPI_Comm node;
    int here = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &here);
        MPI_Comm_free(&node);
    }
    size_t cores = ag_tape_threads(t);
    return cores > (size_t)here ? cores / (size_t)here : 1;
}

typedef struct {
    nn_mlp *net;
    nn_optim *opt;
    nn_mpi *dp;
    nn_batches *it;
    ag_tape *t;
    ag_tensor *bx, *by;
} trainer;

static ag_status epoch(trainer *tr, double *loss, nn_error *err)
{
    ag_tensor *bx, *by;
    double sum = 0, l;
    size_t n = 0;
    while (nn_batches_next(tr->it, &bx, &by)) {
        ag_status s = nn_mpi_train_step(tr->dp, tr->t, tr->opt, NN_COST_CROSS_ENTROPY, bx, by, &l,
                                        err);
        if (s != AG_OK)
            return s;
        sum += l;
        n++;
    }
    *loss = n ? sum / (double)n : 0;
    return AG_OK;
}

/* Rank 0 saves; every rank loads the file back and rank 0 checks that the
 * loaded model scores acc. */
static int save_and_reload(trainer *tr, const char *path, const nn_dataset *test, double acc)
{
    nn_error err = {0};
    nn_mlp *back = NULL;
    double acc2 = acc;
    if (nn_mpi_save(tr->dp, path, &err) || nn_mpi_load(MPI_COMM_WORLD, path, &back, &err))
        return fail("save/load", &err);
    ag_status s = rank == 0 ? nn_mlp_accuracy(back, tr->t, test->x, test->labels, &acc2, &err)
                            : AG_OK;
    if (nn_mpi_agree(MPI_COMM_WORLD, s, &err) != AG_OK)
        return nn_mlp_free(back), fail("testing the loaded model", &err);
    if (rank == 0)
        printf("saved to %s and reloaded on every rank: test accuracy %.2f%% (%s)\n", path,
               100 * acc2, acc2 == acc ? "identical" : "DIFFERENT");
    nn_mlp_free(back);
    return acc2 == acc ? 0 : 1;
}

static void print_setup(const options *o, const char *dir, const nn_dataset *train,
                        const nn_dataset *test, int size, size_t threads)
{
    if (rank != 0)
        return;
    printf("MLP %zu-256-256-10, ReLU, softmax cross-entropy, He init, Adam %g (cosine), batch %"
           PRIu64 " in %" PRIu64 " shards, f32\n"
           "on %d ranks x %zu threads; %s: %zu training and %zu test images\n",
           train->features, o->lr, o->batch, o->shards, size, threads,
           dir ? dir : "the bundled 8x8 digits", train->n, test->n);
}

/* Trains for o->epochs; rank 0 reports; *acc gets the last test accuracy. */
static int train_epochs(trainer *tr, const options *o, const nn_dataset *train,
                        const nn_dataset *test, double *acc)
{
    nn_error err = {0};
    nn_progress progress;
    nn_progress_init(&progress, rank == 0 ? stdout : NULL, (size_t)o->epochs);
    nn_lr_schedule cosine = {.kind = NN_LR_COSINE, .t_max = (size_t)o->epochs, .lr_min = 0};
    double total = 0;
    for (size_t e = 1; e <= o->epochs; e++) {
        double t0 = now_seconds(), loss;
        nn_optim_set_lr(tr->opt, nn_lr_at(&cosine, o->lr, e - 1));
        if (epoch(tr, &loss, &err) != AG_OK)
            return fail("training", &err);
        double seconds = now_seconds() - t0;
        total += seconds;
        ag_status s = rank == 0 ? nn_mlp_accuracy(tr->net, tr->t, test->x, test->labels, acc, &err)
                                : AG_OK;
        if (nn_mpi_agree(MPI_COMM_WORLD, s, &err) != AG_OK)
            return fail("testing", &err);
        nn_progress_epoch(&progress, e, train->n, seconds, loss, *acc);
    }
    nn_progress_end(&progress);
    if (rank == 0)
        printf("test accuracy %.2f%% after %" PRIu64 " epochs, %.1f s of training; parameters "
               "crc32 %08x\n", 100 * *acc, o->epochs, total,
               (unsigned)nn_crc32(0, nn_mlp_data(tr->net), 4 * nn_mlp_param_count(tr->net)));
    return 0;
}

static void free_trainer(trainer *tr)
{
    nn_mpi_free(tr->dp);
    nn_batches_free(tr->it);
    nn_optim_free(tr->opt);
    nn_mlp_free(tr->net);
    ag_tape_free(tr->t);
    ag_tensor_free(tr->bx);
    ag_tensor_free(tr->by);
}

/* The data, loaded by every rank (a rank that cannot fails them all). */
static ag_status load_data(const options *o, const char **dir, nn_dataset *train,
                           nn_dataset *test, nn_error *err)
{
    ag_status s;
    *dir = o->digits ? NULL : find_mnist(o->mnist_dir);
    if (o->mnist_dir && !*dir) {
        snprintf(err->msg, sizeof err->msg, "no MNIST IDX files in %s", o->mnist_dir);
        s = err->status = AG_ERR_IO;
    } else if (*dir) {
        s = load_mnist(*dir, AG_F32, 0, train, test, err);
    } else {
        s = load_digits(AG_F32, 297, o->seed, train, test, err);
    }
    return nn_mpi_agree(MPI_COMM_WORLD, s, err);
}

/* Model, optimizer, batches and the data-parallel trainer, on every rank. */
static ag_status set_up(trainer *tr, const options *o, const nn_dataset *train, nn_error *err)
{
    size_t sizes[] = {train->features, 256, 256, 10};
    nn_act acts[] = {NN_RELU, NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 3, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_HE, .seed = o->seed};
    nn_optim_config cfg = nn_adam(o->lr);
    ag_status s = AG_ERR_NOMEM;
    snprintf(err->msg, sizeof err->msg, "out of memory");
    tr->t = ag_tape_new();
    tr->bx = ag_zeros(AG_F32, AG_SHAPE((size_t)o->batch, train->features));
    tr->by = ag_zeros(AG_F32, AG_SHAPE((size_t)o->batch));
    if (tr->t && tr->bx && tr->by && !nn_mlp_new(&spec, &tr->net, err) &&
        !nn_mlp_optim_new(tr->net, &cfg, &tr->opt, err))
        s = nn_batches_new(train->x, train->labels, tr->bx, tr->by, true, o->seed, &tr->it, err);
    s = nn_mpi_agree(MPI_COMM_WORLD, s, err);
    if (s != AG_OK)
        return s;
    ag_tape_set_threads(tr->t, threads_per_rank(o->threads, tr->t));
    return nn_mpi_new(MPI_COMM_WORLD, tr->net, (size_t)o->shards, &tr->dp, err);
}

static int run(const options *o, int size)
{
    nn_error err = {0};
    nn_dataset train = {0}, test = {0};
    trainer tr = {0};
    const char *dir;
    double acc = 0;
    int rc;
    if (load_data(o, &dir, &train, &test, &err) != AG_OK) {
        rc = fail("loading data", &err);
    } else if (set_up(&tr, o, &train, &err) != AG_OK) {
        rc = fail("setting up", &err);
    } else {
        print_setup(o, dir, &train, &test, size, ag_tape_threads(tr.t));
        rc = train_epochs(&tr, o, &train, &test, &acc);
        if (rc == 0)
            rc = save_and_reload(&tr, o->save_path, &test, acc);
    }
    free_trainer(&tr);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    return rc;
}

int main(int argc, char **argv)
{
    options o = parse(argc, argv); /* before MPI: --help and bad flags need no mpirun */
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int rc = run(&o, size);
    MPI_Finalize();
    return rc;
}
