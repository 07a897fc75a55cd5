/* checkpoint.c: saving a training run and resuming it exactly (the format
 * is in nn.h).
 *
 * A checkpoint is restored into objects the caller has made as for a fresh
 * run (the model, its optimizer, the batch iterator over the same data),
 * as PyTorch's load_state_dict does: their sizes say how long every array
 * of the file must be, so a file can never make the loader allocate more
 * than those objects already hold, and a file made for other objects is
 * refused naming what differs. The loader reads the file once, into a
 * staging block, checking every field and the checksum on the way, and
 * copies it into the objects only at the end: a refused file changes
 * nothing. Saving goes through nn__save_atomic, as model files do. */
#include "nn_internal.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define CK_VERSION 1u
static const unsigned char CK_MAGIC[8] = {0x89, 'N', 'N', 'C', '\r', '\n', 0x1a, '\n'};
enum { HAS_BATCHES = 1u };                    /* the header's flags */
enum { NESTEROV = 1u, ALLOW_NONFINITE = 2u }; /* the optimizer's flags */
enum { N_REALS = 7 };                         /* lr .. clip_norm */

/* The optimizer's real-valued settings in file order. */
static double *config_reals(nn_optim_config *c, size_t i)
{
    double *r[N_REALS] = {&c->lr,    &c->momentum, &c->weight_decay, &c->beta1,
                          &c->beta2, &c->eps,      &c->clip_norm};
    return r[i];
}

/* The model's widths and dtype, "64-30-10 f32", for messages. */
static void describe(char *buf, size_t cap, const size_t *sizes, size_t L, ag_dtype dt)
{
    size_t k = 0;
    for (size_t l = 0; l <= L && k < cap; l++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%zu", l ? "-" : "", sizes[l]);
    if (k < cap)
        snprintf(buf + k, cap - k, " %s", ag_dtype_name(dt));
}

/* opt must update net's parameters: a checkpoint pairs the two. */
static ag_status check_pair(const char *fn, const nn_mlp *net, const nn_optim *opt, nn_error *err)
{
    size_t n = 0;
    const nn_param *params = nn_mlp_params(net, &n);
    if (!nn__optim_updates(opt, params, n))
        return nn__fail(err, AG_ERR_VALUE, "%s: opt does not update net's parameters (make it "
                        "with nn_mlp_optim_new(net, ...))", fn);
    return AG_OK;
}

/* --------------------------------------------------------------- save */

static void put_model_header(nn__writer *w, const nn_mlp *net)
{
    const nn_spec *s = nn_mlp_spec(net);
    nn__put_int(w, s->dtype == AG_F32 ? 0 : 1, 4);
    nn__put_int(w, s->n_layers, 4);
    nn__put_real(w, s->leaky_slope);
    for (size_t l = 0; l <= s->n_layers; l++)
        nn__put_int(w, s->sizes[l], 8);
    for (size_t l = 0; l < s->n_layers; l++)
        nn__put_int(w, (uint64_t)s->acts[l], 4);
    nn__put_int(w, nn_mlp_param_count(net), 8);
}

static void put_optim_header(nn__writer *w, const nn_optim *opt)
{
    nn_optim_config c = *nn__optim_config(opt);
    size_t n_state;
    nn__optim_state(opt, &n_state);
    nn__put_int(w, (uint64_t)c.kind, 4);
    nn__put_int(w, (c.nesterov ? NESTEROV : 0) | (c.allow_nonfinite ? ALLOW_NONFINITE : 0), 4);
    for (size_t i = 0; i < N_REALS; i++)
        nn__put_real(w, *config_reals(&c, i));
    nn__put_int(w, nn_optim_steps(opt), 8);
    nn__put_int(w, n_state, 8);
}

static void put_batches_header(nn__writer *w, const nn_batches *it)
{
    nn__batches_state b = nn__batches_get(it);
    nn__put_int(w, b.n, 8);
    nn__put_int(w, b.batch, 8);
    nn__put_int(w, b.pos, 8);
    nn__put_int(w, b.shuffle, 4);
    nn__put_int(w, b.rng.has_spare, 4);
    for (size_t i = 0; i < 4; i++)
        nn__put_int(w, b.rng.s[i], 8);
    nn__put_real(w, b.rng.spare);
}

typedef struct {
    const nn_mlp *net;
    const nn_optim *opt;
    const nn_batches *it; /* may be NULL */
    size_t epoch;
} run;

/* Every field, then every array, then the checksum (nn__file_writer). */
static int write_checkpoint(FILE *f, const void *ctx)
{
    const run *r = ctx;
    nn__writer w = {.f = f};
    nn__put_bytes(&w, CK_MAGIC, sizeof CK_MAGIC);
    nn__put_int(&w, CK_VERSION, 4);
    nn__put_int(&w, r->it ? HAS_BATCHES : 0, 4);
    nn__put_int(&w, r->epoch, 8);
    put_model_header(&w, r->net);
    put_optim_header(&w, r->opt);
    if (r->it)
        put_batches_header(&w, r->it);
    size_t es = ag_dtype_size(nn_mlp_spec(r->net)->dtype), n_state;
    nn__put_array(&w, nn_mlp_data(r->net), nn_mlp_param_count(r->net), es);
    const double *state = nn__optim_state(r->opt, &n_state);
    nn__put_array(&w, state, n_state, 8);
    if (r->it) {
        nn__batches_state b = nn__batches_get(r->it);
        for (size_t i = 0; i < b.n; i++)
            nn__put_int(&w, b.order[i], 8);
    }
    uint32_t crc = w.crc;
    nn__put_int(&w, crc, 4);
    return w.err;
}

ag_status nn_checkpoint_save(const char *path, const nn_mlp *net, const nn_optim *opt,
                             const nn_batches *batches, size_t epoch, nn_error *err)
{
    const char *fn = "nn_checkpoint_save";
    if (!path || !net || !opt)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn,
                        !path ? "path" : !net ? "net" : "opt");
    ag_status s = check_pair(fn, net, opt, err);
    if (s != AG_OK)
        return s;
    run r = {net, opt, batches, epoch};
    return nn__save_atomic(fn, path, write_checkpoint, &r, err);
}

/* --------------------------------------------------------------- load */

#define LOAD "nn_checkpoint_load"

static ag_status truncated(const nn__reader *r, const char *field, nn_error *err)
{
    if (r->io_error)
        return nn__fail(err, AG_ERR_IO, LOAD ": %s: read error", r->path);
    return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: truncated: the file ends in the %s (%zu "
                    "bytes)", r->path, field, r->size);
}

/* The field of n bytes just read is malformed: the message names its first byte. */
static ag_status bad_field(const nn__reader *r, size_t n, nn_error *err, const char *what,
                           uint64_t v)
{
    return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: bad field at byte %zu: %s (%llu)", r->path,
                    r->pos - n, what, (unsigned long long)v);
}

/* The field just read is well formed but made for other objects. */
static ag_status mismatch(const nn__reader *r, nn_error *err, const char *fmt, const char *a,
                          const char *b)
{
    char what[512];
    snprintf(what, sizeof what, fmt, a, b);
    return nn__fail(err, AG_ERR_VALUE, LOAD ": %s: %s", r->path, what);
}

/* Everything before the arrays, checked against the objects. */
typedef struct {
    size_t epoch;
    nn_optim_config cfg;
    size_t steps, n_state;
    nn__batches_state batches; /* order: the staging block's */
} ck_header;

static ag_status read_preamble(nn__reader *r, const nn_batches *it, ck_header *h, nn_error *err)
{
    unsigned char m[sizeof CK_MAGIC];
    uint64_t version, flags, epoch;
    bool whole = nn__get_bytes(r, m, sizeof m);
    if (memcmp(m, CK_MAGIC, r->pos) != 0)
        return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: not a checkpoint (bad magic)", r->path);
    if (!whole)
        return truncated(r, "magic", err);
    if (!nn__get_int(r, &version, 4))
        return truncated(r, "version", err);
    if (version != CK_VERSION)
        return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: unsupported version %llu (this library "
                        "reads version %u)", r->path, (unsigned long long)version, CK_VERSION);
    if (!nn__get_int(r, &flags, 4))
        return truncated(r, "flags", err);
    if (flags & ~(uint64_t)HAS_BATCHES)
        return bad_field(r, 4, err, "unknown flags", flags);
    if (!(flags & HAS_BATCHES) != !it)
        return mismatch(r, err, "the checkpoint holds %s batch iterator's state, and batches "
                        "is %sNULL", flags & HAS_BATCHES ? "a" : "no", it ? "not " : "");
    if (!nn__get_int(r, &epoch, 8))
        return truncated(r, "epoch", err);
    if (epoch > SIZE_MAX)
        return bad_field(r, 8, err, "the epoch does not fit in size_t", epoch);
    h->epoch = (size_t)epoch;
    return AG_OK;
}

/* The layer sizes and activations, against the model's. */
static ag_status read_layers(nn__reader *r, const nn_spec *sp, size_t L, ag_dtype dt,
                             nn_error *err)
{
    size_t sizes[NN_MAX_LAYERS + 1];
    uint64_t v;
    bool same = L == sp->n_layers && dt == sp->dtype;
    for (size_t l = 0; l <= L; l++) {
        if (!nn__get_int(r, &v, 8))
            return truncated(r, "layer sizes", err);
        if (v == 0 || v > SIZE_MAX)
            return bad_field(r, 8, err, "a layer size is 0 or too large", v);
        sizes[l] = (size_t)v;
        same = same && sizes[l] == sp->sizes[l];
    }
    char have[160], want[160];
    describe(have, sizeof have, sizes, L, dt);
    describe(want, sizeof want, sp->sizes, sp->n_layers, sp->dtype);
    if (!same)
        return mismatch(r, err, "the checkpoint's model is %s, this one %s", have, want);
    for (size_t l = 0; l < L; l++) {
        if (!nn__get_int(r, &v, 4))
            return truncated(r, "activations", err);
        if (v >= NN_ACT_COUNT)
            return bad_field(r, 4, err, "an activation is not an nn_act", v);
        if ((nn_act)v != sp->acts[l])
            return mismatch(r, err, "the checkpoint's layers have activation %s where this "
                            "model has %s", nn_act_name((nn_act)v), nn_act_name(sp->acts[l]));
    }
    return AG_OK;
}

static ag_status read_model_header(nn__reader *r, const nn_mlp *net, nn_error *err)
{
    const nn_spec *sp = nn_mlp_spec(net);
    uint64_t dtype, L, P;
    double slope;
    if (!nn__get_int(r, &dtype, 4))
        return truncated(r, "dtype", err);
    if (dtype > 1)
        return bad_field(r, 4, err, "dtype is not 0 (f32) or 1 (f64)", dtype);
    if (!nn__get_int(r, &L, 4))
        return truncated(r, "layer count", err);
    if (L == 0 || L > NN_MAX_LAYERS)
        return bad_field(r, 4, err, "layer count is not in 1..NN_MAX_LAYERS", L);
    if (!nn__get_real(r, &slope))
        return truncated(r, "leaky_relu slope", err);
    ag_status s = read_layers(r, sp, (size_t)L, dtype ? AG_F64 : AG_F32, err);
    if (s != AG_OK)
        return s;
    if (memcmp(&slope, &sp->leaky_slope, sizeof slope) != 0) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%g", slope);
        snprintf(b, sizeof b, "%g", sp->leaky_slope);
        return mismatch(r, err, "the checkpoint's leaky_relu slope is %s, this model's %s", a, b);
    }
    if (!nn__get_int(r, &P, 8))
        return truncated(r, "parameter count", err);
    if (P != nn_mlp_param_count(net))
        return bad_field(r, 8, err, "the parameter count disagrees with the layer sizes", P);
    return AG_OK;
}

static ag_status read_optim_header(nn__reader *r, const nn_optim *opt, ck_header *h,
                                   nn_error *err)
{
    uint64_t kind, flags, steps, n_state;
    if (!nn__get_int(r, &kind, 4))
        return truncated(r, "optimizer kind", err);
    if (kind > NN_ADAMW)
        return bad_field(r, 4, err, "the optimizer kind is not an nn_optim_kind", kind);
    if (!nn__get_int(r, &flags, 4))
        return truncated(r, "optimizer flags", err);
    if (flags & ~(uint64_t)(NESTEROV | ALLOW_NONFINITE))
        return bad_field(r, 4, err, "unknown optimizer flags", flags);
    h->cfg = (nn_optim_config){.kind = (nn_optim_kind)kind, .nesterov = flags & NESTEROV,
                               .allow_nonfinite = flags & ALLOW_NONFINITE};
    for (size_t i = 0; i < N_REALS; i++)
        if (!nn__get_real(r, config_reals(&h->cfg, i)))
            return truncated(r, "optimizer settings", err);
    if (!nn__get_int(r, &steps, 8))
        return truncated(r, "step count", err);
    if (!nn__get_int(r, &n_state, 8))
        return truncated(r, "optimizer state count", err);
    if (steps > SIZE_MAX || n_state > SIZE_MAX)
        return bad_field(r, 8, err, "the step or state count does not fit in size_t",
                         steps > SIZE_MAX ? steps : n_state);
    h->steps = (size_t)steps;
    h->n_state = (size_t)n_state;
    char fn[64 + 4096];
    snprintf(fn, sizeof fn, LOAD ": %s", r->path);
    return nn__optim_check_restore(opt, &h->cfg, h->n_state, fn, err);
}

/* 0 or 1 into *b; false for anything else. */
static bool get_bool(nn__reader *r, bool *b, uint64_t *v)
{
    if (!nn__get_int(r, v, 4))
        return false;
    *b = *v != 0;
    return true;
}

static ag_status read_batches_header(nn__reader *r, const nn_batches *it, ck_header *h,
                                     nn_error *err)
{
    nn__batches_state have = nn__batches_get(it), *b = &h->batches;
    uint64_t n, batch, pos, v;
    if (!nn__get_int(r, &n, 8) || !nn__get_int(r, &batch, 8))
        return truncated(r, "batch iterator's sizes", err);
    if (n != have.n || batch != have.batch) {
        char a[64], c[64];
        snprintf(a, sizeof a, "%llu rows in batches of %llu", (unsigned long long)n,
                 (unsigned long long)batch);
        snprintf(c, sizeof c, "%zu rows in batches of %zu", have.n, have.batch);
        return mismatch(r, err, "the checkpoint's batches are over %s, these over %s (resume "
                        "over the same data)", a, c);
    }
    *b = have;
    if (!nn__get_int(r, &pos, 8))
        return truncated(r, "batch position", err);
    if (pos > n || (pos < n && pos % batch != 0))
        return bad_field(r, 8, err, "the position is not a batch boundary within the rows", pos);
    b->pos = (size_t)pos;
    if (!get_bool(r, &b->shuffle, &v))
        return truncated(r, "shuffle flag", err);
    if (v > 1 || b->shuffle != have.shuffle)
        return v > 1 ? bad_field(r, 4, err, "the shuffle flag is not 0 or 1", v)
                     : mismatch(r, err, "the checkpoint's batches are %s, these %s",
                                v ? "shuffled" : "in order", have.shuffle ? "shuffled" : "in order");
    if (!get_bool(r, &b->rng.has_spare, &v))
        return truncated(r, "RNG state", err);
    if (v > 1)
        return bad_field(r, 4, err, "the RNG's spare flag is not 0 or 1", v);
    uint64_t any = 0;
    for (size_t i = 0; i < 4; i++) {
        if (!nn__get_int(r, &b->rng.s[i], 8))
            return truncated(r, "RNG state", err);
        any |= b->rng.s[i];
    }
    if (!any) /* xoshiro's one state that never leaves zero */
        return bad_field(r, 8, err, "the RNG state is all zero", 0);
    if (!nn__get_real(r, &b->rng.spare))
        return truncated(r, "RNG state", err);
    if (!isfinite(b->rng.spare))
        return bad_field(r, 8, err, "the RNG's spare normal is not finite", 0);
    return AG_OK;
}

/* The file must hold exactly the header, the arrays and the checksum. */
static ag_status check_size(const nn__reader *r, const nn_mlp *net, const ck_header *h,
                            nn_error *err)
{
    /* The arrays' sizes are those of the objects, which exist: no overflow
     * short of a file as large as the address space. */
    size_t es = ag_dtype_size(nn_mlp_spec(net)->dtype), want = r->pos + 4;
    size_t parts[] = {nn_mlp_param_count(net) * es, h->n_state * 8, h->batches.n * 8};
    for (size_t i = 0; i < 3; i++)
        want = parts[i] > SIZE_MAX - want ? SIZE_MAX : want + parts[i];
    if (r->size < want)
        return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: truncated: %zu bytes, the header "
                        "describes %zu", r->path, r->size, want);
    if (r->size > want)
        return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: %zu trailing bytes after the checksum",
                        r->path, r->size - want);
    return AG_OK;
}

/* The row order, which must be a permutation of 0..n-1 (seen: n flags). */
static ag_status read_order(nn__reader *r, size_t *order, bool *seen, size_t n, nn_error *err)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        if (!nn__get_int(r, &v, 8))
            return truncated(r, "row order", err);
        if (v >= n || seen[v])
            return bad_field(r, 8, err, "the row order is not a permutation of the rows", v);
        seen[v] = true;
        order[i] = (size_t)v;
    }
    return AG_OK;
}

/* Where the arrays are read before they are put in place. */
typedef struct {
    ag_tensor *mem;
    void *params;
    double *state;
    size_t *order;
    bool *seen;
} staging;

static ag_status read_arrays(nn__reader *r, const nn_mlp *net, const ck_header *h, staging *st,
                             nn_error *err)
{
    size_t P = nn_mlp_param_count(net), es = ag_dtype_size(nn_mlp_spec(net)->dtype), n = h->batches.n;
    nn__layout lay = {0};
    size_t o_params = nn__layout_add(&lay, P, es);
    size_t o_state = nn__layout_add(&lay, h->n_state, sizeof(double));
    size_t o_order = nn__layout_add(&lay, n, sizeof(size_t));
    size_t o_seen = nn__layout_add(&lay, n, sizeof(bool));
    unsigned char *base = lay.overflow ? NULL : nn__mem(lay.size, &st->mem);
    if (!base)
        return nn__fail(err, AG_ERR_NOMEM, LOAD ": %s: out of memory for %zu bytes", r->path,
                        lay.size);
    st->params = base + o_params;
    st->state = (double *)(base + o_state);
    st->order = (size_t *)(base + o_order);
    st->seen = (bool *)(base + o_seen); /* nn__mem zeroes it */
    if (!nn__get_array(r, st->params, P, es))
        return truncated(r, "parameters", err);
    if (!nn__get_array(r, st->state, h->n_state, 8))
        return truncated(r, "optimizer state", err);
    return read_order(r, st->order, st->seen, n, err);
}

static ag_status check_crc(nn__reader *r, nn_error *err)
{
    uint32_t computed = r->crc;
    uint64_t stored;
    if (!nn__get_int(r, &stored, 4))
        return truncated(r, "checksum", err);
    if (stored != computed)
        return nn__fail(err, AG_ERR_FORMAT, LOAD ": %s: checksum mismatch (stored 0x%08x, "
                        "computed 0x%08x): the file is corrupted", r->path, (unsigned)stored,
                        (unsigned)computed);
    return AG_OK;
}

/* Reads and checks the whole file, then puts it in place. */
static ag_status load_from(nn__reader *r, nn_mlp *net, nn_optim *opt, nn_batches *it,
                           size_t *epoch, nn_error *err)
{
    ck_header h = {0};
    staging st = {0};
    ag_status s = read_preamble(r, it, &h, err);
    if (s == AG_OK)
        s = read_model_header(r, net, err);
    if (s == AG_OK)
        s = read_optim_header(r, opt, &h, err);
    if (s == AG_OK && it)
        s = read_batches_header(r, it, &h, err);
    if (s == AG_OK)
        s = check_size(r, net, &h, err);
    if (s == AG_OK)
        s = read_arrays(r, net, &h, &st, err);
    if (s == AG_OK)
        s = check_crc(r, err);
    if (s == AG_OK) {
        size_t es = ag_dtype_size(nn_mlp_spec(net)->dtype);
        memcpy(nn_mlp_data(net), st.params, nn_mlp_param_count(net) * es);
        nn__optim_restore(opt, &h.cfg, h.steps, st.state);
        h.batches.order = st.order;
        if (it)
            nn__batches_restore(it, &h.batches);
        if (epoch)
            *epoch = h.epoch;
    }
    ag_tensor_free(st.mem);
    return s == AG_OK ? nn__ok(err) : s;
}

ag_status nn_checkpoint_load(const char *path, nn_mlp *net, nn_optim *opt, nn_batches *batches,
                             size_t *epoch, nn_error *err)
{
    if (!path || !net || !opt)
        return nn__fail(err, AG_ERR_NULL, LOAD ": %s is NULL", !path ? "path" : !net ? "net" : "opt");
    ag_status s = check_pair(LOAD, net, opt, err);
    if (s != AG_OK)
        return s;
    nn__reader r = {.path = path};
    s = nn__open_sized(LOAD, path, &r.f, &r.size, err);
    if (s != AG_OK)
        return s;
    s = load_from(&r, net, opt, batches, epoch, err);
    fclose(r.f);
    return s;
}
