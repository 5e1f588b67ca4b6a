// System calls and string helpers for the audit library, which links no libc
// (with one, the loader would search for that libc through the program's
// RUNPATH in every process: 21 calls on the Python prefix each). Errors are
// returned as -errno.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/syscall.h>
#include <type_traits>

namespace pyimport::sys {

inline long call(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
    long ret;
#if defined(__x86_64__)
    register long r10 asm("r10") = d;
    register long r8 asm("r8") = e;
    register long r9 asm("r9") = f;
    asm volatile("syscall"
                 : "=a"(ret)
                 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                 : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 asm("x8") = n;
    register long x0 asm("x0") = a;
    register long x1 asm("x1") = b;
    register long x2 asm("x2") = c;
    register long x3 asm("x3") = d;
    register long x4 asm("x4") = e;
    register long x5 asm("x5") = f;
    asm volatile("svc 0"
                 : "+r"(x0)
                 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                 : "memory");
    ret = x0;
#else
#error "the audit library knows the system call convention of x86-64 and AArch64 only"
#endif
    return ret;
}

template <class T> long word(T v) {
    if constexpr (std::is_pointer_v<T>)
        return reinterpret_cast<long>(v);
    else
        return static_cast<long>(v);
}

template <class... A> long sc(long n, A... a) {
    return call(n, word(a)...);
}

inline size_t length(const char* s) {
    size_t n = 0;
    while (s[n])
        ++n;
    return n;
}

inline bool equal(const char* a, const char* b) {
    while (*a && *a == *b)
        ++a, ++b;
    return *a == *b;
}

inline bool starts_with(const char* s, const char* prefix) {
    while (*prefix)
        if (*s++ != *prefix++) return false;
    return true;
}

inline bool contains(const char* s, const char* part) {
    for (; *s; ++s)
        if (starts_with(s, part)) return true;
    return starts_with(s, part);
}

inline bool has_slash(const char* s) {
    for (; *s; ++s)
        if (*s == '/') return true;
    return false;
}

// A bounded text being built; `ok` turns false once something did not fit.
struct Text {
    char* data;
    size_t capacity;
    size_t size = 0;
    bool ok = true;

    Text(char* buffer, size_t cap) : data(buffer), capacity(cap) { data[0] = 0; }
    Text& add(const char* s, size_t n) {
        if (size + n + 1 > capacity) {
            ok = false;
            return *this;
        }
        for (size_t i = 0; i < n; ++i)
            data[size++] = s[i];
        data[size] = 0;
        return *this;
    }
    Text& add(const char* s) { return add(s, length(s)); }
    Text& add_char(char c) { return add(&c, 1); }
    Text& add_number(uint64_t v, int base = 10) {
        char digits[24];
        int n = 0;
        do {
            digits[n++] = "0123456789abcdef"[v % static_cast<uint64_t>(base)];
            v /= static_cast<uint64_t>(base);
        } while (v);
        while (n)
            add_char(digits[--n]);
        return *this;
    }
};

} // namespace pyimport::sys
