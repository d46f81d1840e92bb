//! The README's "Running a site" commands, taken from the README and run as written on the
//! site they describe: a central at 10.0.0.1 (interface eth0) and alternates at 10.0.0.11 and
//! 10.0.0.12, three network namespaces on one bridge. Needs root (network namespaces, ports
//! 67, 69 and 4011); without it the test fails, it does not skip.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bootherd, ip, uid, Daemon, Netns, TempDir};

/// The commands of the README's "Running a site" block, in order.
fn readme_site_commands() -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let section = readme
        .split("## Running a site")
        .nth(1)
        .expect("README has a \"Running a site\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("its first ```sh block");
    block
        .lines()
        .map(|line| line.split(" # ").next().unwrap_or(line).trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

/// From `bootherd status --json`: each alternate's id, addresses (as JSON) and whether it is
/// in the order (`"excluded":null`).
fn alternates(json: &str) -> Vec<(String, String, bool)> {
    json.split("{\"id\":\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().unwrap().to_string();
            let addresses = row
                .split("\"addresses\":")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .map(|list| format!("{list}]"))
                .unwrap_or_default();
            (id, addresses, row.contains("\"excluded\":null"))
        })
        .collect()
}

/// The three hosts of the README's site on one bridge (in a namespace of its own, so that
/// nothing touches the host's network), removed on drop.
struct Site {
    central: Netns,
    alternates: [Netns; 2],
    _switch: Netns,
}

impl Site {
    fn new() -> Site {
        let switch = Netns::new("site-sw");
        ip(&["-n", &switch.0, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch.0, "link", "set", "br0", "up"]);
        let host = |tag: &str, address: &str| {
            let ns = Netns::new(tag);
            let port = format!("{tag}-{}", std::process::id() % 10_000);
            ip(&[
                "link", "add", "eth0", "netns", &ns.0, "type", "veth", "peer", "name", &port,
                "netns", &switch.0,
            ]);
            ip(&["-n", &switch.0, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns.0, "addr", "add", address, "dev", "eth0"]);
            ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
            ns
        };
        Site {
            central: host("site-c", "10.0.0.1/24"),
            alternates: [
                host("site-a1", "10.0.0.11/24"),
                host("site-a2", "10.0.0.12/24"),
            ],
            _switch: switch,
        }
    }

    /// Where a README line runs: the central's host, unless it starts an alternate.
    fn host_of(&self, line: &str) -> &Netns {
        match line {
            l if l.contains("alternate.id=alt1") => &self.alternates[0],
            l if l.contains("alternate.id=alt2") => &self.alternates[1],
            _ => &self.central,
        }
    }
}

/// `sh -c LINE` on `host`, in `dir`, with the binary under test first on PATH.
fn shell(host: &Netns, dir: &Path, line: &str) -> Command {
    let bin_dir = Path::new(bootherd()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = host.command("sh");
    cmd.args(["-c", &format!("exec {line}")])
        .current_dir(dir)
        .env("PATH", path);
    cmd
}

/// A copy of `examples/` in a fresh directory, as a checkout has it.
fn checkout() -> TempDir {
    let dir = TempDir::new("site");
    let copy = Command::new("cp")
        .args(["-r", "examples"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copy.success());
    dir
}

#[test]
fn readme_site_steps_run_as_written() {
    assert_eq!(
        uid(std::process::id()),
        0,
        "this test builds network namespaces and binds ports 67, 69, 4011: run it as root"
    );
    let commands = readme_site_commands();
    let starts = |prefix: &str| commands.iter().filter(|c| c.starts_with(prefix)).count();
    assert_eq!(
        (
            starts("bootherd report keygen"),
            starts("bootherd alternate"),
            starts("bootherd status")
        ),
        (1, 2, 1),
        "{commands:#?}"
    );
    let dir = checkout();
    let site = Site::new();
    let mut daemons = Vec::new();
    for line in &commands {
        let host = site.host_of(line);
        let long_running = !line.contains("--check")
            && (line.starts_with("bootherd central") || line.starts_with("bootherd alternate"));
        if long_running {
            let daemon = Daemon::spawn_command(shell(host, dir.path(), line));
            daemon.addr_after("serving on ");
            daemons.push(daemon);
        } else {
            let out = shell(host, dir.path(), line)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success(), "{line}: {out:?}");
        }
    }
    // The key the steps made is the site's: the central answers status requests signed with it,
    // and both alternates report, each with its own address (not the other's).
    let ask = || {
        let line = "bootherd status --central 10.0.0.1:7411 --key-file examples/report.key --json";
        let out = shell(&site.central, dir.path(), line).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        alternates(&String::from_utf8_lossy(&out.stdout))
    };
    let start = Instant::now();
    let mut rows = ask();
    while rows.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        rows = ask();
    }
    assert_eq!(
        rows,
        [
            ("alt1".to_string(), "[\"10.0.0.11:69\"]".to_string(), true),
            ("alt2".to_string(), "[\"10.0.0.12:69\"]".to_string(), true),
        ]
    );
    drop(daemons);
    // The per-client boot configs the alternates serve are valid.
    for config in std::fs::read_dir("examples/boot/configs").unwrap() {
        let path = config.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            bootherd::formats::boot_config::parse(&text).is_ok(),
            "{}",
            path.display()
        );
    }
}
