/*
 * common/io.h — the one replaceable table through which keel does its own
 * file I/O: WAL segments, snapshot files, the directories of a STATE, its
 * store and its log (created with mkdir, removed with rmdir), and the
 * names it renames and unlinks.
 *
 * wal/, store/, kernel/, snapshot/ and recovery/ never call pwrite, fsync,
 * rename, unlink, mkdir or rmdir directly on a state's files: they call
 * through a keel_io, so that tests (and `keel crashtest`) can swap in the
 * fault-injecting table of common/io_fault.h and make every write, sync,
 * rename and directory operation fail, tear or vanish on demand.
 *
 * Outside the table, on purpose:
 *   - Lock files (STATE/lock, STATE/wal/lock: kernel.c, wal_writer.c,
 *     snapshot/state.c): opened, flock(2)ed and closed directly. A lock is
 *     no data (it changes no byte a reader sees), and it must be released
 *     when its holder dies, including a holder the fault table has
 *     "crashed", whose ops (close included) then do nothing: through the
 *     table, a crashed kernel would keep its lock and a restart in the same
 *     process would find the state busy.
 *   - LMDB's own files (store/data.mdb, lock.mdb): LMDB does its I/O
 *     itself; the table sees only the store's directory and the names
 *     keel itself makes and removes (store/store.c).
 *   - The probe that a snapshot directory is writable (host/snapshots.c:
 *     an O_TMPFILE, or a named file made and removed at once): it asks the
 *     file system a question and leaves nothing of a state behind.
 *   - Directory listing: it changes nothing and keel reads directories
 *     with opendir()/readdir() directly.
 *   - The crash harnesses' own scratch copies (recovery/crashtest.c,
 *     powerloss.c): they are the test bench, not the state under test.
 *
 * Contract of every op: return KEEL_OK or a negative KEEL_E* code (errno is
 * translated inside the table and goes no further).
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
    /* mkdir(2) and rmdir(2): KEEL_EEXIST when path exists (mkdir),
     * KEEL_ENOENT when it does not (rmdir). The name is durable only after
     * fsync_dir of the parent (I2). */
    int (*mkdir)(keel_io *io, const char *path, unsigned mode);
    int (*rmdir)(keel_io *io, const char *path);
};

/* The plain POSIX table. Static, stateless, shareable. */
keel_io *keel__io_posix(void);

/* Paths for the fsyncs and renames above, malloc'd (NULL when out of
 * memory): "dir/name", and the directory holding path ("." when it has
 * no '/', "/" for a file in the root). */
char *keel__path_join(const char *dir, const char *name);
char *keel__path_dir(const char *path);

#endif
