/*
 * tests/worker_testprog.c — a small worker program for tests/test_worker.c,
 * written with the one codec (keel/worker_format.h) over fds 3 and 4. It
 * plays pingpong's bob: ping({"i":N}) resolves its result to
 * {"value":N+1}, counting deliveries in its vatstore ("seen").
 *
 * argv[1] is a mode that makes it misbehave on delivery number argv[2]
 * (default 1) of this process (or "@FILE": both read from FILE):
 *   ok          behaves
 *   exit        resolves, then exits 3 before DONE
 *   garbage     writes bytes that are no frame
 *   truncated   writes half a frame and exits
 *   huge        writes a frame header of 1 GiB
 *   forge       sends to o-99 (never given to it), then DONE
 *   hang        never answers
 *   stderr      writes 200 lines to stderr (and a line to stdout), then
 *               behaves
 *   oc          behaves; after DURABLE of that delivery sends the group
 *               BEGIN 1, vatstoreSet oc=<seen>, END 1 (out of crank)
 *   afterstop   behaves; on STOP sends a SYSCALL, then exits
 * Invariant:
 *   TP1 It misbehaves only at the delivery it was told, so a restarted
 *       process (counting from 1 again, but with "seen" from the
 *       vatstore) misbehaves again only if that delivery number comes
 *       round again in the new process.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/worker_format.h"

static keel_wf_buf out;

static void put(void)
{
    size_t off = 0;
    while (off < out.len) {
        ssize_t n = write(4, out.ptr + off, out.len - off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            exit(10);
        }
        off += (size_t)n;
    }
    out.len = 0;
}

static int readn(uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = read(3, p, n);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static uint8_t *frame;

static int next(keel_wf_frame *f)
{
    uint8_t pre[4];
    uint32_t len;
    if (readn(pre, 4) < 0 || keel_wf_frame_length(pre, &len, NULL, 0) < 0) {
        return -1;
    }
    free(frame);
    frame = malloc(4 + (size_t)len);
    memcpy(frame, pre, 4);
    if (readn(frame + 4, len) < 0) {
        return -1;
    }
    char why[KEEL_WF_WHY_BYTES];
    if (keel_wf_decode(frame, 4 + len, KEEL_WF_FROM_KERNEL, f, NULL, 0, why,
                       sizeof(why)) < 0) {
        fprintf(stderr, "testprog: bad frame: %s\n", why);
        exit(11);
    }
    return 0;
}

static long seen;

static void vs_get_seen(void)
{
    keel_wf_frame f;
    keel_wf_put_vs_get(&out, "seen");
    put();
    if (next(&f) < 0 || f.type != KEEL_WF_RESULT) {
        exit(12);
    }
    char v[32];
    snprintf(v, sizeof(v), "%.*s", (int)f.data.len, (const char *)f.data.ptr);
    seen = f.rc == 1 ? strtol(v, NULL, 10) : 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "ok";
    int at = argc > 2 ? atoi(argv[2]) : 1;
    static char mbuf[64];
    if (mode[0] == '@') {
        /* "@FILE": the mode and delivery number are read from FILE (so a
         * config, and its activity hash, is the same for every mode),
         * and the pid is written to FILE.pid. */
        char pidf[4200];
        FILE *mf = fopen(mode + 1, "r");
        if (mf == NULL || fscanf(mf, "%63s %d", mbuf, &at) != 2) {
            return 9;
        }
        fclose(mf);
        snprintf(pidf, sizeof(pidf), "%s.pid", mode + 1);
        FILE *pf = fopen(pidf, "w");
        if (pf != NULL) {
            fprintf(pf, "%ld\n", (long)getpid());
            fclose(pf);
        }
        mode = mbuf;
    }
    int n = 0;
    uint64_t oc_seq = 0;
    keel_wf_frame f;
    if (next(&f) < 0 || f.type != KEEL_WF_HELLO) {
        return 2;
    }
    keel_wf_put_w_hello(&out, KEEL_WF_PROTOCOL_VERSION);
    put();
    if (next(&f) < 0 || f.type != KEEL_WF_START) {
        return 2;
    }
    vs_get_seen();
    keel_wf_put_started(&out, 1, NULL);
    put();
    for (;;) {
        if (next(&f) < 0) {
            return 0;
        }
        if (f.type == KEEL_WF_STOP) {
            if (strcmp(mode, "afterstop") == 0) {
                keel_wf_put_vs_set(&out, "afterstop", "1", 1);
                put();
            }
            return 0;
        }
        if (f.type == KEEL_WF_DURABLE) {
            if (oc_seq != 0 && f.what == KEEL_WF_DURABLE_DELIVERY &&
                f.seq == oc_seq) {
                char v[32];
                snprintf(v, sizeof(v), "%ld", seen);
                keel_wf_put_begin(&out, 1);
                keel_wf_put_vs_set(&out, "oc", v, strlen(v));
                keel_wf_put_end(&out, 1);
                put();
                oc_seq = 0;
            }
            continue;
        }
        if (f.type != KEEL_WF_DELIVER) {
            return 3;
        }
        n++;
        int bad = n == at;
        uint64_t seq = f.seq;
        if (bad && strcmp(mode, "hang") == 0) {
            for (;;) {
                pause();
            }
        }
        if (bad && strcmp(mode, "garbage") == 0) {
            static const uint8_t junk[] = {0, 0, 0, 9, 0x99, 1, 2,
                                           3, 4, 5, 6, 7,    8};
            if (write(4, junk, sizeof(junk)) < 0) {
                return 4;
            }
            pause();
        }
        if (bad && strcmp(mode, "huge") == 0) {
            static const uint8_t big[] = {0x40, 0, 0, 0, KEEL_WF_SYSCALL};
            if (write(4, big, sizeof(big)) < 0) {
                return 4;
            }
            pause();
        }
        if (bad && strcmp(mode, "stderr") == 0) {
            for (int i = 0; i < 200; i++) {
                fprintf(stderr, "noise line %d\n", i);
            }
            printf("to stdout\n");
            fflush(stdout);
        }
        if (f.kind == KEEL_DELIVER_MESSAGE && f.has_result) {
            char result[32], body[64];
            snprintf(result, sizeof(result), "%.*s", (int)f.result.len,
                     (const char *)f.result.ptr);
            char b[64];
            snprintf(b, sizeof(b), "%.*s", (int)f.cap.body.len,
                     (const char *)f.cap.body.ptr);
            long i = strlen(b) > 5 ? strtol(b + 5, NULL, 10) : 0;
            snprintf(body, sizeof(body), "{\"value\":%ld}", i + 1);
            keel_capdata cd = {.body = {body, strlen(body)}};
            keel_wf_put_resolve(&out, result, 0, &cd);
        }
        seen++;
        char v[32];
        snprintf(v, sizeof(v), "%ld", seen);
        keel_wf_put_vs_set(&out, "seen", v, strlen(v));
        if (bad && strcmp(mode, "forge") == 0) {
            keel_capdata cd = {.body = {"{}", 2}};
            keel_wf_put_send(&out, "o-99", "steal", &cd, NULL);
        }
        if (bad && strcmp(mode, "truncated") == 0) {
            size_t half = out.len / 2;
            if (write(4, out.ptr, half) < 0) {
                return 4;
            }
            return 5;
        }
        put();
        if (bad && strcmp(mode, "exit") == 0) {
            return 3;
        }
        if (bad && strcmp(mode, "oc") == 0) {
            oc_seq = seq;
        }
        keel_wf_put_done(&out, seq, 1, NULL);
        put();
    }
}
