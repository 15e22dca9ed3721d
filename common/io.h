/*
 * common/io.h — the one replaceable table through which keel does its own
 * file I/O (WAL segments, and later snapshots, manifests, lock files).
 *
 * wal/, snapshot/ and recovery/ never call pwrite, fsync, rename or unlink
 * directly: they call through a keel_io, so that tests (and `keel crashtest`)
 * can swap in the fault-injecting table of common/io_fault.h and make every
 * write, sync and rename fail, tear or vanish on demand.
 *
 * Contract of every op: return KEEL_OK or a negative KEEL_E* code (errno is
 * translated inside the table and goes no further). Directory listing is not
 * part of the table: it changes nothing and keel reads directories with
 * opendir()/readdir() directly.
 *
 * Invariants:
 *   I1  pwrite either writes all len bytes or returns an error; a short write
 *       is retried by the table, never surfaced as success.
 *   I2  fsync makes every byte written to fd before the call durable
 *       (fdatasync where it exists); fsync_dir does the same for the names
 *       created, renamed or removed in a directory.
 *   I3  pread returns the bytes that exist: *got < len only at end of file.
 *   I4  A table may be called from several threads at once (the WAL's group
 *       syncer runs on its own thread): implementations lock what they share.
 */
#ifndef KEEL_COMMON_IO_H
#define KEEL_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct keel_io keel_io;
struct keel_io {
    /* flags are open(2)'s O_* flags; mode applies with O_CREAT. */
    int (*open)(keel_io *io, const char *path, int flags, unsigned mode,
                int *fd);
    int (*pread)(keel_io *io, int fd, void *buf, size_t len, uint64_t off,
                 size_t *got);
    int (*pwrite)(keel_io *io, int fd, const void *buf, size_t len,
                  uint64_t off);
    int (*fsync)(keel_io *io, int fd);
    int (*truncate)(keel_io *io, int fd, uint64_t len);
    int (*size)(keel_io *io, int fd, uint64_t *len);
    int (*rename)(keel_io *io, const char *from, const char *to);
    int (*unlink)(keel_io *io, const char *path);
    int (*fsync_dir)(keel_io *io, const char *dir);
    int (*close)(keel_io *io, int fd);
};

/* The plain POSIX table. Static, stateless, shareable. */
keel_io *keel__io_posix(void);

/* Paths for the fsyncs and renames above, malloc'd (NULL when out of
 * memory): "dir/name", and the directory holding path ("." when it has
 * no '/', "/" for a file in the root). */
char *keel__path_join(const char *dir, const char *name);
char *keel__path_dir(const char *path);

#endif
