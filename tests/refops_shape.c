/* refops_shape.c: the reference runner's shape and index ops of the second op set (tests/data/ops-more.txt): permute, expand, index_select, gather, matmul_nd. */
#include "refcase.h"

const ref_op ref_ops_shape[] = {
    {NULL, NULL, 0, NULL},
};
