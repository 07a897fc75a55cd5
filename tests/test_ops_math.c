/* test_ops_math.c: the elementwise ops of the second op set (trigonometric,
 * hyperbolic, activations, clamp, maximum/minimum, atan2, pow_tensor,
 * where): gradcheck in f64 over broadcast and rank-3 shapes, forward values
 * against libm in both dtypes, ties and bounds, stability at large inputs,
 * empty tensors, every error path, thread-count independence, and their
 * PyTorch reference cases in ops-more.txt. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "optest.h"

static ag_rng rng;

static void seed_rng(void) { ag_rng_seed(&rng, 20240917); }

TestSuite(math_gradcheck, .init = seed_rng);
TestSuite(math_forward, .init = seed_rng);
TestSuite(math_edges, .init = seed_rng);
TestSuite(math_stability);
TestSuite(math_errors);
TestSuite(math_threads, .init = seed_rng);
TestSuite(math_reference);

/* ------------------------------------------------------------ helpers */

/* An f64 tensor uniform in [lo, hi) of the given dimensions. */
#define U(lo, hi, ...) ot_uniform(&rng, AG_F64, AG_SHAPE(__VA_ARGS__), lo, hi, false)

/* Multiples of 0.1 in [-1, 1] plus offset: two such tensors with offsets
 * 0.03 and 0.08 differ by at least 0.05 everywhere (no ties for max/min). */
static ag_tensor *grid(double offset, const size_t *shape, size_t rank)
{
    ag_tensor *x = ot_uniform(&rng, AG_F64, shape, rank, 0, 1, false);
    double *d = ag_data(x);
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        d[i] = (double)((long)ag_rng_below(&rng, 21) - 10) * 0.1 + offset;
    return x;
}

typedef ag_tensor *(*unop)(ag_tape *, ag_tensor *);
typedef ag_tensor *(*binop)(ag_tape *, ag_tensor *, ag_tensor *);

typedef struct {
    unop f1;
    binop f2;
    ag_tensor *(*fp)(ag_tape *, ag_tensor *, double);
    double p, lo, hi;
    ag_tensor *cond; /* where's condition: a constant, not an input */
} op_args;

static ag_tensor *apply1(ag_tape *t, ag_tensor *const *x, void *c) { return ((op_args *)c)->f1(t, x[0]); }
static ag_tensor *apply2(ag_tape *t, ag_tensor *const *x, void *c) { return ((op_args *)c)->f2(t, x[0], x[1]); }
static ag_tensor *apply_p(ag_tape *t, ag_tensor *const *x, void *c) { return ((op_args *)c)->fp(t, x[0], ((op_args *)c)->p); }

static ag_tensor *apply_clamp(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    op_args *a = ctx;
    return ag_clamp(t, x[0], a->lo, a->hi);
}

static ag_tensor *apply_where(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_where(t, ((op_args *)ctx)->cond, x[0], x[1]);
}

static ag_tensor *apply_where_self(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    /* both branches the same tensor, and a nonlinear op after it */
    return ag_tanh(t, ag_where(t, ((op_args *)ctx)->cond, x[0], x[0]));
}

/* ------------------------------------------------------------ gradcheck: unary */

static void check_unary(const char *name, unop f, ag_tensor *x)
{
    op_args args = {.f1 = f};
    ot_check_and_free(name, apply1, &args, 1, &x);
}

#define R3 2, 3, 4 /* the rank-3 shape every unary op is checked on */

Test(math_gradcheck, trigonometric)
{
    check_unary("sin", ag_sin, U(-3, 3, R3));
    check_unary("cos", ag_cos, U(-3, 3, R3));
    check_unary("tan", ag_tan, U(-1.2, 1.2, R3));
    check_unary("asin", ag_asin, U(-0.9, 0.9, R3));
    check_unary("acos", ag_acos, U(-0.9, 0.9, R3));
    check_unary("atan", ag_atan, U(-3, 3, R3));
}

Test(math_gradcheck, hyperbolic_and_exponential)
{
    check_unary("sinh", ag_sinh, U(-2, 2, R3));
    check_unary("cosh", ag_cosh, U(-2, 2, R3));
    check_unary("log1p", ag_log1p, U(-0.7, 2, R3));
    check_unary("expm1", ag_expm1, U(-2, 2, R3));
    check_unary("erf", ag_erf, U(-2, 2, R3));
}

Test(math_gradcheck, powers)
{
    check_unary("square", ag_square, U(-2, 2, R3));
    check_unary("reciprocal", ag_reciprocal, ot_away_from_zero(&rng, 0.3, AG_SHAPE(R3)));
    check_unary("rsqrt", ag_rsqrt, U(0.3, 3, R3));
}

Test(math_gradcheck, activations)
{
    check_unary("gelu", ag_gelu, U(-4, 4, R3));
    check_unary("silu", ag_silu, U(-4, 4, R3));
    const double alphas[] = {1, 0.5, 2, -0.3};
    for (size_t i = 0; i < 4; i++) {
        op_args a = {.fp = ag_elu, .p = alphas[i]};
        ag_tensor *x = ot_away_from_zero(&rng, 0.05, AG_SHAPE(R3));
        ot_check_and_free("elu", apply_p, &a, 1, &x);
    }
}

Test(math_gradcheck, unary_on_scalars)
{
    const unop ops[] = {ag_sin, ag_cos, ag_atan, ag_sinh, ag_erf, ag_gelu, ag_silu, ag_square};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        check_unary("unary on a scalar", ops[i], ot_uniform(&rng, AG_F64, NULL, 0, -1, 1, false));
}

/* x clear of both bounds by 0.05, so the finite differences see no kink */
static ag_tensor *clear_of(double lo, double hi, const size_t *shape, size_t rank)
{
    ag_tensor *x = ot_uniform(&rng, AG_F64, shape, rank, -2, 2, false);
    double *d = ag_data(x);
    for (size_t i = 0; i < ag_tensor_numel(x); i++) {
        if (fabs(d[i] - lo) < 0.05)
            d[i] = lo + (d[i] < lo ? -0.05 : 0.05);
        if (fabs(d[i] - hi) < 0.05)
            d[i] = hi + (d[i] < hi ? -0.05 : 0.05);
    }
    return x;
}

Test(math_gradcheck, clamp_two_and_one_sided)
{
    const double bounds[][2] = {{-0.5, 0.7}, {0, INFINITY}, {-INFINITY, 0.3}, {-1, -1}};
    for (size_t i = 0; i < 4; i++) {
        op_args a = {.lo = bounds[i][0], .hi = bounds[i][1]};
        ag_tensor *x = clear_of(a.lo, a.hi, AG_SHAPE(R3));
        ot_check_and_free("clamp", apply_clamp, &a, 1, &x);
    }
}

/* ------------------------------------------------------------ gradcheck: binary */

static const struct {
    const char *name;
    binop f;
} binops[] = {{"maximum", ag_maximum}, {"minimum", ag_minimum}, {"atan2", ag_atan2},
              {"pow_tensor", ag_pow_tensor}};

/* Each binary op on a pair of shapes, both orders, with inputs in its
 * domain: max/min without ties, atan2 clear of the origin, pow_tensor with
 * a positive base. */
static void check_binops(const size_t *sa, size_t ra, const size_t *sb, size_t rb)
{
    for (int swap = 0; swap < 2; swap++) {
        const size_t *s0 = swap ? sb : sa, *s1 = swap ? sa : sb;
        size_t r0 = swap ? rb : ra, r1 = swap ? ra : rb;
        for (size_t k = 0; k < 4; k++) {
            ag_tensor *in[2];
            switch (k) {
            case 0:
            case 1:
                in[0] = grid(0.03, s0, r0);
                in[1] = grid(0.08, s1, r1);
                break;
            case 2:
                in[0] = ot_uniform(&rng, AG_F64, s0, r0, -2, 2, false);
                in[1] = ot_away_from_zero(&rng, 0.3, s1, r1);
                break;
            default:
                in[0] = ot_uniform(&rng, AG_F64, s0, r0, 0.5, 2, false);
                in[1] = ot_uniform(&rng, AG_F64, s1, r1, -2, 2, false);
            }
            op_args args = {.f2 = binops[k].f};
            ot_check_and_free(binops[k].name, apply2, &args, 2, in);
        }
    }
}

Test(math_gradcheck, binary_same_shape) { check_binops(AG_SHAPE(2, 3), AG_SHAPE(2, 3)); }
Test(math_gradcheck, binary_broadcast_row) { check_binops(AG_SHAPE(3, 4), AG_SHAPE(4)); }
Test(math_gradcheck, binary_rank3_with_column) { check_binops(AG_SHAPE(2, 3, 4), AG_SHAPE(3, 1)); }
Test(math_gradcheck, binary_broadcast_both_sides) { check_binops(AG_SHAPE(2, 1, 4), AG_SHAPE(3, 1)); }
Test(math_gradcheck, binary_outer_broadcast) { check_binops(AG_SHAPE(3, 1), AG_SHAPE(1, 4)); }
Test(math_gradcheck, binary_scalar_with_tensor) { check_binops(NULL, 0, AG_SHAPE(2, 3)); }
Test(math_gradcheck, binary_scalar_with_scalar) { check_binops(NULL, 0, NULL, 0); }
Test(math_gradcheck, binary_rank_eight) { check_binops(AG_SHAPE(2, 1, 2, 1, 1, 2, 1, 3), AG_SHAPE(2, 1, 1, 3)); }

/* ------------------------------------------------------------ gradcheck: where */

/* A condition of 0s and other values (1, -2, 0.5): any nonzero is true. */
static ag_tensor *mask(ag_dtype dt, const size_t *shape, size_t rank)
{
    ag_tensor *c = ag_zeros(dt, shape, rank);
    cr_assert_not_null(c);
    static const double picks[] = {0, 1, 0, -2, 0.5};
    for (size_t i = 0; i < ag_tensor_numel(c); i++) {
        double v = picks[ag_rng_below(&rng, 5)];
        if (dt == AG_F32)
            ((float *)ag_data(c))[i] = (float)v;
        else
            ((double *)ag_data(c))[i] = v;
    }
    return c;
}

/* Element i (row-major) of y's shape read from x by numpy broadcasting. */
static double bcast_get(const ag_tensor *x, const ag_tensor *y, size_t i)
{
    size_t ry = ag_tensor_rank(y), rx = ag_tensor_rank(x), at = 0, stride = 1;
    for (size_t k = 0; k < ry; k++) { /* from the last axis */
        size_t ny = ag_tensor_shape(y)[ry - 1 - k], pos = i % ny;
        i /= ny;
        if (k < rx) {
            size_t nx = ag_tensor_shape(x)[rx - 1 - k];
            at += (nx == 1 ? 0 : pos) * stride;
            stride *= nx;
        }
    }
    return ag_get(x, at);
}

/* where's values against an element-by-element reading, then gradcheck
 * over a and b. */
static void check_where(ag_dtype cond_dt, const size_t *sc, size_t rc, const size_t *sa, size_t ra,
                        const size_t *sb, size_t rb)
{
    op_args args = {.cond = mask(cond_dt, sc, rc)};
    ag_tensor *in[2] = {ot_uniform(&rng, AG_F64, sa, ra, -1, 1, false),
                        ot_uniform(&rng, AG_F64, sb, rb, -1, 1, false)};
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_where(t, args.cond, in[0], in[1]);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    for (size_t i = 0; i < ag_tensor_numel(y); i++) {
        double want = bcast_get(args.cond, y, i) != 0 ? bcast_get(in[0], y, i) : bcast_get(in[1], y, i);
        cr_assert_eq(ag_get(y, i), want, "where element %zu", i);
    }
    ag_tape_free(t);
    ot_check_and_free("where", apply_where, &args, 2, in);
    ag_tensor_free(args.cond);
}

Test(math_gradcheck, where_same_shapes) { check_where(AG_F64, AG_SHAPE(3, 4), AG_SHAPE(3, 4), AG_SHAPE(3, 4)); }

Test(math_gradcheck, where_all_three_broadcast)
{
    check_where(AG_F64, AG_SHAPE(2, 3, 4), AG_SHAPE(4), AG_SHAPE(3, 1));
    check_where(AG_F64, AG_SHAPE(2, 1, 4), AG_SHAPE(3, 4), NULL, 0);
    check_where(AG_F64, AG_SHAPE(3, 1), AG_SHAPE(1, 4), AG_SHAPE(2, 1, 1));
    check_where(AG_F64, NULL, 0, AG_SHAPE(2, 3), AG_SHAPE(3));
    check_where(AG_F64, AG_SHAPE(4), AG_SHAPE(2, 3, 1), AG_SHAPE(3, 4));
    check_where(AG_F64, AG_SHAPE(2, 1, 2, 1, 1, 2, 1, 3), AG_SHAPE(2, 1, 1, 3), AG_SHAPE(3));
}

/* a and b alike, only the condition broadcast: its stride alone stops the
 * axes from merging into one run */
Test(math_gradcheck, where_only_the_condition_broadcast)
{
    check_where(AG_F64, AG_SHAPE(3, 1), AG_SHAPE(3, 4), AG_SHAPE(3, 4));
    check_where(AG_F64, AG_SHAPE(4), AG_SHAPE(2, 3, 4), AG_SHAPE(2, 3, 4));
    check_where(AG_F64, AG_SHAPE(2, 1, 4), AG_SHAPE(2, 3, 4), AG_SHAPE(2, 3, 4));
}

Test(math_gradcheck, where_condition_in_f32)
{
    check_where(AG_F32, AG_SHAPE(2, 3, 4), AG_SHAPE(3, 4), AG_SHAPE(2, 1, 4));
}

Test(math_gradcheck, where_with_one_tensor_on_both_sides)
{
    op_args args = {.cond = mask(AG_F64, AG_SHAPE(3, 4))};
    ag_tensor *x = U(-1, 1, 3, 4);
    ot_check_and_free("where(c, x, x)", apply_where_self, &args, 1, &x);
    ag_tensor_free(args.cond);
}

/* ------------------------------------------------------------ forward values */

static void assert_close(double got, double want, double tol, const char *what, size_t i)
{
    cr_assert(fabs(got - want) <= tol * (1 + fabs(want)) || (isnan(got) && isnan(want)),
              "%s element %zu: got %.17g want %.17g", what, i, got, want);
}

static double gelu_ref(double x) { return x * 0.5 * erfc(-x / sqrt(2)); }
static double silu_ref(double x) { return x / (1 + exp(-x)); }

static const struct {
    const char *name;
    unop f;
    double (*ref)(double);
    double lo, hi;
} unaries[] = {
    {"sin", ag_sin, sin, -3, 3}, {"cos", ag_cos, cos, -3, 3}, {"tan", ag_tan, tan, -1.2, 1.2},
    {"asin", ag_asin, asin, -1, 1}, {"acos", ag_acos, acos, -1, 1}, {"atan", ag_atan, atan, -5, 5},
    {"sinh", ag_sinh, sinh, -3, 3}, {"cosh", ag_cosh, cosh, -3, 3}, {"log1p", ag_log1p, log1p, -0.9, 3},
    {"expm1", ag_expm1, expm1, -3, 3}, {"erf", ag_erf, erf, -3, 3}, {"gelu", ag_gelu, gelu_ref, -5, 5},
    {"silu", ag_silu, silu_ref, -5, 5},
};

Test(math_forward, unary_ops_match_libm_in_both_dtypes)
{
    for (size_t k = 0; k < sizeof unaries / sizeof unaries[0]; k++) {
        ag_tensor *x = ot_uniform(&rng, AG_F64, AG_SHAPE(37), unaries[k].lo, unaries[k].hi, false);
        const double *X = ag_data(x);
        ag_tape *t = ag_tape_new();
        ag_tensor *y = unaries[k].f(t, x);
        ag_tensor *y32 = unaries[k].f(t, ag_cast(t, x, AG_F32));
        cr_assert_not_null(y32, "%s: %s", unaries[k].name, ag_tape_error(t));
        cr_assert_eq(ag_tensor_dtype(y32), AG_F32);
        for (size_t i = 0; i < 37; i++) {
            double want = unaries[k].ref(X[i]);
            assert_close(ag_get(y, i), want, 1e-14, unaries[k].name, i);
            /* f32: the input's rounding (x ulp times f') plus the result's */
            assert_close(ag_get(y32, i), unaries[k].ref((float)X[i]), 2e-6, unaries[k].name, i);
        }
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

Test(math_forward, powers_elu_and_clamp)
{
    ag_tensor *x = ot_away_from_zero(&rng, 0.2, AG_SHAPE(29)), *p = U(0.2, 3, 29);
    const double *X = ag_data(x), *P = ag_data(p);
    ag_tape *t = ag_tape_new();
    ag_tensor *sq = ag_square(t, x), *rc = ag_reciprocal(t, x), *rs = ag_rsqrt(t, p);
    ag_tensor *el = ag_elu(t, x, 0.7), *cl = ag_clamp(t, x, -0.5, 0.25);
    for (size_t i = 0; i < 29; i++) {
        assert_close(ag_get(sq, i), X[i] * X[i], 1e-15, "square", i);
        assert_close(ag_get(rc, i), 1 / X[i], 1e-15, "reciprocal", i);
        assert_close(ag_get(rs, i), 1 / sqrt(P[i]), 1e-15, "rsqrt", i);
        assert_close(ag_get(el, i), X[i] > 0 ? X[i] : 0.7 * expm1(X[i]), 1e-15, "elu", i);
        assert_close(ag_get(cl, i), fmin(fmax(X[i], -0.5), 0.25), 0, "clamp", i);
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(p);
}

Test(math_forward, binary_ops_broadcast)
{
    ag_tensor *a = U(0.2, 2, 2, 3, 4), *b = U(-2, 2, 3, 1);
    const double *A = ag_data(a), *B = ag_data(b);
    ag_tape *t = ag_tape_new();
    ag_tensor *ys[4] = {ag_maximum(t, a, b), ag_minimum(t, b, a), ag_atan2(t, b, a), ag_pow_tensor(t, a, b)};
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < 3; j++)
            for (size_t k = 0; k < 4; k++) {
                size_t e = (i * 3 + j) * 4 + k;
                double x = A[e], z = B[j];
                double want[4] = {fmax(x, z), fmin(z, x), atan2(z, x), pow(x, z)};
                for (int o = 0; o < 4; o++) {
                    cr_assert_eq(ag_tensor_rank(ys[o]), 3);
                    assert_close(ag_get(ys[o], e), want[o], 1e-15, binops[o].name, e);
                }
            }
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(math_forward, where_picks_and_broadcasts)
{
    ag_tensor *c = ot_from(AG_F64, AG_SHAPE(2, 1, 3), (double[]){1, 0, -3, 0, 0.5, 0});
    ag_tensor *a = U(-1, 1, 4, 3), *b = U(-1, 1, 4, 1);
    const double *C = ag_data(c), *A = ag_data(a), *B = ag_data(b);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_where(t, c, a, b);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    cr_assert_eq(ag_tensor_rank(y), 3);
    cr_assert_eq(ag_tensor_shape(y)[0], 2);
    cr_assert_eq(ag_tensor_shape(y)[1], 4);
    cr_assert_eq(ag_tensor_shape(y)[2], 3);
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < 4; j++)
            for (size_t k = 0; k < 3; k++)
                cr_assert_eq(ag_get(y, (i * 4 + j) * 3 + k), C[i * 3 + k] != 0 ? A[j * 3 + k] : B[j]);
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

/* ------------------------------------------------------------ ties, bounds, NaN */

/* Runs y = f(a, b), backward of Σ y, returns the tape (a and b leaves). */
static ag_tape *backward_sum(ag_tensor *y, ag_tape *t)
{
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    return t;
}

Test(math_edges, maximum_and_minimum_split_ties_in_half)
{
    for (int o = 0; o < 2; o++) {
        ag_tensor *a = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){1, 2, 3});
        ag_tensor *b = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){0, 2, 4});
        ag_tape *t = ag_tape_new();
        backward_sum(o ? ag_minimum(t, a, b) : ag_maximum(t, a, b), t);
        const double want_a[2][3] = {{1, 0.5, 0}, {0, 0.5, 1}};
        for (size_t i = 0; i < 3; i++) {
            cr_assert_eq(ag_get_grad(a, i), want_a[o][i], "op %d grad a %zu", o, i);
            cr_assert_eq(ag_get_grad(b, i), 1 - want_a[o][i], "op %d grad b %zu", o, i);
        }
        ag_tape_free(t);
        ag_tensor_free(a);
        ag_tensor_free(b);
    }
}

Test(math_edges, maximum_of_a_tensor_with_itself_passes_the_whole_gradient)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2), (double[]){-1, 5});
    ag_tape *t = ag_tape_new();
    backward_sum(ag_maximum(t, x, x), t);
    cr_assert_eq(ag_get_grad(x, 0), 1);
    cr_assert_eq(ag_get_grad(x, 1), 1);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(math_edges, maximum_and_minimum_propagate_nan)
{
    ag_tensor *a = ot_from(AG_F64, AG_SHAPE(3), (double[]){NAN, 1, NAN});
    ag_tensor *b = ot_from(AG_F64, AG_SHAPE(3), (double[]){1, NAN, NAN});
    ag_tape *t = ag_tape_new();
    ag_tensor *mx = ag_maximum(t, a, b), *mn = ag_minimum(t, a, b);
    for (size_t i = 0; i < 3; i++) {
        cr_assert(isnan(ag_get(mx, i)), "maximum %zu = %g", i, ag_get(mx, i));
        cr_assert(isnan(ag_get(mn, i)), "minimum %zu = %g", i, ag_get(mn, i));
    }
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

/* Where an input is NaN, the pair is unordered: maximum and minimum pass
 * the whole gradient to both sides, fused and recorded alike. The expected
 * gradients are PyTorch 1.13's for torch.maximum / torch.minimum(a, b).sum():
 * a = (nan, 1, nan, 2, 3), b = (1, nan, nan, 2, 1). */
Test(math_edges, maximum_and_minimum_gradients_through_nan_as_pytorch)
{
    const double want[2][2][5] = {{{1, 1, 1, 0.5, 1}, {1, 1, 1, 0.5, 0}},  /* maximum: a, b */
                                  {{1, 1, 1, 0.5, 0}, {1, 1, 1, 0.5, 1}}}; /* minimum */
    ag_tensor *(*ops[2])(ag_tape *, ag_tensor *, ag_tensor *) = {ag_maximum, ag_minimum};
    for (int op = 0; op < 2; op++)
        for (unsigned flags = 0; flags <= AG_CREATE_GRAPH; flags += AG_CREATE_GRAPH) {
            ag_tensor *in[2] = {ot_leaf(AG_F64, AG_SHAPE(5), (double[]){NAN, 1, NAN, 2, 3}),
                                ot_leaf(AG_F64, AG_SHAPE(5), (double[]){1, NAN, NAN, 2, 1})};
            ag_tape *t = ag_tape_new();
            ag_tensor *g[2];
            ag_tensor *y = ag_sum(t, ops[op](t, in[0], in[1]));
            cr_assert_eq(ag_gradients(t, y, 2, in, g, flags), AG_OK, "%s", ag_tape_error(t));
            for (int k = 0; k < 2; k++)
                for (size_t i = 0; i < 5; i++)
                    cr_expect_eq(ag_get(g[k], i), want[op][k][i], "%s%s: input %d [%zu] = %g",
                                 op ? "minimum" : "maximum", flags ? " recorded" : "", k, i,
                                 ag_get(g[k], i));
            ag_tape_free(t);
            ag_tensor_free(in[0]);
            ag_tensor_free(in[1]);
        }
}

Test(math_edges, clamp_gradient_is_zero_at_the_bounds_and_outside)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(6), (double[]){-2, -1, -0.5, 0.5, 1, 3});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_clamp(t, x, -1, 1);
    const double want_y[6] = {-1, -1, -0.5, 0.5, 1, 1}, want_g[6] = {0, 0, 1, 1, 0, 0};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get(y, i), want_y[i], "y %zu", i);
    backward_sum(y, t);
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get_grad(x, i), want_g[i], "grad %zu", i);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(math_edges, clamp_keeps_nan_and_allows_equal_bounds)
{
    ag_tensor *x = ot_from(AG_F32, AG_SHAPE(3), (double[]){NAN, -5, 5});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_clamp(t, x, 0, 1), *z = ag_clamp(t, x, 2, 2);
    cr_assert_not_null(z, "%s", ag_tape_error(t));
    cr_assert(isnan(ag_get(y, 0)));
    cr_assert_eq(ag_get(y, 1), 0);
    cr_assert_eq(ag_get(y, 2), 1);
    cr_assert_eq(ag_get(z, 1), 2);
    cr_assert_eq(ag_get(z, 2), 2);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(math_edges, pow_tensor_at_a_zero_base_as_pytorch)
{
    /* 0^2: d/da = 2·0 = 0, d/db = 0 (not 0·ln 0 = NaN); 0^0 = 1: both 0;
     * 4^0.5: d/da = 0.25, d/db = 2 ln 4 */
    ag_tensor *a = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){0, 0, 4});
    ag_tensor *b = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){2, 0, 0.5});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_pow_tensor(t, a, b);
    cr_assert_eq(ag_get(y, 0), 0);
    cr_assert_eq(ag_get(y, 1), 1);
    cr_assert_eq(ag_get(y, 2), 2);
    backward_sum(y, t);
    const double want_a[3] = {0, 0, 0.25}, want_b[3] = {0, 0, 2 * log(4.0)};
    for (size_t i = 0; i < 3; i++) {
        assert_close(ag_get_grad(a, i), want_a[i], 1e-15, "grad a", i);
        assert_close(ag_get_grad(b, i), want_b[i], 1e-15, "grad b", i);
    }
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(math_edges, where_sums_gradients_over_broadcast_axes)
{
    /* cond [2,3], a [3], b scalar: a's element j takes the g of each row
     * where cond is true; b takes every other g */
    ag_tensor *c = ot_from(AG_F64, AG_SHAPE(2, 3), (double[]){1, 0, 1, 1, 1, 0});
    ag_tensor *a = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){1, 2, 3}), *b = ot_leaf(AG_F64, NULL, 0, (double[]){9});
    ag_tensor *w = ot_from(AG_F64, AG_SHAPE(2, 3), (double[]){1, 10, 100, 1000, 1e4, 1e5});
    ag_tape *t = ag_tape_new();
    backward_sum(ag_mul(t, ag_where(t, c, a, b), w), t);
    cr_assert_eq(ag_get_grad(a, 0), 1001);
    cr_assert_eq(ag_get_grad(a, 1), 1e4);
    cr_assert_eq(ag_get_grad(a, 2), 100);
    cr_assert_eq(ag_get_grad(b, 0), 10 + 1e5);
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(w);
}

Test(math_edges, where_nan_condition_is_true_and_condition_takes_no_gradient)
{
    ag_tensor *c = ot_leaf(AG_F32, AG_SHAPE(3), (double[]){NAN, 0, 2});
    ag_tensor *a = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){1, 2, 3});
    ag_tensor *b = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){-1, -2, -3});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_where(t, c, a, b);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    cr_assert_eq(ag_tensor_dtype(y), AG_F64);
    cr_assert_eq(ag_get(y, 0), 1);
    cr_assert_eq(ag_get(y, 1), -2);
    cr_assert_eq(ag_get(y, 2), 3);
    backward_sum(y, t);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(ag_get_grad(c, i), 0, "cond grad %zu", i);
        cr_assert_eq(ag_get_grad(a, i), i != 1, "a grad %zu", i);
        cr_assert_eq(ag_get_grad(b, i), i == 1, "b grad %zu", i);
    }
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(math_edges, where_in_f32_with_an_f64_condition)
{
    ag_tensor *c = ot_from(AG_F64, AG_SHAPE(2, 1), (double[]){0, 1});
    ag_tensor *a = ot_leaf(AG_F32, AG_SHAPE(3), (double[]){1, 2, 3}), *b = ot_leaf(AG_F32, NULL, 0, (double[]){-1});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_where(t, c, a, b);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    cr_assert_eq(ag_tensor_dtype(y), AG_F32);
    const double want[6] = {-1, -1, -1, 1, 2, 3};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get(y, i), want[i]);
    backward_sum(y, t);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(ag_get_grad(a, i), 1);
    cr_assert_eq(ag_get_grad(b, 0), 3);
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(math_edges, empty_tensors)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(0, 3), NULL), *r = ot_leaf(AG_F64, AG_SHAPE(3), (double[]){1, 2, 3});
    ag_tensor *c = ot_from(AG_F64, AG_SHAPE(0, 1), NULL);
    ag_tape *t = ag_tape_new();
    ag_tensor *ys[] = {ag_sin(t, x), ag_gelu(t, x), ag_clamp(t, x, 0, 1), ag_maximum(t, x, r),
                       ag_pow_tensor(t, r, x), ag_where(t, c, r, r), ag_where(t, r, x, r)};
    for (size_t k = 0; k < sizeof ys / sizeof ys[0]; k++) {
        cr_assert_not_null(ys[k], "op %zu: %s", k, ag_tape_error(t));
        cr_assert_eq(ag_tensor_rank(ys[k]), 2, "op %zu", k);
        cr_assert_eq(ag_tensor_shape(ys[k])[0], 0, "op %zu", k);
        cr_assert_eq(ag_tensor_shape(ys[k])[1], 3, "op %zu", k);
    }
    ag_tensor *s = ag_sum(t, ys[0]);
    for (size_t k = 1; k < sizeof ys / sizeof ys[0]; k++)
        s = ag_add(t, s, ag_sum(t, ys[k]));
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_item(s), 0);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(ag_get_grad(r, i), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(r);
    ag_tensor_free(c);
}

/* ------------------------------------------------------------ stability */

/* y = f(x) and its gradient in dtype dt for each x; both finite and as
 * wanted (NaN in want_g: only finite). */
static void check_values(unop f, const char *name, ag_dtype dt, size_t n, const double *x,
                         const double *want_y, const double *want_g, double tol)
{
    ag_tensor *in = ot_leaf(dt, AG_SHAPE(n), x);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = f(t, in);
    backward_sum(y, t);
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(ag_get(y, i)), "%s(%g) = %g", name, x[i], ag_get(y, i));
        cr_assert(isfinite(ag_get_grad(in, i)), "%s'(%g) = %g", name, x[i], ag_get_grad(in, i));
        assert_close(ag_get(y, i), want_y[i], tol, name, i);
        if (!isnan(want_g[i]))
            assert_close(ag_get_grad(in, i), want_g[i], tol, name, i);
    }
    ag_tape_free(t);
    ag_tensor_free(in);
}

Test(math_stability, activations_at_plus_minus_1000)
{
    const double x[4] = {-1000, -50, 50, 1000};
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F32 : AG_F64;
        double tol = d ? 1e-6 : 1e-15;
        check_values(ag_gelu, "gelu", dt, 4, x, (double[]){0, 0, 50, 1000}, (double[]){0, 0, 1, 1}, tol);
        check_values(ag_silu, "silu", dt, 4, x, (double[]){0, -50 * exp(-50), 50, 1000}, (double[]){0, NAN, 1, 1}, tol);
        check_values(ag_erf, "erf", dt, 4, x, (double[]){-1, -1, 1, 1}, (double[]){0, 0, 0, 0}, tol);
        check_values(ag_atan, "atan", dt, 4, x, (double[]){-atan(1000), -atan(50), atan(50), atan(1000)},
                     (double[]){1e-6 / (1 + 1e-6), 1 / 2501.0, 1 / 2501.0, 1e-6 / (1 + 1e-6)}, tol);
        check_values(ag_expm1, "expm1", dt, 2, x, (double[]){-1, expm1(-50)}, (double[]){0, exp(-50)}, tol);
    }
}

static ag_tensor *elu_half(ag_tape *t, ag_tensor *x) { return ag_elu(t, x, 0.5); }

Test(math_stability, elu_far_below_zero_is_minus_alpha)
{
    for (int d = 0; d < 2; d++)
        check_values(elu_half, "elu", d ? AG_F32 : AG_F64, 2, (double[]){-1000, 1000},
                     (double[]){-0.5, 1000}, (double[]){0, 1}, 0);
}

Test(math_stability, gelu_keeps_the_lower_tail)
{
    /* x Phi(x) at x = -30 is -1.47e-196: 1 + erf(x/sqrt 2) would be 0 */
    check_values(ag_gelu, "gelu", AG_F64, 2, (double[]){-30, -10},
                 (double[]){-1.4720141781446293e-196, -10 * 7.619853024160593e-24},
                 (double[]){NAN, NAN}, 1e-12);
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(1), (double[]){-30});
    ag_tape *t = ag_tape_new();
    cr_assert_neq(ag_get(ag_gelu(t, x), 0), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(math_stability, log1p_and_expm1_of_tiny_values)
{
    const double x[2] = {1e-20, -3e-18};
    check_values(ag_log1p, "log1p", AG_F64, 2, x, x, (double[]){1, 1}, 1e-15);
    check_values(ag_expm1, "expm1", AG_F64, 2, x, x, (double[]){1, 1}, 1e-15);
    check_values(ag_log1p, "log1p", AG_F32, 2, x, x, (double[]){1, 1}, 1e-6);
}

/* ------------------------------------------------------------ errors */

static void assert_error(ag_tape *t, ag_tensor *y, ag_status want, const char *msg)
{
    cr_assert_null(y);
    cr_assert_eq(ag_tape_status(t), want, "status %s: %s", ag_status_string(ag_tape_status(t)),
                 ag_tape_error(t));
    cr_assert_str_eq(ag_tape_error(t), msg);
}

Test(math_errors, binary_shapes_that_do_not_broadcast)
{
    ag_tensor *a = ag_zeros(AG_F64, AG_SHAPE(3, 4)), *b = ag_zeros(AG_F64, AG_SHAPE(5));
    const struct {
        binop f;
        const char *msg;
    } cases[] = {
        {ag_maximum, "ag_maximum: shapes [3,4] and [5] do not broadcast (axis 0 from the end: 4 vs 5)"},
        {ag_minimum, "ag_minimum: shapes [3,4] and [5] do not broadcast (axis 0 from the end: 4 vs 5)"},
        {ag_atan2, "ag_atan2: shapes [3,4] and [5] do not broadcast (axis 0 from the end: 4 vs 5)"},
        {ag_pow_tensor, "ag_pow_tensor: shapes [3,4] and [5] do not broadcast (axis 0 from the end: 4 vs 5)"},
    };
    for (size_t k = 0; k < 4; k++) {
        ag_tape *t = ag_tape_new();
        assert_error(t, cases[k].f(t, a, b), AG_ERR_SHAPE, cases[k].msg);
        cr_assert_null(ag_sin(t, a), "the error is sticky");
        ag_tape_free(t);
    }
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(math_errors, where_shapes_that_do_not_broadcast)
{
    ag_tensor *c = ag_zeros(AG_F64, AG_SHAPE(2, 3)), *a = ag_zeros(AG_F64, AG_SHAPE(3));
    ag_tensor *b = ag_zeros(AG_F64, AG_SHAPE(4, 1, 1)), *d = ag_zeros(AG_F64, AG_SHAPE(5, 1));
    ag_tape *t = ag_tape_new();
    assert_error(t, ag_where(t, c, a, d), AG_ERR_SHAPE,
                 "ag_where: shapes [2,3], [3] and [5,1] do not broadcast (axis 1 from the end: 2, 1 and 5)");
    ag_tape_reset(t);
    cr_assert_not_null(ag_where(t, c, a, b), "[2,3], [3], [4,1,1] broadcast: %s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(c);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(d);
}

Test(math_errors, dtypes_that_differ)
{
    ag_tensor *x64 = ag_zeros(AG_F64, AG_SHAPE(3)), *x32 = ag_zeros(AG_F32, AG_SHAPE(3));
    ag_tape *t = ag_tape_new();
    assert_error(t, ag_where(t, x64, x64, x32), AG_ERR_DTYPE,
                 "ag_where: a and b have dtypes f64 and f32 (convert with ag_cast)");
    ag_tape_reset(t);
    assert_error(t, ag_atan2(t, x32, x64), AG_ERR_DTYPE,
                 "ag_atan2: dtypes f32 and f64 differ (convert with ag_cast)");
    ag_tape_free(t);
    ag_tensor_free(x64);
    ag_tensor_free(x32);
}

Test(math_errors, clamp_bounds)
{
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(3));
    ag_tape *t = ag_tape_new();
    assert_error(t, ag_clamp(t, x, 1, -1), AG_ERR_VALUE,
                 "ag_clamp: bounds lo = 1 and hi = -1: need lo <= hi, neither NaN");
    ag_tape_reset(t);
    assert_error(t, ag_clamp(t, x, NAN, 1), AG_ERR_VALUE,
                 "ag_clamp: bounds lo = nan and hi = 1: need lo <= hi, neither NaN");
    ag_tape_reset(t);
    assert_error(t, ag_clamp(t, x, 0, NAN), AG_ERR_VALUE,
                 "ag_clamp: bounds lo = 0 and hi = nan: need lo <= hi, neither NaN");
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(math_errors, null_inputs)
{
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(3));
    ag_tape *t = ag_tape_new();
    assert_error(t, ag_where(t, NULL, x, x), AG_ERR_NULL, "ag_where: input 1 is NULL");
    ag_tape_reset(t);
    assert_error(t, ag_where(t, x, x, NULL), AG_ERR_NULL, "ag_where: input 3 is NULL");
    ag_tape_reset(t);
    assert_error(t, ag_gelu(t, NULL), AG_ERR_NULL, "ag_gelu: input 1 is NULL");
    ag_tape_reset(t);
    assert_error(t, ag_elu(t, NULL, 1), AG_ERR_NULL, "ag_elu: input 1 is NULL");
    ag_tape_reset(t);
    assert_error(t, ag_maximum(t, x, NULL), AG_ERR_NULL, "ag_maximum: input 2 is NULL");
    cr_assert_null(ag_sin(NULL, x));
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ------------------------------------------------------------ threads */

/* Forward and gradients of Σ w·op(...) on 1 and on 4 threads, bitwise. */
typedef ag_tensor *(*run3)(ag_tape *, ag_tensor *const *);

static ag_tensor *max_rows(ag_tape *t, ag_tensor *const *x) { return ag_maximum(t, x[0], x[1]); }
static ag_tensor *where_rows(ag_tape *t, ag_tensor *const *x) { return ag_where(t, x[2], x[0], x[1]); }
static ag_tensor *gelu_all(ag_tape *t, ag_tensor *const *x) { return ag_gelu(t, x[0]); }

static void same_on_any_threads(run3 f, const char *name)
{
    ag_tensor *x[3] = {U(-1, 1, 300, 257), U(-1, 1, 257), mask(AG_F64, AG_SHAPE(300, 1))};
    ag_tensor *w = U(-1, 1, 300, 257);
    ag_set_requires_grad(x[0], true);
    ag_set_requires_grad(x[1], true);
    double *ys[2], *g0[2], *g1[2];
    const size_t n = 300 * 257;
    for (int k = 0; k < 2; k++) {
        ag_tape *t = ag_tape_new();
        ag_tape_set_threads(t, k ? 4 : 1);
        ag_zero_grad(x[0]);
        ag_zero_grad(x[1]);
        ag_tensor *y = f(t, x);
        cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, y, w))), AG_OK, "%s", ag_tape_error(t));
        ys[k] = malloc(n * sizeof(double));
        g0[k] = malloc(n * sizeof(double));
        g1[k] = malloc(257 * sizeof(double));
        memcpy(ys[k], ag_data(y), n * sizeof(double));
        memcpy(g0[k], ag_grad(x[0]), n * sizeof(double));
        memcpy(g1[k], ag_grad(x[1]), 257 * sizeof(double));
        ag_tape_free(t);
    }
    cr_assert(memcmp(ys[0], ys[1], n * sizeof(double)) == 0, "%s: values differ", name);
    cr_assert(memcmp(g0[0], g0[1], n * sizeof(double)) == 0, "%s: gradients differ", name);
    cr_assert(memcmp(g1[0], g1[1], 257 * sizeof(double)) == 0, "%s: broadcast gradients differ", name);
    for (int k = 0; k < 2; k++) {
        free(ys[k]);
        free(g0[k]);
        free(g1[k]);
    }
    for (int i = 0; i < 3; i++)
        ag_tensor_free(x[i]);
    ag_tensor_free(w);
}

Test(math_threads, results_do_not_depend_on_the_thread_count)
{
    same_on_any_threads(max_rows, "maximum");
    same_on_any_threads(where_rows, "where");
    same_on_any_threads(gelu_all, "gelu");
}

/* ------------------------------------------------------------ reference cases */

static const char *const my_ops[] = {
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "log1p", "expm1", "erf", "square",
    "reciprocal", "rsqrt", "gelu", "silu", "elu", "clamp", "maximum", "minimum", "atan2",
    "pow_tensor", "where",
};
#define N_MY_OPS (sizeof my_ops / sizeof my_ops[0])

static void run_reference(ag_dtype dt, double tol)
{
    size_t ran = ot_run_reference(TEST_DATA_DIR "/ops-more.txt", my_ops, N_MY_OPS, true, dt, tol);
    cr_assert_geq(ran, 90, "only %zu cases", ran);
}

Test(math_reference, every_case_in_f64) { run_reference(AG_F64, 1e-9); }
Test(math_reference, every_case_in_f32) { run_reference(AG_F32, 1e-4); }

/* ag_sigmoid in f32 computes e^-|x| by its own polynomial (so that it
 * vectorises): against 1/(1 + e^-x) in double, rounded to f32, within 3
 * ulp at 200,001 points over [-110, 40] (down into the subnormal results
 * below -87 and up to where it rounds to 1), and exact at the edges. */
Test(math_forward, sigmoid_f32_within_3_ulp_of_double)
{
    enum { N = 200001 };
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(N + 6));
    float *xv = ag_data(x);
    for (size_t i = 0; i < N; i++)
        xv[i] = (float)(-110.0 + 150.0 * (double)i / (N - 1));
    const float edges[6] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f};
    memcpy(xv + N, edges, sizeof edges);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sigmoid(t, x);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    const float *yv = ag_data(y);
    for (size_t i = 0; i < N; i++) {
        float want = (float)(1.0 / (1.0 + exp(-(double)xv[i])));
        double ulp = want < 0x1p-126f ? 0x1p-149 : nextafterf(want, INFINITY) - want;
        cr_assert(fabs((double)yv[i] - (double)want) <= 3 * ulp, "sigmoid(%a) = %a, want %a",
                  (double)xv[i], (double)yv[i], (double)want);
    }
    cr_expect_eq(yv[N], 0.5f);
    cr_expect_eq(yv[N + 1], 0.5f);
    cr_expect_eq(yv[N + 2], 1.0f);
    cr_expect_eq(yv[N + 3], 0.0f);
    cr_expect(isnan(yv[N + 4]));
    cr_expect_eq(yv[N + 5], 0.5f);
    ag_tape_free(t);
    ag_tensor_free(x);
}
