/*
 * tests/opsutil.h — helpers for the suites that operate a running `keel
 * run` child (metrics, eventlog, notify): spawning it with extra
 * environment and its stderr in a file, waiting (bounded, not timed) for
 * a line on that stderr, a plain-socket HTTP GET, and a parser of the
 * Prometheus text exposition format.
 */
#ifndef KEEL_TESTS_OPSUTIL_H
#define KEEL_TESTS_OPSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A whole file as a NUL-terminated string (malloc'd; NULL if missing). */
char *ou_read_text(const char *path);

/* Pingpong with `rounds` rounds (a run to idle is 2*rounds+1 cranks). */
char *ou_pingpong_config(uint64_t rounds);

/* Start KEEL_BIN args (NULL-terminated, without argv[0]) with env
 * ("NAME=value" strings, NULL-terminated; may be NULL) added, stdout and
 * stderr appended to out_path and err_path. */
pid_t ou_spawn(const char *const *args, const char *const *env,
               const char *out_path, const char *err_path);
/* Wait for pid; @return exit status or 128+signal. */
int ou_wait(pid_t pid);
/* Poll file path (every 10 ms, at most 20 s) until it holds needle;
 * @return a malloc'd copy of the contents then, or NULL. */
char *ou_wait_for(const char *path, const char *needle);
/* The port in stderr's "metrics at http://127.0.0.1:PORT/metrics". */
unsigned ou_metrics_port(const char *err_path);

/* GET path from 127.0.0.1:port over a plain socket (HTTP/1.0); the
 * status code in *status, the body malloc'd. NULL: no connection. */
char *ou_http_get(unsigned port, const char *path, int *status);

/* Check every line of an exposition text: HELP, TYPE or a sample whose
 * metric was TYPEd before (histograms: _bucket, _sum, _count). Fails the
 * test naming the first bad line. */
void ou_check_exposition(const char *text);
/* The value of the sample `name` (exactly: name with its labels, e.g.
 * "keel_transactions_total{kind=\"crank\"}"); -1 if absent. */
double ou_sample(const char *text, const char *name);

#endif
