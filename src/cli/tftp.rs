//! `bootherd tftp`: the standalone read-only TFTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::args::{Args, UsageError};
use super::CliError;
use crate::config::DEFAULT_SHUTDOWN_GRACE;
use crate::lifecycle::{serve_until_stopped, Requests};
use crate::tftp::options::{Limits, BLKSIZE_RANGE};
use crate::tftp::server::{Server, ServerConfig};
use crate::tftp::source::DirSource;
use crate::tftp::transfer::Retransmit;

pub const USAGE: &str = "\
Usage: bootherd tftp --root DIR [--listen ADDR:PORT] [options]

Serves the regular files below DIR, read-only, over TFTP (RFC 1350, 2347, 2348, 2349, 7440).
netascii mode converts the file in memory and is refused for files over 4 MiB (use octet).
SIGTERM or SIGINT: new requests are refused, transfers in progress get the grace period to
finish and are then ended with an ERROR; a second signal ends them at once.

Options:
  --root DIR             directory to serve (required)
  --listen ADDR:PORT     address to listen on [default: 0.0.0.0:69]
  --max-blksize N        largest block size granted, 8..65464 [default: 1468]
  --max-windowsize N     largest window granted, 1..65535 [default: 64]
  --max-transfers N      transfers at once (at least 1); more are refused at once
                         [default: 512]
  --single-port          serve every transfer from the listening port (NAT, firewalls)
  --timeout-ms N         retransmission timeout until the round trip is measured [default: 1000]
  --retries N            back-off steps: give up after timeout x (2^N - 1) without progress
                         [default: 5, i.e. 31 s]
  --shutdown-grace-ms N  time transfers in progress get after SIGTERM [default: 10000]
  -h, --help             this help
  -V, --version          print the version
";

pub fn run(mut args: Args) -> Result<(), CliError> {
    let defaults = ServerConfig::default();
    let root: PathBuf = args.required(&["--root"])?;
    let listen: SocketAddr = args.value(&["--listen"])?.unwrap_or(defaults.listen);
    let max_blksize: u16 = args
        .value(&["--max-blksize"])?
        .unwrap_or(defaults.limits.max_blksize);
    if max_blksize < BLKSIZE_RANGE.0 || max_blksize > BLKSIZE_RANGE.1 {
        return Err(UsageError(format!("--max-blksize {max_blksize}: must be 8..65464")).into());
    }
    let max_windowsize: u16 = args
        .value(&["--max-windowsize"])?
        .unwrap_or(defaults.limits.max_windowsize);
    if max_windowsize == 0 {
        return Err(UsageError("--max-windowsize 0: must be at least 1".into()).into());
    }
    let max_transfers: usize = args
        .value(&["--max-transfers"])?
        .unwrap_or(defaults.max_transfers);
    if max_transfers == 0 {
        return Err(UsageError("--max-transfers 0: must be at least 1".into()).into());
    }
    let timeout_ms: u64 = args
        .value(&["--timeout-ms"])?
        .unwrap_or(defaults.retransmit.timeout.as_millis() as u64);
    let retries: u32 = args
        .value(&["--retries"])?
        .unwrap_or(defaults.retransmit.retries);
    let grace = Duration::from_millis(
        args.value(&["--shutdown-grace-ms"])?
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE.as_millis() as u64),
    );
    let single_port = args.flag(&["--single-port"]);
    args.finish()?;

    let source =
        DirSource::new(&root).map_err(|e| UsageError(format!("--root {}: {e}", root.display())))?;
    let config = ServerConfig {
        listen,
        limits: Limits {
            max_blksize,
            max_windowsize,
        },
        retransmit: Retransmit {
            timeout: Duration::from_millis(timeout_ms.max(1)),
            retries,
        },
        max_transfers,
        single_port,
        rate_limit: None,
    };
    let requests = Requests::stop_signals().map_err(CliError::Failed)?;
    let server = Server::bind(config, Arc::new(source))
        .map_err(|e| CliError::Failed(format!("cannot listen on {listen}: {e}")))?;
    let shutdown = server.shutdown();
    let serve = async {
        server
            .run()
            .await
            .map_err(|e| format!("server stopped: {e}"))
    };
    smol::block_on(serve_until_stopped(
        serve,
        &shutdown,
        || grace,
        requests,
        |_| {},
    ))
    .map_err(CliError::Failed)
}
