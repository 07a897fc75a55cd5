/* fuzz_model: nn_mlp_load on an arbitrary file. A file it refuses must
 * leave nothing behind (no model, no memory) and an error message; a file
 * it accepts must give a usable model that describes the file: the
 * header's sizes and activations, the parameters bit for bit, a forward
 * pass and a backward pass that work, and nn_mlp_save writing the same
 * bytes back (unless the file's leaky slope is 0, which loads as the
 * 0.01 default). A file refused as malformed must be refused before any
 * allocation. The same load with one of its allocations refused (which
 * one depends on the input) must fail with AG_ERR_NOMEM and leak nothing. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"
#include "nn.h"

#define MEM_LIMIT (8u << 20)

FZ_TARGET(MEM_LIMIT)

static uint64_t le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* The model describes the file it came from. */
static void check_model(const nn_mlp *net, const uint8_t *data, size_t size)
{
    const nn_spec *sp = nn_mlp_spec(net);
    size_t L = sp->n_layers, es = ag_dtype_size(sp->dtype);
    FZ_CHECK(L >= 1 && L <= NN_MAX_LAYERS && es != 0);
    FZ_CHECK(size >= 48 + 12 * L);
    FZ_CHECK(le(data + 12, 4) == (sp->dtype == AG_F64 ? 1u : 0u));
    FZ_CHECK(le(data + 16, 4) == L);
    size_t P = 0;
    for (size_t l = 0; l <= L; l++) {
        FZ_CHECK(sp->sizes[l] >= 1 && sp->sizes[l] == le(data + 32 + 8 * l, 8));
        if (l < L) {
            FZ_CHECK((uint64_t)sp->acts[l] == le(data + 40 + 8 * L + 4 * l, 4));
            P += sp->sizes[l] * sp->sizes[l + 1] + sp->sizes[l + 1];
        }
    }
    FZ_CHECK(nn_mlp_param_count(net) == P);
    FZ_CHECK(size == 48 + 12 * L + P * es + 4);
    FZ_CHECK(memcmp(nn_mlp_data(net), data + 48 + 12 * L, P * es) == 0); /* little-endian host */
    size_t n;
    const nn_param *ps = nn_mlp_params(net, &n);
    FZ_CHECK(n == 2 * L);
    size_t off = 0;
    for (size_t l = 0; l < L; l++) {
        const ag_tensor *W = ps[2 * l].tensor, *b = ps[2 * l + 1].tensor;
        FZ_CHECK(ag_tensor_rank(W) == 2 && ag_tensor_shape(W)[0] == sp->sizes[l] &&
                 ag_tensor_shape(W)[1] == sp->sizes[l + 1]);
        FZ_CHECK(ag_tensor_rank(b) == 1 && ag_tensor_shape(b)[0] == sp->sizes[l + 1]);
        FZ_CHECK(ag_requires_grad(W) && ag_requires_grad(b));
        FZ_CHECK(ag_data(W) == (char *)nn_mlp_data(net) + off * es);
        off += ag_tensor_numel(W);
        FZ_CHECK(ag_data(b) == (char *)nn_mlp_data(net) + off * es);
        off += ag_tensor_numel(b);
    }
    FZ_CHECK(off == P);
}

/* One forward and backward pass on a batch of two rows. */
static void check_usable(nn_mlp *net)
{
    const nn_spec *sp = nn_mlp_spec(net);
    size_t L = sp->n_layers;
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_full(sp->dtype, (size_t[]){2, sp->sizes[0]}, 2, 0.5);
    FZ_CHECK(t && x);
    nn_tap taps[NN_MAX_LAYERS];
    ag_tensor *y = nn_mlp_forward(net, t, x, taps, NN_MAX_LAYERS);
    FZ_CHECK((y != NULL) == (ag_tape_status(t) == AG_OK));
    if (!y) {
        FZ_CHECK(ag_tape_status(t) == AG_ERR_NOMEM); /* the sizes were checked: only memory */
    } else {
        FZ_CHECK(ag_tensor_rank(y) == 2 && ag_tensor_shape(y)[0] == 2 &&
                 ag_tensor_shape(y)[1] == sp->sizes[L]);
        FZ_CHECK(ag_tensor_dtype(y) == sp->dtype);
        for (size_t l = 0; l < L; l++)
            FZ_CHECK(taps[l].z && taps[l].a);
        ag_tensor *s = ag_sum(t, y);
        ag_status st = s ? ag_backward(t, s) : ag_tape_status(t);
        FZ_CHECK(st == AG_OK || st == AG_ERR_NOMEM);
        if (st == AG_OK)
            for (size_t l = 0; l < L; l++)
                FZ_CHECK(ag_grad(taps[l].z) != NULL);
    }
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* Saving the loaded model writes the file it came from. */
static void check_save(const nn_mlp *net, const uint8_t *data, size_t size)
{
    double slope;
    memcpy(&slope, data + 24, 8);
    if (slope == 0)
        return;
    fz_temp out;
    if (!fz_temp_name(&out))
        return;
    nn_error err;
    ag_status s = nn_mlp_save(net, out.path, &err);
    FZ_CHECK(s == AG_OK && err.status == AG_OK);
    FILE *f = fopen(out.path, "rb");
    FZ_CHECK(f != NULL);
    unsigned char *back = malloc(size + 1);
    size_t got = fread(back, 1, size + 1, f);
    fclose(f);
    fz_temp_remove(&out);
    FZ_CHECK(got == size && memcmp(back, data, size) == 0);
    free(back);
}

/* The same load with one of its allocations refused: a clean NOMEM. */
static void check_nomem(const char *path, size_t fail_at)
{
    fz_mem_begin(fail_at);
    nn_mlp *net = (nn_mlp *)path;
    nn_error err;
    ag_status s = nn_mlp_load(path, &net, &err);
    FZ_CHECK(s == AG_ERR_NOMEM && err.status == s && err.msg[0] != '\0' && net == NULL);
    fz_mem_end();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_mem_begin(0);
    fz_temp in;
    if (!fz_temp_write(&in, data, size))
        return 0;
    nn_mlp *net = (nn_mlp *)&in; /* must be set to NULL on failure */
    nn_error err;
    ag_status s = nn_mlp_load(in.path, &net, &err);
    size_t allocs = fz_mem.count;
    if (allocs && s != AG_ERR_NOMEM) {
        nn_mlp *keep = net;
        fz_mem_state outer = fz_mem;
        fz_mem.live = 0; /* the first load's model stays live: set it aside */
        check_nomem(in.path, fz_pick_failure(data, size, allocs));
        fz_mem = outer;
        net = keep;
    }
    fz_temp_remove(&in);
    FZ_CHECK(s == err.status);
    if (s != AG_OK) {
        FZ_CHECK(net == NULL);
        FZ_CHECK(err.msg[0] != '\0');
        FZ_CHECK(s == AG_ERR_FORMAT || s == AG_ERR_NOMEM);
        FZ_CHECK(s != AG_ERR_FORMAT || allocs == 0); /* checked before allocating */
        fz_mem_end();
        return 0;
    }
    FZ_CHECK(net != NULL && err.msg[0] == '\0');
    check_model(net, data, size);
    check_usable(net);
    check_save(net, data, size);
    nn_mlp_free(net);
    fz_mem_end();
    return 0;
}
