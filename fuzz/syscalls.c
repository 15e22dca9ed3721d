/*
 * fuzz/syscalls.c — fuzz target for the kernel's syscall boundary: a vat
 * driven by the input makes arbitrary syscall sequences, legal and
 * illegal, inside cranks and out of them, against a kernel where other
 * vats keep working.
 *
 * Each input is a byte program (format: fuzz/syscalls_program.h). For
 * each input a fresh kernel is opened in a scratch state directory
 * (sync=off; async work in the kernel's deterministic mode unless the
 * program's header asks for libuv's clock and threads), booted with this
 * cluster (config order = vat ids v1..v5):
 *
 *   fuzz     the vat the program drives (bootstrap vat)
 *   alice    pingpong, 3 rounds against bob, started by the fuzz vat
 *   bob      pingpong
 *   counter  counter: the fuzz vat sends it only well-formed incr/get
 *   victim   counter, wrapped: the fuzz vat may send it anything, so it
 *            may die; while its crank is open the fuzz vat may be given a
 *            held turn (SP_HELD), whose syscalls the kernel holds and runs
 *            after that crank, each as its own transaction (SPEC §5)
 *
 * The fuzz and victim vats are provided through
 * keel_kernel_options.resolve_vat; their params carry the address of this
 * input's run (the config is read back in the same process). On
 * bootstrap it keeps the other vats' roots, sends alice
 * bootstrap({"vats":{"bob":...}}) and itself `go`, and commits that crank
 * with nothing else in it, so that alice's pingpong runs whatever the
 * program does next. From then on every time it gets control (a delivery,
 * a timer or thread-pool completion, an outside turn: the harness calling
 * its syscalls between cranks, each then its own transaction, or a held
 * turn) it runs the next block of the program. The kernel is driven one crank
 * at a time; when it is idle and the program is not used up, the harness gives
 * the vat an outside turn, so every byte of an input is run.
 *
 * The vat never sends alice, bob or counter anything but the bootstrap and
 * calls with well-formed bodies (SP_CALL; one that carries slots is refused
 * by the example vat, which rejects its result, counts nothing and lives
 * on), and never fulfils a promise to one of their objects (a message sent
 * to such a promise would reach them): the answers checked here would
 * only be harder to predict.
 * Generic sends aimed at their roots go to the victim instead.
 *
 * Oracle (FUZZ_ASSERT, always on):
 *   S1  Every syscall returns KEEL_OK (0/1 for vatstore reads) or
 *       KEEL_EINVAL (a held one: KEEL_OK); after the vat was terminated
 *       (out of crank), every syscall that checks returns KEEL_EFAILED.
 *       Kernel calls
 *       (run, send, promise, status, close) never fail: no storage error,
 *       the kernel never FAILED.
 *   S2  KEEL_EINVAL means illegal (vat.h): the transaction is doomed and
 *       the vat terminated; so is a delivery that returned nonzero, and an
 *       exit. A vat expected dead never gets control again (no delivery,
 *       no async callback), and stop() has run for it by the end. After
 *       a held turn the vat is terminated if it held an exit or a syscall
 *       illegal by construction (S3), and alive if every held syscall was
 *       legal by construction.
 *   S3  Legal calls succeed: the setup, well-formed calls to the other
 *       vats, sends to its own objects with a fresh result, alloc, and
 *       vatstore calls with a key of 1..480 bytes and a value of at most
 *       1 MiB; and the vatstore ops with keys or values outside those
 *       limits return KEEL_EINVAL.
 *   S4  The vatstore behaves as a map: get and next_key agree with a model
 *       of every set and delete that returned KEEL_OK (a doomed
 *       transaction's writes stay visible to it until it ends, and after
 *       it the vat is gone; held writes join the model once they ran); at
 *       the end, the vatstore read from outside equals the model.
 *   S5  At the end: the fuzz vat is terminated iff S2 expects it; alice,
 *       bob and counter are alive; alice finished her 3 rounds (or never
 *       started, if the fuzz vat died before bootstrap); bob answers
 *       ping({"i":41}) with {"value":42}; counter answers get with the sum
 *       of the increments in transactions that committed (when a held
 *       turn killed the vat after increments that may or may not have run
 *       before the illegal syscall, only that it answers); a live fuzz vat
 *       answers a message (it answers every message once its program is
 *       used up).
 *   S6  After keel_kernel_close, keel_audit() of the state returns KEEL_OK
 *       with no violation.
 * ASan/UBSan, LeakSanitizer and libFuzzer's -timeout add: no memory error,
 * no undefined behaviour, no leak, no hang (and the harness bounds its
 * loop: a kernel that never goes idle is a failure).
 */

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz/fuzz_helpers.h"
#include "fuzz/syscalls_program.h"
#include "keel/keel.h"
#include "keel/recovery.h"

#define STR_BODY(s) s, sizeof(s) - 1

enum {
    POOL_MAX = 48,    /* vrefs the vat remembers */
    RESULTS_MAX = 16, /* results handed to it, not yet answered */
    FORGE_MAX = 2100, /* the longest made-up string, NUL included */
    KEY_BUF = 4001,   /* the longest key operand, NUL included */
    SHORT_MAX = 64,   /* short binary bodies, keys and values */
    ALICE_ROUNDS = 3,
    /* Loop turns without the kernel going idle before it counts as a
     * hang: far above what a 4 KB program can cause. */
    MAX_TURNS = 200000,
    BULK_BODY = 64 * 1024,
    MID_VALUE = 4096,
};

/* The other vats, in config order after the fuzz vat. */
enum { PEER_ALICE, PEER_BOB, PEER_COUNTER, PEER_VICTIM, PEER_COUNT };
static const char *const peer_names[PEER_COUNT] = {"alice", "bob", "counter",
                                                   "victim"};

/* How the syscalls of an activation are carried out (vat.h). */
enum act_mode {
    ACT_TXN,  /* a delivery or an async completion: one transaction */
    ACT_OWN,  /* start() or an outside turn: each syscall its own */
    ACT_HELD, /* during the victim's crank: each syscall held, then its own
                 transaction after that crank (reads are not held) */
};

/* One vatstore entry of the model (S4), or a held write not yet run
 * (del set for a delete). */
typedef struct vs_entry {
    char *key;
    uint8_t *val;
    size_t len;
    int del;
} vs_entry;

/* Everything about one input: the program, the vat's memory, and what
 * the oracle expects. The fuzz vat's state pointer points here. */
typedef struct fuzz_run {
    const uint8_t *prog;
    size_t len;
    size_t pc;
    const uint8_t *big; /* the scratch's read-only bulk bytes */
    int big_left;       /* SP_BIG_VALUES not yet used */
    keel_syscall *sys;  /* the fuzz vat's handle, from start() */
    int started;
    int stopped;
    /* the vat's memory */
    char pool[POOL_MAX][KEEL_VREF_MAX];
    size_t npool;
    size_t pool_next; /* replaced next once the pool is full */
    char peers[PEER_COUNT][KEEL_VREF_MAX];
    int setup_done;
    char results[RESULTS_MAX][KEEL_VREF_MAX];
    size_t nresults;
    char last_promise[KEEL_VREF_MAX];
    vs_entry *vs;
    size_t nvs;
    size_t vs_cap;
    /* held syscalls (ACT_HELD) of the victim's current crank: what their
     * outcome must be once they ran (see after_held()) */
    uint64_t held_pending; /* SP_HELD turns asked for */
    int held_ran;
    int held_illegal;  /* an illegal-by-construction syscall was held */
    int held_unknown;  /* one whose legality is not predicted was held */
    vs_entry *held_vs; /* held vatstore writes, in order */
    size_t nheld_vs;
    uint64_t held_incr_sure;  /* held increments of counter made before
                                 any held syscall that may be illegal */
    uint64_t held_incr_maybe; /* and after: they ran only if none was */
    /* the current activation */
    enum act_mode mode;
    int delivering; /* the activation is a delivery (it can fail) */
    int act_doomed; /* a syscall in this transaction returned EINVAL */
    int act_fail;   /* SP_FAIL: deliver() returns nonzero */
    uint64_t act_incr;
    /* what the oracle expects */
    int doomed; /* illegal syscall or failed delivery: terminated (S2) */
    int exited; /* exit accepted: terminated (S2) */
    int dead;   /* terminated already (known at once out of crank) */
    uint64_t counter_total; /* committed increments of counter (S5) */
    int counter_unsure;     /* some held increments may have run or not */
    uint64_t outside_pending;
} fuzz_run;

/* ---- scratch -------------------------------------------------------------
 * libFuzzer's entry point takes no context argument, so this one
 * function-local static is how the target keeps state across inputs; it
 * never changes after the first call. */

typedef struct scratch {
    char *root;   /* removed at exit */
    char *state;  /* root/state: one kernel per input, removed after it */
    uint8_t *big; /* KEEL_VATSTORE_VALUE_MAX + 1 bytes of 'v' */
} scratch;

static const scratch *scratch_get(void);

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    FUZZ_ASSERTF(remove(path) == 0, "remove %s: %s", path, strerror(errno));
    return 0;
}

/* rm -rf path (absent is fine). */
static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        FUZZ_ASSERTF(errno == ENOENT, "lstat %s: %s", path, strerror(errno));
        return;
    }
    FUZZ_ASSERTF(nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0,
                 "nftw %s: %s", path, strerror(errno));
}

static void scratch_cleanup(void)
{
    const scratch *s = scratch_get();
    rm_tree(s->root);
}

static const scratch *scratch_get(void)
{
    static scratch s;
    if (s.root == NULL) {
        s.root = fuzz_tmpdir("keel-fuzz-syscalls");
        s.state = fuzz_path(s.root, "state");
        s.big = malloc(KEEL_VATSTORE_VALUE_MAX + 1);
        FUZZ_ASSERT(s.big != NULL);
        memset(s.big, 'v', KEEL_VATSTORE_VALUE_MAX + 1);
        atexit(scratch_cleanup);
    }
    return &s;
}

/* ---- reading the program ------------------------------------------------ */

static uint8_t next_byte(fuzz_run *r)
{
    return r->pc < r->len ? r->prog[r->pc++] : 0;
}

/* n bytes of the program into out (zeros past the end); NUL bytes become
 * 0x01 when as_text, so the result is a C string of exactly n bytes. */
static void next_bytes(fuzz_run *r, uint8_t *out, size_t n, int as_text)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = next_byte(r);
        if (as_text && out[i] == 0) {
            out[i] = 1;
        }
    }
}

/* ---- the vat's memory --------------------------------------------------- */

static void pool_add(fuzz_run *r, const char *vref)
{
    if (vref == NULL || strlen(vref) >= KEEL_VREF_MAX) {
        return;
    }
    for (size_t i = 0; i < r->npool; i++) {
        if (strcmp(r->pool[i], vref) == 0) {
            return;
        }
    }
    size_t at = r->npool;
    if (r->npool < POOL_MAX) {
        r->npool++;
    } else {
        at = 1 + r->pool_next++ % (POOL_MAX - 1); /* o+0 stays */
    }
    snprintf(r->pool[at], KEEL_VREF_MAX, "%s", vref);
}

static void results_push(fuzz_run *r, const char *vref)
{
    if (r->nresults == RESULTS_MAX) {
        memmove(r->results[0], r->results[1],
                (RESULTS_MAX - 1) * sizeof(r->results[0]));
        r->nresults--;
    }
    snprintf(r->results[r->nresults++], KEEL_VREF_MAX, "%s", vref);
}

/* alice, bob and counter: sent nothing malformed, never forwarded to. */
static int is_protected(const fuzz_run *r, const char *vref)
{
    if (!r->setup_done || vref == NULL) {
        return 0;
    }
    for (int i = PEER_ALICE; i <= PEER_COUNTER; i++) {
        if (strcmp(vref, r->peers[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Remember every vref a delivery hands the vat. */
static void absorb(fuzz_run *r, const keel_delivery *d)
{
    const keel_capdata *cd = NULL;
    if (d->kind == KEEL_DELIVER_MESSAGE) {
        pool_add(r, d->target);
        if (d->result != NULL) {
            pool_add(r, d->result);
            results_push(r, d->result);
        }
        cd = &d->args;
    } else if (d->kind >= KEEL_DELIVER_DROP_EXPORTS &&
               d->kind <= KEEL_DELIVER_RETIRE_IMPORTS) {
        /* a GC delivery: one vref of its own (an export no one reaches)
         * or an import it held */
        FUZZ_ASSERTF(d->nvrefs >= 1, "GC delivery kind %d without vrefs",
                     d->kind);
        return;
    } else {
        FUZZ_ASSERTF(d->kind == KEEL_DELIVER_NOTIFY, "delivery kind %d",
                     d->kind);
        pool_add(r, d->promise);
        cd = &d->resolution;
    }
    for (size_t i = 0; i < cd->nslots; i++) {
        pool_add(r, cd->slots[i]);
    }
}

/* ---- the vatstore model (S4) ------------------------------------------- */

static int key_legal(const char *key)
{
    size_t n = key != NULL ? strlen(key) : 0;
    return n >= 1 && n <= KEEL_VATSTORE_KEY_MAX;
}

/* Index of key, or of where it would go (*found 0). */
static size_t vs_find(const fuzz_run *r, const char *key, int *found)
{
    size_t lo = 0, hi = r->nvs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->vs[mid].key, key);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = 0;
    return lo;
}

static void vs_model_set(fuzz_run *r, const char *key, const void *val,
                         size_t len)
{
    int found;
    size_t i = vs_find(r, key, &found);
    uint8_t *copy = malloc(len > 0 ? len : 1);
    FUZZ_ASSERT(copy != NULL);
    if (len > 0) {
        memcpy(copy, val, len);
    }
    if (found) {
        free(r->vs[i].val);
    } else {
        if (r->nvs == r->vs_cap) {
            r->vs_cap = r->vs_cap ? r->vs_cap * 2 : 16;
            r->vs = realloc(r->vs, r->vs_cap * sizeof(*r->vs));
            FUZZ_ASSERT(r->vs != NULL);
        }
        memmove(&r->vs[i + 1], &r->vs[i], (r->nvs - i) * sizeof(*r->vs));
        r->nvs++;
        r->vs[i].key = strdup(key);
        FUZZ_ASSERT(r->vs[i].key != NULL);
    }
    r->vs[i].val = copy;
    r->vs[i].len = len;
}

static void vs_model_delete(fuzz_run *r, const char *key)
{
    int found;
    size_t i = vs_find(r, key, &found);
    if (found) {
        free(r->vs[i].key);
        free(r->vs[i].val);
        memmove(&r->vs[i], &r->vs[i + 1], (r->nvs - i - 1) * sizeof(*r->vs));
        r->nvs--;
    }
}

/* Keep a held write for after_held() (an illegal one is never run: the
 * vat is terminated then). */
static void held_write(fuzz_run *r, const char *key, const void *val,
                       size_t len, int del, int legal)
{
    if (!legal) {
        return;
    }
    vs_entry *n = realloc(r->held_vs, (r->nheld_vs + 1) * sizeof(*n));
    FUZZ_ASSERT(n != NULL);
    r->held_vs = n;
    n = &r->held_vs[r->nheld_vs++];
    n->key = strdup(key);
    n->val = malloc(len > 0 ? len : 1);
    FUZZ_ASSERT(n->key != NULL && n->val != NULL);
    if (len > 0) {
        memcpy(n->val, val, len);
    }
    n->len = len;
    n->del = del;
}

/* The held writes ran (apply) or the vat is gone (drop them). */
static void held_writes_end(fuzz_run *r, int apply)
{
    for (size_t i = 0; i < r->nheld_vs; i++) {
        vs_entry *e = &r->held_vs[i];
        if (apply && e->del) {
            vs_model_delete(r, e->key);
        } else if (apply) {
            vs_model_set(r, e->key, e->val, e->len);
        }
        free(e->key);
        free(e->val);
    }
    free(r->held_vs);
    r->held_vs = NULL;
    r->nheld_vs = 0;
}

static void vs_model_free(fuzz_run *r)
{
    for (size_t i = 0; i < r->nvs; i++) {
        free(r->vs[i].key);
        free(r->vs[i].val);
    }
    free(r->vs);
    held_writes_end(r, 0);
}

/* ---- checking syscall results (S1, S2) ---------------------------------- */

static void note_illegal(fuzz_run *r)
{
    r->act_doomed = 1;
    r->held_illegal |= r->mode == ACT_HELD;
    if (r->mode == ACT_OWN) {
        r->doomed = 1; /* terminated at once (vat.h) */
        r->dead = 1;
    }
}

/* A syscall whose legality the harness does not predict: OK or EINVAL
 * (S1); EINVAL dooms (S2). A held one returns OK and is judged after the
 * crank. @return 1 if it was accepted. */
static int check_any(fuzz_run *r, int rc, const char *what)
{
    if (r->dead) {
        FUZZ_ASSERTF(rc == KEEL_EFAILED, "%s on a terminated vat returned %s",
                     what, keel_err_name(rc));
        return 0;
    }
    if (r->mode == ACT_HELD) {
        FUZZ_ASSERTF(rc == KEEL_OK, "held %s returned %d (%s)", what, rc,
                     keel_err_name(rc));
        r->held_unknown = 1;
        return 1;
    }
    FUZZ_ASSERTF(rc == KEEL_OK || rc == KEEL_EINVAL, "%s returned %d (%s)",
                 what, rc, keel_err_name(rc));
    if (rc == KEEL_EINVAL) {
        note_illegal(r);
    }
    return rc == KEEL_OK;
}

/* A syscall that is legal, or illegal, by construction (S3): it returns
 * EFAILED once the vat is dead, EINVAL in a doomed transaction or when
 * illegal, else KEEL_OK (a vatstore read: 0/1). Held, a write returns OK
 * and is judged after the crank; a read is never held. */
static void check_exact(fuzz_run *r, int rc, int legal, int read,
                        const char *what)
{
    if (r->dead) {
        FUZZ_ASSERTF(rc == KEEL_EFAILED, "%s on a terminated vat returned %s",
                     what, keel_err_name(rc));
        return;
    }
    if (r->mode == ACT_HELD && !read) {
        FUZZ_ASSERTF(rc == KEEL_OK, "held %s returned %d (%s)", what, rc,
                     keel_err_name(rc));
        r->held_illegal |= !legal;
        return;
    }
    if (!legal) {
        FUZZ_ASSERTF(rc == KEEL_EINVAL, "illegal %s returned %d (%s)", what, rc,
                     keel_err_name(rc));
        note_illegal(r);
        return;
    }
    if (r->act_doomed) {
        FUZZ_ASSERTF(rc == KEEL_EINVAL || rc >= 0,
                     "%s in a doomed transaction returned %d (%s)", what, rc,
                     keel_err_name(rc));
        return;
    }
    FUZZ_ASSERTF(rc >= 0, "legal %s returned %d (%s)", what, rc,
                 keel_err_name(rc));
}

/* ---- operands ----------------------------------------------------------- */

typedef struct ref_op {
    const char *s; /* NULL is an operand value too */
    char buf[FORGE_MAX];
} ref_op;

/* A made-up vref: forged, malformed, or new (and legal). */
static void forge(fuzz_run *r, unsigned kind, ref_op *o)
{
    unsigned n = next_byte(r);
    o->s = o->buf;
    switch (kind) {
    case 0:
        snprintf(o->buf, FORGE_MAX, "o-%u", n + 100); /* never given */
        break;
    case 1:
        snprintf(o->buf, FORGE_MAX, "p-%u", n + 1);
        break;
    case 2:
        snprintf(o->buf, FORGE_MAX, "o+%u", n); /* new export: legal */
        break;
    case 3:
        snprintf(o->buf, FORGE_MAX, "p+%u", n); /* new, or retired */
        break;
    case 4:
        o->s = NULL;
        break;
    case 5:
        o->buf[0] = '\0';
        break;
    case 6:
        snprintf(o->buf, FORGE_MAX, "ko%u", n % 8); /* a kernel name */
        break;
    case 7:
        snprintf(o->buf, FORGE_MAX, "kp%u", n % 8);
        break;
    case 8:
        snprintf(o->buf, FORGE_MAX, "o+0%u", n % 10); /* leading zero */
        break;
    case 9:
        snprintf(o->buf, FORGE_MAX, "p+18446744073709551615"); /* u64 max */
        break;
    case 10:
        snprintf(o->buf, FORGE_MAX, "o+18446744073709551616"); /* overflow */
        break;
    case 11:
        snprintf(o->buf, FORGE_MAX, "%c+", n & 1 ? 'o' : 'p');
        break;
    case 12:
        snprintf(o->buf, FORGE_MAX, "x");
        break;
    case 13: /* too many digits */
        memcpy(o->buf, "o+", 2);
        memset(o->buf + 2, '1', 300);
        o->buf[302] = '\0';
        break;
    case 14:
        snprintf(o->buf, FORGE_MAX, "o-0");
        break;
    case 15:
        snprintf(o->buf, FORGE_MAX, "p+0");
        break;
    case 16:
        snprintf(o->buf, FORGE_MAX, "o+-%u", n);
        break;
    case 17:
        snprintf(o->buf, FORGE_MAX, "\xff\xfe%c", (char)(n | 1));
        break;
    case 18:
        snprintf(o->buf, FORGE_MAX, "p-%u", n % 4);
        break;
    case 19:
        snprintf(o->buf, FORGE_MAX, "o-%u", n % 6); /* o-1..o-4 are real */
        break;
    case 20: /* long and not a vref at all */
        memset(o->buf, 'o', FORGE_MAX - 1);
        o->buf[FORGE_MAX - 1] = '\0';
        break;
    case 21:
        snprintf(o->buf, FORGE_MAX, "o+ %u", n);
        break;
    case 22:
        snprintf(o->buf, FORGE_MAX, " o+%u", n);
        break;
    default: /* a recent p+N of its own: maybe decided, maybe retired */
        snprintf(o->buf, FORGE_MAX, "%s", r->last_promise);
        break;
    }
}

static void next_ref(fuzz_run *r, ref_op *o)
{
    uint8_t b = next_byte(r);
    if (b < SP_REF_POOL_LIMIT) {
        snprintf(o->buf, FORGE_MAX, "%s", r->pool[b % r->npool]);
        o->s = o->buf;
    } else {
        forge(r, (unsigned)(b - SP_REF_POOL_LIMIT) % SP_FORGE_KINDS, o);
    }
}

static const char *next_method(fuzz_run *r, char *buf)
{
    static const char *const fixed[] = {"go",   "bootstrap", "ping",
                                        "incr", "get",       ""};
    unsigned k = next_byte(r) % SP_METHOD_KINDS;
    if (k < sizeof(fixed) / sizeof(fixed[0])) {
        return fixed[k];
    }
    switch (k) {
    case 6:
        return NULL;
    case 7:
        memset(buf, 'm', 300);
        buf[300] = '\0';
        return buf;
    case 8:
        return "\x01\xff";
    default:
        return "then";
    }
}

typedef struct cap_op {
    keel_capdata cd;
    int none; /* pass NULL instead of &cd */
    const char *slots[3];
    ref_op refs[3];
    uint8_t body[SHORT_MAX];
} cap_op;

static void set_body(cap_op *c, const void *p, size_t n)
{
    c->cd.body.ptr = p;
    c->cd.body.len = n;
}

static void next_capdata(fuzz_run *r, cap_op *c)
{
    uint8_t b = next_byte(r);
    unsigned kind = b % SP_BODY_KINDS;
    memset(&c->cd, 0, sizeof(c->cd));
    c->none = kind == SP_BODY_NONE;
    switch (kind) {
    case SP_BODY_EMPTY_JSON:
        set_body(c, STR_BODY("{}"));
        break;
    case SP_BODY_SLOT0:
        set_body(c, KEEL_CAPDATA_SLOT0, strlen(KEEL_CAPDATA_SLOT0));
        break;
    case 2:
        set_body(c, STR_BODY("{\"@slot\":7}")); /* no slot 7 */
        break;
    case 3:
        set_body(c, STR_BODY("{\"a\":")); /* malformed */
        break;
    case 4:
        set_body(c, NULL, 0);
        break;
    case SP_BODY_BINARY: {
        size_t n = next_byte(r) % SHORT_MAX;
        next_bytes(r, c->body, n, 0);
        set_body(c, c->body, n);
        break;
    }
    case 6:
        set_body(c, STR_BODY("null"));
        break;
    case 7:
        set_body(c, STR_BODY("[{\"@slot\":0},{\"@slot\":1},{\"@slot\":2}]"));
        break;
    case 8:
        set_body(c, STR_BODY("{\"n\":3}"));
        break;
    case 9:
        set_body(c, STR_BODY("a\0b"));
        break;
    case 10:
        set_body(c, r->big, BULK_BODY);
        break;
    default:
        break;
    }
    if (c->none) {
        return;
    }
    c->cd.nslots = (b / SP_BODY_KINDS) % 4;
    for (size_t i = 0; i < c->cd.nslots; i++) {
        next_ref(r, &c->refs[i]);
        c->slots[i] = c->refs[i].s;
    }
    c->cd.slots = c->cd.nslots > 0 ? c->slots : NULL;
}

static const keel_capdata *cap_arg(const cap_op *c)
{
    return c->none ? NULL : &c->cd;
}

/* Never fulfil a promise to a protected vat's object (see the top). */
static void unforward(const fuzz_run *r, cap_op *c)
{
    const size_t n = strlen(KEEL_CAPDATA_SLOT0);
    if (!c->none && c->cd.nslots == 1 && c->cd.body.len == n &&
        memcmp(c->cd.body.ptr, KEEL_CAPDATA_SLOT0, n) == 0 &&
        is_protected(r, c->slots[0])) {
        c->slots[0] = "o+0";
    }
}

static const char *next_key(fuzz_run *r, char *buf)
{
    unsigned k = next_byte(r) % SP_KEY_KINDS;
    switch (k) {
    case SP_KEY_NULL:
        return NULL;
    case SP_KEY_EMPTY:
        return "";
    case SP_KEY_SHORT: {
        size_t n = 1 + next_byte(r) % 16;
        next_bytes(r, (uint8_t *)buf, n, 1);
        buf[n] = '\0';
        return buf;
    }
    case 3:
        return "a";
    case SP_KEY_LONGEST:
    case SP_KEY_TOO_LONG: {
        size_t n = k == SP_KEY_LONGEST ? KEEL_VATSTORE_KEY_MAX
                                       : KEEL_VATSTORE_KEY_MAX + 1;
        memset(buf, 'k', n);
        buf[n] = '\0';
        return buf;
    }
    case 6:
        memset(buf, 'k', KEY_BUF - 1);
        buf[KEY_BUF - 1] = '\0';
        return buf;
    case SP_KEY_FIXED:
        return "count";
    case 8:
        return "a.b\xff";
    default:
        return "vs.1.count"; /* looks like the kernel's own key */
    }
}

/* ---- the program's ops -------------------------------------------------- */

static void op_send(fuzz_run *r)
{
    ref_op target, res;
    cap_op c;
    char mbuf[301];
    const char *result = NULL;
    next_ref(r, &target);
    const char *method = next_method(r, mbuf);
    next_capdata(r, &c);
    unsigned rk = next_byte(r) % SP_RESULT_KINDS;
    if (rk == 1) {
        FUZZ_ASSERT(keel_syscall_alloc_promise(r->sys, res.buf) == KEEL_OK);
        pool_add(r, res.buf);
        snprintf(r->last_promise, KEEL_VREF_MAX, "%.*s",
                 (int)(KEEL_VREF_MAX - 1), res.buf);
        result = res.buf;
    } else if (rk == 2) {
        next_ref(r, &res);
        result = res.s;
    } else if (rk == 3) {
        result = r->last_promise;
    }
    if (is_protected(r, target.s)) {
        target.s = r->peers[PEER_VICTIM];
    }
    int rc = keel_syscall_send(r->sys, target.s, method, cap_arg(&c), result);
    check_any(r, rc, "send");
}

static void op_call(fuzz_run *r)
{
    static const int peer_of[SP_CALL_KINDS] = {
        [SP_CALL_BOB_PING] = PEER_BOB,
        [SP_CALL_COUNTER_INCR] = PEER_COUNTER,
        [SP_CALL_COUNTER_GET] = PEER_COUNTER,
        [SP_CALL_VICTIM_INCR] = PEER_VICTIM,
        [SP_CALL_VICTIM_GET] = PEER_VICTIM,
    };
    unsigned which = next_byte(r) % SP_CALL_KINDS;
    unsigned arg = next_byte(r);
    unsigned flags = next_byte(r);
    char body[32], result[KEEL_VREF_MAX];
    const char *method = "get";
    const char *slots[2];
    ref_op extra[2];
    keel_capdata cd = {0};
    if (!r->setup_done) {
        return; /* the vat knows no other vat yet */
    }
    if (which == SP_CALL_BOB_PING) {
        method = "ping";
        snprintf(body, sizeof(body), "{\"i\":%u}", arg);
    } else if (which == SP_CALL_COUNTER_INCR || which == SP_CALL_VICTIM_INCR) {
        method = "incr";
        snprintf(body, sizeof(body), "{\"n\":%u}", arg);
    } else {
        snprintf(body, sizeof(body), "{}");
    }
    cd.body.ptr = body;
    cd.body.len = strlen(body);
    if (flags & 4) {
        for (int i = 0; i < 2; i++) {
            snprintf(extra[i].buf, FORGE_MAX, "%s",
                     r->pool[next_byte(r) % r->npool]);
            slots[i] = extra[i].buf;
        }
        cd.slots = slots;
        cd.nslots = 2;
    }
    if (flags & 1) {
        FUZZ_ASSERT(keel_syscall_alloc_promise(r->sys, result) == KEEL_OK);
        pool_add(r, result);
        snprintf(r->last_promise, KEEL_VREF_MAX, "%s", result);
    }
    int rc = keel_syscall_send(r->sys, r->peers[peer_of[which]], method, &cd,
                               flags & 1 ? result : NULL);
    /* The pool's slots may have been retired: only a call without them
     * is legal by construction. */
    if (flags & 4) {
        check_any(r, rc, "call with slots");
    } else {
        check_exact(r, rc, 1, 0, "call");
    }
    int sent = rc == KEEL_OK;
    /* with slots, counter refuses the incr (vats/counter.c C3) */
    if (sent && which == SP_CALL_COUNTER_INCR && !(flags & 4)) {
        if (r->mode == ACT_OWN) {
            r->counter_total += arg;
        } else if (r->mode == ACT_HELD &&
                   (r->held_unknown || r->held_illegal)) {
            r->held_incr_maybe += arg;
        } else if (r->mode == ACT_HELD) {
            r->held_incr_sure += arg;
        } else {
            r->act_incr += arg;
        }
    }
    if (sent && (flags & 3) == 3) {
        check_exact(r, keel_syscall_subscribe(r->sys, result), 1, 0,
                    "subscribe to a call's result");
    }
}

static void op_resolve(fuzz_run *r, int self)
{
    ref_op p;
    cap_op c;
    next_ref(r, &p);
    if (self) {
        memset(&c, 0, sizeof(c));
        c.slots[0] = p.s;
        c.cd.slots = c.slots;
        c.cd.nslots = 1;
        set_body(&c, KEEL_CAPDATA_SLOT0, strlen(KEEL_CAPDATA_SLOT0));
        check_any(r, keel_syscall_resolve(r->sys, p.s, 0, &c.cd),
                  "resolve to itself");
        return;
    }
    int rejected = next_byte(r) & 1;
    next_capdata(r, &c);
    unforward(r, &c);
    check_any(r, keel_syscall_resolve(r->sys, p.s, rejected, cap_arg(&c)),
              "resolve");
}

static void op_exit(fuzz_run *r)
{
    cap_op c;
    int failure = next_byte(r) & 1;
    next_capdata(r, &c);
    if (check_any(r, keel_syscall_exit(r->sys, failure, cap_arg(&c)), "exit")) {
        r->exited = 1; /* held: it runs, or an earlier one killed the vat */
        if (r->mode == ACT_OWN) {
            r->dead = 1; /* committed, then terminated at once */
        }
    }
}

static void op_vs_set(fuzz_run *r)
{
    char kbuf[KEY_BUF];
    uint8_t vbuf[SHORT_MAX];
    const void *val = vbuf;
    size_t len = 0;
    const char *key = next_key(r, kbuf);
    unsigned kind = next_byte(r) % SP_VALUE_KINDS;
    if (kind == SP_VALUE_BIG && r->big_left > 0) {
        r->big_left--;
        val = r->big;
        len = KEEL_VATSTORE_VALUE_MAX;
    } else if (kind == SP_VALUE_TOO_BIG) {
        val = r->big;
        len = KEEL_VATSTORE_VALUE_MAX + 1;
    } else if (kind == 0) {
        val = NULL;
    } else if (kind == 3) {
        val = r->big;
        len = MID_VALUE;
    } else if (kind != 1) {
        len = next_byte(r) % SHORT_MAX;
        next_bytes(r, vbuf, len, 0);
    }
    int legal = key_legal(key) && len <= KEEL_VATSTORE_VALUE_MAX;
    int rc = keel_syscall_vatstore_set(r->sys, key, val, len);
    check_exact(r, rc, legal, 0, "vatstore_set");
    if (rc == KEEL_OK && r->mode == ACT_HELD) {
        held_write(r, key, val, len, 0, legal);
    } else if (rc == KEEL_OK) {
        vs_model_set(r, key, val, len);
    }
}

static void op_vs_get(fuzz_run *r)
{
    char kbuf[KEY_BUF];
    keel_bytes v = {0};
    const char *key = next_key(r, kbuf);
    int legal = key_legal(key);
    int rc = keel_syscall_vatstore_get(r->sys, key, &v);
    check_exact(r, rc, legal, 1, "vatstore_get");
    if (rc < 0 || !legal) {
        return;
    }
    int found;
    size_t i = vs_find(r, key, &found);
    FUZZ_ASSERTF(rc == found, "vatstore_get \"%.40s\" returned %d, model %d",
                 key, rc, found);
    if (found) {
        FUZZ_ASSERTF(
            v.len == r->vs[i].len &&
                (v.len == 0 || memcmp(v.ptr, r->vs[i].val, v.len) == 0),
            "vatstore_get \"%.40s\": %zu bytes, model %zu or other "
            "bytes",
            key, v.len, r->vs[i].len);
    }
}

static void op_vs_delete(fuzz_run *r)
{
    char kbuf[KEY_BUF];
    const char *key = next_key(r, kbuf);
    int rc = keel_syscall_vatstore_delete(r->sys, key);
    check_exact(r, rc, key_legal(key), 0, "vatstore_delete");
    if (rc == KEEL_OK && r->mode == ACT_HELD) {
        held_write(r, key, NULL, 0, 1, key_legal(key));
    } else if (rc == KEEL_OK) {
        vs_model_delete(r, key);
    }
}

static void op_vs_next(fuzz_run *r)
{
    char kbuf[KEY_BUF];
    char out[KEEL_VATSTORE_KEY_MAX + 1];
    const char *after = next_key(r, kbuf);
    int small = next_byte(r) & 1;
    size_t cap = small ? 8 : sizeof(out);
    /* "" is legal here: it asks for the first key. */
    int legal =
        !small && after != NULL && strlen(after) <= KEEL_VATSTORE_KEY_MAX;
    int rc = keel_syscall_vatstore_next_key(r->sys, after, out, cap);
    check_exact(r, rc, legal, 1, "vatstore_next_key");
    if (rc < 0 || !legal) {
        return;
    }
    int found;
    size_t i = vs_find(r, after, &found);
    if (found) {
        i++;
    }
    FUZZ_ASSERTF(rc == (i < r->nvs),
                 "vatstore_next_key returned %d, "
                 "model has %zu keys after",
                 rc, r->nvs - i);
    if (rc == 1) {
        FUZZ_ASSERTF(strcmp(out, r->vs[i].key) == 0,
                     "vatstore_next_key: \"%.40s\", model \"%.40s\"", out,
                     r->vs[i].key);
    }
}

static void on_timer(void *arg, keel_syscall *sys);
static void on_work_done(void *arg, keel_syscall *sys);

static void work_nothing(void *arg)
{
    (void)arg; /* runs on the thread pool: touches nothing */
}

static void op_send_self(fuzz_run *r)
{
    uint8_t b = next_byte(r);
    char result[KEEL_VREF_MAX];
    size_t own[POOL_MAX], nown = 0;
    for (size_t i = 0; i < r->npool; i++) {
        if (strncmp(r->pool[i], "o+", 2) == 0) {
            own[nown++] = i;
        }
    }
    const char *target = r->pool[own[(b & 0x7f) % nown]]; /* o+0 is one */
    keel_capdata cd = {.body = {STR_BODY("{}")}};
    if (b & 0x80) {
        FUZZ_ASSERT(keel_syscall_alloc_promise(r->sys, result) == KEEL_OK);
        pool_add(r, result);
        snprintf(r->last_promise, KEEL_VREF_MAX, "%s", result);
    }
    check_exact(
        r,
        keel_syscall_send(r->sys, target, "go", &cd, b & 0x80 ? result : NULL),
        1, 0, "send to its own object");
}

static void op_answer(fuzz_run *r)
{
    unsigned how = next_byte(r) & 3;
    if (r->nresults == 0) {
        return;
    }
    const char *p = r->results[--r->nresults];
    keel_capdata cd = {.body = {STR_BODY("null")}};
    const char *slot = "o+0";
    if (how == 1) {
        cd.body.ptr = "{\"error\":\"no\"}";
        cd.body.len = strlen(cd.body.ptr);
    } else if (how == 2) {
        cd.body.ptr = KEEL_CAPDATA_SLOT0;
        cd.body.len = strlen(KEEL_CAPDATA_SLOT0);
        cd.slots = &slot;
        cd.nslots = 1;
    }
    /* Legal unless the program already resolved it or passed it on. */
    check_any(r, keel_syscall_resolve(r->sys, p, how == 1, &cd), "answer");
    if (how == 3) { /* twice: never legal */
        int rc = keel_syscall_resolve(r->sys, p, 0, &cd);
        check_exact(r, rc, 0, 0, "second resolve");
    }
}

/* SP_GC: a GC syscall on vrefs of the pool or forged ones. Whether it is
 * legal (held, dropped already, still reachable) is the kernel's to
 * judge: OK or EINVAL (S1, S2). */
static void op_gc(fuzz_run *r)
{
    static const char *const what[] = {"drop_imports", "retire_imports",
                                       "retire_exports", "abandon_exports"};
    unsigned g = next_byte(r);
    ref_op refs[3];
    const char *vs[3];
    size_t n = (g / 4) % 3 + 1;
    for (size_t i = 0; i < n; i++) {
        next_ref(r, &refs[i]);
        vs[i] = refs[i].s;
    }
    int rc;
    switch (g % 4) {
    case 0:
        rc = keel_syscall_drop_imports(r->sys, vs, n);
        break;
    case 1:
        rc = keel_syscall_retire_imports(r->sys, vs, n);
        break;
    case 2:
        rc = keel_syscall_retire_exports(r->sys, vs, n);
        break;
    default:
        rc = keel_syscall_abandon_exports(r->sys, vs, n);
        break;
    }
    check_any(r, rc, what[g % 4]);
}

static void run_op(fuzz_run *r, unsigned op)
{
    char buf[KEEL_VREF_MAX];
    switch (op) {
    case SP_SEND:
        op_send(r);
        break;
    case SP_CALL:
        op_call(r);
        break;
    case SP_SUBSCRIBE: {
        ref_op p;
        next_ref(r, &p);
        check_any(r, keel_syscall_subscribe(r->sys, p.s), "subscribe");
        break;
    }
    case SP_RESOLVE:
    case SP_RESOLVE_SELF:
        op_resolve(r, op == SP_RESOLVE_SELF);
        break;
    case SP_EXIT:
        op_exit(r);
        break;
    case SP_VS_SET:
        op_vs_set(r);
        break;
    case SP_VS_GET:
        op_vs_get(r);
        break;
    case SP_VS_DELETE:
        op_vs_delete(r);
        break;
    case SP_VS_NEXT:
        op_vs_next(r);
        break;
    case SP_ALLOC_OBJECT:
        FUZZ_ASSERT(keel_syscall_alloc_object(r->sys, buf) == KEEL_OK);
        pool_add(r, buf);
        break;
    case SP_ALLOC_PROMISE:
        FUZZ_ASSERT(keel_syscall_alloc_promise(r->sys, buf) == KEEL_OK);
        pool_add(r, buf);
        snprintf(r->last_promise, KEEL_VREF_MAX, "%s", buf);
        break;
    case SP_TIMER:
        FUZZ_ASSERT(keel_vat_timer(r->sys, next_byte(r) % 3, on_timer, r) ==
                    KEEL_OK);
        break;
    case SP_WORK:
        FUZZ_ASSERT(keel_vat_work(r->sys, work_nothing, on_work_done, r) ==
                    KEEL_OK);
        break;
    case SP_OUTSIDE:
        r->outside_pending++;
        break;
    case SP_HELD:
        r->held_pending++;
        break;
    case SP_FAIL:
        r->act_fail = r->delivering; /* a completion cannot fail */
        break;
    case SP_SEND_SELF:
        op_send_self(r);
        break;
    case SP_ANSWER:
        op_answer(r);
        break;
    case SP_GC:
        op_gc(r);
        break;
    default:
        FUZZ_ASSERTF(0, "opcode %u", op);
    }
}

/* ---- activations -------------------------------------------------------- */

static int vat_alive_expected(const fuzz_run *r)
{
    return !r->doomed && !r->exited;
}

/* The vat gets control: run the next block of the program. A delivery
 * (d != NULL) that arrives after the program is used up is answered with
 * "null" if it carries a result (S5: a live vat answers). */
static void activate(fuzz_run *r, enum act_mode mode, const keel_delivery *d)
{
    FUZZ_ASSERTF(!r->doomed && !r->exited,
                 "the fuzz vat got control (%s) after it was doomed or "
                 "exited",
                 d != NULL ? "delivery" : "callback or outside turn");
    r->mode = mode;
    r->delivering = d != NULL;
    r->act_doomed = 0;
    r->act_fail = 0;
    r->act_incr = 0;
    if (d != NULL) {
        absorb(r, d);
    }
    if (r->pc >= r->len) {
        if (d != NULL && d->kind == KEEL_DELIVER_MESSAGE && d->result != NULL) {
            keel_capdata cd = {.body = {STR_BODY("null")}};
            check_exact(r, keel_syscall_resolve(r->sys, d->result, 0, &cd), 1,
                        0, "answer after the program");
        }
    }
    while (r->pc < r->len) {
        unsigned op = next_byte(r) % SP_OP_COUNT;
        if (op == SP_YIELD) {
            break;
        }
        run_op(r, op);
    }
    if (mode == ACT_TXN) {
        /* S2: a doomed or failed transaction aborts; it still took the
         * vat with it. Only a committed one counts its increments. */
        if (!r->act_doomed && !r->act_fail) {
            r->counter_total += r->act_incr;
        }
        r->doomed |= r->act_doomed | r->act_fail;
    }
}

static void on_timer(void *arg, keel_syscall *sys)
{
    fuzz_run *r = arg;
    FUZZ_ASSERT(sys == r->sys);
    activate(r, ACT_TXN, NULL);
}

static void on_work_done(void *arg, keel_syscall *sys)
{
    on_timer(arg, sys);
}

/* ---- the fuzz vat ------------------------------------------------------- */

/* The params of both vats carry the run's address (see
 * LLVMFuzzerTestOneInput). */
static fuzz_run *run_of(const char *params_json)
{
    json_t *params = json_loads(params_json, 0, NULL);
    const char *ctx = json_string_value(json_object_get(params, "ctx"));
    void *p = NULL;
    FUZZ_ASSERTF(ctx != NULL && sscanf(ctx, "%p", &p) == 1 && p != NULL,
                 "vat params %s", params_json);
    json_decref(params);
    return p;
}

static int fv_start(keel_syscall *sys, const char *params_json, void **state)
{
    fuzz_run *r = run_of(params_json);
    FUZZ_ASSERTF(!r->started, "the fuzz vat started twice");
    r->started = 1;
    r->sys = sys;
    *state = r;
    pool_add(r, "o+0"); /* pool[0], never replaced */
    if (r->len > 0 && (r->prog[0] & SP_HDR_START) != 0) {
        r->pc = 1;
        activate(r, ACT_OWN, NULL);
    } else {
        r->pc = r->len > 0 ? 1 : 0;
    }
    return 0;
}

/* The first delivery is the bootstrap (boot queued it first). */
static void setup(fuzz_run *r, const keel_delivery *d)
{
    FUZZ_ASSERTF(d->kind == KEEL_DELIVER_MESSAGE &&
                     strcmp(d->method, "bootstrap") == 0 &&
                     strcmp(d->target, "o+0") == 0 &&
                     d->args.nslots == 1 + PEER_COUNT && d->result == NULL,
                 "first delivery is not the bootstrap");
    for (int i = 0; i < PEER_COUNT; i++) {
        snprintf(r->peers[i], KEEL_VREF_MAX, "%s", d->args.slots[1 + i]);
        pool_add(r, r->peers[i]);
    }
    const char *bob = r->peers[PEER_BOB];
    keel_capdata boot = {
        .body = {STR_BODY("{\"vats\":{\"bob\":{\"@slot\":0}}}")},
        .slots = &bob,
        .nslots = 1};
    keel_capdata go = {.body = {STR_BODY("{}")}};
    int rc = keel_syscall_send(r->sys, r->peers[PEER_ALICE], "bootstrap", &boot,
                               NULL);
    FUZZ_ASSERTF(rc == KEEL_OK, "bootstrap of alice: %s", keel_err_name(rc));
    rc = keel_syscall_send(r->sys, "o+0", "go", &go, NULL);
    FUZZ_ASSERTF(rc == KEEL_OK, "go: %s", keel_err_name(rc));
    r->setup_done = 1;
}

static int fv_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    fuzz_run *r = state;
    FUZZ_ASSERT(sys == r->sys);
    if (!r->setup_done) {
        FUZZ_ASSERTF(!r->doomed && !r->exited,
                     "the fuzz vat got its bootstrap after it was doomed");
        setup(r, d);
        return 0;
    }
    activate(r, ACT_TXN, d);
    return r->act_fail;
}

static void fv_stop(void *state)
{
    fuzz_run *r = state;
    r->stopped = 1;
}

static const keel_vat_ops fuzz_vat = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "fuzz",
    .start = fv_start,
    .deliver = fv_deliver,
    .stop = fv_stop,
};

/* The victim: keel's counter, wrapped so that the fuzz vat can make
 * syscalls while the victim's crank is open (SP_HELD). */
typedef struct victim {
    fuzz_run *r;
    const keel_vat_ops *inner;
    void *inner_state;
} victim;

static int victim_start(keel_syscall *sys, const char *params_json,
                        void **state)
{
    victim *v = calloc(1, sizeof(*v));
    FUZZ_ASSERT(v != NULL);
    v->r = run_of(params_json);
    v->inner = keel_vat_builtin("counter");
    FUZZ_ASSERT(v->inner != NULL);
    *state = v;
    return v->inner->start(sys, "{}", &v->inner_state);
}

static int victim_deliver(void *state, keel_syscall *sys,
                          const keel_delivery *d)
{
    victim *v = state;
    fuzz_run *r = v->r;
    if (r->held_pending > 0 && vat_alive_expected(r) && r->pc < r->len) {
        r->held_pending--;
        r->held_ran = 1;
        activate(r, ACT_HELD, NULL);
    }
    return v->inner->deliver(v->inner_state, sys, d);
}

static void victim_stop(void *state)
{
    victim *v = state;
    v->inner->stop(v->inner_state);
    free(v);
}

static const keel_vat_ops victim_vat = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "fuzz_victim",
    .start = victim_start,
    .deliver = victim_deliver,
    .stop = victim_stop,
};

static const keel_vat_ops *resolve_vat(void *arg, const char *name)
{
    (void)arg;
    if (strcmp(name, "fuzz") == 0) {
        return &fuzz_vat;
    }
    return strcmp(name, "fuzz_victim") == 0 ? &victim_vat : NULL;
}

/* ---- the harness -------------------------------------------------------- */

static void run_once(keel_kernel *k, uint64_t max_cranks, keel_run_stats *st)
{
    keel_run_options o = {.max_cranks = max_cranks};
    keel_diag d = {0};
    int rc = keel_kernel_run(k, &o, st, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "keel_kernel_run: %s: %s", keel_err_name(rc),
                 d.msg); /* S1 */
}

/* The vats' states from the status, by name. */
static const char *vat_state(keel_kernel *k, const char *name, char *buf,
                             size_t cap)
{
    char *json = NULL;
    keel_diag d = {0};
    int rc = keel_kernel_status_json(k, &json, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "status: %s", d.msg);
    json_t *st = json_loads(json, 0, NULL);
    FUZZ_ASSERT(st != NULL);
    size_t i;
    json_t *v;
    buf[0] = '\0';
    json_array_foreach(json_object_get(st, "vats"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0) {
            snprintf(buf, cap, "%s",
                     json_string_value(json_object_get(v, "state")));
        }
    }
    json_decref(st);
    free(json);
    return buf;
}

static int vat_alive(keel_kernel *k, const char *name)
{
    char buf[32];
    return strcmp(vat_state(k, name, buf, sizeof(buf)), "alive") == 0;
}

/* The victim's crank ended and the syscalls the fuzz vat made during it
 * ran (S2, S3, S4): an illegal-by-construction one or an exit terminated
 * the vat; if every one was legal by construction it is alive. If alive,
 * all of them ran: the held writes and increments count. */
static void after_held(keel_kernel *k, fuzz_run *r)
{
    int alive = vat_alive(k, "fuzz");
    FUZZ_ASSERTF(!alive || (!r->held_illegal && !r->exited),
                 "the fuzz vat survived an illegal held syscall or exit");
    FUZZ_ASSERTF(alive || r->held_illegal || r->exited || r->held_unknown,
                 "held syscalls, all legal, terminated the fuzz vat");
    held_writes_end(r, alive);
    r->counter_total += r->held_incr_sure;
    if (alive) {
        r->counter_total += r->held_incr_maybe;
    } else {
        /* Each held syscall is its own transaction: those before the one
         * that was illegal committed, and which one it was is not known
         * here. */
        r->counter_unsure |= r->held_incr_maybe > 0;
        r->doomed = 1;
        r->dead = 1;
    }
    r->held_ran = 0;
    r->held_illegal = 0;
    r->held_unknown = 0;
    r->held_incr_sure = 0;
    r->held_incr_maybe = 0;
}

/* Crank by crank, with outside turns between, until idle and the program
 * is used up. */
static void drive(keel_kernel *k, fuzz_run *r)
{
    for (int turn = 0;; turn++) {
        keel_run_stats st;
        FUZZ_ASSERTF(turn < MAX_TURNS, "no idle after %d turns", turn);
        if (r->outside_pending > 0) {
            r->outside_pending--;
            if (vat_alive_expected(r)) {
                activate(r, ACT_OWN, NULL);
            }
            continue;
        }
        run_once(k, 1, &st);
        if (r->held_ran) {
            after_held(k, r);
        }
        if (st.idle) {
            if (r->pc < r->len && vat_alive_expected(r)) {
                activate(r, ACT_OWN, NULL);
            } else if (r->outside_pending == 0) {
                break;
            }
        }
    }
}

static void expect_state(keel_kernel *k, const char *name, int alive)
{
    char buf[32];
    const char *s = vat_state(k, name, buf, sizeof(buf));
    FUZZ_ASSERTF(strcmp(s, alive ? "alive" : "terminated") == 0,
                 "vat %s is \"%s\", expected %s", name, s,
                 alive ? "alive" : "terminated");
}

/* A vatstore value read from outside, as a string; NULL if absent. */
static char *outside_get(keel_kernel *k, const char *vat, const char *key,
                         size_t *len)
{
    char *val = NULL;
    size_t n = 0;
    keel_diag d = {0};
    int rc = keel_kernel_vatstore_get(k, vat, key, &val, &n, &d);
    FUZZ_ASSERTF(rc == 0 || rc == 1, "vatstore of %s: %s", vat, d.msg);
    if (len != NULL) {
        *len = n;
    }
    return rc == 1 ? val : NULL;
}

static void expect_str(keel_kernel *k, const char *vat, const char *key,
                       const char *want)
{
    char *got = outside_get(k, vat, key, NULL);
    FUZZ_ASSERTF((got == NULL && want == NULL) ||
                     (got != NULL && want != NULL && strcmp(got, want) == 0),
                 "%s's %s is %s, expected %s", vat, key,
                 got != NULL ? got : "absent", want != NULL ? want : "absent");
    free(got);
}

static void send_outside(keel_kernel *k, const char *vat, const char *method,
                         const char *args, char *kp)
{
    keel_diag d = {0};
    int rc = keel_kernel_send(k, vat, method, args, kp, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "send to %s: %s", vat, d.msg);
}

static void expect_answer(keel_kernel *k, const char *kp, const char *what,
                          const char *want)
{
    char *body = NULL;
    keel_diag d = {0};
    int st = keel_kernel_promise(k, kp, &body, &d);
    FUZZ_ASSERTF(st == 1 && body != NULL && strcmp(body, want) == 0,
                 "%s: promise %s state %d body %s, expected fulfilled %s", what,
                 kp, st, body != NULL ? body : "-", want);
    free(body);
}

static void expect_answered(keel_kernel *k, const char *kp, const char *what)
{
    char *body = NULL;
    keel_diag d = {0};
    int st = keel_kernel_promise(k, kp, &body, &d);
    FUZZ_ASSERTF(st == 1, "%s: promise %s state %d, expected fulfilled", what,
                 kp, st);
    free(body);
}

/* Calls on the handle of a vat that is gone (S1). */
static void poke_dead(fuzz_run *r)
{
    keel_capdata cd = {.body = {STR_BODY("{}")}};
    keel_bytes v;
    char buf[KEEL_VATSTORE_KEY_MAX + 1];
    FUZZ_ASSERT(keel_syscall_send(r->sys, "o+0", "go", &cd, NULL) ==
                KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_resolve(r->sys, "p+1", 0, &cd) == KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_subscribe(r->sys, "p+1") == KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_exit(r->sys, 0, NULL) == KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_vatstore_set(r->sys, "a", "b", 1) == KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_vatstore_get(r->sys, "a", &v) == KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_vatstore_delete(r->sys, "a") == KEEL_EFAILED);
    FUZZ_ASSERT(keel_syscall_vatstore_next_key(r->sys, "", buf, sizeof(buf)) ==
                KEEL_EFAILED);
    /* Accepted, but never run (K32): activate() would catch it. */
    FUZZ_ASSERT(keel_vat_timer(r->sys, 0, on_timer, r) == KEEL_OK);
}

/* S4, S5 on the idle kernel. */
static void check_cluster(keel_kernel *k, fuzz_run *r)
{
    char bob_kp[KEEL_VREF_MAX], counter_kp[KEEL_VREF_MAX];
    char fuzz_kp[KEEL_VREF_MAX], want[64];
    keel_run_stats st;
    int alive = vat_alive_expected(r);
    expect_state(k, "fuzz", alive);
    for (int i = PEER_ALICE; i <= PEER_COUNTER; i++) {
        expect_state(k, peer_names[i], 1);
    }
    if (r->setup_done) {
        expect_str(k, "alice", "done", "1");
        snprintf(want, sizeof(want), "%d", ALICE_ROUNDS);
        expect_str(k, "alice", "answers", want);
    } else {
        expect_str(k, "alice", "done", NULL);
    }
    if (alive) {
        for (size_t i = 0; i < r->nvs; i++) {
            size_t len = 0;
            char *got = outside_get(k, "fuzz", r->vs[i].key, &len);
            FUZZ_ASSERTF(got != NULL && len == r->vs[i].len &&
                             memcmp(got, r->vs[i].val, len) == 0,
                         "fuzz's vatstore \"%.40s\" differs from the model",
                         r->vs[i].key);
            free(got);
        }
        send_outside(k, "fuzz", "ping", "{}", fuzz_kp);
    } else {
        keel_diag d = {0};
        FUZZ_ASSERT(keel_kernel_send(k, "fuzz", "ping", "{}", fuzz_kp, &d) ==
                    KEEL_ENOENT);
        poke_dead(r);
    }
    send_outside(k, "bob", "ping", "{\"i\":41}", bob_kp);
    send_outside(k, "counter", "get", "{}", counter_kp);
    run_once(k, 0, &st);
    FUZZ_ASSERT(st.idle);
    expect_answer(k, bob_kp, "bob's ping", "{\"value\":42}");
    if (r->counter_unsure) {
        expect_answered(k, counter_kp, "counter's get");
    } else {
        snprintf(want, sizeof(want), "{\"value\":%llu}",
                 (unsigned long long)r->counter_total);
        expect_answer(k, counter_kp, "counter's get", want);
    }
    if (alive) {
        expect_answer(k, fuzz_kp, "the fuzz vat's answer", "null");
    }
    FUZZ_ASSERTF(alive || r->stopped, "the terminated fuzz vat never stopped");
}

/* S6 */
static void audit(const char *state)
{
    keel_audit_options o;
    keel_audit_report rep;
    keel_diag d = {0};
    keel_audit_options_init(&o);
    memset(&rep, 0, sizeof(rep));
    int rc = keel_audit(state, &o, &rep, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "keel_audit: %s: %s", keel_err_name(rc), d.msg);
    FUZZ_ASSERTF(rep.violations == 0,
                 "audit: %llu violation(s); first at LSN %llu crank %llu: %s",
                 (unsigned long long)rep.violations,
                 (unsigned long long)rep.violation_lsn,
                 (unsigned long long)rep.violation_crank, rep.violation);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const scratch *s = scratch_get();
    fuzz_run *r = calloc(1, sizeof(*r));
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    char config[1024];
    FUZZ_ASSERT(r != NULL);
    r->prog = data;
    r->len = size;
    r->big = s->big;
    r->big_left = SP_BIG_VALUES;

    keel_kernel_options_init(&o);
    o.sync = KEEL_SYNC_OFF;
    o.resolve_vat = resolve_vat;
    o.deterministic = size == 0 || (data[0] & SP_HDR_REALTIME) == 0;
    int rc = keel_kernel_open(s->state, &o, &k, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "open %s: %s", s->state, d.msg);
    /* The vat finds this input's run through its params: the config is
     * this process's own, read back by start() in the same process. */
    snprintf(config, sizeof(config),
             "{\"bootstrap\":\"fuzz\",\"vats\":{"
             "\"fuzz\":{\"builtin\":\"fuzz\",\"params\":{\"ctx\":\"%p\"}},"
             "\"alice\":{\"builtin\":\"pingpong\","
             "\"params\":{\"role\":\"alice\",\"rounds\":%d}},"
             "\"bob\":{\"builtin\":\"pingpong\",\"params\":{\"role\":\"bob\"}},"
             "\"counter\":{\"builtin\":\"counter\"},"
             "\"victim\":{\"builtin\":\"fuzz_victim\","
             "\"params\":{\"ctx\":\"%p\"}}}}",
             (void *)r, ALICE_ROUNDS, (void *)r);
    rc = keel_kernel_boot(k, config, NULL, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "boot: %s", d.msg);
    FUZZ_ASSERT(r->started);

    drive(k, r);
    check_cluster(k, r);

    rc = keel_kernel_close(k, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "close: %s", d.msg);
    audit(s->state);
    rm_tree(s->state);
    vs_model_free(r);
    free(r);
    return 0;
}
