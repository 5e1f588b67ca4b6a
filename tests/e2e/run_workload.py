#!/usr/bin/env python3
"""End-to-end checks of libpyimport.so against runs without it.

    run_workload.py --shim build/shim/libpyimport.so --mpiexec mpiexec \\
                    --python /usr/bin/python3 [SUBCOMMAND ...]

Subcommands (default: all):
  workload  mpiexec -n 4 python workload.py without and with LD_PRELOAD: per-rank
            stdout/stderr and exit codes identical; once more with
            PYIMPORT_STATS=1 (rank 0's stderr must hold the "pyimport:" summary
            with a non-zero "served" count, stdout still identical); with
            PYIMPORT_MAX_BYTES=64K, 2M and 20M, the last two as a program's
            first job and its second (one profile directory each); output and
            exit code identical, every rank served, rank 0's one line and
            summary line counting the files that did not fit; and with a
            narrowed PYIMPORT_PREFIX
            (stdout and exit code identical).
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
            the shim, with its MPI-4 session and with PYIMPORT_MPI_SESSIONS=0
            (the shim initialises MPI itself and answers the application's
            MPI_Init, MPI_Initialized, MPI_Finalize and MPI_Finalized).
  profile   PYIMPORT_PROFILE with workload.py (one PYTHONPATH directory for
            every run): the first job writes one private profile (0700
            directory, 0600 file, header, absolute paths, numpy's among
            them); the second reads it and serves a smaller snapshot; a job
            that imports modules the profile lacks, a corrupt profile (one
            stderr line on rank 0, rewritten valid, full walk), and
            unwritable profile directories (under a regular file as root,
            and read-only or inaccessible ones as user nobody: no stderr at
            all) all give the output of the run without the shim; the
            default (auto) writes under the test's own XDG_CACHE_HOME.

Each rank's stdout/stderr is captured separately with mpiexec's
-outfile-pattern/-errfile-pattern, so comparisons do not depend on how the
ranks' output interleaves.
"""

import glob
import os
import re
import shutil
import stat
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402

SUBCOMMANDS = ["workload", "exitcode", "inert", "badenv", "ctypes", "mpmd", "profile"]
MPMD_TIMEOUT = 90
NRANKS = 4


def workload_env(args, wd, label, prefix=None, **extra):
    """Environment for one workload run: a fresh writable prefix on PYTHONPATH
    (a new directory, or the directory `prefix` emptied and populated again:
    a profile belongs to one set of prefixes)."""
    env = L.base_env()
    if prefix:
        shutil.rmtree(prefix, ignore_errors=True)
        os.makedirs(prefix)
        wdir = prefix
    else:
        wdir = wd.sub("writable-" + label)
    L.populate_prefix(wdir, NRANKS, args.python)
    env["PYTHONPATH"] = wdir
    env["WORKLOAD_WRITABLE_PREFIX"] = wdir
    env["WORKLOAD_OUT"] = wd.sub("facts-" + label)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_workload(args, wd, label, shim, nranks=NRANKS, shim_env=None, prefix=None, **extra):
    env = workload_env(args, wd, label, prefix, **extra)
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
    # A budget never makes the job uncached: metadata is served whatever it is,
    # the files that do not fit are read from the filesystem, and rank 0 says
    # so in one line (and in the summary). 2M and 20M run as a program's
    # first job and its second, with a profile directory of their own: the
    # full walk, then the profile's.
    for budget, job in (("64K", None), ("2M", "first job"), ("2M", "second job"),
                        ("20M", "first job"), ("20M", "second job")):
        what = "(PYIMPORT_MAX_BYTES=%s%s)" % (budget, ", " + job if job else "")
        shim_env = {"PYIMPORT_MAX_BYTES": budget, "PYIMPORT_STATS": "1"}
        if job:
            shim_env["PYIMPORT_PROFILE"] = os.path.join(wd.path, "profile-maxbytes-" + budget)
        small = run_workload(args, wd, "workload-shim-maxbytes-%s%s" % (
            budget, "-" + job.split()[0] if job else ""), True, shim_env=shim_env)
        L.compare_runs(chk, base, small, NRANKS, what, check_stderr=False)
        for r in range(NRANKS):
            own = [l for l in small.rank_err(r).splitlines() if not l.startswith("pyimport:")]
            chk.ok(own == base.rank_err(r).splitlines(),
                   "rank %d stderr identical but for pyimport: lines %s" % (r, what),
                   L.diff(base.rank_err(r), "\n".join(own) + ("\n" if own else "")))
            chk.ok("running uncached" not in small.rank_err(r),
                   "rank %d is served %s" % (r, what), small.rank_err(r))
        err0 = stats_summary(small.rank_err(0))
        line = [l for l in err0 if re.match(r"pyimport: \d+ files \([\d.]+ MiB, \d+ of them "
                                            r"libraries\) did not fit in PYIMPORT_MAX_BYTES=%s: "
                                            r"read from the filesystem$" % budget, l)]
        chk.ok(len(line) == 1, "rank 0 says in one line which files did not fit %s" % what,
               "\n".join(err0))
        chk.ok(served_nonzero(err0), "the summary shows served calls %s" % what, "\n".join(err0))
        chk.ok(any(l.startswith("pyimport: not cached (over PYIMPORT_MAX_BYTES): ") for l in err0),
               "the summary counts the files not cached %s" % what, "\n".join(err0))
        print("  %s rank 0:\n%s" % (what, L.indent("\n".join(err0[:3]))))
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

    # An exec that fails (no such program, not executable) leaves the rank as
    # it was: it carries on, and the other ranks are not held up by it (the
    # shim once ended its MPI session first, which waits for every rank).
    prog = [args.python, "-c",
            "import os, time\n"
            "r = int(os.environ['PMI_RANK'])\n"
            "if r == 0:\n"
            "    for path in ('/nonexistent/program', '/etc/passwd'):\n"
            "        try:\n"
            "            os.execv(path, [path])\n"
            "        except OSError as e:\n"
            "            print('exec', path, 'failed:', e.strerror)\n"
            "    import json, email.parser\n"
            "    open('rank0-carried-on', 'w').close()\n"
            "else:\n"
            "    for _ in range(600):\n"
            "        if os.path.exists('rank0-carried-on'): break\n"
            "        time.sleep(0.1)\n"
            "    print('rank 0 carried on' if os.path.exists('rank0-carried-on') else 'timed out')\n"
            "import decimal\n"
            "print('[rank %d] done' % r)\n"]
    base = L.mpirun("failed-exec-noshim", args, wd, NRANKS, prog, env)
    chk.ok(base.rc == 0 and "rank 0 carried on" in base.rank_out(1),
           "baseline failed-exec job: rank 0 carries on", base.describe())
    shim = L.mpirun("failed-exec-shim", args, wd, NRANKS, prog,
                    L.with_shim(env, args.shim, PYIMPORT_STATS=1))
    chk.ok("all ranks:" in shim.rank_err(0),
           "failed exec: rank 0's summary is printed once, at exit", shim.describe())
    L.compare_runs(chk, base, shim, NRANKS, "(failed exec)", check_stderr=False)


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

    # PYIMPORT_SERVE_LOCAL at its default (0): the trees (/usr, the working
    # directory) are on this machine's local disk, where rank 0 walks nothing
    # and every rank passes through (asked for statistics, rank 0 says why
    # there are none).
    default = {k: v for k, v in env.items() if k != "PYIMPORT_SERVE_LOCAL"}
    for n in (1, 2):
        label = "mpiexec -n %d python, trees on local disk (PYIMPORT_SERVE_LOCAL default)" % n
        argv = [args.mpiexec, "-n", str(n), args.python, "-c",
                "import numpy, scipy.linalg, json; print(json.dumps(numpy.__name__))"]
        d = wd.sub("local-disk")
        base = L.run(label + " [noshim]", argv, default, cwd=d)
        quiet = L.run(label + " [shim]", argv, L.with_shim(default, args.shim), cwd=d)
        asked = L.run(label + " [shim, PYIMPORT_STATS=1]", argv,
                      L.with_shim(default, args.shim, PYIMPORT_STATS=1), cwd=d)
        served = L.run(label + " [shim, PYIMPORT_SERVE_LOCAL=1]", argv,
                       L.with_shim(env, args.shim, PYIMPORT_STATS=1), cwd=d)
        chk.ok(base.rc == 0 and base.out == '"numpy"\n' * n, "baseline: %s" % label,
               base.describe())
        for res in (quiet, asked, served):
            chk.ok(res.rc == 0 and res.out == base.out, "%s: same output" % res.label,
                   res.describe())
        chk.ok(quiet.err == "", "%s: nothing on stderr" % quiet.label, quiet.err)
        lines = asked.err.splitlines()
        chk.ok(len(lines) == 1 and "node-local filesystems (" in lines[0] and
               "no statistics" in lines[0],
               "%s: one line says why there is no summary" % asked.label, asked.err)
        chk.ok("calls served" in served.err and "node-local" not in served.err,
               "%d ranks, PYIMPORT_SERVE_LOCAL=1: served (a summary)" % n, served.describe())


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
        for sessions in ("1", "0"):
            shim = L.mpirun(label + "-shim-sessions" + sessions, args, wd, NRANKS,
                            [args.python, L.MPI_CTYPES] + mode,
                            L.with_shim(env, args.shim, PYIMPORT_MPI_SESSIONS=sessions,
                                        PYIMPORT_STATS="1"))
            L.compare_runs(chk, base, shim, NRANKS,
                           "(%s, PYIMPORT_MPI_SESSIONS=%s)" % (label, sessions),
                           check_stderr=False)
            # Served, through either way of starting MPI: one summary from rank 0.
            chk.ok("calls served" in shim.rank_err(0),
                   "%s, PYIMPORT_MPI_SESSIONS=%s: rank 0 printed the summary" % (label, sessions),
                   shim.describe())


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


# --- PYIMPORT_PROFILE ----------------------------------------------------------

PROFILE_HEADER = "pyimport-profile 1"
# Modules workload.py does not import unless asked (WORKLOAD_EXTRA_IMPORT):
# a job of the same program that needs more than its profile holds.
EXTRA_IMPORTS = "colorsys,tomllib"
EXTRA_PATH_RE = re.compile(r"/colorsys\.|/tomllib/")
# A short program for the unprivileged runs: imports from every default
# prefix kind, prints something deterministic, and records (outside stdout)
# whether the rank mapped the shim's snapshot, i.e. really ran served.
SMALL_PROG = (
    "import os, json, decimal, numpy\n"
    "r = int(os.environ['PMI_RANK'])\n"
    "print('[rank %d] root %s numpy %s json %s decimal %s' % (r, os.geteuid() == 0,\n"
    "      numpy.__name__, json.dumps([r]), decimal.Decimal(1) / 8))\n"
    "maps = open('/proc/self/maps').read()\n"
    "with open(os.path.join(os.environ['E2E_FACTS'], 'mapped.%d' % r), 'w') as f:\n"
    "    f.write(str(int('/memfd:pyimport-snapshot' in maps)))\n")


def profile_files(d):
    return sorted(glob.glob(os.path.join(d, "*.profile")))


def check_profile_file(chk, path, when, want=()):
    """A written profile: header, then absolute paths only; `want` are
    (description, predicate on the path list) that must hold."""
    text = L.read(path)
    lines = text.splitlines()
    chk.ok(bool(lines) and lines[0] == PROFILE_HEADER,
           "%s: profile's first line is %r" % (when, PROFILE_HEADER), text[:300])
    chk.ok(text.endswith("\n"), "%s: profile ends with a newline" % when, repr(text[-100:]))
    paths = lines[1:]
    bad = [l for l in paths if not l.startswith("/")]
    chk.ok(bool(paths) and not bad,
           "%s: profile holds %d lines, every one an absolute path" % (when, len(paths)),
           "\n".join(bad[:20]) or "(no paths)")
    for desc, pred in want:
        chk.ok(any(pred(l) for l in paths), "%s: profile includes %s" % (when, desc),
               "%d paths, e.g.:\n%s" % (len(paths), "\n".join(paths[:15])))
    mode = stat.S_IMODE(os.stat(path).st_mode)
    chk.ok(mode == 0o600, "%s: profile file mode 0600 (got %04o)" % (when, mode))
    return paths


def rank_log(res, r):
    """What rank r's PYIMPORT_LOG>=1 / PYIMPORT_STATS=1 lines say."""
    e = res.rank_err(r)
    facts = {}
    m = re.findall(r"^pyimport\[\d+ r%d \d+\]: serving (\d+) entries" % r, e, re.M)
    facts["serving"] = int(m[-1]) if len(m) == 1 else None
    m = re.findall(r"^pyimport: snapshot of \d+ prefixes: (\d+) entries", e, re.M)
    facts["snapshot"] = int(m[-1]) if len(m) == 1 else None
    m = re.findall(r"^pyimport\[\d+ r%d \d+\]: profile (/.*): (\d+) paths$" % r, e, re.M)
    facts["profile"] = (m[0][0], int(m[0][1])) if len(m) == 1 else None
    return facts


def without_pyimport_lines(text):
    return "".join(l for l in text.splitlines(True) if not l.startswith("pyimport"))


def compare_logged(chk, base, res, what):
    """compare_runs for a run with PYIMPORT_LOG/PYIMPORT_STATS: stdout and
    exit code identical; stderr identical once the pyimport lines are gone."""
    L.compare_runs(chk, base, res, NRANKS, what, check_stderr=False)
    for r in range(NRANKS):
        be, oe = base.rank_err(r), without_pyimport_lines(res.rank_err(r))
        chk.ok(be == oe, "rank %d stderr identical apart from pyimport lines %s" % (r, what),
               L.diff(be, oe))
    be, oe = L.normalize_hydra(base.err), L.normalize_hydra(res.err)
    chk.ok(be == oe, "mpiexec's own stderr identical %s" % what, L.diff(be, oe))


def check_silent(chk, base, res, nranks, what):
    """Identical to the run without the shim, stderr included, and no
    stderr at all anywhere."""
    L.compare_runs(chk, base, res, nranks, what)
    noise = "".join("rank %d: %s" % (r, res.rank_err(r)) for r in range(nranks)
                    if res.rank_err(r)) + res.err
    chk.ok(not noise, "nothing at all on stderr %s" % what, noise)


def test_profile(chk, args, wd):
    print("\n== PYIMPORT_PROFILE: jobs of one program learn what to snapshot")
    prefix = os.path.join(wd.path, "profile-pythonpath")  # the same in every run
    store = wd.sub("profile-store")
    prof = os.path.join(store, "prof")
    logs = {"PYIMPORT_PROFILE": prof, "PYIMPORT_STATS": "1", "PYIMPORT_LOG": "1"}

    base = run_workload(args, wd, "profile-noshim", False, prefix=prefix)
    L.sanity_rank_output(chk, base, NRANKS)
    chk.ok(base.rc == 0, "baseline exit code 0", base.describe())

    # 1. No profile yet: a full walk, and rank 0 writes the profile at exit.
    chk.ok(not os.path.exists(prof), "before run 1 the profile directory does not exist")
    r1 = run_workload(args, wd, "profile-1-first-job", True, prefix=prefix, shim_env=logs)
    compare_logged(chk, base, r1, "(run 1, no profile yet)")
    files = profile_files(prof)
    chk.ok(len(files) == 1, "run 1 wrote exactly one *.profile in %s (got %d)" % (prof, len(files)),
           "\n".join(os.listdir(prof)) if os.path.isdir(prof) else "(no directory)")
    if not files:
        print(r1.describe())
        return
    pfile = files[0]
    chk.ok(sorted(os.listdir(prof)) == [os.path.basename(pfile)],
           "run 1: nothing else in the profile directory (no temporary files left)",
           "\n".join(os.listdir(prof)))
    mode = stat.S_IMODE(os.stat(prof).st_mode)
    chk.ok(mode == 0o700, "run 1: profile directory mode 0700 (got %04o)" % mode)
    paths1 = check_profile_file(chk, pfile, "run 1", want=(
        ("a path of numpy", lambda p: "/numpy/" in p),
        ("a path of scipy.linalg", lambda p: "/scipy/linalg/" in p),
        ("a path of the stdlib's json", lambda p: "/json/" in p),
        ("a module of the PYTHONPATH directory",
         lambda p: p.startswith(prefix + "/pyimport_e2e_prepkg/"))))
    chk.ok(not any(EXTRA_PATH_RE.search(p) for p in paths1),
           "run 1: profile lacks %s (the workload does not import them)" % EXTRA_IMPORTS,
           "\n".join(p for p in paths1 if EXTRA_PATH_RE.search(p)))
    f1 = [rank_log(r1, r) for r in range(NRANKS)]
    chk.ok(f1[0]["profile"] == (pfile, 0),
           "run 1: rank 0 logged 'profile %s: 0 paths' (got %s)" % (pfile, f1[0]["profile"]),
           r1.rank_err(0))
    chk.ok(f1[0]["serving"] and f1[0]["snapshot"] == f1[0]["serving"],
           "run 1: rank 0 logged the snapshot's entry count (serving %s, summary %s)"
           % (f1[0]["serving"], f1[0]["snapshot"]), r1.rank_err(0))

    # 2. The profile is read: rank 0 snapshots only what run 1 used.
    r2 = run_workload(args, wd, "profile-2-with-profile", True, prefix=prefix, shim_env=logs)
    compare_logged(chk, base, r2, "(run 2, partial snapshot)")
    f2 = [rank_log(r2, r) for r in range(NRANKS)]
    chk.ok(f2[0]["profile"] == (pfile, len(paths1)),
           "run 2: rank 0 read the profile's %d paths (got %s)" % (len(paths1), f2[0]["profile"]),
           r2.rank_err(0))
    n1, n2 = f1[0]["serving"] or 0, f2[0]["serving"]
    chk.ok(n2 is not None and 0 < n2 < n1,
           "run 2: rank 0 serves a smaller snapshot (%s entries, run 1: %s)" % (n2, n1),
           r2.rank_err(0))
    chk.ok(f2[0]["snapshot"] == n2,
           "run 2: the summary counts the same smaller snapshot (%s entries)" % f2[0]["snapshot"],
           r2.rank_err(0))
    chk.ok(all(f2[r]["serving"] == n2 for r in range(NRANKS)),
           "run 2: every rank serves the same %s entries" % n2,
           "\n".join("rank %d: %s" % (r, f2[r]["serving"]) for r in range(NRANKS)))
    if n1 and n2:
        print("  snapshot entries: run 1 %d, run 2 %d (%.0f%%)" % (n1, n2, 100.0 * n2 / n1))
    chk.ok(profile_files(prof) == [pfile], "run 2: still the one profile file")
    paths2 = check_profile_file(chk, pfile, "after run 2")

    # 3. The same program needs more than its profile holds: forwarded,
    #    then learned for the next job.
    extra = {"WORKLOAD_EXTRA_IMPORT": EXTRA_IMPORTS}
    base3 = run_workload(args, wd, "profile-extra-noshim", False, prefix=prefix, **extra)
    chk.ok(base3.rc == 0 and all("extra import colorsys" in base3.rank_out(r)
                                 for r in range(NRANKS)),
           "baseline with WORKLOAD_EXTRA_IMPORT imports colorsys on every rank", base3.describe())
    r3 = run_workload(args, wd, "profile-3-extra-imports", True, prefix=prefix, shim_env=logs,
                      **extra)
    compare_logged(chk, base3, r3, "(run 3, imports beyond the profile)")
    f3 = rank_log(r3, 0)
    chk.ok(f3["profile"] == (pfile, len(paths2)),
           "run 3: the same profile was read (%d paths; got %s)" % (len(paths2), f3["profile"]),
           r3.rank_err(0))
    paths3 = check_profile_file(chk, pfile, "after run 3", want=(
        ("colorsys (learned in run 3)", lambda p: "/colorsys." in p),
        ("tomllib (learned in run 3)", lambda p: "/tomllib/" in p)))
    chk.ok(set(paths2) <= set(paths3), "after run 3: the profile kept every earlier path",
           "\n".join(sorted(set(paths2) - set(paths3))[:20]))

    # 4. Corrupt profiles: one line on rank 0 naming the file, a full walk,
    #    the profile rewritten.
    with open(pfile, "w") as f:
        f.write("garbage\n")
    r4 = run_workload(args, wd, "profile-4-garbage", True, prefix=prefix,
                      shim_env={"PYIMPORT_PROFILE": prof})
    L.compare_runs(chk, base, r4, NRANKS, "(garbage profile)", check_stderr=False)
    e0 = r4.rank_err(0).splitlines()
    chk.ok(len(e0) == 1 and e0[0].startswith("pyimport") and pfile in e0[0],
           "garbage profile: rank 0's stderr is exactly one pyimport line naming %s" % pfile,
           r4.rank_err(0) or "(empty)")
    if e0:
        print("  rank 0 printed: " + r4.rank_err(0).strip())
    for r in range(1, NRANKS):
        e = r4.rank_err(r)
        chk.ok(e == base.rank_err(r) and "pyimport" not in e,
               "garbage profile: rank %d's stderr as without the shim (no pyimport line)" % r, e)
    be, oe = L.normalize_hydra(base.err), L.normalize_hydra(r4.err)
    chk.ok(be == oe, "garbage profile: mpiexec's own stderr identical", L.diff(be, oe))
    check_profile_file(chk, pfile, "after the garbage run", want=(
        ("a path of numpy", lambda p: "/numpy/" in p),))
    chk.ok(profile_files(prof) == [pfile] and os.listdir(prof) == [os.path.basename(pfile)],
           "after the garbage run: only the one profile file", "\n".join(os.listdir(prof)))

    # A header followed by a relative path: rejected as well, and the job
    # walks the prefixes whole (as many entries as run 1).
    with open(pfile, "w") as f:
        f.write(PROFILE_HEADER + "\n" + paths1[0] + "\nrelative/path.py\n")
    r5 = run_workload(args, wd, "profile-5-relative-line", True, prefix=prefix,
                      shim_env={"PYIMPORT_PROFILE": prof, "PYIMPORT_STATS": "1"})
    L.compare_runs(chk, base, r5, NRANKS, "(profile with a relative path)", check_stderr=False)
    named = [l for l in r5.rank_err(0).splitlines() if pfile in l]
    chk.ok(len(named) == 1 and named[0].startswith("pyimport"),
           "relative-path profile: exactly one rank 0 line names the file", r5.rank_err(0))
    n5 = rank_log(r5, 0)["snapshot"]
    chk.ok(n5 == n1, "relative-path profile: a full walk (%s entries, run 1: %s)" % (n5, n1),
           r5.rank_err(0))
    for r in range(1, NRANKS):
        e = r5.rank_err(r)
        chk.ok(e == base.rank_err(r) and "pyimport" not in e,
               "relative-path profile: rank %d's stderr as without the shim" % r, e)
    check_profile_file(chk, pfile, "after the relative-path run", want=(
        ("a path of numpy", lambda p: "/numpy/" in p),))

    # 5. A profile directory that cannot be created: PYIMPORT_PROFILE under a
    #    regular file (ENOTDIR, even for root). Nothing visible changes.
    afile = os.path.join(store, "afile")
    with open(afile, "w") as f:
        f.write("a regular file\n")
    under_file = os.path.join(afile, "prof")
    r6 = run_workload(args, wd, "profile-6-under-a-file", True, prefix=prefix,
                      shim_env={"PYIMPORT_PROFILE": under_file})
    check_silent(chk, base, r6, NRANKS, "(PYIMPORT_PROFILE under a regular file)")
    chk.ok(L.read(afile) == "a regular file\n" and sorted(os.listdir(store)) == ["afile", "prof"],
           "PYIMPORT_PROFILE under a regular file: nothing created or changed",
           "\n".join(os.listdir(store)))

    test_profile_small_programs(chk, args, wd, under_file)


def small_run(label, args, wd, env, d, runas=(), nranks=NRANKS):
    facts = os.path.join(d, "facts")
    os.makedirs(facts)
    os.chmod(facts, 0o1777)  # the runs as nobody write there too
    env = dict(env)
    env["E2E_FACTS"] = facts
    res = L.mpirun(label, args, wd, nranks, [args.python, "-c", SMALL_PROG], env,
                   runas=runas, rank_dir=d)
    res.mapped = [L.read(os.path.join(facts, "mapped.%d" % r)) for r in range(nranks)]
    return res


def test_profile_small_programs(chk, args, wd, under_file):
    print("\n== PYIMPORT_PROFILE: default location, unwritable directories (python -c)")
    env = L.base_env()
    shim_env = L.with_shim(env, args.shim)

    # The default (auto) is $XDG_CACHE_HOME/pyimport; the harness points
    # XDG_CACHE_HOME into the test's temporary directory.
    auto_dir = os.path.join(L.CACHE_HOME, "pyimport")
    before = profile_files(auto_dir)
    base = small_run("small-noshim", args, wd, env, wd.sub("small-noshim"))
    chk.ok(base.rc == 0 and all(base.rank_out(r) for r in range(NRANKS)),
           "baseline python -c job works", base.describe())
    auto = small_run("small-auto", args, wd, shim_env, wd.sub("small-auto"))
    check_silent(chk, base, auto, NRANKS, "(PYIMPORT_PROFILE=auto)")
    chk.ok(auto.mapped == ["1"] * NRANKS, "PYIMPORT_PROFILE=auto: every rank ran served",
           str(auto.mapped))
    after = profile_files(auto_dir)
    chk.ok(len(after) == len(before) + 1,
           "PYIMPORT_PROFILE=auto: the profile lands in the test's XDG_CACHE_HOME "
           "(%s: %d -> %d files)" % (auto_dir, len(before), len(after)))

    # Under a regular file, with PYIMPORT_LOG=1: the write was tried and
    # failed (so the silent run above did exercise the failure).
    d = wd.sub("small-under-file-log")
    logged = small_run("small-under-a-file-log1", args, wd,
                       L.with_shim(env, args.shim, PYIMPORT_PROFILE=under_file,
                                   PYIMPORT_LOG=1), d)
    L.compare_runs(chk, base, logged, NRANKS, "(under a file, PYIMPORT_LOG=1)",
                   check_stderr=False)
    chk.ok(under_file in logged.rank_err(0) and "Not a directory" in logged.rank_err(0),
           "under a file, PYIMPORT_LOG=1: rank 0 says the profile could not be written "
           "(Not a directory)", logged.rank_err(0))
    chk.ok(logged.mapped == ["1"] * NRANKS, "under a file: every rank ran served",
           str(logged.mapped))

    # Unprivileged (root ignores modes): as root the jobs run as user nobody
    # (setpriv, as tests/probe does), otherwise as the user running the test.
    # Everything they touch lives in a fresh 0755 directory; ro/ is not
    # writable and noaccess/ not even searchable by them.
    root = os.geteuid() == 0
    runas = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if root else []
    who = "as nobody" if root else "unprivileged"
    top = tempfile.mkdtemp(prefix="pyimport-e2e-unpriv-")
    ro = os.path.join(top, "ro")
    noaccess = os.path.join(top, "noaccess")
    try:
        os.chmod(top, 0o755)
        lib = os.path.join(top, "libpyimport.so")
        shutil.copy(args.shim, lib)
        os.chmod(lib, 0o755)
        os.mkdir(ro)
        os.chmod(ro, 0o755 if root else 0o555)
        os.mkdir(noaccess)
        os.chmod(noaccess, 0o700 if root else 0o000)
        n = [0]

        def unpriv_run(label, shim_vars=None, **env_vars):
            """shim_vars None: without the shim."""
            n[0] += 1
            d = os.path.join(top, "%02d-%s" % (n[0], label))
            os.mkdir(d)
            os.chmod(d, 0o1777)
            e = dict(env, **env_vars)
            if shim_vars is not None:
                e = L.with_shim(e, lib, **shim_vars)
            return small_run("%s-%s" % (who.replace(" ", "-"), label), args, wd, e, d,
                             runas=runas)

        ubase = unpriv_run("noshim")
        chk.ok(ubase.rc == 0 and all("root False" in ubase.rank_out(r) for r in range(NRANKS)),
               "baseline %s works and is not root" % who, ubase.describe())
        if not root:
            chk.ok(not os.access(ro, os.W_OK), "the read-only directory is not writable")
        cases = [
            ("missing-dir-in-read-only-parent", {"PYIMPORT_PROFILE": os.path.join(ro, "prof")},
             {}),
            ("read-only-dir", {"PYIMPORT_PROFILE": ro}, {}),
            # the default (auto), and $XDG_CACHE_HOME cannot even be searched
            ("auto-in-inaccessible-cache-home", {}, {"XDG_CACHE_HOME": noaccess}),
        ]
        for label, shim_vars, env_vars in cases:
            res = unpriv_run(label, shim_vars, **env_vars)
            check_silent(chk, ubase, res, NRANKS, "(%s, %s)" % (who, label))
            chk.ok(res.mapped == ["1"] * NRANKS,
                   "%s, %s: every rank ran served" % (who, label), str(res.mapped))
        chk.ok(os.listdir(ro) == [], "%s: nothing was created in the read-only directory" % who,
               "\n".join(os.listdir(ro)))
        logged = unpriv_run("read-only-dir-log1", {"PYIMPORT_PROFILE": ro, "PYIMPORT_LOG": 1})
        L.compare_runs(chk, ubase, logged, NRANKS, "(%s, read-only, PYIMPORT_LOG=1)" % who,
                       check_stderr=False)
        chk.ok("Permission denied" in logged.rank_err(0) and ro in logged.rank_err(0),
               "%s, read-only directory, PYIMPORT_LOG=1: rank 0 says the profile "
               "could not be written (Permission denied)" % who, logged.rank_err(0))
    finally:
        for d in (ro, noaccess):
            if os.path.isdir(d):
                os.chmod(d, 0o700)
        shutil.rmtree(top, ignore_errors=True)

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
