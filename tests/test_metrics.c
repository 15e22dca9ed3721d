/*
 * tests/test_metrics.c — keel's Prometheus metrics: a real `keel run`
 * child serving --metrics-listen on a free loopback port, scraped with a
 * plain-socket HTTP GET and parsed line by line (every line a HELP, TYPE
 * or sample of a TYPEd family); counters grow as the kernel works; a
 * non-loopback or malformed address is refused before STATE exists; label
 * values are escaped (rendered in-process).
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host/metrics.h"
#include "keel/kernel.h"
#include "keel/wal.h"
#include "tests/opsutil.h"
#include "tests/testutil.h"

/* Every name docs/operations.md promises (those present from the start). */
static const char *const required[] = {
    "keel_cranks_total",
    "keel_transactions_total{kind=\"crank\"}",
    "keel_transactions_total{kind=\"out-of-crank\"}",
    "keel_transactions_total{kind=\"kernel-op\"}",
    "keel_deliveries_total",
    "keel_cranks_aborted_total",
    "keel_vats_terminated_total",
    "keel_event_log_errors_total",
    "keel_run_queue_length",
    "keel_durable_lsn",
    "keel_applied_lsn",
    "keel_fdatasync_seconds_count",
    "keel_fdatasync_seconds_bucket{le=\"+Inf\"}",
    "keel_checkpoint_seconds_count",
    "keel_wal_bytes",
    "keel_store_bytes",
    "keel_vat_deliveries_total{vat=\"alice\"}",
    "keel_vat_delivery_seconds_total{vat=\"bob\"}",
};

/* Scrape until sample `name` exceeds above (bounded: 2000 tries). */
static char *scrape_past(unsigned port, const char *name, double above)
{
    for (int i = 0; i < 2000; i++) {
        int status = 0;
        char *body = ou_http_get(port, "/metrics", &status);
        ck_assert_ptr_nonnull(body);
        ck_assert_int_eq(status, 200);
        if (ou_sample(body, name) > above) {
            return body;
        }
        free(body);
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ck_abort_msg("%s never passed %f", name, above);
    return NULL;
}

START_TEST(test_metrics_scrape_live_kernel)
{
    char *root = tu_tmpdir("metrics");
    char *cfg = tu_path(root, "cluster.json");
    char *state = tu_path(root, "state");
    char *outp = tu_path(root, "out"), *errp = tu_path(root, "err");
    char *config = ou_pingpong_config(1000000000u); /* never idle */
    tu_write_file(cfg, config, strlen(config));
    char *snaps = tu_path(root, "snaps");
    const char *args[] = {"run",         state,
                          "--config",    cfg,
                          "--sync",      "group",
                          "--forever",   "--snapshot-every",
                          "2000",        "--snapshot-dir",
                          snaps,         "--metrics-listen",
                          "127.0.0.1:0", NULL};
    pid_t pid = ou_spawn(args, NULL, outp, errp);
    unsigned port = ou_metrics_port(errp);

    char *first = scrape_past(port, "keel_cranks_total", 0);
    ou_check_exposition(first);
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        ck_assert_msg(ou_sample(first, required[i]) >= 0, "missing %s in:\n%s",
                      required[i], first);
    }
    double c1 = ou_sample(first, "keel_cranks_total");
    double t1 = ou_sample(first, "keel_transactions_total{kind=\"crank\"}");
    double a1 = ou_sample(first, "keel_vat_deliveries_total{vat=\"alice\"}");
    /* every crank is a crank transaction; boot is a kernel-op */
    ck_assert(c1 == t1);
    ck_assert(ou_sample(first, "keel_transactions_total{kind=\"kernel-op\"}") >=
              1);

    /* gauges are sampled between cranks (every 200 ms at most): the WAL's
     * syncs show up once one sample saw them */
    char *second = scrape_past(port, "keel_fdatasync_seconds_count", 0);
    free(second);
    second = scrape_past(port, "keel_cranks_total", c1);
    ou_check_exposition(second);
    ck_assert(ou_sample(second, "keel_cranks_total") > c1);
    ck_assert(ou_sample(second, "keel_deliveries_total") >
              ou_sample(first, "keel_deliveries_total"));
    ck_assert(ou_sample(second, "keel_vat_deliveries_total{vat=\"alice\"}") >=
              a1);
    ck_assert(ou_sample(second, "keel_durable_lsn") >= 1);

    /* a periodic snapshot is counted and its age shown */
    char *third = scrape_past(port, "keel_snapshots_total", 0);
    ou_check_exposition(third);
    ck_assert(ou_sample(third, "keel_snapshot_age_seconds") >= 0);
    ck_assert(ou_sample(third, "keel_wal_bytes") > 0);
    ck_assert(ou_sample(third, "keel_store_bytes") > 0);
    free(third);

    int status = 0;
    char *nf = ou_http_get(port, "/other", &status);
    ck_assert_int_eq(status, 404);
    free(nf);

    kill(pid, SIGTERM);
    ck_assert_int_eq(ou_wait(pid), 0);
    free(first);
    free(second);
    free(config);
    tu_rmrf(root);
    free(root);
    free(cfg);
    free(state);
    free(snaps);
    free(outp);
    free(errp);
}
END_TEST

START_TEST(test_metrics_listen_refusals)
{
    static const struct {
        const char *addr;
        const char *says;
    } cases[] = {
        {"192.0.2.1:9100", "--metrics-allow-remote"},
        {"localhost:9100", "is not HOST:PORT"},
        {"127.0.0.1:99999", "is not HOST:PORT"},
        {"127.0.0.1", "is not HOST:PORT"},
    };
    char *root = tu_tmpdir("metrics-refuse");
    char *cfg = tu_path(root, "cluster.json");
    char *state = tu_path(root, "state");
    char *config = ou_pingpong_config(5);
    tu_write_file(cfg, config, strlen(config));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[] = {
            "run",         state, "--config", cfg, "--metrics-listen",
            cases[i].addr, NULL};
        char *err = NULL;
        int rc = tu_run_keel(args, NULL, &err);
        ck_assert_msg(rc == 2, "%s: exit %d, %s", cases[i].addr, rc, err);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, cases[i].says) != NULL, "%s: %s",
                      cases[i].addr, err);
        struct stat st;
        ck_assert_msg(stat(state, &st) != 0, "STATE created for %s",
                      cases[i].addr);
        free(err);
    }
    free(config);
    tu_rmrf(root);
    free(root);
    free(cfg);
    free(state);
}
END_TEST

START_TEST(test_metrics_label_values_escaped)
{
    char buf[64];
    ck_assert_uint_eq(keel__metrics_escape(buf, sizeof(buf), "a\"b\\c\nd"), 10);
    ck_assert_str_eq(buf, "a\\\"b\\\\c\\nd");
    /* truncated, still terminated, the full length returned */
    ck_assert_uint_eq(keel__metrics_escape(buf, 4, "a\"b\\c"), 7);
    ck_assert_str_eq(buf, "a\\\"");

    keel_metrics *m = NULL;
    ck_assert_int_eq(keel__metrics_new(&m), KEEL_OK);
    keel_observation ob = {.what = KEEL_OBS_TXN,
                           .kind = KEEL_WAL_CRANK,
                           .lsn = 2,
                           .crank = 1,
                           .vat = 3,
                           .vat_name = "we\"ird\\name",
                           .method = "m",
                           .duration_ns = 1500000000u};
    const keel_observation *obs[] = {&ob, &ob};
    keel__metrics_observe(m, obs, 2);
    char *text = NULL;
    size_t len = 0;
    ck_assert_int_eq(keel__metrics_render(m, &text, &len), KEEL_OK);
    ck_assert_uint_eq(len, strlen(text));
    ou_check_exposition(text);
    ck_assert(ou_sample(text, "keel_vat_deliveries_total{vat=\"we\\\"ird\\\\"
                              "name\"}") == 2);
    ck_assert(ou_sample(text, "keel_vat_delivery_seconds_total{vat=\"we\\\""
                              "ird\\\\name\"}") == 3.0);
    ck_assert(ou_sample(text, "keel_cranks_total") == 2);
    free(text);
    keel__metrics_free(m);
}
END_TEST

Suite *metrics_suite(void);
Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_metrics_scrape_live_kernel);
    tcase_add_test(tc, test_metrics_listen_refusals);
    tcase_add_test(tc, test_metrics_label_values_escaped);
    suite_add_tcase(s, tc);
    return s;
}
