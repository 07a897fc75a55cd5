/* mpitest.c: see mpitest.h. */
#include "mpitest.h"

#include <stdlib.h>

int mt_failures, mt_rank, mt_size;

void mt_init(int *argc, char ***argv)
{
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &mt_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mt_size);
}

int mt_finish(const char *program)
{
    MPI_Finalize();
    if (mt_failures)
        fprintf(stderr, "%s: rank %d of %d: %d checks failed\n", program, mt_rank, mt_size,
                mt_failures);
    return mt_failures != 0;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "rank %d: %s: %s\n", mt_rank, what, msg);
    MPI_Abort(MPI_COMM_WORLD, 1); /* a broken test setup, not a case under test */
}

nn_mlp *mt_model(const size_t *sizes, size_t L, ag_dtype dt, uint64_t seed)
{
    nn_act acts[NN_MAX_LAYERS];
    for (size_t l = 0; l < L; l++)
        acts[l] = l + 1 < L ? NN_RELU : NN_IDENTITY;
    nn_spec spec = {.n_layers = L, .sizes = sizes, .acts = acts, .dtype = dt,
                    .init = NN_INIT_HE, .seed = seed};
    nn_mlp *net = NULL;
    nn_error err = {0};
    if (nn_mlp_new(&spec, &net, &err) != AG_OK)
        die("nn_mlp_new", err.msg);
    return net;
}

void mt_data(ag_dtype dt, size_t n, size_t features, size_t classes, size_t targets,
             uint64_t seed, ag_tensor **x, ag_tensor **y)
{
    ag_rng rng;
    ag_rng_seed(&rng, seed);
    *x = ag_rand_uniform(dt, AG_SHAPE(n, features), 0, 1, &rng);
    if (targets) {
        *y = ag_rand_uniform(dt, AG_SHAPE(n, targets), -1, 1, &rng);
    } else {
        *y = ag_zeros(dt, AG_SHAPE(n));
        for (size_t i = 0; *y && i < n; i++) {
            double c = (double)ag_rng_below(&rng, classes);
            if (dt == AG_F32)
                ((float *)ag_data(*y))[i] = (float)c;
            else
                ((double *)ag_data(*y))[i] = c;
        }
    }
    if (!*x || !*y)
        die("mt_data", "out of memory");
}

size_t mt_param_bytes(const nn_mlp *net)
{
    return nn_mlp_param_count(net) * ag_dtype_size(nn_mlp_spec(net)->dtype);
}
