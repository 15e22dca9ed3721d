/*
 * store/activity.c — the activity hash chain (store/activity.h).
 *
 * Invariants:
 *   AH1 keel__activity_hash() and keel__activity_hash_record() hash the
 *       same bytes for one transaction: the record's k.hash op is left out
 *       and its op count is one less, exactly as the kernel encoded the
 *       write-set before it added k.hash (K12).
 *   AH2 A payload is read only within its length: every op's lengths are
 *       checked before its bytes are; a bad payload is KEEL_ECORRUPT.
 */
#include "store/activity.h"

#include <inttypes.h>
#include <string.h>

#include <xxhash.h>

#include "common/diag.h"
#include "store/store.h"

#define HASH_KEY     "k.hash"
#define HASH_KEY_LEN 6
#define HASH_HEX     16

/* The 17 bytes before the ops: h_{n-1} LE, kind, crank LE. */
static void head(uint8_t out[17], uint64_t prev, int kind, uint64_t crank)
{
    keel__put_u64(out, prev);
    out[8] = (uint8_t)kind;
    keel__put_u64(out + 9, crank);
}

uint64_t keel__activity_hash(struct XXH3_state_s *st, uint64_t prev, int kind,
                             uint64_t crank, const void *ops, size_t len)
{
    uint8_t h[17];
    head(h, prev, kind, crank);
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, h, sizeof(h));
    XXH3_64bits_update(st, ops, len);
    return XXH3_64bits_digest(st);
}

static int hex16(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n != HASH_HEX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        int d = p[i] >= '0' && p[i] <= '9'   ? p[i] - '0'
                : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
                                             : -1;
        if (d < 0) {
            return 0;
        }
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 1;
}

int keel__activity_hash_record(struct XXH3_state_s *st, uint64_t prev, int kind,
                               uint64_t crank, const void *payload, size_t len,
                               uint64_t *computed, uint64_t *stored,
                               keel_diag *diag)
{
    const uint8_t *p = payload;
    size_t off = 4, hash_off = 0, hash_end = 0;
    *computed = 0;
    *stored = 0;
    if (len < 4) { /* AH2 */
        return keel__diag(diag, KEEL_ECORRUPT,
                          "write-set of %zu bytes has no op count", len);
    }
    uint32_t nops = keel__get_u32(p);
    int found = 0;
    for (uint32_t i = 0; i < nops; i++) {
        size_t start = off;
        if (len - off < 5) {
            return keel__diag(diag, KEEL_ECORRUPT,
                              "write-set op %" PRIu32 " is cut short", i);
        }
        uint8_t k = p[off];
        uint32_t klen = keel__get_u32(p + off + 1);
        off += 5;
        if (k != KEEL__STORE_PUT && k != KEEL__STORE_DELETE) {
            return keel__diag(diag, KEEL_ECORRUPT,
                              "write-set op %" PRIu32 " has kind %u", i, k);
        }
        if (len - off < klen) {
            return keel__diag(diag, KEEL_ECORRUPT,
                              "write-set op %" PRIu32 "'s key is cut short", i);
        }
        const uint8_t *key = p + off;
        off += klen;
        const uint8_t *val = NULL;
        uint32_t vlen = 0;
        if (k == KEEL__STORE_PUT) {
            if (len - off < 4) {
                return keel__diag(diag, KEEL_ECORRUPT,
                                  "write-set op %" PRIu32 " is cut short", i);
            }
            vlen = keel__get_u32(p + off);
            off += 4;
            if (len - off < vlen) {
                return keel__diag(
                    diag, KEEL_ECORRUPT,
                    "write-set op %" PRIu32 "'s value is cut short", i);
            }
            val = p + off;
            off += vlen;
        }
        if (klen == HASH_KEY_LEN && memcmp(key, HASH_KEY, HASH_KEY_LEN) == 0) {
            if (k != KEEL__STORE_PUT || !hex16(val, vlen, stored)) {
                return keel__diag(diag, KEEL_ECORRUPT,
                                  HASH_KEY " is not put as %d lowercase hex "
                                           "digits",
                                  HASH_HEX);
            }
            found = 1;
            hash_off = start;
            hash_end = off;
        }
    }
    if (off != len) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "write-set has %zu bytes after its last op",
                          len - off);
    }
    if (!found) {
        return keel__diag(diag, KEEL_ECORRUPT, "write-set puts no " HASH_KEY);
    }
    uint8_t h[21]; /* AH1: the head, then the op count without k.hash */
    head(h, prev, kind, crank);
    keel__put_u32(h + 17, nops - 1);
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, h, sizeof(h));
    XXH3_64bits_update(st, p + 4, hash_off - 4);
    XXH3_64bits_update(st, p + hash_end, len - hash_end);
    *computed = XXH3_64bits_digest(st);
    return KEEL_OK;
}
