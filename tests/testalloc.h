/* testalloc.h: an allocator for tests, installed with ag_set_allocator:
 * counts allocations and live bytes, and can fail the Nth allocation. */
#ifndef TESTALLOC_H
#define TESTALLOC_H

#include "autograd.h"

typedef struct {
    size_t allocs;      /* successful allocations (and reallocations) so far */
    size_t frees;
    size_t live_bytes;  /* bytes allocated and not yet freed */
    size_t fail_at;     /* fail the allocation with this 1-based number; 0 = never */
    size_t attempts;    /* allocation attempts so far */
    bool failed;        /* an allocation was refused */
} test_alloc;

/* Installs a counting allocator that uses *a (reset to zero but fail_at). */
void test_alloc_install(test_alloc *a, size_t fail_at);
/* Restores the default allocator. */
void test_alloc_remove(void);

#endif
