//! Simulated boot clients against servers that are busy, slow, dead or silent, on loopback:
//! busy is never taken for dead, dead costs at most about a second, and a client whose central
//! dies after the PXE step gets its list from a backup central.
//!
//! The servers run in this process: bootherd's TFTP server with static lists and configs, the
//! PXE responder, and a relay that delays or swallows what a server sends.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bootherd::alternate::ConfigSource;
use bootherd::bootclient::{boot, BootRecord, ClientOptions, Identity, ListSource, PxeSteps};
use bootherd::pxe::responder::PxeConfig;
use bootherd::pxe::server::{Binding, Interface, PxeServer, PxeSettings};
use bootherd::tftp::server::{Server, ServerConfig};
use bootherd::tftp::source::{DirSource, FileSource, Overlay};
use common::{pattern, TempDir};

/// Serves `source` on `listen` from a thread of its own; returns the bound address.
fn serve(
    listen: SocketAddr,
    source: impl FileSource + 'static,
    max_transfers: usize,
) -> SocketAddr {
    let config = ServerConfig {
        listen,
        max_transfers,
        ..ServerConfig::default()
    };
    let server = Server::bind(config, Arc::new(source)).unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || smol::block_on(server.run()));
    addr
}

/// Bytes of the test kernel: small, so that a boot's time is mostly what fallbacks cost.
const KERNEL_LEN: usize = 50_000;

/// A directory with a boot set: a kernel and a config naming it with its SHA-256.
fn boot_set(dir: &Path) {
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    let kernel = pattern(KERNEL_LEN, 3);
    std::fs::write(dir.join("vmlinuz"), &kernel).unwrap();
    let sum = bootherd::report::wire::hex(&bootherd::report::wire::sha256(&kernel));
    std::fs::write(
        dir.join("configs/default"),
        format!("kernel vmlinuz sha256={sum}\ncmdline bootherd.alt=${{alternate}}\n"),
    )
    .unwrap();
}

/// An alternate's TFTP service (configs and boot files) on `listen`.
fn alternate(dir: &Path, id: &str, listen: SocketAddr, max_transfers: usize) -> SocketAddr {
    let root = dir.join(id);
    boot_set(&root);
    let source = Overlay {
        first: ConfigSource::new(&root, id, listen),
        second: DirSource::new(&root).unwrap(),
    };
    serve(listen, source, max_transfers)
}

/// A central's TFTP service with a fixed list (`id address` lines), and `files` beside it.
fn central(dir: &Path, name: &str, listen: SocketAddr, list: &[(&str, String)]) -> SocketAddr {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("bootherd")).unwrap();
    let text: String = list.iter().map(|(id, a)| format!("{id} {a}\n")).collect();
    std::fs::write(root.join("bootherd/alternates.txt"), text).unwrap();
    std::fs::write(root.join("bootherd-x64.efi"), pattern(30_000, 9)).unwrap();
    serve(listen, DirSource::new(&root).unwrap(), 512)
}

fn any_port(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 0))
}

/// A port on loopback where nothing listens: requests get ICMP port unreachable.
fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// What the relay does with one transfer.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Drop the request: the server looks silent.
    swallow: bool,
    /// Hold the server's first answer back this long.
    first: Duration,
    /// Hold its second datagram back this long (a server that answered, then stalls).
    second: Duration,
}

const PASS: Behaviour = Behaviour {
    swallow: false,
    first: Duration::ZERO,
    second: Duration::ZERO,
};

/// A TFTP relay on `listen` in front of `upstream`: each request is forwarded from a socket of
/// its own (which the client takes for the server's transfer port), treated as `behaviour`
/// says for its file name.
fn relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    behaviour: impl Fn(&str) -> Behaviour + Send + 'static,
) -> SocketAddr {
    let socket = UdpSocket::bind(listen).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let (n, client) = socket.recv_from(&mut buf).unwrap();
            let name = buf[2..n].split(|&b| b == 0).next().unwrap_or_default();
            let how = behaviour(&String::from_utf8_lossy(name));
            if !how.swallow {
                let request = buf[..n].to_vec();
                std::thread::spawn(move || relay_transfer(client, upstream, &request, how));
            }
        }
    });
    addr
}

fn relay_transfer(client: SocketAddr, upstream: SocketAddr, request: &[u8], how: Behaviour) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.send_to(request, upstream).unwrap();
    let mut tid = None;
    let mut answers = 0;
    let mut buf = [0u8; 65536];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        if from == client {
            if let Some(tid) = tid {
                socket.send_to(&buf[..n], tid).unwrap();
            }
            continue;
        }
        tid = Some(from);
        answers += 1;
        match answers {
            1 => std::thread::sleep(how.first),
            2 => std::thread::sleep(how.second),
            _ => {}
        }
        socket.send_to(&buf[..n], client).unwrap();
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        windowsize: 4,
        ..ClientOptions::default()
    }
}

fn boot_once(central: SocketAddr, o: &ClientOptions) -> BootRecord {
    let started = std::time::Instant::now();
    let (result, fell_back) = smol::block_on(boot(
        &ListSource::Central(central),
        &Identity::numbered(1),
        o,
    ));
    let (alternate, bytes, error) = match result {
        Ok((alt, bytes)) => (Some(alt), bytes, None),
        Err(e) => (None, 0, Some(e)),
    };
    BootRecord {
        index: 1,
        started: Duration::ZERO,
        duration: started.elapsed(),
        alternate,
        fell_back,
        bytes,
        error,
    }
}

/// Boots once through a central whose fixed list is `list` (ids and addresses, best first).
fn boot_with_list(dir: &TempDir, list: &[(&str, SocketAddr)]) -> BootRecord {
    let list: Vec<(&str, String)> = list.iter().map(|(id, a)| (*id, a.to_string())).collect();
    let central = central(dir.path(), "central", any_port([127, 0, 0, 1]), &list);
    boot_once(central, &options())
}

/// Boots through a list of two alternates: "relayed", whose config transfer the relay treats
/// as `config` says (its other transfers pass), then a spare.
fn boot_via_relayed(dir: &TempDir, config: Behaviour) -> BootRecord {
    let relayed = alternate(dir.path(), "relayed", any_port([127, 0, 0, 1]), 512);
    let relayed = relay(any_port([127, 0, 0, 1]), relayed, move |name| {
        match name.starts_with("bootherd.cfg/") {
            true => config,
            false => PASS,
        }
    });
    let spare = alternate(dir.path(), "spare", any_port([127, 0, 0, 1]), 512);
    boot_with_list(dir, &[("relayed", relayed), ("spare", spare)])
}

#[test]
fn a_busy_alternate_that_stalls_after_answering_is_kept() {
    let dir = TempDir::new("busy");
    // Answers the config request at once, then takes 0.9 s for the data: a loaded server.
    let stalls = Behaviour {
        second: Duration::from_millis(900),
        ..PASS
    };
    let r = boot_via_relayed(&dir, stalls);
    assert_eq!(r.alternate.as_deref(), Some("relayed"), "{r:#?}");
    assert!(r.fell_back.is_empty(), "{r:#?}");
    assert_eq!(r.bytes, KERNEL_LEN as u64);
}

#[test]
fn a_slow_first_answer_is_kept() {
    let dir = TempDir::new("slow");
    let slow = Behaviour {
        first: Duration::from_millis(600),
        ..PASS
    };
    let r = boot_via_relayed(&dir, slow);
    assert_eq!(r.alternate.as_deref(), Some("relayed"), "{r:#?}");
    assert!(r.fell_back.is_empty(), "{r:#?}");
    assert!(r.duration >= Duration::from_millis(600), "{r:#?}");
}

#[test]
fn a_dead_alternate_costs_well_under_a_second() {
    let dir = TempDir::new("dead");
    let good = alternate(dir.path(), "good", any_port([127, 0, 0, 1]), 512);
    let r = boot_with_list(&dir, &[("dead", closed_port()), ("good", good)]);
    assert_eq!(r.alternate.as_deref(), Some("good"), "{r:#?}");
    assert_eq!(r.fell_back.len(), 1, "{r:#?}");
    assert!(r.fell_back[0].contains("unreachable"), "{r:#?}");
    // The whole boot, kernel included, takes less than silence would have cost alone.
    assert!(r.duration < Duration::from_secs(1), "{r:#?}");
}

#[test]
fn a_silent_alternate_costs_about_a_second() {
    let dir = TempDir::new("silent");
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = alternate(dir.path(), "good", any_port([127, 0, 0, 1]), 512);
    let r = boot_with_list(
        &dir,
        &[("silent", silent.local_addr().unwrap()), ("good", good)],
    );
    assert_eq!(r.alternate.as_deref(), Some("good"), "{r:#?}");
    assert_eq!(r.fell_back.len(), 1, "{r:#?}");
    assert!(r.fell_back[0].contains("no answer in 1000 ms"), "{r:#?}");
    assert!(
        r.duration >= Duration::from_secs(1) && r.duration < Duration::from_secs(3),
        "{r:#?}"
    );
}

#[test]
fn a_busy_error_moves_on_at_once() {
    let dir = TempDir::new("full");
    // No transfer slot at all: every request gets "server busy" at once.
    let full = alternate(dir.path(), "full", any_port([127, 0, 0, 1]), 0);
    let good = alternate(dir.path(), "good", any_port([127, 0, 0, 1]), 512);
    let r = boot_with_list(&dir, &[("full", full), ("good", good)]);
    assert_eq!(r.alternate.as_deref(), Some("good"), "{r:#?}");
    assert!(r.fell_back[0].contains("server busy"), "{r:#?}");
    assert!(r.duration < Duration::from_secs(1), "{r:#?}");
}

/// The PXE responder on 127.0.0.1, announcing `backups`; returns where to ask.
fn pxe(backups: &[Ipv4Addr]) -> PxeSteps {
    let settings = PxeSettings {
        responder: PxeConfig {
            backup_centrals: backups.to_vec(),
            ..PxeConfig::default()
        },
        proxy: true,
        interfaces: vec![Interface {
            binding: Binding::Address,
            address: Ipv4Addr::LOCALHOST,
        }],
        proxy_port: 0,
        discovery_port: 0,
    };
    let server = PxeServer::bind(&settings).unwrap();
    let addrs = server.local_addrs();
    let find = |service| addrs.iter().find(|(s, _)| *s == service).unwrap().1;
    let steps = PxeSteps {
        proxy: find(bootherd::pxe::responder::Service::Proxy),
        discovery: find(bootherd::pxe::responder::Service::Discovery),
    };
    std::thread::spawn(move || smol::block_on(server.run()));
    steps
}

#[test]
fn a_central_that_dies_after_the_pxe_step_hands_over_to_its_backup() {
    let dir = TempDir::new("central-dies");
    let alt = alternate(dir.path(), "alt1", any_port([127, 0, 0, 1]), 512);
    let list = [("alt1", alt.to_string())];
    let primary = central(dir.path(), "primary", any_port([127, 0, 0, 1]), &list);
    // The primary's TFTP as the client sees it: it serves the NBP, then goes silent.
    let primary = relay(any_port([127, 0, 0, 1]), primary, |name| Behaviour {
        swallow: name != "bootherd-x64.efi",
        ..PASS
    });
    // The backup serves TFTP on the same port of its own address, as PXE clients expect.
    let backup_ip = Ipv4Addr::new(127, 0, 0, 2);
    central(
        dir.path(),
        "backup",
        SocketAddr::new(backup_ip.into(), primary.port()),
        &list,
    );
    let o = ClientOptions {
        pxe: Some(pxe(&[backup_ip])),
        ..options()
    };
    let r = boot_once(primary, &o);
    assert_eq!(r.alternate.as_deref(), Some("alt1"), "{r:#?}");
    assert_eq!(
        r.fell_back,
        [format!(
            "central {primary}: bootherd/alternates.txt: no answer in 1000 ms"
        )]
    );
    // Without the announcement in the PXE answer, the boot fails.
    let alone = ClientOptions {
        pxe: Some(pxe(&[])),
        ..options()
    };
    let r = boot_once(primary, &alone);
    assert_eq!(r.error.as_deref(), Some("no central gave a list"), "{r:#?}");
}

#[test]
fn the_next_central_is_asked_when_no_alternate_of_the_list_serves() {
    let dir = TempDir::new("next-central");
    let dead = closed_port();
    let good = alternate(dir.path(), "good", any_port([127, 0, 0, 1]), 512);
    let stale = central(
        dir.path(),
        "stale",
        any_port([127, 0, 0, 1]),
        &[("dead", dead.to_string())],
    );
    let fresh = central(
        dir.path(),
        "fresh",
        any_port([127, 0, 0, 1]),
        &[("dead", dead.to_string()), ("good", good.to_string())],
    );
    let o = ClientOptions {
        backup_centrals: vec![closed_port(), fresh],
        ..options()
    };
    let r = boot_once(stale, &o);
    assert_eq!(r.alternate.as_deref(), Some("good"), "{r:#?}");
    // The dead alternate was tried once, not again from the second list.
    assert_eq!(r.fell_back.len(), 2, "{r:#?}");
    assert!(r.fell_back[0].starts_with("dead at "), "{r:#?}");
    assert!(r.fell_back[1].contains("unreachable"), "{r:#?}");
}

#[test]
fn backup_centrals_in_the_config_are_checked() {
    let dir = TempDir::new("config");
    std::fs::write(dir.path().join("k"), "00112233445566778899aabbccddeeff").unwrap();
    let parse = |value: &str| {
        let text = format!(
            "key_file = \"k\"\n[pxe]\ninterfaces = [\"- 127.0.0.1\"]\nbackup_centrals = {value}\n"
        );
        bootherd::config::Config::parse(&text, dir.path())
            .and_then(|c| c.central())
            .map(|c| c.pxe.unwrap().responder.backup_centrals)
    };
    assert_eq!(
        parse("[\"10.0.0.2\", \"10.0.0.3\"]").unwrap(),
        [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
    );
    let err = parse("[\"10.0.0.2:69\"]").unwrap_err();
    assert!(
        err.to_string().contains("pxe.backup_centrals") && err.to_string().contains("10.0.0.2:69"),
        "{err}"
    );
}

#[test]
fn the_central_ipxe_list_asks_its_backups_after_the_alternates() {
    let dir = TempDir::new("ipxe-list");
    std::fs::write(dir.path().join("k"), "00112233445566778899aabbccddeeff").unwrap();
    let port = closed_port().port();
    let text = format!(
        "key_file = \"k\"\n[central]\ntftp_listen = \"127.0.0.1:{port}\"\nreport_listen = \"127.0.0.1:0\"\n\
         [pxe]\ninterfaces = [\"- 127.0.0.1\"]\nproxy_port = 0\ndiscovery_port = 0\nbackup_centrals = [\"127.0.0.2\"]\n"
    );
    let config = bootherd::config::Config::parse(&text, dir.path())
        .and_then(|c| c.central())
        .unwrap();
    let central = bootherd::central::Central::bind(config).unwrap();
    let tftp = central.tftp_addr().unwrap();
    std::thread::spawn(move || smol::block_on(central.run(bootherd::lifecycle::Control::none())));
    let spec = bootherd::tftp::download::RequestSpec {
        path: "bootherd/alternates.ipxe".into(),
        blksize: None,
        windowsize: None,
        tsize: false,
    };
    let mut script = Vec::new();
    smol::block_on(bootherd::tftp::client::fetch(
        tftp,
        spec,
        bootherd::tftp::download::ClientRetransmit::default(),
        &mut script,
    ))
    .unwrap();
    let script = String::from_utf8(script).unwrap();
    assert!(
        script.contains(&format!(
            "chain --autofree --timeout 1000 tftp://127.0.0.2:{port}/bootherd/alternates.ipxe || "
        )),
        "{script}"
    );
}
