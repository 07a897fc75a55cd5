/* fuzz_refcase: the reference-case reader (tests/refcase.c) on arbitrary
 * text, then every parsed case run on the engine in f64 and f32.
 *
 * The cases are straight-line programs of engine ops, so this also drives
 * the ops with shapes, attributes and values the reader lets through. A
 * case runs only when its tensors are small; the budgeted allocator bounds
 * what the ops may build from them (a chain of concats or an outer product
 * then fails with AG_ERR_NOMEM instead of taking the machine). */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"
#include "refcase.h"

#define MAX_NUMEL 4096    /* per tensor line of a case */
#define MAX_LINES 256     /* records per case */
#define MEM_LIMIT (1u << 20)

FZ_TARGET(MEM_LIMIT)

static bool small_enough(const ref_case *c)
{
    if (c->n > MAX_LINES)
        return false;
    for (size_t i = 0; i < c->n; i++)
        if (c->lines[i].kind != REF_STEP && c->lines[i].count > MAX_NUMEL)
            return false;
    return true;
}

/* What the reader promises about a case it accepted. */
static void check_case(const ref_case *c)
{
    FZ_CHECK(memchr(c->name, '\0', sizeof c->name));
    for (size_t i = 0; i < c->n; i++) {
        const ref_line *l = &c->lines[i];
        FZ_CHECK(l->kind <= REF_HVP); /* the last ref_kind */
        FZ_CHECK(memchr(l->name, '\0', sizeof l->name));
        if (l->kind == REF_STEP) {
            FZ_CHECK(l->nargs <= REF_MAX_ARGS && l->nattrs <= REF_MAX_ATTRS);
            FZ_CHECK(memchr(l->op, '\0', sizeof l->op));
            continue;
        }
        FZ_CHECK(l->rank <= AG_MAX_RANK);
        size_t numel = 1;
        for (size_t d = 0; d < l->rank; d++)
            numel *= l->shape[d];
        FZ_CHECK(l->count == numel);
        FZ_CHECK(l->values != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_mem_begin(0);
    ref_file f;
    char err[256] = "";
    if (!ref_parse((const char *)data, size, &f, err, sizeof err)) {
        FZ_CHECK(err[0] != '\0');
        FZ_CHECK(f.n == 0 && f.cases == NULL);
        fz_mem_end();
        return 0;
    }
    for (size_t i = 0; i < f.n; i++) {
        const ref_case *c = &f.cases[i];
        check_case(c);
        if (!small_enough(c))
            continue;
        ref_result r64 = ref_run(c, AG_F64, 1e-9);
        ref_result r32 = ref_run(c, AG_F32, 1e-4);
        FZ_CHECK(memchr(r64.what, '\0', sizeof r64.what) && memchr(r32.what, '\0', sizeof r32.what));
        FZ_CHECK(fz_mem.live == 0); /* ref_run frees its tape and leaves */
    }
    ref_free(&f);
    fz_mem_end();
    return 0;
}
