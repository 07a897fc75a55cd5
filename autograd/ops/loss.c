/* loss.c: the costs, each reducing a prediction and a target of one shape
 * to a rank-0 tensor. Sums accumulate in double for both dtypes. */
#include "../internal.h"

#include <tgmath.h>

#define LOG_FLOOR (-100.0) /* PyTorch's clamp of ln p in BCE */

static double clamped_log(double p)
{
    double l = log(p);
    return l < LOG_FLOOR ? LOG_FLOOR : l;
}

static double softplus_neg_abs(double z) /* ln(1 + e^-|z|), finite for any z */
{
    return log1p(exp(-fabs(z)));
}

/* The number the summed loss is divided by. */
static double loss_divisor(const ag_record *r)
{
    const ag_tensor *a = r->in[0];
    switch (r->op) {
    case AG_OP_QUADRATIC_COST: return 2.0 * (double)(a->rank >= 2 ? a->shape[0] : 1);
    default: return (double)a->numel;
    }
}

static ag_status check_probabilities(ag_tape *t, const ag_tensor *p)
{
    for (size_t i = 0; i < p->numel; i++) {
        double v = ag_get(p, i);
        if (!(v >= 0 && v <= 1))
            return ag__error(t, AG_ERR_VALUE, "ag_bce: p[%zu] = %g is not a probability in [0, 1]", i, v);
    }
    return AG_OK;
}

ag_status ag__loss_forward(ag_tape *t, ag_record *r)
{
    if (r->op == AG_OP_BCE && check_probabilities(t, r->in[0]) != AG_OK)
        return ag_tape_status(t);
    size_t n = r->in[0]->numel;
    ag_op op = r->op;
    AG_DISPATCH(r->out->dtype, T, {
        const T *a = r->in[0]->data, *y = r->in[1]->data;
        double s = 0;
        for (size_t i = 0; i < n; i++) {
            double ai = a[i], yi = y[i], d = ai - yi;
            switch (op) {
            case AG_OP_BCE: s -= yi * clamped_log(ai) + (1 - yi) * clamped_log(1 - ai); break;
            case AG_OP_BCE_WITH_LOGITS: s += (ai > 0 ? ai : 0) - ai * yi + softplus_neg_abs(ai); break;
            default: s += d * d; break; /* mse, quadratic cost */
            }
        }
        *(T *)r->out->data = (T)(s / loss_divisor(r));
    });
    return AG_OK;
}

/* d/da and d/dy of one summand, before the division:
 *   (a-y)^2:     2(a-y), -2(a-y)
 *   bce:         (p-y) / max(p(1-p), 1e-12), -(ln p - ln(1-p))
 *   with logits: sigmoid(z) - y, -z */
ag_status ag__loss_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    size_t n = r->in[0]->numel;
    ag_op op = r->op;
    AG_DISPATCH(r->out->dtype, T, {
        const T *a = r->in[0]->data, *y = r->in[1]->data;
        T *ga = gin[0], *gy = gin[1];
        double g = *(const T *)gout / loss_divisor(r);
        for (size_t i = 0; i < n; i++) {
            double ai = a[i], yi = y[i], da, dy;
            switch (op) {
            case AG_OP_BCE: {
                double w = ai * (1 - ai);
                da = (ai - yi) / (w > 1e-12 ? w : 1e-12);
                dy = -(clamped_log(ai) - clamped_log(1 - ai));
                break;
            }
            case AG_OP_BCE_WITH_LOGITS: {
                double s = ai >= 0 ? 1 / (1 + exp(-ai)) : exp(ai) / (1 + exp(ai));
                da = s - yi;
                dy = -ai;
                break;
            }
            default:
                da = 2 * (ai - yi);
                dy = -da;
            }
            if (ga)
                ga[i] += (T)(g * da);
            if (gy)
                gy[i] += (T)(g * dy);
        }
    });
    return AG_OK;
}

/* ------------------------------------------------------------ cross entropy
 *   z: (N,C) logits, c: (N) class indices
 *   L = 1/N Σ_r (lse_r - z[r, c_r]),  lse_r = ln Σ_j e^z[r,j]
 *   gz[r,j] += g/N (e^(z[r,j] - lse_r) - [j == c_r]); lse is saved. */

ag_status ag__cross_entropy_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *z = r->in[0], *c = r->in[1];
    if (z->rank != 2 || c->rank != 1 || c->shape[0] != z->shape[0] || z->shape[1] == 0) {
        char sz[AG_SHAPE_BUF], sc[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE,
                         "ag_cross_entropy: logits %s and classes %s: want [N,C] (C > 0) and [N]",
                         ag__shape_str(z, sz, sizeof sz), ag__shape_str(c, sc, sizeof sc));
    }
    out->rank = 0;
    return AG_OK;
}

static ag_status check_classes(ag_tape *t, const ag_tensor *c, size_t classes)
{
    for (size_t i = 0; i < c->numel; i++) {
        double v = ag_get(c, i);
        if (!(v >= 0 && v < (double)classes && v == floor(v)))
            return ag__error(t, AG_ERR_VALUE,
                             "ag_cross_entropy: class %g at row %zu is not an index in [0, %zu)",
                             v, i, classes);
    }
    return AG_OK;
}

ag_status ag__cross_entropy_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *z = r->in[0], *c = r->in[1];
    size_t rows = z->shape[0], cols = z->shape[1];
    if (check_classes(t, c, cols) != AG_OK)
        return ag_tape_status(t);
    double *lse = ag__arena_alloc(t, rows * sizeof *lse);
    if (!lse)
        return ag_tape_status(t);
    r->saved = lse;
    double s = 0;
    AG_DISPATCH(z->dtype, T, {
        const T *zs = z->data;
        for (size_t i = 0; i < rows; i++) {
            const T *row = zs + i * cols;
            double m = row[0], e = 0;
            for (size_t j = 1; j < cols; j++)
                m = row[j] > m ? row[j] : m;
            for (size_t j = 0; j < cols; j++)
                e += exp((double)row[j] - m);
            lse[i] = m + log(e);
            s += lse[i] - row[(size_t)ag_get(c, i)];
        }
        *(T *)r->out->data = (T)(rows ? s / (double)rows : NAN);
    });
    return AG_OK;
}

ag_status ag__cross_entropy_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    const ag_tensor *z = r->in[0], *c = r->in[1];
    size_t rows = z->shape[0], cols = z->shape[1];
    const double *lse = r->saved;
    if (!gin[0])
        return AG_OK; /* the class indices take no gradient */
    AG_DISPATCH(z->dtype, T, {
        const T *zs = z->data;
        T *gz = gin[0];
        double g = *(const T *)gout / (double)rows;
        for (size_t i = 0; i < rows; i++) {
            size_t cls = (size_t)ag_get(c, i);
            for (size_t j = 0; j < cols; j++)
                gz[i * cols + j] += (T)(g * (exp((double)zs[i * cols + j] - lse[i]) - (j == cls)));
        }
    });
    return AG_OK;
}

/* ------------------------------------------------------------ public API */

ag_tensor *ag_mse(ag_tape *t, ag_tensor *a, ag_tensor *y) { return ag__apply(t, AG_OP_MSE, a, y, NULL); }
ag_tensor *ag_bce(ag_tape *t, ag_tensor *p, ag_tensor *y) { return ag__apply(t, AG_OP_BCE, p, y, NULL); }

ag_tensor *ag_quadratic_cost(ag_tape *t, ag_tensor *a, ag_tensor *y)
{
    return ag__apply(t, AG_OP_QUADRATIC_COST, a, y, NULL);
}

ag_tensor *ag_bce_with_logits(ag_tape *t, ag_tensor *z, ag_tensor *y)
{
    return ag__apply(t, AG_OP_BCE_WITH_LOGITS, z, y, NULL);
}

ag_tensor *ag_cross_entropy(ag_tape *t, ag_tensor *z, ag_tensor *c)
{
    return ag__apply(t, AG_OP_CROSS_ENTROPY, z, c, NULL);
}
