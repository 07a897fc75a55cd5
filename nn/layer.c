/* layer.c: activations, the dense layer and the costs, as compositions of
 * engine ops, so their gradients come from the engine's op rules. */
#include "nn_internal.h"

const char *nn_act_name(nn_act act)
{
    switch (act) {
    case NN_SIGMOID: return "sigmoid";
    case NN_TANH: return "tanh";
    case NN_RELU: return "relu";
    case NN_LEAKY_RELU: return "leaky_relu";
    case NN_IDENTITY: return "identity";
    case NN_GELU: return "gelu";
    case NN_SILU: return "silu";
    case NN_ELU: return "elu";
    }
    return "?";
}

ag_tensor *nn_activate(ag_tape *t, ag_tensor *z, nn_act act, double slope)
{
    switch (act) {
    case NN_SIGMOID: return ag_sigmoid(t, z);
    case NN_TANH: return ag_tanh(t, z);
    case NN_RELU: return ag_relu(t, z);
    case NN_LEAKY_RELU: return ag_leaky_relu(t, z, slope);
    case NN_IDENTITY: return z;
    case NN_GELU: return ag_gelu(t, z);
    case NN_SILU: return ag_silu(t, z);
    case NN_ELU: return ag_elu(t, z, 1.0);
    }
    ag_tape_fail(t, AG_ERR_VALUE, "nn_activate: %d is not an activation", (int)act);
    return NULL;
}

bool nn__act_valid(nn_act a)
{
    return (unsigned)a < NN_ACT_COUNT;
}

/* Live handles x [.., n_in], W [n_in, n_out], b [n_out] of one dtype, and a
 * known act: checked before anything is recorded, so the message speaks of
 * the layer (the matmul's would name its operands only). */
static bool dense_args_ok(ag_tape *t, ag_tensor *x, ag_tensor *W, ag_tensor *b, nn_act act)
{
    const char *fn = "nn_dense";
    char xs[NN_SHAPE_BUF], ws[NN_SHAPE_BUF], bs[NN_SHAPE_BUF];
    if (ag_tape_check_input(t, x, fn, "x") != AG_OK ||
        ag_tape_check_input(t, W, fn, "W") != AG_OK ||
        (b && ag_tape_check_input(t, b, fn, "b") != AG_OK)) /* NULL, stale, freed, foreign */
        return false;
    if (ag_tensor_rank(W) != 2) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: W is %s; it must be [n_in, n_out]", fn,
                     ag_shape_str(W, ws, sizeof ws));
        return false;
    }
    ag_dtype dt = ag_tensor_dtype(W);
    const ag_tensor *other = ag_tensor_dtype(x) != dt ? x : b && ag_tensor_dtype(b) != dt ? b : NULL;
    if (other) {
        ag_tape_fail(t, AG_ERR_DTYPE, "%s: W is %s, %s is %s (convert with ag_cast)", fn,
                     ag_dtype_name(dt), other == x ? "x" : "b", ag_dtype_name(ag_tensor_dtype(other)));
        return false;
    }
    size_t n_in = ag_tensor_shape(W)[0], n_out = ag_tensor_shape(W)[1], rank = ag_tensor_rank(x);
    if (rank == 0 || ag_tensor_shape(x)[rank - 1] != n_in) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: W is %s, so x must be [m, %zu]; x is %s", fn,
                     ag_shape_str(W, ws, sizeof ws), n_in, ag_shape_str(x, xs, sizeof xs));
        return false;
    }
    if (b && (ag_tensor_rank(b) != 1 || ag_tensor_shape(b)[0] != n_out)) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: W is %s, so b must be [%zu]; b is %s", fn,
                     ag_shape_str(W, ws, sizeof ws), n_out, ag_shape_str(b, bs, sizeof bs));
        return false;
    }
    if (!nn__act_valid(act)) {
        ag_tape_fail(t, AG_ERR_VALUE, "%s: %d is not an activation", fn, (int)act);
        return false;
    }
    return true;
}

ag_tensor *nn_dense(ag_tape *t, ag_tensor *x, ag_tensor *W, ag_tensor *b,
                    nn_act act, double slope, nn_tap *tap)
{
    if (tap)
        *tap = (nn_tap){NULL, NULL};
    if (!dense_args_ok(t, x, W, b, act))
        return NULL;
    ag_tensor *z = ag_matmul(t, x, W); /* [m, n_in]·[n_in, n_out] */
    if (b)
        z = ag_add(t, z, b); /* b [n_out] broadcasts over the m rows */
    ag_tensor *a = nn_activate(t, z, act, slope);
    if (tap) {
        ag_retain_grad(z); /* so delta = dC/dz can be read after backward */
        tap->z = z;
        tap->a = a;
    }
    return a;
}

ag_tensor *nn_loss(ag_tape *t, nn_cost cost, ag_tensor *a, ag_tensor *y)
{
    switch (cost) {
    case NN_COST_QUADRATIC: return ag_quadratic_cost(t, a, y);
    case NN_COST_MSE: return ag_mse(t, a, y);
    case NN_COST_BCE: return ag_bce(t, a, y);
    case NN_COST_BCE_LOGITS: return ag_bce_with_logits(t, a, y);
    case NN_COST_CROSS_ENTROPY: return ag_cross_entropy(t, a, y);
    }
    ag_tape_fail(t, AG_ERR_VALUE, "nn_loss: %d is not a cost", (int)cost);
    return NULL;
}
