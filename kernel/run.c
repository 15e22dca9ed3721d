/*
 * kernel/run.c — what the kernel offers beyond one crank: boot from a
 * cluster config, external sends, promise queries, status, and the run
 * loop that alternates cranks with the host loop's async callbacks.
 *
 * Invariants:
 *   K20 boot is one kernel-op transaction: every vat, its root object and
 *       the bootstrap message appear together or not at all.
 *   K21 The run loop is idle only when the run queue is empty, no async
 *       work is held (K34) or pending in the host, and no terminated vat's
 *       cleanup is pending (K6); out-of-crank syscalls commit and enqueue
 *       at once, so an answer from a timer or thread-pool job is run without
 *       further input (SPEC §5).
 *   K22 keel_kernel_run returns KEEL_OK only once everything it committed
 *       is durable under the sync policy.
 *   K23 A method name is 1..KEEL_METHOD_MAX bytes of valid UTF-8 (RFC
 *       3629) wherever one enters the kernel: keel_kernel_send refuses
 *       another (KEEL_EINVAL, nothing queued), and keel_syscall_send makes
 *       it an illegal syscall that terminates the calling vat only. The
 *       bootstrap message's method is the constant "bootstrap".
 *   K24 keel_kernel_run counts committed cranks (the crank number's
 *       advance) apart from aborted ones (a delivery failed: the crank was
 *       undone and the vat terminated in a kernel-op transaction).
 *   K26 Cleanup batches (K6) interleave with cranks deterministically, by
 *       durable state alone: before a crank, one batch if none ran since
 *       the last crank committed; with the run queue empty, one batch per
 *       iteration until none is pending. The stop flag is checked between
 *       any two transactions, so a stop is honoured within one batch.
 */
#include "kernel/kernel_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/clock.h"
#include "common/diag.h"

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63) {
        return 0;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
            return 0;
        }
    }
    return 1;
}

int keel__k_method_check(const char *m, char *why, size_t cap)
{
    char none[1];
    if (why == NULL || cap == 0) {
        why = none;
        cap = sizeof(none);
    }
    size_t len = m != NULL ? strnlen(m, KEEL_METHOD_MAX + 1) : 0;
    if (len == 0) {
        snprintf(why, cap, "is empty");
        return KEEL_EINVAL;
    }
    if (len > KEEL_METHOD_MAX) {
        snprintf(why, cap, "is longer than %d bytes (KEEL_METHOD_MAX)",
                 KEEL_METHOD_MAX);
        return KEEL_EINVAL;
    }
    /* K23: ASCII is UTF-8; anything else goes to jansson's string
     * constructor, which checks UTF-8 (RFC 3629: no overlong forms, no
     * surrogates, nothing past U+10FFFF). Every send syscall comes here,
     * and almost every method is ASCII: no allocation for those. */
    size_t i = 0;
    while (i < len && (unsigned char)m[i] < 0x80) {
        i++;
    }
    if (i == len) {
        return KEEL_OK;
    }
    json_t *str = json_stringn(m, len);
    if (str == NULL) {
        snprintf(why, cap, "is not valid UTF-8");
        return KEEL_EINVAL;
    }
    json_decref(str);
    return KEEL_OK;
}

/* A positive integer field of at most max; absent: ok (the default). */
static int check_uint(json_t *o, const char *f, json_int_t min, json_int_t max,
                      const char *path, keel_diag *diag)
{
    json_t *v = json_object_get(o, f);
    if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < min ||
                      json_integer_value(v) > max)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s.%s: expected an integer from %" PRId64
                          " to %" PRId64,
                          path, f, (int64_t)min, (int64_t)max);
    }
    return KEEL_OK;
}

/* Only the fields of names (NULL-terminated) in object o. */
static int only_fields(json_t *o, const char *const *names, const char *path,
                       keel_diag *diag)
{
    const char *f;
    json_t *fv;
    json_object_foreach(o, f, fv)
    {
        size_t i = 0;
        while (names[i] != NULL && strcmp(names[i], f) != 0) {
            i++;
        }
        if (names[i] == NULL) {
            return keel__diag(diag, KEEL_EINVAL, "%s.%s: unknown field", path,
                              f);
        }
    }
    return KEEL_OK;
}

/* A byte size: a positive integer, or a string of digits with an optional
 * K, M or G suffix (powers of 1024). @return 1 and *out, or 0. */
static int parse_size(json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return json_integer_value(v) > 0;
    }
    const char *s = json_string_value(v);
    if (s == NULL || *s < '0' || *s > '9') {
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k') {
        shift = 10;
    } else if (*end == 'M' || *end == 'm') {
        shift = 20;
    } else if (*end == 'G' || *end == 'g') {
        shift = 30;
    }
    end += shift != 0;
    if (errno != 0 || *end != '\0' || n == 0 || n > (UINT64_MAX >> shift)) {
        return 0;
    }
    *out = (uint64_t)n << shift;
    return 1;
}

/* KH3: a {"worker": ...} entry (docs/worker-protocol.md §1); resolves a
 * relative command[0] with a '/' and cwd against the config's directory,
 * in place, so a restart finds them from anywhere. */
static int check_worker(const keel_kernel *k, const char *name, json_t *w,
                        const char *config_dir, keel_diag *diag)
{
    char path[128];
    snprintf(path, sizeof(path), "vats.%s.worker", name);
    static const char *const fields[] = {
        "command", "env", "cwd", "timeout_ms", "restarts", "limits", NULL};
    static const char *const rfields[] = {"max", "window_ms", NULL};
    static const char *const lfields[] = {"address_space", "cpu_seconds", NULL};
    const char *dir = config_dir != NULL ? config_dir : ".";
    if (k->host.worker_ops == NULL) { /* KH2 */
        return keel__diag(diag, KEEL_EINVAL,
                          "%s: this kernel has no worker host (worker vats "
                          "need keel's libuv host: not the deterministic "
                          "mode, not a kernel opened without a host)",
                          path);
    }
    if (!json_is_object(w)) {
        return keel__diag(diag, KEEL_EINVAL, "%s: expected an object", path);
    }
    int rc = only_fields(w, fields, path, diag);
    if (rc < 0) {
        return rc;
    }
    json_t *cmd = json_object_get(w, "command");
    if (!json_is_array(cmd) || json_array_size(cmd) == 0) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s.command: expected a non-empty array of strings "
                          "(the program and its arguments)",
                          path);
    }
    size_t i;
    json_t *a;
    json_array_foreach(cmd, i, a)
    {
        const char *s = json_string_value(a);
        if (s == NULL || (i == 0 && s[0] == '\0')) {
            return keel__diag(diag, KEEL_EINVAL,
                              "%s.command[%zu]: expected a%s string", path, i,
                              i == 0 ? " non-empty" : "");
        }
    }
    json_t *env = json_object_get(w, "env");
    if (env != NULL && !json_is_object(env)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s.env: expected an object of strings", path);
    }
    const char *ek;
    json_t *ev;
    json_object_foreach(env, ek, ev)
    {
        if (!json_is_string(ev) || ek[0] == '\0' || strchr(ek, '=') != NULL) {
            return keel__diag(diag, KEEL_EINVAL,
                              "%s.env.%s: expected a string value under a "
                              "name without '='",
                              path, ek);
        }
    }
    json_t *cwd = json_object_get(w, "cwd");
    if (cwd != NULL && !json_is_string(cwd)) {
        return keel__diag(diag, KEEL_EINVAL, "%s.cwd: expected a string", path);
    }
    char full[PATH_MAX], real[PATH_MAX];
    const char *c = cwd != NULL ? json_string_value(cwd) : ".";
    snprintf(full, sizeof(full), "%s%s%s", c[0] == '/' ? "" : dir,
             c[0] == '/' ? "" : "/", c);
    if (realpath(full, real) == NULL) {
        return keel__diag(diag, KEEL_EINVAL, "%s.cwd: %s: no such directory",
                          path, full);
    }
    json_object_set_new(w, "cwd", json_string(real));
    const char *prog = json_string_value(json_array_get(cmd, 0));
    if (strchr(prog, '/') != NULL && prog[0] != '/') {
        snprintf(full, sizeof(full), "%s/%s", dir, prog);
        if (realpath(full, real) == NULL) {
            return keel__diag(diag, KEEL_EINVAL,
                              "%s.command[0]: %s: no such file", path, full);
        }
        json_array_set_new(cmd, 0, json_string(real));
    }
    rc = check_uint(w, "timeout_ms", 1, 86400000, path, diag);
    if (rc < 0) {
        return rc;
    }
    json_t *r = json_object_get(w, "restarts");
    char sub[160];
    snprintf(sub, sizeof(sub), "%s.restarts", path);
    if (r != NULL && !json_is_object(r)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s: expected an object {\"max\", \"window_ms\"}",
                          sub);
    }
    if (r != NULL &&
        ((rc = only_fields(r, rfields, sub, diag)) < 0 ||
         (rc = check_uint(r, "max", 0, 1000000, sub, diag)) < 0 ||
         (rc = check_uint(r, "window_ms", 1, 86400000, sub, diag)) < 0)) {
        return rc;
    }
    json_t *l = json_object_get(w, "limits");
    snprintf(sub, sizeof(sub), "%s.limits", path);
    if (l != NULL && !json_is_object(l)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s: expected an object {\"address_space\", "
                          "\"cpu_seconds\"}",
                          sub);
    }
    if (l != NULL &&
        ((rc = only_fields(l, lfields, sub, diag)) < 0 ||
         (rc = check_uint(l, "cpu_seconds", 1, 100000000, sub, diag)) < 0)) {
        return rc;
    }
    uint64_t as;
    json_t *asv = l != NULL ? json_object_get(l, "address_space") : NULL;
    if (asv != NULL && (!parse_size(asv, &as) || as < (1u << 20) ||
                        as > (uint64_t)INT64_MAX)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s.address_space: expected bytes (an integer, or "
                          "a string like \"512M\" with a K, M or G suffix), "
                          "at least 1M",
                          sub);
    }
    if (asv != NULL) { /* the host reads bytes */
        json_object_set_new(l, "address_space", json_integer((json_int_t)as));
    }
    return KEEL_OK;
}

/* Check the config; names the JSON path of the first problem. */
static int check_config(const keel_kernel *k, json_t *cfg,
                        const char *config_dir, keel_diag *diag)
{
    if (!json_is_object(cfg)) {
        return keel__diag(diag, KEEL_EINVAL, "(root): expected an object");
    }
    const char *key;
    json_t *val;
    json_object_foreach(cfg, key, val)
    {
        if (strcmp(key, "bootstrap") != 0 && strcmp(key, "vats") != 0) {
            return keel__diag(diag, KEEL_EINVAL, "%s: unknown field", key);
        }
    }
    json_t *vats = json_object_get(cfg, "vats");
    if (!json_is_object(vats) || json_object_size(vats) == 0) {
        return keel__diag(diag, KEEL_EINVAL,
                          "vats: expected a non-empty object of vats");
    }
    json_object_foreach(vats, key, val)
    {
        if (!valid_name(key)) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s: a vat name is 1-63 letters, digits, "
                              "'_' or '-'",
                              key);
        }
        if (!json_is_object(val)) {
            return keel__diag(diag, KEEL_EINVAL, "vats.%s: expected an object",
                              key);
        }
        const char *f;
        json_t *fv;
        json_object_foreach(val, f, fv)
        {
            if (strcmp(f, "builtin") != 0 && strcmp(f, "path") != 0 &&
                strcmp(f, "worker") != 0 && strcmp(f, "params") != 0) {
                return keel__diag(diag, KEEL_EINVAL,
                                  "vats.%s.%s: unknown field", key, f);
            }
        }
        json_t *b = json_object_get(val, "builtin");
        json_t *p = json_object_get(val, "path");
        json_t *w = json_object_get(val, "worker");
        json_t *params = json_object_get(val, "params");
        if ((b != NULL) + (p != NULL) + (w != NULL) != 1) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s: needs exactly one of \"builtin\", "
                              "\"path\" and \"worker\"",
                              key);
        }
        if (w != NULL) {
            int rc = check_worker(k, key, w, config_dir, diag);
            if (rc < 0) {
                return rc;
            }
        }
        if (b != NULL && !json_is_string(b)) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.builtin: expected a string", key);
        }
        const keel_vat_ops *bo =
            b != NULL ? keel__k_builtin(k, json_string_value(b)) : NULL;
        if (b != NULL && bo == NULL) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.builtin: no built-in vat named \"%s\"",
                              key, json_string_value(b));
        }
        if (bo != NULL && bo->abi_version != KEEL_VAT_ABI_VERSION) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.builtin: \"%s\" was built for vat ABI "
                              "%d; this keel speaks ABI %d (rebuild it against "
                              "keel/vat.h)",
                              key, json_string_value(b), bo->abi_version,
                              KEEL_VAT_ABI_VERSION);
        }
        if (p != NULL && !json_is_string(p)) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.path: expected a string", key);
        }
        if (params != NULL && !json_is_object(params)) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.params: expected an object", key);
        }
        if (p != NULL) {
            /* Resolve a relative library path against the config's
             * directory now, so a restart finds it from anywhere. */
            const char *path = json_string_value(p);
            char full[PATH_MAX], real[PATH_MAX];
            if (path[0] != '/') {
                snprintf(full, sizeof(full), "%s/%s",
                         config_dir != NULL ? config_dir : ".", path);
            } else {
                snprintf(full, sizeof(full), "%s", path);
            }
            if (realpath(full, real) == NULL) {
                return keel__diag(diag, KEEL_EINVAL,
                                  "vats.%s.path: %s: no such file", key, full);
            }
            /* Load it now: a library that cannot be a vat must fail the
             * boot, not every open after it. */
            int rc = keel__k_check_library(key, real, diag);
            if (rc < 0) {
                return rc;
            }
            json_object_set_new(val, "path", json_string(real));
        }
    }
    json_t *boot = json_object_get(cfg, "bootstrap");
    if (!json_is_string(boot)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "bootstrap: expected the name of a vat");
    }
    if (json_object_get(vats, json_string_value(boot)) == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "bootstrap: no vat named \"%s\" in vats",
                          json_string_value(boot));
    }
    return KEEL_OK;
}

static int boot_txn(keel_kernel *k, json_t *cfg)
{
    json_t *vats = json_object_get(cfg, "vats");
    const char *boot_name =
        json_string_value(json_object_get(cfg, "bootstrap"));
    size_t nv = json_object_size(vats);
    char **roots = calloc(nv, sizeof(*roots));
    json_t *body = json_object();
    json_t *byname = json_object();
    int rc =
        roots == NULL || body == NULL || byname == NULL ? KEEL_ENOMEM : KEEL_OK;
    char boot_root[KEEL_VREF_MAX] = "";
    const char *name;
    json_t *val;
    size_t i = 0;
    rc = rc == KEEL_OK
             ? keel__k_meta_put(k, KM_VERSION, KEEL_STATE_FORMAT_VERSION)
             : rc;
    json_object_foreach(vats, name, val)
    {
        if (rc < 0) {
            break;
        }
        uint32_t id = (uint32_t)(i + 1);
        keel__key key;
        uint8_t kref[KEEL__KS_REF_BYTES], vref[KEEL__KS_REF_BYTES];
        const uint8_t alive = KS_ALIVE;
        keel__ks_ref(kref, KR_O, id);
        keel__ks_ref(vref, KR_OPLUS, 0);
        char *src = json_dumps(val, JSON_COMPACT);
        roots[i] = malloc(KEEL_VREF_MAX);
        if (src == NULL || roots[i] == NULL) {
            free(src);
            rc = KEEL_ENOMEM;
            break;
        }
        snprintf(roots[i], KEEL_VREF_MAX, "ko%zu", i + 1);
        rc =
            keel__k_put(k, keel__ks_vat(&key, id, KV_NAME), name, strlen(name));
        rc = rc == KEEL_OK
                 ? keel__k_put(k, keel__ks_vat(&key, id, KV_STATE), &alive, 1)
                 : rc;
        rc = rc == KEEL_OK ? keel__k_put(k, keel__ks_vat(&key, id, KV_SRC), src,
                                         strlen(src))
                           : rc;
        rc = rc == KEEL_OK ? keel__k_put(k, keel__ks_vat(&key, id, KV_ROOT),
                                         kref, sizeof(kref))
                           : rc;
        keel__ks_vatname(&key, name, strlen(name));
        rc = rc == KEEL_OK ? keel__k_put_u32(k, &key, id) : rc;
        rc = rc == KEEL_OK ? keel__k_put_u32(k, keel__ks_object(&key, id), id)
                           : rc;
        keel__ks_clist_k(&key, id, (keel__kref){KR_O, id});
        rc = rc == KEEL_OK ? keel__k_put(k, &key, vref, sizeof(vref)) : rc;
        keel__ks_clist_v(&key, id, KC_V, (keel__vref){KR_OPLUS, 0});
        rc = rc == KEEL_OK ? keel__k_put(k, &key, kref, sizeof(kref)) : rc;
        /* A root is the host's (keel_kernel_send reaches it): pinned, never
         * collected (gc.c, KS4). */
        keel__ks_kref_key(&key, KS_PIN, (keel__kref){KR_O, id});
        rc = rc == KEEL_OK ? keel__k_put(k, &key, "", 0) : rc;
        free(src);
        json_object_set_new(byname, name,
                            json_pack("{s:I}", "@slot", (json_int_t)i));
        if (strcmp(name, boot_name) == 0) {
            snprintf(boot_root, sizeof(boot_root), "%s", roots[i]);
        }
        i++;
    }
    if (rc == KEEL_OK) {
        rc = keel__k_meta_put(k, KM_NEXT_VAT, nv + 1);
    }
    if (rc == KEEL_OK) {
        rc = keel__k_meta_put(k, KM_NEXT_KO, nv + 1);
    }
    char *bs = NULL;
    if (rc == KEEL_OK) {
        json_object_set(body, "vats", byname);
        bs = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        rc = bs == NULL ? KEEL_ENOMEM : KEEL_OK;
    }
    if (rc == KEEL_OK) {
        rc = keel__k_enqueue_send(k, boot_root, "bootstrap", bs, strlen(bs),
                                  roots, nv, NULL);
    }
    if (rc == KEEL_OK) {
        rc = keel__k_meta_put(k, KM_BOOTED, 1);
    }
    free(bs);
    for (size_t j = 0; roots != NULL && j < nv; j++) {
        free(roots[j]);
    }
    free(roots);
    json_decref(body);
    json_decref(byname);
    return rc;
}

int keel_kernel_boot(keel_kernel *k, const char *config_json,
                     const char *config_dir, keel_diag *diag)
{
    json_error_t je;
    if (k->booted) {
        return keel__diag(diag, KEEL_EEXIST, "%s: already booted", k->dir);
    }
    json_t *cfg = json_loads(config_json, JSON_REJECT_DUPLICATES, &je);
    if (cfg == NULL) {
        return keel__diag(diag, KEEL_EINVAL, "line %d column %d: %s", je.line,
                          je.column, je.text);
    }
    int rc = check_config(k, cfg, config_dir, diag);
    if (rc == KEEL_OK) {
        rc = keel__k_txn_begin(k);
    }
    if (rc == KEEL_OK) {
        rc = boot_txn(k, cfg);
        if (rc == KEEL_OK) {
            rc = keel__k_txn_commit(k, KEEL_WAL_KERNEL_OP, diag);
        } else {
            keel__k_txn_abort(k);
            keel__diag(diag, rc, "boot: %s", keel_strerror(rc));
        }
    }
    json_decref(cfg);
    if (rc == KEEL_OK) {
        k->booted = 1;
        k->nvats = 0;
        free(k->vats);
        k->vats = NULL;
        rc = keel__k_load_vats(k, diag);
    }
    return rc;
}

int keel_kernel_send(keel_kernel *k, const char *vat, const char *method,
                     const char *args_json, char *result_kref, keel_diag *diag)
{
    keel__key key;
    char root[KEEL_VREF_MAX];
    uint32_t vid = 0;
    char why[64];
    if (!valid_name(vat) || args_json == NULL) {
        return keel__diag(diag, KEEL_EINVAL, "bad vat name or arguments");
    }
    if (keel__k_method_check(method, why, sizeof(why)) != KEEL_OK) {
        return keel__diag(diag, KEEL_EINVAL, "method %s", why); /* K23 */
    }
    int rc = keel__k_txn_begin(k);
    if (rc < 0) {
        return keel__diag(diag, rc, "%s", keel_strerror(rc));
    }
    rc = keel__k_get_u32(k, keel__ks_vatname(&key, vat, strlen(vat)), &vid);
    kvat *v = rc == 1 ? keel__k_vat(k, vid) : NULL;
    if (rc >= 0 && (v == NULL || !v->alive)) {
        keel__k_txn_abort(k);
        return keel__diag(diag, KEEL_ENOENT, "no %svat named \"%s\"",
                          v == NULL ? "" : "live ", vat);
    }
    keel_bytes b;
    if (rc >= 0) {
        keel__kref r;
        rc = keel__k_get(k, keel__ks_vat(&key, vid, KV_ROOT), &b);
        if (rc == 1 && keel__ks_kref_val(b.ptr, b.len, &r) && r.kind == KR_O) {
            keel__ks_kref_str(r, root);
        } else if (rc >= 0) {
            rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key);
        }
    }
    if (rc >= 0) {
        rc = keel__k_promise_new(k, 0, result_kref);
    }
    if (rc >= 0) {
        /* The host may read it (keel_kernel_promise): pinned (KS4). */
        keel__key pin;
        keel__kref pr;
        rc = keel__ks_kref_parse(result_kref, &pr)
                 ? keel__k_put(k, keel__ks_kref_key(&pin, KS_PIN, pr), "", 0)
                 : KEEL_ECORRUPT;
    }
    if (rc >= 0) {
        rc = keel__k_enqueue_send(k, root, method, args_json, strlen(args_json),
                                  NULL, 0, result_kref);
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    return keel__k_txn_commit(k, KEEL_WAL_KERNEL_OP, diag);
}

int keel_kernel_promise(keel_kernel *k, const char *kpref, char **body,
                        keel_diag *diag)
{
    int state = 0;
    int rc = keel__k_promise_state(k, kpref, &state, body);
    if (rc == KEEL_EINVAL || rc == KEEL_ENOENT) {
        return keel__diag(diag, rc, "no promise %s", kpref);
    }
    if (rc < 0) {
        return keel__diag(diag, rc, "promise %s: %s", kpref, keel_strerror(rc));
    }
    return state;
}

int keel_kernel_status_json(keel_kernel *k, char **out, keel_diag *diag)
{
    uint64_t head = 0, tail = 0, unresolved = 0;
    keel__store_timeline tl;
    int rc = keel__k_meta_get(k, KM_RQ_HEAD, &head);
    rc = rc >= 0 ? keel__k_meta_get(k, KM_RQ_TAIL, &tail) : rc;
    rc = rc >= 0 ? keel__k_meta_get(k, KM_UNRESOLVED, &unresolved) : rc;
    if (rc < 0) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    if ((rc = keel__store_get_timeline(k->store, &tl, diag)) < 0) {
        return rc;
    }
    json_t *vats = json_array();
    for (size_t i = 0; vats != NULL && i < k->nvats; i++) {
        kvat *v = k->vats[i];
        json_array_append_new(
            vats,
            json_pack("{s:I, s:s, s:s}", "id", (json_int_t)v->id, "name",
                      v->name, "state", v->alive ? "alive" : "terminated"));
    }
    char hash[17], kid[19], tid[17], tparent[17];
    snprintf(hash, sizeof(hash), "%016" PRIx64, k->hash);
    snprintf(kid, sizeof(kid), "0x%016" PRIx64, k->kernel_id);
    snprintf(tid, sizeof(tid), "%016" PRIx64, tl.id);
    snprintf(tparent, sizeof(tparent), "%016" PRIx64, tl.parent);
    json_t *o = json_pack(
        "{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:s, s:s, s:s, s:s, s:I}",
        "booted", k->booted, "crank", (json_int_t)k->crank, "applied_lsn",
        (json_int_t)keel__store_applied_lsn(k->store), "durable_lsn",
        (json_int_t)keel_wal_durable_lsn(k->wal), "last_lsn",
        (json_int_t)keel_wal_last_lsn(k->wal), "run_queue",
        (json_int_t)(tail - head), "unresolved_promises",
        (json_int_t)unresolved, "vats", vats, "activity_hash", hash,
        "kernel_id", kid, "timeline", tid, "timeline_parent", tparent,
        "timeline_branch_lsn", (json_int_t)tl.branch_lsn);
    *out = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (*out == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "status: out of memory");
    }
    return KEEL_OK;
}

int keel_kernel_run(keel_kernel *k, const keel_run_options *o,
                    keel_run_stats *stats, keel_diag *diag)
{
    keel_run_options none = {0};
    keel_run_stats s = {0};
    int rc = KEEL_OK;
    if (o == NULL) {
        o = &none;
    }
    uint64_t t0 = keel__now_ms(), last_progress = t0;
    int failed_before = k->failed != 0;
    k->stat_txns = 0;
    k->stat_deliveries = 0;
    for (;;) {
        if (k->o.observe != NULL) { /* K36: the host may publish */
            keel__k_observe(k, KEEL_OBS_TICK, 0, keel_wal_durable_lsn(k->wal));
        }
        if (o->stop_flag != NULL && *o->stop_flag) {
            break;
        }
        if (o->max_cranks != 0 && s.cranks + s.aborted >= o->max_cranks) {
            break;
        }
        uint64_t now = keel__now_ms();
        if (o->timeout_ms != 0 && now - t0 >= o->timeout_ms) {
            s.timed_out = 1;
            break;
        }
        if (o->progress != NULL && now - last_progress >= 100) {
            o->progress(o->progress_arg, s.cranks);
            last_progress = now;
        }
        /* Async completions first: they commit as their own transactions
         * between cranks (K21). Cheap when nothing is ready. */
        if ((s.cranks & 63) == 0 && k->host.pending(k->host.ctx) > 0) {
            k->host.poll(k->host.ctx);
        }
        uint64_t crank_before = k->crank;
        rc = keel__k_start_async(k, 0, diag); /* K34: what is durable */
        if (rc == KEEL_OK) {
            rc = keel__k_cleanup(k, 0, diag); /* K26 */
        }
        if (rc < 0) {
            break;
        }
        rc = keel_kernel_step(k, diag);
        if (rc < 0) {
            break;
        }
        if (rc == 1) {
            /* K24: a step that did not advance the crank number aborted */
            *(k->crank > crank_before ? &s.cranks : &s.aborted) += 1;
            if (k->host.after_crank != NULL) { /* the host's, e.g. KS3 */
                rc = k->host.after_crank(k->host.ctx, k, diag);
                if (rc < 0) {
                    break;
                }
            }
            continue; /* K22: a limit stopping the loop still waits */
        }
        if (keel__k_cleanup_pending(k)) {
            rc = keel__k_cleanup(k, 1, diag); /* K26: queue empty */
            if (rc < 0) {
                break;
            }
            continue;
        }
        /* K34: the run queue is empty; wait for the held work's records
         * to be durable and start it. */
        rc = keel__k_start_async(k, 1, diag);
        if (rc < 0) {
            break;
        }
        if (k->host.pending(k->host.ctx) == 0) {
            if (!o->forever) {
                s.idle = 1;
                break;
            }
        }
        /* Nothing queued: wait for async work (or, with --forever, for a
         * stop request), in short slices so stop and timeout are seen. */
        uint64_t slice = 100;
        if (o->timeout_ms != 0) {
            uint64_t spent = keel__now_ms() - t0;
            uint64_t left = spent < o->timeout_ms ? o->timeout_ms - spent : 1;
            slice = left < slice ? left : slice;
        }
        if (k->host.pending(k->host.ctx) > 0) {
            rc = k->host.run_once(k->host.ctx, slice);
        } else {
            struct timespec ts = {0, (long)slice * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (rc < 0) {
            break;
        }
        rc = KEEL_OK;
    }
    if (rc == KEEL_OK) {
        rc = keel_kernel_wait_durable(k, diag); /* K22 */
    }
    if (k->failed && !failed_before && (rc == KEEL_OK || rc == KEEL_EFAILED)) {
        /* K25: a checkpoint after a commit failed the kernel in this call:
         * its cause is this call's error (later calls: KEEL_EFAILED). */
        rc = k->failed;
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
    }
    s.transactions = k->stat_txns;
    s.deliveries = k->stat_deliveries;
    s.seconds = (double)(keel__now_ms() - t0) / 1000.0;
    if (stats != NULL) {
        *stats = s;
    }
    return rc;
}

int keel_kernel_vatstore_get(keel_kernel *k, const char *vat, const char *key,
                             char **val, size_t *len, keel_diag *diag)
{
    keel__key full;
    uint32_t vid = 0;
    keel_bytes b;
    if (!valid_name(vat) || key == NULL || key[0] == '\0' ||
        strlen(key) > KEEL_VATSTORE_KEY_MAX) {
        return keel__diag(diag, KEEL_EINVAL, "bad vat name or key");
    }
    int rc =
        keel__k_get_u32(k, keel__ks_vatname(&full, vat, strlen(vat)), &vid);
    if (rc == 0) {
        return keel__diag(diag, KEEL_ENOENT, "no vat named \"%s\"", vat);
    }
    kvat *v = rc > 0 ? keel__k_vat(k, vid) : NULL;
    if (rc > 0 && (v == NULL || !v->alive)) {
        return 0; /* K6: a terminated vat holds nothing, cleaned up or not */
    }
    if (rc > 0) {
        rc =
            keel__k_get(k, keel__ks_vatstore(&full, vid, key, strlen(key)), &b);
    }
    if (rc < 0) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    if (rc == 1) {
        *val = malloc(b.len + 1);
        if (*val == NULL) {
            return keel__diag(diag, KEEL_ENOMEM, "out of memory");
        }
        memcpy(*val, b.ptr, b.len);
        (*val)[b.len] = '\0';
        *len = b.len;
    }
    return rc;
}
