/*
 * store/keyspace.c — the keyspace's one decoder, its ref string forms and
 * its rendering for humans (the format and the encoders: store/keyspace.h).
 *
 * Invariants:
 *   KD1 keel__ks_decode accepts exactly the keys keyspace.h draws (KS1):
 *       every length, tag, field and kind is checked; nothing is guessed.
 *   KD2 keel__ks_parse(keel__ks_render(k)) == k for every key that
 *       decodes (KS3), and render never reads past n bytes.
 */
#include "store/keyspace.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const table_names[KS_NTABLES] = {
    NULL,      "meta",    "runq",     "vat",      "vatname",  "clist", "object",
    "promise", "decider", "vatstore", "refcount", "gcaction", "pin"};

static const char gc_types[] = {0, 'd', 'x', 'i'};

static const char *const meta_names[KM_N] = {
    NULL,        "k.version",  "k.booted",    "k.crank",
    "k.hash",    "k.next.vat", "k.next.ko",   "k.next.kp",
    "k.rq.head", "k.rq.tail",  "k.unresolved"};

static const char *const vat_names[KV_N] = {
    NULL,   "name",  "state", "src",     "root", "maxo",
    "maxp", "nexti", "nextq", "cleanup", "retp"};

static const char clist_subs[] = {0, 'k', 'v', 'r'};

const char *keel__ks_table_name(uint8_t tag)
{
    return tag > 0 && tag < KS_NTABLES ? table_names[tag] : NULL;
}

static int kref_ok(const uint8_t *p, keel__kref *r)
{
    if (p[0] != KR_O && p[0] != KR_P) {
        return 0;
    }
    r->kind = p[0];
    r->n = keel__ks_rd64(p + 1);
    return r->n > 0;
}

static int vref_ok(const uint8_t *p, keel__vref *r)
{
    if (p[0] < KR_OPLUS || p[0] > KR_PMINUS) {
        return 0;
    }
    r->kind = p[0];
    r->n = keel__ks_rd64(p + 1);
    return 1;
}

int keel__ks_kref_val(const void *v, size_t n, keel__kref *r)
{
    return n == KEEL__KS_REF_BYTES && kref_ok(v, r);
}

int keel__ks_vref_val(const void *v, size_t n, keel__vref *r)
{
    return n == KEEL__KS_REF_BYTES && vref_ok(v, r);
}

int keel__ks_clist_kval(const void *v, size_t n, keel__vref *r, int *reachable)
{
    const uint8_t *b = v;
    if (n == KEEL__KS_REF_BYTES + 1 && b[KEEL__KS_REF_BYTES] == 0x00) {
        *reachable = 0;
        return vref_ok(v, r);
    }
    *reachable = 1;
    return n == KEEL__KS_REF_BYTES && vref_ok(v, r);
}

int keel__ks_decode(const uint8_t *k, size_t n, keel__ks_key *o)
{
    memset(o, 0, sizeof(*o));
    if (n == 0) {
        return 0;
    }
    o->table = k[0];
    switch (k[0]) {
    case KS_META:
        o->field = n == 2 ? k[1] : 0;
        return o->field > 0 && o->field < KM_N;
    case KS_RUNQ:
    case KS_OBJECT:
    case KS_PROMISE:
        if (n != 9) {
            return 0;
        }
        o->n = keel__ks_rd64(k + 1);
        return k[0] == KS_RUNQ || o->n > 0;
    case KS_VATNAME:
        o->rest = k + 1;
        o->rest_len = n - 1;
        return n > 1;
    case KS_REFCOUNT:
    case KS_PIN:
        return n == 10 && kref_ok(k + 1, &o->kref);
    default:
        break;
    }
    if (k[0] >= KS_NTABLES || n < 5) {
        return 0;
    }
    o->vid = keel__ks_rd32(k + 1);
    if (o->vid == 0) {
        return 0;
    }
    switch (k[0]) {
    case KS_VAT:
        o->field = n == 6 ? k[5] : 0;
        return o->field > 0 && o->field < KV_N;
    case KS_CLIST:
        if (n != 15) {
            return 0;
        }
        o->field = k[5];
        return o->field == KC_K   ? kref_ok(k + 6, &o->kref)
               : o->field == KC_V ? vref_ok(k + 6, &o->vref)
               : o->field == KC_R
                   ? vref_ok(k + 6, &o->vref) && o->vref.kind == KR_PPLUS
                   : 0;
    case KS_DECIDER:
        if (n != 13) {
            return 0;
        }
        o->n = keel__ks_rd64(k + 5);
        return o->n > 0;
    case KS_VATSTORE:
        o->rest = k + 5;
        o->rest_len = n - 5;
        return n > 5;
    case KS_GCACT:
        o->field = n == 15 ? k[5] : 0;
        return o->field >= KG_DROP_EXPORT && o->field <= KG_RETIRE_IMPORT &&
               kref_ok(k + 6, &o->kref) && o->kref.kind == KR_O;
    default:
        return 0;
    }
}

/* ---- ref strings ----------------------------------------------------------
 */

/* Strict decimal to the end of s: no sign, no leading zero but "0", at
 * most UINT64_MAX (checked by length and, at 20 digits, lexically: no
 * division on the crank path, which parses a kref per promise access). */
static int dec(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    size_t n = 0;
    if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1] != '\0')) {
        return 0;
    }
    for (; s[n] != '\0'; n++) {
        if (s[n] < '0' || s[n] > '9' || n == 20) {
            return 0;
        }
        x = x * 10 + (uint64_t)(s[n] - '0');
    }
    if (n == 20 && strcmp(s, "18446744073709551615") > 0) {
        return 0;
    }
    *v = x;
    return 1;
}

int keel__ks_kref_parse(const char *s, keel__kref *r)
{
    if (s == NULL || s[0] != 'k' || (s[1] != 'o' && s[1] != 'p') ||
        !dec(s + 2, &r->n) || r->n == 0) {
        return 0;
    }
    r->kind = s[1] == 'o' ? KR_O : KR_P;
    return 1;
}

int keel__ks_vref_parse(const char *s, keel__vref *r)
{
    if (s == NULL || (s[0] != 'o' && s[0] != 'p') ||
        (s[1] != '+' && s[1] != '-') || !dec(s + 2, &r->n)) {
        return 0;
    }
    r->kind = (uint8_t)((s[0] == 'o' ? KR_OPLUS : KR_PPLUS) + (s[1] == '-'));
    return 1;
}

static size_t put_dec(char *out, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp), n;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    n = sizeof(tmp) - i;
    memcpy(out, tmp + i, n);
    out[n] = '\0';
    return n;
}

size_t keel__ks_kref_str(keel__kref r, char *out)
{
    out[0] = 'k';
    out[1] = r.kind == KR_O ? 'o' : 'p';
    return 2 + put_dec(out + 2, r.n);
}

size_t keel__ks_vref_str(keel__vref r, char *out)
{
    out[0] = r.kind <= KR_OMINUS ? 'o' : 'p';
    out[1] = r.kind == KR_OPLUS || r.kind == KR_PPLUS ? '+' : '-';
    return 2 + put_dec(out + 2, r.n);
}

/* ---- rendering -------------------------------------------------------------
 */

typedef struct out {
    char *p;
    size_t cap, len;
} out;

static void emit(out *o, const char *s, size_t n)
{
    size_t room = o->cap - 1 - o->len;
    n = n < room ? n : room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void emits(out *o, const char *s)
{
    emit(o, s, strlen(s));
}

static void emitu(out *o, uint64_t v)
{
    char b[24];
    emit(o, b, put_dec(b, v));
}

static void emit_raw(out *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && o->len + 1 < o->cap; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
            emit(o, (const char *)p + i, 1);
        } else {
            char e[4] = {'\\', 'x', hex[p[i] >> 4], hex[p[i] & 15]};
            emit(o, e, 4);
        }
    }
}

static void emit_hex(out *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        char e[2] = {hex[p[i] >> 4], hex[p[i] & 15]};
        emit(o, e, 2);
    }
}

const char *keel__ks_render(const uint8_t *key, size_t n, char *buf, size_t cap)
{
    keel__ks_key d;
    out o = {buf, cap, 0};
    char r[KEEL__KS_REF_STR];
    buf[0] = '\0';
    if (!keel__ks_decode(key, n, &d)) {
        emits(&o, "?");
        emit_hex(&o, key, n);
        return buf;
    }
    switch (d.table) {
    case KS_META:
        emits(&o, meta_names[d.field]);
        break;
    case KS_RUNQ:
        emits(&o, "rq.");
        emitu(&o, d.n);
        break;
    case KS_VAT:
        emits(&o, "v.");
        emitu(&o, d.vid);
        emits(&o, ".");
        emits(&o, vat_names[d.field]);
        break;
    case KS_VATNAME:
        emits(&o, "vn.");
        emit_raw(&o, d.rest, d.rest_len);
        break;
    case KS_CLIST:
        emits(&o, "c.");
        emitu(&o, d.vid);
        emit(&o, ".", 1);
        emit(&o, &clist_subs[d.field], 1);
        emit(&o, ".", 1);
        emit(&o, r,
             d.field == KC_K ? keel__ks_kref_str(d.kref, r)
                             : keel__ks_vref_str(d.vref, r));
        break;
    case KS_OBJECT:
    case KS_PROMISE:
        emits(&o, d.table == KS_OBJECT ? "ko." : "kp.");
        emitu(&o, d.n);
        break;
    case KS_DECIDER:
        emits(&o, "d.");
        emitu(&o, d.vid);
        emits(&o, ".kp");
        emitu(&o, d.n);
        break;
    case KS_VATSTORE:
        emits(&o, "vs.");
        emitu(&o, d.vid);
        emits(&o, ".");
        emit_raw(&o, d.rest, d.rest_len);
        break;
    case KS_REFCOUNT:
    case KS_PIN:
        emits(&o, d.table == KS_PIN ? "pin." : "rc.");
        emit(&o, r, keel__ks_kref_str(d.kref, r));
        break;
    case KS_GCACT:
        emits(&o, "gc.");
        emitu(&o, d.vid);
        emit(&o, ".", 1);
        emit(&o, &gc_types[d.field], 1);
        emit(&o, ".", 1);
        emit(&o, r, keel__ks_kref_str(d.kref, r));
        break;
    default:
        break;
    }
    return buf;
}

const char *keel__ks_render_value(const uint8_t *key, size_t n,
                                  const uint8_t *v, size_t vn, char *buf,
                                  size_t cap)
{
    keel__ks_key d;
    keel__kref kr;
    keel__vref vr;
    out o = {buf, cap, 0};
    char r[KEEL__KS_REF_STR];
    buf[0] = '\0';
    if (!keel__ks_decode(key, n, &d)) {
        goto bad;
    }
    switch (d.table) {
    case KS_META:
        if (vn != 8) {
            goto bad;
        }
        if (d.field == KM_HASH) {
            emit_hex(&o, v, 8);
        } else {
            emitu(&o, keel__ks_rd64(v));
        }
        return buf;
    case KS_VAT:
        switch (d.field) {
        case KV_NAME:
        case KV_SRC:
            emit_raw(&o, v, vn);
            return buf;
        case KV_STATE:
            if (vn != 1 || (v[0] != KS_ALIVE && v[0] != KS_TERMINATED)) {
                goto bad;
            }
            emits(&o, v[0] == KS_ALIVE ? "alive" : "terminated");
            return buf;
        case KV_ROOT:
            if (!keel__ks_kref_val(v, vn, &kr)) {
                goto bad;
            }
            emit(&o, r, keel__ks_kref_str(kr, r));
            return buf;
        case KV_CLEANUP:
            if (vn < 8) {
                goto bad;
            }
            emitu(&o, keel__ks_rd64(v));
            emits(&o, " ");
            if (vn > 8) {
                char k2[KEEL__KS_KEY_MAX * 2 + 2];
                emits(&o, keel__ks_render(v + 8, vn - 8, k2, sizeof(k2)));
            }
            return buf;
        default:
            if (vn != 8) {
                goto bad;
            }
            emitu(&o, keel__ks_rd64(v));
            return buf;
        }
    case KS_VATNAME:
    case KS_OBJECT:
        if (vn != 4) {
            goto bad;
        }
        emitu(&o, keel__ks_rd32(v));
        return buf;
    case KS_CLIST:
        if (d.field == KC_R) {
            if (vn != 0) {
                goto bad;
            }
        } else if (d.field == KC_K) {
            int reach;
            if (!keel__ks_clist_kval(v, vn, &vr, &reach)) {
                goto bad;
            }
            emit(&o, r, keel__ks_vref_str(vr, r));
            if (!reach) {
                emits(&o, " dropped");
            }
        } else {
            if (!keel__ks_kref_val(v, vn, &kr)) {
                goto bad;
            }
            emit(&o, r, keel__ks_kref_str(kr, r));
        }
        return buf;
    case KS_DECIDER:
    case KS_GCACT:
    case KS_PIN:
        if (vn != 0) {
            goto bad;
        }
        return buf;
    case KS_REFCOUNT:
        if (vn != 8) {
            goto bad;
        }
        emitu(&o, keel__ks_rd32(v));
        emits(&o, " reachable, ");
        emitu(&o, keel__ks_rd32(v + 4));
        emits(&o, " recognizable");
        return buf;
    case KS_VATSTORE:
        emit_raw(&o, v, vn);
        return buf;
    default: /* run-queue items, promise records */
        emits(&o, "<");
        emitu(&o, vn);
        emits(&o, " bytes>");
        return buf;
    }
bad:
    o.len = 0;
    emits(&o, "?");
    emit_hex(&o, v, vn);
    return buf;
}

/* ---- parsing the human form ------------------------------------------------
 */

/* s = "<u32>." ...: the vid and what follows the dot. */
static const char *vid_dot(const char *s, uint32_t *vid)
{
    uint64_t v = 0;
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9' && i < 10) {
        v = v * 10 + (uint64_t)(s[i++] - '0');
    }
    if (i == 0 || s[i] != '.' || v == 0 || v > UINT32_MAX ||
        (s[0] == '0' && i > 1)) {
        return NULL;
    }
    *vid = (uint32_t)v;
    return s + i + 1;
}

int keel__ks_parse(const char *s, keel__key *k)
{
    uint32_t vid;
    uint64_t n;
    const char *t;
    keel__kref kr;
    keel__vref vr;
    for (uint8_t f = 1; f < KM_N; f++) {
        if (strcmp(s, meta_names[f]) == 0) {
            keel__ks_meta(k, f);
            return 1;
        }
    }
    if (strncmp(s, "rq.", 3) == 0 && dec(s + 3, &n)) {
        keel__ks_runq(k, n);
        return 1;
    }
    if ((strncmp(s, "ko.", 3) == 0 || strncmp(s, "kp.", 3) == 0) &&
        dec(s + 3, &n) && n > 0) {
        s[1] == 'o' ? keel__ks_object(k, n) : keel__ks_promise(k, n);
        return 1;
    }
    if (strncmp(s, "vn.", 3) == 0 && s[3] != '\0') {
        keel__ks_vatname(k, s + 3, strlen(s + 3));
        return 1;
    }
    if (strncmp(s, "v.", 2) == 0 && (t = vid_dot(s + 2, &vid)) != NULL) {
        for (uint8_t f = 1; f < KV_N; f++) {
            if (strcmp(t, vat_names[f]) == 0) {
                keel__ks_vat(k, vid, f);
                return 1;
            }
        }
        return 0;
    }
    if (strncmp(s, "c.", 2) == 0 && (t = vid_dot(s + 2, &vid)) != NULL &&
        t[0] != '\0' && t[1] == '.') {
        if (t[0] == 'k' && keel__ks_kref_parse(t + 2, &kr)) {
            keel__ks_clist_k(k, vid, kr);
            return 1;
        }
        if ((t[0] == 'v' || (t[0] == 'r' && t[2] == 'p' && t[3] == '+')) &&
            keel__ks_vref_parse(t + 2, &vr)) {
            keel__ks_clist_v(k, vid, t[0] == 'v' ? KC_V : KC_R, vr);
            return 1;
        }
        return 0;
    }
    if (strncmp(s, "d.", 2) == 0 && (t = vid_dot(s + 2, &vid)) != NULL &&
        keel__ks_kref_parse(t, &kr) && kr.kind == KR_P) {
        keel__ks_decider(k, vid, kr.n);
        return 1;
    }
    if (strncmp(s, "vs.", 3) == 0 && (t = vid_dot(s + 3, &vid)) != NULL &&
        t[0] != '\0') {
        keel__ks_vatstore(k, vid, t, strlen(t));
        return 1;
    }
    if (strncmp(s, "rc.", 3) == 0 && keel__ks_kref_parse(s + 3, &kr)) {
        keel__ks_kref_key(k, KS_REFCOUNT, kr);
        return 1;
    }
    if (strncmp(s, "pin.", 4) == 0 && keel__ks_kref_parse(s + 4, &kr)) {
        keel__ks_kref_key(k, KS_PIN, kr);
        return 1;
    }
    if (strncmp(s, "gc.", 3) == 0 && (t = vid_dot(s + 3, &vid)) != NULL &&
        t[0] != '\0' && t[1] == '.' && keel__ks_kref_parse(t + 2, &kr) &&
        kr.kind == KR_O) {
        for (uint8_t f = KG_DROP_EXPORT; f <= KG_RETIRE_IMPORT; f++) {
            if (t[0] == gc_types[f]) {
                keel__ks_gcact(k, vid, f, kr);
                return 1;
            }
        }
        return 0;
    }
    return 0;
}
