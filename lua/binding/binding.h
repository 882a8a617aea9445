/* Internal declarations shared by the files of the towerkit.core Lua module. */
#ifndef TK_BINDING_H
#define TK_BINDING_H

#include "towerkit.h"

#include <lauxlib.h>
#include <lua.h>

#define TKL_TENSOR "towerkit.Tensor"
#define TKL_CONTEXT "towerkit.Context"
#define TKL_BLOCK "towerkit.Block"
#define TKL_OPTIM "towerkit.Optim"

/* A tensor seen from Lua: a retained heap tensor (ctx NULL) or an arena tensor of a
 * context, valid while that context's generation is unchanged. An arena tensor's
 * userdata environment anchors its Context userdata, so the context outlives it. */
typedef struct tkl_tensor {
    tk_tensor *t;
    tk_ctx *ctx;
    uint64_t generation;
} tkl_tensor;

typedef struct tkl_context {
    tk_ctx *ctx;
} tkl_context;

typedef struct tkl_block {
    tk_block *b;
} tkl_block;

/* --- util.c: helpers of every file, depending on the core and Lua alone --- */

/* Registers util.c's metatables; luaopen_towerkit_core calls it first. */
void tkl_open_util(lua_State *L);
/* Raises a Lua error with a message; never used with memory still owned by C frames. */
int tkl_error(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A qsort comparator of C strings held by pointer (const char *[]). */
int tkl_strcmp_ptr(const void *a, const void *b);

/* Memory a C function owns while it may raise: a userdata holding `p`, which __gc (or
 * tkl_owned_free) passes to `free_fn` unless it is NULL by then. Pushes the userdata
 * and returns the slot; set *slot once the memory exists and clear it when ownership
 * moves elsewhere. */
void **tkl_push_owned(lua_State *L, void (*free_fn)(void *));
void tkl_owned_free(lua_State *L, int idx); /* frees now (idx: the owner userdata) */

/* Integers from Lua numbers. A double converts to an integer exactly (and without
 * undefined behaviour) when it has no fraction and |d| <= 2^53; int64 tensor values
 * may use the whole int64 range [-2^63, 2^63). */
#define TKL_INT53_MAX 9007199254740992.0      /* 2^53 */
#define TKL_INT64_LIMIT 9223372036854775808.0 /* 2^63 */
bool tkl_is_int53(double d);

/* Positional arguments: tkl_check_*(L, idx, what) raises on a missing or bad argument,
 * tkl_opt_*(L, idx, what, def) returns def when it is none or nil. `what` names the
 * argument in messages: "bad argument #3 (first must be an integer of magnitude at most
 * 2^53, got 0.5)"; for an activation it names the function ("bad argument #2 to
 * 'activate' (unknown activation 'swish'; known: ...)"). A seed is an integer whose
 * negative values wrap around. */
int64_t tkl_check_int(lua_State *L, int idx, const char *what);
int64_t tkl_opt_int(lua_State *L, int idx, const char *what, int64_t def);
uint64_t tkl_opt_seed(lua_State *L, int idx, const char *what, uint64_t def);
int tkl_opt_activation(lua_State *L, int idx, const char *what, tk_activation def);
/* An initializer: a name string or {kind = name, a = , b = }. */
tk_init tkl_opt_init(lua_State *L, int idx, const char *what, tk_init def);

/* Option tables: tkl_field_*(L, idx, key, def) reads field `key` of the table at idx
 * (idx 0 or a non-table: no options), def when it is nil; the key names the option in
 * messages ("option 'in' must be an integer, got 0.5"). tkl_push_field pushes the field
 * (nil when absent) for a reader of its own. */
void tkl_push_field(lua_State *L, int idx, const char *key);
const char *tkl_field_string(lua_State *L, int idx, const char *key, const char *def);
double tkl_field_number(lua_State *L, int idx, const char *key, double def);
int64_t tkl_field_int(lua_State *L, int idx, const char *key, int64_t def);
bool tkl_field_bool(lua_State *L, int idx, const char *key, bool def);
tk_init tkl_field_init(lua_State *L, int idx, const char *key, tk_init def);

/* Pushes the entry name of a part of a ragged feature (tk_ragged_name_join). */
void tkl_push_ragged_name(lua_State *L, const char *feature, tk_ragged_part part);

/* Tensors */
void tkl_open_tensor(lua_State *L);
tkl_tensor *tkl_check_tensor_ud(lua_State *L, int idx);
/* The live tk_tensor at idx (errors if it was released by a context reset). */
tk_tensor *tkl_check_tensor(lua_State *L, int idx);
tk_tensor *tkl_to_tensor(lua_State *L, int idx); /* NULL if not a tensor */
/* Pushes a heap tensor, taking over one reference. */
void tkl_push_heap(lua_State *L, tk_tensor *t);
/* Pushes an arena tensor of the context whose userdata is at ctx_idx. */
void tkl_push_arena(lua_State *L, int ctx_idx, tk_tensor *t);
/* Pushes the result of an op run in the context at ctx_idx, or raises its error. */
int tkl_push_result(lua_State *L, int ctx_idx, tk_tensor *t);

/* Contexts */
void tkl_open_context(lua_State *L);
tkl_context *tkl_check_context(lua_State *L, int idx);
/* Pushes the context an op on the tensors at idx[0..n) runs in: the context of its
 * arena inputs, else the current context. Returns its tk_ctx. */
tk_ctx *tkl_op_context(lua_State *L, int n, const int *idx);
/* Pushes the current context (the one set by ctx:run, else the default one). */
tk_ctx *tkl_push_current_context(lua_State *L);

/* Values */
/* Converts the Lua value at idx (tensor or table name -> tensor) into a tk_value of ctx.
 * Returns NULL with an error message in *err (static or arena storage). */
tk_value *tkl_to_value(lua_State *L, int idx, tk_ctx *ctx, const char **err);
/* Pushes a tk_value as a tensor or a table of tensors of the context at ctx_idx. */
void tkl_push_value(lua_State *L, int ctx_idx, const tk_value *v);

/* Blocks and optimizers */
void tkl_open_block(lua_State *L);
tkl_block *tkl_check_block_ud(lua_State *L, int idx);
tk_block *tkl_check_block(lua_State *L, int idx);
void tkl_push_block(lua_State *L, tk_block *b); /* takes over one reference */
void tkl_open_optim(lua_State *L);
tk_optim *tkl_check_optim(lua_State *L, int idx); /* the live optimizer of an Optim userdata */
void tkl_open_json(lua_State *L);
void tkl_open_io(lua_State *L);
void tkl_open_retrieval(lua_State *L);
void tkl_open_serving(lua_State *L); /* towerkit.Model, towerkit.ModelSlot */
void tkl_open_dist(lua_State *L);    /* dist_*: MPI (dist.c, towerkit_dist.h) */

#endif
