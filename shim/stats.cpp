#include "stats.hpp"

#include "log.hpp"

#include <algorithm>
#include <cstdio>
#include <dlfcn.h>
#include <string_view>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

namespace pyimport {

const char* call_kind_name(CallKind kind) {
    static const char* const names[] = {
#define PYIMPORT_KIND_NAME(name) #name,
        PYIMPORT_CALL_KINDS(PYIMPORT_KIND_NAME)
#undef PYIMPORT_KIND_NAME
    };
    return names[static_cast<int>(kind)];
}

void Stats::forwarded(CallKind kind, const char* path) {
    forwarded_[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed);
    PYIMPORT_LOG(LogLevel::trace, "forward %s %s", call_kind_name(kind), path ? path : "(null)");
    if (!record_paths_ || !path) return;
    std::lock_guard lock(mutex_);
    if (paths_.size() >= 100000 && !paths_.count(path)) return; // bound the memory
    Tally& t = paths_[path];
    if (t.count++ == 0) t.caller = describe_caller();
}

CallCounts Stats::counts() const {
    CallCounts c{};
    for (int i = 0; i < static_cast<int>(CallKind::count); ++i) {
        c.served[i] = served_[i].load(std::memory_order_relaxed);
        c.forwarded[i] = forwarded_[i].load(std::memory_order_relaxed);
    }
    return c;
}

std::vector<Stats::PathRecord> Stats::top_forwarded(size_t n) const {
    std::vector<PathRecord> out;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [path, t] : paths_)
            out.push_back({path, t.count, t.caller});
    }
    std::sort(out.begin(), out.end(), [](const PathRecord& a, const PathRecord& b) {
        return a.count != b.count ? a.count > b.count : a.path < b.path;
    });
    if (out.size() > n) out.resize(n);
    return out;
}

std::string describe_caller() {
    Dl_info self{};
    dladdr(reinterpret_cast<void*>(&describe_caller), &self);
    Dl_info libc{};
    dladdr(reinterpret_cast<void*>(&fopen), &libc);
    void* ips[32];
    int depth = unw_backtrace(ips, 32);
    for (int i = 0; i < depth; ++i) {
        Dl_info info{};
        if (!dladdr(ips[i], &info)) continue;
        if (info.dli_fbase == self.dli_fbase || info.dli_fbase == libc.dli_fbase) continue;
        char buf[512];
        std::string_view lib = info.dli_fname ? info.dli_fname : "?";
        if (info.dli_sname) {
            auto offset = static_cast<char*>(ips[i]) - static_cast<char*>(info.dli_saddr);
            std::snprintf(buf, sizeof buf, "%.*s:%s+0x%tx", static_cast<int>(lib.size()),
                          lib.data(), info.dli_sname, offset);
        } else {
            auto offset = static_cast<char*>(ips[i]) - static_cast<char*>(info.dli_fbase);
            std::snprintf(buf, sizeof buf, "%.*s+0x%tx", static_cast<int>(lib.size()), lib.data(),
                          offset);
        }
        return buf;
    }
    return "?";
}

} // namespace pyimport
