/*
 * tools/cmd_control.c — `keel stop`, `keel vats`, `keel inspect`,
 * `keel graph`, `keel metrics` and `keel watch`: the operator's commands
 * that ask a live kernel over STATE/control.sock (tools/ctl_client.c)
 * and, but for stop, metrics and watch, read a stopped state the same way
 * (opened read-only).
 *
 * Invariants:
 *   CM1 Against a stopped state these commands change no byte (DESIGN
 *       §2.7): the kernel is opened read_only, nothing is started.
 *   CM2 The live and the stopped answer are the same JSON object (the
 *       kernel's inspect.c builds both), so scripts need not care which.
 *   CM3 Exit status as C1: 0 answered, 1 the kernel refused or failed (no
 *       such vat or kref, locked without a socket, not running for
 *       stop, metrics and watch), 2 usage.
 *   CM4 metrics and watch exist only against a live kernel (the numbers
 *       and events are the running process's): a stopped STATE is said
 *       so in one line, exit 1, and nothing of it is opened.
 *   CM5 watch never sends a request that changes the kernel: only
 *       subscribe-events, then status once a second when it draws the
 *       summary; an event line is told from an answer by having no "id".
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "keel/keel.h"
#include "kernel/inspect.h"
#include "tools/cli.h"
#include "tools/ctl_client.h"

/* Open a stopped STATE read-only (CM1). */
static int open_ro(const char *command, const char *state, keel_kernel **k)
{
    keel_kernel_options o;
    keel_diag d = {0};
    struct stat st;
    keel_kernel_options_init(&o);
    o.create = 0;
    o.read_only = 1;
    if (stat(state, &st) != 0 && errno == ENOENT) {
        fprintf(stderr, "keel: %s: no such state directory: %s\n", command,
                state);
        return KEEL_CLI_FAIL;
    }
    int err = keel_kernel_open(state, &o, k, &d);
    if (err < 0) {
        fprintf(stderr, "keel: %s: %s\n", command, keel__cli_diag_msg(&d, err));
        return KEEL_CLI_FAIL;
    }
    return KEEL_CLI_OK;
}

/* Ask the live kernel req (stolen); its answer's field `field` (new
 * reference) into *out. */
static int ask(const char *command, int fd, json_t *req, const char *field,
               json_t **out)
{
    json_t *ans = NULL;
    *out = NULL;
    if (keel__ctl_call(command, fd, req, &ans) < 0) {
        return KEEL_CLI_FAIL;
    }
    int rc = KEEL_CLI_OK;
    if (!json_is_true(json_object_get(ans, "ok"))) {
        rc = keel__ctl_failed(command, ans);
    } else {
        *out = json_incref(json_object_get(ans, field));
    }
    json_decref(ans);
    return rc;
}

static int print_json(const json_t *o, int pretty)
{
    char *s = json_dumps(o, pretty ? JSON_INDENT(2) | JSON_SORT_KEYS
                                   : JSON_COMPACT | JSON_SORT_KEYS);
    if (s == NULL) {
        return KEEL_CLI_FAIL;
    }
    printf("%s\n", s);
    free(s);
    return KEEL_CLI_OK;
}

/* ------------------------------------------------------------------ stop */

static const keel_cli_spec stop_spec = {
    .command = "stop",
    .help = "usage: keel stop STATE\n"
            "\n"
            "Ask the kernel running on STATE (`keel run`) to stop cleanly: it\n"
            "finishes the current crank, makes everything durable, answers\n"
            "its clients, checkpoints and exits 0. Returns once it closed the\n"
            "control connection (it has stopped taking requests); the\n"
            "checkpoint and exit follow at once.\n"
            "\n"
            "Exit status: 0 stopping; 1 no kernel runs on STATE (or it runs\n"
            "with --no-control); 2 usage error.\n",
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

int keel__cli_stop(int argc, char **argv)
{
    keel_cli_args a;
    int rc = keel__cli_parse(&stop_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int fd = -1;
    int live = keel__ctl_find("stop", a.pos[0], &fd);
    if (live == 0) {
        fprintf(stderr,
                "keel: stop: no kernel is running on %s (STATE/lock is not "
                "held)\n",
                a.pos[0]);
    }
    if (live <= 0) {
        return KEEL_CLI_FAIL;
    }
    json_t *v = NULL;
    rc = ask("stop", fd, json_pack("{s:s}", "op", "stop"), "stopping", &v);
    json_decref(v);
    if (rc == KEEL_CLI_OK) {
        json_t *more = NULL;
        while (keel__ctl_read(fd, &more, 0) > 0) { /* until the end */
            json_decref(more);
        }
        printf("stopped: %s\n", a.pos[0]);
    }
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------ vats */

enum { Q_JSON, Q_NOPTS };

static const keel_cli_opt q_opts[Q_NOPTS] = {
    [Q_JSON] = {"json", NULL},
};

static const keel_cli_spec vats_spec = {
    .command = "vats",
    .help = "usage: keel vats STATE [--json]\n"
            "\n"
            "List the vats of the kernel in STATE: id, name, alive or\n"
            "terminated, root object, c-list entries. A running kernel is\n"
            "asked over STATE/control.sock; a stopped state is read without\n"
            "changing a byte.\n"
            "\n"
            "Options:\n"
            "  --json   the list as one JSON array\n"
            "\n"
            "Exit status: 0 success; 1 no such STATE, or it failed; 2 usage\n"
            "error.\n",
    .opts = q_opts,
    .nopts = Q_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

int keel__cli_vats(int argc, char **argv)
{
    keel_cli_args a;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    json_t *vats = NULL;
    int rc = keel__cli_parse(&vats_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int fd = -1;
    int live = keel__ctl_find("vats", a.pos[0], &fd);
    if (live < 0) {
        return KEEL_CLI_FAIL;
    }
    if (live > 0) {
        rc = ask("vats", fd, json_pack("{s:s}", "op", "vats"), "vats", &vats);
        close(fd);
    } else if ((rc = open_ro("vats", a.pos[0], &k)) == KEEL_CLI_OK) {
        int err = keel__k_vats_json(k, &vats, &d);
        if (err < 0) {
            fprintf(stderr, "keel: vats: %s\n", keel__cli_diag_msg(&d, err));
            rc = KEEL_CLI_FAIL;
        }
        keel_kernel_close(k, NULL);
    }
    if (rc == KEEL_CLI_OK && a.val[Q_JSON] != NULL) {
        rc = print_json(vats, 0);
    } else if (rc == KEEL_CLI_OK) {
        size_t i;
        json_t *v;
        json_array_foreach(vats, i, v)
        {
            printf("v%lld %s: %s, root %s, %lld c-list entries\n",
                   (long long)json_integer_value(json_object_get(v, "id")),
                   json_string_value(json_object_get(v, "name")),
                   json_string_value(json_object_get(v, "state")),
                   json_string_value(json_object_get(v, "root")),
                   (long long)json_integer_value(json_object_get(v, "clist")));
        }
    }
    json_decref(vats);
    return rc;
}

/* --------------------------------------------------------------- inspect */

static const keel_cli_spec inspect_spec = {
    .command = "inspect",
    .help = "usage: keel inspect STATE KREF [--json]\n"
            "       keel inspect STATE VAT VREF [--json]\n"
            "\n"
            "Show what the kernel in STATE holds of object or promise KREF\n"
            "(ko12, kp7), or of VREF (o+0, o-3, p+2) in vat VAT's c-list:\n"
            "its owner (objects), the vats whose c-lists hold it, and for a\n"
            "promise its state, decider, subscribers, the messages queued on\n"
            "it and its resolution. A running kernel is asked over\n"
            "STATE/control.sock; a stopped state is read without changing a\n"
            "byte.\n"
            "\n"
            "Options:\n"
            "  --json   one JSON object (else indented JSON)\n"
            "\n"
            "Exit status: 0 found; 1 no such STATE, vat or reference, or it\n"
            "failed; 2 usage error.\n",
    .opts = q_opts,
    .nopts = Q_NOPTS,
    .min_pos = 2,
    .max_pos = 3,
    .pos = "STATE KREF | STATE VAT VREF",
};

int keel__cli_inspect(int argc, char **argv)
{
    keel_cli_args a;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    json_t *o = NULL;
    int rc = keel__cli_parse(&inspect_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    const char *kref = a.npos == 2 ? a.pos[1] : NULL;
    const char *vat = a.npos == 3 ? a.pos[1] : NULL;
    const char *vref = a.npos == 3 ? a.pos[2] : NULL;
    int fd = -1;
    int live = keel__ctl_find("inspect", a.pos[0], &fd);
    if (live < 0) {
        return KEEL_CLI_FAIL;
    }
    if (live > 0) {
        json_t *req =
            kref != NULL
                ? json_pack("{s:s, s:s}", "op", "inspect", "kref", kref)
                : json_pack("{s:s, s:s, s:s}", "op", "inspect", "vat", vat,
                            "vref", vref);
        rc = ask("inspect", fd, req, "ref", &o);
        close(fd);
    } else if ((rc = open_ro("inspect", a.pos[0], &k)) == KEEL_CLI_OK) {
        int err = keel__k_inspect_json(k, kref, vat, vref, &o, &d);
        if (err < 0) {
            fprintf(stderr, "keel: inspect: %s\n", keel__cli_diag_msg(&d, err));
            rc = KEEL_CLI_FAIL;
        }
        keel_kernel_close(k, NULL);
    }
    if (rc == KEEL_CLI_OK) {
        rc = print_json(o, a.val[Q_JSON] == NULL);
    }
    json_decref(o);
    return rc;
}

/* ----------------------------------------------------------------- graph */

static const keel_cli_spec graph_spec = {
    .command = "graph",
    .help = "usage: keel graph STATE\n"
            "\n"
            "Print the object and promise graph of the kernel in STATE as\n"
            "Graphviz DOT (`keel graph STATE | dot -Tsvg > g.svg`): a box\n"
            "per vat, an ellipse per object with an edge from its owner, a\n"
            "diamond per promise with edges to its decider (dashed) and\n"
            "subscribers (dotted), and an edge from each vat to every kref\n"
            "in its c-list, labelled with the vref. A running kernel is\n"
            "asked over STATE/control.sock; a stopped state is read without\n"
            "changing a byte.\n"
            "\n"
            "Exit status: 0 success; 1 no such STATE, or it failed; 2 usage\n"
            "error.\n",
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

int keel__cli_graph(int argc, char **argv)
{
    keel_cli_args a;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    int rc = keel__cli_parse(&graph_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int fd = -1;
    int live = keel__ctl_find("graph", a.pos[0], &fd);
    if (live < 0) {
        return KEEL_CLI_FAIL;
    }
    if (live > 0) {
        json_t *dot = NULL;
        rc = ask("graph", fd, json_pack("{s:s}", "op", "graph"), "dot", &dot);
        close(fd);
        if (rc == KEEL_CLI_OK) {
            fputs(json_string_value(dot) != NULL ? json_string_value(dot) : "",
                  stdout);
        }
        json_decref(dot);
    } else if ((rc = open_ro("graph", a.pos[0], &k)) == KEEL_CLI_OK) {
        char *dot = NULL;
        int err = keel__k_graph_dot(k, &dot, &d);
        if (err < 0) {
            fprintf(stderr, "keel: graph: %s\n", keel__cli_diag_msg(&d, err));
            rc = KEEL_CLI_FAIL;
        } else {
            fputs(dot, stdout);
        }
        free(dot);
        keel_kernel_close(k, NULL);
    }
    return rc;
}

/* --------------------------------------------------------------- metrics */

/* CM4: connect to the kernel live on state, or say it is not running. */
static int find_live(const char *command, const char *state, int *fd)
{
    struct stat st;
    if (stat(state, &st) != 0 && errno == ENOENT) {
        fprintf(stderr, "keel: %s: no such state directory: %s\n", command,
                state);
        return KEEL_CLI_FAIL;
    }
    int live = keel__ctl_find(command, state, fd);
    if (live == 0) {
        fprintf(stderr,
                "keel: %s: no kernel is running on %s (STATE/lock is not "
                "held): metrics and events exist only while `keel run` "
                "runs\n",
                command, state);
    }
    return live > 0 ? KEEL_CLI_OK : KEEL_CLI_FAIL;
}

static const keel_cli_spec metrics_spec = {
    .command = "metrics",
    .help = "usage: keel metrics STATE\n"
            "\n"
            "Print the metrics of the kernel running on STATE (`keel run`) in\n"
            "the Prometheus text exposition format, the same text as its\n"
            "--metrics-listen endpoint serves at GET /metrics (the list is in\n"
            "docs/operations.md). Asked over STATE/control.sock, so it works\n"
            "without --metrics-listen. Counters count from the start of that\n"
            "process: a stopped STATE has none.\n"
            "\n"
            "Exit status: 0 printed; 1 no kernel runs on STATE (or it runs\n"
            "with --no-control), or it failed; 2 usage error.\n",
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

int keel__cli_metrics(int argc, char **argv)
{
    keel_cli_args a;
    int rc = keel__cli_parse(&metrics_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int fd = -1;
    if ((rc = find_live("metrics", a.pos[0], &fd)) != KEEL_CLI_OK) {
        return rc;
    }
    json_t *text = NULL;
    rc = ask("metrics", fd, json_pack("{s:s}", "op", "metrics"), "metrics",
             &text);
    close(fd);
    if (rc == KEEL_CLI_OK) {
        fputs(json_string_value(text) != NULL ? json_string_value(text) : "",
              stdout);
    }
    json_decref(text);
    return rc;
}

/* ----------------------------------------------------------------- watch */

enum { W_JSON, W_NOPTS };

static const keel_cli_opt w_opts[W_NOPTS] = {
    [W_JSON] = {"json", NULL},
};

static const keel_cli_spec watch_spec = {
    .command = "watch",
    .help =
        "usage: keel watch STATE [--json]\n"
        "\n"
        "Show the events of the kernel running on STATE as they happen\n"
        "(the control socket's subscribe-events: the event-log lines of\n"
        "docs/operations.md, each once its transaction is durable), one\n"
        "line each: LSN, crank, event, vat and method. On a terminal the\n"
        "last line is a summary refreshed in place: cranks per second,\n"
        "run-queue length and durable LSN. It ends when the kernel stops\n"
        "(or on ^C). A watcher that falls more than 1 MiB behind is\n"
        "dropped by the kernel (it never waits for one).\n"
        "\n"
        "Options:\n"
        "  --json   print the event lines verbatim (JSON, one a line) and\n"
        "           no summary\n"
        "\n"
        "Exit status: 0 the kernel stopped (or the watch was interrupted);\n"
        "1 no kernel runs on STATE (or it runs with --no-control), it\n"
        "dropped this watcher, or it failed; 2 usage error.\n",
    .opts = w_opts,
    .nopts = W_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

/* One event as a human line. */
static void print_event(const json_t *e)
{
    const char *ev = json_string_value(json_object_get(e, "event"));
    const char *vat = json_string_value(json_object_get(e, "vat"));
    const char *kind = json_string_value(json_object_get(e, "kind"));
    const char *method = json_string_value(json_object_get(e, "method"));
    printf("lsn %lld crank %lld %s",
           (long long)json_integer_value(json_object_get(e, "lsn")),
           (long long)json_integer_value(json_object_get(e, "crank")),
           ev != NULL ? ev : "?");
    if (kind != NULL) {
        printf(" %s", kind);
    }
    if (vat != NULL) {
        printf(" %s", vat);
    }
    if (method != NULL) {
        printf(".%s", method);
    } else if (json_is_true(json_object_get(e, "notify"))) {
        printf(" (notify)");
    }
    if (json_is_integer(json_object_get(e, "syscalls"))) {
        printf(" syscalls %lld",
               (long long)json_integer_value(json_object_get(e, "syscalls")));
    }
    if (json_is_integer(json_object_get(e, "duration_ns"))) {
        printf(" %.3f ms",
               (double)json_integer_value(json_object_get(e, "duration_ns")) /
                   1e6);
    }
    if (json_is_true(json_object_get(e, "aborted"))) {
        printf(" aborted");
    }
    putchar('\n');
}

int keel__cli_watch(int argc, char **argv)
{
    keel_cli_args a;
    int rc = keel__cli_parse(&watch_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int fd = -1;
    if ((rc = find_live("watch", a.pos[0], &fd)) != KEEL_CLI_OK) {
        return rc;
    }
    int json = a.val[W_JSON] != NULL;
    int tty = !json && isatty(STDOUT_FILENO);
    json_t *ans = NULL;
    if (keel__ctl_call("watch", fd,
                       json_pack("{s:s}", "op", "subscribe-events"),
                       &ans) < 0) {
        close(fd);
        return KEEL_CLI_FAIL;
    }
    if (!json_is_true(json_object_get(ans, "ok"))) {
        rc = keel__ctl_failed("watch", ans);
        json_decref(ans);
        close(fd);
        return rc;
    }
    json_decref(ans);
    if (!json) {
        fprintf(stderr, "keel: watch: watching %s (^C to end)\n", a.pos[0]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    json_int_t next_id = 1000, asked = 0;
    double last_ask = 0, last_t = 0;
    long long last_crank = -1;
    char summary[160] = "";
    for (;;) {
        if (tty && asked == 0 && keel__now_s() - last_ask >= 1.0) {
            last_ask = keel__now_s();
            asked = next_id++;
            if (keel__ctl_send(fd, json_pack("{s:s}", "op", "status"), asked) <
                0) {
                break;
            }
        }
        json_t *o = NULL;
        int r = keel__ctl_read(fd, &o, tty ? 1000 : 0);
        if (r == 0) {
            break; /* the kernel closed the connection */
        }
        if (r < 0) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (tty && poll(&p, 1, 0) == 0) {
                continue; /* the second passed without a line */
            }
            if (tty) {
                fputs("\r\033[K", stdout);
            }
            fprintf(stderr,
                    "keel: watch: the control connection failed (or sent a "
                    "line that is not JSON)\n");
            close(fd);
            return KEEL_CLI_FAIL;
        }
        if (json_object_get(o, "id") != NULL) { /* CM5: an answer */
            json_t *st = json_object_get(o, "status");
            if (json_integer_value(json_object_get(o, "id")) == asked &&
                st != NULL) {
                asked = 0;
                double t = keel__now_s();
                long long crank =
                    json_integer_value(json_object_get(st, "crank"));
                double rate = last_crank >= 0 && t > last_t
                                  ? (double)(crank - last_crank) / (t - last_t)
                                  : 0.0;
                last_crank = crank;
                last_t = t;
                snprintf(summary, sizeof(summary),
                         "-- %.0f cranks/s, run queue %lld, durable LSN %lld, "
                         "crank %lld",
                         rate,
                         (long long)json_integer_value(
                             json_object_get(st, "run_queue")),
                         (long long)json_integer_value(
                             json_object_get(st, "durable_lsn")),
                         crank);
                printf("\r\033[K%s", summary);
                fflush(stdout);
            } else if (!json_is_true(json_object_get(o, "ok"))) {
                keel__ctl_failed("watch", o);
            }
            json_decref(o);
            continue;
        }
        if (tty) {
            fputs("\r\033[K", stdout);
        }
        if (json) {
            char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (s != NULL) {
                puts(s);
                free(s);
            }
        } else {
            print_event(o);
        }
        if (tty && summary[0] != '\0') {
            fputs(summary, stdout);
            fflush(stdout);
        }
        json_decref(o);
    }
    if (tty) {
        fputs("\r\033[K", stdout);
        fflush(stdout);
    }
    close(fd);
    /* the end: a stop (its lock goes within its close) or a drop */
    for (int i = 0; i < 100; i++) {
        int again = -1;
        int live = keel__ctl_find(NULL, a.pos[0], &again);
        if (live == 0) {
            fprintf(stderr, "keel: watch: the kernel on %s stopped\n",
                    a.pos[0]);
            return KEEL_CLI_OK;
        }
        if (live > 0) {
            close(again);
            fprintf(stderr,
                    "keel: watch: the kernel on %s dropped this watcher "
                    "(it fell more than 1 MiB behind); it still runs\n",
                    a.pos[0]);
            return KEEL_CLI_FAIL;
        }
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr,
            "keel: watch: the kernel on %s closed the connection and still "
            "holds STATE/lock without answering\n",
            a.pos[0]);
    return KEEL_CLI_FAIL;
}
