#!/usr/bin/env bash
# The storm lab: boot storms through a central and alternates whose links to the clients are
# shaped (tc tbf, finite queue) and, where a scenario asks, delayed and lossy (a user-space
# relay, since the kernel may have no netem). Each scenario runs bootherd's load ordering, the
# round-robin baseline and the best static split, one after the other on the same links, and
# prints one table row per policy. See docs/benchmarks.md, "The storm lab".
#
#   sudo benches/storm/run.sh                    # every scenario but ci (15-20 min)
#   sudo benches/storm/run.sh cold warm          # some of them
#   sudo benches/storm/run.sh ci                 # the short one .ci/run uses: exit 1 on any failed boot
#
# Scenarios: cold warm spread60 slowdown spread200 storm1000 lossy http ci.
#
# A closed lab of network namespaces, removed on exit (also on Ctrl-C and failure), on the
# private 10.78.0.0/16 (the e2e lab uses 10.77.0.0/24):
#   bh-storm-central   the central at 10.78.0.1 on the control bridge bh-sbr (reports, lists,
#                      proxyDHCP)
#   bh-storm-altN      alternate N: 10.78.0.1N on the control bridge; its data link bh-dN
#                      (10.78.N.1) to the clients, shaped on its egress with
#                      `tc qdisc replace dev bh-dN root tbf rate R burst 32kb limit 1mb`
#   bh-storm-clients   `bootherd client`: 10.78.0.100 on the bridge, 10.78.N.2 on each data link
# Nothing is routed or forwarded: every address is on a link of its own.
#
# Environment:
#   BH_STORM_POLICIES   policies to run, of "load round-robin static" (all three)
#   BH_STORM_QUEUE      gso (default): that tbf as it is, which queues and drops a batch the
#                       sender segments (UDP_SEGMENT, up to 64 datagrams) as one packet;
#                       frames: tbf cuts such a batch into frames on the way in and queues
#                       and drops single frames, as a switch port does (about 3x the CPU)
#   BH_STORM_NO_BUILD   1: do not build (target/release/bootherd and the relay must exist)
#   BH_STORM_ALT_LOG    the alternates' log level (info; debug adds each transfer's datagrams
#                       sent, resent and loss events)
#   BH_STORM_KEEP       1: keep the work directory (logs, client JSON, results.tsv); it is
#                       always kept after a failure
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/netns_lab.sh
. "$REPO/tests/netns_lab.sh"
LAB_PREFIX=bh-storm-
LAB_KEEP=${BH_STORM_KEEP:-0}
BOOTHERD=$REPO/target/release/bootherd
RELAY=$HERE/relay/target/release/bh-storm-relay
LOCK=/run/lock/bh-storm.lock
NS_CENTRAL=bh-storm-central
NS_CLIENTS=bh-storm-clients
BRIDGE=bh-sbr
CENTRAL_IP=10.78.0.1
CLIENT_IP=10.78.0.100
BLKSIZE=1468
# Frame overhead of one DATA datagram on the wire: TFTP 4, UDP 8, IPv4 20, Ethernet 14.
FRAME_OVERHEAD=46
ALL_SCENARIOS=(cold warm spread60 slowdown spread200 storm1000 lossy http)
HTTP_PORT=80
POLICIES=(${BH_STORM_POLICIES:-load round-robin static})
QUEUE=${BH_STORM_QUEUE:-gso}
ALT_LOG=${BH_STORM_ALT_LOG:-info}

RELAY_PIDS=()   # the relays of the current lab
FAILED_BOOTS=0  # over the whole run (the ci scenario fails on any)

say() { printf '%s\n' "$*"; }
die() { say "bh-storm: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Scenarios

# scenario NAME: sets what the scenario is (globals read by the rest).
scenario() {
    TITLE="" CLIENTS=60 SPREAD_MS=0 KERNEL=$((8 << 20)) INITRD=$((1 << 20)) RATES=(200 100 50)
    WARM=0 SLOW_AT_S="" SLOW_RATE="" DELAY_MS=0 LOSS=0 RELAYED=0 PXE=0 HTTP=0
    case $1 in
    cold) TITLE="cold storm: 60 clients at once, fresh central and alternates" ;;
    warm) WARM=1 TITLE="warm storm: 60 at once right after a first 60 (same processes)" ;;
    spread60) SPREAD_MS=5000 TITLE="60 clients spread over 5 s" ;;
    slowdown)
        SPREAD_MS=10000 SLOW_AT_S=5 SLOW_RATE=50
        TITLE="60 clients over 10 s; alt1's link slowed to 50 Mbit/s 5 s in"
        ;;
    spread200) CLIENTS=200 SPREAD_MS=5000 TITLE="200 clients spread over 5 s" ;;
    storm1000)
        CLIENTS=1000 SPREAD_MS=5000 KERNEL=$((2 << 20)) INITRD=$((512 << 10)) RATES=(800 400 200)
        TITLE="1,000 clients spread over 5 s"
        ;;
    lossy)
        KERNEL=$((2 << 20)) INITRD=$((512 << 10)) RATES=(40 20 10) RELAYED=1 DELAY_MS=5 LOSS=0.5
        TITLE="60 clients at once; every client link 10 ms RTT and 0.5 % loss each way (relay)"
        ;;
    http)
        SPREAD_MS=5000 HTTP=1
        TITLE="60 clients spread over 5 s fetching over HTTP (alternates serve HTTP on port $HTTP_PORT too)"
        ;;
    ci)
        CLIENTS=30 KERNEL=$((1 << 20)) INITRD=$((256 << 10)) RATES=(40 20 10) PXE=1
        TITLE="CI: 30 clients at once (load ordering with the PXE steps)"
        ;;
    *) die "unknown scenario $1 (known: ${ALL_SCENARIOS[*]} ci)" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Host, build, cleanup

build() {
    if [ "${BH_STORM_NO_BUILD:-0}" != 1 ]; then
        (cd "$REPO" && cargo build --release --locked --quiet) || die "cargo build --release failed"
        (cd "$HERE/relay" && cargo build --release --locked --quiet) || die "building the relay failed"
    fi
    [ -x "$BOOTHERD" ] || die "$BOOTHERD is missing"
    [ -x "$RELAY" ] || die "$RELAY is missing"
}

# wait_for WHAT SECONDS PROBE...: until PROBE succeeds.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what not ready after $limit s (see $WORK)"
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------------
# The lab: namespaces, links, shapers

# mac LINK SIDE: a fixed address per interface, so that neighbours can be pinned.
mac() { printf '02:78:00:00:%02x:%02x' "$1" "$2"; }

# link_veth NS_A IF_A NS_B IF_B
link_veth() { ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"; }

# link_relay NS_A IF_A NS_B IF_B: the same link through the impairment relay (two taps). The
# relay runs in the clients' namespace, so that removing the lab ends a relay left behind.
link_relay() {
    local log=$WORK/${RELAY_LOG_PREFIX:-relay}-$2.log
    spawn "$NS_CLIENTS" "$log" "$RELAY" --a "$1:$2" --b "$3:$4" --delay-ms "$DELAY_MS" \
        --loss "$LOSS" --seed "$((${#RELAY_PIDS[@]} + 1))"
    RELAY_PIDS+=("$LAST_PID")
    wait_for "relay $2" 10 grep -q '^ready' "$log"
}

# link NS_A IF_A NS_B IF_B [relayed]
link() {
    if [ "${5:-}" = relayed ]; then link_relay "$@"; else link_veth "$@"; fi
}

# addr NS IF ADDRESS/PREFIX MAC: address, fixed MAC, up.
addr() {
    ip -n "$1" link set "$2" address "$4"
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$1" link set "$2" up
}

# shaper N RATE_MBIT [change]: tbf on alternate N's data link egress, towards the clients.
shaper() {
    local extra=()
    # With a peak rate far above the link's, tbf's largest packet is one frame: a segmented
    # window is cut into frames on the way in, so the queue holds, counts and drops frames.
    [ "$QUEUE" = frames ] && extra=(peakrate 20gbit mtu 3000)
    tc -n "bh-storm-alt$1" qdisc "${3:-replace}" dev "bh-d$1" root \
        tbf rate "${2}mbit" burst 32kb limit 1mb "${extra[@]}"
}

# netns NAME: a namespace with its loopback up and no IPv6 (whose router and neighbour
# solicitations would only add frames to the counters).
netns() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

lab_up() {
    local n rate relayed=""
    [ "$RELAYED" = 1 ] && relayed=relayed
    RELAY_PIDS=()
    netns "$NS_CENTRAL"
    netns "$NS_CLIENTS"
    ip -n "$NS_CENTRAL" link add "$BRIDGE" type bridge stp_state 0 forward_delay 0
    addr "$NS_CENTRAL" "$BRIDGE" "$CENTRAL_IP/24" "$(mac 0 1)"
    # The clients' control link (list, PXE steps), relayed too when the scenario says so.
    link "$NS_CLIENTS" bh-cl "$NS_CENTRAL" bh-cl-b $relayed
    ip -n "$NS_CENTRAL" link set bh-cl-b master "$BRIDGE" up
    addr "$NS_CLIENTS" bh-cl "$CLIENT_IP/24" "$(mac 0 100)"
    ip -n "$NS_CLIENTS" neigh replace "$CENTRAL_IP" lladdr "$(mac 0 1)" dev bh-cl nud permanent
    ip -n "$NS_CENTRAL" neigh replace "$CLIENT_IP" lladdr "$(mac 0 100)" dev "$BRIDGE" nud permanent
    for n in "${!RATES[@]}"; do
        n=$((n + 1)) rate=${RATES[n - 1]}
        netns "bh-storm-alt$n"
        link_veth "bh-storm-alt$n" "bh-c$n" "$NS_CENTRAL" "bh-c$n-b"
        ip -n "$NS_CENTRAL" link set "bh-c$n-b" master "$BRIDGE" up
        addr "bh-storm-alt$n" "bh-c$n" "10.78.0.$((10 + n))/24" "$(mac 0 $((10 + n)))"
        link "bh-storm-alt$n" "bh-d$n" "$NS_CLIENTS" "bh-d$n-c" $relayed
        addr "bh-storm-alt$n" "bh-d$n" "10.78.$n.1/24" "$(mac "$n" 1)"
        addr "$NS_CLIENTS" "bh-d$n-c" "10.78.$n.2/24" "$(mac "$n" 2)"
        ip -n "bh-storm-alt$n" neigh replace "10.78.$n.2" lladdr "$(mac "$n" 2)" dev "bh-d$n" nud permanent
        ip -n "$NS_CLIENTS" neigh replace "10.78.$n.1" lladdr "$(mac "$n" 1)" dev "bh-d$n-c" nud permanent
        # The clients' side takes datagrams in with GRO, as a NIC does (veth: NAPI mode).
        [ -n "$relayed" ] || ip netns exec "$NS_CLIENTS" ethtool -K "bh-d$n-c" gro on >/dev/null
        shaper "$n" "$rate"
    done
}

lab_down() {
    local pid
    for pid in "${RELAY_PIDS[@]}"; do stop_pid "$pid"; done
    RELAY_PIDS=()
    remove_namespaces
}

# ---------------------------------------------------------------------------------------------
# Boot set and servers

# pattern FILE BYTES: deterministic bytes (a 64 KiB xorshift block, repeated; 65536 is not a
# multiple of the block size, so a block in the wrong place fails the client's SHA-256 check).
pattern() {
    local chunk=$WORK/pattern.bin
    if [ ! -s "$chunk" ]; then
        LC_ALL=C awk 'BEGIN { x = 2463534242; for (i = 0; i < 65536; i++) {
                 x = (x * 1103515245 + 12345) % 2147483648; printf "%c", 1 + int(x / 8388608) % 255 } }' \
            >"$chunk"
    fi
    local reps=$(($2 / 65536 + 1))
    for _ in $(seq "$reps"); do cat "$chunk"; done >"$1"
    truncate -s "$2" "$1"
}

# The boot set every alternate serves (one directory: identical by construction), a central
# NBP file for the PXE steps, and the key.
write_boot_set() {
    local boot=$WORK/boot k i
    rm -rf "$boot" && mkdir -p "$boot/configs" "$WORK/nbp"
    pattern "$boot/vmlinuz" "$KERNEL"
    pattern "$boot/initrd.img" "$INITRD"
    # The relay check's file, not in the config.
    [ "$RELAYED" = 0 ] || pattern "$boot/check.bin" $((8 << 20))
    k=$(sha256sum "$boot/vmlinuz" | cut -d' ' -f1)
    i=$(sha256sum "$boot/initrd.img" | cut -d' ' -f1)
    printf 'kernel vmlinuz sha256=%s\ninitrd initrd.img sha256=%s\ncmdline console=ttyS0 bootherd.alt=${alternate}\n' \
        "$k" "$i" >"$boot/configs/default"
    pattern "$WORK/nbp/bootherd-x64.efi" $((64 << 10))
    CONFIG_BYTES=$(stat -c %s "$boot/configs/default")
}

# servers_up RUN: the central and the alternates, started fresh in directories of their own
# (nothing learned survives from another run), left at their defaults but for addresses.
servers_up() {
    local run=$WORK/$1 n id
    mkdir -p "$run/central"
    cat >"$run/central/central.toml" <<EOF
key_file = "$WORK/report.key"

[central]
tftp_listen = "$CENTRAL_IP:69"
tftp_root = "$WORK/nbp"
report_listen = "$CENTRAL_IP:7411"
typical_boot_bytes = $((KERNEL + INITRD))

[pxe]
interfaces = ["$BRIDGE $CENTRAL_IP"]
EOF
    spawn "$NS_CENTRAL" "$run/central.log" env -C "$run/central" BOOTHERD_LOG=info \
        "$BOOTHERD" central --config "$run/central/central.toml"
    CENTRAL_PID=$LAST_PID
    ALT_PIDS=()
    for n in "${!RATES[@]}"; do
        n=$((n + 1)) id=alt$n
        mkdir -p "$run/$id"
        cat >"$run/$id/alternate.toml" <<EOF
key_file = "$WORK/report.key"

[alternate]
id = "$id"
tftp_listen = "10.78.$n.1:69"
root = "$WORK/boot"
centrals = ["$CENTRAL_IP:7411"]
EOF
        [ "$HTTP" = 0 ] || printf 'http_listen = "10.78.%d.1:%d"\n' "$n" "$HTTP_PORT" >>"$run/$id/alternate.toml"
        spawn "bh-storm-alt$n" "$run/$id.log" env -C "$run/$id" BOOTHERD_LOG="$ALT_LOG" \
            "$BOOTHERD" alternate --config "$run/$id/alternate.toml"
        ALT_PIDS+=("$LAST_PID")
    done
    wait_for "the central ranking ${#RATES[@]} alternates" 30 central_ranks_all
}

central_ranks_all() {
    local ranked
    ranked=$(ip netns exec "$NS_CENTRAL" "$BOOTHERD" status --central "$CENTRAL_IP:7411" \
        --key-file "$WORK/report.key" --json | jq '[.alternates[] | select(.score_us != null)] | length')
    [ "$ranked" -eq "${#RATES[@]}" ]
}

servers_down() {
    local pid
    for pid in "${ALT_PIDS[@]}" "$CENTRAL_PID"; do stop_pid "$pid"; done
}

# ---------------------------------------------------------------------------------------------
# Measuring

# CPU ticks (user + system) of a process.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# "busy total" jiffies of the whole host.
host_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# "packets drops" on alternate N's shaped egress.
tc_counts() {
    tc -s -j -n "bh-storm-alt$1" qdisc show dev "bh-d$1" | jq -r '.[0] | "\(.packets) \(.drops)"'
}

# snapshot: counters before or after a storm, as NAME=VALUE lines.
snapshot() {
    local n pk dr
    for n in "${!RATES[@]}"; do
        read -r pk dr < <(tc_counts $((n + 1)))
        say "pkts$((n + 1))=$pk" "drops$((n + 1))=$dr" "alt_cpu$((n + 1))=$(cpu_ticks "${ALT_PIDS[n]}")"
    done
    local pid relay_cpu=0
    for pid in "${RELAY_PIDS[@]}"; do relay_cpu=$((relay_cpu + $(cpu_ticks "$pid"))); done
    say "relay_cpu=$relay_cpu"
    read -r busy total < <(host_ticks)
    say "host_busy=$busy" "host_total=$total"
}

# DATA (and OACK) datagrams one boot needs: per file ceil((size + 1) / blksize) DATA (a file
# that is a whole number of blocks ends with an empty one) and one OACK; files: config, kernel,
# initrd. 0 over HTTP (TCP segments are no such count: sent/need and retx% read 0 there).
datagrams_per_boot() {
    [ "$HTTP" = 0 ] || { echo 0; return; }
    local total=0 size
    for size in "$CONFIG_BYTES" "$KERNEL" "$INITRD"; do
        total=$((total + size / BLKSIZE + 1 + 1))
    done
    echo "$total"
}

# The ideal makespan: total payload bytes over total capacity; with a slowdown, the time by
# which the capacity before and after the change has carried them.
ideal_seconds() {
    local rates=$((${RATES[*]/%/+}0))
    awk -v bytes="$((CLIENTS * (KERNEL + INITRD)))" -v c1="$rates" \
        -v at="${SLOW_AT_S:-0}" -v c2="$((rates - RATES[0] + ${SLOW_RATE:-RATES[0]}))" 'BEGIN {
        bits = bytes * 8; c1 *= 1e6; c2 *= 1e6
        if (at == 0 || bits <= c1 * at) print bits / c1; else print at + (bits - c1 * at) / c2 }'
}

# client_args POLICY: how `bootherd client` is told the policy.
client_args() {
    local n list="" weights=""
    for n in "${!RATES[@]}"; do
        list+="${list:+,}alt$((n + 1))=10.78.$((n + 1)).1"
        weights+="${weights:+,}${RATES[n]}"
    done
    [ "$HTTP" = 0 ] || echo "--http"
    [ "$HTTP" = 0 ] || [ "$1" = load ] || echo "--http-port $HTTP_PORT"
    case $1 in
    load)
        echo "--central $CENTRAL_IP"
        [ "$PXE" = 1 ] && echo "--pxe $CENTRAL_IP"
        ;;
    round-robin) echo "--alternates $list --assign round-robin" ;;
    static) echo "--alternates $list --assign weights:$weights" ;;
    esac
}

# storm POLICY OUT: one storm of the scenario's clients; the client's JSON in OUT, its CPU
# seconds and wall time in OUT.time. Exit status of the client is not fatal (failed boots are
# figures).
storm() {
    local limit slow_pid="" args
    mapfile -t args < <(client_args "$1" | tr ' ' '\n')
    # The client's own timeouts end every boot; this only guards against a hang.
    limit=$(awk -v i="$(ideal_seconds)" 'BEGIN { printf "%d", 120 + 20 * i }')
    if [ -n "$SLOW_AT_S" ]; then
        (sleep "$SLOW_AT_S" && shaper 1 "$SLOW_RATE" change) &
        slow_pid=$!
    fi
    local TIMEFORMAT='%U %S %R'
    { time ip netns exec "$NS_CLIENTS" env BOOTHERD_LOG=warn timeout -k 10 "$limit" \
        "$BOOTHERD" client "${args[@]}" --clients "$CLIENTS" --spread-ms "$SPREAD_MS" \
        --json >"$2" 2>"$2.log" || true; } 2>"$2.time"
    [ -z "$slow_pid" ] || wait "$slow_pid"
    jq -e .summary "$2" >/dev/null 2>&1 || die "the client printed no summary (see $2.log)"
}

# measure SCENARIO POLICY: runs the policy's storm(s) on fresh servers; prints its row and
# appends it to results.tsv.
measure() {
    local scen=$1 policy=$2 out=$WORK/$1-$2 before after
    servers_up "$scen-$policy"
    if [ "$WARM" = 1 ]; then storm "$policy" "$out.first.json"; fi
    before=$(snapshot)
    storm "$policy" "$out.json"
    after=$(snapshot)
    local vmhwm=0 n v
    for n in "${ALT_PIDS[@]}"; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$n/status")
        [ "$v" -le "$vmhwm" ] || vmhwm=$v
    done
    [ -z "$SLOW_AT_S" ] || shaper 1 "${RATES[0]}" change
    servers_down
    row "$scen" "$policy" "$out.json" "$before" "$after" "$vmhwm" "$(cat "$out.json.time")"
}

# row SCENARIO POLICY JSON BEFORE AFTER VMHWM "USER SYS REAL": the figures of one storm.
row() {
    local json=$3 ideal needed summary
    ideal=$(ideal_seconds)
    needed=$(datagrams_per_boot)
    summary=$(jq -r --argjson n "${#RATES[@]}" '.summary as $s |
        [$s.makespan_s, $s.p50_s, $s.p99_s, $s.failed, $s.fell_back, $s.clients,
         ([range(1; $n + 1) | $s.share["alt\(.)"] // 0 | tostring] | join("/"))]
        | @tsv' "$json")
    FAILED_BOOTS=$((FAILED_BOOTS + $(cut -f4 <<<"$summary")))
    awk -F'\t' -v OFS='\t' -v scen="$1" -v policy="$2" -v ideal="$ideal" -v needed="$needed" \
        -v links="${#RATES[@]}" -v before="$4" -v after="$5" -v vmhwm="$6" -v times="$7" \
        -v hz="$(getconf CLK_TCK)" '
    function load(text, into,   lines, kv, i, n) {
        n = split(text, lines, /[ \n]+/)
        for (i = 1; i <= n; i++) if (split(lines[i], kv, "=") == 2) into[kv[1]] = kv[2]
    }
    {
        load(before, b); load(after, a)
        split(times, t, " ")
        makespan = $1; booted = $6 - $4
        sent = 0; drops = ""; alt_cpu = 0
        for (i = 1; i <= links; i++) {
            d = a["drops" i] - b["drops" i]
            sent += a["pkts" i] - b["pkts" i] + d
            drops = drops (i > 1 ? "/" : "") d
            alt_cpu += a["alt_cpu" i] - b["alt_cpu" i]
        }
        need = booted * needed
        per = need > 0 ? sent / need : 0
        retx = sent > 0 && need > 0 ? 100 * (sent - need) / sent : 0
        busy = a["host_busy"] - b["host_busy"]; total = a["host_total"] - b["host_total"]
        wall = t[3] > 0 ? t[3] : 1
        idle = total > 0 ? 100 * (1 - busy / total) : 0
        print scen, policy, makespan, makespan / ideal, $2, $3, $7, $4, $5, drops, per, retx,
            vmhwm, (t[1] + t[2]) / wall, alt_cpu / hz / wall, (a["relay_cpu"] - b["relay_cpu"]) / hz / wall,
            idle, ideal, $6
    }' <<<"$summary" | tee -a "$WORK/results.tsv" | print_row
}

print_header() {
    printf '%-11s %9s %7s %7s %7s  %-14s %6s %6s  %-16s %9s %6s %9s %6s %7s %7s %5s\n' \
        policy makespan x_ideal p50_s p99_s split failed fellbk "queue drops" sent/need retx% \
        VmHWM_KiB cl_cpu alt_cpu rly_cpu idle%
}

print_row() {
    awk -F'\t' '{ printf "%-11s %7.2f s %6.2fx %7.2f %7.2f  %-14s %6d %6d  %-16s %9.3f %5.1f%% %9d %6.2f %7.2f %7.2f %5.0f\n",
        $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17 }'
}

# relay_check: one window-64 download over every data link at once, through relays without
# delay or loss: each must reach its link's rate (less frame overhead), or the relay, not the
# link, would be what the scenario measures.
relay_check() {
    local n rate log pids=() cpu0=0 cpu1=0 pid start
    say "relay check: 8 MiB over each link at once, window 64, through relays without delay or loss"
    servers_up relay-check
    for pid in "${RELAY_PIDS[@]}"; do cpu0=$((cpu0 + $(cpu_ticks "$pid"))); done
    start=$EPOCHREALTIME
    for n in "${!RATES[@]}"; do
        ip netns exec "$NS_CLIENTS" "$BOOTHERD" fetch "tftp://10.78.$((n + 1)).1/check.bin" \
            -o /dev/null --blksize "$BLKSIZE" --windowsize 64 2>"$WORK/relay-check-$((n + 1)).log" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "relay check download failed (see $WORK)"; done
    for pid in "${RELAY_PIDS[@]}"; do cpu1=$((cpu1 + $(cpu_ticks "$pid"))); done
    for n in "${!RATES[@]}"; do
        rate=${RATES[n]} log=$WORK/relay-check-$((n + 1)).log
        awk -v rate="$rate" -v n=$((n + 1)) -v blk="$BLKSIZE" -v oh="$FRAME_OVERHEAD" '
            / MB\/s/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") got = $(i - 1) }
            END { payload = rate * 1e6 / 8 * blk / (blk + oh) / 1e6
                  printf "  alt%d link %d Mbit/s: %.2f MB/s, %.0f%% of its payload rate %.2f MB/s\n",
                      n, rate, got, 100 * got / payload, payload }' "$log"
    done
    awk -v t="$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" \
        -v ticks=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "  relays: %.2f CPU s in %.1f s (%.0f%% of one core, all relays)\n", ticks / hz, t, 100 * ticks / hz / t }'
    servers_down
}

run_scenario() {
    local name=$1 policy rates
    scenario "$name"
    rates=$(IFS=/; echo "${RATES[*]}")
    say ""
    say "== $name: $TITLE"
    say "   $CLIENTS clients x ($((KERNEL >> 10)) KiB + $((INITRD >> 10)) KiB), links $rates Mbit/s" \
        "(tbf burst 32kb limit 1mb, $QUEUE queue)$([ "$RELAYED" = 1 ] && echo ", relay ${DELAY_MS} ms + ${LOSS} % loss each way");" \
        "ideal $(printf '%.2f' "$(ideal_seconds)") s"
    write_boot_set
    if [ "$RELAYED" = 1 ]; then
        local loss=$LOSS delay=$DELAY_MS
        LOSS=0 DELAY_MS=0 RELAY_LOG_PREFIX=relay-check
        lab_up
        relay_check
        lab_down
        LOSS=$loss DELAY_MS=$delay RELAY_LOG_PREFIX=relay
    fi
    lab_up
    print_header
    for policy in "${POLICIES[@]}"; do measure "$name" "$policy"; done
    if [ "$RELAYED" = 1 ]; then
        local pid
        for pid in "${RELAY_PIDS[@]}"; do stop_pid "$pid"; done
        say "  relay counters (lost = the 0.5 % drawn; overflow and refused must be 0):"
        cat "$WORK"/relay-bh-*.log | grep -E '(received|cpu:)' | sed 's/^/    /'
        RELAY_PIDS=()
    fi
    lab_down
}

# ---------------------------------------------------------------------------------------------
# Floors (issue 10), from results.tsv

floors() {
    say ""
    say "== floors (load ordering; same run as the baselines)"
    awk -F'\t' '
    { key = $1 "/" $2; mk[key] = $3; x[key] = $4; failed[key] = $8; fb[key] = $9
      n[key] = $19; hwm[key] = $13; retx[key] = $12; spl[key] = $7; seen[$1] = 1 }
    function verdict(ok) { return ok ? "PASS" : "MISS" }
    function line(ok, text) { printf "%s %s\n", verdict(ok), text }
    END {
        if (seen["warm"]) line(x["warm/load"] <= 1.15 && failed["warm/load"] == 0,
            sprintf("warm 60 at once: %.2fx ideal (floor 1.15x), %d failed (floor 0); best static %.2fx",
                x["warm/load"], failed["warm/load"], x["warm/static"]))
        if (seen["spread200"]) line(x["spread200/load"] <= 1.2 && failed["spread200/load"] == 0,
            sprintf("200 over 5 s: %.2fx ideal (floor 1.2x), %d failed (floor 0)",
                x["spread200/load"], failed["spread200/load"]))
        if (seen["storm1000"]) line(x["storm1000/load"] <= 1.1 && failed["storm1000/load"] == 0 &&
                fb["storm1000/load"] < 0.02 * n["storm1000/load"] && hwm["storm1000/load"] < 16384,
            sprintf("1,000 over 5 s: %.2fx ideal (floor 1.1x), %d failed (0), %d fell back (< 2%% = %d), alternate VmHWM %d KiB (< 16384)",
                x["storm1000/load"], failed["storm1000/load"], fb["storm1000/load"],
                0.02 * n["storm1000/load"], hwm["storm1000/load"]))
        if (seen["slowdown"]) line(x["slowdown/load"] <= 1.1,
            sprintf("alt1 slowed mid-storm: %.2fx the true ideal (floor 1.1x)", x["slowdown/load"]))
        # The same split as round robin is the same work: within 2 % is run-to-run noise.
        same = spl["cold/load"] == spl["cold/round-robin"] && mk["cold/load"] <= 1.02 * mk["cold/round-robin"]
        if (seen["cold"]) line(mk["cold/load"] <= mk["cold/round-robin"] || same,
            sprintf("cold 60 at once: load %.2f s (split %s) vs round robin %.2f s (split %s) (floor: no slower; the same split within 2 %% counts as equal)",
                mk["cold/load"], spl["cold/load"], mk["cold/round-robin"], spl["cold/round-robin"]))
        worst = -1
        for (k in retx) if (k ~ /^(cold|warm|slowdown|spread200|storm1000)\/load$/ && retx[k] > worst) { worst = retx[k]; at = k }
        if (worst >= 0) line(worst < 5,
            sprintf("DATA retransmitted: at most %.1f%% of DATA sent (%s; floor < 5%% in the scenarios above)", worst, at))
    }' "$WORK/results.tsv"
}

# ---------------------------------------------------------------------------------------------

main() {
    local scenarios=("$@") s started=$SECONDS
    [ ${#scenarios[@]} -gt 0 ] || scenarios=("${ALL_SCENARIOS[@]}")
    for s in "${scenarios[@]}"; do scenario "$s"; done # unknown names fail before any work
    case $QUEUE in frames | gso) ;; *) die "BH_STORM_QUEUE must be frames or gso" ;; esac
    [ "$(id -u)" -eq 0 ] || die "run as root (namespaces, taps, tc)"
    exec 9>"$LOCK"
    flock -n 9 || die "another storm run holds $LOCK"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_packages iproute2 ethtool jq util-linux procps
    build
    remove_namespaces # a lab left by a killed run
    WORK=$(mktemp -d /tmp/bh-storm.XXXXXX)
    "$BOOTHERD" report keygen >"$WORK/report.key"
    # 1,000 clients hold a few sockets each; the alternates one per transfer.
    local hard
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ] && hard=65536
    ulimit -n "$hard"
    say "bootherd storm lab: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    say "columns: makespan and its ratio to the ideal; completion p50/p99 (from the storm's start);"
    say "  split = boots per alternate; fellbk = boots that left an alternate; queue drops per shaped"
    say "  link (tc); sent/need = datagrams on the shaped links per datagram the boots needed (DATA +"
    say "  OACK), retx% = the excess as a share of what was sent; VmHWM = largest alternate peak RSS;"
    say "  cl_cpu, alt_cpu, rly_cpu = cores used by the client, all alternates, all relays; idle% = host"
    for s in "${scenarios[@]}"; do run_scenario "$s"; done
    floors
    say ""
    say "total storm lab time: $((SECONDS - started)) s; failed boots in all: $FAILED_BOOTS"
    if [[ " ${scenarios[*]} " == *" ci "* ]] && [ "$FAILED_BOOTS" -gt 0 ]; then
        die "$FAILED_BOOTS boots failed"
    fi
}

main "$@"
