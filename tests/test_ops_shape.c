/* test_ops_shape.c: the second op set's shape, index and product ops
 * (permute, expand, index_select, gather, and ag_matmul of any rank): f64
 * gradchecks, forward values and gradients against plain C loops in f64
 * and f32, every error path with its status and message, empty tensors,
 * thread counts, and their PyTorch reference cases in tests/data. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "optest.h"

static ag_rng rng;

static void seed_rng(void) { ag_rng_seed(&rng, 20240917); }

TestSuite(gradcheck, .init = seed_rng);
TestSuite(forward, .init = seed_rng);
TestSuite(errors, .init = seed_rng);
TestSuite(edges, .init = seed_rng);
TestSuite(reference);

/* ------------------------------------------------------------ helpers */

/* An f64 tensor uniform in [-1, 1) of the given dimensions. */
#define U(...) ot_uniform(&rng, AG_F64, AG_SHAPE(__VA_ARGS__), -1, 1, false)

/* Random whole numbers in [0, n) as a tensor of dtype dt. */
static ag_tensor *indices(ag_dtype dt, size_t n, const size_t *shape, size_t rank)
{
    ag_tensor *x = ag_zeros(dt, shape, rank);
    cr_assert_not_null(x);
    for (size_t i = 0; i < ag_tensor_numel(x); i++) {
        double v = (double)ag_rng_below(&rng, n);
        if (dt == AG_F32)
            ((float *)ag_data(x))[i] = (float)v;
        else
            ((double *)ag_data(x))[i] = v;
    }
    return x;
}

/* The ops' parameters for the functions under check. */
typedef struct {
    int axes[AG_MAX_RANK];
    size_t n, shape[AG_MAX_RANK];
    int axis;
    ag_tensor *idx; /* constant, not an input */
} op_args;

static ag_tensor *apply_permute(ag_tape *t, ag_tensor *const *x, void *c)
{
    op_args *a = c;
    return ag_permute(t, x[0], a->axes, a->n);
}

static ag_tensor *apply_expand(ag_tape *t, ag_tensor *const *x, void *c)
{
    op_args *a = c;
    return ag_expand(t, x[0], a->shape, a->n);
}

static ag_tensor *apply_index_select(ag_tape *t, ag_tensor *const *x, void *c)
{
    op_args *a = c;
    return ag_index_select(t, x[0], a->axis, a->idx);
}

static ag_tensor *apply_gather(ag_tape *t, ag_tensor *const *x, void *c)
{
    op_args *a = c;
    return ag_gather(t, x[0], a->axis, a->idx);
}

static ag_tensor *apply_matmul(ag_tape *t, ag_tensor *const *x, void *c)
{
    (void)c;
    return ag_matmul(t, x[0], x[1]);
}

/* ------------------------------------------------------------ gradcheck: permute, expand */

static void check_permute(const size_t *shape, size_t rank, const int *axes, size_t n)
{
    op_args a = {.n = n};
    memcpy(a.axes, axes, n * sizeof *axes);
    ot_check_pair_and_free("permute", apply_permute, &a, ot_uniform(&rng, AG_F64, shape, rank, -1, 1, false), NULL);
}
#define AXES(...) (const int[]){__VA_ARGS__}, sizeof((const int[]){__VA_ARGS__}) / sizeof(int)

Test(gradcheck, permute_rank3_every_order)
{
    const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (size_t i = 0; i < 6; i++)
        check_permute(AG_SHAPE(2, 3, 4), orders[i], 3);
}
Test(gradcheck, permute_negative_axes) { check_permute(AG_SHAPE(2, 3, 4), AXES(-1, 0, -2)); }
Test(gradcheck, permute_rank2) { check_permute(AG_SHAPE(3, 5), AXES(1, 0)); }
Test(gradcheck, permute_rank1) { check_permute(AG_SHAPE(5), AXES(0)); }
Test(gradcheck, permute_rank4_with_unit_axes) { check_permute(AG_SHAPE(2, 3, 1, 2), AXES(3, 1, 0, 2)); }
Test(gradcheck, permute_rank6) { check_permute(AG_SHAPE(2, 1, 2, 3, 1, 2), AXES(5, 3, 0, 4, 2, 1)); }

static void check_expand(const size_t *from_shape, size_t from_rank, const size_t *to, size_t n)
{
    op_args a = {.n = n};
    memcpy(a.shape, to, n * sizeof *to);
    ot_check_pair_and_free("expand", apply_expand, &a, ot_uniform(&rng, AG_F64, from_shape, from_rank, -1, 1, false),
                           NULL);
}

Test(gradcheck, expand_column) { check_expand(AG_SHAPE(3, 1), AG_SHAPE(3, 4)); }
Test(gradcheck, expand_row_to_rank3) { check_expand(AG_SHAPE(4), AG_SHAPE(2, 3, 4)); }
Test(gradcheck, expand_both_sides) { check_expand(AG_SHAPE(1, 3, 1), AG_SHAPE(2, 3, 5)); }
Test(gradcheck, expand_interleaved) { check_expand(AG_SHAPE(2, 1, 3, 1), AG_SHAPE(2, 2, 2, 3, 2)); }
Test(gradcheck, expand_same_shape) { check_expand(AG_SHAPE(2, 3), AG_SHAPE(2, 3)); }
Test(gradcheck, expand_scalar) { check_expand(NULL, 0, AG_SHAPE(2, 3)); }

/* ------------------------------------------------------------ gradcheck: index_select, gather */

static void check_indexed(ag_fn fn, const char *what, const size_t *xs, size_t xr, int axis, ag_tensor *idx)
{
    op_args a = {.axis = axis, .idx = idx};
    ot_check_pair_and_free(what, fn, &a, ot_uniform(&rng, AG_F64, xs, xr, -1, 1, false), NULL);
    ag_tensor_free(idx);
}

Test(gradcheck, index_select_rows_with_repeats)
{
    check_indexed(apply_index_select, "index_select", AG_SHAPE(5, 3), 0,
                  ot_from(AG_F64, AG_SHAPE(4), (double[]){4, 0, 0, 2}));
}

Test(gradcheck, index_select_middle_axis_of_rank3)
{
    check_indexed(apply_index_select, "index_select", AG_SHAPE(2, 6, 3), 1,
                  ot_from(AG_F64, AG_SHAPE(5), (double[]){5, 1, 1, 0, 1}));
}

Test(gradcheck, index_select_last_axis_negative_f32_indices)
{
    check_indexed(apply_index_select, "index_select", AG_SHAPE(3, 2, 4), -1,
                  ot_from(AG_F32, AG_SHAPE(6), (double[]){3, 3, 0, 2, 3, 1}));
}

Test(gradcheck, index_select_scalar_index)
{
    check_indexed(apply_index_select, "index_select", AG_SHAPE(4, 3), 0,
                  ot_from(AG_F64, NULL, 0, (double[]){2}));
}

Test(gradcheck, gather_along_columns)
{
    check_indexed(apply_gather, "gather", AG_SHAPE(4, 5), 1, indices(AG_F64, 5, AG_SHAPE(4, 3)));
}

Test(gradcheck, gather_along_rows_more_than_the_input)
{
    check_indexed(apply_gather, "gather", AG_SHAPE(3, 4), 0, indices(AG_F64, 3, AG_SHAPE(6, 4)));
}

Test(gradcheck, gather_rank3_smaller_off_axis)
{
    check_indexed(apply_gather, "gather", AG_SHAPE(3, 4, 5), 1, indices(AG_F64, 4, AG_SHAPE(2, 7, 3)));
}

Test(gradcheck, gather_last_axis_negative_f32_indices)
{
    check_indexed(apply_gather, "gather", AG_SHAPE(2, 3, 4), -1, indices(AG_F32, 4, AG_SHAPE(2, 3, 6)));
}

/* ------------------------------------------------------------ gradcheck: matmul */

static void check_matmul(const size_t *sa, size_t ra, const size_t *sb, size_t rb)
{
    ot_check_pair_and_free("matmul", apply_matmul, NULL, ot_uniform(&rng, AG_F64, sa, ra, -1, 1, false),
                           ot_uniform(&rng, AG_F64, sb, rb, -1, 1, false));
}

Test(gradcheck, matmul_dot) { check_matmul(AG_SHAPE(4), AG_SHAPE(4)); }
Test(gradcheck, matmul_matrix_vector) { check_matmul(AG_SHAPE(3, 4), AG_SHAPE(4)); }
Test(gradcheck, matmul_vector_matrix) { check_matmul(AG_SHAPE(4), AG_SHAPE(4, 2)); }
Test(gradcheck, matmul_vector_batch) { check_matmul(AG_SHAPE(4), AG_SHAPE(2, 4, 3)); }
Test(gradcheck, matmul_batch_vector) { check_matmul(AG_SHAPE(2, 3, 4), AG_SHAPE(4)); }
Test(gradcheck, matmul_rank3_rank2) { check_matmul(AG_SHAPE(2, 3, 4), AG_SHAPE(4, 5)); }
Test(gradcheck, matmul_rank2_rank3) { check_matmul(AG_SHAPE(3, 4), AG_SHAPE(2, 4, 5)); }
Test(gradcheck, matmul_batch_broadcast_one) { check_matmul(AG_SHAPE(3, 2, 4), AG_SHAPE(1, 4, 3)); }
Test(gradcheck, matmul_rank4_rank3) { check_matmul(AG_SHAPE(2, 1, 3, 4), AG_SHAPE(5, 4, 2)); }
Test(gradcheck, matmul_rank4_broadcast_both) { check_matmul(AG_SHAPE(2, 1, 3, 4), AG_SHAPE(1, 3, 4, 2)); }
Test(gradcheck, matmul_rank5_vector) { check_matmul(AG_SHAPE(2, 1, 2, 2, 3), AG_SHAPE(3)); }
Test(gradcheck, matmul_vector_rank5) { check_matmul(AG_SHAPE(3), AG_SHAPE(1, 2, 1, 3, 2)); }

static ag_tensor *apply_matmul_self(ag_tape *t, ag_tensor *const *x, void *c)
{
    (void)c;
    return ag_matmul(t, x[0], x[0]);
}

Test(gradcheck, matmul_operand_twice)
{
    ot_check_pair_and_free("x·x, x a vector", apply_matmul_self, NULL, U(5), NULL);
    ot_check_pair_and_free("x·x, x a batch of squares", apply_matmul_self, NULL, U(2, 3, 3), NULL);
}

/* A chain of the new ops in one graph: an embedding lookup, a batch of
 * attention-like products, a permute and an expand. */
static ag_tensor *apply_chain(ag_tape *t, ag_tensor *const *x, void *c)
{
    op_args *a = c;
    ag_tensor *e = ag_index_select(t, x[0], 0, a->idx);                    /* [4,3] */
    ag_tensor *e3 = ag_expand(t, e, AG_SHAPE(2, 4, 3));                    /* [2,4,3] */
    ag_tensor *k = ag_permute(t, e3, (const int[]){0, 2, 1}, 3);           /* [2,3,4] */
    ag_tensor *s = ag_matmul(t, e3, k);                                    /* [2,4,4] */
    return ag_matmul(t, ag_tanh(t, s), ag_matmul(t, e, x[1]));            /* [2,4,2] */
}

Test(gradcheck, chain_of_the_new_ops)
{
    ag_tensor *idx = ot_from(AG_F64, AG_SHAPE(4), (double[]){1, 0, 1, 3});
    op_args a = {.idx = idx};
    ot_check_pair_and_free("chain", apply_chain, &a, U(5, 3), U(3, 2));
    ag_tensor_free(idx);
}

/* ------------------------------------------------------------ forward against plain loops */

/* Row-major position of multi-index at in shape. */
static size_t flat(const size_t *shape, size_t rank, const size_t *at)
{
    size_t i = 0;
    for (size_t d = 0; d < rank; d++)
        i = i * shape[d] + at[d];
    return i;
}

static void unflat(const size_t *shape, size_t rank, size_t i, size_t *at)
{
    for (size_t d = rank; d-- > 0;) {
        at[d] = i % shape[d];
        i /= shape[d];
    }
}

/* Runs y = op(x) forward and backward with a random seed, in dtype dt, and
 * checks y and x's gradient against want_y (the result's elements as
 * indices into x, each result element one x element) computed here. */
static void check_moves(ag_dtype dt, ag_tensor *x, ag_tensor *(*op)(ag_tape *, ag_tensor *, void *),
                        void *ctx, const size_t *src, size_t ny)
{
    ag_set_requires_grad(x, true);
    ag_zero_grad(x);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = op(t, x, ctx);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    cr_assert_eq(ag_tensor_numel(y), ny);
    ag_tensor *seed = ot_uniform(&rng, dt, ag_tensor_shape(y), ag_tensor_rank(y), -1, 1, false);
    cr_assert_eq(ag_backward_seed(t, y, seed), AG_OK, "%s", ag_tape_error(t));
    size_t nx = ag_tensor_numel(x);
    double *want_g = calloc(nx ? nx : 1, sizeof *want_g);
    for (size_t i = 0; i < ny; i++) {
        cr_assert_eq(ag_get(y, i), ag_get(x, src[i]), "y[%zu] = %g, want x[%zu] = %g", i, ag_get(y, i),
                     src[i], ag_get(x, src[i]));
        want_g[src[i]] += ag_get(seed, i);
    }
    double tol = dt == AG_F32 ? 1e-5 : 1e-12;
    for (size_t i = 0; i < nx; i++)
        cr_assert(fabs(ag_get_grad(x, i) - want_g[i]) <= tol * (1 + fabs(want_g[i])),
                  "grad[%zu] = %.9g, want %.9g", i, ag_get_grad(x, i), want_g[i]);
    free(want_g);
    ag_tensor_free(seed);
    ag_tape_free(t);
}

static ag_tensor *op_permute(ag_tape *t, ag_tensor *x, void *c)
{
    op_args *a = c;
    return ag_permute(t, x, a->axes, a->n);
}

static ag_tensor *op_expand(ag_tape *t, ag_tensor *x, void *c)
{
    op_args *a = c;
    return ag_expand(t, x, a->shape, a->n);
}

static ag_tensor *op_index_select(ag_tape *t, ag_tensor *x, void *c)
{
    op_args *a = c;
    return ag_index_select(t, x, a->axis, a->idx);
}

static ag_tensor *op_gather(ag_tape *t, ag_tensor *x, void *c)
{
    op_args *a = c;
    return ag_gather(t, x, a->axis, a->idx);
}

Test(forward, permute_rank4_in_f32_and_f64)
{
    static const size_t xs[4] = {2, 3, 4, 5};
    const int perm[4] = {3, 1, 0, 2};
    size_t ys[4], src[120], at[4], xat[4];
    for (size_t d = 0; d < 4; d++)
        ys[d] = xs[perm[d]];
    for (size_t i = 0; i < 120; i++) {
        unflat(ys, 4, i, at);
        for (size_t d = 0; d < 4; d++)
            xat[perm[d]] = at[d];
        src[i] = flat(xs, 4, xat);
    }
    op_args a = {.n = 4};
    memcpy(a.axes, perm, sizeof perm);
    for (int k = 0; k < 2; k++) {
        ag_dtype dt = k ? AG_F32 : AG_F64;
        ag_tensor *x = ot_uniform(&rng, dt, xs, 4, -1, 1, false);
        check_moves(dt, x, op_permute, &a, src, 120);
        ag_tensor_free(x);
    }
}

Test(forward, expand_in_f32_and_f64)
{
    static const size_t xs[3] = {3, 1, 2}, ys[5] = {2, 2, 3, 4, 2};
    size_t src[96], at[5];
    for (size_t i = 0; i < 96; i++) {
        unflat(ys, 5, i, at);
        size_t xat[3] = {at[2], 0, at[4]};
        src[i] = flat(xs, 3, xat);
    }
    op_args a = {.n = 5};
    memcpy(a.shape, ys, sizeof ys);
    for (int k = 0; k < 2; k++) {
        ag_dtype dt = k ? AG_F32 : AG_F64;
        ag_tensor *x = ot_uniform(&rng, dt, xs, 3, -1, 1, false);
        check_moves(dt, x, op_expand, &a, src, 96);
        ag_tensor_free(x);
    }
}

Test(forward, index_select_and_gather_in_f32_and_f64)
{
    static const size_t xs[3] = {3, 5, 4};
    for (int k = 0; k < 2; k++) {
        ag_dtype dt = k ? AG_F32 : AG_F64;
        /* index_select along axis 1 with 7 picks, repeats among them */
        ag_tensor *idx = indices(dt, 5, AG_SHAPE(7));
        size_t src[84], at[3];
        static const size_t ys[3] = {3, 7, 4};
        for (size_t i = 0; i < 84; i++) {
            unflat(ys, 3, i, at);
            at[1] = (size_t)ag_get(idx, at[1]);
            src[i] = flat(xs, 3, at);
        }
        ag_tensor *x = ot_uniform(&rng, dt, xs, 3, -1, 1, false);
        check_moves(dt, x, op_index_select, &(op_args){.axis = 1, .idx = idx}, src, 84);
        ag_tensor_free(idx);
        /* gather along axis 2 with indices [2,5,6] */
        static const size_t gs[3] = {2, 5, 6};
        idx = indices(dt, 4, gs, 3);
        for (size_t i = 0; i < 60; i++) {
            unflat(gs, 3, i, at);
            at[2] = (size_t)ag_get(idx, i);
            src[i] = flat(xs, 3, at);
        }
        check_moves(dt, x, op_gather, &(op_args){.axis = -1, .idx = idx}, src, 60);
        ag_tensor_free(idx);
        ag_tensor_free(x);
    }
}

/* matmul against a naive loop over broadcast batches, forward and both
 * gradients (with a random seed), in dtype dt. sa/sb are the operands'
 * shapes as torch.matmul reads them. */
static void check_matmul_naive(ag_dtype dt, const size_t *sa, size_t ra, const size_t *sb, size_t rb)
{
    ag_tensor *a = ot_uniform(&rng, dt, sa, ra, -1, 1, false);
    ag_tensor *b = ot_uniform(&rng, dt, sb, rb, -1, 1, false);
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_matmul(t, a, b);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    ag_tensor *seed = ot_uniform(&rng, dt, ag_tensor_shape(y), ag_tensor_rank(y), -1, 1, false);
    cr_assert_eq(ag_backward_seed(t, y, seed), AG_OK, "%s", ag_tape_error(t));
    /* promoted shapes: [m,k] and [k,n] with batch axes padded to nb */
    size_t k = sa[ra - 1], m = ra > 1 ? sa[ra - 2] : 1, n = rb > 1 ? sb[rb - 1] : 1;
    size_t ba = ra > 2 ? ra - 2 : 0, bbr = rb > 2 ? rb - 2 : 0, nb = ba > bbr ? ba : bbr;
    size_t bshape[AG_MAX_RANK], ashape[AG_MAX_RANK], bshp[AG_MAX_RANK], batch = 1;
    for (size_t j = 0; j < nb; j++) {
        ashape[j] = j + ba >= nb ? sa[j + ba - nb] : 1;
        bshp[j] = j + bbr >= nb ? sb[j + bbr - nb] : 1;
        bshape[j] = ashape[j] > bshp[j] ? ashape[j] : bshp[j];
        batch *= bshape[j];
    }
    cr_assert_eq(ag_tensor_numel(y), batch * m * n);
    double *ga = calloc(ag_tensor_numel(a), sizeof *ga), *gb = calloc(ag_tensor_numel(b), sizeof *gb);
    double tol = dt == AG_F32 ? 1e-4 : 1e-11;
    for (size_t e = 0; e < batch; e++) {
        size_t at[AG_MAX_RANK], aat[AG_MAX_RANK], bat[AG_MAX_RANK];
        unflat(bshape, nb, e, at);
        for (size_t j = 0; j < nb; j++) {
            aat[j] = ashape[j] == 1 ? 0 : at[j];
            bat[j] = bshp[j] == 1 ? 0 : at[j];
        }
        size_t oa = flat(ashape, nb, aat) * m * k, ob = flat(bshp, nb, bat) * k * n;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0, g = ag_get(seed, (e * m + i) * n + j);
                for (size_t p = 0; p < k; p++) {
                    s += ag_get(a, oa + i * k + p) * ag_get(b, ob + p * n + j);
                    ga[oa + i * k + p] += g * ag_get(b, ob + p * n + j);
                    gb[ob + p * n + j] += g * ag_get(a, oa + i * k + p);
                }
                double got = ag_get(y, (e * m + i) * n + j);
                cr_assert(fabs(got - s) <= tol * (1 + fabs(s)), "y[%zu,%zu,%zu] = %.9g, want %.9g", e, i, j,
                          got, s);
            }
    }
    for (size_t i = 0; i < ag_tensor_numel(a); i++)
        cr_assert(fabs(ag_get_grad(a, i) - ga[i]) <= tol * (1 + fabs(ga[i])), "ga[%zu] = %.9g, want %.9g", i,
                  ag_get_grad(a, i), ga[i]);
    for (size_t i = 0; i < ag_tensor_numel(b); i++)
        cr_assert(fabs(ag_get_grad(b, i) - gb[i]) <= tol * (1 + fabs(gb[i])), "gb[%zu] = %.9g, want %.9g", i,
                  ag_get_grad(b, i), gb[i]);
    free(ga);
    free(gb);
    ag_tensor_free(seed);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(forward, matmul_any_rank_against_loops)
{
    for (int k = 0; k < 2; k++) {
        ag_dtype dt = k ? AG_F32 : AG_F64;
        check_matmul_naive(dt, AG_SHAPE(7), AG_SHAPE(7));
        check_matmul_naive(dt, AG_SHAPE(5), AG_SHAPE(3, 5, 4));
        check_matmul_naive(dt, AG_SHAPE(2, 3, 6), AG_SHAPE(6));
        check_matmul_naive(dt, AG_SHAPE(2, 1, 3, 4), AG_SHAPE(3, 4, 5));
        check_matmul_naive(dt, AG_SHAPE(1, 3, 1, 2, 3), AG_SHAPE(2, 1, 2, 3, 4));
        check_matmul_naive(dt, AG_SHAPE(4, 1, 3, 5), AG_SHAPE(1, 2, 5, 2));
    }
}

/* Large enough for the packed, threaded GEMM: the dense layer's batch of
 * rows read as one product, a shared left operand, and a broadcast batch. */
Test(forward, matmul_large_batches_against_loops)
{
    check_matmul_naive(AG_F64, AG_SHAPE(3, 37, 70), AG_SHAPE(70, 45));
    check_matmul_naive(AG_F32, AG_SHAPE(3, 37, 70), AG_SHAPE(70, 45));
    check_matmul_naive(AG_F32, AG_SHAPE(37, 70), AG_SHAPE(3, 70, 45));
    check_matmul_naive(AG_F64, AG_SHAPE(2, 1, 33, 40), AG_SHAPE(3, 40, 50));
}

/* The results do not depend on the thread count (bitwise). */
static ag_tensor *run_threads(size_t threads, ag_tensor *x, ag_tensor *w, ag_tensor *idx, size_t *n_out)
{
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, threads);
    ag_tensor *p = ag_permute(t, x, (const int[]){2, 0, 1}, 3);            /* [64,40,30] */
    ag_tensor *e = ag_expand(t, ag_slice(t, p, 1, 0, 1), AG_SHAPE(2, 64, 40, 30));
    ag_tensor *g = ag_gather(t, x, 2, idx);                                /* [40,30,64] */
    ag_tensor *m = ag_matmul(t, p, w);                                     /* [64,40,20] */
    ag_tensor *s = ag_add(t, ag_add(t, ag_sum(t, ag_mul(t, p, p)), ag_sum(t, ag_mul(t, e, e))),
                          ag_add(t, ag_sum(t, ag_tanh(t, g)), ag_sum(t, ag_tanh(t, m))));
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s", ag_tape_error(t));
    size_t n = ag_tensor_numel(x) + ag_tensor_numel(w) + 1;
    ag_tensor *out = ag_zeros(AG_F32, AG_SHAPE(n));
    float *o = ag_data(out);
    memcpy(o, ag_grad(x), ag_tensor_numel(x) * sizeof *o);
    memcpy(o + ag_tensor_numel(x), ag_grad(w), ag_tensor_numel(w) * sizeof *o);
    o[n - 1] = (float)ag_item(s);
    ag_zero_grad(x);
    ag_zero_grad(w);
    ag_tape_free(t);
    *n_out = n;
    return out;
}

Test(forward, same_bits_for_any_thread_count)
{
    ag_tensor *x = ot_uniform(&rng, AG_F32, AG_SHAPE(40, 30, 64), -1, 1, false);
    ag_tensor *w = ot_uniform(&rng, AG_F32, AG_SHAPE(30, 20), -1, 1, false);
    ag_tensor *idx = indices(AG_F32, 64, AG_SHAPE(40, 30, 64));
    ag_set_requires_grad(x, true);
    ag_set_requires_grad(w, true);
    size_t n1, n4;
    ag_tensor *one = run_threads(1, x, w, idx, &n1), *four = run_threads(4, x, w, idx, &n4);
    cr_assert_eq(n1, n4);
    cr_assert(memcmp(ag_data(one), ag_data(four), n1 * sizeof(float)) == 0, "1 and 4 threads differ");
    ag_tensor_free(one);
    ag_tensor_free(four);
    ag_tensor_free(idx);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

/* ------------------------------------------------------------ edges */

Test(edges, repeated_indices_add_their_gradients)
{
    ag_tensor *x = ot_from(AG_F64, AG_SHAPE(3), (double[]){1, 2, 3});
    ag_tensor *idx = ot_from(AG_F64, AG_SHAPE(5), (double[]){1, 1, 2, 1, 0});
    ag_set_requires_grad(x, true);
    ag_set_requires_grad(idx, true); /* indices take no gradient, even when asked */
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_index_select(t, x, 0, idx);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_get_grad(x, 0), 1);
    cr_assert_eq(ag_get_grad(x, 1), 3);
    cr_assert_eq(ag_get_grad(x, 2), 1);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ag_get_grad(idx, i), 0);
    ag_zero_grad(x);
    ag_tape_reset(t);
    y = ag_gather(t, x, 0, idx);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_get_grad(x, 1), 3);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ag_get_grad(idx, i), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(idx);
}

/* Σ of op(x), backpropagated: the result's shape and x's zero gradient. */
static void check_empty(ag_tensor *x, ag_tensor *y, ag_tape *t, const size_t *shape, size_t rank)
{
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    ot_assert_shape(y, shape, rank);
    ag_tensor *s = ag_sum(t, y);
    cr_assert_eq(ag_item(s), 0);
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        cr_assert_eq(ag_get_grad(x, i), 0);
}

Test(edges, empty_tensors)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *e = U(0, 3), *x = U(1, 3), *none = ag_zeros(AG_F64, AG_SHAPE(0));
    ag_set_requires_grad(e, true);
    ag_set_requires_grad(x, true);
    check_empty(e, ag_permute(t, e, AXES(1, 0)), t, AG_SHAPE(3, 0));
    check_empty(x, ag_expand(t, x, AG_SHAPE(0, 3)), t, AG_SHAPE(0, 3));
    check_empty(x, ag_expand(t, x, AG_SHAPE(2, 0, 3)), t, AG_SHAPE(2, 0, 3));
    check_empty(x, ag_index_select(t, x, 0, none), t, AG_SHAPE(0, 3));
    check_empty(e, ag_index_select(t, e, 1, none), t, AG_SHAPE(0, 0));
    ag_tensor *gi = ag_zeros(AG_F64, AG_SHAPE(0, 3));
    check_empty(x, ag_gather(t, x, 0, gi), t, AG_SHAPE(0, 3));
    ag_tensor *w = U(3, 4), *z = ag_zeros(AG_F64, AG_SHAPE(2, 0, 1));
    check_empty(e, ag_matmul(t, e, w), t, AG_SHAPE(0, 4));
    check_empty(x, ag_matmul(t, z, x), t, AG_SHAPE(2, 0, 3));
    cr_assert_eq(ag_tape_status(t), AG_OK, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(gi);
    ag_tensor_free(w);
    ag_tensor_free(z);
    ag_tensor_free(e);
    ag_tensor_free(x);
    ag_tensor_free(none);
}

/* An inner dimension of 0: the product is zeros, every product of nothing. */
Test(edges, matmul_empty_inner_dimension)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_zeros(AG_F32, AG_SHAPE(2, 3, 0)), *b = ag_zeros(AG_F32, AG_SHAPE(0, 4));
    ag_tensor *w = ot_uniform(&rng, AG_F32, AG_SHAPE(2, 3, 4), -1, 1, false);
    ag_set_requires_grad(w, true);
    ag_tensor *y = ag_matmul(t, a, b);
    ot_assert_shape(y, AG_SHAPE(2, 3, 4));
    for (size_t i = 0; i < 24; i++)
        cr_assert_eq(ag_get(y, i), 0);
    ag_tensor *s = ag_sum(t, ag_mul(t, ag_add(t, y, w), w));
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(w);
}

Test(edges, rank0_and_dot_results)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *s = ot_from(AG_F64, NULL, 0, (double[]){2.5});
    ag_tensor *y = ag_permute(t, s, NULL, 0);
    ot_assert_shape(y, NULL, 0);
    cr_assert_eq(ag_item(y), 2.5);
    ag_tensor *a = ot_from(AG_F32, AG_SHAPE(3), (double[]){1, 2, 3});
    ag_tensor *b = ot_from(AG_F32, AG_SHAPE(3), (double[]){4, -5, 6});
    y = ag_matmul(t, a, b);
    ot_assert_shape(y, NULL, 0);
    cr_assert_eq(ag_item(y), 12);
    ag_tensor *m = ot_from(AG_F32, AG_SHAPE(2, 3), (double[]){1, 0, 0, 0, 1, 1});
    y = ag_matmul(t, m, b);
    ot_assert_shape(y, AG_SHAPE(2));
    cr_assert_eq(ag_get(y, 0), 4);
    cr_assert_eq(ag_get(y, 1), 1);
    y = ag_matmul(t, a, ag_transpose(t, m));
    ot_assert_shape(y, AG_SHAPE(2));
    cr_assert_eq(ag_get(y, 1), 5);
    cr_assert_eq(ag_tape_status(t), AG_OK, "%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(s);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(m);
}

/* The caller's axes and shape need not outlive the call: the backward
 * uses its own copy. */
Test(edges, attribute_arrays_may_change_after_the_call)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = U(2, 3, 4);
    ag_set_requires_grad(x, true);
    int axes[3] = {2, 0, 1};
    size_t shape[3] = {2, 2, 1};
    ag_tensor *p = ag_permute(t, x, axes, 3);
    ag_tensor *c = U(1, 1);
    ag_tensor *e = ag_expand(t, c, shape, 3);
    axes[0] = 0, axes[2] = 2;
    shape[0] = 99, shape[2] = 7;
    ot_assert_shape(p, AG_SHAPE(4, 2, 3));
    ot_assert_shape(e, AG_SHAPE(2, 2, 1));
    ag_tensor *seed = U(4, 2, 3);
    cr_assert_eq(ag_backward_seed(t, p, seed), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < 24; i++) { /* x[a,b,c] gets seed[c,a,b] */
        size_t a = i / 12, b = i / 4 % 3, cc = i % 4;
        cr_assert_eq(ag_get_grad(x, i), ag_get(seed, (cc * 2 + a) * 3 + b));
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(c);
    ag_tensor_free(seed);
}

/* Huge values pass through the moves unchanged. */
Test(edges, large_values_move_exactly)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ot_from(AG_F32, AG_SHAPE(2, 2), (double[]){3e38, -3e38, 1e-38, 7});
    ag_tensor *idx = ot_from(AG_F32, AG_SHAPE(2, 2), (double[]){1, 0, 0, 1});
    ag_tensor *p = ag_permute(t, x, AXES(1, 0)), *g = ag_gather(t, x, 1, idx);
    cr_assert_eq(ag_get(p, 1), (double)1e-38f);
    cr_assert_eq(ag_get(p, 2), -(double)3e38f);
    cr_assert_eq(ag_get(g, 0), -(double)3e38f);
    cr_assert_eq(ag_get(g, 2), (double)1e-38f);
    ag_tensor *big = ot_from(AG_F64, AG_SHAPE(2), (double[]){1e150, 1e150});
    ag_tensor *y = ag_matmul(t, big, big);
    cr_assert(isfinite(ag_item(y)) && fabs(ag_item(y) / 2e300 - 1) < 1e-15, "%g", ag_item(y));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(idx);
    ag_tensor_free(big);
}

/* ------------------------------------------------------------ errors */

Test(errors, permute_not_a_permutation)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = U(2, 3, 4);
    cr_assert_null(ag_permute(t, x, AXES(0, 1)));
    cr_assert_eq(ag_tape_status(t), AG_ERR_VALUE);
    cr_assert_str_eq(ag_tape_error(t), "ag_permute: [2,3,4]: (0,1) is not a permutation of its 3 axes");
    ag_tape_reset(t);
    cr_assert_null(ag_permute(t, x, AXES(0, 2, -1)));
    ot_assert_error(t, AG_ERR_VALUE, "ag_permute: [2,3,4]: (0,2,-1)", "not a permutation");
    ag_tape_reset(t);
    cr_assert_null(ag_permute(t, x, AXES(0, 1, 3)));
    ot_assert_error(t, AG_ERR_VALUE, "(0,1,3)", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_permute(t, x, AXES(0, 1, -4)));
    ot_assert_error(t, AG_ERR_VALUE, "(0,1,-4)", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_permute(t, x, AXES(0, 1, 2, 3, 4, 5, 6, 7, 8)));
    ot_assert_error(t, AG_ERR_VALUE, "(0,1,2,3,4,5,6,7,...)", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_permute(t, x, NULL, 3));
    ot_assert_error(t, AG_ERR_NULL, "ag_permute: [2,3,4]: axes is NULL", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_permute(t, NULL, AXES(0)));
    ot_assert_error(t, AG_ERR_NULL, "ag_permute", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
}

Test(errors, expand_does_not_broadcast)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = U(3, 2);
    cr_assert_null(ag_expand(t, x, AG_SHAPE(3, 4)));
    cr_assert_eq(ag_tape_status(t), AG_ERR_SHAPE);
    cr_assert_str_eq(ag_tape_error(t), "ag_expand: [3,2] does not broadcast to [3,4] (axis 1: 2 vs 4)");
    ag_tape_reset(t);
    cr_assert_null(ag_expand(t, x, AG_SHAPE(5, 2, 2)));
    ot_assert_error(t, AG_ERR_SHAPE, "to [5,2,2] (axis 1: 3 vs 2)", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_expand(t, x, AG_SHAPE(2)));
    ot_assert_error(t, AG_ERR_SHAPE, "ag_expand: [3,2] does not broadcast to [2] (rank 1 is below 2)", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_expand(t, x, AG_SHAPE(1, 1, 1, 1, 1, 1, 1, 3, 2)));
    ot_assert_error(t, AG_ERR_VALUE, "ag_expand: [3,2]: target rank 9 exceeds AG_MAX_RANK", NULL);
    ag_tape_reset(t);
    cr_assert_null(ag_expand(t, x, NULL, 2));
    ot_assert_error(t, AG_ERR_NULL, "ag_expand", "NULL shape");
    ag_tape_reset(t);
    ag_tensor *one = U(1);
    cr_assert_null(ag_expand(t, one, AG_SHAPE(SIZE_MAX / 2, 4)));
    ot_assert_error(t, AG_ERR_OVERFLOW, "ag_expand", "overflows");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(one);
}

static void expect_index_error(ag_tensor *(*f)(ag_tape *, ag_tensor *, int, ag_tensor *), ag_tensor *x,
                               int axis, ag_tensor *idx, ag_status s, const char *part1, const char *part2)
{
    ag_tape *t = ag_tape_new();
    cr_assert_null(f(t, x, axis, idx));
    ot_assert_error(t, s, part1, part2);
    ag_tape_free(t);
}

Test(errors, index_select_bad_axis_indices_and_shapes)
{
    ag_tensor *x = U(5, 3);
    ag_tensor *ok = ot_from(AG_F64, AG_SHAPE(2), (double[]){0, 4});
    expect_index_error(ag_index_select, x, 2, ok, AG_ERR_VALUE, "ag_index_select: axis 2 is out of range for [5,3]",
                       NULL);
    expect_index_error(ag_index_select, x, -3, ok, AG_ERR_VALUE, "axis -3", NULL);
    ag_tensor *frac = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, 1, 1.5});
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_index_select(t, x, 0, frac));
    cr_assert_eq(ag_tape_status(t), AG_ERR_VALUE);
    cr_assert_str_eq(ag_tape_error(t), "ag_index_select: index 1.5 at position [2] is not a whole number "
                                       "in [0, 5) (axis 0 of [5,3])");
    ag_tape_free(t);
    ag_tensor *high = ot_from(AG_F32, AG_SHAPE(2), (double[]){2, 3});
    expect_index_error(ag_index_select, x, 1, high, AG_ERR_VALUE, "index 3 at position [1]", "[0, 3)");
    ag_tensor *neg = ot_from(AG_F64, AG_SHAPE(2), (double[]){-1, 0});
    expect_index_error(ag_index_select, x, 0, neg, AG_ERR_VALUE, "index -1 at position [0]", NULL);
    ag_tensor *nan = ot_from(AG_F64, AG_SHAPE(1), (double[]){NAN});
    expect_index_error(ag_index_select, x, 0, nan, AG_ERR_VALUE, "index nan at position [0]", NULL);
    ag_tensor *inf = ot_from(AG_F64, AG_SHAPE(1), (double[]){INFINITY});
    expect_index_error(ag_index_select, x, 0, inf, AG_ERR_VALUE, "index inf", NULL);
    ag_tensor *grid = ot_from(AG_F64, AG_SHAPE(1, 2), (double[]){0, 1});
    expect_index_error(ag_index_select, x, 0, grid, AG_ERR_SHAPE,
                       "ag_index_select: input [5,3], indices [1,2]: want indices [k]", NULL);
    ag_tensor *s = ot_from(AG_F64, NULL, 0, (double[]){1});
    expect_index_error(ag_index_select, s, 0, ok, AG_ERR_VALUE, "axis 0 is out of range for []", NULL);
    expect_index_error(ag_index_select, x, 0, NULL, AG_ERR_NULL, "ag_index_select: input 2 is NULL", NULL);
    expect_index_error(ag_index_select, NULL, 0, ok, AG_ERR_NULL, "ag_index_select: input 1 is NULL", NULL);
    ag_tensor *v[] = {x, ok, frac, high, neg, nan, inf, grid, s};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        ag_tensor_free(v[i]);
}

Test(errors, gather_bad_shapes_and_indices)
{
    ag_tensor *x = U(3, 4);
    ag_tensor *flat3 = ot_from(AG_F64, AG_SHAPE(3), (double[]){0, 1, 2});
    expect_index_error(ag_gather, x, 1, flat3, AG_ERR_SHAPE, "ag_gather: input [3,4], indices [3]",
                       "want indices of the input's rank");
    ag_tensor *wide = ag_zeros(AG_F64, AG_SHAPE(2, 5));
    expect_index_error(ag_gather, x, 0, wide, AG_ERR_SHAPE, "indices [2,5]", "off axis 0");
    ag_tensor *long_ok = ag_zeros(AG_F64, AG_SHAPE(2, 9)); /* longer along the axis: fine */
    ag_tape *t = ag_tape_new();
    ot_assert_shape(ag_gather(t, x, 1, long_ok), AG_SHAPE(2, 9));
    ag_tape_free(t);
    ag_tensor *bad = ot_from(AG_F64, AG_SHAPE(2, 2), (double[]){0, 1, 3, 4});
    expect_index_error(ag_gather, x, 0, bad, AG_ERR_VALUE, "ag_gather: index 3 at position [1,0]",
                       "[0, 3) (axis 0 of [3,4])");
    expect_index_error(ag_gather, x, -1, bad, AG_ERR_VALUE, "index 4 at position [1,1]", "axis 1 of [3,4]");
    expect_index_error(ag_gather, x, 2, bad, AG_ERR_VALUE, "ag_gather: axis 2 is out of range", NULL);
    ag_tensor *v[] = {x, flat3, wide, long_ok, bad};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        ag_tensor_free(v[i]);
}

static void expect_matmul_error(const size_t *sa, size_t ra, const size_t *sb, size_t rb, const char *msg)
{
    ag_tensor *a = ot_uniform(&rng, AG_F64, sa, ra, -1, 1, false);
    ag_tensor *b = ot_uniform(&rng, AG_F64, sb, rb, -1, 1, false);
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_matmul(t, a, b));
    cr_assert_eq(ag_tape_status(t), AG_ERR_SHAPE, "%s", ag_tape_error(t));
    cr_assert_str_eq(ag_tape_error(t), msg);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

Test(errors, matmul_shapes)
{
    expect_matmul_error(AG_SHAPE(3), AG_SHAPE(4), "ag_matmul: [3] · [4]: inner dimensions 3 and 4 differ");
    expect_matmul_error(AG_SHAPE(2, 3), AG_SHAPE(2), "ag_matmul: [2,3] · [2]: inner dimensions 3 and 2 differ");
    expect_matmul_error(AG_SHAPE(2), AG_SHAPE(3, 2, 4, 5),
                        "ag_matmul: [2] · [3,2,4,5]: inner dimensions 2 and 4 differ");
    expect_matmul_error(AG_SHAPE(2, 3, 4), AG_SHAPE(3, 4, 5),
                        "ag_matmul: [2,3,4] · [3,4,5]: batch sizes 2 and 3 do not broadcast "
                        "(batch axis 0 from the end)");
    expect_matmul_error(AG_SHAPE(2, 1, 3, 4), AG_SHAPE(5, 2, 4, 1),
                        "ag_matmul: [2,1,3,4] · [5,2,4,1]: batch sizes 2 and 5 do not broadcast "
                        "(batch axis 1 from the end)");
    expect_matmul_error(NULL, 0, AG_SHAPE(3), "ag_matmul: [] · [3]: operands must have rank 1 or more");
    expect_matmul_error(AG_SHAPE(3), NULL, 0, "ag_matmul: [3] · []: operands must have rank 1 or more");
}

Test(errors, matmul_dtypes_differ)
{
    ag_tensor *a = U(3), *b = ot_uniform(&rng, AG_F32, AG_SHAPE(3), -1, 1, false);
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_matmul(t, a, b));
    ot_assert_error(t, AG_ERR_DTYPE, "ag_matmul: dtypes f64 and f32 differ", NULL);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
}

/* ------------------------------------------------------------ reference cases */

static const char *const mine[] = {"permute", "expand", "index_select", "gather", "matmul_nd"};

static void run_reference(ag_dtype dt, double tol)
{
    const size_t n = sizeof mine / sizeof mine[0];
    size_t ran = ot_run_reference(TEST_DATA_DIR "/ops-more.txt", mine, n, false, dt, tol);
    cr_assert_eq(ran, 18, "ran %zu cases", ran);
}

Test(reference, shape_cases_in_f64) { run_reference(AG_F64, 1e-9); }
Test(reference, shape_cases_in_f32) { run_reference(AG_F32, 1e-4); }
