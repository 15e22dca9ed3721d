/*
 * recovery/plrec_format.h — the trace that the power-loss recorder
 * (recovery/plrec.c, libkeel_plrec.so) writes and recovery/powerloss.c
 * reads. Header only, no dependencies: the recorder is its own shared
 * object and links nothing of keel.
 *
 * A trace is the 8-byte magic KEEL__PLREC_MAGIC followed by records: a
 * 48-byte header, then path (path_len bytes, no NUL), path2 (path2_len)
 * and data (data_len). Header (little-endian):
 *   +0  u8  op (enum keel__plrec_op)   +1  u8[3] 0
 *   +4  u32 handle                     +8  u32 flags (the open(2) flags,
 *                                              as this platform spells them)
 *   +12 u32 path_len                   +16 u32 path2_len
 *   +20 u32 0                          +24 u64 offset
 *   +32 u64 data_len                   +40 u64 aux
 * Paths are relative to the traced root ("." is the root itself), with no
 * "." or ".." components and no repeated '/'. There is no checksum: a
 * trace lives as long as one session, on the machine that wrote it; a
 * record cut short is refused.
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

/* A record's header, decoded. */
typedef struct keel__plrec_hdr {
    uint8_t op;
    uint32_t handle;
    uint32_t flags;
    uint32_t path_len;
    uint32_t path2_len;
    uint64_t offset;
    uint64_t data_len;
    uint64_t aux;
} keel__plrec_hdr;

#define KEEL__PLREC_HDR_BYTES 48

static inline void keel__plrec_put(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint64_t keel__plrec_get(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static inline void keel__plrec_encode(uint8_t out[KEEL__PLREC_HDR_BYTES],
                                      const keel__plrec_hdr *h)
{
    for (int i = 0; i < KEEL__PLREC_HDR_BYTES; i++) {
        out[i] = 0;
    }
    out[0] = h->op;
    keel__plrec_put(out + 4, h->handle, 4);
    keel__plrec_put(out + 8, h->flags, 4);
    keel__plrec_put(out + 12, h->path_len, 4);
    keel__plrec_put(out + 16, h->path2_len, 4);
    keel__plrec_put(out + 24, h->offset, 8);
    keel__plrec_put(out + 32, h->data_len, 8);
    keel__plrec_put(out + 40, h->aux, 8);
}

static inline void keel__plrec_decode(const uint8_t in[KEEL__PLREC_HDR_BYTES],
                                      keel__plrec_hdr *h)
{
    h->op = in[0];
    h->handle = (uint32_t)keel__plrec_get(in + 4, 4);
    h->flags = (uint32_t)keel__plrec_get(in + 8, 4);
    h->path_len = (uint32_t)keel__plrec_get(in + 12, 4);
    h->path2_len = (uint32_t)keel__plrec_get(in + 16, 4);
    h->offset = keel__plrec_get(in + 24, 8);
    h->data_len = keel__plrec_get(in + 32, 8);
    h->aux = keel__plrec_get(in + 40, 8);
}

_Static_assert(KEEL__PLREC_MAGIC_BYTES == sizeof(KEEL__PLREC_MAGIC) - 1,
               "the magic is 8 bytes");

#endif
