/* fuzz_api: the input bytes are a program that drives the public autograd
 * API: leaf tensors of random dtype and shape (ranks 0..8 and the invalid
 * 9, sizes mostly 0..5, some up to 128 (at most 16384 elements), and now
 * and then a huge dimension that must overflow or fail cleanly), sometimes
 * NULL; then ops of every kind with random operands, axes, ranges, scalars
 * (NaN and Inf too) and target shapes, on two tapes (results of one are
 * invalid on the other); backward with and without a seed, retain_grad,
 * tape reset and free, recording off, checked mode, threads, long op
 * chains, gradcheck of a small random function on tiny f64 inputs,
 * allclose, printing and DOT export. The first byte can make the Nth
 * allocation fail; the allocator also caps live memory at 2 MiB.
 *
 * Checked with __builtin_trap (FZ_CHECK), so libFuzzer saves the input:
 *  - an op returns non-NULL exactly when its tape's status is AG_OK; a NULL
 *    comes with a non-empty message; once a tape is in error, ops return
 *    NULL and the first error (status and message) stays;
 *  - a result has rank <= 8, numel = the product of its shape, a valid
 *    dtype, the shape the op's documented rule gives, requires grad exactly
 *    when it was recorded (an input requires grad, recording on, not
 *    detach), one record more on the tape exactly then;
 *  - an op whose arguments the documented rules accept succeeds unless
 *    memory runs out (or checked mode sees a NaN/Inf); one they reject fails;
 *  - binary ops, transpose, slice, concat and reshape give the same values
 *    as a plain reference loop (bitwise);
 *  - backward returns the tape's status; grads are readable over numel;
 *  - gradcheck restores its inputs' values, grads and requires_grad, and
 *    passes on fresh inputs through ops that are smooth everywhere (so a
 *    wrong backward rule for some shape or broadcast shows);
 *  - leaf constructors return NULL exactly for invalid arguments (or when
 *    memory runs out), and describe the shape they were given;
 *  - at the end every allocation of the engine has been freed. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"

#include <limits.h>
#include <math.h>

#define MEM_LIMIT (2u << 20)
#define MAX_NUMEL 16384 /* per leaf: [128, 128] reaches the packed, threaded GEMM */
#define MAX_LEAVES 48
#define POOL 32
#define MAX_STEPS 300
#define GC_MAX_OPS 6

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_mem_install(MEM_LIMIT);
    devnull = fopen("/dev/null", "w");
    return 0;
}

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

/* ------------------------------------------------------------ state */

typedef struct {
    ag_tensor *x;
    void *buf, *gbuf; /* caller memory of an ag_view */
} leaf;

typedef struct {
    ag_tensor *x;
    int tape; /* -1: a leaf; else the tape that made it */
} slot;

typedef struct {
    ag_tape *t[2];
    bool checked[2], recording[2];
    leaf leaves[MAX_LEAVES];
    size_t n_leaves;
    slot pool[POOL];
    size_t n_pool, next;
    ag_rng rng;
} state;

static void push(state *s, ag_tensor *x, int tape)
{
    if (!x)
        return;
    if (s->n_pool < POOL) {
        s->pool[s->n_pool++] = (slot){x, tape};
    } else {
        s->pool[s->next] = (slot){x, tape};
        s->next = (s->next + 1) % POOL;
    }
}

/* Forgets the results of tape k (after a reset or free). */
static void drop_tape(state *s, int k)
{
    size_t j = 0;
    for (size_t i = 0; i < s->n_pool; i++)
        if (s->pool[i].tape != k)
            s->pool[j++] = s->pool[i];
    s->n_pool = j;
    s->next = 0;
}

static slot pick(state *s, input *in)
{
    uint8_t b = byte(in);
    if (s->n_pool == 0 || b % 16 == 15)
        return (slot){NULL, -1};
    return s->pool[b % s->n_pool];
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
    memcpy(s.shape, ag_tensor_shape(x), s.rank * sizeof(size_t));
    return s;
}

static bool has_huge(const size_t *shape, size_t rank)
{
    for (size_t i = 0; i < rank; i++)
        if (shape[i] > 5)
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
    if (!has_huge(s.shape, s.rank))
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

static void check_described(const ag_tensor *x, ag_dtype dt, const size_t *shape, size_t rank)
{
    size_t n;
    FZ_CHECK(ag_tensor_dtype(x) == dt);
    FZ_CHECK(ag_tensor_rank(x) == rank);
    FZ_CHECK(rank == 0 || memcmp(ag_tensor_shape(x), shape, rank * sizeof *shape) == 0);
    FZ_CHECK(numel_of(shape, rank, &n) && ag_tensor_numel(x) == n);
    FZ_CHECK(!ag_requires_grad(x));
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

static void new_leaf(state *s, input *in)
{
    if (s->n_leaves == MAX_LEAVES)
        return;
    uint8_t how = byte(in) % 9;
    ag_dtype dt = byte(in) & 1 ? AG_F64 : AG_F32;
    bool bad_dtype = byte(in) % 32 == 0;
    if (bad_dtype)
        dt = (ag_dtype)(2 + byte(in) % 3);
    shp sh = read_shape(in);
    const size_t *shape = sh.shape;
    if (sh.rank > 0 && byte(in) % 32 == 0)
        shape = NULL;
    size_t numel, bytes = 0;
    bool size_ok = numel_of(sh.shape, sh.rank, &numel) && numel <= SIZE_MAX / 8 &&
                   (bytes = numel * (dt == AG_F64 ? 8 : 4), true);
    bool valid = !bad_dtype && sh.rank <= AG_MAX_RANK && (sh.rank == 0 || shape) && size_ok;
    bool small = size_ok && numel <= MAX_NUMEL;
    leaf l = {NULL, NULL, NULL};
    bool null_rng = false, null_data = false;
    size_t live_before = fz_mem.live;
    switch (how) {
    case 0: l.x = ag_zeros(dt, shape, sh.rank); break;
    case 1: l.x = ag_ones(dt, shape, sh.rank); break;
    case 2: l.x = ag_full(dt, shape, sh.rank, scalar(in)); break;
    case 3:
        l.x = ag_scalar(dt, scalar(in));
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
            l.x = ag_from_data(dt, shape, sh.rank, buf);
            free(buf);
        } else {
            if (byte(in) & 1)
                l.gbuf = calloc(numel ? numel : 1, 8);
            l.x = ag_view(dt, shape, sh.rank, buf, l.gbuf);
            l.buf = buf;
        }
        valid = valid && !null_data;
        break;
    }
    default: {
        null_rng = byte(in) % 16 == 0;
        double a = scalar(in), b = scalar(in);
        if (how == 6)
            l.x = ag_rand_uniform(dt, shape, sh.rank, a, b, null_rng ? NULL : &s->rng);
        else
            l.x = ag_rand_normal(dt, shape, sh.rank, a, b, null_rng ? NULL : &s->rng);
        valid = valid && !null_rng;
    }
    }
    if (!valid)
        FZ_CHECK(l.x == NULL);
    if (valid && bytes <= MEM_LIMIT / 4 && live_before + bytes + 4096 <= MEM_LIMIT &&
        fz_mem.fail_at == 0)
        FZ_CHECK(l.x != NULL); /* nothing else may stop it */
    if (!l.x) {
        free(l.buf);
        free(l.gbuf);
        return;
    }
    check_described(l.x, dt, sh.shape, sh.rank);
    FZ_CHECK(ag_grad(l.x) == l.gbuf);
    touch(l.x);
    uint8_t g = byte(in);
    if (g & 1) {
        ag_status st = ag_set_requires_grad(l.x, true);
        FZ_CHECK(st == AG_OK || st == AG_ERR_NOMEM);
        FZ_CHECK(ag_requires_grad(l.x) == (st == AG_OK));
        if (st == AG_OK && ag_tensor_numel(l.x))
            FZ_CHECK(ag_grad(l.x) != NULL);
    }
    if (g & 2) {
        static const char *names[] = {"W", "bias", "a_name_that_is_longer_than_31_bytes_for_sure", ""};
        const char *nm = g & 4 ? NULL : names[(g >> 3) % 4];
        ag_tensor_set_name(l.x, nm);
        size_t len = strlen(ag_tensor_name(l.x));
        FZ_CHECK(len <= 31);
        FZ_CHECK(nm ? strncmp(ag_tensor_name(l.x), nm, len) == 0 && (len == strlen(nm) || len == 31)
                    : len == 0);
    }
    s->leaves[s->n_leaves++] = l;
    push(s, l.x, -1);
}

/* ------------------------------------------------------------ ops */

enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV,
    OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_POW, OP_ABS, OP_SIGMOID, OP_TANH, OP_RELU,
    OP_LEAKY, OP_SOFTPLUS, OP_ADD_SCALAR, OP_SCALE,
    OP_MATMUL, OP_TRANSPOSE, OP_RESHAPE, OP_CONCAT, OP_SLICE, OP_CAST, OP_DETACH,
    OP_SUM, OP_MEAN, OP_SUM_AXIS, OP_MEAN_AXIS, OP_MAX_AXIS, OP_SOFTMAX, OP_LOG_SOFTMAX,
    OP_MSE, OP_QUAD, OP_BCE, OP_BCE_LOGITS, OP_CE,
    N_OPS
};

static int arity(int op)
{
    return op <= OP_DIV || op == OP_MATMUL || op == OP_CONCAT || op >= OP_MSE ? 2 : 1;
}

typedef struct {
    double c;
    int axis;
    bool keep;
    size_t start, end;
    shp shape;
    bool null_shape;
    ag_dtype dt;
} attrs;

static void read_attrs(input *in, int op, const ag_tensor *x, attrs *a)
{
    memset(a, 0, sizeof *a);
    switch (op) {
    case OP_POW: case OP_LEAKY: case OP_ADD_SCALAR: case OP_SCALE:
        a->c = scalar(in);
        break;
    case OP_SUM_AXIS: case OP_MEAN_AXIS: case OP_MAX_AXIS:
        a->keep = byte(in) & 1;
        /* fall through */
    case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_CONCAT:
        a->axis = axis(in);
        break;
    case OP_SLICE:
        a->axis = axis(in);
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
    default:
        break;
    }
}

static ag_tensor *call_op(ag_tape *t, int op, ag_tensor *a, ag_tensor *b, const attrs *at)
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
    default: return ag_cross_entropy(t, a, b);
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

/* The result's shape, or false when the rules reject the arguments. */
static bool model_shape(int op, const ag_tensor *a, const ag_tensor *b, const attrs *at, shp *out,
                        ag_dtype *dt)
{
    shp sa = shape_of(a);
    size_t ax;
    *out = sa;
    *dt = ag_tensor_dtype(a);
    if (arity(op) == 2 && op != OP_CE && ag_tensor_dtype(a) != ag_tensor_dtype(b))
        return false;
    switch (op) {
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: {
        size_t ra = ag_tensor_rank(a), rb = ag_tensor_rank(b);
        out->rank = ra > rb ? ra : rb;
        for (size_t k = 0; k < out->rank; k++) {
            size_t da = dim_from_end(a, k), db = dim_from_end(b, k);
            if (da != db && da != 1 && db != 1)
                return false;
            out->shape[out->rank - 1 - k] = da == 1 ? db : da;
        }
        return true;
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
    case OP_SUM: case OP_MEAN: case OP_MSE: case OP_QUAD: case OP_BCE: case OP_BCE_LOGITS:
        out->rank = 0;
        return arity(op) == 1 || same_shape(a, b);
    case OP_SUM_AXIS: case OP_MEAN_AXIS: case OP_MAX_AXIS:
        if (!norm_axis(at->axis, sa.rank, &ax) || (op == OP_MAX_AXIS && sa.shape[ax] == 0))
            return false;
        out->rank = 0;
        for (size_t d = 0; d < sa.rank; d++)
            if (d != ax)
                out->shape[out->rank++] = sa.shape[d];
            else if (at->keep)
                out->shape[out->rank++] = 1;
        return true;
    case OP_SOFTMAX: case OP_LOG_SOFTMAX:
        return norm_axis(at->axis, sa.rank, &ax);
    case OP_CE:
        out->rank = 0;
        return sa.rank == 2 && ag_tensor_rank(b) == 1 && ag_tensor_shape(b)[0] == sa.shape[0] &&
               sa.shape[1] > 0;
    default: /* elementwise unary, detach */
        return true;
    }
}

/* Value conditions of bce (p in [0, 1]) and cross-entropy (class indices). */
static bool model_values(int op, const ag_tensor *a, const ag_tensor *b)
{
    if (op == OP_BCE) {
        for (size_t i = 0; i < ag_tensor_numel(a); i++) {
            double v = element(a, i);
            if (!(v >= 0 && v <= 1))
                return false;
        }
    }
    if (op == OP_CE) {
        size_t C = ag_tensor_shape(a)[1];
        for (size_t i = 0; i < ag_tensor_numel(b); i++) {
            double v = element(b, i);
            if (!(v >= 0 && v < (double)C && v == floor(v)))
                return false;
        }
    }
    return true;
}

static expect model(state *s, int k, int op, const slot *A, const slot *B, const attrs *at)
{
    expect e = {.verdict = V_OK};
    if (!s->t[k])
        return (expect){.verdict = V_FAIL};
    const slot *in[2] = {A, B};
    for (int i = 0; i < arity(op); i++)
        if (!in[i]->x || (in[i]->tape >= 0 && in[i]->tape != k))
            return (expect){.verdict = V_FAIL};
    if (!model_shape(op, A->x, arity(op) == 2 ? B->x : NULL, at, &e.shape, &e.dt))
        return (expect){.verdict = V_FAIL};
    size_t n;
    if (!numel_of(e.shape.shape, e.shape.rank, &n) || n > SIZE_MAX / ag_dtype_size(e.dt))
        return (expect){.verdict = V_FAIL};
    if (!model_values(op, A->x, arity(op) == 2 ? B->x : NULL))
        return (expect){.verdict = V_FAIL};
    if (n * ag_dtype_size(e.dt) > MEM_LIMIT / 4)
        e.verdict = V_ANY; /* too big for the budget: NOMEM or OVERFLOW are fine */
    return e;
}

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

static void check_values(int op, const ag_tensor *a, const ag_tensor *b, const attrs *at,
                         const ag_tensor *y)
{
    shp sy = shape_of(y), sa = shape_of(a);
    size_t n = ag_tensor_numel(y), idx[AG_MAX_RANK], ax = 0;
    if (op == OP_CONCAT || op == OP_SLICE)
        norm_axis(at->axis, sa.rank, &ax);
    for (size_t i = 0; i < n; i++) {
        double want;
        unravel(i, &sy, idx);
        switch (op) {
        case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV:
            want = ref_binary(op, ag_tensor_dtype(y), element(a, bcast_index(a, idx, sy.rank)),
                              element(b, bcast_index(b, idx, sy.rank)));
            break;
        case OP_TRANSPOSE: {
            size_t r = sy.rank, tmp = idx[r - 1];
            idx[r - 1] = idx[r - 2];
            idx[r - 2] = tmp;
            want = element(a, ravel(idx, sa.shape, r));
            break;
        }
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
        case OP_RESHAPE: case OP_DETACH:
            want = element(a, i);
            break;
        case OP_CAST:
            want = ag_tensor_dtype(y) == AG_F32 ? (double)(float)element(a, i) : element(a, i);
            break;
        default:
            return;
        }
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

/* A non-NULL result requires grad exactly when OK says; a NULL one comes
 * with an error; an error already there stays as it was. */
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
    slot A = pick(s, in), B = {NULL, -1};
    if (arity(op) == 2)
        B = pick(s, in);
    attrs at;
    read_attrs(in, op, A.x, &at);
    expect e = t ? model(s, k, op, &A, &B, &at) : (expect){.verdict = V_FAIL};
    bool rg = ag_requires_grad(A.x) || (arity(op) == 2 && ag_requires_grad(B.x));
    bool want_grad = rg && ag_tape_recording(t) && op != OP_DETACH;
    tape_snap before = snap(t);
    ag_tensor *y = call_op(t, op, A.x, B.x, &at);
    check_status(t, y, &before);
    if (!t)
        return;
    if (before.status != AG_OK)
        return;
    ag_status st = ag_tape_status(t);
    if (e.verdict == V_FAIL)
        FZ_CHECK(y == NULL);
    if (e.verdict == V_OK && !y)
        FZ_CHECK(st == AG_ERR_NOMEM || (st == AG_ERR_NUMERIC && s->checked[k]));
    if (!y) {
        FZ_CHECK(ag_tape_size(t) == before.size);
        return;
    }
    FZ_CHECK(ag_tensor_rank(y) <= AG_MAX_RANK);
    size_t n;
    FZ_CHECK(numel_of(ag_tensor_shape(y), ag_tensor_rank(y), &n) && n == ag_tensor_numel(y));
    FZ_CHECK(ag_tensor_dtype(y) == e.dt);
    FZ_CHECK(ag_tensor_rank(y) == e.shape.rank);
    FZ_CHECK(memcmp(ag_tensor_shape(y), e.shape.shape, e.shape.rank * sizeof(size_t)) == 0);
    FZ_CHECK(ag_requires_grad(y) == want_grad);
    FZ_CHECK(ag_tape_size(t) == before.size + (want_grad ? 1 : 0));
    FZ_CHECK(ag_grad(y) == NULL);
    touch(y);
    check_values(op, A.x, B.x, &at, y);
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
    slot Y = pick(s, in);
    ag_tensor *seed = NULL;
    int seed_tape = -1; /* the seed's tape, as a slot's: < 0 for a leaf */
    bool own_seed = false;
    if (seeded) {
        uint8_t how = byte(in);
        if (how % 4 == 0) {
            slot S = pick(s, in);
            seed = S.x;
            seed_tape = S.tape;
        } else if (Y.x && ag_tensor_numel(Y.x) <= MAX_NUMEL) {
            seed = ag_full(how & 4 ? AG_F64 : ag_tensor_dtype(Y.x), ag_tensor_shape(Y.x),
                           ag_tensor_rank(Y.x), how & 8 ? scalar(in) : 1.0);
            own_seed = true;
        }
    }
    tape_snap before = snap(t);
    ag_status r = seeded ? ag_backward_seed(t, Y.x, seed) : ag_backward(t, Y.x);
    FZ_CHECK(r == ag_tape_status(t));
    if (!t) {
        FZ_CHECK(r == AG_ERR_NULL);
    } else if (before.status != AG_OK) {
        FZ_CHECK(r == before.status && strcmp(ag_tape_error(t), before.msg) == 0);
    } else {
        bool ok = Y.x && (Y.tape < 0 || Y.tape == k) && ag_requires_grad(Y.x);
        if (seeded)
            ok = ok && seed && (seed_tape < 0 || seed_tape == k) &&
                 ag_tensor_dtype(seed) == ag_tensor_dtype(Y.x) && same_shape(seed, Y.x);
        else
            ok = ok && ag_tensor_numel(Y.x) == 1;
        if (!ok)
            FZ_CHECK(r != AG_OK);
        else
            FZ_CHECK(r == AG_OK || r == AG_ERR_NOMEM || (r == AG_ERR_NUMERIC && s->checked[k]));
        if (r != AG_OK)
            FZ_CHECK(ag_tape_error(t)[0] != '\0');
        FZ_CHECK(ag_tape_size(t) == before.size);
    }
    if (own_seed)
        ag_tensor_free(seed);
    after_backward(s);
}

/* ------------------------------------------------------------ gradcheck */

typedef struct {
    size_t n_ops;
    int op[GC_MAX_OPS];
    uint8_t arg[GC_MAX_OPS][2];
    attrs at[GC_MAX_OPS];
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
        return true;
    case OP_SCALE: case OP_ADD_SCALAR:
        return fabs(at->c) <= 4;
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
    for (size_t k = 0; k < p->n_ops; k++) {
        ag_tensor *y = call_op(t, p->op[k], vals[p->arg[k][0] % nv], vals[p->arg[k][1] % nv],
                               &p->at[k]);
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
            slot x = pick(s, in); /* any tensor: the wrong ones must be refused */
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
    bool strict = n > 0; /* fresh inputs and smooth ops: the check must pass */
    for (size_t i = 0; i < n; i++)
        strict = strict && made[i];
    for (size_t k = 0; k < p.n_ops; k++) {
        p.op[k] = byte(in) % N_OPS;
        p.arg[k][0] = byte(in);
        p.arg[k][1] = byte(in);
        read_attrs(in, p.op[k], n ? inputs[0] : NULL, &p.at[k]);
        strict = strict && smooth(p.op[k], &p.at[k]);
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
    if (strict)
        step = 1e-6;
    ag_status st = ag_gradcheck(gc_fn, &p, n, null_list ? NULL : inputs, step, 1e-5, 1e-3, &rep);
    if (strict && !null_list && st == AG_OK && !p.nonfinite && !rep.passed) {
        fprintf(stderr, "gradcheck failed: input %zu element %zu numeric %.17g analytic %.17g; ops",
                rep.worst_input, rep.worst_index, rep.numeric, rep.analytic);
        for (size_t k = 0; k < p.n_ops; k++)
            fprintf(stderr, " %d(%u,%u)", p.op[k], p.arg[k][0], p.arg[k][1]);
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

static void run_misc(state *s, input *in)
{
    uint8_t what = byte(in) % 17;
    int k = byte(in) & 1;
    ag_tape *t = s->t[k];
    slot X = pick(s, in);
    switch (what) {
    case 0: /* reset */
        ag_tape_reset(t);
        drop_tape(s, k);
        if (t)
            FZ_CHECK(ag_tape_status(t) == AG_OK && ag_tape_size(t) == 0 && !ag_tape_error(t)[0]);
        break;
    case 1: /* free and make anew */
        ag_tape_free(t);
        drop_tape(s, k);
        s->t[k] = byte(in) % 8 ? ag_tape_new() : NULL;
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
        FZ_CHECK(ag_tape_dot(t, devnull) == (t ? AG_OK : AG_ERR_NULL));
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
            FZ_CHECK(ag_tape_size(t) == before.size + (rg ? n : 0));
            FZ_CHECK(same_shape(y, X.x));
            touch(y);
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
        slot Y = pick(s, in);
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
    }
    for (int step = 0; step < MAX_STEPS && in.n > 0; step++) {
        uint8_t c = byte(&in);
        if (c < 40)
            new_leaf(s, &in);
        else if (c < 200)
            run_op(s, &in, (c - 40) % N_OPS);
        else if (c < 215)
            run_backward(s, &in, c & 1);
        else if (c < 222)
            run_gradcheck(s, &in);
        else
            run_misc(s, &in);
    }
    for (int k = 0; k < 2; k++)
        ag_tape_free(s->t[k]);
    for (size_t i = 0; i < s->n_leaves; i++) {
        ag_tensor_free(s->leaves[i].x);
        free(s->leaves[i].buf);
        free(s->leaves[i].gbuf);
    }
    free(s);
    fz_mem_end();
    return 0;
}
