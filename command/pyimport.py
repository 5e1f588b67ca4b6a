#!@PYIMPORT_PYTHON@
# pyimport: the command users run around libpyimport.so (command/README.md).
# Runs a job with the library set, checks an interpreter, reads a job's
# statistics (PYIMPORT_STATS_FILE), lists and clears profiles, prints the
# variables. Standard library only (matplotlib for report --plot); runs on
# Python 3.6 and later. Every error is one line on stderr and a non-zero exit.
import codecs
import io
import json
import os
import shutil
import subprocess
import sys
import time

VERSION = "@PROJECT_VERSION@"
HERE = os.path.dirname(os.path.realpath(__file__))
# Where the rest of the installation is, relative to this file (configured
# by CMake for the build tree and for the install tree).
LIBRARY_DIR = os.path.normpath(os.path.join(HERE, "@PYIMPORT_LIBRARY_DIR@"))
HELPER_DIR = os.path.normpath(os.path.join(HERE, "@PYIMPORT_HELPER_DIR@"))
OPTIONS_DIR = os.path.normpath(os.path.join(HERE, "@PYIMPORT_OPTIONS_DIR@"))
PRELOAD = os.path.join(LIBRARY_DIR, "libpyimport.so")
AUDIT = os.path.join(LIBRARY_DIR, "libpyimport-audit.so")
SCHEMA = "pyimport-stats/1"
PROFILE_HEADER = "pyimport-profile 1\n"

# name, synopsis, what it does (the help and pyimport(1) are written from it)
SUBCOMMANDS = [
    ("run", "[--stats-file PATH] [--no-audit] [--] COMMAND...",
     "Runs COMMAND (a launcher: mpiexec, mpirun, srun, or a job script) with "
     "libpyimport.so in LD_PRELOAD and libpyimport-audit.so in LD_AUDIT. "
     "Open MPI's mpirun, which passes only the variables it is told of to "
     "ranks on other nodes, is given -x for them and every PYIMPORT_* "
     "variable (a job script that calls it needs those -x itself). "
     "--stats-file sets PYIMPORT_STATS_FILE (relative to here). The exit "
     "status is COMMAND's."),
    ("check", "[--python PYTHON] [--] [ARGS...]",
     "Tells, for the interpreter PYTHON (default: python3 on PATH) started "
     "with ARGS, what rank 0 of a job would snapshot and why, how large the "
     "snapshot is and what would not fit, which profile it would use, and "
     "whether the node directory and an MPI library are usable. Exits 1 if "
     "something would keep a job from being served."),
    ("report", "FILE.json [--plot PNG]",
     "Summarises a job's statistics, the document PYIMPORT_STATS_FILE made "
     "rank 0 write; --plot also draws them into a PNG image (needs "
     "matplotlib)."),
    ("profile", "list | show ID | clear [ID...]",
     "Lists the profiles in PYIMPORT_PROFILE's directory (what each "
     "program's jobs used, which the next job reads alone), prints one, or "
     "removes the given ones or all."),
    ("options", "",
     "Prints every PYIMPORT_* variable with its type, default and meaning."),
]


def undecodable_as_bytes(error):
    """Encoding errors: a path's undecodable bytes (U+DC80..U+DCFF, as
    surrogateescape decoded them) as those bytes, anything else escaped."""
    out = b""
    for char in error.object[error.start:error.end]:
        code = ord(char)
        out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else \
            char.encode("ascii", "backslashreplace")
    return out, error.end


codecs.register_error("pyimport", undecodable_as_bytes)


def reopen_stdout():
    """Paths in documents and profiles may be any bytes: print them as they
    are, whatever the locale's encoding, never a traceback."""
    try:
        sys.stdout.flush()
        sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding=sys.stdout.encoding or "utf-8",
                                      errors="pyimport", line_buffering=True)
    except (AttributeError, ValueError):
        pass


class Failure(Exception):
    """One line for stderr; the exit status."""

    def __init__(self, message, status=1):
        Exception.__init__(self, message)
        self.status = status


def usage_text():
    lines = ["usage: pyimport [--version] [--help] COMMAND [ARGS...]", "", "commands:"]
    for name, synopsis, _ in SUBCOMMANDS:
        lines.append(("  pyimport %s %s" % (name, synopsis)).rstrip())
    lines.append("")
    lines.append("pyimport help COMMAND tells more; man pyimport, man 7 pyimport.")
    return "\n".join(lines)


def command_help(name):
    for sub, synopsis, text in SUBCOMMANDS:
        if sub == name:
            return "usage: pyimport %s %s\n\n%s" % (sub, synopsis, wrap(text, 76))
    raise Failure("pyimport help: no command %r (commands: %s)"
                  % (name, ", ".join(s[0] for s in SUBCOMMANDS)), 2)


def wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = word if not line else line + " " + word
    return "\n".join(lines + [line])


# ---- run ---------------------------------------------------------------

def prepended(value, path):
    """`path` first in a loader list (':' or ' ' separated), once."""
    entries = [e for e in (value or "").replace(" ", ":").split(":") if e]
    same = [e for e in entries if os.path.realpath(e) == os.path.realpath(path)]
    return ":".join(([] if same else [path]) + entries)


def leading_options(command, args, valued, flags, unknown_prefix):
    """The options before COMMAND's other arguments (up to "--" or the first
    argument that does not start with `unknown_prefix`): {name: value, or
    True for a flag}, and the rest. `valued` maps each option that takes a
    value to what the value is."""
    given = {}
    while args:
        name = args[0]
        if name == "--":
            return given, args[1:]
        if name in valued:
            if len(args) < 2:
                raise Failure("pyimport %s: %s needs %s" % (command, name, valued[name]), 2)
            given[name], args = args[1], args[2:]
        elif name in flags:
            given[name], args = True, args[1:]
        elif name.startswith(unknown_prefix):
            raise Failure("pyimport %s: unknown option %s (see pyimport help %s)"
                          % (command, name, command), 2)
        else:
            break
    return given, args


def is_open_mpi_launcher(command):
    """Open MPI's mpirun, mpiexec or orterun, also behind Debian's
    alternatives (mpirun -> mpirun.openmpi -> orterun)."""
    found = shutil.which(command)
    if not found:
        return False
    names = {os.path.basename(command), os.path.basename(os.path.realpath(found))}
    return bool(names & {"orterun", "mpirun.openmpi", "mpiexec.openmpi", "prterun", "prun"})


def cmd_run(args):
    given, args = leading_options("run", args, {"--stats-file": "a path"}, {"--no-audit"}, "-")
    stats_file, audit = given.get("--stats-file"), "--no-audit" not in given
    if not args:
        raise Failure("pyimport run: no command to run (pyimport run mpiexec -n 4 python3 app.py)", 2)
    if stats_file is not None:
        if not stats_file:
            raise Failure("pyimport run: --stats-file needs a path", 2)
        # Where it was asked for, whatever directory the job's rank 0 starts in.
        stats_file = os.path.join(os.getcwd().replace("%", "%%"), stats_file)
    if not os.path.exists(PRELOAD):
        raise Failure("pyimport run: %s is missing (a broken installation?)" % PRELOAD)
    env = dict(os.environ)
    env["LD_PRELOAD"] = prepended(env.get("LD_PRELOAD"), PRELOAD)
    names = ["LD_PRELOAD"]
    if audit and os.path.exists(AUDIT):
        env["LD_AUDIT"] = prepended(env.get("LD_AUDIT"), AUDIT)
        names.append("LD_AUDIT")
    if stats_file is not None:
        env["PYIMPORT_STATS_FILE"] = stats_file
    # Open MPI's mpirun passes only the variables it is told of to ranks on
    # other nodes (-x NAME); Hydra and srun pass the whole environment. (Not
    # through OMPI_MCA_mca_base_env_list: Open MPI refuses it next to -x.)
    if is_open_mpi_launcher(args[0]):
        names += sorted(k for k in env if k.startswith("PYIMPORT_"))
        exported = [a[1] for a in zip(args, args[1:]) if a[0] in ("-x", "--x")]
        for name in names:
            if name not in exported:
                args = [args[0], "-x", name] + args[1:]
    try:
        os.execvpe(args[0], args, env)
    except OSError as error:
        raise Failure("pyimport run: cannot run %s: %s" % (args[0], error.strerror), 127)


# ---- check -------------------------------------------------------------

def clean_environment():
    """This environment without the libraries: the interpreter asked for its
    version must not be a process they act in."""
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "LD_AUDIT"):
        kept = [e for e in env.get(name, "").replace(" ", ":").split(":")
                if e and "libpyimport" not in os.path.basename(e)]
        if kept:
            env[name] = ":".join(kept)
        else:
            env.pop(name, None)
    return env


def cmd_check(args):
    # A single dash starts the interpreter's own options (-m, -I ...).
    given, args = leading_options("check", args, {"--python": "an interpreter"}, set(), "--")
    python = given.get("--python", "python3")
    found = shutil.which(python) if "/" not in python else python
    if not found or not os.access(found, os.X_OK):
        raise Failure("pyimport check: no interpreter %s" % python)
    try:
        out = subprocess.run([found, "-c", "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=clean_environment(), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Failure("pyimport check: cannot run %s: %s" % (found, error))
    version = out.stdout.decode(errors="replace")
    if out.returncode != 0 or not version.replace(".", "").isdigit():
        raise Failure("pyimport check: %s is not a Python interpreter that runs (exit %d)"
                      % (found, out.returncode))
    helper = os.path.join(HELPER_DIR, "pyimport-check")
    if not os.path.exists(helper):
        raise Failure("pyimport check: %s is missing (a broken installation?)" % helper)
    print("library: %s%s" % (PRELOAD, "" if os.path.exists(PRELOAD) else " (missing)"))
    print("audit library: %s" % (AUDIT if os.path.exists(AUDIT) else "not installed"))
    sys.stdout.flush()
    try:
        status = subprocess.call([helper, "--python", python if "/" in python else found,
                                  "--version", version, "--"] + args, env=clean_environment())
    except OSError as error:
        raise Failure("pyimport check: cannot run %s: %s" % (helper, error.strerror))
    if status < 0:
        raise Failure("pyimport check: %s ended by signal %d" % (helper, -status))
    return status


# ---- report ------------------------------------------------------------

def mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def load_stats(path):
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read().decode("utf-8", "surrogateescape"))
    except OSError as error:
        raise Failure("pyimport report: %s: %s" % (path, error.strerror))
    except (ValueError, RecursionError) as error:
        raise Failure("pyimport report: %s is not a JSON document: %s" % (path, error))
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise Failure("pyimport report: %s is not a pyimport statistics document (%s)"
                      % (path, SCHEMA))
    try:
        for section in ("job", "snapshot", "seconds", "calls", "node_memory"):
            if not isinstance(document[section], dict):
                raise KeyError(section)
        document["calls"]["served"] + document["calls"]["forwarded"]
        list(document["ranks"]), list(document["most_forwarded"])
    except (KeyError, TypeError) as error:
        raise Failure("pyimport report: %s lacks %s" % (path, error))
    return document


# The start-up's phases in the document's "seconds", in order, and their names.
START_PHASES = [("mpi_load", "MPI library"), ("mpi_init", "MPI initialisation"), ("walk", "walk"),
                ("status", "rank 0's status"), ("broadcast", "image"),
                ("node_sharing", "node libraries"), ("library_copies", "of which copies"),
                ("hand_over", "hand-over")]


def report_lines(d):
    job, snap, secs, calls, mem = d["job"], d["snapshot"], d["seconds"], d["calls"], d["node_memory"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(job.get("started_at", 0)))
    lines = ["job %s on %s, %s: %d ranks on %d node%s (pyimport %s)"
             % (job.get("id") or "(no job id)", job.get("host", "?"), when, job["ranks"],
                job["nodes"], "" if job["nodes"] == 1 else "s", d.get("pyimport_version", "?")),
             "program: %s; %d ranks served" % (job.get("executable", "?"), job.get("served_ranks", 0)),
             "snapshot: %d entries, %s, from %d roots (%s)"
             % (snap["entries"], mib(snap["bytes"]), snap["roots"],
                ", ".join(snap.get("directories", [])) or "no directories"),
             "start-up: %.3f s on rank 0: %s"
             % (secs["start_up"], ", ".join("%s %.3f s" % (name, secs.get(key, 0.0))
                                            for key, name in START_PHASES))]
    if snap.get("not_cached_files"):
        lines.append("not cached (over PYIMPORT_MAX_BYTES): %d files, %s"
                     % (snap["not_cached_files"], mib(snap["not_cached_bytes"])))
    total = calls["served"] + calls["forwarded"]
    lines.append("calls: %d served, %d forwarded to the filesystem (%.1f%% served)"
                 % (calls["served"], calls["forwarded"], 100.0 * calls["served"] / total if total else 0))
    lines.append("  %-10s %12s %12s" % ("kind", "served", "forwarded"))
    for kind, served in calls["served_by_kind"].items():
        lines.append("  %-10s %12d %12d" % (kind, served, calls["forwarded_by_kind"].get(kind, 0)))
    lines.append("node memory: %s per node (image %s, libraries %s over all nodes)"
                 % (mib(mem["per_node_bytes"]), mib(mem["image_bytes"]), mib(mem["library_bytes"])))
    ranks = d["ranks"]
    if ranks:
        forwarded = sorted((r["forwarded"], r["rank"]) for r in ranks)
        lines.append("forwarded per rank: min %d, median %d, max %d (rank %d)"
                     % (forwarded[0][0], forwarded[len(forwarded) // 2][0], forwarded[-1][0],
                        forwarded[-1][1]))
    if d["most_forwarded"]:
        lines.append("most forwarded paths (count, path, asked by):")
        for row in d["most_forwarded"]:
            lines.append("  %8d  %s  %s" % (row["count"], row["path"], row["asked_by"]))
    return lines


def matplotlib_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot
        return matplotlib.pyplot
    except ImportError:
        raise Failure("pyimport report: --plot needs matplotlib for %s (Debian: python3-matplotlib)"
                      % sys.executable)


def plot(plt, d, png):
    calls, secs, ranks = d["calls"], d["seconds"], d["ranks"]
    figure, (by_kind, by_rank, start) = plt.subplots(1, 3, figsize=(15, 4.5))
    kinds = list(calls["served_by_kind"])
    x = range(len(kinds))
    by_kind.bar([i - 0.2 for i in x], [calls["served_by_kind"][k] for k in kinds], 0.4, label="served")
    by_kind.bar([i + 0.2 for i in x], [calls["forwarded_by_kind"].get(k, 0) for k in kinds], 0.4,
                label="forwarded")
    by_kind.set_xticks(list(x))
    by_kind.set_xticklabels(kinds, rotation=45)
    by_kind.set_title("calls by kind, all ranks")
    by_kind.legend()
    numbers = [r["rank"] for r in ranks]
    by_rank.bar(numbers, [r["served"] for r in ranks], label="served")
    by_rank.bar(numbers, [r["forwarded"] for r in ranks], bottom=[r["served"] for r in ranks],
                label="forwarded")
    by_rank.set_xlabel("rank")
    from matplotlib.ticker import MaxNLocator
    by_rank.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_rank.set_title("calls per rank")
    by_rank.legend()
    steps = [key for key, _ in START_PHASES] + ["start_up"]
    start.barh(steps, [secs.get(s, 0.0) for s in steps])
    start.set_xlabel("seconds")
    start.set_title("start-up (rank 0)")
    figure.suptitle("pyimport: job %s, %d ranks on %d node%s"
                    % (d["job"].get("id") or "?", d["job"]["ranks"], d["job"]["nodes"],
                       "" if d["job"]["nodes"] == 1 else "s"))
    figure.tight_layout()
    try:
        figure.savefig(png, format="png")
    except OSError as error:
        raise Failure("pyimport report: cannot write %s: %s" % (png, error.strerror))


def cmd_report(args):
    png, files = None, []
    while args:
        if args[0] == "--plot":
            if len(args) < 2:
                raise Failure("pyimport report: --plot needs a PNG file name", 2)
            png, args = args[1], args[2:]
        elif args[0].startswith("-"):
            raise Failure("pyimport report: unknown option %s (see pyimport help report)" % args[0], 2)
        else:
            files.append(args[0])
            args = args[1:]
    if len(files) != 1:
        raise Failure("pyimport report: give one statistics file (PYIMPORT_STATS_FILE's)", 2)
    document = load_stats(files[0])
    if png:
        plotter = matplotlib_pyplot()
    try:
        lines = report_lines(document)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError) as error:
        raise Failure("pyimport report: %s lacks or mistypes %s: %r"
                      % (files[0], type(error).__name__, error))
    for line in lines:
        print(line)
    if png:
        try:
            plot(plotter, document, png)
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError) as error:
            raise Failure("pyimport report: cannot plot %s: %r" % (files[0], error))
        print("plot: %s" % png)
    return 0


# ---- profile -----------------------------------------------------------

def profile_directory():
    """PYIMPORT_PROFILE's directory, as the library finds it (profile_directory)."""
    setting = os.environ.get("PYIMPORT_PROFILE", "auto")
    if setting == "":
        raise Failure("pyimport profile: PYIMPORT_PROFILE is empty (a bad setting for the library too)")
    if setting == "off":
        raise Failure("pyimport profile: profiles are off (PYIMPORT_PROFILE=off)")
    if setting != "auto":
        return setting
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if cache.startswith("/"):
        return os.path.join(cache, "pyimport")
    home = os.environ.get("HOME", "")
    if home.startswith("/"):
        return os.path.join(home, ".cache", "pyimport")
    raise Failure("pyimport profile: no profile directory (neither XDG_CACHE_HOME nor HOME is "
                  "absolute), so jobs keep none")


def read_profile(path):
    """The paths of a profile, or None if the file is not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise Failure("pyimport profile: %s: %s" % (path, error.strerror))
    if not data.startswith(PROFILE_HEADER.encode()):
        return None
    return [os.fsdecode(p) for p in data[len(PROFILE_HEADER):].split(b"\n") if p]


def profiles(directory):
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".profile"))
    except FileNotFoundError:
        return []
    except OSError as error:
        raise Failure("pyimport profile: %s: %s" % (directory, error.strerror))
    return [os.path.join(directory, n) for n in names
            if os.path.isfile(os.path.join(directory, n))]


def find_profile(directory, name):
    path = name if "/" in name else os.path.join(directory, name if name.endswith(".profile")
                                                 else name + ".profile")
    if not os.path.isfile(path):
        raise Failure("pyimport profile: no profile %s in %s (pyimport profile list)" % (name, directory))
    return path


def cmd_profile(args):
    if not args or args[0] not in ("list", "show", "clear"):
        raise Failure("pyimport profile: list, show ID or clear [ID...]", 2)
    action, rest = args[0], args[1:]
    directory = profile_directory()
    if action == "list":
        if rest:
            raise Failure("pyimport profile list takes no arguments", 2)
        found = [(path, read_profile(path)) for path in profiles(directory)]
        found = [(path, paths) for path, paths in found if paths is not None]
        if not found:
            print("no profiles in %s" % directory)
            return 0
        print("%-18s  %-19s  %7s  %s" % ("id", "last written", "paths", "common directory"))
        for path, paths in found:
            written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(path).st_mtime))
            common = os.path.commonpath(paths) if paths else "-"
            print("%-18s  %-19s  %7d  %s" % (os.path.basename(path)[:-len(".profile")], written,
                                             len(paths), common))
        return 0
    if action == "show":
        if len(rest) != 1:
            raise Failure("pyimport profile show: give one profile id (pyimport profile list)", 2)
        path = find_profile(directory, rest[0])
        paths = read_profile(path)
        if paths is None:
            raise Failure("pyimport profile: %s is not a pyimport profile" % path)
        print("# %s: %d paths" % (path, len(paths)))
        for p in sorted(paths):
            print(p)
        return 0
    targets = [find_profile(directory, n) for n in rest] if rest else profiles(directory)
    removed = 0
    for path in targets:
        if read_profile(path) is None:
            if rest:
                raise Failure("pyimport profile: %s is not a pyimport profile; not removed" % path)
            continue
        try:
            os.unlink(path)
        except OSError as error:
            raise Failure("pyimport profile: cannot remove %s: %s" % (path, error.strerror))
        removed += 1
    print("removed %d profile%s from %s" % (removed, "" if removed == 1 else "s", directory))
    return 0


# ---- options -----------------------------------------------------------

def cmd_options(args):
    if args:
        raise Failure("pyimport options takes no arguments", 2)
    tool = os.path.join(OPTIONS_DIR, "pyimport-options")
    try:
        return subprocess.call([tool, "--text"])
    except OSError as error:
        raise Failure("pyimport options: cannot run %s: %s" % (tool, error.strerror))


def main(argv):
    if not argv:
        sys.stderr.write(usage_text() + "\n")
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage_text())
        return 0
    if argv[0] == "--version":
        print("pyimport %s" % VERSION)
        return 0
    if argv[0] == "help":
        print(command_help(argv[1]) if len(argv) > 1 else usage_text())
        return 0
    commands = {"run": cmd_run, "check": cmd_check, "report": cmd_report,
                "profile": cmd_profile, "options": cmd_options}
    if argv[0] not in commands:
        raise Failure("pyimport: no command %r (pyimport --help lists them)" % argv[0], 2)
    if len(argv) > 1 and argv[1] in ("-h", "--help"):
        print(command_help(argv[0]))
        return 0
    return commands[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    reopen_stdout()
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as failure:
        sys.stderr.write("%s\n" % failure)
        sys.exit(failure.status)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
