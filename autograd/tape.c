/* tape.c: the arena, the records, the sticky status, and backward. */
#define _POSIX_C_SOURCE 200809L /* sysconf */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity: the CPUs this process may run on */
#include <sched.h>
#endif
#include "internal.h"

#include <unistd.h>

#include <math.h>
#include <string.h>

/* The arena is a list of chunks that is kept across resets: a reset only
 * rewinds to the first chunk, so a steady-state step reuses the memory of
 * the step before and calls the allocator zero times. */
typedef struct ag_chunk {
    struct ag_chunk *next;
    size_t size, used;   /* used is kept a multiple of AG_SMALL_ALIGN */
    unsigned char *data; /* AG_ALIGN-aligned, inside this allocation */
} ag_chunk;

struct ag_tape {
    ag_chunk *first, *cur;
    ag_record *recs;
    size_t n_recs, cap_recs;
    bool recording;
    bool checked;            /* trace the first NaN/Inf to its op */
    uint64_t pass;           /* counts backward passes; tags work buffers */
    size_t threads;          /* asked for; 0 = one per CPU we may use */
    size_t cpus;             /* CPUs we may use, read when the tape is made */
    ag_pool *pool;           /* started on first parallel op */
    void *scratch;           /* kernels' packing space, grow-only */
    size_t scratch_size;
    ag_status status;
    char msg[AG_MSG_MAX];
};

#define AG_CHUNK_MIN ((size_t)1 << 16)

/* The CPUs this process may run on: under taskset or a cpuset that is
 * fewer than the machine has, and a thread per online CPU would make the
 * pool's threads wait on each other. */
static size_t usable_cpus(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

ag_tape *ag_tape_new(void)
{
    ag_tape *t = ag__calloc(sizeof *t);
    if (t) {
        t->recording = true;
        t->cpus = usable_cpus();
    }
    return t;
}

void ag_tape_free(ag_tape *t)
{
    if (!t)
        return;
    for (ag_chunk *c = t->first, *next; c; c = next) {
        next = c->next;
        ag__free(c, sizeof *c + AG_ALIGN + c->size);
    }
    ag__free(t->recs, t->cap_recs * sizeof *t->recs);
    ag__free(t->scratch, t->scratch_size + AG_ALIGN);
    ag__pool_free(t->pool);
    ag__free(t, sizeof *t);
}

void ag_tape_reset(ag_tape *t)
{
    if (!t)
        return;
    t->cur = t->first;
    if (t->cur)
        t->cur->used = 0;
    t->n_recs = 0;
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
    if (!t)
        return 0;
    return t->threads ? t->threads : t->cpus;
}

void ag_tape_set_threads(ag_tape *t, size_t n)
{
    if (!t || n == t->threads)
        return;
    ag__pool_free(t->pool); /* the next parallel op starts one of the new size */
    t->pool = NULL;
    t->threads = n;
}

ag_pool *ag__tape_pool(ag_tape *t)
{
    size_t n = ag_tape_threads(t);
    if (n > 1 && !t->pool)
        t->pool = ag__pool_new(n - 1);
    return n > 1 ? t->pool : NULL;
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

/* A chunk of size bytes (a multiple of AG_ALIGN) after an aligned start. */
static ag_chunk *chunk_new(size_t size)
{
    ag_chunk *c = ag__alloc(sizeof *c + AG_ALIGN + size);
    if (c) {
        uintptr_t start = (uintptr_t)(c + 1);
        c->data = (unsigned char *)((start + AG_ALIGN - 1) & ~(uintptr_t)(AG_ALIGN - 1));
        c->next = NULL;
        c->size = size;
        c->used = 0;
    }
    return c;
}

/* n bytes from chunk c at the given alignment, n already rounded up to
 * AG_SMALL_ALIGN; NULL if they do not fit. */
static inline void *chunk_take(ag_chunk *c, size_t n, size_t align)
{
    size_t at = (c->used + align - 1) & ~(align - 1);
    if (at > c->size || n > c->size - at)
        return NULL;
    c->used = at + n;
    return c->data + at;
}

/* Buffers of a cache line or more start on a line, for the vector loops;
 * smaller ones (a scalar graph's values, its tensor structs) are packed
 * 16 bytes apart, so a graph of 100,000 scalars streams through less
 * memory forward and back. */
#define AG_SMALL_ALIGN 16
static inline size_t arena_align(size_t n) { return n < 4 * AG_ALIGN ? AG_SMALL_ALIGN : AG_ALIGN; }

/* The slow path of ag__arena_alloc: the next kept chunk that fits, or a new
 * one twice the size of the last. */
static void *arena_grow(ag_tape *t, size_t n)
{
    for (ag_chunk *c = t->cur ? t->cur->next : NULL; c; c = c->next) {
        c->used = 0; /* first visit to this chunk since the reset */
        void *p = chunk_take(c, n, arena_align(n));
        if (p) {
            t->cur = c;
            return p;
        }
    }
    size_t last = 0;
    for (ag_chunk *c = t->first; c; c = c->next)
        last = c->size;
    size_t size = last * 2 > AG_CHUNK_MIN ? last * 2 : AG_CHUNK_MIN;
    if (n > SIZE_MAX / 2 - AG_ALIGN - sizeof(ag_chunk)) {
        ag__error(t, AG_ERR_OVERFLOW, "arena: %zu bytes do not fit in memory", n);
        return NULL;
    }
    if (size < n)
        size = n;
    ag_chunk *c = chunk_new(size);
    if (!c) {
        ag__error(t, AG_ERR_NOMEM, "arena: out of memory allocating %zu bytes", size);
        return NULL;
    }
    ag_chunk **tail = &t->first;
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    t->cur = c;
    return chunk_take(c, n, arena_align(n));
}

/* The bump allocation every op result takes; inlined into the hot paths. */
static inline void *arena_alloc(ag_tape *t, size_t n)
{
    if (n > SIZE_MAX - AG_ALIGN) {
        ag__error(t, AG_ERR_OVERFLOW, "arena: %zu bytes do not fit in memory", n);
        return NULL;
    }
    n = n ? (n + AG_SMALL_ALIGN - 1) & ~(size_t)(AG_SMALL_ALIGN - 1) : AG_SMALL_ALIGN;
    void *p = t->cur ? chunk_take(t->cur, n, arena_align(n)) : NULL;
    return p ? p : arena_grow(t, n);
}

void *ag__arena_alloc(ag_tape *t, size_t n)
{
    return arena_alloc(t, n);
}

void *ag__arena_zeros(ag_tape *t, size_t n)
{
    void *p = ag__arena_alloc(t, n);
    if (p)
        memset(p, 0, n);
    return p;
}

void *ag__scratch(ag_tape *t, size_t n)
{
    if (n > t->scratch_size) {
        void *p = n <= SIZE_MAX - AG_ALIGN ? ag__alloc(n + AG_ALIGN) : NULL;
        if (!p) {
            ag__error(t, AG_ERR_NOMEM, "scratch: out of memory allocating %zu bytes", n);
            return NULL;
        }
        ag__free(t->scratch, t->scratch_size + AG_ALIGN);
        t->scratch = p;
        t->scratch_size = n;
    }
    uintptr_t base = (uintptr_t)t->scratch;
    return (void *)((base + AG_ALIGN - 1) & ~(uintptr_t)(AG_ALIGN - 1));
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

/* Checks that the inputs exist, belong to t and agree in dtype. */
static bool inputs_ok(ag_tape *t, const ag_op_def *def, const ag_record *r)
{
    for (int i = 0; i < def->arity; i++) {
        const ag_tensor *x = r->in[i];
        if (!x) {
            ag__error(t, AG_ERR_NULL, "ag_%s: input %d is NULL", def->name, i + 1);
            return false;
        }
        if (x->origin == AG_TAPE && x->tape != t) {
            ag__error(t, AG_ERR_STATE, "ag_%s: input %d was made on another tape",
                      def->name, i + 1);
            return false;
        }
    }
    if (def->same_dtype && def->arity == 2 && r->in[0]->dtype != r->in[1]->dtype) {
        ag__error(t, AG_ERR_DTYPE, "ag_%s: dtypes %s and %s differ (convert with ag_cast)",
                  def->name, ag_dtype_name(r->in[0]->dtype), ag_dtype_name(r->in[1]->dtype));
        return false;
    }
    return true;
}

/* Index of the first NaN or Inf among n elements, or n if all are finite. */
static size_t first_nonfinite(ag_dtype dt, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double v = dt == AG_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
        if (!isfinite(v))
            return i;
    }
    return n;
}

/* "[3,4] 'W1', [4]" : the inputs of r with the names users gave them. */
static const char *describe_inputs(const ag_record *r, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ag_op_table[r->op].arity && used < cap; i++) {
        char shape[AG_SHAPE_BUF];
        const ag_tensor *x = r->in[i];
        int n = snprintf(buf + used, cap - used, "%s%s%s%s%s", i ? ", " : "",
                         ag__shape_str(x, shape, sizeof shape), x->name[0] ? " '" : "", x->name,
                         x->name[0] ? "'" : "");
        used += n > 0 ? (size_t)n : 0;
    }
    return buf;
}

/* Checked mode: the op that first makes a NaN or Inf puts the tape in error. */
static bool check_finite(ag_tape *t, const ag_record *r, const ag_tensor *x, const void *values,
                         const char *what)
{
    size_t i = first_nonfinite(x->dtype, values, x->numel);
    if (i == x->numel)
        return true;
    char in[4 * AG_SHAPE_BUF];
    double v = x->dtype == AG_F32 ? (double)((const float *)values)[i] : ((const double *)values)[i];
    ag__error(t, AG_ERR_NUMERIC, "ag_%s: %s has %g at element %zu (inputs %s)",
              ag_op_table[r->op].name, what, v, i, describe_inputs(r, in, sizeof in));
    return false;
}

ag_tensor *ag__apply(ag_tape *t, ag_op op, ag_tensor *a, ag_tensor *b, const ag_attr *attr)
{
    if (!t || t->status != AG_OK)
        return NULL;
    const ag_op_def *def = &ag_op_table[op];
    ag_record *r = next_record(t); /* built in place, kept if it must be */
    if (!r)
        return NULL;
    r->op = op;
    r->in[0] = a;
    r->in[1] = b;
    r->saved = NULL;
    if (attr)
        r->attr = *attr;
    if (!inputs_ok(t, def, r))
        return NULL;
    /* Only the fields an op result uses are set: this runs once per node. */
    ag_tensor *out = arena_alloc(t, sizeof *out);
    if (!out)
        return NULL;
    out->dtype = a->dtype;
    out->origin = AG_TAPE;
    out->requires_grad = out->grad_owned = out->retain_grad = false;
    out->grad = out->work = NULL;
    out->work_pass = 0;
    out->tape = t;
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
    if (!def->view && !(out->data = arena_alloc(t, bytes)))
        return NULL;
    /* An empty result has nothing to compute, and its other dims may be
     * huge ([2^62, 3, 0]): the ops' outer loops would run for ever. */
    if ((out->numel || def->view) && def->forward(t, r) != AG_OK)
        return NULL;
    if (t->checked && !check_finite(t, r, out, out->data, "the result"))
        return NULL;
    bool needs_grad = a->requires_grad || (def->arity == 2 && b->requires_grad);
    if (needs_grad && t->recording && op != AG_OP_DETACH) {
        t->n_recs++;
        out->requires_grad = true;
    }
    return out;
}

void ag_retain_grad(ag_tensor *x)
{
    if (x && x->origin == AG_TAPE)
        x->retain_grad = true;
}

static void zero_bytes(void *ctx, size_t lo, size_t hi)
{
    memset((unsigned char *)ctx + lo, 0, hi - lo);
}

/* The buffer that receives x's gradient in the current pass: a leaf's own
 * grad, or an op result's work buffer, zeroed on first use in this pass
 * (by all threads when it is large). */
static void *grad_target(ag_tape *t, ag_tensor *x)
{
    if (x->origin != AG_TAPE)
        return x->grad;
    if (x->work_pass != t->pass) {
        size_t bytes = x->numel * AG_DTYPE_SIZE(x->dtype);
        if (!x->work && !(x->work = arena_alloc(t, bytes)))
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
        const ag_op_def *def = &ag_op_table[r->op];
        void *gin[AG_MAX_INPUTS] = {NULL};
        for (int i = 0; i < def->arity; i++)
            if (r->in[i]->requires_grad && r->in[i]->numel &&
                !(gin[i] = grad_target(t, r->in[i])))
                return t->status;
        if (!gin[0] && !gin[1])
            continue; /* e.g. requires_grad was turned off after recording */
        if (def->backward(t, r, out->work, gin) != AG_OK)
            return t->status;
        for (int i = 0; t->checked && i < def->arity; i++) {
            static const char *what[] = {"backward: the gradient of input 1",
                                         "backward: the gradient of input 2"};
            if (gin[i] && !check_finite(t, r, r->in[i], gin[i], what[i]))
                return t->status;
        }
    }
    return t->status;
}

static ag_status backward_check(ag_tape *t, ag_tensor *y, const char *fn)
{
    if (!t)
        return AG_ERR_NULL;
    if (t->status != AG_OK)
        return t->status;
    if (!y)
        return ag__error(t, AG_ERR_NULL, "%s: tensor is NULL", fn);
    if (y->origin == AG_TAPE && y->tape != t)
        return ag__error(t, AG_ERR_STATE, "%s: tensor was made on another tape", fn);
    if (!y->requires_grad)
        return ag__error(t, AG_ERR_STATE,
                         "%s: tensor does not require grad (no recorded input requires grad, "
                         "or recording is off)", fn);
    return AG_OK;
}

ag_status ag_backward_seed(ag_tape *t, ag_tensor *y, const ag_tensor *seed)
{
    ag_status s = backward_check(t, y, "ag_backward_seed");
    if (s != AG_OK)
        return s;
    if (!seed)
        return ag__error(t, AG_ERR_NULL, "ag_backward_seed: seed is NULL");
    char ys[AG_SHAPE_BUF], ss[AG_SHAPE_BUF];
    if (seed->dtype != y->dtype || seed->rank != y->rank ||
        memcmp(seed->shape, y->shape, y->rank * sizeof *y->shape) != 0)
        return ag__error(t, AG_ERR_SHAPE, "ag_backward_seed: seed %s %s does not match tensor %s %s",
                         ag__shape_str(seed, ss, sizeof ss), ag_dtype_name(seed->dtype),
                         ag__shape_str(y, ys, sizeof ys), ag_dtype_name(y->dtype));
    t->pass++;
    void *g = grad_target(t, y);
    if (!g && y->numel)
        return t->status;
    add_into(y->dtype, y->numel, g, seed->data);
    return y->origin == AG_TAPE ? replay(t) : AG_OK;
}

ag_status ag_backward(ag_tape *t, ag_tensor *y)
{
    ag_status s = backward_check(t, y, "ag_backward");
    if (s != AG_OK)
        return s;
    if (y->numel != 1) {
        char ys[AG_SHAPE_BUF];
        return ag__error(t, AG_ERR_SHAPE,
                         "ag_backward: tensor %s has %zu elements; give a seed with ag_backward_seed",
                         ag__shape_str(y, ys, sizeof ys), y->numel);
    }
    double one64 = 1.0;
    float one32 = 1.0f;
    ag_tensor seed = *y;
    seed.data = y->dtype == AG_F32 ? (void *)&one32 : (void *)&one64;
    return ag_backward_seed(t, y, &seed);
}

/* ------------------------------------------------------------ DOT export */

static void dot_node(FILE *out, const ag_tensor *x, const char *op)
{
    char shape[AG_SHAPE_BUF];
    fprintf(out, "  n%p [label=\"%s%s%s\\n%s %s\"%s%s];\n", (const void *)x,
            x->name, x->name[0] ? ": " : "", op, ag__shape_str(x, shape, sizeof shape),
            ag_dtype_name(x->dtype), x->grad ? ", peripheries=2" : "",
            x->origin == AG_TAPE ? "" : ", shape=box");
}

ag_status ag_tape_dot(const ag_tape *t, FILE *out)
{
    if (!t || !out)
        return AG_ERR_NULL;
    fputs("digraph tape {\n  rankdir=LR;\n  node [shape=ellipse, fontname=\"monospace\"];\n", out);
    for (size_t k = 0; k < t->n_recs; k++) {
        const ag_record *r = &t->recs[k];
        const ag_op_def *def = &ag_op_table[r->op];
        for (int i = 0; i < def->arity; i++) {
            const ag_tensor *x = r->in[i];
            if (x->origin != AG_TAPE)
                dot_node(out, x, x->requires_grad ? "param" : "const");
            fprintf(out, "  n%p -> n%p;\n", (const void *)x, (const void *)r->out);
        }
        dot_node(out, r->out, def->name);
    }
    fputs("}\n", out);
    return ferror(out) ? AG_ERR_IO : AG_OK;
}
