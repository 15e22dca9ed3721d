/*
 * common/strbuf.h — a growing text buffer filled printf-style, for text
 * built from many pieces whose total size is not known in advance (the
 * Prometheus exposition, the DOT graph).
 *
 * Invariants:
 *   SB1 Once anything was written and oom is 0, p holds len bytes and a
 *       NUL after them; a write that fails (out of memory, a bad format)
 *       sets oom, after which every write is ignored and p must only be
 *       freed.
 */
#ifndef KEEL_COMMON_STRBUF_H
#define KEEL_COMMON_STRBUF_H

#include <stddef.h>

typedef struct keel__strbuf {
    char *p; /* NULL until the first write; the caller frees it */
    size_t len, cap;
    int oom;
} keel__strbuf;

/* Append the formatted text (SB1). */
void keel__sb_printf(keel__strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
