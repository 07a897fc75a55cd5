/* mlp.c: the multilayer perceptron: a spec, one contiguous block holding
 * every parameter and then every gradient, and leaf views into it. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

#define NAME_MAX_LEN 24 /* "W" or "b", any size_t, NUL */

struct nn_mlp {
    ag_tensor *mem;     /* owns this struct and the arrays below */
    ag_tensor *block;   /* [P]: the P parameter values; its grad, their P grads */
    nn_spec spec;       /* sizes and acts point at the arrays below */
    size_t n_params;    /* P */
    size_t *sizes;      /* L + 1 */
    nn_act *acts;       /* L */
    nn_param *params;   /* 2L: W1, b1, W2, b2, ... */
    char (*names)[NAME_MAX_LEN];
};

static bool init_valid(nn_init i)
{
    return i == NN_INIT_NORMAL || i == NN_INIT_NORMAL_SCALED || i == NN_INIT_XAVIER ||
           i == NN_INIT_HE;
}

static ag_status check_spec(const nn_spec *s, nn_error *err)
{
    const char *fn = "nn_mlp_new";
    if (!s || !s->sizes)
        return nn__fail(err, AG_ERR_NULL, "%s: %s is NULL", fn, s ? "spec->sizes" : "spec");
    if (s->n_layers == 0 || s->n_layers > NN_MAX_LAYERS)
        return nn__fail(err, AG_ERR_VALUE, "%s: n_layers is %zu; it must be 1..%d", fn,
                        s->n_layers, NN_MAX_LAYERS);
    for (size_t i = 0; i <= s->n_layers; i++)
        if (s->sizes[i] == 0)
            return nn__fail(err, AG_ERR_VALUE, "%s: sizes[%zu] is 0", fn, i);
    for (size_t i = 0; s->acts && i < s->n_layers; i++)
        if (!nn__act_valid(s->acts[i]))
            return nn__fail(err, AG_ERR_VALUE, "%s: acts[%zu] = %d is not an nn_act", fn, i,
                            (int)s->acts[i]);
    if (ag_dtype_size(s->dtype) == 0)
        return nn__fail(err, AG_ERR_DTYPE, "%s: dtype %d is not AG_F32 or AG_F64", fn,
                        (int)s->dtype);
    if (!init_valid(s->init))
        return nn__fail(err, AG_ERR_VALUE, "%s: init %d is not an nn_init", fn, (int)s->init);
    if (!isfinite(s->leaky_slope))
        return nn__fail(err, AG_ERR_VALUE, "%s: leaky_slope %g is not finite", fn, s->leaky_slope);
    return AG_OK;
}

/* P = Σ n_in·n_out + n_out, and the block's 2P elements must fit in bytes. */
static bool count_params(const nn_spec *s, size_t *p)
{
    size_t total = 0, w, bytes;
    for (size_t l = 0; l < s->n_layers; l++) {
        if (!nn__mul(s->sizes[l], s->sizes[l + 1], &w) || w > SIZE_MAX - total ||
            s->sizes[l + 1] > SIZE_MAX - total - w)
            return false;
        total += w + s->sizes[l + 1];
    }
    *p = total;
    return nn__mul(total, 2 * ag_dtype_size(s->dtype), &bytes);
}

/* The struct and its arrays, in one allocation. */
static nn_mlp *alloc_model(size_t L, const char *fn, nn_error *err)
{
    nn__layout lay = {0};
    nn__layout_add(&lay, 1, sizeof(nn_mlp)); /* at offset 0 */
    size_t o_sizes = nn__layout_add(&lay, L + 1, sizeof(size_t));
    size_t o_acts = nn__layout_add(&lay, L, sizeof(nn_act));
    size_t o_params = nn__layout_add(&lay, 2 * L, sizeof(nn_param));
    size_t o_names = nn__layout_add(&lay, 2 * L, NAME_MAX_LEN);
    ag_tensor *mem = NULL;
    unsigned char *base = lay.overflow ? NULL : nn__mem(lay.size, &mem);
    if (!base) {
        nn__fail(err, AG_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    nn_mlp *net = (nn_mlp *)base;
    net->mem = mem;
    net->sizes = (size_t *)(base + o_sizes);
    net->acts = (nn_act *)(base + o_acts);
    net->params = (nn_param *)(base + o_params);
    net->names = (char(*)[NAME_MAX_LEN])(base + o_names);
    return net;
}

/* The block's slice at element off, and its grad's, as a leaf that holds
 * the block: a tape still using a parameter after nn_mlp_free keeps the
 * memory it points at. */
static ag_tensor *slice_view(nn_mlp *net, size_t off, const size_t *shape, size_t rank)
{
    return ag_leaf_view(net->block, off, shape, rank);
}

static ag_status make_views(nn_mlp *net, const char *fn, nn_error *err)
{
    size_t off = 0;
    for (size_t l = 0; l < net->spec.n_layers; l++) {
        size_t n_in = net->sizes[l], n_out = net->sizes[l + 1];
        nn_param *w = &net->params[2 * l], *b = w + 1;
        snprintf(net->names[2 * l], NAME_MAX_LEN, "W%zu", l + 1);
        snprintf(net->names[2 * l + 1], NAME_MAX_LEN, "b%zu", l + 1);
        w->name = net->names[2 * l];
        b->name = net->names[2 * l + 1];
        w->tensor = slice_view(net, off, (size_t[]){n_in, n_out}, 2);
        off += n_in * n_out;
        b->tensor = slice_view(net, off, &net->sizes[l + 1], 1);
        off += n_out;
        if (!w->tensor || !b->tensor)
            return nn__fail(err, AG_ERR_NOMEM, "%s: out of memory", fn);
        ag_tensor_set_name(w->tensor, w->name);
        ag_tensor_set_name(b->tensor, b->name);
    }
    return AG_OK;
}

/* The model of a checked spec with every parameter 0; fn names the caller
 * in messages. */
static ag_status make_model(const nn_spec *spec, const char *fn, nn_mlp **out, nn_error *err)
{
    size_t P;
    if (!count_params(spec, &P))
        return nn__fail(err, AG_ERR_OVERFLOW, "%s: the parameter count overflows", fn);
    nn_mlp *net = alloc_model(spec->n_layers, fn, err);
    if (!net)
        return AG_ERR_NOMEM;
    size_t L = spec->n_layers;
    memcpy(net->sizes, spec->sizes, (L + 1) * sizeof *net->sizes);
    for (size_t l = 0; l < L; l++)
        net->acts[l] = spec->acts ? spec->acts[l] : NN_SIGMOID;
    net->spec = *spec;
    net->spec.sizes = net->sizes;
    net->spec.acts = net->acts;
    net->spec.leaky_slope = spec->leaky_slope != 0 ? spec->leaky_slope : 0.01;
    net->n_params = P;
    ag_status s = AG_OK;
    net->block = ag_zeros(spec->dtype, &P, 1);
    if (!net->block || ag_set_requires_grad(net->block, true) != AG_OK)
        s = nn__fail(err, AG_ERR_NOMEM, "%s: out of memory for %zu parameters", fn, P);
    if (s == AG_OK)
        s = make_views(net, fn, err);
    if (s != AG_OK) {
        nn_mlp_free(net);
        return s;
    }
    *out = net;
    return AG_OK;
}

ag_status nn_mlp_new(const nn_spec *spec, nn_mlp **out, nn_error *err)
{
    if (!out)
        return nn__fail(err, AG_ERR_NULL, "nn_mlp_new: out is NULL");
    *out = NULL;
    ag_status s = check_spec(spec, err);
    nn_mlp *net = NULL;
    if (s == AG_OK)
        s = make_model(spec, "nn_mlp_new", &net, err);
    if (s == AG_OK)
        s = nn_mlp_init(net, spec->init, spec->seed, err);
    if (s != AG_OK) {
        nn_mlp_free(net);
        return s;
    }
    *out = net;
    return nn__ok(err);
}

ag_status nn__mlp_new_zeroed(const nn_spec *spec, const char *fn, nn_mlp **out, nn_error *err)
{
    *out = NULL;
    ag_status s = check_spec(spec, err);
    if (s == AG_OK)
        s = make_model(spec, fn, out, err);
    return s == AG_OK ? nn__ok(err) : s;
}

void nn_mlp_free(nn_mlp *net)
{
    if (!net)
        return;
    for (size_t i = 0; i < 2 * net->spec.n_layers; i++)
        ag_tensor_free(net->params[i].tensor);
    ag_tensor_free(net->block);
    ag_tensor_free(net->mem); /* the struct itself: last */
}

const nn_spec *nn_mlp_spec(const nn_mlp *net) { return net ? &net->spec : NULL; }
size_t nn_mlp_param_count(const nn_mlp *net) { return net ? net->n_params : 0; }
void *nn_mlp_data(const nn_mlp *net) { return net ? ag_data(net->block) : NULL; }

void *nn_mlp_grad(const nn_mlp *net)
{
    return net ? ag_grad(net->block) : NULL;
}

const nn_param *nn_mlp_params(const nn_mlp *net, size_t *n)
{
    if (n)
        *n = net ? 2 * net->spec.n_layers : 0;
    return net ? net->params : NULL;
}

void nn_mlp_zero_grad(nn_mlp *net)
{
    if (net)
        memset(nn_mlp_grad(net), 0, net->n_params * ag_dtype_size(net->spec.dtype));
}

/* Fills n elements with scale·N(0,1), or with U(-scale, scale) if uniform. */
static void draw(ag_dtype dt, void *p, size_t n, double scale, bool uniform, ag_rng *rng)
{
    for (size_t i = 0; i < n; i++) {
        double v = uniform ? scale * (2 * ag_rng_uniform(rng) - 1) : scale * ag_rng_normal(rng);
        nn__set(dt, p, i, v);
    }
}

ag_status nn_mlp_init(nn_mlp *net, nn_init init, uint64_t seed, nn_error *err)
{
    if (!net)
        return nn__fail(err, AG_ERR_NULL, "nn_mlp_init: net is NULL");
    if (!init_valid(init))
        return nn__fail(err, AG_ERR_VALUE, "nn_mlp_init: init %d is not an nn_init", (int)init);
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    ag_dtype dt = net->spec.dtype;
    for (size_t l = 0; l < net->spec.n_layers; l++) {
        double n_in = (double)net->sizes[l], n_out = (double)net->sizes[l + 1];
        ag_tensor *W = net->params[2 * l].tensor, *b = net->params[2 * l + 1].tensor;
        size_t nw = ag_tensor_numel(W), nb = ag_tensor_numel(b);
        switch (init) {
        case NN_INIT_NORMAL: draw(dt, ag_data(W), nw, 1, false, &rng); break;
        case NN_INIT_NORMAL_SCALED: draw(dt, ag_data(W), nw, sqrt(1 / n_in), false, &rng); break;
        case NN_INIT_XAVIER: draw(dt, ag_data(W), nw, sqrt(6 / (n_in + n_out)), true, &rng); break;
        case NN_INIT_HE: draw(dt, ag_data(W), nw, sqrt(2 / n_in), false, &rng); break;
        }
        if (init == NN_INIT_NORMAL || init == NN_INIT_NORMAL_SCALED)
            draw(dt, ag_data(b), nb, 1, false, &rng);
        else /* zero biases draw nothing, so W's stream does not depend on them */
            memset(ag_data(b), 0, nb * ag_dtype_size(dt));
    }
    net->spec.init = init;
    net->spec.seed = seed;
    return nn__ok(err);
}

/* x must be a live handle of the model's dtype whose last axis holds n_in
 * inputs ([m, n_in]; a row [n_in] and batches [.., m, n_in] work as in
 * ag_matmul): checked here so the message names the layer and the width
 * the model expects, rather than the matmul's operands. */
static bool check_input(const nn_mlp *net, ag_tape *t, ag_tensor *x)
{
    const char *fn = "nn_mlp_forward";
    if (ag_tape_check_input(t, x, fn, "x") != AG_OK) /* NULL, stale, freed, another tape */
        return false;
    size_t n_in = net->sizes[0], rank = ag_tensor_rank(x);
    char xs[NN_SHAPE_BUF];
    if (ag_tensor_dtype(x) != net->spec.dtype) {
        ag_tape_fail(t, AG_ERR_DTYPE, "%s: the model is %s, x is %s (convert with ag_cast)", fn,
                     ag_dtype_name(net->spec.dtype), ag_dtype_name(ag_tensor_dtype(x)));
        return false;
    }
    if (rank == 0) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is a scalar; layer 0 expects [m, %zu] (a batch of "
                     "m rows of %zu inputs)", fn, n_in, n_in);
        return false;
    }
    if (ag_tensor_shape(x)[rank - 1] != n_in) {
        ag_tape_fail(t, AG_ERR_SHAPE, "%s: layer 0 expects %zu inputs, x is %s", fn, n_in,
                     ag_shape_str(x, xs, sizeof xs));
        return false;
    }
    return true;
}

ag_tensor *nn_mlp_forward(nn_mlp *net, ag_tape *t, ag_tensor *x, nn_tap *taps, size_t n_taps)
{
    if (!net) {
        ag_tape_fail(t, AG_ERR_NULL, "nn_mlp_forward: the model is NULL");
        return NULL;
    }
    size_t L = net->spec.n_layers;
    if (taps && n_taps < L) {
        ag_tape_fail(t, AG_ERR_VALUE, "nn_mlp_forward: n_taps is %zu, the model has %zu layers "
                     "(taps needs one nn_tap per layer)", n_taps, L);
        return NULL;
    }
    if (!check_input(net, t, x))
        return NULL;
    ag_tensor *a = x;
    for (size_t l = 0; l < L; l++)
        a = nn_dense(t, a, net->params[2 * l].tensor, net->params[2 * l + 1].tensor,
                     net->acts[l], net->spec.leaky_slope, taps ? &taps[l] : NULL);
    return a;
}

ag_status nn_mlp_print(const nn_mlp *net, FILE *out)
{
    if (!net || !out)
        return AG_ERR_NULL;
    fputs("mlp ", out);
    for (size_t l = 0; l <= net->spec.n_layers; l++)
        fprintf(out, l ? "-%zu" : "%zu", net->sizes[l]);
    for (size_t l = 0; l < net->spec.n_layers; l++)
        fprintf(out, "%s%s", l ? ", " : " (", nn_act_name(net->acts[l]));
    fprintf(out, ") %s, %zu parameters\n", ag_dtype_name(net->spec.dtype), net->n_params);
    for (size_t i = 0; i < 2 * net->spec.n_layers; i++) {
        char shape[NN_SHAPE_BUF];
        fprintf(out, "  %s %s\n", net->params[i].name,
                ag_shape_str(net->params[i].tensor, shape, sizeof shape));
    }
    return ferror(out) ? AG_ERR_IO : AG_OK;
}
