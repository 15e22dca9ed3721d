/*
 * store/keyspace.h — the kernel's keyspace as a format: every table, key
 * and value the kernel keeps in the store, byte by byte, with the one
 * encoder and the one decoder of each (the encoders inline here, the
 * decoder and the human rendering in store/keyspace.c). The kernel,
 * snapshots, the audit and the tools compose and take apart keys only
 * through these functions; nothing else knows a key's bytes.
 *
 * Why binary: LMDB orders keys bytewise, so fixed-width big-endian ids
 * make key order numeric order (the run queue, a vat's c-list, promises
 * all scan in id order), and the crank path composes a key with a few
 * stores instead of decimal formatting.
 *
 * State format version KEEL_STATE_FORMAT_VERSION (3: version 2 plus the
 * garbage-collection tables 0x0A..0x0C and the c-list's dropped flag;
 * a version 2 state is refused, kernel/kernel.c K37). Version 1 (decimal
 * string keys such as "kp.123", "c.4.k.ko7", with "k.version" = "1") is
 * no longer read: it is recognised by its "k.version" key and refused
 * with KEEL_EVERSION (KEEL__KS_V1_VERSION_KEY).
 *
 * Notation: u8/u32/u64 are unsigned big-endian integers of 1/4/8 bytes;
 * vid a vat id (u32, from 1); bytes[] raw bytes to the end of the key.
 *
 *   kref (9 bytes): u8 kind (0x01 object "ko<n>", 0x02 promise "kp<n>"),
 *                   u64 n (from 1)
 *   vref (9 bytes): u8 kind (0x01 "o+", 0x02 "o-", 0x03 "p+", 0x04 "p-"),
 *                   u64 n ("o+0" is a vat's root)
 *
 * Every key starts with a table tag byte (KS1). Tables, with the human
 * form keel__ks_render() gives each key (the version 1 key, where there
 * was one) and the value:
 *
 *   0x01 meta: tag, u8 field                                 2 bytes
 *        field 0x01 k.version     u64 state format version
 *              0x02 k.booted      u64 1 once boot committed
 *              0x03 k.crank       u64 cranks committed
 *              0x04 k.hash        u64 activity hash (rendered as 16 hex)
 *              0x05 k.next.vat    u64 next vat id (never reused)
 *              0x06 k.next.ko     u64 next object number
 *              0x07 k.next.kp     u64 next promise number
 *              0x08 k.rq.head     u64 run queue: items head .. tail - 1
 *              0x09 k.rq.tail     u64
 *              0x0A k.unresolved  u64 promises not yet settled
 *   0x02 run queue: tag, u64 seq            rq.<seq>         9 bytes
 *        value: a run-queue item (store/codec.h)
 *   0x03 vat record: tag, vid, u8 field     v.<vid>.<field>  6 bytes
 *        field 0x01 name     bytes: the vat's name
 *              0x02 state    u8: 0x01 alive, 0x02 terminated
 *              0x03 src      bytes: its config entry (JSON)
 *              0x04 root     kref: its root object
 *              0x05 maxo     u64 highest o+N it exported
 *              0x06 maxp     u64 highest p+N it exported
 *              0x07 nexti    u64 next o-N it is given
 *              0x08 nextq    u64 next p-N it is given
 *              0x09 cleanup  u64 crank, then bytes[]: the vat is
 *                   terminated and its cleanup goes on in batches (K6):
 *                   the promises it decides rejected (its decider-index
 *                   keys), then its c-list and vatstore keys deleted;
 *                   crank is the crank of the last batch, bytes[] the last
 *                   key done (none yet: empty). Absent once nothing of the
 *                   vat is left
 *              0x0A retp     u64 L: every p+N of the vat with N <= L was
 *                   used and retired (K7); retired markers c.<vid>.r.*
 *                   are kept only above L
 *   0x04 vat-name index: tag, bytes[] name  vn.<name>        1 + len
 *        value: u32 vid
 *   0x05 c-list: tag, vid, u8 sub, ...                       15 bytes
 *        sub 0x01 kref -> vref: kref        c.<vid>.k.<kref>  value: vref
 *                   [u8 0x00]: 9 bytes while the vat can reach the kref,
 *                   10 (a trailing 0x00, "dropped") once it only
 *                   recognizes it (dropImports; an exporter told
 *                   dropExports) (KS4)
 *            0x02 vref -> kref: vref        c.<vid>.v.<vref>  value: kref
 *            0x03 retired p+N: vref         c.<vid>.r.<vref>  value: empty
 *                   (only for N > v.<vid>.retp: the markers at and below
 *                   it are folded into that watermark)
 *   0x06 object owner: tag, u64 n           ko.<n>           9 bytes
 *        value: u32 owner vid
 *   0x07 promise record: tag, u64 n         kp.<n>           9 bytes
 *        value: a promise record (store/codec.h)
 *   0x08 decider index: tag, vid, u64 n     d.<vid>.kp<n>    13 bytes
 *        value: empty (vat vid decides kp<n>)
 *   0x09 vatstore: tag, vid, bytes[] key    vs.<vid>.<key>   5 + len
 *        value: the vat's bytes
 *   0x0A refcount: tag, kref                 rc.<kref>        10 bytes
 *        value: u32 reachable, u32 recognizable: how many holders the
 *        kref has (KS4); absent when both are 0
 *   0x0B GC action: tag, vid, u8 type, kref  gc.<vid>.<t>.<kref> 15 bytes
 *        type 0x01 'd' dropExports, 0x02 'x' retireExports (to the
 *        exporter vid), 0x03 'i' retireImports (to an importer vid);
 *        value: empty. Delivered in key order before the run queue
 *   0x0C pin: tag, kref                      pin.<kref>       10 bytes
 *        value: empty: the host holds the kref (a keel_kernel_send
 *        result it may read with keel_kernel_promise): one holder
 *
 * A vat's keys of one table share a prefix (tag, vid) (keel__ks_vat_prefix):
 * what its termination cleanup scans.
 *
 * Invariants:
 *   KS1 Every key is tag byte first; a key decodes (keel__ks_decode) only
 *       if its tag is a table above, its length that table's (at least 1 +
 *       5 bytes for vat-name and vatstore keys: a name or user key is never
 *       empty), and its fields in range (a meta field, a vat field, a kref
 *       or vref kind, a c-list sub, vid >= 1). Anything else is not a key
 *       of the kernel's keyspace: damage wherever it is found.
 *   KS2 Integers are big-endian and fixed-width, so the store's bytewise
 *       order (common/keys.h KY1) is (tag, vid, field, number) order.
 *   KS4 A kref's holders, which rc.<kref> counts, are: each c-list entry
 *       c.<v>.k.<kref> whose vref is not an o+N (an exporter's own entry
 *       is no holder; a promise's every entry is), reachable while the
 *       entry is not dropped; each mention in a run-queue item (a send's
 *       target, slots and result, a notify's promise); each mention in
 *       a promise record (resolution slots, queued messages' slots and
 *       results); a pin. Each holder counts 1 in recognizable, and 1 in
 *       reachable unless it is a dropped c-list entry.
 *   KS3 Encoders write at most KEEL__KS_KEY_MAX bytes; keel__ks_render
 *       of a decoded key gives back the version 1 key string for it, and
 *       keel__ks_parse of that string the same key (tests and tools name
 *       keys that way).
 */
#ifndef KEEL_STORE_KEYSPACE_H
#define KEEL_STORE_KEYSPACE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* LMDB's compile-time key limit (checked against the library on open). */
#define KEEL__STORE_MAX_KEY_BYTES   511u
#define KEEL__STORE_MAX_VALUE_BYTES (16u * 1024 * 1024)
/* A buffer for a key composed from its parts: larger than any key the
 * store accepts, so a composed key too long for the store is caught by the
 * store's length check. */
#define KEY_MAX 1200
/* The longest key an encoder writes (a vatstore or vat-name key with 1024
 * bytes of name: longer input is cut, and the store refuses the key). */
#define KEEL__KS_KEY_MAX (5u + 1024u)

_Static_assert(KEY_MAX > KEEL__STORE_MAX_KEY_BYTES,
               "a composed key buffer holds every storable key");
_Static_assert(KEY_MAX >= KEEL__KS_KEY_MAX, "an encoded key fits KEY_MAX");

/* The version 1 state's version key, only to refuse such a state. */
#define KEEL__KS_V1_VERSION_KEY "k.version"

enum keel__ks_table {
    KS_META = 0x01,
    KS_RUNQ = 0x02,
    KS_VAT = 0x03,
    KS_VATNAME = 0x04,
    KS_CLIST = 0x05,
    KS_OBJECT = 0x06,
    KS_PROMISE = 0x07,
    KS_DECIDER = 0x08,
    KS_VATSTORE = 0x09,
    KS_REFCOUNT = 0x0A,
    KS_GCACT = 0x0B,
    KS_PIN = 0x0C,
    KS_NTABLES = 0x0D /* one past the last tag */
};

enum keel__ks_meta {
    KM_VERSION = 0x01,
    KM_BOOTED = 0x02,
    KM_CRANK = 0x03,
    KM_HASH = 0x04,
    KM_NEXT_VAT = 0x05,
    KM_NEXT_KO = 0x06,
    KM_NEXT_KP = 0x07,
    KM_RQ_HEAD = 0x08,
    KM_RQ_TAIL = 0x09,
    KM_UNRESOLVED = 0x0A,
    KM_N = 0x0B
};

/* GC action types (KS_GCACT) */
enum {
    KG_DROP_EXPORT = 0x01,
    KG_RETIRE_EXPORT = 0x02,
    KG_RETIRE_IMPORT = 0x03
};

enum keel__ks_vatfield {
    KV_NAME = 0x01,
    KV_STATE = 0x02,
    KV_SRC = 0x03,
    KV_ROOT = 0x04,
    KV_MAXO = 0x05,
    KV_MAXP = 0x06,
    KV_NEXTI = 0x07,
    KV_NEXTQ = 0x08,
    KV_CLEANUP = 0x09,
    KV_RETP = 0x0A,
    KV_N = 0x0B
};

enum { KC_K = 0x01, KC_V = 0x02, KC_R = 0x03 }; /* c-list subs */
enum { KS_ALIVE = 0x01, KS_TERMINATED = 0x02 }; /* vat state value */
enum { KR_O = 0x01, KR_P = 0x02 };              /* kref kinds */
/* vref kinds */
enum { KR_OPLUS = 0x01, KR_OMINUS = 0x02, KR_PPLUS = 0x03, KR_PMINUS = 0x04 };

#define KEEL__KS_REF_BYTES 9u

typedef struct keel__kref {
    uint8_t kind; /* KR_O, KR_P */
    uint64_t n;
} keel__kref;

typedef struct keel__vref {
    uint8_t kind; /* KR_OPLUS .. KR_PMINUS */
    uint64_t n;
} keel__vref;

/* A key being composed: bytes and length. */
typedef struct keel__key {
    size_t n;
    uint8_t b[KEEL__KS_KEY_MAX];
} keel__key;

/* A decoded key (keel__ks_decode): which fields are set depends on table. */
typedef struct keel__ks_key {
    uint8_t table;       /* enum keel__ks_table */
    uint8_t field;       /* META: meta field; VAT: vat field; CLIST: sub;
                            GCACT: type */
    uint32_t vid;        /* VAT, CLIST, DECIDER, VATSTORE, GCACT */
    uint64_t n;          /* RUNQ seq; OBJECT, PROMISE, DECIDER number */
    keel__kref kref;     /* CLIST KC_K, REFCOUNT, GCACT, PIN */
    keel__vref vref;     /* CLIST KC_V, KC_R */
    const uint8_t *rest; /* VATNAME name, VATSTORE user key (borrowed) */
    size_t rest_len;
} keel__ks_key;

/* ---- integers ------------------------------------------------------------ */

static inline void keel__ks_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline void keel__ks_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint64_t keel__ks_rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static inline uint32_t keel__ks_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* ---- key encoders (KS1, KS2) -------------------------------------------- */

static inline keel__key *keel__ks_meta(keel__key *k, uint8_t field)
{
    k->b[0] = KS_META;
    k->b[1] = field;
    k->n = 2;
    return k;
}

static inline keel__key *keel__ks_runq(keel__key *k, uint64_t seq)
{
    k->b[0] = KS_RUNQ;
    keel__ks_be64(k->b + 1, seq);
    k->n = 9;
    return k;
}

static inline keel__key *keel__ks_vat(keel__key *k, uint32_t vid, uint8_t field)
{
    k->b[0] = KS_VAT;
    keel__ks_be32(k->b + 1, vid);
    k->b[5] = field;
    k->n = 6;
    return k;
}

/* Raw bytes after a prefix of pre bytes, cut at KEEL__KS_KEY_MAX (KS3). */
static inline keel__key *keel__ks_tail(keel__key *k, size_t pre, const void *p,
                                       size_t n)
{
    if (n > KEEL__KS_KEY_MAX - pre) {
        n = KEEL__KS_KEY_MAX - pre;
    }
    if (n > 0) {
        memcpy(k->b + pre, p, n);
    }
    k->n = pre + n;
    return k;
}

static inline keel__key *keel__ks_vatname(keel__key *k, const char *name,
                                          size_t n)
{
    k->b[0] = KS_VATNAME;
    return keel__ks_tail(k, 1, name, n);
}

/* (tag, vid): the prefix of all of a vat's keys of table tag (KS_VAT,
 * KS_CLIST, KS_DECIDER, KS_VATSTORE). */
static inline keel__key *keel__ks_vat_prefix(keel__key *k, uint8_t tag,
                                             uint32_t vid)
{
    k->b[0] = tag;
    keel__ks_be32(k->b + 1, vid);
    k->n = 5;
    return k;
}

/* (tag): the prefix of every key of a table (scans, counts). */
static inline keel__key *keel__ks_table(keel__key *k, uint8_t tag)
{
    k->b[0] = tag;
    k->n = 1;
    return k;
}

/* (KS_CLIST, vid, sub[, ref kind]): a vat's c-list entries of one sub
 * (KC_K, KC_V, KC_R), of one ref kind unless kind is 0. */
static inline keel__key *keel__ks_clist_prefix(keel__key *k, uint32_t vid,
                                               uint8_t sub, uint8_t kind)
{
    keel__ks_vat_prefix(k, KS_CLIST, vid);
    k->b[5] = sub;
    k->b[6] = kind;
    k->n = kind != 0 ? 7 : 6;
    return k;
}

static inline void keel__ks_ref(uint8_t *p, uint8_t kind, uint64_t n)
{
    p[0] = kind;
    keel__ks_be64(p + 1, n);
}

static inline keel__key *keel__ks_clist_k(keel__key *k, uint32_t vid,
                                          keel__kref r)
{
    keel__ks_vat_prefix(k, KS_CLIST, vid);
    k->b[5] = KC_K;
    keel__ks_ref(k->b + 6, r.kind, r.n);
    k->n = 15;
    return k;
}

/* sub KC_V (vref -> kref) or KC_R (a retired p+N). */
static inline keel__key *keel__ks_clist_v(keel__key *k, uint32_t vid,
                                          uint8_t sub, keel__vref r)
{
    keel__ks_vat_prefix(k, KS_CLIST, vid);
    k->b[5] = sub;
    keel__ks_ref(k->b + 6, r.kind, r.n);
    k->n = 15;
    return k;
}

static inline keel__key *keel__ks_object(keel__key *k, uint64_t n)
{
    k->b[0] = KS_OBJECT;
    keel__ks_be64(k->b + 1, n);
    k->n = 9;
    return k;
}

static inline keel__key *keel__ks_promise(keel__key *k, uint64_t n)
{
    k->b[0] = KS_PROMISE;
    keel__ks_be64(k->b + 1, n);
    k->n = 9;
    return k;
}

/* The record of kref r: ko.<n> or kp.<n>. */
static inline keel__key *keel__ks_kref_record(keel__key *k, keel__kref r)
{
    return r.kind == KR_O ? keel__ks_object(k, r.n) : keel__ks_promise(k, r.n);
}

static inline keel__key *keel__ks_decider(keel__key *k, uint32_t vid,
                                          uint64_t kp)
{
    keel__ks_vat_prefix(k, KS_DECIDER, vid);
    keel__ks_be64(k->b + 5, kp);
    k->n = 13;
    return k;
}

static inline keel__key *keel__ks_vatstore(keel__key *k, uint32_t vid,
                                           const void *key, size_t n)
{
    keel__ks_vat_prefix(k, KS_VATSTORE, vid);
    return keel__ks_tail(k, 5, key, n);
}

/* rc.<kref>, pin.<kref> (tag KS_REFCOUNT or KS_PIN). */
static inline keel__key *keel__ks_kref_key(keel__key *k, uint8_t tag,
                                           keel__kref r)
{
    k->b[0] = tag;
    keel__ks_ref(k->b + 1, r.kind, r.n);
    k->n = 10;
    return k;
}

static inline keel__key *keel__ks_gcact(keel__key *k, uint32_t vid,
                                        uint8_t type, keel__kref r)
{
    keel__ks_vat_prefix(k, KS_GCACT, vid);
    k->b[5] = type;
    keel__ks_ref(k->b + 6, r.kind, r.n);
    k->n = 15;
    return k;
}

/* ---- decoder, refs, rendering (store/keyspace.c) ------------------------- */

/* Decode key[0, n) into *out (KS1). @return 1, or 0 when it is not a key
 * of the keyspace. */
int keel__ks_decode(const uint8_t *key, size_t n, keel__ks_key *out);

/* A table's name (snapshot manifests, messages): "meta", "runq", "vat",
 * "vatname", "clist", "object", "promise", "decider", "vatstore"; NULL
 * for a tag that is no table. */
const char *keel__ks_table_name(uint8_t tag);

/* A kref or vref value (9 bytes). @return 1, or 0 if v is not one. */
int keel__ks_kref_val(const void *v, size_t n, keel__kref *r);
int keel__ks_vref_val(const void *v, size_t n, keel__vref *r);
/* A c-list c.<v>.k.<kref> value (KS4): its vref and whether it is still
 * reachable (9 bytes) or dropped (10, a trailing 0x00). @return 1, or 0
 * if v is not one. */
int keel__ks_clist_kval(const void *v, size_t n, keel__vref *r, int *reachable);

/* The string forms: krefs as messages carry them ("ko7", "kp3"), vrefs as
 * the vat ABI does ("o+5", "p-2": no sign, no leading zero but "0", n
 * within u64). Parsing is where malformed syntax is refused. @return 1
 * parsed, 0 malformed; the formatters write at most KEEL__KS_REF_STR
 * bytes with the NUL and return the length. */
#define KEEL__KS_REF_STR 24
int keel__ks_kref_parse(const char *s, keel__kref *r);
int keel__ks_vref_parse(const char *s, keel__vref *r);
size_t keel__ks_kref_str(keel__kref r, char *out);
size_t keel__ks_vref_str(keel__vref r, char *out);

/* A key for humans (KS3): the version 1 form of a key that decodes
 * ("k.crank", "rq.5", "c.4.v.o+5", "vs.3.<key>": raw bytes printable as
 * common/diag.h keel__printable does), "?<hex>" for one that does not;
 * cut to cap with its NUL. @return buf. */
const char *keel__ks_render(const uint8_t *key, size_t n, char *buf,
                            size_t cap);
/* A key's value for humans: numbers in decimal (k.hash in 16 hex), vat
 * states as "alive"/"terminated", refs in their string form, names and
 * vatstore bytes printable, run-queue items and promise records as
 * "<N bytes>"; a value that does not fit its key as "?<hex>". @return buf. */
const char *keel__ks_render_value(const uint8_t *key, size_t n,
                                  const uint8_t *val, size_t vlen, char *buf,
                                  size_t cap);
/* The inverse of keel__ks_render for keys that decode (KS3), for tests and
 * the command line: "c.4.k.ko7" into *out. @return 1, or 0 if s names no
 * key. */
int keel__ks_parse(const char *s, keel__key *out);

#endif
