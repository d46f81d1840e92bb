//! `bootherd client` against a central it must find: `--central` with a name or without a
//! port (port 69, names resolved as in `bootherd fetch`), and `--pxe` off loopback (a central
//! in one network namespace, the clients in another, joined by a veth pair). Every namespace
//! is the test's own, so port 69 and the PXE ports are free.

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use common::{ip, site_config as config, small_site, Daemon, Netns};

/// Runs `bootherd client ARGS --json` in `ns` until it boots one client from alt1 (the
/// alternate may take a report interval or two to be listed), for up to 10 s.
fn boots_from_alt1(ns: &Netns, args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns
            .bootherd()
            .arg("client")
            .args(args)
            .arg("--json")
            .env("BOOTHERD_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            assert!(text.contains("\"booted\":1"), "{text}");
            assert!(text.contains("\"alternate\":\"alt1\""), "{text}");
            return;
        }
        assert!(Instant::now() < deadline, "client {args:?}: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `bootherd ROLE --config CONFIG` in `ns`.
fn role(ns: &Netns, role: &str, config: &str) -> Daemon {
    let mut cmd = ns.bootherd();
    cmd.args([role, "--config", config]);
    Daemon::spawn_command(cmd)
}

#[test]
fn central_by_name_and_without_a_port_is_port_69() {
    let dir = small_site("client69", 50_000);
    let ns = Netns::new("client69");
    // Where `localhost` goes first is up to the resolver (127.0.0.1 or ::1): the central
    // listens there.
    let local = ("localhost", 69).to_socket_addrs().unwrap().next().unwrap();
    let central = config(
        &dir,
        "central.toml",
        &format!("[central]\ntftp_listen = \"{local}\"\nreport_listen = \"127.0.0.1:7411\"\n"),
    );
    let central = role(&ns, "central", &central);
    central.addr_after("reports on ");
    let alternate = config(
        &dir,
        "alt1.toml",
        "[alternate]\nid = \"alt1\"\ntftp_listen = \"127.0.0.11:6901\"\nroot = \"boot\"\ncentrals = [\"127.0.0.1:7411\"]\ninterval_ms = 200\n",
    );
    let _alternate = role(&ns, "alternate", &alternate);
    let literal = match local {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    boots_from_alt1(&ns, &["--central", "localhost"]);
    boots_from_alt1(&ns, &["--central", &literal]);
}

#[test]
fn pxe_steps_reach_a_central_in_another_namespace() {
    let dir = small_site("pxe-veth", 50_000);
    std::fs::create_dir_all(dir.path().join("nbp")).unwrap();
    std::fs::write(
        dir.path().join("nbp/bootherd-x64.efi"),
        common::pattern(20_000, 3),
    )
    .unwrap();
    let server = Netns::new("pxe-srv");
    let clients = Netns::new("pxe-cli");
    let peer = "bhc";
    ip(&[
        "-n", &server.0, "link", "add", "bhs", "type", "veth", "peer", "name", peer, "netns",
        &clients.0,
    ]);
    ip(&["-n", &server.0, "addr", "add", "10.77.0.1/24", "dev", "bhs"]);
    ip(&["-n", &server.0, "link", "set", "bhs", "up"]);
    ip(&["-n", &clients.0, "addr", "add", "10.77.0.2/24", "dev", peer]);
    ip(&["-n", &clients.0, "link", "set", peer, "up"]);
    let central = config(
        &dir,
        "central.toml",
        "[central]\ntftp_root = \"nbp\"\ntftp_listen = \"0.0.0.0:69\"\nreport_listen = \"10.77.0.1:7411\"\n[pxe]\ninterfaces = [\"bhs 10.77.0.1\"]\n",
    );
    let central = role(&server, "central", &central);
    central.addr_after("PXE Proxy on ");
    let alternate = config(
        &dir,
        "alt1.toml",
        "[alternate]\nid = \"alt1\"\ntftp_listen = \"10.77.0.1:6901\"\nroot = \"boot\"\ncentrals = [\"10.77.0.1:7411\"]\ninterval_ms = 200\n",
    );
    let _alternate = role(&server, "alternate", &alternate);
    // Proxy offer, boot-server discovery, the NBP, the list and the boot files, all over
    // the veth pair (the default ports: 67, 4011, 69).
    boots_from_alt1(&clients, &["--central", "10.77.0.1", "--pxe", "10.77.0.1"]);
}
