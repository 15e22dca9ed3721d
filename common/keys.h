/*
 * common/keys.h — byte-string key order and prefixes, shared by the store
 * (its in-memory map and LMDB scans) and the recovery audit (its model of
 * the keyspace), so both order and match keys the same way. Header-only:
 * these sit on hot paths and must inline.
 *
 * Invariants:
 *   KY1 keel__keycmp() is LMDB's default key order: bytewise (memcmp), a
 *       proper prefix before every longer key that starts with it. Any
 *       order the store or the audit keeps, compares or checks ("keys
 *       ascending") is this one.
 *   KY2 The empty prefix matches every key.
 */
#ifndef KEEL_COMMON_KEYS_H
#define KEEL_COMMON_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* <0, 0, >0 as a sorts before, equal to, or after b (KY1). */
static inline int keel__keycmp(const uint8_t *a, size_t alen, const uint8_t *b,
                               size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c == 0) {
        c = (alen > blen) - (alen < blen);
    }
    return c;
}

/* 1 if key k[0, klen) starts with p[0, plen) (KY2), else 0. */
static inline int keel__key_has_prefix(const uint8_t *k, size_t klen,
                                       const uint8_t *p, size_t plen)
{
    return plen == 0 || (klen >= plen && memcmp(k, p, plen) == 0);
}

#endif
