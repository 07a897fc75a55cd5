/* expr: an arbitrary expression of three tensors, its value, its gradients,
 * and the recorded tape written as a Graphviz DOT file.
 *
 *   f(x, W, b) = mean( softplus(x·W + b) * sigmoid(x·W) )
 *
 * Usage: expr [OUT.dot]   (default expr.dot; render: dot -Tsvg expr.dot;
 *        a path starting with '-' goes after "--") */
#include "autograd.h"
#include "flags.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    const char *dot_path = "expr.dot";
    const cli_spec cli = {"expr", " [OUT.dot]",
                          "Differentiates f(x, W, b) = mean(softplus(x·W + b) * sigmoid(x·W)) and\n"
                          "writes the recorded tape to OUT.dot (default expr.dot; a path starting\n"
                          "with '-' goes after \"--\").",
                          NULL, 0, &dot_path, 1};
    parse_flags(argc, argv, &cli);
    ag_rng rng;
    ag_rng_seed(&rng, 42);
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(2, 3), (const double[]){1, -2, 0.5, 3, 0.25, -1});
    ag_tensor *W = ag_rand_normal(AG_F64, AG_SHAPE(3, 2), 0, 1, &rng);
    ag_tensor *b = ag_from_data(AG_F64, AG_SHAPE(2), (const double[]){0.1, -0.2});
    ag_tape *t = ag_tape_new();
    if (!x || !W || !b || !t || ag_set_requires_grad(x, true) || ag_set_requires_grad(W, true) ||
        ag_set_requires_grad(b, true)) {
        fprintf(stderr, "expr: out of memory\n");
        return 1;
    }
    ag_tensor_set_name(x, "x");
    ag_tensor_set_name(W, "W");
    ag_tensor_set_name(b, "b");

    ag_tensor *xW = ag_matmul(t, x, W);                         /* [2,2] */
    ag_tensor *z = ag_add(t, xW, b);                             /* b broadcast over rows */
    ag_tensor *f = ag_mean(t, ag_mul(t, ag_softplus(t, z), ag_sigmoid(t, xW)));
    ag_tensor_set_name(f, "f");
    if (ag_backward(t, f) != AG_OK) { /* one check covers the whole expression */
        fprintf(stderr, "expr: %s\n", ag_tape_error(t));
        return 1;
    }

    puts("f(x, W, b) = mean(softplus(x·W + b) * sigmoid(x·W))\n"
         "Each input with its gradient df/d(input):");
    ag_tensor_print(x, stdout);
    ag_tensor_print(W, stdout);
    ag_tensor_print(b, stdout);
    printf("f = %.17g\n", ag_item(f));
    FILE *dot = fopen(dot_path, "w");
    bool written = dot && ag_tape_dot(t, dot) == AG_OK;
    if (dot && fclose(dot) != 0)
        written = false;
    if (written)
        printf("tape (%zu records) written to %s\n", ag_tape_size(t), dot_path);
    else
        fprintf(stderr, "expr: cannot write %s\n", dot_path);

    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(W);
    ag_tensor_free(b);
    return written ? 0 : 1;
}
