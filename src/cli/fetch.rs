//! `bootherd fetch`: download one file over TFTP.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use smol::future::FutureExt;

use super::args::{Args, UsageError};
use super::CliError;
use crate::lifecycle::Requests;
use crate::tftp::client::fetch_with_progress;
use crate::tftp::download::{ClientRetransmit, RequestSpec};

pub const USAGE: &str = "\
Usage: bootherd fetch tftp://HOST[:PORT]/PATH [options]

Downloads PATH from a TFTP server and prints a one-line summary on stderr (and, on a terminal,
a progress line while it runs). Asks for blksize 1468 (a full 1500-byte Ethernet frame), a
window of 16 and the size (servers that do not know the options answer lock-step with 512-byte
blocks); --rfc1350 asks for nothing. Ctrl-C stops it and removes the partial file.

Options:
  -o, --output FILE      where to write (- for stdout) [default: PATH's last component]
  --blksize N            block size to ask for, 8..65464 (RFC 2348) [default: 1468]
  --windowsize N         window size to ask for, at least 1 (RFC 7440) [default: 16]
  --rfc1350              plain RFC 1350: no options (512-byte blocks, lock-step, no size)
  --timeout-ms N         re-send after this much silence [default: 500]
  --retries N            re-sends without progress before giving up [default: 10]
  -q, --quiet            no summary or progress line
  -h, --help             this help
  -V, --version          print the version
";

/// Block size asked for by default: one DATA packet fills a 1500-byte MTU.
const DEFAULT_BLKSIZE: u16 = 1468;
/// Window asked for by default (RFC 7440's measurements: most of the gain, little burst).
const DEFAULT_WINDOWSIZE: u16 = 16;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub fn run(mut args: Args) -> Result<(), CliError> {
    let defaults = ClientRetransmit::default();
    let output: Option<String> = args.value(&["-o", "--output"])?;
    let blksize: Option<u16> = args.value(&["--blksize"])?;
    let windowsize: Option<u16> = args.value(&["--windowsize"])?;
    let rfc1350 = args.flag(&["--rfc1350"]);
    let timeout_ms: u64 = args
        .value(&["--timeout-ms"])?
        .unwrap_or(defaults.timeout.as_millis() as u64);
    let retries: u32 = args.value(&["--retries"])?.unwrap_or(defaults.retries);
    let quiet = args.flag(&["-q", "--quiet"]);
    let url = args.positional("tftp:// URL")?;
    args.finish()?;

    if blksize.is_some_and(|b| !(8..=65464).contains(&b)) {
        return Err(UsageError("--blksize must be 8..65464".into()).into());
    }
    if windowsize == Some(0) {
        return Err(UsageError("--windowsize must be at least 1".into()).into());
    }
    if rfc1350 && (blksize.is_some() || windowsize.is_some()) {
        return Err(UsageError(
            "--rfc1350 asks for no options: drop --blksize/--windowsize".into(),
        )
        .into());
    }
    let (authority, path) = parse_url(&url)?;
    let server = resolve(&authority, 69).map_err(|e| CliError::Failed(format!("{url}: {e}")))?;
    let output = output.unwrap_or_else(|| path.rsplit(['/', '\\']).next().unwrap_or(&path).into());
    if output.is_empty() {
        return Err(UsageError("no file name in the URL: give -o FILE".into()).into());
    }
    let spec = RequestSpec {
        path: path.clone(),
        blksize: (!rfc1350).then(|| blksize.unwrap_or(DEFAULT_BLKSIZE)),
        windowsize: (!rfc1350).then(|| windowsize.unwrap_or(DEFAULT_WINDOWSIZE)),
        tsize: !rfc1350,
    };
    let retransmit = ClientRetransmit {
        timeout: Duration::from_millis(timeout_ms.max(1)),
        retries,
    };
    // Before the file exists: a Ctrl-C from now on removes it.
    let mut requests = Requests::stop_signals().map_err(CliError::Failed)?;
    let mut sink = Sink::open(&output).map_err(CliError::Failed)?;
    let mut line = (!quiet && io::stderr().is_terminal()).then(|| ProgressLine::new(&path));
    let mut out = BufWriter::with_capacity(1 << 20, &mut sink);
    let download = async {
        fetch_with_progress(server, spec, retransmit, &mut out, &mut |received, size| {
            if let Some(line) = &mut line {
                line.update(received, size);
            }
        })
        .await
        .map_err(|e| e.to_string())
    };
    let interrupted = async {
        requests.next().await;
        Err("interrupted; the partial file is removed".to_string())
    };
    let result = smol::block_on(download.or(interrupted))
        .and_then(|stats| out.flush().map(|()| stats).map_err(|e| e.to_string()));
    drop(out);
    if let Some(line) = &line {
        line.clear();
    }
    let stats = match result.and_then(|stats| sink.finish().map(|()| stats)) {
        Ok(stats) => stats,
        Err(e) => return Err(CliError::Failed(format!("{url}: {e}"))),
    };
    if !quiet {
        eprintln!(
            "fetched {path} from {server}: {} bytes in {:.3} s, {:.1} MB/s (blksize {}, windowsize {})",
            stats.bytes,
            stats.elapsed.as_secs_f64(),
            stats.megabytes_per_second(),
            stats.blksize,
            stats.windowsize
        );
    }
    Ok(())
}

/// The progress line on a terminal: bytes, rate and time left, redrawn in place.
struct ProgressLine {
    name: String,
    started: Instant,
    drawn: Option<Instant>,
}

impl ProgressLine {
    fn new(path: &str) -> Self {
        ProgressLine {
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            started: Instant::now(),
            drawn: None,
        }
    }

    fn update(&mut self, received: u64, size: Option<u64>) {
        let now = Instant::now();
        if self.drawn.is_some_and(|at| now - at < PROGRESS_EVERY) {
            return;
        }
        self.drawn = Some(now);
        let text = progress_text(&self.name, received, size, now - self.started);
        eprint!("\r\x1b[K{text}");
    }

    fn clear(&self) {
        if self.drawn.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

/// `vmlinuz: 12.3 of 40.0 MB (31%), 98.2 MB/s, 0:03 left`.
fn progress_text(name: &str, received: u64, size: Option<u64>, elapsed: Duration) -> String {
    let rate = received as f64 / elapsed.as_secs_f64().max(1e-3);
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let mut text = format!("{name}: {:.1}", mb(received));
    match size.filter(|&s| s > 0) {
        Some(size) => text.push_str(&format!(
            " of {:.1} MB ({}%), {:.1} MB/s",
            mb(size),
            received.min(size) * 100 / size,
            rate / 1e6
        )),
        None => text.push_str(&format!(" MB, {:.1} MB/s", rate / 1e6)),
    }
    // Time left: once there is a rate to go by.
    if let (Some(size), true) = (size, received > 0) {
        let left = (size.saturating_sub(received) as f64 / rate).min(359_999.0) as u64;
        text.push_str(&format!(", {}:{:02} left", left / 60, left % 60));
    }
    text
}

/// Where the bytes go. A regular file is written as `FILE.part` and renamed when complete, so a
/// failed or interrupted fetch never leaves something that could pass for the file (and never
/// removes a file it did not write); stdout and special files (`/dev/null`, FIFOs) are written
/// directly.
struct Sink {
    writer: Box<dyn Write>,
    rename: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    fn open(output: &str) -> Result<Sink, String> {
        if output == "-" {
            return Ok(Sink {
                writer: Box::new(io::stdout().lock()),
                rename: None,
            });
        }
        let target = PathBuf::from(output);
        let special = std::fs::metadata(&target).is_ok_and(|m| !m.is_file());
        let written = if special {
            target.clone()
        } else {
            let mut part = target.clone().into_os_string();
            part.push(".part");
            PathBuf::from(part)
        };
        let file = File::create(&written)
            .map_err(|e| format!("cannot create {}: {e}", written.display()))?;
        Ok(Sink {
            writer: Box::new(file),
            rename: (!special).then_some((written, target)),
        })
    }

    /// Moves a complete download into place.
    fn finish(&self) -> Result<(), String> {
        match &self.rename {
            Some((part, target)) => std::fs::rename(part, target)
                .map_err(|e| format!("cannot rename {}: {e}", part.display())),
            None => Ok(()),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((part, _)) = &self.rename {
            // Gone already after a successful rename; otherwise the partial download goes.
            let _ = std::fs::remove_file(part);
        }
    }
}

/// Splits `tftp://HOST[:PORT]/PATH` into `HOST[:PORT]` and the path.
fn parse_url(url: &str) -> Result<(String, String), UsageError> {
    let bad = |why: &str| UsageError(format!("{url:?}: {why} (want tftp://HOST[:PORT]/PATH)"));
    let rest = url
        .strip_prefix("tftp://")
        .ok_or_else(|| bad("not a tftp:// URL"))?;
    let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    if path.is_empty() || authority.is_empty() {
        return Err(bad(if path.is_empty() {
            "no path"
        } else {
            "no host"
        }));
    }
    Ok((authority.to_string(), path.to_string()))
}

/// Resolves `HOST[:PORT]` (a name, an IPv4 address or a bracketed IPv6 address) to its first
/// address, with `default_port` when no port is given (a name is looked up: a failure is the
/// network's, not a usage mistake).
pub(super) fn resolve(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (authority, path) = parse_url("tftp://127.0.0.1:6969/boot/vmlinuz").unwrap();
        assert_eq!(
            resolve(&authority, 69).unwrap(),
            "127.0.0.1:6969".parse().unwrap()
        );
        assert_eq!(path, "boot/vmlinuz");
        let (authority, _) = parse_url("tftp://127.0.0.1/x").unwrap();
        assert_eq!(resolve(&authority, 69).unwrap().port(), 69);
        let (authority, _) = parse_url("tftp://[::1]/x").unwrap();
        assert_eq!(
            resolve(&authority, 69).unwrap(),
            "[::1]:69".parse().unwrap()
        );
        let (authority, _) = parse_url("tftp://[::1]:70/x").unwrap();
        assert_eq!(resolve(&authority, 69).unwrap().port(), 70);
        for bad in [
            "http://h/x",
            "tftp://127.0.0.1",
            "tftp://127.0.0.1/",
            "tftp:///x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(resolve("no-such-host.invalid", 69).is_err());
    }

    #[test]
    fn progress_line() {
        let second = Duration::from_secs(1);
        assert_eq!(
            progress_text("vmlinuz", 10_000_000, Some(40_000_000), second),
            "vmlinuz: 10.0 of 40.0 MB (25%), 10.0 MB/s, 0:03 left"
        );
        assert_eq!(
            progress_text("initrd", 5_000_000, None, second * 2),
            "initrd: 5.0 MB, 2.5 MB/s"
        );
        // Nothing yet: no division by zero, no absurd time left.
        assert_eq!(
            progress_text("x", 0, Some(1_000_000), Duration::ZERO),
            "x: 0.0 of 1.0 MB (0%), 0.0 MB/s"
        );
    }
}
