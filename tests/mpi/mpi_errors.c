/* mpi_errors: a failure on one rank (rank 1, or rank 0 when it runs
 * alone) reaches every rank as the same error carrying that rank's
 * message, nothing is half-applied, and nobody hangs: the next collective
 * call works. Cases: a missing data file (nn_mpi_agree), a NaN input in
 * checked mode and without it, a NULL batch, another model's optimizer,
 * batches of different sizes, allocation failures (in nn_mpi_new and in a
 * step), bad or differing shard counts, differing models. */
#include "mpitest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------ a failing allocator */

static bool refuse_allocations; /* on this rank, from now on */

static void *test_allocator(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return refuse_allocations ? NULL : realloc(ptr, nsize);
}

/* ------------------------------------------------ helpers */

static int bad_rank; /* the rank that fails: 1, or 0 when alone */

/* err on every rank: status want, message beginning "rank R: " + start. */
static void expect_error(const char *what, ag_status got, const nn_error *err, ag_status want,
                         const char *start)
{
    char prefix[NN_ERR_MAX];
    snprintf(prefix, sizeof prefix, "rank %d: %s", bad_rank, start);
    MT_CHECK(got == want && err->status == want, "%s: status %s, want %s (%s)", what,
             ag_status_string(got), ag_status_string(want), err->msg);
    MT_CHECK(strncmp(err->msg, prefix, strlen(prefix)) == 0, "%s: message '%s', want '%s...'",
             what, err->msg, prefix);
    if (mt_rank == 0)
        printf("%-24s every rank: %s\n", what, err->msg);
}

static const size_t sizes[] = {6, 8, 3};

typedef struct {
    nn_mlp *net;
    nn_optim *opt;
    nn_mpi *dp;
    ag_tape *t;
    ag_tensor *x, *y;
    unsigned char *before; /* the parameters before the step under test */
} trainer;

/* A model on 4 shards and a global batch of 8 rows (shard k: rows 2k, 2k+1). */
static trainer make_trainer(void)
{
    trainer tr = {mt_model(sizes, 2, AG_F32, 5), NULL, NULL, ag_tape_new(), NULL, NULL, NULL};
    nn_optim_config cfg = nn_adam(1e-2);
    nn_error err = {0};
    MT_CHECK(nn_mlp_optim_new(tr.net, &cfg, &tr.opt, &err) == AG_OK, "%s", err.msg);
    MT_CHECK(nn_mpi_new(MPI_COMM_WORLD, tr.net, 4, &tr.dp, &err) == AG_OK, "%s", err.msg);
    mt_data(AG_F32, 8, sizes[0], sizes[2], 0, 9, &tr.x, &tr.y);
    tr.before = malloc(mt_param_bytes(tr.net));
    if (!tr.before || !tr.t)
        MPI_Abort(MPI_COMM_WORLD, 1);
    memcpy(tr.before, nn_mlp_data(tr.net), mt_param_bytes(tr.net));
    return tr;
}

static void free_trainer(trainer *tr)
{
    nn_mpi_free(tr->dp);
    nn_optim_free(tr->opt);
    nn_mlp_free(tr->net);
    ag_tape_free(tr->t);
    ag_tensor_free(tr->x);
    ag_tensor_free(tr->y);
    free(tr->before);
}

/* Nothing of a refused step stays: parameters and step count as before. */
static void expect_unchanged(const char *what, const trainer *tr)
{
    MT_CHECK(memcmp(nn_mlp_data(tr->net), tr->before, mt_param_bytes(tr->net)) == 0,
             "%s: the parameters changed", what);
    MT_CHECK(nn_optim_steps(tr->opt) == 0, "%s: %zu steps counted", what,
             nn_optim_steps(tr->opt));
}

/* After a failure, every rank can still take a step together. */
static void expect_recovery(const char *what, trainer *tr)
{
    nn_error err = {0};
    ag_status s = nn_mpi_train_step(tr->dp, tr->t, tr->opt, NN_COST_CROSS_ENTROPY, tr->x, tr->y,
                                    NULL, &err);
    MT_CHECK(s == AG_OK && nn_optim_steps(tr->opt) == 1, "%s, then a clean step: %s", what,
             err.msg);
}

/* ------------------------------------------------ the cases */

static void missing_file(void)
{
    nn_dataset d = {0};
    nn_error err = {0};
    const char *path = mt_rank == bad_rank ? "/nonexistent/iris.csv" : PROJECT_DATA_DIR "/iris.csv";
    ag_status s = nn_csv_load(path, AG_F32, &d, &err);
    s = nn_mpi_agree(MPI_COMM_WORLD, s, &err);
    expect_error("a missing file", s, &err, AG_ERR_IO, "nn_csv_load: ");
    MT_CHECK(strstr(err.msg, "/nonexistent/iris.csv") != NULL, "the path is not named: %s",
             err.msg);
    nn_dataset_free(&d);
    MT_CHECK(nn_mpi_agree(MPI_COMM_WORLD, AG_OK, &err) == AG_OK && err.msg[0] == '\0',
             "all well: %s", err.msg);
}

/* Rank bad_rank's copy of the batch holds a NaN in its first shard. */
static void nan_input(bool checked)
{
    const char *what = checked ? "a NaN input, checked" : "a NaN input, unchecked";
    trainer tr = make_trainer();
    ag_tape_set_checked(tr.t, checked);
    size_t row = 2 * (size_t)mt_rank * (4 / (size_t)mt_size); /* the rank's first shard */
    float good = ((float *)ag_data(tr.x))[row * sizes[0]];
    if (mt_rank == bad_rank)
        ((float *)ag_data(tr.x))[row * sizes[0]] = NAN;
    nn_error err = {0};
    double loss = -1;
    ag_status s = nn_mpi_train_step(tr.dp, tr.t, tr.opt, NN_COST_CROSS_ENTROPY, tr.x, tr.y,
                                    &loss, &err);
    if (checked)
        expect_error(what, s, &err, AG_ERR_NUMERIC, "nn_mpi_train_step: shard ");
    else
        expect_error(what, s, &err, AG_ERR_NUMERIC, "nn_mpi_train_step: gradient of W1 has nan");
    expect_unchanged(what, &tr);
    ((float *)ag_data(tr.x))[row * sizes[0]] = good;
    expect_recovery(what, &tr);
    free_trainer(&tr);
}

static void null_batch(void)
{
    trainer tr = make_trainer();
    nn_error err = {0};
    ag_status s = nn_mpi_train_step(tr.dp, tr.t, tr.opt, NN_COST_CROSS_ENTROPY,
                                    mt_rank == bad_rank ? NULL : tr.x, tr.y, NULL, &err);
    expect_error("a NULL batch", s, &err, AG_ERR_NULL, "nn_mpi_train_step: x ");
    expect_unchanged("a NULL batch", &tr);
    expect_recovery("a NULL batch", &tr);
    free_trainer(&tr);
}

/* Rank bad_rank steps with an optimizer of another model. */
static void foreign_optimizer(void)
{
    trainer tr = make_trainer();
    nn_mlp *other = mt_model(sizes, 2, AG_F32, 6);
    nn_optim_config cfg = nn_adam(1e-2);
    nn_optim *opt = NULL;
    nn_error err = {0};
    MT_CHECK(nn_mlp_optim_new(other, &cfg, &opt, &err) == AG_OK, "%s", err.msg);
    ag_status s = nn_mpi_train_step(tr.dp, tr.t, mt_rank == bad_rank ? opt : tr.opt,
                                    NN_COST_CROSS_ENTROPY, tr.x, tr.y, NULL, &err);
    expect_error("another model's optimizer", s, &err, AG_ERR_VALUE,
                 "nn_mpi_train_step: opt does not update the trainer's model");
    expect_unchanged("another model's optimizer", &tr);
    MT_CHECK(nn_optim_steps(opt) == 0, "the other optimizer stepped");
    expect_recovery("another model's optimizer", &tr);
    nn_optim_free(opt);
    nn_mlp_free(other);
    free_trainer(&tr);
}

/* Rank bad_rank passes 6 of the 8 rows: every rank refuses (with one
 * rank there is nobody to differ from, so it trains on 6 rows). */
static void batch_rows_differ(void)
{
    trainer tr = make_trainer();
    nn_error err = {0};
    ag_tensor *six = ag_leaf_view(tr.x, 0, AG_SHAPE(6, sizes[0]));
    ag_tensor *six_y = ag_leaf_view(tr.y, 0, AG_SHAPE(6));
    bool short_batch = mt_rank == bad_rank;
    ag_status s = nn_mpi_train_step(tr.dp, tr.t, tr.opt, NN_COST_CROSS_ENTROPY,
                                    short_batch ? six : tr.x, short_batch ? six_y : tr.y, NULL,
                                    &err);
    if (mt_size > 1) {
        MT_CHECK(s == AG_ERR_SHAPE && strstr(err.msg, "batches have 6 to 8 rows"), "got %s: %s",
                 ag_status_string(s), err.msg);
        expect_unchanged("batches of 6 and 8 rows", &tr);
        expect_recovery("batches of 6 and 8 rows", &tr);
    } else {
        MT_CHECK(s == AG_OK, "%s", err.msg);
    }
    ag_tensor_free(six);
    ag_tensor_free(six_y);
    free_trainer(&tr);
}

/* No memory on rank bad_rank: for nn_mpi_new's buffers, then for a fresh
 * tape's first step. */
static void out_of_memory(void)
{
    nn_mlp *net = mt_model(sizes, 2, AG_F32, 5);
    nn_mpi *dp = NULL;
    nn_error err = {0};
    refuse_allocations = mt_rank == bad_rank;
    ag_status s = nn_mpi_new(MPI_COMM_WORLD, net, 4, &dp, &err);
    refuse_allocations = false;
    expect_error("no memory for nn_mpi_new", s, &err, AG_ERR_NOMEM, "nn_mpi_new: out of memory");
    MT_CHECK(dp == NULL, "a trainer was made");
    nn_mlp_free(net);

    trainer tr = make_trainer();
    ag_tape *fresh = ag_tape_new();
    refuse_allocations = mt_rank == bad_rank;
    s = nn_mpi_train_step(tr.dp, fresh, tr.opt, NN_COST_CROSS_ENTROPY, tr.x, tr.y, NULL, &err);
    refuse_allocations = false;
    expect_error("no memory in a step", s, &err, AG_ERR_NOMEM, "nn_mpi_train_step: ");
    MT_CHECK(strstr(err.msg, "out of memory") != NULL, "%s", err.msg);
    expect_unchanged("no memory in a step", &tr);
    expect_recovery("no memory in a step", &tr);
    ag_tape_free(fresh);
    free_trainer(&tr);
}

static void bad_shards(void)
{
    nn_mlp *net = mt_model(sizes, 2, AG_F32, 5);
    nn_mpi *dp = NULL;
    nn_error err = {0};
    ag_status s = nn_mpi_new(MPI_COMM_WORLD, net, 3, &dp, &err);
    MT_CHECK(s == AG_ERR_VALUE && strstr(err.msg, "shards 3 must be a power of two"), "%s",
             err.msg);
    if (mt_size > 1) {
        s = nn_mpi_new(MPI_COMM_WORLD, net, (size_t)mt_size / 2, &dp, &err);
        MT_CHECK(s == AG_ERR_VALUE && strstr(err.msg, "ranks do not divide"), "%s", err.msg);
        s = nn_mpi_new(MPI_COMM_WORLD, net, mt_rank == bad_rank ? 8 : 4, &dp, &err);
        MT_CHECK(s == AG_ERR_VALUE && strstr(err.msg, "different shards (4 to 8)"), "%s", err.msg);
        if (mt_rank == 0)
            printf("%-24s every rank: %s\n", "shards that differ", err.msg);
    }
    MT_CHECK(nn_mpi_new(MPI_COMM_WORLD, net, 4, NULL, &err) == AG_ERR_NULL, "%s", err.msg);
    MT_CHECK(dp == NULL, "a trainer was made");
    nn_mlp_free(net);
}

static void models_differ(void)
{
    if (mt_size == 1)
        return;
    const size_t wider[] = {6, 9, 3};
    nn_mlp *net = mt_model(mt_rank == bad_rank ? wider : sizes, 2, AG_F32, 5);
    nn_mpi *dp = NULL;
    nn_error err = {0};
    ag_status s = nn_mpi_new(MPI_COMM_WORLD, net, 4, &dp, &err);
    MT_CHECK(s == AG_ERR_VALUE && strstr(err.msg, "models differ"), "%s", err.msg);
    MT_CHECK(dp == NULL, "a trainer was made");
    nn_mlp_free(net);
}

int main(int argc, char **argv)
{
    ag_set_allocator(test_allocator, NULL); /* before anything is allocated */
    mt_init(&argc, &argv);
    bad_rank = mt_size > 1 ? 1 : 0;
    missing_file();
    nan_input(true);
    nan_input(false);
    null_batch();
    foreign_optimizer();
    batch_rows_differ();
    out_of_memory();
    bad_shards();
    models_differ();
    return mt_finish("mpi_errors");
}
