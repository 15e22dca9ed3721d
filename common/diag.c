/*
 * common/diag.c — filling keel_diag, and the always-on assertion handler.
 */
#include "common/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int keel__diag(keel_diag *diag, int code, const char *fmt, ...)
{
    if (diag != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(diag->msg, sizeof(diag->msg), fmt, ap);
        va_end(ap);
        diag->code = code;
    }
    return code;
}

_Noreturn void keel__assert_fail(const char *expr, const char *file, int line,
                                 const char *func)
{
    fprintf(stderr, "keel: assertion failed: %s (%s:%d, %s)\n", expr, file,
            line, func);
    abort();
}

const char *keel__printable(const void *p, size_t len, int more, char *buf,
                            size_t cap)
{
    const uint8_t *k = p;
    size_t o = 0;
    size_t i = 0;
    for (; i < len && o + 8 < cap; i++) {
        uint8_t c = k[i];
        if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\') {
            buf[o++] = (char)c;
        } else {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        }
    }
    if ((i < len || more) && o + 4 <= cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}
