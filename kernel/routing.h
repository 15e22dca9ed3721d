/*
 * kernel/routing.h — the limit of the kernel's message routing that the
 * recovery audit must model exactly: how many fulfilled promises a send
 * is forwarded through. kernel/crank.c routes with it; recovery/audit.c
 * replays that routing with it (recovery/ may include kernel/ headers,
 * never the other way).
 *
 * Invariants:
 *   RT1 Forwarding through fulfilled promises stops after MAX_FORWARD hops
 *       (a cycle of promises fulfilled to each other cannot be built, but a
 *       long chain can), in the kernel and in the audit alike: one
 *       definition, so the audit never calls a correct crank a violation.
 */
#ifndef KEEL_KERNEL_ROUTING_H
#define KEEL_KERNEL_ROUTING_H

#define MAX_FORWARD 64

#endif
