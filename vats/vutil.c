/*
 * vats/vutil.c — helpers shared by the example vats (see vutil.h for the
 * conventions they follow).
 *
 * Invariants:
 *   U1  Every helper is a pure function of its inputs and the vatstore: no
 *       clock, no randomness, no state between calls, so the vats built on
 *       them deliver deterministically.
 *   U2  Bodies are dumped with JSON_COMPACT in insertion order, so the same
 *       values always give the same bytes (the activity hash covers them).
 *   U3  A value borrowed from keel_syscall_vatstore_get() is used before the
 *       next syscall (vat.h: it is valid only until then).
 *   U4  The argument checks make no syscall, so a vat can check a message
 *       completely before it changes anything, and keel__vutil_refuse is
 *       the only syscall a refused message causes (one reject).
 */
#include "vats/vutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- vatstore ------------------------------------------------------------ */

/* Strict decimal: 1..20 digits, no sign, no overflow. */
static int parse_u64(const char *s, size_t len, uint64_t *v)
{
    uint64_t x = 0;
    if (len == 0 || len > 20) {
        return KEEL_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return KEEL_EINVAL;
        }
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return KEEL_EINVAL;
        }
        x = x * 10 + d;
    }
    *v = x;
    return KEEL_OK;
}

int keel__vutil_get_u64(keel_syscall *sys, const char *key, uint64_t *v)
{
    keel_bytes val;
    int rc = keel_syscall_vatstore_get(sys, key, &val);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        *v = 0;
        return KEEL_OK;
    }
    return parse_u64(val.ptr, val.len, v); /* U3 */
}

int keel__vutil_set_u64(keel_syscall *sys, const char *key, uint64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    return keel_syscall_vatstore_set(sys, key, buf, (size_t)n);
}

int keel__vutil_get_str(keel_syscall *sys, const char *key, char *buf,
                        size_t cap)
{
    keel_bytes val;
    int rc = keel_syscall_vatstore_get(sys, key, &val);
    if (rc <= 0) {
        return rc;
    }
    if (val.len >= cap) {
        return KEEL_EINVAL;
    }
    memcpy(buf, val.ptr, val.len); /* U3 */
    buf[val.len] = '\0';
    return 1;
}

int keel__vutil_set_str(keel_syscall *sys, const char *key, const char *s)
{
    return keel_syscall_vatstore_set(sys, key, s, strlen(s));
}

int keel__vutil_key(char *buf, size_t cap, const char *prefix,
                    const char *suffix)
{
    int n = snprintf(buf, cap, "%s%s", prefix, suffix);
    return n < 0 || (size_t)n >= cap ? KEEL_EINVAL : KEEL_OK;
}

/* ---- bodies -------------------------------------------------------------- */

char *keel__vutil_json(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *j = json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    if (j == NULL) {
        return NULL;
    }
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY); /* U2 */
    json_decref(j);
    return s;
}

int keel__vutil_parse(const keel_capdata *cd, json_t **out)
{
    json_t *j = json_loadb(cd->body.ptr, cd->body.len, 0, NULL);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        return KEEL_EINVAL;
    }
    *out = j;
    return KEEL_OK;
}

int keel__vutil_field_u64(const json_t *obj, const char *field, uint64_t *v)
{
    const json_t *f = json_object_get(obj, field);
    if (!json_is_integer(f) || json_integer_value(f) < 0) {
        return KEEL_EINVAL;
    }
    *v = (uint64_t)json_integer_value(f);
    return KEEL_OK;
}

int keel__vutil_slot(const keel_capdata *cd, const json_t *ref,
                     const char **vref)
{
    const json_t *i = json_object_get(ref, "@slot");
    if (!json_is_object(ref) || json_object_size(ref) != 1 ||
        !json_is_integer(i) || json_integer_value(i) < 0 ||
        (uint64_t)json_integer_value(i) >= cd->nslots) {
        return KEEL_EINVAL;
    }
    *vref = cd->slots[json_integer_value(i)];
    return KEEL_OK;
}

int keel__vutil_body_u64(const keel_capdata *cd, const char *field, uint64_t *v)
{
    json_t *body = NULL;
    int rc = keel__vutil_parse(cd, &body);
    if (rc == KEEL_OK) {
        rc = keel__vutil_field_u64(body, field, v);
    }
    json_decref(body);
    return rc;
}

int keel__vutil_bootstrap_root(const keel_capdata *args, const char *name,
                               char *buf)
{
    json_t *body = NULL;
    const char *vref = NULL;
    int rc = keel__vutil_parse(args, &body);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_slot(
        args, json_object_get(json_object_get(body, "vats"), name), &vref);
    if (rc < 0) {
        goto out;
    }
    if (strlen(vref) >= KEEL_VREF_MAX) {
        rc = KEEL_EINVAL;
        goto out;
    }
    strcpy(buf, vref);
out:
    json_decref(body);
    return rc;
}

/* ---- checking a message's arguments ------------------------------------- */

int keel__vutil_args(const keel_delivery *d, size_t nslots, json_t **out,
                     keel__vutil_why why)
{
    *out = NULL;
    json_t *j = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        snprintf(why, sizeof(keel__vutil_why),
                 "arguments must be a JSON object");
        return KEEL_EINVAL;
    }
    if (d->args.nslots != nslots) {
        json_decref(j);
        snprintf(why, sizeof(keel__vutil_why), "expected %zu slot%s, got %zu",
                 nslots, nslots == 1 ? "" : "s", d->args.nslots);
        return KEEL_EINVAL;
    }
    *out = j;
    return KEEL_OK;
}

int keel__vutil_arg_u64(const json_t *args, const char *field, uint64_t max,
                        uint64_t *v, keel__vutil_why why)
{
    const json_t *f = json_object_get(args, field);
    if (!json_is_integer(f) || json_integer_value(f) < 0 ||
        (uint64_t)json_integer_value(f) > max) {
        snprintf(why, sizeof(keel__vutil_why),
                 "\"%.40s\" must be an integer from 0 to %llu", field,
                 (unsigned long long)max);
        return KEEL_EINVAL;
    }
    *v = (uint64_t)json_integer_value(f);
    return KEEL_OK;
}

int keel__vutil_args_u64(const keel_delivery *d, const char *field,
                         uint64_t max, uint64_t *v, keel__vutil_why why)
{
    json_t *args = NULL;
    int rc = keel__vutil_args(d, 0, &args, why);
    if (rc == KEEL_OK) {
        rc = keel__vutil_arg_u64(args, field, max, v, why);
    }
    json_decref(args);
    return rc;
}

int keel__vutil_refuse(keel_syscall *sys, const keel_delivery *d,
                       const char *why)
{
    if (d->kind != KEEL_DELIVER_MESSAGE || d->result == NULL) {
        return KEEL_OK; /* nobody to tell: the message is dropped */
    }
    char msg[KEEL_METHOD_MAX + sizeof(keel__vutil_why) + 4];
    snprintf(msg, sizeof(msg), "%s: %s", d->method, why);
    /* U2; json_pack refuses invalid UTF-8, which the kernel never lets
     * through as a method (K23), nor does any why */
    char *body = keel__vutil_json("{ss}", "error", msg);
    keel_capdata cd = {
        {body != NULL ? body : "{\"error\":\"refused\"}", 0}, NULL, 0};
    cd.body.len = strlen(cd.body.ptr);
    int rc = keel_syscall_resolve(sys, d->result, 1, &cd);
    free(body);
    return rc;
}

/* ---- messages ------------------------------------------------------------ */

int keel__vutil_resolve(keel_syscall *sys, const char *promise,
                        const char *body)
{
    keel_capdata cd = {{body, strlen(body)}, NULL, 0};
    return keel_syscall_resolve(sys, promise, 0, &cd);
}

int keel__vutil_answer(keel_syscall *sys, const keel_delivery *d,
                       const char *body)
{
    if (d->result == NULL) {
        return KEEL_OK;
    }
    return keel__vutil_resolve(sys, d->result, body);
}

int keel__vutil_ask(keel_syscall *sys, const char *target, const char *method,
                    const char *body, const char *const *slots, size_t nslots,
                    char *result)
{
    keel_capdata cd = {{body, strlen(body)}, slots, nslots};
    int rc = keel_syscall_alloc_promise(sys, result);
    if (rc == KEEL_OK) {
        rc = keel_syscall_send(sys, target, method, &cd, result);
    }
    if (rc == KEEL_OK) {
        rc = keel_syscall_subscribe(sys, result);
    }
    return rc;
}

/* ---- params -------------------------------------------------------------- */

int keel__vutil_params(const char *params_json, json_t **out)
{
    json_t *j = json_loads(params_json, 0, NULL);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        return KEEL_EINVAL;
    }
    *out = j;
    return KEEL_OK;
}

int keel__vutil_param_u64(const json_t *params, const char *field,
                          uint64_t dflt, uint64_t *v)
{
    if (json_object_get(params, field) == NULL) {
        *v = dflt;
        return KEEL_OK;
    }
    return keel__vutil_field_u64(params, field, v);
}

int keel__vutil_param_str(const json_t *params, const char *field,
                          const char *dflt, char *buf, size_t cap)
{
    const json_t *f = json_object_get(params, field);
    const char *s = dflt;
    if (f != NULL) {
        if (!json_is_string(f)) {
            return KEEL_EINVAL;
        }
        s = json_string_value(f);
    }
    if (strlen(s) >= cap) {
        return KEEL_EINVAL;
    }
    strcpy(buf, s);
    return KEEL_OK;
}

/* ---- garbage collection ---------------------------------------------------
 */

int keel__vutil_forget_import(keel_syscall *sys, const char *vref)
{
    const char *v[1] = {vref};
    int rc = keel_syscall_drop_imports(sys, v, 1);
    return rc < 0 ? rc : keel_syscall_retire_imports(sys, v, 1);
}

int keel__vutil_is_gc(const keel_delivery *d)
{
    return d->kind == KEEL_DELIVER_DROP_EXPORTS ||
           d->kind == KEEL_DELIVER_RETIRE_EXPORTS ||
           d->kind == KEEL_DELIVER_RETIRE_IMPORTS;
}
