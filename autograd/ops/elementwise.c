/* elementwise.c: unary ops, scalar ops, and binary ops with numpy
 * broadcasting. Each op is one block: AG_UNARY(name, y, dx) or
 * AG_BINARY(name, y, da, db) writes its forward and backward loops (for
 * both dtypes, split over the tape's threads when large) and its
 * definition. In y: the input x (a, b for binary ops) and c, the op's
 * scalar; in the gradients also the result y and the incoming gradient g.
 * Every backward adds (+=) into the input gradients. */
#include "../internal.h"

#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------ broadcasting
 * The result's index space, with each input's element stride per axis (0
 * along broadcast axes). Adjacent axes that are contiguous in all three
 * are merged, so the common cases (same shape, a row vector added to every
 * row, a scalar) become one or two long loops. */
typedef struct {
    size_t rank;
    size_t n[AG_MAX_RANK];
    size_t sa[AG_MAX_RANK], sb[AG_MAX_RANK];
} bcast;

static size_t dim_from_end(const ag_tensor *x, size_t k) /* k-th axis from the right */
{
    return k < x->rank ? x->shape[x->rank - 1 - k] : 1;
}

static ag_status binary_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    size_t rank = a->rank > b->rank ? a->rank : b->rank;
    for (size_t k = 0; k < rank; k++) {
        size_t da = dim_from_end(a, k), db = dim_from_end(b, k);
        if (da != db && da != 1 && db != 1) {
            char sa[AG_SHAPE_BUF], sb[AG_SHAPE_BUF];
            return ag__error(t, AG_ERR_SHAPE,
                             "ag_%s: shapes %s and %s do not broadcast (axis %zu from the end: %zu vs %zu)",
                             r->def->name, ag__shape_str(a, sa, sizeof sa),
                             ag__shape_str(b, sb, sizeof sb), k, da, db);
        }
        out->shape[rank - 1 - k] = da == 1 ? db : da;
    }
    out->rank = rank;
    return AG_OK;
}

static void bcast_init(bcast *bc, const ag_tensor *a, const ag_tensor *b, const ag_tensor *y)
{
    if ((a->numel == y->numel || a->numel == 1) && (b->numel == y->numel || b->numel == 1)) {
        /* the common cases in one run: same shapes, or a scalar operand */
        bc->rank = 1;
        bc->n[0] = y->numel;
        bc->sa[0] = a->numel == y->numel;
        bc->sb[0] = b->numel == y->numel;
        return;
    }
    size_t stride_a = 1, stride_b = 1, rank = 0;
    size_t n[AG_MAX_RANK], sa[AG_MAX_RANK], sb[AG_MAX_RANK];
    for (size_t k = 0; k < y->rank; k++) { /* from the last axis back */
        size_t ny = dim_from_end(y, k), da = dim_from_end(a, k), db = dim_from_end(b, k);
        if (ny == 1)
            continue;
        size_t ea = da == 1 ? 0 : stride_a, eb = db == 1 ? 0 : stride_b;
        if (rank > 0 && sa[rank - 1] * n[rank - 1] == ea && sb[rank - 1] * n[rank - 1] == eb) {
            n[rank - 1] *= ny; /* continues the axis after it in both (or both broadcast) */
        } else {
            n[rank] = ny;
            sa[rank] = ea;
            sb[rank] = eb;
            rank++;
        }
        stride_a *= da;
        stride_b *= db;
    }
    bc->rank = rank;
    for (size_t i = 0; i < rank; i++) { /* back to outermost-first order */
        bc->n[i] = n[rank - 1 - i];
        bc->sa[i] = sa[rank - 1 - i];
        bc->sb[i] = sb[rank - 1 - i];
    }
    if (rank == 0) { /* every axis has size 1: one element */
        bc->rank = 1;
        bc->n[0] = 1;
        bc->sa[0] = bc->sb[0] = 0;
    }
}

/* Runs body over the window [lo, hi) of the last merged axis, once per
 * position of the outer axes: ia, ib, iy index the run's first element of
 * a, b and the result, cnt is its length, sa_ and sb_ the inputs' steps
 * along it. The odometer walks the outer axes. */
#define BCAST_FOR(bc, lo, hi, ...)                                              \
    do {                                                                        \
        size_t idx_[AG_MAX_RANK] = {0}, last_ = (bc)->rank - 1;                 \
        size_t sa_ = (bc)->sa[last_], sb_ = (bc)->sb[last_], cnt = (hi) - (lo); \
        size_t ia = (lo) * sa_, ib = (lo) * sb_, iy = (lo);                     \
        for (;;) {                                                              \
            __VA_ARGS__                                                         \
            iy += (bc)->n[last_];                                               \
            size_t d_ = last_;                                                  \
            while (d_-- > 0) {                                                  \
                ia += (bc)->sa[d_];                                             \
                ib += (bc)->sb[d_];                                             \
                if (++idx_[d_] < (bc)->n[d_])                                   \
                    break;                                                      \
                ia -= (bc)->sa[d_] * (bc)->n[d_];                               \
                ib -= (bc)->sb[d_] * (bc)->n[d_];                               \
                idx_[d_] = 0;                                                   \
            }                                                                   \
            if (d_ == (size_t)-1)                                               \
                break;                                                          \
        }                                                                       \
    } while (0)

/* A binary op's pass, cut along the last merged axis between threads. */
typedef struct {
    bcast bc;
    const ag_record *r;
    const void *gout;
    void *ga, *gb;
} binary_job;

static ag_status binary_run(ag_tape *t, const ag_record *r, const void *gout, void *gin[],
                            ag_range_fn fn)
{
    binary_job j = {.r = r, .gout = gout, .ga = gin ? gin[0] : NULL, .gb = gin ? gin[1] : NULL};
    bcast_init(&j.bc, r->in[0], r->in[1], r->out);
    size_t last = j.bc.rank - 1, n = j.bc.n[last], work = r->out->numel;
    /* backward: an input broadcast along the last axis sums over it, so
     * that pass stays on one thread */
    if (gin && ((j.ga && j.bc.sa[last] == 0) || (j.gb && j.bc.sb[last] == 0)))
        work = 0;
    ag__parallel_range(t, n, work, fn, &j);
    return AG_OK;
}

/* The forward loop runs over a window of the last merged axis; a
 * one-element result (the scalar graphs of micrograd-style code) skips the
 * broadcasting machinery. The backward adds a's gradient, then b's, so that
 * when a and b are one tensor each element still takes a's term first. */
#define AG_BINARY(NAME, Y, DA, DB)                                                        \
    static void NAME##_fwd(void *ctx, size_t lo, size_t hi)                               \
    {                                                                                     \
        const binary_job *j = ctx;                                                        \
        AG_DISPATCH(j->r->out->dtype, T, {                                                \
            const T *A_ = j->r->in[0]->data, *B_ = j->r->in[1]->data;                     \
            T *Y_ = j->r->out->data;                                                      \
            BCAST_FOR(&j->bc, lo, hi, {                                                   \
                const T *pa = A_ + ia, *pb = B_ + ib;                                     \
                T *py = Y_ + iy;                                                          \
                for (size_t i = 0; i < cnt; i++) {                                        \
                    const T a = pa[i * sa_], b = pb[i * sb_];                             \
                    py[i] = (Y);                                                          \
                }                                                                         \
            });                                                                           \
        });                                                                               \
    }                                                                                     \
    static void NAME##_bwd(void *ctx, size_t lo, size_t hi)                               \
    {                                                                                     \
        const binary_job *j = ctx;                                                        \
        AG_DISPATCH(j->r->out->dtype, T, {                                                \
            const T *A_ = j->r->in[0]->data, *B_ = j->r->in[1]->data;                     \
            const T *Y_ = j->r->out->data, *G_ = j->gout;                                 \
            T *GA_ = j->ga, *GB_ = j->gb;                                                 \
            if (GA_)                                                                      \
                BCAST_FOR(&j->bc, lo, hi, {                                               \
                    for (size_t i = 0; i < cnt; i++) {                                    \
                        const T a = A_[ia + i * sa_], b = B_[ib + i * sb_];               \
                        const T y = Y_[iy + i], g = G_[iy + i];                           \
                        (void)a, (void)b, (void)y;                                        \
                        GA_[ia + i * sa_] += (DA);                                        \
                    }                                                                     \
                });                                                                       \
            if (GB_)                                                                      \
                BCAST_FOR(&j->bc, lo, hi, {                                               \
                    for (size_t i = 0; i < cnt; i++) {                                    \
                        const T a = A_[ia + i * sa_], b = B_[ib + i * sb_];               \
                        const T y = Y_[iy + i], g = G_[iy + i];                           \
                        (void)a, (void)b, (void)y;                                        \
                        GB_[ib + i * sb_] += (DB);                                        \
                    }                                                                     \
                });                                                                       \
        });                                                                               \
    }                                                                                     \
    static ag_status NAME##_forward(ag_tape *t, ag_record *r)                             \
    {                                                                                     \
        if (r->out->numel == 1) {                                                         \
            AG_DISPATCH(r->out->dtype, T, {                                               \
                const T a = *(const T *)r->in[0]->data, b = *(const T *)r->in[1]->data;   \
                *(T *)r->out->data = (Y);                                                 \
            });                                                                           \
            return AG_OK;                                                                 \
        }                                                                                 \
        return binary_run(t, r, NULL, NULL, NAME##_fwd);                                  \
    }                                                                                     \
    static ag_status NAME##_backward(ag_tape *t, const ag_record *r, const void *gout,    \
                                     void *gin[])                                         \
    {                                                                                     \
        if (r->out->numel == 1) {                                                         \
            AG_DISPATCH(r->out->dtype, T, {                                               \
                const T a = *(const T *)r->in[0]->data, b = *(const T *)r->in[1]->data;   \
                const T y = *(const T *)r->out->data, g = *(const T *)gout;               \
                (void)a, (void)b, (void)y;                                                \
                if (gin[0])                                                               \
                    *(T *)gin[0] += (DA);                                                 \
                if (gin[1])                                                               \
                    *(T *)gin[1] += (DB);                                                 \
            });                                                                           \
            return AG_OK;                                                                 \
        }                                                                                 \
        return binary_run(t, r, gout, gin, NAME##_bwd);                                   \
    }                                                                                     \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 2, .same_dtype = true,       \
                                     .shape = binary_shape, .forward = NAME##_forward,    \
                                     .backward = NAME##_backward}

AG_BINARY(add, a + b, g, g);
AG_BINARY(sub, a - b, g, -g);
AG_BINARY(mul, a * b, g * b, g * a);
AG_BINARY(div, a / b, g / b, -(g * a / (b * b)));

/* ------------------------------------------------------------ unary ops */

typedef struct {
    const ag_record *r;
    const void *gout;
    void *gin;
} unary_job;

/* Each backward loop loads g before it chooses, so a choice (relu's mask)
 * compiles to a select, not a branch that would mispredict half the time. */
#define AG_UNARY(NAME, Y, DX)                                                             \
    static void NAME##_fwd(void *ctx, size_t lo, size_t hi)                               \
    {                                                                                     \
        const ag_record *r = ctx;                                                         \
        AG_DISPATCH(r->out->dtype, T, {                                                   \
            const T *X_ = r->in[0]->data, c = (T)r->attr.scalar;                          \
            T *Y_ = r->out->data;                                                         \
            (void)c;                                                                      \
            for (size_t i = lo; i < hi; i++) {                                            \
                const T x = X_[i];                                                        \
                Y_[i] = (Y);                                                              \
            }                                                                             \
        });                                                                               \
    }                                                                                     \
    static void NAME##_bwd(void *ctx, size_t lo, size_t hi)                               \
    {                                                                                     \
        const unary_job *u = ctx;                                                         \
        AG_DISPATCH(u->r->out->dtype, T, {                                                \
            const T *X_ = u->r->in[0]->data, *Y_ = u->r->out->data, *G_ = u->gout;        \
            const T c = (T)u->r->attr.scalar;                                             \
            T *GX_ = u->gin;                                                              \
            (void)c;                                                                      \
            for (size_t i = lo; i < hi; i++) {                                            \
                const T x = X_[i], y = Y_[i], g = G_[i];                                  \
                (void)x, (void)y;                                                         \
                GX_[i] += (DX);                                                           \
            }                                                                             \
        });                                                                               \
    }                                                                                     \
    static ag_status NAME##_forward(ag_tape *t, ag_record *r)                             \
    {                                                                                     \
        ag__parallel_range(t, r->out->numel, r->out->numel, NAME##_fwd, r);               \
        return AG_OK;                                                                     \
    }                                                                                     \
    static ag_status NAME##_backward(ag_tape *t, const ag_record *r, const void *gout,    \
                                     void *gin[])                                         \
    {                                                                                     \
        unary_job u = {r, gout, gin[0]};                                                  \
        ag__parallel_range(t, r->out->numel, r->out->numel, NAME##_bwd, &u);              \
        return AG_OK;                                                                     \
    }                                                                                     \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 1, .shape = ag__shape_same,  \
                                     .forward = NAME##_forward, .backward = NAME##_backward}

#define SIGMOID(T, x) ((x) >= 0 ? (T)1 / ((T)1 + exp(-(x))) : exp(x) / ((T)1 + exp(x)))

AG_UNARY(neg, -x, -g);
AG_UNARY(exp, exp(x), g * y);
AG_UNARY(log, log(x), g / x);
AG_UNARY(sqrt, sqrt(x), g / (2 * y));
/* p x^(p-1); x^0 is constant, even at x = 0 */
AG_UNARY(pow, pow(x, c), c != 0 ? g * c * pow(x, c - 1) : 0);
AG_UNARY(abs, fabs(x), x > 0 ? g : x < 0 ? -g : 0);
AG_UNARY(sigmoid, SIGMOID(T, x), g * y * (1 - y));
AG_UNARY(tanh, tanh(x), g * (1 - y * y));
AG_UNARY(relu, x > 0 ? x : 0, x > 0 ? g : 0);
AG_UNARY(leaky_relu, x > 0 ? x : c * x, x > 0 ? g : c * g);
/* max(x,0) + ln(1 + e^-|x|): no overflow for any x */
AG_UNARY(softplus, (x > 0 ? x : 0) + log1p(exp(-fabs(x))), g * SIGMOID(T, x));
AG_UNARY(add_scalar, x + c, g);
AG_UNARY(scale, c * x, c * g);

/* ------------------------------------------------------------ public API */

ag_tensor *ag_add(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_add, a, b, NULL); }
ag_tensor *ag_sub(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_sub, a, b, NULL); }
ag_tensor *ag_mul(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_mul, a, b, NULL); }
ag_tensor *ag_div(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_div, a, b, NULL); }
ag_tensor *ag_neg(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_neg, x, NULL, NULL); }
ag_tensor *ag_exp(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_exp, x, NULL, NULL); }
ag_tensor *ag_log(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_log, x, NULL, NULL); }
ag_tensor *ag_sqrt(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_sqrt, x, NULL, NULL); }
ag_tensor *ag_abs(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_abs, x, NULL, NULL); }
ag_tensor *ag_sigmoid(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_sigmoid, x, NULL, NULL); }
ag_tensor *ag_tanh(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_tanh, x, NULL, NULL); }
ag_tensor *ag_relu(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_relu, x, NULL, NULL); }
ag_tensor *ag_softplus(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_softplus, x, NULL, NULL); }

/* A unary op with its scalar parameter c. */
static ag_tensor *with_scalar(ag_tape *t, const ag_op_def *def, ag_tensor *x, double c)
{
    return ag__apply(t, def, x, NULL, &(ag_attr){.scalar = c});
}

ag_tensor *ag_pow(ag_tape *t, ag_tensor *x, double p) { return with_scalar(t, &ag__op_pow, x, p); }
ag_tensor *ag_leaky_relu(ag_tape *t, ag_tensor *x, double slope) { return with_scalar(t, &ag__op_leaky_relu, x, slope); }
ag_tensor *ag_add_scalar(ag_tape *t, ag_tensor *x, double c) { return with_scalar(t, &ag__op_add_scalar, x, c); }
ag_tensor *ag_scale(ag_tape *t, ag_tensor *x, double c) { return with_scalar(t, &ag__op_scale, x, c); }
