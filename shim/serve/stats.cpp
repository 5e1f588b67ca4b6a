#include "serve/stats.hpp"

#include "base/log.hpp"
#include "base/real.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <gnu/libc-version.h>
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
    if (t.count++ == 0) t.caller = describe_caller(mirror_root_);
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

std::vector<uint64_t> count_values(const Stats& stats) {
    const int kinds = static_cast<int>(CallKind::count);
    CallCounts c = stats.counts();
    std::vector<uint64_t> values(2 * kinds);
    for (int k = 0; k < kinds; ++k) {
        values[k] = c.served[k];
        values[kinds + k] = c.forwarded[k];
    }
    return values;
}

std::string top_forwarded_text(const Stats& stats) {
    std::string text;
    for (const auto& r : stats.top_forwarded(10))
        text += std::to_string(r.count) + "\t" + r.path + "\t" + r.caller + "\n";
    return text;
}

std::vector<std::string> summary_lines(const JobSummary& s) {
    std::vector<std::string> lines;
    char line[512];
    std::snprintf(line, sizeof line,
                  "snapshot of %u prefixes: %u entries, %.1f MiB, shared with %d ranks in %.3f s",
                  s.prefixes, s.entries, s.image_bytes / 1048576.0, s.ranks, s.start_seconds);
    lines.emplace_back(line);
    if (s.not_cached_files > 0) {
        std::snprintf(line, sizeof line, "not cached (over PYIMPORT_MAX_BYTES): %u files, %.1f MiB",
                      s.not_cached_files, s.not_cached_bytes / 1048576.0);
        lines.emplace_back(line);
    }
    const int kinds = static_cast<int>(CallKind::count);
    uint64_t served = 0, forwarded = 0;
    std::string by_kind;
    for (int k = 0; k < kinds && s.counts.size() == size_t(2 * kinds); ++k) {
        served += s.counts[k];
        forwarded += s.counts[kinds + k];
        char part[96];
        std::snprintf(part, sizeof part, " %s %" PRIu64 "/%" PRIu64,
                      call_kind_name(static_cast<CallKind>(k)), s.counts[k], s.counts[kinds + k]);
        by_kind += part;
    }
    lines.push_back("all ranks: " + std::to_string(served) + " calls served, " +
                    std::to_string(forwarded) + " forwarded (served/forwarded:" + by_kind + ")");
    // Every rank sent "count\tpath\tcaller" lines; merge by path.
    struct Row {
        uint64_t count = 0;
        std::string caller;
    };
    std::unordered_map<std::string, Row> rows;
    for (const std::string& text : s.tops) {
        size_t pos = 0;
        while (pos < text.size()) {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos) end = text.size();
            std::string row = text.substr(pos, end - pos);
            pos = end + 1;
            size_t t1 = row.find('\t');
            size_t t2 = t1 == std::string::npos ? t1 : row.find('\t', t1 + 1);
            if (t2 == std::string::npos) continue;
            Row& r = rows[row.substr(t1 + 1, t2 - t1 - 1)];
            r.count += std::strtoull(row.c_str(), nullptr, 10);
            if (r.caller.empty()) r.caller = row.substr(t2 + 1);
        }
    }
    std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
        return a.second.count != b.second.count ? a.second.count > b.second.count
                                                : a.first < b.first;
    });
    if (!sorted.empty()) lines.emplace_back("most forwarded paths (count, path, asked by):");
    for (size_t i = 0; i < sorted.size() && i < 10; ++i) {
        std::snprintf(line, sizeof line, "  %8" PRIu64 "  ", sorted[i].second.count);
        lines.push_back(line + sorted[i].first + "  " + sorted[i].second.caller);
    }
    return lines;
}

std::string describe_caller(std::string_view mirror_root) {
    Dl_info self{};
    REAL(dladdr)(reinterpret_cast<void*>(&describe_caller), &self);
    // libc, found from a function of its own that nobody interposes: `&fopen`
    // would be this library's own wrapper (so libc's frames were never
    // skipped), and REAL(fopen) may be another preloaded tool's.
    Dl_info libc{};
    REAL(dladdr)(reinterpret_cast<void*>(&gnu_get_libc_version), &libc);
    void* ips[32];
    int depth = unw_backtrace(ips, 32);
    for (int i = 0; i < depth; ++i) {
        Dl_info info{};
        if (!REAL(dladdr)(ips[i], &info)) continue;
        if (info.dli_fbase == self.dli_fbase || info.dli_fbase == libc.dli_fbase) continue;
        char buf[512];
        std::string_view lib = info.dli_fname ? info.dli_fname : "?";
        // A library loaded from the node-local mirror: its filesystem name.
        if (!mirror_root.empty() && lib.size() > mirror_root.size() &&
            lib.starts_with(mirror_root) && lib[mirror_root.size()] == '/')
            lib.remove_prefix(mirror_root.size());
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
