/* fuzz_safetensors: nn_safetensors_load and nn_mlp_load_safetensors (no
 * spec) on an arbitrary file. A refused file leaves nothing (no object, no
 * memory) and an error message; a refused header length allocates
 * nothing. An accepted file's tensors fill its data exactly, and
 * nn_safetensors_save then a second load give the same names, metadata
 * and bits. An imported model has a weight and a bias per layer; its
 * export loads back as the same model. The same loads with one of their
 * allocations refused must fail with AG_ERR_NOMEM, leak-free. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"
#include "nn.h"

#define MEM_LIMIT (8u << 20)

FZ_TARGET(MEM_LIMIT)

static void check_tensors(const nn_safetensors *st, const uint8_t *data, size_t size)
{
    uint64_t header = 0;
    for (size_t i = 8; i-- > 0;)
        header = header << 8 | data[i];
    FZ_CHECK(size >= 8 && header <= size - 8);
    size_t n, bytes = 0;
    const nn_param *ts = nn_safetensors_tensors(st, &n);
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(ts[i].name && ts[i].tensor && ag_tensor_rank(ts[i].tensor) <= AG_MAX_RANK);
        FZ_CHECK(nn_safetensors_get(st, ts[i].name) == ts[i].tensor); /* names are unique */
        bytes += ag_tensor_numel(ts[i].tensor) * ag_dtype_size(ag_tensor_dtype(ts[i].tensor));
    }
    FZ_CHECK(bytes == size - 8 - header);
}

static void check_round_trip(const nn_safetensors *st)
{
    fz_temp out;
    if (!fz_temp_name(&out))
        return;
    size_t n, n_meta;
    const nn_param *ts = nn_safetensors_tensors(st, &n);
    const nn_meta *meta = nn_safetensors_meta(st, &n_meta);
    nn_error err;
    FZ_CHECK(nn_safetensors_save(out.path, ts, n, meta, n_meta, &err) == AG_OK);
    nn_safetensors *back = NULL;
    ag_status s = nn_safetensors_load(out.path, &back, &err);
    fz_temp_remove(&out);
    FZ_CHECK(s == AG_OK || s == AG_ERR_NOMEM);
    if (s != AG_OK)
        return;
    size_t n2, n_meta2;
    const nn_param *ts2 = nn_safetensors_tensors(back, &n2);
    const nn_meta *meta2 = nn_safetensors_meta(back, &n_meta2);
    FZ_CHECK(n2 == n && n_meta2 == n_meta);
    for (size_t i = 0; i < n; i++)
        FZ_CHECK(strcmp(ts[i].name, ts2[i].name) == 0 && fz_same_bits(ts[i].tensor, ts2[i].tensor));
    for (size_t i = 0; i < n_meta; i++)
        FZ_CHECK(strcmp(meta[i].key, meta2[i].key) == 0 &&
                 strcmp(meta[i].value, meta2[i].value) == 0);
    nn_safetensors_free(back);
}

static void check_model(nn_mlp *net, const nn_safetensors *st)
{
    size_t n;
    nn_safetensors_tensors(st, &n);
    FZ_CHECK(n == 2 * nn_mlp_spec(net)->n_layers);
    fz_temp out;
    if (!fz_temp_name(&out))
        return;
    nn_error err;
    FZ_CHECK(nn_mlp_save_safetensors(net, out.path, &err) == AG_OK || err.status == AG_ERR_NOMEM);
    nn_mlp *back = NULL;
    ag_status s = nn_mlp_load_safetensors(out.path, NULL, &back, &err);
    fz_temp_remove(&out);
    FZ_CHECK(s == AG_OK || s == AG_ERR_NOMEM || s == AG_ERR_IO);
    if (s == AG_OK)
        FZ_CHECK(nn_mlp_param_count(back) == nn_mlp_param_count(net) &&
                 memcmp(nn_mlp_data(back), nn_mlp_data(net), nn_mlp_param_count(net) *
                        ag_dtype_size(nn_mlp_spec(net)->dtype)) == 0);
    nn_mlp_free(back);
}

/* A load of path with allocation fail_at refused: a clean NOMEM. */
static void check_nomem(const char *path, size_t fail_at, bool as_model)
{
    fz_mem_begin(fail_at);
    nn_safetensors *st = (nn_safetensors *)path;
    nn_mlp *net = (nn_mlp *)path;
    nn_error err;
    ag_status s = as_model ? nn_mlp_load_safetensors(path, NULL, &net, &err)
                           : nn_safetensors_load(path, &st, &err);
    FZ_CHECK(err.status == s && err.msg[0] != '\0');
    FZ_CHECK(as_model ? net == NULL : st == NULL);
    FZ_CHECK(s == AG_ERR_NOMEM);
    fz_mem_end();
}

static void run_import(const char *path, const nn_safetensors *st, const uint8_t *data,
                       size_t size)
{
    fz_mem_state outer = fz_mem;
    fz_mem.live = 0; /* the loaded file stays live: set it aside */
    fz_mem_begin(0);
    nn_mlp *net = (nn_mlp *)path;
    nn_error err;
    ag_status s = nn_mlp_load_safetensors(path, NULL, &net, &err);
    size_t allocs = fz_mem.count;
    FZ_CHECK(s == err.status && (s == AG_OK) == (net != NULL));
    if (s == AG_OK) {
        check_model(net, st);
        nn_mlp_free(net);
    }
    fz_mem_end();
    if (allocs && s == AG_OK)
        check_nomem(path, fz_pick_failure(data, size, allocs), true);
    fz_mem = outer;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_mem_begin(0);
    fz_temp in;
    if (!fz_temp_write(&in, data, size))
        return 0;
    nn_safetensors *st = (nn_safetensors *)&in; /* must be set to NULL on failure */
    nn_error err;
    ag_status s = nn_safetensors_load(in.path, &st, &err);
    size_t allocs = fz_mem.count;
    if (allocs && s != AG_ERR_NOMEM) {
        fz_mem_state outer = fz_mem;
        fz_mem.live = 0;
        check_nomem(in.path, fz_pick_failure(data, size, allocs), false);
        fz_mem = outer;
    }
    FZ_CHECK(s == err.status);
    uint64_t header = 0;
    for (size_t i = 8; i-- > 0 && size >= 8;)
        header = header << 8 | data[i];
    bool length_ok = size >= 8 && header <= size - 8 && header <= 100000000;
    FZ_CHECK(length_ok || (s == AG_ERR_FORMAT && allocs == 0)); /* refused before allocating */
    if (s != AG_OK) {
        fz_temp_remove(&in);
        FZ_CHECK(st == NULL && err.msg[0] != '\0');
        FZ_CHECK(s == AG_ERR_FORMAT || s == AG_ERR_NOMEM);
        fz_mem_end();
        return 0;
    }
    FZ_CHECK(st != NULL && err.msg[0] == '\0');
    check_tensors(st, data, size);
    check_round_trip(st);
    run_import(in.path, st, data, size);
    fz_temp_remove(&in);
    nn_safetensors_free(st);
    fz_mem_end();
    return 0;
}
