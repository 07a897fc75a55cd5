/* table.c: the table of every op (made from ops/list.h), and the shape
 * rules several families share. */
#include "../internal.h"

#include <string.h>

/* The table of every op, in the order of ops/list.h. */
const ag_op_def *const ag_op_table[AG_OP_COUNT] = {
#define AG_OP(name) &ag__op_##name,
#include "list.h"
#undef AG_OP
};

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
                         r->def->name, ag__shape_str(r->in[0], sa, sizeof sa),
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
                         r->def->name, r->attr.axis, ag__shape_str(x, s, sizeof s));
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
