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

static ag_status check_probabilities(ag_tape *t, const ag_tensor *p)
{
    for (size_t i = 0; i < p->numel; i++) {
        double v = ag_get(p, i);
        if (!(v >= 0 && v <= 1))
            return ag__error(t, AG_ERR_VALUE, "ag_bce: p[%zu] = %g is not a probability in [0, 1]", i, v);
    }
    return AG_OK;
}

/* A rank-0 constant of dtype dt holding (T)v. */
static ag_tensor *scalar_const(ag_tape *t, ag_dtype dt, double v)
{
    ag_tensor *c = ag__tape_tensor(t, dt, NULL, 0);
    AG_DISPATCH(dt, T, {
        if (c)
            *(T *)c->data = (T)v;
    });
    return c;
}

/* An elementwise loss: mean-like reduction of term(a, y) over the
 * elements, divided by divisor(a). Each op gives its summand and the
 * summand's derivatives (before the division) as one expression each, and
 * the same derivatives in recorded ops (GA, GY: tensors of a's shape, in
 * the ag_tensors a, y and gs = g / divisor), for ag_gradients with
 * AG_CREATE_GRAPH; in f64 they are the fused loop's numbers to the bit. */
#define AG_LOSS(NAME, ...) AG_LOSS_SHAPED(NAME, ag__shape_same_pair, __VA_ARGS__)
/* The same with its own shape rule (one that also checks the op's scalar). */
#define AG_LOSS_SHAPED(NAME, SHAPE, CHECK, DIVISOR, TERM, DA, DY, GA, GY)                 \
    static ag_status NAME##_forward(ag_tape *t, ag_record *r)                             \
    {                                                                                     \
        if (CHECK(t, r->in[0]) != AG_OK)                                                  \
            return ag_tape_status(t);                                                     \
        const ag_tensor *A = r->in[0];                                                    \
        AG_DISPATCH(r->out->dtype, T, {                                                   \
            const T *a_ = A->data, *y_ = r->in[1]->data;                                  \
            double s = 0;                                                                 \
            for (size_t i = 0; i < A->numel; i++) {                                       \
                double a = a_[i], y = y_[i];                                              \
                s += (TERM);                                                              \
            }                                                                             \
            *(T *)r->out->data = (T)(s / (DIVISOR));                                      \
        });                                                                               \
        return AG_OK;                                                                     \
    }                                                                                     \
    static ag_status NAME##_backward(ag_tape *t, const ag_record *r, const void *gout,    \
                                     void *gin[])                                         \
    {                                                                                     \
        (void)t;                                                                          \
        const ag_tensor *A = r->in[0];                                                    \
        AG_DISPATCH(r->out->dtype, T, {                                                   \
            const T *a_ = A->data, *y_ = r->in[1]->data;                                  \
            T *ga = gin[0], *gy = gin[1];                                                 \
            double g = *(const T *)gout / (DIVISOR);                                      \
            for (size_t i = 0; i < A->numel; i++) {                                       \
                double a = a_[i], y = y_[i];                                              \
                if (ga)                                                                   \
                    ga[i] += (T)(g * (DA));                                               \
                if (gy)                                                                   \
                    gy[i] += (T)(g * (DY));                                               \
            }                                                                             \
        });                                                                               \
        return AG_OK;                                                                     \
    }                                                                                     \
    static ag_status NAME##_graph(ag_tape *t, const ag_record *r, ag_tensor *g,           \
                                  const bool need[], ag_tensor *gin[])                    \
    {                                                                                     \
        const ag_tensor *A = r->in[0];                                                    \
        ag_tensor *a = r->in[0], *y = r->in[1];                                           \
        ag_tensor *gs = ag_div(t, g, scalar_const(t, g->dtype, (DIVISOR)));               \
        (void)a, (void)y;                                                                 \
        if (need[0])                                                                      \
            gin[0] = (GA);                                                                \
        if (need[1])                                                                      \
            gin[1] = (GY);                                                                \
        return ag_tape_status(t);                                                         \
    }                                                                                     \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 2, .same_dtype = true,       \
                                     .shape = SHAPE, .forward = NAME##_forward,           \
                                     .backward = NAME##_backward, .grad_graph = NAME##_graph}

static ag_status any_values(ag_tape *t, const ag_tensor *a)
{
    (void)t;
    (void)a;
    return AG_OK;
}

static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

/* d/dp of the bce summand, its 1/(p(1-p)) kept finite at p = 0 and 1 */
static double bce_dp(double p, double y)
{
    double w = p * (1 - p);
    return (p - y) / (w > 1e-12 ? w : 1e-12);
}

/* The recorded backwards' pieces. */
#define MUL(a, b) ag_mul(t, (a), (b))
#define ONE_MINUS(a) ag_add_scalar(t, ag_neg(t, (a)), 1)
#define SQUARED_GA(c) MUL(gs, ag_scale(t, ag_sub(t, a, y), (c)))
/* clamped_log, its floor a constant (no gradient below it) */
#define CLAMPED_LOG(p) ag_clamp(t, ag_log(t, (p)), LOG_FLOOR, INFINITY)

AG_LOSS(mse, any_values, (double)A->numel, (a - y) * (a - y), 2 * (a - y), -2 * (a - y),
        SQUARED_GA(2), SQUARED_GA(-2));
/* Nielsen's cost divides by 2 and the number of rows */
AG_LOSS(quadratic_cost, any_values, 2.0 * (double)(A->rank >= 2 ? A->shape[0] : 1),
        (a - y) * (a - y), 2 * (a - y), -2 * (a - y), SQUARED_GA(2), SQUARED_GA(-2));
/* bce_dp's floor on p(1-p) is a clamp: no gradient below it */
AG_LOSS(bce, check_probabilities, (double)A->numel,
        -(y * clamped_log(a) + (1 - y) * clamped_log(1 - a)), bce_dp(a, y),
        -(clamped_log(a) - clamped_log(1 - a)),
        MUL(gs, ag_div(t, ag_sub(t, a, y), ag_clamp(t, MUL(a, ONE_MINUS(a)), 1e-12, INFINITY))),
        MUL(gs, ag_sub(t, CLAMPED_LOG(ONE_MINUS(a)), CLAMPED_LOG(a))));
/* max(z,0) - z y + ln(1 + e^-|z|): finite for any z */
AG_LOSS(bce_with_logits, any_values, (double)A->numel,
        (a > 0 ? a : 0) - a * y + softplus_neg_abs(a), sigmoid(a) - y, -a,
        MUL(gs, ag_sub(t, ag_sigmoid(t, a), y)), MUL(gs, ag_neg(t, a)));

/* huber: with d = a - y and delta > 0, 0.5 d² where |d| < delta, else
 * delta (|d| - 0.5 delta); its slope d, else delta sign d */
static double huber_term(double d, double delta)
{
    return fabs(d) < delta ? 0.5 * d * d : delta * (fabs(d) - 0.5 * delta);
}

static double huber_slope(double d, double delta)
{
    return fabs(d) < delta ? d : d > 0 ? delta : -delta;
}

static ag_status huber_loss_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    if (!(r->attr.scalar > 0))
        return ag__error(t, AG_ERR_VALUE, "ag_huber_loss: delta = %g is not > 0", r->attr.scalar);
    return ag__shape_same_pair(t, r, out);
}

/* huber_slope in recorded ops: a - y where |a - y| < delta (a constant
 * mask, from the inputs in double as the fused loop), else the constant
 * delta sign(a - y). */
static ag_tensor *huber_slope_graph(ag_tape *t, const ag_record *r)
{
    ag_tensor *a = r->in[0], *y = r->in[1];
    ag_tensor *in = ag__tape_tensor(t, a->dtype, a->shape, a->rank);
    ag_tensor *out = ag__tape_tensor(t, a->dtype, a->shape, a->rank);
    if (!in || !out)
        return NULL;
    AG_DISPATCH(a->dtype, T, {
        const T *as = a->data, *ys = y->data;
        for (size_t i = 0; i < a->numel; i++) {
            double d = (double)as[i] - (double)ys[i];
            ((T *)in->data)[i] = fabs(d) < r->attr.scalar;
            ((T *)out->data)[i] = (T)huber_slope(d, r->attr.scalar);
        }
    });
    return ag_where(t, in, ag_sub(t, a, y), out);
}

AG_LOSS_SHAPED(huber_loss, huber_loss_shape, any_values, (double)A->numel,
               huber_term(a - y, r->attr.scalar), huber_slope(a - y, r->attr.scalar),
               -huber_slope(a - y, r->attr.scalar), MUL(gs, huber_slope_graph(t, r)),
               MUL(gs, ag_neg(t, huber_slope_graph(t, r))));

/* ------------------------------------------------------------ cross entropy
 *   z: (N,C) logits, c: (N) class indices
 *   L = 1/N Σ_r (lse_r - z[r, c_r]),  lse_r = ln Σ_j e^z[r,j]
 *   gz[r,j] += g/N (e^(z[r,j] - lse_r) - [j == c_r]); lse is saved. */

/* Scores [N,C] and class indices [N]: cross_entropy's logits, nll_loss's
 * log-probabilities (what names them in the message). */
static ag_status classes_shape(ag_tape *t, ag_record *r, ag_tensor *out, const char *what)
{
    const ag_tensor *z = r->in[0], *c = r->in[1];
    if (z->rank != 2 || c->rank != 1 || c->shape[0] != z->shape[0] || z->shape[1] == 0) {
        char sz[AG_SHAPE_BUF], sc[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE,
                         "ag_%s: %s %s and classes %s: want [N,C] (C > 0) and [N]", r->def->name,
                         what, ag__shape_str(z, sz, sizeof sz), ag__shape_str(c, sc, sizeof sc));
    }
    out->rank = 0;
    return AG_OK;
}

static ag_status cross_entropy_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    return classes_shape(t, r, out, "logits");
}

static ag_status check_classes(ag_tape *t, const ag_record *r, const ag_tensor *c, size_t classes)
{
    for (size_t i = 0; i < c->numel; i++) {
        double v = ag_get(c, i);
        if (!(v >= 0 && v < (double)classes && v == floor(v)))
            return ag__error(t, AG_ERR_VALUE,
                             "ag_%s: class %g at row %zu is not an index in [0, %zu)",
                             r->def->name, v, i, classes);
    }
    return AG_OK;
}

static ag_status cross_entropy_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *z = r->in[0], *c = r->in[1];
    size_t rows = z->shape[0], cols = z->shape[1];
    if (check_classes(t, r, c, cols) != AG_OK)
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

static ag_status cross_entropy_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
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

/* [N,C] constant: 1 at (r, c_r), 0 elsewhere. */
static ag_tensor *one_hot(ag_tape *t, const ag_record *r)
{
    const ag_tensor *z = r->in[0], *c = r->in[1];
    size_t rows = z->shape[0], cols = z->shape[1];
    ag_tensor *m = ag__tape_tensor(t, z->dtype, z->shape, z->rank);
    if (!m)
        return NULL;
    AG_DISPATCH(z->dtype, T, {
        T *ms = m->data;
        for (size_t i = 0; i < rows * cols; i++)
            ms[i] = 0;
        for (size_t i = 0; i < rows; i++)
            ms[i * cols + (size_t)ag_get(c, i)] = 1;
    });
    return m;
}

/* g/N (e^(z - lse) - onehot), lse recorded again as ag_logsumexp (the
 * forward's lse, to the bit, for finite z); the classes take none. */
static ag_status cross_entropy_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                     ag_tensor *gin[])
{
    ag_tensor *z = r->in[0];
    if (!need[0])
        return ag_tape_status(t);
    ag_tensor *gs = ag_div(t, g, scalar_const(t, g->dtype, (double)z->shape[0]));
    ag_tensor *p = ag_exp(t, ag_sub(t, z, ag_logsumexp(t, z, 1, true)));
    gin[0] = MUL(gs, ag_sub(t, p, one_hot(t, r)));
    return ag_tape_status(t);
}

const ag_op_def ag__op_cross_entropy = {.name = "cross_entropy", .arity = 2,
                                        .shape = cross_entropy_shape,
                                        .forward = cross_entropy_forward,
                                        .backward = cross_entropy_backward,
                                        .grad_graph = cross_entropy_graph};

/* ------------------------------------------------------------ nll_loss
 *   lp: (N,C) log-probabilities, c: (N) class indices
 *   L = -1/N Σ_r lp[r, c_r],  glp[r, c_r] += -g/N */

static ag_status nll_loss_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    return classes_shape(t, r, out, "log-probabilities");
}

static ag_status nll_loss_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *lp = r->in[0], *c = r->in[1];
    size_t rows = lp->shape[0], cols = lp->shape[1];
    if (check_classes(t, r, c, cols) != AG_OK)
        return ag_tape_status(t);
    double s = 0;
    AG_DISPATCH(lp->dtype, T, {
        const T *ls = lp->data;
        for (size_t i = 0; i < rows; i++)
            s -= ls[i * cols + (size_t)ag_get(c, i)];
        *(T *)r->out->data = (T)(rows ? s / (double)rows : NAN);
    });
    return AG_OK;
}

static ag_status nll_loss_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    const ag_tensor *lp = r->in[0], *c = r->in[1];
    size_t rows = lp->shape[0], cols = lp->shape[1];
    if (!gin[0])
        return AG_OK; /* the class indices take no gradient */
    AG_DISPATCH(lp->dtype, T, {
        T *gl = gin[0], g = (T)(*(const T *)gout / (double)rows);
        for (size_t i = 0; i < rows; i++)
            gl[i * cols + (size_t)ag_get(c, i)] -= g;
    });
    return AG_OK;
}

/* -g/N at each row's class, 0 elsewhere; the classes take none */
static ag_status nll_loss_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                                ag_tensor *gin[])
{
    if (!need[0])
        return ag_tape_status(t);
    ag_tensor *gs = ag_div(t, g, scalar_const(t, g->dtype, (double)r->in[0]->shape[0]));
    gin[0] = ag_where(t, one_hot(t, r), ag_neg(t, gs), scalar_const(t, g->dtype, 0));
    return ag_tape_status(t);
}

const ag_op_def ag__op_nll_loss = {.name = "nll_loss", .arity = 2, .shape = nll_loss_shape,
                                   .forward = nll_loss_forward, .backward = nll_loss_backward,
                                   .grad_graph = nll_loss_graph};

/* ------------------------------------------------------------ public API */

ag_tensor *ag_mse(ag_tape *t, ag_tensor *a, ag_tensor *y) { return ag__apply(t, &ag__op_mse, a, y, NULL); }
ag_tensor *ag_bce(ag_tape *t, ag_tensor *p, ag_tensor *y) { return ag__apply(t, &ag__op_bce, p, y, NULL); }

ag_tensor *ag_quadratic_cost(ag_tape *t, ag_tensor *a, ag_tensor *y)
{
    return ag__apply(t, &ag__op_quadratic_cost, a, y, NULL);
}

ag_tensor *ag_bce_with_logits(ag_tape *t, ag_tensor *z, ag_tensor *y)
{
    return ag__apply(t, &ag__op_bce_with_logits, z, y, NULL);
}

ag_tensor *ag_cross_entropy(ag_tape *t, ag_tensor *z, ag_tensor *c)
{
    return ag__apply(t, &ag__op_cross_entropy, z, c, NULL);
}

ag_tensor *ag_nll_loss(ag_tape *t, ag_tensor *logp, ag_tensor *c)
{
    return ag__apply(t, &ag__op_nll_loss, logp, c, NULL);
}

ag_tensor *ag_huber_loss(ag_tape *t, ag_tensor *a, ag_tensor *y, double delta)
{
    return ag__apply(t, &ag__op_huber_loss, a, y, &(ag_attr){.scalar = delta});
}
