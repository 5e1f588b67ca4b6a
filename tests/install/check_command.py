"""The pyimport command, every subcommand, against real jobs: `pyimport run`
starts a 2-rank MPICH job whose statistics document (PYIMPORT_STATS_FILE) must
match what the job did and what the library printed (PYIMPORT_STATS=1) in
the same run; `report` renders it and plots a PNG; `check` tells an
interpreter's prefixes and each problem; `profile` lists, shows and clears
what a job wrote; `options` prints the table. Bad arguments and bad files
give one line on stderr and a non-zero exit.

    check_command.py <build directory>
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

BUILD = os.path.abspath(sys.argv[1])
COMMAND = os.path.join(BUILD, "command", "pyimport")
PYTHON = "/usr/bin/python3"
MPIEXEC = "mpiexec.mpich"
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAIL: " + what, flush=True)


def pyimport(*args, env=None, cwd=None):
    merged = dict(os.environ)
    merged.pop("PYTHONUNBUFFERED", None)
    merged["PYIMPORT_SERVE_LOCAL"] = "1"  # the jobs' trees are on local disk
    merged.update(env or {})
    return subprocess.run([PYTHON, COMMAND] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, encoding="utf-8", errors="surrogateescape",
                          env=merged, cwd=cwd, timeout=300)


def one_line_error(result, status, words, what):
    check(result.returncode == status, "%s: exit %d, wanted %d (%s)"
          % (what, result.returncode, status, result.stderr.strip()))
    lines = result.stderr.strip().splitlines()
    check(len(lines) == 1, "%s: %d lines on stderr: %r" % (what, len(lines), result.stderr))
    check(words in result.stderr, "%s: %r not in %r" % (what, words, result.stderr))


work = tempfile.mkdtemp(prefix="pyimport-command-")
profiles = os.path.join(work, "profiles")
data = os.path.join(work, "outside", "data.txt")
os.makedirs(os.path.dirname(data))
with open(data, "w") as f:
    f.write("x\n")
app = os.path.join(work, "app.py")
READS = 5
# A path no text format or terminal likes: a tab, a newline, a byte that is
# not UTF-8. The program also changes directory (a relative --stats-file is
# where pyimport run was asked).
ODD = b"/nonexistent/tab\there\nnext\xff"
with open(app, "w") as f:
    f.write("import json, email.parser, decimal, os\n"
            "for _ in range(%d):\n"
            "    open(%r).read()\n"
            "    os.path.exists(%r)\n"
            "os.chdir('/')\n"
            "os.write(1, b'rank done\\n')\n" % (READS, data, ODD))

# --- --version, --help, bad commands ----------------------------------------
version = re.search(r"^CMAKE_PROJECT_VERSION:STATIC=(.*)$",
                    open(os.path.join(BUILD, "CMakeCache.txt")).read(), re.M).group(1)
r = pyimport("--version")
check(r.returncode == 0 and r.stdout == "pyimport %s\n" % version, "--version: %r" % r.stdout)
r = pyimport("--help")
check(r.returncode == 0, "--help exits 0")
for sub in ("run", "check", "report", "profile", "options"):
    check("pyimport %s" % sub in r.stdout, "--help names %s" % sub)
    h = pyimport("help", sub)
    check(h.returncode == 0 and h.stdout.startswith("usage: pyimport %s" % sub), "help %s" % sub)
r = pyimport()
check(r.returncode == 2 and r.stderr.startswith("usage:") and not r.stdout, "no arguments: usage, 2")
one_line_error(pyimport("bogus"), 2, "no command 'bogus'", "an unknown command")
one_line_error(pyimport("help", "bogus"), 2, "no command 'bogus'", "help of an unknown command")

# --- options ----------------------------------------------------------------
r = pyimport("options")
table = subprocess.run([os.path.join(BUILD, "shim", "pyimport-options")], stdout=subprocess.PIPE,
                       universal_newlines=True).stdout
names = re.findall(r"^\| `(PYIMPORT_[A-Z_]+)`", table, re.M)
check(r.returncode == 0 and len(names) > 10, "options runs")
for name in names:
    check(re.search(r"^%s  \(" % name, r.stdout, re.M) is not None, "options lists %s" % name)
one_line_error(pyimport("options", "extra"), 2, "takes no arguments", "options with an argument")

# --- run, and the statistics it writes ----------------------------------------
stats_pattern = "stats-%j-%h.json" # relative: to the directory pyimport run is in
job_env = {"PYIMPORT_STATS": "1", "PYIMPORT_PROFILE": profiles}
r = pyimport("run", "--stats-file", stats_pattern, MPIEXEC, "-n", "2", PYTHON, app,
             env=job_env, cwd=work)
check(r.returncode == 0, "run: the job's exit status (%d; %s)" % (r.returncode, r.stderr))
check(r.stdout == "rank done\nrank done\n", "run: the job's output: %r" % r.stdout)
written = [n for n in os.listdir(work) if n.startswith("stats-")]
check(len(written) == 1, "one statistics file: %s" % written)
document = None
if written:
    host = os.uname().nodename
    check(written[0].endswith("-%s.json" % host), "%%h is the host: %s" % written[0])
    with open(os.path.join(work, written[0])) as f:
        document = json.load(f)
if document:
    job, calls = document["job"], document["calls"]
    check(document["schema"] == "pyimport-stats/1", "schema")
    check(document["pyimport_version"] == version, "version in the document")
    check(written[0] == "stats-%s-%s.json" % (job["id"], os.uname().nodename), "%j is the job id")
    check(job["ranks"] == 2 and job["served_ranks"] == 2 and job["nodes"] == 1,
          "ranks and nodes: %s" % job)
    check(os.path.realpath(job["executable"]) == os.path.realpath(PYTHON), "executable")
    check(calls["served"] == sum(calls["served_by_kind"].values()), "served = the sum by kind")
    check(calls["forwarded"] == sum(calls["forwarded_by_kind"].values()), "forwarded = the sum")
    ranks = document["ranks"]
    check([x["rank"] for x in ranks] == [0, 1], "a row per rank")
    check(sum(x["served"] for x in ranks) == calls["served"] and
          sum(x["forwarded"] for x in ranks) == calls["forwarded"], "the ranks add up")
    rows = {x["path"]: x for x in document["most_forwarded"]}
    check(data in rows and rows[data]["count"] == 2 * READS,
          "the data file read %d times per rank is the most forwarded: %s" % (READS, rows))
    odd = os.fsdecode(ODD)
    check(odd in rows and rows[odd]["count"] == 2 * READS,
          "the odd path, whole, tab, newline and byte kept: %s" % sorted(rows))
    check(calls["forwarded_by_kind"]["open"] >= 2 * READS, "its opens are forwarded opens")
    check("/usr/lib/python3.11" in document["snapshot"]["directories"], "the stdlib is a root")
    check(document["snapshot"]["entries"] > 100 and document["snapshot"]["bytes"] > 0, "snapshot")
    check(document["node_memory"]["image_bytes"] == document["snapshot"]["bytes"],
          "one copy of the image on the one node")
    check(document["node_memory"]["per_node_bytes"] >= document["snapshot"]["bytes"], "per node")
    seconds = document["seconds"]
    check(seconds["start_up"] >= seconds["walk"] > 0 and seconds["broadcast"] >= 0, "seconds")
    check(seconds["mpi_init"] > 0 and seconds["mpi_load"] > 0 and seconds["start_up"] >=
          seconds["mpi_init"] + seconds["walk"], "the phases: %s" % seconds)
    # The same job's text summary (PYIMPORT_STATS=1) says the same.
    summary = re.search(r"pyimport: all ranks: (\d+) calls served, (\d+) forwarded", r.stderr)
    check(summary is not None, "the text summary is printed too: %r" % r.stderr)
    if summary:
        check((int(summary.group(1)), int(summary.group(2))) == (calls["served"], calls["forwarded"]),
              "the document's totals are the summary's: %s vs %s" % (summary.groups(), calls))
    entries = re.search(r"snapshot of (\d+) prefixes: (\d+) entries", r.stderr)
    check(entries and int(entries.group(2)) == document["snapshot"]["entries"]
          and int(entries.group(1)) == document["snapshot"]["roots"], "entries and roots agree")

# run: the exit status is the command's; the library once in LD_PRELOAD; Open
# MPI told to pass the variables on.
probe = ("import os, sys; sys.stdout.write(os.environ.get('LD_PRELOAD', '') + '|' + "
         "os.environ.get('OMPI_MCA_mca_base_env_list', '') + '|' + os.environ.get('LD_AUDIT', ''))")
library = os.path.join(BUILD, "shim", "libpyimport.so")
r = pyimport("run", "--", PYTHON, "-c", probe, env={"LD_PRELOAD": library + ":/lib/other.so",
                                                    "PYIMPORT_LOG": "0"})
preload, env_list, audit = (r.stdout.split("|") + ["", "", ""])[:3]
check(preload == library + ":/lib/other.so", "LD_PRELOAD keeps one copy, in order: %r" % preload)
check(env_list == "", "no Open MPI variable for another command: %r" % env_list)
check(audit.endswith("libpyimport-audit.so"), "LD_AUDIT: %r" % audit)
# Open MPI's mpirun (by any of its names) is given -x for each variable, but
# not twice; a fake one on PATH shows its command line.
fake_bin = os.path.join(work, "bin")
os.makedirs(fake_bin)
for name in ("mpirun.openmpi", "mpiexec.hydra"):
    with open(os.path.join(fake_bin, name), "w") as f:
        f.write("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    os.chmod(os.path.join(fake_bin, name), 0o755)
path_env = {"PATH": fake_bin + ":" + os.environ["PATH"], "PYIMPORT_LOG": "1"}
r = pyimport("run", "mpirun.openmpi", "-x", "PYIMPORT_LOG", "-n", "2", "app", env=path_env)
argv = r.stdout.splitlines()
check(r.returncode == 0 and argv[-3:] == ["-n", "2", "app"], "mpirun's own arguments kept: %r" % argv)
exported = [b for a, b in zip(argv, argv[1:]) if a == "-x"]
check(sorted(exported) == ["LD_AUDIT", "LD_PRELOAD", "PYIMPORT_LOG", "PYIMPORT_SERVE_LOCAL"],
      "-x for each variable, once: %r" % argv)
r = pyimport("run", "mpiexec.hydra", "-n", "2", "app", env=path_env)
check(r.stdout.splitlines() == ["-n", "2", "app"], "Hydra's command line untouched: %r" % r.stdout)
# The real Open MPI, with a -x of the job's own: served, the variable there.
ompi = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "FOO": "bar",
        "PYIMPORT_LOG": "1", "PYIMPORT_PROFILE": "off"}
r = pyimport("run", "mpirun.openmpi", "--oversubscribe", "-x", "FOO", "-n", "2", PYTHON, "-c",
             "import os, json; os.write(1, (os.environ['FOO'] + '\\n').encode())", env=ompi)
check(r.returncode == 0 and r.stdout == "bar\nbar\n", "Open MPI with -x: %r %r" % (r.stdout, r.stderr))
check(r.stderr.count("built the snapshot") == 1, "Open MPI job served: %r" % r.stderr)
r = pyimport("run", "--no-audit", PYTHON, "-c", probe, env={"LD_AUDIT": ""})
check(r.stdout.endswith("|"), "--no-audit leaves LD_AUDIT: %r" % r.stdout)
r = pyimport("run", "sh", "-c", "exit 7")
check(r.returncode == 7, "run returns the command's status: %d" % r.returncode)
one_line_error(pyimport("run"), 2, "no command to run", "run without a command")
one_line_error(pyimport("run", "--stats-file"), 2, "needs a path", "--stats-file without a path")
one_line_error(pyimport("run", "--stats-file", "", "true"), 2, "needs a path", "--stats-file ''")
one_line_error(pyimport("run", "--bogus", "x"), 2, "unknown option --bogus", "run --bogus")
one_line_error(pyimport("run", "/nonexistent/launcher"), 127, "No such file", "a missing command")

# A statistics file that cannot be written: one line, the job unchanged.
r = pyimport("run", "--stats-file", os.path.join(work, "missing", "s.json"), MPIEXEC, "-n", "2",
             PYTHON, app, env={"PYIMPORT_PROFILE": "off"}, cwd=work)
check(r.returncode == 0 and r.stdout == "rank done\nrank done\n", "unwritable stats: job unchanged")
check(r.stderr.count("cannot write the job's statistics") == 1 and len(r.stderr.splitlines()) == 1,
      "unwritable stats: one line: %r" % r.stderr)
# A bad pattern is a bad setting: uncached, one line from each rank's check.
r = pyimport("run", "--stats-file", os.path.join(work, "s-%q.json"), MPIEXEC, "-n", "2", PYTHON,
             app, cwd=work)
check(r.returncode == 0 and r.stdout == "rank done\nrank done\n", "bad pattern: job unchanged")
check("PYIMPORT_STATS_FILE" in r.stderr and "%j" in r.stderr, "bad pattern named: %r" % r.stderr)

# --- report -------------------------------------------------------------------
if written:
    path = os.path.join(work, written[0])
    png = os.path.join(work, "job.png")
    r = pyimport("report", path, "--plot", png)
    check(r.returncode == 0, "report exits 0 (%s)" % r.stderr)
    check("2 ranks on 1 node" in r.stdout, "report: ranks and nodes")
    check(data in r.stdout and "most forwarded paths" in r.stdout, "report: the forwarded path")
    check(not r.stderr, "report: nothing on stderr (the odd path printed as it is): %r" % r.stderr)
    check(os.fsdecode(ODD) in r.stdout, "report: the odd path's bytes as they are")
    if document:
        check("%d served, %d forwarded" % (document["calls"]["served"], document["calls"]["forwarded"])
              in r.stdout, "report: the totals")
    with open(png, "rb") as f:
        head = f.read(24)
    check(head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", "a PNG is written")
    width, height = struct.unpack(">II", head[16:24]) if len(head) == 24 else (0, 0)
    check(width > 100 and height > 100, "the PNG has a size: %dx%d" % (width, height))
    one_line_error(pyimport("report", path, "--plot", os.path.join(work, "no", "x.png")), 1,
                   "cannot write", "report: an unwritable PNG")
    broken = os.path.join(work, "broken.json")
    with open(broken, "w") as f:
        json.dump({"schema": "pyimport-stats/1", "job": {}}, f)
    one_line_error(pyimport("report", broken), 1, "lacks", "report: a document without sections")
one_line_error(pyimport("report", "/etc/hostname"), 1, "not a JSON document", "report: not JSON")
other = os.path.join(work, "other.json")
with open(other, "w") as f:
    f.write('{"schema": "something else"}')
one_line_error(pyimport("report", other), 1, "not a pyimport statistics document", "report: schema")
one_line_error(pyimport("report", os.path.join(work, "none.json")), 1, "No such file",
               "report: a missing file")
one_line_error(pyimport("report"), 2, "give one statistics file", "report without a file")
one_line_error(pyimport("report", "a.json", "--plot"), 2, "needs a PNG", "--plot without a file")

# --- check --------------------------------------------------------------------
r = pyimport("check", "--python", PYTHON, app, cwd=work)
check(r.returncode == 0, "check exits 0 here: %s %s" % (r.stdout, r.stderr))
check("  /usr/lib/python3.11  (standard library" in r.stdout, "check: the stdlib and why: %s" % r.stdout)
check("script directory: %s " % work in r.stdout, "check: the script's directory")
check("node directory: /dev/shm: usable" in r.stdout, "check: the node directory")
check(re.search(r"MPI library, MPICH ABI .*: lib", r.stdout) is not None, "check: an MPICH library")
check("would be served" in r.stdout, "check: the verdict")
check("filesystems: node-local (" in r.stdout and "served anyway (PYIMPORT_SERVE_LOCAL=1)" in r.stdout,
      "check: the trees are on local disk, served as asked: %s" % r.stdout)
r = pyimport("check", "--python", PYTHON, app, cwd=work, env={"PYIMPORT_SERVE_LOCAL": "0"})
check(r.returncode == 0 and "would pass through (its trees are node-local)" in r.stdout,
      "check: with PYIMPORT_SERVE_LOCAL=0 a job here passes through: %s" % r.stdout)
for env, words in (({"PYIMPORT_MAX_BYTES": "banana"}, "problem: bad value for PYIMPORT_MAX_BYTES"),
                   ({"PYIMPORT_NODE_DIR": os.path.join(work, "gone")}, "problem: node directory"),
                   ({"PYIMPORT_MPI_LIBRARY": "libnothing.so.1"}, "problem: no MPI library loads"),
                   ({"PYIMPORT_PREFIX": os.path.join(work, "gone")}, "problem: rank 0 could not build"),
                   ({"PYIMPORT_DISABLE": "1"}, "problem: PYIMPORT_DISABLE")):
    r = pyimport("check", "--python", PYTHON, app, env=env, cwd=work)
    check(r.returncode == 1 and words in r.stdout, "check with %s: %d %s" % (env, r.returncode, r.stdout))
one_line_error(pyimport("check", "--python", "/bin/false"), 1, "not a Python interpreter",
               "check: not an interpreter")
one_line_error(pyimport("check", "--python", os.path.join(work, "nopython")), 1, "no interpreter",
               "check: a missing interpreter")
one_line_error(pyimport("check", "--bogus"), 2, "unknown option", "check --bogus")
r = pyimport("check", "--python", PYTHON, "-m", "json.tool", cwd=work)
check(r.returncode == 0 and "script directory: %s " % work in r.stdout,
      "check: interpreter options are the interpreter's (-m): %s %s" % (r.stdout, r.stderr))

# --- profile ------------------------------------------------------------------
penv = {"PYIMPORT_PROFILE": profiles}
r = pyimport("profile", "list", env=penv)
ids = re.findall(r"^([0-9a-f]{16})  ", r.stdout, re.M)
check(r.returncode == 0 and len(ids) == 1, "the job wrote one profile: %r" % r.stdout)
if ids:
    r = pyimport("profile", "show", ids[0], env=penv)
    check(r.returncode == 0 and re.search(r"^/usr/lib/python3\.11/json/", r.stdout, re.M),
          "show: the job used json: %s" % r.stdout[:300])
    with open(os.path.join(profiles, "notes.profile"), "w") as f:
        f.write("not a profile\n")
    one_line_error(pyimport("profile", "clear", "notes", env=penv), 1, "not a pyimport profile",
                   "clear refuses a file that is not a profile")
    r = pyimport("profile", "clear", env=penv)
    check(r.returncode == 0 and "removed 1 profile " in r.stdout, "clear all: %r" % r.stdout)
    check(sorted(os.listdir(profiles)) == ["notes.profile"], "only profiles removed")
r = pyimport("profile", "list", env=penv)
check(r.stdout.startswith("no profiles"), "list after clear: %r" % r.stdout)
one_line_error(pyimport("profile", "show", "0123456789abcdef", env=penv), 1, "no profile",
               "show a missing profile")
one_line_error(pyimport("profile", env=penv), 2, "list, show ID or clear", "profile alone")
one_line_error(pyimport("profile", "list", env={"PYIMPORT_PROFILE": "off"}), 1, "profiles are off",
               "profiles off")

shutil.rmtree(work, ignore_errors=True)
if failures:
    print("check_command: %d failures" % len(failures))
    sys.exit(1)
print("check_command: every subcommand behaves")
