/*
 * server.c - an HTTP JSON recommendation server on libmicrohttpd.
 *
 *   build/examples/towerkit-server CHECKPOINT_DIR [--port N] [--threads N]
 *                                  [--bind ADDR] [--handler FILE] [--max-body BYTES]
 *
 * The checkpoint is loaded once in C (tk_model_load: config.json, weights, schema.json
 * and CHECKPOINT_DIR/item_embeddings.safetensors) into a tk_model_slot. libmicrohttpd
 * runs a pool of worker threads; each worker has its own Lua state, created on its first
 * request, that runs handler.lua with the shared slot as the global SLOT:
 *
 *   POST /recommend  {"features": {"user_id": 7, ...}, "k": 10} -> {"items": [...], "scores": [...]}
 *   GET  /health     -> {"status": "ok", "version": 1, ...}
 *   POST /reload     {"path": "dir"} (optional) -> swaps in a new checkpoint for all workers
 *
 * Bad requests get a 4xx with {"error": "..."}; a failing handler gets a 500; the
 * process never exits because of a request. Binds to 127.0.0.1 unless --bind says
 * otherwise. The port is --port, else $TOWERKIT_PORT, else 8080; 0 picks a free one.
 * The first line on stdout is "listening on http://ADDR:PORT". SIGINT/SIGTERM stop it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "towerkit.h"
#include "towerkit_lua.h"

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

typedef struct config {
    const char *checkpoint;
    const char *handler;
    const char *bind;
    int port;
    int threads;
    size_t max_body;
} config;

static config cfg;
static tk_model_slot *slot;

/* ---- workers: one Lua state per libmicrohttpd thread ---- */

typedef struct worker {
    lua_State *L;
    int handle_ref;   /* the function handler.lua returned */
    int id;
    char error[512];  /* why the state could not be created, if it could not */
    struct worker *next;
} worker;

static pthread_mutex_t workers_lock = PTHREAD_MUTEX_INITIALIZER;
static worker *workers;
static int nworkers;
static __thread worker *self;

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static worker *worker_new(void)
{
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_lock(&workers_lock);
    w->id = nworkers++;
    w->next = workers;
    workers = w;
    pthread_mutex_unlock(&workers_lock);
    lua_State *L = w->L = luaL_newstate();
    if (!L) {
        snprintf(w->error, sizeof w->error, "cannot create a Lua state");
        return w;
    }
    luaL_openlibs(L);
    if (towerkit_lua_open(L, NULL) != 0 || towerkit_lua_push_model_slot(L, slot) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        return w;
    }
    lua_setglobal(L, "SLOT");
    lua_pushstring(L, cfg.checkpoint);
    lua_setglobal(L, "CHECKPOINT");
    lua_pushinteger(L, w->id);
    lua_setglobal(L, "WORKER");
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, cfg.handler) != 0 || lua_pcall(L, 0, 1, -2) != 0) {
        snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return w;
    }
    if (!lua_isfunction(L, -1)) {
        snprintf(w->error, sizeof w->error, "%s must return a function(method, path, body)", cfg.handler);
        lua_settop(L, 0);
        return w;
    }
    w->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    return w;
}

static void workers_free(void)
{
    while (workers) {
        worker *w = workers;
        workers = w->next;
        if (w->L)
            lua_close(w->L);
        free(w);
    }
}

/* ---- requests ---- */

typedef struct request {
    char *body;
    size_t len, cap;
    int too_large;
} request;

static mhd_result respond(struct MHD_Connection *c, unsigned status, const char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    mhd_result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* {"error": "<msg>"} with the message escaped for JSON. */
static mhd_result respond_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    char buf[1200];
    size_t n = 0;
    n += (size_t)snprintf(buf, sizeof buf, "{\"error\": \"");
    for (const char *p = msg; *p && n < sizeof buf - 16; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "\\u%04x", ch);
        } else {
            buf[n++] = (char)ch;
        }
    }
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\"}\n");
    return respond(c, status, buf, n);
}

static mhd_result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                         const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    request *rq = *con_cls;
    if (!rq) { /* headers are in: set up the body buffer */
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (rq->too_large || rq->len + n > cfg.max_body) {
            rq->too_large = 1;
            return MHD_YES;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 1024;
            while (cap < rq->len + n + 1)
                cap *= 2;
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
    if (rq->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes", cfg.max_body);
        return respond_error(c, 413, msg);
    }
    if (!self)
        self = worker_new();
    if (!self)
        return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    if (self->error[0] || !self->handle_ref)
        return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, self->error[0] ? self->error : "no handler");

    lua_State *L = self->L;
    lua_settop(L, 0);
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->handle_ref);
    lua_pushstring(L, method);
    lua_pushstring(L, url);
    lua_pushlstring(L, rq->body ? rq->body : "", rq->len);
    mhd_result ret;
    if (lua_pcall(L, 3, 2, 1) != 0) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "towerkit-server: worker %d: %s %s: %s\n", self->id, method, url, msg ? msg : "?");
        ret = respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error (see the server log)");
    } else {
        int status = (int)lua_tointeger(L, -2);
        size_t len = 0;
        const char *body = lua_tolstring(L, -1, &len);
        if (status < 100 || status > 599 || !body)
            ret = respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "the handler returned no status and body");
        else
            ret = respond(c, (unsigned)status, body, len);
    }
    lua_settop(L, 0);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    request *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- main ---- */

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s CHECKPOINT_DIR [--port N] [--threads N] [--bind ADDR] [--handler FILE] "
            "[--max-body BYTES]\n"
            "  port: --port, else $TOWERKIT_PORT, else 8080 (0: any free port)\n"
            "  threads: worker threads, each with its own Lua state (default: the cores)\n"
            "  bind: 127.0.0.1 by default\n",
            prog);
}

int main(int argc, char **argv)
{
    /* First: if OpenBLAS runs a kernel weaker than the CPU's best, start again with
     * OPENBLAS_CORETYPE set (towerkit.h, "BLAS kernel"). */
    tk_blas_reexec_if_weaker(argv);
    const char *env_port = getenv("TOWERKIT_PORT");
    cfg.port = env_port && env_port[0] ? atoi(env_port) : 8080;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.threads = cores > 0 ? (int)cores : 2;
    cfg.bind = "127.0.0.1";
    cfg.handler = TK_ROOT_DIR "/examples/server/handler.lua";
    cfg.max_body = 1 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
        } else if (a[0] == '-' && a[1] == '-' && !v) {
            fprintf(stderr, "towerkit-server: %s needs a value\n", a);
            return 2;
        } else if (strcmp(a, "--port") == 0) {
            cfg.port = atoi(v), i++;
        } else if (strcmp(a, "--threads") == 0) {
            cfg.threads = atoi(v), i++;
        } else if (strcmp(a, "--bind") == 0) {
            cfg.bind = v, i++;
        } else if (strcmp(a, "--handler") == 0) {
            cfg.handler = v, i++;
        } else if (strcmp(a, "--max-body") == 0) {
            cfg.max_body = (size_t)atol(v), i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "towerkit-server: unknown option '%s'\n", a);
            usage(stderr, argv[0]);
            return 2;
        } else {
            cfg.checkpoint = a;
        }
    }
    if (!cfg.checkpoint || cfg.port < 0 || cfg.port > 65535 || cfg.threads < 1 || cfg.max_body < 1) {
        usage(stderr, argv[0]);
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

    tk_set_num_threads(1); /* parallelism is across requests */
    tk_model *model = tk_model_load(cfg.checkpoint, NULL);
    if (!model) {
        fprintf(stderr, "towerkit-server: %s\n", tk_last_error());
        return 1;
    }
    slot = tk_model_slot_new(model);
    tk_model_release(model);
    if (!slot) {
        fprintf(stderr, "towerkit-server: %s\n", tk_last_error());
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, (uint16_t)cfg.port, NULL, NULL, handle,
        NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg.threads, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "towerkit-server: cannot listen on %s:%d: %s\n", cfg.bind, cfg.port, strerror(errno));
        tk_model_slot_release(slot);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? (int)info->port : cfg.port;
    printf("listening on http://%s:%d (%d workers, model %s)\n", cfg.bind, port, cfg.threads, cfg.checkpoint);
    fflush(stdout);
    while (!stop)
        pause();
    MHD_stop_daemon(d); /* joins the workers */
    workers_free();
    tk_model_slot_release(slot);
    printf("stopped\n");
    return 0;
}
