/* test_oom.c: out of memory is an error, not a crash. A whole training step
 * (model, optimizer, tape, forward, backward, optimizer step) and a model
 * save and load run under an allocator that refuses the 1st, 2nd, ... Nth
 * allocation in turn, until a run completes with nothing refused. Every run
 * must end in a clean status with nothing leaked, and the parameters must be
 * either untouched or exactly the fully updated ones. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"
#include "testalloc.h"

enum { BATCH = 128, IN = 256, HIDDEN = 128, OUT = 10 };

typedef struct {
    float *before, *after; /* the parameters at creation and after one step */
    size_t n;
} reference;

typedef struct {
    bool made;             /* model created */
    bool stepped;          /* the training step succeeded */
    bool loaded;           /* save and load succeeded */
    ag_status status;      /* the first error, AG_OK if none */
    float *params;         /* copy of the parameters at the end (malloc) */
    float *loaded_params;
} outcome;

static void record(ag_status *first, ag_status s)
{
    if (*first == AG_OK)
        *first = s;
}

static float *copy_params(const nn_mlp *net)
{
    size_t n = nn_mlp_param_count(net);
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    memcpy(p, nn_mlp_data(net), n * sizeof *p);
    return p;
}

/* The data: big enough for the packed GEMM, its scratch and thread pool. */
static ag_status make_data(ag_tensor **x, ag_tensor **y)
{
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    *x = ag_rand_normal(AG_F32, AG_SHAPE(BATCH, IN), 0, 1, &rng);
    *y = ag_zeros(AG_F32, AG_SHAPE(BATCH));
    for (size_t i = 0; *y && i < BATCH; i++)
        ((float *)ag_data(*y))[i] = (float)(i % OUT);
    return *x && *y ? AG_OK : AG_ERR_NOMEM;
}

/* One full run; returns what got done. path is a temporary file name. */
static outcome run(const char *path)
{
    outcome o = {0};
    size_t sizes[] = {IN, HIDDEN, OUT};
    nn_act acts[] = {NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_HE, .seed = 9};
    nn_optim_config cfg = nn_adam(1e-2);
    nn_error err = {0};
    nn_mlp *net = NULL, *back = NULL;
    nn_optim *opt = NULL;
    ag_tensor *x = NULL, *y = NULL;
    ag_tape *t = ag_tape_new();
    size_t n = 0;
    record(&o.status, t ? AG_OK : AG_ERR_NOMEM);
    record(&o.status, make_data(&x, &y));
    if (o.status == AG_OK && (o.status = nn_mlp_new(&spec, &net, &err)) == AG_OK) {
        o.made = true;
        const nn_param *params = nn_mlp_params(net, &n);
        record(&o.status, nn_optim_new(&cfg, params, n, &opt, &err));
    }
    if (o.status == AG_OK) {
        o.status = nn_mlp_train_step(net, t, opt, NN_COST_CROSS_ENTROPY, x, y, NULL, &err);
        o.stepped = o.status == AG_OK;
    }
    if (o.stepped && (o.status = nn_mlp_save(net, path, &err)) == AG_OK &&
        (o.status = nn_mlp_load(path, &back, &err)) == AG_OK) {
        o.loaded = true;
        o.loaded_params = copy_params(back);
    }
    if (o.status != AG_OK && t && x && y) /* leaf constructors say NULL, nn says why */
        cr_expect(err.msg[0], "an nn error without a message");
    if (o.made)
        o.params = copy_params(net);
    nn_mlp_free(back);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return o;
}

static void outcome_free(outcome *o)
{
    free(o->params);
    free(o->loaded_params);
}

static void temp_path(char path[64])
{
    strcpy(path, "/tmp/test_oom_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
}

Test(oom, every_allocation_of_a_training_step_and_save_load_fails_cleanly, .timeout = 120)
{
    char path[64];
    temp_path(path);
    /* The reference: nothing refused. The parameters before the step are
     * those of a run that stops right after creating the model. */
    test_alloc a;
    test_alloc_install(&a, 0);
    outcome ref = run(path);
    size_t total = a.attempts;
    test_alloc_remove();
    cr_assert(ref.stepped && ref.loaded, "the reference run fails: %s", ag_status_string(ref.status));
    cr_assert_eq(a.live_bytes, 0);
    size_t n_params = IN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT;
    cr_assert(memcmp(ref.params, ref.loaded_params, n_params * sizeof(float)) == 0);

    size_t failing_runs = 0, untouched = 0, updated = 0;
    for (size_t k = 1;; k++) {
        test_alloc_install(&a, k);
        outcome o = run(path);
        test_alloc_remove();
        cr_assert_eq(a.live_bytes, 0, "leak after refusing allocation %zu", k);
        if (!a.failed) { /* every allocation went through: the sweep is over */
            cr_assert(o.stepped && o.loaded);
            outcome_free(&o);
            break;
        }
        failing_runs++;
        cr_assert(o.status != AG_OK || (o.stepped && o.loaded),
                  "allocation %zu refused, yet the run neither failed nor finished", k);
        if (o.made && o.stepped) { /* fully updated, bit for bit */
            cr_assert(memcmp(o.params, ref.params, n_params * sizeof(float)) == 0, "k=%zu", k);
            updated++;
        } else if (o.made) {
            untouched++;
        }
        if (o.loaded)
            cr_assert(memcmp(o.loaded_params, ref.params, n_params * sizeof(float)) == 0);
        outcome_free(&o);
    }
    cr_log_info("%zu allocation-failure points (of %zu allocations): %zu left the model untouched, "
                "%zu after a full update", failing_runs, total, untouched, updated);
    cr_expect_geq(failing_runs, 10);
    cr_expect_geq(untouched, 1);
    unlink(path);
    outcome_free(&ref);
}

/* Untouched means bit-for-bit the initial parameters: a failed step must not
 * have moved a single one. Checked separately, as the sweep only keeps the
 * final values. */
Test(oom, a_failed_step_leaves_every_parameter_untouched)
{
    size_t sizes[] = {IN, HIDDEN, OUT};
    nn_act acts[] = {NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_HE, .seed = 9};
    nn_optim_config cfg = nn_adam(1e-2);
    nn_mlp *net = NULL;
    nn_optim *opt = NULL;
    ag_tensor *x, *y;
    size_t n;
    cr_assert_eq(make_data(&x, &y), AG_OK);
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    const nn_param *params = nn_mlp_params(net, &n);
    cr_assert_eq(nn_optim_new(&cfg, params, n, &opt, NULL), AG_OK);
    float *before = copy_params(net);
    for (size_t k = 1; k <= 8; k++) {
        ag_tape *t = ag_tape_new(); /* a fresh tape: its arena must grow, so it can fail */
        test_alloc a;
        test_alloc_install(&a, k);
        ag_status s = nn_mlp_train_step(net, t, opt, NN_COST_CROSS_ENTROPY, x, y, NULL, NULL);
        test_alloc_remove();
        ag_tape_free(t);
        if (s == AG_OK)
            break;
        cr_assert(memcmp(before, nn_mlp_data(net), nn_mlp_param_count(net) * sizeof(float)) == 0,
                  "a step that failed at allocation %zu moved parameters", k);
    }
    free(before);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
