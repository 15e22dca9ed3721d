/*
 * host/metrics.c — the numbers behind GET /metrics (host/metrics.h).
 *
 * Serving: libmicrohttpd's internal polling thread answers each request by
 * rendering the numbers under `mu`; the kernel's thread updates them under
 * the same mutex, once per batch of published observations and once per
 * gauge sample. Holding it costs a few additions per transaction, and a
 * render holds it only to format some hundred lines: a scrape never waits
 * for a crank and a crank waits at most for one render. Rendering between
 * cranks on the kernel's thread instead would make a scrape wait for the
 * crank in progress (or for a long idle slice).
 *
 * Invariants:
 *   M1 Every number is read and written under mu; a render is one
 *      consistent snapshot of them.
 *   M2 The HTTP thread never calls into the kernel: it reads only what
 *      the kernel's thread stored here.
 *   M3 Counters only grow: keel_*_total and histogram buckets are
 *      incremented, never reset, for the life of the process.
 *   M4 Label values are escaped per the exposition format (\\, \", \n);
 *      names and HELP texts are constants.
 */
#include "host/metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "common/clock.h"
#include "common/diag.h"
#include "common/strbuf.h"
#include "keel/kernel.h"
#include "keel/wal.h"

/* Checkpoint duration buckets, seconds. */
static const double ckpt_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1,
                                     0.5,   1,     5,    10};
#define CKPT_N (sizeof(ckpt_bounds) / sizeof(ckpt_bounds[0]))

typedef struct vat_m {
    char name[64];
    uint64_t deliveries;
    uint64_t ns;
} vat_m;

struct keel_metrics {
    pthread_mutex_t mu; /* M1 */
    uint64_t cranks, aborted, deliveries, terminated, ev_errors, snapshots;
    uint64_t txns[4]; /* by kind: crank, out-of-crank, kernel-op */
    uint64_t ckpt_count[CKPT_N + 1], ckpt_n, ckpt_ns;
    int have_gauges;
    keel_kernel_gauges g;
    keel_wal_sync_stats sync;
    uint64_t wal_bytes, store_bytes;
    double snapshot_at; /* monotonic seconds; 0: none this run */
    vat_m *vats;        /* by id - 1 */
    size_t nvats;
    struct MHD_Daemon *httpd;
};

int keel__metrics_new(keel_metrics **out)
{
    keel_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return KEEL_ENOMEM;
    }
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return KEEL_OK;
}

void keel__metrics_free(keel_metrics *m)
{
    if (m == NULL) {
        return;
    }
    if (m->httpd != NULL) {
        MHD_stop_daemon(m->httpd); /* joins its thread */
    }
    pthread_mutex_destroy(&m->mu);
    free(m->vats);
    free(m);
}

static double mono_s(void)
{
    return (double)keel__now_ns() / 1e9; /* CL1: an age is an interval */
}

static vat_m *vat_slot(keel_metrics *m, uint32_t id, const char *name)
{
    if (id == 0) {
        return NULL;
    }
    if (id > m->nvats) {
        vat_m *p = realloc(m->vats, id * sizeof(*p));
        if (p == NULL) {
            return NULL;
        }
        memset(p + m->nvats, 0, (id - m->nvats) * sizeof(*p));
        m->vats = p;
        m->nvats = id;
    }
    vat_m *v = &m->vats[id - 1];
    if (v->name[0] == '\0' && name != NULL) {
        snprintf(v->name, sizeof(v->name), "%s", name);
    }
    return v;
}

void keel__metrics_observe(keel_metrics *m, const keel_observation *const *obs,
                           size_t n)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        const keel_observation *ob = obs[i];
        switch (ob->what) {
        case KEEL_OBS_TXN: {
            if (ob->kind >= 1 && ob->kind <= 3) {
                m->txns[ob->kind]++;
            }
            vat_m *v = NULL;
            if (ob->kind == KEEL_WAL_CRANK) {
                m->cranks++;
            }
            if (ob->kind == KEEL_WAL_CRANK || ob->aborted) {
                m->deliveries++; /* an aborted crank delivered too */
                v = vat_slot(m, ob->vat, ob->vat_name);
            }
            if (ob->aborted) {
                m->aborted++;
            }
            if (v != NULL) {
                v->deliveries++;
                v->ns += ob->kind == KEEL_WAL_CRANK ? ob->duration_ns : 0;
            }
            break;
        }
        case KEEL_OBS_VAT_START:
            vat_slot(m, ob->vat, ob->vat_name);
            break;
        case KEEL_OBS_VAT_TERMINATE:
            m->terminated++;
            break;
        case KEEL_OBS_CHECKPOINT: {
            size_t b = 0;
            double s = (double)ob->duration_ns / 1e9;
            while (b < CKPT_N && s > ckpt_bounds[b]) {
                b++;
            }
            m->ckpt_count[b]++;
            m->ckpt_n++;
            m->ckpt_ns += ob->duration_ns;
            break;
        }
        case KEEL_OBS_SNAPSHOT:
            m->snapshots++;
            m->snapshot_at = mono_s();
            break;
        default:
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static uint64_t dir_bytes(const char *dir)
{
    uint64_t sum = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    struct stat st;
    while (d != NULL && (e = readdir(d)) != NULL) {
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(path, &st) == 0 &&
            S_ISREG(st.st_mode)) {
            sum += (uint64_t)st.st_size;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return sum;
}

void keel__metrics_sample(keel_metrics *m, keel_kernel *k,
                          const char *state_dir)
{
    keel_kernel_gauges g;
    keel_wal_sync_stats s;
    char path[4096];
    int ok = keel_kernel_gauges_get(k, &g) == KEEL_OK;
    keel_kernel_sync_stats(k, &s);
    snprintf(path, sizeof(path), "%s/wal", state_dir);
    uint64_t wal = dir_bytes(path);
    snprintf(path, sizeof(path), "%s/store", state_dir);
    uint64_t store = dir_bytes(path);
    pthread_mutex_lock(&m->mu);
    if (ok) {
        m->g = g;
        m->have_gauges = 1;
    }
    m->sync = s;
    m->wal_bytes = wal;
    m->store_bytes = store;
    pthread_mutex_unlock(&m->mu);
}

void keel__metrics_event_log_error(keel_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->ev_errors++;
    pthread_mutex_unlock(&m->mu);
}

size_t keel__metrics_escape(char *buf, size_t cap, const char *v)
{
    size_t n = 0;
    for (const char *p = v; *p != '\0'; p++) {
        const char *rep = *p == '\\'   ? "\\\\"
                          : *p == '"'  ? "\\\""
                          : *p == '\n' ? "\\n"
                                       : NULL;
        size_t l = rep != NULL ? 2 : 1;
        for (size_t i = 0; i < l; i++) {
            if (n + 1 < cap) {
                buf[n] = rep != NULL ? rep[i] : *p;
            }
            n++;
        }
    }
    if (cap > 0) {
        buf[n < cap ? n : cap - 1] = '\0';
    }
    return n;
}

static void head(keel__strbuf *o, const char *name, const char *type,
                 const char *help)
{
    keel__sb_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(keel__strbuf *o, const char *name, const char *type,
                   const char *help, uint64_t v)
{
    head(o, name, type, help);
    keel__sb_printf(o, "%s %" PRIu64 "\n", name, v);
}

int keel__metrics_render(keel_metrics *m, char **text, size_t *len)
{
    keel__strbuf o = {0};
    static const char *const kinds[] = {"", "crank", "out-of-crank",
                                        "kernel-op"};
    pthread_mutex_lock(&m->mu); /* M1 */
    scalar(&o, "keel_cranks_total", "counter", "Cranks committed.", m->cranks);
    head(&o, "keel_transactions_total", "counter",
         "Transactions committed (WAL records), by kind.");
    for (int i = 1; i <= 3; i++) {
        keel__sb_printf(&o,
                        "keel_transactions_total{kind=\"%s\"} %" PRIu64 "\n",
                        kinds[i], m->txns[i]);
    }
    scalar(&o, "keel_deliveries_total", "counter",
           "Deliveries to vats, aborted ones included.", m->deliveries);
    scalar(&o, "keel_cranks_aborted_total", "counter",
           "Cranks aborted (undone; their vat terminated).", m->aborted);
    scalar(&o, "keel_vats_terminated_total", "counter", "Vats terminated.",
           m->terminated);
    scalar(&o, "keel_snapshots_total", "counter", "Periodic snapshots written.",
           m->snapshots);
    scalar(&o, "keel_event_log_errors_total", "counter",
           "Event log lines lost to a write error.", m->ev_errors);
    if (m->have_gauges) {
        scalar(&o, "keel_run_queue_length", "gauge", "Run-queue items.",
               m->g.run_queue);
        scalar(&o, "keel_durable_lsn", "gauge",
               "Highest WAL LSN known durable.", m->g.durable_lsn);
        scalar(&o, "keel_applied_lsn", "gauge", "LSN applied to the store.",
               m->g.applied_lsn);
        scalar(&o, "keel_crank_number", "gauge", "The kernel's crank number.",
               m->g.crank);
        scalar(&o, "keel_vats_alive", "gauge", "Vats alive.", m->g.vats_alive);
    }
    head(&o, "keel_fdatasync_seconds", "histogram",
         "fdatasync latency of the WAL's record syncs.");
    static const uint64_t bounds[] = KEEL_WAL_SYNC_BUCKETS_US;
    uint64_t cum = 0;
    for (size_t i = 0; i < KEEL_WAL_SYNC_NBUCKETS; i++) {
        cum += m->sync.count[i];
        keel__sb_printf(
            &o, "keel_fdatasync_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
            (double)bounds[i] / 1e6, cum);
    }
    cum += m->sync.count[KEEL_WAL_SYNC_NBUCKETS];
    keel__sb_printf(
        &o, "keel_fdatasync_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    keel__sb_printf(&o, "keel_fdatasync_seconds_sum %.9f\n",
                    (double)m->sync.total_ns / 1e9);
    keel__sb_printf(&o, "keel_fdatasync_seconds_count %" PRIu64 "\n", cum);
    head(&o, "keel_checkpoint_seconds", "histogram",
         "Store checkpoint duration.");
    cum = 0;
    for (size_t i = 0; i < CKPT_N; i++) {
        cum += m->ckpt_count[i];
        keel__sb_printf(
            &o, "keel_checkpoint_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
            ckpt_bounds[i], cum);
    }
    cum += m->ckpt_count[CKPT_N];
    keel__sb_printf(
        &o, "keel_checkpoint_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    keel__sb_printf(&o, "keel_checkpoint_seconds_sum %.9f\n",
                    (double)m->ckpt_ns / 1e9);
    keel__sb_printf(&o, "keel_checkpoint_seconds_count %" PRIu64 "\n", cum);
    scalar(&o, "keel_wal_bytes", "gauge", "Bytes of STATE/wal on disk.",
           m->wal_bytes);
    scalar(&o, "keel_store_bytes", "gauge", "Bytes of STATE/store on disk.",
           m->store_bytes);
    if (m->snapshot_at > 0) {
        head(&o, "keel_snapshot_age_seconds", "gauge",
             "Seconds since the last periodic snapshot was written.");
        double age = mono_s() - m->snapshot_at;
        keel__sb_printf(&o, "keel_snapshot_age_seconds %.3f\n",
                        age > 0 ? age : 0.0);
    }
    head(&o, "keel_vat_deliveries_total", "counter",
         "Deliveries to a vat, aborted ones included.");
    char esc[256];
    for (size_t i = 0; i < m->nvats; i++) {
        if (m->vats[i].name[0] != '\0') {
            keel__metrics_escape(esc, sizeof(esc), m->vats[i].name); /* M4 */
            keel__sb_printf(
                &o, "keel_vat_deliveries_total{vat=\"%s\"} %" PRIu64 "\n", esc,
                m->vats[i].deliveries);
        }
    }
    head(&o, "keel_vat_delivery_seconds_total", "counter",
         "Time in a vat's committed cranks (begin to commit).");
    for (size_t i = 0; i < m->nvats; i++) {
        if (m->vats[i].name[0] != '\0') {
            keel__metrics_escape(esc, sizeof(esc), m->vats[i].name);
            keel__sb_printf(
                &o, "keel_vat_delivery_seconds_total{vat=\"%s\"} %.9f\n", esc,
                (double)m->vats[i].ns / 1e9);
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (o.oom) {
        free(o.p);
        return KEEL_ENOMEM;
    }
    *text = o.p;
    *len = o.len;
    return KEEL_OK;
}

/* ---- HTTP ---------------------------------------------------------------- */

static enum MHD_Result answer(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_len, void **state)
{
    keel_metrics *m = cls;
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)state;
    char *text = NULL;
    size_t len = 0;
    unsigned code = MHD_HTTP_OK;
    struct MHD_Response *r = NULL;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        code = MHD_HTTP_NOT_FOUND;
    } else if (keel__metrics_render(m, &text, &len) != KEEL_OK) { /* M2 */
        code = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (code == MHD_HTTP_OK) {
        r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (r != NULL) {
            MHD_add_response_header(r, "Content-Type",
                                    "text/plain; version=0.0.4; charset=utf-8");
        } else {
            free(text);
        }
    } else {
        static char msg[] = "GET /metrics only\n";
        r = MHD_create_response_from_buffer(sizeof(msg) - 1, msg,
                                            MHD_RESPMEM_PERSISTENT);
    }
    if (r == NULL) {
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

int keel__metrics_listen(keel_metrics *m, const char *addr, int allow_remote,
                         uint16_t *port, keel_diag *diag)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    char host[64];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon != NULL ? (size_t)(colon - addr) : 0;
    char *end = NULL;
    unsigned long p = colon != NULL ? strtoul(colon + 1, &end, 10) : 0;
    int bad = colon == NULL || hl == 0 || hl >= sizeof(host) ||
              colon[1] == '\0' || *end != '\0' || p > 65535;
    int loopback = 0, v6 = 0;
    if (!bad) {
        memcpy(host, addr, hl);
        host[hl] = '\0';
        if (host[0] == '[' && host[hl - 1] == ']') {
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = '\0';
            v6 = 1;
        }
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        if (!v6 && inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)p);
            loopback = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
        } else if (v6 && inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)p);
            loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
        } else {
            bad = 1;
        }
    }
    if (bad) {
        return keel__diag(diag, KEEL_EINVAL,
                          "--metrics-listen: '%s' is not HOST:PORT (a numeric "
                          "IPv4 address or [IPv6], then a port 0-65535)",
                          addr);
    }
    if (!loopback && !allow_remote) {
        return keel__diag(diag, KEEL_EINVAL,
                          "--metrics-listen: %s is not a loopback address; "
                          "metrics are served beyond this host only with "
                          "--metrics-allow-remote",
                          host);
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (v6) {
        flags |= MHD_USE_IPv6;
    }
    m->httpd = MHD_start_daemon(
        flags, (uint16_t)p, NULL, NULL, answer, m, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (m->httpd == NULL) {
        return keel__diag(diag, KEEL_EIO,
                          "--metrics-listen: cannot listen on %s (in use?)",
                          addr);
    }
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(m->httpd, MHD_DAEMON_INFO_BIND_PORT);
    *port = di != NULL ? di->port : (uint16_t)p;
    return KEEL_OK;
}
