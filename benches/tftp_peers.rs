//! Side-by-side TFTP benchmark: bootherd against tftpd-hpa, atftpd, dnsmasq and rs-tftpd on
//! loopback, plus the UDP ceiling (iperf3) and a 200-client storm, all in one run.
//!
//! Run: `cargo bench --bench tftp_peers` (install the peers first with
//! `benches/install-peers.sh`). Quick smoke run: `BOOTHERD_BENCH_QUICK=1 cargo bench --bench
//! tftp_peers` or `cargo bench --bench tftp_peers -- --quick`. See docs/benchmarks.md.
//!
//! Every server is a child process on 127.0.0.1, killed by PID when its guard drops (also on
//! error or panic), and every download, peer client run and storm has a time limit; a watchdog
//! kills everything still running if the whole run overstays its deadline. The figures are
//! printed, never asserted: a missed floor prints MISS and the bench still exits 0.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootherd::tftp::client::{fetch, FetchStats};
use bootherd::tftp::download::{ClientRetransmit, RequestSpec};
use smol::{LocalExecutor, Timer};

const BOOTHERD: &str = env!("CARGO_BIN_EXE_bootherd");
const LOCALHOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

const BLKSIZES: [u16; 3] = [512, 1468, 8192];
const WINDOWSIZES: [u16; 3] = [1, 16, 64];
/// The cell of the "best peer" floor and of the storm.
const HEADLINE: (u16, u16) = (1468, 16);
/// The cell compared with the UDP ceiling (iperf3 runs with the same datagram payload).
const CEILING_CELL: (u16, u16) = (1468, 64);
const STORM_CLIENTS: usize = 200;

/// Floors (reported, not asserted).
const FLOOR_BEST_PEER: f64 = 1.2;
const FLOOR_CEILING: f64 = 0.75;
const FLOOR_LOCKSTEP: f64 = 1.0;
const FLOOR_STORM_RSS_KIB: u64 = 8 * 1024;

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    quick: bool,
    file_len: usize,
    storm_len: usize,
    reps: usize,
    iperf_secs: u32,
    peers_dir: PathBuf,
    /// Another bootherd binary (an older build, say), measured as one more server.
    baseline: Option<PathBuf>,
    fetch_limit: Duration,
    atftp_limit: Duration,
    storm_limit: Duration,
    deadline: Duration,
    storm_peers: bool,
    cpus: Cpus,
}

/// Where the processes run. The default, `split`, gives the servers CPU 1 and every client
/// (this process, atftp, the iperf3 sender) CPU 0, like a server and its clients on separate
/// machines; without pinning the scheduler sometimes puts both ends on one core and sometimes
/// not, and a lock-step transfer runs at very different speeds in the two cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cpus {
    /// Servers on CPU 1, clients on CPU 0.
    Split,
    /// Everything on CPU 0: measures CPU cost per byte (the UDP ceiling then means little:
    /// iperf3's sender overruns its receiver).
    Same,
    /// No pinning.
    Free,
}

impl Cpus {
    fn server_cpu(self) -> Option<&'static str> {
        match self {
            Cpus::Split => Some("1"),
            Cpus::Same => Some("0"),
            Cpus::Free => None,
        }
    }

    fn client_cpu(self) -> Option<&'static str> {
        match self {
            Cpus::Split | Cpus::Same => Some("0"),
            Cpus::Free => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Cpus::Split => "split: servers on CPU 1, clients on CPU 0",
            Cpus::Same => "same: servers and clients on CPU 0",
            Cpus::Free => "free: not pinned",
        }
    }
}

impl Settings {
    fn from_env() -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let num = |name: &str| env(name).and_then(|v| v.parse::<u64>().ok());
        let quick = std::env::args().any(|a| a == "--quick")
            || env("BOOTHERD_BENCH_QUICK").is_some_and(|v| v != "0");
        let mib = |n: usize| n << 20;
        Settings {
            quick,
            file_len: num("BOOTHERD_BENCH_FILE_MIB")
                .map(|n| mib(n as usize))
                .unwrap_or(if quick { mib(4) } else { mib(64) }),
            storm_len: num("BOOTHERD_BENCH_STORM_MIB")
                .map(|n| mib(n as usize))
                .unwrap_or(if quick { mib(1) } else { mib(16) }),
            reps: num("BOOTHERD_BENCH_REPS")
                .map(|n| n.max(1) as usize)
                .unwrap_or(if quick { 1 } else { 3 }),
            iperf_secs: if quick { 1 } else { 3 },
            baseline: env("BOOTHERD_BENCH_BASELINE").map(PathBuf::from),
            peers_dir: env("BOOTHERD_PEERS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/opt/bootherd-peers")),
            fetch_limit: Duration::from_secs(if quick { 20 } else { 90 }),
            atftp_limit: Duration::from_secs(if quick { 15 } else { 60 }),
            storm_limit: Duration::from_secs(if quick { 60 } else { 240 }),
            deadline: Duration::from_secs(num("BOOTHERD_BENCH_DEADLINE_S").unwrap_or(if quick {
                900
            } else {
                3600
            })),
            storm_peers: env("BOOTHERD_BENCH_STORM_PEERS").is_none_or(|v| v != "0"),
            cpus: match env("BOOTHERD_BENCH_CPUS").as_deref() {
                Some("same") => Cpus::Same,
                Some("free") | Some("none") => Cpus::Free,
                _ => Cpus::Split,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: every server is registered by PID and killed by PID.

/// PIDs of the servers alive right now, for the watchdog and the panic hook.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(|p| p.to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Parent PID of every process, from /proc.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the
        // last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            map.insert(pid, ppid);
        }
    }
    map
}

/// Every descendant of `root` (children forked per transfer by tftpd-hpa, for instance).
fn descendants(root: u32) -> Vec<u32> {
    let parents = parents();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&child, &parent) in &parents {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Stops `pid` and its whole tree: freeze it (so it forks no more), kill its descendants,
/// then it.
fn kill_tree(pid: u32) {
    signal("-STOP", &[pid]);
    signal("-KILL", &descendants(pid));
    signal("-KILL", &[pid]);
}

/// A server child process, killed (with its descendants) when dropped.
struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> io::Result<Self> {
        let log = fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        live().push(child.id());
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited already (a server that could not bind, for instance).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.child.id();
        if self.child.try_wait().ok().flatten().is_none() {
            kill_tree(pid);
        }
        let _ = self.child.wait();
        live().retain(|&p| p != pid);
        let _ = &self.name;
    }
}

fn kill_everything_registered() {
    let pids: Vec<u32> = live().clone();
    for pid in pids {
        kill_tree(pid);
    }
}

/// Kills every registered server and exits if the run overstays `deadline`.
fn start_watchdog(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!(
            "tftp_peers: run exceeded its deadline of {} s: killing every server and stopping",
            deadline.as_secs()
        );
        kill_everything_registered();
        std::process::exit(3);
    });
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind((LOCALHOST, 0))?.local_addr()?.port())
}

/// A port free for both TCP and UDP on 127.0.0.1 (iperf3 uses both).
fn free_tcp_udp_port() -> io::Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind((LOCALHOST, 0))?.local_addr()?.port();
        if UdpSocket::bind((LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free TCP+UDP port"))
}

/// Waits for `child`, killing it after `limit`. Returns its exit status, or None on timeout.
fn wait_limited(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= until {
            kill_tree(child.id());
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// The servers

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Bootherd,
    TftpdHpa,
    Atftpd,
    Dnsmasq,
    RsTftpd,
    /// `BOOTHERD_BENCH_BASELINE`: another bootherd build, side by side.
    Baseline,
}

const KINDS: [Kind; 6] = [
    Kind::Bootherd,
    Kind::TftpdHpa,
    Kind::Atftpd,
    Kind::Dnsmasq,
    Kind::RsTftpd,
    Kind::Baseline,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bootherd => "bootherd",
            Kind::TftpdHpa => "tftpd-hpa",
            Kind::Atftpd => "atftpd",
            Kind::Dnsmasq => "dnsmasq",
            Kind::RsTftpd => "rs-tftpd",
            Kind::Baseline => "baseline",
        }
    }

    fn program(self, s: &Settings) -> PathBuf {
        match self {
            Kind::Bootherd => PathBuf::from(BOOTHERD),
            Kind::TftpdHpa => PathBuf::from("/usr/sbin/in.tftpd"),
            Kind::Atftpd => s.peers_dir.join("atftpd/usr/sbin/atftpd"),
            Kind::Dnsmasq => PathBuf::from("/usr/sbin/dnsmasq"),
            Kind::RsTftpd => s.peers_dir.join("rs-tftpd/bin/tftpd"),
            Kind::Baseline => s.baseline.clone().unwrap_or_default(),
        }
    }

    /// The atftp client stalls at blksize 8192 with a window against servers that grant
    /// windowsize (peers.md; seen against bootherd too): those runs are skipped.
    fn atftp_stalls(self, blksize: u16, windowsize: u16) -> bool {
        blksize >= 8192
            && windowsize > 1
            && matches!(
                self,
                Kind::Bootherd | Kind::Atftpd | Kind::RsTftpd | Kind::Baseline
            )
    }
}

/// `program` to run on `cpu` (through taskset, which execs it: the PID stays the program's).
fn pinned(cpu: Option<&str>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpu]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Pins this process (all its threads so far; later ones inherit) to `cpu`.
fn pin_self(cpu: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset exited with {status}"))
    }
}

fn cpus_allowed() -> String {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A running server on 127.0.0.1.
struct Server {
    kind: Kind,
    addr: SocketAddr,
    guard: ChildGuard,
}

/// Starts `kind` serving `root`. `storm` raises the peers' default concurrency caps (atftpd
/// 100 threads, dnsmasq 50 transfers) to the storm's client count.
fn start_server(
    kind: Kind,
    s: &Settings,
    root: &Path,
    logs: &Path,
    storm: bool,
) -> io::Result<Server> {
    let program = kind.program(s);
    if !program.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found at {} (run benches/install-peers.sh)",
                kind.name(),
                program.display()
            ),
        ));
    }
    let port = if kind == Kind::Dnsmasq {
        // dnsmasq 2.90's TFTP port is fixed to 69; make sure nobody holds it on loopback.
        UdpSocket::bind((LOCALHOST, 69)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("dnsmasq needs 127.0.0.1:69, which is taken: {e}"),
            )
        })?;
        69
    } else {
        free_udp_port()?
    };
    let root_s = root.display().to_string();
    let mut cmd = pinned(s.cpus.server_cpu(), &program);
    match kind {
        Kind::Bootherd | Kind::Baseline => {
            cmd.args(["tftp", "--root", &root_s, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--max-blksize", "65464"]);
        }
        Kind::TftpdHpa => {
            cmd.args(["-L", "-s", &root_s, "-a"])
                .arg(format!("127.0.0.1:{port}"));
        }
        Kind::Atftpd => {
            cmd.args(["--daemon", "--no-fork", "--port"])
                .arg(port.to_string())
                .args(["--bind-address", "127.0.0.1"]);
            if storm {
                cmd.args(["--maxthread", &(STORM_CLIENTS + 16).to_string()]);
            }
            cmd.arg(&root_s);
        }
        Kind::Dnsmasq => {
            cmd.args(["-k", "--port=0", "--enable-tftp"])
                .arg(format!("--tftp-root={root_s}"))
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--pid-file=",
                ]);
            if storm {
                cmd.arg(format!("--tftp-max={}", STORM_CLIENTS + 16));
            }
        }
        Kind::RsTftpd => {
            cmd.args(["-i", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .args(["-d", &root_s, "-r", "-q"]);
        }
    }
    let log = logs.join(format!(
        "{}{}.log",
        kind.name(),
        if storm { "-storm" } else { "" }
    ));
    let mut guard = ChildGuard::spawn(kind.name(), &mut cmd, &log)?;
    let addr = SocketAddr::from((LOCALHOST, port));
    // Ready once it serves the probe file.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = guard.exited() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            return Err(io::Error::other(format!(
                "{} exited at start ({status}): {}",
                kind.name(),
                tail.trim()
            )));
        }
        let probe = fetch_verify(
            addr,
            "probe.bin",
            None,
            None,
            &probe_bytes(),
            Duration::from_millis(500),
            ClientRetransmit {
                timeout: Duration::from_millis(100),
                retries: 2,
            },
        );
        if probe.is_ok() {
            break;
        }
        if Instant::now() >= until {
            return Err(io::Error::other(format!(
                "{} does not answer on {addr}",
                kind.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server { kind, addr, guard })
}

// ---------------------------------------------------------------------------------------------
// Files

/// Deterministic incompressible bytes (xorshift64*).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn probe_bytes() -> Vec<u8> {
    random_bytes(3000, 7)
}

// ---------------------------------------------------------------------------------------------
// Our client, in process

/// Compares what arrives with the expected bytes as it arrives.
struct Verify<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl Write for Verify<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos + buf.len();
        if end > self.expected.len() || self.expected[self.pos..end] != *buf {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bytes differ from offset {}", self.pos),
            ));
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One download with our client, checked byte for byte, bounded by `limit`.
async fn fetch_verify_async(
    addr: SocketAddr,
    path: &str,
    blksize: Option<u16>,
    windowsize: Option<u16>,
    expected: &[u8],
    limit: Duration,
    retransmit: ClientRetransmit,
) -> Result<FetchStats, String> {
    let spec = RequestSpec {
        path: path.to_string(),
        blksize,
        windowsize,
        tsize: true,
    };
    let mut verify = Verify { expected, pos: 0 };
    let result = smol::future::or(
        async { Some(fetch(addr, spec, retransmit, &mut verify).await) },
        async {
            Timer::after(limit).await;
            None
        },
    )
    .await;
    match result {
        None => Err(format!("no result within {} s", limit.as_secs())),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(_)) if verify.pos != expected.len() => {
            Err(format!("short: {} of {} bytes", verify.pos, expected.len()))
        }
        Some(Ok(stats)) => Ok(stats),
    }
}

fn fetch_verify(
    addr: SocketAddr,
    path: &str,
    blksize: Option<u16>,
    windowsize: Option<u16>,
    expected: &[u8],
    limit: Duration,
    retransmit: ClientRetransmit,
) -> Result<FetchStats, String> {
    smol::block_on(fetch_verify_async(
        addr, path, blksize, windowsize, expected, limit, retransmit,
    ))
}

// ---------------------------------------------------------------------------------------------
// The atftp client

fn atftp_fetch(
    addr: SocketAddr,
    blksize: u16,
    windowsize: u16,
    expected: &[u8],
    out: &Path,
    limit: Duration,
) -> Result<f64, String> {
    let _ = fs::remove_file(out);
    let started = Instant::now();
    let mut child = Command::new("atftp")
        .args(["--option", &format!("blksize {blksize}")])
        .args(["--option", &format!("windowsize {windowsize}")])
        .args(["-g", "-r", "big.bin", "-l"])
        .arg(out)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start atftp: {e}"))?;
    let status = wait_limited(&mut child, limit);
    let elapsed = started.elapsed();
    let result = match status {
        None => Err(format!("stalled: killed after {} s", limit.as_secs())),
        Some(st) if !st.success() => Err(format!("atftp exited with {st}")),
        Some(_) => match fs::read(out) {
            Err(e) => Err(format!("no output: {e}")),
            Ok(got) if got.len() != expected.len() => {
                Err(format!("{} of {} bytes", got.len(), expected.len()))
            }
            Ok(got) if got != expected => Err("bytes differ".into()),
            Ok(_) => Ok(expected.len() as f64 / elapsed.as_secs_f64() / 1e6),
        },
    };
    let _ = fs::remove_file(out);
    result
}

// ---------------------------------------------------------------------------------------------
// The UDP ceiling

/// Receiver throughput of one `iperf3 -u -b 0 -l 1468` run on loopback, in MB/s.
fn udp_ceiling(secs: u32, cpus: Cpus, logs: &Path) -> Result<f64, String> {
    let port = free_tcp_udp_port().map_err(|e| e.to_string())?;
    let _server = ChildGuard::spawn(
        "iperf3 -s",
        pinned(cpus.server_cpu(), Path::new("iperf3")).args([
            "-s",
            "-B",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-1",
        ]),
        &logs.join("iperf3-server.log"),
    )
    .map_err(|e| e.to_string())?;
    // Ready once its TCP control port listens (a probe connection would use up `-1`).
    let until = Instant::now() + Duration::from_secs(5);
    while !tcp_listening(port) {
        if Instant::now() >= until {
            return Err("iperf3 server does not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out_path = logs.join("iperf3-client.json");
    let out = fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let mut client = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-u",
            "-b",
            "0",
            "-l",
            "1468",
            "-t",
            &secs.to_string(),
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start iperf3: {e}"))?;
    match wait_limited(&mut client, Duration::from_secs(u64::from(secs) + 15)) {
        None => return Err("iperf3 client did not finish".into()),
        Some(st) if !st.success() => return Err(format!("iperf3 client exited with {st}")),
        Some(_) => {}
    }
    let json = fs::read_to_string(&out_path).map_err(|e| e.to_string())?;
    json_number_after(&json, "\"sum_received\"", "\"bits_per_second\"")
        .map(|bps| bps / 8.0 / 1e6)
        .ok_or_else(|| "no sum_received.bits_per_second in iperf3's JSON".into())
}

/// Whether something listens on 127.0.0.1:`port` over TCP (from /proc/net/tcp).
fn tcp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
        })
        .unwrap_or(false)
}

/// The number after `key` that follows `section` in `json` (enough for iperf3's output).
fn json_number_after(json: &str, section: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(section)? + section.len()..];
    let rest = &rest[rest.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Memory of a server (and of the processes it forked)

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples the summed VmRSS of `pid` and its descendants every 100 ms until stopped; returns
/// the peak.
struct TreeRssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl TreeRssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                let mut pids = descendants(pid);
                pids.push(pid);
                let sum: u64 = pids.iter().filter_map(|&p| status_kib(p, "VmRSS")).sum();
                peak = peak.max(sum);
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        TreeRssSampler { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// The storm

struct StormResult {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    wall: Duration,
    megabytes_per_second: f64,
    /// VmHWM of the server process itself.
    hwm_kib: Option<u64>,
    /// Peak of the summed VmRSS of the server and its children, sampled at 10 Hz.
    tree_peak_kib: u64,
    blksize: u16,
    windowsize: u16,
}

/// `clients` concurrent downloads of storm.bin from `server`, in one thread of this process.
fn storm(server: &Server, clients: usize, expected: &Arc<[u8]>, limit: Duration) -> StormResult {
    let sampler = TreeRssSampler::start(server.guard.pid());
    let (blksize, windowsize) = HEADLINE;
    let ex = LocalExecutor::new();
    let started = Instant::now();
    let results: Vec<Result<FetchStats, String>> = smol::block_on(ex.run(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let expected = expected.clone();
                let addr = server.addr;
                ex.spawn(async move {
                    fetch_verify_async(
                        addr,
                        "storm.bin",
                        Some(blksize),
                        Some(windowsize),
                        &expected,
                        limit,
                        ClientRetransmit::default(),
                    )
                    .await
                })
            })
            .collect();
        let mut results = Vec::with_capacity(clients);
        for t in tasks {
            results.push(t.await);
        }
        results
    }));
    let wall = started.elapsed();
    let hwm_kib = status_kib(server.guard.pid(), "VmHWM");
    let tree_peak_kib = sampler.finish();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let negotiated = results
        .iter()
        .find_map(|r| r.as_ref().ok())
        .map(|s| (s.blksize, s.windowsize))
        .unwrap_or((0, 0));
    StormResult {
        ok,
        failed: results.len() - ok,
        first_error: results.iter().find_map(|r| r.as_ref().err().cloned()),
        wall,
        megabytes_per_second: (ok * expected.len()) as f64 / wall.as_secs_f64() / 1e6,
        hwm_kib,
        tree_peak_kib,
        blksize: negotiated.0,
        windowsize: negotiated.1,
    }
}

// ---------------------------------------------------------------------------------------------
// Noise: the machine is shared, so every run checks how much CPU other processes took meanwhile

/// A run during which other processes used more than this many cores is measured again.
const NOISY_CORES: f64 = 0.25;
/// Attempts per measurement; if all are noisy, the least noisy one is kept (and flagged).
const MAX_ATTEMPTS: usize = 3;
/// Kernel clock ticks per second in /proc (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU ticks: everyone's (user + nice + system), the hypervisor's (steal) and ours.
#[derive(Clone, Copy)]
struct Ticks {
    busy: u64,
    steal: u64,
    ours: u64,
}

/// utime + stime (+ cutime + cstime with `children`) of `pid`, in ticks.
fn process_ticks(pid: &str, children: bool) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    // Fields 14..=17 of stat; `rest` starts at field 3.
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let own = f.first().copied().unwrap_or(0) + f.get(1).copied().unwrap_or(0);
    if children {
        own + f.get(2).copied().unwrap_or(0) + f.get(3).copied().unwrap_or(0)
    } else {
        own
    }
}

struct NoiseMeter<'a> {
    /// The servers under test (their CPU and their children's is ours, not noise).
    server_pids: &'a [u32],
    /// No more re-measuring after this, so that a busy machine cannot stretch the run.
    retry_until: Instant,
}

impl NoiseMeter<'_> {
    fn ticks(&self) -> Ticks {
        let cpu: Vec<u64> = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(|v| v.parse().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        let at = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // This process and its reaped children (atftp, iperf3), the servers and what they
        // forked, reaped or alive.
        let mut ours = process_ticks("self", true);
        for &pid in self.server_pids {
            ours += process_ticks(&pid.to_string(), true);
            for d in descendants(pid) {
                ours += process_ticks(&d.to_string(), false);
            }
        }
        Ticks {
            busy: at(0) + at(1) + at(2),
            steal: at(7),
            ours,
        }
    }

    /// Runs `attempt` until a run is not disturbed by other processes (at most
    /// [`MAX_ATTEMPTS`]), printing each run on a line that starts with `label`. `attempt`
    /// returns MB/s, blksize, windowsize and a note.
    fn measure(
        &self,
        label: &str,
        mut attempt: impl FnMut() -> Result<(f64, u16, u16, String), String>,
    ) -> Sample {
        let mut least_noisy: Option<Sample> = None;
        for n in 1..=MAX_ATTEMPTS {
            let before = self.ticks();
            let started = Instant::now();
            let result = attempt();
            let elapsed = started.elapsed().as_secs_f64().max(0.01);
            let after = self.ticks();
            let foreign = (after.busy - before.busy).saturating_sub(after.ours - before.ours)
                + (after.steal - before.steal);
            let cores = foreign as f64 / USER_HZ / elapsed;
            // A few ticks over a very short run are accounting granularity, not noise.
            let noisy = cores > NOISY_CORES && foreign >= 3;
            let (mbps, blksize, windowsize, note) = match result {
                Ok(r) => r,
                Err(e) => {
                    println!("{label} FAILED: {e}");
                    return Sample::Failed(e);
                }
            };
            println!(
                "{label} {mbps:8.1} MB/s  {note}  (other processes {cores:.2} cores{})",
                if noisy { ", NOISY" } else { "" }
            );
            let sample = Sample::Ok {
                mbps,
                blksize,
                windowsize,
                noise: if noisy { cores } else { 0.0 },
            };
            if !noisy {
                return sample;
            }
            let quieter = match &least_noisy {
                Some(Sample::Ok { noise, .. }) => cores < *noise,
                _ => true,
            };
            if quieter {
                least_noisy = Some(sample);
            }
            if n == MAX_ATTEMPTS || Instant::now() >= self.retry_until {
                break;
            }
        }
        least_noisy.unwrap_or(Sample::Failed("no attempt".into()))
    }
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Client {
    Ours,
    Atftp,
}

#[derive(Debug, Clone)]
enum Sample {
    Ok {
        mbps: f64,
        blksize: u16,
        windowsize: u16,
        /// CPU used by other processes during the run, in cores (see [`NoiseMeter`]).
        noise: f64,
    },
    Failed(String),
    Skipped(&'static str),
}

type Key = ((u16, u16), Kind, Client);

#[derive(Default)]
struct Results {
    samples: BTreeMap<Key, Vec<Sample>>,
    ceiling: Vec<Sample>,
}

/// Median of the successful samples, their negotiated sizes, failures and whether skipped.
struct Summary {
    median: Option<f64>,
    /// Half the range of the successful samples, relative to the median.
    spread: Option<f64>,
    /// Samples taken while other processes used more than [`NOISY_CORES`].
    noisy: usize,
    negotiated: Option<(u16, u16)>,
    failures: usize,
    runs: usize,
    skipped: Option<&'static str>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Results {
    fn push(&mut self, key: Key, sample: Sample) {
        self.samples.entry(key).or_default().push(sample);
    }

    fn summary(&self, key: Key) -> Summary {
        let samples = self.samples.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let mut values = Vec::new();
        let mut negotiated = None;
        let mut failures = 0;
        let mut skipped = None;
        let mut noisy = 0;
        for s in samples {
            match s {
                Sample::Ok {
                    mbps,
                    blksize,
                    windowsize,
                    noise,
                } => {
                    values.push(*mbps);
                    negotiated.get_or_insert((*blksize, *windowsize));
                    if *noise > NOISY_CORES {
                        noisy += 1;
                    }
                }
                Sample::Failed(_) => failures += 1,
                Sample::Skipped(why) => skipped = Some(*why),
            }
        }
        let spread = match (median(values.clone()), values.len()) {
            (Some(m), 2..) if m > 0.0 => {
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(0.0, f64::max);
                Some((hi - lo) / 2.0 / m)
            }
            _ => None,
        };
        Summary {
            runs: values.len() + failures,
            median: median(values),
            spread,
            negotiated,
            failures,
            skipped,
            noisy,
        }
    }

    fn median(&self, key: Key) -> Option<f64> {
        self.summary(key).median
    }

    /// Whether `key` already failed by stalling (its later repetitions are skipped).
    fn stalled(&self, key: Key) -> bool {
        self.samples.get(&key).is_some_and(|v| {
            v.iter()
                .any(|s| matches!(s, Sample::Failed(e) if e.starts_with("stalled")))
        })
    }
}

fn cell_text(s: &Summary, with_negotiated: bool) -> String {
    if let Some(why) = s.skipped {
        return format!("skip ({why})");
    }
    let mut t = match s.median {
        Some(m) => format!("{m:8.1}"),
        None if s.runs == 0 => "-".to_string(),
        None => "   FAIL".to_string(),
    };
    if let Some(spread) = s.spread {
        t.push_str(&format!(" ±{:.0}%", spread * 100.0));
    }
    if with_negotiated {
        if let Some((b, w)) = s.negotiated {
            t.push_str(&format!(" [{b}/{w}]"));
        }
    }
    if s.noisy > 0 {
        t.push_str(&format!(" {}n", s.noisy));
    }
    if s.failures > 0 {
        t.push_str(&format!(" ({}/{} fail)", s.failures, s.runs));
    }
    t
}

fn ratio_text(ours: Option<f64>, peer: Option<f64>) -> String {
    match (ours, peer) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    }
}

fn print_grid(results: &Results, kinds: &[Kind], client: Client, reps: usize) {
    let (title, negotiated) = match client {
        Client::Ours => (
            "our client (bootherd::tftp::client::fetch, in process); MB/s [negotiated blksize/windowsize]",
            true,
        ),
        Client::Atftp => ("atftp client (process, wall time); MB/s", false),
    };
    let width = if negotiated { 28 } else { 18 };
    println!("\n== {title}, median of {reps} ==");
    println!(
        "   (±x% = half the range of the repetitions; Nn = N samples kept although other processes used > {NOISY_CORES} cores)"
    );
    print!("{:>7} {:>4} |", "blksize", "win");
    for k in kinds {
        print!(" {:>width$}", k.name());
    }
    println!();
    for b in BLKSIZES {
        for w in WINDOWSIZES {
            print!("{b:>7} {w:>4} |");
            for &k in kinds {
                print!(
                    " {:>width$}",
                    cell_text(&results.summary(((b, w), k, client)), negotiated)
                );
            }
            println!();
        }
    }
    let peers: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|&k| k != Kind::Bootherd)
        .collect();
    println!(
        "\n-- ratio bootherd / peer ({} client) --",
        match client {
            Client::Ours => "our",
            Client::Atftp => "atftp",
        }
    );
    print!("{:>7} {:>4} |", "blksize", "win");
    for k in &peers {
        print!(" {:>10}", k.name());
    }
    println!(" {:>10}", "best peer");
    for b in BLKSIZES {
        for w in WINDOWSIZES {
            let ours = results.median(((b, w), Kind::Bootherd, client));
            print!("{b:>7} {w:>4} |");
            let mut best: Option<f64> = None;
            for &k in &peers {
                let m = results.median(((b, w), k, client));
                if let Some(m) = m.filter(|_| k != Kind::Baseline) {
                    best = Some(best.map_or(m, |x: f64| x.max(m)));
                }
                print!(" {:>10}", ratio_text(ours, m));
            }
            println!(" {:>10}", ratio_text(ours, best));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn main() {
    let started = Instant::now();
    let mut s = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if s.cpus == Cpus::Split && cores < 2 {
        println!("only {cores} CPU available: running everything on CPU 0");
        s.cpus = Cpus::Same;
    }
    // Before any thread exists, so that every thread of this process inherits it.
    if let Some(cpu) = s.cpus.client_cpu() {
        if let Err(e) = pin_self(cpu) {
            println!("cannot pin to CPU {cpu} ({e}): running unpinned");
            s.cpus = Cpus::Free;
        }
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_everything_registered();
        previous_hook(info);
    }));
    start_watchdog(s.deadline);
    let code = match run(&s) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tftp_peers: {e}");
            1
        }
    };
    println!(
        "\ntotal bench run time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Every server guard has been dropped by now; this is only a last safety net.
    kill_everything_registered();
    std::process::exit(code);
}

fn run(s: &Settings) -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("bootherd-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let root = dir.join("root");
    let logs = dir.join("logs");
    fs::create_dir_all(&root)?;
    fs::create_dir_all(&logs)?;
    let _cleanup = TempDir(dir.clone());

    println!(
        "tftp_peers: {} mode; {} MiB file, {} repetitions per cell, storm {} x {} MiB; loopback only",
        if s.quick { "QUICK" } else { "full" },
        s.file_len >> 20,
        s.reps,
        STORM_CLIENTS,
        s.storm_len >> 20
    );
    println!(
        "CPUs: {} (this process may use CPUs {}); load average at start: {}",
        s.cpus.describe(),
        cpus_allowed(),
        loadavg()
    );
    let big = random_bytes(s.file_len, 0x5eed_b007);
    let storm_bytes: Arc<[u8]> = random_bytes(s.storm_len, 0x5707_3000).into();
    fs::write(root.join("big.bin"), &big)?;
    fs::write(root.join("storm.bin"), &storm_bytes)?;
    fs::write(root.join("probe.bin"), probe_bytes())?;
    let atftp_ok = Command::new("atftp")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !atftp_ok {
        println!("atftp client not found: its column stays empty (run benches/install-peers.sh)");
    }

    // ---- Grid: every server up at once, interleaved within each cell.
    let mut results = Results::default();
    let mut servers: Vec<Server> = Vec::new();
    for kind in KINDS {
        if kind == Kind::Baseline && s.baseline.is_none() {
            continue;
        }
        match start_server(kind, s, &root, &logs, false) {
            Ok(server) => {
                println!(
                    "started {} on {} (pid {})",
                    kind.name(),
                    server.addr,
                    server.guard.pid()
                );
                servers.push(server);
            }
            Err(e) => println!("SKIPPING {}: {e}", kind.name()),
        }
    }
    if !servers.iter().any(|sv| sv.kind == Kind::Bootherd) {
        return Err(io::Error::other("bootherd itself did not start"));
    }
    let kinds: Vec<Kind> = servers.iter().map(|sv| sv.kind).collect();
    let atftp_out = dir.join("atftp-out.bin");
    let grid_started = Instant::now();
    let server_pids: Vec<u32> = servers.iter().map(|sv| sv.guard.pid()).collect();
    let meter = NoiseMeter {
        server_pids: &server_pids,
        retry_until: Instant::now() + s.deadline.mul_f64(0.6),
    };
    for (cell, (b, w)) in BLKSIZES
        .iter()
        .flat_map(|&b| WINDOWSIZES.iter().map(move |&w| (b, w)))
        .enumerate()
    {
        for rep in 0..s.reps {
            let tag = format!("[{b:>4}/{w:<2} rep {}/{}]", rep + 1, s.reps);
            let n = servers.len();
            for i in 0..n {
                let server = &servers[(cell + rep + i) % n];
                let name = server.kind.name();
                // Our client.
                let sample = meter.measure(&format!("{tag} {name:<9} ours "), || {
                    fetch_verify(
                        server.addr,
                        "big.bin",
                        Some(b),
                        Some(w),
                        &big,
                        s.fetch_limit,
                        ClientRetransmit::default(),
                    )
                    .map(|st| {
                        (
                            st.megabytes_per_second(),
                            st.blksize,
                            st.windowsize,
                            format!(
                                "negotiated {}/{}  {:.3} s",
                                st.blksize,
                                st.windowsize,
                                st.elapsed.as_secs_f64()
                            ),
                        )
                    })
                });
                results.push(((b, w), server.kind, Client::Ours), sample);
                // The atftp client.
                if !atftp_ok {
                    continue;
                }
                let key = ((b, w), server.kind, Client::Atftp);
                let sample = if server.kind.atftp_stalls(b, w) {
                    Sample::Skipped("stalls")
                } else if results.stalled(key) {
                    Sample::Skipped("stalled")
                } else {
                    meter.measure(&format!("{tag} {name:<9} atftp"), || {
                        atftp_fetch(server.addr, b, w, &big, &atftp_out, s.atftp_limit)
                            .map(|mbps| (mbps, b, w, String::new()))
                    })
                };
                results.push(key, sample);
            }
            if (b, w) == CEILING_CELL {
                let sample = meter.measure(&format!("{tag} UDP ceiling (iperf3)"), || {
                    udp_ceiling(s.iperf_secs, s.cpus, &logs)
                        .map(|v| (v, 1468, 0, "receiver".to_string()))
                });
                results.ceiling.push(sample);
            }
        }
    }
    let grid_time = grid_started.elapsed();
    drop(servers); // kills every grid server (dnsmasq included) by PID

    // ---- Storm: a fresh server each, so that its VmHWM is the storm's.
    let mut storms: Vec<(Kind, Result<StormResult, String>)> = Vec::new();
    let storm_started = Instant::now();
    for &kind in &kinds {
        if kind != Kind::Bootherd && !s.storm_peers {
            continue;
        }
        let result = start_server(kind, s, &root, &logs, true)
            .map_err(|e| e.to_string())
            .map(|server| {
                let r = storm(&server, STORM_CLIENTS, &storm_bytes, s.storm_limit);
                drop(server);
                r
            });
        match &result {
            Ok(r) => println!(
                "[storm] {:<9} {} clients x {} MiB: {:8.1} MB/s aggregate, {} ok, {} failed, {:.2} s, VmHWM {}, tree peak RSS {} KiB{}",
                kind.name(),
                STORM_CLIENTS,
                s.storm_len >> 20,
                r.megabytes_per_second,
                r.ok,
                r.failed,
                r.wall.as_secs_f64(),
                r.hwm_kib.map_or("?".into(), |k| format!("{k} KiB")),
                r.tree_peak_kib,
                r.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (first error: {e})"))
            ),
            Err(e) => println!("[storm] {:<9} FAILED to start: {e}", kind.name()),
        }
        storms.push((kind, result));
    }
    let storm_time = storm_started.elapsed();

    // ---- Tables.
    println!("\n================================ RESULTS ================================");
    println!(
        "file {} MiB of random bytes on 127.0.0.1; MB/s = 10^6 bytes/s; every download verified byte for byte",
        s.file_len >> 20
    );
    print_grid(&results, &kinds, Client::Ours, s.reps);
    if atftp_ok {
        print_grid(&results, &kinds, Client::Atftp, s.reps);
    }
    // The ceiling is the best repetition: other processes can only lower it, and the floor
    // against it is then the harder one to pass.
    let ceiling_runs: Vec<f64> = results
        .ceiling
        .iter()
        .filter_map(|c| match c {
            Sample::Ok { mbps, .. } => Some(*mbps),
            _ => None,
        })
        .collect();
    let ceiling_median = median(ceiling_runs.clone());
    let ceiling = ceiling_runs.iter().copied().reduce(f64::max);
    println!(
        "\n== UDP ceiling: iperf3 -u -b 0 -l 1468 -t {} on 127.0.0.1, receiver: best of {} {} (median {}) ==",
        s.iperf_secs,
        results.ceiling.len(),
        ceiling.map_or("FAILED".into(), |c| format!("{c:.1} MB/s")),
        ceiling_median.map_or("-".into(), |c| format!("{c:.1} MB/s"))
    );

    println!(
        "\n== storm: {} concurrent clients (our client, one thread) x {} MiB, blksize {} windowsize {} ==",
        STORM_CLIENTS,
        s.storm_len >> 20,
        HEADLINE.0,
        HEADLINE.1
    );
    println!(
        "{:<10} {:>10} {:>6} {:>7} {:>8} {:>12} {:>16} {:>12}",
        "server", "MB/s", "ok", "failed", "wall s", "VmHWM KiB", "tree peak KiB", "negotiated"
    );
    for (kind, r) in &storms {
        match r {
            Ok(r) => println!(
                "{:<10} {:>10.1} {:>6} {:>7} {:>8.2} {:>12} {:>16} {:>12}",
                kind.name(),
                r.megabytes_per_second,
                r.ok,
                r.failed,
                r.wall.as_secs_f64(),
                r.hwm_kib.map_or("?".into(), |k| k.to_string()),
                r.tree_peak_kib,
                format!("{}/{}", r.blksize, r.windowsize)
            ),
            Err(e) => println!("{:<10} FAILED: {e}", kind.name()),
        }
    }
    if s.storm_peers {
        println!("(atftpd ran with --maxthread {0} and dnsmasq with --tftp-max={0} for the storm: their defaults, 100 and 50, would refuse clients)", STORM_CLIENTS + 16);
    }

    // ---- Failures.
    let mut failures: BTreeMap<(Kind, Client), (usize, usize)> = BTreeMap::new();
    for ((_, kind, client), samples) in &results.samples {
        let e = failures.entry((*kind, *client)).or_default();
        for sample in samples {
            match sample {
                Sample::Ok { .. } => e.1 += 1,
                Sample::Failed(_) => {
                    e.0 += 1;
                    e.1 += 1;
                }
                Sample::Skipped(_) => {}
            }
        }
    }
    println!("\n== failed downloads in the grid (failed / runs) ==");
    for ((kind, client), (failed, runs)) in &failures {
        println!(
            "{:<10} {:<6} {failed} / {runs}",
            kind.name(),
            match client {
                Client::Ours => "ours",
                Client::Atftp => "atftp",
            }
        );
    }

    // ---- Floors.
    println!("\n================================ FLOORS ================================");
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a ",
    };
    // 1. Best peer at the headline cell.
    let ours = |cell| results.median((cell, Kind::Bootherd, Client::Ours));
    let best_peer = kinds
        .iter()
        .filter(|&&k| k != Kind::Bootherd && k != Kind::Baseline)
        .filter_map(|&k| results.median((HEADLINE, k, Client::Ours)).map(|m| (k, m)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let r1 = ours(HEADLINE).zip(best_peer).map(|(o, (_, p))| o / p);
    println!(
        "{} blksize {} windowsize {}: bootherd {} vs best peer {} = {} (floor {FLOOR_BEST_PEER:.1}x)",
        verdict(r1.map(|r| r >= FLOOR_BEST_PEER)),
        HEADLINE.0,
        HEADLINE.1,
        ours(HEADLINE).map_or("FAIL".into(), |v| format!("{v:.1} MB/s")),
        best_peer.map_or("-".into(), |(k, v)| format!("{} {v:.1} MB/s", k.name())),
        r1.map_or("-".into(), |r| format!("{r:.2}x"))
    );
    // 2. The UDP ceiling.
    let r2 = ours(CEILING_CELL).zip(ceiling).map(|(o, c)| o / c);
    println!(
        "{} blksize {} windowsize {}: bootherd {} vs UDP ceiling {} = {} (floor {:.0}%)",
        verdict(r2.map(|r| r >= FLOOR_CEILING)),
        CEILING_CELL.0,
        CEILING_CELL.1,
        ours(CEILING_CELL).map_or("FAIL".into(), |v| format!("{v:.1} MB/s")),
        ceiling.map_or("-".into(), |v| format!("{v:.1} MB/s")),
        r2.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
        FLOOR_CEILING * 100.0
    );
    // 3. Lock-step against tftpd-hpa, at every block size.
    let mut lockstep_all: Option<bool> = Some(true);
    let mut parts = Vec::new();
    for b in BLKSIZES {
        let cell = (b, 1);
        let hpa = results.median((cell, Kind::TftpdHpa, Client::Ours));
        let r = ours(cell).zip(hpa).map(|(o, h)| o / h);
        lockstep_all = match (lockstep_all, r) {
            (Some(all), Some(r)) => Some(all && r >= FLOOR_LOCKSTEP),
            _ => None,
        };
        parts.push(format!(
            "{b}: {} vs {} = {}",
            ours(cell).map_or("FAIL".into(), |v| format!("{v:.1}")),
            hpa.map_or("-".into(), |v| format!("{v:.1}")),
            r.map_or("-".into(), |r| format!("{r:.2}x"))
        ));
    }
    println!(
        "{} windowsize 1: bootherd vs tftpd-hpa MB/s (floor: no slower) at blksize {}",
        verdict(lockstep_all),
        parts.join("; ")
    );
    // 4. The storm.
    match storms.iter().find(|(k, _)| *k == Kind::Bootherd) {
        Some((_, Ok(r))) => {
            let ok = r.failed == 0 && r.hwm_kib.is_some_and(|k| k < FLOOR_STORM_RSS_KIB);
            println!(
                "{} storm {} x {} MiB: {} failures (floor 0), server peak RSS (VmHWM) {} (floor < {} KiB), {:.1} MB/s aggregate",
                verdict(Some(ok)),
                STORM_CLIENTS,
                s.storm_len >> 20,
                r.failed,
                r.hwm_kib.map_or("?".into(), |k| format!("{k} KiB")),
                FLOOR_STORM_RSS_KIB,
                r.megabytes_per_second
            );
        }
        Some((_, Err(e))) => println!("MISS storm: bootherd did not start: {e}"),
        None => println!("n/a  storm: not run"),
    }
    let our_failures: usize = failures
        .iter()
        .filter(|((k, c), _)| *k == Kind::Bootherd && *c == Client::Ours)
        .map(|(_, (f, _))| *f)
        .sum();
    println!(
        "{} bootherd grid downloads with our client: {our_failures} failed",
        verdict(Some(our_failures == 0))
    );
    println!(
        "\nphases: grid {:.1} s, storm {:.1} s; CPUs {}; load average at the end: {}",
        grid_time.as_secs_f64(),
        storm_time.as_secs_f64(),
        s.cpus.describe(),
        loadavg()
    );
    Ok(())
}
