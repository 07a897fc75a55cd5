/* internal.h: the engine's private structures, shared by its source files. */
#ifndef AG_INTERNAL_H
#define AG_INTERNAL_H

#include "base.h"
#include "kernels/exec.h"

#include <stdarg.h>
#include <stdatomic.h>

#define AG_NAME_MAX 32
#define AG_MSG_MAX 256
#define AG_MAX_INPUTS 3

/* Where a tensor's memory comes from decides who frees it. */
typedef enum {
    AG_LEAF_OWNED, /* caller's leaf; data allocated with the struct */
    AG_LEAF_VIEW,  /* caller's leaf wrapping caller memory or another leaf's */
    AG_TAPE        /* op result in a tape's arena */
} ag_origin;

struct ag_tensor {
    ag_dtype dtype;
    ag_origin origin;
    bool requires_grad;
    bool grad_owned;    /* a leaf's grad buffer was allocated here */
    bool retain_grad;
    bool freed;         /* leaf: the caller freed it; a tape still holds it */
    size_t rank;
    size_t shape[AG_MAX_RANK];
    size_t numel;
    void *data;
    void *grad;         /* leaf: persistent; op result: retained grad or NULL */
    union {
        struct { /* op results */
            ag_tape *tape;      /* the tape that made it */
            uint64_t stamp;     /* its tape's generation stamp when made */
            void *work;         /* gradient during the current backward */
            uint64_t work_pass; /* which backward pass `work` belongs to */
        };
        /* Leaves. A leaf lives while its caller or a tape generation holds
         * it: refs counts the caller (1 until ag_tensor_free) plus one per
         * tape generation that used it; mark is the stamp of the last
         * generation that took a reference, so a leaf used 1000 times in a
         * step is counted once. Atomic: two tapes on two threads may share
         * a model. */
        struct {
            _Atomic size_t refs;
            _Atomic uint64_t mark;
            ag_tensor *base;    /* a view made by ag_leaf_view holds its base */
            size_t alloc_size;  /* bytes of this leaf's own allocation */
        };
    };
    char name[AG_NAME_MAX];
};

/* Op parameters beyond the input tensors. */
/* Op parameters beyond the input tensors. The pointers point at the
 * caller's memory, valid only while the op runs: what a backward needs of
 * them is copied into r->saved by the forward. */
typedef struct {
    double scalar;       /* pow exponent, leaky slope, scale, added constant, ... */
    double scalar2;      /* a second one (clamp's upper bound) */
    int axis;            /* already normalised to 0..rank-1 */
    bool keepdim;
    bool training;       /* dropout */
    ag_dtype dtype;      /* cast target */
    size_t start, end;   /* slice */
    size_t rank;         /* entries of shape or axes */
    union {
        const size_t *shape; /* reshape and expand targets */
        const int *axes;     /* permutations, several axes */
        ag_rng *rng;         /* dropout's mask */
    };
} ag_attr;

typedef struct ag_op_def ag_op_def;

typedef struct {
    const ag_op_def *def;
    ag_tensor *in[AG_MAX_INPUTS];
    ag_tensor *out;
    ag_attr attr;
    void *saved;         /* forward results the backward reuses, in the arena */
} ag_record;

/* One op, defined once in its family's file. shape checks the inputs and
 * sets the output's dtype, rank and shape, reporting errors on t; forward
 * fills out->data (and r->saved); backward adds (+=) the input gradients:
 * gin[i] is NULL for an input that needs none. forward and backward may
 * use the arena for scratch. */
struct ag_op_def {
    const char *name;
    int arity;
    bool same_dtype;     /* every input must have one dtype */
    bool view;           /* the result shares its input's data: no allocation */
    bool no_grad;        /* the result never requires grad (detach) */
    ag_status (*shape)(ag_tape *t, ag_record *r, ag_tensor *out);
    ag_status (*forward)(ag_tape *t, ag_record *r);
    ag_status (*backward)(ag_tape *t, const ag_record *r, const void *gout, void *gin[]);
    /* The same backward written in the engine's own ops, so that it is
     * recorded and can be differentiated again (ag_gradients with
     * AG_CREATE_GRAPH): for each input i with need[i], gin[i] receives
     * the gradient dL/d(input i) as a tape tensor of that input's shape
     * (or stays NULL when it is zero), given g = dL/d(out). r is a copy:
     * the ops it runs may move the tape's records. */
    ag_status (*grad_graph)(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                            ag_tensor *gin[]);
};

/* The ops (ops/list.h): a definition per op and the table of all. */
#define AG_OP(name) extern const ag_op_def ag__op_##name;
#include "ops/list.h"
#undef AG_OP
#define AG_OP(name) +1
enum { AG_OP_COUNT = 0
#include "ops/list.h"
};
#undef AG_OP
/* Pinned: a change of the op set changes this number on purpose. */
_Static_assert(AG_OP_COUNT == 78, "ops/list.h changed: update the count here");
extern const ag_op_def *const ag_op_table[AG_OP_COUNT];

/* The arena (arena.c) is a list of chunks kept across resets: a reset only
 * rewinds it, so a steady-state step reuses the memory of the step before
 * and calls the allocator zero times. */
typedef struct ag_chunk {
    struct ag_chunk *next;
    size_t size, used;   /* used is kept a multiple of AG_SMALL_ALIGN */
    unsigned char *data; /* AG_ALIGN-aligned, inside this allocation */
} ag_chunk;

typedef struct {
    ag_chunk *first, *cur;
    uintptr_t lo, hi; /* the span of its chunks' data (0, 0: none yet) */
} ag_arena;


/* A tape keeps two arenas and alternates between them at each reset, so
 * the op results of the generation before stay untouched: a handle kept
 * across a reset still shows its old stamp, and the next op reports it
 * (see ag__stale). */
struct ag_tape {
    ag_arena arenas[2];
    ag_arena *arena;         /* the current generation's */
    uint64_t stamp;          /* unique to this tape and generation */
    ag_record *recs;
    size_t n_recs, cap_recs;
    ag_tensor **leaves;      /* leaves this generation holds a reference to */
    size_t n_leaves, cap_leaves;
    const ag_record *active; /* the op being run, for out-of-memory messages */
    bool in_backward;
    /* ag_gradients without a graph: the leaves whose gradients are wanted
     * and the buffers that receive them (other leaves are left alone). */
    ag_tensor *const *want;
    void **want_buf;
    size_t n_want;
    bool recording;
    bool checked;            /* trace the first NaN/Inf to its op */
    atomic_bool busy;        /* checked mode: an op is running (one thread per tape) */
    uint64_t pass;           /* counts backward passes; tags work buffers */
    ag_exec exec;            /* threads and scratch for the kernels */
    ag_status status;
    char msg[AG_MSG_MAX];
};

/* Buffers of a cache line or more start on a line, for the vector loops;
 * smaller ones (a scalar graph's values, its tensor structs) are packed
 * 16 bytes apart, so a graph of 100,000 scalars streams through less
 * memory forward and back. */
#define AG_SMALL_ALIGN 16

void ag__arena_free(ag_arena *a);
/* Starts a generation in a: rewinds it (and in sanitizer builds marks all
 * of it unaddressable until handed out again). */
void ag__arena_rewind(ag_arena *a);
/* Marks all of a unaddressable (AddressSanitizer builds; else nothing). */
void ag__arena_poison(ag_arena *a);
/* The slow path: the next kept chunk that fits, or a new one. */
/* Whether p lies in either of t's arenas. Only op results live there, so
 * a handle there that does not show the generation's stamp is a stale
 * result whose memory a newer generation may reuse (its bytes then mean
 * nothing), never a leaf. */
bool ag__arena_holds(const ag_tape *t, const void *p);
void *ag__arena_grow(ag_tape *t, size_t n);

/* n bytes from chunk c at the given alignment, n already rounded up to
 * AG_SMALL_ALIGN; NULL if they do not fit. */
static inline void *ag__chunk_take(ag_chunk *c, size_t n, size_t align)
{
    size_t at = (c->used + align - 1) & ~(align - 1);
    if (at > c->size || n > c->size - at)
        return NULL;
    c->used = at + n;
    return c->data + at;
}

static inline size_t ag__arena_align(size_t n) { return n < 4 * AG_ALIGN ? AG_SMALL_ALIGN : AG_ALIGN; }

#if defined(__SANITIZE_ADDRESS__)
#define AG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AG_ASAN 1
#endif
#endif
#ifdef AG_ASAN
#include <sanitizer/asan_interface.h>
#define AG_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define AG_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* The bump allocation every op result takes; inlined into the hot paths.
 * NULL with an error on t (naming t->active's op) on failure. */
static inline void *ag__arena_alloc(ag_tape *t, size_t n)
{
    if (n > SIZE_MAX - AG_ALIGN)
        return ag__arena_grow(t, n); /* reports the overflow */
    n = n ? (n + AG_SMALL_ALIGN - 1) & ~(size_t)(AG_SMALL_ALIGN - 1) : AG_SMALL_ALIGN;
    ag_chunk *c = t->arena->cur;
    void *p = c ? ag__chunk_take(c, n, ag__arena_align(n)) : NULL;
    if (!p)
        return ag__arena_grow(t, n);
    AG_UNPOISON(p, n);
    return p;
}

void *ag__arena_zeros(ag_tape *t, size_t n);

/* Tape (tape.c). */
ag_status ag__error(ag_tape *t, ag_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Runs op def on its inputs (b, c NULL past its arity): checks, shape
 * rule, forward, and a record when some input requires grad. */
ag_tensor *ag__apply3(ag_tape *t, const ag_op_def *def, ag_tensor *a, ag_tensor *b, ag_tensor *c,
                      const ag_attr *attr);
static inline ag_tensor *ag__apply(ag_tape *t, const ag_op_def *def, ag_tensor *a, ag_tensor *b,
                                   const ag_attr *attr)
{
    return ag__apply3(t, def, a, b, NULL, attr);
}
/* A tensor on t that no op made and no gradient reaches (a seed, a mask, a
 * constant of a recorded backward): its data (numel elements of dt,
 * uninitialised) is the caller's to fill. NULL with an error on t. */
ag_tensor *ag__tape_tensor(ag_tape *t, ag_dtype dt, const size_t *shape, size_t rank);
/* g summed down to the shape of x, over the axes numpy broadcasting added
 * or stretched (a recorded op, so it differentiates again); g itself when
 * the shapes match. */
ag_tensor *ag__sum_to(ag_tape *t, ag_tensor *g, const ag_tensor *x);
/* Backward (backward.c): checks that backward may start from y on t. */
ag_status ag__backward_check(ag_tape *t, ag_tensor *y, const char *fn);
/* Seeds y's gradient with seed (y's shape and dtype) and replays the tape
 * with the fused kernels, into leaves' grads (or t->want's buffers). */
ag_status ag__backward_run(ag_tape *t, ag_tensor *y, const void *seed);
/* "[3,4] 'W1', [4]": the inputs of r with the names users gave them. */
const char *ag__describe_inputs(const ag_record *r, char *buf, size_t cap);
/* Checks a tensor handle given to fn as its argument `arg` before t uses
 * it: NULL, made on another tape, from an earlier generation of t (a
 * reset came between), or a leaf its caller freed. Reports on t and
 * returns false; else takes a reference on a leaf for this generation. */
bool ag__take(ag_tape *t, ag_tensor *x, const char *fn, const char *arg);
/* Drops a reference on a leaf; the last one frees it. */
void ag__leaf_release(ag_tensor *x);
/* "[3,4]" into buf (at least 96 bytes); returns buf. */
const char *ag__shape_str(const ag_tensor *x, char *buf, size_t cap);
#define AG_SHAPE_BUF 96

/* Checked mode: false, with the tape in error naming r's op and `what`, when
 * x's shape of values holds a NaN or Inf. */
bool ag__check_finite(ag_tape *t, const ag_record *r, const ag_tensor *x, const void *values,
                      const char *what);

/* Leaves (tensor.c). Records the reason a leaf constructor failed, for ag_last_error. */
void ag__leaf_error(ag_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Shape rules shared by several op families. */
ag_status ag__shape_same(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__shape_scalar(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__shape_same_pair(ag_tape *t, ag_record *r, ag_tensor *out);
/* Splits x's shape around axis into outer · n · inner. */
void ag__axis_split(const ag_tensor *x, int axis, size_t *outer, size_t *n, size_t *inner);
/* Normalises r->attr.axis (negative counts from the end) against input 0;
 * reports AG_ERR_VALUE when it is out of range. */
ag_status ag__check_axis(ag_tape *t, ag_record *r);


/* The tape's threads for an elementwise pass (kernels/exec.h). */
static inline void ag__parallel_range(ag_tape *t, size_t n, size_t work, ag_range_fn fn, void *ctx)
{
    ag__exec_range(&t->exec, n, work, fn, ctx);
}

#endif
