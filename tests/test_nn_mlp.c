/* test_nn_mlp.c: the MLP: spec checks, the parameter block, initialisers,
 * forward values, layer taps against BP1-BP4, allocation failures. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <string.h>

#include "nn.h"
#include "testalloc.h"

static double sigm(double z) { return 1 / (1 + exp(-z)); }

/* A model from sizes and acts, asserting success. */
static nn_mlp *make(ag_dtype dt, size_t L, const size_t *sizes, const nn_act *acts,
                    nn_init init, uint64_t seed)
{
    nn_spec spec = {.n_layers = L, .sizes = sizes, .acts = acts, .dtype = dt,
                    .init = init, .seed = seed};
    nn_mlp *net = NULL;
    nn_error e;
    cr_assert_eq(nn_mlp_new(&spec, &net, &e), AG_OK, "%s", e.msg);
    cr_assert_not_null(net);
    return net;
}

/* Copies vals into the tensor (f64). */
static void set_all(ag_tensor *x, const double *vals)
{
    memcpy(ag_data(x), vals, ag_tensor_numel(x) * sizeof(double));
}

Test(nn_mlp, bad_specs_are_rejected_with_a_message)
{
    size_t sizes[] = {2, 3, 1}, zero[] = {2, 0, 1};
    nn_act acts[] = {NN_SIGMOID, (nn_act)42};
    nn_mlp *net = (nn_mlp *)&net; /* must be overwritten with NULL */
    nn_error e;
    cr_expect_eq(nn_mlp_new(NULL, &net, &e), AG_ERR_NULL);
    cr_expect_null(net);
    cr_expect(strstr(e.msg, "spec is NULL"), "%s", e.msg);
    nn_spec s = {.n_layers = 2, .sizes = sizes};
    cr_expect_eq(nn_mlp_new(&s, NULL, &e), AG_ERR_NULL);
    s.n_layers = 0;
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "n_layers is 0"), "%s", e.msg);
    s.n_layers = NN_MAX_LAYERS + 1;
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_VALUE);
    s = (nn_spec){.n_layers = 2, .sizes = zero};
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "sizes[1] is 0"), "%s", e.msg);
    s = (nn_spec){.n_layers = 2, .sizes = sizes, .acts = acts};
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_VALUE);
    cr_expect(strstr(e.msg, "acts[1] = 42"), "%s", e.msg);
    s = (nn_spec){.n_layers = 2, .sizes = sizes, .dtype = (ag_dtype)7};
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_DTYPE);
    s = (nn_spec){.n_layers = 2, .sizes = sizes, .init = (nn_init)9};
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_VALUE);
    s = (nn_spec){.n_layers = 2, .sizes = sizes, .leaky_slope = NAN};
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_VALUE);
    s = (nn_spec){.n_layers = 1, .sizes = (size_t[]){SIZE_MAX / 2, 4}};
    cr_expect_eq(nn_mlp_new(&s, &net, &e), AG_ERR_OVERFLOW, "%s", e.msg);
    cr_expect_null(net);
    s = (nn_spec){.n_layers = 2, .sizes = sizes};
    cr_expect_eq(nn_mlp_new(&s, &net, NULL), AG_OK); /* err may be NULL */
    nn_mlp_free(net);
    nn_mlp_free(NULL);
}

Test(nn_mlp, parameters_live_in_one_contiguous_block)
{
    size_t sizes[] = {4, 3, 2};
    nn_mlp *net = make(AG_F32, 2, sizes, NULL, NN_INIT_NORMAL, 1);
    size_t n, P = 4 * 3 + 3 + 3 * 2 + 2;
    const nn_param *p = nn_mlp_params(net, &n);
    cr_assert_eq(n, 4);
    cr_assert_eq(nn_mlp_param_count(net), P);
    const char *names[] = {"W1", "b1", "W2", "b2"};
    size_t numel[] = {12, 3, 6, 2}, off = 0;
    float *data = nn_mlp_data(net), *grad = nn_mlp_grad(net);
    cr_assert_not_null(grad); /* the grads: one block of P, in the order of the values */
    for (size_t i = 0; i < n; i++) {
        cr_expect_str_eq(p[i].name, names[i]);
        cr_expect_str_eq(ag_tensor_name(p[i].tensor), names[i]);
        cr_expect_eq(ag_tensor_numel(p[i].tensor), numel[i]);
        cr_expect_eq(ag_data(p[i].tensor), (void *)(data + off));
        cr_expect_eq(ag_grad(p[i].tensor), (void *)(grad + off));
        cr_expect(ag_requires_grad(p[i].tensor));
        off += numel[i];
    }
    cr_expect_eq(ag_tensor_rank(p[0].tensor), 2);
    cr_expect_eq(ag_tensor_shape(p[0].tensor)[0], 4);
    cr_expect_eq(ag_tensor_shape(p[0].tensor)[1], 3);
    cr_expect_eq(ag_tensor_rank(p[1].tensor), 1);
    cr_expect_eq(nn_mlp_spec(net)->acts[1], NN_SIGMOID, "NULL acts means sigmoid");
    cr_expect_eq(nn_mlp_spec(net)->leaky_slope, 0.01);
    for (size_t i = 0; i < P; i++)
        grad[i] = 1;
    nn_mlp_zero_grad(net);
    for (size_t i = 0; i < P; i++)
        cr_expect_eq(grad[i], 0);
    nn_mlp_free(net);
}

/* The documented draw order: per layer, W row-major, then b. */
Test(nn_mlp, initialisers_follow_the_documented_draws)
{
    size_t sizes[] = {3, 4, 2};
    nn_init kinds[] = {NN_INIT_NORMAL, NN_INIT_NORMAL_SCALED, NN_INIT_XAVIER, NN_INIT_HE};
    for (size_t k = 0; k < 4; k++) {
        nn_mlp *net = make(AG_F64, 2, sizes, NULL, kinds[k], 77);
        const double *d = nn_mlp_data(net);
        ag_rng rng;
        ag_rng_seed(&rng, 77);
        size_t i = 0;
        for (size_t l = 0; l < 2; l++) {
            double n_in = (double)sizes[l], n_out = (double)sizes[l + 1];
            for (size_t j = 0; j < sizes[l] * sizes[l + 1]; j++, i++) {
                double want = kinds[k] == NN_INIT_NORMAL ? ag_rng_normal(&rng)
                            : kinds[k] == NN_INIT_NORMAL_SCALED ? ag_rng_normal(&rng) / sqrt(n_in)
                            : kinds[k] == NN_INIT_HE ? ag_rng_normal(&rng) * sqrt(2 / n_in)
                            : sqrt(6 / (n_in + n_out)) * (2 * ag_rng_uniform(&rng) - 1);
                cr_expect_float_eq(d[i], want, 1e-15, "init %zu W%zu[%zu]", k, l + 1, j);
            }
            for (size_t j = 0; j < sizes[l + 1]; j++, i++) {
                double want = kinds[k] <= NN_INIT_NORMAL_SCALED ? ag_rng_normal(&rng) : 0;
                cr_expect_float_eq(d[i], want, 1e-15, "init %zu b%zu[%zu]", k, l + 1, j);
            }
        }
        nn_mlp_free(net);
    }
}

Test(nn_mlp, same_seed_same_model_other_seed_other_model)
{
    size_t sizes[] = {5, 7, 3};
    nn_mlp *a = make(AG_F32, 2, sizes, NULL, NN_INIT_XAVIER, 5);
    nn_mlp *b = make(AG_F32, 2, sizes, NULL, NN_INIT_XAVIER, 5);
    nn_mlp *c = make(AG_F32, 2, sizes, NULL, NN_INIT_XAVIER, 6);
    size_t bytes = nn_mlp_param_count(a) * sizeof(float);
    cr_expect_eq(memcmp(nn_mlp_data(a), nn_mlp_data(b), bytes), 0);
    cr_expect_neq(memcmp(nn_mlp_data(a), nn_mlp_data(c), bytes), 0);
    double r = sqrt(6.0 / 12);
    const float *d = nn_mlp_data(a);
    for (size_t i = 0; i < 35; i++)
        cr_expect(fabs(d[i]) <= r, "xavier W1 within +-sqrt(6/(n_in+n_out))");
    nn_error e;
    cr_expect_eq(nn_mlp_init(c, NN_INIT_XAVIER, 5, &e), AG_OK);
    cr_expect_eq(memcmp(nn_mlp_data(a), nn_mlp_data(c), bytes), 0, "re-init with seed 5");
    cr_expect_eq(nn_mlp_init(c, (nn_init)-1, 5, &e), AG_ERR_VALUE);
    cr_expect_eq(nn_mlp_init(NULL, NN_INIT_HE, 5, &e), AG_ERR_NULL);
    nn_mlp_free(a);
    nn_mlp_free(b);
    nn_mlp_free(c);
}

/* A 2-2-1 network with chosen weights, each activation, against hand math. */
Test(nn_mlp, forward_matches_hand_computation_for_every_activation)
{
    size_t sizes[] = {2, 2, 1};
    nn_act kinds[] = {NN_SIGMOID, NN_TANH, NN_RELU, NN_LEAKY_RELU, NN_IDENTITY,
                      NN_GELU, NN_SILU, NN_ELU};
    double W1[] = {0.5, -1.0, 2.0, 0.25}, b1[] = {0.1, -0.3}, W2[] = {1.5, -2.0}, b2[] = {0.2};
    double X[] = {1.0, 2.0, -1.5, 0.5};
    cr_assert_eq(sizeof kinds / sizeof kinds[0], NN_ACT_COUNT, "every activation is checked");
    for (size_t k = 0; k < NN_ACT_COUNT; k++) {
        nn_act acts[] = {kinds[k], NN_IDENTITY};
        nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                        .leaky_slope = 0.2};
        nn_mlp *net;
        cr_assert_eq(nn_mlp_new(&spec, &net, NULL), AG_OK);
        const nn_param *p = nn_mlp_params(net, NULL);
        set_all(p[0].tensor, W1);
        set_all(p[1].tensor, b1);
        set_all(p[2].tensor, W2);
        set_all(p[3].tensor, b2);
        ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(2, 2), X);
        ag_tape *t = ag_tape_new();
        ag_tensor *y = nn_mlp_forward(net, t, x, NULL, 0);
        cr_assert_not_null(y, "%s", ag_tape_error(t));
        cr_assert_eq(ag_tensor_shape(y)[0], 2);
        cr_assert_eq(ag_tensor_shape(y)[1], 1);
        for (size_t r = 0; r < 2; r++) {
            double out = b2[0];
            for (size_t j = 0; j < 2; j++) {
                double z = X[2 * r] * W1[j] + X[2 * r + 1] * W1[2 + j] + b1[j];
                double a = kinds[k] == NN_SIGMOID ? sigm(z)
                         : kinds[k] == NN_TANH ? tanh(z)
                         : kinds[k] == NN_RELU ? (z > 0 ? z : 0)
                         : kinds[k] == NN_LEAKY_RELU ? (z > 0 ? z : 0.2 * z)
                         : kinds[k] == NN_GELU ? z * 0.5 * (1 + erf(z / sqrt(2)))
                         : kinds[k] == NN_SILU ? z * sigm(z)
                         : kinds[k] == NN_ELU ? (z > 0 ? z : exp(z) - 1)
                         : z;
                out += a * W2[j];
            }
            cr_expect_float_eq(ag_get(y, r), out, 1e-12, "%s row %zu", nn_act_name(kinds[k]), r);
        }
        ag_tape_free(t);
        ag_tensor_free(x);
        nn_mlp_free(net);
    }
}

/* BP1: δᴸ = ∇ₐC ⊙ σ'(zᴸ); BP2: δˡ = δˡ⁺¹(Wˡ⁺¹)ᵀ ⊙ σ'(zˡ) (batch first);
 * BP3: ∂C/∂bˡ = Σ_rows δˡ; BP4: ∂C/∂Wˡ = (aˡ⁻¹)ᵀδˡ. Quadratic cost over m = 2
 * rows: ∇ₐC = (a - y) / m. */
Test(nn_mlp, layer_taps_give_the_deltas_of_bp1_to_bp4)
{
    size_t sizes[] = {2, 3, 2};
    nn_mlp *net = make(AG_F64, 2, sizes, NULL, NN_INIT_NORMAL, 3);
    const nn_param *p = nn_mlp_params(net, NULL);
    const double *W1 = ag_data(p[0].tensor), *b1 = ag_data(p[1].tensor);
    const double *W2 = ag_data(p[2].tensor), *b2 = ag_data(p[3].tensor);
    double X[2][2] = {{0.3, -0.7}, {1.1, 0.4}}, Y[2][2] = {{1, 0}, {0, 1}};
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(2, 2), X);
    ag_tensor *y = ag_from_data(AG_F64, AG_SHAPE(2, 2), Y);
    ag_tape *t = ag_tape_new();
    nn_tap taps[2];
    ag_tensor *a = nn_mlp_forward(net, t, x, taps, 2);
    cr_assert_eq(ag_backward(t, nn_loss(t, NN_COST_QUADRATIC, a, y)), AG_OK, "%s",
                 ag_tape_error(t));
    cr_assert_eq(taps[1].a, a);
    double z1[2][3], a1[2][3], z2[2][2], a2[2][2], d1[2][3], d2[2][2];
    for (size_t r = 0; r < 2; r++) {
        for (size_t j = 0; j < 3; j++) {
            z1[r][j] = X[r][0] * W1[0 * 3 + j] + X[r][1] * W1[1 * 3 + j] + b1[j];
            a1[r][j] = sigm(z1[r][j]);
        }
        for (size_t k = 0; k < 2; k++) {
            z2[r][k] = b2[k];
            for (size_t j = 0; j < 3; j++)
                z2[r][k] += a1[r][j] * W2[j * 2 + k];
            a2[r][k] = sigm(z2[r][k]);
            d2[r][k] = (a2[r][k] - Y[r][k]) / 2 * a2[r][k] * (1 - a2[r][k]); /* BP1 */
        }
        for (size_t j = 0; j < 3; j++) { /* BP2 */
            double s = d2[r][0] * W2[j * 2 + 0] + d2[r][1] * W2[j * 2 + 1];
            d1[r][j] = s * a1[r][j] * (1 - a1[r][j]);
        }
    }
    cr_assert(ag_allclose(AG_F64, 6, ag_data(taps[0].z), z1, 1e-12, 1e-14, NULL));
    cr_assert(ag_allclose(AG_F64, 6, ag_data(taps[0].a), a1, 1e-12, 1e-14, NULL));
    cr_assert(ag_allclose(AG_F64, 4, ag_data(taps[1].z), z2, 1e-12, 1e-14, NULL));
    cr_assert(ag_allclose(AG_F64, 4, ag_grad(taps[1].z), d2, 1e-12, 1e-14, NULL), "BP1");
    cr_assert(ag_allclose(AG_F64, 6, ag_grad(taps[0].z), d1, 1e-12, 1e-14, NULL), "BP2");
    for (size_t j = 0; j < 3; j++) { /* BP3, BP4 for layer 1 */
        cr_expect_float_eq(ag_get_grad(p[1].tensor, j), d1[0][j] + d1[1][j], 1e-14);
        for (size_t i = 0; i < 2; i++)
            cr_expect_float_eq(ag_get_grad(p[0].tensor, i * 3 + j),
                               X[0][i] * d1[0][j] + X[1][i] * d1[1][j], 1e-14);
    }
    for (size_t k = 0; k < 2; k++) /* BP4 for layer 2: a1ᵀ δ2 */
        for (size_t j = 0; j < 3; j++)
            cr_expect_float_eq(ag_get_grad(p[2].tensor, j * 2 + k),
                               a1[0][j] * d2[0][k] + a1[1][j] * d2[1][k], 1e-14);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    nn_mlp_free(net);
}

/* Runs f on a fresh tape state and checks the tape's exact status and message. */
#define EXPECT_TAPE_ERROR(t, call, status, msg)                                         \
    do {                                                                                \
        ag_tape_reset(t);                                                               \
        cr_expect_null(call, #call);                                                    \
        cr_expect_eq(ag_tape_status(t), status, "%s: %s", #call, ag_tape_error(t));     \
        cr_expect_str_eq(ag_tape_error(t), msg, #call);                                 \
    } while (0)

Test(nn_mlp, forward_errors_name_the_layer_and_what_it_expects)
{
    size_t sizes[] = {3, 4, 2};
    nn_mlp *net = make(AG_F32, 2, sizes, NULL, NN_INIT_NORMAL, 1);
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_zeros(AG_F32, AG_SHAPE(5, 4));
    ag_tensor *x64 = ag_zeros(AG_F64, AG_SHAPE(5, 3));
    ag_tensor *v = ag_zeros(AG_F32, AG_SHAPE(3));
    ag_tensor *r4 = ag_zeros(AG_F32, AG_SHAPE(2, 2, 5, 3));
    ag_tensor *w4 = ag_zeros(AG_F32, AG_SHAPE(2, 2, 5, 4));
    ag_tensor *s0 = ag_scalar(AG_F32, 1);
    ag_tensor *ok = ag_zeros(AG_F32, AG_SHAPE(5, 3));
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, x, NULL, 0), AG_ERR_SHAPE,
                      "nn_mlp_forward: layer 0 expects 3 inputs, x is [5,4]");
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, x64, NULL, 0), AG_ERR_DTYPE,
                      "nn_mlp_forward: the model is f32, x is f64 (convert with ag_cast)");
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, s0, NULL, 0), AG_ERR_SHAPE,
                      "nn_mlp_forward: x is a scalar; layer 0 expects [m, 3] (a batch of m rows "
                      "of 3 inputs)");
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, w4, NULL, 0), AG_ERR_SHAPE,
                      "nn_mlp_forward: layer 0 expects 3 inputs, x is [2,2,5,4]");
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, NULL, NULL, 0), AG_ERR_NULL,
                      "nn_mlp_forward: x is NULL");
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(NULL, t, ok, NULL, 0), AG_ERR_NULL,
                      "nn_mlp_forward: the model is NULL");
    /* a short taps array is refused before anything is written into it */
    nn_tap taps[3] = {{NULL, NULL}, {(ag_tensor *)&taps, (ag_tensor *)&taps}, {NULL, NULL}};
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, ok, taps, 1), AG_ERR_VALUE,
                      "nn_mlp_forward: n_taps is 1, the model has 2 layers (taps needs one "
                      "nn_tap per layer)");
    cr_expect_eq(taps[1].z, (ag_tensor *)&taps, "taps[1] untouched");
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, ok, taps, 0), AG_ERR_VALUE,
                      "nn_mlp_forward: n_taps is 0, the model has 2 layers (taps needs one "
                      "nn_tap per layer)");
    ag_tape_reset(t);
    cr_expect_not_null(nn_mlp_forward(net, t, ok, taps, 3), "a longer array is fine");
    cr_expect_not_null(taps[1].z);
    cr_expect_null(taps[2].z, "entries past the layers are left alone");
    cr_expect_not_null(nn_mlp_forward(net, t, ok, NULL, 7), "n_taps is ignored without taps");
    /* a row [n_in] and batches [.., m, n_in] work, as ag_matmul's operands */
    ag_tensor *y = nn_mlp_forward(net, t, v, NULL, 0);
    cr_assert_not_null(y, "[n_in]: %s", ag_tape_error(t));
    cr_expect(ag_tensor_rank(y) == 1 && ag_tensor_shape(y)[0] == 2);
    y = nn_mlp_forward(net, t, r4, NULL, 0);
    cr_assert_not_null(y, "[2,2,5,n_in]: %s", ag_tape_error(t));
    cr_expect(ag_tensor_rank(y) == 4 && ag_tensor_shape(y)[2] == 5 && ag_tensor_shape(y)[3] == 2);
    /* handles the engine would refuse are refused under the layer's name */
    ag_tensor *stale = ag_scale(t, ok, 2);
    cr_assert_not_null(stale);
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, stale, NULL, 0), AG_ERR_STATE,
                      "nn_mlp_forward: x is a stale handle: an op made it before the tape's last "
                      "reset (op results live until ag_tape_reset)");
    /* the first error stays: a later bad call does not replace it */
    EXPECT_TAPE_ERROR(t, nn_mlp_forward(net, t, x, NULL, 0), AG_ERR_SHAPE,
                      "nn_mlp_forward: layer 0 expects 3 inputs, x is [5,4]");
    cr_expect_null(nn_mlp_forward(net, t, x64, NULL, 0));
    cr_expect_str_eq(ag_tape_error(t), "nn_mlp_forward: layer 0 expects 3 inputs, x is [5,4]");
    ag_tensor *all[] = {x, x64, v, r4, w4, s0, ok};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ag_tensor_free(all[i]);
    ag_tape_free(t);
    nn_mlp_free(net);
}

Test(nn_mlp, dense_errors_name_the_layer_shapes)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_zeros(AG_F64, AG_SHAPE(5, 3));
    ag_tensor *W = ag_zeros(AG_F64, AG_SHAPE(4, 2));
    ag_tensor *W1 = ag_zeros(AG_F64, AG_SHAPE(4));
    ag_tensor *b = ag_zeros(AG_F64, AG_SHAPE(2));
    ag_tensor *b3 = ag_zeros(AG_F64, AG_SHAPE(3));
    ag_tensor *b12 = ag_zeros(AG_F64, AG_SHAPE(1, 2));
    ag_tensor *x32 = ag_zeros(AG_F32, AG_SHAPE(5, 4));
    ag_tensor *b32 = ag_zeros(AG_F32, AG_SHAPE(2));
    ag_tensor *x4 = ag_zeros(AG_F64, AG_SHAPE(5, 4));
    nn_tap tap = {x, x};
    EXPECT_TAPE_ERROR(t, nn_dense(t, x, W, b, NN_RELU, 0, &tap), AG_ERR_SHAPE,
                      "nn_dense: W is [4,2], so x must be [m, 4]; x is [5,3]");
    cr_expect(tap.z == NULL && tap.a == NULL, "the tap is cleared on failure");
    cr_expect_eq(ag_tape_size(t), 0, "nothing recorded");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x4, W1, NULL, NN_RELU, 0, NULL), AG_ERR_SHAPE,
                      "nn_dense: W is [4]; it must be [n_in, n_out]");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x4, W, b3, NN_RELU, 0, NULL), AG_ERR_SHAPE,
                      "nn_dense: W is [4,2], so b must be [2]; b is [3]");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x4, W, b12, NN_RELU, 0, NULL), AG_ERR_SHAPE,
                      "nn_dense: W is [4,2], so b must be [2]; b is [1,2]");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x32, W, b, NN_RELU, 0, NULL), AG_ERR_DTYPE,
                      "nn_dense: W is f64, x is f32 (convert with ag_cast)");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x4, W, b32, NN_RELU, 0, NULL), AG_ERR_DTYPE,
                      "nn_dense: W is f64, b is f32 (convert with ag_cast)");
    EXPECT_TAPE_ERROR(t, nn_dense(t, NULL, W, b, NN_RELU, 0, NULL), AG_ERR_NULL,
                      "nn_dense: x is NULL");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x4, NULL, b, NN_RELU, 0, NULL), AG_ERR_NULL,
                      "nn_dense: W is NULL");
    EXPECT_TAPE_ERROR(t, nn_dense(t, x4, W, b, (nn_act)99, 0, NULL), AG_ERR_VALUE,
                      "nn_dense: 99 is not an activation");
    ag_tape *other = ag_tape_new();
    ag_tensor *foreign = ag_scale(other, x4, 1);
    cr_assert_not_null(foreign);
    EXPECT_TAPE_ERROR(t, nn_dense(t, foreign, W, b, NN_RELU, 0, NULL), AG_ERR_STATE,
                      "nn_dense: x was made on another tape");
    ag_tape_free(other);
    ag_tape_reset(t);
    ag_tensor *a = nn_dense(t, x4, W, b, NN_TANH, 0, &tap);
    cr_assert_not_null(a, "%s", ag_tape_error(t));
    cr_expect(tap.z && tap.a == a);
    ag_tape_free(t);
    ag_tensor *all[] = {x, W, W1, b, b3, b12, x32, b32, x4};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ag_tensor_free(all[i]);
}

Test(nn_mlp, dense_activate_and_loss_helpers)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(1, 2), (double[]){1, -2});
    ag_tensor *W = ag_from_data(AG_F64, AG_SHAPE(2, 1), (double[]){3, 0.5});
    nn_tap tap;
    ag_tensor *a = nn_dense(t, x, W, NULL, NN_RELU, 0, &tap);
    cr_assert_not_null(a);
    cr_expect_eq(ag_item(tap.z), 2.0, "no bias: z = x W");
    cr_expect_eq(ag_item(a), 2.0);
    cr_expect_eq(nn_activate(t, x, NN_IDENTITY, 0), x);
    cr_expect_null(nn_activate(t, x, (nn_act)99, 0));
    cr_expect_eq(ag_tape_status(t), AG_ERR_VALUE);
    cr_expect(strstr(ag_tape_error(t), "nn_activate: 99") != NULL, "%s", ag_tape_error(t));
    ag_tape_reset(t);
    cr_expect_float_eq(ag_get(nn_activate(t, x, NN_LEAKY_RELU, 0.1), 1), -0.2, 1e-15);
    ag_tensor *y = ag_from_data(AG_F64, AG_SHAPE(1, 2), (double[]){0.5, 0});
    ag_tensor *p = ag_from_data(AG_F64, AG_SHAPE(1, 2), (double[]){0.25, 0.5});
    cr_expect_float_eq(ag_item(nn_loss(t, NN_COST_QUADRATIC, p, y)), (0.0625 + 0.25) / 2, 1e-15);
    cr_expect_float_eq(ag_item(nn_loss(t, NN_COST_MSE, p, y)), (0.0625 + 0.25) / 2, 1e-15);
    cr_expect_float_eq(ag_item(nn_loss(t, NN_COST_BCE, p, y)),
                       -(0.5 * log(0.25) + 0.5 * log(0.75) + log(0.5)) / 2, 1e-12);
    cr_expect_float_eq(ag_item(nn_loss(t, NN_COST_BCE_LOGITS, x, y)),
                       (-(0.5 * log(sigm(1)) + 0.5 * log(1 - sigm(1))) - log(1 - sigm(-2))) / 2,
                       1e-12);
    ag_tensor *c = ag_from_data(AG_F64, AG_SHAPE(1), (double[]){1});
    cr_expect_float_eq(ag_item(nn_loss(t, NN_COST_CROSS_ENTROPY, x, c)),
                       -(-2 - log(exp(1) + exp(-2))), 1e-12);
    cr_expect_null(nn_loss(t, (nn_cost)77, p, y));
    cr_expect_eq(ag_tape_status(t), AG_ERR_VALUE);
    cr_expect(strstr(ag_tape_error(t), "nn_loss: 77") != NULL, "%s", ag_tape_error(t));
    cr_expect_str_eq(nn_act_name(NN_TANH), "tanh");
    cr_expect_str_eq(nn_act_name((nn_act)12), "?");
    ag_tape_free(t);
    ag_tensor *all[] = {x, W, y, p, c};
    for (size_t i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
}

Test(nn_mlp, print_names_the_layers_and_parameters)
{
    size_t sizes[] = {2, 3, 1};
    nn_act acts[] = {NN_SIGMOID, NN_TANH};
    nn_mlp *net = make(AG_F64, 2, sizes, acts, NN_INIT_HE, 1);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_expect_eq(nn_mlp_print(net, f), AG_OK);
    rewind(f);
    char buf[512] = {0};
    cr_assert_gt(fread(buf, 1, sizeof buf - 1, f), 0);
    cr_expect_str_eq(buf, "mlp 2-3-1 (sigmoid, tanh) f64, 13 parameters\n"
                          "  W1 [2,3]\n  b1 [3]\n  W2 [3,1]\n  b2 [1]\n");
    fclose(f);
    cr_expect_eq(nn_mlp_print(NULL, stdout), AG_ERR_NULL);
    cr_expect_eq(nn_mlp_print(net, NULL), AG_ERR_NULL);
    nn_mlp_free(net);
}

/* Failing each allocation in turn: a clean NOMEM and no leak each time. */
Test(nn_mlp, every_allocation_failure_is_clean)
{
    size_t sizes[] = {4, 5, 3, 2};
    nn_spec spec = {.n_layers = 3, .sizes = sizes, .dtype = AG_F32, .seed = 1};
    size_t k;
    for (k = 1; k < 100; k++) {
        test_alloc a;
        test_alloc_install(&a, k);
        nn_mlp *net = NULL;
        nn_error e;
        ag_status s = nn_mlp_new(&spec, &net, &e);
        bool failed = a.failed;
        nn_mlp_free(net);
        test_alloc_remove();
        cr_expect_eq(a.live_bytes, 0, "leak after failing allocation %zu", k);
        if (!failed) {
            cr_expect_eq(s, AG_OK);
            break;
        }
        cr_expect_eq(s, AG_ERR_NOMEM, "allocation %zu: %s", k, e.msg);
        cr_expect_null(net);
        cr_expect(strstr(e.msg, "out of memory"), "%s", e.msg);
    }
    cr_expect_gt(k, 4, "the model needs several allocations (struct, block, views)");
    cr_expect_lt(k, 100);
}
