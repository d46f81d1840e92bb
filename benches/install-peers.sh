#!/usr/bin/env bash
# Installs the TFTP peers that `cargo bench --bench tftp_peers` compares bootherd against,
# as /work/shared/peers.md describes. Idempotent: re-running skips what is already there.
#
#   tftpd-hpa, dnsmasq, atftp (client), iperf3   from apt (no service is started)
#   atftpd                                       extracted (conflicts with tftpd-hpa)
#                                                into $PEERS/atftpd
#   rs-tftpd (crate tftpd 1.0.0)                 cargo install into $PEERS/rs-tftpd
#
# Usage: sudo bash benches/install-peers.sh   (root; PEERS defaults to /opt/bootherd-peers)
set -euo pipefail

PEERS="${PEERS:-/opt/bootherd-peers}"
RS_TFTPD_VERSION="1.0.0"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers.sh: run as root (apt-get, dpkg-deb into $PEERS)" >&2
    exit 1
fi

# 1. Never let a package start its service (dnsmasq would grab port 53/69 system-wide).
#    This must be in place BEFORE apt-get runs.
if [ ! -x /usr/sbin/policy-rc.d ] || ! grep -q 'exit 101' /usr/sbin/policy-rc.d; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        "$(dirname "$0")/../.ci/apt-update"
        apt_updated=1
    fi
}

# 2. Packages from apt. dpkg-query tells what is installed already.
want=()
for pkg in tftpd-hpa dnsmasq atftp iperf3; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        want+=("$pkg")
    fi
done
if [ "${#want[@]}" -gt 0 ]; then
    apt_update_once
    apt-get install -y -qq --no-install-recommends "${want[@]}"
fi
# The packages may have registered services; make sure none is left running (by PID file).
for pidfile in /run/dnsmasq/dnsmasq.pid /run/tftpd-hpa.pid; do
    if [ -s "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
done

# 3. atftpd: conflicts with tftpd-hpa, so only extracted, never installed.
if [ ! -x "$PEERS/atftpd/usr/sbin/atftpd" ]; then
    apt_update_once
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    (cd "$scratch" && apt-get download -qq atftpd)
    mkdir -p "$PEERS/atftpd"
    dpkg-deb -x "$scratch"/atftpd_*.deb "$PEERS/atftpd"
    rm -rf "$scratch"
    trap - EXIT
fi

# 4. rs-tftpd: the `tftpd` crate, pinned.
if [ ! -x "$PEERS/rs-tftpd/bin/tftpd" ]; then
    cargo install --locked tftpd --version "$RS_TFTPD_VERSION" --root "$PEERS/rs-tftpd" \
        || cargo install tftpd --version "$RS_TFTPD_VERSION" --root "$PEERS/rs-tftpd"
fi

echo "peers ready:"
echo "  tftpd-hpa  $(command -v in.tftpd)"
echo "  dnsmasq    $(command -v dnsmasq)"
echo "  atftp      $(command -v atftp)"
echo "  iperf3     $(command -v iperf3)"
echo "  atftpd     $PEERS/atftpd/usr/sbin/atftpd"
echo "  rs-tftpd   $PEERS/rs-tftpd/bin/tftpd"
