/*
 * fuzz/make_snapshot_corpus.c — writes the seed corpus of the
 * snapshot_reader fuzz target (fuzz/corpus/snapshot_reader/) with the real
 * snapshot writer.
 *
 *   usage: fuzz_make_snapshot_corpus OUTDIR
 *
 * Seeds are starting points for mutation, not expected outputs: each is one
 * snapshot file. A few are written with keel_snapshot_writer_*() (no
 * tables, empty tables, compressible and incompressible values, one entry
 * per frame, keys that are prefixes of each other, a negative zstd level),
 * then copies of one are damaged the ways a file gets damaged: cut inside a
 * frame and inside the trailer, a flipped bit in a frame, a bad magic, a
 * newer version, bytes appended, an edited manifest. The fuzz target reads
 * every input a second time with its checksums recomputed, so a damaged
 * seed also stands for the same edit behind good checksums.
 *
 * Invariants:
 *   G1  Deterministic: fixed meta (creation time included) and a seeded
 *       PRNG, so rerunning it rewrites the same bytes for the same zstd.
 *   G2  Every seed stays a few KB at most: mutation works best on small
 *       inputs.
 *   G3  It checks what it relies on (each clean seed verifies, each
 *       damaged one is refused) and aborts rather than write a corpus that
 *       silently lost a seed's point.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "fuzz/fuzz_helpers.h"
#include "keel/keel.h"
#include "snapshot/snapshot_format.h"

#define MAX_SEED_BYTES 8192

static const keel_snapshot_meta seed_meta = {
    .kernel_id = UINT64_C(0x7A7A75662D6C656B), /* "kel-fuzz" */
    .lsn = 1234,
    .crank = 99,
    .activity_hash = UINT64_C(0x00C0FFEE00C0FFEE),
    .created_unix_ms = UINT64_C(1700000000000),
};

/* splitmix64 */
static uint64_t prng(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* What one clean seed holds. */
typedef struct spec {
    const char *name;
    int level;
    uint32_t frame_bytes;
    uint32_t tables;      /* named t0.. */
    uint32_t entries;     /* per table, except every third: empty */
    uint32_t value_bytes; /* at most */
    int incompressible;   /* PRNG values (raw zstd blocks) */
    int prefix_keys;      /* "a", "aa", "aaa", ...: each a prefix of the next */
} spec;

static void check(int rc, const keel_diag *d, const char *what)
{
    FUZZ_ASSERTF(rc == KEEL_OK, "%s: %s: %s", what, keel_err_name(rc), d->msg);
}

/* Write the seed of s as dir/s->name (G3: it must verify). */
static void write_seed(const char *dir, const spec *s, uint64_t seed)
{
    char *path = fuzz_path(dir, s->name);
    keel_diag d = {0};
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.level = s->level;
    o.frame_bytes = s->frame_bytes;
    keel_snapshot_writer *w = NULL;
    check(keel_snapshot_writer_open(path, &o, &seed_meta, &w, &d), &d, "open");
    uint64_t st = seed;
    uint8_t key[40], val[256];
    FUZZ_ASSERT(s->value_bytes <= sizeof(val));
    for (uint32_t t = 0; t < s->tables; t++) {
        char name[16];
        snprintf(name, sizeof(name), "t%u", t);
        check(keel_snapshot_writer_add_table(w, name, &d), &d, "add_table");
        uint32_t n = t % 3 == 1 ? 0 : s->entries;
        for (uint32_t i = 0; i < n; i++) {
            size_t klen;
            if (s->prefix_keys) {
                klen = i + 1;
                FUZZ_ASSERT(klen <= sizeof(key));
                memset(key, 'a', klen);
            } else {
                klen = (size_t)snprintf((char *)key, sizeof(key), "key%04u", i);
            }
            size_t vlen = s->value_bytes > 0 ? prng(&st) % s->value_bytes : 0;
            for (size_t j = 0; j < vlen; j++) {
                val[j] = s->incompressible ? (uint8_t)prng(&st)
                                           : (uint8_t)("snapshot "[j % 9]);
            }
            check(keel_snapshot_writer_put(w, key, klen, val, vlen, &d), &d,
                  "put");
        }
    }
    check(keel_snapshot_writer_finish(w, NULL, &d), &d, "finish");
    keel_snapshot_writer_close(w);
    check(keel_snapshot_verify(path, NULL, NULL, &d), &d, "verify");
    size_t len = 0;
    uint8_t *b = fuzz_read_file(path, &len);
    FUZZ_ASSERTF(b != NULL && len <= MAX_SEED_BYTES, "%s: %zu bytes", path,
                 len); /* G2 */
    free(b);
    free(path);
}

/* Write buf as dir/name; G3: it must be refused. */
static void write_damaged(const char *dir, const char *name, const uint8_t *buf,
                          size_t len)
{
    char *path = fuzz_path(dir, name);
    fuzz_write_file(path, buf, len);
    keel_diag d = {0};
    int rc = keel_snapshot_verify(path, NULL, NULL, &d);
    FUZZ_ASSERTF(rc == KEEL_ECORRUPT || rc == KEEL_EVERSION,
                 "%s: damaged seed verifies (%s)", name, keel_err_name(rc));
    free(path);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 1;
    }
    static const spec specs[] = {
        {"clean-no-tables", 3, 1024, 0, 0, 0, 0, 0},
        {"clean-empty-tables", 3, 1024, 3, 0, 0, 0, 0},
        {"clean-small", 3, 64, 3, 6, 30, 0, 0},
        {"clean-compressible", 3, 1 << 20, 1, 40, 200, 0, 0},
        {"clean-incompressible", 1, 256, 3, 8, 100, 1, 0},
        {"clean-frame-per-entry", 3, 1, 2, 10, 20, 1, 0},
        {"clean-prefix-keys", 3, 48, 1, 12, 8, 0, 1},
        {"clean-level-negative", -5, 512, 4, 10, 60, 0, 0},
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        write_seed(dir, &specs[i], UINT64_C(0x736E6170) + i); /* G1 */
    }

    /* Damaged copies of clean-small. */
    char *small = fuzz_path(dir, "clean-small");
    size_t len = 0;
    uint8_t *b = fuzz_read_file(small, &len);
    FUZZ_ASSERT(b != NULL && len > 200);
    uint8_t *c = malloc(len + 16);
    FUZZ_ASSERT(c != NULL);
    keel__snapshot_trailer t;
    char why[300];
    uint64_t bad = 0;
    FUZZ_ASSERT(keel__snapshot_trailer_decode(b + len - 72, len, &t, &bad, why,
                                              sizeof(why)) == KEEL_OK);
    uint64_t frame1 = KEEL__SNAPSHOT_HEADER_BYTES +
                      KEEL__SNAPSHOT_FRAME_HEADER_BYTES +
                      keel__get_u32(b + KEEL__SNAPSHOT_HEADER_BYTES + 12);

    write_damaged(dir, "cut-in-frame", b, (size_t)frame1 + 30);
    write_damaged(dir, "cut-in-trailer", b, len - 20);

    memcpy(c, b, len);
    c[frame1 + KEEL__SNAPSHOT_FRAME_HEADER_BYTES + 2] ^= 0x10;
    write_damaged(dir, "flip-in-frame", c, len);

    memcpy(c, b, len);
    memcpy(c, "KSNX", 4);
    write_damaged(dir, "bad-magic", c, len);

    memcpy(c, b, len);
    keel__snapshot_header_encode(c, KEEL_SNAPSHOT_FORMAT + 1);
    write_damaged(dir, "newer-version", c, len);

    memcpy(c, b, len);
    memset(c + len, 0, 16);
    write_damaged(dir, "bytes-appended", c, len + 16);

    /* The manifest's "lsn":1234 as "lsn":-234 (same length), its checksum
     * left stale: the target's sealed pass makes it a bad member. */
    memcpy(c, b, len);
    char *m = (char *)c + t.manifest_off;
    char *lsn = memmem(m, t.manifest_len, "\"lsn\":1234", 10);
    FUZZ_ASSERT(lsn != NULL);
    memcpy(lsn, "\"lsn\":-234", 10);
    write_damaged(dir, "manifest-bad-lsn", c, len);

    /* A table count one too high in the manifest and the trailer alike
     * (same length): once sealed, only the frames disagree (V5). */
    memcpy(c, b, len);
    char *cnt = memmem(m, t.manifest_len, "\"entries\":6", 11);
    FUZZ_ASSERT(cnt != NULL);
    cnt[10] = '7';
    uint8_t *tr = c + len - KEEL__SNAPSHOT_TRAILER_BYTES;
    keel__put_u64(tr + 32, keel__get_u64(tr + 32) + 1);
    write_damaged(dir, "manifest-count-high", c, len);

    /* Manifest edits of the same length that sealing turns into bad JSON,
     * a duplicate table and a kernel id without its "0x". */
    static const struct {
        const char *name;
        const char *from;
        const char *to;
    } edits[] = {
        {"manifest-not-json", "\"crank\":99", "\"crank\":9}"},
        {"manifest-duplicate-table", "\"name\":\"t1\"", "\"name\":\"t0\""},
        {"manifest-kernel-id-bad", "\"kernel_id\":\"0x", "\"kernel_id\":\"1x"},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        size_t n = strlen(edits[i].from);
        FUZZ_ASSERT(strlen(edits[i].to) == n);
        memcpy(c, b, len);
        char *at = memmem(m, t.manifest_len, edits[i].from, n);
        FUZZ_ASSERTF(at != NULL, "%s: no %s", edits[i].name, edits[i].from);
        memcpy(at, edits[i].to, n);
        write_damaged(dir, edits[i].name, c, len);
    }

    free(c);
    free(b);
    free(small);
    return 0;
}
