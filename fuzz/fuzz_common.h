/* fuzz_common.h: helpers shared by the libFuzzer targets (header only).
 *
 * - FZ_CHECK: an invariant; prints what failed, then __builtin_trap() so
 *   libFuzzer reports it as a crash and saves the input.
 * - A budgeted allocator for ag_set_allocator: every engine (and nn)
 *   allocation goes through it. It caps the live bytes (so one input cannot
 *   make a huge tensor: the engine must then fail cleanly with
 *   AG_ERR_NOMEM), can fail the Nth allocation on demand, checks that
 *   every free passes back the size that was allocated (the hook's osize
 *   contract), and counts live bytes so a target can check that an input
 *   left nothing allocated.
 * - Temporary files for the loaders, which only take paths.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "autograd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FZ_CHECK(cond)                                                                   \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            __builtin_trap();                                                            \
        }                                                                                \
    } while (0)

/* ------------------------------------------------------------ allocator */

typedef struct {
    size_t live;     /* bytes handed out and not yet freed */
    size_t limit;    /* an allocation that would take live above this fails */
    size_t count;    /* allocation attempts since fz_mem_begin */
    size_t fail_at;  /* attempt number that fails (0: none) */
} fz_mem_state;

static fz_mem_state fz_mem;

#define FZ_HDR 16 /* size and a tag before each block; keeps malloc's alignment */
#define FZ_TAG ((size_t)0x6167667a7a6d656dULL)

static void *fz_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    size_t *h = ptr ? (size_t *)((char *)ptr - FZ_HDR) : NULL;
    if (h) {
        FZ_CHECK(h[1] == FZ_TAG);  /* a block this allocator made */
        FZ_CHECK(h[0] == osize);   /* freed / resized with the size it has */
    }
    if (nsize == 0) {
        if (h) {
            fz_mem.live -= osize;
            h[1] = 0;
            free(h);
        }
        return NULL;
    }
    fz_mem.count++;
    if (fz_mem.fail_at && fz_mem.count == fz_mem.fail_at)
        return NULL;
    size_t old = h ? osize : 0;
    if (nsize > fz_mem.limit || fz_mem.live - old > fz_mem.limit - nsize)
        return NULL;
    size_t *n = realloc(h, nsize + FZ_HDR);
    if (!n)
        return NULL;
    n[0] = nsize;
    n[1] = FZ_TAG;
    fz_mem.live = fz_mem.live - old + nsize;
    return (char *)n + FZ_HDR;
}

/* Installs the allocator (once, before any engine object exists). */
static inline void fz_mem_install(size_t limit)
{
    fz_mem = (fz_mem_state){.limit = limit};
    ag_set_allocator(fz_alloc, NULL);
}

/* Starts an input: nothing may be live from the previous one. */
static inline void fz_mem_begin(size_t fail_at)
{
    FZ_CHECK(fz_mem.live == 0);
    fz_mem.count = 0;
    fz_mem.fail_at = fail_at;
}

/* Ends an input: everything the engine allocated must be freed. */
static inline void fz_mem_end(void)
{
    FZ_CHECK(fz_mem.live == 0);
    fz_mem.fail_at = 0;
}

/* Which allocation of a run that made n to refuse, chosen by the input's
 * bytes (FNV-1a), so each input tries one out-of-memory path. */
static inline size_t fz_pick_failure(const uint8_t *data, size_t size, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ULL;
    return n ? 1 + (size_t)(h % n) : 0;
}

/* ------------------------------------------------------------ temp files */

typedef struct {
    char path[32];
} fz_temp;

/* Writes n bytes to a new file in /tmp; false if that fails (not a finding). */
static inline bool fz_temp_write(fz_temp *t, const void *data, size_t n)
{
    strcpy(t->path, "/tmp/fuzz-ag-XXXXXX");
    int fd = mkstemp(t->path);
    if (fd < 0)
        return false;
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            close(fd);
            unlink(t->path);
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    close(fd);
    return true;
}

static inline void fz_temp_remove(fz_temp *t)
{
    unlink(t->path);
}

/* A fresh name in /tmp that does not exist yet (for a file a save makes). */
static inline bool fz_temp_name(fz_temp *t)
{
    if (!fz_temp_write(t, "", 0))
        return false;
    unlink(t->path);
    return true;
}

/* Two tensors of the same dtype, shape and bytes (a save and reload). */
static inline bool fz_same_bits(const ag_tensor *a, const ag_tensor *b)
{
    size_t n = ag_tensor_numel(a), es = ag_dtype_size(ag_tensor_dtype(a));
    return ag_tensor_dtype(a) == ag_tensor_dtype(b) && ag_tensor_rank(a) == ag_tensor_rank(b) &&
           memcmp(ag_tensor_shape(a), ag_tensor_shape(b), ag_tensor_rank(a) * sizeof(size_t)) == 0 &&
           n == ag_tensor_numel(b) && (n == 0 || memcmp(ag_data(a), ag_data(b), n * es) == 0);
}

/* The libFuzzer entry points every target has; Initialize installs the
 * checking allocator with a live-memory cap of limit bytes. */
#define FZ_TARGET(limit)                                          \
    int LLVMFuzzerInitialize(int *argc, char ***argv);            \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); \
    int LLVMFuzzerInitialize(int *argc, char ***argv)             \
    {                                                             \
        (void)argc;                                               \
        (void)argv;                                               \
        fz_mem_install(limit);                                    \
        return 0;                                                 \
    }

#endif
