/* optim.c: SGD (momentum, Nesterov, weight decay), Adam and AdamW over a
 * list of leaf tensors, in PyTorch's conventions (see nn.h). All state is
 * allocated at creation, so a step never allocates. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

struct nn_optim {
    ag_tensor *mem;        /* owns this struct and the arrays below */
    nn_optim_config cfg;
    size_t n;              /* parameters */
    size_t total;          /* their elements */
    ag_tensor **params;
    double *state;         /* SGD: b per element; Adam(W): m then v per element */
    size_t steps;
};

nn_optim_config nn_sgd(double lr)
{
    return (nn_optim_config){.kind = NN_SGD, .lr = lr};
}

nn_optim_config nn_adam(double lr)
{
    return (nn_optim_config){.kind = NN_ADAM, .lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

nn_optim_config nn_adamw(double lr)
{
    nn_optim_config c = nn_adam(lr);
    c.kind = NN_ADAMW;
    c.weight_decay = 0.01;
    return c;
}

static bool in_unit(double x) { return x >= 0 && x < 1; } /* false for NaN */
static bool nonneg(double x) { return x >= 0 && isfinite(x); }

static ag_status check_config(const nn_optim_config *c, nn_error *err)
{
    const char *fn = "nn_optim_new";
    if (c->kind != NN_SGD && c->kind != NN_ADAM && c->kind != NN_ADAMW)
        return nn__fail(err, AG_ERR_VALUE, "%s: kind %d is not an nn_optim_kind", fn, (int)c->kind);
    if (!nonneg(c->lr))
        return nn__fail(err, AG_ERR_VALUE, "%s: lr %g must be finite and >= 0", fn, c->lr);
    if (!nonneg(c->weight_decay))
        return nn__fail(err, AG_ERR_VALUE, "%s: weight_decay %g must be finite and >= 0", fn,
                        c->weight_decay);
    if (c->kind == NN_SGD && !in_unit(c->momentum))
        return nn__fail(err, AG_ERR_VALUE, "%s: momentum %g must be in [0, 1)", fn, c->momentum);
    if (c->kind == NN_SGD && c->nesterov && c->momentum == 0)
        return nn__fail(err, AG_ERR_VALUE, "%s: Nesterov momentum needs momentum > 0", fn);
    if (c->kind != NN_SGD && (!in_unit(c->beta1) || !in_unit(c->beta2)))
        return nn__fail(err, AG_ERR_VALUE, "%s: betas (%g, %g) must be in [0, 1)", fn, c->beta1,
                        c->beta2);
    if (c->kind != NN_SGD && !nonneg(c->eps))
        return nn__fail(err, AG_ERR_VALUE, "%s: eps %g must be finite and >= 0", fn, c->eps);
    return AG_OK;
}

/* Checks every parameter and sums their elements into *total. */
static ag_status check_params(const nn_param *p, size_t n, size_t *total, nn_error *err)
{
    const char *fn = "nn_optim_new";
    if (n == 0)
        return nn__fail(err, AG_ERR_VALUE, "%s: no parameters", fn);
    *total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = p[i].name ? p[i].name : "";
        if (!p[i].tensor)
            return nn__fail(err, AG_ERR_NULL, "%s: params[%zu] '%s' has a NULL tensor", fn, i,
                            name);
        if (!ag_requires_grad(p[i].tensor) || !ag_grad(p[i].tensor))
            return nn__fail(err, AG_ERR_STATE, "%s: params[%zu] '%s' does not require grad "
                            "(call ag_set_requires_grad)", fn, i, name);
        size_t k = ag_tensor_numel(p[i].tensor);
        if (k > SIZE_MAX - *total)
            return nn__fail(err, AG_ERR_OVERFLOW, "%s: the element count overflows", fn);
        *total += k;
    }
    return AG_OK;
}

ag_status nn_optim_new(const nn_optim_config *cfg, const nn_param *params, size_t n,
                       nn_optim **out, nn_error *err)
{
    if (!out || !cfg || !params)
        return nn__fail(err, AG_ERR_NULL, "nn_optim_new: %s is NULL",
                        !out ? "out" : !cfg ? "cfg" : "params");
    *out = NULL;
    size_t total = 0;
    ag_status s = check_config(cfg, err);
    if (s == AG_OK)
        s = check_params(params, n, &total, err);
    if (s != AG_OK)
        return s;
    size_t per = cfg->kind != NN_SGD ? 2 : cfg->momentum > 0 ? 1 : 0, n_state = 0;
    nn__layout lay = {0};
    nn__layout_add(&lay, 1, sizeof(nn_optim));
    size_t o_params = nn__layout_add(&lay, n, sizeof(ag_tensor *));
    lay.overflow |= !nn__mul(per, total, &n_state);
    size_t o_state = nn__layout_add(&lay, n_state, sizeof(double));
    if (lay.overflow)
        return nn__fail(err, AG_ERR_OVERFLOW, "nn_optim_new: the state's size overflows");
    ag_tensor *mem;
    unsigned char *base = nn__mem(lay.size, &mem); /* zeroed: the state starts at 0 */
    if (!base)
        return nn__fail(err, AG_ERR_NOMEM, "nn_optim_new: out of memory for %zu state values",
                        n_state);
    nn_optim *o = (nn_optim *)base;
    *o = (nn_optim){.mem = mem, .cfg = *cfg, .n = n, .total = total};
    o->params = (ag_tensor **)(base + o_params);
    o->state = (double *)(base + o_state);
    for (size_t i = 0; i < n; i++)
        o->params[i] = params[i].tensor;
    *out = o;
    return nn__ok(err);
}

void nn_optim_free(nn_optim *opt)
{
    if (opt)
        ag_tensor_free(opt->mem);
}

/* θ -= η∇ over elements [lo, hi) in plain loops the compiler vectorises:
 * the common case (plain SGD). f32 values are updated in double and rounded
 * once; AVX2 converts four at a time where SSE2 converts two. */
AG_TARGET_CLONES
static void sgd_plain(ag_tensor *x, size_t lo, size_t hi, double lr)
{
    if (ag_tensor_dtype(x) == AG_F32) {
        float *p = ag_data(x);
        const float *g = ag_grad(x);
        for (size_t i = lo; i < hi; i++)
            p[i] = (float)((double)p[i] - lr * (double)g[i]);
    } else {
        double *p = ag_data(x);
        const double *g = ag_grad(x);
        for (size_t i = lo; i < hi; i++)
            p[i] -= lr * g[i];
    }
}

/* buf: this tensor's momentum buffer. */
static void sgd_tensor(const nn_optim_config *c, ag_tensor *x, size_t lo, size_t hi, double *buf)
{
    ag_dtype dt = ag_tensor_dtype(x);
    void *p = ag_data(x), *g = ag_grad(x);
    double lr = c->lr, mu = c->momentum, wd = c->weight_decay;
    if (mu == 0 && wd == 0) {
        sgd_plain(x, lo, hi, lr);
        return;
    }
    for (size_t i = lo; i < hi; i++) {
        double th = nn__get(dt, p, i), d = nn__get(dt, g, i) + wd * th;
        if (mu > 0) {
            buf[i] = mu * buf[i] + d;
            d = c->nesterov ? d + mu * buf[i] : buf[i];
        }
        nn__set(dt, p, i, th - lr * d);
    }
}

/* m, v: this tensor's moments; bc1, bc2: the bias corrections 1 - β1^t
 * and 1 - β2^t of this step. */
static void adam_tensor(const nn_optim_config *c, ag_tensor *x, size_t lo, size_t hi, double *m,
                        double *v, double bc1, double bc2)
{
    ag_dtype dt = ag_tensor_dtype(x);
    void *p = ag_data(x), *g = ag_grad(x);
    bool decoupled = c->kind == NN_ADAMW;
    double lr = c->lr, wd = c->weight_decay, b1 = c->beta1, b2 = c->beta2;
    double step = lr / bc1, bc2_sqrt = sqrt(bc2); /* as PyTorch arranges the terms */
    for (size_t i = lo; i < hi; i++) {
        double th = nn__get(dt, p, i), d = nn__get(dt, g, i);
        if (decoupled)
            th *= 1 - lr * wd;
        else
            d += wd * th;
        m[i] = b1 * m[i] + (1 - b1) * d;
        v[i] = b2 * v[i] + (1 - b2) * d * d;
        nn__set(dt, p, i, th - step * m[i] / (sqrt(v[i]) / bc2_sqrt + c->eps));
    }
}

/* The parameters taken end to end as one range of opt->total elements, so
 * that a step or a zeroing can be cut into equal chunks across threads:
 * each chunk updates only its own elements, the same way on any thread. */
typedef struct {
    nn_optim *opt;
    bool zero;        /* zero the grads instead of stepping */
    double bc1, bc2;
} optim_job;

static void optim_range(void *ctx, size_t lo, size_t hi)
{
    const optim_job *j = ctx;
    nn_optim *o = j->opt;
    const nn_optim_config *c = &o->cfg;
    size_t start = 0; /* of params[i] in the range */
    for (size_t i = 0; i < o->n && start < hi; i++) {
        ag_tensor *x = o->params[i];
        size_t n = ag_tensor_numel(x), end = start + n;
        if (end > lo) {
            size_t a = lo > start ? lo - start : 0, b = (hi < end ? hi : end) - start;
            size_t es = ag_dtype_size(ag_tensor_dtype(x));
            double *s = o->state + start;
            if (j->zero)
                memset((char *)ag_grad(x) + a * es, 0, (b - a) * es);
            else if (c->kind == NN_SGD)
                sgd_tensor(c, x, a, b, s);
            else
                adam_tensor(c, x, a, b, s, s + o->total, j->bc1, j->bc2);
        }
        start = end;
    }
}

ag_status nn__optim_step(nn_optim *opt, ag_tape *t)
{
    if (!opt)
        return AG_ERR_NULL;
    opt->steps++;
    double steps = (double)opt->steps;
    optim_job j = {.opt = opt, .bc1 = 1 - pow(opt->cfg.beta1, steps),
                   .bc2 = 1 - pow(opt->cfg.beta2, steps)};
    ag_parallel_for(t, opt->total, optim_range, &j);
    return AG_OK;
}

void nn__optim_zero_grad(nn_optim *opt, ag_tape *t)
{
    if (opt)
        ag_parallel_for(t, opt->total, optim_range, &(optim_job){.opt = opt, .zero = true});
}

ag_status nn_optim_step(nn_optim *opt) { return nn__optim_step(opt, NULL); }
void nn_optim_zero_grad(nn_optim *opt) { nn__optim_zero_grad(opt, NULL); }

double nn_optim_lr(const nn_optim *opt) { return opt ? opt->cfg.lr : NAN; }
size_t nn_optim_steps(const nn_optim *opt) { return opt ? opt->steps : 0; }

ag_status nn_optim_set_lr(nn_optim *opt, double lr)
{
    if (!opt)
        return AG_ERR_NULL;
    if (!nonneg(lr))
        return AG_ERR_VALUE;
    opt->cfg.lr = lr;
    return AG_OK;
}

double nn_lr_at(const nn_lr_schedule *s, double base_lr, size_t epoch)
{
    if (!s)
        return base_lr;
    switch (s->kind) {
    case NN_LR_CONSTANT:
        return base_lr;
    case NN_LR_STEP:
        return s->step_size ? base_lr * pow(s->gamma, (double)(epoch / s->step_size)) : base_lr;
    case NN_LR_COSINE: {
        if (!s->t_max)
            return base_lr;
        double e = (double)(epoch < s->t_max ? epoch : s->t_max);
        const double pi = 3.14159265358979323846;
        return s->lr_min + (base_lr - s->lr_min) * (1 + cos(pi * e / (double)s->t_max)) / 2;
    }
    }
    return base_lr;
}
