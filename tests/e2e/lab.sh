# shellcheck shell=bash disable=SC2034 # variables and functions for the sourcing scripts
# Shared plumbing of the real-firmware tests (sourced by pxe_firmware.sh and boot_linux.sh).
#
# A closed lab of network namespaces joined by a Linux bridge (nothing is put on the host's own
# interfaces, no traffic leaves the namespaces), removed on exit, on the private 10.77.0.0/24:
#   bh-e2e-lab      the bridge bh-br0, one tap per QEMU client, tcpdump of the bridge
#   bh-e2e-dhcp     dnsmasq as a plain DHCP server at 10.77.0.254 (addresses only, no DNS, no
#                   PXE, no TFTP) plus an RA-only IPv6 router, so iPXE does not wait for an RA
#   bh-e2e-central  bootherd central at 10.77.0.1: [pxe] on its veth (SO_BINDTODEVICE), TFTP
#                   with the NBP files and the alternate list
#   bh-e2e-central2 optional backup central at 10.77.0.2 (TFTP and reports, no PXE), announced
#                   by the first in its PXE answers
#   bh-e2e-ID       one bootherd alternate per namespace (alt1 at 10.77.0.11, ...)
# Clients get addresses from 10.77.0.100-199. Every namespace named bh-e2e-* belongs to the
# lab: a run holds /run/lock/bh-e2e-pxe.lock, and removes what a killed run left behind.
#
# The sourcing script calls lab_main (lock, traps, packages, host checks, build, work dir), then
# builds its lab from make_bridge, attach_host, start_capture, start_dhcp, start_central (and
# start_backup_central), setup_alternate and run_alternate, and boots clients with boot_vm.
#
# Environment: BH_E2E_KEEP=1 keeps the work directory (logs, serial output, lab.pcap; it is
# always kept after a failure); BH_E2E_NO_BUILD=1 skips `cargo build --release`;
# BH_E2E_IPXE_ROM picks the e1000 option ROM (/usr/lib/ipxe/qemu/efi-e1000.rom, QEMU's
# default; pxe-e1000.rom works too).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BOOTHERD=$REPO/target/release/bootherd
# shellcheck source=tests/netns_lab.sh
. "$REPO/tests/netns_lab.sh"
LAB_PREFIX=bh-e2e-
LAB_KEEP=${BH_E2E_KEEP:-0}

NS_LAB=bh-e2e-lab
NS_DHCP=bh-e2e-dhcp
NS_CENTRAL=bh-e2e-central
NS_CENTRAL2=bh-e2e-central2
BRIDGE=bh-br0
DHCP_IF=bh-dhcp0 CENTRAL_IF=bh-cent0
DHCP_IP=10.77.0.254 CENTRAL_IP=10.77.0.1 CENTRAL2_IP=10.77.0.2 CENTRAL2_IF=bh-cent2
DHCP_IP6=fd77:77::254/64
CLIENT_MAC=52:54:00:77:00:10
CLIENT_UUID=77777777-7777-4777-8777-525400770010
LAB_PEER='10\.77\.0\.[0-9]+:[0-9]+'          # any lab address and port in bootherd's log
CLIENT_PEER='10\.77\.0\.1[0-9][0-9]:[0-9]+' # a QEMU client's (dnsmasq's range)
LAB_LOCK=/run/lock/bh-e2e-pxe.lock

IPXE_ROM=${BH_E2E_IPXE_ROM:-/usr/lib/ipxe/qemu/efi-e1000.rom}
LAB_PACKAGES=(qemu-system-x86 ipxe-qemu dnsmasq-base iproute2 tcpdump) # the script may add
LAB_FILES=("$IPXE_ROM" /dev/net/tun)                                     # to both

SERIAL=""    # the serial output of the VM running now (WORK: logs, configs, the capture)
LAB_LOGS=()  # the bootherd and dnsmasq logs, by name ($WORK/NAME.log): sources for expect
declare -A ALT_IP ALT_PID
CENTRAL_PID="" CENTRAL2_PID=""
CENTRALS=() # report addresses the alternates report to (start_central and
            # start_backup_central add theirs)
FAILURES=0

say() { printf '%s\n' "$*"; }
die() { say "FAIL setup: $*" >&2; exit 1; }

# Microseconds since the epoch.
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
# Seconds (one decimal) from START_US to the time stamp of bootherd LOG-LINE, or to now for
# any other line (serial output has no time stamps: the poll interval is the resolution).
seconds_since() {
    local us ms stamp=${2%% *}
    if [[ $stamp =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$ ]]; then
        us=$(($(date -d "$stamp" +%s%3N) * 1000))
    else
        us=$(now_us)
    fi
    ms=$(((us - $1) / 1000))
    printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# ---------------------------------------------------------------------------------------------
# Host preparation

# Checks that every file of LAB_FILES exists (firmware, ROMs).
check_host() {
    local f
    for f in "${LAB_FILES[@]}"; do
        [ -e "$f" ] || die "$f is missing"
    done
    # Nothing here starts one, but say so if the host runs a DHCP/TFTP service of its own.
    if [ -s /run/dnsmasq/dnsmasq.pid ] && kill -0 "$(cat /run/dnsmasq/dnsmasq.pid)" 2>/dev/null; then
        say "note: the host runs a dnsmasq service (not started by this test; the lab does not see it)"
    fi
}

build() {
    if [ "${BH_E2E_NO_BUILD:-0}" != 1 ]; then
        (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    fi
    [ -x "$BOOTHERD" ] || die "$BOOTHERD is missing"
}

# lab_main NAME: root check, the lab lock, cleanup traps, packages, host checks, the build
# and the work directory /tmp/bh-e2e-NAME.XXXXXX with a fresh report key.
lab_main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (namespaces, taps, ports 67/69/4011)"
    exec 9>"$LAB_LOCK"
    flock -n 9 || die "another lab run holds $LAB_LOCK"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    # dnsmasq-base is dnsmasq without its service.
    install_packages "${LAB_PACKAGES[@]}"
    check_host
    build
    WORK=$(mktemp -d "/tmp/bh-e2e-$1.XXXXXX")
    "$BOOTHERD" report keygen >"$WORK/report.key"
    remove_namespaces # a lab left by a killed run
}

# ---------------------------------------------------------------------------------------------
# The lab

# wait_for WHAT LIMIT FILE REGEX: waits up to LIMIT seconds for REGEX to appear in FILE;
# wait_for WHAT LIMIT - PROBE...: for the command PROBE to succeed.
wait_for() {
    local what=$1 limit=$2 file=$3
    shift 3
    local deadline=$((SECONDS + limit))
    while [ $SECONDS -lt $deadline ]; do
        if [ "$file" = - ]; then
            "$@" >/dev/null 2>&1 && return 0
        else
            grep -Eq "$1" "$file" 2>/dev/null && return 0
        fi
        sleep 0.2
    done
    die "$what not ready after ${limit} s (see $WORK)"
}

make_bridge() {
    ip netns add "$NS_LAB"
    ip -n "$NS_LAB" link set lo up
    ip -n "$NS_LAB" link add "$BRIDGE" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$NS_LAB" link set "$BRIDGE" up
}

# A namespace host with IFACE at ADDRESS/24, its veth peer on the bridge.
attach_host() {
    local ns=$1 ifname=$2 address=$3 port=bh-p-${2#bh-}
    ip netns add "$ns"
    ip -n "$NS_LAB" link add "$port" type veth peer name "$ifname"
    ip -n "$NS_LAB" link set "$ifname" netns "$ns"
    ip -n "$NS_LAB" link set "$port" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$address/24" dev "$ifname"
    ip -n "$ns" link set "$ifname" up
}

# start_capture [FILTER...]: tcpdump of the bridge to $WORK/lab.pcap (FILTER: a pcap filter).
# shellcheck disable=SC2120 # the filter is optional
start_capture() {
    spawn "$NS_LAB" "$WORK/tcpdump.log" \
        tcpdump -i "$BRIDGE" -n -U --immediate-mode -s 0 -Z root -w "$WORK/lab.pcap" "$@"
    wait_for "tcpdump" 10 "$WORK/tcpdump.log" 'listening on'
}

# DHCP_EXTRA: more dnsmasq options (the U-Boot cases name the central and boot.scr.uimg).
DHCP_EXTRA=()
start_dhcp() {
    attach_host "$NS_DHCP" "$DHCP_IF" "$DHCP_IP"
    ip -n "$NS_DHCP" addr add "$DHCP_IP6" dev "$DHCP_IF" nodad
    LAB_LOGS+=(dnsmasq)
    spawn "$NS_DHCP" "$WORK/dnsmasq.log" dnsmasq --keep-in-foreground --conf-file=/dev/null \
        --port=0 --no-resolv --no-hosts --user=root --pid-file= \
        --interface="$DHCP_IF" --bind-interfaces --log-facility=- --log-dhcp \
        --dhcp-authoritative --dhcp-leasefile="$WORK/dnsmasq.leases" \
        --dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h --dhcp-option=option:router \
        --enable-ra --dhcp-range=::,constructor:"$DHCP_IF",ra-only ${DHCP_EXTRA[@]+"${DHCP_EXTRA[@]}"}
    wait_for "dnsmasq" 10 "$WORK/dnsmasq.log" 'DHCP, IP range'
}

# The central with [pxe] on its veth; its TFTP root is $WORK/central/nbp (the caller may put
# NBPs there; the alternate list is generated). CENTRAL_EXTRA holds more lines for [central],
# PXE_EXTRA for [pxe].
start_central() {
    attach_host "$NS_CENTRAL" "$CENTRAL_IF" "$CENTRAL_IP"
    mkdir -p "$WORK/central/nbp"
    cat >"$WORK/central/central.toml" <<EOF
key_file = "../report.key"

[central]
tftp_listen = "$CENTRAL_IP:69"
tftp_root = "nbp"
report_listen = "$CENTRAL_IP:7411"
${CENTRAL_EXTRA:-}

[pxe]
interfaces = ["$CENTRAL_IF $CENTRAL_IP"]
${PXE_EXTRA:-}
EOF
    LAB_LOGS+=(central)
    CENTRALS+=("$CENTRAL_IP:7411")
    run_central
}

# run_central: starts (or restarts) the central, PID in CENTRAL_PID; its log is appended to.
run_central() {
    local before
    before=$(grep -c 'central: reports on' "$WORK/central.log" 2>/dev/null || true)
    spawn "$NS_CENTRAL" "$WORK/central.log" env BOOTHERD_LOG=debug \
        "$BOOTHERD" central --config "$WORK/central/central.toml"
    CENTRAL_PID=$LAST_PID
    disown "$LAST_PID" # a test may SIGKILL it: no "Killed" job notice from bash
    wait_for "central" 10 - central_started "${before:-0}"
}

# central_started N: the central's log has more than N start lines.
central_started() { [ "$(grep -c 'central: reports on' "$WORK/central.log")" -gt "$1" ]; }

# A backup central at CENTRAL2_IP: TFTP (the generated list only) and reports, no PXE; start it
# before the alternates, which report to every central. Its log is $WORK/central2.log.
start_backup_central() {
    attach_host "$NS_CENTRAL2" "$CENTRAL2_IF" "$CENTRAL2_IP"
    mkdir -p "$WORK/central2"
    cat >"$WORK/central2/central.toml" <<EOF
key_file = "../report.key"

[central]
tftp_listen = "$CENTRAL2_IP:69"
report_listen = "$CENTRAL2_IP:7411"
${CENTRAL_EXTRA:-}
EOF
    LAB_LOGS+=(central2)
    CENTRALS+=("$CENTRAL2_IP:7411")
    spawn "$NS_CENTRAL2" "$WORK/central2.log" env BOOTHERD_LOG=debug \
        "$BOOTHERD" central --config "$WORK/central2/central.toml"
    CENTRAL2_PID=$LAST_PID
    wait_for "backup central" 10 "$WORK/central2.log" 'central: reports on'
}

# setup_alternate ID ADDRESS [LINE...]: namespace bh-e2e-ID with interface bh-ID at ADDRESS,
# and the config of alternate ID serving $WORK/ID/boot (filled by the caller) on ADDRESS:69,
# reporting to the central; LINEs are appended to the config: more keys for [alternate], or a
# "[section]" line and its keys.
setup_alternate() {
    local id=$1 address=$2
    shift 2
    ALT_IP[$id]=$address
    attach_host "bh-e2e-$id" "bh-$id" "$address"
    mkdir -p "$WORK/$id/boot/configs"
    {
        printf 'key_file = "../report.key"\n\n[alternate]\nid = "%s"\n' "$id"
        printf 'tftp_listen = "%s:69"\nroot = "boot"\ncentrals = [%s]\n' "$address" \
            "$(printf '"%s", ' "${CENTRALS[@]:-$CENTRAL_IP:7411}" | sed 's/, $//')"
        printf '%s\n' "$@"
    } >"$WORK/$id/alternate.toml"
    : >"$WORK/$id.log"
    LAB_LOGS+=("$id")
}

# run_alternate ID: starts (or restarts) alternate ID, PID in ALT_PID[ID], and waits until the
# central ranks it. Its log ($WORK/ID.log) is appended to across restarts.
run_alternate() {
    local id=$1
    spawn "bh-e2e-$id" "$WORK/$id.log" env BOOTHERD_LOG=debug \
        "$BOOTHERD" alternate --config "$WORK/$id/alternate.toml"
    ALT_PID[$id]=$LAST_PID
    disown "$LAST_PID" # a test may SIGKILL it: no "Killed" job notice from bash
    wait_for "$id in the central's order" 30 - central_ranks "$id"
}

# The central's live table (bootherd status --json).
central_status() {
    ip netns exec "$NS_CENTRAL" "$BOOTHERD" status --central "$CENTRAL_IP:7411" \
        --key-file "$WORK/report.key" --json
}

# central_ranks ID: the central has alternate ID in its order (not excluded).
central_ranks() {
    local status
    status=$(central_status) || return 1
    grep -Eq "\{\"id\":\"$1\",\"addresses\":\[[^]]*\],\"score_us\":[0-9]" <<<"$status"
}

# ---------------------------------------------------------------------------------------------
# Booting one client

# Expectations of the current case: a label, a source (a name in LAB_LOGS, `alternates` for
# every alternate's log, or serial; only what was written since the VM started) and an
# extended regex. The time of the main one is the case's figure (EXP_MAIN_WHAT says what it is).
EXP_LABEL=() EXP_SOURCE=() EXP_REGEX=() EXP_MAIN=0 EXP_MAIN_WHAT="NBP downloaded"
expect() { EXP_LABEL+=("$1"); EXP_SOURCE+=("$2"); EXP_REGEX+=("$3"); }
expect_main() { EXP_MAIN=${#EXP_LABEL[@]}; expect "$@"; }
reset_expectations() { EXP_LABEL=() EXP_SOURCE=() EXP_REGEX=() EXP_MAIN=0; }

declare -A LOG_FROM
source_text() {
    local id
    case $1 in
    serial) [ ! -e "$SERIAL" ] || sed 's/\x1b\[[0-9;?=]*[A-Za-z]//g' "$SERIAL" | tr -d '\r' ;;
    alternates) for id in "${!ALT_IP[@]}"; do source_text "$id"; done ;;
    *) tail -n "+${LOG_FROM[$1]}" "$WORK/$1.log" ;;
    esac
}

# After boot_vm: whether every check passed, the main expectation's time, the matching line of
# each expectation (VM_LINE[i]), and the VM's start.
VM_OK=0 VM_SECONDS="" VM_START_US=0 VM_COUNT=0
VM_LINE=()
# Set by the caller before boot_vm: a function run once the VM has stopped, for checks that
# need the lines found (it prints them with check_line and returns non-zero on a failure).
AFTER_VM=""

# check_line OK LABEL: prints one check line like boot_vm's (OK is 1 or 0); returns !OK.
check_line() {
    if [ "$1" = 1 ]; then printf '   ok            %s\n' "$2"; else printf '   --  failed    %s\n' "$2"; fi
    [ "$1" = 1 ]
}

# boot_vm NAME LIMIT QEMU-ARGS...: boots a client on a fresh tap (as netdev "net0") until every
# expectation is met or LIMIT seconds pass; prints one line per expectation and PASS/FAIL.
boot_vm() {
    local name=$1 limit=$2
    shift 2
    local tap=bh-tap$((++VM_COUNT)) i line met=() at=() left qemu start_us after_ok=1 stopped=0
    SERIAL=$WORK/$name.serial
    rm -f "$SERIAL"
    for i in "${LAB_LOGS[@]}"; do LOG_FROM[$i]=$(($(wc -l <"$WORK/$i.log") + 1)); done
    ip -n "$NS_LAB" link del "$tap" 2>/dev/null || true
    ip -n "$NS_LAB" tuntap add dev "$tap" mode tap
    ip -n "$NS_LAB" link set "$tap" master "$BRIDGE" up
    say "== $name: booting (limit ${limit} s)"
    start_us=$(now_us)
    VM_START_US=$start_us VM_LINE=()
    spawn "$NS_LAB" "$WORK/$name.qemu.log" timeout -k 5 $((limit + 30)) \
        "${VM_QEMU:-qemu-system-x86_64}" -accel tcg -nodefaults -display none -no-reboot \
        -serial "file:$SERIAL" -uuid "$CLIENT_UUID" \
        -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no" "$@"
    qemu=$LAST_PID
    left=${#EXP_LABEL[@]}
    while [ "$left" -gt 0 ] && [ $((($(now_us) - start_us) / 1000000)) -lt "$limit" ]; do
        for i in "${!EXP_LABEL[@]}"; do
            [ -n "${met[i]:-}" ] && continue
            # Not grep -m1: a writer still writing after grep quit would fail the pipeline.
            line=$(source_text "${EXP_SOURCE[i]}" | grep -E -- "${EXP_REGEX[i]}" | sed -n 1p) || true
            [ -n "$line" ] || continue
            met[i]=1 left=$((left - 1))
            at[i]=$(seconds_since "$start_us" "$line")
            VM_LINE[i]=$line
        done
        # A VM that stopped by itself (powered off, or iPXE gave up) has written everything.
        if ! kill -0 "$qemu" 2>/dev/null; then
            [ "$stopped" = 1 ] && break
            stopped=1 # one more look at everything first
        fi
        if [ "$left" -gt 0 ]; then sleep 0.2; fi
    done
    stop_pid "$qemu"
    ip -n "$NS_LAB" link del "$tap" 2>/dev/null || true
    for i in "${!EXP_LABEL[@]}"; do
        if [ -n "${met[i]:-}" ]; then
            printf '   ok  %6s s  %s\n' "${at[i]}" "${EXP_LABEL[i]}"
        else
            printf '   --  missing   %s\n' "${EXP_LABEL[i]}"
        fi
    done
    if [ -n "$AFTER_VM" ] && [ "$left" -eq 0 ]; then
        "$AFTER_VM" || after_ok=0
    fi
    VM_SECONDS=${at[EXP_MAIN]:-}
    if [ "$left" -eq 0 ] && [ "$after_ok" = 1 ]; then
        VM_OK=1
        say "PASS $name: $EXP_MAIN_WHAT ${at[EXP_MAIN]} s after VM start"
    else
        VM_OK=0
        FAILURES=$((FAILURES + 1))
        if [ "$left" -gt 0 ]; then
            say "FAIL $name: $left of ${#EXP_LABEL[@]} checks unmet after $(seconds_since "$start_us" -) s"
        else
            say "FAIL $name: every line seen, but a check on them failed"
        fi
        explain_failure "$name"
    fi
}

explain_failure() {
    say "   central log since the VM started (pxe, tftp and list lines):"
    source_text central | grep -E 'pxe:|tftp:|: list ' | tail -n 15 | sed 's/^/     /'
    say "   last serial lines:"
    source_text serial | grep -v '^\s*$' | tail -n 10 | sed 's/^/     /'
    tcpdump -r "$WORK/lab.pcap" -n -v 'udp port 67 or udp port 68 or udp port 4011' \
        >"$WORK/$1.dhcp.txt" 2>/dev/null || true
    say "   DHCP traffic of the whole run: $WORK/$1.dhcp.txt; capture: $WORK/lab.pcap"
}
