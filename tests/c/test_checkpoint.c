/* Weights and checkpoints: a block graph saved and read back predicts bit for bit what
 * it did; overwrites are atomic; failed writes leave the old checkpoint; every broken
 * checkpoint is a clear error. */
#include "io/io_impl.h"
#include "io_test.h"
#include "two_tower_fixture.h"

#include <cJSON.h>
#include <math.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>

static const tk_init UNIFORM = { .kind = TK_INIT_RANDOM_UNIFORM, .a = -0.5f, .b = 0.5f };

/* The fixture's two towers, the query tower sized lazily (with a batch norm), every
 * weight uniform so that biases differ between seeds too. */
static tk_block *two_tower(int64_t out, uint64_t seed) {
    return tt_two_tower((tt_fixture){ out, true, UNIFORM, UNIFORM, seed });
}

typedef struct outputs {
    tk_tensor *query, *item;
} outputs;

static void outputs_free(outputs *o) {
    tk_tensor_release(o->query);
    tk_tensor_release(o->item);
    o->query = o->item = NULL;
}

/* An evaluation forward pass; training first runs one training step's forward and
 * applies its batch-norm statistics (so those are not the initial ones). */
static outputs run(tk_block *b, bool train_first) {
    const int64_t users[6] = { 0, 3, 9, 3, 1, 7 }, items[6] = { 19, 0, 5, 5, 12, 2 };
    tk_tensor *u = tk_tensor_new_1d(TK_I64, 6), *it = tk_tensor_new_1d(TK_I64, 6);
    memcpy(u->data, users, sizeof users);
    memcpy(it->data, items, sizeof items);
    tk_ctx *ctx = tk_ctx_new(3);
    outputs o = { 0 };
    for (int pass = train_first ? 0 : 1; pass < 2; pass++) {
        tk_ctx_reset(ctx);
        tk_ctx_set_training(ctx, pass == 0);
        tk_value *in = tk_value_table(ctx);
        tk_value_set(ctx, in, "user_id", u);
        tk_value_set(ctx, in, "item_id", it);
        tk_value *out = tk_block_forward(ctx, b, in);
        TK_CHECK_MSG(out != NULL, "%s", tk_ctx_error(ctx));
        if (!out) break;
        if (pass == 0) {
            tk_ctx_apply_updates(ctx);
        } else {
            o.query = tk_tensor_clone(tk_value_get(out, "query"));
            o.item = tk_tensor_clone(tk_value_get(out, "item"));
        }
    }
    tk_ctx_free(ctx);
    tk_tensor_release(u);
    tk_tensor_release(it);
    return o;
}

/* Bit for bit: weights go through the file unchanged, and the outputs compared come from
 * the same evaluation pass (run()) on the same inputs and shapes in this process. */
static bool same_bits(const tk_tensor *a, const tk_tensor *b) {
    return a && b && a->dtype == b->dtype && tk_tensor_same_shape(a, b) &&
           memcmp(a->data, b->data, (size_t)a->numel * tk_dtype_size(a->dtype)) == 0;
}

static bool same_outputs(outputs a, outputs b) { return same_bits(a.query, b.query) && same_bits(a.item, b.item); }

static const char *SCHEMA = "{\"feature\": [{\"name\": \"user_id\", \"type\": \"INT\"}]}\n";

/* A built model, its outputs, and a checkpoint of it in dir. */
static tk_block *saved_model(const char *dir, uint64_t seed, outputs *o) {
    tk_block *b = two_tower(3, seed);
    *o = run(b, true);
    const char *names[1] = { "schema.json" };
    const char *texts[1] = { SCHEMA };
    tk_status st = tk_checkpoint_write(dir, b, 1, names, texts);
    TK_CHECK_MSG(st == TK_OK, "%s", tk_last_error());
    return b;
}

/* The checkpoint in dir predicts `want`. */
static bool reads_as(const char *dir, outputs want) {
    tk_block *b = tk_checkpoint_read(dir, 0, NULL, NULL);
    if (!b) {
        printf("    %s\n", tk_last_error());
        return false;
    }
    outputs got = run(b, false);
    bool same = same_outputs(got, want);
    outputs_free(&got);
    tk_block_release(b);
    return same;
}

static int collect_name(void *ud, const char *path, tk_tensor *param, bool trainable) {
    char *names = ud;
    strcat(names, path);
    strcat(names, " ");
    return 0;
}

static void test_round_trip(void) {
    const char *dir = io_path("model");
    outputs want;
    tk_block *b = saved_model(dir, 1, &want);
    TK_CHECK(io_exists(io_path("model/config.json")) && io_exists(io_path("model/weights.safetensors")));
    char *config = io_read(io_path("model/config.json"), NULL);
    TK_CHECK(config && strchr(config, '\n') && strstr(config, "\"in\":\t4")); /* pretty, built widths */
    free(config);
    /* the file's names are the parameter paths */
    tk_safetensors *st = tk_safetensors_read(io_path("model/weights.safetensors"));
    TK_CHECK(st != NULL);
    char expected[2048] = "", got[2048] = "";
    tk_block_visit_params(b, true, collect_name, expected);
    for (int32_t i = 0; st && i < st->n; i++) {
        strcat(got, st->names[i]);
        strcat(got, " ");
    }
    TK_CHECK_MSG(strcmp(got, expected) == 0, "file has %s\n    block has %s", got, expected);
    TK_CHECK(strstr(got, "query/mlp/dense_0/kernel ") && strstr(got, "query/mlp/bn/moving_variance ") &&
             strstr(got, "item/embeddings/item_id "));
    TK_CHECK(st && st->metadata_json && strstr(st->metadata_json, "\"format\":\"towerkit\""));
    tk_safetensors_free(st);
    /* read back: built, same outputs bit for bit, extra files as text */
    const char *names[2] = { "schema.json", "absent.txt" };
    char *texts[2] = { (char *)"x", (char *)"y" };
    tk_block *c = tk_checkpoint_read(dir, 2, names, texts);
    TK_CHECK_MSG(c != NULL, "%s", tk_last_error());
    if (c) {
        TK_CHECK(tk_block_is_built(c));
        TK_CHECK(tk_block_count_params(c) == tk_block_count_params(b));
        outputs got_out = run(c, false);
        TK_CHECK(same_outputs(got_out, want));
        outputs_free(&got_out);
        TK_CHECK(texts[0] && strcmp(texts[0], SCHEMA) == 0);
        TK_CHECK(texts[1] == NULL);
        free(texts[0]);
        tk_block_release(c);
    }
    /* the weights alone, into the original block after changing it */
    tk_tensor *k = tk_block_param(tk_block_find(b, "dense_1"), "kernel");
    tk_f32(k)[0] += 1.0f;
    TK_CHECK(tk_block_load_weights(b, io_path("model/weights.safetensors")) == TK_OK);
    outputs again = run(b, false);
    TK_CHECK(same_outputs(again, want));
    outputs_free(&again);
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0 && io_count_entries(io_dir, ".old-") == 0);
    /* a trailing slash names the same directory */
    TK_CHECK(tk_checkpoint_write(io_path("model/"), b, 0, NULL, NULL) == TK_OK);
    TK_CHECK(reads_as(io_path("model/"), want));
    TK_CHECK(!io_exists(io_path("model/schema.json"))); /* the new checkpoint has only what was given */
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0 && io_count_entries(io_dir, ".old-") == 0);
    outputs_free(&want);
    tk_block_release(b);
    io_remove_tree(dir);
}

static void test_overwrite(void) {
    const char *dir = io_path("over");
    outputs first, second;
    tk_block *a = saved_model(dir, 1, &first);
    io_write_text(io_path("over/notes.txt"), "a file the user left"); /* goes with the old one */
    tk_block *b = saved_model(dir, 2, &second);
    TK_CHECK(!same_outputs(first, second));
    TK_CHECK(reads_as(dir, second));
    TK_CHECK(!io_exists(io_path("over/notes.txt")));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0 && io_count_entries(io_dir, ".old-") == 0);
    outputs_free(&first);
    outputs_free(&second);
    tk_block_release(a);
    tk_block_release(b);
    io_remove_tree(dir);
}

typedef struct write_args {
    const char *dir;
    const tk_block *b;
} write_args;

/* tk_checkpoint_write without extra files, for io_with_size_limit. */
static tk_status write_plain(void *ud) {
    write_args *w = ud;
    return tk_checkpoint_write(w->dir, w->b, 0, NULL, NULL);
}

static void test_failed_writes(void) {
    const char *dir = io_path("keep");
    outputs want, other;
    tk_block *b = saved_model(dir, 1, &want);
    tk_block *c = two_tower(3, 5);
    other = run(c, true);
    /* a file name with '/': refused before anything is written */
    const char *slash[1] = { "sub/schema.json" };
    const char *text[1] = { SCHEMA };
    TK_CHECK(tk_checkpoint_write(dir, c, 1, slash, text) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "extra file name 'sub/schema.json' must be a plain file name");
    const char *reserved[1] = { "config.json" };
    TK_CHECK(tk_checkpoint_write(dir, c, 1, reserved, text) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "is reserved");
    /* a name the file system refuses: fails inside the temporary directory */
    char longname[300];
    memset(longname, 'n', 299);
    longname[299] = '\0';
    const char *toolong[1] = { longname };
    TK_CHECK(tk_checkpoint_write(dir, c, 1, toolong, text) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "File name too long");
    /* the disk fills up while the weights are written */
    write_args w = { dir, c };
    tk_status st = io_with_size_limit(1024, write_plain, &w);
    TK_CHECK(st == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "File too large");
    /* a block that is not built */
    tk_block *lazy = two_tower(3, 7);
    TK_CHECK(tk_checkpoint_write(dir, lazy, 0, NULL, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "block 'dense_0' (dense) has no weights yet");
    tk_block_release(lazy);
    /* after all that, the old checkpoint is whole and nothing is left behind */
    TK_CHECK(reads_as(dir, want));
    char *schema = NULL;
    const char *names[1] = { "schema.json" };
    tk_block *r = tk_checkpoint_read(dir, 1, names, &schema);
    TK_CHECK(r && schema && strcmp(schema, SCHEMA) == 0);
    free(schema);
    tk_block_release(r);
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0 && io_count_entries(io_dir, ".old-") == 0);
    /* a file where the directory should be */
    io_write_text(io_path("afile"), "x");
    TK_CHECK(tk_checkpoint_write(io_path("afile"), c, 0, NULL, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "exists and is not a directory");
    /* the parent does not exist */
    TK_CHECK(tk_checkpoint_write(io_path("no/such/model"), c, 0, NULL, NULL) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "cannot create a temporary directory");
    outputs_free(&want);
    outputs_free(&other);
    tk_block_release(b);
    tk_block_release(c);
    io_remove_tree(dir);
}

/* Writes st's tensors to path, without `drop` and with `add` (may be NULL). */
static void rewrite(const tk_safetensors *st, const char *path, const char *drop, const char *add_name,
                    tk_tensor *add) {
    const char *names[64];
    tk_tensor *ts[64];
    int32_t n = 0;
    for (int32_t i = 0; i < st->n && n < 63; i++) {
        if (drop && strcmp(st->names[i], drop) == 0) continue;
        names[n] = st->names[i];
        ts[n++] = st->tensors[i];
    }
    if (add) {
        names[n] = add_name;
        ts[n++] = add;
    }
    TK_CHECK(tk_safetensors_write(path, n, names, ts, NULL) == TK_OK);
}

/* Reading dir fails with a message containing needle. */
static void expect_read_error(const char *dir, const char *needle) {
    tk_block *b = tk_checkpoint_read(dir, 0, NULL, NULL);
    TK_CHECK_MSG(b == NULL, "reading %s should fail (%s)", dir, needle);
    tk_block_release(b);
    TK_CHECK_ERROR(tk_last_error(), needle);
}

static void test_read_errors(void) {
    const char *dir = io_path("broken");
    outputs want;
    tk_block *b = saved_model(dir, 1, &want);
    const char *cfg = io_path("broken/config.json"), *w = io_path("broken/weights.safetensors");
    size_t clen = 0, wlen = 0;
    char *config = io_read(cfg, &clen), *weights = io_read(w, &wlen);
    char msg[512];

    expect_read_error(io_path("nowhere"), "no such directory");
    snprintf(msg, sizeof msg, "checkpoint '%s': not a directory", cfg);
    expect_read_error(cfg, msg);
    unlink(cfg);
    snprintf(msg, sizeof msg, "checkpoint '%s': config.json is missing", dir);
    expect_read_error(dir, msg);
    io_write_text(cfg, " \n");
    snprintf(msg, sizeof msg, "checkpoint '%s': config.json is empty", dir);
    expect_read_error(dir, msg);
    io_write(cfg, config, clen / 2);
    snprintf(msg, sizeof msg, "checkpoint '%s': config.json: block config: invalid JSON at line", dir);
    expect_read_error(dir, msg);
    io_write_text(cfg, "{\"kind\": \"warp_drive\", \"name\": \"x\"}");
    expect_read_error(dir, "config.json: block config 'x': unknown block kind 'warp_drive'");
    io_write(cfg, config, clen);

    unlink(w);
    snprintf(msg, sizeof msg, "checkpoint '%s': weights.safetensors is missing", dir);
    expect_read_error(dir, msg);
    io_write(w, weights, wlen - 10);
    expect_read_error(dir, "weights.safetensors: tensor 'item/mlp/dense_1/bias': data ends at byte");
    expect_read_error(dir, "(truncated?)");
    io_write(w, weights, 4);
    expect_read_error(dir, "weights.safetensors: the file has 4 bytes");

    /* weights of a model of another shape */
    tk_block *wide = two_tower(5, 1);
    outputs o = run(wide, false);
    outputs_free(&o);
    TK_CHECK(tk_block_save_weights(wide, w) == TK_OK);
    expect_read_error(
        dir,
        "weights.safetensors: tensor 'query/mlp/dense_1/kernel' is float32 [8, 5] but the parameter is float32 [8, 3]");
    tk_block_release(wide);

    /* a tensor too many, one missing */
    io_write(w, weights, wlen);
    tk_safetensors *st = tk_safetensors_read(w);
    TK_CHECK(st != NULL);
    tk_tensor *extra = tk_tensor_new_1d(TK_F32, 2);
    rewrite(st, w, NULL, "extra/w", extra);
    expect_read_error(dir, "weights.safetensors: tensor 'extra/w' is not a parameter of block 'two_tower'");
    rewrite(st, w, "item/mlp/dense_1/bias", NULL, NULL);
    expect_read_error(dir, "weights.safetensors: no tensor 'item/mlp/dense_1/bias' (a parameter of block 'two_tower')");
    /* an int64 tensor where a float32 one belongs */
    tk_tensor *ibias = tk_tensor_new_1d(TK_I64, 3);
    rewrite(st, w, "item/mlp/dense_1/bias", "item/mlp/dense_1/bias", ibias);
    expect_read_error(dir, "tensor 'item/mlp/dense_1/bias' is int64 [3] but the parameter is float32 [3]");
    tk_tensor_release(ibias);
    /* a NaN or an infinity is refused with the tensor and its first bad row */
    for (int k = 0; k < 2; k++) {
        tk_tensor *kernel = NULL;
        for (int32_t i = 0; i < st->n; i++)
            if (strcmp(st->names[i], "query/mlp/dense_1/kernel") == 0) kernel = tk_tensor_clone(st->tensors[i]);
        TK_CHECK(kernel && kernel->ndim == 2 && kernel->shape[0] > 3);
        if (!kernel) break;
        tk_f32(kernel)[3 * kernel->shape[1] + 1] = k ? -INFINITY : NAN;
        tk_f32(kernel)[kernel->numel - 1] = NAN; /* a later row: the first is named */
        rewrite(st, w, "query/mlp/dense_1/kernel", "query/mlp/dense_1/kernel", kernel);
        expect_read_error(dir, k ? "weights.safetensors: tensor 'query/mlp/dense_1/kernel' holds a non-finite value "
                                   "(-inf) in row 3"
                                 : "weights.safetensors: tensor 'query/mlp/dense_1/kernel' holds a non-finite value "
                                   "(nan) in row 3");
        tk_tensor_release(kernel);
    }
    tk_tensor_release(extra);
    tk_safetensors_free(st);

    /* a FIFO (or a device) where a file belongs is refused, not waited on */
    io_fifo(w);
    expect_read_error(dir, "weights.safetensors: cannot open: not a regular file");
    io_no_alarm();
    unlink(w); /* io_write would open the FIFO and wait for a reader */
    io_write(w, weights, wlen);
    io_fifo(cfg);
    snprintf(msg, sizeof msg, "checkpoint '%s': cannot read config.json: not a regular file", dir);
    expect_read_error(dir, msg);
    io_no_alarm();
    unlink(cfg);
    io_write(cfg, config, clen);
    const char *names[1] = { "schema.json" };
    char *schema = NULL;
    io_fifo(io_path("broken/schema.json"));
    tk_block *r = tk_checkpoint_read(dir, 1, names, &schema);
    io_no_alarm();
    TK_CHECK(r == NULL && schema == NULL);
    TK_CHECK_ERROR(tk_last_error(), "cannot read schema.json: not a regular file");
    unlink(io_path("broken/schema.json"));

    /* restored, it reads again */
    io_write(w, weights, wlen);
    TK_CHECK(reads_as(dir, want));
    free(config);
    free(weights);
    outputs_free(&want);
    tk_block_release(b);
    io_remove_tree(dir);
}

static bool params_equal(const tk_block *a, const tk_block *b);

typedef struct param_snap {
    int n;
    tk_tensor *t[64];
} param_snap;

static int snap_visitor(void *ud, const char *path, tk_tensor *param, bool trainable) {
    param_snap *s = ud;
    if (s->n < 64) s->t[s->n++] = tk_tensor_clone(param);
    return 0;
}

static void snap_free(param_snap *s) {
    for (int i = 0; i < s->n; i++) tk_tensor_release(s->t[i]);
}

static bool params_equal(const tk_block *a, const tk_block *b) {
    param_snap x = { 0 }, y = { 0 };
    tk_block_visit_params(a, true, snap_visitor, &x);
    tk_block_visit_params(b, true, snap_visitor, &y);
    bool same = x.n == y.n;
    for (int i = 0; same && i < x.n; i++) same = same_bits(x.t[i], y.t[i]);
    snap_free(&x);
    snap_free(&y);
    return same;
}

/* A failed load changes nothing: every tensor is checked before any is copied. */
static void test_load_is_all_or_nothing(void) {
    const char *w = io_path("w.safetensors");
    tk_block *a = two_tower(3, 1), *b = two_tower(3, 2);
    outputs o = run(a, true);
    outputs_free(&o);
    o = run(b, true);
    outputs_free(&o);
    TK_CHECK(tk_block_save_weights(a, w) == TK_OK);
    tk_safetensors *st = tk_safetensors_read(w);
    /* the last parameter has the wrong shape: the ones before it must not be copied */
    tk_tensor *bad = tk_tensor_new_1d(TK_F32, 4);
    rewrite(st, w, "item/mlp/dense_1/bias", "item/mlp/dense_1/bias", bad);
    tk_block *before = tk_block_clone(b);
    TK_CHECK(tk_block_load_weights(b, w) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "'item/mlp/dense_1/bias' is float32 [4] but the parameter is float32 [3]");
    TK_CHECK(params_equal(b, before));
    /* and the good file loads */
    rewrite(st, w, NULL, NULL, NULL);
    TK_CHECK(tk_block_load_weights(b, w) == TK_OK);
    TK_CHECK(params_equal(b, a));
    tk_tensor_release(bad);
    tk_safetensors_free(st);
    tk_block_release(before);
    tk_block_release(a);
    tk_block_release(b);
}

/* Lazily sized blocks: not built, they can be neither saved nor loaded into; a config
 * written after the build records the widths, so the block read from it is built. */
static void test_lazy_blocks(void) {
    const char *w = io_path("lazy.safetensors");
    tk_block *lazy = two_tower(3, 1);
    TK_CHECK(!tk_block_is_built(lazy));
    TK_CHECK(tk_block_save_weights(lazy, w) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "its dense block 'dense_0' has no weights yet");
    tk_block *built = two_tower(3, 2);
    outputs o = run(built, true);
    outputs_free(&o);
    TK_CHECK(tk_block_save_weights(built, w) == TK_OK);
    TK_CHECK(tk_block_load_weights(lazy, w) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(),
                   "cannot load the weights of block 'two_tower': its dense block 'dense_0' has no weights yet");
    /* every lazily sized kind is restored built from the config of a built block */
    char *config = tk_block_config_json(built);
    tk_block *restored = config ? tk_block_from_config_json(config, 9) : NULL;
    TK_CHECK(restored && tk_block_is_built(restored));
    TK_CHECK(restored && tk_block_load_weights(restored, w) == TK_OK);
    TK_CHECK(restored && params_equal(restored, built));
    free(config);
    tk_block_release(restored);
    tk_block_release(built);
    tk_block_release(lazy);
}

/* ------------------------------------------------------------------------------------ */
/* Interrupted saves                                                                      */
/* ------------------------------------------------------------------------------------ */

/* The interrupted-save tests work in a directory of their own, io_path(CASE): the
 * debris is whatever is there besides the checkpoint "crash". */
#define CASE "interrupted"

static int debris(void) {
    struct stat sb;
    bool present = lstat(io_path(CASE "/crash"), &sb) == 0;
    return io_count_entries(io_path(CASE), "") - (present ? 1 : 0);
}

enum layout { REPLACE, REPLACE_NO_EXCHANGE, CREATE };
static const char *const LAYOUT[] = { "replacing", "replacing without RENAME_EXCHANGE", "creating" };

/* Saves b at dir in a child process that stops at `step` and is killed there (SIGKILL:
 * nothing of the save's own cleanup runs). False when the save finished first (the
 * step is not on its path). */
static bool save_killed_at(const char *dir, const tk_block *b, int step, bool no_exchange) {
    int fds[2];
    if (pipe(fds) != 0) exit(2);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        tk_checkpoint_test_fault(step, TK_CKPT_FAULT_STOP, fds[1], no_exchange);
        _exit(tk_checkpoint_write(dir, b, 0, NULL, NULL) == TK_OK ? 0 : 1);
    }
    close(fds[1]);
    char c;
    bool stopped = read(fds[0], &c, 1) == 1; /* EOF: the child ended without stopping */
    close(fds[0]);
    if (stopped) kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    TK_CHECK_MSG(stopped ? WIFSIGNALED(status) : WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "the child saving the checkpoint ended with status %d", status);
    return stopped;
}

/* A save stopped at every step in turn, by an error or by SIGKILL, replacing a
 * checkpoint (with and without RENAME_EXCHANGE) or creating one: the path always loads
 * as the old checkpoint or the new one (the old until the swap), or for a new path
 * nothing or the new one; the next load, or the next save, recovers what was left and
 * removes the debris. */
static void test_interrupted_saves(void) {
    char dir[512]; /* io_path's buffers rotate */
    snprintf(dir, sizeof dir, "%s", io_path(CASE "/crash"));
    outputs want_old, want_new, want_third;
    tk_block *a = two_tower(3, 1), *b = two_tower(3, 2), *c = two_tower(3, 3);
    want_old = run(a, true);
    want_new = run(b, true);
    want_third = run(c, true);
    for (int layout = REPLACE; layout <= CREATE; layout++) {
        bool no_exchange = layout == REPLACE_NO_EXCHANGE;
        for (int step = 1; step < TK_CKPT_NSTEPS; step++) {
            for (int kill_it = 0; kill_it < 2; kill_it++) {
                const char *how = kill_it ? "killed" : "failed";
                io_remove_tree(io_path(CASE));
                TK_CHECK(mkdir(io_path(CASE), 0777) == 0);
                if (layout != CREATE) TK_CHECK(tk_checkpoint_write(dir, a, 0, NULL, NULL) == TK_OK);
                bool stopped;
                if (kill_it) {
                    stopped = save_killed_at(dir, b, step, no_exchange);
                } else {
                    tk_set_error("no fault yet");
                    tk_checkpoint_test_fault(step, TK_CKPT_FAULT_FAIL, -1, no_exchange);
                    tk_status st = tk_checkpoint_write(dir, b, 0, NULL, NULL);
                    tk_checkpoint_test_fault(0, TK_CKPT_FAULT_FAIL, -1, false);
                    /* the removal of the old checkpoint may fail: the save has succeeded */
                    stopped = (step == TK_CKPT_STEP_REMOVING ? st == TK_OK : st == TK_ERROR) &&
                              strstr(tk_last_error(), "injected");
                }
                /* not on every path: the old checkpoint moved aside (no RENAME_EXCHANGE), or removed */
                bool on_path = (step != TK_CKPT_STEP_OLD_ASIDE || layout == REPLACE_NO_EXCHANGE) &&
                               (step != TK_CKPT_STEP_REMOVING || layout != CREATE);
                TK_CHECK_MSG(stopped == on_path, "%s, step %d, %s: the save %s at the step", LAYOUT[layout], step, how,
                             stopped ? "stopped" : "did not stop");
                /* the new checkpoint is in from the swap on; a killed save whose new
                 * checkpoint was complete with no path left is finished by the recovery */
                bool new_in = !stopped || step >= TK_CKPT_STEP_SWAPPED || (kill_it && step == TK_CKPT_STEP_OLD_ASIDE) ||
                              (kill_it && step == TK_CKPT_STEP_READY && layout == CREATE);
                if (kill_it && step % 2 == 0) {
                    /* the next save recovers by itself, before any load */
                    TK_CHECK(tk_checkpoint_write(dir, c, 0, NULL, NULL) == TK_OK);
                } else {
                    if (!new_in && layout == CREATE) {
                        expect_read_error(dir, "no such directory");
                    } else {
                        bool ok = reads_as(dir, new_in ? want_new : want_old);
                        TK_CHECK_MSG(ok, "%s, step %d, %s: the %s checkpoint should load", LAYOUT[layout], step, how,
                                     new_in ? "new" : "old");
                    }
                    TK_CHECK_MSG(debris() == 0, "%s, step %d, %s: %d entries of debris after a load", LAYOUT[layout],
                                 step, how, debris());
                    TK_CHECK(tk_checkpoint_write(dir, c, 0, NULL, NULL) == TK_OK);
                }
                TK_CHECK(reads_as(dir, want_third));
                TK_CHECK_MSG(debris() == 0, "%s, step %d, %s: %d entries of debris after the next save", LAYOUT[layout],
                             step, how, debris());
            }
        }
    }
    io_remove_tree(io_path(CASE));
    outputs_free(&want_old);
    outputs_free(&want_new);
    outputs_free(&want_third);
    tk_block_release(a);
    tk_block_release(b);
    tk_block_release(c);
}

/* A checkpoint being read is not removed under its reader (a shared flock on it): the
 * save that replaces it leaves it beside, and a later save removes it once the reader
 * is done. */
static void test_checkpoint_held_by_reader(void) {
    TK_CHECK(mkdir(io_path(CASE), 0777) == 0);
    char dir[512]; /* io_path's buffers rotate */
    snprintf(dir, sizeof dir, "%s", io_path(CASE "/crash"));
    outputs first, second;
    tk_block *a = saved_model(dir, 1, &first);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    TK_CHECK(fd >= 0 && flock(fd, LOCK_SH) == 0); /* as tk_checkpoint_read holds it */
    tk_block *b = saved_model(dir, 2, &second);
    TK_CHECK(reads_as(dir, second));
    TK_CHECK(debris() == 1);
    char held[64];
    snprintf(held, sizeof held, "/proc/self/fd/%d/config.json", fd);
    TK_CHECK(io_exists(held)); /* whole */
    close(fd);
    outputs third;
    tk_block_release(saved_model(dir, 3, &third));
    TK_CHECK(debris() == 0);
    TK_CHECK(reads_as(dir, third));
    outputs_free(&third);
    io_remove_tree(io_path(CASE));
    outputs_free(&first);
    outputs_free(&second);
    tk_block_release(a);
    tk_block_release(b);
}

/* Sets the "cardinality" of every table named `table` in the config object o. */
static int set_cardinality(cJSON *o, const char *table, double card) {
    int n = 0;
    if (cJSON_IsObject(o)) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
        cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "cardinality");
        if (c && cJSON_IsString(name) && strcmp(name->valuestring, table) == 0) {
            cJSON_SetNumberValue(c, card);
            n++;
        }
    }
    for (cJSON *e = o ? o->child : NULL; e; e = e->next) n += set_cardinality(e, table, card);
    return n;
}

/* config (the text of a config.json) with table's cardinality changed, written to cfg. */
static void write_cardinality(const char *cfg, const char *config, const char *table, double card) {
    cJSON *o = cJSON_Parse(config);
    TK_CHECK(set_cardinality(o, table, card) == 1);
    char *text = cJSON_Print(o);
    io_write_text(cfg, text);
    cJSON_free(text);
    cJSON_Delete(o);
}

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Issue 12: the sizes in config.json are checked against the weights' header before
 * any parameter is allocated: a huge cardinality is refused with the shapes, not after
 * allocating (and initialising) it, nor with "out of memory". */
static void test_sizes_checked_before_allocating(void) {
    const char *dir = io_path("sizes");
    outputs want;
    tk_block_release(saved_model(dir, 1, &want));
    const char *cfg = io_path("sizes/config.json");
    char *config = io_read(cfg, NULL);
    TK_CHECK(config != NULL);
    if (!config) return;
    char msg[512];

    /* 2^40 rows: no allocation could succeed; the message names the table's parameter and both shapes */
    write_cardinality(cfg, config, "item_id", 1099511627776.0);
    snprintf(msg, sizeof msg,
             "checkpoint '%s': weights.safetensors: tensor 'item/embeddings/item_id' is float32 [20, 4] but the "
             "parameter is float32 [1099511627776, 4] in config.json",
             dir);
    expect_read_error(dir, msg);

    /* 20,000,000 rows (320 MB of float32 to allocate and initialise): refused without growing the peak RSS */
    write_cardinality(cfg, config, "item_id", 20000000.0);
    long before = peak_rss_kb();
    expect_read_error(dir, "tensor 'item/embeddings/item_id' is float32 [20, 4] but the parameter is float32 "
                           "[20000000, 4] in config.json");
    long grew = peak_rss_kb() - before;
    TK_CHECK_MSG(grew < 50 * 1024, "the peak RSS grew by %ld kB during the load", grew);

    /* a negative or zero cardinality is a config error naming the table */
    write_cardinality(cfg, config, "user_id", -5);
    expect_read_error(dir, "config.json: block config 'two_tower/query_tower/embeddings': \"tables\"[0] ('user_id'): "
                           "\"cardinality\" must be positive, got -5");
    write_cardinality(cfg, config, "user_id", 0);
    expect_read_error(dir, "\"tables\"[0] ('user_id'): \"cardinality\" must be positive, got 0");

    /* a config read without weights to check against: an absurd size names the parameter */
    {
        cJSON *o = cJSON_Parse(config);
        set_cardinality(o, "item_id", 1099511627776.0);
        char *text = cJSON_Print(o);
        tk_block *b = tk_block_from_config_json(text, 0);
        TK_CHECK(b == NULL);
        tk_block_release(b);
        TK_CHECK_ERROR(tk_last_error(), "block config 'two_tower/item_tower/embeddings': \"tables\"[0]: parameter "
                                        "'item_id' [1099511627776, 4]: out of memory");
        cJSON_free(text);
        cJSON_Delete(o);
    }

    /* the config as saved still reads back (every kind's paths agree with the file's) */
    io_write_text(cfg, config);
    TK_CHECK(reads_as(dir, want));
    free(config);
    outputs_free(&want);
    io_remove_tree(dir);
}

int main(void) {
    io_tmpdir("tk-checkpoint");
    TK_RUN(test_round_trip);
    TK_RUN(test_overwrite);
    TK_RUN(test_failed_writes);
    TK_RUN(test_read_errors);
    TK_RUN(test_load_is_all_or_nothing);
    TK_RUN(test_lazy_blocks);
    TK_RUN(test_sizes_checked_before_allocating);
    TK_RUN(test_interrupted_saves);
    TK_RUN(test_checkpoint_held_by_reader);
    io_remove_tree(io_dir);
    return tk_test_summary();
}
