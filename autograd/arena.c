/* arena.c: the tapes' arenas (op results, gradients) and scratch space. */
#include "internal.h"

#include <string.h>

#define AG_CHUNK_MIN ((size_t)1 << 16)

void ag__arena_free(ag_arena *a)
{
    for (ag_chunk *c = a->first, *next; c; c = next) {
        next = c->next;
        AG_UNPOISON(c->data, c->size);
        ag__free(c, sizeof *c + AG_ALIGN + c->size);
    }
    a->first = a->cur = NULL;
}

void ag__arena_poison(ag_arena *a)
{
#ifdef AG_ASAN
    for (ag_chunk *c = a->first; c; c = c->next)
        ASAN_POISON_MEMORY_REGION(c->data, c->size);
#else
    (void)a;
#endif
}

void ag__arena_rewind(ag_arena *a)
{
    a->cur = a->first;
    if (a->cur)
        a->cur->used = 0;
    ag__arena_poison(a);
}

bool ag__arena_holds(const ag_tape *t, const void *p)
{
    uintptr_t u = (uintptr_t)p;
    for (int a = 0; a < 2; a++) {
        if (u < t->arenas[a].lo || u >= t->arenas[a].hi)
            continue; /* most leaves: outside the span, no walk */
        for (const ag_chunk *c = t->arenas[a].first; c; c = c->next)
            if (u >= (uintptr_t)c->data && u < (uintptr_t)c->data + c->size)
                return true;
    }
    return false;
}

/* A chunk of size bytes (a multiple of AG_ALIGN) after an aligned start. */
static ag_chunk *chunk_new(size_t size)
{
    ag_chunk *c = ag__alloc(sizeof *c + AG_ALIGN + size);
    if (c) {
        uintptr_t start = (uintptr_t)(c + 1);
        c->data = (unsigned char *)((start + AG_ALIGN - 1) & ~(uintptr_t)(AG_ALIGN - 1));
        c->next = NULL;
        c->size = size;
        c->used = 0;
    }
    return c;
}

/* Out of memory, or a size past what memory can hold: the message names
 * the op that asked, its result and its inputs, so a user sees which line
 * of their model needs the memory. */
static void *arena_fail(ag_tape *t, ag_status s, size_t n)
{
    const ag_record *r = t->active;
    const char *what = s == AG_ERR_NOMEM ? "out of memory allocating" : "cannot allocate";
    if (!r) {
        ag__error(t, s, "arena: %s %zu bytes", what, n);
        return NULL;
    }
    char out[AG_SHAPE_BUF], in[4 * AG_SHAPE_BUF];
    ag__error(t, s, "ag_%s%s: %s %zu bytes (result %s %s; inputs %s)", r->def->name,
              t->in_backward ? " backward" : "", what, n,
              ag__shape_str(r->out, out, sizeof out), ag_dtype_name(r->out->dtype),
              ag__describe_inputs(r, in, sizeof in));
    return NULL;
}

void *ag__arena_grow(ag_tape *t, size_t n)
{
    if (n > SIZE_MAX / 2 - AG_ALIGN - sizeof(ag_chunk))
        return arena_fail(t, AG_ERR_OVERFLOW, n);
    ag_arena *a = t->arena;
    for (ag_chunk *c = a->cur ? a->cur->next : NULL; c; c = c->next) {
        c->used = 0; /* first visit to this chunk since the rewind */
        void *p = ag__chunk_take(c, n, ag__arena_align(n));
        if (p) {
            a->cur = c;
            AG_UNPOISON(p, n);
            return p;
        }
    }
    size_t last = 0;
    for (ag_chunk *c = a->first; c; c = c->next)
        last = c->size;
    size_t size = last * 2 > AG_CHUNK_MIN ? last * 2 : AG_CHUNK_MIN;
    if (size < n)
        size = n;
    ag_chunk *c = chunk_new(size);
    if (!c)
        return arena_fail(t, AG_ERR_NOMEM, n);
    ag__arena_poison(&(ag_arena){c, c, 0, 0});
    uintptr_t lo = (uintptr_t)c->data, hi = lo + c->size;
    a->lo = a->hi == 0 || lo < a->lo ? lo : a->lo;
    a->hi = hi > a->hi ? hi : a->hi;
    ag_chunk **tail = &a->first;
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    a->cur = c;
    void *p = ag__chunk_take(c, n, ag__arena_align(n));
    AG_UNPOISON(p, n);
    return p;
}

void *ag__arena_zeros(ag_tape *t, size_t n)
{
    void *p = ag__arena_alloc(t, n);
    if (p)
        memset(p, 0, n);
    return p;
}
