/* test_checked.c: checked mode names the first op that makes a NaN or Inf,
 * in forward and in backward, and stays silent when off (the default). */
#include "autograd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static ag_tensor *named(const char *name, double a, double b)
{
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(2), (const double[]){a, b});
    cr_assert_not_null(x);
    ag_tensor_set_name(x, name);
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

Test(checked, forward_names_the_first_op_and_the_inputs)
{
    ag_tensor *x = named("x", 1, -1);
    ag_tape *t = ag_tape_new();
    cr_assert_eq(ag_tape_set_checked(t, true), false);
    ag_tensor *y = ag_log(t, ag_tanh(t, x)); /* log of tanh(-1) < 0: NaN */
    cr_assert_null(y);
    cr_assert_eq(ag_tape_status(t), AG_ERR_NUMERIC);
    cr_assert(strstr(ag_tape_error(t), "ag_log") != NULL, "%s", ag_tape_error(t));
    cr_assert(strstr(ag_tape_error(t), "element 1") != NULL, "%s", ag_tape_error(t));
    cr_assert(strstr(ag_tape_error(t), "[2]") != NULL, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(checked, forward_message_carries_user_names)
{
    ag_tensor *a = named("numerator", 1, 2), *b = named("denominator", 1, 0);
    ag_tape *t = ag_tape_new();
    ag_tape_set_checked(t, true);
    cr_assert_null(ag_div(t, a, b));
    cr_assert(strstr(ag_tape_error(t), "'numerator'") && strstr(ag_tape_error(t), "'denominator'"),
              "%s", ag_tape_error(t));
    cr_assert(strstr(ag_tape_error(t), "inf"), "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(checked, backward_names_the_op_whose_gradient_is_not_finite)
{
    ag_tensor *x = named("x", 4, 0);
    ag_tape *t = ag_tape_new();
    ag_tape_set_checked(t, true);
    ag_tensor *s = ag_sum(t, ag_sqrt(t, x)); /* finite forward; d sqrt/dx = inf at 0 */
    cr_assert_not_null(s, "%s", ag_tape_error(t));
    cr_assert_eq(ag_backward(t, s), AG_ERR_NUMERIC);
    cr_assert(strstr(ag_tape_error(t), "ag_sqrt: backward") != NULL, "%s", ag_tape_error(t));
    cr_assert(strstr(ag_tape_error(t), "'x'") != NULL, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(checked, off_by_default_lets_nan_through)
{
    ag_tensor *x = named("x", 1, -1);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_log(t, x);
    cr_assert_not_null(y);
    cr_assert_eq(ag_tape_status(t), AG_OK);
    cr_assert(isnan(ag_get(y, 1)));
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(checked, finite_runs_pass_and_reset_clears_the_error)
{
    ag_tensor *x = named("x", 0.5, 2);
    ag_tape *t = ag_tape_new();
    ag_tape_set_checked(t, true);
    cr_assert_null(ag_log(t, ag_neg(t, x)));
    ag_tape_reset(t);
    ag_tensor *s = ag_sum(t, ag_log(t, x));
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s", ag_tape_error(t));
    cr_assert_float_eq(ag_get_grad(x, 0), 2.0, 1e-15);
    cr_assert_float_eq(ag_get_grad(x, 1), 0.5, 1e-15);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(tape_fail, first_error_wins_and_ops_stop)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2));
    cr_assert_eq(ag_tape_fail(t, AG_ERR_VALUE, "layer: width %d is bad", 0), AG_ERR_VALUE);
    cr_assert_eq(ag_tape_fail(t, AG_ERR_SHAPE, "second"), AG_ERR_VALUE);
    cr_assert_str_eq(ag_tape_error(t), "layer: width 0 is bad");
    cr_assert_null(ag_exp(t, x));
    cr_assert_eq(ag_tape_fail(NULL, AG_ERR_VALUE, "x"), AG_ERR_NULL);
    ag_tape_reset(t);
    cr_assert_eq(ag_tape_fail(t, AG_OK, "not an error"), AG_OK);
    cr_assert_str_eq(ag_tape_error(t), "");
    ag_tape_free(t);
    ag_tensor_free(x);
}
