#include "serve/stats.hpp"

#include "base/log.hpp"
#include "base/real.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dlfcn.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <string_view>
#include <sys/random.h>
#include <unistd.h>
#include <unordered_map>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

namespace pyimport {

namespace {
// A path or caller in a "count\tpath\tcaller" row: its tabs, newlines and
// backslashes escaped (a path may hold any byte but '\0').
std::string row_field(std::string_view text) {
    std::string out;
    for (char c : text)
        out += c == '\\' ? "\\\\" : c == '\t' ? "\\t" : c == '\n' ? "\\n" : std::string(1, c);
    return out;
}
std::string row_field_text(std::string_view field) {
    std::string out;
    for (size_t i = 0; i < field.size(); ++i) {
        if (field[i] != '\\' || i + 1 == field.size()) {
            out += field[i];
            continue;
        }
        char next = field[++i];
        out += next == 't' ? '\t' : next == 'n' ? '\n' : next;
    }
    return out;
}

struct ForwardedRow {
    std::string path;
    uint64_t count = 0;
    std::string caller;
};
// The most forwarded paths over every rank's text, merged by path: the
// first 20.
std::vector<ForwardedRow> merged_tops(const std::vector<std::string>& tops) {
    std::unordered_map<std::string, ForwardedRow> rows;
    for (const std::string& text : tops) {
        size_t pos = 0;
        while (pos < text.size()) {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos) end = text.size();
            std::string_view row(text.data() + pos, end - pos);
            pos = end + 1;
            size_t t1 = row.find('\t');
            size_t t2 = t1 == std::string::npos ? t1 : row.find('\t', t1 + 1);
            if (t2 == std::string::npos) continue;
            std::string path = row_field_text(row.substr(t1 + 1, t2 - t1 - 1));
            ForwardedRow& r = rows[path];
            r.path = path;
            r.count += std::strtoull(std::string(row.substr(0, t1)).c_str(), nullptr, 10);
            if (r.caller.empty()) r.caller = row_field_text(row.substr(t2 + 1));
        }
    }
    std::vector<ForwardedRow> sorted;
    for (auto& [path, row] : rows)
        sorted.push_back(std::move(row));
    std::sort(sorted.begin(), sorted.end(), [](const ForwardedRow& a, const ForwardedRow& b) {
        return a.count != b.count ? a.count > b.count : a.path < b.path;
    });
    if (sorted.size() > 20) sorted.resize(20);
    return sorted;
}
} // namespace

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
        text +=
            std::to_string(r.count) + "\t" + row_field(r.path) + "\t" + row_field(r.caller) + "\n";
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
    std::vector<ForwardedRow> rows = merged_tops(s.tops);
    if (!rows.empty()) lines.emplace_back("most forwarded paths (count, path, asked by):");
    for (size_t i = 0; i < rows.size() && i < 10; ++i) {
        std::snprintf(line, sizeof line, "  %8" PRIu64 "  ", rows[i].count);
        // Escaped as in the rows: a path's newline must not end the line.
        lines.push_back(line + row_field(rows[i].path) + "  " + row_field(rows[i].caller));
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

namespace {
// After the call counts, each rank's StartFacts (exit_values).
enum ExitValue { kNodeLeader, kServedRank, kImageBytesHeld, kLibraryBytes, kExitValues };
constexpr size_t kKinds = static_cast<size_t>(CallKind::count);

// Calls served and forwarded over the kinds of count_values() (the first
// line of a rank's exit_text(), "S F").
std::pair<uint64_t, uint64_t> totals_of(const std::vector<uint64_t>& counts) {
    uint64_t served = 0, forwarded = 0;
    for (size_t k = 0; k < kKinds && counts.size() >= 2 * kKinds; ++k) {
        served += counts[k];
        forwarded += counts[kKinds + k];
    }
    return {served, forwarded};
}

// Not printf: the program's locale (Python's locale.setlocale) may make the
// decimal point a comma, which is no JSON.
void append_number(std::string& out, double value) {
    char buf[64];
    auto [end, error] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed, 6);
    out.append(buf, error == std::errc() ? end : buf);
}

// A fixed key order and two-space indentation: diffable, and greppable.
class JsonWriter {
  public:
    // `one_line`: the object's members on one line (a rank's, of thousands).
    void open(const char* key, char bracket, bool one_line = false) {
        item(key);
        out_ += bracket;
        ++depth_;
        first_ = true;
        one_line_ = one_line;
    }
    void close(char bracket) {
        --depth_;
        if (!first_ && !one_line_) newline();
        out_ += bracket;
        first_ = false;
        one_line_ = false;
    }
    void text(const char* key, std::string_view value) { item(key), out_ += json_string(value); }
    void number(const char* key, uint64_t value) { item(key), out_ += std::to_string(value); }
    void seconds(const char* key, double value) { item(key), append_number(out_, value); }
    std::string finish() { return std::move(out_) + "\n"; }

  private:
    void newline() {
        out_ += '\n';
        out_.append(2 * static_cast<size_t>(depth_), ' ');
    }
    void item(const char* key) {
        if (!first_) out_ += one_line_ ? ", " : ",";
        if (depth_ > 0 && !one_line_) newline();
        first_ = false;
        if (key) out_ += json_string(key) + ": ";
    }
    std::string out_;
    int depth_ = 0;
    bool first_ = true;
    bool one_line_ = false;
};

} // namespace

std::vector<uint64_t> exit_values(const Stats* stats, const StartFacts& facts) {
    std::vector<uint64_t> values = stats ? count_values(*stats) : std::vector<uint64_t>(2 * kKinds);
    values.resize(2 * kKinds + kExitValues);
    uint64_t* extra = values.data() + 2 * kKinds;
    extra[kNodeLeader] = facts.node_leader;
    extra[kServedRank] = stats != nullptr;
    extra[kImageBytesHeld] = facts.image_bytes_held;
    extra[kLibraryBytes] = facts.library_bytes;
    return values;
}

std::string exit_text(const Stats* stats) {
    if (!stats) return "0 0\n";
    auto [served, forwarded] = totals_of(count_values(*stats));
    return std::to_string(served) + " " + std::to_string(forwarded) + "\n" +
           top_forwarded_text(*stats);
}

void add_exit_values(JobSummary& s, const std::vector<uint64_t>& sums,
                     const std::vector<std::string>& texts) {
    s.counts.assign(2 * kKinds, 0);
    if (sums.size() == 2 * kKinds + kExitValues) {
        std::copy(sums.begin(), sums.begin() + 2 * kKinds, s.counts.begin());
        const uint64_t* extra = sums.data() + 2 * kKinds;
        s.nodes = extra[kNodeLeader];
        s.served_ranks = extra[kServedRank];
        s.image_bytes_on_nodes = extra[kImageBytesHeld];
        s.library_bytes_on_nodes = extra[kLibraryBytes];
    }
    s.tops.clear();
    s.rank_calls.clear();
    for (const std::string& text : texts) {
        size_t end = text.find('\n');
        std::string first = text.substr(0, end);
        unsigned long long served = 0, forwarded = 0;
        std::sscanf(first.c_str(), "%llu %llu", &served, &forwarded);
        s.rank_calls.emplace_back(served, forwarded);
        s.tops.push_back(end == std::string::npos ? std::string() : text.substr(end + 1));
    }
}

std::string json_string(std::string_view text) {
    std::string out = "\"";
    auto escape = [&](unsigned code) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", code);
        out += buf;
    };
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
            ++p;
        } else if (c == '\n') {
            out += "\\n", ++p;
        } else if (c == '\t') {
            out += "\\t", ++p;
        } else if (c < 0x20 || c == 0x7f) {
            escape(c), ++p;
        } else if (c < 0x80) {
            out += static_cast<char>(c), ++p;
        } else {
            // A well-formed UTF-8 sequence (no overlong forms, surrogates or
            // code points past U+10FFFF) is copied; any other byte escaped.
            size_t length = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
            bool ok = length > 0 && c <= 0xf4 && static_cast<size_t>(end - p) >= length;
            for (size_t i = 1; ok && i < length; ++i)
                ok = (p[i] & 0xc0) == 0x80;
            if (ok && length == 3) ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
            if (ok && length == 4) ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
            if (ok) {
                out.append(reinterpret_cast<const char*>(p), length);
                p += length;
            } else {
                escape(0xdc00 + c); // surrogateescape's U+DC80..U+DCFF
                ++p;
            }
        }
    }
    return out + "\"";
}

std::string summary_json(const JobSummary& s) {
    JsonWriter w;
    w.open(nullptr, '{');
    w.text("schema", "pyimport-stats/1");
    w.text("pyimport_version", PYIMPORT_VERSION);
    w.open("job", '{');
    w.text("id", s.job_id);
    w.text("host", s.host);
    w.text("executable", s.executable);
    w.seconds("started_at", s.start.started_at);
    w.number("ranks", static_cast<uint64_t>(s.ranks));
    w.number("served_ranks", s.served_ranks);
    w.number("nodes", s.nodes);
    w.close('}');
    w.open("snapshot", '{');
    w.number("roots", s.prefixes);
    w.open("directories", '[');
    for (const std::string& root : s.roots)
        w.text(nullptr, root);
    w.close(']');
    w.number("entries", s.entries);
    w.number("bytes", s.image_bytes);
    w.number("not_cached_files", s.not_cached_files);
    w.number("not_cached_bytes", s.not_cached_bytes);
    w.close('}');
    w.open("seconds", '{');
    w.seconds("start_up", s.start_seconds);
    w.seconds("mpi_load", s.start.mpi_load_seconds);
    w.seconds("mpi_init", s.start.mpi_init_seconds);
    w.seconds("walk", s.start.walk_seconds);
    w.seconds("status", s.start.status_seconds);
    w.seconds("broadcast", s.start.broadcast_seconds);
    w.seconds("node_sharing", s.start.node_seconds);
    w.seconds("library_copies", s.start.copy_seconds);
    w.seconds("hand_over", s.start.hand_over_seconds);
    w.close('}');
    auto [served, forwarded] = totals_of(s.counts);
    w.open("calls", '{');
    w.number("served", served);
    w.number("forwarded", forwarded);
    for (int side = 0; side < 2; ++side) {
        w.open(side == 0 ? "served_by_kind" : "forwarded_by_kind", '{');
        for (size_t k = 0; k < kKinds; ++k)
            w.number(call_kind_name(static_cast<CallKind>(k)),
                     s.counts.size() == 2 * kKinds ? s.counts[side * kKinds + k] : 0);
        w.close('}');
    }
    w.close('}');
    w.open("node_memory", '{');
    w.number("image_bytes", s.image_bytes_on_nodes);
    w.number("library_bytes", s.library_bytes_on_nodes);
    w.number("per_node_bytes",
             s.nodes ? (s.image_bytes_on_nodes + s.library_bytes_on_nodes) / s.nodes : 0);
    w.close('}');
    w.open("ranks", '[');
    for (size_t r = 0; r < s.rank_calls.size(); ++r) {
        w.open(nullptr, '{', true);
        w.number("rank", r);
        w.number("served", s.rank_calls[r].first);
        w.number("forwarded", s.rank_calls[r].second);
        w.close('}');
    }
    w.close(']');
    w.open("most_forwarded", '[');
    for (const ForwardedRow& row : merged_tops(s.tops)) {
        w.open(nullptr, '{', true);
        w.text("path", row.path);
        w.number("count", row.count);
        w.text("asked_by", row.caller);
        w.close('}');
    }
    w.close(']');
    w.close('}');
    return w.finish();
}

std::string job_id_from(const char* (*lookup)(const char*)) {
    auto get = [&](const char* name) -> std::string {
        const char* value = lookup(name);
        return value ? value : "";
    };
    if (std::string slurm = get("SLURM_JOB_ID"); !slurm.empty()) {
        std::string step = get("SLURM_STEP_ID");
        return step.empty() ? slurm : slurm + "." + step;
    }
    for (const char* name :
         {"PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID", "OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE"})
        if (std::string id = get(name); !id.empty()) return id;
    return "";
}

bool expand_stats_path(std::string_view pattern, const std::string& job_id, const std::string& host,
                       int pid, std::string& path, std::string& error) {
    path.clear();
    bool named = false; // by a job id or host name, which must not hold a '/'
    for (size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] != '%') {
            path += pattern[i];
            continue;
        }
        char next = i + 1 < pattern.size() ? pattern[++i] : '\0';
        if (next == 'j')
            path += job_id.empty() ? std::to_string(pid) : job_id, named |= !job_id.empty();
        else if (next == 'h')
            path += host, named = true;
        else if (next == 'p')
            path += std::to_string(pid);
        else if (next == '%')
            path += '%';
        else
            return error = "PYIMPORT_STATS_FILE=\"" + std::string(pattern) +
                           "\": % is followed by %j, %h, %p or %%",
                   false;
    }
    // An id or host name with a '/' would name another directory.
    if (named && (job_id.find('/') != std::string::npos || host.find('/') != std::string::npos))
        return error = "PYIMPORT_STATS_FILE: the job id or host name holds a '/'", false;
    if (path.empty()) return error = "PYIMPORT_STATS_FILE is empty", false;
    return true;
}

bool write_file_atomically(const std::string& path, std::string_view text, std::string& error) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (name.empty()) return error = path + ": names a directory", false;
    // A new file of this process's own: never one planted in a shared
    // directory (O_EXCL, no symlink followed), and a short name whatever the
    // target's.
    unsigned long long random = 0;
    if (getrandom(&random, sizeof random, GRND_NONBLOCK) != sizeof random)
        random = static_cast<unsigned long long>(std::time(nullptr)) ^ (uintptr_t)&random;
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, "/.pyimport-stats-%d-%016llx", static_cast<int>(getpid()),
                  random);
    std::string temporary = dir + suffix;
    int fd =
        REAL(open)(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return error = path + ": " + std::strerror(errno), false;
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = path + ": " + std::strerror(n < 0 ? errno : ENOSPC);
            REAL(close)(fd);
            REAL(unlink)(temporary.c_str());
            return false;
        }
        done += static_cast<size_t>(n);
    }
    bool closed = REAL(close)(fd) == 0;
    if (!closed || REAL(rename)(temporary.c_str(), path.c_str()) != 0) {
        error = path + ": " + std::strerror(errno);
        REAL(unlink)(temporary.c_str());
        return false;
    }
    return true;
}

} // namespace pyimport
