/* Helpers shared by the block kinds (core/src/blocks). Not installed.
 *
 * Every block is allocated by tk_block_new as a tk_block_priv, whose public part is the
 * tk_block of towerkit_ext.h. The private part remembers, for each parameter, the
 * initialiser it was drawn from (so tk_block_copy can draw fresh weights), and a seed
 * for weights built lazily at the first forward. */
#ifndef TK_BLOCK_IMPL_H
#define TK_BLOCK_IMPL_H

#include "internal.h"

#include <cJSON.h>

typedef struct tk_param_info {
    bool has_init; /* false: added with tk_block_add_param, copied by value */
    tk_init init;
} tk_param_info;

/* --- construction --- */

/* tk_block_add_param with the initialiser the tensor was filled from (for copy). */
tk_status tk_block_add_param_init(tk_block *b, const char *name, tk_tensor *t, bool trainable, tk_init init);
/* Removes (releases) the parameters after the first n: a kind whose build fails midway
 * takes back what it added, so a later forward can build again. */
void tk_block_truncate_params(tk_block *b, int32_t n);
/* A new heap F32 parameter filled from init with seed and marked as requiring gradients
 * when trainable; added to b. Returns the tensor (owned by b) or NULL (tk_last_error). */
tk_tensor *tk_block_new_param(tk_block *b, const char *name, int32_t ndim, const int64_t *shape, bool trainable,
                              tk_init init, uint64_t seed);
/* The seed a block draws its lazily-built weights from; tk_block_copy gives the copy a
 * new one. */
uint64_t tk_block_seed(const tk_block *b);
void tk_block_set_seed(tk_block *b, uint64_t seed);
/* A well-mixed seed derived from seed and k (splitmix64). */
uint64_t tk_seed_mix(uint64_t seed, uint64_t k);

/* --- row-sharded tables (core/src/dist_table.c) --- */

/* Where an embeddings block reads a table from when the table is not whole on this
 * process. The forward makes one call of fn for all such tables of the block, before
 * any lookup in them, with one item per table: the ids of the features reading it
 * (ids[i], I64, as the input gives them); fn sets item.rows (a heap tensor of rows it
 * fetched, borrowed) and replaces each ids[i] by the ids' rows in it (I64 tensors of
 * ctx, the same shapes). TK_ERROR when it failed (and ctx has failed). fn may run
 * collectives: every rank runs the same forwards. */
typedef struct tk_table_fetch_item {
    void *ud;          /* the table's tk_table_fetch.ud */
    const char *table; /* its name, for messages */
    int32_t n;         /* the features reading it */
    tk_tensor **ids;   /* [n]: their ids, replaced by rows of `rows` */
    tk_tensor *rows;   /* set by fn */
} tk_table_fetch_item;
typedef struct tk_table_fetch {
    tk_status (*fn)(tk_ctx *ctx, int32_t n, tk_table_fetch_item *items);
    void *ud;
} tk_table_fetch;
/* The items the forward of embeddings block b would hand its fetch for input `in` (the
 * ids as given, not yet replaced), in arena memory of ctx: the count, 0 when b reads no
 * table through a fetch or `in` lacks a feature it needs (nothing is failed: the forward
 * will say so), -1 when out of memory. For fetching before the forward
 * (tk_dist_tables_prefetch). */
int32_t tk_embeddings_fetch_items(tk_ctx *ctx, const tk_block *b, tk_value *in, tk_table_fetch_item **items);
/* Sets (f) or clears (NULL) the fetch of table `table` (its parameter index) of an
 * embeddings block; TK_ERROR for another kind or index. Copies of the block get none. */
tk_status tk_embeddings_set_fetch(tk_block *b, int32_t table, const tk_table_fetch *f);
/* The part of table `table` (its parameter index) of an embeddings block: the tables of
 * a block given a row part (tk_embeddings_set_row_part) hold rows [floor(part V / parts),
 * floor((part + 1) V / parts)) of V = *rows; parts is 1 otherwise. False for another
 * kind or index. */
bool tk_embeddings_row_part(const tk_block *b, int32_t table, int32_t *part, int32_t *parts, int64_t *rows);

/* --- forward helpers --- */

/* The tensor of a single-tensor input, or NULL with a message saying `what` needs a
 * tensor and got a tabular value. */
tk_tensor *tk_block_need_tensor(tk_ctx *ctx, const char *what, const tk_value *in);
/* true if `in` is tabular; otherwise fails saying `what` needs a tabular value. */
bool tk_block_need_tabular(tk_ctx *ctx, const char *what, const tk_value *in);
/* Adds entry key -> t to dst, failing with a message naming the key and both branches
 * when dst has the key already. (*origins)[i] names the branch that produced entry i of
 * dst: an arena array grown with dst (start with an empty dst and *origins NULL). */
tk_status tk_value_add_unique(tk_ctx *ctx, tk_value *dst, const char ***origins, const char *key, tk_tensor *t,
                              const char *origin, const char *what);
/* tk_value_add_unique of every entry of the tabular value src. */
tk_status tk_value_merge_from(tk_ctx *ctx, tk_value *dst, const char ***origins, const tk_value *src,
                              const char *origin, const char *what);

/* --- config --- */

/* A shape oracle for reading a config: while tk_block_from_cjson_checked builds
 * the blocks, tk_block_new_param asks it, before allocating, about every parameter the
 * kinds create, by its path (as tk_block_visit_params with skip_root names it: the
 * path components follow the config's names, child_names of a parallel block, and
 * "<name>_<k>" for siblings of the same name) with its dtype and shape. A non-zero
 * return refuses the parameter: the build stops there, the oracle's error (it sets it
 * with tk_set_error) possibly prefixed by the kind; the caller knows its oracle
 * refused, and why. */
typedef struct tk_shape_oracle {
    int (*check)(void *ud, const char *path, tk_dtype dtype, int32_t ndim, const int64_t *shape);
    void *ud;
} tk_shape_oracle;
/* The block of a parsed config (as tk_block_from_config_json) with every parameter
 * checked by oracle before it is allocated (oracle NULL: not checked). */
tk_block *tk_block_from_cjson_checked(const cJSON *o, uint64_t seed, const tk_shape_oracle *oracle);
/* Called by tk_block_new_param before it allocates: TK_ERROR (the error set) when the
 * oracle of the config being read on this thread refuses the parameter `name` of the
 * block being read. TK_OK when no config is being read with an oracle. */
tk_status tk_cfg_check_param(const char *name, tk_dtype dtype, int32_t ndim, const int64_t *shape);

/* Config of a block as a cJSON object (caller deletes), NULL on failure (tk_last_error). */
cJSON *tk_block_config_cjson(const tk_block *b);
/* A block from a cJSON config object (recursive); NULL and tk_last_error on failure. */
tk_block *tk_block_from_cjson(const cJSON *o, uint64_t seed);
/* Sets tk_last_error to "block config '<path>': <message>", the path being the names of
 * the blocks being read, outermost first. Returns NULL. */
void *tk_cfg_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Typed field readers: false with tk_cfg_fail naming the key when the key is missing
 * (and required) or of the wrong type. When optional and missing, *out is unchanged. */
bool tk_cfg_int(const cJSON *o, const char *key, bool required, int64_t *out);
bool tk_cfg_float(const cJSON *o, const char *key, bool required, float *out);
bool tk_cfg_bool(const cJSON *o, const char *key, bool required, bool *out);
bool tk_cfg_string(const cJSON *o, const char *key, bool required, const char **out);
bool tk_cfg_activation(const cJSON *o, const char *key, bool required, tk_activation *out);
bool tk_cfg_init(const cJSON *o, const char *key, bool required, tk_init *out);
/* The "children" array with n_min to n_max entries (n_max < 0: no limit); NULL on
 * failure. With n_min 0 the array is optional: NULL without an error when it is absent. */
const cJSON *tk_cfg_children(const cJSON *o, int n_min, int n_max);
/* The "name" of a config object (checked by tk_block_from_cjson before the kind's
 * from_config runs). */
const char *tk_cfg_name(const cJSON *o);
/* The child block of `children[i]`, with a seed derived from seed and i. */
tk_block *tk_cfg_child(const cJSON *children, int i, uint64_t seed);
/* Writers: add a float written as its shortest decimal form (0.1f as 0.1), an
 * initialiser object {"kind", "a", "b"}. false on out of memory. */
bool tk_cfg_add_float(cJSON *o, const char *key, float v);
bool tk_cfg_add_init(cJSON *o, const char *key, tk_init init);

/* --- kinds: the built-in kinds and their constructors from config --- */

extern const tk_block_kind tk_kind_dense, tk_kind_activation, tk_kind_l2norm, tk_kind_dropout, tk_kind_batch_norm,
    tk_kind_filter, tk_kind_as_tabular, tk_kind_aggregation, tk_kind_embeddings, tk_kind_sequential, tk_kind_parallel,
    tk_kind_residual, tk_kind_shortcut, tk_kind_callback;
tk_block *tk_dense_from_config(const void *json, uint64_t seed);
tk_block *tk_activation_from_config(const void *json, uint64_t seed);
tk_block *tk_l2norm_from_config(const void *json, uint64_t seed);
tk_block *tk_dropout_from_config(const void *json, uint64_t seed);
tk_block *tk_batch_norm_from_config(const void *json, uint64_t seed);
tk_block *tk_filter_from_config(const void *json, uint64_t seed);
tk_block *tk_as_tabular_from_config(const void *json, uint64_t seed);
tk_block *tk_aggregation_from_config(const void *json, uint64_t seed);
tk_block *tk_embeddings_from_config(const void *json, uint64_t seed);
tk_block *tk_sequential_from_config(const void *json, uint64_t seed);
tk_block *tk_parallel_from_config(const void *json, uint64_t seed);
tk_block *tk_residual_from_config(const void *json, uint64_t seed);
tk_block *tk_shortcut_from_config(const void *json, uint64_t seed);

#endif
