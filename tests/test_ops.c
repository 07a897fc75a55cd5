/* test_ops.c: every op by gradcheck in f64, forward values against plain C
 * loops, numerical stability at +-1000, and the PyTorch reference cases. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "optest.h"

static ag_rng rng;

static void seed_rng(void) { ag_rng_seed(&rng, 20240601); }

TestSuite(gradcheck, .init = seed_rng);
TestSuite(forward, .init = seed_rng);
TestSuite(stability);
TestSuite(reference);

/* ------------------------------------------------------------ helpers */

/* An f64 tensor uniform in [lo, hi) of the given dimensions. */
#define U(lo, hi, ...) ot_uniform(&rng, AG_F64, AG_SHAPE(__VA_ARGS__), lo, hi, false)

/* What the functions under check apply, with their parameters. */
typedef struct {
    ag_tensor *(*f1)(ag_tape *, ag_tensor *);
    ag_tensor *(*f2)(ag_tape *, ag_tensor *, ag_tensor *);
    ag_tensor *(*fp)(ag_tape *, ag_tensor *, double);
    ag_tensor *(*fa)(ag_tape *, ag_tensor *, int, bool);
    ag_tensor *(*fs)(ag_tape *, ag_tensor *, int);
    double p;
    int axis;
    bool keep;
    size_t start, end, rank, shape[AG_MAX_RANK];
    ag_tensor *c; /* cross_entropy's classes: constant, not an input */
} op_args;

static ag_tensor *apply1(ag_tape *t, ag_tensor *const *x, void *c) { return ((op_args *)c)->f1(t, x[0]); }
static ag_tensor *apply2(ag_tape *t, ag_tensor *const *x, void *c) { return ((op_args *)c)->f2(t, x[0], x[1]); }

static ag_tensor *apply_p(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return a->fp(t, x[0], a->p);
}

static ag_tensor *apply_axis(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return a->fa(t, x[0], a->axis, a->keep);
}

static ag_tensor *apply_soft(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return a->fs(t, x[0], a->axis);
}

static ag_tensor *apply_slice(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return ag_slice(t, x[0], a->axis, a->start, a->end);
}

static ag_tensor *apply_reshape(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    /* a nonlinear op after the reshape so its gradient layout matters */
    return ag_mul(t, ag_reshape(t, x[0], a->shape, a->rank), ag_reshape(t, ag_tanh(t, x[0]), a->shape, a->rank));
}

static ag_tensor *apply_concat(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_concat(t, x[0], x[1], ((op_args *)ctx)->axis);
}

static ag_tensor *apply_concat_self(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_concat(t, x[0], x[0], ((op_args *)ctx)->axis);
}

static ag_tensor *apply_cross_entropy(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_cross_entropy(t, x[0], ((op_args *)ctx)->c);
}

static ag_tensor *apply_cast_round_trip(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    (void)ctx;
    return ag_cast(t, ag_cast(t, x[0], AG_F32), AG_F64);
}

/* ------------------------------------------------------------ gradcheck: binary */

typedef ag_tensor *(*binop)(ag_tape *, ag_tensor *, ag_tensor *);

static const struct {
    const char *name;
    binop f;
} binops[] = {{"add", ag_add}, {"sub", ag_sub}, {"mul", ag_mul}, {"div", ag_div}};

/* Every binary op on a pair of shapes, both orders; b stays in [0.5, 2)
 * so it is a safe divisor. */
static void check_binops(const size_t *sa, size_t ra, const size_t *sb, size_t rb)
{
    for (size_t k = 0; k < 4; k++) {
        op_args args = {.f2 = binops[k].f};
        ot_check_pair_and_free(binops[k].name, apply2, &args, ot_uniform(&rng, AG_F64, sa, ra, -1, 1, false),
                               ot_uniform(&rng, AG_F64, sb, rb, 0.5, 2, false));
        ot_check_pair_and_free(binops[k].name, apply2, &args, ot_uniform(&rng, AG_F64, sb, rb, 0.5, 2, false),
                               ot_uniform(&rng, AG_F64, sa, ra, 0.5, 2, false));
    }
}

Test(gradcheck, binary_same_shape) { check_binops(AG_SHAPE(2, 3), AG_SHAPE(2, 3)); }
Test(gradcheck, binary_broadcast_row) { check_binops(AG_SHAPE(3, 4), AG_SHAPE(4)); }
Test(gradcheck, binary_broadcast_rank3_with_column) { check_binops(AG_SHAPE(2, 3, 4), AG_SHAPE(3, 1)); }
Test(gradcheck, binary_broadcast_both_sides) { check_binops(AG_SHAPE(2, 1, 4), AG_SHAPE(3, 1)); }
Test(gradcheck, binary_outer_broadcast) { check_binops(AG_SHAPE(3, 1), AG_SHAPE(1, 4)); }
Test(gradcheck, binary_scalar_with_tensor) { check_binops(NULL, 0, AG_SHAPE(2, 3)); }
Test(gradcheck, binary_scalar_with_scalar) { check_binops(NULL, 0, NULL, 0); }
Test(gradcheck, binary_rank_eight) { check_binops(AG_SHAPE(2, 1, 2, 1, 1, 2, 1, 3), AG_SHAPE(2, 1, 1, 3)); }


/* ------------------------------------------------------------ gradcheck: unary */

static void check_unary(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *), ag_tensor *x)
{
    op_args args = {.f1 = f};
    ot_check_pair_and_free(name, apply1, &args, x, NULL);
}

Test(gradcheck, neg) { check_unary("neg", ag_neg, U(-2, 2, 2, 3)); }
Test(gradcheck, exp) { check_unary("exp", ag_exp, U(-2, 2, 2, 3)); }
Test(gradcheck, log) { check_unary("log", ag_log, U(0.3, 3, 2, 3)); }
Test(gradcheck, sqrt) { check_unary("sqrt", ag_sqrt, U(0.3, 3, 2, 3)); }
Test(gradcheck, abs) { check_unary("abs", ag_abs, ot_away_from_zero(&rng, 0.1, AG_SHAPE(3, 4))); }
Test(gradcheck, sigmoid) { check_unary("sigmoid", ag_sigmoid, U(-4, 4, 3, 4)); }
Test(gradcheck, tanh) { check_unary("tanh", ag_tanh, U(-2, 2, 3, 4)); }
Test(gradcheck, relu) { check_unary("relu", ag_relu, ot_away_from_zero(&rng, 0.1, AG_SHAPE(3, 4))); }
Test(gradcheck, softplus) { check_unary("softplus", ag_softplus, U(-4, 4, 3, 4)); }
Test(gradcheck, unary_on_scalar)
{
    check_unary("exp of a scalar", ag_exp, ot_uniform(&rng, AG_F64, NULL, 0, -1, 1, false));
}

static void check_param(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *, double), double p,
                        ag_tensor *x)
{
    op_args args = {.fp = f, .p = p};
    ot_check_pair_and_free(name, apply_p, &args, x, NULL);
}

Test(gradcheck, pow_several_exponents)
{
    const double ps[] = {2, 3, 0.5, -1.5, 1, 0, 2.7};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        check_param("pow", ag_pow, ps[i], U(0.3, 2, 2, 3));
}

Test(gradcheck, leaky_relu)
{
    check_param("leaky_relu", ag_leaky_relu, 0.1, ot_away_from_zero(&rng, 0.1, AG_SHAPE(3, 4)));
    check_param("leaky_relu", ag_leaky_relu, -0.5, ot_away_from_zero(&rng, 0.1, AG_SHAPE(5)));
}

Test(gradcheck, add_scalar) { check_param("add_scalar", ag_add_scalar, 3.5, U(-1, 1, 2, 3)); }
Test(gradcheck, scale) { check_param("scale", ag_scale, -2.5, U(-1, 1, 2, 3)); }

/* ------------------------------------------------------------ gradcheck: matmul, shapes */

static void check_matmul(const size_t *sa, size_t ra, const size_t *sb, size_t rb)
{
    op_args args = {.f2 = ag_matmul};
    ot_check_pair_and_free("matmul", apply2, &args, ot_uniform(&rng, AG_F64, sa, ra, -1, 1, false),
                           ot_uniform(&rng, AG_F64, sb, rb, -1, 1, false));
}

Test(gradcheck, matmul_2d) { check_matmul(AG_SHAPE(3, 4), AG_SHAPE(4, 2)); }
Test(gradcheck, matmul_batched) { check_matmul(AG_SHAPE(2, 3, 4), AG_SHAPE(2, 4, 5)); }
Test(gradcheck, matmul_shared_right) { check_matmul(AG_SHAPE(2, 3, 4), AG_SHAPE(4, 5)); }
Test(gradcheck, matmul_shared_left) { check_matmul(AG_SHAPE(3, 4), AG_SHAPE(2, 4, 5)); }
Test(gradcheck, matmul_vector_shapes) { check_matmul(AG_SHAPE(1, 5), AG_SHAPE(5, 1)); }

Test(gradcheck, transpose)
{
    check_unary("transpose 2-D", ag_transpose, U(-1, 1, 3, 4));
    check_unary("transpose 3-D", ag_transpose, U(-1, 1, 2, 3, 4));
}

Test(gradcheck, reshape)
{
    op_args a = {.rank = 2, .shape = {4, 6}};
    ot_check_pair_and_free("reshape [2,3,4]->[4,6]", apply_reshape, &a, U(-1, 1, 2, 3, 4), NULL);
    op_args b = {.rank = 1, .shape = {24}};
    ot_check_pair_and_free("reshape [2,3,4]->[24]", apply_reshape, &b, U(-1, 1, 2, 3, 4), NULL);
    op_args c = {.rank = 0};
    ot_check_pair_and_free("reshape [1,1]->[]", apply_reshape, &c, U(-1, 1, 1, 1), NULL);
}

Test(gradcheck, concat_each_axis)
{
    op_args a = {.axis = 0};
    ot_check_pair_and_free("concat axis 0", apply_concat, &a, U(-1, 1, 2, 3, 4), U(-1, 1, 1, 3, 4));
    a.axis = 1;
    ot_check_pair_and_free("concat axis 1", apply_concat, &a, U(-1, 1, 2, 3, 4), U(-1, 1, 2, 2, 4));
    a.axis = 2;
    ot_check_pair_and_free("concat axis 2", apply_concat, &a, U(-1, 1, 2, 3, 4), U(-1, 1, 2, 3, 5));
    a.axis = -1;
    ot_check_pair_and_free("concat axis -1", apply_concat, &a, U(-1, 1, 2, 3), U(-1, 1, 2, 1));
}

Test(gradcheck, concat_same_tensor_twice)
{
    for (int axis = 0; axis < 3; axis++) {
        op_args a = {.axis = axis};
        ot_check_pair_and_free("concat x with x", apply_concat_self, &a, U(-1, 1, 2, 3, 4), NULL);
    }
}

Test(gradcheck, slice)
{
    op_args a = {.axis = 1, .start = 1, .end = 4};
    ot_check_pair_and_free("slice axis 1", apply_slice, &a, U(-1, 1, 2, 5, 3), NULL);
    op_args b = {.axis = 0, .start = 1, .end = 2};
    ot_check_pair_and_free("slice axis 0", apply_slice, &b, U(-1, 1, 2, 5, 3), NULL);
    op_args c = {.axis = -1, .start = 0, .end = 2};
    ot_check_pair_and_free("slice axis -1", apply_slice, &c, U(-1, 1, 2, 5, 3), NULL);
}

Test(gradcheck, cast_round_trip_with_loose_tolerance)
{
    /* f32 rounding of x +- eps limits the finite differences to ~1e-4 */
    ag_tensor *x = U(-1, 1, 2, 3);
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(apply_cast_round_trip, NULL, 1, &x, 1e-3, 1e-3, 1e-3, &rep), AG_OK);
    cr_assert(rep.passed, "numeric %g analytic %g", rep.numeric, rep.analytic);
    cr_assert_eq(rep.checked, 6);
    ag_tensor_free(x);
}

Test(gradcheck, cast_round_trip_gradient_is_exact)
{
    /* d/dx Σ w·f64(f32(x)) = w, exactly for weights that f32 holds */
    const double w[4] = {0.5, -1.25, 3, 1024};
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(4), (double[]){0.1, -0.2, 0.3, 1e-3});
    ag_tensor *W = ot_from(AG_F64, AG_SHAPE(4), w);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *c = ag_cast(t, ag_cast(t, x, AG_F32), AG_F64);
    cr_assert_eq(ag_tensor_dtype(c), AG_F64);
    cr_assert_eq(ag_get(c, 0), (double)0.1f);
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, c, W))), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(ag_get_grad(x, i), w[i]);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(W);
}

/* ------------------------------------------------------------ gradcheck: reductions */

Test(gradcheck, sum_and_mean)
{
    check_unary("sum", ag_sum, U(-1, 1, 2, 3, 4));
    check_unary("mean", ag_mean, U(-1, 1, 2, 3, 4));
    check_unary("sum of a scalar", ag_sum, ot_uniform(&rng, AG_F64, NULL, 0, -1, 1, false));
}

static void check_axis_op(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *, int, bool))
{
    const int axes[] = {0, 1, 2, -1, -2, -3};
    for (size_t i = 0; i < 6; i++)
        for (int keep = 0; keep < 2; keep++) {
            op_args a = {.fa = f, .axis = axes[i], .keep = keep};
            char what[64];
            snprintf(what, sizeof what, "%s axis %d keepdim %d", name, axes[i], keep);
            ot_check_pair_and_free(what, apply_axis, &a, U(-1, 1, 2, 3, 4), NULL);
        }
}

Test(gradcheck, rank_eight_transpose_and_axis_reduction)
{
    check_unary("transpose rank 8", ag_transpose, U(-1, 1, 1, 2, 1, 2, 1, 1, 2, 3));
    op_args a = {.fa = ag_sum_axis, .axis = 3, .keep = false};
    ot_check_pair_and_free("sum_axis rank 8", apply_axis, &a, U(-1, 1, 1, 2, 1, 2, 1, 1, 2, 3), NULL);
}

Test(gradcheck, sum_axis) { check_axis_op("sum_axis", ag_sum_axis); }
Test(gradcheck, mean_axis) { check_axis_op("mean_axis", ag_mean_axis); }
Test(gradcheck, max_axis) { check_axis_op("max_axis", ag_max_axis); }

static void check_softmax_op(const char *name, ag_tensor *(*f)(ag_tape *, ag_tensor *, int))
{
    const int axes[] = {0, 1, 2, -1};
    for (size_t i = 0; i < 4; i++) {
        op_args a = {.fs = f, .axis = axes[i]};
        char what[64];
        snprintf(what, sizeof what, "%s axis %d", name, axes[i]);
        ot_check_pair_and_free(what, apply_soft, &a, U(-2, 2, 2, 3, 4), NULL);
    }
}

Test(gradcheck, softmax) { check_softmax_op("softmax", ag_softmax); }
Test(gradcheck, log_softmax) { check_softmax_op("log_softmax", ag_log_softmax); }

/* ------------------------------------------------------------ gradcheck: losses */

static void check_loss(const char *name, binop f, ag_tensor *a, ag_tensor *y)
{
    op_args args = {.f2 = f};
    ot_check_pair_and_free(name, apply2, &args, a, y);
}

Test(gradcheck, mse) { check_loss("mse", ag_mse, U(-1, 1, 3, 4), U(-1, 1, 3, 4)); }

Test(gradcheck, quadratic_cost)
{
    check_loss("quadratic_cost [3,4]", ag_quadratic_cost, U(-1, 1, 3, 4), U(-1, 1, 3, 4));
    check_loss("quadratic_cost [5]", ag_quadratic_cost, U(-1, 1, 5), U(-1, 1, 5));
}

Test(gradcheck, bce) { check_loss("bce", ag_bce, U(0.05, 0.95, 3, 4), U(0, 1, 3, 4)); }

Test(gradcheck, bce_with_logits)
{
    check_loss("bce_with_logits", ag_bce_with_logits, U(-3, 3, 3, 4), U(0, 1, 3, 4));
}

Test(gradcheck, cross_entropy)
{
    ag_tensor *c = ot_from(AG_F64, AG_SHAPE(4), (double[]){0, 4, 2, 4});
    op_args a = {.c = c};
    ot_check_pair_and_free("cross_entropy", apply_cross_entropy, &a, U(-2, 2, 4, 5), NULL);
    ag_tensor_free(c);
}

/* Nielsen's layer: the four BP equations fall out of these op rules. */
static ag_tensor *sigmoid_layer_cost(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    ag_tensor *in = ((ag_tensor **)ctx)[0], *target = ((ag_tensor **)ctx)[1];
    ag_tensor *a1 = ag_sigmoid(t, ag_add(t, ag_matmul(t, in, x[0]), x[1]));
    return ag_quadratic_cost(t, a1, target);
}

Test(gradcheck, sigmoid_layer_with_quadratic_cost)
{
    ag_tensor *ctx[2] = {U(-1, 1, 4, 3), U(0, 1, 4, 2)};
    ot_check_pair_and_free("layer", sigmoid_layer_cost, ctx, U(-1, 1, 3, 2), U(-1, 1, 2));
    ag_tensor_free(ctx[0]);
    ag_tensor_free(ctx[1]);
}

/* ------------------------------------------------------------ forward values */

Test(forward, broadcast_binary_ops)
{
    ag_tensor *a = U(-1, 1, 2, 3, 4), *b = U(0.5, 2, 3, 1);
    const double *A = ag_data(a), *B = ag_data(b);
    ag_tape *t = ag_tape_new();
    ag_tensor *ys[4] = {ag_add(t, a, b), ag_sub(t, a, b), ag_mul(t, a, b), ag_div(t, b, a)};
    double want[4][24];
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < 3; j++)
            for (size_t k = 0; k < 4; k++) {
                double x = A[(i * 3 + j) * 4 + k], z = B[j];
                size_t e = (i * 3 + j) * 4 + k;
                want[0][e] = x + z;
                want[1][e] = x - z;
                want[2][e] = x * z;
                want[3][e] = z / x;
            }
    for (int o = 0; o < 4; o++) {
        ot_assert_shape(ys[o], AG_SHAPE(2, 3, 4));
        ot_assert_values(ys[o], want[o], 24, 1e-15);
    }
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(forward, unary_ops_match_libm)
{
    ag_tensor *x = U(0.2, 3, 7), *n = U(-3, 3, 7);
    const double *X = ag_data(x), *N = ag_data(n);
    ag_tape *t = ag_tape_new();
    ag_tensor *ys[] = {ag_exp(t, n), ag_log(t, x), ag_sqrt(t, x), ag_pow(t, x, 1.7), ag_tanh(t, n),
                       ag_sigmoid(t, n), ag_softplus(t, n), ag_relu(t, n), ag_abs(t, n),
                       ag_leaky_relu(t, n, 0.2), ag_neg(t, n), ag_add_scalar(t, n, 2.5), ag_scale(t, n, -3)};
    for (size_t i = 0; i < 7; i++) {
        double v = N[i], p = X[i];
        double want[] = {exp(v), log(p), sqrt(p), pow(p, 1.7), tanh(v),
                         1 / (1 + exp(-v)), log1p(exp(v)), v > 0 ? v : 0, fabs(v),
                         v > 0 ? v : 0.2 * v, -v, v + 2.5, -3 * v};
        for (size_t k = 0; k < sizeof ys / sizeof ys[0]; k++)
            cr_assert(fabs(ag_get(ys[k], i) - want[k]) <= 1e-14 * (1 + fabs(want[k])),
                      "op %zu element %zu: got %.17g want %.17g", k, i, ag_get(ys[k], i), want[k]);
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(n);
}

Test(forward, matmul_shared_operand_in_f64_and_f32)
{
    ag_tensor *a = U(-1, 1, 2, 3, 4), *b = U(-1, 1, 4, 5);
    const double *A = ag_data(a), *B = ag_data(b);
    double want[2 * 3 * 5];
    for (size_t s = 0; s < 2; s++)
        for (size_t i = 0; i < 3; i++)
            for (size_t j = 0; j < 5; j++) {
                double acc = 0;
                for (size_t k = 0; k < 4; k++)
                    acc += A[(s * 3 + i) * 4 + k] * B[k * 5 + j];
                want[(s * 3 + i) * 5 + j] = acc;
            }
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_matmul(t, a, b);
    ot_assert_shape(y, AG_SHAPE(2, 3, 5));
    ot_assert_values(y, want, 30, 1e-14);
    ag_tensor *y32 = ag_matmul(t, ag_cast(t, a, AG_F32), ag_cast(t, b, AG_F32));
    cr_assert_eq(ag_tensor_dtype(y32), AG_F32);
    ot_assert_values(y32, want, 30, 1e-5);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(forward, transpose_concat_slice_reshape_move_elements)
{
    ag_tensor *x = U(-1, 1, 2, 3, 4), *z = U(-1, 1, 2, 2, 4);
    const double *X = ag_data(x), *Z = ag_data(z);
    ag_tape *t = ag_tape_new();
    ag_tensor *tr = ag_transpose(t, x), *cat = ag_concat(t, x, z, 1), *sl = ag_slice(t, x, 2, 1, 3);
    ag_tensor *rs = ag_reshape(t, x, AG_SHAPE(6, 4));
    ot_assert_shape(tr, AG_SHAPE(2, 4, 3));
    ot_assert_shape(cat, AG_SHAPE(2, 5, 4));
    ot_assert_shape(sl, AG_SHAPE(2, 3, 2));
    ot_assert_shape(rs, AG_SHAPE(6, 4));
    for (size_t b = 0; b < 2; b++)
        for (size_t i = 0; i < 3; i++)
            for (size_t j = 0; j < 4; j++) {
                double v = X[(b * 3 + i) * 4 + j];
                cr_assert_eq(ag_get(tr, (b * 4 + j) * 3 + i), v);
                cr_assert_eq(ag_get(cat, (b * 5 + i) * 4 + j), v);
                cr_assert_eq(ag_get(rs, (b * 3 + i) * 4 + j), v);
                if (j >= 1 && j < 3)
                    cr_assert_eq(ag_get(sl, (b * 3 + i) * 2 + (j - 1)), v);
            }
    for (size_t b = 0; b < 2; b++)
        for (size_t i = 0; i < 2; i++)
            for (size_t j = 0; j < 4; j++)
                cr_assert_eq(ag_get(cat, (b * 5 + 3 + i) * 4 + j), Z[(b * 2 + i) * 4 + j]);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(z);
}

Test(forward, axis_reductions_and_their_shapes)
{
    ag_tensor *x = U(-1, 1, 2, 3, 4);
    const double *X = ag_data(x);
    ag_tape *t = ag_tape_new();
    ag_tensor *s = ag_sum_axis(t, x, 1, true), *m = ag_mean_axis(t, x, -1, false);
    ag_tensor *mx = ag_max_axis(t, x, 0, false), *all = ag_sum(t, x), *avg = ag_mean(t, x);
    ot_assert_shape(s, AG_SHAPE(2, 1, 4));
    ot_assert_shape(m, AG_SHAPE(2, 3));
    ot_assert_shape(mx, AG_SHAPE(3, 4));
    ot_assert_shape(all, NULL, 0);
    double ws[8] = {0}, wm[6] = {0}, wmx[12], total = 0;
    for (size_t j = 0; j < 12; j++)
        wmx[j] = -INFINITY;
    for (size_t b = 0; b < 2; b++)
        for (size_t i = 0; i < 3; i++)
            for (size_t j = 0; j < 4; j++) {
                double v = X[(b * 3 + i) * 4 + j];
                ws[b * 4 + j] += v;
                wm[b * 3 + i] += v / 4;
                wmx[i * 4 + j] = fmax(wmx[i * 4 + j], v);
                total += v;
            }
    ot_assert_values(s, ws, 8, 1e-14);
    ot_assert_values(m, wm, 6, 1e-14);
    ot_assert_values(mx, wmx, 12, 0);
    ot_assert_values(all, &total, 1, 1e-14);
    double mean = total / 24;
    ot_assert_values(avg, &mean, 1, 1e-14);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward, softmax_and_log_softmax_along_middle_axis)
{
    ag_tensor *x = U(-3, 3, 2, 3, 4);
    const double *X = ag_data(x);
    ag_tape *t = ag_tape_new();
    ag_tensor *sm = ag_softmax(t, x, 1), *ls = ag_log_softmax(t, x, -2);
    double ws[24], wl[24];
    for (size_t b = 0; b < 2; b++)
        for (size_t j = 0; j < 4; j++) {
            double z = 0;
            for (size_t i = 0; i < 3; i++)
                z += exp(X[(b * 3 + i) * 4 + j]);
            for (size_t i = 0; i < 3; i++) {
                size_t e = (b * 3 + i) * 4 + j;
                ws[e] = exp(X[e]) / z;
                wl[e] = X[e] - log(z);
            }
        }
    ot_assert_values(sm, ws, 24, 1e-14);
    ot_assert_values(ls, wl, 24, 1e-14);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(forward, losses_match_their_formulas)
{
    ag_tensor *a = U(0.05, 0.95, 3, 4), *y = U(0, 1, 3, 4), *z = U(-3, 3, 3, 4);
    const double *A = ag_data(a), *Y = ag_data(y), *Z = ag_data(z);
    double mse = 0, quad = 0, bce = 0, bcel = 0;
    for (size_t i = 0; i < 12; i++) {
        mse += (A[i] - Y[i]) * (A[i] - Y[i]) / 12;
        quad += (A[i] - Y[i]) * (A[i] - Y[i]) / (2 * 3);
        bce -= (Y[i] * log(A[i]) + (1 - Y[i]) * log(1 - A[i])) / 12;
        double p = 1 / (1 + exp(-Z[i]));
        bcel -= (Y[i] * log(p) + (1 - Y[i]) * log(1 - p)) / 12;
    }
    ag_tape *t = ag_tape_new();
    ot_assert_values(ag_mse(t, a, y), &mse, 1, 1e-14);
    ot_assert_values(ag_quadratic_cost(t, a, y), &quad, 1, 1e-14);
    ot_assert_values(ag_bce(t, a, y), &bce, 1, 1e-14);
    ot_assert_values(ag_bce_with_logits(t, z, y), &bcel, 1, 1e-13);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(y);
    ag_tensor_free(z);
}

Test(forward, cross_entropy_with_classes_in_either_dtype)
{
    ag_tensor *z = U(-2, 2, 3, 4);
    const double *Z = ag_data(z), cls[3] = {3, 0, 2};
    double want = 0;
    for (size_t r = 0; r < 3; r++) {
        double s = 0;
        for (size_t j = 0; j < 4; j++)
            s += exp(Z[r * 4 + j]);
        want += (log(s) - Z[r * 4 + (size_t)cls[r]]) / 3;
    }
    ag_tensor *c64 = ot_from(AG_F64, AG_SHAPE(3), cls), *c32 = ot_from(AG_F32, AG_SHAPE(3), cls);
    ag_tape *t = ag_tape_new();
    ot_assert_values(ag_cross_entropy(t, z, c64), &want, 1, 1e-14);
    ot_assert_values(ag_cross_entropy(t, z, c32), &want, 1, 1e-14);
    ot_assert_values(ag_cross_entropy(t, ag_cast(t, z, AG_F32), c64), &want, 1, 1e-5);
    ag_tape_free(t);
    ag_tensor_free(z);
    ag_tensor_free(c64);
    ag_tensor_free(c32);
}

Test(forward, max_axis_gradient_goes_to_first_maximum_on_ties)
{
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(2, 3), (double[]){1, 3, 3, 2, 2, 0});
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *m = ag_max_axis(t, x, 1, false);
    ot_assert_values(m, (double[]){3, 2}, 2, 0);
    cr_assert_eq(ag_backward(t, ag_sum(t, m)), AG_OK);
    const double want[6] = {0, 1, 0, 1, 0, 0};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get_grad(x, i), want[i], "grad %zu", i);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ------------------------------------------------------------ stability at +-1000 */

/* Runs f on x on a new tape; returns the tape for the caller to free. */
static ag_tape *run(ag_tensor *(*f)(ag_tape *, ag_tensor *, int), ag_tensor *x, int axis, ag_tensor **y)
{
    ag_tape *t = ag_tape_new();
    *y = f(t, x, axis);
    cr_assert_not_null(*y, "%s", ag_tape_error(t));
    return t;
}

static void assert_finite_grad(const ag_tensor *x)
{
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        cr_assert(isfinite(ag_get_grad(x, i)), "grad %zu = %g", i, ag_get_grad(x, i));
}

Test(stability, softmax_of_1000_and_0)
{
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F32 : AG_F64;
        ag_tensor *x = ot_leaf(dt, AG_SHAPE(2, 2), (double[]){1000, 0, 1000, 999}), *y;
        ag_tape *t = run(ag_softmax, x, 1, &y);
        double s1 = 1 / (1 + exp(-1.0)); /* softmax([1000, 999]) = softmax([1, 0]) */
        ot_assert_values(y, (double[]){1, 0, s1, 1 - s1}, 4, dt == AG_F32 ? 1e-6 : 1e-15);
        ag_tensor *seed = ot_from(dt, AG_SHAPE(2, 2), (double[]){1, -1, 1, -1});
        cr_assert_eq(ag_backward_seed(t, y, seed), AG_OK);
        assert_finite_grad(x);
        /* d/dx (y0 - y1) = 2 y0 y1 (1, -1) */
        double g = 2 * s1 * (1 - s1);
        cr_assert(fabs(ag_get_grad(x, 0)) < 1e-30 && fabs(ag_get_grad(x, 1)) < 1e-30);
        cr_assert(fabs(ag_get_grad(x, 2) - g) < 1e-6 && fabs(ag_get_grad(x, 3) + g) < 1e-6);
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(seed);
    }
}

Test(stability, log_softmax_of_1000_and_minus_1000)
{
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F32 : AG_F64;
        ag_tensor *x = ot_leaf(dt, AG_SHAPE(2), (double[]){1000, -1000}), *y;
        ag_tape *t = run(ag_log_softmax, x, 0, &y);
        ot_assert_values(y, (double[]){0, -2000}, 2, 0);
        cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK);
        /* d/dx Σ log_softmax = 1 - 2 softmax = (-1, 1) */
        cr_assert_eq(ag_get_grad(x, 0), -1.0);
        cr_assert_eq(ag_get_grad(x, 1), 1.0);
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

static ag_tensor *unary_as_axis_fn_sigmoid(ag_tape *t, ag_tensor *x, int axis)
{
    (void)axis;
    return ag_sigmoid(t, x);
}

static ag_tensor *unary_as_axis_fn_softplus(ag_tape *t, ag_tensor *x, int axis)
{
    (void)axis;
    return ag_softplus(t, x);
}

Test(stability, sigmoid_of_plus_minus_1000_and_40)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(4), (double[]){1000, -1000, -40, 40}), *y;
    ag_tape *t = run(unary_as_axis_fn_sigmoid, x, 0, &y);
    cr_assert_eq(ag_get(y, 0), 1.0);
    cr_assert_eq(ag_get(y, 1), 0.0);
    double e40 = exp(-40.0);
    cr_assert(fabs(ag_get(y, 2) - e40 / (1 + e40)) <= 1e-15 * e40, "sigmoid(-40) = %.17g", ag_get(y, 2));
    cr_assert_eq(ag_get(y, 3), 1 / (1 + e40));
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK);
    assert_finite_grad(x);
    cr_assert_eq(ag_get_grad(x, 0), 0.0);
    cr_assert_eq(ag_get_grad(x, 1), 0.0);
    cr_assert(fabs(ag_get_grad(x, 2) - e40) <= 1e-14 * e40, "grad at -40 = %.17g", ag_get_grad(x, 2));
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(stability, softplus_of_plus_minus_1000_and_30)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(4), (double[]){1000, -1000, -30, 30}), *y;
    ag_tape *t = run(unary_as_axis_fn_softplus, x, 0, &y);
    cr_assert_eq(ag_get(y, 0), 1000.0);
    cr_assert(ag_get(y, 1) >= 0 && ag_get(y, 1) <= 1e-300, "softplus(-1000) = %g", ag_get(y, 1));
    /* ln(1 + e^-30) = e^-30 - e^-60/2 + ...: a naive log(1 + exp(x)) loses ~3 digits here */
    double e30 = exp(-30.0), want = e30 - e30 * e30 / 2;
    cr_assert(fabs(ag_get(y, 2) - want) <= 1e-15 * want, "softplus(-30) = %.17g", ag_get(y, 2));
    cr_assert(fabs(ag_get(y, 3) - (30 + want)) <= 1e-15 * 30);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK);
    cr_assert_eq(ag_get_grad(x, 0), 1.0);
    cr_assert(ag_get_grad(x, 1) >= 0 && ag_get_grad(x, 1) <= 1e-300);
    cr_assert(fabs(ag_get_grad(x, 2) - e30 / (1 + e30)) <= 1e-14 * e30);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(stability, softplus_f32_stays_finite)
{
    ag_tensor *x = ot_leaf(AG_F32, AG_SHAPE(2), (double[]){1000, -1000}), *y;
    ag_tape *t = run(unary_as_axis_fn_softplus, x, 0, &y);
    cr_assert_eq(ag_get(y, 0), 1000.0);
    cr_assert_eq(ag_get(y, 1), 0.0);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK);
    assert_finite_grad(x);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(stability, bce_with_logits_at_plus_minus_1000)
{
    ag_tensor *z = ot_leaf(AG_F64, AG_SHAPE(4), (double[]){1000, -1000, 1000, -1000});
    ag_tensor *y = ot_leaf(AG_F64, AG_SHAPE(4), (double[]){1, 1, 0, 0});
    ag_tape *t = ag_tape_new();
    ag_tensor *L = ag_bce_with_logits(t, z, y);
    /* per element: 0, 1000, 1000, 0 */
    cr_assert_eq(ag_item(L), 500.0, "loss %.17g", ag_item(L));
    cr_assert_eq(ag_backward(t, L), AG_OK);
    /* (sigmoid(z) - y) / 4 and -z / 4 */
    const double gz[4] = {0, -0.25, 0.25, 0}, gy[4] = {-250, 250, -250, 250};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(ag_get_grad(z, i), gz[i], "dz %zu = %g", i, ag_get_grad(z, i));
        cr_assert_eq(ag_get_grad(y, i), gy[i], "dy %zu = %g", i, ag_get_grad(y, i));
    }
    ag_tape_free(t);
    ag_tensor_free(z);
    ag_tensor_free(y);
}

Test(stability, cross_entropy_at_plus_minus_1000)
{
    ag_tensor *z = ot_leaf(AG_F64, AG_SHAPE(2, 3), (double[]){1000, 0, -1000, 0, 1000, 0});
    ag_tensor *c = ot_from(AG_F64, AG_SHAPE(2), (double[]){0, 0});
    ag_tape *t = ag_tape_new();
    ag_tensor *L = ag_cross_entropy(t, z, c);
    /* row 0: lse = 1000, loss 0; row 1: lse = 1000, loss 1000 */
    cr_assert_eq(ag_item(L), 500.0, "loss %.17g", ag_item(L));
    cr_assert_eq(ag_backward(t, L), AG_OK);
    /* (softmax - onehot) / 2 */
    const double want[6] = {0, 0, 0, -0.5, 0.5, 0};
    for (size_t i = 0; i < 6; i++)
        cr_assert(fabs(ag_get_grad(z, i) - want[i]) <= 1e-300, "grad %zu = %g", i, ag_get_grad(z, i));
    ag_tape_free(t);
    ag_tensor_free(z);
    ag_tensor_free(c);
}

Test(stability, bce_at_exact_zero_and_one_is_clamped)
{
    ag_tensor *p = ot_leaf(AG_F64, AG_SHAPE(2), (double[]){0, 1});
    ag_tensor *y = ot_leaf(AG_F64, AG_SHAPE(2), (double[]){1, 0});
    ag_tape *t = ag_tape_new();
    ag_tensor *L = ag_bce(t, p, y);
    cr_assert_eq(ag_item(L), 100.0, "ln clamped at -100: loss %g", ag_item(L));
    cr_assert_eq(ag_backward(t, L), AG_OK);
    assert_finite_grad(p);
    assert_finite_grad(y);
    ag_tape_free(t);
    ag_tensor_free(p);
    ag_tensor_free(y);
}

/* ------------------------------------------------------------ reference cases */

static void run_reference(ag_dtype dt, double tol)
{
    size_t ran = ot_run_reference(TEST_DATA_DIR "/ops.txt", NULL, 0, false, dt, tol);
    cr_assert_geq(ran, 100, "only %zu cases", ran);
}

Test(reference, every_case_in_f64) { run_reference(AG_F64, 1e-9); }
Test(reference, every_case_in_f32) { run_reference(AG_F32, 1e-4); }
