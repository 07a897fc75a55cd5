/* fuzz_npy: nn_npy_load on an arbitrary file. A refused file leaves no
 * tensor, no memory and an error message, and is refused before any
 * allocation; an accepted one holds exactly the file's data (the last
 * numel·size bytes, in the file's byte order or swapped from it) and
 * survives nn_npy_save and a second load bit for bit. The same load with
 * one of its allocations refused must fail with AG_ERR_NOMEM, leak-free. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"
#include "nn.h"

#define MEM_LIMIT (8u << 20)

FZ_TARGET(MEM_LIMIT)

/* The tensor's bytes are the file's last ones, as they are or swapped. */
static void check_data(const ag_tensor *x, const uint8_t *data, size_t size)
{
    size_t n = ag_tensor_numel(x), es = ag_dtype_size(ag_tensor_dtype(x));
    FZ_CHECK(ag_tensor_rank(x) <= AG_MAX_RANK && n * es <= size);
    const uint8_t *tail = data + size - n * es, *mine = ag_data(x);
    bool as_is = n == 0 || memcmp(mine, tail, n * es) == 0, swapped = true;
    for (size_t i = 0; i < n && swapped; i++)
        for (size_t j = 0; j < es; j++)
            swapped = swapped && mine[i * es + j] == tail[i * es + es - 1 - j];
    FZ_CHECK(as_is || swapped);
}

static void check_round_trip(const ag_tensor *x)
{
    fz_temp out;
    if (!fz_temp_name(&out))
        return;
    nn_error err;
    FZ_CHECK(nn_npy_save(x, out.path, &err) == AG_OK);
    ag_tensor *y = NULL;
    ag_status s = nn_npy_load(out.path, &y, &err);
    fz_temp_remove(&out);
    FZ_CHECK(s == AG_OK || s == AG_ERR_NOMEM);
    FZ_CHECK(s != AG_OK || fz_same_bits(x, y));
    ag_tensor_free(y);
}

static void check_nomem(const char *path, size_t fail_at)
{
    fz_mem_begin(fail_at);
    ag_tensor *x = (ag_tensor *)path;
    nn_error err;
    ag_status s = nn_npy_load(path, &x, &err);
    FZ_CHECK(s == AG_ERR_NOMEM && err.status == s && err.msg[0] != '\0' && x == NULL);
    fz_mem_end();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_mem_begin(0);
    fz_temp in;
    if (!fz_temp_write(&in, data, size))
        return 0;
    ag_tensor *x = (ag_tensor *)&in; /* must be set to NULL on failure */
    nn_error err;
    ag_status s = nn_npy_load(in.path, &x, &err);
    size_t allocs = fz_mem.count;
    if (allocs && s != AG_ERR_NOMEM) {
        fz_mem_state outer = fz_mem;
        fz_mem.live = 0; /* the first load's tensor stays live: set it aside */
        check_nomem(in.path, fz_pick_failure(data, size, allocs));
        fz_mem = outer;
    }
    fz_temp_remove(&in);
    FZ_CHECK(s == err.status);
    if (s != AG_OK) {
        FZ_CHECK(x == NULL && err.msg[0] != '\0');
        FZ_CHECK(s == AG_ERR_FORMAT || s == AG_ERR_NOMEM);
        FZ_CHECK(s != AG_ERR_FORMAT || allocs == 0); /* checked before allocating */
        fz_mem_end();
        return 0;
    }
    FZ_CHECK(x != NULL && err.msg[0] == '\0');
    check_data(x, data, size);
    check_round_trip(x);
    ag_tensor_free(x);
    fz_mem_end();
    return 0;
}
