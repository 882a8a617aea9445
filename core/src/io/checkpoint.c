/* Weights of a block graph as safetensors, and checkpoint directories:
 *
 *   dir/config.json          the block graph (tk_block_config_json, pretty printed)
 *   dir/weights.safetensors  every parameter by path (tk_block_visit_params, skip_root)
 *   dir/<extra files>        for example schema.json, as given
 *
 * A save writes the new checkpoint beside dir and, once it is complete and synced,
 * exchanges the two directories in one rename ("Replacing a checkpoint" below): dir
 * names a complete checkpoint at every instant, whenever the writer is killed, and the
 * next save or load clears what a killed one left. A failure before the swap removes
 * the new checkpoint and leaves dir as it was. */
#include "block_impl.h"
#include "io/io_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CONFIG_FILE "config.json"
#define WEIGHTS_FILE "weights.safetensors"

/* ------------------------------------------------------------------------------------ */
/* Parameters by path                                                                     */
/* ------------------------------------------------------------------------------------ */

typedef struct param_list {
    int32_t n, cap;
    char **names;
    tk_tensor **tensors;
    bool oom;
    const char *sharded; /* the path of a row-sharded table met, or NULL */
} param_list;

static int collect_param(void *ud, const char *path, tk_tensor *param, bool trainable) {
    param_list *l = ud;
    if (param->flags & TK_TENSOR_ROW_SHARD) { /* a rank's rows only: not the table */
        l->sharded = tk_strdup(path);
        l->oom = !l->sharded;
        return 1;
    }
    tk_tensor_sync(param); /* saved (or loaded over) with every row up to date (lazy = false) */
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 16;
        char **n = realloc(l->names, (size_t)cap * sizeof *n);
        if (n) l->names = n;
        tk_tensor **t = realloc(l->tensors, (size_t)cap * sizeof *t);
        if (t) l->tensors = t;
        if (!n || !t) {
            l->oom = true;
            return 1;
        }
        l->cap = cap;
    }
    if (!(l->names[l->n] = tk_strdup(path))) {
        l->oom = true;
        return 1;
    }
    l->tensors[l->n++] = param;
    return 0;
}

static void param_list_free(param_list *l) {
    for (int32_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->tensors);
}

/* The first block of the graph whose lazily sized weights are not built, or NULL. */
static const tk_block *first_unbuilt(const tk_block *b) {
    if (!b) return NULL;
    if (!__atomic_load_n(&b->built, __ATOMIC_ACQUIRE)) return b;
    const tk_block *u = first_unbuilt(b->pre);
    for (int32_t i = 0; i < b->nchildren && !u; i++) u = first_unbuilt(b->children[i]);
    return u ? u : first_unbuilt(b->post);
}

/* TK_ERROR with a message if a block of the graph is not built. */
static tk_status check_built(const tk_block *b, const char *path, const char *action) {
    const tk_block *u = first_unbuilt(b);
    if (!u) return TK_OK;
    tk_set_error("%s: cannot %s the weights of block '%s': its %s block '%s' has no weights yet (their size "
                 "comes from its first input); run a forward pass first, or give the input width",
                 path, action, b->name, u->kind->name, u->name);
    return TK_ERROR;
}

static tk_status collect_params(const tk_block *b, const char *path, const char *action, param_list *l) {
    if (check_built(b, path, action) != TK_OK) return TK_ERROR;
    tk_block_visit_params(b, true, collect_param, l);
    if (l->sharded) {
        tk_set_error("%s: cannot %s the weights of block '%s': table '%s' is row-sharded over the ranks (this rank "
                     "holds some of its rows); gather the tables first (tk_dist_tables_gather, model:gather_tables())",
                     path, action, b->name, l->sharded);
        free((void *)l->sharded);
        l->sharded = NULL;
        return TK_ERROR;
    }
    if (l->oom) {
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    return TK_OK;
}

tk_status tk_block_save_weights(const tk_block *b, const char *path) {
    if (!b || !path) {
        tk_set_error("block_save_weights: %s is NULL", b ? "path" : "block");
        return TK_ERROR;
    }
    param_list l = { 0 };
    tk_status st = collect_params(b, path, "save", &l);
    if (st == TK_OK)
        st = tk_safetensors_write(path, l.n, (const char *const *)l.names, l.tensors,
                                  "{\"format\":\"towerkit\",\"version\":\"" TK_VERSION "\"}");
    param_list_free(&l);
    return st;
}

static int cmp_index_by_name(const void *a, const void *b, void *names) {
    char **n = names;
    return strcmp(n[*(const int32_t *)a], n[*(const int32_t *)b]);
}

/* Copies the weights of st into the parameters of b after checking every one. */
static tk_status load_from(tk_block *b, const char *path, const tk_safetensors *st) {
    param_list l = { 0 };
    if (collect_params(b, path, "load", &l) != TK_OK) {
        param_list_free(&l);
        return TK_ERROR;
    }
    tk_status status = TK_ERROR;
    /* the file's tensors sorted by name, for lookups */
    int32_t *order = malloc((size_t)(st->n ? st->n : 1) * sizeof *order);
    bool *used = calloc((size_t)(st->n ? st->n : 1), sizeof *used);
    int32_t *match = malloc((size_t)(l.n ? l.n : 1) * sizeof *match);
    if (!order || !used || !match) {
        tk_set_error("out of memory");
        goto done;
    }
    for (int32_t i = 0; i < st->n; i++) order[i] = i;
    qsort_r(order, (size_t)st->n, sizeof *order, cmp_index_by_name, st->names);
    for (int32_t i = 0; i < l.n; i++) {
        int32_t lo = 0, hi = st->n - 1, found = -1;
        while (lo <= hi) {
            int32_t mid = lo + (hi - lo) / 2;
            int c = strcmp(st->names[order[mid]], l.names[i]);
            if (c == 0) {
                found = order[mid];
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        if (found < 0) {
            tk_set_error("%s: no tensor '%s' (a parameter of block '%s'); the file has %d tensors, the block %d "
                         "parameters",
                         path, l.names[i], b->name, (int)st->n, (int)l.n);
            goto done;
        }
        const tk_tensor *p = l.tensors[i], *t = st->tensors[found];
        if (p->dtype != t->dtype || !tk_tensor_same_shape(p, t)) {
            char a[96], c[96];
            tk_set_error("%s: tensor '%s' is %s %s but the parameter is %s %s", path, l.names[i],
                         tk_dtype_name(t->dtype), tk_shape_str(t, a, sizeof a), tk_dtype_name(p->dtype),
                         tk_shape_str(p, c, sizeof c));
            goto done;
        }
        float bad = 0;
        int64_t row = tk_first_nonfinite_row(t, &bad);
        if (row >= 0) {
            tk_set_error("%s: tensor '%s' holds a non-finite value (%g) in row %lld", path, l.names[i], (double)bad,
                         (long long)row);
            goto done;
        }
        used[found] = true;
        match[i] = found;
    }
    for (int32_t i = 0; i < st->n; i++) {
        if (!used[i]) {
            tk_set_error("%s: tensor '%s' is not a parameter of block '%s'", path, st->names[i], b->name);
            goto done;
        }
    }
    for (int32_t i = 0; i < l.n; i++) tk_tensor_copy_from(l.tensors[i], st->tensors[match[i]]);
    status = TK_OK;
done:
    free(order);
    free(used);
    free(match);
    param_list_free(&l);
    return status;
}

tk_status tk_block_load_weights(tk_block *b, const char *path) {
    if (!b || !path) {
        tk_set_error("block_load_weights: %s is NULL", b ? "path" : "block");
        return TK_ERROR;
    }
    if (check_built(b, path, "load") != TK_OK) return TK_ERROR; /* before reading the file */
    tk_safetensors *st = tk_safetensors_read(path);
    if (!st) return TK_ERROR;
    tk_status s = load_from(b, path, st);
    tk_safetensors_free(st);
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* Directories                                                                            */
/* ------------------------------------------------------------------------------------ */

/* Removes a directory we made (a temporary or a replaced checkpoint) and what is in
 * it, without following symbolic links out of it. */
static int remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *p = tk_path_join(dir, e->d_name);
        if (!p) {
            rc = -1;
            continue;
        }
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (remove_tree(p) != 0) rc = -1;
        } else if (unlink(p) != 0 && errno != ENOENT) {
            rc = -1;
        }
        free(p);
    }
    closedir(d);
    if (rmdir(dir) != 0 && errno != ENOENT) rc = -1;
    return rc;
}

/* Writes text to dir/name (the temporary checkpoint directory), atomically as every
 * file: the directory swap makes the checkpoint atomic, this checks and syncs each file. */
static tk_status write_file_synced(const char *dir, const char *name, const char *text) {
    char *path = tk_path_join(dir, name);
    if (!path) {
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    tk_status st = tk_file_write_atomic(path, text, strlen(text));
    free(path);
    return st;
}

/* Checks an extra file name: one plain file name, not ours, not given twice. */
static tk_status check_file_names(const char *dir, int32_t nfiles, const char *const *names) {
    for (int32_t i = 0; i < nfiles; i++) {
        const char *n = names[i];
        if (!n || !*n || strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strchr(n, '/')) {
            tk_set_error("checkpoint '%s': extra file name '%s' must be a plain file name (no '/')", dir,
                         n ? n : "(null)");
            return TK_ERROR;
        }
        if (strcmp(n, CONFIG_FILE) == 0 || strcmp(n, WEIGHTS_FILE) == 0) {
            tk_set_error("checkpoint '%s': extra file name '%s' is reserved for the checkpoint itself", dir, n);
            return TK_ERROR;
        }
        for (int32_t j = 0; j < i; j++) {
            if (strcmp(names[j], n) == 0) {
                tk_set_error("checkpoint '%s': extra file '%s' is given twice", dir, n);
                return TK_ERROR;
            }
        }
    }
    return TK_OK;
}

/* dir without trailing slashes (malloc'd). */
static char *trim_dir(const char *dir) {
    char *d = tk_strdup(dir);
    if (!d) return NULL;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') d[--n] = '\0';
    return d;
}

/* ------------------------------------------------------------------------------------ */
/* Replacing a checkpoint                                                                 */
/* ------------------------------------------------------------------------------------ */
/* A save writes the new checkpoint into ".<base>.tmp-XXXXXX" beside the path, syncs it,
 * renames it ".<base>.new-XXXXXX" (complete: only a synced checkpoint gets that name)
 * and exchanges it with the old directory in one renameat2(RENAME_EXCHANGE): the path
 * names the old checkpoint or the new one at every instant, whenever the writer dies.
 * The old one, now under the ".new-" name, is then removed. On a file system without
 * RENAME_EXCHANGE (NFS) the old directory is renamed to ".<base>.old-XXXXXX" first; a
 * crash between the two renames leaves no path, and recover() renames the ".new-"
 * directory into place at the next save or load. recover() also removes the debris of
 * killed saves, which before this was a full-size directory per kill.
 *
 * Saves hold flock(2) on the parent directory (the kernel drops it when a process dies),
 * so recovery never takes a running save's directories for debris. Readers hold a
 * shared flock on the directory they read, and a replaced checkpoint is removed only
 * under an exclusive one taken without waiting: a reader never sees its files vanish,
 * and a checkpoint still being read stays as debris for a later save or load. */

#define SUFFIX_LEN 6 /* mkdtemp's XXXXXX */

/* Test-only fault injection (io_impl.h): the save stops at one step. */
static int fault_step, fault_mode, fault_fd = -1;
static bool fault_no_exchange;

void tk_checkpoint_test_fault(int step, int mode, int notify_fd, bool no_exchange) {
    fault_step = step;
    fault_mode = mode;
    fault_fd = notify_fd;
    fault_no_exchange = no_exchange;
}

/* True (with the error set) when the save is to fail at this step; in STOP mode the
 * process waits there to be killed. */
static bool fault(int step) {
    if (step != fault_step) return false;
    if (fault_mode == TK_CKPT_FAULT_STOP) {
        if (fault_fd >= 0 && write(fault_fd, "s", 1) != 1) _exit(87);
        for (;;) pause(); /* until the test kills the process */
    }
    tk_set_error("checkpoint: injected failure at step %d", step);
    return true;
}

typedef struct ckpt_path {
    char *dir;    /* the checkpoint's path, without trailing slashes */
    char *parent; /* the directory it is in */
    char *base;   /* its last component */
} ckpt_path;

static void ckpt_path_free(ckpt_path *p) {
    free(p->dir);
    free(p->parent);
    free(p->base);
}

static bool ckpt_path_init(ckpt_path *p, const char *dir) {
    memset(p, 0, sizeof *p);
    if (!(p->dir = trim_dir(dir)) || !(p->parent = tk_path_dirname(p->dir))) return false;
    const char *slash = strrchr(p->dir, '/');
    return (p->base = tk_strdup(slash && slash[1] ? slash + 1 : p->dir)) != NULL;
}

/* "<parent>/<pre><base><tag>XXXXXX", malloc'd (a mkdtemp template). */
static char *sibling(const ckpt_path *p, const char *pre, const char *tag) {
    size_t n = strlen(p->parent) + strlen(pre) + strlen(p->base) + strlen(tag) + SUFFIX_LEN + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s%s%sXXXXXX", p->parent, pre, p->base, tag);
    return s;
}

/* name is pre + base + tag + six characters of mkdtemp's alphabet: ours, and not the
 * debris of another checkpoint whose name starts with base. */
static bool tagged(const char *name, const char *pre, const char *base, const char *tag) {
    size_t np = strlen(pre), nb = strlen(base), nt = strlen(tag);
    if (strncmp(name, pre, np) != 0 || strncmp(name + np, base, nb) != 0 || strncmp(name + np + nb, tag, nt) != 0)
        return false;
    const char *s = name + np + nb + nt;
    if (strlen(s) != SUFFIX_LEN) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'))) return false;
    return true;
}

/* An exclusive flock on the parent directory: saves to it take turns (wait), loads
 * recover only when no save runs (!wait). -1 when not taken. */
static int lock_parent(const char *parent, bool wait) {
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    while (flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        close(fd);
        return -1;
    }
    return fd;
}

/* Removes a checkpoint directory we replaced (or debris) unless a reader holds it;
 * config.json goes first, so a half-removed one is plainly not a checkpoint. 0 when it
 * is gone. */
static int remove_checkpoint_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return -1;
    }
    unlinkat(fd, CONFIG_FILE, 0);
    int rc = fault(TK_CKPT_STEP_REMOVING) ? -1 : remove_tree(path);
    close(fd);
    return rc;
}

/* The kinds of debris beside a checkpoint "<base>": ".<base>.tmp-" (a save killed while
 * writing), ".<base>.new-" (complete; or the old checkpoint once exchanged), ".<base>.old-"
 * (an old checkpoint renamed aside), and the same without the dot from towerkit before
 * 0.3 ("<base>.tmp-", "<base>.old-"). */
static const struct {
    const char *pre, *tag;
} DEBRIS[] = { { ".", ".tmp-" }, { ".", ".new-" }, { ".", ".old-" }, { "", ".tmp-" }, { "", ".old-" } };

/* Finishes or undoes what interrupted saves left beside the checkpoint, then removes
 * their debris; called with the parent locked. With no checkpoint at the path, a
 * complete ".new-" directory is renamed into place (a save killed between its two
 * renames), else an ".old-" one is moved back. Best effort: what cannot be removed
 * (a reader holds it) stays for the next time. */
static void recover(const ckpt_path *p) {
    struct stat sb;
    bool present = lstat(p->dir, &sb) == 0;
    DIR *d = opendir(p->parent);
    if (!d) return;
    char **names = NULL;
    int *kinds = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int kind = -1;
        for (int k = 0; k < (int)TK_ARRAY_LEN(DEBRIS) && kind < 0; k++)
            if (tagged(e->d_name, DEBRIS[k].pre, p->base, DEBRIS[k].tag)) kind = k;
        if (kind < 0) continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 8;
            char **m = realloc(names, c * sizeof *m);
            if (m) names = m;
            int *k = realloc(kinds, c * sizeof *k);
            if (k) kinds = k;
            if (!m || !k) break;
            cap = c;
        }
        if (!(names[n] = tk_path_join(p->parent, e->d_name))) break;
        kinds[n++] = kind;
    }
    closedir(d);
    /* no checkpoint: the new one if a save got that far, else the old one back */
    for (int want = 1; want <= 4 && !present; want++) {
        if (want == 3) continue; /* ".tmp-" ones without the dot are incomplete too */
        for (size_t i = 0; i < n && !present; i++) {
            struct stat ls;
            if (kinds[i] == want && lstat(names[i], &ls) == 0 && S_ISDIR(ls.st_mode))
                present = rename(names[i], p->dir) == 0;
        }
    }
    if (present) tk_fsync_dir(p->parent);
    for (size_t i = 0; i < n; i++) {
        /* with no checkpoint left, a complete one that could not be renamed stays */
        bool incomplete = kinds[i] == 0 || kinds[i] == 3;
        struct stat ls;
        if ((present || incomplete) && lstat(names[i], &ls) == 0) {
            if (S_ISDIR(ls.st_mode))
                remove_checkpoint_dir(names[i]);
            else
                unlink(names[i]);
        }
        free(names[i]);
    }
    free(names);
    free(kinds);
}

tk_status tk_checkpoint_write(const char *dir_arg, const tk_block *b, int32_t nfiles, const char *const *file_names,
                              const char *const *file_texts) {
    if (!dir_arg || !*dir_arg || !b) {
        tk_set_error("checkpoint_write: %s", !b ? "block is NULL" : "the directory is empty");
        return TK_ERROR;
    }
    if (nfiles < 0 || (nfiles > 0 && (!file_names || !file_texts))) {
        tk_set_error("checkpoint '%s': bad list of extra files", dir_arg);
        return TK_ERROR;
    }
    if (check_file_names(dir_arg, nfiles, file_names) != TK_OK) return TK_ERROR;
    for (int32_t i = 0; i < nfiles; i++) {
        if (!file_texts[i]) {
            tk_set_error("checkpoint '%s': the text of extra file '%s' is NULL", dir_arg, file_names[i]);
            return TK_ERROR;
        }
    }
    ckpt_path p;
    char *tmp = NULL, *ready = NULL, *aside = NULL, *weights = NULL, *config = NULL;
    const char *made = NULL; /* the new checkpoint while it is ours to remove: tmp, then ready */
    tk_status st = TK_ERROR;
    int lock = -1;
    if (!ckpt_path_init(&p, dir_arg)) goto oom;
    const char *dir = p.dir, *parent = p.parent;
    if (strcmp(p.base, "/") == 0 || strcmp(p.base, ".") == 0 || strcmp(p.base, "..") == 0) {
        tk_set_error("checkpoint '%s': cannot replace this directory; name a subdirectory", dir_arg);
        goto done;
    }
    /* everything that can fail before touching the disk */
    if (!(config = tk_block_config_json(b))) {
        char msg[TK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", tk_last_error());
        tk_set_error("checkpoint '%s': %s", dir, msg);
        goto done;
    }
    const tk_block *u = first_unbuilt(b);
    if (u) {
        tk_set_error("checkpoint '%s': block '%s' (%s) has no weights yet (their size comes from its first "
                     "input); run a forward pass first, or give the input width",
                     dir, u->name, u->kind->name);
        goto done;
    }
    if (!(tmp = sibling(&p, ".", ".tmp-")) || !(aside = sibling(&p, ".", ".old-"))) goto oom;
    lock = lock_parent(parent, true); /* best effort: a missing parent fails below, with its message */
    recover(&p);
    struct stat sb;
    bool exists = lstat(dir, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode)) {
        tk_set_error("checkpoint '%s': exists and is not a directory", dir);
        goto done;
    }
    if (!mkdtemp(tmp)) {
        tk_set_error("checkpoint '%s': cannot create a temporary directory in '%s': %s", dir, parent, strerror(errno));
        goto done;
    }
    made = tmp;
    if (chmod(tmp, (mode_t)(0777u & ~tk_process_umask())) != 0) { /* mkdtemp makes it 0700; not fatal */
    }
    if (fault(TK_CKPT_STEP_VERSION_MADE)) goto done;
    if (write_file_synced(tmp, CONFIG_FILE, config) != TK_OK) goto done;
    if (fault(TK_CKPT_STEP_CONFIG_WRITTEN)) goto done;
    if (!(weights = tk_path_join(tmp, WEIGHTS_FILE))) goto oom;
    if (tk_block_save_weights(b, weights) != TK_OK) goto done;
    for (int32_t i = 0; i < nfiles; i++)
        if (write_file_synced(tmp, file_names[i], file_texts[i]) != TK_OK) goto done;
    if (tk_fsync_dir(tmp) != TK_OK) goto done;
    if (fault(TK_CKPT_STEP_VERSION_COMPLETE)) goto done;

    /* complete: the name recover() may rename into place */
    if (!(ready = tk_strdup(tmp))) goto oom;
    memcpy(strrchr(ready, '/') + 1 + 1 + strlen(p.base), ".new-", 5); /* ".<base>.tmp-X" -> ".<base>.new-X" */
    if (rename(tmp, ready) != 0) {
        tk_set_error("checkpoint '%s': cannot rename '%s': %s", dir, tmp, strerror(errno));
        goto done;
    }
    made = ready;
    if (tk_fsync_dir(parent) != TK_OK || fault(TK_CKPT_STEP_READY)) goto done;

    /* the swap */
    bool replaced = false; /* the old checkpoint is at `aside` */
    if (!exists) {
        if (rename(ready, dir) != 0) {
            tk_set_error("checkpoint '%s': cannot rename the new checkpoint into place: %s", dir, strerror(errno));
            goto done;
        }
    } else if (!fault_no_exchange && renameat2(AT_FDCWD, ready, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        free(aside); /* the old checkpoint now has the ".new-" name */
        aside = ready;
        ready = NULL;
        replaced = true;
    } else if (!fault_no_exchange && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
        tk_set_error("checkpoint '%s': cannot exchange the old checkpoint with the new one: %s", dir, strerror(errno));
        goto done;
    } else { /* no RENAME_EXCHANGE here: aside, then in; recover() finishes a save killed between */
        if (!mkdtemp(aside)) {
            tk_set_error("checkpoint '%s': cannot create a directory in '%s' to move the old checkpoint to: %s", dir,
                         parent, strerror(errno));
            goto done;
        }
        if (rename(dir, aside) != 0) { /* onto the empty directory just made */
            int err = errno;
            rmdir(aside);
            tk_set_error("checkpoint '%s': cannot move the old checkpoint aside: %s", dir, strerror(err));
            goto done;
        }
        bool injected = fault(TK_CKPT_STEP_OLD_ASIDE);
        int err = injected ? 0 : rename(ready, dir) != 0 ? errno : 0;
        if (injected || err) {
            if (rename(aside, dir) != 0) {
                tk_set_error("checkpoint '%s': cannot rename the new checkpoint into place (%s), and the old one could "
                             "not be moved back: it is in '%s'",
                             dir, strerror(injected ? EIO : err), aside);
                goto done;
            }
            if (!injected)
                tk_set_error("checkpoint '%s': cannot rename the new checkpoint into place: %s", dir, strerror(err));
            goto done;
        }
        replaced = true;
    }
    made = NULL; /* in place */
    tk_fsync_dir(parent);
    if (fault(TK_CKPT_STEP_SWAPPED)) goto done;
    /* the old checkpoint, unless a reader holds it (then a later save or load removes it) */
    if (replaced) remove_checkpoint_dir(aside);
    st = TK_OK;
    goto done;
oom:
    tk_set_error("out of memory");
done:
    if (made) remove_tree(made);
    if (lock >= 0) close(lock);
    ckpt_path_free(&p);
    free(tmp);
    free(ready);
    free(aside);
    free(weights);
    free(config);
    return st;
}

/* Opens the checkpoint directory to read and holds a shared flock on it (so a save
 * replacing it cannot remove it during the read): the descriptor, or -1 with the error
 * set. A missing path is first recovered (a save killed between its renames) when no
 * save runs. */
static int open_for_reading(const ckpt_path *p) {
    int lock = lock_parent(p->parent, false);
    if (lock >= 0) { /* no save runs: finish or clean up what one left */
        recover(p);
        close(lock);
    }
    for (int attempt = 0; attempt < 200; attempt++) {
        struct stat sb, held;
        if (stat(p->dir, &sb) != 0) {
            tk_set_error("checkpoint '%s': %s", p->dir, errno == ENOENT ? "no such directory" : strerror(errno));
            return -1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            tk_set_error("checkpoint '%s': not a directory", p->dir);
            return -1;
        }
        int d = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        /* still the one the path names once held? a save may have exchanged and removed it meanwhile */
        if (d >= 0 && flock(d, LOCK_SH | LOCK_NB) == 0 && fstat(d, &held) == 0 && stat(p->dir, &sb) == 0 &&
            held.st_ino == sb.st_ino && held.st_dev == sb.st_dev)
            return d;
        if (d >= 0) close(d);
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    tk_set_error("checkpoint '%s': it keeps changing (saves in a loop?); try again", p->dir);
    return -1;
}

/* The directory to read the held checkpoint's files from: through its descriptor, so
 * every file comes from the same checkpoint even if a save swaps the path meanwhile
 * (the path itself without /proc). */
static char *held_dir(const char *dir, int fd) {
    char buf[64];
    snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd);
    return tk_strdup(access(buf, X_OK) == 0 ? buf : dir);
}

/* from/name read as text into *out (NULL when absent and optional); errors name the
 * checkpoint dir as the user gave it. */
static tk_status read_text(const char *dir, const char *from, const char *name, bool required, char **out) {
    *out = NULL;
    char *path = tk_path_join(from, name);
    if (!path) {
        tk_set_error("out of memory");
        return TK_ERROR;
    }
    size_t len = 0;
    char *text = tk_read_file(path, &len);
    tk_status st = TK_OK;
    if (!text) {
        if (errno == ENOENT && !required) {
            st = TK_OK;
        } else if (errno == ENOENT) {
            tk_set_error("checkpoint '%s': %s is missing", dir, name);
            st = TK_ERROR;
        } else {
            tk_set_error("checkpoint '%s': cannot read %s: %s", dir, name, tk_io_strerror(errno));
            st = TK_ERROR;
        }
    } else if (memchr(text, '\0', len)) {
        tk_set_error("checkpoint '%s': %s is not a text file (it has NUL bytes)", dir, name);
        free(text);
        st = TK_ERROR;
    } else {
        *out = text;
    }
    free(path);
    return st;
}

/* The shape oracle of a checkpoint read: the header of its weights.safetensors. */
typedef struct header_oracle {
    const tk_safetensors_header *h;
    const char *root; /* the name of the config's root block */
    bool refused;
    char msg[TK_ERR_LEN];
} header_oracle;

static int check_against_header(void *ud, const char *path, tk_dtype dtype, int32_t ndim, const int64_t *shape) {
    header_oracle *o = ud;
    const tk_safetensors_header *h = o->h;
    int32_t i = 0;
    while (i < h->n && strcmp(h->names[i], path) != 0) i++;
    if (i == h->n) {
        snprintf(o->msg, sizeof o->msg,
                 "%s: no tensor '%s' (a parameter of block '%s'); the file has %d tensors (checked before "
                 "allocating the parameters of %s)",
                 WEIGHTS_FILE, path, o->root, (int)h->n, CONFIG_FILE);
    } else {
        tk_tensor want = { .dtype = dtype, .ndim = ndim }, have = { .dtype = h->dtypes[i], .ndim = h->ndims[i] };
        memcpy(want.shape, shape, (size_t)ndim * sizeof *shape);
        memcpy(have.shape, h->shapes[i], sizeof have.shape);
        if (dtype == have.dtype && tk_tensor_same_shape(&want, &have)) return 0;
        char a[96], c[96];
        snprintf(o->msg, sizeof o->msg,
                 "%s: tensor '%s' is %s %s but the parameter is %s %s in %s (checked before allocating it)",
                 WEIGHTS_FILE, path, tk_dtype_name(have.dtype), tk_shape_str(&have, a, sizeof a), tk_dtype_name(dtype),
                 tk_shape_str(&want, c, sizeof c), CONFIG_FILE);
    }
    o->refused = true;
    tk_set_error("%s", o->msg);
    return 1;
}

/* Sets "checkpoint 'dir': <e>", e being the last error without its "<from>/" prefix
 * (the held directory's path): the messages name the checkpoint as the user gave it. */
static void error_in(const char *dir, const char *from) {
    char msg[TK_ERR_LEN];
    const char *e = tk_last_error();
    size_t nf = strlen(from);
    snprintf(msg, sizeof msg, "%s", strncmp(e, from, nf) == 0 && e[nf] == '/' ? e + nf + 1 : e);
    tk_set_error("checkpoint '%s': %s", dir, msg);
}

tk_block *tk_checkpoint_read(const char *dir_arg, int32_t nfiles, const char *const *file_names,
                             char **file_texts_out) {
    if (!dir_arg || !*dir_arg) {
        tk_set_error("checkpoint_read: the directory is %s", dir_arg ? "empty" : "NULL");
        return NULL;
    }
    if (nfiles < 0 || (nfiles > 0 && (!file_names || !file_texts_out))) {
        tk_set_error("checkpoint '%s': bad list of extra files", dir_arg);
        return NULL;
    }
    for (int32_t i = 0; i < nfiles; i++) file_texts_out[i] = NULL;
    ckpt_path cp;
    if (!ckpt_path_init(&cp, dir_arg)) {
        ckpt_path_free(&cp);
        tk_set_error("out of memory");
        return NULL;
    }
    const char *dir = dir_arg;
    int hold = open_for_reading(&cp);
    ckpt_path_free(&cp);
    if (hold < 0) return NULL;
    char *from = held_dir(dir, hold);
    if (!from) {
        close(hold);
        tk_set_error("out of memory");
        return NULL;
    }
    char *config = NULL, *weights = NULL;
    tk_safetensors_header *header = NULL;
    tk_block *b = NULL;
    if (read_text(dir, from, CONFIG_FILE, true, &config) != TK_OK) goto fail;
    const char *p = config;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (!*p) {
        tk_set_error("checkpoint '%s': %s is empty", dir, CONFIG_FILE);
        goto fail;
    }
    /* The JSON first (its syntax errors before any about the weights), then the header
     * of the weights (no data), then the blocks: every parameter is checked against the
     * header before it is allocated, so a config that asks for more than the weights
     * hold fails without allocating it. */
    cJSON *parsed = tk_json_parse(config, strlen(config), "block config");
    if (!parsed) {
        char msg[TK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", tk_last_error());
        tk_set_error("checkpoint '%s': %s: %s", dir, CONFIG_FILE, msg);
        goto fail;
    }
    const cJSON *root_name = cJSON_IsObject(parsed) ? cJSON_GetObjectItemCaseSensitive(parsed, "name") : NULL;
    header_oracle ho = { .root = cJSON_IsString(root_name) ? root_name->valuestring : "?" };
    if (!(weights = tk_path_join(from, WEIGHTS_FILE))) {
        cJSON_Delete(parsed);
        tk_set_error("out of memory");
        goto fail;
    }
    if (access(weights, F_OK) != 0 && errno == ENOENT) {
        cJSON_Delete(parsed);
        tk_set_error("checkpoint '%s': %s is missing", dir, WEIGHTS_FILE);
        goto fail;
    }
    if (!(header = tk_safetensors_read_header(weights))) {
        cJSON_Delete(parsed);
        error_in(dir, from);
        goto fail;
    }
    ho.h = header;
    tk_shape_oracle oracle = { check_against_header, &ho };
    b = tk_block_from_cjson_checked(parsed, 0, &oracle);
    cJSON_Delete(parsed);
    if (!b) {
        char msg[TK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", tk_last_error());
        if (ho.refused)
            tk_set_error("checkpoint '%s': %s", dir, ho.msg);
        else
            tk_set_error("checkpoint '%s': %s: %s", dir, CONFIG_FILE, msg);
        goto fail;
    }
    const tk_block *u = first_unbuilt(b);
    if (u) {
        tk_set_error("checkpoint '%s': %s does not give the input width of %s block '%s', so its weights cannot be "
                     "loaded",
                     dir, CONFIG_FILE, u->kind->name, u->name);
        goto fail;
    }
    if (tk_block_load_weights(b, weights) != TK_OK) {
        /* the message names "<from>/weights.safetensors": name the checkpoint instead */
        error_in(dir, from);
        goto fail;
    }
    for (int32_t i = 0; i < nfiles; i++) {
        if (!file_names[i] || !*file_names[i] || strchr(file_names[i], '/')) {
            tk_set_error("checkpoint '%s': extra file name '%s' must be a plain file name (no '/')", dir,
                         file_names[i] ? file_names[i] : "(null)");
            goto fail;
        }
        if (read_text(dir, from, file_names[i], false, &file_texts_out[i]) != TK_OK) goto fail;
    }
    tk_safetensors_header_free(header);
    free(config);
    free(weights);
    free(from);
    if (hold >= 0) close(hold);
    /* Loading a model is when a slow BLAS kernel starts to matter: say so, once. */
    tk_blas_warn_once();
    return b;
fail:
    for (int32_t i = 0; i < nfiles; i++) {
        free(file_texts_out[i]);
        file_texts_out[i] = NULL;
    }
    tk_block_release(b);
    tk_safetensors_header_free(header);
    free(config);
    free(weights);
    free(from);
    if (hold >= 0) close(hold);
    return NULL;
}
