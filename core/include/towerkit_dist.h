/*
 * towerkit_dist.h - data-parallel training over MPI (docs/distributed.md).
 *
 * The one part of towerkit that talks to MPI is core/src/dist.c; it is compiled with
 * MPI when the build finds mpi.h (the Makefile's MPI block) and as stubs otherwise, so
 * a host links the same symbols either way: without MPI, tk_dist_available() is false
 * and tk_dist_init fails with a message saying how to get it.
 *
 * The model: every rank runs the same program on its share of each global batch. The
 * collectives here make the ranks agree bit for bit: a sum over ranks is always formed
 * in rank order by one owner of each block of the vector and sent to every rank
 * (tk_dist_allreduce_*), so every rank ends a step with identical gradients, identical
 * parameters and identical optimizer state. MPI is only called from the thread that
 * called tk_dist_init (MPI_THREAD_FUNNELED); the pool's and OpenBLAS's threads never
 * call it.
 *
 * Faults: once initialised, a process that exits with a non-zero status (a Lua error
 * in `towerkit script.lua`, os.exit(1), exit(3) in C) prints which rank failed and calls
 * MPI_Abort, which ends every rank: a failure never leaves the others waiting in a
 * collective. A zero exit finalises MPI.
 */
#ifndef TOWERKIT_DIST_H
#define TOWERKIT_DIST_H

#include "towerkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this build has MPI. */
bool tk_dist_available(void);
/* Initialises MPI once (MPI_Init_thread, funneled); later calls do nothing. TK_ERROR
 * (tk_last_error) without MPI in the build or when MPI fails to start. */
tk_status tk_dist_init(void);
bool tk_dist_initialized(void);
/* This process's rank and the number of ranks of MPI_COMM_WORLD; 0 and 1 before
 * tk_dist_init (one process). */
int tk_dist_rank(void);
int tk_dist_size(void);
/* Collectives: every rank calls them in the same order with matching sizes. They
 * return TK_ERROR (tk_last_error) when MPI is not initialised or an argument is bad;
 * MPI's own failures abort the job (MPI_ERRORS_ARE_FATAL). */
tk_status tk_dist_barrier(void);
/* buf[0, n) = the sum over ranks of each rank's buf, the same bits on every rank: the
 * vector is cut into one block per rank, each block's contributions summed in rank order
 * by its owner (an all-to-all), then all-gathered. Sends about 2 (size - 1) / size x n
 * values per rank, as a ring all-reduce does. */
tk_status tk_dist_allreduce_f32(float *buf, int64_t n);
tk_status tk_dist_allreduce_f64(double *buf, int64_t n);
/* counts[r] = rank r's n, for every r (size entries). */
tk_status tk_dist_allgather_count(int64_t n, int64_t *counts);
/* recv = the concatenation in rank order of every rank's send (counts[r] elements of
 * dtype from rank r, as tk_dist_allgather_count gave; F32 or I64). */
tk_status tk_dist_allgatherv(const void *send, tk_dtype dtype, void *recv, const int64_t *counts);
/* Broadcast of n elements of dtype from rank root. */
tk_status tk_dist_bcast(void *buf, tk_dtype dtype, int64_t n, int root);

/* The op of global in-batch negatives: every rank's rows of x ([n_r, D], F32) stacked in
 * rank order ([sum n_r, D], an arena tensor of ctx); *offset (may be NULL) gets this
 * rank's first row in it. Its backward sums the output's gradient over the ranks
 * (reduce-scatter) and adds this rank's rows of it to x's gradient: each rank's loss
 * sees every rank's items, and the gradient of an item goes back to the rank whose
 * tower computed it. A collective, in forward and in backward. */
tk_tensor *tk_dist_allgather_rows(tk_ctx *ctx, tk_tensor *x, int64_t *offset);

/* After tk_backward on every rank: replaces the gradient of each trainable parameter
 * of `b` in ctx by the mean over the ranks of their gradients. Dense gradients go
 * through tk_dist_allreduce_f32 (one buffer for all); an embedding table's sparse row
 * gradient is coalesced, its (row, gradient row) pairs all-gathered, and the union
 * coalesced on every rank in rank order (the same rows and bits everywhere), then
 * divided by the size. A parameter that got a gradient on some rank only counts as zero
 * on the others. With one rank nothing changes. */
tk_status tk_dist_sync_grads(tk_ctx *ctx, const tk_block *b);

/* Counters of this process's collectives since the last reset: calls, bytes it sent
 * (the payload it handed to MPI, as a point-to-point implementation would send it) and
 * the wall time spent inside MPI. */
typedef struct tk_dist_stats {
    int64_t calls;
    int64_t bytes_sent;
    double seconds;
} tk_dist_stats;
void tk_dist_get_stats(tk_dist_stats *out);
void tk_dist_reset_stats(void);

/* Prints "towerkit: rank R of N: msg" on stderr and ends every rank of the job
 * (MPI_Abort with code). Without MPI (or before init) prints the message and exits. */
_Noreturn void tk_dist_abort(int code, const char *msg);
/* Finalises MPI (after which no collective may run); a no-op if not initialised. */
tk_status tk_dist_finalize(void);

#ifdef __cplusplus
}
#endif
#endif /* TOWERKIT_DIST_H */
