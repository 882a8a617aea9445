/* Shared helpers of the file formats: paths, whole-file reads, a string builder with
 * JSON escaping. Atomic files are in io/atomic.c. */
#include "io/io_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Paths                                                                                  */
/* ------------------------------------------------------------------------------------ */

char *tk_path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return tk_strdup(".");
    while (slash > path && slash[-1] == '/') slash--;
    if (slash == path) return tk_strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

char *tk_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    size_t off = na;
    if (na && a[na - 1] != '/') p[off++] = '/';
    memcpy(p + off, b, nb + 1);
    return p;
}

static unsigned process_umask = 022;
static pthread_once_t mode_once = PTHREAD_ONCE_INIT;

/* The umask from /proc (reading it with umask() would change it for a moment under
 * other threads); 022 when /proc is not there. */
static void read_umask(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned mask;
        if (sscanf(line, "Umask: %o", &mask) == 1) {
            process_umask = mask & 0777u;
            break;
        }
    }
    fclose(f);
}

unsigned tk_process_umask(void) {
    pthread_once(&mode_once, read_umask);
    return process_umask;
}

tk_status tk_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return TK_OK;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0 && err == EIO) {
        tk_set_error("%s: fsync of the directory failed: %s", dir, strerror(err));
        return TK_ERROR;
    }
    return TK_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Whole files                                                                            */
/* ------------------------------------------------------------------------------------ */

const char *tk_io_strerror(int err) {
    return err == TK_ENOTREG ? "not a regular file (a FIFO, a device or a socket)" : strerror(err);
}

int tk_open_regular(const char *path, struct stat *st) {
    /* O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, for ever if
     * none comes; on a regular file it changes nothing, and it is cleared below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return -1;
    int err = 0;
    if (fstat(fd, st) != 0)
        err = errno;
    else if (S_ISDIR(st->st_mode))
        err = EISDIR;
    else if (!S_ISREG(st->st_mode))
        err = TK_ENOTREG;
    else {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) err = errno;
    }
    if (err) {
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

FILE *tk_fopen_regular(const char *path, struct stat *st) {
    int fd = tk_open_regular(path, st);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int err = errno;
        close(fd);
        errno = err;
    }
    return f;
}

char *tk_read_file(const char *path, size_t *len) {
    struct stat st;
    int fd = tk_open_regular(path, &st);
    if (fd < 0) return NULL;
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) goto fail;
    for (;;) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                errno = ENOMEM;
                goto fail;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            free(buf);
            errno = err;
            goto fail;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
fail : {
    int err = errno;
    close(fd);
    errno = err;
    return NULL;
}
}

char *tk_file_read(const char *path, size_t *len) {
    if (!path || !*path) {
        tk_set_error("file_read: the path is %s", path ? "empty" : "NULL");
        return NULL;
    }
    char *text = tk_read_file(path, len);
    if (!text) tk_set_error("%s: cannot read: %s", path, tk_io_strerror(errno));
    return text;
}

/* ------------------------------------------------------------------------------------ */
/* String builder                                                                         */
/* ------------------------------------------------------------------------------------ */

static bool sbuf_reserve(tk_sbuf *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void tk_sbuf_putn(tk_sbuf *b, const char *s, size_t n) {
    if (!sbuf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void tk_sbuf_puts(tk_sbuf *b, const char *s) { tk_sbuf_putn(b, s, strlen(s)); }

void tk_sbuf_printf(tk_sbuf *b, const char *fmt, ...) {
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        tk_sbuf_putn(b, small, (size_t)n);
        return;
    }
    if (!sbuf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void tk_sbuf_json_string(tk_sbuf *b, const char *s) {
    tk_sbuf_putn(b, "\"", 1);
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s;; p++) {
        unsigned char c = *p;
        if (c != 0 && c != '"' && c != '\\' && c >= 0x20) continue;
        tk_sbuf_putn(b, run, (size_t)((const char *)p - run));
        if (c == 0) break;
        switch (c) {
        case '"':
            tk_sbuf_puts(b, "\\\"");
            break;
        case '\\':
            tk_sbuf_puts(b, "\\\\");
            break;
        case '\n':
            tk_sbuf_puts(b, "\\n");
            break;
        case '\r':
            tk_sbuf_puts(b, "\\r");
            break;
        case '\t':
            tk_sbuf_puts(b, "\\t");
            break;
        case '\b':
            tk_sbuf_puts(b, "\\b");
            break;
        case '\f':
            tk_sbuf_puts(b, "\\f");
            break;
        default:
            tk_sbuf_printf(b, "\\u%04x", c);
            break;
        }
        run = (const char *)p + 1;
    }
    tk_sbuf_putn(b, "\"", 1);
}
