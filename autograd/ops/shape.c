/* shape.c: ops that move elements without arithmetic: transpose, reshape,
 * concat, slice, cast, detach, permute, expand. */
#include "../internal.h"

#include <stdio.h>
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

static ag_status transpose_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                 ag_tensor *gin[])
{
    (void)r, (void)need;
    gin[0] = ag_transpose(t, g);
    return ag_tape_status(t);
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

static ag_status reshape_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                               ag_tensor *gin[])
{
    (void)need;
    gin[0] = ag_reshape(t, g, r->in[0]->shape, r->in[0]->rank);
    return ag_tape_status(t);
}

/* detach passes no gradient: gin stays NULL */
static ag_status detach_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                              ag_tensor *gin[])
{
    (void)r, (void)g, (void)need, (void)gin;
    return ag_tape_status(t);
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

/* each input's gradient is its part of g along the axis */
static ag_status concat_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                              ag_tensor *gin[])
{
    int axis = r->attr.axis;
    size_t na = r->in[0]->shape[axis], nb = r->in[1]->shape[axis];
    if (need[0])
        gin[0] = ag_slice(t, g, axis, 0, na);
    if (need[1])
        gin[1] = ag_slice(t, g, axis, na, na + nb);
    return ag_tape_status(t);
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

/* Zeros of x's shape with n along the axis: slice's padding (a constant). */
static ag_tensor *zero_pad(ag_tape *t, const ag_tensor *x, int axis, size_t n)
{
    size_t shape[AG_MAX_RANK];
    memcpy(shape, x->shape, x->rank * sizeof *shape);
    shape[axis] = n;
    ag_tensor *z = ag__tape_tensor(t, x->dtype, shape, x->rank);
    if (z)
        memset(z->data, 0, z->numel * ag_dtype_size(z->dtype));
    return z;
}

/* g put back in place between zeros: [0.. start) g [end.. n) */
static ag_status slice_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                             ag_tensor *gin[])
{
    (void)need;
    const ag_tensor *x = r->in[0];
    int axis = r->attr.axis;
    size_t start = r->attr.start, end = r->attr.end, n = x->shape[axis];
    ag_tensor *p = g;
    if (start > 0)
        p = ag_concat(t, zero_pad(t, g, axis, start), p, axis);
    if (end < n)
        p = ag_concat(t, p, zero_pad(t, g, axis, n - end), axis);
    gin[0] = p;
    return ag_tape_status(t);
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

static ag_status cast_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                            ag_tensor *gin[])
{
    (void)need;
    gin[0] = ag_cast(t, g, r->in[0]->dtype);
    return ag_tape_status(t);
}

/* ------------------------------------------------------------ permute, expand
 * Both read x through a step per axis of the result: y[i] = x[Σ_d i_d s_d],
 * i_d the result's index along axis d. permute's steps are x's strides in
 * the new order; expand's are 0 along the axes it broadcasts. The
 * backward adds each gy[i] into gx at the same place, so expand's sums
 * back over the broadcast axes. */

typedef struct {
    size_t rank;
    size_t n[AG_MAX_RANK], s[AG_MAX_RANK];
} strided;

/* y's axes with their steps in x, size-1 axes dropped and an axis merged
 * into the one outside it where they continue each other. */
static void strided_init(strided *w, const ag_tensor *y, const size_t *steps)
{
    size_t r = 0;
    for (size_t d = 0; d < y->rank; d++) {
        size_t n = y->shape[d];
        if (n == 1)
            continue;
        if (r > 0 && w->s[r - 1] == steps[d] * n) {
            w->n[r - 1] *= n;
            w->s[r - 1] = steps[d];
        } else {
            w->n[r] = n;
            w->s[r] = steps[d];
            r++;
        }
    }
    if (r == 0) { /* one element */
        w->n[0] = 1;
        w->s[0] = 0;
        r = 1;
    }
    w->rank = r;
}

/* Runs body over the results [lo, hi) in runs along the innermost axis:
 * iy is a run's first result, ix its element of x, cnt its length, sx the
 * step in x along it. */
#define STRIDED_FOR(w, lo, hi, ...)                                           \
    do {                                                                      \
        size_t idx_[AG_MAX_RANK], last_ = (w)->rank - 1, rest_ = (lo), ix = 0; \
        for (size_t d_ = (w)->rank; d_-- > 0;) {                              \
            idx_[d_] = rest_ % (w)->n[d_];                                    \
            rest_ /= (w)->n[d_];                                              \
            ix += idx_[d_] * (w)->s[d_];                                      \
        }                                                                     \
        const size_t sx = (w)->s[last_];                                      \
        for (size_t iy = (lo); iy < (hi);) {                                  \
            size_t cnt = (w)->n[last_] - idx_[last_];                         \
            if (cnt > (hi) - iy)                                              \
                cnt = (hi) - iy;                                              \
            __VA_ARGS__                                                       \
            iy += cnt;                                                        \
            ix += cnt * sx;                                                   \
            idx_[last_] += cnt;                                               \
            for (size_t d_ = last_; d_ > 0 && idx_[d_] == (w)->n[d_]; d_--) { \
                ix -= (w)->n[d_] * (w)->s[d_];                                \
                idx_[d_] = 0;                                                 \
                ix += (w)->s[d_ - 1];                                         \
                idx_[d_ - 1]++;                                               \
            }                                                                 \
        }                                                                     \
    } while (0)

typedef struct {
    strided w;
    ag_dtype dt;
    const void *src; /* forward: x; backward: gy */
    void *dst;       /* forward: y; backward: gx */
} strided_job;

static void strided_gather(void *ctx, size_t lo, size_t hi) /* y[i] = x[at(i)] */
{
    const strided_job *j = ctx;
    AG_DISPATCH(j->dt, T, {
        const T *x = j->src;
        T *y = j->dst;
        STRIDED_FOR(&j->w, lo, hi, {
            for (size_t k = 0; k < cnt; k++)
                y[iy + k] = x[ix + k * sx];
        });
    });
}

static void strided_scatter_add(void *ctx, size_t lo, size_t hi) /* gx[at(i)] += gy[i] */
{
    const strided_job *j = ctx;
    AG_DISPATCH(j->dt, T, {
        const T *gy = j->src;
        T *gx = j->dst;
        STRIDED_FOR(&j->w, lo, hi, {
            for (size_t k = 0; k < cnt; k++)
                gx[ix + k * sx] += gy[iy + k];
        });
    });
}

/* Row-major strides of x, in elements. */
static void strides_of(const ag_tensor *x, size_t *st)
{
    size_t s = 1;
    for (size_t d = x->rank; d-- > 0;) {
        st[d] = s;
        s *= x->shape[d];
    }
}

/* Normalises the permutation of r's attributes into perm (x's axis for
 * each axis of the result); false when it is not one. */
static bool perm_of(const ag_record *r, size_t *perm)
{
    size_t rank = r->in[0]->rank;
    if (r->attr.rank != rank || (rank && !r->attr.axes))
        return false;
    bool seen[AG_MAX_RANK] = {false};
    for (size_t d = 0; d < rank; d++) {
        long a = r->attr.axes[d];
        if (a < 0)
            a += (long)rank;
        if (a < 0 || a >= (long)rank || seen[a])
            return false;
        seen[a] = true;
        perm[d] = (size_t)a;
    }
    return true;
}

static ag_status permute_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0];
    size_t perm[AG_MAX_RANK];
    char s[AG_SHAPE_BUF];
    if (r->attr.rank && !r->attr.axes)
        return ag__error(t, AG_ERR_NULL, "ag_permute: %s: axes is NULL (%zu of them)",
                         ag__shape_str(x, s, sizeof s), r->attr.rank);
    if (!perm_of(r, perm)) {
        char p[AG_SHAPE_BUF] = "(";
        size_t used = 1, n = r->attr.rank <= AG_MAX_RANK ? r->attr.rank : AG_MAX_RANK;
        for (size_t d = 0; d < n && used < sizeof p; d++) {
            int k = snprintf(p + used, sizeof p - used, d ? ",%d" : "%d", r->attr.axes[d]);
            used += k > 0 ? (size_t)k : 0;
        }
        if (used < sizeof p)
            snprintf(p + used, sizeof p - used, "%s)", n < r->attr.rank ? ",..." : "");
        return ag__error(t, AG_ERR_VALUE, "ag_permute: %s: %s is not a permutation of its %zu axes",
                         ag__shape_str(x, s, sizeof s), p, x->rank);
    }
    out->rank = x->rank;
    for (size_t d = 0; d < x->rank; d++)
        out->shape[d] = x->shape[perm[d]];
    return AG_OK;
}

/* The job reading x (or writing gx) through the permutation perm. */
static void permute_job(strided_job *j, const ag_record *r, const size_t *perm)
{
    size_t st[AG_MAX_RANK], steps[AG_MAX_RANK];
    strides_of(r->in[0], st);
    for (size_t d = 0; d < r->out->rank; d++)
        steps[d] = st[perm[d]];
    strided_init(&j->w, r->out, steps);
    j->dt = r->out->dtype;
}

static ag_status permute_forward(ag_tape *t, ag_record *r)
{
    size_t *perm = ag__arena_alloc(t, r->out->rank * sizeof *perm);
    if (!perm)
        return ag_tape_status(t);
    perm_of(r, perm); /* checked by the shape rule */
    r->saved = perm;  /* the caller's axes need not outlive the call */
    r->attr.axes = NULL;
    strided_job j;
    permute_job(&j, r, perm);
    j.src = r->in[0]->data;
    j.dst = r->out->data;
    ag__parallel_range(t, r->out->numel, r->out->numel, strided_gather, &j);
    return AG_OK;
}

static ag_status permute_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    strided_job j;
    permute_job(&j, r, r->saved);
    j.src = gout;
    j.dst = gin[0];
    /* a permutation: each gx element is written by one chunk */
    ag__parallel_range(t, r->out->numel, r->out->numel, strided_scatter_add, &j);
    return AG_OK;
}

/* g permuted back: the result's axis d was x's axis perm[d] */
static ag_status permute_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                               ag_tensor *gin[])
{
    (void)need;
    const size_t *perm = r->saved;
    int inv[AG_MAX_RANK];
    for (size_t d = 0; d < r->out->rank; d++)
        inv[perm[d]] = (int)d;
    gin[0] = ag_permute(t, g, inv, r->out->rank);
    return ag_tape_status(t);
}

static ag_status expand_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0];
    size_t rank = r->attr.rank;
    char s[AG_SHAPE_BUF];
    if (rank > AG_MAX_RANK || (rank > 0 && !r->attr.shape))
        return ag__error(t, rank > AG_MAX_RANK ? AG_ERR_VALUE : AG_ERR_NULL,
                         "ag_expand: %s: target rank %zu %s", ag__shape_str(x, s, sizeof s), rank,
                         rank > AG_MAX_RANK ? "exceeds AG_MAX_RANK" : "with a NULL shape");
    ag_tensor target = {.rank = rank};
    if (rank)
        memcpy(target.shape, r->attr.shape, rank * sizeof *target.shape);
    bool fits = rank >= x->rank;
    size_t bad = 0;
    for (size_t k = 0; fits && k < x->rank; k++) { /* k-th axis from the end */
        size_t xd = x->shape[x->rank - 1 - k], td = target.shape[rank - 1 - k];
        fits = xd == td || xd == 1;
        bad = rank - 1 - k;
    }
    if (!fits) {
        char ts[AG_SHAPE_BUF], why[64] = "";
        if (rank >= x->rank)
            snprintf(why, sizeof why, " (axis %zu: %zu vs %zu)", bad,
                     x->shape[bad + x->rank - rank], target.shape[bad]);
        else
            snprintf(why, sizeof why, " (rank %zu is below %zu)", rank, x->rank);
        return ag__error(t, AG_ERR_SHAPE, "ag_expand: %s does not broadcast to %s%s",
                         ag__shape_str(x, s, sizeof s), ag__shape_str(&target, ts, sizeof ts), why);
    }
    out->rank = rank;
    memcpy(out->shape, target.shape, sizeof out->shape);
    r->attr.shape = NULL; /* the caller's array need not outlive the call */
    return AG_OK;
}

/* The job reading x (or adding into gx) broadcast to the result's shape. */
static void expand_job(strided_job *j, const ag_record *r)
{
    const ag_tensor *x = r->in[0], *y = r->out;
    size_t st[AG_MAX_RANK], steps[AG_MAX_RANK], lead = y->rank - x->rank;
    strides_of(x, st);
    for (size_t d = 0; d < y->rank; d++)
        steps[d] = d < lead || x->shape[d - lead] == 1 ? 0 : st[d - lead];
    strided_init(&j->w, y, steps);
    j->dt = y->dtype;
}

static ag_status expand_forward(ag_tape *t, ag_record *r)
{
    strided_job j;
    expand_job(&j, r);
    j.src = r->in[0]->data;
    j.dst = r->out->data;
    ag__parallel_range(t, r->out->numel, r->out->numel, strided_gather, &j);
    return AG_OK;
}

static ag_status expand_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    strided_job j;
    expand_job(&j, r);
    j.src = gout;
    j.dst = gin[0];
    /* several results add into one gx element: one thread, one order */
    strided_scatter_add(&j, 0, r->out->numel);
    return AG_OK;
}

/* g summed back over the broadcast axes */
static ag_status expand_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                              ag_tensor *gin[])
{
    (void)need;
    gin[0] = ag__sum_to(t, g, r->in[0]);
    return ag_tape_status(t);
}

const ag_op_def ag__op_transpose = {.name = "transpose", .arity = 1, .shape = transpose_shape,
                                    .forward = transpose_forward, .backward = transpose_backward,
                                    .grad_graph = transpose_graph};
const ag_op_def ag__op_reshape = {.name = "reshape", .arity = 1, .view = true, .shape = reshape_shape,
                                  .forward = reshape_forward, .backward = reshape_backward,
                                  .grad_graph = reshape_graph};
const ag_op_def ag__op_concat = {.name = "concat", .arity = 2, .same_dtype = true, .shape = concat_shape,
                                 .forward = concat_forward, .backward = concat_backward,
                                 .grad_graph = concat_graph};
const ag_op_def ag__op_slice = {.name = "slice", .arity = 1, .shape = slice_shape,
                                .forward = slice_forward, .backward = slice_backward,
                                .grad_graph = slice_graph};
const ag_op_def ag__op_cast = {.name = "cast", .arity = 1, .shape = cast_shape,
                               .forward = cast_forward, .backward = cast_backward,
                               .grad_graph = cast_graph};
const ag_op_def ag__op_permute = {.name = "permute", .arity = 1, .shape = permute_shape,
                                  .forward = permute_forward, .backward = permute_backward,
                                  .grad_graph = permute_graph};
const ag_op_def ag__op_expand = {.name = "expand", .arity = 1, .shape = expand_shape,
                                 .forward = expand_forward, .backward = expand_backward,
                                 .grad_graph = expand_graph};
/* detach shares its input's data like reshape, and no gradient passes */
const ag_op_def ag__op_detach = {.name = "detach", .arity = 1, .view = true, .no_grad = true,
                                 .shape = ag__shape_same, .forward = reshape_forward,
                                 .backward = reshape_backward, .grad_graph = detach_graph};

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

ag_tensor *ag_permute(ag_tape *t, ag_tensor *x, const int *axes, size_t n)
{
    return ag__apply(t, &ag__op_permute, x, NULL, &(ag_attr){.axes = axes, .rank = n});
}

ag_tensor *ag_expand(ag_tape *t, ag_tensor *x, const size_t *shape, size_t rank)
{
    return ag__apply(t, &ag__op_expand, x, NULL, &(ag_attr){.shape = shape, .rank = rank});
}
