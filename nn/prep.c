/* prep.c: preparing data: scaling, one-hot, seeded shuffles, the
 * train/test split, mini-batches and accuracy. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

ag_status nn_scale(ag_tensor *x, double factor, nn_error *err)
{
    if (!x)
        return nn__fail(err, AG_ERR_NULL, "nn_scale: x is NULL");
    if (!isfinite(factor))
        return nn__fail(err, AG_ERR_VALUE, "nn_scale: factor %g is not finite", factor);
    ag_dtype dt = ag_tensor_dtype(x);
    void *p = ag_data(x);
    for (size_t i = 0, n = ag_tensor_numel(x); i < n; i++)
        nn__set(dt, p, i, nn__get(dt, p, i) * factor);
    return nn__ok(err);
}

double nn_max_abs(const ag_tensor *x)
{
    double m = 0;
    for (size_t i = 0, n = ag_tensor_numel(x); i < n; i++) {
        double v = fabs(ag_get(x, i));
        m = v > m ? v : m;
    }
    return m;
}

static ag_status check_matrix(const char *fn, const char *name, const ag_tensor *x,
                              nn_error *err)
{
    char sh[NN_SHAPE_BUF];
    if (ag_tensor_rank(x) != 2 || nn__rows(x) == 0)
        return nn__fail(err, AG_ERR_SHAPE, "%s: %s %s must be a matrix [n, f] with n >= 1", fn,
                        name, ag_shape_str(x, sh, sizeof sh));
    return AG_OK;
}

/* Shifts and scales column j of x (rows n, stride f): v = (v - mu) / sd. */
static void standardize_column(ag_tensor *x, size_t j, double mu, double sd)
{
    ag_dtype dt = ag_tensor_dtype(x);
    void *p = ag_data(x);
    size_t n = nn__rows(x), f = ag_tensor_shape(x)[1];
    for (size_t i = 0; i < n; i++)
        nn__set(dt, p, i * f + j, (nn__get(dt, p, i * f + j) - mu) / sd);
}

ag_status nn_standardize(ag_tensor *train, ag_tensor *test, nn_error *err)
{
    const char *fn = "nn_standardize";
    if (!train)
        return nn__fail(err, AG_ERR_NULL, "%s: train is NULL", fn);
    ag_status s = check_matrix(fn, "train", train, err);
    if (s == AG_OK && test)
        s = check_matrix(fn, "test", test, err);
    if (s != AG_OK)
        return s;
    size_t n = nn__rows(train), f = ag_tensor_shape(train)[1];
    if (test && (ag_tensor_shape(test)[1] != f || ag_tensor_dtype(test) != ag_tensor_dtype(train)))
        return nn__fail(err, ag_tensor_shape(test)[1] != f ? AG_ERR_SHAPE : AG_ERR_DTYPE,
                        "%s: test must have train's %zu columns and dtype", fn, f);
    for (size_t j = 0; j < f; j++) {
        double sum = 0, ss = 0;
        for (size_t i = 0; i < n; i++)
            sum += ag_get(train, i * f + j);
        double mu = sum / (double)n;
        for (size_t i = 0; i < n; i++) {
            double d = ag_get(train, i * f + j) - mu;
            ss += d * d;
        }
        double sd = sqrt(ss / (double)n);
        sd = sd > 0 ? sd : 1; /* a constant column is only centred */
        standardize_column(train, j, mu, sd);
        if (test)
            standardize_column(test, j, mu, sd);
    }
    return nn__ok(err);
}

ag_status nn_one_hot(const ag_tensor *labels, size_t classes, ag_tensor **out, nn_error *err)
{
    const char *fn = "nn_one_hot";
    if (!labels || !out)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, labels ? "out" : "labels");
    *out = NULL;
    char sh[NN_SHAPE_BUF];
    if (ag_tensor_rank(labels) != 1)
        return nn__fail(err, AG_ERR_SHAPE, "%s: labels %s must have rank 1", fn,
                        ag_shape_str(labels, sh, sizeof sh));
    if (classes == 0)
        return nn__fail(err, AG_ERR_VALUE, "%s: classes is 0", fn);
    size_t n = ag_tensor_numel(labels), total;
    for (size_t i = 0; i < n; i++) {
        double v = ag_get(labels, i);
        if (!(v >= 0 && v < (double)classes && v == floor(v)))
            return nn__fail(err, AG_ERR_VALUE, "%s: labels[%zu] = %g is not a class in [0, %zu)",
                            fn, i, v, classes);
    }
    if (!nn__mul(n, classes, &total))
        return nn__fail(err, AG_ERR_OVERFLOW, "%s: [%zu, %zu] overflows", fn, n, classes);
    ag_dtype dt = ag_tensor_dtype(labels);
    ag_tensor *y = ag_zeros(dt, (size_t[]){n, classes}, 2);
    if (!y)
        return nn__fail(err, AG_ERR_NOMEM, "%s: out of memory for [%zu, %zu]", fn, n, classes);
    for (size_t i = 0; i < n; i++)
        nn__set(dt, ag_data(y), i * classes + (size_t)ag_get(labels, i), 1);
    *out = y;
    return nn__ok(err);
}

void nn_permutation(size_t *idx, size_t n, ag_rng *rng)
{
    if (!idx || !rng)
        return;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)ag_rng_below(rng, (uint64_t)i + 1);
        size_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* Swaps rows i and j of x through a small stack buffer. */
static void swap_rows(ag_tensor *x, size_t i, size_t j)
{
    size_t row = nn__row_len(x) * ag_dtype_size(ag_tensor_dtype(x));
    unsigned char *base = ag_data(x), *a = base + i * row, *b = base + j * row;
    unsigned char tmp[256];
    for (size_t done = 0; done < row; done += sizeof tmp) {
        size_t k = row - done < sizeof tmp ? row - done : sizeof tmp;
        memcpy(tmp, a + done, k);
        memcpy(a + done, b + done, k);
        memcpy(b + done, tmp, k);
    }
}

ag_status nn_shuffle_rows(ag_tensor *x, ag_tensor *y, ag_rng *rng, nn_error *err)
{
    const char *fn = "nn_shuffle_rows";
    if (!x || !rng)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, x ? "rng" : "x");
    char sx[NN_SHAPE_BUF], sy[NN_SHAPE_BUF];
    if (ag_tensor_rank(x) == 0 || (y && (ag_tensor_rank(y) == 0 || nn__rows(y) != nn__rows(x))))
        return nn__fail(err, AG_ERR_SHAPE, "%s: x %s and y %s must have the same number of rows",
                        fn, ag_shape_str(x, sx, sizeof sx), ag_shape_str(y, sy, sizeof sy));
    for (size_t i = nn__rows(x); i-- > 1;) {
        size_t j = (size_t)ag_rng_below(rng, (uint64_t)i + 1);
        swap_rows(x, i, j);
        if (y)
            swap_rows(y, i, j);
    }
    return nn__ok(err);
}

/* A new tensor holding rows idx[0..k) of x, in that order. */
static ag_tensor *gather_rows(const ag_tensor *x, const size_t *idx, size_t k)
{
    size_t shape[AG_MAX_RANK], rank = ag_tensor_rank(x);
    memcpy(shape, ag_tensor_shape(x), rank * sizeof *shape);
    shape[0] = k;
    ag_tensor *g = ag_zeros(ag_tensor_dtype(x), shape, rank);
    size_t row = nn__row_len(x) * ag_dtype_size(ag_tensor_dtype(x));
    for (size_t i = 0; g && i < k; i++)
        memcpy((char *)ag_data(g) + i * row, (const char *)ag_data(x) + idx[i] * row, row);
    return g;
}

ag_status nn_dataset_split(const nn_dataset *all, size_t n_test, uint64_t seed,
                           nn_dataset *train, nn_dataset *test, nn_error *err)
{
    const char *fn = "nn_dataset_split";
    if (!all || !train || !test || !all->x || !all->labels)
        return nn__fail(err, AG_ERR_NULL, "%s: a data set or its tensors is NULL", fn);
    *train = *test = (nn_dataset){0};
    size_t n = nn__rows(all->x), bytes;
    if (nn__rows(all->labels) != n)
        return nn__fail(err, AG_ERR_SHAPE, "%s: x has %zu rows, labels %zu", fn, n,
                        nn__rows(all->labels));
    if (n_test == 0 || n_test >= n)
        return nn__fail(err, AG_ERR_VALUE, "%s: n_test %zu must be in [1, %zu)", fn, n_test, n);
    ag_tensor *mem = NULL;
    size_t *idx = nn__mul(n, sizeof *idx, &bytes) ? nn__mem(bytes, &mem) : NULL;
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    nn_permutation(idx, n, &rng);
    nn_dataset tr = {.n = n - n_test, .features = all->features, .classes = all->classes};
    nn_dataset te = {.n = n_test, .features = all->features, .classes = all->classes};
    if (idx) {
        tr.x = gather_rows(all->x, idx, tr.n);
        tr.labels = gather_rows(all->labels, idx, tr.n);
        te.x = gather_rows(all->x, idx + tr.n, n_test);
        te.labels = gather_rows(all->labels, idx + tr.n, n_test);
    }
    ag_tensor_free(mem);
    if (!tr.x || !tr.labels || !te.x || !te.labels) {
        nn_dataset_free(&tr);
        nn_dataset_free(&te);
        return nn__fail(err, AG_ERR_NOMEM, "%s: out of memory", fn);
    }
    *train = tr;
    *test = te;
    return nn__ok(err);
}

/* ------------------------------------------------------------ batches */

struct nn_batches {
    ag_tensor *mem;           /* owns this struct and order */
    const ag_tensor *x, *y;
    ag_tensor *bx, *by;       /* the caller's batch tensors */
    ag_tensor *tx, *ty;       /* views of their first r rows, r = n % B (or NULL) */
    size_t n, batch, pos;
    size_t *order;            /* this epoch's row order */
    bool shuffle;
    ag_rng rng;
};

/* b must have a's rank, dtype and row shape; rows of b >= 1. */
static ag_status check_batch(const char *what, const ag_tensor *a, const ag_tensor *b,
                             nn_error *err)
{
    char sa[NN_SHAPE_BUF], sb[NN_SHAPE_BUF];
    size_t r = ag_tensor_rank(a);
    if (ag_tensor_dtype(a) != ag_tensor_dtype(b))
        return nn__fail(err, AG_ERR_DTYPE, "nn_batches_new: %s is %s, its batch %s", what,
                        ag_dtype_name(ag_tensor_dtype(a)), ag_dtype_name(ag_tensor_dtype(b)));
    if (r == 0 || ag_tensor_rank(b) != r || nn__rows(b) == 0 ||
        memcmp(ag_tensor_shape(a) + 1, ag_tensor_shape(b) + 1, (r - 1) * sizeof(size_t)) != 0)
        return nn__fail(err, AG_ERR_SHAPE, "nn_batches_new: %s %s and its batch %s: ranks >= 1 "
                        "and row shapes must agree, with >= 1 batch row", what,
                        ag_shape_str(a, sa, sizeof sa), ag_shape_str(b, sb, sizeof sb));
    return AG_OK;
}

static ag_status check_batches(const ag_tensor *x, const ag_tensor *y, const ag_tensor *bx,
                               const ag_tensor *by, nn_error *err)
{
    if (!x || !y || !bx || !by)
        return nn__fail(err, AG_ERR_NULL, "nn_batches_new: %s is NULL",
                        !x ? "x" : !y ? "y" : !bx ? "bx" : "by");
    ag_status s = check_batch("x", x, bx, err);
    if (s == AG_OK)
        s = check_batch("y", y, by, err);
    if (s != AG_OK)
        return s;
    if (nn__rows(x) != nn__rows(y) || nn__rows(bx) != nn__rows(by))
        return nn__fail(err, AG_ERR_SHAPE, "nn_batches_new: x and y have %zu and %zu rows, bx "
                        "and by %zu and %zu", nn__rows(x), nn__rows(y), nn__rows(bx), nn__rows(by));
    if (nn__rows(x) == 0)
        return nn__fail(err, AG_ERR_VALUE, "nn_batches_new: x has no rows");
    return AG_OK;
}

/* A view of the first r rows of b (its data; no grad). */
static ag_tensor *head_view(ag_tensor *b, size_t r)
{
    size_t shape[AG_MAX_RANK], rank = ag_tensor_rank(b);
    memcpy(shape, ag_tensor_shape(b), rank * sizeof *shape);
    shape[0] = r;
    return ag_view(ag_tensor_dtype(b), shape, rank, ag_data(b), NULL);
}

ag_status nn_batches_new(const ag_tensor *x, const ag_tensor *y, ag_tensor *bx, ag_tensor *by,
                         bool shuffle, uint64_t seed, nn_batches **out, nn_error *err)
{
    if (!out)
        return nn__fail(err, AG_ERR_NULL, "nn_batches_new: out is NULL");
    *out = NULL;
    ag_status s = check_batches(x, y, bx, by, err);
    if (s != AG_OK)
        return s;
    size_t n = nn__rows(x), B = nn__rows(bx), tail = n < B ? n : n % B;
    nn__layout lay = {0};
    nn__layout_add(&lay, 1, sizeof(nn_batches));
    size_t o_order = nn__layout_add(&lay, n, sizeof(size_t));
    ag_tensor *mem = NULL;
    unsigned char *base = lay.overflow ? NULL : nn__mem(lay.size, &mem);
    if (!base)
        return nn__fail(err, AG_ERR_NOMEM, "nn_batches_new: out of memory for %zu rows", n);
    nn_batches *it = (nn_batches *)base;
    *it = (nn_batches){.mem = mem, .x = x, .y = y, .bx = bx, .by = by, .n = n, .batch = B,
                       .order = (size_t *)(base + o_order), .shuffle = shuffle};
    if (tail && (!(it->tx = head_view(bx, tail)) || !(it->ty = head_view(by, tail)))) {
        nn_batches_free(it);
        return nn__fail(err, AG_ERR_NOMEM, "nn_batches_new: out of memory");
    }
    ag_rng_seed(&it->rng, seed);
    if (shuffle)
        nn_permutation(it->order, n, &it->rng);
    else
        for (size_t i = 0; i < n; i++)
            it->order[i] = i;
    *out = it;
    return nn__ok(err);
}

/* Rows idx[0..k) of src to dst's first k rows. A shuffled batch's rows
 * lie scattered over a data set larger than the caches, so each one waits
 * on memory: they are copied COPY_ROWS at a time, a COPY_PIECE of each in
 * turn, which keeps that many reads in flight where a row at a time waits
 * on each row in turn. Measured on an AMD EPYC Zen 4, 784-float rows out
 * of 60,000: a batch of 10 took 6.7 µs a row at a time, 5.0 so (W1); of
 * 128, 67 and 55 µs (W2). Pieces of 256 bytes and groups of 8 rows were
 * the best of those tried (64 to 1024 bytes; 8, 16 or all the rows). */
enum { COPY_ROWS = 8, COPY_PIECE = 256 };

static void copy_rows(const ag_tensor *src, ag_tensor *dst, const size_t *idx, size_t k)
{
    size_t row = nn__row_len(src) * ag_dtype_size(ag_tensor_dtype(src));
    const char *from = ag_data(src);
    char *to = ag_data(dst);
    for (size_t g = 0; g < k; g += COPY_ROWS) {
        size_t end = k - g < COPY_ROWS ? k : g + COPY_ROWS, at = 0;
        for (; at + COPY_PIECE <= row; at += COPY_PIECE) /* a constant size: plain vector moves */
            for (size_t i = g; i < end; i++)
                memcpy(to + i * row + at, from + idx[i] * row + at, COPY_PIECE);
        if (at < row) /* (a size the compiler only bounds became a slow rep movs) */
            for (size_t i = g; i < end; i++)
                memcpy(to + i * row + at, from + idx[i] * row + at, row - at);
    }
}

bool nn_batches_next(nn_batches *it, ag_tensor **bx, ag_tensor **by)
{
    if (!it)
        return false;
    if (it->pos >= it->n) { /* the epoch is over: prepare the next one */
        it->pos = 0;
        if (it->shuffle) /* Fisher-Yates on the last order: still uniform */
            for (size_t i = it->n; i-- > 1;) {
                size_t j = (size_t)ag_rng_below(&it->rng, (uint64_t)i + 1), t = it->order[i];
                it->order[i] = it->order[j];
                it->order[j] = t;
            }
        return false;
    }
    size_t k = it->n - it->pos < it->batch ? it->n - it->pos : it->batch;
    copy_rows(it->x, it->bx, it->order + it->pos, k);
    copy_rows(it->y, it->by, it->order + it->pos, k);
    it->pos += k;
    if (bx)
        *bx = k == it->batch ? it->bx : it->tx;
    if (by)
        *by = k == it->batch ? it->by : it->ty;
    return true;
}

size_t nn_batches_per_epoch(const nn_batches *it)
{
    return it ? it->n / it->batch + (it->n % it->batch != 0) : 0;
}

void nn_batches_free(nn_batches *it)
{
    if (!it)
        return;
    ag_tensor_free(it->tx);
    ag_tensor_free(it->ty);
    ag_tensor_free(it->mem);
}

/* ----------------------------------------------------------- accuracy */

/* The class of row i of x [n, c]: argmax (the first maximum), or for one
 * column, whether the value is >= threshold. */
static size_t row_class(const ag_tensor *x, size_t i, size_t c, double threshold)
{
    if (c == 1)
        return ag_get(x, i) >= threshold;
    size_t best = 0;
    for (size_t j = 1; j < c; j++)
        if (ag_get(x, i * c + j) > ag_get(x, i * c + best))
            best = j;
    return best;
}

ag_status nn_accuracy(const ag_tensor *out, const ag_tensor *target, double threshold, double *acc,
                      nn_error *err)
{
    const char *fn = "nn_accuracy";
    if (!out || !target || !acc)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn,
                        !out ? "out" : !target ? "target" : "acc");
    size_t n = nn__rows(out), c = ag_tensor_rank(out) == 2 ? ag_tensor_shape(out)[1] : 1;
    size_t tr = ag_tensor_rank(target), tc = tr == 2 ? ag_tensor_shape(target)[1] : 0;
    char so[NN_SHAPE_BUF], st[NN_SHAPE_BUF];
    if (ag_tensor_rank(out) < 1 || ag_tensor_rank(out) > 2 || c == 0 || tr < 1 || tr > 2 ||
        nn__rows(target) != n || (tr == 2 && tc != c))
        return nn__fail(err, AG_ERR_SHAPE, "%s: outputs %s and targets %s: need [n, C] and [n] "
                        "or [n, C]", fn, ag_shape_str(out, so, sizeof so),
                        ag_shape_str(target, st, sizeof st));
    if (n == 0)
        return nn__fail(err, AG_ERR_VALUE, "%s: no rows", fn);
    if (c == 1 && !isfinite(threshold))
        return nn__fail(err, AG_ERR_VALUE, "%s: threshold %g is not finite", fn, threshold);
    size_t right = 0;
    for (size_t i = 0; i < n; i++) { /* 0/1 target rows: class 1 from 0.5 up */
        double want = tr == 1 ? ag_get(target, i) : (double)row_class(target, i, c, 0.5);
        right += (double)row_class(out, i, c, threshold) == want;
    }
    *acc = (double)right / (double)n;
    return nn__ok(err);
}

/* ------------------------------------------------ checkpoints
 * The iterator's position, order and RNG, as nn_checkpoint_save reads them
 * and nn_checkpoint_load puts them back (see nn_internal.h). */

nn__batches_state nn__batches_get(const nn_batches *it)
{
    return (nn__batches_state){.n = it->n, .batch = it->batch, .pos = it->pos,
                               .shuffle = it->shuffle, .rng = it->rng, .order = it->order};
}

void nn__batches_restore(nn_batches *it, const nn__batches_state *s)
{
    it->pos = s->pos;
    it->rng = s->rng;
    memcpy(it->order, s->order, it->n * sizeof *it->order);
}
