/* refops_shape.c: the reference runner's shape and index ops of the second op set (tests/data/ops-more.txt): permute, expand, index_select, gather, matmul_nd. */
#include "refcase.h"

static ag_tensor *run_permute(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    int axes[AG_MAX_RANK];
    (void)dt;
    if (l->nattrs > AG_MAX_RANK)
        return NULL;
    for (size_t i = 0; i < l->nattrs; i++) {
        long a;
        if (!ref_int_attr(l, i, &a))
            return NULL;
        axes[i] = (int)a;
    }
    return ag_permute(t, x[0], axes, l->nattrs);
}

static ag_tensor *run_expand(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    size_t shape[AG_MAX_RANK], rank;
    (void)dt;
    return ref_shape_attrs(l, 0, shape, &rank) ? ag_expand(t, x[0], shape, rank) : NULL;
}

#define INDEX_AXIS(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { \
        long ax; \
        (void)dt; \
        return l->nattrs == 1 && ref_int_attr(l, 0, &ax) ? ag_##fn(t, x[0], (int)ax, x[1]) : NULL; \
    }
INDEX_AXIS(index_select) INDEX_AXIS(gather)

static ag_tensor *run_matmul_nd(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs ? NULL : ag_matmul(t, x[0], x[1]);
}

const ref_op ref_ops_shape[] = {
    {"permute", "permute", 1, run_permute}, {"expand", "expand", 1, run_expand},
    {"index_select", "index_select", 2, run_index_select}, {"gather", "gather", 2, run_gather},
    {"matmul_nd", "matmul", 2, run_matmul_nd},
    {NULL, NULL, 0, NULL},
};
