//! DATA datagrams sent per block of the file when the network duplicates, reorders and loses
//! datagrams: bootherd and tftpd-hpa, each with bootherd's client (`bootherd fetch`) and with
//! atftp, at window 16 and 64, through a user-space impairment relay on loopback
//! (`relay.rs`). Issue 11's table, re-measured. See docs/benchmarks.md.
//!
//! Run: `cargo bench --bench impair` (tftpd-hpa and the atftp client from
//! `benches/install-peers.sh`). Settings (environment):
//! - `BOOTHERD_IMPAIR_REPS`: runs per cell, different seeds (default 3; the median is shown);
//! - `BOOTHERD_IMPAIR_BASELINE`: another bootherd binary to measure beside this one (a
//!   previous build, say);
//! - `BOOTHERD_IMPAIR_QUICK=1`: 1 repetition, a quarter of the file sizes;
//! - `BOOTHERD_IMPAIR_ONLY=TEXT`: only the cells whose "condition | server | client | window W"
//!   contains TEXT;
//! - `BOOTHERD_IMPAIR_KEEP=1`: keep the work directory with the servers' logs.
//!
//! Everything runs on 127.0.0.1. Servers are killed by PID, with the children they forked,
//! when the bench ends, also on a panic; they share the terminal's process group, so Ctrl-C
//! stops them too. Every client run has a time limit.

mod relay;

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use relay::{Impairment, Relay};

const BOOTHERD: &str = env!("CARGO_BIN_EXE_bootherd");
const BLKSIZE: u16 = 1468;
const WINDOWS: [u16; 2] = [16, 64];
/// Longest a client may take for one download.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// One row of the table.
struct Condition {
    name: &'static str,
    impairment: Impairment,
    /// File size: loss makes lock-step servers wait a second per lost datagram.
    file_len: usize,
}

fn conditions(quick: bool) -> Vec<Condition> {
    let scale = if quick { 4 } else { 1 };
    let row = |name, loss, dup, reorder, file_len: usize| Condition {
        name,
        impairment: Impairment { loss, dup, reorder },
        file_len: file_len / scale,
    };
    vec![
        row("1 % dup", 0.0, 0.01, 0.0, 4 << 20),
        row("1 % reorder", 0.0, 0.0, 0.01, 4 << 20),
        row("1 % dup + 1 % reorder", 0.0, 0.01, 0.01, 4 << 20),
        row(
            "5 % loss + 25 % reorder + 1 % dup",
            0.05,
            0.01,
            0.25,
            512 << 10,
        ),
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Bootherd,
    Atftp,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Bootherd => "bootherd fetch",
            Client::Atftp => "atftp",
        }
    }
}

/// PIDs of the servers running, for the panic hook (the bench profile aborts on panic, so
/// no destructor runs then).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills `pid` and the children it forked (tftpd-hpa forks one per transfer).
fn kill(pid: u32) {
    let pid = pid.to_string();
    for (program, args) in [("pkill", ["-KILL", "-P"]), ("kill", ["-KILL", "--"])] {
        let _ = Command::new(program)
            .args(args)
            .arg(&pid)
            .stderr(Stdio::null())
            .status();
    }
}

/// A server under test, killed on drop.
struct Server {
    name: String,
    addr: SocketAddr,
    /// Whether it grants windowsize (tftpd-hpa runs lock-step whatever is asked).
    windowed: bool,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id();
        kill(pid);
        let _ = self.child.wait();
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn start(name: &str, program: &Path, args: &[String], windowed: bool, logs: &Path) -> Server {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{addr}", &addr.to_string()))
        .collect();
    let log = fs::File::create(logs.join(format!("{name}.log"))).unwrap();
    let child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child.id());
    // Ready once the port is taken.
    let until = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(addr).is_ok() {
        assert!(Instant::now() < until, "{name} did not bind {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        name: name.to_string(),
        addr,
        windowed,
        child,
    }
}

/// A bootherd binary serving `root`.
fn bootherd(name: &str, program: &Path, root: &Path, logs: &Path) -> Server {
    let args = [
        "tftp",
        "--listen",
        "{addr}",
        "--root",
        root.to_str().unwrap(),
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    start(name, program, &args, true, logs)
}

/// The result of one download.
struct Sample {
    per_block: f64,
    secs: f64,
}

/// Downloads `file` (name, bytes) from `server` through a relay with `condition`'s
/// impairment, into `out`.
fn run(
    server: &Server,
    client: Client,
    window: u16,
    condition: &Condition,
    seed: u64,
    (file, expected): &(String, Vec<u8>),
    out: &Path,
) -> Result<Sample, String> {
    let relay = Relay::start(server.addr, condition.impairment, seed).map_err(|e| e.to_string())?;
    let _ = fs::remove_file(out);
    let mut cmd = match client {
        Client::Bootherd => {
            let mut c = Command::new(BOOTHERD);
            c.arg("fetch")
                .arg(format!("tftp://{}/{file}", relay.addr))
                .arg("-o")
                .arg(out)
                .args(["--blksize", &BLKSIZE.to_string()])
                .args(["--windowsize", &window.to_string()]);
            c
        }
        Client::Atftp => {
            let mut c = Command::new("atftp");
            c.args(["--option", &format!("blksize {BLKSIZE}")])
                .args(["--option", &format!("windowsize {window}")])
                .args(["-g", "-r", file, "-l"])
                .arg(out)
                .arg(relay.addr.ip().to_string())
                .arg(relay.addr.port().to_string());
            c
        }
    };
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", client.name()))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = started.elapsed().as_secs_f64();
    // Late datagrams still in flight are the server's too.
    std::thread::sleep(Duration::from_millis(100));
    let counts = relay.finish().map_err(|e| e.to_string())?;
    match status {
        None => return Err(format!("no end after {} s", RUN_LIMIT.as_secs())),
        Some(s) if !s.success() => return Err(format!("client failed: {s}")),
        Some(_) => {}
    }
    if fs::read(out).map_err(|e| e.to_string())? != *expected {
        return Err("file differs".into());
    }
    let blocks = expected.len() / counts.blksize.max(1) + 1;
    Ok(Sample {
        per_block: counts.data as f64 / blocks as f64,
        secs,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Random bytes, so that a wrong block never matches.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    bytes
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn main() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        for pid in LIVE.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kill(*pid);
        }
        default_hook(info);
    }));
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let quick = env("BOOTHERD_IMPAIR_QUICK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--quick");
    let only = env("BOOTHERD_IMPAIR_ONLY");
    let reps: u64 = env("BOOTHERD_IMPAIR_REPS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 })
        .max(1);
    for tool in ["atftp", "in.tftpd"] {
        if which(tool).is_none() && !Path::new("/usr/sbin").join(tool).is_file() {
            eprintln!("impair: {tool} is missing: run `sudo bash benches/install-peers.sh` first");
            std::process::exit(2);
        }
    }
    let work = std::env::temp_dir().join(format!("bootherd-impair-{}", std::process::id()));
    let root = work.join("root");
    let logs = work.join("logs");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&logs).unwrap();
    let conditions = conditions(quick);
    let files: Vec<(String, Vec<u8>)> = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("f{i}.bin"), random_bytes(c.file_len)))
        .collect();
    for (name, bytes) in &files {
        fs::write(root.join(name), bytes).unwrap();
    }

    let mut servers = vec![bootherd("bootherd", Path::new(BOOTHERD), &root, &logs)];
    if let Some(baseline) = env("BOOTHERD_IMPAIR_BASELINE") {
        servers.push(bootherd("baseline", Path::new(&baseline), &root, &logs));
    }
    let tftpd = which("in.tftpd").unwrap_or_else(|| PathBuf::from("/usr/sbin/in.tftpd"));
    let args: Vec<String> = ["-L", "-s", root.to_str().unwrap(), "-a", "{addr}"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    servers.push(start("tftpd-hpa", &tftpd, &args, false, &logs));

    println!(
        "impair: DATA datagrams per block of the file (median of {reps}), blksize {BLKSIZE}, \
         through a relay on 127.0.0.1 that impairs both directions"
    );
    let out = work.join("out");
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for (condition, file) in conditions.iter().zip(&files) {
        let mut row = vec![format!(
            "{} ({} KiB)",
            condition.name,
            condition.file_len >> 10
        )];
        for server in &servers {
            for client in [Client::Bootherd, Client::Atftp] {
                // A lock-step server gives the same transfer whatever window is asked for.
                let windows: &[u16] = if server.windowed {
                    &WINDOWS
                } else {
                    &WINDOWS[..1]
                };
                for &window in windows {
                    let label = format!(
                        "{} | {} | {} | window {window}",
                        condition.name,
                        server.name,
                        client.name()
                    );
                    if only
                        .as_ref()
                        .is_some_and(|only| !label.contains(only.as_str()))
                    {
                        row.push("-".into());
                        if !server.windowed {
                            row.push("-".into());
                        }
                        continue;
                    }
                    let mut per_block = Vec::new();
                    let mut secs = Vec::new();
                    for seed in 1..=reps {
                        match run(server, client, window, condition, seed, file, &out) {
                            Ok(s) => {
                                per_block.push(s.per_block);
                                secs.push(s.secs);
                            }
                            Err(why) => failures.push(format!("{label} | seed {seed}: {why}")),
                        }
                    }
                    let cell = if per_block.is_empty() {
                        "failed".to_string()
                    } else {
                        format!("{:.2}x ({:.1} s)", median(per_block), median(secs))
                    };
                    eprintln!("{label}: {cell}");
                    row.push(cell.clone());
                    if !server.windowed {
                        row.push(cell);
                    }
                }
            }
        }
        table.push(row);
    }

    let mut header = vec!["condition (file)".to_string()];
    for server in &servers {
        for client in [Client::Bootherd, Client::Atftp] {
            for window in WINDOWS {
                let lock_step = if server.windowed { "" } else { ", lock-step" };
                header.push(format!(
                    "{} / {} / {window}{lock_step}",
                    server.name,
                    client.name()
                ));
            }
        }
    }
    println!("\n| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in &table {
        println!("| {} |", row.join(" | "));
    }
    println!("\nfailed runs: {}", failures.len());
    for f in &failures {
        println!("  {f}");
    }
    println!("total time: {:.0} s", started.elapsed().as_secs_f64());
    drop(servers);
    if env("BOOTHERD_IMPAIR_KEEP").is_some() {
        println!("work directory kept: {}", work.display());
    } else {
        let _ = fs::remove_dir_all(&work);
    }
}
