/*
 * vats/vutil.h — helpers the example vats share: numbers and vrefs in the
 * vatstore, capdata bodies built and parsed with jansson, and the
 * send-with-result-and-subscribe pattern.
 *
 * Conventions of the example vats (each vat's file-top comment relies on
 * them):
 *   - Numbers in the vatstore are decimal text ("42"); an absent key reads
 *     as 0. Vrefs are stored as their text ("o-1").
 *   - Bodies are compact JSON objects; slot i is {"@slot":i}.
 *   - A message a vat does not accept (an unknown method, arguments that
 *     are not the JSON it expects: wrong type, a missing or out-of-range
 *     field, the wrong number of slots) is refused: its result promise is
 *     rejected with {"error":"<method>: <what was expected>"} and the
 *     delivery succeeds, so the vat stays alive (keel__vutil_refuse). The
 *     arguments are checked before any syscall that writes, so a refused
 *     message changes nothing else. Messages come from outside the vat
 *     (`keel send`, other vats) and may be anything.
 *   - deliver() fails (returns nonzero: the crank aborts and the kernel
 *     terminates the vat) only on a broken invariant of the vat's own: an
 *     answer to its own question that is wrong or rejected, a notify it
 *     never asked for, a vatstore value it did not write, a failed
 *     syscall. That is how a test sees that something went wrong.
 *   - No vat calls a syscall that writes from start(): a restart must add no
 *     transaction, so a resumed kernel reaches the same activity hash.
 */
#ifndef KEEL_VATS_VUTIL_H
#define KEEL_VATS_VUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "keel/keel.h" /* the entry header; it includes keel/vat.h */
#include "keel/vat.h"

/* The built-in vats (registry.c lists them for keel_vat_builtin()). */
extern const keel_vat_ops keel__vat_pingpong;
extern const keel_vat_ops keel__vat_counter;
extern const keel_vat_ops keel__vat_counter_driver;
extern const keel_vat_ops keel__vat_coordinator;
extern const keel_vat_ops keel__vat_provider;
extern const keel_vat_ops keel__vat_keyring;
extern const keel_vat_ops keel__vat_mixed;
extern const keel_vat_ops keel__vat_churn;

/* ---- vatstore ------------------------------------------------------------ */

/* *v = the decimal number at key, 0 if absent.
 * @return KEEL_OK, KEEL_EINVAL (not a decimal u64), or a syscall error. */
int keel__vutil_get_u64(keel_syscall *sys, const char *key, uint64_t *v);
int keel__vutil_set_u64(keel_syscall *sys, const char *key, uint64_t v);
/* Copy the text at key into buf[cap] (NUL-terminated).
 * @return 1 found, 0 absent, KEEL_EINVAL (too long), or a syscall error. */
int keel__vutil_get_str(keel_syscall *sys, const char *key, char *buf,
                        size_t cap);
int keel__vutil_set_str(keel_syscall *sys, const char *key, const char *s);
/* key = prefix + suffix into buf[cap]. @return KEEL_OK or KEEL_EINVAL. */
int keel__vutil_key(char *buf, size_t cap, const char *prefix,
                    const char *suffix);

/* ---- bodies -------------------------------------------------------------- */

/* A compact JSON text built by json_pack(fmt, ...) (malloc'd; free()).
 * NULL on a bad fmt or no memory. */
char *keel__vutil_json(const char *fmt, ...);
/* Parse a capdata body that must be a JSON object (*out: caller
 * json_decref()s). @return KEEL_OK or KEEL_EINVAL. */
int keel__vutil_parse(const keel_capdata *cd, json_t **out);
/* *v = obj[field], which must be an integer >= 0.
 * @return KEEL_OK or KEEL_EINVAL. */
int keel__vutil_field_u64(const json_t *obj, const char *field, uint64_t *v);
/* *vref = the slot that ref ({"@slot":i}) names in cd (borrowed from cd).
 * @return KEEL_OK or KEEL_EINVAL (not a slot reference, i out of range). */
int keel__vutil_slot(const keel_capdata *cd, const json_t *ref,
                     const char **vref);
/* Parse cd and return the u64 at field. @return KEEL_OK or KEEL_EINVAL. */
int keel__vutil_body_u64(const keel_capdata *cd, const char *field,
                         uint64_t *v);
/* The vref of vat `name`'s root in a bootstrap delivery's args
 * ({"vats":{name:{"@slot":i}}}) into buf[KEEL_VREF_MAX].
 * @return KEEL_OK or KEEL_EINVAL (no such vat). */
int keel__vutil_bootstrap_root(const keel_capdata *args, const char *name,
                               char *buf);

/* ---- checking a message's arguments ------------------------------------- */

/* What a refused message lacked, for its rejection. */
typedef char keel__vutil_why[160];

/* d's arguments must be a JSON object with exactly nslots slots: parse
 * them into *out (caller json_decref()s). @return KEEL_OK, or KEEL_EINVAL
 * with why set. No syscall. */
int keel__vutil_args(const keel_delivery *d, size_t nslots, json_t **out,
                     keel__vutil_why why);
/* args[field] must be an integer in [0, max]. @return KEEL_OK or
 * KEEL_EINVAL with why set. */
int keel__vutil_arg_u64(const json_t *args, const char *field, uint64_t max,
                        uint64_t *v, keel__vutil_why why);
/* Both: d's arguments are an object without slots whose field is an
 * integer in [0, max]. */
int keel__vutil_args_u64(const keel_delivery *d, const char *field,
                         uint64_t max, uint64_t *v, keel__vutil_why why);
/* Refuse message d: reject its result promise, if it has one, with
 * {"error":"<method>: <why>"}; the vat stays alive. @return KEEL_OK or the
 * syscall's error. */
int keel__vutil_refuse(keel_syscall *sys, const keel_delivery *d,
                       const char *why);

/* ---- messages ------------------------------------------------------------ */

/* Fulfil promise with body (plain data, no slots). */
int keel__vutil_resolve(keel_syscall *sys, const char *promise,
                        const char *body);
/* Fulfil d's result promise, if it has one, with body. */
int keel__vutil_answer(keel_syscall *sys, const keel_delivery *d,
                       const char *body);
/* Send method(body, slots) to target with a fresh result promise (into
 * result[KEEL_VREF_MAX]) and subscribe to it. */
int keel__vutil_ask(keel_syscall *sys, const char *target, const char *method,
                    const char *body, const char *const *slots, size_t nslots,
                    char *result);

/* ---- garbage collection ---------------------------------------------------
 */

/* "I no longer need this import": drop and retire o-N vref (keel/vat.h
 * keel_syscall_drop_imports, _retire_imports) in one go; its exporter is
 * told once no one else holds it. Given again later, the object arrives
 * under a fresh o-N. @return KEEL_OK or the syscall's error. */
int keel__vutil_forget_import(keel_syscall *sys, const char *vref);
/* 1 if d is a GC delivery (dropExports, retireExports, retireImports),
 * which a vat that keeps no table of its imports or exports has nothing to
 * do for. */
int keel__vutil_is_gc(const keel_delivery *d);

/* ---- params -------------------------------------------------------------- */

/* Parse params_json (an object). @return KEEL_OK or KEEL_EINVAL. */
int keel__vutil_params(const char *params_json, json_t **out);
/* *v = params[field] (an integer >= 0), or dflt when absent. */
int keel__vutil_param_u64(const json_t *params, const char *field,
                          uint64_t dflt, uint64_t *v);
/* Copy params[field] (a string) into buf[cap], or dflt when absent. */
int keel__vutil_param_str(const json_t *params, const char *field,
                          const char *dflt, char *buf, size_t cap);

#endif
