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

import strace_parse as SP
from strace_parse import is_loader_dir_probe, parse_trace

# Files the MPI library (initialised by the shim) looks for in the working
# directory, which may be a case's directory (python -m pkg).
MPI_CONFIG_FILES = {"ucx.conf": "MPI's UCX: ./ucx.conf in the working directory"}

NOT_PYTHON_TOP = ("share", "include", "etc", "sbin", "libexec", "games", "src")
LIB_DIRS = ("lib", "lib64", "local/lib")


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
        calls = [SP.Call(os.path.basename(tf), i, name, line, [p for p, _ in paths], errno)
                 for i, line, (name, paths, errno, _) in
                 parse_trace(tf, cwd, relative_dirfd_ok=False)]
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
                elif is_loader_dir_probe(
                        c.name, p, prev, prev.paths[0] if prev is not None and prev.paths else None):
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
