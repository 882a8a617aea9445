/* Per-context arena: bump allocation in chunks, collapsed to one chunk on reset. */
#include "internal.h"

#define TK_ARENA_ALIGN 64
#define TK_ARENA_MIN_CHUNK ((size_t)1 << 20)

static size_t align_up(size_t n) { return (n + TK_ARENA_ALIGN - 1) & ~(size_t)(TK_ARENA_ALIGN - 1); }

static size_t header_size(void) { return align_up(sizeof(tk_arena_chunk)); }

void tk_arena_init(tk_arena *a) { memset(a, 0, sizeof(*a)); }

static tk_arena_chunk *chunk_new(tk_arena *a, size_t size) {
    tk_arena_chunk *c = aligned_alloc(TK_ARENA_ALIGN, align_up(header_size() + size));
    if (!c) return NULL;
    a->mallocs++;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *tk_arena_alloc(tk_arena *a, size_t bytes) {
    bytes = align_up(bytes ? bytes : 1);
    tk_arena_chunk *c = a->head;
    if (!c || c->size - c->used < bytes) {
        size_t size = TK_ARENA_MIN_CHUNK;
        if (c && c->size * 2 > size) size = c->size * 2;
        if (size < bytes) size = bytes;
        tk_arena_chunk *n = chunk_new(a, size);
        if (!n) return NULL;
        n->next = c;
        a->head = c = n;
    }
    void *p = (char *)c + header_size() + c->used;
    c->used += bytes;
    a->total_used += bytes;
    if (a->total_used > a->peak) a->peak = a->total_used;
    return p;
}

void tk_arena_reset(tk_arena *a) {
    tk_arena_chunk *c = a->head;
    if (c && c->next) {
        /* More than one chunk: replace them all by one that holds the peak and a quarter
         * more, so that steps whose needs vary a little (the distinct rows of a batch's
         * sparse gradients) settle into that one chunk instead of growing it again. */
        size_t want = a->peak + a->peak / 4;
        tk_arena_free(a);
        size_t peak = want;
        tk_arena_chunk *n = chunk_new(a, want < TK_ARENA_MIN_CHUNK ? TK_ARENA_MIN_CHUNK : want);
        a->head = n;
        a->peak = peak;
    } else if (c) {
        c->used = 0;
    }
    a->total_used = 0;
}

void tk_arena_free(tk_arena *a) {
    tk_arena_chunk *c = a->head;
    while (c) {
        tk_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total_used = 0;
}

size_t tk_arena_capacity(const tk_arena *a) {
    size_t n = 0;
    for (const tk_arena_chunk *c = a->head; c; c = c->next) n += c->size;
    return n;
}
