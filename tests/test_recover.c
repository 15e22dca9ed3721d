/*
 * tests/test_recover.c — the recovery audit (keel/recovery.h), the salvage
 * of a log damaged mid-way (recovery/truncate.c) and `keel recover`.
 *
 * The audit must pass on real workloads (the built-in pingpong, counter
 * fan-out and chain5 clusters; vat termination by failed deliveries and by
 * exit; out-of-crank resolves from timers and thread-pool work; a late
 * subscribe; a crash before any checkpoint; a base snapshot), and must
 * catch each kind of violation at the right LSN. Violations are crafted:
 * after a real pingpong, write-sets are built by hand and appended to the
 * kernel's WAL with a correctly chained k.hash, so that the one invariant
 * under test fires and not the hash check; a sound crafted twin passes,
 * which shows the scaffolding is right. A terminated vat's cleanup in
 * batches is crafted the same way: sound, and with each flaw A10 names.
 * The salvage is checked on one segment and on many, refused past a
 * checkpoint, left alone on a torn tail, and cut short at every I/O
 * operation (then finished the same).
 */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "keel/keel.h"
#include "keel/kernel.h"
#include "keel/recovery.h"
#include "keel/snapshot.h"
#include "keel/wal.h"

#include "common/diag.h"
#include "common/io_fault.h"
#include "kernel/kernel_internal.h"
#include "recovery/recovery_internal.h"
#include "store/activity.h"
#include "store/keyspace.h"
#include "tests/testutil.h"
#include "vats/vutil.h"

Suite *recover_suite(void);

#define RUN_TIMEOUT_MS 60000u

#define PINGPONG_SQ                                                         \
    "{'bootstrap':'alice','vats':{"                                         \
    "'alice':{'builtin':'pingpong','params':{'role':'alice','rounds':%d}}," \
    "'bob':{'builtin':'pingpong','params':{'role':'bob'}}}}"

/* ======================================================================== */
/* a test vat: the edges of promise settlement                             */
/* ======================================================================== */

/*
 * "t_probe". Vat a (bootstrap) on bootstrap, with peer = its other slot:
 *   p1: subscribe and resolve in one crank (notify to a subscriber the
 *       record never showed);
 *   p2: sent to the peer in "take", then resolved: the peer subscribes to
 *       an already settled promise (late subscribe: notify at once);
 *   p3: result of "ask": the peer answers from a timer, out of crank;
 *   on notify of p3: "die" with result p4, subscribed: the peer exits, and
 *       its termination rejects p4, which it decided;
 *   on notify of p4: "ask" again with result p5, subscribed: the peer is
 *       gone, so the kernel rejects p5 undelivered.
 */
typedef struct probe {
    char peer[KEEL_VREF_MAX];
    char p3[KEEL_VREF_MAX];
    char p4[KEEL_VREF_MAX];
} probe;

static int probe_start(keel_syscall *sys, const char *params, void **state)
{
    *state = calloc(1, sizeof(probe));
    return *state != NULL ? 0 : -1;
}

static void probe_stop(void *state)
{
    free(state);
}

static const keel_capdata *data(const char *json, keel_capdata *cd)
{
    memset(cd, 0, sizeof(*cd));
    cd->body.ptr = json;
    cd->body.len = strlen(json);
    return cd;
}

static void answer_later(void *arg, keel_syscall *sys)
{
    keel_capdata cd;
    keel_syscall_resolve(sys, arg, 0, data("{\"late\":1}", &cd));
    free(arg);
}

static int probe_bootstrap(probe *p, keel_syscall *sys, const keel_delivery *d)
{
    keel_capdata cd;
    char p1[KEEL_VREF_MAX], p2[KEEL_VREF_MAX];
    const char *body = "{\"p\":{\"@slot\":0}}";
    const char *slots[] = {p2};
    keel_capdata args = {{body, strlen(body)}, slots, 1};
    for (size_t i = 0; i < d->args.nslots; i++) {
        if (strcmp(d->args.slots[i], "o+0") != 0) {
            snprintf(p->peer, sizeof(p->peer), "%s", d->args.slots[i]);
        }
    }
    int rc = keel_syscall_alloc_promise(sys, p1);
    if (rc == 0) {
        rc = keel_syscall_subscribe(sys, p1);
    }
    if (rc == 0) {
        rc = keel_syscall_resolve(sys, p1, 0, data("{\"p\":1}", &cd));
    }
    if (rc == 0) {
        rc = keel_syscall_alloc_promise(sys, p2);
    }
    if (rc == 0) {
        rc = keel_syscall_send(sys, p->peer, "take", &args, NULL);
    }
    if (rc == 0) {
        rc = keel_syscall_resolve(sys, p2, 0, data("{\"p\":2}", &cd));
    }
    if (rc == 0) {
        rc = keel_syscall_alloc_promise(sys, p->p3);
    }
    if (rc == 0) {
        rc = keel_syscall_send(sys, p->peer, "ask", data("{}", &cd), p->p3);
    }
    if (rc == 0) {
        rc = keel_syscall_subscribe(sys, p->p3);
    }
    return rc;
}

/* Send method to the peer with a fresh result promise, subscribed. */
static int probe_ask(probe *p, keel_syscall *sys, const char *method,
                     char *result)
{
    keel_capdata cd;
    int rc = keel_syscall_alloc_promise(sys, result);
    if (rc == 0) {
        rc = keel_syscall_send(sys, p->peer, method, data("{}", &cd), result);
    }
    if (rc == 0) {
        rc = keel_syscall_subscribe(sys, result);
    }
    return rc;
}

static int probe_notify(probe *p, keel_syscall *sys, const keel_delivery *d)
{
    char p5[KEEL_VREF_MAX];
    if (strcmp(d->promise, p->p3) == 0) {
        return probe_ask(p, sys, "die", p->p4);
    }
    if (strcmp(d->promise, p->p4) == 0) {
        return probe_ask(p, sys, "ask", p5);
    }
    return 0;
}

static int probe_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    probe *p = state;
    keel_capdata cd;
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return probe_notify(p, sys, d);
    }
    if (strcmp(d->method, "bootstrap") == 0) {
        return probe_bootstrap(p, sys, d);
    }
    if (strcmp(d->method, "take") == 0 && d->args.nslots == 1) {
        return keel_syscall_subscribe(sys, d->args.slots[0]);
    }
    if (strcmp(d->method, "ask") == 0 && d->result != NULL) {
        char *r = strdup(d->result);
        return r != NULL ? keel_vat_timer(sys, 1, answer_later, r) : -1;
    }
    if (strcmp(d->method, "die") == 0) {
        return keel_syscall_exit(sys, 1, data("{}", &cd));
    }
    return -1;
}

static const keel_vat_ops t_probe = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_probe",
    .start = probe_start,
    .deliver = probe_deliver,
    .stop = probe_stop,
};

/* chain5's provider and keyring, made to fail on "bogus" as a vat with a
 * bug would (the built-ins refuse a message they do not know and live). */
static int fragile_deliver(const keel_vat_ops *real, void *state,
                           keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind == KEEL_DELIVER_MESSAGE && strcmp(d->method, "bogus") == 0) {
        return KEEL_EINVAL;
    }
    return real->deliver(state, sys, d);
}

static int fragile_provider_deliver(void *state, keel_syscall *sys,
                                    const keel_delivery *d)
{
    return fragile_deliver(&keel__vat_provider, state, sys, d);
}

static int fragile_keyring_deliver(void *state, keel_syscall *sys,
                                   const keel_delivery *d)
{
    return fragile_deliver(&keel__vat_keyring, state, sys, d);
}

static int fragile_provider_start(keel_syscall *sys, const char *params,
                                  void **state)
{
    return keel__vat_provider.start(sys, params, state);
}

static void fragile_provider_stop(void *state)
{
    keel__vat_provider.stop(state);
}

static int fragile_keyring_start(keel_syscall *sys, const char *params,
                                 void **state)
{
    return keel__vat_keyring.start(sys, params, state);
}

static void fragile_keyring_stop(void *state)
{
    keel__vat_keyring.stop(state);
}

static const keel_vat_ops t_fragile_provider = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_fragile_provider",
    .start = fragile_provider_start,
    .deliver = fragile_provider_deliver,
    .stop = fragile_provider_stop,
};

static const keel_vat_ops t_fragile_keyring = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_fragile_keyring",
    .start = fragile_keyring_start,
    .deliver = fragile_keyring_deliver,
    .stop = fragile_keyring_stop,
};

static const keel_vat_ops *resolve_vat(void *arg, const char *name)
{
    if (strcmp(name, "t_fragile_provider") == 0) {
        return &t_fragile_provider;
    }
    if (strcmp(name, "t_fragile_keyring") == 0) {
        return &t_fragile_keyring;
    }
    return strcmp(name, "t_probe") == 0 ? &t_probe : NULL;
}

/* ======================================================================== */
/* helpers                                                                  */
/* ======================================================================== */

/* s with every ' turned into ". malloc'd. */
static char *sq(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    for (char *p = d; *p != '\0'; p++) {
        if (*p == '\'') {
            *p = '"';
        }
    }
    return d;
}

static void kopts(keel_kernel_options *o)
{
    keel_kernel_options_init(o);
    o->resolve_vat = resolve_vat;
}

static keel_kernel *kopen(const char *state, const keel_kernel_options *o)
{
    keel_kernel *k = NULL;
    keel_diag d = {0};
    int rc = keel_kernel_open(state, o, &k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s: %s", keel_err_name(rc), d.msg);
    return k;
}

static void kclose(keel_kernel *k)
{
    keel_diag d = {0};
    int rc = keel_kernel_close(k, &d);
    ck_assert_msg(rc == KEEL_OK, "close: %s: %s", keel_err_name(rc), d.msg);
}

static void kboot(keel_kernel *k, const char *config_sq)
{
    keel_diag d = {0};
    char *cfg = sq(config_sq);
    int rc = keel_kernel_boot(k, cfg, NULL, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s: %s", keel_err_name(rc), d.msg);
    free(cfg);
}

static void krun(keel_kernel *k)
{
    keel_diag d = {0};
    keel_run_stats s;
    keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS};
    int rc = keel_kernel_run(k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s: %s", keel_err_name(rc), d.msg);
    ck_assert(s.idle);
}

/* Boot config_sq in a new state, run it until idle, close. */
static void boot_run(const char *state, const char *config_sq)
{
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(state, &o);
    kboot(k, config_sq);
    krun(k);
    kclose(k);
}

static char *pingpong_sq(int rounds)
{
    static char buf[512];
    snprintf(buf, sizeof(buf), PINGPONG_SQ, rounds);
    return buf;
}

/* Run the audit; it must run (rc OK). */
static keel_audit_report audit(const char *state, const char *base)
{
    keel_audit_options o;
    keel_audit_report rep;
    keel_diag d = {0};
    keel_audit_options_init(&o);
    o.base_snapshot = base;
    int rc = keel_audit(state, &o, &rep, &d);
    ck_assert_msg(rc == KEEL_OK, "audit: %s: %s", keel_err_name(rc), d.msg);
    return rep;
}

static keel_audit_report audit_sound(const char *state, const char *base)
{
    keel_audit_report rep = audit(state, base);
    ck_assert_msg(rep.violations == 0, "violation at LSN %" PRIu64 ": %s",
                  rep.violation_lsn, rep.violation);
    ck_assert_uint_gt(rep.transactions, 0);
    ck_assert_uint_gt(rep.keys, 0);
    return rep;
}

static keel__store *store_open(const char *state)
{
    keel__store_options so;
    keel__store *s = NULL;
    keel_diag d = {0};
    char *dir = tu_path(state, "store");
    keel__store_options_init(&so);
    so.create = 0;
    int rc = keel__store_open(dir, &so, 0, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "store: %s", d.msg);
    free(dir);
    return s;
}

/* The u64 counter key (named as keel__ks_render does) holds; 0 absent. */
static uint64_t store_u64(keel__store *s, const char *key)
{
    keel_bytes v;
    keel__key k;
    ck_assert_msg(keel__ks_parse(key, &k), "%s is no key", key);
    int rc = keel__store_get(s, k.b, k.n, &v, NULL);
    ck_assert_int_ge(rc, 0);
    if (rc == 0) {
        return 0;
    }
    ck_assert_uint_eq(v.len, 8);
    return keel__ks_rd64(v.ptr);
}

/* One record as a test reads it back. */
typedef struct wrec {
    uint64_t lsn;
    char segment[64];
    uint64_t offset;
    uint32_t stored_len;
} wrec;

/* Every record of state's WAL into recs[cap]. @return the count. */
static size_t wal_records(const char *state, wrec *recs, size_t cap)
{
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    size_t n = 0;
    char *wal = tu_path(state, "wal");
    int rc = keel_wal_reader_open(wal, NULL, 0, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "reader: %s", d.msg);
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        ck_assert_uint_lt(n, cap);
        recs[n].lsn = rec.lsn;
        snprintf(recs[n].segment, sizeof(recs[n].segment), "%s", rec.segment);
        recs[n].offset = rec.offset;
        recs[n].stored_len = rec.stored_len;
        n++;
    }
    ck_assert_msg(rc == 0, "reader: %s", d.msg);
    keel_wal_reader_close(r);
    free(wal);
    return n;
}

static void flip_byte(const char *state, const char *segment, uint64_t off)
{
    char *wal = tu_path(state, "wal");
    char *path = tu_path(wal, segment);
    size_t len = 0;
    uint8_t *b = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_lt(off, len);
    b[off] ^= 0x40;
    tu_write_file(path, b, len);
    free(b);
    free(path);
    free(wal);
}

/*
 * A pingpong of `rounds` in a child that exits without closing the
 * kernel (and with checkpoints put off): the store keeps only its empty
 * first checkpoint, and everything is in the log.
 */
static void pingpong_no_checkpoint(const char *state, int rounds)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_kernel_options o;
        keel_kernel *k = NULL;
        keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS};
        keel_run_stats st;
        char *cfg = sq(pingpong_sq(rounds));
        kopts(&o);
        o.checkpoint_cranks = UINT32_MAX;
        o.checkpoint_ms = UINT32_MAX;
        int ok = keel_kernel_open(state, &o, &k, NULL) == KEEL_OK &&
                 keel_kernel_boot(k, cfg, NULL, NULL) == KEEL_OK &&
                 keel_kernel_run(k, &ro, &st, NULL) == KEEL_OK && st.idle;
        _exit(ok ? 0 : 1); /* no close: no checkpoint */
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the pingpong child failed (status %d)", status);
}

/* ======================================================================== */
/* crafted transactions                                                     */
/* ======================================================================== */

/* One op of a crafted write-set (sorted by moving it: no pointers in). */
typedef struct cop {
    size_t klen;
    uint8_t key[96];
    int put; /* 0: a delete */
    size_t vlen;
    uint8_t val[256];
} cop;

typedef struct craft {
    char *state;
    keel_wal *w;
    uint64_t kid;
    uint64_t hash, crank, lsn;
    uint64_t next_kp, unresolved, rq_tail, rq_head;
    cop ops[48];
    size_t nops;
    /* what the crafted records wrote (the store holds the state before
     * them), so craft_commit can keep rc.<kref> as the kernel does */
    keel__store *s;
    cop mem[256];
    size_t nmem;
} craft;

/* A real pingpong of 3 rounds, closed; then the WAL opened for crafting. */
static void craft_init(craft *c)
{
    keel_wal_options wo;
    keel_wal_open_info info;
    keel_diag d = {0};
    memset(c, 0, sizeof(*c));
    char *root = tu_tmpdir("recover-craft");
    c->state = tu_path(root, "state");
    free(root);
    boot_run(c->state, pingpong_sq(3));
    keel__store *s = store_open(c->state);
    c->kid = keel__store_kernel_id(s);
    c->hash = store_u64(s, "k.hash");
    c->crank = store_u64(s, "k.crank");
    c->next_kp = store_u64(s, "k.next.kp");
    c->unresolved = store_u64(s, "k.unresolved");
    c->rq_tail = store_u64(s, "k.rq.tail");
    c->rq_head = store_u64(s, "k.rq.head");
    c->s = s;
    keel_wal_options_init(&wo);
    wo.kernel_id = c->kid;
    char *wal = tu_path(c->state, "wal");
    int rc = keel_wal_open(wal, &wo, &c->w, &info, &d);
    ck_assert_msg(rc == KEEL_OK, "wal: %s", d.msg);
    c->lsn = info.last_lsn;
    free(wal);
}

static void craft_close(craft *c)
{
    ck_assert_int_eq(keel_wal_close(c->w, NULL), KEEL_OK);
    c->w = NULL;
}

static void craft_free(craft *c)
{
    if (c->w != NULL) {
        craft_close(c);
    }
    if (c->s != NULL) {
        keel__store_close(c->s);
    }
    char *root = strdup(c->state);
    *strrchr(root, '/') = '\0';
    tu_rmrf(root);
    free(root);
    free(c->state);
}

static cop *op_add_raw(craft *c, const void *key, size_t n)
{
    ck_assert_uint_lt(c->nops, sizeof(c->ops) / sizeof(c->ops[0]));
    cop *o = &c->ops[c->nops++];
    memset(o, 0, sizeof(*o));
    ck_assert_uint_le(n, sizeof(o->key));
    memcpy(o->key, key, n);
    o->klen = n;
    return o;
}

/* An op on key, named as keel__ks_render names it ("c.1.k.kp7"). */
static cop *op_add(craft *c, const char *key)
{
    keel__key k;
    ck_assert_msg(keel__ks_parse(key, &k), "%s is no key", key);
    return op_add_raw(c, k.b, k.n);
}

/*
 * A value given as keel__ks_render_value shows it, in the key's binary
 * form (store/keyspace.h): numbers, vat states, refs, the cleanup cursor
 * "<crank> <key>"; a value that does not parse goes in as its bytes, so
 * that a test can write a bad one ("zombie").
 */
static size_t value_of(const uint8_t *k, size_t kn, const char *val,
                       uint8_t *out, size_t cap)
{
    keel__ks_key d;
    keel__kref kr;
    keel__vref vr;
    keel__key ck;
    char *end = NULL;
    size_t n = strlen(val);
    unsigned long long x = strtoull(val, &end, 10);
    int num = n > 0 && *end == '\0' && val[0] >= '0' && val[0] <= '9';
    ck_assert(keel__ks_decode(k, kn, &d));
    switch (d.table) {
    case KS_META:
        if (d.field == KM_HASH && n == 16) {
            keel__ks_be64(out, strtoull(val, NULL, 16));
            return 8;
        }
        if (num) {
            keel__ks_be64(out, x);
            return 8;
        }
        break;
    case KS_VAT:
        if (d.field == KV_STATE &&
            (strcmp(val, "alive") == 0 || strcmp(val, "terminated") == 0)) {
            out[0] = val[0] == 'a' ? KS_ALIVE : KS_TERMINATED;
            return 1;
        }
        if (d.field == KV_ROOT && keel__ks_kref_parse(val, &kr)) {
            keel__ks_ref(out, kr.kind, kr.n);
            return KEEL__KS_REF_BYTES;
        }
        if (d.field == KV_CLEANUP && (end = strchr(val, ' ')) != NULL) {
            keel__ks_be64(out, strtoull(val, NULL, 10));
            if (end[1] == '\0') {
                return 8;
            }
            ck_assert(keel__ks_parse(end + 1, &ck));
            memcpy(out + 8, ck.b, ck.n);
            return 8 + ck.n;
        }
        if (d.field != KV_NAME && d.field != KV_SRC && num) {
            keel__ks_be64(out, x);
            return 8;
        }
        break;
    case KS_VATNAME:
    case KS_OBJECT:
        if (num) {
            keel__ks_be32(out, (uint32_t)x);
            return 4;
        }
        break;
    case KS_CLIST:
        if (d.field == KC_K && keel__ks_vref_parse(val, &vr)) {
            keel__ks_ref(out, vr.kind, vr.n);
            return KEEL__KS_REF_BYTES;
        }
        if (d.field == KC_V && keel__ks_kref_parse(val, &kr)) {
            keel__ks_ref(out, kr.kind, kr.n);
            return KEEL__KS_REF_BYTES;
        }
        break;
    default:
        break;
    }
    ck_assert_uint_lt(n, cap);
    memcpy(out, val, n);
    return n;
}

static void put_str(craft *c, const char *key, const char *val)
{
    cop *o = op_add(c, key);
    o->vlen = value_of(o->key, o->klen, val, o->val, sizeof(o->val));
    o->put = 1;
}

static void put_u64(craft *c, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    put_str(c, key, buf);
}

static void del(craft *c, const char *key)
{
    op_add(c, key);
}

static void put_bytes(craft *c, const char *key, const void *p, size_t n)
{
    cop *o = op_add(c, key);
    ck_assert_uint_le(n, sizeof(o->val));
    memcpy(o->val, p, n);
    o->put = 1;
    o->vlen = n;
}

/* A promise record. */
static void put_prom(craft *c, uint64_t n, int state, uint32_t decider,
                     const uint32_t *subs, size_t nsubs, const kmsg *queue,
                     size_t nqueue, const char *res_body)
{
    char key[32];
    kbuf b = {0};
    kprom p = {.state = state,
               .decider = decider,
               .subs = (uint32_t *)subs,
               .nsubs = nsubs,
               .queue = (kmsg *)queue,
               .nqueue = nqueue};
    p.res.method = "";
    p.res.result = "";
    p.res.body = (uint8_t *)(res_body != NULL ? res_body : "");
    p.res.body_len = res_body != NULL ? strlen(res_body) : 0;
    keel__kprom_encode(&b, &p);
    ck_assert(!b.oom);
    snprintf(key, sizeof(key), "kp.%" PRIu64, n);
    put_bytes(c, key, b.p, b.len);
    keel__kb_free(&b);
}

/* A notify run-queue item at the tail. */
static void put_notify(craft *c, uint32_t vid, uint64_t kp)
{
    char key[32], kps[32];
    kbuf b = {0};
    snprintf(kps, sizeof(kps), "kp%" PRIu64, kp);
    keel__kb_u8(&b, KITEM_NOTIFY);
    keel__kb_u32(&b, vid);
    keel__kb_str(&b, kps);
    snprintf(key, sizeof(key), "rq.%" PRIu64, c->rq_tail++);
    put_bytes(c, key, b.p, b.len);
    put_u64(c, "k.rq.tail", c->rq_tail);
    keel__kb_free(&b);
}

static int cop_cmp(const void *x, const void *y)
{
    const cop *a = x, *b = y;
    size_t an = a->klen, bn = b->klen;
    int r = memcmp(a->key, b->key, an < bn ? an : bn);
    return r != 0 ? r : (an > bn) - (an < bn);
}

static size_t encode(const cop *ops, size_t n, uint8_t *out)
{
    size_t len = 4;
    keel__put_u32(out, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        size_t kl = ops[i].klen;
        out[len] = ops[i].put ? KEEL__STORE_PUT : KEEL__STORE_DELETE;
        keel__put_u32(out + len + 1, (uint32_t)kl);
        memcpy(out + len + 5, ops[i].key, kl);
        len += 5 + kl;
        if (ops[i].put) {
            keel__put_u32(out + len, (uint32_t)ops[i].vlen);
            memcpy(out + len + 4, ops[i].val, ops[i].vlen);
            len += 4 + ops[i].vlen;
        }
    }
    return len;
}

/* key's value as the crafted records left it: 1 (in *v), 0 absent. */
static int craft_get(craft *c, const uint8_t *key, size_t n, keel_bytes *v)
{
    for (size_t i = c->nmem; i-- > 0;) {
        const cop *m = &c->mem[i];
        if (m->klen == n && memcmp(m->key, key, n) == 0) {
            *v = (keel_bytes){m->val, m->vlen};
            return m->put;
        }
    }
    int rc = keel__store_get(c->s, key, n, v, NULL);
    ck_assert_int_ge(rc, 0);
    return rc;
}

/* The rc.<kref> ops the gathered ops imply (store/keyspace.h KS4, as
 * kernel/gc.c G1 keeps them). */
static void craft_refcounts(craft *c)
{
    void *l = keel__gc_list_new();
    size_t n = c->nops;
    for (size_t i = 0; i < n; i++) {
        const cop *o = &c->ops[i];
        keel__ks_key d;
        keel_bytes old;
        if (!keel__ks_decode(o->key, o->klen, &d)) {
            continue;
        }
        if (craft_get(c, o->key, o->klen, &old) == 1) {
            keel__gc_refs(&d, old.ptr, old.len, -1, l);
        }
        if (o->put) {
            keel__gc_refs(&d, o->val, o->vlen, 1, l);
        }
    }
    keel__kref r;
    int32_t dr, dg;
    for (size_t i = 0; keel__gc_list_get(l, i, &r, &dr, &dg); i++) {
        keel__key key;
        keel_bytes v;
        uint32_t reach = 0, recog = 0;
        if (dr == 0 && dg == 0) {
            continue;
        }
        keel__ks_kref_key(&key, KS_REFCOUNT, r);
        if (craft_get(c, key.b, key.n, &v) == 1) {
            reach = keel__ks_rd32(v.ptr);
            recog = keel__ks_rd32((const uint8_t *)v.ptr + 4);
        }
        cop *o = op_add_raw(c, key.b, key.n);
        reach += (uint32_t)dr;
        recog += (uint32_t)dg;
        if (recog != 0) {
            o->put = 1;
            o->vlen = 8;
            keel__ks_be32(o->val, reach);
            keel__ks_be32(o->val + 4, recog);
        }
    }
    keel__gc_list_free(l);
}

/*
 * Commit the ops gathered as one record of kind, as the kernel would:
 * k.crank for a crank, k.hash chained over the rest (K12); bad_hash
 * writes a wrong one. @return its LSN.
 */
static uint64_t craft_commit(craft *c, int kind, int bad_hash)
{
    uint8_t enc[16384], head[17];
    char hex[17]; /* k.hash as keel__ks_render_value shows it */
    keel_diag d = {0};
    uint64_t lsn = 0;
    craft_refcounts(c);
    if (kind == KEEL_WAL_CRANK) {
        put_u64(c, "k.crank", ++c->crank);
    }
    qsort(c->ops, c->nops, sizeof(c->ops[0]), cop_cmp);
    size_t len = encode(c->ops, c->nops, enc);
    keel__put_u64(head, c->hash);
    head[8] = (uint8_t)kind;
    keel__put_u64(head + 9, c->crank);
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, head, sizeof(head));
    XXH3_64bits_update(st, enc, len);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    snprintf(hex, sizeof(hex), "%016" PRIx64, bad_hash ? h ^ 1 : h);
    put_str(c, "k.hash", hex);
    qsort(c->ops, c->nops, sizeof(c->ops[0]), cop_cmp);
    len = encode(c->ops, c->nops, enc);
    int rc = keel_wal_append(c->w, kind, c->crank, enc, len, &lsn, &d);
    ck_assert_msg(rc == KEEL_OK, "append: %s", d.msg);
    c->hash = h;
    for (size_t i = 0; i < c->nops; i++) {
        ck_assert_uint_lt(c->nmem, sizeof(c->mem) / sizeof(c->mem[0]));
        c->mem[c->nmem++] = c->ops[i];
    }
    c->nops = 0;
    c->lsn = lsn;
    return lsn;
}

/*
 * Out of crank by alice (vat 1): a new promise kpN she decides, known to
 * her as p+900 (and, with bob_too, to bob as p-900), with subscribers
 * subs and queued messages queue. @return N.
 */
static uint64_t craft_promise(craft *c, const uint32_t *subs, size_t nsubs,
                              const kmsg *queue, size_t nqueue, int bob_too)
{
    char key[64], kp[32];
    uint64_t n = c->next_kp++;
    snprintf(kp, sizeof(kp), "kp%" PRIu64, n);
    put_prom(c, n, KP_UNRESOLVED, 1, subs, nsubs, queue, nqueue, NULL);
    snprintf(key, sizeof(key), "d.1.%s", kp);
    put_str(c, key, "");
    snprintf(key, sizeof(key), "c.1.k.%s", kp);
    put_str(c, key, "p+900");
    put_str(c, "c.1.v.p+900", kp);
    if (bob_too) {
        snprintf(key, sizeof(key), "c.2.k.%s", kp);
        put_str(c, key, "p-900");
        put_str(c, "c.2.v.p-900", kp);
    }
    put_u64(c, "k.next.kp", c->next_kp);
    put_u64(c, "k.unresolved", ++c->unresolved);
    return n;
}

/* Settlement of kpN by vat `by` retiring its c-list entry (vref). */
static void craft_settle(craft *c, uint64_t n, uint32_t by, const char *vref,
                         const kmsg *keep, size_t nkeep)
{
    char key[64];
    put_prom(c, n, KP_FULFILLED, 0, NULL, 0, keep, nkeep, "{\"ok\":1}");
    snprintf(key, sizeof(key), "d.1.kp%" PRIu64, n);
    del(c, key);
    snprintf(key, sizeof(key), "c.%" PRIu32 ".k.kp%" PRIu64, by, n);
    del(c, key);
    snprintf(key, sizeof(key), "c.%" PRIu32 ".v.%s", by, vref);
    del(c, key);
    put_u64(c, "k.unresolved", --c->unresolved);
}

static void ck_violation(const char *state, uint64_t lsn, const char *what)
{
    keel_audit_report rep = audit(state, NULL);
    ck_assert_msg(rep.violations == 1,
                  "expected a violation at LSN %" PRIu64 " (%s): none", lsn,
                  what);
    ck_assert_msg(rep.violation_lsn == lsn && strstr(rep.violation, what),
                  "expected '%s' at LSN %" PRIu64 ", got LSN %" PRIu64 ": %s",
                  what, lsn, rep.violation_lsn, rep.violation);
}

/* ======================================================================== */
/* the audit on real workloads                                              */
/* ======================================================================== */

START_TEST(test_recover_audit_pingpong_passes)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    boot_run(state, pingpong_sq(40));
    keel_audit_report rep = audit_sound(state, NULL);
    ck_assert_uint_eq(rep.base_lsn, 0);
    ck_assert_uint_eq(rep.first_lsn, 1);
    ck_assert_uint_eq(rep.cranks, 81);
    ck_assert_uint_eq(rep.transactions, rep.last_lsn);
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(state, &o);
    ck_assert_uint_eq(rep.final_hash, keel_kernel_activity_hash(k));
    kclose(k);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

START_TEST(test_recover_audit_fanout_passes)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    boot_run(state, "{'bootstrap':'driver','vats':{"
                    "'driver':{'builtin':'counter_driver','params':"
                    "{'targets':['c1','c2','c3','c4'],'incrs':60}},"
                    "'c1':{'builtin':'counter'},'c2':{'builtin':'counter'},"
                    "'c3':{'builtin':'counter'},'c4':{'builtin':'counter'}}}");
    keel_audit_report rep = audit_sound(state, NULL);
    ck_assert_uint_eq(rep.cranks, 121);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

START_TEST(test_recover_audit_chain5_out_of_crank_passes)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    boot_run(state, "{'bootstrap':'coordinator','vats':{"
                    "'coordinator':{'builtin':'coordinator','params':"
                    "{'rounds':8}},"
                    "'provider':{'builtin':'provider'},"
                    "'keyring':{'builtin':'keyring'}}}");
    keel_audit_report rep = audit_sound(state, NULL);
    /* one out-of-crank resolve per round */
    ck_assert_uint_ge(rep.transactions - rep.cranks, 8);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* chain5 with the provider and the keyring killed mid-round by a message
 * they fail on: the provider's pending answer is rejected by its
 * termination, its subscriber notified; later messages are rejected. */
START_TEST(test_recover_audit_termination_passes)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    char kp[KEEL_VREF_MAX];
    keel_kernel_options o;
    keel_diag d = {0};
    kopts(&o);
    keel_kernel *k = kopen(state, &o);
    kboot(k, "{'bootstrap':'coordinator','vats':{"
             "'coordinator':{'builtin':'coordinator','params':{'rounds':3}},"
             "'provider':{'builtin':'t_fragile_provider'},"
             "'keyring':{'builtin':'t_fragile_keyring'}}}");
    /* bootstrap, then fetch: the provider now decides P1, work pending */
    ck_assert_int_eq(keel_kernel_step(k, &d), 1);
    ck_assert_int_eq(keel_kernel_step(k, &d), 1);
    ck_assert_int_eq(keel_kernel_send(k, "provider", "bogus", "{}", kp, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_kernel_send(k, "keyring", "bogus", "{}", kp, &d),
                     KEEL_OK);
    /* provider fails: terminated, P1 rejected, the coordinator notified;
     * its message again, now rejected; the keyring fails likewise */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(keel_kernel_step(k, &d), 1);
    }
    krun(k);
    kclose(k);
    keel_audit_report rep = audit_sound(state, NULL);
    ck_assert_uint_ge(rep.transactions, 8);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

START_TEST(test_recover_audit_probe_edges_pass)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    boot_run(state, "{'bootstrap':'a','vats':{'a':{'builtin':'t_probe'},"
                    "'b':{'builtin':'t_probe'}}}");
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(state, &o);
    char *json = NULL;
    ck_assert_int_eq(keel_kernel_status_json(k, &json, NULL), KEEL_OK);
    /* b exited; every promise settled */
    ck_assert_ptr_nonnull(strstr(json, "\"unresolved_promises\":0"));
    ck_assert_ptr_nonnull(strstr(json, "\"terminated\""));
    free(json);
    kclose(k);
    keel_audit_report rep = audit_sound(state, NULL);
    ck_assert_uint_gt(rep.transactions, rep.cranks); /* out of crank too */
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* A kernel that died before any checkpoint: the audit replays the whole
 * log into the store (in memory) to compare, and changes nothing. */
START_TEST(test_recover_audit_uncheckpointed_state_passes)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    pingpong_no_checkpoint(state, 15);
    keel__store *s = store_open(state);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 0);
    keel__store_close(s);
    keel_audit_report rep = audit_sound(state, NULL);
    ck_assert_uint_eq(rep.cranks, 31);
    s = store_open(state);
    ck_assert_uint_eq(keel__store_applied_lsn(s), 0); /* AU1 */
    keel__store_close(s);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* Write a snapshot of the store's checkpoint with the snapshot writer:
 * one table "data" of every entry. @return its LSN. */
static uint64_t snapshot_of(const char *state, const char *path)
{
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    keel_bytes key, val;
    char prev[600] = "";
    size_t plen = 0;
    keel__store *s = store_open(state);
    keel_snapshot_meta m = {.kernel_id = keel__store_kernel_id(s),
                            .lsn = keel__store_applied_lsn(s),
                            .crank = store_u64(s, "k.crank"),
                            .activity_hash = store_u64(s, "k.hash")};
    ck_assert_int_eq(keel_snapshot_writer_open(path, NULL, &m, &w, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "data", &d), KEEL_OK);
    while (keel__store_next_key(s, prev, plen, "", 0, &key, &d) == 1) {
        plen = key.len;
        memcpy(prev, key.ptr, plen);
        ck_assert_int_eq(keel__store_get(s, prev, plen, &val, &d), 1);
        ck_assert_int_eq(
            keel_snapshot_writer_put(w, prev, plen, val.ptr, val.len, &d),
            KEEL_OK);
    }
    ck_assert_msg(keel_snapshot_writer_finish(w, NULL, &d) == KEEL_OK, "%s",
                  d.msg);
    keel_snapshot_writer_close(w);
    keel__store_close(s);
    return m.lsn;
}

START_TEST(test_recover_audit_from_base_snapshot_passes)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    char *snap = tu_path(root, "base.snap");
    char kp[KEEL_VREF_MAX];
    keel_diag d = {0};
    boot_run(state, "{'bootstrap':'driver','vats':{"
                    "'driver':{'builtin':'counter_driver','params':"
                    "{'target':'counter','incrs':20}},"
                    "'counter':{'builtin':'counter'}}}");
    uint64_t base = snapshot_of(state, snap);
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(state, &o);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(
            keel_kernel_send(k, "counter", "incr", "{\"n\":2}", kp, &d),
            KEEL_OK);
    }
    krun(k);
    kclose(k);
    keel_audit_report rep = audit_sound(state, snap);
    ck_assert_uint_eq(rep.base_lsn, base);
    ck_assert_uint_eq(rep.first_lsn, base + 1);
    ck_assert_uint_eq(rep.transactions, 10); /* 5 sends, 5 cranks */
    /* and the same log from genesis agrees */
    keel_audit_report all = audit_sound(state, NULL);
    ck_assert_uint_eq(all.final_hash, rep.final_hash);
    tu_rmrf(root);
    free(snap);
    free(state);
    free(root);
}
END_TEST

/* A state restored from a snapshot (keel_snapshot_restore) keeps its log
 * from the snapshot's LSN + 1 on: it audits from that base, and from
 * genesis it cannot. */
START_TEST(test_recover_audit_restored_state_needs_its_base)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    char *snap = tu_path(root, "s.ksnap");
    char *restored = tu_path(root, "restored");
    char kp[KEEL_VREF_MAX];
    keel_snapshot_info info;
    keel_snapshot_restore_options ro;
    keel_audit_report rep;
    keel_diag d = {0};
    boot_run(state, "{'bootstrap':'driver','vats':{"
                    "'driver':{'builtin':'counter_driver','params':"
                    "{'target':'counter','incrs':10}},"
                    "'counter':{'builtin':'counter'}}}");
    ck_assert_msg(keel_snapshot_create(state, snap, NULL, &info, &d) == KEEL_OK,
                  "%s", d.msg);
    keel_snapshot_restore_options_init(&ro);
    ck_assert_msg(keel_snapshot_restore(snap, restored, &ro, NULL, &d) ==
                      KEEL_OK,
                  "%s", d.msg);
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(restored, &o);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(
            keel_kernel_send(k, "counter", "incr", "{\"n\":1}", kp, &d),
            KEEL_OK);
    }
    krun(k);
    kclose(k);
    rep = audit_sound(restored, snap);
    ck_assert_uint_eq(rep.base_lsn, info.meta.lsn);
    ck_assert_uint_eq(rep.first_lsn, info.meta.lsn + 1);
    ck_assert_uint_eq(rep.transactions, 6);
    ck_assert_int_eq(keel_audit(restored, NULL, &rep, &d), KEEL_EINVAL);
    ck_assert_msg(strstr(d.msg, "an audit from genesis needs LSN 1") != NULL,
                  "%s", d.msg);
    tu_rmrf(root);
    free(restored);
    free(snap);
    free(state);
    free(root);
}
END_TEST

START_TEST(test_recover_audit_base_of_other_kernel_refused)
{
    char *root = tu_tmpdir("recover");
    char *a = tu_path(root, "a");
    char *b = tu_path(root, "b");
    char *snap = tu_path(root, "a.snap");
    keel_audit_options o;
    keel_audit_report rep;
    keel_diag d = {0};
    boot_run(a, pingpong_sq(2));
    boot_run(b, pingpong_sq(2));
    snapshot_of(a, snap);
    keel_audit_options_init(&o);
    o.base_snapshot = snap;
    ck_assert_int_eq(keel_audit(b, &o, &rep, &d), KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "a snapshot of kernel"));
    tu_rmrf(root);
    free(snap);
    free(a);
    free(b);
    free(root);
}
END_TEST

START_TEST(test_recover_audit_locked_state_is_ebusy)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "state");
    keel_audit_report rep;
    keel_diag d = {0};
    boot_run(state, pingpong_sq(2));
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(state, &o);
    ck_assert_int_eq(keel_audit(state, NULL, &rep, &d), KEEL_EBUSY);
    kclose(k);
    ck_assert_int_eq(keel_audit(state, NULL, &rep, &d), KEEL_OK);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

START_TEST(test_recover_audit_missing_state_is_enoent)
{
    char *root = tu_tmpdir("recover");
    char *state = tu_path(root, "nothing");
    keel_audit_report rep;
    keel_diag d = {0};
    ck_assert_int_eq(keel_audit(state, NULL, &rep, &d), KEEL_ENOENT);
    ck_assert_int_eq(mkdir(state, 0755), 0);
    ck_assert_int_eq(keel_audit(state, NULL, &rep, &d), KEEL_ENOENT);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* ======================================================================== */
/* each violation, detected at its LSN                                      */
/* ======================================================================== */

START_TEST(test_recover_crafted_sound_twin_passes)
{
    craft c;
    craft_init(&c);
    const uint32_t bob[] = {2};
    uint64_t n = craft_promise(&c, bob, 1, NULL, 0, 0);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_settle(&c, n, 1, "p+900", NULL, 0);
    put_notify(&c, 2, n);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    keel_audit_report rep = audit_sound(c.state, NULL);
    ck_assert_uint_eq(rep.last_lsn, c.lsn);
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_dropped_notify_detected)
{
    craft c;
    craft_init(&c);
    const uint32_t bob[] = {2};
    uint64_t n = craft_promise(&c, bob, 1, NULL, 0, 0);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_settle(&c, n, 1, "p+900", NULL, 0); /* no notify for bob */
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "lost notification");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_message_on_settled_promise_detected)
{
    craft c;
    craft_init(&c);
    char *slots[] = {"ko1"};
    kmsg m = {.method = "ping",
              .body = (uint8_t *)"{}",
              .body_len = 2,
              .slots = slots,
              .nslots = 1,
              .result = ""};
    uint64_t n = craft_promise(&c, NULL, 0, &m, 1, 0);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_settle(&c, n, 1, "p+900", &m, 1); /* the message stays on it */
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "message queued on settled promise");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_clist_not_bijection_detected)
{
    craft c;
    craft_init(&c);
    /* alice knows ko2 as o-1; a second name breaks the bijection */
    put_str(&c, "c.1.k.ko2", "o-77");
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "not a bijection");
    craft_free(&c);
}
END_TEST

/* ---- a terminated vat's cleanup (K6, A10) -------------------------------- */

enum { BOB_KEYS_MAX = 256 };

/* bob's (vat 2) c-list and vatstore keys in the store, in key order. */
typedef struct bkey {
    size_t n;
    uint8_t b[64];
} bkey;

static size_t bob_keys(const craft *c, bkey keys[])
{
    static const uint8_t tables[] = {KS_CLIST, KS_VATSTORE};
    keel__store *s = store_open(c->state);
    keel_diag d = {0};
    size_t n = 0;
    for (size_t p = 0; p < 2; p++) {
        keel__key prefix;
        bkey after = {0};
        keel_bytes k;
        keel__ks_vat_prefix(&prefix, tables[p], 2);
        while (keel__store_next_key(s, after.b, after.n, prefix.b, prefix.n, &k,
                                    &d) == 1) {
            ck_assert_uint_lt(n, BOB_KEYS_MAX);
            ck_assert_uint_lt(k.len, 64);
            memcpy(keys[n].b, k.ptr, k.len);
            keys[n].n = k.len;
            after = keys[n];
            n++;
        }
    }
    keel__store_close(s);
    ck_assert_uint_ge(n, 2); /* at least its root's c-list pair */
    return n;
}

/* Which flaw crafted_cleanup() builds in (CLEAN_SOUND: none). */
enum {
    CLEAN_SOUND,
    CLEAN_NO_CURSOR,   /* terminated keeping keys, no cleanup pending */
    CLEAN_BATCH_WRITE, /* a batch also writes another vat's key */
    CLEAN_WRITE_DEAD,  /* a put to the dead vat's vatstore meanwhile */
    CLEAN_LEFT_OVER,   /* the last batch leaves a key behind */
};

/*
 * bob terminated with its cleanup pending (kernel op: state and cursor),
 * then batch 1 (the first half of its keys: half of its root's c-list
 * pair, which the audit must accept mid-cleanup) and batch 2 (the rest,
 * and the cursor), with flaw built in. @return the LSN the flaw is in.
 */
static uint64_t crafted_cleanup(craft *c, int flaw)
{
    bkey keys[BOB_KEYS_MAX];
    size_t n = bob_keys(c, keys), half = n / 2;
    uint64_t bad = 0;
    put_str(c, "v.2.state", "terminated");
    if (flaw != CLEAN_NO_CURSOR) {
        put_str(c, "v.2.cleanup", "0 ");
    }
    bad = craft_commit(c, KEEL_WAL_KERNEL_OP, 0);
    if (flaw == CLEAN_NO_CURSOR) {
        return bad;
    }
    if (flaw == CLEAN_WRITE_DEAD) {
        put_str(c, "vs.2.late", "1");
        return craft_commit(c, KEEL_WAL_KERNEL_OP, 0);
    }
    for (size_t i = 0; i < half; i++) {
        op_add_raw(c, keys[i].b, keys[i].n);
    }
    cop *cur = op_add(c, "v.2.cleanup"); /* u64 crank 0, the last key */
    cur->put = 1;
    keel__ks_be64(cur->val, 0);
    memcpy(cur->val + 8, keys[half - 1].b, keys[half - 1].n);
    cur->vlen = 8 + keys[half - 1].n;
    if (flaw == CLEAN_BATCH_WRITE) {
        put_str(c, "vs.1.extra", "1");
    }
    bad = craft_commit(c, KEEL_WAL_KERNEL_OP, 0);
    if (flaw == CLEAN_BATCH_WRITE) {
        return bad;
    }
    for (size_t i = half; i < n - (flaw == CLEAN_LEFT_OVER); i++) {
        op_add_raw(c, keys[i].b, keys[i].n);
    }
    del(c, "v.2.cleanup");
    return craft_commit(c, KEEL_WAL_KERNEL_OP, 0);
}

START_TEST(test_recover_cleanup_in_batches_passes)
{
    craft c;
    craft_init(&c);
    crafted_cleanup(&c, CLEAN_SOUND);
    craft_close(&c);
    keel_audit_report rep = audit_sound(c.state, NULL);
    ck_assert_uint_eq(rep.last_lsn, c.lsn);
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_cleanup_flaws_detected)
{
    static const struct {
        int flaw;
        const char *what;
    } cases[] = {
        {CLEAN_NO_CURSOR, "was terminated but keeps"},
        {CLEAN_BATCH_WRITE, "cleanup batch of vat 2 also writes vs.1.extra"},
        {CLEAN_WRITE_DEAD, "vs.2.late: vat 2 is not alive"},
        {CLEAN_LEFT_OVER, "was cleaned up but keeps 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        craft c;
        craft_init(&c);
        uint64_t bad = crafted_cleanup(&c, cases[i].flaw);
        craft_close(&c);
        ck_violation(c.state, bad, cases[i].what);
        craft_free(&c);
    }
}
END_TEST

/* K15: opening runs the cheap checks after replay: a vat state that is
 * neither alive nor terminated, an inverted run queue, a name index that
 * points elsewhere are refused naming the key (the audit names more). */
START_TEST(test_recover_open_cheap_checks_refuse_bad_state)
{
    static const struct {
        const char *key, *val, *what;
    } cases[] = {
        {"v.1.state", "zombie", "v.1.state"},
        {"k.rq.head", "999", "run queue bounds"},
        {"vn.alice", "2", "vn.alice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        craft c;
        craft_init(&c);
        put_str(&c, cases[i].key, cases[i].val);
        craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
        craft_close(&c);
        keel_kernel_options o;
        kopts(&o);
        keel_kernel *k = NULL;
        keel_diag d = {0};
        int rc = keel_kernel_open(c.state, &o, &k, &d);
        ck_assert_msg(rc == KEEL_ECORRUPT, "%s: open gave %s: %s", cases[i].key,
                      keel_err_name(rc), d.msg);
        ck_assert_msg(strstr(d.msg, cases[i].what) != NULL, "%s: %s",
                      cases[i].key, d.msg);
        craft_free(&c);
    }
}
END_TEST

/* AU4: a key that store/keyspace.h's decoder does not take is damage:
 * a version 1 string key, a vat id 0, a c-list key of an unknown sub. */
START_TEST(test_recover_undecodable_key_detected)
{
    static const struct {
        const char *key;
        size_t n;
    } bad[] = {
        {"k.crank", 7},
        {"\x03\x00\x00\x00\x00\x01", 6},
        {"\x05\x00\x00\x00\x01\x07\x01\x00\x00\x00\x00\x00\x00\x00\x01", 15},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        craft c;
        craft_init(&c);
        cop *o = op_add_raw(&c, bad[i].key, bad[i].n);
        o->put = 1;
        o->vlen = 1;
        o->val[0] = '1';
        uint64_t lsn = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
        craft_close(&c);
        ck_violation(c.state, lsn, "is not in keel's keyspace");
        craft_free(&c);
    }
}
END_TEST

START_TEST(test_recover_dangling_kref_detected)
{
    craft c;
    craft_init(&c);
    put_str(&c, "c.1.k.ko999", "o-50");
    put_str(&c, "c.1.v.o-50", "ko999");
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "ko999, which does not exist");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_non_decider_resolution_detected)
{
    craft c;
    craft_init(&c);
    uint64_t n = craft_promise(&c, NULL, 0, NULL, 0, 1);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    /* bob, who only imported it, resolves alice's promise */
    craft_settle(&c, n, 2, "p-900", NULL, 0);
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "not by its decider vat 1");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_double_resolution_detected)
{
    craft c;
    craft_init(&c);
    uint64_t n = craft_promise(&c, NULL, 0, NULL, 0, 0);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_settle(&c, n, 1, "p+900", NULL, 0);
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    put_prom(&c, n, KP_REJECTED, 0, NULL, 0, NULL, 0, "{\"again\":1}");
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "resolved again");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_wrong_activity_hash_detected)
{
    craft c;
    craft_init(&c);
    put_str(&c, "vs.1.extra", "1");
    craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    put_str(&c, "vs.1.extra", "2");
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 1);
    craft_close(&c);
    ck_violation(c.state, bad, "activity hash");
    craft_free(&c);
}
END_TEST

/*
 * AU3 with the store's one write-set decoder (store/writeset.c WC2): a
 * record whose payload is damaged is refused by the audit with the same
 * words as by the store's replay and the activity hash, which name the
 * payload offset and what was expected there.
 */
START_TEST(test_recover_bad_payload_same_message_as_store)
{
    craft c;
    craft_init(&c);
    /* One op of kind 3 at payload offset 4. */
    const uint8_t bad[] = {1, 0, 0, 0, 3, 1, 0, 0, 0, 'x'};
    const char *want = "payload offset 4: bad op kind 3, expected 1 (put) or "
                       "2 (delete)";
    uint64_t lsn = 0;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_append(c.w, KEEL_WAL_KERNEL_OP, c.crank, bad,
                                     sizeof(bad), &lsn, &d),
                     KEEL_OK);
    craft_close(&c);
    keel_audit_report rep;
    ck_assert_int_eq(keel_audit(c.state, NULL, &rep, &d), KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, want) != NULL, "audit said: %s", d.msg);
    char lsn_s[64];
    snprintf(lsn_s, sizeof(lsn_s), "LSN %" PRIu64 ":", lsn);
    ck_assert_msg(strstr(d.msg, lsn_s) != NULL, "audit said: %s", d.msg);
    uint64_t computed, stored;
    XXH3_state_t *st = XXH3_createState();
    ck_assert_int_eq(keel__activity_hash_record(st, 0, KEEL_WAL_KERNEL_OP, 0,
                                                bad, sizeof(bad), &computed,
                                                &stored, &d),
                     KEEL_ECORRUPT);
    XXH3_freeState(st);
    ck_assert_msg(strcmp(d.msg, want) == 0, "activity hash said: %s", d.msg);
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_store_differs_from_log_detected)
{
    craft c;
    uint8_t enc[256];
    keel_diag d = {0};
    craft_init(&c);
    put_str(&c, "vs.1.extra", "logged");
    uint64_t lsn = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    /* the store applies something else at that LSN and checkpoints it */
    keel__store *s = store_open(c.state);
    put_str(&c, "vs.1.extra", "stored");
    size_t len = encode(c.ops, c.nops, enc);
    c.nops = 0;
    ck_assert_int_eq(keel__store_apply_encoded(s, lsn, enc, len, &d), KEEL_OK);
    ck_assert_int_eq(keel__store_checkpoint(s, &d), KEEL_OK);
    keel__store_close(s);
    ck_violation(c.state, lsn, "differs from the log");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_notify_of_unresolved_detected)
{
    craft c;
    craft_init(&c);
    uint64_t n = craft_promise(&c, NULL, 0, NULL, 0, 0);
    put_notify(&c, 2, n);
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "which is unresolved");
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_crank_numbering_detected)
{
    craft c;
    craft_init(&c);
    /* a crank that removes no run-queue item */
    put_str(&c, "vs.1.extra", "1");
    uint64_t bad = craft_commit(&c, KEEL_WAL_CRANK, 0);
    craft_close(&c);
    ck_violation(c.state, bad, "removed 0 run-queue item");
    craft_free(&c);
}
END_TEST

/* ======================================================================== */
/* salvage                                                                  */
/* ======================================================================== */

typedef struct damaged {
    char *root;
    char *state;
    wrec recs[256];
    size_t n;
    size_t at; /* index of the damaged record */
} damaged;

/* An uncheckpointed pingpong whose record at index n/2 has a flipped
 * payload byte. */
static void damaged_init(damaged *t, int checkpointed)
{
    memset(t, 0, sizeof(*t));
    t->root = tu_tmpdir("recover-salvage");
    t->state = tu_path(t->root, "state");
    if (checkpointed) {
        boot_run(t->state, pingpong_sq(12));
    } else {
        pingpong_no_checkpoint(t->state, 12);
    }
    t->n = wal_records(t->state, t->recs, 256);
    t->at = t->n / 2;
    flip_byte(t->state, t->recs[t->at].segment, t->recs[t->at].offset + 40);
}

static void damaged_free(damaged *t)
{
    tu_rmrf(t->root);
    free(t->root);
    free(t->state);
}

static keel__salvage plan_of(const char *state)
{
    keel__salvage p;
    keel_diag d = {0};
    int rc = keel__salvage_plan(state, NULL, &p, &d);
    ck_assert_msg(rc == KEEL_OK, "plan: %s", d.msg);
    return p;
}

START_TEST(test_recover_flipped_byte_refused_by_open)
{
    damaged t;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    damaged_init(&t, 0);
    keel_kernel_options o;
    kopts(&o);
    ck_assert_int_eq(keel_kernel_open(t.state, &o, &k, &d), KEEL_ECORRUPT);
    ck_assert_ptr_null(k);
    char want[96];
    snprintf(want, sizeof(want), "offset %" PRIu64, t.recs[t.at].offset);
    ck_assert_msg(strstr(d.msg, want) != NULL, "%s", d.msg);
    damaged_free(&t);
}
END_TEST

START_TEST(test_recover_truncate_keeps_records_before_damage)
{
    damaged t;
    keel_diag d = {0};
    damaged_init(&t, 0);
    keel__salvage p = plan_of(t.state);
    const wrec *bad = &t.recs[t.at];
    ck_assert(p.damaged);
    ck_assert_str_eq(p.segment, bad->segment);
    ck_assert_uint_eq(p.offset, bad->offset);
    ck_assert_uint_eq(p.first_lsn, bad->lsn);
    ck_assert_uint_eq(p.checkpoint_lsn, 0);
    ck_assert_ptr_nonnull(strstr(p.reason, "checksum"));
    ck_assert_uint_eq(p.seg_deleted, 0);
    /* every record after the damaged one still verifies */
    ck_assert_uint_eq(p.readable, t.n - t.at - 1);
    ck_assert_uint_eq(p.readable_first_lsn, bad->lsn + 1);
    ck_assert_uint_eq(p.readable_last_lsn, t.recs[t.n - 1].lsn);
    const wrec *last = &t.recs[t.n - 1];
    ck_assert_uint_eq(p.cut_bytes,
                      last->offset + 40 + last->stored_len - bad->offset);
    ck_assert_int_eq(keel__salvage_apply(t.state, NULL, &p, &d), KEEL_OK);
    wrec after[256];
    size_t n = wal_records(t.state, after, 256);
    ck_assert_uint_eq(n, t.at);
    ck_assert_uint_eq(after[n - 1].lsn, bad->lsn - 1);
    /* the kernel opens on what is left and replays all of it */
    keel_kernel_options o;
    kopts(&o);
    keel_kernel *k = kopen(t.state, &o);
    keel_kernel_recovery r;
    keel_kernel_recovery_info(k, &r);
    ck_assert_uint_eq(r.replayed, bad->lsn - 1);
    ck_assert_int_eq(r.torn, 0);
    kclose(k);
    audit_sound(t.state, NULL);
    damaged_free(&t);
}
END_TEST

START_TEST(test_recover_truncate_refused_when_checkpoint_past_damage)
{
    damaged t;
    keel_diag d = {0};
    damaged_init(&t, 1);
    char *wal = tu_path(t.state, "wal");
    char *seg = tu_path(wal, t.recs[t.at].segment);
    size_t len0 = 0, len1 = 0;
    uint8_t *before = tu_read_file(seg, &len0);
    keel__salvage p = plan_of(t.state);
    ck_assert(p.damaged);
    ck_assert_uint_ge(p.checkpoint_lsn, p.first_lsn);
    ck_assert_int_eq(keel__salvage_apply(t.state, NULL, &p, &d), KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "refusing (nothing changed)"));
    uint8_t *now = tu_read_file(seg, &len1);
    ck_assert_uint_eq(len0, len1);
    ck_assert_int_eq(memcmp(before, now, len0), 0);
    free(before);
    free(now);
    free(seg);
    free(wal);
    damaged_free(&t);
}
END_TEST

START_TEST(test_recover_truncate_torn_tail_is_not_damage)
{
    char *root = tu_tmpdir("recover-salvage");
    char *state = tu_path(root, "state");
    wrec recs[256];
    pingpong_no_checkpoint(state, 5);
    size_t n = wal_records(state, recs, 256);
    char *wal = tu_path(state, "wal");
    char *seg = tu_path(wal, recs[n - 1].segment);
    ck_assert_int_eq(truncate(seg, (off_t)(recs[n - 1].offset + 20)), 0);
    keel__salvage p = plan_of(state);
    ck_assert(!p.damaged);
    keel_diag d = {0};
    ck_assert_int_eq(keel__salvage_apply(state, NULL, &p, &d), KEEL_EINVAL);
    free(seg);
    free(wal);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* Rewrite state's log into segments of about seg_bytes (same records). */
static void resegment(const char *state, uint64_t seg_bytes)
{
    keel_wal_reader *r = NULL;
    keel_wal *w = NULL;
    keel_wal_record rec;
    keel_wal_options wo;
    keel_diag d = {0};
    char *wal = tu_path(state, "wal");
    char *neu = tu_path(state, "wal.new");
    ck_assert_int_eq(keel_wal_reader_open(wal, NULL, 0, &r, &d), KEEL_OK);
    keel_wal_options_init(&wo);
    wo.segment_bytes = seg_bytes;
    wo.sync = KEEL_SYNC_OFF;
    int rc = 0;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        if (w == NULL) {
            wo.kernel_id = keel_wal_reader_kernel_id(r);
            ck_assert_int_eq(keel_wal_open(neu, &wo, &w, NULL, &d), KEEL_OK);
        }
        uint64_t lsn = 0;
        ck_assert_int_eq(keel_wal_append(w, rec.kind, rec.crank,
                                         rec.payload.ptr, rec.payload.len, &lsn,
                                         &d),
                         KEEL_OK);
        ck_assert_uint_eq(lsn, rec.lsn);
    }
    ck_assert_int_eq(rc, 0);
    keel_wal_reader_close(r);
    ck_assert_int_eq(keel_wal_sync(w, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    tu_rmrf(wal);
    ck_assert_int_eq(rename(neu, wal), 0);
    free(neu);
    free(wal);
}

/* An uncheckpointed pingpong in segments of about 2 KiB; its records. */
static size_t segmented_log(const char *state, wrec *recs)
{
    pingpong_no_checkpoint(state, 12);
    resegment(state, 2048);
    return wal_records(state, recs, 256);
}

/* Apply plan p to state and check that exactly `kept` records remain, that
 * the kernel opens on them and that the audit finds them sound. */
static void salvage_and_reopen(const char *state, const keel__salvage *p,
                               size_t kept)
{
    keel_diag d = {0};
    ck_assert_msg(keel__salvage_apply(state, NULL, p, &d) == KEEL_OK, "%s",
                  d.msg);
    wrec after[256];
    ck_assert_uint_eq(wal_records(state, after, 256), kept);
    keel_kernel_options o;
    kopts(&o);
    kclose(kopen(state, &o));
    audit_sound(state, NULL);
}

START_TEST(test_recover_truncate_deletes_later_segments)
{
    char *root = tu_tmpdir("recover-salvage");
    char *state = tu_path(root, "state");
    wrec recs[256];
    size_t n = segmented_log(state, recs);
    /* the second record of the third segment */
    size_t seg = 0, at = 0;
    for (size_t i = 1; i < n && at == 0; i++) {
        seg += strcmp(recs[i].segment, recs[i - 1].segment) != 0;
        if (seg == 2 && strcmp(recs[i].segment, recs[i - 1].segment) == 0) {
            at = i;
        }
    }
    ck_assert_uint_gt(at, 0);
    size_t nsegs = 1;
    for (size_t i = 1; i < n; i++) {
        nsegs += strcmp(recs[i].segment, recs[i - 1].segment) != 0;
    }
    ck_assert_uint_ge(nsegs, 5);
    flip_byte(state, recs[at].segment, recs[at].offset + 2); /* magic */
    keel__salvage p = plan_of(state);
    ck_assert(p.damaged);
    ck_assert_str_eq(p.segment, recs[at].segment);
    ck_assert_uint_eq(p.offset, recs[at].offset);
    ck_assert_uint_eq(p.first_lsn, recs[at].lsn);
    ck_assert_uint_eq(p.seg_deleted, nsegs - 3);
    ck_assert_uint_eq(p.readable, n - at - 1);
    salvage_and_reopen(state, &p, at);
    wrec after[256];
    ck_assert_uint_eq(wal_records(state, after, 256), at);
    ck_assert_str_eq(after[at - 1].segment, recs[at].segment);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* TR6: the first damage in log order is the one salvaged: a damaged record
 * in the second segment comes before a bad header of the fourth, although
 * a reader validating every header at open would name the header first. */
START_TEST(test_recover_truncate_cuts_at_first_damage_in_log_order)
{
    char *root = tu_tmpdir("recover-salvage");
    char *state = tu_path(root, "state");
    wrec recs[256];
    size_t n = segmented_log(state, recs);
    size_t seg = 0, rec_at = 0, hdr_at = 0;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(recs[i].segment, recs[i - 1].segment) != 0) {
            seg++;
            if (seg == 3) {
                hdr_at = i;
            }
        } else if (seg == 1 && rec_at == 0) {
            rec_at = i;
        }
    }
    ck_assert_uint_gt(rec_at, 0);
    ck_assert_uint_gt(hdr_at, rec_at);
    flip_byte(state, recs[rec_at].segment, recs[rec_at].offset + 40);
    flip_byte(state, recs[hdr_at].segment, 1); /* segment magic */
    keel__salvage p = plan_of(state);
    ck_assert(p.damaged);
    ck_assert_str_eq(p.segment, recs[rec_at].segment);
    ck_assert_uint_eq(p.offset, recs[rec_at].offset);
    ck_assert_uint_eq(p.first_lsn, recs[rec_at].lsn);
    ck_assert_msg(strstr(p.reason, "checksum") != NULL, "%s", p.reason);
    salvage_and_reopen(state, &p, rec_at);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

/* A copy of state's store and log at to. */
static void copy_state(const char *from, const char *to)
{
    char *fs = tu_path(from, "store"), *fw = tu_path(from, "wal");
    char *ts = tu_path(to, "store"), *tw = tu_path(to, "wal");
    ck_assert_int_eq(mkdir(to, 0755), 0);
    tu_copy_dir(fs, ts);
    tu_copy_dir(fw, tw);
    free(fs);
    free(fw);
    free(ts);
    free(tw);
}

/* TR3: a salvage cut short at any I/O operation (every later one fails
 * too, as after a crash) reports the error, and a second salvage then
 * ends with exactly the log an uninterrupted one leaves. */
START_TEST(test_recover_truncate_interrupted_finishes_the_same)
{
    char *root = tu_tmpdir("recover-salvage");
    char *tmpl = tu_path(root, "template");
    char work[4096];
    wrec recs[256];
    keel_io_fault *f = NULL;
    keel_diag d = {0};
    pingpong_no_checkpoint(tmpl, 12);
    resegment(tmpl, 2048);
    size_t n = wal_records(tmpl, recs, 256);
    flip_byte(tmpl, recs[n / 3].segment, recs[n / 3].offset + 40);
    uint64_t first = recs[n / 3].lsn;
    /* count the operations of a clean salvage */
    snprintf(work, sizeof(work), "%s/clean", root);
    copy_state(tmpl, work);
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel__salvage p = plan_of(work);
    ck_assert(p.damaged && p.seg_deleted >= 2);
    ck_assert_int_eq(keel__salvage_apply(work, keel__io_fault_io(f), &p, &d),
                     KEEL_OK);
    /* the last op is the segment's close, after its fsync: nothing to
     * sweep there */
    uint64_t ops = keel__io_fault_count(f, KEEL_IO_OP_ANY) -
                   keel__io_fault_count(f, KEEL_IO_OP_CLOSE);
    keel__io_fault_free(f);
    ck_assert_uint_ge(ops, p.seg_deleted + 4);
    for (uint64_t k = 1; k <= ops; k++) {
        keel_io_fault_plan plan = {
            .kind = KEEL_IO_FAULT_CRASH_BEFORE, .op = KEEL_IO_OP_ANY, .nth = k};
        snprintf(work, sizeof(work), "%s/k%" PRIu64, root, k);
        copy_state(tmpl, work);
        ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
        keel__io_fault_set_plan(f, &plan);
        p = plan_of(work);
        int rc = keel__salvage_apply(work, keel__io_fault_io(f), &p, &d);
        keel__io_fault_free(f);
        ck_assert_msg(rc == KEEL_EIO, "op %" PRIu64 ": %s", k,
                      keel_err_name(rc));
        ck_assert_ptr_nonnull(strstr(d.msg, "wal/"));
        p = plan_of(work);
        if (p.damaged) {
            ck_assert_uint_eq(p.first_lsn, first);
            ck_assert_int_eq(keel__salvage_apply(work, NULL, &p, &d), KEEL_OK);
        }
        wrec after[256];
        size_t m = wal_records(work, after, 256);
        ck_assert_msg(m == first - 1 && after[m - 1].lsn == first - 1,
                      "op %" PRIu64 ": the log ends at LSN %" PRIu64, k,
                      after[m - 1].lsn);
    }
    tu_rmrf(root);
    free(tmpl);
    free(root);
}
END_TEST

/* ======================================================================== */
/* keel recover                                                             */
/* ======================================================================== */

static int keel(const char *const *args, char **out, char **err)
{
    return tu_run_keel(args, out, err);
}

START_TEST(test_recover_cli_reports_and_checks)
{
    char *root = tu_tmpdir("recover-cli");
    char *state = tu_path(root, "state");
    char *out = NULL, *err = NULL;
    boot_run(state, pingpong_sq(5));
    const char *plain[] = {"recover", state, NULL};
    ck_assert_int_eq(keel(plain, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "recovery: store checkpoint at LSN"));
    ck_assert_ptr_nonnull(strstr(out, "tail: clean"));
    free(out);
    free(err);
    const char *check[] = {"recover", state, "--check", NULL};
    ck_assert_int_eq(keel(check, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "audit: sound"));
    free(out);
    free(err);
    const char *json[] = {"recover", state, "--check", "--json", NULL};
    ck_assert_int_eq(keel(json, &out, &err), 0);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    ck_assert_msg(o != NULL, "%s: %s", je.text, out);
    ck_assert(json_is_true(json_object_get(o, "ok")));
    json_t *a = json_object_get(o, "audit");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "cranks")), 11);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "violations")), 0);
    ck_assert(json_is_object(json_object_get(o, "recovery")));
    json_decref(o);
    free(out);
    free(err);
    tu_rmrf(root);
    free(state);
    free(root);
}
END_TEST

START_TEST(test_recover_cli_violation_exits_1)
{
    craft c;
    char *out = NULL, *err = NULL;
    craft_init(&c);
    put_str(&c, "vs.1.extra", "1");
    uint64_t bad = craft_commit(&c, KEEL_WAL_OUT_OF_CRANK, 1);
    craft_close(&c);
    const char *args[] = {"recover", c.state, "--check", "--json", NULL};
    ck_assert_int_eq(keel(args, &out, &err), 1);
    json_t *o = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert(json_is_false(json_object_get(o, "ok")));
    json_t *v = json_object_get(json_object_get(o, "audit"), "violation");
    ck_assert_int_eq(json_integer_value(json_object_get(v, "lsn")),
                     (json_int_t)bad);
    json_decref(o);
    free(out);
    free(err);
    const char *human[] = {"recover", c.state, "--check", NULL};
    ck_assert_int_eq(keel(human, &out, &err), 1);
    ck_assert_ptr_nonnull(strstr(out, "audit: VIOLATION at LSN"));
    free(out);
    free(err);
    craft_free(&c);
}
END_TEST

START_TEST(test_recover_cli_truncate_at_corruption_salvages)
{
    damaged t;
    char *out = NULL, *err = NULL;
    damaged_init(&t, 0);
    const char *plain[] = {"recover", t.state, NULL};
    ck_assert_int_eq(keel(plain, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "--truncate-at-corruption"));
    free(out);
    free(err);
    const char *salvage[] = {"recover", t.state, "--truncate-at-corruption",
                             "--check", NULL};
    ck_assert_int_eq(keel(salvage, &out, &err), 0);
    char want[128];
    snprintf(want, sizeof(want), "keeping LSN %" PRIu64 " and before",
             t.recs[t.at].lsn - 1);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "salvage: done"));
    ck_assert_ptr_nonnull(strstr(out, "audit: sound"));
    free(out);
    free(err);
    /* now there is nothing left to salvage */
    const char *again[] = {"recover", t.state, "--truncate-at-corruption",
                           "--json", NULL};
    ck_assert_int_eq(keel(again, &out, &err), 0);
    json_t *o = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert(json_is_false(
        json_object_get(json_object_get(o, "salvage"), "damaged")));
    json_decref(o);
    free(out);
    free(err);
    damaged_free(&t);
}
END_TEST

START_TEST(test_recover_cli_refused_salvage_exits_1)
{
    damaged t;
    char *out = NULL, *err = NULL;
    damaged_init(&t, 1);
    const char *args[] = {"recover", t.state, "--truncate-at-corruption", NULL};
    ck_assert_int_eq(keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "refusing (nothing changed)"));
    free(out);
    free(err);
    damaged_free(&t);
}
END_TEST

/* `keel bench recover` at a tiny size: both result lines parse (no figure
 * is asserted). */
START_TEST(test_recover_cli_bench_smoke)
{
    char *root = tu_tmpdir("recover-bench");
    char *out = NULL, *err = NULL;
    const char *args[] = {"bench", "recover", "--n", "40",     "--runs",
                          "3",     "--dir",   root,  "--json", NULL};
    ck_assert_msg(keel(args, &out, &err) == 0, "%s", err);
    ck_assert_uint_eq(tu_count_lines(out), 2);
    const char *line = out;
    const char *const want[] = {"cranks", "transactions"};
    for (int i = 0; i < 2; i++) {
        json_error_t je;
        json_t *o = json_loadb(line, strcspn(line, "\n"), 0, &je);
        ck_assert_msg(o != NULL, "%s: %s", je.text, line);
        ck_assert_str_eq(json_string_value(json_object_get(o, "candidate")),
                         want[i]);
        ck_assert(json_real_value(json_object_get(o, "median_per_s")) > 0);
        ck_assert_str_eq(json_string_value(json_object_get(o, "baseline")),
                         "lmdb-put");
        json_decref(o);
        line = strchr(line, '\n') + 1;
    }
    free(out);
    free(err);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_recover_cli_usage_and_help)
{
    char *out = NULL, *err = NULL;
    const char *help[] = {"recover", "--help", NULL};
    ck_assert_int_eq(keel(help, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: keel recover STATE"));
    ck_assert_ptr_nonnull(strstr(out, "--truncate-at-corruption"));
    free(out);
    free(err);
    const char *none[] = {"recover", NULL};
    ck_assert_int_eq(keel(none, &out, &err), 2);
    tu_assert_one_error_line(err);
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    const char *base[] = {"recover", "/nonexistent", "--base", "x", NULL};
    ck_assert_int_eq(keel(base, &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--base needs --check"));
    free(out);
    free(err);
    const char *bad[] = {"recover", "/nonexistent", "--bogus", NULL};
    ck_assert_int_eq(keel(bad, &out, &err), 2);
    free(out);
    free(err);
    const char *missing[] = {"recover", "/nonexistent/state", NULL};
    ck_assert_int_eq(keel(missing, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_ptr_nonnull(strstr(err, "no such state directory"));
    free(out);
    free(err);
}
END_TEST

Suite *recover_suite(void)
{
    Suite *s = suite_create("recover");
    TCase *tc = tcase_create("audit");
    tcase_add_test(tc, test_recover_audit_pingpong_passes);
    tcase_add_test(tc, test_recover_audit_fanout_passes);
    tcase_add_test(tc, test_recover_audit_chain5_out_of_crank_passes);
    tcase_add_test(tc, test_recover_audit_termination_passes);
    tcase_add_test(tc, test_recover_audit_probe_edges_pass);
    tcase_add_test(tc, test_recover_audit_uncheckpointed_state_passes);
    tcase_add_test(tc, test_recover_audit_from_base_snapshot_passes);
    tcase_add_test(tc, test_recover_audit_restored_state_needs_its_base);
    tcase_add_test(tc, test_recover_audit_base_of_other_kernel_refused);
    tcase_add_test(tc, test_recover_audit_locked_state_is_ebusy);
    tcase_add_test(tc, test_recover_audit_missing_state_is_enoent);
    suite_add_tcase(s, tc);

    tc = tcase_create("violations");
    tcase_add_test(tc, test_recover_crafted_sound_twin_passes);
    tcase_add_test(tc, test_recover_dropped_notify_detected);
    tcase_add_test(tc, test_recover_message_on_settled_promise_detected);
    tcase_add_test(tc, test_recover_clist_not_bijection_detected);
    tcase_add_test(tc, test_recover_dangling_kref_detected);
    tcase_add_test(tc, test_recover_undecodable_key_detected);
    tcase_add_test(tc, test_recover_open_cheap_checks_refuse_bad_state);
    tcase_add_test(tc, test_recover_non_decider_resolution_detected);
    tcase_add_test(tc, test_recover_double_resolution_detected);
    tcase_add_test(tc, test_recover_wrong_activity_hash_detected);
    tcase_add_test(tc, test_recover_bad_payload_same_message_as_store);
    tcase_add_test(tc, test_recover_store_differs_from_log_detected);
    tcase_add_test(tc, test_recover_notify_of_unresolved_detected);
    tcase_add_test(tc, test_recover_crank_numbering_detected);
    tcase_add_test(tc, test_recover_cleanup_in_batches_passes);
    tcase_add_test(tc, test_recover_cleanup_flaws_detected);
    suite_add_tcase(s, tc);

    tc = tcase_create("salvage");
    tcase_add_test(tc, test_recover_flipped_byte_refused_by_open);
    tcase_add_test(tc, test_recover_truncate_keeps_records_before_damage);
    tcase_add_test(tc,
                   test_recover_truncate_refused_when_checkpoint_past_damage);
    tcase_add_test(tc, test_recover_truncate_torn_tail_is_not_damage);
    tcase_add_test(tc, test_recover_truncate_deletes_later_segments);
    tcase_add_test(tc, test_recover_truncate_cuts_at_first_damage_in_log_order);
    tcase_add_test(tc, test_recover_truncate_interrupted_finishes_the_same);
    suite_add_tcase(s, tc);

    tc = tcase_create("cli");
    tcase_add_test(tc, test_recover_cli_reports_and_checks);
    tcase_add_test(tc, test_recover_cli_violation_exits_1);
    tcase_add_test(tc, test_recover_cli_truncate_at_corruption_salvages);
    tcase_add_test(tc, test_recover_cli_refused_salvage_exits_1);
    tcase_add_test(tc, test_recover_cli_bench_smoke);
    tcase_add_test(tc, test_recover_cli_usage_and_help);
    suite_add_tcase(s, tc);
    return s;
}
