/* graph.c: gradients as tensors on the tape, and gradients of gradients.
 * With AG_CREATE_GRAPH the backward pass runs each op's grad_graph, its
 * backward written in the engine's own ops, so the gradients are recorded
 * like any result and can be differentiated again, to any order. */
#include "internal.h"

#include <string.h>

ag_tensor *ag__tape_tensor(ag_tape *t, ag_dtype dt, const size_t *shape, size_t rank)
{
    size_t numel, bytes;
    if (!ag__numel(shape, rank, &numel) || !ag__mul_size(numel, AG_DTYPE_SIZE(dt), &bytes)) {
        ag__error(t, AG_ERR_OVERFLOW, "a constant's size overflows");
        return NULL;
    }
    ag_tensor *x = ag__arena_alloc(t, sizeof *x);
    void *data = x ? ag__arena_alloc(t, bytes) : NULL;
    if (!data)
        return NULL;
    memset(x, 0, sizeof *x);
    x->dtype = dt;
    x->origin = AG_TAPE;
    x->rank = rank;
    if (rank)
        memcpy(x->shape, shape, rank * sizeof *shape);
    x->numel = numel;
    x->data = data;
    x->tape = t;
    x->stamp = t->stamp;
    return x;
}

ag_tensor *ag__sum_to(ag_tape *t, ag_tensor *g, const ag_tensor *x)
{
    if (!g)
        return NULL;
    if (g->rank == x->rank && memcmp(g->shape, x->shape, x->rank * sizeof *x->shape) == 0)
        return g;
    int axes[AG_MAX_RANK];
    size_t n = 0, lead = g->rank - x->rank;
    for (size_t d = 0; d < g->rank; d++)
        if (d < lead || (x->shape[d - lead] == 1 && g->shape[d] != 1))
            axes[n++] = (int)d;
    ag_tensor *s = n ? ag_sum_axes(t, g, axes, n, true) : g;
    return ag_reshape(t, s, x->shape, x->rank);
}

/* A tensor of x's shape filled with v. */
static ag_tensor *filled_like(ag_tape *t, const ag_tensor *x, double v)
{
    ag_tensor *c = ag__tape_tensor(t, x->dtype, x->shape, x->rank);
    AG_DISPATCH(x->dtype, T, {
        for (size_t i = 0; c && i < c->numel; i++)
            ((T *)c->data)[i] = (T)v;
    });
    return c;
}

/* The gradients collected for the wanted tensors that are leaves. */
typedef struct {
    ag_tensor *const *x;
    ag_tensor **g;
    size_t n;
} wanted;

static bool is_wanted(const wanted *w, const ag_tensor *x)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->x[i] == x)
            return true;
    return false;
}

/* Adds the gradient contribution d to x's: an op result keeps its running
 * sum in work for this pass, a wanted leaf in w. */
static ag_status accumulate(ag_tape *t, ag_tensor *x, ag_tensor *d, wanted *w)
{
    if (x->origin == AG_TAPE) {
        bool first = x->work_pass != t->pass;
        x->work = first ? d : ag_add(t, (ag_tensor *)x->work, d);
        x->work_pass = t->pass;
        return t->status;
    }
    for (size_t i = 0; i < w->n; i++)
        if (w->x[i] == x)
            w->g[i] = w->g[i] ? ag_add(t, w->g[i], d) : d;
    return t->status;
}

/* Runs the recorded backward of the records [0, end) in reverse. */
static ag_status graph_replay(ag_tape *t, size_t end, wanted *w)
{
    for (size_t k = end; k-- > 0;) {
        ag_record r = t->recs[k]; /* a copy: the ops below append records */
        if (r.out->work_pass != t->pass || r.out->numel == 0)
            continue;
        bool need[AG_MAX_INPUTS] = {false}, any = false;
        for (int i = 0; i < r.def->arity; i++) {
            const ag_tensor *x = r.in[i];
            need[i] = x->requires_grad && x->numel && (x->origin == AG_TAPE || is_wanted(w, x));
            any |= need[i];
        }
        if (!any)
            continue;
        if (!r.def->grad_graph)
            return ag__error(t, AG_ERR_STATE, "ag_gradients: ag_%s has no recorded backward",
                             r.def->name);
        ag_tensor *gin[AG_MAX_INPUTS] = {NULL};
        if (r.def->grad_graph(t, &r, (ag_tensor *)r.out->work, need, gin) != AG_OK)
            return t->status;
        for (int i = 0; i < r.def->arity; i++)
            if (need[i] && gin[i] && accumulate(t, r.in[i], gin[i], w) != AG_OK)
                return t->status;
    }
    return t->status;
}

/* The gradients of y as recorded ops, into grads. */
static ag_status graph_gradients(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                                 ag_tensor **grads)
{
    size_t end = t->n_recs;
    t->pass++;
    wanted w = {inputs, grads, n};
    ag_tensor *seed = filled_like(t, y, 1);
    if (!seed || accumulate(t, y, seed, &w) != AG_OK)
        return t->status;
    ag_status s = y->origin == AG_TAPE ? graph_replay(t, end, &w) : AG_OK;
    for (size_t i = 0; s == AG_OK && i < n; i++) {
        ag_tensor *x = inputs[i];
        if (x->origin == AG_TAPE)
            grads[i] = x->work_pass == t->pass ? x->work : NULL;
        if (!grads[i] && !(grads[i] = filled_like(t, x, 0)))
            s = t->status;
    }
    /* work held tensors in this pass; the fused backward keeps buffers there */
    for (size_t k = 0; k < end; k++)
        if (t->recs[k].out->work_pass == t->pass)
            t->recs[k].out->work = NULL, t->recs[k].out->work_pass = 0;
    return s;
}

/* The gradients of y by the fused kernels, into new tape tensors. */
static ag_status fused_gradients(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                                 ag_tensor **grads)
{
    void **bufs = ag__arena_alloc(t, n * sizeof *bufs);
    if (n && !bufs)
        return t->status;
    for (size_t i = 0; i < n; i++) {
        if (!(grads[i] = filled_like(t, inputs[i], 0)))
            return t->status;
        bufs[i] = grads[i]->data;
    }
    t->want = inputs;
    t->want_buf = bufs;
    t->n_want = n;
    ag_tensor *one = filled_like(t, y, 1);
    ag_status s = one ? ag__backward_run(t, y, one->data) : t->status;
    t->want = NULL;
    for (size_t i = 0; s == AG_OK && i < n; i++) { /* wanted op results: their work buffer */
        if (inputs[i]->origin == AG_TAPE && inputs[i]->work_pass == t->pass)
            memcpy(grads[i]->data, inputs[i]->work, grads[i]->numel * AG_DTYPE_SIZE(grads[i]->dtype));
        for (size_t j = 0; j < i; j++) /* a leaf listed twice: its gradient went to the first */
            if (inputs[j] == inputs[i]) {
                memcpy(grads[i]->data, grads[j]->data, grads[i]->numel * AG_DTYPE_SIZE(grads[i]->dtype));
                break;
            }
    }
    return s;
}

static ag_status gradients_check(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                                 ag_tensor **grads)
{
    static const char fn[] = "ag_gradients";
    ag_status s = ag__backward_check(t, y, fn);
    if (s != AG_OK)
        return s;
    if (y->numel != 1) {
        char ys[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE, "%s: y %s has %zu elements; it must have one", fn,
                         ag__shape_str(y, ys, sizeof ys), y->numel);
    }
    if (n && (!inputs || !grads))
        return ag__error(t, AG_ERR_NULL, "%s: %s is NULL", fn, !inputs ? "inputs" : "grads");
    for (size_t i = 0; i < n; i++) {
        char arg[32];
        snprintf(arg, sizeof arg, "input %zu", i + 1);
        if (!ag__take(t, inputs[i], fn, arg))
            return t->status;
        if (!inputs[i]->requires_grad)
            return ag__error(t, AG_ERR_STATE, "%s: input %zu does not require grad", fn, i + 1);
        grads[i] = NULL;
    }
    return AG_OK;
}

ag_status ag_gradients(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                       ag_tensor **grads, unsigned flags)
{
    ag_status s = gradients_check(t, y, n, inputs, grads);
    if (s != AG_OK)
        return s;
    if (!(flags & AG_CREATE_GRAPH))
        return fused_gradients(t, y, n, inputs, grads);
    if (!t->recording)
        return ag__error(t, AG_ERR_STATE, "ag_gradients: AG_CREATE_GRAPH needs the tape to record");
    t->in_backward = true;
    s = graph_gradients(t, y, n, inputs, grads);
    t->in_backward = false;
    t->active = NULL;
    return s;
}

ag_status ag_hvp(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                 ag_tensor *const *v, ag_tensor **hv)
{
    static const char fn[] = "ag_hvp";
    if (!t)
        return AG_ERR_NULL;
    if (t->status == AG_OK && n && (!v || !hv))
        ag__error(t, AG_ERR_NULL, "%s: %s is NULL", fn, !v ? "v" : "hv");
    for (size_t i = 0; t->status == AG_OK && i < n; i++) {
        char arg[32], vs[AG_SHAPE_BUF], xs[AG_SHAPE_BUF];
        snprintf(arg, sizeof arg, "v[%zu]", i);
        char in_arg[32];
        snprintf(in_arg, sizeof in_arg, "input %zu", i + 1);
        if (ag__take(t, v[i], fn, arg) && inputs && ag__take(t, inputs[i], fn, in_arg) &&
            (v[i]->rank != inputs[i]->rank || v[i]->dtype != inputs[i]->dtype ||
             memcmp(v[i]->shape, inputs[i]->shape, v[i]->rank * sizeof *v[i]->shape) != 0))
            ag__error(t, AG_ERR_SHAPE, "%s: v[%zu] is %s %s, input %zu is %s %s", fn, i,
                      ag__shape_str(v[i], vs, sizeof vs), ag_dtype_name(v[i]->dtype), i + 1,
                      ag__shape_str(inputs[i], xs, sizeof xs), ag_dtype_name(inputs[i]->dtype));
    }
    if (t->status != AG_OK || ag_gradients(t, y, n, inputs, hv, AG_CREATE_GRAPH) != AG_OK)
        return t->status;
    ag_tensor *s = NULL; /* Σ_i <grad_i, v_i>, whose gradient is H v */
    for (size_t i = 0; i < n; i++) {
        ag_tensor *term = ag_sum(t, ag_mul(t, hv[i], v[i]));
        if (term && term->dtype != AG_F64) /* inputs of both dtypes: sum in f64 */
            term = ag_cast(t, term, AG_F64);
        s = s ? ag_add(t, s, term) : term;
    }
    if (!s || !s->requires_grad) { /* y is at most linear in the inputs */
        for (size_t i = 0; s && i < n; i++)
            hv[i] = filled_like(t, inputs[i], 0);
        return t->status;
    }
    return ag_gradients(t, s, n, inputs, hv, 0);
}

ag_status ag_hessian(ag_tape *t, ag_tensor *y, ag_tensor *x, ag_tensor **H)
{
    ag_tensor *g;
    if (!H)
        return t ? ag__error(t, AG_ERR_NULL, "ag_hessian: H is NULL") : AG_ERR_NULL;
    if (ag_gradients(t, y, 1, &x, &g, AG_CREATE_GRAPH) != AG_OK)
        return t ? t->status : AG_ERR_NULL;
    size_t N = x->numel;
    ag_tensor *flat = ag_reshape(t, g, &N, 1);
    if (!(*H = ag__tape_tensor(t, x->dtype, (size_t[]){N, N}, 2)))
        return t->status;
    size_t es = AG_DTYPE_SIZE(x->dtype);
    for (size_t k = 0; k < N; k++) { /* row k: the gradient of gradient element k */
        ag_tensor *gk = ag_sum(t, ag_slice(t, flat, 0, k, k + 1)), *row;
        if (gk && !gk->requires_grad) {
            memset((char *)(*H)->data + k * N * es, 0, N * es);
            continue;
        }
        if (ag_gradients(t, gk, 1, &x, &row, 0) != AG_OK)
            return t->status;
        memcpy((char *)(*H)->data + k * N * es, row->data, N * es);
    }
    return t->status;
}
