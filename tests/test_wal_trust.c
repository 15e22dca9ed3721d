/*
 * tests/test_wal_trust.c — the WAL's trust rules, each against the damage
 * or misuse it exists for:
 *   - a vat-forged record inside a payload never turns a torn tail into
 *     corruption (the salted checksum, RD5; the declared-length rule, RD6),
 *     down to a real vat spraying forged records into its vatstore;
 *   - no truncation at or below the floor LSN (W9), and a kernel whose
 *     last, checkpointed record is damaged is refused as damage to
 *     acknowledged records, changing no byte;
 *   - read-only opens and read-only commands change no byte of a state,
 *     damaged or with a real torn tail (W11, K17, AU1, SS7);
 *   - one writer per log, whoever the second one is (W8);
 *   - the activity hash recomputed from `keel wal dump --payload` by a
 *     script in another language (scripts/activity_hash.py).
 * Damage is made for real: bytes flipped, files cut, processes killed.
 */
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "keel/keel.h"
#include "keel/kernel.h"
#include "tests/testutil.h"
#include "wal/wal_format.h"

Suite *wal_trust_suite(void);

#define MAX_FILES 64

/* ---- helpers ------------------------------------------------------------- */

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* Every file under a directory (recursively), for before/after checks. */
typedef struct tree {
    size_t n;
    char *name[MAX_FILES];
    uint8_t *bytes[MAX_FILES];
    size_t len[MAX_FILES];
} tree;

static void tree_walk(tree *t, const char *dir, const char *rel)
{
    DIR *dh = opendir(dir);
    ck_assert_msg(dh != NULL, "opendir %s", dir);
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char *p = tu_path(dir, e->d_name);
        char r[512];
        snprintf(r, sizeof(r), "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        struct stat st;
        ck_assert_int_eq(stat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            tree_walk(t, p, r);
        } else if (S_ISSOCK(st.st_mode)) {
            /* a killed kernel's control.sock: no bytes to compare */
        } else {
            ck_assert_uint_lt(t->n, MAX_FILES);
            t->name[t->n] = strdup(r);
            t->bytes[t->n] = tu_read_file(p, &t->len[t->n]);
            ck_assert_ptr_nonnull(t->bytes[t->n]);
            t->n++;
        }
        free(p);
    }
    closedir(dh);
}

static void tree_take(const char *dir, tree *t)
{
    memset(t, 0, sizeof(*t));
    tree_walk(t, dir, "");
}

static void tree_free(tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->name[i]);
        free(t->bytes[i]);
    }
}

/* Assert dir holds exactly the files and bytes of t; what names the step. */
static void tree_same(const char *dir, const tree *t, const char *what)
{
    tree now;
    tree_take(dir, &now);
    for (size_t i = 0; i < now.n; i++) {
        size_t j = 0;
        while (j < t->n && strcmp(t->name[j], now.name[i]) != 0) {
            j++;
        }
        ck_assert_msg(j < t->n, "%s created %s", what, now.name[i]);
        ck_assert_msg(now.len[i] == t->len[j] &&
                          memcmp(now.bytes[i], t->bytes[j], t->len[j]) == 0,
                      "%s changed %s", what, now.name[i]);
    }
    ck_assert_msg(now.n == t->n, "%s removed a file", what);
    tree_free(&now);
}

/* Where the records of a log lie. */
typedef struct layout {
    size_t n;
    char seg[64];
    uint64_t off[16];
    uint32_t stored[16];
    uint64_t lsn[16];
} layout;

/* Read the log in dir: the last (up to 16) records' places. */
static layout layout_of(const char *dir)
{
    layout l;
    memset(&l, 0, sizeof(l));
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    keel_wal_record rec;
    ck_assert_int_eq(keel_wal_reader_open(dir, NULL, 0, &r, &d), KEEL_OK);
    int rc;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        if (l.n == 16) {
            memmove(l.off, l.off + 1, 15 * sizeof(l.off[0]));
            memmove(l.stored, l.stored + 1, 15 * sizeof(l.stored[0]));
            memmove(l.lsn, l.lsn + 1, 15 * sizeof(l.lsn[0]));
            l.n--;
        }
        snprintf(l.seg, sizeof(l.seg), "%s", rec.segment);
        l.off[l.n] = rec.offset;
        l.stored[l.n] = rec.stored_len;
        l.lsn[l.n] = rec.lsn;
        l.n++;
    }
    ck_assert_msg(rc == 0, "%s", d.msg);
    keel_wal_reader_close(r);
    return l;
}

/* A forged record: a 32-byte header then its checksum, 40 bytes, as a vat
 * could place it in a vatstore value; seed 0 is the unseeded xxh3 a vat
 * can compute without knowing the log's salt. */
static void forge(uint8_t *at, uint64_t lsn, uint64_t seed)
{
    keel_wal_rec_header h = {.kind = KEEL_WAL_CRANK,
                             .lsn = lsn,
                             .crank = 7,
                             .stored_len = 0,
                             .raw_len = 0};
    keel__wal_rec_encode(at, &h);
    put_u64(at + KEEL_WAL_REC_HEADER_BYTES, XXH3_64bits_withSeed(at, 32, seed));
}

/*
 * Three records, the third's 256-byte payload holding a forged record at
 * payload offset 16 with LSN 4 (the LSN after the last), checksummed with
 * the log's salt if salted, else as a vat could. Returns the layout; the
 * file is then cut 10 bytes after the forged record.
 */
static layout forged_log(const char *dir, int salted, uint8_t **seg_bytes,
                         size_t *seg_len)
{
    keel_wal *w = NULL;
    keel_diag d = {0};
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.compress_min_bytes = 0;
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, NULL, &d), KEEL_OK);
    uint8_t p[256];
    uint64_t st = 0x5eed;
    for (size_t i = 0; i < sizeof(p); i++) {
        p[i] = (uint8_t)tu_rand(&st);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, (uint64_t)i + 1, p,
                                         64, NULL, &d),
                         KEEL_OK);
    }
    char *segp = tu_path(dir, "00000000000000000001.seg");
    size_t len = 0;
    uint8_t *b = tu_read_file(segp, &len);
    ck_assert_ptr_nonnull(b);
    uint64_t salt = get_u64(b + 24);
    free(b);
    forge(p + 16, 4, salted ? salt : 0);
    ck_assert_int_eq(
        keel_wal_append(w, KEEL_WAL_CRANK, 3, p, sizeof(p), NULL, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    layout l = layout_of(dir);
    ck_assert_uint_eq(l.n, 3);
    b = tu_read_file(segp, &len);
    ck_assert_ptr_nonnull(b);
    uint64_t cut = l.off[2] + KEEL_WAL_REC_HEADER_BYTES + 16 +
                   KEEL_WAL_REC_OVERHEAD_BYTES + 10;
    ck_assert_uint_lt(cut, len);
    tu_write_file(segp, b, (size_t)cut);
    *seg_len = (size_t)cut;
    *seg_bytes = b;
    free(segp);
    return l;
}

/* The log in dir must read as 2 records and a torn tail at off, and a
 * writer must truncate exactly that tail. */
static void expect_torn_at(const char *dir, uint64_t off)
{
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    keel_wal_record rec;
    keel_wal_tail tail;
    ck_assert_int_eq(keel_wal_reader_open(dir, NULL, 0, &r, &d), KEEL_OK);
    int n = 0, rc;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        n++;
    }
    ck_assert_msg(rc == 0, "reader: %s (%s)", keel_err_name(rc), d.msg);
    ck_assert_int_eq(n, 2);
    keel_wal_reader_tail(r, &tail);
    keel_wal_reader_close(r);
    ck_assert_int_eq(tail.torn, 1);
    ck_assert_uint_eq(tail.offset, off);
    keel_wal *w = NULL;
    keel_wal_open_info info;
    rc = keel_wal_open(dir, NULL, &w, &info, &d);
    ck_assert_msg(rc == KEEL_OK, "writer: %s (%s)", keel_err_name(rc), d.msg);
    ck_assert_int_eq(info.torn, 1);
    ck_assert_uint_eq(info.torn_offset, off);
    ck_assert_uint_eq(info.last_lsn, 2);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
}

/* ---- item: forged records ------------------------------------------------ */

/* A vat's forged record (it cannot know the salt) in the payload of the
 * record being written when the machine lost power; the page holding that
 * record's header never reached the disk (zeros), so the reader can trust
 * no declared length and must scan from the damage on: only the salted
 * checksum tells the forgery from a real record. */
START_TEST(test_wal_trust_vat_forged_record_behind_a_lost_header_is_torn_tail)
{
    char *dir = tu_tmpdir("trust-forge");
    uint8_t *orig = NULL;
    size_t len = 0;
    layout l = forged_log(dir, 0, &orig, &len);
    char *segp = tu_path(dir, l.seg);
    memset(orig + l.off[2], 0, KEEL_WAL_REC_HEADER_BYTES);
    tu_write_file(segp, orig, len);
    expect_torn_at(dir, l.off[2]);
    free(segp);
    free(orig);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Even a forgery that verifies (a vat that read the salt from the segment
 * header) is never taken for the record after the damage while it lies
 * inside the torn record's plausible declared length (RD6). */
START_TEST(test_wal_trust_forged_record_inside_declared_length_is_torn_tail)
{
    char *dir = tu_tmpdir("trust-forge-salt");
    uint8_t *orig = NULL;
    size_t len = 0;
    layout l = forged_log(dir, 1, &orig, &len);
    expect_torn_at(dir, l.off[2]);
    free(orig);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A vat that sprays forged records (LSNs 1..64, unseeded checksums: all a
 * vat can compute) into one vatstore value when it is bootstrapped. */
#define SPRAY_RECORDS 64

static int forger_deliver(void *state, keel_syscall *sys,
                          const keel_delivery *d)
{
    (void)state;
    (void)d;
    uint8_t spray[SPRAY_RECORDS * KEEL_WAL_REC_OVERHEAD_BYTES];
    for (int i = 0; i < SPRAY_RECORDS; i++) {
        forge(spray + i * KEEL_WAL_REC_OVERHEAD_BYTES, (uint64_t)i + 1, 0);
    }
    return keel_syscall_vatstore_set(sys, "forged", spray, sizeof(spray));
}

static const keel_vat_ops forger_ops = {.abi_version = KEEL_VAT_ABI_VERSION,
                                        .name = "forger",
                                        .deliver = forger_deliver};

static const keel_vat_ops *forger_vats(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "forger") == 0 ? &forger_ops : NULL;
}

static void forger_options(keel_kernel_options *o)
{
    keel_kernel_options_init(o);
    o->resolve_vat = forger_vats;
    o->checkpoint_cranks = 1000000; /* the crank stays above the floor */
    o->checkpoint_ms = 1000000;
}

/*
 * End to end: the forger's crank is committed (sync=full: durable), then
 * the process dies without closing (no checkpoint), and a power loss tears
 * that last record: mode 0 cuts it inside the spray's last forged record,
 * mode 1 also loses the page holding its header (zeros). Opening the kernel
 * must treat it as a torn tail, truncate it and recover, not refuse it as
 * corruption.
 */
START_TEST(test_wal_trust_vat_spraying_forged_records_cannot_fake_corruption)
{
    char *root = tu_tmpdir("trust-forger");
    char *state = tu_path(root, "s");
    char *wal = tu_path(state, "wal");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_kernel_options o;
        forger_options(&o);
        keel_kernel *k = NULL;
        keel_diag d = {0};
        int ok = keel_kernel_open(state, &o, &k, &d) == KEEL_OK &&
                 keel_kernel_boot(k,
                                  "{\"bootstrap\": \"f\", \"vats\": {\"f\": "
                                  "{\"builtin\": \"forger\"}}}",
                                  NULL, &d) == KEEL_OK &&
                 keel_kernel_run(k, NULL, NULL, &d) == KEEL_OK;
        if (!ok) {
            fprintf(stderr, "child: %s\n", d.msg);
        }
        _exit(ok ? 0 : 1); /* a crash: no close, no checkpoint */
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* The last record is the forger's crank, the spray verbatim inside. */
    layout l = layout_of(wal);
    size_t last = l.n - 1;
    char *segp = tu_path(wal, l.seg);
    size_t len = 0;
    uint8_t *b = tu_read_file(segp, &len);
    ck_assert_uint_eq(len, l.off[last] + KEEL_WAL_REC_OVERHEAD_BYTES +
                               l.stored[last]);
    uint8_t first[KEEL_WAL_REC_OVERHEAD_BYTES];
    forge(first, 1, 0);
    const uint8_t *at =
        memmem(b + l.off[last], len - l.off[last], first, sizeof(first));
    ck_assert_ptr_nonnull(at);
    uint64_t spray_end =
        (uint64_t)(at - b) + SPRAY_RECORDS * KEEL_WAL_REC_OVERHEAD_BYTES;
    /* torn inside the last forged record: 63 complete ones survive */
    uint64_t cut = spray_end - 20;
    ck_assert_uint_lt(cut, len);
    char *copy = tu_path(root, "copy");
    for (int mode = 0; mode < 2; mode++) {
        tu_rmrf(copy);
        ck_assert_int_eq(mkdir(copy, 0755), 0); /* tu_copy_dir is flat */
        char *cwal = tu_path(copy, "wal");
        char *cstore = tu_path(copy, "store");
        char *sstore = tu_path(state, "store");
        tu_copy_dir(wal, cwal);
        tu_copy_dir(sstore, cstore);
        free(sstore);
        free(cstore);
        char *cseg = tu_path(cwal, l.seg);
        uint8_t *c = malloc(len);
        ck_assert_ptr_nonnull(c);
        memcpy(c, b, len);
        if (mode == 1) {
            memset(c + l.off[last], 0, KEEL_WAL_REC_HEADER_BYTES);
        }
        tu_write_file(cseg, c, (size_t)cut);
        free(c);
        keel_kernel_options o;
        forger_options(&o);
        o.create = 0;
        keel_kernel *k = NULL;
        keel_diag d = {0};
        int rc = keel_kernel_open(copy, &o, &k, &d);
        ck_assert_msg(rc == KEEL_OK, "mode %d: %s (%s)", mode,
                      keel_err_name(rc), d.msg);
        keel_kernel_recovery r;
        keel_kernel_recovery_info(k, &r);
        ck_assert_msg(r.torn == 1,
                      "mode %d: not torn: log %" PRIu64 "..%" PRIu64
                      ", checkpoint %" PRIu64 ", last record LSN %" PRIu64
                      " at %" PRIu64 ", cut at %" PRIu64 " of %zu",
                      mode, r.wal_first_lsn, r.wal_last_lsn, r.checkpoint_lsn,
                      l.lsn[last], l.off[last], cut, len);
        ck_assert_uint_eq(r.torn_offset, l.off[last]);
        ck_assert_uint_eq(r.wal_last_lsn, l.lsn[last] - 1);
        ck_assert_int_eq(keel_kernel_close(k, &d), KEEL_OK);
        free(cseg);
        free(cwal);
    }
    free(copy);
    free(b);
    free(segp);
    free(wal);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* ---- item: the floor ----------------------------------------------------- */

/* Three records, the last with one bit flipped in its payload. */
static layout flipped_log(const char *dir, tree *before)
{
    keel_wal *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_open(dir, NULL, &w, NULL, &d), KEEL_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, (uint64_t)i + 1,
                                         "a write-set of some bytes", 25, NULL,
                                         &d),
                         KEEL_OK);
    }
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    layout l = layout_of(dir);
    char *segp = tu_path(dir, l.seg);
    size_t len = 0;
    uint8_t *b = tu_read_file(segp, &len);
    b[l.off[2] + KEEL_WAL_REC_HEADER_BYTES + 3] ^= 0x10;
    tu_write_file(segp, b, len);
    free(b);
    free(segp);
    tree_take(dir, before);
    return l;
}

START_TEST(test_wal_trust_no_truncation_at_or_below_the_floor)
{
    char *dir = tu_tmpdir("trust-floor");
    tree before;
    layout l = flipped_log(dir, &before);
    keel_wal_options o;
    keel_wal_options_init(&o);
    keel_wal *w = NULL;
    keel_wal_open_info info;
    keel_diag d = {0};
    char want[200];
    snprintf(want, sizeof(want),
             "%s: offset %" PRIu64 ": record LSN 3 is damaged (checksum", l.seg,
             l.off[2]);
    for (int ro = 0; ro < 2; ro++) {
        o.floor_lsn = 3; /* the store proves LSN 3 acknowledged */
        o.read_only = ro;
        ck_assert_int_eq(keel_wal_open(dir, &o, &w, &info, &d), KEEL_ECORRUPT);
        ck_assert_ptr_null(w);
        ck_assert_msg(strstr(d.msg, want) != NULL, "%s", d.msg);
        ck_assert_msg(strstr(d.msg, "checkpoint at LSN 3 proves it was "
                                    "acknowledged") != NULL,
                      "%s", d.msg);
        ck_assert_msg(strstr(d.msg, "damage to acknowledged records") != NULL,
                      "%s", d.msg);
        tree_same(dir, &before, "a refused open");
    }
    /* Below the floor nothing is proved: an ordinary torn tail. */
    o.floor_lsn = 2;
    o.read_only = 0;
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, &info, &d), KEEL_OK);
    ck_assert_int_eq(info.torn, 1);
    ck_assert_uint_eq(info.last_lsn, 2);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    tree_free(&before);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A read-only open of a log with a torn tail: reported, not truncated, no
 * lock file made, appends and retirement refused. */
START_TEST(test_wal_trust_read_only_open_changes_nothing)
{
    char *dir = tu_tmpdir("trust-ro");
    tree before;
    flipped_log(dir, &before);
    tree_free(&before);
    char *lock = tu_path(dir, "lock");
    ck_assert_int_eq(unlink(lock), 0);
    tree_take(dir, &before);
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.read_only = 1;
    o.sync = KEEL_SYNC_GROUP;
    keel_wal *w = NULL;
    keel_wal_open_info info;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, &info, &d), KEEL_OK);
    ck_assert_int_eq(info.torn, 1);
    ck_assert_uint_eq(info.last_lsn, 2);
    ck_assert_uint_eq(keel_wal_durable_lsn(w), 2);
    ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, 9, "x", 1, NULL, &d),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "read-only"));
    ck_assert_int_eq(keel_wal_retire(w, 3, NULL, &d), KEEL_EINVAL);
    ck_assert_int_eq(keel_wal_sync(w, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    tree_same(dir, &before, "a read-only open");
    tree_free(&before);
    free(lock);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- item: one writer ---------------------------------------------------- */

START_TEST(test_wal_trust_second_writer_is_refused)
{
    char *dir = tu_tmpdir("trust-lock");
    keel_wal *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_open(dir, NULL, &w, NULL, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, 1, "a", 1, NULL, &d),
                     KEEL_OK);
    tree before;
    tree_take(dir, &before);
    /* Another process: refused, naming the directory; a reader is not. */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_wal *w2 = NULL;
        keel_diag d2 = {0};
        int rc = keel_wal_open(dir, NULL, &w2, NULL, &d2);
        int ok = rc == KEEL_EBUSY && w2 == NULL &&
                 strstr(d2.msg, dir) != NULL &&
                 strstr(d2.msg, "one writer at a time") != NULL;
        keel_wal_options o;
        keel_wal_options_init(&o);
        o.read_only = 1;
        ok = ok && keel_wal_open(dir, &o, &w2, NULL, &d2) == KEEL_OK &&
             keel_wal_last_lsn(w2) == 1;
        keel_wal_close(w2, NULL);
        if (!ok) {
            fprintf(stderr, "child: %s: %s\n", keel_err_name(rc), d2.msg);
        }
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "a second writer in another process was not refused");
    /* This process, another handle: refused as well. */
    keel_wal *w3 = NULL;
    ck_assert_int_eq(keel_wal_open(dir, NULL, &w3, NULL, &d), KEEL_EBUSY);
    ck_assert_ptr_null(w3);
    tree_same(dir, &before, "a refused writer");
    tree_free(&before);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    /* Released: the next writer opens and goes on. */
    ck_assert_int_eq(keel_wal_open(dir, NULL, &w3, NULL, &d), KEEL_OK);
    ck_assert_uint_eq(keel_wal_last_lsn(w3), 1);
    ck_assert_int_eq(keel_wal_close(w3, &d), KEEL_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* `keel wal demo STATE/wal` beside an open kernel: refused, nothing
 * appended, and the state still opens. */
START_TEST(test_wal_trust_cli_wal_demo_beside_a_kernel_is_refused)
{
    char *root = tu_tmpdir("trust-demo");
    char *state = tu_path(root, "s");
    char *wal = tu_path(state, "wal");
    char *err = NULL;
    const char *run[] = {"run", state, "--config", KEEL_MIXED_JSON, NULL};
    ck_assert_int_eq(tu_run_keel(run, NULL, &err), 0);
    free(err);
    keel_kernel_options ko;
    keel_kernel_options_init(&ko);
    ko.create = 0;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_kernel_open(state, &ko, &k, &d), KEEL_OK);
    tree before;
    tree_take(wal, &before);
    const char *demo[] = {"wal", "demo", wal, "--n", "3", NULL};
    ck_assert_int_eq(tu_run_keel(demo, NULL, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "open for writing by another") != NULL &&
                      strstr(err, wal) != NULL,
                  "%s", err);
    free(err);
    tree_same(wal, &before, "keel wal demo");
    tree_free(&before);
    ck_assert_int_eq(keel_kernel_close(k, &d), KEEL_OK);
    const char *status[] = {"status", state, NULL};
    ck_assert_int_eq(tu_run_keel(status, NULL, &err), 0);
    free(err);
    free(wal);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* A writer waits for a reader's shared lock on STATE/lock (a status, a
 * snapshot create) instead of failing, and is refused at once by a
 * writer's exclusive one. */
START_TEST(test_wal_trust_writer_waits_for_readers_not_for_writers)
{
    char *root = tu_tmpdir("trust-wait");
    char *state = tu_path(root, "s");
    char *lock = tu_path(state, "lock");
    char *err = NULL;
    const char *run[] = {"run", state, "--config", KEEL_MIXED_JSON, NULL};
    ck_assert_int_eq(tu_run_keel(run, NULL, &err), 0);
    free(err);
    for (int exclusive = 0; exclusive < 2; exclusive++) {
        int fd = open(lock, O_RDONLY);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(flock(fd, exclusive ? LOCK_EX : LOCK_SH), 0);
        int go[2];
        ck_assert_int_eq(pipe(go), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(go[0]);
            close(fd); /* the parent's lock stays: same open file */
            keel_kernel_options o;
            keel_kernel_options_init(&o);
            o.create = 0;
            keel_kernel *k = NULL;
            keel_diag d = {0};
            ck_assert_int_eq(write(go[1], "x", 1), 1); /* about to open */
            int rc = keel_kernel_open(state, &o, &k, &d);
            keel_kernel_close(k, NULL);
            _exit(rc == KEEL_OK ? 0 : rc == KEEL_EBUSY ? 3 : 1);
        }
        close(go[1]);
        char c;
        ck_assert_int_eq(read(go[0], &c, 1), 1);
        close(go[0]);
        if (!exclusive) {
            /* the child is waiting (or about to): release */
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        int st = 0;
        if (exclusive) {
            ck_assert_int_eq(waitpid(pid, &st, 0), pid);
            close(fd);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 3,
                          "a writer's lock: expected KEEL_EBUSY at once");
        } else {
            close(fd); /* releases the shared lock */
            ck_assert_int_eq(waitpid(pid, &st, 0), pid);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                          "a reader's lock: the writer did not wait (%d)",
                          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
    }
    free(lock);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* ---- item: read-only commands -------------------------------------------- */

/* Run one keel command on a state and assert it changed no byte. */
static int run_unchanged(const char *state, const char *const *args, char **err)
{
    tree before;
    tree_take(state, &before);
    int rc = tu_run_keel(args, NULL, err);
    char what[160];
    snprintf(what, sizeof(what), "keel %s %s", args[0],
             args[1] != NULL && args[1][0] == '-' ? args[1] : "");
    tree_same(state, &before, what);
    tree_free(&before);
    return rc;
}

/* The status --json object's activity hash (16 hex digits) into hash. */
static void status_hash(const char *state, char *hash)
{
    char *out = NULL, *err = NULL;
    const char *st[] = {"status", state, "--json", NULL};
    ck_assert_msg(tu_run_keel(st, &out, &err) == 0, "status: %s", err);
    const char *h = strstr(out, "\"activity_hash\":\"");
    ck_assert_ptr_nonnull(h);
    memcpy(hash, h + 17, 16);
    hash[16] = '\0';
    free(out);
    free(err);
}

/* One flipped bit in the payload of the last record of a cleanly closed
 * state (the store's checkpoint covers it): every read-only command leaves
 * every byte of every file as it was and status reports the damage as
 * damage to acknowledged records; `keel run` refuses the same way; the
 * way out the message names (snapshot create + restore) works. */
START_TEST(test_wal_trust_flipped_last_record_read_only_commands_change_nothing)
{
    char *root = tu_tmpdir("trust-flip");
    char *state = tu_path(root, "s");
    char *wal = tu_path(state, "wal");
    char *snap = tu_path(root, "s.ksnap");
    char *snap2 = tu_path(root, "s2.ksnap");
    char *restored = tu_path(root, "r");
    char *err = NULL;
    const char *run[] = {"run", state, "--config", KEEL_MIXED_JSON, NULL};
    ck_assert_int_eq(tu_run_keel(run, NULL, &err), 0);
    free(err);
    char hash[17];
    status_hash(state, hash);
    layout l = layout_of(wal);
    char *segp = tu_path(wal, l.seg);
    size_t len = 0;
    uint8_t *b = tu_read_file(segp, &len);
    size_t last = l.n - 1;
    ck_assert_uint_eq(len, l.off[last] + KEEL_WAL_REC_OVERHEAD_BYTES +
                               l.stored[last]);
    b[l.off[last] + KEEL_WAL_REC_HEADER_BYTES + l.stored[last] / 2] ^= 0x01;
    tu_write_file(segp, b, len);
    free(b);
    free(segp);

    char want[200];
    snprintf(want, sizeof(want), "record LSN %" PRIu64 " is damaged",
             l.lsn[last]);
    char proves[120];
    snprintf(proves, sizeof(proves),
             "checkpoint at LSN %" PRIu64 " proves it was acknowledged",
             l.lsn[last]);
    const char *status[] = {"status", state, NULL};
    const char *check[] = {"recover", state, "--check", NULL};
    const char *runs[] = {"run", state, NULL};
    const char *const *refusing[] = {status, check, runs};
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(run_unchanged(state, refusing[i], &err), 1);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, want) && strstr(err, proves) &&
                          strstr(err, "damage to acknowledged records") &&
                          !strstr(err, "never acknowledged") &&
                          !strstr(err, "ahead of the WAL"),
                      "keel %s: %s", refusing[i][0], err);
        free(err);
    }
    const char *verify[] = {"wal", "verify", wal, NULL};
    ck_assert_int_eq(run_unchanged(state, verify, &err), 1);
    free(err);
    const char *dump[] = {"wal", "dump", wal, "--json", "--payload", NULL};
    ck_assert_int_eq(run_unchanged(state, dump, &err), 0);
    free(err);
    const char *create[] = {"snapshot", "create", state, snap, NULL};
    ck_assert_int_eq(run_unchanged(state, create, &err), 0);
    free(err);
    /* The way out: the store holds every acknowledged effect. */
    const char *restore[] = {"snapshot", "restore", snap, restored, NULL};
    ck_assert_int_eq(tu_run_keel(restore, NULL, &err), 0);
    free(err);
    char hash2[17];
    status_hash(restored, hash2);
    ck_assert_str_eq(hash2, hash);
    (void)snap2;
    free(snap2);
    free(restored);
    free(snap);
    free(wal);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* A real torn tail (a kill, then the last record cut): the read-only
 * commands report it and change no byte; the next writer truncates it. */
START_TEST(test_wal_trust_torn_tail_read_only_commands_change_nothing)
{
    char *root = tu_tmpdir("trust-torn");
    char *state = tu_path(root, "s");
    char *wal = tu_path(state, "wal");
    char *snap = tu_path(root, "s.ksnap");
    char *err = NULL;
    const char *run[] = {"run",
                         state,
                         "--config",
                         KEEL_MIXED_JSON,
                         "--checkpoint-cranks",
                         "1000000",
                         "--checkpoint-ms",
                         "1000000",
                         NULL};
    setenv("KEEL_CRASH_POINT", "commit-after/crank:40", 1);
    int rc = tu_run_keel(run, NULL, &err);
    unsetenv("KEEL_CRASH_POINT");
    ck_assert_msg(rc == 128 + 9, "run: %d (%s)", rc, err);
    free(err);
    layout l = layout_of(wal);
    size_t last = l.n - 1;
    char *segp = tu_path(wal, l.seg);
    size_t len = 0;
    uint8_t *b = tu_read_file(segp, &len);
    uint64_t cut = l.off[last] + KEEL_WAL_REC_HEADER_BYTES + 5;
    tu_write_file(segp, b, (size_t)cut);
    free(b);

    const char *status[] = {"status", state, NULL};
    ck_assert_int_eq(run_unchanged(state, status, &err), 0);
    ck_assert_msg(strstr(err, "torn tail") && strstr(err, "left as it is"),
                  "%s", err);
    free(err);
    const char *check[] = {"recover", state, "--check", NULL};
    ck_assert_int_eq(run_unchanged(state, check, &err), 0);
    free(err);
    const char *verify[] = {"wal", "verify", wal, NULL};
    ck_assert_int_eq(run_unchanged(state, verify, &err), 1);
    free(err);
    const char *dump[] = {"wal", "dump", wal, "--payload", NULL};
    ck_assert_int_eq(run_unchanged(state, dump, &err), 0);
    free(err);
    const char *create[] = {"snapshot", "create", state, snap, NULL};
    ck_assert_int_eq(run_unchanged(state, create, &err), 0);
    free(err);
    /* A writer repairs it. */
    const char *recover[] = {"recover", state, NULL};
    char *out = NULL;
    ck_assert_int_eq(tu_run_keel(recover, &out, &err), 0);
    ck_assert_msg(strstr(out, "truncated"), "%s", out);
    free(out);
    free(err);
    struct stat st;
    ck_assert_int_eq(stat(segp, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, l.off[last]);
    free(segp);
    free(snap);
    free(wal);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* ---- the activity hash from outside -------------------------------------- */

/* scripts/activity_hash.py, next to vats/ in the source tree. */
static char *script_path(void)
{
    const char *mixed = KEEL_MIXED_JSON;
    const char *tail = "vats/mixed.json";
    size_t n = strlen(mixed) - strlen(tail);
    ck_assert_str_eq(mixed + n, tail);
    char *p = malloc(n + 64);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n + 64, "%.*sscripts/activity_hash.py", (int)n, mixed);
    return p;
}

START_TEST(test_wal_trust_script_recomputes_the_activity_hash)
{
    char *root = tu_tmpdir("trust-hash");
    char *state = tu_path(root, "s");
    char *wal = tu_path(state, "wal");
    char *dumpf = tu_path(root, "dump.json");
    char *outf = tu_path(root, "hash.txt");
    char *err = NULL, *out = NULL;
    /* mixed: cranks, out-of-crank syscalls (timers, jobs) and kernel ops
     * (boot, terminations), some payloads compressed */
    const char *run[] = {"run", state, "--config", KEEL_MIXED_JSON, NULL};
    ck_assert_int_eq(tu_run_keel(run, NULL, &err), 0);
    free(err);
    const char *dump[] = {"wal", "dump", wal, "--json", "--payload", NULL};
    ck_assert_int_eq(tu_run_keel(dump, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"kind\":\"out-of-crank\""));
    ck_assert_ptr_nonnull(strstr(out, "\"kind\":\"kernel-op\""));
    tu_write_file(dumpf, out, strlen(out));
    free(out);
    free(err);
    char *script = script_path();
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s < %s > %s", script, dumpf,
             outf);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
    size_t len = 0;
    char *got = (char *)tu_read_file(outf, &len);
    ck_assert_uint_eq(len, 17);
    got[16] = '\0';
    char hash[17];
    status_hash(state, hash);
    ck_assert_str_eq(got, hash);
    free(got);
    free(script);
    free(outf);
    free(dumpf);
    free(wal);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

Suite *wal_trust_suite(void)
{
    Suite *s = suite_create("wal_trust");
    TCase *tc = tcase_create("wal");
    tcase_set_timeout(tc, 60);
    tcase_add_test(
        tc, test_wal_trust_vat_forged_record_behind_a_lost_header_is_torn_tail);
    tcase_add_test(
        tc, test_wal_trust_forged_record_inside_declared_length_is_torn_tail);
    tcase_add_test(
        tc, test_wal_trust_vat_spraying_forged_records_cannot_fake_corruption);
    tcase_add_test(tc, test_wal_trust_no_truncation_at_or_below_the_floor);
    tcase_add_test(tc, test_wal_trust_read_only_open_changes_nothing);
    tcase_add_test(tc, test_wal_trust_second_writer_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_wal_trust_cli_wal_demo_beside_a_kernel_is_refused);
    tcase_add_test(tc, test_wal_trust_writer_waits_for_readers_not_for_writers);
    tcase_add_test(
        tc,
        test_wal_trust_flipped_last_record_read_only_commands_change_nothing);
    tcase_add_test(tc,
                   test_wal_trust_torn_tail_read_only_commands_change_nothing);
    tcase_add_test(tc, test_wal_trust_script_recomputes_the_activity_hash);
    suite_add_tcase(s, tc);
    return s;
}
