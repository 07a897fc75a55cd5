/* elementwise.c: unary ops, scalar ops, and binary ops with numpy
 * broadcasting. Every backward adds (+=) into the input gradients. */
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

ag_status ag__binary_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    size_t rank = a->rank > b->rank ? a->rank : b->rank;
    for (size_t k = 0; k < rank; k++) {
        size_t da = dim_from_end(a, k), db = dim_from_end(b, k);
        if (da != db && da != 1 && db != 1) {
            char sa[AG_SHAPE_BUF], sb[AG_SHAPE_BUF];
            return ag__error(t, AG_ERR_SHAPE,
                             "ag_%s: shapes %s and %s do not broadcast (axis %zu from the end: %zu vs %zu)",
                             ag_op_table[r->op].name, ag__shape_str(a, sa, sizeof sa),
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

/* One element: the scalar graphs of micrograd-style code live here, so it
 * skips the broadcasting machinery. */
#define BINARY_ONE(op, T, x, z) \
    ((op) == AG_OP_ADD ? (x) + (z) : (op) == AG_OP_SUB ? (x) - (z) : (op) == AG_OP_MUL ? (x) * (z) : (x) / (z))

/* A binary op's pass, cut along the last merged axis between threads. */
typedef struct {
    bcast bc;
    const ag_record *r;
    const void *gout;
    void *ga, *gb;
} binary_job;

static void binary_forward_range(void *ctx, size_t lo, size_t hi)
{
    const binary_job *j = ctx;
    ag_op op = j->r->op;
    AG_DISPATCH(j->r->out->dtype, T, {
        const T *A = j->r->in[0]->data, *B = j->r->in[1]->data;
        T *Y = j->r->out->data;
        BCAST_FOR(&j->bc, lo, hi, {
            const T *pa = A + ia, *pb = B + ib;
            T *py = Y + iy;
            switch (op) {
            case AG_OP_ADD: for (size_t i = 0; i < cnt; i++) py[i] = pa[i * sa_] + pb[i * sb_]; break;
            case AG_OP_SUB: for (size_t i = 0; i < cnt; i++) py[i] = pa[i * sa_] - pb[i * sb_]; break;
            case AG_OP_MUL: for (size_t i = 0; i < cnt; i++) py[i] = pa[i * sa_] * pb[i * sb_]; break;
            default:        for (size_t i = 0; i < cnt; i++) py[i] = pa[i * sa_] / pb[i * sb_]; break;
            }
        });
    });
}

ag_status ag__binary_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    ag_tensor *y = r->out;
    ag_op op = r->op;
    if (y->numel == 1) {
        AG_DISPATCH(y->dtype, T, {
            *(T *)y->data = BINARY_ONE(op, T, *(const T *)a->data, *(const T *)b->data);
        });
        return AG_OK;
    }
    if (y->numel == 0)
        return AG_OK;
    binary_job j = {.r = r};
    bcast_init(&j.bc, a, b, y);
    ag__parallel_range(t, j.bc.n[j.bc.rank - 1], y->numel, binary_forward_range, &j);
    return AG_OK;
}

/* Adds the gradients of the window [lo, hi): a's, then b's, so that when a
 * and b are one tensor each element still takes a's term first. */
static void binary_backward_range(void *ctx, size_t lo, size_t hi)
{
    const binary_job *j = ctx;
    ag_op op = j->r->op;
    AG_DISPATCH(j->r->out->dtype, T, {
        const T *A = j->r->in[0]->data, *B = j->r->in[1]->data, *G = j->gout;
        T *GA = j->ga, *GB = j->gb;
        if (GA)
            BCAST_FOR(&j->bc, lo, hi, {
                const T *pb = B + ib, *g = G + iy;
                T *ga = GA + ia;
                switch (op) {
                case AG_OP_ADD:
                case AG_OP_SUB: for (size_t i = 0; i < cnt; i++) ga[i * sa_] += g[i]; break;
                case AG_OP_MUL: for (size_t i = 0; i < cnt; i++) ga[i * sa_] += g[i] * pb[i * sb_]; break;
                default:        for (size_t i = 0; i < cnt; i++) ga[i * sa_] += g[i] / pb[i * sb_]; break;
                }
            });
        if (GB)
            BCAST_FOR(&j->bc, lo, hi, {
                const T *pa = A + ia, *pb = B + ib, *g = G + iy;
                T *gb = GB + ib;
                switch (op) {
                case AG_OP_ADD: for (size_t i = 0; i < cnt; i++) gb[i * sb_] += g[i]; break;
                case AG_OP_SUB: for (size_t i = 0; i < cnt; i++) gb[i * sb_] -= g[i]; break;
                case AG_OP_MUL: for (size_t i = 0; i < cnt; i++) gb[i * sb_] += g[i] * pa[i * sa_]; break;
                default:
                    for (size_t i = 0; i < cnt; i++)
                        gb[i * sb_] -= g[i] * pa[i * sa_] / (pb[i * sb_] * pb[i * sb_]);
                }
            });
    });
}

ag_status ag__binary_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    ag_op op = r->op;
    if (r->out->numel == 1) {
        AG_DISPATCH(a->dtype, T, {
            T x = *(const T *)a->data, z = *(const T *)b->data, g = *(const T *)gout;
            T *ga = gin[0], *gb = gin[1];
            if (ga)
                *ga += op == AG_OP_MUL ? g * z : op == AG_OP_DIV ? g / z : g;
            if (gb)
                *gb += op == AG_OP_MUL ? g * x : op == AG_OP_DIV ? -g * x / (z * z) : op == AG_OP_SUB ? -g : g;
        });
        return AG_OK;
    }
    if (r->out->numel == 0)
        return AG_OK;
    binary_job j = {.r = r, .gout = gout, .ga = gin[0], .gb = gin[1]};
    bcast_init(&j.bc, a, b, r->out);
    size_t last = j.bc.rank - 1, n = j.bc.n[last];
    /* an input broadcast along the last axis sums over it: one thread */
    bool sums_last = (j.ga && j.bc.sa[last] == 0) || (j.gb && j.bc.sb[last] == 0);
    ag__parallel_range(t, n, sums_last ? 0 : r->out->numel, binary_backward_range, &j);
    return AG_OK;
}

/* ------------------------------------------------------------ unary ops */

#define SIGMOID(T, x) ((x) >= 0 ? (T)1 / ((T)1 + exp(-(x))) : exp(x) / ((T)1 + exp(x)))

/* Elements [lo, hi) of a unary op's result. */
static void unary_forward_range(void *ctx, size_t lo, size_t hi)
{
    const ag_record *r = ctx;
    size_t n = hi - lo;
    ag_op op = r->op;
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = (const T *)r->in[0]->data + lo;
        T *y = (T *)r->out->data + lo, c = (T)r->attr.scalar;
        switch (op) {
        case AG_OP_NEG: for (size_t i = 0; i < n; i++) y[i] = -x[i]; break;
        case AG_OP_EXP: for (size_t i = 0; i < n; i++) y[i] = exp(x[i]); break;
        case AG_OP_LOG: for (size_t i = 0; i < n; i++) y[i] = log(x[i]); break;
        case AG_OP_SQRT: for (size_t i = 0; i < n; i++) y[i] = sqrt(x[i]); break;
        case AG_OP_POW: for (size_t i = 0; i < n; i++) y[i] = pow(x[i], c); break;
        case AG_OP_ABS: for (size_t i = 0; i < n; i++) y[i] = fabs(x[i]); break;
        case AG_OP_SIGMOID: for (size_t i = 0; i < n; i++) y[i] = SIGMOID(T, x[i]); break;
        case AG_OP_TANH: for (size_t i = 0; i < n; i++) y[i] = tanh(x[i]); break;
        case AG_OP_RELU: for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0; break;
        case AG_OP_LEAKY_RELU: for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : c * x[i]; break;
        case AG_OP_SOFTPLUS: /* max(x,0) + ln(1 + e^-|x|): no overflow for any x */
            for (size_t i = 0; i < n; i++) y[i] = (x[i] > 0 ? x[i] : 0) + log1p(exp(-fabs(x[i])));
            break;
        case AG_OP_ADD_SCALAR: for (size_t i = 0; i < n; i++) y[i] = x[i] + c; break;
        default: for (size_t i = 0; i < n; i++) y[i] = c * x[i]; break; /* AG_OP_SCALE */
        }
    });
}

ag_status ag__unary_forward(ag_tape *t, ag_record *r)
{
    ag__parallel_range(t, r->out->numel, r->out->numel, unary_forward_range, r);
    return AG_OK;
}

typedef struct {
    const ag_record *r;
    const void *gout;
    void *gin;
} unary_grad;

/* Adds the gradient of elements [lo, hi). Each loop loads g[i] before it
 * chooses, so the choice compiles to a select, not a branch: relu's masks
 * are random and a branch would mispredict half the time. */
static void unary_backward_range(void *ctx, size_t lo, size_t hi)
{
    const unary_grad *u = ctx;
    const ag_record *r = u->r;
    size_t n = hi - lo;
    ag_op op = r->op;
    AG_DISPATCH(r->out->dtype, T, {
        const T *x = (const T *)r->in[0]->data + lo, *y = (const T *)r->out->data + lo;
        const T *g = (const T *)u->gout + lo;
        T *gx = (T *)u->gin + lo, c = (T)r->attr.scalar;
        switch (op) {
        case AG_OP_NEG: for (size_t i = 0; i < n; i++) gx[i] -= g[i]; break;
        case AG_OP_EXP: for (size_t i = 0; i < n; i++) gx[i] += g[i] * y[i]; break;
        case AG_OP_LOG: for (size_t i = 0; i < n; i++) gx[i] += g[i] / x[i]; break;
        case AG_OP_SQRT: for (size_t i = 0; i < n; i++) gx[i] += g[i] / (2 * y[i]); break;
        case AG_OP_POW: /* p x^(p-1); x^0 is constant, even at x = 0 */
            if (c != 0)
                for (size_t i = 0; i < n; i++) gx[i] += g[i] * c * pow(x[i], c - 1);
            break;
        case AG_OP_ABS:
            for (size_t i = 0; i < n; i++) {
                T gi = g[i];
                gx[i] += x[i] > 0 ? gi : x[i] < 0 ? -gi : 0;
            }
            break;
        case AG_OP_SIGMOID: for (size_t i = 0; i < n; i++) gx[i] += g[i] * y[i] * (1 - y[i]); break;
        case AG_OP_TANH: for (size_t i = 0; i < n; i++) gx[i] += g[i] * (1 - y[i] * y[i]); break;
        case AG_OP_RELU:
            for (size_t i = 0; i < n; i++) {
                T gi = g[i];
                gx[i] += x[i] > 0 ? gi : 0;
            }
            break;
        case AG_OP_LEAKY_RELU:
            for (size_t i = 0; i < n; i++) {
                T gi = g[i];
                gx[i] += x[i] > 0 ? gi : c * gi;
            }
            break;
        case AG_OP_SOFTPLUS: for (size_t i = 0; i < n; i++) gx[i] += g[i] * SIGMOID(T, x[i]); break;
        case AG_OP_ADD_SCALAR: for (size_t i = 0; i < n; i++) gx[i] += g[i]; break;
        default: for (size_t i = 0; i < n; i++) gx[i] += c * g[i]; break; /* AG_OP_SCALE */
        }
    });
}

ag_status ag__unary_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    unary_grad u = {r, gout, gin[0]};
    ag__parallel_range(t, r->out->numel, r->out->numel, unary_backward_range, &u);
    return AG_OK;
}

/* ------------------------------------------------------------ public API */

ag_tensor *ag_add(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, AG_OP_ADD, a, b, NULL); }
ag_tensor *ag_sub(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, AG_OP_SUB, a, b, NULL); }
ag_tensor *ag_mul(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, AG_OP_MUL, a, b, NULL); }
ag_tensor *ag_div(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag__apply(t, AG_OP_DIV, a, b, NULL); }
ag_tensor *ag_neg(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_NEG, x, NULL, NULL); }
ag_tensor *ag_exp(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_EXP, x, NULL, NULL); }
ag_tensor *ag_log(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_LOG, x, NULL, NULL); }
ag_tensor *ag_sqrt(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_SQRT, x, NULL, NULL); }
ag_tensor *ag_abs(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_ABS, x, NULL, NULL); }
ag_tensor *ag_sigmoid(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_SIGMOID, x, NULL, NULL); }
ag_tensor *ag_tanh(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_TANH, x, NULL, NULL); }
ag_tensor *ag_relu(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_RELU, x, NULL, NULL); }
ag_tensor *ag_softplus(ag_tape *t, ag_tensor *x) { return ag__apply(t, AG_OP_SOFTPLUS, x, NULL, NULL); }

ag_tensor *ag_pow(ag_tape *t, ag_tensor *x, double p)
{
    return ag__apply(t, AG_OP_POW, x, NULL, &(ag_attr){.scalar = p});
}

ag_tensor *ag_leaky_relu(ag_tape *t, ag_tensor *x, double slope)
{
    return ag__apply(t, AG_OP_LEAKY_RELU, x, NULL, &(ag_attr){.scalar = slope});
}

ag_tensor *ag_add_scalar(ag_tape *t, ag_tensor *x, double c)
{
    return ag__apply(t, AG_OP_ADD_SCALAR, x, NULL, &(ag_attr){.scalar = c});
}

ag_tensor *ag_scale(ag_tape *t, ag_tensor *x, double c)
{
    return ag__apply(t, AG_OP_SCALE, x, NULL, &(ag_attr){.scalar = c});
}
