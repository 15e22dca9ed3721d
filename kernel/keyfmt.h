/*
 * kernel/keyfmt.h — a small fixed formatter for the few strings the kernel
 * still writes in decimal, in place of snprintf: the vref strings of the
 * vat ABI ("o+5", keel_syscall_alloc_object) and text humans read. Keys
 * and counters are binary (store/keyspace.h): nothing here builds a key,
 * and the crank path formats no key or counter in decimal. It writes the
 * same bytes snprintf would for the formats it replaces ("%s", "%c",
 * "%" PRIu32, "%" PRIu64, "%020" PRIu64, "%016" PRIx64).
 *
 * Invariants:
 *   KF1 The output is always NUL-terminated inside its capacity (cap >= 1);
 *       what does not fit is cut, as snprintf cuts, and f->len counts only
 *       the bytes written.
 *   KF2 Decimal numbers have no leading zeros unless a width asks for
 *       them (then zero-padded to at least that width, as "%0Nd"); hex is
 *       lower case.
 */
#ifndef KEEL_KERNEL_KEYFMT_H
#define KEEL_KERNEL_KEYFMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct kfmt {
    char *p;
    size_t cap; /* bytes at p, the NUL included; >= 1 */
    size_t len; /* bytes written, the NUL excluded */
} kfmt;

static inline kfmt keel__kf(char *buf, size_t cap)
{
    buf[0] = '\0';
    return (kfmt){buf, cap, 0};
}

/* Append n bytes of s (KF1: cut at the capacity). */
static inline void keel__kf_mem(kfmt *f, const char *s, size_t n)
{
    size_t room = f->cap - 1 - f->len;
    n = n < room ? n : room;
    memcpy(f->p + f->len, s, n);
    f->len += n;
    f->p[f->len] = '\0';
}

static inline void keel__kf_str(kfmt *f, const char *s)
{
    keel__kf_mem(f, s, strlen(s));
}

static inline void keel__kf_chr(kfmt *f, char c)
{
    keel__kf_mem(f, &c, 1);
}

/* Append v in decimal, zero-padded to at least width digits (KF2). */
static inline void keel__kf_u64w(kfmt *f, uint64_t v, unsigned width)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (sizeof(tmp) - i < width && i > 0) {
        tmp[--i] = '0';
    }
    keel__kf_mem(f, tmp + i, sizeof(tmp) - i);
}

static inline void keel__kf_u64(kfmt *f, uint64_t v)
{
    keel__kf_u64w(f, v, 0);
}

/* Append v as 16 lower-case hex digits ("%016" PRIx64). */
static inline void keel__kf_hex16(kfmt *f, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    for (int i = 15; i >= 0; i--) {
        tmp[i] = digits[v & 15];
        v >>= 4;
    }
    keel__kf_mem(f, tmp, sizeof(tmp));
}

/* buf = a b (as snprintf "%s%s"); @return its length. */
static inline size_t keel__kf_cat(char *buf, size_t cap, const char *a,
                                  const char *b)
{
    kfmt f = keel__kf(buf, cap);
    keel__kf_str(&f, a);
    keel__kf_str(&f, b);
    return f.len;
}

/* buf = pre <n> mid (as snprintf "%s%" PRIu64 "%s"); @return its length. */
static inline size_t keel__kf_key(char *buf, size_t cap, const char *pre,
                                  uint64_t n, const char *mid)
{
    kfmt f = keel__kf(buf, cap);
    keel__kf_str(&f, pre);
    keel__kf_u64(&f, n);
    keel__kf_str(&f, mid);
    return f.len;
}

/* buf = pre <n> mid tail; @return its length. */
static inline size_t keel__kf_key2(char *buf, size_t cap, const char *pre,
                                   uint64_t n, const char *mid,
                                   const char *tail)
{
    kfmt f = keel__kf(buf, cap);
    keel__kf_str(&f, pre);
    keel__kf_u64(&f, n);
    keel__kf_str(&f, mid);
    keel__kf_str(&f, tail);
    return f.len;
}

#endif
