/*
 * towerkit.c - the `towerkit` launcher: LuaJIT with towerkit on the path.
 *
 *   towerkit script.lua [args]   run a script; arg[0] = script, arg[1..] = args, ... = args
 *   towerkit -e 'code'           run code (then a script, if one follows)
 *   towerkit -                   run the script read from stdin
 *   towerkit                     interactive REPL with `tk = require "towerkit"` preloaded
 *
 * The Lua modules: $TOWERKIT_ROOT/lua if set, else <prefix>/share/towerkit/lua when the
 * program is <prefix>/bin/towerkit (found from /proc/self/exe by towerkit_lua_open,
 * lua/binding/host.c), else the source tree above the build directory it runs from.
 *
 * Modelled on lua.c / luajit.c: errors in scripts print "towerkit: <message>" and a
 * traceback on stderr and exit 1; Ctrl-C interrupts running Lua code with an
 * "interrupted!" error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "towerkit.h"
#include "towerkit_lua.h"

#define PROGNAME "towerkit"
#define PROMPT "> "
#define PROMPT2 ">> "
#define HISTORY_FILE ".towerkit_history"
#define HISTORY_MAX 1000

static lua_State *globalL = NULL;
static const char *progname = PROGNAME; /* NULL in the REPL: errors without a prefix */
static int repl_ref = LUA_NOREF;        /* towerkit.repl in the registry, once the REPL loaded it */

/* ------------------------------------------------------------------------------------ */
/* Interrupts                                                                            */
/* ------------------------------------------------------------------------------------ */

static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    /* Avoid luaL_error: it would add the position of the C hook frame. */
    lua_pushstring(L, "interrupted!");
    lua_error(L);
}

static void laction(int sig) {
    signal(sig, SIG_DFL); /* a second Ctrl-C before the hook runs kills the process */
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* ------------------------------------------------------------------------------------ */
/* Messages and protected calls                                                         */
/* ------------------------------------------------------------------------------------ */

static void print_version(void) {
    const char *lj = LUAJIT_VERSION;
    if (strncmp(lj, "LuaJIT ", 7) == 0) lj += 7;
    fprintf(stdout, "%s %s (LuaJIT %s)\n", PROGNAME, TK_VERSION, lj);
    fflush(stdout);
}

static void print_usage(FILE *out) {
    fprintf(out,
            "usage: %s [options] [script [args]]\n"
            "Available options are:\n"
            "  -e chunk   Execute string 'chunk'.\n"
            "  -l name    Require library 'name' into the global 'name'.\n"
            "  -i         Enter interactive mode after executing 'script'.\n"
            "  -v, --version  Show version information.\n"
            "  -h, --help     Show this help.\n"
            "  --         Stop handling options.\n"
            "  -          Execute stdin and stop handling options.\n"
            "With no script and no -e, starts an interactive session where\n"
            "tk = require \"towerkit\" is already done. The Lua modules are found\n"
            "next to the program: <prefix>/share/towerkit/lua for an installed\n"
            "<prefix>/bin/towerkit, else the source tree of its build directory.\n"
            "Environment: TOWERKIT_ROOT overrides the directory searched for lua/towerkit.\n",
            PROGNAME);
    fflush(out);
}

static void l_message(const char *pname, const char *msg) {
    fflush(stdout); /* keep stdout and stderr in order when both go to one place */
    if (pname) fprintf(stderr, "%s: ", pname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

/* Prints the error object on top of the stack (if status is an error) and pops it. */
static int report(lua_State *L, int status) {
    if (status != LUA_OK && !lua_isnil(L, -1)) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL) {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
            l_message(progname, msg);
            lua_pop(L, 1);
        } else {
            l_message(progname, msg);
        }
        lua_pop(L, 1);
    }
    return status;
}

/* Message handler: adds a traceback, using __tostring for non-string errors. */
static int traceback(lua_State *L) {
    if (!lua_isstring(L, 1)) {
        if (lua_isnoneornil(L, 1) || !luaL_callmeta(L, 1, "__tostring") || !lua_isstring(L, -1))
            return 1; /* keep the non-string error object */
        lua_remove(L, 1);
    }
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    if (progname == NULL && repl_ref != LUA_NOREF) {
        /* the REPL: the message and the user's own frames (towerkit.repl) */
        lua_rawgeti(L, LUA_REGISTRYINDEX, repl_ref);
        lua_getfield(L, -1, "clean_traceback");
        lua_pushvalue(L, -3);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1)) return 1;
        lua_settop(L, 2); /* keep the full traceback if cleaning failed */
    }
    return 1;
}

/* Calls the function below `narg` arguments with a traceback handler and the SIGINT
 * handler installed. Leaves `nres` results (or the error object). */
static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    globalL = L;
    signal(SIGINT, laction);
    int status = lua_pcall(L, narg, nres, base);
    signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    if (status != LUA_OK) lua_gc(L, LUA_GCCOLLECT, 0); /* free what the failed call left */
    return status;
}

static int dostring(lua_State *L, const char *s, const char *name) {
    int status = luaL_loadbuffer(L, s, strlen(s), name);
    if (status == LUA_OK) status = docall(L, 0, 0);
    return report(L, status);
}

static int dolibrary(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    int status = docall(L, 1, 1);
    if (status == LUA_OK) lua_setglobal(L, name);
    return report(L, status);
}

/* ------------------------------------------------------------------------------------ */
/* Scripts                                                                               */
/* ------------------------------------------------------------------------------------ */

/* The global `arg` as lua.c builds it: arg[0] = the script (or the program when there is
 * none), arg[1..] = what follows it, arg[-k] = the interpreter and its options. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    if (script == argc) script = 0; /* no script: arg[0] = the program */
    lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int handle_script(lua_State *L, char **argv, int argc, int script) {
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0) fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = argc - script - 1;
        luaL_checkstack(L, n + 3, "too many arguments to script");
        for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
        status = docall(L, n, 0);
    }
    return report(L, status);
}

/* ------------------------------------------------------------------------------------ */
/* The REPL                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct repl {
    int tty;            /* stdin is a terminal: libedit, prompts, history */
    char history[4096]; /* "" when there is no home directory */
} repl;

/* Reads one line without its newline into a malloc'ed string; NULL at end of input. */
static char *read_line(repl *r, const char *prompt) {
    if (r->tty) {
        char *line = readline(prompt);
        return line; /* libedit strips the newline */
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    return line;
}

/* Is the syntax error on top of the stack "the chunk ended too early"? */
static int incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    const char *eof = "'<eof>'";
    size_t elen = strlen(eof);
    return msg && len >= elen && strcmp(msg + len - elen, eof) == 0;
}

/* Compiles the chunk `buf` under the name "=stdin" from the text `fmt` (with one %s for
 * buf). Leaves the function or the syntax error on the stack. */
static int compile_as(lua_State *L, const char *fmt, const char *buf) {
    lua_pushfstring(L, fmt, buf);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    int status = luaL_loadbuffer(L, text, len, "=stdin");
    lua_remove(L, -2);
    return status;
}

/* Compiles `buf`, first as an expression list whose values the REPL prints, then as a
 * statement. Leaves the function (or the statement's syntax error) on the stack and
 * sets *more when reading stopped at the end of the text, so a longer text may compile.
 * The expression form passes the values through an identity function rather than
 * "return <buf>", so a call in it is not a tail call and keeps its frame for error
 * positions and tracebacks ("stdin:1: boom", not "boom"). */
static int compile(lua_State *L, const char *buf, int *more) {
    *more = 0;
    if (compile_as(L, "return (function(...) return ... end)(%s\n)", buf) == LUA_OK) return LUA_OK;
    lua_pop(L, 1);
    int status = compile_as(L, "return %s", buf);
    if (status == LUA_OK) return LUA_OK;
    int ret_more = incomplete(L, status);
    lua_pop(L, 1);
    status = compile_as(L, "%s", buf);
    *more = status != LUA_OK && (ret_more || incomplete(L, status));
    return status;
}

/* Reads a complete chunk, prompting for more lines while it is incomplete. Returns 1
 * with the compiled function (or a syntax error, status in *status) on the stack, 0 at
 * end of input with nothing pushed. The chunk text is left in *chunk (malloc'ed). */
static int load_chunk(lua_State *L, repl *r, int *status, char **chunk) {
    char *line = read_line(r, PROMPT);
    if (!line) return 0;
    if (line[0] == '=') { /* Lua 5.1's "=expr" shorthand */
        line[0] = ' ';
    }
    lua_pushstring(L, line); /* the text so far, at index -1 */
    free(line);
    for (;;) {
        int want_more;
        *status = compile(L, lua_tostring(L, -1), &want_more);
        if (!want_more) break;
        char *next = read_line(r, PROMPT2);
        if (!next) break; /* end of input inside a chunk: report the syntax error */
        lua_pop(L, 1);    /* the syntax error */
        lua_pushfstring(L, "%s\n%s", lua_tostring(L, -1), next);
        free(next);
        lua_remove(L, -2);
    }
    size_t len;
    const char *text = lua_tolstring(L, -2, &len);
    *chunk = malloc(len + 1);
    if (*chunk) memcpy(*chunk, text, len + 1);
    lua_remove(L, -2); /* the text */
    return 1;
}

/* Prints the values on the stack above `base` with the global print (tostring of each,
 * separated by tabs, as LuaJIT's REPL does) and pops them. */
static void print_results(lua_State *L, int base) {
    int n = lua_gettop(L) - base;
    if (n <= 0) return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    int status = docall(L, n, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        lua_pushfstring(L, "error calling 'print' (%s)", msg ? msg : "?");
        l_message(progname, lua_tostring(L, -1));
        lua_pop(L, 2);
    }
    fflush(stdout);
}

/* Tab completion: the candidates come from towerkit.repl's complete(word, #word);
 * libedit's word is what follows the last break character, so it keeps "tk.data." and
 * "m:" whole. matches[0] is their common prefix, as readline wants. */
static char **repl_complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    lua_State *L = globalL;
    if (!L || repl_ref == LUA_NOREF) return NULL;
    int top = lua_gettop(L);
    char **matches = NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, repl_ref);
    lua_getfield(L, -1, "complete");
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) goto done;
    size_t n = lua_objlen(L, -1);
    if (n == 0) goto done;
    matches = calloc(n + 2, sizeof *matches);
    if (!matches) goto done;
    size_t k = 0;
    if (n > 1) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, repl_ref);
        lua_getfield(L, -1, "common_prefix");
        lua_pushvalue(L, -3);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1))
            matches[k++] = strdup(lua_tostring(L, -1));
        else
            matches[k++] = strdup(text);
        lua_pop(L, 2);
    }
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        const char *m = lua_tostring(L, -1);
        matches[k++] = strdup(m ? m : "");
        lua_pop(L, 1);
    }
done:
    lua_settop(L, top);
    return matches;
}

/* Loads towerkit.repl (completion, tracebacks); without it the REPL is a bare prompt. */
static void repl_load(lua_State *L, repl *r) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "towerkit.repl");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        if (r->tty) rl_bind_key('\t', rl_insert); /* no file-name completion in Lua code */
        return;
    }
    repl_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getglobal(L, "tk"); /* help(x) as a global, as in Python's REPL */
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "help");
        lua_setglobal(L, "help");
    }
    lua_pop(L, 1);
    if (r->tty) {
        static char breaks[] = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]}";
        rl_basic_word_break_characters = breaks;
        rl_completer_word_break_characters = breaks;
        rl_attempted_completion_function = repl_complete;
        rl_completion_append_character = '\0';
        /* libedit binds Tab to rl_complete itself (its rl_bind_key only binds rl_insert) */
    }
}

static void repl_add_history(repl *r, const char *chunk) {
    if (!r->tty || !chunk || !chunk[0]) return;
    add_history(chunk);
    if (r->history[0]) (void)write_history(r->history); /* failures to save are not the user's problem */
}

static void repl_open(repl *r) {
    r->tty = isatty(STDIN_FILENO);
    r->history[0] = '\0';
    if (!r->tty) return;
    rl_readline_name = PROGNAME;
    using_history();
    stifle_history(HISTORY_MAX);
    const char *home = getenv("HOME");
    if (home && home[0]) {
        int n = snprintf(r->history, sizeof r->history, "%s/%s", home, HISTORY_FILE);
        if (n < 0 || (size_t)n >= sizeof r->history)
            r->history[0] = '\0';
        else
            (void)read_history(r->history);
    }
}

static void dotty(lua_State *L) {
    repl r;
    repl_open(&r);
    const char *oldprogname = progname;
    if (r.tty) print_version();

    /* tk = require "towerkit"; on failure say why and go on with plain Lua */
    lua_getglobal(L, "require");
    lua_pushstring(L, "towerkit");
    int status = lua_pcall(L, 1, 1, 0); /* the message alone: its traceback is noise */
    if (status == LUA_OK) {
        lua_setglobal(L, "tk");
        if (r.tty) {
            fprintf(stdout, "tk = require \"towerkit\" is loaded. Ctrl-D exits.\n");
            fflush(stdout);
        }
    } else {
        const char *msg = lua_tostring(L, -1);
        lua_pushfstring(L, "could not load towerkit (continuing without tk): %s",
                        msg ? msg : "(error object is not a string)");
        l_message(progname, lua_tostring(L, -1));
        lua_pop(L, 2);
    }
    globalL = L;
    repl_load(L, &r);

    progname = NULL;
    for (;;) {
        int base = lua_gettop(L);
        char *chunk = NULL;
        if (!load_chunk(L, &r, &status, &chunk)) break;
        repl_add_history(&r, chunk);
        free(chunk);
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK)
            print_results(L, base);
        else
            report(L, status);
        lua_settop(L, base);
    }
    fputc('\n', stdout);
    fflush(stdout);
    progname = oldprogname;
}

/* ------------------------------------------------------------------------------------ */
/* main                                                                                  */
/* ------------------------------------------------------------------------------------ */

struct smain {
    char **argv;
    int argc;
    int status;
};

/* Option flags found by collect_args. */
enum { HAS_E = 1, HAS_I = 2, HAS_V = 4, HAS_H = 8 };

/* Checks the options; returns the index of the script (argc if none) or -1 on a bad
 * option (after printing why). */
static int collect_args(char **argv, int argc, int *flags) {
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') return i;
        if (strcmp(a, "-") == 0) return i;
        if (strcmp(a, "--") == 0) return i + 1;
        if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
            *flags |= HAS_V;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *flags |= HAS_H;
        } else if (strcmp(a, "-i") == 0) {
            *flags |= HAS_I;
        } else if (a[1] == 'e' || a[1] == 'l') {
            if (a[1] == 'e') *flags |= HAS_E;
            if (a[2] == '\0') {
                if (i + 1 >= argc) {
                    fprintf(stderr, "%s: '%s' needs an argument\n", PROGNAME, a);
                    print_usage(stderr);
                    return -1;
                }
                i++;
            }
        } else {
            fprintf(stderr, "%s: unrecognized option '%s'\n", PROGNAME, a);
            print_usage(stderr);
            return -1;
        }
    }
    return argc;
}

/* Runs the -e and -l options in order, up to the script. */
static int run_args(lua_State *L, char **argv, int script) {
    for (int i = 1; i < script; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
        const char *val = a[2] ? a + 2 : argv[++i];
        int status = a[1] == 'e' ? dostring(L, val, "=(command line)") : dolibrary(L, val);
        if (status != LUA_OK) return status;
    }
    return LUA_OK;
}

static int pmain(lua_State *L) {
    struct smain *s = (struct smain *)lua_touserdata(L, 1);
    char **argv = s->argv;
    int argc = s->argc;
    lua_settop(L, 0);
    globalL = L;

    int flags = 0;
    int script = collect_args(argv, argc, &flags);
    if (script < 0) {
        s->status = 1;
        return 0;
    }
    if (flags & HAS_H) {
        print_usage(stdout);
        s->status = 0;
        return 0;
    }
    if ((flags & HAS_V) && !(flags & HAS_I)) {
        print_version();
        if (script == argc && !(flags & HAS_E)) {
            s->status = 0;
            return 0;
        }
    }

    lua_gc(L, LUA_GCSTOP, 0);
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART, -1);
    if (towerkit_lua_open(L, NULL) != 0) {
        l_message(PROGNAME, lua_tostring(L, -1));
        s->status = 1;
        return 0;
    }

    create_arg_table(L, argv, argc, script);
    if (run_args(L, argv, script) != LUA_OK) {
        s->status = 1;
        return 0;
    }
    if (script < argc && handle_script(L, argv, argc, script) != LUA_OK) {
        s->status = 1;
        return 0;
    }
    if ((flags & HAS_I) || (script == argc && !(flags & (HAS_E | HAS_V)))) dotty(L);
    s->status = 0;
    return 0;
}

int main(int argc, char **argv) {
    static char *default_argv[] = { PROGNAME, NULL };
    if (argc < 1 || !argv[0]) {
        argv = default_argv;
        argc = 1;
    }
    /* Before anything runs: OpenBLAS chose its kernel before main; if it is weaker than
     * the CPU's best this starts the launcher again with OPENBLAS_CORETYPE set. */
    tk_blas_reexec_if_weaker(argv);
    lua_State *L = luaL_newstate();
    if (!L) {
        l_message(PROGNAME, "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    struct smain s = { argv, argc, 0 };
    int status = lua_cpcall(L, pmain, &s);
    if (status != LUA_OK) {
        report(L, status);
        s.status = 1;
    }
    lua_close(L);
    return s.status ? EXIT_FAILURE : EXIT_SUCCESS;
}
