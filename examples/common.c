/* common.c: see common.h. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#ifndef SOURCE_DIR
#define SOURCE_DIR "."
#endif

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool has_mnist(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", dir);
    return stat(path, &st) == 0;
}

const char *find_mnist(const char *dir)
{
    static const char *places[] = {"data/mnist", SOURCE_DIR "/data/mnist", "../shared/data/mnist",
                                   SOURCE_DIR "/../shared/data/mnist"};
    if (dir)
        return has_mnist(dir) ? dir : NULL;
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++)
        if (has_mnist(places[i]))
            return places[i];
    return NULL;
}

static ag_status load_pair(const char *dir, const char *prefix, ag_dtype dt, nn_dataset *out,
                           nn_error *err)
{
    char images[4096], labels[4096];
    snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte", dir, prefix);
    snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte", dir, prefix);
    ag_status s = nn_idx_load(images, labels, dt, out, err);
    return s != AG_OK ? s : nn_scale(out->x, 1.0 / 255.0, err);
}

ag_status load_mnist(const char *dir, ag_dtype dt, size_t n_train, nn_dataset *train,
                     nn_dataset *test, nn_error *err)
{
    nn_dataset all = {0};
    ag_status s = load_pair(dir, "train", dt, &all, err);
    if (s == AG_OK)
        s = load_pair(dir, "t10k", dt, test, err);
    if (s != AG_OK) {
        nn_dataset_free(&all);
        return s;
    }
    if (n_train == 0 || n_train >= all.n) {
        *train = all;
        return AG_OK;
    }
    /* The first n_train rows, as network.py's training_data (its last
     * 10,000 are its validation set). */
    size_t f = all.features;
    train->x = ag_from_data(dt, AG_SHAPE(n_train, f), ag_data(all.x));
    train->labels = ag_from_data(dt, AG_SHAPE(n_train), ag_data(all.labels));
    train->n = n_train;
    train->features = f;
    train->classes = all.classes;
    nn_dataset_free(&all);
    if (!train->x || !train->labels) {
        nn_dataset_free(train);
        nn_dataset_free(test);
        err->status = AG_ERR_NOMEM;
        snprintf(err->msg, sizeof err->msg, "load_mnist: out of memory");
        return AG_ERR_NOMEM;
    }
    return AG_OK;
}

ag_status load_bundled_csv(const char *name, ag_dtype dt, nn_dataset *out, nn_error *err)
{
    char here[256], source[512];
    snprintf(here, sizeof here, "data/%s", name);
    snprintf(source, sizeof source, "%s/data/%s", SOURCE_DIR, name);
    ag_status s = nn_csv_load(here, dt, out, err);
    return s == AG_ERR_IO ? nn_csv_load(source, dt, out, err) : s;
}

ag_status load_digits(ag_dtype dt, size_t n_test, uint64_t seed, nn_dataset *train,
                      nn_dataset *test, nn_error *err)
{
    nn_dataset all = {0};
    ag_status s = load_bundled_csv("digits.csv", dt, &all, err);
    if (s == AG_OK)
        s = nn_scale(all.x, 1.0 / 16.0, err);
    if (s == AG_OK)
        s = nn_dataset_split(&all, n_test, seed, train, test, err);
    nn_dataset_free(&all);
    return s;
}

