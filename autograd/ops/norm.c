/* norm.c: layer_norm, dropout and the other normalising ops. */
#include "../internal.h"

#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------ layer_norm
 * Over the last axis (n elements per row), population variance, no affine:
 *   y = (x - μ) / σ,  σ = sqrt(var + eps)
 *   gx += (g - mean(g) - y · mean(g y)) / σ
 * μ and the variance are summed in double, two passes; 1/σ per row is saved. */

static ag_status layer_norm_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *x = r->in[0];
    double eps = r->attr.scalar;
    if (x->rank == 0)
        return ag__error(t, AG_ERR_SHAPE, "ag_layer_norm: a scalar has no last axis to normalise");
    if (!(eps >= 0 && eps < INFINITY))
        return ag__error(t, AG_ERR_VALUE, "ag_layer_norm: eps = %g is not a finite number >= 0", eps);
    return ag__shape_same(t, r, out);
}

static ag_status layer_norm_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *x = r->in[0];
    size_t n = x->shape[x->rank - 1], rows = x->numel / n;
    double *rstd = ag__arena_alloc(t, rows * sizeof *rstd);
    if (!rstd)
        return ag_tape_status(t);
    r->saved = rstd;
    AG_DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *ys = r->out->data;
        for (size_t row = 0; row < rows; row++) {
            const T *xr = xs + row * n;
            T *yr = ys + row * n;
            double mu = 0, var = 0;
            for (size_t k = 0; k < n; k++)
                mu += xr[k];
            mu /= (double)n;
            for (size_t k = 0; k < n; k++)
                var += ((double)xr[k] - mu) * ((double)xr[k] - mu);
            var /= (double)n;
            rstd[row] = 1 / sqrt(var + r->attr.scalar);
            for (size_t k = 0; k < n; k++)
                yr[k] = (T)(((double)xr[k] - mu) * rstd[row]);
        }
    });
    return AG_OK;
}

static ag_status layer_norm_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    const ag_tensor *x = r->in[0];
    size_t n = x->shape[x->rank - 1], rows = x->numel / n;
    const double *rstd = r->saved;
    AG_DISPATCH(x->dtype, T, {
        const T *ys = r->out->data, *gs = gout;
        T *gx = gin[0];
        for (size_t row = 0; row < rows; row++) {
            const T *yr = ys + row * n, *gr = gs + row * n;
            T *gxr = gx + row * n;
            double mg = 0, mgy = 0;
            for (size_t k = 0; k < n; k++) {
                mg += gr[k];
                mgy += (double)gr[k] * yr[k];
            }
            mg /= (double)n;
            mgy /= (double)n;
            for (size_t k = 0; k < n; k++)
                gxr[k] += (T)(((double)gr[k] - mg - yr[k] * mgy) * rstd[row]);
        }
    });
    return AG_OK;
}

/* The recorded backward: the same formula in ops, with μ, the variance
 * and 1/σ recorded again from x (divisions by (T)n and the order of the
 * forward's double sums: in f64 the fused loop's numbers to the bit; in
 * f32 the fused loop sums in double, this in f32), so that y and 1/σ
 * carry x's second derivatives. */
static ag_status layer_norm_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                  ag_tensor *gin[])
{
    (void)need;
    ag_tensor *x = r->in[0], *y = r->out;
    int last = (int)x->rank - 1;
    ag_tensor *n = ag__tape_tensor(t, x->dtype, NULL, 0);
    if (!n)
        return ag_tape_status(t);
    AG_DISPATCH(x->dtype, T, { *(T *)n->data = (T)x->shape[last]; });
    ag_tensor *d = ag_sub(t, x, ag_div(t, ag_sum_axis(t, x, last, true), n));
    ag_tensor *var = ag_div(t, ag_sum_axis(t, ag_square(t, d), last, true), n);
    ag_tensor *rstd = ag_rsqrt(t, ag_add_scalar(t, var, r->attr.scalar));
    ag_tensor *mg = ag_div(t, ag_sum_axis(t, g, last, true), n);
    ag_tensor *mgy = ag_div(t, ag_sum_axis(t, ag_mul(t, g, y), last, true), n);
    gin[0] = ag_mul(t, ag_sub(t, ag_sub(t, g, mg), ag_mul(t, y, mgy)), rstd);
    return ag_tape_status(t);
}

const ag_op_def ag__op_layer_norm = {.name = "layer_norm", .arity = 1, .shape = layer_norm_shape,
                                     .forward = layer_norm_forward,
                                     .backward = layer_norm_backward,
                                     .grad_graph = layer_norm_graph};

/* ------------------------------------------------------------ dropout
 * Training with p > 0: each element is kept with probability 1 - p and
 * scaled by 1/(1-p), else zeroed; the mask (0 or 1/(1-p) per element, one
 * ag_rng_uniform draw per element in row-major order, zeroed when the draw
 * is below p) is drawn from the caller's rng at forward time and saved, so
 * the backward uses the same one: gx += g m. Otherwise (p = 0 or not
 * training) the identity: a copy, no draws, the gradient passing through. */

static ag_status dropout_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    double p = r->attr.scalar;
    if (!(p >= 0 && p < 1))
        return ag__error(t, AG_ERR_VALUE, "ag_dropout: p = %g is not a probability in [0, 1)", p);
    if (r->attr.training && p > 0 && !r->attr.rng)
        return ag__error(t, AG_ERR_NULL, "ag_dropout: rng is NULL (training with p = %g)", p);
    return ag__shape_same(t, r, out);
}

static ag_status dropout_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *x = r->in[0];
    size_t n = x->numel;
    double p = r->attr.scalar;
    if (!r->attr.training || p == 0) {
        memcpy(r->out->data, x->data, n * AG_DTYPE_SIZE(x->dtype));
        return AG_OK;
    }
    void *mask = ag__arena_alloc(t, n * AG_DTYPE_SIZE(x->dtype));
    if (!mask)
        return ag_tape_status(t);
    r->saved = mask;
    ag_rng *rng = r->attr.rng;
    AG_DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *ys = r->out->data, *m = mask, keep = (T)(1 / (1 - p));
        for (size_t i = 0; i < n; i++)
            m[i] = ag_rng_uniform(rng) < p ? 0 : keep;
        for (size_t i = 0; i < n; i++)
            ys[i] = xs[i] * m[i];
    });
    return AG_OK;
}

static ag_status dropout_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t n = r->in[0]->numel;
    AG_DISPATCH(r->out->dtype, T, {
        const T *g = gout, *m = r->saved;
        T *gx = gin[0];
        if (m)
            for (size_t i = 0; i < n; i++)
                gx[i] += g[i] * m[i];
        else
            for (size_t i = 0; i < n; i++)
                gx[i] += g[i];
    });
    return AG_OK;
}

/* g m, the saved mask a constant; g itself for the identity */
static ag_status dropout_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                               ag_tensor *gin[])
{
    (void)need;
    const ag_tensor *x = r->in[0];
    if (!r->saved) {
        gin[0] = g;
        return ag_tape_status(t);
    }
    ag_tensor *m = ag__tape_tensor(t, x->dtype, x->shape, x->rank);
    if (m)
        memcpy(m->data, r->saved, x->numel * AG_DTYPE_SIZE(x->dtype));
    gin[0] = ag_mul(t, g, m);
    return ag_tape_status(t);
}

const ag_op_def ag__op_dropout = {.name = "dropout", .arity = 1, .shape = dropout_shape,
                                  .forward = dropout_forward, .backward = dropout_backward,
                                  .grad_graph = dropout_graph};

/* ------------------------------------------------------------ public API */

ag_tensor *ag_layer_norm(ag_tape *t, ag_tensor *x, double eps)
{
    return ag__apply(t, &ag__op_layer_norm, x, NULL, &(ag_attr){.scalar = eps});
}

ag_tensor *ag_dropout(ag_tape *t, ag_tensor *x, double p, bool training, ag_rng *rng)
{
    return ag__apply(t, &ag__op_dropout, x, NULL,
                     &(ag_attr){.scalar = p, .training = training, .rng = rng});
}
