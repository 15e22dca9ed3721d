/*
 * tests/test_cli.c — the `keel` program, run as a child process through
 * tu_run_keel(): exit statuses (0 success, 1 data error, 2 usage error),
 * help that lists exactly the commands that exist, `wal dump` and `wal
 * verify` on logs written here with the keel_wal_* API and then damaged at
 * computed offsets, strict number parsing, and a tiny smoke run of `keel
 * bench wal-append` that checks the shape of its JSON, never its speed.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/keel.h"

#include "tests/testutil.h"
#include "wal/wal_format.h"

#define PAYLOAD_BYTES 100u
#define SEG1          "00000000000000000001.seg"

/* Offset of record lsn (1-based) in a one-segment log of equal records. */
static uint64_t rec_offset(uint64_t lsn)
{
    return KEEL_WAL_SEG_HEADER_BYTES +
           (lsn - 1) * (KEEL_WAL_REC_OVERHEAD_BYTES + PAYLOAD_BYTES);
}

/* Write a log of n records of PAYLOAD_BYTES into <root>/wal; return that
 * path (malloc'd). Record i has crank 10 + i and payload bytes i. */
static char *make_log(const char *root, uint64_t n)
{
    char *dir = tu_path(root, "wal");
    keel_wal_options o;
    keel_wal *w = NULL;
    keel_diag d = {0};
    uint8_t payload[PAYLOAD_BYTES];
    keel_wal_options_init(&o);
    int rc = keel_wal_open(dir, &o, &w, NULL, &d);
    ck_assert_msg(rc == KEEL_OK, "keel_wal_open: %d %s", rc, d.msg);
    for (uint64_t i = 1; i <= n; i++) {
        uint64_t lsn = 0;
        memset(payload, (int)i, sizeof(payload));
        rc = keel_wal_append(w, KEEL_WAL_CRANK, 10 + i, payload,
                             sizeof(payload), &lsn, &d);
        ck_assert_msg(rc == KEEL_OK, "append: %d %s", rc, d.msg);
        ck_assert_uint_eq(lsn, i);
    }
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    return dir;
}

/* Parse every line of out as JSON; returns a json array of them. */
static json_t *parse_lines(const char *out)
{
    json_t *all = json_array();
    char *copy = strdup(out);
    char *save = NULL;
    ck_assert_ptr_nonnull(copy);
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *v = json_loads(line, 0, &je);
        ck_assert_msg(v != NULL, "not JSON (%s): %s", je.text, line);
        ck_assert(json_is_object(v));
        json_array_append_new(all, v);
    }
    free(copy);
    return all;
}

static size_t count_with_key(json_t *lines, const char *key)
{
    size_t n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(lines, i, v)
    {
        n += json_object_get(v, key) != NULL;
    }
    return n;
}

/* ------------------------------------------------------------------ help */

START_TEST(test_cli_help_lists_existing_commands)
{
    char *out = NULL, *err = NULL;
    const char *args[] = {"--help", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    /* one row per command, each starting "\n  <words> " */
    ck_assert_ptr_nonnull(strstr(out, "\n  wal dump DIR"));
    ck_assert_ptr_nonnull(strstr(out, "\n  wal verify DIR"));
    ck_assert_ptr_nonnull(strstr(out, "\n  bench WORKLOAD"));
    ck_assert_ptr_nonnull(strstr(out, "\n  run STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  status STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  send STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  recover STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  crashtest "));
    ck_assert_ptr_nonnull(strstr(out, "\n  snapshot create STATE FILE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  snapshot restore FILE NEWSTATE"));
    /* only what exists in this build */
    ck_assert_ptr_nonnull(strstr(out, "\n  stop STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  vats STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  inspect STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  graph STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  metrics STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  watch STATE"));
    static const char *later[] = {"gc"};
    for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++) {
        char row[32];
        snprintf(row, sizeof(row), "\n  %s ", later[i]);
        ck_assert_msg(strstr(out, row) == NULL, "lists %s", later[i]);
    }
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
}
END_TEST

START_TEST(test_cli_version_prints_version)
{
    char *out = NULL;
    const char *args[] = {"--version", NULL};
    char want[64];
    snprintf(want, sizeof(want), "keel %s\n", keel_version());
    ck_assert_int_eq(tu_run_keel(args, &out, NULL), 0);
    ck_assert_str_eq(out, want);
    ck_assert_str_eq(out, "keel 0.1.0\n");
    free(out);
}
END_TEST

/* Every way of asking for a command's help exits 0 with its usage line. */
START_TEST(test_cli_command_help_exits_zero)
{
    static const struct {
        const char *args[4];
        const char *usage;
    } cases[] = {
        {{"wal", "dump", "--help", NULL}, "usage: keel wal dump DIR"},
        {{"wal", "verify", "-h", NULL}, "usage: keel wal verify DIR"},
        {{"help", "wal", "dump", NULL}, "usage: keel wal dump DIR"},
        {{"help", "wal", "verify", NULL}, "usage: keel wal verify DIR"},
        {{"wal", "--help", NULL}, "usage: keel wal SUBCOMMAND"},
        {{"help", "wal", NULL}, "usage: keel wal SUBCOMMAND"},
        {{"bench", "--help", NULL}, "usage: keel bench WORKLOAD"},
        {{"help", "bench", NULL}, "usage: keel bench WORKLOAD"},
        {{"bench", "wal-append", "--help", NULL},
         "usage: keel bench wal-append"},
        {{"help", "bench", "wal-append", NULL}, "usage: keel bench wal-append"},
        {{"help", NULL}, "usage: keel COMMAND"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(cases[i].args, &out, &err);
        ck_assert_msg(rc == 0, "case %zu: exit %d, stderr %s", i, rc, err);
        ck_assert_msg(strncmp(out, cases[i].usage, strlen(cases[i].usage)) == 0,
                      "case %zu: %s", i, out);
        ck_assert_str_eq(err, "");
        free(out);
        free(err);
    }
}
END_TEST

START_TEST(test_cli_bench_help_lists_workloads)
{
    char *out = NULL;
    const char *args[] = {"bench", "--help", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, NULL), 0);
    static const char *const workloads[] = {
        "wal-append",   "pingpong", "fanout",  "chain5",
        "pingpong-rss", "recover",  "snapshot"};
    for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
        ck_assert_msg(strstr(out, workloads[i]) != NULL, "no %s in:\n%s",
                      workloads[i], out);
    }
    free(out);
}
END_TEST

/* ----------------------------------------------------------- usage errors */

START_TEST(test_cli_unknown_command_exits_two)
{
    char *out = NULL, *err = NULL;
    const char *args[] = {"frobnicate", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 2);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "frobnicate"));
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
}
END_TEST

START_TEST(test_cli_usage_errors_exit_two_with_one_line)
{
    static const struct {
        const char *args[5];
        const char *names; /* stderr must contain it */
    } cases[] = {
        {{NULL}, "no command"},
        {{"--frob", NULL}, "--frob"},
        {{"wal", NULL}, "dump, verify"},
        {{"wal", "frob", NULL}, "frob"},
        {{"wal", "dump", NULL}, "missing DIR"},
        {{"wal", "dump", "d", "--frob", NULL}, "--frob"},
        {{"wal", "dump", "d", "e", NULL}, "'e'"},
        {{"wal", "dump", "d", "--from", NULL}, "--from"},
        {{"wal", "verify", "d", "--json=1", NULL}, "--json"},
        {{"bench", NULL}, "wal-append"},
        {{"bench", "frob", NULL}, "wal-append"},
        {{"bench", "wal-append", "--sync", "sometimes", NULL}, "--sync"},
        {{"bench", "wal-append", "--runs", "2", NULL}, "--runs"},
        {{"bench", "wal-append", "extra", NULL}, "extra"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(cases[i].args, &out, &err);
        ck_assert_msg(rc == 2, "case %zu: exit %d", i, rc);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, cases[i].names) != NULL, "case %zu: %s", i,
                      err);
        ck_assert_str_eq(out, "");
        free(out);
        free(err);
    }
}
END_TEST

/* Numbers: digits only, in range; the error names the option. */
START_TEST(test_cli_bad_numbers_exit_two_naming_option)
{
    static const struct {
        const char *args[6];
        const char *opt;
    } cases[] = {
        {{"wal", "dump", "d", "--from", "abc", NULL}, "--from"},
        {{"wal", "dump", "d", "--from", "-1", NULL}, "--from"},
        {{"wal", "dump", "d", "--from", "3x", NULL}, "--from"},
        {{"wal", "dump", "d", "--from", " 3", NULL}, "--from"},
        {{"wal", "dump", "d", "--from", "", NULL}, "--from"},
        {{"wal", "dump", "d", "--from", "18446744073709551616", NULL},
         "--from"},
        {{"bench", "wal-append", "--n", "-1", NULL}, "--n"},
        {{"bench", "wal-append", "--n", "0", NULL}, "--n"},
        {{"bench", "wal-append", "--n=+5", NULL}, "--n"},
        {{"bench", "wal-append", "--size", "0x10", NULL}, "--size"},
        {{"bench", "wal-append", "--size", "999999999999", NULL}, "--size"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(cases[i].args, &out, &err);
        ck_assert_msg(rc == 2, "case %zu: exit %d", i, rc);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, cases[i].opt) != NULL, "case %zu: %s", i,
                      err);
        free(out);
        free(err);
    }
}
END_TEST

/* An option given twice is a usage error naming it, in every command,
 * whatever the spelling of each occurrence (--opt V, --opt=V, a flag). */
START_TEST(test_cli_repeated_option_exits_two_naming_it)
{
    static const struct {
        const char *args[9];
        const char *opt;
    } cases[] = {
        {{"run", "s", "--max-cranks", "5", "--max-cranks", "6", NULL},
         "--max-cranks"},
        {{"run", "s", "--json", "--json", NULL}, "--json"},
        {{"status", "s", "--json", "--json", NULL}, "--json"},
        {{"send", "s", "v", "m", "{}", "--wait", "--wait", NULL}, "--wait"},
        {{"recover", "s", "--check", "--check", NULL}, "--check"},
        {{"wal", "dump", "d", "--from=1", "--from", "2", NULL}, "--from"},
        {{"wal", "verify", "d", "--json", "--json", NULL}, "--json"},
        {{"wal", "demo", "d", "--n", "1", "--n=1", NULL}, "--n"},
        {{"snapshot", "info", "f", "--json", "--json", NULL}, "--json"},
        {{"snapshot", "create", "s", "f", "--level", "1", "--level", "2", NULL},
         "--level"},
        {{"bench", "wal-append", "--n", "1", "--n", "2", NULL}, "--n"},
        {{"crashtest", "--config", "a", "--config", "b", NULL}, "--config"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(cases[i].args, &out, &err);
        ck_assert_msg(rc == 2, "case %zu: exit %d, stderr: %s", i, rc, err);
        tu_assert_one_error_line(err);
        char want[64];
        snprintf(want, sizeof(want), "%s given twice", cases[i].opt);
        ck_assert_msg(strstr(err, want) != NULL, "case %zu: %s", i, err);
        ck_assert_str_eq(out, "");
        free(out);
        free(err);
    }
    /* after `--` the same word is an argument, not an option */
    char *out = NULL, *err = NULL;
    const char *args[] = {"wal", "dump", "--json", "--", "--json", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    ck_assert_msg(strstr(err, "given twice") == NULL, "%s", err);
    free(out);
    free(err);
}
END_TEST

/* ------------------------------------------------------------- wal clean */

START_TEST(test_cli_wal_verify_clean_log_exits_zero)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_log(root, 5);
    char *out = NULL, *err = NULL;
    const char *args[] = {"wal", "verify", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    ck_assert_msg(strncmp(out, "ok: 5 records, LSN 1..5", 23) == 0, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "tail clean"));
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_dump_clean_log_lists_records)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_log(root, 5);
    char *out = NULL, *err = NULL;
    char tail[160];
    const char *args[] = {"wal", "dump", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    /* a column header, five records, the tail */
    ck_assert_uint_eq(tu_count_lines(out), 7);
    ck_assert_ptr_nonnull(strstr(out, "crank"));
    snprintf(tail, sizeof(tail),
             "tail: clean at " SEG1 " offset %llu, last LSN 5\n",
             (unsigned long long)rec_offset(6));
    ck_assert_msg(strstr(out, tail) != NULL, "%s", out);
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_dump_json_has_one_object_per_record)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_log(root, 5);
    char *out = NULL;
    const char *args[] = {"wal", "dump", wal, "--json", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, NULL), 0);
    json_t *lines = parse_lines(out);
    ck_assert_uint_eq(json_array_size(lines), 6);
    ck_assert_uint_eq(count_with_key(lines, "lsn"), 5);
    json_t *first = json_array_get(lines, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "lsn")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "crank")), 11);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "raw_len")),
                     PAYLOAD_BYTES);
    ck_assert_str_eq(json_string_value(json_object_get(first, "kind")),
                     "crank");
    ck_assert_str_eq(json_string_value(json_object_get(first, "segment")),
                     SEG1);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "offset")),
                     (json_int_t)rec_offset(1));
    json_t *tail = json_object_get(json_array_get(lines, 5), "tail");
    ck_assert_ptr_nonnull(tail);
    ck_assert(json_is_false(json_object_get(tail, "torn")));
    ck_assert_int_eq(json_integer_value(json_object_get(tail, "last_lsn")), 5);
    json_decref(lines);
    free(out);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_dump_from_starts_at_lsn)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_log(root, 5);
    char *out = NULL;
    const char *args[] = {"wal", "dump", wal, "--from", "3", "--json", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, NULL), 0);
    json_t *lines = parse_lines(out);
    ck_assert_uint_eq(count_with_key(lines, "lsn"), 3);
    json_t *first = json_array_get(lines, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "lsn")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(first, "offset")),
                     (json_int_t)rec_offset(3));
    json_decref(lines);
    free(out);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_verify_missing_dir_exits_one)
{
    char *root = tu_tmpdir("cli");
    char *wal = tu_path(root, "nothing-here");
    char *out = NULL, *err = NULL;
    const char *args[] = {"wal", "verify", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "keel: wal verify: "));
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* -------------------------------------------------------------- wal torn */

/* Cut the last 3 bytes of a 3-record log: record 3 is torn. */
static char *make_torn_log(const char *root, uint8_t **before, size_t *len)
{
    char *wal = make_log(root, 3);
    char *seg = tu_path(wal, SEG1);
    size_t n = 0;
    uint8_t *buf = tu_read_file(seg, &n);
    ck_assert_uint_eq(n, rec_offset(4));
    tu_write_file(seg, buf, n - 3);
    *before = buf;
    *len = n - 3;
    free(seg);
    return wal;
}

START_TEST(test_cli_wal_verify_torn_tail_exits_one_unchanged)
{
    char *root = tu_tmpdir("cli");
    uint8_t *before = NULL;
    size_t len = 0;
    char *wal = make_torn_log(root, &before, &len);
    char *seg = tu_path(wal, SEG1);
    char *out = NULL, *err = NULL;
    char where[128];
    const char *args[] = {"wal", "verify", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    snprintf(where, sizeof(where), "torn tail at " SEG1 " offset %llu",
             (unsigned long long)rec_offset(3));
    ck_assert_msg(strstr(err, where) != NULL, "%s", err);
    /* verify changes nothing */
    size_t after_len = 0;
    uint8_t *after = tu_read_file(seg, &after_len);
    ck_assert_uint_eq(after_len, len);
    ck_assert_int_eq(memcmp(after, before, len), 0);
    free(after);
    free(before);
    free(out);
    free(err);
    free(seg);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_dump_torn_tail_reports_it_exits_zero)
{
    char *root = tu_tmpdir("cli");
    uint8_t *before = NULL;
    size_t len = 0;
    char *wal = make_torn_log(root, &before, &len);
    char *out = NULL, *err = NULL;
    char tail[128];
    const char *args[] = {"wal", "dump", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    ck_assert_uint_eq(tu_count_lines(out), 4); /* header, 2 records, tail */
    snprintf(tail, sizeof(tail), "tail: torn at " SEG1 " offset %llu (%llu",
             (unsigned long long)rec_offset(3),
             (unsigned long long)(len - rec_offset(3)));
    ck_assert_msg(strstr(out, tail) != NULL, "%s", out);
    ck_assert_str_eq(err, "");
    free(before);
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* --------------------------------------------------------- wal corrupted */

/* Flip a payload byte of record lsn in a 3-record log: a valid record
 * follows it, so this is corruption, not a torn tail. */
static char *make_corrupt_log(const char *root, uint64_t lsn)
{
    char *wal = make_log(root, 3);
    char *seg = tu_path(wal, SEG1);
    size_t n = 0;
    uint8_t *buf = tu_read_file(seg, &n);
    buf[rec_offset(lsn) + KEEL_WAL_REC_HEADER_BYTES + 5] ^= 0x40;
    tu_write_file(seg, buf, n);
    free(buf);
    free(seg);
    return wal;
}

START_TEST(test_cli_wal_verify_corruption_exits_one_naming_offset)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_corrupt_log(root, 1);
    char *out = NULL, *err = NULL;
    char where[128];
    const char *args[] = {"wal", "verify", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    snprintf(where, sizeof(where), "keel: wal verify: " SEG1 ": offset %llu",
             (unsigned long long)rec_offset(1));
    ck_assert_msg(strstr(err, where) != NULL, "%s", err);
    ck_assert_msg(strstr(err, "checksum") != NULL, "%s", err);
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_dump_corruption_prints_records_before_it)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_corrupt_log(root, 2);
    char *out = NULL, *err = NULL;
    char where[128];
    const char *args[] = {"wal", "dump", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    ck_assert_uint_eq(tu_count_lines(out), 2); /* header, record 1; no tail */
    ck_assert_ptr_null(strstr(out, "tail:"));
    tu_assert_one_error_line(err);
    snprintf(where, sizeof(where), "keel: wal dump: " SEG1 ": offset %llu",
             (unsigned long long)rec_offset(2));
    ck_assert_msg(strstr(err, where) != NULL, "%s", err);
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_dump_json_corruption_ends_with_error_object)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_corrupt_log(root, 2);
    char *out = NULL, *err = NULL;
    const char *args[] = {"wal", "dump", "--json", wal, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    json_t *lines = parse_lines(out);
    ck_assert_uint_eq(json_array_size(lines), 2);
    ck_assert_uint_eq(count_with_key(lines, "lsn"), 1);
    json_t *e = json_object_get(json_array_get(lines, 1), "error");
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(json_string_value(json_object_get(e, "code")),
                     "KEEL_ECORRUPT");
    ck_assert_ptr_nonnull(
        strstr(json_string_value(json_object_get(e, "message")), SEG1));
    tu_assert_one_error_line(err);
    json_decref(lines);
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_verify_json_corruption_reports_error)
{
    char *root = tu_tmpdir("cli");
    char *wal = make_corrupt_log(root, 1);
    char *out = NULL;
    const char *args[] = {"wal", "verify", wal, "--json", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, NULL), 1);
    json_t *lines = parse_lines(out);
    ck_assert_uint_eq(json_array_size(lines), 1);
    json_t *o = json_array_get(lines, 0);
    ck_assert(json_is_false(json_object_get(o, "ok")));
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(o, "error"), "code")),
        "KEEL_ECORRUPT");
    json_decref(lines);
    free(out);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* ----------------------------------------------------------------- bench */

static size_t dir_entries(const char *path)
{
    size_t n = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

/* Shape only: never a claim about speed. */
static void check_bench_json(const char *out, size_t want_lines,
                             const char *const *syncs)
{
    json_t *lines = parse_lines(out);
    ck_assert_uint_eq(json_array_size(lines), want_lines);
    for (size_t i = 0; i < want_lines; i++) {
        json_t *o = json_array_get(lines, i);
        ck_assert_str_eq(json_string_value(json_object_get(o, "workload")),
                         "wal-append");
        ck_assert_str_eq(json_string_value(json_object_get(o, "sync")),
                         syncs[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "n")), 50);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "size")), 256);
        ck_assert(json_real_value(json_object_get(o, "ratio")) > 0);
        ck_assert(json_real_value(json_object_get(o, "median_per_s")) > 0);
        ck_assert(json_real_value(json_object_get(o, "baseline_per_s")) > 0);
        ck_assert_str_eq(json_string_value(json_object_get(o, "baseline")),
                         strcmp(syncs[i], "full") == 0 ? "fdatasync"
                                                       : "seqwrite");
        ck_assert_uint_eq(json_array_size(json_object_get(o, "runs")), 3);
        ck_assert_ptr_null(json_object_get(o, "deliveries_per_s"));
    }
    json_decref(lines);
}

START_TEST(test_cli_bench_wal_append_json_smoke)
{
    char *root = tu_tmpdir("cli-bench");
    char *out = NULL, *err = NULL;
    const char *args[] = {"bench",  "wal-append", "--n",    "50",
                          "--runs", "3",          "--sync", "off",
                          "--json", "--dir",      root,     NULL};
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    const char *syncs[] = {"off"};
    check_bench_json(out, 1, syncs);
    /* the work directory made in --dir is gone again */
    ck_assert_uint_eq(dir_entries(root), 0);
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_bench_wal_append_all_policies_one_line_each)
{
    char *root = tu_tmpdir("cli-bench");
    char *out = NULL, *err = NULL;
    const char *args[] = {"bench", "wal-append", "--n",   "50", "--runs",
                          "3",     "--json",     "--dir", root, NULL};
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    const char *syncs[] = {"full", "group", "off"};
    check_bench_json(out, 3, syncs);
    ck_assert_uint_eq(dir_entries(root), 0);
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_bench_wal_append_human_has_header_and_rows)
{
    char *root = tu_tmpdir("cli-bench");
    char *out = NULL, *err = NULL;
    const char *args[] = {"bench",  "wal-append", "--n",   "50", "--runs", "3",
                          "--sync", "group",      "--dir", root, NULL};
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    /* environment line, column names, baseline row, candidate row */
    ck_assert_uint_eq(tu_count_lines(out), 4);
    ck_assert_ptr_nonnull(strstr(out, "cpu "));
    ck_assert_ptr_nonnull(strstr(out, "; fs "));
    ck_assert_ptr_nonnull(strstr(out, "; build "));
    ck_assert_ptr_nonnull(strstr(out, "seqwrite"));
    ck_assert_ptr_nonnull(strstr(out, "MB/s"));
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_bench_missing_dir_exits_one)
{
    char *root = tu_tmpdir("cli-bench");
    char *gone = tu_path(root, "absent");
    char *out = NULL, *err = NULL;
    const char *args[] = {"bench", "wal-append", "--n", "5", "--runs",
                          "3",     "--dir",      gone,  NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "absent"));
    free(out);
    free(err);
    free(gone);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* ------------------------------------------------------------------ demo */

START_TEST(test_cli_wal_demo_writes_then_resumes_log)
{
    char *root = tu_tmpdir("cli");
    char *wal = tu_path(root, "state/wal"); /* parents are created */
    char *out = NULL;
    const char *write1[] = {"wal", "demo", wal, "--n", "120", NULL};
    ck_assert_int_eq(tu_run_keel(write1, &out, NULL), 0);
    ck_assert_msg(strstr(out, "wrote 120 records (LSN 1..120)") != NULL, "%s",
                  out);
    free(out);
    const char *write2[] = {"wal", "demo",   wal,     "--n",
                            "30",  "--sync", "group", NULL};
    ck_assert_int_eq(tu_run_keel(write2, &out, NULL), 0);
    ck_assert_msg(strstr(out, "(LSN 121..150)") != NULL, "%s", out);
    free(out);
    const char *dump[] = {"wal", "dump", wal, "--json", NULL};
    ck_assert_int_eq(tu_run_keel(dump, &out, NULL), 0);
    json_t *lines = parse_lines(out);
    ck_assert_uint_eq(count_with_key(lines, "lsn"), 150);
    /* LSN 100 is the big repetitive payload, stored compressed */
    json_t *r100 = json_array_get(lines, 99);
    ck_assert_int_eq(json_integer_value(json_object_get(r100, "lsn")), 100);
    ck_assert(json_is_true(json_object_get(r100, "zstd")));
    ck_assert_int_eq(json_integer_value(json_object_get(r100, "raw_len")),
                     65536);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(lines, 6), "kind")),
        "out-of-crank");
    json_decref(lines);
    free(out);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* --n 0 would write nothing and print an empty LSN range: refused. */
START_TEST(test_cli_wal_demo_zero_records_exits_two)
{
    char *root = tu_tmpdir("cli");
    char *wal = tu_path(root, "wal");
    char *out = NULL, *err = NULL;
    const char *args[] = {"wal", "demo", wal, "--n", "0", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 2);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "--n") != NULL, "%s", err);
    ck_assert_str_eq(out, "");
    ck_assert_msg(access(wal, F_OK) != 0, "--n 0 created the log directory");
    free(out);
    free(err);
    free(wal);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_cli_wal_demo_bad_sync_exits_two)
{
    char *err = NULL;
    const char *args[] = {"wal",    "demo", "/nonexistent/x",
                          "--sync", "fast", NULL};
    ck_assert_int_eq(tu_run_keel(args, NULL, &err), 2);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "--sync") != NULL, "%s", err);
    free(err);
}
END_TEST

START_TEST(test_cli_wal_demo_unwritable_dir_exits_one)
{
    char *root = tu_tmpdir("cli");
    char *file = tu_path(root, "plainfile");
    tu_write_file(file, "x", 1);
    char *wal = tu_path(file, "wal"); /* a path under a regular file */
    char *err = NULL;
    const char *args[] = {"wal", "demo", wal, "--n", "3", NULL};
    ck_assert_int_eq(tu_run_keel(args, NULL, &err), 1);
    tu_assert_one_error_line(err);
    free(err);
    free(wal);
    free(file);
    tu_rmrf(root);
    free(root);
}
END_TEST

Suite *cli_suite(void);

Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("help");
    tcase_add_test(tc, test_cli_help_lists_existing_commands);
    tcase_add_test(tc, test_cli_version_prints_version);
    tcase_add_test(tc, test_cli_command_help_exits_zero);
    tcase_add_test(tc, test_cli_bench_help_lists_workloads);
    suite_add_tcase(s, tc);

    tc = tcase_create("usage");
    tcase_add_test(tc, test_cli_unknown_command_exits_two);
    tcase_add_test(tc, test_cli_usage_errors_exit_two_with_one_line);
    tcase_add_test(tc, test_cli_bad_numbers_exit_two_naming_option);
    tcase_add_test(tc, test_cli_repeated_option_exits_two_naming_it);
    suite_add_tcase(s, tc);

    tc = tcase_create("wal");
    tcase_add_test(tc, test_cli_wal_verify_clean_log_exits_zero);
    tcase_add_test(tc, test_cli_wal_dump_clean_log_lists_records);
    tcase_add_test(tc, test_cli_wal_dump_json_has_one_object_per_record);
    tcase_add_test(tc, test_cli_wal_dump_from_starts_at_lsn);
    tcase_add_test(tc, test_cli_wal_verify_missing_dir_exits_one);
    tcase_add_test(tc, test_cli_wal_verify_torn_tail_exits_one_unchanged);
    tcase_add_test(tc, test_cli_wal_dump_torn_tail_reports_it_exits_zero);
    tcase_add_test(tc, test_cli_wal_verify_corruption_exits_one_naming_offset);
    tcase_add_test(tc, test_cli_wal_dump_corruption_prints_records_before_it);
    tcase_add_test(tc,
                   test_cli_wal_dump_json_corruption_ends_with_error_object);
    tcase_add_test(tc, test_cli_wal_verify_json_corruption_reports_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("demo");
    tcase_add_test(tc, test_cli_wal_demo_writes_then_resumes_log);
    tcase_add_test(tc, test_cli_wal_demo_zero_records_exits_two);
    tcase_add_test(tc, test_cli_wal_demo_bad_sync_exits_two);
    tcase_add_test(tc, test_cli_wal_demo_unwritable_dir_exits_one);
    suite_add_tcase(s, tc);

    tc = tcase_create("bench");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_cli_bench_wal_append_json_smoke);
    tcase_add_test(tc, test_cli_bench_wal_append_all_policies_one_line_each);
    tcase_add_test(tc, test_cli_bench_wal_append_human_has_header_and_rows);
    tcase_add_test(tc, test_cli_bench_missing_dir_exits_one);
    suite_add_tcase(s, tc);
    return s;
}
