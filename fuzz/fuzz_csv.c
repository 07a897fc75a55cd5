/* fuzz_csv: nn_csv_load on an arbitrary file, in f32 and in f64. Both
 * loads must agree (status, rows, features, classes), except that f32 may
 * refuse a number beyond its range or a label of 2^24 or more; a refused file leaves an empty data
 * set and an error message; an accepted one holds finite features (in f32
 * too), labels that are class indices below classes, and f32 values that
 * are the f64 ones rounded. The f64 load with one of its allocations
 * refused must fail with AG_ERR_NOMEM and leak nothing. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"
#include "nn.h"

#include <math.h>

#define MEM_LIMIT (16u << 20)

FZ_TARGET(MEM_LIMIT)

static void check_dataset(const nn_dataset *d, ag_dtype dt)
{
    FZ_CHECK(d->n > 0 && d->features > 0 && d->classes > 0);
    FZ_CHECK(ag_tensor_dtype(d->x) == dt && ag_tensor_dtype(d->labels) == dt);
    FZ_CHECK(ag_tensor_rank(d->x) == 2 && ag_tensor_shape(d->x)[0] == d->n &&
             ag_tensor_shape(d->x)[1] == d->features);
    FZ_CHECK(ag_tensor_rank(d->labels) == 1 && ag_tensor_shape(d->labels)[0] == d->n);
    double max = 0;
    for (size_t i = 0; i < d->n; i++) {
        double v = ag_get(d->labels, i);
        FZ_CHECK(v >= 0 && v == floor(v) && v < (double)d->classes);
        max = v > max ? v : max;
    }
    FZ_CHECK((size_t)max < d->classes);
    for (size_t i = 0; i < d->n * d->features; i++)
        FZ_CHECK(isfinite(ag_get(d->x, i)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_mem_begin(0);
    fz_temp f;
    if (!fz_temp_write(&f, data, size))
        return 0;
    nn_dataset d[2];
    nn_error err[2];
    ag_status s[2];
    for (int k = 0; k < 2; k++) {
        memset(&d[k], 0xa5, sizeof d[k]); /* must be emptied on failure */
        size_t count0 = fz_mem.count;
        s[k] = nn_csv_load(f.path, k ? AG_F64 : AG_F32, &d[k], &err[k]);
        size_t allocs = fz_mem.count - count0;
        if (k == 1 && allocs && s[k] != AG_ERR_NOMEM) { /* again, one allocation refused */
            fz_mem_state outer = fz_mem;
            fz_mem.live = 0;
            fz_mem_begin(fz_pick_failure(data, size, allocs));
            nn_dataset d2;
            nn_error err2;
            ag_status s2 = nn_csv_load(f.path, AG_F64, &d2, &err2);
            FZ_CHECK(s2 == AG_ERR_NOMEM && err2.status == s2 && d2.x == NULL && d2.labels == NULL);
            fz_mem_end();
            fz_mem = outer;
        }
        FZ_CHECK(s[k] == err[k].status);
        if (s[k] != AG_OK) {
            FZ_CHECK(d[k].x == NULL && d[k].labels == NULL && d[k].n == 0);
            FZ_CHECK(err[k].msg[0] != '\0');
            FZ_CHECK(s[k] == AG_ERR_FORMAT || s[k] == AG_ERR_NOMEM);
        } else {
            FZ_CHECK(err[k].msg[0] == '\0');
            check_dataset(&d[k], k ? AG_F64 : AG_F32);
        }
    }
    fz_temp_remove(&f);
    /* f32 may refuse what f64 takes: a number beyond f32's range, or a
     * label from 2^24 up (f64 takes labels below 2^53) */
    FZ_CHECK(s[0] == s[1] || s[0] == AG_ERR_NOMEM || s[1] == AG_ERR_NOMEM ||
             (s[0] == AG_ERR_FORMAT && s[1] == AG_OK &&
              (strstr(err[0].msg, "range of f32") || strstr(err[0].msg, "f32 holds class indices"))));
    if (s[0] == AG_OK && s[1] == AG_OK) {
        FZ_CHECK(d[0].n == d[1].n && d[0].features == d[1].features && d[0].classes == d[1].classes);
        for (size_t i = 0; i < d[0].n * d[0].features; i++) {
            float want = (float)ag_get(d[1].x, i);
            FZ_CHECK(ag_get(d[0].x, i) == want);
        }
        for (size_t i = 0; i < d[0].n; i++)
            FZ_CHECK(ag_get(d[0].labels, i) == ag_get(d[1].labels, i));
    }
    nn_dataset_free(&d[0]);
    nn_dataset_free(&d[1]);
    fz_mem_end();
    return 0;
}
