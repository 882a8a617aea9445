/* Atomic files (towerkit.h, "Files"): a write replaces the file whole or not at all.
 * Every failure (a missing directory, an abort by the writer, a disk that fills up, a
 * rename that cannot happen) leaves the old file byte for byte and no temporary file,
 * with an error naming the path and the system error. */
#include "io_test.h"

static const char OLD[] = "the old file\n";

/* A fresh target holding OLD. */
static const char *old_file(const char *name) {
    const char *p = io_path(name);
    io_write_text(p, OLD);
    return p;
}

static bool old_kept(const char *path) { return io_same(path, OLD, strlen(OLD)); }

static void test_writes_and_replaces(void) {
    const char *p = old_file("replace.txt");
    chmod(p, 0640);
    tk_atomic_file *af = tk_atomic_open(p);
    TK_CHECK_MSG(af != NULL, "%s", tk_last_error());
    if (!af) return;
    TK_CHECK(io_count_entries(io_dir, "replace.txt.tmp-") == 1); /* beside the target */
    TK_CHECK(old_kept(p));                                       /* untouched until the commit */
    TK_CHECK(tk_atomic_write(af, "new ", 4) == TK_OK);
    TK_CHECK(tk_atomic_write(af, "", 0) == TK_OK);
    TK_CHECK(tk_atomic_write(af, "text\0bytes", 10) == TK_OK);
    TK_CHECK_MSG(tk_atomic_commit(af) == TK_OK, "%s", tk_last_error());
    TK_CHECK(io_same(p, "new text\0bytes", 14));
    struct stat sb;
    TK_CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0640); /* the replaced file's mode */
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    /* the one-call form, on a new file and an empty one */
    const char *q = io_path("whole.txt");
    TK_CHECK(tk_file_write_atomic(q, "abc", 3) == TK_OK && io_same(q, "abc", 3));
    TK_CHECK(tk_file_write_atomic(q, "", 0) == TK_OK && io_same(q, "", 0));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
}

/* The writer gives up halfway (its own error): abort. */
static void test_abort_midway(void) {
    const char *p = old_file("abort.txt");
    tk_atomic_file *af = tk_atomic_open(p);
    TK_CHECK(af && tk_atomic_write(af, "half of the new", 15) == TK_OK);
    tk_atomic_abort(af);
    TK_CHECK(old_kept(p));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    tk_atomic_abort(NULL); /* a failed open's NULL, aborted on a common error path */
}

typedef struct big_write {
    const char *path;
    size_t n;
    bool one_call;
    tk_status first_write; /* the write the size limit stops, as tk_atomic_write reports it */
} big_write;

static tk_status write_big(void *ud) {
    big_write *w = ud;
    char *data = malloc(w->n);
    memset(data, 'x', w->n);
    tk_status st;
    if (w->one_call) {
        st = tk_file_write_atomic(w->path, data, w->n);
    } else {
        tk_atomic_file *af = tk_atomic_open(w->path);
        w->first_write = TK_OK;
        for (size_t off = 0; af && off < w->n && w->first_write == TK_OK; off += 1000)
            w->first_write = tk_atomic_write(af, data + off, w->n - off < 1000 ? w->n - off : 1000);
        /* the commit reports a failed write again (and removes the file) */
        st = af ? tk_atomic_commit(af) : TK_ERROR;
    }
    free(data);
    return st;
}

/* The disk fills up in the middle (a write fails with EFBIG past the size limit). */
static void test_disk_full(void) {
    const char *p = old_file("full.txt");
    big_write w = { p, 1 << 20, false, TK_OK };
    TK_CHECK(io_with_size_limit(8192, write_big, &w) == TK_ERROR);
    TK_CHECK(w.first_write == TK_ERROR); /* stdio's buffer overflowed: the write itself failed */
    char want[512];
    snprintf(want, sizeof want, "%s: write failed: File too large", p);
    TK_CHECK_MSG(strcmp(tk_last_error(), want) == 0, "got \"%s\"", tk_last_error());
    TK_CHECK(old_kept(p));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    /* a short file whose bytes the size limit stops at the commit's flush */
    w = (big_write){ p, 3000, true, TK_OK };
    TK_CHECK(io_with_size_limit(1024, write_big, &w) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), p);
    TK_CHECK_ERROR(tk_last_error(), "File too large");
    TK_CHECK(old_kept(p));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
}

static void test_bad_paths(void) {
    /* no such directory: nothing is created */
    const char *p = io_path("no/such/dir/f.txt");
    TK_CHECK(tk_file_write_atomic(p, "x", 1) == TK_ERROR);
    char want[512];
    snprintf(want, sizeof want, "%s: cannot create a temporary file in '%s/no/such/dir': No such file or directory", p,
             io_dir);
    TK_CHECK_MSG(strcmp(tk_last_error(), want) == 0, "got \"%s\"", tk_last_error());
    TK_CHECK(tk_atomic_open(p) == NULL);
    /* the target is a directory: everything is written, then the rename fails */
    const char *d = io_path("adir");
    mkdir(d, 0755);
    io_write_text(io_path("adir/inside.txt"), OLD);
    TK_CHECK(tk_file_write_atomic(d, "x", 1) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), d);
    TK_CHECK_ERROR(tk_last_error(), "cannot rename the temporary file into place: Is a directory");
    TK_CHECK(old_kept(io_path("adir/inside.txt")));
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
    /* paths that cannot name a file */
    TK_CHECK(tk_file_write_atomic("", "x", 1) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "file path is empty");
    TK_CHECK(tk_file_write_atomic(NULL, "x", 1) == TK_ERROR);
    TK_CHECK(tk_file_write_atomic(io_path("slash/"), "x", 1) == TK_ERROR);
    TK_CHECK_ERROR(tk_last_error(), "slash/: a file path must not end with '/'");
    TK_CHECK(io_count_entries(io_dir, ".tmp-") == 0);
}

int main(void) {
    io_tmpdir("tk-atomic");
    TK_RUN(test_writes_and_replaces);
    TK_RUN(test_abort_midway);
    TK_RUN(test_disk_full);
    TK_RUN(test_bad_paths);
    io_remove_tree(io_dir);
    return tk_test_summary();
}
