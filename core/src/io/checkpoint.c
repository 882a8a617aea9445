/* Weights of a block graph as safetensors, and checkpoint directories:
 *
 *   dir/config.json          the block graph (tk_block_config_json, pretty printed)
 *   dir/weights.safetensors  every parameter by path (tk_block_visit_params, skip_root)
 *   dir/<extra files>        for example schema.json, as given
 *
 * A checkpoint is written into "<dir>.tmp-XXXXXX" beside dir; once every file is
 * written and synced, an existing dir is renamed to "<dir>.old-XXXXXX", the new one
 * renamed into place and the old one removed. A failure before the swap removes the
 * temporary directory and leaves dir as it was. */
#include "block_impl.h"
#include "io/io_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
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
} param_list;

static int collect_param(void *ud, const char *path, tk_tensor *param, bool trainable) {
    param_list *l = ud;
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
    char *dir = trim_dir(dir_arg), *tmp = NULL, *old = NULL, *parent = NULL, *weights = NULL, *config = NULL;
    tk_status st = TK_ERROR;
    bool tmp_made = false;
    if (!dir) goto oom;
    if (strcmp(dir, "/") == 0 || strcmp(dir, ".") == 0 || strcmp(dir, "..") == 0) {
        tk_set_error("checkpoint '%s': cannot replace this directory; name a subdirectory", dir_arg);
        goto done;
    }
    struct stat sb;
    bool exists = lstat(dir, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode)) {
        tk_set_error("checkpoint '%s': exists and is not a directory", dir);
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
    size_t n = strlen(dir);
    if (!(tmp = malloc(n + 12)) || !(old = malloc(n + 12)) || !(parent = tk_path_dirname(dir))) goto oom;
    snprintf(tmp, n + 12, "%s.tmp-XXXXXX", dir);
    snprintf(old, n + 12, "%s.old-XXXXXX", dir);
    if (!mkdtemp(tmp)) {
        tk_set_error("checkpoint '%s': cannot create a temporary directory in '%s': %s", dir, parent, strerror(errno));
        goto done;
    }
    tmp_made = true;
    if (chmod(tmp, (mode_t)(0777u & ~tk_process_umask())) != 0) { /* mkdtemp makes it 0700; not fatal */
    }
    if (write_file_synced(tmp, CONFIG_FILE, config) != TK_OK) goto done;
    if (!(weights = tk_path_join(tmp, WEIGHTS_FILE))) goto oom;
    if (tk_block_save_weights(b, weights) != TK_OK) goto done;
    for (int32_t i = 0; i < nfiles; i++)
        if (write_file_synced(tmp, file_names[i], file_texts[i]) != TK_OK) goto done;
    if (tk_fsync_dir(tmp) != TK_OK) goto done;

    /* the swap */
    if (exists) {
        if (!mkdtemp(old)) {
            tk_set_error("checkpoint '%s': cannot create a directory in '%s' to move the old checkpoint to: %s", dir,
                         parent, strerror(errno));
            goto done;
        }
        if (rename(dir, old) != 0) { /* onto the empty directory just made */
            int err = errno;
            rmdir(old);
            tk_set_error("checkpoint '%s': cannot move the old checkpoint aside: %s", dir, strerror(err));
            goto done;
        }
    }
    if (rename(tmp, dir) != 0) {
        int err = errno;
        if (exists && rename(old, dir) != 0) {
            tk_set_error("checkpoint '%s': cannot rename the new checkpoint into place (%s), and the old one could "
                         "not be moved back: it is in '%s'",
                         dir, strerror(err), old);
            goto done;
        }
        tk_set_error("checkpoint '%s': cannot rename the new checkpoint into place: %s", dir, strerror(err));
        goto done;
    }
    tmp_made = false;
    tk_fsync_dir(parent);
    if (exists && remove_tree(old) != 0) {
        /* the new checkpoint is in place; only the cleanup failed */
        tk_set_error("checkpoint '%s': written, but the old checkpoint in '%s' could not be removed", dir, old);
        st = TK_OK;
        goto done;
    }
    st = TK_OK;
    goto done;
oom:
    tk_set_error("out of memory");
done:
    if (tmp_made) remove_tree(tmp);
    free(dir);
    free(tmp);
    free(old);
    free(parent);
    free(weights);
    free(config);
    return st;
}

/* dir/name read as text into *out (NULL when absent and optional). */
static tk_status read_text(const char *dir, const char *name, bool required, char **out) {
    *out = NULL;
    char *path = tk_path_join(dir, name);
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
            tk_set_error("checkpoint '%s': cannot read %s: %s", dir, name, strerror(errno));
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

tk_block *tk_checkpoint_read(const char *dir, int32_t nfiles, const char *const *file_names, char **file_texts_out) {
    if (!dir || !*dir) {
        tk_set_error("checkpoint_read: the directory is %s", dir ? "empty" : "NULL");
        return NULL;
    }
    if (nfiles < 0 || (nfiles > 0 && (!file_names || !file_texts_out))) {
        tk_set_error("checkpoint '%s': bad list of extra files", dir);
        return NULL;
    }
    for (int32_t i = 0; i < nfiles; i++) file_texts_out[i] = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        tk_set_error("checkpoint '%s': %s", dir, errno == ENOENT ? "no such directory" : strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(sb.st_mode)) {
        tk_set_error("checkpoint '%s': not a directory", dir);
        return NULL;
    }
    char *config = NULL, *weights = NULL;
    tk_block *b = NULL;
    if (read_text(dir, CONFIG_FILE, true, &config) != TK_OK) goto fail;
    const char *p = config;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (!*p) {
        tk_set_error("checkpoint '%s': %s is empty", dir, CONFIG_FILE);
        goto fail;
    }
    if (!(b = tk_block_from_config_json(config, 0))) {
        char msg[TK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", tk_last_error());
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
    if (!(weights = tk_path_join(dir, WEIGHTS_FILE))) {
        tk_set_error("out of memory");
        goto fail;
    }
    if (access(weights, F_OK) != 0 && errno == ENOENT) {
        tk_set_error("checkpoint '%s': %s is missing", dir, WEIGHTS_FILE);
        goto fail;
    }
    if (tk_block_load_weights(b, weights) != TK_OK) goto fail;
    for (int32_t i = 0; i < nfiles; i++) {
        if (!file_names[i] || !*file_names[i] || strchr(file_names[i], '/')) {
            tk_set_error("checkpoint '%s': extra file name '%s' must be a plain file name (no '/')", dir,
                         file_names[i] ? file_names[i] : "(null)");
            goto fail;
        }
        if (read_text(dir, file_names[i], false, &file_texts_out[i]) != TK_OK) goto fail;
    }
    free(config);
    free(weights);
    /* Loading a model is when a slow BLAS kernel starts to matter: say so, once. */
    tk_blas_warn_once();
    return b;
fail:
    for (int32_t i = 0; i < nfiles; i++) {
        free(file_texts_out[i]);
        file_texts_out[i] = NULL;
    }
    tk_block_release(b);
    free(config);
    free(weights);
    return NULL;
}
