// The table's real functions (base/real.hpp): never the library's own
// definition, ENOSYS for what libc lacks, and the test-only substitution.
#include "base/real.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <dlfcn.h>

using namespace pyimport;

// Defined (and exported: the test is linked with ENABLE_EXPORTS) by the same
// object as the core under test, as the shim defines its wrappers.
extern "C" __attribute__((visibility("default"), used)) int pyimport_unit_own_symbol() {
    return 7;
}

// The RTLD_DEFAULT fallback once found the library's own definition: in the
// shim that is the wrapper itself, which then called itself forever.
Test(real, never_resolves_to_its_own_objects_definition) {
    cr_assert_not_null(dlsym(RTLD_DEFAULT, "pyimport_unit_own_symbol"), "the test's setup");
    cr_expect_null(real::find_next("pyimport_unit_own_symbol"));
}

Test(real, finds_libcs_definition) {
    void* libc_close = dlsym(RTLD_NEXT, "close");
    cr_assert_not_null(libc_close);
    cr_expect_eq(real::find_next("close"), libc_close);
    cr_expect_eq(reinterpret_cast<void*>(REAL(close)), libc_close);
    cr_expect_null(real::find_next("pyimport_no_such_function_anywhere"));
}

Test(real, missing_functions_fail_with_enosys) {
    errno = 0;
    cr_expect_eq(real::Missing<int (*)(unsigned, unsigned, int)>::call(3, 4, 0), -1);
    cr_expect_eq(errno, ENOSYS);
    errno = 0;
    cr_expect_eq((real::Missing<int (*)(const char*, int, ...)>::call("x", 0, 0644)), -1);
    cr_expect_eq(errno, ENOSYS);
    cr_expect_null(real::Missing<FILE* (*)(const char*, const char*)>::call("x", "r"));
    real::Missing<void (*)(DIR*)>::call(nullptr);
}

namespace {
int g_closed = -1;
int fake_close(int fd) {
    g_closed = fd;
    return 0;
}
} // namespace

Test(real, substitute_replaces_and_restores) {
    cr_assert(real::substitute("close", reinterpret_cast<void*>(&fake_close)));
    cr_expect_eq(REAL(close)(12345), 0);
    cr_expect_eq(g_closed, 12345);
    cr_assert(real::substitute("close", nullptr));
    cr_expect_eq(reinterpret_cast<void*>(REAL(close)), dlsym(RTLD_NEXT, "close"));
    cr_expect_not(real::substitute("pyimport_not_in_the_table", nullptr));
}
