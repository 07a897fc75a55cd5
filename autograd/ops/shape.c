/* shape.c: ops that move elements without arithmetic: transpose, reshape,
 * concat, slice, cast, detach. */
#include "../internal.h"

#include <string.h>

/* ------------------------------------------------------------ transpose
 *   y[b][j][i] = x[b][i][j]   x: (B,m,n)  y: (B,n,m) */

static ag_status transpose_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0];
    if (x->rank < 2) {
        char s[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_transpose: %s: needs rank >= 2",
                         ag__shape_str(x, s, sizeof s));
    }
    out->rank = x->rank;
    memcpy(out->shape, x->shape, sizeof out->shape);
    out->shape[x->rank - 2] = x->shape[x->rank - 1];
    out->shape[x->rank - 1] = x->shape[x->rank - 2];
    return AG_OK;
}

static void transpose_dims(const ag_tensor *x, size_t *batch, size_t *m, size_t *n)
{
    *m = x->shape[x->rank - 2];
    *n = x->shape[x->rank - 1];
    size_t mn = *m * *n;
    *batch = mn ? x->numel / mn : 0;
}

static ag_status transpose_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    size_t batch, m, n;
    transpose_dims(r->in[0], &batch, &m, &n);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t b = 0; b < batch; b++, x += m * n, y += m * n)
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < n; j++)
                    y[j * m + i] = x[i * n + j];
    });
    return AG_OK;
}

static ag_status transpose_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t batch, m, n;
    transpose_dims(r->in[0], &batch, &m, &n);
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *gx = gin[0];
        for (size_t b = 0; b < batch; b++, gx += m * n, gy += m * n)
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < n; j++)
                    gx[i * n + j] += gy[j * m + i];
    });
    return AG_OK;
}

/* ------------------------------------------------------------ reshape, detach
 * Both share the input's data; a gradient passes through unchanged. */

static ag_status reshape_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0];
    size_t rank = r->attr.rank, numel;
    char s[AG_SHAPE_BUF];
    if (rank > AG_MAX_RANK || (rank > 0 && !r->attr.shape))
        return ag__error(t, rank > AG_MAX_RANK ? AG_ERR_VALUE : AG_ERR_NULL,
                         "ag_reshape: %s: target rank %zu %s", ag__shape_str(x, s, sizeof s), rank,
                         rank > AG_MAX_RANK ? "exceeds AG_MAX_RANK" : "with a NULL shape");
    if (!ag__numel(r->attr.shape, rank, &numel) || numel != x->numel) {
        ag_tensor target = {.rank = rank}; /* only to print the shape */
        memcpy(target.shape, r->attr.shape, rank * sizeof *target.shape);
        char ts[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_reshape: %s has %zu elements, %s does not",
                         ag__shape_str(x, s, sizeof s), x->numel, ag__shape_str(&target, ts, sizeof ts));
    }
    out->rank = rank;
    if (rank)
        memcpy(out->shape, r->attr.shape, rank * sizeof *out->shape);
    r->attr.shape = NULL; /* the caller's array need not outlive the call */
    return AG_OK;
}

static ag_status reshape_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    r->out->data = r->in[0]->data;
    return AG_OK;
}

static ag_status reshape_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *gx = gin[0];
        for (size_t i = 0; i < r->out->numel; i++)
            gx[i] += gy[i];
    });
    return AG_OK;
}

/* ------------------------------------------------------------ concat, slice
 * Seen around the axis as (outer, n, inner), a row of y = rows of inputs. */

static ag_status concat_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    if (ag__check_axis(t, r) != AG_OK)
        return ag_tape_status(t);
    size_t axis = (size_t)r->attr.axis;
    bool fits = a->rank == b->rank;
    for (size_t d = 0; fits && d < a->rank; d++)
        fits = d == axis || a->shape[d] == b->shape[d];
    if (!fits || a->shape[axis] > SIZE_MAX - b->shape[axis]) {
        char sa[AG_SHAPE_BUF], sb[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_concat: %s and %s differ off axis %zu",
                         ag__shape_str(a, sa, sizeof sa), ag__shape_str(b, sb, sizeof sb), axis);
    }
    out->rank = a->rank;
    memcpy(out->shape, a->shape, sizeof out->shape);
    out->shape[axis] += b->shape[axis];
    return AG_OK;
}

static ag_status concat_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    size_t outer, na, nb, inner, es = ag_dtype_size(r->out->dtype);
    ag__axis_split(r->in[0], r->attr.axis, &outer, &na, &inner);
    ag__axis_split(r->in[1], r->attr.axis, &outer, &nb, &inner);
    size_t ra = na * inner * es, rb = nb * inner * es;
    const char *a = r->in[0]->data, *b = r->in[1]->data;
    char *y = r->out->data;
    for (size_t o = 0; o < outer; o++, y += ra + rb) {
        memcpy(y, a + o * ra, ra);
        memcpy(y + ra, b + o * rb, rb);
    }
    return AG_OK;
}

static ag_status concat_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t outer, na, nb, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &na, &inner);
    ag__axis_split(r->in[1], r->attr.axis, &outer, &nb, &inner);
    size_t ra = na * inner, rb = nb * inner;
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *ga = gin[0], *gb = gin[1];
        for (size_t o = 0; o < outer; o++, gy += ra + rb) {
            for (size_t i = 0; ga && i < ra; i++)
                ga[o * ra + i] += gy[i];
            for (size_t i = 0; gb && i < rb; i++)
                gb[o * rb + i] += gy[ra + i];
        }
    });
    return AG_OK;
}

static ag_status slice_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0];
    if (ag__check_axis(t, r) != AG_OK)
        return ag_tape_status(t);
    size_t axis = (size_t)r->attr.axis;
    if (r->attr.start > r->attr.end || r->attr.end > x->shape[axis]) {
        char s[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_VALUE, "ag_slice: %s: range %zu..%zu does not fit axis %zu of size %zu",
                         ag__shape_str(x, s, sizeof s), r->attr.start, r->attr.end, axis, x->shape[axis]);
    }
    out->rank = x->rank;
    memcpy(out->shape, x->shape, sizeof out->shape);
    out->shape[axis] = r->attr.end - r->attr.start;
    return AG_OK;
}

static ag_status slice_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    size_t outer, n, inner, es = ag_dtype_size(r->out->dtype);
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    size_t row = n * inner * es, off = r->attr.start * inner * es;
    size_t len = (r->attr.end - r->attr.start) * inner * es;
    const char *x = r->in[0]->data;
    char *y = r->out->data;
    for (size_t o = 0; o < outer && len; o++)
        memcpy(y + o * len, x + o * row + off, len);
    return AG_OK;
}

static ag_status slice_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    size_t row = n * inner, off = r->attr.start * inner, len = (r->attr.end - r->attr.start) * inner;
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *gx = gin[0];
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < len; i++)
                gx[o * row + off + i] += gy[o * len + i];
    });
    return AG_OK;
}

/* ------------------------------------------------------------ cast */

static ag_status cast_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    if (ag_dtype_size(r->attr.dtype) == 0)
        return ag__error(t, AG_ERR_DTYPE, "ag_cast: %d is not a dtype", (int)r->attr.dtype);
    ag__shape_same(t, r, out);
    out->dtype = r->attr.dtype;
    return AG_OK;
}

static void convert(ag_dtype to, void *dst, ag_dtype from, const void *src, size_t n, bool add)
{
    for (size_t i = 0; i < n; i++) {
        double v = from == AG_F32 ? (double)((const float *)src)[i] : ((const double *)src)[i];
        if (to == AG_F32)
            ((float *)dst)[i] = (float)(add ? ((float *)dst)[i] + v : v);
        else
            ((double *)dst)[i] = add ? ((double *)dst)[i] + v : v;
    }
}

static ag_status cast_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    convert(r->out->dtype, r->out->data, r->in[0]->dtype, r->in[0]->data, r->out->numel, false);
    return AG_OK;
}

static ag_status cast_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    convert(r->in[0]->dtype, gin[0], r->out->dtype, gout, r->out->numel, true);
    return AG_OK;
}

const ag_op_def ag__op_transpose = {.name = "transpose", .arity = 1, .shape = transpose_shape,
                                    .forward = transpose_forward, .backward = transpose_backward};
const ag_op_def ag__op_reshape = {.name = "reshape", .arity = 1, .view = true, .shape = reshape_shape,
                                  .forward = reshape_forward, .backward = reshape_backward};
const ag_op_def ag__op_concat = {.name = "concat", .arity = 2, .same_dtype = true, .shape = concat_shape,
                                 .forward = concat_forward, .backward = concat_backward};
const ag_op_def ag__op_slice = {.name = "slice", .arity = 1, .shape = slice_shape,
                                .forward = slice_forward, .backward = slice_backward};
const ag_op_def ag__op_cast = {.name = "cast", .arity = 1, .shape = cast_shape,
                               .forward = cast_forward, .backward = cast_backward};
/* detach shares its input's data like reshape, and no gradient passes */
const ag_op_def ag__op_detach = {.name = "detach", .arity = 1, .view = true, .no_grad = true,
                                 .shape = ag__shape_same, .forward = reshape_forward,
                                 .backward = reshape_backward};

/* ------------------------------------------------------------ public API */

ag_tensor *ag_transpose(ag_tape *t, ag_tensor *x)
{
    return ag__apply(t, &ag__op_transpose, x, NULL, NULL);
}

ag_tensor *ag_reshape(ag_tape *t, ag_tensor *x, const size_t *shape, size_t rank)
{
    return ag__apply(t, &ag__op_reshape, x, NULL, &(ag_attr){.shape = shape, .rank = rank});
}

ag_tensor *ag_concat(ag_tape *t, ag_tensor *a, ag_tensor *b, int axis)
{
    return ag__apply(t, &ag__op_concat, a, b, &(ag_attr){.axis = axis});
}

ag_tensor *ag_slice(ag_tape *t, ag_tensor *x, int axis, size_t start, size_t end)
{
    return ag__apply(t, &ag__op_slice, x, NULL, &(ag_attr){.axis = axis, .start = start, .end = end});
}

ag_tensor *ag_cast(ag_tape *t, ag_tensor *x, ag_dtype dt)
{
    return ag__apply(t, &ag__op_cast, x, NULL, &(ag_attr){.dtype = dt});
}

ag_tensor *ag_detach(ag_tape *t, ag_tensor *x)
{
    return ag__apply(t, &ag__op_detach, x, NULL, NULL);
}
