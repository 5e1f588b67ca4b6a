"""End-to-end workload for the pyimport shim.

Run one copy per rank, e.g.

    mpiexec -n 4 /usr/bin/python3 tests/e2e/workload.py

Every line this program prints on stdout is prefixed with "[rank R] " and its
content is deterministic, so the per-rank output of a run with
LD_PRELOAD=libpyimport.so can be compared byte for byte with a run without it.

Environment (all optional):
  PMI_RANK                  rank of this process (set by mpiexec; default 0)
  WORKLOAD_WRITABLE_PREFIX  directory on PYTHONPATH (hence a cached prefix) in
                            which the workload creates, imports, rewrites and
                            re-imports a module of its own.  Unset: skipped.
                            If the test driver pre-populated that directory
                            (e2e_lib.populate_prefix), the workload also
                            imports the modules found there, reads a data
                            file next to them and (unless WORKLOAD_NO_WRITE)
                            rewrites its own pre-existing module in place
                            (same size, new mtime) and reloads it.
  WORKLOAD_NO_WRITE=1       skip every write into the writable prefix (used by
                            the strace test).
  WORKLOAD_OUT              directory where the workload records facts about
                            itself for the test drivers: pid.<rank> holds
                            "<pid> <cwd>".
  WORKLOAD_EXIT_CODE        exit with this status after printing (default 0).
  WORKLOAD_EXIT_RANK        only this rank uses WORKLOAD_EXIT_CODE (default:
                            all ranks do).
  WORKLOAD_NO_SUBPROCESS=1  skip the subprocess part.
  WORKLOAD_NO_FORK=1        skip the fork / multiprocessing part.
  WORKLOAD_EXTRA_IMPORT     comma-separated modules imported on every rank
                            besides the usual ones (the profile test: a job
                            of the same program that uses more than its
                            profile holds).
"""

import os
import sys

RANK = int(os.environ.get("PMI_RANK", "0"))
PREFIX = "[rank %d] " % RANK


def out(*parts):
    text = " ".join(str(p) for p in parts)
    for line in text.splitlines() or [""]:
        sys.stdout.write(PREFIX + line + "\n")


def fmt(x):
    """Fixed formatting for floats (6 decimals, no negative zero)."""
    v = round(float(x), 6)
    if v == 0.0:
        v = 0.0
    return "%.6f" % v


def record_self():
    d = os.environ.get("WORKLOAD_OUT")
    if not d:
        return
    path = os.path.join(d, "pid.%d" % RANK)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %s\n" % (os.getpid(), os.getcwd()))
    os.replace(tmp, path)


def part_numerics():
    import numpy as np
    import scipy.linalg
    import scipy.sparse
    import scipy.optimize

    out("numpy", np.__name__, "scipy.linalg", scipy.linalg.__name__)

    # Dense solve: a fixed, well-conditioned system that depends on the rank.
    n = 5
    a = np.array([[4.0 if i == j else 1.0 / (1 + i + j) for j in range(n)]
                  for i in range(n)])
    b = np.arange(1, n + 1, dtype=float) + RANK
    x = scipy.linalg.solve(a, b)
    out("solve", " ".join(fmt(v) for v in x))
    out("det", fmt(scipy.linalg.det(a)))
    lu_piv = scipy.linalg.lu_factor(a)
    out("lu_solve", " ".join(fmt(v) for v in scipy.linalg.lu_solve(lu_piv, b)))

    # Sparse matvec on a tridiagonal matrix.
    m = 8
    diags = [np.full(m - 1, -1.0), np.full(m, 2.0), np.full(m - 1, -1.0)]
    s = scipy.sparse.diags(diags, [-1, 0, 1], format="csr")
    v = np.arange(m, dtype=float) ** 2
    out("sparse nnz", s.nnz, "matvec", " ".join(fmt(t) for t in s @ v))

    # Minimise a convex quadratic; the exact minimiser is c.
    c = np.array([1.0, -2.0, 0.5 + RANK])

    def f(p):
        return float(np.sum((p - c) ** 2) + 3.0)

    def g(p):
        return 2.0 * (p - c)

    res = scipy.optimize.minimize(f, np.zeros(3), jac=g, method="BFGS")
    out("minimize success", bool(res.success),
        "x", " ".join("%.4f" % (round(t, 4) + 0.0) for t in res.x),
        "fun", "%.4f" % res.fun)


def part_stdlib():
    import json
    import decimal
    import sqlite3
    import ctypes

    # decimal
    ctx = decimal.Context(prec=40)
    two = decimal.Decimal(2 + RANK)
    out("decimal sqrt", ctx.sqrt(two))
    out("decimal sum", sum(decimal.Decimal("0.1") for _ in range(10)))

    # sqlite in memory
    con = sqlite3.connect(":memory:")
    con.execute("create table t (k integer primary key, v text)")
    con.executemany("insert into t (k, v) values (?, ?)",
                    [(i, "v%d" % (i * i + RANK)) for i in range(6)])
    rows = con.execute("select k, v from t where k % 2 = 0 order by k").fetchall()
    total = con.execute("select sum(k) from t").fetchone()[0]
    con.close()
    out("sqlite rows", rows, "sum", total)

    # json round trip
    obj = {"rank": RANK, "list": [1, 2.5, "x", None, True],
           "nested": {"a": [], "b": {}}}
    text = json.dumps(obj, sort_keys=True)
    back = json.loads(text)
    out("json", text, "roundtrip", back == obj)

    # ctypes: call libc's strlen and abs
    libc = ctypes.CDLL(None)
    libc.strlen.restype = ctypes.c_size_t
    libc.strlen.argtypes = [ctypes.c_char_p]
    out("ctypes strlen", libc.strlen(b"pyimport"),
        "sizeof(c_long)", ctypes.sizeof(ctypes.c_long))


def part_extra_imports():
    names = [n for n in os.environ.get("WORKLOAD_EXTRA_IMPORT", "").split(",") if n]
    if not names:
        return
    import importlib
    for name in names:
        mod = importlib.import_module(name)
        public = sorted(n for n in dir(mod) if not n.startswith("_"))
        out("extra import", mod.__name__, os.path.basename(mod.__file__),
            "public names", len(public), public[:3])


def _write(path, text, mtime=None):
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def part_preexisting():
    """Modules that were in the PYTHONPATH directory before the job started
    (so they are in the snapshot)."""
    prefix = os.environ.get("WORKLOAD_WRITABLE_PREFIX")
    name = "pyimport_e2e_pre_r%d" % RANK
    if not prefix or not os.path.exists(os.path.join(prefix, name + ".py")):
        out("preexisting skipped")
        return
    import importlib

    mod = importlib.import_module(name)
    out("preexisting", mod.VALUE)
    pkg = importlib.import_module("pyimport_e2e_prepkg")
    sub = importlib.import_module("pyimport_e2e_prepkg.sub")
    pdir = pkg.__path__[0]
    with open(os.path.join(pdir, "data.txt")) as f:
        data = f.read()
    out("preexisting pkg", pkg.NAME, "sub", sub.twice(21), "data", repr(data))
    out("preexisting pkg listdir", sorted(x for x in os.listdir(pdir) if x != "__pycache__"))
    out("preexisting pkg isfile", os.path.isfile(os.path.join(pdir, "data.txt")),
        "missing", os.path.exists(os.path.join(pdir, "missing.txt")))
    try:
        importlib.import_module("pyimport_e2e_prepkg.nosuchmodule")
        out("preexisting: nosuchmodule imported?!")
    except ModuleNotFoundError:
        out("preexisting nosuchmodule: ModuleNotFoundError")

    if os.environ.get("WORKLOAD_NO_WRITE") == "1":
        return
    # Rewrite a module that is in the snapshot: same size, newer mtime.  A
    # stale size/mtime from the snapshot would make Python load the old .pyc.
    path = os.path.join(prefix, name + ".py")
    with open(path) as f:
        old = f.read()
    new = old.replace("original", "modified")
    assert len(new) == len(old)
    st = os.stat(path)
    with open(path, "w") as f:       # in place, not via rename
        f.write(new)
    os.utime(path, (st.st_mtime + 5, st.st_mtime + 5))
    importlib.invalidate_caches()
    mod = importlib.reload(mod)
    out("preexisting rewritten", mod.VALUE)
    with open(path) as f:
        out("preexisting reread same size", f.read() == new, os.stat(path).st_size == len(new))
    # Append to a data file of our own and read it back.
    dpath = os.path.join(prefix, "pyimport_e2e_data_r%d.txt" % RANK)
    with open(dpath, "a") as f:
        f.write("appended line\n")
    with open(dpath) as f:
        out("preexisting appended data", repr(f.read()))


def part_child_writes():
    """A child process (as pip or a code generator would) writes a module into
    a package that was in the snapshot; after it ends, the rank imports it."""
    prefix = os.environ.get("WORKLOAD_WRITABLE_PREFIX")
    pkg = "pyimport_e2e_childpkg_r%d" % RANK
    if (not prefix or os.environ.get("WORKLOAD_NO_WRITE") == "1"
            or not os.path.isdir(os.path.join(prefix, pkg))):
        out("child writes skipped")
        return
    import importlib
    import subprocess
    try:
        importlib.import_module(pkg + ".generated")
        out("child writes: imported before it exists?!")
    except ModuleNotFoundError:
        out("child writes: missing before: ok")
    target = os.path.join(prefix, pkg, "generated.py")
    code = "open(%r, 'w').write('VALUE = %d * 6\\n')" % (target, RANK)
    r = subprocess.run([sys.executable, "-c", code])
    importlib.invalidate_caches()
    mod = importlib.import_module(pkg + ".generated")
    out("child writes rc", r.returncode, "value", mod.VALUE,
        "listing", sorted(x for x in os.listdir(os.path.join(prefix, pkg)) if x.endswith(".py")))


def part_writable():
    prefix = os.environ.get("WORKLOAD_WRITABLE_PREFIX")
    if not prefix or os.environ.get("WORKLOAD_NO_WRITE") == "1":
        out("writable skipped")
        return
    import importlib

    name = "pyimport_e2e_mod_r%d" % RANK
    pkg = "pyimport_e2e_pkg_r%d" % RANK
    path = os.path.join(prefix, name + ".py")

    # The module does not exist yet: the lookup must fail.
    try:
        importlib.import_module(name)
        out("writable: unexpected import of missing module")
    except ModuleNotFoundError:
        out("writable missing before write: ok")

    _write(path, "VALUE = 'first %d'\n" % RANK)
    importlib.invalidate_caches()
    mod = importlib.import_module(name)
    out("writable v1", mod.VALUE, "file ok", os.path.samefile(mod.__file__, path))

    # Rewrite with different content (and size and mtime) and reload.
    st = os.stat(path)
    _write(path, "VALUE = 'second, rewritten %d'\nEXTRA = %d\n" % (RANK, RANK * 7),
           mtime=st.st_mtime + 10)
    importlib.invalidate_caches()
    mod = importlib.reload(mod)
    out("writable v2", mod.VALUE, mod.EXTRA)

    # Remove it from sys.modules and import again from scratch.
    del sys.modules[name]
    importlib.invalidate_caches()
    mod = importlib.import_module(name)
    out("writable v2 again", mod.VALUE)

    # A new package directory with a submodule.
    pdir = os.path.join(prefix, pkg)
    os.mkdir(pdir)
    _write(os.path.join(pdir, "__init__.py"), "NAME = 'pkg %d'\n" % RANK)
    _write(os.path.join(pdir, "sub.py"), "def f(x):\n    return x * %d\n" % (RANK + 2))
    importlib.invalidate_caches()
    p = importlib.import_module(pkg)
    sub = importlib.import_module(pkg + ".sub")
    out("writable pkg", p.NAME, "sub.f(5)", sub.f(5))
    out("writable listdir", sorted(x for x in os.listdir(pdir) if x.endswith(".py")))

    # Delete the module: it must disappear for this process.
    os.unlink(path)
    del sys.modules[name]
    importlib.invalidate_caches()
    try:
        importlib.import_module(name)
        out("writable: deleted module still importable")
    except ModuleNotFoundError:
        out("writable deleted: ok")
    out("writable exists after unlink", os.path.exists(path))


def part_subprocess():
    if os.environ.get("WORKLOAD_NO_SUBPROCESS") == "1":
        out("subprocess skipped")
        return
    import subprocess

    r = subprocess.run([sys.executable, "-c", "print('child ok')"],
                       capture_output=True)
    out("python child rc", r.returncode, "stdout", r.stdout.decode().strip(),
        "stderr", repr(r.stderr.decode()))

    r = subprocess.run([sys.executable, "-c",
                        "import json, decimal; print(json.dumps([str(decimal.Decimal(1) / 8)]))"],
                       capture_output=True)
    out("python child2 rc", r.returncode, "stdout", r.stdout.decode().strip(),
        "stderr", repr(r.stderr.decode()))

    # Output of this shell goes straight to our stdout (no capture); flush
    # first so the order within this rank's stream is deterministic.
    sys.stdout.flush()
    r = subprocess.run(["sh", "-c", "echo \"[rank %d] shell ok\"" % RANK])
    out("shell rc", r.returncode)

    r = subprocess.run(["sh", "-c", "echo captured shell ok"], capture_output=True)
    out("shell captured", r.stdout.decode().strip(), "stderr", repr(r.stderr.decode()))


def _mp_task(x):
    # runs in multiprocessing workers; imports something the parent has not
    import fractions
    return str(fractions.Fraction(x, 3) ** 2)


def part_fork():
    """Fork children (which must be inert even though they inherit an active
    shim and the PMI descriptor) and multiprocessing with every start method."""
    if os.environ.get("WORKLOAD_NO_FORK") == "1":
        out("fork skipped")
        return
    import ctypes
    import multiprocessing

    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            import statistics
            import fractions
            msg = "mean %s frac %s" % (statistics.mean([1, 2, 3, 4 + RANK]),
                                       fractions.Fraction(1, 3 + RANK))
            os.write(wfd, msg.encode())
            os.close(wfd)
        except BaseException as e:  # report, never fall back into the parent's code
            os.write(2, ("fork child failed: %r\n" % (e,)).encode())
            code = 1
        # libc exit(): runs the C atexit handlers and library destructors
        # (the shim's among them) in the fork child, as a C extension would.
        ctypes.CDLL(None).exit(code)
        os._exit(code)
    os.close(wfd)
    chunks = []
    while True:
        b = os.read(rfd, 4096)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    out("fork child", b"".join(chunks).decode(), "exit", os.waitstatus_to_exitcode(status))

    for method in ("fork", "forkserver", "spawn"):
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2) as pool:
            res = pool.map(_mp_task, range(RANK, RANK + 4))
        out("multiprocessing", method, res)


# Modules not imported elsewhere in the workload, imported concurrently.
THREAD_MODULES = ["email.mime.text", "xml.dom.minidom", "http.client", "concurrent.futures",
                  "unittest.mock", "logging.handlers", "csv", "fractions", "difflib",
                  "html.parser", "wave", "zipfile", "tarfile", "pydoc_data.topics",
                  "scipy.integrate", "scipy.interpolate"]


def part_threads():
    """Imports, listings and reads from 8 threads at once."""
    import importlib
    import threading
    results = {}
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        names = THREAD_MODULES[i::8]
        mods = [importlib.import_module(n) for n in names]
        listing = sorted(os.listdir(os.path.dirname(mods[0].__file__)))
        cached = mods[0].__cached__  # the bytecode the import read
        with open(cached, "rb") as f:
            size = len(f.read())
        results[i] = (names, [m.__name__ for m in mods], len(listing),
                      size == os.path.getsize(cached))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        names, got, count, same = results[i]
        out("thread", i, "imported", names == got, "listing", count, "read ok", same)


def main():
    record_self()
    out("start pmi_rank", os.environ.get("PMI_RANK"), "pmi_size", os.environ.get("PMI_SIZE"))
    part_numerics()
    part_threads()
    part_stdlib()
    part_extra_imports()
    part_preexisting()
    part_child_writes()
    part_writable()
    part_subprocess()
    part_fork()
    out("done")
    sys.stdout.flush()
    code = int(os.environ.get("WORKLOAD_EXIT_CODE", "0"))
    only = os.environ.get("WORKLOAD_EXIT_RANK")
    if only and int(only) != RANK:
        code = 0
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
