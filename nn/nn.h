/* nn.h: a thin neural-network layer over autograd.h: dense layers, MLPs,
 * initialisers, optimizers, data loading and batching, model files.
 *
 * Ownership: every object made by an nn_*_new or loader is owned by the
 * caller and freed with its nn_*_free. Tensors returned by forward passes
 * live in the tape's arena until ag_tape_reset, as with every op.
 *
 * Memory: nn allocates through the engine (as engine tensors), so the
 * allocator hook of ag_set_allocator sees every nn allocation.
 *
 * Errors: functions that are not ops return an ag_status and, when the
 * caller passes an nn_error, fill it with the status and a message naming
 * the function and the cause ("nn_csv_load: data/x.csv line 3, field 2:
 * 'abc' is not a number"). On failure nothing is half-made: out-parameters
 * are left NULL / empty and nothing leaks. Functions that are ops (take a
 * tape first, return a tensor) report through the tape, as autograd does.
 * nn never prints on its own, never aborts, never exits.
 */
#ifndef NN_H
#define NN_H

#include "autograd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_MAX_LAYERS 64 /* dense layers in one MLP (bounds what a file may claim) */
#define NN_ERR_MAX 256

typedef struct {
    ag_status status;    /* AG_OK after a successful call */
    char msg[NN_ERR_MAX];  /* "" after a successful call */
} nn_error;

/* ------------------------------------------------------------ layers */

/* Activation functions. The values are part of the model file format. */
typedef enum {
    NN_SIGMOID = 0,    /* 1 / (1 + e^-z) */
    NN_TANH = 1,       /* tanh z */
    NN_RELU = 2,       /* max(z, 0) */
    NN_LEAKY_RELU = 3, /* z > 0 ? z : slope z */
    NN_IDENTITY = 4,   /* z */
    NN_GELU = 5,       /* z Φ(z), Φ the normal CDF (exact, erf form) */
    NN_SILU = 6,       /* z σ(z) */
    NN_ELU = 7         /* z > 0 ? z : e^z - 1 (alpha 1, PyTorch's default) */
} nn_act;
#define NN_ACT_COUNT 8 /* activations are 0 .. NN_ACT_COUNT - 1 */

/* Static name of an activation ("sigmoid", ...); "?" for an invalid value. */
const char *nn_act_name(nn_act act);

/* An op: act(z); slope is used by NN_LEAKY_RELU only. Returns a tape tensor
 * (z itself for NN_IDENTITY), or NULL with the tape's status set
 * (AG_ERR_VALUE for an invalid act). */
ag_tensor *nn_activate(ag_tape *t, ag_tensor *z, nn_act act, double slope);

/* A layer's values from the last forward pass, both owned by the tape.
 * z has ag_retain_grad set, so after ag_backward ag_grad(z) holds
 * delta = dC/dz ([m, n_out], as x), the quantity of BP1 and BP2. */
typedef struct {
    ag_tensor *z; /* x·W + b */
    ag_tensor *a; /* act(z); the same tensor as z for NN_IDENTITY */
} nn_tap;

/* An op: the dense layer a = act(x·W + b), x [m, n_in] (a row [n_in] and
 * batches [.., m, n_in] work as in ag_matmul), W [n_in, n_out], b [n_out]
 * (or NULL for no bias). When tap is not NULL it receives z and a (NULL on
 * failure) and z's gradient is retained. Returns a [m, n_out] on the tape,
 * or NULL with the tape's status set before anything is recorded:
 * AG_ERR_NULL / AG_ERR_STATE (x, W or b NULL, stale, freed or from another
 * tape, as for an op), AG_ERR_SHAPE ("nn_dense: W is [4,2], so x must be
 * [m, 4]; x is [5,3]", W not rank 2, b not [n_out]), AG_ERR_DTYPE (x or b
 * not of W's dtype), AG_ERR_VALUE (act). */
ag_tensor *nn_dense(ag_tape *t, ag_tensor *x, ag_tensor *W, ag_tensor *b,
                    nn_act act, double slope, nn_tap *tap);

/* Costs of a prediction a against a target y. */
typedef enum {
    NN_COST_QUADRATIC,    /* Σ (a - y)^2 / (2 m), m = rows (Nielsen) */
    NN_COST_MSE,          /* mean((a - y)^2) */
    NN_COST_BCE,          /* binary cross-entropy of probabilities a */
    NN_COST_BCE_LOGITS,   /* bce(sigmoid(a), y), stable */
    NN_COST_CROSS_ENTROPY /* a logits [m, C], y class indices [m] */
} nn_cost;

/* An op: the cost as a rank-0 tape tensor, or NULL with the tape's status
 * set (AG_ERR_VALUE for an invalid cost). */
ag_tensor *nn_loss(ag_tape *t, nn_cost cost, ag_tensor *a, ag_tensor *y);

/* ------------------------------------------------------------- MLP */

/* Initialisers, all drawn from ag_rng seeded with the spec's seed, layer by
 * layer, W (row-major) then b, so a seed gives the same model everywhere. */
typedef enum {
    NN_INIT_NORMAL,        /* W, b ~ N(0, 1) (Nielsen's network.py) */
    NN_INIT_NORMAL_SCALED, /* W ~ N(0, 1/n_in), b ~ N(0, 1) (Nielsen's network2.py) */
    NN_INIT_XAVIER,        /* W ~ U(-r, r), r = sqrt(6 / (n_in + n_out)); b = 0 */
    NN_INIT_HE             /* W ~ N(0, 2/n_in); b = 0 */
} nn_init;

/* What an MLP is made of. The arrays are read by nn_mlp_new, not kept. */
typedef struct {
    size_t n_layers;     /* dense layers, 1..NN_MAX_LAYERS */
    const size_t *sizes; /* n_layers + 1 widths: inputs, then each layer's outputs */
    const nn_act *acts;  /* n_layers activations; NULL = all NN_SIGMOID */
    ag_dtype dtype;      /* AG_F32 or AG_F64 */
    nn_init init;
    uint64_t seed;
    double leaky_slope;  /* for NN_LEAKY_RELU; 0 means 0.01 (PyTorch's default) */
} nn_spec;

typedef struct nn_mlp nn_mlp;

/* A parameter: its name ("W1", "b1", ...: layer numbers start at 1) and the
 * leaf tensor (requires grad; data and grad are slices of the model's block). */
typedef struct {
    const char *name;
    ag_tensor *tensor;
} nn_param;

/* Makes an initialised MLP into *out (caller frees with nn_mlp_free). Every
 * parameter and gradient lives in one contiguous block. Errors: AG_ERR_NULL,
 * AG_ERR_VALUE (zero layers or widths, too many layers, unknown act, init or
 * slope), AG_ERR_DTYPE, AG_ERR_OVERFLOW, AG_ERR_NOMEM. */
ag_status nn_mlp_new(const nn_spec *spec, nn_mlp **out, nn_error *err);
/* Frees the model and its parameter tensors. NULL is a no-op. */
void nn_mlp_free(nn_mlp *net);
/* The model's spec (its own arrays, valid while the model lives; the slope
 * resolved). NULL for a NULL model. */
const nn_spec *nn_mlp_spec(const nn_mlp *net);
/* The parameters, 2 per layer in order W1, b1, W2, b2, ...; *n receives the
 * count. Owned by the model. NULL (and *n = 0) for a NULL model. */
const nn_param *nn_mlp_params(const nn_mlp *net, size_t *n);
/* The contiguous block of all parameter values / gradients, in the order of
 * nn_mlp_params, nn_mlp_param_count elements of the model's dtype. */
void *nn_mlp_data(const nn_mlp *net);
void *nn_mlp_grad(const nn_mlp *net);
size_t nn_mlp_param_count(const nn_mlp *net);
/* Re-draws every parameter with init and seed. Errors: AG_ERR_NULL, AG_ERR_VALUE. */
ag_status nn_mlp_init(nn_mlp *net, nn_init init, uint64_t seed, nn_error *err);
/* Sets every gradient of the model to 0 (one memset). NULL is a no-op. */
void nn_mlp_zero_grad(nn_mlp *net);
/* An op: the output [m, n_out] of x [m, n_in] (a row [n_in] and batches
 * [.., m, n_in] work too) through every layer, on t. taps is NULL, or an
 * array of n_taps >= n_layers entries filled per layer (see nn_tap). NULL
 * with the tape's status set: AG_ERR_NULL (net or x), AG_ERR_STATE (x
 * stale, freed or from another tape), AG_ERR_VALUE (n_taps < n_layers,
 * naming both; nothing is written into taps), AG_ERR_DTYPE (x not of the
 * model's dtype), AG_ERR_SHAPE (x a scalar, or its width: "nn_mlp_forward:
 * layer 0 expects 3 inputs, x is [5,4]"). */
ag_tensor *nn_mlp_forward(nn_mlp *net, ag_tape *t, ag_tensor *x, nn_tap *taps, size_t n_taps);
/* Prints "mlp 64-30-10 (sigmoid, sigmoid) f32, 2260 parameters" and one line
 * per parameter with its name and shape. Errors: AG_ERR_NULL, AG_ERR_IO. */
ag_status nn_mlp_print(const nn_mlp *net, FILE *out);

/* -------------------------------------------------------- optimizers
 * PyTorch's conventions, for parameter θ, gradient ∇, step t (from 1),
 * learning rate η, weight decay λ; state starts at 0:
 *   SGD:   g = ∇ + λθ;  b = μb + g;  θ -= η·(nesterov ? g + μb : b)   (μ = 0: θ -= η·g)
 *   Adam:  g = ∇ + λθ;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
 *          θ -= η·(m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε)
 *   AdamW: θ -= η·λ·θ;  then Adam with λ = 0 (decoupled weight decay)
 * The state is kept in double; each parameter is rounded to its dtype once
 * per step. Plain SGD (μ = λ = 0) computes θ + (-η)·∇ as one fused
 * multiply-add in the parameter's dtype, η rounded to it, exactly as
 * PyTorch's θ.add_(∇, alpha=-η): the same bits.
 *
 * Before updating, a step measures the global L2 norm of all gradients,
 * ‖∇‖ = sqrt(Σ ∇²) in double, in a fixed order (the same bits for any
 * thread count). A NaN or Inf gradient makes the step fail with
 * AG_ERR_NUMERIC, touching no parameter and no state, unless
 * allow_nonfinite is set. With clip_norm c > 0, when ‖∇‖ + 1e-6 > c every
 * gradient is scaled in place by c / (‖∇‖ + 1e-6) before the update
 * (PyTorch's clip_grad_norm_); allowed non-finite gradients are not
 * clipped. */
typedef enum { NN_SGD, NN_ADAM, NN_ADAMW } nn_optim_kind;

typedef struct {
    nn_optim_kind kind;
    double lr;           /* η >= 0 */
    double momentum;     /* SGD: μ in [0, 1) */
    bool nesterov;       /* SGD: needs μ > 0 */
    double weight_decay; /* λ >= 0 */
    double beta1, beta2; /* Adam(W): in [0, 1) */
    double eps;          /* Adam(W): ε >= 0 */
    double clip_norm;    /* c >= 0: clip the gradients' global norm to c (0: off) */
    bool allow_nonfinite; /* step even with NaN/Inf gradients (default: refuse) */
} nn_optim_config;

/* Configurations with PyTorch's defaults: plain SGD; Adam with β = (0.9,
 * 0.999), ε = 1e-8; AdamW likewise with λ = 0.01. */
nn_optim_config nn_sgd(double lr);
nn_optim_config nn_adam(double lr);
nn_optim_config nn_adamw(double lr);

typedef struct nn_optim nn_optim;

/* Makes an optimizer over n parameters into *out; caller frees with
 * nn_optim_free. The tensors must be leaves with a grad buffer (requires
 * grad) and outlive the optimizer; the names are copied (for messages).
 * All state is allocated here, so nn_optim_step never allocates. Errors:
 * AG_ERR_NULL, AG_ERR_VALUE (bad hyper-parameter, n == 0), AG_ERR_STATE (a
 * tensor without grad), AG_ERR_OVERFLOW, AG_ERR_NOMEM. For a model, use
 * nn_mlp_optim_new: nn_optim_new(&c, nn_mlp_params(net, &n), n, ...) reads
 * n before nn_mlp_params may have written it (unspecified order). */
ag_status nn_optim_new(const nn_optim_config *cfg, const nn_param *params, size_t n,
                       nn_optim **out, nn_error *err);
/* The way to make an optimizer for a model: nn_optim_new over every
 * parameter of net (W1, b1, W2, ...), which must outlive it. Errors: as
 * nn_optim_new's, named "nn_mlp_optim_new". */
ag_status nn_mlp_optim_new(nn_mlp *net, const nn_optim_config *cfg, nn_optim **out,
                           nn_error *err);
/* Frees the optimizer (not the parameters). NULL is a no-op. */
void nn_optim_free(nn_optim *opt);
/* One update of every parameter from its gradient, on the calling thread
 * (nn_mlp_train_step spreads it over the tape's threads), after the norm
 * check and clipping above. Errors: AG_ERR_NULL, AG_ERR_NUMERIC ("nn_optim_step:
 * gradient of W2 has nan at element 17 of [30,10]; parameters left
 * unchanged": the first non-finite element in parameter order; nothing
 * changed, the step not counted). */
ag_status nn_optim_step(nn_optim *opt, nn_error *err);
/* Sets every parameter's gradient to 0. NULL is a no-op. */
void nn_optim_zero_grad(nn_optim *opt);
/* The learning rate used by the next step (NaN for NULL). */
double nn_optim_lr(const nn_optim *opt);
/* Sets the learning rate (e.g. from nn_lr_at each epoch). Errors:
 * AG_ERR_NULL, AG_ERR_VALUE (negative or not finite; the rate is kept). */
ag_status nn_optim_set_lr(nn_optim *opt, double lr);
/* Steps taken so far (refused steps do not count). */
size_t nn_optim_steps(const nn_optim *opt);
/* The gradients' global L2 norm measured by the last step, before any
 * clipping (also by a refused step: then NaN or Inf). It is measured only
 * when clip_norm is set (without clipping a step only checks that the
 * gradients are finite, a cheaper pass): NaN otherwise, before the first
 * step, or for NULL. */
double nn_optim_grad_norm(const nn_optim *opt);

/* Learning-rate schedules, by epoch e from 0 (PyTorch's StepLR and
 * CosineAnnealingLR in closed form):
 *   constant: η
 *   step:     η·γ^floor(e / step_size)
 *   cosine:   η_min + (η - η_min)·(1 + cos(π·min(e, t_max) / t_max)) / 2 */
typedef enum { NN_LR_CONSTANT, NN_LR_STEP, NN_LR_COSINE } nn_lr_kind;

typedef struct {
    nn_lr_kind kind;
    size_t step_size; /* step: epochs per decay (0 acts as constant) */
    double gamma;     /* step: factor per decay */
    size_t t_max;     /* cosine: epochs to reach lr_min (0 acts as constant) */
    double lr_min;    /* cosine: η_min */
} nn_lr_schedule;

/* The learning rate for epoch e from base_lr; base_lr for a NULL schedule. */
double nn_lr_at(const nn_lr_schedule *s, double base_lr, size_t epoch);

/* ------------------------------------------------------------- data */

/* A labelled data set. x and labels are caller-owned (nn_dataset_free). */
typedef struct {
    ag_tensor *x;      /* [n, features] */
    ag_tensor *labels; /* [n] class indices 0..classes-1, stored in x's dtype;
                        * or, from nn_csv_load_regression, [n, k] real targets */
    size_t n, features, classes; /* classes: 0 for real targets */
} nn_dataset;

/* Frees x and labels and empties *d. NULL is a no-op. */
void nn_dataset_free(nn_dataset *d);

/* Loads a CSV file of rows "f1,...,fk,label" into *out (dtype dt). The
 * first line may be a header, skipped as data:
 *   - sklearn's "rows,features,class1,class2,..." (as iris.csv), checked
 *     against the data; it gives the class count;
 *   - column names ("sepal_length,...,species"): every field non-empty and
 *     not a number, as many as the rows have (a line with some numbers is
 *     data, and its other fields are errors).
 * Without sklearn's line the class count is the largest label + 1. A label
 * must be an integer in [0, 2^24) for f32, [0, 2^53) for f64: the range in
 * which the dtype stores every integer exactly. A UTF-8 byte-order mark at
 * the start and blank lines are skipped; fields are trimmed; numbers are
 * read with strtod (C locale); no quoting. Errors: AG_ERR_NULL, AG_ERR_IO
 * (cannot open or read), AG_ERR_FORMAT (non-numeric or non-finite field, a
 * value outside f32's range when dt is AG_F32, ragged row, label not a
 * class index or past the limit, header count mismatch, no rows),
 * AG_ERR_NOMEM; the message names the line and field. */
ag_status nn_csv_load(const char *path, ag_dtype dt, nn_dataset *out, nn_error *err);
/* As nn_csv_load, for regression: the last n_targets >= 1 columns of each
 * row are real targets, any finite numbers, loaded as labels [n, n_targets]
 * (a model's output shape, so [n, 1] for one target) with classes = 0; the
 * columns before them are x. sklearn's header line then counts the features
 * only. (Also a way to load 0/1 labels as [n, 1] targets for
 * NN_COST_BCE_LOGITS.) Errors: nn_csv_load's, and AG_ERR_VALUE for
 * n_targets 0; messages name nn_csv_load_regression. */
ag_status nn_csv_load_regression(const char *path, ag_dtype dt, size_t n_targets,
                                 nn_dataset *out, nn_error *err);

/* Loads an IDX pair (MNIST): images (magic 0x00000803, big-endian counts
 * n, rows, cols, then n·rows·cols bytes) and labels (magic 0x00000801, n,
 * then n bytes) into *out with x [n, rows·cols] holding the raw 0..255
 * values (scale them yourself) and classes = largest label + 1. Errors:
 * AG_ERR_NULL, AG_ERR_IO, AG_ERR_FORMAT (bad magic, truncated, trailing
 * bytes, count mismatch, zero sizes), AG_ERR_OVERFLOW, AG_ERR_NOMEM. */
ag_status nn_idx_load(const char *images_path, const char *labels_path, ag_dtype dt,
                      nn_dataset *out, nn_error *err);

/* Multiplies every element of x by factor, in place (e.g. 1/16, 1/255). */
ag_status nn_scale(ag_tensor *x, double factor, nn_error *err);
/* The largest |x[i]|, 0 for an empty or NULL tensor (to divide by the max). */
double nn_max_abs(const ag_tensor *x);
/* Standardises each column of train [n, f] to mean 0 and standard deviation
 * 1 (population), and applies the same shift and scale to test (NULL or
 * [k, f]); a constant column is only centred. Errors: AG_ERR_NULL,
 * AG_ERR_SHAPE, AG_ERR_DTYPE. */
ag_status nn_standardize(ag_tensor *train, ag_tensor *test, nn_error *err);

/* A new [n, classes] tensor (labels' dtype, caller frees) with a 1 in the
 * column of each row's label. Errors: AG_ERR_NULL, AG_ERR_SHAPE (labels not
 * [n]), AG_ERR_VALUE (classes 0, label not an integer in [0, classes)),
 * AG_ERR_OVERFLOW, AG_ERR_NOMEM. */
ag_status nn_one_hot(const ag_tensor *labels, size_t classes, ag_tensor **out, nn_error *err);

/* Writes a uniformly random permutation of 0..n-1 into idx (Fisher-Yates
 * with ag_rng_below, so a seed gives the same order everywhere). */
void nn_permutation(size_t *idx, size_t n, ag_rng *rng);
/* Shuffles the rows of x [n, ...] in place, and the rows of y (NULL or
 * [n, ...]) in the same way. Allocates nothing. Errors: AG_ERR_NULL,
 * AG_ERR_SHAPE (rank 0 or row counts differ). */
ag_status nn_shuffle_rows(ag_tensor *x, ag_tensor *y, ag_rng *rng, nn_error *err);
/* Splits all into train (n - n_test rows) and test (n_test rows), new
 * data sets (caller frees), after a shuffle seeded with seed. all is not
 * changed. Errors: AG_ERR_NULL, AG_ERR_VALUE (n_test 0 or >= n), AG_ERR_NOMEM. */
ag_status nn_dataset_split(const nn_dataset *all, size_t n_test, uint64_t seed,
                           nn_dataset *train, nn_dataset *test, nn_error *err);

typedef struct nn_batches nn_batches;

/* Mini-batch iteration over rows of x [n, ...] and y [n, ...] into the
 * caller's batch tensors bx [B, ...] and by [B, ...] (same dtypes and row
 * shapes; B = rows of bx = rows of by). Rows are visited in a seeded random
 * order when shuffle is set (re-shuffled every epoch), else in order.
 * x, y, bx and by must outlive the iterator. Caller frees *out with
 * nn_batches_free. Errors: AG_ERR_NULL, AG_ERR_SHAPE, AG_ERR_DTYPE,
 * AG_ERR_VALUE (no rows), AG_ERR_NOMEM. */
ag_status nn_batches_new(const ag_tensor *x, const ag_tensor *y, ag_tensor *bx, ag_tensor *by,
                         bool shuffle, uint64_t seed, nn_batches **out, nn_error *err);
/* Fills the next batch and points *bx, *by at it: the caller's tensors, or
 * for a last partial batch of r < B rows, views [r, ...] of their first r
 * rows (owned by the iterator). Returns false (and starts a new epoch)
 * when the epoch is over. Never allocates. */
bool nn_batches_next(nn_batches *it, ag_tensor **bx, ag_tensor **by);
/* Batches per epoch (the last may be partial). */
size_t nn_batches_per_epoch(const nn_batches *it);
/* Frees the iterator and its views. NULL is a no-op. */
void nn_batches_free(nn_batches *it);

/* The fraction of rows whose predicted class matches the target, into
 * *acc. Prediction: argmax of out's row [n, C], or for C == 1 the class
 * out >= threshold: 0.5 for probabilities (sigmoid output), 0 for logits
 * (identity output, as NN_COST_BCE_LOGITS trains it); threshold is unused
 * when C > 1. Target: class indices [n], or rows [n, C] (argmax; for C == 1
 * 0/1 values, class 1 from 0.5 up). Errors: AG_ERR_NULL, AG_ERR_SHAPE,
 * AG_ERR_VALUE (no rows; C == 1 and a threshold that is not finite). */
ag_status nn_accuracy(const ag_tensor *out, const ag_tensor *target, double threshold, double *acc,
                      nn_error *err);

/* ---------------------------------------------------------- training */

/* One training step: zero the optimizer's grads, forward x, cost against y,
 * backward, optimizer step, ag_tape_reset(t). The zeroing and the step run
 * over t's threads, like its ops (same bits for any count). *loss (may be
 * NULL) gets the cost before the step, also when the step is refused. In
 * steady state it allocates nothing. Errors: the tape's (message copied
 * into err before the reset), AG_ERR_NULL, AG_ERR_NUMERIC (a NaN or Inf
 * gradient: the step is refused, see nn_optim_step). */
ag_status nn_mlp_train_step(nn_mlp *net, ag_tape *t, nn_optim *opt, nn_cost cost,
                            ag_tensor *x, ag_tensor *y, double *loss, nn_error *err);
/* An op: the cost of net on (x, y) plus the gradient penalty
 * lambda·‖∂C/∂x‖², the squared norm of the cost's gradient with respect to
 * the inputs x (every row; C is the batch cost). The input gradient is
 * recorded (ag_gradients with AG_CREATE_GRAPH), so the penalty's gradient,
 * a second derivative of C, reaches the parameters. lambda = 0 gives the
 * cost alone. NULL with the tape's status set (AG_ERR_VALUE for a negative
 * or non-finite lambda). */
ag_tensor *nn_penalized_loss(nn_mlp *net, ag_tape *t, nn_cost cost, ag_tensor *x, ag_tensor *y,
                             double lambda);
/* nn_mlp_train_step on nn_penalized_loss: *loss gets the cost plus the
 * penalty. Errors as nn_mlp_train_step's. */
ag_status nn_mlp_train_step_penalty(nn_mlp *net, ag_tape *t, nn_optim *opt, nn_cost cost,
                                    ag_tensor *x, ag_tensor *y, double lambda, double *loss,
                                    nn_error *err);
/* The Hessian-vector product of the cost of net on (x, y) with respect to
 * all its parameters (for curvature studies): v and hv hold
 * nn_mlp_param_count(net) elements of the model's dtype, in the order of
 * nn_mlp_data. Computed on t, which is reset before returning. Errors: the
 * tape's, AG_ERR_NULL, AG_ERR_NOMEM. */
ag_status nn_mlp_hvp(nn_mlp *net, ag_tape *t, nn_cost cost, ag_tensor *x, ag_tensor *y,
                     const void *v, void *hv, nn_error *err);
/* The accuracy (see nn_accuracy) of the model on x against target, computed
 * on t with recording off. A single output (C == 1) is thresholded at its
 * last activation's value at z = 0, so the class is 1 exactly when z >= 0:
 * 0.5 after NN_SIGMOID, 0 after NN_IDENTITY (logits, trained with
 * NN_COST_BCE_LOGITS) and the other activations. For another rule (e.g. an
 * identity output fitted to 0/1 with MSE: 0.5), call nn_mlp_forward and
 * nn_accuracy. Resets t before returning, so t must hold nothing the
 * caller still needs. Errors: the tape's, nn_accuracy's. */
ag_status nn_mlp_accuracy(nn_mlp *net, ag_tape *t, ag_tensor *x, const ag_tensor *target,
                          double *acc, nn_error *err);

/* A progress line per epoch on a caller-given stream:
 *   "epoch 3/30  1497 samples  52000 samples/s  loss 0.0123  acc 95.33%"
 * On a terminal (tty true) each line is redrawn in place with '\r';
 * otherwise it is written as a plain line. The caller measures time. */
typedef struct {
    FILE *out;
    bool tty;       /* set by nn_progress_init from isatty; may be overridden */
    size_t epochs;  /* total, shown as "epoch e/epochs" (0: just "epoch e") */
    size_t width;   /* length of the last line drawn, to blank its tail */
} nn_progress;

/* Prepares p for writing to out (a NULL out makes every call a no-op). */
void nn_progress_init(nn_progress *p, FILE *out, size_t epochs);
/* Writes the line for epoch (1-based); seconds <= 0 shows no rate, and a
 * NaN loss or accuracy is left out. Returns AG_ERR_IO if the write fails. */
ag_status nn_progress_epoch(nn_progress *p, size_t epoch, size_t samples, double seconds,
                            double loss, double accuracy);
/* Ends a redrawn line with '\n' (terminal only). */
ag_status nn_progress_end(nn_progress *p);

/* ------------------------------------------------------- model files
 * nn_mlp_save writes, and nn_mlp_load reads, this format (version 1). Every
 * integer is little-endian and every float IEEE-754 little-endian, whatever
 * the machine:
 *
 *   offset    size  type  field
 *   0         8           magic 89 4E 4E 4D 0D 0A 1A 0A ("\x89NNM\r\n\x1a\n")
 *   8         4     u32   version = 1
 *   12        4     u32   dtype: 0 = f32, 1 = f64
 *   16        4     u32   L = dense layers, 1..NN_MAX_LAYERS
 *   20        4     u32   reserved = 0
 *   24        8     f64   leaky_relu slope
 *   32        8(L+1) u64  sizes: inputs, then each layer's outputs (each >= 1)
 *   40+8L     4L    u32   activations (nn_act values)
 *   40+12L    8     u64   P = Σ n_in·n_out + n_out, the parameter count
 *   48+12L    P·s         parameters W1 (row-major [n_in, n_out]), b1, W2, b2, ...
 *                         (s = 4 for f32, 8 for f64)
 *   48+12L+Ps 4     u32   CRC-32 (ISO-HDLC, as zlib's crc32) of every byte before it
 */

/* Writes net to path atomically: into a new temporary file beside it
 * (path".<16 random hex digits>.tmp", created exclusively, so a file or
 * symlink planted there is never opened or followed), flushed and fsynced,
 * then renamed over path, and path's directory fsynced. Readers and other
 * savers of the same path see the old model or a new one, never a mix; a
 * failed save removes its temporary file and leaves path as it was.
 * Errors: AG_ERR_NULL, AG_ERR_VALUE (path empty or longer than 4096
 * bytes), AG_ERR_IO (the message names the file and strerror's reason). */
ag_status nn_mlp_save(const nn_mlp *net, const char *path, nn_error *err);
/* Reads a model from path into *out (caller frees). Every field, the
 * file's size against the header and the checksum are checked first,
 * streaming over the file with no allocation, so a bad or lying file costs
 * no memory; then the parameters are read into a new model (no initial
 * values drawn) and checked against the checksum once more. Errors:
 * AG_ERR_NULL, AG_ERR_IO (cannot open or read; not a regular file: a
 * directory, FIFO or device is refused at once, never waited on),
 * AG_ERR_FORMAT (bad magic: not a model file; unsupported version;
 * truncated; trailing bytes; "bad header field at byte N" naming the
 * field's first byte; checksum mismatch), AG_ERR_NOMEM. The file keeps no
 * init or seed: the loaded model's spec has NN_INIT_NORMAL and seed 0. */
ag_status nn_mlp_load(const char *path, nn_mlp **out, nn_error *err);
/* CRC-32 (ISO-HDLC: reflected, polynomial 0xEDB88320, as zlib) of n bytes,
 * continuing from crc (0 to start). nn_crc32(0, "123456789", 9) = 0xCBF43926. */
uint32_t nn_crc32(uint32_t crc, const void *data, size_t n);

/* -------------------------------------------- interop: NumPy and PyTorch
 * .npy (NumPy's format, nn/npy.c) and safetensors (nn/safetensors.c) files
 * of f32 / f64 tensors, and an MLP's parameters in the layout of PyTorch's
 * nn.Sequential(nn.Linear, activation, ..., nn.Linear). Writers save
 * atomically, as nn_mlp_save. Readers check every size against the file's
 * size before they allocate anything a header claims. */

/* Writes x (f32 or f64, any rank, a leaf or a tape tensor) to path as NumPy's
 * np.save writes it, byte for byte: version 1.0, descr '<f4' or '<f8',
 * fortran_order False, the header padded to 64 bytes. Errors: AG_ERR_NULL,
 * AG_ERR_VALUE (path empty or too long), AG_ERR_IO. */
ag_status nn_npy_save(const ag_tensor *x, const char *path, nn_error *err);
/* Reads a .npy file (version 1.0, 2.0 or 3.0) into a new leaf *out (caller
 * frees): descr f4 or f8 in any byte order ('<', '>', '=', '|'; big-endian
 * data is converted), C order, rank 0..AG_MAX_RANK. Errors: AG_ERR_NULL,
 * AG_ERR_IO (cannot open or read; not a regular file), AG_ERR_FORMAT (not
 * a .npy file, unsupported version, bad or lying header, Fortran order,
 * another dtype such as '<i4', rank over AG_MAX_RANK, a shape whose size
 * overflows, truncated data, trailing bytes), AG_ERR_NOMEM. *out is NULL
 * on failure. */
ag_status nn_npy_load(const char *path, ag_tensor **out, nn_error *err);

/* A metadata entry of a safetensors file ("__metadata__": string to string). */
typedef struct {
    const char *key;
    const char *value;
} nn_meta;

/* Writes n named tensors (f32 or f64, any rank; names non-empty, valid
 * UTF-8, unique, not "__metadata__") and n_meta metadata entries (unique
 * keys; meta may be NULL when n_meta is 0) to path in the safetensors
 * format: an 8-byte little-endian header length, a JSON header {name:
 * {"dtype": "F32"|"F64", "shape": [...], "data_offsets": [b, e]}, ...}
 * padded with spaces to 8 bytes, then the data, little-endian, in the
 * given order. Errors: AG_ERR_NULL, AG_ERR_VALUE (a name or key as above,
 * a NULL tensor, path), AG_ERR_IO. */
ag_status nn_safetensors_save(const char *path, const nn_param *tensors, size_t n,
                              const nn_meta *meta, size_t n_meta, nn_error *err);

typedef struct nn_safetensors nn_safetensors;

/* Reads a safetensors file into *out (caller frees with
 * nn_safetensors_free). The JSON header is parsed strictly (RFC 8259;
 * objects, strings with escapes, non-negative integers; no duplicate
 * names); tensors are F32 or F64 of rank 0..AG_MAX_RANK; their
 * data_offsets must tile the data exactly (in bounds, no overlap, no gap,
 * each numel·size bytes), all checked before any tensor is allocated.
 * Errors: AG_ERR_NULL, AG_ERR_IO, AG_ERR_FORMAT (truncated, header length
 * over the file's size or 100,000,000, bad JSON naming its byte, another
 * dtype, bad shape or offsets naming the tensor), AG_ERR_NOMEM. */
ag_status nn_safetensors_load(const char *path, nn_safetensors **out, nn_error *err);
/* The tensors in the header's order (names and leaves owned by st); *n
 * receives the count. NULL (and *n = 0) for a NULL st. */
const nn_param *nn_safetensors_tensors(const nn_safetensors *st, size_t *n);
/* The tensor named name, or NULL. */
ag_tensor *nn_safetensors_get(const nn_safetensors *st, const char *name);
/* The metadata entries (owned by st); *n receives the count. */
const nn_meta *nn_safetensors_meta(const nn_safetensors *st, size_t *n);
/* The metadata value of key, or NULL. */
const char *nn_safetensors_meta_get(const nn_safetensors *st, const char *key);
/* Frees st, its tensors and strings. NULL is a no-op. */
void nn_safetensors_free(nn_safetensors *st);

/* Writes net's parameters as the state_dict of PyTorch's nn.Sequential of
 * nn.Linear and activation modules: Linear l (from 0) is module
 * l + (the number of layers before l whose activation is not
 * NN_IDENTITY), since every other activation is a module after its Linear
 * (identity has none). So 3-16-16-2 with (tanh, relu, identity) is
 * Sequential(Linear(3,16), Tanh(), Linear(16,16), ReLU(), Linear(16,2)):
 * "0.weight" [16,3] (W1 transposed: PyTorch computes x·Wᵀ + b), "0.bias",
 * "2.weight", "2.bias", "4.weight", "4.bias", in the model's dtype.
 * Metadata: "format": "pt", "nn.activations": "tanh,relu,identity" (the
 * nn_act_name of each layer), "nn.leaky_slope": the slope ("%.17g").
 * Errors: AG_ERR_NULL, AG_ERR_NOMEM (the transposed weights),
 * nn_safetensors_save's. */
ag_status nn_mlp_save_safetensors(const nn_mlp *net, const char *path, nn_error *err);
/* Reads such a file into a new model *out (caller frees). With spec NULL
 * the file must carry "nn.activations" (as nn_mlp_save_safetensors
 * writes): the layers and activations come from it, the widths from the
 * weights' shapes, the dtype from the tensors (all of one dtype), the slope
 * from "nn.leaky_slope" (absent: the default). With a spec (e.g. for a
 * file of PyTorch's safetensors.torch.save_file) its sizes, activations,
 * dtype and slope are used (init and seed are not: no values are drawn),
 * tensors of the other dtype are converted, and a file's
 * "nn.activations", if any, must agree. Either way the file must hold
 * exactly "<i>.weight" [n_out, n_in] and "<i>.bias" [n_out] of every
 * layer, i the module index above. Errors: nn_safetensors_load's,
 * AG_ERR_VALUE (no "nn.activations" and no spec, an unknown activation
 * name, a slope that is not a finite number, activations that disagree
 * with the spec, a missing or an extra tensor, named), AG_ERR_SHAPE (a
 * tensor's shape, named with the expected one), AG_ERR_DTYPE (mixed dtypes
 * with spec NULL), nn_mlp_new's spec errors, AG_ERR_NOMEM. *out is NULL on
 * failure. */
ag_status nn_mlp_load_safetensors(const char *path, const nn_spec *spec, nn_mlp **out,
                                  nn_error *err);

/* ------------------------------------------------------- checkpoints
 * A checkpoint holds what a training run needs to go on exactly as if it
 * had never stopped: the model's parameters, the optimizer's configuration
 * (learning rate included), step count and state (momenta, Adam's moments,
 * in double as kept), the batch iterator's position, row order and RNG,
 * and the epoch (schedules such as nn_lr_at are functions of it). Train 5
 * epochs, save, load into fresh objects in a new process and train 5 more:
 * the parameters are those of 10 epochs straight, bit for bit (same thread
 * count or not, as every step gives the same bits for any).
 *
 * Format (version 1), every integer little-endian, every real an IEEE-754
 * f64 little-endian: magic 89 4E 4E 43 0D 0A 1A 0A ("\x89NNC\r\n\x1a\n"),
 * u32 version, u32 flags (bit 0: the batch iterator is saved), u64 epoch;
 * the model: u32 dtype (0 f32, 1 f64), u32 L, f64 leaky slope, u64 sizes
 * [L+1], u32 activations [L], u64 P; the optimizer: u32 kind, u32 flags
 * (bit 0 nesterov, bit 1 allow_nonfinite), f64 lr, momentum, weight_decay,
 * beta1, beta2, eps, clip_norm, u64 steps, u64 S (state values); if saved,
 * the iterator: u64 rows, u64 batch, u64 position, u32 shuffle, u32 the
 * RNG's has_spare, u64 s[4], f64 spare; then the arrays: P parameters in the
 * model's dtype (W1, b1, W2, ... as nn_mlp_data), S f64 state values, the
 * row order (u64 per row); and a CRC-32 (nn_crc32) of every byte before it. */

/* Writes net, opt (which must update net's parameters: nn_mlp_optim_new),
 * batches (NULL for training without an iterator) and epoch (the epochs
 * done: the next one's index) to path, atomically as nn_mlp_save writes.
 * Save between epochs or between batches alike. Errors: AG_ERR_NULL (path,
 * net or opt), AG_ERR_VALUE (opt not over net's parameters; path empty or
 * too long), AG_ERR_IO (naming the file and the reason). */
ag_status nn_checkpoint_save(const char *path, const nn_mlp *net, const nn_optim *opt,
                             const nn_batches *batches, size_t epoch, nn_error *err);
/* Restores a checkpoint into objects made as for a fresh run (as PyTorch's
 * load_state_dict): net of the same sizes, activations, slope and dtype;
 * opt of the same kind over net's parameters (its configuration is
 * replaced by the checkpoint's); batches over data of the same row count
 * and batch size, shuffled or not as saved (NULL if saved without); *epoch
 * (epoch may be NULL) gets the epoch saved. The file is read and checked
 * whole before anything is changed: on failure net, opt and batches are
 * untouched. Errors: AG_ERR_NULL, AG_ERR_IO (cannot open or read; not a
 * regular file), AG_ERR_FORMAT (not a checkpoint, unsupported version,
 * truncated, trailing bytes, a malformed field naming its first byte, a
 * row order that is not a permutation, checksum mismatch), AG_ERR_VALUE
 * (made for other objects: the message names what differs, e.g. "the
 * checkpoint's model is 64-30-10 f32, this one 64-256-256-10 f32"; or
 * optimizer settings nn_optim_new refuses), AG_ERR_NOMEM (the file is
 * staged in memory as large as the objects' state). */
ag_status nn_checkpoint_load(const char *path, nn_mlp *net, nn_optim *opt, nn_batches *batches,
                             size_t *epoch, nn_error *err);

#ifdef __cplusplus
}
#endif
#endif
