/* test_ops_reduce.c: the second op set's reductions, normalisation and
 * losses: min_axis, prod_axis, var_axis, logsumexp, norm, argmax, argmin,
 * sum_axes, mean_axes, layer_norm, dropout, nll_loss, huber_loss. Gradcheck
 * in f64 (rank 3, every axis, with fan-out), forward values against plain
 * loops, stability, edge cases (ties, zeros, empty tensors, f32), every
 * error path, dropout's mask, out of memory, and the PyTorch cases of
 * tests/data/ops-more.txt for these ops. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_suite.h"
#include "autograd.h"
#include "optest.h"

static ag_rng rng;

static void seed_rng(void) { ag_rng_seed(&rng, 20240917); }

TestSuite(gradcheck_reduce, .init = seed_rng);
TestSuite(forward_reduce, .init = seed_rng);
TestSuite(errors_reduce);
TestSuite(dropout, .init = seed_rng);
TestSuite(reference_reduce);
ALLOC_SUITE(oom_reduce)

/* ------------------------------------------------------------ helpers */

/* An f64 tensor uniform in [lo, hi) of the given dimensions. */
#define U(lo, hi, ...) ot_uniform(&rng, AG_F64, AG_SHAPE(__VA_ARGS__), lo, hi, false)

static void assert_grads(const ag_tensor *x, const double *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(ag_get_grad(x, i) - want[i]) <= tol * (1 + fabs(want[i])), "grad [%zu] = %.17g, want %.17g",
                  i, ag_get_grad(x, i), want[i]);
}

typedef struct {
    ag_tensor *(*fa)(ag_tape *, ag_tensor *, int, bool);
    ag_tensor *(*fx)(ag_tape *, ag_tensor *, const int *, size_t, bool);
    int axis;
    bool keep;
    int axes[AG_MAX_RANK];
    size_t n_axes;
    double p;
    uint64_t seed;
    ag_tensor *c; /* a constant second operand (classes) */
} op_args;

static ag_tensor *apply_axis(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return a->fa(t, x[0], a->axis, a->keep);
}

static ag_tensor *apply_axes(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return a->fx(t, x[0], a->axes, a->n_axes, a->keep);
}

/* Every axis (and its negative twin) of x's shape, keepdim on and off. */
static void check_axis_op(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *, int, bool),
                          double lo, double hi)
{
    const int axes[] = {0, 1, 2, -1, -2, -3};
    for (size_t i = 0; i < 6; i++)
        for (int keep = 0; keep < 2; keep++) {
            op_args a = {.fa = f, .axis = axes[i], .keep = keep};
            char what[64];
            snprintf(what, sizeof what, "%s axis %d keepdim %d", name, axes[i], keep);
            ot_check_and_free(what, apply_axis, &a, 1, (ag_tensor *[]){U(lo, hi, 2, 3, 4)});
        }
    op_args a = {.fa = f, .axis = 0, .keep = false};
    char what[64];
    snprintf(what, sizeof what, "%s of a vector", name);
    ot_check_and_free(what, apply_axis, &a, 1, (ag_tensor *[]){U(lo, hi, 5)});
}

/* ------------------------------------------------------------ gradcheck */

Test(gradcheck_reduce, min_axis) { check_axis_op("min_axis", ag_min_axis, -1, 1); }
Test(gradcheck_reduce, prod_axis) { check_axis_op("prod_axis", ag_prod_axis, -1.5, 1.5); }
Test(gradcheck_reduce, var_axis) { check_axis_op("var_axis", ag_var_axis, -1, 1); }
Test(gradcheck_reduce, logsumexp) { check_axis_op("logsumexp", ag_logsumexp, -2, 2); }

Test(gradcheck_reduce, prod_axis_with_zeros_in_a_line)
{
    /* lines with one zero, two zeros, none: the gradient of a product is a
     * polynomial, smooth at 0, so finite differences see it exactly */
    const double v[12] = {0, 2, -1.5, 0.5, 0, 0, 3, 1.25, 1.5, -2, 0.75, 0};
    for (int axis = 0; axis < 2; axis++) {
        ag_tensor *x = ot_from(AG_F64, AG_SHAPE(3, 4), v);
        op_args a = {.fa = ag_prod_axis, .axis = axis, .keep = axis == 1};
        ot_check_and_free("prod_axis with zeros", apply_axis, &a, 1, &x);
    }
}

static ag_tensor *apply_norm(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_norm(t, x[0]);
}

Test(gradcheck_reduce, norm)
{
    ot_check_and_free("norm [2,3,4]", apply_norm, NULL, 1, (ag_tensor *[]){U(-1, 1, 2, 3, 4)});
    ot_check_and_free("norm [5]", apply_norm, NULL, 1, (ag_tensor *[]){U(-1, 1, 5)});
    ot_check_and_free("norm of a scalar", apply_norm, NULL, 1,
                      (ag_tensor *[]){ot_uniform(&rng, AG_F64, NULL, 0, 0.5, 1, false)});
}

static void check_axes(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *, const int *, size_t, bool),
                       const size_t *shape, size_t rank, const int *axes, size_t n)
{
    for (int keep = 0; keep < 2; keep++) {
        op_args a = {.fx = f, .keep = keep, .n_axes = n};
        if (n)
            memcpy(a.axes, axes, n * sizeof *axes);
        char what[96];
        snprintf(what, sizeof what, "%s of %zu axes (first %d) keepdim %d", name, n, n ? axes[0] : 0, keep);
        ag_tensor *x = ot_uniform(&rng, AG_F64, shape, rank, -1, 1, false);
        ot_check_and_free(what, apply_axes, &a, 1, &x);
    }
}

static void check_axes_op(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *, const int *, size_t, bool))
{
    check_axes(name, f, AG_SHAPE(2, 3, 4), (int[]){0, 2}, 2);
    check_axes(name, f, AG_SHAPE(2, 3, 4), (int[]){2, 0}, 2);
    check_axes(name, f, AG_SHAPE(2, 3, 4), (int[]){-1, -2}, 2);
    check_axes(name, f, AG_SHAPE(2, 3, 4), (int[]){1}, 1);
    check_axes(name, f, AG_SHAPE(2, 3, 4), (int[]){0, 1, 2}, 3);
    check_axes(name, f, AG_SHAPE(2, 3, 4), NULL, 0);
    check_axes(name, f, AG_SHAPE(2, 1, 3, 4, 2), (int[]){1, 3, 4}, 3);
    check_axes(name, f, AG_SHAPE(2, 1, 3, 4, 2), (int[]){0, 2}, 2);
    check_axes(name, f, AG_SHAPE(3, 2, 1, 2, 1, 2, 1, 2), (int[]){0, 2, 3, 6}, 4);
}

Test(gradcheck_reduce, sum_axes) { check_axes_op("sum_axes", ag_sum_axes); }
Test(gradcheck_reduce, mean_axes) { check_axes_op("mean_axes", ag_mean_axes); }

static ag_tensor *apply_layer_norm(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_layer_norm(t, x[0], ((op_args *)ctx)->p);
}

/* layer_norm with the affine part a user adds: γ x̂ + β */
static ag_tensor *apply_layer_norm_affine(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_add(t, ag_mul(t, ag_layer_norm(t, x[0], ((op_args *)ctx)->p), x[1]), x[2]);
}

Test(gradcheck_reduce, layer_norm)
{
    op_args a = {.p = 1e-5};
    ot_check_and_free("layer_norm [4,6]", apply_layer_norm, &a, 1, (ag_tensor *[]){U(-2, 2, 4, 6)});
    ot_check_and_free("layer_norm [2,3,5]", apply_layer_norm, &a, 1, (ag_tensor *[]){U(-2, 2, 2, 3, 5)});
    ot_check_and_free("layer_norm [7]", apply_layer_norm, &a, 1, (ag_tensor *[]){U(-2, 2, 7)});
    op_args b = {.p = 0.5};
    ot_check_and_free("layer_norm eps 0.5", apply_layer_norm, &b, 1, (ag_tensor *[]){U(-1, 1, 3, 4)});
    ot_check_and_free("layer_norm [3,1]", apply_layer_norm, &b, 1, (ag_tensor *[]){U(-1, 1, 3, 1)});
    ot_check_and_free("layer_norm with γ, β", apply_layer_norm_affine, &a, 3,
                   (ag_tensor *[]){U(-2, 2, 2, 3, 5), U(0.5, 2, 5), U(-1, 1, 5)});
}

static ag_tensor *apply_dropout(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    ag_rng r; /* the same mask every call */
    ag_rng_seed(&r, a->seed);
    return ag_dropout(t, x[0], a->p, a->keep, &r);
}

Test(gradcheck_reduce, dropout)
{
    op_args a = {.p = 0.3, .keep = true, .seed = 11};
    ot_check_and_free("dropout p 0.3 [4,5]", apply_dropout, &a, 1, (ag_tensor *[]){U(-1, 1, 4, 5)});
    ot_check_and_free("dropout p 0.3 [2,3,4]", apply_dropout, &a, 1, (ag_tensor *[]){U(-1, 1, 2, 3, 4)});
    op_args b = {.p = 0.5, .keep = false};
    ot_check_and_free("dropout off", apply_dropout, &b, 1, (ag_tensor *[]){U(-1, 1, 2, 3, 4)});
    op_args c = {.p = 0, .keep = true};
    ot_check_and_free("dropout p 0", apply_dropout, &c, 1, (ag_tensor *[]){U(-1, 1, 2, 3)});
}

static ag_tensor *apply_nll(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_nll_loss(t, x[0], ((op_args *)ctx)->c);
}

static ag_tensor *apply_nll_of_log_softmax(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_nll_loss(t, ag_log_softmax(t, x[0], 1), ((op_args *)ctx)->c);
}

Test(gradcheck_reduce, nll_loss)
{
    op_args a = {.c = ot_from(AG_F64, AG_SHAPE(5), (double[]){2, 0, 3, 3, 1})};
    ot_check_and_free("nll_loss", apply_nll, &a, 1, (ag_tensor *[]){U(-3, 0, 5, 4)});
    ot_check_and_free("nll_loss of log_softmax", apply_nll_of_log_softmax, &a, 1, (ag_tensor *[]){U(-2, 2, 5, 4)});
    ag_tensor_free(a.c);
}

static ag_tensor *apply_huber(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_huber_loss(t, x[0], x[1], ((op_args *)ctx)->p);
}

/* a and y with |a - y| at least 0.05 away from delta, the kink */
static void huber_pair(double delta, ag_tensor **a, ag_tensor **y)
{
    *a = U(-2, 2, 3, 4);
    *y = U(-2, 2, 3, 4);
    double *av = ag_data(*a), *yv = ag_data(*y);
    for (size_t i = 0; i < 12; i++)
        if (fabs(fabs(av[i] - yv[i]) - delta) < 0.05)
            av[i] += av[i] > yv[i] ? 0.1 : -0.1;
}

Test(gradcheck_reduce, huber_loss_both_operands)
{
    const double deltas[] = {1, 0.3, 2.5};
    for (size_t k = 0; k < 3; k++) {
        op_args args = {.p = deltas[k]};
        ag_tensor *in[2];
        huber_pair(deltas[k], &in[0], &in[1]);
        ot_check_and_free("huber_loss", apply_huber, &args, 2, in);
    }
}

/* ------------------------------------------------------------ forward values */

Test(forward_reduce, min_axis_values_shapes_and_first_minimum_on_ties)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2, 3), (double[]){1, -3, -3, 2, 2, 5});
    ag_tape *t = ag_tape_new();
    ag_tensor *m = ag_min_axis(t, x, 1, false);
    ot_assert_shape(m, AG_SHAPE(2));
    ot_assert_values(m, (double[]){-3, 2}, 2, 0);
    ot_assert_shape(ag_min_axis(t, x, -1, true), AG_SHAPE(2, 1));
    ot_assert_values(ag_min_axis(t, x, 0, false), (double[]){1, -3, -3}, 3, 0);
    cr_assert_eq(ag_backward(t, ag_sum(t, m)), AG_OK, "%s", ag_tape_error(t));
    assert_grads(x, (double[]){0, 1, 0, 1, 0, 0}, 6, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, min_axis_and_argmin_see_nan_as_the_minimum)
{
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(4), (double[]){1, NAN, -5, 2});
    ag_tape *t = ag_tape_new();
    ot_assert_values(ag_min_axis(t, x, 0, false), (double[]){NAN}, 1, 0);
    ot_assert_values(ag_argmin(t, x, 0, false), (double[]){1}, 1, 0);
    ot_assert_values(ag_argmax(t, x, 0, false), (double[]){1}, 1, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, argmax_argmin_in_both_dtypes_and_never_recorded)
{
    const double v[24] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4};
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F32 : AG_F64;
        ag_tensor *x = ot_leaf(dt, AG_SHAPE(2, 3, 4), v);
        ag_tape *t = ag_tape_new();
        /* plain loops: the first extreme along axis 1 */
        double want_max[8], want_min[8];
        for (size_t o = 0; o < 2; o++)
            for (size_t i = 0; i < 4; i++) {
                size_t bmax = 0, bmin = 0;
                for (size_t k = 1; k < 3; k++) {
                    double e = v[(o * 3 + k) * 4 + i];
                    bmax = e > v[(o * 3 + bmax) * 4 + i] ? k : bmax;
                    bmin = e < v[(o * 3 + bmin) * 4 + i] ? k : bmin;
                }
                want_max[o * 4 + i] = (double)bmax;
                want_min[o * 4 + i] = (double)bmin;
            }
        ag_tensor *am = ag_argmax(t, x, 1, false), *an = ag_argmin(t, x, -2, true);
        ot_assert_shape(am, AG_SHAPE(2, 4));
        ot_assert_shape(an, AG_SHAPE(2, 1, 4));
        cr_assert_eq(ag_tensor_dtype(am), dt);
        ot_assert_values(am, want_max, 8, 0);
        ot_assert_values(an, want_min, 8, 0);
        cr_assert_not(ag_requires_grad(am));
        cr_assert_not(ag_requires_grad(an));
        cr_assert_eq(ag_tape_size(t), 0, "an index op was recorded");
        /* rows of 4: [3 1 4 1] [5 9 2 6] [5 3 5 8] [9 7 9 3] [2 3 8 4] [6 2 6 4] */
        ot_assert_values(ag_argmax(t, x, 2, false), (double[]){2, 1, 3, 0, 2, 0}, 6, 0);
        ot_assert_values(ag_argmin(t, x, 2, false), (double[]){1, 2, 1, 3, 0, 1}, 6, 0);
        /* the index has no gradient: backward from it is refused */
        cr_assert_eq(ag_backward(t, ag_sum(t, am)), AG_ERR_STATE);
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

Test(forward_reduce, prod_axis_gradient_with_zeros_is_exact)
{
    /* rows: [2 0 3]: grad [0 6 0]; [0 5 0]: all 0; [2 -1 4]: [-4 8 -2] */
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(3, 3), (double[]){2, 0, 3, 0, 5, 0, 2, -1, 4});
    ag_tape *t = ag_tape_new();
    ag_tensor *p = ag_prod_axis(t, x, 1, false);
    ot_assert_values(p, (double[]){0, 0, -8}, 3, 0);
    cr_assert_eq(ag_backward(t, ag_sum(t, p)), AG_OK, "%s", ag_tape_error(t));
    assert_grads(x, (double[]){0, 6, 0, 0, 0, 0, -4, 8, -2}, 9, 0);
    for (size_t i = 0; i < 9; i++)
        cr_assert(!isnan(ag_get_grad(x, i)), "grad %zu is NaN", i);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, prod_var_logsumexp_match_plain_loops_in_f64_and_f32)
{
    ag_tensor *x64 = U(-1.5, 1.5, 2, 3, 4);
    const double *v = ag_data(x64);
    ag_tensor *x32 = ot_from(AG_F32, AG_SHAPE(2, 3, 4), v);
    double prod[8], var[8], lse[8];
    for (size_t o = 0; o < 2; o++)
        for (size_t i = 0; i < 4; i++) {
            double p = 1, s = 0, q = 0, e = 0;
            for (size_t k = 0; k < 3; k++) {
                double a = v[(o * 3 + k) * 4 + i];
                p *= a;
                s += a;
                e += exp(a);
            }
            for (size_t k = 0; k < 3; k++)
                q += pow(v[(o * 3 + k) * 4 + i] - s / 3, 2);
            prod[o * 4 + i] = p;
            var[o * 4 + i] = q / 3;
            lse[o * 4 + i] = log(e);
        }
    for (int d = 0; d < 2; d++) {
        ag_tensor *x = d ? x32 : x64;
        double tol = d ? 1e-6 : 1e-14;
        ag_tape *t = ag_tape_new();
        ot_assert_values(ag_prod_axis(t, x, 1, false), prod, 8, tol);
        ot_assert_values(ag_var_axis(t, x, 1, true), var, 8, tol);
        ot_assert_shape(ag_var_axis(t, x, 1, true), AG_SHAPE(2, 1, 4));
        ot_assert_values(ag_logsumexp(t, x, -2, false), lse, 8, tol);
        ag_tape_free(t);
    }
    /* var of 1 2 3 4 is 1.25 (population), not 5/3 */
    ag_tensor *y = ot_from(AG_F64, AG_SHAPE(4), (double[]){1, 2, 3, 4});
    ag_tape *t = ag_tape_new();
    ot_assert_values(ag_var_axis(t, y, 0, false), (double[]){1.25}, 1, 0);
    ag_tape_free(t);
    ag_tensor_free(y);
    ag_tensor_free(x64);
    ag_tensor_free(x32);
}

Test(forward_reduce, var_axis_does_not_cancel_for_a_large_offset)
{
    /* 1e8 + {1,2,3,4}: a one-pass E[x²] - E[x]² loses every digit */
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(4), (double[]){1e8 + 1, 1e8 + 2, 1e8 + 3, 1e8 + 4});
    ag_tape *t = ag_tape_new();
    ot_assert_values(ag_var_axis(t, x, 0, false), (double[]){1.25}, 1, 1e-12);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, sum_axes_and_mean_axes_match_repeated_sum_axis)
{
    ag_tensor *x = U(-1, 1, 2, 3, 4, 5);
    ag_tape *t = ag_tape_new();
    /* axes {1, 3}: sum_axis over 3 then over 1 */
    ag_tensor *ref = ag_sum_axis(t, ag_sum_axis(t, x, 3, false), 1, false);
    ag_tensor *s = ag_sum_axes(t, x, (int[]){3, -3}, 2, false);
    ot_assert_shape(s, AG_SHAPE(2, 4));
    ot_assert_values(s, ag_data(ref), 8, 1e-14);
    ag_tensor *sk = ag_sum_axes(t, x, (int[]){1, 3}, 2, true);
    ot_assert_shape(sk, AG_SHAPE(2, 1, 4, 1));
    ot_assert_values(sk, ag_data(ref), 8, 1e-14);
    ag_tensor *m = ag_mean_axes(t, x, (int[]){1, 3}, 2, false);
    double want[8];
    for (size_t i = 0; i < 8; i++)
        want[i] = ag_get(ref, i) / 15;
    ot_assert_values(m, want, 8, 1e-14);
    /* all axes: the total, keeping rank 4 with keepdim */
    ag_tensor *all = ag_sum_axes(t, x, (int[]){0, 1, 2, 3}, 4, true);
    ot_assert_shape(all, AG_SHAPE(1, 1, 1, 1));
    ot_assert_values(all, (double[]){ag_item(ag_sum(t, x))}, 1, 1e-13);
    /* no axes: nothing reduced, as numpy's axis=() */
    ag_tensor *none = ag_mean_axes(t, x, NULL, 0, false);
    ot_assert_shape(none, AG_SHAPE(2, 3, 4, 5));
    ot_assert_values(none, ag_data(x), 120, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, sum_axes_in_f32)
{
    ag_tensor *x = ot_from(AG_F32, AG_SHAPE(2, 2, 3), (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
    ag_tape *t = ag_tape_new();
    /* over axes 0 and 2: rows {1 2 3 7 8 9} = 30 and {4 5 6 10 11 12} = 48 */
    ot_assert_values(ag_sum_axes(t, x, (int[]){0, 2}, 2, false), (double[]){30, 48}, 2, 0);
    ot_assert_values(ag_mean_axes(t, x, (int[]){0, 2}, 2, false), (double[]){5, 8}, 2, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, norm_values_and_its_gradient_at_zero)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2), (double[]){3, -4});
    ag_tensor *z = ot_leaf(AG_F32, AG_SHAPE(3), (double[]){0, 0, 0});
    ag_tape *t = ag_tape_new();
    ag_tensor *n = ag_norm(t, x);
    ot_assert_shape(n, NULL, 0);
    ot_assert_values(n, (double[]){5}, 1, 0);
    cr_assert_eq(ag_backward(t, n), AG_OK);
    assert_grads(x, (double[]){0.6, -0.8}, 2, 1e-15);
    ag_tensor *nz = ag_norm(t, z);
    ot_assert_values(nz, (double[]){0}, 1, 0);
    cr_assert_eq(ag_backward(t, nz), AG_OK);
    assert_grads(z, (double[]){0, 0, 0}, 3, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(z);
}

Test(forward_reduce, layer_norm_rows_have_mean_0_and_variance_1)
{
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F32 : AG_F64;
        ag_tensor *x64 = U(-3, 5, 3, 4, 8);
        ag_tensor *x = ot_from(dt, AG_SHAPE(3, 4, 8), ag_data(x64));
        ag_tape *t = ag_tape_new();
        ag_tensor *y = ag_layer_norm(t, x, 0);
        ot_assert_shape(y, AG_SHAPE(3, 4, 8));
        for (size_t row = 0; row < 12; row++) {
            double s = 0, q = 0;
            for (size_t k = 0; k < 8; k++)
                s += ag_get(y, row * 8 + k);
            for (size_t k = 0; k < 8; k++)
                q += pow(ag_get(y, row * 8 + k) - s / 8, 2);
            cr_assert(fabs(s / 8) < (d ? 1e-6 : 1e-14), "row %zu mean %g", row, s / 8);
            cr_assert(fabs(q / 8 - 1) < (d ? 1e-6 : 1e-14), "row %zu var %g", row, q / 8);
        }
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(x64);
    }
}

Test(forward_reduce, layer_norm_with_a_large_offset_and_constant_rows)
{
    /* 1e8 + {-1, 0, 1}: mean 1e8, var 2/3 -> ±sqrt(1.5), 0 */
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(2, 3), (double[]){1e8 - 1, 1e8, 1e8 + 1, 7, 7, 7});
    ag_tape *t = ag_tape_new();
    double r = sqrt(1.5);
    /* a constant row: var 0, x - mean = 0, so 0 (eps keeps it finite) */
    ot_assert_values(ag_layer_norm(t, x, 1e-5), (double[]){-r, 0, r, 0, 0, 0}, 6, 1e-5);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward_reduce, nll_loss_and_huber_loss_values)
{
    ag_tensor *lp = ot_leaf(AG_F64, AG_SHAPE(2, 3), (double[]){-1, -2, -3, -0.5, -0.25, -4});
    ag_tensor *c = ot_from(AG_F32, AG_SHAPE(2), (double[]){2, 1});
    ag_tape *t = ag_tape_new();
    ag_tensor *L = ag_nll_loss(t, lp, c); /* (3 + 0.25) / 2 */
    ot_assert_values(L, (double[]){1.625}, 1, 0);
    cr_assert_eq(ag_backward(t, L), AG_OK);
    assert_grads(lp, (double[]){0, 0, -0.5, 0, -0.5, 0}, 6, 0);
    ag_tape_free(t);
    /* d = a - y = {0.5, -3, 1, 2} with delta 1: 0.125, 2.5, 0.5, 1.5 -> mean 1.15625 */
    ag_tensor *a = ot_leaf(AG_F64, AG_SHAPE(4), (double[]){1, -1, 3, 0});
    ag_tensor *y = ot_leaf(AG_F64, AG_SHAPE(4), (double[]){0.5, 2, 2, -2});
    t = ag_tape_new();
    ag_tensor *H = ag_huber_loss(t, a, y, 1);
    ot_assert_values(H, (double[]){1.15625}, 1, 0);
    cr_assert_eq(ag_backward(t, H), AG_OK);
    /* slopes 0.5, -1, 1, 1 (|d| = delta is the linear side), over 4 */
    assert_grads(a, (double[]){0.125, -0.25, 0.25, 0.25}, 4, 0);
    assert_grads(y, (double[]){-0.125, 0.25, -0.25, -0.25}, 4, 0);
    ag_tape_free(t);
    ag_tensor_free(lp);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(y);
}

/* ------------------------------------------------------------ stability */

Test(forward_reduce, logsumexp_at_plus_minus_1000_and_infinities)
{
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F32 : AG_F64;
        ag_tensor *x = ot_leaf(dt, AG_SHAPE(3, 2), (double[]){1000, 1000, -1000, -1000, 1000, -1000});
        ag_tape *t = ag_tape_new();
        ag_tensor *y = ag_logsumexp(t, x, 1, false);
        ot_assert_values(y, (double[]){1000 + log(2.0), -1000 + log(2.0), 1000}, 3, d ? 1e-7 : 1e-15);
        cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK);
        /* x - y = 1000 - (1000 + ln 2) carries the rounding of 1000 + ln 2:
         * an ulp of 1000 is 1e-13 in f64, 6e-5 in f32 */
        assert_grads(x, (double[]){0.5, 0.5, 0.5, 0.5, 1, 0}, 6, d ? 1e-4 : 1e-13);
        ag_tape_free(t);
        ag_tensor_free(x);
    }
    ag_tensor *inf = ot_from(AG_F64, AG_SHAPE(2, 2), (double[]){-INFINITY, -INFINITY, INFINITY, 0});
    ag_tape *t = ag_tape_new();
    ot_assert_values(ag_logsumexp(t, inf, 1, false), (double[]){-INFINITY, INFINITY}, 2, 0);
    ag_tape_free(t);
    ag_tensor_free(inf);
}

Test(forward_reduce, norm_neither_overflows_nor_underflows)
{
    ag_tensor *big = ot_leaf(AG_F64, AG_SHAPE(2), (double[]){3e200, -4e200});
    ag_tensor *tiny = ot_leaf(AG_F64, AG_SHAPE(2), (double[]){3e-200, 4e-200});
    ag_tensor *big32 = ot_leaf(AG_F32, AG_SHAPE(2), (double[]){3e30, 4e30});
    ag_tensor *sub = ot_from(AG_F64, AG_SHAPE(1), (double[]){4.9e-324});
    ag_tape *t = ag_tape_new();
    ag_tensor *nb = ag_norm(t, big);
    ot_assert_values(nb, (double[]){5e200}, 1, 1e-15);
    cr_assert_eq(ag_backward(t, nb), AG_OK);
    assert_grads(big, (double[]){0.6, -0.8}, 2, 1e-15);
    ot_assert_values(ag_norm(t, tiny), (double[]){5e-200}, 1, 1e-15);
    cr_assert(fabs(ag_item(ag_norm(t, tiny)) / 5e-200 - 1) < 1e-15);
    ot_assert_values(ag_norm(t, big32), (double[]){5e30}, 1, 1e-7);
    cr_assert(fabs(ag_item(ag_norm(t, big32)) / 5e30 - 1) < 1e-6);
    cr_assert_eq(ag_item(ag_norm(t, sub)), 4.9e-324);
    ag_tensor *inf = ot_from(AG_F64, AG_SHAPE(2), (double[]){INFINITY, 1});
    ag_tensor *nan = ot_from(AG_F64, AG_SHAPE(3), (double[]){INFINITY, NAN, 1});
    cr_assert(isinf(ag_item(ag_norm(t, inf))));
    cr_assert(isnan(ag_item(ag_norm(t, nan))));
    ag_tape_free(t);
    ag_tensor_free(big);
    ag_tensor_free(tiny);
    ag_tensor_free(big32);
    ag_tensor_free(sub);
    ag_tensor_free(inf);
    ag_tensor_free(nan);
}

/* ------------------------------------------------------------ empty tensors */

Test(forward_reduce, empty_axes_and_empty_tensors)
{
    ag_tensor *e = ag_zeros(AG_F64, AG_SHAPE(0, 3));
    ag_set_requires_grad(e, true);
    ag_tape *t = ag_tape_new();
    /* reductions over an empty axis: PyTorch's identities */
    ot_assert_values(ag_sum_axes(t, e, (int[]){0}, 1, false), (double[]){0, 0, 0}, 3, 0);
    ot_assert_values(ag_mean_axes(t, e, (int[]){0}, 1, false), (double[]){NAN, NAN, NAN}, 3, 0);
    ot_assert_values(ag_prod_axis(t, e, 0, false), (double[]){1, 1, 1}, 3, 0);
    ot_assert_values(ag_logsumexp(t, e, 0, false), (double[]){-INFINITY, -INFINITY, -INFINITY}, 3, 0);
    ot_assert_values(ag_var_axis(t, e, 0, false), (double[]){NAN, NAN, NAN}, 3, 0);
    ot_assert_values(ag_norm(t, e), (double[]){0}, 1, 0);
    /* over a non-empty axis of an empty tensor: an empty result */
    ot_assert_shape(ag_min_axis(t, e, 1, false), AG_SHAPE(0));
    ot_assert_shape(ag_argmax(t, e, 1, true), AG_SHAPE(0, 1));
    ot_assert_shape(ag_layer_norm(t, e, 1e-5), AG_SHAPE(0, 3));
    ot_assert_shape(ag_dropout(t, e, 0.5, true, &rng), AG_SHAPE(0, 3));
    ag_tensor *s = ag_add(t, ag_sum(t, ag_prod_axis(t, e, 0, false)), ag_norm(t, e));
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_tape_status(t), AG_OK, "%s", ag_tape_error(t));
    /* the empty [0] layer norm: the last axis empty */
    ag_tensor *e0 = ag_zeros(AG_F32, AG_SHAPE(2, 0));
    ot_assert_shape(ag_layer_norm(t, e0, 1e-5), AG_SHAPE(2, 0));
    ot_assert_values(ag_sum_axes(t, e0, (int[]){1}, 1, false), (double[]){0, 0}, 2, 0);
    cr_assert_eq(ag_tape_status(t), AG_OK, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(e);
    ag_tensor_free(e0);
}

/* ------------------------------------------------------------ errors */

Test(errors_reduce, axis_out_of_range_and_empty_axis)
{
    ag_tensor *x = U(-1, 1, 2, 3);
    ag_tensor *e = ag_zeros(AG_F64, AG_SHAPE(2, 0));
    ag_tensor *(*const fs[])(ag_tape *, ag_tensor *, int, bool) = {
        ag_min_axis, ag_prod_axis, ag_var_axis, ag_logsumexp, ag_argmax, ag_argmin};
    const char *names[] = {"ag_min_axis", "ag_prod_axis", "ag_var_axis", "ag_logsumexp", "ag_argmax", "ag_argmin"};
    for (size_t k = 0; k < 6; k++) {
        ag_tape *t = ag_tape_new();
        cr_assert_null(fs[k](t, x, 2, false));
        ot_assert_error(t, AG_ERR_VALUE, names[k], "axis 2 is out of range for [2,3]");
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, x, -3, true));
        ot_assert_error(t, AG_ERR_VALUE, names[k], "axis -3");
        ag_tape_free(t);
    }
    /* an extreme or its index over an empty axis has no value */
    ag_tensor *(*const ex[])(ag_tape *, ag_tensor *, int, bool) = {ag_min_axis, ag_argmax, ag_argmin};
    for (size_t k = 0; k < 3; k++) {
        ag_tape *t = ag_tape_new();
        cr_assert_null(ex[k](t, e, 1, false));
        ot_assert_error(t, AG_ERR_SHAPE, "[2,0]: axis 1 is empty", NULL);
        ag_tape_free(t);
    }
    ag_tensor_free(x);
    ag_tensor_free(e);
}

Test(errors_reduce, sum_axes_bad_axes)
{
    ag_tensor *x = U(-1, 1, 2, 3, 4);
    ag_tensor *(*const fs[])(ag_tape *, ag_tensor *, const int *, size_t, bool) = {ag_sum_axes, ag_mean_axes};
    const char *names[] = {"ag_sum_axes", "ag_mean_axes"};
    for (size_t k = 0; k < 2; k++) {
        ag_tape *t = ag_tape_new();
        cr_assert_null(fs[k](t, x, (int[]){0, -3}, 2, false));
        ot_assert_error(t, AG_ERR_VALUE, names[k], "axis -3 is repeated (axis 0 of [2,3,4])");
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, x, (int[]){1, 1}, 2, true));
        ot_assert_error(t, AG_ERR_VALUE, "axis 1 is repeated", NULL);
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, x, (int[]){0, 3}, 2, false));
        ot_assert_error(t, AG_ERR_VALUE, names[k], "axis 3 is out of range for [2,3,4]");
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, x, (int[]){-4}, 1, false));
        ot_assert_error(t, AG_ERR_VALUE, "axis -4 is out of range", NULL);
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, x, NULL, 2, false));
        ot_assert_error(t, AG_ERR_NULL, names[k], "axes is NULL");
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, x, (int[]){0, 1, 2, 0, 1, 2, 0, 1, 2}, 9, false));
        ot_assert_error(t, AG_ERR_VALUE, names[k], "9 axes");
        ag_tape_reset(t);
        cr_assert_null(fs[k](t, NULL, (int[]){0}, 1, false));
        ot_assert_error(t, AG_ERR_NULL, names[k], "input 1 is NULL");
        ag_tape_free(t);
    }
    ag_tensor_free(x);
}

Test(errors_reduce, layer_norm_bad_rank_and_eps)
{
    ag_tensor *s = ag_scalar(AG_F64, 1), *x = U(-1, 1, 2, 3);
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_layer_norm(t, s, 1e-5));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_layer_norm", "scalar");
    const double bad[] = {-1e-5, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++) {
        ag_tape_reset(t);
        cr_assert_null(ag_layer_norm(t, x, bad[i]));
        ot_assert_error(t, AG_ERR_VALUE, "ag_layer_norm: eps", NULL);
    }
    ag_tape_free(t);
    ag_tensor_free(s);
    ag_tensor_free(x);
}

Test(errors_reduce, dropout_bad_p_and_missing_rng)
{
    ag_tensor *x = U(-1, 1, 2, 3);
    ag_tape *t = ag_tape_new();
    const double bad[] = {1, -0.1, 1.5, NAN};
    for (size_t i = 0; i < 4; i++) {
        for (int training = 0; training < 2; training++) {
            ag_tape_reset(t);
            cr_assert_null(ag_dropout(t, x, bad[i], training, &rng));
            ot_assert_error(t, AG_ERR_VALUE, "ag_dropout: p = ", "is not a probability in [0, 1)");
        }
    }
    ag_tape_reset(t);
    cr_assert_null(ag_dropout(t, x, 0.5, true, NULL));
    ot_assert_error(t, AG_ERR_NULL, "ag_dropout: rng is NULL", NULL);
    /* no draws needed: no rng needed */
    ag_tape_reset(t);
    cr_assert_not_null(ag_dropout(t, x, 0.5, false, NULL));
    cr_assert_not_null(ag_dropout(t, x, 0, true, NULL));
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(errors_reduce, nll_loss_bad_shapes_and_classes)
{
    ag_tensor *lp = U(-2, 0, 3, 4);
    ag_tensor *c3 = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, 3, 1});
    ag_tensor *c2 = ot_from(AG_F64, AG_SHAPE(2), (double[]){0, 1});
    ag_tensor *far = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, 4, 1});
    ag_tensor *neg = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, -1, 1});
    ag_tensor *half = ot_from(AG_F32, AG_SHAPE(3), (double[]){0, 1.5, 1});
    ag_tensor *nan = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, 1, NAN});
    ag_tensor *v = U(-2, 0, 4);
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_nll_loss(t, lp, c2));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_nll_loss: log-probabilities [3,4] and classes [2]", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_nll_loss(t, v, c3));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_nll_loss", "[4]");
    ag_tape_reset(t);
    cr_assert_null(ag_nll_loss(t, lp, far));
    ot_assert_error(t, AG_ERR_VALUE, "ag_nll_loss: class 4 at row 1 is not an index in [0, 4)", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_nll_loss(t, lp, neg));
    ot_assert_error(t, AG_ERR_VALUE, "ag_nll_loss: class -1 at row 1", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_nll_loss(t, lp, half));
    ot_assert_error(t, AG_ERR_VALUE, "ag_nll_loss: class 1.5 at row 1", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_nll_loss(t, lp, nan));
    ot_assert_error(t, AG_ERR_VALUE, "ag_nll_loss: class nan at row 2", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_nll_loss(t, lp, NULL));
    ot_assert_error(t, AG_ERR_NULL, "ag_nll_loss: input 2 is NULL", NULL);
    /* cross_entropy keeps its own name in the shared messages */
    ag_tape_reset(t);
    cr_assert_null(ag_cross_entropy(t, lp, far));
    ot_assert_error(t, AG_ERR_VALUE, "ag_cross_entropy: class 4 at row 1", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_cross_entropy(t, lp, c2));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_cross_entropy: logits [3,4] and classes [2]", NULL);
    ag_tape_free(t);
    ag_tensor *all[] = {lp, c3, c2, far, neg, half, nan, v};
    for (size_t i = 0; i < 8; i++)
        ag_tensor_free(all[i]);
}

Test(errors_reduce, huber_loss_bad_delta_shapes_and_dtypes)
{
    ag_tensor *a = U(-1, 1, 2, 3), *y = U(-1, 1, 2, 3), *y2 = U(-1, 1, 3, 2);
    ag_tensor *y32 = ag_zeros(AG_F32, AG_SHAPE(2, 3));
    ag_tape *t = ag_tape_new();
    const double bad[] = {0, -1, NAN};
    for (size_t i = 0; i < 3; i++) {
        ag_tape_reset(t);
        cr_assert_null(ag_huber_loss(t, a, y, bad[i]));
        ot_assert_error(t, AG_ERR_VALUE, "ag_huber_loss: delta = ", "is not > 0");
    }
    ag_tape_reset(t);
    cr_assert_null(ag_huber_loss(t, a, y2, 1));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_huber_loss: shapes [2,3] and [3,2] differ", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_huber_loss(t, a, y32, 1));
    ot_assert_error(t, AG_ERR_DTYPE, "ag_huber_loss: dtypes f64 and f32 differ", NULL);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(y);
    ag_tensor_free(y2);
    ag_tensor_free(y32);
}

Test(errors_reduce, null_input_names_the_op)
{
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_norm(t, NULL));
    ot_assert_error(t, AG_ERR_NULL, "ag_norm: input 1 is NULL", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_layer_norm(t, NULL, 1e-5));
    ot_assert_error(t, AG_ERR_NULL, "ag_layer_norm: input 1 is NULL", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_dropout(t, NULL, 0.5, true, &rng));
    ot_assert_error(t, AG_ERR_NULL, "ag_dropout: input 1 is NULL", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_argmin(t, NULL, 0, false));
    ot_assert_error(t, AG_ERR_NULL, "ag_argmin: input 1 is NULL", NULL);
    ag_tape_free(t);
    cr_assert_null(ag_logsumexp(NULL, NULL, 0, false));
    cr_assert_null(ag_sum_axes(NULL, NULL, NULL, 0, false));
}

/* ------------------------------------------------------------ dropout's mask */

#define BIG 100000

/* x_i = 1 + i mod 7 (never 0, so a zeroed element shows in y) */
static ag_tensor *big_input(ag_dtype dt)
{
    ag_tensor *x = ag_zeros(dt, AG_SHAPE(100, 1000));
    cr_assert_not_null(x);
    for (size_t i = 0; i < BIG; i++) {
        if (dt == AG_F32)
            ((float *)ag_data(x))[i] = (float)(1 + i % 7);
        else
            ((double *)ag_data(x))[i] = (double)(1 + i % 7);
    }
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

static void check_mask(ag_dtype dt, double p)
{
    ag_tensor *x = big_input(dt);
    ag_tape *t = ag_tape_new();
    ag_rng r;
    ag_rng_seed(&r, 42);
    ag_tensor *y = ag_dropout(t, x, p, true, &r);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    ot_assert_shape(y, AG_SHAPE(100, 1000));
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    double tol = dt == AG_F32 ? 1e-6 : 1e-14;
    size_t zeros = 0;
    for (size_t i = 0; i < BIG; i++) {
        double xi = ag_get(x, i), yi = ag_get(y, i), gi = ag_get_grad(x, i);
        if (yi == 0) {
            zeros++;
            cr_assert_eq(gi, 0, "element %zu dropped, but its gradient is %g", i, gi);
        } else {
            cr_assert(fabs(yi - xi / (1 - p)) <= tol * yi, "y[%zu] = %.17g, want 0 or %.17g", i, yi, xi / (1 - p));
            cr_assert(fabs(gi - 1 / (1 - p)) <= tol * gi, "kept element %zu: gradient %.17g, want %.17g", i, gi,
                      1 / (1 - p));
        }
    }
    /* Bernoulli(p) over 1e5: the standard deviation of the fraction is at
     * most 0.0016; 0.01 is more than 6 of them */
    double frac = (double)zeros / BIG;
    cr_assert(fabs(frac - p) < 0.01, "fraction zeroed %g, want about %g", frac, p);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(dropout, trained_mask_properties_f64) { check_mask(AG_F64, 0.5); check_mask(AG_F64, 0.1); }
Test(dropout, trained_mask_properties_f32) { check_mask(AG_F32, 0.3); check_mask(AG_F32, 0.9); }

Test(dropout, same_seed_same_mask_and_the_rng_advances)
{
    ag_tensor *x = big_input(AG_F64);
    ag_tape *t = ag_tape_new();
    ag_rng r1, r2;
    ag_rng_seed(&r1, 7);
    ag_rng_seed(&r2, 7);
    ag_tensor *a = ag_dropout(t, x, 0.4, true, &r1), *b = ag_dropout(t, x, 0.4, true, &r2);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert(memcmp(ag_data(a), ag_data(b), BIG * sizeof(double)) == 0, "one seed, two masks");
    /* the caller's generator moved on: its next mask differs */
    ag_tensor *c = ag_dropout(t, x, 0.4, true, &r1);
    cr_assert(memcmp(ag_data(a), ag_data(c), BIG * sizeof(double)) != 0, "the generator did not advance");
    /* another seed, another mask */
    ag_rng r3;
    ag_rng_seed(&r3, 8);
    ag_tensor *d = ag_dropout(t, x, 0.4, true, &r3);
    cr_assert(memcmp(ag_data(a), ag_data(d), BIG * sizeof(double)) != 0, "seeds 7 and 8 gave one mask");
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(dropout, identity_draws_nothing_and_passes_the_gradient)
{
    ag_tensor *x = ot_leaf(AG_F32, AG_SHAPE(2, 3), (double[]){1, -2, 3, 0.5, 4, -6});
    ag_tape *t = ag_tape_new();
    ag_rng r, before;
    ag_rng_seed(&r, 5);
    before = r;
    ag_tensor *a = ag_dropout(t, x, 0.7, false, &r), *b = ag_dropout(t, x, 0, true, &r);
    ot_assert_values(a, (double[]){1, -2, 3, 0.5, 4, -6}, 6, 0);
    ot_assert_values(b, (double[]){1, -2, 3, 0.5, 4, -6}, 6, 0);
    cr_assert(memcmp(&r, &before, sizeof r) == 0, "the identity drew from the generator");
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_add(t, a, ag_scale(t, b, 2)))), AG_OK);
    assert_grads(x, (double[]){3, 3, 3, 3, 3, 3}, 6, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(dropout, recording_off_still_masks)
{
    ag_tensor *x = big_input(AG_F64);
    ag_tape *t = ag_tape_new();
    ag_tape_set_recording(t, false);
    ag_rng r;
    ag_rng_seed(&r, 3);
    ag_tensor *y = ag_dropout(t, x, 0.5, true, &r);
    size_t zeros = 0;
    for (size_t i = 0; i < BIG; i++)
        zeros += ag_get(y, i) == 0;
    cr_assert(zeros > BIG / 3 && zeros < 2 * BIG / 3, "%zu zeros", zeros);
    cr_assert_eq(ag_tape_size(t), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ------------------------------------------------------------ out of memory */

/* Every op here that takes arena memory of its own (var's mean,
 * logsumexp's sums, layer_norm's 1/σ, dropout's mask, sum_axes' mask,
 * prod's backward scratch), on tensors big enough to need several chunks,
 * with the allocation numbered n refused: an error, never a crash or a
 * leak, and the run with no failure gives the gradient of the first. */
static bool oom_attempt(size_t n, double *grad0)
{
    test_alloc_install(&ta, n);
    ag_rng r;
    ag_rng_seed(&r, 9);
    ag_tensor *x = ag_rand_uniform(AG_F64, AG_SHAPE(64, 80), 0.5, 1.5, &r);
    bool ok = x && ag_set_requires_grad(x, true) == AG_OK;
    ag_tape *t = ok ? ag_tape_new() : NULL;
    bool done = false;
    if (t) {
        ag_tensor *a = ag_layer_norm(t, ag_dropout(t, x, 0.25, true, &r), 1e-5);
        ag_tensor *b = ag_var_axis(t, a, 0, false);
        ag_tensor *c = ag_logsumexp(t, ag_sum_axes(t, x, (int[]){1}, 1, true), 0, false);
        ag_tensor *d = ag_sum(t, ag_prod_axis(t, x, 0, false));
        ag_tensor *L = ag_add(t, ag_add(t, ag_sum(t, b), ag_sum(t, c)), d);
        ag_status s = ag_backward(t, L);
        cr_assert_eq(s, ag_tape_status(t));
        if (s == AG_OK) {
            done = !ta.failed;
            *grad0 = ag_get_grad(x, 0);
        } else {
            cr_assert_eq(s, AG_ERR_NOMEM, "allocation %zu: %s", n, ag_tape_error(t));
            cr_assert(strstr(ag_tape_error(t), "memory") != NULL, "%s", ag_tape_error(t));
        }
    }
    cr_assert(done || ta.failed, "allocation %zu: failed without a refused allocation", n);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
    return done;
}

Test(oom_reduce, allocation_failure_anywhere_in_the_new_ops)
{
    double want = NAN, got = NAN;
    cr_assert(oom_attempt(0, &want));
    size_t n = 1;
    while (!oom_attempt(n, &got)) {
        n++;
        cr_assert_lt(n, 1000, "runaway");
    }
    cr_assert_gt(n, 4, "only %zu allocations", n);
    cr_assert_eq(got, want, "after the failures: %g, want %g", got, want);
}

/* ------------------------------------------------------------ the PyTorch cases */

static const char *const mine[] = {"sum_axes", "mean_axes", "min_axis", "prod_axis", "var_axis",
                                   "logsumexp", "norm", "layer_norm", "nll_loss", "huber_loss",
                                   "argmax", "argmin", "dropout"};

static void run_reference(ag_dtype dt, double tol)
{
    const size_t n = sizeof mine / sizeof *mine;
    size_t more = ot_run_reference(TEST_DATA_DIR "/ops-more.txt", mine, n, false, dt, tol);
    size_t extra = ot_run_reference(TEST_DATA_DIR "/ops-extra.txt", mine, n, false, dt, tol);
    cr_assert_geq(more, 32, "only %zu cases in ops-more.txt", more);
    cr_assert_geq(extra, 9, "only %zu cases in ops-extra.txt", extra);
}

Test(reference_reduce, cases_in_f64) { run_reference(AG_F64, 1e-9); }
Test(reference_reduce, cases_in_f32) { run_reference(AG_F32, 1e-4); }
