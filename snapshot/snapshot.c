/*
 * snapshot/snapshot.c — the snapshot writer and reader (API and calling
 * sequences: keel/snapshot.h), the encoders and decoders of the format's
 * fixed-size parts and the zstd coding of frames (byte layout and validity
 * rules V1-V5: snapshot_format.h). <zstd.h> is included here and nowhere
 * else in keel but wal/wal_format.c.
 *
 * Invariants:
 *   S1  The final name only ever holds a complete, synced snapshot. Bytes
 *       go to `<path>.tmp`, created with O_EXCL; finish() fdatasyncs it,
 *       closes it, renames it over `<path>`, then fsyncs the directory. The
 *       fsync precedes the rename because a rename can reach the disk
 *       before the data it names: renaming first could leave a power loss
 *       with a full-length name over missing bytes.
 *   S2  The writer removes only the `.tmp` it created itself, and only
 *       before the rename. A `.tmp` that exists at open is refused
 *       (KEEL_EEXIST), never reused or deleted: it may be another writer's.
 *   S3  After any failed write, fsync, close, rename or directory sync (or
 *       a frame that could not be compressed) the writer is FAILED: the
 *       call that saw it returns the error, every later call KEEL_EFAILED.
 *       An fsync is never retried: the page cache may already have dropped
 *       the data it failed to write. Refused arguments (bad key order,
 *       oversized entry, bad table name) and allocations that fail before
 *       anything is changed do not fail the writer.
 *   S4  Memory does not grow with the number of entries: the writer holds
 *       one raw frame (frame_bytes, or one larger entry), its compressed
 *       copy, the previous key and the table list (and with `background`
 *       the raw frame in flight); the reader one stored
 *       and one raw frame, the previous key, the manifest and table list.
 *   S5  The reader uses no byte before a checksum covering it verified:
 *       header, trailer and manifest in open; a frame's header, stored and
 *       raw bytes, and then every entry of the frame (bounds, V3 order, V4
 *       counts), before the first entry of the frame is returned; the file
 *       checksum and V5 before next() returns 0.
 *   S6  Reader failures are sticky: once next() returned an error or the
 *       end, every later call returns the same, with the same diag.
 *   S7  Every error names the file, the byte offset and what was expected;
 *       damage is KEEL_ECORRUPT (KEEL_EVERSION for a newer format), never
 *       an assert. Lengths read from the file are checked against the file
 *       size and the format's caps before anything is allocated or read.
 *
 *   S8  With `background`, at most one frame is in flight: the compressor
 *       thread owns the job buffer, the compressed buffer, the zstd
 *       context, the file offset and the file hash from hand-off until the
 *       caller collects the job (settle()), which every call that needs
 *       any of them, or that must report the job's failure, does first.
 *       Frames are written in order, as without it; a failed job makes
 *       the writer FAILED when collected (S3).
 *
 * Writer states (the function behind each transition):
 *   OPEN --add_table/put--> OPEN --finish (ok)--> DONE
 *   OPEN --I/O error (fail)--> FAILED --every call--> KEEL_EFAILED
 *   close: from DONE frees; from OPEN or FAILED removes the .tmp (S2)
 *
 * Reader states:
 *   READING --next: frame verified (load_frame)--> READING (entries)
 *   READING --next at the manifest: V5 + file checksum (end_of_frames)--> END
 *   READING --damage or I/O error (rfail)--> FAILED          (S6)
 */
#include "keel/snapshot.h"

#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#define XXH_INLINE_ALL /* the Debian header, inlined: xxh3 on every byte */
#include <xxhash.h>
#include <zstd.h>

#include "common/diag.h"
#include "common/io.h"
#include "snapshot/snapshot_format.h"

/* ---- format: fixed-size parts ------------------------------------------ */

uint64_t keel__snapshot_hash(const void *p, size_t len)
{
    return XXH3_64bits(p, len);
}

void keel__snapshot_header_encode(uint8_t *out, uint32_t version)
{
    keel__put_u32(out + 0, KEEL__SNAPSHOT_MAGIC);
    keel__put_u32(out + 4, version);
    keel__put_u64(out + 8, 0);
    keel__put_u64(out + 16, XXH3_64bits(out, 16));
}

int keel__snapshot_header_decode(const uint8_t *in, uint32_t *version,
                                 uint64_t *bad_off, char *why, size_t why_cap)
{
    uint32_t magic = keel__get_u32(in);
    if (magic != KEEL__SNAPSHOT_MAGIC) {
        *bad_off = 0;
        snprintf(why, why_cap,
                 "bad magic 0x%08" PRIX32 ", expected 0x%08X: not a keel "
                 "snapshot",
                 magic, KEEL__SNAPSHOT_MAGIC);
        return KEEL_ECORRUPT;
    }
    uint64_t stored = keel__get_u64(in + 16);
    uint64_t computed = XXH3_64bits(in, 16);
    if (stored != computed) {
        *bad_off = 16;
        snprintf(why, why_cap,
                 "header checksum 0x%016" PRIX64 ", computed 0x%016" PRIX64,
                 stored, computed);
        return KEEL_ECORRUPT;
    }
    *version = keel__get_u32(in + 4);
    if (*version > KEEL_SNAPSHOT_FORMAT) {
        *bad_off = 4;
        snprintf(why, why_cap,
                 "unsupported format version %" PRIu32
                 ", this keel reads up to %u",
                 *version, KEEL_SNAPSHOT_FORMAT);
        return KEEL_EVERSION;
    }
    if (*version == 0 || keel__get_u64(in + 8) != 0) {
        *bad_off = *version == 0 ? 4 : 8;
        snprintf(why, why_cap,
                 "bad header: format version %" PRIu32
                 ", reserved 0x%016" PRIX64 " (expected 1.., 0)",
                 *version, keel__get_u64(in + 8));
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__snapshot_frame_encode(uint8_t *out, const keel__snapshot_frame *f)
{
    keel__put_u32(out + 0, KEEL__SNAPSHOT_FRAME_MAGIC);
    keel__put_u32(out + 4, f->table);
    keel__put_u32(out + 8, f->entries);
    keel__put_u32(out + 12, f->stored_len);
    keel__put_u32(out + 16, f->raw_len);
    keel__put_u32(out + 20, 0);
    keel__put_u64(out + 24, f->stored_hash);
    keel__put_u64(out + 32, f->raw_hash);
    keel__put_u64(out + 40, XXH3_64bits(out, 40));
}

int keel__snapshot_frame_decode(const uint8_t *in, keel__snapshot_frame *f,
                                char *why, size_t why_cap)
{
    uint32_t magic = keel__get_u32(in);
    if (magic != KEEL__SNAPSHOT_FRAME_MAGIC) {
        snprintf(why, why_cap,
                 "bad frame magic 0x%08" PRIX32 ", expected 0x%08X", magic,
                 KEEL__SNAPSHOT_FRAME_MAGIC);
        return KEEL_ECORRUPT;
    }
    uint64_t stored = keel__get_u64(in + 40);
    uint64_t computed = XXH3_64bits(in, 40);
    if (stored != computed) {
        snprintf(why, why_cap,
                 "frame header checksum 0x%016" PRIX64
                 ", computed 0x%016" PRIX64,
                 stored, computed);
        return KEEL_ECORRUPT;
    }
    f->table = keel__get_u32(in + 4);
    f->entries = keel__get_u32(in + 8);
    f->stored_len = keel__get_u32(in + 12);
    f->raw_len = keel__get_u32(in + 16);
    f->stored_hash = keel__get_u64(in + 24);
    f->raw_hash = keel__get_u64(in + 32);
    if (keel__get_u32(in + 20) != 0) {
        snprintf(why, why_cap,
                 "reserved frame header bytes 0x%08" PRIX32 ", expected 0",
                 keel__get_u32(in + 20));
        return KEEL_ECORRUPT;
    }
    if (f->entries == 0 || f->raw_len > KEEL__SNAPSHOT_MAX_FRAME_RAW_BYTES ||
        f->entries > f->raw_len / KEEL__SNAPSHOT_ENTRY_HEADER_BYTES) {
        snprintf(why, why_cap,
                 "frame of %" PRIu32 " entries in %" PRIu32
                 " raw bytes (expected 1.. entries of 8.. bytes each, at "
                 "most %u bytes)",
                 f->entries, f->raw_len, KEEL__SNAPSHOT_MAX_FRAME_RAW_BYTES);
        return KEEL_ECORRUPT;
    }
    size_t bound = ZSTD_compressBound(f->raw_len);
    if (f->stored_len == 0 || f->stored_len > bound) {
        snprintf(why, why_cap,
                 "frame stored length %" PRIu32 " for raw length %" PRIu32
                 " (expected 1 .. %zu)",
                 f->stored_len, f->raw_len, bound);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__snapshot_trailer_encode(uint8_t *out,
                                   const keel__snapshot_trailer *t)
{
    keel__put_u32(out + 0, KEEL__SNAPSHOT_TRAILER_MAGIC);
    keel__put_u32(out + 4, 0);
    keel__put_u64(out + 8, t->manifest_off);
    keel__put_u64(out + 16, t->manifest_len);
    keel__put_u64(out + 24, t->frames);
    keel__put_u64(out + 32, t->entries);
    keel__put_u64(out + 40, t->bytes);
    keel__put_u64(out + 48, t->manifest_hash);
}

void keel__snapshot_trailer_seal(uint8_t *out, uint64_t file_hash)
{
    keel__put_u64(out + KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF, file_hash);
    keel__put_u64(out + 64, XXH3_64bits(out, 64));
}

int keel__snapshot_trailer_decode(const uint8_t *in, uint64_t size,
                                  keel__snapshot_trailer *t, uint64_t *bad_off,
                                  char *why, size_t why_cap)
{
    uint64_t at = size - KEEL__SNAPSHOT_TRAILER_BYTES;
    uint32_t magic = keel__get_u32(in);
    if (magic != KEEL__SNAPSHOT_TRAILER_MAGIC) {
        *bad_off = at;
        snprintf(why, why_cap,
                 "bad trailer magic 0x%08" PRIX32 ", expected 0x%08X: the "
                 "file is truncated, has bytes appended, or is not a "
                 "complete snapshot",
                 magic, KEEL__SNAPSHOT_TRAILER_MAGIC);
        return KEEL_ECORRUPT;
    }
    uint64_t stored = keel__get_u64(in + 64);
    uint64_t computed = XXH3_64bits(in, 64);
    if (stored != computed) {
        *bad_off = at + 64;
        snprintf(why, why_cap,
                 "trailer checksum 0x%016" PRIX64 ", computed 0x%016" PRIX64,
                 stored, computed);
        return KEEL_ECORRUPT;
    }
    t->manifest_off = keel__get_u64(in + 8);
    t->manifest_len = keel__get_u64(in + 16);
    t->frames = keel__get_u64(in + 24);
    t->entries = keel__get_u64(in + 32);
    t->bytes = keel__get_u64(in + 40);
    t->manifest_hash = keel__get_u64(in + 48);
    t->file_hash = keel__get_u64(in + KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF);
    if (keel__get_u32(in + 4) != 0) {
        *bad_off = at + 4;
        snprintf(why, why_cap,
                 "reserved trailer bytes 0x%08" PRIX32 ", expected 0",
                 keel__get_u32(in + 4));
        return KEEL_ECORRUPT;
    }
    if (t->manifest_len < KEEL__SNAPSHOT_MIN_MANIFEST_BYTES ||
        t->manifest_len > KEEL__SNAPSHOT_MAX_MANIFEST_BYTES ||
        t->manifest_off < KEEL__SNAPSHOT_HEADER_BYTES || t->manifest_off > at ||
        at - t->manifest_off != t->manifest_len) {
        *bad_off = at + 8;
        snprintf(
            why, why_cap,
            "manifest at offset %" PRIu64 ", %" PRIu64
            " bytes (expected %u .. %u bytes, from offset %u or later, "
            "ending at the trailer at offset %" PRIu64 ")",
            t->manifest_off, t->manifest_len, KEEL__SNAPSHOT_MIN_MANIFEST_BYTES,
            KEEL__SNAPSHOT_MAX_MANIFEST_BYTES, KEEL__SNAPSHOT_HEADER_BYTES, at);
        return KEEL_ECORRUPT;
    }
    /* Each frame takes a header and at least one stored byte, and holds at
     * least one entry: counts that cannot fit are damage. */
    uint64_t room = t->manifest_off - KEEL__SNAPSHOT_HEADER_BYTES;
    if (t->frames > t->entries ||
        t->frames > room / (KEEL__SNAPSHOT_FRAME_HEADER_BYTES + 1) ||
        (t->entries > 0 && t->frames == 0)) {
        *bad_off = at + 24;
        snprintf(why, why_cap,
                 "trailer counts %" PRIu64 " frames for %" PRIu64
                 " entries in %" PRIu64 " bytes of frames",
                 t->frames, t->entries, room);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

/* ---- format: zstd ------------------------------------------------------- */

size_t keel__snapshot_compress_bound(size_t len)
{
    return ZSTD_compressBound(len);
}

int keel__snapshot_compress(void **cctx, int level, const void *src, size_t len,
                            void *dst, size_t cap, size_t *out_len)
{
    if (*cctx == NULL) {
        *cctx = ZSTD_createCCtx();
        if (*cctx == NULL) {
            return KEEL_ENOMEM;
        }
    }
    /* One-shot: the frame header records the content size, which the
     * reader checks against raw_len before decoding. */
    size_t n = ZSTD_compressCCtx(*cctx, dst, cap, src, len, level);
    if (ZSTD_isError(n)) {
        /* Only allocation can fail with a bound-sized destination. */
        return KEEL_ENOMEM;
    }
    *out_len = n;
    return KEEL_OK;
}

int keel__snapshot_decompress(void **dctx, const void *src, size_t len,
                              void *dst, size_t raw_len, char *why,
                              size_t why_cap)
{
    if (*dctx == NULL) {
        *dctx = ZSTD_createDCtx();
        if (*dctx == NULL) {
            return KEEL_ENOMEM;
        }
    }
    /* Exactly one frame: ZSTD_decompressDCtx would also decode frames
     * concatenated after the first, which the format does not allow. */
    size_t fsize = ZSTD_findFrameCompressedSize(src, len);
    if (ZSTD_isError(fsize)) {
        snprintf(why, why_cap, "zstd frame does not parse: %s",
                 ZSTD_getErrorName(fsize));
        return KEEL_ECORRUPT;
    }
    if (fsize != len) {
        snprintf(why, why_cap,
                 "zstd frame is %zu of the %zu stored bytes (expected "
                 "exactly one frame)",
                 fsize, len);
        return KEEL_ECORRUPT;
    }
    unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN ||
        declared == ZSTD_CONTENTSIZE_ERROR) {
        snprintf(why, why_cap,
                 "zstd frame declares no content size, expected %zu", raw_len);
        return KEEL_ECORRUPT;
    }
    if (declared != raw_len) {
        snprintf(why, why_cap,
                 "zstd frame declares %llu content bytes, expected %zu",
                 declared, raw_len);
        return KEEL_ECORRUPT;
    }
    size_t n = ZSTD_decompressDCtx(*dctx, dst, raw_len, src, len);
    if (ZSTD_isError(n)) {
        snprintf(why, why_cap, "zstd frame does not decode: %s",
                 ZSTD_getErrorName(n));
        return KEEL_ECORRUPT;
    }
    if (n != raw_len) {
        snprintf(why, why_cap, "zstd frame decodes to %zu bytes, expected %zu",
                 n, raw_len);
        return KEEL_ECORRUPT;
    }
    return KEEL_OK;
}

void keel__snapshot_zstd_free(void *cctx, void *dctx)
{
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
}

/* ---- shared helpers ----------------------------------------------------- */

/* Bytewise order, a proper prefix first (V3). */
static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return (alen > blen) - (alen < blen);
}

static int valid_table_name(const char *s, size_t len)
{
    if (len == 0 || len > KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Grow *buf to hold at least need bytes. @return KEEL_OK or KEEL_ENOMEM
 * (then *buf is unchanged). */
static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (*cap >= need) {
        return KEEL_OK;
    }
    uint8_t *n = realloc(*buf, need);
    if (n == NULL) {
        return KEEL_ENOMEM;
    }
    *buf = n;
    *cap = need;
    return KEEL_OK;
}

void keel_snapshot_options_init(keel_snapshot_options *o)
{
    memset(o, 0, sizeof(*o));
    o->level = KEEL_SNAPSHOT_DEFAULT_LEVEL;
    o->frame_bytes = KEEL_SNAPSHOT_DEFAULT_FRAME_BYTES;
    o->background = sysconf(_SC_NPROCESSORS_ONLN) > 1;
}

/* ---- writer ------------------------------------------------------------- */

/* No byte offset to report (fsync, rename, ...). */
#define NO_OFF UINT64_MAX

struct keel_snapshot_writer {
    keel_io *io;
    keel_snapshot_options o;
    keel_snapshot_meta meta;
    char *path;
    char *tmp; /* path + ".tmp" */
    char *dir; /* fsync'd after the rename */
    int fd;
    int created; /* S2: tmp is ours and exists */
    int renamed;
    int done;
    int failed; /* S3: 0 or the original error */
    int failed_reported;
    keel_diag fail_diag;

    uint64_t off;     /* bytes written to tmp */
    XXH3_state_t *fh; /* file checksum over bytes [0, off) */
    keel_snapshot_table *tables;
    uint32_t ntables;
    uint32_t tables_cap;
    uint64_t frames;
    uint64_t entries;
    uint64_t bytes;

    uint8_t *raw; /* the frame being filled (S4) */
    size_t raw_len;
    size_t raw_cap;
    uint32_t frame_entries;
    uint8_t *cbuf; /* frame header + compressed bytes; cap >= 48 + bound */
    size_t cbuf_cap;
    uint8_t *prev; /* the current table's last key (V3) */
    size_t prev_len;
    size_t prev_cap;
    void *cctx;

    /* background compression (S8) */
    int bg; /* the compressor thread runs */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;    /* a job was handed off and not yet collected */
    int running; /* ... and the thread has not finished it */
    int stop;
    uint8_t *jraw; /* the job's raw frame */
    size_t jraw_cap;
    size_t jlen;
    uint32_t jtable;
    uint32_t jentries;
    int jrc; /* its result, and what failed where */
    const char *jwhat;
    uint64_t jat;
};

/* What a call returns once the writer is FAILED (S3). */
static int failure(keel_snapshot_writer *w, keel_diag *diag)
{
    if (!w->failed_reported) {
        w->failed_reported = 1;
        if (diag != NULL) {
            *diag = w->fail_diag;
        }
        return w->failed;
    }
    return keel__diag(diag, KEEL_EFAILED,
                      "snapshot writer failed earlier (%s); close it and "
                      "write the snapshot again",
                      w->fail_diag.msg);
}

/* S3: the writer fails with rc; `what` failed on file `name` (at byte off
 * unless NO_OFF). */
static int fail(keel_snapshot_writer *w, keel_diag *diag, int rc,
                const char *name, uint64_t off, const char *what)
{
    KEEL_ASSERT(w->failed == 0 && rc < 0);
    w->failed = rc;
    if (off != NO_OFF) {
        keel__diag(&w->fail_diag, rc, "%s: offset %" PRIu64 ": %s: %s", name,
                   off, what, keel_strerror(rc));
    } else {
        keel__diag(&w->fail_diag, rc, "%s: %s: %s", name, what,
                   keel_strerror(rc));
    }
    return failure(w, diag);
}

/* Refuse calls on a failed or finished writer. */
static int usable(keel_snapshot_writer *w, keel_diag *diag)
{
    if (w->failed) {
        return failure(w, diag);
    }
    if (w->done) {
        return keel__diag(diag, KEEL_EINVAL, "%s: snapshot already finished",
                          w->path);
    }
    return KEEL_OK;
}

#ifdef KEEL_DEBUG
/* S1-S4 on the writer's state: names, buffers, counts. */
static int writer_invariants_ok(const keel_snapshot_writer *w)
{
    uint64_t entries = 0, bytes = 0;
    for (uint32_t i = 0; i < w->ntables; i++) {
        entries += w->tables[i].entries;
        bytes += w->tables[i].bytes;
    }
    const keel_snapshot_table *cur =
        w->ntables > 0 ? &w->tables[w->ntables - 1] : NULL;
    return w->created && w->off >= KEEL__SNAPSHOT_HEADER_BYTES &&
           (!w->renamed || w->fd < 0) && (!w->done || w->renamed) &&
           w->failed <= 0 && entries == w->entries && bytes == w->bytes &&
           w->raw_len <= w->raw_cap &&
           w->cbuf_cap >= KEEL__SNAPSHOT_FRAME_HEADER_BYTES +
                              ZSTD_compressBound(w->raw_cap) &&
           (w->raw_len == 0) == (w->frame_entries == 0) &&
           (w->raw_len <= w->o.frame_bytes || w->frame_entries == 1) &&
           w->frames <= w->entries && w->prev_len <= w->prev_cap &&
           (cur == NULL || (w->prev_len > 0) == (cur->entries > 0));
}
#endif

/*
 * Compress raw[0, len) (entries of table `table`) and write it as a frame
 * at w->off. @return KEEL_OK, or the error with *what and *at saying what
 * failed where (the caller fails the writer).
 */
static int write_frame(keel_snapshot_writer *w, const uint8_t *raw, size_t len,
                       uint32_t table, uint32_t entries, const char **what,
                       uint64_t *at)
{
    uint8_t *payload = w->cbuf + KEEL__SNAPSHOT_FRAME_HEADER_BYTES;
    size_t stored = 0;
    *at = w->off;
    *what = "compress frame";
    int rc = keel__snapshot_compress(
        &w->cctx, w->o.level, raw, len, payload,
        w->cbuf_cap - KEEL__SNAPSHOT_FRAME_HEADER_BYTES, &stored);
    if (rc < 0) {
        return rc;
    }
    keel__snapshot_frame f = {
        .table = table,
        .entries = entries,
        .stored_len = (uint32_t)stored,
        .raw_len = (uint32_t)len,
        .stored_hash = XXH3_64bits(payload, stored),
        .raw_hash = XXH3_64bits(raw, len),
    };
    keel__snapshot_frame_encode(w->cbuf, &f);
    size_t n = KEEL__SNAPSHOT_FRAME_HEADER_BYTES + stored;
    *what = "write frame";
    rc = w->io->pwrite(w->io, w->fd, w->cbuf, n, w->off);
    if (rc < 0) {
        return rc;
    }
    XXH3_64bits_update(w->fh, w->cbuf, n);
    w->off += n;
    w->frames++;
    return KEEL_OK;
}

/* The compressor thread: one job at a time (S8). */
static void *compressor(void *arg)
{
    keel_snapshot_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->running && !w->stop) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        if (!w->running) {
            break;
        }
        pthread_mutex_unlock(&w->mu);
        const char *what = NULL;
        uint64_t at = 0;
        int rc = write_frame(w, w->jraw, w->jlen, w->jtable, w->jentries, &what,
                             &at);
        pthread_mutex_lock(&w->mu);
        w->jrc = rc;
        w->jwhat = what;
        w->jat = at;
        w->running = 0;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Wait for the frame in flight and report its failure (S8, S3). */
static int settle(keel_snapshot_writer *w, keel_diag *diag)
{
    if (!w->busy) {
        return KEEL_OK;
    }
    pthread_mutex_lock(&w->mu);
    while (w->running) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    w->busy = 0;
    if (w->jrc < 0) {
        return fail(w, diag, w->jrc, w->tmp, w->jat, w->jwhat);
    }
    return KEEL_OK;
}

/* Compress the filled frame and write it at w->off, or hand it to the
 * compressor thread. Failure is sticky. */
static int flush_frame(keel_snapshot_writer *w, keel_diag *diag)
{
    KEEL_ASSERT(w->raw_len > 0 && w->ntables > 0);
    int rc = KEEL_OK;
    if (!w->bg) {
        const char *what = NULL;
        uint64_t at = 0;
        rc = write_frame(w, w->raw, w->raw_len, w->ntables - 1,
                         w->frame_entries, &what, &at);
        if (rc < 0) {
            return fail(w, diag, rc, w->tmp, at, what);
        }
    } else {
        rc = settle(w, diag);
        if (rc < 0) {
            return rc;
        }
        /* Swap buffers: the thread takes this frame, the caller fills the
         * one the thread is done with. */
        uint8_t *p = w->jraw;
        size_t cap = w->jraw_cap;
        w->jraw = w->raw;
        w->jraw_cap = w->raw_cap;
        w->raw = p;
        w->raw_cap = cap;
        w->jlen = w->raw_len;
        w->jtable = w->ntables - 1;
        w->jentries = w->frame_entries;
        pthread_mutex_lock(&w->mu);
        w->busy = 1;
        w->running = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    w->raw_len = 0;
    w->frame_entries = 0;
    return KEEL_OK;
}

/* Room for a raw frame of need bytes and its compressed copy (in both raw
 * buffers with `background`: they swap). The compressed buffer grows
 * first, so that a failure leaves cbuf_cap >= 48 + bound(raw_cap) true.
 * Buffers the compressor thread uses are grown only once it is done
 * (settle(): its failure, if any, is reported here). */
static int reserve_frame(keel_snapshot_writer *w, size_t need, keel_diag *diag)
{
    size_t cneed = KEEL__SNAPSHOT_FRAME_HEADER_BYTES + ZSTD_compressBound(need);
    int rc = KEEL_OK;
    if (need <= w->raw_cap && (!w->bg || need <= w->jraw_cap)) {
        return KEEL_OK;
    }
    if (w->bg && (rc = settle(w, diag)) < 0) {
        return rc;
    }
    if (reserve(&w->cbuf, &w->cbuf_cap, cneed) < 0 ||
        reserve(&w->raw, &w->raw_cap, need) < 0 ||
        (w->bg && reserve(&w->jraw, &w->jraw_cap, need) < 0)) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", w->path);
    }
    return rc;
}

/* Start the compressor thread; without one the writer works alone. */
static void start_background(keel_snapshot_writer *w)
{
    if (!w->o.background || pthread_mutex_init(&w->mu, NULL) != 0) {
        return;
    }
    if (pthread_cond_init(&w->cv, NULL) != 0) {
        pthread_mutex_destroy(&w->mu);
        return;
    }
    w->bg = 1;
    if (reserve(&w->jraw, &w->jraw_cap, w->raw_cap) < 0 ||
        pthread_create(&w->thread, NULL, compressor, w) != 0) {
        w->bg = 0;
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
}

int keel_snapshot_writer_open(const char *path,
                              const keel_snapshot_options *opts,
                              const keel_snapshot_meta *meta,
                              keel_snapshot_writer **out, keel_diag *diag)
{
    int rc = KEEL_OK;
    keel_snapshot_writer *w = NULL;
    KEEL_ASSERT(path != NULL && meta != NULL && out != NULL);
    *out = NULL;
    keel_snapshot_options o;
    if (opts != NULL) {
        o = *opts;
    } else {
        keel_snapshot_options_init(&o);
    }
    if (o.level < ZSTD_minCLevel() || o.level > ZSTD_maxCLevel() ||
        o.frame_bytes == 0 || o.frame_bytes > KEEL_SNAPSHOT_MAX_FRAME_BYTES) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: zstd level %d (expected %d .. %d) or frame "
                        "bytes %" PRIu32 " (expected 1 .. %u) out of range",
                        path, o.level, ZSTD_minCLevel(), ZSTD_maxCLevel(),
                        o.frame_bytes, KEEL_SNAPSHOT_MAX_FRAME_BYTES);
        goto out;
    }
    if (meta->lsn > INT64_MAX || meta->crank > INT64_MAX ||
        meta->created_unix_ms > INT64_MAX ||
        meta->timeline_branch_lsn > INT64_MAX) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: LSN, crank, branch LSN or creation time over "
                        "2^63-1 (the manifest's JSON integers)",
                        path);
        goto out;
    }
    if (o.format == 0) {
        o.format = KEEL_SNAPSHOT_FORMAT;
    }
    if (o.format > KEEL_SNAPSHOT_FORMAT ||
        (o.format == 1 && (meta->timeline != 0 || meta->timeline_parent != 0 ||
                           meta->timeline_branch_lsn != 0))) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: format %" PRIu32 " (expected 1 .. %u; format 1 "
                        "holds no timeline: timeline fields must be 0)",
                        path, o.format, KEEL_SNAPSHOT_FORMAT);
        goto out;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    w->fd = -1;
    w->io = o.io != NULL ? o.io : keel__io_posix();
    w->o = o;
    w->meta = *meta;
    if (w->meta.created_unix_ms == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        w->meta.created_unix_ms =
            (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    }
    size_t plen = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(plen + sizeof(".tmp"));
    w->dir = keel__path_dir(path);
    w->fh = XXH3_createState();
    if (w->path == NULL || w->tmp == NULL || w->dir == NULL || w->fh == NULL ||
        reserve_frame(w, o.frame_bytes, NULL) < 0) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    start_background(w);
    memcpy(w->tmp, path, plen);
    memcpy(w->tmp + plen, ".tmp", sizeof(".tmp"));
    XXH3_64bits_reset(w->fh);

    rc = w->io->open(w->io, w->tmp, O_WRONLY | O_CREAT | O_EXCL, 0644, &w->fd);
    if (rc == KEEL_EEXIST) { /* S2 */
        rc = keel__diag(diag, rc,
                        "%s: exists: another snapshot writer is running, or "
                        "one crashed; remove it once none runs",
                        w->tmp);
        goto out;
    }
    if (rc < 0) {
        rc = keel__diag(diag, rc, "%s: create: %s", w->tmp, keel_strerror(rc));
        goto out;
    }
    w->created = 1;
    uint8_t hdr[KEEL__SNAPSHOT_HEADER_BYTES];
    keel__snapshot_header_encode(hdr, w->o.format);
    rc = w->io->pwrite(w->io, w->fd, hdr, sizeof(hdr), 0);
    if (rc < 0) {
        rc = keel__diag(diag, rc, "%s: offset 0: write header: %s", w->tmp,
                        keel_strerror(rc));
        goto out;
    }
    XXH3_64bits_update(w->fh, hdr, sizeof(hdr));
    w->off = sizeof(hdr);
out:
    if (rc < 0) {
        keel_snapshot_writer_close(w); /* removes the .tmp it created */
        w = NULL;
    }
    *out = w;
    return rc;
}

int keel_snapshot_writer_add_table(keel_snapshot_writer *w, const char *name,
                                   keel_diag *diag)
{
    int rc = usable(w, diag);
    if (rc < 0) {
        goto out;
    }
    size_t len = strlen(name);
    if (!valid_table_name(name, len)) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: table name \"%.80s\" invalid (expected 1..%u "
                        "of A-Z a-z 0-9 . _ -)",
                        w->path, name, KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES);
        goto out;
    }
    if (w->ntables == KEEL_SNAPSHOT_MAX_TABLES) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: more than %u tables", w->path,
                        KEEL_SNAPSHOT_MAX_TABLES);
        goto out;
    }
    for (uint32_t i = 0; i < w->ntables; i++) {
        if (strcmp(w->tables[i].name, name) == 0) {
            rc = keel__diag(diag, KEEL_EINVAL, "%s: table \"%s\" added twice",
                            w->path, name);
            goto out;
        }
    }
    if (w->ntables == w->tables_cap) {
        uint32_t ncap = w->tables_cap ? 2 * w->tables_cap : 8;
        keel_snapshot_table *n = realloc(w->tables, ncap * sizeof(*n));
        if (n == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", w->path);
            goto out;
        }
        w->tables = n;
        w->tables_cap = ncap;
    }
    /* A frame holds one table's entries only. */
    if (w->raw_len > 0) {
        rc = flush_frame(w, diag);
        if (rc < 0) {
            goto out;
        }
    }
    keel_snapshot_table *t = &w->tables[w->ntables++];
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, len);
    w->prev_len = 0;
#ifdef KEEL_DEBUG
    KEEL_ASSERT(w->busy || writer_invariants_ok(w)); /* S8 */
#endif
out:
    return rc;
}

int keel_snapshot_writer_put(keel_snapshot_writer *w, const void *key,
                             size_t key_len, const void *value,
                             size_t value_len, keel_diag *diag)
{
    int rc = usable(w, diag);
    if (rc < 0) {
        goto out;
    }
    if (w->ntables == 0) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: put before any table", w->path);
        goto out;
    }
    keel_snapshot_table *t = &w->tables[w->ntables - 1];
    if (key_len == 0) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: table \"%s\": empty key",
                        w->path, t->name);
        goto out;
    }
    if (key_len > KEEL_SNAPSHOT_MAX_KEY_BYTES ||
        value_len > KEEL_SNAPSHOT_MAX_VALUE_BYTES) {
        rc = keel__diag(diag, KEEL_ETOOBIG,
                        "%s: table \"%s\": key of %zu bytes, value of %zu "
                        "(at most %u and %u)",
                        w->path, t->name, key_len, value_len,
                        KEEL_SNAPSHOT_MAX_KEY_BYTES,
                        KEEL_SNAPSHOT_MAX_VALUE_BYTES);
        goto out;
    }
    /* V3: prev_len 0 means no key yet in this table (keys are not empty). */
    if (w->prev_len > 0 && key_cmp(key, key_len, w->prev, w->prev_len) <= 0) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: table \"%s\": key %" PRIu64
                        " is not above the previous key (keys must strictly "
                        "ascend)",
                        w->path, t->name, t->entries);
        goto out;
    }
    size_t entry = KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + key_len + value_len;
    int flush = w->raw_len > 0 && w->raw_len + entry > w->o.frame_bytes;
    /* Allocate before anything changes, so ENOMEM refuses only this entry
     * (S3). */
    if (reserve(&w->prev, &w->prev_cap, key_len) < 0) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", w->path);
        goto out;
    }
    rc = reserve_frame(w, flush ? entry : w->raw_len + entry, diag);
    if (rc < 0) {
        goto out;
    }
    if (flush) {
        rc = flush_frame(w, diag);
        if (rc < 0) {
            goto out;
        }
    }
    uint8_t *p = w->raw + w->raw_len;
    keel__put_u32(p, (uint32_t)key_len);
    keel__put_u32(p + 4, (uint32_t)value_len);
    memcpy(p + KEEL__SNAPSHOT_ENTRY_HEADER_BYTES, key, key_len);
    if (value_len > 0) {
        memcpy(p + KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + key_len, value,
               value_len);
    }
    w->raw_len += entry;
    w->frame_entries++;
    memcpy(w->prev, key, key_len);
    w->prev_len = key_len;
    t->entries++;
    t->bytes += key_len + value_len;
    w->entries++;
    w->bytes += key_len + value_len;
#ifdef KEEL_DEBUG
    KEEL_ASSERT(w->busy || writer_invariants_ok(w)); /* S8 */
#endif
out:
    return rc;
}

/* The manifest's JSON (layout in snapshot_format.h); malloc'd, or NULL. */
static char *manifest_json(const keel_snapshot_writer *w)
{
    char *s = NULL;
    json_t *m = NULL;
    json_t *tables = json_array();
    if (tables == NULL) {
        goto out;
    }
    for (uint32_t i = 0; i < w->ntables; i++) {
        const keel_snapshot_table *t = &w->tables[i];
        if (json_array_append_new(
                tables, json_pack("{s:s, s:I, s:I}", "name", t->name, "entries",
                                  (json_int_t)t->entries, "bytes",
                                  (json_int_t)t->bytes)) != 0) {
            json_decref(tables);
            goto out;
        }
    }
    char kid[19], hash[17];
    snprintf(kid, sizeof(kid), "0x%016" PRIx64, w->meta.kernel_id);
    snprintf(hash, sizeof(hash), "%016" PRIx64, w->meta.activity_hash);
    m = json_pack("{s:I, s:s, s:I, s:s, s:I, s:I, s:s, s:i, s:I}", "format",
                  (json_int_t)w->o.format, "keel_version", keel_version(),
                  "created_unix_ms", (json_int_t)w->meta.created_unix_ms,
                  "kernel_id", kid, "lsn", (json_int_t)w->meta.lsn, "crank",
                  (json_int_t)w->meta.crank, "activity_hash", hash,
                  "zstd_level", w->o.level, "frame_bytes",
                  (json_int_t)w->o.frame_bytes);
    int bad = m == NULL;
    if (!bad && w->o.format >= 2) {
        char tl[17], parent[17];
        snprintf(tl, sizeof(tl), "%016" PRIx64, w->meta.timeline);
        snprintf(parent, sizeof(parent), "%016" PRIx64,
                 w->meta.timeline_parent);
        bad = json_object_set_new(m, "timeline", json_string(tl)) != 0 ||
              json_object_set_new(m, "timeline_parent", json_string(parent)) !=
                  0 ||
              json_object_set_new(
                  m, "timeline_branch_lsn",
                  json_integer((json_int_t)w->meta.timeline_branch_lsn)) != 0;
    }
    if (bad) {
        json_decref(tables);
        goto out;
    }
    /* "tables" comes last; set_new takes it over, also when it fails */
    if (json_object_set_new(m, "tables", tables) == 0) {
        s = json_dumps(m, JSON_COMPACT);
    }
out:
    json_decref(m);
    return s;
}

static void writer_info(const keel_snapshot_writer *w, keel_snapshot_info *i)
{
    memset(i, 0, sizeof(*i));
    i->meta = w->meta;
    i->format = w->o.format;
    snprintf(i->keel_version, sizeof(i->keel_version), "%s", keel_version());
    i->level = w->o.level;
    i->frame_bytes = w->o.frame_bytes;
    i->tables = w->ntables;
    i->entries = w->entries;
    i->bytes = w->bytes;
    i->frames = w->frames;
    i->file_bytes = w->off;
}

int keel_snapshot_writer_finish(keel_snapshot_writer *w,
                                keel_snapshot_info *info, keel_diag *diag)
{
    uint8_t *buf = NULL;
    char *manifest = NULL;
    int rc = usable(w, diag);
    if (rc < 0) {
        goto out;
    }
    manifest = manifest_json(w);
    size_t mlen = manifest != NULL ? strlen(manifest) : 0;
    buf = malloc(mlen + KEEL__SNAPSHOT_TRAILER_BYTES);
    if (manifest == NULL || buf == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", w->path);
        goto out;
    }
    /* Bounded by the table limits: 1024 tables of 64-byte names. */
    KEEL_ASSERT(mlen <= KEEL__SNAPSHOT_MAX_MANIFEST_BYTES);
    if (w->raw_len > 0) {
        rc = flush_frame(w, diag);
        if (rc < 0) {
            goto out;
        }
    }
    rc = settle(w, diag);
    if (rc < 0) {
        goto out;
    }
    memcpy(buf, manifest, mlen);
    uint8_t *tr = buf + mlen;
    keel__snapshot_trailer t = {
        .manifest_off = w->off,
        .manifest_len = mlen,
        .frames = w->frames,
        .entries = w->entries,
        .bytes = w->bytes,
        .manifest_hash = XXH3_64bits(manifest, mlen),
    };
    keel__snapshot_trailer_encode(tr, &t);
    XXH3_64bits_update(w->fh, buf, mlen + KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF);
    keel__snapshot_trailer_seal(tr, XXH3_64bits_digest(w->fh));
    size_t n = mlen + KEEL__SNAPSHOT_TRAILER_BYTES;
    rc = w->io->pwrite(w->io, w->fd, buf, n, w->off);
    if (rc < 0) {
        rc = fail(w, diag, rc, w->tmp, w->off, "write manifest and trailer");
        goto out;
    }
    w->off += n;
    /* S1: the data is durable before any name points at it. */
    rc = w->io->fsync(w->io, w->fd);
    if (rc < 0) {
        rc = fail(w, diag, rc, w->tmp, NO_OFF, "fdatasync");
        goto out;
    }
    int fd = w->fd;
    w->fd = -1;
    rc = w->io->close(w->io, fd);
    if (rc < 0) {
        rc = fail(w, diag, rc, w->tmp, NO_OFF, "close");
        goto out;
    }
    rc = w->io->rename(w->io, w->tmp, w->path);
    if (rc < 0) {
        rc = fail(w, diag, rc, w->tmp, NO_OFF, "rename over the snapshot");
        goto out;
    }
    w->renamed = 1;
    /* The rename is durable only once the directory is synced. */
    rc = w->io->fsync_dir(w->io, w->dir);
    if (rc < 0) {
        rc = fail(w, diag, rc, w->dir, NO_OFF, "fsync directory");
        goto out;
    }
    w->done = 1;
#ifdef KEEL_DEBUG
    KEEL_ASSERT(w->busy || writer_invariants_ok(w)); /* S8 */
#endif
    if (info != NULL) {
        writer_info(w, info);
    }
out:
    free(manifest);
    free(buf);
    return rc;
}

int keel_snapshot_writer_failed(const keel_snapshot_writer *w)
{
    return w->failed;
}

void keel_snapshot_writer_close(keel_snapshot_writer *w)
{
    if (w == NULL) {
        return;
    }
    if (w->bg) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL); /* finishes the job in flight */
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
    if (w->fd >= 0) {
        w->io->close(w->io, w->fd);
    }
    /* S2: abort. Best effort: after a crash the .tmp stays for the caller
     * to remove. */
    if (w->created && !w->renamed) {
        w->io->unlink(w->io, w->tmp);
    }
    keel__snapshot_zstd_free(w->cctx, NULL);
    XXH3_freeState(w->fh);
    free(w->prev);
    free(w->cbuf);
    free(w->raw);
    free(w->jraw);
    free(w->tables);
    free(w->dir);
    free(w->tmp);
    free(w->path);
    free(w);
}

/* ---- reader ------------------------------------------------------------- */

enum { R_READING = 1, R_END = 0 }; /* or a negative error: FAILED (S6) */

/* Entries and key+value bytes of a table seen in frames so far. */
typedef struct seen_count {
    uint64_t entries;
    uint64_t bytes;
} seen_count;

struct keel_snapshot_reader {
    keel_io *io;
    char *path;
    int fd;
    int state;
    keel_diag fail_diag;
    uint64_t size;
    uint8_t trailer_bytes[KEEL__SNAPSHOT_TRAILER_BYTES];
    keel__snapshot_trailer t;
    uint8_t *manifest; /* t.manifest_len bytes */
    keel_snapshot_info info;
    keel_snapshot_table *tables; /* info.tables, as the manifest says */
    seen_count *seen;            /* info.tables, as the frames say */
    XXH3_state_t *fh;            /* file checksum over bytes [0, off) */

    uint64_t off;    /* the next frame's offset */
    uint64_t frames; /* frames loaded */
    int in_table;    /* a frame was loaded: cur_table is valid */
    uint32_t cur_table;
    uint8_t *stored;
    size_t stored_cap;
    uint8_t *raw;
    size_t raw_cap;
    size_t raw_len;
    size_t pos;    /* next entry in raw */
    uint32_t left; /* entries of the frame not yet returned */
    uint8_t *prev; /* the last key of the previous frame of cur_table */
    size_t prev_len;
    size_t prev_cap;
    void *dctx;
};

/* S6, S7: fail the reader with code; the diag reads "<path>: offset <off>:
 * <what>". */
static int rfail(keel_snapshot_reader *r, keel_diag *diag, int code,
                 uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int rfail(keel_snapshot_reader *r, keel_diag *diag, int code,
                 uint64_t off, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    keel__diag(&r->fail_diag, code, "%s: offset %" PRIu64 ": %s", r->path, off,
               why);
    r->state = code;
    if (diag != NULL) {
        *diag = r->fail_diag;
    }
    return code;
}

/* Read exactly len bytes at off; a short read means the file shrank after
 * open (its size was checked then). */
static int read_at(keel_snapshot_reader *r, keel_diag *diag, void *buf,
                   size_t len, uint64_t off, const char *what)
{
    size_t got = 0;
    int rc = r->io->pread(r->io, r->fd, buf, len, off, &got);
    if (rc < 0) {
        return rfail(r, diag, rc, off, "read %s: %s", what, keel_strerror(rc));
    }
    if (got < len) {
        return rfail(r, diag, KEEL_ECORRUPT, off + got,
                     "file ends after %zu of the %zu bytes of %s (it "
                     "shrank while being read)",
                     got, len, what);
    }
    return KEEL_OK;
}

/* A member of the manifest that must be an integer in [0, max]. */
static int json_u64(json_t *o, const char *key, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max) {
        return 0;
    }
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* A member that must be a string of `prefix` then 16 lowercase hex digits
 * (the spellings `keel status` uses). */
static int json_hex64(json_t *o, const char *key, const char *prefix,
                      uint64_t *out)
{
    const char *s = json_string_value(json_object_get(o, key));
    size_t plen = strlen(prefix);
    if (s == NULL || strlen(s) != plen + 16 || strncmp(s, prefix, plen) != 0) {
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = plen; i < plen + 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0) {
            return 0;
        }
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 1;
}

/* Parse and check the manifest (rules in snapshot_format.h) into r->info
 * and r->tables; check its counts against the trailer. */
static int parse_manifest(keel_snapshot_reader *r, uint32_t version,
                          keel_diag *diag)
{
    int rc = KEEL_OK;
    uint64_t at = r->t.manifest_off;
    json_error_t je;
    json_t *m = json_loadb((const char *)r->manifest, r->t.manifest_len,
                           JSON_REJECT_DUPLICATES, &je);
    if (m == NULL) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at + (uint64_t)je.position,
                   "manifest is not valid JSON: %s", je.text);
        goto out;
    }
    if (!json_is_object(m)) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at, "manifest is not a JSON object");
        goto out;
    }
    keel_snapshot_info *i = &r->info;
    uint64_t format = 0, frame_bytes = 0;
    const char *bad = NULL;
    if (!json_u64(m, "format", UINT32_MAX, &format)) {
        bad = "format";
    } else if (!json_u64(m, "created_unix_ms", INT64_MAX,
                         &i->meta.created_unix_ms)) {
        bad = "created_unix_ms";
    } else if (!json_hex64(m, "kernel_id", "0x", &i->meta.kernel_id)) {
        bad = "kernel_id";
    } else if (!json_u64(m, "lsn", INT64_MAX, &i->meta.lsn)) {
        bad = "lsn";
    } else if (!json_u64(m, "crank", INT64_MAX, &i->meta.crank)) {
        bad = "crank";
    } else if (!json_hex64(m, "activity_hash", "", &i->meta.activity_hash)) {
        bad = "activity_hash";
    } else if (!json_is_integer(json_object_get(m, "zstd_level"))) {
        bad = "zstd_level";
    } else if (!json_u64(m, "frame_bytes", KEEL_SNAPSHOT_MAX_FRAME_BYTES,
                         &frame_bytes) ||
               frame_bytes == 0) {
        bad = "frame_bytes";
    } else if (version >= 2 &&
               !json_hex64(m, "timeline", "", &i->meta.timeline)) {
        bad = "timeline";
    } else if (version >= 2 && !json_hex64(m, "timeline_parent", "",
                                           &i->meta.timeline_parent)) {
        bad = "timeline_parent";
    } else if (version >= 2 && !json_u64(m, "timeline_branch_lsn", INT64_MAX,
                                         &i->meta.timeline_branch_lsn)) {
        bad = "timeline_branch_lsn";
    }
    if (bad != NULL) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at,
                   "manifest member \"%s\" missing or invalid", bad);
        goto out;
    }
    json_int_t level = json_integer_value(json_object_get(m, "zstd_level"));
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at,
                   "manifest zstd_level %lld, expected %d .. %d",
                   (long long)level, ZSTD_minCLevel(), ZSTD_maxCLevel());
        goto out;
    }
    if (format != version) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at,
                   "manifest format %" PRIu64 ", the header says %" PRIu32,
                   format, version);
        goto out;
    }
    const char *kv = json_string_value(json_object_get(m, "keel_version"));
    size_t kvlen = kv != NULL ? strlen(kv) : 0;
    int kv_ok = kvlen > 0 && kvlen < sizeof(i->keel_version);
    for (size_t k = 0; kv_ok && k < kvlen; k++) {
        kv_ok = kv[k] > 0x20 && kv[k] < 0x7f;
    }
    if (!kv_ok) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at,
                   "manifest member \"keel_version\" missing or invalid "
                   "(expected 1..%zu printable ASCII characters)",
                   sizeof(i->keel_version) - 1);
        goto out;
    }
    memcpy(i->keel_version, kv, kvlen + 1);
    i->format = (uint32_t)format;
    i->level = (int)level;
    i->frame_bytes = (uint32_t)frame_bytes;
    i->file_bytes = r->size;

    json_t *tables = json_object_get(m, "tables");
    if (!json_is_array(tables) ||
        json_array_size(tables) > KEEL_SNAPSHOT_MAX_TABLES) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at,
                   "manifest member \"tables\" missing or invalid (expected "
                   "an array of at most %u tables)",
                   KEEL_SNAPSHOT_MAX_TABLES);
        goto out;
    }
    size_t n = json_array_size(tables);
    r->tables = calloc(n > 0 ? n : 1, sizeof(*r->tables));
    r->seen = calloc(n > 0 ? n : 1, sizeof(*r->seen));
    if (r->tables == NULL || r->seen == NULL) {
        rc = rfail(r, diag, KEEL_ENOMEM, at, "out of memory");
        goto out;
    }
    uint64_t entries = 0, bytes = 0;
    for (size_t k = 0; k < n; k++) {
        json_t *o = json_array_get(tables, k);
        keel_snapshot_table *t = &r->tables[k];
        const char *name = json_string_value(json_object_get(o, "name"));
        size_t nlen = name != NULL ? strlen(name) : 0;
        /* Strings hold no NUL: json_loadb was not given JSON_ALLOW_NUL. */
        if (!json_is_object(o) || !valid_table_name(name, nlen) ||
            !json_u64(o, "entries", INT64_MAX, &t->entries) ||
            !json_u64(o, "bytes", INT64_MAX, &t->bytes)) {
            rc = rfail(r, diag, KEEL_ECORRUPT, at,
                       "manifest table %zu invalid (expected {\"name\": 1..%u "
                       "of A-Z a-z 0-9 . _ -, \"entries\": n, \"bytes\": n})",
                       k, KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES);
            goto out;
        }
        memcpy(t->name, name, nlen + 1);
        for (size_t j = 0; j < k; j++) {
            if (strcmp(r->tables[j].name, t->name) == 0) {
                rc = rfail(r, diag, KEEL_ECORRUPT, at,
                           "manifest lists table \"%s\" twice", t->name);
                goto out;
            }
        }
        /* Each is below 2^63, and there are at most 1024: a sum that
         * wraps is caught by comparing with the previous sum. */
        if (entries + t->entries < entries || bytes + t->bytes < bytes) {
            rc = rfail(r, diag, KEEL_ECORRUPT, at,
                       "manifest table counts overflow");
            goto out;
        }
        entries += t->entries;
        bytes += t->bytes;
    }
    i->tables = (uint32_t)n;
    i->entries = entries;
    i->bytes = bytes;
    i->frames = r->t.frames;
    if (entries != r->t.entries || bytes != r->t.bytes) {
        rc = rfail(r, diag, KEEL_ECORRUPT, at,
                   "manifest tables hold %" PRIu64 " entries (%" PRIu64
                   " bytes), the trailer says %" PRIu64 " (%" PRIu64 ")",
                   entries, bytes, r->t.entries, r->t.bytes);
        goto out;
    }
out:
    json_decref(m);
    return rc;
}

/* The reader's part of open: header, trailer, manifest (S5). */
static int read_head(keel_snapshot_reader *r, keel_diag *diag)
{
    char why[300];
    uint64_t bad = 0;
    uint32_t version = 0;
    uint8_t hdr[KEEL__SNAPSHOT_HEADER_BYTES];
    int rc = r->io->size(r->io, r->fd, &r->size);
    if (rc < 0) {
        return rfail(r, diag, rc, 0, "size: %s", keel_strerror(rc));
    }
    /* The header first, so that a newer format is recognised whatever the
     * rest of it looks like. */
    if (r->size < KEEL__SNAPSHOT_HEADER_BYTES) {
        return rfail(r, diag, KEEL_ECORRUPT, r->size,
                     "file ends after %" PRIu64 " bytes, inside the %u-byte "
                     "header: truncated or not a snapshot",
                     r->size, KEEL__SNAPSHOT_HEADER_BYTES);
    }
    rc = read_at(r, diag, hdr, sizeof(hdr), 0, "header");
    if (rc < 0) {
        return rc;
    }
    rc = keel__snapshot_header_decode(hdr, &version, &bad, why, sizeof(why));
    if (rc < 0) {
        return rfail(r, diag, rc, bad, "%s", why);
    }
    if (r->size < KEEL__SNAPSHOT_MIN_FILE_BYTES) {
        return rfail(r, diag, KEEL_ECORRUPT, r->size,
                     "file ends after %" PRIu64 " bytes, before a manifest "
                     "and trailer (at least %u bytes): truncated",
                     r->size, KEEL__SNAPSHOT_MIN_FILE_BYTES);
    }
    uint64_t at = r->size - KEEL__SNAPSHOT_TRAILER_BYTES;
    rc = read_at(r, diag, r->trailer_bytes, sizeof(r->trailer_bytes), at,
                 "trailer");
    if (rc < 0) {
        return rc;
    }
    rc = keel__snapshot_trailer_decode(r->trailer_bytes, r->size, &r->t, &bad,
                                       why, sizeof(why));
    if (rc < 0) {
        return rfail(r, diag, rc, bad, "%s", why);
    }
    /* Bounded by the trailer decode (at most 1 MiB). */
    r->manifest = malloc(r->t.manifest_len);
    if (r->manifest == NULL) {
        return rfail(r, diag, KEEL_ENOMEM, r->t.manifest_off, "out of memory");
    }
    rc = read_at(r, diag, r->manifest, r->t.manifest_len, r->t.manifest_off,
                 "manifest");
    if (rc < 0) {
        return rc;
    }
    uint64_t mh = XXH3_64bits(r->manifest, r->t.manifest_len);
    if (mh != r->t.manifest_hash) {
        return rfail(r, diag, KEEL_ECORRUPT, r->t.manifest_off,
                     "manifest checksum 0x%016" PRIX64
                     ", the trailer says 0x%016" PRIX64,
                     mh, r->t.manifest_hash);
    }
    rc = parse_manifest(r, version, diag);
    if (rc < 0) {
        return rc;
    }
    XXH3_64bits_reset(r->fh);
    XXH3_64bits_update(r->fh, hdr, sizeof(hdr));
    r->off = KEEL__SNAPSHOT_HEADER_BYTES;
    return KEEL_OK;
}

int keel_snapshot_reader_open(const char *path,
                              const keel_snapshot_options *opts,
                              keel_snapshot_reader **out, keel_diag *diag)
{
    int rc = KEEL_OK;
    KEEL_ASSERT(path != NULL && out != NULL);
    keel_snapshot_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    r->fd = -1;
    r->state = R_READING;
    r->io = opts != NULL && opts->io != NULL ? opts->io : keel__io_posix();
    r->path = strdup(path);
    r->fh = XXH3_createState();
    if (r->path == NULL || r->fh == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    rc = r->io->open(r->io, path, O_RDONLY, 0, &r->fd);
    if (rc < 0) {
        rc = keel__diag(diag, rc, "%s: open: %s", path, keel_strerror(rc));
        goto out;
    }
    rc = read_head(r, diag);
out:
    if (rc < 0) {
        keel_snapshot_reader_close(r);
        r = NULL;
    }
    *out = r;
    return rc;
}

void keel_snapshot_reader_info(const keel_snapshot_reader *r,
                               keel_snapshot_info *out)
{
    *out = r->info;
}

const keel_snapshot_table *
keel_snapshot_reader_table(const keel_snapshot_reader *r, uint32_t i)
{
    return i < r->info.tables ? &r->tables[i] : NULL;
}

keel_bytes keel_snapshot_reader_manifest(const keel_snapshot_reader *r)
{
    keel_bytes b = {r->manifest, r->t.manifest_len};
    return b;
}

/*
 * Check every entry of the frame now in r->raw (S5): bounds, lengths, V3
 * order (the first key against the previous frame's last), and total the
 * key+value bytes into *bytes. fo is the frame's offset, for diags.
 */
static int check_entries(keel_snapshot_reader *r, keel_diag *diag, uint64_t fo,
                         uint32_t entries, uint64_t *bytes)
{
    const char *table = r->tables[r->cur_table].name;
    const uint8_t *prev = r->prev_len > 0 ? r->prev : NULL;
    size_t prev_len = r->prev_len;
    size_t pos = 0;
    *bytes = 0;
    for (uint32_t k = 0; k < entries; k++) {
        if (r->raw_len - pos < KEEL__SNAPSHOT_ENTRY_HEADER_BYTES) {
            return rfail(r, diag, KEEL_ECORRUPT, fo,
                         "frame %" PRIu64 " (table \"%s\"): entry %" PRIu32
                         " at raw byte %zu: header needs 8 bytes, %zu left",
                         r->frames, table, k, pos, r->raw_len - pos);
        }
        uint32_t klen = keel__get_u32(r->raw + pos);
        uint32_t vlen = keel__get_u32(r->raw + pos + 4);
        size_t room = r->raw_len - pos - KEEL__SNAPSHOT_ENTRY_HEADER_BYTES;
        if (klen == 0 || klen > KEEL_SNAPSHOT_MAX_KEY_BYTES ||
            vlen > KEEL_SNAPSHOT_MAX_VALUE_BYTES || klen > room ||
            vlen > room - klen) {
            return rfail(r, diag, KEEL_ECORRUPT, fo,
                         "frame %" PRIu64 " (table \"%s\"): entry %" PRIu32
                         " at raw byte %zu: key length %" PRIu32
                         ", value length %" PRIu32 " (expected 1..%u and "
                         "0..%u, within the %zu bytes left)",
                         r->frames, table, k, pos, klen, vlen,
                         KEEL_SNAPSHOT_MAX_KEY_BYTES,
                         KEEL_SNAPSHOT_MAX_VALUE_BYTES, room);
        }
        const uint8_t *key = r->raw + pos + KEEL__SNAPSHOT_ENTRY_HEADER_BYTES;
        if (prev != NULL && key_cmp(key, klen, prev, prev_len) <= 0) {
            return rfail(r, diag, KEEL_ECORRUPT, fo,
                         "frame %" PRIu64 " (table \"%s\"): entry %" PRIu32
                         " at raw byte %zu: key not above the previous key "
                         "(keys must strictly ascend)",
                         r->frames, table, k, pos);
        }
        prev = key;
        prev_len = klen;
        *bytes += (uint64_t)klen + vlen;
        pos += KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + (size_t)klen + vlen;
    }
    if (pos != r->raw_len) {
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame %" PRIu64 " (table \"%s\"): %" PRIu32
                     " entries end at raw byte %zu of %zu",
                     r->frames, table, entries, pos, r->raw_len);
    }
    /* Keep the last key for the next frame of this table (V3 across
     * frames): the raw buffer is reused by then. */
    if (reserve(&r->prev, &r->prev_cap, prev_len) < 0) {
        return rfail(r, diag, KEEL_ENOMEM, fo, "out of memory");
    }
    memcpy(r->prev, prev, prev_len);
    r->prev_len = prev_len;
    return KEEL_OK;
}

/* Load, verify and decode the frame at r->off (V1-V4, S5). */
static int load_frame(keel_snapshot_reader *r, keel_diag *diag)
{
    char why[300];
    uint64_t fo = r->off;
    uint64_t end = r->t.manifest_off;
    uint8_t hdr[KEEL__SNAPSHOT_FRAME_HEADER_BYTES];
    keel__snapshot_frame f;
    if (end - fo < sizeof(hdr)) { /* V1 */
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame header needs %zu bytes, %" PRIu64
                     " are left before the manifest at offset %" PRIu64,
                     sizeof(hdr), end - fo, end);
    }
    int rc = read_at(r, diag, hdr, sizeof(hdr), fo, "frame header");
    if (rc < 0) {
        return rc;
    }
    rc = keel__snapshot_frame_decode(hdr, &f, why, sizeof(why));
    if (rc < 0) {
        return rfail(r, diag, rc, fo, "frame %" PRIu64 ": %s", r->frames, why);
    }
    if (f.table >= r->info.tables ||
        (r->in_table && f.table < r->cur_table)) { /* V2 */
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame %" PRIu64 " is for table %" PRIu32
                     ", expected %" PRIu32 " .. %" PRIu32
                     " (tables in manifest order)",
                     r->frames, f.table, r->in_table ? r->cur_table : 0,
                     r->info.tables > 0 ? r->info.tables - 1 : 0);
    }
    if (f.stored_len > end - fo - sizeof(hdr)) { /* V1 */
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame %" PRIu64 ": stored length %" PRIu32
                     " runs past the manifest at offset %" PRIu64,
                     r->frames, f.stored_len, end);
    }
    if (reserve(&r->stored, &r->stored_cap, f.stored_len) < 0) {
        return rfail(r, diag, KEEL_ENOMEM, fo, "out of memory");
    }
    rc = read_at(r, diag, r->stored, f.stored_len, fo + sizeof(hdr), "frame");
    if (rc < 0) {
        return rc;
    }
    uint64_t h = XXH3_64bits(r->stored, f.stored_len);
    if (h != f.stored_hash) {
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame %" PRIu64 ": checksum of the compressed bytes "
                     "0x%016" PRIX64 ", the frame header says 0x%016" PRIX64,
                     r->frames, h, f.stored_hash);
    }
    /* Allocated only once the compressed bytes are known to be the ones
     * written: up to 64 MiB for a frame, never for one that fails. */
    if (reserve(&r->raw, &r->raw_cap, f.raw_len) < 0) {
        return rfail(r, diag, KEEL_ENOMEM, fo, "out of memory");
    }
    rc = keel__snapshot_decompress(&r->dctx, r->stored, f.stored_len, r->raw,
                                   f.raw_len, why, sizeof(why));
    if (rc < 0) {
        return rfail(r, diag, rc, fo, "frame %" PRIu64 ": %s", r->frames, why);
    }
    h = XXH3_64bits(r->raw, f.raw_len);
    if (h != f.raw_hash) {
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame %" PRIu64 ": checksum of the decompressed bytes "
                     "0x%016" PRIX64 ", the frame header says 0x%016" PRIX64,
                     r->frames, h, f.raw_hash);
    }
    if (!r->in_table || f.table != r->cur_table) {
        r->in_table = 1;
        r->cur_table = f.table;
        r->prev_len = 0; /* V3 holds within a table */
    }
    r->raw_len = f.raw_len;
    uint64_t bytes = 0;
    rc = check_entries(r, diag, fo, f.entries, &bytes);
    if (rc < 0) {
        return rc;
    }
    seen_count *s = &r->seen[f.table];
    const keel_snapshot_table *t = &r->tables[f.table];
    if (t->entries - s->entries < f.entries) { /* V4 */
        return rfail(r, diag, KEEL_ECORRUPT, fo,
                     "frame %" PRIu64 ": table \"%s\" reaches %" PRIu64
                     " entries, the manifest says %" PRIu64,
                     r->frames, t->name, s->entries + f.entries, t->entries);
    }
    s->entries += f.entries;
    s->bytes += bytes;
    XXH3_64bits_update(r->fh, hdr, sizeof(hdr));
    XXH3_64bits_update(r->fh, r->stored, f.stored_len);
    r->off = fo + sizeof(hdr) + f.stored_len;
    r->frames++;
    r->pos = 0;
    r->left = f.entries;
    return KEEL_OK;
}

/* The frames ended at the manifest: V5 and the file checksum. */
static int end_of_frames(keel_snapshot_reader *r, keel_diag *diag)
{
    uint64_t at = r->t.manifest_off;
    if (r->frames != r->t.frames) {
        return rfail(r, diag, KEEL_ECORRUPT, at,
                     "%" PRIu64 " frames end at the manifest, the trailer "
                     "says %" PRIu64,
                     r->frames, r->t.frames);
    }
    for (uint32_t i = 0; i < r->info.tables; i++) {
        const keel_snapshot_table *t = &r->tables[i];
        const seen_count *s = &r->seen[i];
        if (s->entries != t->entries || s->bytes != t->bytes) {
            return rfail(r, diag, KEEL_ECORRUPT, at,
                         "table \"%s\": frames hold %" PRIu64
                         " entries (%" PRIu64 " bytes), the manifest says "
                         "%" PRIu64 " (%" PRIu64 ")",
                         t->name, s->entries, s->bytes, t->entries, t->bytes);
        }
    }
    XXH3_64bits_update(r->fh, r->manifest, r->t.manifest_len);
    XXH3_64bits_update(r->fh, r->trailer_bytes,
                       KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF);
    uint64_t h = XXH3_64bits_digest(r->fh);
    if (h != r->t.file_hash) {
        return rfail(r, diag, KEEL_ECORRUPT,
                     r->size - KEEL__SNAPSHOT_TRAILER_BYTES +
                         KEEL__SNAPSHOT_TRAILER_FILE_HASH_OFF,
                     "file checksum 0x%016" PRIX64 ", computed 0x%016" PRIX64,
                     r->t.file_hash, h);
    }
    r->state = R_END;
    return 0;
}

#ifdef KEEL_DEBUG
/* S5/S6 and V1/V4 on the reader's position and counts. */
static int reader_invariants_ok(const keel_snapshot_reader *r)
{
    if (r->state < 0) {
        return 1; /* FAILED: only the sticky diag is used from here on */
    }
    int ok = r->off >= KEEL__SNAPSHOT_HEADER_BYTES &&
             r->off <= r->t.manifest_off && r->pos <= r->raw_len &&
             (r->left == 0) == (r->pos == r->raw_len) &&
             (r->state != R_END ||
              (r->off == r->t.manifest_off && r->frames == r->t.frames));
    for (uint32_t i = 0; ok && i < r->info.tables; i++) {
        ok = r->seen[i].entries <= r->tables[i].entries &&
             (!r->in_table || i <= r->cur_table || r->seen[i].entries == 0);
    }
    return ok;
}
#endif

int keel_snapshot_reader_next(keel_snapshot_reader *r, keel_snapshot_entry *e,
                              keel_diag *diag)
{
    int rc = r->state;
    if (rc < 0) { /* S6 */
        if (diag != NULL) {
            *diag = r->fail_diag;
        }
        goto out;
    }
    if (rc == R_END) {
        goto out;
    }
    if (r->left == 0) {
        if (r->off == r->t.manifest_off) {
            rc = end_of_frames(r, diag);
            goto out;
        }
        rc = load_frame(r, diag);
        if (rc < 0) {
            goto out;
        }
    }
    /* Bounds were checked by check_entries() when the frame was loaded. */
    const uint8_t *p = r->raw + r->pos;
    uint32_t klen = keel__get_u32(p);
    uint32_t vlen = keel__get_u32(p + 4);
    e->table = r->tables[r->cur_table].name;
    e->table_index = r->cur_table;
    e->key.ptr = p + KEEL__SNAPSHOT_ENTRY_HEADER_BYTES;
    e->key.len = klen;
    e->value.ptr = p + KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + klen;
    e->value.len = vlen;
    r->pos += KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + (size_t)klen + vlen;
    r->left--;
    rc = 1;
out:
#ifdef KEEL_DEBUG
    KEEL_ASSERT(reader_invariants_ok(r));
#endif
    return rc;
}

void keel_snapshot_reader_close(keel_snapshot_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->fd >= 0) {
        r->io->close(r->io, r->fd);
    }
    keel__snapshot_zstd_free(NULL, r->dctx);
    XXH3_freeState(r->fh);
    free(r->prev);
    free(r->raw);
    free(r->stored);
    free(r->seen);
    free(r->tables);
    free(r->manifest);
    free(r->path);
    free(r);
}

int keel_snapshot_verify(const char *path, const keel_snapshot_options *opts,
                         keel_snapshot_info *info, keel_diag *diag)
{
    keel_snapshot_reader *r = NULL;
    int rc = keel_snapshot_reader_open(path, opts, &r, diag);
    if (rc < 0) {
        goto out;
    }
    if (info != NULL) {
        keel_snapshot_reader_info(r, info);
    }
    keel_snapshot_entry e;
    while ((rc = keel_snapshot_reader_next(r, &e, diag)) == 1) {
        /* next() verifies as it goes; nothing to do with the entries. */
    }
out:
    keel_snapshot_reader_close(r);
    return rc;
}
