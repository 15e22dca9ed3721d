/*
 * store/codec.c — the compact binary encoding of run-queue items, messages
 * and promise records stored as values in the kernel's keyspace.
 *
 * The kernel never parses message bodies: a body is opaque bytes here.
 * Every field is little-endian and encoded one by one:
 *   bytes   u32 length, then the bytes
 *   str     bytes without a NUL
 *   msg     str method, bytes body, u32 nslots, str slot * nslots,
 *           str result ("" for none)
 *   item    u8 kind: 1 send: str target, msg
 *                    2 notify: u32 vat id, str promise
 *   promise u8 state (0 unresolved, 1 fulfilled, 2 rejected), u32 decider
 *           (0 none), u32 nsubs, u32 vat id * nsubs, u32 nqueue,
 *           msg * nqueue, then msg resolution (method "" and result "")
 *
 * Invariant C1: decoding never reads past the value (every length is
 * checked against what is left) and rejects trailing bytes; a bad value is
 * reported, never trusted.
 */
#include "store/codec.h"

#include <stdlib.h>
#include <string.h>

#include "common/diag.h"

static void reserve(kbuf *b, size_t n)
{
    if (b->oom || b->len + n <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + n) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

void keel__kb_u8(kbuf *b, uint8_t v)
{
    reserve(b, 1);
    if (!b->oom) {
        b->p[b->len++] = v;
    }
}

void keel__kb_u32(kbuf *b, uint32_t v)
{
    reserve(b, 4);
    if (!b->oom) {
        keel__put_u32(b->p + b->len, v);
        b->len += 4;
    }
}

void keel__kb_bytes(kbuf *b, const void *p, size_t n)
{
    keel__kb_u32(b, (uint32_t)n);
    reserve(b, n);
    if (!b->oom && n > 0) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

void keel__kb_str(kbuf *b, const char *s)
{
    keel__kb_bytes(b, s, s != NULL ? strlen(s) : 0);
}

void keel__kb_free(kbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

uint8_t keel__kr_u8(krd *r)
{
    if (r->bad || r->len - r->off < 1) {
        r->bad = 1;
        return 0;
    }
    return r->p[r->off++];
}

uint32_t keel__kr_u32(krd *r)
{
    if (r->bad || r->len - r->off < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = keel__get_u32(r->p + r->off);
    r->off += 4;
    return v;
}

const uint8_t *keel__kr_bytes(krd *r, size_t *n)
{
    uint32_t len = keel__kr_u32(r);
    if (r->bad || r->len - r->off < len) {
        r->bad = 1;
        *n = 0;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += len;
    *n = len;
    return p;
}

char *keel__kr_str(krd *r)
{
    size_t n = 0;
    const uint8_t *p = keel__kr_bytes(r, &n);
    if (r->bad) {
        return NULL;
    }
    if (memchr(p, '\0', n) != NULL) {
        r->bad = 1;
        return NULL;
    }
    char *s = malloc(n + 1);
    if (s == NULL) {
        r->bad = 1;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

void keel__kmsg_encode(kbuf *b, const kmsg *m)
{
    keel__kb_str(b, m->method);
    keel__kb_bytes(b, m->body, m->body_len);
    keel__kb_u32(b, (uint32_t)m->nslots);
    for (size_t i = 0; i < m->nslots; i++) {
        keel__kb_str(b, m->slots[i]);
    }
    keel__kb_str(b, m->result);
}

int keel__kmsg_decode(krd *r, kmsg *m)
{
    memset(m, 0, sizeof(*m));
    m->method = keel__kr_str(r);
    size_t n = 0;
    const uint8_t *body = keel__kr_bytes(r, &n);
    if (!r->bad) {
        m->body = malloc(n > 0 ? n : 1);
        if (m->body == NULL) {
            r->bad = 1;
        } else {
            if (n > 0) {
                memcpy(m->body, body, n);
            }
            m->body_len = n;
        }
    }
    uint32_t ns = keel__kr_u32(r);
    /* Each slot needs at least its 4-byte length: bound the allocation by
     * what is left (C1). */
    if (!r->bad && ns > (r->len - r->off) / 4) {
        r->bad = 1;
    }
    if (!r->bad && ns > 0) {
        m->slots = calloc(ns, sizeof(*m->slots));
        if (m->slots == NULL) {
            r->bad = 1;
        }
    }
    for (uint32_t i = 0; !r->bad && i < ns; i++) {
        m->slots[i] = keel__kr_str(r);
        m->nslots = i + 1;
    }
    m->result = keel__kr_str(r);
    return r->bad ? KEEL_ECORRUPT : KEEL_OK;
}

void keel__kmsg_free(kmsg *m)
{
    free(m->method);
    free(m->body);
    for (size_t i = 0; i < m->nslots; i++) {
        free(m->slots[i]);
    }
    free(m->slots);
    free(m->result);
    memset(m, 0, sizeof(*m));
}

int keel__kitem_decode(const void *p, size_t n, kitem *it)
{
    krd r = {.p = p, .len = n};
    memset(it, 0, sizeof(*it));
    it->kind = keel__kr_u8(&r);
    if (it->kind == KITEM_SEND) {
        it->target = keel__kr_str(&r);
        keel__kmsg_decode(&r, &it->msg);
    } else if (it->kind == KITEM_NOTIFY) {
        it->vid = keel__kr_u32(&r);
        it->kp = keel__kr_str(&r);
    } else {
        r.bad = 1;
    }
    if (r.bad || r.off != r.len) {
        keel__kitem_free(it);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__kitem_free(kitem *it)
{
    free(it->target);
    free(it->kp);
    keel__kmsg_free(&it->msg);
    memset(it, 0, sizeof(*it));
}

void keel__kprom_encode(kbuf *b, const kprom *p)
{
    keel__kb_u8(b, (uint8_t)p->state);
    keel__kb_u32(b, p->decider);
    keel__kb_u32(b, (uint32_t)p->nsubs);
    for (size_t i = 0; i < p->nsubs; i++) {
        keel__kb_u32(b, p->subs[i]);
    }
    keel__kb_u32(b, (uint32_t)p->nqueue);
    for (size_t i = 0; i < p->nqueue; i++) {
        keel__kmsg_encode(b, &p->queue[i]);
    }
    keel__kmsg_encode(b, &p->res);
}

int keel__kprom_decode(const void *p, size_t n, kprom *out)
{
    krd r = {.p = p, .len = n};
    memset(out, 0, sizeof(*out));
    out->state = keel__kr_u8(&r);
    out->decider = keel__kr_u32(&r);
    uint32_t ns = keel__kr_u32(&r);
    if (!r.bad && (ns > (r.len - r.off) / 4 || out->state > KP_REJECTED)) {
        r.bad = 1;
    }
    if (!r.bad && ns > 0) {
        out->subs = calloc(ns, sizeof(*out->subs));
        r.bad = out->subs == NULL;
    }
    for (uint32_t i = 0; !r.bad && i < ns; i++) {
        out->subs[i] = keel__kr_u32(&r);
        out->nsubs = i + 1;
    }
    uint32_t nq = keel__kr_u32(&r);
    if (!r.bad && nq > (r.len - r.off) / 16) {
        r.bad = 1;
    }
    if (!r.bad && nq > 0) {
        out->queue = calloc(nq, sizeof(*out->queue));
        r.bad = out->queue == NULL;
    }
    for (uint32_t i = 0; !r.bad && i < nq; i++) {
        out->nqueue = i + 1;
        keel__kmsg_decode(&r, &out->queue[i]);
    }
    keel__kmsg_decode(&r, &out->res);
    if (r.bad || r.off != r.len) {
        keel__kprom_free(out);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__kprom_free(kprom *p)
{
    free(p->subs);
    for (size_t i = 0; i < p->nqueue; i++) {
        keel__kmsg_free(&p->queue[i]);
    }
    free(p->queue);
    keel__kmsg_free(&p->res);
    memset(p, 0, sizeof(*p));
}
