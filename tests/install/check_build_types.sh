#!/usr/bin/env bash
# Every build type a packager may pick builds the shipped targets without a
# compiler warning, as packagers build: PYIMPORT_WERROR off (its default),
# BUILD_TESTING off. Each build is installed into a fresh prefix, whose
# libraries load inert: /bin/true and python3 with them preloaded (and
# audited) print what they print without them, and nothing on stderr.
#
#   check_build_types.sh <source directory> <python> [--covered-by <build directory>] <build type>...
#
# --covered-by: a build of the same sources with PYIMPORT_WERROR=ON (the
# test suite's own): a build type whose shipped targets it compiled with
# the same flags but -Werror is covered by it (it built, so without a
# warning) and is configured and compared, not built.
#
# A build type "empty" is passed as packagers pass no type,
# -DCMAKE_BUILD_TYPE= (the project then picks RelWithDebInfo). A
# type whose compile flags are, target for target, those of a type already
# built here is configured and compared, not built again.
set -euo pipefail
source=$(realpath "$1")
python=$2
shift 2
covered_by=""
if [ "${1:-}" = --covered-by ]; then covered_by=$(realpath "$2"); shift 2; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check_build_types: $*" >&2; exit 1; }
# What `cmake --install` installs of the default configuration that is
# built: the libraries, the commands, the man pages (the rest are files of
# the source tree or written at configure time). Those the configuration
# has; one missing here makes the install below fail.
shipped=(pyimport pyimport-options pyimport-audit pyimport-check pyimport-man)

# The compile and link lines of every target of the configuration, with
# this build's own directory taken out: two build types with the same build
# the same objects.
flags_of() {
    local dir=$1
    find "$dir" \( -name flags.make -o -name link.txt \) -path '*/CMakeFiles/*.dir/*' | sort |
        while read -r f; do echo "${f#"$dir"}"; cat "$f"; done | sed "s|$dir|BUILD|g"
}

# The compile flags of the shipped targets' objects, -Werror and the build
# directory taken out: equal, two builds compile the same objects but for
# whether a warning stops them.
compile_flags_of() {
    local dir=$1 target
    for target in pyimport_core "${shipped[@]}"; do
        find "$dir" -path "*/CMakeFiles/$target.dir/flags.make" | while read -r f; do
            echo "$target"; cat "$f"
        done
    done | grep -v '^#' | sed "s|$dir|BUILD|g; s/ -Werror / /g; s/ -Werror$//"
}
if [ -n "$covered_by" ]; then
    [ -f "$covered_by/CMakeCache.txt" ] || fail "--covered-by $covered_by: not a build directory"
    if grep -q '^PYIMPORT_WERROR:BOOL=ON' "$covered_by/CMakeCache.txt"; then
        compile_flags_of "$covered_by" > "$work/covered.flags"
    else
        covered_by=""  # warnings did not stop that build: it covers nothing
    fi
fi

built_types=()
for name in "$@"; do
    type=$name
    if [ "$name" = empty ]; then type=""; fi
    dir=$work/build-$name
    start=$SECONDS
    cmake -S "$source" -B "$dir" "-DCMAKE_BUILD_TYPE=$type" -DBUILD_TESTING=OFF > "$work/$name.configure.log" 2>&1 ||
        { cat "$work/$name.configure.log"; fail "$name: configure failed"; }
    if grep -q '^PYIMPORT_WERROR:BOOL=ON' "$dir/CMakeCache.txt"; then fail "$name: PYIMPORT_WERROR is on by default"; fi
    help=$(cmake --build "$dir" --target help)
    all_targets=()
    for target in "${shipped[@]}"; do
        if grep -qxF "... $target" <<< "$help"; then all_targets+=("$target"); fi
    done
    # The optimisation the build type stands for reaches the compiler.
    case "$type" in
        Release) want='-O3' ;; MinSizeRel) want='-Os' ;; Debug) want='-g' ;; RelWithDebInfo|'') want='-O2 -g' ;; *) want='' ;;
    esac
    cxx_flags=$(sed -n 's/^CXX_FLAGS = //p' "$dir/shim/CMakeFiles/pyimport.dir/flags.make")
    [[ " $cxx_flags " == *" $want "* ]] || fail "$name: the shim is compiled with '$cxx_flags', not $want"
    flags_of "$dir" > "$work/$name.flags"
    same=""
    for other in "${built_types[@]}"; do
        if cmp -s "$work/$name.flags" "$work/$other.flags"; then same=$other; break; fi
    done
    if [ -z "$same" ] && [ -n "$covered_by" ]; then
        compile_flags_of "$dir" > "$work/$name.compile"
        if cmp -s "$work/$name.compile" "$work/covered.flags"; then same="$covered_by (built with -Werror)"; fi
    fi
    if [ -n "$same" ]; then
        echo "check_build_types: $name: compiled as by $same, which built without warnings ($((SECONDS - start)) s)"
        continue
    fi
    cmake --build "$dir" -j2 --target "${all_targets[@]}" > "$work/$name.build.log" 2>&1 ||
        { tail -50 "$work/$name.build.log"; fail "$name: the build failed"; }
    if grep -n 'warning:' "$work/$name.build.log"; then fail "$name: the compiler warned (above)"; fi
    prefix=$work/prefix-$name
    cmake --install "$dir" --prefix "$prefix" > "$work/$name.install.log" 2>&1 ||
        { cat "$work/$name.install.log"; fail "$name: cmake --install failed (a shipped target not built here?)"; }
    lib=$prefix/$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$dir/CMakeCache.txt")
    [ -f "$lib/libpyimport.so" ] || fail "$name: no libpyimport.so installed"
    preloads=("LD_PRELOAD=$lib/libpyimport.so")
    if [ -f "$lib/libpyimport-audit.so" ]; then
        preloads+=("LD_AUDIT=$lib/libpyimport-audit.so LD_PRELOAD=$lib/libpyimport.so")
    fi
    for program in /bin/true "$python -c print(1)"; do
        # shellcheck disable=SC2086 # the words of $program and $preload
        $program > "$work/want" 2>&1 && want=0 || want=$?
        for preload in "${preloads[@]}"; do
            # shellcheck disable=SC2086
            env $preload $program > "$work/out" 2> "$work/err" && status=0 || status=$?
            cmp -s "$work/out" "$work/want" && [ "$status" = "$want" ] ||
                fail "$name: $preload $program printed '$(cat "$work/out")' (exit $status), without it '$(cat "$work/want")' (exit $want)"
            [ ! -s "$work/err" ] || fail "$name: $preload $program wrote on stderr: $(cat "$work/err")"
        done
    done
    built_types+=("$name")
    echo "check_build_types: $name: built without warnings, installed, inert ($((SECONDS - start)) s)"
    rm -rf "$dir"
done
