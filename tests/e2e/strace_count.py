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
  * twice more with PYIMPORT_MAX_BYTES=20M (E2E_STRACE_BUDGET: 20M or 2M)
    and one fresh PYIMPORT_PROFILE directory, a program's first job (the
    full walk; the smallest files of every tree are cached, used or not) and
    its second (the profile's walk: the budget goes to the files the first
    job used): same output, rank 0's line on what did not fit, a smaller
    snapshot in the second job, and ranks 1..N-1 make at most
    BUDGET_SHARES[budget] of the calls under the prefixes they make without
    the shim (20M: 5% in the second job, the issue's bound; the others bound
    a regression).
"""

import collections
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402
import strace_parse as SP  # noqa: E402

NRANKS = 4
# The budget runs: PYIMPORT_MAX_BYTES, and the most the other ranks may make
# of their calls without the shim, in a program's (first job, second job).
# Measured (Debian 12, numpy+scipy, 4 ranks; docs/limits.md): 20M 22.8% and
# 2.9%, 2M 50.8% and 33.3%; 20M's first job 31.2% once python3-matplotlib
# (pyimport report --plot) and its dependencies are in the same
# dist-packages, whose small files then share the budget. A first job caches
# the smallest files of every tree, used or not (a fifth of them are); a
# later job only the used ones,
# but at 2M those (44 MiB, 13 of them bytecode) mostly do not fit: every
# used file left out is 8 or 9 calls per rank. Only the second job at 20M
# is held to the 5% of the issue; the other bounds catch a regression.
BUDGET = os.environ.get("E2E_STRACE_BUDGET", "20M")
BUDGET_SHARES = {"20M": (0.40, 0.05), "2M": (0.60, 0.40)}
STRACE_TIMEOUT = int(os.environ.get("E2E_STRACE_TIMEOUT", "280"))

IMPORT_SUFFIXES = (".py", ".pyc", ".pth")


def under(path, prefixes):
    for p in prefixes:
        if path == p or path.startswith(p + "/"):
            return p
    return None


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
    is_so = bool(SP.SO_RE.search(base))
    if is_so and (call.name in ("open", "openat", "openat2") or via == "fd"):
        # the dynamic loader opening / reading / mapping a shared object
        return "loader:.so", False
    if SP.is_loader_dir_probe(call.name, path, prev,
                              prev.paths[0][0] if prev is not None and prev.paths else None):
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
        parsed = SP.parse_trace(path, cwd)
    except FileNotFoundError:
        return None, None
    for i, line, (name, paths, errno, clone) in parsed:
        if clone:
            clones.append(("clone", clone[0], clone[1]))
        calls.append(SP.Call(tid, i, name, line, paths, errno))
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


def strace_run(args, wd, label, shim, prefixes_env, max_bytes=None, profile=None):
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
        # earlier runs; off makes every run a full walk (the budget runs
        # pass a directory of their own: `profile`).
        # PYIMPORT_CONTENT with .txt: the workload reads one data file of its
        # own (pyimport_e2e_prepkg/data.txt); data files are forwarded by
        # default, and the claim checked is "no call of any kind".
        inner += ["LD_PRELOAD=" + args.shim, "PYIMPORT_STATS=1", "PYIMPORT_RECHECK=0",
                  "PYIMPORT_SERVE_LOCAL=1",
                  "PYIMPORT_PROFILE=" + (profile or "off"),
                  "PYIMPORT_CONTENT=.py,.pyc,.pth,.txt"]
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


def snapshot_entries(err):
    """Entries of rank 0's 'snapshot of N prefixes: M entries' line, or None."""
    for line in err.splitlines():
        m = re.match(r"pyimport: snapshot of \d+ prefixes: (\d+) entries", line)
        if m:
            return int(m.group(1))
    return None


def check_budget(chk, args, wd, env, prefixes, base, ba):
    """A small PYIMPORT_MAX_BYTES, in a program's first job and its second
    (one fresh profile directory): the files that do not fit (the large
    libraries first) are read from the filesystem by every rank, everything
    else (the metadata included) is served, and the other ranks make at most
    BUDGET_SHARES[BUDGET] of their plain calls."""
    label = "PYIMPORT_MAX_BYTES=%s" % BUDGET
    shares = BUDGET_SHARES.get(BUDGET)
    if not chk.ok(shares is not None, "E2E_STRACE_BUDGET=%s has bounds (one of %s)"
                  % (BUDGET, ", ".join(BUDGET_SHARES))):
        return
    profile = wd.sub("profile-" + BUDGET)
    entries = []
    for job, bound in zip(("first job", "second job"), shares):
        what = "%s, %s" % (label, job)
        shim, traces, facts = strace_run(args, wd, "strace-shim-%s-%s" % (BUDGET, job[:-4]),
                                         True, env, BUDGET, profile)
        L.compare_runs(chk, base, shim, NRANKS, "(under strace, %s)" % what, check_stderr=False)
        chk.ok(any("did not fit in " + label in l for l in shim.rank_err(0).splitlines()),
               "rank 0 reports the files that did not fit (%s)" % what, shim.rank_err(0))
        entries.append(snapshot_entries(shim.rank_err(0)))
        sa = analyse(traces, facts, prefixes)
        report("with shim, " + what, sa)
        for r in range(1, NRANKS):
            plain = len(ba[r]["import"]) + len(ba[r]["allowed"]) if ba[r] else 0
            got = len(sa[r]["import"]) + len(sa[r]["allowed"]) if sa[r] else None
            share = got / max(plain, 1) if got is not None else 1.0
            chk.ok(got is not None and share <= bound,
                   "rank %d with %s: %s calls under the prefixes, %.1f%% of its %d without the "
                   "shim (at most %g%%)" % (r, what, got, 100 * share, plain, 100 * bound),
                   "\n".join(by_path((sa[r]["import"] + sa[r]["allowed"]) if sa[r] else [])[:60]))
    chk.ok(None not in entries and entries[1] < entries[0],
           "the second job's snapshot is the profile's, smaller than the first's (%s entries)"
           % " then ".join(str(e) for e in entries))


def main():
    args = L.parse_args(__doc__.split("\n\n")[0])
    chk = L.Checker("e2e strace_count")
    L.prerequisites(chk, args)
    chk.ok(bool(shutil.which("strace")), "strace is installed")
    if chk.failures:
        chk.finish()
    wd = L.Workdir(args.keep, "pyimport-strace-")
    try:
        env, wdir = L.read_only_workload_env(wd, "pythonpath", NRANKS, args.python)
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
                detail = "\n".join("[%s] trace.%d:%d  %s" % (cat, c.source, c.lineno, c.line[:240])
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
