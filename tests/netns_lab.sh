# shellcheck shell=bash disable=SC2034 # variables and functions for the sourcing scripts
# Plumbing shared by the network-namespace labs (tests/e2e/lab.sh, benches/storm/run.sh):
# packages installed without starting services, processes started inside namespaces and stopped
# on exit, and every namespace of the lab removed.
#
# The sourcing script sets LAB_PREFIX (every namespace whose name starts with it belongs to the
# lab), LAB_KEEP (1: keep $WORK after a successful run) and WORK (its work directory, once
# made), and installs `trap cleanup EXIT`.

PIDS=() # everything spawned, stopped newest first on exit
WORK=""

# install_packages PKG...: installs what is missing, without starting any service.
install_packages() {
    local need=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
    done
    [ ${#need[@]} -eq 0 ] && return
    # Packaged servers must not start a system service on the host.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    echo "installing ${need[*]}"
    "$(dirname "${BASH_SOURCE[0]}")/../.ci/apt-update"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# spawn NS LOG CMD...: runs CMD in namespace NS in the background with its output appended to
# LOG; stopped on exit. The PID is in LAST_PID (ip netns exec and env exec, so for a server it
# is the server's).
spawn() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >>"$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop_pid PID [SIGNAL]: stops a spawned process (SIGTERM by default; SIGKILL if it is still
# there 2 s later), reaps it and drops it from PIDS, so that cleanup never signals a number the
# system may have given to another.
stop_pid() {
    local pid=$1 i
    if kill "-${2:-TERM}" "$pid" 2>/dev/null; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for i in "${!PIDS[@]}"; do [ "${PIDS[i]}" != "$pid" ] || unset 'PIDS[i]'; done
    PIDS=("${PIDS[@]}")
}

# Removes every namespace of the lab, with whatever still runs inside (a killed run's too),
# and so the bridges, taps and veths in them.
remove_namespaces() {
    local ns pids=()
    for ns in $(ip netns list | awk -v p="$LAB_PREFIX" 'index($1, p) == 1 { print $1 }'); do
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        [ ${#pids[@]} -eq 0 ] || kill -9 "${pids[@]}" 2>/dev/null || true
        ip netns delete "$ns" 2>/dev/null || true
    done
}

# The EXIT trap: stops what was spawned (newest first, so a capture started first sees the rest
# end), removes the namespaces, and removes WORK unless the run failed or LAB_KEEP=1.
cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    remove_namespaces
    if [ -n "$WORK" ]; then
        if [ "$rc" -ne 0 ] || [ "${LAB_KEEP:-0}" = 1 ]; then
            echo "logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
