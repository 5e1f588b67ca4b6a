#include "base/log.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <unistd.h>

namespace pyimport {
namespace {
std::atomic<int> g_level{0};
std::atomic<int> g_rank{-1};

void emit(const char* prefix, const char* fmt, va_list args) {
    int saved = errno;
    char line[1024];
    int n = std::snprintf(line, sizeof line, "%s", prefix);
    if (n < 0) n = 0;
    if (n > static_cast<int>(sizeof line) - 2) n = static_cast<int>(sizeof line) - 2; // cut short
    int m = std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, fmt, args);
    if (m < 0) m = 0;
    size_t len = static_cast<size_t>(n) + static_cast<size_t>(m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t ignored = ::write(STDERR_FILENO, line, len);
    (void)ignored;
    errno = saved;
}
} // namespace

void set_log_level(int level) {
    g_level.store(level, std::memory_order_relaxed);
}
int log_level() {
    return g_level.load(std::memory_order_relaxed);
}
void set_log_rank(int rank) {
    g_rank.store(rank, std::memory_order_relaxed);
}

void log_error(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    emit("pyimport: ", fmt, args);
    va_end(args);
}

void log_line(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    emit("pyimport: ", fmt, args);
    va_end(args);
}

void log_at(LogLevel level, const char* fmt, ...) {
    char prefix[64];
    std::snprintf(prefix, sizeof prefix, "pyimport[%d r%d %d]: ", static_cast<int>(getpid()),
                  g_rank.load(std::memory_order_relaxed), static_cast<int>(level));
    va_list args;
    va_start(args, fmt);
    emit(prefix, fmt, args);
    va_end(args);
}

} // namespace pyimport
