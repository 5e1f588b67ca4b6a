"""Helpers of the cluster tests (cluster_hydra.py, cluster_slurm.py,
cluster_openmpi.py; stdlib only): the emulated nodes of tests/cluster/,
jobs under Hydra's ssh launcher, srun, sbatch and Open MPI's mpiexec, and
what the shim's PYIMPORT_LOG=1 / PYIMPORT_STATS=1 lines say about the
snapshot.

Launchers are always called by name: mpiexec.hydra (or mpiexec.mpich),
mpiexec.openmpi, srun, sbatch; never the alternatives' mpiexec/mpirun.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_DIR = os.path.normpath(os.path.join(HERE, "..", "cluster"))
FAKESSH = os.path.join(CLUSTER_DIR, "fakessh")
SLURM = os.path.join(CLUSTER_DIR, "slurm")
HOSTS = os.path.join(CLUSTER_DIR, "hosts")
APP = os.path.join(HERE, "cluster_app.py")
NODES = ("n1", "n2", "n3")

OMPI_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

TRACE = ["strace", "-f", "-ff", "-qq", "-y", "-e", "trace=%file,%desc,getdents64,%process"]


def have(prog):
    return shutil.which(prog) is not None


def require(chk, progs):
    """Every program is on PATH; a missing one is a failure (not a skip)."""
    good = True
    for p in progs:
        good &= chk.ok(have(p), "%s is installed" % p)
    if not good:
        chk.finish()


# --- the emulated cluster ---------------------------------------------------

class Cluster:
    """tests/cluster/hosts and tests/cluster/slurm, held by this process:
    up on request, down (only what they started, once no other run holds
    them) at close()."""

    def __init__(self, chk):
        self.chk = chk
        self.up = []

    def _script(self, script, what, timeout=180):
        argv = [script, what, "--holder", str(os.getpid())]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout)
            rc, out = p.returncode, (p.stdout + p.stderr).strip()
        except subprocess.TimeoutExpired:
            rc, out = None, "timed out after %d s" % timeout
        print("  ran  %-44s rc=%s  %.1fs" % (" ".join([os.path.basename(script), what]), rc,
                                           time.monotonic() - t0))
        if out:
            print(L.indent(out, "       "))
        sys.stdout.flush()
        return rc == 0, out

    def hosts(self):
        ok, out = self._script(HOSTS, "up")
        self.chk.ok(ok, "tests/cluster/hosts up: n1 n2 n3 resolve to 127.0.0.1", out)
        if ok:
            self.up.append(HOSTS)
        return ok

    def slurm(self):
        ok, out = self._script(SLURM, "up", timeout=240)
        self.chk.ok(ok, "tests/cluster/slurm up: n1 n2 n3 idle, each with a private /dev/shm", out)
        if ok:
            self.up.append(SLURM)
        return ok

    def close(self):
        for script in reversed(self.up):
            self._script(script, "down")
        self.up = []


def node_pid(node):
    """The pid of the Slurm node's slurmd (its mount namespace is the node's)."""
    p = subprocess.run([SLURM, "pid", node], capture_output=True, text=True)
    return int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip().isdigit() else None


def shm_listing(pid):
    """What /dev/shm holds in the mount namespace of process `pid`:
    {path: (type, size, inode, links)} or None if it cannot be looked at."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "find", "/dev/shm", "-mindepth",
                        "1", "-printf", r"%y %s %i %n %p\n"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    entries = {}
    for line in p.stdout.splitlines():
        t, size, ino, links, path = line.split(" ", 4)
        entries[path] = (t, int(size), int(ino), int(links))
    return entries


def shm_usage(pid):
    """Bytes in use on the /dev/shm tmpfs of `pid`'s mount namespace."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "stat", "-f", "-c", "%S %b %f",
                        "/dev/shm"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    bsize, blocks, free = (int(x) for x in p.stdout.split())
    return (blocks - free) * bsize


def shm_device(pid):
    """The device of /dev/shm in `pid`'s mount namespace, as /proc/PID/maps
    writes devices ("00:2b")."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "stat", "-c", "%d", "/dev/shm"],
                       capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip().isdigit():
        return None
    dev = int(p.stdout)
    return "%02x:%02x" % (os.major(dev), os.minor(dev))


def parse_report(path):
    """A fakessh report (find -printf '%y %s %p'): {path: (type, size)}."""
    entries = {}
    for line in L.read(path).splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1].isdigit():
            entries[parts[2]] = (parts[0], int(parts[1]))
        elif line.strip():
            entries[line] = ("?", 0)
    return entries


def job_files(entries):
    """Of a /dev/shm listing: the non-directories, and the mirror's job
    directories (<base>/pyimport-<uid>/job-* or new-*)."""
    files = sorted(p for p, e in entries.items() if e[0] != "d")
    jobs = sorted(p for p, e in entries.items()
                  if e[0] == "d" and re.match(r"^/dev/shm/pyimport-\d+/(job|new)-[^/]*$", p))
    return files, jobs


# --- launchers ----------------------------------------------------------------

def hydra_nodes_argv(args, hosts_spec, nranks, rank_dir, extra=()):
    """mpiexec.hydra over the emulated nodes (fakessh: one mount namespace,
    one /dev/shm per host name)."""
    return [args.mpiexec, "-launcher", "ssh", "-launcher-exec", FAKESSH, "-hosts", hosts_spec,
            "-n", str(nranks), "-outfile-pattern", os.path.join(rank_dir, "out.%r"),
            "-errfile-pattern", os.path.join(rank_dir, "err.%r")] + list(extra)


def fakessh_env(env, fakessh_dir, linger=0):
    e = dict(env)
    e["FAKESSH_DIR"] = fakessh_dir
    e["FAKESSH_LOG"] = os.path.join(fakessh_dir, "log")
    if linger:
        e["FAKESSH_LINGER"] = str(linger)
    return e


class Background:
    """A launcher run in the background (own session), finished like L.run."""

    def __init__(self, label, argv, env, cwd, rank_dir=None, nranks=0):
        self.label, self.argv, self.rank_dir, self.nranks = label, argv, rank_dir, nranks
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  start_new_session=True)

    def finish(self, timeout=L.RUN_TIMEOUT):
        timed_out = False
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = self.p.communicate()
        try:
            os.killpg(self.p.pid, 0)
            time.sleep(0.2)
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        elapsed = time.monotonic() - self.t0
        ranks = {}
        if self.rank_dir:
            for r in range(self.nranks):
                ranks[r] = (L.read(os.path.join(self.rank_dir, "out.%d" % r)),
                            L.read(os.path.join(self.rank_dir, "err.%d" % r)))
        res = L.Result(self.label, self.argv, self.p.returncode, out.decode("utf-8", "replace"),
                       err.decode("utf-8", "replace"), elapsed, ranks, timed_out)
        print("  ran  %-44s rc=%s  %.1fs%s" % (self.label, res.rc, elapsed,
                                                "  TIMED OUT" if timed_out else ""))
        sys.stdout.flush()
        return res


def scancel_name(name, wait=30):
    """Cancel every job called `name` and wait until none is left."""
    subprocess.run(["scancel", "--full", "-n", name], capture_output=True)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        p = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                           text=True)
        if p.returncode == 0 and not p.stdout.strip():
            return True
        subprocess.run(["scancel", "--full", "-s", "KILL", "-n", name], capture_output=True)
        time.sleep(0.5)
    return False


def job_name(label):
    return "pyimport-e2e-%d-%s" % (os.getpid(), re.sub(r"[^\w.-]+", "_", label))[:60]


def srun(label, wd, nranks, nodes, mpi, prog, env, extra=(), timeout=L.RUN_TIMEOUT):
    """srun -N nodes -n nranks --mpi=MPI, one output file per task (-o/-e
    %t); a run that times out is cancelled (scancel) before this returns."""
    d = wd.sub(label)
    name = job_name(label)
    argv = ["srun", "-N", str(nodes), "-n", str(nranks), "--mpi=" + mpi, "-J", name,
            "-o", os.path.join(d, "out.%t"), "-e", os.path.join(d, "err.%t")]
    argv += list(extra) + list(prog)
    res = L.run(label, argv, env, cwd=d, timeout=timeout, rank_dir=d, nranks=nranks)
    if not scancel_name(name):
        print("  note: job %s still listed by squeue after scancel" % name)
    res.dir = d
    return res


def ompi_run(label, wd, nranks, prog, env, xvars=None, extra=(), timeout=L.RUN_TIMEOUT):
    """mpiexec.openmpi -n N --oversubscribe, per-rank output in files
    (--output-filename DIR: DIR/1/rank.R/stdout); xvars are set for the
    ranks only (-x NAME=VALUE), not for mpiexec.openmpi itself."""
    d = wd.sub(label)
    outdir = os.path.join(d, "ompi")
    argv = ["mpiexec.openmpi", "--oversubscribe", "-n", str(nranks), "--output-filename", outdir]
    for k, v in (xvars or {}).items():
        argv += ["-x", "%s=%s" % (k, v)]
    argv += list(extra) + list(prog)
    e = dict(env)
    e.update(OMPI_ROOT_ENV)
    res = L.run(label, argv, e, cwd=d, timeout=timeout)
    for r in range(nranks):
        base = glob.glob(os.path.join(outdir, "*", "rank.%d" % r))
        base = base[0] if base else os.path.join(outdir, "missing")
        res.ranks[r] = (L.read(os.path.join(base, "stdout")), L.read(os.path.join(base, "stderr")))
    res.dir = d
    res.launcher_echoes = True
    return res


def traced(prog, trace_dir, shim_env=None):
    """The rank's command under strace (one file per thread/process); the
    shim's variables go in through env, so strace itself is not preloaded."""
    inner = ["env"] + ["%s=%s" % kv for kv in (shim_env or {}).items()]
    return TRACE + ["-o", os.path.join(trace_dir, "trace")] + inner + list(prog)


# --- comparing runs -----------------------------------------------------------

def normalize_launcher(text):
    """Launcher messages made comparable: pids, hosts, job and step ids, dates."""
    text = L.normalize_hydra(text)
    text = re.sub(r"\bStepId=\d+\.\d+", "StepId=J.S", text)
    text = re.sub(r"\bJobId=\d+", "JobId=J", text)
    text = re.sub(r"\bSTEP \d+\.\d+ ON \S+ CANCELLED AT \S+", "STEP J.S ON N CANCELLED AT T", text)
    text = re.sub(r"\bJOB \d+ ON \S+ CANCELLED AT \S+", "JOB J ON N CANCELLED AT T", text)
    text = re.sub(r"\[\[\d+,(\d+)\],(\d+)\]", r"[[J,\1],\2]", text)
    text = re.sub(r"\bslurmstepd-n\d\b", "slurmstepd-N", text)
    return text


def without_pyimport(text):
    return "".join(l for l in text.splitlines(True) if not l.startswith("pyimport"))


def sorted_lines(text):
    return "".join(sorted(text.splitlines(True)))


def compare(chk, base, other, nranks, what, logged=False, merged_launcher=False):
    """Per-rank stdout and exit code identical; per-rank stderr identical
    (once the pyimport lines are gone if `logged`); the launcher's own
    output identical after normalize_launcher (as sorted lines when the
    launcher also echoes the ranks' output, as mpiexec.openmpi does)."""
    ok = L.first_failure_describes(chk, base, other)
    sfx = " " + what
    ok(not other.timed_out, "%s finished in time%s" % (other.label, sfx))
    ok(base.rc == other.rc, "exit code equal%s (%s vs %s)" % (sfx, base.rc, other.rc))
    for r in range(nranks):
        bo, oo = base.rank_out(r), other.rank_out(r)
        ok(bo == oo, "rank %d stdout identical%s (%d lines)" % (r, sfx, len(bo.splitlines())),
           L.diff(bo, oo))
        be, oe = base.rank_err(r), other.rank_err(r)
        if logged:
            oe = without_pyimport(oe)
        ok(be == oe, "rank %d stderr identical%s%s" % (r, " apart from pyimport lines" if logged
                                                      else "", sfx), L.diff(be, oe))
    for stream, b, o in (("stdout", base.out, other.out), ("stderr", base.err, other.err)):
        b, o = normalize_launcher(b), normalize_launcher(o)
        if logged:
            o = without_pyimport(o)
        if merged_launcher:
            b, o = sorted_lines(b), sorted_lines(o)
        ok(b == o, "the launcher's own %s identical%s" % (stream, sfx), L.diff(b, o))


def sanity(chk, res, nranks, what, rc=0, needle=None):
    """The run without the shim itself looks right (or comparing is moot)."""
    good = chk.ok(res.rc == rc and not res.timed_out,
                  "baseline %s: exit code %s (got %s)" % (what, rc, res.rc), res.describe())
    if needle:
        for r in range(nranks):
            good &= chk.ok(needle(r) in res.rank_out(r),
                           "baseline %s: rank %d prints %r" % (what, r, needle(r)),
                           res.describe() + "\n  rank %d stdout:\n%s" % (r, L.indent(
                               res.rank_out(r) or "(empty)")))
    return good


# --- what the shim says ---------------------------------------------------------

BUILT_RE = re.compile(r"^pyimport\[\d+ r-?\d+ \d+\]: built the snapshot \((\d+) bytes\)", re.M)
SERVING_RE = re.compile(r"^pyimport\[\d+ r-?\d+ \d+\]: serving (\d+) entries", re.M)
BROADCAST_RE = re.compile(r"^pyimport\[\d+ r-?\d+ \d+\]: broadcast \d+ bytes in [\d.]+ s "
                          r"\(([^)]*)\)", re.M)
SHARED_RE = re.compile(r"^pyimport: snapshot of \d+ prefixes: (\d+) entries, [\d.]+ MiB, "
                       r"shared with (\d+) ranks", re.M)


def all_stderr(res, nranks):
    """Every rank's stderr, then the launcher's own output unless it only
    echoes the ranks' (mpiexec.openmpi --output-filename)."""
    own = [] if getattr(res, "launcher_echoes", False) else [res.err, res.out]
    return [res.rank_err(r) for r in range(nranks)] + own


def check_one_snapshot(chk, res, nranks, what, node_shared=True):
    """PYIMPORT_LOG=1 and PYIMPORT_STATS=1: rank 0 walked once (one "built
    the snapshot" line in the whole job, rank 0's), every rank serves the
    same number of entries, the summary says the snapshot was shared with
    every rank (and, node_shared, each rank's copy is its node's)."""
    built = [(r, len(BUILT_RE.findall(res.rank_err(r)))) for r in range(nranks)]
    elsewhere = len(BUILT_RE.findall("".join(all_stderr(res, nranks)[nranks:])))
    total = sum(n for _, n in built) + elsewhere
    chk.ok(total == 1 and built[0][1] == 1,
           "%s: one snapshot: rank 0 walked once (\"built the snapshot\" lines per rank: %s)"
           % (what, ", ".join("%d:%d" % b for b in built)),
           "\n".join("rank %d stderr:\n%s" % (r, L.indent(res.rank_err(r) or "(empty)"))
                     for r in range(nranks)))
    serving = [SERVING_RE.findall(res.rank_err(r)) for r in range(nranks)]
    counts = [s[0] if len(s) == 1 else None for s in serving]
    chk.ok(None not in counts and len(set(counts)) == 1,
           "%s: every rank serves the same snapshot (entries per rank: %s)"
           % (what, ", ".join(str(c) for c in counts)))
    summaries = [(r if r < nranks else "launcher", SHARED_RE.findall(e))
                 for r, e in enumerate(all_stderr(res, nranks))]
    found = [(r, m) for r, ms in summaries for m in ms]
    chk.ok(len(found) == 1 and found[0][0] == 0 and int(found[0][1][1]) == nranks,
           "%s: one summary, rank 0's, saying the snapshot was shared with %d ranks (got %s)"
           % (what, nranks, ["rank %s: %s entries shared with %s" % (r, m[0], m[1])
                             for r, m in found] or "none"))
    if node_shared:
        how = [BROADCAST_RE.findall(res.rank_err(r)) for r in range(nranks)]
        chk.ok(all(h == ["one copy per node"] for h in how),
               "%s: every rank maps its node's one copy of the image (%s)"
               % (what, ", ".join(",".join(h) or "-" for h in how)))
    return total == 1


def pyimport_lines(text):
    return [l for l in text.splitlines() if l.startswith("pyimport")]


def read_facts(facts_dir, nranks):
    facts = {}
    for r in range(nranks):
        try:
            with open(os.path.join(facts_dir, "rank.%d.json" % r)) as f:
                facts[r] = json.load(f)
        except (OSError, ValueError):
            facts[r] = None
    return facts


def wait_files(paths, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if all(os.path.exists(p) for p in paths):
            return True
        time.sleep(0.1)
    return all(os.path.exists(p) for p in paths)


def call_ratio(analysis):
    """All ranks' calls under the prefixes / the busiest rank's, and the counts."""
    counts = [len(a["import"]) + len(a["allowed"]) if a else 0 for _, a in sorted(analysis.items())]
    return sum(counts) / max(max(counts), 1), counts
