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
    }
    ag_tape_fail(t, AG_ERR_VALUE, "nn_activate: %d is not an activation", (int)act);
    return NULL;
}

ag_tensor *nn_dense(ag_tape *t, ag_tensor *x, ag_tensor *W, ag_tensor *b,
                    nn_act act, double slope, nn_tap *tap)
{
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
