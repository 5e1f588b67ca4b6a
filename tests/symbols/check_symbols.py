#!/usr/bin/env python3
"""Checks of the library's symbols against the table of interposed functions.

The table (PYIMPORT_REAL_FUNCTIONS in shim/base/real.hpp) is read from what
`pyimport-symbols` prints, one name per line.

  check_symbols.py references <pyimport-symbols> <object.o>...
      No object refers to an interposed name except through the table
      (REAL(name)). In the preloaded library a plain `close(fd)` or `&fopen`
      binds to the library's own exported wrapper, not to libc's. Two ways to
      refer to one: an undefined symbol (`nm -u`: the wrapper lives in another
      object, or in libc) and, in the objects that define the wrappers, a
      relocation against the wrapper's own symbol (a call from the same file:
      that shows as defined, not undefined).

  check_symbols.py exports <pyimport-symbols> <libpyimport.so>
      The library's exported dynamic symbols are exactly the table's.

Each prints every violation and exits 1 if there is any. Python 3 stdlib and
binutils only.
"""

import re
import subprocess
import sys


def run(*command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def interposed(tool):
    names = run(tool).split()
    if len(names) < 10 or len(set(names)) != len(names):
        sys.exit(f"{tool} printed {len(names)} names ({len(set(names))} distinct): not the table")
    return set(names)


def base_name(symbol):
    # close@GLIBC_2.2.5 (versioned), close.localalias (-fno-semantic-interposition)
    return symbol.split("@", 1)[0].removesuffix(".localalias")


def undefined(obj):
    names = set()
    for line in run("nm", "-u", "--format=posix", obj).splitlines():
        fields = line.split()
        if fields and not line.endswith(":"):
            names.add(base_name(fields[0]))
    return names


def defined(obj):
    names = set()
    for line in run("nm", "--defined-only", "--format=posix", obj).splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.endswith(":"):
            names.add(base_name(fields[0]))
    return names


RELOCATIONS = re.compile(r"^RELOCATION RECORDS FOR \[(.*)\]:$")
RECORD = re.compile(r"^([0-9a-f]+)\s+(\S+)\s+(\S+)$")


def relocations(obj):
    """(section, offset, type, symbol) of every relocation outside debug info."""
    section = None
    out = []
    for line in run("objdump", "-r", obj).splitlines():
        header = RELOCATIONS.match(line)
        if header:
            section = header.group(1)
            continue
        record = RECORD.match(line)
        # Debug info describes definitions, it does not call or take addresses.
        if not record or section is None or section.startswith(".debug"):
            continue
        symbol = re.sub(r"[-+]0x[0-9a-f]+$", "", record.group(3))
        out.append((section, record.group(1), record.group(2), base_name(symbol)))
    return out


def where(obj, section, offsets):
    """The function and source line of each offset, from the debug info (if any)."""
    if not offsets or not section.startswith(".text"):
        return ["" for _ in offsets]
    result = subprocess.run(["addr2line", "-f", "-C", "-j", section, "-e", obj, *offsets],
                            capture_output=True, text=True)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2 * len(offsets):
        return ["" for _ in offsets]
    return [f" in {lines[2 * i]} ({lines[2 * i + 1]})" for i in range(len(offsets))]


def check_references(tool, objects):
    names = interposed(tool)
    violations = []
    for obj in objects:
        found = {}  # symbol -> descriptions
        for symbol in sorted(undefined(obj) & names):
            found[symbol] = ["undefined reference"]
        own = defined(obj) & names
        by_section = {}
        for section, offset, kind, symbol in relocations(obj):
            if symbol in names:
                by_section.setdefault(section, []).append((offset, kind, symbol))
        for section, records in sorted(by_section.items()):
            places = where(obj, section, [offset for offset, _, _ in records])
            for (offset, kind, symbol), place in zip(records, places):
                what = f"{kind} at {section}+0x{int(offset, 16):x}{place}"
                if symbol in own:
                    what += " (the library's own wrapper)"
                found.setdefault(symbol, []).append(what)
        for symbol in sorted(found):
            violations.append((obj, symbol))
            print(f"VIOLATION {obj}: {symbol}")
            for what in found[symbol]:
                print(f"    {what}")
    print(f"{len(objects)} objects checked against {len(names)} interposed names: "
          f"{len(violations)} plain references (each must be REAL(name))")
    if not objects:
        sys.exit("no objects given")
    return 1 if violations else 0


def check_exports(tool, library):
    names = interposed(tool)
    exported = set()
    for line in run("nm", "-D", "--defined-only", "--format=posix", library).splitlines():
        fields = line.split()
        if fields:
            exported.add(base_name(fields[0]))
    missing = sorted(names - exported)
    extra = sorted(exported - names)
    for symbol in missing:
        print(f"MISSING {symbol}: in the table, not exported by {library}")
    for symbol in extra:
        print(f"EXTRA {symbol}: exported by {library}, not in the table")
    print(f"{len(exported)} exported, {len(names)} in the table: "
          f"{len(missing)} missing, {len(extra)} extra")
    return 1 if missing or extra else 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "references":
        return check_references(argv[1], argv[2:])
    if len(argv) == 3 and argv[0] == "exports":
        return check_exports(argv[1], argv[2])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
