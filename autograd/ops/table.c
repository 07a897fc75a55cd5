/* table.c: one row per op, and the shape rules several families share.
 * Adding an op is one row here, its functions, and a reference case. */
#include "../internal.h"

#include <string.h>

#define UNARY(name) {name, 1, false, false, ag__shape_same, ag__unary_forward, ag__unary_backward}
#define BINARY(name) {name, 2, true, false, ag__binary_shape, ag__binary_forward, ag__binary_backward}
#define LOSS(name) {name, 2, true, false, ag__shape_same_pair, ag__loss_forward, ag__loss_backward}

const ag_op_def ag_op_table[AG_OP_COUNT] = {
    [AG_OP_ADD] = BINARY("add"),
    [AG_OP_SUB] = BINARY("sub"),
    [AG_OP_MUL] = BINARY("mul"),
    [AG_OP_DIV] = BINARY("div"),
    [AG_OP_NEG] = UNARY("neg"),
    [AG_OP_EXP] = UNARY("exp"),
    [AG_OP_LOG] = UNARY("log"),
    [AG_OP_SQRT] = UNARY("sqrt"),
    [AG_OP_POW] = UNARY("pow"),
    [AG_OP_ABS] = UNARY("abs"),
    [AG_OP_SIGMOID] = UNARY("sigmoid"),
    [AG_OP_TANH] = UNARY("tanh"),
    [AG_OP_RELU] = UNARY("relu"),
    [AG_OP_LEAKY_RELU] = UNARY("leaky_relu"),
    [AG_OP_SOFTPLUS] = UNARY("softplus"),
    [AG_OP_ADD_SCALAR] = UNARY("add_scalar"),
    [AG_OP_SCALE] = UNARY("scale"),
    [AG_OP_MATMUL] = {"matmul", 2, true, false, ag__matmul_shape, ag__matmul_forward, ag__matmul_backward},
    [AG_OP_TRANSPOSE] = {"transpose", 1, false, false, ag__transpose_shape, ag__transpose_forward, ag__transpose_backward},
    [AG_OP_RESHAPE] = {"reshape", 1, false, true, ag__reshape_shape, ag__reshape_forward, ag__reshape_backward},
    [AG_OP_CONCAT] = {"concat", 2, true, false, ag__concat_shape, ag__concat_forward, ag__concat_backward},
    [AG_OP_SLICE] = {"slice", 1, false, false, ag__slice_shape, ag__slice_forward, ag__slice_backward},
    [AG_OP_CAST] = {"cast", 1, false, false, ag__cast_shape, ag__cast_forward, ag__cast_backward},
    [AG_OP_DETACH] = {"detach", 1, false, true, ag__shape_same, ag__reshape_forward, ag__reshape_backward},
    [AG_OP_SUM] = {"sum", 1, false, false, ag__shape_scalar, ag__sum_forward, ag__sum_backward},
    [AG_OP_MEAN] = {"mean", 1, false, false, ag__shape_scalar, ag__sum_forward, ag__sum_backward},
    [AG_OP_SUM_AXIS] = {"sum_axis", 1, false, false, ag__axis_shape, ag__sum_axis_forward, ag__sum_axis_backward},
    [AG_OP_MEAN_AXIS] = {"mean_axis", 1, false, false, ag__axis_shape, ag__sum_axis_forward, ag__sum_axis_backward},
    [AG_OP_MAX_AXIS] = {"max_axis", 1, false, false, ag__axis_shape, ag__max_axis_forward, ag__max_axis_backward},
    [AG_OP_SOFTMAX] = {"softmax", 1, false, false, ag__softmax_shape, ag__softmax_forward, ag__softmax_backward},
    [AG_OP_LOG_SOFTMAX] = {"log_softmax", 1, false, false, ag__softmax_shape, ag__softmax_forward, ag__softmax_backward},
    [AG_OP_MSE] = LOSS("mse"),
    [AG_OP_QUADRATIC_COST] = LOSS("quadratic_cost"),
    [AG_OP_BCE] = LOSS("bce"),
    [AG_OP_BCE_WITH_LOGITS] = LOSS("bce_with_logits"),
    [AG_OP_CROSS_ENTROPY] = {"cross_entropy", 2, false, false, ag__cross_entropy_shape, ag__cross_entropy_forward, ag__cross_entropy_backward},
};

/* The table must name every op: a new enum value without a row fails here. */
_Static_assert(sizeof ag_op_table / sizeof ag_op_table[0] == AG_OP_COUNT, "op table size");

static void copy_shape(ag_tensor *out, const ag_tensor *x)
{
    out->rank = x->rank;
    memcpy(out->shape, x->shape, sizeof out->shape);
}

ag_status ag__shape_same(ag_tape *t, ag_record *r, ag_tensor *out)
{
    (void)t;
    copy_shape(out, r->in[0]);
    return AG_OK;
}

ag_status ag__shape_scalar(ag_tape *t, ag_record *r, ag_tensor *out)
{
    (void)t;
    (void)r;
    out->rank = 0;
    return AG_OK;
}

static bool same_shape(const ag_tensor *a, const ag_tensor *b)
{
    return a->rank == b->rank && memcmp(a->shape, b->shape, a->rank * sizeof *a->shape) == 0;
}

ag_status ag__shape_same_pair(ag_tape *t, ag_record *r, ag_tensor *out)
{
    if (!same_shape(r->in[0], r->in[1])) {
        char sa[AG_SHAPE_BUF], sb[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_%s: shapes %s and %s differ",
                         ag_op_table[r->op].name, ag__shape_str(r->in[0], sa, sizeof sa),
                         ag__shape_str(r->in[1], sb, sizeof sb));
    }
    out->rank = 0;
    return AG_OK;
}

ag_status ag__check_axis(ag_tape *t, ag_record *r)
{
    const ag_tensor *x = r->in[0];
    int axis = r->attr.axis, rank = (int)x->rank;
    if (axis < 0)
        axis += rank;
    if (axis < 0 || axis >= rank) {
        char s[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_VALUE, "ag_%s: axis %d is out of range for %s",
                         ag_op_table[r->op].name, r->attr.axis, ag__shape_str(x, s, sizeof s));
    }
    r->attr.axis = axis;
    return AG_OK;
}

void ag__axis_split(const ag_tensor *x, int axis, size_t *outer, size_t *n, size_t *inner)
{
    size_t o = 1, i = 1;
    for (int d = 0; d < axis; d++)
        o *= x->shape[d];
    for (size_t d = (size_t)axis + 1; d < x->rank; d++)
        i *= x->shape[d];
    *outer = o;
    *n = x->shape[axis];
    *inner = i;
}
