/* Atomic files (towerkit.h, "Files"): the one way the core, the binding and the Lua
 * code write a file. A reader of `path` sees the old file or the complete new one,
 * never a prefix: the bytes go to "<path>.tmp-XXXXXX" in the same directory (a rename
 * across file systems is not atomic), every write is checked, the file is fsynced
 * before the rename (else a crash could leave the new name on an empty inode) and the
 * directory after it (else the rename itself may be lost). Every failure removes the
 * temporary file, so a full disk costs the new file and never the old one. */
#include "io/io_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

struct tk_atomic_file {
    FILE *f;
    char *tmp;  /* the temporary file's path */
    char *path; /* the target */
    int err;    /* errno of the first failed write, 0 while none failed */
};

/* Closes and removes the temporary file, frees the handle. */
static void atomic_discard(tk_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    free(af->tmp);
    free(af->path);
    free(af);
}

tk_atomic_file *tk_atomic_open(const char *path) {
    if (!path || !*path) {
        tk_set_error("file path is empty");
        return NULL;
    }
    size_t n = strlen(path);
    if (path[n - 1] == '/') {
        tk_set_error("%s: a file path must not end with '/'", path);
        return NULL;
    }
    tk_atomic_file *af = calloc(1, sizeof *af);
    if (!af || !(af->path = tk_strdup(path)) || !(af->tmp = malloc(n + 12))) {
        if (af) free(af->path);
        free(af);
        tk_set_error("%s: out of memory", path);
        return NULL;
    }
    snprintf(af->tmp, n + 12, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(af->tmp);
    if (fd < 0) {
        int err = errno;
        char *dir = tk_path_dirname(path);
        tk_set_error("%s: cannot create a temporary file in '%s': %s", path, dir ? dir : ".", strerror(err));
        free(dir);
        free(af->tmp);
        af->tmp = NULL; /* nothing to remove */
        atomic_discard(af);
        return NULL;
    }
    /* mkstemp makes the file private (0600); give it the mode of the file it replaces,
     * or the one open(2) would */
    struct stat st;
    unsigned mode = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (unsigned)(st.st_mode & 07777) : tk_new_file_mode();
    if (fchmod(fd, (mode_t)mode) != 0) { /* not fatal: the contents are still right */
    }
    if (!(af->f = fdopen(fd, "wb"))) {
        int err = errno;
        close(fd);
        atomic_discard(af);
        tk_set_error("%s: cannot open the temporary file: %s", path, strerror(err));
        return NULL;
    }
    return af;
}

tk_status tk_atomic_write(tk_atomic_file *af, const void *data, size_t n) {
    if (af->err) { /* a stream that failed once may have lost bytes: no more writes */
        tk_set_error("%s: write failed: %s", af->path, strerror(af->err));
        return TK_ERROR;
    }
    if (n == 0) return TK_OK;
    if (fwrite(data, 1, n, af->f) != n) {
        af->err = errno ? errno : EIO;
        tk_set_error("%s: write failed: %s", af->path, strerror(af->err));
        return TK_ERROR;
    }
    return TK_OK;
}

void tk_atomic_abort(tk_atomic_file *af) {
    if (af) atomic_discard(af);
}

tk_status tk_atomic_commit(tk_atomic_file *af) {
    const char *what = NULL;
    int err = 0;
    if (af->err) {
        what = "write failed";
        err = af->err;
    } else if (fflush(af->f) != 0) {
        what = "write failed";
        err = errno;
    } else if (ferror(af->f)) { /* an error the buffer hid, errno long gone */
        what = "write failed";
        err = EIO;
    } else if (fsync(fileno(af->f)) != 0 && errno != EINVAL && errno != EROFS) {
        what = "fsync failed";
        err = errno;
    } else {
        FILE *f = af->f;
        af->f = NULL;
        if (fclose(f) != 0) { /* NFS reports some write errors only here */
            what = "close failed";
            err = errno;
        } else if (rename(af->tmp, af->path) != 0) {
            what = "cannot rename the temporary file into place";
            err = errno;
        }
    }
    if (what) {
        tk_set_error("%s: %s: %s", af->path, what, strerror(err));
        atomic_discard(af);
        return TK_ERROR;
    }
    free(af->tmp);
    af->tmp = NULL; /* renamed: nothing to remove */
    char *dir = tk_path_dirname(af->path);
    tk_status st = dir ? tk_fsync_dir(dir) : TK_OK;
    free(dir);
    atomic_discard(af);
    return st;
}

tk_status tk_file_write_atomic(const char *path, const void *data, size_t n) {
    tk_atomic_file *af = tk_atomic_open(path);
    if (!af) return TK_ERROR;
    if (tk_atomic_write(af, data, n) != TK_OK) {
        tk_atomic_abort(af);
        return TK_ERROR;
    }
    return tk_atomic_commit(af);
}
