#!/usr/bin/env python3
"""Python environments as users run them, with and without the shim: the matrix.

    environments.py --shim build/shim/libpyimport.so --mpiexec mpiexec \\
                    --python /usr/bin/python3 [outputs] [strace]

The cases (applications in env_apps.py, each in a directory of its own):

   1 system     Debian's interpreter importing numpy and scipy
   2 venv       a venv (--without-pip) with its own copies of numpy and scipy,
                run by path (venv/bin/python app.py: no activate, no $VIRTUAL_ENV)
   3 venv-sys   a venv made with --system-site-packages (numpy and scipy from
                the system's dist-packages, a package of its own)
   4 pyenv      a pyenv-built CPython (shared libpython, no numpy) run by path,
                a standard-library-heavy script
   5 local      a script importing modules from its own directory
   6 dash-m     python -m pkg, the working directory holding pkg/
   7 isolated   python -I (a module next to the script must not be importable)
   8 no-site    python -S
   9 editable   the venv's editable-style .pth naming a source tree
  10 zip        PYTHONPATH=mods.zip, modules imported from the archive
  11 data       after an MPI barrier (ctypes) rank 0 writes a data file into the
                script's directory; after a second one every rank lists the
                directory and reads the file (the listing and the file's own
                calls are not counted under strace)
  12 learned    a layout the search path does not foresee: the script puts
                <fixtures>/extlib (outside every prefix and the script's
                directory) first on sys.path and imports a module and a
                package from it; the profile (PYIMPORT_PROFILE) teaches the
                next job those paths

outputs: every case at 1, 2 and 4 ranks without and with the shim: per-rank
stdout and stderr (the shim's own PYIMPORT_LOG=2 lines removed) and the exit
codes equal; the baseline prints what the case claims (numpy from the venv,
the local module from the script's directory ...); rank 0 caches the venvs'
site-packages and the source tree (PYIMPORT_LOG=2).  Case 12 keeps the
default profile (auto, in the test's XDG_CACHE_HOME): its 2- and 4-rank jobs
snapshot paths its 1-rank job learned.

strace: every case at 4 ranks without and with the shim (PYIMPORT_PROFILE=off:
the full snapshot), strace per rank on the interpreter only (env_trace.py);
calls of ranks 1..3 on the case's paths (interpreter prefix, venv, script
directory, source tree, zip; env_trace.py says which calls are not counted)
are counted: without the shim there are many (the counter works); with it
none under the trees rank 0 caches (site-packages, the source tree, the pyenv
standard library) and at most ALLOWED in all, per rank.  Per-rank stdout under
strace is the same with and without the shim.  A table per case (counted calls
by path, what was not counted and why, rank 0's PYIMPORT_STATS=1 summary), and
one for all cases at the end.  Case 12 runs with a fresh profile directory
of its own (PYIMPORT_PROFILE=<dir>, not off), twice: in the first job ranks
1..3 may make calls under extlib (nothing is known of it yet); in the second,
which snapshots what the first learned, at most LEARNED_ALLOWED per rank
under extlib and ALLOWED + LEARNED_ALLOWED in all (one statx per live root:
the script's directory and extlib).

E2E_ENV_CASES=2,10 (numbers or names) runs only those cases;
E2E_PYENV_PYTHON names the pyenv interpreter (default: the newest 3.12 in
`pyenv root`/versions).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as L  # noqa: E402
import env_apps as A  # noqa: E402
import env_trace as T  # noqa: E402

NRANKS_STRACE = 4
ALLOWED = 1          # calls per rank 1..3 on the case's paths with the shim
LEARNED_ALLOWED = 1  # calls per rank 1..3 under case 12's extlib, second job
SANITY_MIN = 10      # ... and at least this many without it
MARKER = "/nonexistent/pyimport-e2e-after-barrier"
STRACE_TIMEOUT = int(os.environ.get("E2E_STRACE_TIMEOUT", "240"))
SHIM_LOG_RE = re.compile(r"^pyimport\[\d+ r\d+ \d\]: ")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def compileall(python, *trees):
    for t in trees:
        subprocess.run([python, "-m", "compileall", "-q", t], check=True,
                       stdout=subprocess.DEVNULL)


def py_version(python):
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def py_prefix(python):
    return subprocess.run([python, "-c", "import sys; print(sys.base_prefix)"],
                          check=True, capture_output=True, text=True, cwd="/",
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout.strip()


def find_pyenv_python():
    if os.environ.get("E2E_PYENV_PYTHON"):
        return os.environ["E2E_PYENV_PYTHON"]
    root = None
    if shutil.which("pyenv"):
        r = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        root = r.stdout.strip() if r.returncode == 0 else None
    root = root or os.path.expanduser("~/.pyenv")
    vdir = os.path.join(root, "versions")
    try:
        names = os.listdir(vdir)
    except OSError:
        return None
    best = None
    for n in names:
        m = re.fullmatch(r"3\.12\.(\d+)", n)
        p = os.path.join(vdir, n, "bin", "python3")
        if m and os.access(p, os.X_OK) and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


class Case:
    def __init__(self, num, name, title, python, argv, roots, expect, cwd=None, env=None,
                 cached=(), expected_after_marker=(), numpy=False, learned_tree=None):
        self.num, self.name, self.title = num, name, title
        self.python, self.argv, self.roots = python, list(argv), list(roots)
        self.expect = list(expect)        # substrings every rank's baseline output has
        self.cwd, self.env = cwd, dict(env or {})
        self.cached = list(cached)        # (tree, what) rank 0 must name as a prefix
        self.expected_after_marker = set(expected_after_marker)
        self.numpy = numpy
        # a directory outside the prefixes the profile must learn (case 12):
        # under strace the case runs twice with a profile directory of its own
        self.learned_tree = learned_tree
        self.cleanup = []                 # files removed before every run

    def prog(self):
        return [self.python] + self.argv

    def label(self):
        return "%02d-%s" % (self.num, self.name)


class Fixtures:
    """Everything the cases share, built once: two venvs, the apps' directories,
    the zip.  The numpy/scipy copies are made with cp -a (mtimes kept, so the
    copied __pycache__ stays valid)."""

    def __init__(self, args, wd, chk):
        t0 = time.monotonic()
        self.args, self.wd = args, wd
        py = args.python
        self.sys_prefix = py_prefix(py)
        top = wd.sub("fixtures")
        self.top = top

        # the venv of cases 2 and 9: own numpy/scipy, venvpkg, an editable .pth
        self.venv = os.path.join(top, "venv")
        subprocess.run([py, "-m", "venv", "--without-pip", self.venv], check=True)
        self.venv_python = os.path.join(self.venv, "bin", "python")
        ver = py_version(self.venv_python)
        self.venv_site = os.path.join(self.venv, "lib", "python" + ver, "site-packages")
        dist = "/usr/lib/python3/dist-packages"
        for name in os.listdir(dist):
            if re.match(r"(numpy|scipy)([-.].*(egg|dist)-info)?$", name):
                subprocess.run(["cp", "-a", os.path.join(dist, name), self.venv_site],
                               check=True)
        write(os.path.join(self.venv_site, "venvpkg", "__init__.py"), "NAME = 'venvpkg'\n")
        write(os.path.join(self.venv_site, "venvpkg", "sub.py"),
              "def twice(x):\n    return 2 * x\n")
        self.src = os.path.join(top, "src")
        write(os.path.join(self.src, "editable_pkg", "__init__.py"), "WHERE = 'source tree'\n")
        write(os.path.join(self.src, "editable_pkg", "mod.py"), "def half(x):\n    return x // 2\n")
        write(os.path.join(self.venv_site, "__editable__.editable_pkg.pth"), self.src + "\n")
        compileall(self.venv_python, os.path.join(self.venv_site, "venvpkg"), self.src)

        # the venv of case 3: system site packages, a package of its own
        self.venv_sys = os.path.join(top, "venv-sys")
        subprocess.run([py, "-m", "venv", "--without-pip", "--system-site-packages",
                        self.venv_sys], check=True)
        self.venv_sys_python = os.path.join(self.venv_sys, "bin", "python")
        self.venv_sys_site = os.path.join(self.venv_sys, "lib", "python" + ver, "site-packages")
        write(os.path.join(self.venv_sys_site, "venvpkg", "__init__.py"), "NAME = 'venvpkg'\n")
        write(os.path.join(self.venv_sys_site, "venvpkg", "sub.py"),
              "def twice(x):\n    return 2 * x\n")
        compileall(self.venv_sys_python, self.venv_sys_site)

        self.pyenv_python = find_pyenv_python()
        self.pyenv_prefix = (os.path.realpath(py_prefix(self.pyenv_python))
                             if self.pyenv_python else None)

        # the zip of case 10
        self.zip = os.path.join(top, "zip", "mods.zip")
        os.makedirs(os.path.dirname(self.zip))
        with zipfile.ZipFile(self.zip, "w") as z:
            for name, text in A.ZIP_MEMBERS.items():
                z.writestr(name, text)

        # the directory of case 12, outside every prefix and every script's
        # directory
        self.extlib = os.path.join(top, "extlib")
        for rel, text in A.LEARNED_FILES.items():
            write(os.path.join(self.extlib, rel), text)
        compileall(py, self.extlib)
        self.elapsed = time.monotonic() - t0

    def app_dir(self, name, script=None, files=None, python=None):
        d = os.path.join(self.top, "app-" + name)
        os.makedirs(d)
        for rel, text in (files or {}).items():
            write(os.path.join(d, rel), text)
        path = None
        if script is not None:
            path = os.path.join(d, "app.py")
            write(path, script)
        if files:
            # byte-compiled as Python's first import would: the modules, not
            # the script (a script run as __main__ gets no __pycache__ entry)
            compileall(python or self.args.python, *[os.path.join(d, rel) for rel in files])
        return d, path


def make_cases(args, fx):
    py = args.python
    usr = (fx.sys_prefix, "prefix")
    cases = []

    d, app = fx.app_dir("system", A.NUMPY_APP)
    cases.append(Case(1, "system", "Debian's python3, numpy and scipy", py, [app],
                      [usr, (d, "tree")], ["from the system dist-packages", "in a venv: False"],
                      env={"E2E_PREFIX": fx.sys_prefix},
                      cached=[("/usr/lib/python3/dist-packages", "the system dist-packages")],
                      numpy=True))

    d, app = fx.app_dir("venv", A.NUMPY_APP)
    cases.append(Case(2, "venv", "venv with its own numpy and scipy, run by path",
                      fx.venv_python, [app], [(fx.venv, "prefix"), usr, (d, "tree")],
                      ["from the venv", "in a venv: True", "sys.prefix is %s True" % fx.venv],
                      env={"E2E_PREFIX": fx.venv, "E2E_VENV": fx.venv},
                      cached=[(fx.venv_site, "the venv's site-packages")], numpy=True))

    d, app = fx.app_dir("venv-sys", A.NUMPY_APP + "")
    cases.append(Case(3, "venv-sys", "venv --system-site-packages, numpy and scipy",
                      fx.venv_sys_python, [app], [(fx.venv_sys, "prefix"), usr, (d, "tree")],
                      ["from the system dist-packages", "in a venv: True",
                       "sys.prefix is %s True" % fx.venv_sys],
                      env={"E2E_PREFIX": fx.venv_sys, "E2E_VENV": fx.venv_sys},
                      cached=[(fx.venv_sys_site, "the venv's site-packages"),
                              ("/usr/lib/python3/dist-packages", "the system dist-packages")],
                      numpy=True))

    if fx.pyenv_python:
        d, app = fx.app_dir("pyenv", A.STDLIB_APP)
        ver = py_version(fx.pyenv_python)
        cases.append(Case(4, "pyenv", "pyenv CPython %s by path, stdlib-heavy" % ver,
                          fx.pyenv_python, [app], [(fx.pyenv_prefix, "prefix"), (d, "tree")],
                          ["python %s" % ver, "sqlite (45,"],
                          cached=[(os.path.join(fx.pyenv_prefix, "lib", "python" + ver),
                                   "its standard library")]))

    d, app = fx.app_dir("local", A.LOCAL_APP, A.LOCAL_FILES)
    cases.append(Case(5, "local", "script importing modules from its own directory", py, [app],
                      [usr, (d, "tree")],
                      ["sys.path[0] is the script's directory True",
                       "localmod local module from the script's directory True"]))

    d, _ = fx.app_dir("dash-m", None, A.PKG_FILES)
    cases.append(Case(6, "dash-m", "python -m pkg from the working directory", py,
                      ["-m", "pkg"], [usr, (d, "tree")],
                      ["run as pkg.__main__ package pkg 144",
                       "pkg from the working directory True"], cwd=d))

    d, app = fx.app_dir("isolated", A.ISOLATED_APP, A.ISOLATED_FILES)
    cases.append(Case(7, "isolated", "python -I", py, ["-I", app], [usr, (d, "tree")],
                      ["flags: isolated 1", "script's directory on sys.path False",
                       "decoy next to the script not importable: ModuleNotFoundError"]))

    d, app = fx.app_dir("no-site", A.NOSITE_APP)
    cases.append(Case(8, "no-site", "python -S", py, ["-S", app], [usr, (d, "tree")],
                      ["no_site 1", "site imported False",
                       "numpy not importable without site: ModuleNotFoundError"]))

    d, app = fx.app_dir("editable", A.EDITABLE_APP)
    cases.append(Case(9, "editable", "venv's editable .pth to a source tree", fx.venv_python,
                      [app], [(fx.venv, "prefix"), usr, (fx.src, "tree"), (d, "tree")],
                      ["venvpkg venvpkg 42 in the venv True",
                       "editable source tree 21 from the source tree True"],
                      env={"E2E_PREFIX": fx.venv, "E2E_VENV": fx.venv, "E2E_SRC": fx.src},
                      cached=[(fx.venv_site, "the venv's site-packages"),
                              (fx.src, "the editable source tree")]))

    d, app = fx.app_dir("zip", A.ZIP_APP)
    cases.append(Case(10, "zip", "PYTHONPATH=mods.zip", py, [app],
                      [usr, (fx.zip, "file"), (d, "tree")],
                      ["zipmod zipped module from the zip True", "zippkg.sub 16 from the zip True",
                       "loader zipimporter"],
                      env={"PYTHONPATH": fx.zip, "E2E_ZIP": fx.zip}))

    d, app = fx.app_dir("data", A.DATA_APP)
    data = os.path.join(d, "data.txt")
    c = Case(11, "data", "rank 0 writes a file into the script's directory, all read it", py,
             [app], [usr, (d, "tree")],
             ["listing: app.py", "listing: data.txt", "data: line 4 of"],
             env={"E2E_MARKER": MARKER}, expected_after_marker=[d, data])
    c.cleanup.append(data)
    cases.append(c)

    d, app = fx.app_dir("learned", A.learned_app(fx.extlib))
    cases.append(Case(12, "learned", "sys.path.insert(0, a directory outside the prefixes)", py,
                      [app], [usr, (d, "tree"), (fx.extlib, "tree")],
                      ["extmod module outside the prefixes from extlib True",
                       "extpkg extpkg helper 27 from extlib True",
                       "extlib first on sys.path True"],
                      learned_tree=fx.extlib))
    return cases


def select(cases):
    want = os.environ.get("E2E_ENV_CASES", "").strip()
    if not want:
        return cases
    keys = {w.strip() for w in want.split(",") if w.strip()}
    return [c for c in cases if str(c.num) in keys or c.name in keys]


def case_env(c):
    env = L.base_env()
    for k in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYENV_VERSION"):
        env.pop(k, None)
    env.update(c.env)
    return env


def before_run(c):
    for p in c.cleanup:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def without_shim_lines(res):
    """A copy of res whose ranks' stderr lacks the shim's own log lines."""
    ranks = {}
    for r, (o, e) in res.ranks.items():
        ranks[r] = (o, "".join(l for l in e.splitlines(True) if not SHIM_LOG_RE.match(l)))
    return L.Result(res.label, res.argv, res.rc, res.out, res.err, res.elapsed, ranks,
                    res.timed_out)


def check_expect(chk, c, res, n):
    for r in range(n):
        o = res.rank_out(r)
        missing = [e for e in c.expect if e not in o]
        chk.ok(not missing, "case %d %s: rank %d's baseline shows what the case claims (%d ranks)"
               % (c.num, c.name, r, n),
               "missing: %r\n  rank %d stdout:\n%s" % (missing, r, L.indent(o)))


def test_outputs(chk, args, wd, cases):
    for c in cases:
        print("\n== case %d %s: %s" % (c.num, c.name, c.title))
        print("   " + " ".join(shlex.quote(a) for a in c.prog())
              + ("   (cwd %s)" % c.cwd if c.cwd else ""))
        env = case_env(c)
        for n in (1, 2, 4):
            before_run(c)
            base = L.mpirun("%s-%d-noshim" % (c.label(), n), args, wd, n, c.prog(), env,
                            cwd=c.cwd)
            chk.ok(base.rc == 0 and not base.timed_out,
                   "case %d %s: baseline at %d ranks exits 0" % (c.num, c.name, n),
                   base.describe())
            L.sanity_rank_output(chk, base, n)
            check_expect(chk, c, base, n)
            before_run(c)
            shim = L.mpirun("%s-%d-shim" % (c.label(), n), args, wd, n, c.prog(),
                            L.with_shim(env, args.shim, PYIMPORT_LOG=2), cwd=c.cwd)
            L.compare_runs(chk, base, without_shim_lines(shim), n,
                           "(case %d %s, %d ranks)" % (c.num, c.name, n))
            for tree, what in c.cached:
                chk.ok(re.search(r"prefix %s( \(.*\))?$" % re.escape(tree), shim.rank_err(0), re.M)
                       is not None, "case %d %s: rank 0 caches %s (%d ranks)"
                       % (c.num, c.name, what, n),
                       "rank 0 stderr:\n" + L.indent(shim.rank_err(0)))
            if c.learned_tree and n > 1:
                # the 1-rank job (same program, same profile) learned extlib
                m = re.search(r"(\d+) learned by earlier jobs", shim.rank_err(0))
                chk.ok(m is not None and int(m.group(1)) > 0,
                       "case %d %s: rank 0 snapshots paths earlier jobs learned outside the "
                       "prefixes (%d ranks, got %s)"
                       % (c.num, c.name, n, m.group(1) if m else "no such line"),
                       "rank 0 stderr:\n" + L.indent(shim.rank_err(0)))
        before_run(c)


def strace_run(args, wd, c, tag, shim_env):
    """One job of case c under strace at NRANKS_STRACE ranks; shim_env None: no
    shim, else the PYIMPORT_* settings besides LD_PRELOAD and PYIMPORT_STATS=1."""
    label = "%s-strace-%s" % (c.label(), tag)
    traces = wd.sub(label + "-traces")
    env = case_env(c)
    inner = ["env"]
    if shim_env is not None:
        inner += ["LD_PRELOAD=" + args.shim]
        inner += ["%s=%s" % kv for kv in sorted(shim_env.items())]
        inner += ["PYIMPORT_STATS=1"]
    inner += c.prog()
    wrapper = ("exec strace -ff -qq -y --seccomp-bpf -o %s/trace.$PMI_RANK "
               "-e trace=%%file,getdents64 %s"
               % (shlex.quote(traces), " ".join(shlex.quote(a) for a in inner)))
    before_run(c)
    res = L.mpirun(label, args, wd, NRANKS_STRACE, ["sh", "-c", wrapper], env, cwd=c.cwd,
                   timeout=STRACE_TIMEOUT)
    before_run(c)
    return res, traces


def strace_variants(wd, c):
    """The jobs of case c with the shim: (tag, what, PYIMPORT_* settings).  The
    full snapshot (PYIMPORT_PROFILE=off), or for a case whose layout the
    profile must learn, a fresh profile directory of its own and two jobs."""
    if not c.learned_tree:
        return [("shim", "with the shim", {"PYIMPORT_PROFILE": "off"})]
    profile = wd.sub(c.label() + "-profile")
    return [("shim-first", "with the shim, first job", {"PYIMPORT_PROFILE": profile}),
            ("shim-second", "with the shim, second job", {"PYIMPORT_PROFILE": profile})]


def test_strace(chk, args, wd, cases):
    table = []
    for c in cases:
        print("\n== strace, case %d %s: %s (%d ranks)" % (c.num, c.name, c.title,
                                                         NRANKS_STRACE))
        print("   roots: " + ", ".join("%s (%s)" % r for r in c.roots))
        variants = strace_variants(wd, c)
        if c.learned_tree:
            print("   profile directory: %s (two jobs)" % variants[0][2]["PYIMPORT_PROFILE"])
        counts = {}
        runs = {}
        for tag, what, shim_env in [("noshim", "without the shim", None)] + variants:
            res, traces = strace_run(args, wd, c, tag, shim_env)
            runs[tag] = res
            chk.ok(res.rc == 0 and not res.timed_out, "case %d %s: job under strace (%s) exits 0"
                   % (c.num, c.name, what), res.describe())
            for r in range(NRANKS_STRACE):
                # the ranks' cwd: c.cwd, else the directory mpirun made for the run
                counts[tag, r] = T.count_rank(traces, r, c.cwd or res_dir(res), c.roots,
                                              MARKER if c.expected_after_marker else None,
                                              c.expected_after_marker)
        L.sanity_rank_output(chk, runs["noshim"], NRANKS_STRACE)

        def n_of(tag, r, tree=None):
            rc = counts[tag, r]
            if rc is None:
                return None
            return len([e for e in rc.counted if tree is None or T.is_under(e[1], tree)])

        base_n = [n_of("noshim", r) for r in range(1, NRANKS_STRACE)]
        for i, r in enumerate(range(1, NRANKS_STRACE)):
            chk.ok(base_n[i] is not None and base_n[i] >= SANITY_MIN,
                   "case %d %s: without the shim rank %d makes >= %d calls on the case's paths "
                   "(counter sanity, got %s)" % (c.num, c.name, r, SANITY_MIN, base_n[i]))
            if c.learned_tree:
                got = n_of("noshim", r, c.learned_tree)
                chk.ok(got is not None and got > LEARNED_ALLOWED,
                       "case %d %s: without the shim rank %d makes > %d calls under extlib "
                       "(counter sanity, got %s)" % (c.num, c.name, r, LEARNED_ALLOWED, got))
        print("   rank 0 without the shim: %s calls on the case's paths" % n_of("noshim", 0))
        for tag, what, _ in variants:
            strace_checks(chk, c, counts, runs, tag, what, base_n, table, n_of)
    print("\n== calls per rank 1..%d on the case's paths (strace)" % (NRANKS_STRACE - 1))
    print("   %-3s %-10s %-12s %-18s %-18s %s" % ("#", "case", "job", "without shim",
                                                 "with shim", "top paths with the shim (rank 1)"))
    for c, tag, base_n, shim_n, top in table:
        print("   %-3d %-10s %-12s %-18s %-18s %s" % (c.num, c.name, tag, base_n, shim_n,
                                                      top[0] if top else "-"))
        for t in top[1:6]:
            print("   %-65s %s" % ("", t))


def strace_checks(chk, c, counts, runs, tag, what, base_n, table, n_of):
    """The checks of one job with the shim against the job without it."""
    sfx = "" if tag == "shim" else " (%s)" % tag
    L.compare_runs(chk, runs["noshim"], runs[tag], NRANKS_STRACE,
                   "(case %d %s under strace%s)" % (c.num, c.name, sfx), check_stderr=False)
    summary = [l for l in runs[tag].rank_err(0).splitlines() if l.startswith("pyimport:")]
    first_learning = c.learned_tree and tag == "shim-first"
    learned = c.learned_tree
    shim_n = [n_of(tag, r) for r in range(1, NRANKS_STRACE)]
    rc1 = counts[tag, 1]
    top = rc1.by_path(limit=12) if rc1 else ["(no trace)"]
    table.append((c, tag, base_n, shim_n, top))
    print("   calls on the case's paths, ranks 1..%d: without the shim %s, %s %s"
          % (NRANKS_STRACE - 1, base_n, what, shim_n))
    if learned:
        print("   calls under extlib, ranks 1..%d: without the shim %s, %s %s"
              % (NRANKS_STRACE - 1, [n_of("noshim", r, learned) for r in range(1, NRANKS_STRACE)],
                 what, [n_of(tag, r, learned) for r in range(1, NRANKS_STRACE)]))
    print("   rank 0, %s: %s" % (what, n_of(tag, 0)))
    for r in range(1, NRANKS_STRACE):
        rc = counts[tag, r]
        if rc is None:
            continue
        if r == 1 or rc.by_path() != counts[tag, 1].by_path():
            print("   %s, rank %d, counted calls by path:" % (what, r))
            print(L.indent("\n".join(rc.by_path(limit=40)) or "(none)", "      "))
            print("   %s, rank %d, not counted:" % (what, r))
            print(L.indent("\n".join(T.excluded_summary(rc)) or "(none)", "      "))
        elif r > 1:
            print("   %s, rank %d: the same calls as rank 1" % (what, r))
    if c.expected_after_marker:
        seen = [counts[tag, r].marker_seen if counts[tag, r] else False
                for r in range(NRANKS_STRACE)]
        chk.ok(all(seen), "case %d %s: the barrier marker is in every rank's trace (%s)"
               % (c.num, c.name, seen))
    if summary:
        print("   rank 0's PYIMPORT_STATS summary%s:" % sfx)
        print(L.indent("\n".join(summary), "      "))

    def detail(entries):
        return "\n".join("trace %s:%d  %s" % (call.source, call.lineno, call.line[:300])
                         for call, p, root in entries[:40])

    for i, r in enumerate(range(1, NRANKS_STRACE)):
        rc = counts[tag, r]
        counted = rc.counted if rc else []
        for tree, what_tree in c.cached:
            inside = [e for e in counted if T.is_under(e[1], tree)]
            chk.ok(rc is not None and not inside,
                   "case %d %s: with the shim rank %d makes no call under %s (got %s)"
                   % (c.num, c.name, r, what_tree, len(inside) if rc else "no trace"),
                   "\n".join(rc.by_path(inside, limit=20)) if rc else "")
        if first_learning:
            # nothing is known of extlib yet: only its calls may escape
            rest = [e for e in counted if not T.is_under(e[1], learned)]
            chk.ok(rc is not None and len(rest) <= ALLOWED,
                   "case %d %s: first job, rank %d makes <= %d call on the case's paths "
                   "outside extlib (got %s)"
                   % (c.num, c.name, r, ALLOWED, len(rest) if rc else "no trace"), detail(rest))
            continue
        if learned:
            under = [e for e in counted if T.is_under(e[1], learned)]
            chk.ok(rc is not None and len(under) <= LEARNED_ALLOWED,
                   "case %d %s: second job (the profile learned extlib), rank %d makes <= %d "
                   "call under extlib (got %s)"
                   % (c.num, c.name, r, LEARNED_ALLOWED, len(under) if rc else "no trace"),
                   "\n".join(rc.by_path(under, limit=20)) + "\n" + detail(under) if rc else "")
        # one statx per live root (the script's directory, extlib): its listing
        # is served only while that stat is unchanged
        allowed = ALLOWED + (LEARNED_ALLOWED if learned else 0)
        chk.ok(shim_n[i] is not None and shim_n[i] <= allowed,
               "case %d %s: with the shim%s rank %d makes <= %d call%s on the case's paths "
               "(got %s)" % (c.num, c.name, sfx, r, allowed, "s" if allowed > 1 else "",
                             shim_n[i]), detail(counted))


def res_dir(res):
    # mpirun's -outfile-pattern names the run's directory, which is the cwd
    i = res.argv.index("-outfile-pattern")
    return os.path.dirname(res.argv[i + 1])


def main():
    args = L.parse_args(__doc__.split("\n\n")[0], ["outputs", "strace"])
    chk = L.Checker("e2e environments (%s)" % ", ".join(args.what))
    L.prerequisites(chk, args)
    if "strace" in args.what and not chk.ok(bool(shutil.which("strace")), "strace is installed"):
        chk.finish()
    t0 = time.monotonic()
    wd = L.Workdir(args.keep)
    try:
        fx = Fixtures(args, wd, chk)
        chk.ok(fx.pyenv_python is not None,
               "a pyenv CPython 3.12 is installed (pyenv root/versions/3.12.*/bin/python3)")
        cases = select(make_cases(args, fx))
        print("fixtures built in %.1fs in %s; cases: %s"
              % (fx.elapsed, fx.top, ", ".join(c.label() for c in cases)))
        if "outputs" in args.what:
            test_outputs(chk, args, wd, cases)
        if "strace" in args.what:
            test_strace(chk, args, wd, cases)
    finally:
        wd.close()
    print("\nelapsed %.1fs" % (time.monotonic() - t0))
    chk.finish()


if __name__ == "__main__":
    main()
