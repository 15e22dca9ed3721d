/*
 * common/diag.h — internal helpers that fill a caller's keel_diag and the
 * little-endian encoders every on-disk format uses.
 *
 * Formats are never written as C structs: each field is encoded by hand with
 * the helpers below so the layout is independent of compiler and host.
 */
#ifndef KEEL_COMMON_DIAG_H
#define KEEL_COMMON_DIAG_H

#include <stdint.h>
#include <string.h>

#include "keel/keel.h"

/*
 * Fill diag (if not NULL) with code and a printf-formatted message.
 * @return code, so that `return keel__diag(d, KEEL_EIO, "...")` reads well.
 */
int keel__diag(keel_diag *diag, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Bytes in printable form for messages: \xNN for bytes outside 0x20..0x7e
 * and for `"` and `\`, as much as fits in cap (NUL-terminated), then
 * "..." when cut short or when more (the caller shortened p) follows.
 * @return buf.
 */
const char *keel__printable(const void *p, size_t len, int more, char *buf,
                            size_t cap);

/* Assertions stay on in release builds (programmer errors only). */
#define KEEL_ASSERT(expr) \
    ((expr) ? (void)0 : keel__assert_fail(#expr, __FILE__, __LINE__, __func__))
#define KEEL_UNREACHABLE() \
    keel__assert_fail("unreachable", __FILE__, __LINE__, __func__)
_Noreturn void keel__assert_fail(const char *expr, const char *file, int line,
                                 const char *func);

static inline void keel__put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void keel__put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline void keel__put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint16_t keel__get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t keel__get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static inline uint64_t keel__get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

#endif
