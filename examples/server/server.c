/*
 * server.c - an HTTP JSON recommendation server on libmicrohttpd.
 *
 *   build/examples/towerkit-server CHECKPOINT_DIR [--config FILE] [--OPTION VALUE ...]
 *
 * (--help lists the options; a JSON config file holds the same ones, '-' written '_',
 * and flags override it.) The checkpoint is loaded once in C (tk_model_load: config.json,
 * weights, schema.json and CHECKPOINT_DIR/item_embeddings.safetensors) into a
 * tk_model_slot. One libmicrohttpd thread reads requests and writes answers and never
 * runs a handler: it answers /health, /metrics and /reload itself, and hands every other
 * request to a pool of --threads workers (each with its own Lua state running handler.lua
 * with the shared slot as the global SLOT), suspending the connection until a worker is
 * done. So /health answers while every worker is busy, and a request that outlives
 * --time-limit-ms is answered 503 by the main thread's watchdog whatever its worker does.
 *
 *   POST /recommend  {"features": {"user_id": 7, ...}, "k": 10} -> {"items": [...], "scores": [...]}
 *   GET  /health     -> {"status": "ok", "model_version": "<hash>", ...}
 *   GET  /metrics    -> the Prometheus text format
 *   POST /reload     {"path": "name"} (optional) -> loads a checkpoint under --model-dir
 *
 * Bad requests get a 4xx with {"error": "..."}; a failing handler gets a 500; the
 * process never exits because of a request. Every answer carries X-Request-Id, and the
 * access log has one line per request with it. SIGTERM/SIGINT drain the requests in
 * flight, then exit 0; SIGHUP reloads the current model (and handler.lua) from disk.
 *
 * Under `mpirun -np N` (N > 1) the server answers from a catalogue sharded over the
 * ranks (docs/distributed.md, "Serving from a sharded catalogue"): every rank loads the
 * checkpoint and keeps its rows of the item embeddings (tk_dist_shard_range, a
 * tk_sharded_index); rank 0 serves HTTP as above, its workers run the query tower and
 * hand the query embeddings to the main thread, which batches whatever is waiting and
 * runs tk_sharded_serve_query (a broadcast of the batch, then every rank's top k merged);
 * the other ranks run tk_sharded_serve_follow until rank 0 stops them. MPI is only
 * called from the main thread (the one that called tk_dist_init: MPI_THREAD_FUNNELED).
 * Reloads are refused in that mode (every rank would have to swap its shard at once).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <microhttpd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "towerkit.h"
#include "towerkit_dist.h"
#include "towerkit_lua.h"

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

/* ---- configuration: defaults, then the config file, then flags ---- */

typedef struct config {
    const char *checkpoint;
    const char *handler;
    const char *bind;
    const char *model_dir;    /* /reload loads only under it; default: the checkpoint's parent */
    const char *reload_token; /* NULL: /reload only from loopback */
    const char *access_log;   /* "-" (stdout), "off" or a file */
    const char *oov;          /* NULL: the model's policy (model.json "oov"), else "error" */
    long port, threads, max_body, max_connections, max_per_ip, timeout, max_results, time_limit_ms, queue,
        drain_timeout;
} config;

static config cfg;

typedef struct option {
    const char *name; /* the flag without "--"; in the config file with '_' for '-' */
    int is_string;
    void *dst; /* const char ** or long * */
    long min, max;
    const char *help;
} option;

static const option options[] = {
    { "port", 0, &cfg.port, 0, 65535, "port (0: any free one); default $TOWERKIT_PORT, else 8080" },
    { "bind", 1, &cfg.bind, 0, 0, "IPv4 address to listen on (127.0.0.1)" },
    { "threads", 0, &cfg.threads, 1, 1024, "request workers, each with its own Lua state (the cores)" },
    { "handler", 1, &cfg.handler, 0, 0, "the Lua request handler (examples/server/handler.lua)" },
    { "max-body", 0, &cfg.max_body, 1, 1L << 30, "largest request body in bytes (1048576); 413 past it" },
    { "max-connections", 0, &cfg.max_connections, 1, 1000000, "open connections in all (1000)" },
    { "max-connections-per-ip", 0, &cfg.max_per_ip, 0, 1000000,
      "open connections from one address (128; 0: no limit)" },
    { "timeout", 0, &cfg.timeout, 1, 86400,
      "seconds a connection may stay idle: headers or body unfinished, "
      "or between keep-alive requests (5)" },
    { "max-results", 0, &cfg.max_results, 1, 1L << 40, "users x k of one /recommend (20000)" },
    { "time-limit-ms", 0, &cfg.time_limit_ms, 1, 86400000L,
      "a request's time from its headers to its answer "
      "before it is answered 503 (2000)" },
    { "queue", 0, &cfg.queue, 1, 1000000, "requests waiting for a worker before new ones get 503 (1024)" },
    { "drain-timeout", 0, &cfg.drain_timeout, 0, 86400, "seconds SIGTERM waits for requests in flight (10)" },
    { "model-dir", 1, &cfg.model_dir, 0, 0, "/reload loads checkpoints under it only (the checkpoint's parent)" },
    { "reload-token", 1, &cfg.reload_token, 0, 0,
      "if set, /reload needs header X-Reload-Token with it; "
      "if not, /reload is for loopback clients only" },
    { "access-log", 1, &cfg.access_log, 0, 0, "one line per request: - (stdout), off, or a file (-)" },
    { "oov", 1, &cfg.oov, 0, 0,
      "ids outside a feature's range: error or zeros (the model's model.json "
      "\"oov\", else error)" },
};
#define NOPTIONS (sizeof options / sizeof options[0])

static const option *find_option(const char *name, int file_key) {
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *a = options[i].name, *b = name;
        while (*a && (*a == *b || (file_key && *a == '-' && *b == '_'))) a++, b++;
        if (!*a && !*b) return &options[i];
    }
    return NULL;
}

/* Sets an option from text; returns 0 or -1 with the reason on stderr. */
static int set_option(const option *o, const char *value, const char *where) {
    if (o->is_string) {
        *(const char **)o->dst = value;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < o->min || v > o->max) {
        fprintf(stderr, "towerkit-server: %s %s wants an integer in [%ld, %ld], got '%s'\n", where, o->name, o->min,
                o->max, value);
        return -1;
    }
    *(long *)o->dst = v;
    return 0;
}

/* The config file: a JSON object of the options (and "checkpoint"). Kept for the
 * process's life: its strings are the options' values. */
/* The parsed config file, whose strings the options point into (freed at exit). */
static cJSON *config_json;

static int read_config_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "towerkit-server: cannot read the config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *t = realloc(text, cap);
            if (!t) break;
            text = t;
        }
        memcpy(text + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (!text) {
        fprintf(stderr, "towerkit-server: %s is empty\n", path);
        return -1;
    }
    text[len] = '\0';
    cJSON *root = tk_json_parse(text, len, path); /* strict: "<path>: invalid JSON at line L (byte B)..." */
    free(text);
    if (!root) {
        fprintf(stderr, "towerkit-server: %s\n", tk_last_error());
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "towerkit-server: %s is not a JSON object\n", path);
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        char where[300];
        snprintf(where, sizeof where, "%s:", path);
        if (strcmp(item->string, "checkpoint") == 0 && cJSON_IsString(item)) {
            cfg.checkpoint = item->valuestring;
            continue;
        }
        const option *o = find_option(item->string, 1);
        if (!o) {
            fprintf(stderr, "towerkit-server: %s: unknown option \"%s\"\n", path, item->string);
            goto fail;
        }
        if (o->is_string ? !cJSON_IsString(item) : !cJSON_IsNumber(item)) {
            fprintf(stderr, "towerkit-server: %s: \"%s\" must be a %s\n", path, item->string,
                    o->is_string ? "string" : "number");
            goto fail;
        }
        char num[64];
        if (!o->is_string) {
            if (item->valuedouble != floor(item->valuedouble) || fabs(item->valuedouble) > 9e15) {
                fprintf(stderr, "towerkit-server: %s: \"%s\" must be an integer\n", path, item->string);
                goto fail;
            }
            snprintf(num, sizeof num, "%.0f", item->valuedouble);
        }
        if (set_option(o, o->is_string ? item->valuestring : num, where) != 0) goto fail;
    }
    config_json = root; /* kept until exit: the options point into it */
    return 0;
fail:
    cJSON_Delete(root);
    return -1;
}

/* ---- the model: the slot, and each swap's version name (a hash of its weights) ---- */

static tk_model_slot *slot;
static char model_dir_real[PATH_MAX];

/* Serving a sharded catalogue (under mpirun with more than one rank). */
static int sharded;                /* set before any thread starts */
static tk_sharded_index *shard_ix; /* this rank's shard */
static int64_t shard_dim;          /* the embeddings' width */
#define SHARDED_RELOAD_ERROR                                                                                           \
    "reload is not available while the catalogue is sharded over MPI ranks: every rank would have to swap its "        \
    "shard at once; restart the mpirun job with the new checkpoint"

/* FNV-1a (64 bits) of the checkpoint's weights.safetensors: the same weights give the
 * same name on every server, whatever the swap count. "unknown" if unreadable. */
static void weights_hash(const char *dir, char out[17]) {
    char path[PATH_MAX];
    snprintf(out, 17, "unknown");
    if ((size_t)snprintf(path, sizeof path, "%s/weights.safetensors", dir) >= sizeof path) return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    uint64_t h = 14695981039346656037ULL;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ULL;
    if (!ferror(f)) snprintf(out, 17, "%016llx", (unsigned long long)h);
    fclose(f);
}

/* Slot versions -> names. A swap and its record happen under versions_lock, and so do
 * lookups, so a request that got a model from the slot always finds its name. */
#define NVERSIONS 64
static pthread_mutex_t versions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint64_t swap;
    char name[17];
} versions[NVERSIONS];

static uint64_t swap_in(tk_model *m, const char *name) {
    pthread_mutex_lock(&versions_lock);
    uint64_t v = tk_model_slot_set(slot, m);
    versions[v % NVERSIONS].swap = v;
    snprintf(versions[v % NVERSIONS].name, 17, "%s", name);
    pthread_mutex_unlock(&versions_lock);
    return v;
}

static void version_name(uint64_t v, char out[17]) {
    pthread_mutex_lock(&versions_lock);
    snprintf(out, 17, "%s", versions[v % NVERSIONS].swap == v ? versions[v % NVERSIONS].name : "unknown");
    pthread_mutex_unlock(&versions_lock);
}

/* ---- counters for /metrics ---- */

enum { R_RECOMMEND, R_HEALTH, R_METRICS, R_RELOAD, R_OTHER, NROUTES };
static const char *route_names[NROUTES] = { "/recommend", "/health", "/metrics", "/reload", "other" };
static const double buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

static long by_status[NROUTES][600];                                          /* atomic */
static long by_bucket[NROUTES][NBUCKETS + 1];                                 /* atomic; the last is +Inf */
static long latency_us[NROUTES];                                              /* atomic: the histogram's sum */
static long in_flight, busy, queued;                                          /* atomic */
static long reloads_ok, reloads_failed, errors_5xx, handler_errors, timeouts; /* atomic */
static long aborted; /* atomic: requests the client left unanswered */

static int route_of(const char *url) {
    size_t n = strcspn(url, "?");
    for (int r = 0; r < R_OTHER; r++)
        if (strlen(route_names[r]) == n && strncmp(url, route_names[r], n) == 0) return r;
    return R_OTHER;
}

#define ADD(x, n) __atomic_add_fetch(&(x), (n), __ATOMIC_RELAXED)
#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- text helpers ---- */

typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = b->s ? vsnprintf(b->s + b->len, room, fmt, ap) : -1;
        va_end(ap);
        if (b->s && n >= 0 && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (n >= 0 && cap < b->len + (size_t)n + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) return;
        b->s = s;
        b->cap = cap;
    }
}

/* s as the inside of a JSON string. */
static void sb_json(strbuf *b, const char *s) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            sb_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            sb_printf(b, "\\u%04x", ch);
        else
            sb_printf(b, "%c", ch);
    }
}

/* ---- workers: one Lua state per worker thread ---- */

#define TIME_LIMIT_ERROR "towerkit-server: the request's time limit passed"

typedef struct worker {
    pthread_t thread;
    lua_State *L;
    int handle_ref; /* the function handler.lua returned */
    int id;
    unsigned generation; /* of handler.lua: a reload makes every state start again */
    double deadline;     /* of the request it runs (the count hook's limit) */
    char error[512];     /* why the state could not be created, if it could not */
} worker;

static worker *workers;
static unsigned handler_generation; /* atomic */
static __thread worker *self;

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Stops a Lua handler past its deadline where the interpreter runs (LuaJIT does not
 * call hooks in compiled code: the watchdog answers the client in any case). */
static void deadline_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    if (self && now() > self->deadline) luaL_error(L, TIME_LIMIT_ERROR);
}

/* SERVER.model_version(swap) -> the name of that swap's model */
static int l_model_version(lua_State *L) {
    char name[17];
    version_name((uint64_t)luaL_checknumber(L, 1), name);
    lua_pushstring(L, name);
    return 1;
}

/* ---- a sharded catalogue: workers hand their queries to the main thread ---- */

/* One worker's queries, waiting for the main thread (the only one that may call MPI). */
typedef struct shard_req {
    int64_t q, k;
    const float *queries; /* [q, shard_dim], the worker's tensor (borrowed: it waits) */
    int64_t *excl_off;    /* [q + 1], or NULL: nothing excluded */
    int64_t *excl_ids;    /* [excl_off[q]] item ids */
    int64_t *ids;         /* [q, k], the answer */
    float *scores;        /* [q, k] */
    int done;             /* under shard_lock */
    char error[512];      /* empty: the answer is there */
    struct shard_req *next;
} shard_req;

static pthread_mutex_t shard_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t shard_ready = PTHREAD_COND_INITIALIZER; /* the main thread: queries wait */
static pthread_cond_t shard_done = PTHREAD_COND_INITIALIZER;  /* the workers: answers are in */
static shard_req *shard_head, *shard_tail;
static long workers_alive; /* atomic: the main thread answers queries until none is left */

static void shard_req_free(shard_req *r) {
    if (!r) return;
    free(r->excl_off);
    free(r->excl_ids);
    free(r->ids);
    free(r->scores);
    free(r);
}

/* Returns nil and "sharded_query: <msg>" (2 results). */
static int shard_fail(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushfstring(L, "sharded_query: %s", msg);
    return 2;
}

/* SERVER.sharded_query(queries, k [, exclude]) -> ids, scores (Lua arrays of Q arrays of
 * k), or nil and a message: the global top k of the query embeddings (a float32 tensor
 * [Q, D], as model:encode gives them) over the sharded catalogue; exclude: one array of
 * item ids per row, read as model:recommend reads it (towerkit_lua_to_exclusions). The
 * worker waits while the main thread answers (with the queries of other workers in the
 * same batch); its tensor, an argument of this call, stays alive meanwhile. */
static int l_sharded_query(lua_State *L) {
    tk_tensor *t = towerkit_lua_to_tensor(L, 1);
    lua_Number kn = luaL_checknumber(L, 2);
    if (!t || t->dtype != TK_F32 || t->ndim != 2 || t->shape[0] < 1 || t->shape[1] != shard_dim) {
        char msg[128];
        snprintf(msg, sizeof msg, "the queries must be a float32 tensor [Q, %lld] with Q >= 1", (long long)shard_dim);
        return shard_fail(L, msg);
    }
    if (!(kn >= 1 && kn <= 1000000) || kn != floor(kn)) return shard_fail(L, "k must be an integer in [1, 1000000]");
    int64_t q = t->shape[0], k = (int64_t)kn;
    shard_req *r = calloc(1, sizeof *r);
    if (!r || !(r->ids = malloc((size_t)(q * k) * sizeof *r->ids)) ||
        !(r->scores = malloc((size_t)(q * k) * sizeof *r->scores))) {
        shard_req_free(r);
        return shard_fail(L, "out of memory");
    }
    r->q = q;
    r->k = k;
    r->queries = tk_f32(t);
    char msg[256];
    if (towerkit_lua_to_exclusions(L, 3, q, &r->excl_off, &r->excl_ids, msg, sizeof msg) != 0) {
        shard_req_free(r);
        return shard_fail(L, msg);
    }
    pthread_mutex_lock(&shard_lock);
    if (shard_tail)
        shard_tail->next = r;
    else
        shard_head = r;
    shard_tail = r;
    pthread_cond_signal(&shard_ready);
    while (!r->done) pthread_cond_wait(&shard_done, &shard_lock);
    pthread_mutex_unlock(&shard_lock);
    if (r->error[0]) {
        lua_pushnil(L);
        lua_pushstring(L, r->error);
        shard_req_free(r);
        return 2;
    }
    for (int pass = 0; pass < 2; pass++) {
        lua_createtable(L, (int)q, 0);
        for (int64_t i = 0; i < q; i++) {
            lua_createtable(L, (int)k, 0);
            for (int64_t j = 0; j < k; j++) {
                if (pass == 0)
                    lua_pushnumber(L, (lua_Number)r->ids[i * k + j]);
                else
                    lua_pushnumber(L, (lua_Number)r->scores[i * k + j]);
                lua_rawseti(L, -2, (int)j + 1);
            }
            lua_rawseti(L, -2, (int)i + 1);
        }
    }
    shard_req_free(r);
    return 2;
}

/* The main thread: waits up to `wait` seconds for queries, then answers every query
 * waiting as one batch (one broadcast and one merge for all of them; each request
 * takes the first k of its rows: a top k is a prefix of a longer one). */
static void shard_serve(double wait) {
    pthread_mutex_lock(&shard_lock);
    if (!shard_head && wait > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(wait * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&shard_ready, &shard_lock, &ts);
    }
    shard_req *batch = shard_head;
    shard_head = shard_tail = NULL;
    pthread_mutex_unlock(&shard_lock);
    if (!batch) return;
    int64_t Q = 0, K = 0, nex = 0;
    int any_ex = 0;
    for (shard_req *r = batch; r; r = r->next) {
        Q += r->q;
        if (r->k > K) K = r->k;
        if (r->excl_off) {
            any_ex = 1;
            nex += r->excl_off[r->q];
        }
    }
    tk_tensor *qt = tk_tensor_new_2d(TK_F32, Q, shard_dim), *ids = tk_tensor_new_2d(TK_I64, Q, K),
              *sc = tk_tensor_new_2d(TK_F32, Q, K);
    int64_t *eo = any_ex ? malloc((size_t)(Q + 1) * sizeof *eo) : NULL;
    int64_t *ei = any_ex ? malloc((size_t)(nex ? nex : 1) * sizeof *ei) : NULL;
    const char *err = NULL;
    if (!qt || !ids || !sc || (any_ex && (!eo || !ei))) {
        err = "out of memory";
    } else {
        int64_t row = 0, used = 0;
        if (eo) eo[0] = 0;
        for (shard_req *r = batch; r; r = r->next) {
            memcpy(tk_f32(qt) + row * shard_dim, r->queries, (size_t)(r->q * shard_dim) * sizeof(float));
            for (int64_t i = 0; eo && i < r->q; i++) {
                int64_t n = r->excl_off ? r->excl_off[i + 1] - r->excl_off[i] : 0;
                if (n) memcpy(ei + used, r->excl_ids + r->excl_off[i], (size_t)n * sizeof *ei);
                used += n;
                eo[row + i + 1] = used;
            }
            row += r->q;
        }
        if (tk_sharded_serve_query(shard_ix, qt, K, eo, ei, ids, sc) != TK_OK) err = tk_last_error();
    }
    pthread_mutex_lock(&shard_lock);
    int64_t row = 0;
    for (shard_req *r = batch, *next; r; r = next) {
        next = r->next;
        if (err) {
            snprintf(r->error, sizeof r->error, "sharded query: %s", err);
        } else {
            for (int64_t i = 0; i < r->q; i++) {
                memcpy(r->ids + i * r->k, tk_i64(ids) + (row + i) * K, (size_t)r->k * sizeof *r->ids);
                memcpy(r->scores + i * r->k, tk_f32(sc) + (row + i) * K, (size_t)r->k * sizeof *r->scores);
            }
        }
        row += r->q;
        r->done = 1; /* the worker frees it */
    }
    pthread_cond_broadcast(&shard_done);
    pthread_mutex_unlock(&shard_lock);
    tk_tensor_release(qt);
    tk_tensor_release(ids);
    tk_tensor_release(sc);
    free(eo);
    free(ei);
}

/* The main thread's pause between its rounds (signals, reloads, the watchdog): 10 ms,
 * answering sharded queries as they come meanwhile. */
static void main_pause(void) {
    if (sharded)
        shard_serve(0.01);
    else
        usleep(10000);
}

static void worker_close(worker *w) {
    if (w->L) lua_close(w->L);
    w->L = NULL;
    w->handle_ref = 0;
}

/* A fresh Lua state running handler.lua; on failure w->error says why. */
static void worker_open(worker *w) {
    worker_close(w);
    w->error[0] = '\0';
    w->generation = __atomic_load_n(&handler_generation, __ATOMIC_ACQUIRE);
    lua_State *L = w->L = luaL_newstate();
    if (!L) {
        snprintf(w->error, sizeof w->error, "cannot create a Lua state");
        return;
    }
    luaL_openlibs(L);
    if (towerkit_lua_open(L, NULL) != 0 || towerkit_lua_push_model_slot(L, slot) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        return;
    }
    lua_setglobal(L, "SLOT");
    lua_pushstring(L, cfg.checkpoint);
    lua_setglobal(L, "CHECKPOINT");
    lua_pushinteger(L, w->id);
    lua_setglobal(L, "WORKER");
    /* SERVER: the limits the handler enforces and the names of model versions */
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number)cfg.max_results);
    lua_setfield(L, -2, "max_results");
    if (cfg.oov) {
        lua_pushstring(L, cfg.oov);
        lua_setfield(L, -2, "oov");
    }
    lua_pushcfunction(L, l_model_version);
    lua_setfield(L, -2, "model_version");
    if (sharded) { /* the catalogue is sharded: handler.lua asks the main thread */
        lua_pushcfunction(L, l_sharded_query);
        lua_setfield(L, -2, "sharded_query");
        lua_pushinteger(L, tk_dist_size());
        lua_setfield(L, -2, "ranks");
    }
    lua_setglobal(L, "SERVER");
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, cfg.handler) != 0 || lua_pcall(L, 0, 1, -2) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return;
    }
    if (!lua_isfunction(L, -1)) {
        snprintf(w->error, sizeof w->error, "%s must return a function(method, path, body)", cfg.handler);
        lua_settop(L, 0);
        return;
    }
    w->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1000);
}

/* ---- jobs: requests handed to workers (or, for /reload, to the main thread) ---- */

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_EXPIRED };

typedef struct job {
    int refs;                 /* the connection's and the worker's; under jobs_lock */
    struct MHD_Connection *c; /* suspended until the job is done or expired */
    int state;
    double deadline;
    char method[16];
    char *url;
    char *body; /* taken from the connection: a worker may outlive it (a timeout) */
    size_t len;
    char id[20];
    char *reload_dir; /* a /reload: the resolved directory */
    unsigned status;  /* the answer */
    char *out;
    size_t out_len;
    struct job *next;          /* the queue */
    struct job *anext, *aprev; /* the jobs not answered yet, for the watchdog */
} job;

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static job *queue_head, *queue_tail, *active;
static job *pending_reload; /* the main thread runs it */
static int shutting_down;
static long reloading; /* atomic: 1 while a reload runs (a second one is answered 409) */

static void job_release(job *j) { /* jobs_lock held */
    if (--j->refs > 0) return;
    free(j->url);
    free(j->body);
    free(j->out);
    free(j->reload_dir);
    free(j);
}

static void active_remove(job *j) { /* jobs_lock held */
    if (j->aprev)
        j->aprev->anext = j->anext;
    else
        active = j->anext;
    if (j->anext) j->anext->aprev = j->aprev;
    j->anext = j->aprev = NULL;
}

/* The answer of a job: stored and the connection resumed, unless the watchdog has
 * answered it already (then the result is dropped). jobs_lock held; takes out. */
static void job_deliver(job *j, unsigned status, char *out, size_t len) {
    if (j->state == JOB_EXPIRED) {
        free(out);
        return;
    }
    j->state = JOB_DONE;
    j->status = status;
    j->out = out;
    j->out_len = len;
    active_remove(j);
    MHD_resume_connection(j->c);
}

static char *error_json(const char *msg, size_t *len) {
    strbuf b = { 0 };
    sb_printf(&b, "{\"error\": \"");
    sb_json(&b, msg);
    sb_printf(&b, "\"}\n");
    *len = b.len;
    return b.s;
}

/* Runs one request in this worker's Lua state. */
static void run_job(worker *w, job *j) {
    if (!w->L || w->generation != __atomic_load_n(&handler_generation, __ATOMIC_ACQUIRE)) worker_open(w);
    unsigned status = 500;
    char *out = NULL;
    size_t len = 0;
    if (w->error[0] || !w->handle_ref) {
        fprintf(stderr, "towerkit-server: worker %d: %s\n", w->id, w->error[0] ? w->error : "no handler");
        out = error_json("the request handler does not load (see the server log)", &len);
        ADD(handler_errors, 1);
    } else {
        lua_State *L = w->L;
        w->deadline = j->deadline;
        lua_settop(L, 0);
        lua_pushcfunction(L, traceback);
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->handle_ref);
        lua_pushstring(L, j->method);
        lua_pushstring(L, j->url);
        lua_pushlstring(L, j->body ? j->body : "", j->len);
        lua_createtable(L, 0, 1);
        lua_pushstring(L, j->id);
        lua_setfield(L, -2, "id");
        if (lua_pcall(L, 4, 2, 1) != 0) {
            const char *msg = lua_tostring(L, -1);
            if (msg && strstr(msg, TIME_LIMIT_ERROR)) {
                status = 503;
                char m[128];
                snprintf(m, sizeof m, "the request took longer than the time limit of %ld ms", cfg.time_limit_ms);
                out = error_json(m, &len);
            } else {
                fprintf(stderr, "towerkit-server: worker %d: request %s: %s %s: %s\n", w->id, j->id, j->method, j->url,
                        msg ? msg : "?");
                out = error_json("internal error (see the server log)", &len);
                ADD(handler_errors, 1);
            }
        } else {
            int st = (int)lua_tointeger(L, -2);
            size_t n = 0;
            const char *body = lua_tolstring(L, -1, &n);
            if (st < 100 || st > 599 || !body) {
                out = error_json("the handler returned no status and body", &len);
                ADD(handler_errors, 1);
            } else if ((out = malloc(n ? n : 1))) {
                memcpy(out, body, n);
                len = n;
                status = (unsigned)st;
            }
        }
        lua_settop(L, 0);
        w->deadline = INFINITY;
    }
    pthread_mutex_lock(&jobs_lock);
    job_deliver(j, status, out, len);
    pthread_mutex_unlock(&jobs_lock);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    self = w;
    w->deadline = INFINITY;
    for (;;) {
        pthread_mutex_lock(&jobs_lock);
        while (!queue_head && !shutting_down) pthread_cond_wait(&jobs_cond, &jobs_lock);
        job *j = queue_head;
        if (!j) {
            pthread_mutex_unlock(&jobs_lock);
            break;
        }
        queue_head = j->next;
        if (!queue_head) queue_tail = NULL;
        ADD(queued, -1);
        if (j->state != JOB_QUEUED) { /* expired while it waited */
            job_release(j);
            pthread_mutex_unlock(&jobs_lock);
            continue;
        }
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&jobs_lock);
        ADD(busy, 1);
        run_job(w, j);
        ADD(busy, -1);
        pthread_mutex_lock(&jobs_lock);
        job_release(j);
        pthread_mutex_unlock(&jobs_lock);
    }
    worker_close(w);
    ADD(workers_alive, -1);
    return NULL;
}

/* ---- requests ---- */

typedef struct request {
    char *body;
    size_t len, cap;
    int too_large;
    job *job;
    int route;
    unsigned status; /* answered with; 0: not answered */
    size_t sent;
    double start;
    char id[20];
    char method[16];
    char path[200];
    char client[64];
    int loopback;
} request;

static FILE *access_log;
static int draining;              /* atomic: answers say Connection: close */
static uint64_t id_base, id_next; /* atomic counter */

static mhd_result respond_type(struct MHD_Connection *c, request *rq, unsigned status, const char *body, size_t len,
                               const char *type) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "X-Request-Id", rq->id);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (__atomic_load_n(&draining, __ATOMIC_RELAXED)) MHD_add_response_header(r, "Connection", "close");
    mhd_result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    if (ret == MHD_YES) {
        rq->status = status;
        rq->sent = len;
    }
    return ret;
}

static mhd_result respond(struct MHD_Connection *c, request *rq, unsigned status, const char *body, size_t len) {
    return respond_type(c, rq, status, body, len, "application/json");
}

/* {"error": "<msg>"} with the message escaped for JSON. */
static mhd_result respond_error(struct MHD_Connection *c, request *rq, unsigned status, const char *msg) {
    size_t len;
    char *body = error_json(msg, &len);
    if (!body) return MHD_NO;
    mhd_result ret = respond(c, rq, status, body, len);
    free(body);
    return ret;
}

static mhd_result health(struct MHD_Connection *c, request *rq) {
    uint64_t v = 0;
    tk_model *m = tk_model_slot_get_versioned(slot, &v);
    char name[17];
    version_name(v, name);
    strbuf b = { 0 };
    sb_printf(&b, "{\"status\": \"%s\", \"model\": \"", GET(draining) ? "draining" : "ok");
    sb_json(&b, tk_model_dir(m));
    sb_printf(&b,
              "\", \"model_version\": \"%s\", \"swaps\": %llu, \"items\": %lld, \"dim\": %lld, \"workers\": %ld, "
              "\"busy\": %ld, \"queued\": %ld, \"in_flight\": %ld, \"ranks\": %d}\n",
              name, (unsigned long long)v, (long long)tk_model_num_items(m), (long long)tk_model_dim(m), cfg.threads,
              GET(busy), GET(queued), GET(in_flight), sharded ? tk_dist_size() : 1);
    tk_model_release(m);
    mhd_result ret = b.s ? respond(c, rq, 200, b.s, b.len) : MHD_NO;
    free(b.s);
    return ret;
}

static mhd_result metrics(struct MHD_Connection *c, request *rq) {
    strbuf b = { 0 };
    sb_printf(&b, "# HELP towerkit_requests_total Requests answered, by route and status.\n"
                  "# TYPE towerkit_requests_total counter\n");
    for (int r = 0; r < NROUTES; r++)
        for (int s = 100; s < 600; s++)
            if (GET(by_status[r][s]))
                sb_printf(&b, "towerkit_requests_total{route=\"%s\",status=\"%d\"} %ld\n", route_names[r], s,
                          GET(by_status[r][s]));
    sb_printf(&b, "# HELP towerkit_request_duration_seconds Time from a request's headers to its answer.\n"
                  "# TYPE towerkit_request_duration_seconds histogram\n");
    for (int r = 0; r < NROUTES; r++) {
        long cum = 0;
        for (size_t i = 0; i <= NBUCKETS; i++) {
            cum += GET(by_bucket[r][i]);
            if (i < NBUCKETS)
                sb_printf(&b, "towerkit_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %ld\n", route_names[r],
                          buckets[i], cum);
            else
                sb_printf(&b, "towerkit_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %ld\n",
                          route_names[r], cum);
        }
        sb_printf(&b, "towerkit_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_names[r],
                  (double)GET(latency_us[r]) * 1e-6);
        sb_printf(&b, "towerkit_request_duration_seconds_count{route=\"%s\"} %ld\n", route_names[r], cum);
    }
    uint64_t v = tk_model_slot_version(slot);
    char name[17];
    version_name(v, name);
    sb_printf(&b,
              "# HELP towerkit_requests_in_flight Requests between their headers and their answer.\n"
              "# TYPE towerkit_requests_in_flight gauge\ntowerkit_requests_in_flight %ld\n"
              "# HELP towerkit_workers_busy Workers running a request.\n"
              "# TYPE towerkit_workers_busy gauge\ntowerkit_workers_busy %ld\n"
              "# HELP towerkit_queue_length Requests waiting for a worker.\n"
              "# TYPE towerkit_queue_length gauge\ntowerkit_queue_length %ld\n"
              "# HELP towerkit_model_info The served model: its version is a hash of its weights file.\n"
              "# TYPE towerkit_model_info gauge\ntowerkit_model_info{model_version=\"%s\"} 1\n"
              "# HELP towerkit_model_swaps Models swapped in since the start (1: the first).\n"
              "# TYPE towerkit_model_swaps gauge\ntowerkit_model_swaps %llu\n"
              "# HELP towerkit_reloads_total Reloads (POST /reload, SIGHUP) by result.\n"
              "# TYPE towerkit_reloads_total counter\ntowerkit_reloads_total{result=\"ok\"} %ld\n"
              "towerkit_reloads_total{result=\"error\"} %ld\n"
              "# HELP towerkit_errors_total Failures, by kind: handler (a Lua error), timeout (the time "
              "limit), aborted (the client left), 5xx (answers).\n"
              "# TYPE towerkit_errors_total counter\ntowerkit_errors_total{kind=\"handler\"} %ld\n"
              "towerkit_errors_total{kind=\"timeout\"} %ld\ntowerkit_errors_total{kind=\"aborted\"} %ld\n"
              "towerkit_errors_total{kind=\"5xx\"} %ld\n",
              GET(in_flight), GET(busy), GET(queued), name, (unsigned long long)v, GET(reloads_ok), GET(reloads_failed),
              GET(handler_errors), GET(timeouts), GET(aborted), GET(errors_5xx));
    mhd_result ret = b.s ? respond_type(c, rq, 200, b.s, b.len, "text/plain; version=0.0.4") : MHD_NO;
    free(b.s);
    return ret;
}

/* The directory a /reload names, under the model directory: no ".." component, and its
 * real path (symlinks resolved) inside the real model directory. NULL and *err (a
 * message without paths) otherwise. */
static char *resolve_reload_path(const char *path, const char **err) {
    if (!path[0]) {
        *err = "\"path\" must name a checkpoint directory";
        return NULL;
    }
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            *err = "\"path\" must not contain '..'";
            return NULL;
        }
        p += n;
        while (*p == '/') p++;
    }
    char joined[PATH_MAX];
    int n = path[0] == '/' ? snprintf(joined, sizeof joined, "%s", path)
                           : snprintf(joined, sizeof joined, "%s/%s", model_dir_real, path);
    if (n < 0 || (size_t)n >= sizeof joined) {
        *err = "\"path\" is too long";
        return NULL;
    }
    char *real = realpath(joined, NULL);
    if (!real) {
        *err = "reload failed, the current model stays: no such checkpoint under the model directory";
        return NULL;
    }
    size_t len = strlen(model_dir_real);
    if (strcmp(model_dir_real, "/") != 0 &&
        (strncmp(real, model_dir_real, len) != 0 || (real[len] != '/' && real[len] != '\0'))) {
        free(real);
        *err = "\"path\" must name a checkpoint under the model directory";
        return NULL;
    }
    return real;
}

/* Compares without stopping at the first difference: the time says nothing of the token. */
static int same_token(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static job *job_new(struct MHD_Connection *c, request *rq, const char *url) {
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->url = strdup(url))) {
        free(j);
        return NULL;
    }
    j->refs = 2;
    j->c = c;
    j->state = JOB_QUEUED;
    j->deadline = rq->start + (double)cfg.time_limit_ms * 1e-3;
    snprintf(j->method, sizeof j->method, "%s", rq->method);
    snprintf(j->id, sizeof j->id, "%s", rq->id);
    j->body = rq->body; /* the job's now */
    j->len = rq->len;
    rq->body = NULL;
    rq->len = rq->cap = 0;
    return j;
}

static mhd_result reload_request(struct MHD_Connection *c, request *rq, const char *url) {
    if (cfg.reload_token) {
        const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Reload-Token");
        if (!t || !same_token(t, cfg.reload_token))
            return respond_error(c, rq, 403, "/reload needs the X-Reload-Token header with the server's token");
    } else if (!rq->loopback) {
        return respond_error(c, rq, 403, "/reload is only allowed from loopback (or configure reload_token)");
    }
    if (sharded) return respond_error(c, rq, 409, SHARDED_RELOAD_ERROR);
    const char *path = NULL;
    cJSON *req = NULL;
    size_t i = 0;
    while (i < rq->len && (rq->body[i] == ' ' || rq->body[i] == '\n' || rq->body[i] == '\r' || rq->body[i] == '\t'))
        i++;
    if (i < rq->len) {
        req = tk_json_parse(rq->body, rq->len, "malformed JSON: the body"); /* strict, as every reader */
        if (!req) return respond_error(c, rq, 400, tk_last_error());
        if (!cJSON_IsObject(req)) {
            cJSON_Delete(req);
            return respond_error(c, rq, 400, "the body must be a JSON object");
        }
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(req, "path");
        if (p && !cJSON_IsNull(p)) {
            if (!cJSON_IsString(p)) {
                cJSON_Delete(req);
                return respond_error(c, rq, 400, "\"path\" must be a checkpoint directory (a string)");
            }
            path = p->valuestring;
        }
    }
    char *dir;
    if (path) {
        const char *err = NULL;
        dir = resolve_reload_path(path, &err);
        cJSON_Delete(req);
        if (!dir) return respond_error(c, rq, 400, err);
    } else {
        cJSON_Delete(req);
        tk_model *m = tk_model_slot_get(slot); /* no path: the current model again, from disk */
        dir = strdup(tk_model_dir(m));
        tk_model_release(m);
        if (!dir) return respond_error(c, rq, 500, "out of memory");
    }
    long expected = 0;
    if (!__atomic_compare_exchange_n(&reloading, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        free(dir);
        return respond_error(c, rq, 409, "a reload is in progress; the current model stays until it is done");
    }
    job *j = job_new(c, rq, url);
    if (!j) {
        free(dir);
        __atomic_store_n(&reloading, 0, __ATOMIC_RELEASE);
        return respond_error(c, rq, 500, "out of memory");
    }
    j->reload_dir = dir;
    j->deadline = INFINITY; /* a reload takes what loading takes; requests go on meanwhile */
    rq->job = j;
    MHD_suspend_connection(c);
    pthread_mutex_lock(&jobs_lock);
    pending_reload = j;
    pthread_mutex_unlock(&jobs_lock);
    return MHD_YES;
}

static mhd_result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
                         const char *upload, size_t *upload_size, void **con_cls) {
    (void)cls;
    (void)version;
    request *rq = *con_cls;
    if (!rq) { /* headers are in */
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        *con_cls = rq;
        ADD(in_flight, 1);
        rq->start = now();
        rq->route = route_of(url);
        snprintf(rq->id, sizeof rq->id, "%016llx", (unsigned long long)(id_base + ADD(id_next, 1)));
        snprintf(rq->method, sizeof rq->method, "%s", method);
        size_t i = 0; /* the path as a log token: no spaces or control characters */
        for (const char *p = url; *p && i + 1 < sizeof rq->path; p++)
            rq->path[i++] = (*p > ' ' && *p < 0x7f) ? *p : '?';
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;
        snprintf(rq->client, sizeof rq->client, "?");
        if (sa && sa->sa_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
            inet_ntop(AF_INET, &a->sin_addr, rq->client, sizeof rq->client);
            rq->loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
        }
        /* A declared body over the limit is refused now, not after reading it (or
         * waiting for bytes that never come). */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || n > (unsigned long long)cfg.max_body) {
                char msg[128];
                snprintf(msg, sizeof msg, "request body larger than %ld bytes", cfg.max_body);
                rq->too_large = 1;
                return respond_error(c, rq, 413, msg);
            }
        }
        return MHD_YES;
    }
    if (rq->status) { /* answered at the headers (413); the rest of the body is dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (rq->too_large || rq->len + n > (size_t)cfg.max_body) {
            rq->too_large = 1;
            return MHD_YES;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 1024;
            while (cap < rq->len + n + 1) cap *= 2;
            char *b = realloc(rq->body, cap);
            if (!b) {
                rq->too_large = 1;
                return MHD_YES;
            }
            rq->body = b;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload, n);
        rq->len += n;
        return MHD_YES;
    }
    if (rq->job) { /* resumed: the worker's answer, or the watchdog's */
        job *j = rq->job;
        pthread_mutex_lock(&jobs_lock);
        int state = j->state;
        pthread_mutex_unlock(&jobs_lock);
        if (state == JOB_DONE) {
            if (!j->out) return respond_error(c, rq, 500, "out of memory");
            return respond(c, rq, j->status, j->out, j->out_len);
        }
        char msg[128];
        snprintf(msg, sizeof msg, "the request took longer than the time limit of %ld ms", cfg.time_limit_ms);
        return respond_error(c, rq, 503, msg);
    }
    if (rq->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than %ld bytes", cfg.max_body);
        return respond_error(c, rq, 413, msg);
    }
    /* The server's own routes: answered here, whatever the workers are doing. */
    if (rq->route == R_HEALTH || rq->route == R_METRICS || rq->route == R_RELOAD) {
        const char *want = rq->route == R_RELOAD ? "POST" : "GET";
        if (strcmp(method, want) != 0 && !(rq->route != R_RELOAD && strcmp(method, "HEAD") == 0)) {
            char msg[128];
            snprintf(msg, sizeof msg, "%s does not allow %s (use %s)", route_names[rq->route], method, want);
            return respond_error(c, rq, 405, msg);
        }
        if (rq->route == R_HEALTH) return health(c, rq);
        if (rq->route == R_METRICS) return metrics(c, rq);
        return reload_request(c, rq, url);
    }
    /* Everything else goes to a worker; the connection waits, suspended. */
    pthread_mutex_lock(&jobs_lock);
    if (GET(queued) >= cfg.queue) {
        pthread_mutex_unlock(&jobs_lock);
        return respond_error(c, rq, 503, "the server is busy (its queue is full); try again");
    }
    job *j = job_new(c, rq, url);
    if (!j) {
        pthread_mutex_unlock(&jobs_lock);
        return respond_error(c, rq, 500, "out of memory");
    }
    rq->job = j;
    /* suspended before a worker can resume it: both under jobs_lock */
    MHD_suspend_connection(c);
    j->anext = active;
    if (active) active->aprev = j;
    active = j;
    if (queue_tail)
        queue_tail->next = j;
    else
        queue_head = j;
    queue_tail = j;
    ADD(queued, 1);
    pthread_cond_signal(&jobs_cond);
    pthread_mutex_unlock(&jobs_lock);
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    request *rq = *con_cls;
    if (!rq) return;
    double dt = now() - rq->start;
    int r = rq->route;
    if (rq->status >= 100 && rq->status < 600) {
        ADD(by_status[r][rq->status], 1);
        size_t b = 0;
        while (b < NBUCKETS && dt > buckets[b]) b++;
        ADD(by_bucket[r][b], 1);
        ADD(latency_us[r], (long)(dt * 1e6));
        if (rq->status >= 500) ADD(errors_5xx, 1);
    } else {
        ADD(aborted, 1);
    }
    if (access_log) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(access_log, "%s.%03ldZ id=%s client=%s method=%s path=%s status=%u bytes=%zu ms=%.3f\n", when,
                ts.tv_nsec / 1000000, rq->id, rq->client, rq->method, rq->path, rq->status, rq->sent, dt * 1e3);
    }
    if (rq->job) {
        pthread_mutex_lock(&jobs_lock);
        job_release(rq->job);
        pthread_mutex_unlock(&jobs_lock);
    }
    free(rq->body);
    free(rq);
    *con_cls = NULL;
    ADD(in_flight, -1);
}

/* ---- reloads (main thread) ---- */

/* Loads dir (and handler.lua again) and swaps them in; requests go on with the old
 * model meanwhile. Returns the HTTP status; *msg says what happened, without paths. */
static unsigned do_reload(const char *dir, char *msg, size_t msglen) {
    /* handler.lua first: a state that cannot run it would answer every request 500 */
    worker probe = { 0 };
    probe.id = -1;
    worker_open(&probe);
    if (probe.error[0] || !probe.handle_ref) {
        fprintf(stderr, "towerkit-server: reload: %s does not load: %s\n", cfg.handler, probe.error);
        snprintf(msg, msglen,
                 "reload failed, the current model stays: the request handler does not load "
                 "(see the server log)");
        worker_close(&probe);
        ADD(reloads_failed, 1);
        return 500;
    }
    worker_close(&probe);
    /* for the spec: a slow load, to show that a second reload is answered 409 and that
     * requests are served meanwhile */
    const char *delay = getenv("TOWERKIT_SERVER_TEST_RELOAD_DELAY_MS");
    if (delay && atoi(delay) > 0) usleep((useconds_t)atoi(delay) * 1000);
    tk_model *m = tk_model_load(dir, NULL);
    if (!m) {
        fprintf(stderr, "towerkit-server: reload of %s failed: %s\n", dir, tk_last_error());
        snprintf(msg, msglen,
                 "reload failed, the current model stays: the checkpoint does not load "
                 "(see the server log)");
        ADD(reloads_failed, 1);
        return 400;
    }
    char name[17];
    weights_hash(dir, name);
    uint64_t v = swap_in(m, name);
    tk_model_release(m);
    __atomic_add_fetch(&handler_generation, 1, __ATOMIC_ACQ_REL); /* every worker reloads handler.lua */
    ADD(reloads_ok, 1);
    printf("reloaded %s: model_version %s (swap %llu)\n", dir, name, (unsigned long long)v);
    fflush(stdout);
    snprintf(msg, msglen, "{\"status\": \"reloaded\", \"model_version\": \"%s\", \"swaps\": %llu}\n", name,
             (unsigned long long)v);
    return 200;
}

static void run_pending_reload(void) {
    pthread_mutex_lock(&jobs_lock);
    job *j = pending_reload;
    pending_reload = NULL;
    pthread_mutex_unlock(&jobs_lock);
    if (!j) return;
    char msg[512];
    unsigned status = do_reload(j->reload_dir, msg, sizeof msg);
    size_t len;
    char *out = status == 200 ? strdup(msg) : error_json(msg, &len);
    if (status == 200 && out) len = strlen(out);
    __atomic_store_n(&reloading, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&jobs_lock);
    job_deliver(j, status, out, out ? len : 0);
    job_release(j);
    pthread_mutex_unlock(&jobs_lock);
}

/* Answers 503 for every job past its deadline (its worker's result is dropped later). */
static void expire_jobs(void) {
    double t = now();
    pthread_mutex_lock(&jobs_lock);
    for (job *j = active, *next; j; j = next) {
        next = j->anext;
        if (t > j->deadline) {
            j->state = JOB_EXPIRED;
            active_remove(j);
            MHD_resume_connection(j->c);
            ADD(timeouts, 1);
        }
    }
    pthread_mutex_unlock(&jobs_lock);
}

/* ---- main ---- */

static volatile sig_atomic_t stop_signal, hup;
static void on_stop(int sig) { stop_signal = sig; }
static void on_hup(int sig) {
    (void)sig;
    hup = 1;
}

/* This rank's rows of the model's catalogue as its shard (tk_dist_shard_range: cut at
 * multiples of 4096, so the scores are those of one process's tk_topk bit for bit): a
 * collective of every rank, which must all have loaded the same catalogue. 0, or -1
 * with msg. */
static int build_shard(const tk_model *m, char *msg, size_t len) {
    int S = tk_dist_size(), me = tk_dist_rank();
    int64_t n = tk_model_num_items(m), lo = 0, count = 0;
    int64_t *counts = malloc((size_t)S * sizeof *counts);
    if (!counts) return snprintf(msg, len, "out of memory"), -1;
    if (tk_dist_allgather_count(n, counts) != TK_OK) {
        free(counts);
        return snprintf(msg, len, "%s", tk_last_error()), -1;
    }
    for (int r = 0; r < S; r++)
        if (counts[r] != counts[0]) { /* every rank sees the same counts: all stop */
            snprintf(msg, len,
                     "rank %d loaded a catalogue of %lld items, rank 0 one of %lld: every rank must load the same "
                     "checkpoint and items",
                     r, (long long)counts[r], (long long)counts[0]);
            free(counts);
            return -1;
        }
    free(counts);
    tk_dist_shard_range(n, me, S, TK_TOPK_ITEM_BLOCK, &lo, &count);
    int64_t *rows = malloc((size_t)(count ? count : 1) * sizeof *rows);
    if (!rows) return snprintf(msg, len, "out of memory"), -1;
    for (int64_t i = 0; i < count; i++) rows[i] = lo + i;
    tk_tensor *ids = tk_index_select(tk_model_item_ids(m), count, rows);
    tk_tensor *emb = tk_index_select(tk_model_item_embeddings(m), count, rows);
    free(rows);
    if (!ids || !emb) {
        tk_tensor_release(ids);
        tk_tensor_release(emb);
        return snprintf(msg, len, "%s", tk_last_error()), -1;
    }
    shard_ix = tk_sharded_index_new(ids, emb); /* a collective: every rank calls it */
    tk_tensor_release(ids);
    tk_tensor_release(emb);
    if (!shard_ix) return snprintf(msg, len, "%s", tk_last_error()), -1;
    shard_dim = tk_model_dim(m);
    printf("rank %d of %d (pid %d): items [%lld, %lld) of %lld\n", me, S, (int)getpid(), (long long)lo,
           (long long)(lo + count), (long long)n);
    return 0;
}

/* A rank other than 0: answers rank 0's batches from its shard until rank 0 stops it
 * (its SIGTERM and SIGINT are noted and ignored: rank 0 decides when every rank stops;
 * mpirun's own signals end the job in any case). */
static int follow(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (tk_sharded_serve_follow(shard_ix, 1e-3) != TK_OK) tk_dist_abort(1, tk_last_error());
    tk_sharded_index_free(shard_ix);
    printf("rank %d: stopped\n", tk_dist_rank());
    if (access_log && access_log != stdout) fclose(access_log);
    cJSON_Delete(config_json);
    return 0;
}

static void usage(FILE *out, const char *prog) {
    fprintf(out, "usage: %s CHECKPOINT_DIR [--config FILE] [--OPTION VALUE ...]\n", prog);
    fprintf(out, "  --config FILE: a JSON object of these options ('_' for '-', and \"checkpoint\"); "
                 "flags override it\n");
    for (size_t i = 0; i < NOPTIONS; i++) fprintf(out, "  --%s: %s\n", options[i].name, options[i].help);
    fprintf(out, "Under mpirun -np N (N > 1) the catalogue is sharded over the ranks: rank 0 serves HTTP, every "
                 "rank answers from its shard (docs/embedding.md); reloads are refused then.\n");
}

int main(int argc, char **argv) {
    /* First: if OpenBLAS runs a kernel weaker than the CPU's best, start again with
     * OPENBLAS_CORETYPE set (towerkit.h, "BLAS kernel"). */
    tk_blas_reexec_if_weaker(argv);
    /* Under mpirun with more than one rank: a sharded catalogue (MPI starts below, on
     * this thread, before any other starts). */
    const char *world = getenv("OMPI_COMM_WORLD_SIZE");
    if (!world) world = getenv("PMI_SIZE");
    sharded = world && atoi(world) > 1;
    const char *env_port = getenv("TOWERKIT_PORT");
    cfg.port = env_port && env_port[0] ? atoi(env_port) : 8080;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.threads = cores > 0 ? cores : 2;
    cfg.bind = "127.0.0.1";
    cfg.handler = TK_ROOT_DIR "/examples/server/handler.lua";
    cfg.max_body = 1 << 20;
    cfg.max_connections = 1000;
    cfg.max_per_ip = 128;
    cfg.timeout = 5;
    cfg.max_results = 20000;
    cfg.time_limit_ms = 2000;
    cfg.queue = 1024;
    cfg.drain_timeout = 10;
    cfg.access_log = "-";
    /* the config file first, whatever its place among the flags: flags override it */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "towerkit-server: --config needs a value\n");
                return 2;
            }
            if (read_config_file(argv[++i]) != 0) return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--config") == 0) {
            i++;
        } else if (a[0] == '-' && a[1] == '-') {
            const option *o = find_option(a + 2, 0);
            if (!o) {
                fprintf(stderr, "towerkit-server: unknown option '%s'\n", a);
                usage(stderr, argv[0]);
                return 2;
            }
            if (!v) {
                fprintf(stderr, "towerkit-server: %s needs a value\n", a);
                return 2;
            }
            if (set_option(o, v, "option --") != 0) return 2;
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "towerkit-server: unknown option '%s'\n", a);
            usage(stderr, argv[0]);
            return 2;
        } else {
            cfg.checkpoint = a;
        }
    }
    if (!cfg.checkpoint) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (cfg.oov && strcmp(cfg.oov, "error") != 0 && strcmp(cfg.oov, "zeros") != 0) {
        fprintf(stderr, "towerkit-server: --oov is error or zeros, got '%s'\n", cfg.oov);
        return 2;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.bind, &addr.sin_addr) != 1) {
        fprintf(stderr, "towerkit-server: --bind wants an IPv4 address, got '%s'\n", cfg.bind);
        return 2;
    }
    /* the model directory: given, else the checkpoint's parent */
    char parent[PATH_MAX];
    const char *md = cfg.model_dir;
    if (!md) {
        snprintf(parent, sizeof parent, "%s", cfg.checkpoint);
        size_t n = strlen(parent);
        while (n > 1 && parent[n - 1] == '/') parent[--n] = '\0';
        char *slash = strrchr(parent, '/');
        if (!slash)
            snprintf(parent, sizeof parent, ".");
        else if (slash == parent)
            parent[1] = '\0';
        else
            *slash = '\0';
        md = parent;
    }
    if (!realpath(md, model_dir_real)) {
        fprintf(stderr, "towerkit-server: the model directory %s: %s\n", md, strerror(errno));
        return 2;
    }
    if (strcmp(cfg.access_log, "off") == 0) {
        access_log = NULL;
    } else if (strcmp(cfg.access_log, "-") == 0) {
        access_log = stdout;
    } else if (!(access_log = fopen(cfg.access_log, "a"))) {
        fprintf(stderr, "towerkit-server: cannot open the access log %s: %s\n", cfg.access_log, strerror(errno));
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* a line as soon as it is written, log files too */
    if (access_log && access_log != stdout) setvbuf(access_log, NULL, _IOLBF, 0);

    tk_set_num_threads(1); /* parallelism is across requests */
    if (sharded && tk_dist_init() != TK_OK) {
        fprintf(stderr, "towerkit-server: under mpirun with more than one rank (a sharded catalogue): %s\n",
                tk_last_error());
        return 1;
    }
    tk_model *model = tk_model_load(cfg.checkpoint, NULL);
    if (!model) {
        if (sharded) tk_dist_abort(1, tk_last_error()); /* every rank stops, this one says why */
        fprintf(stderr, "towerkit-server: %s\n", tk_last_error());
        return 1;
    }
    if (sharded) {
        char msg[512];
        if (build_shard(model, msg, sizeof msg) != 0) tk_dist_abort(1, msg);
        if (tk_dist_rank() > 0) {
            tk_model_release(model); /* a follower needs its shard only */
            return follow();
        }
    }
    slot = tk_model_slot_new(model);
    if (!slot) {
        tk_model_release(model);
        fprintf(stderr, "towerkit-server: %s\n", tk_last_error());
        return 1;
    }
    char name[17];
    weights_hash(cfg.checkpoint, name);
    versions[1].swap = 1;
    snprintf(versions[1].name, 17, "%s", name);
    tk_model_release(model);
    struct timespec seed;
    clock_gettime(CLOCK_REALTIME, &seed);
    id_base = ((uint64_t)(seed.tv_nsec ^ (long)getpid()) & 0xffffffffULL) << 32;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);

    workers = calloc((size_t)cfg.threads, sizeof *workers);
    if (!workers) {
        fprintf(stderr, "towerkit-server: out of memory\n");
        return 1;
    }
    for (long i = 0; i < cfg.threads; i++) {
        ADD(workers_alive, 1);
        workers[i].id = (int)i;
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "towerkit-server: cannot start worker %ld\n", i);
            return 1;
        }
    }
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME,
                         (uint16_t)cfg.port, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)cfg.timeout, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg.max_connections,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg.max_per_ip, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "towerkit-server: cannot listen on %s:%ld: %s\n", cfg.bind, cfg.port, strerror(errno));
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? (int)info->port : (int)cfg.port;
    printf("listening on http://%s:%d (%ld workers, model %s, model_version %s", cfg.bind, port, cfg.threads,
           cfg.checkpoint, name);
    if (sharded) printf(", catalogue sharded over %d ranks", tk_dist_size());
    printf(")\n");

    /* The main thread: signals, reloads and the watchdog, every 10 ms. */
    while (!stop_signal) {
        if (hup && sharded) {
            hup = 0;
            printf("SIGHUP: %s\n", SHARDED_RELOAD_ERROR);
        }
        if (hup) {
            hup = 0;
            long expected = 0;
            if (__atomic_compare_exchange_n(&reloading, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                tk_model *m = tk_model_slot_get(slot);
                char *dir = strdup(tk_model_dir(m));
                tk_model_release(m);
                char msg[512];
                unsigned st = dir ? do_reload(dir, msg, sizeof msg) : 500;
                if (st != 200) printf("SIGHUP: %s\n", st == 500 && !dir ? "out of memory" : msg);
                free(dir);
                __atomic_store_n(&reloading, 0, __ATOMIC_RELEASE);
            } else {
                printf("SIGHUP: a reload is in progress already\n");
            }
        }
        run_pending_reload();
        expire_jobs();
        main_pause();
    }

    /* Drain: no new connections; the requests in flight are answered, then we stop. */
    __atomic_store_n(&draining, 1, __ATOMIC_RELAXED);
    MHD_socket listener = MHD_quiesce_daemon(d);
    long pending = GET(in_flight);
    printf("%s: draining %ld request%s in flight\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM", pending,
           pending == 1 ? "" : "s");
    double until = now() + (double)cfg.drain_timeout;
    while (GET(in_flight) > 0 && now() < until) {
        run_pending_reload();
        expire_jobs();
        main_pause();
    }
    long left = GET(in_flight);
    MHD_stop_daemon(d);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    pthread_mutex_lock(&jobs_lock);
    shutting_down = 1;
    pthread_cond_broadcast(&jobs_cond);
    pthread_mutex_unlock(&jobs_lock);
    /* a worker still running a request may wait for its sharded query: answer until
     * every worker has returned, then let the other ranks go */
    while (sharded && GET(workers_alive) > 0) shard_serve(0.01);
    for (long i = 0; i < cfg.threads; i++) pthread_join(workers[i].thread, NULL);
    free(workers);
    if (sharded) {
        if (tk_sharded_serve_stop(shard_ix) != TK_OK) tk_dist_abort(1, tk_last_error());
        tk_sharded_index_free(shard_ix);
    }
    tk_model_slot_release(slot);
    if (left)
        printf("stopped: %ld request%s still in flight after %ld s\n", left, left == 1 ? "" : "s", cfg.drain_timeout);
    else
        printf("stopped: drained\n");
    if (access_log && access_log != stdout) fclose(access_log);
    cJSON_Delete(config_json);
    return 0;
}
