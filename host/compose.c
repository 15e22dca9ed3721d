/*
 * host/compose.c — a running kernel composed: keel_kernel_open (kernel.h)
 * builds the host loop (host/host.c: libuv, or the deterministic queue of
 * keel_kernel_options.deterministic) and the periodic snapshots
 * (host/snapshots.c), and opens the kernel core with them as its host
 * (kernel/kernel_host.h). The kernel reaches both only through that table.
 *
 * Invariants:
 *   HC1 Everything the host needs of the options is checked before the
 *       kernel opens STATE: the snapshot directory (KS5) and the host loop
 *       itself, so a refusal leaves STATE untouched.
 *   HC2 From keel__k_open on, the kernel owns the composition (KH1): its
 *       close frees the loop (after the loop's jobs returned) and the
 *       snapshot state, exactly once; before it, a failure here frees them.
 */
#include <stdlib.h>

#include "common/diag.h"
#include "host/host.h"
#include "host/snapshots.h"
#include "host/worker.h"
#include "kernel/inspect.h"
#include "kernel/kernel_host.h"

typedef struct hosted {
    keel_host *loop;
    keel__psnap snaps;
} hosted;

static int h_timer(void *ctx, uint64_t delay_ms, void (*cb)(void *arg),
                   void *arg, uint64_t *id)
{
    return keel__host_timer(((hosted *)ctx)->loop, delay_ms, cb, arg, id);
}

static int h_work(void *ctx, void (*work)(void *arg), void (*done)(void *arg),
                  void *arg)
{
    return keel__host_work(((hosted *)ctx)->loop, work, done, arg);
}

static int h_cancel(void *ctx, uint64_t id)
{
    return keel__host_cancel(((hosted *)ctx)->loop, id);
}

static uint64_t h_pending(void *ctx)
{
    return keel__host_pending(((hosted *)ctx)->loop);
}

static int h_run_once(void *ctx, uint64_t timeout_ms)
{
    return keel__host_run_once(((hosted *)ctx)->loop, timeout_ms);
}

static int h_poll(void *ctx)
{
    return keel__host_poll(((hosted *)ctx)->loop);
}

static int h_attached(void *ctx, keel_kernel *k, keel_diag *diag)
{
    return keel__psnap_attach(&((hosted *)ctx)->snaps, k, diag); /* KS6 */
}

static int h_after_crank(void *ctx, keel_kernel *k, keel_diag *diag)
{
    return keel__psnap_after_crank(&((hosted *)ctx)->snaps, k, diag); /* KS3 */
}

static void h_close(void *ctx)
{
    hosted *h = ctx;
    keel__worker_detach(h->loop); /* WK6: their handles before the loop */
    keel__host_free(h->loop);     /* H4: waits for the jobs' work */
    keel__psnap_free(&h->snaps);
    free(h);
}

keel_host *keel__host_of(keel_kernel *k)
{
    hosted *h = keel__k_host_ctx(k);
    return h != NULL ? h->loop : NULL;
}

int keel_kernel_open(const char *state_dir, const keel_kernel_options *o,
                     keel_kernel **out, keel_diag *diag)
{
    keel_kernel_options def;
    *out = NULL;
    if (o == NULL) {
        keel_kernel_options_init(&def);
        o = &def;
    }
    hosted *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    int rc = keel__psnap_init(&h->snaps, o, state_dir, diag); /* HC1 */
    if (rc == KEEL_OK) {
        rc = keel__host_new(&h->loop, o->deterministic);
        if (rc < 0) {
            keel__diag(diag, rc, "cannot start the host loop");
        }
    }
    if (rc < 0) {
        h_close(h);
        return rc;
    }
    keel__khost table = {.ctx = h,
                         .timer = h_timer,
                         .work = h_work,
                         .cancel = h_cancel,
                         .pending = h_pending,
                         .run_once = h_run_once,
                         .poll = h_poll,
                         .attached = h_attached,
                         .after_crank = h_after_crank,
                         /* KH3: workers need the libuv loop */
                         .worker_ops =
                             o->deterministic ? NULL : &keel__worker_ops,
                         .worker_restart = keel__worker_restart,
                         .close = h_close};
    return keel__k_open(state_dir, o, &table, out, diag); /* HC2 */
}
