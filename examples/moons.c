/* moons: two interleaved half-moons (generated with the seeded RNG), a
 * small tanh MLP 2-16-16-1 with a sigmoid output learning to separate them
 * (BCE, Adam, full batch), and the learned decision boundary drawn as an
 * SVG picture: the plane shaded by the predicted probability, the points
 * coloured by their true class.
 *
 * Usage: moons [OUT.svg] [--seed N] [--noise X] [--steps N]   (--help: defaults) */
#include "common.h"
#include "svg.h"

#include <math.h>
#include <stdio.h>

enum { N = 300, GRID = 90, SIDE = 450 };
static const double X0 = -1.6, X1 = 2.6, Y0 = -1.1, Y1 = 1.6; /* the plotted square */

/* Rows (x, y) of two half-moons, label 0 on the upper one, 1 on the lower. */
static void make_moons(ag_rng *rng, double noise, double *xy, double *label)
{
    const double pi = 3.14159265358979323846;
    for (size_t i = 0; i < N; i++) {
        double angle = pi * ag_rng_uniform(rng);
        bool lower = i % 2;
        xy[2 * i] = lower ? 1 - cos(angle) : cos(angle);
        xy[2 * i + 1] = lower ? 0.5 - sin(angle) : sin(angle);
        xy[2 * i] += noise * ag_rng_normal(rng);
        xy[2 * i + 1] += noise * ag_rng_normal(rng);
        label[i] = lower;
    }
}

static double px(double x) { return (x - X0) / (X1 - X0) * SIDE; }
static double py(double y) { return (Y1 - y) / (Y1 - Y0) * SIDE; }

/* The plane shaded by p(class 1), blue (0) through white to orange (1). */
static void draw_regions(svg *s, const ag_tensor *p)
{
    double cell = (double)SIDE / GRID;
    for (size_t r = 0; r < GRID; r++)
        for (size_t c = 0; c < GRID; c++) {
            double q = ag_get(p, r * GRID + c), w = fabs(2 * q - 1);
            int red = q > 0.5 ? 255 : (int)(255 - 180 * w), green = (int)(255 - 100 * w);
            int blue = q > 0.5 ? (int)(255 - 230 * w) : 255;
            char fill[32];
            snprintf(fill, sizeof fill, "rgb(%d,%d,%d)", red, green, blue);
            svg_rect(s, c * cell, r * cell, cell + 0.3, cell + 0.3, fill);
        }
}

static bool write_svg(const char *path, const ag_tensor *grid_p, const double *xy, const double *label)
{
    svg s;
    if (!svg_open(&s, path, SIDE, SIDE))
        return false;
    draw_regions(&s, grid_p);
    for (size_t i = 0; i < N; i++)
        svg_circle(&s, px(xy[2 * i]), py(xy[2 * i + 1]), 3.5, label[i] ? "#e66101" : "#3b6fd6",
                   "black");
    return svg_close(&s);
}

/* p(class 1) at the centre of every grid cell, row by row from the top. */
static ag_tensor *predict_grid(nn_mlp *net, ag_tape *t, ag_tensor **grid)
{
    static double g[GRID * GRID * 2];
    for (size_t r = 0; r < GRID; r++)
        for (size_t c = 0; c < GRID; c++) {
            g[2 * (r * GRID + c)] = X0 + (c + 0.5) * (X1 - X0) / GRID;
            g[2 * (r * GRID + c) + 1] = Y1 - (r + 0.5) * (Y1 - Y0) / GRID;
        }
    *grid = ag_view(AG_F64, AG_SHAPE(GRID * GRID, 2), g, NULL);
    ag_tape_set_recording(t, false);
    return nn_mlp_forward(net, t, *grid, NULL, 0);
}

int main(int argc, char **argv)
{
    const char *out = "moons.svg";
    uint64_t seed = 5, steps = 3000;
    double noise = 0.12;
    const flag_spec flags[] = {
        {"--seed", FLAG_UINT, &seed, 0, INFINITY, false, "seed of the points and the weights"},
        {"--noise", FLAG_REAL, &noise, 0, INFINITY, false, "std. deviation of the noise on each coordinate"},
        {"--steps", FLAG_UINT, &steps, 1, 1e9, false, "full-batch Adam steps"},
    };
    const cli_spec cli = {"moons", " [OUT.svg]",
                          "Separates two noisy half-moons with a 2-16-16-1 tanh MLP and draws the\n"
                          "decision boundary to OUT.svg (default moons.svg).",
                          flags, sizeof flags / sizeof flags[0], &out, 1};
    parse_flags(argc, argv, &cli);
    static double xy[2 * N], label[N];
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    make_moons(&rng, noise, xy, label);
    ag_tensor *x = ag_view(AG_F64, AG_SHAPE(N, 2), xy, NULL), *y = ag_view(AG_F64, AG_SHAPE(N, 1), label, NULL);
    size_t sizes[] = {2, 16, 16, 1};
    nn_act acts[] = {NN_TANH, NN_TANH, NN_SIGMOID};
    nn_spec spec = {.n_layers = 3, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = seed};
    nn_optim_config cfg = nn_adam(0.01);
    nn_error err = {0};
    nn_mlp *net = NULL;
    nn_optim *opt = NULL;
    ag_tape *t = ag_tape_new();
    if (!x || !y || !t || nn_mlp_new(&spec, &net, &err) ||
        nn_mlp_optim_new(net, &cfg, &opt, &err)) {
        fprintf(stderr, "moons: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    printf("two moons: %d points, noise %g; MLP 2-16-16-1 tanh, sigmoid output, BCE, Adam 0.01\n", N, noise);
    double loss = 0, acc = 0;
    for (size_t step = 1; step <= steps; step++) {
        if (nn_mlp_train_step(net, t, opt, NN_COST_BCE, x, y, &loss, &err) != AG_OK)
            return fprintf(stderr, "moons: %s\n", err.msg), 1;
        if (step % 500 == 0 || step == 1)
            printf("step %5zu  loss %.5f\n", step, loss);
    }
    if (nn_mlp_accuracy(net, t, x, y, &acc, &err) != AG_OK)
        return fprintf(stderr, "moons: %s\n", err.msg), 1;
    ag_tensor *grid = NULL, *p = predict_grid(net, t, &grid);
    bool written = p && write_svg(out, p, xy, label);
    printf("training accuracy %.1f%%; decision boundary %s %s\n", 100 * acc,
           written ? "written to" : "could NOT be written to", out);
    ag_tensor_free(grid);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return written ? 0 : 1;
}
