#!/usr/bin/env python3
"""The tests CTest registers are exactly those tests/README.md lists.

  check_test_list.py <ctest> <build directory> <tests/README.md>

The README's section "## Tests" names each test on a line of its own,
"- `name`: what it checks". A suite directory dropped from tests/CMakeLists.txt
(or a test left out of its suite) leaves README names unregistered; a test
added without a line in the README is registered but not listed. Either
fails, and every difference is printed. Python 3 stdlib only.
"""

import json
import re
import subprocess
import sys

ITEM = re.compile(r"^- `([^`]+)`:")


def registered(ctest, build):
    result = subprocess.run([ctest, "--test-dir", build, "--show-only=json-v1"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"ctest --show-only failed ({result.returncode}):\n{result.stderr}")
    return [test["name"] for test in json.loads(result.stdout)["tests"]]


def listed(readme):
    names, inside, section_found = [], False, False
    with open(readme) as f:
        for line in f:
            if line.startswith("## "):
                inside = line.strip() == "## Tests"
                section_found |= inside
                continue
            match = ITEM.match(line) if inside else None
            if match:
                names.append(match.group(1))
    if not section_found:
        sys.exit(f"{readme}: no section \"## Tests\"")
    return names


def duplicates(names):
    return sorted({n for n in names if names.count(n) > 1})


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    ctest, build, readme = argv
    tests, documented = registered(ctest, build), listed(readme)
    problems = []
    for name in sorted(set(tests) - set(documented)):
        problems.append(f"registered but not in {readme}: {name}")
    for name in sorted(set(documented) - set(tests)):
        problems.append(f"in {readme} but not registered (a suite directory dropped?): {name}")
    for name in duplicates(documented):
        problems.append(f"listed twice in {readme}: {name}")
    for problem in problems:
        print(f"MISMATCH {problem}")
    print(f"{len(tests)} tests registered, {len(documented)} listed: {len(problems)} differences")
    if not tests:
        sys.exit("no tests registered")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
