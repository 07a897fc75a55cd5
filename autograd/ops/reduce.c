/* reduce.c: sums, means and maxima over all elements or one axis, and
 * softmax / log_softmax along an axis. Around the axis a tensor is seen as
 * (outer, n, inner): element (o, k, i) sits at (o·n + k)·inner + i. */
#include "../internal.h"

#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------ sum, mean */

static void sum_all(ag_record *r, bool mean)
{
    size_t n = r->in[0]->numel;
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        double s = 0; /* f32 sums accumulate in double */
        for (size_t i = 0; i < n; i++)
            s += x[i];
        if (mean)
            s = n ? s / (double)n : NAN;
        *(T *)r->out->data = (T)s;
    });
}

static void sum_all_backward(const ag_record *r, const void *gout, void *gin, bool mean)
{
    size_t n = r->in[0]->numel;
    AG_DISPATCH(r->out->dtype, T, {
        T g = *(const T *)gout, *gx = gin;
        if (mean)
            g /= (T)n;
        for (size_t i = 0; i < n; i++)
            gx[i] += g;
    });
}

static ag_status sum_forward(ag_tape *t, ag_record *r) { (void)t; sum_all(r, false); return AG_OK; }
static ag_status mean_forward(ag_tape *t, ag_record *r) { (void)t; sum_all(r, true); return AG_OK; }

static ag_status sum_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    sum_all_backward(r, gout, gin[0], false);
    return AG_OK;
}

static ag_status mean_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    sum_all_backward(r, gout, gin[0], true);
    return AG_OK;
}

/* ------------------------------------------------------------ along an axis */

static ag_status axis_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    ag_status s = ag__check_axis(t, r);
    if (s != AG_OK)
        return s;
    const ag_tensor *x = r->in[0];
    size_t axis = (size_t)r->attr.axis;
    out->rank = 0;
    for (size_t d = 0; d < x->rank; d++) {
        if (d != axis)
            out->shape[out->rank++] = x->shape[d];
        else if (r->attr.keepdim)
            out->shape[out->rank++] = 1;
    }
    return AG_OK;
}

/* A maximum over an empty axis has no value. */
static ag_status nonempty_axis_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    ag_status s = axis_shape(t, r, out);
    size_t axis = (size_t)r->attr.axis;
    if (s == AG_OK && r->in[0]->shape[axis] == 0) {
        char buf[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "ag_%s: %s: axis %zu is empty", r->def->name,
                         ag__shape_str(r->in[0], buf, sizeof buf), axis);
    }
    return s;
}

static ag_status softmax_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    ag_status s = ag__check_axis(t, r);
    return s != AG_OK ? s : ag__shape_same(t, r, out);
}

static void sum_axis_run(ag_record *r, bool mean)
{
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data, scale = mean ? (T)1 / (T)n : (T)1;
        memset(y, 0, outer * inner * sizeof(T));
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++)
                    y[o * inner + i] += x[(o * n + k) * inner + i];
        if (mean)
            for (size_t i = 0; i < outer * inner; i++)
                y[i] *= scale;
    });
}

static void sum_axis_grad(const ag_record *r, const void *gout, void *gin, bool mean)
{
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *gx = gin, scale = mean ? (T)1 / (T)n : (T)1;
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++)
                    gx[(o * n + k) * inner + i] += scale * gy[o * inner + i];
    });
}

static ag_status sum_axis_forward(ag_tape *t, ag_record *r) { (void)t; sum_axis_run(r, false); return AG_OK; }
static ag_status mean_axis_forward(ag_tape *t, ag_record *r) { (void)t; sum_axis_run(r, true); return AG_OK; }

static ag_status sum_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    sum_axis_grad(r, gout, gin[0], false);
    return AG_OK;
}

static ag_status mean_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    sum_axis_grad(r, gout, gin[0], true);
    return AG_OK;
}

/* The first maximal (BETTER is >) or minimal (<) element of each (o, ·, i)
 * line wins; NaN beats all. */
#define ARGBEST(x, o, n, inner, i, best, BETTER)                               \
    do {                                                                       \
        best = 0;                                                              \
        for (size_t k_ = 1; k_ < (n); k_++) {                                  \
            T v_ = (x)[((o) * (n) + k_) * (inner) + (i)];                      \
            T m_ = (x)[((o) * (n) + best) * (inner) + (i)];                    \
            if (m_ != m_)                                                      \
                break;                                                         \
            if (v_ BETTER m_ || v_ != v_)                                      \
                best = k_;                                                     \
        }                                                                      \
    } while (0)
#define ARGMAX(x, o, n, inner, i, best) ARGBEST(x, o, n, inner, i, best, >)
#define ARGMIN(x, o, n, inner, i, best) ARGBEST(x, o, n, inner, i, best, <)

/* max_axis, min_axis (the extreme's value) and argmax, argmin (its index,
 * as a value of x's dtype). */
static void extreme_run(ag_record *r, bool min, bool index)
{
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t best;
                if (min)
                    ARGMIN(x, o, n, inner, i, best);
                else
                    ARGMAX(x, o, n, inner, i, best);
                y[o * inner + i] = index ? (T)best : x[(o * n + best) * inner + i];
            }
    });
}

/* The gradient goes to the element extreme_run picked. */
static void extreme_grad(const ag_record *r, const void *gout, void *gin, bool min)
{
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data, *gy = gout;
        T *gx = gin;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t best;
                if (min)
                    ARGMIN(x, o, n, inner, i, best);
                else
                    ARGMAX(x, o, n, inner, i, best);
                gx[(o * n + best) * inner + i] += gy[o * inner + i];
            }
    });
}

static ag_status max_axis_forward(ag_tape *t, ag_record *r) { (void)t; extreme_run(r, false, false); return AG_OK; }
static ag_status min_axis_forward(ag_tape *t, ag_record *r) { (void)t; extreme_run(r, true, false); return AG_OK; }
static ag_status argmax_forward(ag_tape *t, ag_record *r) { (void)t; extreme_run(r, false, true); return AG_OK; }
static ag_status argmin_forward(ag_tape *t, ag_record *r) { (void)t; extreme_run(r, true, true); return AG_OK; }

static ag_status max_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    extreme_grad(r, gout, gin[0], false);
    return AG_OK;
}

static ag_status min_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    extreme_grad(r, gout, gin[0], true);
    return AG_OK;
}

/* An index is piecewise constant in x: no gradient. The ops are marked
 * no_grad, so they are never recorded and this never runs; it exists so
 * that the op is whole, and it adds nothing. */
static ag_status no_gradient(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t, (void)r, (void)gout, (void)gin;
    return AG_OK;
}

/* ------------------------------------------------------------ softmax
 *   softmax:     y_k = e^(x_k - m) / Σ_j e^(x_j - m)      gx_k += y_k (g_k - Σ_j g_j y_j)
 *   log_softmax: y_k = x_k - m - ln Σ_j e^(x_j - m)       gx_k += g_k - e^(y_k) Σ_j g_j
 * with m the line's maximum, so no exponent overflows for any input. */

static void softmax_run(ag_record *r, bool logs)
{
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    if (n == 0)
        return;
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                const T *xl = x + o * n * inner + i;
                T *yl = y + o * n * inner + i, m = xl[0], s = 0;
                for (size_t k = 1; k < n; k++)
                    m = xl[k * inner] > m ? xl[k * inner] : m;
                for (size_t k = 0; k < n; k++)
                    s += exp(xl[k * inner] - m);
                T lse = log(s);
                for (size_t k = 0; k < n; k++)
                    yl[k * inner] = logs ? xl[k * inner] - m - lse : exp(xl[k * inner] - m) / s;
            }
    });
}

static void softmax_grad(const ag_record *r, const void *gout, void *gin, bool logs)
{
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *y = r->out->data, *g = gout;
        T *gx = gin;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t base = o * n * inner + i;
                T dot = 0;
                for (size_t k = 0; k < n; k++)
                    dot += logs ? g[base + k * inner] : g[base + k * inner] * y[base + k * inner];
                for (size_t k = 0; k < n; k++) {
                    size_t e = base + k * inner;
                    gx[e] += logs ? g[e] - exp(y[e]) * dot : y[e] * (g[e] - dot);
                }
            }
    });
}

static ag_status softmax_forward(ag_tape *t, ag_record *r) { (void)t; softmax_run(r, false); return AG_OK; }
static ag_status log_softmax_forward(ag_tape *t, ag_record *r) { (void)t; softmax_run(r, true); return AG_OK; }

static ag_status softmax_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    softmax_grad(r, gout, gin[0], false);
    return AG_OK;
}

static ag_status log_softmax_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    softmax_grad(r, gout, gin[0], true);
    return AG_OK;
}

/* ------------------------------------------------------------ the second op set:
 * products, variances, log-sum-exp along an axis (in the (o, k, i) layout
 * above, the inner loops running over i, contiguous), the Euclidean norm,
 * and sums and means over several axes at once. */

/*   prod: y = Π_k x_k,  gx_k += g Π_{j≠k} x_j
 * The product of the others is a prefix times a suffix product, never
 * y / x_k, so a zero in the line gives the right gradient. */
static ag_status prod_axis_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t j = 0; j < outer * inner; j++)
            y[j] = 1;
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++)
                    y[o * inner + i] *= x[(o * n + k) * inner + i];
    });
    return AG_OK;
}

static ag_status prod_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    size_t outer, n, inner, es = AG_DTYPE_SIZE(r->out->dtype);
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    if (n == 0)
        return AG_OK;
    /* suf[k, i] = Π_{j>k} x[o, j, i]; pre[i] = g Π_{j<k} x[o, j, i] */
    void *scratch = ag__arena_alloc(t, (n + 1) * inner * es);
    if (!scratch)
        return ag_tape_status(t);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data, *gy = gout;
        T *gx = gin[0], *suf = scratch, *pre = suf + n * inner;
        for (size_t o = 0; o < outer; o++) {
            const T *xo = x + o * n * inner;
            T *go = gx + o * n * inner;
            for (size_t i = 0; i < inner; i++)
                suf[(n - 1) * inner + i] = 1;
            for (size_t k = n - 1; k > 0; k--)
                for (size_t i = 0; i < inner; i++)
                    suf[(k - 1) * inner + i] = suf[k * inner + i] * xo[k * inner + i];
            for (size_t i = 0; i < inner; i++)
                pre[i] = gy[o * inner + i];
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++) {
                    go[k * inner + i] += pre[i] * suf[k * inner + i];
                    pre[i] *= xo[k * inner + i];
                }
        }
    });
    return AG_OK;
}

/*   var: y = 1/n Σ_k (x_k - μ)²,  μ = 1/n Σ_k x_k,  gx_k += g 2 (x_k - μ) / n
 * Two passes (the mean first), so no cancellation; μ is saved. An empty
 * axis gives NaN, as PyTorch. */
static ag_status var_axis_forward(ag_tape *t, ag_record *r)
{
    size_t outer, n, inner, m = r->out->numel;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    void *mean = ag__arena_alloc(t, m * AG_DTYPE_SIZE(r->out->dtype));
    if (!mean)
        return ag_tape_status(t);
    r->saved = mean;
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data, *mu = mean, inv = (T)1 / (T)n;
        for (size_t j = 0; j < m; j++)
            mu[j] = y[j] = 0;
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++)
                    mu[o * inner + i] += x[(o * n + k) * inner + i];
        for (size_t j = 0; j < m; j++)
            mu[j] *= inv;
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++) {
                    T d = x[(o * n + k) * inner + i] - mu[o * inner + i];
                    y[o * inner + i] += d * d;
                }
        for (size_t j = 0; j < m; j++)
            y[j] *= inv;
    });
    return AG_OK;
}

static ag_status var_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data, *gy = gout, *mu = r->saved;
        T *gx = gin[0], two_n = (T)2 / (T)n;
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++) {
                    size_t e = (o * n + k) * inner + i, j = o * inner + i;
                    gx[e] += gy[j] * two_n * (x[e] - mu[j]);
                }
    });
    return AG_OK;
}

/*   logsumexp: y = m + ln Σ_k e^(x_k - m), m the line's maximum (0 when it
 *   is ±inf, so a line of -inf gives -inf and one holding +inf gives +inf);
 *   gx_k += g e^(x_k - y), the softmax. An empty axis gives -inf. */
static ag_status logsumexp_forward(ag_tape *t, ag_record *r)
{
    size_t outer, n, inner, m = r->out->numel;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    void *scratch = ag__arena_alloc(t, m * AG_DTYPE_SIZE(r->out->dtype));
    if (!scratch)
        return ag_tape_status(t);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data, *s = scratch;
        for (size_t j = 0; j < m; j++) {
            y[j] = -INFINITY;
            s[j] = 0;
        }
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++) {
                    T v = x[(o * n + k) * inner + i], *mx = &y[o * inner + i];
                    *mx = v > *mx ? v : *mx;
                }
        for (size_t j = 0; j < m; j++)
            y[j] = isfinite(y[j]) ? y[j] : 0; /* the shift */
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++)
                    s[o * inner + i] += exp(x[(o * n + k) * inner + i] - y[o * inner + i]);
        for (size_t j = 0; j < m; j++)
            y[j] += log(s[j]);
    });
    return AG_OK;
}

static ag_status logsumexp_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data, *y = r->out->data, *gy = gout;
        T *gx = gin[0];
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++) {
                    size_t e = (o * n + k) * inner + i, j = o * inner + i;
                    gx[e] += gy[j] * exp(x[e] - y[j]);
                }
    });
    return AG_OK;
}

/*   norm: y = sqrt(Σ x²), summed in double; when the plain sum of squares
 *   overflows or underflows (|x| beyond about 2^±450) it is redone scaled
 *   by the largest |x|.  gx += g x / y, 0 where y = 0. */
static ag_status norm_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    size_t n = r->in[0]->numel;
    double s = 0, y;
    AG_DISPATCH(r->in[0]->dtype, T, {
        const T *x = r->in[0]->data;
        for (size_t i = 0; i < n; i++)
            s += (double)x[i] * (double)x[i];
        if (s >= 0x1p-900 && s <= 0x1p+900) {
            y = sqrt(s);
        } else {
            double big = 0;
            for (size_t i = 0; i < n; i++)
                big = fabs((double)x[i]) > big ? fabs((double)x[i]) : big;
            if (big == 0 || isinf(big)) {
                y = s != s ? s : big; /* 0, inf, or NaN when one was there */
            } else {
                double q = 0;
                for (size_t i = 0; i < n; i++) {
                    double v = (double)x[i] / big;
                    q += v * v;
                }
                y = big * sqrt(q);
            }
        }
        *(T *)r->out->data = (T)y;
    });
    return AG_OK;
}

static ag_status norm_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t n = r->in[0]->numel;
    AG_DISPATCH(r->in[0]->dtype, T, {
        const T *x = r->in[0]->data, y = *(const T *)r->out->data;
        T *gx = gin[0];
        if (y == 0)
            return AG_OK;
        T c = *(const T *)gout / y;
        for (size_t i = 0; i < n; i++)
            gx[i] += c * x[i];
    });
    return AG_OK;
}

/* ------------------------------------------------------------ several axes
 * The axes to reduce (r->attr.axes, r->attr.rank of them; negative ones
 * count from the end; none at all reduces nothing, as numpy's axis=())
 * become a bit mask over x's axes. To run, x's axes are cut into groups of
 * neighbours that are all reduced or all kept (axes of size 1 dropped);
 * each group has a stride into the result, 0 for a reduced one. */

typedef struct {
    size_t rank;
    size_t n[AG_MAX_RANK];  /* sizes of the groups */
    size_t so[AG_MAX_RANK]; /* their strides into the result */
} reduce_map;

static ag_status axes_mask(ag_tape *t, const ag_record *r, unsigned *mask)
{
    const ag_tensor *x = r->in[0];
    char s[AG_SHAPE_BUF];
    *mask = 0;
    if (r->attr.rank && !r->attr.axes)
        return ag__error(t, AG_ERR_NULL, "ag_%s: axes is NULL with %zu axes", r->def->name, r->attr.rank);
    if (r->attr.rank > AG_MAX_RANK)
        return ag__error(t, AG_ERR_VALUE, "ag_%s: %zu axes for %s: an axis is repeated or out of range",
                         r->def->name, r->attr.rank, ag__shape_str(x, s, sizeof s));
    for (size_t j = 0; j < r->attr.rank; j++) {
        int a = r->attr.axes[j], rank = (int)x->rank;
        int d = a < 0 ? a + rank : a;
        if (d < 0 || d >= rank)
            return ag__error(t, AG_ERR_VALUE, "ag_%s: axis %d is out of range for %s",
                             r->def->name, a, ag__shape_str(x, s, sizeof s));
        if (*mask & (1u << d))
            return ag__error(t, AG_ERR_VALUE, "ag_%s: axis %d is repeated (axis %d of %s)",
                             r->def->name, a, d, ag__shape_str(x, s, sizeof s));
        *mask |= 1u << d;
    }
    return AG_OK;
}

static ag_status axes_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    unsigned mask;
    if (axes_mask(t, r, &mask) != AG_OK)
        return ag_tape_status(t);
    const ag_tensor *x = r->in[0];
    out->rank = 0;
    for (size_t d = 0; d < x->rank; d++) {
        if (!(mask & (1u << d)))
            out->shape[out->rank++] = x->shape[d];
        else if (r->attr.keepdim)
            out->shape[out->rank++] = 1;
    }
    return AG_OK;
}

static void reduce_map_init(reduce_map *m, const ag_tensor *x, unsigned mask)
{
    bool red[AG_MAX_RANK];
    m->rank = 0;
    for (size_t d = 0; d < x->rank; d++) {
        bool rd = (mask >> d) & 1;
        if (x->shape[d] == 1)
            continue;
        if (m->rank && red[m->rank - 1] == rd) {
            m->n[m->rank - 1] *= x->shape[d];
            continue;
        }
        red[m->rank] = rd;
        m->n[m->rank++] = x->shape[d];
    }
    if (m->rank == 0) {
        red[0] = false;
        m->n[m->rank++] = 1;
    }
    size_t stride = 1;
    for (size_t g = m->rank; g-- > 0;) {
        m->so[g] = red[g] ? 0 : stride;
        stride *= red[g] ? 1 : m->n[g];
    }
}

/* Calls BODY once per run of the last group: x's elements base..base+nl-1
 * map to the result at oi + j·sl (sl = 0: all to oi). */
#define REDUCE_FOR(m, numel, BODY)                                                 \
    do {                                                                           \
        size_t idx_[AG_MAX_RANK] = {0}, oi = 0, last_ = (m)->rank - 1;             \
        size_t nl = (m)->n[last_], sl = (m)->so[last_];                            \
        for (size_t base = 0; base < (numel); base += nl) {                        \
            BODY                                                                   \
            for (size_t d_ = last_; d_-- > 0;) {                                   \
                oi += (m)->so[d_];                                                 \
                if (++idx_[d_] < (m)->n[d_])                                       \
                    break;                                                         \
                oi -= (m)->so[d_] * (m)->n[d_];                                    \
                idx_[d_] = 0;                                                      \
            }                                                                      \
        }                                                                          \
    } while (0)

static ag_status sum_axes_run(ag_tape *t, ag_record *r, bool mean)
{
    unsigned *mask = ag__arena_alloc(t, sizeof *mask);
    if (!mask)
        return ag_tape_status(t);
    axes_mask(t, r, mask); /* checked by the shape rule: cannot fail */
    r->saved = mask;
    reduce_map m;
    reduce_map_init(&m, r->in[0], *mask);
    size_t numel = r->in[0]->numel, on = r->out->numel;
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t j = 0; j < on; j++)
            y[j] = 0;
        REDUCE_FOR(&m, numel, {
            if (sl == 0) {
                T acc = 0;
                for (size_t j = 0; j < nl; j++)
                    acc += x[base + j];
                y[oi] += acc;
            } else {
                for (size_t j = 0; j < nl; j++)
                    y[oi + j] += x[base + j];
            }
        });
        if (mean) /* divided by the count reduced: 0/0 = NaN for none, as PyTorch */
            for (size_t j = 0; j < on; j++)
                y[j] /= (T)(numel / on);
    });
    return AG_OK;
}

static void sum_axes_grad(const ag_record *r, const void *gout, void *gin, bool mean)
{
    reduce_map m;
    reduce_map_init(&m, r->in[0], *(const unsigned *)r->saved);
    size_t numel = r->in[0]->numel;
    AG_DISPATCH(r->out->dtype, T, {
        const T *gy = gout;
        T *gx = gin, scale = mean ? (T)1 / (T)(numel / r->out->numel) : (T)1;
        REDUCE_FOR(&m, numel, {
            for (size_t j = 0; j < nl; j++)
                gx[base + j] += scale * gy[oi + j * sl];
        });
    });
}

static ag_status sum_axes_forward(ag_tape *t, ag_record *r) { return sum_axes_run(t, r, false); }
static ag_status mean_axes_forward(ag_tape *t, ag_record *r) { return sum_axes_run(t, r, true); }

static ag_status sum_axes_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    sum_axes_grad(r, gout, gin[0], false);
    return AG_OK;
}

static ag_status mean_axes_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    sum_axes_grad(r, gout, gin[0], true);
    return AG_OK;
}

/* ------------------------------------------------------------ recorded backwards
 * Each op's backward again, written in the engine's own ops so that
 * ag_gradients with AG_CREATE_GRAPH records it and it can be
 * differentiated again: the fused loops' formulas, in their order, so the
 * two agree to the bit (prod_axis: to rounding, see its scan). The
 * factors that are piecewise constant in x (where the extreme sits) are
 * constants; everything that depends smoothly on x goes through ops. */

/* A rank-0 constant (T)num / (T)den of dtype dt: the scale factors of the
 * fused loops, rounded as there ((T)1 / (T)n, (T)n, ...). */
static ag_tensor *ratio(ag_tape *t, ag_dtype dt, double num, double den)
{
    ag_tensor *c = ag__tape_tensor(t, dt, NULL, 0);
    AG_DISPATCH(dt, T, {
        if (c)
            *(T *)c->data = (T)num / (T)den;
    });
    return c;
}

static bool same_shape(const ag_tensor *a, const size_t *shape, size_t rank)
{
    return a->rank == rank && memcmp(a->shape, shape, rank * sizeof *shape) == 0;
}

/* g, shaped as a reduction of x over the axes in mask (keepdim or not),
 * reshaped to x's rank with those axes of size 1: it broadcasts against x. */
static ag_tensor *kept(ag_tape *t, ag_tensor *g, const ag_tensor *x, unsigned mask)
{
    size_t shape[AG_MAX_RANK];
    for (size_t d = 0; d < x->rank; d++)
        shape[d] = (mask >> d) & 1 ? 1 : x->shape[d];
    return !g || same_shape(g, shape, x->rank) ? g : ag_reshape(t, g, shape, x->rank);
}

/* g spread back over the reduced axes to x's shape. */
static ag_tensor *spread(ag_tape *t, ag_tensor *g, const ag_tensor *x, unsigned mask)
{
    ag_tensor *k = kept(t, g, x, mask);
    return !k || same_shape(k, x->shape, x->rank) ? k : ag_expand(t, k, x->shape, x->rank);
}

#define ALL_AXES(x) ((1u << (x)->rank) - 1)

/* Sums spread g back; means first scale it by (T)1 / (T)count, as their
 * fused loops (the mean of all elements divides g by (T)n instead). */
static ag_status sum_like_graph(ag_tape *t, const ag_record *r, ag_tensor *g, ag_tensor *gin[],
                                unsigned mask, bool mean)
{
    const ag_tensor *x = r->in[0];
    if (mean)
        g = ag_mul(t, g, ratio(t, g->dtype, 1, (double)(x->numel / r->out->numel)));
    gin[0] = spread(t, g, x, mask);
    return ag_tape_status(t);
}

static ag_status sum_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return sum_like_graph(t, r, g, gin, ALL_AXES(r->in[0]), false);
}

static ag_status mean_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    const ag_tensor *x = r->in[0];
    gin[0] = spread(t, ag_div(t, g, ratio(t, g->dtype, (double)x->numel, 1)), x, ALL_AXES(x));
    return ag_tape_status(t);
}

static ag_status sum_axis_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return sum_like_graph(t, r, g, gin, 1u << r->attr.axis, false);
}

static ag_status mean_axis_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return sum_like_graph(t, r, g, gin, 1u << r->attr.axis, true);
}

static ag_status sum_axes_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return sum_like_graph(t, r, g, gin, *(const unsigned *)r->saved, false);
}

static ag_status mean_axes_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return sum_like_graph(t, r, g, gin, *(const unsigned *)r->saved, true);
}

/* max_axis, min_axis: g where x holds the element extreme_run picked (a
 * constant mask of x's shape), 0 elsewhere; where() keeps g exact there,
 * an infinite g included. */
static ag_status extreme_graph(ag_tape *t, const ag_record *r, ag_tensor *g, ag_tensor *gin[], bool min)
{
    const ag_tensor *x = r->in[0];
    ag_tensor *m = ag__tape_tensor(t, x->dtype, x->shape, x->rank);
    if (!m)
        return ag_tape_status(t);
    size_t outer, n, inner;
    ag__axis_split(x, r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *ms = m->data;
        memset(ms, 0, x->numel * sizeof(T));
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t best;
                if (min)
                    ARGMIN(xs, o, n, inner, i, best);
                else
                    ARGMAX(xs, o, n, inner, i, best);
                ms[(o * n + best) * inner + i] = 1;
            }
    });
    gin[0] = ag_where(t, m, kept(t, g, x, 1u << r->attr.axis), ratio(t, g->dtype, 0, 1));
    return ag_tape_status(t);
}

static ag_status max_axis_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return extreme_graph(t, r, g, gin, false);
}

static ag_status min_axis_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    return extreme_graph(t, r, g, gin, true);
}

/* argmax, argmin: never recorded (no_grad); an index takes no gradient. */
static ag_status no_gradient_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                   ag_tensor *gin[])
{
    (void)r, (void)g, (void)need, (void)gin;
    return ag_tape_status(t);
}

/* softmax: y (g - Σ g y); log_softmax: g - e^y Σ g; the sums along the
 * axis kept, as the fused loop's dot. */
static ag_status softmax_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    ag_tensor *y = r->out;
    gin[0] = ag_mul(t, y, ag_sub(t, g, ag_sum_axis(t, ag_mul(t, g, y), r->attr.axis, true)));
    return ag_tape_status(t);
}

static ag_status log_softmax_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                   ag_tensor *gin[])
{
    (void)need;
    ag_tensor *y = r->out;
    gin[0] = ag_sub(t, g, ag_mul(t, ag_exp(t, y), ag_sum_axis(t, g, r->attr.axis, true)));
    return ag_tape_status(t);
}

/* prod_axis: g Π_{j<k} x_j Π_{j>k} x_j, the exclusive prefix and suffix
 * products as the fused loop, never y / x_k: a zero gives the exact
 * gradient. Each is a scan of recorded ops in log2(n) steps (the scan
 * times itself shifted s = 1, 2, 4, ... places along the axis, ones
 * shifted in), so the products associate differently from the fused
 * loop's left-to-right ones: equal to rounding, not to the bit. */

/* x moved s places along axis toward its end (or its start, back), ones
 * filling the gap. */
static ag_tensor *shifted(ag_tape *t, ag_tensor *x, int axis, size_t s, bool back)
{
    size_t n = x->shape[axis], shape[AG_MAX_RANK];
    memcpy(shape, x->shape, x->rank * sizeof *shape);
    shape[axis] = s < n ? s : n;
    ag_tensor *one = ag__tape_tensor(t, x->dtype, shape, x->rank);
    if (!one)
        return NULL;
    AG_DISPATCH(x->dtype, T, {
        for (size_t i = 0; i < one->numel; i++)
            ((T *)one->data)[i] = 1;
    });
    if (s >= n)
        return one;
    return back ? ag_concat(t, ag_slice(t, x, axis, s, n), one, axis)
                : ag_concat(t, one, ag_slice(t, x, axis, 0, n - s), axis);
}

/* Π_{j<k} x_j at each k along axis (Π_{j>k} x_j when back): the
 * inclusive scan of the first n - 1 (last n - 1) elements, shifted one
 * place; those need the steps s < n - 1. */
static ag_tensor *exclusive_prod(ag_tape *t, ag_tensor *x, int axis, bool back)
{
    ag_tensor *p = x;
    for (size_t s = 1; p && s + 1 < x->shape[axis]; s *= 2)
        p = ag_mul(t, p, shifted(t, p, axis, s, back));
    return p ? shifted(t, p, axis, 1, back) : NULL;
}

static ag_status prod_axis_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                 ag_tensor *gin[])
{
    (void)need;
    ag_tensor *x = r->in[0];
    int axis = r->attr.axis;
    ag_tensor *front = ag_mul(t, kept(t, g, x, 1u << axis), exclusive_prod(t, x, axis, false));
    gin[0] = ag_mul(t, front, exclusive_prod(t, x, axis, true));
    return ag_tape_status(t);
}

/* var_axis: (g (T)2/(T)n) (x - μ), μ recorded again as mean_axis (the
 * forward's μ, to the bit). */
static ag_status var_axis_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                ag_tensor *gin[])
{
    (void)need;
    ag_tensor *x = r->in[0];
    int axis = r->attr.axis;
    ag_tensor *gs = ag_mul(t, kept(t, g, x, 1u << axis), ratio(t, g->dtype, 2, (double)x->shape[axis]));
    gin[0] = ag_mul(t, gs, ag_sub(t, x, ag_mean_axis(t, x, axis, true)));
    return ag_tape_status(t);
}

/* logsumexp: g e^(x - y) */
static ag_status logsumexp_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                 ag_tensor *gin[])
{
    (void)need;
    ag_tensor *x = r->in[0];
    unsigned mask = 1u << r->attr.axis;
    gin[0] = ag_mul(t, kept(t, g, x, mask), ag_exp(t, ag_sub(t, x, kept(t, r->out, x, mask))));
    return ag_tape_status(t);
}

/* norm: (g / y) x, none where y = 0 (y's value decides, as in the fused loop) */
static ag_status norm_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[], ag_tensor *gin[])
{
    (void)need;
    bool zero = false;
    AG_DISPATCH(r->out->dtype, T, { zero = *(const T *)r->out->data == 0; });
    if (!zero)
        gin[0] = ag_mul(t, ag_div(t, g, r->out), r->in[0]);
    return ag_tape_status(t);
}

#define REDUCE_OP(NAME, SHAPE) \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 1, .shape = SHAPE, \
                                     .forward = NAME##_forward, .backward = NAME##_backward, \
                                     .grad_graph = NAME##_graph}
REDUCE_OP(sum, ag__shape_scalar);
REDUCE_OP(mean, ag__shape_scalar);
REDUCE_OP(sum_axis, axis_shape);
REDUCE_OP(mean_axis, axis_shape);
REDUCE_OP(max_axis, nonempty_axis_shape);
REDUCE_OP(softmax, softmax_shape);
REDUCE_OP(log_softmax, softmax_shape);
REDUCE_OP(min_axis, nonempty_axis_shape);
REDUCE_OP(prod_axis, axis_shape);
REDUCE_OP(var_axis, axis_shape);
REDUCE_OP(logsumexp, axis_shape);
REDUCE_OP(norm, ag__shape_scalar);
REDUCE_OP(sum_axes, axes_shape);
REDUCE_OP(mean_axes, axes_shape);
/* indices: never recorded (no_grad), their backward adds nothing */
const ag_op_def ag__op_argmax = {.name = "argmax", .arity = 1, .no_grad = true,
                                 .shape = nonempty_axis_shape, .forward = argmax_forward,
                                 .backward = no_gradient, .grad_graph = no_gradient_graph};
const ag_op_def ag__op_argmin = {.name = "argmin", .arity = 1, .no_grad = true,
                                 .shape = nonempty_axis_shape, .forward = argmin_forward,
                                 .backward = no_gradient, .grad_graph = no_gradient_graph};

/* ------------------------------------------------------------ public API */

ag_tensor *ag_sum(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_sum, x, NULL, NULL); }
ag_tensor *ag_mean(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_mean, x, NULL, NULL); }

ag_tensor *ag_sum_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim)
{
    return ag__apply(t, &ag__op_sum_axis, x, NULL, &(ag_attr){.axis = axis, .keepdim = keepdim});
}

ag_tensor *ag_mean_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim)
{
    return ag__apply(t, &ag__op_mean_axis, x, NULL, &(ag_attr){.axis = axis, .keepdim = keepdim});
}

ag_tensor *ag_max_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim)
{
    return ag__apply(t, &ag__op_max_axis, x, NULL, &(ag_attr){.axis = axis, .keepdim = keepdim});
}

ag_tensor *ag_softmax(ag_tape *t, ag_tensor *x, int axis)
{
    return ag__apply(t, &ag__op_softmax, x, NULL, &(ag_attr){.axis = axis});
}

ag_tensor *ag_log_softmax(ag_tape *t, ag_tensor *x, int axis)
{
    return ag__apply(t, &ag__op_log_softmax, x, NULL, &(ag_attr){.axis = axis});
}

/* ------------------------------------------------------------ the second op set */

static ag_tensor *along_axis(ag_tape *t, const ag_op_def *def, ag_tensor *x, int axis, bool keepdim)
{
    return ag__apply(t, def, x, NULL, &(ag_attr){.axis = axis, .keepdim = keepdim});
}

ag_tensor *ag_min_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim) { return along_axis(t, &ag__op_min_axis, x, axis, keepdim); }
ag_tensor *ag_prod_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim) { return along_axis(t, &ag__op_prod_axis, x, axis, keepdim); }
ag_tensor *ag_var_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim) { return along_axis(t, &ag__op_var_axis, x, axis, keepdim); }
ag_tensor *ag_logsumexp(ag_tape *t, ag_tensor *x, int axis, bool keepdim) { return along_axis(t, &ag__op_logsumexp, x, axis, keepdim); }
ag_tensor *ag_argmax(ag_tape *t, ag_tensor *x, int axis, bool keepdim) { return along_axis(t, &ag__op_argmax, x, axis, keepdim); }
ag_tensor *ag_argmin(ag_tape *t, ag_tensor *x, int axis, bool keepdim) { return along_axis(t, &ag__op_argmin, x, axis, keepdim); }
ag_tensor *ag_norm(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_norm, x, NULL, NULL); }

ag_tensor *ag_sum_axes(ag_tape *t, ag_tensor *x, const int *axes, size_t n, bool keepdim)
{
    return ag__apply(t, &ag__op_sum_axes, x, NULL, &(ag_attr){.axes = axes, .rank = n, .keepdim = keepdim});
}

ag_tensor *ag_mean_axes(ag_tape *t, ag_tensor *x, const int *axes, size_t n, bool keepdim)
{
    return ag__apply(t, &ag__op_mean_axes, x, NULL, &(ag_attr){.axes = axes, .rank = n, .keepdim = keepdim});
}
