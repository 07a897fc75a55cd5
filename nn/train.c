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

ag_status nn_mlp_train_step(nn_mlp *net, ag_tape *t, nn_optim *opt, nn_cost cost,
                            ag_tensor *x, ag_tensor *y, double *loss, nn_error *err)
{
    const char *fn = "nn_mlp_train_step";
    if (!net || !t || !opt)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, !net ? "net" : !t ? "t" : "opt");
    if (ag_tape_status(t) != AG_OK || ag_tape_check_input(t, y, fn, "y") != AG_OK)
        return tape_fail(t, fn, err); /* y NULL, stale (made before a reset), freed */
    nn__optim_zero_grad(opt, t);
    ag_tensor *c = nn_loss(t, cost, nn_mlp_forward(net, t, x, NULL, 0), y);
    if (!c || ag_backward(t, c) != AG_OK)
        return tape_fail(t, fn, err);
    if (loss)
        *loss = ag_item(c);
    ag_status s = nn__optim_step(opt, t, fn, err); /* refuses non-finite gradients */
    ag_tape_reset(t);
    return s;
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
