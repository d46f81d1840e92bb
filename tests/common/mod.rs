//! Shared helpers for the integration tests: temp dirs and the `bootherd` binary as a child
//! process on loopback.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bootherd() -> &'static str {
    env!("CARGO_BIN_EXE_bootherd")
}

// The unit tests' helpers, compiled in here too: they are not part of the library.
#[path = "../../src/testutil.rs"]
mod testutil;
pub use testutil::TempDir;

/// The real user ID of process `pid`, from `/proc/PID/status`.
pub fn uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so that a wrong offset never matches.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A `bootherd` subcommand running as a child process; killed on drop. Its stderr lines
/// are collected in `log`.
pub struct Daemon {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `bootherd ARGS` with debug logging.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Self {
        let mut cmd = Command::new(bootherd());
        cmd.args(args);
        Self::spawn_command(cmd)
    }

    /// Starts `cmd` (bootherd behind a wrapper such as `ip netns exec`) with debug logging.
    pub fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .env("BOOTHERD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bootherd");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, log }
    }

    /// The first log line containing `needle`, waiting up to `wait` for it.
    pub fn wait_for(&self, needle: &str, wait: Duration) -> Option<String> {
        let until = Instant::now() + wait;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address logged after `marker` (e.g. "serving on "), waiting for it.
    pub fn addr_after(&self, marker: &str) -> SocketAddr {
        let line = self
            .wait_for(marker, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no {marker:?} in the log: {:?}", self.log.lock().unwrap()));
        let rest = line.split(marker).nth(1).unwrap();
        rest.split([' ', ',']).next().unwrap().parse().unwrap()
    }

    /// Sends a signal (`kill -SIG`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `bootherd tftp` server on 127.0.0.1 with an OS-chosen port; killed on drop.
pub struct TftpServer {
    daemon: Daemon,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TftpServer {
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "tftp",
            "--listen",
            "127.0.0.1:0",
            "--root",
            root.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::spawn(&args);
        let addr = daemon.addr_after("serving on ");
        let log = daemon.log.clone();
        TftpServer { daemon, addr, log }
    }

    /// Whether some log line contains `needle` (waits up to 2 s for it to appear).
    pub fn logged(&self, needle: &str) -> bool {
        self.daemon
            .wait_for(needle, Duration::from_secs(2))
            .is_some()
    }
}

/// The report key of [`small_site`].
pub const SITE_KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A temp dir with `report.key` and a boot set under `boot/`: one kernel of `kernel_len`
/// bytes, named by the default config.
pub fn small_site(tag: &str, kernel_len: usize) -> TempDir {
    let dir = TempDir::new(tag);
    let p = dir.path();
    std::fs::write(p.join("report.key"), SITE_KEY_HEX).unwrap();
    std::fs::create_dir_all(p.join("boot/configs")).unwrap();
    std::fs::write(p.join("boot/vmlinuz"), pattern(kernel_len, 5)).unwrap();
    std::fs::write(p.join("boot/configs/default"), "kernel vmlinuz\n").unwrap();
    dir
}

/// Writes config `name` in `dir`: the key line of [`small_site`], then `body`; its path.
pub fn site_config(dir: &TempDir, name: &str, body: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("key_file = \"report.key\"\n{body}")).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}");
}

/// A network namespace of its own (only its loopback, brought up), deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("bh-test-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME PROGRAM`, ready for arguments.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    /// `ip netns exec NAME bootherd`, ready for arguments.
    pub fn bootherd(&self) -> Command {
        self.command(bootherd())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
