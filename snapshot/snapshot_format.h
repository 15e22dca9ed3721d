/*
 * snapshot/snapshot_format.h — the on-disk layout of snapshot files, and the
 * encoders/decoders of their fixed-size parts. Everything little-endian;
 * nothing is ever written as a C struct. The writer and reader that use
 * them are in snapshot.c; the public API in keel/snapshot.h.
 *
 * A snapshot file, in file order:
 *
 *   +0                 header      24 bytes
 *   +24                frames      zero or more, back to back
 *   +manifest_off      manifest    manifest_len bytes of JSON
 *   +size-72           trailer     72 bytes, the last of the file
 *
 * The manifest comes after the frames (issue 6 lists it before them): its
 * per-table counts are known only once every entry has been written, and a
 * writer that streams in constant memory cannot hold the entries back or
 * rewrite the start of the file (zip's central directory and Parquet's
 * footer sit at the end for the same reason). The reader reads the header,
 * then the trailer and the manifest from the end, and validates all three
 * in open, before any frame.
 *
 * Header, 24 bytes, at offset 0. Its layout is frozen for every version, so
 * a newer file is recognised as newer (EVERSION), never as damage:
 *   +0   u32  magic      "KSNP" = 0x504E534B
 *   +4   u32  version    KEEL_SNAPSHOT_FORMAT (2; 1 is still read);
 *                        higher: KEEL_EVERSION
 *   +8   u64  reserved   0
 *   +16  u64  xxh3-64 of bytes [0, 16)
 *   Checked in order: magic, checksum, version (0 or reserved != 0:
 *   corrupt). The checksum precedes the version so that a flipped version
 *   bit reads as damage, not as a newer format.
 *
 * Frame: a 48-byte header, then stored_len bytes that are one zstd frame.
 *   +0   u32  magic      "KSFR" = 0x5246534B
 *   +4   u32  table      index into the manifest's "tables" array
 *   +8   u32  entries    entries in the frame, >= 1
 *   +12  u32  stored_len bytes of the zstd frame that follows, >= 1 and
 *                        <= ZSTD_compressBound(raw_len)
 *   +16  u32  raw_len    bytes it decompresses to: 8 * entries <= raw_len
 *                        <= KEEL__SNAPSHOT_MAX_FRAME_RAW_BYTES
 *   +20  u32  reserved   0
 *   +24  u64  stored_hash  xxh3-64 of the stored_len compressed bytes
 *   +32  u64  raw_hash     xxh3-64 of the raw_len decompressed bytes
 *   +40  u64  xxh3-64 of bytes [0, 40) of this header
 *   Both hashes: the compressed one is checked before zstd sees a byte (a
 *   damaged frame never reaches the decoder), the raw one after, so that
 *   no decoder or encoder fault can hand back bytes other than the ones
 *   written.
 *
 * Raw (decompressed) frame contents: `entries` entries back to back,
 * exactly filling raw_len, each
 *   +0   u32  key_len    1 .. KEEL_SNAPSHOT_MAX_KEY_BYTES
 *   +4   u32  value_len  0 .. KEEL_SNAPSHOT_MAX_VALUE_BYTES
 *   +8   key_len bytes, then value_len bytes
 *
 * Validity of the frame sequence (V1-V4 are checked by the reader before it
 * returns any entry of a frame):
 *   V1  a frame lies wholly in [24, manifest_off); the last one ends
 *       exactly at manifest_off.
 *   V2  table indices never decrease and are < the number of tables; a
 *       table with no entries has no frame.
 *   V3  within a table keys strictly ascend, across frames too (bytewise
 *       memcmp, a proper prefix first): no duplicates, and a restore can
 *       append in order.
 *   V4  no table holds more entries than its manifest count.
 *   V5  at the end: frame count equals the trailer's; each table's entries
 *       and key+value bytes equal the manifest's; the file checksum
 *       matches.
 *
 * Manifest, manifest_len bytes (2 .. KEEL__SNAPSHOT_MAX_MANIFEST_BYTES) of
 * one JSON object, UTF-8, written compact:
 *   {"format":2,"keel_version":"0.1.0","created_unix_ms":1700000000000,
 *    "kernel_id":"0x00000000000000ab","lsn":42,"crank":17,
 *    "activity_hash":"00000000000000cd","zstd_level":3,"frame_bytes":1048576,
 *    "timeline":"5c0ffee5c0ffee51","timeline_parent":"0000000000000000",
 *    "timeline_branch_lsn":40,
 *    "tables":[{"name":"data","entries":2,"bytes":57},
 *              {"name":"meta","entries":0,"bytes":0}]}
 *   timeline and timeline_parent are 16 lowercase hex digits and
 *   timeline_branch_lsn an integer 0 .. 2^63-1 (keel/snapshot.h's
 *   keel_snapshot_meta); format 1 has none of the three (read as 0).
 *   format equals the header's version; kernel_id is "0x" and 16
 *   lowercase hex digits, activity_hash 16 lowercase hex digits (the
 *   spellings of `keel status`); lsn, crank, created_unix_ms, entries and
 *   bytes are integers 0 .. 2^63-1; "bytes" counts key and value bytes
 *   (not the length prefixes); table names are 1..64 of [A-Za-z0-9._-],
 *   unique; at most KEEL_SNAPSHOT_MAX_TABLES tables. Members not listed
 *   here are ignored (room for additions that need no new version); the
 *   listed ones are required with exactly these types.
 *
 * Trailer, 72 bytes, the last of the file (at size - 72):
 *   +0   u32  magic          "KSNT" = 0x544E534B
 *   +4   u32  reserved       0
 *   +8   u64  manifest_off   >= 24; manifest_off + manifest_len == size - 72
 *   +16  u64  manifest_len
 *   +24  u64  frames         number of frames
 *   +32  u64  entries        entries in all tables (== sum of the manifest's)
 *   +40  u64  bytes          key+value bytes in all tables (== the sum too)
 *   +48  u64  manifest_hash  xxh3-64 of the manifest bytes
 *   +56  u64  file_hash      xxh3-64 of bytes [0, size - 16): everything
 *                            before this field
 *   +64  u64  xxh3-64 of bytes [0, 64) of this trailer
 *
 * So every byte of a file is under a checksum the reader verifies before
 * using it: header, trailer and manifest in open, a frame's header,
 * compressed and raw bytes before any of its entries is returned, and the
 * file checksum (which also catches frames reordered, dropped or swapped
 * with resealed ones) before next() reports the end.
 */
#ifndef KEEL_SNAPSHOT_FORMAT_H
#define KEEL_SNAPSHOT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/snapshot.h"

#define KEEL__SNAPSHOT_MAGIC              0x504E534Bu /* "KSNP" */
#define KEEL__SNAPSHOT_FRAME_MAGIC        0x5246534Bu /* "KSFR" */
#define KEEL__SNAPSHOT_TRAILER_MAGIC      0x544E534Bu /* "KSNT" */
#define KEEL__SNAPSHOT_HEADER_BYTES       24u
#define KEEL__SNAPSHOT_FRAME_HEADER_BYTES 48u
#define KEEL__SNAPSHOT_TRAILER_BYTES      72u
#define KEEL__SNAPSHOT_ENTRY_HEADER_BYTES 8u
/* Trailer bytes [0, 56) come before the file checksum. */
#define KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF 56u
#define KEEL__SNAPSHOT_MIN_MANIFEST_BYTES    2u /* "{}" */
#define KEEL__SNAPSHOT_MAX_MANIFEST_BYTES    (1u << 20)
/* A frame holds entries up to the writer's frame_bytes, or one larger
 * entry alone: the largest possible entry bounds every frame. */
#define KEEL__SNAPSHOT_MAX_FRAME_RAW_BYTES                             \
    (KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + KEEL_SNAPSHOT_MAX_KEY_BYTES + \
     KEEL_SNAPSHOT_MAX_VALUE_BYTES)
/* The smallest file: a header, the smallest manifest and a trailer. */
#define KEEL__SNAPSHOT_MIN_FILE_BYTES                                  \
    (KEEL__SNAPSHOT_HEADER_BYTES + KEEL__SNAPSHOT_MIN_MANIFEST_BYTES + \
     KEEL__SNAPSHOT_TRAILER_BYTES)

_Static_assert(KEEL__SNAPSHOT_HEADER_BYTES == 24, "header size");
_Static_assert(KEEL__SNAPSHOT_FRAME_HEADER_BYTES == 48, "frame header size");
_Static_assert(KEEL__SNAPSHOT_TRAILER_BYTES == 72, "trailer size");
_Static_assert(KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF + 16 ==
                   KEEL__SNAPSHOT_TRAILER_BYTES,
               "file hash and trailer hash end the trailer");
_Static_assert(KEEL__SNAPSHOT_MAX_FRAME_RAW_BYTES <= UINT32_MAX / 2,
               "raw_len and its zstd bound fit a u32");
_Static_assert(KEEL_SNAPSHOT_MAX_FRAME_BYTES <=
                   KEEL__SNAPSHOT_MAX_FRAME_RAW_BYTES,
               "a frame of frame_bytes fits the raw maximum");

typedef struct keel__snapshot_frame {
    uint32_t table;
    uint32_t entries;
    uint32_t stored_len;
    uint32_t raw_len;
    uint64_t stored_hash;
    uint64_t raw_hash;
} keel__snapshot_frame;

typedef struct keel__snapshot_trailer {
    uint64_t manifest_off;
    uint64_t manifest_len;
    uint64_t frames;
    uint64_t entries;
    uint64_t bytes;
    uint64_t manifest_hash;
    uint64_t file_hash; /* decode only: encode leaves +56 to _seal() */
} keel__snapshot_trailer;

/* xxh3-64, the one checksum of the format. */
uint64_t keel__snapshot_hash(const void *p, size_t len);

/* Encode a header of format `version` into out[24]. */
void keel__snapshot_header_encode(uint8_t *out, uint32_t version);
/*
 * Decode and validate a header from in[24] (rule above).
 * @return KEEL_OK, KEEL_ECORRUPT or KEEL_EVERSION; why says what, and
 *         *bad_off the offset of the offending field.
 */
int keel__snapshot_header_decode(const uint8_t *in, uint32_t *version,
                                 uint64_t *bad_off, char *why, size_t why_cap);

/* Encode a frame header, its own checksum included, into out[48]. */
void keel__snapshot_frame_encode(uint8_t *out, const keel__snapshot_frame *f);
/*
 * Decode and validate a frame header from in[48]: magic, checksum,
 * reserved, and the length rules above (lengths only, not the position).
 * @return KEEL_OK or KEEL_ECORRUPT (why filled).
 */
int keel__snapshot_frame_decode(const uint8_t *in, keel__snapshot_frame *f,
                                char *why, size_t why_cap);

/* Encode trailer bytes [0, 56) into out (the caller then computes the file
 * checksum over everything before +56 and calls _trailer_seal). */
void keel__snapshot_trailer_encode(uint8_t *out,
                                   const keel__snapshot_trailer *t);
/* Store file_hash at +56 and the trailer's own checksum at +64. */
void keel__snapshot_trailer_seal(uint8_t *out, uint64_t file_hash);
/*
 * Decode and validate a trailer from in[72] of a file of size bytes:
 * magic, checksum, reserved, manifest bounds, frames <= entries.
 * @return KEEL_OK or KEEL_ECORRUPT (why filled, *bad_off set).
 */
int keel__snapshot_trailer_decode(const uint8_t *in, uint64_t size,
                                  keel__snapshot_trailer *t, uint64_t *bad_off,
                                  char *why, size_t why_cap);

/*
 * zstd coding of frames lives in snapshot.c alone, so <zstd.h> stays in
 * snapshot/. *ctx is created on first use; free both with
 * keel__snapshot_zstd_free().
 */
/* The most bytes compressing len bytes can give. */
size_t keel__snapshot_compress_bound(size_t len);
/* Compress src into dst[cap] (cap >= the bound) as one zstd frame.
 * @return KEEL_OK (*out_len set), KEEL_ENOMEM. */
int keel__snapshot_compress(void **cctx, int level, const void *src, size_t len,
                            void *dst, size_t cap, size_t *out_len);
/* Decompress src, which must be exactly one zstd frame, into exactly
 * raw_len bytes. @return KEEL_OK, KEEL_ECORRUPT (why filled), KEEL_ENOMEM.
 */
int keel__snapshot_decompress(void **dctx, const void *src, size_t len,
                              void *dst, size_t raw_len, char *why,
                              size_t why_cap);
void keel__snapshot_zstd_free(void *cctx, void *dctx);

#endif
