/* fuzz_idx: nn_idx_load on an arbitrary pair of files. The input is split:
 *   byte 0        flags: bit 0 set loads as f64, else f32
 *   bytes 1..2    L, big-endian: the images file is the next min(L, rest) bytes
 *   the rest      the labels file
 * A refused pair leaves an empty data set and an error message; an
 * accepted one holds exactly the files' bytes: x [n, rows·cols] and labels
 * [n] in the chosen dtype, classes = largest label + 1. The same load with
 * one of its allocations refused must fail with AG_ERR_NOMEM, leak-free. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"
#include "nn.h"

#define MEM_LIMIT (8u << 20)

FZ_TARGET(MEM_LIMIT)

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void check_dataset(const nn_dataset *d, ag_dtype dt, const uint8_t *im, size_t im_n,
                          const uint8_t *lb, size_t lb_n)
{
    FZ_CHECK(im_n >= 16 && lb_n >= 8);
    FZ_CHECK(be32(im) == 0x803 && be32(lb) == 0x801);
    size_t n = be32(im + 4), rows = be32(im + 8), cols = be32(im + 12);
    FZ_CHECK(d->n == n && be32(lb + 4) == n && n > 0);
    FZ_CHECK(d->features == rows * cols && d->features > 0);
    FZ_CHECK(im_n == 16 + n * rows * cols && lb_n == 8 + n);
    FZ_CHECK(ag_tensor_dtype(d->x) == dt && ag_tensor_dtype(d->labels) == dt);
    FZ_CHECK(ag_tensor_rank(d->x) == 2 && ag_tensor_shape(d->x)[0] == n &&
             ag_tensor_shape(d->x)[1] == d->features);
    FZ_CHECK(ag_tensor_rank(d->labels) == 1 && ag_tensor_shape(d->labels)[0] == n);
    FZ_CHECK(!ag_requires_grad(d->x) && !ag_requires_grad(d->labels));
    for (size_t i = 0; i < n * d->features; i++)
        FZ_CHECK(ag_get(d->x, i) == im[16 + i]);
    unsigned max = 0;
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(ag_get(d->labels, i) == lb[8 + i]);
        max = lb[8 + i] > max ? lb[8 + i] : max;
    }
    FZ_CHECK(d->classes == (size_t)max + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    fz_mem_begin(0);
    ag_dtype dt = data[0] & 1 ? AG_F64 : AG_F32;
    size_t L = (size_t)data[1] << 8 | data[2], rest = size - 3;
    if (L > rest)
        L = rest;
    const uint8_t *im = data + 3, *lb = data + 3 + L;
    size_t lb_n = rest - L;
    fz_temp fi, fl;
    if (!fz_temp_write(&fi, im, L))
        return 0;
    if (!fz_temp_write(&fl, lb, lb_n)) {
        fz_temp_remove(&fi);
        return 0;
    }
    nn_dataset d;
    memset(&d, 0xa5, sizeof d); /* must be emptied on failure */
    nn_error err;
    ag_status s = nn_idx_load(fi.path, fl.path, dt, &d, &err);
    size_t allocs = fz_mem.count;
    if (allocs && s != AG_ERR_NOMEM) { /* again, with one allocation refused */
        fz_mem_state outer = fz_mem;
        fz_mem.live = 0;
        fz_mem_begin(fz_pick_failure(data, size, allocs));
        nn_dataset d2;
        nn_error err2;
        ag_status s2 = nn_idx_load(fi.path, fl.path, dt, &d2, &err2);
        FZ_CHECK(s2 == AG_ERR_NOMEM && err2.status == s2 && d2.x == NULL && d2.labels == NULL);
        fz_mem_end();
        fz_mem = outer;
    }
    fz_temp_remove(&fi);
    fz_temp_remove(&fl);
    FZ_CHECK(s == err.status);
    if (s != AG_OK) {
        FZ_CHECK(d.x == NULL && d.labels == NULL && d.n == 0 && d.features == 0 && d.classes == 0);
        FZ_CHECK(err.msg[0] != '\0');
        FZ_CHECK(s == AG_ERR_FORMAT || s == AG_ERR_OVERFLOW || s == AG_ERR_NOMEM);
    } else {
        FZ_CHECK(err.msg[0] == '\0');
        check_dataset(&d, dt, im, L, lb, lb_n);
        nn_dataset_free(&d);
        FZ_CHECK(d.x == NULL && d.labels == NULL && d.n == 0);
    }
    fz_mem_end();
    return 0;
}
