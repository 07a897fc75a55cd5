/* fuzz_checkpoint: nn_checkpoint_load of an arbitrary file into a fixed
 * run (a 3-4-2 tanh/identity f32 MLP, Adam, shuffled batches of 4 over 10
 * rows). A file it refuses must change nothing (a checkpoint of the run
 * saved before and after is the same bytes), leave no memory behind and
 * say why; a file it accepts must give a run that trains, and saving it
 * again must write the same bytes. The same load with its one allocation
 * refused must fail with AG_ERR_NOMEM and change nothing.
 *
 * Built with -DCHECKPOINT_SEEDS instead, it is the program that writes the
 * seed corpus: checkpoints of this run at a few points of its training
 * (checkpoint_seeds DIR). */
#define _POSIX_C_SOURCE 200809L
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef CHECKPOINT_SEEDS
#include "fuzz_common.h"
#endif

enum { ROWS = 10, BATCH = 4 };

typedef struct {
    nn_mlp *net;
    nn_optim *opt;
    nn_batches *it;
    ag_tape *t;
    ag_tensor *x, *y, *bx, *by;
} run;

static bool make_run(run *r)
{
    size_t sizes[] = {3, 4, 2};
    nn_act acts[] = {NN_TANH, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_XAVIER, .seed = 1};
    nn_optim_config cfg = nn_adam(0.01);
    *r = (run){.t = ag_tape_new(), .x = ag_full(AG_F32, (size_t[]){ROWS, 3}, 2, 0.25),
               .y = ag_zeros(AG_F32, (size_t[]){ROWS}, 1),
               .bx = ag_zeros(AG_F32, (size_t[]){BATCH, 3}, 2),
               .by = ag_zeros(AG_F32, (size_t[]){BATCH}, 1)};
    if (!r->t || !r->x || !r->y || !r->bx || !r->by)
        return false;
    for (size_t i = 0; i < ROWS; i++) {
        ((float *)ag_data(r->x))[3 * i] = (float)i / ROWS;
        ((float *)ag_data(r->y))[i] = (float)(i % 2);
    }
    return nn_mlp_new(&spec, &r->net, NULL) == AG_OK &&
           nn_mlp_optim_new(r->net, &cfg, &r->opt, NULL) == AG_OK &&
           nn_batches_new(r->x, r->y, r->bx, r->by, true, 1, &r->it, NULL) == AG_OK;
}

static void free_run(run *r)
{
    nn_batches_free(r->it);
    nn_optim_free(r->opt);
    nn_mlp_free(r->net);
    ag_tape_free(r->t);
    ag_tensor_free(r->x);
    ag_tensor_free(r->y);
    ag_tensor_free(r->bx);
    ag_tensor_free(r->by);
}

/* Up to k training steps; false when a step fails. */
static bool train(run *r, size_t k)
{
    ag_tensor *bx, *by;
    for (size_t i = 0; i < k; i++)
        if (nn_batches_next(r->it, &bx, &by) &&
            nn_mlp_train_step(r->net, r->t, r->opt, NN_COST_CROSS_ENTROPY, bx, by, NULL, NULL))
            return false;
    return true;
}

#ifdef CHECKPOINT_SEEDS
int main(int argc, char **argv)
{
    if (argc != 2)
        return fprintf(stderr, "usage: checkpoint_seeds DIR\n"), 2;
    run r;
    if (!make_run(&r))
        return fprintf(stderr, "checkpoint_seeds: cannot make the run\n"), 1;
    const size_t steps[] = {0, 1, 3, 8};
    for (size_t i = 0, done = 0; i < sizeof steps / sizeof *steps; i++) {
        char path[4096];
        nn_error err;
        snprintf(path, sizeof path, "%s/seed-%zu.nnc", argv[1], i + 1);
        if (!train(&r, steps[i] - done) ||
            nn_checkpoint_save(path, r.net, r.opt, r.it, steps[i] / 3, &err) != AG_OK)
            return fprintf(stderr, "checkpoint_seeds: %s: %s\n", path, err.msg), 1;
        done = steps[i];
    }
    free_run(&r);
    return 0;
}
#else

FZ_TARGET(8u << 20)

/* The bytes of a checkpoint of r (malloc'd), to compare r before and after. */
static unsigned char *snapshot(const run *r, size_t *n)
{
    fz_temp out;
    FZ_CHECK(fz_temp_name(&out));
    FZ_CHECK(nn_checkpoint_save(out.path, r->net, r->opt, r->it, 0, NULL) == AG_OK);
    FILE *f = fopen(out.path, "rb");
    FZ_CHECK(f != NULL);
    unsigned char *b = malloc(1 << 16);
    FZ_CHECK(b != NULL);
    *n = fread(b, 1, 1 << 16, f);
    fclose(f);
    fz_temp_remove(&out);
    return b;
}

static void check_unchanged(const run *r, const unsigned char *before, size_t n)
{
    size_t m;
    unsigned char *after = snapshot(r, &m);
    FZ_CHECK(m == n && memcmp(after, before, n) == 0);
    free(after);
}

/* An accepted file: saved again (with its epoch) it is the same bytes. */
static void check_round_trip(const run *r, const uint8_t *data, size_t size, size_t epoch)
{
    fz_temp out;
    FZ_CHECK(fz_temp_name(&out));
    FZ_CHECK(nn_checkpoint_save(out.path, r->net, r->opt, r->it, epoch, NULL) == AG_OK);
    FILE *f = fopen(out.path, "rb");
    FZ_CHECK(f != NULL);
    unsigned char *b = malloc(size + 1);
    FZ_CHECK(b != NULL);
    size_t got = fread(b, 1, size + 1, f);
    fclose(f);
    fz_temp_remove(&out);
    FZ_CHECK(got == size && memcmp(b, data, size) == 0);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_mem_begin(0);
    run r;
    FZ_CHECK(make_run(&r));
    fz_temp in;
    if (!fz_temp_write(&in, data, size)) {
        free_run(&r);
        fz_mem_end();
        return 0;
    }
    size_t n;
    unsigned char *before = snapshot(&r, &n);
    fz_mem.fail_at = fz_mem.count + 1; /* the load's one allocation refused */
    nn_error err;
    ag_status s = nn_checkpoint_load(in.path, r.net, r.opt, r.it, NULL, &err);
    fz_mem.fail_at = 0;
    FZ_CHECK(s == err.status && s != AG_OK && err.msg[0] != '\0');
    check_unchanged(&r, before, n);
    size_t epoch = 0;
    s = nn_checkpoint_load(in.path, r.net, r.opt, r.it, &epoch, &err);
    fz_temp_remove(&in);
    FZ_CHECK(s == err.status);
    if (s != AG_OK) {
        FZ_CHECK(err.msg[0] != '\0');
        FZ_CHECK(s == AG_ERR_FORMAT || s == AG_ERR_VALUE);
        check_unchanged(&r, before, n);
    } else {
        FZ_CHECK(err.msg[0] == '\0');
        check_round_trip(&r, data, size, epoch);
        train(&r, 5); /* a non-finite state may refuse a step; it must not crash */
    }
    free(before);
    free_run(&r);
    fz_mem_end();
    return 0;
}
#endif
