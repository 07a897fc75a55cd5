/* newton: logistic regression on the bundled breast-cancer data (569 cases,
 * 30 features, standardised) fitted by Newton's method, with the Hessian
 * from the engine (ag_hessian: the gradient of the recorded gradient).
 *
 *   L(w) = mean over rows of bce_with_logits(x·w, y) + λ/2 ‖w‖²
 *   w ← w − H⁻¹ ∇L     (H solved by Cholesky; λ makes the minimum unique:
 *                         the two classes are almost separable)
 *
 * Each step checks the engine's Hessian against the closed form
 * Xᵀ diag(p(1−p)) X / n + λI; at the end gradient descent, run long from
 * the same start, must reach the same weights. Exits 1 if the Hessian
 * disagrees, Newton does not converge, or the two fits differ.
 *
 * Usage: newton [--lambda X] [--gd-steps N]   (--help: defaults) */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { F = 31 }; /* 30 features and a constant 1 for the bias */

typedef struct {
    ag_tensor *X;  /* [n, F] standardised features, last column 1 */
    ag_tensor *y;  /* [n, 1] labels 0/1 */
    ag_tensor *w;  /* [F, 1], requires grad */
    size_t n;
    double lambda;
} problem;

static ag_tensor *loss(ag_tape *t, const problem *p)
{
    ag_tensor *fit = ag_bce_with_logits(t, ag_matmul(t, p->X, p->w), p->y);
    return ag_add(t, fit, ag_scale(t, ag_sum(t, ag_square(t, p->w)), p->lambda / 2));
}

/* Solves A d = b in place of b, A symmetric positive definite (F x F,
 * overwritten by its Cholesky factor). False if A is not. */
static bool cholesky_solve(double *A, double *b)
{
    for (int j = 0; j < F; j++) {
        double s = A[j * F + j];
        for (int k = 0; k < j; k++)
            s -= A[j * F + k] * A[j * F + k];
        if (!(s > 0))
            return false;
        A[j * F + j] = sqrt(s);
        for (int i = j + 1; i < F; i++) {
            double v = A[i * F + j];
            for (int k = 0; k < j; k++)
                v -= A[i * F + k] * A[j * F + k];
            A[i * F + j] = v / A[j * F + j];
        }
    }
    for (int i = 0; i < F; i++) { /* L z = b */
        for (int k = 0; k < i; k++)
            b[i] -= A[i * F + k] * b[k];
        b[i] /= A[i * F + i];
    }
    for (int i = F - 1; i >= 0; i--) { /* Lᵀ d = z */
        for (int k = i + 1; k < F; k++)
            b[i] -= A[k * F + i] * b[k];
        b[i] /= A[i * F + i];
    }
    return true;
}

/* The largest |H - (Xᵀ diag(p(1-p)) X / n + λI)| relative to max |H|. */
static double hessian_error(const problem *p, const double *H)
{
    const double *X = ag_data(p->X), *w = ag_data(p->w);
    static double C[F * F];
    memset(C, 0, sizeof C);
    for (size_t r = 0; r < p->n; r++) {
        double z = 0;
        for (int j = 0; j < F; j++)
            z += X[r * F + j] * w[j];
        double q = 1 / (1 + exp(-z)), s = q * (1 - q) / (double)p->n;
        for (int i = 0; i < F; i++)
            for (int j = 0; j < F; j++)
                C[i * F + j] += X[r * F + i] * s * X[r * F + j];
    }
    double worst = 0, scale = 0;
    for (int i = 0; i < F * F; i++) {
        double c = C[i] + (i % (F + 1) == 0 ? p->lambda : 0);
        worst = fmax(worst, fabs(H[i] - c));
        scale = fmax(scale, fabs(c));
    }
    return worst / scale;
}

/* One Newton step; *gnorm gets ‖∇L‖ before it. */
static ag_status newton_step(ag_tape *t, problem *p, double *L, double *gnorm, double *herr)
{
    ag_tape_reset(t);
    ag_tensor *l = loss(t, p), *g, *H;
    if (ag_gradients(t, l, 1, &p->w, &g, 0) != AG_OK || ag_hessian(t, l, p->w, &H) != AG_OK)
        return ag_tape_status(t);
    static double A[F * F], d[F];
    memcpy(A, ag_data(H), sizeof A);
    memcpy(d, ag_data(g), sizeof d);
    *L = ag_item(l);
    *gnorm = 0;
    for (int i = 0; i < F; i++)
        *gnorm += d[i] * d[i];
    *gnorm = sqrt(*gnorm);
    *herr = hessian_error(p, A);
    if (!cholesky_solve(A, d))
        return AG_ERR_NUMERIC;
    double *w = ag_data(p->w);
    for (int i = 0; i < F; i++)
        w[i] -= d[i];
    return AG_OK;
}

/* Plain gradient descent from w = 0 with the fused backward. */
static ag_status gradient_descent(ag_tape *t, problem *p, uint64_t steps, double lr, double *gnorm)
{
    memset(ag_data(p->w), 0, F * sizeof(double));
    for (uint64_t s = 0; s < steps; s++) {
        ag_tape_reset(t);
        ag_zero_grad(p->w);
        if (ag_backward(t, loss(t, p)) != AG_OK)
            return ag_tape_status(t);
        double *w = ag_data(p->w), *g = ag_grad(p->w);
        *gnorm = 0;
        for (int i = 0; i < F; i++) {
            *gnorm += g[i] * g[i];
            w[i] -= lr * g[i];
        }
        *gnorm = sqrt(*gnorm);
    }
    return AG_OK;
}

/* The data as a problem: standardised features and a column of ones. */
static ag_status load(problem *p, nn_dataset *d, nn_error *err)
{
    ag_status s = load_bundled_csv("breast_cancer.csv", AG_F64, d, err);
    if (s == AG_OK)
        s = nn_standardize(d->x, NULL, err);
    if (s != AG_OK)
        return s;
    p->n = d->n;
    p->X = ag_zeros(AG_F64, AG_SHAPE(d->n, F));
    p->y = ag_leaf_view(d->labels, 0, AG_SHAPE(d->n, 1));
    p->w = ag_zeros(AG_F64, AG_SHAPE(F, 1));
    if (!p->X || !p->y || !p->w || ag_set_requires_grad(p->w, true) != AG_OK) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return AG_ERR_NOMEM;
    }
    double *X = ag_data(p->X);
    const double *x = ag_data(d->x);
    for (size_t r = 0; r < d->n; r++) {
        memcpy(X + r * F, x + r * (F - 1), (F - 1) * sizeof(double));
        X[r * F + F - 1] = 1;
    }
    return AG_OK;
}

int main(int argc, char **argv)
{
    double lambda = 1e-2, lr = 1.0;
    uint64_t gd_steps = 4000;
    const flag_spec flags[] = {
        {"--lambda", FLAG_REAL, &lambda, 0, 1e3, true, "L2 weight λ (> 0: a unique minimum)"},
        {"--gd-steps", FLAG_UINT, &gd_steps, 1, 1e8, false, "gradient-descent steps to compare with"},
        {"--lr", FLAG_REAL, &lr, 0, 100, true, "gradient descent's step size"},
    };
    const cli_spec cli = {"newton", NULL,
                          "Fits logistic regression on the breast-cancer data by Newton's method "
                          "with the engine's Hessian; checks it against the closed form and "
                          "against gradient descent.",
                          flags, sizeof flags / sizeof flags[0], NULL, 0};
    parse_flags(argc, argv, &cli);
    problem p = {.lambda = lambda};
    nn_dataset d = {0};
    nn_error err = {0};
    ag_tape *t = ag_tape_new();
    if (!t || load(&p, &d, &err) != AG_OK) {
        fprintf(stderr, "newton: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    printf("logistic regression, %zu cases, %d weights, λ = %g: Newton's method\n", p.n, F, lambda);
    int status = 1;
    double L = 0, gnorm = INFINITY, herr = 0, worst_herr = 0;
    for (int step = 1; step <= 20 && gnorm > 1e-10; step++) {
        if (newton_step(t, &p, &L, &gnorm, &herr) != AG_OK) {
            fprintf(stderr, "newton: step %d: %s\n", step, ag_tape_error(t));
            goto done;
        }
        worst_herr = fmax(worst_herr, herr);
        printf("step %2d  loss %.12f  |grad| %.3e  Hessian vs closed form %.1e\n", step, L, gnorm, herr);
    }
    static double w_newton[F];
    memcpy(w_newton, ag_data(p.w), sizeof w_newton);
    double gd_norm = 0, diff = 0;
    if (gradient_descent(t, &p, gd_steps, lr, &gd_norm) != AG_OK) {
        fprintf(stderr, "newton: gradient descent: %s\n", ag_tape_error(t));
        goto done;
    }
    for (int i = 0; i < F; i++)
        diff = fmax(diff, fabs(w_newton[i] - ((double *)ag_data(p.w))[i]));
    printf("gradient descent, %llu steps of %g: |grad| %.3e, max |w_gd - w_newton| %.2e\n",
           (unsigned long long)gd_steps, lr, gd_norm, diff);
    bool ok = gnorm <= 1e-10 && worst_herr <= 1e-10 && diff <= 1e-6;
    printf("%s\n", ok ? "Newton converged; the Hessian matches its closed form; both fits agree"
                      : "FAILED: see above");
    status = ok ? 0 : 1;
done:
    ag_tape_free(t);
    ag_tensor_free(p.X);
    ag_tensor_free(p.y);
    ag_tensor_free(p.w);
    nn_dataset_free(&d);
    return status;
}
