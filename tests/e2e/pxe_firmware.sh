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

# shellcheck source=tests/e2e/lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

IPXE_EFI=/usr/lib/ipxe/ipxe.efi
OVMF_CODE=/usr/share/OVMF/OVMF_CODE.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS.fd
IPXE_TIMEOUT=${BH_E2E_IPXE_TIMEOUT:-120}
OVMF_TIMEOUT=${BH_E2E_OVMF_TIMEOUT:-240}
ALL_CASES=(ipxe-bios ovmf-x64)
LAB_PACKAGES+=(ipxe ovmf)
LAB_FILES+=("$IPXE_EFI" "$OVMF_CODE" "$OVMF_VARS")

# One alternate whose boot "kernel" is an iPXE script that prints a marker.
start_alternate() {
    setup_alternate alt1 10.77.0.11 "interval_ms = 1000"
    printf '#!ipxe\necho bootherd-e2e: hello from alt1\nshell\n' >"$WORK/alt1/boot/hello.ipxe"
    printf 'kernel hello.ipxe\n' >"$WORK/alt1/boot/configs/default"
    run_alternate alt1
}

lab_up() {
    make_bridge
    start_capture
    start_dhcp
    mkdir -p "$WORK/central/nbp"
    cp "$IPXE_EFI" "$WORK/central/nbp/bootherd-x64.efi"
    start_central
    start_alternate
    say "lab up in $WORK: dhcp $DHCP_IP, central $CENTRAL_IP, alt1 ${ALT_IP[alt1]} on $BRIDGE"
}

# A client running iPXE on architecture ARCH (the BIOS option ROM, or the iPXE EFI build that
# OVMF chained as bootherd-x64.efi) gets the alternate list from the central and runs alt1's
# boot set. KIND is `expect_main` when the list is the NBP of the case.
expect_ipxe_chain() {
    local arch=$1 kind=${2:-expect}
    expect "central: proxy offer to $CLIENT_MAC (arch $arch, iPXE) naming bootherd/alternates.ipxe" \
        central "pxe: Proxy $CLIENT_MAC \(arch $arch, iPXE.*boot file bootherd/alternates\.ipxe"
    "$kind" "central: TFTP sent bootherd/alternates.ipxe" central \
        "tftp: $LAB_PEER: sent bootherd/alternates\.ipxe "
    expect "serial: iPXE fetched tftp://$CENTRAL_IP/bootherd/alternates.ipxe" serial \
        "tftp://$CENTRAL_IP/bootherd/alternates\.ipxe"
    expect "alt1: sent the client's boot config and hello.ipxe" alt1 "sent hello\.ipxe "
    expect "serial: the script from alt1 ran" serial "bootherd-e2e: hello from alt1"
}

case_ipxe_bios() {
    reset_expectations
    expect_ipxe_chain 0 expect_main
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
    expect_main "central: TFTP sent bootherd-x64.efi" central \
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
    lab_main pxe
    lab_up
    for c in "${cases[@]}"; do "case_${c//-/_}"; done
    if [ "$FAILURES" -gt 0 ]; then
        say "FAIL: $FAILURES of ${#cases[@]} cases"
        exit 1
    fi
    say "PASS: all ${#cases[@]} cases"
}

main "$@"
