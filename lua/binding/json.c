/* JSON for the Lua layer (configs, schema files, checkpoint headers) on cJSON.
 * json_decode(text) -> Lua value (objects and arrays as tables, null as json_null);
 * json_encode(value [, indent]) -> text, object keys sorted so output is stable. */
#include "binding.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char NULL_KEY = 'n';
static const char ARRAY_MT_KEY = 'a'; /* metatable {__jsontype = "array"} of decoded arrays */

static void set_array_mt(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&ARRAY_MT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

static void push_null(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&NULL_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

static void push_json(lua_State *L, const cJSON *j, int depth) {
    /* tk_json_parse refused deeper nesting */
    luaL_checkstack(L, 4, "json nesting");
    if (cJSON_IsNull(j)) {
        push_null(L);
    } else if (cJSON_IsBool(j)) {
        lua_pushboolean(L, cJSON_IsTrue(j));
    } else if (cJSON_IsNumber(j)) {
        lua_pushnumber(L, j->valuedouble);
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        set_array_mt(L); /* so an empty array encodes back as [] */
        int i = 1;
        for (const cJSON *e = j->child; e; e = e->next) {
            push_json(L, e, depth + 1);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(j)) {
        lua_newtable(L);
        for (const cJSON *e = j->child; e; e = e->next) {
            push_json(L, e, depth + 1);
            lua_setfield(L, -2, e->string);
        }
    } else {
        lua_pushnil(L);
    }
}

/* The cJSON tree is kept in a userdata box on the stack so an error while converting
 * frees it through __gc. */
typedef struct json_box {
    cJSON *j;
} json_box;

static int box_gc(lua_State *L) {
    json_box *b = (json_box *)lua_touserdata(L, 1);
    cJSON_Delete(b->j);
    b->j = NULL;
    return 0;
}

static json_box *new_box(lua_State *L) {
    json_box *b = (json_box *)lua_newuserdata(L, sizeof *b);
    b->j = NULL;
    lua_newtable(L);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    return b;
}

/* json_decode(text [, what]) -> value, or nil and "[what: ]invalid JSON at line L (byte
 * B): why" (tk_json_parse: strict, one document, no NUL characters, which a Lua string
 * made from cJSON's C strings would lose: "ab\u0000cd" would come back as "ab"). */
static int l_json_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *what = luaL_optstring(L, 2, NULL);
    json_box *box = new_box(L);
    if (!(box->j = tk_json_parse(text, len, what))) {
        lua_pushnil(L);
        lua_pushstring(L, tk_last_error());
        return 2;
    }
    push_json(L, box->j, 0);
    return 1;
}

static void attach(cJSON *parent, const char *key, cJSON *item) {
    if (key)
        cJSON_AddItemToObject(parent, key, item);
    else
        cJSON_AddItemToArray(parent, item);
}

/* The key path of the value being converted, for messages: "features.x.freq_threshold",
 * "ids[3]"; "value" at the top. */
typedef struct enc_path {
    char buf[512];
    size_t len;
} enc_path;

static const char *path_str(const enc_path *p) { return p->len ? p->buf : "value"; }

/* Appends ".key" or "[i]"; returns the old length for path_pop. */
static size_t path_push(enc_path *p, const char *key, size_t i) {
    size_t old = p->len;
    int n = key ? snprintf(p->buf + old, sizeof p->buf - old, old ? ".%s" : "%s", key)
                : snprintf(p->buf + old, sizeof p->buf - old, "[%zu]", i);
    if (n > 0) p->len = old + (size_t)n < sizeof p->buf ? old + (size_t)n : sizeof p->buf - 1;
    return old;
}

static void path_pop(enc_path *p, size_t old) {
    p->len = old;
    p->buf[old] = '\0';
}

/* Converts the Lua value at idx and attaches it to parent at once (under key for an
 * object, appended for an array), so a Lua error midway leaves every node in the tree
 * that the stack-owned box frees. */
static void to_json(lua_State *L, int idx, int depth, enc_path *path, cJSON *parent, const char *key) {
    if (depth > TK_JSON_MAX_DEPTH)
        tkl_error(L, "json_encode: nesting deeper than %d levels (a cycle?)", TK_JSON_MAX_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        attach(parent, key, cJSON_CreateNull());
        return;
    case LUA_TBOOLEAN:
        attach(parent, key, cJSON_CreateBool(lua_toboolean(L, idx)));
        return;
    case LUA_TNUMBER: {
        /* exact text as a raw node: cJSON's %1.15g would lose digits (2^53 - 1) */
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) tkl_error(L, "json_encode: %s is not a finite number (%f)", path_str(path), d);
        char text[TK_JSON_NUMBER_LEN];
        tk_json_number_text(d, text);
        attach(parent, key, cJSON_CreateRaw(text));
        return;
    }
    case LUA_TSTRING:
        attach(parent, key, cJSON_CreateString(lua_tostring(L, idx)));
        return;
    case LUA_TLIGHTUSERDATA:
        push_null(L);
        if (lua_rawequal(L, -1, idx)) {
            lua_pop(L, 1);
            attach(parent, key, cJSON_CreateNull());
            return;
        }
        lua_pop(L, 1);
        break;
    case LUA_TTABLE: {
        if (idx < 0) idx = lua_gettop(L) + idx + 1;
        luaL_checkstack(L, 6, "json nesting");
        size_t n = lua_objlen(L, idx), count = 0;
        bool all_int = true;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            count++;
            if (lua_type(L, -1) != LUA_TNUMBER) all_int = false;
        }
        bool marked_array = false;
        if (lua_getmetatable(L, idx)) {
            lua_getfield(L, -1, "__jsontype");
            marked_array = lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "array");
            lua_pop(L, 2);
        }
        if ((all_int && count == n && n > 0) || (count == 0 && marked_array)) {
            cJSON *arr = cJSON_CreateArray();
            attach(parent, key, arr);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (int)i);
                size_t old = path_push(path, NULL, i);
                to_json(L, lua_gettop(L), depth + 1, path, arr, NULL);
                path_pop(path, old);
                lua_pop(L, 1);
            }
            return;
        }
        if (all_int && count > 0)
            tkl_error(L, "json_encode: %s is a table with non-sequential integer keys", path_str(path));
        const char **keys = (const char **)lua_newuserdata(L, (count ? count : 1) * sizeof *keys);
        size_t k = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                tkl_error(L, "json_encode: %s mixes string and non-string keys", path_str(path));
            keys[k++] = lua_tostring(L, -1);
        }
        qsort(keys, k, sizeof *keys, tkl_strcmp_ptr);
        cJSON *obj = cJSON_CreateObject();
        attach(parent, key, obj);
        for (size_t i = 0; i < k; i++) {
            lua_getfield(L, idx, keys[i]);
            size_t old = path_push(path, keys[i], 0);
            to_json(L, lua_gettop(L), depth + 1, path, obj, keys[i]);
            path_pop(path, old);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        return;
    }
    default:
        break;
    }
    tkl_error(L, "json_encode: cannot encode a %s at %s", luaL_typename(L, idx), path_str(path));
}

static int l_json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    bool pretty = lua_toboolean(L, 2);
    lua_settop(L, 1);
    json_box *box = new_box(L);
    box->j = cJSON_CreateArray();
    if (!box->j) return tkl_error(L, "json_encode: out of memory");
    enc_path *path = (enc_path *)lua_newuserdata(L, sizeof *path); /* on the stack: freed on an error */
    path->len = 0;
    path->buf[0] = '\0';
    to_json(L, 1, 0, path, box->j, NULL);
    char *s = pretty ? cJSON_Print(box->j->child) : cJSON_PrintUnformatted(box->j->child);
    if (!s) return tkl_error(L, "json_encode: out of memory");
    lua_pushstring(L, s);
    cJSON_free(s);
    return 1;
}

/* json_array(t) -> t marked as an array (an empty one encodes as []). */
static int l_json_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    set_array_mt(L);
    return 1;
}

static const luaL_Reg json_functions[] = {
    { "json_decode", l_json_decode }, { "json_encode", l_json_encode }, { "json_array", l_json_array }, { NULL, NULL }
};

void tkl_open_json(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&ARRAY_MT_KEY);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_rawset(L, LUA_REGISTRYINDEX);
    luaL_register(L, NULL, json_functions);
    lua_pushlightuserdata(L, (void *)&NULL_KEY);
    lua_pushlightuserdata(L, (void *)&NULL_KEY);
    lua_rawset(L, LUA_REGISTRYINDEX);
    push_null(L);
    lua_setfield(L, -2, "json_null");
}
