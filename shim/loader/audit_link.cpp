#include "loader/audit_link.hpp"

#include "base/real.hpp"
#include "loader/search.hpp"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

namespace pyimport {

namespace {

std::atomic<LibrarySearch*> g_search{nullptr};
std::atomic<EarlySearch*> g_early{nullptr};
std::atomic<int> g_search_pid{0};
std::atomic<AuditInterface*> g_audit{nullptr};

const char* resolve_for_audit(const char* name, const void* requester, void*) {
    // A fork child is a pass-through: its loader searches as usual.
    if (getpid() != g_search_pid.load(std::memory_order_relaxed)) return nullptr;
    if (LibrarySearch* search = g_search.load(std::memory_order_acquire))
        return search->resolve(name, requester);
    if (EarlySearch* early = g_early.load(std::memory_order_acquire))
        return early->resolve(name, requester);
    return nullptr;
}

} // namespace

AuditInterface* find_audit_interface() {
    auto* debug = reinterpret_cast<struct r_debug_extended*>(&_r_debug);
    if (!debug || debug->base.r_version < 2) return nullptr;
    for (; debug; debug = debug->r_next) {
        for (struct link_map* map = debug->base.r_map; map; map = map->l_next) {
            const char* name = map->l_name;
            const char* base = name ? std::strrchr(name, '/') : nullptr;
            base = base ? base + 1 : name;
            if (!base || std::strcmp(base, kAuditLibraryName) != 0) continue;
            // A link map is a handle, whatever its namespace.
            auto* audit = static_cast<AuditInterface*>(REAL(dlsym)(map, kAuditInterfaceSymbol));
            if (audit && audit->version == kAuditInterfaceVersion) return audit;
        }
    }
    return nullptr;
}

void remember_audit_interface() {
    g_audit.store(find_audit_interface(), std::memory_order_release);
}

AuditInterface* audit_interface() {
    return g_audit.load(std::memory_order_acquire);
}

void connect_audit(AuditInterface& audit, LibrarySearch* search, int pid) {
    g_search_pid.store(pid, std::memory_order_relaxed);
    g_search.store(search, std::memory_order_release);
    audit.resolve_context = nullptr;
    __atomic_store_n(&audit.resolve, &resolve_for_audit, __ATOMIC_RELEASE);
}

void disconnect_audit_early() {
    g_early.store(nullptr, std::memory_order_release);
}

void connect_audit_early(AuditInterface& audit, EarlySearch* early, int pid) {
    g_search_pid.store(pid, std::memory_order_relaxed);
    g_early.store(early, std::memory_order_release);
    audit.resolve_context = nullptr;
    __atomic_store_n(&audit.resolve, &resolve_for_audit, __ATOMIC_RELEASE);
}

std::string audit_summary(const AuditInterface& audit) {
    char line[512];
    switch (audit.role) {
    case AuditRole::off:
        return "the loader's audit library stayed off in this process";
    case AuditRole::alone:
        std::snprintf(line, sizeof line, "the loader's audit library shares nothing: %s",
                      audit.reason);
        return line;
    case AuditRole::leader:
        std::snprintf(line, sizeof line,
                      "the loader's audit library copied %u libraries (%.1f MiB) for this node",
                      audit.copied, static_cast<double>(audit.copied_bytes) / (1 << 20));
        return line;
    case AuditRole::follower:
        std::snprintf(line, sizeof line,
                      "the loader's audit library answered %u searches before main from the "
                      "node's copies",
                      audit.served);
        return line;
    }
    return "";
}

const char* audit_original(const AuditInterface* audit, const char* name) {
    if (!audit || !name || !audit->root[0]) return nullptr;
    size_t n = std::strlen(audit->root);
    if (std::strncmp(name, audit->root, n) != 0 || name[n] != '/') return nullptr;
    return name + n;
}

} // namespace pyimport
