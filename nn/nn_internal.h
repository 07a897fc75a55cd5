/* nn_internal.h: helpers shared by nn's source files (not installed). */
#ifndef NN_INTERNAL_H
#define NN_INTERNAL_H

#include "nn.h"

/* Put before a hot loop's function to have it compiled twice, for x86-64-v3
 * (AVX2, FMA) and for the baseline, the loader picking what the CPU runs
 * (the engine's AG_TARGET_CLONES, for nn's own loops). Not under
 * ThreadSanitizer, whose GCC build cannot run the loader's picker. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define NN_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NN_TARGET_CLONES
#endif

/* Fills err (if not NULL) with s and the formatted message and returns s:
 * every nn error passes through here, so one breakpoint catches them all. */
ag_status nn__fail(nn_error *err, ag_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Whether a is one of the nn_act values. */
bool nn__act_valid(nn_act a);
/* Marks err (if not NULL) as a success and returns AG_OK. */
ag_status nn__ok(nn_error *err);

/* Zeroed raw memory from the engine's allocator, so tests that fail the
 * Nth allocation reach nn too: an f64 tensor used as bytes, aligned for
 * any type. *owner receives the tensor to free with ag_tensor_free. */
void *nn__mem(size_t bytes, ag_tensor **owner);

/* Byte offsets of the arrays packed after a struct in one nn__mem block. */
typedef struct {
    size_t size;
    bool overflow;
} nn__layout;
/* Reserves count items of elem bytes, aligned for any type; returns the offset. */
size_t nn__layout_add(nn__layout *l, size_t count, size_t elem);

/* a * b into *out; false when it overflows size_t. */
bool nn__mul(size_t a, size_t b, size_t *out);

/* Element i of a dtype-typed buffer as a double, and storing one. */
static inline double nn__get(ag_dtype dt, const void *p, size_t i)
{
    return dt == AG_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void nn__set(ag_dtype dt, void *p, size_t i, double v)
{
    if (dt == AG_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* Opens path for reading and measures it, so a loader can check sizes
 * before it allocates anything a foreign file claims. On failure *f is
 * NULL and err names fn and the cause (AG_ERR_IO). */
ag_status nn__open_sized(const char *fn, const char *path, FILE **f, size_t *size, nn_error *err);

/* Writes path atomically, as nn_mlp_save does (see nn.h): write(f, ctx)
 * fills a new temporary file beside path and returns 0 or the errno of its
 * first failed write; the file is then flushed, fsynced and renamed over
 * path, and path's directory synced. A failure removes the temporary file
 * and leaves path as it was. fn names the caller in err's messages
 * (AG_ERR_VALUE: path empty or over 4096 bytes; AG_ERR_IO). */
typedef int nn__file_writer(FILE *f, const void *ctx);
ag_status nn__save_atomic(const char *fn, const char *path, nn__file_writer *write,
                          const void *ctx, nn_error *err);

/* binary_io.c: the numbers of nn's binary files are little-endian.
 * Whether the host stores them so; reversing the bytes of each of n
 * elements of es bytes, to convert the other order; writing n such
 * elements little-endian, returning 0 or an errno. */
bool nn__host_little_endian(void);
void nn__swap_bytes(void *p, size_t n, size_t es);
int nn__write_le(FILE *f, const void *data, size_t n, size_t es);

/* A file written field by field, with the CRC-32 (nn_crc32) of every byte
 * so far: integers of n <= 8 bytes, doubles as their bits, arrays of n
 * elements of es bytes (f32, f64), all little-endian. A failed write is
 * kept in err (its errno) and later writes only update the CRC. */
typedef struct {
    FILE *f;
    uint32_t crc;
    int err;
} nn__writer;
void nn__put_bytes(nn__writer *w, const void *p, size_t n);
void nn__put_int(nn__writer *w, uint64_t v, size_t n);
void nn__put_real(nn__writer *w, double v);
void nn__put_array(nn__writer *w, const void *p, size_t n, size_t es);

/* The same fields read back: each returns false at the end of the file
 * (truncated) or on a read error (then io_error is set); pos counts the
 * bytes read, crc is theirs. size and path are the caller's, for its
 * messages. */
typedef struct {
    FILE *f;
    const char *path;
    size_t size;  /* bytes in the file */
    size_t pos;   /* bytes read so far */
    uint32_t crc; /* of the bytes read so far */
    bool io_error;
} nn__reader;
bool nn__get_bytes(nn__reader *r, void *p, size_t n);
bool nn__get_int(nn__reader *r, uint64_t *v, size_t n);
bool nn__get_real(nn__reader *r, double *v);
bool nn__get_array(nn__reader *r, void *p, size_t n, size_t es);

/* nn_optim_step and nn_optim_zero_grad with the work spread over t's
 * threads (t NULL: the calling thread only), as nn_mlp_train_step runs them;
 * fn names the public caller in err's message. */
ag_status nn__optim_step(nn_optim *opt, ag_tape *t, const char *fn, nn_error *err);
void nn__optim_zero_grad(nn_optim *opt, ag_tape *t);

/* nn_mlp_new without the initialiser's draws: every parameter is 0, for a
 * loader that overwrites them all (fn names the caller in messages). */
ag_status nn__mlp_new_zeroed(const nn_spec *spec, const char *fn, nn_mlp **out, nn_error *err);

#define NN_SHAPE_BUF 96

/* Rows (shape[0]) and elements per row of a rank >= 1 tensor. */
size_t nn__rows(const ag_tensor *x);
size_t nn__row_len(const ag_tensor *x);

/* For checkpoints (checkpoint.c), the optimizer's and the batch
 * iterator's internals, reached only through these. */
/* The configuration in force (learning rate included). */
const nn_optim_config *nn__optim_config(const nn_optim *opt);
/* The state values (momenta, or Adam's m then v, in double); *n: their count. */
const double *nn__optim_state(const nn_optim *opt, size_t *n);
/* Whether opt updates exactly these tensors, in this order. */
bool nn__optim_updates(const nn_optim *opt, const nn_param *params, size_t n);
/* Whether cfg (checked as nn_optim_new checks it) and n_state state values
 * fit opt: the same kind and state layout. Errors name fn: AG_ERR_VALUE. */
ag_status nn__optim_check_restore(const nn_optim *opt, const nn_optim_config *cfg,
                                  size_t n_state, const char *fn, nn_error *err);
/* Puts back what nn__optim_check_restore accepted; cannot fail. */
void nn__optim_restore(nn_optim *opt, const nn_optim_config *cfg, size_t steps,
                       const double *state);

typedef struct {
    size_t n, batch, pos; /* rows, rows per batch, rows of this epoch served */
    bool shuffle;
    ag_rng rng;           /* draws the next epoch's order */
    const size_t *order;  /* this epoch's row order, n entries */
} nn__batches_state;
nn__batches_state nn__batches_get(const nn_batches *it);
/* Sets pos, rng and order (n entries, a permutation) from s; cannot fail. */
void nn__batches_restore(nn_batches *it, const nn__batches_state *s);

#endif
