#!/usr/bin/env python3
"""Slurm on three emulated nodes (tests/cluster/slurm), and a job that dies.

    cluster_slurm.py --shim build/shim/libpyimport.so --mpiexec mpiexec.hydra \\
                     --python /usr/bin/python3 [SUBCOMMAND ...]

tests/cluster/slurm up starts (or finds) munged, slurmctld and one slurmd per
node n1 n2 n3, each in a mount namespace of its own with a private /dev/shm;
down stops what up started. Subcommands (default: all):

  pmi2          srun -N2 -n4 --mpi=pmi2 python3 workload.py (MPICH): per-task
                stdout, stderr but for the pyimport lines, exit code and
                srun's own output identical without and with the shim
                (PYIMPORT_LOG=1 PYIMPORT_STATS=1); one snapshot shared by the
                4 tasks (check_one_snapshot in cluster_lib).
  pmix-openmpi  srun -N2 -n4 --mpi=pmix python3 cluster_pi.py (Debian's
                python3-mpi4py, Open MPI): the same comparison and one
                shared snapshot.
  pmix-mpich    srun -N2 -n4 --mpi=pmix with the shim on MPICH
                (PYIMPORT_MPI_LIBRARY=libmpich.so.12, PYIMPORT_STATS=1):
                MPICH has no PMIx client, every task is a world of 1. Output
                identical; in the whole job exactly one line, on task 0's
                stderr, containing "sees a world of 1"; no other pyimport
                line; no task maps a snapshot or a library mirror (inert).
  sbatch        the same batch script without and with one line exporting
                LD_PRELOAD (submitted with PYIMPORT_LOG=1 PYIMPORT_STATS=1):
                a python3 run in the batch script itself (SLURM_PROCID=0, no
                SLURM_STEP_ID: not a rank) prints the same and nothing more,
                maps no snapshot; its srun --mpi=pmi2 step of 4 tasks prints
                the same and shares one snapshot.
  lost-rank     srun --mpi=pmi2 (no -K; KillOnBadExit=0): task 1 SIGKILLs
                itself after its imports, the others sleep 3 s and exit. The
                wall time with the shim is within 10 s of the time without
                it (both reported; a hang check, not a timing: the run is
                cut at that time + 20 s), exit code and the tasks' output as
                without it.
  kill-all      srun -K --mpi=pmi2: task 1 SIGKILLs itself, -K kills the
                others (which had mapped the node's mirror). 10 s after srun
                returned no node's /dev/shm holds a file or job directory of
                the job (what was there before the job aside).
  hydra-abort   the same under Hydra over the fakessh nodes (tests/cluster/
                fakessh, -hosts n1:1,n2:2,n3:1): Hydra aborts the job when
                task 1 dies; every node's namespace is kept 10 s after
                mpiexec returned (FAKESSH_LINGER) and its /dev/shm must then
                hold no file or job directory.
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_lib as C  # noqa: E402
import e2e_lib as L  # noqa: E402
import run_workload as RW  # noqa: E402

SUBCOMMANDS = ["pmi2", "pmix-openmpi", "pmix-mpich", "sbatch", "lost-rank", "kill-all",
               "hydra-abort"]
NRANKS = 4
NODES = 2
PI = os.path.join(C.HERE, "cluster_pi.py")
LOST_SLEEP = 3
HANG_BOUND = 10      # seconds: the spec's bound on the extra wall time
AFTER = 10           # seconds after the launcher returned
WORLD_OF_1 = "sees a world of 1"


def test_pmi2(chk, args, wd):
    print("\n== srun -N2 -n4 --mpi=pmi2 workload.py (MPICH)")
    env = RW.workload_env(args, wd, "pmi2-noshim")
    base = C.srun("slurm-pmi2-workload-noshim", wd, NRANKS, NODES, "pmi2",
                  [args.python, L.WORKLOAD], env)
    L.sanity_rank_output(chk, base, NRANKS)
    chk.ok(base.rc == 0, "baseline exit code 0", base.describe())
    env = RW.workload_env(args, wd, "pmi2-shim")
    shim = C.srun("slurm-pmi2-workload-shim", wd, NRANKS, NODES, "pmi2",
                  [args.python, L.WORKLOAD],
                  L.with_shim(env, args.shim, PYIMPORT_LOG=1, PYIMPORT_STATS=1))
    C.compare(chk, base, shim, NRANKS, "(srun --mpi=pmi2)", logged=True)
    C.check_one_snapshot(chk, shim, NRANKS, "srun --mpi=pmi2")


def test_pmix_openmpi(chk, args, wd):
    print("\n== srun -N2 -n4 --mpi=pmix cluster_pi.py (mpi4py, Open MPI)")
    env = L.base_env()
    base = C.srun("slurm-pmix-openmpi-noshim", wd, NRANKS, NODES, "pmix", [args.python, PI], env)
    C.sanity(chk, base, NRANKS, "srun --mpi=pmix mpi4py",
             needle=lambda r: "[rank %d] of %d:" % (r, NRANKS))
    shim = C.srun("slurm-pmix-openmpi-shim", wd, NRANKS, NODES, "pmix", [args.python, PI],
                  L.with_shim(env, args.shim, PYIMPORT_LOG=1, PYIMPORT_STATS=1))
    C.compare(chk, base, shim, NRANKS, "(srun --mpi=pmix, Open MPI)", logged=True)
    C.check_one_snapshot(chk, shim, NRANKS, "srun --mpi=pmix, Open MPI")


def app_run(label, wd, nranks, mpi, env, app_args, extra=(), timeout=L.RUN_TIMEOUT,
            python="/usr/bin/python3"):
    facts = wd.sub(label + "-facts")
    e = dict(env)
    e["E2E_FACTS"] = facts
    res = C.srun(label, wd, nranks, NODES, mpi, [python, C.APP] + list(app_args), e,
                 extra=extra, timeout=timeout)
    res.facts = C.read_facts(facts, nranks)
    return res


def mapped(f):
    """What a rank's facts say it maps of the shim's."""
    if f is None:
        return "no facts"
    return "%d image mapping(s) %s, %d libraries from a mirror%s" % (
        len(f["image"]), [(i["dev"], i["inode"]) for i in f["image"]], len(f["mirror"]),
        (", e.g. " + f["mirror"][0]) if f["mirror"] else "")


def check_inert_facts(chk, res, nranks, what):
    for r in range(nranks):
        f = res.facts.get(r)
        chk.ok(f is not None and not f["image"] and not f["mirror"],
               "%s: task %d maps no snapshot and no library mirror (inert)" % (what, r),
               mapped(f))


def test_pmix_mpich(chk, args, wd):
    print("\n== srun -N2 -n4 --mpi=pmix with the shim on MPICH (every task a world of 1)")
    env = L.base_env()
    app = ["--tag", "pmix-mpich"]
    base = app_run("slurm-pmix-mpich-noshim", wd, NRANKS, "pmix", env, app, python=args.python)
    C.sanity(chk, base, NRANKS, "srun --mpi=pmix", needle=lambda r: "[task %d] done" % r)
    shim = app_run("slurm-pmix-mpich-shim", wd, NRANKS, "pmix",
                   L.with_shim(env, args.shim, PYIMPORT_MPI_LIBRARY="libmpich.so.12",
                               PYIMPORT_STATS=1), app, python=args.python)
    what = "(srun --mpi=pmix, MPICH)"
    chk.ok(not shim.timed_out and shim.rc == base.rc,
           "exit code equal %s (%s vs %s)" % (what, base.rc, shim.rc), shim.describe())
    for r in range(NRANKS):
        chk.ok(base.rank_out(r) == shim.rank_out(r), "task %d stdout identical %s" % (r, what),
               L.diff(base.rank_out(r), shim.rank_out(r)))
    lines = [(r, l) for r in range(NRANKS) for l in shim.rank_err(r).splitlines()
             if WORLD_OF_1 in l]
    lines += [("srun", l) for l in (shim.err + shim.out).splitlines() if WORLD_OF_1 in l]
    chk.ok(len(lines) == 1 and lines[0][0] == 0,
           "%s: exactly one line containing %r, on task 0's stderr (got %d: %s)"
           % (what, WORLD_OF_1, len(lines), lines[:6]),
           "\n".join("task %d stderr:\n%s" % (r, L.indent(shim.rank_err(r) or "(empty)"))
                     for r in range(NRANKS)))
    if lines:
        print("  task 0 printed: " + lines[0][1])
    for r in range(NRANKS):
        own = [l for l in shim.rank_err(r).splitlines(True) if WORLD_OF_1 not in l]
        chk.ok("".join(own) == base.rank_err(r),
               "task %d stderr as without the shim%s %s"
               % (r, " but for that line" if r == 0 else "", what),
               L.diff(base.rank_err(r), "".join(own)))
    be, oe = C.normalize_launcher(base.err), C.normalize_launcher(shim.err)
    chk.ok(be == oe and base.out == shim.out, "srun's own output identical %s" % what,
           L.diff(be, oe))
    check_inert_facts(chk, shim, NRANKS, "pmix with MPICH")


BATCH = """#!/bin/sh
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks={ntasks}
#SBATCH --output={d}/batch.out
#SBATCH --error={d}/batch.err
{preload}cd {d}
E2E_FACTS={d}/facts-batch {python} {app} --tag batch
echo "batch python rc $?"
E2E_FACTS={d}/facts-step srun --mpi=pmi2 -o {d}/out.%t -e {d}/err.%t {python} {app} --tag step
echo "srun rc $?"
"""


def sbatch_run(label, args, wd, env, shim):
    d = wd.sub(label)
    for sub in ("facts-batch", "facts-step"):
        os.mkdir(os.path.join(d, sub))
    name = C.job_name(label)
    script = os.path.join(d, "job.sh")
    with open(script, "w") as f:
        f.write(BATCH.format(name=name, nodes=NODES, ntasks=NRANKS, d=d, python=args.python,
                             app=C.APP, preload=("export LD_PRELOAD=%s\n" % args.shim
                                                 if shim else "")))
    sub = L.run(label + " (sbatch)", ["sbatch", "--parsable", script], env, cwd=d, timeout=60)
    job_id = sub.out.strip().split(";")[0]
    # Not sbatch --wait: it polls the controller every 10 s or so.
    t0, state, code = time.monotonic(), None, None
    while job_id.isdigit() and time.monotonic() - t0 < 180:
        q = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                           text=True).stdout
        m = re.search(r"\bJobState=(\S+)", q)
        state = m.group(1) if m else None
        if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"):
            m = re.search(r"\bExitCode=(\d+):(\d+)", q)
            code = (int(m.group(1)) if m.group(2) == "0" else -int(m.group(2))) if m else None
            break
        time.sleep(0.3)
    elapsed = time.monotonic() - t0
    timed_out = code is None
    print("  ran  %-44s state %s exit %s  %.1fs" % (label + " (job %s)" % job_id, state, code,
                                                   elapsed))
    C.scancel_name(name)
    ranks = {r: (L.read(os.path.join(d, "out.%d" % r)), L.read(os.path.join(d, "err.%d" % r)))
             for r in range(NRANKS)}
    res = L.Result(label, sub.argv, code, "", sub.err, elapsed, ranks, timed_out)
    res.job_id = job_id
    res.job_name = name
    res.batch_out = L.read(os.path.join(d, "batch.out"))
    res.batch_err = L.read(os.path.join(d, "batch.err"))
    res.batch_facts = C.read_facts(os.path.join(d, "facts-batch"), 1)[0]
    res.script = script
    return res


def test_sbatch(chk, args, wd):
    print("\n== sbatch: the batch script with and without LD_PRELOAD")
    env = L.base_env()
    env.update(PYIMPORT_LOG="1", PYIMPORT_STATS="1")
    base = sbatch_run("sbatch-noshim", args, wd, env, False)
    shim = sbatch_run("sbatch-shim", args, wd, env, True)
    scripts = []
    for res in (base, shim):
        text = L.read(res.script).replace(os.path.dirname(res.script), "DIR")
        scripts.append(text.replace(res.job_name, "NAME").splitlines())
    extra = [l for l in scripts[1] if l not in scripts[0]]
    chk.ok([l for l in scripts[1] if l not in extra] == scripts[0] and len(extra) == 1 and
           extra[0].startswith("export LD_PRELOAD="),
           "the two batch scripts differ by one line, %s (their directory and job name aside)"
           % extra, L.diff("\n".join(scripts[0]) + "\n", "\n".join(scripts[1]) + "\n"))
    good = chk.ok(base.rc == 0 and "batch python rc 0" in base.batch_out and
                  "srun rc 0" in base.batch_out and
                  all("[task %d] done" % r in base.rank_out(r) for r in range(NRANKS)),
                  "baseline batch job: the batch script's python and its 4-task step ran",
                  base.describe() + "\n  batch.out:\n" + L.indent(base.batch_out or "(empty)") +
                  "\n  batch.err:\n" + L.indent(base.batch_err or "(empty)"))
    if not good:
        return
    chk.ok(shim.rc == base.rc and not shim.timed_out,
           "the batch job's exit code equal (%s vs %s)" % (base.rc, shim.rc), shim.describe())
    chk.ok(shim.batch_out == base.batch_out, "the batch script's output identical",
           L.diff(base.batch_out, shim.batch_out))
    chk.ok(shim.batch_err == base.batch_err,
           "the batch script's stderr identical: its own python3 (SLURM_PROCID=0, no "
           "SLURM_STEP_ID) prints no pyimport line", L.diff(base.batch_err, shim.batch_err))
    f = shim.batch_facts
    chk.ok(f is not None and not f["image"] and not f["mirror"],
           "the batch script's own python3 maps no snapshot and no mirror (inert)", mapped(f))
    C.compare(chk, base, shim, NRANKS, "(the batch job's srun step)", logged=True)
    C.check_one_snapshot(chk, shim, NRANKS, "the batch job's srun step")


def test_lost_rank(chk, args, wd):
    print("\n== srun --mpi=pmi2 without -K: task 1 is killed (SIGKILL), the others carry on")
    env = L.base_env()
    app = ["--tag", "lost", "--kill-rank", "1", "--sleep", str(LOST_SLEEP)]
    base = app_run("slurm-lost-rank-noshim", wd, NRANKS, "pmi2", env, app, python=args.python)
    good = chk.ok(base.rc not in (0, None) and not base.timed_out and
                  all("[task %d] done" % r in base.rank_out(r) for r in (0, 2, 3)),
                  "baseline: srun reports the killed task (rc %s) and the others finish" % base.rc,
                  base.describe())
    bound = base.elapsed + HANG_BOUND
    shim = app_run("slurm-lost-rank-shim", wd, NRANKS, "pmi2", L.with_shim(env, args.shim),
                   app, timeout=bound + 20, python=args.python)
    print("  wall time: %.1f s without the shim, %.1f s with it%s" % (
        base.elapsed, shim.elapsed, " (cut: it did not end)" if shim.timed_out else ""))
    chk.ok(good and not shim.timed_out and shim.elapsed <= bound,
           "the job that lost a task ends within %d s of its time without the shim "
           "(%.1f s vs %.1f s)" % (HANG_BOUND, shim.elapsed, base.elapsed), shim.describe())
    chk.ok(shim.rc == base.rc, "exit code equal (%s vs %s)" % (base.rc, shim.rc))
    for r in range(NRANKS):
        chk.ok(base.rank_out(r) == shim.rank_out(r), "task %d stdout identical" % r,
               L.diff(base.rank_out(r), shim.rank_out(r)))


def leftovers(files, jobs):
    return "job directories: %s\n%d files, e.g.:\n%s" % (
        ", ".join(jobs) or "none", len(files), "\n".join(files[:10]))


def node_listings():
    out = {}
    for n in C.NODES:
        pid = C.node_pid(n)
        out[n] = C.shm_listing(pid) if pid else None
    return out


def check_mirrors_existed(chk, facts, nranks, what):
    return chk.ok(all(facts.get(r) and facts[r]["mirror"] for r in range(nranks)),
                  "%s: every task had mapped libraries from its node's mirror before the kill "
                  "(so there was something to leave behind)" % what,
                  "\n".join("task %d: %s" % (r, (facts.get(r) or {}).get("mirror", "no facts")[:3])
                            for r in range(nranks)))


def test_kill_all(chk, args, wd):
    print("\n== srun -K --mpi=pmi2: task 1 SIGKILLs itself, -K kills the others")
    env = L.base_env()
    before = node_listings()
    chk.ok(all(v is not None for v in before.values()), "every node's /dev/shm can be listed",
           str(before))
    app = ["--tag", "killall", "--kill-rank", "1", "--sleep", "60"]
    res = app_run("slurm-kill-all-shim", wd, NRANKS, "pmi2",
                  L.with_shim(env, args.shim, PYIMPORT_LOG=1), app,
                  extra=["--kill-on-bad-exit=1"], timeout=90, python=args.python)
    returned = time.monotonic()
    chk.ok(res.rc not in (0, None) and not res.timed_out and res.elapsed < 50,
           "srun -K ends the job early (rc %s, %.1f s)" % (res.rc, res.elapsed), res.describe())
    check_mirrors_existed(chk, res.facts, NRANKS, "srun -K")
    # The job's own mirror directories (another run may share the nodes:
    # its directories are not this job's).
    ours = sorted({m.split("/root/")[0] for f in res.facts.values() if f for m in f["mirror"]})
    print("  the job's mirror directories: %s" % ours)
    time.sleep(max(0.0, AFTER - (time.monotonic() - returned)))
    after = node_listings()
    print("  %d s after srun returned:" % AFTER)
    for n in C.NODES:
        b, a = before.get(n) or {}, after.get(n)
        if a is None:
            chk.ok(False, "%s: /dev/shm can be listed after the job" % n)
            continue
        new = {p: e for p, e in a.items() if p not in b}
        files, jobs = C.job_files(new)
        mine = sorted(p for p in a if any(p == j or p.startswith(j + "/") for j in ours))
        others = [j for j in jobs if j not in ours]
        stray = [p for p in files if not any(p.startswith(j + "/") for j in jobs)]
        print("    %s: %d entries (%d new); of the job's mirrors %d entries; other new job "
              "directories %s; other new files %d" % (n, len(a), len(new), len(mine), others,
                                                      len(stray)))
        chk.ok(not mine and not stray,
               "%s: %d s after srun -K returned, /dev/shm holds no file or directory of the job"
               % (n, AFTER), "of the job's mirror directories:\n%s\nother new files:\n%s"
               % ("\n".join(mine[:15]) or "(none)", "\n".join(stray[:15]) or "(none)"))


def test_hydra_abort(chk, args, wd, cluster):
    print("\n== Hydra over n1:1,n2:2,n3:1: task 1 SIGKILLs itself, Hydra aborts the job")
    if not cluster.hosts():
        return
    d = wd.sub("hydra-abort-shim")
    fk = os.path.join(d, "fakessh")
    facts = os.path.join(d, "facts")
    os.mkdir(fk)
    os.mkdir(facts)
    env = L.with_shim(L.base_env(), args.shim, PYIMPORT_LOG=1)
    env["E2E_FACTS"] = facts
    argv = C.hydra_nodes_argv(args, "n1:1,n2:2,n3:1", NRANKS, d) + [
        args.python, C.APP, "--tag", "abort", "--kill-rank", "1", "--sleep", "60"]
    try:
        res = L.run("hydra-abort-shim", argv, C.fakessh_env(env, fk, linger=AFTER), cwd=d,
                    timeout=90, rank_dir=d, nranks=NRANKS)
    finally:
        open(os.path.join(fk, "launcher-returned"), "w").close()
    chk.ok(res.rc not in (0, None) and not res.timed_out and res.elapsed < 50,
           "Hydra aborts the job (rc %s, %.1f s)" % (res.rc, res.elapsed), res.describe())
    check_mirrors_existed(chk, C.read_facts(facts, NRANKS), NRANKS, "Hydra abort")
    reports = [os.path.join(fk, n + ".after-linger") for n in C.NODES]
    C.wait_files(reports, AFTER + 30)
    print("  %d s after mpiexec returned:" % AFTER)
    for n, rep in zip(C.NODES, reports):
        entries = C.parse_report(rep) if os.path.exists(rep) else None
        files, jobs = C.job_files(entries or {})
        at_exit = C.parse_report(os.path.join(fk, n + ".at-exit"))
        print("    %s: when its proxy ended %d entries, %d s later %s" % (
            n, len(at_exit), AFTER, "no report" if entries is None else
            "%d entries (%d files, job directories %s)" % (len(entries), len(files), jobs)))
        chk.ok(entries is not None and not files and not jobs,
               "%s: %d s after Hydra's abort, /dev/shm holds no file or job directory of the job"
               % (n, AFTER), leftovers(files, jobs) if entries is not None else
               "(no report: the namespace did not linger)")


def main():
    args = L.parse_args(__doc__.split("\n\n")[0], SUBCOMMANDS)
    chk = L.Checker("e2e cluster_slurm " + " ".join(args.what))
    L.prerequisites(chk, args)
    C.require(chk, ["srun", "sbatch", "squeue", "scancel", "sinfo", "slurmd", "slurmctld",
                    "munged", "unshare", "nsenter"])
    cluster = C.Cluster(chk)
    wd = L.Workdir(args.keep, "pyimport-slurm-")
    try:
        slurm_parts = [w for w in args.what if w != "hydra-abort"]
        if not slurm_parts or cluster.slurm():
            for what in args.what:
                if what == "hydra-abort":
                    test_hydra_abort(chk, args, wd, cluster)
                else:
                    globals()["test_" + what.replace("-", "_")](chk, args, wd)
    finally:
        cluster.close()
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
