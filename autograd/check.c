/* check.c: gradient checking by central finite differences, and allclose. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
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
            ag__error(g->tape, AG_ERR_NULL, "ag_gradcheck: fn returned NULL without an error");
        return NULL;
    }
    if (y->numel == 1)
        return y;
    if (!g->proj) {
        ag_rng rng;
        ag_rng_seed(&rng, 0x5eed);
        g->proj = ag_rand_normal(AG_F64, y->shape, y->rank, 0, 1, &rng);
        if (!g->proj) {
            ag__error(g->tape, AG_ERR_NOMEM, "ag_gradcheck: out of memory");
            return NULL;
        }
    }
    return ag_sum(g->tape, ag_mul(g->tape, y, g->proj));
}

static double gc_value(gc_run *g, ag_status *s)
{
    bool was = ag_tape_set_recording(g->tape, false);
    ag_tensor *L = gc_loss(g);
    ag_tape_set_recording(g->tape, was);
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

static ag_status gc_check_args(ag_fn fn, size_t n, ag_tensor *const *inputs, ag_gradcheck_report *rep)
{
    if (!fn)
        return gc_fail(rep, AG_ERR_NULL, "ag_gradcheck: fn is NULL");
    if (n && !inputs)
        return gc_fail(rep, AG_ERR_NULL, "ag_gradcheck: inputs is NULL");
    for (size_t i = 0; i < n; i++) {
        if (!inputs[i])
            return gc_fail(rep, AG_ERR_NULL, "ag_gradcheck: input %zu is NULL", i + 1);
        if (inputs[i]->dtype != AG_F64)
            return gc_fail(rep, AG_ERR_DTYPE,
                           "ag_gradcheck: input %zu is %s: the check runs in f64 (central "
                           "differences in f32 keep only a few digits); check an f64 copy",
                           i + 1, ag_dtype_name(inputs[i]->dtype));
        if (inputs[i]->origin == AG_TAPE)
            return gc_fail(rep, AG_ERR_STATE,
                           "ag_gradcheck: input %zu is an op result; the inputs must be leaves",
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

ag_status ag_gradcheck(ag_fn fn, void *ctx, size_t n_inputs, ag_tensor *const *inputs,
                       double eps, double atol, double rtol, ag_gradcheck_report *report)
{
    if (!report)
        return AG_ERR_NULL;
    memset(report, 0, sizeof *report);
    ag_status s = gc_check_args(fn, n_inputs, inputs, report);
    if (s != AG_OK)
        return s;
    report->passed = true;
    size_t bytes = n_inputs * sizeof(gc_input);
    gc_input *in = n_inputs ? ag__calloc(bytes) : NULL;
    gc_run g = {fn, ctx, n_inputs, inputs, NULL, ag_tape_new()};
    if (!g.tape || (n_inputs && !in))
        s = AG_ERR_NOMEM;
    size_t tried = 0; /* inputs gc_prepare saw: only those are restored */
    for (size_t i = 0; s == AG_OK && i < n_inputs; i++, tried++)
        s = gc_prepare(inputs[i], &in[i]);
    ag_tensor *L = s == AG_OK ? gc_loss(&g) : NULL;
    if (s == AG_OK)
        s = L ? ag_backward(g.tape, L) : ag_tape_status(g.tape);
    for (size_t i = 0; s == AG_OK && i < n_inputs; i++)
        if (inputs[i]->numel)
            memcpy(in[i].analytic, inputs[i]->grad, inputs[i]->numel * sizeof(double));
    if (s == AG_OK)
        s = gc_numeric(&g, in, eps > 0 ? eps : 1e-6, atol, rtol, report);
    /* last first: an input given twice gets back what its first slot saved */
    for (size_t i = tried; in && i-- > 0;)
        gc_restore(inputs[i], &in[i]);
    ag__free(in, bytes);
    ag_tensor_free(g.proj);
    if (s != AG_OK) {
        report->passed = false;
        if (g.tape && ag_tape_status(g.tape) != AG_OK)
            gc_fail(report, s, "ag_gradcheck: fn failed: %s", ag_tape_error(g.tape));
        else
            gc_fail(report, s, "ag_gradcheck: %s", ag_status_string(s));
    }
    ag_tape_free(g.tape);
    return s;
}

static double element(ag_dtype dt, const void *p, size_t i)
{
    return dt == AG_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

bool ag_allclose(ag_dtype dt, size_t n, const void *a, const void *b,
                 double rtol, double atol, ag_close_report *report)
{
    ag_close_report rep = {0};
    bool close = ag_dtype_size(dt) != 0 && (n == 0 || (a && b));
    for (size_t i = 0; close && i < n; i++) {
        double x = element(dt, a, i), y = element(dt, b, i), err = fabs(x - y);
        /* NaN counts as worst, and once recorded nothing replaces it */
        if (i == 0 || (rep.max_abs_err == rep.max_abs_err && !(err <= rep.max_abs_err))) {
            rep = (ag_close_report){i, err, x, y};
        }
    }
    for (size_t i = 0; close && i < n; i++)
        close = fabs(element(dt, a, i) - element(dt, b, i)) <= atol + rtol * fabs(element(dt, b, i));
    if (report)
        *report = rep;
    return close;
}
