/* xor: the smallest problem a network without a hidden layer cannot learn
 * (XOR is not linearly separable), learned by a 2-2-1 network: a tanh
 * hidden layer of two units and a sigmoid output, binary cross-entropy,
 * Adam, full batch.
 *
 * Usage: xor [--seed N] [--steps N] */
#include "common.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    double seed = 3, steps = 2000;
    for (int i = 1; i < argc; i++)
        if (!flag_number(argc, argv, &i, "--seed", &seed) &&
            !flag_number(argc, argv, &i, "--steps", &steps)) {
            fprintf(stderr, "usage: %s [--seed N] [--steps N]\n", argv[0]);
            return 2;
        }
    ag_tensor *x = ag_from_data(AG_F64, AG_SHAPE(4, 2), (const double[]){0, 0, 0, 1, 1, 0, 1, 1});
    ag_tensor *y = ag_from_data(AG_F64, AG_SHAPE(4, 1), (const double[]){0, 1, 1, 0});
    size_t sizes[] = {2, 2, 1};
    nn_act acts[] = {NN_TANH, NN_SIGMOID};
    nn_spec spec = {.n_layers = 2, .sizes = sizes, .acts = acts, .dtype = AG_F64,
                    .init = NN_INIT_XAVIER, .seed = (uint64_t)seed};
    nn_optim_config cfg = nn_adam(0.05);
    nn_error err = {0};
    nn_mlp *net = NULL;
    nn_optim *opt = NULL;
    ag_tape *t = ag_tape_new();
    if (!x || !y || !t || nn_mlp_new(&spec, &net, &err) ||
        optim_for(net, &cfg, &opt, &err)) {
        fprintf(stderr, "xor: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    puts("XOR with a 2-2-1 network (tanh hidden layer, sigmoid output, BCE, Adam 0.05)");
    double loss = 0;
    for (size_t step = 1; step <= (size_t)steps; step++) {
        if (nn_mlp_train_step(net, t, opt, NN_COST_BCE, x, y, &loss, &err) != AG_OK) {
            fprintf(stderr, "xor: %s\n", err.msg);
            return 1;
        }
        if (step == 1 || step % 500 == 0)
            printf("step %5zu  loss %.6f\n", step, loss);
    }
    ag_tape_set_recording(t, false);
    ag_tensor *out = nn_mlp_forward(net, t, x, NULL, 0);
    int wrong = 0;
    for (size_t i = 0; out && i < 4; i++) {
        double p = ag_get(out, i);
        wrong += (p >= 0.5) != (ag_get(y, i) >= 0.5);
        printf("  %g xor %g = %g   network: %.4f\n", ag_get(x, 2 * i), ag_get(x, 2 * i + 1),
               ag_get(y, i), p);
    }
    printf(wrong ? "%d of 4 wrong\n" : "all 4 right\n", wrong);
    nn_optim_free(opt);
    nn_mlp_free(net);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return wrong || !out ? 1 : 0;
}
