/* refops_math.c: the reference runner's elementwise ops of the second op set (tests/data/ops-more.txt): trigonometric, hyperbolic, activations, clamp, maximum/minimum, atan2, pow_tensor, where. */
#include "refcase.h"


PLAIN1(sin) PLAIN1(cos) PLAIN1(tan) PLAIN1(asin) PLAIN1(acos) PLAIN1(atan) PLAIN1(sinh)
PLAIN1(cosh) PLAIN1(log1p) PLAIN1(expm1) PLAIN1(erf) PLAIN1(square) PLAIN1(reciprocal)
PLAIN1(rsqrt) PLAIN1(gelu) PLAIN1(silu)
PLAIN2(maximum) PLAIN2(minimum) PLAIN2(atan2) PLAIN2(pow_tensor)

static ag_tensor *run_elu(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs == 1 ? ag_elu(t, x[0], l->attrs[0]) : NULL;
}

static ag_tensor *run_clamp(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs == 2 ? ag_clamp(t, x[0], l->attrs[0], l->attrs[1]) : NULL;
}

static ag_tensor *run_where(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs ? NULL : ag_where(t, x[0], x[1], x[2]);
}

const ref_op ref_ops_math[] = {
    {"sin", "sin", 1, run_sin}, {"cos", "cos", 1, run_cos}, {"tan", "tan", 1, run_tan},
    {"asin", "asin", 1, run_asin}, {"acos", "acos", 1, run_acos}, {"atan", "atan", 1, run_atan},
    {"sinh", "sinh", 1, run_sinh}, {"cosh", "cosh", 1, run_cosh},
    {"log1p", "log1p", 1, run_log1p}, {"expm1", "expm1", 1, run_expm1}, {"erf", "erf", 1, run_erf},
    {"square", "square", 1, run_square}, {"reciprocal", "reciprocal", 1, run_reciprocal},
    {"rsqrt", "rsqrt", 1, run_rsqrt}, {"gelu", "gelu", 1, run_gelu}, {"silu", "silu", 1, run_silu},
    {"elu", "elu", 1, run_elu}, {"clamp", "clamp", 1, run_clamp},
    {"maximum", "maximum", 2, run_maximum}, {"minimum", "minimum", 2, run_minimum},
    {"atan2", "atan2", 2, run_atan2}, {"pow_tensor", "pow_tensor", 2, run_pow_tensor},
    {"where", "where", 3, run_where},
    {NULL, NULL, 0, NULL},
};
