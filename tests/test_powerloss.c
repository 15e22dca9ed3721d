/*
 * tests/test_powerloss.c — power-loss crash states (recovery/powerloss.h)
 * built from a trace of a real keel process that the recorder
 * (recovery/plrec.c, libkeel_plrec.so) wrote:
 *   - the recorder traces what it must: the WAL writer's create, write,
 *     fdatasync, rename and directory fsync, made by the keel program, and
 *     LMDB's writes, made by liblmdb.so;
 *   - the crash-state builder, on a hand-made trace: what a sync made
 *     durable is always kept, what none did is dropped in the durable
 *     state and kept in the all state, prefixes keep trace order, subsets
 *     vary with the seed and never hold anything after the crash point;
 *   - the mixed workload's `keel run` (with checkpoints) and a
 *     `keel snapshot restore --wal` roll-forward pass every crash state;
 *   - detection: with the directory syncs dropped from the trace (a WAL
 *     writer that never syncs its directory) violations are reported;
 *   - `keel crashtest --mode powerloss`: its JSON summary, usage errors.
 */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/keel.h"

#include "recovery/plrec_format.h"
#include "recovery/powerloss.h"
#include "tests/testutil.h"

/* ---- a hand-made trace ----------------------------------------------------
 */

static FILE *trace_begin(const char *path)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(KEEL__PLREC_MAGIC, 1, KEEL__PLREC_MAGIC_BYTES, f),
                      KEEL__PLREC_MAGIC_BYTES);
    return f;
}

static void put(FILE *f, uint8_t op, uint32_t handle, uint32_t flags,
                const char *p1, const char *p2, uint64_t off, const char *data)
{
    keel__plrec_hdr h;
    memset(&h, 0, sizeof(h));
    h.op = op;
    h.handle = handle;
    h.flags = flags;
    h.path_len = p1 != NULL ? (uint32_t)strlen(p1) : 0;
    h.path2_len = p2 != NULL ? (uint32_t)strlen(p2) : 0;
    h.offset = off;
    h.data_len = data != NULL ? strlen(data) : 0;
    uint8_t enc[KEEL__PLREC_HDR_BYTES];
    keel__plrec_encode(enc, &h);
    ck_assert_uint_eq(fwrite(enc, sizeof(enc), 1, f), 1);
    if (h.path_len > 0) {
        ck_assert_uint_eq(fwrite(p1, 1, h.path_len, f), h.path_len);
    }
    if (h.path2_len > 0) {
        ck_assert_uint_eq(fwrite(p2, 1, h.path2_len, f), h.path2_len);
    }
    if (h.data_len > 0) {
        ck_assert_uint_eq(fwrite(data, 1, h.data_len, f), h.data_len);
    }
}

/*
 *  0 OPEN  h1 "."  (the root, for its fsync)
 *  1 OPEN  h2 "f"  O_CREAT
 *  2 WRITE h2 @0 "AAAA"
 *  3 FDATASYNC h2           f's data durable
 *  4 FSYNC h1               f's name durable
 *  5 WRITE h2 @4 "BBBB"     never synced
 *  6 OPEN  h3 "g.tmp" O_CREAT
 *  7 WRITE h3 @0 "GGGG"
 *  8 FDATASYNC h3           g.tmp's data durable, not its name
 *  9 RENAME g.tmp -> g      never synced
 * 10 MKDIR "d"              never synced
 * 11 OPEN  h4 "f" O_DSYNC
 * 12 WRITE h4 @8 "CCCC"     durable when it returns
 */
static char *hand_trace(const char *dir)
{
    char *path = tu_path(dir, "hand.trace");
    FILE *f = trace_begin(path);
    put(f, KEEL__PLREC_OPEN, 1, O_RDONLY | O_DIRECTORY, ".", NULL, 0, NULL);
    put(f, KEEL__PLREC_OPEN, 2, O_WRONLY | O_CREAT, "f", NULL, 0, NULL);
    put(f, KEEL__PLREC_WRITE, 2, 0, NULL, NULL, 0, "AAAA");
    put(f, KEEL__PLREC_FDATASYNC, 2, 0, NULL, NULL, 0, NULL);
    put(f, KEEL__PLREC_FSYNC, 1, 0, NULL, NULL, 0, NULL);
    put(f, KEEL__PLREC_WRITE, 2, 0, NULL, NULL, 4, "BBBB");
    put(f, KEEL__PLREC_OPEN, 3, O_WRONLY | O_CREAT, "g.tmp", NULL, 0, NULL);
    put(f, KEEL__PLREC_WRITE, 3, 0, NULL, NULL, 0, "GGGG");
    put(f, KEEL__PLREC_FDATASYNC, 3, 0, NULL, NULL, 0, NULL);
    put(f, KEEL__PLREC_RENAME, 0, 0, "g.tmp", "g", 0, NULL);
    put(f, KEEL__PLREC_MKDIR, 0, 0, "d", NULL, 0, NULL);
    put(f, KEEL__PLREC_OPEN, 4, O_WRONLY | O_DSYNC, "f", NULL, 0, NULL);
    put(f, KEEL__PLREC_WRITE, 4, 0, NULL, NULL, 8, "CCCC");
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* The bytes of dir/name (NULL: absent), NUL-terminated, with holes as
 * '.' so they compare as strings. */
static char *content(const char *dir, const char *name)
{
    char *p = tu_path(dir, name);
    size_t len = 0;
    uint8_t *b = tu_read_file(p, &len);
    free(p);
    if (b == NULL) {
        return NULL;
    }
    char *s = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        s[i] = b[i] == 0 ? '.' : (char)b[i];
    }
    s[len] = '\0';
    free(b);
    return s;
}

static int exists(const char *dir, const char *name)
{
    struct stat st;
    char *p = tu_path(dir, name);
    int r = stat(p, &st) == 0;
    free(p);
    return r;
}

static char *build(const keel__pl_trace *t, const char *dir, const char *tag,
                   size_t c, int policy, uint64_t seed)
{
    keel_diag d = {0};
    char *out = tu_path(dir, tag);
    tu_rmrf(out);
    int rc = keel__pl_build(t, c, policy, seed, out, &d);
    ck_assert_msg(rc == KEEL_OK, "build %s: %s", tag, d.msg);
    return out;
}

static void assert_content(const char *dir, const char *name, const char *want)
{
    char *got = content(dir, name);
    if (want == NULL) {
        ck_assert_msg(got == NULL, "%s/%s: present (\"%s\"), expected absent",
                      dir, name, got);
    } else {
        ck_assert_msg(got != NULL && strcmp(got, want) == 0,
                      "%s/%s: \"%s\", expected \"%s\"", dir, name,
                      got != NULL ? got : "(absent)", want);
    }
    free(got);
}

START_TEST(test_powerloss_builder_keeps_synced_drops_unsynced)
{
    char *dir = tu_tmpdir("pl-hand");
    char *path = hand_trace(dir);
    keel__pl_trace *t = NULL;
    keel_diag d = {0};
    ck_assert_msg(keel__pl_trace_load(path, &t, &d) == KEEL_OK, "%s", d.msg);
    ck_assert_uint_eq(keel__pl_trace_ops(t), 13);
    /* 5 (BBBB), 6 (g.tmp's name), 9 (rename), 10 (mkdir) */
    ck_assert_uint_eq(keel__pl_unsynced(t, 12), 4);
    ck_assert_uint_eq(keel__pl_unsynced(t, 4), 0);
    ck_assert_uint_eq(keel__pl_unsynced(t, 2), 2); /* f's name, AAAA */

    /* crash before any sync: nothing of f */
    char *s = build(t, dir, "c2-durable", 2, KEEL__PL_DURABLE, 1);
    assert_content(s, "f", NULL);
    free(s);
    s = build(t, dir, "c2-all", 2, KEEL__PL_ALL, 1);
    assert_content(s, "f", "AAAA");
    free(s);
    /* right after the directory sync: everything so far is durable */
    s = build(t, dir, "c4-durable", 4, KEEL__PL_DURABLE, 1);
    assert_content(s, "f", "AAAA");
    free(s);

    /* at the end: the synced data and name, the O_DSYNC write; no BBBB,
     * and g.tmp's name, the rename and the mkdir all lost */
    s = build(t, dir, "c12-durable", 12, KEEL__PL_DURABLE, 1);
    assert_content(s, "f", "AAAA....CCCC");
    assert_content(s, "g", NULL);
    assert_content(s, "g.tmp", NULL);
    ck_assert(!exists(s, "d"));
    free(s);
    s = build(t, dir, "c12-all", 12, KEEL__PL_ALL, 1);
    assert_content(s, "f", "AAAABBBBCCCC");
    assert_content(s, "g", "GGGG");
    assert_content(s, "g.tmp", NULL);
    ck_assert(exists(s, "d"));
    free(s);

    /* a crash point is a prefix of the trace: before op 11, no CCCC */
    s = build(t, dir, "c10-all", 10, KEEL__PL_ALL, 1);
    assert_content(s, "f", "AAAABBBB");
    free(s);

    /* prefixes keep trace order: BBBB always (it comes first), the mkdir
     * (the last) never; g.tmp and g never both */
    int saw_tmp = 0, saw_g = 0;
    for (uint64_t seed = 1; seed <= 32; seed++) {
        s = build(t, dir, "prefix", 12, KEEL__PL_PREFIX, seed);
        assert_content(s, "f", "AAAABBBBCCCC");
        ck_assert(!exists(s, "d"));
        ck_assert(!(exists(s, "g") && exists(s, "g.tmp")));
        saw_tmp |= exists(s, "g.tmp");
        saw_g |= exists(s, "g");
        free(s);
    }
    ck_assert(saw_tmp && saw_g);

    /* subsets: only what ALL holds, durable bytes always, and they vary */
    int saw_d = 0, saw_no_d = 0, saw_b = 0, saw_no_b = 0;
    for (uint64_t seed = 1; seed <= 64; seed++) {
        s = build(t, dir, "subset", 12, KEEL__PL_SUBSET, seed);
        char *f = content(s, "f");
        ck_assert_ptr_nonnull(f);
        ck_assert_msg(strcmp(f, "AAAABBBBCCCC") == 0 ||
                          strcmp(f, "AAAA....CCCC") == 0,
                      "subset %" PRIu64 ": f is \"%s\"", seed, f);
        saw_b |= f[4] == 'B';
        saw_no_b |= f[4] != 'B';
        free(f);
        char *g = content(s, "g");
        ck_assert(g == NULL || strcmp(g, "GGGG") == 0);
        free(g);
        saw_d |= exists(s, "d");
        saw_no_d |= !exists(s, "d");
        free(s);
    }
    ck_assert(saw_d && saw_no_d && saw_b && saw_no_b);

    /* without the directory syncs, f's name is never durable */
    keel__pl_trace_drop_dir_syncs(t);
    s = build(t, dir, "nodirsync", 12, KEEL__PL_DURABLE, 1);
    assert_content(s, "f", NULL);
    free(s);

    keel__pl_trace_free(t);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_powerloss_trace_load_refuses_malformed)
{
    char *dir = tu_tmpdir("pl-bad");
    char *path = tu_path(dir, "bad.trace");
    keel__pl_trace *t = NULL;
    keel_diag d = {0};
    /* not a trace */
    tu_write_file(path, "hello", 5);
    ck_assert_int_eq(keel__pl_trace_load(path, &t, &d), KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(d.msg, "not a power-loss trace"));
    /* a file the trace never made */
    FILE *f = trace_begin(path);
    put(f, KEEL__PLREC_OPEN, 1, O_WRONLY, "old", NULL, 0, NULL);
    fclose(f);
    ck_assert_int_eq(keel__pl_trace_load(path, &t, &d), KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(d.msg, "old"));
    /* cut short */
    f = trace_begin(path);
    put(f, KEEL__PLREC_OPEN, 1, O_WRONLY | O_CREAT, "x", NULL, 0, NULL);
    put(f, KEEL__PLREC_WRITE, 1, 0, NULL, NULL, 0, "0123456789");
    fclose(f);
    size_t len = 0;
    uint8_t *b = tu_read_file(path, &len);
    tu_write_file(path, b, len - 3);
    free(b);
    ck_assert_int_eq(keel__pl_trace_load(path, &t, &d), KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(d.msg, "cut short"));
    ck_assert_ptr_null(t);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- the recorder ----------------------------------------------------------
 */

/* Run keel with the recorder on root. @return its exit status. */
static int traced_keel(const char *trace, const char *root,
                       const char *const *args)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        const char *argv[16];
        size_t n = 0;
        argv[n++] = KEEL_BIN;
        for (size_t i = 0; args[i] != NULL && n < 15; i++) {
            argv[n++] = args[i];
        }
        argv[n] = NULL;
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        setenv(KEEL__PLREC_ENV_TRACE, trace, 1);
        setenv(KEEL__PLREC_ENV_ROOT, root, 1);
        setenv("LD_PRELOAD", KEEL_PLREC_SO, 1);
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];
        snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0",
                 asan != NULL ? asan : "", asan != NULL ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        execv(KEEL_BIN, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "keel killed by signal %d",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

typedef struct rec {
    keel__plrec_hdr h;
    char p1[256], p2[256];
} rec;

/* The records of a trace (at most cap). */
static size_t records(const char *trace, rec *out, size_t cap)
{
    size_t len = 0, n = 0;
    uint8_t *b = tu_read_file(trace, &len);
    ck_assert_ptr_nonnull(b);
    ck_assert(len >= KEEL__PLREC_MAGIC_BYTES &&
              memcmp(b, KEEL__PLREC_MAGIC, KEEL__PLREC_MAGIC_BYTES) == 0);
    for (size_t off = KEEL__PLREC_MAGIC_BYTES; off < len && n < cap; n++) {
        rec *r = &out[n];
        memset(r, 0, sizeof(*r));
        ck_assert_uint_ge(len - off, KEEL__PLREC_HDR_BYTES);
        keel__plrec_decode(b + off, &r->h);
        off += KEEL__PLREC_HDR_BYTES;
        ck_assert_uint_lt(r->h.path_len, sizeof(r->p1));
        ck_assert_uint_lt(r->h.path2_len, sizeof(r->p2));
        memcpy(r->p1, b + off, r->h.path_len);
        off += r->h.path_len;
        memcpy(r->p2, b + off, r->h.path2_len);
        off += r->h.path2_len + r->h.data_len;
    }
    free(b);
    return n;
}

/* The first record at or after from of op (with p1 when not NULL, and
 * handle when nonzero); SIZE_MAX if none. */
static size_t find(const rec *r, size_t n, size_t from, uint8_t op,
                   const char *p1, uint32_t handle)
{
    for (size_t i = from; i < n; i++) {
        if (r[i].h.op == op && (p1 == NULL || strcmp(r[i].p1, p1) == 0) &&
            (handle == 0 || r[i].h.handle == handle)) {
            return i;
        }
    }
    return SIZE_MAX;
}

START_TEST(test_powerloss_recorder_traces_wal_and_lmdb_calls)
{
    char *dir = tu_tmpdir("pl-rec");
    char *root = tu_path(dir, "root");
    char *trace = tu_path(dir, "trace");
    ck_assert_int_eq(mkdir(root, 0755), 0);
    char *wal = tu_path(root, "wal");
    const char *demo[] = {"wal", "demo", wal, "--n", "3", NULL};
    ck_assert_int_eq(traced_keel(trace, root, demo), 0);
    static rec r[4096];
    size_t n = records(trace, r, 4096);
    /* the WAL writer's new segment: create .tmp, write, fdatasync,
     * rename, fsync the directory; in that order */
    const char *tmp = "wal/00000000000000000001.seg.tmp";
    size_t o = find(r, n, 0, KEEL__PLREC_MKDIR, "wal", 0);
    ck_assert_uint_ne(o, SIZE_MAX);
    o = find(r, n, o, KEEL__PLREC_OPEN, tmp, 0);
    ck_assert_msg(o != SIZE_MAX, "no OPEN of %s in %zu records", tmp, n);
    ck_assert((r[o].h.flags & O_CREAT) != 0);
    uint32_t h = r[o].h.handle;
    size_t w = find(r, n, o, KEEL__PLREC_WRITE, NULL, h);
    size_t s = find(r, n, w, KEEL__PLREC_FDATASYNC, NULL, h);
    size_t m = find(r, n, s, KEEL__PLREC_RENAME, tmp, 0);
    ck_assert_uint_ne(w, SIZE_MAX);
    ck_assert_uint_ne(s, SIZE_MAX);
    ck_assert_uint_ne(m, SIZE_MAX);
    ck_assert_str_eq(r[m].p2, "wal/00000000000000000001.seg");
    size_t dopen = find(r, n, m, KEEL__PLREC_OPEN, "wal", 0);
    ck_assert_uint_ne(dopen, SIZE_MAX);
    ck_assert_uint_ne(
        find(r, n, dopen, KEEL__PLREC_FSYNC, NULL, r[dopen].h.handle),
        SIZE_MAX);
    /* three records, appended and each synced after the rename */
    size_t appends = 0;
    for (size_t i = m; i < n; i++) {
        appends += r[i].h.op == KEEL__PLREC_WRITE && r[i].h.handle == h;
    }
    ck_assert_uint_ge(appends, 3);

    /* LMDB's own calls, from liblmdb.so: data.mdb written and synced */
    char *root2 = tu_path(dir, "root2");
    char *trace2 = tu_path(dir, "trace2");
    char *state = tu_path(root2, "state");
    ck_assert_int_eq(mkdir(root2, 0755), 0);
    const char *run[] = {"run",
                         state,
                         "--config",
                         KEEL_MIXED_JSON,
                         "--deterministic",
                         "--max-cranks",
                         "80",
                         "--checkpoint-cranks",
                         "16",
                         NULL};
    ck_assert_int_eq(traced_keel(trace2, root2, run), 0);
    n = records(trace2, r, 4096);
    size_t data_writes = 0, data_syncs = 0;
    uint32_t dh[8] = {0};
    size_t ndh = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].h.op == KEEL__PLREC_OPEN && ndh < 8 &&
            strcmp(r[i].p1, "state/store/data.mdb") == 0) {
            dh[ndh++] = r[i].h.handle;
        }
        for (size_t k = 0; k < ndh; k++) {
            if (r[i].h.handle != dh[k]) {
                continue;
            }
            data_writes += r[i].h.op == KEEL__PLREC_WRITE;
            data_syncs += r[i].h.op == KEEL__PLREC_FDATASYNC;
        }
    }
    ck_assert_msg(data_writes >= 5 && data_syncs >= 5,
                  "data.mdb: %zu writes, %zu fdatasyncs traced", data_writes,
                  data_syncs);
    free(state);
    free(trace2);
    free(root2);
    free(wal);
    free(trace);
    free(root);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- sessions --------------------------------------------------------------
 */

static void print_violation(void *arg, uint64_t trial, const char *what,
                            const char *repro)
{
    (void)arg;
    fprintf(stderr, "powerloss trial %" PRIu64 ": %s\n    reproduce: %s\n",
            trial, what, repro);
}

static void session(int scenario, uint64_t trials, int drop_dir_syncs,
                    keel__pl_report *rep)
{
    keel__pl_options o;
    keel_diag d = {0};
    keel__pl_options_init(&o);
    o.config_path = KEEL_MIXED_JSON;
    o.keel_bin = KEEL_BIN;
    o.plrec = KEEL_PLREC_SO;
    o.scenario = scenario;
    o.trials = trials;
    o.drop_dir_syncs = drop_dir_syncs;
    o.violation = drop_dir_syncs ? NULL : print_violation;
    int rc = keel__pl_run(&o, rep, &d);
    ck_assert_msg(rc == KEEL_OK, "powerloss %s: %s",
                  keel__pl_scenario_name(scenario), d.msg);
    printf("powerloss %s%s: %" PRIu64 " ops, %" PRIu64 " trials at %" PRIu64
           " crash points, %" PRIu64 " violations, %" PRIu64
           " recovered, %" PRIu64 " absent, %.2f s\n",
           keel__pl_scenario_name(scenario),
           drop_dir_syncs ? " (directory syncs dropped)" : "", rep->ops,
           rep->trials, rep->crash_points, rep->violations, rep->recovered,
           rep->absent, rep->seconds);
}

START_TEST(test_powerloss_mixed_run_every_state_recovers)
{
    keel__pl_report rep;
    session(KEEL__PL_RUN, 300, 0, &rep);
    ck_assert_msg(rep.violations == 0, "%" PRIu64 " violations; first: %s",
                  rep.violations, rep.first);
    ck_assert_uint_eq(rep.trials, 300);
    ck_assert_uint_ge(rep.transactions, 1000);
    /* the states really were a mix: most had something acknowledged, all
     * but those with nothing published recovered and passed the audit */
    ck_assert_uint_ge(rep.acked, 200);
    ck_assert_uint_eq(rep.recovered + rep.absent, rep.trials);
    ck_assert_uint_eq(rep.audits, rep.recovered);
}
END_TEST

/* Needs every byte of a restored state synced before its publication
 * (snapshot/state.c, SS2). */
START_TEST(test_powerloss_restore_roll_forward_every_state_recovers)
{
    keel__pl_report rep;
    session(KEEL__PL_RESTORE, 200, 0, &rep);
    ck_assert_msg(rep.violations == 0, "%" PRIu64 " violations; first: %s",
                  rep.violations, rep.first);
    ck_assert_uint_ge(rep.trials, 20);
    ck_assert_uint_ge(rep.acked, 1);
    ck_assert_uint_ge(rep.recovered, rep.acked);
}
END_TEST

START_TEST(test_powerloss_dropped_directory_syncs_detected)
{
    keel__pl_report rep;
    session(KEEL__PL_RUN, 60, 1, &rep);
    ck_assert_uint_gt(rep.violations, 0);
    ck_assert_msg(strstr(rep.first, "acknowledged") != NULL ||
                      strstr(rep.first, "ahead of the WAL") != NULL,
                  "first violation: %s", rep.first);
    ck_assert_ptr_nonnull(strstr(rep.repro, "--mode powerloss"));
}
END_TEST

START_TEST(test_powerloss_cli_json_and_usage)
{
    char *out = NULL, *err = NULL;
    const char *ok[] = {"crashtest",     "--mode",   "powerloss", "--config",
                        KEEL_MIXED_JSON, "--trials", "12",        "--plrec",
                        KEEL_PLREC_SO,   "--json",   NULL};
    int rc = tu_run_keel(ok, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %.300s", rc, err);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "mode")),
                     "powerloss");
    ck_assert_str_eq(json_string_value(json_object_get(j, "scenario")), "run");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "trials")), 12);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "violations")), 0);
    json_decref(j);
    free(out);
    free(err);

    const char *bad[] = {"crashtest",     "--mode",     "powerloss", "--config",
                         KEEL_MIXED_JSON, "--scenario", "nope",      NULL};
    rc = tu_run_keel(bad, &out, &err);
    ck_assert_int_eq(rc, 2);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "--scenario"));
    free(out);
    free(err);

    const char *missing[] = {"crashtest",
                             "--mode",
                             "powerloss",
                             "--config",
                             KEEL_MIXED_JSON,
                             "--plrec",
                             "/nonexistent/libkeel_plrec.so",
                             NULL};
    rc = tu_run_keel(missing, &out, &err);
    ck_assert_int_eq(rc, 1);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/libkeel_plrec.so"));
    free(out);
    free(err);
}
END_TEST

Suite *powerloss_suite(void);

Suite *powerloss_suite(void)
{
    Suite *s = suite_create("powerloss");
    TCase *tc = tcase_create("builder");
    tcase_add_test(tc, test_powerloss_builder_keeps_synced_drops_unsynced);
    tcase_add_test(tc, test_powerloss_trace_load_refuses_malformed);
    suite_add_tcase(s, tc);
    tc = tcase_create("recorder");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_powerloss_recorder_traces_wal_and_lmdb_calls);
    suite_add_tcase(s, tc);
    tc = tcase_create("sessions");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_powerloss_mixed_run_every_state_recovers);
    tcase_add_test(tc,
                   test_powerloss_restore_roll_forward_every_state_recovers);
    tcase_add_test(tc, test_powerloss_dropped_directory_syncs_detected);
    tcase_add_test(tc, test_powerloss_cli_json_and_usage);
    suite_add_tcase(s, tc);
    return s;
}
