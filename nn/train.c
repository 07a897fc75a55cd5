/* train.c: the training step, evaluation, and the progress line. */
#define _POSIX_C_SOURCE 200809L /* fileno and isatty: C has no way to ask for a terminal */
#include "nn_internal.h"

#include <math.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define NN_HAVE_ISATTY 1
#endif

/* Copies the tape's error into err, prefixed with fn unless it names fn
 * already, and resets the tape. */
static ag_status tape_fail(ag_tape *t, const char *fn, nn_error *err)
{
    ag_status s = ag_tape_status(t);
    const char *msg = ag_tape_error(t);
    bool named = strncmp(msg, fn, strlen(fn)) == 0;
    nn__fail(err, s, "%s%s%s", named ? "" : fn, named ? "" : ": ", msg);
    ag_tape_reset(t);
    return s;
}

ag_tensor *nn_penalized_loss(nn_mlp *net, ag_tape *t, nn_cost cost, ag_tensor *x, ag_tensor *y,
                             double lambda)
{
    nn_tap taps[NN_MAX_LAYERS];
    ag_tensor *c = nn_loss(t, cost, nn_mlp_forward(net, t, x, taps, NN_MAX_LAYERS), y);
    if (!c || lambda == 0)
        return c;
    if (!(lambda > 0) || !isfinite(lambda)) {
        ag_tape_fail(t, AG_ERR_VALUE, "nn_penalized_loss: lambda %g must be finite and >= 0", lambda);
        return NULL;
    }
    /* ∂C/∂x = ∂C/∂z¹ · (W¹)ᵀ, z¹ = x·W¹ + b¹: recorded, so that the
     * penalty's own gradient (a second derivative of C) reaches W. */
    ag_tensor *dz;
    if (ag_gradients(t, c, 1, &taps[0].z, &dz, AG_CREATE_GRAPH) != AG_OK)
        return NULL;
    ag_tensor *dx = ag_matmul(t, dz, ag_transpose(t, nn_mlp_params(net, NULL)[0].tensor));
    return ag_add(t, c, ag_scale(t, ag_sum(t, ag_square(t, dx)), lambda));
}

/* The step after the loss c is built: backward, the optimizer step, reset. */
static ag_status step_on(ag_tape *t, nn_optim *opt, ag_tensor *c, const char *fn, double *loss,
                         nn_error *err)
{
    if (!c || ag_backward(t, c) != AG_OK)
        return tape_fail(t, fn, err);
    if (loss)
        *loss = ag_item(c);
    ag_status s = nn__optim_step(opt, t, fn, err); /* refuses non-finite gradients */
    ag_tape_reset(t);
    return s;
}

/* The arguments every training step checks; zeroes the grads when fine. */
static ag_status step_start(nn_mlp *net, ag_tape *t, nn_optim *opt, ag_tensor *y, const char *fn,
                            nn_error *err)
{
    if (!net || !t || !opt)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, !net ? "net" : !t ? "t" : "opt");
    if (ag_tape_status(t) != AG_OK || ag_tape_check_input(t, y, fn, "y") != AG_OK)
        return tape_fail(t, fn, err); /* y NULL, stale (made before a reset), freed */
    nn__optim_zero_grad(opt, t);
    return AG_OK;
}

ag_status nn_mlp_train_step(nn_mlp *net, ag_tape *t, nn_optim *opt, nn_cost cost,
                            ag_tensor *x, ag_tensor *y, double *loss, nn_error *err)
{
    const char *fn = "nn_mlp_train_step";
    ag_status s = step_start(net, t, opt, y, fn, err);
    if (s != AG_OK)
        return s;
    return step_on(t, opt, nn_loss(t, cost, nn_mlp_forward(net, t, x, NULL, 0), y), fn, loss, err);
}

ag_status nn_mlp_train_step_penalty(nn_mlp *net, ag_tape *t, nn_optim *opt, nn_cost cost,
                                    ag_tensor *x, ag_tensor *y, double lambda, double *loss,
                                    nn_error *err)
{
    const char *fn = "nn_mlp_train_step_penalty";
    ag_status s = step_start(net, t, opt, y, fn, err);
    if (s != AG_OK)
        return s;
    return step_on(t, opt, nn_penalized_loss(net, t, cost, x, y, lambda), fn, loss, err);
}

ag_status nn_mlp_hvp(nn_mlp *net, ag_tape *t, nn_cost cost, ag_tensor *x, ag_tensor *y,
                     const void *v, void *hv, nn_error *err)
{
    const char *fn = "nn_mlp_hvp";
    if (!net || !t || !v || !hv)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn,
                        !net ? "net" : !t ? "t" : !v ? "v" : "hv");
    size_t n, P = nn_mlp_param_count(net);
    const nn_param *p = nn_mlp_params(net, &n);
    ag_dtype dt = nn_mlp_spec(net)->dtype;
    ag_tensor *vt = ag_view(dt, &P, 1, (void *)v, NULL), *vs[2 * NN_MAX_LAYERS];
    ag_tensor *params[2 * NN_MAX_LAYERS], *out[2 * NN_MAX_LAYERS];
    size_t made = 0, off = 0;
    for (; vt && made < n; made++, off += ag_tensor_numel(params[made - 1])) {
        params[made] = p[made].tensor;
        vs[made] = ag_leaf_view(vt, off, ag_tensor_shape(params[made]), ag_tensor_rank(params[made]));
        if (!vs[made])
            break;
    }
    ag_status s = made < n ? nn__fail(err, AG_ERR_NOMEM, "%s: out of memory", fn) : AG_OK;
    if (s == AG_OK && ag_tape_status(t) == AG_OK) {
        ag_tensor *c = nn_loss(t, cost, nn_mlp_forward(net, t, x, NULL, 0), y);
        if (c)
            ag_hvp(t, c, n, params, vs, out);
    }
    if (s == AG_OK && ag_tape_status(t) != AG_OK)
        s = tape_fail(t, fn, err);
    size_t es = ag_dtype_size(dt);
    for (size_t k = 0, at = 0; s == AG_OK && k < n; at += ag_tensor_numel(params[k]), k++)
        memcpy((char *)hv + at * es, ag_data(out[k]), ag_tensor_numel(params[k]) * es);
    for (size_t k = 0; k < made; k++)
        ag_tensor_free(vs[k]);
    ag_tensor_free(vt);
    ag_tape_reset(t);
    return s == AG_OK ? nn__ok(err) : s;
}

/* The threshold for a single output: its activation at z = 0, so that the
 * class is 1 exactly when z >= 0 (the logit's sign): 0.5 after a sigmoid,
 * 0 for identity (logits, as NN_COST_BCE_LOGITS trains them) and the rest. */
static double output_threshold(const nn_mlp *net)
{
    const nn_spec *s = nn_mlp_spec(net);
    return s->acts[s->n_layers - 1] == NN_SIGMOID ? 0.5 : 0;
}

ag_status nn_mlp_accuracy(nn_mlp *net, ag_tape *t, ag_tensor *x, const ag_tensor *target,
                          double *acc, nn_error *err)
{
    const char *fn = "nn_mlp_accuracy";
    if (!net || !t)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, !net ? "net" : "t");
    if (ag_tape_status(t) != AG_OK || ag_tape_check_input(t, (ag_tensor *)target, fn, "target") != AG_OK)
        return tape_fail(t, fn, err);
    bool was = ag_tape_set_recording(t, false); /* inference: no records, no grads */
    ag_tensor *out = nn_mlp_forward(net, t, x, NULL, 0);
    ag_tape_set_recording(t, was);
    if (!out)
        return tape_fail(t, fn, err);
    ag_status s = nn_accuracy(out, target, output_threshold(net), acc, err);
    ag_tape_reset(t);
    return s;
}

/* ----------------------------------------------------------- progress */

void nn_progress_init(nn_progress *p, FILE *out, size_t epochs)
{
    if (!p)
        return;
    *p = (nn_progress){.out = out, .epochs = epochs};
#ifdef NN_HAVE_ISATTY
    p->tty = out && isatty(fileno(out));
#endif
}

/* The line's text, without '\r' or '\n'. */
static void progress_text(char *buf, size_t cap, const nn_progress *p, size_t epoch,
                          size_t samples, double seconds, double loss, double accuracy)
{
    size_t used = 0;
#define NN_APPEND(...)                                                        \
    do {                                                                      \
        int k_ = snprintf(buf + used, cap - used, __VA_ARGS__);               \
        used += k_ > 0 && (size_t)k_ < cap - used ? (size_t)k_ : cap - used - 1; \
    } while (0)
    if (p->epochs)
        NN_APPEND("epoch %zu/%zu  %zu samples", epoch, p->epochs, samples);
    else
        NN_APPEND("epoch %zu  %zu samples", epoch, samples);
    if (seconds > 0)
        NN_APPEND("  %.0f samples/s", (double)samples / seconds);
    if (!isnan(loss))
        NN_APPEND("  loss %.4g", loss);
    if (!isnan(accuracy))
        NN_APPEND("  acc %.2f%%", 100 * accuracy);
#undef NN_APPEND
}

ag_status nn_progress_epoch(nn_progress *p, size_t epoch, size_t samples, double seconds,
                            double loss, double accuracy)
{
    if (!p || !p->out)
        return AG_OK;
    char line[160];
    progress_text(line, sizeof line, p, epoch, samples, seconds, loss, accuracy);
    size_t len = strlen(line);
    if (p->tty) { /* redraw in place, blanking what is left of a longer line */
        int pad = p->width > len ? (int)(p->width - len) : 0;
        fprintf(p->out, "\r%s%*s", line, pad, "");
        p->width = len;
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
    return ferror(p->out) ? AG_ERR_IO : AG_OK;
}

ag_status nn_progress_end(nn_progress *p)
{
    if (!p || !p->out || !p->tty || !p->width)
        return AG_OK;
    fputc('\n', p->out);
    p->width = 0;
    fflush(p->out);
    return ferror(p->out) ? AG_ERR_IO : AG_OK;
}
