/* refops_shape.c: the reference runner's shape and index ops of the second op set (tests/data/ops-more.txt): permute, expand, index_select, gather, matmul_nd; and the internal index_add and scatter_add (tests/data/ops-extra.txt). */
#include "refcase.h"

#include "internal.h" /* index_add and scatter_add are internal ops */

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

/* index_add and scatter_add (the recorded backwards of index_select and
 * gather): step y = OP g i axis d0 d1 .., the target shape d0 d1 .. */
#define INDEX_TARGET(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { \
        long ax; \
        size_t shape[AG_MAX_RANK], rank; \
        (void)dt; \
        if (!ref_int_attr(l, 0, &ax) || !ref_shape_attrs(l, 1, shape, &rank)) \
            return NULL; \
        return ag__apply(t, &ag__op_##fn, x[0], x[1], \
                         &(ag_attr){.axis = (int)ax, .shape = shape, .rank = rank}); \
    }
INDEX_TARGET(index_add) INDEX_TARGET(scatter_add)

static ag_tensor *run_matmul_nd(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt)
{
    (void)dt;
    return l->nattrs ? NULL : ag_matmul(t, x[0], x[1]);
}

const ref_op ref_ops_shape[] = {
    {"permute", "permute", 1, run_permute}, {"expand", "expand", 1, run_expand},
    {"index_select", "index_select", 2, run_index_select}, {"gather", "gather", 2, run_gather},
    {"matmul_nd", "matmul", 2, run_matmul_nd},
    {"index_add", "index_add", 2, run_index_add}, {"scatter_add", "scatter_add", 2, run_scatter_add},
    {NULL, NULL, 0, NULL},
};
