/* nn_mpi.h: data-parallel training of an nn MLP on MPI, bitwise the same
 * for every rank count that divides the shard count.
 *
 * Every rank holds the whole model and passes the same global mini-batch
 * (the same data, batched with the same seed). A global batch of B rows is
 * cut into S micro-shards (S a power of two, fixed by the caller), shard k
 * holding rows [k·B/S, (k+1)·B/S); N ranks each take S/N consecutive
 * shards. Each shard's gradient is computed alone, scaled by its share of
 * B, so that the shards sum to the gradient of the global batch's mean
 * cost. The shard gradients are summed in one fixed binary tree over the
 * S shards: a rank sums its shards as a subtree, and the ranks' subtree
 * sums are combined in the same tree above them (a reduce-scatter by
 * recursive halving and an allgather by recursive doubling, partners at
 * distance 1, 2, 4, ..., which moves 2(N-1)/N of the gradient per rank, a
 * ring's bound). Every rank thus ends with the same bits, the bits one
 * process with S shards gets, and takes the same optimizer step.
 *
 * What the promise needs: the same S, global batch, data order, seed,
 * dtype and model on every run, and the same matrix kernels
 * (ag_kernel_name) on every rank; the thread count does not matter (the
 * engine gives the same bits for any).
 *
 * Errors are collective: every nn_mpi_* function below except the
 * accessors is called by every rank of the communicator, and returns on
 * every rank the same status and message, those of the lowest failing
 * rank, prefixed "rank R: " ("rank 1: nn_mpi_train_step: shard 3 of 4:
 * ag_matmul: ..."). A failure leaves the model and the optimizer as they
 * were on every rank. Only a NULL nn_mpi (there is no communicator to
 * reach the others) and MPI's own failures (a lost peer) stay local; MPI
 * is never aborted by this library.
 *
 * Threads: only the calling thread calls MPI (MPI_THREAD_FUNNELED is
 * enough); the engine's own threads never do. */
#ifndef NN_MPI_H
#define NN_MPI_H

#include "nn.h"

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_MPI_SHARDS_MAX 4096 /* micro-shards per global batch */

typedef struct nn_mpi nn_mpi;

/* Makes local outcomes collective: every rank of comm passes its own
 * status s (and, on failure, its message in err). Returns AG_OK on every
 * rank when all passed AG_OK; otherwise, on every rank, the status of the
 * lowest failing rank R with err holding "rank R: <its message>" (its
 * status's name when it passed a NULL err). For a caller's own steps,
 * e.g. loading a data file on every rank. */
ag_status nn_mpi_agree(MPI_Comm comm, ag_status s, nn_error *err);

/* Makes a data-parallel trainer of net over comm (duplicated, so its
 * messages never meet the caller's) into *out, with S = shards micro-shards
 * per global batch; caller frees with nn_mpi_free (collective, before
 * MPI_Finalize). net must outlive it. Every rank's net must have the same
 * layer sizes, activations and dtype; rank 0's parameters are copied to
 * every rank, so all start equal. Allocates here all a step needs beyond
 * the tape: log2(S/N) sums the size of the parameters, and half of one to
 * receive from other ranks. Errors: AG_ERR_NULL (comm is
 * MPI_COMM_NULL: local), AG_ERR_VALUE (S not a power of two in
 * [1, NN_MPI_SHARDS_MAX], the rank count not dividing S, S or the models
 * differing between ranks), AG_ERR_NOMEM, AG_ERR_IO (MPI failed). */
ag_status nn_mpi_new(MPI_Comm comm, nn_mlp *net, size_t shards, nn_mpi **out, nn_error *err);
/* Frees the trainer (not the model). Collective; NULL is a no-op. */
void nn_mpi_free(nn_mpi *dp);
/* This rank and the rank count (-1 and 0 for NULL). */
int nn_mpi_rank(const nn_mpi *dp);
int nn_mpi_size(const nn_mpi *dp);
/* Bytes this rank sent to reduce the gradients in its last step (0 on
 * one rank): 2(N-1)/N · P · dtype size, P the parameter count, up to the
 * rounding of odd halves. */
uint64_t nn_mpi_bytes_sent(const nn_mpi *dp);

/* One data-parallel training step of the trainer's model on the global
 * batch x [B, ...], y [B, ...] (the same on every rank; B >= 1): zero the
 * gradients, each of this rank's shards forward, cost, backward, the tree
 * sum, then opt's step on every rank (opt made by nn_mlp_optim_new on the
 * trainer's model) and ag_tape_reset(t). In steady state it allocates
 * nothing (MPI itself may). *loss (may be NULL) gets the
 * global batch's cost, the same on every rank, also when the step is
 * refused after the sum. A shard with no rows (B < S) adds 0. Errors
 * (collective, see above): the tape's (checked mode's NaN or Inf, a shape,
 * out of memory), AG_ERR_NULL, AG_ERR_VALUE (opt updates other tensors
 * than the trainer's model), AG_ERR_SHAPE (x or y a scalar, their rows
 * differ, or the ranks' batches differ in rows), AG_ERR_NUMERIC (a NaN or
 * Inf in the summed gradient: every rank refuses the step, naming the
 * lowest rank whose shards produced one), AG_ERR_IO (MPI failed). */
ag_status nn_mpi_train_step(nn_mpi *dp, ag_tape *t, nn_optim *opt, nn_cost cost,
                            ag_tensor *x, ag_tensor *y, double *loss, nn_error *err);

/* Saves the trainer's model to path (nn_mlp_save, on rank 0 only) after
 * checking that every rank's parameters equal rank 0's (a CRC-32 of the
 * parameters). Errors (collective): nn_mlp_save's, AG_ERR_STATE (a rank's
 * parameters differ; nothing written), AG_ERR_IO (MPI failed). */
ag_status nn_mpi_save(nn_mpi *dp, const char *path, nn_error *err);
/* Loads a model on every rank of comm: rank 0 reads path (nn_mlp_load)
 * and sends the model to the others, so path needs to exist on rank 0's
 * machine only. Every rank's *out (caller frees) is the file's model.
 * Errors (collective): nn_mlp_load's, AG_ERR_NULL (comm MPI_COMM_NULL:
 * local), AG_ERR_NOMEM, AG_ERR_IO (MPI failed). */
ag_status nn_mpi_load(MPI_Comm comm, const char *path, nn_mlp **out, nn_error *err);

#ifdef __cplusplus
}
#endif
#endif
