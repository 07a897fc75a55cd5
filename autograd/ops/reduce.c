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

/* The first maximal element of each (o, ·, i) line wins; NaN beats all. */
#define ARGMAX(x, o, n, inner, i, best)                                        \
    do {                                                                       \
        best = 0;                                                              \
        for (size_t k_ = 1; k_ < (n); k_++) {                                  \
            T v_ = (x)[((o) * (n) + k_) * (inner) + (i)];                      \
            T m_ = (x)[((o) * (n) + best) * (inner) + (i)];                    \
            if (m_ != m_)                                                      \
                break;                                                         \
            if (v_ > m_ || v_ != v_)                                           \
                best = k_;                                                     \
        }                                                                      \
    } while (0)

static ag_status max_axis_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data;
        T *y = r->out->data;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t best;
                ARGMAX(x, o, n, inner, i, best);
                y[o * inner + i] = x[(o * n + best) * inner + i];
            }
    });
    return AG_OK;
}

static ag_status max_axis_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t outer, n, inner;
    ag__axis_split(r->in[0], r->attr.axis, &outer, &n, &inner);
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = r->in[0]->data, *gy = gout;
        T *gx = gin[0];
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t best;
                ARGMAX(x, o, n, inner, i, best);
                gx[(o * n + best) * inner + i] += gy[o * inner + i];
            }
    });
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

#define REDUCE_OP(NAME, SHAPE) \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 1, .shape = SHAPE, \
                                     .forward = NAME##_forward, .backward = NAME##_backward}
REDUCE_OP(sum, ag__shape_scalar);
REDUCE_OP(mean, ag__shape_scalar);
REDUCE_OP(sum_axis, axis_shape);
REDUCE_OP(mean_axis, axis_shape);
REDUCE_OP(max_axis, nonempty_axis_shape);
REDUCE_OP(softmax, softmax_shape);
REDUCE_OP(log_softmax, softmax_shape);

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
