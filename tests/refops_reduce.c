/* refops_reduce.c: the reference runner's reductions and losses of the second op set (tests/data/ops-more.txt): sum_axes, mean_axes, min_axis, prod_axis, var_axis, logsumexp, norm, layer_norm, nll_loss, huber_loss; and argmax, argmin, dropout (hand-derived cases in ops-extra.txt). */
#include "refcase.h"

AXIS_KEEP(min_axis) AXIS_KEEP(prod_axis) AXIS_KEEP(var_axis) AXIS_KEEP(logsumexp)
AXIS_KEEP(argmax) AXIS_KEEP(argmin)

/* keepdim, then the axes */
#define AXES(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { \
        long keep, ax; \
        int axes[REF_MAX_ATTRS]; \
        (void)dt; \
        if (l->nattrs < 1 || !ref_int_attr(l, 0, &keep)) \
            return NULL; \
        for (size_t i = 1; i < l->nattrs; i++) { \
            if (!ref_int_attr(l, i, &ax)) \
                return NULL; \
            axes[i - 1] = (int)ax; \
        } \
        return ag_##fn(t, x[0], axes, l->nattrs - 1, keep != 0); \
    }
AXES(sum_axes) AXES(mean_axes)

static ag_tensor *run_norm(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs ? NULL : ag_norm(t, x[0]);
}

static ag_tensor *run_layer_norm(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs != 1 ? NULL : ag_layer_norm(t, x[0], l->attrs[0]);
}

static ag_tensor *run_nll_loss(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs ? NULL : ag_nll_loss(t, x[0], x[1]);
}

static ag_tensor *run_huber_loss(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs != 1 ? NULL : ag_huber_loss(t, x[0], x[1], l->attrs[0]);
}

/* p, training (0 or 1), and optionally the seed of the mask's generator */
static ag_tensor *run_dropout(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    long training, seed = 0;
    (void)dt;
    if (l->nattrs < 2 || l->nattrs > 3 || !ref_int_attr(l, 1, &training) ||
        (l->nattrs == 3 && !ref_int_attr(l, 2, &seed)))
        return NULL;
    ag_rng rng;
    ag_rng_seed(&rng, (uint64_t)seed);
    return ag_dropout(t, x[0], l->attrs[0], training != 0, &rng);
}

const ref_op ref_ops_reduce[] = {
    {"sum_axes", "sum_axes", 1, run_sum_axes}, {"mean_axes", "mean_axes", 1, run_mean_axes},
    {"min_axis", "min_axis", 1, run_min_axis}, {"prod_axis", "prod_axis", 1, run_prod_axis},
    {"var_axis", "var_axis", 1, run_var_axis}, {"logsumexp", "logsumexp", 1, run_logsumexp},
    {"norm", "norm", 1, run_norm}, {"layer_norm", "layer_norm", 1, run_layer_norm},
    {"nll_loss", "nll_loss", 2, run_nll_loss}, {"huber_loss", "huber_loss", 2, run_huber_loss},
    {"argmax", "argmax", 1, run_argmax}, {"argmin", "argmin", 1, run_argmin},
    {"dropout", "dropout", 1, run_dropout},
    {NULL, NULL, 0, NULL},
};
