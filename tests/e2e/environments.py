#!/usr/bin/env python3
"""Python environments as users run them, with and without the shim.

    environments.py --shim build/shim/libpyimport.so --mpiexec mpiexec \\
                    --python /usr/bin/python3

A virtual environment made with `python -m venv --without-pip`, holding a
package of its own and an editable-style .pth naming a source tree, run by path (`venv/bin/python app.py`, as job scripts do:
no `activate`, no $VIRTUAL_ENV), at 1, 2 and 4 ranks:

  * per-rank output and exit code equal without and with the shim;
  * rank 0 caches the venv's site-packages and the source tree (PYIMPORT_LOG=2
    names them);
  * under strace, rank 1 makes no call under either with the shim, and some
    without (so the count can fail).
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402

APP = """\
import os, sys
import venvpkg
from venvpkg import sub
import editable_pkg
r = int(os.environ.get("PMI_RANK", "0"))
print("[rank %d] prefix is the venv: %s" % (r, sys.prefix == os.environ["E2E_VENV"]))
print("[rank %d] %s %s %d" % (r, venvpkg.NAME, sub.twice(21), len(sys.modules) > 10))
print("[rank %d] editable: %s" % (r, editable_pkg.WHERE))
print("[rank %d] done" % r)
"""


def make_venv(args, d):
    venv = os.path.join(d, "venv")
    subprocess.run([args.python, "-m", "venv", "--without-pip", venv], check=True)
    version = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                              "import sys; print('%d.%d' % sys.version_info[:2])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    site = os.path.join(venv, "lib", "python" + version, "site-packages")
    pkg = os.path.join(site, "venvpkg")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("NAME = 'venvpkg'\n")
    with open(os.path.join(pkg, "sub.py"), "w") as f:
        f.write("def twice(x):\n    return 2 * x\n")
    # An editable install: a .pth line naming a source tree outside the venv.
    src = os.path.join(d, "src")
    os.makedirs(os.path.join(src, "editable_pkg"))
    with open(os.path.join(src, "editable_pkg", "__init__.py"), "w") as f:
        f.write("WHERE = 'source tree'\n")
    with open(os.path.join(site, "__editable__.editable_pkg.pth"), "w") as f:
        f.write(src + "\n")
    for tree in (site, src):
        subprocess.run([os.path.join(venv, "bin", "python"), "-m", "compileall", "-q", tree],
                       check=True, stdout=subprocess.DEVNULL)
    app = os.path.join(d, "app.py")
    with open(app, "w") as f:
        f.write(APP)
    return venv, site, src, app


def calls_under(trace, prefix):
    n = 0
    with open(trace) as f:
        for line in f:
            if prefix in line:
                n += 1
    return n


def test_venv(chk, args, wd):
    print("\n== a venv run by path")
    d = wd.sub("venv")
    venv, site, src, app = make_venv(args, d)
    python = os.path.join(venv, "bin", "python")
    env = L.base_env()
    env["E2E_VENV"] = venv
    for n in (1, 2, 4):
        base = L.mpirun("venv-%d-noshim" % n, args, wd, n, [python, app], env)
        chk.ok(base.rc == 0, "baseline venv job at %d ranks exits 0" % n, base.describe())
        L.sanity_rank_output(chk, base, n)
        shim = L.mpirun("venv-%d-shim" % n, args, wd, n, [python, app],
                        L.with_shim(env, args.shim, PYIMPORT_LOG=2))
        L.compare_runs(chk, base, shim, n, "(venv, %d ranks)" % n, check_stderr=False)
        for tree, what in ((site, "the venv's site-packages"), (src, "the editable source tree")):
            chk.ok(re.search(r"prefix %s$" % re.escape(tree), shim.rank_err(0), re.M) is not None,
                   "rank 0 caches %s (%d ranks)" % (what, n), shim.describe())

    # strace per rank: the wrapper traces the interpreter only.
    counts = {}
    for label, shim in (("noshim", False), ("shim", True)):
        traces = wd.sub("venv-strace-" + label)
        run_env = L.with_shim(env, args.shim, PYIMPORT_PROFILE="off") if shim else dict(env)
        preload = run_env.pop("LD_PRELOAD", "")
        wrapper = ("exec strace -f -qq -o %s/trace.$PMI_RANK -e trace=%%file,getdents64 "
                   "env LD_PRELOAD=%s %s %s" % (traces, preload, python, app))
        res = L.mpirun("venv-strace-" + label, args, wd, 4, ["sh", "-c", wrapper], run_env)
        chk.ok(res.rc == 0, "venv job under strace (%s) exits 0" % label, res.describe())
        for tree in (site, src):
            counts[label, tree] = calls_under(os.path.join(traces, "trace.1"), tree)
    for tree, what in ((site, "the venv's site-packages"), (src, "the editable source tree")):
        chk.ok(counts["noshim", tree] > 2, "without the shim rank 1 makes calls under %s (%d)"
               % (what, counts["noshim", tree]))
        chk.ok(counts["shim", tree] == 0, "with the shim rank 1 makes none under %s (%d)"
               % (what, counts["shim", tree]))


def main():
    args = L.parse_args(__doc__.split("\n\n")[0])
    chk = L.Checker("e2e environments")
    L.prerequisites(chk, args)
    if not chk.ok(bool(L.shutil.which("strace")), "strace is installed"):
        chk.finish()
    wd = L.Workdir(args.keep)
    try:
        test_venv(chk, args, wd)
    finally:
        wd.close()
    chk.finish()


if __name__ == "__main__":
    main()
