/* matmul.c: the matrix product, plain and batched.
 *   y[b] = a[b] · w[b]              a: (B,m,k)  w: (B,k,n)  y: (B,m,n)
 *   ga[b] += gy[b] · w[b]^T         (BP2's W^T δ)
 *   gw[b] += a[b]^T · gy[b]         (BP4's δ a^T)
 * A rank-2 operand is shared by every batch entry (its stride is 0). */
#include "../internal.h"

#include <stdio.h>

typedef struct {
    size_t batch, m, k, n;
    size_t stride_a, stride_b; /* elements between batch entries; 0 = shared */
} mm_dims;

static mm_dims dims_of(const ag_tensor *a, const ag_tensor *b)
{
    mm_dims d;
    d.m = a->shape[a->rank - 2];
    d.k = a->shape[a->rank - 1];
    d.n = b->shape[b->rank - 1];
    d.batch = a->rank == 3 ? a->shape[0] : b->rank == 3 ? b->shape[0] : 1;
    d.stride_a = a->rank == 3 ? d.m * d.k : 0;
    d.stride_b = b->rank == 3 ? d.k * d.n : 0;
    return d;
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
    if (a->rank < 2 || a->rank > 3 || b->rank < 2 || b->rank > 3)
        return matmul_error(t, a, b, "operands must have rank 2 or 3");
    size_t ka = a->shape[a->rank - 1], kb = b->shape[b->rank - 2];
    char why[96];
    if (ka != kb) {
        snprintf(why, sizeof why, "inner dimensions %zu and %zu differ", ka, kb);
        return matmul_error(t, a, b, why);
    }
    if (a->rank == 3 && b->rank == 3 && a->shape[0] != b->shape[0]) {
        snprintf(why, sizeof why, "batch sizes %zu and %zu differ", a->shape[0], b->shape[0]);
        return matmul_error(t, a, b, why);
    }
    mm_dims d = dims_of(a, b);
    out->rank = (a->rank == 3 || b->rank == 3) ? 3 : 2;
    size_t *s = out->shape + out->rank - 2;
    if (out->rank == 3)
        out->shape[0] = d.batch;
    s[0] = d.m;
    s[1] = d.n;
    return AG_OK;
}

/* Element offset of batch entry i of a: 0 for a shared rank-2 operand. */
static const char *entry(const ag_tensor *x, const void *base, size_t i, size_t stride)
{
    return (const char *)base + i * stride * ag_dtype_size(x->dtype);
}

static ag_status matmul_forward(ag_tape *t, ag_record *r)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    mm_dims d = dims_of(a, b);
    ag_status s = AG_OK;
    for (size_t i = 0; i < d.batch && s == AG_OK; i++)
        s = ag__gemm(t, a->dtype, false, false, d.m, d.n, d.k, entry(a, a->data, i, d.stride_a),
                     entry(b, b->data, i, d.stride_b), false,
                     (void *)entry(r->out, r->out->data, i, d.m * d.n));
    return s;
}

static ag_status matmul_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    mm_dims d = dims_of(a, b);
    ag_status s = AG_OK;
    for (size_t i = 0; i < d.batch && s == AG_OK; i++) {
        const void *gy = entry(r->out, gout, i, d.m * d.n);
        if (gin[0]) /* ga += gy · b^T */
            s = ag__gemm(t, a->dtype, false, true, d.m, d.k, d.n, gy, entry(b, b->data, i, d.stride_b),
                         true, (void *)entry(a, gin[0], i, d.stride_a));
        if (gin[1] && s == AG_OK) /* gb += a^T · gy */
            s = ag__gemm(t, a->dtype, true, false, d.k, d.n, d.m, entry(a, a->data, i, d.stride_a), gy,
                         true, (void *)entry(b, gin[1], i, d.stride_b));
    }
    return s;
}

const ag_op_def ag__op_matmul = {.name = "matmul", .arity = 2, .same_dtype = true,
                                 .shape = matmul_shape, .forward = matmul_forward,
                                 .backward = matmul_backward};

ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b)
{
    return ag__apply(t, &ag__op_matmul, a, b, NULL);
}
