/*
 * common/worker_format.c — the codec of keel/worker_format.h: the worker
 * protocol's frames, decoded in place and encoded into a growing buffer.
 * libc and include/keel/ only: libkeel and the worker runtime both link it
 * (the keel_wire library).
 *
 * Invariants (beyond WF1-WF4 of the header):
 *   WC1  The decoder reads through one cursor that never moves past the
 *        frame's end: every read checks the bytes left first, so a length
 *        field (of a bytes, a strs count) is compared with what is left
 *        before anything is sized by it.
 *   WC2  An encoder writes the frame, then decodes it with the same decoder
 *        (WF3 by construction: one set of rules); on failure the buffer's
 *        length is put back, so a rejected frame leaves no byte behind.
 */
#include "keel/worker_format.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ----------------------------------------------------------------
 */

const char *keel_wf_type_name(unsigned type)
{
    switch (type) {
    case KEEL_WF_HELLO:
        return "HELLO";
    case KEEL_WF_START:
        return "START";
    case KEEL_WF_DELIVER:
        return "DELIVER";
    case KEEL_WF_RESULT:
        return "RESULT";
    case KEEL_WF_DURABLE:
        return "DURABLE";
    case KEEL_WF_STOP:
        return "STOP";
    case KEEL_WF_W_HELLO:
        return "HELLO";
    case KEEL_WF_STARTED:
        return "STARTED";
    case KEEL_WF_DONE:
        return "DONE";
    case KEEL_WF_SYSCALL:
        return "SYSCALL";
    case KEEL_WF_BEGIN:
        return "BEGIN";
    case KEEL_WF_END:
        return "END";
    default:
        return "unknown";
    }
}

const char *keel_wf_op_name(unsigned op)
{
    static const char *const names[] = {
        NULL,
        "send",
        "subscribe",
        "resolve",
        "exit",
        "vatstoreGet",
        "vatstoreSet",
        "vatstoreDelete",
        "vatstoreGetNextKey",
        "dropImports",
        "retireImports",
        "retireExports",
        "abandonExports",
    };
    return op >= 1 && op <= 12 ? names[op] : "unknown";
}

static const char *kind_name(unsigned kind)
{
    static const char *const names[] = {
        NULL,          "message",       "notify",
        "dropExports", "retireExports", "retireImports",
    };
    return kind >= 1 && kind <= 5 ? names[kind] : "unknown";
}

/* ---- rules ----------------------------------------------------------------
 */

int keel_wf_valid_utf8(const void *p, size_t n)
{
    const uint8_t *s = p;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0) {
            return 0;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0; /* continuation byte, C0/C1 overlong lead, > F4 */
        }
        if (n - i - 1 < need) {
            return 0;
        }
        for (size_t k = 1; k <= need; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xC0) != 0x80) {
                return 0;
            }
            cp = cp << 6 | (cc & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return 0; /* overlong, out of range, surrogate */
        }
        i += need + 1;
    }
    return 1;
}

enum {
    VR_OPLUS = 1,
    VR_OMINUS = 2,
    VR_PPLUS = 4,
    VR_PMINUS = 8,
    VR_P = VR_PPLUS | VR_PMINUS,
    VR_ANY = 15,
};

/* The kind bit of a vref with valid syntax, or 0. */
static int vref_kind(const uint8_t *s, size_t n)
{
    if (n < KEEL_WF_VREF_MIN || n > KEEL_WF_VREF_MAX) {
        return 0;
    }
    if ((s[0] != 'o' && s[0] != 'p') || (s[1] != '+' && s[1] != '-')) {
        return 0;
    }
    if (s[2] == '0' && n > 3) {
        return 0; /* leading zero */
    }
    uint64_t v = 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0; /* above u64 */
        }
        v = v * 10 + d;
    }
    return s[0] == 'o' ? (s[1] == '+' ? VR_OPLUS : VR_OMINUS)
                       : (s[1] == '+' ? VR_PPLUS : VR_PMINUS);
}

int keel_wf_valid_vref(const void *p, size_t n)
{
    return vref_kind(p, n) != 0;
}

static const char *vr_mask_name(int mask)
{
    switch (mask) {
    case VR_OPLUS:
        return "o+N";
    case VR_OMINUS:
        return "o-N";
    case VR_PMINUS:
        return "p-N";
    case VR_P:
        return "p+N or p-N";
    default:
        return "a vref";
    }
}

/* ---- decoder --------------------------------------------------------------
 */

typedef struct cur {
    const uint8_t *base, *p, *end;
    char *why;
    size_t why_cap;
    char what[48]; /* "SYSCALL send" */
    keel_bytes *strs;
    size_t strs_cap;
} cur;

__attribute__((format(printf, 2, 3))) static int fail(cur *c, const char *fmt,
                                                      ...)
{
    if (c->why != NULL && c->why_cap > 0) {
        char msg[KEEL_WF_WHY_BYTES];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(c->why, c->why_cap, "frame %s: %s (at byte %zu)",
                 c->what[0] != '\0' ? c->what : "?", msg,
                 (size_t)(c->p - c->base));
    }
    return KEEL_EINVAL;
}

static size_t left(const cur *c)
{
    return (size_t)(c->end - c->p);
}

static int get_u8(cur *c, const char *field, uint8_t *v)
{
    if (left(c) < 1) {
        return fail(c, "%s runs past the frame's end", field);
    }
    *v = *c->p++;
    return KEEL_OK;
}

static int get_flag(cur *c, const char *field, uint8_t *v)
{
    int rc = get_u8(c, field, v);
    if (rc == KEEL_OK && *v > 1) {
        c->p--;
        return fail(c, "%s is %u, expected 0 or 1", field, (unsigned)*v);
    }
    return rc;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static int get_u32(cur *c, const char *field, uint32_t *v)
{
    if (left(c) < 4) {
        return fail(c, "%s runs past the frame's end", field);
    }
    *v = rd32(c->p);
    c->p += 4;
    return KEEL_OK;
}

static int get_u64(cur *c, const char *field, uint64_t *v)
{
    if (left(c) < 8) {
        return fail(c, "%s runs past the frame's end", field);
    }
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) {
        x = x << 8 | c->p[i];
    }
    *v = x;
    c->p += 8;
    return KEEL_OK;
}

static int get_bytes(cur *c, const char *field, size_t max, keel_bytes *out)
{
    uint32_t n = 0;
    int rc = get_u32(c, field, &n);
    if (rc != KEEL_OK) {
        return rc;
    }
    if (n > left(c)) {
        c->p -= 4;
        return fail(c, "%s declares %u bytes, %zu left in the frame", field,
                    (unsigned)n, left(c) - 4);
    }
    if (n > max) {
        c->p -= 4;
        return fail(c, "%s is %u bytes, at most %zu allowed", field,
                    (unsigned)n, max);
    }
    out->ptr = c->p;
    out->len = n;
    c->p += n;
    return KEEL_OK;
}

static int get_str(cur *c, const char *field, size_t min, size_t max,
                   keel_bytes *out)
{
    const uint8_t *at = c->p;
    int rc = get_bytes(c, field, max, out);
    if (rc != KEEL_OK) {
        return rc;
    }
    if (out->len < min) {
        c->p = at;
        return fail(c, "%s is %zu bytes, at least %zu needed", field, out->len,
                    min);
    }
    if (!keel_wf_valid_utf8(out->ptr, out->len)) {
        c->p = at;
        return fail(c, "%s is not valid UTF-8 without NUL", field);
    }
    return KEEL_OK;
}

static int get_vref(cur *c, const char *field, int mask, keel_bytes *out)
{
    const uint8_t *at = c->p;
    int rc = get_bytes(c, field, KEEL_WF_FRAME_MAX, out);
    if (rc != KEEL_OK) {
        return rc;
    }
    int k = vref_kind(out->ptr, out->len);
    if (k == 0) {
        c->p = at;
        return fail(c,
                    "%s is not a vref ([op][+-]N, N a u64 without leading "
                    "zeros, 3..23 bytes)",
                    field);
    }
    if ((k & mask) == 0) {
        c->p = at;
        return fail(c, "%s \"%.*s\" is not %s", field, (int)out->len,
                    (const char *)out->ptr, vr_mask_name(mask));
    }
    return KEEL_OK;
}

static int get_strs(cur *c, const char *field, int mask, keel_wf_strs *s)
{
    uint32_t n = 0;
    int rc = get_u32(c, field, &n);
    if (rc != KEEL_OK) {
        return rc;
    }
    if (n > KEEL_WF_STRS_MAX) {
        c->p -= 4;
        return fail(c, "%s has %u entries, at most %u allowed", field,
                    (unsigned)n, KEEL_WF_STRS_MAX);
    }
    if ((size_t)n * 4 > left(c)) {
        c->p -= 4;
        return fail(c, "%s declares %u entries, %zu bytes left in the frame",
                    field, (unsigned)n, left(c) - 4);
    }
    s->n = n;
    s->raw = c->p;
    int fill = c->strs != NULL && n <= c->strs_cap;
    for (uint32_t i = 0; i < n; i++) {
        keel_bytes e;
        char name[64];
        snprintf(name, sizeof name, "%s[%u]", field, (unsigned)i);
        rc = get_vref(c, name, mask, &e);
        if (rc != KEEL_OK) {
            return rc;
        }
        if (fill) {
            c->strs[i] = e;
        }
    }
    s->raw_len = (size_t)(c->p - s->raw);
    s->items = fill ? c->strs : NULL;
    if (fill) {
        c->strs = NULL; /* a frame has one strs: the room is used */
    }
    return KEEL_OK;
}

static int get_capdata(cur *c, const char *field, keel_wf_capdata *cd)
{
    char name[48];
    snprintf(name, sizeof name, "%s body", field);
    int rc = get_bytes(c, name, KEEL_WF_FRAME_MAX, &cd->body);
    if (rc != KEEL_OK) {
        return rc;
    }
    snprintf(name, sizeof name, "%s slots", field);
    return get_strs(c, name, VR_ANY, &cd->slots);
}

static int get_opt_vref(cur *c, const char *field, int mask, keel_bytes *out,
                        int *has)
{
    uint8_t flag = 0;
    char name[48];
    snprintf(name, sizeof name, "%s presence", field);
    int rc = get_flag(c, name, &flag);
    if (rc != KEEL_OK || flag == 0) {
        *has = 0;
        return rc;
    }
    *has = 1;
    return get_vref(c, field, mask, out);
}

#define TRY(x)                \
    do {                      \
        int rc_ = (x);        \
        if (rc_ != KEEL_OK) { \
            return rc_;       \
        }                     \
    } while (0)

static int dec_kernel(cur *c, keel_wf_frame *f)
{
    switch (f->type) {
    case KEEL_WF_HELLO: {
        TRY(get_u32(c, "version count", &f->nversions));
        if (f->nversions == 0) {
            c->p -= 4;
            return fail(c, "offers no version");
        }
        if ((size_t)f->nversions * 4 > left(c)) {
            c->p -= 4;
            return fail(c, "version count %u runs past the frame's end",
                        (unsigned)f->nversions);
        }
        f->versions = c->p;
        c->p += (size_t)f->nversions * 4;
        return get_str(c, "vat name", 1, KEEL_WF_FRAME_MAX, &f->name);
    }
    case KEEL_WF_START:
        TRY(get_u64(c, "next_o", &f->next_o));
        TRY(get_u64(c, "next_p", &f->next_p));
        return get_bytes(c, "params", KEEL_WF_FRAME_MAX, &f->params);
    case KEEL_WF_DELIVER: {
        TRY(get_u64(c, "seq", &f->seq));
        TRY(get_u8(c, "kind", &f->kind));
        size_t l = strlen(c->what);
        snprintf(c->what + l, sizeof c->what - l, " %s", kind_name(f->kind));
        switch (f->kind) {
        case KEEL_DELIVER_MESSAGE:
            TRY(get_vref(c, "target", VR_OPLUS, &f->target));
            TRY(get_str(c, "method", 1, KEEL_WF_METHOD_MAX, &f->method));
            TRY(get_capdata(c, "args", &f->cap));
            return get_opt_vref(c, "result", VR_PMINUS, &f->result,
                                &f->has_result);
        case KEEL_DELIVER_NOTIFY:
            TRY(get_vref(c, "promise", VR_P, &f->promise));
            TRY(get_flag(c, "rejected", &f->rejected));
            return get_capdata(c, "resolution", &f->cap);
        case KEEL_DELIVER_DROP_EXPORTS:
        case KEEL_DELIVER_RETIRE_EXPORTS:
            return get_strs(c, "vrefs", VR_OPLUS, &f->vrefs);
        case KEEL_DELIVER_RETIRE_IMPORTS:
            return get_strs(c, "vrefs", VR_OMINUS, &f->vrefs);
        default:
            c->p--;
            return fail(c, "unknown delivery kind %u", (unsigned)f->kind);
        }
    }
    case KEEL_WF_RESULT: {
        uint32_t u = 0;
        TRY(get_u32(c, "rc", &u));
        f->rc = (int32_t)u;
        if (f->rc > 1) {
            c->p -= 4;
            return fail(c, "rc %d, expected 1, 0 or a negative error",
                        (int)f->rc);
        }
        TRY(get_bytes(c, "data", KEEL_WF_VALUE_MAX, &f->data));
        if (f->rc != 1 && f->data.len != 0) {
            return fail(c, "rc %d with %zu bytes of data, expected none",
                        (int)f->rc, f->data.len);
        }
        return KEEL_OK;
    }
    case KEEL_WF_DURABLE:
        TRY(get_u8(c, "what", &f->what));
        if (f->what < 1 || f->what > 3) {
            c->p--;
            return fail(c, "what is %u, expected 1, 2 or 3", (unsigned)f->what);
        }
        TRY(get_u64(c, "seq", &f->seq));
        if (f->what == KEEL_WF_DURABLE_START && f->seq != 0) {
            c->p -= 8;
            return fail(c, "seq of the start's notice is %llu, expected 0",
                        (unsigned long long)f->seq);
        }
        return KEEL_OK;
    case KEEL_WF_STOP:
        return KEEL_OK;
    default:
        return KEEL_EINVAL; /* not reached: the caller checked the type */
    }
}

static int dec_syscall(cur *c, keel_wf_frame *f)
{
    TRY(get_u8(c, "op", &f->op));
    size_t l = strlen(c->what);
    snprintf(c->what + l, sizeof c->what - l, " %s", keel_wf_op_name(f->op));
    switch (f->op) {
    case KEEL_WF_OP_SEND:
        TRY(get_vref(c, "target", VR_ANY, &f->target));
        TRY(get_str(c, "method", 1, KEEL_WF_METHOD_MAX, &f->method));
        TRY(get_capdata(c, "args", &f->cap));
        return get_opt_vref(c, "result", VR_ANY, &f->result, &f->has_result);
    case KEEL_WF_OP_SUBSCRIBE:
        return get_vref(c, "promise", VR_ANY, &f->promise);
    case KEEL_WF_OP_RESOLVE:
        TRY(get_vref(c, "promise", VR_ANY, &f->promise));
        TRY(get_flag(c, "rejected", &f->rejected));
        return get_capdata(c, "data", &f->cap);
    case KEEL_WF_OP_EXIT:
        TRY(get_flag(c, "failure", &f->failure));
        return get_capdata(c, "info", &f->cap);
    case KEEL_WF_OP_VS_GET:
    case KEEL_WF_OP_VS_DELETE:
        return get_str(c, "key", 1, KEEL_WF_KEY_MAX, &f->key);
    case KEEL_WF_OP_VS_SET:
        TRY(get_str(c, "key", 1, KEEL_WF_KEY_MAX, &f->key));
        return get_bytes(c, "value", KEEL_WF_VALUE_MAX, &f->value);
    case KEEL_WF_OP_VS_NEXT_KEY:
        return get_str(c, "after", 0, KEEL_WF_KEY_MAX, &f->key);
    case KEEL_WF_OP_DROP_IMPORTS:
    case KEEL_WF_OP_RETIRE_IMPORTS:
    case KEEL_WF_OP_RETIRE_EXPORTS:
    case KEEL_WF_OP_ABANDON_EXPORTS:
        return get_strs(c, "vrefs", VR_ANY, &f->vrefs);
    default:
        c->p--;
        return fail(c, "unknown syscall op %u", (unsigned)f->op);
    }
}

static int dec_worker(cur *c, keel_wf_frame *f)
{
    switch (f->type) {
    case KEEL_WF_W_HELLO:
        return get_u32(c, "version", &f->version);
    case KEEL_WF_STARTED:
        TRY(get_flag(c, "ok", &f->ok));
        return get_str(c, "reason", 0, KEEL_WF_REASON_MAX, &f->reason);
    case KEEL_WF_DONE:
        TRY(get_u64(c, "seq", &f->seq));
        TRY(get_flag(c, "ok", &f->ok));
        return get_str(c, "reason", 0, KEEL_WF_REASON_MAX, &f->reason);
    case KEEL_WF_SYSCALL:
        return dec_syscall(c, f);
    case KEEL_WF_BEGIN:
    case KEEL_WF_END:
        TRY(get_u64(c, "seq", &f->seq));
        if (f->seq == 0) {
            c->p -= 8;
            return fail(c, "seq is 0, expected >= 1");
        }
        return KEEL_OK;
    default:
        return KEEL_EINVAL; /* not reached */
    }
}

static void set_why(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t cap, const char *fmt, ...)
{
    if (why != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
}

int keel_wf_frame_length(const uint8_t prefix[4], uint32_t *length, char *why,
                         size_t why_cap)
{
    uint32_t n = rd32(prefix);
    *length = n;
    if (n == 0) {
        set_why(why, why_cap, "frame length 0, expected 1..%u",
                KEEL_WF_FRAME_MAX);
        return KEEL_EINVAL;
    }
    if (n > KEEL_WF_FRAME_MAX) {
        set_why(why, why_cap, "frame length %u is above the limit of %u",
                (unsigned)n, KEEL_WF_FRAME_MAX);
        return KEEL_EINVAL;
    }
    return KEEL_OK;
}

static int kernel_type(unsigned t)
{
    return t >= KEEL_WF_HELLO && t <= KEEL_WF_STOP;
}

static int worker_type(unsigned t)
{
    return t >= KEEL_WF_W_HELLO && t <= KEEL_WF_END;
}

int keel_wf_decode(const uint8_t *buf, size_t n, unsigned accept,
                   keel_wf_frame *f, keel_bytes *strs, size_t strs_cap,
                   char *why, size_t why_cap)
{
    memset(f, 0, sizeof *f);
    if (n < KEEL_WF_LEN_BYTES) {
        set_why(why, why_cap, "frame of %zu bytes has no length prefix", n);
        return KEEL_EINVAL;
    }
    uint32_t len;
    TRY(keel_wf_frame_length(buf, &len, why, why_cap));
    if ((size_t)len != n - KEEL_WF_LEN_BYTES) {
        set_why(why, why_cap, "frame length %u but %zu bytes follow the prefix",
                (unsigned)len, n - KEEL_WF_LEN_BYTES);
        return KEEL_EINVAL;
    }
    f->length = len;
    f->type = buf[KEEL_WF_LEN_BYTES];
    int is_k = kernel_type(f->type) && (accept & KEEL_WF_FROM_KERNEL);
    int is_w = worker_type(f->type) && (accept & KEEL_WF_FROM_WORKER);
    if (!is_k && !is_w) {
        set_why(why, why_cap, "frame type 0x%02x is unknown%s",
                (unsigned)f->type,
                kernel_type(f->type)   ? " from a worker"
                : worker_type(f->type) ? " from the kernel"
                                       : "");
        return KEEL_EINVAL;
    }
    cur c = {
        .base = buf,
        .p = buf + KEEL_WF_LEN_BYTES + 1,
        .end = buf + n,
        .why = why,
        .why_cap = why_cap,
        .strs = strs,
        .strs_cap = strs_cap,
    };
    snprintf(c.what, sizeof c.what, "%s", keel_wf_type_name(f->type));
    TRY(is_k ? dec_kernel(&c, f) : dec_worker(&c, f));
    if (c.p != c.end) {
        return fail(&c, "%zu bytes left after the last field", left(&c));
    }
    return KEEL_OK;
}

int keel_wf_strs_next(const keel_wf_strs *s, size_t *pos, keel_bytes *out)
{
    if (*pos + 4 > s->raw_len) {
        return 0;
    }
    uint32_t n = rd32(s->raw + *pos);
    out->ptr = s->raw + *pos + 4;
    out->len = n;
    *pos += 4 + (size_t)n;
    return 1;
}

/* ---- encoders -------------------------------------------------------------
 */

void keel_wf_buf_free(keel_wf_buf *b)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

typedef struct enc {
    keel_wf_buf *b;
    size_t start; /* offset of the frame's length prefix */
    int oom, big;
} enc;

static void reserve(enc *e, size_t n)
{
    keel_wf_buf *b = e->b;
    if (e->oom || e->big) {
        return;
    }
    if (n > (size_t)KEEL_WF_FRAME_MAX + KEEL_WF_LEN_BYTES ||
        b->len - e->start + n > (size_t)KEEL_WF_FRAME_MAX + KEEL_WF_LEN_BYTES) {
        e->big = 1;
        return;
    }
    if (b->cap - b->len >= n) {
        return;
    }
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap - b->len < n) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->ptr, cap);
    if (p == NULL) {
        e->oom = 1;
        return;
    }
    b->ptr = p;
    b->cap = cap;
}

static void put_raw(enc *e, const void *p, size_t n)
{
    reserve(e, n);
    if (!e->oom && !e->big && n > 0) {
        memcpy(e->b->ptr + e->b->len, p, n);
        e->b->len += n;
    }
}

static void put_u8(enc *e, unsigned v)
{
    uint8_t x = (uint8_t)v;
    put_raw(e, &x, 1);
}

static void put_u32(enc *e, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                    (uint8_t)v};
    put_raw(e, x, 4);
}

static void put_u64(enc *e, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) {
        x[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    put_raw(e, x, 8);
}

static void put_bytes(enc *e, const void *p, size_t n)
{
    if (n > KEEL_WF_FRAME_MAX) {
        e->big = 1;
        return;
    }
    put_u32(e, (uint32_t)n);
    put_raw(e, p, n);
}

static void put_str(enc *e, const char *s)
{
    if (s == NULL) {
        s = "";
    }
    put_bytes(e, s, strlen(s));
}

static void put_strs(enc *e, const char *const *v, size_t n)
{
    if (n > KEEL_WF_STRS_MAX) {
        e->big = 1;
        return;
    }
    put_u32(e, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_str(e, v[i]);
    }
}

static void put_capdata(enc *e, const keel_capdata *cd)
{
    if (cd == NULL) {
        put_bytes(e, NULL, 0);
        put_u32(e, 0);
        return;
    }
    put_bytes(e, cd->body.ptr, cd->body.len);
    put_strs(e, cd->slots, cd->nslots);
}

static void put_opt_str(enc *e, const char *s)
{
    put_u8(e, s != NULL);
    if (s != NULL) {
        put_str(e, s);
    }
}

static enc begin(keel_wf_buf *b, unsigned type)
{
    enc e = {.b = b, .start = b->len};
    put_u32(&e, 0); /* patched by finish */
    put_u8(&e, type);
    return e;
}

/* WC2: patch the length, decode what was written, keep it or roll back. */
static int finish(enc *e)
{
    keel_wf_buf *b = e->b;
    if (e->oom || e->big) {
        b->len = e->start;
        if (e->oom) {
            snprintf(b->why, sizeof b->why, "out of memory encoding a frame");
            return KEEL_ENOMEM;
        }
        snprintf(b->why, sizeof b->why,
                 "frame (or one of its fields) is above the limit of %u bytes",
                 KEEL_WF_FRAME_MAX);
        return KEEL_EINVAL;
    }
    size_t n = b->len - e->start;
    uint32_t len = (uint32_t)(n - KEEL_WF_LEN_BYTES);
    uint8_t *p = b->ptr + e->start;
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    keel_wf_frame f;
    int rc = keel_wf_decode(p, n, KEEL_WF_FROM_KERNEL | KEEL_WF_FROM_WORKER, &f,
                            NULL, 0, b->why, sizeof b->why);
    if (rc != KEEL_OK) {
        b->len = e->start;
    }
    return rc;
}

int keel_wf_put_hello(keel_wf_buf *b, const uint32_t *versions, size_t n,
                      const char *name)
{
    enc e = begin(b, KEEL_WF_HELLO);
    if (n > KEEL_WF_FRAME_MAX / 4) {
        e.big = 1;
    } else {
        put_u32(&e, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            put_u32(&e, versions[i]);
        }
    }
    put_str(&e, name);
    return finish(&e);
}

int keel_wf_put_start(keel_wf_buf *b, uint64_t next_o, uint64_t next_p,
                      const void *params, size_t params_len)
{
    enc e = begin(b, KEEL_WF_START);
    put_u64(&e, next_o);
    put_u64(&e, next_p);
    put_bytes(&e, params, params_len);
    return finish(&e);
}

int keel_wf_put_deliver_message(keel_wf_buf *b, uint64_t seq,
                                const char *target, const char *method,
                                const keel_capdata *args, const char *result)
{
    enc e = begin(b, KEEL_WF_DELIVER);
    put_u64(&e, seq);
    put_u8(&e, KEEL_DELIVER_MESSAGE);
    put_str(&e, target);
    put_str(&e, method);
    put_capdata(&e, args);
    put_opt_str(&e, result);
    return finish(&e);
}

int keel_wf_put_deliver_notify(keel_wf_buf *b, uint64_t seq,
                               const char *promise, int rejected,
                               const keel_capdata *resolution)
{
    enc e = begin(b, KEEL_WF_DELIVER);
    put_u64(&e, seq);
    put_u8(&e, KEEL_DELIVER_NOTIFY);
    put_str(&e, promise);
    put_u8(&e, rejected != 0);
    put_capdata(&e, resolution);
    return finish(&e);
}

int keel_wf_put_deliver_gc(keel_wf_buf *b, uint64_t seq, int kind,
                           const char *const *vrefs, size_t n)
{
    enc e = begin(b, KEEL_WF_DELIVER);
    put_u64(&e, seq);
    /* another kind is written as is: the decoder refuses it (WC2) */
    put_u8(&e, kind >= KEEL_DELIVER_DROP_EXPORTS &&
                       kind <= KEEL_DELIVER_RETIRE_IMPORTS
                   ? (unsigned)kind
                   : 0xFFu);
    put_strs(&e, vrefs, n);
    return finish(&e);
}

int keel_wf_put_result(keel_wf_buf *b, int32_t rc, const void *data, size_t len)
{
    enc e = begin(b, KEEL_WF_RESULT);
    put_u32(&e, (uint32_t)rc);
    put_bytes(&e, data, len);
    return finish(&e);
}

int keel_wf_put_durable(keel_wf_buf *b, unsigned what, uint64_t seq)
{
    enc e = begin(b, KEEL_WF_DURABLE);
    put_u8(&e, what > 0xFF ? 0 : what);
    put_u64(&e, seq);
    return finish(&e);
}

int keel_wf_put_stop(keel_wf_buf *b)
{
    enc e = begin(b, KEEL_WF_STOP);
    return finish(&e);
}

int keel_wf_put_w_hello(keel_wf_buf *b, uint32_t version)
{
    enc e = begin(b, KEEL_WF_W_HELLO);
    put_u32(&e, version);
    return finish(&e);
}

int keel_wf_put_started(keel_wf_buf *b, int ok, const char *reason)
{
    enc e = begin(b, KEEL_WF_STARTED);
    put_u8(&e, ok != 0);
    put_str(&e, reason);
    return finish(&e);
}

int keel_wf_put_done(keel_wf_buf *b, uint64_t seq, int ok, const char *reason)
{
    enc e = begin(b, KEEL_WF_DONE);
    put_u64(&e, seq);
    put_u8(&e, ok != 0);
    put_str(&e, reason);
    return finish(&e);
}

int keel_wf_put_begin(keel_wf_buf *b, uint64_t seq)
{
    enc e = begin(b, KEEL_WF_BEGIN);
    put_u64(&e, seq);
    return finish(&e);
}

int keel_wf_put_end(keel_wf_buf *b, uint64_t seq)
{
    enc e = begin(b, KEEL_WF_END);
    put_u64(&e, seq);
    return finish(&e);
}

static enc begin_sys(keel_wf_buf *b, unsigned op)
{
    enc e = begin(b, KEEL_WF_SYSCALL);
    put_u8(&e, op);
    return e;
}

int keel_wf_put_send(keel_wf_buf *b, const char *target, const char *method,
                     const keel_capdata *args, const char *result)
{
    enc e = begin_sys(b, KEEL_WF_OP_SEND);
    put_str(&e, target);
    put_str(&e, method);
    put_capdata(&e, args);
    put_opt_str(&e, result);
    return finish(&e);
}

int keel_wf_put_subscribe(keel_wf_buf *b, const char *promise)
{
    enc e = begin_sys(b, KEEL_WF_OP_SUBSCRIBE);
    put_str(&e, promise);
    return finish(&e);
}

int keel_wf_put_resolve(keel_wf_buf *b, const char *promise, int rejected,
                        const keel_capdata *data)
{
    enc e = begin_sys(b, KEEL_WF_OP_RESOLVE);
    put_str(&e, promise);
    put_u8(&e, rejected != 0);
    put_capdata(&e, data);
    return finish(&e);
}

int keel_wf_put_exit(keel_wf_buf *b, int failure, const keel_capdata *info)
{
    enc e = begin_sys(b, KEEL_WF_OP_EXIT);
    put_u8(&e, failure != 0);
    put_capdata(&e, info);
    return finish(&e);
}

int keel_wf_put_vs_get(keel_wf_buf *b, const char *key)
{
    enc e = begin_sys(b, KEEL_WF_OP_VS_GET);
    put_str(&e, key);
    return finish(&e);
}

int keel_wf_put_vs_set(keel_wf_buf *b, const char *key, const void *val,
                       size_t len)
{
    enc e = begin_sys(b, KEEL_WF_OP_VS_SET);
    put_str(&e, key);
    put_bytes(&e, val, len);
    return finish(&e);
}

int keel_wf_put_vs_delete(keel_wf_buf *b, const char *key)
{
    enc e = begin_sys(b, KEEL_WF_OP_VS_DELETE);
    put_str(&e, key);
    return finish(&e);
}

int keel_wf_put_vs_next_key(keel_wf_buf *b, const char *after)
{
    enc e = begin_sys(b, KEEL_WF_OP_VS_NEXT_KEY);
    put_str(&e, after);
    return finish(&e);
}

int keel_wf_put_gc(keel_wf_buf *b, unsigned op, const char *const *vrefs,
                   size_t n)
{
    enc e = begin_sys(b, op >= KEEL_WF_OP_DROP_IMPORTS &&
                                 op <= KEEL_WF_OP_ABANDON_EXPORTS
                             ? op
                             : 0xFFu);
    put_strs(&e, vrefs, n);
    return finish(&e);
}
