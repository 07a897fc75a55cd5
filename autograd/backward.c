/* backward.c: replaying a tape in reverse to accumulate gradients. */
#include "internal.h"

#include <string.h>

void ag_retain_grad(ag_tensor *x)
{
    if (x && x->origin == AG_TAPE)
        x->retain_grad = true;
}

static void zero_bytes(void *ctx, size_t lo, size_t hi)
{
    memset((unsigned char *)ctx + lo, 0, hi - lo);
}

/* grad_target's answer for a leaf whose gradient nobody wants. */
static char not_wanted;
#define NOT_WANTED ((void *)&not_wanted)

/* The buffer that receives a leaf's gradient: its own grad, or when
 * ag_gradients asks for some leaves, theirs (NOT_WANTED for the rest). */
static void *leaf_target(const ag_tape *t, const ag_tensor *x)
{
    if (!t->want)
        return x->grad;
    for (size_t i = 0; i < t->n_want; i++)
        if (t->want[i] == x)
            return t->want_buf[i];
    return NOT_WANTED;
}

/* The buffer that receives x's gradient in the current pass: a leaf's
 * (see leaf_target), or an op result's work buffer, zeroed on first use in
 * this pass (by all threads when it is large). */
static void *grad_target(ag_tape *t, ag_tensor *x)
{
    if (x->origin != AG_TAPE)
        return leaf_target(t, x);
    if (x->work_pass != t->pass) {
        size_t bytes = x->numel * AG_DTYPE_SIZE(x->dtype);
        if (!x->work && !(x->work = ag__arena_alloc(t, bytes)))
            return NULL;
        if (bytes == sizeof(double))
            *(double *)x->work = 0; /* all-zero bits: 0 in either dtype */
        else
            ag__parallel_range(t, bytes, x->numel, zero_bytes, x->work);
        x->work_pass = t->pass;
    }
    return x->work;
}

static void add_into(ag_dtype dt, size_t n, void *dst, const void *src)
{
    if (dt == AG_F32)
        for (size_t i = 0; i < n; i++)
            ((float *)dst)[i] += ((const float *)src)[i];
    else
        for (size_t i = 0; i < n; i++)
            ((double *)dst)[i] += ((const double *)src)[i];
}

/* Keeps op result x's finished gradient for ag_grad (retain_grad). */
static bool retain(ag_tape *t, ag_tensor *x)
{
    size_t bytes = x->numel * ag_dtype_size(x->dtype);
    if (!x->grad && !(x->grad = ag__arena_zeros(t, bytes)))
        return false;
    add_into(x->dtype, x->numel, x->grad, x->work);
    return true;
}

static ag_status replay(ag_tape *t)
{
    for (size_t k = t->n_recs; k-- > 0;) {
        const ag_record *r = &t->recs[k];
        ag_tensor *out = r->out;
        if (out->work_pass != t->pass)
            continue; /* no gradient reached this result */
        if (out->retain_grad && !retain(t, out))
            return t->status;
        if (out->numel == 0)
            continue; /* an empty result passes no gradient back (see ag__apply) */
        t->active = r; /* an allocation failure names the op */
        const ag_op_def *def = r->def;
        void *gin[AG_MAX_INPUTS] = {NULL};
        for (int i = 0; i < def->arity; i++)
            if (r->in[i]->requires_grad && r->in[i]->numel) {
                void *p = grad_target(t, r->in[i]);
                if (!p)
                    return t->status;
                gin[i] = p == NOT_WANTED ? NULL : p;
            }
        if (!gin[0] && !gin[1] && !gin[2])
            continue; /* e.g. requires_grad was turned off after recording */
        if (def->backward(t, r, out->work, gin) != AG_OK)
            return t->status;
        for (int i = 0; t->checked && i < def->arity; i++) {
            static const char *what[] = {"backward: the gradient of input 1",
                                         "backward: the gradient of input 2",
                                         "backward: the gradient of input 3"};
            if (gin[i] && !ag__check_finite(t, r, r->in[i], gin[i], what[i]))
                return t->status;
        }
    }
    return t->status;
}

ag_status ag__backward_check(ag_tape *t, ag_tensor *y, const char *fn)
{
    if (!t)
        return AG_ERR_NULL;
    if (t->status != AG_OK)
        return t->status;
    if (!ag__take(t, y, fn, "tensor"))
        return t->status;
    if (!y->requires_grad)
        return ag__error(t, AG_ERR_STATE,
                         "%s: tensor does not require grad (no recorded input requires grad, "
                         "or recording is off)", fn);
    return AG_OK;
}

ag_status ag__backward_run(ag_tape *t, ag_tensor *y, const void *seed)
{
    t->pass++;
    void *g = grad_target(t, y);
    if (!g && y->numel)
        return t->status;
    if (g != NOT_WANTED)
        add_into(y->dtype, y->numel, g, seed);
    if (y->origin != AG_TAPE)
        return AG_OK;
    t->in_backward = true;
    ag_status s = replay(t);
    t->in_backward = false;
    t->active = NULL;
    return s;
}

static ag_status backward_guarded(ag_tape *t, ag_tensor *y, const void *seed)
{
    if (!t->checked)
        return ag__backward_run(t, y, seed);
    if (atomic_exchange(&t->busy, true))
        return ag__error(t, AG_ERR_STATE, "ag_backward: the tape is in use by another thread "
                         "(a tape belongs to one thread at a time)");
    ag_status s = ag__backward_run(t, y, seed);
    atomic_store(&t->busy, false);
    return s;
}

ag_status ag_backward_seed(ag_tape *t, ag_tensor *y, const ag_tensor *seed)
{
    ag_status s = ag__backward_check(t, y, "ag_backward_seed");
    if (s != AG_OK)
        return s;
    if (!ag__take(t, (ag_tensor *)seed, "ag_backward_seed", "seed"))
        return t->status;
    char ys[AG_SHAPE_BUF], ss[AG_SHAPE_BUF];
    if (seed->dtype != y->dtype || seed->rank != y->rank ||
        memcmp(seed->shape, y->shape, y->rank * sizeof *y->shape) != 0)
        return ag__error(t, AG_ERR_SHAPE, "ag_backward_seed: seed %s %s does not match tensor %s %s",
                         ag__shape_str(seed, ss, sizeof ss), ag_dtype_name(seed->dtype),
                         ag__shape_str(y, ys, sizeof ys), ag_dtype_name(y->dtype));
    return backward_guarded(t, y, seed->data);
}

ag_status ag_backward(ag_tape *t, ag_tensor *y)
{
    ag_status s = ag__backward_check(t, y, "ag_backward");
    if (s != AG_OK)
        return s;
    if (y->numel != 1) {
        char ys[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE,
                         "ag_backward: tensor %s has %zu elements; give a seed with ag_backward_seed",
                         ag__shape_str(y, ys, sizeof ys), y->numel);
    }
    static const double one64 = 1.0;
    static const float one32 = 1.0f;
    return backward_guarded(t, y, y->dtype == AG_F32 ? (const void *)&one32 : (const void *)&one64);
}
