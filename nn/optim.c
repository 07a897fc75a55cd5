/* optim.c: SGD (momentum, Nesterov, weight decay), Adam and AdamW over a
 * list of leaf tensors, in PyTorch's conventions (see nn.h). All state is
 * allocated at creation, so a step never allocates. A step first measures
 * the gradients' global L2 norm, which both refuses non-finite gradients
 * before anything is written and drives clipping. */
#include "nn_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Elements per block of the norm: each block's sum of squares is one
 * value, summed in block order, so the norm does not depend on threads. */
#define NORM_BLOCK 4096

struct nn_optim {
    ag_tensor *mem;        /* owns this struct and the arrays below */
    nn_optim_config cfg;
    size_t n;              /* parameters */
    size_t total;          /* their elements */
    ag_tensor **params;
    const char **names;    /* copies of the parameters' names, for messages */
    double *state;         /* SGD: b per element; Adam(W): m then v per element */
    double *block_ss;      /* Σ g² of each NORM_BLOCK elements, this step */
    size_t steps;
    double grad_norm;      /* measured by the last step; NaN before one */
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

static ag_status check_config(const char *fn, const nn_optim_config *c, nn_error *err)
{
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
    if (!nonneg(c->clip_norm))
        return nn__fail(err, AG_ERR_VALUE, "%s: clip_norm %g must be finite and >= 0 (0: off)", fn,
                        c->clip_norm);
    return AG_OK;
}

/* Checks every parameter, sums their elements into *total and the bytes of
 * their names (with terminators) into *name_bytes. */
static ag_status check_params(const char *fn, const nn_param *p, size_t n, size_t *total,
                              size_t *name_bytes, nn_error *err)
{
    if (n == 0)
        return nn__fail(err, AG_ERR_VALUE, "%s: no parameters", fn);
    *total = *name_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = p[i].name ? p[i].name : "";
        if (!p[i].tensor)
            return nn__fail(err, AG_ERR_NULL, "%s: params[%zu] '%s' has a NULL tensor", fn, i,
                            name);
        if (!ag_requires_grad(p[i].tensor) || !ag_grad(p[i].tensor))
            return nn__fail(err, AG_ERR_STATE, "%s: params[%zu] '%s' does not require grad "
                            "(call ag_set_requires_grad)", fn, i, name);
        size_t k = ag_tensor_numel(p[i].tensor);
        size_t len = strlen(name) + 1;
        if (k > SIZE_MAX - *total || len > SIZE_MAX - *name_bytes)
            return nn__fail(err, AG_ERR_OVERFLOW, "%s: the element count overflows", fn);
        *total += k;
        *name_bytes += len;
    }
    return AG_OK;
}

/* nn_optim_new and nn_mlp_optim_new; fn names the caller in messages. */
static ag_status optim_new(const char *fn, const nn_optim_config *cfg, const nn_param *params,
                           size_t n, nn_optim **out, nn_error *err)
{
    size_t total = 0, name_bytes = 0;
    ag_status s = check_config(fn, cfg, err);
    if (s == AG_OK)
        s = check_params(fn, params, n, &total, &name_bytes, err);
    if (s != AG_OK)
        return s;
    size_t per = cfg->kind != NN_SGD ? 2 : cfg->momentum > 0 ? 1 : 0, n_state = 0;
    size_t blocks = total / NORM_BLOCK + (total % NORM_BLOCK != 0);
    nn__layout lay = {0};
    nn__layout_add(&lay, 1, sizeof(nn_optim));
    size_t o_params = nn__layout_add(&lay, n, sizeof(ag_tensor *));
    size_t o_names = nn__layout_add(&lay, n, sizeof(char *));
    size_t o_text = nn__layout_add(&lay, name_bytes, 1);
    size_t o_blocks = nn__layout_add(&lay, blocks, sizeof(double));
    lay.overflow |= !nn__mul(per, total, &n_state);
    size_t o_state = nn__layout_add(&lay, n_state, sizeof(double));
    if (lay.overflow)
        return nn__fail(err, AG_ERR_OVERFLOW, "%s: the state's size overflows", fn);
    ag_tensor *mem;
    unsigned char *base = nn__mem(lay.size, &mem); /* zeroed: the state starts at 0 */
    if (!base)
        return nn__fail(err, AG_ERR_NOMEM, "%s: out of memory for %zu state values", fn, n_state);
    nn_optim *o = (nn_optim *)base;
    *o = (nn_optim){.mem = mem, .cfg = *cfg, .n = n, .total = total, .grad_norm = NAN};
    o->params = (ag_tensor **)(base + o_params);
    o->names = (const char **)(base + o_names);
    o->block_ss = (double *)(base + o_blocks);
    o->state = (double *)(base + o_state);
    char *text = (char *)(base + o_text);
    for (size_t i = 0; i < n; i++) {
        const char *name = params[i].name ? params[i].name : "";
        size_t len = strlen(name) + 1;
        o->params[i] = params[i].tensor;
        o->names[i] = memcpy(text, name, len);
        text += len;
    }
    *out = o;
    return nn__ok(err);
}

ag_status nn_optim_new(const nn_optim_config *cfg, const nn_param *params, size_t n,
                       nn_optim **out, nn_error *err)
{
    if (out)
        *out = NULL;
    if (!out || !cfg || !params)
        return nn__fail(err, AG_ERR_NULL, "nn_optim_new: %s is NULL",
                        !out ? "out" : !cfg ? "cfg" : "params");
    return optim_new("nn_optim_new", cfg, params, n, out, err);
}

ag_status nn_mlp_optim_new(nn_mlp *net, const nn_optim_config *cfg, nn_optim **out,
                           nn_error *err)
{
    if (out)
        *out = NULL;
    if (!out || !net || !cfg)
        return nn__fail(err, AG_ERR_NULL, "nn_mlp_optim_new: %s is NULL",
                        !out ? "out" : !net ? "net" : "cfg");
    size_t n = 0;
    const nn_param *params = nn_mlp_params(net, &n); /* n is read only after this call */
    return optim_new("nn_mlp_optim_new", cfg, params, n, out, err);
}

void nn_optim_free(nn_optim *opt)
{
    if (opt)
        ag_tensor_free(opt->mem);
}

/* θ -= η∇ over elements [lo, hi): the common case (plain SGD), as
 * PyTorch's θ.add_(∇, alpha=-η) computes it, θ + (-η)·∇ in one fused
 * multiply-add in the parameter's dtype (η rounded to it), so the bits
 * match PyTorch's. (f32 updated in double took three times as long, the
 * conversions bounding the loop: 16% of W1's step.) */
NN_TARGET_CLONES
static void sgd_plain(ag_tensor *x, size_t lo, size_t hi, double lr)
{
    if (ag_tensor_dtype(x) == AG_F32) {
        float *p = ag_data(x), alpha = (float)-lr;
        const float *g = ag_grad(x);
        for (size_t i = lo; i < hi; i++)
            p[i] = fmaf(alpha, g[i], p[i]);
    } else {
        double *p = ag_data(x);
        const double *g = ag_grad(x);
        for (size_t i = lo; i < hi; i++)
            p[i] = fma(-lr, g[i], p[i]);
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

/* g *= k over elements [lo, hi) of x's gradient (clipping), f32 rounded once. */
static void scale_grad(ag_tensor *x, size_t lo, size_t hi, double k)
{
    if (ag_tensor_dtype(x) == AG_F32) {
        float *g = ag_grad(x);
        for (size_t i = lo; i < hi; i++)
            g[i] = (float)((double)g[i] * k);
    } else {
        double *g = ag_grad(x);
        for (size_t i = lo; i < hi; i++)
            g[i] *= k;
    }
}

/* The parameters taken end to end as one range of opt->total elements, so
 * that a step, a zeroing or a clipping can be cut into equal chunks across
 * threads: each chunk updates only its own elements, the same way on any
 * thread. */
typedef enum { JOB_STEP, JOB_ZERO, JOB_SCALE } job_kind;

typedef struct {
    nn_optim *opt;
    job_kind kind;
    double bc1, bc2; /* step: the bias corrections */
    double scale;    /* scale: the clipping factor */
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
            switch (j->kind) {
            case JOB_ZERO:
                memset((char *)ag_grad(x) + a * es, 0, (b - a) * es);
                break;
            case JOB_SCALE:
                scale_grad(x, a, b, j->scale);
                break;
            case JOB_STEP:
                if (c->kind == NN_SGD)
                    sgd_tensor(c, x, a, b, s);
                else
                    adam_tensor(c, x, a, b, s, s + o->total, j->bc1, j->bc2);
                break;
            }
        }
        start = end;
    }
}

/* ------------------------------------------------ threads
 * ag_parallel_for gives a range one thread per 16k of its length (the
 * engine's cost model), a length that counts the elements of a plain pass:
 * the gradients' norm, the zeroing, a plain SGD step, which are limited by
 * memory, so W1's 23,860 parameters stay on the calling thread and W2's
 * 269,322 are split. A step that costs more per element runs over a range
 * `weight` times longer, each chunk mapped back to elements, so that it
 * gets the threads its arithmetic pays for. The weights are the measured
 * costs per element over a plain step's, single-threaded on W2's
 * parameters (f32, AMD EPYC Zen 4): norm + plain SGD step 0.35 ns, with
 * momentum 1.0, Adam 5.2 (a pass with an exp per element gains from 16
 * threads from 64 elements each: bench/calibrate). */
enum { WEIGHT_PLAIN = 1, WEIGHT_MOMENTUM = 4, WEIGHT_ADAM = 16 };

typedef struct {
    ag_range_fn fn;
    void *ctx;
    size_t n, weight;
} weighted_job;

/* The element where position v of the longer range falls, chunk edges
 * kept on 64-byte lines (16 f32) so that no two threads share one. */
static size_t weighted_elem(const weighted_job *w, size_t v)
{
    size_t e = (v / w->weight + (v % w->weight != 0) + 15) / 16 * 16;
    return e < w->n ? e : w->n;
}

static void weighted_range(void *ctx, size_t lo, size_t hi)
{
    const weighted_job *w = ctx;
    size_t a = weighted_elem(w, lo), b = weighted_elem(w, hi);
    if (a < b)
        w->fn(w->ctx, a, b);
}

static void parallel_weighted(ag_tape *t, size_t n, size_t weight, ag_range_fn fn, void *ctx)
{
    if (weight <= 1 || n > SIZE_MAX / weight) {
        ag_parallel_for(t, n, fn, ctx);
        return;
    }
    weighted_job w = {fn, ctx, n, weight};
    ag_parallel_for(t, n * weight, weighted_range, &w);
}

static size_t step_weight(const nn_optim_config *c)
{
    if (c->kind != NN_SGD)
        return WEIGHT_ADAM;
    return c->momentum == 0 && c->weight_decay == 0 ? WEIGHT_PLAIN : WEIGHT_MOMENTUM;
}

/* ------------------------------------------------ the gradients' norm */

/* Σ g² of n values, in double. Eight partial sums in a fixed pattern let
 * the loop vectorise and keep its result the same on every call. */
NN_TARGET_CLONES
static double sumsq_f32(const float *g, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        double v[8];
        for (size_t k = 0; k < 8; k++)
            v[k] = (double)g[i + k];
        for (size_t k = 0; k < 8; k++)
            acc[k] += v[k] * v[k];
    }
    for (; i < n; i++)
        acc[0] += (double)g[i] * (double)g[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

NN_TARGET_CLONES
static double sumsq_f64(const double *g, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++)
            acc[k] += g[i + k] * g[i + k];
    for (; i < n; i++)
        acc[0] += g[i] * g[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Σ g² over elements [a, b) of x's gradient. */
static double grad_sumsq(const ag_tensor *x, size_t a, size_t b)
{
    if (ag_tensor_dtype(x) == AG_F32)
        return sumsq_f32((const float *)ag_grad(x) + a, b - a);
    return sumsq_f64((const double *)ag_grad(x) + a, b - a);
}

/* Σ g² over elements [lo, hi) of the whole range, tensor by tensor. */
static double range_sumsq(const nn_optim *o, size_t lo, size_t hi)
{
    double sum = 0;
    size_t start = 0;
    for (size_t i = 0; i < o->n && start < hi; i++) {
        size_t end = start + ag_tensor_numel(o->params[i]);
        if (end > lo)
            sum += grad_sumsq(o->params[i], lo > start ? lo - start : 0,
                              (hi < end ? hi : end) - start);
        start = end;
    }
    return sum;
}

/* Fills block_ss for every block that starts in [lo, hi): a block is
 * summed whole by one chunk, whatever the chunks are. */
static void norm_range(void *ctx, size_t lo, size_t hi)
{
    nn_optim *o = ctx;
    for (size_t b = lo / NORM_BLOCK + (lo % NORM_BLOCK != 0); b * NORM_BLOCK < hi; b++) {
        size_t s = b * NORM_BLOCK, e = o->total - s > NORM_BLOCK ? s + NORM_BLOCK : o->total;
        o->block_ss[b] = range_sumsq(o, s, e);
    }
}

/* The first gradient element that is NaN or infinite, in parameter order:
 * its parameter *p, index *k and value *v; false when every one is finite. */
static bool first_nonfinite(const nn_optim *o, size_t *p, size_t *k, double *v)
{
    for (size_t i = 0; i < o->n; i++) {
        ag_dtype dt = ag_tensor_dtype(o->params[i]);
        const void *g = ag_grad(o->params[i]);
        for (size_t j = 0, n = ag_tensor_numel(o->params[i]); j < n; j++)
            if (!isfinite(nn__get(dt, g, j))) {
                *p = i;
                *k = j;
                *v = nn__get(dt, g, j);
                return true;
            }
    }
    return false;
}

/* The norm of finite f64 gradients whose squares overflow: scaled by the
 * largest |g| first, as hypot does (rare, so one plain pass). */
static double scaled_norm(const nn_optim *o)
{
    double m = 0, sum = 0;
    for (size_t i = 0; i < o->n; i++)
        for (size_t j = 0, n = ag_tensor_numel(o->params[i]); j < n; j++) {
            double a = fabs(nn__get(ag_tensor_dtype(o->params[i]), ag_grad(o->params[i]), j));
            m = a > m ? a : m;
        }
    for (size_t i = 0; i < o->n; i++)
        for (size_t j = 0, n = ag_tensor_numel(o->params[i]); j < n; j++) {
            double r = nn__get(ag_tensor_dtype(o->params[i]), ag_grad(o->params[i]), j) / m;
            sum += r * r;
        }
    return m * sqrt(sum);
}

/* Whether n values are all finite: the largest exponent field is not all
 * ones. Integer compares of the bits, so the loop vectorises and costs a
 * fraction of the step it guards. */
NN_TARGET_CLONES
static bool finite_f32(const float *g, size_t n)
{
    uint32_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &g[i], sizeof u);
        u &= 0x7f800000u;
        top = u > top ? u : top;
    }
    return top != 0x7f800000u;
}

NN_TARGET_CLONES
static bool finite_f64(const double *g, size_t n)
{
    uint64_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &g[i], sizeof u);
        u &= 0x7ff0000000000000u;
        top = u > top ? u : top;
    }
    return top != 0x7ff0000000000000u;
}

static bool grads_finite(const nn_optim *o)
{
    bool ok = true;
    for (size_t i = 0; ok && i < o->n; i++) {
        const ag_tensor *x = o->params[i];
        ok = ag_tensor_dtype(x) == AG_F32 ? finite_f32(ag_grad(x), ag_tensor_numel(x))
                                         : finite_f64(ag_grad(x), ag_tensor_numel(x));
    }
    return ok;
}

/* Measures the global norm into opt->grad_norm when clipping needs it
 * (else only checks that every gradient is finite: NaN is stored). Returns
 * false, with err filled, when a gradient is not finite and the step must
 * not run. */
static bool measure(nn_optim *opt, ag_tape *t, const char *fn, bool *finite, nn_error *err)
{
    double ss = NAN;
    *finite = true;
    if (opt->cfg.clip_norm > 0) {
        ag_parallel_for(t, opt->total, norm_range, opt);
        ss = 0;
        for (size_t b = 0, nb = opt->total / NORM_BLOCK + (opt->total % NORM_BLOCK != 0); b < nb; b++)
            ss += opt->block_ss[b]; /* in block order: the same sum for any thread count */
        opt->grad_norm = sqrt(ss);
        if (isfinite(ss))
            return true;
    } else {
        opt->grad_norm = NAN;
        if (grads_finite(opt))
            return true;
    }
    size_t p, k;
    double v;
    if (!first_nonfinite(opt, &p, &k, &v)) { /* finite f64 values whose squares overflow */
        opt->grad_norm = scaled_norm(opt);
        return true;
    }
    *finite = false;
    if (opt->cfg.allow_nonfinite)
        return true;
    char sh[NN_SHAPE_BUF];
    nn__fail(err, AG_ERR_NUMERIC, "%s: gradient of %s has %s at element %zu of %s; parameters "
             "left unchanged", fn, opt->names[p][0] ? opt->names[p] : "a parameter",
             isnan(v) ? "nan" : v > 0 ? "inf" : "-inf", k,
             ag_shape_str(opt->params[p], sh, sizeof sh));
    return false;
}

ag_status nn__optim_step(nn_optim *opt, ag_tape *t, const char *fn, nn_error *err)
{
    if (!opt)
        return nn__fail(err, AG_ERR_NULL, "%s: opt is NULL", fn);
    bool finite;
    if (!measure(opt, t, fn, &finite, err))
        return AG_ERR_NUMERIC;
    double clip = opt->cfg.clip_norm, norm = opt->grad_norm;
    if (clip > 0 && finite && norm + 1e-6 > clip) /* PyTorch's clip_grad_norm_ */
        ag_parallel_for(t, opt->total, optim_range,
                        &(optim_job){.opt = opt, .kind = JOB_SCALE, .scale = clip / (norm + 1e-6)});
    opt->steps++;
    double steps = (double)opt->steps;
    optim_job j = {.opt = opt, .kind = JOB_STEP, .bc1 = 1 - pow(opt->cfg.beta1, steps),
                   .bc2 = 1 - pow(opt->cfg.beta2, steps)};
    parallel_weighted(t, opt->total, step_weight(&opt->cfg), optim_range, &j);
    return nn__ok(err);
}

void nn__optim_zero_grad(nn_optim *opt, ag_tape *t)
{
    if (opt)
        ag_parallel_for(t, opt->total, optim_range, &(optim_job){.opt = opt, .kind = JOB_ZERO});
}

ag_status nn_optim_step(nn_optim *opt, nn_error *err)
{
    return nn__optim_step(opt, NULL, "nn_optim_step", err);
}

void nn_optim_zero_grad(nn_optim *opt) { nn__optim_zero_grad(opt, NULL); }

double nn_optim_grad_norm(const nn_optim *opt) { return opt ? opt->grad_norm : NAN; }
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

/* ------------------------------------------------ checkpoints
 * What nn_checkpoint_save reads and nn_checkpoint_load restores (see
 * nn_internal.h): the configuration, the step count and the state. */

/* State values per parameter element: m and v, a momentum buffer, or none. */
static size_t state_per_element(const nn_optim_config *c)
{
    return c->kind != NN_SGD ? 2 : c->momentum > 0 ? 1 : 0;
}

const nn_optim_config *nn__optim_config(const nn_optim *opt) { return &opt->cfg; }

const double *nn__optim_state(const nn_optim *opt, size_t *n)
{
    *n = state_per_element(&opt->cfg) * opt->total;
    return opt->state;
}

bool nn__optim_updates(const nn_optim *opt, const nn_param *params, size_t n)
{
    if (n != opt->n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (params[i].tensor != opt->params[i])
            return false;
    return true;
}

ag_status nn__optim_check_restore(const nn_optim *opt, const nn_optim_config *cfg,
                                  size_t n_state, const char *fn, nn_error *err)
{
    ag_status s = check_config(fn, cfg, err);
    if (s != AG_OK)
        return s;
    static const char *const kinds[] = {"SGD", "Adam", "AdamW"};
    if (cfg->kind != opt->cfg.kind)
        return nn__fail(err, AG_ERR_VALUE, "%s: the checkpoint's optimizer is %s, this one %s", fn,
                        kinds[cfg->kind], kinds[opt->cfg.kind]);
    size_t have = state_per_element(&opt->cfg) * opt->total;
    if (n_state != state_per_element(cfg) * opt->total || n_state != have)
        return nn__fail(err, AG_ERR_VALUE, "%s: the checkpoint holds %zu optimizer state values, "
                        "this optimizer %zu (SGD with and without momentum differ)", fn, n_state,
                        have);
    return AG_OK;
}

void nn__optim_restore(nn_optim *opt, const nn_optim_config *cfg, size_t steps,
                       const double *state)
{
    opt->cfg = *cfg;
    opt->steps = steps;
    opt->grad_norm = NAN;
    memcpy(opt->state, state, state_per_element(cfg) * opt->total * sizeof *state);
}
