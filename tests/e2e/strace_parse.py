"""Parsing strace output (stdlib only; used by strace_count.py and env_trace.py).

The traces are written by `strace -ff -qq -y -o DIR/trace ...`: one file per
thread or process, one call per line, path arguments quoted and, thanks to
-y, file-descriptor arguments and results followed by <their path>.
"""

import os
import re

# Syscalls whose string arguments are path names: name -> indices of the
# quoted-string arguments that are paths (0-based among the quoted strings).
PATH_SYSCALLS = {
    "open": (0,), "openat": (0,), "openat2": (0,), "creat": (0,),
    "stat": (0,), "lstat": (0,), "newfstatat": (0,), "fstatat64": (0,), "statx": (0,),
    "access": (0,), "faccessat": (0,), "faccessat2": (0,),
    "readlink": (0,), "readlinkat": (0,),
    "statfs": (0,), "chdir": (0,), "truncate": (0,),
    "getxattr": (0,), "lgetxattr": (0,), "listxattr": (0,), "llistxattr": (0,),
    "mkdir": (0,), "mkdirat": (0,), "rmdir": (0,), "unlink": (0,), "unlinkat": (0,),
    "rename": (0, 1), "renameat": (0, 1), "renameat2": (0, 1),
    "link": (0, 1), "linkat": (0, 1), "symlink": (1,), "symlinkat": (1,),
    "chmod": (0,), "fchmodat": (0,), "chown": (0,), "lchown": (0,), "fchownat": (0,),
    "utime": (0,), "utimes": (0,), "utimensat": (0,), "futimesat": (0,),
    "mknod": (0,), "mknodat": (0,), "inotify_add_watch": (0,),
    "execve": (0,), "execveat": (0,), "name_to_handle_at": (0,),
}
# *at syscalls: the dirfd is the first argument.
AT_SYSCALLS = {n for n in PATH_SYSCALLS if n.endswith("at") or n.endswith("at2") or n in
               ("statx", "readlinkat", "utimensat", "name_to_handle_at", "execveat")}
STAT_CALLS = ("stat", "lstat", "newfstatat", "fstatat64", "statx")

LINE_RE = re.compile(r"^(?P<name>[a-z_0-9]+)\((?P<rest>.*)$")
QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?')
FD_RE = re.compile(r"(?<![\w<])(?:-?\d+|AT_FDCWD)<([^<>]*)>")
RESULT_RE = re.compile(r"\)\s+=\s+(-?\d+|0x[0-9a-fA-F]+|\?)(?:<([^<>]*)>)?(?:\s+(E[A-Z0-9]+))?")
EXECVE_OK_RE = re.compile(r"\)\s+=\s+0\s*$")
SO_RE = re.compile(r"\.so(\.\d+)*$")


class Call:
    """One parsed syscall line: `source` says which trace it came from (a
    thread id or a trace file's name)."""
    __slots__ = ("source", "lineno", "name", "line", "paths", "errno")

    def __init__(self, source, lineno, name, line, paths, errno):
        self.source, self.lineno, self.name, self.line = source, lineno, name, line
        self.paths, self.errno = paths, errno


def unescape(s):
    """A quoted strace string's text (C escapes: \\n, \\ooo, \\xhh ...)."""
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = s[i + 1] if i + 1 < len(s) else ""
        if n in "01234567" and n:
            m = re.match(r"[0-7]{1,3}", s[i + 1:])
            out.append(chr(int(m.group(0), 8)))
            i += 1 + len(m.group(0))
        elif n == "x":
            out.append(chr(int(s[i + 2:i + 4], 16)))
            i += 4
        else:
            out.append({"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f"}.get(n, n))
            i += 2
    return "".join(out)


def parse_line(line, cwd, relative_dirfd_ok=True):
    """-> (name, [(absolute path, via)], errno, clone) or None.

    via is "arg" for a path-name argument, "fd" for a path decoded by -y from
    a file-descriptor argument (also for AT_EMPTY_PATH calls).  A relative
    path of an *at call is taken relative to its dirfd's path, or to cwd when
    there is none (or, with relative_dirfd_ok=False, when that path is not
    absolute).  clone is (child id, CLONE_THREAD given) for a successful
    clone/clone3/fork/vfork, else None."""
    m = LINE_RE.match(line)
    if not m:
        return None
    name, rest = m.group("name"), m.group("rest")
    res = None
    for res in RESULT_RE.finditer(rest):
        pass
    errno = res.group(3) if res else None
    args_text = rest[:res.start()] if res else rest
    quoted = [unescape(q.group(1)) for q in QUOTED_RE.finditer(args_text)]
    fd_paths = FD_RE.findall(QUOTED_RE.sub('""', args_text))
    paths = []
    if name in PATH_SYSCALLS:
        for idx in PATH_SYSCALLS[name]:
            if idx >= len(quoted):
                continue
            p = quoted[idx]
            if p == "":
                # AT_EMPTY_PATH (glibc's fstat): the call is about the dirfd itself
                if fd_paths and fd_paths[0].startswith("/"):
                    paths.append((os.path.normpath(fd_paths[0]), "fd"))
                continue
            if not p.startswith("/"):
                base = cwd
                if name in AT_SYSCALLS and fd_paths and (
                        relative_dirfd_ok or fd_paths[0].startswith("/")):
                    base = fd_paths[0]
                p = os.path.join(base, p)
            paths.append((os.path.normpath(p), "arg"))
    else:
        paths.extend((os.path.normpath(p), "fd") for p in fd_paths if p.startswith("/"))
    clone = None
    if name in ("clone", "clone3", "fork", "vfork") and res and res.group(1).isdigit():
        clone = (int(res.group(1)), "CLONE_THREAD" in rest)
    return name, paths, errno, clone


def parse_trace(path, cwd, relative_dirfd_ok=True):
    """-> [(line number, line, parse_line's result)] of one trace file's calls
    after the last successful execve (in a process's main trace file the ones
    before are those of the program that exec'd the traced one, e.g. env)."""
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    start = 0
    for i, line in enumerate(lines):
        if line.startswith("execve(") and EXECVE_OK_RE.search(line):
            start = i + 1
    out = []
    for i, line in enumerate(lines[start:], start + 1):
        p = parse_line(line, cwd, relative_dirfd_ok)
        if p:
            out.append((i, line, p))
    return out


def is_loader_dir_probe(name, path, prev, prev_path):
    """Whether call `name` on `path` is glibc's open_path probing a directory:
    a stat of DIR right after a failed open (call prev, of prev_path) of
    DIR/lib*.so*."""
    return (name in STAT_CALLS and prev is not None and prev.errno == "ENOENT"
            and prev.name in ("open", "openat") and prev_path is not None
            and bool(SO_RE.search(os.path.basename(prev_path)))
            and os.path.dirname(prev_path) == path)
