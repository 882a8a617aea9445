/* luaopen_towerkit_core: the module table of the binding. */
#include "binding.h"

#include <time.h>
#include <unistd.h>

static int l_set_num_threads(lua_State *L) {
    int64_t n = tkl_check_int(L, 1, "n");
    if (n < 1 || n > 1024)
        return tkl_error(L, "bad argument #1 to 'set_num_threads' (expected a count from 1 to 1024, got %lld)",
                         (long long)n);
    tk_set_num_threads((int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L) {
    lua_pushinteger(L, tk_get_num_threads());
    return 1;
}

/* blas_info() -> {kernel, best, below_best, user_set, threads, blas_threads, cpu, advice} */
static int l_blas_info(lua_State *L) {
    tk_blas_info info;
    tk_blas_get_info(&info);
    const struct {
        const char *key, *s;
    } strings[] = { { "kernel", info.kernel }, { "best", info.best }, { "cpu", info.cpu }, { "advice", info.advice } };
    lua_createtable(L, 0, 8);
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        lua_pushstring(L, strings[i].s);
        lua_setfield(L, -2, strings[i].key);
    }
    lua_pushboolean(L, info.below_best);
    lua_setfield(L, -2, "below_best");
    lua_pushboolean(L, info.user_set);
    lua_setfield(L, -2, "user_set");
    lua_pushinteger(L, info.threads);
    lua_setfield(L, -2, "threads");
    lua_pushinteger(L, info.blas_threads);
    lua_setfield(L, -2, "blas_threads");
    return 1;
}

/* isatty([fd = 1]) */
static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* clock() -> monotonic seconds */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static const char *const ragged_parts[] = { "values", "offsets", NULL };

/* ragged_split(name) -> feature, "values" | "offsets" for an entry of a ragged feature;
 * nil for a plain entry. */
static int l_ragged_split(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    size_t len;
    tk_ragged_part part = tk_ragged_name_split(name, &len);
    if (part == TK_RAGGED_NONE) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, name, len);
    lua_pushstring(L, ragged_parts[part == TK_RAGGED_VALUES ? 0 : 1]);
    return 2;
}

/* ragged_join(feature, "values" | "offsets") -> the entry's name */
static int l_ragged_join(lua_State *L) {
    const char *feature = luaL_checkstring(L, 1);
    int part = luaL_checkoption(L, 2, NULL, ragged_parts);
    tkl_push_ragged_name(L, feature, part == 0 ? TK_RAGGED_VALUES : TK_RAGGED_OFFSETS);
    return 1;
}

int luaopen_towerkit_core(lua_State *L) {
    tkl_open_util(L);
    lua_newtable(L);
    tkl_open_tensor(L);
    tkl_open_context(L);
    tkl_open_block(L);
    tkl_open_optim(L);
    tkl_open_json(L);
    tkl_open_io(L);
    tkl_open_retrieval(L);
    tkl_open_serving(L);
    tkl_open_dist(L);
    lua_pushcfunction(L, l_set_num_threads);
    lua_setfield(L, -2, "set_num_threads");
    lua_pushcfunction(L, l_get_num_threads);
    lua_setfield(L, -2, "get_num_threads");
    lua_pushcfunction(L, l_blas_info);
    lua_setfield(L, -2, "blas_info");
    lua_pushcfunction(L, l_isatty);
    lua_setfield(L, -2, "isatty");
    lua_pushcfunction(L, l_clock);
    lua_setfield(L, -2, "clock");
    lua_pushcfunction(L, l_ragged_split);
    lua_setfield(L, -2, "ragged_split");
    lua_pushcfunction(L, l_ragged_join);
    lua_setfield(L, -2, "ragged_join");
    lua_pushliteral(L, TK_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
