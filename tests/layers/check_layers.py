#!/usr/bin/env python3
"""Include dependencies between the layers of shim/ point one way:

    entry -> startup -> loader -> serve -> image -> base -> audit

A file in a layer may include its own layer's headers and those of the layers
to its right; tools/ may include anything. Every include of the library's own
headers is spelled "layer/file.hpp" (quotes, from shim/); system and
third-party headers use <...>.

  check_layers.py <shim directory>

Prints every violation (file:line: the include, and why) and exits 1 if there
is any. Python 3 stdlib only.
"""

import pathlib
import re
import sys

LAYERS = ["entry", "startup", "loader", "serve", "image", "base", "audit"]
ANYTHING = {"tools"}
SOURCES = {".cpp", ".hpp", ".h", ".c", ".cc"}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]*)"')


def check(shim):
    violations = []
    files = sorted(p for p in shim.rglob("*") if p.is_file() and p.suffix in SOURCES)
    for path in files:
        rel = path.relative_to(shim)
        layer = rel.parts[0] if len(rel.parts) > 1 else None
        if layer not in LAYERS and layer not in ANYTHING:
            violations.append(f"{rel}: not in a layer ({', '.join(LAYERS + sorted(ANYTHING))})")
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            target = match.group(1)
            where = f'{rel}:{number}: #include "{target}"'
            parts = target.split("/")
            if len(parts) != 2 or parts[0] not in LAYERS + sorted(ANYTHING) or not parts[1]:
                violations.append(f"{where}: not a \"layer/file.hpp\" include")
            elif not (shim / target).is_file():
                violations.append(f"{where}: no such file under {shim}")
            elif layer in ANYTHING:
                pass
            elif parts[0] in ANYTHING:
                violations.append(f"{where}: {layer} may not include {parts[0]}")
            elif LAYERS.index(parts[0]) < LAYERS.index(layer):
                violations.append(f"{where}: {layer} may not include {parts[0]} "
                                  f"(dependencies point {' -> '.join(LAYERS)})")
    return files, violations


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    shim = pathlib.Path(argv[0])
    files, violations = check(shim)
    for v in violations:
        print(f"VIOLATION {v}")
    print(f"{len(files)} files under {shim}: {len(violations)} violations")
    if not files:
        sys.exit("no source files found")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
