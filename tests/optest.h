/* optest.h: helpers shared by the op suites (Criterion): tensors of given
 * values or seeded draws, assertions on results and on the tape's status,
 * gradcheck with fan-out, the reference cases of a file, and recorded
 * gradients against fused ones. Each fails the running test, with a
 * message, instead of returning an error. */
#ifndef OPTEST_H
#define OPTEST_H

#include "autograd.h"

/* A new tensor of dtype dt holding v (numel of shape values). */
ag_tensor *ot_from(ag_dtype dt, const size_t *shape, size_t rank, const double *v);
/* ot_from, requiring grad. */
ag_tensor *ot_leaf(ag_dtype dt, const size_t *shape, size_t rank, const double *v);
/* A new tensor uniform in [lo, hi) drawn from rng, requiring grad if grad. */
ag_tensor *ot_uniform(ag_rng *rng, ag_dtype dt, const size_t *shape, size_t rank, double lo, double hi,
                      bool grad);
/* A new f64 tensor with |x| in [gap, gap + 1): clear of a kink or pole at 0. */
ag_tensor *ot_away_from_zero(ag_rng *rng, double gap, const size_t *shape, size_t rank);

/* t holds status s and a message containing part1 and, unless NULL, part2. */
void ot_assert_error(const ag_tape *t, ag_status s, const char *part1, const char *part2);
/* y is not NULL and has the given shape. */
void ot_assert_shape(const ag_tensor *y, const size_t *shape, size_t rank);
/* y holds n elements within tol relative of want (a NaN or infinity in want
 * exactly). */
void ot_assert_values(const ag_tensor *y, const double *want, size_t n, double tol);

/* ag_gradcheck of fn on the n inputs (step and tolerances 1e-6) passes
 * and checks every element. */
void ot_gradcheck_ok(const char *what, ag_fn fn, void *ctx, size_t n, ag_tensor *const *in);
/* ot_gradcheck_ok of fn alone, then of fn with every input used again
 * after it (a backward that assigns instead of adding fails that); frees
 * the inputs. */
void ot_check_and_free(const char *what, ag_fn fn, void *ctx, size_t n, ag_tensor **in);
/* ot_check_and_free of one input a (b NULL) or two. For callers that draw
 * the inputs as arguments: their order of evaluation fixes which seeded
 * values each input gets. */
void ot_check_pair_and_free(const char *what, ag_fn fn, void *ctx, ag_tensor *a, ag_tensor *b);

/* Runs, in dtype dt to tol, the cases of the reference file at path whose
 * steps use one of the n_ops names in ops (every case if ops is NULL),
 * expecting each to pass, and every op to have a case if each_op. Returns
 * how many ran; asserts that none failed. */
size_t ot_run_reference(const char *path, const char *const *ops, size_t n_ops, bool each_op, ag_dtype dt,
                        double tol);

/* How ot_assert_same_gradients compares. */
typedef enum {
    OT_BITWISE,     /* to the bit; NaN matches NaN */
    OT_PER_ELEMENT, /* within rtol of the larger of the two elements */
    OT_TO_LARGEST,  /* within rtol of the largest fused element of all inputs */
} ot_match;

/* The gradients g[i] that ag_gradients recorded (AG_CREATE_GRAPH) equal
 * the fused ones ag_backward left in x[i]'s grad, for i < n. */
void ot_assert_same_gradients(const char *what, size_t n, ag_tensor *const *x, ag_tensor *const *g, ot_match m,
                              double rtol);
/* Moves every f64 input x[i] by h·v[i], in place. */
void ot_nudge(size_t n, ag_tensor *const *x, ag_tensor *const *v, double h);

#endif
