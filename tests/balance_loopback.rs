//! The central, alternates, report tool and simulated clients as real processes on loopback:
//! load steers the order, dead alternates drop out, backups agree, clients fall back.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bootherd::report::client::status;
use bootherd::report::wire::{Key, StatusAnswer};
use common::{bootherd, pattern, uid, Daemon, TempDir};

const KEY_HEX: &str = "5eed5eed5eed5eed00112233445566778899aabbccddeeff";

/// A directory with a key, a boot set and config files for the roles.
struct Site {
    dir: TempDir,
}

struct Central {
    daemon: Daemon,
    reports: SocketAddr,
    tftp: SocketAddr,
}

struct Alternate {
    daemon: Daemon,
    tftp: SocketAddr,
}

impl Site {
    fn new() -> Self {
        let dir = TempDir::new("site");
        let p = dir.path();
        std::fs::write(p.join("report.key"), KEY_HEX).unwrap();
        std::fs::create_dir_all(p.join("boot/configs")).unwrap();
        let kernel = pattern(1 << 20, 7);
        std::fs::write(p.join("boot/vmlinuz"), &kernel).unwrap();
        std::fs::write(p.join("boot/big.bin"), pattern(16 << 20, 8)).unwrap();
        let sum = bootherd::report::wire::hex(&bootherd::report::wire::sha256(&kernel));
        std::fs::write(
            p.join("boot/configs/default"),
            format!("kernel vmlinuz sha256={sum}\ncmdline bootherd.alt=${{alternate}}\n"),
        )
        .unwrap();
        Site { dir }
    }

    fn key(&self) -> Key {
        Key::new(&bootherd::report::wire::from_hex(KEY_HEX).unwrap()).unwrap()
    }

    fn write_config(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("key_file = \"report.key\"\n{body}")).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn central(&self, name: &str, extra: &str) -> Central {
        let config = self.write_config(
            &format!("{name}.toml"),
            &format!(
                "[central]\ntftp_listen = \"127.0.0.1:0\"\nreport_listen = \"127.0.0.1:0\"\ntypical_boot_bytes = 4000000\n{extra}"
            ),
        );
        let daemon = Daemon::spawn(&["central", "--config", &config]);
        let reports = daemon.addr_after("reports on ");
        let tftp = daemon.addr_after("TFTP on ");
        Central {
            daemon,
            reports,
            tftp,
        }
    }

    fn alternate(&self, id: &str, link: u64, centrals: &[&Central], interval_ms: u64) -> Alternate {
        let centrals: Vec<String> = centrals
            .iter()
            .map(|c| format!("\"{}\"", c.reports))
            .collect();
        let config = self.write_config(
            &format!("{id}.toml"),
            &format!(
                "[alternate]\nid = \"{id}\"\ntftp_listen = \"127.0.0.1:0\"\nroot = \"boot\"\nlink_bytes_per_sec = {link}\nrate_limit = true\ncentrals = [{}]\ninterval_ms = {interval_ms}\n",
                centrals.join(", ")
            ),
        );
        let daemon = Daemon::spawn(&["alternate", "--config", &config]);
        let tftp = daemon.addr_after("serving on ");
        Alternate { daemon, tftp }
    }

    fn status(&self, central: &Central) -> StatusAnswer {
        smol::block_on(status(
            central.reports,
            &self.key(),
            Duration::from_millis(500),
        ))
        .unwrap()
    }

    /// Included alternates, best first.
    fn order(&self, central: &Central) -> Vec<String> {
        self.status(central)
            .rows
            .into_iter()
            .filter(|r| r.score_us.is_some())
            .map(|r| r.report.alternate)
            .collect()
    }

    /// Polls until `check` holds on the order; returns how long that took.
    fn wait_order(
        &self,
        central: &Central,
        within: Duration,
        check: impl Fn(&[String]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let order = self.order(central);
            if check(&order) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "order still {order:?} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(bootherd()).args(args).output().unwrap()
}

#[test]
fn loaded_alternate_drops_behind_within_two_intervals() {
    let site = Site::new();
    let central = site.central("c", "");
    let interval = Duration::from_millis(500);
    let alt1 = site.alternate("alt1", 4_000_000, &[&central], 500);
    let _alt2 = site.alternate("alt2", 2_000_000, &[&central], 500);
    site.wait_order(&central, Duration::from_secs(5), |o| o == ["alt1", "alt2"]);
    // Real transfers load alt1: three clients fetch 16 MiB each at its 4 MB/s cap.
    let tftp = alt1.daemon.addr_after("serving on ");
    let url = format!("tftp://{tftp}/big.bin");
    let loaders: Vec<_> = (0..3)
        .map(|_| {
            Command::new(bootherd())
                .args(["fetch", &url, "-o", "/dev/null", "-q"])
                .spawn()
                .unwrap()
        })
        .collect();
    let took = site.wait_order(&central, interval * 2, |o| o == ["alt2", "alt1"]);
    eprintln!("alt1 dropped behind after {took:?}");
    for mut l in loaders {
        let _ = l.kill();
        let _ = l.wait();
    }
}

#[test]
fn dead_alternate_is_removed_within_three_intervals_and_leaving_at_once() {
    let site = Site::new();
    let central = site.central("c", "");
    let interval = Duration::from_millis(300);
    let alt1 = site.alternate("alt1", 4_000_000, &[&central], 300);
    let alt2 = site.alternate("alt2", 2_000_000, &[&central], 300);
    let _alt3 = site.alternate("alt3", 1_000_000, &[&central], 300);
    site.wait_order(&central, Duration::from_secs(5), |o| o.len() == 3);
    alt1.daemon.signal("KILL");
    let took = site.wait_order(&central, interval * 3 + Duration::from_millis(100), |o| {
        o == ["alt2", "alt3"]
    });
    eprintln!("killed alt1 left the order after {took:?}");
    let reasons = site.status(&central);
    let row = reasons
        .rows
        .iter()
        .find(|r| r.report.alternate == "alt1")
        .unwrap();
    assert_eq!(
        row.excluded.as_deref(),
        Some("stale: no report for 3 intervals")
    );
    // A clean stop sends "leaving": out at once, not after 3 intervals.
    alt2.daemon.signal("TERM");
    let took = site.wait_order(&central, interval, |o| o == ["alt3"]);
    eprintln!("alt2 left after {took:?}");
    // SIGUSR1 drains and undrains.
    let alt4 = site.alternate("alt4", 8_000_000, &[&central], 300);
    site.wait_order(&central, Duration::from_secs(5), |o| o == ["alt4", "alt3"]);
    alt4.daemon.signal("USR1");
    site.wait_order(&central, interval, |o| o == ["alt3"]);
    alt4.daemon.signal("USR1");
    site.wait_order(&central, interval, |o| o == ["alt4", "alt3"]);
}

#[test]
fn backup_central_shows_the_same_order() {
    let site = Site::new();
    let primary = site.central("primary", "");
    let backup = site.central("backup", "");
    let _alts: Vec<_> = [("a", 3_000_000), ("b", 9_000_000), ("c", 6_000_000)]
        .iter()
        .map(|(id, link)| site.alternate(id, *link, &[&primary, &backup], 300))
        .collect();
    site.wait_order(&primary, Duration::from_secs(5), |o| o == ["b", "c", "a"]);
    site.wait_order(&backup, Duration::from_secs(5), |o| o == ["b", "c", "a"]);
    drop(primary);
    // The primary is gone; the backup still answers with the same order.
    assert_eq!(site.order(&backup), ["b", "c", "a"]);
}

#[test]
fn clients_boot_and_fall_back_past_a_dead_alternate() {
    let site = Site::new();
    let central = site.central("c", "");
    // Far apart, so that CPU pressure (all alternates share this machine) cannot swap them.
    let alt1 = site.alternate("alt1", 500_000_000, &[&central], 1000);
    let _alt2 = site.alternate("alt2", 2_000_000, &[&central], 1000);
    site.wait_order(&central, Duration::from_secs(5), |o| o == ["alt1", "alt2"]);
    let tftp = central.tftp.to_string();
    let ok = run(&["client", "--central", &tftp, "--clients", "4", "-v"]);
    assert!(ok.status.success(), "{ok:?}");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("4 clients: share alt1"), "{text}");
    // Once alt1's report has settled the boots promised to it, alt1 dies; the central learns
    // that only after 3 intervals, so clients find out themselves.
    let start = Instant::now();
    while site
        .status(&central)
        .rows
        .iter()
        .any(|r| r.promised > 0 || r.report.active_transfers > 0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "promises never settled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        site.order(&central),
        ["alt1", "alt2"],
        "{:#?}",
        site.status(&central)
    );
    alt1.daemon.signal("KILL");
    let fell = run(&["client", "--central", &tftp, "--clients", "2", "-v"]);
    let text = String::from_utf8_lossy(&fell.stdout);
    assert!(fell.status.success(), "{fell:?}");
    let lists: Vec<String> = central
        .daemon
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("list"))
        .cloned()
        .collect();
    assert_eq!(
        text.matches("booted from alt2").count(),
        2,
        "{text}\n{lists:#?}"
    );
    assert_eq!(
        text.matches("after falling back from: alt1").count(),
        2,
        "{text}\n{lists:#?}"
    );
    assert!(central
        .daemon
        .wait_for("list alt1", Duration::from_secs(1))
        .is_some());
}

#[test]
fn clients_assign_themselves_without_a_central_and_name_their_failures() {
    let site = Site::new();
    let central = site.central("c", "");
    let alt1 = site.alternate("alt1", 500_000_000, &[&central], 1000);
    let alt2 = site.alternate("alt2", 500_000_000, &[&central], 1000);
    let list = format!("alt1={},alt2={}", alt1.tftp, alt2.tftp);
    let o = run(&[
        "client",
        "--alternates",
        &list,
        "--assign",
        "weights:3,1",
        "--clients",
        "8",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(text.contains("\"share\":{\"alt1\":6,\"alt2\":2}"), "{text}");
    assert!(text.contains("\"failed\":0,\"fell_back\":0"), "{text}");
    assert_eq!(text.matches("\"index\":").count(), 8, "{text}");
    // Nobody answers on alt2's port once it is gone: every client that starts there falls
    // back to alt1; with alt1 gone too, every client fails for the same reason, counted once.
    alt2.daemon.signal("KILL");
    let o = run(&["client", "--alternates", &list, "--clients", "4", "--json"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(text.contains("\"share\":{\"alt1\":4}"), "{text}");
    assert!(text.contains("\"fell_back\":2"), "{text}");
    alt1.daemon.signal("KILL");
    let all_alt1 = ["client", "--alternates", &list, "--assign", "weights:1,0"];
    let o = run(&[&all_alt1[..], &["--clients", "3", "--json"]].concat());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    let (_, failures) = text.split_once("\"failures\":[{\"reason\":\"").unwrap();
    let (reason, rest) = failures.split_once("\",\"count\":").unwrap();
    assert!(rest.starts_with("3}]"), "one reason for all three: {text}");
    // Without --json (and without -v) the reason is printed once, too.
    let o = run(&[&all_alt1[..], &["--clients", "3"]].concat());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches(reason).count(), 1, "{reason}: {text}");
    for bad in [
        &["client", "--alternates", &list, "--assign", "weights:1"][..],
        &["client", "--central", "127.0.0.1", "--blksize", "0"],
        &["client", "--central", "127.0.0.1", "--clients", "0"],
        &["client", "--central", "127.0.0.1", "--alternates", &list],
        &["demo", "--clients", "0"],
    ] {
        assert_eq!(run(bad).status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn report_tool_sends_watches_marks_and_queries() {
    let site = Site::new();
    let key_file = site.dir.path().join("report.key");
    let key_file = key_file.to_str().unwrap();
    // watch: one good report and one signed with another key.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let watcher = Command::new(bootherd())
        .args([
            "report",
            "watch",
            "--listen",
            &port.to_string(),
            "--key-file",
            key_file,
            "--count",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let to = port.to_string();
    let send = |key: &str, id: &str| {
        run(&[
            "report",
            "send",
            "--to",
            &to,
            "--key-file",
            key,
            "--id",
            id,
            "--address",
            "127.0.0.9:69",
            "--active",
            "3",
            "--remaining",
            "5000000",
        ])
    };
    assert!(send(key_file, "alt-ok").status.success());
    let other_key = site.dir.path().join("other.key");
    std::fs::write(&other_key, "ffffffffffffffffffffffffffffffff").unwrap();
    assert!(send(other_key.to_str().unwrap(), "alt-forged")
        .status
        .success());
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alt-ok seq ") && text.contains("active 3/512 remaining 5.0 MB"),
        "{text}"
    );
    assert!(
        text.contains("DROPPED") && text.contains("bad authentication tag"),
        "{text}"
    );
    assert!(!text.contains("alt-forged"), "{text}");

    // A central with an allow-list: a spoofed id attracts nobody.
    let central = site.central("c", "allow = [\"alt-a\", \"alt-b\"]\n");
    let reports = central.reports.to_string();
    for (id, link) in [
        ("alt-a", "1000000"),
        ("alt-b", "2000000"),
        ("intruder", "999999999999"),
    ] {
        let o = run(&[
            "report",
            "send",
            "--to",
            &reports,
            "--key-file",
            key_file,
            "--id",
            id,
            "--address",
            "127.0.0.9:69",
            "--link",
            link,
        ]);
        assert!(o.status.success());
    }
    site.wait_order(&central, Duration::from_secs(2), |o| {
        o == ["alt-b", "alt-a"]
    });
    let mark = |state: &str| {
        run(&[
            "report",
            "mark",
            "--central",
            &reports,
            "--key-file",
            key_file,
            "--alternate",
            "alt-b",
            "--state",
            state,
        ])
    };
    assert!(mark("down").status.success());
    site.wait_order(&central, Duration::from_secs(2), |o| o == ["alt-a"]);
    assert!(mark("congested=1000").status.success());
    site.wait_order(&central, Duration::from_secs(2), |o| {
        o == ["alt-a", "alt-b"]
    });
    assert!(mark("clear").status.success());
    site.wait_order(&central, Duration::from_secs(2), |o| {
        o == ["alt-b", "alt-a"]
    });
    let table = run(&["status", "--central", &reports, "--key-file", key_file]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table:?}");
    assert!(text.lines().nth(1).unwrap().contains("alt-b"), "{text}");
    assert!(text.contains("unknown alternate 1"), "{text}");
    let json = run(&[
        "status",
        "--central",
        &reports,
        "--key-file",
        key_file,
        "--json",
    ]);
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(
        text.starts_with("{\"central\":")
            && text.contains("\"id\":\"alt-b\"")
            && text.contains("\"unknown\":1"),
        "{text}"
    );
    let wrong = run(&[
        "status",
        "--central",
        &reports,
        "--key-file",
        other_key.to_str().unwrap(),
    ]);
    assert_eq!(
        wrong.status.code(),
        Some(1),
        "a central ignores requests with a bad tag"
    );
}

#[test]
fn broken_configs_exit_2_naming_line_and_key() {
    let site = Site::new();
    for (body, want) in [
        (
            "[central]\nordering = \"fastest\"\n",
            "bad.toml line 3: key `central.ordering`",
        ),
        (
            "[central]\nreport_port = 5\n",
            "bad.toml line 3: key `central.report_port`: unknown key",
        ),
        (
            "[alternate]\nid = \"a\"\nroot = \"boot\"\ncentrals = [\"127.0.0.1\"]\n",
            "bad.toml line 5: key `alternate.centrals`",
        ),
    ] {
        let path = site.write_config("bad.toml", body);
        let role = if body.contains("[central]") {
            "central"
        } else {
            "alternate"
        };
        let o = run(&[role, "--config", &path]);
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}\nwant {want}");
    }
    let path = site.dir.path().join("nokey.toml");
    std::fs::write(&path, "key_file = \"missing.key\"\n[central]\n").unwrap();
    let o = run(&["central", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("nokey.toml line 1: key `key_file`: cannot read"));
    let o = run(&[
        "central",
        "--config",
        path.to_str().unwrap(),
        "--set",
        "central.nope=1",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--set central.nope: unknown key"));
}

#[test]
fn demo_runs_and_load_ordering_wins() {
    let o = run(&["demo", "--clients", "30"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("load-ordered: share alt1"), "{text}");
    assert!(text.contains("0 fell back, 0 failed"), "{text}");
    let shares: Vec<&str> = text.lines().filter(|l| l.contains("share")).collect();
    assert!(
        shares[1].contains("share alt1 30;"),
        "static order sends everyone to alt1: {text}"
    );
    assert!(
        shares[0].contains("alt2 ") && shares[0].contains("alt3 "),
        "load ordering spreads the storm over all three: {text}"
    );
}

#[test]
fn pxe_steps_nbp_list_and_boot_files_on_loopback() {
    let site = Site::new();
    let nbp = site.dir.path().join("nbp");
    std::fs::create_dir_all(&nbp).unwrap();
    std::fs::write(nbp.join("bootherd-x64.efi"), pattern(40_000, 1)).unwrap();
    std::fs::write(nbp.join("bootherd-aa64.efi"), pattern(30_000, 2)).unwrap();
    let central = site.central(
        "c",
        "tftp_root = \"nbp\"\n[pxe]\ninterfaces = [\"- 127.0.0.1\"]\nproxy_port = 0\ndiscovery_port = 0\n",
    );
    let proxy = central.daemon.addr_after("PXE Proxy on ");
    let discovery = central.daemon.addr_after("PXE Discovery on ");
    let _alt1 = site.alternate("alt1", 20_000_000, &[&central], 300);
    let _alt2 = site.alternate("alt2", 10_000_000, &[&central], 300);
    site.wait_order(&central, Duration::from_secs(5), |o| o.len() == 2);
    // Junk and plain DHCP first: never answered, and the service goes on.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    probe.send_to(b"\x01\x01\x06garbage", proxy).unwrap();
    let mut plain = vec![0u8; 240];
    plain[..4].copy_from_slice(&[1, 1, 6, 0]);
    plain[236..240].copy_from_slice(&[99, 130, 83, 99]);
    plain.extend_from_slice(&[53, 1, 1, 255]);
    probe.send_to(&plain, proxy).unwrap();
    assert!(
        probe.recv_from(&mut [0u8; 600]).is_err(),
        "plain DHCP gets no answer"
    );
    let (tftp, proxy, discovery) = (
        central.tftp.to_string(),
        proxy.to_string(),
        discovery.to_string(),
    );
    for (arch, nbp_name) in [("7", "bootherd-x64.efi"), ("11", "bootherd-aa64.efi")] {
        let o = run(&[
            "client",
            "--central",
            &tftp,
            "--pxe",
            &proxy,
            "--discovery",
            &discovery,
            "--clients",
            "3",
            "--arch",
            arch,
            "-v",
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{o:?}");
        assert!(text.contains("3 clients: share alt"), "{text}");
        assert!(central
            .daemon
            .wait_for(&format!("sent {nbp_name}"), Duration::from_secs(2))
            .is_some());
    }
    let offer = central
        .daemon
        .wait_for(
            "pxe: Proxy 52:54:00:00:00:01 (arch 7",
            Duration::from_secs(1),
        )
        .unwrap();
    assert!(
        offer.contains("boot file bootherd-x64.efi -> 127.0.0.1:"),
        "{offer}"
    );
    assert!(central
        .daemon
        .wait_for(
            "pxe: Discovery 52:54:00:00:00:02 (arch 11",
            Duration::from_secs(1)
        )
        .is_some());
}

#[test]
fn central_drops_root_after_binding() {
    let site = Site::new();
    let root = uid(std::process::id()) == 0;
    let config = site.write_config(
        "drop.toml",
        "user = \"nobody\"\n[central]\ntftp_listen = \"127.0.0.1:0\"\nreport_listen = \"127.0.0.1:0\"\n",
    );
    if root {
        let daemon = Daemon::spawn(&["central", "--config", &config]);
        daemon.addr_after("reports on ");
        let line = daemon
            .wait_for("running as nobody", Duration::from_secs(2))
            .unwrap();
        assert!(line.contains("uid 65534"), "{line}");
        assert_eq!(uid(daemon.pid()), 65534, "real uid dropped");
    } else {
        // Without root there is nothing to drop to: a clear error, not a half-dropped process.
        let o = run(&["central", "--config", &config]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("cannot drop to nobody"));
    }
}
