/* test_errors.c: every error path ends in a status and a message, and
 * leaks nothing; out-of-memory at every allocation of a training step. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "autograd.h"
#include "alloc_suite.h"
#include "optest.h"

ALLOC_SUITE(errors)

/* ------------------------------------------------------------ a table of every op */

#define OP1(n, expr) \
    static ag_tensor *w_##n(ag_tape *t, ag_tensor *a, ag_tensor *b) { (void)b; return expr; }
#define OP2(n, expr) \
    static ag_tensor *w_##n(ag_tape *t, ag_tensor *a, ag_tensor *b) { return expr; }

OP2(add, ag_add(t, a, b))
OP2(sub, ag_sub(t, a, b))
OP2(mul, ag_mul(t, a, b))
OP2(div, ag_div(t, a, b))
OP1(neg, ag_neg(t, a))
OP1(exp, ag_exp(t, a))
OP1(log, ag_log(t, a))
OP1(sqrt, ag_sqrt(t, a))
OP1(pow, ag_pow(t, a, 2.5))
OP1(abs, ag_abs(t, a))
OP1(sigmoid, ag_sigmoid(t, a))
OP1(tanh, ag_tanh(t, a))
OP1(relu, ag_relu(t, a))
OP1(leaky_relu, ag_leaky_relu(t, a, 0.1))
OP1(softplus, ag_softplus(t, a))
OP1(add_scalar, ag_add_scalar(t, a, 1))
OP1(scale, ag_scale(t, a, 2))
OP2(matmul, ag_matmul(t, a, b))
OP1(transpose, ag_transpose(t, a))
OP1(reshape, ag_reshape(t, a, AG_SHAPE(3, 2)))
OP2(concat, ag_concat(t, a, b, 0))
OP1(slice, ag_slice(t, a, 1, 0, 2))
OP1(cast, ag_cast(t, a, AG_F32))
OP1(detach, ag_detach(t, a))
OP1(sum, ag_sum(t, a))
OP1(mean, ag_mean(t, a))
OP1(sum_axis, ag_sum_axis(t, a, 1, false))
OP1(mean_axis, ag_mean_axis(t, a, 0, true))
OP1(max_axis, ag_max_axis(t, a, -1, false))
OP1(softmax, ag_softmax(t, a, 1))
OP1(log_softmax, ag_log_softmax(t, a, 0))
OP2(mse, ag_mse(t, a, b))
OP2(quadratic_cost, ag_quadratic_cost(t, a, b))
OP2(bce, ag_bce(t, a, b))
OP2(bce_with_logits, ag_bce_with_logits(t, a, b))
OP2(cross_entropy, ag_cross_entropy(t, a, b))

typedef ag_tensor *(*op_fn)(ag_tape *, ag_tensor *, ag_tensor *);

/* second: the valid second operand for x [2,3]: 's' same shape, 'm' a
 * [3,2] matrix, 'c' class indices [2]. */
static const struct {
    const char *name;
    int arity;
    op_fn f;
    char second;
} ops[] = {
#define E1(n) {#n, 1, w_##n, 0}
#define E2(n, s) {#n, 2, w_##n, s}
    E2(add, 's'), E2(sub, 's'), E2(mul, 's'), E2(div, 's'), E1(neg), E1(exp), E1(log), E1(sqrt),
    E1(pow), E1(abs), E1(sigmoid), E1(tanh), E1(relu), E1(leaky_relu), E1(softplus), E1(add_scalar),
    E1(scale), E2(matmul, 'm'), E1(transpose), E1(reshape), E2(concat, 's'), E1(slice), E1(cast),
    E1(detach), E1(sum), E1(mean), E1(sum_axis), E1(mean_axis), E1(max_axis), E1(softmax),
    E1(log_softmax), E2(mse, 's'), E2(quadratic_cost, 's'), E2(bce, 's'), E2(bce_with_logits, 's'),
    E2(cross_entropy, 'c'),
};
#define N_OPS (sizeof ops / sizeof ops[0])

typedef struct {
    ag_tensor *x, *same, *mat, *cls;
} operands;

static operands make_operands(ag_dtype dt)
{
    operands o;
    o.x = ot_from(dt, AG_SHAPE(2, 3), (double[]){0.1, 0.2, 0.3, 0.4, 0.5, 0.6});
    o.same = ot_from(dt, AG_SHAPE(2, 3), (double[]){0.9, 0.8, 0.7, 0.6, 0.5, 0.4});
    o.mat = ot_from(dt, AG_SHAPE(3, 2), (double[]){1, 2, 3, 4, 5, 6});
    o.cls = ot_from(dt, AG_SHAPE(2), (double[]){0, 2});
    cr_assert_eq(ag_set_requires_grad(o.x, true), AG_OK);
    return o;
}

static void free_operands(operands *o)
{
    ag_tensor_free(o->x);
    ag_tensor_free(o->same);
    ag_tensor_free(o->mat);
    ag_tensor_free(o->cls);
}

static ag_tensor *second_of(const operands *o, size_t k)
{
    switch (ops[k].second) {
    case 's': return o->same;
    case 'm': return o->mat;
    case 'c': return o->cls;
    }
    return NULL;
}

Test(errors, op_table_covers_every_op_and_works_on_valid_inputs)
{
    cr_assert_eq(N_OPS, 36);
    operands o = make_operands(AG_F64);
    ag_tape *t = ag_tape_new();
    for (size_t k = 0; k < N_OPS; k++) {
        cr_assert_not_null(ops[k].f(t, o.x, second_of(&o, k)), "%s: %s", ops[k].name, ag_tape_error(t));
        cr_assert_eq(ag_tape_status(t), AG_OK);
    }
    ag_tape_free(t);
    free_operands(&o);
    assert_all_freed();
}

/* ------------------------------------------------------------ NULL arguments */

Test(errors, null_input_to_every_op_names_the_op)
{
    operands o = make_operands(AG_F64);
    for (size_t k = 0; k < N_OPS; k++) {
        for (int pos = 0; pos < ops[k].arity; pos++) {
            ag_tape *t = ag_tape_new();
            ag_tensor *a = pos == 0 ? NULL : o.x, *b = pos == 1 ? NULL : second_of(&o, k);
            cr_assert_null(ops[k].f(t, a, b), "%s", ops[k].name);
            char name[48];
            snprintf(name, sizeof name, "ag_%s:", ops[k].name);
            ot_assert_error(t, AG_ERR_NULL, name, pos ? "input 2" : "input 1");
            ag_tape_free(t);
        }
    }
    free_operands(&o);
    assert_all_freed();
}

Test(errors, null_tape_makes_every_op_return_null)
{
    operands o = make_operands(AG_F64);
    for (size_t k = 0; k < N_OPS; k++)
        cr_assert_null(ops[k].f(NULL, o.x, second_of(&o, k)), "%s", ops[k].name);
    cr_assert_eq(ag_tape_status(NULL), AG_ERR_NULL);
    cr_assert_not_null(ag_tape_error(NULL));
    cr_assert_eq(ag_tape_size(NULL), 0);
    cr_assert_eq(ag_backward(NULL, o.x), AG_ERR_NULL);
    ag_tape_reset(NULL);
    ag_tape_free(NULL);
    free_operands(&o);
    assert_all_freed();
}

Test(errors, reshape_with_null_shape)
{
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(2, 3));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_reshape(t, x, NULL, 2));
    ot_assert_error(t, AG_ERR_NULL, "ag_reshape", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ sticky status */

Test(errors, ops_after_an_error_return_null_and_keep_the_first_message)
{
    operands o = make_operands(AG_F64);
    ag_tensor *f = ag_zeros(AG_F32, AG_SHAPE(2, 3));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_matmul(t, o.x, o.x));
    char first[256];
    snprintf(first, sizeof first, "%s", ag_tape_error(t));
    cr_assert_eq(ag_tape_status(t), AG_ERR_SHAPE);
    cr_assert_null(ag_add(t, o.x, f)); /* would be a dtype error */
    cr_assert_null(ag_sum_axis(t, o.x, 7, false)); /* would be a value error */
    for (size_t k = 0; k < N_OPS; k++)
        cr_assert_null(ops[k].f(t, o.x, second_of(&o, k)), "%s after an error", ops[k].name);
    cr_assert_eq(ag_backward(t, o.x), AG_ERR_SHAPE);
    cr_assert_eq(ag_tape_fail(t, AG_ERR_VALUE, "a later error"), AG_ERR_SHAPE);
    cr_assert_eq(ag_tape_status(t), AG_ERR_SHAPE);
    cr_assert_str_eq(ag_tape_error(t), first);
    cr_assert_eq(ag_tape_size(t), 0);
    ag_tape_free(t);
    ag_tensor_free(f);
    free_operands(&o);
    assert_all_freed();
}

Test(errors, tape_reset_clears_the_error)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2, 3));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_transpose(t, ag_sum(t, x)));
    cr_assert_neq(ag_tape_status(t), AG_OK);
    ag_tape_reset(t);
    cr_assert_eq(ag_tape_status(t), AG_OK);
    cr_assert_str_eq(ag_tape_error(t), "");
    ag_tensor *y = ag_transpose(t, x);
    cr_assert_not_null(y);
    cr_assert_eq(ag_tensor_shape(y)[0], 3);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ dtypes */

Test(errors, mixed_dtypes_in_every_two_input_op)
{
    operands o64 = make_operands(AG_F64), o32 = make_operands(AG_F32);
    for (size_t k = 0; k < N_OPS; k++) {
        if (ops[k].arity != 2 || ops[k].second == 'c')
            continue;
        ag_tape *t = ag_tape_new();
        cr_assert_null(ops[k].f(t, o64.x, second_of(&o32, k)), "%s", ops[k].name);
        char name[48];
        snprintf(name, sizeof name, "ag_%s:", ops[k].name);
        ot_assert_error(t, AG_ERR_DTYPE, name, "f32");
        ag_tape_free(t);
    }
    free_operands(&o64);
    free_operands(&o32);
    assert_all_freed();
}

Test(errors, cast_to_an_invalid_dtype)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_cast(t, x, (ag_dtype)9));
    ot_assert_error(t, AG_ERR_DTYPE, "ag_cast", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ shapes */

/* Runs op on fresh zeros of the two shapes; expects status s and parts. */
static void expect_shape_error(op_fn f, const size_t *sa, size_t ra, const size_t *sb, size_t rb,
                               ag_status s, const char *part1, const char *part2)
{
    ag_tensor *a = ag_zeros(AG_F64, sa, ra), *b = ag_zeros(AG_F64, sb, rb);
    ag_tape *t = ag_tape_new();
    cr_assert_null(f(t, a, b), "expected %s", part1);
    ot_assert_error(t, s, part1, part2);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(errors, broadcast_mismatch_names_both_shapes)
{
    expect_shape_error(w_add, AG_SHAPE(2, 3), AG_SHAPE(4), AG_ERR_SHAPE, "ag_add", "[2,3] and [4]");
    expect_shape_error(w_mul, AG_SHAPE(2, 3, 4), AG_SHAPE(2, 4), AG_ERR_SHAPE, "ag_mul", "[2,3,4]");
    expect_shape_error(w_div, AG_SHAPE(3, 1), AG_SHAPE(2, 1), AG_ERR_SHAPE, "ag_div", NULL);
}

Test(errors, matmul_inner_dimension_message)
{
    ag_tensor *a = ag_zeros(AG_F64, AG_SHAPE(3, 4)), *b = ag_zeros(AG_F64, AG_SHAPE(5, 2));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_matmul(t, a, b));
    cr_assert_eq(ag_tape_status(t), AG_ERR_SHAPE);
    cr_assert_str_eq(ag_tape_error(t), "ag_matmul: [3,4] · [5,2]: inner dimensions 4 and 5 differ");
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    assert_all_freed();
}

Test(errors, matmul_rank_and_batch_mismatches)
{
    expect_shape_error(w_matmul, AG_SHAPE(4), AG_SHAPE(3, 2), AG_ERR_SHAPE, "ag_matmul", "inner");
    expect_shape_error(w_matmul, AG_SHAPE(2, 1, 3, 4), AG_SHAPE(5, 2, 4, 1), AG_ERR_SHAPE, "ag_matmul", "batch");
    expect_shape_error(w_matmul, NULL, 0, AG_SHAPE(3), AG_ERR_SHAPE, "ag_matmul", "rank");
    expect_shape_error(w_matmul, AG_SHAPE(2, 3, 4), AG_SHAPE(3, 4, 5), AG_ERR_SHAPE, "ag_matmul", "batch");
    expect_shape_error(w_matmul, AG_SHAPE(2, 3, 4), AG_SHAPE(2, 5, 5), AG_ERR_SHAPE, "inner", NULL);
    assert_all_freed();
}

Test(errors, concat_shapes_must_agree_off_axis)
{
    expect_shape_error(w_concat, AG_SHAPE(2, 3), AG_SHAPE(2, 4), AG_ERR_SHAPE, "ag_concat", "[2,4]");
    expect_shape_error(w_concat, AG_SHAPE(2, 3), AG_SHAPE(2, 3, 1), AG_ERR_SHAPE, "ag_concat", NULL);
    assert_all_freed();
}

Test(errors, reshape_needs_the_same_count)
{
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(2, 3));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_reshape(t, x, AG_SHAPE(4, 2)));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_reshape", "[2,3]");
    ag_tape_reset(t);
    size_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 2, 3};
    cr_assert_null(ag_reshape(t, x, nine, 9));
    ot_assert_error(t, AG_ERR_VALUE, "ag_reshape", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_reshape(t, x, (size_t[]){SIZE_MAX / 2, 4}, 2));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_reshape", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(errors, transpose_needs_rank_two)
{
    expect_shape_error(w_transpose, AG_SHAPE(5), NULL, 0, AG_ERR_SHAPE, "ag_transpose", "[5]");
    assert_all_freed();
}

Test(errors, losses_need_equal_shapes)
{
    op_fn losses[] = {w_mse, w_quadratic_cost, w_bce, w_bce_with_logits};
    for (size_t i = 0; i < 4; i++) {
        expect_shape_error(losses[i], AG_SHAPE(2, 3), AG_SHAPE(3, 2), AG_ERR_SHAPE, "[2,3]", "[3,2]");
        expect_shape_error(losses[i], AG_SHAPE(2, 3), AG_SHAPE(3), AG_ERR_SHAPE, "differ", NULL);
    }
    assert_all_freed();
}

Test(errors, cross_entropy_shapes)
{
    expect_shape_error(w_cross_entropy, AG_SHAPE(4), AG_SHAPE(4), AG_ERR_SHAPE, "ag_cross_entropy", "[4]");
    expect_shape_error(w_cross_entropy, AG_SHAPE(2, 3), AG_SHAPE(3), AG_ERR_SHAPE, "ag_cross_entropy", "[2,3]");
    expect_shape_error(w_cross_entropy, AG_SHAPE(2, 3), AG_SHAPE(2, 1), AG_ERR_SHAPE, "ag_cross_entropy", NULL);
    expect_shape_error(w_cross_entropy, AG_SHAPE(2, 0), AG_SHAPE(2), AG_ERR_SHAPE, "ag_cross_entropy", NULL);
    assert_all_freed();
}

Test(errors, max_over_an_empty_axis)
{
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(2, 0));
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_max_axis(t, x, 1, false));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_max_axis", "empty");
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ values */

static ag_tensor *sum_axis_3(ag_tape *t, ag_tensor *a, int axis) { return ag_sum_axis(t, a, axis, false); }
static ag_tensor *mean_axis_3(ag_tape *t, ag_tensor *a, int axis) { return ag_mean_axis(t, a, axis, true); }
static ag_tensor *max_axis_3(ag_tape *t, ag_tensor *a, int axis) { return ag_max_axis(t, a, axis, false); }
static ag_tensor *slice_3(ag_tape *t, ag_tensor *a, int axis) { return ag_slice(t, a, axis, 0, 1); }
static ag_tensor *concat_3(ag_tape *t, ag_tensor *a, int axis) { return ag_concat(t, a, a, axis); }

Test(errors, invalid_axis_for_every_axis_op)
{
    ag_tensor *(*fs[])(ag_tape *, ag_tensor *, int) = {sum_axis_3, mean_axis_3, max_axis_3, ag_softmax,
                                                       ag_log_softmax, slice_3, concat_3};
    const char *names[] = {"ag_sum_axis", "ag_mean_axis", "ag_max_axis", "ag_softmax",
                           "ag_log_softmax", "ag_slice", "ag_concat"};
    const int bad[] = {3, -4, 100, INT32_MIN};
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2, 3, 4)), *s = ag_scalar(AG_F64, 1);
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) {
        for (size_t j = 0; j < 4; j++) {
            ag_tape *t = ag_tape_new();
            cr_assert_null(fs[i](t, x, bad[j]), "%s axis %d", names[i], bad[j]);
            ot_assert_error(t, AG_ERR_VALUE, names[i], "axis");
            ag_tape_free(t);
        }
        ag_tape *t = ag_tape_new();
        cr_assert_null(fs[i](t, s, 0), "%s of a scalar", names[i]);
        ot_assert_error(t, AG_ERR_VALUE, names[i], NULL);
        ag_tape_free(t);
    }
    ag_tensor_free(x);
    ag_tensor_free(s);
    assert_all_freed();
}

Test(errors, slice_range_must_fit)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2, 5));
    const size_t ranges[][2] = {{3, 2}, {0, 6}, {6, 6}, {SIZE_MAX, 1}};
    for (size_t i = 0; i < 4; i++) {
        ag_tape *t = ag_tape_new();
        cr_assert_null(ag_slice(t, x, 1, ranges[i][0], ranges[i][1]));
        ot_assert_error(t, AG_ERR_VALUE, "ag_slice", "range");
        ag_tape_free(t);
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *empty = ag_slice(t, x, 1, 5, 5);
    cr_assert_not_null(empty, "an empty slice is valid: %s", ag_tape_error(t));
    cr_assert_eq(ag_tensor_numel(empty), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(errors, cross_entropy_labels_must_be_class_indices)
{
    ag_tensor *z = ag_zeros(AG_F64, AG_SHAPE(2, 3));
    const double bad[] = {0.5, 3, -1, NAN, INFINITY, 1e30};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int d = 0; d < 2; d++) {
            ag_tensor *c = ot_from(d ? AG_F32 : AG_F64, AG_SHAPE(2), (double[]){1, bad[i]});
            ag_tape *t = ag_tape_new();
            cr_assert_null(ag_cross_entropy(t, z, c), "label %g", bad[i]);
            ot_assert_error(t, AG_ERR_VALUE, "ag_cross_entropy", "row 1");
            ag_tape_free(t);
            ag_tensor_free(c);
        }
    }
    ag_tensor_free(z);
    assert_all_freed();
}

Test(errors, bce_probabilities_must_lie_in_unit_interval)
{
    ag_tensor *y = ag_full(AG_F64, AG_SHAPE(3), 0.5);
    const double bad[] = {1.5, -0.1, NAN, -INFINITY, 1 + 1e-15};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_tensor *p = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, bad[i], 1});
        ag_tape *t = ag_tape_new();
        cr_assert_null(ag_bce(t, p, y), "p = %g", bad[i]);
        ot_assert_error(t, AG_ERR_VALUE, "ag_bce", "p[1]");
        ag_tape_free(t);
        ag_tensor_free(p);
    }
    ag_tensor_free(y);
    assert_all_freed();
}

/* ------------------------------------------------------------ tapes */

Test(errors, tensor_from_another_tape)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2));
    ag_set_requires_grad(x, true);
    ag_tape *t1 = ag_tape_new(), *t2 = ag_tape_new();
    ag_tensor *y = ag_exp(t1, x), *s = ag_sum(t1, y);
    cr_assert_null(ag_add(t2, x, y));
    ot_assert_error(t2, AG_ERR_STATE, "ag_add", "input 2");
    ag_tape_reset(t2);
    cr_assert_eq(ag_backward(t2, s), AG_ERR_STATE);
    ot_assert_error(t2, AG_ERR_STATE, "ag_backward", "another tape");
    cr_assert_eq(ag_tape_status(t1), AG_OK);
    cr_assert_eq(ag_backward(t1, s), AG_OK);
    ag_tape_free(t1);
    ag_tape_free(t2);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ constructors */

Test(errors, constructors_reject_overflowing_sizes)
{
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    double d = 0;
    const size_t shapes[][2] = {{SIZE_MAX / 2, 4}, {SIZE_MAX / 4, 1}, {SIZE_MAX, SIZE_MAX}, {(size_t)1 << 62, 8}};
    for (size_t i = 0; i < 4; i++) {
        const size_t *s = shapes[i];
        cr_assert_null(ag_zeros(AG_F64, s, 2));
        cr_assert_null(ag_ones(AG_F32, s, 2));
        cr_assert_null(ag_full(AG_F64, s, 2, 1));
        cr_assert_null(ag_from_data(AG_F64, s, 2, &d));
        cr_assert_null(ag_rand_uniform(AG_F64, s, 2, 0, 1, &rng));
        cr_assert_null(ag_rand_normal(AG_F64, s, 2, 0, 1, &rng));
        cr_assert_null(ag_view(AG_F64, s, 2, &d, NULL), "view %zu", i);
    }
    cr_assert_eq(ta.attempts, 0, "no allocation should have been tried");
    assert_all_freed();
}

Test(errors, constructors_reject_bad_arguments)
{
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    double d[2] = {0};
    size_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 2};
    cr_assert_null(ag_zeros(AG_F64, nine, 9));
    cr_assert_null(ag_view(AG_F64, nine, 9, d, NULL));
    cr_assert_null(ag_zeros((ag_dtype)5, AG_SHAPE(2)));
    cr_assert_null(ag_scalar((ag_dtype)-1, 1));
    cr_assert_null(ag_ones(AG_F64, NULL, 2));
    cr_assert_null(ag_from_data(AG_F64, AG_SHAPE(2), NULL));
    cr_assert_null(ag_view(AG_F64, AG_SHAPE(2), NULL, NULL));
    cr_assert_null(ag_rand_uniform(AG_F64, AG_SHAPE(2), 0, 1, NULL));
    cr_assert_null(ag_rand_normal(AG_F64, AG_SHAPE(2), 0, 1, NULL));
    assert_all_freed();
}

Test(errors, op_results_with_overflowing_sizes)
{
    /* views allocate no data, so the operands can claim huge shapes; the
     * ops must refuse before touching any element */
    double d[1] = {0};
    const size_t big = (size_t)1 << 33;
    ag_tensor *col = ag_view(AG_F64, (size_t[]){big, 1}, 2, d, NULL);
    ag_tensor *row = ag_view(AG_F64, (size_t[]){1, big}, 2, d, NULL);
    cr_assert(col && row);
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_add(t, col, row));
    ot_assert_error(t, AG_ERR_OVERFLOW, "ag_add", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_matmul(t, col, row));
    ot_assert_error(t, AG_ERR_OVERFLOW, "ag_matmul", NULL);
    ag_tape_free(t);
    ag_tensor_free(col);
    ag_tensor_free(row);
    assert_all_freed();
}

/* ------------------------------------------------------------ backward */

Test(errors, backward_argument_errors)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(2, 3)), *c = ag_ones(AG_F64, AG_SHAPE(2, 3));
    ag_set_requires_grad(x, true);
    ag_tensor *bad_seeds[] = {ag_ones(AG_F64, AG_SHAPE(3, 2)), ag_ones(AG_F32, AG_SHAPE(2, 3)),
                              ag_ones(AG_F64, AG_SHAPE(6))};
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_exp(t, x);
    cr_assert_eq(ag_backward(t, y), AG_ERR_SHAPE);
    ot_assert_error(t, AG_ERR_SHAPE, "ag_backward", "[2,3]");
    for (size_t i = 0; i < 3; i++) {
        ag_tape_reset(t);
        y = ag_exp(t, x);
        cr_assert_eq(ag_backward_seed(t, y, bad_seeds[i]), AG_ERR_SHAPE, "seed %zu", i);
        ot_assert_error(t, AG_ERR_SHAPE, "ag_backward_seed", "seed");
    }
    ag_tape_reset(t);
    cr_assert_eq(ag_backward_seed(t, ag_exp(t, x), NULL), AG_ERR_NULL);
    ag_tape_reset(t);
    cr_assert_eq(ag_backward(t, NULL), AG_ERR_NULL);
    ot_assert_error(t, AG_ERR_NULL, "ag_backward", NULL);
    ag_tape_reset(t);
    cr_assert_eq(ag_backward(t, ag_sum(t, c)), AG_ERR_STATE, "no input requires grad");
    ot_assert_error(t, AG_ERR_STATE, "ag_backward", "require");
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get_grad(x, i), 0.0, "a failed backward changed grad %zu", i);
    ag_tape_free(t);
    for (size_t i = 0; i < 3; i++)
        ag_tensor_free(bad_seeds[i]);
    ag_tensor_free(x);
    ag_tensor_free(c);
    assert_all_freed();
}

/* ------------------------------------------------------------ out of memory */

typedef struct {
    bool done;          /* the run completed with no failure */
    bool tape_nomem;    /* a tape reported AG_ERR_NOMEM */
    bool in_backward;   /* ... from inside backward */
} oom_run;

static ag_tensor *random_leaf(ag_rng *rng, const size_t *shape, size_t rank, bool grad, bool *ok)
{
    ag_tensor *x = *ok ? ag_rand_normal(AG_F64, shape, rank, 0, 1, rng) : NULL;
    if (x && grad && ag_set_requires_grad(x, true) != AG_OK) {
        cr_assert(ta.failed);
        ag_tensor_free(x);
        x = NULL;
    }
    *ok = x != NULL;
    return x;
}

/* Leaves, a tape, a sigmoid layer big enough to need several arena
 * chunks, and backward; the allocator refuses allocation number n. */
static oom_run oom_attempt(size_t n, double *grad_sum)
{
    test_alloc_install(&ta, n);
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    bool ok = true;
    ag_tensor *x = random_leaf(&rng, AG_SHAPE(200, 50), false, &ok);
    ag_tensor *W = random_leaf(&rng, AG_SHAPE(50, 40), true, &ok);
    ag_tensor *b = random_leaf(&rng, AG_SHAPE(40), true, &ok);
    ag_tensor *y = random_leaf(&rng, AG_SHAPE(200, 40), false, &ok);
    ag_tape *t = ok ? ag_tape_new() : NULL;
    oom_run r = {0};
    if (t) {
        ag_tensor *C = ag_quadratic_cost(t, ag_sigmoid(t, ag_add(t, ag_matmul(t, x, W), b)), y);
        bool forward_ok = C != NULL;
        ag_status s = ag_backward(t, C);
        cr_assert_eq(s, ag_tape_status(t));
        if (s == AG_OK) {
            r.done = !ta.failed;
            for (size_t i = 0; i < 2000; i++)
                *grad_sum += ag_get_grad(W, i);
        } else {
            cr_assert_eq(s, AG_ERR_NOMEM, "allocation %zu: %s", n, ag_tape_error(t));
            cr_assert(strstr(ag_tape_error(t), "memory") != NULL, "%s", ag_tape_error(t));
            r.tape_nomem = true;
            r.in_backward = forward_ok;
        }
    }
    cr_assert(r.done || ta.failed, "allocation %zu: failed without a refused allocation", n);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(W);
    ag_tensor_free(b);
    ag_tensor_free(y);
    assert_all_freed();
    return r;
}

Test(errors, allocation_failure_at_every_allocation_of_a_step)
{
    double want = 0, got = 0;
    oom_attempt(0, &want); /* the reference: nothing fails */
    size_t n = 1, tape_errors = 0, backward_errors = 0;
    for (;; n++) {
        cr_assert_lt(n, 1000, "runaway");
        oom_run r = oom_attempt(n, &got);
        if (r.done)
            break;
        tape_errors += r.tape_nomem;
        backward_errors += r.in_backward;
    }
    cr_assert_gt(n, 8, "only %zu allocations", n);
    cr_assert_gt(tape_errors, 0);
    cr_assert_gt(backward_errors, 0, "no failure happened inside backward");
    cr_assert_eq(got, want, "the run after the failures computed %g, want %g", got, want);
}

Test(errors, tape_recovers_from_out_of_memory_after_reset)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(64, 64));
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ta.fail_at = ta.attempts + 1; /* the arena's first chunk */
    cr_assert_null(ag_exp(t, x));
    ot_assert_error(t, AG_ERR_NOMEM, "memory", NULL);
    ag_tape_reset(t);
    ag_tensor *y = ag_sum(t, ag_exp(t, x));
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    cr_assert_eq(ag_backward(t, y), AG_OK);
    cr_assert_eq(ag_get_grad(x, 0), exp(1.0));
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(errors, requires_grad_and_tape_new_report_out_of_memory)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(4));
    ta.fail_at = ta.attempts + 1;
    cr_assert_eq(ag_set_requires_grad(x, true), AG_ERR_NOMEM);
    cr_assert_not(ag_requires_grad(x));
    cr_assert_null(ag_grad(x));
    ta.fail_at = ta.attempts + 1;
    cr_assert_null(ag_tape_new());
    ta.fail_at = ta.attempts + 1;
    cr_assert_null(ag_zeros(AG_F64, AG_SHAPE(2)));
    ag_tensor_free(x);
    assert_all_freed();
}
