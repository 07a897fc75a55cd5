/* mpi_identical: data-parallel training on any rank count (mpirun -np 1, 2
 * and 4) ends with, bit for bit, the parameters and losses of a one-process
 * computation written independently here: each shard's rows copied out,
 * its gradient by ag_backward alone, the S gradients summed by a recursive
 * pairwise sum, then nn_optim_step. So the three rank counts give the same
 * bits. Each case also trains a third copy with nn_mlp_train_step on the
 * whole batch: in f64 it must agree to rounding, which checks that the
 * shards' weights make the gradient of the global batch's mean cost.
 * Every rank checks its own model. */
#include "mpitest.h"

#include <stdlib.h>
#include <string.h>

typedef enum { OPT_ADAM, OPT_ADAMW_CLIP, OPT_SGD_NESTEROV } optim_kind;

typedef struct {
    const char *name;
    ag_dtype dt;
    size_t L, sizes[4];
    nn_cost cost;
    size_t targets;              /* real targets per row; 0: class indices */
    size_t rows, batch, shards, steps;
    optim_kind optim;
} case_spec;

static const case_spec cases[] = {
    /* 100 rows in batches of 32: a last batch of 4 rows, one per shard */
    {"f32-adam-ce", AG_F32, 3, {12, 16, 16, 5}, NN_COST_CROSS_ENTROPY, 0, 100, 32, 4, 7, OPT_ADAM},
    /* batches of 30 in 4 shards: 7, 8, 7, 8 rows */
    {"f64-sgd-mse", AG_F64, 2, {6, 10, 3}, NN_COST_MSE, 3, 50, 30, 4, 5, OPT_SGD_NESTEROV},
    /* 3 rows in 4 shards: shard 0 has none */
    {"f32-adamw-clip-3rows", AG_F32, 2, {5, 8, 3}, NN_COST_CROSS_ENTROPY, 0, 3, 3, 4, 4,
     OPT_ADAMW_CLIP},
    {"f64-adam-8shards", AG_F64, 3, {8, 16, 16, 4}, NN_COST_CROSS_ENTROPY, 0, 64, 16, 8, 5,
     OPT_ADAM},
    {"f32-adam-8shards", AG_F32, 3, {20, 32, 32, 10}, NN_COST_CROSS_ENTROPY, 0, 200, 40, 8, 6,
     OPT_ADAM},
};

static nn_optim *make_optim(nn_mlp *net, optim_kind kind)
{
    nn_optim_config cfg = nn_adam(1e-2);
    if (kind == OPT_ADAMW_CLIP) {
        cfg = nn_adamw(1e-2);
        cfg.clip_norm = 0.5;
    } else if (kind == OPT_SGD_NESTEROV) {
        cfg = nn_sgd(0.05);
        cfg.momentum = 0.9;
        cfg.nesterov = true;
    }
    nn_optim *opt = NULL;
    nn_error err = {0};
    MT_CHECK(nn_mlp_optim_new(net, &cfg, &opt, &err) == AG_OK, "%s", err.msg);
    return opt;
}

/* A new leaf holding rows [lo, hi) of x. */
static ag_tensor *copy_rows(const ag_tensor *x, size_t lo, size_t hi)
{
    size_t shape[AG_MAX_RANK], rank = ag_tensor_rank(x), row = 1;
    memcpy(shape, ag_tensor_shape(x), rank * sizeof *shape);
    for (size_t i = 1; i < rank; i++)
        row *= shape[i];
    shape[0] = hi - lo;
    size_t es = ag_dtype_size(ag_tensor_dtype(x));
    return ag_from_data(ag_tensor_dtype(x), shape, rank, (const char *)ag_data(x) + lo * row * es);
}

/* Sums buffers lo..hi-1 (P elements each) into buffer lo: left half,
 * right half, then their sum. */
static void tree_sum(ag_dtype dt, unsigned char *g, size_t P, size_t lo, size_t hi)
{
    if (hi - lo < 2)
        return;
    size_t mid = lo + (hi - lo) / 2;
    tree_sum(dt, g, P, lo, mid);
    tree_sum(dt, g, P, mid, hi);
    size_t es = ag_dtype_size(dt);
    for (size_t i = 0; i < P; i++)
        if (dt == AG_F32)
            ((float *)(g + lo * P * es))[i] += ((const float *)(g + mid * P * es))[i];
        else
            ((double *)(g + lo * P * es))[i] += ((const double *)(g + mid * P * es))[i];
}

/* One step of the reference computation on the whole batch x, y. */
static double reference_step(nn_mlp *net, nn_optim *opt, ag_tape *t, nn_cost cost,
                             const ag_tensor *x, const ag_tensor *y, size_t S)
{
    size_t B = ag_tensor_shape(x)[0], P = nn_mlp_param_count(net);
    size_t bytes = mt_param_bytes(net);
    unsigned char *grads = malloc(S * bytes);
    double loss = 0;
    for (size_t k = 0; grads && k < S; k++) {
        size_t lo = k * B / S, hi = (k + 1) * B / S;
        nn_mlp_zero_grad(net);
        if (hi > lo) {
            ag_tensor *xs = copy_rows(x, lo, hi), *ys = copy_rows(y, lo, hi);
            ag_tensor *c = ag_scale(t, nn_loss(t, cost, nn_mlp_forward(net, t, xs, NULL, 0), ys),
                                    (double)(hi - lo) / (double)B);
            MT_CHECK(c && ag_backward(t, c) == AG_OK, "%s", ag_tape_error(t));
            loss += c ? ag_item(c) : 0;
            ag_tape_reset(t);
            ag_tensor_free(xs);
            ag_tensor_free(ys);
        }
        memcpy(grads + k * bytes, nn_mlp_grad(net), bytes);
    }
    MT_CHECK(grads != NULL, "out of memory");
    if (grads) {
        tree_sum(nn_mlp_spec(net)->dtype, grads, P, 0, S);
        memcpy(nn_mlp_grad(net), grads, bytes);
    }
    free(grads);
    nn_error err = {0};
    MT_CHECK(nn_optim_step(opt, &err) == AG_OK, "%s", err.msg);
    return loss;
}

typedef struct {
    nn_mlp *net;
    nn_optim *opt;
} model;

static model make_model(const case_spec *c)
{
    model m = {mt_model(c->sizes, c->L, c->dt, 7), NULL};
    m.opt = make_optim(m.net, c->optim);
    return m;
}

static void free_model(model *m)
{
    nn_optim_free(m->opt);
    nn_mlp_free(m->net);
}

/* After the steps: the data-parallel model is the reference bit for bit,
 * and in f64 whole-batch training to rounding. */
static void compare(const case_spec *c, const model *dp_m, const model *ref, const model *whole)
{
    size_t P = nn_mlp_param_count(dp_m->net);
    MT_CHECK(memcmp(nn_mlp_data(dp_m->net), nn_mlp_data(ref->net), mt_param_bytes(ref->net)) == 0,
             "%s: the parameters differ from the one-process tree's", c->name);
    MT_CHECK(nn_optim_steps(dp_m->opt) == c->steps, "%s: %zu steps", c->name,
             nn_optim_steps(dp_m->opt));
    if (c->dt == AG_F64)
        MT_CHECK(ag_allclose(AG_F64, P, nn_mlp_data(dp_m->net), nn_mlp_data(whole->net), 1e-9,
                             1e-12, NULL), "%s: the parameters differ from whole-batch training",
                 c->name);
    if (mt_rank == 0)
        printf("%-22s %d ranks, %zu shards, %zu steps: parameters crc32 %08x\n", c->name, mt_size,
               c->shards, c->steps,
               (unsigned)nn_crc32(0, nn_mlp_data(dp_m->net), mt_param_bytes(dp_m->net)));
}

/* Trains the three copies on the same batches and compares them. */
static void run_case(const case_spec *c)
{
    ag_tensor *x, *y, *px, *py;
    mt_data(c->dt, c->rows, c->sizes[0], c->sizes[c->L], c->targets, 11, &x, &y);
    ag_tensor *bx = ag_zeros(c->dt, AG_SHAPE(c->batch, c->sizes[0]));
    ag_tensor *by = c->targets ? ag_zeros(c->dt, AG_SHAPE(c->batch, c->targets))
                               : ag_zeros(c->dt, AG_SHAPE(c->batch));
    model dp_m = make_model(c), ref = make_model(c), whole = make_model(c);
    nn_error err = {0};
    nn_mpi *dp = NULL;
    nn_batches *it = NULL;
    ag_tape *t = ag_tape_new(), *tr = ag_tape_new();
    MT_CHECK(nn_mpi_new(MPI_COMM_WORLD, dp_m.net, c->shards, &dp, &err) == AG_OK, "%s", err.msg);
    MT_CHECK(nn_batches_new(x, y, bx, by, true, 3, &it, &err) == AG_OK, "%s", err.msg);
    for (size_t step = 0; dp && it && step < c->steps; step++) {
        if (!nn_batches_next(it, &px, &py)) /* the epoch ended: the next one's first batch */
            nn_batches_next(it, &px, &py);
        double loss = 0, whole_loss = 0;
        ag_status s = nn_mpi_train_step(dp, t, dp_m.opt, c->cost, px, py, &loss, &err);
        MT_CHECK(s == AG_OK, "%s step %zu: %s", c->name, step, err.msg);
        double ref_loss = reference_step(ref.net, ref.opt, tr, c->cost, px, py, c->shards);
        MT_CHECK(loss == ref_loss, "%s step %zu: loss %.17g, reference %.17g", c->name, step,
                 loss, ref_loss);
        s = nn_mlp_train_step(whole.net, tr, whole.opt, c->cost, px, py, &whole_loss, &err);
        MT_CHECK(s == AG_OK, "%s", err.msg);
        if (c->dt == AG_F64)
            MT_CHECK(ag_allclose(AG_F64, 1, &loss, &whole_loss, 1e-12, 0, NULL),
                     "%s step %zu: loss %.17g, whole batch %.17g", c->name, step, loss, whole_loss);
    }
    compare(c, &dp_m, &ref, &whole);
    nn_mpi_free(dp);
    nn_batches_free(it);
    ag_tape_free(t);
    ag_tape_free(tr);
    free_model(&dp_m);
    free_model(&ref);
    free_model(&whole);
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tensor_free(bx);
    ag_tensor_free(by);
}

int main(int argc, char **argv)
{
    mt_init(&argc, &argv);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i].shards % (size_t)mt_size == 0)
            run_case(&cases[i]);
        else if (mt_rank == 0)
            printf("%-22s skipped: %d ranks do not divide %zu shards\n", cases[i].name, mt_size,
                   cases[i].shards);
    return mt_finish("mpi_identical");
}
