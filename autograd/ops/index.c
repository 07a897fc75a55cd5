/* index.c: index_select and gather: elements picked by integer indices.
 * The indices are a tensor of whole numbers stored in either float dtype
 * (as cross_entropy's classes); they are checked when the op is recorded
 * and take no gradient. Both backwards add each gy element into the gx
 * element it was read from, in order on one thread: an index repeated
 * sums its gradients. */
#include "../internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Index i of idx as a position. */
static inline size_t index_at(const ag_tensor *idx, size_t i)
{
    return idx->dtype == AG_F32 ? (size_t)((const float *)idx->data)[i]
                                : (size_t)((const double *)idx->data)[i];
}

/* "[1,2]": the row-major position i of idx as its multi-index. */
static const char *position_str(const ag_tensor *idx, size_t i, char *buf, size_t cap)
{
    size_t at[AG_MAX_RANK];
    for (size_t d = idx->rank; d-- > 0;) {
        at[d] = i % idx->shape[d];
        i /= idx->shape[d];
    }
    ag_tensor pos = {.rank = idx->rank};
    memcpy(pos.shape, at, idx->rank * sizeof *at);
    return ag__shape_str(&pos, buf, cap);
}

/* Every index of idx is a whole number in [0, n), else AG_ERR_VALUE
 * naming the first that is not, where it is, and axis of x. */
static ag_status check_indices(ag_tape *t, const ag_record *r, size_t n)
{
    const ag_tensor *x = r->in[0], *idx = r->in[1];
    for (size_t i = 0; i < idx->numel; i++) {
        double v = idx->dtype == AG_F32 ? (double)((const float *)idx->data)[i]
                                        : ((const double *)idx->data)[i];
        if (v >= 0 && v < (double)n && v == floor(v))
            continue;
        char pos[AG_SHAPE_BUF], s[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_VALUE,
                         "ag_%s: index %g at position %s is not a whole number in [0, %zu) "
                         "(axis %d of %s)", r->def->name, v, position_str(idx, i, pos, sizeof pos),
                         n, r->attr.axis, ag__shape_str(x, s, sizeof s));
    }
    return AG_OK;
}

/* ------------------------------------------------------------ index_select
 * Around the axis x is (outer, n, inner), idx is [k], y is (outer, k, inner):
 *   y[o,j,:] = x[o,idx[j],:]        gx[o,idx[j],:] += gy[o,j,:] */

static ag_status index_select_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0], *idx = r->in[1];
    if (ag__check_axis(t, r) != AG_OK)
        return ag_tape_status(t);
    size_t axis = (size_t)r->attr.axis;
    if (idx->rank > 1) {
        char sx[AG_SHAPE_BUF], si[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_index_select: input %s, indices %s: want indices [k]",
                         ag__shape_str(x, sx, sizeof sx), ag__shape_str(idx, si, sizeof si));
    }
    if (check_indices(t, r, x->shape[axis]) != AG_OK)
        return ag_tape_status(t);
    out->rank = x->rank;
    memcpy(out->shape, x->shape, sizeof out->shape);
    out->shape[axis] = idx->numel;
    return AG_OK;
}

static ag_status index_select_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    const ag_tensor *x = r->in[0], *idx = r->in[1];
    size_t outer, n, inner, k = idx->numel, es = AG_DTYPE_SIZE(x->dtype);
    ag__axis_split(x, r->attr.axis, &outer, &n, &inner);
    size_t row = inner * es;
    const char *xs = x->data;
    char *y = r->out->data;
    for (size_t o = 0; o < outer; o++)
        for (size_t j = 0; j < k; j++, y += row)
            memcpy(y, xs + (o * n + index_at(idx, j)) * row, row);
    return AG_OK;
}

static ag_status index_select_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    const ag_tensor *x = r->in[0], *idx = r->in[1];
    if (!gin[0])
        return AG_OK; /* the indices take no gradient */
    size_t outer, n, inner, k = idx->numel;
    ag__axis_split(x, r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(x->dtype, T, {
        const T *gy = gout;
        T *gx = gin[0];
        for (size_t o = 0; o < outer; o++)
            for (size_t j = 0; j < k; j++, gy += inner) {
                T *g = gx + (o * n + index_at(idx, j)) * inner;
                for (size_t i = 0; i < inner; i++)
                    g[i] += gy[i];
            }
    });
    return AG_OK;
}

/* ------------------------------------------------------------ gather
 * idx and y have one shape, of x's rank, no larger than x off the axis:
 *   y[..j..] = x[..idx[..j..]..]     gx[..idx[..j..]..] += gy[..j..]
 * (the index replacing j along the axis). */

static ag_status gather_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0], *idx = r->in[1];
    if (ag__check_axis(t, r) != AG_OK)
        return ag_tape_status(t);
    size_t axis = (size_t)r->attr.axis;
    bool fits = idx->rank == x->rank;
    for (size_t d = 0; fits && d < x->rank; d++)
        fits = d == axis || idx->shape[d] <= x->shape[d];
    if (!fits) {
        char sx[AG_SHAPE_BUF], si[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE,
                         "ag_gather: input %s, indices %s: want indices of the input's rank, "
                         "no larger than it off axis %zu", ag__shape_str(x, sx, sizeof sx),
                         ag__shape_str(idx, si, sizeof si), axis);
    }
    if (check_indices(t, r, x->shape[axis]) != AG_OK)
        return ag_tape_status(t);
    out->rank = idx->rank;
    memcpy(out->shape, idx->shape, sizeof out->shape);
    return AG_OK;
}

/* Walks y (= idx's shape) in row-major order keeping the offset in x of
 * the same position with the axis index at 0. */
typedef struct {
    size_t rank, n[AG_MAX_RANK], s[AG_MAX_RANK], pos[AG_MAX_RANK], at;
    size_t axis_step;
} gather_walk;

static void walk_init(gather_walk *w, const ag_record *r)
{
    const ag_tensor *x = r->in[0], *y = r->out;
    size_t st = 1;
    w->rank = y->rank;
    w->axis_step = 0;
    for (size_t d = x->rank; d-- > 0;) {
        w->n[d] = y->shape[d];
        w->s[d] = d == (size_t)r->attr.axis ? 0 : st;
        w->pos[d] = 0;
        if (d == (size_t)r->attr.axis)
            w->axis_step = st;
        st *= x->shape[d];
    }
    w->at = 0;
}

static inline void walk_next(gather_walk *w)
{
    for (size_t d = w->rank; d-- > 0;) {
        w->at += w->s[d];
        if (++w->pos[d] < w->n[d])
            return;
        w->at -= w->s[d] * w->n[d];
        w->pos[d] = 0;
    }
}

static ag_status gather_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    const ag_tensor *idx = r->in[1];
    gather_walk w;
    walk_init(&w, r);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t i = 0; i < r->out->numel; i++, walk_next(&w))
            y[i] = x[w.at + index_at(idx, i) * w.axis_step];
    });
    return AG_OK;
}

static ag_status gather_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    const ag_tensor *idx = r->in[1];
    if (!gin[0])
        return AG_OK; /* the indices take no gradient */
    gather_walk w;
    walk_init(&w, r);
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *gx = gin[0];
        for (size_t i = 0; i < r->out->numel; i++, walk_next(&w))
            gx[w.at + index_at(idx, i) * w.axis_step] += gy[i];
    });
    return AG_OK;
}

const ag_op_def ag__op_index_select = {.name = "index_select", .arity = 2,
                                       .shape = index_select_shape,
                                       .forward = index_select_forward,
                                       .backward = index_select_backward};
const ag_op_def ag__op_gather = {.name = "gather", .arity = 2, .shape = gather_shape,
                                 .forward = gather_forward, .backward = gather_backward};

/* ------------------------------------------------------------ public API */

ag_tensor *ag_index_select(ag_tape *t, ag_tensor *x, int axis, ag_tensor *idx)
{
    return ag__apply(t, &ag__op_index_select, x, idx, &(ag_attr){.axis = axis});
}

ag_tensor *ag_gather(ag_tape *t, ag_tensor *x, int axis, ag_tensor *idx)
{
    return ag__apply(t, &ag__op_gather, x, idx, &(ag_attr){.axis = axis});
}
