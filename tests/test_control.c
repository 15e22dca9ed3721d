/*
 * tests/test_control.c — the control socket (host/control.c) through real
 * `keel run --forever` child processes and real Unix sockets: every
 * request, the socket's mode and the STATE permission check, a stale
 * socket replaced, peer credentials (as root: a client of another uid,
 * the filesystem opened up for it on purpose), malformed and overlong
 * lines, a client that never reads, 1,000 connections, the CLI against a
 * live kernel, and kill -9 while clients wait: every client sees the end
 * and every acknowledged send is in the state afterwards; the metrics and
 * subscribe-events requests (events matched against the WAL, a subscriber
 * that never reads dropped), and `keel metrics` / `keel watch --json`.
 *
 * Invariants:
 *   TC1 No timing assertions: waits are bounded polls that fail the test
 *       only when something never happens (WAIT_MAX_MS).
 *   TC2 Every child started is reaped: a failing assertion kills it in
 *       the fixture's teardown (fx_free).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"
#include "tests/opsutil.h"
#include "tests/testutil.h"

#define WAIT_MAX_MS 20000

static const char counter_json[] =
    "{\"bootstrap\": \"driver\", \"vats\": {"
    "\"driver\": {\"builtin\": \"counter_driver\","
    " \"params\": {\"target\": \"counter\", \"incrs\": 3}},"
    "\"counter\": {\"builtin\": \"counter\"}}}";

typedef struct fixture {
    char *root, *state, *config, *out, *err, *sock;
    pid_t pid;
} fixture;

static void fx_init(fixture *fx)
{
    memset(fx, 0, sizeof(*fx));
    fx->root = tu_tmpdir("ctl");
    fx->state = tu_path(fx->root, "st");
    fx->config = tu_path(fx->root, "counter.json");
    fx->out = tu_path(fx->root, "run.out");
    fx->err = tu_path(fx->root, "run.err");
    fx->sock = tu_path(fx->state, "control.sock");
    tu_write_file(fx->config, counter_json, strlen(counter_json));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A connected socket to path, or -1 (errno set). */
static int dial(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return -1;
    }
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    return s;
}

/* Start `keel run STATE --forever --sync SYNC` (with --config the first
 * time); with wait, until its socket answers. */
static void fx_start(fixture *fx, const char *sync, int wait)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    struct stat st;
    int booted = stat(fx->state, &st) == 0;
    if (pid == 0) {
        int o = open(fx->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(fx->err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        if (booted) {
            execl(KEEL_BIN, KEEL_BIN, "run", fx->state, "--forever", "--sync",
                  sync, (char *)NULL);
        }
        execl(KEEL_BIN, KEEL_BIN, "run", fx->state, "--config", fx->config,
              "--forever", "--sync", sync, (char *)NULL);
        _exit(127);
    }
    fx->pid = pid;
    for (long waited = 0; wait; waited += 10) {
        int s = dial(fx->sock);
        if (s >= 0) {
            close(s);
            break;
        }
        ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0,
                      "keel run exited before its socket answered");
        ck_assert_msg(waited < WAIT_MAX_MS, "the socket never answered");
        sleep_ms(10);
    }
}

/* Wait for the child to exit. @return its wait status. */
static int fx_reap(fixture *fx)
{
    int st = 0;
    for (long waited = 0;; waited += 10) {
        pid_t got = waitpid(fx->pid, &st, WNOHANG);
        if (got == fx->pid) {
            fx->pid = 0;
            return st;
        }
        if (waited > WAIT_MAX_MS) {
            kill(fx->pid, SIGKILL);
            waitpid(fx->pid, &st, 0);
            fx->pid = 0;
            ck_abort_msg("keel run did not exit");
        }
        sleep_ms(10);
    }
}

static char *read_text(const char *path)
{
    size_t len = 0;
    char *t = (char *)tu_read_file(path, &len);
    ck_assert_ptr_nonnull(t);
    t[len] = '\0';
    return t;
}

static void fx_free(fixture *fx)
{
    if (fx->pid > 0) { /* TC2 */
        kill(fx->pid, SIGKILL);
        waitpid(fx->pid, NULL, 0);
    }
    tu_rmrf(fx->root);
    free(fx->root);
    free(fx->state);
    free(fx->config);
    free(fx->out);
    free(fx->err);
    free(fx->sock);
}

static void send_all(int s, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = send(s, buf, len, MSG_NOSIGNAL);
        ck_assert_msg(w > 0, "send: %s", strerror(errno));
        buf += w;
        len -= (size_t)w;
    }
}

/* The next line from s as JSON; NULL at the end of the connection. */
static json_t *read_answer(int s)
{
    char line[1 << 20];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        int pr = poll(&p, 1, WAIT_MAX_MS);
        ck_assert_msg(pr == 1, "no answer within %d ms", WAIT_MAX_MS);
        char c;
        ssize_t n = recv(s, &c, 1, 0);
        if (n <= 0) {
            ck_assert_msg(len == 0, "the connection ended inside a line");
            return NULL;
        }
        if (c == '\n') {
            json_error_t je;
            json_t *o = json_loadb(line, len, 0, &je);
            ck_assert_msg(o != NULL, "answer not JSON: %s", je.text);
            return o;
        }
        ck_assert_uint_lt(len, sizeof(line));
        line[len++] = c;
    }
}

static json_t *call(int s, const char *req)
{
    send_all(s, req, strlen(req));
    send_all(s, "\n", 1);
    json_t *a = read_answer(s);
    ck_assert_msg(a != NULL, "the connection ended before answering %s", req);
    return a;
}

static int is_ok(const json_t *a)
{
    return json_is_true(json_object_get(a, "ok"));
}

static const char *err_code(const json_t *a)
{
    const char *c =
        json_string_value(json_object_get(json_object_get(a, "error"), "code"));
    return c != NULL ? c : "";
}

static const char *str_at(const json_t *o, const char *f)
{
    const char *s = json_string_value(json_object_get(o, f));
    ck_assert_msg(s != NULL, "no string field %s", f);
    return s;
}

/* Ask for the status until the bootstrap's work is done (run queue empty). */
static void wait_quiet(int s)
{
    for (long waited = 0;; waited += 10) {
        json_t *a = call(s, "{\"v\":1,\"id\":0,\"op\":\"status\"}");
        json_int_t q = json_integer_value(
            json_object_get(json_object_get(a, "status"), "run_queue"));
        json_decref(a);
        if (q == 0) {
            return;
        }
        ck_assert_msg(waited < WAIT_MAX_MS, "the run queue never emptied");
        sleep_ms(10);
    }
}

/* ---- every request ---------------------------------------------------- */

START_TEST(test_control_requests)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    ck_assert_int_ge(s, 0);
    wait_quiet(s);
    json_t *a = call(s, "{\"v\":1,\"id\":\"a\",\"op\":\"status\"}");
    ck_assert(is_ok(a));
    ck_assert_str_eq(str_at(a, "id"), "a");
    ck_assert(
        json_is_true(json_object_get(json_object_get(a, "status"), "booted")));
    json_decref(a);

    a = call(s, "{\"v\":1,\"id\":2,\"op\":\"vats\"}");
    ck_assert(is_ok(a));
    ck_assert_uint_eq(json_array_size(json_object_get(a, "vats")), 2);
    json_decref(a);

    a = call(s, "{\"v\":1,\"id\":3,\"op\":\"send\",\"vat\":\"counter\","
                "\"method\":\"incr\",\"args\":{\"n\":10},\"wait\":true}");
    ck_assert_msg(is_ok(a), "send: %s", err_code(a));
    ck_assert_str_eq(str_at(a, "state"), "queued");
    char kp[32];
    snprintf(kp, sizeof(kp), "%s", str_at(a, "promise"));
    json_decref(a);
    a = read_answer(s); /* the settlement */
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "id")), 3);
    ck_assert_str_eq(str_at(a, "state"), "fulfilled");
    /* the driver added 1 three times */
    ck_assert_int_eq(json_integer_value(
                         json_object_get(json_object_get(a, "body"), "value")),
                     13);
    json_decref(a);

    char req[256];
    snprintf(req, sizeof(req),
             "{\"v\":1,\"id\":4,\"op\":\"inspect\",\"kref\":\"%s\"}", kp);
    a = call(s, req);
    ck_assert(is_ok(a));
    json_t *ref = json_object_get(a, "ref");
    ck_assert_str_eq(str_at(ref, "kind"), "promise");
    ck_assert_str_eq(str_at(ref, "state"), "fulfilled");
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":5,\"op\":\"inspect\",\"vat\":\"counter\","
                "\"vref\":\"o+0\"}");
    ck_assert(is_ok(a));
    ref = json_object_get(a, "ref");
    ck_assert_str_eq(str_at(ref, "owner"), "counter");
    /* a vat's root is pinned by the host (GC) and has its counts shown */
    ck_assert(json_is_true(json_object_get(ref, "pinned")));
    ck_assert(json_is_integer(
        json_object_get(json_object_get(ref, "refcount"), "reachable")));
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":6,\"op\":\"inspect\",\"kref\":\"kp999999\"}");
    ck_assert_str_eq(err_code(a), "not_found");
    json_decref(a);

    a = call(s, "{\"v\":1,\"id\":7,\"op\":\"checkpoint\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    char *snap = tu_path(fx.root, "live.ksnap");
    snprintf(req, sizeof(req),
             "{\"v\":1,\"id\":8,\"op\":\"snapshot\",\"path\":\"%s\"}", snap);
    a = call(s, req);
    ck_assert_msg(is_ok(a), "snapshot: %s", err_code(a));
    json_decref(a);
    const char *verify[] = {"snapshot", "verify", snap, NULL};
    ck_assert_int_eq(tu_run_keel(verify, NULL, NULL), 0);
    a = call(s, "{\"v\":1,\"id\":9,\"op\":\"snapshot\",\"path\":\"rel\"}");
    ck_assert_str_eq(err_code(a), "bad_request");
    json_decref(a);

    a = call(s, "{\"v\":1,\"id\":10,\"op\":\"graph\"}");
    ck_assert(is_ok(a));
    ck_assert(strstr(str_at(a, "dot"), "digraph keel") != NULL);
    json_decref(a);

    a = call(s, "{\"v\":1,\"id\":11,\"op\":\"restart-vat\",\"vat\":\"x\"}");
    ck_assert_str_eq(err_code(a), "not_found");
    json_decref(a);
    a = call(s,
             "{\"v\":1,\"id\":12,\"op\":\"terminate-vat\",\"vat\":\"nope\"}");
    ck_assert_str_eq(err_code(a), "not_found");
    json_decref(a);
    a = call(s,
             "{\"v\":1,\"id\":13,\"op\":\"terminate-vat\",\"vat\":\"driver\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":14,\"op\":\"send\",\"vat\":\"driver\","
                "\"method\":\"x\",\"args\":{}}");
    ck_assert_str_eq(err_code(a), "not_found");
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":15,\"op\":\"frobnicate\"}");
    ck_assert_str_eq(err_code(a), "unknown_op");
    json_decref(a);
    a = call(s, "{\"v\":2,\"id\":16,\"op\":\"status\"}");
    ck_assert_str_eq(err_code(a), "bad_version");
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":17,\"op\":\"send\",\"vat\":\"counter\"}");
    ck_assert_str_eq(err_code(a), "bad_request");
    json_decref(a);

    a = call(s, "{\"v\":1,\"id\":18,\"op\":\"stop\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    ck_assert_ptr_null(read_answer(s)); /* then the end */
    close(s);
    int st = fx_reap(&fx);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
    char *out = read_text(fx.out);
    ck_assert_msg(strstr(out, "stopped: control") != NULL, "%s", out);
    free(out);
    struct stat sst;
    ck_assert_int_ne(lstat(fx.sock, &sst), 0); /* removed */
    /* stopped: the state says the driver is terminated, the count is 16 */
    const char *vats[] = {"vats", fx.state, "--json", NULL};
    char *vout = NULL;
    ck_assert_int_eq(tu_run_keel(vats, &vout, NULL), 0);
    ck_assert(strstr(vout, "\"terminated\"") != NULL);
    free(vout);
    free(snap);
    fx_free(&fx);
}
END_TEST

/* ---- the socket's file and the STATE check ---------------------------- */

START_TEST(test_control_socket_mode_stale_and_open_state)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    struct stat st;
    ck_assert_int_eq(lstat(fx.sock, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(stat(fx.state, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0077, 0);
    /* kill -9 leaves the socket file: the next run replaces it */
    kill(fx.pid, SIGKILL);
    fx_reap(&fx);
    ck_assert_int_eq(lstat(fx.sock, &st), 0);
    ck_assert_int_lt(dial(fx.sock), 0); /* nothing listens */
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    ck_assert_int_ge(s, 0);
    json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":\"stop\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    close(s);
    fx_reap(&fx);
    /* a STATE others can enter is refused, naming the chmod */
    ck_assert_int_eq(chmod(fx.state, 0755), 0);
    fx_start(&fx, "full", 0);
    int wst = fx_reap(&fx);
    ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 1, "0x%x", wst);
    char *err = read_text(fx.err);
    ck_assert_msg(strstr(err, "chmod 700") != NULL, "stderr: %s", err);
    tu_assert_one_error_line(err);
    free(err);
    ck_assert_int_ne(lstat(fx.sock, &st), 0);
    fx_free(&fx);
}
END_TEST

/* CT2: as root, a client of another uid. The filesystem layer (STATE 0700,
 * the socket 0600) would stop it first, so it is opened up on purpose to
 * reach the SO_PEERCRED check. Not root: skipped, said so. */
START_TEST(test_control_peer_credentials)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_control_peer_credentials: not root, skipped\n");
        return;
    }
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    ck_assert_int_eq(chmod(fx.root, 0711), 0);
    ck_assert_int_eq(chmod(fx.state, 0711), 0);
    ck_assert_int_eq(chmod(fx.sock, 0666), 0);
    pid_t c = fork();
    ck_assert_int_ge(c, 0);
    if (c == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            _exit(3);
        }
        int s = dial(fx.sock);
        if (s < 0) {
            _exit(4);
        }
        const char *req = "{\"v\":1,\"id\":1,\"op\":\"status\"}\n";
        (void)!send(s, req, strlen(req), MSG_NOSIGNAL);
        char buf[64];
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, WAIT_MAX_MS) != 1) {
            _exit(5);
        }
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        _exit(n <= 0 ? 0 : 6); /* refused: the end, no answer */
    }
    int cst = 0;
    waitpid(c, &cst, 0);
    ck_assert_msg(WIFEXITED(cst) && WEXITSTATUS(cst) == 0,
                  "the other uid's client: exit %d", WEXITSTATUS(cst));
    /* the kernel's own uid is still served */
    int s = dial(fx.sock);
    json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":\"stop\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    close(s);
    fx_reap(&fx);
    char *err = read_text(fx.err);
    ck_assert_msg(strstr(err, "refused a connection from uid 65534") != NULL,
                  "stderr: %s", err);
    free(err);
    chmod(fx.state, 0700);
    fx_free(&fx);
}
END_TEST

/* ---- robustness ------------------------------------------------------- */

START_TEST(test_control_malformed_long_and_partial_lines)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    ck_assert_int_ge(s, 0);
    /* malformed JSON: an error, and the connection stays */
    json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":");
    ck_assert_str_eq(err_code(a), "parse_error");
    json_decref(a);
    a = call(s, "[1,2]");
    ck_assert_str_eq(err_code(a), "bad_request");
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":2,\"op\":\"status\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    /* a partial line, then the end: the kernel goes on */
    int p = dial(fx.sock);
    send_all(p, "{\"v\":1,\"id\":3,\"op\":\"sta", 24);
    close(p);
    /* a line over the limit: an error, then the end */
    int l = dial(fx.sock);
    size_t big = 70000;
    char *junk = malloc(big);
    memset(junk, 'x', big);
    send_all(l, junk, big);
    free(junk);
    a = read_answer(l);
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(err_code(a), "line_too_long");
    json_decref(a);
    ck_assert_ptr_null(read_answer(l));
    close(l);
    a = call(s, "{\"v\":1,\"id\":4,\"op\":\"status\"}");
    ck_assert(is_ok(a));
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(a, "control"), "connections")),
                     1);
    json_decref(a);
    close(s);
    fx_free(&fx);
}
END_TEST

START_TEST(test_control_client_that_never_reads)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    wait_quiet(s);
    int r = dial(fx.sock);
    int small = 4096;
    setsockopt(r, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    fcntl(r, F_SETFL, O_NONBLOCK);
    for (long waited = 0;; waited += 5) { /* r is accepted */
        json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":\"status\"}");
        json_int_t n = json_integer_value(
            json_object_get(json_object_get(a, "control"), "connections"));
        json_decref(a);
        if (n == 2) {
            break;
        }
        ck_assert_msg(waited < WAIT_MAX_MS, "never accepted");
        sleep_ms(5);
    }
    const char *req = "{\"v\":1,\"op\":\"graph\"}\n";
    size_t sent = 0;
    int dropped = 0;
    /* ask and never read, until the kernel drops us (bounded: 64 MiB of
     * answers asked for) */
    for (long waited = 0; !dropped && sent < 64u * 1024 * 1024;) {
        ssize_t w = send(r, req, strlen(req), MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w * 100; /* an answer is ~100x its request */
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            dropped = 1;
            break;
        }
        ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s",
                      strerror(errno));
        /* meanwhile another client is served */
        json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":\"status\"}");
        ck_assert(is_ok(a));
        dropped = json_integer_value(json_object_get(
                      json_object_get(a, "control"), "connections")) == 1;
        json_decref(a);
        sleep_ms(5);
        waited += 5;
        ck_assert_msg(waited < WAIT_MAX_MS, "never dropped");
    }
    ck_assert_msg(dropped, "a client that never reads was never dropped");
    close(r);
    json_t *a = call(s, "{\"v\":1,\"id\":2,\"op\":\"status\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    close(s);
    kill(fx.pid, SIGTERM);
    fx_reap(&fx);
    char *err = read_text(fx.err);
    ck_assert_msg(strstr(err, "does not read its answers") != NULL, "%s", err);
    free(err);
    fx_free(&fx);
}
END_TEST

START_TEST(test_control_thousand_connections)
{
    enum { N = 1000 };
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    static int fds[N + 30];
    for (int i = 0; i < N; i++) {
        fds[i] = dial(fx.sock);
        ck_assert_msg(fds[i] >= 0, "connect %d: %s", i, strerror(errno));
    }
    const char *req = "{\"v\":1,\"id\":7,\"op\":\"status\"}\n";
    for (int i = 0; i < N; i++) {
        send_all(fds[i], req, strlen(req));
    }
    for (int i = 0; i < N; i++) {
        json_t *a = read_answer(fds[i]);
        ck_assert_msg(a != NULL && is_ok(a), "connection %d", i);
        json_decref(a);
    }
    /* past KEEL_CONTROL_CONNS_MAX (1024): told so, and closed */
    int refused = 0;
    for (int i = N; i < N + 30; i++) {
        fds[i] = dial(fx.sock);
        ck_assert_int_ge(fds[i], 0);
        /* a refused one may be closed before it reads this: EPIPE */
        (void)!send(fds[i], req, strlen(req), MSG_NOSIGNAL);
        json_t *a = read_answer(fds[i]);
        ck_assert_ptr_nonnull(a);
        if (strcmp(err_code(a), "too_many_connections") == 0) {
            refused++;
            ck_assert_ptr_null(read_answer(fds[i]));
        }
        json_decref(a);
    }
    ck_assert_int_eq(refused, N + 30 - 1024);
    for (int i = 0; i < N + 30; i++) {
        close(fds[i]);
    }
    int s = dial(fx.sock);
    json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":\"stop\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    close(s);
    int st = fx_reap(&fx);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fx_free(&fx);
}
END_TEST

/* ---- kill -9 while clients wait --------------------------------------- */

START_TEST(test_control_kill9_acked_sends_survive)
{
    enum { CLIENTS = 4, SENDS = 300 };
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "group", 1);
    int s[CLIENTS];
    char line[160];
    for (int c = 0; c < CLIENTS; c++) {
        s[c] = dial(fx.sock);
        ck_assert_int_ge(s[c], 0);
    }
    for (int i = 0; i < SENDS; i++) {
        for (int c = 0; c < CLIENTS; c++) {
            int n = snprintf(line, sizeof(line),
                             "{\"v\":1,\"id\":%d,\"op\":\"send\",\"vat\":"
                             "\"counter\",\"method\":\"incr\",\"args\":"
                             "{\"n\":1}}\n",
                             i);
            send_all(s[c], line, (size_t)n);
        }
    }
    /* some acknowledgements (a quarter of the sends of client 0), then
     * kill -9 with the rest in flight */
    json_t *acked = json_array();
    while (json_array_size(acked) < SENDS / 4) {
        json_t *a = read_answer(s[0]);
        ck_assert_ptr_nonnull(a);
        ck_assert(is_ok(a));
        json_array_append(acked, json_object_get(a, "promise"));
        json_decref(a);
    }
    kill(fx.pid, SIGKILL);
    fx_reap(&fx);
    for (int c = 0; c < CLIENTS; c++) {
        json_t *a;
        while ((a = read_answer(s[c])) != NULL) { /* each sees the end */
            ck_assert_msg(is_ok(a), "%s", err_code(a));
            json_array_append(acked, json_object_get(a, "promise"));
            json_decref(a);
        }
        close(s[c]);
    }
    /* every acknowledged send is in the state after the restart */
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    o.create = 0;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_kernel_open(fx.state, &o, &k, &d), KEEL_OK);
    size_t i;
    json_t *kp;
    json_array_foreach(acked, i, kp)
    {
        char *body = NULL;
        int st = keel_kernel_promise(k, json_string_value(kp), &body, &d);
        ck_assert_msg(st >= 0, "acknowledged %s lost: %s",
                      json_string_value(kp), d.msg);
        free(body);
    }
    fprintf(stderr, "kill -9: %zu of %d sends acknowledged, all recovered\n",
            json_array_size(acked), CLIENTS * SENDS);
    ck_assert_int_eq(keel_kernel_close(k, &d), KEEL_OK);
    json_decref(acked);
    fx_free(&fx);
}
END_TEST

/* ---- the CLI against a live kernel ------------------------------------ */

START_TEST(test_control_cli_live)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "group", 1);
    char *out = NULL, *err = NULL;
    const char *status[] = {"status", fx.state, "--json", NULL};
    ck_assert_int_eq(tu_run_keel(status, &out, &err), 0);
    ck_assert_msg(strstr(out, "\"booted\":true") != NULL, "%s", out);
    free(out);
    free(err);
    const char *send[] = {"send",      fx.state, "counter", "incr",
                          "{\"n\":5}", "--wait", NULL};
    ck_assert_int_eq(tu_run_keel(send, &out, &err), 0);
    ck_assert_msg(strstr(out, "fulfilled: {\"value\":") != NULL, "%s", out);
    free(out);
    free(err);
    const char *inspect[] = {"inspect", fx.state, "counter",
                             "o+0",     "--json", NULL};
    ck_assert_int_eq(tu_run_keel(inspect, &out, &err), 0);
    ck_assert_msg(strstr(out, "\"owner\":\"counter\"") != NULL, "%s", out);
    free(out);
    free(err);
    const char *graph[] = {"graph", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(graph, &out, &err), 0);
    ck_assert(strncmp(out, "digraph keel {", 14) == 0);
    free(out);
    free(err);
    char *snap = tu_path(fx.root, "cli.ksnap");
    const char *create[] = {"snapshot", "create", fx.state, snap, NULL};
    ck_assert_int_eq(tu_run_keel(create, &out, &err), 0);
    free(out);
    free(err);
    const char *stop[] = {"stop", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(stop, &out, &err), 0);
    free(out);
    free(err);
    int st = fx_reap(&fx);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* stopped: the same commands read the state; stop says none runs */
    ck_assert_int_eq(tu_run_keel(inspect, &out, &err), 0);
    ck_assert_msg(strstr(out, "\"owner\":\"counter\"") != NULL, "%s", out);
    free(out);
    free(err);
    ck_assert_int_eq(tu_run_keel(stop, &out, &err), 1);
    ck_assert_msg(strstr(err, "no kernel is running") != NULL, "%s", err);
    free(out);
    free(err);
    free(snap);
    fx_free(&fx);
}
END_TEST

/* ---- metrics and subscribe-events ------------------------------------- */

/* The control object of a status answer's field f. */
static json_int_t ctl_count(int s, const char *f)
{
    json_t *a = call(s, "{\"v\":1,\"id\":0,\"op\":\"status\"}");
    ck_assert_msg(is_ok(a), "status: %s", err_code(a));
    json_int_t n =
        json_integer_value(json_object_get(json_object_get(a, "control"), f));
    json_decref(a);
    return n;
}

/* Wait until the kernel counts want event subscribers. */
static void wait_subscribers(int s, json_int_t want)
{
    for (long waited = 0; ctl_count(s, "subscribers") != want; waited += 5) {
        ck_assert_msg(waited < WAIT_MAX_MS, "never %lld subscribers",
                      (long long)want);
        sleep_ms(5);
    }
}

/* The `metrics` answer's text (malloc'd), checked as exposition text. */
static char *metrics_text(int s)
{
    json_t *a = call(s, "{\"v\":1,\"id\":\"m\",\"op\":\"metrics\"}");
    ck_assert_msg(is_ok(a), "metrics: %s", err_code(a));
    char *t = strdup(str_at(a, "metrics"));
    json_decref(a);
    ou_check_exposition(t);
    return t;
}

static void send_wait(int s, int n)
{
    char req[160];
    snprintf(req, sizeof(req),
             "{\"v\":1,\"id\":%d,\"op\":\"send\",\"vat\":\"counter\","
             "\"method\":\"incr\",\"args\":{\"n\":%d},\"wait\":true}",
             100 + n, n);
    json_t *a = call(s, req);
    ck_assert_msg(is_ok(a), "send: %s", err_code(a));
    json_decref(a);
    a = read_answer(s); /* the settlement */
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(str_at(a, "state"), "fulfilled");
    json_decref(a);
}

START_TEST(test_control_metrics_request)
{
    /* no --metrics-listen: the socket's metrics are there all the same */
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    ck_assert_int_ge(s, 0);
    wait_quiet(s);
    char *t0 = metrics_text(s);
    double cranks0 = ou_sample(t0, "keel_cranks_total");
    double ops0 = ou_sample(t0, "keel_transactions_total{kind=\"kernel-op\"}");
    double durable0 = ou_sample(t0, "keel_durable_lsn");
    ck_assert_msg(cranks0 >= 1, "no keel_cranks_total in:\n%s", t0);
    for (int i = 1; i <= 4; i++) {
        send_wait(s, i);
    }
    char *t1 = metrics_text(s);
    /* each send: its own record and the crank delivering it */
    ck_assert_msg(ou_sample(t1, "keel_cranks_total") >= cranks0 + 4,
                  "cranks %g then:\n%s", cranks0, t1);
    ck_assert_msg(
        ou_sample(t1, "keel_transactions_total{kind=\"kernel-op\"}") >=
            ops0 + 4,
        "kernel-op %g then:\n%s", ops0, t1);
    ck_assert_msg(ou_sample(t1, "keel_durable_lsn") >= durable0 + 8,
                  "durable %g then:\n%s", durable0, t1);
    ck_assert_msg(ou_sample(t1, "keel_vat_deliveries_total{vat=\"counter\"}") >=
                      4,
                  "%s", t1);
    free(t0);
    free(t1);
    close(s);
    kill(fx.pid, SIGTERM);
    fx_reap(&fx);
    fx_free(&fx);
}
END_TEST

START_TEST(test_control_subscribe_events_match_the_wal)
{
    /* no --event-log: the socket's events are there all the same */
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    int e = dial(fx.sock);
    ck_assert(s >= 0 && e >= 0);
    wait_quiet(s);
    json_t *a = call(e, "{\"v\":1,\"id\":\"sub\",\"op\":\"subscribe-events\"}");
    ck_assert_msg(is_ok(a), "subscribe-events: %s", err_code(a));
    ck_assert(json_is_true(json_object_get(a, "subscribed")));
    json_int_t from = json_integer_value(json_object_get(a, "durable_lsn"));
    json_decref(a);
    a = call(e, "{\"v\":1,\"id\":\"again\",\"op\":\"subscribe-events\"}");
    ck_assert_str_eq(err_code(a), "exists");
    json_decref(a);
    enum { SENDS = 5 };
    for (int i = 1; i <= SENDS; i++) {
        send_wait(s, i);
    }
    a = call(s, "{\"v\":1,\"id\":\"stop\",\"op\":\"stop\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    close(s);
    /* every event line until the kernel closes the connection */
    json_int_t lsns[256];
    char kinds[256][16];
    size_t n = 0, incr = 0;
    for (json_t *ev; (ev = read_answer(e)) != NULL; json_decref(ev)) {
        ck_assert_msg(json_object_get(ev, "id") == NULL,
                      "an answer among the events");
        const char *what = str_at(ev, "event");
        if (strcmp(what, "transaction") != 0) {
            continue;
        }
        ck_assert_uint_lt(n, 256);
        lsns[n] = json_integer_value(json_object_get(ev, "lsn"));
        snprintf(kinds[n], sizeof(kinds[n]), "%s", str_at(ev, "kind"));
        const char *m = json_string_value(json_object_get(ev, "method"));
        incr += m != NULL && strcmp(m, "incr") == 0;
        n++;
    }
    close(e);
    int st = fx_reap(&fx);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_uint_eq(incr, SENDS); /* the crank delivering each send */
    /* the lines' LSNs and kinds are exactly the WAL's records after the
     * subscription, in order */
    char *wal = tu_path(fx.state, "wal");
    char *out = NULL, *err = NULL;
    const char *dump[] = {"wal", "dump", wal, "--json", NULL};
    ck_assert_int_eq(tu_run_keel(dump, &out, &err), 0);
    size_t i = 0;
    for (char *line = strtok(out, "\n"); line != NULL;
         line = strtok(NULL, "\n")) {
        json_t *r = json_loads(line, 0, NULL);
        ck_assert_ptr_nonnull(r);
        json_t *lsn = json_object_get(r, "lsn");
        if (json_is_integer(lsn) && json_integer_value(lsn) > from) {
            ck_assert_msg(i < n, "WAL record %lld has no event line",
                          (long long)json_integer_value(lsn));
            ck_assert_int_eq(json_integer_value(lsn), lsns[i]);
            ck_assert_str_eq(str_at(r, "kind"), kinds[i]);
            i++;
        }
        json_decref(r);
    }
    ck_assert_uint_eq(i, n);
    ck_assert_uint_ge(n, 2 * SENDS); /* a send's record and its crank */
    free(out);
    free(err);
    free(wal);
    fx_free(&fx);
}
END_TEST

START_TEST(test_control_subscriber_that_never_reads)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "group", 1);
    int s = dial(fx.sock);
    wait_quiet(s);
    json_int_t crank0 = 0;
    {
        json_t *a = call(s, "{\"v\":1,\"id\":0,\"op\":\"status\"}");
        crank0 = json_integer_value(
            json_object_get(json_object_get(a, "status"), "crank"));
        json_decref(a);
    }
    int e = dial(fx.sock);
    int small = 4096;
    setsockopt(e, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    const char *sub = "{\"v\":1,\"id\":1,\"op\":\"subscribe-events\"}\n";
    send_all(e, sub, strlen(sub));
    wait_subscribers(s, 1);
    /* sends in batches (their answers read) until the subscriber, which
     * never reads, is dropped: ~400 bytes of events per send, so 1 MiB
     * and the socket's buffers are passed after a few thousand */
    enum { BATCH = 100, MAX_SENDS = 40000 };
    long sent = 0;
    int dropped = 0;
    static char batch[BATCH * 128];
    while (!dropped) {
        ck_assert_msg(sent < MAX_SENDS, "the subscriber was never dropped");
        size_t len = 0;
        for (int i = 0; i < BATCH; i++) {
            len += (size_t)snprintf(batch + len, sizeof(batch) - len,
                                    "{\"v\":1,\"id\":%ld,\"op\":\"send\","
                                    "\"vat\":\"counter\",\"method\":\"incr\","
                                    "\"args\":{\"n\":1}}\n",
                                    sent + i);
        }
        send_all(s, batch, len);
        for (int i = 0; i < BATCH; i++) {
            json_t *a = read_answer(s);
            ck_assert_ptr_nonnull(a);
            ck_assert_msg(is_ok(a), "send: %s", err_code(a));
            json_decref(a);
        }
        sent += BATCH;
        dropped = ctl_count(s, "subscribers") == 0;
    }
    /* the kernel finishes its work: every send delivered */
    wait_quiet(s);
    json_t *a = call(s, "{\"v\":1,\"id\":0,\"op\":\"status\"}");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(a, "status"), "crank")),
                     crank0 + sent);
    json_decref(a);
    ck_assert_int_eq(ctl_count(s, "connections"), 1);
    /* the dropped subscriber's connection ends after what was sent */
    fcntl(e, F_SETFL, 0);
    char buf[65536];
    ssize_t got;
    while ((got = recv(e, buf, sizeof(buf), 0)) > 0) {
    }
    ck_assert_int_eq(got, 0);
    close(e);
    close(s);
    kill(fx.pid, SIGTERM);
    int st = fx_reap(&fx);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *err = read_text(fx.err);
    ck_assert_msg(strstr(err, "does not read its answers") != NULL, "%s", err);
    free(err);
    fx_free(&fx);
}
END_TEST

START_TEST(test_control_cli_metrics_and_watch)
{
    fixture fx;
    fx_init(&fx);
    fx_start(&fx, "group", 1);
    int s = dial(fx.sock);
    wait_quiet(s);
    char *out = NULL, *err = NULL;
    const char *metrics[] = {"metrics", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(metrics, &out, &err), 0);
    ou_check_exposition(out);
    ck_assert_msg(ou_sample(out, "keel_cranks_total") >= 1, "%s", out);
    free(out);
    free(err);

    char *wout = tu_path(fx.root, "watch.out");
    char *werr = tu_path(fx.root, "watch.err");
    const char *watch[] = {"watch", fx.state, "--json", NULL};
    pid_t w = ou_spawn(watch, NULL, wout, werr);
    wait_subscribers(s, 1);
    for (int i = 1; i <= 3; i++) {
        send_wait(s, i);
    }
    close(s);
    const char *stop[] = {"stop", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(stop, &out, &err), 0);
    free(out);
    free(err);
    int st = fx_reap(&fx);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_eq(ou_wait(w), 0);
    char *lines = read_text(wout);
    size_t incr = 0;
    for (char *l = strtok(lines, "\n"); l != NULL; l = strtok(NULL, "\n")) {
        json_t *o = json_loads(l, 0, NULL);
        ck_assert_msg(o != NULL,
                      "watch --json printed a line that is not "
                      "JSON: %s",
                      l);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "event")));
        const char *m = json_string_value(json_object_get(o, "method"));
        incr += m != NULL && strcmp(m, "incr") == 0;
        json_decref(o);
    }
    ck_assert_uint_eq(incr, 3);
    char *we = read_text(werr);
    ck_assert_msg(strstr(we, "stopped") != NULL, "%s", we);
    /* stopped: both say so, exit 1 */
    ck_assert_int_eq(tu_run_keel(metrics, &out, &err), 1);
    ck_assert_msg(strstr(err, "no kernel is running") != NULL, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(tu_run_keel(watch, &out, &err), 1);
    ck_assert_msg(strstr(err, "no kernel is running") != NULL, "%s", err);
    free(out);
    free(err);
    free(we);
    free(lines);
    free(wout);
    free(werr);
    fx_free(&fx);
}
END_TEST

/* ---- restart-vat ------------------------------------------------------ */

static const char restart_json[] =
    "{\"bootstrap\": \"driver\", \"vats\": {"
    "\"driver\": {\"builtin\": \"counter_driver\","
    " \"params\": {\"target\": \"counter\", \"incrs\": 3}},"
    "\"counter\": {\"builtin\": \"counter\"},"
    "\"clock\": {\"builtin\": \"mixed\", \"params\": {\"role\": \"clock\"}}}}";

START_TEST(test_control_restart_vat)
{
    fixture fx;
    fx_init(&fx);
    tu_write_file(fx.config, restart_json, strlen(restart_json));
    fx_start(&fx, "full", 1);
    int s = dial(fx.sock);
    ck_assert_int_ge(s, 0);
    wait_quiet(s);
    json_t *a = call(s, "{\"v\":1,\"id\":1,\"op\":\"restart-vat\","
                        "\"vat\":\"counter\"}");
    ck_assert_msg(is_ok(a), "restart: %s", err_code(a));
    ck_assert_str_eq(str_at(a, "vat"), "counter");
    ck_assert_str_eq(str_at(a, "state"), "alive");
    json_decref(a);
    /* it answers from its vatstore: the driver's 3 go on to 3 + 10 */
    a = call(s, "{\"v\":1,\"id\":2,\"op\":\"send\",\"vat\":\"counter\","
                "\"method\":\"incr\",\"args\":{\"n\":10},\"wait\":true}");
    ck_assert_msg(is_ok(a), "send: %s", err_code(a));
    json_decref(a);
    a = read_answer(s);
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(str_at(a, "state"), "fulfilled");
    ck_assert_int_eq(json_integer_value(
                         json_object_get(json_object_get(a, "body"), "value")),
                     13);
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":3,\"op\":\"restart-vat\","
                "\"vat\":\"nope\"}");
    ck_assert_str_eq(err_code(a), "not_found");
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":4,\"op\":\"restart-vat\"}");
    ck_assert_str_eq(err_code(a), "bad_request");
    json_decref(a);
    /* ten sleeps of 1 s, armed one at a time: a timer is pending for ten
     * seconds after the run queue empties */
    for (int i = 0; i < 10; i++) {
        char req[256];
        snprintf(req, sizeof(req),
                 "{\"v\":1,\"id\":%d,\"op\":\"send\",\"vat\":\"clock\","
                 "\"method\":\"sleep\",\"args\":{\"i\":%d,\"ms\":1000}}",
                 10 + i, i);
        a = call(s, req);
        ck_assert_msg(is_ok(a), "sleep: %s", err_code(a));
        json_decref(a);
    }
    wait_quiet(s);
    a = call(s, "{\"v\":1,\"id\":30,\"op\":\"restart-vat\","
                "\"vat\":\"clock\"}");
    ck_assert_str_eq(err_code(a), "busy");
    json_decref(a);
    /* a terminated vat is not restarted */
    a = call(s, "{\"v\":1,\"id\":31,\"op\":\"terminate-vat\","
                "\"vat\":\"driver\"}");
    ck_assert(is_ok(a));
    json_decref(a);
    a = call(s, "{\"v\":1,\"id\":32,\"op\":\"restart-vat\","
                "\"vat\":\"driver\"}");
    ck_assert_str_eq(err_code(a), "not_found");
    json_decref(a);
    close(s);
    kill(fx.pid, SIGKILL);
    fx_reap(&fx);
    fx_free(&fx);
}
END_TEST

/* ---- keel bench control: its shape, at a tiny size ------------------- */

START_TEST(test_control_bench_smoke)
{
    char *root = tu_tmpdir("ctlbench");
    char *out = NULL, *err = NULL;
    const char *args[] = {
        "bench", "control", "--clients", "1,2",   "--seconds", "1", "--runs",
        "1",     "--sync",  "full",      "--dir", root,        NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    ck_assert_msg(strstr(out, "clients  1: kernel") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "clients  2: kernel") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "| echo") != NULL, "%s", out);
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
}
END_TEST

Suite *control_suite(void);

Suite *control_suite(void)
{
    Suite *s = suite_create("control");
    TCase *tc = tcase_create("control");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_control_requests);
    tcase_add_test(tc, test_control_restart_vat);
    tcase_add_test(tc, test_control_socket_mode_stale_and_open_state);
    tcase_add_test(tc, test_control_peer_credentials);
    tcase_add_test(tc, test_control_malformed_long_and_partial_lines);
    tcase_add_test(tc, test_control_client_that_never_reads);
    tcase_add_test(tc, test_control_thousand_connections);
    tcase_add_test(tc, test_control_kill9_acked_sends_survive);
    tcase_add_test(tc, test_control_cli_live);
    tcase_add_test(tc, test_control_bench_smoke);
    tcase_add_test(tc, test_control_metrics_request);
    tcase_add_test(tc, test_control_subscribe_events_match_the_wal);
    tcase_add_test(tc, test_control_subscriber_that_never_reads);
    tcase_add_test(tc, test_control_cli_metrics_and_watch);
    suite_add_tcase(s, tc);
    return s;
}
