/*
 * keel/snapshot.h — snapshot files: a self-describing, checksummed copy of
 * a keyspace (named tables of key -> value) at one point of a kernel's
 * life, written and read as a stream in constant memory.
 *
 * Overview
 *   A snapshot file holds a header (magic, format version), the tables as
 *   zstd frames of length-prefixed key/value entries (each frame checked
 *   by xxh3-64 over its compressed and its decompressed bytes), a JSON
 *   manifest (format, keel version, creation time, kernel id, LSN, crank
 *   number, activity hash, timeline, and each table's entry and byte
 *   counts) and a
 *   trailer (entry totals, an xxh3-64 of the whole file). The byte layout
 *   is drawn in snapshot/snapshot_format.h. This layer knows nothing of
 *   LMDB or the kernel: the kernel feeds it the entries of a read
 *   transaction, and a restore feeds what it reads into a new store.
 *
 * Calling sequence (writer)
 *     keel_snapshot_options o; keel_snapshot_options_init(&o); o.level = 3;
 *     keel_snapshot_meta m = {.kernel_id = kid, .lsn = lsn, ...};
 *     keel_snapshot_writer *w;
 *     rc = keel_snapshot_writer_open("backups/k.snap", &o, &m, &w, &d);
 *     rc = keel_snapshot_writer_add_table(w, "data", &d);
 *     for each key in ascending order:
 *         rc = keel_snapshot_writer_put(w, key, klen, val, vlen, &d);
 *     rc = keel_snapshot_writer_finish(w, &info, &d);  (durable on KEEL_OK)
 *     keel_snapshot_writer_close(w);         (always; aborts if unfinished)
 *   Bytes go to `<path>.tmp` (created exclusively); finish writes the
 *   manifest and trailer, fdatasyncs, closes, renames it over `<path>` and
 *   fsyncs the directory. A crash at any point leaves `<path>` as it was
 *   (absent or the previous file) or the new complete file, never part of
 *   one.
 *
 * Calling sequence (reader)
 *     keel_snapshot_reader *r;
 *     rc = keel_snapshot_reader_open("backups/k.snap", NULL, &r, &d);
 *     keel_snapshot_reader_info(r, &info);       (the manifest, validated)
 *     while ((rc = keel_snapshot_reader_next(r, &e, &d)) == 1) { use e; }
 *     rc == 0: every checksum and count verified; rc < 0: refused
 *     keel_snapshot_reader_close(r);
 *   Or keel_snapshot_verify(path, NULL, &info, &d) to read and check all.
 *
 * Errors
 *   A snapshot truncated at any byte, with any bit flipped, with bytes
 *   appended, or not a snapshot at all is KEEL_ECORRUPT; one of a newer
 *   format version KEEL_EVERSION. The diag names the file (the path as
 *   given), the byte offset, and what was expected, e.g.
 *   `k.snap: offset 4120: frame stored checksum 0x..., computed 0x...`.
 *   Reader errors are sticky: every later next() returns the same error.
 *
 * Caveats
 *   - An entry returned by next() has passed its frame's checksums, but
 *     the file as a whole is sound only once next() returned 0 (file
 *     checksum, frame count and per-table counts are checked at the end).
 *     A restore must not make its result visible before that.
 *   - A stale `<path>.tmp` (a writer crashed, or another is running) makes
 *     writer_open fail with KEEL_EEXIST: the writer never deletes a file it
 *     did not create in this call. Removing it is the caller's job once it
 *     knows no other writer runs (the kernel, holding its state lock, does
 *     it before a periodic snapshot; `keel snapshot create` reports it).
 *   - Memory is bounded by one frame (frame_bytes of entries, or one larger
 *     entry alone: at most KEEL_SNAPSHOT_MAX_KEY_BYTES +
 *     KEEL_SNAPSHOT_MAX_VALUE_BYTES), its compressed copy, the table list
 *     and (reader) the manifest, whatever the number of entries.
 *   - The directory fsync after the rename is what makes the new name
 *     durable: local filesystems only (keel.h).
 *
 * Threading
 *   A writer or reader is used by one thread at a time. Independent
 *   handles may be used from different threads.
 */
#ifndef KEEL_SNAPSHOT_H
#define KEEL_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The format this keel writes and the newest it reads. Format 2 added the
 * timeline to the manifest; a format-1 snapshot (still read, and written
 * on request: keel_snapshot_options.format) is of timeline 0. */
#define KEEL_SNAPSHOT_FORMAT 2u

#define KEEL_SNAPSHOT_MAX_KEY_BYTES        (64u * 1024)
#define KEEL_SNAPSHOT_MAX_VALUE_BYTES      (64u * 1024 * 1024)
#define KEEL_SNAPSHOT_MAX_TABLES           1024u
#define KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES 64u
#define KEEL_SNAPSHOT_DEFAULT_FRAME_BYTES  (1024u * 1024)
#define KEEL_SNAPSHOT_MAX_FRAME_BYTES      (16u * 1024 * 1024)
#define KEEL_SNAPSHOT_DEFAULT_LEVEL        3

struct keel_io; /* internal: common/io.h; NULL selects POSIX */

typedef struct keel_snapshot_options {
    struct keel_io *io;   /* NULL: plain POSIX I/O; must outlive handles */
    int level;            /* zstd level (writer); default 3; any level zstd
                             accepts, negative ones included */
    uint32_t frame_bytes; /* writer: raw entry bytes per frame before it is
                             compressed and written, 1 ..
                             KEEL_SNAPSHOT_MAX_FRAME_BYTES; default 1 MiB.
                             An entry larger than this gets a frame alone */
    int background;       /* writer: 1 compresses and writes each full
                             frame on a thread of its own while the caller
                             fills the next (one frame in flight: memory
                             one raw frame more); 0: in the caller's
                             thread. Default: 1 when more than one CPU is
                             online */
    uint32_t format;      /* writer: 0 (default) KEEL_SNAPSHOT_FORMAT; 1
                             the previous format, for an older reader: no
                             timeline (meta's timeline fields must be 0) */
} keel_snapshot_options;

/* Fill o with the defaults above. */
KEEL_API void keel_snapshot_options_init(keel_snapshot_options *o);

/* The point of a kernel's life a snapshot copies; stored in the manifest. */
typedef struct keel_snapshot_meta {
    uint64_t kernel_id;
    uint64_t lsn;             /* the last LSN the copied state includes;
                                 <= INT64_MAX */
    uint64_t crank;           /* crank number at that LSN; <= INT64_MAX */
    uint64_t activity_hash;   /* the chained activity hash at that LSN */
    uint64_t created_unix_ms; /* writer: 0 = now; <= INT64_MAX */
    /* The history the state belongs to (format 2; 0 in a format-1 file).
     * A kernel's first state is timeline 0; every restore starts a new
     * one, random, whose parent is the snapshot's timeline and whose
     * branch LSN the restored LSN: the last one it shares with it. */
    uint64_t timeline;
    uint64_t timeline_parent;
    uint64_t timeline_branch_lsn; /* <= INT64_MAX */
} keel_snapshot_meta;

/* A table as the manifest lists it. */
typedef struct keel_snapshot_table {
    char name[KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES + 1];
    uint64_t entries;
    uint64_t bytes; /* key + value bytes */
} keel_snapshot_table;

/* The manifest and totals of a snapshot. */
typedef struct keel_snapshot_info {
    keel_snapshot_meta meta;
    uint32_t format;
    char keel_version[32]; /* of the keel that wrote it */
    int level;
    uint32_t frame_bytes;
    uint32_t tables;
    uint64_t entries; /* all tables */
    uint64_t bytes;   /* key + value bytes, all tables */
    uint64_t frames;
    uint64_t file_bytes; /* size of the file */
} keel_snapshot_info;

/* ---- writer ------------------------------------------------------------ */

typedef struct keel_snapshot_writer keel_snapshot_writer;

/*
 * Start writing a snapshot that will replace `path`: creates `<path>.tmp`
 * (O_EXCL) and writes the header to it. Nothing is done to `path` before
 * keel_snapshot_writer_finish().
 * @param[in]  opts  NULL for defaults; copied, not retained (opts->io must
 *                   outlive the writer).
 * @param[in]  meta  copied.
 * @param[out] out   the writer, or NULL on failure; end it with
 *                   keel_snapshot_writer_close(). Nothing to free on
 *                   failure (a `.tmp` this call created is removed).
 * @return KEEL_OK, KEEL_EEXIST (`<path>.tmp` exists: see Caveats),
 *         KEEL_EINVAL (level, frame_bytes or a meta field out of range),
 *         KEEL_ENOENT (no such directory), KEEL_EACCES, KEEL_EIO,
 *         KEEL_ENOSPC, KEEL_ENOMEM. Blocks.
 */
KEEL_API int keel_snapshot_writer_open(const char *path,
                                       const keel_snapshot_options *opts,
                                       const keel_snapshot_meta *meta,
                                       keel_snapshot_writer **out,
                                       keel_diag *diag);

/*
 * Begin the next table; the entries put from now on belong to it. Tables
 * are stored in the order they are added; a table may stay empty.
 * @param[in] name  1..64 bytes of [A-Za-z0-9._-], not used before; copied.
 * @return KEEL_OK, KEEL_EINVAL (bad or duplicate name, more than
 *         KEEL_SNAPSHOT_MAX_TABLES, writer finished), KEEL_ENOMEM, or an
 *         I/O error writing the previous table's last frame (the writer
 *         is then failed), KEEL_EFAILED (it failed earlier). Blocks.
 */
KEEL_API int keel_snapshot_writer_add_table(keel_snapshot_writer *w,
                                            const char *name, keel_diag *diag);

/*
 * Add one entry to the current table. Keys must strictly ascend within a
 * table (bytewise, a proper prefix first). The bytes are copied before the
 * call returns; when a frame fills it is compressed and written.
 * @return KEEL_OK; KEEL_EINVAL (no table yet, empty key, key not above the
 *         previous one, writer finished) or KEEL_ETOOBIG (key over
 *         KEEL_SNAPSHOT_MAX_KEY_BYTES, value over
 *         KEEL_SNAPSHOT_MAX_VALUE_BYTES): the entry is refused, the writer
 *         goes on; KEEL_ENOMEM (the entry is refused); KEEL_EIO /
 *         KEEL_ENOSPC writing a frame, or KEEL_ENOMEM compressing it: the
 *         writer is now failed; KEEL_EFAILED (it failed earlier). Blocks.
 */
KEEL_API int keel_snapshot_writer_put(keel_snapshot_writer *w, const void *key,
                                      size_t key_len, const void *value,
                                      size_t value_len, keel_diag *diag);

/*
 * Write the last frame, the manifest and the trailer; fdatasync, close,
 * rename `<path>.tmp` over `<path>`, fsync the directory. On KEEL_OK the
 * snapshot is durable under `path`.
 * @param[out] info  optional; what was written (as a reader would report).
 * @return KEEL_OK; KEEL_EINVAL (already finished); KEEL_ENOMEM for the
 *         manifest (nothing written: the writer goes on); KEEL_EIO /
 *         KEEL_ENOSPC, or KEEL_ENOMEM compressing the last frame: the
 *         writer is failed, and `path` holds the previous file, or the new
 *         complete one if only the directory fsync failed (its name may
 *         then not survive a power loss); KEEL_EFAILED. Blocks; fsyncs.
 */
KEEL_API int keel_snapshot_writer_finish(keel_snapshot_writer *w,
                                         keel_snapshot_info *info,
                                         keel_diag *diag);

/* 0, or the error that made the writer fail. */
KEEL_API int keel_snapshot_writer_failed(const keel_snapshot_writer *w);

/*
 * Free the writer. Unless finish() succeeded this aborts: `<path>.tmp` is
 * closed and removed (best effort; after a crash it stays for the caller
 * to remove) and `path` is left as it was. NULL is a no-op.
 */
KEEL_API void keel_snapshot_writer_close(keel_snapshot_writer *w);

/* ---- reader ------------------------------------------------------------ */

typedef struct keel_snapshot_reader keel_snapshot_reader;

/* One entry as read. table points into the reader (valid until close);
 * key and value into its frame buffer (valid until the next call). */
typedef struct keel_snapshot_entry {
    const char *table;
    uint32_t table_index;
    keel_bytes key;
    keel_bytes value;
} keel_snapshot_entry;

/*
 * Open a snapshot and validate its header, trailer and manifest (frames
 * are checked as next() reaches them).
 * @param[in]  opts  NULL for defaults; only io is used.
 * @param[out] out   the reader, or NULL on failure; end it with
 *                   keel_snapshot_reader_close().
 * @return KEEL_OK, KEEL_ENOENT, KEEL_EACCES, KEEL_ECORRUPT, KEEL_EVERSION,
 *         KEEL_EIO, KEEL_ENOMEM. Blocks.
 */
KEEL_API int keel_snapshot_reader_open(const char *path,
                                       const keel_snapshot_options *opts,
                                       keel_snapshot_reader **out,
                                       keel_diag *diag);

/* The validated manifest and totals (file_bytes included). */
KEEL_API void keel_snapshot_reader_info(const keel_snapshot_reader *r,
                                        keel_snapshot_info *out);

/* Table i (0 .. info.tables - 1) as the manifest lists it, or NULL.
 * Borrowed until close. */
KEEL_API const keel_snapshot_table *
keel_snapshot_reader_table(const keel_snapshot_reader *r, uint32_t i);

/* The manifest's JSON bytes, as stored. Borrowed until close. */
KEEL_API keel_bytes
keel_snapshot_reader_manifest(const keel_snapshot_reader *r);

/*
 * Read the next entry, in file order (tables in manifest order, keys
 * ascending within each). A frame's checksums and every entry in it are
 * verified before the first of them is returned.
 * @return 1 (an entry in *e), 0 (the end: the file checksum, frame count
 *         and per-table counts verified), or KEEL_ECORRUPT / KEEL_EIO /
 *         KEEL_ENOMEM. After an error or the end every later call returns
 *         the same again.
 */
KEEL_API int keel_snapshot_reader_next(keel_snapshot_reader *r,
                                       keel_snapshot_entry *e, keel_diag *diag);

/* NULL is a no-op. */
KEEL_API void keel_snapshot_reader_close(keel_snapshot_reader *r);

/*
 * Read the whole snapshot at path and check everything: every checksum,
 * every frame decompressed, every entry's bounds and order, the counts
 * against the manifest and trailer.
 * @param[out] info  optional; filled once the manifest was read.
 * @return KEEL_OK only if all is sound; else as reader_open / _next.
 */
KEEL_API int keel_snapshot_verify(const char *path,
                                  const keel_snapshot_options *opts,
                                  keel_snapshot_info *info, keel_diag *diag);

/* ---- state snapshots ---------------------------------------------------- */

/*
 * Write a snapshot of the kernel state in state_dir at its last checkpoint
 * to path (`.tmp`, synced, renamed: see the writer). Needs no lock: it
 * reads in one LMDB read transaction, so it runs beside a `keel run` on
 * the same state without stopping it (not inside a process that has the
 * state open: use the kernel's own snapshot there). The tables are the
 * keyspace split at each key's first '.'; the manifest's LSN is the
 * checkpoint's, its crank and activity hash those of that state.
 * @return KEEL_OK (info, optional, says what was written), KEEL_ENOENT
 *         (no keel state), KEEL_ECORRUPT (a damaged store value: the diag
 *         names the key), KEEL_EVERSION, or a writer error (KEEL_EEXIST
 *         for a stale `<path>.tmp`).
 */
KEEL_API int keel_snapshot_create(const char *state_dir, const char *path,
                                  const keel_snapshot_options *o,
                                  keel_snapshot_info *info, keel_diag *diag);

typedef struct keel_snapshot_restore_options {
    struct keel_io *io;  /* NULL: POSIX */
    const char *wal_dir; /* roll forward through this log after the
                            snapshot (a STATE's wal/); NULL: none */
    uint64_t to_lsn;     /* with wal_dir: stop after this LSN (0: the end
                            of the log) */
    uint64_t to_crank;   /* with wal_dir: stop before the first record of
                            a later crank (0: no bound); not with to_lsn */
} keel_snapshot_restore_options;

KEEL_API void
keel_snapshot_restore_options_init(keel_snapshot_restore_options *o);

typedef struct keel_snapshot_restore_report {
    keel_snapshot_info snapshot; /* the manifest restored from */
    uint64_t rolled_forward;     /* log records applied after it */
    uint64_t lsn;                /* the restored state's LSN */
    uint64_t crank;              /* and crank number */
    uint64_t timeline;           /* the restored state's new timeline; its
                                    parent is snapshot.meta.timeline and its
                                    branch LSN is lsn */
    double seconds;
} keel_snapshot_restore_report;

/*
 * Build a new kernel state in new_state from the snapshot at path, rolled
 * forward through o->wal_dir when given (point-in-time recovery with
 * to_lsn or to_crank). The state is built in `<new_state>.restoring` and
 * renamed to new_state only when complete and synced; new_state must not
 * exist. Its log continues at the restored LSN + 1 and holds the records
 * rolled forward, so `keel recover --check --base <path>` can audit it. A
 * kernel opened on it resumes where the original was at that point, on a
 * timeline of its own (a new random id; parent: the snapshot's timeline;
 * branch LSN: the restored LSN). Every rolled-forward record must chain
 * from the snapshot's activity hash and continue its crank numbers.
 * @param[out] rep  optional.
 * @return KEEL_OK; KEEL_EEXIST (new_state or a `.restoring` exists);
 *         KEEL_EINVAL (options; a point past the log's end); KEEL_ECORRUPT
 *         (a damaged snapshot, a log of another kernel or of another
 *         timeline, a gap between the snapshot and the log: the diag names
 *         the file, the offset or LSN, and for another timeline both
 *         activity hashes and timelines); KEEL_EVERSION; I/O errors. Nothing is
 * left behind on failure (a crash may leave the `.restoring` directory).
 */
KEEL_API int keel_snapshot_restore(const char *path, const char *new_state,
                                   const keel_snapshot_restore_options *o,
                                   keel_snapshot_restore_report *rep,
                                   keel_diag *diag);

#ifdef __cplusplus
}
#endif

#endif
