/*
 * tests/check_main.c — runs one Check suite by name (`keel_tests wal`), or
 * all of them with no argument. Exit status 0 only if every test passed.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "suites.h"

int main(int argc, char **argv)
{
    SRunner *sr = NULL;
    size_t n = sizeof(keel_suites) / sizeof(keel_suites[0]);
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], keel_suites[i].name) != 0) {
            continue;
        }
        if (sr == NULL) {
            sr = srunner_create(keel_suites[i].make());
        } else {
            srunner_add_suite(sr, keel_suites[i].make());
        }
    }
    if (sr == NULL) {
        fprintf(stderr, "keel_tests: no suite named '%s'\n", argv[1]);
        return 2;
    }
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
