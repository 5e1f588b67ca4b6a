#include "startup/exec_check.hpp"

#include "base/real.hpp"
#include "base/text.hpp"

#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace pyimport {
namespace {

// Formats registered with binfmt_misc (qemu, wine, jar ...) may run
// anything: then every executable file counts as one that starts.
bool other_formats_registered() {
    DIR* dir = REAL(opendir)("/proc/sys/fs/binfmt_misc");
    if (!dir) return false;
    bool found = false;
    while (struct dirent64* e = REAL(readdir64)(dir))
        if (e->d_name[0] != '.' && std::strcmp(e->d_name, "register") != 0 &&
            std::strcmp(e->d_name, "status") != 0)
            found = true;
    REAL(closedir)(dir);
    return found;
}

// What the kernel runs: ELF, "#!" scripts; with `shell_fallback` (execvp
// hands a file the kernel refuses with ENOEXEC to /bin/sh) anything.
bool runnable_format(int fd, bool shell_fallback) {
    if (shell_fallback) return true;
    char magic[4] = {};
    ssize_t n = pread(fd, magic, sizeof magic, 0);
    if (n >= 2 && magic[0] == '#' && magic[1] == '!') return true;
    if (n == 4 && std::memcmp(magic,
                              "\x7f"
                              "ELF",
                              4) == 0)
        return true;
    return other_formats_registered();
}

bool executable_fd(int fd, bool shell_fallback) {
    struct stat st {};
    return REAL(fstat)(fd, &st) == 0 && S_ISREG(st.st_mode) &&
           (st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) != 0 && runnable_format(fd, shell_fallback);
}

bool executable_file(const char* candidate, bool shell_fallback) {
    if (REAL(faccessat)(AT_FDCWD, candidate, X_OK, AT_EACCESS) != 0) return false;
    int fd = REAL(open)(candidate, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true; // executable but unreadable: the kernel may still run it
    bool ok = executable_fd(fd, shell_fallback);
    REAL(close)(fd);
    return ok;
}

} // namespace

bool exec_would_start(const char* file, bool search, const char* path) {
    if (!file || file[0] == '\0') return false;
    std::string_view name(file);
    if (!search || name.find('/') != std::string_view::npos) return executable_file(file, search);
    for (std::string_view dir : split(path ? path : "/bin:/usr/bin", ':')) {
        // An empty entry is the working directory, as for execvp.
        std::string candidate = dir.empty() ? std::string(".") : std::string(dir);
        candidate += '/';
        candidate += name;
        if (executable_file(candidate.c_str(), true)) return true;
    }
    return false;
}

bool fexec_would_start(int fd) {
    return executable_fd(fd, false);
}

} // namespace pyimport
