/* tensor.c: leaf tensors (created and freed by the caller) and accessors. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *ag_dtype_name(ag_dtype dt)
{
    switch (dt) {
    case AG_F32: return "f32";
    case AG_F64: return "f64";
    }
    return "?";
}

size_t ag_dtype_size(ag_dtype dt)
{
    switch (dt) {
    case AG_F32: return sizeof(float);
    case AG_F64: return sizeof(double);
    }
    return 0;
}

/* Why the calling thread's last leaf constructor failed (ag_last_error):
 * per thread, as errno, so that two threads making leaves never mix up
 * their reasons. */
static _Thread_local ag_status last_status;
static _Thread_local char last_msg[AG_MSG_MAX];

void ag__leaf_error(ag_status s, const char *fmt, ...)
{
    last_status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
}

static void leaf_ok(void)
{
    last_status = AG_OK;
    last_msg[0] = '\0';
}

ag_status ag_last_status(void) { return last_status; }
const char *ag_last_error(void) { return last_msg; }

/* Checks a leaf's dtype and shape; its element count into *numel. */
static bool leaf_shape_ok(const char *fn, ag_dtype dt, const size_t *shape, size_t rank,
                          size_t *numel)
{
    size_t bytes;
    if (ag_dtype_size(dt) == 0) {
        ag__leaf_error(AG_ERR_DTYPE, "%s: dtype %d is not AG_F32 or AG_F64", fn, (int)dt);
        return false;
    }
    if (rank > AG_MAX_RANK) {
        ag__leaf_error(AG_ERR_SHAPE, "%s: rank %zu is more than %d", fn, rank, AG_MAX_RANK);
        return false;
    }
    if (rank > 0 && !shape) {
        ag__leaf_error(AG_ERR_NULL, "%s: shape is NULL with rank %zu", fn, rank);
        return false;
    }
    if (!ag__numel(shape, rank, numel) || !ag__mul_size(*numel, ag_dtype_size(dt), &bytes)) {
        ag__leaf_error(AG_ERR_OVERFLOW, "%s: the shape's byte size overflows", fn);
        return false;
    }
    return true;
}

/* The struct, then (for owned leaves) the data, in one allocation. */
static ag_tensor *leaf_new(const char *fn, ag_dtype dt, const size_t *shape, size_t rank,
                           bool with_data)
{
    size_t numel;
    if (!leaf_shape_ok(fn, dt, shape, rank, &numel))
        return NULL;
    size_t bytes = numel * ag_dtype_size(dt);
    size_t head = (sizeof(ag_tensor) + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN;
    size_t total = head;
    if (with_data && bytes > SIZE_MAX - head) {
        ag__leaf_error(AG_ERR_OVERFLOW, "%s: %zu bytes do not fit in memory", fn, bytes);
        return NULL;
    }
    if (with_data)
        total += bytes;
    ag_tensor *x = ag__alloc(total);
    if (!x) {
        ag__leaf_error(AG_ERR_NOMEM, "%s: out of memory allocating %zu bytes", fn, total);
        return NULL;
    }
    memset(x, 0, sizeof *x);
    x->dtype = dt;
    x->origin = with_data ? AG_LEAF_OWNED : AG_LEAF_VIEW;
    x->rank = rank;
    if (rank)
        memcpy(x->shape, shape, rank * sizeof *shape);
    x->numel = numel;
    x->alloc_size = total;
    x->data = with_data ? (char *)x + head : NULL;
    atomic_init(&x->refs, 1); /* the caller's */
    atomic_init(&x->mark, 0);
    leaf_ok();
    return x;
}

static void set_all(ag_tensor *x, double v)
{
    if (x->dtype == AG_F32)
        for (size_t i = 0; i < x->numel; i++)
            ((float *)x->data)[i] = (float)v;
    else
        for (size_t i = 0; i < x->numel; i++)
            ((double *)x->data)[i] = v;
}

/* A leaf filled with value (fn names the public constructor). */
static ag_tensor *filled(const char *fn, ag_dtype dt, const size_t *shape, size_t rank,
                         double value)
{
    ag_tensor *x = leaf_new(fn, dt, shape, rank, true);
    if (x)
        set_all(x, value);
    return x;
}

ag_tensor *ag_full(ag_dtype dt, const size_t *shape, size_t rank, double value)
{
    return filled("ag_full", dt, shape, rank, value);
}

ag_tensor *ag_zeros(ag_dtype dt, const size_t *shape, size_t rank)
{
    return filled("ag_zeros", dt, shape, rank, 0.0);
}

ag_tensor *ag_ones(ag_dtype dt, const size_t *shape, size_t rank)
{
    return filled("ag_ones", dt, shape, rank, 1.0);
}

ag_tensor *ag_scalar(ag_dtype dt, double value)
{
    return filled("ag_scalar", dt, NULL, 0, value);
}

ag_tensor *ag_from_data(ag_dtype dt, const size_t *shape, size_t rank, const void *data)
{
    if (!data) {
        ag__leaf_error(AG_ERR_NULL, "ag_from_data: data is NULL");
        return NULL;
    }
    ag_tensor *x = leaf_new("ag_from_data", dt, shape, rank, true);
    if (x && x->numel)
        memcpy(x->data, data, x->numel * ag_dtype_size(dt));
    return x;
}

ag_tensor *ag_view(ag_dtype dt, const size_t *shape, size_t rank, void *data, void *grad)
{
    if (!data) {
        ag__leaf_error(AG_ERR_NULL, "ag_view: data is NULL");
        return NULL;
    }
    ag_tensor *x = leaf_new("ag_view", dt, shape, rank, false);
    if (x) {
        x->data = data;
        x->grad = grad;
    }
    return x;
}

/* A leaf filled in row-major order with offset + scale * draw(rng). */
static ag_tensor *random_leaf(const char *fn, ag_dtype dt, const size_t *shape, size_t rank, ag_rng *rng,
                              double (*draw)(ag_rng *), double offset, double scale)
{
    if (!rng) {
        ag__leaf_error(AG_ERR_NULL, "%s: rng is NULL", fn);
        return NULL;
    }
    ag_tensor *x = leaf_new(fn, dt, shape, rank, true);
    for (size_t i = 0; x && i < x->numel; i++) {
        double v = offset + scale * draw(rng);
        if (dt == AG_F32)
            ((float *)x->data)[i] = (float)v;
        else
            ((double *)x->data)[i] = v;
    }
    return x;
}

ag_tensor *ag_rand_uniform(ag_dtype dt, const size_t *shape, size_t rank,
                           double lo, double hi, ag_rng *rng)
{
    return random_leaf("ag_rand_uniform", dt, shape, rank, rng, ag_rng_uniform, lo, hi - lo);
}

ag_tensor *ag_rand_normal(ag_dtype dt, const size_t *shape, size_t rank,
                          double mean, double std, ag_rng *rng)
{
    return random_leaf("ag_rand_normal", dt, shape, rank, rng, ag_rng_normal, mean, std);
}

ag_tensor *ag_leaf_view(ag_tensor *base, size_t offset, const size_t *shape, size_t rank)
{
    static const char fn[] = "ag_leaf_view";
    if (!base) {
        ag__leaf_error(AG_ERR_NULL, "%s: base is NULL", fn);
        return NULL;
    }
    if (base->origin == AG_TAPE) {
        ag__leaf_error(AG_ERR_STATE, "%s: base is an op result (use ag_reshape on its tape)", fn);
        return NULL;
    }
    if (base->freed) {
        ag__leaf_error(AG_ERR_STATE, "%s: base was freed (ag_tensor_free)", fn);
        return NULL;
    }
    size_t numel;
    if (!leaf_shape_ok(fn, base->dtype, shape, rank, &numel))
        return NULL;
    if (offset > base->numel || numel > base->numel - offset) {
        char s[AG_SHAPE_BUF];
        ag__leaf_error(AG_ERR_SHAPE, "%s: %zu elements from offset %zu do not fit in base %s "
                       "(%zu elements)", fn, numel, offset, ag__shape_str(base, s, sizeof s),
                       base->numel);
        return NULL;
    }
    ag_tensor *x = leaf_new(fn, base->dtype, shape, rank, false);
    if (!x)
        return NULL;
    size_t at = offset * ag_dtype_size(base->dtype);
    x->data = (char *)base->data + at;
    x->grad = base->grad ? (char *)base->grad + at : NULL;
    x->requires_grad = base->requires_grad;
    x->base = base;
    atomic_fetch_add_explicit(&base->refs, 1, memory_order_relaxed);
    return x;
}

void ag__leaf_release(ag_tensor *x)
{
    while (x && atomic_fetch_sub_explicit(&x->refs, 1, memory_order_acq_rel) == 1) {
        ag_tensor *base = x->base;
        if (x->grad_owned)
            ag__free(x->grad, x->numel * ag_dtype_size(x->dtype));
        ag__free(x, x->alloc_size);
        x = base; /* a view held its base */
    }
}

void ag_tensor_free(ag_tensor *x)
{
    if (!x || x->origin == AG_TAPE || x->freed)
        return;
    x->freed = true;
    ag__leaf_release(x); /* a tape still using x keeps it until its reset */
}

ag_status ag_set_requires_grad(ag_tensor *x, bool on)
{
    if (!x)
        return AG_ERR_NULL;
    if (x->origin == AG_TAPE)
        return AG_ERR_STATE;
    if (on && !x->grad && x->numel) {
        x->grad = ag__calloc(x->numel * ag_dtype_size(x->dtype));
        if (!x->grad)
            return AG_ERR_NOMEM;
        x->grad_owned = true;
    }
    x->requires_grad = on;
    return AG_OK;
}

bool ag_requires_grad(const ag_tensor *x) { return x && x->requires_grad; }
ag_dtype ag_tensor_dtype(const ag_tensor *x) { return x ? x->dtype : AG_F32; }
size_t ag_tensor_rank(const ag_tensor *x) { return x ? x->rank : 0; }
const size_t *ag_tensor_shape(const ag_tensor *x) { return x ? x->shape : NULL; }
size_t ag_tensor_numel(const ag_tensor *x) { return x ? x->numel : 0; }
void *ag_data(const ag_tensor *x) { return x ? x->data : NULL; }
void *ag_grad(const ag_tensor *x) { return x ? x->grad : NULL; }

double ag_get(const ag_tensor *x, size_t i)
{
    return x && i < x->numel ? ag__elem(x->dtype, x->data, i) : NAN;
}

double ag_get_grad(const ag_tensor *x, size_t i)
{
    return x && x->grad && i < x->numel ? ag__elem(x->dtype, x->grad, i) : NAN;
}

double ag_item(const ag_tensor *x)
{
    return ag_get(x, 0);
}

void ag_zero_grad(ag_tensor *x)
{
    if (x && x->grad)
        memset(x->grad, 0, x->numel * ag_dtype_size(x->dtype));
}

void ag_tensor_set_name(ag_tensor *x, const char *name)
{
    if (!x)
        return;
    size_t n = name ? strlen(name) : 0;
    if (n >= AG_NAME_MAX)
        n = AG_NAME_MAX - 1;
    if (n)
        memcpy(x->name, name, n);
    x->name[n] = '\0';
}

const char *ag_tensor_name(const ag_tensor *x)
{
    return x ? x->name : "";
}

const char *ag_shape_str(const ag_tensor *x, char *buf, size_t cap)
{
    return ag__shape_str(x, buf, cap);
}

const char *ag__shape_str(const ag_tensor *x, char *buf, size_t cap)
{
    size_t used = 0;
    int n = snprintf(buf, cap, "[");
    used = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; x && i < x->rank && used < cap; i++) {
        n = snprintf(buf + used, cap - used, i ? ",%zu" : "%zu", x->shape[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
    return buf;
}

/* Prints axis `dim` of the block at `offset`, numpy style: nested rows
 * indented under their bracket, the middle of long axes elided ("..."). */
static void print_block(const ag_tensor *x, const void *p, FILE *out, size_t dim, size_t offset,
                        size_t stride)
{
    enum { EDGE = 3 };
    size_t n = x->shape[dim], inner = n ? stride / n : 0;
    bool last = dim + 1 == x->rank;
    fputc('[', out);
    for (size_t i = 0; i < n; i++) {
        if (n > 2 * EDGE + 1 && i == EDGE) {
            fprintf(out, last ? "..., " : "...,\n%*s", (int)(dim + 1), "");
            i = n - EDGE - 1;
            continue;
        }
        if (last)
            fprintf(out, "%.6g", ag__elem(x->dtype, p, offset + i));
        else
            print_block(x, p, out, dim + 1, offset + i * inner, inner);
        if (i + 1 < n)
            fprintf(out, last ? ", " : ",\n%*s", (int)(dim + 1), "");
    }
    fputc(']', out);
}

static void print_values(const ag_tensor *x, const void *p, FILE *out)
{
    if (x->rank == 0)
        fprintf(out, "%.6g", ag__elem(x->dtype, p, 0));
    else
        print_block(x, p, out, 0, 0, x->numel);
    fputc('\n', out);
}

ag_status ag_tensor_print(const ag_tensor *x, FILE *out)
{
    if (!x || !out)
        return AG_ERR_NULL;
    char shape[AG_SHAPE_BUF];
    fprintf(out, "tensor%s%s %s %s%s", x->name[0] ? " " : "", x->name,
            ag__shape_str(x, shape, sizeof shape), ag_dtype_name(x->dtype), x->rank ? "\n" : " ");
    print_values(x, x->data, out);
    if (x->grad) {
        fputs(x->rank ? "grad\n" : "grad ", out);
        print_values(x, x->grad, out);
    }
    return ferror(out) ? AG_ERR_IO : AG_OK;
}
