#!/usr/bin/env bash
# Proof that the appliance builds run: each ARM binary under qemu-user prints its version, then
# an ARM central (proxyDHCP, list, NBP) and an ARM alternate serve a storm of x86 simulated
# clients on loopback, which check every boot file's SHA-256. Prints the alternate's RSS idle
# and with 50 transfers in flight, natively (x86 release build) and under qemu-user (where the
# emulator is counted too).
#
#   tests/arm/qemu_user.sh            # builds dist/ with cross/build if needed
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
for pkg in qemu-user-static libc6-armhf-cross; do
  dpkg -s "$pkg" >/dev/null 2>&1 || {
    $SUDO .ci/apt-update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static libc6-armhf-cross >/dev/null
    break
  }
done
[ -x dist/aarch64-unknown-linux-musl/bootherd ] && [ -x dist/armv7-unknown-linux-gnueabihf/bootherd ] ||
  cross/build aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf
cargo build --release --locked -q
HOST=$PWD/target/release/bootherd

LAB=$(mktemp -d /tmp/bootherd-arm-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$LAB"
}
trap cleanup EXIT

# A boot set with checksums, a key, and an NBP for the central to name.
mkdir -p "$LAB/boot/configs" "$LAB/nbp"
head -c 3000000 /dev/urandom > "$LAB/boot/vmlinuz"
head -c 1000000 /dev/urandom > "$LAB/boot/initrd.img"
head -c 50000 /dev/urandom > "$LAB/nbp/bootherd-x64.efi"
{
  echo "kernel vmlinuz sha256=$(sha256sum "$LAB/boot/vmlinuz" | cut -d' ' -f1)"
  echo "initrd initrd.img sha256=$(sha256sum "$LAB/boot/initrd.img" | cut -d' ' -f1)"
  echo 'cmdline bootherd.alt=${alternate}'
} > "$LAB/boot/configs/default"
"$HOST" report keygen > "$LAB/report.key"

# Waits for a log line and prints the address after MARKER in it.
addr_after() {
  local log=$1 marker=$2
  for _ in $(seq 1 300); do
    if grep -q "$marker" "$log"; then
      grep -m1 "$marker" "$log" | sed "s/.*$marker\([^ ,]*\).*/\1/"
      return
    fi
    sleep 0.1
  done
  echo "no '$marker' in $log:" >&2; cat "$log" >&2; return 1
}

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# run_arch NAME QEMU... : the whole check for one architecture.
run_arch() {
  local name=$1; shift
  local bin=$1; shift
  local qemu=("$@")
  echo "== $name: $("${qemu[@]}" "$bin" --version)"
  cat > "$LAB/central-$name.toml" <<CONF
key_file = "report.key"
[central]
tftp_listen = "127.0.0.1:0"
tftp_root = "nbp"
report_listen = "127.0.0.1:0"
typical_boot_bytes = 4000000
[pxe]
interfaces = ["- 127.0.0.1"]
proxy_port = 0
discovery_port = 0
CONF
  BOOTHERD_LOG=info "${qemu[@]}" "$bin" central --config "$LAB/central-$name.toml" 2> "$LAB/central-$name.log" &
  PIDS+=($!)
  local reports tftp proxy discovery
  reports=$(addr_after "$LAB/central-$name.log" "reports on ")
  tftp=$(addr_after "$LAB/central-$name.log" "TFTP on ")
  proxy=$(addr_after "$LAB/central-$name.log" "PXE Proxy on ")
  discovery=$(addr_after "$LAB/central-$name.log" "PXE Discovery on ")
  cat > "$LAB/alternate-$name.toml" <<CONF
key_file = "report.key"
[tftp]
max_transfers = 100
[alternate]
id = "$name-alt"
tftp_listen = "127.0.0.1:0"
root = "boot"
link_bytes_per_sec = 20000000
rate_limit = true
centrals = ["$reports"]
interval_ms = 500
CONF
  BOOTHERD_LOG=info "${qemu[@]}" "$bin" alternate --config "$LAB/alternate-$name.toml" 2> "$LAB/alternate-$name.log" &
  local alt=$!
  PIDS+=($alt)
  addr_after "$LAB/alternate-$name.log" "serving on " >/dev/null
  for _ in $(seq 1 50); do
    "$HOST" status --central "$reports" --key-file "$LAB/report.key" | grep "$name-alt .*s " >/dev/null && break
    sleep 0.2
  done
  sleep 1
  local idle
  idle=$(rss_kib "$alt")
  # 50 clients at once: the rate cap keeps their transfers in flight together.
  "$HOST" client --central "$tftp" --pxe "$proxy" --discovery "$discovery" --clients 50 > "$LAB/storm-$name.txt" &
  local storm=$!
  local peak=$idle
  while kill -0 "$storm" 2>/dev/null; do
    local now
    now=$(rss_kib "$alt" || echo 0)
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  wait "$storm" || { echo "FAIL $name: storm"; cat "$LAB/storm-$name.txt"; return 1; }
  cat "$LAB/storm-$name.txt"
  grep -q "50 clients: share $name-alt 50;.*0 failed" "$LAB/storm-$name.txt" || { echo "FAIL $name"; return 1; }
  grep -q "sent bootherd-x64.efi" "$LAB/central-$name.log" || { echo "FAIL $name: no NBP sent"; return 1; }
  echo "PASS $name: $name central + $name alternate booted 50 x86 clients, every file SHA-256 checked"
  echo "RSS $name alternate: idle $idle KiB, peak with 50 transfers $peak KiB"
}

cd "$LAB"
ROOT=$OLDPWD
# The host's own build first, as the baseline for the RSS figures.
run_arch native "$HOST"
run_arch aarch64 "$ROOT/dist/aarch64-unknown-linux-musl/bootherd" qemu-aarch64-static
run_arch armv7 "$ROOT/dist/armv7-unknown-linux-gnueabihf/bootherd" qemu-arm-static -L /usr/arm-linux-gnueabihf
