/* A tiny test harness: each TEST is one case; CHECK records a failure with
 * file:line and the expression, and the case goes on. main() ends with
 * test_summary(), which prints the line tests/run.sh adds up. */
#ifndef MPRPC_TEST_H
#define MPRPC_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_cases_passed, test_cases_failed, test_case_failures;

#define CHECK(expr)                                                                    \
    do {                                                                               \
        if (!(expr)) {                                                                 \
            test_case_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr);   \
        }                                                                              \
    } while (0)

#define CHECK_STATUS(got, want)                                                        \
    do {                                                                               \
        int g_ = (int)(got), w_ = (int)(want);                                         \
        if (g_ != w_) {                                                                \
            test_case_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s is %s, expected %s\n", __FILE__, __LINE__, #got, \
                    mprpc_status_name(g_), mprpc_status_name(w_));                     \
        }                                                                              \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                    \
    do {                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                        \
        if (!h_ || !strstr(h_, n_)) {                                                  \
            test_case_failures++;                                                      \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__, \
                    h_ ? h_ : "(null)", n_);                                           \
        }                                                                              \
    } while (0)

#define RUN(fn)                                                                        \
    do {                                                                               \
        test_case_failures = 0;                                                        \
        fn();                                                                          \
        if (test_case_failures) test_cases_failed++; else test_cases_passed++;         \
        printf("%s %s\n", test_case_failures ? "FAIL" : "ok  ", #fn);                  \
        fflush(stdout);                                                                \
    } while (0)

static int test_summary(const char *name)
{
    printf("MPRPC-TEST-SUMMARY %s passed=%d failed=%d\n", name, test_cases_passed, test_cases_failed);
    return test_cases_failed ? 1 : 0;
}

#endif
