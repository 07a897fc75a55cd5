/* refcase.h: reads reference-case files (tests/data/FORMAT.md) and runs
 * them on the engine. Shared by refcheck and the tests. */
#ifndef REFCASE_H
#define REFCASE_H

#include "autograd.h"

#define REF_NAME_MAX 64
#define REF_MAX_ARGS 3
#define REF_MAX_ATTRS 8

typedef enum { REF_INPUT, REF_CONST, REF_STEP, REF_VALUE, REF_GRAD, REF_DIR, REF_HVP } ref_kind;

typedef struct {
    ref_kind kind;
    char name[REF_NAME_MAX];
    size_t rank, shape[AG_MAX_RANK];
    size_t count;        /* values */
    double *values;
    char op[REF_NAME_MAX];                  /* steps */
    size_t nargs, nattrs;
    char args[REF_MAX_ARGS][REF_NAME_MAX];
    double attrs[REF_MAX_ATTRS];
    int line;
} ref_line;

typedef struct {
    char name[REF_NAME_MAX];
    ref_line *lines;
    size_t n;
} ref_case;

typedef struct {
    ref_case *cases;
    size_t n;
} ref_file;

/* Parses text; on error returns false with a message naming the line. */
bool ref_parse(const char *text, size_t len, ref_file *out, char *err, size_t errcap);
void ref_free(ref_file *f);

typedef struct {
    bool passed;
    char what[128];      /* the worst element: "grad t1[3]" or an error */
    double got, want;
} ref_result;

/* An op of the files: its name there, the engine op it runs (its name in
 * autograd/ops/list.h), its argument count, and how to run it on t with
 * the step's attributes (NULL, with or without an error on t, for
 * attributes that do not fit). dt is the dtype the case runs in. */
typedef ag_tensor *(*ref_run_fn)(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt);
typedef struct {
    const char *name, *engine;
    size_t nargs;
    ref_run_fn run;
} ref_op;

/* One table per op family (tests/refops_*.c), each ending with an entry
 * whose name is NULL. */
extern const ref_op ref_ops_core[], ref_ops_math[], ref_ops_shape[], ref_ops_reduce[];

/* Attribute i as an integer (false if absent or not one). */
bool ref_int_attr(const ref_line *l, size_t i, long *out);
/* Attributes from..end as a shape of non-negative integers. */
bool ref_shape_attrs(const ref_line *l, size_t from, size_t *shape, size_t *rank);

/* Runner functions run_NAME for the ag_NAME ops of a common signature:
 * PLAIN1/PLAIN2 (one or two tensors, no attributes), SCALAR1 (a tensor
 * and a number), AXIS1 (an axis), AXIS_KEEP (an axis and keepdim). */
#define PLAIN1(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { (void)dt; return l->nattrs ? NULL : ag_##fn(t, x[0]); }
#define PLAIN2(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { (void)dt; return l->nattrs ? NULL : ag_##fn(t, x[0], x[1]); }
#define SCALAR1(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { (void)dt; return l->nattrs != 1 ? NULL : ag_##fn(t, x[0], l->attrs[0]); }
#define AXIS1(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { \
        long ax; \
        (void)dt; \
        return l->nattrs == 1 && ref_int_attr(l, 0, &ax) ? ag_##fn(t, x[0], (int)ax) : NULL; \
    }
#define AXIS_KEEP(fn) \
    static ag_tensor *run_##fn(ag_tape *t, ag_tensor *const *x, const ref_line *l, ag_dtype dt) \
    { \
        long ax, keep; \
        (void)dt; \
        if (l->nattrs != 2 || !ref_int_attr(l, 0, &ax) || !ref_int_attr(l, 1, &keep)) \
            return NULL; \
        return ag_##fn(t, x[0], (int)ax, keep != 0); \
    }

/* The engine op (its name in autograd/ops/list.h) that a file's op runs,
 * or NULL for an op the runner does not know. */
const char *ref_engine_op(const char *op);
/* The i-th op name the runner knows, NULL past the last. */
const char *ref_op_at(size_t i);

/* How a case's first-order gradients are computed: by ag_backward's
 * fused kernels, or by ag_gradients with AG_CREATE_GRAPH (each op's
 * backward written in the engine's ops). A case with dir and hvp lines
 * also checks its Hessian-vector products, in either mode: the gradients
 * are taken with AG_CREATE_GRAPH, s = Σ_i sum(grad_i · dir_i) is formed and
 * ag_backward(s) leaves each input's hvp in its grad. */
typedef enum { REF_FUSED, REF_GRAPH } ref_mode;

/* Runs one case in dtype dt; tol is the relative+absolute tolerance. */
ref_result ref_run(const ref_case *c, ag_dtype dt, double tol);
ref_result ref_run_mode(const ref_case *c, ag_dtype dt, double tol, ref_mode mode);

#endif
