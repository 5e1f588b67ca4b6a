#!/usr/bin/env bash
# Every C and C++ source of the project follows .clang-format.
#   check_format.sh <clang-format> <source dir>
set -euo pipefail
clang_format=$1
cd "$2"
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp')
else
    mapfile -t files < <(find shim command include tests bench examples -name '*.[ch]' -o -name '*.[ch]pp')
fi
[ ${#files[@]} -gt 0 ] || { echo "no sources found" >&2; exit 1; }
if ! "$clang_format" --dry-run -Werror "${files[@]}"; then
    echo "FAIL: the files above do not follow .clang-format (clang-format -i <file>)" >&2
    exit 1
fi
echo "ok: ${#files[@]} files follow .clang-format"
