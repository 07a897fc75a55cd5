/* test_tensor.c: leaf tensors, accessors, printing and the RNG. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "alloc_suite.h"

ALLOC_SUITE(tensor)
TestSuite(rng);

/* ------------------------------------------------------------ creation */

static void assert_shape(const ag_tensor *x, size_t rank, const size_t *shape)
{
    cr_assert_not_null(x);
    cr_assert_eq(ag_tensor_rank(x), rank);
    size_t numel = 1;
    for (size_t i = 0; i < rank; i++) {
        cr_assert_eq(ag_tensor_shape(x)[i], shape[i], "axis %zu", i);
        numel *= shape[i];
    }
    cr_assert_eq(ag_tensor_numel(x), numel);
}

static void assert_all(const ag_tensor *x, double v)
{
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        cr_assert_eq(ag_get(x, i), v, "element %zu is %g, want %g", i, ag_get(x, i), v);
}

Test(tensor, zeros_ones_full_have_shape_and_values)
{
    const size_t s[] = {2, 3, 4};
    ag_tensor *z = ag_zeros(AG_F64, s, 3), *o = ag_ones(AG_F32, s, 2), *f = ag_full(AG_F64, s, 1, -2.5);
    assert_shape(z, 3, s);
    assert_shape(o, 2, s);
    assert_shape(f, 1, s);
    assert_all(z, 0.0);
    assert_all(o, 1.0);
    assert_all(f, -2.5);
    cr_assert_eq(ag_tensor_dtype(z), AG_F64);
    cr_assert_eq(ag_tensor_dtype(o), AG_F32);
    cr_assert_eq(((float *)ag_data(o))[5], 1.0f);
    ag_tensor_free(z);
    ag_tensor_free(o);
    ag_tensor_free(f);
    assert_all_freed();
}

Test(tensor, scalar_is_rank_zero_with_one_element)
{
    ag_tensor *s = ag_scalar(AG_F32, 0.25);
    cr_assert_not_null(s);
    cr_assert_eq(ag_tensor_rank(s), 0);
    cr_assert_eq(ag_tensor_numel(s), 1);
    cr_assert_eq(ag_item(s), 0.25);
    ag_tensor *z = ag_zeros(AG_F64, NULL, 0);
    cr_assert_eq(ag_tensor_numel(z), 1);
    cr_assert_eq(ag_item(z), 0.0);
    ag_tensor_free(s);
    ag_tensor_free(z);
    assert_all_freed();
}

Test(tensor, from_data_copies_the_values)
{
    double src[6] = {1, -2, 3.5, 4, 5, 6e-3};
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(2, 3), src);
    cr_assert_not_null(x);
    cr_assert_neq(ag_data(x), (void *)src);
    src[0] = 100; /* the tensor holds its own copy */
    double want[6] = {1, -2, 3.5, 4, 5, 6e-3};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(ag_get(x, i), want[i]);
    float f[3] = {1.5f, -0.25f, 3};
    ag_tensor *y = ag_from_data(AG_F32, AG_SHAPE(3), f);
    cr_assert_eq(ag_get(y, 1), -0.25);
    ag_tensor_free(x);
    ag_tensor_free(y);
    assert_all_freed();
}

Test(tensor, view_shares_caller_memory)
{
    double buf[4] = {1, 2, 3, 4};
    ag_tensor *v = ag_view(AG_F64, AG_SHAPE(2, 2), buf, NULL);
    cr_assert_not_null(v);
    cr_assert_eq(ag_data(v), (void *)buf);
    buf[3] = 40;
    cr_assert_eq(ag_get(v, 3), 40.0);
    ((double *)ag_data(v))[0] = -1;
    cr_assert_eq(buf[0], -1.0);
    cr_assert_null(ag_grad(v));
    ag_tensor_free(v);
    cr_assert_eq(buf[1], 2.0);
    assert_all_freed();
}

Test(tensor, rand_uniform_follows_the_rng_in_row_major_order)
{
    ag_rng a, b;
    ag_rng_seed(&a, 42);
    ag_rng_seed(&b, 42);
    ag_tensor *x = ag_rand_uniform(AG_F64, AG_SHAPE(3, 5), -2.0, 3.0, &a);
    assert_shape(x, 2, (size_t[]){3, 5});
    for (size_t i = 0; i < 15; i++) {
        double want = -2.0 + 5.0 * ag_rng_uniform(&b);
        cr_assert_eq(ag_get(x, i), want, "element %zu", i);
        cr_assert(ag_get(x, i) >= -2.0 && ag_get(x, i) < 3.0);
    }
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, rand_normal_follows_the_rng_in_row_major_order)
{
    ag_rng a, b;
    ag_rng_seed(&a, 7);
    ag_rng_seed(&b, 7);
    ag_tensor *x = ag_rand_normal(AG_F64, AG_SHAPE(7), 1.5, 0.5, &a);
    ag_tensor *y = ag_rand_normal(AG_F32, AG_SHAPE(2, 2), 0.0, 1.0, &a);
    for (size_t i = 0; i < 7; i++)
        cr_assert_eq(ag_get(x, i), 1.5 + 0.5 * ag_rng_normal(&b), "element %zu", i);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(ag_get(y, i), (double)(float)ag_rng_normal(&b), "f32 element %zu", i);
    ag_tensor_free(x);
    ag_tensor_free(y);
    assert_all_freed();
}

static size_t rank_of(const size_t *shape, size_t rank)
{
    (void)shape;
    return rank;
}

Test(tensor, shape_macro_expands_to_shape_and_rank)
{
    cr_assert_eq(rank_of(AG_SHAPE(3, 4)), 2);
    cr_assert_eq(rank_of(AG_SHAPE(2, 3, 4, 5)), 4);
    cr_assert_eq(rank_of(AG_SHAPE(9)), 1);
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(3, 4));
    assert_shape(x, 2, (size_t[]){3, 4});
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, ranks_zero_to_eight_work_and_nine_fails)
{
    size_t shape[AG_MAX_RANK + 1];
    for (size_t i = 0; i <= AG_MAX_RANK; i++)
        shape[i] = 2;
    for (size_t r = 0; r <= AG_MAX_RANK; r++) {
        ag_tensor *x = ag_full(AG_F64, shape, r, 3.0);
        cr_assert_not_null(x, "rank %zu", r);
        cr_assert_eq(ag_tensor_rank(x), r);
        cr_assert_eq(ag_tensor_numel(x), (size_t)1 << r);
        cr_assert_eq(ag_get(x, ((size_t)1 << r) - 1), 3.0);
        ag_tensor_free(x);
    }
    cr_assert_null(ag_zeros(AG_F64, shape, AG_MAX_RANK + 1));
    assert_all_freed();
}

Test(tensor, zero_sized_axis_gives_empty_tensor)
{
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(3, 0));
    cr_assert_not_null(x);
    cr_assert_eq(ag_tensor_numel(x), 0);
    cr_assert(isnan(ag_get(x, 0)));
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ accessors */

Test(tensor, accessors_accept_null)
{
    cr_assert_eq(ag_tensor_rank(NULL), 0);
    cr_assert_null(ag_tensor_shape(NULL));
    cr_assert_eq(ag_tensor_numel(NULL), 0);
    cr_assert_null(ag_data(NULL));
    cr_assert_null(ag_grad(NULL));
    cr_assert(isnan(ag_get(NULL, 0)));
    cr_assert(isnan(ag_get_grad(NULL, 0)));
    cr_assert(isnan(ag_item(NULL)));
    cr_assert_not(ag_requires_grad(NULL));
    cr_assert_eq(ag_set_requires_grad(NULL, true), AG_ERR_NULL);
    cr_assert_str_eq(ag_tensor_name(NULL), "");
    cr_assert_eq(ag_tensor_print(NULL, stdout), AG_ERR_NULL);
    ag_zero_grad(NULL);
    ag_tensor_set_name(NULL, "x");
    ag_tensor_free(NULL);
    assert_all_freed();
}

Test(tensor, get_out_of_range_and_missing_grad_are_nan)
{
    ag_tensor *x = ag_ones(AG_F64, AG_SHAPE(3));
    cr_assert(isnan(ag_get(x, 3)));
    cr_assert(isnan(ag_get_grad(x, 0)));
    cr_assert_null(ag_grad(x));
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, requires_grad_allocates_a_zero_grad)
{
    ag_tensor *x = ag_full(AG_F32, AG_SHAPE(2, 2), 5.0);
    cr_assert_not(ag_requires_grad(x));
    cr_assert_eq(ag_set_requires_grad(x, true), AG_OK);
    cr_assert(ag_requires_grad(x));
    cr_assert_not_null(ag_grad(x));
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(ag_get_grad(x, i), 0.0);
    ((float *)ag_grad(x))[2] = 3;
    cr_assert_eq(ag_get_grad(x, 2), 3.0);
    ag_zero_grad(x);
    cr_assert_eq(ag_get_grad(x, 2), 0.0);
    cr_assert_eq(ag_set_requires_grad(x, false), AG_OK);
    cr_assert_not(ag_requires_grad(x));
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, set_name_copies_and_truncates_to_31_bytes)
{
    ag_tensor *x = ag_zeros(AG_F64, NULL, 0);
    cr_assert_str_eq(ag_tensor_name(x), "");
    char name[8] = "weights";
    ag_tensor_set_name(x, name);
    name[0] = 'X';
    cr_assert_str_eq(ag_tensor_name(x), "weights");
    const char *longname = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF";
    ag_tensor_set_name(x, longname);
    cr_assert_eq(strlen(ag_tensor_name(x)), 31);
    cr_assert_eq(strncmp(ag_tensor_name(x), longname, 31), 0);
    ag_tensor_set_name(x, NULL);
    cr_assert_str_eq(ag_tensor_name(x), "");
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, dtype_and_status_names)
{
    cr_assert_str_eq(ag_dtype_name(AG_F32), "f32");
    cr_assert_str_eq(ag_dtype_name(AG_F64), "f64");
    cr_assert_str_eq(ag_dtype_name((ag_dtype)7), "?");
    cr_assert_eq(ag_dtype_size(AG_F32), 4);
    cr_assert_eq(ag_dtype_size(AG_F64), 8);
    cr_assert_eq(ag_dtype_size((ag_dtype)7), 0);
    cr_assert_str_eq(ag_status_string(AG_OK), "ok");
    for (int s = AG_ERR_NULL; s <= AG_ERR_NUMERIC; s++) {
        const char *m = ag_status_string((ag_status)s);
        cr_assert(m && *m && strcmp(m, "ok") != 0, "status %d", s);
        for (int u = AG_OK; u < s; u++)
            cr_assert_str_neq(m, ag_status_string((ag_status)u));
    }
    assert_all_freed();
}

/* ------------------------------------------------------------ printing */

static char *print_to_string(const ag_tensor *x)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ag_tensor_print(x, f), AG_OK);
    fclose(f);
    return buf;
}

static void strip_space(char *s)
{
    char *d = s;
    for (; *s; s++)
        if (*s != ' ' && *s != '\n' && *s != '\t')
            *d++ = *s;
    *d = '\0';
}

Test(tensor, print_shows_shape_dtype_and_nested_values)
{
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(2, 3), (double[]){1, 2.5, -3, 4, 5, 6});
    char *s = print_to_string(x);
    cr_assert_eq(s[strlen(s) - 1], '\n');
    strip_space(s);
    cr_assert_str_eq(s, "tensor[2,3]f64[[1,2.5,-3],[4,5,6]]");
    free(s);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, print_shows_name_and_rank_zero)
{
    ag_tensor *x = ag_scalar(AG_F32, -0.5);
    ag_tensor_set_name(x, "bias");
    char *s = print_to_string(x);
    cr_assert(strstr(s, "bias") != NULL, "%s", s);
    strip_space(s);
    cr_assert_str_eq(s, "tensorbias[]f32-0.5");
    free(s);
    ag_tensor_free(x);
    assert_all_freed();
}

Test(tensor, print_elides_long_axes)
{
    double v[100];
    for (int i = 0; i < 100; i++)
        v[i] = i;
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(100), v);
    char *s = print_to_string(x);
    cr_assert(strstr(s, "...") != NULL, "%s", s);
    cr_assert(strstr(s, " 99]") != NULL, "%s", s);
    cr_assert(strstr(s, " 50,") == NULL, "%s", s);
    cr_assert(strlen(s) < 200);
    free(s);
    ag_tensor_free(x);
    assert_all_freed();
}

/* ------------------------------------------------------------ rng
 * An independent xoshiro256** seeded by splitmix64, written from Vigna's
 * published reference code (prng.di.unimi.it). */

static uint64_t ref_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t ref_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t ref_xoshiro(uint64_t s[4])
{
    const uint64_t result = ref_rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ref_rotl(s[3], 45);
    return result;
}

Test(rng, splitmix64_reference_matches_published_value)
{
    uint64_t st = 0; /* first output of splitmix64 from state 0 */
    cr_assert_eq(ref_splitmix64(&st), UINT64_C(0xE220A8397B1DCDAF));
}

Test(rng, next_matches_independent_xoshiro256starstar)
{
    const uint64_t seeds[] = {0, 1, 42, UINT64_C(0xDEADBEEFCAFEF00D)};
    for (size_t k = 0; k < 4; k++) {
        uint64_t sm = seeds[k], s[4];
        for (int i = 0; i < 4; i++)
            s[i] = ref_splitmix64(&sm);
        ag_rng rng;
        ag_rng_seed(&rng, seeds[k]);
        for (int i = 0; i < 1000; i++)
            cr_assert_eq(ag_rng_next(&rng), ref_xoshiro(s), "seed %zu draw %d", k, i);
    }
}

Test(rng, same_seed_same_sequence_different_seed_differs)
{
    ag_rng a, b, c;
    ag_rng_seed(&a, 123);
    ag_rng_seed(&b, 123);
    ag_rng_seed(&c, 124);
    size_t same_c = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = ag_rng_next(&a);
        cr_assert_eq(x, ag_rng_next(&b));
        same_c += x == ag_rng_next(&c);
    }
    cr_assert_eq(same_c, 0);
    ag_rng_seed(&a, 5);
    ag_rng_seed(&b, 5);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(ag_rng_normal(&a), ag_rng_normal(&b));
}

Test(rng, uniform_is_top_53_bits_in_unit_interval)
{
    ag_rng a, b;
    ag_rng_seed(&a, 9);
    ag_rng_seed(&b, 9);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = ag_rng_uniform(&a);
        cr_assert(u >= 0.0 && u < 1.0, "draw %d = %.17g", i, u);
        cr_assert_eq(u, (double)(ag_rng_next(&b) >> 11) / 9007199254740992.0);
        sum += u;
    }
    cr_assert(fabs(sum / 100000 - 0.5) < 0.01, "mean %g", sum / 100000);
}

/* Marsaglia's polar method with libm's log: the engine's portable log may
 * differ from libm in the last bits only. */
static double ref_normal(uint64_t s[4], double *spare, bool *has_spare)
{
    if (*has_spare) {
        *has_spare = false;
        return *spare;
    }
    double u, v, q;
    do {
        u = 2 * ((double)(ref_xoshiro(s) >> 11) / 9007199254740992.0) - 1;
        v = 2 * ((double)(ref_xoshiro(s) >> 11) / 9007199254740992.0) - 1;
        q = u * u + v * v;
    } while (q >= 1 || q == 0);
    double f = sqrt(-2 * log(q) / q);
    *spare = v * f;
    *has_spare = true;
    return u * f;
}

Test(rng, normal_matches_independent_polar_method)
{
    uint64_t sm = 2024, s[4];
    for (int i = 0; i < 4; i++)
        s[i] = ref_splitmix64(&sm);
    double spare = 0;
    bool has = false;
    ag_rng rng;
    ag_rng_seed(&rng, 2024);
    for (int i = 0; i < 10000; i++) {
        double want = ref_normal(s, &spare, &has), got = ag_rng_normal(&rng);
        cr_assert(fabs(got - want) <= 1e-12 * (1 + fabs(want)), "draw %d: %.17g vs %.17g", i, got, want);
    }
}

Test(rng, normal_moments_of_100k_draws)
{
    ag_rng rng;
    ag_rng_seed(&rng, 31337);
    const int n = 100000;
    double sum = 0, sq = 0, s4 = 0;
    for (int i = 0; i < n; i++) {
        double z = ag_rng_normal(&rng);
        cr_assert(isfinite(z));
        sum += z;
        sq += z * z;
        s4 += z * z * z * z;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    cr_assert(fabs(mean) < 0.015, "mean %g", mean); /* ~5 standard errors */
    cr_assert(fabs(var - 1) < 0.025, "variance %g", var);
    cr_assert(fabs(s4 / n - 3) < 0.15, "fourth moment %g", s4 / n);
}

Test(rng, below_stays_in_range_and_covers_it)
{
    ag_rng rng;
    ag_rng_seed(&rng, 77);
    cr_assert_eq(ag_rng_below(&rng, 0), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(ag_rng_below(&rng, 1), 0);
    size_t hits[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint64_t k = ag_rng_below(&rng, 7);
        cr_assert_lt(k, 7);
        hits[k]++;
    }
    for (int k = 0; k < 7; k++)
        cr_assert(hits[k] > 850 && hits[k] < 1150, "value %d drawn %zu times", k, hits[k]);
    const uint64_t big = (UINT64_C(1) << 63) + 1;
    for (int i = 0; i < 1000; i++)
        cr_assert_lt(ag_rng_below(&rng, big), big);
}
