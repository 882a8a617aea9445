/* Serving: tk_model (load from a checkpoint with items from columns or a safetensors
 * file), the pure C query path and its checks, the slot swapped under load, and one
 * model shared by threads with their own contexts and by Lua states in threads.
 * Linked with the Lua binding; `make test-tsan` runs it under ThreadSanitizer. */
#include "tk_test.h"

#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "towerkit_lua.h"

static char tmp_root[256];
static char ckpt_a[300], ckpt_b[300];

static const char *SCHEMA =
    "{\"feature\": ["
    "{\"name\": \"user_id\", \"type\": \"INT\", \"intDomain\": {\"name\": \"user_id\", \"min\": \"0\", \"max\": "
    "\"49\", "
    "\"isCategorical\": true}, \"annotation\": {\"tag\": [\"categorical\", \"user\", \"id\"]}},"
    "{\"name\": \"user_tags\", \"type\": \"INT\", \"intDomain\": {\"name\": \"tag\", \"min\": \"0\", \"max\": \"19\", "
    "\"isCategorical\": true}, \"valueCount\": {\"min\": \"0\", \"max\": \"4\"}, \"annotation\": {\"tag\": "
    "[\"categorical\", \"user\", \"list\"]}},"
    "{\"name\": \"user_activity\", \"type\": \"FLOAT\", \"annotation\": {\"tag\": [\"continuous\", \"user\"]}},"
    "{\"name\": \"item_id\", \"type\": \"INT\", \"intDomain\": {\"name\": \"item_id\", \"min\": \"0\", \"max\": "
    "\"39\", "
    "\"isCategorical\": true}, \"annotation\": {\"tag\": [\"categorical\", \"item_id\"]}},"
    "{\"name\": \"item_tag\", \"type\": \"INT\", \"intDomain\": {\"name\": \"tag\", \"min\": \"0\", \"max\": \"19\", "
    "\"isCategorical\": true}, \"annotation\": {\"tag\": [\"categorical\", \"item\"]}}"
    "]}";

/* A small two-tower block built by hand: the layout the Lua TwoTowerBlock saves. */
static tk_block *two_tower(uint64_t seed) {
    tk_init tn = { .kind = TK_INIT_TRUNCATED_NORMAL, .a = 0.5f, .b = 0 };
    tk_block *qe = tk_embeddings_new("embeddings");
    tk_embeddings_add_feature(qe, "user_id", "user_id", 50, 8, TK_COMBINER_SUM, tn, seed + 1);
    tk_embeddings_add_feature(qe, "user_tags", "tag", 20, 8, TK_COMBINER_MEAN, tn, seed + 2);
    tk_embeddings_add_continuous(qe, "user_activity");
    tk_block *q = tk_sequential_new("query");
    tk_sequential_append(q, qe);
    tk_block *qd =
        tk_dense_new("dense_0", 17, 8, TK_ACT_LINEAR, true, tk_init_default_kernel(), tk_init_zeros(), seed + 3);
    tk_sequential_append(q, qd);
    tk_block_release(qd);
    tk_block *ie = tk_embeddings_new("embeddings");
    tk_embeddings_add_feature(ie, "item_id", "item_id", 40, 8, TK_COMBINER_SUM, tn, seed + 4);
    tk_embeddings_add_feature(ie, "item_tag", "tag", 20, 8, TK_COMBINER_SUM, tn, seed + 5);
    tk_block *it = tk_sequential_new("item");
    tk_sequential_append(it, ie);
    tk_block *id =
        tk_dense_new("dense_0", 16, 8, TK_ACT_LINEAR, true, tk_init_default_kernel(), tk_init_zeros(), seed + 6);
    tk_sequential_append(it, id);
    tk_block_release(id);
    tk_block *tt = tk_parallel_new("two_tower");
    tk_parallel_add(tt, "query", q);
    tk_parallel_add(tt, "item", it);
    tk_block_set_post(tt, tk_l2norm_block_new("l2-norm"));
    /* the containers hold their own references */
    tk_block_release(qe);
    tk_block_release(ie);
    tk_block_release(q);
    tk_block_release(it);
    tk_block_release(tk_block_post(tt));
    return tt;
}

/* 60 item rows with 40 distinct ids (ids repeat) and a tag each. */
static tk_columns *item_columns(void) {
    tk_columns *c = calloc(1, sizeof *c);
    c->nrows = 60;
    c->ncols = 2;
    c->names = calloc(2, sizeof *c->names);
    c->types = calloc(2, sizeof *c->types);
    c->values = calloc(2, sizeof *c->values);
    c->offsets = calloc(2, sizeof *c->offsets);
    c->names[0] = strdup("item_id");
    c->names[1] = strdup("item_tag");
    c->types[0] = c->types[1] = TK_COL_INT64;
    c->values[0] = tk_tensor_new_1d(TK_I64, 60);
    c->values[1] = tk_tensor_new_1d(TK_I64, 60);
    for (int i = 0; i < 60; i++) {
        tk_i64(c->values[0])[i] = (i * 7) % 40;
        tk_i64(c->values[1])[i] = (i * 3) % 20;
    }
    return c;
}

static void make_checkpoint(const char *dir, uint64_t seed) {
    tk_block *b = two_tower(seed);
    const char *names[1] = { "schema.json" };
    const char *texts[1] = { SCHEMA };
    if (tk_checkpoint_write(dir, b, 1, names, texts) != TK_OK) printf("    checkpoint: %s\n", tk_last_error());
    tk_block_release(b);
    /* item embeddings from the catalogue, written as the Lua API writes them */
    tk_columns *items = item_columns();
    tk_model_options o = { 0 };
    o.items = items;
    o.batch_size = 16; /* several passes */
    tk_model *m = tk_model_load(dir, &o);
    if (!m) {
        printf("    model_load: %s\n", tk_last_error());
    } else {
        char path[400];
        snprintf(path, sizeof path, "%s/item_embeddings.safetensors", dir);
        const char *n[2] = { "ids", "embeddings" };
        tk_tensor *t[2] = { (tk_tensor *)tk_model_item_ids(m), (tk_tensor *)tk_model_item_embeddings(m) };
        if (tk_safetensors_write(path, 2, n, t, NULL) != TK_OK) printf("    write: %s\n", tk_last_error());
        tk_model_release(m);
    }
    tk_columns_free(items);
}

/* Two users: ids {3, 7}, tag lists {1, 2} and {5}, activity {0.5, -1}. */
static tk_value *two_users(tk_ctx *ctx) {
    tk_value *q = tk_value_table(ctx);
    int64_t users[2] = { 3, 7 }, offs[3] = { 0, 2, 3 }, tags[3] = { 1, 2, 5 };
    float act[2] = { 0.5f, -1.0f };
    tk_query_set_ids(ctx, q, "user_id", 2, users);
    tk_query_set_list(ctx, q, "user_tags", 2, offs, tags);
    tk_query_set_floats(ctx, q, "user_activity", 2, act);
    return q;
}

static void test_load_and_recommend(void) {
    tk_model *m = tk_model_load(ckpt_a, NULL);
    TK_CHECK_MSG(m != NULL, "%s", tk_last_error());
    if (!m) return;
    TK_CHECK(tk_model_num_items(m) == 40);
    TK_CHECK(tk_model_dim(m) == 8);
    TK_CHECK(tk_model_num_features(m) == 3);
    TK_CHECK(tk_model_schema_json(m) && strstr(tk_model_schema_json(m), "user_tags"));
    const tk_feature_info *f = tk_model_feature(m, 1);
    TK_CHECK(f && strcmp(f->name, "user_tags") == 0 && f->is_list && f->cardinality == 20);
    TK_CHECK(tk_model_feature(m, 2)->kind == TK_FEATURE_CONTINUOUS);
    /* first occurrence order: ids 0, 7, 14, ... */
    TK_CHECK(tk_i64(tk_model_item_ids(m))[1] == 7);

    tk_ctx *ctx = tk_ctx_new(0);
    tk_tensor *ids, *scores;
    TK_CHECK(tk_model_recommend(m, ctx, two_users(ctx), 40, &ids, &scores) == TK_OK);
    TK_CHECK(ids && ids->shape[0] == 2 && ids->shape[1] == 40);
    /* the scores are the inner products with the items, in descending order */
    tk_tensor *q = tk_model_encode(m, ctx, two_users(ctx));
    TK_CHECK(q && q->shape[0] == 2 && q->shape[1] == 8);
    const tk_tensor *items = tk_model_item_embeddings(m), *item_ids = tk_model_item_ids(m);
    for (int r = 0; r < 2 && q; r++) {
        for (int j = 0; j < 40; j++) {
            int64_t id = tk_i64(ids)[r * 40 + j], row = -1;
            for (int64_t i = 0; i < 40; i++)
                if (tk_i64(item_ids)[i] == id) row = i;
            TK_CHECK(row >= 0);
            if (row < 0) break;
            double dot = 0;
            for (int d = 0; d < 8; d++) dot += tk_f32(q)[r * 8 + d] * tk_f32(items)[row * 8 + d];
            TK_CHECK_NEAR(tk_f32(scores)[r * 40 + j], dot, 1e-5);
            if (j) TK_CHECK(tk_f32(scores)[r * 40 + j] <= tk_f32(scores)[r * 40 + j - 1]);
        }
    }
    /* k beyond the catalogue pads with -1 */
    tk_ctx_reset(ctx);
    TK_CHECK(tk_model_recommend(m, ctx, two_users(ctx), 45, &ids, &scores) == TK_OK);
    TK_CHECK(ids && tk_i64(ids)[44] == -1);

    /* items from columns give the file's matrix. With the file's batching (passes of 16
     * rows) it is the same forward pass on the same rows in this process: the same bits. */
    tk_columns *c = item_columns();
    tk_model_options o = { 0 };
    o.items = c;
    o.batch_size = 16;
    tk_model *m2 = tk_model_load(ckpt_a, &o);
    TK_CHECK(m2 && tk_model_num_items(m2) == 40);
    if (m2)
        TK_CHECK(memcmp(tk_model_item_embeddings(m2)->data, items->data, (size_t)items->numel * sizeof(float)) == 0);
    tk_model_release(m2);
    /* In one pass (the default batch) the dense layer's sgemm has another shape, so
     * another kernel path may sum its 16 products and the bias in another order: each
     * pre-norm value y_d moves by at most about 17 u sum_k |x_k w_kd| (u = 2^-24). These
     * seeded weights give sum_k |x_k w_kd| <= 3.05 |y| on every row, and the rows are unit
     * vectors, so after the norm (the moved |y| counted once more, and its own few u)
     * each element is within 2 * 17 * 3.05 u + 4 u < 110 u, about 6.6e-6, of the file's.
     * (Haswell and Zen kernels differ by 1 ulp here.) */
    o.batch_size = 0;
    m2 = tk_model_load(ckpt_a, &o);
    TK_CHECK(m2 && tk_model_num_items(m2) == 40);
    if (m2) TK_CHECK_ALL_NEAR(tk_f32(tk_model_item_embeddings(m2)), tk_f32(items), items->numel, 110 * 0x1p-24);
    tk_model_release(m2);
    tk_columns_free(c);
    tk_ctx_free(ctx);
    tk_model_release(m);
}

static void expect_query_error(tk_model *m, tk_ctx *ctx, tk_value *q, const char *needle) {
    tk_tensor *ids = NULL, *scores = NULL;
    TK_CHECK(tk_model_recommend(m, ctx, q, 5, &ids, &scores) == TK_ERROR);
    TK_CHECK(ids == NULL);
    TK_CHECK_ERROR(tk_ctx_error(ctx), needle);
    tk_ctx_reset(ctx);
}

static void test_bad_queries(void) {
    tk_model *m = tk_model_load(ckpt_a, NULL);
    if (!m) {
        TK_CHECK(m != NULL);
        return;
    }
    tk_ctx *ctx = tk_ctx_new(0);
    tk_value *q = two_users(ctx);
    int64_t bad[2] = { 3, 50 };
    tk_query_set_ids(ctx, q, "user_id", 2, bad);
    expect_query_error(m, ctx, q, "feature 'user_id': id 50 at row 1 is out of range [0, 50)");

    q = two_users(ctx);
    int64_t offs[3] = { 0, 2, 3 }, tags[3] = { 1, -2, 5 };
    tk_query_set_list(ctx, q, "user_tags", 2, offs, tags);
    expect_query_error(m, ctx, q, "feature 'user_tags': id -2 at row 0 is out of range [0, 20)");

    q = two_users(ctx);
    float one = 1;
    tk_query_set_floats(ctx, q, "colour", 1, &one);
    expect_query_error(m, ctx, q,
                       "unknown feature 'colour' (the query tower reads: user_id, user_tags, user_activity)");

    q = two_users(ctx); /* item features are ignored */
    int64_t item[2] = { 1, 2 };
    tk_query_set_ids(ctx, q, "item_id", 2, item);
    tk_tensor *ids, *scores;
    TK_CHECK(tk_model_recommend(m, ctx, q, 5, &ids, &scores) == TK_OK);
    tk_ctx_reset(ctx);

    q = tk_value_table(ctx);
    int64_t u = 1;
    tk_query_set_ids(ctx, q, "user_id", 1, &u);
    expect_query_error(m, ctx, q, "missing feature 'user_tags' (a list of ids per row)");

    q = two_users(ctx);
    float nan = NAN, act[2] = { 0, NAN };
    (void)nan;
    tk_query_set_floats(ctx, q, "user_activity", 2, act);
    expect_query_error(m, ctx, q, "feature 'user_activity': the value at row 1 is not a finite number");

    q = two_users(ctx);
    tk_query_set_floats(ctx, q, "user_id", 2, act);
    expect_query_error(m, ctx, q, "feature 'user_id': expected int64 ids [B] or [B, 1], got float32 [2]");

    q = two_users(ctx);
    tk_query_set_ids(ctx, q, "user_id", 1, &u);
    expect_query_error(m, ctx, q, "feature 'user_tags' has 2 rows but 'user_id' has 1");

    q = two_users(ctx);
    int64_t boffs[3] = { 0, 3, 2 };
    tk_query_set_list(ctx, q, "user_tags", 2, boffs, tags);
    expect_query_error(m, ctx, q, "offsets must");

    TK_CHECK(tk_model_recommend(m, ctx, two_users(ctx), 0, &ids, &scores) == TK_ERROR);
    TK_CHECK_ERROR(tk_ctx_error(ctx), "k must be at least 1");
    tk_ctx_free(ctx);
    tk_model_release(m);

    /* loading errors */
    TK_CHECK(tk_model_load("/nonexistent/towerkit-model", NULL) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "/nonexistent/towerkit-model");
    tk_model_options o = { 0 };
    o.items_path = "/nonexistent/items.safetensors";
    TK_CHECK(tk_model_load(ckpt_a, &o) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "item embeddings");
    /* embeddings of the wrong width */
    char path[400];
    snprintf(path, sizeof path, "%s/narrow.safetensors", tmp_root);
    tk_tensor *ids4 = tk_tensor_new_1d(TK_I64, 4), *e4 = tk_tensor_new_2d(TK_F32, 4, 3);
    const char *n[2] = { "ids", "embeddings" };
    tk_tensor *t[2] = { ids4, e4 };
    tk_safetensors_write(path, 2, n, t, NULL);
    o.items_path = path;
    TK_CHECK(tk_model_load(ckpt_a, &o) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "the query tower returns 8 dimensions but the item embeddings have 3");
    tk_tensor_release(ids4);
    tk_tensor_release(e4);
    /* a NaN or an infinity in the embeddings is refused, by row (it would make every score NaN) */
    tk_tensor *ids3 = tk_tensor_new_1d(TK_I64, 3), *e3 = tk_tensor_new_2d(TK_F32, 3, 8);
    tk_f32(e3)[2 * 8 + 5] = INFINITY;
    t[0] = ids3;
    t[1] = e3;
    snprintf(path, sizeof path, "%s/inf.safetensors", tmp_root);
    tk_safetensors_write(path, 2, n, t, NULL);
    o.items_path = path;
    TK_CHECK(tk_model_load(ckpt_a, &o) == NULL);
    TK_CHECK_ERROR(tk_last_error(), "inf.safetensors: tensor \"embeddings\" holds a non-finite value (inf) in row 2");
    tk_tensor_release(ids3);
    tk_tensor_release(e3);
}

/* ---- threads: one model, many contexts; the slot swapped while they run ---- */

typedef struct ref_result {
    tk_model *model;
    int64_t ids[2 * 5];
    float scores[2 * 5];
} ref_result;

static ref_result refs[2];

static void reference(ref_result *r, tk_model *m) {
    tk_ctx *ctx = tk_ctx_new(0);
    tk_tensor *ids, *scores;
    r->model = m;
    if (tk_model_recommend(m, ctx, two_users(ctx), 5, &ids, &scores) == TK_OK) {
        memcpy(r->ids, ids->data, sizeof r->ids);
        memcpy(r->scores, scores->data, sizeof r->scores);
    }
    tk_ctx_free(ctx);
}

typedef struct worker {
    tk_model_slot *slot;
    int requests;
    int failures, mismatches, saw[2];
    int version_mismatches; /* a model paired with another model's version */
} worker;

/* The swaps below make odd versions model a (refs[0]) and even ones model b. */
static void *query_worker(void *arg) {
    worker *w = arg;
    tk_ctx *ctx = tk_ctx_new(0);
    for (int i = 0; i < w->requests; i++) {
        tk_ctx_reset(ctx);
        uint64_t version = 0;
        tk_model *m = tk_model_slot_get_versioned(w->slot, &version);
        if ((m == refs[0].model) != (version % 2 == 1)) w->version_mismatches++;
        tk_tensor *ids, *scores;
        if (tk_model_recommend(m, ctx, two_users(ctx), 5, &ids, &scores) != TK_OK) {
            w->failures++;
        } else {
            int which = m == refs[0].model ? 0 : m == refs[1].model ? 1 : -1;
            /* bit for bit: the reference ran the same model on the same two users with the
             * same shapes, in this process (one sgemm kernel); products this small stay on
             * the calling thread and tk_topk keeps 2 queries on it, so the same code path.
             * A difference means a request saw a model half swapped. */
            if (which < 0 || memcmp(ids->data, refs[which].ids, sizeof refs[0].ids) != 0 ||
                memcmp(scores->data, refs[which].scores, sizeof refs[0].scores) != 0)
                w->mismatches++;
            else
                w->saw[which]++;
        }
        tk_model_release(m);
    }
    tk_ctx_free(ctx);
    return NULL;
}

static void test_threads_and_swaps(void) {
    tk_model *a = tk_model_load(ckpt_a, NULL), *b = tk_model_load(ckpt_b, NULL);
    TK_CHECK(a && b);
    if (!a || !b) return;
    reference(&refs[0], a);
    reference(&refs[1], b);
    /* two different models (other seeds): scores apart by far more than rounding */
    TK_CHECK(memcmp(refs[0].scores, refs[1].scores, sizeof refs[0].scores) != 0);
    tk_model_slot *slot = tk_model_slot_new(a);
    TK_CHECK(tk_model_slot_version(slot) == 1);
    enum { NW = 4 };
    worker w[NW];
    pthread_t th[NW];
    for (int i = 0; i < NW; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].slot = slot;
        w[i].requests = 300;
        pthread_create(&th[i], NULL, query_worker, &w[i]);
    }
    /* swap back and forth while they run; the old model lives until its last request */
    for (int s = 0; s < 40; s++) {
        tk_model_slot_set(slot, s % 2 ? a : b);
        usleep(500);
    }
    for (int i = 0; i < NW; i++) pthread_join(th[i], NULL);
    int fails = 0, mism = 0, saw0 = 0, saw1 = 0, vmism = 0;
    for (int i = 0; i < NW; i++) {
        fails += w[i].failures;
        mism += w[i].mismatches;
        saw0 += w[i].saw[0];
        saw1 += w[i].saw[1];
        vmism += w[i].version_mismatches;
    }
    TK_CHECK_MSG(fails == 0, "%d failed requests", fails);
    TK_CHECK_MSG(mism == 0, "%d requests differ from their model's reference", mism);
    TK_CHECK_MSG(vmism == 0, "%d requests got a model with another model's version", vmism);
    uint64_t v = 0;
    tk_model *cur = tk_model_slot_get_versioned(slot, &v);
    TK_CHECK(v == 41 && cur == a);
    tk_model_release(cur);
    TK_CHECK(tk_model_slot_get_versioned(NULL, &v) == NULL && v == 0);
    TK_CHECK(saw0 + saw1 == NW * 300);
    TK_CHECK(tk_model_slot_version(slot) == 41);
    /* a failed reload keeps the current model */
    tk_model *before = tk_model_slot_get(slot);
    TK_CHECK(tk_model_slot_reload(slot, "/nonexistent/towerkit-model", NULL) == TK_ERROR);
    tk_model *after = tk_model_slot_get(slot);
    TK_CHECK(before == after);
    tk_model_release(before);
    tk_model_release(after);
    TK_CHECK(tk_model_slot_reload(slot, ckpt_b, NULL) == TK_OK);
    TK_CHECK(tk_model_slot_version(slot) == 42);
    /* release in any order: the slot still holds its model */
    tk_model_release(a);
    tk_model_release(b);
    tk_model_slot_release(slot);
}

/* ---- Lua states in threads sharing one model ---- */

static const char *LUA_QUERY =
    "local tk = require 'towerkit'\n"
    "local n = ...\n"
    "local q = { user_id = tk.tensor({3, 7}, 'int64'), user_tags__values = tk.tensor({1, 2, 5}, 'int64'),\n"
    "            user_tags__offsets = tk.tensor({0, 2, 3}, 'int64'), user_activity = tk.tensor({0.5, -1}) }\n"
    "local first\n"
    "for i = 1, n do\n"
    "  local ids, scores = model:recommend(q, 5)\n"
    "  local s = table.concat(ids:totable()[1], ',') .. ';' .. table.concat(ids:totable()[2], ',')\n"
    "  if first and s ~= first then error('results differ: ' .. s .. ' vs ' .. first) end\n"
    "  first = s\n"
    "end\n"
    "local sq = tk.serving.query(model, { user_id = 3, user_tags = { 1, 2 }, user_activity = 0.5 })\n"
    "local ids2 = model:recommend(sq, 5)\n"
    "assert(table.concat(ids2:totable()[1], ',') == first:match('^[^;]*'), 'serving.query differs')\n"
    "assert(model:query_block():name() == 'query')\n"
    "local ok, err = model:try_recommend({ user_id = tk.tensor({99}, 'int64') }, 5)\n"
    "assert(ok == nil and err:find('out of range', 1, true), tostring(err))\n"
    "return first\n";

typedef struct lua_worker {
    tk_model *model;
    char result[256];
    char error[512];
} lua_worker;

static void *lua_thread(void *arg) {
    lua_worker *w = arg;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (towerkit_lua_open(L, NULL) != 0 || towerkit_lua_push_model(L, w->model) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    lua_setglobal(L, "model");
    if (luaL_loadstring(L, LUA_QUERY) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
    } else {
        lua_pushnumber(L, 50);
        if (lua_pcall(L, 1, 1, 0) != 0)
            snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        else
            snprintf(w->result, sizeof w->result, "%s", lua_tostring(L, -1));
    }
    lua_close(L);
    return NULL;
}

static void test_lua_states_in_threads(void) {
    tk_model *m = tk_model_load(ckpt_a, NULL);
    TK_CHECK(m != NULL);
    if (!m) return;
    char expect[256];
    reference(&refs[0], m);
    snprintf(expect, sizeof expect, "%lld,%lld,%lld,%lld,%lld;%lld,%lld,%lld,%lld,%lld", (long long)refs[0].ids[0],
             (long long)refs[0].ids[1], (long long)refs[0].ids[2], (long long)refs[0].ids[3], (long long)refs[0].ids[4],
             (long long)refs[0].ids[5], (long long)refs[0].ids[6], (long long)refs[0].ids[7], (long long)refs[0].ids[8],
             (long long)refs[0].ids[9]);
    enum { NT = 3 };
    lua_worker w[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].model = m;
        pthread_create(&th[i], NULL, lua_thread, &w[i]);
    }
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++) {
        TK_CHECK_MSG(w[i].error[0] == 0, "state %d: %s", i, w[i].error);
        TK_CHECK_MSG(strcmp(w[i].result, expect) == 0, "state %d: %s, expected %s", i, w[i].result, expect);
    }
    tk_model_release(m);
}

/* ---- Lua states recommending through a slot while it swaps ---- */

/* slot:recommend returns the version of the model that answered: odd versions are model
 * a (EXPECT_ODD), even ones model b. */
static const char *LUA_SLOT_QUERY =
    "local tk = require 'towerkit'\n"
    "local n = ...\n"
    "local q = { user_id = tk.tensor({3, 7}, 'int64'), user_tags__values = tk.tensor({1, 2, 5}, 'int64'),\n"
    "            user_tags__offsets = tk.tensor({0, 2, 3}, 'int64'), user_activity = tk.tensor({0.5, -1}) }\n"
    "local seen = {}\n"
    "for i = 1, n do\n"
    "  local ids, scores, version = slot:recommend(q, 5)\n"
    "  local s = table.concat(ids:totable()[1], ',') .. ';' .. table.concat(ids:totable()[2], ',')\n"
    "  local expect = version % 2 == 1 and EXPECT_ODD or EXPECT_EVEN\n"
    "  if s ~= expect then error(('version %d answered %s, expected %s'):format(version, s, expect)) end\n"
    "  local m, v = slot:current()\n"
    "  if (m:dir() == DIR_ODD) ~= (v % 2 == 1) then error(('current(): version %d with %s'):format(v, m:dir())) end\n"
    "  seen[version % 2] = true\n"
    "end\n"
    "return 'ok'\n";

typedef struct lua_slot_worker {
    tk_model_slot *slot;
    const char *expect_odd, *expect_even;
    char error[512];
} lua_slot_worker;

static void *lua_slot_thread(void *arg) {
    lua_slot_worker *w = arg;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (towerkit_lua_open(L, NULL) != 0 || towerkit_lua_push_model_slot(L, w->slot) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    lua_setglobal(L, "slot");
    lua_pushstring(L, w->expect_odd);
    lua_setglobal(L, "EXPECT_ODD");
    lua_pushstring(L, w->expect_even);
    lua_setglobal(L, "EXPECT_EVEN");
    lua_pushstring(L, ckpt_a);
    lua_setglobal(L, "DIR_ODD");
    if (luaL_loadstring(L, LUA_SLOT_QUERY) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
    } else {
        lua_pushnumber(L, 150);
        if (lua_pcall(L, 1, 1, 0) != 0) snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
    }
    lua_close(L);
    return NULL;
}

static void ids_string(const ref_result *r, char *out, size_t n) {
    const int64_t *x = r->ids;
    snprintf(out, n, "%lld,%lld,%lld,%lld,%lld;%lld,%lld,%lld,%lld,%lld", (long long)x[0], (long long)x[1],
             (long long)x[2], (long long)x[3], (long long)x[4], (long long)x[5], (long long)x[6], (long long)x[7],
             (long long)x[8], (long long)x[9]);
}

static void test_lua_slot_versions_under_swaps(void) {
    tk_model *a = tk_model_load(ckpt_a, NULL), *b = tk_model_load(ckpt_b, NULL);
    TK_CHECK(a && b);
    if (!a || !b) {
        tk_model_release(a);
        tk_model_release(b);
        return;
    }
    reference(&refs[0], a);
    reference(&refs[1], b);
    char odd[256], even[256];
    ids_string(&refs[0], odd, sizeof odd);
    ids_string(&refs[1], even, sizeof even);
    TK_CHECK(strcmp(odd, even) != 0);
    tk_model_slot *slot = tk_model_slot_new(a);
    enum { NT = 2 };
    lua_slot_worker w[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].slot = slot;
        w[i].expect_odd = odd;
        w[i].expect_even = even;
        pthread_create(&th[i], NULL, lua_slot_thread, &w[i]);
    }
    for (int s = 0; s < 40; s++) {
        tk_model_slot_set(slot, s % 2 ? a : b); /* version s + 2: even is b */
        usleep(300);
    }
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++) TK_CHECK_MSG(w[i].error[0] == 0, "state %d: %s", i, w[i].error);
    tk_model_slot_release(slot);
    tk_model_release(a);
    tk_model_release(b);
}

/* The host releases first, then the state; and the other way round. */
static void test_release_orders(void) {
    tk_model *m = tk_model_load(ckpt_a, NULL);
    if (!m) {
        TK_CHECK(m != NULL);
        return;
    }
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    TK_CHECK(towerkit_lua_push_model(L, m) == 0); /* without towerkit_lua_open: core loaded on demand */
    TK_CHECK(towerkit_lua_to_model(L, -1) == m);
    lua_setglobal(L, "model");
    tk_model_release(m); /* the state keeps it */
    TK_CHECK(luaL_dostring(L, "assert(model:num_items() == 40); model:release(); model:release()") == 0);
    TK_CHECK(luaL_dostring(L, "return pcall(model.dim, model)") == 0);
    TK_CHECK(lua_toboolean(L, -2) == 0);
    TK_CHECK_ERROR(lua_tostring(L, -1), "model has been released");
    lua_close(L);

    m = tk_model_load(ckpt_a, NULL);
    tk_model_slot *s = tk_model_slot_new(m);
    L = luaL_newstate();
    luaL_openlibs(L);
    TK_CHECK(towerkit_lua_open(L, NULL) == 0);
    TK_CHECK(towerkit_lua_push_model_slot(L, s) == 0);
    lua_setglobal(L, "slot");
    TK_CHECK(towerkit_lua_push_model(L, m) == 0);
    lua_setglobal(L, "model");
    lua_close(L); /* the state goes first */
    tk_model_slot_release(s);
    tk_model_release(m);
    TK_CHECK(towerkit_lua_push_model(NULL, NULL) == -1);
}

int main(void) {
    tk_set_num_threads(1);
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tk-serving-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(ckpt_a, sizeof ckpt_a, "%s/a", tmp_root);
    snprintf(ckpt_b, sizeof ckpt_b, "%s/b", tmp_root);
    make_checkpoint(ckpt_a, 1);
    make_checkpoint(ckpt_b, 100);
    TK_RUN(test_load_and_recommend);
    TK_RUN(test_bad_queries);
    TK_RUN(test_threads_and_swaps);
    TK_RUN(test_lua_states_in_threads);
    TK_RUN(test_lua_slot_versions_under_swaps);
    TK_RUN(test_release_orders);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) printf("    could not remove %s\n", tmp_root);
    return tk_test_summary();
}
