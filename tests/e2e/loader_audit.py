#!/usr/bin/env python3
"""The loader's audit library (libpyimport-audit.so, LD_AUDIT) next to the
preload: what the dynamic loader does before main, and searches outside
$ORIGIN, against the same jobs without either library.

  pyenv    pyenv CPython 3.8, 3.12 and 3.13 (those installed; shared
           libpython through an absolute RUNPATH) at 1, 2 and 4 ranks:
           identical output; under strace at 4 ranks, the other ranks' calls
           under the interpreter's prefix, every kind (the loader's included).
  spack    a Spack-style installation the test builds: a Python package in a
           prefix of its own whose extension needs libB through an absolute
           RUNPATH into prefix B, libB needing libC through one into prefix C
           (soname symlinks), an extension needing libD found through
           LD_LIBRARY_PATH, and one whose dependency is missing: identical
           output and errors at 1, 2 and 4 ranks; the other ranks' calls on all
           its prefixes under strace.
  hazards  the audit library's known hazards: a BIND_NOW interpreter, a
           preloaded library with initial-exec TLS, fork+exec of Python and of
           other programs from a rank, a non-Python program under mpiexec
           (inert: same output, no node directory).

  loader_audit.py --shim LIB --audit LIB [--mpiexec M] [--python P] [what...]
"""

import glob
import os
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402
import strace_parse as SP  # noqa: E402

RANKS = (1, 2, 4)
STRACE_RANKS = 4
ALLOWED = 1        # calls per other rank on the case's prefixes
SANITY_MIN = 20    # without the libraries, per rank (the counter works)
PYENV_VERSIONS = ("3.8", "3.12", "3.13")

STDLIB_APP = r'''
import ctypes, decimal, hashlib, json, os, sqlite3, sys, sysconfig, zlib
rank = os.environ.get("PMI_RANK", "0")
def say(*a):
    print("[rank %s]" % rank, *a)
say("python", "%d.%d" % sys.version_info[:2], "prefix", sys.prefix)
say("executable", sys.executable)
say("sqlite", sqlite3.connect(":memory:").execute("select 6*7").fetchone())
say("zlib", zlib.crc32(b"pyimport"), "sha", hashlib.sha256(b"x").hexdigest()[:12])
say("decimal", decimal.Decimal(1) / decimal.Decimal(7))
say("json", json.dumps({"a": [1, 2]}))
lib = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
# A dlopen of the loaded libpython by its path is the loaded one.
h = ctypes.CDLL(lib)
say("libpython by path is the loaded one", h.Py_IsInitialized() == 1,
    ctypes.c_void_p.in_dll(h, "_Py_NoneStruct").value == id(None))
maps = [l.split()[-1] for l in open("/proc/self/maps") if "libpython" in l and "r-xp" in l]
say("libpython mapped", len(maps), "time(s)")
say("done")
'''


def parse():
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shim", required=True)
    p.add_argument("--audit", required=True)
    p.add_argument("--mpiexec", default=shutil.which("mpiexec") or "mpiexec")
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--keep", action="store_true")
    p.add_argument("what", nargs="*", default=["pyenv", "spack", "hazards"])
    a = p.parse_args()
    a.shim, a.audit = os.path.abspath(a.shim), os.path.abspath(a.audit)
    return a


def with_libraries(args, env, **extra):
    e = L.with_shim(env, args.shim, **extra)
    e["LD_AUDIT"] = args.audit
    return e


def pyenv_pythons():
    root = os.path.expanduser("~/.pyenv")
    if shutil.which("pyenv"):
        r = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        root = r.stdout.strip() or root
    found = []
    for want in PYENV_VERSIONS:
        cands = sorted(glob.glob(os.path.join(root, "versions", want + ".*", "bin",
                                              "python" + want)))
        if cands:
            found.append((want, cands[-1], os.path.dirname(os.path.dirname(cands[-1]))))
    return found


def node_dirs(base="/dev/shm"):
    user = os.path.join(base, "pyimport-%d" % os.geteuid())
    return sorted(glob.glob(os.path.join(user, "ld-*")))


def count_calls(trace_dir, rank, roots):
    """The rank's calls (every thread, execve aside) on a path under roots."""
    files = sorted(glob.glob(os.path.join(trace_dir, "trace.%d.*" % rank)))
    if not files:
        return None
    counted = []  # (file, line number, line)
    for f in files:
        for lineno, line, (name, paths, _, _) in SP.parse_trace(f, "/"):
            if name in ("execve", "execveat"):
                continue
            if any(L_under(p, r) for p, _ in paths for r in roots):
                counted.append((os.path.basename(f), lineno, line))
    return counted


def L_under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def strace_job(args, wd, label, env, prog, with_libs):
    traces = wd.sub(label + "-traces")
    inner = ["env"]
    if with_libs:
        inner += ["LD_AUDIT=" + args.audit, "LD_PRELOAD=" + args.shim, "PYIMPORT_LOG=1"]
    inner += prog
    # -D: the tracer is a grandchild, the rank keeps its parent (the node's
    # launcher process), as without strace.
    wrapper = ("exec strace -D -ff -qq -y -o %s/trace.$PMI_RANK "
               "-e trace=%%file,%%desc,mmap %s"
               % (shlex.quote(traces), " ".join(shlex.quote(a) for a in inner)))
    res = L.mpirun(label, args, wd, STRACE_RANKS, ["sh", "-c", wrapper], env)
    return res, traces


def check_counts(chk, what, roots, base_traces, lib_traces):
    base = [count_calls(base_traces, r, roots) for r in range(STRACE_RANKS)]
    got = [count_calls(lib_traces, r, roots) for r in range(STRACE_RANKS)]
    print("   calls on %s per rank: without %s, with %s"
          % (", ".join(roots), [len(b) if b is not None else None for b in base],
             [len(g) if g is not None else None for g in got]))
    for r in range(1, STRACE_RANKS):
        chk.ok(base[r] is not None and len(base[r]) >= SANITY_MIN,
               "%s: without the libraries rank %d makes >= %d calls there (counter sanity, %s)"
               % (what, r, SANITY_MIN, len(base[r]) if base[r] is not None else "no trace"))
        n = len(got[r]) if got[r] is not None else None
        chk.ok(n is not None and n <= ALLOWED,
               "%s: with the libraries rank %d makes <= %d call there (got %s)"
               % (what, r, ALLOWED, n),
               "\n".join("%s:%d %s" % (f, n, line[:240]) for f, n, line in (got[r] or [])[:30]))


def compare_at_each_size(chk, args, wd, label, env, prog, lib_env=None):
    for n in RANKS:
        base = L.mpirun("%s-%d-plain" % (label, n), args, wd, n, prog, env)
        L.sanity_rank_output(chk, base, n)
        other = L.mpirun("%s-%d-libs" % (label, n), args, wd, n, prog,
                         lib_env or with_libraries(args, env))
        L.compare_runs(chk, base, other, n, "(%s, %d ranks)" % (label, n))
        chk.ok(not node_dirs(), "%s, %d ranks: no node directory left" % (label, n),
               "\n".join(node_dirs()))


# ---------------------------------------------------------------- pyenv

def test_pyenv(chk, args, wd):
    pythons = pyenv_pythons()
    chk.ok(len(pythons) == len(PYENV_VERSIONS), "pyenv CPython %s installed (found %s)"
           % (", ".join(PYENV_VERSIONS), [v for v, _, _ in pythons]))
    app = os.path.join(wd.sub("pyenv-app"), "app.py")
    with open(app, "w") as f:
        f.write(STDLIB_APP)
    for version, python, prefix in pythons:
        print("\n== pyenv CPython %s (%s)" % (version, python))
        env = L.base_env()
        label = "pyenv%s" % version
        compare_at_each_size(chk, args, wd, label, env, [python, app])
        print("   strace, %d ranks" % STRACE_RANKS)
        base, bt = strace_job(args, wd, label + "-strace-plain", env, [python, app], False)
        libs, lt = strace_job(args, wd, label + "-strace-libs", env, [python, app], True)
        L.compare_runs(chk, base, libs, STRACE_RANKS, "(%s under strace)" % label,
                       check_stderr=False)
        print(L.indent("\n".join(l for r in range(STRACE_RANKS)
                                 for l in libs.rank_err(r).splitlines() if "audit" in l)))
        check_counts(chk, "pyenv %s" % version, [prefix], bt, lt)


# ---------------------------------------------------------------- spack

EXT_SOURCE = r'''
#include <Python.h>
extern int %(call)s(void);
static PyObject* value(PyObject* self, PyObject* args) { return PyLong_FromLong(%(call)s()); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, ""}, {0}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "%(name)s", 0, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&module); }
'''

SPACK_APP = r'''
import os, sys
rank = os.environ.get("PMI_RANK", "0")
def say(*a):
    print("[rank %s]" % rank, *a)
import spackpkg
from spackpkg import _ext_b, _ext_d
say("libB via RUNPATH, libC via its RUNPATH:", _ext_b.value())
say("libD via LD_LIBRARY_PATH:", _ext_d.value())
try:
    from spackpkg import _ext_missing
    say("missing dependency imported?!")
except ImportError as e:
    say("missing dependency:", e)
maps = sorted(set(os.path.basename(l.split()[-1]) for l in open("/proc/self/maps")
                  if "/lib" in l and ".so" in l and "spack" in l))
say("mapped:", maps)
say("done")
'''


def run_checked(chk, argv, what):
    r = subprocess.run(argv, capture_output=True, text=True)
    chk.ok(r.returncode == 0, what, " ".join(argv) + "\n" + r.stdout + r.stderr)
    return r.returncode == 0


def build_spack(chk, args, root):
    """Each package in a prefix of its own, as Spack installs them."""
    inc = subprocess.run([args.python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['include'])"], capture_output=True, text=True).stdout.strip()
    site = os.path.join(root, "py-spackpkg", "lib", "python3", "site-packages")
    pkg = os.path.join(site, "spackpkg")
    libs = {n: os.path.join(root, "lib" + n.lower(), "lib") for n in "BCD"}
    for d in [pkg] + list(libs.values()):
        os.makedirs(d)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("NAME = 'spackpkg'\n")
    src = os.path.join(root, "src")
    os.makedirs(src)

    def cc(out, source, flags):
        c = os.path.join(src, os.path.basename(out) + ".c")
        with open(c, "w") as f:
            f.write(source)
        return run_checked(chk, ["cc", "-shared", "-fPIC", "-o", out, c] + flags,
                           "builds %s" % os.path.relpath(out, root))

    ok = cc(os.path.join(libs["C"], "libC.so.1.0"), "int c(void) { return 3; }",
            ["-Wl,-soname,libC.so.1"])
    os.symlink("libC.so.1.0", os.path.join(libs["C"], "libC.so.1"))
    ok &= cc(os.path.join(libs["B"], "libB.so.1.0"),
             "extern int c(void); int b(void) { return 10 * c(); }",
             ["-Wl,-soname,libB.so.1", "-L" + libs["C"], "-l:libC.so.1",
              "-Wl,--enable-new-dtags,-rpath," + libs["C"]])
    os.symlink("libB.so.1.0", os.path.join(libs["B"], "libB.so.1"))
    ok &= cc(os.path.join(libs["D"], "libD.so.1"), "int d(void) { return 4; }",
             ["-Wl,-soname,libD.so.1"])
    # Neither the missing library's directory nor the library exists.
    ok &= cc(os.path.join(libs["B"], "libmissing.so.1"), "int m(void) { return 0; }",
             ["-Wl,-soname,libmissing.so.1"])
    py = ["-I" + inc]
    ok &= cc(os.path.join(pkg, "_ext_b.so"), EXT_SOURCE % {"call": "b", "name": "_ext_b"},
             py + ["-L" + libs["B"], "-l:libB.so.1", "-Wl,--enable-new-dtags,-rpath," + libs["B"]])
    ok &= cc(os.path.join(pkg, "_ext_d.so"), EXT_SOURCE % {"call": "d", "name": "_ext_d"},
             py + ["-L" + libs["D"], "-l:libD.so.1"])
    ok &= cc(os.path.join(pkg, "_ext_missing.so"),
             EXT_SOURCE % {"call": "m", "name": "_ext_missing"},
             py + ["-L" + libs["B"], "-l:libmissing.so.1",
                   "-Wl,--enable-new-dtags,-rpath," + libs["B"] + ":" + root + "/libgone/lib"])
    os.unlink(os.path.join(libs["B"], "libmissing.so.1"))
    shutil.rmtree(src)
    subprocess.run([args.python, "-m", "compileall", "-q", site])
    return ok, site, libs


def test_spack(chk, args, wd):
    print("\n== a Spack-style installation")
    root = wd.sub("spack")
    ok, site, libs = build_spack(chk, args, root)
    if not ok:
        return
    app = os.path.join(wd.sub("spack-app"), "app.py")
    with open(app, "w") as f:
        f.write(SPACK_APP)
    env = L.base_env()
    env["PYTHONPATH"] = site
    env["LD_LIBRARY_PATH"] = libs["D"]
    compare_at_each_size(chk, args, wd, "spack", env, [args.python, app])
    base, bt = strace_job(args, wd, "spack-strace-plain", env, [args.python, app], False)
    libs_run, lt = strace_job(args, wd, "spack-strace-libs", env, [args.python, app], True)
    L.compare_runs(chk, base, libs_run, STRACE_RANKS, "(spack under strace)", check_stderr=False)
    print(L.indent("\n".join(l for r in range(STRACE_RANKS)
                             for l in libs_run.rank_err(r).splitlines() if "audit" in l)))
    chk.ok("missing dependency: libmissing.so.1: cannot open shared object file"
           in base.rank_out(0), "the missing dependency's error names it",
           base.rank_out(0))
    check_counts(chk, "spack", [root], bt, lt)


# ---------------------------------------------------------------- hazards

FORK_APP = r'''
import os, subprocess, sys
rank = os.environ.get("PMI_RANK", "0")
def say(*a):
    print("[rank %s]" % rank, *a, flush=True)
import json, email.parser
r = subprocess.run([sys.executable, "-c", "import json, sqlite3; print(json.dumps("
                    "sqlite3.connect(':memory:').execute('select 2*21').fetchone()))"],
                   capture_output=True, text=True)
say("python child:", r.returncode, r.stdout.strip(), r.stderr.strip())
r = subprocess.run(["/bin/sh", "-c", "echo shell child $((6*7))"], capture_output=True, text=True)
say(r.returncode, r.stdout.strip(), r.stderr.strip())
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-c", "import sqlite3; print('[rank %s] exec "
                              "child', sqlite3.sqlite_version_info[0])" % rank])
_, status = os.waitpid(pid, 0)
say("fork+exec child status", status)
pid = os.fork()
if pid == 0:
    import decimal
    os.write(1, ("[rank %s] fork child decimal %s\n" % (rank, decimal.Decimal(1) / 3)).encode())
    os._exit(0)
os.waitpid(pid, 0)
say("done")
'''

TLS_SOURCE = r'''
__thread char tls_block[1024] __attribute__((tls_model("initial-exec")));
int tls_touch(void) { tls_block[0] = 1; return tls_block[0]; }
__attribute__((constructor)) static void init(void) { tls_touch(); }
'''

NOW_SOURCE = r'''
#include <Python.h>
int main(int argc, char** argv) { return Py_BytesMain(argc, argv); }
'''


def test_hazards(chk, args, wd):
    print("\n== hazards")
    env = L.base_env()
    d = wd.sub("hazards")
    app = os.path.join(d, "fork.py")
    with open(app, "w") as f:
        f.write(FORK_APP)
    # fork+exec of Python and of other programs from a rank.
    compare_at_each_size(chk, args, wd, "fork", env, [args.python, app])

    # A preloaded library with initial-exec TLS next to the shim.
    tls = os.path.join(d, "libtls.so")
    src = tls + ".c"
    with open(src, "w") as f:
        f.write(TLS_SOURCE)
    if run_checked(chk, ["cc", "-shared", "-fPIC", "-o", tls, src], "builds libtls.so"):
        e = L.with_shim(env, args.shim + ":" + tls)
        e["LD_AUDIT"] = args.audit
        base = L.mpirun("tls-plain", args, wd, 2, [args.python, app], dict(env, LD_PRELOAD=tls))
        other = L.mpirun("tls-libs", args, wd, 2, [args.python, app], e)
        L.compare_runs(chk, base, other, 2, "(initial-exec TLS preloaded)")

    # A BIND_NOW interpreter: python3.12 built as a program linked -z now.
    pythons = pyenv_pythons()
    if chk.ok(bool(pythons), "a pyenv CPython for the BIND_NOW interpreter"):
        version, python, prefix = pythons[-1]
        now = os.path.join(d, "python%s-now" % version)
        src = now + ".c"
        with open(src, "w") as f:
            f.write(NOW_SOURCE)
        inc = os.path.join(prefix, "include", "python" + version)
        lib = os.path.join(prefix, "lib")
        if run_checked(chk, ["cc", "-o", now, src, "-I" + inc, "-L" + lib,
                             "-lpython" + version, "-Wl,-z,now",
                             "-Wl,--enable-new-dtags,-rpath," + lib],
                       "builds a BIND_NOW interpreter"):
            flags = subprocess.run(["readelf", "-d", now], capture_output=True, text=True).stdout
            chk.ok("BIND_NOW" in flags or "NOW" in flags, "the interpreter is BIND_NOW", flags)
            stdlib = os.path.join(d, "stdlib.py")
            with open(stdlib, "w") as f:
                f.write(STDLIB_APP)
            base = L.mpirun("now-plain", args, wd, 2, [now, stdlib], env)
            L.sanity_rank_output(chk, base, 2)
            other = L.mpirun("now-libs", args, wd, 2, [now, stdlib], with_libraries(args, env))
            L.compare_runs(chk, base, other, 2, "(BIND_NOW interpreter)")

    # A program that is not Python, under mpiexec with both libraries set.
    for prog in (["/bin/ls", "-1", "/"], ["/bin/sh", "-c", "echo $((1+2)); cat /proc/self/maps "
                                          "| grep -c pyimport-audit || true"]):
        base = L.mpirun("other-plain", args, wd, 2, prog, env)
        other = L.mpirun("other-libs", args, wd, 2, prog, with_libraries(args, env))
        L.compare_runs(chk, base, other, 2, "(%s with the libraries set)" % prog[0])
        chk.ok(not node_dirs(), "%s: no node directory made" % prog[0])
    base = L.mpirun("sh-maps", args, wd, 1, ["/bin/sh", "-c", "grep -c pyimport-audit "
                                             "/proc/self/maps || true"],
                    with_libraries(args, env))
    chk.ok(base.rank_out(0).strip() == "0",
           "the audit library unloads itself in a program that is not Python",
           base.describe() + base.rank_out(0))


def main():
    args = parse()
    chk = L.Checker("loader_audit")
    wd = L.Workdir(keep=args.keep)
    for p in (args.shim, args.audit):
        chk.ok(os.path.isfile(p), "library exists: %s" % p)
    try:
        for what in args.what:
            {"pyenv": test_pyenv, "spack": test_spack, "hazards": test_hazards}[what](chk, args,
                                                                                      wd)
    finally:
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
