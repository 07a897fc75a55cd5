/* test_graph_reduce.c: the recorded backwards (grad_graph) of the
 * reductions, normalisations and losses: sum, mean, sum_axis, mean_axis,
 * sum_axes, mean_axes, max_axis, min_axis, prod_axis, var_axis, logsumexp,
 * argmax, argmin, norm, softmax, log_softmax, layer_norm, dropout, mse,
 * quadratic_cost, bce, bce_with_logits, cross_entropy, nll_loss,
 * huber_loss. For each op, in f64:
 *   - the gradient ag_gradients records (AG_CREATE_GRAPH) against
 *     ag_backward's fused one, on rank-3 inputs and on inputs broadcast
 *     into the op (x0 + x1): to the bit where the recorded form computes
 *     the fused formula in the same order, else within 1e-12 relative;
 *   - second derivatives: the gradient of Σ_i <grad_i, v_i> (the recorded
 *     gradient, then ag_backward) against central differences of the
 *     fused gradient along v.
 * The objective is Σ w y³ (w a fixed random weight), so that even a linear
 * op has second and third derivatives through its recorded backward's
 * input g.
 * Then the edge cases (zeros in prod_axis, norm at 0, ties of max and min,
 * dropout's mask, f32) and third derivatives. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "optest.h"

#define MAXIN 3
#define FD_EPS 1e-5  /* central-difference step */
#define FD_ATOL 1e-6 /* central differences against the recorded derivative */
#define FD_RTOL 1e-5
#define CLOSE_RTOL 1e-12 /* recorded against fused, where not to the bit */

static ag_rng rng;

static void seed_rng(void) { ag_rng_seed(&rng, 20261126); }

TestSuite(graph_reduce, .init = seed_rng);
TestSuite(graph_reduce_edges, .init = seed_rng);
TestSuite(graph_reduce_third, .init = seed_rng);

/* ------------------------------------------------------------ the ops */

typedef struct {
    ag_tensor *(*fa)(ag_tape *, ag_tensor *, int, bool);                    /* along an axis */
    ag_tensor *(*fx)(ag_tape *, ag_tensor *, const int *, size_t, bool);    /* several axes */
    ag_tensor *(*fl)(ag_tape *, ag_tensor *, ag_tensor *);                  /* a loss */
    int axis;
    bool keep;
    int axes[AG_MAX_RANK];
    size_t n_axes;
    double c;        /* eps, p, delta */
    bool train;      /* dropout */
    bool bcast;      /* the op's (first) operand is x0 + x1, broadcast */
    ag_tensor *cls;  /* class indices, or a loss's constant target */
} opt;

static ag_tensor *operand(ag_tape *t, ag_tensor *const *x, const opt *o)
{
    return o->bcast ? ag_add(t, x[0], x[1]) : x[0];
}

/* a loss's second operand: the input after the first operand's */
static ag_tensor *target(ag_tensor *const *x, const opt *o) { return x[o->bcast ? 2 : 1]; }

static ag_tensor *f_sum(ag_tape *t, ag_tensor *const *x, void *c) { return ag_sum(t, operand(t, x, c)); }
static ag_tensor *f_mean(ag_tape *t, ag_tensor *const *x, void *c) { return ag_mean(t, operand(t, x, c)); }
static ag_tensor *f_norm(ag_tape *t, ag_tensor *const *x, void *c) { return ag_norm(t, operand(t, x, c)); }

static ag_tensor *f_axis(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return o->fa(t, operand(t, x, o), o->axis, o->keep);
}

static ag_tensor *f_axes(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return o->fx(t, operand(t, x, o), o->axes, o->n_axes, o->keep);
}

/* x times its argmax or argmin (fa) along axis, kept: the index takes no gradient */
static ag_tensor *f_times_index(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    ag_tensor *a = operand(t, x, o);
    return ag_mul(t, a, o->fa(t, a, o->axis, true));
}

static ag_tensor *f_softmax(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return ag_softmax(t, operand(t, x, o), o->axis);
}

static ag_tensor *f_log_softmax(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return ag_log_softmax(t, operand(t, x, o), o->axis);
}

static ag_tensor *f_layer_norm(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return ag_layer_norm(t, operand(t, x, o), o->c);
}

/* the same mask at every call: the generator is seeded afresh */
static ag_tensor *f_dropout(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    ag_rng r;
    ag_rng_seed(&r, 7);
    return ag_dropout(t, operand(t, x, o), o->c, o->train, &r);
}

static ag_tensor *f_loss(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return o->fl(t, operand(t, x, o), target(x, o));
}

static ag_tensor *f_huber(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return ag_huber_loss(t, operand(t, x, o), target(x, o), o->c);
}

static ag_tensor *f_classes(ag_tape *t, ag_tensor *const *x, void *c)
{
    opt *o = c;
    return o->fl(t, operand(t, x, o), o->cls);
}

/* ------------------------------------------------------------ helpers */

/* An f64 input uniform in [lo, hi) of the given dimensions. */
#define IN(lo, hi, ...) ot_uniform(&rng, AG_F64, AG_SHAPE(__VA_ARGS__), lo, hi, true)

/* Σ w y³, w fixed (made at the first call, of y's shape): a linear op's
 * derivatives up to the third go through its recorded backward */
static ag_tensor *objective(ag_tape *t, ag_fn fn, opt *o, ag_tensor *const *x, ag_tensor **w)
{
    ag_tensor *y = fn(t, x, o);
    cr_assert_not_null(y, "forward: %s", ag_tape_error(t));
    if (!*w) {
        *w = ag_rand_uniform(AG_F64, ag_tensor_shape(y), ag_tensor_rank(y), -1, 1, &rng);
        cr_assert_not_null(*w);
    }
    ag_tensor *s = ag_sum(t, ag_mul(t, ag_mul(t, ag_mul(t, y, y), y), *w));
    cr_assert_not_null(s, "objective: %s", ag_tape_error(t));
    return s;
}

/* The fused gradient of the objective, into g[i] (malloc'd). */
static void fused_gradient(ag_fn fn, opt *o, size_t n, ag_tensor *const *x, ag_tensor **w, double **g)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *L = objective(t, fn, o, x, w), *gt[MAXIN];
    cr_assert_eq(ag_gradients(t, L, n, x, gt, 0), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < n; i++) {
        size_t m = ag_tensor_numel(x[i]);
        g[i] = malloc((m ? m : 1) * sizeof **g);
        cr_assert_not_null(g[i]);
        for (size_t j = 0; j < m; j++)
            g[i][j] = ag_get(gt[i], j);
    }
    ag_tape_free(t);
}

static void free_all(size_t n, double **g)
{
    for (size_t i = 0; i < n; i++)
        free(g[i]);
}

/* The recorded gradient (AG_CREATE_GRAPH) against ag_backward's: to the
 * bit when exact, else within CLOSE_RTOL relative to the largest gradient
 * element of all inputs (an input a softmax is invariant to has a gradient
 * that is all rounding noise). */
static void check_first(const char *what, ag_fn fn, opt *o, size_t n, ag_tensor *const *x,
                        ag_tensor **w, bool exact)
{
    ag_tape *t = ag_tape_new();
    for (size_t i = 0; i < n; i++)
        ag_zero_grad(x[i]);
    ag_tensor *L = objective(t, fn, o, x, w);
    cr_assert_eq(ag_backward(t, L), AG_OK, "%s: backward: %s", what, ag_tape_error(t));
    ag_tape *tg = ag_tape_new();
    ag_tensor *Lg = objective(tg, fn, o, x, w), *g[MAXIN];
    cr_assert_eq(ag_gradients(tg, Lg, n, x, g, AG_CREATE_GRAPH), AG_OK, "%s: %s", what, ag_tape_error(tg));
    ot_assert_same_gradients(what, n, x, g, exact ? OT_BITWISE : OT_TO_LARGEST, CLOSE_RTOL);
    ag_tape_free(tg);
    ag_tape_free(t);
}

/* H v by the recorded gradient and ag_backward, into hv[i] (malloc'd). */
static void recorded_hvp(const char *what, ag_fn fn, opt *o, size_t n, ag_tensor *const *x,
                         ag_tensor **w, ag_tensor *const *v, double **hv)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *L = objective(t, fn, o, x, w), *g[MAXIN], *s = NULL;
    cr_assert_eq(ag_gradients(t, L, n, x, g, AG_CREATE_GRAPH), AG_OK, "%s: %s", what, ag_tape_error(t));
    for (size_t i = 0; i < n; i++) {
        ag_tensor *term = ag_sum(t, ag_mul(t, g[i], v[i]));
        s = s ? ag_add(t, s, term) : term;
        ag_zero_grad(x[i]);
    }
    cr_assert_not_null(s, "%s: %s", what, ag_tape_error(t));
    cr_assert(ag_requires_grad(s), "%s: the recorded gradient is a constant", what);
    cr_assert_eq(ag_backward(t, s), AG_OK, "%s: %s", what, ag_tape_error(t));
    for (size_t i = 0; i < n; i++) {
        size_t m = ag_tensor_numel(x[i]);
        hv[i] = malloc((m ? m : 1) * sizeof **hv);
        cr_assert_not_null(hv[i]);
        for (size_t j = 0; j < m; j++)
            hv[i][j] = ag_get_grad(x[i], j);
    }
    ag_tape_free(t);
}

static void save(size_t n, ag_tensor *const *x, double **keep)
{
    for (size_t i = 0; i < n; i++) {
        size_t m = ag_tensor_numel(x[i]);
        keep[i] = malloc((m ? m : 1) * sizeof **keep);
        cr_assert_not_null(keep[i]);
        memcpy(keep[i], ag_data(x[i]), m * sizeof **keep);
    }
}

static void restore(size_t n, ag_tensor *const *x, double **keep)
{
    for (size_t i = 0; i < n; i++)
        memcpy(ag_data(x[i]), keep[i], ag_tensor_numel(x[i]) * sizeof **keep);
}

static void compare_fd(const char *what, const char *order, size_t n, ag_tensor *const *x,
                       double **got, double **plus, double **minus)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < ag_tensor_numel(x[i]); j++) {
            double fd = (plus[i][j] - minus[i][j]) / (2 * FD_EPS);
            cr_assert(fabs(got[i][j] - fd) <= FD_ATOL + FD_RTOL * fabs(fd),
                      "%s: %s derivative, input %zu [%zu]: recorded %.12g, central difference %.12g",
                      what, order, i, j, got[i][j], fd);
        }
}

static ag_tensor *direction(const ag_tensor *x)
{
    return ot_uniform(&rng, AG_F64, ag_tensor_shape(x), ag_tensor_rank(x), -1, 1, false);
}

/* H v against (∇L(x + h v) - ∇L(x - h v)) / 2h. */
static void check_second(const char *what, ag_fn fn, opt *o, size_t n, ag_tensor *const *x, ag_tensor **w)
{
    ag_tensor *v[MAXIN];
    double *hv[MAXIN], *plus[MAXIN], *minus[MAXIN], *keep[MAXIN];
    for (size_t i = 0; i < n; i++)
        v[i] = direction(x[i]);
    recorded_hvp(what, fn, o, n, x, w, v, hv);
    save(n, x, keep);
    ot_nudge(n, x, v, FD_EPS);
    fused_gradient(fn, o, n, x, w, plus);
    restore(n, x, keep);
    ot_nudge(n, x, v, -FD_EPS);
    fused_gradient(fn, o, n, x, w, minus);
    restore(n, x, keep);
    compare_fd(what, "second", n, x, hv, plus, minus);
    free_all(n, hv), free_all(n, plus), free_all(n, minus), free_all(n, keep);
    for (size_t i = 0; i < n; i++)
        ag_tensor_free(v[i]);
}

/* Both checks on the inputs x; frees them. */
static void check_op(const char *what, ag_fn fn, opt *o, size_t n, ag_tensor **x, bool exact)
{
    ag_tensor *w = NULL;
    check_first(what, fn, o, n, x, &w, exact);
    check_second(what, fn, o, n, x, &w);
    ag_tensor_free(w);
    for (size_t i = 0; i < n; i++)
        ag_tensor_free(x[i]);
}

/* A unary op on a [2,3,4] input, and on [2,1,4] + [3,1] broadcast into it.
 * The broadcast inputs' gradients are summed by add's recorded backward
 * (ag_sum_axes) in another order than its fused loop: never to the bit. */
static void check_unary(const char *name, ag_fn fn, opt o, double lo, double hi, bool exact)
{
    char what[96];
    snprintf(what, sizeof what, "%s [2,3,4] (axis %d keep %d)", name, o.axis, o.keep);
    o.bcast = false;
    check_op(what, fn, &o, 1, (ag_tensor *[]){IN(lo, hi, 2, 3, 4)}, exact);
    snprintf(what, sizeof what, "%s [2,1,4] + [3,1] (axis %d keep %d)", name, o.axis, o.keep);
    o.bcast = true;
    check_op(what, fn, &o, 2, (ag_tensor *[]){IN(lo / 2, hi / 2, 2, 1, 4), IN(lo / 2, hi / 2, 3, 1)}, false);
}

/* check_unary over every axis (two of them negative), keepdim on and off */
static void check_axis_op(const char *name, ag_tensor *(*fa)(ag_tape *, ag_tensor *, int, bool),
                          double lo, double hi, bool exact)
{
    const int axes[] = {0, 1, -1};
    for (size_t i = 0; i < 3; i++)
        for (int keep = 0; keep < 2; keep++)
            check_unary(name, f_axis, (opt){.fa = fa, .axis = axes[i], .keep = keep}, lo, hi, exact);
}

/* A loss of two [2,3,4] operands, and of ([2,1,4] + [3,1], [2,3,4]). */
static void check_loss(const char *name, ag_fn fn, opt o, double lo, double hi, double ylo, double yhi,
                       bool exact)
{
    char what[96];
    snprintf(what, sizeof what, "%s [2,3,4]", name);
    o.bcast = false;
    check_op(what, fn, &o, 2, (ag_tensor *[]){IN(lo, hi, 2, 3, 4), IN(ylo, yhi, 2, 3, 4)}, exact);
    snprintf(what, sizeof what, "%s [2,1,4] + [3,1]", name);
    o.bcast = true;
    check_op(what, fn, &o, 3,
             (ag_tensor *[]){IN(lo / 2, hi / 2, 2, 1, 4), IN(lo / 2, hi / 2, 3, 1), IN(ylo, yhi, 2, 3, 4)},
             false);
}

/* ------------------------------------------------------------ each op */

Test(graph_reduce, sum_and_mean)
{
    check_unary("sum", f_sum, (opt){0}, -1, 1, true);
    check_unary("mean", f_mean, (opt){0}, -1, 1, true);
    /* a scalar's sum: nothing to spread */
    opt o = {0};
    check_op("sum of a scalar", f_sum, &o, 1, (ag_tensor *[]){IN(-1, 1, 1)}, true);
}

Test(graph_reduce, sum_axis) { check_axis_op("sum_axis", ag_sum_axis, -1, 1, true); }
Test(graph_reduce, mean_axis) { check_axis_op("mean_axis", ag_mean_axis, -1, 1, true); }
Test(graph_reduce, max_axis) { check_axis_op("max_axis", ag_max_axis, -1, 1, true); }
Test(graph_reduce, min_axis) { check_axis_op("min_axis", ag_min_axis, -1, 1, true); }
/* the scans associate the products differently: to rounding */
Test(graph_reduce, prod_axis) { check_axis_op("prod_axis", ag_prod_axis, -1.5, 1.5, false); }
Test(graph_reduce, var_axis) { check_axis_op("var_axis", ag_var_axis, -1, 1, true); }
Test(graph_reduce, logsumexp) { check_axis_op("logsumexp", ag_logsumexp, -2, 2, true); }

static void check_axes_op(const char *name, ag_tensor *(*fx)(ag_tape *, ag_tensor *, const int *, size_t, bool))
{
    static const struct {
        int axes[3];
        size_t n;
    } sets[] = {{{0, 2}, 2}, {{1, -1}, 2}, {{0, 1, 2}, 3}, {{1}, 1}, {{0}, 0}};
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
        for (int keep = 0; keep < 2; keep++) {
            opt o = {.fx = fx, .keep = keep, .n_axes = sets[s].n};
            memcpy(o.axes, sets[s].axes, sizeof sets[s].axes);
            o.axis = (int)s; /* only names the case */
            check_unary(name, f_axes, o, -1, 1, true);
        }
}

Test(graph_reduce, sum_axes) { check_axes_op("sum_axes", ag_sum_axes); }
Test(graph_reduce, mean_axes) { check_axes_op("mean_axes", ag_mean_axes); }

Test(graph_reduce, argmax_and_argmin_take_no_gradient)
{
    for (int axis = 0; axis < 3; axis++) {
        check_unary("x argmax(x)", f_times_index, (opt){.fa = ag_argmax, .axis = axis}, -1, 1, true);
        check_unary("x argmin(x)", f_times_index, (opt){.fa = ag_argmin, .axis = axis}, -1, 1, true);
    }
}

Test(graph_reduce, norm) { check_unary("norm", f_norm, (opt){0}, -1, 1, true); }

Test(graph_reduce, softmax_and_log_softmax)
{
    for (int axis = -1; axis < 3; axis++) {
        check_unary("softmax", f_softmax, (opt){.axis = axis}, -2, 2, true);
        check_unary("log_softmax", f_log_softmax, (opt){.axis = axis}, -2, 2, true);
    }
}

Test(graph_reduce, layer_norm)
{
    check_unary("layer_norm eps 1e-5", f_layer_norm, (opt){.c = 1e-5}, -1, 1, true);
    check_unary("layer_norm eps 0.5", f_layer_norm, (opt){.c = 0.5}, -2, 2, true);
}

Test(graph_reduce, dropout)
{
    check_unary("dropout training p 0.3", f_dropout, (opt){.c = 0.3, .train = true}, -1, 1, true);
    check_unary("dropout eval p 0.3", f_dropout, (opt){.c = 0.3}, -1, 1, true);
    check_unary("dropout training p 0", f_dropout, (opt){.train = true}, -1, 1, true);
}

Test(graph_reduce, mse_and_quadratic_cost)
{
    check_loss("mse", f_loss, (opt){.fl = ag_mse}, -1, 1, -1, 1, true);
    check_loss("quadratic_cost", f_loss, (opt){.fl = ag_quadratic_cost}, -1, 1, -1, 1, true);
}

Test(graph_reduce, bce_and_bce_with_logits)
{
    check_loss("bce", f_loss, (opt){.fl = ag_bce}, 0.1, 0.9, 0, 1, true);
    check_loss("bce_with_logits", f_loss, (opt){.fl = ag_bce_with_logits}, -3, 3, 0, 1, true);
}

Test(graph_reduce, huber_loss)
{
    /* |a - y| on both sides of delta, none within 1e-4 of it (the kink) */
    check_loss("huber_loss delta 0.5", f_huber, (opt){.c = 0.5}, -1, 1, -1, 1, true);
    check_loss("huber_loss delta 2", f_huber, (opt){.c = 2}, -2, 2, -1, 1, true);
}

static void check_classes(const char *name, ag_tensor *(*fl)(ag_tape *, ag_tensor *, ag_tensor *))
{
    ag_tensor *cls = ot_from(AG_F64, AG_SHAPE(4), (const double[]){1, 0, 4, 2});
    char what[96];
    opt o = {.fl = fl, .cls = cls};
    snprintf(what, sizeof what, "%s [4,5]", name);
    check_op(what, f_classes, &o, 1, (ag_tensor *[]){IN(-2, 2, 4, 5)}, true);
    snprintf(what, sizeof what, "%s [4,5] + [5]", name);
    o.bcast = true;
    check_op(what, f_classes, &o, 2, (ag_tensor *[]){IN(-1, 1, 4, 5), IN(-1, 1, 5)}, false);
    ag_tensor_free(cls);
}

Test(graph_reduce, cross_entropy_and_nll_loss)
{
    check_classes("cross_entropy", ag_cross_entropy);
    check_classes("nll_loss", ag_nll_loss);
}

/* ------------------------------------------------------------ edge cases */

/* The recorded gradient of Σ w ⊙ op(x), on a tape of its own. */
static ag_tensor *recorded_gradient(ag_tape *t, ag_fn fn, opt *o, ag_tensor *x, ag_tensor *w)
{
    ag_tensor *y = fn(t, &x, o), *g;
    ag_tensor *L = ag_sum(t, ag_mul(t, y, w));
    cr_assert_not_null(L, "%s", ag_tape_error(t));
    cr_assert_eq(ag_gradients(t, L, 1, &x, &g, AG_CREATE_GRAPH), AG_OK, "%s", ag_tape_error(t));
    return g;
}

static void assert_exactly(const ag_tensor *g, const double *want, size_t n, const char *what)
{
    cr_assert_eq(ag_tensor_numel(g), n);
    for (size_t i = 0; i < n; i++)
        cr_assert(ag_get(g, i) == want[i], "%s [%zu]: %.17g, want %.17g", what, i, ag_get(g, i), want[i]);
}

Test(graph_reduce_edges, prod_axis_with_zeros_is_exact_to_second_order)
{
    /* rows [2 0 3 5]: d/dx = [0 30 0 0]; [0 4 0 1]: two zeros, d/dx = 0;
     * [1 -2 0.5 4]: no zero, d/dx = Π / x_k = [-4 2 -8 -1] */
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(3, 4), (const double[]){2, 0, 3, 5, 0, 4, 0, 1, 1, -2, 0.5, 4});
    ag_tensor *w = ot_from(AG_F64, AG_SHAPE(3), (const double[]){1, 1, 1});
    ag_tape *t = ag_tape_new();
    opt o = {.fa = ag_prod_axis, .axis = 1};
    ag_tensor *g = recorded_gradient(t, f_axis, &o, x, w);
    assert_exactly(g, (const double[]){0, 30, 0, 0, 0, 0, 0, 0, -4, 2, -8, -1}, 12, "prod gradient");
    /* second derivatives along v = e_0 (x[0,0]): ∂²/∂x0∂xk of the first row's
     * product = Π of the row without x0 and xk: [0, 15, 0, 0] */
    ag_tensor *v = ot_from(AG_F64, AG_SHAPE(3, 4), (const double[]){1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    ag_zero_grad(x);
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, g, v))), AG_OK, "%s", ag_tape_error(t));
    double want[12] = {0, 15, 0, 0};
    for (size_t i = 0; i < 12; i++)
        cr_assert(ag_get_grad(x, i) == want[i], "hvp [%zu]: %.17g, want %.17g", i, ag_get_grad(x, i), want[i]);
    ag_tape_free(t);
    /* and against central differences, zeros and all */
    check_op("prod_axis with zeros", f_axis, &o, 1, (ag_tensor *[]){x}, false);
    ag_tensor_free(w);
    ag_tensor_free(v);
}

Test(graph_reduce_edges, prod_axis_of_one_element_and_of_a_long_axis)
{
    opt o = {.fa = ag_prod_axis, .axis = 1};
    check_op("prod_axis [3,1]", f_axis, &o, 1, (ag_tensor *[]){IN(-1.5, 1.5, 3, 1)}, true);
    /* n = 2^k + 2 along the axis: the scans need their last step, s = 2^k,
     * for the n-th element's product of the others */
    check_op("prod_axis [3,6]", f_axis, &o, 1, (ag_tensor *[]){IN(-1.5, 1.5, 3, 6)}, false);
    check_op("prod_axis [2,34]", f_axis, &o, 1, (ag_tensor *[]){IN(0.8, 1.25, 2, 34)}, false);
}

Test(graph_reduce_edges, norm_at_zero_has_no_gradient)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2, 2), (const double[]){0, 0, 0, 0});
    ag_tensor *w = ot_from(AG_F64, AG_SHAPE(1), (const double[]){1});
    ag_tape *t = ag_tape_new();
    opt o = {0};
    ag_tensor *g = recorded_gradient(t, f_norm, &o, x, w);
    assert_exactly(g, (const double[]){0, 0, 0, 0}, 4, "norm gradient at 0");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

Test(graph_reduce_edges, max_and_min_ties_send_the_gradient_to_the_first)
{
    ag_tensor *x = ot_leaf(AG_F64, AG_SHAPE(2, 3), (const double[]){4, 1, 4, -2, 7, -2});
    ag_tensor *w = ot_from(AG_F64, AG_SHAPE(2), (const double[]){3, 5});
    ag_tape *t = ag_tape_new();
    opt o = {.fa = ag_max_axis, .axis = 1};
    assert_exactly(recorded_gradient(t, f_axis, &o, x, w), (const double[]){3, 0, 0, 0, 5, 0}, 6, "max");
    o.fa = ag_min_axis;
    assert_exactly(recorded_gradient(t, f_axis, &o, x, w), (const double[]){0, 3, 0, 5, 0, 0}, 6, "min");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

Test(graph_reduce_edges, dropout_uses_the_forward_mask)
{
    /* p = 0.5: the recorded gradient is 0 or 2 at each element, where the
     * forward dropped or kept it, and the fused one agrees */
    ag_tensor *x = IN(1, 2, 64);
    ag_tensor *w = ot_from(AG_F64, AG_SHAPE(64), (const double[64]){0});
    for (size_t i = 0; i < 64; i++)
        ((double *)ag_data(w))[i] = 1;
    ag_tape *t = ag_tape_new();
    opt o = {.c = 0.5, .train = true};
    ag_tensor *y = f_dropout(t, &x, &o);
    ag_tensor *g, *L = ag_sum(t, ag_mul(t, y, w));
    cr_assert_eq(ag_gradients(t, L, 1, &x, &g, AG_CREATE_GRAPH), AG_OK);
    size_t kept = 0;
    for (size_t i = 0; i < 64; i++) {
        double m = ag_get(g, i);
        cr_assert(m == 0 || m == 2, "[%zu] = %g", i, m);
        cr_assert_eq(m == 2, ag_get(y, i) != 0, "[%zu]: mask %g, y %g", i, m, ag_get(y, i));
        kept += m == 2;
    }
    cr_assert(kept > 8 && kept < 56, "%zu of 64 kept", kept);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

/* f32: the recorded gradients against the fused ones, to f32 rounding */
static void check_f32(const char *what, ag_fn fn, opt *o, const size_t *shape, size_t rank, double lo, double hi)
{
    ag_tensor *x = ag_rand_uniform(AG_F32, shape, rank, lo, hi, &rng);
    cr_assert_not_null(x);
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = fn(t, &x, o);
    ag_tensor *w = ag_rand_uniform(AG_F32, ag_tensor_shape(y), ag_tensor_rank(y), -1, 1, &rng);
    ag_tensor *L = ag_sum(t, ag_mul(t, ag_mul(t, y, y), w)), *g, *gf;
    cr_assert_eq(ag_gradients(t, L, 1, &x, &gf, 0), AG_OK, "%s: %s", what, ag_tape_error(t));
    cr_assert_eq(ag_gradients(t, L, 1, &x, &g, AG_CREATE_GRAPH), AG_OK, "%s: %s", what, ag_tape_error(t));
    cr_assert_eq(ag_tensor_dtype(g), AG_F32);
    double scale = 0;
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        scale = fmax(scale, fabs(ag_get(gf, i)));
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        cr_assert(fabs(ag_get(g, i) - ag_get(gf, i)) <= 1e-5 * scale, "%s [%zu]: recorded %.9g, fused %.9g",
                  what, i, ag_get(g, i), ag_get(gf, i));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

Test(graph_reduce_edges, f32_recorded_gradients_match_the_fused_ones)
{
    check_f32("sum_axes", f_axes, &(opt){.fx = ag_mean_axes, .axes = {0, 2}, .n_axes = 2}, AG_SHAPE(2, 3, 4), -1, 1);
    check_f32("prod_axis", f_axis, &(opt){.fa = ag_prod_axis, .axis = 1}, AG_SHAPE(2, 9, 4), 0.5, 1.5);
    check_f32("var_axis", f_axis, &(opt){.fa = ag_var_axis, .axis = 2}, AG_SHAPE(2, 3, 4), -1, 1);
    check_f32("logsumexp", f_axis, &(opt){.fa = ag_logsumexp, .axis = 0, .keep = true}, AG_SHAPE(2, 3, 4), -2, 2);
    check_f32("softmax", f_softmax, &(opt){.axis = 1}, AG_SHAPE(2, 3, 4), -2, 2);
    check_f32("log_softmax", f_log_softmax, &(opt){.axis = -1}, AG_SHAPE(2, 3, 4), -2, 2);
    check_f32("layer_norm", f_layer_norm, &(opt){.c = 1e-5}, AG_SHAPE(2, 3, 4), -1, 1);
    check_f32("norm", f_norm, &(opt){0}, AG_SHAPE(2, 3, 4), -1, 1);
    check_f32("max_axis", f_axis, &(opt){.fa = ag_max_axis, .axis = 1}, AG_SHAPE(2, 3, 4), -1, 1);
}

/* ------------------------------------------------------------ third order */

/* D³L[v, u, ·]: the recorded gradient, the recorded gradient of <g, v>,
 * then ag_backward of <that, u>; against central differences of H v along u. */
static void check_third(const char *what, ag_fn fn, opt *o, ag_tensor *x)
{
    ag_tensor *w = NULL, *v = direction(x), *u = direction(x);
    ag_tape *t = ag_tape_new();
    ag_tensor *L = objective(t, fn, o, &x, &w), *g, *h;
    cr_assert_eq(ag_gradients(t, L, 1, &x, &g, AG_CREATE_GRAPH), AG_OK, "%s: %s", what, ag_tape_error(t));
    ag_tensor *s = ag_sum(t, ag_mul(t, g, v));
    cr_assert_eq(ag_gradients(t, s, 1, &x, &h, AG_CREATE_GRAPH), AG_OK, "%s: %s", what, ag_tape_error(t));
    ag_tensor *s2 = ag_sum(t, ag_mul(t, h, u));
    cr_assert(ag_requires_grad(s2), "%s: the second derivative is a constant", what);
    ag_zero_grad(x);
    cr_assert_eq(ag_backward(t, s2), AG_OK, "%s: %s", what, ag_tape_error(t));
    size_t m = ag_tensor_numel(x);
    double *got = malloc(m * sizeof *got), *plus, *minus, *keep;
    cr_assert_not_null(got);
    for (size_t j = 0; j < m; j++)
        got[j] = ag_get_grad(x, j);
    ag_tape_free(t);
    save(1, &x, &keep);
    ot_nudge(1, &x, &u, FD_EPS);
    recorded_hvp(what, fn, o, 1, &x, &w, &v, &plus);
    restore(1, &x, &keep);
    ot_nudge(1, &x, &u, -FD_EPS);
    recorded_hvp(what, fn, o, 1, &x, &w, &v, &minus);
    restore(1, &x, &keep);
    compare_fd(what, "third", 1, &x, &got, &plus, &minus);
    free(got), free(plus), free(minus), free(keep);
    ag_tensor_free(w), ag_tensor_free(v), ag_tensor_free(u), ag_tensor_free(x);
}

Test(graph_reduce_third, reductions_and_normalisations)
{
    check_third("sum_axes", f_axes, &(opt){.fx = ag_sum_axes, .axes = {0, 2}, .n_axes = 2}, IN(-1, 1, 2, 3, 4));
    check_third("mean_axis", f_axis, &(opt){.fa = ag_mean_axis, .axis = 1}, IN(-1, 1, 2, 3, 4));
    check_third("prod_axis", f_axis, &(opt){.fa = ag_prod_axis, .axis = 1, .keep = true}, IN(-1.5, 1.5, 2, 5, 3));
    check_third("var_axis", f_axis, &(opt){.fa = ag_var_axis, .axis = 2}, IN(-1, 1, 2, 3, 4));
    check_third("logsumexp", f_axis, &(opt){.fa = ag_logsumexp, .axis = 0}, IN(-2, 2, 2, 3, 4));
    check_third("softmax", f_softmax, &(opt){.axis = 1}, IN(-2, 2, 2, 3, 4));
    check_third("log_softmax", f_log_softmax, &(opt){.axis = 2}, IN(-2, 2, 2, 3, 4));
    check_third("layer_norm", f_layer_norm, &(opt){.c = 0.1}, IN(-1, 1, 2, 3, 4));
    check_third("norm", f_norm, &(opt){0}, IN(-1, 1, 2, 3, 4));
}

Test(graph_reduce_third, losses)
{
    ag_tensor *cls = ot_from(AG_F64, AG_SHAPE(4), (const double[]){1, 0, 4, 2});
    check_third("cross_entropy", f_classes, &(opt){.fl = ag_cross_entropy, .cls = cls}, IN(-2, 2, 4, 5));
    check_third("nll_loss", f_classes, &(opt){.fl = ag_nll_loss, .cls = cls}, IN(-2, 2, 4, 5));
    ag_tensor_free(cls);
    /* the second operand a constant target */
    ag_tensor *y = ag_rand_uniform(AG_F64, AG_SHAPE(2, 3, 4), 0, 1, &rng);
    check_third("mse", f_classes, &(opt){.fl = ag_mse, .cls = y}, IN(-1, 1, 2, 3, 4));
    check_third("quadratic_cost", f_classes, &(opt){.fl = ag_quadratic_cost, .cls = y}, IN(-1, 1, 2, 3, 4));
    check_third("bce", f_classes, &(opt){.fl = ag_bce, .cls = y}, IN(0.1, 0.9, 2, 3, 4));
    check_third("bce_with_logits", f_classes, &(opt){.fl = ag_bce_with_logits, .cls = y}, IN(-3, 3, 2, 3, 4));
    ag_tensor_free(y);
}
