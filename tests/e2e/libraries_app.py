"""What a rank prints about loading the fixture's extension modules and
libraries (built by libraries.py); every line starts with "[rank R]".

    libraries_app.py SITE [--kill] [--no-misses]

SITE is the PYTHONPATH directory holding fixpkg/ and fixpkg.libs/.  --kill:
after the imports rank 1 sends itself SIGKILL and the others wait for mpiexec
to end them (a job killed mid-run).
--no-misses: leave out the loads of files that are not libraries in the
snapshot (a missing file, a non-library, RTLD_NOLOAD of a library never
loaded), which go to the filesystem by design.
"""

import ctypes
import importlib
import os
import signal
import sys
import time

RANK = int(os.environ.get("PMI_RANK", "0"))
SITE = sys.argv[1]


def say(*words):
    print("[rank %d]" % RANK, *words, flush=True)


def rel(path):
    """Paths relative to SITE, so the output does not name the temp dir."""
    return path.replace(SITE, "SITE") if isinstance(path, str) else path


def attempt(what, action):
    try:
        say(what, "->", rel(repr(action())))
    except Exception as e:  # the message is part of the output compared
        say(what, "->", type(e).__name__, rel(str(e)))


class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


# dladdr as a C program calls it (through the global scope, where a preload
# comes first), not libc's own by handle.
libc = ctypes.CDLL(None)
libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]


def file_of(function):
    info = DlInfo()
    if not libc.dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info)):
        return None
    return info.dli_fname.decode()


# A private library through $ORIGIN/../fixpkg.libs, which needs another
# through a soname symlink (libb.so.1 -> libb.so.1.2.3).
core = importlib.import_module("fixpkg._core")
say("core.value()", core.value())
say("core.__file__", rel(core.__file__))
say("core.__spec__.origin", rel(core.__spec__.origin))

# The same libraries by path and by name: the same handles, one constructor run.
libs = os.path.join(SITE, "fixpkg.libs")
liba = ctypes.CDLL(os.path.join(libs, "liba.so"))
say("liba constructor runs", liba.a_init_count())
say("liba by name is liba by path", ctypes.CDLL("liba.so")._handle == liba._handle)
libb_real = ctypes.CDLL(os.path.join(libs, "libb.so.1.2.3"))
say("libb.so.1.2.3 is libb.so.1", ctypes.CDLL("libb.so.1")._handle == libb_real._handle)
say("libb value", libb_real.b_value())
say("liba constructor runs after reloads", liba.a_init_count())
say("dladdr(a_value)", rel(file_of(liba.a_value)))
say("dladdr(b_value)", rel(file_of(libb_real.b_value)))
say("dladdr(PyInit__core)", rel(file_of(ctypes.CDLL(core.__file__).PyInit__core)))
attempt("missing symbol", lambda: liba.no_such_function)

# A fork child (where the shim is inert) loads what its parent loaded: the
# same library, not a second copy.
child = os.fork()
if child == 0:
    again = ctypes.CDLL(os.path.join(libs, "liba.so"))
    os.write(1, ("[rank %d] fork child: liba is the same %s, constructor runs %d\n"
                 % (RANK, again._handle == liba._handle, again.a_init_count())).encode())
    os._exit(0)
os.waitpid(child, 0)

# RTLD_NOLOAD: a loaded library is found, one never loaded is not.
NOLOAD = getattr(os, "RTLD_NOLOAD", 4)
attempt("NOLOAD liba", lambda: ctypes.CDLL(os.path.join(libs, "liba.so"),
                                           mode=NOLOAD)._handle == liba._handle)
MISSES = "--no-misses" not in sys.argv
if MISSES:
    attempt("NOLOAD unused", lambda: ctypes.CDLL(os.path.join(SITE, "fixpkg", "unused.so"),
                                                 mode=NOLOAD))

# Symbols shared through RTLD_GLOBAL: _user needs provided_value from _provider.
attempt("import _user before _provider", lambda: importlib.import_module("fixpkg._user"))
flags = sys.getdlopenflags()
sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
provider = importlib.import_module("fixpkg._provider")
sys.setdlopenflags(flags)
user = importlib.import_module("fixpkg._user")
say("user.value()", user.value())

# Errors read as without the shim.
attempt("import _broken (missing dependency)", lambda: importlib.import_module("fixpkg._broken"))
if MISSES:
    attempt("CDLL of a missing file", lambda: ctypes.CDLL(os.path.join(SITE, "fixpkg",
                                                                       "none.so")))
    attempt("CDLL of a non-library", lambda: ctypes.CDLL(os.path.join(SITE, "fixpkg",
                                                                      "__init__.py")))

if "--kill" in sys.argv:
    # Rank 1 dies of SIGKILL; mpiexec then ends the others, still waiting here.
    if RANK == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
say("done")
