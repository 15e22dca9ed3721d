/*
 * store/writeset_format.h — the encoded write-set: the bytes of one
 * transaction's changes to the keyspace, which are a WAL record's payload
 * (wal/wal_format.h) and what the activity hash (store/activity.h)
 * covers. One encoder and one decoder (store/writeset.c) are used by
 * everyone: the store's commit and replay, the activity hash, the audit
 * and the crash harness. Everything little-endian; nothing is ever
 * written as a C struct.
 *
 * Write-set, 4 + sum of op sizes bytes, no padding:
 *     +0   u32  op_count   ops that follow; at most (len - 4) / 6 (the
 *                          smallest op), so a lying count cannot make a
 *                          reader loop past the bytes
 *     +4   op[op_count]    back to back, keys in strictly ascending order
 *                          (bytewise memcmp, a proper prefix first:
 *                          LMDB's default order)
 *   and no byte after the last op. An empty write-set is the 4 bytes
 *   00 00 00 00.
 *
 *   Op, 5 + key_len (+ 4 + value_len for a put) bytes:
 *     +0   u8   kind       1 = put (KEEL__STORE_PUT), 2 = delete
 *     +1   u32  key_len    1 .. KEEL__STORE_MAX_KEY_BYTES (store/keyspace.h)
 *     +5   u8   key[key_len]
 *   put only:
 *     +5+key_len  u32  value_len  0 .. KEEL__STORE_MAX_VALUE_BYTES
 *     +9+key_len  u8   value[value_len]
 *
 * Validity, checked in this order by the decoder, each failure
 * KEEL_ECORRUPT "payload offset N: ..." naming the offset and what was
 * expected there (the caller adds the WAL record it decoded):
 *   WS1  len >= 4 ("op count cut short")
 *   WS2  op_count <= (len - 4) / 6 ("op count N cannot fit in L bytes")
 *   WS3  per op: 5 bytes of op header left ("op header cut short"); kind
 *        1 or 2 ("bad op kind"); key_len in 1..511 ("outside 1..511") and
 *        within the bytes left ("past end of payload"); for a put 4
 *        bytes of value length left ("value length cut short"), value_len
 *        at most 16 MiB ("over the limit") and within the bytes left
 *   WS4  each key strictly after the previous one ("key not after the
 *        previous key")
 *   WS5  no byte after the last op ("N bytes after the last op")
 *
 * Being canonical (one op per key, sorted), the same effects always
 * encode to the same bytes, which the activity hash relies on.
 *
 * The store's write-set is an append log (store/map.c), in first-write
 * order; the encoder sorts its keys at commit rather than this format
 * taking them in log order. Measured (callgrind, pingpong): the sort of a
 * crank's ~15 keys is about 1,400 instructions, 3% of a crank, where an
 * unsorted format would need a new version, a sort in every reader that
 * wants order (the audit's binary search), and a canonical form of its
 * own for the activity hash. So the format is unchanged.
 */
#ifndef KEEL_STORE_WRITESET_FORMAT_H
#define KEEL_STORE_WRITESET_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"
#include "store/keyspace.h"

enum keel__store_op {
    KEEL__STORE_PUT = 1,
    KEEL__STORE_DELETE = 2,
};

#define KEEL__WS_COUNT_BYTES 4u
/* Bytes of an op before its key; and the smallest op (1-byte key). */
#define KEEL__WS_OP_HEAD_BYTES 5u
#define KEEL__WS_OP_MIN_BYTES  (KEEL__WS_OP_HEAD_BYTES + 1u)
#define KEEL__WS_VLEN_BYTES    4u

_Static_assert(KEEL__WS_OP_MIN_BYTES == 6, "smallest op: 1-byte key delete");

/* One decoded op; key and val point into the payload. */
typedef struct keel__ws_op {
    uint8_t kind; /* KEEL__STORE_PUT or KEEL__STORE_DELETE */
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *val; /* NULL for a delete */
    uint32_t val_len;
    size_t off; /* payload offset of the op */
    size_t end; /* payload offset just past it */
} keel__ws_op;

/* A decoder over one payload (fields private to store/writeset.c). */
typedef struct keel__ws_decoder {
    const uint8_t *p;
    size_t len;
    size_t off;
    uint32_t count;
    uint32_t index;
    const uint8_t *prev_key;
    uint32_t prev_len;
} keel__ws_decoder;

/* A reusable array of decoded ops (keel__ws_decode_all()); zero it to
 * start, keel__ws_ops_free() to end. */
typedef struct keel__ws_ops {
    keel__ws_op *op;
    uint32_t n;
    uint32_t cap;
} keel__ws_ops;

/* The encoded size of one op. */
size_t keel__ws_op_bytes(uint8_t kind, size_t key_len, size_t val_len);
/* Write the op count into out[4]. */
void keel__ws_encode_count(uint8_t *out, uint32_t count);
/* Write one op at p (keel__ws_op_bytes() of room); the caller gives the
 * ops in ascending key order. @return p past the op. */
uint8_t *keel__ws_encode_op(uint8_t *p, uint8_t kind, const void *key,
                            uint32_t key_len, const void *val,
                            uint32_t val_len);

/*
 * Begin decoding payload[len] (WS1, WS2).
 * @return KEEL_OK (d->count is the op count) or KEEL_ECORRUPT.
 */
int keel__ws_decode_begin(keel__ws_decoder *d, const void *payload, size_t len,
                          keel_diag *diag);
/*
 * The next op (WS3, WS4); after the last, WS5.
 * @return 1 (*op set), 0 (no more ops, and no byte after them) or
 *         KEEL_ECORRUPT.
 */
int keel__ws_decode_next(keel__ws_decoder *d, keel__ws_op *op, keel_diag *diag);
/* The whole payload (WS1..WS5), as the two calls above would.
 * @return KEEL_OK (*count set if not NULL) or KEEL_ECORRUPT. */
int keel__ws_validate(const void *payload, size_t len, uint32_t *count,
                      keel_diag *diag);
/*
 * The whole payload (WS1..WS5) decoded into ops->op[0 .. ops->n-1] (keys
 * and values point into the payload), as the two calls above would. The
 * array is reused: it grows only for a payload with more ops than any
 * before, never per op.
 * @return KEEL_OK, KEEL_ECORRUPT (ops->n is 0) or KEEL_ENOMEM.
 */
int keel__ws_decode_all(keel__ws_ops *ops, const void *payload, size_t len,
                        keel_diag *diag);
void keel__ws_ops_free(keel__ws_ops *ops);

#endif
