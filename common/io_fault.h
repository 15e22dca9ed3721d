/*
 * common/io_fault.h — a fault-injecting keel_io for tests and `keel
 * crashtest`.
 *
 * It wraps the POSIX table (real files in a real directory) and, following a
 * plan, can:
 *   - fail the N-th operation of a kind (or of any kind) with a chosen error
 *     (KEEL_EIO from fsync, KEEL_ENOSPC or KEEL_EIO from pwrite, ...);
 *   - tear a pwrite: write only a prefix of it, then fail it (short write);
 *   - "crash" just before or just after the N-th operation: that operation
 *     and every later one do nothing and return KEEL_EIO, so the code under
 *     test stops making progress as a killed process would;
 *   - model a power loss (keel__io_fault_power_loss): every file is put back
 *     to the bytes covered by its last successful fsync, optionally keeping
 *     the first `keep_bytes` of the unsynced writes in the order they were
 *     issued (a torn prefix: the last kept write lands only in part);
 *   - flip one chosen bit of the buffer the N-th pread returns.
 *
 * Every op is counted (total and per kind), mkdir and rmdir included, so a
 * test can first run a
 * workload clean to learn how many ops it makes, then sweep N over them.
 * Renames, unlinks and creations are applied to the real directory at once
 * and considered durable once fsync_dir of their directory returned (a file
 * created but never covered by fsync_dir survives a power loss as well, with
 * its synced contents: the model is about data, not names).
 *
 * Thread-safe (I4): one mutex guards all of the layer's state.
 */
#ifndef KEEL_COMMON_IO_FAULT_H
#define KEEL_COMMON_IO_FAULT_H

#include <stdint.h>

#include "common/io.h"

enum keel_io_op {
    KEEL_IO_OP_ANY = 0,
    KEEL_IO_OP_OPEN,
    KEEL_IO_OP_PREAD,
    KEEL_IO_OP_PWRITE,
    KEEL_IO_OP_FSYNC,
    KEEL_IO_OP_TRUNCATE,
    KEEL_IO_OP_SIZE,
    KEEL_IO_OP_RENAME,
    KEEL_IO_OP_UNLINK,
    KEEL_IO_OP_FSYNC_DIR,
    KEEL_IO_OP_CLOSE,
    KEEL_IO_OP_MKDIR,
    KEEL_IO_OP_RMDIR,
    KEEL_IO_OP_COUNT_
};

/* What to do at the planned operation. */
enum keel_io_fault_kind {
    KEEL_IO_FAULT_NONE = 0,
    KEEL_IO_FAULT_FAIL,         /* the op fails with .err; later ops run */
    KEEL_IO_FAULT_SHORT_WRITE,  /* pwrite writes .torn_bytes, fails .err */
    KEEL_IO_FAULT_CRASH_BEFORE, /* the op and all later ops: KEEL_EIO */
    KEEL_IO_FAULT_CRASH_AFTER,  /* the op runs; all later ops: KEEL_EIO */
    KEEL_IO_FAULT_FLIP_READ,    /* the op (a pread) returns data with one
                                   bit flipped: bit .flip_bit of the buffer */
};

typedef struct keel_io_fault_plan {
    enum keel_io_fault_kind kind;
    enum keel_io_op op;  /* which kind of op is counted; ANY counts all */
    uint64_t nth;        /* 1-based index among ops of that kind */
    int err;             /* KEEL_E* for FAIL and SHORT_WRITE */
    uint64_t torn_bytes; /* SHORT_WRITE: bytes that land */
    uint64_t flip_bit;   /* FLIP_READ: bit index within the read buffer,
                            taken modulo 8 * bytes read */
} keel_io_fault_plan;

typedef struct keel_io_fault keel_io_fault;

/* Create a fault layer with no plan (behaves as POSIX, counting ops).
 * @return KEEL_OK or KEEL_ENOMEM. */
int keel__io_fault_new(keel_io_fault **out);
void keel__io_fault_free(keel_io_fault *f);
/* The keel_io table to hand to the code under test; valid until free. */
keel_io *keel__io_fault_io(keel_io_fault *f);
/* Replace the plan (counters keep running). NULL clears it. */
void keel__io_fault_set_plan(keel_io_fault *f, const keel_io_fault_plan *p);
/* Zero every counter and forget the crashed state. */
void keel__io_fault_reset_counts(keel_io_fault *f);
/* Ops of a kind made so far (KEEL_IO_OP_ANY: all kinds). */
uint64_t keel__io_fault_count(const keel_io_fault *f, enum keel_io_op op);
/* 1 once a CRASH plan fired. */
int keel__io_fault_crashed(const keel_io_fault *f);
/*
 * Model a power loss now: every file this layer has written is rewritten so
 * that it holds exactly the bytes covered by its last successful fsync plus
 * the first keep_bytes bytes of the writes (and truncates) issued after it,
 * in issue order. Files must be closed by the caller first (or abandoned:
 * their descriptors are closed here). After it, the layer forgets every file
 * and clears the crashed state and plan, ready for a reopen.
 * @return KEEL_OK or the error of the underlying POSIX call.
 */
int keel__io_fault_power_loss(keel_io_fault *f, uint64_t keep_bytes);

#endif
