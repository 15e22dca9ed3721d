/*
 * fuzz/make_syscalls_corpus.c — writes the seed corpus of the syscalls fuzz
 * target (fuzz/corpus/syscalls/): small byte programs
 * (fuzz/syscalls_program.h), each aimed at one kind of syscall, legal or
 * not, so that mutation starts from every corner of the format.
 *
 *   usage: fuzz_make_syscalls_corpus OUTDIR
 *
 * Pool indices in the seeds rely on the order the fuzz vat fills its pool:
 * 0 is its root o+0, 1..4 are alice, bob, counter and victim (from the
 * bootstrap), then whatever the program allocates or is handed, in order.
 *
 * Invariants:
 *   G1  Deterministic: the same bytes on every run.
 *   G2  Every seed is at most a few hundred bytes (libFuzzer's -max_len
 *       for this target is about 512).
 *   G3  Every opcode appears in at least one seed: the generator fails
 *       otherwise.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_helpers.h"
#include "fuzz/syscalls_program.h"

enum { SEED_MAX = 512 };

/* Pool entries right after the bootstrap (see the top). */
enum { POOL_ROOT = 0, POOL_ALICE, POOL_BOB, POOL_COUNTER, POOL_VICTIM };

#define END (-1)
/* A made-up ref of forge kind k with number n. */
#define FORGE(k, n) (SP_REF_POOL_LIMIT + (k)), (n)

typedef struct seed {
    uint8_t b[SEED_MAX];
    size_t n;
} seed;

/* Append bytes given as ints, up to END. */
static void put(seed *s, ...)
{
    va_list ap;
    va_start(ap, s);
    for (int v = va_arg(ap, int); v != END; v = va_arg(ap, int)) {
        FUZZ_ASSERTF(s->n < SEED_MAX, "seed over %d bytes", SEED_MAX); /* G2 */
        s->b[s->n++] = (uint8_t)v;
    }
    va_end(ap);
}

static void write_seed(const char *dir, const char *name, const seed *s,
                       int *seen)
{
    char *path = fuzz_path(dir, name);
    fuzz_write_file(path, s->b, s->n);
    free(path);
    /* G3: a rough scan; an operand byte may count as an opcode too, which
     * only makes the check weaker, never wrong about a missing one. */
    for (size_t i = 1; i < s->n; i++) {
        seen[s->b[i] % SP_OP_COUNT] = 1;
    }
}

int main(int argc, char **argv)
{
    int seen[SP_OP_COUNT] = {0};
    seed s;
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 1;
    }
    const char *dir = argv[1];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 1;
    }

    /* Nothing: boot, the other vats run, the audit passes. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, END);
    write_seed(dir, "empty", &s, seen);

    /* Well-formed calls with results and subscriptions, a send to its own
     * object that comes back with a result, which it answers. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_CALL, SP_CALL_BOB_PING, 7, 3, SP_CALL, SP_CALL_COUNTER_INCR,
        5, 3, SP_CALL, SP_CALL_COUNTER_INCR, 9, 0, SP_CALL, SP_CALL_COUNTER_GET,
        0, 1, SP_SEND_SELF, 0x80, SP_YIELD, SP_ANSWER, 0, SP_YIELD, SP_CALL,
        SP_CALL_VICTIM_INCR, 1, 3, SP_YIELD, END);
    write_seed(dir, "legal-calls", &s, seen);

    /* Forged and malformed targets, one per block so each dooms its own
     * program (the first one wins; the rest show what follows a doom). */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, FORGE(0, 1), 0, SP_BODY_EMPTY_JSON, 0, SP_SEND,
        FORGE(4, 0), 0, 0, 0, SP_SEND, FORGE(13, 0), 0, 0, 0, SP_YIELD, END);
    write_seed(dir, "forged-import", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, FORGE(1, 3), 2, SP_BODY_SLOT0, 0, SP_YIELD, END);
    write_seed(dir, "forged-promise", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, FORGE(6, 1), 0, 0, 0, SP_YIELD, END);
    write_seed(dir, "kref-as-vref", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, POOL_ROOT, 6, 0, 0, SP_YIELD, END); /* NULL method */
    write_seed(dir, "null-method", &s, seen);

    /* Malformed capdata to its own root: the kernel does not parse
     * bodies, so these are legal; then slots that are not. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, POOL_ROOT, 0, SP_BODY_BINARY, 5, 0x7b, 0, 0xff, 0x22,
        0x5c, 0, SP_SEND, POOL_ROOT, 0, 4, 0, SP_SEND, POOL_ROOT, 0, 2, 0,
        SP_SEND, POOL_ROOT, 0, 9, 0, SP_SEND, POOL_ROOT, 7, SP_BODY_NONE, 0,
        SP_YIELD, SP_SEND, POOL_ROOT, 0, 7 + 3 * SP_BODY_KINDS, POOL_ROOT,
        FORGE(2, 9), FORGE(5, 0), 0, SP_YIELD, END);
    write_seed(dir, "malformed-capdata", &s, seen);

    /* A message whose result is a fresh promise, sent to the victim with
     * a bad method: the victim fails and is terminated, the result
     * rejects; then a pipelined send to that result. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, POOL_VICTIM, 0, SP_BODY_EMPTY_JSON, 1, SP_SUBSCRIBE,
        FORGE(23, 0), SP_SEND, FORGE(23, 0), 0, 0, 0, SP_YIELD, SP_YIELD,
        SP_CALL, SP_CALL_VICTIM_GET, 0, 3, SP_YIELD, END);
    write_seed(dir, "victim-dies", &s, seen);

    /* Resolve a promise it does not decide: a call's result, now bob's. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_CALL, SP_CALL_BOB_PING, 1, 1, SP_RESOLVE, FORGE(23, 0), 0,
        SP_BODY_EMPTY_JSON, SP_YIELD, END);
    write_seed(dir, "resolve-not-decider", &s, seen);

    /* Resolve its own promise, then again (double resolve); and in
     * another seed, resolve one with itself. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_ALLOC_PROMISE, SP_SUBSCRIBE, FORGE(23, 0), SP_RESOLVE,
        FORGE(23, 0), 0, 6, SP_YIELD, SP_RESOLVE, FORGE(23, 0), 1, 6, SP_YIELD,
        END);
    write_seed(dir, "double-resolve", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_ALLOC_PROMISE, SP_RESOLVE_SELF, FORGE(23, 0), SP_SEND,
        FORGE(23, 0), 0, 0, 0, SP_YIELD, END);
    write_seed(dir, "resolve-with-itself", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND_SELF, 0x80, SP_YIELD, SP_ANSWER, 3, SP_YIELD, END);
    write_seed(dir, "answer-twice", &s, seen);

    /* Promise pipelining: messages queued on its own promise, which it
     * then fulfils to its own object (forwarded) or to data. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_ALLOC_OBJECT, SP_ALLOC_PROMISE, SP_SEND, FORGE(23, 0), 0,
        SP_BODY_EMPTY_JSON, 0, SP_SEND, FORGE(23, 0), 9, 0, 0, SP_RESOLVE,
        FORGE(23, 0), 0, SP_BODY_SLOT0 + SP_BODY_KINDS, 5, SP_YIELD, SP_YIELD,
        SP_YIELD, SP_ALLOC_PROMISE, SP_SEND, FORGE(23, 0), 0, 0, 0, SP_RESOLVE,
        FORGE(23, 1), 0, 6, SP_YIELD, END);
    write_seed(dir, "pipelining", &s, seen);

    /* A settled, notified promise is retired: using it again is forging. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_ALLOC_PROMISE, SP_SUBSCRIBE, FORGE(23, 0), SP_RESOLVE,
        FORGE(23, 0), 0, 0, SP_YIELD, SP_YIELD, SP_SUBSCRIBE, FORGE(23, 0),
        SP_YIELD, END);
    write_seed(dir, "retired-promise", &s, seen);

    /* Subscribe to junk. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SUBSCRIBE, POOL_BOB, SP_YIELD, SP_SUBSCRIBE, FORGE(12, 0),
        SP_YIELD, END);
    write_seed(dir, "subscribe-junk", &s, seen);

    /* Vatstore: set, read back, iterate, delete, with binary and
     * boundary-size keys; then the longest legal key and a 1 MiB value. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_VS_SET, SP_KEY_FIXED, SP_VALUE_SHORT, 3, '4', '2', 0,
        SP_VS_SET, SP_KEY_SHORT, 2, 0xff, 0, 'b', SP_VALUE_SHORT, 1, 'x',
        SP_VS_SET, SP_KEY_LONGEST, 1, SP_VS_GET, SP_KEY_FIXED, SP_VS_NEXT,
        SP_KEY_EMPTY, 0, SP_VS_NEXT, SP_KEY_FIXED, 0, SP_VS_DELETE,
        SP_KEY_FIXED, SP_VS_GET, SP_KEY_FIXED, SP_YIELD, SP_VS_SET,
        SP_KEY_SHORT, 0, 'z', SP_VALUE_BIG, SP_VS_GET, SP_KEY_SHORT, 0, 'z',
        SP_VS_NEXT, SP_KEY_LONGEST, 0, SP_YIELD, END);
    write_seed(dir, "vatstore-legal", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_VS_SET, SP_KEY_TOO_LONG, SP_VALUE_SHORT, 0, SP_YIELD, END);
    write_seed(dir, "vatstore-key-too-long", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_VS_SET, SP_KEY_FIXED, SP_VALUE_TOO_BIG, SP_YIELD, END);
    write_seed(dir, "vatstore-value-too-big", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_VS_DELETE, SP_KEY_EMPTY, SP_YIELD, END);
    write_seed(dir, "vatstore-delete-empty-key", &s, seen);

    /* exit(failure), then more syscalls in the same transaction; and an
     * exit out of crank, after which every syscall finds the vat gone. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_EXIT, 1, SP_BODY_EMPTY_JSON, SP_VS_SET, SP_KEY_FIXED, 1,
        SP_SEND_SELF, 0, SP_YIELD, SP_CALL, SP_CALL_BOB_PING, 3, 0, END);
    write_seed(dir, "exit-failure", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_OUTSIDE, SP_YIELD, SP_EXIT, 0, SP_BODY_NONE, SP_SEND_SELF, 0,
        SP_VS_GET, SP_KEY_FIXED, SP_TIMER, 0, SP_YIELD, END);
    write_seed(dir, "exit-outside", &s, seen);

    /* The first block inside start(), before any crank: legal writes and
     * a send to itself, then (second seed) a forged ref, so the vat is
     * gone before its bootstrap and alice never starts. */
    memset(&s, 0, sizeof(s));
    put(&s, SP_HDR_START, SP_VS_SET, SP_KEY_FIXED, 1, SP_SEND_SELF, 0x80,
        SP_OUTSIDE, SP_YIELD, SP_ANSWER, 2, SP_YIELD, END);
    write_seed(dir, "start-legal", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, SP_HDR_START, SP_SUBSCRIBE, FORGE(1, 0), SP_VS_SET, SP_KEY_FIXED, 1,
        SP_YIELD, END);
    write_seed(dir, "start-forged", &s, seen);

    /* Out of crank: a timer and a thread-pool job, each running a block
     * as one transaction; the job's block is illegal. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_TIMER, 0, SP_WORK, SP_YIELD, SP_CALL, SP_CALL_COUNTER_INCR, 2,
        3, SP_VS_SET, SP_KEY_FIXED, 1, SP_YIELD, SP_CALL, SP_CALL_COUNTER_INCR,
        100, 0, SP_SEND, FORGE(0, 0), 0, 0, 0, SP_YIELD, END);
    write_seed(dir, "async-completions", &s, seen);

    /* The same on libuv's clock and thread pool (header bit 1): the
     * completions may land while cranks are still queued. */
    memset(&s, 0, sizeof(s));
    put(&s, SP_HDR_REALTIME, SP_TIMER, 1, SP_WORK, SP_SEND_SELF, 0x80, SP_CALL,
        SP_CALL_BOB_PING, 1, 3, SP_YIELD, SP_CALL, SP_CALL_COUNTER_INCR, 2, 0,
        SP_TIMER, 0, SP_YIELD, SP_ANSWER, 1, SP_YIELD, SP_VS_SET, SP_KEY_FIXED,
        1, SP_YIELD, SP_EXIT, 0, 0, SP_VS_SET, SP_KEY_FIXED, 1, SP_YIELD, END);
    write_seed(dir, "realtime-async", &s, seen);

    /* An outside turn (each syscall its own transaction): a legal
     * increment that commits, then an illegal resolve. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_OUTSIDE, SP_YIELD, SP_CALL, SP_CALL_COUNTER_INCR, 4, 0,
        SP_RESOLVE, POOL_BOB, 0, 0, SP_CALL, SP_CALL_COUNTER_INCR, 8, 0,
        SP_YIELD, END);
    write_seed(dir, "outside-illegal", &s, seen);

    /* A delivery that fails after a legal increment: nothing stays. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_CALL, SP_CALL_COUNTER_INCR, 6, 0, SP_FAIL, SP_YIELD, END);
    write_seed(dir, "delivery-fails", &s, seen);

    /* Generic sends aimed at the protected vats go to the victim. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, POOL_BOB, 0, SP_BODY_EMPTY_JSON, 0, SP_SEND, POOL_ALICE,
        9, 0, 1, SP_YIELD, SP_YIELD, END);
    write_seed(dir, "redirected-to-victim", &s, seen);

    /* Syscalls made while the victim's crank is open are held and run
     * after it: legal ones (a write, an increment, a send to itself that
     * comes back and reads the write), then an increment followed by a
     * forged send: the increment stays, the vat goes. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_HELD, SP_CALL, SP_CALL_VICTIM_GET, 0, 0, SP_YIELD, SP_VS_SET,
        SP_KEY_FIXED, SP_VALUE_SHORT, 1, 'h', SP_CALL, SP_CALL_COUNTER_INCR, 3,
        0, SP_SEND_SELF, 0, SP_YIELD, SP_VS_GET, SP_KEY_FIXED, SP_YIELD, END);
    write_seed(dir, "held-legal", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_HELD, SP_CALL, SP_CALL_VICTIM_INCR, 1, 0, SP_YIELD, SP_CALL,
        SP_CALL_COUNTER_INCR, 5, 0, SP_SEND, FORGE(0, 0), 0, 0, 0, SP_VS_SET,
        SP_KEY_FIXED, 1, SP_YIELD, END);
    write_seed(dir, "held-illegal", &s, seen);
    /* Held while the victim's own crank fails (a bad method): the held
     * syscalls still run. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_HELD, SP_SEND, POOL_VICTIM, 9, 0, 0, SP_YIELD, SP_CALL,
        SP_CALL_COUNTER_INCR, 2, 0, SP_YIELD, END);
    write_seed(dir, "held-victim-fails", &s, seen);

    /* A long method name and a binary one, to its own root. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_SEND, POOL_ROOT, 7, 10, 1, SP_SEND, POOL_ROOT, 8, 0, 0,
        SP_YIELD, END);
    write_seed(dir, "odd-methods", &s, seen);

    /* GC syscalls: dropping a forged import and its own root (illegal);
     * an object passed to the victim, then abandoned (legal), then
     * retired as an export while the victim still holds it (illegal);
     * a drop and retire of three pool vrefs at once. */
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_GC, 0, FORGE(0, 3), SP_YIELD, END);
    write_seed(dir, "gc-drop-forged", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_GC, 1, POOL_ROOT, SP_YIELD, END);
    write_seed(dir, "gc-retire-root", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_ALLOC_OBJECT, SP_SEND, POOL_VICTIM, 0,
        SP_BODY_EMPTY_JSON + SP_BODY_KINDS, POOL_VICTIM + 1, 0, SP_YIELD, SP_GC,
        3, POOL_VICTIM + 1, SP_YIELD, SP_CALL, SP_CALL_COUNTER_INCR, 2, 0,
        SP_YIELD, END);
    write_seed(dir, "gc-abandon-export", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_ALLOC_OBJECT, SP_SEND, POOL_VICTIM, 0,
        SP_BODY_EMPTY_JSON + SP_BODY_KINDS, POOL_VICTIM + 1, 0, SP_YIELD, SP_GC,
        2, POOL_VICTIM + 1, SP_YIELD, END);
    write_seed(dir, "gc-retire-reachable-export", &s, seen);
    memset(&s, 0, sizeof(s));
    put(&s, 0, SP_GC, 4 * 2 + 0, POOL_ALICE, POOL_BOB, POOL_COUNTER, SP_YIELD,
        SP_GC, 4 * 2 + 1, POOL_ALICE, POOL_BOB, POOL_COUNTER, SP_YIELD, END);
    write_seed(dir, "gc-drop-roots", &s, seen);

    for (int op = 0; op < SP_OP_COUNT; op++) { /* G3 */
        FUZZ_ASSERTF(seen[op], "no seed uses opcode %d", op);
    }
    return 0;
}
