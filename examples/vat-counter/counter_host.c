/*
 * examples/vat-counter/counter_host.c — a program that embeds libkeel
 * (built out of tree against the installed package, with <keel/keel.h>
 * only) and runs the counter vat in it:
 *
 *   counter-host STATE CONFIG
 *
 * opens STATE (created if absent), boots it from CONFIG if it is new, runs
 * it until idle, sends the counter one incr() from outside, runs again,
 * and prints the answer and the vatstore's count:
 *
 *   count after run: 3
 *   incr: {"value":4}
 *   count: 4
 *
 * Exit status 0, or 1 with one line on stderr naming what failed.
 *
 * Linked with libkeel.so, its keel_syscall_* are the ones the dlopen'd vat
 * library binds to; linked with libkeel.a, the program must export them
 * itself (-rdynamic: CMake's ENABLE_EXPORTS).
 *
 * Invariants:
 *   CH1 Everything printed is durable: each run returns with its work
 *       durable, and the send's answer is read after that run.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

#define VAT "counter"

static int fail(const char *what, int err, const keel_diag *d)
{
    fprintf(stderr, "counter-host: %s: %s (%s)\n", what,
            d->msg[0] ? d->msg : keel_strerror(err), keel_err_name(err));
    return 1;
}

/* The whole of path, NUL-terminated, malloc'd; NULL on failure. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    size_t n;
    do {
        if (cap - len < 4096) {
            cap = cap * 2 + 4096;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static int print_count(keel_kernel *k, const char *label, keel_diag *d)
{
    char *val = NULL;
    size_t len = 0;
    int rc = keel_kernel_vatstore_get(k, VAT, "count", &val, &len, d);
    if (rc < 0) {
        return rc;
    }
    printf("%s: %.*s\n", label, rc == 1 ? (int)len : 1, rc == 1 ? val : "0");
    free(val);
    return KEEL_OK;
}

static int run_idle(keel_kernel *k, keel_diag *d)
{
    keel_run_options ro;
    keel_run_stats st;
    memset(&ro, 0, sizeof ro);
    return keel_kernel_run(k, &ro, &st, d);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: counter-host STATE CONFIG\n");
        return 2;
    }
    keel_diag d;
    memset(&d, 0, sizeof d);
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    keel_kernel *k = NULL;
    int rc = keel_kernel_open(argv[1], &o, &k, &d);
    if (rc < 0) {
        return fail(argv[1], rc, &d);
    }
    int status = 1;
    if (!keel_kernel_booted(k)) {
        char *config = read_file(argv[2]);
        if (config == NULL) {
            fprintf(stderr, "counter-host: %s: cannot read the config\n",
                    argv[2]);
            goto out;
        }
        char *dir_buf = strdup(argv[2]);
        rc = dir_buf == NULL
                 ? KEEL_ENOMEM
                 : keel_kernel_boot(k, config, dirname(dir_buf), &d);
        free(dir_buf);
        free(config);
        if (rc < 0) {
            fail(argv[2], rc, &d);
            goto out;
        }
    }
    char kpref[KEEL_VREF_MAX];
    char *body = NULL;
    if ((rc = run_idle(k, &d)) < 0 ||
        (rc = print_count(k, "count after run", &d)) < 0 ||
        (rc = keel_kernel_send(k, VAT, "incr", "{}", kpref, &d)) < 0 ||
        (rc = run_idle(k, &d)) < 0 ||
        (rc = keel_kernel_promise(k, kpref, &body, &d)) < 0) {
        fail(argv[1], rc, &d);
        goto out;
    }
    printf("incr: %s%s\n", rc == 2 ? "rejected " : "", rc ? body : "pending");
    free(body);
    if ((rc = print_count(k, "count", &d)) < 0) {
        fail(argv[1], rc, &d);
        goto out;
    }
    status = 0;
out:
    rc = keel_kernel_close(k, &d);
    if (rc < 0 && status == 0) {
        return fail(argv[1], rc, &d);
    }
    return status;
}
