//! `bootherd client` (simulated boot clients) and `bootherd demo`.

use std::net::SocketAddr;
use std::time::Duration;

use super::args::{Args, UsageError};
use super::{say, CliError};
use crate::bootclient::{storm, ClientOptions, PxeSteps, Summary};
use crate::demo::DemoOptions;

pub const CLIENT_USAGE: &str = "\
Usage: bootherd client --central ADDR:PORT [options]

Runs simulated boot clients in one process: each fetches the alternate list from the central's
TFTP service, tries the alternates in order (falling back when one does not answer), fetches
its config file and every boot file, and checks them. Prints per-alternate shares and
completion times; exit 1 if any client failed.

Options:
  --central ADDR:PORT    the central's TFTP address (required)
  --clients N            how many clients [default: 1]
  --spread-ms T          spread their arrivals over T ms [default: 0, all at once]
  --blksize N            block size to ask for [default: 1468]
  --windowsize N         window size to ask for [default: 16]
  --arch N               architecture (PXE option 93) [default: 7]
  --pxe ADDR:PORT        start with the PXE steps against this proxyDHCP socket, then fetch
                         the NBP the answer names (clients use 127.0.0.1: loopback tests)
  --discovery ADDR:PORT  the boot-server discovery socket [default: the --pxe address, 4011]
  --backup-central ADDR:PORT
                         a central to ask for the list when the first gives none, or none of
                         its alternates can serve (repeatable; after those the PXE answer names)
  -v, --verbose          one line per client
  -h, --help             this help
  -V, --version          print the version
";

pub const DEMO_USAGE: &str = "\
Usage: bootherd demo [--clients N] [--spread-ms T]

Starts on loopback (127.0.0.x, unprivileged ports) two centrals (one ordering by load, one in a
static order), three alternates capped at 40, 20 and 10 MB/s reporting to both, and a generated
boot set; then boots a storm of clients through each central and prints per-alternate shares,
completion p50, p99 and max, against the ideal (total bytes over total capacity).

Options:
  --clients N            clients per storm [default: 100]
  --spread-ms T          spread their arrivals over T ms [default: 0]
  -h, --help             this help
  -V, --version          print the version
";

pub fn client(mut args: Args) -> Result<(), CliError> {
    let defaults = ClientOptions::default();
    let central: SocketAddr = args.required(&["--central"])?;
    let clients: u32 = args.value(&["--clients"])?.unwrap_or(1);
    let spread = Duration::from_millis(args.value(&["--spread-ms"])?.unwrap_or(0));
    let options = ClientOptions {
        blksize: args.value(&["--blksize"])?.unwrap_or(defaults.blksize),
        windowsize: args
            .value(&["--windowsize"])?
            .unwrap_or(defaults.windowsize),
        arch: args.value(&["--arch"])?.unwrap_or(defaults.arch.clone()),
        ..defaults
    };
    let proxy: Option<SocketAddr> = args.value(&["--pxe"])?;
    let discovery: Option<SocketAddr> = args.value(&["--discovery"])?;
    let pxe = proxy.map(|proxy| PxeSteps {
        proxy,
        discovery: discovery.unwrap_or(SocketAddr::new(proxy.ip(), 4011)),
    });
    let backup_centrals = args
        .values(&["--backup-central"])?
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|e| UsageError(format!("--backup-central {a:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let options = ClientOptions {
        pxe,
        backup_centrals,
        ..options
    };
    let verbose = args.flag(&["-v", "--verbose"]);
    args.finish()?;
    let records = storm(central, clients, spread, &options);
    if verbose {
        for r in &records {
            let outcome = match (&r.alternate, &r.error) {
                (Some(alt), _) => format!("booted from {alt}, {} bytes", r.bytes),
                (None, Some(e)) => format!("FAILED: {e}"),
                (None, None) => "FAILED".into(),
            };
            let fell_back = if r.fell_back.is_empty() {
                String::new()
            } else {
                format!(" after falling back from: {}", r.fell_back.join("; "))
            };
            say!(
                "client {:>4}: {outcome} in {:.3} s{fell_back}",
                r.index,
                r.duration.as_secs_f64()
            );
        }
    }
    let summary = Summary::of(&records);
    say!("{} clients: {}", records.len(), summary.line());
    match summary.failures {
        0 => Ok(()),
        n => Err(CliError::Failed(format!("{n} clients failed to boot"))),
    }
}

pub fn demo(mut args: Args) -> Result<(), CliError> {
    let defaults = DemoOptions::default();
    let options = DemoOptions {
        clients: args.value(&["--clients"])?.unwrap_or(defaults.clients),
        spread: args
            .value(&["--spread-ms"])?
            .map_or(defaults.spread, Duration::from_millis),
        ..defaults
    };
    args.finish()?;
    // Hundreds of transfers: only problems on stderr, unless asked otherwise.
    if std::env::var_os("BOOTHERD_LOG").is_none() {
        crate::log::set_level(crate::log::Level::Warn);
    }
    crate::demo::run(&options).map_err(CliError::Failed)
}
