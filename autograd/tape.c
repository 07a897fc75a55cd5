/* tape.c: the tape's life cycle and settings, the sticky status, the
 * handles an op accepts, and recording an op. */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Generation stamps, unique across every tape of the process: a handle
 * compares its stamp with its tape's, and a leaf remembers the last
 * generation that holds it. A counter, not state that changes results. */
static _Atomic uint64_t next_stamp = 1;

static uint64_t new_stamp(void)
{
    return atomic_fetch_add_explicit(&next_stamp, 1, memory_order_relaxed);
}

ag_tape *ag_tape_new(void)
{
    ag_tape *t = ag__calloc(sizeof *t);
    if (t) {
        t->arena = &t->arenas[0];
        t->stamp = new_stamp();
        t->recording = true;
        ag__exec_init(&t->exec);
        atomic_init(&t->busy, false);
    }
    return t;
}

/* Ends the generation's hold on the leaves its records point at. */
static void release_leaves(ag_tape *t)
{
    for (size_t i = 0; i < t->n_leaves; i++)
        ag__leaf_release(t->leaves[i]);
    t->n_leaves = 0;
}

void ag_tape_free(ag_tape *t)
{
    if (!t)
        return;
    release_leaves(t);
    ag__arena_free(&t->arenas[0]);
    ag__arena_free(&t->arenas[1]);
    ag__free(t->recs, t->cap_recs * sizeof *t->recs);
    ag__free(t->leaves, t->cap_leaves * sizeof *t->leaves);
    ag__exec_free(&t->exec);
    ag__free(t, sizeof *t);
}

void ag_tape_reset(ag_tape *t)
{
    if (!t)
        return;
    release_leaves(t);
    ag__arena_poison(t->arena); /* a raw pointer kept across the reset is caught */
    t->arena = t->arena == &t->arenas[0] ? &t->arenas[1] : &t->arenas[0];
    ag__arena_rewind(t->arena);
    t->stamp = new_stamp();
    t->n_recs = 0;
    t->active = NULL;
    t->status = AG_OK;
    t->msg[0] = '\0';
}

bool ag_tape_set_recording(ag_tape *t, bool on)
{
    if (!t)
        return false;
    bool was = t->recording;
    t->recording = on;
    return was;
}

bool ag_tape_recording(const ag_tape *t) { return t && t->recording; }

size_t ag_tape_threads(const ag_tape *t)
{
    return t ? ag__exec_threads(&t->exec) : 0;
}

void ag_tape_set_threads(ag_tape *t, size_t n)
{
    if (t)
        ag__exec_set_threads(&t->exec, n);
}

void ag_parallel_for(ag_tape *t, size_t n, ag_range_fn fn, void *ctx)
{
    if (!fn)
        return;
    if (!t) {
        fn(ctx, 0, n);
        return;
    }
    ag__exec_range(&t->exec, n, n, fn, ctx);
}

bool ag_tape_set_checked(ag_tape *t, bool on)
{
    if (!t)
        return false;
    bool was = t->checked;
    t->checked = on;
    return was;
}
ag_status ag_tape_status(const ag_tape *t) { return t ? t->status : AG_ERR_NULL; }
const char *ag_tape_error(const ag_tape *t) { return t ? t->msg : "tape is NULL"; }
size_t ag_tape_size(const ag_tape *t) { return t ? t->n_recs : 0; }

const char *ag_status_string(ag_status s)
{
    switch (s) {
    case AG_OK: return "ok";
    case AG_ERR_NULL: return "NULL argument";
    case AG_ERR_SHAPE: return "shape mismatch";
    case AG_ERR_DTYPE: return "dtype mismatch";
    case AG_ERR_OVERFLOW: return "size overflow";
    case AG_ERR_NOMEM: return "out of memory";
    case AG_ERR_VALUE: return "invalid value";
    case AG_ERR_STATE: return "invalid state";
    case AG_ERR_IO: return "I/O error";
    case AG_ERR_FORMAT: return "malformed file";
    case AG_ERR_NUMERIC: return "NaN or Inf";
    }
    return "unknown status";
}

/* Every error passes through here (a single breakpoint catches them all);
 * the first one since the last reset wins. */
static ag_status vfail(ag_tape *t, ag_status s, const char *fmt, va_list ap)
{
    if (!t)
        return s;
    if (t->status == AG_OK && s != AG_OK) {
        vsnprintf(t->msg, sizeof t->msg, fmt ? fmt : "", ap);
        t->status = s;
    }
    return t->status;
}

ag_status ag__error(ag_tape *t, ag_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s = vfail(t, s, fmt, ap);
    va_end(ap);
    return s;
}

ag_status ag_tape_fail(ag_tape *t, ag_status s, const char *fmt, ...)
{
    if (!t)
        return AG_ERR_NULL;
    va_list ap;
    va_start(ap, fmt);
    s = vfail(t, s, fmt, ap);
    va_end(ap);
    return s;
}

/* The slot for the next record, growing the array when full; the record
 * is kept only when n_recs is then advanced. */
static ag_record *next_record(ag_tape *t)
{
    if (t->n_recs == t->cap_recs) {
        size_t cap = t->cap_recs ? t->cap_recs * 2 : 256;
        ag_record *recs = NULL;
        if (cap < SIZE_MAX / sizeof *recs)
            recs = ag__alloc(cap * sizeof *recs);
        if (!recs) {
            ag__error(t, AG_ERR_NOMEM, "tape: out of memory growing to %zu records", cap);
            return NULL;
        }
        if (t->n_recs)
            memcpy(recs, t->recs, t->n_recs * sizeof *recs);
        ag__free(t->recs, t->cap_recs * sizeof *recs);
        t->recs = recs;
        t->cap_recs = cap;
    }
    return &t->recs[t->n_recs];
}

/* ---------------------------------------------------------------- handles */

typedef enum { TAKE_OK, TAKE_NULL, TAKE_STALE, TAKE_FOREIGN, TAKE_FREED, TAKE_NOMEM } take_result;

static bool hold_leaf(ag_tape *t, ag_tensor *x)
{
    if (t->n_leaves == t->cap_leaves) {
        size_t cap = t->cap_leaves ? t->cap_leaves * 2 : 64;
        ag_tensor **leaves = cap < SIZE_MAX / sizeof *leaves ? ag__alloc(cap * sizeof *leaves) : NULL;
        if (!leaves)
            return false;
        if (t->n_leaves)
            memcpy(leaves, t->leaves, t->n_leaves * sizeof *leaves);
        ag__free(t->leaves, t->cap_leaves * sizeof *leaves);
        t->leaves = leaves;
        t->cap_leaves = cap;
    }
    atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
    t->leaves[t->n_leaves++] = x;
    atomic_store_explicit(&x->mark, t->stamp, memory_order_relaxed);
    return true;
}

/* Whether t may use x now; a leaf is then held until t's next reset, so
 * that freeing it meanwhile cannot pull memory from under the records. */
static inline take_result take(ag_tape *t, ag_tensor *x)
{
    if (!x)
        return TAKE_NULL;
#ifdef AG_ASAN
    if (__asan_region_is_poisoned(x, sizeof *x))
        return TAKE_STALE; /* a header in an arena rewound since */
#endif
    if (x->origin == AG_TAPE) {
        if (x->stamp == t->stamp)
            return TAKE_OK;
        return x->tape == t || ag__arena_holds(t, x) ? TAKE_STALE : TAKE_FOREIGN;
    }
    bool held = atomic_load_explicit(&x->mark, memory_order_relaxed) == t->stamp;
    if (held && !x->freed)
        return TAKE_OK;
    /* Not a leaf this generation holds: before any of its fields is trusted,
     * it must not lie in this tape's arenas (a result two or more resets
     * old, its header now inside a newer result's data) */
    if (ag__arena_holds(t, x))
        return TAKE_STALE;
    if (x->freed && !(held && t->in_backward)) /* a recorded backward may use what it holds */
        return TAKE_FREED;
    if (held)
        return TAKE_OK;
    return hold_leaf(t, x) ? TAKE_OK : TAKE_NOMEM;
}

static void take_fail(ag_tape *t, take_result why, const char *fn, const char *arg)
{
    switch (why) {
    case TAKE_OK:
        return;
    case TAKE_NULL:
        ag__error(t, AG_ERR_NULL, "%s: %s is NULL", fn, arg);
        return;
    case TAKE_STALE:
        ag__error(t, AG_ERR_STATE,
                  "%s: %s is a stale handle: an op made it before the tape's last reset "
                  "(op results live until ag_tape_reset)", fn, arg);
        return;
    case TAKE_FOREIGN:
        ag__error(t, AG_ERR_STATE, "%s: %s was made on another tape", fn, arg);
        return;
    case TAKE_FREED:
        ag__error(t, AG_ERR_STATE, "%s: %s was freed (ag_tensor_free)", fn, arg);
        return;
    case TAKE_NOMEM:
        ag__error(t, AG_ERR_NOMEM, "%s: out of memory holding %s", fn, arg);
        return;
    }
}

bool ag__take(ag_tape *t, ag_tensor *x, const char *fn, const char *arg)
{
    take_result why = take(t, x);
    take_fail(t, why, fn, arg);
    return why == TAKE_OK;
}

ag_status ag_tape_check_input(ag_tape *t, ag_tensor *x, const char *fn, const char *arg)
{
    if (!t)
        return AG_ERR_NULL;
    if (t->status == AG_OK)
        ag__take(t, x, fn ? fn : "?", arg ? arg : "tensor");
    return t->status;
}

/* Checks the inputs' handles and that they agree in dtype. */
static bool inputs_ok(ag_tape *t, const ag_op_def *def, const ag_record *r)
{
    for (int i = 0; i < def->arity; i++) {
        take_result why = take(t, r->in[i]);
        if (why != TAKE_OK) {
            char fn[48], arg[24];
            snprintf(fn, sizeof fn, "ag_%.40s", def->name);
            snprintf(arg, sizeof arg, "input %d", i + 1);
            take_fail(t, why, fn, arg);
            return false;
        }
    }
    for (int i = 1; def->same_dtype && i < def->arity; i++)
        if (r->in[i]->dtype != r->in[0]->dtype) {
            ag__error(t, AG_ERR_DTYPE, "ag_%s: dtypes %s and %s differ (convert with ag_cast)",
                      def->name, ag_dtype_name(r->in[0]->dtype), ag_dtype_name(r->in[i]->dtype));
            return false;
        }
    return true;
}

/* -------------------------------------------------------------- recording */

/* Index of the first NaN or Inf among n elements, or n if all are finite. */
static size_t first_nonfinite(ag_dtype dt, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ag__elem(dt, p, i)))
            return i;
    }
    return n;
}

const char *ag__describe_inputs(const ag_record *r, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < r->def->arity && used < cap; i++) {
        char shape[AG_SHAPE_BUF];
        const ag_tensor *x = r->in[i];
        int n = snprintf(buf + used, cap - used, "%s%s%s%s%s", i ? ", " : "",
                         ag__shape_str(x, shape, sizeof shape), x->name[0] ? " '" : "", x->name,
                         x->name[0] ? "'" : "");
        used += n > 0 ? (size_t)n : 0;
    }
    return buf;
}

bool ag__check_finite(ag_tape *t, const ag_record *r, const ag_tensor *x, const void *values,
                      const char *what)
{
    size_t i = first_nonfinite(x->dtype, values, x->numel);
    if (i == x->numel)
        return true;
    char in[4 * AG_SHAPE_BUF];
    ag__error(t, AG_ERR_NUMERIC, "ag_%s: %s has %g at element %zu (inputs %s)", r->def->name,
              what, ag__elem(x->dtype, values, i), i, ag__describe_inputs(r, in, sizeof in));
    return false;
}

static ag_tensor *apply(ag_tape *t, const ag_op_def *def, ag_tensor *a, ag_tensor *b,
                        ag_tensor *c, const ag_attr *attr)
{
    ag_record *r = next_record(t); /* built in place, kept if it must be */
    if (!r)
        return NULL;
    r->def = def;
    r->in[0] = a;
    r->in[1] = b;
    r->in[2] = c;
    r->saved = NULL;
    if (attr)
        r->attr = *attr;
    if (!inputs_ok(t, def, r))
        return NULL;
    /* Only the fields an op result uses are set: this runs once per node. */
    ag_tensor *out = ag__arena_alloc(t, sizeof *out);
    if (!out)
        return NULL;
    out->dtype = a->dtype;
    out->origin = AG_TAPE;
    out->requires_grad = out->grad_owned = out->retain_grad = out->freed = false;
    out->grad = out->work = NULL;
    out->work_pass = 0;
    out->tape = t;
    out->stamp = t->stamp;
    out->name[0] = '\0';
    r->out = out;
    if (def->shape(t, r, out) != AG_OK)
        return NULL;
    size_t bytes;
    if (!ag__numel(out->shape, out->rank, &out->numel) ||
        !ag__mul_size(out->numel, AG_DTYPE_SIZE(out->dtype), &bytes)) {
        ag__error(t, AG_ERR_OVERFLOW, "ag_%s: the result's size overflows", def->name);
        return NULL;
    }
    t->active = r; /* an allocation failure from here on names the op */
    if (!def->view && !(out->data = ag__arena_alloc(t, bytes)))
        return NULL;
    /* An empty result has nothing to compute, and its other dims may be
     * huge ([2^62, 3, 0]): the ops' outer loops would run for ever. */
    if ((out->numel || def->view) && def->forward(t, r) != AG_OK)
        return NULL;
    t->active = NULL;
    if (t->checked && !ag__check_finite(t, r, out, out->data, "the result"))
        return NULL;
    bool needs_grad = false;
    for (int i = 0; i < def->arity; i++)
        needs_grad |= r->in[i]->requires_grad;
    if (needs_grad && t->recording && !def->no_grad) {
        t->n_recs++;
        out->requires_grad = true;
    }
    return out;
}

ag_tensor *ag__apply3(ag_tape *t, const ag_op_def *def, ag_tensor *a, ag_tensor *b, ag_tensor *c,
                      const ag_attr *attr)
{
    if (!t || t->status != AG_OK)
        return NULL;
    if (!t->checked)
        return apply(t, def, a, b, c, attr);
    /* Checked mode also catches a tape entered from two threads at once. */
    if (atomic_exchange(&t->busy, true)) {
        ag__error(t, AG_ERR_STATE, "ag_%s: the tape is in use by another thread "
                  "(a tape belongs to one thread at a time)", def->name);
        return NULL;
    }
    ag_tensor *out = apply(t, def, a, b, c, attr);
    atomic_store(&t->busy, false);
    return out;
}
