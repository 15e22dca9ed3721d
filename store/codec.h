/*
 * store/codec.h — the compact binary encoding of the structured values of
 * the kernel's keyspace (the others, numbers, states and refs, are drawn
 * in store/keyspace.h): run-queue items, messages and promise records. The
 * kernel writes them, the audit reads them back; the layout and invariant C1
 * are in store/codec.c.
 */
#ifndef KEEL_STORE_CODEC_H
#define KEEL_STORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct kbuf {
    uint8_t *p;
    size_t len;
    size_t cap;
    int oom;
} kbuf;
void keel__kb_u8(kbuf *b, uint8_t v);
void keel__kb_u32(kbuf *b, uint32_t v);
void keel__kb_bytes(kbuf *b, const void *p, size_t n); /* u32 len + bytes */
void keel__kb_str(kbuf *b, const char *s);
void keel__kb_free(kbuf *b);

typedef struct krd {
    const uint8_t *p;
    size_t len;
    size_t off;
    int bad;
} krd;
uint8_t keel__kr_u8(krd *r);
uint32_t keel__kr_u32(krd *r);
/* Borrowed bytes (not NUL-terminated). */
const uint8_t *keel__kr_bytes(krd *r, size_t *n);
/* A malloc'd NUL-terminated copy, or NULL (r->bad set) on error. */
char *keel__kr_str(krd *r);

/* A message as stored in the run queue and promise queues. */
typedef struct kmsg {
    char *method;
    uint8_t *body;
    size_t body_len;
    char **slots;
    size_t nslots;
    char *result; /* "" for none */
} kmsg;
void keel__kmsg_encode(kbuf *b, const kmsg *m);
int keel__kmsg_decode(krd *r, kmsg *m);
void keel__kmsg_free(kmsg *m);

enum { KITEM_SEND = 1, KITEM_NOTIFY = 2 };
typedef struct kitem {
    int kind;
    char *target; /* SEND */
    kmsg msg;
    uint32_t vid; /* NOTIFY */
    char *kp;
} kitem;
int keel__kitem_decode(const void *p, size_t n, kitem *it);
void keel__kitem_free(kitem *it);

enum { KP_UNRESOLVED = 0, KP_FULFILLED = 1, KP_REJECTED = 2 };
typedef struct kprom {
    int state;
    uint32_t decider; /* 0: none */
    uint32_t *subs;
    size_t nsubs;
    kmsg *queue;
    size_t nqueue;
    kmsg res; /* resolution: body + slots (method, result unused) */
} kprom;
void keel__kprom_encode(kbuf *b, const kprom *p);
int keel__kprom_decode(const void *p, size_t n, kprom *out);
void keel__kprom_free(kprom *p);

#endif
