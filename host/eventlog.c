/*
 * host/eventlog.c — the event log (host/eventlog.h).
 *
 * Invariants:
 *   EL1 A line is one compact JSON object and a newline. Lines are
 *       gathered in `buf` and written whole with one write(2) per batch
 *       (keel__eventlog_flush: after each batch of observations published,
 *       before a rotation, at close, or when 64 KiB are gathered) to a
 *       file opened O_APPEND: a reader never sees half of a line unless
 *       the disk ran out of room in the middle of one.
 *   EL2 Never on the durability path: the log is fed only observations
 *       already durable, after the fact, and a failed write (a full disk,
 *       EFBIG, EIO) drops the line, counts it (keel_event_log_errors_total)
 *       and is reported on stderr once per file; the kernel goes on.
 *   EL3 Rotation: before a line would take FILE past max_bytes, FILE.(i)
 *       becomes FILE.(i+1) for i = keep-1 .. 1 (FILE.keep is replaced),
 *       FILE becomes FILE.1, and a new FILE is started; the log's files
 *       never hold more than (keep + 1) * max_bytes plus one line each.
 *   EL4 Subscribers see exactly the lines the file is given, in order,
 *       whether or not the file's write succeeded.
 *   EL5 A subscriber's callback may unsubscribe itself (a control client
 *       dropped for not reading): the next subscriber is read before the
 *       callback runs. It must not unsubscribe another.
 */
#include "host/eventlog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/diag.h"
#include "keel/kernel.h"
#include "keel/wal.h"

typedef struct sub {
    struct sub *next;
    uint64_t id;
    void (*cb)(void *arg, const char *line, size_t len);
    void *arg;
} sub;

struct keel_eventlog {
    char *path; /* NULL: no file */
    int fd;
    uint64_t size;
    uint64_t max_bytes;
    uint32_t keep;
    keel_metrics *m;
    uint64_t errors;
    int reported;
    sub *subs;
    uint64_t next_id;
    char *buf; /* EL1: lines not yet written */
    size_t blen, bcap;
    size_t blines;
    time_t tsec; /* the second `tstr` was formatted for */
    char tstr[32];
};

#define FLUSH_BYTES (64u * 1024)

static int open_file(keel_eventlog *el, keel_diag *diag)
{
    el->fd = open(el->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (el->fd < 0) {
        int e = errno;
        return keel__diag(diag, KEEL_EIO, "--event-log %s: %s", el->path,
                          strerror(e));
    }
    struct stat st;
    el->size = fstat(el->fd, &st) == 0 && S_ISREG(st.st_mode)
                   ? (uint64_t)st.st_size
                   : 0;
    return KEEL_OK;
}

int keel__eventlog_open(const char *path, uint64_t max_bytes, uint32_t keep,
                        keel_metrics *m, keel_eventlog **out, keel_diag *diag)
{
    keel_eventlog *el = calloc(1, sizeof(*el));
    if (el == NULL || (path != NULL && (el->path = strdup(path)) == NULL)) {
        free(el);
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    el->fd = -1;
    el->max_bytes = max_bytes;
    el->keep = keep;
    el->m = m;
    if (path != NULL) {
        int rc = open_file(el, diag);
        if (rc < 0) {
            keel__eventlog_close(el);
            return rc;
        }
    }
    *out = el;
    return KEEL_OK;
}

void keel__eventlog_close(keel_eventlog *el)
{
    if (el == NULL) {
        return;
    }
    keel__eventlog_flush(el);
    free(el->buf);
    if (el->fd >= 0) {
        close(el->fd);
    }
    while (el->subs != NULL) {
        sub *s = el->subs;
        el->subs = s->next;
        free(s);
    }
    free(el->path);
    free(el);
}

static void failed_n(keel_eventlog *el, const char *what, int e, size_t n)
{
    el->errors += n;
    for (size_t i = 0; el->m != NULL && i < n; i++) {
        keel__metrics_event_log_error(el->m); /* EL2 */
    }
    if (!el->reported) {
        el->reported = 1;
        fprintf(stderr,
                "keel: run: --event-log %s: %s: %s; the kernel goes on, and "
                "lines lost are counted in keel_event_log_errors_total\n",
                el->path, what, strerror(e));
    }
}

static void failed(keel_eventlog *el, const char *what, int e)
{
    failed_n(el, what, e, 1);
}

void keel__eventlog_flush(keel_eventlog *el)
{
    if (el->blen == 0) {
        return;
    }
    ssize_t w = el->fd >= 0 ? write(el->fd, el->buf, el->blen) : -1;
    if (w != (ssize_t)el->blen) {
        int e = el->fd < 0 ? EBADF : w < 0 ? errno : ENOSPC; /* short: full */
        size_t done = w > 0 ? (size_t)w : 0;
        size_t lost = 0; /* lines not written whole */
        for (size_t i = done; i < el->blen; i++) {
            lost += el->buf[i] == '\n';
        }
        failed_n(el, "write", e, lost);
    }
    el->blen = 0;
    el->blines = 0;
}

/* EL3 */
static void rotate(keel_eventlog *el)
{
    size_t n = strlen(el->path) + 16;
    char *from = malloc(n), *to = malloc(n);
    if (from == NULL || to == NULL) {
        free(from);
        free(to);
        failed(el, "rotate", ENOMEM);
        return;
    }
    close(el->fd);
    el->fd = -1;
    for (uint32_t i = el->keep; i >= 1; i--) {
        snprintf(to, n, "%s.%" PRIu32, el->path, i);
        if (i > 1) {
            snprintf(from, n, "%s.%" PRIu32, el->path, i - 1);
        } else {
            snprintf(from, n, "%s", el->path);
        }
        if (rename(from, to) != 0 && errno != ENOENT) {
            failed(el, "rotate", errno);
        }
    }
    if (el->keep == 0) {
        unlink(el->path);
    }
    free(from);
    free(to);
    if (open_file(el, NULL) < 0) {
        failed(el, "reopen after rotation", errno);
    }
}

static void emit(keel_eventlog *el, json_t *o)
{
    if (o == NULL) {
        failed(el, "format", ENOMEM);
        return;
    }
    struct timespec ts; /* a timestamp, not an interval: the wall clock */
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != el->tsec || el->tstr[0] == '\0') {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(el->tstr, sizeof(el->tstr), "%Y-%m-%dT%H:%M:%S", &tm);
        el->tsec = ts.tv_sec;
    }
    char t[64];
    snprintf(t, sizeof(t), "%s.%06dZ", el->tstr, (int)(ts.tv_nsec / 1000));
    json_object_set_new(o, "time", json_string(t));
    char *s = json_dumps(o, JSON_COMPACT); /* keys in insertion order */
    json_decref(o);
    if (s == NULL) {
        failed(el, "format", ENOMEM);
        return;
    }
    size_t len = strlen(s);
    for (sub *x = el->subs, *nx; x != NULL; x = nx) { /* EL4 */
        nx = x->next; /* EL5: the callback may unsubscribe itself */
        x->cb(x->arg, s, len);
    }
    if (el->path != NULL) {
        if (el->max_bytes != 0 && el->size > 0 &&
            el->size + len + 1 > el->max_bytes) {
            keel__eventlog_flush(el);
            rotate(el);
        }
        if (el->blen + len + 1 > el->bcap) {
            size_t cap = (el->blen + len + 1) * 2;
            char *b = realloc(el->buf, cap);
            if (b == NULL) {
                failed(el, "buffer", ENOMEM);
                free(s);
                return;
            }
            el->buf = b;
            el->bcap = cap;
        }
        memcpy(el->buf + el->blen, s, len);
        el->buf[el->blen + len] = '\n';
        el->blen += len + 1;
        el->blines++;
        el->size += len + 1; /* EL3 counts what is gathered too */
        if (el->blen >= FLUSH_BYTES) {
            keel__eventlog_flush(el);
        }
    }
    free(s);
}

static const char *kind_name(int kind)
{
    return kind == KEEL_WAL_CRANK          ? "crank"
           : kind == KEEL_WAL_OUT_OF_CRANK ? "out-of-crank"
           : kind == KEEL_WAL_KERNEL_OP    ? "kernel-op"
                                           : "unknown";
}

void keel__eventlog_observe(keel_eventlog *el, const keel_observation *ob)
{
    json_t *o = NULL;
    static const char *const names[] = {[KEEL_OBS_TXN] = "transaction",
                                        [KEEL_OBS_VAT_START] = "vat_start",
                                        [KEEL_OBS_VAT_STOP] = "vat_stop",
                                        [KEEL_OBS_VAT_TERMINATE] =
                                            "vat_terminate",
                                        [KEEL_OBS_CHECKPOINT] = "checkpoint",
                                        [KEEL_OBS_SNAPSHOT] = "snapshot"};
    if (ob->what <= 0 || ob->what == KEEL_OBS_TICK ||
        ob->what > KEEL_OBS_SNAPSHOT || !keel__eventlog_active(el)) {
        return;
    }
    o = json_pack("{s:s, s:I, s:I}", "event", names[ob->what], "lsn",
                  (json_int_t)ob->lsn, "crank", (json_int_t)ob->crank);
    if (o == NULL) {
        emit(el, NULL);
        return;
    }
    if (ob->vat != 0) {
        json_object_set_new(o, "vat_id", json_integer(ob->vat));
        if (ob->vat_name != NULL) {
            json_object_set_new(o, "vat", json_string(ob->vat_name));
        }
    }
    switch (ob->what) {
    case KEEL_OBS_TXN:
        json_object_set_new(o, "kind", json_string(kind_name(ob->kind)));
        if (ob->method != NULL) {
            json_object_set_new(o, "method", json_string(ob->method));
        }
        if (ob->notify) {
            json_object_set_new(o, "notify", json_true());
        }
        json_object_set_new(o, "syscalls", json_integer(ob->syscalls));
        json_object_set_new(o, "duration_ns",
                            json_integer((json_int_t)ob->duration_ns));
        json_object_set_new(o, "aborted", json_boolean(ob->aborted));
        break;
    case KEEL_OBS_CHECKPOINT:
        json_object_set_new(o, "duration_ns",
                            json_integer((json_int_t)ob->duration_ns));
        break;
    case KEEL_OBS_SNAPSHOT:
        if (ob->path != NULL) {
            json_object_set_new(o, "path", json_string(ob->path));
        }
        break;
    default:
        break;
    }
    emit(el, o);
}

void keel__eventlog_torn(keel_eventlog *el, const keel_kernel_recovery *r)
{
    emit(el, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "event",
                       "torn_tail_repair", "segment", r->torn_segment, "offset",
                       (json_int_t)r->torn_offset, "bytes",
                       (json_int_t)r->torn_bytes, "last_lsn",
                       (json_int_t)r->wal_last_lsn, "reason", r->torn_reason));
    keel__eventlog_flush(el);
}

uint64_t keel__eventlog_subscribe(keel_eventlog *el,
                                  void (*cb)(void *arg, const char *line,
                                             size_t len),
                                  void *arg)
{
    sub *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return 0;
    }
    s->id = ++el->next_id;
    s->cb = cb;
    s->arg = arg;
    sub **p = &el->subs; /* at the end: callbacks in order of subscription */
    while (*p != NULL) {
        p = &(*p)->next;
    }
    *p = s;
    return s->id;
}

void keel__eventlog_unsubscribe(keel_eventlog *el, uint64_t id)
{
    for (sub **p = &el->subs; *p != NULL; p = &(*p)->next) {
        if ((*p)->id == id) {
            sub *s = *p;
            *p = s->next;
            free(s);
            return;
        }
    }
}

int keel__eventlog_active(const keel_eventlog *el)
{
    return el->path != NULL || el->subs != NULL;
}

uint64_t keel__eventlog_errors(const keel_eventlog *el)
{
    return el->errors;
}
