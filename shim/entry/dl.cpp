// dlopen, dlsym, dlerror, dladdr, dladdr1, dlinfo.
//
// dlopen is caller-relative: glibc takes the caller from its return address
// (a bare name is searched with the caller's RUNPATH, and the caller's
// namespace is used). A C++ wrapper that calls the real dlopen would make
// this library the caller, so dlopen is an assembly trampoline: it asks
// pyimport_dlopen_prepare which path to load, then jumps (not calls) to the
// real dlopen, which sees the original return address.
//
// dlsym is caller-relative too (RTLD_NEXT): an assembly trampoline as well.
// It answers one thing itself: a handle's MPI life-cycle function (ctypes'
// CDLL("libmpi.so.40").MPI_Init) in a process where the shim initialised MPI
// is the shim's entry point, as a direct call would be (entry/mpi.cpp).
//
// The loader names a library loaded from the node-local mirror by its mirror
// path; dlerror, dladdr, dladdr1 and dlinfo(RTLD_DI_ORIGIN) give the path on
// the filesystem instead, as without the shim.
#include "entry/wrap.hpp"
#include "loader/audit_link.hpp"
#include "loader/libraries.hpp"
#include "loader/search.hpp"
#include "startup/world_model.hpp"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <pthread.h>

using namespace pyimport;

namespace {

// Each thread's path given to the loader and its dlerror text, on the heap:
// as initial-exec TLS they would not fit the static TLS glibc keeps for
// preloaded libraries once LD_AUDIT is set (about 1.5 KiB: every process
// would fail to start). Freed when the thread ends.
struct ThreadBuffers {
    char dlopen_path[PATH_MAX + 512];
    char dlerror[4096];
};
thread_local ThreadBuffers* t_buffers __attribute__((tls_model("initial-exec"))) = nullptr;
pthread_key_t g_buffers_key;
pthread_once_t g_buffers_once = PTHREAD_ONCE_INIT;

ThreadBuffers* thread_buffers() {
    if (t_buffers) return t_buffers;
    pthread_once(&g_buffers_once, [] { pthread_key_create(&g_buffers_key, std::free); });
    t_buffers = static_cast<ThreadBuffers*>(std::malloc(sizeof(ThreadBuffers)));
    if (t_buffers) pthread_setspecific(g_buffers_key, t_buffers);
    return t_buffers;
}

// The root of the mirror this process (or its parent, in a fork child) loads
// from, or nullptr: names the loader gives that start with it are given
// without it.
const std::string* mirror_root() {
    Libraries* libraries = inherited_libraries();
    return libraries ? &libraries->root() : nullptr;
}

// The filesystem path for a name the loader knows, or `name` itself.
const char* unmirrored(const char* name) {
    // The audit library's copies, loaded before main.
    AuditInterface* audit = audit_interface();
    if (const char* original = audit_original(audit, name)) return original;
    const std::string* root = mirror_root();
    if (!root || !name) return name;
    size_t length = root->size();
    if (std::strncmp(name, root->c_str(), length) == 0 && name[length] == '/') return name + length;
    return name;
}

// Makes the real dlopen be given `local`; false if it is too long to.
bool give(const std::string& local, const char** file) {
    ThreadBuffers* buffers = thread_buffers();
    if (!buffers || local.size() >= sizeof buffers->dlopen_path) return false;
    std::memcpy(buffers->dlopen_path, local.c_str(), local.size() + 1);
    *file = buffers->dlopen_path;
    return true;
}

} // namespace

extern "C" __attribute__((visibility("hidden"), used)) void*
pyimport_dlopen_prepare(const char** file, int mode) {
    const char* path = opaque(*file);
    Guard guard;
    // Nothing may leave this function but the real dlopen's address.
    try {
        Libraries* inherited = guard ? nullptr : inherited_libraries();
        if (inherited && path && path[0] == '/' && !t_inside_shim) {
            // A fork child of an active process, where the shim is inert: what
            // the parent loaded from the mirror keeps its name (or the loader
            // would load the file a second time); nothing else changes.
            std::string local;
            if (inherited->loaded_from_mirror(path, local)) give(local, file);
        } else if (guard && path && path[0] == '/') {
            Libraries* libraries = guard.libraries();
            std::string local;
            if (libraries && libraries->redirect(path, mode, local) && give(local, file))
                guard->stats().served(CallKind::dlopen);
            else
                guard->stats().forwarded(CallKind::dlopen, path);
        }
    } catch (...) {
        *file = path; // as given
    }
    return reinterpret_cast<void*>(REAL(dlopen));
}

// The real dlsym's address to jump to, or nullptr with the answer in *answer.
extern "C" __attribute__((visibility("hidden"), used)) void*
pyimport_dlsym_prepare(void* handle, const char* name, void** answer) {
    // Pseudo-handles (RTLD_DEFAULT, RTLD_NEXT) find the entry points anyway.
    if (handle != RTLD_DEFAULT && handle != RTLD_NEXT && name &&
        (std::strncmp(name, "MPI_", 4) == 0 || std::strncmp(name, "PMPI_", 5) == 0) &&
        !t_inside_shim) {
        void* entry = mpi_entry_point(name);
        if (entry && world_model_defines(handle, name)) {
            *answer = entry;
            return nullptr;
        }
    }
    return reinterpret_cast<void*>(REAL(dlsym));
}

#if defined(__x86_64__)
asm(R"(
    .pushsection .text
    .globl dlsym
    .type dlsym, @function
    .p2align 4
dlsym:
    .cfi_startproc
    endbr64
    pushq %rdi
    .cfi_adjust_cfa_offset 8
    pushq %rsi
    .cfi_adjust_cfa_offset 8
    subq $24, %rsp
    .cfi_adjust_cfa_offset 24
    movq %rsp, %rdx
    call pyimport_dlsym_prepare
    testq %rax, %rax
    jz 1f
    addq $24, %rsp
    .cfi_remember_state
    .cfi_adjust_cfa_offset -24
    popq %rsi
    .cfi_adjust_cfa_offset -8
    popq %rdi
    .cfi_adjust_cfa_offset -8
    jmp *%rax
1:
    .cfi_restore_state
    movq (%rsp), %rax
    addq $24, %rsp
    .cfi_adjust_cfa_offset -24
    popq %rsi
    .cfi_adjust_cfa_offset -8
    popq %rdi
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size dlsym, .-dlsym
    .popsection
)");
#elif defined(__aarch64__)
asm(R"(
    .pushsection .text
    .globl dlsym
    .type dlsym, %function
    .p2align 2
dlsym:
    .cfi_startproc
    hint #34
    stp x29, x30, [sp, #-48]!
    .cfi_def_cfa_offset 48
    .cfi_offset 29, -48
    .cfi_offset 30, -40
    mov x29, sp
    str x0, [sp, #16]
    str x1, [sp, #24]
    add x2, sp, #32
    bl pyimport_dlsym_prepare
    cbz x0, 1f
    mov x16, x0
    ldr x0, [sp, #16]
    ldr x1, [sp, #24]
    .cfi_remember_state
    ldp x29, x30, [sp], #48
    .cfi_def_cfa_offset 0
    .cfi_restore 29
    .cfi_restore 30
    br x16
1:
    .cfi_restore_state
    ldr x0, [sp, #32]
    ldp x29, x30, [sp], #48
    .cfi_def_cfa_offset 0
    .cfi_restore 29
    .cfi_restore 30
    ret
    .cfi_endproc
    .size dlsym, .-dlsym
    .popsection
)");
#endif

#if defined(__x86_64__)
asm(R"(
    .pushsection .text
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
    .popsection
)");
#elif defined(__aarch64__)
// Not exercised by the tests on this x86_64 machine.
asm(R"(
    .pushsection .text
    .globl dlopen
    .type dlopen, %function
    .p2align 2
dlopen:
    .cfi_startproc
    hint #34 // bti c: callers reach it through the PLT's indirect branch
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
    .popsection
)");
#else
#error "the dlopen trampoline (wrap_dl.cpp) is written for x86_64 and aarch64 only"
#endif

PYIMPORT_EXPORT char* dlerror(void) {
    char* message = REAL(dlerror)();
    AuditInterface* audit = audit_interface();
    const std::string* mirror = mirror_root();
    std::string_view roots[2] = {mirror ? std::string_view(*mirror) : std::string_view(),
                                 audit ? std::string_view(audit->root) : std::string_view()};
    auto in_message = [&](std::string_view root) {
        return !root.empty() && std::strstr(message, std::string(root).c_str());
    };
    if (!message || !(in_message(roots[0]) || in_message(roots[1]))) return message;
    // Every occurrence of a root goes; what follows it is the path.
    size_t out = 0;
    ThreadBuffers* buffers = thread_buffers();
    if (!buffers) return message;
    char* text = buffers->dlerror;
    for (const char* at = message; *at && out + 1 < sizeof buffers->dlerror;) {
        bool skipped = false;
        for (std::string_view root : roots)
            if (!skipped && !root.empty() && std::strncmp(at, root.data(), root.size()) == 0 &&
                at[root.size()] == '/') {
                at += root.size();
                skipped = true;
                // A search that found nothing (loader/search.hpp): the name alone.
                size_t missing = std::strlen(kMissingDirectory);
                if (std::strncmp(at, kMissingDirectory, missing) == 0) at += missing;
            }
        if (!skipped) text[out++] = *at++;
    }
    text[out] = '\0';
    return text;
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
