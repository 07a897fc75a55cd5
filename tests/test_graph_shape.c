/* test_graph_shape.c: the recorded backwards (grad_graph) of the shape
 * family: matmul, transpose, reshape, concat, slice, cast, detach,
 * permute, expand, index_select, gather, and the internal index_add and
 * scatter_add. For each op on broadcast and rank-3 shapes:
 *   - ag_gradients with AG_CREATE_GRAPH gives ag_backward's gradient
 *     (bitwise, or within 1e-12 relative in f64);
 *   - second derivatives: the gradient of Σ_i <grad_i, v_i> (ag_gradients,
 *     then ag_backward) against central differences of the fused
 *     first-order gradient along v, in f64.
 * The scalar is reduced with this family's own ops (a 1-D matmul), so the
 * tests need no other family's recorded backward. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "internal.h" /* index_add and scatter_add are internal ops */
#include "optest.h"

#define MAX_IN 2

static ag_rng rng;

static void seed_rng(void) { ag_rng_seed(&rng, 20250311); }

TestSuite(graph_first, .init = seed_rng);
TestSuite(graph_second, .init = seed_rng);

/* ------------------------------------------------------------ helpers */

/* The op under test on inputs x; ctx holds its other arguments. */
typedef ag_tensor *(*op_fn)(ag_tape *t, ag_tensor *const *x, const void *ctx);

typedef struct {
    op_fn op;
    const void *ctx;
    size_t n;                /* inputs that take gradients */
    ag_tensor *x[MAX_IN];
    ag_tensor *w;            /* the weights of the scalar, of the result's shape */
    ag_tensor *v[MAX_IN];    /* the directions of the second derivative */
} spec;

/* An f64 input uniform in [-1, 1) of the given dimensions. */
#define INPUT(...) ot_uniform(&rng, AG_F64, AG_SHAPE(__VA_ARGS__), -1, 1, true)

/* Σ y ⊙ w as a 1-D product. */
static ag_tensor *dot(ag_tape *t, ag_tensor *y, ag_tensor *w)
{
    size_t n = ag_tensor_numel(y);
    return ag_matmul(t, ag_reshape(t, y, &n, 1), ag_reshape(t, w, &n, 1));
}

/* The scalar: Σ w ⊙ y, or Σ w ⊙ y ⊙ y (second order: every op here but
 * matmul is linear). */
static ag_tensor *loss(ag_tape *t, const spec *s, bool square)
{
    ag_tensor *y = s->op(t, s->x, s->ctx);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    if (ag_tensor_dtype(y) != ag_tensor_dtype(s->w))
        y = ag_cast(t, y, ag_tensor_dtype(s->w));
    return dot(t, square ? ag_mul(t, y, y) : y, s->w);
}

/* Makes w and the directions v for the spec's inputs. */
static void prepare(spec *s)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *y = s->op(t, s->x, s->ctx);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    s->w = ot_uniform(&rng, AG_F64, ag_tensor_shape(y), ag_tensor_rank(y), -1, 1, false);
    for (size_t i = 0; i < s->n; i++)
        s->v[i] = ot_uniform(&rng, ag_tensor_dtype(s->x[i]), ag_tensor_shape(s->x[i]), ag_tensor_rank(s->x[i]),
                             -1, 1, false);
    ag_tape_free(t);
}

static void release(spec *s)
{
    for (size_t i = 0; i < s->n; i++) {
        ag_tensor_free(s->x[i]);
        ag_tensor_free(s->v[i]);
    }
    ag_tensor_free(s->w);
}

/* The fused gradient of the scalar into g[i] (numel of x[i] doubles). */
static void fused_grad(const spec *s, bool square, double **g)
{
    ag_tape *t = ag_tape_new();
    for (size_t i = 0; i < s->n; i++)
        ag_zero_grad(s->x[i]);
    cr_assert_eq(ag_backward(t, loss(t, s, square)), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < s->n; i++)
        for (size_t j = 0; j < ag_tensor_numel(s->x[i]); j++)
            g[i][j] = ag_get_grad(s->x[i], j);
    ag_tape_free(t);
}

static double **grad_bufs(const spec *s)
{
    double **g = calloc(s->n, sizeof *g);
    cr_assert_not_null(g);
    for (size_t i = 0; i < s->n; i++)
        cr_assert_not_null(g[i] = calloc(ag_tensor_numel(s->x[i]) + 1, sizeof **g));
    return g;
}

static void free_bufs(const spec *s, double **g)
{
    for (size_t i = 0; i < s->n; i++)
        free(g[i]);
    free(g);
}

/* ag_gradients with AG_CREATE_GRAPH equals ag_backward, whose gradient
 * fused_grad leaves in the inputs' grads (ag_gradients does not touch them). */
static void check_first(spec *s)
{
    double **fused = grad_bufs(s);
    fused_grad(s, false, fused);
    ag_tape *t = ag_tape_new();
    ag_tensor *g[MAX_IN];
    cr_assert_eq(ag_gradients(t, loss(t, s, false), s->n, s->x, g, AG_CREATE_GRAPH), AG_OK, "%s",
                 ag_tape_error(t));
    for (size_t i = 0; i < s->n; i++)
        cr_assert_eq(ag_tensor_dtype(g[i]), ag_tensor_dtype(s->x[i]));
    ot_assert_same_gradients("recorded", s->n, s->x, g, OT_PER_ELEMENT, 1e-12);
    ag_tape_free(t);
    free_bufs(s, fused);
}

/* The gradient of Σ_i <grad_i, v_i>, grad_i recorded by ag_gradients,
 * into h; NULL-free: an s that needs no gradient leaves h at 0. */
static void graph_hvp(const spec *s, double **h)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *g[MAX_IN], *sum = NULL;
    cr_assert_eq(ag_gradients(t, loss(t, s, true), s->n, s->x, g, AG_CREATE_GRAPH), AG_OK, "%s",
                 ag_tape_error(t));
    for (size_t i = 0; i < s->n; i++) {
        ag_tensor *term = dot(t, g[i], s->v[i]);
        sum = sum ? ag_add(t, sum, term) : term;
    }
    for (size_t i = 0; i < s->n; i++) {
        ag_zero_grad(s->x[i]);
        memset(h[i], 0, ag_tensor_numel(s->x[i]) * sizeof **h);
    }
    if (ag_requires_grad(sum)) {
        cr_assert_eq(ag_backward(t, sum), AG_OK, "%s", ag_tape_error(t));
        for (size_t i = 0; i < s->n; i++)
            for (size_t j = 0; j < ag_tensor_numel(s->x[i]); j++)
                h[i][j] = ag_get_grad(s->x[i], j);
    }
    ag_tape_free(t);
}

/* Second derivatives against (∇f(x + εv) - ∇f(x - εv)) / 2ε. */
static void check_second(spec *s)
{
    const double eps = 1e-5;
    double **h = grad_bufs(s), **hi = grad_bufs(s), **lo = grad_bufs(s);
    graph_hvp(s, h);
    ot_nudge(s->n, s->x, s->v, eps);
    fused_grad(s, true, hi);
    ot_nudge(s->n, s->x, s->v, -2 * eps);
    fused_grad(s, true, lo);
    ot_nudge(s->n, s->x, s->v, eps);
    double norm = 0;
    for (size_t i = 0; i < s->n; i++)
        for (size_t j = 0; j < ag_tensor_numel(s->x[i]); j++) {
            double fd = (hi[i][j] - lo[i][j]) / (2 * eps);
            norm = fmax(norm, fabs(h[i][j]));
            cr_assert(fabs(h[i][j] - fd) <= 1e-6 + 1e-6 * fabs(fd),
                      "input %zu [%zu]: hvp %.12g, differences %.12g", i, j, h[i][j], fd);
        }
    cr_assert(norm > 0.01, "the second derivatives are all (near) zero: nothing was checked");
    free_bufs(s, h);
    free_bufs(s, hi);
    free_bufs(s, lo);
}

/* Both checks on the spec, then frees its tensors (and ctx's, by the caller). */
static void check_both(spec *s)
{
    prepare(s);
    check_first(s);
    check_second(s);
    release(s);
}

/* ------------------------------------------------------------ matmul */

static ag_tensor *op_matmul(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_matmul(t, x[0], x[1]);
}

static void matmul_case(ag_tensor *a, ag_tensor *b)
{
    spec s = {.op = op_matmul, .n = 2, .x = {a, b}};
    check_both(&s);
}

Test(graph_first, matmul_dense_fold) { matmul_case(INPUT(2, 3, 4), INPUT(4, 5)); }
Test(graph_first, matmul_batches_broadcast) { matmul_case(INPUT(2, 1, 3, 4), INPUT(3, 4, 2)); }
Test(graph_first, matmul_a_without_batch) { matmul_case(INPUT(3, 4), INPUT(2, 4, 5)); }
Test(graph_first, matmul_vector_a) { matmul_case(INPUT(4), INPUT(2, 4, 3)); }
Test(graph_first, matmul_vector_b) { matmul_case(INPUT(2, 3, 4), INPUT(4)); }
Test(graph_first, matmul_dot) { matmul_case(INPUT(5), INPUT(5)); }
static ag_tensor *op_square_matmul(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_matmul(t, x[0], x[0]);
}

Test(graph_second, matmul_same_operand) /* a · a: both gradients into one input */
{
    spec s = {.op = op_square_matmul, .n = 1, .x = {INPUT(2, 3, 3)}};
    check_both(&s);
}

/* ------------------------------------------------------------ transpose, reshape, permute */

static ag_tensor *op_transpose(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_transpose(t, x[0]);
}

Test(graph_first, transpose_rank3)
{
    spec s = {.op = op_transpose, .n = 1, .x = {INPUT(2, 3, 4)}};
    check_both(&s);
}

Test(graph_second, transpose_rank2)
{
    spec s = {.op = op_transpose, .n = 1, .x = {INPUT(3, 5)}};
    check_both(&s);
}

static ag_tensor *op_reshape(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const size_t *shape = ctx;
    return ag_reshape(t, x[0], shape + 1, shape[0]);
}

Test(graph_first, reshape_rank3_to_2)
{
    static const size_t to[] = {2, 4, 6};
    spec s = {.op = op_reshape, .ctx = to, .n = 1, .x = {INPUT(2, 3, 4)}};
    check_both(&s);
}

Test(graph_second, reshape_to_rank4)
{
    static const size_t to[] = {4, 3, 1, 2, 2};
    spec s = {.op = op_reshape, .ctx = to, .n = 1, .x = {INPUT(12)}};
    check_both(&s);
}

static ag_tensor *op_permute(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const int *p = ctx;
    return ag_permute(t, x[0], p + 1, (size_t)p[0]);
}

Test(graph_first, permute_rank3)
{
    static const int p[] = {3, 2, 0, 1};
    spec s = {.op = op_permute, .ctx = p, .n = 1, .x = {INPUT(2, 3, 4)}};
    check_both(&s);
}

Test(graph_second, permute_rank4_negative_axes)
{
    static const int p[] = {4, -1, 1, 0, -2};
    spec s = {.op = op_permute, .ctx = p, .n = 1, .x = {INPUT(2, 3, 2, 4)}};
    check_both(&s);
}

/* ------------------------------------------------------------ concat, slice */

static ag_tensor *op_concat(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const int *axis = ctx;
    return ag_concat(t, x[0], x[1], *axis);
}

Test(graph_first, concat_axis1_rank3)
{
    static const int axis = 1;
    spec s = {.op = op_concat, .ctx = &axis, .n = 2, .x = {INPUT(2, 3, 4), INPUT(2, 2, 4)}};
    check_both(&s);
}

Test(graph_second, concat_last_axis)
{
    static const int axis = -1;
    spec s = {.op = op_concat, .ctx = &axis, .n = 2, .x = {INPUT(3, 1), INPUT(3, 4)}};
    check_both(&s);
}

static ag_tensor *op_concat_self(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_concat(t, x[0], x[0], 0);
}

Test(graph_first, concat_same_tensor)
{
    spec s = {.op = op_concat_self, .n = 1, .x = {INPUT(2, 3, 2)}};
    check_both(&s);
}

typedef struct {
    int axis;
    size_t start, end;
} slice_at;

static ag_tensor *op_slice(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const slice_at *a = ctx;
    return ag_slice(t, x[0], a->axis, a->start, a->end);
}

Test(graph_first, slice_middle_rank3)
{
    static const slice_at at = {1, 1, 4};
    spec s = {.op = op_slice, .ctx = &at, .n = 1, .x = {INPUT(2, 5, 3)}};
    check_both(&s);
}

Test(graph_first, slice_head_axis0)
{
    static const slice_at at = {0, 0, 1};
    spec s = {.op = op_slice, .ctx = &at, .n = 1, .x = {INPUT(3, 2, 2)}};
    check_both(&s);
}

Test(graph_second, slice_tail_last_axis)
{
    static const slice_at at = {-1, 2, 4};
    spec s = {.op = op_slice, .ctx = &at, .n = 1, .x = {INPUT(2, 3, 4)}};
    check_both(&s);
}

Test(graph_second, slice_whole)
{
    static const slice_at at = {0, 0, 3};
    spec s = {.op = op_slice, .ctx = &at, .n = 1, .x = {INPUT(3, 2)}};
    check_both(&s);
}

/* ------------------------------------------------------------ cast, detach */

static ag_tensor *op_cast(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const ag_dtype *dt = ctx;
    return ag_cast(t, x[0], *dt);
}

Test(graph_first, cast_f32_to_f64) /* the gradient comes back as f32 */
{
    static const ag_dtype to = AG_F64;
    spec s = {.op = op_cast, .ctx = &to, .n = 1, .x = {ot_uniform(&rng, AG_F32, AG_SHAPE(2, 3, 4), -1, 1, true)}};
    prepare(&s);
    check_first(&s);
    release(&s);
}

static ag_tensor *op_cast_roundtrip(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_cast(t, ag_cast(t, x[0], AG_F32), AG_F64);
}

Test(graph_first, cast_f64_through_f32)
{
    spec s = {.op = op_cast_roundtrip, .n = 1, .x = {INPUT(3, 4)}};
    prepare(&s);
    check_first(&s);
    release(&s);
}

Test(graph_second, cast_f64_to_f64)
{
    static const ag_dtype to = AG_F64;
    spec s = {.op = op_cast, .ctx = &to, .n = 1, .x = {INPUT(2, 3, 4)}};
    check_both(&s);
}

static ag_tensor *op_times_detached(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_mul(t, x[0], ag_detach(t, x[0]));
}

/* y = x ⊙ detach(x): the gradient w ⊙ x flows only through the first
 * factor, and is itself a constant (PyTorch's answer): its hvp is 0. */
Test(graph_first, detach_passes_nothing)
{
    spec s = {.op = op_times_detached, .n = 1, .x = {INPUT(2, 3, 4)}};
    prepare(&s);
    check_first(&s);
    for (size_t j = 0; j < 24; j++) /* the gradient is w ⊙ x */
        cr_assert_eq(ag_get_grad(s.x[0], j), ag_get(s.w, j) * ag_get(s.x[0], j));
    ag_tape *t = ag_tape_new();
    ag_tensor *g;
    cr_assert_eq(ag_gradients(t, loss(t, &s, false), 1, s.x, &g, AG_CREATE_GRAPH), AG_OK);
    cr_assert(!ag_requires_grad(g), "the gradient through detach depends on x");
    ag_tape_free(t);
    release(&s);
}

static ag_tensor *op_detach(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    (void)ctx;
    return ag_add(t, ag_detach(t, x[0]), ag_scale(t, x[0], 0.5));
}

Test(graph_second, detach_in_a_sum)
{
    spec s = {.op = op_detach, .n = 1, .x = {INPUT(3, 2)}};
    prepare(&s);
    check_first(&s);
    /* f = Σ w (d + x/2)^2, d = detach(x): grad = w (d + x/2), whose
     * derivative is w/2 along the undetached path only */
    double **h = grad_bufs(&s);
    graph_hvp(&s, h);
    for (size_t j = 0; j < 6; j++)
        cr_assert(fabs(h[0][j] - ag_get(s.w, j) * 0.5 * ag_get(s.v[0], j)) <= 1e-15,
                  "[%zu]: %g", j, h[0][j]);
    free_bufs(&s, h);
    release(&s);
}

/* ------------------------------------------------------------ expand */

static ag_tensor *op_expand(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const size_t *shape = ctx;
    return ag_expand(t, x[0], shape + 1, shape[0]);
}

Test(graph_first, expand_column_to_rank3)
{
    static const size_t to[] = {3, 2, 3, 4};
    spec s = {.op = op_expand, .ctx = to, .n = 1, .x = {INPUT(3, 1)}};
    check_both(&s);
}

Test(graph_first, expand_row_to_rank3)
{
    static const size_t to[] = {3, 2, 3, 4};
    spec s = {.op = op_expand, .ctx = to, .n = 1, .x = {INPUT(4)}};
    check_both(&s);
}

Test(graph_second, expand_scalar)
{
    static const size_t to[] = {2, 2, 3};
    spec s = {.op = op_expand, .ctx = to, .n = 1,
              .x = {ot_uniform(&rng, AG_F64, NULL, 0, -1, 1, true)}};
    check_both(&s);
}

Test(graph_second, expand_middle_axis)
{
    static const size_t to[] = {3, 2, 5, 3};
    spec s = {.op = op_expand, .ctx = to, .n = 1, .x = {INPUT(2, 1, 3)}};
    check_both(&s);
}

/* ------------------------------------------------------------ index_select, gather */

typedef struct {
    int axis;
    ag_tensor *idx;
} indexed;

static ag_tensor *op_index_select(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const indexed *a = ctx;
    return ag_index_select(t, x[0], a->axis, a->idx);
}

static ag_tensor *op_gather(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const indexed *a = ctx;
    return ag_gather(t, x[0], a->axis, a->idx);
}

static void indexed_case(op_fn op, ag_tensor *x, int axis, ag_tensor *idx)
{
    indexed a = {axis, idx};
    spec s = {.op = op, .ctx = &a, .n = 1, .x = {x}};
    check_both(&s);
    ag_tensor_free(idx);
}

Test(graph_first, index_select_rows_repeated)
{
    static const double i[] = {2, 0, 2, 3, 2};
    indexed_case(op_index_select, INPUT(4, 3), 0, ot_from(AG_F64, AG_SHAPE(5), i));
}

Test(graph_first, index_select_axis1_rank3)
{
    static const double i[] = {1, 1, 3};
    indexed_case(op_index_select, INPUT(2, 4, 3), 1, ot_from(AG_F32, AG_SHAPE(3), i));
}

Test(graph_second, index_select_last_axis)
{
    static const double i[] = {0, 2, 0, 0};
    indexed_case(op_index_select, INPUT(2, 3, 3), -1, ot_from(AG_F64, AG_SHAPE(4), i));
}

Test(graph_first, gather_axis1)
{
    static const double i[] = {3, 0, 3, 1, 1, 1};
    indexed_case(op_gather, INPUT(3, 4), 1, ot_from(AG_F64, AG_SHAPE(3, 2), i));
}

Test(graph_first, gather_axis0_rank3_smaller)
{
    static const double i[] = {0, 2, 2, 1, 0, 0, 1, 1, 2, 2, 0, 1};
    indexed_case(op_gather, INPUT(3, 2, 4), 0, ot_from(AG_F32, AG_SHAPE(2, 2, 3), i));
}

Test(graph_second, gather_last_axis_repeats)
{
    static const double i[] = {1, 1, 1, 0, 2, 2, 0, 0};
    indexed_case(op_gather, INPUT(2, 2, 3), 2, ot_from(AG_F64, AG_SHAPE(2, 2, 2), i));
}

/* ------------------------------------------------------------ index_add, scatter_add (internal) */

typedef struct {
    int axis;
    ag_tensor *idx;
    size_t shape[AG_MAX_RANK], rank; /* the target's */
} targeted;

static ag_tensor *op_index_add(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const targeted *a = ctx;
    return ag__apply(t, &ag__op_index_add, x[0], a->idx,
                     &(ag_attr){.axis = a->axis, .shape = a->shape, .rank = a->rank});
}

static ag_tensor *op_scatter_add(ag_tape *t, ag_tensor *const *x, const void *ctx)
{
    const targeted *a = ctx;
    return ag__apply(t, &ag__op_scatter_add, x[0], a->idx,
                     &(ag_attr){.axis = a->axis, .shape = a->shape, .rank = a->rank});
}

static void targeted_case(op_fn op, ag_tensor *g, int axis, ag_tensor *idx, const size_t *shape,
                          size_t rank)
{
    targeted a = {.axis = axis, .idx = idx, .rank = rank};
    memcpy(a.shape, shape, rank * sizeof *shape);
    spec s = {.op = op, .ctx = &a, .n = 1, .x = {g}};
    check_both(&s);
    ag_tensor_free(idx);
}

Test(graph_first, index_add_axis1_rank3)
{
    static const double i[] = {3, 0, 3};
    targeted_case(op_index_add, INPUT(2, 3, 2), 1, ot_from(AG_F64, AG_SHAPE(3), i), AG_SHAPE(2, 4, 2));
}

Test(graph_second, index_add_axis0)
{
    static const double i[] = {1, 1};
    targeted_case(op_index_add, INPUT(2, 3), 0, ot_from(AG_F32, AG_SHAPE(2), i), AG_SHAPE(3, 3));
}

Test(graph_first, scatter_add_axis0_rank3)
{
    static const double i[] = {2, 2, 0, 1, 0, 2};
    targeted_case(op_scatter_add, INPUT(2, 1, 3), 0, ot_from(AG_F64, AG_SHAPE(2, 1, 3), i),
                  AG_SHAPE(3, 2, 3));
}

Test(graph_second, scatter_add_last_axis)
{
    static const double i[] = {0, 0, 3, 1, 3, 3};
    targeted_case(op_scatter_add, INPUT(3, 2), 1, ot_from(AG_F64, AG_SHAPE(3, 2), i), AG_SHAPE(3, 4));
}

/* index_select's recorded gradient is index_add, whose own is index_select:
 * a third derivative goes through both. f = Σ w (x[idx])³ has
 * ∂³f/∂x³ = 6 Σ_j w_j at each picked element (a diagonal), so the
 * gradient of <∇(<∇f, v>), u> is 6 (Σ_{j: idx j = i} w_j) v_i u_i. */
Test(graph_second, index_select_third_order)
{
    static const double iv[] = {2, 0, 2};
    ag_tensor *x = INPUT(3), *idx = ot_from(AG_F64, AG_SHAPE(3), iv);
    ag_tensor *w = ot_uniform(&rng, AG_F64, AG_SHAPE(3), -1, 1, false);
    ag_tensor *v = ot_uniform(&rng, AG_F64, AG_SHAPE(3), -1, 1, false);
    ag_tensor *u = ot_uniform(&rng, AG_F64, AG_SHAPE(3), -1, 1, false);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_index_select(t, x, 0, idx);
    ag_tensor *f = dot(t, ag_mul(t, ag_mul(t, y, y), y), w), *g1, *g2;
    cr_assert_eq(ag_gradients(t, f, 1, &x, &g1, AG_CREATE_GRAPH), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(ag_gradients(t, dot(t, g1, v), 1, &x, &g2, AG_CREATE_GRAPH), AG_OK, "%s",
                 ag_tape_error(t));
    ag_zero_grad(x);
    cr_assert_eq(ag_backward(t, dot(t, g2, u)), AG_OK, "%s", ag_tape_error(t));
    double ws[3] = {0};
    for (size_t j = 0; j < 3; j++)
        ws[(size_t)iv[j]] += ag_get(w, j);
    for (size_t i = 0; i < 3; i++) {
        double want = 6 * ws[i] * ag_get(v, i) * ag_get(u, i);
        cr_assert(fabs(ag_get_grad(x, i) - want) <= 1e-12, "[%zu]: %g, want %g", i,
                  ag_get_grad(x, i), want);
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(idx);
    ag_tensor_free(w);
    ag_tensor_free(v);
    ag_tensor_free(u);
}

/* The internal ops' shape rules: what does not fit is an error, not a write
 * out of bounds. */
Test(graph_first, index_add_scatter_add_reject_misfits)
{
    static const double i2[] = {0, 1}, bad[] = {0, 3, 1};
    ag_tensor *g = INPUT(2, 3), *idx2 = ot_from(AG_F64, AG_SHAPE(2), i2);
    ag_tensor *idx_bad = ot_from(AG_F64, AG_SHAPE(3), bad);
    struct {
        op_fn op;
        ag_tensor *idx;
        int axis;
        size_t shape[2], rank;
        ag_status want;
    } cases[] = {
        {op_index_add, idx2, 1, {2, 4}, 2, AG_ERR_SHAPE},    /* 3 picked, 2 indices */
        {op_index_add, idx_bad, 1, {3, 4}, 2, AG_ERR_SHAPE}, /* off the axis 2 vs 3 */
        {op_index_add, idx_bad, 1, {2, 3}, 2, AG_ERR_VALUE}, /* index 3 of 3 */
        {op_index_add, idx_bad, 1, {2, 4}, 1, AG_ERR_SHAPE}, /* target rank */
        {op_scatter_add, idx2, 1, {2, 4}, 2, AG_ERR_SHAPE},  /* idx not of g's shape */
        {op_index_add, idx_bad, 2, {2, 4}, 2, AG_ERR_VALUE}, /* axis out of range */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        targeted a = {.axis = cases[c].axis, .idx = cases[c].idx, .rank = cases[c].rank};
        memcpy(a.shape, cases[c].shape, sizeof cases[c].shape);
        ag_tape *t = ag_tape_new();
        cr_assert_null(cases[c].op(t, &g, &a), "case %zu", c);
        cr_assert_eq(ag_tape_status(t), cases[c].want, "case %zu: %s", c, ag_tape_error(t));
        ag_tape_free(t);
    }
    targeted ok = {.axis = 1, .idx = idx_bad, .shape = {2, 4}, .rank = 2};
    ag_tape *t = ag_tape_new();
    ag_tensor *y = op_index_add(t, &g, &ok);
    cr_assert_not_null(y, "%s", ag_tape_error(t));
    for (size_t o = 0; o < 2; o++) /* y[o] = [g0, g2, 0, g1] */
        for (size_t j = 0; j < 4; j++) {
            double want = j == 0 ? ag_get(g, 3 * o) : j == 1 ? ag_get(g, 3 * o + 2)
                        : j == 3 ? ag_get(g, 3 * o + 1) : 0;
            cr_assert_eq(ag_get(y, 4 * o + j), want, "[%zu,%zu]", o, j);
        }
    ag_tape_free(t);
    ag_tensor_free(g);
    ag_tensor_free(idx2);
    ag_tensor_free(idx_bad);
}
