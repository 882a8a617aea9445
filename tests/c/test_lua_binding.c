/* The Lua binding seen from C: a block written in Lua called from another Lua state
 * or from C, and the binding under Lua memory errors (an allocator that fails the n-th
 * allocation, for every n): calls that hold C memory (CSV columns, checkpoint texts,
 * safetensors, parameter lists) or set the Lua-block frame (forward, trace) must
 * neither leak (`make test-asan` checks) nor leave the frame set. Linked with the
 * binding. */
#include "tk_test.h"

#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "binding.h"
#include "towerkit_lua.h"

static char tmp_dir[256];

/* --- an allocator with a budget of growing allocations (-1: unlimited) --- */

static long budget = -1;
static long failures;

static void *budget_alloc(void *ud, void *p, size_t old, size_t n) {
    (void)ud;
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (n > old && budget >= 0) {
        if (budget == 0) {
            failures++;
            return NULL;
        }
        budget--;
    }
    return realloc(p, n);
}

static lua_State *new_state(bool budgeted) {
    lua_State *L = budgeted ? lua_newstate(budget_alloc, NULL) : luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    if (towerkit_lua_open(L, NULL) != 0) {
        printf("    towerkit_lua_open: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    return L;
}

static bool run(lua_State *L, const char *code) {
    if (luaL_dostring(L, code) != 0) {
        printf("    %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return false;
    }
    return true;
}

/* The C block behind the Lua global `name`. */
static tk_block *global_block(lua_State *L, const char *name) {
    lua_getglobal(L, name);
    tkl_block *u = (tkl_block *)luaL_testudata(L, -1, TKL_BLOCK);
    lua_pop(L, 1);
    return u ? u->b : NULL;
}

/* Runs the Lua block from C, outside any binding call: it must fail with the "other
 * state" message (no frame is set), never reach Lua. */
static void check_no_frame(tk_block *lb, const char *when) {
    tk_ctx *ctx = tk_ctx_new(0);
    int64_t shape[2] = { 1, 2 };
    tk_tensor *x = tk_ctx_empty(ctx, TK_F32, 2, shape);
    tk_value *out = x ? tk_block_forward(ctx, lb, tk_value_of(ctx, x)) : NULL;
    TK_CHECK_MSG(out == NULL, "%s: a Lua block ran from C", when);
    TK_CHECK_MSG(strstr(tk_ctx_error(ctx), "runs only in the Lua state that created it") != NULL, "%s: %s", when,
                 tk_ctx_error(ctx));
    tk_ctx_free(ctx);
}

/* ---- a Lua block called from another state, from C, from a coroutine ---- */

static void test_lua_block_in_another_state(void) {
    lua_State *a = new_state(false), *b = new_state(false);
    TK_CHECK(a && b);
    if (!a || !b) {
        if (a) lua_close(a);
        if (b) lua_close(b);
        return;
    }
    TK_CHECK(run(a, "tk = require 'towerkit'\n"
                    "LB = tk.LuaBlock(function(x) return x * 2 end)\n"
                    "assert(LB(tk.ones { 1, 2 }):totable()[1][1] == 2)\n"
                    "-- a coroutine is a thread of the same state: allowed\n"
                    "local out = coroutine.wrap(function() return LB(tk.ones { 1, 2 }) end)()\n"
                    "assert(out:totable()[1][2] == 2)"));
    tk_block *lb = global_block(a, "LB");
    TK_CHECK(lb != NULL);
    if (lb) {
        TK_CHECK(run(b, "tk = require 'towerkit'"));
        tk_block_retain(lb);
        tkl_push_block(b, lb); /* the same C block, in state b */
        lua_setglobal(b, "LB");
        TK_CHECK(run(
            b, "local ok, err = pcall(LB, tk.ones { 1, 2 })\n"
               "assert(not ok)\n"
               "assert(err:find('a block written in Lua runs only in the Lua state that created it', 1, true), err)\n"
               "-- inside a block of this state too\n"
               "local seq = tk.SequentialBlock { tk.Dense(2, { input_dim = 2 }), LB }\n"
               "ok, err = pcall(seq, tk.ones { 1, 2 })\n"
               "assert(not ok and err:find('runs only in the Lua state that created it', 1, true), err)"));
        check_no_frame(lb, "from C");
        /* state a still runs it */
        TK_CHECK(run(a, "assert(LB(tk.ones { 1, 2 }):totable()[1][1] == 2)"));
    }
    lua_close(b); /* b's handle goes first: the block's function lives in a */
    lua_close(a);
}

/* ---- memory errors at every allocation of a call ---- */

/* Runs `code` with a budget of n allocations for n = 0, 1, ... until it succeeds; after
 * each failure the state must still work and (when lb is set) no frame may be left. */
static void fail_each_allocation(lua_State *L, const char *what, const char *code, tk_block *lb) {
    int n;
    bool ok = false;
    long before = failures;
    for (n = 0; n < 100000 && !ok; n++) {
        if (luaL_loadstring(L, code) != 0) {
            printf("    %s: %s\n", what, lua_tostring(L, -1));
            TK_CHECK(0);
            lua_pop(L, 1);
            return;
        }
        budget = n;
        int rc = lua_pcall(L, 0, 0, 0);
        budget = -1;
        if (rc == 0) {
            ok = true;
        } else {
            const char *msg = lua_tostring(L, -1);
            /* only memory errors are expected, whatever message a binding wraps them in */
            if (rc != LUA_ERRMEM && !(msg && (strstr(msg, "memory") || strstr(msg, "error in error handling")))) {
                printf("    %s: budget %d: unexpected error: %s\n", what, n, msg ? msg : "(no message)");
                TK_CHECK(0);
                lua_pop(L, 1);
                return;
            }
            lua_pop(L, 1);
        }
        lua_gc(L, LUA_GCCOLLECT, 0);
        if (lb) check_no_frame(lb, what);
    }
    TK_CHECK_MSG(ok, "%s never succeeded", what);
    TK_CHECK_MSG(failures > before, "%s: no allocation failed", what);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_memory_errors(void) {
    lua_State *L = new_state(true);
    TK_CHECK(L != NULL);
    if (!L) return;
    char csv[400], ck[400], st[400], setup[2400];
    snprintf(csv, sizeof csv, "%s/data.csv", tmp_dir);
    snprintf(ck, sizeof ck, "%s/ck", tmp_dir);
    snprintf(st, sizeof st, "%s/w.safetensors", tmp_dir);
    write_file(csv, "user_id,tags,price\n1,1|2,0.5\n2,,1.5\n3,4|5|6,2.5\n");
    snprintf(
        setup, sizeof setup,
        "if jit then jit.off() end\n"
        "tk = require 'towerkit'\n"
        "core = tk.core\n"
        "CSV, CK, ST = '%s', '%s', '%s'\n"
        "SPECS = { { name = 'user_id', type = 'int64' }, { name = 'tags', type = 'int64_list' },\n"
        "          { name = 'price', type = 'float32' } }\n"
        "BLOCK = tk.SequentialBlock { tk.Dense(4, { input_dim = 3, seed = 1 }), tk.BatchNormalization { dim = 4 } }\n"
        "core.checkpoint_write(CK, tk.Dense(2, { input_dim = 3, seed = 2 }), { ['notes.txt'] = 'hello', ['b.txt'] = "
        "'x' })\n"
        "core.safetensors_write(ST, { 'a', 'b' }, { tk.ones { 2, 3 }, tk.zeros({ 4 }, 'int64') })\n"
        "INNER = tk.Dense(2, { input_dim = 2, seed = 3 })\n"
        "LB = tk.LuaBlock(function(x) return INNER(x):relu() end)\n"
        "SEQ = tk.SequentialBlock { tk.Dense(2, { input_dim = 2, seed = 4 }), LB }\n"
        "X = tk.ones { 3, 2 }\n",
        csv, ck, st);
    bool ready = run(L, setup);
    TK_CHECK(ready);
    tk_block *lb = ready ? global_block(L, "LB") : NULL;
    TK_CHECK(lb != NULL);
    if (lb) {
        fail_each_allocation(L, "csv reader:next",
                             "local r = core.csv_open(CSV, SPECS)\n"
                             "local c, n = r:next()\n"
                             "assert(n == 3 and c.tags__values:numel() == 5)\n"
                             "r:close()",
                             NULL);
        fail_each_allocation(L, "checkpoint_read",
                             "local b, f = core.checkpoint_read(CK, { 'notes.txt', 'b.txt', 'absent.txt' })\n"
                             "assert(f['notes.txt'] == 'hello' and b:kind() == 'dense')",
                             NULL);
        fail_each_allocation(L, "safetensors_read",
                             "local t = core.safetensors_read(ST)\n"
                             "assert(t.a:numel() == 6 and t.b:dtype() == 'int64')",
                             NULL);
        fail_each_allocation(L, "block:parameters", "local p = BLOCK:parameters(false)\nassert(#p == 6)", NULL);
        fail_each_allocation(L, "forward through a Lua block",
                             "tk.reset()\nlocal y = SEQ(X)\nassert(y:shape()[2] == 2)", lb);
        fail_each_allocation(L, "trace through a Lua block", "tk.reset()\nlocal y, tr = SEQ:trace(X)\nassert(#tr >= 3)",
                             lb);
        /* the state still works normally */
        TK_CHECK(run(L, "tk.reset()\nassert(SEQ(X):shape()[1] == 3)"));
        check_no_frame(lb, "at the end");
    }
    lua_close(L);
}

/* The host accessors of towerkit_lua.h: a tensor argument, and exclusion lists read as
 * model:recommend reads them (the example server's SERVER.sharded_query uses both). */
static void test_host_accessors(void) {
    lua_State *L = new_state(false);
    TK_CHECK(L != NULL);
    if (!L) return;
    TK_CHECK(run(L, "tk = require 'towerkit'\nT = tk.ones { 2, 3 }"));
    lua_getglobal(L, "T");
    tk_tensor *t = towerkit_lua_to_tensor(L, -1);
    TK_CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && tk_f32(t)[5] == 1.0f);
    lua_pop(L, 1);
    lua_pushnumber(L, 1);
    TK_CHECK(towerkit_lua_to_tensor(L, -1) == NULL);
    lua_pop(L, 1);

    int64_t *offs, *items;
    char msg[256];
    int top = lua_gettop(L);
    lua_pushnil(L); /* nil: nothing excluded */
    TK_CHECK(towerkit_lua_to_exclusions(L, -1, 3, &offs, &items, msg, sizeof msg) == 0 && !offs && !items);
    lua_pop(L, 1);
    /* two lists for three rows: the last row excludes nothing */
    TK_CHECK(run(L, "EX = { { 4, 9 }, {} }"));
    lua_getglobal(L, "EX");
    TK_CHECK(towerkit_lua_to_exclusions(L, -1, 3, &offs, &items, msg, sizeof msg) == 0);
    if (offs && items) {
        TK_CHECK(offs[0] == 0 && offs[1] == 2 && offs[2] == 2 && offs[3] == 2);
        TK_CHECK(items[0] == 4 && items[1] == 9);
    }
    free(offs);
    free(items);
    /* rows < 0: one per list */
    TK_CHECK(towerkit_lua_to_exclusions(L, -1, -1, &offs, &items, msg, sizeof msg) == 0);
    if (offs) TK_CHECK(offs[2] == 2);
    free(offs);
    free(items);
    lua_pop(L, 1);
    static const struct {
        const char *code, *want;
    } bad[] = {
        { "return 5", "exclude must be a list of lists of item ids" },
        { "return { {}, {}, {}, {} }", "exclude has 4 lists for 3 query rows" },
        { "return { {}, 7 }", "exclude: list 1 is not a list of item ids" },
        { "return { { 1, 2.5 } }", "exclude: list 0 holds something other than an integer id at position 1" },
        { "return { {}, { 2 ^ 60 } }", "exclude: list 1 holds something other than an integer id at position 0" },
        { "return { { '3' } }", "exclude: list 0 holds something other than an integer id at position 0" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TK_CHECK(luaL_dostring(L, bad[i].code) == 0);
        offs = items = (int64_t *)1;
        TK_CHECK(towerkit_lua_to_exclusions(L, -1, 3, &offs, &items, msg, sizeof msg) == -1);
        TK_CHECK(!offs && !items);
        TK_CHECK_ERROR(msg, bad[i].want);
        lua_pop(L, 1);
    }
    TK_CHECK(lua_gettop(L) == top); /* the stack as it was */
    lua_close(L);
}

int main(void) {
    tk_set_num_threads(1);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tk-lua-binding-XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    TK_RUN(test_lua_block_in_another_state);
    TK_RUN(test_memory_errors);
    TK_RUN(test_host_accessors);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) printf("    could not remove %s\n", tmp_dir);
    return tk_test_summary();
}
