"""The applications environments.py runs (stdlib only): sources as text, each
written into a directory of its own.  Every stdout line is "[rank R] ..." and
deterministic; the last one is "[rank R] done"."""

HEADER = """\
import os, sys
R = int(os.environ.get("PMI_RANK", "0"))


def out(*parts):
    print("[rank %d] %s" % (R, " ".join(str(p) for p in parts)))


def fmt(x):
    v = round(float(x), 6)
    return "%.6f" % (0.0 if v == 0.0 else v)


def inside(path, top):
    path, top = os.path.realpath(path), os.path.realpath(top)
    return path == top or path.startswith(top + os.sep)


out("python %d.%d" % sys.version_info[:2], "flags: isolated", sys.flags.isolated,
    "no_site", sys.flags.no_site, "safe_path", getattr(sys.flags, "safe_path", None))
if os.environ.get("E2E_PREFIX"):
    out("sys.prefix is", os.environ["E2E_PREFIX"], sys.prefix == os.environ["E2E_PREFIX"])
out("in a venv:", sys.prefix != sys.base_prefix)
"""

# A standard-library-heavy part (the pyenv case, and every case that has no
# numpy): many modules, some of them extension modules in lib-dynload.
STDLIB = """\
import json, email.message, email.utils, http.client, decimal, sqlite3, csv, io
import xml.etree.ElementTree as ET, hashlib, zlib, fractions, statistics, datetime
import textwrap, argparse, logging, urllib.parse, base64, struct, collections
import itertools, difflib, heapq, bisect, pathlib, tempfile, shlex, string
out("json", json.dumps({"b": [1, 2.5, None], "a": "x"}, sort_keys=True))
m = email.message.EmailMessage()
m["Subject"] = "hello"
m["To"] = "rank%d@example.com" % R
m.set_content("body\\n")
for line in m.as_string().splitlines():
    out("email |", line)
out("email.utils", email.utils.parseaddr("A B <a@b.example>"))
out("http", http.client.responses[404], http.client.HTTPConnection.default_port,
    http.client.HTTPSConnection.default_port)
decimal.getcontext().prec = 30
out("decimal", decimal.Decimal(1) / decimal.Decimal(7))
con = sqlite3.connect(":memory:")
con.execute("create table t (k integer, v text)")
con.executemany("insert into t values (?, ?)", [(i, "v%d" % i) for i in range(10)])
out("sqlite", con.execute("select sum(k), group_concat(v) from t").fetchone())
con.close()
buf = io.StringIO()
csv.writer(buf).writerows([["a", "b,c"], [1, 2]])
out("csv", repr(buf.getvalue()))
root = ET.fromstring("<a><b x='1'/><b x='2'/><c>t</c></a>")
out("xml", sum(int(b.get("x")) for b in root.iter("b")), root.find("c").text)
out("hash", hashlib.sha256(b"pyimport").hexdigest()[:16], zlib.crc32(b"pyimport"))
out("fraction", fractions.Fraction(3, 4) + fractions.Fraction(1, 6),
    "median", statistics.median([5, 1, 4, 2, 3]))
out("date", datetime.date(2024, 1, 31) + datetime.timedelta(days=1))
out("url", urllib.parse.urlsplit("https://h.example:8443/p?q=1#f"))
out("base64", base64.b64encode(struct.pack("<iH", R, 7)).decode())
out("difflib", list(difflib.unified_diff(["a\\n", "b\\n"], ["a\\n", "c\\n"], n=0))[2:])
out("heapq", heapq.nsmallest(3, [5, 1, 4, 2, 3]), bisect.bisect([1, 3, 5], 4))
out("textwrap", textwrap.wrap("the quick brown fox jumps over the lazy dog", 12))
out("shlex", shlex.split("a 'b c' d"), string.ascii_lowercase[:5])
out("argparse", vars(argparse.ArgumentParser().parse_args([])))
"""

NUMPY = """\
import numpy as np
import scipy, scipy.linalg, scipy.sparse, scipy.optimize


def origin(mod):
    f = mod.__file__
    if os.environ.get("E2E_VENV") and inside(f, os.environ["E2E_VENV"]):
        return "the venv"
    if inside(f, "/usr/lib/python3/dist-packages"):
        return "the system dist-packages"
    return "elsewhere: " + f


out("numpy", np.__version__, "from", origin(np))
out("scipy", scipy.__version__, "from", origin(scipy))
a = np.arange(1.0, 17.0).reshape(4, 4) + 10 * np.eye(4)
out("det", fmt(scipy.linalg.det(a)))
out("solve", " ".join(fmt(v) for v in scipy.linalg.solve(a, np.ones(4))))
lu, piv = scipy.linalg.lu_factor(a)
out("lu pivots", list(piv))
s = scipy.sparse.diags([1.0, 2.0, 3.0, 4.0]).tocsr()
out("sparse", " ".join(fmt(v) for v in s @ np.arange(4.0)), s.nnz)
res = scipy.optimize.minimize(scipy.optimize.rosen, [1.3, 0.7, 0.8], method="Nelder-Mead",
                              options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 4000})
out("rosen", res.success, " ".join(fmt(v) for v in res.x))
out("brentq", fmt(scipy.optimize.brentq(lambda x: x * x - 2, 0, 2)))
"""

FOOTER = """\
out("modules loaded", len(sys.modules))
out("done")
"""

# 1-3: numpy and scipy (the system's, or the venv's own copies)
NUMPY_APP = HEADER + NUMPY + FOOTER

# 4: a pyenv-built interpreter without numpy
STDLIB_APP = HEADER + STDLIB + FOOTER

# 5: a script in its own directory importing local modules
LOCAL_APP = HEADER + """\
import localmod
from localpkg import util
here = os.path.dirname(os.path.abspath(__file__))
out("sys.path[0] is the script's directory", sys.path[0] == here)
out("localmod", localmod.VALUE, "from the script's directory",
    os.path.dirname(localmod.__file__) == here)
out("localpkg.util", util.triple(14), inside(util.__file__, here))
""" + STDLIB + FOOTER
LOCAL_FILES = {
    "localmod.py": "VALUE = 'local module'\n",
    "localpkg/__init__.py": "",
    "localpkg/util.py": "def triple(x):\n    return 3 * x\n",
}

# 6: python -m pkg, with the working directory holding pkg/
PKG_FILES = {
    "pkg/__init__.py": "NAME = 'pkg'\n",
    "pkg/helper.py": "def square(x):\n    return x * x\n",
    "pkg/__main__.py": HEADER + """\
import pkg
from pkg import helper
out("run as", __spec__.name, "package", pkg.NAME, helper.square(12))
out("sys.path[0] is the working directory", sys.path[0] == os.getcwd())
out("pkg from the working directory", inside(pkg.__file__, os.getcwd()))
""" + STDLIB + FOOTER,
}

# 7: -I (isolated: no script directory, no user site, PYTHON* ignored)
ISOLATED_APP = HEADER + """\
here = os.path.dirname(os.path.abspath(__file__))
out("script's directory on sys.path", here in sys.path)
try:
    import decoy
    out("decoy next to the script imported:", decoy.X)
except ImportError as e:
    out("decoy next to the script not importable:", type(e).__name__)
""" + STDLIB + FOOTER
ISOLATED_FILES = {"decoy.py": "X = 'imported'\n"}

# 8: -S (no site: no site-packages/dist-packages)
NOSITE_APP = HEADER + """\
out("site imported", "site" in sys.modules)
try:
    import numpy
    out("numpy importable without site:", numpy.__name__)
except ImportError as e:
    out("numpy not importable without site:", type(e).__name__)
""" + STDLIB + FOOTER

# 9: the venv's editable-style .pth naming a source tree
EDITABLE_APP = HEADER + """\
import venvpkg
from venvpkg import sub
import editable_pkg
from editable_pkg import mod
out("venvpkg", venvpkg.NAME, sub.twice(21), "in the venv",
    inside(venvpkg.__file__, os.environ["E2E_VENV"]))
out("editable", editable_pkg.WHERE, mod.half(42), "from the source tree",
    inside(editable_pkg.__file__, os.environ["E2E_SRC"]))
out("source tree on sys.path", os.environ["E2E_SRC"] in sys.path)
""" + STDLIB + FOOTER

# 10: a zip archive on sys.path (PYTHONPATH=mods.zip)
ZIP_APP = HEADER + """\
import zipmod
from zippkg import sub as zsub
z = os.environ["E2E_ZIP"]
out("zipmod", zipmod.VALUE, "from the zip", zipmod.__file__ == os.path.join(z, "zipmod.py"))
out("zippkg.sub", zsub.double(8), "from the zip", zsub.__file__.startswith(z + os.sep))
out("loader", type(zipmod.__loader__).__name__)
""" + STDLIB + FOOTER
ZIP_MEMBERS = {
    "zipmod.py": "VALUE = 'zipped module'\n",
    "zippkg/__init__.py": "",
    "zippkg/sub.py": "def double(x):\n    return 2 * x\n",
}

# 11: after a barrier, rank 0 writes a data file into the script's directory;
# after a second barrier every rank lists the directory and reads the file.  MPI through ctypes (as
# mpi4py would: MPI_Init_thread only if not initialised yet).
DATA_APP = HEADER + """\
import ctypes
lib = ctypes.CDLL(os.environ.get("MPI_CTYPES_LIBRARY", "libmpich.so.12"), mode=ctypes.RTLD_GLOBAL)
COMM_WORLD = 0x44000000
c_int_p = ctypes.POINTER(ctypes.c_int)
lib.MPI_Initialized.argtypes = [c_int_p]
lib.MPI_Init_thread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, c_int_p]
lib.MPI_Barrier.argtypes = [ctypes.c_int]
lib.MPI_Comm_size.argtypes = [ctypes.c_int, c_int_p]
flag, provided, size = ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(-1)
lib.MPI_Initialized(ctypes.byref(flag))
if not flag.value:
    assert lib.MPI_Init_thread(None, None, 3, ctypes.byref(provided)) == 0
lib.MPI_Comm_size(COMM_WORLD, ctypes.byref(size))
here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "data.txt")
# Every rank has done its imports (which search the script's directory) before
# the directory changes: otherwise whether a rank's import search meets the
# changed directory (and must go to the filesystem) depends on timing.
assert lib.MPI_Barrier(COMM_WORLD) == 0
if R == 0:
    with open(data, "w") as f:
        for i in range(5):
            f.write("line %d of %d ranks' data, written by rank 0\\n" % (i, size.value))
assert lib.MPI_Barrier(COMM_WORLD) == 0
os.path.exists(os.environ.get("E2E_MARKER", "/nonexistent"))   # strace marker
for name in sorted(os.listdir(here)):
    out("listing:", name)
with open(data) as f:
    for line in f:
        out("data:", line.rstrip("\\n"))
assert lib.MPI_Barrier(COMM_WORLD) == 0
if R == 0:
    os.unlink(data)
assert lib.MPI_Finalize() == 0
""" + FOOTER

# 12: a layout the search path does not foresee: the script puts a directory
# outside every prefix (and outside its own directory) first on sys.path and
# imports a module and a package from it.  The directory is written into the
# source as a literal, as such scripts do.
LEARNED = """\
EXTLIB = @EXTLIB@
sys.path.insert(0, EXTLIB)
import extmod
import extpkg
from extpkg import helper
out("extmod", extmod.VALUE, "from extlib", os.path.dirname(extmod.__file__) == EXTLIB)
out("extpkg", extpkg.NAME, "helper", helper.cube(3), "from extlib",
    inside(helper.__file__, EXTLIB))
out("extlib first on sys.path", sys.path[0] == EXTLIB)
"""
LEARNED_FILES = {
    "extmod.py": "VALUE = 'module outside the prefixes'\n",
    "extpkg/__init__.py": "NAME = 'extpkg'\n",
    "extpkg/helper.py": "def cube(x):\n    return x * x * x\n",
}


def learned_app(extlib):
    return HEADER + LEARNED.replace("@EXTLIB@", repr(extlib)) + STDLIB + FOOTER
