/* nielsen: the network of Michael Nielsen's network.py (Neural Networks and
 * Deep Learning, chapter 1), with the engine doing backpropagation:
 * 784-30-10, sigmoid throughout, quadratic cost, N(0,1) initialisation,
 * mini-batch SGD with batch 10 and eta 3.0, 30 epochs, trained on the first
 * 50,000 MNIST training images and scored on the 10,000 test images after
 * every epoch ("Epoch k: correct / 10000", as network.py prints).
 *
 * Without MNIST it trains a 64-30-10 network on the bundled 8x8 digits.
 *
 * Usage: nielsen [MNIST_DIR] [--epochs N] [--batch N] [--eta X] [--hidden N]
 *                [--seed N] [--f64] [--digits] [--plot FILE.svg]
 * MNIST_DIR holds the four IDX files (scripts/fetch-mnist.sh fetches them;
 * a MNIST_DIR without them is an error); by default data/mnist and
 * ../shared/data/mnist are tried; --digits uses the bundled digits even when
 * MNIST is there; --plot draws the cost and test accuracy per epoch. --help lists the flags with their defaults. */
#include "common.h"
#include "svg.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    bool digits, f64;
    const char *mnist_dir, *plot_path;
    uint64_t epochs, batch, hidden, seed;
    double eta;
} options;

static options parse(int argc, char **argv)
{
    options o = {false, false, NULL, NULL, 30, 10, 30, 1, 3.0};
    const flag_spec flags[] = {
        {"--epochs", FLAG_UINT, &o.epochs, 1, 1e6, false, "passes over the training set"},
        {"--batch", FLAG_UINT, &o.batch, 1, 60000, false, "mini-batch size"},
        {"--eta", FLAG_REAL, &o.eta, 0, INFINITY, true, "SGD's learning rate"},
        {"--hidden", FLAG_UINT, &o.hidden, 1, 10000, false, "units in the hidden layer"},
        {"--seed", FLAG_UINT, &o.seed, 0, INFINITY, false, "seed of the weights and the shuffles"},
        {"--f64", FLAG_BOOL, &o.f64, 0, 0, false, "train in f64 instead of f32"},
        {"--digits", FLAG_BOOL, &o.digits, 0, 0, false, "the bundled digits, even if MNIST is there"},
        {"--plot", FLAG_PATH, &o.plot_path, 0, 0, false,
         "draw the cost and test accuracy per epoch into this SVG file"},
    };
    const cli_spec cli = {"nielsen", " [MNIST_DIR]",
                          "Nielsen's network.py on MNIST: 784-30-10 sigmoid, quadratic cost, SGD.\n"
                          "MNIST_DIR holds the four IDX files (scripts/fetch-mnist.sh); without it\n"
                          "data/mnist and ../shared/data/mnist are tried, then the bundled digits.",
                          flags, sizeof flags / sizeof flags[0], &o.mnist_dir, 1};
    parse_flags(argc, argv, &cli);
    if (o.mnist_dir && o.digits) {
        fprintf(stderr, "nielsen: give MNIST_DIR or --digits, not both\n");
        exit(2);
    }
    return o;
}

static int fail(const char *what, const nn_error *err)
{
    fprintf(stderr, "nielsen: %s: %s\n", what, err->msg);
    return 1;
}

/* One epoch of mini-batch SGD; returns the mean cost over the batches. */
static ag_status train_epoch(nn_mlp *net, ag_tape *t, nn_optim *opt, nn_batches *it, double *cost,
                             nn_error *err)
{
    ag_tensor *bx, *by;
    double sum = 0;
    size_t n = 0;
    while (nn_batches_next(it, &bx, &by)) {
        double c;
        ag_status s = nn_mlp_train_step(net, t, opt, NN_COST_QUADRATIC, bx, by, &c, err);
        if (s != AG_OK)
            return s;
        sum += c;
        n++;
    }
    *cost = n ? sum / (double)n : 0;
    return AG_OK;
}

int main(int argc, char **argv)
{
    options o = parse(argc, argv);
    ag_dtype dtype = o.f64 ? AG_F64 : AG_F32;
    nn_error err = {0};
    nn_dataset train = {0}, test = {0};
    const char *dir = o.digits ? NULL : find_mnist(o.mnist_dir);
    if (o.mnist_dir && !dir)
        return fprintf(stderr, "nielsen: no MNIST IDX files in %s\n", o.mnist_dir), 1;
    ag_status s = dir ? load_mnist(dir, dtype, 50000, &train, &test, &err)
                      : load_digits(dtype, 297, o.seed, &train, &test, &err);
    if (s != AG_OK)
        return fail("loading data", &err);
    size_t sizes[] = {train.features, (size_t)o.hidden, 10};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = NULL, .dtype = dtype,
                    .init = NN_INIT_NORMAL, .seed = o.seed};
    printf("Nielsen's network %zu-%zu-10 (sigmoid, quadratic cost, SGD batch %" PRIu64 ", eta %g, %s)\n"
           "on %s: %zu training and %zu test images\n",
           sizes[0], sizes[1], o.batch, o.eta, ag_dtype_name(dtype),
           dir ? dir : o.digits ? "the bundled 8x8 digits" : "the bundled 8x8 digits (no MNIST found; see scripts/fetch-mnist.sh)",
           train.n, test.n);

    nn_mlp *net = NULL;
    nn_optim *opt = NULL;
    nn_batches *it = NULL;
    ag_tensor *y = NULL, *bx = ag_zeros(dtype, AG_SHAPE((size_t)o.batch, train.features));
    ag_tensor *by = ag_zeros(dtype, AG_SHAPE((size_t)o.batch, 10));
    ag_tape *t = ag_tape_new();
    nn_optim_config cfg = nn_sgd(o.eta);
    if (!bx || !by || !t)
        return fprintf(stderr, "nielsen: out of memory\n"), 1;
    if (nn_mlp_new(&spec, &net, &err) || nn_one_hot(train.labels, 10, &y, &err) ||
        nn_mlp_optim_new(net, &cfg, &opt, &err) ||
        nn_batches_new(train.x, y, bx, by, true, o.seed, &it, &err))
        return fail("setting up", &err);

    double total = 0, *costs = calloc(o.epochs, sizeof(double)), *accs = calloc(o.epochs, sizeof(double));
    if (!costs || !accs)
        return fprintf(stderr, "nielsen: out of memory\n"), 1;
    for (size_t epoch = 0; epoch < o.epochs; epoch++) {
        double t0 = now_seconds(), cost, acc;
        if (train_epoch(net, t, opt, it, &cost, &err) != AG_OK)
            return fail("training", &err);
        double seconds = now_seconds() - t0;
        total += seconds;
        if (nn_mlp_accuracy(net, t, test.x, test.labels, &acc, &err) != AG_OK)
            return fail("testing", &err);
        costs[epoch] = cost;
        accs[epoch] = acc;
        printf("Epoch %zu: %zu / %zu  (cost %.4f, %.2f s, %.0f images/s)\n", epoch,
               (size_t)(acc * (double)test.n + 0.5), test.n, cost, seconds, (double)train.n / seconds);
        fflush(stdout);
    }
    printf("%" PRIu64 " epochs in %.1f s\n", o.epochs, total);
    char title[128];
    snprintf(title, sizeof title, "nielsen %zu-%zu-10 sigmoid, SGD eta %g, batch %" PRIu64, sizes[0],
             sizes[1], o.eta, o.batch);
    bool plotted = !o.plot_path || svg_training_curve(o.plot_path, title, 0, costs, accs, o.epochs);
    if (!plotted)
        fprintf(stderr, "nielsen: cannot write %s\n", o.plot_path);
    free(costs);
    free(accs);
    nn_batches_free(it);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tape_free(t);
    ag_tensor_free(bx);
    ag_tensor_free(by);
    ag_tensor_free(y);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    return plotted ? 0 : 1;
}
