/* mnist_mlp: a modern MLP on MNIST: 784-256-256-10, ReLU, softmax
 * cross-entropy, He initialisation, Adam (lr 1e-3, cosine-annealed to 0
 * over the epochs), mini-batch 128, 10 epochs, f32. Prints a progress line per epoch with the test accuracy,
 * then saves the model, loads it back and checks the loaded model scores
 * the same.
 *
 * Without MNIST it trains 64-256-256-10 on the bundled 8x8 digits.
 *
 * Usage: mnist_mlp [MNIST_DIR] [--epochs N] [--batch N] [--lr X] [--seed N]
 *                  [--save PATH] [--digits] [--checkpoint FILE] [--resume FILE]
 *                  [--stop-after N] [--plot FILE.svg]
 * --digits: the bundled digits even when MNIST is there (a MNIST_DIR without
 * MNIST is an error). --checkpoint writes a checkpoint after every epoch;
 * --resume continues one (the same data, seed and --epochs, which is the
 * total) bit for bit; --stop-after ends early, to be resumed. --plot draws
 * the cost and test accuracy per epoch. --help lists the flags with their
 * defaults. */
#include "common.h"
#include "svg.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const char *mnist_dir, *save_path, *checkpoint_path, *resume_path, *plot_path;
    bool digits;
    uint64_t epochs, batch, seed, stop_after;
    double lr;
} options;

static options parse(int argc, char **argv)
{
    options o = {NULL, "mnist_mlp.nnm", NULL, NULL, NULL, false, 10, 128, 1, 0, 1e-3};
    const flag_spec flags[] = {
        {"--epochs", FLAG_UINT, &o.epochs, 1, 1e6, false, "passes over the training set"},
        {"--batch", FLAG_UINT, &o.batch, 1, 60000, false, "mini-batch size"},
        {"--lr", FLAG_REAL, &o.lr, 0, INFINITY, true, "Adam's initial learning rate"},
        {"--seed", FLAG_UINT, &o.seed, 0, INFINITY, false, "seed of the weights and the shuffles"},
        {"--save", FLAG_PATH, &o.save_path, 0, 0, false, "where the trained model is saved"},
        {"--digits", FLAG_BOOL, &o.digits, 0, 0, false, "the bundled digits, even if MNIST is there"},
        {"--checkpoint", FLAG_PATH, &o.checkpoint_path, 0, 0, false,
         "write a checkpoint here after every epoch"},
        {"--resume", FLAG_PATH, &o.resume_path, 0, 0, false,
         "continue the run of this checkpoint (same data, seed, --epochs)"},
        {"--stop-after", FLAG_UINT, &o.stop_after, 1, 1e6, false,
         "stop after this epoch of --epochs (0: run them all)"},
        {"--plot", FLAG_PATH, &o.plot_path, 0, 0, false,
         "draw the cost and test accuracy per epoch into this SVG file"},
    };
    const cli_spec cli = {"mnist_mlp", " [MNIST_DIR]",
                          "A 784-256-256-10 ReLU MLP on MNIST (Adam, cosine decay); saves the model,\n"
                          "reloads it and checks it scores the same. MNIST_DIR holds the four IDX\n"
                          "files; without it data/mnist and ../shared/data/mnist are tried, then\n"
                          "the bundled digits.",
                          flags, sizeof flags / sizeof flags[0], &o.mnist_dir, 1};
    parse_flags(argc, argv, &cli);
    if (o.mnist_dir && o.digits) {
        fprintf(stderr, "mnist_mlp: give MNIST_DIR or --digits, not both\n");
        exit(2);
    }
    return o;
}

static int fail(const char *what, const nn_error *err)
{
    fprintf(stderr, "mnist_mlp: %s: %s\n", what, err->msg);
    return 1;
}

typedef struct {
    nn_mlp *net;
    nn_optim *opt;
    nn_batches *it;
    ag_tape *t;
    ag_tensor *bx, *by;
} trainer;

static ag_status epoch(trainer *tr, double *loss, nn_error *err)
{
    ag_tensor *bx, *by;
    double sum = 0, l;
    size_t n = 0;
    while (nn_batches_next(tr->it, &bx, &by)) {
        ag_status s = nn_mlp_train_step(tr->net, tr->t, tr->opt, NN_COST_CROSS_ENTROPY, bx, by, &l, err);
        if (s != AG_OK)
            return s;
        sum += l;
        n++;
    }
    *loss = n ? sum / (double)n : 0;
    return AG_OK;
}

/* --resume: the checkpoint's state into tr; *done gets its epoch. */
static int resume(trainer *tr, const options *o, size_t *done)
{
    nn_error err = {0};
    if (nn_checkpoint_load(o->resume_path, tr->net, tr->opt, tr->it, done, &err) != AG_OK)
        return fail("resuming", &err);
    if (*done > o->epochs) {
        fprintf(stderr, "mnist_mlp: %s is at epoch %zu, past --epochs %" PRIu64 "\n",
                o->resume_path, *done, o->epochs);
        return 1;
    }
    printf("resumed from %s after epoch %zu of %" PRIu64 "\n", o->resume_path, *done, o->epochs);
    return 0;
}

/* Per epoch of this run, for --plot. */
typedef struct {
    double *cost, *accuracy; /* n entries each */
    size_t n;
} history;

/* Epochs done + 1 .. last of a cosine schedule over all o->epochs, each
 * followed by the test accuracy (into *acc) and, with --checkpoint, a
 * checkpoint. */
static int train_epochs(trainer *tr, const options *o, size_t done, size_t last,
                        const nn_dataset *train, const nn_dataset *test, history *h, double *acc)
{
    nn_error err = {0};
    nn_progress progress;
    nn_progress_init(&progress, stdout, (size_t)o->epochs);
    nn_lr_schedule cosine = {.kind = NN_LR_COSINE, .t_max = (size_t)o->epochs, .lr_min = 0};
    double total = 0;
    for (size_t e = done + 1; e <= last; e++) {
        double t0 = now_seconds(), loss;
        nn_optim_set_lr(tr->opt, nn_lr_at(&cosine, o->lr, e - 1));
        if (epoch(tr, &loss, &err) != AG_OK)
            return fail("training", &err);
        double seconds = now_seconds() - t0;
        total += seconds;
        if (nn_mlp_accuracy(tr->net, tr->t, test->x, test->labels, acc, &err) != AG_OK)
            return fail("testing", &err);
        if (o->checkpoint_path &&
            nn_checkpoint_save(o->checkpoint_path, tr->net, tr->opt, tr->it, e, &err) != AG_OK)
            return fail("checkpoint", &err);
        h->cost[h->n] = loss;
        h->accuracy[h->n++] = *acc;
        nn_progress_epoch(&progress, e, train->n, seconds, loss, *acc);
        fflush(stdout);
    }
    nn_progress_end(&progress);
    if (done == last && nn_mlp_accuracy(tr->net, tr->t, test->x, test->labels, acc, &err) != AG_OK)
        return fail("testing", &err);
    printf("test accuracy %.2f%% after %zu epochs, %.1f s of training%s\n", 100 * *acc, last, total,
           last < o->epochs ? " (stopped early: --resume the checkpoint for the rest)" : "");
    return 0;
}

/* --plot: the epochs this run trained (from first) as an SVG line chart. */
static int plot(const options *o, const history *h, size_t first, bool digits)
{
    char title[128];
    snprintf(title, sizeof title, "mnist_mlp on %s: Adam %g, cosine, batch %" PRIu64,
             digits ? "the 8x8 digits" : "MNIST", o->lr, o->batch);
    if (!svg_training_curve(o->plot_path, title, first, h->cost, h->accuracy, h->n)) {
        fprintf(stderr, "mnist_mlp: cannot write %s\n", o->plot_path);
        return 1;
    }
    printf("training curve drawn in %s\n", o->plot_path);
    return 0;
}

/* Saves, reloads, and checks that the reloaded model scores acc. */
static int save_and_reload(trainer *tr, const char *path, const nn_dataset *test, double acc)
{
    nn_error err = {0};
    nn_mlp *back = NULL;
    double acc2;
    if (nn_mlp_save(tr->net, path, &err) || nn_mlp_load(path, &back, &err) ||
        nn_mlp_accuracy(back, tr->t, test->x, test->labels, &acc2, &err))
        return fail("save/load", &err);
    printf("saved to %s and reloaded: test accuracy %.2f%% (%s)\n", path, 100 * acc2,
           acc2 == acc ? "identical" : "DIFFERENT");
    nn_mlp_free(back);
    return acc2 == acc ? 0 : 1;
}

int main(int argc, char **argv)
{
    options o = parse(argc, argv);
    nn_error err = {0};
    nn_dataset train = {0}, test = {0};
    const char *dir = o.digits ? NULL : find_mnist(o.mnist_dir);
    if (o.mnist_dir && !dir)
        return fprintf(stderr, "mnist_mlp: no MNIST IDX files in %s\n", o.mnist_dir), 1;
    ag_status s = dir ? load_mnist(dir, AG_F32, 0, &train, &test, &err)
                      : load_digits(AG_F32, 297, o.seed, &train, &test, &err);
    if (s != AG_OK)
        return fail("loading data", &err);
    size_t sizes[] = {train.features, 256, 256, 10};
    nn_act acts[] = {NN_RELU, NN_RELU, NN_IDENTITY};
    nn_spec spec = {.n_layers = 3, .sizes = sizes, .acts = acts, .dtype = AG_F32,
                    .init = NN_INIT_HE, .seed = o.seed};
    nn_optim_config cfg = nn_adam(o.lr);
    trainer tr = {0};
    tr.t = ag_tape_new();
    tr.bx = ag_zeros(AG_F32, AG_SHAPE((size_t)o.batch, train.features));
    tr.by = ag_zeros(AG_F32, AG_SHAPE((size_t)o.batch));
    if (!tr.t || !tr.bx || !tr.by)
        return fprintf(stderr, "mnist_mlp: out of memory\n"), 1;
    if (nn_mlp_new(&spec, &tr.net, &err) ||
        nn_mlp_optim_new(tr.net, &cfg, &tr.opt, &err) ||
        nn_batches_new(train.x, train.labels, tr.bx, tr.by, true, o.seed, &tr.it, &err))
        return fail("setting up", &err);
    printf("MLP %zu-256-256-10, ReLU, softmax cross-entropy, He init, Adam %g (cosine), batch %" PRIu64 ", f32\n"
           "on %s: %zu training and %zu test images\n", sizes[0], o.lr, o.batch,
           dir ? dir : o.digits ? "the bundled 8x8 digits" : "the bundled 8x8 digits (no MNIST found; see scripts/fetch-mnist.sh)",
           train.n, test.n);

    size_t done = 0, last = o.stop_after && o.stop_after < o.epochs ? o.stop_after : o.epochs;
    double acc = 0;
    history h = {calloc(o.epochs, sizeof(double)), calloc(o.epochs, sizeof(double)), 0};
    int rc = 1; /* a refused checkpoint or a failed step frees everything too (tests use ASan) */
    if (!h.cost || !h.accuracy)
        fprintf(stderr, "mnist_mlp: out of memory\n");
    else if (!(o.resume_path && resume(&tr, &o, &done)) &&
             !train_epochs(&tr, &o, done, last < done ? done : last, &train, &test, &h, &acc) &&
             !(o.plot_path && plot(&o, &h, done + 1, !dir)))
        rc = save_and_reload(&tr, o.save_path, &test, acc);
    free(h.cost);
    free(h.accuracy);
    nn_batches_free(tr.it);
    nn_optim_free(tr.opt);
    nn_mlp_free(tr.net);
    ag_tape_free(tr.t);
    ag_tensor_free(tr.bx);
    ag_tensor_free(tr.by);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
    return rc;
}
