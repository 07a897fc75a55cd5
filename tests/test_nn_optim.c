/* test_nn_optim.c: optimizer updates against hand-computed values for two
 * steps, configuration checks, schedules, and allocation behaviour.
 *
 * The expected numbers were worked out by hand (SGD) and with a separate
 * scalar script following PyTorch's formulas (Adam, AdamW), from
 * θ0 = (1, -2), ∇ at step 1 = (0.5, -1.5), at step 2 = (0.25, 0.75), η = 0.1. */
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "nn.h"
#include "testalloc.h"

static const double THETA0[2] = {1, -2}, G1[2] = {0.5, -1.5}, G2[2] = {0.25, 0.75};

typedef struct {
    ag_tensor *w;
    nn_optim *opt;
} rig;

static rig rig_new(ag_dtype dt, nn_optim_config cfg)
{
    rig r = {.w = ag_zeros(dt, AG_SHAPE(2))};
    cr_assert_eq(ag_set_requires_grad(r.w, true), AG_OK);
    for (size_t i = 0; i < 2; i++)
        if (dt == AG_F32)
            ((float *)ag_data(r.w))[i] = (float)THETA0[i];
        else
            ((double *)ag_data(r.w))[i] = THETA0[i];
    nn_param p = {"w", r.w};
    nn_error e;
    cr_assert_eq(nn_optim_new(&cfg, &p, 1, &r.opt, &e), AG_OK, "%s", e.msg);
    return r;
}

static void set_grad(rig *r, const double *g)
{
    for (size_t i = 0; i < 2; i++)
        if (ag_tensor_dtype(r->w) == AG_F32)
            ((float *)ag_grad(r->w))[i] = (float)g[i];
        else
            ((double *)ag_grad(r->w))[i] = g[i];
}

/* Two steps; after each, w must equal want1 / want2 within tol. */
static void check_two_steps(ag_dtype dt, nn_optim_config cfg, const double want1[2],
                            const double want2[2], double tol)
{
    rig r = rig_new(dt, cfg);
    set_grad(&r, G1);
    cr_assert_eq(nn_optim_step(r.opt, NULL), AG_OK);
    for (size_t i = 0; i < 2; i++)
        cr_expect_float_eq(ag_get(r.w, i), want1[i], tol, "step 1, element %zu: %.17g vs %.17g",
                           i, ag_get(r.w, i), want1[i]);
    set_grad(&r, G2);
    cr_assert_eq(nn_optim_step(r.opt, NULL), AG_OK);
    for (size_t i = 0; i < 2; i++)
        cr_expect_float_eq(ag_get(r.w, i), want2[i], tol, "step 2, element %zu: %.17g vs %.17g",
                           i, ag_get(r.w, i), want2[i]);
    cr_expect_eq(nn_optim_steps(r.opt), 2);
    nn_optim_free(r.opt);
    ag_tensor_free(r.w);
}

Test(nn_optim, sgd_plain)
{
    /* θ1 = θ0 - 0.1·g1 = (0.95, -1.85); θ2 = θ1 - 0.1·g2 = (0.925, -1.925) */
    check_two_steps(AG_F64, nn_sgd(0.1), (double[]){0.95, -1.85}, (double[]){0.925, -1.925}, 1e-15);
}

/* Plain SGD gives PyTorch's bits: θ, ∇ and torch.optim.SGD(lr=0.0137)'s
 * result after one step, computed by PyTorch 1.13 (CPU) in each dtype, at
 * elements where rounding θ - η∇ from double would differ in the last bit. */
static const double TORCH_SGD_F32[][3] = {
    {0x1.ad13a2p-9, 0x1.2a7c76p-2, -0x1.79650ap-11},
    {-0x1.f15cb2p-6, 0x1.2995a4p-1, -0x1.39e95ep-5},
    {-0x1.a3aad4p-7, -0x1.e24c88p-1, 0x1.9b30a8p-14},
    {-0x1.1c7e54p-4, -0x1.a97372p-2, -0x1.052dc2p-4},
    {-0x1.8600c4p-7, -0x1.d31cfep-1, 0x1.38fd94p-11},
    {-0x1.556ef8p-9, -0x1.8b4b18p-3, 0x1.4a38eep-15},
};
static const double TORCH_SGD_F64[][3] = {
    {0x1.a68592aba0300p-7, 0x1.a606bb017cdcap-1, 0x1.a3e9b658b6d8bp-10},
    {-0x1.cc552a018d41ep-1, -0x1.f2db7cacb2334p-1, -0x1.c57f924ec02a9p-1},
    {-0x1.cfbcf95d44c80p-7, -0x1.e72b4738e3320p-1, -0x1.24b4f1f520a14p-10},
    {0x1.7017c27c9b3c0p-5, -0x1.ea694b315045cp-1, 0x1.db9749c0c289fp-5},
    {0x1.253df6c620c70p-4, 0x1.5475e4ed9fdf0p-1, 0x1.ffdaeae162813p-5},
    {-0x1.e2e28d68e117ep-1, -0x1.cf961edac33d4p-2, -0x1.dfb59b7520c11p-1},
};

static void check_torch_sgd(ag_dtype dt, const double (*cases)[3], size_t n)
{
    ag_tensor *w = ag_zeros(dt, AG_SHAPE(n));
    cr_assert_eq(ag_set_requires_grad(w, true), AG_OK);
    for (size_t i = 0; i < n; i++) {
        if (dt == AG_F32) {
            ((float *)ag_data(w))[i] = (float)cases[i][0];
            ((float *)ag_grad(w))[i] = (float)cases[i][1];
        } else {
            ((double *)ag_data(w))[i] = cases[i][0];
            ((double *)ag_grad(w))[i] = cases[i][1];
        }
    }
    nn_param p = {"w", w};
    nn_optim_config c = nn_sgd(0.0137);
    nn_optim *o;
    cr_assert_eq(nn_optim_new(&c, &p, 1, &o, NULL), AG_OK);
    cr_assert_eq(nn_optim_step(o, NULL), AG_OK);
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(ag_get(w, i), cases[i][2], "%s element %zu: %a, PyTorch %a",
                     dt == AG_F32 ? "f32" : "f64", i, ag_get(w, i), cases[i][2]);
    nn_optim_free(o);
    ag_tensor_free(w);
}

Test(nn_optim, sgd_plain_gives_pytorchs_bits)
{
    check_torch_sgd(AG_F32, TORCH_SGD_F32, sizeof TORCH_SGD_F32 / sizeof *TORCH_SGD_F32);
    check_torch_sgd(AG_F64, TORCH_SGD_F64, sizeof TORCH_SGD_F64 / sizeof *TORCH_SGD_F64);
}

Test(nn_optim, sgd_momentum)
{
    /* b1 = g1, θ1 = (0.95, -1.85); b2 = 0.9·b1 + g2 = (0.7, -0.6), θ2 = (0.88, -1.79) */
    nn_optim_config c = nn_sgd(0.1);
    c.momentum = 0.9;
    check_two_steps(AG_F64, c, (double[]){0.95, -1.85}, (double[]){0.88, -1.79}, 1e-15);
}

Test(nn_optim, sgd_nesterov)
{
    /* b1 = g1, d1 = g1 + 0.9·b1 = (0.95, -2.85), θ1 = (0.905, -1.715);
     * b2 = (0.7, -0.6), d2 = g2 + 0.9·b2 = (0.88, 0.21), θ2 = (0.817, -1.736) */
    nn_optim_config c = nn_sgd(0.1);
    c.momentum = 0.9;
    c.nesterov = true;
    check_two_steps(AG_F64, c, (double[]){0.905, -1.715}, (double[]){0.817, -1.736}, 1e-15);
}

Test(nn_optim, sgd_weight_decay)
{
    /* d1 = g1 + 0.1·θ0 = (0.6, -1.7), θ1 = (0.94, -1.83);
     * d2 = g2 + 0.1·θ1 = (0.344, 0.567), θ2 = (0.9056, -1.8867) */
    nn_optim_config c = nn_sgd(0.1);
    c.weight_decay = 0.1;
    check_two_steps(AG_F64, c, (double[]){0.94, -1.83}, (double[]){0.9056, -1.8867}, 1e-15);
}

Test(nn_optim, sgd_nesterov_with_weight_decay)
{
    /* d1 = (0.6, -1.7), b1 = d1, θ1 = θ0 - 0.1·(d1 + 0.9·b1) = (0.886, -1.677);
     * d2 = g2 + 0.1·θ1 = (0.3386, 0.5823), b2 = 0.9·b1 + d2 = (0.8786, -0.9477),
     * θ2 = θ1 - 0.1·(d2 + 0.9·b2) = (0.773066, -1.649937) */
    nn_optim_config c = nn_sgd(0.1);
    c.momentum = 0.9;
    c.nesterov = true;
    c.weight_decay = 0.1;
    check_two_steps(AG_F64, c, (double[]){0.886, -1.677}, (double[]){0.773066, -1.649937}, 1e-14);
}

Test(nn_optim, adam_bias_correction)
{
    /* Step 1 with bias correction: m̂ = g, v̂ = g², so θ1 = θ0 - 0.1·g/(|g| + 1e-8). */
    double w1[] = {1 - 0.1 * 0.5 / (0.5 + 1e-8), -2 + 0.1 * 1.5 / (1.5 + 1e-8)};
    check_two_steps(AG_F64, nn_adam(0.1), w1,
                    (double[]){0.80678204047746238, -1.8733662969252554}, 1e-14);
}

Test(nn_optim, adam_with_l2_weight_decay)
{
    nn_optim_config c = nn_adam(0.1);
    c.weight_decay = 0.1;
    check_two_steps(AG_F64, c, (double[]){0.9000000016666666, -1.9000000005882354},
                    (double[]){0.80500976586131989, -1.8596539188895798}, 1e-14);
}

Test(nn_optim, adamw_decoupled_weight_decay)
{
    /* θ1 = θ0·(1 - 0.1·0.1) - 0.1·sign(g1) (approximately): (0.89, -1.88) */
    nn_optim_config c = nn_adamw(0.1);
    c.weight_decay = 0.1;
    check_two_steps(AG_F64, c, (double[]){0.89000000199999996, -1.8800000006666666},
                    (double[]){0.78788204045746235, -1.8345662969185887}, 1e-14);
}

Test(nn_optim, f32_parameters_step_in_f32)
{
    check_two_steps(AG_F32, nn_adam(0.1), (double[]){0.9, -1.9},
                    (double[]){0.80678204047746238, -1.8733662969252554}, 1e-6);
}

Test(nn_optim, defaults_are_pytorchs)
{
    nn_optim_config a = nn_adam(1e-3), w = nn_adamw(1e-3), s = nn_sgd(0.5);
    cr_expect_eq(a.kind, NN_ADAM);
    cr_expect_eq(a.beta1, 0.9);
    cr_expect_eq(a.beta2, 0.999);
    cr_expect_eq(a.eps, 1e-8);
    cr_expect_eq(a.weight_decay, 0);
    cr_expect_eq(w.kind, NN_ADAMW);
    cr_expect_eq(w.weight_decay, 0.01);
    cr_expect_eq(s.kind, NN_SGD);
    cr_expect_eq(s.lr, 0.5);
    cr_expect_eq(s.momentum, 0);
}

Test(nn_optim, bad_configurations_are_rejected)
{
    ag_tensor *w = ag_zeros(AG_F64, AG_SHAPE(3));
    nn_param p = {"w", w};
    nn_optim *o = (nn_optim *)&o;
    nn_error e;
    nn_optim_config c = nn_sgd(0.1);
    cr_expect_eq(nn_optim_new(&c, &p, 1, &o, &e), AG_ERR_STATE, "no grad yet");
    cr_expect(strstr(e.msg, "'w' does not require grad"), "%s", e.msg);
    cr_expect_null(o);
    cr_assert_eq(ag_set_requires_grad(w, true), AG_OK);
    struct { nn_optim_config c; const char *msg; } bad[] = {
        {{.kind = NN_SGD, .lr = -1}, "lr -1"},
        {{.kind = NN_SGD, .lr = NAN}, "lr nan"},
        {{.kind = NN_SGD, .lr = 1, .momentum = 1}, "momentum 1"},
        {{.kind = NN_SGD, .lr = 1, .nesterov = true}, "Nesterov"},
        {{.kind = NN_SGD, .lr = 1, .weight_decay = -0.5}, "weight_decay -0.5"},
        {{.kind = NN_ADAM, .lr = 1, .beta1 = 1, .beta2 = 0.9}, "betas (1, 0.9)"},
        {{.kind = NN_ADAMW, .lr = 1, .beta1 = 0.9, .beta2 = 0.9, .eps = -1}, "eps -1"},
        {{.kind = (nn_optim_kind)5, .lr = 1}, "kind 5"},
        {{.kind = NN_SGD, .lr = 1, .clip_norm = -1}, "clip_norm -1"},
        {{.kind = NN_SGD, .lr = 1, .clip_norm = NAN}, "clip_norm nan"},
        {{.kind = NN_SGD, .lr = 1, .clip_norm = INFINITY}, "clip_norm inf"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(nn_optim_new(&bad[i].c, &p, 1, &o, &e), AG_ERR_VALUE, "case %zu", i);
        cr_expect(strstr(e.msg, bad[i].msg), "case %zu: %s", i, e.msg);
        cr_expect_null(o);
    }
    cr_expect_eq(nn_optim_new(&c, &p, 0, &o, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "no parameters"), "%s", e.msg);
    cr_expect_eq(nn_optim_new(NULL, &p, 1, &o, &e), AG_ERR_NULL);
    cr_expect_eq(nn_optim_new(&c, NULL, 1, &o, &e), AG_ERR_NULL);
    cr_expect_eq(nn_optim_new(&c, &p, 1, NULL, &e), AG_ERR_NULL);
    nn_param null_tensor = {"x", NULL};
    cr_expect_eq(nn_optim_new(&c, &null_tensor, 1, &o, &e), AG_ERR_NULL);
    cr_expect_eq(nn_optim_step(NULL, &e), AG_ERR_NULL);
    cr_expect(strstr(e.msg, "nn_optim_step: opt is NULL"), "%s", e.msg);
    cr_expect(isnan(nn_optim_grad_norm(NULL)));
    nn_optim_zero_grad(NULL);
    nn_optim_free(NULL);
    ag_tensor_free(w);
}

Test(nn_optim, zero_grad_and_learning_rate)
{
    rig r = rig_new(AG_F64, nn_sgd(0.1));
    set_grad(&r, G1);
    nn_optim_zero_grad(r.opt);
    cr_expect_eq(ag_get_grad(r.w, 0), 0);
    cr_expect_eq(ag_get_grad(r.w, 1), 0);
    cr_expect_eq(nn_optim_lr(r.opt), 0.1);
    cr_expect_eq(nn_optim_set_lr(r.opt, 0.5), AG_OK);
    cr_expect_eq(nn_optim_lr(r.opt), 0.5);
    cr_expect_eq(nn_optim_set_lr(r.opt, -1), AG_ERR_VALUE);
    cr_expect_eq(nn_optim_set_lr(r.opt, INFINITY), AG_ERR_VALUE);
    cr_expect_eq(nn_optim_lr(r.opt), 0.5, "a rejected rate is not kept");
    cr_expect_eq(nn_optim_set_lr(NULL, 1), AG_ERR_NULL);
    cr_expect(isnan(nn_optim_lr(NULL)));
    set_grad(&r, G1);
    cr_expect_eq(nn_optim_step(r.opt, NULL), AG_OK); /* θ1 = θ0 - 0.5·g1 = (0.75, -1.25) */
    cr_expect_float_eq(ag_get(r.w, 0), 0.75, 1e-15);
    cr_expect_float_eq(ag_get(r.w, 1), -1.25, 1e-15);
    nn_optim_free(r.opt);
    ag_tensor_free(r.w);
}

Test(nn_optim, step_schedule)
{
    nn_lr_schedule s = {.kind = NN_LR_STEP, .step_size = 10, .gamma = 0.5};
    cr_expect_float_eq(nn_lr_at(&s, 0.1, 0), 0.1, 1e-15);
    cr_expect_float_eq(nn_lr_at(&s, 0.1, 9), 0.1, 1e-15);
    cr_expect_float_eq(nn_lr_at(&s, 0.1, 10), 0.05, 1e-15);
    cr_expect_float_eq(nn_lr_at(&s, 0.1, 29), 0.025, 1e-15);
    cr_expect_float_eq(nn_lr_at(&s, 0.1, 30), 0.0125, 1e-15);
    s.step_size = 0;
    cr_expect_eq(nn_lr_at(&s, 0.1, 30), 0.1);
}

Test(nn_optim, cosine_and_constant_schedules)
{
    nn_lr_schedule s = {.kind = NN_LR_COSINE, .t_max = 10, .lr_min = 0.1};
    cr_expect_float_eq(nn_lr_at(&s, 1.1, 0), 1.1, 1e-15);
    cr_expect_float_eq(nn_lr_at(&s, 1.1, 5), 0.6, 1e-15, "halfway: the mean of 1.1 and 0.1");
    cr_expect_float_eq(nn_lr_at(&s, 1.1, 10), 0.1, 1e-15);
    cr_expect_float_eq(nn_lr_at(&s, 1.1, 20), 0.1, 1e-15, "stays at lr_min after t_max");
    /* t_max = 4, e = 1: cos(π/4) = √½, lr = 0.1 + (1.1 - 0.1)·(1 + √½)/2 */
    s.t_max = 4;
    cr_expect_float_eq(nn_lr_at(&s, 1.1, 1), 0.1 + (1 + sqrt(0.5)) / 2, 1e-15);
    nn_lr_schedule c = {.kind = NN_LR_CONSTANT};
    cr_expect_eq(nn_lr_at(&c, 0.3, 100), 0.3);
    cr_expect_eq(nn_lr_at(NULL, 0.3, 100), 0.3);
}

/* Optimizing an MLP's parameter list touches the whole block in one pass. */
Test(nn_optim, sgd_over_an_mlp_block)
{
    size_t sizes[] = {3, 4, 2};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F64, .seed = 2};
    nn_mlp *net;
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    size_t n, P = nn_mlp_param_count(net);
    const nn_param *params = nn_mlp_params(net, &n);
    nn_optim *opt;
    nn_optim_config c = nn_sgd(0.25);
    cr_assert_eq(nn_optim_new(&c, params, n, &opt, NULL), AG_OK);
    double *d = nn_mlp_data(net), *g = nn_mlp_grad(net), before[64];
    cr_assert_leq(P, 64);
    for (size_t i = 0; i < P; i++) {
        before[i] = d[i];
        g[i] = (double)i - 5;
    }
    cr_expect_eq(nn_optim_step(opt, NULL), AG_OK);
    for (size_t i = 0; i < P; i++)
        cr_expect_float_eq(d[i], before[i] - 0.25 * ((double)i - 5), 1e-14, "element %zu", i);
    nn_optim_free(opt);
    nn_mlp_free(net);
}

Test(nn_optim, steps_allocate_nothing_and_creation_failures_are_clean)
{
    size_t k;
    for (k = 1; k < 50; k++) {
        test_alloc a;
        test_alloc_install(&a, 0);
        ag_tensor *w = ag_zeros(AG_F32, AG_SHAPE(5));
        ag_set_requires_grad(w, true);
        nn_param p = {"w", w};
        nn_optim *o = NULL;
        nn_optim_config c = nn_adamw(0.01);
        a.fail_at = a.attempts + k; /* fail the k-th allocation of nn_optim_new */
        nn_error e;
        ag_status s = nn_optim_new(&c, &p, 1, &o, &e);
        bool failed = a.failed;
        a.fail_at = 0;
        if (s == AG_OK) {
            size_t before = a.attempts;
            for (int i = 0; i < 10; i++) {
                nn_optim_step(o, NULL);
                nn_optim_zero_grad(o);
            }
            ((float *)ag_grad(w))[3] = NAN;
            cr_expect_eq(nn_optim_step(o, &e), AG_ERR_NUMERIC, "%s", e.msg);
            cr_expect_eq(a.attempts, before, "a step, or a refused one, must not allocate");
        } else {
            cr_expect_eq(s, AG_ERR_NOMEM, "%s", e.msg);
            cr_expect_null(o);
        }
        nn_optim_free(o);
        ag_tensor_free(w);
        test_alloc_remove();
        cr_expect_eq(a.live_bytes, 0, "leak when failing allocation %zu", k);
        if (!failed)
            break;
    }
    cr_expect_gt(k, 1, "nn_optim_new allocates through the engine's hook");
}

/* ------------------------------------------- non-finite gradients, clipping */

/* The bits of w's values, to compare before and after a refused step. */
static void snapshot(const ag_tensor *w, double out[2])
{
    for (size_t i = 0; i < 2; i++)
        out[i] = ag_get(w, i);
}

Test(nn_optim, nonfinite_gradient_is_refused_and_changes_nothing)
{
    /* Adam: a good step with g1, a refused one, then g2: the result must be
     * the two-step Adam values of adam_bias_correction, so neither the
     * moments nor the step count moved. */
    rig r = rig_new(AG_F64, nn_adam(0.1));
    set_grad(&r, G1);
    cr_assert_eq(nn_optim_step(r.opt, NULL), AG_OK);
    double before[2], after[2];
    snapshot(r.w, before);
    const struct { double g[2]; const char *msg; } bad[] = {
        {{0.25, NAN}, "nn_optim_step: gradient of w has nan at element 1 of [2]; parameters left unchanged"},
        {{INFINITY, 0.75}, "gradient of w has inf at element 0 of [2]"},
        {{0.25, -INFINITY}, "gradient of w has -inf at element 1 of [2]"},
        {{NAN, INFINITY}, "has nan at element 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_grad(&r, bad[i].g);
        nn_error e;
        cr_expect_eq(nn_optim_step(r.opt, &e), AG_ERR_NUMERIC, "case %zu", i);
        cr_expect_eq(e.status, AG_ERR_NUMERIC);
        cr_expect(strstr(e.msg, bad[i].msg), "case %zu: '%s' lacks '%s'", i, e.msg, bad[i].msg);
        snapshot(r.w, after);
        cr_expect(memcmp(before, after, sizeof before) == 0, "case %zu: w changed", i);
        cr_expect_eq(nn_optim_steps(r.opt), 1, "case %zu: a refused step is not counted", i);
        cr_expect(!isfinite(nn_optim_grad_norm(r.opt)), "case %zu: the norm it measured", i);
    }
    set_grad(&r, G2);
    cr_assert_eq(nn_optim_step(r.opt, NULL), AG_OK);
    cr_expect_float_eq(ag_get(r.w, 0), 0.80678204047746238, 1e-14, "%.17g", ag_get(r.w, 0));
    cr_expect_float_eq(ag_get(r.w, 1), -1.8733662969252554, 1e-14, "%.17g", ag_get(r.w, 1));
    cr_expect_eq(nn_optim_steps(r.opt), 2);
    nn_optim_free(r.opt);
    ag_tensor_free(r.w);
}

Test(nn_optim, nonfinite_gradient_names_the_first_bad_parameter_of_a_model)
{
    size_t sizes[] = {3, 4, 2};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F32, .seed = 2};
    nn_mlp *net;
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    nn_optim *opt;
    nn_optim_config c = nn_sgd(0.1);
    c.momentum = 0.9;
    cr_assert_eq(nn_mlp_optim_new(net, &c, &opt, NULL), AG_OK);
    size_t P = nn_mlp_param_count(net); /* W1 12, b1 4, W2 8, b2 2 */
    cr_assert_eq(P, 26);
    float *d = nn_mlp_data(net), *g = nn_mlp_grad(net), before[26];
    memcpy(before, d, sizeof before);
    g[16 + 5] = NAN;  /* W2 [4,2], element 5 (row 2, column 1) */
    g[16 + 7] = NAN;  /* later in W2: not the one reported */
    g[24 + 1] = INFINITY; /* b2: after W2 */
    nn_error e;
    cr_expect_eq(nn_optim_step(opt, &e), AG_ERR_NUMERIC);
    cr_expect(strstr(e.msg, "gradient of W2 has nan at element 5 of [4,2]"), "%s", e.msg);
    cr_expect(memcmp(before, d, sizeof before) == 0, "no parameter moved");
    g[12 + 3] = -INFINITY; /* b1 comes before W2 in parameter order */
    cr_expect_eq(nn_optim_step(opt, &e), AG_ERR_NUMERIC);
    cr_expect(strstr(e.msg, "gradient of b1 has -inf at element 3 of [4]"), "%s", e.msg);
    cr_expect(memcmp(before, d, sizeof before) == 0, "no parameter moved");
    /* with every gradient finite again, the first step is a plain SGD step
     * (the momentum buffer is still 0: b = g) */
    for (size_t i = 0; i < P; i++)
        g[i] = 0.5f;
    cr_assert_eq(nn_optim_step(opt, &e), AG_OK, "%s", e.msg);
    for (size_t i = 0; i < P; i++)
        cr_expect_eq(d[i], (float)((double)before[i] - 0.05), "element %zu", i);
    nn_optim_free(opt);
    nn_mlp_free(net);
}

Test(nn_optim, allow_nonfinite_opts_out_of_the_check)
{
    nn_optim_config c = nn_sgd(0.1);
    c.allow_nonfinite = true;
    c.clip_norm = 1; /* not applied to a non-finite gradient */
    rig r = rig_new(AG_F64, c);
    set_grad(&r, (double[]){NAN, 1});
    nn_error e;
    cr_expect_eq(nn_optim_step(r.opt, &e), AG_OK, "%s", e.msg);
    cr_expect(isnan(ag_get(r.w, 0)), "the NaN went through");
    cr_expect_eq(ag_get(r.w, 1), -2.1, "θ = -2 - 0.1·1, unclipped");
    cr_expect_eq(ag_get_grad(r.w, 1), 1);
    cr_expect_eq(nn_optim_steps(r.opt), 1);
    cr_expect(isnan(nn_optim_grad_norm(r.opt)));
    nn_optim_free(r.opt);
    ag_tensor_free(r.w);
}

Test(nn_optim, clip_norm_scales_by_the_global_norm)
{
    /* One tensor a = (3) and one b = (4): the global norm is 5, not the
     * per-tensor norms 3 and 4. PyTorch's clip_grad_norm_(max_norm=1)
     * multiplies both by 1/(5 + 1e-6): (0.59999988, 0.79999984). */
    ag_tensor *a = ag_zeros(AG_F64, AG_SHAPE(1)), *b = ag_zeros(AG_F64, AG_SHAPE(1));
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    nn_param p[] = {{"a", a}, {"b", b}};
    nn_optim_config c = nn_sgd(0.1);
    c.clip_norm = 1;
    nn_optim *o;
    cr_assert_eq(nn_optim_new(&c, p, 2, &o, NULL), AG_OK);
    cr_expect(isnan(nn_optim_grad_norm(o)), "no step yet");
    ((double *)ag_grad(a))[0] = 3;
    ((double *)ag_grad(b))[0] = 4;
    cr_assert_eq(nn_optim_step(o, NULL), AG_OK);
    cr_expect_eq(nn_optim_grad_norm(o), 5, "the norm before clipping");
    double k = 1 / (5 + 1e-6);
    cr_expect_float_eq(ag_get_grad(a, 0), 0.59999988, 1e-8);
    cr_expect_float_eq(ag_get_grad(b, 0), 0.79999984, 1e-8);
    cr_expect_float_eq(ag_get_grad(a, 0), 3 * k, 1e-16, "the gradients are clipped in place");
    cr_expect_float_eq(ag_get(a, 0), -0.1 * 3 * k, 1e-16);
    cr_expect_float_eq(ag_get(b, 0), -0.1 * 4 * k, 1e-16);
    /* under the limit nothing is scaled: 0.3² + 0.4² = 0.25, norm 0.5 */
    ((double *)ag_grad(a))[0] = 0.3;
    ((double *)ag_grad(b))[0] = 0.4;
    cr_assert_eq(nn_optim_step(o, NULL), AG_OK);
    cr_expect_float_eq(nn_optim_grad_norm(o), 0.5, 1e-16);
    cr_expect_eq(ag_get_grad(a, 0), 0.3);
    cr_expect_eq(ag_get_grad(b, 0), 0.4);
    cr_expect_float_eq(ag_get(a, 0), -0.1 * 3 * k - 0.03, 1e-16);
    nn_optim_free(o);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(nn_optim, clip_norm_with_adam_in_f32)
{
    /* g = (3, 4) clipped to norm 2: ĝ = (1.2, 1.6)·5/(5 + 1e-6); Adam's first
     * step moves each θ by η·ĝ/(|ĝ| + ε), about η: the clipping must not
     * change its direction. */
    nn_optim_config c = nn_adam(0.1);
    c.clip_norm = 2;
    rig r = rig_new(AG_F32, c);
    set_grad(&r, (double[]){3, 4});
    cr_assert_eq(nn_optim_step(r.opt, NULL), AG_OK);
    double k = 2 / (5 + 1e-6);
    cr_expect_float_eq(ag_get_grad(r.w, 0), 3 * k, 1e-6);
    cr_expect_float_eq(ag_get_grad(r.w, 1), 4 * k, 1e-6);
    cr_expect_float_eq(ag_get(r.w, 0), 1 - 0.1 * 3 * k / (3 * k + 1e-8), 1e-6);
    cr_expect_float_eq(ag_get(r.w, 1), -2 - 0.1 * 4 * k / (4 * k + 1e-8), 1e-6);
    cr_expect_eq(nn_optim_grad_norm(r.opt), 5);
    nn_optim_free(r.opt);
    ag_tensor_free(r.w);
}

Test(nn_optim, grad_norm_matches_a_plain_sum_over_many_tensors)
{
    /* Three f32 tensors of 10000, 7 and 30001 elements (blocks that span
     * tensors, a partial last block); lr 0, so only the norm matters. */
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    size_t sizes[] = {10000, 7, 30001};
    ag_tensor *w[3];
    nn_param p[3];
    double ss = 0;
    for (size_t i = 0; i < 3; i++) {
        w[i] = ag_zeros(AG_F32, &sizes[i], 1);
        ag_set_requires_grad(w[i], true);
        p[i] = (nn_param){"w", w[i]};
        float *g = ag_grad(w[i]);
        for (size_t j = 0; j < sizes[i]; j++) {
            g[j] = (float)(ag_rng_uniform(&rng) * 2 - 1);
            ss += (double)g[j] * (double)g[j];
        }
    }
    nn_optim *o;
    nn_optim_config c = nn_sgd(0);
    c.clip_norm = 1e300; /* the norm is measured when clipping is on */
    cr_assert_eq(nn_optim_new(&c, p, 3, &o, NULL), AG_OK);
    cr_assert_eq(nn_optim_step(o, NULL), AG_OK);
    cr_expect_float_eq(nn_optim_grad_norm(o), sqrt(ss), 1e-12 * sqrt(ss), "%.17g vs %.17g",
                       nn_optim_grad_norm(o), sqrt(ss));
    nn_optim_free(o);
    for (size_t i = 0; i < 3; i++)
        ag_tensor_free(w[i]);
}

Test(nn_optim, huge_finite_f64_gradients_are_not_mistaken_for_inf)
{
    /* 1e200² overflows double, but the gradients are finite: the norm is
     * 1e200·√2 and clipping to 1 leaves (√½, √½). */
    nn_optim_config c = nn_sgd(0);
    c.clip_norm = 1;
    rig r = rig_new(AG_F64, c);
    set_grad(&r, (double[]){1e200, 1e200});
    nn_error e;
    cr_assert_eq(nn_optim_step(r.opt, &e), AG_OK, "%s", e.msg);
    cr_expect_float_eq(nn_optim_grad_norm(r.opt), 1e200 * sqrt(2), 1e186);
    cr_expect_float_eq(ag_get_grad(r.w, 0), sqrt(0.5), 1e-15);
    cr_expect_float_eq(ag_get_grad(r.w, 1), sqrt(0.5), 1e-15);
    nn_optim_free(r.opt);
    ag_tensor_free(r.w);
}

Test(nn_optim, mlp_optim_new_covers_every_parameter)
{
    size_t sizes[] = {3, 4, 2};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .dtype = AG_F64, .seed = 2};
    nn_mlp *net;
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    nn_optim *opt = (nn_optim *)&opt;
    nn_optim_config c = nn_sgd(1);
    nn_error e;
    cr_assert_eq(nn_mlp_optim_new(net, &c, &opt, &e), AG_OK, "%s", e.msg);
    size_t P = nn_mlp_param_count(net);
    double *d = nn_mlp_data(net), *g = nn_mlp_grad(net), before[26];
    cr_assert_eq(P, 26);
    for (size_t i = 0; i < P; i++) {
        before[i] = d[i];
        g[i] = 1;
    }
    cr_assert_eq(nn_optim_step(opt, NULL), AG_OK);
    for (size_t i = 0; i < P; i++)
        cr_expect_eq(d[i], before[i] - 1, "element %zu: every parameter is stepped", i);
    nn_optim_free(opt);
    opt = (nn_optim *)&opt;
    cr_expect_eq(nn_mlp_optim_new(NULL, &c, &opt, &e), AG_ERR_NULL);
    cr_expect(strstr(e.msg, "nn_mlp_optim_new: net is NULL"), "%s", e.msg);
    cr_expect_null(opt);
    cr_expect_eq(nn_mlp_optim_new(net, NULL, &opt, &e), AG_ERR_NULL);
    cr_expect_eq(nn_mlp_optim_new(net, &c, NULL, &e), AG_ERR_NULL);
    c.lr = -1;
    cr_expect_eq(nn_mlp_optim_new(net, &c, &opt, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "nn_mlp_optim_new: lr -1"), "%s", e.msg);
    cr_expect_null(opt);
    nn_mlp_free(net);
}

Test(nn_optim, parameter_names_are_copied)
{
    char name[8] = "temp";
    ag_tensor *w = ag_zeros(AG_F64, AG_SHAPE(1));
    ag_set_requires_grad(w, true);
    nn_param p = {name, w};
    nn_optim *o;
    nn_optim_config c = nn_sgd(1);
    cr_assert_eq(nn_optim_new(&c, &p, 1, &o, NULL), AG_OK);
    strcpy(name, "gone");
    ((double *)ag_grad(w))[0] = NAN;
    nn_error e;
    cr_expect_eq(nn_optim_step(o, &e), AG_ERR_NUMERIC);
    cr_expect(strstr(e.msg, "gradient of temp has nan"), "%s", e.msg);
    nn_optim_free(o);
    p.name = NULL;
    cr_assert_eq(nn_optim_new(&c, &p, 1, &o, NULL), AG_OK);
    cr_expect_eq(nn_optim_step(o, &e), AG_ERR_NUMERIC);
    cr_expect(strstr(e.msg, "gradient of a parameter has nan"), "%s", e.msg);
    nn_optim_free(o);
    ag_tensor_free(w);
}
