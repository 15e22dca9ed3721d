/*
 * tests/test_io_fault.c — the fault-injecting I/O layer (common/io_fault.c)
 * on real files in a scratch directory: op counting, failures, torn writes,
 * crashes, the power-loss model and bit flips.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/io_fault.h"
#include "keel/keel.h"
#include "tests/testutil.h"

struct env {
    char *dir;
    keel_io_fault *f;
    keel_io *io;
};

static void env_init(struct env *e)
{
    e->dir = tu_tmpdir("io_fault");
    ck_assert_int_eq(keel__io_fault_new(&e->f), KEEL_OK);
    e->io = keel__io_fault_io(e->f);
}

static void env_fini(struct env *e)
{
    keel__io_fault_free(e->f);
    tu_rmrf(e->dir);
    free(e->dir);
}

/* Open dir/name through the layer; the path is returned in *path if asked
 * (malloc'd). */
static int xopen(struct env *e, const char *name, int flags, char **path)
{
    char *p = tu_path(e->dir, name);
    int fd = -1;
    int rc = e->io->open(e->io, p, flags, 0644, &fd);
    ck_assert_msg(rc == KEEL_OK, "open %s: %s", p, keel_err_name(rc));
    if (path != NULL) {
        *path = p;
    } else {
        free(p);
    }
    return fd;
}

static void xwrite(struct env *e, int fd, const char *s, uint64_t off)
{
    ck_assert_int_eq(e->io->pwrite(e->io, fd, s, strlen(s), off), KEEL_OK);
}

/* The file at dir/name holds exactly `want`. */
static void assert_contents(struct env *e, const char *name, const char *want)
{
    char *p = tu_path(e->dir, name);
    size_t len = 0;
    uint8_t *got = tu_read_file(p, &len);
    ck_assert_msg(got != NULL, "%s is missing", name);
    ck_assert_msg(len == strlen(want) && memcmp(got, want, len) == 0,
                  "%s holds \"%.*s\", expected \"%s\"", name, (int)len,
                  (const char *)got, want);
    free(got);
    free(p);
}

static int exists(struct env *e, const char *name)
{
    char *p = tu_path(e->dir, name);
    int ok = access(p, F_OK) == 0;
    free(p);
    return ok;
}

static void set_plan(struct env *e, enum keel_io_fault_kind kind,
                     enum keel_io_op op, uint64_t nth, int err)
{
    keel_io_fault_plan p = {.kind = kind, .op = op, .nth = nth, .err = err};
    keel__io_fault_set_plan(e->f, &p);
}

static int fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

/* ---- counting ------------------------------------------------------------ */

START_TEST(test_io_fault_counts_ops_per_kind)
{
    struct env e;
    env_init(&e);
    char *from = NULL;
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, &from);
    xwrite(&e, fd, "abc", 0);
    xwrite(&e, fd, "def", 3);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    char buf[8];
    size_t got = 0;
    ck_assert_int_eq(e.io->pread(e.io, fd, buf, sizeof(buf), 0, &got), KEEL_OK);
    ck_assert_uint_eq(got, 6);
    uint64_t size = 0;
    ck_assert_int_eq(e.io->size(e.io, fd, &size), KEEL_OK);
    ck_assert_uint_eq(size, 6);
    ck_assert_int_eq(e.io->truncate(e.io, fd, 2), KEEL_OK);
    ck_assert_int_eq(e.io->fsync_dir(e.io, e.dir), KEEL_OK);
    char *to = tu_path(e.dir, "b");
    ck_assert_int_eq(e.io->rename(e.io, from, to), KEEL_OK);
    ck_assert_int_eq(e.io->unlink(e.io, to), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);

    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_OPEN), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_PWRITE), 2);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_FSYNC), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_PREAD), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_SIZE), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_TRUNCATE), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_FSYNC_DIR), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_RENAME), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_UNLINK), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_CLOSE), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_ANY), 11);

    keel__io_fault_reset_counts(e.f);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_ANY), 0);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_PWRITE), 0);
    free(from);
    free(to);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_refused_ops_are_counted)
{
    struct env e;
    env_init(&e);
    set_plan(&e, KEEL_IO_FAULT_CRASH_BEFORE, KEEL_IO_OP_OPEN, 1, 0);
    char *p = tu_path(e.dir, "a");
    int fd = -1;
    ck_assert_int_eq(e.io->open(e.io, p, O_RDWR | O_CREAT, 0644, &fd),
                     KEEL_EIO);
    ck_assert_int_eq(e.io->fsync_dir(e.io, e.dir), KEEL_EIO);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_OPEN), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_FSYNC_DIR), 1);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_ANY), 2);
    ck_assert(!exists(&e, "a"));
    free(p);
    env_fini(&e);
}
END_TEST

/* Directories are made and removed through the table too: counted, failed
 * and crashed like every other op (F1-F3). */
START_TEST(test_io_fault_mkdir_rmdir_counted_failed_crashed)
{
    struct env e;
    env_init(&e);
    char *d = tu_path(e.dir, "d");
    ck_assert_int_eq(e.io->mkdir(e.io, d, 0755), KEEL_OK);
    ck_assert(exists(&e, "d"));
    ck_assert_int_eq(e.io->mkdir(e.io, d, 0755), KEEL_EEXIST);
    ck_assert_int_eq(e.io->rmdir(e.io, d), KEEL_OK);
    ck_assert(!exists(&e, "d"));
    ck_assert_int_eq(e.io->rmdir(e.io, d), KEEL_ENOENT);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_MKDIR), 2);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_RMDIR), 2);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_ANY), 4);

    /* FAIL: the op does nothing and returns the planned error */
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_MKDIR, 3, KEEL_ENOSPC);
    ck_assert_int_eq(e.io->mkdir(e.io, d, 0755), KEEL_ENOSPC);
    ck_assert(!exists(&e, "d"));
    ck_assert_int_eq(e.io->mkdir(e.io, d, 0755), KEEL_OK);
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_RMDIR, 3, KEEL_EIO);
    ck_assert_int_eq(e.io->rmdir(e.io, d), KEEL_EIO);
    ck_assert(exists(&e, "d"));

    /* CRASH: neither reaches the file system any more */
    set_plan(&e, KEEL_IO_FAULT_CRASH_BEFORE, KEEL_IO_OP_ANY,
             keel__io_fault_count(e.f, KEEL_IO_OP_ANY) + 1, 0);
    ck_assert_int_eq(e.io->rmdir(e.io, d), KEEL_EIO);
    ck_assert(exists(&e, "d"));
    char *d2 = tu_path(e.dir, "d2");
    ck_assert_int_eq(e.io->mkdir(e.io, d2, 0755), KEEL_EIO);
    ck_assert(!exists(&e, "d2"));
    free(d2);
    free(d);
    env_fini(&e);
}
END_TEST

/* ---- FAIL ---------------------------------------------------------------- */

START_TEST(test_io_fault_fail_nth_fsync_returns_error_then_ops_work)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_FSYNC, 2, KEEL_EIO);
    xwrite(&e, fd, "one ", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    xwrite(&e, fd, "two ", 4);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_EIO);
    xwrite(&e, fd, "three", 8);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 0);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "one two three");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_fail_pwrite_writes_nothing)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_PWRITE, 1, KEEL_ENOSPC);
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "lost", 4, 0), KEEL_ENOSPC);
    assert_contents(&e, "a", "");
    xwrite(&e, fd, "kept", 0);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "kept");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_fail_any_counts_every_kind)
{
    struct env e;
    env_init(&e);
    /* open is op 1, pwrite op 2, fsync op 3. */
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_ANY, 3, KEEL_EIO);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, fd, "x", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_EIO);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_cleared_plan_never_fires)
{
    struct env e;
    env_init(&e);
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_PWRITE, 1, KEEL_EIO);
    keel__io_fault_set_plan(e.f, NULL);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, fd, "fine", 0);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "fine");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_plan_on_other_kind_does_not_fire)
{
    struct env e;
    env_init(&e);
    /* The 1st pwrite is planned; the 1st fsync must not be mistaken for it
     * even though the pwrite count is 1 when it runs. */
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, fd, "a", 0);
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_PWRITE, 1, KEEL_EIO);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    env_fini(&e);
}
END_TEST

/* ---- SHORT_WRITE --------------------------------------------------------- */

START_TEST(test_io_fault_short_write_leaves_exact_prefix)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_SHORT_WRITE,
                            .op = KEEL_IO_OP_PWRITE,
                            .nth = 2,
                            .err = KEEL_ENOSPC,
                            .torn_bytes = 4};
    keel__io_fault_set_plan(e.f, &p);
    xwrite(&e, fd, "AAAAAAAA", 0);
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "0123456789", 10, 8), KEEL_ENOSPC);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "AAAAAAAA0123");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_short_write_on_non_write_fails_it)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_SHORT_WRITE,
                            .op = KEEL_IO_OP_FSYNC,
                            .nth = 1,
                            .err = KEEL_EIO,
                            .torn_bytes = 1};
    keel__io_fault_set_plan(e.f, &p);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_EIO);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_short_write_prefix_is_unsynced)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_SHORT_WRITE,
                            .op = KEEL_IO_OP_PWRITE,
                            .nth = 2,
                            .err = KEEL_EIO,
                            .torn_bytes = 3};
    keel__io_fault_set_plan(e.f, &p);
    xwrite(&e, fd, "head", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "tail", 4, 4), KEEL_EIO);
    assert_contents(&e, "a", "headtai");
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 2), KEEL_OK);
    assert_contents(&e, "a", "headta");
    env_fini(&e);
}
END_TEST

/* ---- crashes ------------------------------------------------------------- */

START_TEST(test_io_fault_crash_before_skips_op_and_all_later)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    set_plan(&e, KEEL_IO_FAULT_CRASH_BEFORE, KEEL_IO_OP_PWRITE, 2, 0);
    xwrite(&e, fd, "first", 0);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 0);
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "second", 6, 5), KEEL_EIO);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 1);
    assert_contents(&e, "a", "first");

    char buf[8];
    size_t got = 0;
    uint64_t size = 0;
    int fd2 = -1;
    char *p = tu_path(e.dir, "b");
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "third", 5, 0), KEEL_EIO);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_EIO);
    ck_assert_int_eq(e.io->pread(e.io, fd, buf, 8, 0, &got), KEEL_EIO);
    ck_assert_int_eq(e.io->size(e.io, fd, &size), KEEL_EIO);
    ck_assert_int_eq(e.io->truncate(e.io, fd, 0), KEEL_EIO);
    ck_assert_int_eq(e.io->open(e.io, p, O_RDWR | O_CREAT, 0644, &fd2),
                     KEEL_EIO);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_EIO);
    assert_contents(&e, "a", "first");
    ck_assert(!exists(&e, "b"));
    /* The close did nothing: the descriptor is still open until the layer
     * is freed, which closes what the crash abandoned. */
    ck_assert(fd_is_open(fd));
    keel__io_fault_free(e.f);
    e.f = NULL;
    ck_assert(!fd_is_open(fd));
    free(p);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_crash_after_runs_op_then_stops)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    set_plan(&e, KEEL_IO_FAULT_CRASH_AFTER, KEEL_IO_OP_FSYNC, 1, 0);
    xwrite(&e, fd, "synced", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 1);
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "more", 4, 6), KEEL_EIO);
    assert_contents(&e, "a", "synced");
    /* The fsync really ran: a power loss keeps what it covered. */
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    assert_contents(&e, "a", "synced");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_reset_counts_clears_crash)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    set_plan(&e, KEEL_IO_FAULT_CRASH_BEFORE, KEEL_IO_OP_FSYNC, 1, 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_EIO);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 1);
    keel__io_fault_set_plan(e.f, NULL);
    keel__io_fault_reset_counts(e.f);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 0);
    xwrite(&e, fd, "alive", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "alive");
    env_fini(&e);
}
END_TEST

/* ---- power loss ---------------------------------------------------------- */

START_TEST(test_io_fault_power_loss_drops_unsynced)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, fd, "synced", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    xwrite(&e, fd, " lost", 6);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "synced lost");
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    assert_contents(&e, "a", "synced");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_new_file_unsynced_is_empty)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT | O_EXCL, NULL);
    xwrite(&e, fd, "never synced", 0);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    /* The model is about data, not names: the file stays, empty. */
    assert_contents(&e, "a", "");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_restores_preexisting_contents)
{
    /* O_TRUNC is a pending truncate like any other: lost with keep 0,
     * applied (and not "new" over the old bytes) with keep everything. */
    static const struct {
        uint64_t keep;
        const char *want;
    } cases[] = {{0, "old contents"}, {UINT64_MAX, "new"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct env e;
        env_init(&e);
        char *p = tu_path(e.dir, "a");
        tu_write_file(p, "old contents", 12);
        int fd = xopen(&e, "a", O_RDWR | O_TRUNC, NULL);
        assert_contents(&e, "a", "");
        xwrite(&e, fd, "new", 0);
        ck_assert_int_eq(keel__io_fault_power_loss(e.f, cases[i].keep),
                         KEEL_OK);
        assert_contents(&e, "a", cases[i].want);
        free(p);
        env_fini(&e);
    }
}
END_TEST

START_TEST(test_io_fault_power_loss_truncate_needs_budget)
{
    /* Pending: truncate to 3, then "XY" at 3. A truncate costs no bytes
     * but is reached only while budget is left. */
    static const struct {
        uint64_t keep;
        const char *want;
    } cases[] = {
        {0, "old contents"}, {1, "oldX"}, {2, "oldXY"}, {100, "oldXY"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct env e;
        env_init(&e);
        char *p = tu_path(e.dir, "a");
        tu_write_file(p, "old contents", 12);
        int fd = xopen(&e, "a", O_RDWR, NULL);
        ck_assert_int_eq(e.io->truncate(e.io, fd, 3), KEEL_OK);
        xwrite(&e, fd, "XY", 3);
        ck_assert_int_eq(keel__io_fault_power_loss(e.f, cases[i].keep),
                         KEEL_OK);
        assert_contents(&e, "a", cases[i].want);
        free(p);
        env_fini(&e);
    }
}
END_TEST

START_TEST(test_io_fault_power_loss_keep_bytes_tears_across_files)
{
    static const struct {
        uint64_t keep;
        const char *a, *b;
    } cases[] = {{3, "aaa", ""},
                 {4, "aaaa", ""},
                 {7, "aaaa", "bbb"},
                 {12, "aaaaAA", "bbbbbb"},
                 {14, "aaaaAAAA", "bbbbbb"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct env e;
        env_init(&e);
        int a = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
        int b = xopen(&e, "b", O_RDWR | O_CREAT, NULL);
        xwrite(&e, a, "aaaa", 0);
        xwrite(&e, b, "bbbbbb", 0);
        xwrite(&e, a, "AAAA", 4);
        ck_assert_int_eq(keel__io_fault_power_loss(e.f, cases[i].keep),
                         KEEL_OK);
        assert_contents(&e, "a", cases[i].a);
        assert_contents(&e, "b", cases[i].b);
        env_fini(&e);
    }
}
END_TEST

START_TEST(test_io_fault_power_loss_synced_file_costs_no_budget)
{
    struct env e;
    env_init(&e);
    int a = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    int b = xopen(&e, "b", O_RDWR | O_CREAT, NULL);
    xwrite(&e, a, "1111", 0);
    xwrite(&e, b, "2222", 0);
    ck_assert_int_eq(e.io->fsync(e.io, a), KEEL_OK);
    xwrite(&e, a, "3333", 4);
    /* a's first write is durable; budget 6 goes to b's 4, then 2 of a's. */
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 6), KEEL_OK);
    assert_contents(&e, "a", "111133");
    assert_contents(&e, "b", "2222");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_follows_rename)
{
    struct env e;
    env_init(&e);
    char *tmp = NULL;
    int fd = xopen(&e, "x.tmp", O_RDWR | O_CREAT | O_EXCL, &tmp);
    xwrite(&e, fd, "HDR", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    char *seg = tu_path(e.dir, "x.seg");
    ck_assert_int_eq(e.io->rename(e.io, tmp, seg), KEEL_OK);
    ck_assert_int_eq(e.io->fsync_dir(e.io, e.dir), KEEL_OK);
    xwrite(&e, fd, "REC1", 3);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    xwrite(&e, fd, "REC2", 7);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    assert_contents(&e, "x.seg", "HDRREC1");
    ck_assert(!exists(&e, "x.tmp"));
    free(tmp);
    free(seg);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_rename_over_file_replaces_its_image)
{
    struct env e;
    env_init(&e);
    char *dst = NULL;
    char *tmp = NULL;
    int old = xopen(&e, "m", O_RDWR | O_CREAT, &dst);
    xwrite(&e, old, "old manifest", 0);
    ck_assert_int_eq(e.io->fsync(e.io, old), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, old), KEEL_OK);
    int fd = xopen(&e, "m.tmp", O_RDWR | O_CREAT | O_EXCL, &tmp);
    xwrite(&e, fd, "new", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->rename(e.io, tmp, dst), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    /* The old file's durable image must not be written over the new. */
    assert_contents(&e, "m", "new");
    free(dst);
    free(tmp);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_forgets_unlinked_file)
{
    struct env e;
    env_init(&e);
    char *z = NULL;
    int zfd = xopen(&e, "z", O_RDWR | O_CREAT, &z);
    int a = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, zfd, "zzzz", 0);
    xwrite(&e, a, "aaaa", 0);
    ck_assert_int_eq(e.io->close(e.io, zfd), KEEL_OK);
    ck_assert_int_eq(e.io->unlink(e.io, z), KEEL_OK);
    /* z's unsynced bytes left with it: the budget goes to a alone. */
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 2), KEEL_OK);
    ck_assert(!exists(&e, "z"));
    assert_contents(&e, "a", "aa");
    free(z);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_ignores_unlinked_open_file)
{
    struct env e;
    env_init(&e);
    char *z = NULL;
    int zfd = xopen(&e, "z", O_RDWR | O_CREAT, &z);
    int a = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, zfd, "zz", 0);
    ck_assert_int_eq(e.io->unlink(e.io, z), KEEL_OK);
    /* The descriptor still writes, to a file no name leads to: nothing of
     * it may come back or take budget. */
    xwrite(&e, zfd, "zzzz", 2);
    ck_assert_int_eq(e.io->fsync(e.io, zfd), KEEL_OK);
    xwrite(&e, a, "aaaa", 0);
    ck_assert_int_eq(e.io->close(e.io, zfd), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 3), KEEL_OK);
    ck_assert(!exists(&e, "z"));
    assert_contents(&e, "a", "aaa");
    free(z);
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_fsync_covers_every_descriptor)
{
    struct env e;
    env_init(&e);
    int w = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    int s = xopen(&e, "a", O_RDWR, NULL);
    xwrite(&e, w, "via w", 0);
    ck_assert_int_eq(e.io->fsync(e.io, s), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, w), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, s), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    assert_contents(&e, "a", "via w");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_closes_abandoned_descriptors)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    xwrite(&e, fd, "x", 0);
    ck_assert(fd_is_open(fd));
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    ck_assert(!fd_is_open(fd));
    assert_contents(&e, "a", "");
    env_fini(&e);
}
END_TEST

START_TEST(test_io_fault_power_loss_clears_plan_and_crash)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    set_plan(&e, KEEL_IO_FAULT_CRASH_BEFORE, KEEL_IO_OP_PWRITE, 1, 0);
    ck_assert_int_eq(e.io->pwrite(e.io, fd, "x", 1, 0), KEEL_EIO);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    ck_assert_int_eq(keel__io_fault_crashed(e.f), 0);
    /* A plan for the 2nd pwrite would fire now, had it survived. */
    set_plan(&e, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_PWRITE, 2, KEEL_EIO);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    fd = xopen(&e, "a", O_RDWR, NULL);
    xwrite(&e, fd, "after", 0);
    ck_assert_int_eq(e.io->fsync(e.io, fd), KEEL_OK);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    assert_contents(&e, "a", "after");
    env_fini(&e);
}
END_TEST

/*
 * Random writes, truncates and fsyncs on two files. Oracle, independent of
 * the layer's bookkeeping: the real bytes of each file right after its last
 * fsync (keep 0), or its real bytes before the power loss (keep everything).
 */
enum { RAND_FILES = 2, RAND_OPS = 60 };

static void random_workload(uint64_t seed, int keep_all)
{
    struct env e;
    env_init(&e);
    static const char *const names[RAND_FILES] = {"r0", "r1"};
    int fds[RAND_FILES];
    uint8_t *synced[RAND_FILES];
    size_t synced_len[RAND_FILES];
    char *paths[RAND_FILES];
    for (int i = 0; i < RAND_FILES; i++) {
        fds[i] = xopen(&e, names[i], O_RDWR | O_CREAT, &paths[i]);
        synced[i] = NULL;
        synced_len[i] = 0;
    }
    uint64_t st = seed;
    for (int n = 0; n < RAND_OPS; n++) {
        int i = (int)(tu_rand(&st) % RAND_FILES);
        uint64_t r = tu_rand(&st) % 10;
        if (r < 6) {
            uint8_t buf[32];
            size_t len = 1 + tu_rand(&st) % sizeof(buf);
            for (size_t k = 0; k < len; k++) {
                buf[k] = (uint8_t)tu_rand(&st);
            }
            ck_assert_int_eq(
                e.io->pwrite(e.io, fds[i], buf, len, tu_rand(&st) % 64),
                KEEL_OK);
        } else if (r < 8) {
            ck_assert_int_eq(e.io->truncate(e.io, fds[i], tu_rand(&st) % 80),
                             KEEL_OK);
        } else {
            ck_assert_int_eq(e.io->fsync(e.io, fds[i]), KEEL_OK);
            free(synced[i]);
            synced[i] = tu_read_file(paths[i], &synced_len[i]);
        }
    }
    uint8_t *before[RAND_FILES];
    size_t before_len[RAND_FILES];
    for (int i = 0; i < RAND_FILES; i++) {
        before[i] = tu_read_file(paths[i], &before_len[i]);
    }
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, keep_all ? UINT64_MAX : 0),
                     KEEL_OK);
    for (int i = 0; i < RAND_FILES; i++) {
        const uint8_t *want = keep_all ? before[i] : synced[i];
        size_t want_len = keep_all ? before_len[i] : synced_len[i];
        size_t len = 0;
        uint8_t *got = tu_read_file(paths[i], &len);
        ck_assert_msg(
            len == want_len && (len == 0 || memcmp(got, want, len) == 0),
            "seed %llu keep_all %d: %s differs (%zu bytes, "
            "expected %zu)",
            (unsigned long long)seed, keep_all, names[i], len, want_len);
        free(got);
        free(before[i]);
        free(synced[i]);
        free(paths[i]);
    }
    env_fini(&e);
}

START_TEST(test_io_fault_power_loss_random_matches_real_snapshots)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        random_workload(seed, 0);
        random_workload(seed, 1);
    }
}
END_TEST

/* ---- FLIP_READ ----------------------------------------------------------- */

START_TEST(test_io_fault_flip_read_flips_exactly_one_bit)
{
    struct env e;
    env_init(&e);
    int fd = xopen(&e, "a", O_RDWR | O_CREAT, NULL);
    uint8_t data[16];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(0x11 * i);
    }
    ck_assert_int_eq(e.io->pwrite(e.io, fd, data, sizeof(data), 0), KEEL_OK);
    /* Bit 3 * 128 + 13 of a 16-byte (128-bit) read is bit 13: byte 1,
     * mask 0x20. The read asks for 32 bytes and gets 16. */
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FLIP_READ,
                            .op = KEEL_IO_OP_PREAD,
                            .nth = 1,
                            .flip_bit = 3 * 128 + 13};
    keel__io_fault_set_plan(e.f, &p);
    uint8_t buf[32];
    size_t got = 0;
    ck_assert_int_eq(e.io->pread(e.io, fd, buf, sizeof(buf), 0, &got), KEEL_OK);
    ck_assert_uint_eq(got, sizeof(data));
    for (size_t i = 0; i < sizeof(data); i++) {
        uint8_t want = i == 1 ? (uint8_t)(data[i] ^ 0x20) : data[i];
        ck_assert_msg(buf[i] == want, "byte %zu: 0x%02x, expected 0x%02x", i,
                      buf[i], want);
    }
    /* Only that read: the next one and the file are intact. */
    ck_assert_int_eq(e.io->pread(e.io, fd, buf, sizeof(buf), 0, &got), KEEL_OK);
    ck_assert_int_eq(memcmp(buf, data, sizeof(data)), 0);
    ck_assert_int_eq(e.io->close(e.io, fd), KEEL_OK);
    char *path = tu_path(e.dir, "a");
    size_t len = 0;
    uint8_t *disk = tu_read_file(path, &len);
    ck_assert_uint_eq(len, sizeof(data));
    ck_assert_int_eq(memcmp(disk, data, len), 0);
    free(disk);
    free(path);
    env_fini(&e);
}
END_TEST

/* ---- threads ------------------------------------------------------------- */

enum { THREADS = 4, WRITES_PER_THREAD = 50 };

struct worker {
    keel_io *io;
    int fd;
    int rc;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < WRITES_PER_THREAD && w->rc == KEEL_OK; i++) {
        uint8_t b = (uint8_t)i;
        w->rc = w->io->pwrite(w->io, w->fd, &b, 1, (uint64_t)i);
    }
    if (w->rc == KEEL_OK) {
        w->rc = w->io->fsync(w->io, w->fd);
    }
    return NULL;
}

START_TEST(test_io_fault_threads_every_op_counted_and_synced)
{
    struct env e;
    env_init(&e);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    char name[16];
    for (int i = 0; i < THREADS; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        w[i] = (struct worker){.io = e.io,
                               .fd = xopen(&e, name, O_RDWR | O_CREAT, NULL)};
        ck_assert_int_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        ck_assert_int_eq(w[i].rc, KEEL_OK);
    }
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_PWRITE),
                      THREADS * WRITES_PER_THREAD);
    ck_assert_uint_eq(keel__io_fault_count(e.f, KEEL_IO_OP_FSYNC), THREADS);
    ck_assert_int_eq(keel__io_fault_power_loss(e.f, 0), KEEL_OK);
    for (int i = 0; i < THREADS; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        char *p = tu_path(e.dir, name);
        size_t len = 0;
        uint8_t *got = tu_read_file(p, &len);
        ck_assert_uint_eq(len, WRITES_PER_THREAD);
        for (size_t k = 0; k < len; k++) {
            ck_assert_uint_eq(got[k], k);
        }
        free(got);
        free(p);
    }
    env_fini(&e);
}
END_TEST

Suite *io_fault_suite(void);

Suite *io_fault_suite(void)
{
    Suite *s = suite_create("io_fault");
    TCase *tc = tcase_create("counting");
    tcase_add_test(tc, test_io_fault_counts_ops_per_kind);
    tcase_add_test(tc, test_io_fault_refused_ops_are_counted);
    tcase_add_test(tc, test_io_fault_mkdir_rmdir_counted_failed_crashed);
    suite_add_tcase(s, tc);

    tc = tcase_create("fail");
    tcase_add_test(tc,
                   test_io_fault_fail_nth_fsync_returns_error_then_ops_work);
    tcase_add_test(tc, test_io_fault_fail_pwrite_writes_nothing);
    tcase_add_test(tc, test_io_fault_fail_any_counts_every_kind);
    tcase_add_test(tc, test_io_fault_cleared_plan_never_fires);
    tcase_add_test(tc, test_io_fault_plan_on_other_kind_does_not_fire);
    suite_add_tcase(s, tc);

    tc = tcase_create("short_write");
    tcase_add_test(tc, test_io_fault_short_write_leaves_exact_prefix);
    tcase_add_test(tc, test_io_fault_short_write_on_non_write_fails_it);
    tcase_add_test(tc, test_io_fault_short_write_prefix_is_unsynced);
    suite_add_tcase(s, tc);

    tc = tcase_create("crash");
    tcase_add_test(tc, test_io_fault_crash_before_skips_op_and_all_later);
    tcase_add_test(tc, test_io_fault_crash_after_runs_op_then_stops);
    tcase_add_test(tc, test_io_fault_reset_counts_clears_crash);
    suite_add_tcase(s, tc);

    tc = tcase_create("power_loss");
    tcase_add_test(tc, test_io_fault_power_loss_drops_unsynced);
    tcase_add_test(tc, test_io_fault_power_loss_new_file_unsynced_is_empty);
    tcase_add_test(tc, test_io_fault_power_loss_restores_preexisting_contents);
    tcase_add_test(tc, test_io_fault_power_loss_truncate_needs_budget);
    tcase_add_test(tc, test_io_fault_power_loss_keep_bytes_tears_across_files);
    tcase_add_test(tc, test_io_fault_power_loss_synced_file_costs_no_budget);
    tcase_add_test(tc, test_io_fault_power_loss_follows_rename);
    tcase_add_test(
        tc, test_io_fault_power_loss_rename_over_file_replaces_its_image);
    tcase_add_test(tc, test_io_fault_power_loss_forgets_unlinked_file);
    tcase_add_test(tc, test_io_fault_power_loss_ignores_unlinked_open_file);
    tcase_add_test(tc, test_io_fault_power_loss_fsync_covers_every_descriptor);
    tcase_add_test(tc, test_io_fault_power_loss_closes_abandoned_descriptors);
    tcase_add_test(tc, test_io_fault_power_loss_clears_plan_and_crash);
    tcase_add_test(tc, test_io_fault_power_loss_random_matches_real_snapshots);
    suite_add_tcase(s, tc);

    tc = tcase_create("flip_read");
    tcase_add_test(tc, test_io_fault_flip_read_flips_exactly_one_bit);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_test(tc, test_io_fault_threads_every_op_counted_and_synced);
    suite_add_tcase(s, tc);
    return s;
}
