#!/usr/bin/env python3
"""End-to-end checks of libpyimport.so against runs without it.

    run_workload.py --shim build/shim/libpyimport.so --mpiexec mpiexec \\
                    --python /usr/bin/python3 [SUBCOMMAND ...]

Subcommands (default: all):
  workload  mpiexec -n 4 python workload.py without and with LD_PRELOAD: per-rank
            stdout/stderr and exit codes identical; once more with
            PYIMPORT_STATS=1 (rank 0's stderr must hold the "pyimport:" summary
            with a non-zero "served" count, stdout still identical); and with a
            tiny PYIMPORT_MAX_BYTES and a narrowed PYIMPORT_PREFIX (stdout and
            exit code identical).
  exitcode  sys.exit(3) on every rank, and on rank 2 only, and os.execv of
            another program on every rank: same exit code and
            output with and without the shim.
  inert     mpiexec -n 2 hostname, python -c 'print(1)' without mpiexec, sh,
            and PYIMPORT_DISABLE=1 under mpiexec: identical output and nothing
            on stderr.
  badenv    workload.py with PYIMPORT_MAX_BYTES=12Q (with PYIMPORT_STATS=1) and
            with PYIMPORT_LOG=banana: exactly one stderr line per rank, naming
            the variable (the ranks' subprocesses print nothing); output and
            exit code otherwise unchanged; no summary.
  mpmd      MPMD jobs (mpiexec ... : ...): a Python rank next to a non-Python
            rank (sh), Python ranks next to PYIMPORT_DISABLE=1 Python ranks,
            and two groups of Python ranks with different PYTHONPATHs: same
            output and exit code as without the shim, and no hang (each run
            is limited to 90 s).
  ctypes    mpi_ctypes.py (the MPI calls mpi4py makes, via ctypes) normal,
            --early-exit and --exit-after-finalize: identical with and without
            the shim.

Each rank's stdout/stderr is captured separately with mpiexec's
-outfile-pattern/-errfile-pattern, so comparisons do not depend on how the
ranks' output interleaves.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402

SUBCOMMANDS = ["workload", "exitcode", "inert", "badenv", "ctypes", "mpmd"]
MPMD_TIMEOUT = 90
NRANKS = 4


def workload_env(args, wd, label, **extra):
    """Environment for one workload run: a fresh writable prefix on PYTHONPATH."""
    env = L.base_env()
    wdir = wd.sub("writable-" + label)
    L.populate_prefix(wdir, NRANKS, args.python)
    env["PYTHONPATH"] = wdir
    env["WORKLOAD_WRITABLE_PREFIX"] = wdir
    env["WORKLOAD_OUT"] = wd.sub("facts-" + label)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_workload(args, wd, label, shim, nranks=NRANKS, shim_env=None, **extra):
    env = workload_env(args, wd, label, **extra)
    if shim:
        env = L.with_shim(env, args.shim, **(shim_env or {}))
    return L.mpirun(label, args, wd, nranks, [args.python, L.WORKLOAD], env)


def stats_summary(text):
    return [l for l in text.splitlines() if l.startswith("pyimport:")]


def served_nonzero(lines):
    for l in lines:
        if "served" in l and any(int(n) > 0 for n in re.findall(r"\d+", l)):
            return True
    return False


def test_workload(chk, args, wd):
    print("\n== workload: mpiexec -n %d %s workload.py" % (NRANKS, args.python))
    base = run_workload(args, wd, "workload-noshim", False)
    L.sanity_rank_output(chk, base, NRANKS)
    chk.ok(base.rc == 0, "baseline exit code 0", base.describe())
    for r in range(NRANKS):
        o = base.rank_out(r)
        for needle in ("writable v2 again second, rewritten %d" % r, "python child rc 0 stdout child ok",
                       "[rank %d] shell ok" % r, "start pmi_rank %d" % r,
                       "preexisting rewritten pre modified %d" % r,
                       "preexisting pkg prepkg sub 42 data 'package data\\n'"):
            chk.ok(needle in o, "baseline rank %d prints %r" % (r, needle))

    shim = run_workload(args, wd, "workload-shim", True)
    L.compare_runs(chk, base, shim, NRANKS, "(default settings)")

    stats = run_workload(args, wd, "workload-shim-stats", True, shim_env={"PYIMPORT_STATS": "1"})
    L.compare_runs(chk, base, stats, NRANKS, "(PYIMPORT_STATS=1)", check_stderr=False)
    summary = stats_summary(stats.rank_err(0))
    chk.ok(bool(summary), "PYIMPORT_STATS=1: rank 0 stderr has 'pyimport:' summary lines",
           stats.describe())
    chk.ok(served_nonzero(summary),
           "PYIMPORT_STATS=1: summary mentions 'served' with a non-zero count (the shim did work)",
           "\n".join(summary) or stats.describe())
    print("  rank 0 summary:\n" + L.indent("\n".join(summary) or "(none)"))
    other = [l for l in stats.rank_err(0).splitlines() if not l.startswith("pyimport:")]
    chk.ok(not other, "PYIMPORT_STATS=1: rank 0 stderr holds nothing but the summary",
           "\n".join(other))
    for r in range(1, NRANKS):
        e = stats.rank_err(r)
        chk.ok(all(l.startswith("pyimport:") for l in e.splitlines()),
               "PYIMPORT_STATS=1: rank %d stderr holds nothing but pyimport: lines" % r, e)
        if e:
            print("  note: rank %d also printed:\n%s" % (r, L.indent(e)))
    chk.ok(not stats.err.strip(), "PYIMPORT_STATS=1: nothing on mpiexec's own stderr", stats.err)

    # Degraded configurations must still give the application identical results.
    tiny = run_workload(args, wd, "workload-shim-maxbytes-64K", True,
                        shim_env={"PYIMPORT_MAX_BYTES": "64K"})
    L.compare_runs(chk, base, tiny, NRANKS, "(PYIMPORT_MAX_BYTES=64K)", check_stderr=False)
    narrow = run_workload(args, wd, "workload-shim-prefix-stdlib", True,
                          shim_env={"PYIMPORT_PREFIX": "/usr/lib/python3.11:/nonexistent/dir"})
    L.compare_runs(chk, base, narrow, NRANKS, "(PYIMPORT_PREFIX=stdlib only)", check_stderr=False)

    # One copy of the snapshot per node: every rank maps the node leader's
    # memory file instead of holding its own copy.
    probe = [args.python, "-c",
             "import numpy\n"
             "maps = open('/proc/self/maps').read()\n"
             "print('snapshot mappings', sum('/memfd:pyimport-snapshot' in l for l in "
             "maps.splitlines()))\n"]
    shared = L.mpirun("snapshot-per-node", args, wd, NRANKS, probe,
                      L.with_shim(L.base_env(), args.shim))
    for r in range(NRANKS):
        chk.ok(shared.rank_out(r).strip() == "snapshot mappings 1",
               "rank %d maps the node's one snapshot" % r, shared.describe())


def test_exitcode(chk, args, wd):
    print("\n== exit codes")
    for label, extra in (("all-ranks-exit-3", {"WORKLOAD_EXIT_CODE": 3}),
                         ("rank2-exit-5", {"WORKLOAD_EXIT_CODE": 5, "WORKLOAD_EXIT_RANK": 2})):
        extra["WORKLOAD_NO_SUBPROCESS"] = 1
        base = run_workload(args, wd, label + "-noshim", False, **extra)
        chk.ok(base.rc not in (0, None), "baseline %s exits non-zero (rc=%s)" % (label, base.rc),
               base.describe())
        shim = run_workload(args, wd, label + "-shim", True, **extra)
        L.compare_runs(chk, base, shim, NRANKS, "(%s)" % label)

    # A rank that replaces itself with another program (os.execv) while
    # others still run: every rank's output must survive (the shim ends its
    # MPI session before the exec, or Hydra would stop the other ranks).
    prog = [args.python, "-c",
            "import os, json, time\n"
            "r = int(os.environ['PMI_RANK'])\n"
            "time.sleep(r * 0.5)\n"
            "os.execv('/bin/sh', ['sh', '-c', 'sleep 0.3; echo exec ok $PMI_RANK; exit 4'])\n"]
    env = L.base_env()
    base = L.mpirun("exec-noshim", args, wd, NRANKS, prog, env)
    shim = L.mpirun("exec-shim", args, wd, NRANKS, prog, L.with_shim(env, args.shim))
    chk.ok(all(base.rank_out(r) for r in range(NRANKS)), "baseline exec job prints on every rank",
           base.describe())
    L.compare_runs(chk, base, shim, NRANKS, "(exec)")


def test_inert(chk, args, wd):
    print("\n== inert outside an MPI-launched Python")
    env = L.base_env()
    cases = [
        ("mpiexec -n 2 hostname", [args.mpiexec, "-n", "2", "hostname"], {}),
        ("mpiexec -n 2 hostname (PYIMPORT_STATS=1)", [args.mpiexec, "-n", "2", "hostname"],
         {"PYIMPORT_STATS": "1"}),
        ("python -c print(1), no mpiexec", [args.python, "-c", "print(1)"], {}),
        ("python -c print(1), no mpiexec (PYIMPORT_STATS=1)", [args.python, "-c", "print(1)"],
         {"PYIMPORT_STATS": "1"}),
        ("python imports numpy, no mpiexec",
         [args.python, "-c", "import numpy, json, scipy.linalg; print(numpy.__name__, json.dumps([1]))"],
         {"PYIMPORT_STATS": "1"}),
        ("sh -c echo", ["sh", "-c", "echo shell; ls -d /usr/lib/python3.11"], {"PYIMPORT_STATS": "1"}),
        ("mpiexec -n 2 python, PYIMPORT_DISABLE=1",
         [args.mpiexec, "-n", "2", args.python, "-c",
          "import os, json; print('r', os.environ['PMI_RANK'], json.dumps(1))"],
         {"PYIMPORT_DISABLE": "1", "PYIMPORT_STATS": "1"}),
    ]
    for label, argv, extra in cases:
        d = wd.sub("inert")
        base = L.run(label + " [noshim]", argv, env, cwd=d)
        shim = L.run(label + " [shim]", argv, L.with_shim(env, args.shim, **extra), cwd=d)
        chk.ok(base.rc == 0 and base.out, "baseline %s works" % label, base.describe())
        chk.ok(base.rc == shim.rc, "%s: exit code equal (%s vs %s)" % (label, base.rc, shim.rc),
               shim.describe())
        bo = "".join(sorted(base.out.splitlines(True)))
        so = "".join(sorted(shim.out.splitlines(True)))
        chk.ok(bo == so, "%s: stdout identical" % label, L.diff(bo, so))
        chk.ok(shim.err == "", "%s: nothing on stderr with the shim" % label, shim.err)


def test_badenv(chk, args, wd):
    print("\n== bad PYIMPORT_* values (workload.py, rank 1 exits with 4)")
    # The workload's own subprocesses (python, sh) inherit the bad value too;
    # what they print on stderr is captured and echoed on stdout, so stdout
    # equality also checks that they stay silent.
    extra = {"WORKLOAD_EXIT_CODE": 4, "WORKLOAD_EXIT_RANK": 1}
    base = run_workload(args, wd, "badenv-noshim", False, **extra)
    chk.ok(base.rc == 4, "baseline exit code 4 (rank 1 exits 4)", base.describe())
    for var, val, more in (("PYIMPORT_MAX_BYTES", "12Q", {"PYIMPORT_STATS": "1"}),
                           ("PYIMPORT_LOG", "banana", {})):
        shim_env = dict(more)
        shim_env[var] = val
        res = run_workload(args, wd, "badenv-%s=%s" % (var, val), True, shim_env=shim_env, **extra)
        L.compare_runs(chk, base, res, NRANKS, "(%s=%s)" % (var, val), check_stderr=False)
        for r in range(NRANKS):
            lines = res.rank_err(r).splitlines()
            chk.ok(len(lines) == 1 and var in lines[0],
                   "%s=%s: rank %d stderr is exactly one line naming %s" % (var, val, r, var),
                   res.rank_err(r) or "(empty)")
            chk.ok(not any(l.startswith("pyimport:") and "served" in l for l in lines),
                   "%s=%s: rank %d printed no summary (inert)" % (var, val, r))
        if res.rank_err(0):
            print("  rank 0 printed: " + res.rank_err(0).strip())
        # mpiexec and hydra_pmi_proxy also carry LD_PRELOAD: they may each
        # warn once (same rule: one line per process) or stay silent.
        own = res.err.splitlines()
        chk.ok(len(own) <= 2 and all(var in l for l in own),
               "%s=%s: mpiexec's own stderr has at most one line per launcher process, "
               "each naming %s" % (var, val, var), res.err)
        if own:
            print("  note: launcher processes printed:\n" + L.indent(res.err))


def test_ctypes(chk, args, wd):
    print("\n== MPI through ctypes (what mpi4py does)")
    for mode, fmt in (([], "[rank %d] finalized after finalize: 1"),
                      (["--early-exit"], None),
                      (["--exit-after-finalize"], None)):
        label = "mpi_ctypes" + (mode[0] if mode else "")
        env = L.base_env()
        base = L.mpirun(label + "-noshim", args, wd, NRANKS, [args.python, L.MPI_CTYPES] + mode, env)
        chk.ok(base.rc == 0, "baseline %s exit code 0" % label, base.describe())
        if fmt:
            L.sanity_rank_output(chk, base, NRANKS, fmt)
        elif mode == ["--early-exit"]:
            chk.ok(all("still alive" in base.rank_out(r) for r in (0, 2, 3)),
                   "baseline %s: ranks 0, 2, 3 outlive rank 1" % label, base.describe())
        shim = L.mpirun(label + "-shim", args, wd, NRANKS, [args.python, L.MPI_CTYPES] + mode,
                        L.with_shim(env, args.shim))
        L.compare_runs(chk, base, shim, NRANKS, "(%s)" % label)


def test_mpmd(chk, args, wd):
    print("\n== MPMD jobs: not every rank is an active Python")
    env = L.base_env()
    py = ("import os, json, decimal, numpy\n"
          "print('[rank %s] %s python ok' % (os.environ['PMI_RANK'], '{tag}'), json.dumps([1]))\n")
    mods = wd.sub("mpmd-pythonpath")
    for tag in ("A", "B"):
        os.makedirs(os.path.join(mods, tag))
        with open(os.path.join(mods, tag, "mpmd_mod_%s.py" % tag), "w") as f:
            f.write("VALUE = 'module %s'\n" % tag)
    imp = ("import os, mpmd_mod_{tag} as m\n"
           "print('[rank %s]' % os.environ['PMI_RANK'], m.VALUE)\n")
    # Ranks that do not activate never join the start-up collective; the
    # active ones give up after PYIMPORT_TIMEOUT and run uncached (README, Limits).
    timeout_s = 5
    mixed_note = "PYIMPORT_TIMEOUT=%d" % timeout_s
    cases = [
        ("python+disabled-python", [(2, {}, [args.python, "-c", py.replace("{tag}", "active")]),
                                    (2, {"PYIMPORT_DISABLE": "1"},
                                     [args.python, "-c", py.replace("{tag}", "disabled")])]),
        ("two-pythonpaths", [(2, {"PYTHONPATH": os.path.join(mods, "A")},
                              [args.python, "-c", imp.replace("{tag}", "A")]),
                             (2, {"PYTHONPATH": os.path.join(mods, "B")},
                              [args.python, "-c", imp.replace("{tag}", "B")])]),
    ]
    shim_env = L.with_shim(env, args.shim)
    shim_env["PYIMPORT_TIMEOUT"] = str(timeout_s)
    for label, sections in cases:
        n = sum(s[0] for s in sections)
        base = L.mpirun_mpmd("mpmd-%s-noshim" % label, args, wd, sections, env, timeout=MPMD_TIMEOUT)
        chk.ok(base.rc == 0 and all(base.rank_out(r) for r in range(n)),
               "baseline MPMD %s works" % label, base.describe())
        shim = L.mpirun_mpmd("mpmd-%s-shim" % label, args, wd, sections, shim_env,
                             timeout=MPMD_TIMEOUT)
        mixed = label == "python+disabled-python"
        if not mixed:
            L.compare_runs(chk, base, shim, n, "(MPMD %s)" % label)
            continue
        # Mixed activation: the active ranks give up after PYIMPORT_TIMEOUT
        # and run uncached. Their MPI start-up never completed, so Hydra may
        # stop the job as soon as one of them exits (README, Limits): what
        # is checked is that it ends, and that nothing else differs.
        chk.ok(not shim.timed_out, "mixed MPMD job ends (no hang)", shim.describe())
        for r in range(n):
            got, want = shim.rank_out(r), base.rank_out(r)
            chk.ok(got in ("", want), "rank %d of the mixed job: stdout as without the shim "
                   "or stopped by Hydra" % r, L.diff(want, got))
            lines = shim.rank_err(r).splitlines()
            chk.ok(all(l.startswith("pyimport:") and mixed_note in l for l in lines)
                   and len(lines) <= (1 if r < 2 else 0),
                   "rank %d of the mixed job: at most the one line naming %s on stderr"
                   % (r, mixed_note), shim.rank_err(r))


def main():
    args = L.parse_args(__doc__.split("\n\n")[0], SUBCOMMANDS)
    chk = L.Checker("e2e " + " ".join(args.what))
    L.prerequisites(chk, args)
    wd = L.Workdir(args.keep)
    try:
        for what in args.what:
            globals()["test_" + what](chk, args, wd)
    finally:
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
