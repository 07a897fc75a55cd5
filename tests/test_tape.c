/* test_tape.c: backward, accumulation, retained and detached gradients,
 * recording, the reusable arena, DOT export and views. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "alloc_suite.h"

ALLOC_SUITE(tape)

static ag_tensor *param(const size_t *shape, size_t rank, const double *v)
{
    ag_tensor *x = ag_from_data(AG_F64, shape, rank, v);
    cr_assert_not_null(x);
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

static ag_tensor *constant(const size_t *shape, size_t rank, const double *v)
{
    ag_tensor *x = ag_from_data(AG_F64, shape, rank, v);
    cr_assert_not_null(x);
    return x;
}

static void assert_grad(const ag_tensor *x, const double *want, size_t n, double tol)
{
    cr_assert_not_null(ag_grad(x));
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(ag_get_grad(x, i) - want[i]) <= tol * (1 + fabs(want[i])),
                  "grad %zu: got %.17g want %.17g", i, ag_get_grad(x, i), want[i]);
}

static double sigmoid(double z) { return 1 / (1 + exp(-z)); }

/* ------------------------------------------------------------ accumulation */

Test(tape, grads_accumulate_across_backward_calls)
{
    const double v[3] = {1.5, -2, 0.25};
    ag_tensor *x = param(AG_SHAPE(3), v);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_mul(t, x, x));
    cr_assert_eq(ag_backward(t, y), AG_OK);
    cr_assert_eq(ag_backward(t, y), AG_OK); /* same graph again: 2x + 2x */
    assert_grad(x, (double[]){4 * v[0], 4 * v[1], 4 * v[2]}, 3, 0);
    ag_tape_reset(t);
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, x, x))), AG_OK); /* a new graph: + 2x */
    assert_grad(x, (double[]){6 * v[0], 6 * v[1], 6 * v[2]}, 3, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tape, fan_out_sums_every_path)
{
    const double v[3] = {1.5, -2, 0.25};
    ag_tensor *x = param(AG_SHAPE(3), v);
    ag_tape *t = ag_tape_new();
    /* x used three times in each: d/dx x·x·x = 3x², d/dx (x+x+x) = 3 */
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, ag_mul(t, x, x), x))), AG_OK);
    assert_grad(x, (double[]){3 * v[0] * v[0], 3 * v[1] * v[1], 3 * v[2] * v[2]}, 3, 1e-15);
    ag_zero_grad(x);
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_add(t, ag_add(t, x, x), x))), AG_OK);
    assert_grad(x, (double[]){3, 3, 3}, 3, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tape, zero_grad_clears_accumulated_gradient)
{
    ag_tensor *x = param(AG_SHAPE(2), (double[]){1, 2});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_sum(t, ag_scale(t, x, 3));
    cr_assert_eq(ag_backward(t, y), AG_OK);
    assert_grad(x, (double[]){3, 3}, 2, 0);
    ag_zero_grad(x);
    assert_grad(x, (double[]){0, 0}, 2, 0);
    cr_assert_eq(ag_backward(t, y), AG_OK);
    assert_grad(x, (double[]){3, 3}, 2, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tape, backward_seed_on_non_scalar_output)
{
    const double xv[6] = {-1, 0.5, 2, 0, -0.25, 1}, wv[6] = {2, -1, 0.5, 3, 1, -2};
    const double sv[6] = {1, 2, 3, -1, 0.5, 4};
    ag_tensor *x = param(AG_SHAPE(2, 3), xv), *w = constant(AG_SHAPE(2, 3), wv);
    ag_tensor *seed = constant(AG_SHAPE(2, 3), sv);
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_mul(t, ag_sigmoid(t, x), w);
    cr_assert_eq(ag_backward_seed(t, y, seed), AG_OK, "%s", ag_tape_error(t));
    double want[6];
    for (size_t i = 0; i < 6; i++)
        want[i] = sv[i] * wv[i] * sigmoid(xv[i]) * (1 - sigmoid(xv[i]));
    assert_grad(x, want, 6, 1e-15);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(seed);
    assert_all_freed();
}

Test(tape, backward_from_a_leaf_adds_the_seed)
{
    ag_tensor *x = param(NULL, 0, (double[]){4});
    ag_tape *t = ag_tape_new();
    cr_assert_eq(ag_backward(t, x), AG_OK);
    cr_assert_eq(ag_get_grad(x, 0), 1.0);
    cr_assert_eq(ag_backward(t, x), AG_OK);
    cr_assert_eq(ag_get_grad(x, 0), 2.0, "accumulated, not assigned");
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ retained grads */

/* One sigmoid layer z = x·W + b, a = σ(z), C = Σ(a - y)² / (2·rows):
 * δ = dC/dz = (a - y)/rows ⊙ σ'(z) (BP1), dC/dW = xᵀδ (BP4), dC/db = Σδ (BP3). */
Test(tape, retain_grad_gives_delta_of_a_sigmoid_layer)
{
    const double xv[6] = {0.5, -1, 2, 1, 0.25, -0.5}, Wv[6] = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6};
    const double bv[2] = {0.05, -0.1}, yv[4] = {1, 0, 0, 1};
    ag_tensor *x = constant(AG_SHAPE(2, 3), xv), *W = param(AG_SHAPE(3, 2), Wv);
    ag_tensor *b = param(AG_SHAPE(2), bv), *y = constant(AG_SHAPE(2, 2), yv);
    ag_tape *t = ag_tape_new();
    ag_tensor *xw = ag_matmul(t, x, W), *z = ag_add(t, xw, b), *a = ag_sigmoid(t, z);
    ag_retain_grad(z);
    cr_assert_eq(ag_backward(t, ag_quadratic_cost(t, a, y)), AG_OK);
    double delta[4], dW[6] = {0}, db[2] = {0};
    for (size_t r = 0; r < 2; r++)
        for (size_t j = 0; j < 2; j++) {
            double zj = bv[j];
            for (size_t k = 0; k < 3; k++)
                zj += xv[r * 3 + k] * Wv[k * 2 + j];
            double s = sigmoid(zj);
            delta[r * 2 + j] = (s - yv[r * 2 + j]) / 2 * s * (1 - s);
        }
    for (size_t r = 0; r < 2; r++)
        for (size_t j = 0; j < 2; j++) {
            db[j] += delta[r * 2 + j];
            for (size_t k = 0; k < 3; k++)
                dW[k * 2 + j] += xv[r * 3 + k] * delta[r * 2 + j];
        }
    assert_grad(z, delta, 4, 1e-14);
    assert_grad(W, dW, 6, 1e-14);
    assert_grad(b, db, 2, 1e-14);
    cr_assert_null(ag_grad(a), "a was not retained");
    cr_assert_null(ag_grad(xw), "x·W was not retained");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(W);
    ag_tensor_free(b);
    ag_tensor_free(y);
    assert_all_freed();
}

Test(tape, retain_grad_ignores_leaves_and_null)
{
    ag_tensor *x = constant(AG_SHAPE(2), (double[]){1, 2});
    ag_retain_grad(NULL);
    ag_retain_grad(x);
    cr_assert_null(ag_grad(x));
    cr_assert_not(ag_requires_grad(x));
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tape, detach_stops_the_gradient)
{
    const double v[3] = {1.5, -2, 0.25};
    ag_tensor *x = param(AG_SHAPE(3), v);
    ag_tape *t = ag_tape_new();
    ag_tensor *d = ag_detach(t, x);
    cr_assert_not(ag_requires_grad(d));
    cr_assert_eq(ag_get(d, 1), v[1]);
    /* d/dx Σ detach(x)·x = x, not 2x */
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, d, x))), AG_OK);
    assert_grad(x, v, 3, 0);
    /* a graph cut off entirely cannot be backpropagated */
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_detach(t, ag_exp(t, x)))), AG_ERR_STATE);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ recording */

Test(tape, recording_off_computes_values_and_records_nothing)
{
    ag_tensor *x = param(AG_SHAPE(2), (double[]){1, 2});
    ag_tape *t = ag_tape_new();
    cr_assert(ag_tape_recording(t));
    cr_assert(ag_tape_set_recording(t, false));
    cr_assert_not(ag_tape_recording(t));
    ag_tensor *y = ag_sum(t, ag_exp(t, x));
    cr_assert_not_null(y);
    cr_assert(fabs(ag_item(y) - (exp(1.0) + exp(2.0))) < 1e-14);
    cr_assert_eq(ag_tape_size(t), 0);
    cr_assert_not(ag_requires_grad(y));
    cr_assert_eq(ag_backward(t, y), AG_ERR_STATE);
    cr_assert_eq(ag_tape_status(t), AG_ERR_STATE);
    cr_assert(strstr(ag_tape_error(t), "ag_backward") != NULL, "%s", ag_tape_error(t));
    assert_grad(x, (double[]){0, 0}, 2, 0);
    cr_assert_not(ag_tape_set_recording(t, true));
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tape, ops_without_grad_inputs_are_not_recorded)
{
    ag_tensor *x = constant(AG_SHAPE(2), (double[]){1, 2}), *p = param(AG_SHAPE(2), (double[]){3, 4});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_mul(t, x, x);
    cr_assert_eq(ag_get(y, 1), 4.0);
    cr_assert_eq(ag_tape_size(t), 0);
    ag_tensor *z = ag_add(t, y, p);
    cr_assert_eq(ag_tape_size(t), 1);
    ag_sum(t, z);
    cr_assert_eq(ag_tape_size(t), 2);
    ag_tape_reset(t);
    cr_assert_eq(ag_tape_size(t), 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(p);
    assert_all_freed();
}

Test(tape, set_requires_grad_on_op_result_is_a_state_error)
{
    ag_tensor *x = constant(AG_SHAPE(2), (double[]){1, 2});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_exp(t, x);
    cr_assert_eq(ag_set_requires_grad(y, true), AG_ERR_STATE);
    cr_assert_not(ag_requires_grad(y));
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ arena reuse */

static double train_step(ag_tape *t, ag_tensor *x, ag_tensor *y, ag_tensor *W, ag_tensor *b)
{
    ag_tensor *a = ag_sigmoid(t, ag_add(t, ag_matmul(t, x, W), b));
    ag_tensor *C = ag_quadratic_cost(t, a, y);
    cr_assert_eq(ag_backward(t, C), AG_OK, "%s", ag_tape_error(t));
    double loss = ag_item(C);
    ag_tensor *ps[2] = {W, b};
    for (int k = 0; k < 2; k++) {
        double *d = ag_data(ps[k]), *g = ag_grad(ps[k]);
        for (size_t i = 0; i < ag_tensor_numel(ps[k]); i++)
            d[i] -= 0.5 * g[i];
        ag_zero_grad(ps[k]);
    }
    ag_tape_reset(t);
    return loss;
}

Test(tape, reset_and_reuse_allocates_nothing_after_two_steps)
{
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    /* [128,64] results of 64 KiB each: a step spans several arena chunks */
    ag_tensor *x = ag_rand_normal(AG_F64, AG_SHAPE(128, 32), 0, 1, &rng);
    ag_tensor *y = ag_rand_uniform(AG_F64, AG_SHAPE(128, 64), 0, 1, &rng);
    ag_tensor *W = ag_rand_normal(AG_F64, AG_SHAPE(32, 64), 0, 0.3, &rng), *b = ag_zeros(AG_F64, AG_SHAPE(64));
    ag_set_requires_grad(W, true);
    ag_set_requires_grad(b, true);
    ag_tape *t = ag_tape_new();
    /* the tape alternates between two arenas: the first two steps fill them */
    double first = train_step(t, x, y, W, b), last = train_step(t, x, y, W, b);
    size_t allocs = ta.allocs, live = ta.live_bytes;
    for (int step = 2; step < 1000; step++) {
        last = train_step(t, x, y, W, b);
        cr_assert_eq(ta.allocs, allocs, "step %d allocated", step);
        cr_assert_eq(ta.live_bytes, live, "step %d changed live bytes", step);
    }
    cr_assert_lt(last, first * 0.9, "training did not reduce the loss: %g -> %g", first, last);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tensor_free(W);
    ag_tensor_free(b);
    assert_all_freed();
}

/* Results of 256 bytes or more start on a cache line (the vector loops
 * want it); smaller ones are packed 16 bytes apart, whatever came before. */
Test(tape, results_are_line_aligned_when_large_and_16_aligned_when_small)
{
    ag_tensor *s = ag_scalar(AG_F64, 2), *v = ag_ones(AG_F32, AG_SHAPE(3));
    ag_tensor *big = ag_ones(AG_F32, AG_SHAPE(64));
    ag_tape *t = ag_tape_new();
    for (int i = 0; i < 50; i++) {
        ag_tensor *a = ag_mul(t, s, s), *b = ag_neg(t, v), *c = ag_neg(t, big);
        cr_assert(a && b && c);
        cr_assert_eq((uintptr_t)ag_data(a) % 16, 0);
        cr_assert_eq((uintptr_t)ag_data(b) % 16, 0);
        cr_assert_eq((uintptr_t)ag_data(c) % 64, 0, "a 256-byte result off its line");
        cr_assert_eq((uintptr_t)a % _Alignof(max_align_t), 0);
    }
    ag_tape_free(t);
    ag_tensor_free(s);
    ag_tensor_free(v);
    ag_tensor_free(big);
}

Test(tape, freeing_an_op_result_is_a_no_op)
{
    ag_tensor *x = param(AG_SHAPE(3), (double[]){1, 2, 3});
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_scale(t, x, 2);
    size_t frees = ta.frees;
    ag_tensor_free(y);
    cr_assert_eq(ta.frees, frees);
    cr_assert_eq(ag_get(y, 2), 6.0);
    cr_assert_eq(ag_backward(t, ag_sum(t, y)), AG_OK);
    assert_grad(x, (double[]){2, 2, 2}, 3, 0);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ DOT export */

static char *dot_of(const ag_tape *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ag_tape_dot(t, f), AG_OK);
    fclose(f);
    return buf;
}

/* Distinct node ids declared ("ID [label=...") in a DOT text. */
static size_t count_nodes(const char *dot)
{
    char ids[32][64];
    size_t n = 0;
    for (const char *line = dot; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *lab = strstr(line, " [label=");
        const char *eol = strchr(line, '\n');
        if (!lab || (eol && lab > eol))
            continue;
        while (*line == ' ')
            line++;
        size_t len = (size_t)(lab - line);
        cr_assert(len < 64);
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strlen(ids[i]) == len && strncmp(ids[i], line, len) == 0;
        if (!seen) {
            cr_assert(n < 32);
            memcpy(ids[n], line, len);
            ids[n++][len] = '\0';
        }
    }
    return n;
}

static size_t count_str(const char *s, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

Test(tape, dot_has_a_node_per_tensor_with_op_and_shape)
{
    ag_tensor *x = constant(AG_SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6});
    ag_tensor *W = param(AG_SHAPE(3, 4), (double[12]){0}), *b = param(AG_SHAPE(4), (double[4]){0});
    ag_tensor_set_name(x, "input");
    ag_tensor_set_name(W, "weights");
    ag_tape *t = ag_tape_new();
    ag_tensor *z = ag_add(t, ag_matmul(t, x, W), b);
    ag_tensor_set_name(z, "zed");
    ag_sigmoid(t, z);
    char *dot = dot_of(t);
    cr_assert_eq(strncmp(dot, "digraph", 7), 0, "%s", dot);
    cr_assert(strstr(dot, "}\n") != NULL);
    const char *want[] = {"matmul", "sigmoid", "zed: add", "input", "weights", "[2,3]", "[3,4]", "[4]",
                          "[2,4]", "f64"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(dot, want[i]) != NULL, "no \"%s\" in:\n%s", want[i], dot);
    cr_assert_eq(count_nodes(dot), 6, "x, W, x·W, b, z, σ(z):\n%s", dot);
    cr_assert_eq(count_str(dot, "->"), 5, "%s", dot);
    free(dot);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(W);
    ag_tensor_free(b);
    assert_all_freed();
}

Test(tape, dot_of_an_empty_tape_and_null_arguments)
{
    ag_tape *t = ag_tape_new();
    char *dot = dot_of(t);
    cr_assert_eq(strncmp(dot, "digraph", 7), 0);
    cr_assert_eq(count_nodes(dot), 0);
    free(dot);
    cr_assert_eq(ag_tape_dot(NULL, stdout), AG_ERR_NULL);
    cr_assert_eq(ag_tape_dot(t, NULL), AG_ERR_NULL);
    ag_tape_free(t);
    assert_all_freed();
}

/* ------------------------------------------------------------ views */

Test(tape, view_wraps_caller_memory_without_copying)
{
    enum { N = 10000 };
    double *data = malloc(N * sizeof *data);
    cr_assert_not_null(data);
    for (size_t i = 0; i < N; i++)
        data[i] = (double)i;
    ag_tensor *v = ag_view(AG_F64, AG_SHAPE(100, 100), data, NULL);
    cr_assert_not_null(v);
    cr_assert_lt(ta.live_bytes, 1024, "a view allocated %zu bytes", ta.live_bytes);
    cr_assert_eq(ag_data(v), (void *)data);
    ag_tape *t = ag_tape_new();
    data[0] = 1e6;
    cr_assert_eq(ag_item(ag_sum(t, v)), 1e6 + (double)N * (N - 1) / 2);
    ag_tape_free(t);
    ag_tensor_free(v);
    cr_assert_eq(data[5], 5.0);
    free(data);
    assert_all_freed();
}

Test(tape, view_uses_the_caller_grad_buffer)
{
    double data[3] = {1, 2, 3}, grad[3] = {10, 10, 10};
    ag_tensor *v = ag_view(AG_F64, AG_SHAPE(3), data, grad);
    size_t live = ta.live_bytes;
    cr_assert_eq(ag_set_requires_grad(v, true), AG_OK);
    cr_assert_eq(ta.live_bytes, live, "requires_grad allocated although a grad buffer was given");
    cr_assert_eq(ag_grad(v), (void *)grad);
    ag_tape *t = ag_tape_new();
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, v, v))), AG_OK);
    /* accumulated onto what the caller's buffer held */
    cr_assert_eq(grad[0], 12.0);
    cr_assert_eq(grad[1], 14.0);
    cr_assert_eq(grad[2], 16.0);
    ag_tape_free(t);
    ag_tensor_free(v);
    cr_assert_eq(grad[2], 16.0);
    assert_all_freed();
}

Test(tape, view_without_grad_buffer_gets_one_on_requires_grad)
{
    double data[2] = {3, 4};
    ag_tensor *v = ag_view(AG_F64, AG_SHAPE(2), data, NULL);
    cr_assert_eq(ag_set_requires_grad(v, true), AG_OK);
    cr_assert_not_null(ag_grad(v));
    ag_tape *t = ag_tape_new();
    cr_assert_eq(ag_backward(t, ag_sum(t, ag_mul(t, v, v))), AG_OK);
    assert_grad(v, (double[]){6, 8}, 2, 0);
    ag_tape_free(t);
    ag_tensor_free(v);
    assert_all_freed();
}
