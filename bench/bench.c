/* bench: our side of the benchmark table (bench/run.sh adds the peers).
 * Prints one line per measurement: RESULT ours <workload> <value> <unit>.
 * The workloads and flags are in `about` below (bench --help prints them).
 * Data is synthetic and seeded: speed does not depend on the values. */
#define _POSIX_C_SOURCE 200809L
#include "flags.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench: %s: %s\n", what, msg);
    exit(1);
}

static size_t threads; /* --threads: 0 = the tape's default */

static ag_tape *new_tape(void)
{
    ag_tape *t = ag_tape_new();
    if (t && threads)
        ag_tape_set_threads(t, threads);
    return t;
}

static void result(const char *workload, double value, const char *unit)
{
    printf("RESULT ours %s %.6g %s\n", workload, value, unit);
    fflush(stdout);
}

/* ------------------------------------------------------------ W1, W2 */

typedef struct {
    const char *name;
    ag_dtype dt;
    size_t n_layers, sizes[4], batch;
    nn_act acts[3];
    nn_cost cost;
    double lr;
} mlp_workload;

static const mlp_workload W1_F32 = {"W1-f32", AG_F32, 2, {784, 30, 10}, 10,
                                    {NN_SIGMOID, NN_SIGMOID}, NN_COST_QUADRATIC, 3.0};
static const mlp_workload W1_F64 = {"W1-f64", AG_F64, 2, {784, 30, 10}, 10,
                                    {NN_SIGMOID, NN_SIGMOID}, NN_COST_QUADRATIC, 3.0};
static const mlp_workload W2_F32 = {"W2-f32", AG_F32, 3, {784, 256, 256, 10}, 128,
                                    {NN_RELU, NN_RELU, NN_IDENTITY}, NN_COST_CROSS_ENTROPY, 0.01};

enum { EXAMPLES = 60000 };

/* Uniform pixels and random labels: one-hot rows for the quadratic cost,
 * class indices for cross-entropy. */
static void make_data(const mlp_workload *w, ag_tensor **x, ag_tensor **y)
{
    ag_rng rng;
    ag_rng_seed(&rng, 2024);
    *x = ag_rand_uniform(w->dt, AG_SHAPE(EXAMPLES, 784), 0, 1, &rng);
    ag_tensor *labels = ag_zeros(w->dt, AG_SHAPE(EXAMPLES));
    if (!*x || !labels)
        die(w->name, "out of memory");
    for (size_t i = 0; i < EXAMPLES; i++)
        if (w->dt == AG_F32)
            ((float *)ag_data(labels))[i] = (float)ag_rng_below(&rng, 10);
        else
            ((double *)ag_data(labels))[i] = (double)ag_rng_below(&rng, 10);
    nn_error err = {0};
    if (w->cost == NN_COST_CROSS_ENTROPY) {
        *y = labels;
        return;
    }
    if (nn_one_hot(labels, 10, y, &err) != AG_OK)
        die(w->name, err.msg);
    ag_tensor_free(labels);
}

static void run_mlp(const mlp_workload *w, bool rss)
{
    ag_tensor *x, *y, *bx, *by, *px, *py;
    make_data(w, &x, &y);
    bx = ag_zeros(w->dt, AG_SHAPE(w->batch, 784));
    by = w->cost == NN_COST_CROSS_ENTROPY ? ag_zeros(w->dt, AG_SHAPE(w->batch)) : ag_zeros(w->dt, AG_SHAPE(w->batch, 10));
    nn_spec spec = {.n_layers = w->n_layers, .sizes = w->sizes, .acts = w->acts, .dtype = w->dt,
                    .init = NN_INIT_NORMAL_SCALED, .seed = 1};
    nn_optim_config cfg = nn_sgd(w->lr);
    nn_error err = {0};
    nn_mlp *net = NULL;
    nn_optim *opt = NULL;
    nn_batches *it = NULL;
    ag_tape *t = new_tape();
    if (!bx || !by || !t || nn_mlp_new(&spec, &net, &err))
        die(w->name, err.msg[0] ? err.msg : "out of memory");
    if (nn_mlp_optim_new(net, &cfg, &opt, &err) ||
        nn_batches_new(x, y, bx, by, true, 7, &it, &err))
        die(w->name, err.msg);
    for (int warm = 0; warm < 2; warm++) { /* a warm-up epoch, then the timed one */
        double t0 = now();
        while (nn_batches_next(it, &px, &py))
            if (nn_mlp_train_step(net, t, opt, w->cost, px, py, NULL, &err) != AG_OK)
                die(w->name, err.msg);
        if (warm == 1 && !rss)
            result(w->name, EXAMPLES / (now() - t0), "ex/s");
    }
    if (rss) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char name[64];
        snprintf(name, sizeof name, "%s-rss", w->name);
        result(name, (double)ru.ru_maxrss, "KiB");
    }
    nn_batches_free(it);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tensor_free(bx);
    ag_tensor_free(by);
}

/* ------------------------------------------------------------ W3 */

enum { SAMPLES = 156, H = 16 };

typedef struct {
    ag_tensor *w1[H][2], *b1[H], *w2[H][H], *b2[H], *w3[H], *b3;
    ag_tensor *x[SAMPLES][2], *y[SAMPLES], *one;
} scalar_net;

static ag_tensor *param(ag_rng *rng)
{
    ag_tensor *p = ag_scalar(AG_F64, 2 * ag_rng_uniform(rng) - 1);
    if (!p || ag_set_requires_grad(p, true) != AG_OK)
        die("W3", "out of memory");
    return p;
}

static void scalar_net_init(scalar_net *s)
{
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    for (size_t j = 0; j < H; j++) {
        s->w1[j][0] = param(&rng), s->w1[j][1] = param(&rng), s->b1[j] = param(&rng);
        for (size_t i = 0; i < H; i++)
            s->w2[j][i] = param(&rng);
        s->b2[j] = param(&rng), s->w3[j] = param(&rng);
    }
    s->b3 = param(&rng);
    for (size_t n = 0; n < SAMPLES; n++) {
        s->x[n][0] = ag_scalar(AG_F64, 2 * ag_rng_uniform(&rng) - 1);
        s->x[n][1] = ag_scalar(AG_F64, 2 * ag_rng_uniform(&rng) - 1);
        s->y[n] = ag_scalar(AG_F64, ag_rng_below(&rng, 2) ? 1 : -1);
    }
    s->one = ag_scalar(AG_F64, 1);
}

/* bias + Σ wᵢ·inᵢ, one mul and one add node per input, as micrograd. */
static ag_tensor *neuron(ag_tape *t, ag_tensor *b, ag_tensor *const *w, ag_tensor *const *in, size_t n)
{
    ag_tensor *z = b;
    for (size_t i = 0; i < n; i++)
        z = ag_add(t, z, ag_mul(t, w[i], in[i]));
    return z;
}

static ag_tensor *scalar_loss(ag_tape *t, scalar_net *s)
{
    ag_tensor *total = NULL;
    for (size_t n = 0; n < SAMPLES; n++) {
        ag_tensor *h1[H], *h2[H];
        for (size_t j = 0; j < H; j++)
            h1[j] = ag_tanh(t, neuron(t, s->b1[j], s->w1[j], s->x[n], 2));
        for (size_t j = 0; j < H; j++)
            h2[j] = ag_tanh(t, neuron(t, s->b2[j], s->w2[j], h1, H));
        ag_tensor *score = neuron(t, s->b3, s->w3, h2, H);
        ag_tensor *margin = ag_relu(t, ag_sub(t, s->one, ag_mul(t, s->y[n], score)));
        total = total ? ag_add(t, total, margin) : margin;
    }
    return ag_scale(t, total, 1.0 / SAMPLES);
}

static void run_scalar(void)
{
    static scalar_net s;
    scalar_net_init(&s);
    ag_tape *t = new_tape();
    double best = 1e30;
    size_t nodes = 0;
    for (int rep = 0; rep < 6; rep++) {
        ag_tape_reset(t);
        double t0 = now();
        ag_tensor *loss = scalar_loss(t, &s);
        if (ag_backward(t, loss) != AG_OK)
            die("W3", ag_tape_error(t));
        double dt = now() - t0;
        nodes = ag_tape_size(t);
        if (rep > 0 && dt < best) /* the first run warms the arena */
            best = dt;
    }
    result("W3", (double)nodes / best, "nodes/s");
    ag_tape_free(t);
    ag_tensor **all = (ag_tensor **)&s;
    for (size_t i = 0; i < sizeof s / sizeof *all; i++)
        ag_tensor_free(all[i]);
}

/* ------------------------------------------------------------ W4 */

static void run_gemm(size_t n)
{
    ag_rng rng;
    ag_rng_seed(&rng, 4);
    ag_tensor *a = ag_rand_normal(AG_F32, AG_SHAPE(n, n), 0, 1, &rng);
    ag_tensor *b = ag_rand_normal(AG_F32, AG_SHAPE(n, n), 0, 1, &rng);
    ag_tensor *seed = ag_ones(AG_F32, AG_SHAPE(n, n));
    ag_tape *t = new_tape();
    if (!a || !b || !seed || !t || ag_set_requires_grad(a, true) || ag_set_requires_grad(b, true))
        die("W4", "out of memory");
    double fwd = 1e30, bwd = 1e30, flops = 2.0 * (double)n * (double)n * (double)n;
    for (int rep = 0; rep < 6; rep++) { /* one warm-up, best of five */
        ag_tape_reset(t);
        double t0 = now();
        ag_tensor *c = ag_matmul(t, a, b);
        double t1 = now();
        if (ag_backward_seed(t, c, seed) != AG_OK)
            die("W4", ag_tape_error(t));
        double t2 = now();
        if (rep > 0) {
            fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
            bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
        }
    }
    char name[32];
    snprintf(name, sizeof name, "W4-%zu-fwd", n);
    result(name, flops / fwd / 1e9, "GFLOP/s");
    snprintf(name, sizeof name, "W4-%zu-bwd", n);
    result(name, 2 * flops / bwd / 1e9, "GFLOP/s");
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(seed);
}

/* ------------------------------------------------------------ main */

static const char *const workloads[] = {"W1-f32", "W1-f64", "W2-f32", "W3", "W4-1024",
                                        "W4-2048", "W1-f32-rss", "W2-f32-rss"};
enum { N_WORKLOADS = sizeof workloads / sizeof workloads[0] };

static const char about[] =
    "Our side of the benchmark table: prints RESULT ours <workload> <value> <unit>.\n"
    "WORKLOAD (default: all but the -rss ones):\n"
    "  W1-f32 W1-f64   Nielsen's 784-30-10 sigmoid net, quadratic cost, SGD batch 10,\n"
    "                  one shuffled epoch of 60,000 examples (examples/s)\n"
    "  W2-f32          784-256-256-10 ReLU, softmax cross-entropy, SGD batch 128\n"
    "                  (examples/s)\n"
    "  W3              micrograd's demo at scale: a 2-16-16-1 tanh MLP of rank-0\n"
    "                  tensors over 156 samples, ~100,000 nodes (nodes/s)\n"
    "  W4-1024 W4-2048 f32 N x N matmul: forward and the two backward products,\n"
    "                  reported as W4-N-fwd and W4-N-bwd (GFLOP/s)\n"
    "  W1-f32-rss W2-f32-rss\n"
    "                  run that workload alone, report its max RSS (KiB)";

/* Exits 2 naming the first unknown workload and listing the known ones. */
static void check_workloads(const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < N_WORKLOADS && strcmp(names[i], workloads[k]) != 0)
            k++;
        if (k < N_WORKLOADS)
            continue;
        fprintf(stderr, "bench: unknown workload %s; the workloads are", names[i]);
        for (k = 0; k < N_WORKLOADS; k++)
            fprintf(stderr, " %s", workloads[k]);
        fputc('\n', stderr);
        exit(2);
    }
}

/* Named on the command line, or with none named, every timing workload. */
static bool wanted(const char *const *names, size_t n, const char *name)
{
    if (n == 0)
        return strstr(name, "-rss") == NULL; /* rss runs only when asked */
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    uint64_t n_threads = 0;
    const char *names[4 * N_WORKLOADS];
    const flag_spec flags[] = {
        {"--threads", FLAG_UINT, &n_threads, 0, 1024, false, "threads per tape, 0: one per CPU"},
    };
    const cli_spec cli = {"bench", " [WORKLOAD...]", about, flags, 1, names,
                          sizeof names / sizeof names[0]};
    size_t n = parse_flags(argc, argv, &cli);
    check_workloads(names, n);
    threads = (size_t)n_threads;
    if (wanted(names, n, "W1-f32")) run_mlp(&W1_F32, false);
    if (wanted(names, n, "W1-f64")) run_mlp(&W1_F64, false);
    if (wanted(names, n, "W2-f32")) run_mlp(&W2_F32, false);
    if (wanted(names, n, "W3")) run_scalar();
    if (wanted(names, n, "W4-1024")) run_gemm(1024);
    if (wanted(names, n, "W4-2048")) run_gemm(2048);
    if (wanted(names, n, "W1-f32-rss")) run_mlp(&W1_F32, true);
    if (wanted(names, n, "W2-f32-rss")) run_mlp(&W2_F32, true);
    return 0;
}
