/*
 * tests/test_errors.c — the error table (KEEL_ERRNO_MAP in keel/base.h,
 * common/errors.c): names, messages, the caller-buffer variant and the
 * errno translation used by the I/O tables.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "keel/keel.h"

/* Every entry of the table, generated from the table itself so that a new
 * code is covered without touching this file. */
static const struct {
    int code;
    const char *name;
    const char *msg;
} table[] = {
#define XX(name, val, msg) {KEEL_##name, "KEEL_" #name, msg},
    KEEL_ERRNO_MAP(XX)
#undef XX
};

enum { TABLE_LEN = sizeof(table) / sizeof(table[0]) };

/* ---- names and messages -------------------------------------------------- */

START_TEST(test_errors_every_code_has_its_name_and_message)
{
    for (size_t i = 0; i < TABLE_LEN; i++) {
        ck_assert_str_eq(keel_err_name(table[i].code), table[i].name);
        ck_assert_str_eq(keel_strerror(table[i].code), table[i].msg);
    }
}
END_TEST

START_TEST(test_errors_codes_are_negative_and_distinct)
{
    for (size_t i = 0; i < TABLE_LEN; i++) {
        ck_assert_msg(table[i].code < 0, "%s is %d", table[i].name,
                      table[i].code);
        for (size_t j = i + 1; j < TABLE_LEN; j++) {
            ck_assert_msg(table[i].code != table[j].code, "%s and %s share %d",
                          table[i].name, table[j].name, table[i].code);
        }
    }
}
END_TEST

START_TEST(test_errors_known_codes_have_fixed_values)
{
    /* Values are part of the ABI: pin the ones callers already test for. */
    ck_assert_int_eq(KEEL_OK, 0);
    ck_assert_int_eq(KEEL_EIO, -3);
    ck_assert_int_eq(KEEL_ENOSPC, -4);
    ck_assert_int_eq(KEEL_ECORRUPT, -5);
    ck_assert_int_eq(KEEL_EFAILED, -7);
    ck_assert_str_eq(keel_err_name(KEEL_ECORRUPT), "KEEL_ECORRUPT");
    ck_assert_str_eq(keel_strerror(KEEL_ECORRUPT),
                     "on-disk data failed validation");
    ck_assert_str_eq(keel_err_name(KEEL_ENOENT), "KEEL_ENOENT");
    ck_assert_str_eq(keel_strerror(KEEL_ENOENT), "no such file or directory");
}
END_TEST

START_TEST(test_errors_ok_is_named_success)
{
    ck_assert_str_eq(keel_err_name(KEEL_OK), "KEEL_OK");
    ck_assert_str_eq(keel_strerror(KEEL_OK), "success");
}
END_TEST

START_TEST(test_errors_unknown_code_is_named_unknown)
{
    static const int unknown[] = {1, -1000, 42, -(TABLE_LEN + 1)};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        ck_assert_str_eq(keel_err_name(unknown[i]), "KEEL_UNKNOWN");
        ck_assert_str_eq(keel_strerror(unknown[i]), "unknown error");
    }
}
END_TEST

/* ---- keel_strerror_r ----------------------------------------------------- */

START_TEST(test_errors_strerror_r_copies_whole_message)
{
    char buf[128];
    memset(buf, 'x', sizeof(buf));
    ck_assert_ptr_eq(keel_strerror_r(KEEL_ENOSPC, buf, sizeof(buf)), buf);
    ck_assert_str_eq(buf, "no space left on device");
}
END_TEST

START_TEST(test_errors_strerror_r_truncates_and_terminates)
{
    /* "I/O error" into 4 bytes: three characters and the NUL. */
    char buf[8];
    memset(buf, 'x', sizeof(buf));
    ck_assert_ptr_eq(keel_strerror_r(KEEL_EIO, buf, 4), buf);
    ck_assert_str_eq(buf, "I/O");
    ck_assert_int_eq(buf[4], 'x');
}
END_TEST

START_TEST(test_errors_strerror_r_exact_fit_is_whole)
{
    const char *msg = keel_strerror(KEEL_EIO);
    size_t n = strlen(msg) + 1;
    char buf[64];
    memset(buf, 'x', sizeof(buf));
    keel_strerror_r(KEEL_EIO, buf, n);
    ck_assert_str_eq(buf, msg);
    memset(buf, 'x', sizeof(buf));
    keel_strerror_r(KEEL_EIO, buf, n - 1);
    ck_assert_uint_eq(strlen(buf), n - 2);
    ck_assert_int_eq(strncmp(buf, msg, n - 2), 0);
}
END_TEST

START_TEST(test_errors_strerror_r_cap_one_is_empty)
{
    char buf[4] = {'x', 'x', 'x', 'x'};
    keel_strerror_r(KEEL_ECORRUPT, buf, 1);
    ck_assert_int_eq(buf[0], '\0');
    ck_assert_int_eq(buf[1], 'x');
}
END_TEST

START_TEST(test_errors_strerror_r_cap_zero_writes_nothing)
{
    char buf[4] = {'x', 'x', 'x', 'x'};
    ck_assert_ptr_eq(keel_strerror_r(KEEL_ECORRUPT, buf, 0), buf);
    ck_assert_int_eq(buf[0], 'x');
}
END_TEST

START_TEST(test_errors_strerror_r_unknown_code_is_unknown)
{
    char buf[64];
    keel_strerror_r(-999, buf, sizeof(buf));
    ck_assert_str_eq(buf, "unknown error");
}
END_TEST

/* ---- keel_translate_errno ------------------------------------------------ */

START_TEST(test_errors_translate_errno_maps_known_values)
{
    static const struct {
        int errnum;
        int want;
    } cases[] = {
        {0, KEEL_OK},          {ENOSPC, KEEL_ENOSPC},
        {EDQUOT, KEEL_ENOSPC}, {EIO, KEEL_EIO},
        {ENOENT, KEEL_ENOENT}, {ENOTDIR, KEEL_ENOENT},
        {EEXIST, KEEL_EEXIST}, {EACCES, KEEL_EACCES},
        {EPERM, KEEL_EACCES},  {EROFS, KEEL_EACCES},
        {ENOMEM, KEEL_ENOMEM}, {EINVAL, KEEL_EINVAL},
        {EFBIG, KEEL_ETOOBIG}, {EWOULDBLOCK, KEEL_EBUSY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = keel_translate_errno(cases[i].errnum);
        ck_assert_msg(got == cases[i].want, "errno %d (%s): %s, expected %s",
                      cases[i].errnum, strerror(cases[i].errnum),
                      keel_err_name(got), keel_err_name(cases[i].want));
    }
}
END_TEST

START_TEST(test_errors_translate_errno_unknown_is_eio)
{
    static const int unknown[] = {EXDEV, EBADF, ENAMETOOLONG, 99999};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        ck_assert_int_eq(keel_translate_errno(unknown[i]), KEEL_EIO);
    }
}
END_TEST

START_TEST(test_errors_translate_errno_result_is_in_table)
{
    /* Whatever errno comes in, the code that goes out has a name. */
    for (int errnum = 1; errnum < 200; errnum++) {
        int got = keel_translate_errno(errnum);
        ck_assert_msg(strcmp(keel_err_name(got), "KEEL_UNKNOWN") != 0,
                      "errno %d gives unnamed %d", errnum, got);
        ck_assert_int_lt(got, 0);
    }
}
END_TEST

/* ---- version ------------------------------------------------------------- */

START_TEST(test_errors_version_is_the_build_version)
{
    ck_assert_str_eq(keel_version(), KEEL_VERSION_STRING);
    const char *v = keel_version();
    int dots = 0;
    for (const char *p = v; *p != '\0'; p++) {
        dots += *p == '.';
    }
    ck_assert_int_eq(dots, 2);
}
END_TEST

Suite *errors_suite(void);

Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_errors_every_code_has_its_name_and_message);
    tcase_add_test(tc, test_errors_codes_are_negative_and_distinct);
    tcase_add_test(tc, test_errors_known_codes_have_fixed_values);
    tcase_add_test(tc, test_errors_ok_is_named_success);
    tcase_add_test(tc, test_errors_unknown_code_is_named_unknown);
    suite_add_tcase(s, tc);

    tc = tcase_create("strerror_r");
    tcase_add_test(tc, test_errors_strerror_r_copies_whole_message);
    tcase_add_test(tc, test_errors_strerror_r_truncates_and_terminates);
    tcase_add_test(tc, test_errors_strerror_r_exact_fit_is_whole);
    tcase_add_test(tc, test_errors_strerror_r_cap_one_is_empty);
    tcase_add_test(tc, test_errors_strerror_r_cap_zero_writes_nothing);
    tcase_add_test(tc, test_errors_strerror_r_unknown_code_is_unknown);
    suite_add_tcase(s, tc);

    tc = tcase_create("translate_errno");
    tcase_add_test(tc, test_errors_translate_errno_maps_known_values);
    tcase_add_test(tc, test_errors_translate_errno_unknown_is_eio);
    tcase_add_test(tc, test_errors_translate_errno_result_is_in_table);
    suite_add_tcase(s, tc);

    tc = tcase_create("version");
    tcase_add_test(tc, test_errors_version_is_the_build_version);
    suite_add_tcase(s, tc);
    return s;
}
