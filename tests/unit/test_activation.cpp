// Which MPI-launched processes activate (startup/activation.hpp).
#include "fake_env.hpp"
#include "startup/activation.hpp"

#include <criterion/criterion.h>
#include <map>
#include <string>

using namespace pyimport;
using pyimport::testing::fake_env;
using pyimport::testing::g_env;

namespace {
int g_asked = 0;
bool python() {
    ++g_asked;
    return true;
}
bool not_python() {
    ++g_asked;
    return false;
}
Activation decide(std::map<std::string, std::string> env, bool (*is_python)(), std::string& error) {
    g_env = std::move(env);
    Config config;
    error.clear();
    return decide_activation(fake_env, is_python, config, error);
}
} // namespace

Test(activation, python_interpreters_activate_other_programs_stay_inert) {
    std::string error;
    cr_expect(decide({}, python, error) == Activation::Active);
    cr_expect(decide({}, not_python, error) == Activation::Inert);
    cr_expect(error.empty());
    cr_expect(decide({{"PYIMPORT_ANY_PROGRAM", "1"}}, not_python, error) == Activation::Active);
}

Test(activation, disabled_processes_stay_inert_even_with_bad_settings) {
    std::string error;
    cr_expect(decide({{"PYIMPORT_DISABLE", "1"}, {"PYIMPORT_LOG", "banana"}}, python, error) ==
              Activation::Inert);
}

Test(activation, bad_settings_of_an_interpreter_are_reported) {
    std::string error;
    cr_expect(decide({{"PYIMPORT_LOG", "banana"}}, python, error) == Activation::Misconfigured);
    cr_expect(error.find("PYIMPORT_LOG") != std::string::npos, "%s", error.c_str());
    // Other programs never speak.
    cr_expect(decide({{"PYIMPORT_LOG", "banana"}}, not_python, error) == Activation::Inert);
}

// PYIMPORT_ANY_PROGRAM was parsed outside the option table and a bad value
// was ignored silently: now it is one of the table's, and a bad value is
// reported wherever it was meant to take effect.
Test(activation, a_bad_any_program_value_is_reported_not_ignored) {
    std::string error;
    for (bool (*kind)() : {python, not_python}) {
        cr_expect(decide({{"PYIMPORT_ANY_PROGRAM", "enable"}}, kind, error) ==
                  Activation::Misconfigured);
        cr_expect(error.find("PYIMPORT_ANY_PROGRAM=\"enable\"") != std::string::npos, "%s",
                  error.c_str());
    }
}

Test(activation, the_interpreter_check_is_made_only_when_needed) {
    std::string error;
    g_asked = 0;
    decide({{"PYIMPORT_ANY_PROGRAM", "1"}}, not_python, error);
    decide({{"PYIMPORT_DISABLE", "1"}}, not_python, error);
    cr_expect_eq(g_asked, 0);
}
