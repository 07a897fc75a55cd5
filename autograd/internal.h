/* internal.h: the engine's private structures, shared by its source files. */
#ifndef AG_INTERNAL_H
#define AG_INTERNAL_H

#include "autograd.h"

#include <stdarg.h>

#define AG_NAME_MAX 32
#define AG_MSG_MAX 256
#define AG_ALIGN 64
#define AG_MAX_INPUTS 2

/* Where a tensor's memory comes from decides who frees it. */
typedef enum {
    AG_LEAF_OWNED, /* caller's leaf; data allocated with the struct */
    AG_LEAF_VIEW,  /* caller's leaf wrapping caller memory */
    AG_TAPE        /* op result in a tape's arena */
} ag_origin;

struct ag_tensor {
    ag_dtype dtype;
    ag_origin origin;
    bool requires_grad;
    bool grad_owned;    /* a leaf's grad buffer was allocated here */
    bool retain_grad;
    size_t rank;
    size_t shape[AG_MAX_RANK];
    size_t numel;
    void *data;
    void *grad;         /* leaf: persistent; op result: retained grad or NULL */
    ag_tape *tape;      /* the tape that made it (op results only) */
    void *work;         /* op result: gradient during the current backward */
    uint64_t work_pass; /* which backward pass `work` belongs to */
    size_t alloc_size;  /* bytes of this leaf's own allocation */
    char name[AG_NAME_MAX];
};

typedef enum {
    AG_OP_ADD, AG_OP_SUB, AG_OP_MUL, AG_OP_DIV,
    AG_OP_NEG, AG_OP_EXP, AG_OP_LOG, AG_OP_SQRT, AG_OP_POW, AG_OP_ABS,
    AG_OP_SIGMOID, AG_OP_TANH, AG_OP_RELU, AG_OP_LEAKY_RELU, AG_OP_SOFTPLUS,
    AG_OP_ADD_SCALAR, AG_OP_SCALE,
    AG_OP_MATMUL, AG_OP_TRANSPOSE, AG_OP_RESHAPE, AG_OP_CONCAT, AG_OP_SLICE,
    AG_OP_CAST, AG_OP_DETACH,
    AG_OP_SUM, AG_OP_MEAN, AG_OP_SUM_AXIS, AG_OP_MEAN_AXIS, AG_OP_MAX_AXIS,
    AG_OP_SOFTMAX, AG_OP_LOG_SOFTMAX,
    AG_OP_MSE, AG_OP_QUADRATIC_COST, AG_OP_BCE, AG_OP_BCE_WITH_LOGITS,
    AG_OP_CROSS_ENTROPY,
    AG_OP_COUNT
} ag_op;

/* Op parameters beyond the input tensors. */
typedef struct {
    double scalar;       /* pow exponent, leaky slope, scale, added constant */
    int axis;            /* already normalised to 0..rank-1 */
    bool keepdim;
    size_t start, end;   /* slice */
    ag_dtype dtype;      /* cast target */
    size_t rank;         /* reshape target */
    const size_t *shape;
} ag_attr;

typedef struct {
    ag_op op;
    ag_tensor *in[AG_MAX_INPUTS];
    ag_tensor *out;
    ag_attr attr;
    void *saved;         /* forward results the backward reuses, in the arena */
} ag_record;

/* One row per op. shape checks the inputs and sets the output's dtype, rank
 * and shape, reporting errors on t; forward fills out->data (and r->saved);
 * backward adds the input gradients: gin[i] is NULL for an input that needs
 * none. forward and backward may use the arena for scratch. */
typedef struct {
    const char *name;
    int arity;
    bool same_dtype;     /* both inputs must have one dtype */
    bool view;           /* the result shares its input's data: no allocation */
    ag_status (*shape)(ag_tape *t, ag_record *r, ag_tensor *out);
    ag_status (*forward)(ag_tape *t, ag_record *r);
    ag_status (*backward)(ag_tape *t, const ag_record *r, const void *gout, void *gin[]);
} ag_op_def;

extern const ag_op_def ag_op_table[AG_OP_COUNT];

/* Allocator (alloc.c). Sizes are passed back to free, as the hook wants. */
void *ag__alloc(size_t n);
void *ag__calloc(size_t n);
void ag__free(void *p, size_t n);

/* ag_dtype_size for a valid dtype, inlined for the hot paths. */
#define AG_DTYPE_SIZE(dt) ((dt) == AG_F32 ? sizeof(float) : sizeof(double))

/* Size arithmetic that reports overflow by returning false. */
static inline bool ag__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

static inline bool ag__numel(const size_t *shape, size_t rank, size_t *out)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        if (!ag__mul_size(n, shape[i], &n))
            return false;
    *out = n;
    return true;
}

/* Tape (tape.c). */
void *ag__arena_alloc(ag_tape *t, size_t n);     /* NULL + NOMEM error on failure */
void *ag__arena_zeros(ag_tape *t, size_t n);
ag_status ag__error(ag_tape *t, ag_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
ag_tensor *ag__apply(ag_tape *t, ag_op op, ag_tensor *a, ag_tensor *b, const ag_attr *attr);
/* "[3,4]" into buf (at least 96 bytes); returns buf. */
const char *ag__shape_str(const ag_tensor *x, char *buf, size_t cap);
#define AG_SHAPE_BUF 96

/* Shape rules shared by several op families. */
ag_status ag__shape_same(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__shape_scalar(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__shape_same_pair(ag_tape *t, ag_record *r, ag_tensor *out);
/* Splits x's shape around axis into outer · n · inner. */
void ag__axis_split(const ag_tensor *x, int axis, size_t *outer, size_t *n, size_t *inner);
/* Normalises r->attr.axis (negative counts from the end) against input 0;
 * reports AG_ERR_VALUE when it is out of range. */
ag_status ag__check_axis(ag_tape *t, ag_record *r);

/* Runs a block once with T = float or T = double, as dt says: one loop
 * body serves both dtypes (with <tgmath.h>, exp(x) is expf for floats). */
#define AG_DISPATCH(dt, T, ...)          \
    do {                                 \
        if ((dt) == AG_F32) {            \
            typedef float T;             \
            __VA_ARGS__                  \
        } else {                         \
            typedef double T;            \
            __VA_ARGS__                  \
        }                                \
    } while (0)

/* Forward and backward functions of each family, named in the op table. */
#define AG_DECLARE_OP(fam) \
    ag_status ag__##fam##_forward(ag_tape *t, ag_record *r); \
    ag_status ag__##fam##_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
AG_DECLARE_OP(binary);
AG_DECLARE_OP(unary);
AG_DECLARE_OP(matmul);
AG_DECLARE_OP(transpose);
AG_DECLARE_OP(reshape);
AG_DECLARE_OP(concat);
AG_DECLARE_OP(slice);
AG_DECLARE_OP(cast);
AG_DECLARE_OP(sum);
AG_DECLARE_OP(sum_axis);
AG_DECLARE_OP(max_axis);
AG_DECLARE_OP(softmax);
AG_DECLARE_OP(loss);
AG_DECLARE_OP(cross_entropy);
ag_status ag__binary_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__matmul_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__transpose_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__reshape_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__concat_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__slice_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__cast_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__axis_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__cross_entropy_shape(ag_tape *t, ag_record *r, ag_tensor *out);
ag_status ag__softmax_shape(ag_tape *t, ag_record *r, ag_tensor *out);

/* GEMM (kernels/gemm.c): C[m,n] = op(A)·op(B), or C += op(A)·op(B) when
 * accumulate, where op(A) is [m,k]: A stored [m,k], or [k,m] read
 * transposed when ta; likewise B [k,n], or [n,k] when tb. Row-major,
 * contiguous. Packing space comes from the tape's scratch. */
ag_status ag__gemm(ag_tape *t, ag_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k,
                   const void *A, const void *B, bool accumulate, void *C);
/* Thread pool (kernels/pool.c). A job is n_tasks calls fn(ctx, task), spread
 * over the pool's threads and the caller; run returns when all are done. */
typedef struct ag_pool ag_pool;
typedef void (*ag_task_fn)(void *ctx, size_t task);
ag_pool *ag__pool_new(size_t n_workers);   /* NULL on failure */
void ag__pool_free(ag_pool *p);
void ag__pool_run(ag_pool *p, size_t n_tasks, ag_task_fn fn, void *ctx); /* p NULL: inline */
size_t ag__pool_threads(const ag_pool *p);  /* workers + the caller */
/* Calls fn(ctx, lo, hi) over chunks covering [0, n), one per thread, when
 * the job is worth sharing (work: about how many elements it touches);
 * else fn(ctx, 0, n) on the calling thread. fn must give the same result
 * however [0, n) is cut: each chunk writes only its own outputs. */
void ag__parallel_range(ag_tape *t, size_t n, size_t work, ag_range_fn fn, void *ctx);
/* The tape's pool, started on first use; NULL when one thread is asked for
 * or none could start (work then runs on the calling thread). */
ag_pool *ag__tape_pool(ag_tape *t);

/* A grow-only buffer of at least n bytes owned by t, 64-byte aligned, kept
 * across resets (NULL with an error on t if it cannot grow). */
void *ag__scratch(ag_tape *t, size_t n);

#endif
