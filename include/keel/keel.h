/*
 * keel/keel.h — the entry header of keel, a durable object-capability kernel.
 *
 * Overview
 *   keel runs vats and moves messages and promise resolutions between them one
 *   crank at a time. Every crank is one write-ahead-log transaction; recovery
 *   replays the log after a crash; snapshots move and restore a kernel. This
 *   header holds what every area shares: the error table, the diagnostic
 *   buffer and the byte-span type. Each area has its own header, included
 *   from here:
 *     keel/wal.h     the write-ahead log (segments, records, writer, reader)
 *     keel/vat.h     the vat ABI: deliveries and syscalls
 *     keel/kernel.h  the durable kernel: open, boot, step, run, status
 *
 * Errors
 *   Every call returns int: KEEL_OK (0) or a negative KEEL_E* code from the
 *   single table KEEL_ERRNO_MAP below. keel_err_name() and keel_strerror()
 *   name them. errno, zstd and LMDB codes are translated where they arise and
 *   never leave keel. Where a call takes a keel_diag *, it may be NULL; when
 *   given, a failure fills it with one line naming the file (relative to the
 *   directory the call was given), the byte offset and what was expected.
 *   keel never prints and never exits; only the `keel` program chooses exit
 *   codes.
 *
 * Caveats
 *   - State directories must be on a local filesystem: no NFS, no SMB. keel
 *     relies on fdatasync() and on rename() plus a directory fsync being
 *     durable, which network filesystems do not reliably provide.
 *   - One process per state directory (the kernel takes a lock; the WAL
 *     writer by itself does not: callers of keel_wal_open() must not open the
 *     same directory for writing twice).
 *   - Sync policies: `full` loses nothing acknowledged; `group` may lose the
 *     records appended in the last window (bounded by time and count) on
 *     power failure, but never returns them as durable and never leaves a
 *     partial record visible; `off` may lose anything not yet written back by
 *     the operating system and exists for benchmarks.
 *   - Calls that write block, and the ones documented so may fsync.
 *   - There is no global state: all state hangs off handles.
 */
#ifndef KEEL_KEEL_H
#define KEEL_KEEL_H

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

#include "keel/wal.h"
#include "keel/vat.h"
#include "keel/kernel.h"

#endif
