#!/usr/bin/env bash
# The module files under the real module systems: the build tree installed
# into a fresh prefix, then, in a clean environment (env -i), `module load
# pyimport` through Debian's Lmod or environment-modules (the shell code they
# print, eval'ed as their own `module` function does) sets the installed
# paths, serves an unchanged `mpiexec.mpich -n 2 python3 app.py` from one
# snapshot, leaves login-shell programs as they were, and `module unload`
# restores every variable. Three sessions (check_modules_session.sh):
#   plain  nothing preloaded before;
#   other  another library already in LD_PRELOAD, a directory of the
#          user's own first in PATH, MANPATH, PKG_CONFIG_PATH and
#          CMAKE_PREFIX_PATH set: all kept, after the module's entries;
#   moved  the installed tree moved elsewhere, its module files linked into
#          a site's tree (links to directories and files, relative and
#          absolute), no audit library:
#          found from the files' real path, LD_AUDIT not set; MANPATH unset
#          (it gets an empty entry, for the system's man pages, removed
#          again at unload).
# The tools come from scripts/install-modules.sh.
#
#   check_modules.sh <build directory> lmod|tcl [<libdir> <bindir> <mandir> <datadir>]
set -euo pipefail
build=$(realpath "$1")
tool=$2
# The build's GNUInstallDirs, relative to the prefix (modules.cmake passes them).
lib=${3:-lib} bin=${4:-bin} man=${5:-share/man} data=${6:-share}
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "check_modules ($tool): $*" >&2; exit 1; }

case $tool in
lmod)
    modulecmd=/usr/share/lmod/lmod/libexec/lmod
    [ -x "$modulecmd" ] || fail "no Lmod at $modulecmd: run scripts/install-modules.sh" ;;
tcl)
    envmodules=${PYIMPORT_ENVMODULES_DIR:-/opt/pyimport-test/environment-modules}
    modulecmd=$envmodules/usr/lib/x86_64-linux-gnu/modulecmd.tcl
    [ -f "$modulecmd" ] || modulecmd=$(find "$envmodules" -name modulecmd.tcl -type f -print -quit 2>/dev/null || true)
    [ -n "$modulecmd" ] && [ -f "$modulecmd" ] ||
        fail "no environment-modules in $envmodules: run scripts/install-modules.sh"
    command -v tclsh >/dev/null || fail "no tclsh: run scripts/install-modules.sh" ;;
*) fail "usage: check_modules.sh <build directory> lmod|tcl" ;;
esac
command -v mpiexec.mpich >/dev/null || fail "no mpiexec.mpich (MPICH's Hydra)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" > "$work/install.log"
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
moduledir=$prefix/$data/modulefiles/pyimport
case $tool in
lmod) [ -f "$moduledir/$version.lua" ] || fail "no $moduledir/$version.lua installed" ;;
tcl) head -n1 "$moduledir/$version" | grep -q '^#%Module' || fail "no Tcl module file $moduledir/$version" ;;
esac
[ -f "$prefix/$lib/libpyimport.so" ] || fail "no $lib/libpyimport.so installed"

# Another preloaded library (the "other" session): a marker only.
printf 'int pyimport_test_other_library(void) { return 1; }\n' > "$work/other.c"
cc -shared -fPIC -o "$work/libother.so" "$work/other.c"
mkdir -p "$work/mybin" "$work/app" "$work/lsdir"
touch "$work/lsdir/a" "$work/lsdir/b"
# The job: a few standard-library imports and a line per rank.
cat > "$work/app/app.py" <<'PY'
import decimal, email.message, email.utils, json, os, textwrap
rank = int(os.environ.get("PMI_RANK", "-1"))
message = email.message.EmailMessage()
message["Subject"] = "rank %d" % rank
value = decimal.Decimal(1) / decimal.Decimal(7)
line = json.dumps({"rank": rank, "subject": message["Subject"], "value": str(value),
                   "wrapped": textwrap.wrap("one two three", 7)}, sort_keys=True)
# One write: print's two (text, newline) of the two ranks may interleave.
os.write(1, (line + "\n").encode())
PY

# A clean login environment: what env -i keeps, PYTHONUNBUFFERED as set
# where the tests run; the session runs the tool's own shell init.
session() {
    local name=$1 path=$2 modulepath=$3 expected_root=$4 manpath=$5; shift 5
    local home=$work/home-$name
    mkdir -p "$home"
    echo "check_modules ($tool): session $name"
    env -i PATH="$path" HOME="$home" USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb \
        LANG=C.UTF-8 PYTHONUNBUFFERED=1 "$@" \
        /bin/bash --noprofile --norc "$here/check_modules_session.sh" \
        "$tool" "$modulecmd" "$expected_root" "$lib" "$bin" "$man" "$work" "$name" "$modulepath" "$manpath" ||
        fail "session $name failed"
}
system_path=/usr/local/bin:/usr/bin:/bin
session plain "$system_path" "$prefix/$data/modulefiles" "$prefix" as-init
session other "$work/mybin:$system_path" "$prefix/$data/modulefiles" "$prefix" as-init \
    LD_PRELOAD="$work/libother.so" MANPATH=/usr/local/share/man:/usr/share/man \
    PKG_CONFIG_PATH=/usr/local/lib/pkgconfig CMAKE_PREFIX_PATH=/usr/local

# The tree moved, its module files linked into a site's module tree: the
# site's pyimport directory a link to a directory of links to the files
# (relative), through a link to the tree (absolute); no audit library, no
# MANPATH.
mv "$prefix" "$work/moved"
ln -s "$work/moved" "$work/moved-link"
rm -f "$work/moved/$lib/libpyimport-audit.so"
mkdir -p "$work/site" "$work/links"
ln -s ../links "$work/site/pyimport"
for f in "$version" "$version.lua"; do
    ln -s "../moved-link/$data/modulefiles/pyimport/$f" "$work/links/$f"
done
session moved "$system_path" "$work/site" "$work/moved" unset-manpath
echo "check_modules ($tool): load, job, login programs and unload as expected"
