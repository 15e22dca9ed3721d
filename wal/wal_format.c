/*
 * wal/wal_format.c — encoding and decoding of segment headers and records
 * (layout in wal_format.h), segment file names, and the zstd coding of
 * payloads. Pure functions: no I/O, no state beyond the zstd contexts the
 * caller owns.
 */
#include "wal/wal_format.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL /* the Debian header, inlined: xxh3 on the hot path */
#include <xxhash.h>
#include <zstd.h>

#include "common/diag.h"

void keel__wal_seg_encode(uint8_t *out, const keel_wal_seg_header *h)
{
    memset(out, 0, KEEL_WAL_SEG_HEADER_BYTES);
    keel__put_u32(out + 0, KEEL_WAL_SEG_MAGIC);
    keel__put_u32(out + 4, h->version);
    keel__put_u64(out + 8, h->kernel_id);
    keel__put_u64(out + 16, h->first_lsn);
    keel__put_u64(out + 24, h->salt);
    keel__put_u64(out + 32, XXH3_64bits(out, 32));
}

int keel__wal_seg_decode(const uint8_t *in, keel_wal_seg_header *h, char *why,
                         size_t why_cap)
{
    uint32_t magic = keel__get_u32(in);
    if (magic != KEEL_WAL_SEG_MAGIC) {
        snprintf(why, why_cap,
                 "bad segment header: magic 0x%08" PRIX32 ", expected 0x%08X",
                 magic, KEEL_WAL_SEG_MAGIC);
        return KEEL_ECORRUPT;
    }
    uint64_t stored = keel__get_u64(in + 32);
    uint64_t computed = XXH3_64bits(in, 32);
    if (stored != computed) {
        snprintf(why, why_cap,
                 "bad segment header: checksum 0x%016" PRIX64
                 ", computed 0x%016" PRIX64,
                 stored, computed);
        return KEEL_ECORRUPT;
    }
    h->version = keel__get_u32(in + 4);
    h->kernel_id = keel__get_u64(in + 8);
    h->first_lsn = keel__get_u64(in + 16);
    h->salt = keel__get_u64(in + 24);
    if (h->version != KEEL_WAL_FORMAT_VERSION) {
        snprintf(why, why_cap,
                 "unsupported format version %" PRIu32 ", expected %u",
                 h->version, KEEL_WAL_FORMAT_VERSION);
        return KEEL_EVERSION;
    }
    if (h->kernel_id == 0 || h->first_lsn == 0) {
        snprintf(why, why_cap,
                 "bad segment header: kernel id 0x%016" PRIX64
                 ", first LSN %" PRIu64 " (expected both nonzero)",
                 h->kernel_id, h->first_lsn);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__wal_rec_encode(uint8_t *out, const keel_wal_rec_header *h)
{
    keel__put_u32(out + 0, KEEL_WAL_REC_MAGIC);
    out[4] = h->kind;
    out[5] = h->flags;
    keel__put_u16(out + 6, 0);
    keel__put_u64(out + 8, h->lsn);
    keel__put_u64(out + 16, h->crank);
    keel__put_u32(out + 24, h->stored_len);
    keel__put_u32(out + 28, h->raw_len);
}

void keel__wal_rec_decode(const uint8_t *in, keel_wal_rec_header *h)
{
    h->kind = in[4];
    h->flags = in[5];
    h->lsn = keel__get_u64(in + 8);
    h->crank = keel__get_u64(in + 16);
    h->stored_len = keel__get_u32(in + 24);
    h->raw_len = keel__get_u32(in + 28);
}

uint32_t keel__wal_rec_magic(const uint8_t *in)
{
    return keel__get_u32(in);
}

uint64_t keel__wal_rec_checksum(uint64_t salt, const uint8_t *header,
                                const void *payload, size_t len)
{
    XXH3_state_t st;
    /* A stack state: the streaming API avoids copying header and payload
     * into one buffer just to hash them. */
    memset(&st, 0, sizeof(st)); /* quiets GCC about fields reset sets */
    XXH3_64bits_reset_withSeed(&st, salt);
    XXH3_64bits_update(&st, header, KEEL_WAL_REC_HEADER_BYTES);
    if (len > 0) {
        XXH3_64bits_update(&st, payload, len);
    }
    return XXH3_64bits_digest(&st);
}

int keel__wal_rec_sane(const uint8_t *header, const keel_wal_rec_header *h,
                       char *why, size_t why_cap)
{
    if (h->kind < KEEL_WAL_CRANK || h->kind > KEEL_WAL_CHECKPOINT) {
        snprintf(why, why_cap, "unknown record kind %u", h->kind);
        return 0;
    }
    if ((h->flags & ~KEEL_WAL_FLAG_ZSTD) != 0 ||
        keel__get_u16(header + 6) != 0) {
        snprintf(why, why_cap, "unknown record flags 0x%02X/0x%04X", h->flags,
                 keel__get_u16(header + 6));
        return 0;
    }
    if (h->raw_len > KEEL_WAL_MAX_PAYLOAD_BYTES ||
        (!(h->flags & KEEL_WAL_FLAG_ZSTD) && h->raw_len != h->stored_len)) {
        snprintf(why, why_cap,
                 "record raw length %" PRIu32 " invalid for stored length "
                 "%" PRIu32,
                 h->raw_len, h->stored_len);
        return 0;
    }
    return 1;
}

uint64_t keel__wal_rec_span(const uint8_t *header, size_t have, uint64_t off,
                            uint64_t size, uint64_t expect_lsn)
{
    keel_wal_rec_header h;
    char why[200];
    if (have < KEEL_WAL_REC_HEADER_BYTES ||
        keel__wal_rec_magic(header) != KEEL_WAL_REC_MAGIC) {
        return off + 1;
    }
    keel__wal_rec_decode(header, &h);
    uint64_t end = off + KEEL_WAL_REC_OVERHEAD_BYTES + (uint64_t)h.stored_len;
    if (h.stored_len > KEEL_WAL_MAX_PAYLOAD_BYTES || h.lsn != expect_lsn ||
        !keel__wal_rec_sane(header, &h, why, sizeof(why)) ||
        ((h.flags & KEEL_WAL_FLAG_ZSTD) && end != size)) {
        return off + 1;
    }
    return end;
}

void keel__wal_seg_name(char *out, uint64_t first_lsn)
{
    snprintf(out, KEEL_WAL_SEG_NAME_BYTES, "%020" PRIu64 ".seg", first_lsn);
}

int keel__wal_seg_parse_name(const char *name, uint64_t *lsn)
{
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return 0;
        }
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0;
        }
        v = v * 10 + d;
    }
    if (strcmp(name + 20, ".seg") != 0) {
        return 0;
    }
    *lsn = v;
    return 1;
}

int keel__wal_compress(void **cctx, int level, const void *src, size_t len,
                       uint8_t **buf, size_t *cap, size_t *out_len)
{
    if (*cctx == NULL) {
        *cctx = ZSTD_createCCtx();
        if (*cctx == NULL) {
            return KEEL_ENOMEM;
        }
    }
    size_t bound = ZSTD_compressBound(len);
    if (*cap < bound) {
        uint8_t *nb = realloc(*buf, bound);
        if (nb == NULL) {
            return KEEL_ENOMEM;
        }
        *buf = nb;
        *cap = bound;
    }
    size_t n = ZSTD_compressCCtx(*cctx, *buf, *cap, src, len, level);
    if (ZSTD_isError(n)) {
        /* Only allocation can fail with a bound-sized destination. */
        return KEEL_ENOMEM;
    }
    *out_len = n;
    return KEEL_OK;
}

int keel__wal_decompress(void **dctx, const void *src, size_t len, void *dst,
                         size_t raw_len, char *why, size_t why_cap)
{
    if (*dctx == NULL) {
        *dctx = ZSTD_createDCtx();
        if (*dctx == NULL) {
            return KEEL_ENOMEM;
        }
    }
    /* The frame's own declared size is untrusted: decode into exactly
     * raw_len bytes and insist on filling them. */
    size_t n = ZSTD_decompressDCtx(*dctx, dst, raw_len, src, len);
    if (ZSTD_isError(n)) {
        snprintf(why, why_cap, "zstd payload does not decode: %s",
                 ZSTD_getErrorName(n));
        return KEEL_ECORRUPT;
    }
    if (n != raw_len) {
        snprintf(why, why_cap,
                 "zstd payload decodes to %zu bytes, expected %zu", n, raw_len);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__wal_zstd_free(void *cctx, void *dctx)
{
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
}
