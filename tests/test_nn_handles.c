/* test_nn_handles.c: the mistakes of issue 9 as a model's user makes them:
 * a target made on the tape and kept across training steps (it trained
 * against arena leftovers), the same target seen through ag_leaf_view
 * (right), and a model freed while a tape still uses its parameters. */
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "autograd.h"
#include "nn.h"

static nn_mlp *model(void)
{
    static const size_t sizes[] = {2, 8, 1};
    static const nn_act acts[] = {NN_TANH, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = 3};
    nn_mlp *net = NULL;
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    return net;
}

/* 8 points, target y = x0 - x1 as labels [8]. */
static void data(ag_tensor **x, ag_tensor **labels)
{
    double xs[16], ys[8];
    for (int i = 0; i < 8; i++) {
        xs[2 * i] = 0.25 * i - 1;
        xs[2 * i + 1] = 0.5 - 0.125 * i * (i % 3);
        ys[i] = xs[2 * i] - xs[2 * i + 1];
    }
    *x = ag_from_data(AG_F64, AG_SHAPE(8, 2), xs);
    *labels = ag_from_data(AG_F64, AG_SHAPE(8), ys);
    cr_assert(*x && *labels);
}

Test(nn_handles, target_reshaped_on_the_tape_and_reused_is_reported)
{
    nn_mlp *net = model();
    nn_optim *opt = NULL;
    nn_optim_config c = nn_adam(0.01);
    cr_assert_eq(nn_mlp_optim_new(net, &c, &opt, NULL), AG_OK);
    ag_tensor *x, *labels;
    data(&x, &labels);
    ag_tape *t = ag_tape_new();
    ag_tensor *target = ag_reshape(t, labels, AG_SHAPE(8, 1)); /* lives until the next reset */
    nn_error err;
    cr_assert_eq(nn_mlp_train_step(net, t, opt, NN_COST_MSE, x, target, NULL, &err), AG_OK, "%s", err.msg);
    double before[33]; /* 2·8 + 8 + 8·1 + 1 parameters */
    cr_assert_eq(nn_mlp_param_count(net), 33);
    memcpy(before, nn_mlp_data(net), sizeof before);
    /* step 2: the step above reset the tape; target is stale */
    cr_assert_eq(nn_mlp_train_step(net, t, opt, NN_COST_MSE, x, target, NULL, &err), AG_ERR_STATE);
    cr_assert(strstr(err.msg, "nn_mlp_train_step: y is a stale handle"), "%s", err.msg);
    cr_assert_eq(memcmp(before, nn_mlp_data(net), sizeof before), 0, "a refused step moved the model");
    ag_tape_free(t);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(labels);
}

Test(nn_handles, target_seen_through_a_leaf_view_trains)
{
    nn_mlp *net = model();
    nn_optim *opt = NULL;
    nn_optim_config c = nn_adam(0.02);
    cr_assert_eq(nn_mlp_optim_new(net, &c, &opt, NULL), AG_OK);
    ag_tensor *x, *labels;
    data(&x, &labels);
    ag_tensor *target = ag_leaf_view(labels, 0, AG_SHAPE(8, 1)); /* no tape: valid for good */
    cr_assert_not_null(target, "%s", ag_last_error());
    ag_tape *t = ag_tape_new();
    double first = NAN, loss = NAN;
    nn_error err;
    for (int step = 0; step < 300; step++) {
        cr_assert_eq(nn_mlp_train_step(net, t, opt, NN_COST_MSE, x, target, &loss, &err), AG_OK,
                     "step %d: %s", step, err.msg);
        if (step == 0)
            first = loss;
    }
    cr_assert(loss < first / 20, "the fit did not improve: %g -> %g", first, loss);
    ag_tape_free(t);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tensor_free(target);
    ag_tensor_free(x);
    ag_tensor_free(labels);
}

Test(nn_handles, accuracy_target_checked_too)
{
    nn_mlp *net = model();
    ag_tensor *x, *labels;
    data(&x, &labels);
    ag_tape *t = ag_tape_new();
    ag_tensor *target = ag_reshape(t, labels, AG_SHAPE(8, 1));
    ag_tape_reset(t);
    double acc;
    nn_error err;
    cr_assert_eq(nn_mlp_accuracy(net, t, x, target, &acc, &err), AG_ERR_STATE);
    cr_assert(strstr(err.msg, "nn_mlp_accuracy: target is a stale handle"), "%s", err.msg);
    ag_tape_free(t);
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(labels);
}

/* The tape holds the parameters (and through them the block) until its
 * reset: backward after nn_mlp_free writes into live memory (ASan and
 * valgrind check that), and the reset frees it. */
Test(nn_handles, model_freed_while_a_tape_uses_it)
{
    nn_mlp *net = model();
    ag_tensor *x, *labels;
    data(&x, &labels);
    ag_tape *t = ag_tape_new();
    ag_tensor *C = ag_sum(t, nn_mlp_forward(net, t, x, NULL, 0));
    cr_assert_not_null(C, "%s", ag_tape_error(t));
    nn_mlp_free(net);
    cr_assert_eq(ag_backward(t, C), AG_OK, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(labels);
}
