/*
 * towerkit_dist.h - data-parallel training over MPI (docs/distributed.md).
 *
 * The one part of towerkit that talks to MPI is core/src/dist.c; it is compiled with
 * MPI when the build finds mpi.h (the Makefile's MPI block), and otherwise as functions
 * that report a build without MPI, so a host links the same symbols either way: without MPI, tk_dist_available() is false
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
/* Whether MPI is initialised and this is the thread that called tk_dist_init (the only
 * one that may call a collective). */
bool tk_dist_on_main_thread(void);
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
/* The same broadcast, but waiting by testing it with sleeps in between, from a
 * microsecond doubling up to `poll` seconds (at most 1; else 1 ms), so that a rank idle
 * in it (a server's follower between requests) uses no CPU while one that gets
 * broadcasts often answers them quickly; poll 0 waits without sleeping (MPI_Wait: the
 * root, which has the data). Every rank must use this function for the broadcast (MPI
 * matches a non-blocking collective only with its kind). The stats' seconds include
 * the wait. */
tk_status tk_dist_bcast_idle(void *buf, tk_dtype dtype, int64_t n, int root, double poll);

/* All-to-all with counts: send_counts[r] elements of dtype (F32 or I64) go to rank r,
 * taken from send in rank order; recv gets, in rank order, what every rank sent to this
 * one, recv_counts[r] from rank r. The counts themselves are exchanged first with
 * tk_dist_alltoall_counts: `per` int64 values to each rank (send[r per .. (r + 1) per)
 * to rank r; recv likewise from each), so a caller can send several lists' counts in
 * one call and size recv from them. */
tk_status tk_dist_alltoall_counts(const int64_t *send, int64_t *recv, int64_t per);
tk_status tk_dist_alltoallv(const void *send, const int64_t *send_counts, tk_dtype dtype, void *recv,
                            const int64_t *recv_counts);

/* The op of global in-batch negatives: every rank's rows of x ([n_r, D], F32) stacked in
 * rank order ([sum n_r, D], an arena tensor of ctx); *offset (may be NULL) gets this
 * rank's first row in it. Its backward sums the output's gradient over the ranks
 * (reduce-scatter) and adds this rank's rows of it to x's gradient: each rank's loss
 * sees every rank's items, and the gradient of an item goes back to the rank whose
 * tower computed it. A collective, in forward and in backward. */
tk_tensor *tk_dist_allgather_rows(tk_ctx *ctx, tk_tensor *x, int64_t *offset);

/* After tk_backward on every rank: replaces the gradient of each trainable parameter
 * of `b` in ctx by the mean over the ranks of their gradients. Dense gradients are
 * packed into buckets (tk_dist_grad_opts) and each bucket summed as
 * tk_dist_allreduce_f32 sums (an all-to-all of blocks, the owner's sum in rank order, an
 * all-gather), with non-blocking collectives on communicators of their own; the bits do
 * not depend on the buckets, as every element is still summed in rank order by one
 * owner. An embedding table's sparse row gradient is coalesced, its (row, gradient row)
 * pairs all-gathered, and the union coalesced on every rank in rank order (the same rows
 * and bits everywhere), then divided by the size. A parameter that got a gradient on
 * some rank only counts as zero on the others. With one rank nothing changes. Without
 * tk_dist_grads_begin for this step it uses tk_dist_grad_defaults() without overlap. */
tk_status tk_dist_sync_grads(tk_ctx *ctx, const tk_block *b);

/* How the dense gradients are exchanged. bucket_bytes: the gradients go in buckets of
 * at most this many bytes (a larger gradient has a bucket of its own), in the order they
 * become final during backward; 0: one bucket for all. overlap: a bucket's reduction
 * starts during tk_backward as soon as its gradients are final (from a backward hook,
 * tk_ctx_set_backward_hook), and tk_dist_sync_grads waits for what is still running. */
typedef struct tk_dist_grad_opts {
    int64_t bucket_bytes;
    bool overlap;
} tk_dist_grad_opts;
/* The defaults: TK_DIST_BUCKET_BYTES, overlap on (docs/distributed.md, measured). */
#define TK_DIST_BUCKET_BYTES (1 << 20)
tk_dist_grad_opts tk_dist_grad_defaults(void);
/* Sets up the gradient exchange of the step whose forward pass just ran in ctx: call it
 * on every rank after the forward pass and before tk_backward, then tk_dist_sync_grads
 * after it (opts NULL: the defaults). With overlap it installs ctx's backward hook, which
 * starts each bucket's reduction while backward runs, on the thread that called
 * tk_dist_init only (MPI_THREAD_FUNNELED: on any other thread the buckets wait for
 * tk_dist_sync_grads). The buckets are laid out from the parameters that had dense
 * gradients in ctx's last exchange for `b` (what every rank agreed on then), so the
 * first step of a block, and a step whose gradients differ from the last one's, reduce
 * all or some of their gradients after backward instead. No collective; TK_ERROR
 * (tk_last_error) for bad options or while an earlier step's exchange is unfinished. */
tk_status tk_dist_grads_begin(tk_ctx *ctx, const tk_block *b, const tk_dist_grad_opts *opts);

/* Row-sharded embedding tables (core/src/dist_table.c): rank r of N holds rows
 * [floor(r V / N), floor((r + 1) V / N)) of each table of V rows, and the optimizer holds
 * state for those rows only. A step reads the rows its batch looks up from their owners
 * (tk_dist_tables_prefetch, else the embeddings blocks' forward) and sends their
 * gradients back to the owners (tk_dist_tables_sync); the results are bitwise those of
 * replicated tables. While sharded, every forward pass through an embeddings block is a
 * collective (it fetches rows from the other ranks): every rank must run it, on the
 * thread that called tk_dist_init (on another thread it fails with a message). A host
 * that embeds or serves on one rank alone (tk_block_embed, tk_model_recommend) calls
 * tk_dist_tables_gather first; a forward on one rank alone would wait for the others.
 *
 * tk_dist_tables_shard: every embeddings block under root reads its tables sharded from
 * now on: the block's parameter becomes this rank's shard (a tensor flagged
 * TK_TENSOR_ROW_SHARD, [its rows, D]); a table gathered since its last sharding takes its
 * rows back into the same shard (the optimizer keeps its state). Local (no collective),
 * but every rank must shard the same model. Call it before each training step: it also
 * drops the previous step's fetched rows. TK_ERROR outside MPI or with one rank.
 * tk_dist_tables_sync: after tk_backward and before tk_dist_sync_grads, a collective:
 * the shards' gradients, the mean over ranks, on their owners (tk_dist_sync_grads skips
 * shards). tk_dist_tables_gather: a collective; the whole tables back into the blocks (on
 * every rank), for whatever needs them (saving, evaluating, exporting). */
tk_status tk_dist_tables_shard(tk_block *root);
tk_status tk_dist_tables_sync(tk_ctx *ctx, tk_block *root);
tk_status tk_dist_tables_gather(tk_block *root);
/* After tk_dist_tables_shard, before the forward (a collective): the rows every
 * embeddings block under root will read for input `in` (the batch the forward gets),
 * fetched for all blocks in one exchange (3 all-to-alls instead of 3 a block); each
 * block's forward takes its rows when it gets the very same id tensors, and fetches
 * itself otherwise (a second forward, of sampled negatives). Optional: without it
 * every forward fetches its own. */
tk_status tk_dist_tables_prefetch(tk_ctx *ctx, tk_block *root, tk_value *in);
/* tk_clip_grad_norm for a model with row-sharded tables, after tk_dist_tables_sync and
 * tk_dist_sync_grads: the norm of all the model's gradients (the replicated ones once,
 * every rank's shards), the same on every rank (the shards' sums of squares are added in
 * rank order); above max_norm every gradient is scaled by max_norm / norm. A collective.
 * -1 (tk_last_error) on an error. */
double tk_dist_tables_clip_grad_norm(tk_ctx *ctx, double max_norm);
/* Whether t is (or was gathered from) a sharded table; then its rows [*lo, *lo + *count)
 * of *rows are this rank's. */
bool tk_dist_table_shard_info(const tk_tensor *t, int64_t *lo, int64_t *count, int64_t *rows);
/* The number of sharded tables this process holds (a freed model's go at the next
 * tk_dist_tables_shard). */
int64_t tk_dist_tables_count(void);

/* Counters of this process's collectives since the last reset: calls, bytes it sent
 * (the payload it handed to MPI, as a point-to-point implementation would send it) and
 * the wall time spent inside MPI. */
typedef struct tk_dist_stats {
    int64_t calls;
    int64_t bytes_sent;
    double seconds;
    /* tk_dist_sync_grads' buckets of dense gradients, how many of them started their
     * reduction during backward (overlap), and the wall time it spent on dense
     * gradients after backward (the part of their exchange backward did not hide, waiting
     * for the slower rank included) */
    int64_t buckets;
    int64_t buckets_overlapped;
    double dense_seconds;
} tk_dist_stats;
void tk_dist_get_stats(tk_dist_stats *out);
void tk_dist_reset_stats(void);

/* ---------------------------------------------------------------------------------- */
/* Sharded retrieval: a catalogue split over the ranks (core/src/sharded.c)             */
/* ---------------------------------------------------------------------------------- */

/* The catalogue is the ranks' shards stacked in rank order: rank r's row j is global
 * index offset_r + j. The top-k of a query is tk_topk's on that catalogue: score
 * descending, then the lower global index; each rank takes the exact top k of its
 * shard (tk_topk) and the N lists are merged on every rank. tk_topk scores items in
 * sgemm blocks of TK_TOPK_ITEM_BLOCK (4096) rows whose bits depend on an item's place in
 * its block: when every shard but the last has a multiple of them (tk_dist_shard_range
 * with align 0 cuts so),
 * the scores, indices and ties are those of tk_topk on the whole catalogue bit for bit;
 * with any other split the result is the exact top-k of scores that may differ from the
 * whole catalogue's in the last bit. Before tk_dist_init (or without MPI) there is one
 * rank: the index is the whole catalogue and nothing is exchanged. */

/* The rows [*lo, *lo + *count) of a catalogue of n items that rank `rank` of `size`
 * holds: contiguous, in rank order, cut at multiples of align (the first ranks fill
 * first; with fewer blocks than ranks the last ranks hold none). align 0 (or below):
 * TK_TOPK_ITEM_BLOCK, the shards of a ShardedIndex; the export of embeddings
 * (tk.distributed.export_range) passes its own. */
void tk_dist_shard_range(int64_t n, int rank, int size, int64_t align, int64_t *lo, int64_t *count);
/* The merge alone, for a host that runs tk_topk on its shard itself: idx (I64 [Q, k],
 * this shard's rows, -1 pads at the ends of rows) and scores (F32 [Q, k]) as tk_topk
 * gave them, offset this shard's first global index; out_idx (global indices) and
 * out_scores, the same shapes, get the global top k on every rank. A collective: every
 * rank passes the same Q and k (else every rank fails). */
tk_status tk_dist_topk_merge(const tk_tensor *idx, const tk_tensor *scores, int64_t offset, tk_tensor *out_idx,
                             tk_tensor *out_scores);

typedef struct tk_sharded_index tk_sharded_index;
/* This rank's shard: item ids (I64 [n]) and their embeddings (F32 [n, D]; a heap tensor
 * is retained, an arena one copied); n may be 0. A collective (the shards' sizes are
 * exchanged): every rank must call it, with the same D. NULL (tk_last_error) on a bad
 * shard on any rank. Free with tk_sharded_index_free. */
tk_sharded_index *tk_sharded_index_new(const tk_tensor *ids, const tk_tensor *embeddings);
void tk_sharded_index_free(tk_sharded_index *ix);
/* The whole catalogue's size, this shard's first global index, this shard's size. */
int64_t tk_sharded_index_size(const tk_sharded_index *ix);
int64_t tk_sharded_index_offset(const tk_sharded_index *ix);
int64_t tk_sharded_index_shard_size(const tk_sharded_index *ix);
/* The global top k of each query (F32 [Q, D], the same on every rank): out_ids (I64 [Q,
 * k], the items' ids), out_scores (F32 [Q, k]) and out_index (may be NULL: I64 [Q, k],
 * global indices), best first, on every rank; -1 / -INFINITY where the catalogue has
 * fewer than k items left. Exclusions (may be NULL) are item ids, CSR as tk_topk's but
 * starting at 0: excl_offsets [Q + 1] (excl_offsets[0] == 0, non-decreasing), excl_ids;
 * every row holding an excluded id is skipped. A
 * collective: every rank passes the same queries, k and exclusions; an error in the
 * arguments is then the same on every rank, and a rank's own failure (out of memory)
 * makes every rank fail. */
tk_status tk_sharded_index_query(tk_sharded_index *ix, const tk_tensor *queries, int64_t k, const int64_t *excl_offsets,
                                 const int64_t *excl_ids, tk_tensor *out_ids, tk_tensor *out_scores,
                                 tk_tensor *out_index);

/* Serving from a sharded catalogue (a host: examples/server/server.c). Rank 0, the
 * leader, takes the requests and runs the query tower; every other rank, a follower,
 * holds its shard and runs tk_sharded_serve_follow until the leader stops it. Every
 * call below is a collective of the leader with the followers (the MPI calls are made
 * by the calling thread: with MPI_THREAD_FUNNELED, the thread that called
 * tk_dist_init). */

/* Leader: broadcasts one batch (the queries F32 [Q, D], k, the exclusions as in
 * tk_sharded_index_query) to the followers, then runs tk_sharded_index_query with them:
 * out_ids and out_scores ([Q, k]) get the global top k. A bad argument is reported
 * before anything is sent (the followers keep waiting); with one rank it is
 * tk_sharded_index_query alone. */
tk_status tk_sharded_serve_query(tk_sharded_index *ix, const tk_tensor *queries, int64_t k, const int64_t *excl_offsets,
                                 const int64_t *excl_ids, tk_tensor *out_ids, tk_tensor *out_scores);
/* Leader: tells the followers to return from tk_sharded_serve_follow (a batch of zero
 * queries). A no-op with one rank. */
tk_status tk_sharded_serve_stop(tk_sharded_index *ix);
/* Follower (rank > 0): waits for the leader's batches, sleeping between them
 * (tk_dist_bcast_idle, polling every poll_seconds), runs each batch's
 * tk_sharded_index_query on its shard, and returns TK_OK when the leader stops. A
 * failure of this rank that leaves it unable to take part (no memory for a batch)
 * returns TK_ERROR: the host then ends the job (tk_dist_abort), as the leader would
 * wait for it otherwise. TK_ERROR on rank 0 or before tk_dist_init. */
tk_status tk_sharded_serve_follow(tk_sharded_index *ix, double poll_seconds);

/* Prints "towerkit: rank R of N: msg" on stderr and ends every rank of the job
 * (MPI_Abort with code). Without MPI (or before init) prints the message and exits. */
_Noreturn void tk_dist_abort(int code, const char *msg);
/* Finalises MPI (after which no collective may run); a no-op if not initialised. */
tk_status tk_dist_finalize(void);

#ifdef __cplusplus
}
#endif
#endif /* TOWERKIT_DIST_H */
