/*
 * bench/bench_control.c — `keel bench control`: acknowledged sends per
 * second through a live kernel's control socket (a `keel run --forever`
 * child of this program, a counter vat), against a raw Unix-socket echo
 * server in this process as the baseline, with p50/p99 latency, for each
 * client count of --clients.
 *
 * Each client is a thread with its own connection that keeps --window
 * requests in flight: a send of incr({"n":1}) to the counter's root
 * object, answered by the kernel once the send is durable (CT3); the
 * baseline sends the same lines to the echo server and waits for each
 * echo. Latency is from writing a request to reading its answer.
 *
 * Invariants:
 *   BC1 Baseline and candidate alternate run by run (B1), one warm-up
 *       round of each first, uncounted (B2); the result is the median of
 *       --runs counted runs (B4), latency percentiles of the median run.
 *   BC2 An answer that is not ok fails the benchmark: every counted send
 *       was acknowledged durable.
 *   BC3 The kernel child is stopped with a `stop` request and reaped; the
 *       working directory is removed (B5).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/diag.h"
#include "tools/cli.h"

#define MAX_CLIENTS 64

static const char config[] =
    "{\"bootstrap\": \"counter\", \"vats\": {\"counter\": "
    "{\"builtin\": \"counter\"}}}";

typedef struct client {
    const char *path;
    int window;
    double seconds;
    int check_ok; /* BC2: the kernel's answers must say ok */
    uint64_t done;
    double *lat; /* seconds, one per answer */
    size_t nlat, caplat;
    int failed;
    char why[160];
} client;

static int dial(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG; /* a cut path would name another socket */
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(s);
        s = -1;
    }
    return s;
}

static const char request[] =
    "{\"v\":1,\"id\":1,\"op\":\"send\",\"vat\":\"counter\",\"method\":"
    "\"incr\",\"args\":{\"n\":1}}\n";

static void *client_main(void *arg)
{
    client *c = arg;
    int s = dial(c->path);
    if (s < 0) {
        c->failed = 1;
        snprintf(c->why, sizeof(c->why), "%s: %s", c->path, strerror(errno));
        return NULL;
    }
    size_t rl = strlen(request);
    double *sent = calloc((size_t)c->window, sizeof(double));
    char *out = malloc(rl * (size_t)c->window);
    char in[65536];
    size_t inlen = 0, head = 0, tail = 0; /* FIFO of send times */
    double t0 = keel__bench_now(), end = t0 + c->seconds;
    int stopping = 0;
    while (!c->failed && (!stopping || head != tail)) {
        double now = keel__bench_now();
        stopping = stopping || now >= end;
        if (stopping && head == tail) {
            break; /* nothing in flight: recv would wait forever */
        }
        size_t inflight = tail - head, n = 0;
        while (!stopping && inflight + n < (size_t)c->window) {
            memcpy(out + n * rl, request, rl);
            sent[(tail + n) % (size_t)c->window] = now;
            n++;
        }
        size_t off = 0;
        while (off < n * rl) {
            ssize_t w = send(s, out + off, n * rl - off, MSG_NOSIGNAL);
            if (w <= 0) {
                c->failed = 1;
                snprintf(c->why, sizeof(c->why), "send: %s", strerror(errno));
                break;
            }
            off += (size_t)w;
        }
        tail += n;
        ssize_t r = recv(s, in + inlen, sizeof(in) - inlen, 0);
        if (r <= 0) {
            c->failed = 1;
            snprintf(c->why, sizeof(c->why), "the connection ended");
            break;
        }
        inlen += (size_t)r;
        double at = keel__bench_now();
        size_t start = 0;
        char *nl;
        while ((nl = memchr(in + start, '\n', inlen - start)) != NULL) {
            size_t len = (size_t)(nl - (in + start));
            if (c->check_ok &&
                memmem(in + start, len, "\"ok\":true", 9) == NULL) {
                c->failed = 1;
                snprintf(c->why, sizeof(c->why), "answer: %.*s",
                         (int)(len < 120 ? len : 120), in + start);
                break;
            }
            if (c->nlat == c->caplat) {
                c->caplat = c->caplat == 0 ? 65536 : c->caplat * 2;
                c->lat = realloc(c->lat, c->caplat * sizeof(double));
            }
            c->lat[c->nlat++] = at - sent[head % (size_t)c->window];
            head++;
            c->done++;
            start += len + 1;
        }
        memmove(in, in + start, inlen - start);
        inlen -= start;
    }
    free(sent);
    free(out);
    close(s);
    return NULL;
}

/* ---- the echo baseline --------------------------------------------- */

typedef struct echo {
    int lfd;
    volatile int stop;
    pthread_t th;
} echo;

static void *echo_main(void *arg)
{
    echo *e = arg;
    struct pollfd p[MAX_CLIENTS + 1];
    int n = 1;
    p[0].fd = e->lfd;
    p[0].events = POLLIN;
    char buf[65536];
    while (!e->stop) {
        if (poll(p, (nfds_t)n, 50) <= 0) {
            continue;
        }
        if ((p[0].revents & POLLIN) && n <= MAX_CLIENTS) {
            int c = accept(e->lfd, NULL, NULL);
            if (c >= 0) {
                p[n].fd = c;
                p[n].events = POLLIN;
                p[n].revents = 0;
                n++;
            }
        }
        for (int i = 1; i < n; i++) {
            if (p[i].revents == 0) {
                continue;
            }
            ssize_t r = recv(p[i].fd, buf, sizeof(buf), 0);
            if (r <= 0) {
                close(p[i].fd);
                p[i] = p[--n];
                i--;
                continue;
            }
            ssize_t off = 0;
            while (off < r) {
                ssize_t w =
                    send(p[i].fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
                if (w <= 0) {
                    break;
                }
                off += w;
            }
        }
    }
    for (int i = 1; i < n; i++) {
        close(p[i].fd);
    }
    return NULL;
}

/* ---- runs ------------------------------------------------------------ */

typedef struct outcome {
    double per_s, p50_ms, p99_ms;
} outcome;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_outcome(const void *a, const void *b)
{
    return cmp_double(&((const outcome *)a)->per_s,
                      &((const outcome *)b)->per_s);
}

/* One run of nclients clients against path. */
static int one_run(const char *path, int nclients, int window, double secs,
                   int check_ok, outcome *o, keel_diag *d)
{
    client cl[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    memset(cl, 0, sizeof(cl));
    double t0 = keel__bench_now();
    for (int i = 0; i < nclients; i++) {
        cl[i].path = path;
        cl[i].window = window;
        cl[i].seconds = secs;
        cl[i].check_ok = check_ok;
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    uint64_t total = 0;
    size_t nlat = 0;
    for (int i = 0; i < nclients; i++) {
        pthread_join(th[i], NULL);
        total += cl[i].done;
        nlat += cl[i].nlat;
    }
    double el = keel__bench_now() - t0;
    int rc = KEEL_OK;
    double *all = malloc((nlat + 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < nclients; i++) {
        if (cl[i].failed && rc == KEEL_OK) {
            rc = keel__diag(d, KEEL_EIO, "client %d: %s", i, cl[i].why);
        }
        memcpy(all + k, cl[i].lat, cl[i].nlat * sizeof(double));
        k += cl[i].nlat;
        free(cl[i].lat);
    }
    qsort(all, nlat, sizeof(double), cmp_double);
    o->per_s = el > 0 ? (double)total / el : 0;
    o->p50_ms = nlat > 0 ? all[nlat / 2] * 1000.0 : 0;
    o->p99_ms = nlat > 0 ? all[(nlat * 99) / 100] * 1000.0 : 0;
    free(all);
    return rc;
}

static int parse_clients(const char *s, int *out, int *n)
{
    *n = 0;
    while (*s != '\0' && *n < 16) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > MAX_CLIENTS ||
            (*end != ',' && *end != '\0')) {
            return -1;
        }
        out[(*n)++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return *n > 0 ? 0 : -1;
}

static const keel_cli_opt opts[] = {
    {"clients", "LIST"}, {"sync", "POLICY"}, {"seconds", "S"},
    {"runs", "R"},       {"window", "W"},    {"dir", "DIR"},
};

static const keel_cli_spec spec = {
    .command = "bench control",
    .help =
        "usage: keel bench control [--clients 1,4,16] [--sync full|group]\n"
        "                          [--seconds S] [--runs R] [--window W]\n"
        "                          [--dir DIR]\n"
        "\n"
        "Acknowledged sends per second through a live kernel's control\n"
        "socket (`keel run --forever` on a fresh state in DIR, a counter\n"
        "vat; each answer sent once the send is durable under --sync),\n"
        "against a raw Unix-socket echo server of the same lines in this\n"
        "process, for each client count. Each client keeps W requests in\n"
        "flight (default 64) for S seconds (default 2) per run; R counted\n"
        "runs (default 3) after one warm-up, baseline and kernel\n"
        "alternating; medians reported, p50/p99 latency of the median run.\n"
        "\n"
        "Exit status: 0 done; 1 a run failed; 2 usage error.\n",
    .opts = opts,
    .nopts = sizeof(opts) / sizeof(opts[0]),
    .min_pos = 0,
    .max_pos = 0,
    .pos = "",
};

int keel__bench_control(int argc, char **argv)
{
    keel_cli_args a;
    keel_diag d = {0};
    int clients[16], nclients = 0;
    uint64_t secs = 2, runs = 3, window = 64;
    int rc = keel__cli_parse(&spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    const char *sync = a.val[1] != NULL ? a.val[1] : "group";
    if (parse_clients(a.val[0] != NULL ? a.val[0] : "1,4,16", clients,
                      &nclients) != 0) {
        return keel__cli_usage_error(spec.command,
                                     "--clients: expected counts 1..%d "
                                     "separated by commas",
                                     MAX_CLIENTS);
    }
    if (strcmp(sync, "full") != 0 && strcmp(sync, "group") != 0) {
        return keel__cli_usage_error(spec.command,
                                     "--sync: '%s' is not full or group", sync);
    }
    if ((a.val[2] != NULL &&
         keel__cli_parse_u64(spec.command, "seconds", a.val[2], 1, 600,
                             &secs) != KEEL_CLI_CONTINUE) ||
        (a.val[3] != NULL &&
         keel__cli_parse_u64(spec.command, "runs", a.val[3], 1, 100, &runs) !=
             KEEL_CLI_CONTINUE) ||
        (a.val[4] != NULL &&
         keel__cli_parse_u64(spec.command, "window", a.val[4], 1, 4096,
                             &window) != KEEL_CLI_CONTINUE)) {
        return KEEL_CLI_USAGE;
    }
    char *dir = NULL;
    if (keel__bench_workdir(a.val[5], &dir, &d) < 0) {
        fprintf(stderr, "keel: bench control: %s\n", d.msg);
        return KEEL_CLI_FAIL;
    }
    char state[4200], cfg[4200], sock[4300], echo_path[4200];
    snprintf(state, sizeof(state), "%s/st", dir);
    snprintf(cfg, sizeof(cfg), "%s/counter.json", dir);
    snprintf(sock, sizeof(sock), "%s/control.sock", state);
    snprintf(echo_path, sizeof(echo_path), "%s/echo.sock", dir);
    FILE *f = fopen(cfg, "w");
    if (f == NULL || fputs(config, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "keel: bench control: %s: %s\n", cfg, strerror(errno));
        return KEEL_CLI_FAIL;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO); /* its summary is not this report */
        execl("/proc/self/exe", "keel", "run", state, "--config", cfg,
              "--forever", "--sync", sync, (char *)NULL);
        _exit(127);
    }
    int s = -1;
    for (int i = 0; i < 2000 && (s = dial(sock)) < 0; i++) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    echo e = {.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, echo_path, strnlen(echo_path, sizeof(sa.sun_path) - 1));
    if (s < 0 || e.lfd < 0 ||
        bind(e.lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(e.lfd, 128) != 0) {
        fprintf(stderr,
                "keel: bench control: the kernel's socket %s or the "
                "echo socket did not come up\n",
                sock);
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    pthread_create(&e.th, NULL, echo_main, &e);
    keel_bench_env env;
    keel__bench_env(dir, &env);
    printf("cpu: %s | fs: %s | build: %s\n", env.cpu, env.fs, env.build);
    printf("control: acknowledged durable sends through STATE/control.sock "
           "(sync=%s, window %" PRIu64 ", %" PRIu64 " s x %" PRIu64
           " runs) vs a raw Unix-socket echo\n",
           sync, window, secs, runs);
    rc = KEEL_CLI_OK;
    for (int ci = 0; ci < nclients && rc == KEEL_CLI_OK; ci++) {
        outcome eo[101], ko[101];
        for (uint64_t r = 0; r <= runs && rc == KEEL_CLI_OK; r++) {
            /* BC1: r == 0 is the warm-up */
            if (one_run(echo_path, clients[ci], (int)window, (double)secs, 0,
                        &eo[r], &d) < 0 ||
                one_run(sock, clients[ci], (int)window, (double)secs, 1, &ko[r],
                        &d) < 0) {
                fprintf(stderr, "keel: bench control: %s\n", d.msg);
                rc = KEEL_CLI_FAIL;
            }
        }
        if (rc != KEEL_CLI_OK) {
            break;
        }
        qsort(eo + 1, runs, sizeof(outcome), cmp_outcome);
        qsort(ko + 1, runs, sizeof(outcome), cmp_outcome);
        outcome em = eo[1 + runs / 2], km = ko[1 + runs / 2];
        printf("  clients %2d: kernel %9.0f acked sends/s (min %.0f, max "
               "%.0f), p50 %.3f ms, p99 %.3f ms | echo %9.0f lines/s, p50 "
               "%.3f ms, p99 %.3f ms | ratio %.3f\n",
               clients[ci], km.per_s, ko[1].per_s, ko[runs].per_s, km.p50_ms,
               km.p99_ms, em.per_s, em.p50_ms, em.p99_ms,
               em.per_s > 0 ? km.per_s / em.per_s : 0.0);
        fflush(stdout);
    }
    e.stop = 1;
    pthread_join(e.th, NULL);
out:
    if (e.lfd >= 0) {
        close(e.lfd);
    }
    if (s >= 0) { /* BC3 */
        const char *stop = "{\"v\":1,\"id\":0,\"op\":\"stop\"}\n";
        (void)!send(s, stop, strlen(stop), MSG_NOSIGNAL);
        char buf[256];
        while (recv(s, buf, sizeof(buf), 0) > 0) {
        }
        close(s);
    } else {
        kill(pid, SIGTERM);
    }
    waitpid(pid, NULL, 0);
    keel__bench_rmtree(dir, &d);
    free(dir);
    return rc;
}
