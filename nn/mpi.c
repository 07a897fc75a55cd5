/* mpi.c: data-parallel training on MPI (nn_mpi.h). The only file of nn
 * that includes mpi.h; it is built as a library of its own, and only when
 * MPI is found. */
#include "nn_mpi.h"
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* Elements per MPI call: MPI counts are ints. */
#define CHUNK ((size_t)1 << 28)

/* What each rank tells the others after its shards, in one Allgather of
 * doubles: whether it failed, whether its subtree sum is all finite, its
 * batch's rows, then its shards' shares of the cost. */
enum report_field { REPORT_FAILED, REPORT_NONFINITE, REPORT_ROWS, REPORT_COSTS };

struct nn_mpi {
    ag_tensor *mem;        /* owns this struct and the arrays below */
    MPI_Comm comm;         /* our duplicate of the caller's, errors returned */
    int rank, size;        /* N = size */
    nn_mlp *net;
    ag_dtype dt;
    MPI_Datatype mpi_dt;
    size_t n;              /* P: parameters */
    size_t shards, mine;   /* S, and S/N shards per rank */
    void **partial;        /* log2(S/N) buffers of P: the stack of subtree sums */
    size_t *levels;        /* each entry's sum covers 2^level shards */
    size_t depth;          /* entries on the stack */
    void *recv;            /* ceil(P/2) elements from a partner (N > 1) */
    double *report;        /* this rank's step report (see report_field) */
    double *reports;       /* every rank's, in rank order */
    uint64_t bytes_sent;   /* by the last step's reduction */
};

/* ------------------------------------------------ collective errors */

static ag_status mpi_failed(nn_error *err, const char *fn, const char *call, int code)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error %d", code);
    return nn__fail(err, AG_ERR_IO, "%s: %s failed: %s", fn, call, text);
}

/* What a failing rank tells the others. */
typedef struct {
    int status;
    char msg[NN_ERR_MAX];
} failure;

/* Every rank learns rank `from`'s failure (s and local are read there
 * only), as "rank R: its message". */
static ag_status spread_failure(MPI_Comm comm, int rank, int from, ag_status s,
                                const nn_error *local, const char *fn, nn_error *err)
{
    failure f = {0};
    if (rank == from) {
        f.status = (int)s;
        snprintf(f.msg, sizeof f.msg, "%s",
                 local && local->msg[0] ? local->msg : ag_status_string(s));
    }
    int rc = MPI_Bcast(&f, (int)sizeof f, MPI_BYTE, from, comm);
    if (rc != MPI_SUCCESS)
        return mpi_failed(err, fn, "MPI_Bcast", rc);
    return nn__fail(err, (ag_status)f.status, "rank %d: %s", from, f.msg);
}

/* nn_mpi_agree on a communicator whose rank and size are known. */
static ag_status agree(MPI_Comm comm, int rank, int size, ag_status s, const nn_error *local,
                       const char *fn, nn_error *err)
{
    int mine = s != AG_OK ? rank : size, first;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    if (rc != MPI_SUCCESS)
        return mpi_failed(err, fn, "MPI_Allreduce", rc);
    if (first == size)
        return nn__ok(err);
    return spread_failure(comm, rank, first, s, local, fn, err);
}

/* This process's rank in comm and the rank count. */
static ag_status comm_shape(MPI_Comm comm, int *rank, int *size, const char *fn, nn_error *err)
{
    if (comm == MPI_COMM_NULL)
        return nn__fail(err, AG_ERR_NULL, "%s: comm is MPI_COMM_NULL", fn);
    int rc = MPI_Comm_rank(comm, rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(comm, size);
    return rc == MPI_SUCCESS ? AG_OK : mpi_failed(err, fn, "MPI_Comm_rank", rc);
}

ag_status nn_mpi_agree(MPI_Comm comm, ag_status s, nn_error *err)
{
    int rank, size;
    ag_status shape = comm_shape(comm, &rank, &size, "nn_mpi_agree", err);
    return shape != AG_OK ? shape : agree(comm, rank, size, s, err, "nn_mpi_agree", err);
}

/* n elements of es bytes from root to every rank, in chunks MPI can count. */
static ag_status bcast_bytes(MPI_Comm comm, void *p, size_t n, size_t es, int root,
                             const char *fn, nn_error *err)
{
    size_t bytes = n * es; /* the caller's block: it fits in memory */
    for (size_t at = 0; at < bytes; at += CHUNK) {
        size_t k = bytes - at < CHUNK ? bytes - at : CHUNK;
        int rc = MPI_Bcast((char *)p + at, (int)k, MPI_BYTE, root, comm);
        if (rc != MPI_SUCCESS)
            return mpi_failed(err, fn, "MPI_Bcast", rc);
    }
    return AG_OK;
}

/* ------------------------------------------------ the trainer */

static bool power_of_two(size_t v) { return v && (v & (v - 1)) == 0; }

static ag_status check_new(const nn_mlp *net, nn_mpi **out, size_t shards, int size,
                           nn_error *err)
{
    const char *fn = "nn_mpi_new";
    if (!net || !out)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, !net ? "net" : "out");
    if (!power_of_two(shards) || shards > NN_MPI_SHARDS_MAX)
        return nn__fail(err, AG_ERR_VALUE, "%s: shards %zu must be a power of two in [1, %d]",
                        fn, shards, NN_MPI_SHARDS_MAX);
    if (shards % (size_t)size != 0)
        return nn__fail(err, AG_ERR_VALUE, "%s: %d ranks do not divide %zu shards (run on a "
                        "power of two of ranks, at most the shards)", fn, size, shards);
    return AG_OK;
}

/* The trainer and its buffers in one block (zeroed), for size ranks. */
static ag_status alloc_trainer(nn_mlp *net, size_t shards, int size, nn_mpi **out,
                               nn_error *err)
{
    ag_dtype dt = nn_mlp_spec(net)->dtype;
    size_t P = nn_mlp_param_count(net), es = ag_dtype_size(dt), mine = shards / (size_t)size;
    size_t d = 0, buf_bytes = 0;
    while (((size_t)1 << d) < mine)
        d++;
    nn__layout lay = {0};
    lay.overflow |= !nn__mul(P, es, &buf_bytes);
    nn__layout_add(&lay, 1, sizeof(nn_mpi));
    size_t o_partial = nn__layout_add(&lay, d, sizeof(void *));
    size_t o_levels = nn__layout_add(&lay, d, sizeof(size_t));
    size_t o_report = nn__layout_add(&lay, REPORT_COSTS + mine, sizeof(double));
    size_t o_reports = nn__layout_add(&lay, (REPORT_COSTS + mine) * (size_t)size, sizeof(double));
    size_t o_recv = nn__layout_add(&lay, size > 1 ? P / 2 + 1 : 0, es);
    size_t o_bufs = nn__layout_add(&lay, d, buf_bytes);
    ag_tensor *mem = NULL;
    unsigned char *base = lay.overflow ? NULL : nn__mem(lay.size, &mem);
    if (!base)
        return nn__fail(err, AG_ERR_NOMEM, "nn_mpi_new: out of memory for the shard sums of %zu "
                        "parameters", P);
    nn_mpi *dp = (nn_mpi *)base;
    *dp = (nn_mpi){.mem = mem, .net = net, .dt = dt, .n = P, .shards = shards, .mine = mine,
                   .mpi_dt = dt == AG_F32 ? MPI_FLOAT : MPI_DOUBLE, .size = size};
    dp->partial = (void **)(base + o_partial);
    for (size_t i = 0; i < d; i++)
        dp->partial[i] = base + o_bufs + i * buf_bytes;
    dp->levels = (size_t *)(base + o_levels);
    dp->report = (double *)(base + o_report);
    dp->reports = (double *)(base + o_reports);
    dp->recv = base + o_recv;
    *out = dp;
    return AG_OK;
}

/* What every rank must agree on: the shards, and the model's shape. */
static uint64_t model_signature(const nn_mlp *net)
{
    const nn_spec *s = nn_mlp_spec(net);
    uint32_t crc = nn_crc32(0, &s->n_layers, sizeof s->n_layers);
    crc = nn_crc32(crc, s->sizes, (s->n_layers + 1) * sizeof *s->sizes);
    crc = nn_crc32(crc, s->acts, s->n_layers * sizeof *s->acts);
    crc = nn_crc32(crc, &s->dtype, sizeof s->dtype);
    crc = nn_crc32(crc, &s->leaky_slope, sizeof s->leaky_slope);
    return crc;
}

/* Fails on every rank alike when the ranks' shards or models differ:
 * one Allreduce of the values and their complements (MIN gives both the
 * least and the greatest). */
static ag_status check_same(const nn_mpi *dp, nn_error *err)
{
    const char *fn = "nn_mpi_new";
    unsigned long long v[4] = {dp->shards, model_signature(dp->net)}, r[4];
    v[2] = ~v[0];
    v[3] = ~v[1];
    int rc = MPI_Allreduce(v, r, 4, MPI_UNSIGNED_LONG_LONG, MPI_MIN, dp->comm);
    if (rc != MPI_SUCCESS)
        return mpi_failed(err, fn, "MPI_Allreduce", rc);
    if (r[0] != ~r[2])
        return nn__fail(err, AG_ERR_VALUE, "%s: the ranks give different shards (%llu to %llu)",
                        fn, r[0], ~r[2]);
    if (r[1] != ~r[3])
        return nn__fail(err, AG_ERR_VALUE, "%s: the ranks' models differ in layer sizes, "
                        "activations or dtype (every rank must build the same nn_spec)", fn);
    return AG_OK;
}

/* The trainer's setup after the communicator is ours: checks, buffers,
 * then rank 0's parameters copied to every rank. */
static ag_status setup(MPI_Comm comm, nn_mlp *net, size_t shards, nn_mpi **out, nn_error *err)
{
    const char *fn = "nn_mpi_new";
    int rank, size;
    ag_status s = comm_shape(comm, &rank, &size, fn, err);
    if (s != AG_OK)
        return s;
    nn_error local = {0};
    s = check_new(net, out, shards, size, &local);
    if (s == AG_OK)
        s = alloc_trainer(net, shards, size, out, &local);
    s = agree(comm, rank, size, s, &local, fn, err);
    if (s != AG_OK)
        return s;
    nn_mpi *dp = *out;
    dp->comm = comm;
    dp->rank = rank;
    s = check_same(dp, err);
    if (s == AG_OK)
        s = bcast_bytes(comm, nn_mlp_data(net), dp->n, ag_dtype_size(dp->dt), 0, fn, err);
    return s;
}

ag_status nn_mpi_new(MPI_Comm comm, nn_mlp *net, size_t shards, nn_mpi **out, nn_error *err)
{
    const char *fn = "nn_mpi_new";
    nn_mpi *dp = NULL;
    if (out)
        *out = NULL;
    if (comm == MPI_COMM_NULL)
        return nn__fail(err, AG_ERR_NULL, "%s: comm is MPI_COMM_NULL", fn);
    MPI_Comm ours;
    int rc = MPI_Comm_dup(comm, &ours);
    if (rc != MPI_SUCCESS)
        return mpi_failed(err, fn, "MPI_Comm_dup", rc);
    MPI_Comm_set_errhandler(ours, MPI_ERRORS_RETURN);
    ag_status s = setup(ours, net, shards, out ? &dp : NULL, err); /* out NULL: a collective error */
    if (s != AG_OK) {
        ag_tensor_free(dp ? dp->mem : NULL);
        MPI_Comm_free(&ours);
        return s;
    }
    *out = dp;
    return nn__ok(err);
}

void nn_mpi_free(nn_mpi *dp)
{
    if (!dp)
        return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) /* else MPI has freed it, and may not be called */
        MPI_Comm_free(&dp->comm);
    ag_tensor_free(dp->mem);
}

int nn_mpi_rank(const nn_mpi *dp) { return dp ? dp->rank : -1; }
int nn_mpi_size(const nn_mpi *dp) { return dp ? dp->size : 0; }
uint64_t nn_mpi_bytes_sent(const nn_mpi *dp) { return dp ? dp->bytes_sent : 0; }

/* ------------------------------------------------ this rank's shards */

/* dst += src, element by element, rounded to the dtype: the one addition
 * of the tree, the same on every rank. */
NN_TARGET_CLONES
static void add_into(ag_dtype dt, void *restrict dst, const void *restrict src, size_t n)
{
    if (dt == AG_F32) {
        float *d = dst;
        const float *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] += s[i];
    } else {
        double *d = dst;
        const double *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] += s[i];
    }
}

static bool all_finite(ag_dtype dt, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(nn__get(dt, p, i)))
            return false;
    return true;
}

/* Copies the tape's error into err after prefix, and resets the tape. */
static ag_status tape_error(ag_tape *t, const char *prefix, nn_error *err)
{
    ag_status s = nn__fail(err, ag_tape_status(t), "%s%s", prefix, ag_tape_error(t));
    ag_tape_reset(t);
    return s;
}

static ag_status check_step(const nn_mpi *dp, ag_tape *t, nn_optim *opt, ag_tensor *x,
                            ag_tensor *y, nn_error *err)
{
    const char *fn = "nn_mpi_train_step";
    if (!t || !opt)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, !t ? "t" : "opt");
    size_t n;
    const nn_param *params = nn_mlp_params(dp->net, &n);
    if (!nn__optim_updates(opt, params, n)) /* it would step on gradients we never summed */
        return nn__fail(err, AG_ERR_VALUE, "%s: opt does not update the trainer's model (make it "
                        "with nn_mlp_optim_new on that model)", fn);
    if (ag_tape_status(t) != AG_OK || ag_tape_check_input(t, x, fn, "x") != AG_OK ||
        ag_tape_check_input(t, y, fn, "y") != AG_OK)
        return tape_error(t, "", err); /* the message names fn */
    char sx[NN_SHAPE_BUF], sy[NN_SHAPE_BUF];
    size_t rows = ag_tensor_rank(x) ? nn__rows(x) : 0;
    if (rows == 0 || ag_tensor_rank(y) == 0 || nn__rows(y) != rows)
        return nn__fail(err, AG_ERR_SHAPE, "%s: x %s and y %s must have the same number of rows, "
                        "at least 1", fn, ag_shape_str(x, sx, sizeof sx),
                        ag_shape_str(y, sy, sizeof sy));
    if (rows > SIZE_MAX / dp->shards)
        return nn__fail(err, AG_ERR_OVERFLOW, "%s: %zu rows overflow", fn, rows);
    return AG_OK;
}

/* The gradient of shard k's share of the global batch's mean cost,
 * (rows_k / B)·C_k, alone in the model's grad block; that share of the
 * cost into *loss. A shard without rows leaves 0 in both. */
static ag_status shard_grad(nn_mpi *dp, ag_tape *t, nn_cost cost, ag_tensor *x, ag_tensor *y,
                            size_t k, double *loss, nn_error *err)
{
    size_t B = nn__rows(x), lo = k * B / dp->shards, hi = (k + 1) * B / dp->shards;
    nn_mlp_zero_grad(dp->net);
    *loss = 0;
    if (lo == hi)
        return AG_OK;
    ag_tensor *out = nn_mlp_forward(dp->net, t, ag_slice(t, x, 0, lo, hi), NULL, 0);
    ag_tensor *c = ag_scale(t, nn_loss(t, cost, out, ag_slice(t, y, 0, lo, hi)),
                            (double)(hi - lo) / (double)B);
    if (!c || ag_backward(t, c) != AG_OK) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "nn_mpi_train_step: shard %zu of %zu: ", k, dp->shards);
        return tape_error(t, prefix, err);
    }
    *loss = ag_item(c);
    ag_tape_reset(t);
    return AG_OK;
}

/* Pushes the shard gradient now in the grad block onto the stack of
 * subtree sums, merging as a binary counter carries: after the j-th shard
 * (from 1) the stack holds one sum per binary digit 1 of j, largest first,
 * so the last of 2^d shards leaves their whole subtree in partial[0]. */
static void push_shard(nn_mpi *dp)
{
    const void *carry = nn_mlp_grad(dp->net);
    size_t level = 0;
    while (dp->depth > 0 && dp->levels[dp->depth - 1] == level) {
        void *left = dp->partial[--dp->depth];
        add_into(dp->dt, left, carry, dp->n);
        carry = left;
        level++;
    }
    if (carry != dp->partial[dp->depth])
        memcpy(dp->partial[dp->depth], carry, dp->n * ag_dtype_size(dp->dt));
    dp->levels[dp->depth++] = level;
}

/* This rank's subtree sum in the grad block; *rows: the batch's rows,
 * *finite: whether that sum is all finite. */
static ag_status local_sum(nn_mpi *dp, ag_tape *t, nn_optim *opt, nn_cost cost, ag_tensor *x,
                           ag_tensor *y, size_t *rows, bool *finite, nn_error *err)
{
    ag_status s = check_step(dp, t, opt, x, y, err);
    if (s != AG_OK)
        return s;
    *rows = nn__rows(x);
    size_t first = (size_t)dp->rank * dp->mine;
    dp->depth = 0;
    for (size_t j = 0; j < dp->mine; j++) {
        s = shard_grad(dp, t, cost, x, y, first + j, &dp->report[REPORT_COSTS + j], err);
        if (s != AG_OK)
            return s;
        if (dp->mine > 1) /* one shard is its own subtree, already in place */
            push_shard(dp);
    }
    if (dp->mine > 1)
        memcpy(nn_mlp_grad(dp->net), dp->partial[0], dp->n * ag_dtype_size(dp->dt));
    *finite = all_finite(dp->dt, nn_mlp_grad(dp->net), dp->n);
    return AG_OK;
}

/* ------------------------------------------------ across ranks */

/* The step's one status exchange: every rank's report (an Allgather),
 * then the lowest failing rank's failure reaches every rank (it alone
 * broadcasts); the ranks' batch rows must agree. *nonfinite_rank gets the
 * lowest rank whose subtree sum is not finite (N if none), *loss the
 * global batch's cost: every shard's share, summed in shard order. */
static ag_status share_reports(nn_mpi *dp, ag_status s, const nn_error *local, size_t rows,
                               bool finite, int *nonfinite_rank, double *loss, nn_error *err)
{
    const char *fn = "nn_mpi_train_step";
    size_t k = REPORT_COSTS + dp->mine;
    dp->report[REPORT_FAILED] = s != AG_OK;
    dp->report[REPORT_NONFINITE] = !finite;
    dp->report[REPORT_ROWS] = (double)rows;
    int rc = MPI_Allgather(dp->report, (int)k, MPI_DOUBLE, dp->reports, (int)k, MPI_DOUBLE,
                           dp->comm);
    if (rc != MPI_SUCCESS)
        return mpi_failed(err, fn, "MPI_Allgather", rc);
    int failed = dp->size;
    double least = dp->reports[REPORT_ROWS], most = least, sum = 0;
    *nonfinite_rank = dp->size;
    for (int r = dp->size; r-- > 0;) { /* downwards: the lowest rank is found last */
        const double *rep = dp->reports + (size_t)r * k;
        failed = rep[REPORT_FAILED] != 0 ? r : failed;
        *nonfinite_rank = rep[REPORT_NONFINITE] != 0 ? r : *nonfinite_rank;
        least = rep[REPORT_ROWS] < least ? rep[REPORT_ROWS] : least;
        most = rep[REPORT_ROWS] > most ? rep[REPORT_ROWS] : most;
    }
    if (failed < dp->size)
        return spread_failure(dp->comm, dp->rank, failed, s, local, fn, err);
    if (least != most)
        return nn__fail(err, AG_ERR_SHAPE, "%s: the ranks' batches have %.0f to %.0f rows; every "
                        "rank must pass the same global batch", fn, least, most);
    for (size_t r = 0; r < (size_t)dp->size; r++)
        for (size_t j = 0; j < dp->mine; j++)
            sum += dp->reports[r * k + REPORT_COSTS + j];
    if (loss)
        *loss = sum;
    return AG_OK;
}

/* Sends n_send elements to partner while receiving n_recv from it, in
 * chunks MPI can count (the partner makes the mirror call). */
static ag_status exchange(nn_mpi *dp, const void *send, size_t n_send, void *recv, size_t n_recv,
                          int partner, nn_error *err)
{
    size_t es = ag_dtype_size(dp->dt);
    for (size_t s = 0, r = 0; s < n_send || r < n_recv;) {
        size_t ks = n_send - s < CHUNK ? n_send - s : CHUNK;
        size_t kr = n_recv - r < CHUNK ? n_recv - r : CHUNK;
        int rc = MPI_Sendrecv((const char *)send + s * es, (int)ks, dp->mpi_dt, partner, 0,
                              (char *)recv + r * es, (int)kr, dp->mpi_dt, partner, 0, dp->comm,
                              MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_failed(err, "nn_mpi_train_step", "MPI_Sendrecv", rc);
        s += ks;
        r += kr;
    }
    dp->bytes_sent += n_send * es;
    return AG_OK;
}

/* Sums the ranks' subtree sums in the tree above them, in place in the
 * grad block: a reduce-scatter by recursive halving, then an allgather by
 * recursive doubling, partners at distance 1, 2, 4, ... At distance h two
 * neighbouring blocks of h ranks become one block of 2h, so every element
 * is summed in the tree's order, the same bits on every rank. */
static ag_status reduce_tree(nn_mpi *dp, nn_error *err)
{
    char *g = nn_mlp_grad(dp->net);
    size_t es = ag_dtype_size(dp->dt), a = 0, b = dp->n, lo[32], hi[32];
    int steps = 0;
    ag_status s = AG_OK;
    dp->bytes_sent = 0;
    for (int h = 1; s == AG_OK && h < dp->size; h <<= 1, steps++) {
        bool upper = dp->rank & h; /* keeps the upper half of [a, b) */
        size_t mid = a + (b - a) / 2, ka = upper ? mid : a, kb = upper ? b : mid;
        size_t sa = upper ? a : mid, sb = upper ? mid : b;
        s = exchange(dp, g + sa * es, sb - sa, dp->recv, kb - ka, dp->rank ^ h, err);
        if (s == AG_OK)
            add_into(dp->dt, g + ka * es, dp->recv, kb - ka);
        lo[steps] = a;
        hi[steps] = b;
        a = ka;
        b = kb;
    }
    while (s == AG_OK && steps-- > 0) { /* each rank's summed part, to every rank */
        bool upper = dp->rank & (1 << steps);
        size_t oa = upper ? lo[steps] : b, ob = upper ? a : hi[steps];
        s = exchange(dp, g + a * es, b - a, g + oa * es, ob - oa, dp->rank ^ (1 << steps), err);
        a = lo[steps];
        b = hi[steps];
    }
    return s;
}

/* The optimizer's step, the same on every rank; a refusal of a non-finite
 * gradient names the lowest rank whose shards produced one. */
static ag_status optim_step(nn_mpi *dp, ag_tape *t, nn_optim *opt, int nonfinite_rank,
                            nn_error *err)
{
    ag_status s = nn__optim_step(opt, t, "nn_mpi_train_step", err);
    if (s == AG_ERR_NUMERIC && err && nonfinite_rank < dp->size) {
        char msg[NN_ERR_MAX];
        memcpy(msg, err->msg, sizeof msg);
        nn__fail(err, s, "rank %d: %s", nonfinite_rank, msg);
    }
    return s;
}

ag_status nn_mpi_train_step(nn_mpi *dp, ag_tape *t, nn_optim *opt, nn_cost cost,
                            ag_tensor *x, ag_tensor *y, double *loss, nn_error *err)
{
    if (!dp)
        return nn__fail(err, AG_ERR_NULL, "nn_mpi_train_step: dp is NULL");
    nn_error local = {0};
    size_t rows = 0;
    bool finite = true;
    int nonfinite_rank = dp->size;
    ag_status s = local_sum(dp, t, opt, cost, x, y, &rows, &finite, &local);
    s = share_reports(dp, s, &local, rows, finite, &nonfinite_rank, loss, err);
    if (s == AG_OK)
        s = reduce_tree(dp, err);
    if (s == AG_OK)
        s = optim_step(dp, t, opt, nonfinite_rank, err);
    return s;
}

/* ------------------------------------------------ model files */

ag_status nn_mpi_save(nn_mpi *dp, const char *path, nn_error *err)
{
    const char *fn = "nn_mpi_save";
    if (!dp)
        return nn__fail(err, AG_ERR_NULL, "%s: dp is NULL", fn);
    uint32_t crc = nn_crc32(0, nn_mlp_data(dp->net), dp->n * ag_dtype_size(dp->dt)), crc0 = crc;
    int rc = MPI_Bcast(&crc0, 1, MPI_UINT32_T, 0, dp->comm);
    if (rc != MPI_SUCCESS)
        return mpi_failed(err, fn, "MPI_Bcast", rc);
    nn_error local = {0};
    ag_status s = AG_OK;
    if (crc != crc0)
        s = nn__fail(&local, AG_ERR_STATE, "%s: the parameters differ from rank 0's (CRC-32 "
                     "%08x, rank 0's %08x); nothing written", fn, (unsigned)crc, (unsigned)crc0);
    s = agree(dp->comm, dp->rank, dp->size, s, &local, fn, err);
    if (s != AG_OK)
        return s;
    s = dp->rank == 0 ? nn_mlp_save(dp->net, path, &local) : AG_OK;
    return agree(dp->comm, dp->rank, dp->size, s, &local, fn, err);
}

/* A model's shape as rank 0 sends it to the others. */
typedef struct {
    uint64_t n_layers, sizes[NN_MAX_LAYERS + 1];
    int32_t acts[NN_MAX_LAYERS], dtype;
    double slope;
} wire_spec;

static wire_spec to_wire(const nn_spec *s)
{
    wire_spec w = {.n_layers = s->n_layers, .dtype = (int32_t)s->dtype, .slope = s->leaky_slope};
    for (size_t l = 0; l < s->n_layers; l++) {
        w.sizes[l] = s->sizes[l];
        w.acts[l] = (int32_t)s->acts[l];
    }
    w.sizes[s->n_layers] = s->sizes[s->n_layers];
    return w;
}

/* A model of w's shape, every parameter 0 (rank 0's values come next). */
static ag_status from_wire(const wire_spec *w, nn_mlp **out, nn_error *err)
{
    size_t sizes[NN_MAX_LAYERS + 1];
    nn_act acts[NN_MAX_LAYERS];
    size_t L = w->n_layers <= NN_MAX_LAYERS ? (size_t)w->n_layers : 0;
    for (size_t l = 0; l < L; l++) {
        sizes[l] = (size_t)w->sizes[l];
        acts[l] = (nn_act)w->acts[l];
    }
    sizes[L] = (size_t)w->sizes[L];
    nn_spec spec = {.n_layers = L, .sizes = sizes, .acts = acts, .dtype = (ag_dtype)w->dtype,
                    .init = NN_INIT_NORMAL, .seed = 0, .leaky_slope = w->slope};
    return nn__mlp_new_zeroed(&spec, "nn_mpi_load", out, err);
}

/* After rank 0 has loaded *net: the others make one of its shape, then
 * rank 0's parameters reach them all. */
static ag_status share_model(MPI_Comm comm, int rank, int size, nn_mlp **net, nn_error *err)
{
    const char *fn = "nn_mpi_load";
    wire_spec w = {0};
    if (rank == 0)
        w = to_wire(nn_mlp_spec(*net));
    ag_status s = bcast_bytes(comm, &w, 1, sizeof w, 0, fn, err);
    if (s != AG_OK)
        return s;
    nn_error local = {0};
    s = rank != 0 ? from_wire(&w, net, &local) : AG_OK;
    s = agree(comm, rank, size, s, &local, fn, err);
    if (s != AG_OK)
        return s;
    const nn_spec *spec = nn_mlp_spec(*net);
    return bcast_bytes(comm, nn_mlp_data(*net), nn_mlp_param_count(*net),
                       ag_dtype_size(spec->dtype), 0, fn, err);
}

ag_status nn_mpi_load(MPI_Comm comm, const char *path, nn_mlp **out, nn_error *err)
{
    const char *fn = "nn_mpi_load";
    if (out)
        *out = NULL;
    int rank, size;
    ag_status s = comm_shape(comm, &rank, &size, fn, err);
    if (s != AG_OK)
        return s;
    nn_error local = {0};
    nn_mlp *net = NULL;
    if (!out)
        s = nn__fail(&local, AG_ERR_NULL, "%s: out is NULL", fn);
    else if (rank == 0)
        s = nn_mlp_load(path, &net, &local);
    s = agree(comm, rank, size, s, &local, fn, err);
    if (s == AG_OK)
        s = share_model(comm, rank, size, &net, err);
    if (s != AG_OK) {
        nn_mlp_free(net);
        return s;
    }
    *out = net;
    return nn__ok(err);
}
