#!/usr/bin/env python3
"""Open MPI (Debian's 4.1, no MPI-4 sessions) and the application's own MPI.

    cluster_openmpi.py --shim build/shim/libpyimport.so --mpiexec mpiexec.hydra \\
                       --python /usr/bin/python3 [SUBCOMMAND ...]

Open MPI runs as root with OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 and --oversubscribe; the shim's variables
reach the ranks only (-x NAME=VALUE); per-rank output is read from
--output-filename's files. Launchers are called by name (mpiexec.openmpi,
mpiexec.mpich), never the alternatives' mpiexec. Subcommands (default: all):

  pi       the two classic mpi4py pi programs (cluster_pi.py: comm.bcast of n,
           a local sum, comm.reduce; cluster_pi_numpy.py: comm.Bcast/Reduce of
           numpy arrays) with Debian's python3-mpi4py under mpiexec.openmpi at
           1, 2 and 4 ranks, without and with the shim (PYIMPORT_LOG=1
           PYIMPORT_STATS=1): per-rank stdout, stderr but for the pyimport
           lines, exit code and mpiexec's own output (as sorted lines: it
           echoes the ranks') identical; one snapshot shared by every rank.
  strace   both programs at 4 ranks under strace (PYIMPORT_PROFILE=off):
           stdout identical; all ranks' calls under the interpreter's
           prefixes / rank 0's: >= 3 without the shim (the count works),
           <= 1.05 with it.
  c-init   cluster_mpi_init.c, built now with mpicc.openmpi and with
           mpicc.mpich, calls MPI_Init unconditionally and MPI_Finalize; run at
           2 ranks under mpiexec.openmpi and mpiexec.mpich respectively with
           PYIMPORT_ANY_PROGRAM=1 (the shim activates in a non-Python program)
           and PYIMPORT_PREFIX=<the stdlib> (it has something to share), exit
           status 0 and, on rank 1, 3: output and exit code as without the
           shim, one snapshot shared by both ranks.
  ctypes   cluster_mpi_ctypes.py (MPI_Init unconditionally through ctypes,
           MPI_Finalize, MPI_Finalized) under both families at 2 ranks, exit
           status 0 and, on rank 1, 4: the same checks.
"""

import os
import subprocess
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_lib as C  # noqa: E402
import e2e_lib as L  # noqa: E402
import strace_count as SC  # noqa: E402

SUBCOMMANDS = ["pi", "strace", "c-init", "ctypes"]
PROGRAMS = [("pi", os.path.join(C.HERE, "cluster_pi.py")),
            ("pi-numpy", os.path.join(C.HERE, "cluster_pi_numpy.py"))]
C_SOURCE = os.path.join(C.HERE, "cluster_mpi_init.c")
CTYPES = os.path.join(C.HERE, "cluster_mpi_ctypes.py")
LOGGED = {"PYIMPORT_LOG": "1", "PYIMPORT_STATS": "1"}


def shim_vars(args, **more):
    v = {"LD_PRELOAD": args.shim}
    v.update(more)
    return v


def check_pi(chk, res, nranks, what):
    good = C.sanity(chk, res, nranks, what, needle=lambda r: "[rank %d] of %d:" % (r, nranks))
    good &= chk.ok("[rank 0] pi is approximately 3.14159265" in res.rank_out(0),
                   "baseline %s: rank 0 prints pi" % what, res.rank_out(0))
    return good


def test_pi(chk, args, wd):
    print("\n== the mpi4py pi programs under mpiexec.openmpi at 1, 2 and 4 ranks")
    env = L.base_env()
    for name, prog in PROGRAMS:
        for n in (1, 2, 4):
            what = "%s, %d rank%s" % (name, n, "s" if n > 1 else "")
            base = C.ompi_run("ompi-%s-%d-noshim" % (name, n), wd, n, [args.python, prog], env)
            check_pi(chk, base, n, what)
            shim = C.ompi_run("ompi-%s-%d-shim" % (name, n), wd, n, [args.python, prog], env,
                              xvars=shim_vars(args, **LOGGED))
            C.compare(chk, base, shim, n, "(%s)" % what, logged=True, merged_launcher=True)
            C.check_one_snapshot(chk, shim, n, what)


def test_strace(chk, args, wd):
    print("\n== the pi programs under strace at 4 ranks (mpiexec.openmpi)")
    chk.ok(C.have("strace"), "strace is installed")
    env = L.base_env()
    prefixes = SC.get_prefixes(args, env)
    for name, prog in PROGRAMS:
        runs = {}
        for label, sv in (("noshim", None),
                          ("shim", shim_vars(args, PYIMPORT_STATS="1", PYIMPORT_PROFILE="off",
                                             PYIMPORT_RECHECK="0"))):
            e = dict(env)
            e["E2E_FACTS"] = facts = wd.sub("strace-facts-%s-%s" % (name, label))
            traces = wd.sub("strace-traces-%s-%s" % (name, label))
            res = C.ompi_run("ompi-strace-%s-%s" % (name, label), wd, 4,
                             C.traced([args.python, prog], traces, sv), e,
                             timeout=SC.STRACE_TIMEOUT)
            analysis = SC.analyse(traces, facts, prefixes)
            SC.report("%s, %s" % (name, label), analysis)
            runs[label] = (res, analysis)
        (base, ba), (shim, sa) = runs["noshim"], runs["shim"]
        check_pi(chk, base, 4, name + " under strace")
        for r in range(4):
            chk.ok(base.rank_out(r) == shim.rank_out(r),
                   "%s under strace: rank %d stdout identical" % (name, r),
                   L.diff(base.rank_out(r), shim.rank_out(r)))
            chk.ok(ba[r] is not None and sa[r] is not None,
                   "%s: rank %d pid file and trace found" % (name, r))

        def ratio(analysis):
            counts = [len(a["import"]) + len(a["allowed"]) if a else 0
                      for _, a in sorted(analysis.items())]
            return sum(counts) / max(counts[0], 1), counts

        bratio, bcounts = ratio(ba)
        sratio, scounts = ratio(sa)
        print("  %s: calls under the prefixes per rank: without the shim %s (all/rank 0 = %.3f), "
              "with it %s (all/rank 0 = %.3f)" % (name, bcounts, bratio, scounts, sratio))
        chk.ok(bratio >= 3.0, "%s without the shim: all ranks' calls under the prefixes / rank "
               "0's >= 3 (the count works; got %.3f)" % (name, bratio))
        detail = "\n".join("rank %d:\n%s" % (r, L.indent("\n".join(SC.by_path(
            sa[r]["import"] + sa[r]["allowed"])[:30]))) for r in range(1, 4) if sa[r])
        chk.ok(sratio <= 1.05, "%s with the shim: all ranks' calls under the prefixes / rank "
               "0's <= 1.05 (got %.3f)" % (name, sratio), detail)


def hydra_run(label, wd, nranks, prog, env):
    """mpiexec.mpich (Hydra, called by name), per-rank output files."""
    d = wd.sub(label)
    argv = ["mpiexec.mpich", "-n", str(nranks), "-outfile-pattern", os.path.join(d, "out.%r"),
            "-errfile-pattern", os.path.join(d, "err.%r")] + list(prog)
    return L.run(label, argv, env, cwd=d, rank_dir=d, nranks=nranks)


def family_run(family, label, wd, nranks, prog, env, shim_env=None):
    if family == "openmpi":
        return C.ompi_run(label, wd, nranks, prog, env, xvars=shim_env)
    e = dict(env)
    e.update(shim_env or {})
    return hydra_run(label, wd, nranks, prog, e)


def check_family_pair(chk, family, label, wd, prog, env, shim_env, rc, needle, what):
    base = family_run(family, label + "-noshim", wd, 2, prog, env)
    C.sanity(chk, base, 2, what, rc=rc, needle=needle)
    shim = family_run(family, label + "-shim", wd, 2, prog, env, shim_env)
    C.compare(chk, base, shim, 2, "(%s)" % what, logged=True,
              merged_launcher=family == "openmpi")
    C.check_one_snapshot(chk, shim, 2, what)


def test_c_init(chk, args, wd):
    print("\n== a C program calling MPI_Init and MPI_Finalize, PYIMPORT_ANY_PROGRAM=1")
    env = L.base_env()
    stdlib = sysconfig.get_paths()["stdlib"]
    for family, cc in (("openmpi", "mpicc.openmpi"), ("mpich", "mpicc.mpich")):
        exe = os.path.join(wd.sub("build-" + family), "cluster_mpi_init")
        p = subprocess.run([cc, "-O1", "-Wall", "-Werror", "-o", exe, C_SOURCE],
                           capture_output=True, text=True)
        if not chk.ok(p.returncode == 0, "%s builds cluster_mpi_init.c" % cc,
                      p.stdout + p.stderr):
            continue
        shim_env = shim_vars(args, PYIMPORT_ANY_PROGRAM="1", PYIMPORT_PREFIX=stdlib, **LOGGED)
        for exit_rank, rc in ((-1, 0), (1, 3)):
            what = "C MPI_Init, %s, %s" % (family, "exit 0" if rc == 0 else "rank 1 returns 3")
            check_family_pair(chk, family, "c-init-%s-exit%d" % (family, rc), wd,
                              [exe, str(exit_rank)], env, shim_env, rc,
                              lambda r: "[rank %d] MPI_Finalize returned 0; finalized 1" % r, what)


def test_ctypes(chk, args, wd):
    print("\n== MPI_Init through ctypes, both families")
    env = L.base_env()
    for family in ("openmpi", "mpich"):
        for exit_rank, rc in ((-1, 0), (1, 4)):
            what = "ctypes MPI_Init, %s, %s" % (family, "exit 0" if rc == 0 else "rank 1 exits 4")
            check_family_pair(chk, family, "ctypes-%s-exit%d" % (family, rc), wd,
                              [args.python, CTYPES, family, str(exit_rank)], env,
                              shim_vars(args, **LOGGED), rc,
                              lambda r: "[rank %d] finalized after MPI_Finalize 1" % r, what)
        # Through PMPI_Init and PMPI_Finalize (a profiling tool's calls).
        what = "ctypes PMPI_Init, %s" % family
        check_family_pair(chk, family, "ctypes-%s-pmpi" % family, wd,
                          [args.python, CTYPES, family, "-1", "pmpi"], env,
                          shim_vars(args, **LOGGED), 0,
                          lambda r: "[rank %d] finalized after MPI_Finalize 1" % r, what)


def main():
    args = L.parse_args(__doc__.split("\n\n")[0], SUBCOMMANDS)
    chk = L.Checker("e2e cluster_openmpi " + " ".join(args.what))
    L.prerequisites(chk, args)
    C.require(chk, ["mpiexec.openmpi", "mpiexec.mpich", "mpicc.openmpi", "mpicc.mpich"])
    wd = L.Workdir(args.keep, "pyimport-openmpi-")
    p = subprocess.run([args.python, "-c", "import importlib.util as u; "
                        "print(u.find_spec('mpi4py.MPI').origin)"],
                       capture_output=True, text=True, env=L.base_env())
    ext = p.stdout.strip()
    linked = subprocess.run(["ldd", ext], capture_output=True, text=True).stdout if ext else ""
    chk.ok("libmpi.so.40" in linked,
           "%s has mpi4py built against Open MPI (python3-mpi4py: %s)" % (args.python, ext),
           p.stderr + linked)
    try:
        for what in args.what:
            globals()["test_" + what.replace("-", "_")](chk, args, wd)
    finally:
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
