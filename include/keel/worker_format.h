/*
 * keel/worker_format.h — the frames of the worker protocol, version 1
 * (docs/worker-protocol.md is the contract; this is its one codec, used by
 * the kernel's side and by the C worker runtime alike). Everything is
 * big-endian; nothing is ever written as a C struct. Depends on libc and
 * include/keel/ only.
 *
 * A frame, both ways:
 *
 *     +0   u32  length   bytes after this field: the type byte + payload;
 *                        1 <= length <= KEEL_WF_FRAME_MAX (16 MiB)
 *     +4   u8   type     enum keel_wf_type
 *     +5   payload[length - 1]   the type's fields, back to back
 *
 *   Field encodings:
 *     u8        1 byte              (a flag: 0 or 1, anything else malformed)
 *     u32       4 bytes BE unsigned
 *     i32       4 bytes BE two's complement
 *     u64       8 bytes BE unsigned
 *     bytes     u32 n, then n bytes
 *     str       bytes holding valid UTF-8 (RFC 3629), no NUL
 *     strs      u32 count (<= 65,536), then count str
 *     opt str   u8 0, or u8 1 then str
 *     capdata   bytes body, then strs slots (vrefs)
 *     vref      a str: [op][+-]N, N decimal u64 without leading zeros,
 *               3..23 bytes
 *
 *   Kernel -> worker:
 *     0x01 HELLO    u32 count (>= 1), count x u32 version; str name (>= 1)
 *     0x02 START    u64 next_o; u64 next_p; bytes params (JSON)
 *     0x03 DELIVER  u64 seq; u8 kind; then by kind:
 *                     1 message  str target (o+N); str method (1..255);
 *                                capdata args; opt str result (p-N)
 *                     2 notify   str promise (p+N/p-N); u8 rejected;
 *                                capdata resolution
 *                     3 dropExports    strs vrefs (o+N)
 *                     4 retireExports  strs vrefs (o+N)
 *                     5 retireImports  strs vrefs (o-N)
 *     0x04 RESULT   i32 rc (1 found, 0 not found, < 0 a KEEL_E* code);
 *                   bytes data (<= 1 MiB; empty unless rc == 1)
 *     0x05 DURABLE  u8 what (1 delivery, 2 group, 3 start); u64 seq
 *                   (0 for what 3)
 *     0x06 STOP     nothing
 *
 *   Worker -> kernel:
 *     0x41 HELLO    u32 version
 *     0x42 STARTED  u8 ok; str reason (<= 4,096)
 *     0x43 DONE     u64 seq; u8 ok; str reason (<= 4,096)
 *     0x44 SYSCALL  u8 op; then by op:
 *                     1 send            str target; str method (1..255);
 *                                       capdata args; opt str result
 *                     2 subscribe       str promise
 *                     3 resolve         str promise; u8 rejected;
 *                                       capdata data
 *                     4 exit            u8 failure; capdata info
 *                     5 vatstoreGet     str key (1..480)
 *                     6 vatstoreSet     str key (1..480); bytes value
 *                                       (<= 1 MiB)
 *                     7 vatstoreDelete  str key (1..480)
 *                     8 vatstoreGetNextKey  str after (0..480)
 *                     9..12 dropImports, retireImports, retireExports,
 *                                       abandonExports: strs vrefs
 *     0x45 BEGIN    u64 seq (>= 1)
 *     0x46 END      u64 seq (>= 1)
 *
 * Invariants:
 *   WF1  keel_wf_decode accepts a frame only if it is whole and exact: the
 *        length field equals the buffer's size - 4 and lies in 1..16 MiB,
 *        the type is one of the direction(s) asked for, every field fits,
 *        no byte is left after the last field, every str is UTF-8 without
 *        NUL, every vref has vref syntax and every limit above holds.
 *        Otherwise it returns KEEL_EINVAL and a one-line reason naming the
 *        frame type and the field.
 *   WF2  The decoded frame points into the caller's buffer (it is valid as
 *        long as the buffer is); the decoder allocates nothing. A strs is
 *        exposed as an array only when the caller passed room for it
 *        (keel_wf_decode's strs/strs_cap; a frame has at most one strs);
 *        otherwise keel_wf_strs_next walks it in place.
 *   WF3  Every encoder appends exactly one frame that keel_wf_decode accepts,
 *        or appends nothing and returns an error (KEEL_EINVAL for a field
 *        that breaks a rule of WF1, with the reason in buf->why;
 *        KEEL_ENOMEM). So a peer built on this codec never sends a frame
 *        the other side calls malformed.
 *   WF4  Kinds of vrefs are checked only where the kernel is the sender
 *        (DELIVER's target o+N, result p-N, ...). In worker frames a vref is
 *        checked for syntax only: which vrefs a vat may name is the
 *        kernel's syscall check (an illegal syscall terminates the vat; a
 *        malformed frame is a crash, docs/worker-protocol.md §6).
 */
#ifndef KEEL_WORKER_FORMAT_H
#define KEEL_WORKER_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/vat.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_WF_PROTOCOL_VERSION 1u
#define KEEL_WF_LEN_BYTES        4u                  /* the length prefix */
#define KEEL_WF_FRAME_MAX        (16u * 1024 * 1024) /* length field */
#define KEEL_WF_VREF_MIN         3u
#define KEEL_WF_VREF_MAX         23u
#define KEEL_WF_METHOD_MAX       255u
#define KEEL_WF_KEY_MAX          480u
#define KEEL_WF_VALUE_MAX        (1024u * 1024)
#define KEEL_WF_STRS_MAX         65536u
#define KEEL_WF_REASON_MAX       4096u
#define KEEL_WF_WHY_BYTES        160u /* room for a decoder reason */

enum keel_wf_type {
    /* kernel -> worker */
    KEEL_WF_HELLO = 0x01,
    KEEL_WF_START = 0x02,
    KEEL_WF_DELIVER = 0x03,
    KEEL_WF_RESULT = 0x04,
    KEEL_WF_DURABLE = 0x05,
    KEEL_WF_STOP = 0x06,
    /* worker -> kernel */
    KEEL_WF_W_HELLO = 0x41,
    KEEL_WF_STARTED = 0x42,
    KEEL_WF_DONE = 0x43,
    KEEL_WF_SYSCALL = 0x44,
    KEEL_WF_BEGIN = 0x45,
    KEEL_WF_END = 0x46,
};

/* DELIVER kinds are enum keel_delivery_kind (keel/vat.h): 1..5. */

enum keel_wf_op {
    KEEL_WF_OP_SEND = 1,
    KEEL_WF_OP_SUBSCRIBE = 2,
    KEEL_WF_OP_RESOLVE = 3,
    KEEL_WF_OP_EXIT = 4,
    KEEL_WF_OP_VS_GET = 5,
    KEEL_WF_OP_VS_SET = 6,
    KEEL_WF_OP_VS_DELETE = 7,
    KEEL_WF_OP_VS_NEXT_KEY = 8,
    KEEL_WF_OP_DROP_IMPORTS = 9,
    KEEL_WF_OP_RETIRE_IMPORTS = 10,
    KEEL_WF_OP_RETIRE_EXPORTS = 11,
    KEEL_WF_OP_ABANDON_EXPORTS = 12,
};

enum keel_wf_durable_what {
    KEEL_WF_DURABLE_DELIVERY = 1,
    KEEL_WF_DURABLE_GROUP = 2,
    KEEL_WF_DURABLE_START = 3,
};

/* Which direction(s) keel_wf_decode accepts. */
#define KEEL_WF_FROM_KERNEL 1u
#define KEEL_WF_FROM_WORKER 2u

/* A decoded strs (WF2): n entries; items is the caller's array, filled,
 * when it had room, else NULL. raw/raw_len are the encoded entries. */
typedef struct keel_wf_strs {
    uint32_t n;
    const keel_bytes *items;
    const uint8_t *raw;
    size_t raw_len;
} keel_wf_strs;

typedef struct keel_wf_capdata {
    keel_bytes body;
    keel_wf_strs slots;
} keel_wf_capdata;

/*
 * One decoded frame. Only the fields of its type (and kind/op) are set; the
 * rest are zero. A str is a keel_bytes of its bytes, NOT NUL-terminated.
 */
typedef struct keel_wf_frame {
    uint8_t type; /* enum keel_wf_type */
    uint32_t length;
    /* HELLO (kernel): versions[nversions] (raw u32 BE) and name */
    uint32_t nversions;
    const uint8_t *versions;
    keel_bytes name;
    /* HELLO (worker) */
    uint32_t version;
    /* START */
    uint64_t next_o, next_p;
    keel_bytes params;
    /* DELIVER, DONE, DURABLE, BEGIN, END: seq */
    uint64_t seq;
    uint8_t kind; /* DELIVER */
    uint8_t op;   /* SYSCALL */
    /* DELIVER message / SYSCALL send: target, method, cap, result
     * (has_result); notify / resolve: promise, rejected, cap; subscribe:
     * promise; exit: failure, cap; GC kinds and ops: vrefs */
    keel_bytes target, method, promise, result;
    int has_result;
    uint8_t rejected, failure;
    keel_wf_capdata cap;
    keel_wf_strs vrefs;
    /* vatstore ops: key (the `after` of GetNextKey), value (Set) */
    keel_bytes key, value;
    /* RESULT */
    int32_t rc;
    keel_bytes data;
    /* DURABLE */
    uint8_t what;
    /* STARTED, DONE */
    uint8_t ok;
    keel_bytes reason;
} keel_wf_frame;

/* The name of a frame type ("DELIVER", "SYSCALL") or "unknown". Static. */
KEEL_API const char *keel_wf_type_name(unsigned type);
/* The name of a syscall op ("vatstoreSet") or "unknown". Static. */
KEEL_API const char *keel_wf_op_name(unsigned op);

/*
 * Check a frame's length prefix before reading the rest: *length = the
 * prefix (bytes still to read: *length). @return KEEL_OK, or KEEL_EINVAL
 * (0, or above KEEL_WF_FRAME_MAX) with a reason in why (may be NULL).
 */
KEEL_API int keel_wf_frame_length(const uint8_t prefix[4], uint32_t *length,
                                  char *why, size_t why_cap);

/*
 * Decode the whole frame buf[0, n) — its length prefix included (WF1, WF2).
 * accept: KEEL_WF_FROM_KERNEL and/or KEEL_WF_FROM_WORKER; a type of the
 * other direction is unknown. strs/strs_cap: optional room for the frame's
 * strs (NULL, 0 for none). @return KEEL_OK, or KEEL_EINVAL with a one-line
 * reason in why (may be NULL).
 */
KEEL_API int keel_wf_decode(const uint8_t *buf, size_t n, unsigned accept,
                            keel_wf_frame *f, keel_bytes *strs, size_t strs_cap,
                            char *why, size_t why_cap);

/*
 * Walk a strs in place: *pos starts at 0. @return 1 and the next entry in
 * *out, or 0 at the end. Only for a strs keel_wf_decode accepted.
 */
KEEL_API int keel_wf_strs_next(const keel_wf_strs *s, size_t *pos,
                               keel_bytes *out);

/* Checks of the format's rules, for encoders' callers that want to decide
 * before sending (both: 1 valid, 0 not). */
KEEL_API int keel_wf_valid_utf8(const void *p, size_t n);
KEEL_API int keel_wf_valid_vref(const void *p, size_t n);

/*
 * A caller-owned growing buffer that encoders append frames to. Zero it to
 * start; free ptr when done (keel_wf_buf_free). why holds the reason of the
 * last KEEL_EINVAL.
 */
typedef struct keel_wf_buf {
    uint8_t *ptr;
    size_t len, cap;
    char why[KEEL_WF_WHY_BYTES];
} keel_wf_buf;

KEEL_API void keel_wf_buf_free(keel_wf_buf *b);

/* Encoders (WF3). Strings are NUL-terminated C strings; result/reason may
 * be NULL (absent / ""); a NULL capdata is an empty body with no slots. */
KEEL_API int keel_wf_put_hello(keel_wf_buf *b, const uint32_t *versions,
                               size_t n, const char *name);
KEEL_API int keel_wf_put_start(keel_wf_buf *b, uint64_t next_o, uint64_t next_p,
                               const void *params, size_t params_len);
KEEL_API int keel_wf_put_deliver_message(keel_wf_buf *b, uint64_t seq,
                                         const char *target, const char *method,
                                         const keel_capdata *args,
                                         const char *result);
KEEL_API int keel_wf_put_deliver_notify(keel_wf_buf *b, uint64_t seq,
                                        const char *promise, int rejected,
                                        const keel_capdata *resolution);
/* kind: KEEL_DELIVER_DROP_EXPORTS, _RETIRE_EXPORTS or _RETIRE_IMPORTS */
KEEL_API int keel_wf_put_deliver_gc(keel_wf_buf *b, uint64_t seq, int kind,
                                    const char *const *vrefs, size_t n);
KEEL_API int keel_wf_put_result(keel_wf_buf *b, int32_t rc, const void *data,
                                size_t len);
KEEL_API int keel_wf_put_durable(keel_wf_buf *b, unsigned what, uint64_t seq);
KEEL_API int keel_wf_put_stop(keel_wf_buf *b);

KEEL_API int keel_wf_put_w_hello(keel_wf_buf *b, uint32_t version);
KEEL_API int keel_wf_put_started(keel_wf_buf *b, int ok, const char *reason);
KEEL_API int keel_wf_put_done(keel_wf_buf *b, uint64_t seq, int ok,
                              const char *reason);
KEEL_API int keel_wf_put_begin(keel_wf_buf *b, uint64_t seq);
KEEL_API int keel_wf_put_end(keel_wf_buf *b, uint64_t seq);
KEEL_API int keel_wf_put_send(keel_wf_buf *b, const char *target,
                              const char *method, const keel_capdata *args,
                              const char *result);
KEEL_API int keel_wf_put_subscribe(keel_wf_buf *b, const char *promise);
KEEL_API int keel_wf_put_resolve(keel_wf_buf *b, const char *promise,
                                 int rejected, const keel_capdata *data);
KEEL_API int keel_wf_put_exit(keel_wf_buf *b, int failure,
                              const keel_capdata *info);
KEEL_API int keel_wf_put_vs_get(keel_wf_buf *b, const char *key);
KEEL_API int keel_wf_put_vs_set(keel_wf_buf *b, const char *key,
                                const void *val, size_t len);
KEEL_API int keel_wf_put_vs_delete(keel_wf_buf *b, const char *key);
KEEL_API int keel_wf_put_vs_next_key(keel_wf_buf *b, const char *after);
/* op: KEEL_WF_OP_DROP_IMPORTS .. KEEL_WF_OP_ABANDON_EXPORTS */
KEEL_API int keel_wf_put_gc(keel_wf_buf *b, unsigned op,
                            const char *const *vrefs, size_t n);

#ifdef __cplusplus
}
#endif

#endif
