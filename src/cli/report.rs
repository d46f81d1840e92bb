//! `bootherd report ...` and `bootherd status`: send, watch and query load reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::args::{Args, UsageError};
use super::{say, CliError};
use crate::config::{read_key, Config};
use crate::report::client;
use crate::report::monitor::digest_dir;
use crate::report::wire::{
    decode, from_hex, hex, AltState, Key, LoadReport, Message, NetworkMark, PathState,
    MAX_DATAGRAM_LEN,
};
use crate::sys::{fill_random, random_u64, unix_ms};

pub const REPORT_USAGE: &str = "\
Usage: bootherd report <send|watch|mark|digest|keygen> [options]

  report send --to ADDR --id ID --address ADDR:PORT [fields]   send one signed load report
  report watch --listen ADDR:PORT [--count N]                  decode, verify and print reports
  report mark --central ADDR --alternate ID --state S          mark an alternate's network path:
                                                                 clear, congested[=PERCENT], down
  report digest DIR                                             print the boot-file digest of DIR
  report keygen [-o FILE]                                       a new random key (hex), to FILE
                                                                 (created owner-only) or stdout

Key (send, watch, mark): --key-file FILE, or --config FILE to use its key_file.
Fields of send (defaults in brackets): --boot-id N [random] --sequence N [Unix ms, so repeated
sends increase] --interval-ms N [1000] --link BYTES/S [125000000] --max-transfers N [512]
--active N [0] --remaining BYTES [0] --rate BYTES/S [0] --boots N [0] --cpu PERMILLE [0]
--mem PERMILLE [0] --load CENTI [0] --digest HEX [zeros] --state serving|draining|leaving
[serving] --boot-count N [0] --evidence-s N [0] --pending BYTES [0] --boot-bytes BYTES [0].
--to and --address may repeat.
";

pub const STATUS_USAGE: &str = "\
Usage: bootherd status --central ADDR:PORT (--key-file FILE | --config FILE) [--json]

Asks a central (its report port) for its live table and current order, with an authenticated
request, and prints it: included alternates best first, then excluded ones with the reason.

Options:
  --central ADDR:PORT    the central's report listener (required)
  --key-file FILE        the pre-shared key
  --config FILE          or a config file whose key_file to use
  --json                 machine-readable output
  -h, --help             this help
  -V, --version          print the version
";

fn key(args: &mut Args) -> Result<Key, CliError> {
    let key_file: Option<PathBuf> = args.value(&["--key-file"])?;
    let config: Option<PathBuf> = args.value(&["--config"])?;
    match (key_file, config) {
        (Some(file), None) => read_key(&file).map_err(|e| UsageError(format!("--key-file: {e}"))),
        (None, Some(path)) => Config::load(&path)
            .and_then(|c| c.key())
            .map_err(|e| UsageError(e.0)),
        _ => Err(UsageError("give one of --key-file or --config".into())),
    }
    .map_err(CliError::from)
}

pub fn report(mut args: Args) -> Result<(), CliError> {
    let action = args.positional("action (send, watch, mark, digest or keygen)")?;
    match action.as_str() {
        "send" => send(args),
        "watch" => watch(args),
        "mark" => mark(args),
        "digest" => {
            let dir = args.positional("DIR")?;
            args.finish()?;
            let digest =
                digest_dir(dir.as_ref()).map_err(|e| CliError::Failed(format!("{dir}: {e}")))?;
            say!("{}", hex(&digest));
            Ok(())
        }
        "keygen" => {
            let output: Option<PathBuf> = args.value(&["-o", "--output"])?;
            args.finish()?;
            keygen(output.as_deref())
        }
        other => Err(UsageError(format!("unknown action {other:?}")).into()),
    }
}

/// Makes a 256-bit key from the kernel's randomness and writes it as hex: to a new file that
/// only its owner may read, or to stdout (a regular file there is made owner-only too).
fn keygen(output: Option<&std::path::Path>) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes).map_err(|e| CliError::Failed(format!("cannot make a key: {e}")))?;
    let Some(path) = output else {
        let stdout = std::io::stdout();
        if rustix::fs::fstat(&stdout)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file())
        {
            rustix::fs::fchmod(&stdout, rustix::fs::Mode::from_raw_mode(0o600)).map_err(|e| {
                CliError::Failed(format!("cannot make the key file owner-only: {e}"))
            })?;
        }
        say!("{}", hex(&bytes));
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::Failed(format!(
                "{} exists: the site's key is not replaced (remove it first to make a new one)",
                path.display()
            )),
            _ => CliError::Failed(format!("cannot create {}: {e}", path.display())),
        })?;
    writeln!(file, "{}", hex(&bytes))
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

fn send(mut args: Args) -> Result<(), CliError> {
    let key = key(&mut args)?;
    let to: Vec<SocketAddr> = args.values(&["--to"])?;
    let addresses = args.values(&["--address"])?;
    let state = args.value(&["--state"])?.unwrap_or(AltState::Serving);
    let digest = match args.value::<String>(&["--digest"])? {
        None => [0; 32],
        Some(h) => from_hex(&h)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| UsageError("--digest wants 64 hex digits".into()))?,
    };
    let report = LoadReport {
        alternate: args.required(&["--id"])?,
        addresses,
        boot_id: args
            .value(&["--boot-id"])?
            .map_or_else(random_u64, Ok)
            .map_err(|e| CliError::Failed(e.to_string()))?,
        sequence: args.value(&["--sequence"])?.unwrap_or_else(unix_ms),
        interval_ms: args.value(&["--interval-ms"])?.unwrap_or(1000),
        link_bytes_per_sec: args.value(&["--link"])?.unwrap_or(125_000_000),
        max_transfers: args.value(&["--max-transfers"])?.unwrap_or(512),
        active_transfers: args.value(&["--active"])?.unwrap_or(0),
        bytes_remaining: args.value(&["--remaining"])?.unwrap_or(0),
        bytes_per_sec: args.value(&["--rate"])?.unwrap_or(0),
        boots_started: args.value(&["--boots"])?.unwrap_or(0),
        cpu_permille: args.value(&["--cpu"])?.unwrap_or(0),
        mem_permille: args.value(&["--mem"])?.unwrap_or(0),
        load_avg_centi: args.value(&["--load"])?.unwrap_or(0),
        digest,
        state,
        boot_count: args.value(&["--boot-count"])?.unwrap_or(0),
        capacity_evidence_s: args.value(&["--evidence-s"])?.unwrap_or(0),
        pending_bytes: args.value(&["--pending"])?.unwrap_or(0),
        boot_bytes: args.value(&["--boot-bytes"])?.unwrap_or(0),
        datagrams_sent: 0,
        datagrams_resent: 0,
        process_cpu_permille: 0,
        http_addresses: Vec::new(),
    };
    args.finish()?;
    if to.is_empty() {
        return Err(UsageError("--to is required".into()).into());
    }
    let message = Message::Report(report);
    smol::block_on(async {
        for central in &to {
            client::send(*central, &key, &message).await?;
        }
        Ok::<_, String>(())
    })
    .map_err(CliError::Failed)
}

fn watch(mut args: Args) -> Result<(), CliError> {
    let key = key(&mut args)?;
    let listen: SocketAddr = args.required(&["--listen"])?;
    let count: Option<u64> = args.value(&["--count"])?;
    args.finish()?;
    smol::block_on(async {
        let socket = smol::net::UdpSocket::bind(listen)
            .await
            .map_err(|e| CliError::Failed(format!("cannot listen on {listen}: {e}")))?;
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
        let mut seen = 0;
        while count.is_none_or(|c| seen < c) {
            let (n, from) = socket
                .recv_from(&mut buf)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            seen += 1;
            let line = match decode(&buf[..n], &key) {
                Ok(Message::Report(r)) => describe_report(&r),
                Ok(Message::Mark(m)) => format!("mark {} {}", m.alternate, m.state),
                Ok(Message::StatusRequest(r)) => format!("status request (nonce {:016x})", r.nonce),
                Ok(Message::StatusAnswer(a)) => {
                    format!(
                        "status answer (nonce {:016x}, {} alternates)",
                        a.nonce,
                        a.rows.len()
                    )
                }
                Err(e) => format!("DROPPED ({n} bytes): {e}"),
            };
            say!("{from}: {line}");
        }
        Ok(())
    })
}

fn describe_report(r: &LoadReport) -> String {
    format!(
        "{} seq {} boot {:016x} (start {}) {} active {}/{} remaining {:.1} MB pending {:.1} MB rate {:.1} MB/s capacity {:.1} MB/s ({} s measured) boots {} of {:.1} MB cpu {:.1}% (process {:.1}%) mem {:.1}% load {:.2} datagrams {} resent {} digest {} addresses {}",
        r.alternate,
        r.sequence,
        r.boot_id,
        r.boot_count,
        r.state,
        r.active_transfers,
        r.max_transfers,
        r.bytes_remaining as f64 / 1e6,
        r.pending_bytes as f64 / 1e6,
        r.bytes_per_sec as f64 / 1e6,
        r.link_bytes_per_sec as f64 / 1e6,
        r.capacity_evidence_s,
        r.boots_started,
        r.boot_bytes as f64 / 1e6,
        f64::from(r.cpu_permille) / 10.0,
        f64::from(r.process_cpu_permille) / 10.0,
        f64::from(r.mem_permille) / 10.0,
        f64::from(r.load_avg_centi) / 100.0,
        r.datagrams_sent,
        r.datagrams_resent,
        &hex(&r.digest)[..12],
        r.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    )
}

fn mark(mut args: Args) -> Result<(), CliError> {
    let key = key(&mut args)?;
    let central: SocketAddr = args.required(&["--central"])?;
    let alternate: String = args.required(&["--alternate"])?;
    let state: PathState = args.required(&["--state"])?;
    args.finish()?;
    let message = Message::Mark(NetworkMark {
        alternate,
        state,
        unix_ms: unix_ms(),
    });
    smol::block_on(client::send(central, &key, &message)).map_err(CliError::Failed)
}

pub fn status(mut args: Args) -> Result<(), CliError> {
    let key = key(&mut args)?;
    let central: SocketAddr = args.required(&["--central"])?;
    let json = args.flag(&["--json"]);
    args.finish()?;
    let answer = smol::block_on(client::status(central, &key, Duration::from_millis(500)))
        .map_err(CliError::Failed)?;
    if json {
        say!("{}", answer.to_json(central));
    } else {
        for line in answer.table() {
            say!("{line}");
        }
    }
    Ok(())
}
