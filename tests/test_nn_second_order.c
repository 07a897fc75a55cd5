/* test_nn_second_order.c: a model's Hessian-vector product (nn_mlp_hvp)
 * against central differences of its gradient, and the gradient penalty
 * (nn_penalized_loss, nn_mlp_train_step_penalty) checked by gradcheck,
 * whose backward is a second derivative of the cost. */
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "autograd.h"
#include "nn.h"

static nn_mlp *model(nn_act hidden)
{
    static size_t sizes[] = {3, 4, 2};
    nn_act acts[] = {hidden, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = 5};
    nn_mlp *net = NULL;
    cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
    return net;
}

static void batch(ag_tensor **x, ag_tensor **y)
{
    ag_rng rng;
    ag_rng_seed(&rng, 17);
    *x = ag_rand_normal(AG_F64, AG_SHAPE(5, 3), 0, 1, &rng);
    *y = ag_rand_normal(AG_F64, AG_SHAPE(5, 2), 0, 1, &rng);
}

/* Every parameter's gradient at the model's current values, into g. */
static void gradient(nn_mlp *net, ag_tensor *x, ag_tensor *y, double *g)
{
    ag_tape *t = ag_tape_new();
    nn_mlp_zero_grad(net);
    cr_assert_eq(ag_backward(t, nn_loss(t, NN_COST_MSE, nn_mlp_forward(net, t, x, NULL, 0), y)), AG_OK);
    memcpy(g, nn_mlp_grad(net), nn_mlp_param_count(net) * sizeof(double));
    ag_tape_free(t);
}

Test(nn_second_order, hvp_matches_differences_of_the_gradient)
{
    const nn_act hidden[] = {NN_TANH, NN_SIGMOID, NN_GELU, NN_SILU, NN_ELU};
    for (size_t k = 0; k < sizeof hidden / sizeof hidden[0]; k++) {
        nn_mlp *net = model(hidden[k]);
        ag_tensor *x, *y;
        batch(&x, &y);
        size_t P = nn_mlp_param_count(net);
        double v[64], hv[64], up[64], down[64], eps = 1e-5;
        cr_assert_leq(P, 64);
        for (size_t i = 0; i < P; i++)
            v[i] = sin(1.0 + 3.0 * (double)i);
        ag_tape *t = ag_tape_new();
        nn_error err;
        cr_assert_eq(nn_mlp_hvp(net, t, NN_COST_MSE, x, y, v, hv, &err), AG_OK, "%s", err.msg);
        double *w = nn_mlp_data(net);
        for (size_t i = 0; i < P; i++)
            w[i] += eps * v[i];
        gradient(net, x, y, up);
        for (size_t i = 0; i < P; i++)
            w[i] -= 2 * eps * v[i];
        gradient(net, x, y, down);
        for (size_t i = 0; i < P; i++) {
            double numeric = (up[i] - down[i]) / (2 * eps);
            cr_assert(fabs(hv[i] - numeric) <= 1e-6 + 1e-5 * fabs(numeric),
                      "%s: element %zu: hvp %.12g, differences %.12g", nn_act_name(hidden[k]), i,
                      hv[i], numeric);
        }
        ag_tape_free(t);
        nn_mlp_free(net);
        ag_tensor_free(x);
        ag_tensor_free(y);
    }
}

typedef struct {
    nn_mlp *net;
    ag_tensor *x, *y;
    double lambda;
} penalty_case;

static ag_tensor *penalized(ag_tape *t, ag_tensor *const *params, void *ctx)
{
    (void)params; /* the model's own parameters */
    penalty_case *c = ctx;
    return nn_penalized_loss(c->net, t, NN_COST_MSE, c->x, c->y, c->lambda);
}

Test(nn_second_order, penalty_gradient_passes_gradcheck)
{
    const nn_act hidden[] = {NN_TANH, NN_SIGMOID, NN_SILU};
    for (size_t k = 0; k < sizeof hidden / sizeof hidden[0]; k++) {
        penalty_case c = {model(hidden[k]), NULL, NULL, 0.3};
        batch(&c.x, &c.y);
        size_t n;
        const nn_param *p = nn_mlp_params(c.net, &n);
        ag_tensor *params[4];
        for (size_t i = 0; i < n; i++)
            params[i] = p[i].tensor;
        ag_gradcheck_report rep;
        cr_assert_eq(ag_gradcheck(penalized, &c, n, params, 1e-6, 1e-8, 1e-5, &rep), AG_OK, "%s",
                     rep.message);
        cr_assert(rep.passed, "%s: input %zu element %zu: numeric %.12g, backward %.12g",
                  nn_act_name(hidden[k]), rep.worst_input, rep.worst_index, rep.numeric, rep.analytic);
        nn_mlp_free(c.net);
        ag_tensor_free(c.x);
        ag_tensor_free(c.y);
    }
}

Test(nn_second_order, penalty_step_with_lambda_zero_is_the_plain_step)
{
    nn_mlp *a = model(NN_TANH), *b = model(NN_TANH);
    ag_tensor *x, *y;
    batch(&x, &y);
    nn_optim *oa, *ob;
    nn_optim_config cfg = nn_adam(0.01);
    cr_assert_eq(nn_mlp_optim_new(a, &cfg, &oa, NULL), AG_OK);
    cr_assert_eq(nn_mlp_optim_new(b, &cfg, &ob, NULL), AG_OK);
    ag_tape *t = ag_tape_new();
    double la, lb, lp;
    for (int s = 0; s < 5; s++) {
        cr_assert_eq(nn_mlp_train_step(a, t, oa, NN_COST_MSE, x, y, &la, NULL), AG_OK);
        cr_assert_eq(nn_mlp_train_step_penalty(b, t, ob, NN_COST_MSE, x, y, 0, &lb, NULL), AG_OK);
        cr_assert_eq(la, lb);
    }
    cr_assert_eq(memcmp(nn_mlp_data(a), nn_mlp_data(b), nn_mlp_param_count(a) * sizeof(double)), 0);
    /* with a penalty the loss reported is the cost plus the penalty */
    cr_assert_eq(nn_mlp_train_step_penalty(b, t, ob, NN_COST_MSE, x, y, 10, &lp, NULL), AG_OK);
    cr_assert_gt(lp, lb);
    nn_error err;
    cr_assert_eq(nn_mlp_train_step_penalty(b, t, ob, NN_COST_MSE, x, y, -1, &lp, &err), AG_ERR_VALUE);
    cr_assert(strstr(err.msg, "lambda -1 must be finite and >= 0"), "%s", err.msg);
    ag_tape_free(t);
    nn_optim_free(oa);
    nn_optim_free(ob);
    nn_mlp_free(a);
    nn_mlp_free(b);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
