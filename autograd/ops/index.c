/* index.c: index_select and gather: elements picked by integer indices.
 * The indices are a tensor of whole numbers stored in either float dtype
 * (as cross_entropy's classes); they are checked when the op is recorded
 * and take no gradient. Both backwards add each gy element into the gx
 * element it was read from, in order on one thread: an index repeated
 * sums its gradients. Those backwards are also internal ops, index_add
 * and scatter_add, so that a recorded backward (grad_graph) can run them;
 * each pair is the other's gradient. */
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

/* Rows around the axis of a tensor shaped like x: (outer, n, inner); k
 * indices pick among the n. */
typedef struct {
    size_t outer, n, inner, k;
} rows;

static rows rows_of(const ag_tensor *x, int axis, const ag_tensor *idx)
{
    rows d = {.k = idx->numel};
    ag__axis_split(x, axis, &d.outer, &d.n, &d.inner);
    return d;
}

/* y[o,j,:] = x[o,idx[j],:], or += with add. */
static void select_rows(const rows *d, ag_dtype dt, const ag_tensor *idx, const void *x, void *y,
                        bool add)
{
    size_t es = AG_DTYPE_SIZE(dt), row = d->inner * es;
    const char *xs = x;
    char *ys = y;
    if (!add) {
        for (size_t o = 0; o < d->outer; o++)
            for (size_t j = 0; j < d->k; j++, ys += row)
                memcpy(ys, xs + (o * d->n + index_at(idx, j)) * row, row);
        return;
    }
    AG_DISPATCH(dt, T, {
        const T *src = x;
        T *dst = y;
        for (size_t o = 0; o < d->outer; o++)
            for (size_t j = 0; j < d->k; j++, dst += d->inner) {
                const T *s = src + (o * d->n + index_at(idx, j)) * d->inner;
                for (size_t i = 0; i < d->inner; i++)
                    dst[i] += s[i];
            }
    });
}

/* x[o,idx[j],:] += y[o,j,:], in order on one thread. */
static void add_rows(const rows *d, ag_dtype dt, const ag_tensor *idx, const void *y, void *x)
{
    AG_DISPATCH(dt, T, {
        const T *src = y;
        T *dst = x;
        for (size_t o = 0; o < d->outer; o++)
            for (size_t j = 0; j < d->k; j++, src += d->inner) {
                T *g = dst + (o * d->n + index_at(idx, j)) * d->inner;
                for (size_t i = 0; i < d->inner; i++)
                    g[i] += src[i];
            }
    });
}

static ag_status index_select_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    rows d = rows_of(r->in[0], r->attr.axis, r->in[1]);
    select_rows(&d, r->out->dtype, r->in[1], r->in[0]->data, r->out->data, false);
    return AG_OK;
}

static ag_status index_select_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    if (!gin[0])
        return AG_OK; /* the indices take no gradient */
    rows d = rows_of(r->in[0], r->attr.axis, r->in[1]);
    add_rows(&d, r->out->dtype, r->in[1], gout, gin[0]);
    return AG_OK;
}

/* ------------------------------------------------------------ index_add
 * Internal: index_select's backward as an op, so that it is recorded.
 * y = zeros of x's shape (attr.shape), y[o,idx[j],:] += g[o,j,:]; its
 * gradient is index_select's forward, g's gradient gy[o,idx[j],:]. */

/* The target shape of index_add and scatter_add (attr.shape, x's shape)
 * into out when g (input 0) fits it off the axis: equal (index_add) or no
 * larger (scatter_add). */
static ag_status target_shape(ag_tape *t, ag_record *r, ag_tensor *out, bool equal)
{
    const ag_tensor *g = r->in[0];
    size_t axis = (size_t)r->attr.axis; /* checked */
    bool fits = r->attr.rank == g->rank && (g->rank == 0 || r->attr.shape);
    for (size_t d = 0; fits && d < g->rank; d++)
        fits = d == axis || (equal ? g->shape[d] == r->attr.shape[d] : g->shape[d] <= r->attr.shape[d]);
    if (!fits) {
        char s[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_%s: %s does not fit the target shape off axis %zu",
                         r->def->name, ag__shape_str(g, s, sizeof s), axis);
    }
    if (check_indices(t, r, r->attr.shape[axis]) != AG_OK)
        return ag_tape_status(t);
    out->rank = g->rank;
    memcpy(out->shape, r->attr.shape, g->rank * sizeof *out->shape);
    r->attr.shape = NULL; /* the caller's array need not outlive the call */
    return AG_OK;
}

static ag_status index_add_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *g = r->in[0], *idx = r->in[1];
    if (ag__check_axis(t, r) != AG_OK)
        return ag_tape_status(t);
    if (idx->rank > 1 || g->shape[r->attr.axis] != idx->numel) {
        char sg[AG_SHAPE_BUF], si[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_index_add: input %s, indices %s: want indices [k], "
                         "k = the input's size along axis %d", ag__shape_str(g, sg, sizeof sg),
                         ag__shape_str(idx, si, sizeof si), r->attr.axis);
    }
    return target_shape(t, r, out, true);
}

static ag_status index_add_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    rows d = rows_of(r->out, r->attr.axis, r->in[1]);
    memset(r->out->data, 0, r->out->numel * AG_DTYPE_SIZE(r->out->dtype));
    add_rows(&d, r->out->dtype, r->in[1], r->in[0]->data, r->out->data);
    return AG_OK;
}

static ag_status index_add_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    if (!gin[0])
        return AG_OK;
    rows d = rows_of(r->out, r->attr.axis, r->in[1]);
    select_rows(&d, r->out->dtype, r->in[1], gout, gin[0], true);
    return AG_OK;
}

/* index_add of g into zeros of x's shape along axis. */
static ag_tensor *index_add(ag_tape *t, ag_tensor *g, int axis, ag_tensor *idx, const ag_tensor *x)
{
    return ag__apply(t, &ag__op_index_add, g, idx,
                     &(ag_attr){.axis = axis, .shape = x->shape, .rank = x->rank});
}

/* index_select and index_add are each other's gradient. */
static ag_status index_select_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                    ag_tensor *gin[])
{
    if (need[0])
        gin[0] = index_add(t, g, r->attr.axis, r->in[1], r->in[0]);
    return ag_tape_status(t);
}

static ag_status index_add_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                 ag_tensor *gin[])
{
    if (need[0])
        gin[0] = ag_index_select(t, g, r->attr.axis, r->in[1]);
    return ag_tape_status(t);
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

static void walk_init(gather_walk *w, const ag_tensor *x, const ag_tensor *y, int axis)
{
    size_t st = 1;
    w->rank = y->rank;
    w->axis_step = 0;
    for (size_t d = x->rank; d-- > 0;) {
        w->n[d] = y->shape[d];
        w->s[d] = d == (size_t)axis ? 0 : st;
        w->pos[d] = 0;
        if (d == (size_t)axis)
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

/* y[i] (+)= x[at(i)] over y, x of shape xs and y of idx's shape. */
static void gather_into(const ag_tensor *xs, const ag_tensor *idx, int axis, ag_dtype dt,
                        const void *x, void *y, bool add)
{
    gather_walk w;
    walk_init(&w, xs, idx, axis);
    AG_DISPATCH(dt, T, {
        const T *src = x;
        T *dst = y;
        for (size_t i = 0; i < idx->numel; i++, walk_next(&w)) {
            T v = src[w.at + index_at(idx, i) * w.axis_step];
            dst[i] = add ? dst[i] + v : v;
        }
    });
}

/* x[at(i)] += y[i], in order on one thread. */
static void scatter_into(const ag_tensor *xs, const ag_tensor *idx, int axis, ag_dtype dt,
                         const void *y, void *x)
{
    gather_walk w;
    walk_init(&w, xs, idx, axis);
    AG_DISPATCH(dt, T, {
        const T *src = y;
        T *dst = x;
        for (size_t i = 0; i < idx->numel; i++, walk_next(&w))
            dst[w.at + index_at(idx, i) * w.axis_step] += src[i];
    });
}

static ag_status gather_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    gather_into(r->in[0], r->in[1], r->attr.axis, r->out->dtype, r->in[0]->data, r->out->data,
                false);
    return AG_OK;
}

static ag_status gather_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    if (!gin[0])
        return AG_OK; /* the indices take no gradient */
    scatter_into(r->in[0], r->in[1], r->attr.axis, r->out->dtype, gout, gin[0]);
    return AG_OK;
}

/* ------------------------------------------------------------ scatter_add
 * Internal: gather's backward as an op. y = zeros of x's shape
 * (attr.shape), y[..idx[..j..]..] += g[..j..]; g has idx's shape. Its
 * gradient is gather's forward. */

static ag_status scatter_add_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *g = r->in[0], *idx = r->in[1];
    if (ag__check_axis(t, r) != AG_OK)
        return ag_tape_status(t);
    if (idx->rank != g->rank || memcmp(idx->shape, g->shape, g->rank * sizeof *g->shape) != 0) {
        char sg[AG_SHAPE_BUF], si[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_scatter_add: input %s, indices %s: want one shape",
                         ag__shape_str(g, sg, sizeof sg), ag__shape_str(idx, si, sizeof si));
    }
    return target_shape(t, r, out, false);
}

static ag_status scatter_add_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    memset(r->out->data, 0, r->out->numel * AG_DTYPE_SIZE(r->out->dtype));
    scatter_into(r->out, r->in[1], r->attr.axis, r->out->dtype, r->in[0]->data, r->out->data);
    return AG_OK;
}

static ag_status scatter_add_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    if (!gin[0])
        return AG_OK;
    gather_into(r->out, r->in[1], r->attr.axis, r->out->dtype, gout, gin[0], true);
    return AG_OK;
}

/* gather and scatter_add are each other's gradient. */
static ag_status gather_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                              ag_tensor *gin[])
{
    const ag_tensor *x = r->in[0];
    if (need[0])
        gin[0] = ag__apply(t, &ag__op_scatter_add, g, r->in[1],
                           &(ag_attr){.axis = r->attr.axis, .shape = x->shape, .rank = x->rank});
    return ag_tape_status(t);
}

static ag_status scatter_add_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                   ag_tensor *gin[])
{
    if (need[0])
        gin[0] = ag_gather(t, g, r->attr.axis, r->in[1]);
    return ag_tape_status(t);
}

const ag_op_def ag__op_index_select = {.name = "index_select", .arity = 2,
                                       .shape = index_select_shape,
                                       .forward = index_select_forward,
                                       .backward = index_select_backward,
                                       .grad_graph = index_select_graph};
const ag_op_def ag__op_gather = {.name = "gather", .arity = 2, .shape = gather_shape,
                                 .forward = gather_forward, .backward = gather_backward,
                                 .grad_graph = gather_graph};
const ag_op_def ag__op_index_add = {.name = "index_add", .arity = 2, .shape = index_add_shape,
                                    .forward = index_add_forward, .backward = index_add_backward,
                                    .grad_graph = index_add_graph};
const ag_op_def ag__op_scatter_add = {.name = "scatter_add", .arity = 2, .shape = scatter_add_shape,
                                      .forward = scatter_add_forward,
                                      .backward = scatter_add_backward,
                                      .grad_graph = scatter_add_graph};

/* ------------------------------------------------------------ public API */

ag_tensor *ag_index_select(ag_tape *t, ag_tensor *x, int axis, ag_tensor *idx)
{
    return ag__apply(t, &ag__op_index_select, x, idx, &(ag_attr){.axis = axis});
}

ag_tensor *ag_gather(ag_tape *t, ag_tensor *x, int axis, ag_tensor *idx)
{
    return ag__apply(t, &ag__op_gather, x, idx, &(ag_attr){.axis = axis});
}
