// dlopen, dlerror, dladdr, dladdr1, dlinfo.
//
// dlopen is caller-relative: glibc takes the caller from its return address
// (a bare name is searched with the caller's RUNPATH, and the caller's
// namespace is used). A C++ wrapper that calls the real dlopen would make
// this library the caller, so dlopen is an assembly trampoline: it asks
// pyimport_dlopen_prepare which path to load, then jumps (not calls) to the
// real dlopen, which sees the original return address.
//
// The loader names a library loaded from the node-local mirror by its mirror
// path; dlerror, dladdr, dladdr1 and dlinfo(RTLD_DI_ORIGIN) give the path on
// the filesystem instead, as without the shim.
#include "libraries.hpp"
#include "wrap.hpp"

#include <climits>
#include <cstring>
#include <link.h>

using namespace pyimport;

namespace {

thread_local char t_dlopen_path[PATH_MAX + 512] __attribute__((tls_model("initial-exec")));
thread_local char t_dlerror[4096] __attribute__((tls_model("initial-exec")));

// The filesystem path for a name the loader knows, or `name` itself.
const char* unmirrored(const char* name) {
    const char* root = mirror_root();
    if (!root || !name) return name;
    size_t length = std::strlen(root);
    if (std::strncmp(name, root, length) == 0 && name[length] == '/') return name + length;
    return name;
}

// Whether the loader holds `path` under its mirror name (root + path).
bool loaded_from_mirror(const char* path, const char* root) {
    struct Search {
        const char* path;
        const char* root;
        size_t root_length;
        bool found;
    } search{path, root, std::strlen(root), false};
    dl_iterate_phdr(
        [](struct dl_phdr_info* info, size_t, void* data) {
            auto* s = static_cast<Search*>(data);
            const char* name = info->dlpi_name;
            s->found = name && std::strncmp(name, s->root, s->root_length) == 0 &&
                       std::strcmp(name + s->root_length, s->path) == 0;
            return s->found ? 1 : 0;
        },
        &search);
    return search.found;
}

} // namespace

extern "C" __attribute__((visibility("hidden"), used)) void*
pyimport_dlopen_prepare(const char** file, int mode) {
    const char* path = opaque(*file);
    Guard guard;
    const char* root = mirror_root();
    if (!guard && root && path && path[0] == '/' && !t_inside_shim) {
        // An inert process that inherited the loader's state (a fork child):
        // what was loaded from the mirror keeps its name, nothing else changes.
        size_t length = std::strlen(root);
        if (length + std::strlen(path) < sizeof t_dlopen_path && loaded_from_mirror(path, root)) {
            std::memcpy(t_dlopen_path, root, length);
            std::strcpy(t_dlopen_path + length, path);
            *file = t_dlopen_path;
        }
    } else if (guard && path && path[0] == '/') {
        Libraries* libraries = guard->libraries();
        bool served = false;
        if (libraries) {
            try {
                std::string local;
                if (libraries->redirect(path, mode, local) && local.size() < sizeof t_dlopen_path) {
                    std::memcpy(t_dlopen_path, local.c_str(), local.size() + 1);
                    *file = t_dlopen_path;
                    served = true;
                }
            } catch (...) {
            }
        }
        if (served)
            guard->stats().served(CallKind::dlopen);
        else
            guard->stats().forwarded(CallKind::dlopen, path);
    }
    return reinterpret_cast<void*>(REAL(dlopen));
}

#if defined(__x86_64__)
asm(R"(
    .text
    .globl dlopen
    .type dlopen, @function
    .p2align 4
dlopen:
    .cfi_startproc
    endbr64
    pushq %rdi
    .cfi_adjust_cfa_offset 8
    pushq %rsi
    .cfi_adjust_cfa_offset 8
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    leaq 16(%rsp), %rdi
    call pyimport_dlopen_prepare
    addq $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq %rsi
    .cfi_adjust_cfa_offset -8
    popq %rdi
    .cfi_adjust_cfa_offset -8
    jmp *%rax
    .cfi_endproc
    .size dlopen, .-dlopen
)");
#elif defined(__aarch64__)
// Not exercised by the tests on this x86_64 machine.
asm(R"(
    .text
    .globl dlopen
    .type dlopen, %function
    .p2align 2
dlopen:
    .cfi_startproc
    stp x29, x30, [sp, #-32]!
    .cfi_def_cfa_offset 32
    .cfi_offset 29, -32
    .cfi_offset 30, -24
    mov x29, sp
    str x0, [sp, #16]
    str x1, [sp, #24]
    add x0, sp, #16
    bl pyimport_dlopen_prepare
    mov x16, x0
    ldr x0, [sp, #16]
    ldr x1, [sp, #24]
    ldp x29, x30, [sp], #32
    .cfi_def_cfa_offset 0
    .cfi_restore 29
    .cfi_restore 30
    br x16
    .cfi_endproc
    .size dlopen, .-dlopen
)");
#else
#error "the dlopen trampoline (wrap_dl.cpp) is written for x86_64 and aarch64 only"
#endif

PYIMPORT_EXPORT char* dlerror(void) {
    char* message = REAL(dlerror)();
    const char* root = mirror_root();
    if (!message || !root) return message;
    size_t root_length = std::strlen(root);
    if (!std::strstr(message, root)) return message;
    // Every occurrence of the mirror's root goes; what follows it is the path.
    size_t out = 0;
    for (const char* at = message; *at && out + 1 < sizeof t_dlerror;) {
        if (std::strncmp(at, root, root_length) == 0 && at[root_length] == '/') {
            at += root_length;
            continue;
        }
        t_dlerror[out++] = *at++;
    }
    t_dlerror[out] = '\0';
    return t_dlerror;
}

PYIMPORT_EXPORT int dladdr(const void* address, Dl_info* info) {
    int found = REAL(dladdr)(address, info);
    if (found && info) info->dli_fname = unmirrored(info->dli_fname);
    return found;
}

PYIMPORT_EXPORT int dladdr1(const void* address, Dl_info* info, void** extra, int flags) {
    int found = REAL(dladdr1)(address, info, extra, flags);
    if (found && info) info->dli_fname = unmirrored(info->dli_fname);
    return found;
}

PYIMPORT_EXPORT int dlinfo(void* handle, int request, void* argument) {
    int result = REAL(dlinfo)(handle, request, argument);
    if (result == 0 && request == RTLD_DI_ORIGIN && argument) {
        char* origin = static_cast<char*>(argument);
        const char* real = unmirrored(origin);
        if (real != origin) std::memmove(origin, real, std::strlen(real) + 1);
    }
    return result;
}
