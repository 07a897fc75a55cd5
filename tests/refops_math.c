/* refops_math.c: the reference runner's elementwise ops of the second op set (tests/data/ops-more.txt): trigonometric, hyperbolic, activations, clamp, maximum/minimum, atan2, pow_tensor, where. */
#include "refcase.h"

const ref_op ref_ops_math[] = {
    {NULL, NULL, 0, NULL},
};
