/* interop_tool: the C side of check_numpy.py and scripts/torch_check.py.
 *
 *   interop_tool npy-print IN            dtype and shape, then each value (%a)
 *   interop_tool npy-copy IN OUT         nn_npy_load, then nn_npy_save
 *   interop_tool st-copy IN OUT          nn_safetensors_load, then _save
 *   interop_tool mlp-make OUT DTYPE SIZES ACTS SEED DIR
 *       a model (sizes "3,16,2", acts "tanh,identity", NN_INIT_NORMAL_SCALED)
 *       exported with nn_mlp_save_safetensors, and W1.npy, b1.npy, ... in DIR
 *   interop_tool mlp-forward MODEL X OUT  nn_mlp_load_safetensors (no spec),
 *       the output for X (.npy) into OUT (.npy)
 *
 * Exits 1 with the library's message on stderr when a call fails, 2 on
 * bad usage. */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

static int fail(const nn_error *err)
{
    fprintf(stderr, "%s\n", err->msg);
    return 1;
}

static int npy_print(const char *in)
{
    nn_error err;
    ag_tensor *x = NULL;
    if (nn_npy_load(in, &x, &err) != AG_OK)
        return fail(&err);
    printf("%s", ag_tensor_dtype(x) == AG_F32 ? "f32 " : "f64 ");
    for (size_t i = 0; i < ag_tensor_rank(x); i++)
        printf(i ? ",%zu" : "%zu", ag_tensor_shape(x)[i]);
    printf("\n");
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        printf("%a\n", ag_get(x, i));
    ag_tensor_free(x);
    return 0;
}

static int npy_copy(const char *in, const char *out)
{
    nn_error err;
    ag_tensor *x = NULL;
    int rc = nn_npy_load(in, &x, &err) == AG_OK && nn_npy_save(x, out, &err) == AG_OK ? 0 : 1;
    ag_tensor_free(x);
    return rc ? fail(&err) : 0;
}

static int st_copy(const char *in, const char *out)
{
    nn_error err;
    nn_safetensors *st = NULL;
    if (nn_safetensors_load(in, &st, &err) != AG_OK)
        return fail(&err);
    size_t n, n_meta;
    const nn_param *ts = nn_safetensors_tensors(st, &n);
    const nn_meta *meta = nn_safetensors_meta(st, &n_meta);
    ag_status s = nn_safetensors_save(out, ts, n, meta, n_meta, &err);
    nn_safetensors_free(st);
    return s == AG_OK ? 0 : fail(&err);
}

/* "3,16,2" into sizes; returns the count (0 on a bad list). */
static size_t parse_sizes(const char *list, size_t *sizes, size_t max)
{
    size_t n = 0;
    for (const char *p = list; n < max; p++) {
        char *end;
        sizes[n++] = strtoul(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0'))
            return 0;
        if (!*(p = end))
            return n;
    }
    return 0;
}

static size_t parse_acts(const char *list, nn_act *acts, size_t max)
{
    size_t n = 0;
    for (const char *p = list; n < max;) {
        size_t len = strcspn(p, ","), a = 0;
        while (a < NN_ACT_COUNT && (strlen(nn_act_name((nn_act)a)) != len ||
                                    strncmp(nn_act_name((nn_act)a), p, len) != 0))
            a++;
        if (a == NN_ACT_COUNT)
            return 0;
        acts[n++] = (nn_act)a;
        if (!p[len])
            return n;
        p += len + 1;
    }
    return 0;
}

static int mlp_make(char **argv)
{
    size_t sizes[NN_MAX_LAYERS + 1];
    nn_act acts[NN_MAX_LAYERS];
    size_t n_sizes = parse_sizes(argv[2], sizes, NN_MAX_LAYERS + 1);
    size_t n_acts = parse_acts(argv[3], acts, NN_MAX_LAYERS);
    if (n_sizes < 2 || n_acts != n_sizes - 1) {
        fprintf(stderr, "mlp-make: bad sizes '%s' or acts '%s'\n", argv[2], argv[3]);
        return 2;
    }
    nn_spec spec = {.n_layers = n_acts, .sizes = sizes, .acts = acts,
                    .dtype = strcmp(argv[1], "f32") == 0 ? AG_F32 : AG_F64,
                    .init = NN_INIT_NORMAL_SCALED, .seed = strtoull(argv[4], NULL, 10)};
    nn_error err;
    nn_mlp *net = NULL;
    if (nn_mlp_new(&spec, &net, &err) != AG_OK)
        return fail(&err);
    ag_status s = nn_mlp_save_safetensors(net, argv[0], &err);
    size_t n;
    const nn_param *ps = nn_mlp_params(net, &n);
    for (size_t i = 0; i < n && s == AG_OK; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.npy", argv[5], ps[i].name);
        s = nn_npy_save(ps[i].tensor, path, &err);
    }
    nn_mlp_free(net);
    return s == AG_OK ? 0 : fail(&err);
}

static int mlp_forward(const char *model, const char *in, const char *out)
{
    nn_error err;
    nn_mlp *net = NULL;
    ag_tensor *x = NULL;
    if (nn_mlp_load_safetensors(model, NULL, &net, &err) != AG_OK ||
        nn_npy_load(in, &x, &err) != AG_OK) {
        nn_mlp_free(net);
        return fail(&err);
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *y = t ? nn_mlp_forward(net, t, x, NULL, 0) : NULL;
    ag_status s = y ? nn_npy_save(y, out, &err) : AG_ERR_NOMEM;
    if (!y)
        fprintf(stderr, "mlp-forward: %s\n", t ? ag_tape_error(t) : "out of memory");
    else if (s != AG_OK)
        fail(&err);
    ag_tape_free(t);
    ag_tensor_free(x);
    nn_mlp_free(net);
    return s == AG_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "npy-print") == 0 && argc == 3)
        return npy_print(argv[2]);
    if (strcmp(cmd, "npy-copy") == 0 && argc == 4)
        return npy_copy(argv[2], argv[3]);
    if (strcmp(cmd, "st-copy") == 0 && argc == 4)
        return st_copy(argv[2], argv[3]);
    if (strcmp(cmd, "mlp-make") == 0 && argc == 8)
        return mlp_make(argv + 2);
    if (strcmp(cmd, "mlp-forward") == 0 && argc == 5)
        return mlp_forward(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: interop_tool npy-print IN | npy-copy IN OUT | st-copy IN OUT |\n"
                    "       mlp-make OUT DTYPE SIZES ACTS SEED DIR | mlp-forward MODEL X OUT\n");
    return 2;
}
