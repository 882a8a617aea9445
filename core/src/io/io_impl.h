/* Helpers shared by the file formats (core/src/io). Not installed. Files are written
 * with towerkit.h's atomic files (io/atomic.c). */
#ifndef TK_IO_IMPL_H
#define TK_IO_IMPL_H

#include "internal.h"

#include <stdio.h>

/* fsync of a directory (best effort: errors other than EIO are ignored). */
tk_status tk_fsync_dir(const char *dir);
/* The directory part of a path ("." when there is none); malloc'd. */
char *tk_path_dirname(const char *path);
/* "<a>/<b>", malloc'd (NULL on out of memory). */
char *tk_path_join(const char *a, const char *b);
/* The process umask (read once from /proc; 022 without /proc). New files get
 * 0666 & ~umask, new directories 0777 & ~umask. */
unsigned tk_process_umask(void);
static inline unsigned tk_new_file_mode(void) { return 0666u & ~tk_process_umask(); }

/* Reads a whole file into a malloc'd, NUL-terminated buffer; *len gets its length.
 * Returns NULL with errno set on failure (ENOENT for a missing file). */
char *tk_read_file(const char *path, size_t *len);

/* A growable, NUL-terminated string buffer (zero-initialise; the owner frees data). A
 * write that cannot grow it sets oom and every later write is dropped: check oom once,
 * at the end. */
typedef struct tk_sbuf {
    char *data;
    size_t len, cap;
    bool oom;
} tk_sbuf;
void tk_sbuf_putn(tk_sbuf *b, const char *s, size_t n);
void tk_sbuf_puts(tk_sbuf *b, const char *s);
void tk_sbuf_printf(tk_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Escapes s as a JSON string (with the quotes). */
void tk_sbuf_json_string(tk_sbuf *b, const char *s);

#endif
