/* test_check.c: ag_gradcheck catches wrong gradients and leaves its inputs
 * as it found them; ag_allclose and its report. */
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "autograd.h"
#include "alloc_suite.h"

ALLOC_SUITE(gradcheck)
TestSuite(allclose);

static ag_tensor *f64(const size_t *shape, size_t rank, const double *v)
{
    ag_tensor *x = ag_from_data(AG_F64, shape, rank, v);
    cr_assert_not_null(x);
    return x;
}

/* ------------------------------------------------------------ functions under check */

/* Σ a·e^b: correct gradients e^b and a·e^b. */
static ag_tensor *correct_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_sum(t, ag_mul(t, x[0], ag_exp(t, x[1])));
}

/* tanh(a) ⊙ b as a [2,2] tensor: the check reduces it itself. */
static ag_tensor *matrix_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_mul(t, ag_tanh(t, x[0]), x[1]);
}

/* Σa² + Σb² + b[3]·detach(b[3]): the detached factor hides half of the
 * last term's gradient, so only d/db[3] is wrong (3·b3 instead of 4·b3). */
static ag_tensor *planted_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    ag_tensor *a = x[0], *b = x[1];
    ag_tensor *b3 = ag_slice(t, b, 0, 3, 4), *b3_const = ag_slice(t, ag_detach(t, b), 0, 3, 4);
    ag_tensor *s = ag_add(t, ag_sum(t, ag_mul(t, a, a)), ag_sum(t, ag_mul(t, b, b)));
    return ag_add(t, s, ag_sum(t, ag_mul(t, b3, b3_const)));
}

static ag_tensor *shape_error_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_matmul(t, x[0], ag_sum(t, x[0])); /* a rank-0 operand */
}

static ag_tensor *null_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)t;
    (void)x;
    (void)ctx;
    return NULL;
}

static ag_tensor *sqrt_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_sqrt(t, x[0]);
}

/* ------------------------------------------------------------ gradcheck */

Test(gradcheck, passes_for_a_correct_function)
{
    ag_tensor *in[2] = {f64(AG_SHAPE(3), (double[]){0.5, -1, 2}), f64(AG_SHAPE(3), (double[]){0.1, 0.7, -0.3})};
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 2, in, 1e-6, 1e-7, 1e-7, &rep), AG_OK);
    cr_assert(rep.passed, "input %zu[%zu]: %g vs %g", rep.worst_input, rep.worst_index, rep.numeric, rep.analytic);
    cr_assert_eq(rep.checked, 6);
    cr_assert_lt(rep.max_abs_err, 1e-7);
    cr_assert_lt(rep.max_rel_err, 1e-7);
    cr_assert(fabs(rep.numeric - rep.analytic) <= rep.max_abs_err);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    assert_all_freed();
}

Test(gradcheck, passes_for_a_non_scalar_output)
{
    ag_tensor *in[2] = {f64(AG_SHAPE(2, 2), (double[]){0.5, -1, 2, 0.1}),
                        f64(AG_SHAPE(2, 2), (double[]){1, 2, -3, 4})};
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(matrix_fn, NULL, 2, in, 0, 1e-7, 1e-7, &rep), AG_OK);
    cr_assert(rep.passed);
    cr_assert_eq(rep.checked, 8);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    assert_all_freed();
}

Test(gradcheck, fails_at_the_planted_wrong_gradient)
{
    ag_tensor *in[2] = {f64(AG_SHAPE(3), (double[]){0.5, -1, 1.5}),
                        f64(AG_SHAPE(5), (double[]){0.3, -0.2, 1, 2, -0.7})};
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(planted_fn, NULL, 2, in, 1e-6, 1e-6, 1e-6, &rep), AG_OK);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.worst_input, 1);
    cr_assert_eq(rep.worst_index, 3);
    cr_assert_eq(rep.checked, 8);
    cr_assert(fabs(rep.numeric - 8) < 1e-6, "numeric %.12g, want 4·b3 = 8", rep.numeric);
    cr_assert(fabs(rep.analytic - 6) < 1e-12, "analytic %.12g, want 3·b3 = 6", rep.analytic);
    cr_assert(fabs(rep.max_abs_err - 2) < 1e-6);
    cr_assert(fabs(rep.max_rel_err - 0.25) < 1e-6);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    assert_all_freed();
}

Test(gradcheck, a_nan_difference_counts_as_worst)
{
    /* sqrt(1e-7 - 1e-6) is NaN: element 1 must be reported even though
     * element 2, checked after it, is fine */
    ag_tensor *x = f64(AG_SHAPE(3), (double[]){2, 1e-7, 3});
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(sqrt_fn, NULL, 1, &x, 1e-6, 1e-6, 1e-6, &rep), AG_OK);
    cr_assert_not(rep.passed);
    cr_assert_eq(rep.worst_index, 1);
    cr_assert(isnan(rep.numeric));
    ag_tensor_free(x);
    assert_all_freed();
}

/* Σ b³; a is not used, so its gradients match exactly (0 and 0). */
static ag_tensor *ignores_first_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_sum(t, ag_mul(t, ag_mul(t, x[1], x[1]), x[1]));
}

Test(gradcheck, zero_tolerance_reports_an_inexact_element)
{
    ag_tensor *in[2] = {f64(AG_SHAPE(2), (double[]){1, 2}), f64(AG_SHAPE(3), (double[]){0.7, -1.3, 0.2})};
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(ignores_first_fn, NULL, 2, in, 1e-6, 0, 0, &rep), AG_OK);
    cr_assert_not(rep.passed, "finite differences are never exact for b³");
    cr_assert_eq(rep.worst_input, 1, "an exact match (error 0, tolerance 0) is not the worst");
    cr_assert_neq(rep.numeric, rep.analytic);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    assert_all_freed();
}

Test(gradcheck, argument_errors)
{
    ag_tensor *x = f64(AG_SHAPE(2), (double[]){1, 2}), *f = ag_ones(AG_F32, AG_SHAPE(2));
    ag_tensor *in[2] = {x, NULL};
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(NULL, NULL, 1, in, 0, 1e-6, 1e-6, &rep), AG_ERR_NULL);
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 1, in, 0, 1e-6, 1e-6, NULL), AG_ERR_NULL);
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 1, NULL, 0, 1e-6, 1e-6, &rep), AG_ERR_NULL);
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 2, in, 0, 1e-6, 1e-6, &rep), AG_ERR_NULL);
    in[1] = f;
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 2, in, 0, 1e-6, 1e-6, &rep), AG_ERR_DTYPE);
    ag_tape *t = ag_tape_new();
    in[1] = ag_exp(t, x);
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 2, in, 0, 1e-6, 1e-6, &rep), AG_ERR_STATE);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(f);
    assert_all_freed();
}

Test(gradcheck, reports_the_error_of_fn)
{
    ag_tensor *x = f64(AG_SHAPE(2, 3), (double[6]){0});
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(shape_error_fn, NULL, 1, &x, 0, 1e-6, 1e-6, &rep), AG_ERR_SHAPE);
    cr_assert_not(rep.passed);
    cr_assert_eq(ag_gradcheck(null_fn, NULL, 1, &x, 0, 1e-6, 1e-6, &rep), AG_ERR_NULL);
    cr_assert_not(rep.passed);
    ag_tensor_free(x);
    assert_all_freed();
}

/* Inputs with distinct states: a requires grad and holds a grad; b not. */
typedef struct {
    ag_tensor *in[2];
    double a[3], b[3], grad[3];
} saved_inputs;

static void make_inputs(saved_inputs *s)
{
    const double a[3] = {0.5, -1, 2}, b[3] = {0.1, 0.7, -0.3}, g[3] = {7, -7, 0.5};
    memcpy(s->a, a, sizeof a);
    memcpy(s->b, b, sizeof b);
    memcpy(s->grad, g, sizeof g);
    s->in[0] = f64(AG_SHAPE(3), a);
    s->in[1] = f64(AG_SHAPE(3), b);
    cr_assert_eq(ag_set_requires_grad(s->in[1], true), AG_OK); /* b: on, then off */
    cr_assert_eq(ag_set_requires_grad(s->in[1], false), AG_OK);
    cr_assert_eq(ag_set_requires_grad(s->in[0], true), AG_OK);
    memcpy(ag_grad(s->in[0]), g, sizeof g);
}

static void assert_restored(const saved_inputs *s, const char *when)
{
    cr_assert(ag_requires_grad(s->in[0]), "%s: a's requires_grad", when);
    cr_assert_not(ag_requires_grad(s->in[1]), "%s: b's requires_grad", when);
    cr_assert_eq(memcmp(ag_data(s->in[0]), s->a, sizeof s->a), 0, "%s: a's values", when);
    cr_assert_eq(memcmp(ag_data(s->in[1]), s->b, sizeof s->b), 0, "%s: b's values", when);
    cr_assert_eq(memcmp(ag_grad(s->in[0]), s->grad, sizeof s->grad), 0, "%s: a's grad", when);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(ag_get_grad(s->in[1], i), 0.0, "%s: b's grad", when);
}

Test(gradcheck, restores_values_grads_and_requires_grad)
{
    saved_inputs s;
    make_inputs(&s);
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(correct_fn, NULL, 2, s.in, 0, 1e-6, 1e-6, &rep), AG_OK);
    cr_assert(rep.passed);
    assert_restored(&s, "after a pass");
    ag_tensor *swapped[2] = {s.in[1], s.in[0]};
    cr_assert_eq(ag_gradcheck(shape_error_fn, NULL, 2, swapped, 0, 1e-6, 1e-6, &rep), AG_ERR_SHAPE);
    assert_restored(&s, "after an error");
    ag_tensor_free(s.in[0]);
    ag_tensor_free(s.in[1]);
    assert_all_freed();
}

Test(gradcheck, out_of_memory_at_every_allocation_restores_inputs)
{
    size_t n = 1;
    for (;; n++) {
        cr_assert_lt(n, 200, "runaway");
        test_alloc_install(&ta, 0);
        saved_inputs s;
        make_inputs(&s);
        ag_tensor *order[2] = {s.in[1], s.in[0]}; /* the input that is off comes first */
        ta.fail_at = ta.attempts + n;
        ag_gradcheck_report rep;
        ag_status st = ag_gradcheck(correct_fn, NULL, 2, order, 0, 1e-6, 1e-6, &rep);
        bool failed = ta.failed;
        char when[64];
        snprintf(when, sizeof when, "allocation %zu refused", n);
        assert_restored(&s, when);
        ag_tensor_free(s.in[0]);
        ag_tensor_free(s.in[1]);
        assert_all_freed();
        if (!failed) {
            cr_assert_eq(st, AG_OK);
            cr_assert(rep.passed);
            break;
        }
        cr_assert_eq(st, AG_ERR_NOMEM, "%s: status %s", when, ag_status_string(st));
    }
    cr_assert_gt(n, 3, "gradcheck made only %zu allocations", n - 1);
}

/* ------------------------------------------------------------ allclose */

Test(allclose, true_within_tolerance_and_false_outside)
{
    const double a[3] = {1, 2, 3}, b[3] = {1, 2 + 1e-9, 3 - 1e-9}, c[3] = {1, 2.1, 3};
    cr_assert(ag_allclose(AG_F64, 3, a, a, 0, 0, NULL));
    cr_assert(ag_allclose(AG_F64, 3, a, b, 0, 1e-8, NULL));
    cr_assert_not(ag_allclose(AG_F64, 3, a, b, 0, 1e-10, NULL));
    cr_assert(ag_allclose(AG_F64, 3, a, b, 1e-9, 0, NULL));
    cr_assert_not(ag_allclose(AG_F64, 3, a, c, 1e-3, 1e-3, NULL));
    cr_assert(ag_allclose(AG_F64, 3, a, c, 0.05, 0, NULL));
}

Test(allclose, relative_tolerance_scales_with_b)
{
    const double a[1] = {100}, b[1] = {110};
    /* |a - b| = 10 <= 0.1·|b| = 11, but > 0.1·|a| = 10 is not required */
    cr_assert(ag_allclose(AG_F64, 1, a, b, 0.1, 0, NULL));
    cr_assert_not(ag_allclose(AG_F64, 1, b, (const double[]){90}, 0.1, 0, NULL));
}

Test(allclose, nan_is_never_close)
{
    const double n[2] = {NAN, 1}, z[2] = {NAN, 1};
    cr_assert_not(ag_allclose(AG_F64, 2, n, z, 1, 1e300, NULL));
    cr_assert_not(ag_allclose(AG_F64, 2, (const double[]){0, 1}, z, 1, 1e300, NULL));
    const float nf[1] = {NAN}, one[1] = {1};
    cr_assert_not(ag_allclose(AG_F32, 1, nf, one, 1, 1e30, NULL));
}

Test(allclose, float32_elements_are_read_as_float)
{
    const float a[3] = {1, 2, 3}, b[3] = {1, 2.001f, 3};
    cr_assert(ag_allclose(AG_F32, 3, a, b, 0, 2e-3, NULL));
    cr_assert_not(ag_allclose(AG_F32, 3, a, b, 0, 5e-4, NULL));
}

Test(allclose, edge_arguments)
{
    const double a[1] = {1};
    cr_assert(ag_allclose(AG_F64, 0, NULL, NULL, 0, 0, NULL));
    cr_assert_not(ag_allclose(AG_F64, 1, a, NULL, 1, 1, NULL));
    cr_assert_not(ag_allclose(AG_F64, 1, NULL, a, 1, 1, NULL));
    cr_assert_not(ag_allclose((ag_dtype)9, 1, a, a, 1, 1, NULL));
}

Test(allclose, report_names_the_worst_element)
{
    const double a[4] = {1, 2, 3, 4}, b[4] = {1, 2.5, 1, 4.25};
    ag_close_report rep;
    cr_assert_not(ag_allclose(AG_F64, 4, a, b, 0, 0.1, &rep));
    cr_assert_eq(rep.worst_index, 2);
    cr_assert_eq(rep.max_abs_err, 2.0);
    cr_assert_eq(rep.a, 3.0);
    cr_assert_eq(rep.b, 1.0);
    cr_assert(ag_allclose(AG_F64, 4, a, b, 0, 3, &rep));
    cr_assert_eq(rep.worst_index, 2, "the report is filled when close too");
}

Test(allclose, report_points_at_a_nan)
{
    const double a[3] = {0, NAN, 5}, b[3] = {0, 0, 4};
    ag_close_report rep;
    cr_assert_not(ag_allclose(AG_F64, 3, a, b, 0, 10, &rep));
    cr_assert_eq(rep.worst_index, 1, "worst index %zu", rep.worst_index);
    cr_assert(isnan(rep.max_abs_err));
    cr_assert(isnan(rep.a));
}
