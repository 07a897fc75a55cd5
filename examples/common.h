/* common.h: what several examples share: finding and loading data, a
 * clock, and the command-line parser (flags.h). */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include "flags.h"
#include "nn.h"

/* Seconds from a monotonic clock. */
double now_seconds(void);

/* Finds a directory holding the four MNIST IDX files: dir (if not NULL),
 * then data/mnist, the source tree's data/mnist, ../shared/data/mnist.
 * Returns the directory (static storage) or NULL. */
const char *find_mnist(const char *dir);

/* Loads MNIST from dir: train = the first n_train training images (all
 * 60,000 if n_train is 0 or larger), test = the 10,000 test images; pixels
 * scaled to [0, 1]. Returns AG_OK or the loader's error in err. */
ag_status load_mnist(const char *dir, ag_dtype dt, size_t n_train, nn_dataset *train,
                     nn_dataset *test, nn_error *err);

/* Loads data/NAME, one of the bundled CSV files, from the working
 * directory or the source tree (see nn_csv_load). */
ag_status load_bundled_csv(const char *name, ag_dtype dt, nn_dataset *out, nn_error *err);

/* Loads the bundled 8x8 digits (data/digits.csv) scaled to [0, 1] and
 * splits off n_test rows for testing with a seeded shuffle. */
ag_status load_digits(ag_dtype dt, size_t n_test, uint64_t seed, nn_dataset *train,
                      nn_dataset *test, nn_error *err);


#endif
