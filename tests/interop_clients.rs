//! `bootherd tftp` against TFTP clients nobody here wrote: atftp, the tftp-hpa client, curl and
//! busybox, on loopback. Every fetch is compared byte for byte with the served file, and the
//! server log must show the transfer parameters the client asked for.
//!
//! The clients are Debian packages (`atftp`, `tftp-hpa`, `curl`, `busybox`). A missing one
//! fails the test with the package to install; nothing is skipped. Every client runs under
//! `timeout(1)`, so a hung client fails its test instead of hanging it.

mod common;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{pattern, TempDir, TftpServer};

/// Seconds a client may run before `timeout(1)` stops it (then SIGKILL 5 s later).
const CLIENT_TIMEOUT_SECS: u32 = 60;

/// The real clients under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Atftp,
    TftpHpa,
    Curl,
    Busybox,
}

/// Options a fetch asks for; `None` lets the client send its default (usually nothing).
#[derive(Debug, Clone, Copy)]
struct Opts {
    blksize: Option<u16>,
    windowsize: Option<u16>,
}

impl Opts {
    const PLAIN: Opts = Opts {
        blksize: None,
        windowsize: None,
    };

    const fn blksize(n: u16) -> Opts {
        Opts {
            blksize: Some(n),
            windowsize: None,
        }
    }

    const fn window(self, n: u16) -> Opts {
        Opts {
            windowsize: Some(n),
            ..self
        }
    }
}

/// What a client is asked to do.
#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Get {
        remote: &'a str,
        local: &'a Path,
        opts: Opts,
    },
    Put {
        local: &'a Path,
        remote: &'a str,
    },
}

impl Client {
    const ALL: [Client; 4] = [
        Client::Atftp,
        Client::TftpHpa,
        Client::Curl,
        Client::Busybox,
    ];

    fn program(self) -> &'static str {
        match self {
            Client::Atftp => "atftp",
            Client::TftpHpa => "tftp",
            Client::Curl => "curl",
            Client::Busybox => "busybox",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Client::TftpHpa => "tftp-hpa",
            other => other.program(),
        }
    }

    /// Fails the test, naming the Debian package, unless the client is installed and able.
    fn require(self) {
        let install = format!(
            "install the Debian package `{0}` (apt-get install -y {0})",
            self.package()
        );
        let on_path = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(self.program()).is_file())
        });
        assert!(
            on_path,
            "TFTP client `{}` not found on PATH: {install}",
            self.program()
        );
        // Some builds lack TFTP; check the capability, not just the binary.
        let probe = match self {
            Client::Curl => Some((["--version"], "tftp")),
            Client::Busybox => Some((["--list"], "tftp")),
            Client::Atftp | Client::TftpHpa => None,
        };
        if let Some((args, needle)) = probe {
            let out = Command::new(self.program())
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program()));
            assert!(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|w| w == needle),
                "`{}` has no TFTP support: {install}",
                self.program()
            );
        }
    }

    /// Command-line arguments (after the program name) for `op` against `server`.
    fn args(self, server: SocketAddr, op: Op<'_>) -> Vec<OsString> {
        assert_eq!(server.ip().to_string(), "127.0.0.1", "loopback only");
        let host = || ["127.0.0.1".into(), server.port().to_string().into()];
        // curl takes a URL: a backslash must be percent-encoded to reach the server as is.
        let url = |remote: &str| -> OsString {
            format!("tftp://{server}/{}", remote.replace('\\', "%5C")).into()
        };
        let mut a: Vec<OsString> = Vec::new();
        match (self, op) {
            (
                Client::Atftp,
                Op::Get {
                    remote,
                    local,
                    opts,
                },
            ) => {
                for (name, value) in [("blksize", opts.blksize), ("windowsize", opts.windowsize)] {
                    if let Some(v) = value {
                        a.extend(["--option".into(), format!("{name} {v}").into()]);
                    }
                }
                a.extend(["-g".into(), "-r".into(), remote.into(), "-l".into()]);
                a.push(local.into());
                a.extend(host());
            }
            (Client::Atftp, Op::Put { local, remote }) => {
                a.extend(["-p".into(), "-l".into(), local.into(), "-r".into()]);
                a.push(remote.into());
                a.extend(host());
            }
            (Client::TftpHpa, op) => {
                a.extend(host());
                a.extend(["-m", "binary", "-c"].map(OsString::from));
                match op {
                    Op::Get {
                        remote,
                        local,
                        opts,
                    } => {
                        assert!(
                            opts.blksize.is_none() && opts.windowsize.is_none(),
                            "tftp-hpa 5.2 sends no options"
                        );
                        a.extend(["get".into(), remote.into(), local.into()]);
                    }
                    Op::Put { local, remote } => {
                        a.extend(["put".into(), local.into(), remote.into()]);
                    }
                }
            }
            (Client::Curl, op) => {
                // --path-as-is: send `..` to the server instead of resolving it locally.
                a.extend(["-sS", "--path-as-is"].map(OsString::from));
                match op {
                    Op::Get {
                        remote,
                        local,
                        opts,
                    } => {
                        assert!(opts.windowsize.is_none(), "curl has no windowsize");
                        if let Some(b) = opts.blksize {
                            a.extend(["--tftp-blksize".into(), b.to_string().into()]);
                        }
                        a.extend([url(remote), "-o".into(), local.into()]);
                    }
                    Op::Put { local, remote } => {
                        a.extend(["-T".into(), local.into(), url(remote)]);
                    }
                }
            }
            (Client::Busybox, op) => {
                a.push("tftp".into());
                match op {
                    Op::Get {
                        remote,
                        local,
                        opts,
                    } => {
                        assert!(opts.windowsize.is_none(), "busybox tftp has no windowsize");
                        if let Some(b) = opts.blksize {
                            a.extend(["-b".into(), b.to_string().into()]);
                        }
                        a.extend(["-g".into(), "-r".into(), remote.into(), "-l".into()]);
                        a.push(local.into());
                    }
                    Op::Put { local, remote } => {
                        a.extend(["-p".into(), "-l".into(), local.into(), "-r".into()]);
                        a.push(remote.into());
                    }
                }
                a.extend(host());
            }
        }
        a
    }

    /// Runs `op` under `timeout(1)`; fails the test if the client hung.
    fn run(self, server: SocketAddr, op: Op<'_>) -> Run {
        self.require();
        let args = self.args(server, op);
        let line = format!(
            "{} {}",
            self.program(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out: Output = Command::new("timeout")
            .args(["--kill-after=5", &CLIENT_TIMEOUT_SECS.to_string()])
            .arg(self.program())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run timeout(1) (coreutils)");
        let run = Run {
            line,
            code: out.status.code(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        assert!(
            !matches!(run.code, Some(124 | 137)),
            "client hung, killed after {CLIENT_TIMEOUT_SECS} s: {run:?}"
        );
        run
    }
}

/// A finished client run.
#[derive(Debug)]
struct Run {
    line: String,
    code: Option<i32>,
    output: String,
}

/// A file under the served root.
struct Served {
    /// The name the client asks for (maybe Windows-style).
    request: &'static str,
    /// Its path below the root, as the server logs it.
    path: &'static str,
    bytes: Vec<u8>,
}

/// A served root and a scratch directory for the clients' output.
struct Tree {
    root: TempDir,
    out: TempDir,
    files: Vec<Served>,
}

impl Tree {
    fn new(files: &[(&'static str, &'static str, usize)]) -> Self {
        let root = TempDir::new("interop-root");
        let files = files
            .iter()
            .enumerate()
            .map(|(i, &(request, path, len))| {
                let bytes = pattern(len, 1000 + i as u64);
                let full = root.path().join(path);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(full, &bytes).unwrap();
                Served {
                    request,
                    path,
                    bytes,
                }
            })
            .collect();
        Tree {
            root,
            out: TempDir::new("interop-out"),
            files,
        }
    }

    /// Files of a few sizes: empty, odd, an exact multiple of both 512 and 1468, one in a
    /// subdirectory asked for with backslashes, and one of several MB.
    fn standard() -> Self {
        Tree::new(&[
            ("empty.bin", "empty.bin", 0),
            ("pxelinux.cfg", "pxelinux.cfg", 777),
            ("exact.bin", "exact.bin", 512 * 1468),
            ("boot\\x86_64\\vmlinuz", "boot/x86_64/vmlinuz", 200_003),
            ("large.bin", "large.bin", (3 << 20) + 1),
        ])
    }

    /// A fresh output path.
    fn out_path(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        self.out
            .path()
            .join(format!("got-{}", N.fetch_add(1, Ordering::Relaxed)))
    }

    /// Names of everything below the root, sorted.
    fn listing(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                }
                out.push(path);
            }
        }
        let mut all = Vec::new();
        walk(self.root.path(), &mut all);
        all.sort();
        all
    }
}

/// Whether `client` can fetch `file` at all (a limitation of the client, not the server).
fn client_can_fetch(client: Client, file: &Served) -> bool {
    // curl rejects an OACK with `tsize 0` ("invalid tsize -:0:- value in OACK packet", exit 71),
    // though RFC 2349 says the server answers with the file's size, and that is 0.
    !(client == Client::Curl && file.bytes.is_empty())
}

/// Fetches `file` with `client`, checks the bytes, and removes the copy.
fn fetch(server: &TftpServer, tree: &Tree, client: Client, file: &Served, opts: Opts) {
    let local = tree.out_path();
    let run = client.run(
        server.addr,
        Op::Get {
            remote: file.request,
            local: &local,
            opts,
        },
    );
    assert_eq!(run.code, Some(0), "fetch of {} failed: {run:?}", file.path);
    let got = std::fs::read(&local)
        .unwrap_or_else(|e| panic!("no output file {}: {e}; {run:?}", local.display()));
    assert_same(&got, &file.bytes, &run.line);
    std::fs::remove_file(&local).unwrap();
}

/// [`fetch`], then checks that the server logged the transfer with the expected block and
/// window sizes and saw it complete; clears the log for the next fetch.
fn fetch_logged(server: &TftpServer, tree: &Tree, client: Client, file: &Served, opts: Opts) {
    fetch(server, tree, client, file, opts);
    let len = file.bytes.len();
    for needle in [
        format!(
            "sending {} ({len} bytes, blksize {}, windowsize {})",
            file.path,
            opts.blksize.unwrap_or(512),
            opts.windowsize.unwrap_or(1)
        ),
        format!("sent {} ({len} bytes)", file.path),
    ] {
        assert!(
            server.logged(&needle),
            "{client:?} {opts:?}: server log lacks {needle:?}: {:#?}",
            server.log.lock().unwrap()
        );
    }
    // Lines reach the log in order: everything up to this transfer's end is in it by now.
    server.log.lock().unwrap().clear();
}

/// Byte comparison that reports the first difference instead of printing megabytes.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first differing byte at {first:?}",
            got.len(),
            want.len()
        );
    }
}

/// Every file of the standard tree with `client`, once per option set, default server.
fn fetch_standard_tree(client: Client, option_sets: &[Opts]) {
    let tree = Tree::standard();
    let server = TftpServer::start(tree.root.path(), &[]);
    for &opts in option_sets {
        for file in tree.files.iter().filter(|f| client_can_fetch(client, f)) {
            fetch_logged(&server, &tree, client, file, opts);
        }
    }
}

#[test]
fn atftp_fetches_byte_exact() {
    fetch_standard_tree(
        Client::Atftp,
        &[
            Opts::blksize(512),
            Opts::blksize(1468),
            Opts::blksize(1468).window(16),
        ],
    );
}

#[test]
fn curl_fetches_byte_exact() {
    fetch_standard_tree(Client::Curl, &[Opts::PLAIN, Opts::blksize(1468)]);
}

#[test]
fn tftp_hpa_fetches_byte_exact() {
    fetch_standard_tree(Client::TftpHpa, &[Opts::PLAIN]);
}

#[test]
fn busybox_fetches_byte_exact() {
    fetch_standard_tree(Client::Busybox, &[Opts::PLAIN, Opts::blksize(1468)]);
}

/// A file of `len` bytes at blksize 512 with every client, lock-step and (atftp) windowed.
fn fetch_past_block_65535(len: usize) {
    assert!(len / 512 >= 65535, "too small to roll over");
    let tree = Tree::new(&[("huge.bin", "huge.bin", len)]);
    let server = TftpServer::start(tree.root.path(), &[]);
    let file = &tree.files[0];
    for client in Client::ALL {
        fetch_logged(&server, &tree, client, file, Opts::PLAIN);
    }
    fetch_logged(
        &server,
        &tree,
        Client::Atftp,
        file,
        Opts::blksize(512).window(16),
    );
}

#[test]
fn block_numbers_roll_over_at_blksize_512() {
    // 81920 blocks: block numbers wrap to 0 after 65535.
    fetch_past_block_65535(40 << 20);
}

#[test]
fn final_empty_block_numbered_zero() {
    // 65535 full blocks: the terminating empty block is block 65536, sent as 0.
    fetch_past_block_65535(65535 * 512);
}

#[test]
fn single_port_mode_byte_exact() {
    let tree = Tree::standard();
    let server = TftpServer::start(tree.root.path(), &["--single-port"]);
    for (client, opts) in [
        (Client::Atftp, Opts::blksize(1468).window(16)),
        (Client::Curl, Opts::PLAIN),
        (Client::Curl, Opts::blksize(1468)),
    ] {
        for file in tree.files.iter().filter(|f| client_can_fetch(client, f)) {
            fetch_logged(&server, &tree, client, file, opts);
        }
    }
}

#[test]
fn single_port_mode_serves_clients_at_once() {
    // All transfers share the listening socket; the server must keep them apart by address.
    let tree = Tree::standard();
    let server = TftpServer::start(tree.root.path(), &["--single-port"]);
    let file = tree.files.last().unwrap();
    let fetches = [
        (Client::Atftp, Opts::blksize(1468).window(16)),
        (Client::Atftp, Opts::PLAIN),
        (Client::Curl, Opts::blksize(1468)),
        (Client::TftpHpa, Opts::PLAIN),
        (Client::Busybox, Opts::blksize(1468)),
    ];
    std::thread::scope(|s| {
        for (client, opts) in fetches {
            let (server, tree) = (&server, &tree);
            s.spawn(move || fetch(server, tree, client, file, opts));
        }
    });
    // Every transfer must also have completed from the server's side (waits up to 2 s).
    let done = format!("sent {} ({} bytes)", file.path, file.bytes.len());
    let completed = || {
        let log = server.log.lock().unwrap();
        log.iter().filter(|l| l.contains(&done)).count()
    };
    for _ in 0..200 {
        if completed() == fetches.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        completed(),
        fetches.len(),
        "{:#?}",
        server.log.lock().unwrap()
    );
}

/// A request the server must refuse.
struct Refusal {
    what: &'static str,
    /// A get of this name, or a put when `None`.
    get: Option<&'static str>,
    /// TFTP error code and message the client must be sent.
    code: u16,
    message: &'static str,
    /// What the server must log.
    logged: &'static str,
}

const REFUSALS: [Refusal; 3] = [
    Refusal {
        what: "missing file",
        get: Some("no-such-file.bin"),
        code: 1,
        message: "file not found",
        logged: "no-such-file.bin: file not found",
    },
    Refusal {
        what: "parent directory",
        get: Some("../etc/passwd"),
        code: 2,
        message: "file name refused",
        logged: "refused \"../etc/passwd\": '..' refused",
    },
    Refusal {
        what: "write request",
        get: None,
        code: 2,
        message: "read-only server",
        logged: "write request for \"uploaded.bin\" refused (read-only server)",
    },
];

/// Whether `run` shows that `client` failed with the server's ERROR `code`/`message`.
fn client_reports_refusal(client: Client, run: &Run, code: u16, message: &str) -> bool {
    match client {
        // Non-zero exit, and the server's message shown.
        Client::Atftp | Client::Busybox => run.code != Some(0) && run.output.contains(message),
        // curl maps the TFTP code to its exit code: 68 "file not found", 69 "permission
        // problem". Its message is masked by "getpeername() failed" (curl 7.88, fixed in curl
        // PR #11332), so only the exit code tells.
        Client::Curl => run.code == Some(if code == 1 { 68 } else { 69 }),
        // tftp-hpa's `-c` always exits 0 (main.c: the handler runs, then `exit(0)`), so its
        // exit status cannot tell; it prints the server's error.
        Client::TftpHpa => run
            .output
            .contains(&format!("Error code {code}: {message}")),
    }
}

#[test]
fn refusals_fail_real_clients() {
    let tree = Tree::standard();
    let server = TftpServer::start(tree.root.path(), &[]);
    let upload = tree.out.path().join("upload.bin");
    std::fs::write(&upload, pattern(3000, 7)).unwrap();
    let before = tree.listing();
    for client in Client::ALL {
        for refusal in &REFUSALS {
            let local = tree.out_path();
            let op = match refusal.get {
                Some(remote) => Op::Get {
                    remote,
                    local: &local,
                    opts: Opts::PLAIN,
                },
                None => Op::Put {
                    local: &upload,
                    remote: "uploaded.bin",
                },
            };
            let run = client.run(server.addr, op);
            let what = format!("{client:?}, {}", refusal.what);
            assert!(
                client_reports_refusal(client, &run, refusal.code, refusal.message),
                "{what}: the client did not fail with error {} {:?}: {run:?}",
                refusal.code,
                refusal.message
            );
            assert!(
                server.logged(refusal.logged),
                "{what}: server log lacks {:?}: {:#?}",
                refusal.logged,
                server.log.lock().unwrap()
            );
            server.log.lock().unwrap().clear();
            // Some clients leave an empty output file behind; it must not hold any bytes.
            if let Ok(got) = std::fs::read(&local) {
                assert!(got.is_empty(), "{what}: {} bytes received", got.len());
            }
            assert_eq!(tree.listing(), before, "{what}: the served root changed");
        }
    }
}
