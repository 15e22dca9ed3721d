/*
 * store/activity.c — the activity hash chain (store/activity.h).
 *
 * Invariants:
 *   AH1 keel__activity_hash() and keel__activity_hash_record() hash the
 *       same bytes for one transaction: the record's k.hash op is left out
 *       and its op count is one less, exactly as the kernel encoded the
 *       write-set before it added k.hash (K12).
 *   AH2 A payload is read with the one write-set decoder
 *       (store/writeset.c), so it is read only within its length and a bad
 *       payload is KEEL_ECORRUPT with the decoder's message.
 */
#include "store/activity.h"

#include <inttypes.h>
#include <string.h>

#include <xxhash.h>

#include "common/diag.h"
#include "store/keyspace.h"
#include "store/writeset_format.h"

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

int keel__activity_hash_record(struct XXH3_state_s *st, uint64_t prev, int kind,
                               uint64_t crank, const void *payload, size_t len,
                               uint64_t *computed, uint64_t *stored,
                               keel_diag *diag)
{
    const uint8_t *p = payload;
    size_t hash_off = 0, hash_end = 0;
    keel__ws_decoder dec;
    keel__ws_op op;
    *computed = 0;
    *stored = 0;
    int found = 0;
    keel__key hk;
    keel__ks_meta(&hk, KM_HASH);
    int rc = keel__ws_decode_begin(&dec, payload, len, diag); /* AH2 */
    while (rc >= 0 && (rc = keel__ws_decode_next(&dec, &op, diag)) == 1) {
        if (op.key_len == hk.n && memcmp(op.key, hk.b, hk.n) == 0) {
            if (op.kind != KEEL__STORE_PUT || op.val_len != 8) {
                return keel__diag(diag, KEEL_ECORRUPT,
                                  "k.hash is not put as a u64 (8 bytes, "
                                  "big-endian)");
            }
            *stored = keel__ks_rd64(op.val);
            found = 1;
            hash_off = op.off;
            hash_end = op.end;
        }
    }
    if (rc < 0) {
        return rc;
    }
    uint32_t nops = dec.count;
    if (!found) {
        return keel__diag(diag, KEEL_ECORRUPT, "write-set puts no k.hash");
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
