/* rng.c: xoshiro256** seeded by splitmix64, and normals by Marsaglia's polar
 * method with a logarithm built from +, -, *, / only, so every machine with
 * IEEE doubles draws the same numbers (libm's log may differ in the last bit). */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void ag_rng_seed(ag_rng *rng, uint64_t seed)
{
    if (!rng)
        return;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
    rng->has_spare = false;
    rng->spare = 0;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t ag_rng_next(ag_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ag_rng_uniform(ag_rng *rng)
{
    return (double)(ag_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t ag_rng_below(ag_rng *rng, uint64_t n)
{
    if (n == 0)
        return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
    uint64_t x;
    do
        x = ag_rng_next(rng);
    while (x >= limit);
    return x % n;
}

/* ln x for x > 0: x = m·2^e with m in [1/√2, √2), ln m = 2 atanh(s),
 * s = (m-1)/(m+1), |s| < 0.172, summed until the terms vanish. */
static double portable_log(double x)
{
    int e;
    double m = frexp(x, &e); /* exact: m in [0.5, 1) */
    if (m < 0.70710678118654752) {
        m *= 2;
        e -= 1;
    }
    double s = (m - 1) / (m + 1), s2 = s * s, term = s, sum = 0;
    for (int k = 1; k < 60; k += 2) {
        sum += term / k;
        term *= s2;
    }
    return 2 * sum + e * 0.69314718055994530942;
}

double ag_rng_normal(ag_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = false;
        return rng->spare;
    }
    double u, v, s;
    do {
        u = 2 * ag_rng_uniform(rng) - 1;
        v = 2 * ag_rng_uniform(rng) - 1;
        s = u * u + v * v;
    } while (s >= 1 || s == 0);
    double f = sqrt(-2 * portable_log(s) / s); /* sqrt is exact in IEEE */
    rng->spare = v * f;
    rng->has_spare = true;
    return u * f;
}
