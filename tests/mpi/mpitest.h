/* mpitest.h: what the MPI tests share. They are plain programs (Criterion
 * forks its workers, which MPI does not allow), run by mpirun on 1, 2 or 4
 * ranks; each rank checks what it sees and exits 1 on any failure, so
 * mpirun fails when any rank does. */
#ifndef MPITEST_H
#define MPITEST_H

#include "nn_mpi.h"

#include <stdio.h>

/* Failed checks so far on this rank. */
extern int mt_failures;
/* This rank and the rank count (set by mt_init). */
extern int mt_rank, mt_size;

/* MPI_Init_thread (funneled: only the main thread calls MPI). */
void mt_init(int *argc, char ***argv);
/* Finalizes MPI; returns the exit status: 0 when this rank saw no failure. */
int mt_finish(const char *program);

/* Counts a failure, with the rank, the line and a message, when !cond. */
#define MT_CHECK(cond, ...)                                                           \
    do {                                                                              \
        if (!(cond)) {                                                                \
            mt_failures++;                                                            \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", mt_rank, __FILE__,  \
                    __LINE__, #cond);                                                 \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* A seeded MLP (He init) of L layers of the given widths: ReLU, identity
 * last. Exits on failure (a test cannot go on without it). */
nn_mlp *mt_model(const size_t *sizes, size_t L, ag_dtype dt, uint64_t seed);
/* n rows of `features` uniform inputs in [0, 1) into *x, and into *y
 * class indices [n] (targets 0) or uniform real targets [n, targets]. */
void mt_data(ag_dtype dt, size_t n, size_t features, size_t classes, size_t targets,
             uint64_t seed, ag_tensor **x, ag_tensor **y);
/* Bytes of the model's parameters. */
size_t mt_param_bytes(const nn_mlp *net);

#endif
