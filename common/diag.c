/*
 * common/diag.c — filling keel_diag, and the always-on assertion handler.
 */
#include "common/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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
