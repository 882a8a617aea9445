/* Helpers shared by the file formats (core/src/io). Not installed. Files are written
 * with towerkit.h's atomic files (io/atomic.c). */
#ifndef TK_IO_IMPL_H
#define TK_IO_IMPL_H

#include "internal.h"

#include <errno.h>
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

/* Every reader opens its file with tk_open_regular: read-only, and only a regular file.
 * A FIFO, a device or a socket is refused with errno TK_ENOTREG (a directory with
 * EISDIR) instead of being read: opening a FIFO waits for a writer, reading a device
 * may never end. tk_io_strerror names TK_ENOTREG, strerror the others. */
#define TK_ENOTREG EMEDIUMTYPE /* an errno no open(2) or read(2) of a file returns */
struct stat;
int tk_open_regular(const char *path, struct stat *st);
FILE *tk_fopen_regular(const char *path, struct stat *st); /* the same as a stdio stream ("rb") */
const char *tk_io_strerror(int err);

/* Reads a whole regular file into a malloc'd, NUL-terminated buffer; *len gets its
 * length. Returns NULL with errno set on failure (ENOENT for a missing file,
 * TK_ENOTREG for one that is not a regular file). */
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

/* The header of a safetensors file without its data: the names, dtypes and shapes of its
 * tensors in header order. tk_safetensors_read_header checks the header as
 * tk_safetensors_read does (the same errors, naming the file and the tensor) and reads
 * no tensor data; NULL and tk_last_error on failure. */
typedef struct tk_safetensors_header {
    int32_t n;
    char **names;
    tk_dtype *dtypes;
    int32_t *ndims;
    int64_t (*shapes)[TK_MAX_DIMS];
} tk_safetensors_header;
tk_safetensors_header *tk_safetensors_read_header(const char *path);
void tk_safetensors_header_free(tk_safetensors_header *h);

/* Test-only fault injection for tk_checkpoint_write (tests/c/test_checkpoint.c): the
 * save stops at `step` (a TK_CKPT_STEP_*, 0: never): FAIL returns an error there as a
 * failed system call would, STOP writes one byte to notify_fd and waits there for the
 * test to kill the process (SIGKILL: no cleanup runs, as in a crash). no_exchange makes the save act
 * as on a file system without renameat2(RENAME_EXCHANGE). Not thread-safe; tests only. */
enum {
    TK_CKPT_STEP_VERSION_MADE = 1, /* the new checkpoint's temporary directory exists, empty */
    TK_CKPT_STEP_CONFIG_WRITTEN,   /* it has config.json only */
    TK_CKPT_STEP_VERSION_COMPLETE, /* it is complete and synced */
    TK_CKPT_STEP_READY,            /* it is renamed ".<name>.new-XXXXXX" */
    TK_CKPT_STEP_OLD_ASIDE,        /* without RENAME_EXCHANGE: the old checkpoint moved aside, the new not in */
    TK_CKPT_STEP_SWAPPED,          /* the path names the new checkpoint; the old one is still there */
    TK_CKPT_STEP_REMOVING,         /* the old checkpoint is half removed */
    TK_CKPT_NSTEPS
};
enum { TK_CKPT_FAULT_FAIL = 0, TK_CKPT_FAULT_STOP };
void tk_checkpoint_test_fault(int step, int mode, int notify_fd, bool no_exchange);

#endif
