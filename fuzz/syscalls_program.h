/*
 * fuzz/syscalls_program.h — the byte program of the `syscalls` fuzz target
 * (fuzz/syscalls.c), shared with its seed generator
 * (fuzz/make_syscalls_corpus.c).
 *
 * An input is a header byte followed by ops. Every byte sequence is a
 * valid program: an opcode is its byte modulo SP_OP_COUNT, an operand read
 * past the end of the input is 0, and every operand byte is reduced modulo
 * the size of the table it selects from.
 *
 *   byte 0        header: bit 0 (SP_HDR_START) runs the first block inside
 *                 the fuzz vat's start(), before any crank; bit 1
 *                 (SP_HDR_REALTIME) runs timers and thread-pool jobs on
 *                 libuv's clock and threads instead of the kernel's
 *                 deterministic mode (keel_kernel_options.deterministic),
 *                 so completions also land between cranks of a busy run
 *                 queue; such an input may not replay the same way.
 *   bytes 1..     ops, each an opcode byte and its operand bytes (below).
 *
 * Blocks: the ops run in *activations*, each one the fuzz vat getting
 * control: a delivery (message or notify), a timer or thread-pool
 * completion, an outside turn (the harness calling syscalls between
 * cranks), or a held turn (syscalls made while another vat's crank is
 * open). An activation runs ops from the program's cursor up to and
 * including the next SP_YIELD (or the end). The activations come from the
 * program itself (SP_SEND_SELF, SP_TIMER, SP_WORK, SP_OUTSIDE, SP_HELD,
 * answers to calls) and, while the program is not used up and the kernel
 * is idle, from the harness, which then gives the vat an outside turn.
 *
 * Operand kinds (one byte each unless said otherwise):
 *   REF    b < SP_REF_POOL_LIMIT: the vat's pool of vrefs, b % pool size
 *          (its root o+0, the other vats' roots, everything it allocated
 *          or was handed); else a made-up string, kind
 *          (b - SP_REF_POOL_LIMIT) % SP_FORGE_KINDS, followed by one more
 *          byte n used by the numbered kinds (see forge() in syscalls.c:
 *          o-N, p-N it was never given, new o+N / p+N, NULL, "", krefs,
 *          leading zeros, u64 overflow, over-long and binary strings).
 *   METHOD b % SP_METHOD_KINDS: a name from a table (NULL, "" and a
 *          300-byte name included).
 *   CAPDATA one byte c: body kind c % SP_BODY_KINDS (valid JSON, the
 *          "fulfilled to an object" body, a slot index out of range,
 *          malformed JSON, empty with a NULL pointer, binary bytes, NUL
 *          inside, 64 KiB), slot count (c / SP_BODY_KINDS) % 4, then that
 *          many REFs; a body kind of "binary" reads one length byte and
 *          that many bytes. Kind SP_BODY_NONE passes no capdata at all
 *          (a NULL pointer).
 *   KEY    b % SP_KEY_KINDS: NULL, "", a short binary key (one length
 *          byte and that many bytes; NUL bytes read as 0x01), the longest
 *          legal key (480 bytes), one byte over, 4000 bytes, a few fixed
 *          keys.
 *   VALUE  b % SP_VALUE_KINDS: empty (NULL pointer), empty, short binary
 *          (length byte + bytes), the largest legal value (1 MiB; at most
 *          SP_BIG_VALUES per input, the rest read as short), one byte over.
 */
#ifndef KEEL_FUZZ_SYSCALLS_PROGRAM_H
#define KEEL_FUZZ_SYSCALLS_PROGRAM_H

enum {
    SP_HDR_START = 1,
    SP_HDR_REALTIME = 2,
};

/* Opcodes and their operands. */
enum sp_op {
    SP_YIELD = 0,     /* end of this activation's block */
    SP_SEND,          /* REF target, METHOD, CAPDATA, RESULT (below) */
    SP_CALL,          /* one byte: peer and method; one byte: argument;
                         one byte: bit 0 result, bit 1 subscribe to it,
                         bit 2 pass two slots from the pool as well */
    SP_SUBSCRIBE,     /* REF */
    SP_RESOLVE,       /* REF promise, one byte: bit 0 rejected, CAPDATA */
    SP_RESOLVE_SELF,  /* REF promise: fulfilled to itself (body {"@slot":0}) */
    SP_EXIT,          /* one byte: bit 0 failure, CAPDATA info */
    SP_VS_SET,        /* KEY, VALUE */
    SP_VS_GET,        /* KEY */
    SP_VS_DELETE,     /* KEY */
    SP_VS_NEXT,       /* KEY after, one byte: bit 0 a too-small buffer */
    SP_ALLOC_OBJECT,  /* - */
    SP_ALLOC_PROMISE, /* - */
    SP_TIMER,         /* one byte: delay in ms (% 3) */
    SP_WORK,          /* - */
    SP_OUTSIDE,       /* - : ask for an outside turn between cranks */
    SP_FAIL,          /* - : deliver() returns nonzero (in a delivery) */
    SP_SEND_SELF,     /* one byte: which own object; bit 7 with a result */
    SP_ANSWER,        /* one byte: bits 0-1 how (data, rejected, to an
                         object, twice) a result this vat was handed */
    SP_HELD,          /* - : ask for a held turn: the next delivery to the
                         victim runs the next block while the victim's
                         crank is open, so each syscall is held and run as
                         its own transaction after that crank */
    SP_GC,            /* one byte: g % 4: drop_imports, retire_imports,
                         retire_exports, abandon_exports; then
                         (g / 4) % 3 + 1 REFs, the vrefs it names */
    SP_OP_COUNT
};

/* RESULT operand of SP_SEND: one byte r; r % 4: 0 none, 1 a fresh p+N,
 * 2 a REF that follows, 3 the last promise allocated. */
enum { SP_RESULT_KINDS = 4 };

enum {
    SP_REF_POOL_LIMIT = 0xA0,
    SP_FORGE_KINDS = 24,
    SP_METHOD_KINDS = 10,
    SP_BODY_KINDS = 12,
    SP_BODY_NONE = 11,
    SP_KEY_KINDS = 10,
    SP_VALUE_KINDS = 6,
    SP_BIG_VALUES = 3,
};

/* SP_CALL's first operand % 5. */
enum sp_call {
    SP_CALL_BOB_PING,
    SP_CALL_COUNTER_INCR,
    SP_CALL_COUNTER_GET,
    SP_CALL_VICTIM_INCR, /* the victim may be sent anything */
    SP_CALL_VICTIM_GET,
    SP_CALL_KINDS
};

/* Selected operand values the seed generator uses by name. */
enum {
    SP_BODY_EMPTY_JSON = 0, /* "{}" */
    SP_BODY_SLOT0 = 1,      /* {"@slot":0} */
    SP_BODY_BINARY = 5,     /* length byte + bytes */
    SP_KEY_NULL = 0,
    SP_KEY_EMPTY = 1,
    SP_KEY_SHORT = 2, /* length byte + bytes */
    SP_KEY_LONGEST = 4,
    SP_KEY_TOO_LONG = 5,
    SP_KEY_FIXED = 7, /* "count" */
    SP_VALUE_SHORT = 2,
    SP_VALUE_BIG = 4,
    SP_VALUE_TOO_BIG = 5,
};

#endif
