/*
 * common/clock.h — the monotonic clock, read one way everywhere: the
 * kernel's and the audit's timings, the WAL writer's group window, the
 * snapshot roll-forward's progress, the run loop's timers, benchmarks and
 * the tools' elapsed times.
 *
 * Invariants:
 *   CL1 Every reading is CLOCK_MONOTONIC: never the wall clock, so a clock
 *       step never makes an interval negative or a timer fire early.
 *   CL2 The three units are one reading scaled: keel__now_ms() and
 *       keel__now_s() are keel__now_ns() / 10^6 (rounded down) and / 10^9.
 */
#ifndef KEEL_COMMON_CLOCK_H
#define KEEL_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds on the monotonic clock (CL1). */
static inline uint64_t keel__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Milliseconds on the monotonic clock (CL2). */
static inline uint64_t keel__now_ms(void)
{
    return keel__now_ns() / 1000000u;
}

/* Seconds on the monotonic clock, for elapsed times (CL2). */
static inline double keel__now_s(void)
{
    return (double)keel__now_ns() / 1e9;
}

#endif
