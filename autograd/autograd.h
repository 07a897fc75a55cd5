/* autograd.h: a small reverse-mode automatic differentiation engine.
 *
 * A tape records the tensor ops of a forward pass; ag_backward replays the
 * records in reverse and accumulates (+=) gradients into every tensor that
 * requires them.
 *
 * Ownership: leaf tensors (parameters, data) are created and freed by the
 * caller. Every tensor an op returns lives in the tape's arena until
 * ag_tape_reset or ag_tape_free; never free it yourself.
 *
 * Handles: an op result is valid until its tape's next reset. Giving one
 * to an op or to ag_backward after that is an error (AG_ERR_STATE, "input
 * 1 is a stale handle"), right after the reset and after new ops alike;
 * see ag_tape_reset for exactly what is guaranteed. A leaf that a tape
 * still uses is never freed under it: ag_tensor_free then only drops the
 * caller's hold, and the tape lets go of it at its next reset or free.
 *
 * Threads: a tape belongs to one thread at a time (checked mode reports a
 * second thread entering it). Two tapes on two threads may share leaves,
 * e.g. one model's parameters for inference.
 *
 * Errors: every op takes the tape first. A failing op (NULL argument, shape or
 * dtype mismatch, size overflow, out of memory, invalid value) puts the tape in
 * an error state that keeps the FIRST error, and returns NULL. Once the tape is
 * in error, every op returns NULL at once, so a whole expression is checked
 * once at the end:
 *
 *     if (ag_tape_status(t)) fprintf(stderr, "%s\n", ag_tape_error(t));
 *
 * Functions that are not ops return an ag_status (or NULL / false where
 * documented). The library never aborts, exits or prints on any input.
 */
#ifndef AUTOGRAD_H
#define AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AG_MAX_RANK 8

typedef enum { AG_F32, AG_F64 } ag_dtype;

typedef enum {
    AG_OK = 0,
    AG_ERR_NULL,     /* a required argument was NULL */
    AG_ERR_SHAPE,    /* shapes do not fit the op */
    AG_ERR_DTYPE,    /* dtypes differ or are not supported */
    AG_ERR_OVERFLOW, /* a size computation overflowed size_t */
    AG_ERR_NOMEM,    /* the allocator returned NULL */
    AG_ERR_VALUE,    /* an argument has an invalid value (axis, label, ...) */
    AG_ERR_STATE,    /* the call does not fit the object's state */
    AG_ERR_IO,       /* reading or writing a file failed */
    AG_ERR_FORMAT,   /* a file's contents are malformed */
    AG_ERR_NUMERIC   /* a NaN or Inf appeared (checked mode) */
} ag_status;

typedef struct ag_tensor ag_tensor;
typedef struct ag_tape ag_tape;

/* Short, static name of a status code ("shape mismatch", ...). */
const char *ag_status_string(ag_status s);
/* Name of a dtype: "f32" or "f64"; "?" for an invalid value. */
const char *ag_dtype_name(ag_dtype dt);
/* Bytes per element: 4 or 8; 0 for an invalid dtype. */
size_t ag_dtype_size(ag_dtype dt);

/* ---------------------------------------------------------------- memory */

/* One hook for every allocation, as Lua's lua_Alloc: nsize == 0 frees ptr
 * (return value ignored); otherwise (re)allocate ptr from osize to nsize
 * bytes and return the block, or NULL on failure (ptr stays valid). */
typedef void *(*ag_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/* Sets the allocator used by every later allocation; NULL restores malloc.
 * Set it once, before creating any object (memory must be freed by the
 * allocator that made it). Not thread-safe, as SQLite's config. */
void ag_set_allocator(ag_alloc_fn fn, void *ud);

/* ------------------------------------------------------------------- rng */

/* A seeded generator (xoshiro256**) that gives the same numbers on every
 * machine: the normal draws use only IEEE-exact arithmetic, no libm. */
typedef struct {
    uint64_t s[4];
    double spare;   /* second normal of the last polar-method pair */
    bool has_spare;
} ag_rng;

void ag_rng_seed(ag_rng *rng, uint64_t seed);
uint64_t ag_rng_next(ag_rng *rng);               /* 64 random bits */
double ag_rng_uniform(ag_rng *rng);              /* in [0, 1), 53 bits */
double ag_rng_normal(ag_rng *rng);               /* N(0, 1) */
uint64_t ag_rng_below(ag_rng *rng, uint64_t n);  /* in [0, n), unbiased; 0 if n == 0 */

/* --------------------------------------------------------------- tensors */

/* Leaf tensors: row-major, rank 0..AG_MAX_RANK. shape may be NULL when rank
 * is 0 (a scalar). The caller owns the result and frees it with
 * ag_tensor_free. They return NULL when dtype or rank is invalid, shape is
 * NULL with rank > 0, the byte size overflows, or allocation fails; then
 * ag_last_status() and ag_last_error() say why.
 * AG_SHAPE(3, 4) expands to the two arguments `shape, rank`. */
#define AG_SHAPE(...) (const size_t[]){__VA_ARGS__}, \
    (sizeof((const size_t[]){__VA_ARGS__}) / sizeof(size_t))

ag_tensor *ag_zeros(ag_dtype dt, const size_t *shape, size_t rank);
ag_tensor *ag_ones(ag_dtype dt, const size_t *shape, size_t rank);
ag_tensor *ag_full(ag_dtype dt, const size_t *shape, size_t rank, double value);
ag_tensor *ag_scalar(ag_dtype dt, double value);                 /* rank 0 */
/* Copies numel elements from data, which holds elements of dtype dt. */
ag_tensor *ag_from_data(ag_dtype dt, const size_t *shape, size_t rank, const void *data);
/* Wraps caller-owned memory without copying: data (and grad, if not NULL)
 * must hold numel elements of dtype dt and outlive the tensor. With grad
 * NULL, a grad buffer is allocated when requires_grad is set. */
ag_tensor *ag_view(ag_dtype dt, const size_t *shape, size_t rank, void *data, void *grad);
/* Uniform in [lo, hi) and normal N(mean, std^2), drawn in row-major order. */
ag_tensor *ag_rand_uniform(ag_dtype dt, const size_t *shape, size_t rank,
                           double lo, double hi, ag_rng *rng);
ag_tensor *ag_rand_normal(ag_dtype dt, const size_t *shape, size_t rank,
                          double mean, double std, ag_rng *rng);
/* A leaf over numel(shape) elements of base's data (and grad, when base
 * has one) from element offset on, without copying: a reshape or a slice
 * of a leaf that needs no tape (e.g. labels [n] seen as [n, 1]). The view
 * keeps base alive until the view is freed; it starts with base's
 * requires_grad. NULL when base is NULL, freed or an op result, or the
 * shape does not fit (ag_last_error says which). */
ag_tensor *ag_leaf_view(ag_tensor *base, size_t offset, const size_t *shape, size_t rank);
/* Why the calling thread's last leaf constructor (ag_zeros ... ag_leaf_view)
 * returned NULL: a status and a message naming the constructor and the
 * cause ("ag_zeros: rank 9 is more than 8"); AG_OK and "" after one that
 * succeeded. Per thread, as errno. */
ag_status ag_last_status(void);
const char *ag_last_error(void);
/* Frees a leaf tensor (and the grad buffer it allocated). NULL is a no-op;
 * a tensor returned by an op belongs to its tape and is left alone. If a
 * tape still uses the leaf (an op of its current generation took it), the
 * memory stays until that tape's next reset or free: its records and
 * backward stay valid, and an op given the freed leaf reports it. */
void ag_tensor_free(ag_tensor *x);

/* Marks a leaf as a parameter whose gradient backward accumulates. Setting
 * it allocates a zeroed grad buffer unless the leaf has one.
 * Returns AG_ERR_NULL, AG_ERR_STATE (x is an op result), AG_ERR_NOMEM. */
ag_status ag_set_requires_grad(ag_tensor *x, bool on);
bool ag_requires_grad(const ag_tensor *x);

/* Accessors; all accept NULL (returning NULL / 0). Data is row-major,
 * contiguous, of the tensor's dtype: cast with (float *) or (double *). */
ag_dtype ag_tensor_dtype(const ag_tensor *x);
size_t ag_tensor_rank(const ag_tensor *x);
const size_t *ag_tensor_shape(const ag_tensor *x);
size_t ag_tensor_numel(const ag_tensor *x);
void *ag_data(const ag_tensor *x);
/* The gradient: for a leaf that requires grad, its accumulated gradient;
 * for an op result, NULL unless ag_retain_grad was called before backward. */
void *ag_grad(const ag_tensor *x);
/* Element i (row-major) of the data / grad as a double; NaN if out of range
 * or there is no grad. ag_item(x) is ag_get(x, 0). */
double ag_get(const ag_tensor *x, size_t i);
double ag_get_grad(const ag_tensor *x, size_t i);
double ag_item(const ag_tensor *x);
/* Sets every element of the grad to 0. NULL or no grad is a no-op. */
void ag_zero_grad(ag_tensor *x);
/* x's shape as "[3,4]" ("[]" for a scalar) into buf of cap bytes, cut to
 * fit; returns buf. For messages of code built on the engine. */
const char *ag_shape_str(const ag_tensor *x, char *buf, size_t cap);
/* A name shown in DOT output and error messages; copied, cut to 31 bytes. */
void ag_tensor_set_name(ag_tensor *x, const char *name);
const char *ag_tensor_name(const ag_tensor *x);   /* "" when unnamed */
/* Prints name, shape, dtype and values (numpy style, long axes elided),
 * then the grad when x has one. AG_ERR_NULL, or AG_ERR_IO if writing fails. */
ag_status ag_tensor_print(const ag_tensor *x, FILE *out);

/* ------------------------------------------------------------------ tape */

/* A new, empty tape that records; NULL on allocation failure. */
ag_tape *ag_tape_new(void);
/* Frees the tape and every tensor its ops returned. NULL is a no-op. */
void ag_tape_free(ag_tape *t);
/* Drops every record and op result and clears the error; the arena's
 * memory is kept for the next step, so a steady-state step allocates
 * nothing. It costs O(1) plus one step per distinct leaf the tape used.
 *
 * What happens to a handle kept across the reset: the tape keeps two
 * arenas and alternates between them, so the op results of the generation
 * just ended are never overwritten by the next one; an op or ag_backward
 * given such a handle reports AG_ERR_STATE naming the op and the argument,
 * however many ops have run since. A handle two or more resets old, given
 * to the tape that made it, is reported too, unless a newer result's
 * header now starts at its very address: then it reads as that result.
 * Given to another tape after its memory was reused, it is not safe to
 * use (it may read as garbage). In AddressSanitizer builds every byte of an ended
 * generation is poisoned, so such a handle, or a raw data pointer kept
 * across a reset, is reported when read. */
void ag_tape_reset(ag_tape *t);
/* Recording on (the default) or off; returns the previous setting. With
 * recording off, ops compute values and record nothing (inference). */
bool ag_tape_set_recording(ag_tape *t, bool on);
bool ag_tape_recording(const ag_tape *t);
/* Checked mode (off by default, as PyTorch's anomaly detection): every op,
 * forward and backward, checks its results, and the first NaN or Inf puts
 * the tape in error (AG_ERR_NUMERIC) with a message naming the op, the
 * element, and its inputs' shapes and names. Returns the previous setting. */
bool ag_tape_set_checked(ag_tape *t, bool on);
/* The first error since the last reset (AG_OK if none) and its message
 * ("" if none). A NULL tape reports AG_ERR_NULL. */
ag_status ag_tape_status(const ag_tape *t);
const char *ag_tape_error(const ag_tape *t);
/* Threads the tape's large ops may use: n (at most 1024), or with n == 0
 * (the default) one per physical core this process may run on (its
 * affinity mask on Linux, hyperthread siblings counted once; else the
 * online CPUs). An op takes one thread per 16k elements of work (GEMM per
 * its own grain), at most these, so small ops stay on the calling thread.
 * Results are bitwise the same for any count. The threads start with the
 * first op big enough to split. */
void ag_tape_set_threads(ag_tape *t, size_t n);
/* The threads the tape's ops run on, the caller included: the pool's size
 * once started (1 if it could not start), before that the count it will
 * start with. */
size_t ag_tape_threads(const ag_tape *t);
/* Number of records on the tape. */
size_t ag_tape_size(const ag_tape *t);

/* The matrix-product kernels this process runs, as a static string: the
 * vector instruction set and the register tiles (rows x columns of C),
 * e.g. "avx512 (f32 14x32, f64 14x16)". The set is the best the CPU and
 * its OS support (portable, avx2 = AVX2 + FMA, avx512 = x86-64-v4), chosen
 * once from the CPU's feature bits; the environment variable
 * AG_ISA=portable, avx2 or avx512, read then, caps it. */
const char *ag_kernel_name(void);

/* Backpropagates from y, which must have one element, with seed 1: every
 * tensor that requires grad and that y depends on gets += dy/dx. Grads
 * accumulate across calls until zeroed (ag_zero_grad). Returns the tape's
 * status; errors: y NULL, from another tape, y not a scalar, or y does not
 * require grad (AG_ERR_STATE). */
ag_status ag_backward(ag_tape *t, ag_tensor *y);
/* As ag_backward, with the caller's seed gradient dL/dy (same shape and
 * dtype as y) instead of 1; y may have any shape. */
ag_status ag_backward_seed(ag_tape *t, ag_tensor *y, const ag_tensor *seed);
/* Keep the gradient of op result x in ag_grad(x) after backward (as
 * PyTorch's retain_grad), e.g. to read delta = dC/dz of a layer. Call it
 * before backward. A no-op for leaves and NULL. */
void ag_retain_grad(ag_tensor *x);

/* ag_gradients flag: record the backward pass itself, so that the
 * gradients can enter further ops and be differentiated again. */
#define AG_CREATE_GRAPH 1u

/* The gradients dy/dx of a one-element y with respect to inputs[0..n)
 * (leaves or op results that require grad), as new tensors on t: grads[i]
 * has inputs[i]'s shape (zeros when y does not depend on it). Leaves' own
 * grads are left untouched. Without AG_CREATE_GRAPH the fused kernels of
 * ag_backward compute them and they are constants; with it the backward is
 * recorded with the engine's ops (as PyTorch's create_graph=True): a
 * gradient is an ordinary tensor that can be reduced and differentiated
 * again, to any order (Hessian-vector products, Newton steps, gradient
 * penalties). Returns the tape's status; errors as ag_backward, and
 * AG_ERR_STATE for an input that does not require grad or, with
 * AG_CREATE_GRAPH, a tape that does not record. */
ag_status ag_gradients(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                       ag_tensor **grads, unsigned flags);

/* Hessian-vector products of a one-element y: hv[i] = Σ_j ∂²y/∂x_i∂x_j · v_j
 * for the inputs x_i and directions v_i (tensors of the inputs' shapes and
 * dtypes), as constants on t (a gradient through AG_CREATE_GRAPH, then the
 * gradient of Σ_i <grad_i, v_i>). Errors: ag_gradients', AG_ERR_SHAPE for a
 * direction that does not fit its input. */
ag_status ag_hvp(ag_tape *t, ag_tensor *y, size_t n, ag_tensor *const *inputs,
                 ag_tensor *const *v, ag_tensor **hv);
/* The dense Hessian of a one-element y with respect to x (N elements), an
 * [N, N] constant on t: row k is the gradient of ∂y/∂x_k. N backward passes:
 * for small inputs (a logistic regression's weights, a test). */
ag_status ag_hessian(ag_tape *t, ag_tensor *y, ag_tensor *x, ag_tensor **H);

/* Writes the recorded graph as Graphviz DOT: one node per tensor (name or
 * op, shape, dtype; double border if it holds a grad), one edge per input. */
ag_status ag_tape_dot(const ag_tape *t, FILE *out);

/* ------------------------------------- for layers built on the engine
 * (nn uses these): checking arguments and raising errors the engine's way,
 * memory through the allocator hook, and the tape's threads. */

/* Allocates n bytes through the allocator hook (ag_set_allocator); NULL on
 * failure or n == 0. Free with ag_free, giving the same n. */
void *ag_alloc(size_t n);
/* Frees p (from ag_alloc, n bytes) through the hook. NULL is a no-op. */
void ag_free(void *p, size_t n);
/* Calls fn(ctx, lo, hi) on chunks that together cover [0, n) once: one
 * thread per 16k of n, at most t's threads; below 32k one call
 * fn(ctx, 0, n) on the calling thread (also when t is NULL). For layers built on the engine
 * (nn's optimizer step uses it); fn must write only its own chunk's outputs,
 * so that the result does not depend on the threads. */
typedef void (*ag_range_fn)(void *ctx, size_t lo, size_t hi);
void ag_parallel_for(ag_tape *t, size_t n, ag_range_fn fn, void *ctx);
/* Puts t in error with status s (not AG_OK) and a printf-style message,
 * unless it holds an error already (the first wins): for layers built on
 * the engine that check their own arguments. Returns the tape's status. */
ag_status ag_tape_fail(ag_tape *t, ag_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Checks a tensor before a layer built on the engine uses it on t, as every
 * op checks its inputs: x NULL, made on another tape, a stale handle (made
 * before t's last reset) or a freed leaf puts t in error with "FN: ARG is
 * ..." (AG_ERR_NULL or AG_ERR_STATE). Returns the tape's status. */
ag_status ag_tape_check_input(ag_tape *t, ag_tensor *x, const char *fn, const char *arg);

/* ------------------------------------------------------------------- ops
 * Each returns a tensor owned by the tape, or NULL with the tape's status
 * set. Binary elementwise ops broadcast as numpy. The math beside each. */

ag_tensor *ag_add(ag_tape *t, ag_tensor *a, ag_tensor *b);   /* a + b */
ag_tensor *ag_sub(ag_tape *t, ag_tensor *a, ag_tensor *b);   /* a - b */
ag_tensor *ag_mul(ag_tape *t, ag_tensor *a, ag_tensor *b);   /* a * b */
ag_tensor *ag_div(ag_tape *t, ag_tensor *a, ag_tensor *b);   /* a / b */

ag_tensor *ag_neg(ag_tape *t, ag_tensor *x);                 /* -x */
ag_tensor *ag_exp(ag_tape *t, ag_tensor *x);                 /* e^x */
ag_tensor *ag_log(ag_tape *t, ag_tensor *x);                 /* ln x */
ag_tensor *ag_sqrt(ag_tape *t, ag_tensor *x);                /* sqrt x */
ag_tensor *ag_pow(ag_tape *t, ag_tensor *x, double p);       /* x^p */
ag_tensor *ag_abs(ag_tape *t, ag_tensor *x);                 /* |x|, d/dx = sign x (0 at 0) */
ag_tensor *ag_sigmoid(ag_tape *t, ag_tensor *x);             /* 1 / (1 + e^-x) */
ag_tensor *ag_tanh(ag_tape *t, ag_tensor *x);                /* tanh x */
ag_tensor *ag_relu(ag_tape *t, ag_tensor *x);                /* max(x, 0) */
ag_tensor *ag_leaky_relu(ag_tape *t, ag_tensor *x, double slope); /* x > 0 ? x : slope x */
ag_tensor *ag_softplus(ag_tape *t, ag_tensor *x);            /* ln(1 + e^x) */
ag_tensor *ag_add_scalar(ag_tape *t, ag_tensor *x, double c); /* x + c */
ag_tensor *ag_scale(ag_tape *t, ag_tensor *x, double c);     /* c x */

/* Matrix product, as torch.matmul: [m,k]·[k,n] -> [m,n], y = a w, ga = gy wᵀ,
 * gw = aᵀ gy; batched [..,m,k]·[..,k,n] -> [..,m,n] with the batch axes
 * broadcast as numpy's (any rank; a rank-2 operand is shared by every
 * batch entry) and gradients summed over the broadcast ones; a 1-D a is a
 * row [1,k] and a 1-D w a column [k,1], the added axis left out of y
 * ([k]·[k] -> a scalar). AG_ERR_SHAPE for a rank-0 operand, inner
 * dimensions that differ, or batch axes that do not broadcast. */
ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b);
/* Swaps the last two axes (rank >= 2): [.., m, n] -> [.., n, m]. */
ag_tensor *ag_transpose(ag_tape *t, ag_tensor *x);
/* Same elements, new shape (equal element count); shares x's data. */
ag_tensor *ag_reshape(ag_tape *t, ag_tensor *x, const size_t *shape, size_t rank);
/* Joins a and b along axis; other axes must be equal. */
ag_tensor *ag_concat(ag_tape *t, ag_tensor *a, ag_tensor *b, int axis);
/* Elements start..end-1 along axis (0 <= start <= end <= shape[axis]). */
ag_tensor *ag_slice(ag_tape *t, ag_tensor *x, int axis, size_t start, size_t end);
/* Converts to dtype dt; the gradient is converted back. */
ag_tensor *ag_cast(ag_tape *t, ag_tensor *x, ag_dtype dt);
/* The same values, cut off from the graph: no gradient flows through it. */
ag_tensor *ag_detach(ag_tape *t, ag_tensor *x);

/* Reductions. An axis may be negative (counted from the end); keepdim
 * keeps the reduced axis with size 1. Reducing over all elements gives a
 * rank-0 tensor. */
ag_tensor *ag_sum(ag_tape *t, ag_tensor *x);                      /* Σ x */
ag_tensor *ag_mean(ag_tape *t, ag_tensor *x);                     /* Σ x / n */
ag_tensor *ag_sum_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
ag_tensor *ag_mean_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* Maximum along axis; the gradient goes to the first maximal element. */
ag_tensor *ag_max_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* softmax = e^(x - max) / Σ e^(x - max); log_softmax = x - max - ln Σ e^(x - max) */
ag_tensor *ag_softmax(ag_tape *t, ag_tensor *x, int axis);
ag_tensor *ag_log_softmax(ag_tape *t, ag_tensor *x, int axis);

/* Losses; each returns a rank-0 tensor. a and y have the same shape. */
/* mean((a - y)^2) */
ag_tensor *ag_mse(ag_tape *t, ag_tensor *a, ag_tensor *y);
/* Σ (a - y)^2 / (2n), n = rows of a (shape[0]; 1 for rank < 2): the cost of
 * Nielsen's network.py. */
ag_tensor *ag_quadratic_cost(ag_tape *t, ag_tensor *a, ag_tensor *y);
/* mean(-(y ln p + (1-y) ln(1-p))), logs clamped at -100 as PyTorch;
 * p must lie in [0, 1] (AG_ERR_VALUE otherwise). */
ag_tensor *ag_bce(ag_tape *t, ag_tensor *p, ag_tensor *y);
/* bce(sigmoid(z), y), computed stably: max(z,0) - z y + ln(1 + e^-|z|). */
ag_tensor *ag_bce_with_logits(ag_tape *t, ag_tensor *z, ag_tensor *y);
/* Logits z [N,C] and class indices c [N] (integers in [0, C) stored in
 * either float dtype): mean over rows of -log_softmax(z)[row, c[row]]. */
ag_tensor *ag_cross_entropy(ag_tape *t, ag_tensor *z, ag_tensor *c);

/* ------------------------------------------------------ second op set:
 * elementwise (broadcast where binary) */

ag_tensor *ag_sin(ag_tape *t, ag_tensor *x);                 /* sin x, d/dx = cos x */
ag_tensor *ag_cos(ag_tape *t, ag_tensor *x);                 /* cos x, d/dx = -sin x */
ag_tensor *ag_tan(ag_tape *t, ag_tensor *x);                 /* tan x, d/dx = 1 + tan² x */
ag_tensor *ag_asin(ag_tape *t, ag_tensor *x);                /* asin x, d/dx = 1/√(1 - x²) (NaN outside [-1, 1]) */
ag_tensor *ag_acos(ag_tape *t, ag_tensor *x);                /* acos x, d/dx = -1/√(1 - x²) */
ag_tensor *ag_atan(ag_tape *t, ag_tensor *x);                /* atan x, d/dx = 1/(1 + x²) */
ag_tensor *ag_sinh(ag_tape *t, ag_tensor *x);                /* sinh x, d/dx = cosh x */
ag_tensor *ag_cosh(ag_tape *t, ag_tensor *x);                /* cosh x, d/dx = sinh x */
ag_tensor *ag_log1p(ag_tape *t, ag_tensor *x);               /* ln(1 + x), exact for tiny x; d/dx = 1/(1 + x) */
ag_tensor *ag_expm1(ag_tape *t, ag_tensor *x);               /* e^x - 1, exact for tiny x; d/dx = e^x */
ag_tensor *ag_erf(ag_tape *t, ag_tensor *x);                 /* erf x, d/dx = 2/√π e^(-x²) */
ag_tensor *ag_square(ag_tape *t, ag_tensor *x);              /* x², d/dx = 2x */
ag_tensor *ag_reciprocal(ag_tape *t, ag_tensor *x);          /* 1/x, d/dx = -1/x² */
ag_tensor *ag_rsqrt(ag_tape *t, ag_tensor *x);               /* 1/√x, d/dx = -1/(2 x^1.5) */
/* x Φ(x), Φ the exact normal CDF (erf form, not the tanh approximation),
 * computed as x erfc(-x/√2)/2 so it stays exact for x << 0;
 * d/dx = Φ(x) + x φ(x) */
ag_tensor *ag_gelu(ag_tape *t, ag_tensor *x);
ag_tensor *ag_silu(ag_tape *t, ag_tensor *x);                /* x σ(x), d/dx = σ(x)(1 + x(1 - σ(x))) */
/* x > 0 ? x : alpha (e^x - 1); d/dx = 1 for x > 0, else alpha e^x */
ag_tensor *ag_elu(ag_tape *t, ag_tensor *x, double alpha);
/* min(max(x, lo), hi) (NaN stays NaN; an infinite bound clamps one side
 * only); d/dx = 1 strictly inside (lo, hi), 0 at the bounds and outside.
 * Errors: AG_ERR_VALUE when lo > hi or a bound is NaN. */
ag_tensor *ag_clamp(ag_tape *t, ag_tensor *x, double lo, double hi);

/* Binary, broadcast as numpy (AG_ERR_SHAPE when the shapes do not; the
 * gradient of a broadcast input sums over the axes it was spread along). */
/* max(a, b); the gradient goes to the larger, half to each on a tie (as
 * PyTorch); NaN in either gives NaN */
ag_tensor *ag_maximum(ag_tape *t, ag_tensor *a, ag_tensor *b);
/* min(a, b); the gradient goes to the smaller, half to each on a tie */
ag_tensor *ag_minimum(ag_tape *t, ag_tensor *a, ag_tensor *b);
/* atan2(a, b), the angle of (b, a); d/da = b/(a² + b²), d/db = -a/(a² + b²) */
ag_tensor *ag_atan2(ag_tape *t, ag_tensor *a, ag_tensor *b);
/* a^b; d/da = b a^(b-1) (0 where b = 0), d/db = a^b ln a (0 where a = 0
 * and b >= 0, as PyTorch); a < 0 with b not an integer gives NaN */
ag_tensor *ag_pow_tensor(ag_tape *t, ag_tensor *a, ag_tensor *b);
/* cond ≠ 0 ? a : b elementwise, the three broadcast together; a and b take
 * the gradient where they are chosen (summed over broadcast axes), cond
 * none. cond may be f32 or f64 whatever a's dtype; a and b must agree
 * (AG_ERR_DTYPE). A NaN in cond counts as true. */
ag_tensor *ag_where(ag_tape *t, ag_tensor *cond, ag_tensor *a, ag_tensor *b);

/* ------------------------------------------------ second op set: shapes,
 * indexing, products of any rank */

/* Axes reordered as torch.permute: y's axis d is x's axis axes[d]; n must
 * be x's rank and axes a permutation of 0..n-1 (negative ones count from
 * the end), else AG_ERR_VALUE (AG_ERR_NULL for NULL axes). gx = gy with
 * the axes put back. */
ag_tensor *ag_permute(ag_tape *t, ag_tensor *x, const int *axes, size_t n);
/* x broadcast to shape (numpy's broadcast_to: axes aligned from the end,
 * each of x's is 1 or the target's); gx = gy summed over the broadcast
 * axes. AG_ERR_SHAPE when x does not broadcast to it, AG_ERR_VALUE for a
 * rank over AG_MAX_RANK. */
ag_tensor *ag_expand(ag_tape *t, ag_tensor *x, const size_t *shape, size_t rank);
/* The slices of x along axis picked by idx [k] (an embedding lookup):
 * y = x with axis k long, y[..j..] = x[..idx[j]..]; repeats allowed, their
 * gradients add up; idx (whole numbers in either float dtype) takes no
 * gradient. AG_ERR_VALUE for a bad axis or an index that is not a whole
 * number in [0, x's size along axis) (naming its position), AG_ERR_SHAPE
 * for idx of rank > 1. */
ag_tensor *ag_index_select(ag_tape *t, ag_tensor *x, int axis, ag_tensor *idx);
/* torch.gather: y has idx's shape, y[..j..] = x[..idx[..j..]..] with the
 * index along axis; gx[..idx[..j..]..] += gy[..j..]. idx has x's rank and
 * no larger sizes off axis (AG_ERR_SHAPE); its values as ag_index_select's. */
ag_tensor *ag_gather(ag_tape *t, ag_tensor *x, int axis, ag_tensor *idx);

/* ---------------------------------------- second op set: reductions,
 * normalisation, losses */

/* Along one axis, as ag_max_axis (axis may be negative; keepdim keeps it
 * with size 1). Errors: AG_ERR_VALUE for an axis out of range. */
/* min over axis; the gradient goes to the first minimal element (NaN wins).
 * An empty axis is AG_ERR_SHAPE. */
ag_tensor *ag_min_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* Π x over axis, d/dx_k = Π_{j≠k} x_j (exact with zeros: no division);
 * 1 over an empty axis. */
ag_tensor *ag_prod_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* population variance 1/n Σ (x - mean)², d/dx_k = 2 (x_k - mean) / n;
 * NaN over an empty axis. */
ag_tensor *ag_var_axis(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* ln Σ e^x over axis, as m + ln Σ e^(x - m), m the maximum: finite for
 * any finite x; d/dx = softmax(x); -inf over an empty axis. */
ag_tensor *ag_logsumexp(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* The index of the first maximal (minimal) element along axis, as a value
 * of x's dtype (exact up to 2^24 in f32); NaN counts as the extreme. The
 * result never requires grad: no gradient flows back through an index.
 * An empty axis is AG_ERR_SHAPE. */
ag_tensor *ag_argmax(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
ag_tensor *ag_argmin(ag_tape *t, ag_tensor *x, int axis, bool keepdim);
/* ‖x‖ = sqrt(Σ x²) over all elements (rank 0), without overflow or
 * underflow of the squares; d/dx = x / ‖x‖, 0 at x = 0. */
ag_tensor *ag_norm(ag_tape *t, ag_tensor *x);
/* Σ (mean) over the n axes at once (each may be negative; n = 0 reduces
 * nothing, as numpy's axis=()); keepdim keeps each with size 1. Errors:
 * AG_ERR_NULL (axes NULL with n > 0), AG_ERR_VALUE (an axis out of range
 * or given twice). */
ag_tensor *ag_sum_axes(ag_tape *t, ag_tensor *x, const int *axes, size_t n, bool keepdim);
ag_tensor *ag_mean_axes(ag_tape *t, ag_tensor *x, const int *axes, size_t n, bool keepdim);

/* (x - mean) / sqrt(var + eps) over the last axis, population variance; no
 * affine part: scale and shift with ag_mul and ag_add. Errors: AG_ERR_SHAPE
 * (rank 0), AG_ERR_VALUE (eps negative, NaN or infinite). */
ag_tensor *ag_layer_norm(ag_tape *t, ag_tensor *x, double eps);
/* Training with p > 0: each element zeroed with probability p, the rest
 * scaled by 1/(1-p); the mask is drawn from rng (one ag_rng_uniform per
 * element, row-major) when the op runs and reused by the backward.
 * Otherwise (training false, or p = 0) the identity, rng unused (may be
 * NULL). Errors: AG_ERR_VALUE (p outside [0, 1)), AG_ERR_NULL (rng NULL
 * when it is needed). */
ag_tensor *ag_dropout(ag_tape *t, ag_tensor *x, double p, bool training, ag_rng *rng);

/* Log-probabilities lp [N,C] (e.g. ag_log_softmax) and class indices c [N]
 * as in ag_cross_entropy: mean over rows of -lp[row, c[row]]. Errors:
 * AG_ERR_SHAPE, AG_ERR_VALUE (a class not an integer in [0, C)). */
ag_tensor *ag_nll_loss(ag_tape *t, ag_tensor *logp, ag_tensor *c);
/* mean of 0.5 d² where |d| < delta, else delta (|d| - 0.5 delta), d = a - y
 * (same shapes); d/da = d, else delta sign d. delta <= 0 or NaN is
 * AG_ERR_VALUE. */
ag_tensor *ag_huber_loss(ag_tape *t, ag_tensor *a, ag_tensor *y, double delta);

/* -------------------------------------------------------------- checking */

/* A function of some input tensors recorded on t; returns its output (any
 * shape) or NULL with t's status set. */
typedef ag_tensor *(*ag_fn)(ag_tape *t, ag_tensor *const *inputs, void *ctx);

typedef struct {
    bool passed;          /* every element within atol + rtol * |numeric| */
    double max_abs_err;   /* largest |numeric - analytic| */
    double max_rel_err;   /* largest |numeric - analytic| / max(|numeric|, |analytic|) */
    size_t worst_input;   /* the element that fails worst: largest error */
    size_t worst_index;   /* over its tolerance atol + rtol * |numeric| */
    double numeric;       /* the two gradients there */
    double analytic;
    size_t checked;       /* elements compared */
    char message[256];    /* why the check could not run ("" when it ran) */
} ag_gradcheck_report;

/* Compares backward's gradient of fn with central finite differences
 * (step eps, 1e-6 if eps <= 0) in f64. The inputs must be f64 leaves; every
 * input is checked (requires_grad is set for the run and restored, as are
 * their grads and values; an input that had no grad buffer keeps a zeroed
 * one). A non-scalar output y is reduced to Σ r·y with a
 * fixed random r, so every element takes part. Returns AG_OK when the check
 * ran (see report->passed), else the error of fn or of the arguments, with
 * report->message saying why (fn's own message when fn failed). */
ag_status ag_gradcheck(ag_fn fn, void *ctx, size_t n_inputs, ag_tensor *const *inputs,
                       double eps, double atol, double rtol, ag_gradcheck_report *report);

/* Second derivatives, checked as ag_gradcheck checks the first: for every
 * input element e, the central difference (step eps) of the whole gradient
 * under e is compared with the derivative of gradient element e by the
 * recorded backward (ag_gradients with AG_CREATE_GRAPH; the Hessian is
 * symmetric). The same inputs, restoring, projection and report (the
 * compared element is the gradient's: worst_input, worst_index). */
ag_status ag_gradgradcheck(ag_fn fn, void *ctx, size_t n_inputs, ag_tensor *const *inputs,
                           double eps, double atol, double rtol, ag_gradcheck_report *report);

typedef struct {
    size_t worst_index;   /* element with the largest |a - b| */
    double max_abs_err;
    double a, b;          /* the two values there */
} ag_close_report;

/* True when |a[i] - b[i]| <= atol + rtol * |b[i]| for all n elements of
 * dtype dt (NaN is never close). report may be NULL. For checking a
 * hand-derived gradient: ag_allclose(AG_F64, n, ag_grad(W), mine, ...). */
bool ag_allclose(ag_dtype dt, size_t n, const void *a, const void *b,
                 double rtol, double atol, ag_close_report *report);

#ifdef __cplusplus
}
#endif
#endif
