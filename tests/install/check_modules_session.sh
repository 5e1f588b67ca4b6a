#!/usr/bin/env bash
# One session of check_modules.sh, run by it under env -i: `module load
# pyimport` through the real tool, the variables, an MPI job, login-shell
# programs, then `module unload pyimport` and the environment as before.
#
#   check_modules_session.sh lmod|tcl <modulecmd> <root> <libdir> <bindir> <mandir> <work> <name> <modulepath> [unset-manpath]
set -euo pipefail
tool=$1 modulecmd=$2 root=$3 libdir=$4 bindir=$5 mandir=$6 work=$7 name=$8 modulepath=$9
fail() { echo "check_modules ($tool, $name): $*" >&2; exit 1; }

# The tool's own shell init, as a login shell runs it: Lmod's profile
# (/etc/profile.d/lmod.sh: MODULEPATH, MANPATH, BASH_ENV, the `module`
# function), environment-modules' autoinit (what its init/bash evaluates).
# Either `module` evals the shell code the command prints, which ends in
# false / test 0 = 1 when the command failed.
case $tool in
lmod) set +eu; . /usr/share/lmod/lmod/init/profile; set -eu ;;
tcl) eval "$(tclsh "$modulecmd" bash autoinit)" ;;
esac
[ "$(type -t module)" = function ] || fail "the shell init defined no module function"
[ "${10-}" != unset-manpath ] || unset MANPATH
module use "$modulepath" 2> "$work/$name.use.err" || { cat "$work/$name.use.err"; fail "module use $modulepath failed"; }

# The exported variables, sorted, one a line, without the tools' own
# bookkeeping (which modules are loaded, reference counts of path entries).
# Lmod 8.6 writes a trailing empty entry of a path it changed as '::'
# (Var.lua, "Handle \"\" at end of path"), whatever module changed it: the
# same list, compared as ':'.
lmod_manpath() { if [ "$tool" = lmod ] && [[ $1 == *:: ]]; then echo "${1%::}:"; else echo "$1"; fi; }
dump() {
    local var value
    for var in $(compgen -e | LC_ALL=C sort); do
        case $var in
        _LMFILES_ | LOADEDMODULES | __LMOD_REF_COUNT_* | _ModuleTable*_ | __MODULES_* | MODULES_LMALTNAME) continue ;;
        esac
        value=${!var}
        [ "$var" != MANPATH ] || value=$(lmod_manpath "$value")
        printf '%s=%q\n' "$var" "$value"
    done
}
# Programs of a login session: stdout with the exit status, stderr apart.
login_programs() {
    local out=$work/$name.login-$1
    run() { local program=$1; shift; "$@" > "$out.$program" 2> "$out.$program.err" || echo "exit $?" >> "$out.$program"; }
    run bash bash -lc 'echo ok'
    run ls ls "$work/lsdir"
    run python /usr/bin/python3 -c "print(1)"
    run man man -w ls
}
job() { mpiexec.mpich -n 2 /usr/bin/python3 "$work/app/app.py"; }
maps() { /usr/bin/python3 -c 'import sys; sys.stdout.write(open("/proc/self/maps").read())'; }

declare -A before
watched=(LD_PRELOAD LD_AUDIT PATH MANPATH PKG_CONFIG_PATH CMAKE_PREFIX_PATH PYIMPORT_ROOT)
for var in "${watched[@]}"; do
    [ -z "${!var+x}" ] || before[$var]=${!var}
done
dump > "$work/$name.env-before"
login_programs before
job > "$work/$name.job-plain" 2> "$work/$name.job-plain.err" || fail "the job failed without the module"
[ ! -s "$work/$name.job-plain.err" ] || { cat "$work/$name.job-plain.err"; fail "the job without the module wrote to stderr"; }
[ "$(wc -l < "$work/$name.job-plain")" -eq 2 ] || fail "the job printed $(wc -l < "$work/$name.job-plain") lines, not 2"
maps > "$work/$name.maps-before"
grep -q 'libpyimport\.so' "$work/$name.maps-before" && fail "libpyimport.so mapped before the module is loaded"

module load pyimport 2> "$work/$name.load.err" || { cat "$work/$name.load.err"; fail "module load pyimport failed"; }
[ ! -s "$work/$name.load.err" ] || { cat "$work/$name.load.err"; fail "module load pyimport wrote to stderr"; }

# a. The installed paths, before what was there.
expect() {
    local var=$1 want=$2
    [ -n "${!var+x}" ] || fail "$var is not set after module load (want '$want')"
    [ "${!var}" = "$want" ] || fail "$var is '${!var}' after module load, not '$want'"
}
prepended() { echo "$1${before[$2]+:${before[$2]}}"; }
expect LD_PRELOAD "$(prepended "$root/$libdir/libpyimport.so" LD_PRELOAD)"
if [ -f "$root/$libdir/libpyimport-audit.so" ]; then
    expect LD_AUDIT "$(prepended "$root/$libdir/libpyimport-audit.so" LD_AUDIT)"
elif [ "${LD_AUDIT-unset}" != "${before[LD_AUDIT]-unset}" ]; then
    fail "LD_AUDIT is '${LD_AUDIT-}' with no audit library installed, was '${before[LD_AUDIT]-}'"
fi
expect PATH "$(prepended "$root/$bindir" PATH)"
# MANPATH: unset, it gets an empty entry too (the system's man pages, man -w
# below).
if [ -n "${before[MANPATH]-}" ]; then want=$root/$mandir:${before[MANPATH]}; else want=$root/$mandir:; fi
[ "$(lmod_manpath "${MANPATH-}")" = "$(lmod_manpath "$want")" ] ||
    fail "MANPATH is '${MANPATH-}' after module load, not '$want'"
expect PKG_CONFIG_PATH "$(prepended "$root/$libdir/pkgconfig" PKG_CONFIG_PATH)"
expect CMAKE_PREFIX_PATH "$(prepended "$root" CMAKE_PREFIX_PATH)"
expect PYIMPORT_ROOT "$root"
# Nothing else set, changed or unset: no PYIMPORT_* option, no other variable.
changed=$(dump | LC_ALL=C comm -3 "$work/$name.env-before" - | sed 's/^\t//; s/=.*//' | LC_ALL=C sort -u | tr '\n' ' ')
allowed=" ${watched[*]} "
for var in $changed; do
    [[ $allowed == *" $var "* ]] || fail "module load also changed $var (now '${!var-}', unset if empty)"
done
[ "$(command -v pyimport-options)" = "$root/$bindir/pyimport-options" ] ||
    fail "pyimport-options found at '$(command -v pyimport-options || true)'"
# The command and its man page, where the build installs them.
if [ -f "$root/$bindir/pyimport" ]; then
    [ "$(command -v pyimport)" = "$root/$bindir/pyimport" ] || fail "pyimport found at '$(command -v pyimport || true)'"
fi
if [ -f "$root/$mandir/man1/pyimport.1" ]; then
    [ "$(man -w pyimport 2>&1)" = "$root/$mandir/man1/pyimport.1" ] || fail "man -w pyimport: $(man -w pyimport 2>&1)"
fi
[ "$(pkg-config --path pyimport)" = "$root/$libdir/pkgconfig/pyimport.pc" ] ||
    fail "pkg-config finds '$(pkg-config --path pyimport || true)'"
maps > "$work/$name.maps-loaded"
grep -qF "$root/$libdir/libpyimport.so" "$work/$name.maps-loaded" ||
    fail "libpyimport.so is not mapped in a process started with the module loaded"
if [ -n "${before[LD_PRELOAD]-}" ]; then
    for other in ${before[LD_PRELOAD]//:/ }; do
        grep -qF "$other" "$work/$name.maps-loaded" || fail "the preloaded $other is no longer mapped"
    done
fi
module help pyimport > "$work/$name.help" 2>&1 || fail "module help pyimport failed"
grep -q "pyimport .*: fast Python start-up for MPI jobs" "$work/$name.help" &&
    grep -qF "Root: $root" "$work/$name.help" || { cat "$work/$name.help"; fail "module help pyimport"; }
module whatis pyimport > "$work/$name.whatis" 2>&1 || fail "module whatis pyimport failed"
grep -q "Description: fast Python start-up under MPI" "$work/$name.whatis" || { cat "$work/$name.whatis"; fail "module whatis"; }

# b. The unchanged job is served: rank 0 built one snapshot and broadcast it
# once (one copy per node, shared by both ranks), and prints what it printed
# without the module.
PYIMPORT_SERVE_LOCAL=1 PYIMPORT_LOG=1 job > "$work/$name.job-served" 2> "$work/$name.job-served.err" ||
    { cat "$work/$name.job-served.err"; fail "the job failed with the module loaded"; }
built=$(grep -c '^pyimport\[[0-9]* r0 [^]]*\]: built the snapshot' "$work/$name.job-served.err" || true)
sent=$(grep -cE '^pyimport\[[0-9]* r0 [^]]*\]: broadcast [0-9]+ bytes in [0-9.]+ s \(one copy per node\)' \
    "$work/$name.job-served.err" || true)
[ "$built" -eq 1 ] && [ "$sent" -eq 1 ] && [ "$(grep -c 'built the snapshot' "$work/$name.job-served.err")" -eq 1 ] ||
    { cat "$work/$name.job-served.err"; fail "rank 0 built $built and broadcast $sent snapshots, not 1 and 1"; }
cmp -s <(LC_ALL=C sort "$work/$name.job-plain") <(LC_ALL=C sort "$work/$name.job-served") ||
    { diff "$work/$name.job-plain" "$work/$name.job-served" || true; fail "the job's output differs with the module loaded"; }

# c. Programs of a login session print the same, nothing on stderr.
login_programs loaded
for program in bash ls python man; do
    cmp -s "$work/$name.login-before.$program" "$work/$name.login-loaded.$program" ||
        fail "$program printed '$(cat "$work/$name.login-loaded.$program")' with the module loaded, '$(cat "$work/$name.login-before.$program")' without"
    [ -s "$work/$name.login-before.$program" ] && ! grep -q '^exit ' "$work/$name.login-before.$program" ||
        fail "$program printed '$(cat "$work/$name.login-before.$program")' without the module"
    [ ! -s "$work/$name.login-loaded.$program.err" ] ||
        fail "$program wrote to stderr with the module loaded: $(cat "$work/$name.login-loaded.$program.err")"
done

# d. Unload: every variable as before load.
module unload pyimport 2> "$work/$name.unload.err" || { cat "$work/$name.unload.err"; fail "module unload pyimport failed"; }
[ ! -s "$work/$name.unload.err" ] || { cat "$work/$name.unload.err"; fail "module unload pyimport wrote to stderr"; }
dump > "$work/$name.env-after"
diff "$work/$name.env-before" "$work/$name.env-after" >&2 || fail "module unload pyimport left the environment changed (< before, > after)"
echo "check_modules ($tool, $name): ok"
