/* test_handles.c: the honest mistakes that must get a clear error, never
 * silent data: op results used after their tape's reset, leaves freed
 * while a tape uses them, leaves viewed without a tape, constructors that
 * fail, allocation failures, gradcheck's reasons, threads, a tape entered
 * twice, and DOT output that Graphviz accepts. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "alloc_suite.h"
#include "optest.h"

ALLOC_SUITE(handles)

static ag_tensor *param(size_t n, double v)
{
    ag_tensor *x = ag_full(AG_F64, AG_SHAPE(n), v);
    cr_assert_not_null(x);
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

/* ---------------------------------------------------------- stale handles */

Test(handles, op_result_used_right_after_reset_is_reported)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(3, 0.5);
    ag_tensor *z = ag_exp(t, x);
    cr_assert_not_null(z);
    ag_tape_reset(t);
    cr_assert_null(ag_add(t, z, x));
    ot_assert_error(t, AG_ERR_STATE, "ag_add: input 1 is a stale handle", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* The case of the issue: after the reset the same ops run again, so the
 * arena would hand out the old addresses; the old handle must not read
 * as the new result. */
Test(handles, op_result_used_after_new_ops_is_reported)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(4, 0.25);
    ag_tensor *old = ag_sigmoid(t, ag_exp(t, x));
    for (int step = 0; step < 5; step++) {
        ag_tape_reset(t);
        ag_tensor *fresh = ag_sigmoid(t, ag_exp(t, x));
        cr_assert_not_null(fresh);
        cr_assert_neq(fresh, old, "step %d: the stale handle aliases the new result", step);
        cr_assert_null(ag_mul(t, fresh, old));
        ot_assert_error(t, AG_ERR_STATE, "ag_mul: input 2 is a stale handle", NULL);
        old = fresh;
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(handles, backward_of_a_stale_handle_is_reported)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(2, 1);
    ag_tensor *C = ag_sum(t, ag_mul(t, x, x));
    ag_tape_reset(t);
    ag_sum(t, ag_mul(t, x, x)); /* a new generation of the same graph */
    cr_assert_eq(ag_backward(t, C), AG_ERR_STATE);
    ot_assert_error(t, AG_ERR_STATE, "ag_backward: tensor is a stale handle", NULL);
    cr_assert_eq(ag_get_grad(x, 0), 0, "backward of the stale handle touched the grad");
    ag_tape_reset(t);
    ag_tensor *y = ag_sum(t, ag_mul(t, x, x)), *stale_seed = y;
    ag_tape_reset(t);
    y = ag_mul(t, x, x);
    cr_assert_eq(ag_backward_seed(t, ag_sum(t, y), stale_seed), AG_ERR_STATE);
    ot_assert_error(t, AG_ERR_STATE, "ag_backward_seed: seed is a stale handle", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* Two resets back, the handle is reported as long as nothing has been put
 * at its address since (the documented limit of the guarantee). */
Test(handles, handle_two_resets_old_is_reported_when_not_overwritten)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(2, 1);
    ag_tensor *z = ag_neg(t, x);
    ag_tape_reset(t);
    ag_tape_reset(t);
    cr_assert_null(ag_exp(t, z));
    ot_assert_error(t, AG_ERR_STATE, "ag_exp: input 1 is a stale handle", NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* Two resets later the arena is reused: a handle whose header now lies
 * inside a newer result's data (zeros here, which read as a leaf's
 * fields) is still reported, never taken for a leaf made of those bytes. */
Test(handles, handle_two_resets_old_inside_newer_data_is_reported)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(2, 1), *big = ag_zeros(AG_F64, AG_SHAPE(4096));
    ag_tensor *first = ag_neg(t, x), *z = ag_exp(t, first); /* z: the second header */
    cr_assert_not_null(z);
    uintptr_t at = (uintptr_t)z;
    ag_tape_reset(t);
    ag_tape_reset(t); /* back to the arena z lives in */
    ag_tensor *cover = ag_neg(t, big); /* its header first, then 32 KB of zeros */
    cr_assert_not_null(cover);
    uintptr_t lo = (uintptr_t)ag_data(cover), hi = lo + 4096 * sizeof(double);
    cr_assert(at >= lo && at + 256 <= hi, "z's old address is not inside the new data");
    cr_assert_null(ag_exp(t, z));
    ot_assert_error(t, AG_ERR_STATE, "ag_exp: input 1 is a stale handle", NULL);
    ag_tape_free(t);
    ag_tensor_free(big);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(handles, op_result_of_another_tape_is_still_named_so)
{
    ag_tape *t = ag_tape_new(), *u = ag_tape_new();
    ag_tensor *x = param(2, 1);
    ag_tensor *z = ag_neg(u, x);
    cr_assert_null(ag_exp(t, z));
    ot_assert_error(t, AG_ERR_STATE, "ag_exp: input 1 was made on another tape", NULL);
    ag_tape_free(t);
    ag_tape_free(u);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(handles, layers_check_their_inputs_with_the_same_rule)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(2, 1);
    ag_tensor *z = ag_neg(t, x);
    cr_assert_eq(ag_tape_check_input(t, z, "my_layer", "x"), AG_OK);
    ag_tape_reset(t);
    cr_assert_eq(ag_tape_check_input(t, z, "my_layer", "x"), AG_ERR_STATE);
    ot_assert_error(t, AG_ERR_STATE, "my_layer: x is a stale handle", NULL);
    ag_tape_reset(t);
    cr_assert_eq(ag_tape_check_input(t, NULL, "my_layer", "target"), AG_ERR_NULL);
    ot_assert_error(t, AG_ERR_NULL, "my_layer: target is NULL", NULL);
    cr_assert_eq(ag_tape_check_input(NULL, x, "f", "x"), AG_ERR_NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

#if defined(__SANITIZE_ADDRESS__)
/* In AddressSanitizer builds an ended generation is poisoned: a raw data
 * pointer kept across the reset is reported when read (the asan test
 * setup makes the report abort). */
Test(handles, raw_pointer_read_after_reset_is_an_asan_report, .signal = SIGABRT)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = param(4, 2);
    const double *p = ag_data(ag_exp(t, x));
    ag_tape_reset(t);
    volatile double v = p[1];
    (void)v;
}
#endif

/* ------------------------------------------------------------- freed leaves */

Test(handles, leaf_freed_before_backward_stays_alive_until_reset)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *W = param(3, 2), *x = ag_full(AG_F64, AG_SHAPE(3), 1.5);
    ag_tensor *C = ag_sum(t, ag_mul(t, W, x));
    double *Wg = ag_grad(W);
    size_t before = ta.frees;
    ag_tensor_free(W); /* the tape still records W: it must stay */
    ag_tensor_free(x);
    cr_assert_eq(ta.frees, before, "a leaf the tape uses was freed under it");
    cr_assert_eq(ag_backward(t, C), AG_OK, "%s", ag_tape_error(t));
    cr_assert_eq(Wg[0], 1.5); /* backward wrote into live memory */
    ag_tape_reset(t);
    cr_assert_gt(ta.frees, before, "the reset did not release the freed leaves");
    ag_tape_free(t);
    assert_all_freed();
}

Test(handles, freed_leaf_given_to_a_new_op_is_reported)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *W = param(3, 2);
    ag_tensor *z = ag_exp(t, W);
    ag_tensor_free(W);
    cr_assert_null(ag_mul(t, z, W));
    ot_assert_error(t, AG_ERR_STATE, "ag_mul: input 2 was freed (ag_tensor_free)", NULL);
    ag_tape_free(t); /* releases W */
    assert_all_freed();
}

Test(handles, tape_freed_first_then_leaf)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *W = param(3, 2);
    cr_assert_not_null(ag_exp(t, W));
    ag_tape_free(t);
    ag_tensor_free(W);
    assert_all_freed();
}

/* A leaf used on two tapes is held by both, and freed by whichever lets
 * go last. */
Test(handles, leaf_held_by_two_tapes)
{
    ag_tape *t = ag_tape_new(), *u = ag_tape_new();
    ag_tensor *W = param(2, 1);
    ag_tensor *a = ag_exp(t, W), *b = ag_exp(u, W);
    cr_assert(a && b);
    ag_tensor_free(W);
    size_t frees = ta.frees;
    ag_tape_reset(t);
    cr_assert_eq(ta.frees, frees, "freed while the second tape holds it");
    ag_tensor *C = ag_sum(u, b);
    cr_assert_eq(ag_backward(u, C), AG_OK);
    ag_tape_free(u);
    ag_tape_free(t);
    assert_all_freed();
}

/* -------------------------------------------------------------- leaf views */

Test(handles, leaf_view_reshapes_without_a_tape)
{
    double v[] = {1, 2, 3, 4, 5, 6};
    ag_tensor *labels = ag_from_data(AG_F64, AG_SHAPE(6), v);
    ag_tensor *col = ag_leaf_view(labels, 0, AG_SHAPE(6, 1));
    cr_assert_not_null(col, "%s", ag_last_error());
    cr_assert_eq(ag_tensor_rank(col), 2);
    cr_assert_eq(ag_tensor_shape(col)[0], 6);
    cr_assert_eq(ag_data(col), ag_data(labels), "a view copies nothing");
    ag_tensor *tail = ag_leaf_view(labels, 4, AG_SHAPE(2));
    cr_assert_eq(ag_get(tail, 0), 5);
    ag_tensor_free(labels); /* the views keep it */
    cr_assert_eq(ag_get(col, 5), 6);
    ag_tensor_free(col);
    cr_assert_eq(ag_get(tail, 1), 6);
    ag_tensor_free(tail);
    assert_all_freed();
}

Test(handles, leaf_view_shares_the_gradient)
{
    ag_tensor *W = param(6, 1);
    ag_tensor *M = ag_leaf_view(W, 0, AG_SHAPE(2, 3));
    cr_assert(ag_requires_grad(M));
    ag_tape *t = ag_tape_new();
    ag_tensor *C = ag_sum(t, ag_scale(t, M, 3));
    cr_assert_eq(ag_backward(t, C), AG_OK, "%s", ag_tape_error(t));
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get_grad(W, i), 3, "element %zu", i);
    ag_tape_free(t);
    ag_tensor_free(M);
    ag_tensor_free(W);
    assert_all_freed();
}

Test(handles, leaf_view_errors_say_why)
{
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(4));
    cr_assert_null(ag_leaf_view(x, 0, AG_SHAPE(5)));
    cr_assert_eq(ag_last_status(), AG_ERR_SHAPE);
    cr_assert(strstr(ag_last_error(), "5 elements from offset 0 do not fit in base [4]"), "%s",
              ag_last_error());
    cr_assert_null(ag_leaf_view(x, 3, AG_SHAPE(2)));
    cr_assert_eq(ag_last_status(), AG_ERR_SHAPE);
    cr_assert_null(ag_leaf_view(NULL, 0, AG_SHAPE(1)));
    cr_assert_eq(ag_last_status(), AG_ERR_NULL);
    ag_tape *t = ag_tape_new();
    cr_assert_null(ag_leaf_view(ag_neg(t, x), 0, AG_SHAPE(4)));
    cr_assert(strstr(ag_last_error(), "an op result"), "%s", ag_last_error());
    ag_tape_free(t);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ---------------------------------------------------- constructors say why */

#define ASSERT_FAILS(call, status, why)                                                   \
    do {                                                                                  \
        cr_assert_null(call, #call);                                                      \
        cr_assert_eq(ag_last_status(), status, #call ": %s", ag_last_error());           \
        cr_assert_str_eq(ag_last_error(), why);                                           \
    } while (0)

Test(handles, failed_constructors_say_why)
{
    size_t big[] = {SIZE_MAX / 2, 4};
    ASSERT_FAILS(ag_zeros(AG_F32, AG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)), AG_ERR_SHAPE,
                 "ag_zeros: rank 9 is more than 8");
    ASSERT_FAILS(ag_ones((ag_dtype)7, AG_SHAPE(2)), AG_ERR_DTYPE,
                 "ag_ones: dtype 7 is not AG_F32 or AG_F64");
    ASSERT_FAILS(ag_full(AG_F64, big, 2, 0), AG_ERR_OVERFLOW, "ag_full: the shape's byte size overflows");
    ASSERT_FAILS(ag_from_data(AG_F64, AG_SHAPE(2), NULL), AG_ERR_NULL, "ag_from_data: data is NULL");
    ASSERT_FAILS(ag_rand_normal(AG_F64, AG_SHAPE(2), 0, 1, NULL), AG_ERR_NULL,
                 "ag_rand_normal: rng is NULL");
    ASSERT_FAILS(ag_view(AG_F64, NULL, 2, (double[2]){0}, NULL), AG_ERR_NULL,
                 "ag_view: shape is NULL with rank 2");
    ag_tensor *ok = ag_zeros(AG_F32, AG_SHAPE(2));
    cr_assert_eq(ag_last_status(), AG_OK, "a success clears the reason");
    cr_assert_str_eq(ag_last_error(), "");
    ag_tensor_free(ok);
    ta.fail_at = ta.attempts + 1;
    cr_assert_null(ag_zeros(AG_F32, AG_SHAPE(1000)));
    cr_assert_eq(ag_last_status(), AG_ERR_NOMEM);
    cr_assert(strstr(ag_last_error(), "ag_zeros: out of memory allocating"), "%s", ag_last_error());
    assert_all_freed();
}

/* ------------------------------------------ allocation failures name the op */

static size_t refuse_above;
static void *refusing_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return nsize > refuse_above ? NULL : realloc(ptr, nsize);
}

Test(handles_nomem, arena_failure_names_the_op_and_shapes)
{
    refuse_above = (size_t)1 << 30;
    ag_set_allocator(refusing_alloc, NULL);
    ag_tensor *a = ag_zeros(AG_F32, AG_SHAPE(1000000, 10)), *b = ag_zeros(AG_F32, AG_SHAPE(10, 1000000));
    ag_tape *t = ag_tape_new();
    cr_assert(a && b && t);
    cr_assert_null(ag_matmul(t, a, b));
    ot_assert_error(t, AG_ERR_NOMEM,
                    "ag_matmul: out of memory allocating 4000000000000 bytes (result [1000000,1000000] f32; "
                    "inputs [1000000,10], [10,1000000])",
                    NULL);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_set_allocator(NULL, NULL);
}

Test(handles_nomem, backward_failure_names_the_op)
{
    ag_tensor *x = ag_full(AG_F64, AG_SHAPE(100000), 1);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    /* the arena's last chunk (1.6 MB) holds exp's second result and sum's,
     * so the gradient buffer for the former (800,000 bytes) needs a new one */
    ag_tensor *C = ag_sum(t, ag_exp(t, ag_exp(t, x)));
    cr_assert_not_null(C);
    refuse_above = 1000;
    ag_set_allocator(refusing_alloc, NULL);
    cr_assert_eq(ag_backward(t, C), AG_ERR_NOMEM);
    ot_assert_error(t, AG_ERR_NOMEM,
                    "ag_sum backward: out of memory allocating 800000 bytes (result [] f64; inputs [100000])", NULL);
    ag_set_allocator(NULL, NULL);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ------------------------------------------------------------- gradcheck */

static ag_tensor *bad_fn(ag_tape *t, ag_tensor *const *in, void *ctx)
{
    (void)ctx;
    return ag_reshape(t, in[0], AG_SHAPE(2)); /* [3] has 3 elements */
}

static ag_tensor *sum_fn(ag_tape *t, ag_tensor *const *in, void *ctx)
{
    (void)ctx;
    return ag_sum(t, in[0]);
}

Test(handles, gradcheck_keeps_the_reason)
{
    ag_tensor *x = ag_full(AG_F64, AG_SHAPE(3), 1);
    ag_gradcheck_report rep;
    cr_assert_eq(ag_gradcheck(bad_fn, NULL, 1, &x, 0, 1e-6, 1e-6, &rep), AG_ERR_SHAPE);
    cr_assert(strstr(rep.message, "ag_gradcheck: fn failed: ag_reshape: [3] has 3 elements, [2] does not"), "%s", rep.message);
    cr_assert_not(rep.passed);
    ag_tensor *f = ag_full(AG_F32, AG_SHAPE(3), 1);
    cr_assert_eq(ag_gradcheck(sum_fn, NULL, 1, &f, 0, 1e-6, 1e-6, &rep), AG_ERR_DTYPE);
    cr_assert(strstr(rep.message, "input 1 is f32: the check runs in f64"), "%s", rep.message);
    cr_assert_eq(ag_gradcheck(sum_fn, NULL, 1, &x, 0, 1e-6, 1e-6, &rep), AG_OK);
    cr_assert(rep.passed);
    cr_assert_str_eq(rep.message, "");
    ag_tensor_free(x);
    ag_tensor_free(f);
    assert_all_freed();
}

/* ---------------------------------------------------------------- threads */

Test(handles, absurd_thread_counts_are_capped)
{
    ag_tape *t = ag_tape_new();
    ag_tape_set_threads(t, ((size_t)1 << 61) + 2);
    cr_assert_eq(ag_tape_threads(t), 1024);
    ag_tape_set_threads(t, 3);
    cr_assert_eq(ag_tape_threads(t), 3);
    ag_tape_free(t);
    assert_all_freed();
}

Test(handles, threads_report_what_runs)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *a = ag_full(AG_F32, AG_SHAPE(256, 256), 1);
    ag_tape_set_threads(t, 1);
    for (int i = 0; i < 2; i++) { /* both arenas, the leaf list and scratch made */
        cr_assert_not_null(ag_matmul(t, a, a));
        ag_tape_reset(t);
    }
    /* a product big enough to start the pool, with its start refused */
    ag_tape_set_threads(t, 3);
    ta.fail_at = ta.attempts + 1;
    ag_tensor *c = ag_matmul(t, a, a);
    cr_assert_not_null(c, "%s", ag_tape_error(t));
    cr_assert_eq(ag_get(c, 0), 256, "the product ran on the calling thread");
    cr_assert_eq(ag_tape_threads(t), 1, "the pool did not start: one thread runs");
    ag_tape_set_threads(t, 2);
    ag_tape_reset(t);
    cr_assert_not_null(ag_matmul(t, a, a));
    cr_assert_eq(ag_tape_threads(t), 2);
    ag_tape_free(t);
    ag_tensor_free(a);
    assert_all_freed();
}

/* Checked mode catches a tape entered while an op is running on it. The
 * second entry comes from the allocator hook, called inside the first op,
 * so the test needs no timing luck. */
static ag_tape *reentered;
static ag_tensor *reenter_input;
static ag_status reentry_status;
static void *reentering_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (reentered) {
        ag_tape *t = reentered;
        reentered = NULL;
        ag_neg(t, reenter_input);
        reentry_status = ag_tape_status(t);
    }
    return realloc(ptr, nsize);
}

Test(handles_nomem, checked_mode_reports_a_second_entry)
{
    ag_tape *t = ag_tape_new();
    ag_tape_set_checked(t, true);
    reenter_input = ag_full(AG_F64, AG_SHAPE(2), 1);
    ag_tensor *big = ag_full(AG_F64, AG_SHAPE(100000), 1);
    ag_set_allocator(reentering_alloc, NULL);
    reentered = t;
    ag_exp(t, big); /* its result needs a new arena chunk */
    ag_set_allocator(NULL, NULL);
    cr_assert_eq(reentry_status, AG_ERR_STATE);
    ot_assert_error(t, AG_ERR_STATE, "ag_neg: the tape is in use by another thread", NULL);
    ag_tape_free(t);
    ag_tensor_free(reenter_input);
    ag_tensor_free(big);
}

/* -------------------------------------------------------------------- DOT */

static char *dot_of(ag_tape *t, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    cr_assert_not_null(f);
    cr_assert_eq(ag_tape_dot(t, f), AG_OK);
    fclose(f);
    return buf;
}

static char *weird_graph_dot(size_t *len)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *W = param(2, 1);
    ag_tensor_set_name(W, "W \"1\"\\\nnext");
    ag_tensor *z = ag_exp(t, W);
    ag_tensor_set_name(z, "a\"b");
    ag_sum(t, ag_mul(t, z, W));
    char *s = dot_of(t, len);
    ag_tape_free(t);
    ag_tensor_free(W);
    return s;
}

Test(handles_nomem, dot_escapes_names_and_numbers_nodes_in_order)
{
    size_t n1, n2;
    char *a = weird_graph_dot(&n1), *b = weird_graph_dot(&n2);
    cr_assert_str_eq(a, b, "two runs of one program give different files");
    cr_assert(strstr(a, "n0 [label=\"W \\\"1\\\"\\\\\\nnext: param"), "%s", a);
    cr_assert(strstr(a, "n1 [label=\"a\\\"b: exp"), "%s", a);
    cr_assert(strstr(a, "n0 -> n1;"), "%s", a);
    cr_assert_null(strstr(a, "0x"), "an address in the file: %s", a);
    /* Graphviz itself accepts it, where it is installed (CI installs it) */
    if (system("command -v dot > /dev/null 2>&1") == 0) {
        FILE *p = popen("dot -Tsvg > /dev/null 2>&1", "w");
        cr_assert_not_null(p);
        fputs(a, p);
        cr_assert_eq(pclose(p), 0, "dot rejected:\n%s", a);
    }
    free(a);
    free(b);
}

/* ------------------------------------------------- the allocator for layers */

Test(handles, ag_alloc_goes_through_the_hook)
{
    size_t before = ta.allocs;
    void *p = ag_alloc(100);
    cr_assert_not_null(p);
    cr_assert_eq(ta.allocs, before + 1);
    cr_assert_eq(ta.live_bytes, 100);
    ag_free(p, 100);
    ag_free(NULL, 0);
    cr_assert_null(ag_alloc(0));
    ta.fail_at = ta.attempts + 1;
    cr_assert_null(ag_alloc(8));
    assert_all_freed();
}

Test(handles, shape_strings_for_messages)
{
    char buf[32];
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(3, 40, 5)), *s = ag_scalar(AG_F64, 1);
    cr_assert_str_eq(ag_shape_str(x, buf, sizeof buf), "[3,40,5]");
    cr_assert_str_eq(ag_shape_str(s, buf, sizeof buf), "[]");
    cr_assert_str_eq(ag_shape_str(x, buf, 5), "[3,4", "cut to fit");
    ag_tensor_free(x);
    ag_tensor_free(s);
    assert_all_freed();
}
