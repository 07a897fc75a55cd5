/* mpi_io PREFIX: model files under MPI. After a few data-parallel steps,
 * nn_mpi_save writes PREFIX.nnm (rank 0 only) and nn_mpi_load gives every
 * rank the parameters it trained, bit for bit, though only rank 0 is given
 * the path; the file is the one nn_mlp_load reads. A missing or corrupt
 * file, an unwritable path, and a rank whose parameters drifted all fail
 * on every rank with the failing rank's message, writing nothing. */
#include "mpitest.h"

#include <stdlib.h>
#include <string.h>

static const size_t sizes[] = {7, 12, 12, 4};

/* err on every rank: status want, message starting with start. */
static void expect_error(const char *what, ag_status got, const nn_error *err, ag_status want,
                         const char *start)
{
    MT_CHECK(got == want, "%s: status %s, want %s (%s)", what, ag_status_string(got),
             ag_status_string(want), err->msg);
    MT_CHECK(strncmp(err->msg, start, strlen(start)) == 0, "%s: message '%s', want '%s...'",
             what, err->msg, start);
    if (mt_rank == 0)
        printf("%-26s every rank: %s\n", what, err->msg);
}

static nn_mlp *trained_model(nn_mpi **dp)
{
    nn_mlp *net = mt_model(sizes, 3, AG_F32, 21);
    nn_optim_config cfg = nn_adam(1e-2);
    nn_optim *opt = NULL;
    nn_error err = {0};
    ag_tensor *x, *y;
    ag_tape *t = ag_tape_new();
    mt_data(AG_F32, 16, sizes[0], sizes[3], 0, 4, &x, &y);
    MT_CHECK(nn_mlp_optim_new(net, &cfg, &opt, &err) == AG_OK, "%s", err.msg);
    MT_CHECK(nn_mpi_new(MPI_COMM_WORLD, net, 4, dp, &err) == AG_OK, "%s", err.msg);
    for (int step = 0; *dp && step < 3; step++)
        MT_CHECK(nn_mpi_train_step(*dp, t, opt, NN_COST_CROSS_ENTROPY, x, y, NULL, &err) == AG_OK,
                 "%s", err.msg);
    nn_optim_free(opt);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return net;
}

static void save_and_load(nn_mpi *dp, nn_mlp *net, const char *path)
{
    nn_error err = {0};
    remove(path);
    MPI_Barrier(MPI_COMM_WORLD);
    MT_CHECK(nn_mpi_save(dp, path, &err) == AG_OK, "%s", err.msg);
    nn_mlp *back = NULL;
    /* only rank 0 reads: the others' path may name nothing */
    const char *given = mt_rank == 0 ? path : "/nonexistent/model.nnm";
    MT_CHECK(nn_mpi_load(MPI_COMM_WORLD, given, &back, &err) == AG_OK, "%s", err.msg);
    if (!back)
        return;
    const nn_spec *a = nn_mlp_spec(net), *b = nn_mlp_spec(back);
    MT_CHECK(b->n_layers == 3 && memcmp(a->sizes, b->sizes, 4 * sizeof *a->sizes) == 0 &&
             memcmp(a->acts, b->acts, 3 * sizeof *a->acts) == 0 && b->dtype == AG_F32,
             "the loaded model's shape differs");
    MT_CHECK(memcmp(nn_mlp_data(back), nn_mlp_data(net), mt_param_bytes(net)) == 0,
             "the loaded parameters differ from the trained ones");
    nn_mlp_free(back);
    if (mt_rank == 0) { /* the file is an ordinary model file */
        MT_CHECK(nn_mlp_load(path, &back, &err) == AG_OK, "%s", err.msg);
        MT_CHECK(back && memcmp(nn_mlp_data(back), nn_mlp_data(net), mt_param_bytes(net)) == 0,
                 "nn_mlp_load reads other parameters");
        nn_mlp_free(back);
        printf("saved %s and loaded it on %d ranks: the trained parameters, bit for bit\n", path,
               mt_size);
    }
}

static void bad_files(const char *prefix)
{
    nn_error err = {0};
    nn_mlp *back = NULL;
    ag_status s = nn_mpi_load(MPI_COMM_WORLD, "/nonexistent/model.nnm", &back, &err);
    expect_error("a missing file", s, &err, AG_ERR_IO, "rank 0: nn_mlp_load: ");
    MT_CHECK(back == NULL, "a model was made");

    char corrupt[512];
    snprintf(corrupt, sizeof corrupt, "%s-corrupt.nnm", prefix);
    if (mt_rank == 0) {
        FILE *f = fopen(corrupt, "wb");
        MT_CHECK(f && fputs("not a model file, but long enough to have a header........", f) >= 0 &&
                 fclose(f) == 0, "cannot write %s", corrupt);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    s = nn_mpi_load(MPI_COMM_WORLD, corrupt, &back, &err);
    expect_error("a corrupt file", s, &err, AG_ERR_FORMAT, "rank 0: nn_mlp_load: ");
    MT_CHECK(back == NULL, "a model was made");
    if (mt_rank == 0)
        remove(corrupt);
}

static void bad_saves(nn_mpi *dp, nn_mlp *net, const char *path)
{
    nn_error err = {0};
    ag_status s = nn_mpi_save(dp, "/nonexistent/dir/model.nnm", &err);
    expect_error("an unwritable path", s, &err, AG_ERR_IO, "rank 0: nn_mlp_save: ");
    if (mt_size == 1)
        return;
    float *p = nn_mlp_data(net);
    float kept = p[5];
    if (mt_rank == 1)
        p[5] += 1;
    remove(path);
    MPI_Barrier(MPI_COMM_WORLD);
    s = nn_mpi_save(dp, path, &err);
    expect_error("a rank's parameters drift", s, &err, AG_ERR_STATE,
                 "rank 1: nn_mpi_save: the parameters differ from rank 0's");
    p[5] = kept;
    FILE *f = mt_rank == 0 ? fopen(path, "rb") : NULL;
    MT_CHECK(f == NULL, "%s was written", path);
    if (f)
        fclose(f);
}

int main(int argc, char **argv)
{
    mt_init(&argc, &argv);
    const char *prefix = argc > 1 ? argv[1] : "mpi_io";
    char path[512];
    snprintf(path, sizeof path, "%s.nnm", prefix);
    nn_mpi *dp = NULL;
    nn_mlp *net = trained_model(&dp);
    if (dp) {
        save_and_load(dp, net, path);
        bad_files(prefix);
        bad_saves(dp, net, path);
    }
    if (mt_rank == 0)
        remove(path);
    nn_mpi_free(dp);
    nn_mlp_free(net);
    return mt_finish("mpi_io");
}
