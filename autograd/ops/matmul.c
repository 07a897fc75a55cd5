/* matmul.c: the matrix product, plain and batched.
 *   y[b] = a[b] · w[b]              a: (B,m,k)  w: (B,k,n)  y: (B,m,n)
 *   ga[b] += gy[b] · w[b]^T         (BP2's W^T δ)
 *   gw[b] += a[b]^T · gy[b]         (BP4's δ a^T)
 * A rank-2 operand is shared by every batch entry (its stride is 0). */
#include "../internal.h"

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

ag_status ag__matmul_shape(ag_tape *t, ag_record *r, ag_tensor *out)
{
    const ag_tensor *a = r->in[0], *b = r->in[1];
    char sa[AG_SHAPE_BUF], sb[AG_SHAPE_BUF];
    ag__shape_str(a, sa, sizeof sa);
    ag__shape_str(b, sb, sizeof sb);
    if (a->rank < 2 || a->rank > 3 || b->rank < 2 || b->rank > 3)
        return ag__error(t, AG_ERR_SHAPE, "ag_matmul: %s · %s: operands must have rank 2 or 3", sa, sb);
    size_t ka = a->shape[a->rank - 1], kb = b->shape[b->rank - 2];
    if (ka != kb)
        return ag__error(t, AG_ERR_SHAPE, "ag_matmul: %s · %s: inner dimensions %zu and %zu differ",
                         sa, sb, ka, kb);
    if (a->rank == 3 && b->rank == 3 && a->shape[0] != b->shape[0])
        return ag__error(t, AG_ERR_SHAPE, "ag_matmul: %s · %s: batch sizes %zu and %zu differ",
                         sa, sb, a->shape[0], b->shape[0]);
    mm_dims d = dims_of(a, b);
    out->rank = (a->rank == 3 || b->rank == 3) ? 3 : 2;
    size_t *s = out->shape + out->rank - 2;
    if (out->rank == 3)
        out->shape[0] = d.batch;
    s[0] = d.m;
    s[1] = d.n;
    return AG_OK;
}

ag_status ag__matmul_forward(ag_tape *t, ag_record *r)
{
    (void)t;
    mm_dims d = dims_of(r->in[0], r->in[1]);
    for (size_t i = 0; i < d.batch; i++) {
        size_t oa = i * d.stride_a, ob = i * d.stride_b, oy = i * d.m * d.n;
        if (r->out->dtype == AG_F32)
            ag__gemm_f32(false, false, d.m, d.n, d.k, (const float *)r->in[0]->data + oa,
                         (const float *)r->in[1]->data + ob, 0, (float *)r->out->data + oy);
        else
            ag__gemm_f64(false, false, d.m, d.n, d.k, (const double *)r->in[0]->data + oa,
                         (const double *)r->in[1]->data + ob, 0, (double *)r->out->data + oy);
    }
    return AG_OK;
}

ag_status ag__matmul_backward(ag_tape *t, const ag_record *r, const void *gout, void *gin[])
{
    (void)t;
    mm_dims d = dims_of(r->in[0], r->in[1]);
    bool f32 = r->out->dtype == AG_F32;
    for (size_t i = 0; i < d.batch; i++) {
        size_t oa = i * d.stride_a, ob = i * d.stride_b, oy = i * d.m * d.n;
        if (gin[0] && f32)
            ag__gemm_f32(false, true, d.m, d.k, d.n, (const float *)gout + oy,
                         (const float *)r->in[1]->data + ob, 1, (float *)gin[0] + oa);
        else if (gin[0])
            ag__gemm_f64(false, true, d.m, d.k, d.n, (const double *)gout + oy,
                         (const double *)r->in[1]->data + ob, 1, (double *)gin[0] + oa);
        if (gin[1] && f32)
            ag__gemm_f32(true, false, d.k, d.n, d.m, (const float *)r->in[0]->data + oa,
                         (const float *)gout + oy, 1, (float *)gin[1] + ob);
        else if (gin[1])
            ag__gemm_f64(true, false, d.k, d.n, d.m, (const double *)r->in[0]->data + oa,
                         (const double *)gout + oy, 1, (double *)gin[1] + ob);
    }
    return AG_OK;
}

ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b)
{
    return ag__apply(t, AG_OP_MATMUL, a, b, NULL);
}
