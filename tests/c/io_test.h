/* Helpers for the file tests (tests/c/test_atomic.c, test_safetensors.c,
 * test_checkpoint.c, test_csv.c): a scratch directory under /tmp, whole-file reads and
 * writes, counting leftovers of atomic writes, and a disk that fills up. */
#ifndef TK_IO_TEST_H
#define TK_IO_TEST_H

#include "tk_test.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char io_dir[256];

/* Makes the scratch directory (once per test program). */
static inline const char *io_tmpdir(const char *prefix) {
    snprintf(io_dir, sizeof io_dir, "/tmp/%s-XXXXXX", prefix);
    if (!mkdtemp(io_dir)) {
        perror("mkdtemp");
        exit(2);
    }
    return io_dir;
}

/* "<scratch>/<name>" in a static rotation of buffers. */
static inline const char *io_path(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", io_dir, name);
    return b;
}

static inline void io_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n && fwrite(data, 1, n, f) != n) exit(2);
    fclose(f);
}

static inline void io_write_text(const char *path, const char *text) { io_write(path, text, strlen(text)); }

/* The whole file, malloc'd and NUL-terminated; NULL if it cannot be read. */
static inline char *io_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && n && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b) b[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static inline bool io_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Entries of dir whose names contain `needle` (".tmp-", ".old-"). */
static inline int io_count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, needle)) n++;
    closedir(d);
    return n;
}

static inline void io_remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        snprintf(p, n, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            io_remove_tree(p);
        else
            unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Runs write(ud) with the process's file size limit at `limit` bytes and SIGXFSZ
 * ignored, so a write past it fails with EFBIG ("File too large") as one would on a
 * full disk. Tests run as root, which permissions do not stop; this limit they obey. */
static inline tk_status io_with_size_limit(rlim_t limit, tk_status (*write)(void *), void *ud) {
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = limit;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    tk_status st = write(ud);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    return st;
}

/* A FIFO at path (replacing what is there), with an alarm: a reader that waits on it
 * for a writer is killed after 10 s, a failed test rather than a hung one. io_no_alarm
 * ends the wait. */
static inline void io_fifo(const char *path) {
    unlink(path);
    if (mkfifo(path, 0600) != 0) {
        perror(path);
        exit(2);
    }
    alarm(10);
}

static inline void io_no_alarm(void) { alarm(0); }

/* The whole file equals want[0 .. n). */
static inline bool io_same(const char *path, const void *want, size_t n) {
    size_t len = 0;
    char *got = io_read(path, &len);
    bool same = got && len == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

#endif
