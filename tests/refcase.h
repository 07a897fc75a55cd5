/* refcase.h: reads reference-case files (tests/data/FORMAT.md) and runs
 * them on the engine. Shared by refcheck and the tests. */
#ifndef REFCASE_H
#define REFCASE_H

#include "autograd.h"

#define REF_NAME_MAX 64
#define REF_MAX_ARGS 2
#define REF_MAX_ATTRS 8

typedef enum { REF_INPUT, REF_CONST, REF_STEP, REF_VALUE, REF_GRAD } ref_kind;

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

/* The engine op (its name in autograd/ops/list.h) that a file's op runs,
 * or NULL for an op the runner does not know. */
const char *ref_engine_op(const char *op);
/* The i-th op name the runner knows, NULL past the last. */
const char *ref_op_at(size_t i);

/* Runs one case in dtype dt; tol is the relative+absolute tolerance. */
ref_result ref_run(const ref_case *c, ag_dtype dt, double tol);

#endif
