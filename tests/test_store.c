/*
 * tests/test_store.c — the kernel's LMDB store (store/store.h): the
 * write-set in front of the overlay in front of the write transaction,
 * the overlay's coalescing (a key put, deleted and put again across
 * cranks; tombstones over checkpointed keys; hot keys; a burst; its hash
 * index), checkpoints and what a close or a SIGKILL keeps, the merged
 * next_key against a reference model (also with frequent checkpoints,
 * reopens and replayed encodings), the encoded write-set (layout, round
 * trip, every malformed kind), the per-value checksum against bytes
 * flipped inside data.mdb, the meta table (format version, kernel id),
 * the sticky FAILED state after a full map (reported by the checkpoint),
 * the map growing from a tiny one up to its ceiling, stale reader slots of
 * killed readers, and, through a kernel and `keel run --store-max`, a
 * store that reaches its ceiling or a real file size limit (RLIMIT_FSIZE
 * in a child) failing cleanly and recovering to an uninterrupted run.
 *
 * The write-set and overlay as append logs with a hash index: a key
 * rewritten many times in one write-set, scans seeing a transaction's own
 * writes in key order, delete then put again, index growth, an abort of a
 * large write-set, a million ops into one checkpoint; and, counting the
 * program's malloc/calloc/realloc calls (LMDB's too), zero allocations in
 * steady-state transactions.
 *
 * The reference model is a sorted array of (key, value) with linear-scan
 * queries: slow and obviously right. Random tests print their seed (and
 * step) in every failure message.
 */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "common/diag.h"
#include "common/io_fault.h"
#include "keel/wal.h"
#include "store/replay.h"
#include "store/store.h"
#include "store/writeset_format.h"
#include "keel/kernel.h"
#include "tests/testutil.h"

Suite *store_suite(void);

#define SEED_MODEL      0x6b65656c73746f01ull
#define SEED_ROUND_TRIP 0x6b65656c73746f02ull
#define SEED_CRASH      0x6b65656c73746f03ull
#define SEED_FLIP       0x6b65656c73746f04ull
#define KID             0x6b65656c53544f52ull

#ifdef KEEL_LONG_TESTS
#define MODEL_STEPS         200000
#define CRASH_RANDOM_ROUNDS 40
#else
#define MODEL_STEPS         12000
#define CRASH_RANDOM_ROUNDS 6
#endif

/* ---------------------------------------------------------------------
 * Store helpers.
 */

static keel__store *open_map(const char *dir, uint64_t kid, uint64_t map)
{
    keel__store_options o;
    keel__store_options_init(&o);
    if (map != 0) {
        o.map_bytes = map;
    }
    keel__store *s = NULL;
    keel_diag d = {0};
    int rc = keel__store_open(dir, &o, kid, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "keel__store_open %s: %s: %s", dir,
                  keel_err_name(rc), d.msg);
    ck_assert_ptr_nonnull(s);
    return s;
}

static keel__store *open_ok(const char *dir)
{
    return open_map(dir, KID, 0);
}

/* Open with an initial map and a ceiling (0: the defaults). */
static keel__store *open_limits(const char *dir, uint64_t map, uint64_t max)
{
    keel__store_options o;
    keel__store_options_init(&o);
    o.map_bytes = map != 0 ? map : o.map_bytes;
    o.map_max_bytes = max != 0 ? max : o.map_max_bytes;
    keel__store *s = NULL;
    keel_diag d = {0};
    int rc = keel__store_open(dir, &o, KID, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "keel__store_open %s: %s: %s", dir,
                  keel_err_name(rc), d.msg);
    return s;
}

static char *store_dir(const char *tag)
{
    char *tmp = tu_tmpdir(tag);
    char *dir = tu_path(tmp, "store");
    free(tmp);
    return dir;
}

static void rm_store(char *dir)
{
    tu_rmrf(dir);
    char *parent = strdup(dir);
    ck_assert_ptr_nonnull(parent);
    *strrchr(parent, '/') = '\0';
    tu_rmrf(parent);
    free(parent);
    free(dir);
}

static void begin_ok(keel__store *s)
{
    keel_diag d = {0};
    int rc = keel__store_ws_begin(s, &d);
    ck_assert_msg(rc == KEEL_OK, "ws_begin: %s: %s", keel_err_name(rc), d.msg);
}

static void put_ok(keel__store *s, const char *k, const char *v)
{
    keel_diag d = {0};
    int rc = keel__store_ws_put(s, k, strlen(k), v, strlen(v), &d);
    ck_assert_msg(rc == KEEL_OK, "ws_put %s: %s: %s", k, keel_err_name(rc),
                  d.msg);
}

static void del_ok(keel__store *s, const char *k)
{
    keel_diag d = {0};
    int rc = keel__store_ws_delete(s, k, strlen(k), &d);
    ck_assert_msg(rc == KEEL_OK, "ws_delete %s: %s: %s", k, keel_err_name(rc),
                  d.msg);
}

static void apply_ok(keel__store *s, uint64_t lsn)
{
    keel_diag d = {0};
    int rc = keel__store_ws_apply(s, lsn, &d);
    ck_assert_msg(rc == KEEL_OK, "ws_apply %" PRIu64 ": %s: %s", lsn,
                  keel_err_name(rc), d.msg);
    ck_assert_uint_eq(keel__store_applied_lsn(s), lsn);
}

static void checkpoint_ok(keel__store *s)
{
    keel_diag d = {0};
    int rc = keel__store_checkpoint(s, &d);
    ck_assert_msg(rc == KEEL_OK, "checkpoint: %s: %s", keel_err_name(rc),
                  d.msg);
    ck_assert_uint_eq(keel__store_checkpoint_lsn(s),
                      keel__store_applied_lsn(s));
}

/* Assert that k reads as v (NULL: absent). */
static void expect_get(keel__store *s, const char *k, const char *v)
{
    keel_bytes b = {0};
    keel_diag d = {0};
    int rc = keel__store_get(s, k, strlen(k), &b, &d);
    if (v == NULL) {
        ck_assert_msg(rc == 0, "get %s: expected absent, got %d (%s)", k, rc,
                      d.msg);
    } else {
        ck_assert_msg(rc == 1, "get %s: expected \"%s\", got %d (%s)", k, v, rc,
                      d.msg);
        ck_assert_msg(b.len == strlen(v) && memcmp(b.ptr, v, b.len) == 0,
                      "get %s: expected \"%s\", got \"%.*s\"", k, v, (int)b.len,
                      (const char *)b.ptr);
    }
}

/* Assert the next key after `after` with prefix (NULL: none). */
static void expect_next(keel__store *s, const char *after, const char *prefix,
                        const char *want)
{
    keel_bytes k = {0};
    keel_diag d = {0};
    int rc = keel__store_next_key(s, after, strlen(after), prefix,
                                  strlen(prefix), &k, &d);
    if (want == NULL) {
        ck_assert_msg(rc == 0, "next_key(%s, %s): expected none, got %d %.*s",
                      after, prefix, rc, rc == 1 ? (int)k.len : 0,
                      rc == 1 ? (const char *)k.ptr : "");
    } else {
        ck_assert_msg(rc == 1, "next_key(%s, %s): expected %s, got %d (%s)",
                      after, prefix, want, rc, d.msg);
        ck_assert_msg(k.len == strlen(want) && memcmp(k.ptr, want, k.len) == 0,
                      "next_key(%s, %s): expected %s, got %.*s", after, prefix,
                      want, (int)k.len, (const char *)k.ptr);
    }
}

static uint64_t count_ok(keel__store *s, const char *prefix)
{
    uint64_t n = 0;
    keel_diag d = {0};
    int rc = keel__store_count_prefix(s, prefix, strlen(prefix), &n, &d);
    ck_assert_msg(rc == KEEL_OK, "count_prefix %s: %s: %s", prefix,
                  keel_err_name(rc), d.msg);
    return n;
}

/* ---------------------------------------------------------------------
 * The reference model: a sorted array.
 */

typedef struct ent {
    uint8_t *k;
    size_t kl;
    uint8_t *v;
    size_t vl;
} ent;

typedef struct model {
    ent *e;
    size_t n;
    size_t cap;
} model;

static int tkeycmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al > bl) - (al < bl);
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n > 0 ? n : 1);
    ck_assert_ptr_nonnull(d);
    if (n > 0) {
        memcpy(d, p, n);
    }
    return d;
}

/* Index of the first entry >= k; *found if equal. */
static size_t model_lb(const model *m, const uint8_t *k, size_t kl, int *found)
{
    size_t lo = 0;
    size_t hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tkeycmp(m->e[mid].k, m->e[mid].kl, k, kl) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = lo < m->n && tkeycmp(m->e[lo].k, m->e[lo].kl, k, kl) == 0;
    return lo;
}

static void model_put(model *m, const void *k, size_t kl, const void *v,
                      size_t vl)
{
    int found = 0;
    size_t i = model_lb(m, k, kl, &found);
    if (found) {
        free(m->e[i].v);
        m->e[i].v = dup_bytes(v, vl);
        m->e[i].vl = vl;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap > 0 ? 2 * m->cap : 64;
        m->e = realloc(m->e, m->cap * sizeof(*m->e));
        ck_assert_ptr_nonnull(m->e);
    }
    memmove(&m->e[i + 1], &m->e[i], (m->n - i) * sizeof(*m->e));
    m->e[i] = (ent){dup_bytes(k, kl), kl, dup_bytes(v, vl), vl};
    m->n++;
}

static void model_del(model *m, const void *k, size_t kl)
{
    int found = 0;
    size_t i = model_lb(m, k, kl, &found);
    if (found) {
        free(m->e[i].k);
        free(m->e[i].v);
        memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof(*m->e));
        m->n--;
    }
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].k);
        free(m->e[i].v);
    }
    free(m->e);
    memset(m, 0, sizeof(*m));
}

static void model_copy(model *dst, const model *src)
{
    model_free(dst);
    for (size_t i = 0; i < src->n; i++) {
        model_put(dst, src->e[i].k, src->e[i].kl, src->e[i].v, src->e[i].vl);
    }
}

static int starts_with(const uint8_t *k, size_t kl, const uint8_t *p, size_t pl)
{
    return kl >= pl && (pl == 0 || memcmp(k, p, pl) == 0);
}

/* Linear scan: the smallest key > after with prefix, or NULL. */
static const ent *model_next(const model *m, const uint8_t *after, size_t al,
                             const uint8_t *p, size_t pl)
{
    const ent *r = NULL;
    for (size_t i = 0; i < m->n && r == NULL; i++) {
        if (tkeycmp(m->e[i].k, m->e[i].kl, after, al) > 0 &&
            starts_with(m->e[i].k, m->e[i].kl, p, pl)) {
            r = &m->e[i];
        }
    }
    return r;
}

static uint64_t model_count(const model *m, const uint8_t *p, size_t pl)
{
    uint64_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        n += (uint64_t)starts_with(m->e[i].k, m->e[i].kl, p, pl);
    }
    return n;
}

/* The whole visible store, walked with next_key and get, equals m. */
static void expect_equals(keel__store *s, const model *m, const char *ctx)
{
    uint8_t prev[KEEL__STORE_MAX_KEY_BYTES];
    size_t prev_len = 0;
    keel_diag d = {0};
    for (size_t i = 0; i <= m->n; i++) {
        keel_bytes k = {0};
        int rc = keel__store_next_key(s, prev, prev_len, "", 0, &k, &d);
        if (i == m->n) {
            ck_assert_msg(rc == 0,
                          "%s: key %zu: store has more keys than the"
                          " model (%d)",
                          ctx, i, rc);
            break;
        }
        ck_assert_msg(rc == 1, "%s: key %zu of %zu: next_key %d (%s)", ctx, i,
                      m->n, rc, d.msg);
        ck_assert_msg(tkeycmp(k.ptr, k.len, m->e[i].k, m->e[i].kl) == 0,
                      "%s: key %zu differs from the model", ctx, i);
        memcpy(prev, k.ptr, k.len);
        prev_len = k.len;
        keel_bytes v = {0};
        rc = keel__store_get(s, prev, prev_len, &v, &d);
        ck_assert_msg(rc == 1, "%s: get key %zu: %d (%s)", ctx, i, rc, d.msg);
        ck_assert_msg(v.len == m->e[i].vl &&
                          (v.len == 0 || memcmp(v.ptr, m->e[i].v, v.len) == 0),
                      "%s: value of key %zu differs from the model", ctx, i);
    }
    uint64_t n = 0;
    ck_assert_int_eq(keel__store_count_prefix(s, "", 0, &n, &d), KEEL_OK);
    ck_assert_msg(n == m->n, "%s: count %" PRIu64 ", model %zu", ctx, n, m->n);
}

/* ---------------------------------------------------------------------
 * Write-set behaviour.
 */

START_TEST(test_store_ws_put_get_delete_survive_apply_and_reopen)
{
    char *dir = store_dir("store-basic");
    keel__store *s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 0);
    ck_assert_uint_eq(keel__store_kernel_id(s), KID);

    begin_ok(s);
    put_ok(s, "kp.12", "unresolved");
    put_ok(s, "rq.17", "send ko5");
    put_ok(s, "vs.v2.counter", "1");
    expect_get(s, "kp.12", "unresolved");
    ck_assert_uint_eq(keel__store_ws_count(s), 3);
    del_ok(s, "rq.17");
    expect_get(s, "rq.17", NULL);
    apply_ok(s, 1);
    ck_assert_uint_eq(keel__store_ws_count(s), 0);
    expect_get(s, "kp.12", "unresolved");
    expect_get(s, "rq.17", NULL);
    expect_get(s, "vs.v2.counter", "1");

    begin_ok(s);
    put_ok(s, "vs.v2.counter", "2");
    del_ok(s, "kp.12");
    apply_ok(s, 2);
    expect_get(s, "vs.v2.counter", "2");
    expect_get(s, "kp.12", NULL);
    ck_assert_uint_gt(keel__store_pending_bytes(s), 0);
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    keel__store_close(s);

    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 2);
    ck_assert_uint_eq(keel__store_checkpoint_lsn(s), 2);
    expect_get(s, "vs.v2.counter", "2");
    expect_get(s, "kp.12", NULL);
    expect_get(s, "rq.17", NULL);
    ck_assert_uint_eq(count_ok(s, ""), 1);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_ws_abort_leaves_no_trace)
{
    char *dir = store_dir("store-abort");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "cl.v1.k.ko1", "o+1");
    put_ok(s, "cl.v1.k.ko2", "o+2");
    apply_ok(s, 1);

    begin_ok(s);
    put_ok(s, "cl.v1.k.ko1", "changed");
    del_ok(s, "cl.v1.k.ko2");
    put_ok(s, "cl.v1.k.ko3", "o+3");
    keel__store_ws_abort(s);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 1);
    expect_get(s, "cl.v1.k.ko1", "o+1");
    expect_get(s, "cl.v1.k.ko2", "o+2");
    expect_get(s, "cl.v1.k.ko3", NULL);
    ck_assert_uint_eq(count_ok(s, "cl.v1."), 2);

    /* A new write-set starts empty: the aborted ops are not in it. */
    begin_ok(s);
    ck_assert_uint_eq(keel__store_ws_count(s), 0);
    ck_assert_uint_eq(keel__store_ws_encode_bound(s), 4);
    uint8_t buf[4];
    size_t len = 0;
    ck_assert_int_eq(keel__store_ws_encode(s, buf, sizeof(buf), &len, NULL),
                     KEEL_OK);
    ck_assert_uint_eq(len, 4);
    ck_assert_uint_eq(keel__get_u32(buf), 0);
    apply_ok(s, 2);
    expect_get(s, "cl.v1.k.ko1", "o+1");
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_ws_reads_see_write_set_first)
{
    char *dir = store_dir("store-shadow");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "a.1", "one");
    put_ok(s, "a.2", "two");
    put_ok(s, "a.3", "three");
    put_ok(s, "b.1", "bee");
    apply_ok(s, 1);

    begin_ok(s);
    put_ok(s, "a.2", "TWO");
    expect_get(s, "a.2", "TWO");
    del_ok(s, "a.1");
    del_ok(s, "a.3");
    expect_get(s, "a.1", NULL);
    expect_next(s, "", "a.", "a.2");
    expect_next(s, "a.2", "a.", NULL);
    expect_next(s, "", "", "a.2");
    expect_next(s, "a.2", "", "b.1");
    ck_assert_uint_eq(count_ok(s, "a."), 1);
    ck_assert_uint_eq(count_ok(s, ""), 2);
    /* A key put only in the write-set, between committed ones. */
    put_ok(s, "a.25", "new");
    expect_next(s, "a.2", "a.", "a.25");
    /* A tombstone then a put again: visible once more. */
    put_ok(s, "a.3", "back");
    expect_get(s, "a.3", "back");
    expect_next(s, "a.25", "a.", "a.3");
    /* Delete of a key that exists nowhere is harmless. */
    del_ok(s, "zz");
    expect_get(s, "zz", NULL);
    ck_assert_uint_eq(count_ok(s, ""), 4);
    /* after before the prefix, and a prefix with no keys. */
    expect_next(s, "0", "b.", "b.1");
    expect_next(s, "", "c.", NULL);
    apply_ok(s, 2);
    expect_get(s, "a.1", NULL);
    expect_get(s, "a.2", "TWO");
    expect_get(s, "a.3", "back");
    ck_assert_uint_eq(count_ok(s, ""), 4);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* next_key returns borrowed keys; the vatstore's delete-all-with-prefix
 * hands them straight back to ws_delete, and values borrowed from get()
 * straight to ws_put, while the arena they point into grows. */
START_TEST(test_store_ws_borrowed_bytes_passed_back_are_copied)
{
    char *dir = store_dir("store-borrow");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    char key[32];
    char val[256];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "vs.v3.%03d", i);
        snprintf(val, sizeof(val), "value %d of vat 3", i);
        put_ok(s, key, val);
    }
    apply_ok(s, 1);

    begin_ok(s);
    memset(val, 'w', 200);
    val[200] = '\0';
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "vs.v3.%03d", i);
        val[0] = (char)('0' + i % 10);
        put_ok(s, key, val);
    }
    /* Copy write-set values to new keys, 2 MB in all: the source lives in
     * the arena, which reallocates many times while the copies are added
     * (ASan sees any read through a stale pointer). */
    for (int i = 0; i < 100; i++) {
        for (int j = 0; j < 100; j++) {
            snprintf(key, sizeof(key), "vs.v3.%03d", i);
            keel_bytes v = {0};
            ck_assert_int_eq(keel__store_get(s, key, strlen(key), &v, NULL), 1);
            snprintf(key, sizeof(key), "vs.v4.%03d.%02d", i, j);
            ck_assert_int_eq(
                keel__store_ws_put(s, key, strlen(key), v.ptr, v.len, NULL),
                KEEL_OK);
        }
    }
    val[0] = '2';
    expect_get(s, "vs.v4.042.99", val);
    /* Delete all of vat 3 the way terminating a vat does, handing each
     * borrowed key straight back. */
    keel_bytes k = {0};
    int rc;
    uint64_t deleted = 0;
    while ((rc = keel__store_next_key(s, "", 0, "vs.v3.", 6, &k, NULL)) == 1) {
        ck_assert_int_eq(keel__store_ws_delete(s, k.ptr, k.len, NULL), KEEL_OK);
        deleted++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(deleted, 200);
    ck_assert_uint_eq(count_ok(s, "vs.v3."), 0);
    ck_assert_uint_eq(count_ok(s, "vs.v4."), 10000);
    apply_ok(s, 2);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(count_ok(s, "vs.v3."), 0);
    ck_assert_uint_eq(count_ok(s, "vs.v4."), 10000);
    val[0] = '9';
    expect_get(s, "vs.v4.099.00", val);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_invalid_keys_and_values_are_refused)
{
    char *dir = store_dir("store-limits");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_ws_put(s, "", 0, "v", 1, &d), KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "key length 0 outside 1..511"));
    uint8_t big_key[KEEL__STORE_MAX_KEY_BYTES + 1];
    memset(big_key, 'k', sizeof(big_key));
    ck_assert_int_eq(keel__store_ws_delete(s, big_key, sizeof(big_key), &d),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "key length 512 outside 1..511"));
    ck_assert_int_eq(keel__store_get(s, big_key, sizeof(big_key), NULL, &d),
                     KEEL_EINVAL);
    size_t vbig = KEEL__STORE_MAX_VALUE_BYTES + 1;
    uint8_t *v = calloc(1, vbig);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(keel__store_ws_put(s, "k", 1, v, vbig, &d), KEEL_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(d.msg, "over the limit"));
    ck_assert_uint_eq(keel__store_ws_count(s), 0);
    /* The largest key and value go through LMDB and back. */
    ck_assert_int_eq(keel__store_ws_put(s, big_key, KEEL__STORE_MAX_KEY_BYTES,
                                        v, vbig - 1, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel__store_ws_put(s, "empty", 5, NULL, 0, &d), KEEL_OK);
    apply_ok(s, 1);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    keel_bytes b = {0};
    ck_assert_int_eq(
        keel__store_get(s, big_key, KEEL__STORE_MAX_KEY_BYTES, &b, &d), 1);
    ck_assert_uint_eq(b.len, vbig - 1);
    ck_assert_int_eq(memcmp(b.ptr, v, b.len), 0);
    ck_assert_int_eq(keel__store_get(s, "empty", 5, &b, &d), 1);
    ck_assert_uint_eq(b.len, 0);
    free(v);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * next_key, get and count against the reference, with seeded random ops.
 */

/* Keys over a tiny alphabet (with 0x00 and 0xff) so that prefixes,
 * proper-prefix order and tombstones all collide often. */
static size_t rand_key(uint64_t *st, uint8_t *k, size_t min_len)
{
    static const uint8_t alpha[] = {'a', 'b', 'c', 0x00, 0xff};
    size_t n = min_len + tu_rand(st) % (4 - min_len + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = tu_rand(st) % 16;
        k[i] = alpha[r < 4 ? 0 : r < 8 ? 1 : r < 12 ? 2 : r < 14 ? 3 : 4];
    }
    return n;
}

/*
 * How a random model run mixes its steps: out of every 1000 draws, about
 * 300 put, 150 delete, 70 apply, 20 abort, then ckpt_pm checkpoints and
 * reopen_pm reopens (when no write-set is open), the rest reads. With
 * replay, an apply sometimes encodes the write-set, aborts it and applies
 * the bytes with apply_encoded() instead, as WAL replay does; and each
 * reopen is followed by a full comparison.
 */
typedef struct model_mix {
    uint64_t ckpt_pm;
    uint64_t reopen_pm;
    int replay;
} model_mix;

/* Encode the open write-set, abort it, and apply the bytes at lsn. */
static void apply_via_encoding(keel__store *s, uint64_t lsn, const char *ctx)
{
    size_t n = keel__store_ws_encode_bound(s);
    uint8_t *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    size_t len = 0;
    keel_diag d = {0};
    ck_assert_msg(keel__store_ws_encode(s, buf, n, &len, &d) == KEEL_OK,
                  "%s: encode: %s", ctx, d.msg);
    keel__store_ws_abort(s);
    ck_assert_msg(keel__store_apply_encoded(s, lsn, buf, len, &d) == KEEL_OK,
                  "%s: apply_encoded: %s", ctx, d.msg);
    free(buf);
}

static void run_model(uint64_t seed, int steps, const model_mix *mix)
{
    uint64_t st = seed;
    char *dir = store_dir("store-model");
    keel__store *s = open_ok(dir);
    model visible = {0}; /* what reads must see */
    model applied = {0}; /* write-sets applied (the overlay over the disk) */
    model ckpt = {0};    /* on disk */
    uint64_t lsn = 0;
    uint64_t ckpt_lsn = 0;
    int ws_open = 0;
    char ctx[128];
    const uint64_t ckpt_end = 540 + mix->ckpt_pm;
    const uint64_t reopen_end = ckpt_end + mix->reopen_pm;
    for (int step = 0; step < steps; step++) {
        snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64 " step %d", seed, step);
        uint64_t r = tu_rand(&st) % 1000;
        uint8_t k[8];
        uint8_t p[8];
        size_t kl = rand_key(&st, k, 1);
        keel_diag d = {0};
        if (r < 300) {
            if (!ws_open) {
                begin_ok(s);
                ws_open = 1;
            }
            uint8_t v[40];
            size_t vl = tu_rand(&st) % sizeof(v);
            for (size_t i = 0; i < vl; i++) {
                v[i] = (uint8_t)tu_rand(&st);
            }
            ck_assert_msg(keel__store_ws_put(s, k, kl, v, vl, &d) == KEEL_OK,
                          "%s: put: %s", ctx, d.msg);
            model_put(&visible, k, kl, v, vl);
        } else if (r < 450) {
            if (!ws_open) {
                begin_ok(s);
                ws_open = 1;
            }
            ck_assert_msg(keel__store_ws_delete(s, k, kl, &d) == KEEL_OK,
                          "%s: delete: %s", ctx, d.msg);
            model_del(&visible, k, kl);
        } else if (r < 520) {
            if (ws_open && mix->replay && tu_rand(&st) % 2 == 0) {
                apply_via_encoding(s, ++lsn, ctx);
                ws_open = 0;
                model_copy(&applied, &visible);
            } else if (ws_open) {
                ck_assert_msg(keel__store_ws_apply(s, ++lsn, &d) == KEEL_OK,
                              "%s: apply: %s", ctx, d.msg);
                ws_open = 0;
                model_copy(&applied, &visible);
            }
        } else if (r < 540) {
            if (ws_open) {
                keel__store_ws_abort(s);
                ws_open = 0;
                model_copy(&visible, &applied);
            }
        } else if (r < ckpt_end) {
            if (!ws_open) {
                checkpoint_ok(s);
                ck_assert_msg(keel__store_pending_bytes(s) == 0,
                              "%s: %" PRIu64 " bytes pending after a "
                              "checkpoint",
                              ctx, keel__store_pending_bytes(s));
                ckpt_lsn = lsn;
                model_copy(&ckpt, &applied);
            }
        } else if (r < reopen_end) {
            if (!ws_open) {
                keel__store_close(s);
                s = open_ok(dir);
                ck_assert_msg(keel__store_applied_lsn(s) == ckpt_lsn,
                              "%s: reopened at %" PRIu64 ", expected %" PRIu64,
                              ctx, keel__store_applied_lsn(s), ckpt_lsn);
                lsn = ckpt_lsn;
                model_copy(&applied, &ckpt);
                model_copy(&visible, &ckpt);
                if (mix->replay) {
                    expect_equals(s, &visible, ctx);
                }
            }
        } else if (r < 700) {
            keel_bytes v = {0};
            int rc = keel__store_get(s, k, kl, &v, &d);
            int found = 0;
            size_t i = model_lb(&visible, k, kl, &found);
            ck_assert_msg(rc == found, "%s: get %d, model %d (%s)", ctx, rc,
                          found, d.msg);
            ck_assert_msg(
                !found ||
                    (v.len == visible.e[i].vl &&
                     (v.len == 0 || memcmp(v.ptr, visible.e[i].v, v.len) == 0)),
                "%s: get: value differs", ctx);
        } else if (r < 950) {
            size_t al = rand_key(&st, k, 0);
            size_t pl = rand_key(&st, p, 0) % 3;
            keel_bytes nk = {0};
            int rc = keel__store_next_key(s, k, al, p, pl, &nk, &d);
            const ent *want = model_next(&visible, k, al, p, pl);
            ck_assert_msg(rc == (want != NULL), "%s: next_key %d (%s)", ctx, rc,
                          d.msg);
            ck_assert_msg(want == NULL ||
                              tkeycmp(nk.ptr, nk.len, want->k, want->kl) == 0,
                          "%s: next_key returned the wrong key", ctx);
        } else {
            size_t pl = rand_key(&st, p, 0) % 3;
            uint64_t n = 0;
            int rc = keel__store_count_prefix(s, p, pl, &n, &d);
            ck_assert_msg(rc == KEEL_OK, "%s: count: %s", ctx, d.msg);
            ck_assert_msg(n == model_count(&visible, p, pl),
                          "%s: count %" PRIu64 ", model %" PRIu64, ctx, n,
                          model_count(&visible, p, pl));
        }
    }
    expect_equals(s, &visible, ctx);
    if (ws_open) {
        keel__store_ws_abort(s);
    }
    /* What the last checkpoint wrote, read back from disk alone. */
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    expect_equals(s, &applied, ctx);
    keel__store_close(s);
    model_free(&visible);
    model_free(&applied);
    model_free(&ckpt);
    rm_store(dir);
}

START_TEST(test_store_next_key_random_model_matches_reference)
{
    static const model_mix mix = {.ckpt_pm = 5, .reopen_pm = 3, .replay = 0};
    run_model(SEED_MODEL, MODEL_STEPS, &mix);
}
END_TEST

/* Checkpoints and reopens ten times as often, so that keys sit in all
 * three layers (write-set, overlay, disk) in every combination, and half
 * the write-sets arrive the way WAL replay applies them. */
START_TEST(test_store_overlay_random_model_with_checkpoints_matches_reference)
{
    static const model_mix mix = {.ckpt_pm = 40, .reopen_pm = 15, .replay = 1};
    run_model(SEED_MODEL + 0x100 + (uint64_t)_i, MODEL_STEPS, &mix);
}
END_TEST

/* ---------------------------------------------------------------------
 * The overlay: write-sets coalesced in memory between checkpoints.
 */

/* Apply one write-set at lsn that puts k = v (v NULL: deletes k). */
static void crank_set(keel__store *s, uint64_t lsn, const char *k,
                      const char *v)
{
    begin_ok(s);
    if (v != NULL) {
        put_ok(s, k, v);
    } else {
        del_ok(s, k);
    }
    apply_ok(s, lsn);
}

/* One key put, deleted, put longer, put shorter, across cranks between
 * two checkpoints, beside neighbours: every read agrees at every step,
 * with and without a write-set open over it, and the checkpoint writes
 * the last value only. */
START_TEST(test_store_overlay_put_delete_put_across_cranks_reads_right)
{
    char *dir = store_dir("store-ov-pdp");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "q.a", "left");
    put_ok(s, "q.c", "right");
    apply_ok(s, 1);
    checkpoint_ok(s);

    crank_set(s, 2, "q.b", "first");
    expect_get(s, "q.b", "first");
    expect_next(s, "q.a", "q.", "q.b");
    ck_assert_uint_eq(count_ok(s, "q."), 3);

    crank_set(s, 3, "q.b", NULL);
    expect_get(s, "q.b", NULL);
    expect_next(s, "q.a", "q.", "q.c");
    expect_next(s, "", "q.b", NULL);
    ck_assert_uint_eq(count_ok(s, "q."), 2);
    /* A write-set over the tombstone brings the key back for its reads. */
    begin_ok(s);
    put_ok(s, "q.b", "in the write-set");
    expect_get(s, "q.b", "in the write-set");
    expect_next(s, "q.a", "q.", "q.b");
    ck_assert_uint_eq(count_ok(s, "q."), 3);
    keel__store_ws_abort(s);
    expect_get(s, "q.b", NULL);

    crank_set(s, 4, "q.b", "second, and longer than the first");
    expect_get(s, "q.b", "second, and longer than the first");
    expect_next(s, "q.a", "q.", "q.b");
    expect_next(s, "q.b", "q.", "q.c");
    ck_assert_uint_eq(count_ok(s, "q."), 3);
    /* A tombstone in the write-set over a put in the overlay. */
    begin_ok(s);
    del_ok(s, "q.b");
    expect_get(s, "q.b", NULL);
    expect_next(s, "q.a", "q.", "q.c");
    ck_assert_uint_eq(count_ok(s, "q."), 2);
    keel__store_ws_abort(s);

    crank_set(s, 5, "q.b", "3rd");
    expect_get(s, "q.b", "3rd");
    /* The same key deleted and put again inside one crank. */
    begin_ok(s);
    del_ok(s, "q.b");
    put_ok(s, "q.b", "4th");
    apply_ok(s, 6);
    expect_get(s, "q.b", "4th");
    ck_assert_uint_eq(keel__store_checkpoint_lsn(s), 1);
    checkpoint_ok(s);
    expect_get(s, "q.b", "4th");
    keel__store_close(s);

    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 6);
    expect_get(s, "q.a", "left");
    expect_get(s, "q.b", "4th");
    expect_get(s, "q.c", "right");
    ck_assert_uint_eq(count_ok(s, ""), 3);
    /* Deleted again and checkpointed: gone from disk too. */
    crank_set(s, 7, "q.b", NULL);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    expect_get(s, "q.b", NULL);
    expect_next(s, "q.a", "", "q.c");
    ck_assert_uint_eq(count_ok(s, ""), 2);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* Keys on disk, deleted in a later crank: the overlay's tombstones hide
 * them from get, next_key and count_prefix until the checkpoint deletes
 * them from LMDB; a close before it brings them back. */
START_TEST(test_store_overlay_tombstone_hides_disk_key_until_checkpoint)
{
    char *dir = store_dir("store-ov-tomb");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "c.1", "one");
    put_ok(s, "c.2", "two");
    put_ok(s, "c.3", "three");
    put_ok(s, "d.1", "dee");
    apply_ok(s, 1);
    checkpoint_ok(s);

    begin_ok(s);
    del_ok(s, "c.2");
    del_ok(s, "c.3");
    del_ok(s, "never.there");
    apply_ok(s, 2);
    ck_assert_uint_gt(keel__store_pending_bytes(s), 0);
    expect_get(s, "c.1", "one");
    expect_get(s, "c.2", NULL);
    expect_get(s, "c.3", NULL);
    expect_get(s, "never.there", NULL);
    expect_next(s, "", "c.", "c.1");
    expect_next(s, "c.1", "c.", NULL);
    expect_next(s, "c.1", "", "d.1");
    expect_next(s, "c.2", "", "d.1");
    expect_next(s, "", "c.2", NULL);
    ck_assert_uint_eq(count_ok(s, "c."), 1);
    ck_assert_uint_eq(count_ok(s, ""), 2);
    /* Three layers on one key: disk put, overlay tombstone, write-set put
     * (visible); then a write-set tombstone over a disk key. */
    begin_ok(s);
    put_ok(s, "c.3", "revived");
    del_ok(s, "c.1");
    expect_get(s, "c.3", "revived");
    expect_get(s, "c.1", NULL);
    expect_next(s, "", "c.", "c.3");
    expect_next(s, "c.3", "", "d.1");
    ck_assert_uint_eq(count_ok(s, "c."), 1);
    keel__store_ws_abort(s);
    ck_assert_uint_eq(count_ok(s, "c."), 1);

    /* A close without a checkpoint: LMDB never saw the tombstones. */
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 1);
    expect_get(s, "c.2", "two");
    expect_get(s, "c.3", "three");
    ck_assert_uint_eq(count_ok(s, "c."), 3);

    /* Again, now checkpointed: the keys are deleted from LMDB. */
    begin_ok(s);
    del_ok(s, "c.2");
    del_ok(s, "c.3");
    apply_ok(s, 2);
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    expect_get(s, "c.2", NULL);
    ck_assert_uint_eq(count_ok(s, "c."), 1);
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 2);
    expect_get(s, "c.1", "one");
    expect_get(s, "c.2", NULL);
    expect_get(s, "c.3", NULL);
    expect_next(s, "c.1", "", "d.1");
    ck_assert_uint_eq(count_ok(s, ""), 2);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* The write-set of LSN i in the close test: new keys, overwrites and
 * deletes of checkpointed keys, and a hot key rewritten every time. */
static void lose_ws(keel__store *s, uint64_t i)
{
    char k[32];
    char v[64];
    snprintf(k, sizeof(k), "n.%02" PRIu64, i);
    snprintf(v, sizeof(v), "value %" PRIu64, i);
    put_ok(s, k, v);
    put_ok(s, "hot", v);
    snprintf(k, sizeof(k), "n.%02" PRIu64, i - 3);
    if (i % 2 == 0) {
        del_ok(s, k);
    } else {
        put_ok(s, k, "overwritten");
    }
}

static void lose_model(uint64_t upto, model *m)
{
    char k[32];
    char v[64];
    model_free(m);
    for (uint64_t i = 4; i <= upto; i++) {
        snprintf(k, sizeof(k), "n.%02" PRIu64, i);
        snprintf(v, sizeof(v), "value %" PRIu64, i);
        model_put(m, k, strlen(k), v, strlen(v));
        model_put(m, "hot", 3, v, strlen(v));
        snprintf(k, sizeof(k), "n.%02" PRIu64, i - 3);
        if (i % 2 == 0) {
            model_del(m, k, strlen(k));
        } else {
            model_put(m, k, strlen(k), "overwritten", 11);
        }
    }
}

/* A close without a checkpoint loses exactly the overlay: the reopened
 * store equals the last checkpoint, and replaying the lost write-sets'
 * encodings (as the WAL does) gives back exactly what was visible. */
START_TEST(test_store_overlay_close_without_checkpoint_loses_exactly_it)
{
    char *dir = store_dir("store-ov-close");
    keel__store *s = open_ok(dir);
    uint8_t *enc[40] = {0};
    size_t enc_len[40] = {0};
    model m = {0};
    for (uint64_t i = 4; i < 40; i++) {
        begin_ok(s);
        lose_ws(s, i);
        enc_len[i] = keel__store_ws_encode_bound(s);
        enc[i] = malloc(enc_len[i]);
        ck_assert_ptr_nonnull(enc[i]);
        ck_assert_int_eq(
            keel__store_ws_encode(s, enc[i], enc_len[i], &enc_len[i], NULL),
            KEEL_OK);
        apply_ok(s, i);
        if (i == 20) {
            checkpoint_ok(s);
        }
    }
    lose_model(39, &m);
    expect_equals(s, &m, "before close");
    ck_assert_uint_gt(keel__store_pending_bytes(s), 0);
    keel__store_close(s);

    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 20);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    lose_model(20, &m);
    expect_equals(s, &m, "reopened");
    for (uint64_t i = 21; i < 40; i++) {
        keel_diag d = {0};
        ck_assert_msg(keel__store_apply_encoded(s, i, enc[i], enc_len[i], &d) ==
                          KEEL_OK,
                      "replay %" PRIu64 ": %s", i, d.msg);
    }
    lose_model(39, &m);
    expect_equals(s, &m, "replayed");
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 39);
    expect_equals(s, &m, "replayed, checkpointed and reopened");
    keel__store_close(s);
    for (int i = 0; i < 40; i++) {
        free(enc[i]);
    }
    model_free(&m);
    rm_store(dir);
}
END_TEST

/* Hot keys rewritten every crank with values that fit their space hold
 * one entry each, and a key put and deleted in turn (never on disk) reuses
 * its entry's space: pending bytes stop growing after the first crank, and
 * grow again only for a new key that does not fit the space left. */
START_TEST(test_store_overlay_hot_keys_rewritten_do_not_grow_pending_bytes)
{
    char *dir = store_dir("store-ov-hot");
    keel__store *s = open_ok(dir);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    char v[32];
    uint64_t first = 0;
    for (uint64_t lsn = 1; lsn <= 1000; lsn++) {
        begin_ok(s);
        snprintf(v, sizeof(v), "%08" PRIu64, lsn);
        put_ok(s, "k.crank", v);
        put_ok(s, "rq.head", v);
        /* Deleted every other crank, put again the next. */
        if (lsn % 2 == 0) {
            del_ok(s, "rq.item");
        } else {
            put_ok(s, "rq.item", "a queued message");
        }
        apply_ok(s, lsn);
        if (lsn == 1) {
            first = keel__store_pending_bytes(s);
            ck_assert_uint_gt(first, 0);
        }
        ck_assert_msg(keel__store_pending_bytes(s) == first,
                      "lsn %" PRIu64 ": %" PRIu64 " bytes pending, %" PRIu64
                      " after the first crank",
                      lsn, keel__store_pending_bytes(s), first);
    }
    expect_get(s, "k.crank", "00001000");
    expect_get(s, "rq.item", NULL);
    crank_set(s, 1001, "a.new.key.longer.than.rq.item", "x");
    ck_assert_uint_gt(keel__store_pending_bytes(s), first);
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    keel__store_close(s);
    s = open_ok(dir);
    expect_get(s, "k.crank", "00001000");
    expect_get(s, "rq.head", "00001000");
    expect_get(s, "rq.item", NULL);
    expect_get(s, "a.new.key.longer.than.rq.item", "x");
    ck_assert_uint_eq(count_ok(s, ""), 3);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* An overlay grown past what a checkpoint keeps (16 MiB) is written,
 * freed, and built again from nothing; values borrowed from the overlay
 * and handed back to ws_put are copied. */
START_TEST(test_store_overlay_large_burst_is_released_and_rebuilt)
{
    char *dir = store_dir("store-ov-burst");
    keel__store *s = open_ok(dir);
    const size_t vlen = 1024 * 1024;
    uint8_t *val = malloc(vlen);
    ck_assert_ptr_nonnull(val);
    char k[32];
    for (uint64_t lsn = 1; lsn <= 20; lsn++) {
        memset(val, (int)('a' + lsn), vlen);
        begin_ok(s);
        snprintf(k, sizeof(k), "big.%02" PRIu64, lsn);
        ck_assert_int_eq(keel__store_ws_put(s, k, strlen(k), val, vlen, NULL),
                         KEEL_OK);
        apply_ok(s, lsn);
    }
    ck_assert_uint_gt(keel__store_pending_bytes(s), 20 * vlen);
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    for (uint64_t lsn = 21; lsn <= 40; lsn++) {
        /* Copy big.(lsn-20) from disk, then copy.(lsn-10) from the
         * overlay. */
        begin_ok(s);
        if (lsn <= 30) {
            snprintf(k, sizeof(k), "big.%02" PRIu64, lsn - 20);
        } else {
            snprintf(k, sizeof(k), "copy.%02" PRIu64, lsn - 10);
        }
        keel_bytes b = {0};
        ck_assert_int_eq(keel__store_get(s, k, strlen(k), &b, NULL), 1);
        snprintf(k, sizeof(k), "copy.%02" PRIu64, lsn);
        ck_assert_int_eq(
            keel__store_ws_put(s, k, strlen(k), b.ptr, b.len, NULL), KEEL_OK);
        apply_ok(s, lsn);
    }
    ck_assert_uint_eq(count_ok(s, "copy."), 20);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(count_ok(s, ""), 40);
    keel_bytes b = {0};
    ck_assert_int_eq(keel__store_get(s, "copy.40", 7, &b, NULL), 1);
    ck_assert_uint_eq(b.len, vlen);
    memset(val, 'a' + 10, vlen); /* copy.30, copy of big.10 */
    ck_assert_int_eq(memcmp(b.ptr, val, vlen), 0);
    free(val);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* The overlay's hash index grows while dropped entries (keys deleted
 * that were never on disk) wait on the free list, and the entries reused
 * from it and those added since are all found, in order, before and after
 * the checkpoint. */
START_TEST(test_store_overlay_index_grows_with_dropped_entries)
{
    char *dir = store_dir("store-ov-index");
    keel__store *s = open_ok(dir);
    /* 40 keys, 30 of them dropped, then 300 new ones in one write-set:
     * the index grows with 30 free entries in the node array. */
    model m = {0};
    char k[32];
    begin_ok(s);
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof(k), "g.%03d", i);
        put_ok(s, k, k);
        model_put(&m, k, strlen(k), k, strlen(k));
    }
    apply_ok(s, 1);
    begin_ok(s);
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof(k), "g.%03d", i);
        del_ok(s, k);
        model_del(&m, k, strlen(k));
    }
    apply_ok(s, 2);
    ck_assert_uint_eq(count_ok(s, "g."), 10);
    begin_ok(s);
    for (int i = 100; i < 400; i++) {
        snprintf(k, sizeof(k), "g.%03d", i);
        put_ok(s, k, "new");
        model_put(&m, k, strlen(k), "new", 3);
    }
    apply_ok(s, 3);
    expect_equals(s, &m, "after growth");
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    expect_equals(s, &m, "reopened");
    keel__store_close(s);
    model_free(&m);
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * Encoded write-sets.
 */

START_TEST(test_store_ws_encode_matches_documented_layout)
{
    char *dir = store_dir("store-layout");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    /* Inserted out of order, with an overwrite: encoded sorted, once. */
    put_ok(s, "b", "old value");
    del_ok(s, "a");
    put_ok(s, "b", "xy");
    put_ok(s, "ab", "");
    static const uint8_t want[] = {
        3, 0, 0, 0,                                 /* op count */
        2, 1, 0, 0, 0, 'a',                         /* delete "a" */
        1, 2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0,        /* put "ab" = "" */
        1, 1, 0, 0, 0, 'b', 2,   0, 0, 0, 'x', 'y', /* put "b" = "xy" */
    };
    ck_assert_uint_eq(keel__store_ws_encode_bound(s), sizeof(want));
    uint8_t buf[64];
    size_t len = 0;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_ws_encode(s, buf, sizeof(want) - 1, &len, &d),
                     KEEL_EINVAL);
    ck_assert_uint_eq(len, sizeof(want));
    ck_assert_int_eq(keel__store_ws_encode(s, buf, sizeof(buf), &len, &d),
                     KEEL_OK);
    ck_assert_uint_eq(len, sizeof(want));
    ck_assert_int_eq(memcmp(buf, want, len), 0);
    keel__store_ws_abort(s);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_encode_apply_encoded_equals_ws_apply)
{
    uint64_t seed = SEED_ROUND_TRIP;
    uint64_t st = seed;
    char *dir_a = store_dir("store-rt-a");
    char *dir_b = store_dir("store-rt-b");
    keel__store *a = open_ok(dir_a);
    keel__store *b = open_ok(dir_b);
    model m = {0};
    uint8_t *buf = NULL;
    uint8_t *buf2 = NULL;
    char ctx[96];
    for (uint64_t lsn = 1; lsn <= 150; lsn++) {
        snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64 " lsn %" PRIu64, seed,
                 lsn);
        /* Distinct keys, so that inserting them in reverse order must give
         * the same bytes. */
        enum { MAXOPS = 24 };
        uint8_t keys[MAXOPS][8];
        size_t kls[MAXOPS];
        uint8_t vals[MAXOPS][64];
        size_t vls[MAXOPS];
        int dels[MAXOPS];
        size_t nops = 0;
        size_t want = tu_rand(&st) % MAXOPS;
        for (size_t t = 0; t < 4 * MAXOPS && nops < want; t++) {
            uint8_t k[8];
            size_t kl = rand_key(&st, k, 1);
            int dup = 0;
            for (size_t j = 0; j < nops; j++) {
                dup |= tkeycmp(keys[j], kls[j], k, kl) == 0;
            }
            if (dup) {
                continue;
            }
            memcpy(keys[nops], k, kl);
            kls[nops] = kl;
            dels[nops] = tu_rand(&st) % 3 == 0;
            vls[nops] = tu_rand(&st) % 64;
            for (size_t i = 0; i < vls[nops]; i++) {
                vals[nops][i] = (uint8_t)tu_rand(&st);
            }
            nops++;
        }
        size_t len = 0;
        size_t len2 = 0;
        for (int pass = 0; pass < 2; pass++) {
            begin_ok(a);
            for (size_t t = 0; t < nops; t++) {
                size_t j = pass == 0 ? t : nops - 1 - t;
                int rc = dels[j]
                             ? keel__store_ws_delete(a, keys[j], kls[j], NULL)
                             : keel__store_ws_put(a, keys[j], kls[j], vals[j],
                                                  vls[j], NULL);
                ck_assert_msg(rc == KEEL_OK, "%s: op %zu", ctx, j);
            }
            size_t n = keel__store_ws_encode_bound(a);
            uint8_t **dst = pass == 0 ? &buf : &buf2;
            *dst = realloc(*dst, n);
            ck_assert_ptr_nonnull(*dst);
            ck_assert_int_eq(keel__store_ws_encode(
                                 a, *dst, n, pass == 0 ? &len : &len2, NULL),
                             KEEL_OK);
            if (pass == 0) {
                keel__store_ws_abort(a);
            }
        }
        ck_assert_msg(len == len2 && memcmp(buf, buf2, len) == 0,
                      "%s: encoding depends on insertion order", ctx);
        apply_ok(a, lsn);
        /* B gets an exact-size copy so that ASan sees any over-read. */
        uint8_t *exact = dup_bytes(buf, len);
        keel_diag d = {0};
        int rc = keel__store_apply_encoded(b, lsn, exact, len, &d);
        free(exact);
        ck_assert_msg(rc == KEEL_OK, "%s: apply_encoded: %s", ctx, d.msg);
        ck_assert_uint_eq(keel__store_applied_lsn(b), lsn);
        for (size_t j = 0; j < nops; j++) {
            if (dels[j]) {
                model_del(&m, keys[j], kls[j]);
            } else {
                model_put(&m, keys[j], kls[j], vals[j], vls[j]);
            }
        }
        if (lsn % 10 == 0) {
            expect_equals(a, &m, ctx);
            expect_equals(b, &m, ctx);
        }
        if (lsn % 50 == 0) {
            checkpoint_ok(a);
            checkpoint_ok(b);
        }
    }
    keel__store_close(a);
    keel__store_close(b);
    b = open_ok(dir_b);
    ck_assert_uint_eq(keel__store_applied_lsn(b), 150);
    expect_equals(b, &m, "reopened B");
    keel__store_close(b);
    free(buf);
    free(buf2);
    model_free(&m);
    rm_store(dir_a);
    rm_store(dir_b);
}
END_TEST

/* A payload built by hand, field by field. */
typedef struct pbuf {
    uint8_t b[1024];
    size_t n;
} pbuf;

static void pb_u8(pbuf *p, uint8_t v)
{
    ck_assert_uint_lt(p->n, sizeof(p->b));
    p->b[p->n++] = v;
}

static void pb_u32(pbuf *p, uint32_t v)
{
    ck_assert_uint_le(p->n + 4, sizeof(p->b));
    keel__put_u32(p->b + p->n, v);
    p->n += 4;
}

static void pb_str(pbuf *p, const char *s)
{
    size_t n = strlen(s);
    ck_assert_uint_le(p->n + n, sizeof(p->b));
    memcpy(p->b + p->n, s, n);
    p->n += n;
}

/* Apply p (an exact-size copy) and assert KEEL_ECORRUPT with msg, and that
 * the store is unchanged and still usable. */
static void expect_payload_corrupt(const pbuf *p, const char *msg)
{
    char *dir = store_dir("store-payload");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "canary", "alive");
    apply_ok(s, 1);
    uint8_t *exact = dup_bytes(p->b, p->n);
    keel_diag d = {0};
    int rc = keel__store_apply_encoded(s, 2, exact, p->n, &d);
    free(exact);
    ck_assert_msg(rc == KEEL_ECORRUPT, "expected KEEL_ECORRUPT, got %s (%s)",
                  keel_err_name(rc), d.msg);
    ck_assert_msg(strcmp(d.msg, msg) == 0, "message \"%s\", expected \"%s\"",
                  d.msg, msg);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 1);
    ck_assert_int_eq(keel__store_failed(s), 0);
    expect_get(s, "canary", "alive");
    ck_assert_uint_eq(count_ok(s, ""), 1);
    begin_ok(s);
    apply_ok(s, 2);
    keel__store_close(s);
    rm_store(dir);
}

START_TEST(test_store_payload_short_op_count_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u8(&p, 1);
    pb_u8(&p, 0);
    expect_payload_corrupt(&p, "payload offset 0: op count cut short (payload "
                               "is 2 bytes, expected at least 4)");
}
END_TEST

START_TEST(test_store_payload_op_count_too_large_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1000);
    pb_u8(&p, 2);
    pb_u32(&p, 1);
    pb_str(&p, "a");
    expect_payload_corrupt(&p,
                           "payload offset 0: op count 1000 cannot fit in 10 "
                           "bytes");
}
END_TEST

START_TEST(test_store_payload_bad_op_kind_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 3);
    pb_u32(&p, 1);
    pb_str(&p, "a");
    expect_payload_corrupt(&p, "payload offset 4: bad op kind 3, expected 1 "
                               "(put) or 2 (delete)");
}
END_TEST

START_TEST(test_store_payload_key_length_past_end_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 2);
    pb_u32(&p, 100);
    pb_str(&p, "a");
    expect_payload_corrupt(&p, "payload offset 5: key length 100 past end of "
                               "payload (10 bytes)");
}
END_TEST

START_TEST(test_store_payload_zero_key_length_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 2);
    pb_u32(&p, 0);
    pb_str(&p, "a");
    expect_payload_corrupt(&p, "payload offset 5: key length 0 outside 1..511");
}
END_TEST

START_TEST(test_store_payload_key_over_limit_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 2);
    pb_u32(&p, 512);
    for (int i = 0; i < 512; i++) {
        pb_u8(&p, 'k');
    }
    expect_payload_corrupt(&p,
                           "payload offset 5: key length 512 outside 1..511");
}
END_TEST

START_TEST(test_store_payload_value_length_past_end_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 1);
    pb_u32(&p, 1);
    pb_str(&p, "a");
    pb_u32(&p, 50);
    pb_str(&p, "x");
    expect_payload_corrupt(&p, "payload offset 10: value length 50 past end "
                               "of payload (15 bytes)");
}
END_TEST

START_TEST(test_store_payload_value_over_limit_is_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 1);
    pb_u32(&p, 1);
    pb_str(&p, "a");
    pb_u32(&p, KEEL__STORE_MAX_VALUE_BYTES + 1);
    expect_payload_corrupt(&p, "payload offset 10: value length 16777217 over "
                               "the limit of 16777216");
}
END_TEST

START_TEST(test_store_payload_keys_out_of_order_are_ecorrupt)
{
    const char *orders[2][2] = {{"b", "a"}, {"a", "a"}};
    for (int i = 0; i < 2; i++) {
        pbuf p = {.n = 0};
        pb_u32(&p, 2);
        for (int j = 0; j < 2; j++) {
            pb_u8(&p, 2);
            pb_u32(&p, 1);
            pb_str(&p, orders[i][j]);
        }
        expect_payload_corrupt(&p, "payload offset 10: key not after the "
                                   "previous key (expected strictly "
                                   "ascending keys)");
    }
}
END_TEST

START_TEST(test_store_payload_trailing_bytes_are_ecorrupt)
{
    pbuf p = {.n = 0};
    pb_u32(&p, 1);
    pb_u8(&p, 2);
    pb_u32(&p, 1);
    pb_str(&p, "a");
    pb_str(&p, "xyz");
    expect_payload_corrupt(&p, "payload offset 10: 3 bytes after the last "
                               "op, expected none");
}
END_TEST

/* An encoded write-set of several shapes (empty value, long key, delete). */
static uint8_t *sample_payload(keel__store *s, size_t *len)
{
    uint8_t long_key[300];
    memset(long_key, 'L', sizeof(long_key));
    begin_ok(s);
    put_ok(s, "kp.12", "fulfilled: {\"body\":\"#1\",\"slots\":[]}");
    put_ok(s, "kp.13", "");
    del_ok(s, "rq.17");
    ck_assert_int_eq(
        keel__store_ws_put(s, long_key, sizeof(long_key), "v", 1, NULL),
        KEEL_OK);
    put_ok(s, "vs.v2.counter", "42");
    size_t n = keel__store_ws_encode_bound(s);
    uint8_t *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(keel__store_ws_encode(s, buf, n, len, NULL), KEEL_OK);
    keel__store_ws_abort(s);
    return buf;
}

START_TEST(test_store_payload_truncated_at_every_length_is_ecorrupt)
{
    char *dir = store_dir("store-trunc");
    keel__store *s = open_ok(dir);
    size_t len = 0;
    uint8_t *full = sample_payload(s, &len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *exact = malloc(n > 0 ? n : 1);
        ck_assert_ptr_nonnull(exact);
        memcpy(exact, full, n);
        keel_diag d = {0};
        int rc = keel__store_apply_encoded(s, 1, exact, n, &d);
        free(exact);
        ck_assert_msg(rc == KEEL_ECORRUPT, "truncated to %zu of %zu: %s (%s)",
                      n, len, keel_err_name(rc), d.msg);
        ck_assert_msg(strncmp(d.msg, "payload offset ", 15) == 0,
                      "truncated to %zu: message \"%s\"", n, d.msg);
        ck_assert_uint_eq(keel__store_applied_lsn(s), 0);
    }
    ck_assert_uint_eq(count_ok(s, ""), 0);
    ck_assert_int_eq(keel__store_apply_encoded(s, 1, full, len, NULL), KEEL_OK);
    ck_assert_uint_eq(count_ok(s, ""), 4);
    expect_get(s, "vs.v2.counter", "42");
    free(full);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* Every byte replaced by random values: each payload is either accepted (a
 * changed value byte is still a valid payload) or refused as corrupt;
 * never a crash, an over-read (ASan) or another error. */
START_TEST(test_store_payload_every_byte_flipped_never_crashes)
{
    uint64_t seed = SEED_FLIP;
    uint64_t st = seed;
    char *dir = store_dir("store-flip");
    keel__store *s = open_ok(dir);
    size_t len = 0;
    uint8_t *full = sample_payload(s, &len);
    uint64_t lsn = 0;
    size_t accepted = 0;
    for (size_t i = 0; i < len; i++) {
        for (int t = 0; t < 4; t++) {
            uint8_t *p = dup_bytes(full, len);
            p[i] ^= (uint8_t)(1 + tu_rand(&st) % 255);
            keel_diag d = {0};
            int rc = keel__store_apply_encoded(s, lsn + 1, p, len, &d);
            free(p);
            ck_assert_msg(rc == KEEL_OK || rc == KEEL_ECORRUPT,
                          "seed 0x%016" PRIx64 " byte %zu: %s (%s)", seed, i,
                          keel_err_name(rc), d.msg);
            if (rc == KEEL_OK) {
                lsn++;
                accepted++;
            }
        }
    }
    ck_assert_uint_eq(keel__store_applied_lsn(s), lsn);
    ck_assert_uint_gt(accepted, 0);
    ck_assert_uint_lt(accepted, 4 * len);
    free(full);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * Durability: close without checkpoint, and SIGKILL.
 */

START_TEST(test_store_close_without_checkpoint_loses_only_what_followed_it)
{
    char *dir = store_dir("store-close");
    keel__store *s = open_ok(dir);
    char k[32];
    for (uint64_t lsn = 1; lsn <= 15; lsn++) {
        begin_ok(s);
        snprintf(k, sizeof(k), "rq.%02" PRIu64, lsn);
        put_ok(s, k, "item");
        if (lsn > 10) {
            put_ok(s, "kp.1", "after the checkpoint");
        } else {
            put_ok(s, "kp.1", "before the checkpoint");
        }
        apply_ok(s, lsn);
        if (lsn == 10) {
            checkpoint_ok(s);
        }
    }
    ck_assert_uint_eq(keel__store_applied_lsn(s), 15);
    ck_assert_uint_eq(keel__store_checkpoint_lsn(s), 10);
    /* A write-set left open is dropped too. */
    begin_ok(s);
    put_ok(s, "rq.99", "open write-set");
    keel__store_close(s);

    s = open_ok(dir);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 10);
    ck_assert_uint_eq(count_ok(s, "rq."), 10);
    expect_get(s, "rq.10", "item");
    expect_get(s, "rq.11", NULL);
    expect_get(s, "rq.99", NULL);
    expect_get(s, "kp.1", "before the checkpoint");
    /* And a checkpoint with nothing applied since is a no-op. */
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_checkpoint_lsn(s), 10);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* The crash workload: the write-set of each LSN is a function of the LSN,
 * so the state at any LSN can be recomputed. */
typedef struct wop {
    int del;
    char key[16];
    uint8_t val[300];
    size_t vlen;
} wop;

static size_t crash_ops(uint64_t lsn, wop *ops)
{
    uint64_t st = SEED_CRASH ^ (lsn * 0x9e3779b97f4a7c15ull);
    size_t n = 1 + tu_rand(&st) % 6;
    for (size_t i = 0; i < n; i++) {
        snprintf(ops[i].key, sizeof(ops[i].key), "k.%02u",
                 (unsigned)(tu_rand(&st) % 40));
        ops[i].del = tu_rand(&st) % 4 == 0;
        ops[i].vlen = tu_rand(&st) % sizeof(ops[i].val);
        for (size_t j = 0; j < ops[i].vlen; j++) {
            ops[i].val[j] = (uint8_t)tu_rand(&st);
        }
    }
    return n;
}

static void crash_model(uint64_t upto, model *m)
{
    wop ops[6];
    model_free(m);
    for (uint64_t lsn = 1; lsn <= upto; lsn++) {
        size_t n = crash_ops(lsn, ops);
        for (size_t i = 0; i < n; i++) {
            if (ops[i].del) {
                model_del(m, ops[i].key, strlen(ops[i].key));
            } else {
                model_put(m, ops[i].key, strlen(ops[i].key), ops[i].val,
                          ops[i].vlen);
            }
        }
    }
}

#define MARK_READY UINT64_MAX
#define MARK_ERROR (UINT64_MAX - 1)

static void child_say(int fd, uint64_t v)
{
    if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
        _exit(3);
    }
}

/*
 * The child: apply LSNs 1..stop_lsn (forever when 0), checkpointing every
 * ckpt_every and reporting each checkpoint's LSN on fd; then report
 * MARK_READY and wait to be killed. ckpt_last: also checkpoint at stop_lsn.
 */
static _Noreturn void crash_child(const char *dir, int fd, uint64_t stop_lsn,
                                  uint64_t ckpt_every, int ckpt_last)
{
    /* Never outlive the test (a timed-out parent would leave us paused). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        _exit(2);
    }
    keel__store_options o;
    keel__store_options_init(&o);
    keel__store *s = NULL;
    if (keel__store_open(dir, &o, KID, &s, NULL) != KEEL_OK) {
        child_say(fd, MARK_ERROR);
        _exit(1);
    }
    wop ops[6];
    for (uint64_t lsn = 1; stop_lsn == 0 || lsn <= stop_lsn; lsn++) {
        size_t n = crash_ops(lsn, ops);
        int rc = keel__store_ws_begin(s, NULL);
        for (size_t i = 0; i < n && rc == KEEL_OK; i++) {
            rc = ops[i].del
                     ? keel__store_ws_delete(s, ops[i].key, strlen(ops[i].key),
                                             NULL)
                     : keel__store_ws_put(s, ops[i].key, strlen(ops[i].key),
                                          ops[i].val, ops[i].vlen, NULL);
        }
        if (rc == KEEL_OK) {
            rc = keel__store_ws_apply(s, lsn, NULL);
        }
        int ckpt = (ckpt_every != 0 && lsn % ckpt_every == 0) ||
                   (ckpt_last && lsn == stop_lsn);
        if (rc == KEEL_OK && ckpt) {
            rc = keel__store_checkpoint(s, NULL);
            if (rc == KEEL_OK) {
                child_say(fd, lsn);
            }
        }
        if (rc != KEEL_OK) {
            child_say(fd, MARK_ERROR);
            _exit(1);
        }
    }
    child_say(fd, MARK_READY);
    for (;;) {
        pause();
    }
}

static uint64_t parent_hear(int fd)
{
    uint64_t v = 0;
    ssize_t n = read(fd, &v, sizeof(v));
    ck_assert_msg(n == (ssize_t)sizeof(v), "child went away (read %zd)", n);
    ck_assert_msg(v != MARK_ERROR, "child store call failed");
    return v;
}

static void kill_child(pid_t pid)
{
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* Reopen after the kill: the state is exactly that of LSN want. */
static void expect_state_at(const char *dir, uint64_t want, const char *ctx)
{
    keel__store *s = open_ok(dir);
    ck_assert_msg(keel__store_applied_lsn(s) == want,
                  "%s: applied_lsn %" PRIu64 ", expected %" PRIu64, ctx,
                  keel__store_applied_lsn(s), want);
    model m = {0};
    crash_model(want, &m);
    expect_equals(s, &m, ctx);
    model_free(&m);
    keel__store_close(s);
}

/*
 * Kill points, each with where the child stops and the LSN that must
 * survive:
 *   0  applies 1..25, checkpoints at 10 and 20: killed with 21..25 applied
 *      but not checkpointed          -> 20
 *   1  applies 1..20, checkpoints at 10 and 20: killed right after the
 *      second checkpoint returned    -> 20
 *   2  applies 1..5, no checkpoint   -> 0 (the empty store of creation)
 */
START_TEST(test_store_sigkill_keeps_exactly_last_checkpoint)
{
    static const struct {
        uint64_t stop;
        uint64_t every;
        int last;
        uint64_t survives;
    } pts[] = {{25, 10, 0, 20}, {20, 10, 1, 20}, {5, 0, 0, 0}};
    char *dir = store_dir("store-kill");
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(dir, fds[1], pts[_i].stop, pts[_i].every, pts[_i].last);
    }
    close(fds[1]);
    uint64_t v;
    uint64_t last_ckpt = 0;
    while ((v = parent_hear(fds[0])) != MARK_READY) {
        last_ckpt = v;
    }
    kill_child(pid);
    close(fds[0]);
    ck_assert_uint_eq(last_ckpt, pts[_i].survives);
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "kill point %d", _i);
    expect_state_at(dir, pts[_i].survives, ctx);
    rm_store(dir);
}
END_TEST

/* The child applies and checkpoints (every 7 LSNs) without end; it is
 * killed at a random moment after its r-th checkpoint, possibly inside a
 * commit. The reopened store must be exactly at some checkpoint no older
 * than the last one reported. */
START_TEST(test_store_sigkill_at_random_moment_lands_on_a_checkpoint)
{
    uint64_t seed = SEED_CRASH + (uint64_t)_i;
    uint64_t st = seed;
    char *dir = store_dir("store-killr");
    for (int round = 0; round < CRASH_RANDOM_ROUNDS; round++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(dir, fds[1], 0, 7, 0);
        }
        close(fds[1]);
        uint64_t reports = 1 + tu_rand(&st) % 4;
        uint64_t last_ckpt = 0;
        for (uint64_t i = 0; i < reports; i++) {
            last_ckpt = parent_hear(fds[0]);
        }
        volatile uint64_t spin = tu_rand(&st) % 2000000;
        while (spin > 0) {
            spin = spin - 1;
        }
        kill_child(pid);
        close(fds[0]);
        keel__store *s = open_ok(dir);
        uint64_t got = keel__store_applied_lsn(s);
        keel__store_close(s);
        char ctx[96];
        snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64 " round %d", seed,
                 round);
        ck_assert_msg(got >= last_ckpt && got % 7 == 0,
                      "%s: applied_lsn %" PRIu64 " after checkpoint %" PRIu64
                      " was reported",
                      ctx, got, last_ckpt);
        expect_state_at(dir, got, ctx);
        /* crash_child always starts at LSN 1: each round starts empty. */
        tu_rmrf(dir);
    }
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * Damage inside data.mdb, the meta table, and FAILED.
 */

/* Replace every occurrence of pat in file by rep (same length).
 * @return the number of occurrences. */
static size_t patch_file(const char *path, const void *pat, const void *rep,
                         size_t n)
{
    size_t len = 0;
    uint8_t *buf = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(buf);
    size_t hits = 0;
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(buf + i, pat, n) == 0) {
            memcpy(buf + i, rep, n);
            hits++;
        }
    }
    tu_write_file(path, buf, len);
    free(buf);
    return hits;
}

#define SENTINEL "keel-store-sentinel-value-6b65656c"

/* A store holding SENTINEL under key (checkpointed and closed). */
static char *store_with_sentinel(const char *key, size_t klen)
{
    char *dir = store_dir("store-damage");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "aaa", "before");
    ck_assert_int_eq(
        keel__store_ws_put(s, key, klen, SENTINEL, strlen(SENTINEL), NULL),
        KEEL_OK);
    put_ok(s, "zzz", "after");
    apply_ok(s, 1);
    checkpoint_ok(s);
    keel__store_close(s);
    return dir;
}

START_TEST(test_store_flipped_value_byte_is_ecorrupt_naming_key)
{
    static const char key[] = "vs.v1.\x01sentinel";
    char *dir = store_with_sentinel(key, sizeof(key) - 1);
    char rep[] = SENTINEL;
    rep[5] ^= 0x01;
    char *file = tu_path(dir, "data.mdb");
    ck_assert_uint_ge(patch_file(file, SENTINEL, rep, strlen(SENTINEL)), 1);
    free(file);

    keel__store *s = open_ok(dir);
    keel_bytes v = {0};
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_get(s, key, sizeof(key) - 1, &v, &d),
                     KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "data.mdb: key \"vs.v1.\\x01sentinel\": "
                                "checksum mismatch") != NULL,
                  "message: %s", d.msg);
    /* The scans that reach it refuse too; the others still work. */
    keel_bytes k = {0};
    ck_assert_int_eq(keel__store_next_key(s, "aaa", 3, "", 0, &k, &d),
                     KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(d.msg, "vs.v1.\\x01sentinel"));
    uint64_t n = 0;
    ck_assert_int_eq(keel__store_count_prefix(s, "vs.", 3, &n, &d),
                     KEEL_ECORRUPT);
    expect_get(s, "aaa", "before");
    expect_get(s, "zzz", "after");
    ck_assert_uint_eq(count_ok(s, "z"), 1);
    /* Not sticky: reading bad bytes is not a failed write. */
    ck_assert_int_eq(keel__store_failed(s), 0);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* A view walks the checkpoint in key order without the overlay, from
 * another environment (view_open) or the open store (view_of), and refuses
 * a damaged value naming its key. */
START_TEST(test_store_view_walks_checkpoint_and_refuses_damage)
{
    static const char key[] = "vs.v1.sentinel";
    char *dir = store_with_sentinel(key, sizeof(key) - 1);
    keel__store_view *v = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_view_open(dir, &v, &d), KEEL_OK);
    ck_assert_uint_eq(keel__store_view_kernel_id(v), KID);
    ck_assert_uint_eq(keel__store_view_lsn(v), 1);
    static const char *const want[] = {"aaa", key, "zzz"};
    keel_bytes k, val;
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(keel__store_view_next(v, &k, &val, &d), 1);
        ck_assert_uint_eq(k.len, strlen(want[i]));
        ck_assert(memcmp(k.ptr, want[i], k.len) == 0);
    }
    ck_assert_int_eq(keel__store_view_next(v, &k, &val, &d), 0);
    ck_assert_int_eq(keel__store_view_get(v, "zzz", 3, &val, &d), 1);
    ck_assert(val.len == 5 && memcmp(val.ptr, "after", 5) == 0);
    ck_assert_int_eq(keel__store_view_get(v, "nope", 4, &val, &d), 0);
    keel__store_view_close(v);

    /* In process, after a checkpoint: the overlay's later changes are not
     * in a view until they are checkpointed. */
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "mmm", "middle");
    apply_ok(s, 2);
    checkpoint_ok(s);
    ck_assert_int_eq(keel__store_view_of(s, &v, &d), KEEL_OK);
    ck_assert_uint_eq(keel__store_view_lsn(v), 2);
    size_t n = 0;
    while (keel__store_view_next(v, &k, &val, &d) == 1) {
        n++;
    }
    ck_assert_uint_eq(n, 4);
    keel__store_view_close(v);
    keel__store_close(s);

    char rep[] = SENTINEL;
    rep[7] ^= 0x10;
    char *file = tu_path(dir, "data.mdb");
    ck_assert_uint_ge(patch_file(file, SENTINEL, rep, strlen(SENTINEL)), 1);
    free(file);
    ck_assert_int_eq(keel__store_view_open(dir, &v, &d), KEEL_OK);
    int rc;
    while ((rc = keel__store_view_next(v, &k, &val, &d)) == 1) {
    }
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "key \"vs.v1.sentinel\": checksum mismatch"),
                  "message: %s", d.msg);
    keel__store_view_close(v);
    rm_store(dir);
}
END_TEST

/* A bulk load takes keys in ascending order only, and what it loaded reads
 * back after a reopen at the LSN it was finished with. */
START_TEST(test_store_bulk_load_in_order_reads_back)
{
    for (int bulk = 0; bulk < 2; bulk++) {
        char *dir = store_dir("store-load");
        keel__store_options o;
        keel__store_options_init(&o);
        o.bulk = bulk;
        keel__store *s = NULL;
        keel_diag d = {0};
        ck_assert_int_eq(keel__store_open(dir, &o, KID, &s, &d), KEEL_OK);
        char key[32], val[64];
        /* Enough to cross several 8 MiB commits. */
        for (int i = 0; i < 200000; i++) {
            snprintf(key, sizeof(key), "vs.1.%08d", i);
            int vn = snprintf(val, sizeof(val), "value %d of the load ...", i);
            ck_assert_int_eq(
                keel__store_load_put(s, key, strlen(key), val, (size_t)vn, &d),
                KEEL_OK);
        }
        ck_assert_int_eq(
            keel__store_load_put(s, "vs.1.00000005", 13, "x", 1, &d),
            KEEL_ECORRUPT);
        ck_assert_ptr_nonnull(strstr(d.msg, "does not sort after"));
        ck_assert_int_eq(keel__store_failed(s), 0);
        ck_assert_int_eq(keel__store_load_finish(s, 77, &d), KEEL_OK);
        ck_assert_uint_eq(keel__store_applied_lsn(s), 77);
        keel__store_close(s);

        s = open_ok(dir);
        ck_assert_uint_eq(keel__store_applied_lsn(s), 77);
        ck_assert_uint_eq(count_ok(s, "vs.1."), 200000);
        expect_get(s, "vs.1.00000005", "value 5 of the load ...");
        expect_get(s, "vs.1.00199999", "value 199999 of the load ...");
        keel__store_close(s);
        rm_store(dir);
    }
}
END_TEST

/* ST10: a store is built aside and renamed; what an interrupted creation
 * left (a torn data.mdb in `<dir>.new`, a dir with only lock.mdb) is
 * replaced, and anything else in the way is refused, not deleted. */
START_TEST(test_store_interrupted_creation_is_replaced)
{
    char *dir = store_dir("store-new");
    size_t n = strlen(dir) + 8;
    char *tmp = malloc(n);
    ck_assert_ptr_nonnull(tmp);
    snprintf(tmp, n, "%s.new", dir);
    ck_assert_int_eq(mkdir(tmp, 0755), 0);
    char *torn = tu_path(tmp, "data.mdb");
    tu_write_file(torn, "half a meta page", 16);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    char *lock = tu_path(dir, "lock.mdb");
    tu_write_file(lock, "", 0);

    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "k.x", "1");
    apply_ok(s, 1);
    checkpoint_ok(s);
    keel__store_close(s);
    struct stat st;
    ck_assert_int_ne(stat(tmp, &st), 0);
    s = open_ok(dir);
    expect_get(s, "k.x", "1");
    keel__store_close(s);

    /* A foreign file in the way: refused, and left alone. */
    char *dir2 = store_dir("store-new2");
    snprintf(tmp, n, "%s.new", dir2);
    ck_assert_int_eq(mkdir(tmp, 0755), 0);
    char *other = tu_path(tmp, "notes.txt");
    tu_write_file(other, "mine", 4);
    keel__store_options o;
    keel__store_options_init(&o);
    keel_diag d = {0};
    ck_assert_int_lt(keel__store_open(dir2, &o, KID, &s, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "cannot remove an unfinished store"));
    ck_assert_int_eq(stat(other, &st), 0);
    tu_rmrf(tmp);
    free(other);
    rm_store(dir2);
    free(torn);
    free(lock);
    free(tmp);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_flipped_checksum_byte_is_ecorrupt)
{
    const char *key = "kp.sentinel";
    char *dir = store_with_sentinel(key, strlen(key));
    /* The stored checksum follows the value. */
    uint8_t pat[sizeof(SENTINEL) - 1 + 8];
    memcpy(pat, SENTINEL, strlen(SENTINEL));
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    XXH3_64bits_update(h, key, strlen(key));
    XXH3_64bits_update(h, SENTINEL, strlen(SENTINEL));
    keel__put_u64(pat + strlen(SENTINEL), XXH3_64bits_digest(h));
    XXH3_freeState(h);
    uint8_t rep[sizeof(pat)];
    memcpy(rep, pat, sizeof(pat));
    rep[sizeof(rep) - 3] ^= 0x80;
    char *file = tu_path(dir, "data.mdb");
    ck_assert_uint_ge(patch_file(file, pat, rep, sizeof(pat)), 1);
    free(file);
    keel__store *s = open_ok(dir);
    keel_diag d = {0};
    keel_bytes v = {0};
    ck_assert_int_eq(keel__store_get(s, key, strlen(key), &v, &d),
                     KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(
        strstr(d.msg, "data.mdb: key \"kp.sentinel\": checksum mismatch"));
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* The stored meta "format" value: u32 LE version ‖ xxh3("format" ‖ it). */
static void format_value(uint32_t version, uint8_t out[12])
{
    keel__put_u32(out, version);
    uint8_t kv[10];
    memcpy(kv, "format", 6);
    memcpy(kv + 6, out, 4);
    keel__put_u64(out + 4, XXH3_64bits(kv, sizeof(kv)));
}

START_TEST(test_store_newer_format_version_is_eversion)
{
    char *dir = store_dir("store-version");
    keel__store_close(open_ok(dir));
    uint8_t v1[12];
    uint8_t v2[12];
    format_value(KEEL__STORE_FORMAT, v1);
    format_value(KEEL__STORE_FORMAT + 1, v2);
    char *file = tu_path(dir, "data.mdb");
    ck_assert_uint_ge(patch_file(file, v1, v2, sizeof(v1)), 1);
    free(file);
    keel__store *s = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_open(dir, NULL, KID, &s, &d), KEEL_EVERSION);
    ck_assert_ptr_null(s);
    ck_assert_str_eq(d.msg, "data.mdb: unsupported store format version 2 "
                            "(this keel reads version 1)");
    rm_store(dir);
}
END_TEST

START_TEST(test_store_flipped_meta_byte_is_ecorrupt)
{
    char *dir = store_dir("store-meta");
    keel__store_close(open_ok(dir));
    uint8_t id[8];
    uint8_t bad[8];
    keel__put_u64(id, KID);
    keel__put_u64(bad, KID ^ 0x100);
    char *file = tu_path(dir, "data.mdb");
    ck_assert_uint_ge(patch_file(file, id, bad, sizeof(id)), 1);
    free(file);
    keel__store *s = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_open(dir, NULL, 0, &s, &d), KEEL_ECORRUPT);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(d.msg, "data.mdb: meta \"kernel_id\": checksum "
                                "mismatch") != NULL,
                  "message: %s", d.msg);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_wrong_kernel_id_is_ecorrupt)
{
    char *dir = store_dir("store-kid");
    keel__store_close(open_ok(dir));
    keel__store *s = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_open(dir, NULL, 0x1234, &s, &d),
                     KEEL_ECORRUPT);
    ck_assert_ptr_null(s);
    ck_assert_str_eq(d.msg, "data.mdb: store belongs to kernel "
                            "0x6b65656c53544f52, expected 0x0000000000001234");
    /* 0 accepts any store and reports its id. */
    s = open_map(dir, 0, 0);
    ck_assert_uint_eq(keel__store_kernel_id(s), KID);
    keel__store_close(s);
    rm_store(dir);

    /* A new store opened with 0 gets a random id, kept. */
    dir = store_dir("store-kid0");
    s = open_map(dir, 0, 0);
    uint64_t id = keel__store_kernel_id(s);
    ck_assert_uint_ne(id, 0);
    keel__store_close(s);
    s = open_map(dir, id, 0);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_missing_store_without_create_is_enoent)
{
    char *dir = store_dir("store-enoent");
    keel__store_options o;
    keel__store_options_init(&o);
    o.create = 0;
    keel__store *s = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_open(dir, &o, KID, &s, &d), KEEL_ENOENT);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(d.msg, "data.mdb"));
    o.map_bytes = 0;
    o.create = 1;
    ck_assert_int_eq(keel__store_open(dir, &o, KID, &s, &d), KEEL_EINVAL);
    /* Once created, create = 0 opens it. */
    keel__store_close(open_ok(dir));
    keel__store_options_init(&o);
    o.create = 0;
    ck_assert_int_eq(keel__store_open(dir, &o, KID, &s, &d), KEEL_OK);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_map_full_is_enospc_then_failed)
{
    const uint64_t map = 256 * 1024;
    char *dir = store_dir("store-full");
    keel__store *s = open_limits(dir, map, map);
    begin_ok(s);
    put_ok(s, "kept", "checkpointed");
    apply_ok(s, 1);
    checkpoint_ok(s);
    char val[2000];
    memset(val, 'v', sizeof(val) - 1);
    val[sizeof(val) - 1] = '\0';
    char key[32];
    keel_diag d = {0};
    uint64_t lsn = 1;
    /* Applying only fills the overlay, in memory: the map fills when the
     * checkpoint writes the overlay into LMDB. */
    while (lsn < 200) {
        begin_ok(s);
        snprintf(key, sizeof(key), "fill.%04" PRIu64, lsn);
        put_ok(s, key, val);
        apply_ok(s, ++lsn);
    }
    ck_assert_uint_gt(keel__store_pending_bytes(s), map);
    int rc = keel__store_checkpoint(s, &d);
    ck_assert_msg(rc == KEEL_ENOSPC, "filling a %" PRIu64 "-byte map: %s (%s)",
                  map, keel_err_name(rc), d.msg);
    ck_assert_msg(strstr(d.msg, "store full") != NULL, "message: %s", d.msg);
    ck_assert_int_eq(keel__store_failed(s), KEEL_ENOSPC);
    ck_assert_uint_eq(keel__store_applied_lsn(s), lsn);
    ck_assert_uint_eq(keel__store_checkpoint_lsn(s), 1);
    /* Sticky: every later call, reads included. */
    keel_bytes v = {0};
    ck_assert_int_eq(keel__store_get(s, "kept", 4, &v, &d), KEEL_EFAILED);
    ck_assert_ptr_nonnull(strstr(d.msg, "store full"));
    ck_assert_int_eq(keel__store_ws_begin(s, &d), KEEL_EFAILED);
    ck_assert_int_eq(keel__store_checkpoint(s, &d), KEEL_EFAILED);
    uint64_t n = 0;
    ck_assert_int_eq(keel__store_count_prefix(s, "", 0, &n, &d), KEEL_EFAILED);
    ck_assert_int_eq(keel__store_apply_encoded(s, lsn + 1, "\0\0\0\0", 4, &d),
                     KEEL_EFAILED);
    keel__store_close(s);
    /* Reopening (with a larger map) finds the last checkpoint. */
    s = open_map(dir, KID, 0);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 1);
    expect_get(s, "kept", "checkpointed");
    ck_assert_uint_eq(count_ok(s, "fill."), 0);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * The map grows when a checkpoint fills it (ST11), up to a ceiling that
 * fails the store cleanly; stale reader slots are cleared (ST12).
 */

#define GROW_VALUE_BYTES 1500u

/* The value of grown key i: GROW_VALUE_BYTES bytes that depend on i. */
static void grow_value(uint64_t i, char *out)
{
    uint64_t st = i * 0x9e3779b97f4a7c15ull + 1;
    for (size_t j = 0; j < GROW_VALUE_BYTES; j++) {
        out[j] = (char)('a' + tu_rand(&st) % 26);
    }
    out[GROW_VALUE_BYTES] = '\0';
}

/* Apply write-set lsn: put g.<lsn> = grow_value(lsn). */
static void grow_apply(keel__store *s, uint64_t lsn)
{
    char key[32], val[GROW_VALUE_BYTES + 1];
    snprintf(key, sizeof(key), "g.%06" PRIu64, lsn);
    grow_value(lsn, val);
    begin_ok(s);
    put_ok(s, key, val);
    apply_ok(s, lsn);
}

/* Every g.<i> for i in 1..n reads back intact, and nothing else. */
static void grow_expect(keel__store *s, uint64_t n)
{
    char key[32], val[GROW_VALUE_BYTES + 1];
    for (uint64_t i = 1; i <= n; i++) {
        snprintf(key, sizeof(key), "g.%06" PRIu64, i);
        grow_value(i, val);
        expect_get(s, key, val);
    }
    ck_assert_uint_eq(count_ok(s, "g."), n);
}

/* A 64 KiB map (16 pages) holds a few dozen values: the checkpoints of
 * 600 of them grow it, and every value reads back, before and after a
 * reopen with the same small initial map. */
START_TEST(test_store_tiny_map_grows_across_checkpoints)
{
    const uint64_t map = 64 * 1024;
    char *dir = store_dir("store-grow");
    keel__store *s = open_limits(dir, map, 64u << 20);
    ck_assert_uint_eq(keel__store_map_bytes(s), map);
    uint64_t lsn = 0;
    for (int round = 0; round < 15; round++) {
        for (int i = 0; i < 40; i++) {
            grow_apply(s, ++lsn);
        }
        checkpoint_ok(s);
    }
    ck_assert_uint_gt(keel__store_map_bytes(s), 600 * GROW_VALUE_BYTES);
    ck_assert_uint_le(keel__store_map_bytes(s), 64u << 20);
    grow_expect(s, lsn);
    keel__store_close(s);
    s = open_limits(dir, map, 64u << 20);
    ck_assert_uint_eq(keel__store_applied_lsn(s), lsn);
    grow_expect(s, lsn);
    /* ... and it grows again from there. */
    for (int i = 0; i < 100; i++) {
        grow_apply(s, ++lsn);
    }
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    grow_expect(s, lsn);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* Fill a store with a 256 KiB ceiling until its checkpoint fails: a clean
 * KEEL_ENOSPC naming the limit, the disk still at the last checkpoint.
 * Reopening with the same ceiling fails the same way once the same
 * write-sets are applied again (as the WAL would replay them); with a
 * larger one they all fit. */
START_TEST(test_store_ceiling_fails_cleanly_and_larger_ceiling_recovers)
{
    const uint64_t max = 256 * 1024;
    const uint64_t n = 400; /* 600 KB of values: more than the ceiling */
    char *dir = store_dir("store-ceiling");
    keel_diag d = {0};
    uint64_t last = 0; /* the last checkpoint that fitted */
    for (int pass = 0; pass < 2; pass++) {
        keel__store *s = open_limits(dir, 64 * 1024, max);
        uint64_t lsn = keel__store_applied_lsn(s);
        ck_assert_uint_eq(lsn, last);
        int rc = KEEL_OK;
        while (rc == KEEL_OK && lsn < n) {
            for (int i = 0; i < 20; i++) {
                grow_apply(s, ++lsn);
            }
            rc = keel__store_checkpoint(s, &d);
        }
        ck_assert_msg(rc == KEEL_ENOSPC,
                      "pass %d: %" PRIu64 " values under a %" PRIu64
                      "-byte ceiling: %s (%s)",
                      pass, lsn, max, keel_err_name(rc), d.msg);
        ck_assert_msg(strstr(d.msg, "store full") != NULL &&
                          strstr(d.msg, "262144 bytes") != NULL &&
                          strstr(d.msg, "--store-max") != NULL,
                      "message names the limit and how to raise it: %s", d.msg);
        ck_assert_int_eq(keel__store_failed(s), KEEL_ENOSPC);
        ck_assert_uint_le(keel__store_map_bytes(s), max);
        if (pass == 0) {
            last = keel__store_checkpoint_lsn(s);
            ck_assert_uint_gt(last, 0);
        } else {
            ck_assert_uint_eq(keel__store_checkpoint_lsn(s), last);
        }
        keel__store_close(s);
    }
    struct stat st;
    char *file = tu_path(dir, "data.mdb");
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_uint_le((uint64_t)st.st_size, max);
    free(file);
    keel__store *s = open_limits(dir, 64 * 1024, 16u << 20);
    uint64_t lsn = keel__store_applied_lsn(s);
    ck_assert_uint_eq(lsn, last);
    grow_expect(s, lsn);
    while (lsn < n) {
        grow_apply(s, ++lsn);
    }
    checkpoint_ok(s);
    grow_expect(s, n);
    keel__store_close(s);
    s = open_ok(dir);
    grow_expect(s, n);
    keel__store_close(s);
    /* A ceiling below what the store already holds: it opens (LMDB maps
     * what it holds) and reads, and the first checkpoint that needs a new
     * page says what it holds. */
    s = open_limits(dir, 0, max);
    grow_expect(s, n);
    for (uint64_t i = 0; i < 20; i++) {
        grow_apply(s, n + 1 + i);
    }
    ck_assert_int_eq(keel__store_checkpoint(s, &d), KEEL_ENOSPC);
    ck_assert_msg(strstr(d.msg, "store full: data.mdb already holds") != NULL &&
                      strstr(d.msg, "over its size limit of 256 KiB") != NULL,
                  "message: %s", d.msg);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* A child that opens a view of dir, says "r", waits for a byte, then walks
 * the view (checking every checksum) and reports how many entries it saw
 * (UINT64_MAX on an error). */
static pid_t walker_child(const char *dir, int *to, int *from)
{
    int up[2], down[2];
    ck_assert_int_eq(pipe(up), 0);
    ck_assert_int_eq(pipe(down), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
            _exit(2);
        }
        keel__store_view *v = NULL;
        uint64_t n = UINT64_MAX;
        if (keel__store_view_open(dir, &v, NULL) != KEEL_OK) {
            child_say(up[1], n);
            _exit(1);
        }
        child_say(up[1], MARK_READY);
        char c;
        if (read(down[0], &c, 1) != 1) {
            _exit(3);
        }
        keel_bytes k, val;
        int rc;
        n = 0;
        while ((rc = keel__store_view_next(v, &k, &val, NULL)) == 1) {
            n++;
        }
        child_say(up[1], rc == 0 ? n : UINT64_MAX);
        keel__store_view_close(v);
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    uint64_t m = 0;
    ck_assert_int_eq(read(up[0], &m, sizeof(m)), (ssize_t)sizeof(m));
    ck_assert_msg(m == MARK_READY, "walker could not open its view");
    *to = down[1];
    *from = up[0];
    return pid;
}

/* Let the walker walk; @return what it counted. */
static uint64_t walker_count(pid_t pid, int to, int from)
{
    uint64_t n = UINT64_MAX;
    ck_assert_int_eq(write(to, "w", 1), 1);
    ck_assert_int_eq(read(from, &n, sizeof(n)), (ssize_t)sizeof(n));
    close(to);
    close(from);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return n;
}

/* A view in another process, opened before the kernel's map grew many
 * times over, still reads exactly its checkpoint; one opened after maps
 * the grown store and reads all of it. */
START_TEST(test_store_views_beside_a_growing_map_read_their_checkpoint)
{
    char *dir = store_dir("store-grow-view");
    keel__store *s = open_limits(dir, 64 * 1024, 256u << 20);
    uint64_t lsn = 0;
    for (int i = 0; i < 20; i++) {
        grow_apply(s, ++lsn);
    }
    checkpoint_ok(s);
    int to = -1, from = -1;
    pid_t early = walker_child(dir, &to, &from);
    uint64_t before = keel__store_map_bytes(s);
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 60; i++) {
            grow_apply(s, ++lsn);
        }
        checkpoint_ok(s);
    }
    ck_assert_uint_ge(keel__store_map_bytes(s), 8 * before);
    ck_assert_uint_eq(walker_count(early, to, from), 20);
    pid_t late = walker_child(dir, &to, &from);
    ck_assert_uint_eq(walker_count(late, to, from), lsn);
    grow_expect(s, lsn);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* A child that opens a view (an LMDB read transaction) of dir and then
 * either dies at once by SIGKILL (hold == 0), the way a `keel snapshot
 * create` killed mid-read does, or holds it until fd_in closes. It says
 * "r" on a pipe once its read transaction is open, and is reaped here when
 * it dies; a holder's *fd_in is for release_reader(). */
static pid_t reader_child(const char *dir, int hold, int *fd_in)
{
    int up[2], down[2];
    ck_assert_int_eq(pipe(up), 0);
    ck_assert_int_eq(pipe(down), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
            _exit(2);
        }
        keel__store_view *v = NULL;
        if (keel__store_view_open(dir, &v, NULL) != KEEL_OK) {
            _exit(1);
        }
        if (write(up[1], "r", 1) != 1) {
            _exit(3);
        }
        if (!hold) {
            raise(SIGKILL);
        }
        char c;
        while (read(down[0], &c, 1) > 0) {
        }
        keel__store_view_close(v);
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    char c = 0;
    ck_assert_int_eq(read(up[0], &c, 1), 1);
    ck_assert_int_eq(c, 'r');
    close(up[0]);
    if (!hold) {
        int st = 0;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        close(down[1]);
    } else {
        *fd_in = down[1];
    }
    return pid;
}

static void release_reader(pid_t pid, int fd)
{
    close(fd);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A reader killed while another process keeps the environment open (so
 * LMDB does not reset its lock file on the next open) leaves its slot
 * behind; opening the store clears it. */
START_TEST(test_store_open_clears_reader_slot_of_killed_reader)
{
    char *dir = store_dir("store-readers");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "k", "v");
    apply_ok(s, 1);
    checkpoint_ok(s);
    keel__store_close(s);
    int hold_fd = -1;
    pid_t holder = reader_child(dir, 1, &hold_fd);
    reader_child(dir, 0, NULL);
    s = open_ok(dir);
    uint32_t slots = 0;
    uint64_t cleared = 0;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_readers(s, &slots, &cleared, &d), KEEL_OK);
    ck_assert_msg(slots == 1 && cleared == 1,
                  "after open: %u reader slots (the holder's only: 1 "
                  "expected), %" PRIu64 " cleared (1 expected)",
                  slots, cleared);
    expect_get(s, "k", "v");
    keel__store_close(s);
    release_reader(holder, hold_fd);
    rm_store(dir);
}
END_TEST

/* A reader killed while the store is open (a snapshot of a running
 * kernel): the next checkpoint clears its slot, which would otherwise pin
 * the pages of its snapshot, and data.mdb would only grow. */
START_TEST(test_store_checkpoint_clears_reader_slot_killed_while_open)
{
    char *dir = store_dir("store-readers-ckpt");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "k", "v1");
    apply_ok(s, 1);
    checkpoint_ok(s);
    reader_child(dir, 0, NULL);
    uint32_t slots = 0;
    uint64_t cleared = 0;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_readers(s, &slots, &cleared, &d), KEEL_OK);
    ck_assert_uint_eq(slots, 1); /* the dead reader's */
    begin_ok(s);
    put_ok(s, "k", "v2");
    apply_ok(s, 2);
    checkpoint_ok(s);
    ck_assert_int_eq(keel__store_readers(s, &slots, &cleared, &d), KEEL_OK);
    ck_assert_msg(slots == 0 && cleared == 1,
                  "after a checkpoint: %u reader slots, %" PRIu64 " cleared",
                  slots, cleared);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* Opening a view clears the slot of a reader killed before it. */
START_TEST(test_store_view_open_clears_reader_slot_of_killed_reader)
{
    char *dir = store_dir("store-readers-view");
    keel__store *s = open_ok(dir);
    begin_ok(s);
    put_ok(s, "k", "v");
    apply_ok(s, 1);
    checkpoint_ok(s);
    keel__store_close(s);
    int hold_fd = -1;
    pid_t holder = reader_child(dir, 1, &hold_fd);
    reader_child(dir, 0, NULL);
    keel__store_view *v = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_view_open(dir, &v, &d), KEEL_OK);
    ck_assert_uint_eq(keel__store_view_readers_cleared(v), 1);
    keel_bytes val;
    ck_assert_int_eq(keel__store_view_get(v, "k", 1, &val, &d), 1);
    keel__store_view_close(v);
    release_reader(holder, hold_fd);
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * The same through a kernel: a store that reaches its ceiling, or a file
 * system that refuses data.mdb's writes for real, fails the kernel with
 * one clear message and loses nothing acknowledged; reopening with room
 * replays the WAL to the state of an uninterrupted run.
 */

#define FILL_VALUE_BYTES (16u * 1024)
#define FILL_CRANKS      300u /* 4.8 MB of values */

/* "filler": bootstrap starts a chain of fill(i) to itself, i = 0 ..
 * FILL_CRANKS-1; fill(i) stores f.<i> = FILL_VALUE_BYTES bytes that depend
 * on i and sends fill(i+1). One crank, one 16 KiB value. */
static int filler_start(keel_syscall *sys, const char *params_json,
                        void **state)
{
    (void)sys;
    (void)params_json;
    *state = NULL;
    return KEEL_OK;
}

static int filler_deliver(void *state, keel_syscall *sys,
                          const keel_delivery *d)
{
    (void)state;
    uint64_t i = 0;
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_OK;
    }
    if (strcmp(d->method, "fill") == 0) {
        char num[24] = {0};
        memcpy(num, d->args.body.ptr,
               d->args.body.len < sizeof(num) - 1 ? d->args.body.len
                                                  : sizeof(num) - 1);
        i = strtoull(num, NULL, 10);
    }
    static uint8_t val[FILL_VALUE_BYTES];
    uint64_t st = i + 1;
    for (size_t j = 0; j < sizeof(val); j += 8) {
        uint64_t r = tu_rand(&st);
        memcpy(val + j, &r, 8);
    }
    char key[32];
    snprintf(key, sizeof(key), "f.%06" PRIu64, i);
    int rc = keel_syscall_vatstore_set(sys, key, val, sizeof(val));
    if (rc == KEEL_OK && i + 1 < FILL_CRANKS) {
        char body[24];
        int n = snprintf(body, sizeof(body), "%" PRIu64, i + 1);
        keel_capdata cd = {{body, (size_t)n}, NULL, 0};
        rc = keel_syscall_send(sys, "o+0", "fill", &cd, NULL);
    }
    return rc;
}

static void filler_stop(void *state)
{
    (void)state;
}

static const keel_vat_ops t_filler = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "filler",
    .start = filler_start,
    .deliver = filler_deliver,
    .stop = filler_stop,
};

static const keel_vat_ops *filler_resolve(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "filler") == 0 ? &t_filler : NULL;
}

static const char FILL_CONFIG[] =
    "{\"bootstrap\":\"filler\",\"vats\":{\"filler\":{\"builtin\":\"filler\"}}}";

static void fill_options(keel_kernel_options *o, uint64_t store_max)
{
    keel_kernel_options_init(o);
    o->resolve_vat = filler_resolve;
    o->checkpoint_cranks = 8; /* many checkpoints: the store grows in each */
    o->wal_segment_bytes = 256 * 1024;
    o->store_max_bytes = store_max;
}

/* Open (creating and booting when new) and run to idle.
 * @return the first error, *d its message; *crank the crank number. */
static int fill_run(const char *state, uint64_t store_max, uint64_t *crank,
                    uint64_t *hash, keel_diag *d)
{
    keel_kernel_options o;
    keel_kernel *k = NULL;
    fill_options(&o, store_max);
    int rc = keel_kernel_open(state, &o, &k, d);
    if (rc == KEEL_OK && !keel_kernel_booted(k)) {
        rc = keel_kernel_boot(k, FILL_CONFIG, ".", d);
    }
    if (rc == KEEL_OK) {
        keel_run_options ro;
        keel_run_stats stats;
        memset(&ro, 0, sizeof(ro));
        rc = keel_kernel_run(k, &ro, &stats, d);
        keel_diag fd = {0};
        if (rc < 0 && keel_kernel_step(k, &fd) != KEEL_EFAILED) {
            /* K13: a storage failure leaves the kernel FAILED */
            keel_diag was = *d;
            rc = keel__diag(d, KEEL_EINVAL, "not FAILED after: %s", was.msg);
        }
    }
    if (k != NULL) {
        *crank = keel_kernel_crank_number(k);
        *hash = keel_kernel_activity_hash(k);
        keel_diag cd = {0};
        int crc = keel_kernel_close(k, &cd);
        if (rc == KEEL_OK && crc < 0) {
            rc = crc;
            *d = cd;
        }
    }
    return rc;
}

/* The crank number and activity hash of an uninterrupted run. */
static void fill_reference(const char *root, uint64_t *crank, uint64_t *hash)
{
    char *state = tu_path(root, "reference");
    keel_diag d = {0};
    int rc = fill_run(state, 0, crank, hash, &d);
    ck_assert_msg(rc == KEEL_OK, "reference run: %s: %s", keel_err_name(rc),
                  d.msg);
    ck_assert_uint_ge(*crank, FILL_CRANKS);
    free(state);
}

/* The crank number a reopened STATE recovers to, before running. */
static uint64_t fill_recovered_crank(const char *state, uint64_t store_max)
{
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    fill_options(&o, store_max);
    int rc = keel_kernel_open(state, &o, &k, &d);
    ck_assert_msg(rc == KEEL_OK, "reopen: %s: %s", keel_err_name(rc), d.msg);
    uint64_t crank = keel_kernel_crank_number(k);
    ck_assert_int_eq(keel_kernel_close(k, &d), KEEL_OK);
    return crank;
}

START_TEST(test_store_kernel_store_max_fails_cleanly_then_larger_recovers)
{
    char *root = tu_tmpdir("store-kmax");
    char *state = tu_path(root, "state");
    uint64_t ref_crank = 0, ref_hash = 0, crank = 0, hash = 0;
    fill_reference(root, &ref_crank, &ref_hash);
    const uint64_t max = 2u << 20;
    keel_diag d = {0};
    int rc = fill_run(state, max, &crank, &hash, &d);
    ck_assert_msg(rc == KEEL_ENOSPC, "a 2 MiB store for 4.8 MB: %s: %s",
                  keel_err_name(rc), d.msg);
    ck_assert_msg(
        strstr(d.msg, "store/data.mdb") != NULL &&
            strstr(d.msg, "store full") != NULL &&
            strstr(d.msg, "2097152 bytes") != NULL &&
            strstr(d.msg, "--store-max") != NULL && strchr(d.msg, '\n') == NULL,
        "one line naming the file, the limit and the flag: %s", d.msg);
    ck_assert_uint_gt(crank, 8);
    ck_assert_uint_lt(crank, ref_crank);
    /* Reopening with the same ceiling replays into the same wall, and says
     * so the same way. */
    keel_kernel_options o;
    keel_kernel *k = NULL;
    fill_options(&o, max);
    keel_diag d2 = {0};
    rc = keel_kernel_open(state, &o, &k, &d2);
    ck_assert_msg(rc == KEEL_ENOSPC && strstr(d2.msg, "store full") != NULL &&
                      strstr(d2.msg, "--store-max") != NULL,
                  "reopen under the same ceiling: %s: %s", keel_err_name(rc),
                  d2.msg);
    ck_assert_ptr_null(k);
    /* Nothing acknowledged was lost: a larger ceiling recovers every
     * crank committed before the failure, then runs to the end. */
    ck_assert_uint_ge(fill_recovered_crank(state, 64u << 20), crank);
    rc = fill_run(state, 64u << 20, &crank, &hash, &d);
    ck_assert_msg(rc == KEEL_OK, "resume with 64 MiB: %s: %s",
                  keel_err_name(rc), d.msg);
    ck_assert_uint_eq(crank, ref_crank);
    ck_assert_msg(hash == ref_hash,
                  "activity hash %016" PRIx64 ", uninterrupted %016" PRIx64,
                  hash, ref_hash);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* A file system that refuses data.mdb's writes, for real: the writer runs
 * in a child whose RLIMIT_FSIZE is 3 MiB (SIGXFSZ ignored, so writes past
 * it fail with EFBIG or come up short); every WAL segment (256 KiB) fits,
 * data.mdb (4.8 MB of values) does not. */
START_TEST(test_store_kernel_file_size_limit_fails_cleanly_then_recovers)
{
    char *root = tu_tmpdir("store-kfsize");
    char *state = tu_path(root, "state");
    uint64_t ref_crank = 0, ref_hash = 0;
    fill_reference(root, &ref_crank, &ref_hash);
    struct {
        int rc;
        uint64_t crank;
        char msg[512];
    } got;
    memset(&got, 0, sizeof(got));
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 3u << 20, .rlim_max = 3u << 20};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
            _exit(2);
        }
        keel_diag d = {0};
        uint64_t hash = 0;
        got.rc = fill_run(state, 0, &got.crank, &hash, &d);
        memcpy(got.msg, d.msg, sizeof(got.msg));
        _exit(write(fds[1], &got, sizeof(got)) == (ssize_t)sizeof(got) ? 0 : 3);
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], &got, sizeof(got)), (ssize_t)sizeof(got));
    close(fds[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_msg(got.rc == KEEL_ENOSPC,
                  "data.mdb past the file size limit: %s: %s",
                  keel_err_name(got.rc), got.msg);
    ck_assert_msg(strstr(got.msg, "store/data.mdb") != NULL &&
                      strstr(got.msg, "file size limit") != NULL &&
                      strchr(got.msg, '\n') == NULL,
                  "one line naming the file and the limit: %s", got.msg);
    ck_assert_uint_lt(got.crank, ref_crank);
    /* Without the limit: every crank the child committed is there, and
     * the run ends where the uninterrupted one did. */
    ck_assert_uint_ge(fill_recovered_crank(state, 0), got.crank);
    uint64_t crank = 0, hash = 0;
    keel_diag d = {0};
    int rc = fill_run(state, 0, &crank, &hash, &d);
    ck_assert_msg(rc == KEEL_OK, "resume: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_uint_eq(crank, ref_crank);
    ck_assert_msg(hash == ref_hash,
                  "activity hash %016" PRIx64 ", uninterrupted %016" PRIx64,
                  hash, ref_hash);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* `keel run --store-max`: sizes with suffixes, a clean failure at the
 * limit, and a resume with a larger one that ends where an uninterrupted
 * run does. */
START_TEST(test_store_cli_store_max_fails_cleanly_then_resumes)
{
    char *root = tu_tmpdir("store-cli");
    char *state = tu_path(root, "state");
    char *ref = tu_path(root, "reference");
    char *cfg = tu_path(root, "chain5.json");
    char *out = NULL, *err = NULL;
    /* a workload whose live state grows (the coordinator keeps result.<i>
     * per round; garbage collection keeps the mixed workload's state too
     * small to fill even the smallest store) */
    static const char chain5[] =
        "{\"bootstrap\":\"coordinator\",\"vats\":{\"coordinator\":"
        "{\"builtin\":\"coordinator\",\"params\":{\"rounds\":3000}},"
        "\"provider\":{\"builtin\":\"provider\"},"
        "\"keyring\":{\"builtin\":\"keyring\"}}}";
    tu_write_file(cfg, chain5, sizeof(chain5) - 1);
    static const char *const bad[] = {"12X", "64k", "-1M",
                                      "",    "1K",  "99999999999999999999G"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *args[] = {
            "run",         state,  "--config", KEEL_MIXED_JSON,
            "--store-max", bad[i], NULL};
        ck_assert_int_eq(tu_run_keel(args, &out, &err), 2);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, "--store-max") != NULL, "%s", err);
        free(out);
        free(err);
    }
    const char *small[] = {
        "run",         state, "--config", cfg, "--deterministic",
        "--store-max", "64K", NULL};
    ck_assert_int_eq(tu_run_keel(small, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "store full") != NULL &&
                      strstr(err, "65536 bytes") != NULL &&
                      strstr(err, "--store-max") != NULL,
                  "%s", err);
    free(out);
    free(err);
    const char *big[] = {
        "run", state, "--deterministic", "--store-max", "4G", "--json", NULL};
    ck_assert_int_eq(tu_run_keel(big, &out, &err), 0);
    json_t *a = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(a);
    free(out);
    free(err);
    const char *whole[] = {"run",    ref, "--config", cfg, "--deterministic",
                           "--json", NULL};
    ck_assert_int_eq(tu_run_keel(whole, &out, &err), 0);
    json_t *b = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(json_string_value(json_object_get(a, "activity_hash")),
                     json_string_value(json_object_get(b, "activity_hash")));
    ck_assert_int_eq(json_integer_value(json_object_get(a, "crank")),
                     json_integer_value(json_object_get(b, "crank")));
    json_decref(a);
    json_decref(b);
    free(out);
    free(err);
    free(ref);
    free(cfg);
    free(state);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* ---------------------------------------------------------------------
 * Programmer errors assert.
 */

/* A new store's directories (`<dir>.new`, built and renamed; dir itself
 * when absent) and the removal of an unfinished one go through the store's
 * I/O table: a failing mkdir refuses the open with the path, and the next
 * open makes the store. */
START_TEST(test_store_create_mkdir_goes_through_io_table)
{
    char *dir = store_dir("store-mkdir");
    keel_io_fault *f = tu_fault_failing(KEEL_IO_OP_MKDIR, 1, KEEL_ENOSPC);
    keel__store_options o;
    keel__store_options_init(&o);
    o.io = keel__io_fault_io(f);
    keel__store *s = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__store_open(dir, &o, KID, &s, &d), KEEL_ENOSPC);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(d.msg, dir) != NULL, "%s", d.msg);
    ck_assert_uint_eq(keel__io_fault_count(f, KEEL_IO_OP_MKDIR), 1);
    /* the failed open left nothing that stops the next one */
    ck_assert_msg(keel__store_open(dir, &o, KID, &s, &d) == KEEL_OK, "%s",
                  d.msg);
    keel__store_close(s);
    /* `<dir>.new` made, then dir found existing: two mkdirs; the unborn
     * `<dir>.new` and dir looked for with rmdir before the rename */
    ck_assert_uint_ge(keel__io_fault_count(f, KEEL_IO_OP_MKDIR), 3);
    ck_assert_uint_ge(keel__io_fault_count(f, KEEL_IO_OP_RMDIR), 2);
    keel__io_fault_free(f);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_apply_lsn_not_increasing_aborts)
{
    char *dir = store_dir("store-lsn");
    keel__store *s = open_ok(dir);
    rm_store(dir); /* the process aborts below: leave nothing behind */
    begin_ok(s);
    apply_ok(s, 5);
    begin_ok(s);
    keel__store_ws_apply(s, 5, NULL);
}
END_TEST

START_TEST(test_store_put_without_write_set_aborts)
{
    char *dir = store_dir("store-nows");
    keel__store *s = open_ok(dir);
    rm_store(dir); /* the process aborts below: leave nothing behind */
    keel__store_ws_put(s, "k", 1, "v", 1, NULL);
}
END_TEST

/* ---------------------------------------------------------------------
 * The one replay loop (store/replay.c RP1..RP4).
 */

/* A log "wal" beside the store directory dir, of kernel KID, starting at
 * first_lsn, whose record i (0-based) puts "r.<i>" = "v"; with bad_at != 0
 * record bad_at (1-based) is instead one op of kind 3 (a damaged
 * write-set). rm_store(dir) removes it. */
static char *replay_log(const char *dir, uint64_t first_lsn, int n, int bad_at)
{
    char *root = strdup(dir);
    ck_assert_ptr_nonnull(root);
    *strrchr(root, '/') = '\0';
    keel_wal_options wo;
    keel_wal_options_init(&wo);
    wo.kernel_id = KID;
    wo.first_lsn = first_lsn;
    char *wal = tu_path(root, "wal");
    free(root);
    keel_wal *w = NULL;
    keel_diag d = {0};
    int rc = keel_wal_open(wal, &wo, &w, NULL, &d);
    ck_assert_msg(rc == KEEL_OK, "wal: %s", d.msg);
    for (int i = 0; i < n; i++) {
        uint8_t buf[64];
        char key[16];
        int kl = snprintf(key, sizeof(key), "r.%d", i);
        keel__ws_encode_count(buf, 1);
        uint8_t *end = keel__ws_encode_op(buf + 4, KEEL__STORE_PUT, key,
                                          (uint32_t)kl, "v", 1);
        if (i + 1 == bad_at) {
            buf[4] = 3;
        }
        uint64_t lsn = 0;
        rc = keel_wal_append(w, KEEL_WAL_KERNEL_OP, 0, buf, (size_t)(end - buf),
                             &lsn, &d);
        ck_assert_msg(rc == KEEL_OK, "append: %s", d.msg);
    }
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    return wal;
}

/* Stop before the record whose LSN is *arg; count the records seen. */
static int replay_seen;
static int stop_at(void *arg, const keel_wal_record *rec, keel_diag *diag)
{
    replay_seen++;
    return rec->lsn == *(uint64_t *)arg ? KEEL__REPLAY_STOP
                                        : KEEL__REPLAY_APPLY;
}

START_TEST(test_store_replay_stops_resumes_and_refuses_damage)
{
    char *dir = store_dir("store-replay");
    char *wal = replay_log(dir, 1, 6, 6);
    keel__store *s = open_ok(dir);
    keel__store_replay_options o;
    keel__store_replay_report rep;
    keel_diag d = {0};
    keel_bytes v;
    /* A callback's STOP ends the replay before the record (RP2). */
    uint64_t stop = 4;
    keel__store_replay_options_init(&o);
    o.record = stop_at;
    o.arg = &stop;
    replay_seen = 0;
    int rc = keel__store_replay(s, wal, &o, &rep, &d);
    ck_assert_msg(rc == KEEL_OK, "replay: %s", d.msg);
    ck_assert_int_eq(replay_seen, 4);
    ck_assert_uint_eq(rep.replayed, 3);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 3);
    ck_assert_int_eq(keel__store_get(s, "r.2", 3, &v, &d), 1);
    ck_assert_int_eq(keel__store_get(s, "r.3", 3, &v, &d), 0);
    /* Resumed after the applied LSN, bounded (RP4): the log must reach
     * LSN 5, and the replay stops after it. */
    keel__store_replay_options_init(&o);
    o.last_lsn = 5;
    rc = keel__store_replay(s, wal, &o, &rep, &d);
    ck_assert_msg(rc == KEEL_OK, "replay: %s", d.msg);
    ck_assert_uint_eq(rep.replayed, 2);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 5);
    /* The damaged record 6 is refused with the decoder's words, naming
     * the record; nothing is applied. */
    keel__store_replay_options_init(&o);
    rc = keel__store_replay(s, wal, &o, &rep, &d);
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "LSN 6: payload offset 4: bad op kind 3, "
                                "expected 1 (put) or 2 (delete)") != NULL,
                  "%s", d.msg);
    ck_assert_msg(strncmp(d.msg, "wal/", 4) == 0, "%s", d.msg);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 5);
    /* A log that ends before a bounded last LSN (RP4). */
    keel__store_replay_options_init(&o);
    o.last_lsn = 9;
    o.record = stop_at; /* before the damaged record */
    o.arg = &stop;
    stop = 6;
    rc = keel__store_replay(s, wal, &o, &rep, &d);
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "replay stopped at LSN 5, the log ends at 9"),
                  "%s", d.msg);
    /* A store ahead of the bounded last LSN (RP4). */
    keel__store_replay_options_init(&o);
    o.last_lsn = 2;
    rc = keel__store_replay(s, wal, &o, &rep, &d);
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "applied LSN 5 is ahead of the WAL"), "%s",
                  d.msg);
    keel__store_close(s);
    free(wal);
    rm_store(dir);
}
END_TEST

START_TEST(test_store_replay_gap_is_refused)
{
    char *dir = store_dir("store-replay-gap");
    char *wal = replay_log(dir, 10, 2, 0);
    keel__store *s = open_ok(dir);
    keel__store_replay_options o;
    keel__store_replay_report rep;
    keel_diag d = {0};
    keel__store_replay_options_init(&o);
    int rc = keel__store_replay(s, wal, &o, &rep, &d);
    ck_assert_int_eq(rc, KEEL_ECORRUPT); /* RP1 */
    ck_assert_msg(strstr(d.msg, ": LSN 10, expected LSN 1 after the store's "
                                "applied LSN 0") != NULL,
                  "%s", d.msg);
    ck_assert_uint_eq(rep.replayed, 0);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 0);
    keel__store_close(s);
    free(wal);
    rm_store(dir);
}
END_TEST

/* ---------------------------------------------------------------------
 * The append log and its hash index (store/map.c), and the steady state.
 */

/*
 * Allocation counting for the steady-state test: the test binary
 * replaces malloc, calloc and realloc (glibc allows it; they forward to
 * glibc's own) and counts the calls made while alloc_counting is set, by
 * the store and by LMDB alike. Sanitizers bring their own allocator, so
 * there the test only runs the workload.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ALLOC_COUNTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define ALLOC_COUNTING 0
#endif
#endif
#ifndef ALLOC_COUNTING
#define ALLOC_COUNTING 1
#endif

static int alloc_counting;
static uint64_t alloc_calls;

#if ALLOC_COUNTING
/* Seen by the shared libraries too (LMDB's allocations count). */
#define EXPORTED __attribute__((visibility("default")))
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

static void count_alloc(void)
{
    if (__atomic_load_n(&alloc_counting, __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&alloc_calls, 1, __ATOMIC_RELAXED);
    }
}

EXPORTED void *malloc(size_t n)
{
    count_alloc();
    return __libc_malloc(n);
}

EXPORTED void *calloc(size_t n, size_t size)
{
    count_alloc();
    return __libc_calloc(n, size);
}

EXPORTED void *realloc(void *p, size_t n)
{
    count_alloc();
    return __libc_realloc(p, n);
}
#endif

/* Many writes of one key in one write-set: each read sees the last, the
 * write-set holds one op for it, and the encoding carries only that. */
START_TEST(test_store_ws_many_writes_of_one_key_read_the_last)
{
    char *dir = store_dir("store-ws-hot");
    keel__store *s = open_ok(dir);
    crank_set(s, 1, "hot", "on disk");
    checkpoint_ok(s);
    begin_ok(s);
    char v[64];
    for (int i = 0; i < 20000; i++) {
        /* Values grow and shrink, so some fit the old space and some do
         * not; every 7th write is a delete. */
        if (i % 7 == 3) {
            del_ok(s, "hot");
            expect_get(s, "hot", NULL);
            expect_next(s, "", "h", NULL);
        } else {
            snprintf(v, sizeof(v), "%0*d", 1 + i % 40, i);
            put_ok(s, "hot", v);
            expect_get(s, "hot", v);
            expect_next(s, "", "h", "hot");
        }
        ck_assert_uint_eq(keel__store_ws_count(s), 1);
    }
    snprintf(v, sizeof(v), "%0*d", 1 + 19999 % 40, 19999);
    uint8_t buf[128];
    size_t len = 0;
    ck_assert_uint_eq(keel__store_ws_encode_bound(s),
                      4 + 5 + 3 + 4 + strlen(v));
    ck_assert_int_eq(keel__store_ws_encode(s, buf, sizeof(buf), &len, NULL),
                     KEEL_OK);
    ck_assert_uint_eq(len, 4 + 5 + 3 + 4 + strlen(v));
    ck_assert_uint_eq(keel__get_u32(buf), 1);
    apply_ok(s, 2);
    expect_get(s, "hot", v);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* Scans inside a transaction see its own writes in key order, whatever
 * order they were written in, interleaved with the writes (each scan
 * after a new key merges it into the ordered view), over the overlay
 * and the disk; deletes then re-puts of the same keys too. */
START_TEST(test_store_ws_scans_see_uncommitted_writes_in_order)
{
    char *dir = store_dir("store-ws-scan");
    keel__store *s = open_ok(dir);
    model m = {0};
    char k[32];
    uint64_t st = 0x6b65656c73746f10ull;
    /* On disk: even keys; in the overlay: multiples of 3. */
    begin_ok(s);
    for (int i = 0; i < 600; i += 2) {
        snprintf(k, sizeof(k), "vs.%04d", i);
        put_ok(s, k, "disk");
        model_put(&m, k, strlen(k), "disk", 4);
    }
    apply_ok(s, 1);
    checkpoint_ok(s);
    begin_ok(s);
    for (int i = 0; i < 600; i += 3) {
        snprintf(k, sizeof(k), "vs.%04d", i);
        put_ok(s, k, "ov");
        model_put(&m, k, strlen(k), "ov", 2);
    }
    apply_ok(s, 2);
    begin_ok(s);
    for (int step = 0; step < 3000; step++) {
        int i = (int)(tu_rand(&st) % 700);
        snprintf(k, sizeof(k), "vs.%04d", i);
        uint64_t r = tu_rand(&st) % 10;
        if (r < 4) {
            put_ok(s, k, k);
            model_put(&m, k, strlen(k), k, strlen(k));
        } else if (r < 7) {
            del_ok(s, k);
            model_del(&m, k, strlen(k));
        } else {
            /* The next key after a random one, and a full count. */
            keel_bytes nk = {0};
            keel_diag d = {0};
            int rc = keel__store_next_key(s, k, strlen(k), "vs.", 3, &nk, &d);
            const ent *want = model_next(&m, (const uint8_t *)k, strlen(k),
                                         (const uint8_t *)"vs.", 3);
            ck_assert_msg(rc == (want != NULL), "step %d: next_key %d (%s)",
                          step, rc, d.msg);
            ck_assert_msg(want == NULL ||
                              tkeycmp(nk.ptr, nk.len, want->k, want->kl) == 0,
                          "step %d: next_key after %s: %.*s, expected %.*s",
                          step, k, (int)nk.len, (const char *)nk.ptr,
                          want != NULL ? (int)want->kl : 0,
                          want != NULL ? (const char *)want->k : "");
            if (step % 50 == 0) {
                ck_assert_uint_eq(count_ok(s, "vs."), m.n);
            }
        }
    }
    expect_equals(s, &m, "in the transaction");
    apply_ok(s, 3);
    expect_equals(s, &m, "applied");
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    expect_equals(s, &m, "reopened");
    keel__store_close(s);
    model_free(&m);
    rm_store(dir);
}
END_TEST

/* A key deleted and put again, within one write-set and across write-sets,
 * over a key on disk and over one that never was. */
START_TEST(test_store_ws_delete_then_put_again_reads_right)
{
    char *dir = store_dir("store-ws-delput");
    keel__store *s = open_ok(dir);
    crank_set(s, 1, "d.disk", "v1");
    checkpoint_ok(s);
    begin_ok(s);
    del_ok(s, "d.disk");
    del_ok(s, "d.new");
    expect_get(s, "d.disk", NULL);
    expect_next(s, "", "d.", NULL);
    put_ok(s, "d.disk", "v2");
    put_ok(s, "d.new", "n1");
    expect_get(s, "d.disk", "v2");
    expect_next(s, "", "d.", "d.disk");
    expect_next(s, "d.disk", "d.", "d.new");
    del_ok(s, "d.new");
    expect_next(s, "d.disk", "d.", NULL);
    ck_assert_uint_eq(keel__store_ws_count(s), 2);
    apply_ok(s, 2);
    expect_get(s, "d.disk", "v2");
    expect_get(s, "d.new", NULL);
    /* Across write-sets: delete (a tombstone over the disk), put back. */
    crank_set(s, 3, "d.disk", NULL);
    expect_get(s, "d.disk", NULL);
    ck_assert_uint_eq(count_ok(s, "d."), 0);
    crank_set(s, 4, "d.disk", "v3");
    crank_set(s, 5, "d.new", "n2");
    crank_set(s, 6, "d.new", NULL);
    crank_set(s, 7, "d.new", "n3");
    ck_assert_uint_eq(count_ok(s, "d."), 2);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    expect_get(s, "d.disk", "v3");
    expect_get(s, "d.new", "n3");
    ck_assert_uint_eq(count_ok(s, "d."), 2);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* One write-set grows its hash index many times past its load factor
 * (64 slots at first, at most half full); every key stays found, in
 * order, and an abort then leaves nothing of it: the next write-set,
 * reusing the grown buffers, holds only its own ops. */
START_TEST(test_store_ws_index_growth_and_abort_discard_everything)
{
    char *dir = store_dir("store-ws-grow");
    keel__store *s = open_ok(dir);
    crank_set(s, 1, "g.00500", "disk");
    checkpoint_ok(s);
    crank_set(s, 2, "g.00501", "overlay");
    char k[32];
    begin_ok(s);
    for (int i = 0; i < 5000; i++) {
        /* Written out of order: 7 is coprime to 5000. */
        snprintf(k, sizeof(k), "g.%05d", (i * 7) % 5000);
        put_ok(s, k, k);
        if ((i & (i - 1)) == 0) { /* at each power of two: all found */
            for (int j = 0; j <= i; j++) {
                snprintf(k, sizeof(k), "g.%05d", (j * 7) % 5000);
                expect_get(s, k, k);
            }
            uint64_t extra = 2; /* g.00500 and g.00501, unless written */
            for (int j = 0; j <= i; j++) {
                int x = (j * 7) % 5000;
                extra -= x == 500 || x == 501;
            }
            ck_assert_uint_eq(count_ok(s, "g."), (uint64_t)i + 1 + extra);
        }
    }
    ck_assert_uint_eq(keel__store_ws_count(s), 5000);
    ck_assert_uint_eq(count_ok(s, "g."), 5000);
    del_ok(s, "g.00500");
    del_ok(s, "g.00501");
    ck_assert_uint_eq(count_ok(s, "g."), 4998);
    keel__store_ws_abort(s);
    ck_assert_uint_eq(keel__store_ws_count(s), 0);
    expect_get(s, "g.00500", "disk");
    expect_get(s, "g.00501", "overlay");
    expect_get(s, "g.00000", NULL);
    expect_get(s, "g.04999", NULL);
    ck_assert_uint_eq(count_ok(s, "g."), 2);
    expect_next(s, "", "g.", "g.00500");
    expect_next(s, "g.00500", "g.", "g.00501");
    expect_next(s, "g.00501", "g.", NULL);
    begin_ok(s);
    put_ok(s, "g.00001", "x");
    expect_get(s, "g.00002", NULL);
    ck_assert_uint_eq(keel__store_ws_count(s), 1);
    ck_assert_uint_eq(count_ok(s, "g."), 3);
    uint8_t buf[64];
    size_t len = 0;
    ck_assert_int_eq(keel__store_ws_encode(s, buf, sizeof(buf), &len, NULL),
                     KEEL_OK);
    ck_assert_uint_eq(len, 4 + 5 + 7 + 4 + 1);
    apply_ok(s, 3);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(count_ok(s, "g."), 3);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* A million ops over 50,000 keys (puts, deletes, re-puts; scans now and
 * then, so the overlay's ordered view is merged into while it is large)
 * coalesce in the overlay and reach LMDB in one checkpoint, in key order:
 * every key reads back, before and after a reopen. */
START_TEST(test_store_checkpoint_after_a_million_ops)
{
    enum { NKEYS = 50000, TXNS = 10000, OPS = 100 };
    char *dir = store_dir("store-1m");
    keel__store *s = open_ok(dir);
    uint32_t *want = calloc(NKEYS, sizeof(*want)); /* 0: absent */
    ck_assert_ptr_nonnull(want);
    uint64_t st = 0x6b65656c73746f11ull;
    char k[32];
    char v[32];
    for (uint32_t t = 1; t <= TXNS; t++) {
        begin_ok(s);
        for (uint32_t o = 0; o < OPS; o++) {
            uint32_t i = (uint32_t)(tu_rand(&st) % NKEYS);
            snprintf(k, sizeof(k), "c.%05" PRIu32, i);
            if (tu_rand(&st) % 4 == 0) {
                del_ok(s, k);
                want[i] = 0;
            } else {
                uint32_t val = t * OPS + o;
                snprintf(v, sizeof(v), "%" PRIu32, val);
                put_ok(s, k, v);
                want[i] = val;
            }
        }
        apply_ok(s, t);
        if (t % 1000 == 0) {
            uint64_t live = 0;
            for (uint32_t i = 0; i < NKEYS; i++) {
                live += want[i] != 0;
            }
            ck_assert_uint_eq(count_ok(s, "c."), live);
        }
    }
    uint64_t live = 0;
    for (uint32_t i = 0; i < NKEYS; i++) {
        live += want[i] != 0;
    }
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    for (int round = 0; round < 2; round++) {
        keel_bytes key = {0};
        uint8_t prev[32];
        size_t plen = 0;
        uint64_t n = 0;
        keel_diag d = {0};
        int rc;
        while ((rc = keel__store_next_key(s, prev, plen, "c.", 2, &key, &d)) ==
               1) {
            ck_assert_msg(tkeycmp(prev, plen, key.ptr, key.len) < 0,
                          "key %" PRIu64 " out of order", n);
            memcpy(prev, key.ptr, key.len);
            plen = key.len;
            n++;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(n, live);
        for (uint32_t i = 0; i < NKEYS; i++) {
            snprintf(k, sizeof(k), "c.%05" PRIu32, i);
            if (want[i] == 0) {
                expect_get(s, k, NULL);
            } else {
                snprintf(v, sizeof(v), "%" PRIu32, want[i]);
                expect_get(s, k, v);
            }
        }
        keel__store_close(s);
        s = open_ok(dir);
    }
    keel__store_close(s);
    free(want);
    rm_store(dir);
}
END_TEST

/* An overlay that grew past what a checkpoint keeps (over 16 MiB of
 * nodes) and then lost most of its keys (deleted, never on disk) is
 * emptied by the checkpoint with its large buffers freed, and works on. */
START_TEST(test_store_checkpoint_frees_a_grown_overlay_that_shrank)
{
    enum { GROWN = 400000, KEPT = 1000 };
    char *dir = store_dir("store-ov-shrank");
    keel__store *s = open_ok(dir);
    char k[32];
    uint64_t lsn = 0;
    /* Transactions of 1,000 ops: KEEL_DEBUG checks each write-set whole
     * after every op. */
    for (int base = 0; base < GROWN; base += 1000) {
        begin_ok(s);
        for (int i = base; i < base + 1000; i++) {
            snprintf(k, sizeof(k), "q.%06d", i);
            put_ok(s, k, "v");
        }
        apply_ok(s, ++lsn);
    }
    for (int base = KEPT; base < GROWN; base += 1000) {
        begin_ok(s);
        for (int i = base; i < base + 1000; i++) {
            snprintf(k, sizeof(k), "q.%06d", i);
            del_ok(s, k);
        }
        apply_ok(s, ++lsn);
    }
    ck_assert_uint_eq(count_ok(s, "q."), KEPT);
    checkpoint_ok(s);
    ck_assert_uint_eq(keel__store_pending_bytes(s), 0);
    crank_set(s, ++lsn, "q.new", "n");
    expect_get(s, "q.new", "n");
    expect_get(s, "q.000999", "v");
    expect_get(s, "q.001000", NULL);
    ck_assert_uint_eq(count_ok(s, "q."), KEPT + 1);
    checkpoint_ok(s);
    keel__store_close(s);
    s = open_ok(dir);
    ck_assert_uint_eq(count_ok(s, "q."), KEPT + 1);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

/* One pingpong-like transaction: read and rewrite hot counters, put a
 * new queue item and delete the last one, scan a vat's keys (on disk and
 * in the write-set), encode into a reused buffer, apply. No Check macros
 * in here: a passing ck_assert sends a mark to the parent, and that
 * allocates. @return 0, or the line of the first call that went wrong. */
static int steady_txn(keel__store *s, uint64_t lsn, uint8_t *buf, size_t cap)
{
    char k[32];
    char v[32];
    keel_bytes b = {0};
    size_t len = 0;
    int bad = 0;
#define STEADY(cond)               \
    do {                           \
        if (!(cond) && bad == 0) { \
            bad = __LINE__;        \
        }                          \
    } while (0)
    STEADY(keel__store_ws_begin(s, NULL) == KEEL_OK);
    STEADY(keel__store_get(s, "k.crank", 7, &b, NULL) == 1);
    snprintf(v, sizeof(v), "%012" PRIu64, lsn);
    STEADY(keel__store_ws_put(s, "k.crank", 7, v, 12, NULL) == KEEL_OK);
    STEADY(keel__store_ws_put(s, "k.rq.head", 9, v, 12, NULL) == KEEL_OK);
    snprintf(k, sizeof(k), "rq.%012" PRIu64, lsn);
    STEADY(keel__store_ws_put(s, k, 15, "a queued message of some length", 31,
                              NULL) == KEEL_OK);
    snprintf(k, sizeof(k), "rq.%012" PRIu64, lsn - 1);
    STEADY(keel__store_ws_delete(s, k, 15, NULL) == KEEL_OK);
    snprintf(k, sizeof(k), "v1.vs.k%03" PRIu64, lsn % 50);
    STEADY(keel__store_ws_put(s, k, 10, v, 12, NULL) == KEEL_OK);
    /* vatstore getNextKey: the scans see the write-set's key; once all 50
     * keys were written (lsn >= 50), only the last has none after it. */
    STEADY(keel__store_next_key(s, "v1.vs.", 6, "v1.vs.", 6, &b, NULL) == 1);
    int rc = keel__store_next_key(s, k, 10, "v1.vs.", 6, &b, NULL);
    STEADY(lsn < 50 ? rc >= 0 : rc == (lsn % 50 == 49 ? 0 : 1));
    STEADY(keel__store_ws_put(s, "k.hash", 6, "0123456789abcdef", 16, NULL) ==
           KEEL_OK);
    STEADY(keel__store_ws_encode(s, buf, cap, &len, NULL) == KEEL_OK);
    STEADY(keel__store_ws_apply(s, lsn, NULL) == KEEL_OK);
#undef STEADY
    return bad;
}

/* After a warm-up, transactions of a fixed shape allocate nothing: not
 * the write-set, not the overlay (a key put in one transaction and deleted
 * in the next reuses the node it left), not a scan (LMDB's cursor is
 * opened once per checkpoint interval), not the encoder. */
START_TEST(test_store_steady_state_transactions_allocate_nothing)
{
    char *dir = store_dir("store-steady");
    keel__store *s = open_ok(dir);
    char k[32];
    begin_ok(s);
    put_ok(s, "k.crank", "000000000000");
    for (int i = 0; i < 50; i += 2) {
        snprintf(k, sizeof(k), "v1.vs.k%03d", i);
        put_ok(s, k, "on disk");
    }
    apply_ok(s, 1);
    checkpoint_ok(s);
    uint8_t buf[4096];
    uint64_t lsn = 2;
    int bad = 0;
    for (; lsn < 2000 && bad == 0; lsn++) { /* warm-up: buffers grow */
        bad = steady_txn(s, lsn, buf, sizeof(buf));
    }
    __atomic_store_n(&alloc_calls, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&alloc_counting, 1, __ATOMIC_RELAXED);
    for (; lsn < 12000 && bad == 0; lsn++) {
        bad = steady_txn(s, lsn, buf, sizeof(buf));
    }
    __atomic_store_n(&alloc_counting, 0, __ATOMIC_RELAXED);
    ck_assert_msg(bad == 0, "lsn %" PRIu64 ": the call at line %d failed",
                  lsn - 1, bad);
    uint64_t calls = __atomic_load_n(&alloc_calls, __ATOMIC_RELAXED);
    if (ALLOC_COUNTING) {
        ck_assert_msg(calls == 0,
                      "%" PRIu64 " allocations in 10000 steady-state "
                      "transactions, expected none",
                      calls);
    }
    checkpoint_ok(s);
    expect_get(s, "k.crank", "000000011999");
    expect_get(s, "rq.000000011999", "a queued message of some length");
    expect_get(s, "rq.000000011998", NULL);
    ck_assert_uint_eq(count_ok(s, "rq."), 1);
    keel__store_close(s);
    rm_store(dir);
}
END_TEST

Suite *store_suite(void)
{
    Suite *s = suite_create("store");

    TCase *tc = tcase_create("log");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_store_ws_many_writes_of_one_key_read_the_last);
    tcase_add_test(tc, test_store_ws_scans_see_uncommitted_writes_in_order);
    tcase_add_test(tc, test_store_ws_delete_then_put_again_reads_right);
    tcase_add_test(tc, test_store_ws_index_growth_and_abort_discard_everything);
    tcase_add_test(tc, test_store_checkpoint_after_a_million_ops);
    tcase_add_test(tc, test_store_checkpoint_frees_a_grown_overlay_that_shrank);
    tcase_add_test(tc, test_store_steady_state_transactions_allocate_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("write_set");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_ws_put_get_delete_survive_apply_and_reopen);
    tcase_add_test(tc, test_store_ws_abort_leaves_no_trace);
    tcase_add_test(tc, test_store_ws_reads_see_write_set_first);
    tcase_add_test(tc, test_store_ws_borrowed_bytes_passed_back_are_copied);
    tcase_add_test(tc, test_store_invalid_keys_and_values_are_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_store_next_key_random_model_matches_reference);
    tcase_add_loop_test(
        tc, test_store_overlay_random_model_with_checkpoints_matches_reference,
        0, 3);
    suite_add_tcase(s, tc);

    tc = tcase_create("overlay");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc,
                   test_store_overlay_put_delete_put_across_cranks_reads_right);
    tcase_add_test(
        tc, test_store_overlay_tombstone_hides_disk_key_until_checkpoint);
    tcase_add_test(
        tc, test_store_overlay_close_without_checkpoint_loses_exactly_it);
    tcase_add_test(
        tc, test_store_overlay_hot_keys_rewritten_do_not_grow_pending_bytes);
    tcase_add_test(tc, test_store_overlay_large_burst_is_released_and_rebuilt);
    tcase_add_test(tc, test_store_overlay_index_grows_with_dropped_entries);
    suite_add_tcase(s, tc);

    tc = tcase_create("encoding");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_ws_encode_matches_documented_layout);
    tcase_add_test(tc, test_store_encode_apply_encoded_equals_ws_apply);
    tcase_add_test(tc, test_store_payload_short_op_count_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_op_count_too_large_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_bad_op_kind_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_key_length_past_end_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_zero_key_length_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_key_over_limit_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_value_length_past_end_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_value_over_limit_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_keys_out_of_order_are_ecorrupt);
    tcase_add_test(tc, test_store_payload_trailing_bytes_are_ecorrupt);
    tcase_add_test(tc,
                   test_store_payload_truncated_at_every_length_is_ecorrupt);
    tcase_add_test(tc, test_store_payload_every_byte_flipped_never_crashes);
    tcase_add_test(tc, test_store_replay_stops_resumes_and_refuses_damage);
    tcase_add_test(tc, test_store_replay_gap_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("durability");
    tcase_set_timeout(tc, 120);
    tcase_add_test(
        tc, test_store_close_without_checkpoint_loses_only_what_followed_it);
    tcase_add_loop_test(tc, test_store_sigkill_keeps_exactly_last_checkpoint, 0,
                        3);
    tcase_add_loop_test(
        tc, test_store_sigkill_at_random_moment_lands_on_a_checkpoint, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("damage");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_flipped_value_byte_is_ecorrupt_naming_key);
    tcase_add_test(tc, test_store_view_walks_checkpoint_and_refuses_damage);
    tcase_add_test(tc, test_store_bulk_load_in_order_reads_back);
    tcase_add_test(tc, test_store_interrupted_creation_is_replaced);
    tcase_add_test(tc, test_store_flipped_checksum_byte_is_ecorrupt);
    tcase_add_test(tc, test_store_newer_format_version_is_eversion);
    tcase_add_test(tc, test_store_flipped_meta_byte_is_ecorrupt);
    tcase_add_test(tc, test_store_wrong_kernel_id_is_ecorrupt);
    tcase_add_test(tc, test_store_missing_store_without_create_is_enoent);
    tcase_add_test(tc, test_store_map_full_is_enospc_then_failed);
    suite_add_tcase(s, tc);

    tc = tcase_create("map");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_store_tiny_map_grows_across_checkpoints);
    tcase_add_test(
        tc, test_store_ceiling_fails_cleanly_and_larger_ceiling_recovers);
    tcase_add_test(tc,
                   test_store_views_beside_a_growing_map_read_their_checkpoint);
    tcase_add_test(tc, test_store_open_clears_reader_slot_of_killed_reader);
    tcase_add_test(tc,
                   test_store_checkpoint_clears_reader_slot_killed_while_open);
    tcase_add_test(tc,
                   test_store_view_open_clears_reader_slot_of_killed_reader);
    suite_add_tcase(s, tc);

    tc = tcase_create("full");
    tcase_set_timeout(tc, 300);
    tcase_add_test(
        tc, test_store_kernel_store_max_fails_cleanly_then_larger_recovers);
    tcase_add_test(
        tc, test_store_kernel_file_size_limit_fails_cleanly_then_recovers);
    tcase_add_test(tc, test_store_cli_store_max_fails_cleanly_then_resumes);
    tcase_add_test(tc, test_store_create_mkdir_goes_through_io_table);
    suite_add_tcase(s, tc);

    tc = tcase_create("asserts");
    tcase_add_test_raise_signal(tc, test_store_apply_lsn_not_increasing_aborts,
                                SIGABRT);
    tcase_add_test_raise_signal(tc, test_store_put_without_write_set_aborts,
                                SIGABRT);
    suite_add_tcase(s, tc);
    return s;
}
