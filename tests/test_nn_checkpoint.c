/* test_nn_checkpoint.c: checkpoints resume training bit for bit (the
 * reference is the same run without a stop), the file is laid out as nn.h
 * documents, and every bad or mismatched file is refused with nothing
 * changed. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn.h"
#include "testalloc.h"

enum { ROWS = 103, FEATURES = 5, CLASSES = 3, BATCH = 16 }; /* 7 batches, the last of 7 rows */

/* Everything a training run is made of. */
typedef struct {
    nn_mlp *net;
    nn_optim *opt;
    nn_batches *it;
    ag_tape *t;
    ag_tensor *x, *y, *bx, *by;
    nn_cost cost;
} run;

typedef struct {
    ag_dtype dt;
    nn_optim_config cfg;
    nn_lr_schedule sched;
    bool shuffle;
    size_t hidden;
} setup;

static void set(ag_tensor *x, size_t i, double v)
{
    if (ag_tensor_dtype(x) == AG_F32)
        ((float *)ag_data(x))[i] = (float)v;
    else
        ((double *)ag_data(x))[i] = v;
}

/* Synthetic data: features from a seeded RNG, the class from their sum. */
static void make_data(run *r, ag_dtype dt)
{
    ag_rng rng;
    ag_rng_seed(&rng, 42);
    r->x = ag_zeros(dt, (size_t[]){ROWS, FEATURES}, 2);
    r->y = ag_zeros(dt, (size_t[]){ROWS}, 1);
    cr_assert(r->x && r->y);
    for (size_t i = 0; i < ROWS; i++) {
        double sum = 0;
        for (size_t j = 0; j < FEATURES; j++) {
            double v = 2 * ag_rng_uniform(&rng) - 1;
            set(r->x, i * FEATURES + j, v);
            sum += v;
        }
        set(r->y, i, sum < -0.5 ? 0 : sum < 0.5 ? 1 : 2);
    }
}

/* A fresh run; seed draws the weights and the data order, so runs made
 * with different seeds agree only through a checkpoint. */
static run make_run(const setup *s, uint64_t seed)
{
    run r = {.cost = NN_COST_CROSS_ENTROPY};
    make_data(&r, s->dt);
    size_t sizes[] = {FEATURES, s->hidden ? s->hidden : 8, CLASSES};
    nn_act acts[] = {NN_TANH, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = s->dt,
                    .init = NN_INIT_XAVIER, .seed = seed};
    nn_error e;
    r.t = ag_tape_new();
    r.bx = ag_zeros(s->dt, (size_t[]){BATCH, FEATURES}, 2);
    r.by = ag_zeros(s->dt, (size_t[]){BATCH}, 1);
    cr_assert(r.t && r.bx && r.by);
    cr_assert_eq(nn_mlp_new(&spec, &r.net, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_mlp_optim_new(r.net, &s->cfg, &r.opt, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_batches_new(r.x, r.y, r.bx, r.by, s->shuffle, seed, &r.it, &e), AG_OK, "%s",
                 e.msg);
    return r;
}

static void free_run(run *r)
{
    nn_batches_free(r->it);
    nn_optim_free(r->opt);
    nn_mlp_free(r->net);
    ag_tape_free(r->t);
    ag_tensor_free(r->x);
    ag_tensor_free(r->y);
    ag_tensor_free(r->bx);
    ag_tensor_free(r->by);
}

/* Up to max_batches batches (SIZE_MAX: the rest of the epoch) of epoch e. */
static void train_batches(run *r, const setup *s, size_t e, size_t max_batches)
{
    nn_error err;
    ag_tensor *bx, *by;
    cr_assert_eq(nn_optim_set_lr(r->opt, nn_lr_at(&s->sched, s->cfg.lr, e)), AG_OK);
    for (size_t b = 0; b < max_batches && nn_batches_next(r->it, &bx, &by); b++)
        cr_assert_eq(nn_mlp_train_step(r->net, r->t, r->opt, r->cost, bx, by, NULL, &err), AG_OK,
                     "%s", err.msg);
}

static void train_epochs(run *r, const setup *s, size_t from, size_t to)
{
    for (size_t e = from; e < to; e++)
        train_batches(r, s, e, SIZE_MAX);
}

static void temp_path(char path[64])
{
    strcpy(path, "/tmp/nn_test_ck_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
}

static bool same_params(const nn_mlp *a, const nn_mlp *b)
{
    size_t P = nn_mlp_param_count(a), es = ag_dtype_size(nn_mlp_spec(a)->dtype);
    return P == nn_mlp_param_count(b) && memcmp(nn_mlp_data(a), nn_mlp_data(b), P * es) == 0;
}

static void save_or_die(const char *path, const run *r, size_t epoch)
{
    nn_error e;
    cr_assert_eq(nn_checkpoint_save(path, r->net, r->opt, r->it, epoch, &e), AG_OK, "%s", e.msg);
}

/* 10 epochs straight against 5, a checkpoint, a fresh run loading it, 5 more. */
static void check_resume_is_exact(const setup *s)
{
    run straight = make_run(s, 1);
    train_epochs(&straight, s, 0, 10);

    char path[64];
    temp_path(path);
    run first = make_run(s, 1);
    train_epochs(&first, s, 0, 5);
    save_or_die(path, &first, 5);
    free_run(&first);

    run second = make_run(s, 99); /* other weights, other order: only the file makes them agree */
    cr_assert_not(same_params(straight.net, second.net));
    size_t epoch = 0;
    nn_error e;
    cr_assert_eq(nn_checkpoint_load(path, second.net, second.opt, second.it, &epoch, &e), AG_OK,
                 "%s", e.msg);
    cr_assert_str_empty(e.msg);
    cr_expect_eq(epoch, 5);
    train_epochs(&second, s, epoch, 10);
    cr_expect(same_params(straight.net, second.net), "the resumed run's parameters differ");
    cr_expect_eq(nn_optim_steps(second.opt), nn_optim_steps(straight.opt));
    cr_expect_eq(nn_optim_steps(second.opt), 10 * 7);
    free_run(&straight);
    free_run(&second);
    remove(path);
}

Test(nn_checkpoint, adam_with_a_cosine_schedule_resumes_bit_for_bit)
{
    setup s = {.dt = AG_F32, .cfg = nn_adam(0.01), .shuffle = true,
               .sched = {.kind = NN_LR_COSINE, .t_max = 10, .lr_min = 1e-4}};
    check_resume_is_exact(&s);
}

Test(nn_checkpoint, sgd_with_momentum_resumes_bit_for_bit)
{
    setup s = {.dt = AG_F64, .cfg = nn_sgd(0.1), .shuffle = true,
               .sched = {.kind = NN_LR_STEP, .step_size = 3, .gamma = 0.5}};
    s.cfg.momentum = 0.9;
    s.cfg.nesterov = true;
    s.cfg.weight_decay = 1e-3;
    check_resume_is_exact(&s);
}

Test(nn_checkpoint, adamw_with_clipping_in_order_resumes_bit_for_bit)
{
    setup s = {.dt = AG_F64, .cfg = nn_adamw(0.02), .shuffle = false};
    s.cfg.clip_norm = 0.5;
    check_resume_is_exact(&s);
}

/* The model file alone is not enough: without the optimizer's moments and
 * the data order the continued run drifts away (the test above could fail). */
Test(nn_checkpoint, resuming_from_the_model_alone_is_not_exact)
{
    setup s = {.dt = AG_F32, .cfg = nn_adam(0.01), .shuffle = true};
    run straight = make_run(&s, 1), part = make_run(&s, 1);
    train_epochs(&straight, &s, 0, 4);
    train_epochs(&part, &s, 0, 2);
    char path[64];
    temp_path(path);
    nn_error e;
    cr_assert_eq(nn_mlp_save(part.net, path, &e), AG_OK, "%s", e.msg);
    nn_mlp *loaded;
    cr_assert_eq(nn_mlp_load(path, &loaded, &e), AG_OK, "%s", e.msg);
    run fresh = make_run(&s, 1);
    memcpy(nn_mlp_data(fresh.net), nn_mlp_data(loaded), nn_mlp_param_count(loaded) * 4);
    train_epochs(&fresh, &s, 2, 4);
    cr_expect_not(same_params(straight.net, fresh.net));
    nn_mlp_free(loaded);
    free_run(&straight);
    free_run(&part);
    free_run(&fresh);
    remove(path);
}

Test(nn_checkpoint, a_save_between_batches_resumes_bit_for_bit)
{
    setup s = {.dt = AG_F32, .cfg = nn_adam(0.01), .shuffle = true};
    run straight = make_run(&s, 3), first = make_run(&s, 3);
    train_epochs(&straight, &s, 0, 4);
    train_epochs(&first, &s, 0, 2);
    train_batches(&first, &s, 2, 3); /* 3 of epoch 2's 7 batches */
    char path[64];
    temp_path(path);
    save_or_die(path, &first, 2);
    run second = make_run(&s, 4);
    size_t epoch;
    nn_error e;
    cr_assert_eq(nn_checkpoint_load(path, second.net, second.opt, second.it, &epoch, &e), AG_OK,
                 "%s", e.msg);
    cr_assert_eq(epoch, 2);
    train_epochs(&second, &s, 2, 4); /* the rest of epoch 2, then epoch 3 */
    cr_expect(same_params(straight.net, second.net));
    free_run(&straight);
    free_run(&first);
    free_run(&second);
    remove(path);
}

/* Full-batch training keeps no iterator: batches NULL on both sides. */
Test(nn_checkpoint, training_without_an_iterator_resumes_bit_for_bit)
{
    setup s = {.dt = AG_F64, .cfg = nn_adam(0.05), .shuffle = false};
    run a = make_run(&s, 1), b = make_run(&s, 1), c = make_run(&s, 2);
    nn_error e;
    for (int i = 0; i < 20; i++)
        cr_assert_eq(nn_mlp_train_step(a.net, a.t, a.opt, a.cost, a.x, a.y, NULL, &e), AG_OK);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(nn_mlp_train_step(b.net, b.t, b.opt, b.cost, b.x, b.y, NULL, &e), AG_OK);
    char path[64];
    temp_path(path);
    cr_assert_eq(nn_checkpoint_save(path, b.net, b.opt, NULL, 0, &e), AG_OK, "%s", e.msg);
    cr_assert_eq(nn_checkpoint_load(path, c.net, c.opt, NULL, NULL, &e), AG_OK, "%s", e.msg);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(nn_mlp_train_step(c.net, c.t, c.opt, c.cost, c.x, c.y, NULL, &e), AG_OK);
    cr_expect(same_params(a.net, c.net));
    /* and an iterator's presence must agree */
    cr_expect_eq(nn_checkpoint_load(path, c.net, c.opt, c.it, NULL, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "holds no batch iterator's state, and batches is not NULL"), "%s",
              e.msg);
    free_run(&a);
    free_run(&b);
    free_run(&c);
    remove(path);
}

/* ------------------------------------------------------------ layout */

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    unsigned char *b = malloc(1 << 20);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static void write_all(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static uint64_t le(const unsigned char *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static double le_real(const unsigned char *b)
{
    uint64_t u = le(b, 8);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* CRC-32 bit by bit from its definition (reflected 0xEDB88320). */
static uint32_t crc32_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static void fix_crc(unsigned char *b, size_t n)
{
    uint32_t c = crc32_ref(b, n - 4);
    for (int i = 0; i < 4; i++)
        b[n - 4 + i] = (unsigned char)(c >> (8 * i));
}

/* A run trained 2 epochs and 3 batches of SGD with momentum, saved. */
static const setup layout_setup = {.dt = AG_F32, .cfg = {.kind = NN_SGD, .lr = 0.1,
                                                         .momentum = 0.5}, .shuffle = true};

static unsigned char *saved_run(run *r, char path[64], size_t *n)
{
    *r = make_run(&layout_setup, 7);
    train_epochs(r, &layout_setup, 0, 2);
    train_batches(r, &layout_setup, 2, 3);
    temp_path(path);
    save_or_die(path, r, 2);
    return read_all(path, n);
}

Test(nn_checkpoint, the_file_is_laid_out_as_documented)
{
    run r;
    char path[64];
    size_t n;
    unsigned char *b = saved_run(&r, path, &n);
    const unsigned char magic[8] = {0x89, 'N', 'N', 'C', '\r', '\n', 0x1a, '\n'};
    cr_expect_eq(memcmp(b, magic, 8), 0);
    cr_expect_eq(le(b + 8, 4), 1);   /* version */
    cr_expect_eq(le(b + 12, 4), 1);  /* flags: the iterator is saved */
    cr_expect_eq(le(b + 16, 8), 2);  /* epoch */
    cr_expect_eq(le(b + 24, 4), 0);  /* f32 */
    cr_expect_eq(le(b + 28, 4), 2);  /* layers */
    cr_expect_eq(le_real(b + 32), 0.01);
    size_t at = 40, sizes[] = {FEATURES, 8, CLASSES};
    for (size_t l = 0; l < 3; l++, at += 8)
        cr_expect_eq(le(b + at, 8), sizes[l]);
    cr_expect_eq(le(b + at, 4), NN_TANH);
    cr_expect_eq(le(b + at + 4, 4), NN_IDENTITY);
    at += 8;
    size_t P = 5 * 8 + 8 + 8 * 3 + 3;
    cr_expect_eq(le(b + at, 8), P);
    at += 8;
    cr_expect_eq(le(b + at, 4), NN_SGD);
    cr_expect_eq(le(b + at + 4, 4), 0);
    cr_expect_eq(le_real(b + at + 8), 0.1);  /* lr */
    cr_expect_eq(le_real(b + at + 16), 0.5); /* momentum */
    at += 8 + 7 * 8;
    cr_expect_eq(le(b + at, 8), 2 * 7 + 3); /* steps */
    cr_expect_eq(le(b + at + 8, 8), P);     /* one momentum value per parameter */
    at += 16;
    cr_expect_eq(le(b + at, 8), ROWS);
    cr_expect_eq(le(b + at + 8, 8), BATCH);
    cr_expect_eq(le(b + at + 16, 8), 3 * BATCH); /* position */
    cr_expect_eq(le(b + at + 24, 4), 1);         /* shuffled */
    at += 32 + 4 * 8 + 8;
    cr_expect_eq(memcmp(b + at, nn_mlp_data(r.net), P * 4), 0); /* little-endian host */
    at += P * 4 + P * 8;
    uint64_t rows_seen = 0;
    for (size_t i = 0; i < ROWS; i++)
        rows_seen += le(b + at + 8 * i, 8);
    cr_expect_eq(rows_seen, (uint64_t)ROWS * (ROWS - 1) / 2); /* a permutation's sum */
    at += 8 * ROWS;
    cr_expect_eq(n, at + 4);
    cr_expect_eq(le(b + at, 4), crc32_ref(b, at));
    free(b);
    free_run(&r);
    remove(path);
}

/* ------------------------------------------------------------ errors */

/* The bytes a checkpoint of r would have: equal before and after a failed
 * load exactly when nothing changed. */
static unsigned char *snapshot(const run *r, size_t *n)
{
    char path[64];
    temp_path(path);
    save_or_die(path, r, 0);
    unsigned char *b = read_all(path, n);
    remove(path);
    return b;
}

/* Loading path into r fails with status want (and says so), changing nothing. */
static void expect_refused(const char *path, run *r, ag_status want, const char *text)
{
    size_t n0, n1, epoch = 12345;
    unsigned char *before = snapshot(r, &n0);
    nn_error e;
    ag_status s = nn_checkpoint_load(path, r->net, r->opt, r->it, &epoch, &e);
    unsigned char *after = snapshot(r, &n1);
    cr_expect_eq(s, want, "status %d, not %d: %s", s, want, e.msg);
    cr_expect_eq(e.status, s);
    cr_expect(strncmp(e.msg, "nn_checkpoint_load: ", 20) == 0, "%s", e.msg);
    if (text)
        cr_expect(strstr(e.msg, text), "'%s' lacks '%s'", e.msg, text);
    cr_expect_eq(epoch, 12345);
    cr_expect(n0 == n1 && memcmp(before, after, n0) == 0, "a refused load changed the objects");
    free(before);
    free(after);
}

Test(nn_checkpoint, truncation_at_every_offset_is_refused)
{
    run r, target = make_run(&layout_setup, 8);
    char path[64], cut[64];
    size_t n;
    unsigned char *b = saved_run(&r, path, &n);
    temp_path(cut);
    for (size_t k = 0; k < n; k++) {
        write_all(cut, b, k);
        expect_refused(cut, &target, AG_ERR_FORMAT, "truncated");
    }
    free(b);
    free_run(&r);
    free_run(&target);
    remove(path);
    remove(cut);
}

Test(nn_checkpoint, every_flipped_byte_is_refused)
{
    run r, target = make_run(&layout_setup, 8);
    char path[64], bad[64];
    size_t n;
    unsigned char *b = saved_run(&r, path, &n);
    temp_path(bad);
    for (size_t k = 0; k < n; k++) {
        b[k] ^= 0x10;
        write_all(bad, b, n);
        b[k] ^= 0x10;
        size_t n0, n1;
        unsigned char *before = snapshot(&target, &n0);
        nn_error e;
        ag_status s = nn_checkpoint_load(bad, target.net, target.opt, target.it, NULL, &e);
        unsigned char *after = snapshot(&target, &n1);
        cr_expect(s == AG_ERR_FORMAT || s == AG_ERR_VALUE, "byte %zu: %d %s", k, s, e.msg);
        cr_expect(n0 == n1 && memcmp(before, after, n0) == 0, "byte %zu changed the run", k);
        free(before);
        free(after);
    }
    free(b);
    free_run(&r);
    free_run(&target);
    remove(path);
    remove(bad);
}

/* Edits field bytes at off, fixes the checksum, expects the refusal. */
static void expect_edit_refused(const unsigned char *b, size_t n, size_t off, uint64_t v,
                                size_t width, ag_status want, const char *text)
{
    unsigned char *c = malloc(n);
    memcpy(c, b, n);
    for (size_t i = 0; i < width; i++)
        c[off + i] = (unsigned char)(v >> (8 * i));
    fix_crc(c, n);
    char path[64];
    temp_path(path);
    write_all(path, c, n);
    run target = make_run(&layout_setup, 8);
    expect_refused(path, &target, want, text);
    free_run(&target);
    free(c);
    remove(path);
}

Test(nn_checkpoint, malformed_fields_with_a_good_checksum_are_refused)
{
    run r;
    char path[64];
    size_t n;
    unsigned char *b = saved_run(&r, path, &n);
    size_t opt_at = 40 + 3 * 8 + 8 + 8, it_at = opt_at + 8 + 56 + 16;
    size_t arrays = it_at + 32 + 40, P = 75, order_at = arrays + P * 4 + P * 8;
    expect_edit_refused(b, n, 8, 2, 4, AG_ERR_FORMAT, "unsupported version 2");
    expect_edit_refused(b, n, 12, 3, 4, AG_ERR_FORMAT, "bad field at byte 12: unknown flags");
    expect_edit_refused(b, n, 24, 5, 4, AG_ERR_FORMAT, "dtype");
    expect_edit_refused(b, n, 28, 0, 4, AG_ERR_FORMAT, "layer count");
    expect_edit_refused(b, n, 40, 0, 8, AG_ERR_FORMAT, "a layer size is 0");
    expect_edit_refused(b, n, 64, 99, 4, AG_ERR_FORMAT, "not an nn_act");
    expect_edit_refused(b, n, 72, P + 1, 8, AG_ERR_FORMAT, "parameter count");
    expect_edit_refused(b, n, opt_at, 9, 4, AG_ERR_FORMAT, "not an nn_optim_kind");
    expect_edit_refused(b, n, opt_at + 4, 4, 4, AG_ERR_FORMAT, "unknown optimizer flags");
    double neg = -1;
    uint64_t neg_bits;
    memcpy(&neg_bits, &neg, 8);
    expect_edit_refused(b, n, opt_at + 8, neg_bits, 8, AG_ERR_VALUE, "lr -1 must be");
    expect_edit_refused(b, n, opt_at + 72, P + 1, 8, AG_ERR_VALUE, "optimizer state values");
    expect_edit_refused(b, n, it_at + 16, 5, 8, AG_ERR_FORMAT, "not a batch boundary");
    expect_edit_refused(b, n, it_at + 24, 2, 4, AG_ERR_FORMAT, "shuffle flag");
    expect_edit_refused(b, n, it_at + 28, 7, 4, AG_ERR_FORMAT, "spare flag");
    memset(b + it_at + 32, 0, 24); /* three words of the RNG zero, the edit the fourth */
    expect_edit_refused(b, n, it_at + 56, 0, 8, AG_ERR_FORMAT, "RNG state is all zero");
    free(b);
    b = read_all(path, &n);
    uint64_t nan_bits = 0x7ff8000000000000u;
    expect_edit_refused(b, n, it_at + 64, nan_bits, 8, AG_ERR_FORMAT, "spare normal");
    expect_edit_refused(b, n, order_at, ROWS, 8, AG_ERR_FORMAT, "not a permutation");
    expect_edit_refused(b, n, order_at, le(b + order_at + 8, 8), 8, AG_ERR_FORMAT,
                        "not a permutation");
    free(b);
    free_run(&r);
    remove(path);
}

Test(nn_checkpoint, a_bad_checksum_trailing_bytes_and_foreign_files_are_refused)
{
    run r, target = make_run(&layout_setup, 8);
    char path[64], other[64];
    size_t n;
    unsigned char *b = saved_run(&r, path, &n);
    temp_path(other);
    b[n - 1] ^= 1;
    write_all(other, b, n);
    expect_refused(other, &target, AG_ERR_FORMAT, "checksum mismatch");
    b[n - 1] ^= 1;
    unsigned char *longer = calloc(n + 3, 1);
    memcpy(longer, b, n);
    write_all(other, longer, n + 3);
    expect_refused(other, &target, AG_ERR_FORMAT, "3 trailing bytes");
    nn_error e;
    cr_assert_eq(nn_mlp_save(target.net, other, &e), AG_OK);
    expect_refused(other, &target, AG_ERR_FORMAT, "not a checkpoint (bad magic)");
    expect_refused("/nonexistent/ck", &target, AG_ERR_IO, "cannot open");
    expect_refused("/tmp", &target, AG_ERR_IO, "not a regular file");
    free(longer);
    free(b);
    free_run(&r);
    free_run(&target);
    remove(path);
    remove(other);
}

/* A checkpoint of setup a loaded into a run of setup b. */
static void expect_mismatch(const setup *a, const setup *b, const char *text)
{
    run r = make_run(a, 1), target = make_run(b, 2);
    char path[64];
    temp_path(path);
    save_or_die(path, &r, 0);
    expect_refused(path, &target, AG_ERR_VALUE, text);
    free_run(&r);
    free_run(&target);
    remove(path);
}

Test(nn_checkpoint, a_checkpoint_of_another_model_optimizer_or_data_is_refused)
{
    setup adam = {.dt = AG_F32, .cfg = nn_adam(0.01), .shuffle = true};
    setup wide = adam, f64 = adam, sgd = adam, momentum = adam, ordered = adam;
    wide.hidden = 9;
    f64.dt = AG_F64;
    sgd.cfg = nn_sgd(0.1);
    momentum.cfg = nn_sgd(0.1);
    momentum.cfg.momentum = 0.9;
    ordered.shuffle = false;
    expect_mismatch(&adam, &wide, "the checkpoint's model is 5-8-3 f32, this one 5-9-3 f32");
    expect_mismatch(&adam, &f64, "this one 5-8-3 f64");
    expect_mismatch(&adam, &sgd, "the checkpoint's optimizer is Adam, this one SGD");
    expect_mismatch(&momentum, &sgd, "SGD with and without momentum differ");
    expect_mismatch(&adam, &ordered, "the checkpoint's batches are shuffled, these in order");
}

Test(nn_checkpoint, other_activations_slopes_and_row_counts_are_refused)
{
    setup s = {.dt = AG_F32, .cfg = nn_adam(0.01), .shuffle = true};
    run r = make_run(&s, 1), target = make_run(&s, 2);
    char path[64];
    temp_path(path);
    save_or_die(path, &r, 0);
    /* another activation: a model of the same sizes with relu */
    size_t sizes[] = {FEATURES, 8, CLASSES};
    nn_act acts[] = {NN_LEAKY_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F32, .seed = 3};
    nn_mlp *relu;
    nn_optim *relu_opt;
    nn_error e;
    cr_assert_eq(nn_mlp_new(&spec, &relu, &e), AG_OK);
    cr_assert_eq(nn_mlp_optim_new(relu, &s.cfg, &relu_opt, &e), AG_OK);
    cr_expect_eq(nn_checkpoint_load(path, relu, relu_opt, target.it, NULL, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "activation tanh where this model has leaky_relu"), "%s", e.msg);
    cr_expect_eq(nn_checkpoint_save(path, relu, relu_opt, target.it, 0, &e), AG_OK);
    nn_mlp_free(relu);
    nn_optim_free(relu_opt);
    spec.leaky_slope = 0.5; /* the same layers, another slope */
    cr_assert_eq(nn_mlp_new(&spec, &relu, &e), AG_OK);
    cr_assert_eq(nn_mlp_optim_new(relu, &s.cfg, &relu_opt, &e), AG_OK);
    cr_expect_eq(nn_checkpoint_load(path, relu, relu_opt, target.it, NULL, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "leaky_relu slope is 0.01, this model's 0.5"), "%s", e.msg);
    nn_mlp_free(relu);
    nn_optim_free(relu_opt);
    /* fewer rows of data */
    save_or_die(path, &r, 0);
    ag_tensor *x = ag_zeros(AG_F32, (size_t[]){50, FEATURES}, 2), *y = ag_zeros(AG_F32, (size_t[]){50}, 1);
    nn_batches *it;
    cr_assert_eq(nn_batches_new(x, y, target.bx, target.by, true, 1, &it, &e), AG_OK);
    cr_expect_eq(nn_checkpoint_load(path, target.net, target.opt, it, NULL, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "over 103 rows in batches of 16, these over 50 rows in batches of 16"),
              "%s", e.msg);
    cr_expect_eq(nn_checkpoint_load(path, target.net, target.opt, NULL, NULL, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "holds a batch iterator's state, and batches is NULL"), "%s", e.msg);
    nn_batches_free(it);
    ag_tensor_free(x);
    ag_tensor_free(y);
    free_run(&r);
    free_run(&target);
    remove(path);
}

Test(nn_checkpoint, null_arguments_and_an_optimizer_of_another_model)
{
    setup s = {.dt = AG_F32, .cfg = nn_adam(0.01), .shuffle = true};
    run a = make_run(&s, 1), b = make_run(&s, 2);
    char path[64];
    temp_path(path);
    nn_error e;
    cr_expect_eq(nn_checkpoint_save(NULL, a.net, a.opt, a.it, 0, &e), AG_ERR_NULL);
    cr_expect_str_eq(e.msg, "nn_checkpoint_save: path is NULL");
    cr_expect_eq(nn_checkpoint_save(path, NULL, a.opt, a.it, 0, &e), AG_ERR_NULL);
    cr_expect_eq(nn_checkpoint_save(path, a.net, NULL, a.it, 0, NULL), AG_ERR_NULL);
    cr_expect_eq(nn_checkpoint_save(path, a.net, b.opt, a.it, 0, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "opt does not update net's parameters"), "%s", e.msg);
    cr_expect_eq(nn_checkpoint_save("", a.net, a.opt, a.it, 0, &e), AG_ERR_VALUE);
    cr_expect_eq(nn_checkpoint_save("/nonexistent/dir/ck", a.net, a.opt, a.it, 0, &e), AG_ERR_IO);
    cr_expect(strstr(e.msg, "nn_checkpoint_save: cannot create"), "%s", e.msg);
    save_or_die(path, &a, 0);
    cr_expect_eq(nn_checkpoint_load(NULL, a.net, a.opt, a.it, NULL, &e), AG_ERR_NULL);
    cr_expect_eq(nn_checkpoint_load(path, NULL, a.opt, a.it, NULL, &e), AG_ERR_NULL);
    cr_expect_eq(nn_checkpoint_load(path, a.net, NULL, a.it, NULL, &e), AG_ERR_NULL);
    cr_expect_str_eq(e.msg, "nn_checkpoint_load: opt is NULL");
    cr_expect_eq(nn_checkpoint_load(path, a.net, b.opt, a.it, NULL, &e), AG_ERR_VALUE);
    cr_expect_eq(nn_checkpoint_load(path, b.net, b.opt, b.it, NULL, NULL), AG_OK);
    cr_expect(same_params(a.net, b.net));
    free_run(&a);
    free_run(&b);
    remove(path);
}

Test(nn_checkpoint, allocation_failures_are_clean_and_change_nothing)
{
    run r, target = make_run(&layout_setup, 8);
    char path[64];
    size_t n, k;
    free(saved_run(&r, path, &n));
    size_t n0;
    unsigned char *before = snapshot(&target, &n0);
    for (k = 1; k < 50; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        nn_error e;
        ag_status s = nn_checkpoint_load(path, target.net, target.opt, target.it, NULL, &e);
        bool failed = a.failed;
        test_alloc_remove();
        cr_expect_eq(a.live_bytes, 0, "leak failing allocation %zu", k);
        if (!failed) {
            cr_expect_eq(s, AG_OK, "%s", e.msg);
            break;
        }
        cr_expect_eq(s, AG_ERR_NOMEM, "%zu: %s", k, e.msg);
        size_t n1;
        unsigned char *after = snapshot(&target, &n1);
        cr_expect(n0 == n1 && memcmp(before, after, n0) == 0);
        free(after);
    }
    cr_expect_eq(k, 2); /* one staging block */
    cr_expect(same_params(r.net, target.net));
    free(before);
    free_run(&r);
    free_run(&target);
    remove(path);
}
