/* check.c: gradient checking by central finite differences, and allclose. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;  /* "ag_gradcheck" or "ag_gradgradcheck", for messages */
    ag_fn fn;
    void *ctx;
    size_t n;
    ag_tensor *const *inputs;
    ag_tensor *proj;   /* the fixed random r of Σ r·y for non-scalar outputs */
    ag_tape *tape;
} gc_run;

/* Runs fn on a fresh tape and reduces its output to a scalar. */
static ag_tensor *gc_loss(gc_run *g)
{
    ag_tape_reset(g->tape);
    ag_tensor *y = g->fn(g->tape, g->inputs, g->ctx);
    if (!y) {
        if (ag_tape_status(g->tape) == AG_OK)
            ag__error(g->tape, AG_ERR_NULL, "%s: fn returned NULL without an error", g->name);
        return NULL;
    }
    if (y->numel == 1)
        return y;
    if (!g->proj) {
        ag_rng rng;
        ag_rng_seed(&rng, 0x5eed);
        g->proj = ag_rand_normal(AG_F64, y->shape, y->rank, 0, 1, &rng);
        if (!g->proj) {
            ag__error(g->tape, AG_ERR_NOMEM, "%s: out of memory", g->name);
            return NULL;
        }
    }
    return ag_sum(g->tape, ag_mul(g->tape, y, g->proj));
}

/* fn's value. The tape records: fn may take gradients itself (a gradient
 * penalty), which needs the records of its own forward. */
static double gc_value(gc_run *g, ag_status *s)
{
    ag_tensor *L = gc_loss(g);
    *s = ag_tape_status(g->tape);
    return L ? ag_item(L) : NAN;
}

static void gc_compare(ag_gradcheck_report *rep, size_t input, size_t index, double num, double ana,
                       double atol, double rtol, double *worst)
{
    double err = fabs(num - ana), scale = fmax(fabs(num), fabs(ana));
    double rel = scale > 0 ? err / scale : 0, over = err == 0 ? 0 : err / (atol + rtol * fabs(num));
    if (!(err <= atol + rtol * fabs(num)))
        rep->passed = false;
    rep->max_abs_err = fmax(rep->max_abs_err, err);
    rep->max_rel_err = fmax(rep->max_rel_err, rel);
    /* NaN counts as worst, and once worst is NaN nothing replaces it */
    if (rep->checked == 0 || (*worst == *worst && !(over <= *worst))) {
        *worst = over;
        rep->worst_input = input;
        rep->worst_index = index;
        rep->numeric = num;
        rep->analytic = ana;
    }
    rep->checked++;
}

/* Per input: its requires_grad flag, its grad before the check, and the
 * analytic gradient the check computed. */
typedef struct {
    bool requires_grad;
    double *saved_grad, *analytic;
} gc_input;

/* Finite differences for every element, against the analytic grads. */
static ag_status gc_numeric(gc_run *g, const gc_input *in, double eps, double atol, double rtol,
                            ag_gradcheck_report *rep)
{
    double worst = 0;
    for (size_t i = 0; i < g->n; i++) {
        double *x = g->inputs[i]->data;
        for (size_t j = 0; j < g->inputs[i]->numel; j++) {
            ag_status s1, s2;
            double orig = x[j];
            x[j] = orig + eps;
            double up = gc_value(g, &s1);
            x[j] = orig - eps;
            double down = gc_value(g, &s2);
            x[j] = orig;
            if (s1 != AG_OK || s2 != AG_OK)
                return s1 != AG_OK ? s1 : s2;
            gc_compare(rep, i, j, (up - down) / (2 * eps), in[i].analytic[j], atol, rtol, &worst);
        }
    }
    return AG_OK;
}

/* Why the check cannot run, into the report; returns s. */
static ag_status gc_fail(ag_gradcheck_report *rep, ag_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static ag_status gc_fail(ag_gradcheck_report *rep, ag_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->message, sizeof rep->message, fmt, ap);
    va_end(ap);
    return s;
}

static ag_status gc_check_args(const char *name, ag_fn fn, size_t n, ag_tensor *const *inputs,
                               ag_gradcheck_report *rep)
{
    if (!fn)
        return gc_fail(rep, AG_ERR_NULL, "%s: fn is NULL", name);
    if (n && !inputs)
        return gc_fail(rep, AG_ERR_NULL, "%s: inputs is NULL", name);
    for (size_t i = 0; i < n; i++) {
        if (!inputs[i])
            return gc_fail(rep, AG_ERR_NULL, "%s: input %zu is NULL", name, i + 1);
        if (inputs[i]->dtype != AG_F64)
            return gc_fail(rep, AG_ERR_DTYPE,
                           "%s: input %zu is %s: the check runs in f64 (central "
                           "differences in f32 keep only a few digits); check an f64 copy",
                           name, i + 1, ag_dtype_name(inputs[i]->dtype));
        if (inputs[i]->origin == AG_TAPE)
            return gc_fail(rep, AG_ERR_STATE,
                           "%s: input %zu is an op result; the inputs must be leaves", name,
                           i + 1);
    }
    return AG_OK;
}

static ag_status gc_prepare(ag_tensor *x, gc_input *in)
{
    size_t bytes = x->numel * sizeof(double);
    in->requires_grad = x->requires_grad;
    if (ag_set_requires_grad(x, true) != AG_OK)
        return AG_ERR_NOMEM;
    in->saved_grad = ag__alloc(bytes);
    in->analytic = ag__alloc(bytes);
    if (bytes && (!in->saved_grad || !in->analytic)) {
        ag__free(in->saved_grad, bytes); /* holds no copy yet: not to be restored */
        in->saved_grad = NULL;
        return AG_ERR_NOMEM;
    }
    if (bytes)
        memcpy(in->saved_grad, x->grad, bytes);
    ag_zero_grad(x);
    return AG_OK;
}

static void gc_restore(ag_tensor *x, gc_input *in)
{
    size_t bytes = x->numel * sizeof(double);
    if (in->saved_grad && x->grad)
        memcpy(x->grad, in->saved_grad, bytes);
    x->requires_grad = in->requires_grad;
    ag__free(in->saved_grad, bytes);
    ag__free(in->analytic, bytes);
}

/* The first-order check's comparison: backward against differences of the
 * value. */
static ag_status first_order(gc_run *g, gc_input *in, double eps, double atol, double rtol,
                             ag_gradcheck_report *rep)
{
    ag_tensor *L = gc_loss(g);
    ag_status s = L ? ag_backward(g->tape, L) : ag_tape_status(g->tape);
    for (size_t i = 0; s == AG_OK && i < g->n; i++)
        if (g->inputs[i]->numel)
            memcpy(in[i].analytic, g->inputs[i]->grad, g->inputs[i]->numel * sizeof(double));
    return s == AG_OK ? gc_numeric(g, in, eps, atol, rtol, rep) : s;
}

/* Every gradient element into buf (consecutive inputs), by the fused
 * backward of fn at the inputs' current values. */
static ag_status gradient_at(gc_run *g, double *buf)
{
    ag_tensor *L = gc_loss(g), **grads = ag__arena_alloc(g->tape, g->n * sizeof *grads);
    if (!L || !grads || ag_gradients(g->tape, L, g->n, g->inputs, grads, 0) != AG_OK)
        return ag_tape_status(g->tape);
    for (size_t i = 0; i < g->n; i++, buf += g->inputs[i - 1]->numel)
        if (g->inputs[i]->numel) /* an empty input's buffers may be NULL */
            memcpy(buf, grads[i]->data, g->inputs[i]->numel * sizeof(double));
    return AG_OK;
}

/* Row e of the Hessian by the recorded backward: the gradient of gradient
 * element e (input i, index j), into in[k].analytic for every input k. */
static ag_status hessian_row(gc_run *g, gc_input *in, size_t i, size_t j)
{
    ag_tape *t = g->tape;
    ag_tensor *L = gc_loss(g), **grads = ag__arena_alloc(t, 2 * g->n * sizeof *grads);
    ag_tensor **rows = grads ? grads + g->n : NULL;
    if (!L || !grads || ag_gradients(t, L, g->n, g->inputs, grads, AG_CREATE_GRAPH) != AG_OK)
        return ag_tape_status(t);
    size_t numel = g->inputs[i]->numel;
    ag_tensor *e = ag_sum(t, ag_slice(t, ag_reshape(t, grads[i], &numel, 1), 0, j, j + 1));
    for (size_t k = 0; k < g->n; k++)
        if (g->inputs[k]->numel)
            memset(in[k].analytic, 0, g->inputs[k]->numel * sizeof(double));
    if (!e || !ag_requires_grad(e)) /* gradient element e is constant: a zero row */
        return ag_tape_status(t);
    if (ag_gradients(t, e, g->n, g->inputs, rows, 0) != AG_OK)
        return ag_tape_status(t);
    for (size_t k = 0; k < g->n; k++)
        if (g->inputs[k]->numel)
            memcpy(in[k].analytic, rows[k]->data, g->inputs[k]->numel * sizeof(double));
    return AG_OK;
}

/* The second-order check: for every input element e, the central
 * difference of the whole gradient under e against the recorded
 * backward's derivative of gradient element e (the Hessian is symmetric). */
static ag_status second_order(gc_run *g, gc_input *in, double eps, double atol, double rtol,
                              ag_gradcheck_report *rep)
{
    size_t total = 0;
    for (size_t i = 0; i < g->n; i++)
        total += g->inputs[i]->numel;
    double *up = ag__alloc(2 * total * sizeof *up), *down = up ? up + total : NULL, worst = 0;
    ag_status s = total && !up ? AG_ERR_NOMEM : AG_OK;
    for (size_t i = 0; s == AG_OK && i < g->n; i++) {
        double *x = g->inputs[i]->data;
        for (size_t j = 0; s == AG_OK && j < g->inputs[i]->numel; j++) {
            double orig = x[j];
            x[j] = orig + eps;
            s = gradient_at(g, up);
            x[j] = orig - eps;
            if (s == AG_OK)
                s = gradient_at(g, down);
            x[j] = orig;
            if (s == AG_OK)
                s = hessian_row(g, in, i, j);
            for (size_t k = 0, at = 0; s == AG_OK && k < g->n; k++)
                for (size_t m = 0; m < g->inputs[k]->numel; m++, at++)
                    gc_compare(rep, k, m, (up[at] - down[at]) / (2 * eps), in[k].analytic[m],
                               atol, rtol, &worst);
        }
    }
    ag__free(up, 2 * total * sizeof *up);
    return s;
}

typedef ag_status (*gc_body)(gc_run *g, gc_input *in, double eps, double atol, double rtol,
                             ag_gradcheck_report *rep);

/* Sets up a check (inputs made to require grad, their grads saved), runs
 * its body, and restores the inputs whatever happened. */
static ag_status check_run(const char *name, gc_body body, ag_fn fn, void *ctx, size_t n_inputs,
                           ag_tensor *const *inputs, double eps, double atol, double rtol,
                           ag_gradcheck_report *report)
{
    if (!report)
        return AG_ERR_NULL;
    memset(report, 0, sizeof *report);
    ag_status s = gc_check_args(name, fn, n_inputs, inputs, report);
    if (s != AG_OK)
        return s;
    report->passed = true;
    size_t bytes = n_inputs * sizeof(gc_input);
    gc_input *in = n_inputs ? ag__calloc(bytes) : NULL;
    gc_run g = {name, fn, ctx, n_inputs, inputs, NULL, ag_tape_new()};
    if (!g.tape || (n_inputs && !in))
        s = AG_ERR_NOMEM;
    size_t tried = 0; /* inputs gc_prepare saw: only those are restored */
    for (size_t i = 0; s == AG_OK && i < n_inputs; i++, tried++)
        s = gc_prepare(inputs[i], &in[i]);
    if (s == AG_OK)
        s = body(&g, in, eps > 0 ? eps : 1e-6, atol, rtol, report);
    /* last first: an input given twice gets back what its first slot saved */
    for (size_t i = tried; in && i-- > 0;)
        gc_restore(inputs[i], &in[i]);
    ag__free(in, bytes);
    ag_tensor_free(g.proj);
    if (s != AG_OK) {
        report->passed = false;
        if (g.tape && ag_tape_status(g.tape) != AG_OK)
            gc_fail(report, s, "%s: fn failed: %s", name, ag_tape_error(g.tape));
        else
            gc_fail(report, s, "%s: %s", name, ag_status_string(s));
    }
    ag_tape_free(g.tape);
    return s;
}

ag_status ag_gradcheck(ag_fn fn, void *ctx, size_t n_inputs, ag_tensor *const *inputs,
                       double eps, double atol, double rtol, ag_gradcheck_report *report)
{
    return check_run("ag_gradcheck", first_order, fn, ctx, n_inputs, inputs, eps, atol, rtol,
                     report);
}

ag_status ag_gradgradcheck(ag_fn fn, void *ctx, size_t n_inputs, ag_tensor *const *inputs,
                           double eps, double atol, double rtol, ag_gradcheck_report *report)
{
    return check_run("ag_gradgradcheck", second_order, fn, ctx, n_inputs, inputs, eps, atol, rtol,
                     report);
}

bool ag_allclose(ag_dtype dt, size_t n, const void *a, const void *b,
                 double rtol, double atol, ag_close_report *report)
{
    ag_close_report rep = {0};
    bool close = ag_dtype_size(dt) != 0 && (n == 0 || (a && b));
    for (size_t i = 0; close && i < n; i++) {
        double x = ag__elem(dt, a, i), y = ag__elem(dt, b, i), err = fabs(x - y);
        /* NaN counts as worst, and once recorded nothing replaces it */
        if (i == 0 || (rep.max_abs_err == rep.max_abs_err && !(err <= rep.max_abs_err))) {
            rep = (ag_close_report){i, err, x, y};
        }
    }
    for (size_t i = 0; close && i < n; i++)
        close = fabs(ag__elem(dt, a, i) - ag__elem(dt, b, i)) <= atol + rtol * fabs(ag__elem(dt, b, i));
    if (report)
        *report = rep;
    return close;
}
