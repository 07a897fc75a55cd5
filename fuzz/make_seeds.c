/* make_seeds: writes the binary seeds of the fuzz corpora into DIR:
 *   DIR/model/seed-*.nnm   small models saved by nn_mlp_save
 *   DIR/idx/seed-*         IDX image + label pairs in fuzz_idx's split format
 * Usage: make_seeds DIR (e.g. fuzz/corpus). */
#include "nn.h"

#include <stdio.h>
#include <string.h>

static int save_model(const char *dir, int k, size_t L, const size_t *sizes, const nn_act *acts,
                      ag_dtype dt, double slope)
{
    nn_spec spec = {.n_layers = L, .sizes = sizes, .acts = acts, .dtype = dt,
                    .init = NN_INIT_XAVIER, .seed = (uint64_t)k, .leaky_slope = slope};
    nn_mlp *net;
    nn_error err;
    char path[512];
    snprintf(path, sizeof path, "%s/model/seed-%d.nnm", dir, k);
    if (nn_mlp_new(&spec, &net, &err) != AG_OK || nn_mlp_save(net, path, &err) != AG_OK) {
        fprintf(stderr, "make_seeds: %s: %s\n", path, err.msg);
        return 1;
    }
    nn_mlp_free(net);
    return 0;
}

static void put_be32(unsigned char *b, unsigned v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* flags, L (images bytes, big-endian 16 bits), images, labels */
static int save_idx(const char *dir, int k, unsigned flags, unsigned n, unsigned rows,
                    unsigned cols)
{
    unsigned char buf[1024];
    size_t im = 16 + (size_t)n * rows * cols, lb = 8 + n;
    if (3 + im + lb > sizeof buf)
        return 1;
    buf[0] = (unsigned char)flags;
    buf[1] = (unsigned char)(im >> 8);
    buf[2] = (unsigned char)im;
    unsigned char *p = buf + 3;
    put_be32(p, 0x803);
    put_be32(p + 4, n);
    put_be32(p + 8, rows);
    put_be32(p + 12, cols);
    for (size_t i = 0; i < (size_t)n * rows * cols; i++)
        p[16 + i] = (unsigned char)(i * 37 % 256);
    p += im;
    put_be32(p, 0x801);
    put_be32(p + 4, n);
    for (unsigned i = 0; i < n; i++)
        p[8 + i] = (unsigned char)(i % 10);
    char path[512];
    snprintf(path, sizeof path, "%s/idx/seed-%d", dir, k);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, 3 + im + lb, f) != 3 + im + lb || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    int bad = 0;
    bad |= save_model(dir, 1, 2, (size_t[]){2, 3, 1}, (nn_act[]){NN_SIGMOID, NN_IDENTITY}, AG_F32, 0);
    bad |= save_model(dir, 2, 2, (size_t[]){4, 5, 3}, (nn_act[]){NN_RELU, NN_TANH}, AG_F64, 0);
    bad |= save_model(dir, 3, 1, (size_t[]){1, 1}, (nn_act[]){NN_LEAKY_RELU}, AG_F32, 0.2);
    bad |= save_model(dir, 4, 4, (size_t[]){3, 4, 4, 2, 2},
                      (nn_act[]){NN_SIGMOID, NN_TANH, NN_RELU, NN_LEAKY_RELU}, AG_F32, -0.5);
    bad |= save_model(dir, 5, 1, (size_t[]){8, 4}, (nn_act[]){NN_IDENTITY}, AG_F64, 0.01);
    bad |= save_idx(dir, 1, 0, 3, 2, 2);
    bad |= save_idx(dir, 2, 1, 2, 3, 1);
    bad |= save_idx(dir, 3, 0, 1, 1, 1);
    bad |= save_idx(dir, 4, 1, 10, 4, 4);
    return bad;
}
