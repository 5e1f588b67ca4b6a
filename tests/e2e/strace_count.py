#!/usr/bin/env python3
"""Count the import file traffic that reaches the kernel, per rank, under strace.

    strace_count.py --shim build/shim/libpyimport.so --mpiexec mpiexec \\
                    --python /usr/bin/python3

Runs the workload (WORKLOAD_NO_WRITE=1: the part that writes modules into the
writable prefix is skipped) as

    mpiexec -n 4 strace -f -ff -qq -y -o TRACEDIR/trace \\
        -e trace=%file,%desc,getdents64,%process \\
        env [LD_PRELOAD=libpyimport.so ... PYIMPORT_PROFILE=off] PYTHON workload.py

once without and once with the shim (LD_PRELOAD is set only on the Python
process, through env; strace itself is not preloaded).  PYIMPORT_PROFILE=off:
what is counted is the full snapshot (a profile holds only the paths rank 0
used, so the other ranks would forward the modules only they import).  Each
rank's workload writes its pid to WORKLOAD_OUT/pid.<rank>; the trace files of
that pid and of the threads it (transitively) cloned with CLONE_THREAD are the
rank's; fork, vfork and spawned child processes (the workload's subprocesses)
are excluded.

A syscall "touches the cached prefixes" when a path argument (or, thanks to
-y, the path of an fd argument) lies under one of the interpreter's module
directories (stdlib, lib-dynload, site/dist-packages, PYTHONPATH -- obtained
from the interpreter's sys.path).  It is counted as import traffic when the
path is a .py/.pyc/.pth file, a directory, or a name that does not exist
(ENOENT).  Not counted (but listed in the breakdown): the dynamic loader's
work on shared objects -- any access to a *.so / *.so.N path, and the
directory stat the loader makes right after failing to open a library in a
directory -- and other regular files (data files, stat of a .so by Python).

Assertions:
  * without the shim every rank makes plenty of such calls (proves the
    counter works);
  * with the shim ranks 1..N-1 make none, and no call of any other kind
    under the prefixes either (the loader's included: extension modules and
    their libraries come from node-local copies); rank 0 (which builds the
    snapshot) may make many; all ranks' calls divided by rank 0's is at most
    1.05 (without the shim it is N);
  * per-rank stdout with the shim under strace equals the run without it;
  * rank 0's PYIMPORT_STATS=1 summary is present;
  * once more with PYIMPORT_MAX_BYTES=20M (E2E_STRACE_BUDGET; most bytes,
    the large libraries first, are then read from the filesystem by every
    rank): same output, rank 0's line on what did not fit, and ranks 1..N-1
    make at most half the calls under the prefixes they make without the
    shim (BUDGET_SHARE).
"""

import collections
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402

NRANKS = 4
# The budget run: PYIMPORT_MAX_BYTES, and the most the other ranks may make
# of their calls without the shim. Measured (Debian 12, numpy+scipy, full
# walk): 22.8% at 20M, 50.8% at 2M; the smallest files of every tree are
# cached, used or not, and the large libraries are loaded from the
# filesystem. This bounds a regression; it is not the 5% a profile's
# smaller walk would need.
BUDGET = os.environ.get("E2E_STRACE_BUDGET", "20M")
BUDGET_SHARE = 0.5
STRACE_TIMEOUT = int(os.environ.get("E2E_STRACE_TIMEOUT", "280"))

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

LINE_RE = re.compile(r"^(?P<name>[a-z_0-9]+)\((?P<rest>.*)$")
QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?')
FD_RE = re.compile(r"(?<![\w<])(?:-?\d+|AT_FDCWD)<([^<>]*)>")
RESULT_RE = re.compile(r"\)\s+=\s+(-?\d+|0x[0-9a-fA-F]+|\?)(?:<([^<>]*)>)?(?:\s+(E[A-Z0-9]+))?")
SO_RE = re.compile(r"\.so(\.\d+)*$")
IMPORT_SUFFIXES = (".py", ".pyc", ".pth")


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
        if n in "01234567":
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
    __slots__ = ("tid", "lineno", "name", "line", "paths", "errno")

    def __init__(self, tid, lineno, name, line, paths, errno):
        self.tid, self.lineno, self.name, self.line = tid, lineno, name, line
        self.paths, self.errno = paths, errno


def parse_line(line, cwd):
    """-> (name, [(absolute path, via)], errno, clone info) or None.
    via is "arg" for a path-name argument, "fd" for a path decoded by -y from
    a file-descriptor argument (also for AT_EMPTY_PATH calls)."""
    m = LINE_RE.match(line)
    if not m:
        return None
    name = m.group("name")
    rest = m.group("rest")
    res = None
    for res in RESULT_RE.finditer(rest):
        pass
    errno = res.group(3) if res else None
    args_text = rest[:res.start()] if res else rest
    quoted = [unescape(q.group(1)) for q in QUOTED_RE.finditer(args_text)]
    unquoted = QUOTED_RE.sub('""', args_text)
    fd_paths = FD_RE.findall(unquoted)
    paths = []
    if name in PATH_SYSCALLS:
        for idx in PATH_SYSCALLS[name]:
            if idx >= len(quoted):
                continue
            p = quoted[idx]
            if p == "":
                # AT_EMPTY_PATH: the call is about the dirfd itself
                if fd_paths and fd_paths[0].startswith("/"):
                    paths.append((os.path.normpath(fd_paths[0]), "fd"))
                continue
            if not p.startswith("/"):
                base = cwd
                if name in AT_SYSCALLS and fd_paths:
                    base = fd_paths[0]
                p = os.path.join(base, p)
            paths.append((os.path.normpath(p), "arg"))
    else:
        paths.extend((os.path.normpath(p), "fd") for p in fd_paths if p.startswith("/"))
    clone = None
    if name in ("clone", "clone3", "fork", "vfork") and res and res.group(1).isdigit():
        clone = (int(res.group(1)), "CLONE_THREAD" in rest)
    return name, paths, errno, clone


def under(path, prefixes):
    for p in prefixes:
        if path == p or path.startswith(p + "/"):
            return p
    return None


STAT_CALLS = ("stat", "lstat", "newfstatat", "fstatat64", "statx")


def classify(call, path, via, prev, prefixes):
    """Category of one (call, path) under a prefix -> (category, counts)."""
    cat, counts = _classify(call, path, via, prev)
    if counts and via == "arg" and os.path.islink(path):
        # e.g. Debian's /usr/lib/python3.11/sitecustomize.py -> /etc/python3.11/...
        target = os.path.realpath(path)
        if not under(target, prefixes):
            cat += " (symlink to %s, outside the prefixes)" % target
    return cat, counts


def _classify(call, path, via, prev):
    base = os.path.basename(path)
    is_so = bool(SO_RE.search(base))
    if is_so and (call.name in ("open", "openat", "openat2") or via == "fd"):
        # the dynamic loader opening / reading / mapping a shared object
        return "loader:.so", False
    if prev is not None and prev.errno == "ENOENT" and prev.name in ("open", "openat") \
            and prev.paths and SO_RE.search(os.path.basename(prev.paths[0][0])) \
            and os.path.dirname(prev.paths[0][0]) == path and call.name in STAT_CALLS:
        # glibc's open_path: after failing to open DIR/libX.so it stats DIR
        return "loader:dir-probe", False
    if call.errno == "ENOENT":
        return "absent", True
    if os.path.isdir(path):
        return "directory", True
    if base.endswith(IMPORT_SUFFIXES):
        return base[base.rfind("."):], True
    if is_so:
        return "python:stat-of-.so", False
    return "other-file", False


def load_trace(trace_dir, tid, cwd):
    """Parse trace.<tid>; for the main pid skip everything before the execve
    of the interpreter (those are env's own syscalls)."""
    path = os.path.join(trace_dir, "trace.%d" % tid)
    calls, clones = [], []
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None, None
    start = 0
    for i, line in enumerate(lines):
        if line.startswith("execve(") and line.rstrip().endswith("= 0"):
            start = i + 1
    for i, line in enumerate(lines[start:], start + 1):
        p = parse_line(line, cwd)
        if not p:
            continue
        name, paths, errno, clone = p
        if clone:
            clones.append(("clone", clone[0], clone[1]))
        calls.append(Call(tid, i, name, line, paths, errno))
    return calls, clones


def analyse(trace_dir, facts_dir, prefixes):
    """-> {rank: {"tids": [...], "import": [(cat, call, path)], "allowed": [...]}}"""
    result = {}
    for r in range(NRANKS):
        txt = L.read(os.path.join(facts_dir, "pid.%d" % r)).split(None, 1)
        if len(txt) < 2:
            result[r] = None
            continue
        pid, cwd = int(txt[0]), txt[1].strip()
        per_tid = {}
        todo = [pid]
        while todo:
            t = todo.pop()
            if t in per_tid:
                continue
            calls, clones = load_trace(trace_dir, t, cwd)
            if calls is None:
                per_tid[t] = []
                continue
            per_tid[t] = calls
            todo.extend(c[1] for c in clones if c[2])     # threads only
        imp, allowed = [], []
        for t, calls in per_tid.items():
            prev = None
            for c in calls:
                for p, via in c.paths:
                    if under(p, prefixes):
                        cat, counts = classify(c, p, via, prev, prefixes)
                        (imp if counts else allowed).append((cat, c, p))
                prev = c
        result[r] = {"pid": pid, "tids": sorted(per_tid), "import": imp, "allowed": allowed,
                     "ncalls": sum(len(v) for v in per_tid.values())}
    return result


def breakdown(entries):
    cnt = collections.Counter((cat, c.name) for cat, c, p in entries)
    return ["%6d  %-20s %s" % (n, cat, name) for (cat, name), n in sorted(cnt.items())]


def by_path(entries):
    """One line per (category, path): the syscalls made on it, with counts."""
    groups = collections.OrderedDict()
    for cat, c, p in entries:
        key = (cat, p)
        groups.setdefault(key, collections.Counter())[c.name + ("=ENOENT" if c.errno == "ENOENT" else "")] += 1
    lines = []
    for (cat, p), cnt in groups.items():
        calls = " ".join("%s%s" % (n, "x%d" % k if k > 1 else "") for n, k in cnt.items())
        lines.append("%-20s %s  [%s]" % (cat, p, calls))
    return lines


def get_prefixes(args, env):
    code = ("import sys, os, site, sysconfig\n"
            "s = set()\n"
            "for p in sys.path[1:]:\n"
            "    if p and not p.endswith('.zip'): s.add(os.path.normpath(os.path.abspath(p)))\n"
            "for k in ('stdlib', 'platstdlib', 'purelib', 'platlib'):\n"
            "    s.add(os.path.normpath(sysconfig.get_paths()[k]))\n"
            "for p in site.getsitepackages(): s.add(os.path.normpath(p))\n"
            "print('\\n'.join(sorted(s)))\n")
    r = L.run("python: list module directories", [args.python, "-c", code], env, cwd="/")
    prefixes = [p for p in r.out.splitlines() if p.strip()]
    # longest first so that the reported prefix is the most specific one
    return sorted(set(prefixes), key=len, reverse=True)


def strace_run(args, wd, label, shim, prefixes_env, max_bytes=None):
    env = dict(prefixes_env)
    facts = wd.sub("facts-" + label)
    traces = wd.sub("traces-" + label)
    env["WORKLOAD_OUT"] = facts
    inner = ["env"]
    if shim:
        # The workload starts child processes; with the default
        # PYIMPORT_RECHECK=1 each directory used after a child ended is
        # compared once with the filesystem (README, Limits). This count is
        # of the snapshot alone.
        # PYIMPORT_PROFILE=off: the claim checked is that the full snapshot
        # leaves ranks 1..N-1 nothing to ask the filesystem. A profile holds
        # only what rank 0 used, so with one the other ranks forward the
        # paths only they use (their own pyimport_e2e_pre_rN modules: 12
        # calls each), and whether a profile is there would depend on
        # earlier runs; off makes every run a full walk.
        # PYIMPORT_CONTENT with .txt: the workload reads one data file of its
        # own (pyimport_e2e_prepkg/data.txt); data files are forwarded by
        # default, and the claim checked is "no call of any kind".
        inner += ["LD_PRELOAD=" + args.shim, "PYIMPORT_STATS=1", "PYIMPORT_RECHECK=0",
                  "PYIMPORT_PROFILE=off", "PYIMPORT_CONTENT=.py,.pyc,.pth,.txt"]
        if max_bytes:
            inner.append("PYIMPORT_MAX_BYTES=" + max_bytes)
    inner += [args.python, L.WORKLOAD]
    prog = ["strace", "-f", "-ff", "-qq", "-y", "-o", os.path.join(traces, "trace"),
            "-e", "trace=%file,%desc,getdents64,%process"] + inner
    res = L.mpirun(label, args, wd, NRANKS, prog, env, timeout=STRACE_TIMEOUT)
    return res, traces, facts


def report(label, analysis):
    print("\n  %s: calls under the cached prefixes per rank" % label)
    print("    rank    pid  threads  traced-calls  import-traffic  loader/other")
    for r in range(NRANKS):
        a = analysis[r]
        if a is None:
            print("    %4d  (no pid file)" % r)
            continue
        print("    %4d %6d %8d %13d %15d %13d" % (r, a["pid"], len(a["tids"]), a["ncalls"],
                                                len(a["import"]), len(a["allowed"])))


def check_budget(chk, args, wd, env, prefixes, base, ba):
    """A small PYIMPORT_MAX_BYTES: the files that do not fit (the large
    libraries first) are read from the filesystem by every rank, yet the
    other ranks still make at most BUDGET_SHARE of their plain calls
    (everything else, the metadata included, is served)."""
    label = "PYIMPORT_MAX_BYTES=%s" % BUDGET
    shim, traces, facts = strace_run(args, wd, "strace-shim-" + BUDGET, True, env, BUDGET)
    L.compare_runs(chk, base, shim, NRANKS, "(under strace, %s)" % label, check_stderr=False)
    chk.ok(any("did not fit in " + label in l for l in shim.rank_err(0).splitlines()),
           "rank 0 reports the files that did not fit (%s)" % label, shim.rank_err(0))
    sa = analyse(traces, facts, prefixes)
    report("with shim, " + label, sa)
    for r in range(1, NRANKS):
        plain = len(ba[r]["import"]) + len(ba[r]["allowed"]) if ba[r] else 0
        got = len(sa[r]["import"]) + len(sa[r]["allowed"]) if sa[r] else None
        share = got / max(plain, 1) if got is not None else 1.0
        chk.ok(got is not None and share <= BUDGET_SHARE,
               "rank %d with %s: %s calls under the prefixes, %.1f%% of its %d without the "
               "shim (at most %d%%)" % (r, label, got, 100 * share, plain, 100 * BUDGET_SHARE),
               "\n".join(by_path((sa[r]["import"] + sa[r]["allowed"]) if sa[r] else [])[:60]))


def main():
    args = L.parse_args(__doc__.split("\n\n")[0])
    chk = L.Checker("e2e strace_count")
    L.prerequisites(chk, args)
    chk.ok(bool(shutil.which("strace")), "strace is installed")
    if chk.failures:
        chk.finish()
    wd = L.Workdir(args.keep, "pyimport-strace-")
    try:
        env = L.base_env()
        wdir = wd.sub("pythonpath")
        L.populate_prefix(wdir, NRANKS, args.python)
        env["PYTHONPATH"] = wdir
        env["WORKLOAD_WRITABLE_PREFIX"] = wdir
        env["WORKLOAD_NO_WRITE"] = "1"
        prefixes = get_prefixes(args, env)
        print("  cached prefixes:\n" + L.indent("\n".join(prefixes)))
        chk.ok(wdir in prefixes and any(p.endswith("lib-dynload") for p in prefixes),
               "prefix list includes PYTHONPATH and lib-dynload", "\n".join(prefixes))

        base, btr, bfacts = strace_run(args, wd, "strace-noshim", False, env)
        chk.ok(base.rc == 0 and not base.timed_out, "workload under strace without shim succeeds",
               base.describe())
        L.sanity_rank_output(chk, base, NRANKS)
        ba = analyse(btr, bfacts, prefixes)
        report("without shim", ba)
        for r in range(NRANKS):
            n = len(ba[r]["import"]) if ba[r] else 0
            chk.ok(n >= 100, "without shim rank %d makes >= 100 import-traffic calls "
                   "(counter sanity, got %d)" % (r, n))

        shim, str_, sfacts = strace_run(args, wd, "strace-shim", True, env)
        L.compare_runs(chk, base, shim, NRANKS, "(under strace)", check_stderr=False)
        summary = [l for l in shim.rank_err(0).splitlines() if l.startswith("pyimport:")]
        chk.ok(bool(summary), "rank 0 printed the PYIMPORT_STATS summary under strace",
               shim.describe())
        if summary:
            print("  rank 0 summary:\n" + L.indent("\n".join(summary)))
        sa = analyse(str_, sfacts, prefixes)
        report("with shim", sa)

        for r in range(NRANKS):
            a = sa[r]
            if not chk.ok(a is not None, "rank %d pid file and trace found" % r):
                continue
            print("\n  with shim, rank %d (pid %d, threads %s):" % (r, a["pid"], a["tids"]))
            print("    import traffic by category/syscall:")
            print(L.indent("\n".join(breakdown(a["import"])) or "(none)", "      "))
            print("    remaining (allowed) calls by category/syscall:")
            print(L.indent("\n".join(breakdown(a["allowed"])) or "(none)", "      "))
            if r > 0:
                print("    remaining (allowed) calls, by path:")
                print(L.indent("\n".join(by_path(a["allowed"])) or "(none)", "      "))
                shown = a["import"][:60]
                detail = "\n".join("[%s] trace.%d:%d  %s" % (cat, c.tid, c.lineno, c.line[:240])
                                   for cat, c, p in shown)
                if len(a["import"]) > len(shown):
                    detail += "\n... %d more; by path:\n" % (len(a["import"]) - len(shown))
                    detail += "\n".join(by_path(a["import"])[:150])
                chk.ok(not a["import"], "rank %d: zero import-traffic calls under the cached "
                       "prefixes with the shim (got %d)" % (r, len(a["import"])), detail)
        def ratio(analysis):
            counts = [len(a["import"]) + len(a["allowed"]) if a else 0 for a in analysis.values()]
            return sum(counts) / max(counts[0], 1), counts

        base_ratio, base_counts = ratio(ba)
        shim_ratio, shim_counts = ratio(sa)
        print("\n  calls of any kind under the prefixes per rank: without shim %s (all/rank 0 = "
              "%.3f), with shim %s (all/rank 0 = %.3f)" % (base_counts, base_ratio, shim_counts,
                                                          shim_ratio))
        for r in range(1, NRANKS):
            allowed = sa[r]["allowed"] if sa[r] else None  # no trace: fails, never passes
            chk.ok(allowed == [], "rank %d: zero calls of any kind under the cached prefixes "
                   "with the shim, the loader's included (got %s)"
                   % (r, "no trace" if allowed is None else len(allowed)),
                   "\n".join(by_path(allowed or [])[:100]))
        chk.ok(shim_ratio <= 1.05, "with the shim, all ranks' calls under the prefixes / rank 0's "
               "<= 1.05 (got %.3f)" % shim_ratio)
        if ba[0] and sa[0]:
            print("\n  rank 0 import traffic: %d without shim, %d with shim (it builds the snapshot);"
                  " ranks 1..%d with shim: %s" % (len(ba[0]["import"]), len(sa[0]["import"]),
                                                 NRANKS - 1,
                                                 [len(sa[r]["import"]) if sa[r] else None
                                                  for r in range(1, NRANKS)]))
        check_budget(chk, args, wd, env, prefixes, base, ba)
    finally:
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
