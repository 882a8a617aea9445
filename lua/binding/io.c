/* Files from Lua: CSV reading, embeddings export, safetensors, checkpoints, and the
 * atomic write every file the Lua code writes goes through. */
#include "binding.h"

#include <stdlib.h>
#include <string.h>

#define TKL_CSV "towerkit.CsvReader"

typedef struct tkl_csv {
    tk_csv_reader *r;
} tkl_csv;

static int csv_gc(lua_State *L) {
    tkl_csv *u = (tkl_csv *)luaL_checkudata(L, 1, TKL_CSV);
    tk_csv_close(u->r);
    u->r = NULL;
    return 0;
}

/* csv_open(path, {{name =, type = "int64"|"float32"|"int64_list" [, max_count =]}, ...})
 * -> reader */
static int l_csv_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    if (n < 1) return tkl_error(L, "bad argument #2 to 'csv_open' (a non-empty list of column specs expected)");
    tk_column_spec *specs = (tk_column_spec *)lua_newuserdata(L, (size_t)n * sizeof *specs);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (!lua_istable(L, -1)) return tkl_error(L, "bad argument #2 to 'csv_open' (spec %d is not a table)", i + 1);
        lua_getfield(L, -1, "name");
        lua_getfield(L, -2, "type");
        /* strings only: lua_tostring would convert a number into a new string that is
         * collectable once popped, and specs keep the pointers */
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return tkl_error(
                L, "bad argument #2 to 'csv_open' (spec %d needs a string name and a string type, got %s and %s)",
                i + 1, luaL_typename(L, -2), luaL_typename(L, -1));
        const char *name = lua_tostring(L, -2), *type = lua_tostring(L, -1);
        specs[i].name = name; /* anchored by the spec table */
        if (!strcmp(type, "int64"))
            specs[i].type = TK_COL_INT64;
        else if (!strcmp(type, "float32"))
            specs[i].type = TK_COL_FLOAT32;
        else if (!strcmp(type, "int64_list"))
            specs[i].type = TK_COL_INT64_LIST;
        else
            return tkl_error(L, "csv_open: column '%s': unknown type '%s'; known: float32, int64, int64_list", name,
                             type);
        lua_getfield(L, -3, "max_count"); /* a list's value count max, or nil */
        lua_Number max = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
        if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || max < 0 || !tkl_is_int53(max)))
            return tkl_error(L, "csv_open: column '%s': max_count must be a count >= 0", name);
        specs[i].max_count = (int64_t)max;
        lua_pop(L, 4);
    }
    tkl_csv *u = (tkl_csv *)lua_newuserdata(L, sizeof *u);
    u->r = NULL;
    luaL_getmetatable(L, TKL_CSV);
    lua_setmetatable(L, -2);
    u->r = tk_csv_open(path, n, specs);
    if (!u->r) return tkl_error(L, "%s", tk_last_error());
    return 1;
}

/* reader:next(max_rows) -> {name = tensor, and a list column's two entries}, rows; rows
 * is 0 at the end of the file. */
static int csv_next(lua_State *L) {
    tkl_csv *u = (tkl_csv *)luaL_checkudata(L, 1, TKL_CSV);
    if (!u->r) return tkl_error(L, "csv reader is closed");
    double max_rows = luaL_optnumber(L, 2, 1 << 20);
    if (!(max_rows >= 1)) return tkl_error(L, "bad argument #2 to 'next' (max_rows must be positive)");
    if (max_rows > TKL_INT53_MAX) max_rows = TKL_INT53_MAX; /* as good as "all", and castable */
    lua_settop(L, 2);
    /* The columns are owned by a userdata while they are converted, so a Lua error
     * (out of memory) frees them; each tensor moves to its Lua userdata once pushed. */
    void **slot = tkl_push_owned(L, (void (*)(void *))tk_columns_free);
    tk_columns *c = tk_csv_next(u->r, (int64_t)max_rows);
    if (!c) return tkl_error(L, "%s", tk_last_error());
    *slot = c;
    lua_createtable(L, 0, c->ncols * 2);
    for (int32_t i = 0; i < c->ncols; i++) {
        if (c->types[i] == TK_COL_INT64_LIST) {
            tkl_push_ragged_name(L, c->names[i], TK_RAGGED_VALUES);
            tkl_push_heap(L, c->values[i]); /* takes over the reference */
            c->values[i] = NULL;
            lua_rawset(L, -3);
            tkl_push_ragged_name(L, c->names[i], TK_RAGGED_OFFSETS);
            tkl_push_heap(L, c->offsets[i]);
            c->offsets[i] = NULL;
            lua_rawset(L, -3);
        } else {
            tkl_push_heap(L, c->values[i]);
            c->values[i] = NULL;
            lua_setfield(L, -2, c->names[i]);
        }
    }
    lua_pushnumber(L, (lua_Number)c->nrows);
    tkl_owned_free(L, 3);
    return 2;
}

static int csv_close(lua_State *L) { return csv_gc(L); }

/* csv_write_embeddings(path, ids, matrix) */
static int l_csv_write_embeddings(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    tk_tensor *ids = tkl_check_tensor(L, 2), *m = tkl_check_tensor(L, 3);
    if (tk_csv_write_embeddings(path, ids, m) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

/* safetensors_write(path, {names}, {tensors} [, metadata_json]) */
static int l_safetensors_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    const char *meta = luaL_optstring(L, 4, NULL);
    int n = (int)lua_objlen(L, 2);
    if ((int)lua_objlen(L, 3) != n)
        return tkl_error(L, "safetensors_write: %d names for %d tensors", n, (int)lua_objlen(L, 3));
    const char **names = (const char **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *names);
    tk_tensor **ts = (tk_tensor **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *ts);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        /* strings only: a number converted by lua_tostring would not stay anchored */
        if (lua_type(L, -1) != LUA_TSTRING)
            return tkl_error(L, "safetensors_write: name %d is not a string (got %s)", i + 1, luaL_typename(L, -1));
        names[i] = lua_tostring(L, -1); /* anchored by the names table */
        lua_pop(L, 1);
        lua_rawgeti(L, 3, i + 1);
        ts[i] = tkl_to_tensor(L, -1);
        lua_pop(L, 1);
        if (!ts[i]) return tkl_error(L, "safetensors_write: entry %d is not a tensor", i + 1);
    }
    if (tk_safetensors_write(path, n, names, ts, meta) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

/* safetensors_read(path) -> {name = tensor}, metadata_json or nil */
static int l_safetensors_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    void **slot = tkl_push_owned(L, (void (*)(void *))tk_safetensors_free); /* frees st on an error */
    tk_safetensors *st = tk_safetensors_read(path);
    if (!st) return tkl_error(L, "%s", tk_last_error());
    *slot = st;
    lua_createtable(L, 0, st->n);
    for (int32_t i = 0; i < st->n; i++) {
        tkl_push_heap(L, st->tensors[i]); /* takes over the reference */
        st->tensors[i] = NULL;
        lua_setfield(L, -2, st->names[i]);
    }
    if (st->metadata_json)
        lua_pushstring(L, st->metadata_json);
    else
        lua_pushnil(L);
    tkl_owned_free(L, 2);
    return 2;
}

static int l_save_weights(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    if (tk_block_save_weights(b, luaL_checkstring(L, 2)) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

static int l_load_weights(lua_State *L) {
    tk_block *b = tkl_check_block(L, 1);
    if (tk_block_load_weights(b, luaL_checkstring(L, 2)) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

/* checkpoint_write(dir, block, {file_name = text, ...}) */
static int l_checkpoint_write(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    tk_block *b = tkl_check_block(L, 2);
    int n = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                return tkl_error(L, "bad argument #3 to 'checkpoint_write' (file names and texts must be strings)");
            lua_pop(L, 1);
            n++;
        }
    }
    const char **names = (const char **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *names);
    const char **texts = (const char **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *texts);
    int i = 0;
    if (n) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            names[i] = lua_tostring(L, -2);
            texts[i] = lua_tostring(L, -1);
            i++;
            lua_pop(L, 1);
        }
    }
    if (tk_checkpoint_write(dir, b, n, names, texts) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

/* The texts tk_checkpoint_read returns, owned by a userdata until they are Lua strings. */
typedef struct text_list {
    int n;
    char *texts[];
} text_list;

static void text_list_free(void *p) {
    text_list *t = p;
    for (int i = 0; i < t->n; i++) free(t->texts[i]);
    free(t);
}

/* checkpoint_read(dir, {file names}) -> block, {file_name = text} */
static int l_checkpoint_read(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    int n = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        n = (int)lua_objlen(L, 2);
    }
    lua_settop(L, 2);
    const char **names = (const char **)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *names); /* 3 */
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        /* strings only: a number converted by lua_tostring would not stay anchored */
        if (lua_type(L, -1) != LUA_TSTRING)
            return tkl_error(L, "bad argument #2 to 'checkpoint_read' (file name %d is not a string, got %s)", i + 1,
                             luaL_typename(L, -1));
        names[i] = lua_tostring(L, -1); /* anchored by the list */
        lua_pop(L, 1);
    }
    /* Everything that owns C memory exists before the read: the block's userdata and
     * the texts' owner; nothing after the read can leak on a Lua error. */
    void **slot = tkl_push_owned(L, text_list_free); /* 4 */
    text_list *texts = calloc(1, sizeof *texts + (size_t)n * sizeof texts->texts[0]);
    if (!texts) return tkl_error(L, "checkpoint_read: out of memory");
    *slot = texts;
    tkl_push_block(L, NULL); /* 5 */
    tk_block *b = tk_checkpoint_read(dir, n, names, texts->texts);
    texts->n = n; /* the entries are NULL or malloc'd texts from here on */
    if (!b) return tkl_error(L, "%s", tk_last_error());
    ((tkl_block *)lua_touserdata(L, 5))->b = b;
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        if (texts->texts[i]) {
            lua_pushstring(L, texts->texts[i]);
            lua_setfield(L, -2, names[i]);
        }
    }
    tkl_owned_free(L, 4);
    return 2;
}

/* write_atomic(path, text): text (any bytes) as the file at path, atomically
 * (tk_file_write_atomic): on failure an error naming the path, and the old file kept. */
static int l_write_atomic(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    if (tk_file_write_atomic(path, text, n) != TK_OK) return tkl_error(L, "%s", tk_last_error());
    return 0;
}

/* read_file(path) -> text: a regular file's bytes (tk_file_read: a FIFO or a device is
 * an error, not a wait). */
static int l_read_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    void **slot = tkl_push_owned(L, free); /* frees the text if pushing it raises */
    size_t n = 0;
    char *text = tk_file_read(path, &n);
    if (!text) return tkl_error(L, "%s", tk_last_error());
    *slot = text;
    lua_pushlstring(L, text, n);
    tkl_owned_free(L, 2);
    return 1;
}

static const luaL_Reg csv_methods[] = { { "next", csv_next }, { "close", csv_close }, { NULL, NULL } };

static const luaL_Reg io_functions[] = { { "csv_open", l_csv_open },
                                         { "csv_write_embeddings", l_csv_write_embeddings },
                                         { "safetensors_write", l_safetensors_write },
                                         { "safetensors_read", l_safetensors_read },
                                         { "save_weights", l_save_weights },
                                         { "load_weights", l_load_weights },
                                         { "checkpoint_write", l_checkpoint_write },
                                         { "checkpoint_read", l_checkpoint_read },
                                         { "write_atomic", l_write_atomic },
                                         { "read_file", l_read_file },
                                         { NULL, NULL } };

void tkl_open_io(lua_State *L) {
    luaL_newmetatable(L, TKL_CSV);
    lua_pushcfunction(L, csv_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, csv_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_register(L, NULL, io_functions);
}
