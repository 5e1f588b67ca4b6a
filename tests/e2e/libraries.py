#!/usr/bin/env python3
"""Extension modules and their libraries loaded from the node-local mirror.

    libraries.py --shim build/shim/libpyimport.so --mpiexec mpiexec \\
                 --python /usr/bin/python3

Builds a fixture with gcc and the interpreter's headers, in a PYTHONPATH
directory SITE (so it is under the cached prefixes):

  fixpkg/_core.EXT        DT_RPATH $ORIGIN/../fixpkg.libs:$ORIGIN/../fixpkg.libs/$LIB;
                          needs liba.so and libd.so
  fixpkg.libs/LIB/libd.so LIB: what the loader substitutes for $LIB
                          (ld.so --list-diagnostics: dl_dst_lib)
  fixpkg.libs/liba.so     DT_RUNPATH $ORIGIN; needs libb.so.1; a constructor
  fixpkg.libs/libb.so.1 -> libb.so.1.2.3 (SONAME libb.so.1)
  fixpkg/_provider.EXT    defines provided_value
  fixpkg/_user.EXT        uses provided_value, found only through RTLD_GLOBAL
  fixpkg/_broken.EXT      needs libmissing.so.1, which is nowhere
  fixpkg/unused.so        never loaded

and runs libraries_app.py (what it prints: loads, handles, constructor runs,
dladdr names, error messages) with PYIMPORT_NODE_DIR set to the test's own
directory under /dev/shm:

  * at -n 1, 2 and 4 without and with the shim: per-rank stdout and exit code
    identical, rank 0's PYIMPORT_STATS summary counts served dlopen calls
    (the -n 2 and -n 4 jobs use the profile the -n 1 job wrote), and no
    node-local file is left after the job;
  * under strace at -n 2: rank 1 makes no system call at all on a path under
    SITE (rank 0, which reads the fixture, makes some), and its loader opens
    liba.so in the node directory; the deliberate misses (a missing file, a
    non-library, RTLD_NOLOAD of a library never loaded: they go to the
    filesystem by design) are left out of that run;
  * two jobs at once: output identical, both served, nothing left;
  * a job in which rank 1 dies of SIGKILL (and mpiexec ends the others)
    leaves nothing: the reaper removes its node-local directory within 10 s;
  * a missing node directory, a pyimport-<uid> directory others can read, a
    full tmpfs and a noexec tmpfs (both mounted by the test): one line on
    stderr, output identical, nothing left.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402

APP = os.path.join(L.HERE, "libraries_app.py")

MODULE = r"""
#include <Python.h>
%(decl)s
static PyObject* value(PyObject* self, PyObject* args) { return PyLong_FromLong(%(expr)s); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""


def build_fixture(chk, python, site, stub):
    info = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']);"
                           "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                          capture_output=True, text=True, check=True).stdout.split()
    include, ext = info[0], info[1]
    pkg, libs = os.path.join(site, "fixpkg"), os.path.join(site, "fixpkg.libs")
    for d in (pkg, libs):
        os.makedirs(d)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("")

    def cc(out, source, *flags):
        src = out + ".c"
        with open(src, "w") as f:
            f.write(source)
        r = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", out, src] + list(flags),
                           capture_output=True, text=True)
        os.unlink(src)
        return chk.ok(r.returncode == 0, "built %s" % os.path.relpath(out, site),
                      r.stdout + r.stderr)

    ok = cc(os.path.join(libs, "libb.so.1.2.3"), "int b_value(void) { return 7; }\n",
            "-Wl,-soname,libb.so.1")
    os.symlink("libb.so.1.2.3", os.path.join(libs, "libb.so.1"))
    ok &= cc(os.path.join(libs, "liba.so"),
             "extern int b_value(void);\n"
             "static int inits;\n"
             "__attribute__((constructor)) static void count(void) { ++inits; }\n"
             "int a_init_count(void) { return inits; }\n"
             "int a_value(void) { return 6 * b_value(); }\n",
             "-Wl,-soname,liba.so", "-L" + libs, "-l:libb.so.1",
             "-Wl,--enable-new-dtags,-rpath,$ORIGIN")
    # What the loader substitutes for $LIB, as it says itself.
    lib = None
    for loader in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(loader):
            out = subprocess.run([loader, "--list-diagnostics"], capture_output=True,
                                 text=True).stdout
            m = re.search(r'^dl_dst_lib="([^"]*)"', out, re.M)
            lib = m.group(1) if m else None
            break
    if not chk.ok(bool(lib), "the loader names its $LIB (%s)" % lib):
        return False
    os.makedirs(os.path.join(libs, lib))
    ok &= cc(os.path.join(libs, lib, "libd.so"), "int d_value(void) { return 100; }\n",
             "-Wl,-soname,libd.so")
    ok &= cc(os.path.join(stub, "libmissing.so.1"), "int missing_value(void) { return 1; }\n",
             "-Wl,-soname,libmissing.so.1")
    ok &= cc(os.path.join(pkg, "unused.so"), "int unused(void) { return 0; }\n")

    def module(name, decl, expr, *flags):
        return cc(os.path.join(pkg, name + ext), MODULE % dict(name=name, decl=decl, expr=expr),
                  "-I" + include, *flags)

    ok &= module("_core", "extern int a_value(void); extern int d_value(void);",
                 "a_value() + d_value()", "-L" + libs, "-l:liba.so", "-L" + os.path.join(libs, lib),
                 "-l:libd.so",
                 "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../fixpkg.libs:$ORIGIN/../fixpkg.libs/$LIB")
    ok &= module("_provider", "int provided_value(void) { return 5; }", "provided_value()")
    ok &= module("_user", "extern int provided_value(void);", "2 * provided_value()")
    ok &= module("_broken", "extern int missing_value(void);", "missing_value()",
                 "-L" + stub, "-l:libmissing.so.1",
                 "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../fixpkg.libs")
    subprocess.run([python, "-m", "compileall", "-q", site], check=True,
                   stdout=subprocess.DEVNULL)
    return ok


def leftovers(node_dir):
    """Job directories in the user's directory under node_dir."""
    user = os.path.join(node_dir, "pyimport-%d" % os.geteuid())
    return sorted(os.listdir(user)) if os.path.isdir(user) else []


def served_dlopens(res):
    m = re.search(r"dlopen (\d+)/(\d+)", res.rank_err(0))
    return int(m.group(1)) if m else -1


def without_summary(text):
    return "".join(l for l in text.splitlines(True) if not l.startswith("pyimport: "))


def main():
    args = L.parse_args(__doc__.split("\n\n")[0])
    chk = L.Checker("e2e libraries")
    L.prerequisites(chk, args)
    chk.ok(bool(shutil.which("gcc")) and bool(shutil.which("strace")), "gcc and strace installed")
    wd = L.Workdir(args.keep, "pyimport-libraries-")
    node_dir = tempfile.mkdtemp(prefix="pyimport-e2e-", dir="/dev/shm")
    mounts = []
    try:
        site = wd.sub("site")
        if not build_fixture(chk, args.python, site, wd.sub("stub")):
            chk.finish()
        env = L.base_env()
        env["PYTHONPATH"] = site
        prog = [args.python, APP, site]

        def shim_env(**extra):
            return L.with_shim(env, args.shim, PYIMPORT_STATS=1, PYIMPORT_NODE_DIR=node_dir,
                               **extra)

        for n in (1, 2, 4):
            base = L.mpirun("without shim -n %d" % n, args, wd, n, prog, env)
            L.sanity_rank_output(chk, base, n)
            shim = L.mpirun("with shim -n %d" % n, args, wd, n, prog, shim_env())
            L.compare_runs(chk, base, shim, n, "-n %d" % n, check_stderr=False)
            for r in range(n):
                chk.ok(without_summary(shim.rank_err(r)) == base.rank_err(r),
                       "-n %d rank %d stderr identical but for the summary" % (n, r),
                       L.diff(base.rank_err(r), shim.rank_err(r)))
            served = served_dlopens(shim)
            chk.ok(served >= 5 * n, "-n %d: the summary counts >= %d served dlopen calls (got %d)"
                   % (n, 5 * n, served), shim.rank_err(0))
            chk.ok(leftovers(node_dir) == [], "-n %d: no node-local files left" % n,
                   leftovers(node_dir))
        if chk.failures:
            chk.finish()

        reference = L.mpirun("without shim -n 2 (reference)", args, wd, 2, prog, env)

        # strace: rank 1 never touches the fixture (but for the deliberate
        # misses, which go to the filesystem by design and are left out).
        quiet = L.mpirun("without shim -n 2 --no-misses", args, wd, 2, prog + ["--no-misses"], env)
        traces = wd.sub("traces")
        traced = ["sh", "-c", 'exec strace -f -qq -y -o "$0/trace.$PMI_RANK" '
                  '-e trace=%file,%desc,getdents64 env "$@"', traces,
                  # RECHECK=0: after its fork child ends, a rank would check each
                  # directory once more (README, Limits); counted here is the rest.
                  "LD_PRELOAD=" + args.shim, "PYIMPORT_NODE_DIR=" + node_dir,
                  "PYIMPORT_RECHECK=0"] + prog + [
                      "--no-misses"]
        res = L.mpirun("with shim under strace -n 2", args, wd, 2, traced, env)
        L.compare_runs(chk, quiet, res, 2, "(under strace)", check_stderr=False)
        counts = []
        mirrored = re.compile(re.escape(node_dir) + r'[^"<>]*')  # node-local paths
        for r in range(2):
            lines = [l for l in L.read(os.path.join(traces, "trace.%d" % r)).splitlines()
                     if site in mirrored.sub("", l) and "execve(" not in l]
            counts.append(lines)
        loads = [l for l in L.read(os.path.join(traces, "trace.1")).splitlines()
                 if re.search(r"openat\(.*%s.*liba\.so\", O_RDONLY\|O_CLOEXEC\) = \d"
                              % re.escape(node_dir), l)]
        chk.ok(len(loads) == 1, "under strace: rank 1's loader opened liba.so once, in the "
               "node directory", "\n".join(loads))
        chk.ok(len(counts[0]) > 0, "under strace: rank 0 reads the fixture (%d calls)"
               % len(counts[0]))
        chk.ok(counts[1] == [], "under strace: rank 1 makes no call on a path under SITE, "
               "the dynamic loader's included (got %d)" % len(counts[1]),
               "\n".join(counts[1][:50]))

        # A killed job (Hydra kills every rank when one dies): the node's
        # reaper removes its directory once no rank holds it, within 10 s.
        killed = L.mpirun("with shim, rank 1 killed", args, wd, 2, prog + ["--kill"],
                          shim_env(), timeout=120)
        chk.ok(killed.rc != 0, "the killed job fails (rc=%s)" % killed.rc)
        deadline = time.monotonic() + 10
        while leftovers(node_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        chk.ok(leftovers(node_dir) == [], "the killed job left nothing on the node within 10 s",
               leftovers(node_dir))
        after = L.mpirun("with shim after the killed job", args, wd, 2, prog, shim_env())
        L.compare_runs(chk, reference, after, 2, "after a killed job", check_stderr=False)
        chk.ok(leftovers(node_dir) == [], "the next job left nothing", leftovers(node_dir))

        # Two jobs of one user at once: each its own directory, neither
        # disturbs the other, nothing left.
        results = {}

        def job(name):
            results[name] = L.mpirun("with shim, concurrent job " + name, args, wd, 2, prog,
                                     shim_env())
        threads = [threading.Thread(target=job, args=(n,)) for n in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name, res in sorted(results.items()):
            L.compare_runs(chk, reference, res, 2, "(concurrent job %s)" % name,
                           check_stderr=False)
            chk.ok(served_dlopens(res) >= 10, "concurrent job %s: served dlopen calls" % name,
                   res.rank_err(0))
        chk.ok(leftovers(node_dir) == [], "concurrent jobs: nothing left", leftovers(node_dir))

        # Unusable node directories: one line, same output, nothing left.
        private = os.path.join(node_dir, "open")
        os.makedirs(os.path.join(private, "pyimport-%d" % os.geteuid()))
        os.chmod(os.path.join(private, "pyimport-%d" % os.geteuid()), 0o755)
        cases = [("missing", os.path.join(node_dir, "missing"), "No such file"),
                 ("readable by others", private, "not a directory private to this user")]
        for label, opts in (("full", "size=64k"), ("noexec", "noexec")):
            mnt = os.path.join(node_dir, label)
            os.mkdir(mnt)
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt],
                               capture_output=True, text=True)
            if chk.ok(r.returncode == 0, "mounted a %s tmpfs" % label, r.stderr):
                mounts.append(mnt)
                cases.append((label + " tmpfs", mnt, "No space" if label == "full" else "noexec"))
        for label, directory, reason in cases:
            res = L.mpirun("with shim, node directory " + label, args, wd, 2, prog,
                           L.with_shim(env, args.shim, PYIMPORT_NODE_DIR=directory))
            L.compare_runs(chk, reference, res, 2, "(node directory %s)" % label,
                           check_stderr=False)
            err0 = res.rank_err(0).splitlines()
            chk.ok(len(err0) == 1 and reason in err0[0] and "PYIMPORT_NODE_DIR" in err0[0],
                   "node directory %s: one line on rank 0 saying why" % label, res.rank_err(0))
            chk.ok(res.rank_err(1) == "", "node directory %s: nothing from rank 1" % label,
                   res.rank_err(1))
            chk.ok(leftovers(directory) == [], "node directory %s: nothing left" % label,
                   leftovers(directory))
    finally:
        for mnt in mounts:
            subprocess.run(["umount", mnt])
        shutil.rmtree(node_dir, ignore_errors=True)
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
