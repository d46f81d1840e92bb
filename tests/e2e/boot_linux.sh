#!/usr/bin/env bash
# End-to-end boot of a real Linux kernel through the central and the least-loaded alternate.
#
# The lab of lab.sh (network namespaces on 10.77.0.0/24 behind a bridge, removed on exit):
#   bh-e2e-dhcp     dnsmasq: plain DHCP (addresses only) + RA-only IPv6 router
#   bh-e2e-central  bootherd central at 10.77.0.1: proxyDHCP, UDP 4011, TFTP with nothing but
#                   the generated alternate list; iPXE clients get bootherd/alternates.ipxe
#   bh-e2e-central2 a backup central at 10.77.0.2 (TFTP, reports), which the central names in
#                   its PXE answers ([pxe] backup_centrals)
#   bh-e2e-alt1..3  three alternates at 10.77.0.11-13, each on port 69 of its own address,
#                   capped at 16, 10 and 6 MB/s (rate_limit), reporting every 500 ms, each with
#                   the same boot set: Debian's current amd64 kernel (cached under
#                   /var/cache/bootherd-e2e), a busybox-static initramfs whose /init prints
#                   `BOOTHERD-MARKER booted-from=<bootherd.alt=>` and powers off, and
#                   configs/default: kernel vmlinuz, initrd initrd.img (each with its
#                   sha256=), cmdline console=ttyS0 bootherd.alt=${alternate} quiet panic=-1
# One alternate (alt1, the largest) is kept busy: three loops of `bootherd fetch` of a 256 MiB
# file from the central's namespace, so the central orders it last.
# Cases (QEMU TCG, SeaBIOS + iPXE ROM on e1000, -machine pc,graphics=off):
#   least-loaded  the client boots to the marker; the marker names the first alternate of the
#                 list the central logged for the client, which is not the busy one
#   fallback      the moment the central logs the client's list, the first alternate on it is
#                 killed (SIGKILL; the central still lists it for up to 3 intervals): the
#                 client falls back to the next entry and boots to a marker naming it; the
#                 killed alternate is restarted after the run
#   ovmf-nbp      OVMF (q35, virtio-net without option ROM, native PXE): proxy offer, UDP 4011,
#                 then the Rust NBP (nbp/, built here) reads bootherd/alternates.txt from the
#                 central, the config and boot files from the list's first alternate, and
#                 starts the kernel (initrd through LoadFile2): the marker names that first
#   ovmf-fallback the same with the list's first alternate killed as the list goes out: the
#                 NBP moves on to the second
#   ovmf-corrupt  the same, but the two alternates ahead of the busy one serve a vmlinuz with
#                 one byte changed: the NBP finds the SHA-256 mismatch on each and boots from
#                 the last of the list, the busy alt1, whose kernel is intact
#   ipxe-efi-corrupt  OVMF chainloads iPXE 2.0's EFI build (snponly.efi, built once from its
#                 release and cached) as its NBP; iPXE runs the list script, and the per-client
#                 scripts check sha256= (sha256sum --set): with the kernels of the two
#                 alternates ahead of the busy one corrupted as in ovmf-corrupt, iPXE rejects
#                 both and boots from the busy alt1
#   ovmf-central-dies  the central is killed (SIGKILL) the moment it has sent the NBP: the NBP
#                 gets its list from the backup central the PXE answer named (central2) and
#                 boots; the central is restarted after the run
#   aavmf-nbp     AAVMF (qemu-system-aarch64 virt, TCG) with the aarch64 Rust NBP: Debian's arm64
#                 kernel and busybox (from the arm64 archive: dpkg --add-architecture arm64)
#                 served as arm64/ on the alternates, with configs/arch-11
#   uboot-arm64   Debian's U-Boot for qemu_arm64 (u-boot-qemu) on virt, its stock distro boot:
#                 dnsmasq names the central and boot.scr.uimg to vendor class U-Boot*, the
#                 central's generated script sends it to the list's first alternate, whose
#                 per-client script (configs/arch-22: the arm64 set plus the virt machine's
#                 device tree, dumped from QEMU, at addr=0x48000000) boots it with booti
#   uboot-fallback  the same with the list's first alternate killed as the script goes out
#   uboot-arm32   Debian's U-Boot for qemu_arm (cortex-a15): Debian's armmp kernel (bootz) and
#                 armhf busybox as armhf/, configs/arch-21, U-Boot's own device tree
# The central serves the client nothing over TFTP but its NBP and list (iPXE:
# bootherd/alternates.ipxe; UEFI: bootherd-x64.efi and bootherd/alternates.txt). Each case runs
# BH_E2E_RUNS times (3) and prints the median seconds from VM start to the marker.
#
# Usage (root): tests/e2e/boot_linux.sh [CASE...]        default: every case but ipxe-efi-corrupt
# Environment: those of lab.sh (BH_E2E_KEEP, BH_E2E_NO_BUILD, BH_E2E_IPXE_ROM), and
# BH_E2E_RUNS (runs per case, 3), BH_E2E_LINUX_TIMEOUT (seconds per VM run, 300),
# BH_E2E_IPXE_SRC (an iPXE v2.0.0 source tree for ipxe-efi-corrupt; else it is cloned).
set -euo pipefail

# shellcheck source=tests/e2e/lab.sh
. "$(dirname "${BASH_SOURCE[0]}")/lab.sh"

CACHE=/var/cache/bootherd-e2e
RUNS=${BH_E2E_RUNS:-3}
LINUX_TIMEOUT=${BH_E2E_LINUX_TIMEOUT:-300}
ALL_CASES=(least-loaded fallback ovmf-nbp ovmf-fallback ovmf-corrupt aavmf-nbp ovmf-central-dies
    http-least-loaded http-fallback ovmf-http uboot-arm64 uboot-fallback uboot-arm32)
# Only when asked for: it builds iPXE from a source tree (BH_E2E_IPXE_SRC) or GitHub.
EXTRA_CASES=(ipxe-efi-corrupt)
NBP_FILES='bootherd-x64\.efi|bootherd/alternates\.txt' # what a UEFI client gets from the central
OVMF_CODE=/usr/share/OVMF/OVMF_CODE.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS.fd
NBP=$REPO/nbp/target/x86_64-unknown-uefi/release/bootherd-nbp.efi
NBP_AA64=$REPO/nbp/target/aarch64-unknown-uefi/release/bootherd-nbp.efi
AAVMF_CODE=/usr/share/AAVMF/AAVMF_CODE.fd
AAVMF_VARS=/usr/share/AAVMF/AAVMF_VARS.fd
ARM64=0     # 1 when an arm64 case runs (aavmf-nbp, uboot-*): arm64 boot set, NBP, firmware
ARMHF=0     # 1 when uboot-arm32 runs: the armhf boot set
BOOT_DIR="" # where the client's boot files are on the alternates ("arm64/" for AAVMF)
LAB_PACKAGES+=(busybox-static ovmf)
LAB_FILES+=(/bin/busybox "$OVMF_CODE" "$OVMF_VARS")

UBOOT_ARM64=/usr/lib/u-boot/qemu_arm64/u-boot.bin # Debian's u-boot-qemu
UBOOT_ARM32=/usr/lib/u-boot/qemu_arm/u-boot.bin
# The U-Boot VM beside -machine virt (the device tree depends on all of it: with firmware, virt
# has no pl061 GPIO for Linux, so a tree dumped without -bios makes the kernel crash).
UBOOT_ARM64_VM=(-cpu cortex-a57 -m 1024 -bios "$UBOOT_ARM64")
ALTS=(alt1 alt2 alt3)
declare -A ALT_ADDRESS=([alt1]=10.77.0.11 [alt2]=10.77.0.12 [alt3]=10.77.0.13)
declare -A ALT_CAPACITY=([alt1]=16000000 [alt2]=10000000 [alt3]=6000000)
INTERVAL_MS=500
BUSY=alt1
BUSY_WORKERS=3
BALLAST_MIB=256
MARKER="BOOTHERD-MARKER"
DNSMASQ_ALONE_S=7.4 # the issue: dnsmasq alone (PXE + TFTP) to the marker, iPXE BIOS, this host
IPXE2_TAG=v2.0.0    # the first iPXE release whose EFI builds have sha256sum --set
IPXE2_EFI=$CACHE/ipxe-$IPXE2_TAG-snponly-x86_64.efi

# ---------------------------------------------------------------------------------------------
# The boot set

# The kernel package linux-image-FLAVOUR (of Debian architecture ARCH) depends on now.
kernel_package() {
    apt-cache depends "linux-image-$2:$1" 2>/dev/null |
        awk -v a="$1" -v f="$2" '$1 == "Depends:" && $2 ~ "^linux-image-.*-" f "(:" a ")?$" { sub(/:.*/, "", $2); print $2; exit }'
}

# The current Debian kernel for ARCH (amd64, arm64; armhf's flavour is armmp), from the cache
# or downloaded once with apt-get; prints its path.
kernel_image() {
    local arch=$1 pkg="" tmp cached
    local flavour=${arch/armhf/armmp}
    mkdir -p "$CACHE"
    pkg=$(kernel_package "$arch" "$flavour") || true
    if [ -n "$pkg" ] && [ -s "$CACHE/vmlinuz-${pkg#linux-image-}" ]; then
        echo "$CACHE/vmlinuz-${pkg#linux-image-}"
        return
    fi
    tmp=$(mktemp -d /tmp/bh-e2e-kernel.XXXXXX)
    chown _apt "$tmp" 2>/dev/null || true # apt-get download drops to _apt
    if [ -z "$pkg" ] || ! (cd "$tmp" && apt-get download -qq "$pkg" >&2); then
        # Stale package lists name a kernel the mirror no longer has: refresh once.
        "$(dirname "${BASH_SOURCE[0]}")/../../.ci/apt-update" >&2
        pkg=$(kernel_package "$arch" "$flavour") || true
        [ -n "$pkg" ] && (cd "$tmp" && apt-get download -qq "$pkg" >&2) || pkg=""
    fi
    if [ -n "$pkg" ]; then
        dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
        cp "$tmp/x/boot/vmlinuz-${pkg#linux-image-}" "$CACHE/.vmlinuz.part"
        mv "$CACHE/.vmlinuz.part" "$CACHE/vmlinuz-${pkg#linux-image-}"
    fi
    rm -rf "$tmp"
    # Offline: the newest kernel cached by an earlier run.
    cached=$(find "$CACHE" -maxdepth 1 -name "vmlinuz-*-$flavour" -size +1M | sort -V | tail -n 1)
    [ -n "$cached" ] || die "no Debian kernel: apt-get download linux-image-*-$flavour failed and $CACHE is empty"
    echo "$cached"
}

# iPXE 2.0's EFI build that drives the NIC through the firmware (snponly.efi), built once and
# cached: from the iPXE source tree BH_E2E_IPXE_SRC (a checkout of $IPXE2_TAG), else from a clone
# of its release on GitHub.
ipxe2_efi() {
    local tmp src=${BH_E2E_IPXE_SRC:-}
    if [ ! -s "$IPXE2_EFI" ]; then
        tmp=$(mktemp -d /tmp/bh-e2e-ipxe.XXXXXX)
        if [ -z "$src" ]; then
            src=$tmp/ipxe
            git clone -q --depth 1 --branch "$IPXE2_TAG" https://github.com/ipxe/ipxe.git "$src" >&2 ||
                die "cannot clone iPXE $IPXE2_TAG (or give its source as BH_E2E_IPXE_SRC)"
        fi
        make -s -C "$src/src" -j "$(nproc)" bin-x86_64-efi/snponly.efi >&2 ||
            die "cannot build iPXE $IPXE2_TAG"
        mkdir -p "$CACHE"
        cp "$src/src/bin-x86_64-efi/snponly.efi" "$IPXE2_EFI.part"
        mv "$IPXE2_EFI.part" "$IPXE2_EFI"
        rm -rf "$tmp"
    fi
    echo "$IPXE2_EFI"
}

# build_initrd OUT [BUSYBOX]: a gzipped newc cpio with busybox-static (the host's, or the static
# BUSYBOX of another architecture) whose /init prints the marker and powers off.
build_initrd() {
    local busybox=${2:-/bin/busybox} dir applet
    dir=$(mktemp -d "$WORK/initramfs.XXXXXX")
    [[ $(ldd "$busybox" 2>&1) == *"not a dynamic executable"* ]] ||
        die "$busybox is not the static build (install busybox-static)"
    mkdir -p "$dir/bin" "$dir/dev" "$dir/proc"
    cp "$busybox" "$dir/bin/busybox"
    for applet in sh mount cat echo sleep poweroff; do ln -s busybox "$dir/bin/$applet"; done
    mknod -m 600 "$dir/dev/console" c 5 1 # the kernel opens it for init's stdio
    cat >"$dir/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
alt=none
for word in \$(cat /proc/cmdline); do
    case \$word in bootherd.alt=*) alt=\${word#bootherd.alt=} ;; esac
done
echo "$MARKER booted-from=\$alt"
sleep 1
poweroff -f
EOF
    chmod 755 "$dir/init"
    (cd "$dir" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) | gzip -9 >"$1"
}

# Debian's static busybox for ARCH (arm64, armhf), from the cache or downloaded once; prints
# its path.
foreign_busybox() {
    local tmp
    if [ ! -s "$CACHE/busybox-$1" ]; then
        tmp=$(mktemp -d /tmp/bh-e2e-busybox.XXXXXX)
        chown _apt "$tmp" 2>/dev/null || true
        (cd "$tmp" && apt-get download -qq "busybox-static:$1" >&2) || die "apt-get download busybox-static:$1"
        dpkg-deb -x "$tmp"/busybox-static_*_"$1".deb "$tmp/x"
        cp "$tmp/x/bin/busybox" "$CACHE/busybox-$1"
        rm -rf "$tmp"
    fi
    echo "$CACHE/busybox-$1"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# foreign_files ARCH: ARCH/vmlinuz and ARCH/initrd.img in the boot set: Debian's kernel and
# busybox for that architecture (arm64, armhf).
foreign_files() {
    mkdir -p "$WORK/bootset/$1"
    cp "$(kernel_image "$1")" "$WORK/bootset/$1/vmlinuz"
    build_initrd "$WORK/bootset/$1/initrd.img" "$(foreign_busybox "$1")"
}

# foreign_config ARCH NAME [LINE...]: configs/NAME booting ARCH/'s files (with their SHA-256) on
# the serial console ttyAMA0, with LINEs added.
foreign_config() {
    local dir=$WORK/bootset/$1 name=$2
    shift 2
    # shellcheck disable=SC2016 # ${alternate} is for the alternate to fill in
    printf '%s\n' "kernel ${dir##*/}/vmlinuz sha256=$(sha256 "$dir/vmlinuz")" \
        "initrd ${dir##*/}/initrd.img sha256=$(sha256 "$dir/initrd.img")" "$@" \
        'cmdline console=ttyAMA0 bootherd.alt=${alternate} quiet panic=-1' \
        >"$WORK/bootset/configs/$name"
}

# $WORK/bootset: vmlinuz, initrd.img, configs/default (with every file's SHA-256: the NBP
# checks them), and the ballast the busy loops fetch (sparse); every alternate's root is a
# hard-linked copy.
make_boot_set() {
    local set=$WORK/bootset kernel
    kernel=$(kernel_image amd64)
    mkdir -p "$set/configs"
    cp "$kernel" "$set/vmlinuz"
    build_initrd "$set/initrd.img"
    truncate -s "${BALLAST_MIB}M" "$set/ballast.bin"
    # shellcheck disable=SC2016 # ${alternate} is for the alternate to fill in
    printf '%s\n' "kernel vmlinuz sha256=$(sha256 "$set/vmlinuz")" \
        "initrd initrd.img sha256=$(sha256 "$set/initrd.img")" \
        'cmdline console=ttyS0 bootherd.alt=${alternate} quiet panic=-1' >"$set/configs/default"
    if [ "$ARM64" = 1 ]; then # arm64/: Debian's arm64 kernel and busybox, for AAVMF clients
        foreign_files arm64
        foreign_config arm64 arch-11
        # U-Boot arm64 boards (arch-22): the same, plus the device tree of QEMU's virt machine
        # as the U-Boot VM gets it, loaded where the config says (qemu_arm64 has no fdt_addr_r).
        qemu-system-aarch64 -nodefaults -machine "virt,dumpdtb=$set/arm64/virt.dtb" \
            "${UBOOT_ARM64_VM[@]}" >/dev/null 2>&1 || die "cannot dump the virt machine's device tree"
        foreign_config arm64 arch-22 \
            "fdt arm64/virt.dtb addr=0x48000000 sha256=$(sha256 "$set/arm64/virt.dtb")"
    fi
    if [ "$ARMHF" = 1 ]; then # armhf/: Debian's armmp kernel (a zImage) and busybox, for U-Boot
        foreign_files armhf
        foreign_config armhf arch-21
    fi
    BOOT_BYTES=$(($(stat -c %s "$set/vmlinuz") + $(stat -c %s "$set/initrd.img")))
    say "boot set: $(basename "$kernel") ($(stat -c %s "$set/vmlinuz") bytes), initrd.img" \
        "($(stat -c %s "$set/initrd.img") bytes)"
}

# ---------------------------------------------------------------------------------------------
# The lab

start_alternates() {
    local id
    for id in "${ALTS[@]}"; do
        # Blocks up to 8 KiB for the ballast loops (a sixth of the packets to send: less CPU
        # taken from the VM); iPXE asks for 1432 bytes all the same.
        setup_alternate "$id" "${ALT_ADDRESS[$id]}" "interval_ms = $INTERVAL_MS" \
            "link_bytes_per_sec = ${ALT_CAPACITY[$id]}" "rate_limit = true" \
            "[tftp]" "max_blksize = 8192"
        cp -al "$WORK/bootset/." "$WORK/$id/boot/"
        run_alternate "$id"
    done
}

# BUSY_WORKERS loops fetching the ballast from the busy alternate, from the central's host.
start_busy() {
    local i
    for ((i = 1; i <= BUSY_WORKERS; i++)); do
        # shellcheck disable=SC2016 # expanded by the inner shell
        spawn "$NS_CENTRAL" "$WORK/busy$i.log" bash -c \
            'sleep "$1"; while :; do "$2" fetch -q --blksize 8192 --windowsize 4 -o /dev/null "$3" || sleep 1; done' \
            busy $((2 * (i - 1))) "$BOOTHERD" "tftp://${ALT_IP[$BUSY]}:69/ballast.bin"
    done
    wait_for "$BUSY busy and ordered last" 60 - lab_settled
}

# The central ranks every alternate, and the busy one, with transfers running, last.
lab_settled() {
    local status id
    status=$(central_status) || return 1
    for id in "${ALTS[@]}"; do
        grep -Eq "\{\"id\":\"$id\",\"addresses\":\[[^]]*\],\"score_us\":[0-9]" <<<"$status" || return 1
    done
    grep -Eq "\{\"id\":\"$BUSY\",[^}]*\"active\":[1-9]" <<<"$status" || return 1
    [ "$(central_order "$status" | awk '{ print $NF }')" = "$BUSY" ]
}

# The ids of the central's order, best first, from its status.
central_order() {
    grep -Eo '"id":"[^"]+","addresses":\[[^]]*\],"score_us":[0-9]+' <<<"$1" |
        sed -E 's/"id":"([^"]+)".*"score_us":([0-9]+)/\2 \1/' | sort -n | awk '{ print $2 }' | xargs
}

lab_up() {
    make_boot_set
    make_bridge
    # Not the ballast: 16 MB/s of it would fill the disk.
    start_capture not \( host "$CENTRAL_IP" and host "${ALT_ADDRESS[$BUSY]}" and udp and not port 7411 \)
    start_dhcp
    CENTRAL_EXTRA="typical_boot_bytes = $BOOT_BYTES"
    PXE_EXTRA="backup_centrals = [\"$CENTRAL2_IP\"]"
    start_central # iPXE clients get the generated list; UEFI ones the Rust NBP:
    start_backup_central
    if [ "${BH_E2E_NO_BUILD:-0}" != 1 ] || [ ! -e "$NBP" ]; then
        rustup target add x86_64-unknown-uefi >/dev/null
        (cd "$REPO" && cargo build --quiet --release --manifest-path nbp/Cargo.toml \
            --target x86_64-unknown-uefi) || die "cannot build the NBP"
    fi
    cp "$NBP" "$WORK/central/nbp/bootherd-x64.efi"
    if [ "$ARM64" = 1 ]; then
        rustup target add aarch64-unknown-uefi >/dev/null
        (cd "$REPO" && cargo build --quiet --release --manifest-path nbp/Cargo.toml \
            --target aarch64-unknown-uefi) || die "cannot build the aarch64 NBP"
        cp "$NBP_AA64" "$WORK/central/nbp/bootherd-aa64.efi"
    fi
    start_alternates
    start_busy
    say "lab up in $WORK: dhcp $DHCP_IP, central $CENTRAL_IP (backup $CENTRAL2_IP)," \
        "alt1-3 ${ALT_ADDRESS[alt1]}-13" \
        "(capacities 16/10/6 MB/s), $BUSY busy; central order: $(central_order "$(central_status)")"
}

# ---------------------------------------------------------------------------------------------
# Checks on a run

LIST_RE="central: ($CLIENT_PEER): list ([a-z0-9]+) "

# The ids of a central list line, best first.
list_ids() { sed -E 's/.*: list //; s/ \([^)]*\)//g; s/,//g' <<<"$1"; }

# Lines written since the VM started to alternate ID's log that concern the client at IP.
# BOOT_PROTO (tftp, or http in the HTTP cases) is what the client fetched its files with.
client_lines() { source_text "$1" | grep -F "${BOOT_PROTO:-tftp}: $2:" || true; }

# The checks common to every case; LIST and BOOTED are the list's ids and the marker's; the
# central may have served only the files matching ALLOWED (by default the iPXE list).
check_common() {
    local ip=$1 list=$2 booted=$3 allowed=${4:-bootherd/alternates\.ipxe} lines bad ok=0
    lines=$(source_text central | grep -E "tftp: $CLIENT_PEER: " || true)
    bad=$(grep -Ev ": ($allowed):? |: (sent|sending) ($allowed) " <<<"$lines" || true)
    if [ -z "$bad" ] && grep -Eq ': sent (bootherd/alternates\.|boot\.scr\.uimg )' <<<"$lines"; then ok=1; fi
    check_line "$ok" "central: sent the client its NBP and list and nothing else over TFTP" || {
        printf '     %s\n' "$bad"
        return 1
    }
    ok=0
    lines=$(client_lines "$booted" "$ip")
    if grep -q ": sent ${BOOT_DIR}vmlinuz " <<<"$lines" &&
        grep -q ": sent ${BOOT_DIR}initrd\.img " <<<"$lines"; then ok=1; fi
    check_line "$ok" "$booted: sent the client ${BOOT_DIR}vmlinuz and initrd.img" || return 1
    ok=1
    [ "$(awk '{ print $NF }' <<<"$list")" = "$BUSY" ] || ok=0
    check_line "$ok" "the busy $BUSY is last on the list ($list)"
}

after_least_loaded() {
    local list_line=${VM_LINE[0]} marker=${VM_LINE[MARKER_I]} ip="" list first booted id rc=0
    [[ $list_line =~ $LIST_RE ]] && ip=${BASH_REMATCH[1]%:*}
    list=$(list_ids "$list_line")
    first=${list%% *}
    booted=${marker##*booted-from=}
    check_line "$([ "$booted" = "$first" ] && echo 1 || echo 0)" \
        "the marker names the list's first, $first (booted from $booted)" || rc=1
    check_line "$([ "$first" != "$BUSY" ] && echo 1 || echo 0)" \
        "the first, $first, is not the busy $BUSY" || rc=1
    for id in "${ALTS[@]}"; do
        [ "$id" = "$booted" ] || [ -z "$(client_lines "$id" "$ip")" ] ||
            check_line 0 "$id served the client too" || rc=1
    done
    check_common "$ip" "$list" "$booted" "${CENTRAL_FILES:-bootherd/alternates\.ipxe}" || rc=1
    return $rc
}

after_fallback() {
    local list_line=${VM_LINE[0]} marker=${VM_LINE[MARKER_I]} ip="" list first second booted killed
    local rc=0 killed_line
    [[ $list_line =~ $LIST_RE ]] && ip=${BASH_REMATCH[1]%:*}
    list=$(list_ids "$list_line")
    read -r first second _ <<<"$list"
    booted=${marker##*booted-from=}
    killed_line=$(cat "$WORK/killed" 2>/dev/null || true)
    killed=${killed_line##* }
    check_line "$([ "$killed" = "$first" ] && echo 1 || echo 0)" \
        "killed the list's first, ${killed:-nothing}, $(seconds_since "$VM_START_US" "$killed_line") s after VM start" ||
        rc=1
    check_line "$([ -z "$(client_lines "$first" "$ip")" ] && echo 1 || echo 0)" \
        "$first: the client met it dead (no request from the client in its log)" || rc=1
    check_line "$([ "$booted" = "$second" ] && echo 1 || echo 0)" \
        "the marker names the list's second, $second (booted from $booted)" || rc=1
    check_common "$ip" "$list" "$booted" "${CENTRAL_FILES:-bootherd/alternates\.ipxe}" || rc=1
    KILLED=$killed
    return $rc
}

# ---------------------------------------------------------------------------------------------
# Cases

# arm_killer_on REGEX KILL: a background watcher of the central's log that, at the first new
# line matching REGEX, runs the function KILL (BASH_REMATCH holds the match; it kills something
# and prints what) and notes "TIME killed WHAT" in $WORK/killed (a bootherd-style time stamp).
arm_killer_on() {
    local from
    from=$(($(wc -l <"$WORK/central.log") + 1))
    rm -f "$WORK/killed"
    (
        exec < <(exec tail -n "+$from" -s 0.02 -F "$WORK/central.log" 2>/dev/null)
        tail_pid=$!
        trap 'kill "$tail_pid" 2>/dev/null; exit 0' TERM
        while IFS= read -r line; do
            [[ $line =~ $1 ]] || continue
            what=$("$2")
            printf '%s killed %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$what" >"$WORK/killed"
            break
        done
        kill "$tail_pid" 2>/dev/null
    ) &
    KILLER_PID=$!
    PIDS+=("$KILLER_PID")
}

# The first alternate on the list just logged.
kill_first_alternate() {
    kill -9 "${ALT_PID[${BASH_REMATCH[2]}]}"
    echo "${BASH_REMATCH[2]}"
}

# Arms a watcher that SIGKILLs the first alternate of the next list the central logs.
arm_killer() { arm_killer_on "$LIST_RE" kill_first_alternate; }

# expect_alternate_side ARCH: what any boot asks of an alternate, the config (default or
# arch-ARCH) and the kernel; KERNEL_I is the kernel's expectation.
expect_alternate_side() {
    expect "an alternate: sent the client its boot config" alternates \
        "alternate: $CLIENT_PEER: boot config configs/(default|arch-$1)"
    KERNEL_I=${#EXP_LABEL[@]}
    expect "an alternate: sent ${BOOT_DIR}vmlinuz" alternates \
        "${BOOT_PROTO:-tftp}: $CLIENT_PEER: sent ${BOOT_DIR}vmlinuz "
}

# The expectations of a Linux boot; the list line is expectation 0, MARKER_I the marker.
expect_linux_boot() {
    reset_expectations
    EXP_MAIN_WHAT="marker"
    expect "central: logged the client's list" central "$LIST_RE"
    expect "central: proxy offer to $CLIENT_MAC (arch 0, iPXE) naming bootherd/alternates.ipxe" \
        central "pxe: Proxy $CLIENT_MAC \(arch 0, iPXE.*boot file bootherd/alternates\.ipxe"
    expect "central: TFTP sent bootherd/alternates.ipxe" central \
        "tftp: $CLIENT_PEER: sent bootherd/alternates\.ipxe "
    expect "serial: the list script ran" serial "bootherd: trying [a-z0-9]+ at "
    if [ "$1" = fallback ]; then
        expect "serial: the first alternate did not answer" serial \
            "bootherd: [a-z0-9]+ at tftp://[0-9.:]+ did not answer"
    fi
    expect_alternate_side 0
    expect "an alternate: sent initrd.img" alternates "${BOOT_PROTO:-tftp}: $CLIENT_PEER: sent initrd\.img "
    MARKER_I=${#EXP_LABEL[@]}
    expect_main "serial: the kernel's /init printed the marker" serial "$MARKER booted-from=[a-z0-9]+"
}

boot_linux_vm() {
    wait_for "lab settled ($BUSY busy and last, every alternate ranked)" 60 - lab_settled
    boot_vm "$1" "$LINUX_TIMEOUT" -machine pc,graphics=off -m 256 -boot n \
        -device "e1000,netdev=net0,mac=$CLIENT_MAC,romfile=$IPXE_ROM"
}

declare -A TIMES LIST_AT KERNEL_AT
# Notes the times of a passing run of case CASE: the marker, the list, the kernel sent.
note_times() {
    [ "$VM_OK" = 1 ] || return 0
    TIMES[$1]+="$VM_SECONDS "
    LIST_AT[$1]+="$(seconds_since "$VM_START_US" "${VM_LINE[0]}") "
    KERNEL_AT[$1]+="$(seconds_since "$VM_START_US" "${VM_LINE[KERNEL_I]}") "
}
case_least_loaded() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        expect_linux_boot least-loaded
        AFTER_VM=after_least_loaded
        boot_linux_vm "least-loaded-$run"
        note_times least-loaded
    done
}

case_fallback() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        expect_linux_boot fallback
        AFTER_VM=after_fallback KILLED=""
        arm_killer
        boot_linux_vm "fallback-$run"
        stop_pid "$KILLER_PID"
        note_times fallback
        restore_killed
    done
}

# Brings the alternate the killer stopped back for the next run.
restore_killed() {
    [ -e "$WORK/killed" ] || return 0
    KILLED=$(awk '{ print $NF }' "$WORK/killed")
    stop_pid "${ALT_PID[$KILLED]}" KILL
    wait_for "$KILLED stale in the central's table" 10 - not_ranked "$KILLED"
    run_alternate "$KILLED"
}

# expect_nbp_boot least-loaded|fallback [ARCH NBP]: the expectations of a UEFI boot through the
# Rust NBP (fallback: the first alternate is dead); ARCH 7 and bootherd-x64 by default.
expect_nbp_boot() {
    local arch=${2:-7} nbp=${3:-bootherd-x64}
    reset_expectations
    EXP_MAIN_WHAT="marker"
    expect "central: logged the client's list" central "$LIST_RE"
    expect "central: proxy offer to $CLIENT_MAC (arch $arch) naming $nbp.efi" central \
        "pxe: Proxy $CLIENT_MAC \(arch $arch, uuid.*boot file $nbp\.efi"
    expect "central: discovery (4011) answer naming $nbp.efi" central \
        "pxe: Discovery $CLIENT_MAC \(arch $arch, uuid.*boot file $nbp\.efi"
    expect "central: TFTP sent the Rust NBP" central "tftp: $CLIENT_PEER: sent $nbp\.efi "
    expect "serial: the NBP read the list" serial "bootherd: alternate list \("
    case $1 in
    fallback)
        expect "serial: the NBP moved past the dead first alternate" serial \
            "bootherd: [a-z0-9]+ at [0-9.:]+: .*trying the next"
        ;;
    corrupt)
        expect "serial: the NBP found a kernel whose SHA-256 does not match" serial \
            "bootherd: [a-z0-9]+ at [0-9.:]+: ${BOOT_DIR}vmlinuz: SHA-256 mismatch; trying the next"
        ;;
    esac
    expect_alternate_side "$arch"
    expect "serial: the NBP started the kernel" serial "bootherd: starting the kernel"
    MARKER_I=${#EXP_LABEL[@]}
    expect_main "serial: the kernel's /init printed the marker" serial "$MARKER booted-from=[a-z0-9]+"
}

boot_ovmf_vm() {
    cp "$OVMF_VARS" "$WORK/ovmf-vars.fd"
    wait_for "lab settled ($BUSY busy and last, every alternate ranked)" 60 - lab_settled
    boot_ovmf_vm_now "$1"
}

boot_ovmf_vm_now() {
    boot_vm "$1" "$LINUX_TIMEOUT" -machine q35 -m 512 \
        -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" \
        -drive "if=pflash,format=raw,file=$WORK/ovmf-vars.fd" \
        -device "virtio-net-pci,netdev=net0,mac=$CLIENT_MAC,romfile=,bootindex=1"
}

case_ovmf_nbp() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        expect_nbp_boot least-loaded
        AFTER_VM=after_least_loaded CENTRAL_FILES=$NBP_FILES
        boot_ovmf_vm "ovmf-nbp-$run"
        CENTRAL_FILES=""
        note_times ovmf-nbp
    done
}

case_aavmf_nbp() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        BOOT_DIR=arm64/
        expect_nbp_boot least-loaded 11 bootherd-aa64
        AFTER_VM=after_least_loaded CENTRAL_FILES='bootherd-aa64\.efi|bootherd/alternates\.txt'
        cp "$AAVMF_VARS" "$WORK/aavmf-vars.fd"
        wait_for "lab settled ($BUSY busy and last, every alternate ranked)" 60 - lab_settled
        VM_QEMU=qemu-system-aarch64 boot_vm "aavmf-nbp-$run" "$LINUX_TIMEOUT" \
            -machine virt -cpu cortex-a57 -m 1024 \
            -drive "if=pflash,format=raw,readonly=on,file=$AAVMF_CODE" \
            -drive "if=pflash,format=raw,file=$WORK/aavmf-vars.fd" \
            -device "virtio-net-pci,netdev=net0,mac=$CLIENT_MAC,romfile=,bootindex=1"
        CENTRAL_FILES="" BOOT_DIR=""
        note_times aavmf-nbp
    done
}

# expect_uboot_boot least-loaded|fallback ARCH: the expectations of U-Boot's network boot
# (distro boot's `dhcp ${scriptaddr} boot.scr.uimg`): the central's generated script, then the
# per-client script (configs/arch-ARCH: 22 arm64, with a device tree; 21 32-bit ARM) and boot
# files from an alternate (fallback: past the dead first one).
expect_uboot_boot() {
    reset_expectations
    EXP_MAIN_WHAT="marker"
    expect "central: logged the client's list" central "$LIST_RE"
    expect "central: TFTP sent boot.scr.uimg" central "tftp: $CLIENT_PEER: sent boot\.scr\.uimg "
    expect "serial: the list script ran" serial "bootherd: trying [a-z0-9]+ at "
    if [ "$1" = fallback ]; then
        expect "serial: the first alternate did not answer" serial \
            "bootherd: [a-z0-9]+ at [0-9.:]+ did not boot"
    fi
    expect_alternate_side "$2"
    if [ "$2" = 22 ]; then
        expect "an alternate: sent the device tree ${BOOT_DIR}virt.dtb" alternates \
            "tftp: $CLIENT_PEER: sent ${BOOT_DIR}virt\.dtb "
    fi
    expect "serial: the per-client script started the kernel" serial \
        "bootherd: starting ${BOOT_DIR}vmlinuz"
    MARKER_I=${#EXP_LABEL[@]}
    expect_main "serial: the kernel's /init printed the marker" serial "$MARKER booted-from=[a-z0-9]+"
}

# uboot_case NAME least-loaded|fallback arm64|armhf: RUNS boots of Debian's U-Boot for
# qemu_arm64 or qemu_arm.
uboot_case() {
    local run vm
    if [ "$3" = arm64 ]; then
        vm=(qemu-system-aarch64 -machine virt "${UBOOT_ARM64_VM[@]}")
    else
        vm=(qemu-system-arm -machine virt -cpu cortex-a15 -m 1024 -bios "$UBOOT_ARM32")
    fi
    for ((run = 1; run <= RUNS; run++)); do
        BOOT_DIR=$3/
        expect_uboot_boot "$2" "$([ "$3" = arm64 ] && echo 22 || echo 21)"
        AFTER_VM=after_$2 KILLED="" CENTRAL_FILES='boot\.scr\.uimg'
        AFTER_VM=${AFTER_VM/-/_}
        wait_for "lab settled ($BUSY busy and last, every alternate ranked)" 60 - lab_settled
        if [ "$2" = fallback ]; then arm_killer; fi
        VM_QEMU=${vm[0]} boot_vm "$1-$run" "$LINUX_TIMEOUT" "${vm[@]:1}" \
            -device "virtio-net-pci,netdev=net0,mac=$CLIENT_MAC,romfile="
        if [ "$2" = fallback ]; then stop_pid "$KILLER_PID"; fi
        CENTRAL_FILES="" BOOT_DIR=""
        note_times "$1"
        if [ "$2" = fallback ]; then restore_killed; fi
    done
}

case_uboot_arm64() { uboot_case uboot-arm64 least-loaded arm64; }
case_uboot_fallback() { uboot_case uboot-fallback fallback arm64; }
case_uboot_arm32() { uboot_case uboot-arm32 least-loaded armhf; }

case_ovmf_fallback() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        expect_nbp_boot fallback
        AFTER_VM=after_fallback KILLED="" CENTRAL_FILES=$NBP_FILES
        arm_killer
        boot_ovmf_vm "ovmf-fallback-$run"
        stop_pid "$KILLER_PID"
        CENTRAL_FILES=""
        note_times ovmf-fallback
        restore_killed
    done
}

# corrupt_kernel ID: alternate ID serves a vmlinuz with one byte changed, same size (its own
# file: the roots are hard links of one boot set).
corrupt_kernel() {
    local f=$WORK/$1/boot/${BOOT_DIR}vmlinuz byte
    cp "$f" "$f.bad"
    byte=$(od -An -tu1 -j 4096 -N 1 "$f" | tr -d ' ')
    # shellcheck disable=SC2059 # the format is the byte
    printf "\\$(printf '%03o' $((byte ^ 0xff)))" | dd of="$f.bad" bs=1 seek=4096 conv=notrunc status=none
    mv "$f.bad" "$f"
}

restore_kernel() { ln -f "$WORK/bootset/${BOOT_DIR}vmlinuz" "$WORK/$1/boot/${BOOT_DIR}vmlinuz"; }

after_corrupt() {
    local list_line=${VM_LINE[0]} marker=${VM_LINE[MARKER_I]} ip="" list booted last mismatches rc=0
    [[ $list_line =~ $LIST_RE ]] && ip=${BASH_REMATCH[1]%:*}
    list=$(list_ids "$list_line")
    last=$(awk '{ print $NF }' <<<"$list")
    booted=${marker##*booted-from=}
    mismatches=$(source_text serial | grep -c ": ${BOOT_DIR}vmlinuz: SHA-256 mismatch; trying the next" || true)
    check_line "$([ "$mismatches" = 2 ] && echo 1 || echo 0)" \
        "serial: two mismatches, one per corrupted alternate ($mismatches)" || rc=1
    check_line "$([ "$booted" = "$last" ] && [ "$last" = "$BUSY" ] && echo 1 || echo 0)" \
        "the marker names the list's last, the intact $BUSY (booted from $booted)" || rc=1
    check_common "$ip" "$list" "$booted" "$NBP_FILES" || rc=1
    return $rc
}

case_ovmf_corrupt() {
    local run id
    for id in "${ALTS[@]}"; do [ "$id" = "$BUSY" ] || corrupt_kernel "$id"; done
    for ((run = 1; run <= RUNS; run++)); do
        expect_nbp_boot corrupt
        AFTER_VM=after_corrupt
        boot_ovmf_vm "ovmf-corrupt-$run"
        note_times ovmf-corrupt
    done
    for id in "${ALTS[@]}"; do [ "$id" = "$BUSY" ] || restore_kernel "$id"; done
}

after_ipxe_corrupt() {
    local list_line=${VM_LINE[0]} marker=${VM_LINE[MARKER_I]} ip="" list booted last mismatches rc=0
    [[ $list_line =~ $LIST_RE ]] && ip=${BASH_REMATCH[1]%:*}
    list=$(list_ids "$list_line")
    last=$(awk '{ print $NF }' <<<"$list")
    booted=${marker##*booted-from=}
    mismatches=$(source_text serial | grep -c "bootherd: vmlinuz: SHA-256 mismatch" || true)
    check_line "$([ "$mismatches" = 2 ] && echo 1 || echo 0)" \
        "serial: iPXE found two mismatches, one per corrupted alternate ($mismatches)" || rc=1
    check_line "$([ "$booted" = "$last" ] && [ "$last" = "$BUSY" ] && echo 1 || echo 0)" \
        "the marker names the list's last, the intact $BUSY (booted from $booted)" || rc=1
    # iPXE looks for autoexec.ipxe beside itself first.
    check_common "$ip" "$list" "$booted" 'ipxe\.efi|autoexec\.ipxe:|bootherd/alternates\.ipxe' || rc=1
    return $rc
}

# with_central_line LINE|-: restarts the central with LINE added to its [pxe] section (the
# last one), or with the line added before removed (-).
with_central_line() {
    local config=$WORK/central/central.toml
    if [ "$1" = - ]; then
        sed -i '/^# case$/,$d' "$config"
    else
        printf '# case\n%s\n' "$1" >>"$config"
    fi
    stop_pid "$CENTRAL_PID"
    run_central
}

case_ipxe_efi_corrupt() {
    local run id
    cp "$IPXE2_EFI" "$WORK/central/nbp/ipxe.efi"
    with_central_line 'boot_efi_x64 = "ipxe.efi"'
    for id in "${ALTS[@]}"; do [ "$id" = "$BUSY" ] || corrupt_kernel "$id"; done
    for ((run = 1; run <= RUNS; run++)); do
        reset_expectations
        EXP_MAIN_WHAT="marker"
        expect "central: logged the client's list" central "$LIST_RE"
        expect "central: discovery (4011) answer naming ipxe.efi" central \
            "pxe: Discovery $CLIENT_MAC \(arch 7, uuid.*boot file ipxe\.efi"
        expect "central: TFTP sent iPXE" central "tftp: $CLIENT_PEER: sent ipxe\.efi "
        expect "central: proxy offer to iPXE naming bootherd/alternates.ipxe" central \
            "pxe: Proxy $CLIENT_MAC \(arch 7, iPXE.*boot file bootherd/alternates\.ipxe"
        expect "serial: the list script ran" serial "bootherd: trying [a-z0-9]+ at "
        expect "serial: iPXE found a kernel whose SHA-256 does not match" serial \
            "bootherd: vmlinuz: SHA-256 mismatch"
        expect_alternate_side 7
        MARKER_I=${#EXP_LABEL[@]}
        expect_main "serial: the kernel's /init printed the marker" serial "$MARKER booted-from=[a-z0-9]+"
        AFTER_VM=after_ipxe_corrupt
        boot_ovmf_vm "ipxe-efi-corrupt-$run"
        note_times ipxe-efi-corrupt
    done
    for id in "${ALTS[@]}"; do [ "$id" = "$BUSY" ] || restore_kernel "$id"; done
    with_central_line -
}

kill_central() {
    kill -9 "$CENTRAL_PID"
    echo central
}

after_central_dies() {
    local list_line=${VM_LINE[0]} marker=${VM_LINE[MARKER_I]} ip="" list first booted rc=0
    [[ $list_line =~ $LIST_RE ]] && ip=${BASH_REMATCH[1]%:*}
    list=$(list_ids "$list_line")
    first=${list%% *}
    booted=${marker##*booted-from=}
    check_line "$([ -s "$WORK/killed" ] && echo 1 || echo 0)" \
        "killed the central $(seconds_since "$VM_START_US" "$(cat "$WORK/killed" 2>/dev/null)") s after VM start, once it had sent the NBP" ||
        rc=1
    check_line "$(source_text central | grep -Eq "$LIST_RE" && echo 0 || echo 1)" \
        "the central died before any list went out" || rc=1
    check_line "$([ "$booted" = "$first" ] && echo 1 || echo 0)" \
        "the marker names the first of the backup's list, $first (booted from $booted)" || rc=1
    check_line "$(client_lines "$booted" "$ip" | grep -q ": sent vmlinuz " && echo 1 || echo 0)" \
        "$booted: sent the client vmlinuz" || rc=1
    return $rc
}

case_ovmf_central_dies() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        reset_expectations
        EXP_MAIN_WHAT="marker"
        expect "backup central: logged the client's list" central2 "$LIST_RE"
        expect "central: TFTP sent the Rust NBP" central "tftp: $CLIENT_PEER: sent bootherd-x64\.efi "
        expect "serial: the NBP found the central dead" serial \
            "bootherd: central $CENTRAL_IP: .*trying the next"
        expect "serial: the NBP read the backup's list" serial \
            "bootherd: alternate list \([0-9]+ ms, central $CENTRAL2_IP\)"
        expect_alternate_side 7
        expect "serial: the NBP started the kernel" serial "bootherd: starting the kernel"
        MARKER_I=${#EXP_LABEL[@]}
        expect_main "serial: the kernel's /init printed the marker" serial "$MARKER booted-from=[a-z0-9]+"
        AFTER_VM=after_central_dies
        cp "$OVMF_VARS" "$WORK/ovmf-vars.fd"
        wait_for "lab settled ($BUSY busy and last, every alternate ranked)" 60 - lab_settled
        # The central dies the moment it has sent the NBP.
        arm_killer_on ": sent bootherd-x64\\.efi " kill_central
        boot_ovmf_vm_now "ovmf-central-dies-$run"
        stop_pid "$KILLER_PID"
        note_times ovmf-central-dies
        stop_pid "$CENTRAL_PID" KILL
        run_central
    done
}

not_ranked() { ! central_ranks "$1"; }

# ---------------------------------------------------------------------------------------------
# HTTP cases: the alternates serve HTTP on HTTP_PORT too (restarted with it for these cases,
# without it after them); the list offers http:// first.

HTTP_PORT=8080
IPXE_EFI=/usr/lib/ipxe/ipxe.efi # Debian's iPXE EFI build: what OVMF's HTTP boot starts

# set_http on|off: restarts every alternate with (or without) http_listen.
set_http() {
    local id config
    for id in "${ALTS[@]}"; do
        config=$WORK/$id/alternate.toml
        sed -i '/^http_listen = /d' "$config"
        [ "$1" = off ] || sed -i "/^id = /a http_listen = \"${ALT_ADDRESS[$id]}:$HTTP_PORT\"" "$config"
        stop_pid "${ALT_PID[$id]}"
        wait_for "$id gone from the central's order" 15 - not_ranked "$id"
        run_alternate "$id"
    done
}

# http_blocked on|off: no alternate's HTTP answers (a silent HTTP service, as from a dead or
# firewalled one; TFTP lives): a routing rule throws away everything sent from the HTTP port,
# SYN-ACKs included.
http_blocked() {
    local id action=add
    [ "$1" = on ] || action=del
    for id in "${ALTS[@]}"; do
        ip -n "bh-e2e-$id" rule "$action" priority 100 ipproto tcp sport "$HTTP_PORT" blackhole
    done
}

case_http_least_loaded() {
    local run
    set_http on
    for ((run = 1; run <= RUNS; run++)); do
        BOOT_PROTO=http
        expect_linux_boot least-loaded
        expect "serial: the list script chained over http:// first" serial \
            "bootherd: trying [a-z0-9]+ at http://[0-9.]+:$HTTP_PORT"
        AFTER_VM=after_least_loaded
        boot_linux_vm "http-least-loaded-$run"
        BOOT_PROTO=""
        note_times http-least-loaded
    done
    set_http off
}

case_http_fallback() {
    local run
    set_http on
    http_blocked on
    for ((run = 1; run <= RUNS; run++)); do
        expect_linux_boot least-loaded
        expect "serial: the first alternate's HTTP did not answer" serial \
            "bootherd: [a-z0-9]+ at http://[0-9.]+:$HTTP_PORT did not answer"
        expect "serial: then its TFTP was tried" serial "bootherd: trying [a-z0-9]+ at tftp://"
        AFTER_VM=after_least_loaded
        boot_linux_vm "http-fallback-$run"
        note_times http-fallback
    done
    http_blocked off
    set_http off
}

# OVMF's HTTP boot (PXE switched off in the firmware, so that HTTPv4 is its first network
# boot option): the central's proxy offer names http://BEST:8080/ipxe.efi; iPXE then asks
# the central as usual and boots over HTTP.
case_ovmf_http() {
    local run id
    for id in "${ALTS[@]}"; do cp "$IPXE_EFI" "$WORK/$id/boot/ipxe.efi"; done
    with_central_line 'boot_http_x64 = "ipxe.efi"'
    set_http on
    for ((run = 1; run <= RUNS; run++)); do
        reset_expectations
        EXP_MAIN_WHAT="marker"
        BOOT_PROTO=http
        expect "central: logged the client's list" central "$LIST_RE"
        expect "central: HTTP boot offer naming ipxe.efi on an alternate" central \
            "pxe: Proxy $CLIENT_MAC \(arch 16, .*boot file http://[0-9.]+:$HTTP_PORT/ipxe\.efi"
        expect "an alternate: sent ipxe.efi over HTTP" alternates "http: $CLIENT_PEER: sent ipxe\.efi "
        expect "central: proxy offer to iPXE naming bootherd/alternates.ipxe" central \
            "pxe: Proxy $CLIENT_MAC \(arch 7, iPXE.*boot file bootherd/alternates\.ipxe"
        expect "serial: the list script ran" serial "bootherd: trying [a-z0-9]+ at http://"
        expect_alternate_side 7
        expect "an alternate: sent initrd.img" alternates "http: $CLIENT_PEER: sent initrd\.img "
        MARKER_I=${#EXP_LABEL[@]}
        expect_main "serial: the kernel's /init printed the marker" serial "$MARKER booted-from=[a-z0-9]+"
        AFTER_VM=after_ovmf_http
        cp "$OVMF_VARS" "$WORK/ovmf-vars.fd"
        wait_for "lab settled ($BUSY busy and last, every alternate ranked)" 60 - lab_settled
        boot_vm "ovmf-http-$run" "$LINUX_TIMEOUT" -machine q35 -m 512 \
            -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" \
            -drive "if=pflash,format=raw,file=$WORK/ovmf-vars.fd" \
            -fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=no \
            -fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=no \
            -fw_cfg name=opt/org.tianocore/IPv6Support,string=no \
            -device "virtio-net-pci,netdev=net0,mac=$CLIENT_MAC,romfile=,bootindex=1"
        BOOT_PROTO=""
        note_times ovmf-http
    done
    set_http off
    with_central_line -
    for id in "${ALTS[@]}"; do rm -f "$WORK/$id/boot/ipxe.efi"; done
}

# The HTTP boot URL named the alternate the central put first, not the busy one; the boot
# went by the list as in least-loaded.
after_ovmf_http() {
    local offer url_ip id rc=0
    offer=$(source_text central | grep -E "pxe: Proxy $CLIENT_MAC \(arch 16" | head -n 1)
    url_ip=$(sed -E 's|.*boot file http://([0-9.]+):.*|\1|' <<<"$offer")
    for id in "${ALTS[@]}"; do [ "${ALT_ADDRESS[$id]}" = "$url_ip" ] && break; done
    check_line "$([ "$id" != "$BUSY" ] && echo 1 || echo 0)" \
        "the HTTP boot URL names $id at $url_ip, not the busy $BUSY" || rc=1
    after_least_loaded || rc=1
    return $rc
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

main() {
    local cases=("$@") c times
    [ ${#cases[@]} -gt 0 ] || cases=("${ALL_CASES[@]}")
    for c in "${cases[@]}"; do
        declare -F "case_${c//-/_}" >/dev/null || die "unknown case $c (cases: ${ALL_CASES[*]} ${EXTRA_CASES[*]})"
    done
    if [[ " ${cases[*]} " == *" uboot-"* ]]; then
        LAB_PACKAGES+=(u-boot-qemu)
        LAB_FILES+=("$UBOOT_ARM64" "$UBOOT_ARM32")
        # The site's DHCP server names the central and its U-Boot script to U-Boot clients
        # (vendor class U-Boot.armv8 and the like), as the README's U-Boot section says.
        DHCP_EXTRA=(--dhcp-vendorclass=set:uboot,U-Boot
            "--dhcp-boot=tag:uboot,boot.scr.uimg,,$CENTRAL_IP")
    fi
    if [[ " ${cases[*]} " == *" uboot-arm32 "* ]]; then
        ARMHF=1
        # Debian's armhf kernel and busybox come from the armhf archive.
        if ! dpkg --print-foreign-architectures | grep -qx armhf; then
            dpkg --add-architecture armhf
            "$(dirname "${BASH_SOURCE[0]}")/../../.ci/apt-update"
        fi
    fi
    if [[ " ${cases[*]} " =~ \ (aavmf-nbp|uboot-arm64|uboot-fallback)\  ]]; then
        ARM64=1
        LAB_PACKAGES+=(qemu-system-arm qemu-efi-aarch64)
        LAB_FILES+=("$AAVMF_CODE" "$AAVMF_VARS")
        # Debian's arm64 kernel and busybox come from the arm64 archive.
        if ! dpkg --print-foreign-architectures | grep -qx arm64; then
            dpkg --add-architecture arm64
            "$(dirname "${BASH_SOURCE[0]}")/../../.ci/apt-update"
        fi
    fi
    if [[ " ${cases[*]} " == *" ipxe-efi-corrupt "* ]]; then
        LAB_PACKAGES+=(git make gcc perl liblzma-dev)
    fi
    if [[ " ${cases[*]} " == *" ovmf-http "* ]]; then
        LAB_PACKAGES+=(ipxe)
        LAB_FILES+=("$IPXE_EFI")
    fi
    lab_main linux
    if [[ " ${cases[*]} " == *" ipxe-efi-corrupt "* ]]; then
        ipxe2_efi >/dev/null
        say "iPXE $IPXE2_TAG EFI build: $IPXE2_EFI"
    fi
    lab_up
    for c in "${cases[@]}"; do "case_${c//-/_}"; done
    say "== seconds from VM start to the marker (dnsmasq alone: $DNSMASQ_ALONE_S s, iPXE BIOS, from the issue)"
    for c in "${cases[@]}"; do
        times=${TIMES[$c]:-}
        if [ -n "$times" ]; then
            say "   $c: median $(median "$times") s of $(wc -w <<<"$times") passing runs ($(xargs <<<"$times"));" \
                "medians: list fetched at $(median "${LIST_AT[$c]}") s, kernel sent at" \
                "$(median "${KERNEL_AT[$c]}") s"
        else
            say "   $c: no passing run"
        fi
    done
    if [ "$FAILURES" -gt 0 ]; then
        say "FAIL: $FAILURES of $((${#cases[@]} * RUNS)) runs"
        exit 1
    fi
    say "PASS: all $((${#cases[@]} * RUNS)) runs of ${#cases[@]} cases"
}

main "$@"
