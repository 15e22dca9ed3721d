/*
 * common/errors.c — names and messages of keel's error codes, all generated
 * from the one table KEEL_ERRNO_MAP in keel/base.h (where these functions
 * are declared), the errno translation used by the I/O tables, and
 * keel_version().
 *
 * Invariants:
 *   E1  Names and messages come from KEEL_ERRNO_MAP alone: a code added
 *       there is named and described here without touching this file.
 *   E2  keel_translate_errno() maps every errno to a KEEL_E* code (one it
 *       does not know: KEEL_EIO), so no errno leaves keel.
 */
#include "keel/keel.h"

#include <errno.h>
#include <stdio.h>

const char *keel_err_name(int err)
{
    switch (err) {
    case KEEL_OK:
        return "KEEL_OK";
#define XX(name, val, msg) \
    case KEEL_##name:      \
        return "KEEL_" #name;
        KEEL_ERRNO_MAP(XX)
#undef XX
    default:
        return "KEEL_UNKNOWN";
    }
}

const char *keel_strerror(int err)
{
    switch (err) {
    case KEEL_OK:
        return "success";
#define XX(name, val, msg) \
    case KEEL_##name:      \
        return msg;
        KEEL_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

char *keel_strerror_r(int err, char *buf, size_t cap)
{
    if (cap > 0) {
        snprintf(buf, cap, "%s", keel_strerror(err));
    }
    return buf;
}

int keel_translate_errno(int errnum)
{
    switch (errnum) {
    case 0:
        return KEEL_OK;
    case ENOMEM:
        return KEEL_ENOMEM;
    case ENOSPC:
    case EDQUOT:
        return KEEL_ENOSPC;
    case ENOENT:
    case ENOTDIR:
        return KEEL_ENOENT;
    case EEXIST:
        return KEEL_EEXIST;
    case EACCES:
    case EPERM:
    case EROFS:
        return KEEL_EACCES;
    case EINVAL:
        return KEEL_EINVAL;
    case EFBIG:
        return KEEL_ETOOBIG;
    case EWOULDBLOCK:
        return KEEL_EBUSY;
    default:
        return KEEL_EIO;
    }
}

const char *keel_version(void)
{
    return KEEL_VERSION_STRING;
}
