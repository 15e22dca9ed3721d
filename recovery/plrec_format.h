/*
 * recovery/plrec_format.h — the trace that the power-loss recorder
 * (recovery/plrec.c, libkeel_plrec.so) writes and recovery/powerloss.c
 * reads. Header only, no dependencies: the recorder is its own shared
 * object and links nothing of keel.
 *
 * A trace is the 8-byte magic KEEL__PLREC_MAGIC followed by records, each
 * one keel__plrec_hdr (native byte order: the trace is read on the machine
 * that wrote it) and then path (path_len bytes, no NUL), path2 (path2_len)
 * and data (data_len). Paths are relative to the traced root ("." is the
 * root itself), with no "." or ".." components and no repeated '/'.
 *
 * Invariants:
 *   PF1 A record is written only after its call succeeded, with what the
 *       call did (a short write records the bytes written), and records
 *       appear in the order the calls completed: the recorder holds one
 *       lock across the call and its record.
 *   PF2 Operations on a descriptor name it by a handle: a number given by
 *       the OPEN record that bound it (one per successful open of a path
 *       under the root, never reused), so a file renamed or unlinked while
 *       open is still the same file.
 *   PF3 offset is the file offset the bytes were written at, whatever call
 *       wrote them (write/writev at the descriptor's position, O_APPEND at
 *       the end).
 */
#ifndef KEEL_RECOVERY_PLREC_FORMAT_H
#define KEEL_RECOVERY_PLREC_FORMAT_H

#include <stdint.h>

#define KEEL__PLREC_MAGIC       "KEELPLR1"
#define KEEL__PLREC_MAGIC_BYTES 8

/* The recorder's environment. */
#define KEEL__PLREC_ENV_TRACE "KEEL_PLREC_TRACE" /* file to append to */
#define KEEL__PLREC_ENV_ROOT  "KEEL_PLREC_ROOT"  /* directory traced */

enum keel__plrec_op {
    /* path: handle = the new handle; flags = the open flags; flags has
     * O_CREAT when the call could create the file, O_TRUNC when it
     * truncated it, O_DSYNC/O_SYNC when every write through it is
     * durable on return. */
    KEEL__PLREC_OPEN = 1,
    KEEL__PLREC_WRITE = 2,     /* handle, offset, data */
    KEEL__PLREC_TRUNCATE = 3,  /* handle; offset = the new length */
    KEEL__PLREC_RENAME = 4,    /* path -> path2 */
    KEEL__PLREC_UNLINK = 5,    /* path */
    KEEL__PLREC_MKDIR = 6,     /* path */
    KEEL__PLREC_RMDIR = 7,     /* path */
    KEEL__PLREC_FSYNC = 8,     /* handle (a file or a directory) */
    KEEL__PLREC_FDATASYNC = 9, /* handle */
    KEEL__PLREC_MSYNC = 10,    /* handle (the mapped file), offset, length
                                  (data_len 0; length in aux) */
    /* sync_file_range: recorded, but it makes nothing durable (it flushes
     * no disk cache and no metadata) */
    KEEL__PLREC_SYNC_RANGE = 11,
    KEEL__PLREC_SYNC_ALL = 12, /* sync(), syncfs() */
    KEEL__PLREC_NOPS = 13,
};

typedef struct keel__plrec_hdr {
    uint8_t op;
    uint8_t pad[3];
    uint32_t handle;
    uint32_t flags;
    uint32_t path_len;
    uint32_t path2_len;
    uint32_t pad2;
    uint64_t offset;
    uint64_t data_len;
    uint64_t aux;
} keel__plrec_hdr;

#endif
