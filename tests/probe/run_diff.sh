#!/usr/bin/env bash
# run_diff.sh LIBPYIMPORT PROBE MPIEXEC WORKDIR
#
# Differential test of libpyimport: the probe's report with the shim preloaded
# under mpiexec must be byte-identical, on every rank, to its report from a
# plain run (no preload, no mpiexec) on the same fixture.
#
# Scenarios (each prints PASS or FAIL; the script exits 1 if any failed):
#   fortify-symbols   the probe really calls __open_2 & co.
#   reference-stable  two plain runs agree (the fixture is not drifting)
#   root-n2           mpiexec -n 2, default PYIMPORT_CONTENT (.py/.pyc bytes)
#   root-n4           mpiexec -n 4, PYIMPORT_CONTENT covering every fixture file,
#                     so all bytes come from the snapshot
#   nobody-n2         as user nobody (EACCES for real) on a fixture under /tmp
# Every shim run sets PYIMPORT_STATS=1 and must print a "pyimport: ... served"
# summary showing that most stat calls were answered from the snapshot: a diff
# against an inactive (or all-forwarding) shim would pass without testing.
set -uo pipefail

if [[ $# -ne 4 ]]; then
  echo "usage: $0 LIBPYIMPORT PROBE MPIEXEC WORKDIR" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib=$(realpath "$1")
probe=$(realpath "$2")
mpiexec=$3
mkdir -p "$4"
work=$(realpath "$4")

# Only the variables set below may reach the probe and the shim.
unset LD_PRELOAD
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^PYIMPORT_' || true)

# Every file name ending in the fixture, so PYIMPORT_CONTENT can cache them all.
all_content=".py,.pyc,.txt,.bin,.sh,.hidden,empty,one,0,1,2,3,4,5,6,7,8,9"

run_timeout=120
failures=0
passes=0

pass() { echo "PASS $1"; passes=$((passes + 1)); }
fail() { echo "FAIL $1: $2"; failures=$((failures + 1)); }

# differing_sections REF REPORT: the "--- name [context] ---" headers of the
# report sections that contain a difference, so a failure names the paths.
differing_sections() {
  diff -U 1000000 "$1" "$2" | awk '
    NR <= 2 { next }
    /^ (---|===) / { section = substr($0, 2); next }
    /^[-+]/ && !(section in seen) { seen[section] = 1; print "    " section; if (++n == 15) exit }'
}

# differing_calls REF REPORT: which calls differ, paths folded to "P", with
# counts: "statx(AT_FDCWD, P, 0, STATX_TYPE|STATX_SIZE)" beats 200 sections.
differing_calls() {
  diff "$1" "$2" | sed -n 's/^< //p' |
    sed -E '/^(=== .*)?$/d; s/"([^"\\]|\\.)*"/P/g; s/ = .*//; s/^ +//' |
    sort | uniq -c | sort -rn | head -n 12 | sed 's/^/    /'
}

# compare NAME REFERENCE REPORT...: every report byte-identical to REFERENCE.
# Each differing report gets a line count; the one closest to the reference
# (after a crash: the rank that got furthest) also gets its differing
# sections and the head of its diff.
compare() {
  local name=$1 ref=$2 ok=1 best="" best_lines=0 lines
  shift 2
  for report in "$@"; do
    if [[ ! -s $report ]]; then
      fail "$name" "no report $report"
      ok=0
    elif ! cmp -s "$ref" "$report"; then
      lines=$(diff "$ref" "$report" | grep -c '^[<>]')
      fail "$name" "$(basename "$report") differs from $(basename "$ref") in $lines lines"
      ok=0
      if [[ -z $best || $lines -lt $best_lines ]]; then
        best=$report
        best_lines=$lines
      fi
    fi
  done
  if [[ -n $best ]]; then
    echo "  calls whose reference lines differ in $(basename "$best") (count, call):"
    differing_calls "$ref" "$best"
    echo "  sections of $(basename "$best") that differ:"
    differing_sections "$ref" "$best"
    echo "  first 40 lines of diff -u:"
    diff -u "$ref" "$best" | head -n 40
  fi
  return $((1 - ok))
}

# check_active NAME STDERR: the shim printed its summary, and answered most
# stat calls from the snapshot.  A shim that forwards (nearly) everything to
# libc -- inactive, or having wrongly dropped its snapshot -- would make every
# comparison pass without testing anything.
min_stat_served_percent=50
check_active() {
  local name=$1 err=$2 line
  line=$(grep -E '^pyimport:.*served' "$err" | head -n 1)
  if [[ -z $line ]]; then
    fail "$name" "no 'pyimport: ... served' line on stderr: the shim was not active. stderr:"
    head -n 20 "$err"
    return 1
  fi
  echo "  $line"
  if [[ $line =~ ([0-9]+)\ calls\ served && ${BASH_REMATCH[1]} -eq 0 ]]; then
    fail "$name" "the shim served no calls"
    return 1
  fi
  if [[ $line =~ \ stat\ ([0-9]+)/([0-9]+) ]]; then
    local served=${BASH_REMATCH[1]} forwarded=${BASH_REMATCH[2]}
    local percent=$((100 * served / (served + forwarded + 1)))
    if [[ $percent -lt $min_stat_served_percent ]]; then
      fail "$name" "the shim answered only $percent% of stat calls ($served served, $forwarded forwarded; at least $min_stat_served_percent% expected): the comparison mostly tested libc against itself"
      grep -E '^pyimport:' "$err" | sed -n '2,14p'
      return 1
    fi
  else
    echo "  (note: no 'stat S/F' counts in the summary; coverage not checked)"
  fi
  return 0
}

# run_shim NAME RANKS FIXTURE OUTDIR LIB PROBE [RUNAS...] [-- VAR VALUE...]
# Runs PROBE under mpiexec with LIB preloaded in the ranks (RUNAS, e.g. a
# setpriv command, goes in front of mpiexec; VAR VALUE pairs are extra rank
# environment), then checks the shim's activity and compares every report.
run_shim() {
  local name=$1 ranks=$2 fixture=$3 outdir=$4 lib_path=$5 probe_path=$6
  shift 6
  local -a runas=() genv=()
  while [[ $# -gt 0 && $1 != -- ]]; do runas+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  while [[ $# -gt 1 ]]; do genv+=(-genv "$1" "$2"); shift 2; done

  # -genv, not the environment: only the ranks get the preload, not mpiexec
  # and hydra's proxies.
  local rc=0
  timeout -k 10 "$run_timeout" "${runas[@]}" "$mpiexec" -n "$ranks" \
    -genv LD_PRELOAD "$lib_path" \
    -genv PYIMPORT_PREFIX "$fixture" \
    -genv PYIMPORT_ANY_PROGRAM 1 \
    -genv PYIMPORT_STATS 1 \
    -genv PYIMPORT_SERVE_LOCAL 1 \
    "${genv[@]}" \
    "$probe_path" "$fixture" "$outdir/$name.%r.txt" \
    > "$outdir/$name.stdout" 2> "$outdir/$name.stderr" || rc=$?
  local ok=1
  if [[ $rc -ne 0 ]]; then
    fail "$name" "mpiexec exited with $rc (124 = timeout). stderr:"
    head -n 20 "$outdir/$name.stderr"
    ok=0  # still compare: a truncated report shows where it stopped
  fi
  # A crashed run printed no summary; saying "inactive" would mislead.
  [[ $rc -eq 0 ]] && { check_active "$name" "$outdir/$name.stderr" || ok=0; }
  local -a reports=()
  for ((r = 0; r < ranks; r++)); do reports+=("$outdir/$name.$r.txt"); done
  compare "$name" "$outdir/reference.txt" "${reports[@]}" || ok=0
  [[ $ok -eq 1 ]] && pass "$name ($ranks ranks identical to the reference)"
}

# --- fortify-symbols ----------------------------------------------------------
missing=()
undefined=$(nm -u "$probe")
for sym in __open_2 __open64_2 __openat_2 __openat64_2; do
  grep -qE "^ +U ${sym}(@|$)" <<< "$undefined" || missing+=("$sym")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  pass "fortify-symbols (probe references __open_2 __open64_2 __openat_2 __openat64_2)"
else
  fail "fortify-symbols" "probe does not reference: ${missing[*]}"
fi

# --- root scenarios -------------------------------------------------------------
fixture=$work/fixture
out=$work/out
rm -rf "$out"
mkdir -p "$out"
if ! bash "$here/make_fixture.sh" "$fixture"; then
  fail "fixture" "make_fixture.sh $fixture failed"
  exit 1
fi

if ! timeout "$run_timeout" "$probe" "$fixture" "$out/reference.txt"; then
  fail "reference" "plain probe run failed"
  exit 1
fi
if ! timeout "$run_timeout" "$probe" "$fixture" "$out/reference-again.txt"; then
  fail "reference-stable" "second plain probe run failed"
elif compare "reference-stable" "$out/reference.txt" "$out/reference-again.txt"; then
  pass "reference-stable (two plain runs agree)"
fi

run_shim root-n2 2 "$fixture" "$out" "$lib" "$probe"
run_shim root-n4 4 "$fixture" "$out" "$lib" "$probe" -- PYIMPORT_CONTENT "$all_content"

# --- unprivileged ---------------------------------------------------------------
# Everything nobody touches lives in a fresh 0755 directory under /tmp: the
# build tree's parents may not be searchable by others.  Permission-denied
# paths (mode 000 file and directory) then fail with EACCES for real.
if [[ $EUID -ne 0 ]]; then
  echo "SKIP nobody-n2: needs root to switch to user nobody"
  echo "$passes passed, $failures failed (reports in $out)"
  [[ $failures -eq 0 ]]
  exit
fi
tmp=$(mktemp -d /tmp/pyimport-probe.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
cp "$probe" "$tmp/probe"
cp "$lib" "$tmp/libpyimport.so"
chmod 0755 "$tmp/probe" "$tmp/libpyimport.so"
mkdir "$tmp/out"
chmod 1777 "$tmp/out"
as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups)

if ! bash "$here/make_fixture.sh" "$tmp/fixture"; then
  fail "nobody" "make_fixture.sh $tmp/fixture failed"
elif ! timeout "$run_timeout" "${as_nobody[@]}" "$tmp/probe" "$tmp/fixture" "$tmp/out/reference.txt"; then
  fail "nobody" "plain probe run as nobody failed"
elif ! grep -q 'EACCES' "$tmp/out/reference.txt"; then
  fail "nobody" "the reference run as nobody saw no EACCES; not really unprivileged?"
else
  run_shim nobody-n2 2 "$tmp/fixture" "$tmp/out" "$tmp/libpyimport.so" "$tmp/probe" \
    "${as_nobody[@]}" -- PYIMPORT_CONTENT "$all_content"
fi
# Keep the unprivileged reports for inspection; $tmp goes away on exit.
mkdir -p "$out/nobody"
cp "$tmp"/out/* "$out/nobody/" 2>/dev/null

echo "$passes passed, $failures failed (reports in $out)"
[[ $failures -eq 0 ]]
