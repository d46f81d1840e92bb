#!/usr/bin/env bash
# Real-firmware test of the central's proxyDHCP and boot-server discovery (src/pxe/).
#
# Builds a closed lab of network namespaces joined by a Linux bridge (nothing is put on the
# host's own interfaces, no traffic leaves the namespaces) and removes it on exit:
#   bh-e2e-dhcp     dnsmasq as a plain DHCP server at 10.77.0.254 (addresses only, no DNS, no
#                   PXE, no TFTP) plus an RA-only IPv6 router, so iPXE does not wait for an RA
#   bh-e2e-central  bootherd central at 10.77.0.1: [pxe] on its veth (SO_BINDTODEVICE), TFTP
#                   with Debian's iPXE EFI build as bootherd-x64.efi, the alternate list
#   bh-e2e-alt1     bootherd alternate alt1 at 10.77.0.11 with a one-file boot set
#   bh-e2e-lab      the bridge, one tap device per QEMU client, tcpdump of the bridge
# Cases (QEMU with TCG, MAC 52:54:00:77:00:10):
#   ipxe-bios  SeaBIOS + iPXE option ROM on e1000: proxy offer -> bootherd/alternates.ipxe,
#              which chains to alt1's boot set (an iPXE script that prints a marker)
#   ovmf-x64   OVMF's native PXE on virtio-net (no option ROM): proxy offer, discovery
#              DHCPREQUEST on UDP 4011 -> bootherd-x64.efi (Debian's iPXE EFI build), which
#              then asks again as iPXE and goes on like ipxe-bios
# Each case polls the logs, stops the VM once every check is met, and prints the time of
# each check from VM start (bootherd's log time stamps; serial output at the poll interval).
#
# Usage (root): tests/e2e/pxe_firmware.sh [CASE...]        default: every case
# Environment: BH_E2E_KEEP=1 keeps the work directory (logs, serial output, lab.pcap; it is
# always kept after a failure); BH_E2E_NO_BUILD=1 skips `cargo build --release`;
# BH_E2E_IPXE_TIMEOUT, BH_E2E_OVMF_TIMEOUT bound each VM run in seconds (120, 240);
# BH_E2E_IPXE_ROM picks the e1000 option ROM (/usr/lib/ipxe/qemu/efi-e1000.rom, QEMU's
# default; pxe-e1000.rom works too).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BOOTHERD=$REPO/target/release/bootherd

NS_LAB=bh-e2e-lab
NS_DHCP=bh-e2e-dhcp
NS_CENTRAL=bh-e2e-central
NS_ALT=bh-e2e-alt1
NAMESPACES=("$NS_LAB" "$NS_DHCP" "$NS_CENTRAL" "$NS_ALT")
BRIDGE=bh-br0
DHCP_IF=bh-dhcp0 CENTRAL_IF=bh-cent0 ALT_IF=bh-alt0
DHCP_IP=10.77.0.254 CENTRAL_IP=10.77.0.1 ALT_IP=10.77.0.11
DHCP_IP6=fd77:77::254/64
CLIENT_MAC=52:54:00:77:00:10
CLIENT_UUID=77777777-7777-4777-8777-525400770010
LAB_PEER='10\.77\.0\.[0-9]+:[0-9]+' # a client's address and port in bootherd's log

IPXE_ROM=${BH_E2E_IPXE_ROM:-/usr/lib/ipxe/qemu/efi-e1000.rom}
IPXE_EFI=/usr/lib/ipxe/ipxe.efi
OVMF_CODE=/usr/share/OVMF/OVMF_CODE.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS.fd
IPXE_TIMEOUT=${BH_E2E_IPXE_TIMEOUT:-120}
OVMF_TIMEOUT=${BH_E2E_OVMF_TIMEOUT:-240}
ALL_CASES=(ipxe-bios ovmf-x64)

WORK=""   # logs, configs, serial output and the capture of this run
SERIAL="" # the serial output of the VM running now
PIDS=()
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

install_deps() {
    local need=() pkg
    for pkg in qemu-system-x86 ipxe-qemu ipxe ovmf dnsmasq-base iproute2 tcpdump; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
    done
    [ ${#need[@]} -eq 0 ] && return
    # Packaged servers must not start a system service on the host: dnsmasq-base is the
    # binary without the service, and the policy covers anything pulled in with it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

check_host() {
    [ "$(id -u)" -eq 0 ] || die "run as root (namespaces, taps, ports 67/69/4011)"
    local f
    for f in "$IPXE_ROM" "$IPXE_EFI" "$OVMF_CODE" "$OVMF_VARS" /dev/net/tun; do
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

# ---------------------------------------------------------------------------------------------
# The lab

# Runs CMD in namespace NS in the background with its output in LOG; killed on exit.
spawn() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    PIDS+=($!)
}

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

remove_namespaces() {
    local ns pids=()
    for ns in "${NAMESPACES[@]}"; do
        ip netns list | grep -qw "^$ns" || continue
        # Anything still running inside was started by this script (QEMU under timeout, ...).
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        [ ${#pids[@]} -eq 0 ] || kill -9 "${pids[@]}" 2>/dev/null || true
        ip netns delete "$ns"
    done
}

cleanup() {
    local rc=$? i pid
    set +e
    # Newest first, so the capture (started first) sees everything else end.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill "$pid" 2>/dev/null || continue
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    remove_namespaces # also removes the bridge, taps and veths inside them
    if [ -n "$WORK" ]; then
        if [ "$rc" -ne 0 ] || [ "${BH_E2E_KEEP:-0}" = 1 ]; then
            say "logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
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

make_bridge() {
    ip netns add "$NS_LAB"
    ip -n "$NS_LAB" link set lo up
    ip -n "$NS_LAB" link add "$BRIDGE" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$NS_LAB" link set "$BRIDGE" up
}

start_dhcp() {
    ip -n "$NS_DHCP" addr add "$DHCP_IP6" dev "$DHCP_IF" nodad
    spawn "$NS_DHCP" "$WORK/dnsmasq.log" dnsmasq --keep-in-foreground --conf-file=/dev/null \
        --port=0 --no-resolv --no-hosts --user=root --pid-file= \
        --interface="$DHCP_IF" --bind-interfaces --log-facility=- --log-dhcp \
        --dhcp-authoritative --dhcp-leasefile="$WORK/dnsmasq.leases" \
        --dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h --dhcp-option=option:router \
        --enable-ra --dhcp-range=::,constructor:"$DHCP_IF",ra-only
    wait_for "dnsmasq" 10 "$WORK/dnsmasq.log" 'DHCP, IP range'
}

start_central() {
    mkdir -p "$WORK/central/nbp"
    cp "$IPXE_EFI" "$WORK/central/nbp/bootherd-x64.efi"
    cat >"$WORK/central/central.toml" <<EOF
key_file = "../report.key"

[central]
tftp_listen = "$CENTRAL_IP:69"
tftp_root = "nbp"
report_listen = "$CENTRAL_IP:7411"

[pxe]
interfaces = ["$CENTRAL_IF $CENTRAL_IP"]
EOF
    spawn "$NS_CENTRAL" "$WORK/central.log" env BOOTHERD_LOG=debug \
        "$BOOTHERD" central --config "$WORK/central/central.toml"
    wait_for "central" 10 "$WORK/central.log" 'central: reports on'
}

# One alternate whose boot "kernel" is an iPXE script that prints a marker.
start_alternate() {
    mkdir -p "$WORK/alt1/boot/configs"
    printf '#!ipxe\necho bootherd-e2e: hello from alt1\nshell\n' >"$WORK/alt1/boot/hello.ipxe"
    printf 'kernel hello.ipxe\n' >"$WORK/alt1/boot/configs/default"
    cat >"$WORK/alt1/alternate.toml" <<EOF
key_file = "../report.key"

[alternate]
id = "alt1"
tftp_listen = "$ALT_IP:69"
root = "boot"
centrals = ["$CENTRAL_IP:7411"]
interval_ms = 1000
EOF
    spawn "$NS_ALT" "$WORK/alternate.log" env BOOTHERD_LOG=debug \
        "$BOOTHERD" alternate --config "$WORK/alt1/alternate.toml"
    wait_for "alt1 in the central's order" 15 - central_lists_alt1
}

central_lists_alt1() {
    ip netns exec "$NS_CENTRAL" "$BOOTHERD" status --central "$CENTRAL_IP:7411" \
        --key-file "$WORK/report.key" --json | grep -q '"alt1"'
}

start_capture() {
    spawn "$NS_LAB" "$WORK/tcpdump.log" \
        tcpdump -i "$BRIDGE" -n -U --immediate-mode -s 0 -Z root -w "$WORK/lab.pcap"
    wait_for "tcpdump" 10 "$WORK/tcpdump.log" 'listening on'
}

lab_up() {
    WORK=$(mktemp -d /tmp/bh-e2e-pxe.XXXXXX)
    "$BOOTHERD" report keygen >"$WORK/report.key"
    remove_namespaces # a lab left by a killed run
    make_bridge
    attach_host "$NS_DHCP" "$DHCP_IF" "$DHCP_IP"
    attach_host "$NS_CENTRAL" "$CENTRAL_IF" "$CENTRAL_IP"
    attach_host "$NS_ALT" "$ALT_IF" "$ALT_IP"
    start_capture
    start_dhcp
    start_central
    start_alternate
    say "lab up in $WORK: dhcp $DHCP_IP, central $CENTRAL_IP, alt1 $ALT_IP on $BRIDGE"
}

# ---------------------------------------------------------------------------------------------
# Booting one client

# Expectations of the current case: a label, a source (central, alternate or serial: only the
# lines written since the VM started) and an extended regex.
EXP_LABEL=() EXP_SOURCE=() EXP_REGEX=() EXP_NBP=0
expect() { EXP_LABEL+=("$1"); EXP_SOURCE+=("$2"); EXP_REGEX+=("$3"); }
# The expectation whose time is reported as the NBP download.
expect_nbp() { EXP_NBP=${#EXP_LABEL[@]}; expect "$@"; }

declare -A LOG_FROM
source_text() {
    case $1 in
    serial) [ ! -e "$SERIAL" ] || sed 's/\x1b\[[0-9;?=]*[A-Za-z]//g' "$SERIAL" | tr -d '\r' ;;
    *) tail -n "+${LOG_FROM[$1]}" "$WORK/$1.log" ;;
    esac
}

# boot_vm NAME LIMIT QEMU-ARGS...: boots a client on a fresh tap (as netdev "net0") until every
# expectation is met or LIMIT seconds pass; prints one line per expectation and PASS/FAIL.
boot_vm() {
    local name=$1 limit=$2
    shift 2
    local tap=bh-t-$name i line met=() at=() left qemu start_us
    SERIAL=$WORK/$name.serial
    for i in central alternate; do LOG_FROM[$i]=$(($(wc -l <"$WORK/$i.log") + 1)); done
    ip -n "$NS_LAB" tuntap add dev "$tap" mode tap
    ip -n "$NS_LAB" link set "$tap" master "$BRIDGE" up
    say "== $name: booting (limit ${limit} s)"
    start_us=$(now_us)
    spawn "$NS_LAB" "$WORK/$name.qemu.log" timeout -k 5 $((limit + 30)) \
        qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot \
        -serial "file:$SERIAL" -uuid "$CLIENT_UUID" \
        -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no" "$@"
    qemu=${PIDS[-1]}
    left=${#EXP_LABEL[@]}
    while [ "$left" -gt 0 ] && [ $((($(now_us) - start_us) / 1000000)) -lt "$limit" ]; do
        for i in "${!EXP_LABEL[@]}"; do
            [ -n "${met[i]:-}" ] && continue
            line=$(source_text "${EXP_SOURCE[i]}" | grep -E -m1 -- "${EXP_REGEX[i]}") || continue
            met[i]=1 left=$((left - 1))
            at[i]=$(seconds_since "$start_us" "$line")
        done
        kill -0 "$qemu" 2>/dev/null || break
        if [ "$left" -gt 0 ]; then sleep 0.2; fi
    done
    kill "$qemu" 2>/dev/null || true
    wait "$qemu" 2>/dev/null || true
    for i in "${!EXP_LABEL[@]}"; do
        if [ -n "${met[i]:-}" ]; then
            printf '   ok  %6s s  %s\n' "${at[i]}" "${EXP_LABEL[i]}"
        else
            printf '   --  missing   %s\n' "${EXP_LABEL[i]}"
        fi
    done
    if [ "$left" -eq 0 ]; then
        say "PASS $name: NBP downloaded ${at[EXP_NBP]} s after VM start"
    else
        FAILURES=$((FAILURES + 1))
        say "FAIL $name: $left of ${#EXP_LABEL[@]} checks unmet after $(seconds_since "$start_us" -) s"
        explain_failure "$name"
    fi
}

explain_failure() {
    say "   central log since the VM started (pxe and tftp lines):"
    source_text central | grep -E 'pxe:|tftp:' | tail -n 15 | sed 's/^/     /'
    say "   last serial lines:"
    source_text serial | grep -v '^\s*$' | tail -n 10 | sed 's/^/     /'
    tcpdump -r "$WORK/lab.pcap" -n -v 'udp port 67 or udp port 68 or udp port 4011' \
        >"$WORK/$1.dhcp.txt" 2>/dev/null || true
    say "   DHCP traffic of the whole run: $WORK/$1.dhcp.txt; capture: $WORK/lab.pcap"
}

reset_expectations() { EXP_LABEL=() EXP_SOURCE=() EXP_REGEX=() EXP_NBP=0; }

# A client running iPXE on architecture ARCH (the BIOS option ROM, or the iPXE EFI build that
# OVMF chained as bootherd-x64.efi) gets the alternate list from the central and runs alt1's
# boot set. KIND is `expect_nbp` when the list is the NBP of the case.
expect_ipxe_chain() {
    local arch=$1 kind=${2:-expect}
    expect "central: proxy offer to $CLIENT_MAC (arch $arch, iPXE) naming bootherd/alternates.ipxe" \
        central "pxe: Proxy $CLIENT_MAC \(arch $arch, iPXE.*boot file bootherd/alternates\.ipxe"
    "$kind" "central: TFTP sent bootherd/alternates.ipxe" central \
        "tftp: $LAB_PEER: sent bootherd/alternates\.ipxe "
    expect "serial: iPXE fetched tftp://$CENTRAL_IP/bootherd/alternates.ipxe" serial \
        "tftp://$CENTRAL_IP/bootherd/alternates\.ipxe"
    expect "alt1: sent the client's boot config and hello.ipxe" alternate "sent hello\.ipxe "
    expect "serial: the script from alt1 ran" serial "bootherd-e2e: hello from alt1"
}

case_ipxe_bios() {
    reset_expectations
    expect_ipxe_chain 0 expect_nbp
    boot_vm ipxe-bios "$IPXE_TIMEOUT" -machine pc,graphics=off -m 256 -boot n \
        -device "e1000,netdev=net0,mac=$CLIENT_MAC,romfile=$IPXE_ROM"
}

case_ovmf_x64() {
    reset_expectations
    cp "$OVMF_VARS" "$WORK/ovmf-vars.fd"
    expect "central: proxy offer to $CLIENT_MAC (arch 7) naming bootherd-x64.efi" central \
        "pxe: Proxy $CLIENT_MAC \(arch 7, uuid.*boot file bootherd-x64\.efi"
    expect "central: discovery (4011) answer naming bootherd-x64.efi" central \
        "pxe: Discovery $CLIENT_MAC \(arch 7, uuid.*boot file bootherd-x64\.efi"
    expect_nbp "central: TFTP sent bootherd-x64.efi" central \
        "tftp: $LAB_PEER: sent bootherd-x64\.efi "
    expect "serial: OVMF downloaded the NBP" serial "NBP file downloaded successfully"
    expect_ipxe_chain 7 # the NBP is iPXE: it asks again
    boot_vm ovmf-x64 "$OVMF_TIMEOUT" -machine q35 -m 256 \
        -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" \
        -drive "if=pflash,format=raw,file=$WORK/ovmf-vars.fd" \
        -device "virtio-net-pci,netdev=net0,mac=$CLIENT_MAC,romfile=,bootindex=1"
}

main() {
    local cases=("$@") c
    [ ${#cases[@]} -gt 0 ] || cases=("${ALL_CASES[@]}")
    for c in "${cases[@]}"; do
        declare -F "case_${c//-/_}" >/dev/null || die "unknown case $c (cases: ${ALL_CASES[*]})"
    done
    [ "$(id -u)" -eq 0 ] || die "run as root"
    exec 9>/run/lock/bh-e2e-pxe.lock
    flock -n 9 || die "another run of this test holds /run/lock/bh-e2e-pxe.lock"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_deps
    check_host
    build
    lab_up
    for c in "${cases[@]}"; do "case_${c//-/_}"; done
    if [ "$FAILURES" -gt 0 ]; then
        say "FAIL: $FAILURES of ${#cases[@]} cases"
        exit 1
    fi
    say "PASS: all ${#cases[@]} cases"
}

main "$@"
