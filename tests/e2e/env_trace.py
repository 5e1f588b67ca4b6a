"""Counting a rank's file system calls on an environment's paths, from strace
output (stdlib only; used by environments.py).

A rank runs as

    strace -ff -qq -y --seccomp-bpf -o DIR/trace.R -e trace=%file,getdents64 \\
        env [LD_PRELOAD=...] PYTHON ARGS...

so DIR/trace.R.<tid> holds one file per thread of the interpreter (env's own
calls come before the interpreter's execve and are skipped).  Every call whose
path argument (or, thanks to -y, the path of its descriptor or dirfd argument)
lies under one of the case's roots is listed; it is *counted* unless it is one
of the exceptions below.

Roots have a kind:
  "prefix"  an interpreter's installation (/usr, a pyenv version, a venv):
            everything under it is the environment's except the parts that are
            not Python's: <prefix>/{lib,lib64,local/lib}/<name> where name does
            not start with "python" (system and interpreter shared libraries:
            libpython, libm, /usr/lib/x86_64-linux-gnu, glibc-hwcaps, locale,
            gconv...), and <prefix>/{share,include,etc,sbin,libexec,games,src}.
            <prefix>/lib/pythonX.Y, pythonXY.zip, python3/dist-packages,
            <prefix>/bin/..., <prefix>/pyvenv.cfg ... are counted.
  "tree"    a directory of the case (script directory, source tree): all of it.
  "file"    one file (a zip on sys.path).

Not counted (listed as "excluded" with the reason):
  * execve/execveat;
  * the components of a realpath() whose result is not counted: a run of
    consecutive readlink calls ending on such a path (MPI's UCX resolving its
    plug-ins in /usr/lib/x86_64-linux-gnu reads /usr and /usr/lib);
  * MPI_CONFIG_FILES: the MPI library's configuration lookups relative to
    the working directory (./ucx.conf, made by the shim's MPI initialisation);
  * the dynamic loader's directory probe: a stat of DIR right after a failed
    open of DIR/lib*.so* (glibc's open_path);
  * after the marker path (the application stats it right after its barrier),
    calls on the case's "expected" paths (the data file, and the directory it
    lists).
"""

import collections
import glob
import os
import re

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
AT_SYSCALLS = {n for n in PATH_SYSCALLS if n.endswith("at") or n.endswith("at2") or n in
               ("statx", "readlinkat", "utimensat", "name_to_handle_at", "execveat")}
STAT_CALLS = ("stat", "lstat", "newfstatat", "fstatat64", "statx")

LINE_RE = re.compile(r"^(?P<name>[a-z_0-9]+)\((?P<rest>.*)$")
QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?')
FD_RE = re.compile(r"(?<![\w<])(?:-?\d+|AT_FDCWD)<([^<>]*)>")
RESULT_RE = re.compile(r"\)\s+=\s+(-?\d+|0x[0-9a-fA-F]+|\?)(?:<([^<>]*)>)?(?:\s+(E[A-Z0-9]+))?")
SO_RE = re.compile(r"\.so(\.\d+)*$")

# Files the MPI library (initialised by the shim) looks for in the working
# directory, which may be a case's directory (python -m pkg).
MPI_CONFIG_FILES = {"ucx.conf": "MPI's UCX: ./ucx.conf in the working directory"}

NOT_PYTHON_TOP = ("share", "include", "etc", "sbin", "libexec", "games", "src")
LIB_DIRS = ("lib", "lib64", "local/lib")


def unescape(s):
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


class Call:
    __slots__ = ("file", "lineno", "name", "line", "paths", "errno")

    def __init__(self, file, lineno, name, line, paths, errno):
        self.file, self.lineno, self.name, self.line = file, lineno, name, line
        self.paths, self.errno = paths, errno


def parse_line(line, cwd):
    """-> (name, [absolute paths], errno) or None."""
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
                # AT_EMPTY_PATH (glibc's fstat): the call is about the dirfd
                if fd_paths and fd_paths[0].startswith("/"):
                    paths.append(os.path.normpath(fd_paths[0]))
                continue
            if not p.startswith("/"):
                base = cwd
                if name in AT_SYSCALLS and fd_paths and fd_paths[0].startswith("/"):
                    base = fd_paths[0]
                p = os.path.join(base, p)
            paths.append(os.path.normpath(p))
    else:
        paths.extend(os.path.normpath(p) for p in fd_paths if p.startswith("/"))
    return name, paths, errno


def is_under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def root_of(path, roots):
    """-> (root, kind, reason-if-not-the-environment's) or None."""
    best = None
    for root, kind in roots:
        if kind == "file":
            if path == root:
                return root, kind, None
            continue
        if is_under(path, root) and (best is None or len(root) > len(best[0])):
            best = (root, kind)
    if best is None:
        return None
    root, kind = best
    if kind == "prefix" and path != root:
        rel = os.path.relpath(path, root)
        top = rel.split("/")[0]
        if top in NOT_PYTHON_TOP:
            return root, kind, "not Python's: <prefix>/%s" % top
        for lib in LIB_DIRS:
            if rel.startswith(lib + "/"):
                name = rel[len(lib) + 1:].split("/")[0]
                if not name.startswith("python"):
                    return root, kind, "not Python's: <prefix>/%s/%s" % (lib, name)
    return root, kind, None


def load(trace_files, cwd):
    """-> list of (file, [Call]) with env's part of the main thread skipped."""
    out = []
    for tf in trace_files:
        with open(tf, errors="replace") as f:
            lines = f.read().splitlines()
        start = 0
        for i, line in enumerate(lines):
            if line.startswith("execve(") and re.search(r"\)\s+=\s+0\s*$", line):
                start = i + 1
        calls = []
        for i, line in enumerate(lines[start:], start + 1):
            p = parse_line(line, cwd)
            if p:
                calls.append(Call(os.path.basename(tf), i, p[0], line, p[1], p[2]))
        out.append((tf, calls))
    return out


class RankCount:
    def __init__(self):
        self.counted = []    # (call, path, root)
        self.excluded = []   # (call, path, reason)
        self.ncalls = 0
        self.nfiles = 0
        self.marker_seen = False

    def by_path(self, entries=None, limit=None):
        """'path  [syscall counts]' lines, most calls first."""
        entries = self.counted if entries is None else entries
        groups = collections.OrderedDict()
        for c, p, _ in entries:
            key = c.name + ("=" + c.errno if c.errno else "")
            groups.setdefault(p, collections.Counter())[key] += 1
        items = sorted(groups.items(), key=lambda kv: -sum(kv[1].values()))
        lines = []
        for p, cnt in items[:limit]:
            calls = " ".join("%s%s" % (n, "x%d" % k if k > 1 else "") for n, k in cnt.items())
            lines.append("%4d  %s  [%s]" % (sum(cnt.values()), p, calls))
        if limit is not None and len(items) > limit:
            lines.append("      ... %d more paths" % (len(items) - limit))
        return lines


def count_rank(trace_dir, rank, cwd, roots, marker=None, expected_after_marker=()):
    files = sorted(glob.glob(os.path.join(trace_dir, "trace.%d.*" % rank)))
    rc = RankCount()
    rc.nfiles = len(files)
    if not files:
        return None
    for tf, calls in load(files, cwd):
        # glibc's realpath() walks a path one readlink per component: a run of
        # consecutive readlink calls is about its last path (MPI's UCX resolving
        # its plug-ins under /usr/lib/x86_64-linux-gnu reads /usr and /usr/lib)
        run_final = [None] * len(calls)
        i = 0
        while i < len(calls):
            j = i
            while j < len(calls) and calls[j].name == "readlink" and calls[j].paths:
                j += 1
            for k in range(i, j):
                run_final[k] = calls[j - 1].paths[0]
            i = max(j, i + 1)
        prev = None
        after_marker = False
        for ci, c in enumerate(calls):
            rc.ncalls += 1
            if marker and marker in c.paths:
                after_marker = True
                rc.marker_seen = True
            for p in c.paths:
                r = root_of(p, roots)
                if r is None:
                    continue
                root, kind, not_python = r
                reason = None
                if c.name in ("execve", "execveat"):
                    reason = "execve"
                elif not_python:
                    reason = not_python
                elif run_final[ci] is not None and run_final[ci] != p and (
                        root_of(run_final[ci], roots) is None
                        or root_of(run_final[ci], roots)[2] is not None):
                    reason = "realpath() walk to an uncounted path"
                elif (c.name in STAT_CALLS and prev is not None and prev.errno == "ENOENT"
                      and prev.name in ("open", "openat") and prev.paths
                      and SO_RE.search(os.path.basename(prev.paths[0]))
                      and os.path.dirname(prev.paths[0]) == p):
                    reason = "loader: directory probe after a failed library open"
                elif os.path.basename(p) in MPI_CONFIG_FILES:
                    reason = MPI_CONFIG_FILES[os.path.basename(p)]
                elif after_marker and p in expected_after_marker:
                    reason = "expected: after the barrier"
                if reason:
                    rc.excluded.append((c, p, reason))
                else:
                    rc.counted.append((c, p, root))
            prev = c
    return rc


def excluded_summary(rc, limit=8):
    cnt = collections.Counter(reason for _, _, reason in rc.excluded)
    return ["%5d  %s" % (n, r) for r, n in cnt.most_common(limit)]
