/* refops_core.c: the reference runner's ops of the first op set
 * (tests/data/ops.txt) and of ops-extra.txt. */
#include "refcase.h"

#include <string.h>


PLAIN1(neg) PLAIN1(exp) PLAIN1(log) PLAIN1(sqrt) PLAIN1(sigmoid) PLAIN1(tanh) PLAIN1(relu)
PLAIN1(softplus) PLAIN1(abs) PLAIN1(transpose) PLAIN1(sum) PLAIN1(mean) PLAIN1(detach)
PLAIN2(add) PLAIN2(sub) PLAIN2(mul) PLAIN2(div) PLAIN2(matmul) PLAIN2(mse) PLAIN2(quadratic_cost)
PLAIN2(bce) PLAIN2(bce_with_logits) PLAIN2(cross_entropy)
SCALAR1(leaky_relu) SCALAR1(pow) SCALAR1(add_scalar) SCALAR1(scale)

static ag_tensor *run_bmm(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    if (l->nattrs || ag_tensor_rank(x[0]) != 3 || ag_tensor_rank(x[1]) != 3)
        return NULL;
    return ag_matmul(t, x[0], x[1]);
}

AXIS1(softmax) AXIS1(log_softmax) AXIS_KEEP(sum_axis) AXIS_KEEP(mean_axis) AXIS_KEEP(max_axis)

static ag_tensor *run_concat(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    long ax;
    (void)dt;
    return l->nattrs == 1 && ref_int_attr(l, 0, &ax) ? ag_concat(t, x[0], x[1], (int)ax) : NULL;
}

static ag_tensor *run_slice(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    long ax, start, end;
    (void)dt;
    if (l->nattrs != 3 || !ref_int_attr(l, 0, &ax) || !ref_int_attr(l, 1, &start) ||
        !ref_int_attr(l, 2, &end) || start < 0 || end < 0)
        return NULL;
    return ag_slice(t, x[0], (int)ax, (size_t)start, (size_t)end);
}

static ag_tensor *run_reshape(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    size_t shape[AG_MAX_RANK], rank;
    (void)dt;
    return ref_shape_attrs(l, 0, shape, &rank) ? ag_reshape(t, x[0], shape, rank) : NULL;
}

/* 32 or 64 bits, or 0: back to the dtype the case runs in */
static ag_tensor *run_cast(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    if (l->nattrs != 1 || (l->attrs[0] != 0 && l->attrs[0] != 32 && l->attrs[0] != 64))
        return NULL;
    return ag_cast(t, x[0], l->attrs[0] == 0 ? dt : l->attrs[0] == 32 ? AG_F32 : AG_F64);
}

const ref_op ref_ops_core[] = {
    {"neg", "neg", 1, run_neg}, {"exp", "exp", 1, run_exp}, {"log", "log", 1, run_log},
    {"sqrt", "sqrt", 1, run_sqrt}, {"sigmoid", "sigmoid", 1, run_sigmoid},
    {"tanh", "tanh", 1, run_tanh}, {"relu", "relu", 1, run_relu},
    {"softplus", "softplus", 1, run_softplus}, {"abs", "abs", 1, run_abs},
    {"transpose", "transpose", 1, run_transpose}, {"sum", "sum", 1, run_sum},
    {"mean", "mean", 1, run_mean}, {"detach", "detach", 1, run_detach},
    {"add", "add", 2, run_add}, {"sub", "sub", 2, run_sub}, {"mul", "mul", 2, run_mul},
    {"div", "div", 2, run_div}, {"matmul", "matmul", 2, run_matmul}, {"bmm", "matmul", 2, run_bmm},
    {"mse_loss", "mse", 2, run_mse}, {"quadratic_cost", "quadratic_cost", 2, run_quadratic_cost},
    {"bce_loss", "bce", 2, run_bce}, {"bce_with_logits", "bce_with_logits", 2, run_bce_with_logits},
    {"cross_entropy", "cross_entropy", 2, run_cross_entropy},
    {"leaky_relu", "leaky_relu", 1, run_leaky_relu}, {"pow", "pow", 1, run_pow},
    {"add_scalar", "add_scalar", 1, run_add_scalar}, {"scale", "scale", 1, run_scale},
    {"softmax", "softmax", 1, run_softmax}, {"log_softmax", "log_softmax", 1, run_log_softmax},
    {"concat", "concat", 2, run_concat}, {"sum_axis", "sum_axis", 1, run_sum_axis},
    {"mean_axis", "mean_axis", 1, run_mean_axis}, {"max_axis", "max_axis", 1, run_max_axis},
    {"slice", "slice", 1, run_slice}, {"reshape", "reshape", 1, run_reshape},
    {"cast", "cast", 1, run_cast},
    {NULL, NULL, 0, NULL},
};
