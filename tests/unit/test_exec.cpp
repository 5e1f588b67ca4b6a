// Whether an exec would start a program (startup/exec_check.hpp), against
// what the real exec says.
#include "startup/exec_check.hpp"

#include <cerrno>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pyimport;

namespace {
// What the real execve/execvp does with `file`: true if the program started.
bool really_starts(const char* file, bool search, const char* path) {
    pid_t pid = fork();
    if (pid == 0) {
        if (path)
            setenv("PATH", path, 1);
        else
            unsetenv("PATH");
        char* argv[] = {const_cast<char*>("x"), const_cast<char*>("-c"),
                        const_cast<char*>("exit 0"), nullptr};
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        search ? execvp(file, argv) : execv(file, argv);
        _exit(errno == ENOENT ? 101 : errno == EACCES ? 102 : 103);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) < 101;
}

void expect_same(const char* file, bool search, const char* path) {
    cr_expect_eq(exec_would_start(file, search, path), really_starts(file, search, path),
                 "%s (search %d, PATH %s)", file, search, path ? path : "(unset)");
}
} // namespace

Test(exec, agrees_with_the_real_exec) {
    char dir[] = "/tmp/pyimport-unit-exec-XXXXXX";
    cr_assert(mkdtemp(dir));
    std::string d(dir);
    for (auto [name, mode] : {std::pair{"script", 0755}, std::pair{"plain", 0644}}) {
        std::string p = d + "/" + name;
        int fd = open(p.c_str(), O_WRONLY | O_CREAT, mode);
        cr_assert(write(fd, "#!/bin/sh\nexit 0\n", 17) == 17);
        close(fd);
        chmod(p.c_str(), mode);
    }
    for (const char* file : {"/bin/sh", "/etc/hostname", "/nonexistent/program", "/bin", ""})
        expect_same(file, false, nullptr);
    expect_same((d + "/script").c_str(), false, nullptr);
    expect_same((d + "/plain").c_str(), false, nullptr);
    expect_same("sh", false, nullptr);
    expect_same("sh", true, nullptr);
    expect_same("sh", true, "/nonexistent:/bin");
    expect_same("script", true, dir);
    expect_same("plain", true, dir);
    expect_same("no-such-program-here", true, "/bin:/usr/bin");
    cr_expect(chdir(dir) == 0);
    expect_same("script", true, ":/nonexistent"); // an empty entry: the working directory
    cr_expect(chdir("/") == 0);
    std::string cmd = "rm -rf " + d;
    cr_expect(system(cmd.c_str()) == 0);
}

Test(exec, fexecve_needs_an_executable_file) {
    int sh = open("/bin/sh", O_RDONLY | O_CLOEXEC);
    int text = open("/etc/hostname", O_RDONLY | O_CLOEXEC);
    cr_expect(fexec_would_start(sh));
    cr_expect_not(fexec_would_start(text));
    cr_expect_not(fexec_would_start(-1));
    close(sh);
    close(text);
}
