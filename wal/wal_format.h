/*
 * wal/wal_format.h — the on-disk layout of WAL segments and records, and
 * the encoders/decoders of both. Everything little-endian; nothing is ever
 * written as a C struct.
 *
 * Segment file `<first-lsn>.seg` (first-lsn as 20 decimal digits):
 *
 *   Segment header, 40 bytes:
 *     +0   u32  magic      "KSEG" = 0x4745534B
 *     +4   u32  version    KEEL_WAL_FORMAT_VERSION (2); any other: EVERSION
 *     +8   u64  kernel_id  the kernel this log belongs to (never 0)
 *     +16  u64  first_lsn  LSN of the first record (equals the file name)
 *     +24  u64  salt       drawn with getrandom(2) when the log is created;
 *                          every segment of one log carries the same salt
 *                          (a segment with another is corruption)
 *     +32  u64  xxh3-64 of bytes [0, 32) (unseeded: it is read first)
 *
 *   then records back to back, from offset 40:
 *
 *   Record, 40 + stored_len bytes:
 *     +0   u32  magic      "KREC" = 0x4345524B
 *     +4   u8   kind       enum keel_wal_kind (1..4)
 *     +5   u8   flags      bit 0: payload is one zstd frame; others 0
 *     +6   u16  reserved   0
 *     +8   u64  lsn        previous record's LSN + 1 (first: first_lsn)
 *     +16  u64  crank      crank number (0 where none)
 *     +24  u32  stored_len bytes of payload on disk
 *     +28  u32  raw_len    payload bytes after decompression (== stored_len
 *                          when not compressed); <= KEEL_WAL_MAX_PAYLOAD_BYTES
 *     +32  u8   payload[stored_len]
 *     +32+stored_len  u64  xxh3-64, seeded with the segment's salt, of
 *                          bytes [0, 32 + stored_len)
 *
 * Why a salt (SQLite's WAL salts are the model): a vat chooses the bytes
 * of its vatstore values, which land verbatim in record payloads. With an
 * unseeded checksum a vat could store a complete, verifying record as a
 * value, and a crash in the middle of the record holding it would leave a
 * "valid record after the damage", turning a torn tail into corruption
 * that needs manual salvage. Without the salt a vat cannot compute the
 * checksum of the record it would forge. Version 1 logs (unsalted) are no
 * longer read.
 *
 * Validity of a record at offset `off` of a file of `size` bytes, in order:
 *   R1  size - off >= 40 (else: short header, "record header needs 40 bytes")
 *   R2  magic == KREC
 *   R3  stored_len <= KEEL_WAL_MAX_PAYLOAD_BYTES and raw_len too, and
 *       off + 40 + stored_len <= size ("length past end of file")
 *   R4  the xxh3 matches
 *   R5  kind in 1..4, flags & ~1 == 0, reserved == 0, (flags & 1) or
 *       raw_len == stored_len  — a record that fails R5 *with a good
 *       checksum* was written by a newer keel or damaged in a way the
 *       checksum cannot see: always corruption, never a torn tail
 *   R6  lsn == the expected LSN — with a good checksum, a wrong LSN is a gap
 *       (corruption, never a torn tail)
 *   R7  a compressed payload decompresses to exactly raw_len bytes
 *
 * Resynchronisation (the reader's RD2, torn tail or corruption): after a
 * damaged record at `off`, the reader looks for a later record that
 * verifies. When the damaged record's declared length is plausible
 * (keel__wal_rec_span()), a candidate inside [off, off + 40 + stored_len)
 * is never accepted: those bytes are the damaged record's own payload.
 */
#ifndef KEEL_WAL_FORMAT_H
#define KEEL_WAL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

#define KEEL_WAL_FORMAT_VERSION    2u
#define KEEL_WAL_SEG_MAGIC         0x4745534Bu /* "KSEG" */
#define KEEL_WAL_REC_MAGIC         0x4345524Bu /* "KREC" */
#define KEEL_WAL_SEG_HEADER_BYTES  40u
#define KEEL_WAL_REC_HEADER_BYTES  32u
#define KEEL_WAL_REC_TRAILER_BYTES 8u
#define KEEL_WAL_REC_OVERHEAD_BYTES \
    (KEEL_WAL_REC_HEADER_BYTES + KEEL_WAL_REC_TRAILER_BYTES)
#define KEEL_WAL_SEG_NAME_BYTES 25 /* 20 digits + ".seg" + NUL */

_Static_assert(KEEL_WAL_REC_OVERHEAD_BYTES == 40, "record overhead");
_Static_assert(KEEL_WAL_SEG_HEADER_BYTES == 40, "segment header size");

typedef struct keel_wal_seg_header {
    uint32_t version;
    uint64_t kernel_id;
    uint64_t first_lsn;
    uint64_t salt; /* seeds every record checksum of the log */
} keel_wal_seg_header;

typedef struct keel_wal_rec_header {
    uint8_t kind;
    uint8_t flags;
    uint64_t lsn;
    uint64_t crank;
    uint32_t stored_len;
    uint32_t raw_len;
} keel_wal_rec_header;

/* Encode a segment header into out[40]. */
void keel__wal_seg_encode(uint8_t *out, const keel_wal_seg_header *h);
/*
 * Decode and validate a segment header from in[40].
 * @return KEEL_OK, KEEL_ECORRUPT (bad magic, bad checksum, kernel id 0,
 *         first LSN 0) or KEEL_EVERSION; why is written to why.
 */
int keel__wal_seg_decode(const uint8_t *in, keel_wal_seg_header *h, char *why,
                         size_t why_cap);

/* Encode a record header into out[32] (the checksum is computed over it
 * and the payload with keel__wal_rec_checksum()). */
void keel__wal_rec_encode(uint8_t *out, const keel_wal_rec_header *h);
/* Decode a record header from in[32] without validating it. */
void keel__wal_rec_decode(const uint8_t *in, keel_wal_rec_header *h);
uint32_t keel__wal_rec_magic(const uint8_t *in);
/* xxh3-64 seeded with the log's salt over header[32] then payload[len]. */
uint64_t keel__wal_rec_checksum(uint64_t salt, const uint8_t *header,
                                const void *payload, size_t len);
/*
 * The resynchronisation floor after a damaged record at off of a file of
 * size bytes whose first `have` bytes from off are header (have may be
 * under 32): off + 40 + stored_len when the declared length is plausible,
 * else off + 1. Plausible: the whole header is there with the record
 * magic, stored_len within the maximum, R5 holds, its LSN is the one
 * expected, and either it is not compressed (R5 then ties stored_len to
 * raw_len, so one flipped bit cannot fake a length) or its declared end is
 * exactly the end of the file.
 */
uint64_t keel__wal_rec_span(const uint8_t *header, size_t have, uint64_t off,
                            uint64_t size, uint64_t expect_lsn);
/* R5 for a record whose checksum is good. @return 1 if sane. */
int keel__wal_rec_sane(const uint8_t *header, const keel_wal_rec_header *h,
                       char *why, size_t why_cap);

/* "%020llu.seg" into out[KEEL_WAL_SEG_NAME_BYTES]. */
void keel__wal_seg_name(char *out, uint64_t first_lsn);
/* Parse a segment file name. @return 1 and *lsn if it is one, else 0. */
int keel__wal_seg_parse_name(const char *name, uint64_t *lsn);

/*
 * zstd coding of payloads lives here alone, so <zstd.h> stays in one file.
 * *ctx is created on first use and freed with keel__wal_zstd_free().
 */
/* Compress src into *buf (grown as needed). @return KEEL_OK (*out_len set;
 * the caller keeps the result only when it is shorter) or KEEL_ENOMEM. */
int keel__wal_compress(void **cctx, int level, const void *src, size_t len,
                       uint8_t **buf, size_t *cap, size_t *out_len);
/* Decompress exactly raw_len bytes. @return KEEL_OK, KEEL_ECORRUPT (bad
 * frame or wrong size; why filled) or KEEL_ENOMEM. */
int keel__wal_decompress(void **dctx, const void *src, size_t len, void *dst,
                         size_t raw_len, char *why, size_t why_cap);
void keel__wal_zstd_free(void *cctx, void *dctx);

#endif
