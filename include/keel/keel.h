/*
 * keel/keel.h — the entry header of keel, a durable object-capability kernel.
 *
 * Overview
 *   keel runs vats and moves messages and promise resolutions between them one
 *   crank at a time. Every crank is one write-ahead-log transaction; recovery
 *   replays the log after a crash. Each area has its own header, all
 *   included from here:
 *     keel/base.h    what all share: the error table, keel_diag, keel_bytes
 *     keel/wal.h     the write-ahead log (segments, records, writer, reader)
 *     keel/snapshot.h  snapshot files (write, read, verify) and kernel
 *                    states to and from them (create, restore, roll
 *                    forward to a point in time)
 *     keel/vat.h     the vat ABI: deliveries and syscalls
 *     keel/kernel.h  the durable kernel: open, boot, step, run, status,
 *                    periodic snapshots
 *     keel/recovery.h  the recovery audit of a state's whole log
 *
 * Errors
 *   Every call returns int: KEEL_OK (0) or a negative KEEL_E* code from the
 *   single table KEEL_ERRNO_MAP (keel/base.h). keel_err_name() and
 *   keel_strerror()
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
 *   - One writer per state directory (the kernel takes STATE/lock) and per
 *     log (keel_wal_open() takes `<dir>/lock`: a second writer gets
 *     KEEL_EBUSY). Read-only commands take STATE/lock shared and change no
 *     byte.
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

#include "keel/base.h"
#include "keel/wal.h"
#include "keel/snapshot.h"
#include "keel/vat.h"
#include "keel/kernel.h"
#include "keel/recovery.h"

#endif
