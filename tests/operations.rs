//! Running the roles as a site does: keys that are never weak, config checks and what a
//! mistake prints, logs under systemd, reloads and stops by signal, unreadable boot files, junk
//! floods, and the fetch tool's failures. Over loopback, reading exit codes, `status` answers
//! and the packets clients see.

mod common;

use std::fs::{File, Permissions};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bootherd::report::client::status;
use bootherd::report::wire::{Key, StatusAnswer, StatusRow};
use common::{bootherd, pattern, uid, Daemon, TempDir, TftpServer};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff0011223344556677";

/// A directory with a key (mode 600), boot files and configs for the roles.
struct Lab {
    dir: TempDir,
}

/// A role running as a child process.
struct Role {
    daemon: Daemon,
    /// Its report listener (central) or TFTP address (alternate).
    addr: SocketAddr,
}

impl Lab {
    fn new() -> Lab {
        let dir = TempDir::new("ops");
        let lab = Lab { dir };
        lab.write_key(KEY_HEX);
        std::fs::create_dir_all(lab.path("boot/configs")).unwrap();
        std::fs::write(lab.path("boot/kernel"), pattern(3 << 20, 11)).unwrap();
        std::fs::write(lab.path("boot/configs/default"), "kernel kernel\n").unwrap();
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_key(&self, hex: &str) {
        std::fs::write(self.path("report.key"), hex).unwrap();
        std::fs::set_permissions(self.path("report.key"), Permissions::from_mode(0o600)).unwrap();
    }

    fn key(&self) -> Key {
        bootherd::config::read_key(&self.path("report.key")).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `bootherd ARGS` in the lab directory; killed (and the test failed) if it runs for more
    /// than 20 s, as a server started by mistake would.
    fn run(&self, args: &[&str]) -> Output {
        let mut child = Command::new(bootherd())
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("bootherd {args:?} still runs after 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().unwrap()
    }

    fn central_config(&self, name: &str, central: &str) -> PathBuf {
        self.write(
            name,
            &format!("key_file = \"report.key\"\n[central]\ntftp_listen = \"127.0.0.1:0\"\nreport_listen = \"127.0.0.1:0\"\n{central}"),
        )
    }

    /// `bootherd ROLE --config CONFIG`, once it has logged the address after `marker`.
    fn start(&self, role: &str, config: PathBuf, marker: &str) -> Role {
        let daemon = Daemon::spawn(&[role, "--config", config.to_str().unwrap()]);
        let addr = daemon.addr_after(marker);
        Role { daemon, addr }
    }

    fn central(&self, central: &str) -> Role {
        let config = self.central_config("central.toml", central);
        self.start("central", config, "reports on ")
    }

    fn alternate_config(&self, id: &str, top: &str, alternate: &str, central: &Role) -> PathBuf {
        self.write(
            &format!("{id}.toml"),
            &format!(
                "key_file = \"report.key\"\n{top}\n[alternate]\nid = \"{id}\"\ntftp_listen = \"127.0.0.1:0\"\nroot = \"boot\"\ncentrals = [\"{}\"]\ninterval_ms = 200\n{alternate}",
                central.addr
            ),
        )
    }

    fn alternate(&self, id: &str, top: &str, alternate: &str, central: &Role) -> Role {
        let config = self.alternate_config(id, top, alternate, central);
        self.start("alternate", config, "serving on ")
    }

    fn status(&self, central: &Role) -> Result<StatusAnswer, String> {
        smol::block_on(status(
            central.addr,
            &self.key(),
            Duration::from_millis(300),
        ))
    }

    /// Polls `central`'s status until `check` holds on it.
    fn wait_status(
        &self,
        central: &Role,
        within: Duration,
        check: impl Fn(&StatusAnswer) -> bool,
    ) -> StatusAnswer {
        let start = Instant::now();
        loop {
            let answer = self.status(central);
            if let Ok(answer) = &answer {
                if check(answer) {
                    return answer.clone();
                }
            }
            assert!(
                start.elapsed() < within,
                "status still {answer:#?} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn row<'a>(answer: &'a StatusAnswer, id: &str) -> Option<&'a StatusRow> {
    answer.rows.iter().find(|r| r.report.alternate == id)
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A raw TFTP read request (no options).
fn rrq(name: &str) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"\0octet\0");
    p
}

/// The code of an ERROR packet.
fn error_code(packet: &[u8]) -> Option<u16> {
    (packet.len() >= 4 && packet[..2] == [0, 5]).then(|| u16::from_be_bytes([packet[2], packet[3]]))
}

/// Receives until an ERROR packet arrives (DATA, retransmitted or not, is skipped); its code.
fn wait_for_error(socket: &UdpSocket, within: Duration) -> Option<u16> {
    let until = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Some(code) = error_code(&buf[..n]) {
                return Some(code);
            }
        }
    }
    None
}

fn raw_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

#[test]
fn keygen_makes_owner_only_keys_and_never_overwrites_one() {
    let lab = Lab::new();
    let o = lab.run(&["report", "keygen", "-o", "site.key"]);
    assert!(o.status.success(), "{o:?}");
    let meta = std::fs::metadata(lab.path("site.key")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(lab.path("site.key")).unwrap();
    assert_eq!(key.trim().len(), 64);
    assert!(key.trim().chars().all(|c| c.is_ascii_hexdigit()));
    // A second keygen does not replace the site's key.
    let again = lab.run(&["report", "keygen", "-o", "site.key"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(lab.path("site.key")).unwrap(), key);
    // To stdout: a regular file there is made owner-only; two keys differ.
    let redirected = File::create(lab.path("stdout.key")).unwrap();
    std::fs::set_permissions(lab.path("stdout.key"), Permissions::from_mode(0o644)).unwrap();
    let st = Command::new(bootherd())
        .args(["report", "keygen"])
        .stdout(redirected)
        .status()
        .unwrap();
    assert!(st.success());
    let meta = std::fs::metadata(lab.path("stdout.key")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_ne!(
        std::fs::read_to_string(lab.path("stdout.key")).unwrap(),
        key
    );
}

/// `bootherd report keygen` with getrandom(2) taken away by a seccomp filter (ENOSYS, as on a
/// kernel without it).
fn keygen_without_getrandom() -> Output {
    use libc::{sock_filter, sock_fprog, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let filter = [
        // Load the system call number; getrandom fails with ENOSYS, the rest are allowed.
        sock_filter {
            code: (BPF_LD | BPF_W | BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_getrandom as u32,
        },
        sock_filter {
            code: (BPF_RET | BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        sock_filter {
            code: (BPF_RET | BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let mut cmd = Command::new(bootherd());
    cmd.args(["report", "keygen"]);
    // SAFETY: between fork and exec only prctl, which is async-signal-safe, on memory that
    // was set up before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let program = sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn keygen_without_randomness_fails_and_prints_no_key() {
    let o = keygen_without_getrandom();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty(), "no key: {o:?}");
    assert_eq!(stderr_lines(&o).len(), 1, "one line saying why: {o:?}");
}

#[test]
fn keygen_needs_no_dev_urandom() {
    // The reproduction: /dev empty in a private mount namespace (a user namespace too
    // when not root). If the namespace cannot be made, the test fails: it must not skip.
    let unshare = if uid(std::process::id()) == 0 {
        "-m"
    } else {
        "-rm"
    };
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let o = Command::new("unshare")
                .args([unshare, "sh", "-c"])
                .arg(format!(
                    "mount -t tmpfs none /dev && [ ! -e /dev/urandom ] && exec {} report keygen",
                    bootherd()
                ))
                .output()
                .expect("run unshare");
            assert!(o.status.success(), "{o:?}");
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        })
        .collect();
    assert_ne!(keys[0], keys[1]);
    for key in &keys {
        let bytes = bootherd::report::wire::from_hex(key).unwrap();
        assert_eq!(bytes.len(), 32);
        // A key made of four clock readings (nanoseconds) repeats the upper half of each 8-byte
        // word; random words share an upper half with a chance of 2^-32.
        let upper: std::collections::BTreeSet<&[u8]> =
            bytes.chunks(8).map(|word| &word[4..]).collect();
        assert_eq!(upper.len(), 4, "{key}");
    }
}

#[test]
fn check_passes_good_configs_and_names_every_mistake_with_exit_2() {
    let lab = Lab::new();
    let good = lab.central_config("good.toml", "");
    let o = lab.run(&["central", "--config", good.to_str().unwrap(), "--check"]);
    assert!(o.status.success(), "{o:?}");
    let alt = lab.write(
        "alt.toml",
        "key_file = \"report.key\"\n[alternate]\nid = \"a\"\ntftp_listen = \"127.0.0.1:0\"\nroot = \"boot\"\ncentrals = [\"127.0.0.1:7411\"]\n",
    );
    let o = lab.run(&["alternate", "--config", alt.to_str().unwrap(), "--check"]);
    assert!(o.status.success(), "{o:?}");
    let cases: &[(&str, &str, &[&str], &str)] = &[
        ("alternate", "key_file = \"report.key\"\n[alternate]\nid = \"a\"\nroot = \"gone\"\ncentrals = [\"127.0.0.1:7411\"]\n", &[], "bad.toml line 4: key `alternate.root`"),
        ("central", "key_file = \"report.key\"\n[central]\ntftp_root = \"nbp\"\n", &[], "bad.toml line 3: key `central.tftp_root`"),
        ("central", "key_file = \"report.key\"\n[central]\nreport_listen = \"192.0.2.7:7411\"\n", &[], "bad.toml line 3: key `central.report_listen`: 192.0.2.7 is not an address of this host"),
        ("central", "key_file = \"report.key\"\n[central]\nordering = \"load\"\nordering = \"static\"\n", &[], "bad.toml line 4: key `central.ordering` is set again (first at line 3)"),
        ("central", "key_file = \"report.key\"\n[central]\nordering = 'load'\n", &[], "bad.toml line 3: key `central.ordering`: single-quoted"),
        ("central", "key_file = \"report.key\"\n[central]\n", &["--set", "tftp.max_blksize=4"], "--set tftp.max_blksize: 4 is out of range"),
        ("central", "key_file = \"report.key\"\nuser = \"no-such-user\"\n[central]\n", &[], "bad.toml line 2: key `user`: no user"),
    ];
    for (role, text, extra, want) in cases {
        let path = lab.write("bad.toml", text);
        let mut args = vec![*role, "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        // The same mistake stops a start as it fails a check.
        for check in [&["--check"][..], &[]] {
            let args = [&args[..], check].concat();
            let o = lab.run(&args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
            // The mistake, and where the help is: not the whole usage text.
            let lines = stderr_lines(&o);
            assert_eq!(lines.len(), 2, "{lines:#?}");
            assert!(lines[0].contains(want), "{lines:#?}\nwant {want}");
            assert!(
                lines[1].contains(&format!("bootherd {role} --help")),
                "{lines:#?}"
            );
        }
    }
    let o = Command::new(bootherd())
        .args(["central", "--config", good.to_str().unwrap(), "--check"])
        .env("BOOTHERD_LOG", "loud")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "unknown BOOTHERD_LOG: {o:?}");
}

#[test]
fn log_lines_carry_journal_priorities_when_stderr_is_the_journal() {
    let lab = Lab::new();
    // A world-readable key (a warning), then an account that does not exist (the error).
    std::fs::set_permissions(lab.path("report.key"), Permissions::from_mode(0o644)).unwrap();
    let config = lab.write(
        "j.toml",
        "key_file = \"report.key\"\nuser = \"no-such-user\"\n[central]\nreport_listen = \"127.0.0.1:0\"\n",
    );
    let run = |journal: bool| -> Vec<String> {
        let log = lab.path(if journal { "journal.log" } else { "plain.log" });
        let stderr = File::create(&log).unwrap();
        let meta = stderr.metadata().unwrap();
        let stream = if journal {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            // Another stream: stderr is not the journal, whatever the variable says.
            format!("{}:{}", meta.dev(), meta.ino() + 1)
        };
        let st = Command::new(bootherd())
            .args(["central", "--config", config.to_str().unwrap(), "--check"])
            .env("JOURNAL_STREAM", stream)
            .stderr(stderr)
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(2));
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let journal = run(true);
    let priorities: Vec<&str> = journal.iter().map(|l| &l[..3]).collect();
    assert_eq!(priorities, ["<4>", "<3>", "<6>"], "{journal:#?}");
    assert!(
        journal.iter().all(|l| !l[3..].starts_with("20")),
        "no timestamps: {journal:#?}"
    );
    let plain = run(false);
    assert_eq!(plain.len(), 3);
    assert!(
        plain[0].starts_with("20") && plain[0].contains(" WARN "),
        "{plain:#?}"
    );
    assert!(plain.iter().all(|l| !l.starts_with('<')), "{plain:#?}");
}

#[test]
fn sighup_reloads_policy_capacity_key_and_digest_and_keeps_a_broken_config_out() {
    let lab = Lab::new();
    let central = lab.central("allow = [\"alt1\"]\n");
    let mut alt1 = lab.alternate("alt1", "", "link_bytes_per_sec = 1000000\n", &central);
    let mut alt2 = lab.alternate("alt2", "", "", &central);
    let answer = lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt1").is_some()
    });
    assert!(row(&answer, "alt2").is_none(), "not on the allow-list");
    assert!(answer.dropped[2] > 0, "alt2's reports dropped as unknown");
    // Policy: the allow-list grows.
    lab.central_config("central.toml", "allow = [\"alt1\", \"alt2\"]\n");
    central.daemon.signal("HUP");
    lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt2").is_some()
    });
    // A broken config is refused: the central keeps running with what it had.
    lab.write(
        "central.toml",
        "key_file = \"report.key\"\n[central]\n[central]\n",
    );
    central.daemon.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let answer = lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt2").is_some()
    });
    assert_eq!(answer.rows.len(), 2);
    // Capacity: alt1 reports its new link at once.
    lab.alternate_config("alt1", "", "link_bytes_per_sec = 3000000\n", &central);
    alt1.daemon.signal("HUP");
    lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt1").is_some_and(|r| r.report.link_bytes_per_sec == 3_000_000)
    });
    // The key: a new one everywhere, each role reloaded; the old key gets no answer.
    let old_key = lab.key();
    lab.central_config("central.toml", "allow = [\"alt1\", \"alt2\"]\n");
    lab.write_key("ffeeddccbbaa99887766554433221100ffeeddcc");
    for role in [&central, &alt1, &alt2] {
        role.daemon.signal("HUP");
    }
    let fresh = |a: &StatusAnswer| a.rows.len() == 2 && a.rows.iter().all(|r| r.age_ms < 150);
    std::thread::sleep(Duration::from_millis(500));
    lab.wait_status(&central, Duration::from_secs(5), fresh);
    let old = smol::block_on(status(central.addr, &old_key, Duration::from_millis(200)));
    assert!(old.is_err(), "the old key is refused: {old:?}");
    // The boot files: alt1 hashes them again; alt2, not reloaded, keeps its digest.
    let before = row(&lab.status(&central).unwrap(), "alt2")
        .unwrap()
        .report
        .digest;
    std::fs::write(lab.path("boot/initrd"), pattern(4096, 5)).unwrap();
    let digest = lab.run(&["report", "digest", "boot"]);
    let digest = String::from_utf8_lossy(&digest.stdout).trim().to_string();
    alt1.daemon.signal("HUP");
    let answer = lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt1").is_some_and(|r| bootherd::report::wire::hex(&r.report.digest) == digest)
    });
    assert_eq!(row(&answer, "alt2").unwrap().report.digest, before);
    // Reloads never stopped anything.
    for role in [&mut alt1, &mut alt2] {
        assert!(role.daemon.try_wait().is_none());
    }
    assert!(row(&answer, "alt1").unwrap().score_us.is_some());
}

#[test]
fn sigterm_lets_transfers_finish_within_the_grace_period() {
    let lab = Lab::new();
    let central = lab.central("");
    // 3 MiB at 2 MB/s: about 1.6 s, well inside the grace period.
    let mut alt = lab.alternate(
        "alt1",
        "[tftp]\nshutdown_grace_ms = 20000\n",
        "link_bytes_per_sec = 2000000\nrate_limit = true\n",
        &central,
    );
    lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt1").is_some()
    });
    let out = lab.path("kernel.out");
    let mut fetch = Command::new(bootherd())
        .args(["fetch", &format!("tftp://{}/kernel", alt.addr), "-q", "-o"])
        .arg(&out)
        .spawn()
        .unwrap();
    lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt1").is_some_and(|r| r.report.active_transfers == 1)
    });
    alt.daemon.signal("TERM");
    // "Leaving" reaches the central at once, while the transfer goes on.
    let answer = lab.wait_status(&central, Duration::from_secs(1), |a| {
        row(a, "alt1").is_some_and(|r| r.score_us.is_none())
    });
    assert_eq!(
        row(&answer, "alt1").unwrap().excluded.as_deref(),
        Some("leaving")
    );
    assert!(
        alt.daemon.try_wait().is_none(),
        "still serving the transfer"
    );
    // New requests are turned away at once.
    let probe = raw_socket();
    probe.send_to(&rrq("kernel"), alt.addr).unwrap();
    assert_eq!(wait_for_error(&probe, Duration::from_secs(2)), Some(0));
    assert!(fetch.wait().unwrap().success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(lab.path("boot/kernel")).unwrap()
    );
    assert!(alt.daemon.wait().success());
}

#[test]
fn sigterm_ends_transfers_with_an_error_after_the_grace_period() {
    let lab = Lab::new();
    let mut central = lab.central("");
    for single_port in [false, true] {
        let tftp = format!("[tftp]\nshutdown_grace_ms = 300\nsingle_port = {single_port}\n");
        let mut alt = lab.alternate("alt1", &tftp, "", &central);
        // A client that got its first block and went quiet: the transfer waits for its ACK.
        let client = raw_socket();
        client.send_to(&rrq("kernel"), alt.addr).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..4], [0, 3, 0, 1], "DATA 1 ({n} bytes)");
        alt.daemon.signal("TERM");
        assert_eq!(
            wait_for_error(&client, Duration::from_secs(5)),
            Some(0),
            "single_port {single_port}: the client is told, not left to time out"
        );
        assert!(alt.daemon.wait().success());
    }
    // The central stops cleanly too.
    central.daemon.signal("TERM");
    assert!(central.daemon.wait().success());
}

#[test]
fn central_ignores_sigusr1() {
    let lab = Lab::new();
    let mut central = lab.central("");
    central.daemon.signal("USR1");
    std::thread::sleep(Duration::from_millis(200));
    assert!(central.daemon.try_wait().is_none());
    assert!(lab.status(&central).is_ok());
}

#[test]
fn an_unreadable_boot_file_is_left_out_of_the_digest_and_named() {
    let lab = Lab::new();
    std::fs::write(lab.path("boot/boot2"), b"secret").unwrap();
    std::fs::set_permissions(lab.path("boot/boot2"), Permissions::from_mode(0o000)).unwrap();
    // What the alternate can read: the same tree without boot2.
    std::fs::create_dir_all(lab.path("readable/configs")).unwrap();
    std::fs::copy(lab.path("boot/kernel"), lab.path("readable/kernel")).unwrap();
    std::fs::copy(
        lab.path("boot/configs/default"),
        lab.path("readable/configs/default"),
    )
    .unwrap();
    let readable = lab.run(&["report", "digest", "readable"]);
    let readable = String::from_utf8_lossy(&readable.stdout).trim().to_string();
    let central = lab.central("");
    let config = lab.alternate_config("alt1", "", "", &central);
    // Root reads every file: take away the capabilities that let it.
    let mut cmd = if uid(std::process::id()) == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
            bootherd(),
        ]);
        cmd
    } else {
        Command::new(bootherd())
    };
    cmd.args(["alternate", "--config", config.to_str().unwrap()]);
    let alt = Daemon::spawn_command(cmd);
    let answer = lab.wait_status(&central, Duration::from_secs(5), |a| {
        row(a, "alt1").is_some()
    });
    let digest = bootherd::report::wire::hex(&row(&answer, "alt1").unwrap().report.digest);
    assert_eq!(digest, readable, "started, without boot2 in its digest");
    assert!(
        alt.wait_for(
            &lab.path("boot/boot2").display().to_string(),
            Duration::from_secs(1)
        )
        .is_some(),
        "the warning names the file"
    );
}

#[test]
fn a_junk_flood_is_logged_a_few_times_not_once_per_datagram() {
    let lab = Lab::new();
    let server = TftpServer::start(&lab.path("boot"), &[]);
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20_000 {
        let _ = junk.send_to(&[0x42], server.addr);
    }
    let o = Command::new(bootherd())
        .args([
            "fetch",
            &format!("tftp://{}/kernel", server.addr),
            "-o",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "still serving: {o:?}");
    std::thread::sleep(Duration::from_millis(200));
    let lines = server.log.lock().unwrap().len();
    assert!(lines < 20, "{lines} log lines for 20,000 junk datagrams");
}

#[test]
fn fetch_fails_in_one_line_and_leaves_no_partial_file() {
    let lab = Lab::new();
    // A name that does not resolve: a failure (1), one line, no usage text.
    let o = lab.run(&["fetch", "tftp://no-such-host.invalid/x"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(stderr_lines(&o).len(), 1, "{o:?}");
    // Interrupted while waiting for a server that never answers: the .part goes.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut fetch = Command::new(bootherd())
        .args([
            "fetch",
            &format!("tftp://{}/kernel", silent.local_addr().unwrap()),
        ])
        .current_dir(lab.dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = lab.path("kernel.part");
    let start = Instant::now();
    while !part.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no .part appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let killed = Command::new("kill")
        .args(["-INT", &fetch.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(fetch.wait().unwrap().code(), Some(1));
    assert!(!part.exists() && !lab.path("kernel").exists());
    // An impossible limit is a usage error.
    let o = lab.run(&["tftp", "--root", "boot", "--max-transfers", "0"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
