/*
 * recovery/shadow.c — the audit's shadow map of a kernel's keyspace
 * (declared in recovery_internal.h): open addressing, linear probing,
 * backward-shift deletion.
 *
 * Invariants:
 *   SH1 Every key is in the probe run that starts at its home slot
 *       (hash & mask): no empty slot lies between its home and its slot.
 *       A delete moves each later entry of the run back into the hole when
 *       its home allows, so lookups never need tombstones.
 *   SH2 At most half the slots are used: a probe run always ends, and
 *       stays short (linear probing at 3/4 load averaged 8.5 probes for
 *       a key not present, a quarter of the audit's time).
 *   SH3 An entry owns kv: u32 vlen, u32 vcap (host order: kv never leaves
 *       memory), klen key bytes, vcap bytes of value room of which vlen
 *       are the value. A value that fits the room reuses it, so rewriting
 *       a counter every transaction allocates nothing.
 */
#include "recovery/recovery_internal.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#define MIN_SLOTS 1024u
#define HDR       8u /* vlen, vcap */

uint64_t keel__shadow_hash(const void *key, size_t klen)
{
    return XXH3_64bits(key, klen);
}

int keel__shadow_init(keel__shadow *m)
{
    m->slots = calloc(MIN_SLOTS, sizeof(*m->slots));
    m->mask = MIN_SLOTS - 1;
    m->count = 0;
    return m->slots != NULL ? KEEL_OK : KEEL_ENOMEM;
}

void keel__shadow_free(keel__shadow *m)
{
    for (size_t i = 0; m->slots != NULL && i <= m->mask; i++) {
        free(m->slots[i].kv);
    }
    free(m->slots);
    m->slots = NULL;
    m->count = 0;
}

static size_t slot_of(const keel__shadow *m, const void *key, size_t klen,
                      uint32_t hash)
{
    size_t i = hash & m->mask;
    for (;;) {
        const keel__shadow_entry *e = &m->slots[i];
        if (e->kv == NULL || (e->hash == hash && e->klen == klen &&
                              memcmp(e->kv + HDR, key, klen) == 0)) {
            return i;
        }
        i = (i + 1) & m->mask;
    }
}

keel__shadow_entry *keel__shadow_find(const keel__shadow *m, const void *key,
                                      size_t klen, uint64_t hash)
{
    keel__shadow_entry *e = &m->slots[slot_of(m, key, klen, (uint32_t)hash)];
    return e->kv != NULL ? e : NULL;
}

/* Double the slots and re-place every entry (SH2). */
static int grow(keel__shadow *m)
{
    size_t n = (m->mask + 1) * 2;
    keel__shadow_entry *slots = calloc(n, sizeof(*slots));
    if (slots == NULL) {
        return KEEL_ENOMEM;
    }
    for (size_t i = 0; i <= m->mask; i++) {
        const keel__shadow_entry *e = &m->slots[i];
        if (e->kv == NULL) {
            continue;
        }
        size_t j = e->hash & (n - 1);
        while (slots[j].kv != NULL) {
            j = (j + 1) & (n - 1);
        }
        slots[j] = *e;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = n - 1;
    return KEEL_OK;
}

int keel__shadow_set(keel__shadow_entry *e, const void *val, size_t vlen)
{
    uint32_t cap, len = (uint32_t)vlen;
    memcpy(&cap, e->kv + 4, sizeof(cap));
    if (vlen > cap) { /* SH3 */
        uint8_t *kv = realloc(e->kv, HDR + e->klen + vlen);
        if (kv == NULL) {
            return KEEL_ENOMEM;
        }
        e->kv = kv;
        memcpy(e->kv + 4, &len, sizeof(len));
    }
    memcpy(e->kv, &len, sizeof(len));
    if (vlen > 0) {
        memcpy(e->kv + HDR + e->klen, val, vlen);
    }
    return KEEL_OK;
}

int keel__shadow_put(keel__shadow *m, const void *key, size_t klen,
                     uint64_t hash, const void *val, size_t vlen)
{
    if ((m->count + 1) * 2 > m->mask + 1 && grow(m) < 0) { /* SH2 */
        return KEEL_ENOMEM;
    }
    keel__shadow_entry *e = &m->slots[slot_of(m, key, klen, (uint32_t)hash)];
    if (e->kv != NULL) {
        return keel__shadow_set(e, val, vlen);
    }
    uint32_t len = (uint32_t)vlen;
    uint8_t *kv = malloc(HDR + klen + vlen);
    if (kv == NULL) {
        return KEEL_ENOMEM;
    }
    memcpy(kv, &len, sizeof(len));
    memcpy(kv + 4, &len, sizeof(len));
    memcpy(kv + HDR, key, klen);
    if (vlen > 0) {
        memcpy(kv + HDR + klen, val, vlen);
    }
    e->kv = kv;
    e->hash = (uint32_t)hash;
    e->klen = (uint32_t)klen;
    m->count++;
    return 1;
}

int keel__shadow_del(keel__shadow *m, const void *key, size_t klen,
                     uint64_t hash)
{
    size_t i = slot_of(m, key, klen, (uint32_t)hash);
    if (m->slots[i].kv == NULL) {
        return 0;
    }
    free(m->slots[i].kv);
    m->count--;
    /* SH1: pull later entries of the run back over the hole at i. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        keel__shadow_entry *e = &m->slots[j];
        if (e->kv == NULL) {
            break;
        }
        size_t home = e->hash & m->mask;
        /* e may move to i only if i lies on its probe path home..j */
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->slots[i] = *e;
            i = j;
        }
    }
    memset(&m->slots[i], 0, sizeof(m->slots[i]));
    return 1;
}

static int entry_cmp(const void *a, const void *b)
{
    keel_bytes x = keel__shadow_key(*(const keel__shadow_entry *const *)a);
    keel_bytes y = keel__shadow_key(*(const keel__shadow_entry *const *)b);
    int c = memcmp(x.ptr, y.ptr, x.len < y.len ? x.len : y.len);
    return c != 0 ? c : (x.len > y.len) - (x.len < y.len);
}

int keel__shadow_sorted(const keel__shadow *m, const keel__shadow_entry ***out)
{
    *out = NULL;
    if (m->count == 0) {
        return KEEL_OK;
    }
    const keel__shadow_entry **v = malloc(m->count * sizeof(*v));
    if (v == NULL) {
        return KEEL_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->slots[i].kv != NULL) {
            v[n++] = &m->slots[i];
        }
    }
    qsort(v, n, sizeof(*v), entry_cmp);
    *out = v;
    return KEEL_OK;
}
