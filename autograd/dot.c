/* dot.c: Graphviz export of a recorded tape. Nodes are numbered in the
 * order the tape first meets them, so a program gives the same file on
 * every run (addresses would not). */
#include "internal.h"

#include <string.h>

/* Tensor -> node number, open addressing over a power-of-two table. */
typedef struct {
    const ag_tensor **keys;
    size_t *ids;
    size_t cap, count;
} node_map;

static size_t slot_of(const node_map *m, const ag_tensor *x)
{
    size_t h = (size_t)((uintptr_t)x >> 4) * (size_t)0x9E3779B97F4A7C15u;
    size_t i = h & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != x)
        i = (i + 1) & (m->cap - 1);
    return i;
}

/* A name or op, escaped for a quoted DOT string: quotes and backslashes
 * escaped, a newline as \n, other control bytes dropped. */
static void put_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c >= 0x20 && c != 0x7f)
            fputc(c, out);
    }
}

/* x's node number, writing its node the first time it is met. */
static size_t node(node_map *m, FILE *out, const ag_tensor *x, const char *op)
{
    size_t i = slot_of(m, x);
    if (m->keys[i])
        return m->ids[i];
    m->keys[i] = x;
    m->ids[i] = m->count++;
    char shape[AG_SHAPE_BUF];
    fprintf(out, "  n%zu [label=\"", m->ids[i]);
    put_escaped(out, x->name);
    fprintf(out, "%s%s\\n%s %s\"%s%s];\n", x->name[0] ? ": " : "", op,
            ag__shape_str(x, shape, sizeof shape), ag_dtype_name(x->dtype),
            x->grad ? ", peripheries=2" : "", x->origin == AG_TAPE ? "" : ", shape=box");
    return m->ids[i];
}

static const char *input_kind(const ag_tensor *x)
{
    if (x->origin == AG_TAPE)
        return "const op result"; /* made by an op that was not recorded */
    return x->requires_grad ? "param" : "const";
}

ag_status ag_tape_dot(const ag_tape *t, FILE *out)
{
    if (!t || !out)
        return AG_ERR_NULL;
    node_map m = {NULL, NULL, 16, 0};
    while (m.cap < 4 * (AG_MAX_INPUTS + 1) * t->n_recs && m.cap < SIZE_MAX / 16)
        m.cap *= 2;
    m.keys = ag__calloc(m.cap * sizeof *m.keys);
    m.ids = ag__alloc(m.cap * sizeof *m.ids);
    if (!m.keys || !m.ids) {
        ag__free(m.keys, m.cap * sizeof *m.keys);
        ag__free(m.ids, m.cap * sizeof *m.ids);
        return AG_ERR_NOMEM;
    }
    fputs("digraph tape {\n  rankdir=LR;\n  node [shape=ellipse, fontname=\"monospace\"];\n", out);
    for (size_t k = 0; k < t->n_recs; k++) {
        const ag_record *r = &t->recs[k];
        const ag_op_def *def = r->def;
        size_t in[AG_MAX_INPUTS];
        for (int i = 0; i < def->arity; i++)
            in[i] = node(&m, out, r->in[i], input_kind(r->in[i]));
        size_t id = node(&m, out, r->out, def->name);
        for (int i = 0; i < def->arity; i++)
            fprintf(out, "  n%zu -> n%zu;\n", in[i], id);
    }
    fputs("}\n", out);
    ag__free(m.keys, m.cap * sizeof *m.keys);
    ag__free(m.ids, m.cap * sizeof *m.ids);
    return ferror(out) ? AG_ERR_IO : AG_OK;
}
