/* alloc.c: the one allocator hook every allocation goes through. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static ag_alloc_fn alloc_fn = default_alloc;
static void *alloc_ud;

void ag_set_allocator(ag_alloc_fn fn, void *ud)
{
    alloc_fn = fn ? fn : default_alloc;
    alloc_ud = fn ? ud : NULL;
}

void *ag__alloc(size_t n)
{
    return n ? alloc_fn(alloc_ud, NULL, 0, n) : NULL;
}

void *ag__calloc(size_t n)
{
    void *p = ag__alloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

void ag__free(void *p, size_t n)
{
    if (p)
        alloc_fn(alloc_ud, p, n, 0);
}

void *ag_alloc(size_t n) { return ag__alloc(n); }
void ag_free(void *p, size_t n) { ag__free(p, n); }
