#!/usr/bin/env bash
# Boot files over HTTP: one 256 MiB image to 1 and to 50 clients at once, over loopback and
# over a shaped veth link, from bootherd's HTTP (an alternate with http_listen), from nginx
# (Debian's package, sendfile on, one worker) and from bootherd's TFTP, side by side in one
# run. curl is the HTTP client; TFTP is fetched with `bootherd fetch` (windowsize 64: curl's
# TFTP has no windowsize and would measure lock-step). Prints aggregate MB/s per cell, each
# server's peak RSS, and PASS/MISS for "bootherd HTTP within 10 % of nginx". See
# docs/benchmarks.md, "HTTP".
#
#   sudo benches/http_peers.sh                 # the whole grid (about 6 min here)
#   BH_HTTP_MIB=64 sudo -E benches/http_peers.sh   # a smaller image
#
# Environment: BH_HTTP_MIB (256), BH_HTTP_CLIENTS (50), BH_HTTP_RATE (shaped link, 2gbit),
# BH_HTTP_REPS (repetitions per cell, median kept: 3 for one client, 1 for many),
# BH_HTTP_NO_BUILD=1 (use target/release/bootherd as it is), BH_HTTP_KEEP=1 (keep logs).
#
# Everything runs on 127.0.0.1 or in two network namespaces this script makes (bh-hbench-srv
# 10.79.0.1 and bh-hbench-cli 10.79.0.2 on one veth, the server's egress shaped with tc tbf)
# and removes on exit. Servers run on CPU 1, clients on CPU 0.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=tests/netns_lab.sh
. "$REPO/tests/netns_lab.sh"
LAB_PREFIX=bh-hbench-
LAB_KEEP=${BH_HTTP_KEEP:-0}
BOOTHERD=$REPO/target/release/bootherd
MIB=${BH_HTTP_MIB:-256}
CLIENTS=${BH_HTTP_CLIENTS:-50}
RATE=${BH_HTTP_RATE:-2gbit}
NS_SRV=bh-hbench-srv NS_CLI=bh-hbench-cli
SRV_IP=10.79.0.1 CLI_IP=10.79.0.2
HTTP_PORT=8080 NGINX_PORT=8081 TFTP_PORT=6969
SERVERS=(bootherd-http nginx bootherd-tftp)
RESULTS=()

say() { printf '%s\n' "$*"; }
die() { say "bh-http-bench: $*" >&2; exit 1; }

# in NS CMD...: CMD in namespace NS, or on the host for "host".
in_ns() {
    local ns=$1
    shift
    if [ "$ns" = host ]; then "$@"; else ip netns exec "$ns" "$@"; fi
}

lab_up() {
    ip netns add "$NS_SRV"
    ip netns add "$NS_CLI"
    ip -n "$NS_SRV" link set lo up
    ip -n "$NS_CLI" link set lo up
    ip link add bh-hb0 netns "$NS_SRV" type veth peer name bh-hb1 netns "$NS_CLI"
    ip -n "$NS_SRV" addr add "$SRV_IP/24" dev bh-hb0
    ip -n "$NS_CLI" addr add "$CLI_IP/24" dev bh-hb1
    ip -n "$NS_SRV" link set bh-hb0 up
    ip -n "$NS_CLI" link set bh-hb1 up
    tc -n "$NS_SRV" qdisc replace dev bh-hb0 root tbf rate "$RATE" burst 1mb limit 8mb
}

# run_in NS LOG CMD...: like spawn, on the host for "host".
run_in() {
    if [ "$1" != host ]; then
        spawn "$@"
        return
    fi
    local log=$2
    shift 2
    "$@" >>"$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# start SERVER NS IP: starts a fresh server (so that its peak RSS is this cell's); PIDs of
# every process it runs in SERVER_PIDS.
start() {
    local server=$1 ns=$2 ip=$3 dir=$WORK/$1-$RANDOM
    mkdir -p "$dir"
    case $server in
    bootherd-http | bootherd-tftp)
        cat >"$dir/alternate.toml" <<EOF
key_file = "$WORK/report.key"
[alternate]
id = "bench"
tftp_listen = "$ip:$TFTP_PORT"
root = "$WORK/root"
centrals = ["127.0.0.1:9"]
http_listen = "$ip:$HTTP_PORT"
[tftp]
max_windowsize = 64
[http]
max_connections = 512
EOF
        run_in "$ns" "$dir/log" env BOOTHERD_LOG=warn taskset -c 1 "$BOOTHERD" alternate --config "$dir/alternate.toml"
        SERVER_PIDS=("$LAST_PID")
        ;;
    nginx)
        mkdir -p "$dir/tmp"
        cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_cpu_affinity 10;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 15;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    server { listen $ip:$NGINX_PORT; root $WORK/root; }
}
EOF
        run_in "$ns" "$dir/log" taskset -c 1 nginx -c "$dir/nginx.conf"
        SERVER_PIDS=("$LAST_PID")
        ;;
    esac
    local port=$HTTP_PORT
    [ "$server" = nginx ] && port=$NGINX_PORT
    local deadline=$((SECONDS + 10))
    until in_ns "$ns" curl -sf -o /dev/null -r 0-0 "http://$ip:$port/image.bin"; do
        [ $SECONDS -lt $deadline ] || die "$server did not start (see $dir/log)"
        sleep 0.1
    done
    # nginx's worker is the master's child.
    [ "$server" != nginx ] || SERVER_PIDS+=($(pgrep -P "${SERVER_PIDS[0]}" || true))
}

# Peak RSS (VmHWM) in KiB summed over SERVER_PIDS.
peak_rss() {
    local pid total=0 v
    for pid in "${SERVER_PIDS[@]}"; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + v))
    done
    echo "$total"
}

stop() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
}

# fetch SERVER NS IP N: N clients at once; prints "SECONDS FAILED".
fetch() {
    local server=$1 ns=$2 ip=$3 n=$4 i pids=() failed=0 start end
    local want=$((MIB << 20))
    start=$EPOCHREALTIME
    for ((i = 0; i < n; i++)); do
        case $server in
        bootherd-http) in_ns "$ns" taskset -c 0 curl -s -o /dev/null -w '%{size_download}\n' "http://$ip:$HTTP_PORT/image.bin" >"$WORK/out.$i" & ;;
        nginx) in_ns "$ns" taskset -c 0 curl -s -o /dev/null -w '%{size_download}\n' "http://$ip:$NGINX_PORT/image.bin" >"$WORK/out.$i" & ;;
        bootherd-tftp)
            { in_ns "$ns" taskset -c 0 "$BOOTHERD" fetch -q --windowsize 64 -o /dev/null "tftp://$ip:$TFTP_PORT/image.bin" && echo "$want"; } >"$WORK/out.$i" 2>/dev/null &
            ;;
        esac
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[i]}" || true
        [ "$(cat "$WORK/out.$i" 2>/dev/null)" = "$want" ] || failed=$((failed + 1))
    done
    end=$EPOCHREALTIME
    awk -v a="$start" -v b="$end" -v f="$failed" 'BEGIN { printf "%.3f %d\n", b - a, f }'
}

# rss200: 200 simulated clients (`bootherd client --http`, SHA-256 checked) boot a 16 MiB
# kernel at once from one bootherd alternate over HTTP on loopback; its peak RSS.
rss200() {
    local out=$WORK/rss200.json rss
    start bootherd-http host 127.0.0.1
    taskset -c 0 "$BOOTHERD" client --alternates "alt=127.0.0.1:$TFTP_PORT" --http \
        --http-port "$HTTP_PORT" --clients 200 --json >"$out" 2>"$out.log" || true
    rss=$(peak_rss)
    stop
    jq -r --arg rss "$rss" '.summary | "200 HTTP clients x 16 MiB from one alternate: \(.clients - .failed) booted, \(.failed) failed, makespan \(.makespan_s) s; alternate peak RSS (VmHWM) \($rss) KiB (floor < 16384): \(if ($rss | tonumber) < 16384 and .failed == 0 then "PASS" else "MISS" end)"' "$out"
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# cell LINK N: every server, fresh, N clients; REPS runs each, interleaved; one result line per
# server in RESULTS: "LINK N SERVER MB/s RSS_KiB FAILED".
cell() {
    local link=$1 n=$2 ns ip rep server reps secs failed out rss
    local -A times rsses fails
    if [ "$link" = loopback ]; then ns=host ip=127.0.0.1; else ns=$NS_CLI ip=$SRV_IP; fi
    reps=${BH_HTTP_REPS:-$([ "$n" = 1 ] && echo 3 || echo 1)}
    for ((rep = 1; rep <= reps; rep++)); do
        for server in "${SERVERS[@]}"; do
            if [ "$link" = loopback ]; then start "$server" host 127.0.0.1; else start "$server" "$NS_SRV" "$SRV_IP"; fi
            read -r secs failed < <(fetch "$server" "$ns" "$ip" "$n")
            rss=$(peak_rss)
            stop
            times[$server]+="$secs "
            rsses[$server]+="$rss "
            fails[$server]=$((${fails[$server]:-0} + failed))
        done
    done
    for server in "${SERVERS[@]}"; do
        secs=$(median "${times[$server]}")
        out=$(awk -v s="$secs" -v n="$n" -v mib="$MIB" 'BEGIN { printf "%.1f", n * mib * 1048576 / s / 1e6 }')
        RESULTS+=("$link $n $server $out $(median "${rsses[$server]}") ${fails[$server]}")
        printf '%-9s %3d  %-14s %9s MB/s  %6s KiB  failed %d  (runs: %s s)\n' "$link" "$n" "$server" \
            "$out" "$(median "${rsses[$server]}")" "${fails[$server]}" "$(xargs <<<"${times[$server]}")"
    done
}

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (namespaces, tc)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_packages nginx curl iproute2 util-linux procps jq
    if [ "${BH_HTTP_NO_BUILD:-0}" != 1 ]; then
        (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    fi
    remove_namespaces
    WORK=$(mktemp -d /tmp/bh-hbench.XXXXXX)
    chmod 755 "$WORK" # nginx's worker runs as nobody
    "$BOOTHERD" report keygen >"$WORK/report.key"
    mkdir -p "$WORK/root/configs"
    head -c "$((MIB << 20))" /dev/urandom >"$WORK/root/image.bin"
    cat "$WORK/root/image.bin" >/dev/null # in the page cache before the first cell
    head -c 16M /dev/urandom >"$WORK/root/k16.bin"
    printf 'kernel k16.bin sha256=%s\n' "$(sha256sum "$WORK/root/k16.bin" | cut -d' ' -f1)" \
        >"$WORK/root/configs/default"
    lab_up
    local started=$SECONDS
    say "bootherd HTTP bench: $MIB MiB image, 1 and $CLIENTS clients, loopback and a veth shaped to $RATE;"
    say "  $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); servers on CPU 1, clients on CPU 0"
    say "  $(nginx -v 2>&1), $(curl --version | head -n 1 | cut -d' ' -f1-2)"
    say "link        n  server               MB/s    peak RSS"
    cell loopback 1
    cell loopback "$CLIENTS"
    cell shaped 1
    cell shaped "$CLIENTS"
    say ""
    local line link n server mbs rss failed verdicts=0
    local -A by
    for line in "${RESULTS[@]}"; do
        read -r link n server mbs rss failed <<<"$line"
        by[$link/$n/$server]=$mbs
        by[$link/$n/$server/rss]=$rss
        by[$link/$n/$server/failed]=$failed
    done
    for link in loopback shaped; do
        for n in 1 "$CLIENTS"; do
            awk -v b="${by[$link/$n/bootherd-http]}" -v x="${by[$link/$n/nginx]}" \
                -v br="${by[$link/$n/bootherd-http/rss]}" -v xr="${by[$link/$n/nginx/rss]}" \
                -v f="${by[$link/$n/bootherd-http/failed]}" -v l="$link" -v n="$n" 'BEGIN {
                ok = b >= 0.9 * x && f == 0
                printf "%s %s, %d clients: bootherd HTTP %.1f MB/s vs nginx %.1f MB/s = %.2fx (floor 0.90x); peak RSS %d vs %d KiB; %d failed\n",
                    ok ? "PASS" : "MISS", l, n, b, x, b / x, br, xr, f }'
        done
    done
    rss200
    say "total bench time: $((SECONDS - started)) s"
}

main "$@"
