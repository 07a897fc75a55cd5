/* test_ops_table.c: every op of autograd/ops/list.h is whole (a name, an
 * arity, a shape rule, a forward, a backward and its recorded form) and has
 * at least one reference case, so an op added without one of its pieces
 * fails here. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* the op table: this test checks the engine's own list */
#include "refcase.h"

Test(ops_table, every_op_has_every_piece)
{
    for (size_t i = 0; i < AG_OP_COUNT; i++) {
        const ag_op_def *d = ag_op_table[i];
        cr_assert_not_null(d, "op %zu has no definition", i);
        cr_assert(d->name && d->name[0], "op %zu has no name", i);
        cr_assert(d->arity >= 1 && d->arity <= AG_MAX_INPUTS, "ag_%s: arity %d", d->name, d->arity);
        cr_assert_not_null(d->shape, "ag_%s has no shape rule", d->name);
        cr_assert_not_null(d->forward, "ag_%s has no forward", d->name);
        cr_assert_not_null(d->backward, "ag_%s has no backward", d->name);
        cr_assert_not_null(d->grad_graph, "ag_%s has no recorded backward (grad_graph)", d->name);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(ag_op_table[j]->name, d->name, "two ops are named %s", d->name);
    }
}

/* Marks the engine ops the steps of one reference file run. */
static void mark_file(const char *path, bool *seen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return; /* a file not adopted yet covers nothing */
    static char text[1 << 24];
    size_t n = fread(text, 1, sizeof text, f);
    fclose(f);
    ref_file rf;
    char err[256];
    cr_assert(ref_parse(text, n, &rf, err, sizeof err), "%s: %s", path, err);
    for (size_t c = 0; c < rf.n; c++)
        for (size_t k = 0; k < rf.cases[c].n; k++) {
            const ref_line *l = &rf.cases[c].lines[k];
            const char *engine = l->kind == REF_STEP ? ref_engine_op(l->op) : NULL;
            for (size_t i = 0; engine && i < AG_OP_COUNT; i++)
                seen[i] |= strcmp(ag_op_table[i]->name, engine) == 0;
        }
    ref_free(&rf);
}

Test(ops_table, every_op_has_a_reference_case)
{
    bool seen[AG_OP_COUNT] = {false};
    mark_file(TEST_DATA_DIR "/ops.txt", seen);
    mark_file(TEST_DATA_DIR "/ops-more.txt", seen);
    mark_file(TEST_DATA_DIR "/ops-extra.txt", seen);
    for (size_t i = 0; i < AG_OP_COUNT; i++)
        cr_expect(seen[i], "ag_%s has no reference case in tests/data", ag_op_table[i]->name);
}

/* The other way round: an op the reference runner calls (by its engine
 * name) that is missing from the list would run unregistered. */
Test(ops_table, every_op_the_runner_calls_is_listed)
{
    const char *op;
    for (size_t k = 0; (op = ref_op_at(k)); k++) {
        const char *engine = ref_engine_op(op);
        bool listed = false;
        for (size_t i = 0; i < AG_OP_COUNT; i++)
            listed |= strcmp(ag_op_table[i]->name, engine) == 0;
        cr_expect(listed, "%s runs ag_%s, which ops/list.h does not list", op, engine);
    }
}
