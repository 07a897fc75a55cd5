/* test_second_order.c: gradients as tensors (ag_gradients), gradients of
 * gradients to the third order, Hessian-vector products and dense
 * Hessians against closed forms, ag_gradgradcheck on the elementwise ops,
 * and the reference runner's hvp check failing when a value is off. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "autograd.h"
#include "optest.h"
#include "refcase.h"

static void assert_near(double got, double want, double rel, const char *what)
{
    cr_assert(fabs(got - want) <= rel * (1 + fabs(want)), "%s: got %.17g want %.17g", what, got, want);
}

/* f = x^3 sin x and its first three derivatives in closed form. */
static double f1(double x) { return 3 * x * x * sin(x) + x * x * x * cos(x); }
static double f2(double x) { return 6 * x * sin(x) + 6 * x * x * cos(x) - x * x * x * sin(x); }
static double f3(double x)
{
    return 6 * sin(x) + 18 * x * cos(x) - 9 * x * x * sin(x) - x * x * x * cos(x);
}

Test(second_order, third_derivative_of_x_cubed_sin_x)
{
    const double points[] = {-2.3, -0.4, 0.7, 1.9, 3.1};
    for (size_t p = 0; p < sizeof points / sizeof points[0]; p++) {
        ag_tensor *x = ot_leaf(AG_F64, NULL, 0, &points[p]);
        ag_tape *t = ag_tape_new();
        ag_tensor *y = ag_mul(t, ag_pow(t, x, 3), ag_sin(t, x)), *d1, *d2, *d3;
        cr_assert_eq(ag_gradients(t, y, 1, &x, &d1, AG_CREATE_GRAPH), AG_OK, "%s", ag_tape_error(t));
        cr_assert_eq(ag_gradients(t, d1, 1, &x, &d2, AG_CREATE_GRAPH), AG_OK, "%s", ag_tape_error(t));
        cr_assert_eq(ag_gradients(t, d2, 1, &x, &d3, 0), AG_OK, "%s", ag_tape_error(t));
        assert_near(ag_item(d1), f1(points[p]), 1e-13, "f'");
        assert_near(ag_item(d2), f2(points[p]), 1e-13, "f''");
        assert_near(ag_item(d3), f3(points[p]), 1e-12, "f'''");
        cr_assert_eq(ag_get_grad(x, 0), 0, "ag_gradients touched the leaf's grad");
        ag_tape_free(t);
        ag_tensor_free(x);
    }
}

Test(second_order, gradients_without_a_graph_match_backward)
{
    const double v[] = {0.3, -1.2, 2.0, 0.5, -0.7, 1.1};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2, 3), v), *w = ot_leaf(AG_F64, AG_SHAPE(3), v + 3);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_mul(t, ag_tanh(t, ag_mul(t, x, w)), ag_exp(t, w)));
    ag_tensor *in[] = {x, w}, *g[2];
    cr_assert_eq(ag_gradients(t, y, 2, in, g, 0), AG_OK, "%s", ag_tape_error(t));
    cr_assert_not(ag_requires_grad(g[0]), "without AG_CREATE_GRAPH the gradients are constants");
    cr_assert_eq(ag_get_grad(x, 0), 0, "the leaves' grads are untouched");
    cr_assert_eq(ag_backward(t, y), AG_OK);
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < ag_tensor_numel(in[k]); i++)
            cr_assert_eq(ag_get(g[k], i), ag_get_grad(in[k], i), "input %zu element %zu", k, i);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

/* f = Σ e^x + (Σ x)^2: H = diag(e^x) + 2·1, so H v = e^x v + 2 Σ v. */
Test(second_order, hvp_matches_its_closed_form)
{
    const double xv[] = {0.1, -0.5, 1.3, 0.8}, vv[] = {1.0, -2.0, 0.5, 3.0};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(4), xv), *v = ag_from_data(AG_F64, AG_SHAPE(4), vv), *hv;
    ag_tape *t = ag_tape_new();
    ag_tensor *s = ag_sum(t, x);
    ag_tensor *y = ag_add(t, ag_sum(t, ag_exp(t, x)), ag_mul(t, s, s));
    cr_assert_eq(ag_hvp(t, y, 1, &x, &v, &hv), AG_OK, "%s", ag_tape_error(t));
    double sv = 0;
    for (int i = 0; i < 4; i++)
        sv += vv[i];
    for (int i = 0; i < 4; i++)
        assert_near(ag_get(hv, i), exp(xv[i]) * vv[i] + 2 * sv, 1e-14, "hv");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(v);
}

/* f = Σ x^3 + x0 x1: H = diag(6x) + [[0,1],[1,0]] in the first corner. */
Test(second_order, dense_hessian_matches_its_closed_form)
{
    const double xv[] = {0.5, -1.5, 2.0};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(3), xv), *H;
    ag_tape *t = ag_tape_new();
    ag_tensor *x01 = ag_prod_axis(t, ag_slice(t, x, 0, 0, 2), 0, false);
    ag_tensor *y = ag_add(t, ag_sum(t, ag_pow(t, x, 3)), x01);
    cr_assert_eq(ag_hessian(t, y, x, &H), AG_OK, "%s", ag_tape_error(t));
    const double want[9] = {6 * 0.5, 1, 0, 1, 6 * -1.5, 0, 0, 0, 6 * 2.0};
    for (int i = 0; i < 9; i++)
        assert_near(ag_get(H, i), want[i], 1e-14, "H");
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(second_order, errors_say_what_is_wrong)
{
    const double xv[] = {1, 2};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2), xv), *c = ag_from_data(AG_F64, AG_SHAPE(2), xv);
    ag_tensor *v3 = ag_zeros(AG_F64, AG_SHAPE(3)), *g, *hv;
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_mul(t, x, x));
    cr_assert_eq(ag_gradients(t, y, 1, &c, &g, 0), AG_ERR_STATE);
    cr_assert(strstr(ag_tape_error(t), "ag_gradients: input 1 does not require grad"), "%s",
              ag_tape_error(t));
    ag_tape_reset(t);
    y = ag_sum(t, ag_mul(t, x, x));
    cr_assert_eq(ag_hvp(t, y, 1, &x, &v3, &hv), AG_ERR_SHAPE);
    cr_assert(strstr(ag_tape_error(t), "ag_hvp: v[0] is [3] f64, input 1 is [2] f64"), "%s",
              ag_tape_error(t));
    ag_tape_reset(t);
    y = ag_sum(t, ag_mul(t, x, x));
    ag_tape_set_recording(t, false);
    cr_assert_eq(ag_gradients(t, y, 1, &x, &g, AG_CREATE_GRAPH), AG_ERR_STATE);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(c);
    ag_tensor_free(v3);
}

/* ------------------------------------------ gradgradcheck, elementwise ops */

typedef ag_tensor *(*unary_fn)(ag_tape *, ag_tensor *);
typedef ag_tensor *(*binary_fn)(ag_tape *, ag_tensor *, ag_tensor *);

typedef struct { const char *name; unary_fn f; bool positive; } unary_case;
typedef struct { const char *name; binary_fn f; bool positive; } binary_case;

static ag_tensor *apply_unary(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ((const unary_case *)ctx)->f(t, x[0]);
}

static ag_tensor *apply_binary(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ((const binary_case *)ctx)->f(t, x[0], x[1]);
}

/* Values in (0.2, 0.9) with signs alternating as asked: inside every
 * unary op's domain, clear of kinks. */
static ag_tensor *values(const size_t *shape, size_t rank, bool positive, unsigned seed)
{
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    ag_tensor *x = ag_rand_uniform(AG_F64, shape, rank, 0.2, 0.9, &rng);
    double *d = ag_data(x);
    for (size_t i = 0; !positive && i < ag_tensor_numel(x); i += 2)
        d[i] = -d[i];
    return x;
}

static void gradgrad(ag_fn fn, void *ctx, size_t n, ag_tensor **x, const char *name)
{
    ag_gradcheck_report rep;
    ag_status s = ag_gradgradcheck(fn, ctx, n, x, 1e-5, 1e-6, 1e-5, &rep);
    cr_assert_eq(s, AG_OK, "%s: %s", name, rep.message);
    cr_assert(rep.passed, "%s: gradient element %zu of input %zu: numeric %.12g, recorded %.12g", name,
              rep.worst_index, rep.worst_input, rep.numeric, rep.analytic);
    cr_assert_gt(rep.checked, 0);
}

Test(second_order, gradgradcheck_every_unary_elementwise_op)
{
    static const unary_case ops[] = {
        {"neg", ag_neg, false}, {"exp", ag_exp, false}, {"log", ag_log, true}, {"sqrt", ag_sqrt, true},
        {"abs", ag_abs, false}, {"sigmoid", ag_sigmoid, false}, {"tanh", ag_tanh, false},
        {"relu", ag_relu, false}, {"softplus", ag_softplus, false}, {"sin", ag_sin, false},
        {"cos", ag_cos, false}, {"tan", ag_tan, false}, {"asin", ag_asin, false},
        {"acos", ag_acos, false}, {"atan", ag_atan, false}, {"sinh", ag_sinh, false},
        {"cosh", ag_cosh, false}, {"log1p", ag_log1p, false}, {"expm1", ag_expm1, false},
        {"erf", ag_erf, false}, {"square", ag_square, false}, {"reciprocal", ag_reciprocal, false},
        {"rsqrt", ag_rsqrt, true}, {"gelu", ag_gelu, false}, {"silu", ag_silu, false},
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        ag_tensor *x = values(AG_SHAPE(2, 3, 2), ops[k].positive, 7 + (unsigned)k);
        gradgrad(apply_unary, (void *)&ops[k], 1, &x, ops[k].name);
        ag_tensor_free(x);
    }
}

static ag_tensor *pow_2_5(ag_tape *t, ag_tensor *x) { return ag_pow(t, x, 2.5); }
static ag_tensor *leaky(ag_tape *t, ag_tensor *x) { return ag_leaky_relu(t, x, 0.1); }
static ag_tensor *elu(ag_tape *t, ag_tensor *x) { return ag_elu(t, x, 0.7); }
static ag_tensor *clamp(ag_tape *t, ag_tensor *x) { return ag_clamp(t, x, -0.5, 0.5); }
static ag_tensor *affine(ag_tape *t, ag_tensor *x) { return ag_add_scalar(t, ag_scale(t, x, -2), 3); }

Test(second_order, gradgradcheck_elementwise_ops_with_parameters)
{
    static const unary_case ops[] = {
        {"pow", pow_2_5, true}, {"leaky_relu", leaky, false}, {"elu", elu, false},
        {"clamp", clamp, false}, {"scale, add_scalar", affine, false},
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        ag_tensor *x = values(AG_SHAPE(3, 4), ops[k].positive, 31 + (unsigned)k);
        gradgrad(apply_unary, (void *)&ops[k], 1, &x, ops[k].name);
        ag_tensor_free(x);
    }
}

Test(second_order, gradgradcheck_binary_ops_broadcast)
{
    static const binary_case ops[] = {
        {"add", ag_add, false}, {"sub", ag_sub, false}, {"mul", ag_mul, false},
        {"div", ag_div, true}, {"maximum", ag_maximum, false}, {"minimum", ag_minimum, false},
        {"atan2", ag_atan2, false}, {"pow_tensor", ag_pow_tensor, true},
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        ag_tensor *x[2] = {values(AG_SHAPE(2, 3, 4), ops[k].positive, 51 + (unsigned)k),
                           values(AG_SHAPE(3, 1), ops[k].positive, 71 + (unsigned)k)};
        gradgrad(apply_binary, (void *)&ops[k], 2, x, ops[k].name);
        ag_tensor_free(x[0]);
        ag_tensor_free(x[1]);
    }
}

static ag_tensor *where_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    return ag_where(t, (ag_tensor *)ctx, ag_mul(t, x[0], x[0]), ag_exp(t, x[1]));
}

Test(second_order, gradgradcheck_where_broadcast)
{
    const double c[] = {1, 0, 1, 0};
    ag_tensor *cond = ag_from_data(AG_F64, AG_SHAPE(4), c);
    ag_tensor *x[2] = {values(AG_SHAPE(3, 4), false, 3), values(AG_SHAPE(3, 1), false, 4)};
    gradgrad(where_fn, cond, 2, x, "where");
    ag_tensor_free(x[0]);
    ag_tensor_free(x[1]);
    ag_tensor_free(cond);
}

/* ------------------------------------------- the runner's hvp check fails */

static const char hvp_case[] =
    "case square_hvp\n"
    "input t1 1 2 : 0.5 -1.5\n"
    "step t2 = mul t1 t1\n"
    "step t3 = mul t2 t1\n"
    "step t4 = sum t3\n"
    "value t4 0 : -3.25\n"
    "grad t1 1 2 : 0.75 6.75\n"
    "dir t1 1 2 : 1 2\n"
    /* H = diag(6 x) = diag(3, -9): H dir = (3, -18) */
    "hvp t1 1 2 : 3 %s\n"
    "end\n";

static ref_result run_text(const char *last)
{
    char text[512], err[128];
    snprintf(text, sizeof text, hvp_case, last);
    ref_file f;
    cr_assert(ref_parse(text, strlen(text), &f, err, sizeof err), "%s", err);
    ref_result r = ref_run(&f.cases[0], AG_F64, 1e-9);
    ref_free(&f);
    return r;
}

Test(second_order, refcheck_fails_when_one_hvp_value_is_off)
{
    ref_result good = run_text("-18");
    cr_assert(good.passed, "%s", good.what);
    ref_result bad = run_text("-18.001");
    cr_assert_not(bad.passed, "an hvp off by 1e-3 passed");
    cr_assert(strstr(bad.what, "t1[1]"), "%s", bad.what);
}

/* d/dz of y = sum(z²), z = 3x an op result: 2z, by both paths; a wanted
 * tensor y does not depend on gets zeros. */
Test(second_order, gradients_with_respect_to_op_results)
{
    const double xv[] = {0.5, -1.0, 2.0};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(3), xv), *other = ot_leaf(AG_F64, AG_SHAPE(2), xv);
    for (int graph = 0; graph < 2; graph++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *z = ag_scale(t, x, 3), *y = ag_sum(t, ag_square(t, z));
        ag_tensor *in[] = {z, other}, *g[2];
        cr_assert_eq(ag_gradients(t, y, 2, in, g, graph ? AG_CREATE_GRAPH : 0), AG_OK, "%s",
                     ag_tape_error(t));
        for (int i = 0; i < 3; i++)
            cr_assert_eq(ag_get(g[0], i), 2 * 3 * xv[i], "graph %d element %d", graph, i);
        cr_assert_eq(ag_get(g[1], 0), 0);
        cr_assert_eq(ag_get(g[1], 1), 0);
        cr_assert_eq(ag_requires_grad(g[0]), graph == 1, "a recorded gradient requires grad");
        ag_tape_free(t);
    }
    ag_tensor_free(x);
    ag_tensor_free(other);
}

Test(second_order, gradients_argument_errors)
{
    const double xv[] = {1, 2};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2), xv), *g;
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_mul(t, x, x);
    cr_assert_eq(ag_gradients(t, y, 1, &x, &g, 0), AG_ERR_SHAPE);
    cr_assert(strstr(ag_tape_error(t), "ag_gradients: y [2] has 2 elements; it must have one"), "%s",
              ag_tape_error(t));
    ag_tape_reset(t);
    y = ag_sum(t, ag_mul(t, x, x));
    cr_assert_eq(ag_gradients(t, y, 1, NULL, &g, 0), AG_ERR_NULL);
    ag_tape_reset(t);
    y = ag_sum(t, ag_mul(t, x, x));
    ag_tensor *in[] = {NULL};
    cr_assert_eq(ag_gradients(t, y, 1, in, &g, 0), AG_ERR_NULL);
    cr_assert(strstr(ag_tape_error(t), "ag_gradients: input 1 is NULL"), "%s", ag_tape_error(t));
    cr_assert_eq(ag_gradients(NULL, y, 1, &x, &g, 0), AG_ERR_NULL);
    cr_assert_eq(ag_hvp(NULL, y, 1, &x, &x, &g), AG_ERR_NULL);
    ag_tape_reset(t);
    y = ag_sum(t, ag_mul(t, x, x));
    cr_assert_eq(ag_hessian(t, y, x, NULL), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* A function linear in x has a zero Hessian: hvp and the dense Hessian
 * give zeros instead of an error. */
Test(second_order, linear_functions_have_zero_second_derivatives)
{
    const double xv[] = {1, -2, 3}, vv[] = {1, 1, 1};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(3), xv), *v = ag_from_data(AG_F64, AG_SHAPE(3), vv), *hv, *H;
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_scale(t, x, 4));
    cr_assert_eq(ag_hvp(t, y, 1, &x, &v, &hv), AG_OK, "%s", ag_tape_error(t));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ag_get(hv, i), 0);
    cr_assert_eq(ag_hessian(t, y, x, &H), AG_OK, "%s", ag_tape_error(t));
    for (int i = 0; i < 9; i++)
        cr_assert_eq(ag_get(H, i), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(v);
}

/* Found by the api fuzzer: a leaf listed twice gets its gradient in both
 * places; a leaf freed while the tape holds it is usable by the recorded
 * backward as by the fused one; ag_hvp takes inputs of both dtypes. */
Test(second_order, fuzzer_findings_stay_fixed)
{
    const double xv[] = {0.5, -1.5};
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2), xv), *in[2] = {x, x}, *g[2];
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_mul(t, x, x));
    cr_assert_eq(ag_gradients(t, y, 2, in, g, 0), AG_OK, "%s", ag_tape_error(t));
    for (int i = 0; i < 2; i++)
        cr_assert_eq(ag_get(g[1], i), 2 * xv[i], "the second listing of x, element %d", i);
    ag_tape_reset(t);
    ag_tensor *w = ot_leaf(AG_F64, AG_SHAPE(2), xv);
    y = ag_sum(t, ag_mul(t, ag_exp(t, x), w));
    ag_tensor_free(w); /* the tape holds it until its reset */
    cr_assert_eq(ag_gradients(t, y, 1, &x, g, AG_CREATE_GRAPH), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_get(g[0], 0), exp(xv[0]) * xv[0]);
    ag_tape_reset(t);
    ag_tensor_free(x);
    float fv[] = {1, 2};
    ag_tensor *a = ot_leaf(AG_F64, AG_SHAPE(2), xv), *b = ag_from_data(AG_F32, AG_SHAPE(2), fv);
    ag_set_requires_grad(b, true);
    ag_tensor *va = ag_full(AG_F64, AG_SHAPE(2), 1), *vb = ag_full(AG_F32, AG_SHAPE(2), 1);
    y = ag_add(t, ag_sum(t, ag_square(t, a)), ag_cast(t, ag_sum(t, ag_square(t, b)), AG_F64));
    ag_tensor *ins[] = {a, b}, *vs[] = {va, vb}, *hv[2];
    cr_assert_eq(ag_hvp(t, y, 2, ins, vs, hv), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_get(hv[0], 0), 2);
    cr_assert_eq(ag_get(hv[1], 1), 2);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(va);
    ag_tensor_free(vb);
}
