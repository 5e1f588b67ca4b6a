# Shared by tests/cluster/{slurm,hosts}: a state directory per resource under
# /run/pyimport-cluster/, a lock, and the *holders* of the resource.
#
# A holder is a live process (by default the caller's parent: the shell or
# the test driver that ran `up`) that uses the resource. `up` registers one,
# `down` removes it; what `up` started (daemons, an /etc/hosts line, a
# configuration file) is undone only by the `down` that leaves no live
# holder behind, so concurrent test runs on one machine share one cluster
# and none stops it under another. What was running before any `up` (not
# started by these scripts) is never stopped. Holders whose process is gone
# (a test killed by ctest's timeout) are dropped at the next `up` or `down`.

STATE_ROOT=${PYIMPORT_CLUSTER_STATE:-/run/pyimport-cluster}

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }

# The start time of a process (field 22 of /proc/PID/stat): with the pid,
# it names the process even after its pid is reused.
proc_start() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }            # the fields after the command name
    set -- $stat
    echo "${20}"
}

# state_init NAME: $STATE is the resource's directory; the lock is taken on
# descriptor 9 for the rest of the script.
state_init() {
    STATE=$STATE_ROOT/$1
    mkdir -p "$STATE/holders" || die "cannot create $STATE"
    exec 9>"$STATE/lock"
    flock -w 120 9 || die "cannot lock $STATE/lock"
}

prune_holders() {
    local f pid
    for f in "$STATE"/holders/*; do
        [ -e "$f" ] || continue
        pid=${f##*/}
        if [ "$(proc_start "$pid")" != "$(cat "$f")" ]; then rm -f "$f"; fi
    done
}

add_holder() {
    local start
    start=$(proc_start "$1") || die "holder $1 is not a running process"
    echo "$start" >"$STATE/holders/$1"
}

remove_holder() { rm -f "$STATE/holders/$1"; }

holders_left() { ls "$STATE/holders" 2>/dev/null | tr '\n' ' '; }

# record_started KIND PID: a process these scripts started (and will stop).
record_started() {
    echo "$1 $2 $(proc_start "$2")" >>"$STATE/started"
}

# Whether PID is still the process recorded with start time START.
same_process() { [ -n "$1" ] && [ "$(proc_start "$1")" = "$2" ]; }

# stop_recorded: TERM each process in $STATE/started that is still the one
# started, wait up to 15 s, then KILL what is left.
stop_recorded() {
    [ -f "$STATE/started" ] || return 0
    local kind pid start alive i
    while read -r kind pid start; do
        if same_process "$pid" "$start"; then
            say "stopping $kind (pid $pid)"
            kill -TERM "$pid" 2>/dev/null
        fi
    done <"$STATE/started"
    for i in $(seq 1 150); do
        alive=0
        while read -r kind pid start; do
            same_process "$pid" "$start" && alive=1
        done <"$STATE/started"
        [ $alive = 0 ] && break
        sleep 0.1
    done
    while read -r kind pid start; do
        if same_process "$pid" "$start"; then
            say "$kind (pid $pid) did not stop: KILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    done <"$STATE/started"
    rm -f "$STATE/started"
}

# parse_holder_args "$@": sets HOLDER (default: the caller's parent) and
# FORCE; leaves the other arguments in ARGS.
parse_holder_args() {
    HOLDER=$PPID
    FORCE=0
    ARGS=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --holder) HOLDER=$2; shift 2 ;;
            --holder=*) HOLDER=${1#*=}; shift ;;
            --force) FORCE=1; shift ;;
            *) ARGS+=("$1"); shift ;;
        esac
    done
}
