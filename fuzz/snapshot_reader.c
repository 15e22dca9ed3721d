/*
 * fuzz/snapshot_reader.c — fuzz target for the snapshot reader
 * (keel_snapshot_reader_*; layout in snapshot/snapshot_format.h).
 *
 * Each input is the whole content of one snapshot file. It is written as
 * `k.snap` in a scratch directory and a reader reads it to its end.
 * Mutated bytes almost always break a checksum; to get past that wall each
 * input is read a second time *sealed*: the header checksum, for every
 * frame that can be walked (right magic, length inside the frames) its
 * compressed-bytes hash, its raw hash (when the compressed bytes decode to
 * raw_len) and its header checksum, then the manifest hash, the file
 * checksum and the trailer checksum are recomputed. Sealed bytes reach the
 * checks behind the checksums (frame positions and table order, entry
 * lengths and key order, the manifest's JSON and members, counts): bytes a
 * bug, a newer keel or a misdirected write can produce.
 *
 * Oracle (FUZZ_ASSERT, always on), for the raw and the sealed bytes alike:
 *   F1  keel_snapshot_reader_open() returns KEEL_OK, KEEL_ECORRUPT or
 *       KEEL_EVERSION; next() returns 1, 0 or KEEL_ECORRUPT; whatever ended
 *       the read is returned again, with the same diag (sticky).
 *   F2  an error's diag carries its code and starts "<path>: offset N: "
 *       (the path as given) with N no larger than the input.
 *   F3  a file the reader opened has a header that decodes (format 1) and
 *       a trailer that decodes; the manifest the reader returns is the
 *       input's bytes at the trailer's manifest_off; file_bytes is the
 *       input's size; the tables' counts sum to info.entries and .bytes.
 *   F4  every entry returned: table indices never decrease and stay below
 *       info.tables, e.table is that table's name; the key is 1..max bytes,
 *       the value at most max bytes, each non-NULL unless empty; keys
 *       strictly ascend within a table; no table yields more entries than
 *       its manifest count.
 *   F5  at a clean end (0): each table yielded exactly its manifest count
 *       of entries and of key+value bytes.
 *   F6  round trip: the entries of a small input that read cleanly,
 *       written by the real writer with the input's meta, level, frame size
 *       and tables, read back equal, with the same manifest values.
 * ASan/UBSan and libFuzzer's -timeout add: no over-read, no undefined
 * behaviour, no leak, no hang.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/diag.h"
#include "fuzz/fuzz_helpers.h"
#include "keel/keel.h"
#include "snapshot/snapshot_format.h"

#define SNAP_NAME "k.snap"

enum {
    /* F6 runs only for inputs up to this size, and only while the entries
     * it must copy stay under ROUND_TRIP_MAX_RAW (a small input can
     * decompress to far more): it writes a whole file, fsync included. */
    ROUND_TRIP_MAX_INPUT = 64 * 1024,
    ROUND_TRIP_MAX_RAW = 1024 * 1024,
    /* seal() decodes frames up to this raw size to recompute their raw
     * hash; larger ones keep theirs (and are refused when it is wrong). */
    SEAL_MAX_RAW = 4 * 1024 * 1024,
};

/* The scratch directory: created once per process and reused, because
 * making and removing directories per input would cost more than the read
 * under test. */
typedef struct scratch {
    char *root;  /* removed at exit */
    char *path;  /* root/k.snap, rewritten for every input */
    char *wpath; /* root/w.snap, F6's file */
} scratch;

/* One entry kept for F6 (copied: the reader's bytes are borrowed). */
typedef struct kept {
    uint32_t table;
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
} kept;

typedef struct kept_set {
    kept *e;
    size_t n;
    size_t cap;
    size_t raw_bytes;
} kept_set;

/*
 * The process's scratch directory. libFuzzer's entry point takes no
 * context argument, so this one function-local static is how the target
 * keeps state across inputs; it never changes after the first call.
 */
static const scratch *scratch_get(void);

static void scratch_cleanup(void)
{
    fuzz_rmdir(scratch_get()->root);
}

static const scratch *scratch_get(void)
{
    static scratch s;
    if (s.root == NULL) {
        s.root = fuzz_tmpdir("keel-fuzz-snap");
        s.path = fuzz_path(s.root, SNAP_NAME);
        s.wpath = fuzz_path(s.root, "w.snap");
        atexit(scratch_cleanup);
    }
    return &s;
}

/* F2: where says which call. */
static void check_error(const scratch *s, int rc, const keel_diag *d,
                        size_t size, const char *where)
{
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s: offset ", s->path);
    FUZZ_ASSERTF(d->code == rc, "%s returned %s, diag.code %d", where,
                 keel_err_name(rc), d->code);
    FUZZ_ASSERTF(strncmp(d->msg, prefix, strlen(prefix)) == 0,
                 "%s: diag does not start with \"%s\": \"%s\"", where, prefix,
                 d->msg);
    char *end = NULL;
    unsigned long long off = strtoull(d->msg + strlen(prefix), &end, 10);
    FUZZ_ASSERTF(end != NULL && end[0] == ':' && off <= size,
                 "%s: diag offset %llu for a %zu-byte input: \"%s\"", where,
                 off, size, d->msg);
}

/* F3 */
static void check_opened(keel_snapshot_reader *r, const uint8_t *data,
                         size_t size)
{
    char why[300];
    uint64_t bad = 0;
    uint32_t version = 0;
    FUZZ_ASSERT(size >= KEEL__SNAPSHOT_MIN_FILE_BYTES);
    FUZZ_ASSERTF(keel__snapshot_header_decode(data, &version, &bad, why,
                                              sizeof(why)) == KEEL_OK &&
                     version >= 1 && version <= KEEL_SNAPSHOT_FORMAT,
                 "opened a file whose header does not decode: %s", why);
    keel__snapshot_trailer t;
    FUZZ_ASSERTF(keel__snapshot_trailer_decode(
                     data + size - KEEL__SNAPSHOT_TRAILER_BYTES, size, &t, &bad,
                     why, sizeof(why)) == KEEL_OK,
                 "opened a file whose trailer does not decode: %s", why);
    keel_bytes m = keel_snapshot_reader_manifest(r);
    FUZZ_ASSERT(m.len == t.manifest_len &&
                memcmp(m.ptr, data + t.manifest_off, m.len) == 0);
    keel_snapshot_info info;
    keel_snapshot_reader_info(r, &info);
    FUZZ_ASSERT(info.file_bytes == size);
    FUZZ_ASSERT(info.format == version);
    FUZZ_ASSERT(info.format >= 2 ||
                (info.meta.timeline == 0 && info.meta.timeline_parent == 0 &&
                 info.meta.timeline_branch_lsn == 0));
    FUZZ_ASSERT(info.tables <= KEEL_SNAPSHOT_MAX_TABLES);
    FUZZ_ASSERT(info.frame_bytes >= 1 &&
                info.frame_bytes <= KEEL_SNAPSHOT_MAX_FRAME_BYTES);
    uint64_t entries = 0, bytes = 0;
    for (uint32_t i = 0; i < info.tables; i++) {
        const keel_snapshot_table *tt = keel_snapshot_reader_table(r, i);
        FUZZ_ASSERT(tt != NULL);
        size_t nlen = strlen(tt->name);
        FUZZ_ASSERT(nlen >= 1 && nlen <= KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES);
        entries += tt->entries;
        bytes += tt->bytes;
    }
    FUZZ_ASSERT(keel_snapshot_reader_table(r, info.tables) == NULL);
    FUZZ_ASSERT(entries == info.entries && bytes == info.bytes);
    FUZZ_ASSERT(entries == t.entries && bytes == t.bytes);
}

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* Keep a copy of e for F6. @return 0 once the copies grow too big. */
static int kept_add(kept_set *k, const keel_snapshot_entry *e)
{
    if (k->raw_bytes + e->key.len + e->value.len > ROUND_TRIP_MAX_RAW) {
        return 0;
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 32;
        k->e = realloc(k->e, k->cap * sizeof(*k->e));
        FUZZ_ASSERT(k->e != NULL);
    }
    kept *x = &k->e[k->n++];
    x->table = e->table_index;
    x->klen = e->key.len;
    x->vlen = e->value.len;
    x->key = malloc(x->klen);
    x->val = malloc(x->vlen > 0 ? x->vlen : 1);
    FUZZ_ASSERT(x->key != NULL && x->val != NULL);
    memcpy(x->key, e->key.ptr, x->klen);
    if (x->vlen > 0) {
        memcpy(x->val, e->value.ptr, x->vlen);
    }
    k->raw_bytes += x->klen + x->vlen;
    return 1;
}

static void kept_free(kept_set *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->e[i].key);
        free(k->e[i].val);
    }
    free(k->e);
}

/* F6 */
static void round_trip(const scratch *s, keel_snapshot_reader *in,
                       const kept_set *k)
{
    keel_snapshot_info info;
    keel_snapshot_reader_info(in, &info);
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.level = info.level;
    o.frame_bytes = info.frame_bytes;
    keel_diag d = {0};
    keel_snapshot_writer *w = NULL;
    int rc = keel_snapshot_writer_open(s->wpath, &o, &info.meta, &w, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "round trip: open: %s: %s", keel_err_name(rc),
                 d.msg);
    size_t i = 0;
    for (uint32_t t = 0; t < info.tables; t++) {
        rc = keel_snapshot_writer_add_table(
            w, keel_snapshot_reader_table(in, t)->name, &d);
        FUZZ_ASSERTF(rc == KEEL_OK, "round trip: add_table %u: %s: %s", t,
                     keel_err_name(rc), d.msg);
        for (; i < k->n && k->e[i].table == t; i++) {
            const kept *x = &k->e[i];
            rc = keel_snapshot_writer_put(w, x->key, x->klen, x->val, x->vlen,
                                          &d);
            FUZZ_ASSERTF(rc == KEEL_OK, "round trip: put %zu: %s: %s", i,
                         keel_err_name(rc), d.msg);
        }
    }
    FUZZ_ASSERT(i == k->n);
    rc = keel_snapshot_writer_finish(w, NULL, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "round trip: finish: %s: %s", keel_err_name(rc),
                 d.msg);
    keel_snapshot_writer_close(w);

    keel_snapshot_reader *r = NULL;
    rc = keel_snapshot_reader_open(s->wpath, NULL, &r, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "round trip: reader_open: %s: %s",
                 keel_err_name(rc), d.msg);
    keel_snapshot_info back;
    keel_snapshot_reader_info(r, &back);
    FUZZ_ASSERT(back.tables == info.tables && back.entries == info.entries &&
                back.bytes == info.bytes && back.level == info.level &&
                back.frame_bytes == info.frame_bytes);
    FUZZ_ASSERT(back.meta.kernel_id == info.meta.kernel_id &&
                back.meta.lsn == info.meta.lsn &&
                back.meta.crank == info.meta.crank &&
                back.meta.activity_hash == info.meta.activity_hash);
    /* The writer stamps "now" for a creation time of 0. */
    FUZZ_ASSERT(info.meta.created_unix_ms == 0 ||
                back.meta.created_unix_ms == info.meta.created_unix_ms);
    for (uint32_t t = 0; t < info.tables; t++) {
        const keel_snapshot_table *a = keel_snapshot_reader_table(in, t);
        const keel_snapshot_table *b = keel_snapshot_reader_table(r, t);
        FUZZ_ASSERT(strcmp(a->name, b->name) == 0 && a->entries == b->entries &&
                    a->bytes == b->bytes);
    }
    keel_snapshot_entry e;
    for (i = 0; i < k->n; i++) {
        const kept *x = &k->e[i];
        rc = keel_snapshot_reader_next(r, &e, &d);
        FUZZ_ASSERTF(rc == 1, "round trip: entry %zu: %s: %s", i,
                     keel_err_name(rc), d.msg);
        FUZZ_ASSERTF(
            e.table_index == x->table && e.key.len == x->klen &&
                memcmp(e.key.ptr, x->key, x->klen) == 0 &&
                e.value.len == x->vlen &&
                (x->vlen == 0 || memcmp(e.value.ptr, x->val, x->vlen) == 0),
            "round trip: entry %zu differs", i);
    }
    rc = keel_snapshot_reader_next(r, &e, &d);
    FUZZ_ASSERTF(rc == 0, "round trip: after the last entry: %d: %s", rc,
                 d.msg);
    keel_snapshot_reader_close(r);
}

/* Write data as the snapshot and check everything the reader says. */
static void read_snapshot(const scratch *s, const uint8_t *data, size_t size)
{
    keel_diag d = {0};
    keel_snapshot_reader *r = NULL;
    kept_set k = {0};
    uint64_t *seen = NULL;
    uint8_t *prev = NULL;
    fuzz_write_file(s->path, data, size);

    int rc = keel_snapshot_reader_open(s->path, NULL, &r, &d);
    if (rc != KEEL_OK) {
        FUZZ_ASSERTF(rc == KEEL_ECORRUPT || rc == KEEL_EVERSION,
                     "reader_open returned %s: %s", keel_err_name(rc), d.msg);
        FUZZ_ASSERT(r == NULL);
        check_error(s, rc, &d, size, "reader_open");
        goto out;
    }
    check_opened(r, data, size);
    keel_snapshot_info info;
    keel_snapshot_reader_info(r, &info);
    seen = calloc(2 * (size_t)info.tables + 1, sizeof(*seen));
    prev = malloc(KEEL_SNAPSHOT_MAX_KEY_BYTES);
    FUZZ_ASSERT(seen != NULL && prev != NULL);
    size_t prev_len = 0;
    uint32_t table = 0;
    int keep = size <= ROUND_TRIP_MAX_INPUT;
    keel_snapshot_entry e;
    while ((rc = keel_snapshot_reader_next(r, &e, &d)) == 1) { /* F4 */
        FUZZ_ASSERT(e.table_index < info.tables && e.table_index >= table);
        const keel_snapshot_table *tt =
            keel_snapshot_reader_table(r, e.table_index);
        FUZZ_ASSERT(e.table == tt->name);
        FUZZ_ASSERT(e.key.len >= 1 &&
                    e.key.len <= KEEL_SNAPSHOT_MAX_KEY_BYTES &&
                    e.key.ptr != NULL);
        FUZZ_ASSERT(e.value.len <= KEEL_SNAPSHOT_MAX_VALUE_BYTES &&
                    (e.value.len == 0 || e.value.ptr != NULL));
        if (e.table_index != table) {
            table = e.table_index;
            prev_len = 0;
        }
        FUZZ_ASSERTF(prev_len == 0 ||
                         key_cmp(e.key.ptr, e.key.len, prev, prev_len) > 0,
                     "keys of table %u do not ascend", table);
        memcpy(prev, e.key.ptr, e.key.len);
        prev_len = e.key.len;
        seen[2 * table]++;
        seen[2 * table + 1] += e.key.len + e.value.len;
        FUZZ_ASSERT(seen[2 * table] <= tt->entries);
        if (keep) {
            keep = kept_add(&k, &e);
        }
    }
    if (rc == 0) { /* F5 */
        for (uint32_t t = 0; t < info.tables; t++) {
            const keel_snapshot_table *tt = keel_snapshot_reader_table(r, t);
            FUZZ_ASSERTF(
                seen[2 * t] == tt->entries && seen[2 * t + 1] == tt->bytes,
                "table %u: read %llu entries (%llu bytes), manifest "
                "%llu (%llu)",
                t, (unsigned long long)seen[2 * t],
                (unsigned long long)seen[2 * t + 1],
                (unsigned long long)tt->entries, (unsigned long long)tt->bytes);
        }
    } else {
        FUZZ_ASSERTF(rc == KEEL_ECORRUPT, "reader_next returned %s: %s",
                     keel_err_name(rc), d.msg);
        check_error(s, rc, &d, size, "reader_next");
    }
    keel_diag d2 = {0};
    int again = keel_snapshot_reader_next(r, &e, &d2);
    FUZZ_ASSERTF(again == rc, "reader_next returned %d, then %d", rc, again);
    FUZZ_ASSERT(rc == 0 || strcmp(d.msg, d2.msg) == 0);
    if (rc == 0 && keep) {
        round_trip(s, r, &k);
    }
out:
    keel_snapshot_reader_close(r);
    kept_free(&k);
    free(prev);
    free(seen);
}

/*
 * Recompute the checksums a mutation broke (layout: snapshot_format.h).
 * Lengths, counts, positions and contents stay as mutated.
 */
static void seal(uint8_t *b, size_t size)
{
    if (size < KEEL__SNAPSHOT_HEADER_BYTES) {
        return;
    }
    keel__put_u64(b + 16, XXH3_64bits(b, 16));
    if (size < KEEL__SNAPSHOT_MIN_FILE_BYTES) {
        return;
    }
    uint8_t *tr = b + size - KEEL__SNAPSHOT_TRAILER_BYTES;
    uint64_t at = size - KEEL__SNAPSHOT_TRAILER_BYTES;
    uint64_t moff = keel__get_u64(tr + 8);
    uint64_t mlen = keel__get_u64(tr + 16);
    int manifest_ok =
        moff >= KEEL__SNAPSHOT_HEADER_BYTES && moff <= at && at - moff == mlen;
    uint64_t end = manifest_ok ? moff : at;
    uint64_t off = KEEL__SNAPSHOT_HEADER_BYTES;
    void *dctx = NULL;
    uint8_t *raw = NULL;
    while (end - off >= KEEL__SNAPSHOT_FRAME_HEADER_BYTES &&
           keel__get_u32(b + off) == KEEL__SNAPSHOT_FRAME_MAGIC) {
        uint8_t *h = b + off;
        uint32_t stored_len = keel__get_u32(h + 12);
        uint32_t raw_len = keel__get_u32(h + 16);
        if (stored_len > end - off - KEEL__SNAPSHOT_FRAME_HEADER_BYTES) {
            break;
        }
        uint8_t *stored = h + KEEL__SNAPSHOT_FRAME_HEADER_BYTES;
        keel__put_u64(h + 24, XXH3_64bits(stored, stored_len));
        if (raw_len <= SEAL_MAX_RAW) {
            char why[300];
            uint8_t *nr = realloc(raw, raw_len > 0 ? raw_len : 1);
            FUZZ_ASSERT(nr != NULL);
            raw = nr;
            if (keel__snapshot_decompress(&dctx, stored, stored_len, raw,
                                          raw_len, why,
                                          sizeof(why)) == KEEL_OK) {
                keel__put_u64(h + 32, XXH3_64bits(raw, raw_len));
            }
        }
        keel__put_u64(h + 40, XXH3_64bits(h, 40));
        off += KEEL__SNAPSHOT_FRAME_HEADER_BYTES + stored_len;
    }
    keel__snapshot_zstd_free(NULL, dctx);
    free(raw);
    if (manifest_ok) {
        keel__put_u64(tr + 48, XXH3_64bits(b + moff, mlen));
    }
    keel__snapshot_trailer_seal(tr, XXH3_64bits(b, size - 16));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const scratch *s = scratch_get();
    read_snapshot(s, data, size);

    if (size >= KEEL__SNAPSHOT_HEADER_BYTES) {
        uint8_t *sealed = malloc(size);
        FUZZ_ASSERT(sealed != NULL);
        memcpy(sealed, data, size);
        seal(sealed, size);
        if (memcmp(sealed, data, size) != 0) {
            read_snapshot(s, sealed, size);
        }
        free(sealed);
    }
    return 0;
}
