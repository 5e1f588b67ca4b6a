"""Helpers shared by the end-to-end test drivers (stdlib only).

The drivers are run by ctest as

    python3 DRIVER --shim LIB --mpiexec MPIEXEC --python PYTHON [subcommand]

and exit 0 on success, 1 on failure (every failed check is printed with the
reason and the data it looked at), 77 is not used: a missing prerequisite is a
failure, not a skip.
"""

import argparse
import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "workload.py")
MPI_CTYPES = os.path.join(HERE, "mpi_ctypes.py")

# One mpiexec run must never take this long; ctest's TIMEOUT is the backstop.
RUN_TIMEOUT = int(os.environ.get("E2E_RUN_TIMEOUT", "240"))


def parse_args(description, subcommands=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--shim", required=True, help="path of libpyimport.so")
    p.add_argument("--mpiexec", default=shutil.which("mpiexec") or "mpiexec")
    p.add_argument("--python", default="/usr/bin/python3",
                   help="interpreter with numpy and scipy (Debian's /usr/bin/python3)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory and print its path")
    if subcommands:
        p.add_argument("what", nargs="*", metavar="SUBCOMMAND",
                       help="one or more of: %s (default: all)" % ", ".join(subcommands))
    a = p.parse_args()
    a.shim = os.path.abspath(a.shim)
    if subcommands:
        bad = [w for w in a.what if w not in subcommands + ["all"]]
        if bad:
            p.error("unknown subcommand(s): %s" % ", ".join(bad))
        a.what = subcommands if (not a.what or "all" in a.what) else a.what
    return a


class Checker:
    """Collects failures instead of stopping at the first one."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.checks = 0

    def ok(self, cond, what, detail=""):
        self.checks += 1
        if cond:
            print("  ok   %s" % what)
        else:
            print("  FAIL %s" % what)
            if detail:
                for line in str(detail).rstrip("\n").splitlines():
                    print("       | " + line)
            self.failures.append(what)
        sys.stdout.flush()
        return cond

    def finish(self):
        print()
        if self.failures:
            print("%s: %d of %d checks FAILED:" % (self.name, len(self.failures), self.checks))
            for f in self.failures:
                print("  - " + f)
            sys.stdout.flush()
            sys.exit(1)
        print("%s: all %d checks passed" % (self.name, self.checks))
        sys.stdout.flush()
        sys.exit(0)


def prerequisites(chk, args):
    good = True
    good &= chk.ok(os.path.isfile(args.shim), "shim library exists: %s" % args.shim)
    good &= chk.ok(os.access(args.python, os.X_OK), "python is executable: %s" % args.python)
    mp = args.mpiexec if os.path.sep in args.mpiexec else shutil.which(args.mpiexec)
    good &= chk.ok(bool(mp) and os.access(mp, os.X_OK), "mpiexec is executable: %s" % args.mpiexec)
    if not good:
        chk.finish()


# The per-test cache directory (XDG_CACHE_HOME of every run), set by the
# first Workdir: with PYIMPORT_PROFILE's default ("auto") rank 0 keeps a
# profile in $XDG_CACHE_HOME/pyimport, and a test must neither read the
# profiles of earlier runs of the user nor leave its own there.
CACHE_HOME = None


def base_env():
    """The environment every run starts from: the caller's, minus anything that
    would change the behaviour of the shim or of the interpreter, plus a
    single-threaded BLAS so that 4 ranks on 2 cores stay deterministic/fast,
    and XDG_CACHE_HOME in the test's temporary directory (hermetic: the real
    ~/.cache/pyimport is never read or written).  Create a Workdir first."""
    if CACHE_HOME is None:
        raise RuntimeError("e2e_lib.base_env() before any Workdir: runs would use "
                           "the real ~/.cache/pyimport")
    env = {}
    for k, v in os.environ.items():
        if k.startswith("PYIMPORT_") or k in ("LD_PRELOAD", "LD_LIBRARY_PATH"):
            continue
        if k.startswith("PYTHON") or k.startswith("WORKLOAD_"):
            continue
        if k.startswith("PMI_") or k.startswith("MPI_LOCAL") or k.startswith("HYDRA_"):
            continue
        if k == "XDG_CACHE_HOME":
            continue
        env[k] = v
    env["XDG_CACHE_HOME"] = CACHE_HOME
    env["OMP_NUM_THREADS"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["LC_ALL"] = "C.UTF-8"
    env["PYTHONHASHSEED"] = "0"
    # The tests' trees are on this machine's local disk, where by default the
    # library passes through (run_workload.py's inert checks take that
    # default): served here, as on a shared filesystem.
    env["PYIMPORT_SERVE_LOCAL"] = "1"
    return env


def populate_prefix(d, nranks, python):
    """Put modules into a PYTHONPATH directory before a job starts (so they are
    part of the snapshot) and byte-compile them, as an installed package
    would be.  workload.py's part_preexisting uses them."""
    def w(rel, text):
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    for r in range(nranks):
        w("pyimport_e2e_pre_r%d.py" % r, "VALUE = 'pre original %d'\n" % r)
        w("pyimport_e2e_data_r%d.txt" % r, "first line %d\n" % r)
        # a package that only a child process of rank r writes into
        w("pyimport_e2e_childpkg_r%d/__init__.py" % r, "")
    w("pyimport_e2e_prepkg/__init__.py", "NAME = 'prepkg'\n")
    w("pyimport_e2e_prepkg/sub.py", "def twice(x):\n    return 2 * x\n")
    w("pyimport_e2e_prepkg/data.txt", "package data\n")
    # make the sources look older than "now" so that an in-place rewrite
    # within the same second still changes the mtime Python compares
    old = time.time() - 100
    for root, dirs, files in os.walk(d):
        for f in files:
            if f.endswith((".py", ".txt")):
                os.utime(os.path.join(root, f), (old, old))
    subprocess.run([python, "-m", "compileall", "-q", d], check=True,
                   stdout=subprocess.DEVNULL)


def read_only_workload_env(wd, name, nranks, python):
    """base_env() for workload.py reading a populated PYTHONPATH directory
    `wd.sub(name)` without writing to it (the strace counts)."""
    env = base_env()
    wdir = wd.sub(name)
    populate_prefix(wdir, nranks, python)
    env["PYTHONPATH"] = wdir
    env["WORKLOAD_WRITABLE_PREFIX"] = wdir
    env["WORKLOAD_NO_WRITE"] = "1"
    return env, wdir


def with_shim(env, shim, **extra):
    e = dict(env)
    e["LD_PRELOAD"] = shim
    e.update({k: str(v) for k, v in extra.items()})
    return e


class Result:
    def __init__(self, label, argv, rc, out, err, elapsed, ranks=None, timed_out=False):
        self.label = label
        self.argv = argv
        self.rc = rc
        self.out = out
        self.err = err
        self.elapsed = elapsed
        self.ranks = ranks or {}   # rank -> (stdout, stderr)
        self.timed_out = timed_out

    def rank_out(self, r):
        return self.ranks.get(r, ("", ""))[0]

    def rank_err(self, r):
        return self.ranks.get(r, ("", ""))[1]

    def describe(self):
        s = ["[%s] rc=%s%s elapsed=%.1fs" % (self.label, self.rc,
                                              " (TIMED OUT)" if self.timed_out else "",
                                              self.elapsed),
             "  argv: " + " ".join(self.argv)]
        if self.out:
            s.append("  mpiexec stdout:\n" + indent(self.out))
        if self.err:
            s.append("  mpiexec stderr:\n" + indent(self.err))
        for r in sorted(self.ranks):
            o, e = self.ranks[r]
            if e:
                s.append("  rank %d stderr:\n%s" % (r, indent(e)))
        return "\n".join(s)


def indent(text, pfx="    "):
    return "\n".join(pfx + l for l in text.rstrip("\n").splitlines())


def run(label, argv, env, cwd=None, timeout=RUN_TIMEOUT, rank_dir=None, nranks=0):
    """Run argv in its own session; kill the whole process group on timeout.
    If rank_dir is given, per-rank stdout/stderr are read from
    rank_dir/out.R and rank_dir/err.R (mpiexec -outfile-pattern)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    # Reap leftovers of the session (e.g. ranks orphaned by a hung mpiexec).
    try:
        os.killpg(p.pid, 0)
        time.sleep(0.2)
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    elapsed = time.monotonic() - t0
    ranks = {}
    if rank_dir:
        for r in range(nranks):
            ranks[r] = (read(os.path.join(rank_dir, "out.%d" % r)),
                        read(os.path.join(rank_dir, "err.%d" % r)))
    res = Result(label, argv, p.returncode, out.decode("utf-8", "replace"),
                 err.decode("utf-8", "replace"), elapsed, ranks, timed_out)
    print("  ran  %-44s rc=%s  %.1fs%s" % (label, res.rc, elapsed,
                                            "  TIMED OUT" if timed_out else ""))
    sys.stdout.flush()
    return res


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class Workdir:
    def __init__(self, keep=False, tag="pyimport-e2e-"):
        global CACHE_HOME
        self.path = tempfile.mkdtemp(prefix=tag)
        self.keep = keep
        self.n = 0
        if CACHE_HOME is None:
            # Created empty: the first job of every program walks the
            # prefixes whole, as on a fresh CI machine.
            CACHE_HOME = os.path.join(self.path, "xdg-cache")
            os.mkdir(CACHE_HOME, 0o700)

    def sub(self, name):
        self.n += 1
        d = os.path.join(self.path, "%02d-%s" % (self.n, re.sub(r"[^\w.-]+", "_", name)))
        os.makedirs(d)
        return d

    def close(self):
        if self.keep:
            print("temporary files kept in " + self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def mpirun(label, args, wd, nranks, prog_argv, env, cwd=None, timeout=RUN_TIMEOUT,
           mpiexec_opts=(), runas=(), rank_dir=None):
    """runas goes in front of mpiexec (e.g. a setpriv command); rank_dir, if
    given, receives the per-rank output instead of a new wd.sub(label)."""
    d = rank_dir or wd.sub(label)
    argv = list(runas) + [args.mpiexec, "-n", str(nranks),
                          "-outfile-pattern", os.path.join(d, "out.%r"),
                          "-errfile-pattern", os.path.join(d, "err.%r")]
    argv += list(mpiexec_opts) + list(prog_argv)
    return run(label, argv, env, cwd=cwd or d, timeout=timeout, rank_dir=d, nranks=nranks)


def mpirun_mpmd(label, args, wd, sections, env, timeout=RUN_TIMEOUT):
    """MPMD launch: sections is a list of (nranks, {VAR: value}, argv);
    the variables are passed with Hydra's per-section -env."""
    d = wd.sub(label)
    argv = [args.mpiexec, "-outfile-pattern", os.path.join(d, "out.%r"),
            "-errfile-pattern", os.path.join(d, "err.%r")]
    total = 0
    for i, (n, sec_env, prog) in enumerate(sections):
        if i:
            argv.append(":")
        argv += ["-n", str(n)]
        for k, v in sec_env.items():
            argv += ["-env", k, str(v)]
        argv += list(prog)
        total += n
    return run(label, argv, env, cwd=d, timeout=timeout, rank_dir=d, nranks=total)


def diff(a, b, la="without shim", lb="with shim"):
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), la, lb, n=2))


def normalize_hydra(text):
    """Make mpiexec's own messages comparable: pids and host names vary."""
    text = re.sub(r"\bPID \d+", "PID N", text)
    text = re.sub(r"RUNNING AT \S+", "RUNNING AT HOST", text)
    return text


def first_failure_describes(chk, base, other):
    """chk.ok that adds the full description of both runs to the first
    failure only."""
    shown = [False]

    def ok(cond, msg, detail=""):
        if not cond and not shown[0]:
            shown[0] = True
            detail = (detail + "\n" if detail else "") + base.describe() + "\n" + other.describe()
        return chk.ok(cond, msg, detail)
    return ok


def compare_runs(chk, base, other, nranks, what="", check_stderr=True):
    """Per-rank stdout (and optionally stderr) and the exit code must match.
    The full description of both runs is printed with the first failure only."""
    sfx = (" " + what) if what else ""
    ok = first_failure_describes(chk, base, other)

    ok(not other.timed_out, "%s finished in time%s" % (other.label, sfx))
    ok(base.rc == other.rc, "exit code equal%s (%s vs %s)" % (sfx, base.rc, other.rc))
    for r in range(nranks):
        bo, oo = base.rank_out(r), other.rank_out(r)
        ok(bo == oo, "rank %d stdout identical%s (%d lines)" % (r, sfx, len(bo.splitlines())),
           diff(bo, oo))
        if check_stderr:
            be, oe = base.rank_err(r), other.rank_err(r)
            ok(be == oe, "rank %d stderr identical%s" % (r, sfx), diff(be, oe))
    ok(base.out == other.out, "mpiexec's own stdout identical%s" % sfx, diff(base.out, other.out))
    if check_stderr:
        be, oe = normalize_hydra(base.err), normalize_hydra(other.err)
        ok(be == oe, "mpiexec's own stderr identical%s" % sfx, diff(be, oe))


def sanity_rank_output(chk, res, nranks, last_line_fmt="[rank %d] done"):
    """The baseline itself must look right, or comparing against it is moot."""
    for r in range(nranks):
        o = res.rank_out(r)
        lines = o.splitlines()
        chk.ok(bool(lines) and lines[-1] == last_line_fmt % r,
               "%s: rank %d output complete (last line %r)" % (res.label, r, last_line_fmt % r),
               res.describe() + "\n  rank %d stdout:\n%s" % (r, indent(o)))
        bad = [l for l in lines if not l.startswith("[rank %d] " % r)]
        chk.ok(not bad, "%s: every rank %d line carries its rank prefix" % (res.label, r),
               "\n".join(bad))
