/* testalloc.c: see testalloc.h. */
#include "testalloc.h"

#include <stdlib.h>

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    test_alloc *a = ud;
    if (nsize == 0) {
        if (ptr) {
            a->frees++;
            a->live_bytes -= osize;
        }
        free(ptr);
        return NULL;
    }
    a->attempts++;
    if (a->fail_at && a->attempts == a->fail_at) {
        a->failed = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) {
        a->allocs++;
        a->live_bytes += nsize - (ptr ? osize : 0);
    }
    return p;
}

void test_alloc_install(test_alloc *a, size_t fail_at)
{
    *a = (test_alloc){.fail_at = fail_at};
    ag_set_allocator(counting_alloc, a);
}

void test_alloc_remove(void)
{
    ag_set_allocator(NULL, NULL);
}
