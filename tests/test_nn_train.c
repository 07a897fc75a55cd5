/* test_nn_train.c: end-to-end training (XOR, digits, iris), the
 * allocation-free steady state, the training step's errors, evaluation and
 * the progress line. Fixed seeds throughout; no clock is read. */
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "nn.h"
#include "testalloc.h"

#define DATA PROJECT_DATA_DIR

static nn_mlp *make(const nn_spec *spec)
{
    nn_mlp *net;
    nn_error e;
    cr_assert_eq(nn_mlp_new(spec, &net, &e), AG_OK, "%s", e.msg);
    return net;
}

static nn_optim *optim_for(nn_mlp *net, nn_optim_config c)
{
    nn_optim *o;
    nn_error e;
    cr_assert_eq(nn_mlp_optim_new(net, &c, &o, &e), AG_OK, "%s", e.msg);
    return o;
}

/* Trains a 2-4-1 network on XOR (full batch) and checks every output. */
static void xor_converges(nn_act hidden, nn_optim_config c, int steps)
{
    size_t sizes[] = {2, 4, 1};
    nn_act acts[] = {hidden, NN_SIGMOID};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = 1};
    nn_mlp *net = make(&spec);
    nn_optim *o = optim_for(net, c);
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(4, 2), (double[]){0, 0, 0, 1, 1, 0, 1, 1});
    ag_tensor *y = ag_from_data(AG_F64, AG_SHAPE(4, 1), (double[]){0, 1, 1, 0});
    ag_tape *t = ag_tape_new();
    double first = 0, loss = 0;
    nn_error e;
    for (int s = 0; s < steps; s++) {
        cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_QUADRATIC, x, y, &loss, &e), AG_OK,
                     "%s", e.msg);
        if (s == 0)
            first = loss;
    }
    cr_expect_lt(loss, 1e-3, "loss %g after %d steps (from %g)", loss, steps, first);
    ag_tape_set_recording(t, false);
    ag_tensor *out = nn_mlp_forward(net, t, x, NULL, 0);
    for (size_t i = 0; i < 4; i++)
        cr_expect_lt(fabs(ag_get(out, i) - ag_get(y, i)), 0.1, "XOR row %zu: %g", i, ag_get(out, i));
    double acc;
    cr_expect_eq(nn_mlp_accuracy(net, t, x, y, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(acc, 1.0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    nn_optim_free(o);
    nn_mlp_free(net);
}

Test(nn_train, xor_sigmoid_sgd_converges)
{
    xor_converges(NN_SIGMOID, nn_sgd(5.0), 3000);
}

Test(nn_train, xor_tanh_adam_converges)
{
    xor_converges(NN_TANH, nn_adam(0.05), 1000);
}

/* Nielsen's chapter 1 network on the UCI digits: 64-30-10 sigmoid,
 * quadratic cost, SGD with η = 3 and mini-batches of 10, 30 epochs. */
Test(nn_train, digits_reach_95_percent, .timeout = 120)
{
    nn_dataset all, tr, te;
    nn_error e;
    cr_assert_eq(nn_csv_load(DATA "/digits.csv", AG_F32, &all, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_scale(all.x, 1.0 / 16, &e), AG_OK); /* pixels are 0..16 */
    cr_assert_eq(nn_dataset_split(&all, 297, 42, &tr, &te, &e), AG_OK, "%s", e.msg);
    ag_tensor *Y;
    cr_assert_eq(nn_one_hot(tr.labels, 10, &Y, &e), AG_OK);
    size_t sizes[] = {64, 30, 10};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F32,
                    .init = NN_INIT_NORMAL_SCALED, .seed = 1};
    nn_mlp *net = make(&spec);
    nn_optim *o = optim_for(net, nn_sgd(3.0));
    ag_tensor *bx = ag_zeros(AG_F32, AG_SHAPE(10, 64)), *by = ag_zeros(AG_F32, AG_SHAPE(10, 10));
    nn_batches *it;
    cr_assert_eq(nn_batches_new(tr.x, Y, bx, by, true, 7, &it, &e), AG_OK, "%s", e.msg);
    ag_tape *t = ag_tape_new();
    double first_loss = 0, loss = 0, acc = 0;
    for (int epoch = 0; epoch < 30; epoch++) {
        ag_tensor *x, *y;
        double sum = 0, l;
        size_t k = 0;
        while (nn_batches_next(it, &x, &y)) {
            cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_QUADRATIC, x, y, &l, &e), AG_OK,
                         "%s", e.msg);
            sum += l;
            k++;
        }
        loss = sum / (double)k;
        if (epoch == 0)
            first_loss = loss;
    }
    cr_assert_eq(nn_mlp_accuracy(net, t, te.x, te.labels, &acc, &e), AG_OK, "%s", e.msg);
    cr_log_info("digits: test accuracy %.2f%% (%zu held-out images), loss %.4f -> %.4f",
                100 * acc, te.n, first_loss, loss);
    cr_expect_geq(acc, 0.95, "test accuracy %.4f", acc);
    cr_expect_lt(loss, first_loss / 2);
    ag_tape_free(t);
    nn_batches_free(it);
    ag_tensor_free(bx);
    ag_tensor_free(by);
    ag_tensor_free(Y);
    nn_optim_free(o);
    nn_mlp_free(net);
    nn_dataset_free(&all);
    nn_dataset_free(&tr);
    nn_dataset_free(&te);
}

/* Iris with standardised features, ReLU, logits and cross-entropy on class
 * indices, AdamW with a cosine schedule. */
Test(nn_train, iris_cross_entropy_adamw)
{
    nn_dataset all, tr, te;
    nn_error e;
    cr_assert_eq(nn_csv_load(DATA "/iris.csv", AG_F64, &all, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_dataset_split(&all, 30, 3, &tr, &te, &e), AG_OK);
    cr_assert_eq(nn_standardize(tr.x, te.x, &e), AG_OK);
    size_t sizes[] = {4, 16, 3};
    nn_act acts[] = {NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_HE, .seed = 2};
    nn_mlp *net = make(&spec);
    nn_optim *o = optim_for(net, nn_adamw(0.01));
    ag_tensor *bx = ag_zeros(AG_F64, AG_SHAPE(16, 4)), *by = ag_zeros(AG_F64, AG_SHAPE(16));
    nn_batches *it;
    cr_assert_eq(nn_batches_new(tr.x, tr.labels, bx, by, true, 5, &it, &e), AG_OK, "%s", e.msg);
    nn_lr_schedule sched = {.kind = NN_LR_COSINE, .t_max = 100, .lr_min = 1e-4};
    ag_tape *t = ag_tape_new();
    for (size_t epoch = 0; epoch < 100; epoch++) {
        cr_assert_eq(nn_optim_set_lr(o, nn_lr_at(&sched, 0.01, epoch)), AG_OK);
        ag_tensor *x, *y;
        while (nn_batches_next(it, &x, &y))
            cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_CROSS_ENTROPY, x, y, NULL, &e),
                         AG_OK, "%s", e.msg);
    }
    double acc;
    cr_assert_eq(nn_mlp_accuracy(net, t, te.x, te.labels, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_geq(acc, 0.9, "iris test accuracy %.4f", acc);
    ag_tape_free(t);
    nn_batches_free(it);
    ag_tensor_free(bx);
    ag_tensor_free(by);
    nn_optim_free(o);
    nn_mlp_free(net);
    nn_dataset_free(&all);
    nn_dataset_free(&tr);
    nn_dataset_free(&te);
}

/* One epoch written out by hand: batch, forward with taps, cost, backward,
 * optimizer step, zero grads, tape reset; then the same with
 * nn_mlp_train_step, and an evaluation. */
static void run_epoch(nn_mlp *net, ag_tape *t, nn_optim *o, nn_batches *it,
                      ag_tensor *xt, ag_tensor *lt)
{
    ag_tensor *x, *y;
    nn_tap taps[2];
    for (size_t k = 0; nn_batches_next(it, &x, &y); k++) {
        if (k % 2) {
            cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_QUADRATIC, x, y, NULL, NULL), AG_OK);
            continue;
        }
        ag_tensor *a = nn_mlp_forward(net, t, x, taps, 2);
        cr_assert_eq(ag_backward(t, nn_loss(t, NN_COST_QUADRATIC, a, y)), AG_OK, "%s",
                     ag_tape_error(t));
        cr_assert_not_null(ag_grad(taps[0].z));
        cr_assert_eq(nn_optim_step(o, NULL), AG_OK);
        nn_optim_zero_grad(o);
        ag_tape_reset(t);
    }
    double acc;
    cr_assert_eq(nn_mlp_accuracy(net, t, xt, lt, &acc, NULL), AG_OK);
}

Test(nn_train, steady_state_training_allocates_nothing)
{
    test_alloc a;
    test_alloc_install(&a, 0);
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    ag_tensor *X = ag_rand_normal(AG_F32, AG_SHAPE(103, 8), 0, 1, &rng); /* 103: a partial batch */
    ag_tensor *Y = ag_rand_uniform(AG_F32, AG_SHAPE(103, 3), 0, 1, &rng);
    ag_tensor *lab = ag_zeros(AG_F32, AG_SHAPE(103));
    ag_tensor *bx = ag_zeros(AG_F32, AG_SHAPE(16, 8)), *by = ag_zeros(AG_F32, AG_SHAPE(16, 3));
    size_t sizes[] = {8, 12, 3};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F32, .seed = 4};
    nn_mlp *net = make(&spec);
    nn_optim_config c = nn_adam(0.01);
    nn_optim *o = optim_for(net, c);
    nn_batches *it;
    cr_assert_eq(nn_batches_new(X, Y, bx, by, true, 1, &it, NULL), AG_OK);
    ag_tape *t = ag_tape_new();
    run_epoch(net, t, o, it, X, lab); /* warm-up: the arena and records grow here */
    size_t attempts = a.attempts, frees = a.frees, steps = nn_optim_steps(o);
    for (int epoch = 0; epoch < 3; epoch++)
        run_epoch(net, t, o, it, X, lab);
    cr_expect_gt(nn_optim_steps(o), steps + 3 * 6, "the loop ran");
    cr_expect_eq(a.attempts, attempts, "%zu allocations in steady state", a.attempts - attempts);
    cr_expect_eq(a.frees, frees);
    ag_tape_free(t);
    nn_batches_free(it);
    nn_optim_free(o);
    nn_mlp_free(net);
    ag_tensor *all[] = {X, Y, lab, bx, by};
    for (size_t i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
    test_alloc_remove();
    cr_expect_eq(a.live_bytes, 0, "everything freed");
}

Test(nn_train, train_step_reports_errors_and_resets_the_tape)
{
    size_t sizes[] = {2, 3, 1};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F64, .seed = 1};
    nn_mlp *net = make(&spec);
    nn_optim *o = optim_for(net, nn_sgd(0.1));
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(4, 2)), *y = ag_zeros(AG_F64, AG_SHAPE(4, 2));
    ag_tape *t = ag_tape_new();
    nn_error e;
    double loss = -1;
    cr_expect_eq(nn_mlp_train_step(net, t, o, NN_COST_QUADRATIC, x, y, &loss, &e), AG_ERR_SHAPE);
    cr_expect(strstr(e.msg, "nn_mlp_train_step: ag_quadratic_cost"), "%s", e.msg);
    cr_expect(strstr(e.msg, "[4,1]") && strstr(e.msg, "[4,2]"), "%s", e.msg);
    cr_expect_eq(loss, -1, "no loss on failure");
    cr_expect_eq(ag_tape_status(t), AG_OK, "the tape is reset");
    cr_expect_eq(ag_tape_size(t), 0);
    cr_expect_eq(nn_optim_steps(o), 0, "no step taken");
    cr_expect_eq(nn_mlp_train_step(net, t, o, (nn_cost)42, x, y, &loss, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "nn_loss: 42 is not a cost"), "%s", e.msg);
    cr_expect_eq(nn_mlp_train_step(NULL, t, o, NN_COST_MSE, x, y, &loss, &e), AG_ERR_NULL);
    cr_expect_eq(nn_mlp_train_step(net, NULL, o, NN_COST_MSE, x, y, &loss, &e), AG_ERR_NULL);
    ag_matmul(t, x, x); /* a tape already in error is reported, then reset */
    cr_expect_eq(nn_mlp_train_step(net, t, o, NN_COST_MSE, x, y, &loss, &e), AG_ERR_SHAPE);
    cr_expect(strstr(e.msg, "ag_matmul"), "%s", e.msg);
    cr_expect_eq(ag_tape_status(t), AG_OK);
    double acc;
    ag_tensor *wide = ag_zeros(AG_F64, AG_SHAPE(4, 5));
    cr_expect_eq(nn_mlp_accuracy(net, t, wide, y, &acc, &e), AG_ERR_SHAPE);
    cr_expect(strstr(e.msg, "nn_mlp_accuracy: nn_mlp_forward: layer 0 expects 2 inputs, x is [4,5]"),
              "%s", e.msg);
    cr_expect_eq(ag_tape_status(t), AG_OK);
    cr_expect(ag_tape_recording(t), "recording restored");
    cr_expect_eq(nn_mlp_accuracy(NULL, t, x, y, &acc, &e), AG_ERR_NULL);
    ag_tensor_free(wide);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    nn_optim_free(o);
    nn_mlp_free(net);
}

/* The stream's whole content. */
static void contents(FILE *f, char *buf, size_t cap)
{
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
}

Test(nn_train, progress_plain_lines_off_a_terminal)
{
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    nn_progress p;
    nn_progress_init(&p, f, 30);
    cr_expect_not(p.tty, "a file is not a terminal");
    cr_expect_eq(nn_progress_epoch(&p, 3, 1500, 0.5, 0.0123, 0.9533), AG_OK);
    cr_expect_eq(nn_progress_epoch(&p, 4, 1500, 0, NAN, NAN), AG_OK);
    cr_expect_eq(nn_progress_end(&p), AG_OK);
    char buf[256];
    contents(f, buf, sizeof buf);
    cr_expect_str_eq(buf, "epoch 3/30  1500 samples  3000 samples/s  loss 0.0123  acc 95.33%\n"
                          "epoch 4/30  1500 samples\n");
    fclose(f);
}

Test(nn_train, progress_redraws_in_place_on_a_terminal)
{
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    nn_progress p;
    nn_progress_init(&p, f, 0);
    p.tty = true; /* as isatty would say on a terminal */
    nn_progress_epoch(&p, 1, 10, 2, 0.5, NAN);
    nn_progress_epoch(&p, 2, 10, 0, NAN, NAN);
    nn_progress_end(&p);
    char buf[256];
    contents(f, buf, sizeof buf);
    cr_expect_str_eq(buf, "\repoch 1  10 samples  5 samples/s  loss 0.5"
                          "\repoch 2  10 samples" "                       " "\n",
                     "the shorter line blanks the rest of the longer one: '%s'", buf);
    nn_progress q;
    nn_progress_init(&q, NULL, 5);
    cr_expect_eq(nn_progress_epoch(&q, 1, 1, 1, 1, 1), AG_OK, "a NULL stream is silent");
    cr_expect_eq(nn_progress_end(&q), AG_OK);
    cr_expect_eq(nn_progress_epoch(NULL, 1, 1, 1, 1, 1), AG_OK);
    fclose(f);
}

/* Three steps of a network whose products and optimizer updates are big
 * enough to be split over threads; the losses and every parameter, as
 * bits, per thread count. */
static void train_with_threads(nn_optim_config cfg, size_t threads, double losses[3], float *params,
                               size_t n_params, double *norm)
{
    size_t sizes[] = {256, 256, 10};
    nn_act acts[] = {NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_HE, .seed = 21};
    nn_mlp *net = make(&spec);
    nn_optim *o = optim_for(net, cfg);
    ag_rng rng;
    ag_rng_seed(&rng, 8);
    ag_tensor *x = ag_rand_normal(AG_F32, AG_SHAPE(64, 256), 0, 1, &rng);
    ag_tensor *y = ag_zeros(AG_F32, AG_SHAPE(64));
    for (size_t i = 0; i < 64; i++)
        ((float *)ag_data(y))[i] = (float)(i % 10);
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, threads);
    for (size_t s = 0; s < 3; s++)
        cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_CROSS_ENTROPY, x, y, &losses[s], NULL), AG_OK);
    cr_assert_eq(nn_mlp_param_count(net), n_params);
    memcpy(params, nn_mlp_data(net), n_params * sizeof(float));
    *norm = nn_optim_grad_norm(o);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    nn_optim_free(o);
    nn_mlp_free(net);
}

Test(nn_train, training_is_bitwise_identical_for_1_2_and_3_threads)
{
    enum { N = 256 * 256 + 256 + 256 * 10 + 10 };
    static float params[3][N];
    nn_optim_config nesterov = nn_sgd(0.01);
    nesterov.momentum = 0.9;
    nesterov.nesterov = true;
    nesterov.weight_decay = 1e-3;
    nn_optim_config clipped = nn_sgd(0.05);
    clipped.clip_norm = 0.25; /* below the norms these steps see: every step clips */
    const nn_optim_config cfgs[] = {nn_adam(1e-3), nn_sgd(0.01), nesterov, clipped};
    for (size_t c = 0; c < 4; c++) {
        double losses[3][3], norms[3];
        for (size_t i = 0; i < 3; i++)
            train_with_threads(cfgs[c], i + 1, losses[i], params[i], N, &norms[i]);
        for (size_t i = 1; i < 3; i++) {
            cr_assert(memcmp(losses[0], losses[i], sizeof losses[0]) == 0,
                      "optimizer %zu: losses differ with %zu threads", c, i + 1);
            cr_assert(memcmp(params[0], params[i], sizeof params[0]) == 0,
                      "optimizer %zu: parameters differ with %zu threads", c, i + 1);
            cr_assert(memcmp(&norms[0], &norms[i], sizeof norms[0]) == 0,
                      "optimizer %zu: gradient norms %.17g and %.17g with %zu threads", c,
                      norms[0], norms[i], i + 1);
        }
        /* the norm is measured when clipping is on (NaN otherwise) */
        cr_assert(cfgs[c].clip_norm > 0 ? norms[0] > 0 && isfinite(norms[0]) : isnan(norms[0]));
        if (c == 3)
            cr_assert_gt(norms[0], clipped.clip_norm, "the clipping test clips");
        cr_assert(losses[0][2] < losses[0][0], "optimizer %zu: training lowers the loss", c);
    }
}

/* ------------------------------------- non-finite gradients, thresholds */

Test(nn_train, train_step_refuses_a_nan_gradient_and_keeps_the_model)
{
    size_t sizes[] = {2, 3, 1};
    nn_act acts[] = {NN_TANH, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = 1};
    nn_mlp *net = make(&spec), *ref = make(&spec); /* ref never sees the bad batch */
    nn_optim *o = optim_for(net, nn_adam(0.01)), *ro = optim_for(ref, nn_adam(0.01));
    ag_tensor *bad = ag_from_data(AG_F64, AG_SHAPE(4, 2), (double[]){NAN, 1, 0.5, -1, 2, 0, 1, 1});
    ag_tensor *good = ag_from_data(AG_F64, AG_SHAPE(4, 2), (double[]){0.25, 1, 0.5, -1, 2, 0, 1, 1});
    ag_tensor *y = ag_from_data(AG_F64, AG_SHAPE(4, 1), (double[]){1, 0, 1, 0});
    ag_tape *t = ag_tape_new();
    enum { P = 2 * 3 + 3 + 3 + 1 };
    cr_assert_eq(nn_mlp_param_count(net), P);
    double before[P], loss = 0;
    memcpy(before, nn_mlp_data(net), sizeof before);
    nn_error e;
    /* x[0][0] is NaN, so row 0 of W1's gradient, xᵀ·δ, is NaN from element 0 */
    cr_expect_eq(nn_mlp_train_step(net, t, o, NN_COST_BCE_LOGITS, bad, y, &loss, &e),
                 AG_ERR_NUMERIC, "%s", e.msg);
    cr_expect(strstr(e.msg, "nn_mlp_train_step: gradient of W1 has nan at element 0 of [2,3]; "
                            "parameters left unchanged"), "%s", e.msg);
    cr_expect(isnan(loss), "the loss is still reported: %g", loss);
    cr_expect(memcmp(before, nn_mlp_data(net), sizeof before) == 0, "the model is unchanged");
    cr_expect_eq(nn_optim_steps(o), 0);
    cr_expect_eq(ag_tape_status(t), AG_OK, "the tape is reset");
    cr_expect_eq(ag_tape_size(t), 0);
    for (int s = 0; s < 3; s++) {
        cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_BCE_LOGITS, good, y, NULL, &e), AG_OK,
                     "%s", e.msg);
        cr_assert_eq(nn_mlp_train_step(ref, t, ro, NN_COST_BCE_LOGITS, good, y, NULL, &e), AG_OK);
    }
    cr_expect(memcmp(nn_mlp_data(ref), nn_mlp_data(net), sizeof before) == 0,
              "after the refused step, training goes on as if it had never been tried");
    ag_tape_free(t);
    ag_tensor_free(bad);
    ag_tensor_free(good);
    ag_tensor_free(y);
    nn_optim_free(o);
    nn_optim_free(ro);
    nn_mlp_free(net);
    nn_mlp_free(ref);
}

/* A 1-1 model a = act(1·x + 0): its outputs are act(x) exactly. */
static nn_mlp *pass_through(nn_act act)
{
    size_t sizes[] = {1, 1};
    nn_spec spec = {.n_layers = 1, .sizes = sizes, .acts = &act, .dtype = AG_F64};
    nn_mlp *net = make(&spec);
    double *d = nn_mlp_data(net); /* W1 [1,1], b1 [1] */
    d[0] = 1;
    d[1] = 0;
    return net;
}

Test(nn_train, mlp_accuracy_thresholds_logits_at_0_and_probabilities_at_half)
{
    /* z = (0.3, 0.1, -0.2, 0.7), classes (1, 1, 0, 1). As logits (identity
     * output) every row is right; thresholded at 0.5 only two would be. As
     * sigmoid(z) every row is right again; thresholded at 0 (every
     * sigmoid is > 0) only three would be. */
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(4, 1), (double[]){0.3, 0.1, -0.2, 0.7});
    ag_tensor *c = ag_from_data(AG_F64, AG_SHAPE(4), (double[]){1, 1, 0, 1});
    ag_tape *t = ag_tape_new();
    nn_error e;
    double acc = -1;
    nn_mlp *logits = pass_through(NN_IDENTITY), *probs = pass_through(NN_SIGMOID);
    cr_assert_eq(nn_mlp_accuracy(logits, t, x, c, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(acc, 1.0, "identity output: threshold 0, got %g", acc);
    cr_assert_eq(nn_mlp_accuracy(probs, t, x, c, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(acc, 1.0, "sigmoid output: threshold 0.5, got %g", acc);
    nn_mlp_free(logits);
    nn_mlp_free(probs);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(c);
}

/* Breast cancer, one logit out, trained with NN_COST_BCE_LOGITS: the
 * accuracy must be the share of rows where (z >= 0) is the label, counted
 * here from the outputs. */
Test(nn_train, breast_cancer_logit_accuracy_counts_z_at_least_0)
{
    nn_dataset all;
    nn_error e;
    cr_assert_eq(nn_csv_load(DATA "/breast_cancer.csv", AG_F64, &all, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_standardize(all.x, NULL, &e), AG_OK);
    ag_tensor *y = ag_view(AG_F64, AG_SHAPE(all.n, 1), ag_data(all.labels), NULL);
    size_t sizes[] = {30, 8, 1};
    nn_act acts[] = {NN_TANH, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = 3};
    nn_mlp *net = make(&spec);
    nn_optim *o = optim_for(net, nn_adam(0.01));
    ag_tape *t = ag_tape_new();
    for (int s = 0; s < 40; s++)
        cr_assert_eq(nn_mlp_train_step(net, t, o, NN_COST_BCE_LOGITS, all.x, y, NULL, &e), AG_OK,
                     "%s", e.msg);
    ag_tape_set_recording(t, false);
    ag_tensor *z = nn_mlp_forward(net, t, all.x, NULL, 0);
    cr_assert_not_null(z, "%s", ag_tape_error(t));
    size_t at0 = 0, at_half = 0;
    for (size_t i = 0; i < all.n; i++) {
        double label = ag_get(all.labels, i);
        at0 += (ag_get(z, i) >= 0) == (label == 1);
        at_half += (ag_get(z, i) >= 0.5) == (label == 1);
    }
    ag_tape_reset(t);
    ag_tape_set_recording(t, true);
    cr_assert_neq(at0, at_half, "the case must tell the two thresholds apart");
    double acc;
    cr_assert_eq(nn_mlp_accuracy(net, t, all.x, all.labels, &acc, &e), AG_OK, "%s", e.msg);
    cr_expect_eq(acc, (double)at0 / (double)all.n, "%.6f, %zu/%zu right at z >= 0 (%zu at 0.5)",
                 acc, at0, all.n, at_half);
    ag_tape_free(t);
    ag_tensor_free(y);
    nn_optim_free(o);
    nn_mlp_free(net);
    nn_dataset_free(&all);
}
