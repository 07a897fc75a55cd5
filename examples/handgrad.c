/* handgrad: the four equations of backpropagation (Nielsen, chapter 2)
 * written out by hand in plain C loops, beside the engine's gradients, for
 * a sigmoid MLP 8-6-5-3 on a mini-batch of 4, quadratic cost, in f64:
 *
 *   BP1  δᴸ = ∇ₐC ⊙ σ'(zᴸ)            here ∇ₐC = (aᴸ − y) / m
 *   BP2  δˡ = (δˡ⁺¹ · (Wˡ⁺¹)ᵀ) ⊙ σ'(zˡ) (batch-first rows: W is [n_in, n_out])
 *   BP3  ∂C/∂bˡ = Σ_rows δˡ
 *   BP4  ∂C/∂Wˡ = (aˡ⁻¹)ᵀ · δˡ
 *
 * The engine never sees these equations: its δ comes from the op rules of
 * matmul, add, sigmoid and the cost. Prints, per layer, the largest
 * difference in δ, ∂C/∂W and ∂C/∂b; exits 1 if any relative difference
 * exceeds 1e-12. Then runs ag_gradcheck (finite differences) on the net.
 *
 * Second order: the Hessian-vector product H·v of the cost with respect to
 * every parameter, for a random direction v, by hand with Pearlmutter's
 * R-operator (R{f} = d/dε f(θ + εv) at ε = 0, pushed through the forward
 * pass and BP1-BP4), beside the engine's ag_hvp (the gradient of the
 * recorded gradient):
 *
 *   R{zˡ} = R{aˡ⁻¹}·Wˡ + aˡ⁻¹·VWˡ + Vbˡ          R{aˡ} = σ'(zˡ) ⊙ R{zˡ}
 *   R{δᴸ} = R{aᴸ}/m ⊙ σ'(zᴸ) + (aᴸ − y)/m ⊙ σ''(zᴸ) ⊙ R{zᴸ}
 *   R{δˡ} = (R{δˡ⁺¹}·(Wˡ⁺¹)ᵀ + δˡ⁺¹·(VWˡ⁺¹)ᵀ) ⊙ σ'(zˡ) + (δˡ⁺¹·(Wˡ⁺¹)ᵀ) ⊙ σ''(zˡ) ⊙ R{zˡ}
 *   (H v) for Wˡ = R{aˡ⁻¹}ᵀ·δˡ + (aˡ⁻¹)ᵀ·R{δˡ}      for bˡ = Σ_rows R{δˡ}
 *
 * with σ' = a(1 − a), σ'' = σ'(1 − 2a); also within 1e-12 relative. */
#include "common.h"

#include <math.h>
#include <stdio.h>

enum { M = 4, L = 3, MAXW = 8 };
static const size_t sizes[L + 1] = {8, 6, 5, 3};

typedef struct { /* the hand computation, layer l = 1..L */
    double a[L + 1][M][MAXW], z[L + 1][M][MAXW], delta[L + 1][M][MAXW];
    double dW[L + 1][MAXW][MAXW], db[L + 1][MAXW];
    /* R-operator: directional derivatives along v of the same quantities */
    double Ra[L + 1][M][MAXW], Rz[L + 1][M][MAXW], Rdelta[L + 1][M][MAXW];
    double RdW[L + 1][MAXW][MAXW], Rdb[L + 1][MAXW];
} by_hand;

static double W(const nn_param *p, size_t l, size_t i, size_t j)
{
    return ag_get(p[2 * (l - 1)].tensor, i * sizes[l] + j);
}

static double sigmoid(double z) { return 1 / (1 + exp(-z)); }

static void forward(const nn_param *p, const ag_tensor *x, by_hand *h)
{
    for (size_t r = 0; r < M; r++)
        for (size_t i = 0; i < sizes[0]; i++)
            h->a[0][r][i] = ag_get(x, r * sizes[0] + i);
    for (size_t l = 1; l <= L; l++)
        for (size_t r = 0; r < M; r++)
            for (size_t j = 0; j < sizes[l]; j++) {
                double z = ag_get(p[2 * (l - 1) + 1].tensor, j);
                for (size_t i = 0; i < sizes[l - 1]; i++)
                    z += h->a[l - 1][r][i] * W(p, l, i, j);
                h->z[l][r][j] = z;
                h->a[l][r][j] = sigmoid(z);
            }
}

static void backward(const nn_param *p, const ag_tensor *y, by_hand *h)
{
    for (size_t r = 0; r < M; r++) /* BP1 */
        for (size_t j = 0; j < sizes[L]; j++) {
            double a = h->a[L][r][j];
            h->delta[L][r][j] = (a - ag_get(y, r * sizes[L] + j)) / M * a * (1 - a);
        }
    for (size_t l = L - 1; l >= 1; l--) /* BP2 */
        for (size_t r = 0; r < M; r++)
            for (size_t i = 0; i < sizes[l]; i++) {
                double s = 0, a = h->a[l][r][i];
                for (size_t j = 0; j < sizes[l + 1]; j++)
                    s += h->delta[l + 1][r][j] * W(p, l + 1, i, j);
                h->delta[l][r][i] = s * a * (1 - a);
            }
    for (size_t l = 1; l <= L; l++)
        for (size_t j = 0; j < sizes[l]; j++) {
            h->db[l][j] = 0; /* BP3 */
            for (size_t r = 0; r < M; r++)
                h->db[l][j] += h->delta[l][r][j];
            for (size_t i = 0; i < sizes[l - 1]; i++) { /* BP4 */
                h->dW[l][i][j] = 0;
                for (size_t r = 0; r < M; r++)
                    h->dW[l][i][j] += h->a[l - 1][r][i] * h->delta[l][r][j];
            }
        }
}

/* v's component for parameter k (W1, b1, W2, ...) at element e. */
static double V(ag_tensor *const *v, size_t k, size_t e) { return ag_get(v[k], e); }

/* R{z}, R{a} layer by layer (inputs fixed: R{a⁰} = 0). */
static void r_forward(const nn_param *p, ag_tensor *const *v, by_hand *h)
{
    for (size_t l = 1; l <= L; l++)
        for (size_t r = 0; r < M; r++)
            for (size_t j = 0; j < sizes[l]; j++) {
                double rz = V(v, 2 * (l - 1) + 1, j);
                for (size_t i = 0; i < sizes[l - 1]; i++)
                    rz += h->Ra[l - 1][r][i] * W(p, l, i, j) +
                          h->a[l - 1][r][i] * V(v, 2 * (l - 1), i * sizes[l] + j);
                double a = h->a[l][r][j];
                h->Rz[l][r][j] = rz;
                h->Ra[l][r][j] = a * (1 - a) * rz;
            }
}

/* R{δ} from the top layer down, then R{∂C/∂W}, R{∂C/∂b}: the H·v. */
static void r_backward(const nn_param *p, ag_tensor *const *v, const ag_tensor *y, by_hand *h)
{
    for (size_t r = 0; r < M; r++)
        for (size_t j = 0; j < sizes[L]; j++) {
            double a = h->a[L][r][j], s1 = a * (1 - a), s2 = s1 * (1 - 2 * a);
            h->Rdelta[L][r][j] = h->Ra[L][r][j] / M * s1 +
                                 (a - ag_get(y, r * sizes[L] + j)) / M * s2 * h->Rz[L][r][j];
        }
    for (size_t l = L - 1; l >= 1; l--)
        for (size_t r = 0; r < M; r++)
            for (size_t i = 0; i < sizes[l]; i++) {
                double back = 0, rback = 0, a = h->a[l][r][i], s1 = a * (1 - a), s2 = s1 * (1 - 2 * a);
                for (size_t j = 0; j < sizes[l + 1]; j++) {
                    back += h->delta[l + 1][r][j] * W(p, l + 1, i, j);
                    rback += h->Rdelta[l + 1][r][j] * W(p, l + 1, i, j) +
                             h->delta[l + 1][r][j] * V(v, 2 * l, i * sizes[l + 1] + j);
                }
                h->Rdelta[l][r][i] = rback * s1 + back * s2 * h->Rz[l][r][i];
            }
    for (size_t l = 1; l <= L; l++)
        for (size_t j = 0; j < sizes[l]; j++) {
            h->Rdb[l][j] = 0;
            for (size_t r = 0; r < M; r++)
                h->Rdb[l][j] += h->Rdelta[l][r][j];
            for (size_t i = 0; i < sizes[l - 1]; i++) {
                h->RdW[l][i][j] = 0;
                for (size_t r = 0; r < M; r++)
                    h->RdW[l][i][j] += h->Ra[l - 1][r][i] * h->delta[l][r][j] +
                                       h->a[l - 1][r][i] * h->Rdelta[l][r][j];
            }
        }
}

typedef struct {
    double abs, rel;
} diff;

static void note(diff *d, double hand, double engine)
{
    double e = fabs(hand - engine), scale = fmax(fabs(hand), fabs(engine));
    d->abs = fmax(d->abs, e);
    d->rel = fmax(d->rel, scale > 0 ? e / scale : 0);
}

/* Compares layer l; returns its worst relative difference. */
static double compare_layer(const nn_param *p, const nn_tap *tap, const by_hand *h, size_t l)
{
    diff dd = {0}, dw = {0}, dbias = {0};
    for (size_t r = 0; r < M; r++)
        for (size_t j = 0; j < sizes[l]; j++)
            note(&dd, h->delta[l][r][j], ag_get_grad(tap[l - 1].z, r * sizes[l] + j));
    for (size_t j = 0; j < sizes[l]; j++) {
        note(&dbias, h->db[l][j], ag_get_grad(p[2 * (l - 1) + 1].tensor, j));
        for (size_t i = 0; i < sizes[l - 1]; i++)
            note(&dw, h->dW[l][i][j], ag_get_grad(p[2 * (l - 1)].tensor, i * sizes[l] + j));
    }
    printf("layer %zu  max |δ diff| %.2e   max |∂C/∂W diff| %.2e   max |∂C/∂b diff| %.2e"
           "   (relative %.1e)\n", l, dd.abs, dw.abs, dbias.abs, fmax(dd.rel, fmax(dw.rel, dbias.rel)));
    return fmax(dd.rel, fmax(dw.rel, dbias.rel));
}

/* H·v by hand against the engine's ag_hvp; returns the worst relative
 * difference (or 1 when the engine fails). */
static double compare_hvp(nn_mlp *net, const ag_tensor *x, const ag_tensor *y, by_hand *h,
                          ag_rng *rng)
{
    size_t n;
    const nn_param *p = nn_mlp_params(net, &n);
    ag_tensor *v[2 * L], *params[2 * L], *hv[2 * L];
    for (size_t k = 0; k < n; k++) {
        params[k] = p[k].tensor;
        v[k] = ag_rand_normal(AG_F64, ag_tensor_shape(params[k]), ag_tensor_rank(params[k]), 0, 1, rng);
    }
    r_forward(p, v, h);
    r_backward(p, v, y, h);
    ag_tape *t = ag_tape_new();
    ag_tensor *C = ag_quadratic_cost(t, nn_mlp_forward(net, t, (ag_tensor *)x, NULL, 0), (ag_tensor *)y);
    double worst = 1;
    if (ag_hvp(t, C, n, params, v, hv) != AG_OK) {
        fprintf(stderr, "handgrad: ag_hvp: %s\n", ag_tape_error(t));
    } else {
        diff d = {0};
        for (size_t l = 1; l <= L; l++)
            for (size_t j = 0; j < sizes[l]; j++) {
                note(&d, h->Rdb[l][j], ag_get(hv[2 * (l - 1) + 1], j));
                for (size_t i = 0; i < sizes[l - 1]; i++)
                    note(&d, h->RdW[l][i][j], ag_get(hv[2 * (l - 1)], i * sizes[l] + j));
            }
        printf("Hessian-vector product (R-operator by hand vs ag_hvp): max |diff| %.2e"
               "   (relative %.1e)\n", d.abs, d.rel);
        worst = d.rel;
    }
    ag_tape_free(t);
    for (size_t k = 0; k < n; k++)
        ag_tensor_free(v[k]);
    return worst;
}

typedef struct {
    nn_mlp *net;
    ag_tensor *x, *y;
} model;

static ag_tensor *cost_of(ag_tape *t, ag_tensor *const *inputs, void *ctx)
{
    (void)inputs; /* they are the model's own parameters */
    model *m = ctx;
    return ag_quadratic_cost(t, nn_mlp_forward(m->net, t, m->x, NULL, 0), m->y);
}

int main(int argc, char **argv)
{
    const cli_spec cli = {"handgrad", NULL,
                          "BP1-BP4 and the R-operator's Hessian-vector product by hand beside the\n"
                          "engine's for an 8-6-5-3 sigmoid MLP; exits 1 if any relative difference\n"
                          "exceeds 1e-12. Takes no arguments.",
                          NULL, 0, NULL, 0};
    parse_flags(argc, argv, &cli);
    nn_spec spec = {.n_layers = L, .sizes = sizes, .dtype = AG_F64, .init = NN_INIT_NORMAL, .seed = 7};
    nn_error err = {0};
    nn_mlp *net = NULL;
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    ag_tensor *x = ag_rand_normal(AG_F64, AG_SHAPE(M, 8), 0, 1, &rng);
    ag_tensor *y = ag_rand_uniform(AG_F64, AG_SHAPE(M, 3), 0, 1, &rng);
    ag_tape *t = ag_tape_new();
    if (!x || !y || !t || nn_mlp_new(&spec, &net, &err)) {
        fprintf(stderr, "handgrad: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    size_t n;
    const nn_param *p = nn_mlp_params(net, &n);
    nn_tap taps[L];
    ag_tensor *C = ag_quadratic_cost(t, nn_mlp_forward(net, t, x, taps, L), y);
    if (ag_backward(t, C) != AG_OK) {
        fprintf(stderr, "handgrad: %s\n", ag_tape_error(t));
        return 1;
    }
    static by_hand h;
    forward(p, x, &h);
    backward(p, y, &h);
    double hand_cost = 0;
    for (size_t r = 0; r < M; r++)
        for (size_t j = 0; j < sizes[L]; j++)
            hand_cost += pow(h.a[L][r][j] - ag_get(y, r * sizes[L] + j), 2) / (2 * M);
    printf("BP1-BP4 by hand vs the engine: MLP 8-6-5-3, sigmoid, quadratic cost, batch %d, f64\n"
           "C = %.17g (by hand: %.17g)\n", M, ag_item(C), hand_cost);
    double worst = 0;
    for (size_t l = 1; l <= L; l++)
        worst = fmax(worst, compare_layer(p, taps, &h, l));

    ag_tensor *inputs[2 * L];
    for (size_t i = 0; i < n; i++)
        inputs[i] = p[i].tensor;
    model m = {net, x, y};
    ag_gradcheck_report rep;
    ag_status s = ag_gradcheck(cost_of, &m, n, inputs, 1e-6, 1e-8, 1e-5, &rep);
    printf("gradcheck: %s, %zu elements, max abs error %.2e, max rel error %.2e\n",
           s != AG_OK ? ag_status_string(s) : rep.passed ? "passed" : "FAILED", rep.checked,
           rep.max_abs_err, rep.max_rel_err);
    double hvp_worst = compare_hvp(net, x, y, &h, &rng);
    bool ok = worst <= 1e-12 && hvp_worst <= 1e-12 && s == AG_OK && rep.passed;
    printf(ok ? "all within 1e-12 relative\n" : "MISMATCH\n");
    ag_tape_free(t);
    nn_mlp_free(net);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return ok ? 0 : 1;
}
