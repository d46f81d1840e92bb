//! The alternate's HTTP service over loopback, as a client sees it: files, ranges, keep-alive,
//! entity tags, the path rules, the malformed-request table over real sockets (each bad
//! request gets its status or a closed connection while a download beside it goes on
//! unharmed), slow clients, the connection cap, load accounting in the central's table, and
//! simulated clients booting over HTTP with a fallback to TFTP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bootherd::report::client::status;
use bootherd::report::wire::{from_hex, hex, sha256, Key};
use common::{bootherd, pattern, Daemon, TempDir};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const BIG: usize = 4 << 20;

struct Site {
    dir: TempDir,
    big: Vec<u8>,
}

impl Site {
    fn new() -> Site {
        let dir = TempDir::new("http");
        let p = dir.path();
        std::fs::write(p.join("report.key"), KEY_HEX).unwrap();
        std::fs::create_dir_all(p.join("boot/configs")).unwrap();
        std::fs::create_dir_all(p.join("boot/sub")).unwrap();
        let big = pattern(BIG, 11);
        std::fs::write(p.join("boot/big.bin"), &big).unwrap();
        std::fs::write(p.join("secret"), b"SECRET").unwrap();
        std::os::unix::fs::symlink("../secret", p.join("boot/escape")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p.join("boot/device")).unwrap();
        std::fs::write(
            p.join("boot/configs/default"),
            format!(
                "kernel big.bin sha256={}\ncmdline alt=${{alternate}}\n",
                hex(&sha256(&big))
            ),
        )
        .unwrap();
        Site { dir, big }
    }

    fn config(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("key_file = \"report.key\"\n{body}")).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn central(&self) -> (Daemon, SocketAddr, SocketAddr) {
        let config = self.config(
            "central.toml",
            "[central]\ntftp_listen = \"127.0.0.1:0\"\nreport_listen = \"127.0.0.1:0\"\n",
        );
        let d = Daemon::spawn(&["central", "--config", &config]);
        let reports = d.addr_after("reports on ");
        let tftp = d.addr_after("TFTP on ");
        (d, reports, tftp)
    }

    /// An alternate reporting to `central`, with HTTP when `http` holds `[http]` lines.
    fn alternate(&self, id: &str, ip: &str, central: SocketAddr, http: Option<&str>) -> Alt {
        let http_lines = http.map_or(String::new(), |extra| {
            format!("http_listen = \"{ip}:0\"\n[http]\n{extra}\n")
        });
        let config = self.config(
            &format!("{id}.toml"),
            &format!(
                "[alternate]\nid = \"{id}\"\ntftp_listen = \"{ip}:0\"\nroot = \"boot\"\ncentrals = [\"{central}\"]\ninterval_ms = 200\n{http_lines}"
            ),
        );
        let daemon = Daemon::spawn(&["alternate", "--config", &config]);
        let http = http.map(|_| daemon.addr_after("http: serving on "));
        Alt { daemon, http }
    }
}

struct Alt {
    daemon: Daemon,
    http: Option<SocketAddr>,
}

/// A whole answer: status code, head lines, body.
#[derive(Debug)]
struct Answer {
    code: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one answer from `s` (its body by Content-Length; none for HEAD).
fn read_answer(s: &mut TcpStream, head_only: bool) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let code = head[9..12].parse().unwrap();
    let mut answer = Answer {
        code,
        head,
        body: Vec::new(),
    };
    let len: usize = answer
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    if !head_only && code != 304 {
        answer.body = vec![0; len];
        s.read_exact(&mut answer.body).unwrap();
    }
    Some(answer)
}

fn get(addr: SocketAddr, request: &str) -> Answer {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    read_answer(&mut s, request.starts_with("HEAD")).unwrap()
}

/// Whether the server closed `s` (EOF, or a reset) within a few seconds.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = [0u8; 64];
    matches!(s.read(&mut rest), Ok(0) | Err(_)) && !matches!(s.read(&mut rest), Ok(n) if n > 0)
}

#[test]
fn files_ranges_keep_alive_etags_and_path_rules() {
    let site = Site::new();
    let (_central, reports, _) = site.central();
    let alt = site.alternate("alt1", "127.0.0.1", reports, Some(""));
    let addr = alt.http.unwrap();

    let whole = get(addr, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(whole.code, 200);
    assert!(whole.body == site.big, "the file, byte for byte");
    let etag = format!("\"{}\"", hex(&sha256(&site.big)));
    assert_eq!(
        whole.header("etag"),
        Some(etag.as_str()),
        "the file's SHA-256"
    );
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));

    let ranged = get(
        addr,
        &format!("GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999\r\nIf-Range: {etag}\r\n\r\n"),
    );
    assert_eq!(ranged.code, 206);
    assert_eq!(
        ranged.header("content-range"),
        Some(&*format!("bytes 1000-1999/{BIG}"))
    );
    assert!(ranged.body == site.big[1000..2000]);
    let head = get(addr, "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (head.code, head.header("content-length")),
        (200, Some(&*BIG.to_string()))
    );
    let cached = get(
        addr,
        &format!("GET /big.bin HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    assert_eq!((cached.code, cached.body.len()), (304, 0));

    // Keep-alive and pipelining: three requests in one write, three answers in order.
    let mut s = connect(addr);
    s.write_all(
        b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n\
          GET /bootherd.cfg/-/52-54-00-00-00-01/7 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /bootherd.ipxe/-/-/7 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert!(read_answer(&mut s, false).unwrap().body == site.big[..10]);
    let config = read_answer(&mut s, false).unwrap();
    assert_eq!(config.header("cache-control"), Some("no-store"));
    assert!(String::from_utf8(config.body).unwrap().contains("alt=alt1"));
    let script = String::from_utf8(read_answer(&mut s, false).unwrap().body).unwrap();
    assert!(
        script.contains(&format!("kernel http://{addr}/big.bin")),
        "an iPXE script fetched over HTTP names http:// files: {script}"
    );

    // The TFTP path rules, after percent-decoding.
    for (target, code) in [
        ("/../secret", 403),
        ("/%2e%2e/secret", 403),
        ("/sub/%2E%2E/%2e%2e/secret", 403),
        ("/..%2fsecret", 403),
        ("/escape", 403),
        ("/device", 403),
        ("/sub", 403),
        ("/missing", 404),
        ("//etc/passwd", 403),
        ("/%00", 400),
    ] {
        let a = get(addr, &format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(a.code, code, "{target}");
        assert!(!a.body.windows(6).any(|w| w == b"SECRET"));
    }
}

/// The malformed-request and smuggling table over real sockets: each request gets its status
/// and a closed connection (or just a closed connection), and a download running beside them
/// completes, byte for byte.
#[test]
fn bad_requests_get_their_status_and_harm_nobody_else() {
    let site = Site::new();
    let (_central, reports, _) = site.central();
    let alt = site.alternate(
        "alt1",
        "127.0.0.1",
        reports,
        Some("request_timeout_ms = 1500"),
    );
    let addr = alt.http.unwrap();

    // A slow reader downloading the big file beside the whole table.
    let mut bystander = connect(addr);
    bystander
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    let long_header = format!(
        "GET /big.bin HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let table: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("no version", b"GET /big.bin\r\n\r\n".to_vec(), Some(400)),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), Some(400)),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Some(505)),
        ("no Host", b"GET /big.bin HTTP/1.1\r\n\r\n".to_vec(), Some(400)),
        ("two Hosts", b"GET /big.bin HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), Some(400)),
        ("bare LF", b"GET /big.bin HTTP/1.1\nHost: x\n\n".to_vec(), Some(400)),
        ("folded", b"GET /big.bin HTTP/1.1\r\nHost: x\r\n X: y\r\n\r\n".to_vec(), Some(400)),
        ("space before colon", b"GET /big.bin HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(), Some(400)),
        ("huge header", long_header.into_bytes(), Some(431)),
        ("body", b"GET /big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(), Some(413)),
        (
            "CL.TE",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /secret HTTP/1.1\r\n\r\n".to_vec(),
            Some(501),
        ),
        (
            "TE.CL",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /escape HTTP/1.1\r\n\r\n0\r\n\r\n".to_vec(),
            Some(501),
        ),
        (
            "two Content-Lengths",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /escape HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        ("POST", b"POST /big.bin HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Some(405)),
        ("bad range", b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999-\r\nConnection: close\r\n\r\n".to_vec(), Some(416)),
        // A head that never ends: 408 once the request time is up (slowloris).
        ("unfinished head", b"GET /big.bin HTTP/1.1\r\nHost: x\r\n".to_vec(), Some(408)),
    ];
    for (name, bytes, want) in table {
        let mut s = connect(addr);
        let started = Instant::now();
        s.write_all(&bytes).unwrap();
        let answer = read_answer(&mut s, true);
        assert_eq!(answer.as_ref().map(|a| a.code), want, "{name}");
        assert!(
            closed(&mut s),
            "{name}: the connection is closed after the answer"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name}: at once, or at the request timeout"
        );
    }

    // Slowloris proper: a head trickled a byte every 200 ms is cut at the request time limit.
    let mut slow = connect(addr);
    let started = Instant::now();
    let mut cut = false;
    for b in b"GET /big.bin HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = read_answer(&mut slow, true);
    assert!(
        cut || answer.as_ref().is_some_and(|a| a.code == 408),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(12));

    // The bystander, reading all along, has the whole file.
    let answer = read_answer(&mut bystander, false).unwrap();
    assert_eq!(answer.code, 200);
    assert!(
        answer.body == site.big,
        "the download beside the bad requests is intact"
    );
}

#[test]
fn connection_cap_idle_timeout_and_load_in_the_report() {
    let site = Site::new();
    let (central, reports, _) = site.central();
    let alt = site.alternate(
        "alt1",
        "127.0.0.1",
        reports,
        Some("max_connections = 3\nidle_timeout_ms = 1000\nsend_timeout_ms = 20000"),
    );
    let addr = alt.http.unwrap();
    let key = Key::new(&from_hex(KEY_HEX).unwrap()).unwrap();

    // A client that asks for the big file and does not read: its transfer stays in progress
    // with bytes left, and the central's table shows it like a TFTP transfer.
    let stalled = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stalled.set_recv_buffer_size(4096).unwrap();
    stalled.connect(&addr.into()).unwrap();
    let mut stalled: TcpStream = stalled.into();
    stalled
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let answer = smol::block_on(status(reports, &key, Duration::from_millis(500))).unwrap();
        let row = answer
            .rows
            .into_iter()
            .find(|r| r.report.alternate == "alt1");
        if let Some(row) = row.filter(|r| r.report.active_transfers == 1) {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "no active HTTP transfer in the central's table"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(row.report.bytes_remaining > 0 && row.report.bytes_remaining < BIG as u64);
    assert_eq!(row.report.http_addresses, [addr]);
    drop(central);

    // Two more connections fill the cap of 3; a fourth gets 503 at once.
    let mut idle = connect(addr);
    let _third = connect(addr);
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = connect(addr);
    let started = Instant::now();
    let answer = read_answer(&mut fourth, true).unwrap();
    assert_eq!(answer.code, 503);
    assert!(started.elapsed() < Duration::from_millis(500), "at once");
    // The idle ones are closed after the idle timeout, which makes room again.
    assert!(closed(&mut idle), "idle connection closed");
    drop(stalled);
    // Room again once the server has seen the other idle one and the stalled one go (a
    // moment on a busy host): 503 until then, never anything else.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let code = get(addr, "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").code;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(Instant::now() < deadline, "no room after the idle timeout");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn simulated_clients_boot_over_http_and_fall_back_to_tftp() {
    let site = Site::new();
    let (central, reports, tftp) = site.central();
    let with_http = site.alternate("alt1", "127.0.0.11", reports, Some(""));
    let without = site.alternate("alt2", "127.0.0.12", reports, None);
    let key = Key::new(&from_hex(KEY_HEX).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while smol::block_on(status(reports, &key, Duration::from_millis(500)))
        .unwrap()
        .rows
        .iter()
        .filter(|r| r.score_us.is_some())
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the central never ranked both");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::process::Command::new(bootherd())
        .args([
            "client",
            "--central",
            &tftp.to_string(),
            "--clients",
            "8",
            "--http",
            "--json",
        ])
        .env("BOOTHERD_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"failed\":0"), "{text}");
    let http_sends = with_http
        .daemon
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("http: ") && l.contains(": sent big.bin"))
        .count();
    let tftp_sends_alt2 = without
        .daemon
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("tftp: ") && l.contains(": sent big.bin"))
        .count();
    assert!(http_sends > 0, "alt1 served over HTTP");
    assert_eq!(
        http_sends + tftp_sends_alt2,
        8,
        "alt2, without HTTP, over TFTP"
    );
    drop(central);
}
