/*
 * keel/base.h — what every keel header shares: KEEL_API, the error table
 * (KEEL_ERRNO_MAP) and its names, keel_diag and keel_bytes. Include
 * keel/keel.h; this header exists so that the area headers can include it
 * in any order.
 */
#ifndef KEEL_BASE_H
#define KEEL_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_API __attribute__((visibility("default")))

/* One table for every error keel returns: name, value, message. */
#define KEEL_ERRNO_MAP(XX)                                     \
    XX(EINVAL, -1, "invalid argument")                         \
    XX(ENOMEM, -2, "out of memory")                            \
    XX(EIO, -3, "I/O error")                                   \
    XX(ENOSPC, -4, "no space left on device")                  \
    XX(ECORRUPT, -5, "on-disk data failed validation")         \
    XX(EVERSION, -6, "unsupported format version")             \
    XX(EFAILED, -7, "handle failed earlier; close and reopen") \
    XX(EBUSY, -8, "state directory locked by another process") \
    XX(ENOENT, -9, "no such file or directory")                \
    XX(EEXIST, -10, "already exists")                          \
    XX(EACCES, -11, "permission denied")                       \
    XX(ETOOBIG, -12, "value too large")

enum keel_status {
    KEEL_OK = 0,
#define XX(name, val, msg) KEEL_##name = (val),
    KEEL_ERRNO_MAP(XX)
#undef XX
};

/* The name of an error code ("KEEL_ECORRUPT"), or "KEEL_UNKNOWN". Static. */
KEEL_API const char *keel_err_name(int err);
/* The message of an error code ("on-disk data failed validation"). Static. */
KEEL_API const char *keel_strerror(int err);
/*
 * The message of an error code copied into buf (always NUL-terminated when
 * cap > 0). @return buf.
 */
KEEL_API char *keel_strerror_r(int err, char *buf, size_t cap);
/* Translate a positive errno value into a KEEL_E* code (EIO if unknown). */
KEEL_API int keel_translate_errno(int errnum);

/*
 * Caller-owned details of a failure. keel fills msg with one line naming
 * file, offset and expectation; code repeats the returned error. A call that
 * succeeds leaves it untouched.
 */
typedef struct keel_diag {
    int code;
    char msg[512];
} keel_diag;

/* Borrowed bytes: the header of each call says who owns them and until when. */
typedef struct keel_bytes {
    const void *ptr;
    size_t len;
} keel_bytes;

/* keel's version, "MAJOR.MINOR.PATCH". Static. */
KEEL_API const char *keel_version(void);

#ifdef __cplusplus
}
#endif

#endif
