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

/* Raises a Lua error with a message; never used with memory still owned by C frames. */
int tkl_error(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Integers from Lua numbers. A double converts to an integer exactly (and without
 * undefined behaviour) when it has no fraction and |d| <= 2^53; int64 tensor values
 * may use the whole int64 range [-2^63, 2^63). */
#define TKL_INT53_MAX 9007199254740992.0   /* 2^53 */
#define TKL_INT64_LIMIT 9223372036854775808.0 /* 2^63 */
bool tkl_is_int53(double d);
/* The integer argument at idx; raises "bad argument #idx (<what> must be an integer of
 * magnitude at most 2^53, got x)". tkl_opt_int: def when the argument is none or nil. */
int64_t tkl_check_int(lua_State *L, int idx, const char *what);
int64_t tkl_opt_int(lua_State *L, int idx, int64_t def, const char *what);
/* A seed argument (an integer, negative ones wrap around); def when none or nil. */
uint64_t tkl_opt_seed(lua_State *L, int idx, uint64_t def);

/* A qsort comparator of C strings held by pointer (const char *[]). */
int tkl_strcmp_ptr(const void *a, const void *b);

/* Memory a C function owns while it may raise: a userdata holding `p`, which __gc (or
 * tkl_owned_free) passes to `free_fn` unless it is NULL by then. Pushes the userdata
 * and returns the slot; set *slot once the memory exists and clear it when ownership
 * moves elsewhere. */
void **tkl_push_owned(lua_State *L, void (*free_fn)(void *));
void tkl_owned_free(lua_State *L, int idx); /* frees now (idx: the owner userdata) */

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

/* Option tables */
const char *tkl_opt_string(lua_State *L, int idx, const char *key, const char *def);
double tkl_opt_number(lua_State *L, int idx, const char *key, double def);
int64_t tkl_opt_integer(lua_State *L, int idx, const char *key, int64_t def);
bool tkl_opt_bool(lua_State *L, int idx, const char *key, bool def);
/* An initializer: a name string or {kind = name, a = , b = }; def if absent. */
tk_init tkl_opt_init(lua_State *L, int idx, const char *key, tk_init def);
int tkl_check_activation(lua_State *L, int idx, const char *what);

#endif
