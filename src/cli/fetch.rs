//! `bootherd fetch`: download one file over TFTP.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::args::{Args, UsageError};
use super::CliError;
use crate::tftp::client::fetch;
use crate::tftp::download::{ClientRetransmit, RequestSpec};

pub const USAGE: &str = "\
Usage: bootherd fetch tftp://HOST[:PORT]/PATH [options]

Downloads PATH from a TFTP server and prints a one-line summary on stderr.

Options:
  -o, --output FILE      where to write (- for stdout) [default: PATH's last component]
  --blksize N            block size to ask for (RFC 2348)
  --windowsize N         window size to ask for (RFC 7440)
  --tsize                ask for the size and check the received length (RFC 2349)
  --timeout-ms N         re-send after this much silence [default: 500]
  --retries N            re-sends without progress before giving up [default: 10]
  -q, --quiet            no summary line
  -h, --help             this help
  -V, --version          print the version
";

pub fn run(mut args: Args) -> Result<(), CliError> {
    let defaults = ClientRetransmit::default();
    let output: Option<String> = args.value(&["-o", "--output"])?;
    let blksize: Option<u16> = args.value(&["--blksize"])?;
    let windowsize: Option<u16> = args.value(&["--windowsize"])?;
    let timeout_ms: u64 = args
        .value(&["--timeout-ms"])?
        .unwrap_or(defaults.timeout.as_millis() as u64);
    let retries: u32 = args.value(&["--retries"])?.unwrap_or(defaults.retries);
    let tsize = args.flag(&["--tsize"]);
    let quiet = args.flag(&["-q", "--quiet"]);
    let url = args.positional("tftp:// URL")?;
    args.finish()?;

    if blksize.is_some_and(|b| !(8..=65464).contains(&b)) {
        return Err(UsageError("--blksize must be 8..65464".into()).into());
    }
    if windowsize == Some(0) {
        return Err(UsageError("--windowsize must be at least 1".into()).into());
    }
    let (server, path) = parse_url(&url)?;
    let output = output.unwrap_or_else(|| path.rsplit(['/', '\\']).next().unwrap_or(&path).into());
    if output.is_empty() {
        return Err(UsageError("no file name in the URL: give -o FILE".into()).into());
    }
    let mut sink = Sink::open(&output).map_err(CliError::Failed)?;
    let spec = RequestSpec {
        path: path.clone(),
        blksize,
        windowsize,
        tsize,
    };
    let retransmit = ClientRetransmit {
        timeout: Duration::from_millis(timeout_ms.max(1)),
        retries,
    };
    let mut out = BufWriter::with_capacity(1 << 20, &mut sink);
    let result = smol::block_on(fetch(server, spec, retransmit, &mut out))
        .map_err(|e| e.to_string())
        .and_then(|stats| out.flush().map(|()| stats).map_err(|e| e.to_string()));
    drop(out);
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

/// Where the bytes go. A regular file is written as `FILE.part` and renamed when complete, so a
/// failed fetch never leaves something that could pass for the file (and never removes a file
/// it did not write); stdout and special files (`/dev/null`, FIFOs) are written directly.
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

/// Splits `tftp://HOST[:PORT]/PATH` into a resolved server address and the path.
fn parse_url(url: &str) -> Result<(SocketAddr, String), UsageError> {
    let bad = |why: &str| UsageError(format!("{url:?}: {why} (want tftp://HOST[:PORT]/PATH)"));
    let rest = url
        .strip_prefix("tftp://")
        .ok_or_else(|| bad("not a tftp:// URL"))?;
    let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    if path.is_empty() {
        return Err(bad("no path"));
    }
    let server = resolve(authority, 69).map_err(|e| bad(&e))?;
    Ok((server, path.to_string()))
}

/// Resolves `HOST[:PORT]` (a name, an IPv4 address or a bracketed IPv6 address) to its first
/// address, with `default_port` when no port is given.
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
        .map_err(|e| format!("cannot resolve host: {e}"))?
        .next()
        .ok_or_else(|| "host has no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (addr, path) = parse_url("tftp://127.0.0.1:6969/boot/vmlinuz").unwrap();
        assert_eq!(addr, "127.0.0.1:6969".parse().unwrap());
        assert_eq!(path, "boot/vmlinuz");
        let (addr, _) = parse_url("tftp://127.0.0.1/x").unwrap();
        assert_eq!(addr.port(), 69);
        let (addr, _) = parse_url("tftp://[::1]/x").unwrap();
        assert_eq!(addr, "[::1]:69".parse().unwrap());
        let (addr, _) = parse_url("tftp://[::1]:70/x").unwrap();
        assert_eq!(addr.port(), 70);
        for bad in ["http://h/x", "tftp://127.0.0.1", "tftp://127.0.0.1/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
