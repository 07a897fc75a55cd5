/* fuzz_api: the input bytes are a program that drives the public autograd
 * API: leaf tensors of random dtype and shape (ranks 0..8 and the invalid
 * 9, sizes mostly 0..5, some up to 128 (at most 16384 elements), and now
 * and then a huge dimension that must overflow or fail cleanly), sometimes
 * NULL, sometimes shaped after a tensor already there (the same shape, axes
 * set to 1 or dropped, the last two swapped, batch axes put in front) so
 * that broadcasts and products fit; index tensors for index_select, gather
 * and the class losses (mostly whole numbers in range, now and then
 * negative, past the end, fractional, NaN); leaf views (ag_leaf_view) of
 * leaves, fitting or not. Then every op of autograd.h, both op sets, with
 * random operands, axes (mostly valid ones), permutations, axis lists,
 * target shapes, ranges and scalars (NaN and Inf too), on two tapes;
 * backward with and without a seed, ag_gradients with and without
 * AG_CREATE_GRAPH (so gradients enter further ops and are differentiated
 * again), ag_hvp and ag_hessian, retain_grad, recording off, checked mode,
 * threads, long op chains, gradcheck and gradgradcheck of a small random
 * function on tiny f64 inputs, allclose, printing and DOT export.
 *
 * Handle misuse, in any order: leaves freed (ag_tensor_free) while a tape
 * uses them, and given to ops, backward, ag_gradients, ag_hvp,
 * ag_tape_check_input and ag_leaf_view afterwards; tapes reset while their
 * results are kept, and the results given to either tape one reset later
 * or several; results of the other tape; views whose base was freed. The
 * first byte can make the Nth allocation fail; the allocator also caps
 * live memory at 2 MiB.
 *
 * Checked with __builtin_trap (FZ_CHECK), so libFuzzer saves the input:
 *  - an op returns non-NULL exactly when its tape's status is AG_OK; a NULL
 *    comes with a non-empty message; once a tape is in error, ops return
 *    NULL and the first error (status and message) stays;
 *  - a result has rank <= 8, numel = the product of its shape, a valid
 *    dtype, the shape the op's documented rule gives, requires grad exactly
 *    when it was recorded (an input requires grad, recording on, not
 *    detach, argmax or argmin), one record more on the tape exactly then;
 *  - an op whose arguments the documented rules accept succeeds unless
 *    memory runs out (or checked mode sees a NaN/Inf); one they reject
 *    fails;
 *  - the handle rules (autograd.h, ag_tape_reset, ag_tensor_free): a
 *    handle one reset old is refused with AG_ERR_STATE, "stale handle",
 *    by ops, backward, ag_gradients, ag_hvp and ag_tape_check_input; a
 *    freed leaf that a tape still holds with "was freed"; a result of the
 *    other tape with "made on another tape"; NULL with AG_ERR_NULL; the
 *    first bad argument decides. A handle two or more resets old may read
 *    as a newer result at its address (documented): then nothing is
 *    asserted but that nothing crashes and the sanitizers stay quiet;
 *  - binary ops, maximum, minimum, where, clamp, transpose, permute,
 *    expand, slice, concat, reshape, index_select, gather, cast, detach
 *    and dropout when not training give the same values as a plain
 *    reference loop (bitwise);
 *  - backward and ag_gradients return the tape's status; grads are
 *    readable over numel; ag_gradients' results have their inputs' shapes
 *    and dtypes and leave every leaf's own grad untouched; with
 *    AG_CREATE_GRAPH they agree with the fused ones where all is finite,
 *    and every op has a recorded backward (none may be missing);
 *  - gradcheck and gradgradcheck restore their inputs' values, grads and
 *    requires_grad, and pass on fresh inputs through ops that are smooth
 *    everywhere (so a wrong rule for some shape or broadcast shows);
 *  - leaf constructors and ag_leaf_view return NULL exactly for invalid
 *    arguments (or when memory runs out), and describe the shape they were
 *    given; a view shares its base's data and grad from the offset on;
 *  - at the end every allocation of the engine has been freed.
 *
 * Known engine bugs, each with its reproducer in fuzz/corpus/api: the calls
 * that meet them are not made (or their outcome not asserted) unless
 * FUZZ_API_STRICT=1, when each reproducer fails. Drop the exemption when
 * the engine is fixed.
 *  - regress-stale-two-resets-reads-data: a handle two resets old whose
 *    header now lies inside a newer result's data (not at a result's
 *    header) is read as a leaf made of those bytes: UBSan invalid bool in
 *    take() (tape.c); a plain build dereferences garbage. Fixed for the
 *    tape that made the handle (an address in its own arenas is never
 *    taken for a leaf; the reproducer passes), open when the handle is
 *    given to another tape;
 * Fixed since, their inputs kept as regressions: regress-hvp-stale-input
 * (ag_hvp read inputs[i] before checking its handle),
 * regress-gradients-repeated-leaf (a leaf listed twice got zeros the second
 * time), regress-hvp-mixed-dtypes, regress-create-graph-freed-leaf (a
 * recorded backward refused a freed leaf its tape holds),
 * regress-gradgradcheck-empty-input (memset of a NULL buffer),
 * regress-maximum-nan-recorded-vs-fused (the recorded gradient of
 * maximum(NaN, NaN) was 0, the fused one, as PyTorch's, the whole gradient
 * to each side). */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"

#include <limits.h>
#include <math.h>

#define MEM_LIMIT (2u << 20)
#define MAX_NUMEL 16384 /* per leaf: [128, 128] reaches the packed, threaded GEMM */
#define MAX_LEAVES 64
#define POOL 32
#define STALE 24
#define MAX_STEPS 300
#define GC_MAX_OPS 6

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *devnull;
static bool trace; /* FUZZ_API_TRACE=1: each step on stderr, to read a reproducer */
/* FUZZ_API_STRICT=1: also what the engine is known to get wrong today (see
 * known_bug below and the regress-* inputs named there); by default those
 * calls are not made, so that a run finds what is new. */
static bool strict;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_mem_install(MEM_LIMIT);
    devnull = fopen("/dev/null", "w");
    trace = getenv("FUZZ_API_TRACE") != NULL;
    strict = getenv("FUZZ_API_STRICT") != NULL;
    return 0;
}

#define TRACE(...) (trace ? (void)fprintf(stderr, __VA_ARGS__) : (void)0)

/* ------------------------------------------------------------ input */

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static uint8_t byte(input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint64_t u64(input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | byte(in);
    return v;
}

static size_t dim(input *in)
{
    static const size_t huge[] = {SIZE_MAX / 3, SIZE_MAX, SIZE_MAX / 2 + 1, (size_t)1 << 32,
                                  (size_t)1 << 40, SIZE_MAX / 8};
    static const size_t mid[] = {6, 7, 8, 9, 13, 16, 17, 31, 64, 128};
    uint8_t b = byte(in);
    return b < 200 ? b % 6 : b < 244 ? mid[b % 10] : huge[b % 6];
}

static double scalar(input *in)
{
    uint8_t b = byte(in);
    switch (b % 16) {
    case 0: return 0;
    case 1: return 1;
    case 2: return -1;
    case 3: return 0.5;
    case 4: return 2;
    case 5: return 3;
    case 6: return -0.5;
    case 7: return NAN;
    case 8: return INFINITY;
    case 9: return -INFINITY;
    case 10: return 1e308;
    case 11: return -0.0;
    case 12: return 1e-310;
    case 13: {
        uint64_t u = u64(in);
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    case 14: return (double)(byte(in) % 10) - 3;
    default: return (int8_t)byte(in) / 16.0;
    }
}

/* Any axis: -9..9 or an extreme. */
static int axis(input *in)
{
    uint8_t b = byte(in);
    if (b >= 250)
        return b & 1 ? INT_MAX : INT_MIN;
    return (int)(b % 19) - 9; /* -9..9 */
}

static size_t range_end(input *in)
{
    uint8_t b = byte(in);
    if (b >= 248)
        return b & 1 ? SIZE_MAX : SIZE_MAX / 3;
    return b % 7;
}

/* ------------------------------------------------------------ state
 * Leaves stay in `leaves` for the whole input (their caller memory too),
 * marked freed once ag_tensor_free was called and dead once nothing is
 * known to hold them (then the engine may have released them and the
 * handle is never touched again). Op results are in the pool while their
 * generation lasts, then in the stale ring until their tape is freed. */

typedef struct {
    ag_tensor *x;
    void *buf, *gbuf;  /* caller memory of an ag_view */
    int base;          /* ag_leaf_view: index of the base leaf; else -1 */
    bool freed, dead;
    uint64_t held[2];  /* epoch of tape k in which a successful call on k took it */
} leaf;

typedef struct {
    ag_tensor *x;
    int tape;        /* -1: a leaf; else the tape that made it */
    int leaf;        /* index in leaves (tape < 0) */
    uint64_t epoch;  /* the tape's generation when made */
    uint64_t resets; /* how many resets the tape had then */
} slot;

typedef struct {
    ag_tape *t[2];
    bool checked[2], recording[2];
    uint64_t epoch[2], resets[2], epochs;
    leaf leaves[MAX_LEAVES];
    size_t n_leaves;
    slot pool[POOL];
    size_t n_pool, next;
    slot stale[STALE];
    size_t n_stale, next_stale;
    ag_rng rng;
} state;

/* Pools x (a result of tape k, or with k < 0 leaf number li). */
static slot push_slot(state *s, ag_tensor *x, int k, int li)
{
    slot sl = {x, k, li, k >= 0 ? s->epoch[k] : 0, k >= 0 ? s->resets[k] : 0};
    if (!x)
        return sl;
    if (s->n_pool < POOL) {
        s->pool[s->n_pool++] = sl;
    } else {
        s->pool[s->next] = sl;
        s->next = (s->next + 1) % POOL;
    }
    return sl;
}

static void push(state *s, ag_tensor *x, int k) { push_slot(s, x, k, -1); }

static void keep_stale(state *s, slot sl)
{
    if (s->n_stale < STALE) {
        s->stale[s->n_stale++] = sl;
    } else {
        s->stale[s->next_stale] = sl;
        s->next_stale = (s->next_stale + 1) % STALE;
    }
}

/* A leaf is known alive while the caller holds it, a tape took it in its
 * current generation, or a live view holds it as its base. */
static bool held(const state *s, const leaf *l)
{
    for (int k = 0; k < 2; k++)
        if (s->t[k] && l->held[k] == s->epoch[k])
            return true;
    return false;
}

static bool has_live_view(const state *s, size_t i)
{
    for (size_t j = 0; j < s->n_leaves; j++)
        if (s->leaves[j].base == (int)i && !s->leaves[j].dead)
            return true;
    return false;
}

/* Marks the leaves nothing is known to hold any more as dead and drops
 * them from the pool. */
static void prune(state *s)
{
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < s->n_leaves; i++) {
            leaf *l = &s->leaves[i];
            if (!l->dead && l->freed && !held(s, l) && !has_live_view(s, i)) {
                l->dead = true;
                changed = true;
            }
        }
    }
    size_t j = 0;
    for (size_t i = 0; i < s->n_pool; i++)
        if (s->pool[i].tape >= 0 || !s->leaves[s->pool[i].leaf].dead)
            s->pool[j++] = s->pool[i];
    s->n_pool = j;
    s->next = 0;
}

/* Tape k was reset: its results move to the stale ring. */
static void tape_was_reset(state *s, int k)
{
    TRACE("reset tape %d\n", k);
    size_t j = 0;
    for (size_t i = 0; i < s->n_pool; i++) {
        if (s->pool[i].tape == k)
            keep_stale(s, s->pool[i]);
        else
            s->pool[j++] = s->pool[i];
    }
    s->n_pool = j;
    s->next = 0;
    s->resets[k]++;
    s->epoch[k] = ++s->epochs;
    prune(s);
}

/* Tape k was freed: its results are gone for good. */
static void tape_was_freed(state *s, int k)
{
    TRACE("tape %d freed and made anew\n", k);
    size_t j = 0;
    for (size_t i = 0; i < s->n_pool; i++)
        if (s->pool[i].tape != k)
            s->pool[j++] = s->pool[i];
    s->n_pool = j;
    s->next = 0;
    j = 0;
    for (size_t i = 0; i < s->n_stale; i++)
        if (s->stale[i].tape != k)
            s->stale[j++] = s->stale[i];
    s->n_stale = j;
    s->next_stale = 0;
    s->resets[k] = 0;
    s->epoch[k] = ++s->epochs;
    prune(s);
}

/* What a handle is to tape k. */
typedef enum { H_OK, H_NULL, H_FOREIGN, H_FREED, H_STALE1, H_STALE_OLD } hclass;

static hclass classify(const state *s, int k, const slot *x)
{
    if (!x->x)
        return H_NULL;
    if (x->tape < 0)
        return s->leaves[x->leaf].freed ? H_FREED : H_OK;
    int j = x->tape;
    if (x->epoch == s->epoch[j])
        return j == k ? H_OK : H_FOREIGN;
    return s->resets[j] - x->resets == 1 ? H_STALE1 : H_STALE_OLD;
}

/* Whether the fuzzer itself may read through the handle. */
static bool readable(const state *s, const slot *x)
{
    return !x->x || x->tape < 0 || x->epoch == s->epoch[x->tape];
}

static slot none(void) { return (slot){NULL, -1, -1, 0, 0}; }

/* A handle from the pool, NULL, or (with stale true) an old one. */
static slot pick_from(state *s, input *in, bool stale)
{
    uint8_t b = byte(in);
    if (b % 16 == 15)
        return none();
    if (stale && b % 16 == 14 && s->n_stale) {
        const slot *x = &s->stale[(b >> 4) % s->n_stale];
        /* Known bug (regress-stale-two-resets-reads-data): a handle two
         * resets old whose header now lies inside a newer result's data of
         * another tape is read as a leaf made of those bytes. */
        if (strict || s->resets[x->tape] - x->resets == 1)
            return *x;
    }
    if (s->n_pool == 0)
        return none();
    return s->pool[b % s->n_pool];
}

static slot pick(state *s, input *in) { return pick_from(s, in, true); }
static slot pick_readable(state *s, input *in) { return pick_from(s, in, false); }

/* Mostly a tensor that requires grad (and, with scalar, has one element),
 * so that gradients have something to do. */
static slot pick_grad(state *s, input *in, bool scalar_only)
{
    uint8_t b = byte(in);
    if (b % 4 != 0 && s->n_pool) {
        for (size_t i = 0; i < s->n_pool; i++) {
            const slot *x = &s->pool[(b / 4 + i) % s->n_pool];
            if (ag_requires_grad(x->x) && (!scalar_only || ag_tensor_numel(x->x) == 1))
                return *x;
        }
    }
    return pick(s, in);
}

/* A successful call on tape k took these leaves: k holds them until its
 * next reset or free. */
static void mark_held(state *s, int k, const slot *in, int n)
{
    for (int i = 0; i < n; i++)
        if (in[i].x && in[i].tape < 0)
            s->leaves[in[i].leaf].held[k] = s->epoch[k];
}

/* ------------------------------------------------------------ shapes */

typedef struct {
    size_t rank, shape[AG_MAX_RANK + 1];
} shp;

static bool numel_of(const size_t *shape, size_t rank, size_t *out)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++) {
        if (shape[i] != 0 && n > SIZE_MAX / shape[i])
            return false;
        n *= shape[i];
    }
    *out = n;
    return true;
}

static shp shape_of(const ag_tensor *x)
{
    shp s = {.rank = ag_tensor_rank(x)};
    if (s.rank)
        memcpy(s.shape, ag_tensor_shape(x), s.rank * sizeof(size_t));
    return s;
}

static bool has_giant(const size_t *shape, size_t rank)
{
    for (size_t i = 0; i < rank; i++)
        if (shape[i] > 128)
            return true;
    return false;
}

/* Shrinks a shape of small dims until numel <= MAX_NUMEL. */
static void cap_shape(size_t *shape, size_t rank)
{
    size_t n;
    for (size_t d = rank; d-- > 0;) {
        if (numel_of(shape, rank, &n) && n <= MAX_NUMEL)
            return;
        if (shape[d] > 1)
            shape[d] = 1;
    }
}

/* A shape read from the input: rank 0..9 (mostly small), dims 0..5 or huge. */
static shp read_shape(input *in)
{
    shp s;
    uint8_t r = byte(in);
    s.rank = r < 200 ? r % 4 : r % 10;
    for (size_t i = 0; i < s.rank; i++)
        s.shape[i] = dim(in);
    if (!has_giant(s.shape, s.rank))
        cap_shape(s.shape, s.rank);
    return s;
}

/* A shape made from x's so that it fits x in an op: the same, some axes
 * set to 1 (broadcast), leading axes dropped, the last two made a
 * product's partner, batch axes put in front, one axis changed. */
static shp like_shape(input *in, const ag_tensor *x)
{
    shp s = shape_of(x);
    uint8_t b = byte(in);
    switch (b % 6) {
    case 0:
        break;
    case 1: {
        uint8_t m = byte(in);
        for (size_t d = 0; d < s.rank && d < 8; d++)
            if (m & (1u << d))
                s.shape[d] = 1;
        break;
    }
    case 2: {
        size_t drop = s.rank ? byte(in) % (s.rank + 1) : 0;
        memmove(s.shape, s.shape + drop, (s.rank - drop) * sizeof(size_t));
        s.rank -= drop;
        break;
    }
    case 3: /* x [.., m, k] -> [.., k, n]; x [k] -> [k, n] */
        if (s.rank >= 2) {
            s.shape[s.rank - 2] = s.shape[s.rank - 1];
            s.shape[s.rank - 1] = dim(in);
        } else if (s.rank == 1) {
            s.shape[1] = dim(in);
            s.rank = 2;
        }
        break;
    case 4: {
        size_t add = 1 + byte(in) % 2;
        if (s.rank + add > AG_MAX_RANK + 1)
            add = AG_MAX_RANK + 1 - s.rank;
        memmove(s.shape + add, s.shape, s.rank * sizeof(size_t));
        for (size_t d = 0; d < add; d++)
            s.shape[d] = dim(in);
        s.rank += add;
        break;
    }
    default:
        if (s.rank)
            s.shape[byte(in) % s.rank] = dim(in);
        break;
    }
    if (!has_giant(s.shape, s.rank))
        cap_shape(s.shape, s.rank);
    return s;
}

/* ------------------------------------------------------------ leaves */

static double element(const ag_tensor *x, size_t i) { return ag_get(x, i); }

/* Reads every element (and grad) so ASan sees a buffer shorter than numel. */
static void touch(const ag_tensor *x)
{
    volatile double sink = 0;
    size_t n = ag_tensor_numel(x);
    FZ_CHECK(n == 0 || ag_data(x) != NULL);
    for (size_t i = 0; i < n; i++)
        sink += element(x, i);
    if (ag_grad(x))
        for (size_t i = 0; i < n; i++)
            sink += ag_get_grad(x, i);
    (void)sink;
}

static void check_described(const ag_tensor *x, ag_dtype dt, const size_t *shape, size_t rank,
                            bool rg)
{
    size_t n;
    FZ_CHECK(ag_tensor_dtype(x) == dt);
    FZ_CHECK(ag_tensor_rank(x) == rank);
    FZ_CHECK(rank == 0 || memcmp(ag_tensor_shape(x), shape, rank * sizeof *shape) == 0);
    FZ_CHECK(numel_of(shape, rank, &n) && ag_tensor_numel(x) == n);
    FZ_CHECK(ag_requires_grad(x) == rg);
    FZ_CHECK(ag_tensor_name(x)[0] == '\0');
}

/* Fills numel elements with a short pattern of values from the input. */
static void *fill_values(input *in, ag_dtype dt, size_t numel)
{
    size_t es = dt == AG_F64 ? 8 : 4;
    unsigned char *buf = malloc(numel ? numel * es : 1);
    double pat[8];
    size_t np = 1 + byte(in) % 8;
    for (size_t i = 0; i < np; i++) {
        uint8_t b = byte(in);
        pat[i] = b < 224 ? (int8_t)b / 8.0 : scalar(in);
    }
    for (size_t i = 0; i < numel; i++) {
        if (dt == AG_F64)
            ((double *)buf)[i] = pat[i % np];
        else
            ((float *)buf)[i] = (float)pat[i % np];
    }
    return buf;
}

/* Registers a new leaf (and the caller memory it wraps) and pools it. */
static void add_leaf(state *s, ag_tensor *x, void *buf, void *gbuf, int base)
{
    size_t li = s->n_leaves++;
    TRACE("leaf %zu: %p, %s, rank %zu, numel %zu, first %g%s\n", li, (void *)x,
          ag_dtype_name(ag_tensor_dtype(x)), ag_tensor_rank(x), ag_tensor_numel(x), ag_get(x, 0),
          base >= 0 ? ", a view" : "");
    s->leaves[li] = (leaf){.x = x, .buf = buf, .gbuf = gbuf, .base = base};
    push_slot(s, x, -1, (int)li);
}

/* Sets requires_grad and a name as the input says. */
static void leaf_extras(input *in, ag_tensor *x)
{
    uint8_t g = byte(in);
    if (g & 1) {
        ag_status st = ag_set_requires_grad(x, true);
        FZ_CHECK(st == AG_OK || st == AG_ERR_NOMEM);
        if (st == AG_OK)
            FZ_CHECK(ag_requires_grad(x));
        if (st == AG_OK && ag_tensor_numel(x))
            FZ_CHECK(ag_grad(x) != NULL);
    }
    if (g & 2) {
        static const char *names[] = {"W", "bias", "a_name_that_is_longer_than_31_bytes_for_sure", ""};
        const char *nm = g & 4 ? NULL : names[(g >> 3) % 4];
        ag_tensor_set_name(x, nm);
        size_t len = strlen(ag_tensor_name(x));
        FZ_CHECK(len <= 31);
        FZ_CHECK(nm ? strncmp(ag_tensor_name(x), nm, len) == 0 && (len == strlen(nm) || len == 31)
                    : len == 0);
    }
}

/* Index values for a range of n: mostly whole numbers in [0, n), with now
 * and then one that is not (negative, n, fractional, NaN, huge). */
static void *index_values(input *in, ag_dtype dt, size_t numel, size_t n)
{
    size_t es = dt == AG_F64 ? 8 : 4;
    unsigned char *buf = malloc(numel ? numel * es : 1);
    uint8_t a = byte(in), c = byte(in), bad = byte(in);
    size_t at = numel ? byte(in) % numel : 0;
    static const double wrong[] = {-1, 0.5, NAN, INFINITY, 1e20, -0.0, 4294967296.0, -1e-300};
    for (size_t i = 0; i < numel; i++) {
        double v = n ? (double)((a + i * c) % n) : (double)(a % 3);
        if (bad % 4 == 0 && i == at) {
            size_t w = (bad / 4) % 10;
            v = w == 0 ? (double)n : w == 1 ? n - 0.5 : wrong[w - 2];
        }
        if (dt == AG_F64)
            ((double *)buf)[i] = v;
        else
            ((float *)buf)[i] = (float)v;
    }
    return buf;
}

/* Indices for a tensor of the pool: [k] for index_select, x's rank for
 * gather, [N] classes for the losses (or any shape). */
static void new_index_leaf(state *s, input *in)
{
    slot X = pick_readable(s, in);
    uint8_t b = byte(in);
    ag_dtype dt = b & 4 ? AG_F64 : AG_F32;
    shp sh = {0};
    size_t n = 1 + b % 5;
    shp xs = shape_of(X.x);
    if (!X.x || xs.rank == 0 || b % 16 == 15) {
        sh = read_shape(in);
    } else if (b % 3 == 0) { /* index_select */
        size_t ax = byte(in) % xs.rank;
        n = xs.shape[ax];
        sh.rank = b % 32 == 3 ? 0 : b % 32 == 6 ? 2 : 1;
        sh.shape[0] = sh.shape[1] = byte(in) % 7;
    } else if (b % 3 == 1) { /* gather */
        size_t ax = byte(in) % xs.rank;
        n = xs.shape[ax];
        sh = xs;
        uint8_t m = byte(in);
        for (size_t d = 0; d < sh.rank; d++) {
            if (d == ax)
                sh.shape[d] = byte(in) % 6;
            else if (m % 16 == 1 && d == (size_t)(m / 16) % sh.rank)
                sh.shape[d] = xs.shape[d] + 1; /* too large off the axis */
            else if (m & 1)
                sh.shape[d] = xs.shape[d] <= 128 ? byte(in) % (xs.shape[d] + 1) : 0;
        }
        if (m % 32 == 2 && sh.rank > 1)
            sh.rank--;
    } else { /* classes for [N, C] scores */
        n = xs.rank >= 2 ? xs.shape[1] : 1;
        sh.rank = 1;
        sh.shape[0] = b % 32 == 5 ? xs.shape[0] + 1 : xs.shape[0];
    }
    size_t numel;
    if (has_giant(sh.shape, sh.rank) || !numel_of(sh.shape, sh.rank, &numel) || numel > 4096)
        return;
    void *buf = index_values(in, dt, numel, n);
    ag_tensor *x = ag_from_data(dt, sh.shape, sh.rank, buf);
    free(buf);
    if (!x) {
        FZ_CHECK(ag_last_status() != AG_OK && ag_last_error()[0] != '\0');
        return;
    }
    check_described(x, dt, sh.shape, sh.rank, false);
    leaf_extras(in, x);
    add_leaf(s, x, NULL, NULL, -1);
}

/* ag_leaf_view of a handle of the pool: a leaf (fitting or not), a freed
 * one, an op result, NULL. */
static void new_leaf_view(state *s, input *in)
{
    slot B = pick_readable(s, in);
    uint8_t ob = byte(in), sb = byte(in);
    size_t bn = ag_tensor_numel(B.x);
    size_t off = ob < 128 ? ob % 4 : ob < 200 ? bn : ob < 240 ? bn + 1 : SIZE_MAX;
    size_t rem = off <= bn ? bn - off : 0;
    shp sh = {0};
    switch (sb % 5) {
    case 0: sh.rank = 1; sh.shape[0] = rem; break;
    case 1: { /* [rem / f, f] */
        size_t f = 1 + byte(in) % 4;
        sh.rank = 2;
        sh.shape[1] = rem % f == 0 ? f : 1;
        sh.shape[0] = rem / sh.shape[1];
        break;
    }
    case 2: sh.rank = 0; break;
    case 3: sh.rank = 1; sh.shape[0] = rem ? rem - 1 : 0; break;
    default: sh = read_shape(in); break;
    }
    bool null_shape = sh.rank > 0 && sb % 32 == 31;
    size_t numel;
    bool fits = numel_of(sh.shape, sh.rank, &numel) && off <= bn && numel <= bn - off;
    bool base_ok = B.x && B.tape < 0 && !s->leaves[B.leaf].freed;
    bool valid = base_ok && sh.rank <= AG_MAX_RANK && !null_shape && fits &&
                 numel <= SIZE_MAX / 8;
    ag_tensor *v = ag_leaf_view(B.x, off, null_shape ? NULL : sh.shape, sh.rank);
    TRACE("ag_leaf_view of %p (%s) -> %p %s\n", (void *)B.x,
          !B.x                       ? "NULL"
          : B.tape >= 0              ? "an op result"
          : s->leaves[B.leaf].freed ? "freed"
                                     : "a leaf",
          (void *)v, v ? "" : ag_last_error());
    if (!v) {
        ag_status st = ag_last_status();
        FZ_CHECK(st != AG_OK && ag_last_error()[0] != '\0');
        if (!B.x)
            FZ_CHECK(st == AG_ERR_NULL);
        else if (!base_ok)
            FZ_CHECK(st == AG_ERR_STATE);
        else if (valid)
            FZ_CHECK(st == AG_ERR_NOMEM);
        return;
    }
    FZ_CHECK(valid);
    FZ_CHECK(ag_last_status() == AG_OK && ag_last_error()[0] == '\0');
    ag_dtype dt = ag_tensor_dtype(B.x);
    check_described(v, dt, sh.shape, sh.rank, ag_requires_grad(B.x));
    size_t es = ag_dtype_size(dt);
    FZ_CHECK(ag_data(v) == (char *)ag_data(B.x) + off * es);
    FZ_CHECK(ag_grad(B.x) ? ag_grad(v) == (char *)ag_grad(B.x) + off * es : ag_grad(v) == NULL);
    touch(v);
    if (byte(in) & 1)
        leaf_extras(in, v);
    add_leaf(s, v, NULL, NULL, B.leaf);
}

static void new_leaf(state *s, input *in)
{
    if (s->n_leaves == MAX_LEAVES)
        return;
    uint8_t how = byte(in) % 12;
    if (how == 9 || how == 10) {
        new_index_leaf(s, in);
        return;
    }
    if (how == 11) {
        new_leaf_view(s, in);
        return;
    }
    ag_dtype dt = byte(in) & 1 ? AG_F64 : AG_F32;
    bool bad_dtype = byte(in) % 32 == 0;
    if (bad_dtype)
        dt = (ag_dtype)(2 + byte(in) % 3);
    uint8_t src = byte(in);
    slot X = src % 3 == 0 ? pick_readable(s, in) : none();
    shp sh = X.x ? like_shape(in, X.x) : read_shape(in);
    if (X.x && src % 2 == 0 && !bad_dtype)
        dt = ag_tensor_dtype(X.x);
    const size_t *shape = sh.shape;
    if (sh.rank > 0 && byte(in) % 32 == 0)
        shape = NULL;
    size_t numel, bytes = 0;
    bool size_ok = numel_of(sh.shape, sh.rank, &numel) && numel <= SIZE_MAX / 8 &&
                   (bytes = numel * (dt == AG_F64 ? 8 : 4), true);
    bool valid = !bad_dtype && sh.rank <= AG_MAX_RANK && (sh.rank == 0 || shape) && size_ok;
    bool small = size_ok && numel <= MAX_NUMEL;
    void *vbuf = NULL, *vgbuf = NULL;
    ag_tensor *x = NULL;
    bool null_rng = false, null_data = false;
    size_t live_before = fz_mem.live;
    switch (how) {
    case 0: x = ag_zeros(dt, shape, sh.rank); break;
    case 1: x = ag_ones(dt, shape, sh.rank); break;
    case 2: x = ag_full(dt, shape, sh.rank, scalar(in)); break;
    case 3:
        x = ag_scalar(dt, scalar(in));
        shape = NULL;
        sh.rank = 0;
        valid = !bad_dtype;
        bytes = 8;
        break;
    case 4:
    case 5: {
        if (!small || bad_dtype)
            return; /* the data must hold numel elements: the caller's duty */
        null_data = byte(in) % 16 == 0;
        void *buf = null_data ? NULL : fill_values(in, dt, numel);
        if (how == 4) {
            x = ag_from_data(dt, shape, sh.rank, buf);
            free(buf);
        } else {
            if (byte(in) & 1)
                vgbuf = calloc(numel ? numel : 1, 8);
            x = ag_view(dt, shape, sh.rank, buf, vgbuf);
            vbuf = buf;
        }
        valid = valid && !null_data;
        break;
    }
    default: {
        null_rng = byte(in) % 16 == 0;
        double a = scalar(in), b = scalar(in);
        if (how == 6)
            x = ag_rand_uniform(dt, shape, sh.rank, a, b, null_rng ? NULL : &s->rng);
        else
            x = ag_rand_normal(dt, shape, sh.rank, a, b, null_rng ? NULL : &s->rng);
        valid = valid && !null_rng;
    }
    }
    if (!valid)
        FZ_CHECK(x == NULL);
    if (valid && bytes <= MEM_LIMIT / 4 && live_before + bytes + 4096 <= MEM_LIMIT &&
        fz_mem.fail_at == 0)
        FZ_CHECK(x != NULL); /* nothing else may stop it */
    if (!x) {
        FZ_CHECK(ag_last_status() != AG_OK && ag_last_error()[0] != '\0');
        free(vbuf);
        free(vgbuf);
        return;
    }
    FZ_CHECK(ag_last_status() == AG_OK);
    check_described(x, dt, sh.shape, sh.rank, false);
    FZ_CHECK(ag_grad(x) == vgbuf);
    touch(x);
    leaf_extras(in, x);
    add_leaf(s, x, vbuf, vgbuf, -1);
}

/* ------------------------------------------------------------ ops */

enum {
    /* the first op set */
    OP_ADD, OP_SUB, OP_MUL, OP_DIV,
    OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_POW, OP_ABS, OP_SIGMOID, OP_TANH, OP_RELU,
    OP_LEAKY, OP_SOFTPLUS, OP_ADD_SCALAR, OP_SCALE,
    OP_MATMUL, OP_TRANSPOSE, OP_RESHAPE, OP_CONCAT, OP_SLICE, OP_CAST, OP_DETACH,
    OP_SUM, OP_MEAN, OP_SUM_AXIS, OP_MEAN_AXIS, OP_MAX_AXIS, OP_SOFTMAX, OP_LOG_SOFTMAX,
    OP_MSE, OP_QUAD, OP_BCE, OP_BCE_LOGITS, OP_CE,
    /* the second */
    OP_SIN, OP_COS, OP_TAN, OP_ASIN, OP_ACOS, OP_ATAN, OP_SINH, OP_COSH, OP_LOG1P, OP_EXPM1,
    OP_ERF, OP_SQUARE, OP_RECIPROCAL, OP_RSQRT, OP_GELU, OP_SILU, OP_ELU, OP_CLAMP,
    OP_MAXIMUM, OP_MINIMUM, OP_ATAN2, OP_POW_TENSOR, OP_WHERE,
    OP_PERMUTE, OP_EXPAND, OP_INDEX_SELECT, OP_GATHER,
    OP_MIN_AXIS, OP_PROD_AXIS, OP_VAR_AXIS, OP_LOGSUMEXP, OP_ARGMAX, OP_ARGMIN, OP_NORM,
    OP_SUM_AXES, OP_MEAN_AXES, OP_LAYER_NORM, OP_DROPOUT, OP_NLL, OP_HUBER,
    N_OPS
};

static int arity(int op)
{
    switch (op) {
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_MATMUL: case OP_CONCAT:
    case OP_MSE: case OP_QUAD: case OP_BCE: case OP_BCE_LOGITS: case OP_CE:
    case OP_MAXIMUM: case OP_MINIMUM: case OP_ATAN2: case OP_POW_TENSOR:
    case OP_INDEX_SELECT: case OP_GATHER: case OP_NLL: case OP_HUBER:
        return 2;
    case OP_WHERE:
        return 3;
    default:
        return 1;
    }
}

static bool broadcast_op(int op)
{
    return op <= OP_DIV || (op >= OP_MAXIMUM && op <= OP_POW_TENSOR);
}

/* Binary ops whose inputs need not share a dtype (indices, classes, a
 * condition). */
static bool mixed_dtypes(int op)
{
    return op == OP_CE || op == OP_NLL || op == OP_INDEX_SELECT || op == OP_GATHER ||
           op == OP_WHERE;
}

typedef struct {
    double c, c2;
    int axis;
    bool keep, training, null_rng;
    size_t start, end;
    shp shape; /* reshape and expand targets */
    bool null_shape;
    int axes[AG_MAX_RANK + 2]; /* permute, sum_axes, mean_axes */
    size_t n_axes;
    bool null_axes;
    ag_dtype dt;
} attrs;

/* Mostly an axis of x (either sign), else any. */
static int pick_axis(input *in, const ag_tensor *x)
{
    uint8_t b = byte(in);
    size_t r = ag_tensor_rank(x);
    if (r && b < 200)
        return b & 1 ? (int)((b >> 1) % r) : (int)((b >> 1) % r) - (int)r;
    return axis(in);
}

/* Axes for permute (perm true: mostly a permutation of x's axes) or for
 * sum_axes (a subset), with now and then a repeat, an axis out of range or
 * the wrong count. */
static void read_axes(input *in, const ag_tensor *x, attrs *a, bool perm)
{
    size_t r = x ? ag_tensor_rank(x) : byte(in) % 4;
    uint8_t b = byte(in);
    size_t n = perm ? r : (r ? byte(in) % (r + 1) : 0);
    if (b % 16 == 15)
        n = (b / 16) % (AG_MAX_RANK + 2); /* any count, up to 9 */
    int all[AG_MAX_RANK + 2];
    for (size_t i = 0; i < AG_MAX_RANK + 2; i++)
        all[i] = (int)i;
    for (size_t i = r; i-- > 1;) { /* shuffle x's axes */
        size_t j = byte(in) % (i + 1);
        int t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    uint8_t neg = byte(in);
    for (size_t i = 0; i < n; i++) {
        a->axes[i] = all[i];
        if (i < 8 && (neg >> i) & 1)
            a->axes[i] -= (int)r; /* counted from the end */
    }
    uint8_t c = byte(in);
    if (n && c % 8 == 0) /* a repeat */
        a->axes[(c / 8) % n] = a->axes[(c / 8 + 1) % n];
    else if (n && c % 8 == 1)
        a->axes[(c / 8) % n] = c & 0x80 ? (int)r : -(int)r - 1;
    else if (n && c % 16 == 2)
        a->axes[(c / 16) % n] = c & 0x80 ? INT_MAX : INT_MIN;
    a->n_axes = n;
    a->null_axes = n > 0 && byte(in) % 32 == 0;
}

/* A target for expand: x's shape with axes of 1 stretched and axes put in
 * front, now and then one that does not fit, or any shape. */
static void read_expand(input *in, const ag_tensor *x, attrs *a)
{
    uint8_t b = byte(in);
    if (!x || b % 8 == 7) {
        a->shape = read_shape(in);
    } else {
        shp xs = shape_of(x);
        size_t lead = b % 3;
        if (xs.rank + lead > AG_MAX_RANK + 1)
            lead = AG_MAX_RANK + 1 - xs.rank;
        a->shape.rank = xs.rank + lead;
        for (size_t d = 0; d < lead; d++)
            a->shape.shape[d] = dim(in);
        uint8_t m = byte(in);
        for (size_t d = 0; d < xs.rank; d++) {
            size_t v = xs.shape[d];
            if (v == 1 && (m >> (d % 8)) & 1)
                v = dim(in);
            a->shape.shape[lead + d] = v;
        }
        if (b % 8 == 6 && xs.rank) /* an axis that does not broadcast */
            a->shape.shape[lead + byte(in) % xs.rank] += 2;
        if (!has_giant(a->shape.shape, a->shape.rank))
            cap_shape(a->shape.shape, a->shape.rank);
    }
    a->null_shape = a->shape.rank > 0 && byte(in) % 32 == 0;
}

static void read_attrs(input *in, int op, const ag_tensor *x, attrs *a)
{
    memset(a, 0, sizeof *a);
    switch (op) {
    case OP_POW: case OP_LEAKY: case OP_ADD_SCALAR: case OP_SCALE: case OP_ELU:
        a->c = scalar(in);
        break;
    case OP_CLAMP:
        a->c = scalar(in);
        a->c2 = scalar(in);
        if (a->c > a->c2 && byte(in) % 4) {
            double t = a->c;
            a->c = a->c2;
            a->c2 = t;
        }
        break;
    case OP_SUM_AXIS: case OP_MEAN_AXIS: case OP_MAX_AXIS: case OP_MIN_AXIS: case OP_PROD_AXIS:
    case OP_VAR_AXIS: case OP_LOGSUMEXP: case OP_ARGMAX: case OP_ARGMIN:
        a->keep = byte(in) & 1;
        /* fall through */
    case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_CONCAT: case OP_INDEX_SELECT: case OP_GATHER:
        a->axis = pick_axis(in, x);
        break;
    case OP_SLICE:
        a->axis = pick_axis(in, x);
        a->start = range_end(in);
        a->end = range_end(in);
        if (a->start > a->end && byte(in) % 4)
            a->start = a->end;
        break;
    case OP_CAST: {
        uint8_t b = byte(in);
        a->dt = b % 16 == 15 ? (ag_dtype)(2 + b % 5) : (ag_dtype)(b & 1);
        break;
    }
    case OP_RESHAPE: {
        uint8_t b = byte(in);
        size_t n = ag_tensor_numel(x);
        if (b % 4 == 0) { /* flatten */
            a->shape.rank = 1;
            a->shape.shape[0] = n;
        } else if (b % 4 == 1) { /* [n, 1] or [1, n] or a scalar's [] */
            a->shape.rank = 2;
            a->shape.shape[b & 4 ? 0 : 1] = 1;
            a->shape.shape[b & 4 ? 1 : 0] = n;
            if (n == 1 && (b & 8))
                a->shape.rank = 0;
        } else if (b % 4 == 2 && n > 0) { /* split off a factor */
            size_t f = 1 + byte(in) % 5;
            a->shape.rank = 2;
            a->shape.shape[0] = n % f == 0 ? f : 1;
            a->shape.shape[1] = n / a->shape.shape[0];
        } else {
            a->shape = read_shape(in);
        }
        a->null_shape = a->shape.rank > 0 && byte(in) % 32 == 0;
        break;
    }
    case OP_PERMUTE:
        read_axes(in, x, a, true);
        break;
    case OP_SUM_AXES: case OP_MEAN_AXES:
        a->keep = byte(in) & 1;
        read_axes(in, x, a, false);
        break;
    case OP_EXPAND:
        read_expand(in, x, a);
        break;
    case OP_LAYER_NORM: {
        uint8_t b = byte(in);
        a->c = b % 4 == 0 ? scalar(in) : b % 4 == 1 ? 0 : 1e-5;
        break;
    }
    case OP_DROPOUT: {
        static const double ps[] = {0, 0.5, 0.25, 0.9, 1, -0.1, NAN, 0.999};
        uint8_t b = byte(in);
        a->c = b % 16 == 15 ? scalar(in) : ps[b % 8];
        a->training = (b >> 4) & 1;
        a->null_rng = (b >> 5) % 8 == 0;
        break;
    }
    case OP_HUBER: {
        static const double ds[] = {1, 0.5, 2, 0, -1, NAN, INFINITY, 1e-300};
        uint8_t b = byte(in);
        a->c = b % 16 == 15 ? scalar(in) : ds[b % 8];
        break;
    }
    default:
        break;
    }
}

static ag_tensor *call_op(ag_tape *t, int op, ag_tensor *a, ag_tensor *b, ag_tensor *c,
                          const attrs *at, ag_rng *rng)
{
    switch (op) {
    case OP_ADD: return ag_add(t, a, b);
    case OP_SUB: return ag_sub(t, a, b);
    case OP_MUL: return ag_mul(t, a, b);
    case OP_DIV: return ag_div(t, a, b);
    case OP_NEG: return ag_neg(t, a);
    case OP_EXP: return ag_exp(t, a);
    case OP_LOG: return ag_log(t, a);
    case OP_SQRT: return ag_sqrt(t, a);
    case OP_POW: return ag_pow(t, a, at->c);
    case OP_ABS: return ag_abs(t, a);
    case OP_SIGMOID: return ag_sigmoid(t, a);
    case OP_TANH: return ag_tanh(t, a);
    case OP_RELU: return ag_relu(t, a);
    case OP_LEAKY: return ag_leaky_relu(t, a, at->c);
    case OP_SOFTPLUS: return ag_softplus(t, a);
    case OP_ADD_SCALAR: return ag_add_scalar(t, a, at->c);
    case OP_SCALE: return ag_scale(t, a, at->c);
    case OP_MATMUL: return ag_matmul(t, a, b);
    case OP_TRANSPOSE: return ag_transpose(t, a);
    case OP_RESHAPE:
        return ag_reshape(t, a, at->null_shape ? NULL : at->shape.shape, at->shape.rank);
    case OP_CONCAT: return ag_concat(t, a, b, at->axis);
    case OP_SLICE: return ag_slice(t, a, at->axis, at->start, at->end);
    case OP_CAST: return ag_cast(t, a, at->dt);
    case OP_DETACH: return ag_detach(t, a);
    case OP_SUM: return ag_sum(t, a);
    case OP_MEAN: return ag_mean(t, a);
    case OP_SUM_AXIS: return ag_sum_axis(t, a, at->axis, at->keep);
    case OP_MEAN_AXIS: return ag_mean_axis(t, a, at->axis, at->keep);
    case OP_MAX_AXIS: return ag_max_axis(t, a, at->axis, at->keep);
    case OP_SOFTMAX: return ag_softmax(t, a, at->axis);
    case OP_LOG_SOFTMAX: return ag_log_softmax(t, a, at->axis);
    case OP_MSE: return ag_mse(t, a, b);
    case OP_QUAD: return ag_quadratic_cost(t, a, b);
    case OP_BCE: return ag_bce(t, a, b);
    case OP_BCE_LOGITS: return ag_bce_with_logits(t, a, b);
    case OP_CE: return ag_cross_entropy(t, a, b);
    case OP_SIN: return ag_sin(t, a);
    case OP_COS: return ag_cos(t, a);
    case OP_TAN: return ag_tan(t, a);
    case OP_ASIN: return ag_asin(t, a);
    case OP_ACOS: return ag_acos(t, a);
    case OP_ATAN: return ag_atan(t, a);
    case OP_SINH: return ag_sinh(t, a);
    case OP_COSH: return ag_cosh(t, a);
    case OP_LOG1P: return ag_log1p(t, a);
    case OP_EXPM1: return ag_expm1(t, a);
    case OP_ERF: return ag_erf(t, a);
    case OP_SQUARE: return ag_square(t, a);
    case OP_RECIPROCAL: return ag_reciprocal(t, a);
    case OP_RSQRT: return ag_rsqrt(t, a);
    case OP_GELU: return ag_gelu(t, a);
    case OP_SILU: return ag_silu(t, a);
    case OP_ELU: return ag_elu(t, a, at->c);
    case OP_CLAMP: return ag_clamp(t, a, at->c, at->c2);
    case OP_MAXIMUM: return ag_maximum(t, a, b);
    case OP_MINIMUM: return ag_minimum(t, a, b);
    case OP_ATAN2: return ag_atan2(t, a, b);
    case OP_POW_TENSOR: return ag_pow_tensor(t, a, b);
    case OP_WHERE: return ag_where(t, a, b, c);
    case OP_PERMUTE: return ag_permute(t, a, at->null_axes ? NULL : at->axes, at->n_axes);
    case OP_EXPAND:
        return ag_expand(t, a, at->null_shape ? NULL : at->shape.shape, at->shape.rank);
    case OP_INDEX_SELECT: return ag_index_select(t, a, at->axis, b);
    case OP_GATHER: return ag_gather(t, a, at->axis, b);
    case OP_MIN_AXIS: return ag_min_axis(t, a, at->axis, at->keep);
    case OP_PROD_AXIS: return ag_prod_axis(t, a, at->axis, at->keep);
    case OP_VAR_AXIS: return ag_var_axis(t, a, at->axis, at->keep);
    case OP_LOGSUMEXP: return ag_logsumexp(t, a, at->axis, at->keep);
    case OP_ARGMAX: return ag_argmax(t, a, at->axis, at->keep);
    case OP_ARGMIN: return ag_argmin(t, a, at->axis, at->keep);
    case OP_NORM: return ag_norm(t, a);
    case OP_SUM_AXES:
        return ag_sum_axes(t, a, at->null_axes ? NULL : at->axes, at->n_axes, at->keep);
    case OP_MEAN_AXES:
        return ag_mean_axes(t, a, at->null_axes ? NULL : at->axes, at->n_axes, at->keep);
    case OP_LAYER_NORM: return ag_layer_norm(t, a, at->c);
    case OP_DROPOUT: return ag_dropout(t, a, at->c, at->training, at->null_rng ? NULL : rng);
    case OP_NLL: return ag_nll_loss(t, a, b);
    default: return ag_huber_loss(t, a, b, at->c);
    }
}

/* ------------------------------------------------------------ the model
 * What the header's rules say an op must do with these arguments. */

enum { V_OK, V_FAIL, V_ANY };

typedef struct {
    int verdict;
    ag_dtype dt;
    shp shape;
} expect;

static bool norm_axis(int axis, size_t rank, size_t *out)
{
    long a = axis;
    if (a < 0)
        a += (long)rank;
    if (a < 0 || a >= (long)rank)
        return false;
    *out = (size_t)a;
    return true;
}

static bool same_shape(const ag_tensor *a, const ag_tensor *b)
{
    return ag_tensor_rank(a) == ag_tensor_rank(b) &&
           memcmp(ag_tensor_shape(a), ag_tensor_shape(b), ag_tensor_rank(a) * sizeof(size_t)) == 0;
}

static size_t dim_from_end(const ag_tensor *x, size_t k)
{
    size_t r = ag_tensor_rank(x);
    return k < r ? ag_tensor_shape(x)[r - 1 - k] : 1;
}

/* numpy broadcasting of n tensors: every axis's sizes other than 1 agree. */
static bool broadcast(const ag_tensor *const *x, size_t n, shp *out)
{
    out->rank = 0;
    for (size_t i = 0; i < n; i++)
        if (ag_tensor_rank(x[i]) > out->rank)
            out->rank = ag_tensor_rank(x[i]);
    for (size_t k = 0; k < out->rank; k++) {
        size_t d = 1;
        for (size_t i = 0; i < n; i++) {
            size_t di = dim_from_end(x[i], k);
            if (di != 1 && d != 1 && di != d)
                return false;
            if (di != 1)
                d = di;
        }
        out->shape[out->rank - 1 - k] = d;
    }
    return true;
}

/* x's shape reduced over the axes in mask (kept with size 1 if keep). */
static void reduce_shape(const shp *x, unsigned mask, bool keep, shp *out)
{
    shp r = {0};
    for (size_t d = 0; d < x->rank; d++)
        if (!(mask & (1u << d)))
            r.shape[r.rank++] = x->shape[d];
        else if (keep)
            r.shape[r.rank++] = 1;
    *out = r;
}

/* The permutation (x's axis for each of the result's), or false. */
static bool perm_of(const attrs *at, size_t rank, size_t *perm)
{
    if (at->null_axes && at->n_axes)
        return false;
    if (at->n_axes != rank)
        return false;
    unsigned seen = 0;
    for (size_t d = 0; d < rank; d++) {
        size_t a;
        if (!norm_axis(at->axes[d], rank, &a) || (seen & (1u << a)))
            return false;
        seen |= 1u << a;
        perm[d] = a;
    }
    return true;
}

/* The axes of sum_axes as a mask, or false. */
static bool axes_mask(const attrs *at, size_t rank, unsigned *mask)
{
    *mask = 0;
    if ((at->null_axes && at->n_axes) || at->n_axes > AG_MAX_RANK)
        return false;
    for (size_t j = 0; j < at->n_axes; j++) {
        size_t a;
        if (!norm_axis(at->axes[j], rank, &a) || (*mask & (1u << a)))
            return false;
        *mask |= 1u << a;
    }
    return true;
}

/* The result's shape, or false when the rules reject the arguments. */
static bool model_shape(int op, const ag_tensor *a, const ag_tensor *b, const ag_tensor *c,
                        const attrs *at, shp *out, ag_dtype *dt)
{
    shp sa = shape_of(a);
    size_t ax;
    *out = sa;
    *dt = ag_tensor_dtype(a);
    if (arity(op) >= 2 && !mixed_dtypes(op) && ag_tensor_dtype(a) != ag_tensor_dtype(b))
        return false;
    if (broadcast_op(op)) {
        const ag_tensor *x[2] = {a, b};
        return broadcast(x, 2, out);
    }
    switch (op) {
    case OP_WHERE: {
        const ag_tensor *x[3] = {a, b, c};
        *dt = ag_tensor_dtype(b);
        return ag_tensor_dtype(b) == ag_tensor_dtype(c) && broadcast(x, 3, out);
    }
    case OP_MATMUL: { /* torch.matmul: a 1-D a is a row, a 1-D b a column, batches broadcast */
        size_t ra = ag_tensor_rank(a), rb = ag_tensor_rank(b);
        if (ra == 0 || rb == 0)
            return false;
        const size_t *A = ag_tensor_shape(a), *B = ag_tensor_shape(b);
        if (A[ra - 1] != B[rb == 1 ? 0 : rb - 2])
            return false;
        size_t ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0, nb = ba > bb ? ba : bb;
        for (size_t j = 0; j < nb; j++) {
            size_t da = j < ba ? A[ba - 1 - j] : 1, db = j < bb ? B[bb - 1 - j] : 1;
            if (da != db && da != 1 && db != 1)
                return false;
            out->shape[nb - 1 - j] = da == 1 ? db : da;
        }
        out->rank = nb;
        if (ra > 1)
            out->shape[out->rank++] = A[ra - 2];
        if (rb > 1)
            out->shape[out->rank++] = B[rb - 1];
        return true;
    }
    case OP_TRANSPOSE:
        if (sa.rank < 2)
            return false;
        out->shape[sa.rank - 2] = sa.shape[sa.rank - 1];
        out->shape[sa.rank - 1] = sa.shape[sa.rank - 2];
        return true;
    case OP_RESHAPE: {
        size_t n;
        if (at->shape.rank > AG_MAX_RANK || at->null_shape)
            return false;
        if (!numel_of(at->shape.shape, at->shape.rank, &n) || n != ag_tensor_numel(a))
            return false;
        *out = at->shape;
        return true;
    }
    case OP_CONCAT: {
        if (!norm_axis(at->axis, sa.rank, &ax) || ag_tensor_rank(b) != sa.rank)
            return false;
        const size_t *B = ag_tensor_shape(b);
        for (size_t d = 0; d < sa.rank; d++)
            if (d != ax && B[d] != sa.shape[d])
                return false;
        if (sa.shape[ax] > SIZE_MAX - B[ax])
            return false;
        out->shape[ax] += B[ax];
        return true;
    }
    case OP_SLICE:
        if (!norm_axis(at->axis, sa.rank, &ax) || at->start > at->end || at->end > sa.shape[ax])
            return false;
        out->shape[ax] = at->end - at->start;
        return true;
    case OP_CAST:
        if (at->dt != AG_F32 && at->dt != AG_F64)
            return false;
        *dt = at->dt;
        return true;
    case OP_SUM: case OP_MEAN: case OP_NORM:
        out->rank = 0;
        return true;
    case OP_MSE: case OP_QUAD: case OP_BCE: case OP_BCE_LOGITS:
        out->rank = 0;
        return same_shape(a, b);
    case OP_HUBER:
        out->rank = 0;
        return at->c > 0 && same_shape(a, b);
    case OP_SUM_AXIS: case OP_MEAN_AXIS: case OP_MAX_AXIS: case OP_MIN_AXIS: case OP_PROD_AXIS:
    case OP_VAR_AXIS: case OP_LOGSUMEXP: case OP_ARGMAX: case OP_ARGMIN: {
        bool nonempty =
            op == OP_MAX_AXIS || op == OP_MIN_AXIS || op == OP_ARGMAX || op == OP_ARGMIN;
        if (!norm_axis(at->axis, sa.rank, &ax) || (nonempty && sa.shape[ax] == 0))
            return false;
        reduce_shape(&sa, 1u << ax, at->keep, out);
        return true;
    }
    case OP_SUM_AXES: case OP_MEAN_AXES: {
        unsigned mask;
        if (!axes_mask(at, sa.rank, &mask))
            return false;
        reduce_shape(&sa, mask, at->keep, out);
        return true;
    }
    case OP_SOFTMAX: case OP_LOG_SOFTMAX:
        return norm_axis(at->axis, sa.rank, &ax);
    case OP_CE: case OP_NLL:
        out->rank = 0;
        return sa.rank == 2 && ag_tensor_rank(b) == 1 && ag_tensor_shape(b)[0] == sa.shape[0] &&
               sa.shape[1] > 0;
    case OP_CLAMP:
        return at->c <= at->c2;
    case OP_PERMUTE: {
        size_t perm[AG_MAX_RANK];
        if (!perm_of(at, sa.rank, perm))
            return false;
        for (size_t d = 0; d < sa.rank; d++)
            out->shape[d] = sa.shape[perm[d]];
        return true;
    }
    case OP_EXPAND: {
        const shp *ts = &at->shape;
        if (ts->rank > AG_MAX_RANK || at->null_shape || ts->rank < sa.rank)
            return false;
        for (size_t k = 0; k < sa.rank; k++) {
            size_t xd = sa.shape[sa.rank - 1 - k], td = ts->shape[ts->rank - 1 - k];
            if (xd != td && xd != 1)
                return false;
        }
        *out = *ts;
        return true;
    }
    case OP_INDEX_SELECT:
        if (!norm_axis(at->axis, sa.rank, &ax) || ag_tensor_rank(b) > 1)
            return false;
        out->shape[ax] = ag_tensor_numel(b);
        return true;
    case OP_GATHER: {
        if (!norm_axis(at->axis, sa.rank, &ax) || ag_tensor_rank(b) != sa.rank)
            return false;
        shp sb = shape_of(b);
        for (size_t d = 0; d < sa.rank; d++)
            if (d != ax && sb.shape[d] > sa.shape[d])
                return false;
        *out = sb;
        return true;
    }
    case OP_LAYER_NORM:
        return sa.rank > 0 && at->c >= 0 && at->c < INFINITY;
    case OP_DROPOUT:
        return at->c >= 0 && at->c < 1 && !(at->training && at->c > 0 && at->null_rng);
    default: /* elementwise unary, detach */
        return true;
    }
}

static bool whole_in(double v, size_t n)
{
    return v >= 0 && v < (double)n && v == floor(v);
}

/* Value conditions: bce's p in [0, 1], class and position indices. */
static bool model_values(int op, const ag_tensor *a, const ag_tensor *b, const attrs *at)
{
    size_t ax;
    if (op == OP_BCE) {
        for (size_t i = 0; i < ag_tensor_numel(a); i++) {
            double v = element(a, i);
            if (!(v >= 0 && v <= 1))
                return false;
        }
    }
    if (op == OP_CE || op == OP_NLL) {
        size_t C = ag_tensor_shape(a)[1];
        for (size_t i = 0; i < ag_tensor_numel(b); i++)
            if (!whole_in(element(b, i), C))
                return false;
    }
    if ((op == OP_INDEX_SELECT || op == OP_GATHER) && norm_axis(at->axis, ag_tensor_rank(a), &ax)) {
        size_t n = ag_tensor_shape(a)[ax];
        for (size_t i = 0; i < ag_tensor_numel(b); i++)
            if (!whole_in(element(b, i), n))
                return false;
    }
    return true;
}

/* Arguments whose handles are all usable on tape k. */
static expect model(state *s, int k, int op, const slot *in, const attrs *at)
{
    expect e = {.verdict = V_OK};
    if (!s->t[k])
        return (expect){.verdict = V_FAIL};
    const ag_tensor *a = in[0].x, *b = in[1].x, *c = in[2].x;
    if (!model_shape(op, a, b, c, at, &e.shape, &e.dt))
        return (expect){.verdict = V_FAIL};
    size_t n;
    if (!numel_of(e.shape.shape, e.shape.rank, &n) || n > SIZE_MAX / ag_dtype_size(e.dt))
        return (expect){.verdict = V_FAIL};
    if (!model_values(op, a, b, at))
        return (expect){.verdict = V_FAIL};
    if (n * ag_dtype_size(e.dt) > MEM_LIMIT / 4)
        e.verdict = V_ANY; /* too big for the budget: NOMEM or OVERFLOW are fine */
    return e;
}

/* ------------------------------------------------------------ handle rules */

static ag_status refusal(hclass c)
{
    return c == H_NULL ? AG_ERR_NULL : c == H_OK ? AG_OK : AG_ERR_STATE;
}

/* The tape's error after a call refused a handle of class c (not
 * H_STALE_OLD): the documented status and reason, or out of memory
 * (taking an earlier leaf, growing the records) before it got there. */
static void check_refused(const ag_tape *t, hclass c, bool same_tape)
{
    ag_status st = ag_tape_status(t);
    const char *m = ag_tape_error(t);
    if (st == AG_ERR_NOMEM)
        return;
    if (st != refusal(c) || !m[0])
        fprintf(stderr, "handle class %d refused with %d: %s\n", (int)c, (int)st, m);
    FZ_CHECK(st == refusal(c));
    switch (c) {
    case H_NULL: FZ_CHECK(strstr(m, "is NULL") != NULL); break;
    case H_FOREIGN: FZ_CHECK(strstr(m, "was made on another tape") != NULL); break;
    case H_FREED: FZ_CHECK(strstr(m, "was freed") != NULL); break;
    case H_STALE1: /* on the other tape: poisoned (ASan) or just foreign */
        FZ_CHECK(strstr(m, "is a stale handle") != NULL ||
                 (!same_tape && strstr(m, "made on another tape") != NULL));
        break;
    default: break;
    }
}

/* The first of n handles that tape k must refuse, or -1. */
static int first_refused(const state *s, int k, const slot *in, int n, hclass *c)
{
    for (int i = 0; i < n; i++) {
        *c = classify(s, k, &in[i]);
        if (*c != H_OK)
            return i;
    }
    *c = H_OK;
    return -1;
}

static bool same_tape_of(const slot *x, int k) { return x->tape == k; }

/* ------------------------------------------------------------ reference values
 * Pure index arithmetic, so results must match bitwise. */

static bool same_value(double x, double y)
{
    return x == y || (isnan(x) && isnan(y));
}

/* Row-major multi-index of flat index i in shape. */
static void unravel(size_t i, const shp *s, size_t *idx)
{
    for (size_t d = s->rank; d-- > 0;) {
        idx[d] = i % s->shape[d];
        i /= s->shape[d];
    }
}

static size_t ravel(const size_t *idx, const size_t *shape, size_t rank)
{
    size_t i = 0;
    for (size_t d = 0; d < rank; d++)
        i = i * shape[d] + idx[d];
    return i;
}

/* Index into x of the result index idx (rank r), with broadcasting. */
static size_t bcast_index(const ag_tensor *x, const size_t *idx, size_t r)
{
    size_t rx = ag_tensor_rank(x), j[AG_MAX_RANK];
    const size_t *sx = ag_tensor_shape(x);
    for (size_t d = 0; d < rx; d++)
        j[d] = sx[d] == 1 ? 0 : idx[r - rx + d];
    return ravel(j, sx, rx);
}

static double ref_binary(int op, ag_dtype dt, double x, double y)
{
    if (op == OP_MAXIMUM || op == OP_MINIMUM) {
        if (isnan(x) || isnan(y))
            return NAN;
        return op == OP_MAXIMUM ? (x > y ? x : y) : (x < y ? x : y);
    }
    if (dt == AG_F32) {
        float a = (float)x, b = (float)y;
        switch (op) {
        case OP_ADD: return a + b;
        case OP_SUB: return a - b;
        case OP_MUL: return a * b;
        default: return a / b;
        }
    }
    switch (op) {
    case OP_ADD: return x + y;
    case OP_SUB: return x - y;
    case OP_MUL: return x * y;
    default: return x / y;
    }
}

static double ref_clamp(ag_dtype dt, double x, double lo, double hi)
{
    if (isnan(x))
        return x;
    double v = x < lo ? lo : x > hi ? hi : x;
    return dt == AG_F32 ? (double)(float)v : v;
}

static void check_values(int op, const ag_tensor *a, const ag_tensor *b, const ag_tensor *c,
                         const attrs *at, const ag_tensor *y)
{
    shp sy = shape_of(y), sa = shape_of(a);
    size_t n = ag_tensor_numel(y), idx[AG_MAX_RANK], ax = 0, perm[AG_MAX_RANK];
    if (op == OP_CONCAT || op == OP_SLICE || op == OP_INDEX_SELECT || op == OP_GATHER)
        norm_axis(at->axis, sa.rank, &ax);
    if (op == OP_PERMUTE)
        perm_of(at, sa.rank, perm);
    if (op == OP_DROPOUT && at->training && at->c > 0)
        return; /* a random mask */
    for (size_t i = 0; i < n; i++) {
        double want;
        unravel(i, &sy, idx);
        switch (op) {
        case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_MAXIMUM: case OP_MINIMUM:
            want = ref_binary(op, ag_tensor_dtype(y), element(a, bcast_index(a, idx, sy.rank)),
                              element(b, bcast_index(b, idx, sy.rank)));
            break;
        case OP_WHERE: {
            double cv = element(a, bcast_index(a, idx, sy.rank));
            want = cv != 0 ? element(b, bcast_index(b, idx, sy.rank))
                           : element(c, bcast_index(c, idx, sy.rank));
            break;
        }
        case OP_CLAMP:
            want = ref_clamp(ag_tensor_dtype(y), element(a, i), at->c, at->c2);
            break;
        case OP_TRANSPOSE: {
            size_t r = sy.rank, tmp = idx[r - 1];
            idx[r - 1] = idx[r - 2];
            idx[r - 2] = tmp;
            want = element(a, ravel(idx, sa.shape, r));
            break;
        }
        case OP_PERMUTE: {
            size_t j[AG_MAX_RANK];
            for (size_t d = 0; d < sy.rank; d++)
                j[perm[d]] = idx[d];
            want = element(a, ravel(j, sa.shape, sa.rank));
            break;
        }
        case OP_EXPAND:
            want = element(a, bcast_index(a, idx, sy.rank));
            break;
        case OP_INDEX_SELECT:
            idx[ax] = (size_t)element(b, idx[ax]);
            want = element(a, ravel(idx, sa.shape, sa.rank));
            break;
        case OP_GATHER:
            idx[ax] = (size_t)element(b, i);
            want = element(a, ravel(idx, sa.shape, sa.rank));
            break;
        case OP_SLICE:
            idx[ax] += at->start;
            want = element(a, ravel(idx, sa.shape, sa.rank));
            break;
        case OP_CONCAT:
            if (idx[ax] < sa.shape[ax]) {
                want = element(a, ravel(idx, sa.shape, sa.rank));
            } else {
                idx[ax] -= sa.shape[ax];
                want = element(b, ravel(idx, ag_tensor_shape(b), sa.rank));
            }
            break;
        case OP_RESHAPE: case OP_DETACH: case OP_DROPOUT:
            want = element(a, i);
            break;
        case OP_CAST:
            want = ag_tensor_dtype(y) == AG_F32 ? (double)(float)element(a, i) : element(a, i);
            break;
        default:
            return;
        }
        if (!same_value(element(y, i), want))
            fprintf(stderr, "op %d: element %zu is %.17g, want %.17g\n", op, i, element(y, i),
                    want);
        FZ_CHECK(same_value(element(y, i), want));
    }
}

/* ------------------------------------------------------------ one op */

typedef struct {
    ag_status status;
    char msg[256];
    size_t size;
} tape_snap;

static tape_snap snap(const ag_tape *t)
{
    tape_snap s = {.status = ag_tape_status(t), .size = ag_tape_size(t)};
    snprintf(s.msg, sizeof s.msg, "%s", ag_tape_error(t));
    return s;
}

/* A non-NULL result comes with AG_OK; a NULL one with an error; an error
 * already there stays as it was. */
static void check_status(const ag_tape *t, const void *result, const tape_snap *before)
{
    ag_status st = ag_tape_status(t);
    FZ_CHECK((result != NULL) == (st == AG_OK));
    if (!result)
        FZ_CHECK(ag_tape_error(t)[0] != '\0');
    else
        FZ_CHECK(ag_tape_error(t)[0] == '\0');
    if (t && before->status != AG_OK) {
        FZ_CHECK(result == NULL);
        FZ_CHECK(st == before->status);
        FZ_CHECK(strcmp(ag_tape_error(t), before->msg) == 0);
    }
}

static void run_op(state *s, input *in, int op)
{
    uint8_t tb = byte(in);
    int k = tb & 1;
    ag_tape *t = tb % 64 == 63 ? NULL : s->t[k];
    int n = arity(op);
    slot S[3] = {none(), none(), none()};
    for (int i = 0; i < n; i++)
        S[i] = pick(s, in);
    hclass bad_class;
    int bad = first_refused(s, k, S, n, &bad_class);
    bool all_readable = true;
    for (int i = 0; i < n; i++)
        all_readable = all_readable && readable(s, &S[i]);
    attrs at;
    read_attrs(in, op, readable(s, &S[0]) ? S[0].x : NULL, &at);
    expect e = {.verdict = V_FAIL};
    if (t && bad < 0)
        e = model(s, k, op, S, &at);
    bool rg = false;
    for (int i = 0; all_readable && i < n; i++)
        rg = rg || ag_requires_grad(S[i].x);
    bool want_grad = rg && ag_tape_recording(t) && op != OP_DETACH && op != OP_ARGMAX &&
                     op != OP_ARGMIN;
    TRACE("op %d on tape %d%s: inputs", op, k, t ? "" : " (NULL)");
    for (int i = 0; i < n; i++)
        TRACE(" %p (class %d, tape %d)", (void *)S[i].x, (int)classify(s, k, &S[i]), S[i].tape);
    tape_snap before = snap(t);
    ag_tensor *y = call_op(t, op, S[0].x, S[1].x, S[2].x, &at, &s->rng);
    TRACE(" -> %p %s\n", (void *)y, t ? ag_tape_error(t) : "");
    check_status(t, y, &before);
    if (!t || before.status != AG_OK)
        return;
    ag_status st = ag_tape_status(t);
    if (bad >= 0) {
        if (bad_class == H_STALE_OLD)
            return; /* it may read as a newer result: nothing to assert but no crash */
        FZ_CHECK(y == NULL);
        check_refused(t, bad_class, same_tape_of(&S[bad], k));
        FZ_CHECK(ag_tape_size(t) == before.size);
        return;
    }
    if (e.verdict == V_FAIL)
        FZ_CHECK(y == NULL);
    if (e.verdict == V_OK && !y) {
        if (!(st == AG_ERR_NOMEM || (st == AG_ERR_NUMERIC && s->checked[k])))
            fprintf(stderr, "op %d failed: %s\n", op, ag_tape_error(t));
        FZ_CHECK(st == AG_ERR_NOMEM || (st == AG_ERR_NUMERIC && s->checked[k]));
    }
    if (!y) {
        FZ_CHECK(ag_tape_size(t) == before.size);
        return;
    }
    FZ_CHECK(ag_tensor_rank(y) <= AG_MAX_RANK);
    size_t numel;
    FZ_CHECK(numel_of(ag_tensor_shape(y), ag_tensor_rank(y), &numel) &&
             numel == ag_tensor_numel(y));
    FZ_CHECK(ag_tensor_dtype(y) == e.dt);
    FZ_CHECK(ag_tensor_rank(y) == e.shape.rank);
    FZ_CHECK(memcmp(ag_tensor_shape(y), e.shape.shape, e.shape.rank * sizeof(size_t)) == 0);
    FZ_CHECK(ag_requires_grad(y) == want_grad);
    FZ_CHECK(ag_tape_size(t) == before.size + (want_grad ? 1 : 0));
    FZ_CHECK(ag_grad(y) == NULL);
    touch(y);
    check_values(op, S[0].x, S[1].x, S[2].x, &at, y);
    mark_held(s, k, S, n);
    push(s, y, k);
}

/* ------------------------------------------------------------ backward */

static void after_backward(state *s)
{
    for (size_t i = 0; i < s->n_pool; i++) {
        ag_tensor *x = s->pool[i].x;
        if (s->pool[i].tape < 0 && ag_requires_grad(x) && ag_tensor_numel(x))
            FZ_CHECK(ag_grad(x) != NULL);
        touch(x);
    }
}

static void run_backward(state *s, input *in, bool seeded)
{
    uint8_t tb = byte(in);
    int k = tb & 1;
    ag_tape *t = tb % 64 == 63 ? NULL : s->t[k];
    slot Y = tb & 2 ? pick_grad(s, in, !seeded) : pick(s, in);
    slot S = none();
    bool own_seed = false;
    if (seeded) {
        uint8_t how = byte(in);
        if (how % 4 == 0) {
            S = pick(s, in);
        } else if (Y.x && readable(s, &Y) && ag_tensor_numel(Y.x) <= MAX_NUMEL) {
            S.x = ag_full(how & 4 ? AG_F64 : ag_tensor_dtype(Y.x), ag_tensor_shape(Y.x),
                          ag_tensor_rank(Y.x), how & 8 ? scalar(in) : 1.0);
            own_seed = S.x != NULL; /* a leaf only this call sees: not in the pool */
        }
    }
    tape_snap before = snap(t);
    TRACE("backward on tape %d: y %p (class %d), seed %p\n", k, (void *)Y.x,
          (int)classify(s, k, &Y), (void *)S.x);
    ag_status r = seeded ? ag_backward_seed(t, Y.x, S.x) : ag_backward(t, Y.x);
    FZ_CHECK(r == ag_tape_status(t));
    if (!t) {
        FZ_CHECK(r == AG_ERR_NULL);
    } else if (before.status != AG_OK) {
        FZ_CHECK(r == before.status && strcmp(ag_tape_error(t), before.msg) == 0);
    } else {
        hclass cy = classify(s, k, &Y), cs = own_seed ? H_OK : classify(s, k, &S);
        if (cy == H_STALE_OLD || (cy == H_OK && seeded && ag_requires_grad(Y.x) &&
                                  cs == H_STALE_OLD)) {
            /* may read as a newer result */
        } else if (cy != H_OK) {
            FZ_CHECK(r != AG_OK);
            check_refused(t, cy, same_tape_of(&Y, k));
        } else if (!ag_requires_grad(Y.x)) {
            FZ_CHECK(r == AG_ERR_STATE || r == AG_ERR_NOMEM);
        } else if (seeded && cs != H_OK) {
            FZ_CHECK(r != AG_OK);
            check_refused(t, cs, same_tape_of(&S, k));
        } else {
            bool ok = seeded ? ag_tensor_dtype(S.x) == ag_tensor_dtype(Y.x) && same_shape(S.x, Y.x)
                             : ag_tensor_numel(Y.x) == 1;
            if (!ok)
                FZ_CHECK(r != AG_OK);
            else
                FZ_CHECK(r == AG_OK || r == AG_ERR_NOMEM || (r == AG_ERR_NUMERIC && s->checked[k]));
            if (r == AG_OK)
                mark_held(s, k, &Y, 1);
        }
        if (r != AG_OK)
            FZ_CHECK(ag_tape_error(t)[0] != '\0');
        FZ_CHECK(ag_tape_size(t) == before.size);
    }
    if (own_seed)
        ag_tensor_free(S.x);
    after_backward(s);
}

/* ------------------------------------------------------------ gradients */

/* A hash of every live leaf's grad: ag_gradients must leave them alone. */
static uint64_t leaf_grads_hash(const state *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < s->n_leaves; i++) {
        const leaf *l = &s->leaves[i];
        if (l->dead || !ag_grad(l->x))
            continue;
        const unsigned char *p = ag_grad(l->x);
        size_t n = ag_tensor_numel(l->x) * ag_dtype_size(ag_tensor_dtype(l->x));
        for (size_t j = 0; j < n; j++)
            h = (h ^ p[j]) * 1099511628211ULL;
    }
    return h;
}

/* The status of a call that checks y, then its inputs' handles and
 * requires_grad (ag_gradients' order): the handle to blame and its class,
 * or -2 for a wild one (older than one reset), -1 when all are usable. */
static int gradients_refusal(const state *s, int k, const slot *Y, const slot *X, size_t n,
                             hclass *c)
{
    *c = classify(s, k, Y);
    if (*c == H_STALE_OLD)
        return -2;
    if (*c != H_OK)
        return 0;
    if (!ag_requires_grad(Y->x) || ag_tensor_numel(Y->x) != 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        *c = classify(s, k, &X[i]);
        if (*c == H_STALE_OLD)
            return -2;
        if (*c != H_OK)
            return 1 + (int)i;
        if (!ag_requires_grad(X[i].x))
            return -1;
    }
    *c = H_OK;
    return -1;
}

/* What ag_gradients must return given usable handles, before it runs. */
static bool gradients_valid(const slot *Y, const slot *X, size_t n)
{
    if (!ag_requires_grad(Y->x) || ag_tensor_numel(Y->x) != 1)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!ag_requires_grad(X[i].x))
            return false;
    return true;
}

/* The gradients of the fused path and of the recorded one agree where
 * everything is finite and moderate. */
static void compare_gradients(const ag_tensor *g1, const ag_tensor *g2)
{
    size_t n = ag_tensor_numel(g1);
    double big = 0;
    for (size_t i = 0; i < n; i++) {
        double a = element(g1, i), b = element(g2, i);
        if (!isfinite(a) || !isfinite(b) || fabs(a) > 1e6 || fabs(b) > 1e6)
            return;
        big = fmax(big, fmax(fabs(a), fabs(b)));
    }
    double tol = (ag_tensor_dtype(g1) == AG_F64 ? 1e-6 : 1e-2) * (1 + big);
    for (size_t i = 0; i < n; i++) {
        double a = element(g1, i), b = element(g2, i);
        if (fabs(a - b) > tol)
            fprintf(stderr, "gradients: element %zu: recorded %.17g, fused %.17g\n", i, a, b);
        FZ_CHECK(fabs(a - b) <= tol);
    }
}

static void check_grads_out(state *s, int k, const slot *X, size_t n, ag_tensor *const *g)
{
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(g[i] != NULL);
        FZ_CHECK(ag_tensor_dtype(g[i]) == ag_tensor_dtype(X[i].x));
        FZ_CHECK(same_shape(g[i], X[i].x));
        touch(g[i]);
        push(s, g[i], k);
    }
}

static void run_gradients(state *s, input *in, bool create)
{
    uint8_t tb = byte(in);
    int k = tb & 1;
    ag_tape *t = tb % 64 == 63 ? NULL : s->t[k];
    slot Y = tb & 2 ? pick(s, in) : pick_grad(s, in, true);
    /* now and then reduce y to one element first */
    if ((tb & 12) == 4 && t && ag_tape_status(t) == AG_OK && classify(s, k, &Y) == H_OK &&
        ag_tensor_numel(Y.x) != 1) {
        ag_tensor *y = ag_sum(t, Y.x);
        if (!y)
            return;
        mark_held(s, k, &Y, 1);
        Y = push_slot(s, y, k, -1);
    }
    size_t n = byte(in) % 5;
    slot X[4];
    ag_tensor *xs[4], *g[4] = {NULL, NULL, NULL, NULL};
    for (size_t i = 0; i < n; i++) {
        X[i] = pick_grad(s, in, false);
        xs[i] = X[i].x;
    }
    uint8_t fb = byte(in);
    bool null_inputs = n && fb % 32 == 1, null_grads = n && fb % 32 == 2;
    unsigned flags = (create ? AG_CREATE_GRAPH : 0) | (fb % 16 == 3 ? 0xf0u : 0);
    uint64_t h = leaf_grads_hash(s);
    tape_snap before = snap(t);
    TRACE("ag_gradients on tape %d, flags %#x: y %p (class %d), inputs", k, flags, (void *)Y.x,
          (int)classify(s, k, &Y));
    for (size_t i = 0; i < n; i++)
        TRACE(" %p (class %d)", (void *)xs[i], (int)classify(s, k, &X[i]));
    ag_status r = ag_gradients(t, Y.x, n, null_inputs ? NULL : xs, null_grads ? NULL : g, flags);
    TRACE(" -> %d %s\n", (int)r, ag_tape_error(t));
    FZ_CHECK(r == ag_tape_status(t));
    FZ_CHECK(leaf_grads_hash(s) == h); /* leaves' own grads are left untouched */
    if (!t) {
        FZ_CHECK(r == AG_ERR_NULL);
        return;
    }
    if (before.status != AG_OK) {
        FZ_CHECK(r == before.status && strcmp(ag_tape_error(t), before.msg) == 0);
        return;
    }
    if (r != AG_OK)
        FZ_CHECK(ag_tape_error(t)[0] != '\0');
    if (!create)
        FZ_CHECK(ag_tape_size(t) == before.size);
    hclass c;
    int who = gradients_refusal(s, k, &Y, X, null_inputs || null_grads ? 0 : n, &c);
    if (who == -2)
        return; /* an old handle may read as a newer result */
    if (who >= 0) {
        FZ_CHECK(r != AG_OK);
        check_refused(t, c, same_tape_of(who ? &X[who - 1] : &Y, k));
        return;
    }
    if (null_inputs || null_grads || !gradients_valid(&Y, X, n) ||
        (create && !s->recording[k])) {
        FZ_CHECK(r != AG_OK);
        return;
    }
    if (r != AG_OK) {
        bool fine = r == AG_ERR_NOMEM || (r == AG_ERR_NUMERIC && s->checked[k]);
        if (!fine)
            fprintf(stderr, "ag_gradients failed: %s\n", ag_tape_error(t));
        FZ_CHECK(fine);
        return;
    }
    mark_held(s, k, &Y, 1);
    mark_held(s, k, X, (int)n);
    check_grads_out(s, k, X, n, g);
    if (!create || !(fb & 0x80))
        return;
    /* the fused gradients of the same y: the same numbers */
    ag_tensor *g2[4] = {NULL, NULL, NULL, NULL};
    r = ag_gradients(t, Y.x, n, xs, g2, 0);
    FZ_CHECK(r == ag_tape_status(t));
    if (r != AG_OK) {
        FZ_CHECK(r == AG_ERR_NOMEM || (r == AG_ERR_NUMERIC && s->checked[k]));
        return;
    }
    for (size_t i = 0; i < n; i++)
        compare_gradients(g[i], g2[i]);
}

static void hvp_result(state *s, int k, ag_tape *t, ag_status r, const tape_snap *before,
                       const slot *Y, const slot *X, const slot *V, const bool *made, size_t n,
                       bool null_arg, ag_tensor *const *hv);

/* ag_hvp with directions made to fit (or picked from the pool), and now
 * and then ag_hessian of a small input. */
static void run_hvp(state *s, input *in)
{
    uint8_t tb = byte(in);
    int k = tb & 1;
    ag_tape *t = tb % 64 == 63 ? NULL : s->t[k];
    slot Y = pick_grad(s, in, true);
    if (tb & 2) { /* ag_hessian */
        slot X = pick_grad(s, in, false);
        if (readable(s, &X) && ag_tensor_numel(X.x) > 8)
            return;
        ag_tensor *H = NULL;
        tape_snap before = snap(t);
        ag_status r = ag_hessian(t, Y.x, X.x, tb & 4 ? &H : NULL);
        TRACE("ag_hessian on tape %d: y %p, x %p -> %d %s\n", k, (void *)Y.x, (void *)X.x, (int)r,
              t ? ag_tape_error(t) : "");
        FZ_CHECK(t ? r == ag_tape_status(t) : r == AG_ERR_NULL);
        if (!t || before.status != AG_OK || r != AG_OK)
            return;
        if (classify(s, k, &X) == H_STALE_OLD || classify(s, k, &Y) == H_STALE_OLD)
            return; /* they may read as newer results */
        FZ_CHECK(classify(s, k, &X) == H_OK && H);
        size_t N = ag_tensor_numel(X.x);
        FZ_CHECK(ag_tensor_rank(H) == 2 && ag_tensor_shape(H)[0] == N &&
                 ag_tensor_shape(H)[1] == N);
        FZ_CHECK(ag_tensor_dtype(H) == ag_tensor_dtype(X.x));
        touch(H);
        push(s, H, k);
        return;
    }
    size_t n = byte(in) % 4;
    slot X[3], V[3];
    ag_tensor *xs[3], *vs[3], *hv[3] = {NULL, NULL, NULL};
    bool made[3] = {false, false, false};
    for (size_t i = 0; i < n; i++) {
        X[i] = pick_grad(s, in, false);
        xs[i] = X[i].x;
        uint8_t vb = byte(in);
        V[i] = none();
        if (vb % 8 != 0 && X[i].x && readable(s, &X[i]) && ag_tensor_numel(X[i].x) <= 4096) {
            ag_dtype dt = ag_tensor_dtype(X[i].x);
            if (vb % 16 == 9)
                dt = dt == AG_F32 ? AG_F64 : AG_F32;
            V[i].x = ag_rand_normal(dt, ag_tensor_shape(X[i].x), ag_tensor_rank(X[i].x), 0, 1,
                                    &s->rng);
            made[i] = V[i].x != NULL;
        } else {
            V[i] = pick(s, in);
        }
        vs[i] = V[i].x;
    }
    uint8_t fb = byte(in);
    bool null_v = n && fb % 32 == 1, null_hv = n && fb % 32 == 2;
    uint64_t h = leaf_grads_hash(s);
    tape_snap before = snap(t);
    TRACE("ag_hvp on tape %d: y %p, %zu inputs\n", k, (void *)Y.x, n);
    ag_status r = ag_hvp(t, Y.x, n, xs, null_v ? NULL : vs, null_hv ? NULL : hv);
    TRACE("ag_hvp -> %d %s\n", (int)r, t ? ag_tape_error(t) : "");
    FZ_CHECK(t ? r == ag_tape_status(t) : r == AG_ERR_NULL);
    FZ_CHECK(leaf_grads_hash(s) == h);
    hvp_result(s, k, t, r, &before, &Y, X, V, made, n, null_v || null_hv, hv);
    for (size_t i = 0; i < n; i++)
        if (made[i])
            ag_tensor_free(vs[i]); /* the tape holds it if it took it */
}

/* What ag_hvp must have returned, in its order of checks. */
static void hvp_result(state *s, int k, ag_tape *t, ag_status r, const tape_snap *before,
                       const slot *Y, const slot *X, const slot *V, const bool *made, size_t n,
                       bool null_arg, ag_tensor *const *hv)
{
    if (!t || before->status != AG_OK) {
        if (t)
            FZ_CHECK(r == before->status && strcmp(ag_tape_error(t), before->msg) == 0);
        return;
    }
    if (r != AG_OK)
        FZ_CHECK(ag_tape_error(t)[0] != '\0');
    /* each direction in order: its handle, its input's, then the fit */
    if (null_arg) {
        FZ_CHECK(r == AG_ERR_NULL || r == AG_ERR_NOMEM);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        hclass c = made[i] ? H_OK : classify(s, k, &V[i]);
        if (c == H_STALE_OLD)
            return;
        if (c != H_OK) {
            FZ_CHECK(r != AG_OK);
            check_refused(t, c, same_tape_of(&V[i], k));
            return;
        }
        c = classify(s, k, &X[i]);
        if (c == H_STALE_OLD)
            return;
        if (c != H_OK) {
            FZ_CHECK(r != AG_OK);
            check_refused(t, c, same_tape_of(&X[i], k));
            return;
        }
        if (ag_tensor_dtype(V[i].x) != ag_tensor_dtype(X[i].x) || !same_shape(V[i].x, X[i].x)) {
            FZ_CHECK(r == AG_ERR_SHAPE || r == AG_ERR_NOMEM);
            return;
        }
    }
    hclass c;
    int who = gradients_refusal(s, k, Y, X, n, &c);
    if (who == -2)
        return;
    if (who >= 0) {
        FZ_CHECK(r != AG_OK);
        check_refused(t, c, same_tape_of(who ? &X[who - 1] : Y, k));
        return;
    }
    if (!gradients_valid(Y, X, n) || !s->recording[k]) {
        FZ_CHECK(r != AG_OK);
        return;
    }
    if (r != AG_OK) {
        bool fine = r == AG_ERR_NOMEM || (r == AG_ERR_NUMERIC && s->checked[k]);
        if (!fine)
            fprintf(stderr, "ag_hvp failed: %s\n", ag_tape_error(t));
        FZ_CHECK(fine);
        return;
    }
    mark_held(s, k, Y, 1);
    mark_held(s, k, X, (int)n);
    check_grads_out(s, k, X, n, hv);
}

/* ------------------------------------------------------------ gradcheck */

typedef struct {
    size_t n_ops;
    int op[GC_MAX_OPS];
    uint8_t arg[GC_MAX_OPS][3];
    attrs at[GC_MAX_OPS];
    ag_rng rng;
    bool nonfinite; /* some run made a NaN or Inf: differences mean nothing */
} gc_prog;

/* Ops that are smooth everywhere (no kinks, poles or domain edges) and
 * keep values moderate: on them a gradient check must pass. */
static bool smooth(int op, const attrs *at)
{
    switch (op) {
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_NEG: case OP_SIGMOID: case OP_TANH:
    case OP_SOFTPLUS: case OP_MATMUL: case OP_TRANSPOSE: case OP_RESHAPE: case OP_CONCAT:
    case OP_SLICE: case OP_SUM: case OP_MEAN: case OP_SUM_AXIS: case OP_MEAN_AXIS:
    case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_MSE: case OP_QUAD: case OP_BCE_LOGITS:
    case OP_SIN: case OP_COS: case OP_ATAN: case OP_ERF: case OP_SQUARE: case OP_GELU:
    case OP_SILU: case OP_PERMUTE: case OP_EXPAND: case OP_PROD_AXIS: case OP_VAR_AXIS:
    case OP_LOGSUMEXP: case OP_SUM_AXES: case OP_MEAN_AXES:
        return true;
    case OP_SCALE: case OP_ADD_SCALAR:
        return fabs(at->c) <= 4;
    case OP_LAYER_NORM:
        return at->c >= 0.01;
    default:
        return false;
    }
}

static ag_tensor *gc_fn(ag_tape *t, ag_tensor *const *inputs, void *ctx)
{
    gc_prog *p = ctx;
    ag_tensor *vals[8 + GC_MAX_OPS];
    size_t nv = 0;
    for (; inputs && nv < 8 && inputs[nv]; nv++) /* the caller ends the list with NULL */
        vals[nv] = inputs[nv];
    if (nv == 0)
        return NULL;
    ag_rng rng = p->rng; /* each run draws the same dropout masks */
    for (size_t k = 0; k < p->n_ops; k++) {
        ag_tensor *y = call_op(t, p->op[k], vals[p->arg[k][0] % nv], vals[p->arg[k][1] % nv],
                               vals[p->arg[k][2] % nv], &p->at[k], &rng);
        if (!y)
            return NULL;
        for (size_t i = 0; i < ag_tensor_numel(y); i++)
            p->nonfinite |= !isfinite(element(y, i));
        vals[nv++] = y;
    }
    return vals[nv - 1];
}

typedef struct {
    ag_tensor *x;
    bool rg;
    void *data, *grad;
    size_t bytes;
} gc_saved;

static void run_gradcheck(state *s, input *in)
{
    ag_tensor *inputs[4] = {NULL, NULL, NULL, NULL}, *made[3] = {NULL, NULL, NULL};
    size_t n = byte(in) % 4;
    for (size_t i = 0; i < n; i++) {
        uint8_t how = byte(in);
        if (how % 4 == 0) {
            slot x = pick_readable(s, in); /* any tensor: the wrong ones must be refused */
            if (x.tape < 0 && ag_tensor_dtype(x.x) == AG_F64 && ag_tensor_numel(x.x) > 16)
                x.x = NULL;   /* a big f64 leaf would take too long */
            inputs[i] = x.x;
        } else {
            size_t sh[2], rank = how % 3;
            sh[0] = 1 + byte(in) % 3;
            sh[1] = 1 + byte(in) % 2;
            made[i] = inputs[i] = ag_rand_normal(AG_F64, sh, rank, 0, 1, &s->rng);
            if (made[i] && (how & 8))
                ag_set_requires_grad(made[i], true);
        }
    }
    gc_prog p = {.n_ops = 1 + byte(in) % GC_MAX_OPS};
    ag_rng_seed(&p.rng, byte(in));
    bool second = byte(in) % 4 == 0; /* gradgradcheck: the recorded backwards */
    bool must_pass = n > 0; /* fresh inputs and smooth ops: the check must pass */
    for (size_t i = 0; i < n; i++)
        must_pass = must_pass && made[i];
    for (size_t k = 0; k < p.n_ops; k++) {
        p.op[k] = byte(in) % N_OPS;
        p.arg[k][0] = byte(in);
        p.arg[k][1] = byte(in);
        p.arg[k][2] = arity(p.op[k]) == 3 ? byte(in) : 0;
        read_attrs(in, p.op[k], n ? inputs[0] : NULL, &p.at[k]);
        must_pass = must_pass && smooth(p.op[k], &p.at[k]);
    }
    /* what the inputs hold before, to check that all is restored */
    gc_saved sv[3] = {{0}};
    for (size_t i = 0; i < n; i++) {
        ag_tensor *x = inputs[i];
        sv[i].x = x;
        if (!x)
            continue;
        sv[i].rg = ag_requires_grad(x);
        sv[i].bytes = ag_tensor_numel(x) * ag_dtype_size(ag_tensor_dtype(x));
        sv[i].data = malloc(sv[i].bytes + 1);
        memcpy(sv[i].data, ag_data(x), sv[i].bytes);
        if (ag_grad(x)) {
            sv[i].grad = malloc(sv[i].bytes + 1);
            memcpy(sv[i].grad, ag_grad(x), sv[i].bytes);
        }
    }
    static const double eps[] = {0, 1e-6, 1e-3, -1};
    ag_gradcheck_report rep;
    bool null_list = n && byte(in) % 16 == 0;
    double step = eps[byte(in) % 4];
    if (must_pass)
        step = second ? 1e-5 : 1e-6;
    ag_status st = second ? ag_gradgradcheck(gc_fn, &p, n, null_list ? NULL : inputs, step, 1e-5,
                                             1e-3, &rep)
                          : ag_gradcheck(gc_fn, &p, n, null_list ? NULL : inputs, step, 1e-5,
                                         1e-3, &rep);
    TRACE("%s of %zu ops on %zu inputs -> %d (%s) %s\n", second ? "gradgradcheck" : "gradcheck",
          p.n_ops, n, (int)st, st == AG_OK ? (rep.passed ? "passed" : "failed") : "",
          rep.message);
    if (must_pass && !null_list && st == AG_OK && !p.nonfinite && !rep.passed) {
        fprintf(stderr, "%s failed: input %zu element %zu numeric %.17g analytic %.17g; ops",
                second ? "gradgradcheck" : "gradcheck", rep.worst_input, rep.worst_index,
                rep.numeric, rep.analytic);
        for (size_t k = 0; k < p.n_ops; k++)
            fprintf(stderr, " %d(%u,%u,%u)", p.op[k], p.arg[k][0], p.arg[k][1], p.arg[k][2]);
        fprintf(stderr, "\n");
        FZ_CHECK(rep.passed);
    }
    for (size_t i = 0; i < n; i++) {
        ag_tensor *x = sv[i].x;
        if (!x)
            continue;
        FZ_CHECK(memcmp(ag_data(x), sv[i].data, sv[i].bytes) == 0);
        FZ_CHECK(ag_requires_grad(x) == sv[i].rg);
        if (sv[i].grad)
            FZ_CHECK(ag_grad(x) && memcmp(ag_grad(x), sv[i].grad, sv[i].bytes) == 0);
        free(sv[i].data);
        free(sv[i].grad);
    }
    for (size_t i = 0; i < 3; i++)
        ag_tensor_free(made[i]);
}

/* ------------------------------------------------------------ the program */

/* Frees a leaf, whoever still uses it. */
static void free_leaf(state *s, input *in)
{
    if (!s->n_leaves)
        return;
    leaf *l = &s->leaves[byte(in) % s->n_leaves];
    if (l->freed)
        return;
    TRACE("free leaf %p\n", (void *)l->x);
    ag_tensor_free(l->x);
    l->freed = true;
    prune(s);
}

static void run_check_input(state *s, input *in, int k)
{
    ag_tape *t = s->t[k];
    slot X = pick(s, in);
    uint8_t b = byte(in);
    const char *fn = b & 1 ? "my_layer" : NULL, *arg = b & 2 ? "x" : NULL;
    tape_snap before = snap(t);
    ag_status r = ag_tape_check_input(t, X.x, fn, arg);
    TRACE("check_input on tape %d: %p (class %d) -> %d %s\n", k, (void *)X.x,
          (int)classify(s, k, &X), (int)r, t ? ag_tape_error(t) : "");
    FZ_CHECK(r == ag_tape_status(t));
    if (!t || before.status != AG_OK) {
        if (t)
            FZ_CHECK(r == before.status && strcmp(ag_tape_error(t), before.msg) == 0);
        return;
    }
    hclass c = classify(s, k, &X);
    if (c == H_STALE_OLD)
        return;
    if (c == H_OK) {
        FZ_CHECK(r == AG_OK || r == AG_ERR_NOMEM);
        if (r == AG_OK)
            mark_held(s, k, &X, 1);
        return;
    }
    FZ_CHECK(r != AG_OK);
    check_refused(t, c, same_tape_of(&X, k));
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s: %s ", fn ? fn : "?", arg ? arg : "tensor");
    if (r != AG_ERR_NOMEM)
        FZ_CHECK(strncmp(ag_tape_error(t), prefix, strlen(prefix)) == 0);
}

/* Resets tape k while one of its results is kept, runs a few ops, then
 * gives the result to an op, backward, ag_gradients or
 * ag_tape_check_input of either tape: one reset old, it must be refused. */
static void run_reuse(state *s, input *in, int k)
{
    if (!s->t[k])
        return;
    slot R = none();
    uint8_t b = byte(in);
    for (size_t i = 0; i < s->n_pool && !R.x; i++)
        if (s->pool[(b + i) % s->n_pool].tape == k)
            R = s->pool[(b + i) % s->n_pool];
    ag_tape_reset(s->t[k]);
    tape_was_reset(s, k);
    if (!R.x)
        return;
    for (size_t n = byte(in) % 4; n-- > 0;)
        run_op(s, in, byte(in) % N_OPS);
    uint8_t how = byte(in);
    int kk = how & 1 ? 1 - k : k;
    ag_tape *t = s->t[kk];
    if (!t)
        return;
    FZ_CHECK(classify(s, kk, &R) == H_STALE1);
    tape_snap before = snap(t);
    ag_tensor *g = NULL;
    ag_status r;
    switch ((how >> 1) % 6) {
    case 0: r = ag_neg(t, R.x) ? AG_OK : ag_tape_status(t); break;
    case 1: r = ag_mul(t, R.x, R.x) ? AG_OK : ag_tape_status(t); break;
    case 2: r = ag_where(t, R.x, R.x, R.x) ? AG_OK : ag_tape_status(t); break;
    case 3: r = ag_backward(t, R.x); break;
    case 4:
        r = ag_gradients(t, R.x, how & 64 ? 1 : 0, &R.x, &g, how & 128 ? AG_CREATE_GRAPH : 0);
        break;
    default: r = ag_tape_check_input(t, R.x, "reuse", "x"); break;
    }
    TRACE("reuse on tape %d of a result of tape %d -> %d %s\n", kk, k, (int)r, ag_tape_error(t));
    FZ_CHECK(r == ag_tape_status(t));
    if (before.status != AG_OK) {
        FZ_CHECK(r == before.status && strcmp(ag_tape_error(t), before.msg) == 0);
        return;
    }
    FZ_CHECK(r != AG_OK);
    check_refused(t, H_STALE1, kk == k);
}

static void run_misc(state *s, input *in)
{
    uint8_t what = byte(in) % 22;
    int k = byte(in) & 1;
    ag_tape *t = s->t[k];
    slot X = pick_readable(s, in);
    switch (what) {
    case 0: /* reset */
        ag_tape_reset(t);
        if (t) {
            tape_was_reset(s, k);
            FZ_CHECK(ag_tape_status(t) == AG_OK && ag_tape_size(t) == 0 && !ag_tape_error(t)[0]);
        }
        break;
    case 1: /* free and make anew */
        ag_tape_free(t);
        s->t[k] = byte(in) % 8 ? ag_tape_new() : NULL;
        tape_was_freed(s, k);
        s->checked[k] = false;
        s->recording[k] = s->t[k] != NULL;
        break;
    case 2: {
        bool on = byte(in) & 1;
        bool was = ag_tape_set_recording(t, on);
        FZ_CHECK(!t || was == s->recording[k]);
        if (t)
            s->recording[k] = on;
        FZ_CHECK(ag_tape_recording(t) == (t && on));
        break;
    }
    case 3: {
        bool on = byte(in) & 1;
        bool was = ag_tape_set_checked(t, on);
        FZ_CHECK(!t || was == s->checked[k]);
        if (t)
            s->checked[k] = on;
        break;
    }
    case 4:
        ag_retain_grad(X.x);
        break;
    case 5:
        ag_zero_grad(X.x);
        if (ag_grad(X.x))
            for (size_t i = 0; i < ag_tensor_numel(X.x); i++)
                FZ_CHECK(ag_get_grad(X.x, i) == 0);
        break;
    case 6: {
        bool on = byte(in) & 1;
        ag_status st = ag_set_requires_grad(X.x, on);
        if (!X.x)
            FZ_CHECK(st == AG_ERR_NULL);
        else if (X.tape >= 0)
            FZ_CHECK(st == AG_ERR_STATE);
        else
            FZ_CHECK(st == AG_OK || (on && st == AG_ERR_NOMEM));
        break;
    }
    case 7: {
        size_t i = byte(in) % 8;
        double v = ag_get(X.x, i), g = ag_get_grad(X.x, i);
        if (!X.x || i >= ag_tensor_numel(X.x))
            FZ_CHECK(isnan(v) && isnan(g));
        if (!ag_grad(X.x))
            FZ_CHECK(isnan(g));
        (void)ag_item(X.x);
        break;
    }
    case 8:
        FZ_CHECK(ag_tensor_print(X.x, devnull) == (X.x ? AG_OK : AG_ERR_NULL));
        break;
    case 9:
    {
        ag_status r = ag_tape_dot(t, devnull); /* it maps tensors to node numbers */
        FZ_CHECK(t ? r == AG_OK || r == AG_ERR_NOMEM : r == AG_ERR_NULL);
    }
        break;
    case 10: {
        static const ag_status codes[] = {AG_OK, AG_ERR_SHAPE, AG_ERR_VALUE, AG_ERR_NUMERIC};
        ag_status c = codes[byte(in) % 4];
        tape_snap before = snap(t);
        ag_status r = ag_tape_fail(t, c, "fuzz %d", (int)c);
        FZ_CHECK(r == ag_tape_status(t));
        if (t && before.status == AG_OK && c != AG_OK)
            FZ_CHECK(r == c && strncmp(ag_tape_error(t), "fuzz ", 5) == 0);
        if (t && before.status != AG_OK)
            FZ_CHECK(r == before.status && strcmp(ag_tape_error(t), before.msg) == 0);
        break;
    }
    case 11:
        ag_tape_set_threads(t, byte(in) % 3);
        break;
    case 12:
        ag_tensor_free(X.tape >= 0 ? X.x : NULL); /* a tape's tensor: must be a no-op */
        break;
    case 13: { /* a long chain: the record array grows while results point into it */
        size_t n = 1 + 4 * (size_t)byte(in), done = 0;
        ag_tensor *y = X.x;
        tape_snap before = snap(t);
        bool rg = ag_requires_grad(y) && ag_tape_recording(t);
        do
            y = done % 2 ? ag_add_scalar(t, y, 1) : ag_neg(t, y);
        while (y && ++done < n);
        check_status(t, y, &before);
        if (y) {
            FZ_CHECK(classify(s, k, &X) == H_OK);
            FZ_CHECK(ag_tape_size(t) == before.size + (rg ? n : 0));
            FZ_CHECK(same_shape(y, X.x));
            touch(y);
            mark_held(s, k, &X, 1);
            push(s, y, k);
        }
        break;
    }
    case 14: { /* the small helpers */
        uint8_t v = byte(in);
        FZ_CHECK(ag_status_string((ag_status)(v % 14)) != NULL);
        FZ_CHECK(strcmp(ag_dtype_name((ag_dtype)(v % 3)), v % 3 == 2 ? "?" : v % 3 ? "f64" : "f32") == 0);
        static const size_t sizes[] = {4, 8, 0};
        FZ_CHECK(ag_dtype_size((ag_dtype)(v % 3)) == sizes[v % 3]);
        slot Y = pick_readable(s, in);
        if (X.x && Y.x && ag_tensor_dtype(X.x) == ag_tensor_dtype(Y.x)) {
            size_t n = ag_tensor_numel(X.x) < ag_tensor_numel(Y.x) ? ag_tensor_numel(X.x)
                                                                 : ag_tensor_numel(Y.x);
            double rtol = scalar(in), atol = scalar(in);
            ag_close_report rep;
            bool close = ag_allclose(ag_tensor_dtype(X.x), n, ag_data(X.x), ag_data(Y.x), rtol,
                                     atol, &rep);
            bool want = true;
            for (size_t i = 0; i < n; i++) {
                double a = element(X.x, i), b = element(Y.x, i);
                want = want && fabs(a - b) <= atol + rtol * fabs(b);
            }
            FZ_CHECK(close == want);
            FZ_CHECK(n == 0 || rep.worst_index < n);
        }
        break;
    }
    case 15: case 16:
        free_leaf(s, in);
        break;
    case 17:
        run_check_input(s, in, k);
        break;
    case 18: case 19:
        run_reuse(s, in, k);
        break;
    default:
        new_leaf(s, in);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    uint8_t f = byte(&in);
    fz_mem_begin(f >= 192 ? (size_t)(f - 191) * (1 + byte(&in) % 8) : 0);
    state *s = calloc(1, sizeof *s);
    if (!s)
        return 0;
    ag_rng_seed(&s->rng, u64(&in) % 1000);
    for (int k = 0; k < 2; k++) {
        s->t[k] = ag_tape_new();
        s->recording[k] = s->t[k] != NULL;
        s->epoch[k] = ++s->epochs;
    }
    for (int step = 0; step < MAX_STEPS && in.n > 0; step++) {
        uint8_t c = byte(&in);
        if (c < 36)
            new_leaf(s, &in);
        else if (c < 196)
            run_op(s, &in, (c - 36) % N_OPS);
        else if (c < 206)
            run_backward(s, &in, c & 1);
        else if (c < 218)
            run_gradients(s, &in, c & 1);
        else if (c < 222)
            run_hvp(s, &in);
        else if (c < 228)
            run_gradcheck(s, &in);
        else
            run_misc(s, &in);
    }
    for (int k = 0; k < 2; k++)
        ag_tape_free(s->t[k]);
    for (size_t i = 0; i < s->n_leaves; i++)
        if (!s->leaves[i].freed)
            ag_tensor_free(s->leaves[i].x);
    for (size_t i = 0; i < s->n_leaves; i++) {
        free(s->leaves[i].buf);
        free(s->leaves[i].gbuf);
    }
    free(s);
    fz_mem_end();
    return 0;
}
