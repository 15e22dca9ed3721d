/*
 * tests/test_bench.c — smoke runs of the kernel workloads of `keel bench`
 * (pingpong, fanout, chain5, pingpong-rss) at tiny sizes, through
 * tu_run_keel(). They check the shape of the JSON and relations that hold
 * whatever the speed (two rates of one run are in the ratio of their
 * counts, and a count equals what a reference run of the same cluster
 * writes to its WAL), never a figure.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testutil.h"

/* Entries of dir, "." and ".." aside. */
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

/* Run `keel bench ARGS... --json --dir <tmp>`; assert exit 0, stdout one
 * JSON object, and that the work directory is gone; return the object. */
static json_t *bench_json(const char *const *words)
{
    char *root = tu_tmpdir("bench");
    const char *args[16];
    size_t n = 0;
    char *out = NULL, *err = NULL;
    json_error_t je;
    args[n++] = "bench";
    for (; *words != NULL; words++) {
        args[n++] = *words;
    }
    args[n++] = "--json";
    args[n++] = "--dir";
    args[n++] = root;
    args[n] = NULL;
    ck_assert_uint_lt(n, sizeof(args) / sizeof(args[0]));
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1,
                  "not one line: %s", out);
    json_t *o = json_loads(out, 0, &je);
    ck_assert_msg(json_is_object(o), "not a JSON object (%s): %s", je.text,
                  out);
    ck_assert_uint_eq(dir_entries(root), 0); /* B5 */
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
    return o;
}

static double real_at(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_real(v), "%s: missing or not a real", key);
    return json_real_value(v);
}

/* The keys every kernel result has, each rate > 0, and 3 runs. */
static void check_kernel_result(const json_t *o, const char *workload,
                                const char *sync, const char *per_n)
{
    static const char *const rates[] = {
        "median_per_s",
        "min_per_s",
        "max_per_s",
        "baseline_per_s",
        "ratio",
        "cranks_per_s",
        "transactions_per_s",
        "deliveries_per_s",
    };
    int full = strcmp(sync, "full") == 0;
    ck_assert_str_eq(json_string_value(json_object_get(o, "workload")),
                     workload);
    ck_assert_str_eq(json_string_value(json_object_get(o, "sync")), sync);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "n")), 20);
    ck_assert_str_eq(json_string_value(json_object_get(o, "baseline")),
                     full ? "fdatasync" : "lmdb-put");
    ck_assert_str_eq(json_string_value(json_object_get(o, "candidate")),
                     full ? "transactions" : "cranks");
    ck_assert_ptr_null(json_object_get(o, "size"));
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        ck_assert_msg(real_at(o, rates[i]) > 0, "%s not > 0", rates[i]);
    }
    /* the candidate's median is its own metric's median */
    ck_assert(real_at(o, "median_per_s") ==
              real_at(o, full ? "transactions_per_s" : "cranks_per_s"));
    if (per_n != NULL) {
        ck_assert(real_at(o, per_n) > 0);
    }
    const json_t *runs = json_object_get(o, "runs");
    ck_assert_uint_eq(json_array_size(runs), 3);
    for (size_t i = 0; i < 3; i++) {
        const json_t *r = json_array_get(runs, i);
        ck_assert(real_at(r, "per_s") > 0);
        ck_assert(real_at(r, "baseline_per_s") > 0);
        ck_assert(real_at(r, "deliveries_per_s") > 0);
    }
}

START_TEST(test_bench_pingpong_json_has_kernel_rates)
{
    const char *w[] = {"pingpong", "--n",    "20",  "--runs",
                       "3",        "--sync", "off", NULL};
    json_t *o = bench_json(w);
    check_kernel_result(o, "pingpong", "off", "round_trips_per_s");
    /* 20 round trips are 2 * 20 + 1 cranks, over the same seconds */
    double ratio = real_at(o, "cranks_per_s") / real_at(o, "round_trips_per_s");
    ck_assert_msg(fabs(ratio - 41.0 / 20.0) < 1e-6, "cranks/round trips %f",
                  ratio);
    json_decref(o);
}
END_TEST

/* The same cluster as `keel bench pingpong --n 20` (bench_kernel.c's
 * pingpong_config), run by `keel run --sync full`: the reference for what
 * one timed bench run does. */
static const char pingpong20_json[] =
    "{\"bootstrap\":\"alice\",\"vats\":{\"alice\":{\"builtin\":"
    "\"pingpong\",\"params\":{\"role\":\"alice\",\"rounds\":20}},"
    "\"bob\":{\"builtin\":\"pingpong\",\"params\":{\"role\":\"bob\"}}}}";

static json_int_t int_at(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "%s: missing or not an integer", key);
    return json_integer_value(v);
}

/* a == b, relatively, for rates of one run (quotients of exact counts) */
static void assert_close(double a, double b, const char *what)
{
    ck_assert_msg(fabs(a - b) <= 1e-9 * fabs(b), "%s: %.12g != %.12g", what, a,
                  b);
}

/* What a pingpong run of 20 rounds writes under sync=full: its WAL
 * records, one per transaction (each fdatasync'd before it is used: K10,
 * W-invariants), counted from the state itself. Returns the records after
 * the boot record, and the run's deliveries in *deliveries. */
static json_int_t reference_records(json_int_t *deliveries)
{
    char *root = tu_tmpdir("bench-ref");
    char *cfg = tu_path(root, "pp.json");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *out = NULL, *err = NULL;
    tu_write_file(cfg, pingpong20_json, strlen(pingpong20_json));
    const char *run[] = {"run",    state,  "--config", cfg,
                         "--sync", "full", "--json",   NULL};
    ck_assert_msg(tu_run_keel(run, &out, &err) == 0, "run: %s", err);
    json_t *r = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(r);
    free(out);
    free(err);
    const char *dump[] = {"wal", "dump", wal, "--json", NULL};
    ck_assert_msg(tu_run_keel(dump, &out, &err) == 0, "dump: %s", err);
    json_int_t records = 0, boot = 0, last = 0;
    for (char *line = strtok(out, "\n"); line != NULL;
         line = strtok(NULL, "\n")) {
        json_t *rec = json_loads(line, 0, NULL);
        ck_assert_ptr_nonnull(rec);
        const char *kind = json_string_value(json_object_get(rec, "kind"));
        if (kind != NULL) {
            records++;
            boot += strcmp(kind, "kernel-op") == 0;
            last = int_at(rec, "lsn");
        }
        json_decref(rec);
    }
    /* one boot record, then one record per transaction of the run */
    ck_assert_int_eq(boot, 1);
    ck_assert_int_eq(last, records);
    ck_assert_int_eq(int_at(r, "durable_lsn"), last);
    ck_assert_int_eq(int_at(r, "transactions"), records - 1);
    ck_assert_int_eq(int_at(r, "cranks"), 2 * 20 + 1);
    *deliveries = int_at(r, "deliveries");
    json_decref(r);
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
    free(cfg);
    free(state);
    free(wal);
    return records - 1;
}

/* Under sync=full the candidate is transactions, each one WAL record that
 * is fdatasync'd, against the raw fdatasync rate: every run's
 * transactions/s must be exactly the records a run writes (counted from a
 * reference state's WAL) over its seconds, in the same ratio to its
 * round trips/s (20) and deliveries/s as those counts; and the ratio is
 * the candidate's median over the fdatasync baseline's. */
START_TEST(test_bench_pingpong_full_counts_transactions_against_fdatasync)
{
    json_int_t deliveries = 0;
    json_int_t records = reference_records(&deliveries);
    const char *w[] = {"pingpong", "--n",    "20",   "--runs",
                       "3",        "--sync", "full", NULL};
    json_t *o = bench_json(w);
    check_kernel_result(o, "pingpong", "full", "round_trips_per_s");
    /* medians: the three rates of a run are in fixed ratios, so their
     * medians come from the same run */
    assert_close(real_at(o, "transactions_per_s") * 20.0 /
                     real_at(o, "round_trips_per_s"),
                 (double)records, "transactions per bench run");
    assert_close(real_at(o, "transactions_per_s") * (double)deliveries,
                 real_at(o, "deliveries_per_s") * (double)records,
                 "transactions/deliveries");
    assert_close(real_at(o, "ratio"),
                 real_at(o, "median_per_s") / real_at(o, "baseline_per_s"),
                 "ratio");
    const json_t *runs = json_object_get(o, "runs");
    for (size_t i = 0; i < json_array_size(runs); i++) {
        const json_t *r = json_array_get(runs, i);
        /* per_s is this run's transactions/s */
        assert_close(real_at(r, "per_s") * (double)deliveries,
                     real_at(r, "deliveries_per_s") * (double)records,
                     "run transactions/deliveries");
    }
    json_decref(o);
}
END_TEST

START_TEST(test_bench_fanout_json_has_kernel_rates)
{
    const char *w[] = {"fanout", "--n",    "20",  "--runs",
                       "3",      "--sync", "off", NULL};
    json_t *o = bench_json(w);
    check_kernel_result(o, "fanout", "off", NULL);
    ck_assert_ptr_null(json_object_get(o, "round_trips_per_s"));
    /* 20 incr and 20 answers, and the bootstrap: every crank a delivery */
    ck_assert(real_at(o, "deliveries_per_s") == real_at(o, "cranks_per_s"));
    json_decref(o);
}
END_TEST

START_TEST(test_bench_chain5_json_has_kernel_rates)
{
    const char *w[] = {"chain5", "--n",    "20",  "--runs",
                       "3",      "--sync", "off", NULL};
    json_t *o = bench_json(w);
    check_kernel_result(o, "chain5", "off", "rounds_per_s");
    /* each round adds an out-of-crank transaction to its cranks */
    ck_assert(real_at(o, "transactions_per_s") > real_at(o, "cranks_per_s"));
    json_decref(o);
}
END_TEST

START_TEST(test_bench_pingpong_rss_json_has_samples)
{
    const char *w[] = {"pingpong-rss", "--n", "200", "--sync", "off", NULL};
    json_t *o = bench_json(w);
    ck_assert_str_eq(json_string_value(json_object_get(o, "workload")),
                     "pingpong-rss");
    ck_assert_str_eq(json_string_value(json_object_get(o, "sync")), "off");
    const json_t *samples = json_object_get(o, "samples");
    static const json_int_t at[] = {20, 50, 100, 200};
    ck_assert_uint_eq(json_array_size(samples), 4);
    for (size_t i = 0; i < 4; i++) {
        const json_t *s = json_array_get(samples, i);
        ck_assert_int_eq(json_integer_value(json_object_get(s, "cranks")),
                         at[i]);
        ck_assert_int_gt(json_integer_value(json_object_get(s, "vm_rss_kib")),
                         0);
        ck_assert_int_ge(json_integer_value(json_object_get(s, "vm_hwm_kib")),
                         json_integer_value(json_object_get(s, "vm_rss_kib")));
        ck_assert_int_gt(json_integer_value(json_object_get(s, "wal_bytes")),
                         0);
    }
    ck_assert(real_at(o, "rss_ratio") > 0);
    json_decref(o);
}
END_TEST

/* `soak`: the object-churn workload's store entries stay constant over
 * the run (garbage collection: each object made, passed, dropped, its
 * promise and counts deleted), with snapshots and WAL retirement on. */
START_TEST(test_bench_soak_json_entries_constant)
{
    const char *w[] = {"soak", "--cranks",   "4000",  "--sync",
                       "off",  "--workload", "churn", "--snapshot-every",
                       "1000", NULL};
    json_t *o = bench_json(w);
    ck_assert_str_eq(json_string_value(json_object_get(o, "workload")),
                     "churn");
    const json_t *samples = json_object_get(o, "samples");
    ck_assert_uint_eq(json_array_size(samples), 10);
    json_int_t first = json_integer_value(
        json_object_get(json_array_get(samples, 0), "store_entries"));
    ck_assert_int_gt(first, 0);
    for (size_t i = 0; i < 10; i++) {
        const json_t *s = json_array_get(samples, i);
        ck_assert_int_eq(json_integer_value(json_object_get(s, "cranks")),
                         (json_int_t)(400 * (i + 1)));
        ck_assert_int_eq(
            json_integer_value(json_object_get(s, "store_entries")), first);
        ck_assert_int_gt(json_integer_value(json_object_get(s, "vm_rss_kib")),
                         0);
    }
    ck_assert(real_at(o, "entries_ratio") == 1.0);
    json_decref(o);
}
END_TEST

/* `terminate`: a vat with more keys than one cleanup batch holds goes in
 * several records, none over the batch bound (1 MiB of write-set plus one
 * unit), timed in keys/s against lmdb-put of as many keys. */
START_TEST(test_bench_terminate_json_bounds_records)
{
    char *root = tu_tmpdir("bench");
    const char *args[] = {"bench", "terminate", "--n",   "40000", "--runs",
                          "3",     "--json",    "--dir", root,    NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_msg(tu_count_lines(out) == 2, "not two lines: %s", out);
    char *nl = strchr(out, '\n');
    *nl = '\0';
    json_t *r = json_loads(out, 0, NULL);
    json_t *recs = json_loads(nl + 1, 0, NULL);
    ck_assert_msg(json_is_object(r) && json_is_object(recs), "%s", out);
    ck_assert_str_eq(json_string_value(json_object_get(r, "workload")),
                     "terminate");
    ck_assert_str_eq(json_string_value(json_object_get(r, "baseline")),
                     "lmdb-put");
    ck_assert_int_eq(json_integer_value(json_object_get(r, "n")), 40000);
    ck_assert(real_at(r, "median_per_s") > 0 && real_at(r, "ratio") > 0);
    ck_assert_uint_eq(json_array_size(json_object_get(r, "runs")), 3);
    json_int_t n = json_integer_value(json_object_get(recs, "records"));
    json_int_t most =
        json_integer_value(json_object_get(recs, "max_record_bytes"));
    ck_assert_msg(n >= 3, "40,000 keys in %lld record(s): more than a batch",
                  (long long)n);
    ck_assert_msg(most > 0 && most <= (1 << 20) + 4096,
                  "largest record %lld bytes, over the batch bound",
                  (long long)most);
    ck_assert_uint_eq(dir_entries(root), 0); /* B5 */
    json_decref(r);
    json_decref(recs);
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* `audit`: the recovery audit of a whole pingpong log, in transactions/s
 * against lmdb-put of as many puts as the log has cranks; one result. */
START_TEST(test_bench_audit_json_counts_transactions)
{
    const char *words[] = {"audit", "--n", "200", "--runs", "3", NULL};
    json_t *o = bench_json(words);
    ck_assert_str_eq(json_string_value(json_object_get(o, "workload")),
                     "audit");
    ck_assert_str_eq(json_string_value(json_object_get(o, "baseline")),
                     "lmdb-put");
    ck_assert_str_eq(json_string_value(json_object_get(o, "candidate")),
                     "transactions");
    ck_assert(real_at(o, "median_per_s") > 0 && real_at(o, "ratio") > 0);
    ck_assert(real_at(o, "median_per_s") == real_at(o, "transactions_per_s"));
    /* a pingpong of 100 rounds: about 200 cranks, each one transaction */
    ck_assert_int_ge(json_integer_value(json_object_get(o, "n")), 200);
    ck_assert_uint_eq(json_array_size(json_object_get(o, "runs")), 3);
    json_decref(o);
}
END_TEST

START_TEST(test_bench_help_lists_kernel_workloads)
{
    static const char *const names[] = {
        "\n  pingpong ",  "\n  fanout ", "\n  chain5 ", "\n  pingpong-rss ",
        "\n  terminate ", "\n  audit ",  "\n  soak "};
    char *out = NULL;
    const char *args[] = {"bench", "--help", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, NULL), 0);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ck_assert_msg(strstr(out, names[i]) != NULL, "no%s in: %s", names[i],
                      out);
    }
    free(out);
}
END_TEST

START_TEST(test_bench_kernel_usage_errors_exit_two)
{
    static const struct {
        const char *args[8];
        const char *needle;
    } cases[] = {
        {{"bench", "pingpong", "--n", "0", NULL}, "--n"},
        {{"bench", "fanout", "--sync", "sometimes", NULL}, "--sync"},
        {{"bench", "chain5", "--runs", "2", NULL}, "--runs"},
        {{"bench", "pingpong-rss", "--sync", "all", NULL}, "--sync"},
        {{"bench", "pingpong-rss", "--n", "99", NULL}, "--n"},
        {{"bench", "terminate", "--runs", "1", NULL}, "--runs"},
        {{"bench", "terminate", "--n", "0", NULL}, "--n"},
        {{"bench", "audit", "--runs", "2", NULL}, "--runs"},
        {{"bench", "soak", "--cranks", "10", NULL}, "--cranks"},
        {{"bench", "soak", "--workload", "x", NULL}, "--workload"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(cases[i].args, &out, &err);
        ck_assert_msg(rc == 2, "case %zu: exit %d", i, rc);
        ck_assert_msg(strstr(err, cases[i].needle) != NULL, "case %zu: %s", i,
                      err);
        ck_assert_str_eq(out, "");
        free(out);
        free(err);
    }
}
END_TEST

Suite *bench_suite(void);

Suite *bench_suite(void)
{
    Suite *s = suite_create("bench");
    TCase *tc = tcase_create("kernel");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_bench_pingpong_json_has_kernel_rates);
    tcase_add_test(
        tc, test_bench_pingpong_full_counts_transactions_against_fdatasync);
    tcase_add_test(tc, test_bench_fanout_json_has_kernel_rates);
    tcase_add_test(tc, test_bench_chain5_json_has_kernel_rates);
    tcase_add_test(tc, test_bench_soak_json_entries_constant);
    tcase_add_test(tc, test_bench_pingpong_rss_json_has_samples);
    tcase_add_test(tc, test_bench_terminate_json_bounds_records);
    tcase_add_test(tc, test_bench_audit_json_counts_transactions);
    tcase_add_test(tc, test_bench_help_lists_kernel_workloads);
    tcase_add_test(tc, test_bench_kernel_usage_errors_exit_two);
    suite_add_tcase(s, tc);
    return s;
}
