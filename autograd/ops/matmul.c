/* matmul.c: the matrix product of any rank, as torch.matmul.
 *   y[b] = a[b] · w[b]              a: (..,m,k)  w: (..,k,n)  y: (..,m,n)
 *   ga[b] += gy[b] · w[b]^T         (BP2's W^T δ)
 *   gw[b] += a[b]^T · gy[b]         (BP4's δ a^T)
 * The batch axes (..) broadcast as numpy's; an operand broadcast along a
 * batch axis is shared by those entries (its step is 0) and its gradient
 * sums over them. A 1-D a is a row [1,k], a 1-D w a column [k,1], the
 * added 1 left out of y. When w has no batch axes (the dense layer: x
 * [B,m,k] · W [k,n]), a and y are read as [B·m, k] and [B·m, n]: one
 * product instead of B. */
#include "../internal.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    size_t batch, m, k, n;
    size_t nb;                               /* batch axes left after merging */
    size_t len[AG_MAX_RANK];                 /* their sizes, outermost first */
    size_t sa[AG_MAX_RANK], sb[AG_MAX_RANK]; /* elements between entries; 0 = shared */
} mm_dims;

/* Batch axes of x (none for a vector). */
static size_t batch_rank(const ag_tensor *x) { return x->rank > 2 ? x->rank - 2 : 0; }

/* Batch axis j from the right of x, 1 past its batch axes. */
static size_t batch_dim(const ag_tensor *x, size_t j)
{
    size_t nb = batch_rank(x);
    return j < nb ? x->shape[nb - 1 - j] : 1;
}

static void dims_of(mm_dims *d, const ag_tensor *a, const ag_tensor *b)
{
    d->m = a->rank == 1 ? 1 : a->shape[a->rank - 2];
    d->k = a->shape[a->rank - 1];
    d->n = b->rank == 1 ? 1 : b->shape[b->rank - 1];
    d->batch = 1;
    d->nb = 0;
    size_t ba = batch_rank(a), bb = batch_rank(b);
    if (bb == 0) { /* b shared by every entry: fold a's batch into its rows */
        for (size_t j = 0; j < ba; j++)
            d->m *= a->shape[j];
        return;
    }
    size_t nb = ba > bb ? ba : bb, step_a = d->m * d->k, step_b = d->k * d->n;
    size_t len[AG_MAX_RANK], sa[AG_MAX_RANK], sb[AG_MAX_RANK], r = 0;
    for (size_t j = 0; j < nb; j++) { /* from the innermost batch axis out */
        size_t da = batch_dim(a, j), db = batch_dim(b, j), n = da == 1 ? db : da;
        size_t ea = da == 1 ? 0 : step_a, eb = db == 1 ? 0 : step_b;
        step_a *= da;
        step_b *= db;
        if (n == 1)
            continue;
        d->batch *= n;
        if (r > 0 && sa[r - 1] * len[r - 1] == ea && sb[r - 1] * len[r - 1] == eb) {
            len[r - 1] *= n; /* continues the axis inside it in both operands */
        } else {
            len[r] = n;
            sa[r] = ea;
            sb[r] = eb;
            r++;
        }
    }
    d->nb = r;
    for (size_t i = 0; i < r; i++) {
        d->len[i] = len[r - 1 - i];
        d->sa[i] = sa[r - 1 - i];
        d->sb[i] = sb[r - 1 - i];
    }
}

/* Moves the operands' offsets to the next batch entry (an odometer). */
static void next_entry(const mm_dims *d, size_t *idx, size_t *oa, size_t *ob)
{
    for (size_t j = d->nb; j-- > 0;) {
        *oa += d->sa[j];
        *ob += d->sb[j];
        if (++idx[j] < d->len[j])
            return;
        *oa -= d->sa[j] * d->len[j];
        *ob -= d->sb[j] * d->len[j];
        idx[j] = 0;
    }
}

/* Reports a shape error naming both operands' shapes. */
static ag_status matmul_error(ag_tape *t, const ag_tensor *a, const ag_tensor *b, const char *why)
{
    char sa[AG_SHAPE_BUF], sb[AG_SHAPE_BUF];
    return ag__error(t, AG_ERR_SHAPE, "ag_matmul: %s · %s: %s", ag__shape_str(a, sa, sizeof sa),
                     ag__shape_str(b, sb, sizeof sb), why);
}

static ag_status matmul_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    if (a->rank == 0 || b->rank == 0)
        return matmul_error(t, a, b, "operands must have rank 1 or more");
    size_t ka = a->shape[a->rank - 1], kb = b->shape[b->rank == 1 ? 0 : b->rank - 2];
    char why[128];
    if (ka != kb) {
        snprintf(why, sizeof why, "inner dimensions %zu and %zu differ", ka, kb);
        return matmul_error(t, a, b, why);
    }
    size_t ba = batch_rank(a), bb = batch_rank(b), nb = ba > bb ? ba : bb;
    for (size_t j = 0; j < nb; j++) {
        size_t da = batch_dim(a, j), db = batch_dim(b, j);
        if (da != db && da != 1 && db != 1) {
            snprintf(why, sizeof why, "batch sizes %zu and %zu do not broadcast (batch axis %zu from the end)",
                     da, db, j);
            return matmul_error(t, a, b, why);
        }
        out->shape[nb - 1 - j] = da == 1 ? db : da;
    }
    out->rank = nb;
    if (a->rank > 1)
        out->shape[out->rank++] = a->shape[a->rank - 2];
    if (b->rank > 1)
        out->shape[out->rank++] = b->shape[b->rank - 1];
    return AG_OK;
}

/* One product on the tape's threads; the kernel's only failure, packing
 * space that cannot grow, is reported as the op's. */
static ag_status gemm(ag_tape *t, ag_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k,
                      const void *A, const void *B, bool accumulate, void *C)
{
    if (ag__gemm(&t->exec, dt, ta, tb, m, n, k, A, B, accumulate, C) == AG_OK)
        return AG_OK;
    return ag__error(t, AG_ERR_NOMEM, "ag_matmul%s: out of memory for the packing space of a "
                     "[%zu,%zu]·[%zu,%zu] product", t->in_backward ? " backward" : "", m, k, k, n);
}

static ag_status matmul_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    mm_dims d;
    dims_of(&d, a, b);
    size_t es = AG_DTYPE_SIZE(a->dtype), idx[AG_MAX_RANK] = {0}, oa = 0, ob = 0;
    const char *A = a->data, *B = b->data;
    char *Y = r->out->data;
    ag_status s = AG_OK;
    for (size_t i = 0; i < d.batch && s == AG_OK; i++, next_entry(&d, idx, &oa, &ob))
        s = gemm(t, a->dtype, false, false, d.m, d.n, d.k, A + oa * es, B + ob * es, false,
                     Y + i * d.m * d.n * es);
    return s;
}

static ag_status matmul_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    mm_dims d;
    dims_of(&d, a, b);
    size_t es = AG_DTYPE_SIZE(a->dtype), idx[AG_MAX_RANK] = {0}, oa = 0, ob = 0;
    const char *A = a->data, *B = b->data, *GY = gout;
    char *GA = gin[0], *GB = gin[1];
    ag_status s = AG_OK;
    for (size_t i = 0; i < d.batch && s == AG_OK; i++, next_entry(&d, idx, &oa, &ob)) {
        const char *gy = GY + i * d.m * d.n * es;
        if (GA) /* ga += gy · b^T */
            s = gemm(t, a->dtype, false, true, d.m, d.k, d.n, gy, B + ob * es, true, GA + oa * es);
        if (GB && s == AG_OK) /* gb += a^T · gy */
            s = gemm(t, a->dtype, true, false, d.k, d.n, d.m, A + oa * es, gy, true, GB + ob * es);
    }
    return s;
}

/* x as a matrix: a 1-D a as the row [1,k], a 1-D b as the column [k,1]. */
static ag_tensor *as_matrix(ag_tape *t, ag_tensor *x, bool row)
{
    if (x->rank != 1)
        return x;
    size_t n = x->shape[0], shape[2] = {row ? 1 : n, row ? n : 1};
    return ag_reshape(t, x, shape, 2);
}

/* g, the gradient of a product of matrices (as_matrix), summed to x2's
 * shape over the batch axes x2 shares, then reshaped to x's. */
static ag_tensor *fit(ag_tape *t, ag_tensor *g, const ag_tensor *x2, const ag_tensor *x)
{
    g = ag__sum_to(t, g, x2);
    return g && x->rank == 1 ? ag_reshape(t, g, x->shape, 1) : g;
}

/* The fused backward in ops, on a and b as matrices and g with their
 * dropped axes put back: ga = g · b^T, gb = a^T · g, each summed over the
 * batch axes its operand was broadcast along. A b without batch axes
 * reads a and g as [B·m, k] and [B·m, n], as the forward: gb is one
 * product, no sum. */
static ag_status matmul_graph(ag_tape *t, const ag_record *r, ag_tensor *g, const bool need[],
                              ag_tensor *gin[])
{
    ag_tensor *a = r->in[0], *b = r->in[1];
    ag_tensor *a2 = as_matrix(t, a, true), *b2 = as_matrix(t, b, false);
    if (!a2 || !b2)
        return ag_tape_status(t);
    size_t m = a2->shape[a2->rank - 2], k = a2->shape[a2->rank - 1], n = b2->shape[b2->rank - 1];
    size_t shape[AG_MAX_RANK], nb = r->out->rank - (a->rank > 1) - (b->rank > 1);
    memcpy(shape, r->out->shape, nb * sizeof *shape);
    shape[nb] = m;
    shape[nb + 1] = n;
    ag_tensor *g2 = ag_reshape(t, g, shape, nb + 2);
    if (need[0])
        gin[0] = fit(t, ag_matmul(t, g2, ag_transpose(t, b2)), a2, a);
    if (need[1] && b2->rank == 2) { /* b is not empty: k > 0 */
        size_t rows = a2->numel / k, as[2] = {rows, k}, gs[2] = {rows, n};
        ag_tensor *af = a2->rank == 2 ? a2 : ag_reshape(t, a2, as, 2);
        ag_tensor *gf = a2->rank == 2 ? g2 : ag_reshape(t, g2, gs, 2);
        gin[1] = fit(t, ag_matmul(t, ag_transpose(t, af), gf), b2, b);
    } else if (need[1]) {
        gin[1] = fit(t, ag_matmul(t, ag_transpose(t, a2), g2), b2, b);
    }
    return ag_tape_status(t);
}

const ag_op_def ag__op_matmul = {.name = "matmul", .arity = 2, .same_dtype = true,
                                 .shape = matmul_shape, .forward = matmul_forward,
                                 .backward = matmul_backward, .grad_graph = matmul_graph};

ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b)
{
    return ag__apply(t, &ag__op_matmul, a, b, NULL);
}
