# Writes pyimport(1) from the command's own table of subcommands
# (SUBCOMMANDS in pyimport.py), so the page and `pyimport help` agree.
#
#   python3 manpage.py pyimport.py VERSION > pyimport.1
import runpy
import sys


def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def main(source, version):
    command = runpy.run_path(source, run_name="pyimport_manpage")
    out = [
        '.TH PYIMPORT 1 "" "pyimport %s" "pyimport"' % version,
        ".SH NAME",
        "pyimport \\- run, check and report on MPI jobs served by libpyimport.so",
        ".SH SYNOPSIS",
    ]
    for name, synopsis, _ in command["SUBCOMMANDS"]:
        out += [".B pyimport %s" % name, roff(synopsis) if synopsis else "", ".br"]
    out += [
        ".B pyimport", "\\-\\-version | \\-\\-help | help COMMAND",
        ".SH DESCRIPTION",
        "libpyimport.so, preloaded into the ranks of an MPI job that runs Python, "
        "serves the interpreter's file system calls from one snapshot that rank 0 "
        "reads and broadcasts, so that the job costs the shared file system what "
        "one rank does. This command runs jobs with it, checks an interpreter, and "
        "reads what a job recorded. Errors are one line on standard error and a "
        "non\\-zero exit status (2 for bad arguments).",
        ".SH COMMANDS",
    ]
    for name, synopsis, text in command["SUBCOMMANDS"]:
        out += [".TP", ".B %s %s" % (name, roff(synopsis)), roff(text)]
    out += [
        ".SH EXAMPLES",
        ".nf",
        "pyimport run \\-\\-stats\\-file job\\-%j.json mpiexec \\-n 64 python3 app.py",
        "pyimport report job\\-1234.json \\-\\-plot job\\-1234.png",
        "pyimport check \\-\\-python ./venv/bin/python app.py",
        ".fi",
        ".SH SEE ALSO",
        ".BR pyimport (7)",
        "for the PYIMPORT_* variables,",
        ".BR ld.so (8)",
    ]
    sys.stdout.write("\n".join(line for line in out if line != "") + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
