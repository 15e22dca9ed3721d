/*
 * store/writeset.c — the one encoder and the one decoder of the encoded
 * write-set (layout and validity rules WS1..WS5: store/writeset_format.h).
 *
 * Invariants:
 *   WC1 The decoder checks every length against the bytes left before it
 *       reads through it, so no payload makes it read outside [0, len).
 *   WC2 One message per kind of damage: every reader of write-sets (the
 *       store's replay, the activity hash, the audit, the crash harness)
 *       reports a bad payload with the words written here.
 *   WC3 The encoder writes exactly keel__ws_op_bytes() per op, so a caller
 *       that sums them knows the encoded length before encoding.
 *   WC4 keel__ws_decode_all() is keel__ws_decode_begin() and _next() into
 *       a reused array: the same checks and messages, one pass over the
 *       bytes, and an allocation only when a payload's op count exceeds
 *       the array's (grown to the next power of two), never per op.
 */
#include "store/writeset_format.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "common/keys.h"

size_t keel__ws_op_bytes(uint8_t kind, size_t key_len, size_t val_len)
{
    return KEEL__WS_OP_HEAD_BYTES + key_len +
           (kind == KEEL__STORE_PUT ? KEEL__WS_VLEN_BYTES + val_len : 0);
}

void keel__ws_encode_count(uint8_t *out, uint32_t count)
{
    keel__put_u32(out, count);
}

uint8_t *keel__ws_encode_op(uint8_t *p, uint8_t kind, const void *key,
                            uint32_t key_len, const void *val, uint32_t val_len)
{
    *p++ = kind;
    keel__put_u32(p, key_len);
    memcpy(p + 4, key, key_len);
    p += 4 + key_len;
    if (kind == KEEL__STORE_PUT) { /* WC3 */
        keel__put_u32(p, val_len);
        if (val_len > 0) {
            memcpy(p + 4, val, val_len);
        }
        p += 4 + val_len;
    }
    return p;
}

int keel__ws_decode_begin(keel__ws_decoder *d, const void *payload, size_t len,
                          keel_diag *diag)
{
    memset(d, 0, sizeof(*d));
    d->p = payload;
    d->len = len;
    if (len < KEEL__WS_COUNT_BYTES) { /* WS1 */
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset 0: op count cut short (payload is "
                          "%zu bytes, expected at least 4)",
                          len);
    }
    d->count = keel__get_u32(d->p);
    /* WS2: a lying count cannot make us loop past what the bytes hold. */
    if (d->count > (len - KEEL__WS_COUNT_BYTES) / KEEL__WS_OP_MIN_BYTES) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset 0: op count %" PRIu32
                          " cannot fit in %zu bytes",
                          d->count, len);
    }
    d->off = KEEL__WS_COUNT_BYTES;
    return KEEL_OK;
}

int keel__ws_decode_next(keel__ws_decoder *d, keel__ws_op *op, keel_diag *diag)
{
    const uint8_t *p = d->p;
    size_t len = d->len;
    size_t o = d->off;
    if (d->index == d->count) {
        if (o != len) { /* WS5 */
            return keel__diag(diag, KEEL_ECORRUPT,
                              "payload offset %zu: %zu bytes after the last "
                              "op, expected none",
                              o, len - o);
        }
        return 0;
    }
    /* WS3, WC1 */
    if (len - o < KEEL__WS_OP_HEAD_BYTES) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset %zu: op header cut short (%zu bytes "
                          "left, expected at least %u)",
                          o, len - o, KEEL__WS_OP_HEAD_BYTES);
    }
    op->off = o;
    op->kind = p[o];
    if (op->kind != KEEL__STORE_PUT && op->kind != KEEL__STORE_DELETE) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset %zu: bad op kind %u, expected 1 "
                          "(put) or 2 (delete)",
                          o, op->kind);
    }
    op->key_len = keel__get_u32(p + o + 1);
    if (op->key_len == 0 || op->key_len > KEEL__STORE_MAX_KEY_BYTES) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset %zu: key length %" PRIu32
                          " outside 1..%u",
                          o + 1, op->key_len, KEEL__STORE_MAX_KEY_BYTES);
    }
    if (op->key_len > len - o - KEEL__WS_OP_HEAD_BYTES) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset %zu: key length %" PRIu32
                          " past end of payload (%zu bytes)",
                          o + 1, op->key_len, len);
    }
    op->key = p + o + KEEL__WS_OP_HEAD_BYTES;
    o += KEEL__WS_OP_HEAD_BYTES + op->key_len;
    op->val = NULL;
    op->val_len = 0;
    if (op->kind == KEEL__STORE_PUT) {
        if (len - o < KEEL__WS_VLEN_BYTES) {
            return keel__diag(diag, KEEL_ECORRUPT,
                              "payload offset %zu: value length cut short "
                              "(%zu bytes left, expected 4)",
                              o, len - o);
        }
        op->val_len = keel__get_u32(p + o);
        if (op->val_len > KEEL__STORE_MAX_VALUE_BYTES) {
            return keel__diag(diag, KEEL_ECORRUPT,
                              "payload offset %zu: value length %" PRIu32
                              " over the limit of %u",
                              o, op->val_len, KEEL__STORE_MAX_VALUE_BYTES);
        }
        if (op->val_len > len - o - KEEL__WS_VLEN_BYTES) {
            return keel__diag(diag, KEEL_ECORRUPT,
                              "payload offset %zu: value length %" PRIu32
                              " past end of payload (%zu bytes)",
                              o, op->val_len, len);
        }
        op->val = p + o + KEEL__WS_VLEN_BYTES;
        o += KEEL__WS_VLEN_BYTES + op->val_len;
    }
    if (d->index > 0 && keel__keycmp(d->prev_key, d->prev_len, op->key,
                                     op->key_len) >= 0) { /* WS4 */
        return keel__diag(diag, KEEL_ECORRUPT,
                          "payload offset %zu: key not after the previous "
                          "key (expected strictly ascending keys)",
                          op->off);
    }
    op->end = o;
    d->prev_key = op->key;
    d->prev_len = op->key_len;
    d->index++;
    d->off = o;
    return 1;
}

int keel__ws_validate(const void *payload, size_t len, uint32_t *count,
                      keel_diag *diag)
{
    keel__ws_decoder d;
    keel__ws_op op;
    int rc = keel__ws_decode_begin(&d, payload, len, diag);
    while (rc >= 0 && (rc = keel__ws_decode_next(&d, &op, diag)) == 1) {
    }
    if (rc == 0 && count != NULL) {
        *count = d.count;
    }
    return rc;
}

int keel__ws_decode_all(keel__ws_ops *ops, const void *payload, size_t len,
                        keel_diag *diag)
{
    keel__ws_decoder d;
    ops->n = 0;
    int rc = keel__ws_decode_begin(&d, payload, len, diag);
    if (rc == KEEL_OK && d.count > ops->cap) { /* WC4 */
        uint64_t cap = ops->cap > 0 ? ops->cap : 16;
        while (cap < d.count) {
            cap *= 2;
        }
        keel__ws_op *op = realloc(ops->op, (size_t)cap * sizeof(*op));
        if (op == NULL) {
            return keel__diag(
                diag, KEEL_ENOMEM,
                "write-set: out of memory decoding %" PRIu32 " ops", d.count);
        }
        ops->op = op;
        ops->cap = (uint32_t)cap;
    }
    while (rc >= 0 &&
           (rc = keel__ws_decode_next(&d, &ops->op[ops->n], diag)) == 1) {
        ops->n++;
    }
    if (rc < 0) {
        ops->n = 0;
    }
    return rc < 0 ? rc : KEEL_OK;
}

void keel__ws_ops_free(keel__ws_ops *ops)
{
    free(ops->op);
    ops->op = NULL;
    ops->n = 0;
    ops->cap = 0;
}
