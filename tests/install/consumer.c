/* A program as a user of the installed library writes it: the installed
 * header names, both libraries. It differentiates an expression with the
 * engine and fits a line with nn, and exits 1 unless both match what a
 * hand computation gives. tests/install/check.sh builds it three ways. */
#include <autograd/autograd.h>
#include <autograd/nn.h>

#include <math.h>
#include <stdio.h>

/* C = Σ x³ at x = (1, 2, 3): dC/dx = 3x² = (3, 12, 27). */
static int check_engine(void)
{
    const double want[] = {3, 12, 27};
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(3), (const double[]){1, 2, 3});
    ag_tape *t = ag_tape_new();
    int ok = x && t && ag_set_requires_grad(x, true) == AG_OK &&
             ag_backward(t, ag_sum(t, ag_pow(t, x, 3))) == AG_OK;
    if (!ok)
        fprintf(stderr, "consumer: engine: %s\n", t ? ag_tape_error(t) : "no tape");
    for (size_t i = 0; ok && i < 3; i++)
        if (fabs(ag_get_grad(x, i) - want[i]) > 1e-12) {
            fprintf(stderr, "consumer: dC/dx[%zu] = %.17g, want %g\n", i,
                    ag_get_grad(x, i), want[i]);
            ok = 0;
        }
    ag_tape_free(t);
    ag_tensor_free(x);
    return ok;
}

/* A 1-1 identity layer trained by SGD on y = 2x + 1 (no noise) must reach
 * W = 2, b = 1: with the inputs' variance 0.5 and lr 0.1 the error shrinks
 * by 0.9 (W) and 0.8 (b) a step, below 1e-20 after 500 steps. */
static int check_nn(void)
{
    const double xs[] = {-1, -0.5, 0, 0.5, 1}, ys[] = {-1, 0, 1, 2, 3};
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(5, 1), xs);
    ag_tensor *y = ag_from_data(AG_F64, AG_SHAPE(5, 1), ys);
    size_t sizes[] = {1, 1};
    nn_act acts[] = {NN_IDENTITY};
    nn_spec spec = {.n_layers = 1, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_NORMAL, .seed = 7};
    nn_optim_config sgd = nn_sgd(0.1);
    nn_error err = {0};
    nn_mlp *net = NULL;
    nn_optim *opt = NULL;
    ag_tape *t = ag_tape_new();
    int ok = x && y && t && nn_mlp_new(&spec, &net, &err) == AG_OK &&
             nn_mlp_optim_new(net, &sgd, &opt, &err) == AG_OK;
    for (int step = 0; ok && step < 500; step++)
        ok = nn_mlp_train_step(net, t, opt, NN_COST_MSE, x, y, NULL, &err) == AG_OK;
    if (!ok)
        fprintf(stderr, "consumer: nn: %s\n", err.msg);
    const double *wb = ok ? nn_mlp_data(net) : NULL; /* W1 then b1 */
    if (ok && (fabs(wb[0] - 2) > 1e-9 || fabs(wb[1] - 1) > 1e-9)) {
        fprintf(stderr, "consumer: fitted W = %.17g, b = %.17g, want 2 and 1\n", wb[0], wb[1]);
        ok = 0;
    }
    ag_tape_free(t);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return ok;
}

int main(void)
{
    int ok = check_engine();
    ok = check_nn() && ok;
    puts(ok ? "consumer: engine and nn agree with the hand computation" : "consumer: FAILED");
    return ok ? 0 : 1;
}
