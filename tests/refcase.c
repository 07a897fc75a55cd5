/* refcase.c: the reference-case reader and runner. */
#include "refcase.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ reading */

typedef struct {
    const char *p, *end;
    int line;
    char *err;
    size_t errcap;
} reader;

static bool fail(reader *r, const char *msg)
{
    snprintf(r->err, r->errcap, "line %d: %s", r->line, msg);
    return false;
}

/* Next whitespace-separated word of the current line into buf. */
static bool word(reader *r, const char *line_end, char *buf, size_t cap)
{
    while (r->p < line_end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
    size_t n = 0;
    while (r->p < line_end && *r->p != ' ' && *r->p != '\t' && *r->p != '\r') {
        if (n + 1 >= cap)
            return false;
        buf[n++] = *r->p++;
    }
    buf[n] = '\0';
    return n > 0;
}

static bool number(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return *s && *end == '\0';
}

static bool count(const char *s, size_t *out)
{
    double v;
    if (!number(s, &v) || v < 0 || v > 1e9 || v != floor(v))
        return false;
    *out = (size_t)v;
    return true;
}

/* "NDIM D0 .. : V..." of input, const, value and grad lines. */
static bool tensor_line(reader *r, const char *le, ref_line *l)
{
    char w[REF_NAME_MAX];
    if (!word(r, le, w, sizeof w) || !count(w, &l->rank) || l->rank > AG_MAX_RANK)
        return fail(r, "expected a rank 0..8");
    size_t numel = 1;
    for (size_t d = 0; d < l->rank; d++) {
        if (!word(r, le, w, sizeof w) || !count(w, &l->shape[d]))
            return fail(r, "expected a dimension");
        numel *= l->shape[d];
        if (numel > 100000000)
            return fail(r, "tensor too large");
    }
    if (!word(r, le, w, sizeof w) || strcmp(w, ":") != 0)
        return fail(r, "expected ':' after the shape");
    /* Grown as numbers arrive, so a shape that claims much but brings
     * little costs little. */
    size_t cap = 0;
    for (l->count = 0; l->count < numel; l->count++) {
        if (!word(r, le, w, sizeof w))
            return fail(r, "expected as many numbers as the shape holds");
        if (l->count == cap) {
            cap = cap ? 2 * cap : 16;
            double *v = realloc(l->values, cap * sizeof *v);
            if (!v)
                return fail(r, "out of memory");
            l->values = v;
        }
        if (!number(w, &l->values[l->count]))
            return fail(r, "expected as many numbers as the shape holds");
    }
    if (!l->values && !(l->values = malloc(sizeof *l->values)))
        return fail(r, "out of memory");
    if (word(r, le, w, sizeof w))
        return fail(r, "more numbers than the shape holds");
    return true;
}

/* "NAME = OP ARG... ATTR..." of step lines: args are names, attrs numbers. */
static bool step_line(reader *r, const char *le, ref_line *l)
{
    char w[REF_NAME_MAX];
    if (!word(r, le, w, sizeof w) || strcmp(w, "=") != 0)
        return fail(r, "expected '=' after the step's name");
    if (!word(r, le, l->op, sizeof l->op))
        return fail(r, "expected an op");
    while (word(r, le, w, sizeof w)) {
        double v;
        if (number(w, &v)) {
            if (l->nattrs == REF_MAX_ATTRS)
                return fail(r, "too many attributes");
            l->attrs[l->nattrs++] = v;
        } else {
            if (l->nargs == REF_MAX_ARGS || l->nattrs)
                return fail(r, "too many arguments, or an argument after a number");
            strcpy(l->args[l->nargs++], w);
        }
    }
    return true;
}

static bool push(void **items, size_t *n, size_t size)
{
    void *p = realloc(*items, (*n + 1) * size);
    if (!p)
        return false;
    memset((char *)p + *n * size, 0, size);
    *items = p;
    (*n)++;
    return true;
}

static bool parse_line(reader *r, const char *le, ref_file *f, ref_case **cur)
{
    char w[REF_NAME_MAX];
    if (!word(r, le, w, sizeof w) || w[0] == '#')
        return true;
    if (strcmp(w, "case") == 0) {
        if (*cur)
            return fail(r, "'case' before the previous case's 'end'");
        if (!push((void **)&f->cases, &f->n, sizeof *f->cases))
            return fail(r, "out of memory");
        *cur = &f->cases[f->n - 1];
        if (!word(r, le, (*cur)->name, sizeof (*cur)->name))
            return fail(r, "expected a case name");
        return true;
    }
    if (!*cur)
        return fail(r, "a record outside 'case' ... 'end'");
    if (strcmp(w, "end") == 0) {
        *cur = NULL;
        return true;
    }
    static const char *kinds[] = {"input", "const", "step", "value", "grad", "dir", "hvp"};
    for (int k = 0; k < 7; k++) {
        if (strcmp(w, kinds[k]) != 0)
            continue;
        if (!push((void **)&(*cur)->lines, &(*cur)->n, sizeof(ref_line)))
            return fail(r, "out of memory");
        ref_line *l = &(*cur)->lines[(*cur)->n - 1];
        l->kind = (ref_kind)k;
        l->line = r->line;
        if (!word(r, le, l->name, sizeof l->name))
            return fail(r, "expected a name");
        return k == REF_STEP ? step_line(r, le, l) : tensor_line(r, le, l);
    }
    return fail(r, "unknown record");
}

bool ref_parse(const char *text, size_t len, ref_file *out, char *err, size_t errcap)
{
    reader r = {text, text + len, 0, err, errcap};
    ref_case *cur = NULL;
    memset(out, 0, sizeof *out);
    while (r.p < r.end) {
        const char *le = memchr(r.p, '\n', (size_t)(r.end - r.p));
        if (!le)
            le = r.end;
        r.line++;
        if (!parse_line(&r, le, out, &cur)) {
            ref_free(out);
            return false;
        }
        r.p = le < r.end ? le + 1 : le;
    }
    if (cur) {
        fail(&r, "the last case has no 'end'");
        ref_free(out);
        return false;
    }
    return true;
}

void ref_free(ref_file *f)
{
    for (size_t i = 0; i < f->n; i++) {
        for (size_t j = 0; j < f->cases[i].n; j++)
            free(f->cases[i].lines[j].values);
        free(f->cases[i].lines);
    }
    free(f->cases);
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------ running */

typedef struct {
    const char *name;
    ag_tensor *x;
} binding;

typedef struct {
    binding *b;
    size_t n;
    ag_tape *tape;
    ag_dtype dt;
    ref_result res;
} env;

static ag_tensor *lookup(env *e, const char *name)
{
    for (size_t i = e->n; i-- > 0;)
        if (strcmp(e->b[i].name, name) == 0)
            return e->b[i].x;
    return NULL;
}

static ag_tensor *make_leaf(env *e, const ref_line *l)
{
    size_t es = ag_dtype_size(e->dt);
    void *buf = malloc((l->count ? l->count : 1) * es);
    if (!buf)
        return NULL;
    for (size_t i = 0; i < l->count; i++) {
        if (e->dt == AG_F32)
            ((float *)buf)[i] = (float)l->values[i];
        else
            ((double *)buf)[i] = l->values[i];
    }
    ag_tensor *x = ag_from_data(e->dt, l->shape, l->rank, buf);
    free(buf);
    if (x && l->kind == REF_INPUT && ag_set_requires_grad(x, true) != AG_OK) {
        ag_tensor_free(x);
        x = NULL;
    }
    return x;
}

bool ref_int_attr(const ref_line *l, size_t i, long *out)
{
    if (i >= l->nattrs || !(fabs(l->attrs[i]) < 1e9) || l->attrs[i] != floor(l->attrs[i]))
        return false;
    *out = (long)l->attrs[i];
    return true;
}

bool ref_shape_attrs(const ref_line *l, size_t from, size_t *shape, size_t *rank)
{
    if (l->nattrs < from || l->nattrs - from > AG_MAX_RANK)
        return false;
    *rank = l->nattrs - from;
    for (size_t i = 0; i < *rank; i++) {
        long d;
        if (!ref_int_attr(l, from + i, &d) || d < 0)
            return false;
        shape[i] = (size_t)d;
    }
    return true;
}

/* Every family's table; each ends with an entry whose name is NULL. */
static const ref_op *const tables[] = {ref_ops_core, ref_ops_math, ref_ops_shape, ref_ops_reduce};

static const ref_op *find_op(const char *name)
{
    for (size_t k = 0; k < sizeof tables / sizeof tables[0]; k++)
        for (const ref_op *op = tables[k]; op->name; op++)
            if (strcmp(op->name, name) == 0)
                return op;
    return NULL;
}

const char *ref_op_at(size_t i)
{
    for (size_t k = 0; k < sizeof tables / sizeof tables[0]; k++)
        for (const ref_op *op = tables[k]; op->name; op++)
            if (i-- == 0)
                return op->name;
    return NULL;
}

const char *ref_engine_op(const char *name)
{
    const ref_op *op = find_op(name);
    return op ? op->engine : NULL;
}

static ag_tensor *run_step(env *e, const ref_line *l)
{
    const ref_op *op = find_op(l->op);
    if (!op || l->nargs != op->nargs) {
        snprintf(e->res.what, sizeof e->res.what, "line %d: unknown op or wrong arity: %s", l->line, l->op);
        return NULL;
    }
    ag_tensor *x[REF_MAX_ARGS] = {NULL};
    for (size_t i = 0; i < op->nargs; i++)
        if (!(x[i] = lookup(e, l->args[i]))) {
            snprintf(e->res.what, sizeof e->res.what, "line %d: unknown argument", l->line);
            return NULL;
        }
    ag_tensor *y = op->run(e->tape, x, l, e->dt);
    if (!y)
        snprintf(e->res.what, sizeof e->res.what, "line %d: %s: %s", l->line, l->op,
                 ag_tape_status(e->tape) ? ag_tape_error(e->tape) : "bad arguments or attributes");
    return y;
}

/* Compares n values; keeps the worst mismatch in e->res. */
static void compare(env *e, const ref_line *l, const ag_tensor *x, bool grad, double tol)
{
    if (!x || ag_tensor_numel(x) != l->count || (grad && !ag_grad(x))) {
        e->res.passed = false;
        snprintf(e->res.what, sizeof e->res.what, "%s %s: missing or wrong size",
                 grad ? "grad" : "value", l->name);
        return;
    }
    for (size_t i = 0; i < l->count; i++) {
        double got = grad ? ag_get_grad(x, i) : ag_get(x, i), want = l->values[i];
        if (!(fabs(got - want) <= tol + tol * fabs(want)) && e->res.passed) {
            e->res.passed = false;
            e->res.got = got;
            e->res.want = want;
            snprintf(e->res.what, sizeof e->res.what, "%s %s[%zu]", grad ? "grad" : "value", l->name, i);
        }
    }
}

static bool bind(env *e, const char *name, ag_tensor *x)
{
    binding *b = realloc(e->b, (e->n + 1) * sizeof *b);
    if (!b)
        return false;
    e->b = b;
    e->b[e->n++] = (binding){name, x};
    return true;
}

static void fail_with(env *e, const char *what, const char *why)
{
    e->res.passed = false;
    snprintf(e->res.what, sizeof e->res.what, "%s: %s", what, why);
}

/* The forward: leaves, steps and the value; returns the final step. */
static ag_tensor *run_forward(env *e, const ref_case *c, double tol)
{
    ag_tensor *last = NULL;
    for (size_t i = 0; i < c->n && e->res.passed; i++) {
        const ref_line *l = &c->lines[i];
        if (l->kind == REF_INPUT || l->kind == REF_CONST || l->kind == REF_DIR) {
            ag_tensor *x = l->kind == REF_DIR ? NULL : make_leaf(e, l);
            if (l->kind != REF_DIR && (!x || !bind(e, l->name, x))) {
                ag_tensor_free(x);
                snprintf(e->res.what, sizeof e->res.what, "line %d: cannot make tensor", l->line);
                e->res.passed = false;
            }
        } else if (l->kind == REF_STEP) {
            last = run_step(e, l);
            if (!last || !bind(e, l->name, last))
                e->res.passed = false;
        } else if (l->kind == REF_VALUE) {
            compare(e, l, lookup(e, l->name), false, tol);
        }
    }
    return last;
}

/* The case's inputs (its input lines, in order), at most REF_MAX_INPUTS. */
#define REF_MAX_INPUTS 16
static size_t case_inputs(env *e, const ref_case *c, ag_tensor **x, const ref_line **lines)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n && n < REF_MAX_INPUTS; i++)
        if (c->lines[i].kind == REF_INPUT) {
            lines[n] = &c->lines[i];
            x[n++] = lookup(e, c->lines[i].name);
        }
    return n;
}

/* The line of kind k for input name, or NULL. */
static const ref_line *line_for(const ref_case *c, ref_kind k, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->lines[i].kind == k && strcmp(c->lines[i].name, name) == 0)
            return &c->lines[i];
    return NULL;
}

/* A direction line as a constant leaf of the run's dtype (bound, so freed). */
static ag_tensor *direction(env *e, const ref_line *l)
{
    ref_line as_const = *l;
    as_const.kind = REF_CONST;
    ag_tensor *d = make_leaf(e, &as_const);
    if (d && !bind(e, "", d)) {
        ag_tensor_free(d);
        d = NULL;
    }
    return d;
}

/* Σ_i sum(g_i · dir_i) backward: each input's grad is then its hvp. */
static void check_hvp(env *e, const ref_case *c, size_t n, ag_tensor **x, const ref_line **in,
                      ag_tensor **g, double tol)
{
    ag_tape *t = e->tape;
    ag_tensor *s = NULL;
    for (size_t i = 0; i < n && e->res.passed; i++) {
        const ref_line *dl = line_for(c, REF_DIR, in[i]->name);
        ag_tensor *d = dl ? direction(e, dl) : NULL;
        if (!d)
            {
            fail_with(e, in[i]->name, "no dir line, or it cannot be made");
            return;
        }
        ag_tensor *term = ag_sum(t, ag_mul(t, g[i], d));
        s = s ? ag_add(t, s, term) : term;
    }
    for (size_t i = 0; i < n; i++)
        ag_zero_grad(x[i]);
    if (!s || !ag_requires_grad(s)) /* a linear function: every hvp is 0 */
        return;
    if (ag_backward(t, s) != AG_OK)
        {
            fail_with(e, "hvp backward", ag_tape_error(t));
            return;
        }
    for (size_t i = 0; i < n && e->res.passed; i++) {
        const ref_line *hl = line_for(c, REF_HVP, in[i]->name);
        if (hl)
            compare(e, hl, x[i], true, tol);
    }
}

static void run_lines(env *e, const ref_case *c, double tol, ref_mode mode)
{
    ag_tensor *last = run_forward(e, c, tol), *x[REF_MAX_INPUTS], *g[REF_MAX_INPUTS];
    const ref_line *in[REF_MAX_INPUTS];
    if (!e->res.passed || !last)
        return;
    size_t n = case_inputs(e, c, x, in);
    bool second = false;
    for (size_t i = 0; i < c->n; i++)
        second |= c->lines[i].kind == REF_DIR;
    if (mode == REF_FUSED && ag_backward(e->tape, last) != AG_OK)
        {
            fail_with(e, "backward", ag_tape_error(e->tape));
            return;
        }
    if ((mode == REF_GRAPH || second) &&
        ag_gradients(e->tape, last, n, x, g, AG_CREATE_GRAPH) != AG_OK)
        {
            fail_with(e, "ag_gradients", ag_tape_error(e->tape));
            return;
        }
    for (size_t i = 0; i < n && e->res.passed; i++) {
        const ref_line *gl = line_for(c, REF_GRAD, in[i]->name);
        if (gl)
            compare(e, gl, mode == REF_FUSED ? x[i] : g[i], mode == REF_FUSED, tol);
    }
    if (second && e->res.passed)
        check_hvp(e, c, n, x, in, g, tol);
}

ref_result ref_run_mode(const ref_case *c, ag_dtype dt, double tol, ref_mode mode)
{
    env e = {.dt = dt, .tape = ag_tape_new(), .res = {.passed = true}};
    if (!e.tape) {
        e.res.passed = false;
        snprintf(e.res.what, sizeof e.res.what, "out of memory");
        return e.res;
    }
    run_lines(&e, c, tol, mode);
    for (size_t i = 0; i < e.n; i++)
        ag_tensor_free(e.b[i].x); /* leaves only: op results are the tape's */
    free(e.b);
    ag_tape_free(e.tape);
    return e.res;
}

ref_result ref_run(const ref_case *c, ag_dtype dt, double tol)
{
    return ref_run_mode(c, dt, tol, REF_FUSED);
}
