/* elementwise.c: unary ops, scalar ops, binary ops with numpy
 * broadcasting, and where (three inputs broadcast). Each op is one block:
 * AG_UNARY(name, y, dx) or AG_BINARY(name, y, da, db) writes its forward
 * and backward loops (for both dtypes, split over the tape's threads when
 * large) and its definition. In y: the input x (a, b for binary ops) and
 * c, c2, the op's scalars; in the gradients also the result y and the
 * incoming gradient g. Every backward adds (+=) into the input gradients. */
#include "../internal.h"

#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------ broadcasting
 * The result's index space, with each input's element stride per axis (0
 * along broadcast axes). Adjacent axes that are contiguous in every input
 * and the result are merged, so the common cases (same shape, a row vector added to every
 * row, a scalar) become one or two long loops. */
typedef struct {
    size_t rank;
    size_t n[AG_MAX_RANK];
    size_t sa[AG_MAX_RANK], sb[AG_MAX_RANK];
    size_t sc[AG_MAX_RANK]; /* a third input (where); all 0 for binary ops */
} bcast;

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

static size_t dim_from_end(const ag_tensor *x, size_t k) /* k-th axis from the right */
{
    return k < x->rank ? x->shape[x->rank - 1 - k] : 1;
}

/* The broadcast shape of r's first n inputs (2 or 3). */
static ALWAYS_INLINE ag_status broadcast_shape(ag_tape *t, ag_record *r, size_t n, ag_tensor *out)
{
    size_t rank = 0;
    for (size_t i = 0; i < n; i++)
        rank = r->in[i]->rank > rank ? r->in[i]->rank : rank;
    for (size_t k = 0; k < rank; k++) {
        size_t d[AG_MAX_INPUTS], dy = 1;
        bool ok = true;
        for (size_t i = 0; i < n; i++) {
            d[i] = dim_from_end(r->in[i], k);
            ok &= d[i] == 1 || dy == 1 || d[i] == dy;
            dy = d[i] == 1 ? dy : d[i];
        }
        if (!ok) {
            char s[AG_MAX_INPUTS][AG_SHAPE_BUF];
            for (size_t i = 0; i < n; i++)
                ag__shape_str(r->in[i], s[i], sizeof s[i]);
            if (n == 2)
                return ag__error(t, AG_ERR_SHAPE,
                                 "ag_%s: shapes %s and %s do not broadcast (axis %zu from the end: %zu vs %zu)",
                                 r->def->name, s[0], s[1], k, d[0], d[1]);
            return ag__error(t, AG_ERR_SHAPE,
                             "ag_%s: shapes %s, %s and %s do not broadcast (axis %zu from the end: %zu, %zu and %zu)",
                             r->def->name, s[0], s[1], s[2], k, d[0], d[1], d[2]);
        }
        out->shape[rank - 1 - k] = dy;
    }
    out->rank = rank;
    return AG_OK;
}

static ag_status binary_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    return broadcast_shape(t, r, 2, out);
}

/* c is a third input (where's condition), or NULL for a binary op. Inlined
 * into each caller, so that with c a constant NULL the binary ops' setup
 * is what it was before there were three. */
static ALWAYS_INLINE void bcast_init(bcast *bc, const ag_tensor *a, const ag_tensor *b,
                                     const ag_tensor *c, const ag_tensor *y)
{
    if ((a->numel == y->numel || a->numel == 1) && (b->numel == y->numel || b->numel == 1) &&
        (!c || c->numel == y->numel || c->numel == 1)) {
        /* the common cases in one run: same shapes, or a scalar operand */
        bc->rank = 1;
        bc->n[0] = y->numel;
        bc->sa[0] = a->numel == y->numel;
        bc->sb[0] = b->numel == y->numel;
        bc->sc[0] = c && c->numel == y->numel;
        return;
    }
    size_t stride_a = 1, stride_b = 1, stride_c = 1, rank = 0;
    size_t n[AG_MAX_RANK], sa[AG_MAX_RANK], sb[AG_MAX_RANK], sc[AG_MAX_RANK];
    for (size_t k = 0; k < y->rank; k++) { /* from the last axis back */
        size_t ny = dim_from_end(y, k), da = dim_from_end(a, k), db = dim_from_end(b, k);
        size_t dc = c ? dim_from_end(c, k) : 1;
        if (ny == 1)
            continue;
        size_t ea = da == 1 ? 0 : stride_a, eb = db == 1 ? 0 : stride_b, ec = dc == 1 ? 0 : stride_c;
        if (rank > 0 && sa[rank - 1] * n[rank - 1] == ea && sb[rank - 1] * n[rank - 1] == eb &&
            (!c || sc[rank - 1] * n[rank - 1] == ec)) {
            n[rank - 1] *= ny; /* continues the axis after it in all (or all broadcast) */
        } else {
            n[rank] = ny;
            sa[rank] = ea;
            sb[rank] = eb;
            if (c)
                sc[rank] = ec;
            rank++;
        }
        stride_a *= da;
        stride_b *= db;
        stride_c *= dc;
    }
    bc->rank = rank;
    for (size_t i = 0; i < rank; i++) { /* back to outermost-first order */
        bc->n[i] = n[rank - 1 - i];
        bc->sa[i] = sa[rank - 1 - i];
        bc->sb[i] = sb[rank - 1 - i];
        bc->sc[i] = c ? sc[rank - 1 - i] : 0;
    }
    if (rank == 0) { /* every axis has size 1: one element */
        bc->rank = 1;
        bc->n[0] = 1;
        bc->sa[0] = bc->sb[0] = bc->sc[0] = 0;
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

/* BCAST_FOR with a third input: ic indexes its run, sc_ is its step. */
#define BCAST3_FOR(bc, lo, hi, ...)                                             \
    do {                                                                        \
        size_t idx_[AG_MAX_RANK] = {0}, last_ = (bc)->rank - 1;                 \
        size_t sa_ = (bc)->sa[last_], sb_ = (bc)->sb[last_];                    \
        size_t sc_ = (bc)->sc[last_], cnt = (hi) - (lo);                        \
        size_t ia = (lo) * sa_, ib = (lo) * sb_, ic = (lo) * sc_, iy = (lo);    \
        for (;;) {                                                              \
            __VA_ARGS__                                                         \
            iy += (bc)->n[last_];                                               \
            size_t d_ = last_;                                                  \
            while (d_-- > 0) {                                                  \
                ia += (bc)->sa[d_];                                             \
                ib += (bc)->sb[d_];                                             \
                ic += (bc)->sc[d_];                                             \
                if (++idx_[d_] < (bc)->n[d_])                                   \
                    break;                                                      \
                ia -= (bc)->sa[d_] * (bc)->n[d_];                               \
                ib -= (bc)->sb[d_] * (bc)->n[d_];                               \
                ic -= (bc)->sc[d_] * (bc)->n[d_];                               \
                idx_[d_] = 0;                                                   \
            }                                                                   \
            if (d_ == (size_t)-1)                                               \
                break;                                                          \
        }                                                                       \
    } while (0)

/* A pass of a binary op (or where), cut along the last merged axis
 * between threads: over inputs a, b and c (NULL for a binary op), adding
 * into a's and b's gradients ga, gb in the backward. */
typedef struct {
    bcast bc;
    const ag_record *r;
    const void *gout;
    void *ga, *gb;
} binary_job;

static ALWAYS_INLINE ag_status bcast_run(ag_tape *t, const ag_record *r, const ag_tensor *c,
                                          const void *gout, void *ga, void *gb, ag_range_fn fn)
{
    binary_job j; /* not zeroed: bcast_init sets what the loops read */
    j.r = r;
    j.gout = gout;
    j.ga = ga;
    j.gb = gb;
    const ag_tensor *a = c ? r->in[1] : r->in[0], *b = c ? r->in[2] : r->in[1];
    bcast_init(&j.bc, a, b, c, r->out);
    size_t last = j.bc.rank - 1, n = j.bc.n[last], work = r->out->numel;
    /* backward: an input broadcast along the last axis sums over it, so
     * that pass stays on one thread */
    if ((ga && j.bc.sa[last] == 0) || (gb && j.bc.sb[last] == 0))
        work = 0;
    ag__parallel_range(t, n, work, fn, &j);
    return AG_OK;
}

static ag_status binary_run(ag_tape *t, const ag_record *r, const void *gout, void *gin[],
                            ag_range_fn fn)
{
    return bcast_run(t, r, NULL, gout, gin ? gin[0] : NULL, gin ? gin[1] : NULL, fn);
}

/* The forward loop runs over a window of the last merged axis; a
 * one-element result (the scalar graphs of micrograd-style code) skips the
 * broadcasting machinery. The backward adds a's gradient, then b's, so that
 * when a and b are one tensor each element still takes a's term first. */
#define AG_BINARY(NAME, Y, DA, DB, GA, GB)                                                \
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
    static ag_status NAME##_graph(ag_tape *t, const ag_record *r, ag_tensor *g,           \
                                  const bool need[], ag_tensor *gin[])                    \
    {                                                                                     \
        ag_tensor *a = r->in[0], *b = r->in[1], *y = r->out;                              \
        (void)a, (void)b, (void)y;                                                        \
        if (need[0])                                                                      \
            gin[0] = ag__sum_to(t, (GA), a);                                              \
        if (need[1])                                                                      \
            gin[1] = ag__sum_to(t, (GB), b);                                              \
        return ag_tape_status(t);                                                         \
    }                                                                                     \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 2, .same_dtype = true,       \
                                     .shape = binary_shape, .forward = NAME##_forward,    \
                                     .backward = NAME##_backward, .grad_graph = NAME##_graph}

/* The masks that maximum and minimum's recorded backward multiply by: over
 * the result's shape, 1/2 on a tie, 0 where a is below (MASK_GT) or above
 * (MASK_LT) b, else 1: unordered pairs (a NaN) give 1, as the fused
 * backward and PyTorch's (grad, halved where equal, zeroed where smaller)
 * do. A mask is a constant: it has no gradient. */
typedef enum { MASK_GT, MASK_LT } mask_kind;

static ag_tensor *compare_mask(ag_tape *t, const ag_record *r, mask_kind kind)
{
    ag_tensor *m = ag__tape_tensor(t, r->out->dtype, r->out->shape, r->out->rank);
    if (!m)
        return NULL;
    bcast bc;
    bcast_init(&bc, r->in[0], r->in[1], NULL, r->out);
    AG_DISPATCH(m->dtype, T, {
        const T *A_ = r->in[0]->data, *B_ = r->in[1]->data;
        T *M_ = m->data;
        BCAST_FOR(&bc, 0, bc.n[bc.rank - 1], {
            for (size_t i = 0; i < cnt; i++) {
                T a = A_[ia + i * sa_], b = B_[ib + i * sb_];
                T loses = kind == MASK_GT ? a < b : a > b;
                M_[iy + i] = a == b ? (T)0.5 : 1 - loses;
            }
        });
    });
    return m;
}

AG_BINARY(add, a + b, g, g, g, g);
AG_BINARY(sub, a - b, g, -g, g, ag_neg(t, g));
AG_BINARY(mul, a * b, g * b, g * a, ag_mul(t, g, b), ag_mul(t, g, a));
AG_BINARY(div, a / b, g / b, -(g * a / (b * b)), ag_div(t, g, b),
          ag_neg(t, ag_div(t, ag_mul(t, g, y), b)));

/* maximum and minimum send the gradient to the larger (smaller) input and
 * half of it to each on a tie, as PyTorch; a NaN in either input gives NaN. */
AG_BINARY(maximum, a != a || a > b ? a : b, a < b ? 0 : a == b ? g / 2 : g,
          a > b ? 0 : a == b ? g / 2 : g, ag_mul(t, g, compare_mask(t, r, MASK_GT)),
          ag_mul(t, g, compare_mask(t, r, MASK_LT)));
AG_BINARY(minimum, a != a || a < b ? a : b, a > b ? 0 : a == b ? g / 2 : g,
          a < b ? 0 : a == b ? g / 2 : g, ag_mul(t, g, compare_mask(t, r, MASK_LT)),
          ag_mul(t, g, compare_mask(t, r, MASK_GT)));
AG_BINARY(atan2, atan2(a, b), g * b / (a * a + b * b), -(g * a) / (a * a + b * b),
          ag_div(t, ag_mul(t, g, b), ag_add(t, ag_square(t, a), ag_square(t, b))),
          ag_neg(t, ag_div(t, ag_mul(t, g, a), ag_add(t, ag_square(t, a), ag_square(t, b)))));
/* d/da = b a^(b-1) (0 where b = 0); d/db = a^b ln a (0 at a = 0, b >= 0), as PyTorch */
AG_BINARY(pow_tensor, pow(a, b), b == 0 ? 0 : g * b * pow(a, b - 1),
          a == 0 && b >= 0 ? 0 : g * y * log(a),
          ag_mul(t, g, ag_mul(t, b, ag_pow_tensor(t, a, ag_add_scalar(t, b, -1)))),
          ag_mul(t, g, ag_mul(t, y, ag_log(t, a))));

/* ------------------------------------------------------------ where
 * where(cond, a, b): cond != 0 ? a : b over the three inputs' broadcast
 * shape. cond may be of either float dtype (a mask, as cross_entropy's
 * classes) and takes no gradient; a and b agree in dtype. In the walker
 * a and b are the first two inputs (sa, sb) and cond the third (sc). */

static ag_status where_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *a = r->in[1], *b = r->in[2];
    if (a->dtype != b->dtype)
        return ag__error(t, AG_ERR_DTYPE, "ag_where: a and b have dtypes %s and %s (convert with ag_cast)",
                         ag_dtype_name(a->dtype), ag_dtype_name(b->dtype));
    out->dtype = a->dtype;
    return broadcast_shape(t, r, 3, out);
}

static void where_fwd(void *ctx, size_t lo, size_t hi)
{
    const binary_job *j = ctx;
    AG_DISPATCH(j->r->in[0]->dtype, C, {
        AG_DISPATCH(j->r->out->dtype, T, {
            const C *C_ = j->r->in[0]->data;
            const T *A_ = j->r->in[1]->data, *B_ = j->r->in[2]->data;
            T *Y_ = j->r->out->data;
            BCAST3_FOR(&j->bc, lo, hi, {
                const C *pc = C_ + ic;
                const T *pa = A_ + ia, *pb = B_ + ib;
                T *py = Y_ + iy;
                for (size_t i = 0; i < cnt; i++)
                    py[i] = pc[i * sc_] != 0 ? pa[i * sa_] : pb[i * sb_];
            });
        });
    });
}

/* a's gradient, then b's: where(c, x, x) gives x each element's g once. */
static void where_bwd(void *ctx, size_t lo, size_t hi)
{
    const binary_job *j = ctx;
    AG_DISPATCH(j->r->in[0]->dtype, C, {
        AG_DISPATCH(j->r->out->dtype, T, {
            const C *C_ = j->r->in[0]->data;
            const T *G_ = j->gout;
            T *GA_ = j->ga, *GB_ = j->gb;
            if (GA_)
                BCAST3_FOR(&j->bc, lo, hi, {
                    for (size_t i = 0; i < cnt; i++) {
                        const T g = G_[iy + i];
                        GA_[ia + i * sa_] += C_[ic + i * sc_] != 0 ? g : 0;
                    }
                });
            if (GB_)
                BCAST3_FOR(&j->bc, lo, hi, {
                    for (size_t i = 0; i < cnt; i++) {
                        const T g = G_[iy + i];
                        GB_[ib + i * sb_] += C_[ic + i * sc_] != 0 ? 0 : g;
                    }
                });
        });
    });
}

static ag_status where_forward(ag_tape *t, ag_record *r)
{
    return bcast_run(t, r, r->in[0], NULL, NULL, NULL, where_fwd);
}

static ag_status where_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    if (!gin[1] && !gin[2])
        return AG_OK; /* only cond requires grad: it takes none */
    return bcast_run(t, r, r->in[0], gout, gin[1], gin[2], where_bwd);
}

/* a's gradient where cond holds, b's elsewhere, each summed to its shape */
static ag_status where_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                             ag_tensor *gin[])
{
    ag_tensor *zero = ag__tape_tensor(t, g->dtype, NULL, 0);
    if (!zero)
        return ag_tape_status(t);
    AG_DISPATCH(g->dtype, T, { *(T *)zero->data = 0; });
    if (need[1])
        gin[1] = ag__sum_to(t, ag_where(t, r->in[0], g, zero), r->in[1]);
    if (need[2])
        gin[2] = ag__sum_to(t, ag_where(t, r->in[0], zero, g), r->in[2]);
    return ag_tape_status(t);
}

const ag_op_def ag__op_where = {.name = "where", .arity = 3, .shape = where_shape,
                                .forward = where_forward, .backward = where_backward,
                                .grad_graph = where_graph};

/* ------------------------------------------------------------ unary ops */

typedef struct {
    const ag_record *r;
    const void *gout;
    void *gin;
} unary_job;

/* Each backward loop loads g before it chooses, so a choice (relu's mask)
 * compiles to a select, not a branch that would mispredict half the time.
 * c and c2 are the op's scalars; SHAPE its shape rule (one that checks
 * them, or ag__shape_same). */
#define AG_UNARY(NAME, Y, DX, GX) AG_UNARY_SHAPED(NAME, ag__shape_same, Y, DX, GX)
#define AG_UNARY_SHAPED(NAME, SHAPE, Y, DX, GX)                                           \
    static void NAME##_fwd(void *ctx, size_t lo, size_t hi)                               \
    {                                                                                     \
        const ag_record *r = ctx;                                                         \
        AG_DISPATCH(r->out->dtype, T, {                                                   \
            const T *X_ = r->in[0]->data, c = (T)r->attr.scalar, c2 = (T)r->attr.scalar2; \
            T *Y_ = r->out->data;                                                         \
            (void)c, (void)c2;                                                            \
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
            const T c = (T)u->r->attr.scalar, c2 = (T)u->r->attr.scalar2;                 \
            T *GX_ = u->gin;                                                              \
            (void)c, (void)c2;                                                            \
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
    static ag_status NAME##_graph(ag_tape *t, const ag_record *r, ag_tensor *g,           \
                                  const bool need[], ag_tensor *gin[])                    \
    {                                                                                     \
        ag_tensor *x = r->in[0], *y = r->out;                                             \
        const double c = r->attr.scalar, c2 = r->attr.scalar2;                            \
        (void)x, (void)y, (void)c, (void)c2, (void)need;                                  \
        gin[0] = (GX);                                                                    \
        return ag_tape_status(t);                                                         \
    }                                                                                     \
    const ag_op_def ag__op_##NAME = {.name = #NAME, .arity = 1, .shape = SHAPE,           \
                                     .forward = NAME##_forward, .backward = NAME##_backward, \
                                     .grad_graph = NAME##_graph}

/* A constant of x's shape, f(x_i, c, c2) at each element: the piecewise
 * constant factors (signs, masks) of recorded backwards, which have no
 * gradient of their own. */
static ag_tensor *map_const(ag_tape *t, const ag_tensor *x, double (*f)(double, double, double),
                            double c, double c2)
{
    ag_tensor *m = ag__tape_tensor(t, x->dtype, x->shape, x->rank);
    AG_DISPATCH(x->dtype, T, {
        for (size_t i = 0; m && i < m->numel; i++)
            ((T *)m->data)[i] = (T)f((double)((const T *)x->data)[i], c, c2);
    });
    return m;
}

static double sign_of(double x, double c, double c2) { (void)c, (void)c2; return x > 0 ? 1 : x < 0 ? -1 : 0; }
static double positive(double x, double c, double c2) { (void)c, (void)c2; return x > 0; }
static double leaky_slope(double x, double c, double c2) { (void)c2; return x > 0 ? 1 : c; }
static double inside(double x, double c, double c2) { return x > c && x < c2; }

/* Products of recorded backwards, shortened. */
#define MUL(a, b) ag_mul(t, (a), (b))
#define PLUS1(a) ag_add_scalar(t, (a), 1)
#define ONE_MINUS(a) ag_add_scalar(t, ag_neg(t, (a)), 1)

/* The f32 sigmoid in arithmetic alone, so that a loop of them vectorises
 * (a call to expf does not; W1's sigmoids spent 8% of its step there).
 * Selections are made on bits: with FP exceptions observable, a compiler
 * may not turn ?: on floats into a blend, and the loop stays scalar. */
static inline uint32_t bits_of(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
static inline float float_of(uint32_t u) { float x; memcpy(&x, &u, sizeof x); return x; }
/* a where the mask m is all ones, else b */
static inline uint32_t pick(uint32_t m, uint32_t a, uint32_t b) { return (a & m) | (b & ~m); }

/* e^a for a <= 0: Cephes' expf, a = n ln2 + r with |r| <= ln2/2, e^r by
 * its polynomial (within 1 ulp), times 2^n from exponent bits in two
 * factors, so that results down to the subnormals round once. Below -104,
 * where e^a rounds to 0, a is clamped (NaN too: the caller restores it). */
static inline float exp_nonpositive_f32(float a)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    uint32_t ua = bits_of(a);
    a = float_of(pick(0u - (ua > 0xC2D00000u), 0xC2D00000u, ua)); /* -104: 0xC2D00000 */
    float t = a * 1.44269504088896341f + magic, n = t - magic;
    float r = a - n * 0.693359375f - n * -2.12194440e-4f; /* n ln2 in two parts: exact */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ni = (int32_t)(bits_of(t) - 0x4B400000u), n1 = ni / 2, n2 = ni - n1; /* -150..0 */
    return p * float_of((uint32_t)(n1 + 127) << 23) * float_of((uint32_t)(n2 + 127) << 23);
}

/* 1/(1 + e^-x) from e = e^-|x| <= 1, which cannot overflow: 1/(1+e) for
 * x >= 0, e/(1+e) below; NaN stays NaN. Within 3 ulp of the exact value
 * (checked against double at every 97th float). */
static inline float sigmoid_f32(float x)
{
    uint32_t u = bits_of(x);
    float e = exp_nonpositive_f32(float_of(u | 0x80000000u));
    uint32_t y = pick(0u - (u >> 31), bits_of(e / (1.0f + e)), bits_of(1.0f / (1.0f + e)));
    return float_of(pick(0u - ((u & 0x7fffffffu) > 0x7f800000u), u, y));
}

static inline double sigmoid_f64(double x)
{
    double e = exp(x >= 0 ? -x : x);
    return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}

#define SIGMOID(T, x) _Generic((T)0, float: sigmoid_f32, double: sigmoid_f64)(x)

AG_UNARY(neg, -x, -g, ag_neg(t, g));
AG_UNARY(exp, exp(x), g * y, MUL(g, y));
AG_UNARY(log, log(x), g / x, ag_div(t, g, x));
AG_UNARY(sqrt, sqrt(x), g / (2 * y), ag_div(t, g, ag_scale(t, y, 2)));
/* p x^(p-1); x^0 is constant, even at x = 0 */
AG_UNARY(pow, pow(x, c), c != 0 ? g * c * pow(x, c - 1) : 0,
         c != 0 ? MUL(g, ag_scale(t, ag_pow(t, x, c - 1), c)) : NULL);
AG_UNARY(abs, fabs(x), x > 0 ? g : x < 0 ? -g : 0, MUL(g, map_const(t, x, sign_of, 0, 0)));
AG_UNARY(sigmoid, SIGMOID(T, x), g * y * (1 - y), MUL(g, MUL(y, ONE_MINUS(y))));
AG_UNARY(tanh, tanh(x), g * (1 - y * y), MUL(g, ONE_MINUS(ag_square(t, y))));
AG_UNARY(relu, x > 0 ? x : 0, x > 0 ? g : 0, MUL(g, map_const(t, x, positive, 0, 0)));
AG_UNARY(leaky_relu, x > 0 ? x : c * x, x > 0 ? g : c * g, MUL(g, map_const(t, x, leaky_slope, c, 0)));
/* max(x,0) + ln(1 + e^-|x|): no overflow for any x */
AG_UNARY(softplus, (x > 0 ? x : 0) + log1p(exp(-fabs(x))), g * SIGMOID(T, x),
         MUL(g, ag_sigmoid(t, x)));
AG_UNARY(add_scalar, x + c, g, g);
AG_UNARY(scale, c * x, c * g, ag_scale(t, g, c));

/* The second op set. */
#define SQRT1_2 0.70710678118654752440  /* 1/sqrt 2 */
#define INV_SQRT_2PI 0.39894228040143267794 /* 1/sqrt(2 pi), the normal density at 0 */
#define TWO_OVER_SQRT_PI 1.12837916709551257390 /* erf'(0) */

AG_UNARY(sin, sin(x), g * cos(x), MUL(g, ag_cos(t, x)));
AG_UNARY(cos, cos(x), -g * sin(x), ag_neg(t, MUL(g, ag_sin(t, x))));
AG_UNARY(tan, tan(x), g * (1 + y * y), MUL(g, PLUS1(ag_square(t, y))));
/* 1 - x^2 as (1 - x)(1 + x): exact near |x| = 1 */
AG_UNARY(asin, asin(x), g / sqrt((1 - x) * (1 + x)), MUL(g, ag_rsqrt(t, MUL(ONE_MINUS(x), PLUS1(x)))));
AG_UNARY(acos, acos(x), -g / sqrt((1 - x) * (1 + x)),
         ag_neg(t, MUL(g, ag_rsqrt(t, MUL(ONE_MINUS(x), PLUS1(x))))));
AG_UNARY(atan, atan(x), g / (1 + x * x), ag_div(t, g, PLUS1(ag_square(t, x))));
AG_UNARY(sinh, sinh(x), g * cosh(x), MUL(g, ag_cosh(t, x)));
AG_UNARY(cosh, cosh(x), g * sinh(x), MUL(g, ag_sinh(t, x)));
AG_UNARY(log1p, log1p(x), g / (1 + x), ag_div(t, g, PLUS1(x)));
AG_UNARY(expm1, expm1(x), g * (y + 1), MUL(g, PLUS1(y)));
AG_UNARY(erf, erf(x), g * (T)TWO_OVER_SQRT_PI * exp(-x * x),
         MUL(g, ag_scale(t, ag_exp(t, ag_neg(t, ag_square(t, x))), TWO_OVER_SQRT_PI)));
AG_UNARY(square, x * x, g * 2 * x, MUL(g, ag_scale(t, x, 2)));
AG_UNARY(reciprocal, 1 / x, -g * y * y, ag_neg(t, MUL(g, ag_square(t, y))));
AG_UNARY(rsqrt, 1 / sqrt(x), g * (T)-0.5 * y * y * y, MUL(g, ag_scale(t, MUL(y, ag_square(t, y)), -0.5)));
/* x Phi(x), Phi(x) = erfc(-x/sqrt 2)/2: erfc keeps Phi's tiny values for
 * x << 0, where 1 + erf(x/sqrt 2) would cancel to 0. d/dx = Phi + x phi. */
AG_UNARY(gelu, x * (T)0.5 * erfc(-x * (T)SQRT1_2),
         g * ((T)0.5 * erfc(-x * (T)SQRT1_2) + x * (T)INV_SQRT_2PI * exp((T)-0.5 * x * x)),
         MUL(g, ag_add(t, ag_add_scalar(t, ag_scale(t, ag_erf(t, ag_scale(t, x, SQRT1_2)), 0.5), 0.5),
                       MUL(x, ag_scale(t, ag_exp(t, ag_scale(t, ag_square(t, x), -0.5)), INV_SQRT_2PI)))));
/* x s, s = sigmoid x; d/dx = s (1 + x (1 - s)) */
AG_UNARY(silu, x * SIGMOID(T, x), g * SIGMOID(T, x) * (1 + x * (1 - SIGMOID(T, x))),
         MUL(g, MUL(ag_sigmoid(t, x), PLUS1(MUL(x, ONE_MINUS(ag_sigmoid(t, x)))))));
/* d/dx for x <= 0: c e^x = y + c */
AG_UNARY(elu, x > 0 ? x : c * expm1(x), x > 0 ? g : g * c * exp(x),
         ag_where(t, map_const(t, x, positive, 0, 0), g, MUL(g, ag_add_scalar(t, y, c))));

/* clamp's bounds c <= c2, neither NaN (an infinite one clamps one side). */
static ag_status clamp_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    double lo = r->attr.scalar, hi = r->attr.scalar2;
    if (!(lo <= hi))
        return ag__error(t, AG_ERR_VALUE, "ag_clamp: bounds lo = %g and hi = %g: need lo <= hi, neither NaN",
                         lo, hi);
    return ag__shape_same(t, r, out);
}
/* min(max(x, c), c2), NaN kept; gradient 1 strictly inside (c, c2), 0 at
 * the bounds and outside */
AG_UNARY_SHAPED(clamp, clamp_shape, x < c ? c : x > c2 ? c2 : x, x > c && x < c2 ? g : 0,
                MUL(g, map_const(t, x, inside, c, c2)));

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
ag_tensor *ag_sin(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_sin, x, NULL, NULL); }
ag_tensor *ag_cos(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_cos, x, NULL, NULL); }
ag_tensor *ag_tan(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_tan, x, NULL, NULL); }
ag_tensor *ag_asin(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_asin, x, NULL, NULL); }
ag_tensor *ag_acos(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_acos, x, NULL, NULL); }
ag_tensor *ag_atan(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_atan, x, NULL, NULL); }
ag_tensor *ag_sinh(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_sinh, x, NULL, NULL); }
ag_tensor *ag_cosh(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_cosh, x, NULL, NULL); }
ag_tensor *ag_log1p(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_log1p, x, NULL, NULL); }
ag_tensor *ag_expm1(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_expm1, x, NULL, NULL); }
ag_tensor *ag_erf(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_erf, x, NULL, NULL); }
ag_tensor *ag_square(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_square, x, NULL, NULL); }
ag_tensor *ag_reciprocal(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_reciprocal, x, NULL, NULL); }
ag_tensor *ag_rsqrt(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_rsqrt, x, NULL, NULL); }
ag_tensor *ag_gelu(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_gelu, x, NULL, NULL); }
ag_tensor *ag_silu(ag_tape *t, ag_tensor *x) { return ag__apply(t, &ag__op_silu, x, NULL, NULL); }
ag_tensor *ag_maximum(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_maximum, a, b, NULL); }
ag_tensor *ag_minimum(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_minimum, a, b, NULL); }
ag_tensor *ag_atan2(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_atan2, a, b, NULL); }
ag_tensor *ag_pow_tensor(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, &ag__op_pow_tensor, a, b, NULL); }

ag_tensor *ag_where(ag_tape *t, ag_tensor *cond, ag_tensor *a, ag_tensor *b)
{
    return ag__apply3(t, &ag__op_where, cond, a, b, NULL);
}

/* A unary op with its scalar parameter c. */
static ag_tensor *with_scalar(ag_tape *t, const ag_op_def *def, ag_tensor *x, double c)
{
    return ag__apply(t, def, x, NULL, &(ag_attr){.scalar = c});
}

ag_tensor *ag_pow(ag_tape *t, ag_tensor *x, double p) { return with_scalar(t, &ag__op_pow, x, p); }
ag_tensor *ag_leaky_relu(ag_tape *t, ag_tensor *x, double slope) { return with_scalar(t, &ag__op_leaky_relu, x, slope); }
ag_tensor *ag_add_scalar(ag_tape *t, ag_tensor *x, double c) { return with_scalar(t, &ag__op_add_scalar, x, c); }
ag_tensor *ag_scale(ag_tape *t, ag_tensor *x, double c) { return with_scalar(t, &ag__op_scale, x, c); }
ag_tensor *ag_elu(ag_tape *t, ag_tensor *x, double alpha) { return with_scalar(t, &ag__op_elu, x, alpha); }

ag_tensor *ag_clamp(ag_tape *t, ag_tensor *x, double lo, double hi)
{
    return ag__apply(t, &ag__op_clamp, x, NULL, &(ag_attr){.scalar = lo, .scalar2 = hi});
}
