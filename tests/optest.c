/* optest.c: the helpers of optest.h. */
#include "optest.h"

#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refcase.h"

/* ------------------------------------------------------------ tensors */

ag_tensor *ot_from(ag_dtype dt, const size_t *shape, size_t rank, const double *v)
{
    ag_tensor *x = ag_zeros(dt, shape, rank);
    cr_assert_not_null(x, "%s", ag_last_error());
    for (size_t i = 0; i < ag_tensor_numel(x); i++) {
        if (dt == AG_F32)
            ((float *)ag_data(x))[i] = (float)v[i];
        else
            ((double *)ag_data(x))[i] = v[i];
    }
    return x;
}

ag_tensor *ot_leaf(ag_dtype dt, const size_t *shape, size_t rank, const double *v)
{
    ag_tensor *x = ot_from(dt, shape, rank, v);
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

ag_tensor *ot_uniform(ag_rng *rng, ag_dtype dt, const size_t *shape, size_t rank, double lo, double hi,
                      bool grad)
{
    ag_tensor *x = ag_rand_uniform(dt, shape, rank, lo, hi, rng);
    cr_assert_not_null(x, "%s", ag_last_error());
    if (grad)
        cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

ag_tensor *ot_away_from_zero(ag_rng *rng, double gap, const size_t *shape, size_t rank)
{
    ag_tensor *x = ot_uniform(rng, AG_F64, shape, rank, -1, 1, false);
    double *d = ag_data(x);
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        d[i] += d[i] < 0 ? -gap : gap;
    return x;
}

/* ------------------------------------------------------------ assertions */

void ot_assert_error(const ag_tape *t, ag_status s, const char *part1, const char *part2)
{
    cr_assert_eq(ag_tape_status(t), s, "status %s, want %s: \"%s\"", ag_status_string(ag_tape_status(t)),
                 ag_status_string(s), ag_tape_error(t));
    cr_assert(strstr(ag_tape_error(t), part1) != NULL, "\"%s\" lacks \"%s\"", ag_tape_error(t), part1);
    if (part2)
        cr_assert(strstr(ag_tape_error(t), part2) != NULL, "\"%s\" lacks \"%s\"", ag_tape_error(t), part2);
}

void ot_assert_shape(const ag_tensor *y, const size_t *shape, size_t rank)
{
    cr_assert_not_null(y);
    cr_assert_eq(ag_tensor_rank(y), rank, "rank %zu, want %zu", ag_tensor_rank(y), rank);
    for (size_t d = 0; d < rank; d++)
        cr_assert_eq(ag_tensor_shape(y)[d], shape[d], "axis %zu: %zu, want %zu", d, ag_tensor_shape(y)[d],
                     shape[d]);
}

void ot_assert_values(const ag_tensor *y, const double *want, size_t n, double tol)
{
    cr_assert_not_null(y);
    cr_assert_eq(ag_tensor_numel(y), n, "%zu elements, want %zu", ag_tensor_numel(y), n);
    for (size_t i = 0; i < n; i++) {
        double got = ag_get(y, i);
        if (isnan(want[i]) || isinf(want[i]))
            cr_assert(got == want[i] || (isnan(got) && isnan(want[i])), "[%zu] = %.17g, want %g", i, got, want[i]);
        else
            cr_assert(fabs(got - want[i]) <= tol * (1 + fabs(want[i])), "[%zu] = %.17g, want %.17g", i, got,
                      want[i]);
    }
}

/* ------------------------------------------------------------ gradcheck */

/* fn, then every input used again after it: Σ y² + Σ_i Σ x_i². Those
 * later uses are backpropagated first, so a backward that assigns (=)
 * instead of accumulating (+=) into its input's gradient loses theirs. */
typedef struct {
    ag_fn fn;
    void *ctx;
    size_t n;
} fan_out;

static ag_tensor *fan_out_fn(ag_tape *t, ag_tensor *const *x, void *ctx)
{
    const fan_out *f = ctx;
    ag_tensor *y = f->fn(t, x, f->ctx);
    ag_tensor *s = ag_sum(t, ag_mul(t, y, y));
    for (size_t i = 0; i < f->n; i++)
        s = ag_add(t, s, ag_sum(t, ag_mul(t, x[i], x[i])));
    return s;
}

void ot_gradcheck_ok(const char *what, ag_fn fn, void *ctx, size_t n, ag_tensor *const *in)
{
    size_t numel = 0;
    for (size_t i = 0; i < n; i++)
        numel += ag_tensor_numel(in[i]);
    ag_gradcheck_report rep;
    ag_status s = ag_gradcheck(fn, ctx, n, in, 1e-6, 1e-6, 1e-6, &rep);
    cr_assert_eq(s, AG_OK, "%s: gradcheck returned %s: %s", what, ag_status_string(s), rep.message);
    cr_assert(rep.passed, "%s: input %zu element %zu: numeric %.12g analytic %.12g", what, rep.worst_input,
              rep.worst_index, rep.numeric, rep.analytic);
    cr_assert_eq(rep.checked, numel, "%s: checked %zu of %zu", what, rep.checked, numel);
}

void ot_check_and_free(const char *what, ag_fn fn, void *ctx, size_t n, ag_tensor **in)
{
    ot_gradcheck_ok(what, fn, ctx, n, in);
    char fanned[160];
    snprintf(fanned, sizeof fanned, "%s, with its inputs used again", what);
    ot_gradcheck_ok(fanned, fan_out_fn, &(fan_out){fn, ctx, n}, n, in);
    for (size_t i = 0; i < n; i++)
        ag_tensor_free(in[i]);
}

void ot_check_pair_and_free(const char *what, ag_fn fn, void *ctx, ag_tensor *a, ag_tensor *b)
{
    ag_tensor *in[2] = {a, b};
    ot_check_and_free(what, fn, ctx, b ? 2 : 1, in);
}

/* ------------------------------------------------------------ reference cases */

/* The parsed file at path (the caller frees it with ref_free). */
static ref_file read_reference(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t cap = 1 << 20, len = 0, got;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    while ((got = fread(text + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            text = realloc(text, cap *= 2);
            cr_assert_not_null(text);
        }
    }
    fclose(f);
    ref_file file;
    char err[256];
    bool ok = ref_parse(text, len, &file, err, sizeof err);
    free(text);
    cr_assert(ok, "%s: %s", path, err);
    return file;
}

/* The index in ops of the first op of c's steps found there, or -1. */
static int case_op(const ref_case *c, const char *const *ops, size_t n_ops)
{
    for (size_t k = 0; k < c->n; k++)
        for (size_t i = 0; c->lines[k].kind == REF_STEP && i < n_ops; i++)
            if (strcmp(c->lines[k].op, ops[i]) == 0)
                return (int)i;
    return -1;
}

size_t ot_run_reference(const char *path, const char *const *ops, size_t n_ops, bool each_op, ag_dtype dt,
                        double tol)
{
    ref_file file = read_reference(path);
    size_t *per_op = calloc(n_ops + 1, sizeof *per_op), ran = 0, failed = 0;
    cr_assert_not_null(per_op);
    for (size_t i = 0; i < file.n; i++) {
        int op = ops ? case_op(&file.cases[i], ops, n_ops) : 0;
        if (op < 0)
            continue;
        per_op[op]++;
        ran++;
        ref_result r = ref_run(&file.cases[i], dt, tol);
        failed += !r.passed;
        cr_expect(r.passed, "%s (%s): %s: got %.17g want %.17g", file.cases[i].name, ag_dtype_name(dt), r.what,
                  r.got, r.want);
    }
    ref_free(&file);
    for (size_t i = 0; each_op && i < n_ops; i++)
        cr_expect_gt(per_op[i], 0, "%s has no reference case", ops[i]);
    free(per_op);
    cr_assert_eq(failed, 0, "%s (%s): %zu of %zu reference cases failed", path, ag_dtype_name(dt), failed, ran);
    return ran;
}

/* ------------------------------------------------------------ recorded gradients */

static double largest_grad(size_t n, ag_tensor *const *x)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < ag_tensor_numel(x[i]); j++)
            scale = fmax(scale, fabs(ag_get_grad(x[i], j)));
    return scale;
}

void ot_assert_same_gradients(const char *what, size_t n, ag_tensor *const *x, ag_tensor *const *g, ot_match m,
                              double rtol)
{
    double scale = m == OT_TO_LARGEST ? largest_grad(n, x) : 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(ag_tensor_numel(g[i]), ag_tensor_numel(x[i]));
        for (size_t j = 0; j < ag_tensor_numel(x[i]); j++) {
            double want = ag_get_grad(x[i], j), got = ag_get(g[i], j);
            double base = m == OT_TO_LARGEST ? scale : fmax(fabs(got), fabs(want));
            if (m == OT_BITWISE)
                cr_assert(got == want || (isnan(got) && isnan(want)),
                          "%s: input %zu [%zu]: recorded %.17g, fused %.17g (not bitwise)", what, i, j, got, want);
            else
                cr_assert(got == want || fabs(got - want) <= rtol * base,
                          "%s: input %zu [%zu]: recorded %.17g, fused %.17g", what, i, j, got, want);
        }
    }
}

void ot_nudge(size_t n, ag_tensor *const *x, ag_tensor *const *v, double h)
{
    for (size_t i = 0; i < n; i++) {
        double *d = ag_data(x[i]);
        for (size_t j = 0; j < ag_tensor_numel(x[i]); j++)
            d[j] += h * ag_get(v[i], j);
    }
}
