/* Helpers shared by the file formats (core/src/io). Not installed. */
#ifndef TK_IO_IMPL_H
#define TK_IO_IMPL_H

#include "internal.h"

#include <stdio.h>

/* Atomic files: tk_atomic_open creates "<path>.tmp-XXXXXX" (mkstemp) in the directory of
 * `path`; the writer fills af.f; tk_atomic_commit flushes, fsyncs, closes and renames it
 * over `path` (then fsyncs the directory); tk_atomic_abort closes and removes the
 * temporary file. Either way the struct is released; an existing file at `path` is
 * replaced only by a complete new one. */
typedef struct tk_atomic_file {
    FILE *f;
    char *tmp;        /* the temporary file's path */
    const char *path; /* the target (borrowed) */
} tk_atomic_file;

tk_status tk_atomic_open(tk_atomic_file *af, const char *path);
tk_status tk_atomic_commit(tk_atomic_file *af);
void tk_atomic_abort(tk_atomic_file *af);
/* fwrite of n bytes; on failure sets "<path>: write failed: <reason>". */
tk_status tk_atomic_write(tk_atomic_file *af, const void *data, size_t n);

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

/* The shortest decimal text (at most 9 significant digits, %g style) that strtof reads
 * back as exactly v (finite); out needs 32 bytes. Returns the length (no NUL). */
int tk_format_f32(float v, char *out);

#endif
