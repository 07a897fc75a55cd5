/* alloc_suite.h: a Criterion suite whose every test runs under the counting
 * allocator of testalloc.h and ends with assert_all_freed(). */
#ifndef ALLOC_SUITE_H
#define ALLOC_SUITE_H

#include <criterion/criterion.h>

#include "testalloc.h"

/* Defines the suite `name`, its allocator `ta`, and assert_all_freed():
 * Criterion ignores assertions in .fini, so each test calls it last. */
#define ALLOC_SUITE(name)                                                                     \
    static test_alloc ta;                                                                     \
    static void setup(void) { test_alloc_install(&ta, 0); }                                   \
    static void teardown(void) { test_alloc_remove(); }                                       \
    TestSuite(name, .init = setup, .fini = teardown);                                         \
    static void assert_all_freed(void)                                                        \
    {                                                                                         \
        cr_assert_eq(ta.live_bytes, 0, "%zu bytes leaked", ta.live_bytes);                    \
        cr_assert_eq(ta.allocs, ta.frees, "%zu allocations, %zu frees", ta.allocs, ta.frees); \
    }

#endif
