// Diagnostics on stderr, written with one write(2) per line so that lines of
// different ranks and threads do not interleave and nothing allocates.
#pragma once

#include <cstdarg>

namespace pyimport {

enum class LogLevel { quiet = 0, info = 1, debug = 2, trace = 3 };

void set_log_level(int level);
int log_level();

// Always printed: a fault or a bad setting. One line, prefixed "pyimport: ".
void log_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Printed when PYIMPORT_LOG >= level; lines carry pid and rank.
void log_at(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// Unconditional line without pid tag (used by the stats summary).
void log_line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

void set_log_rank(int rank);

} // namespace pyimport

#define PYIMPORT_LOG(level, ...)                                                                   \
    do {                                                                                           \
        if (::pyimport::log_level() >= static_cast<int>(level))                                    \
            ::pyimport::log_at(level, __VA_ARGS__);                                                \
    } while (0)
