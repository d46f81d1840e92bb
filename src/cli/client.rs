//! `bootherd client` (simulated boot clients) and `bootherd demo`.

use std::net::SocketAddr;
use std::time::Duration;

use super::args::{Args, UsageError};
use super::fetch::resolve;
use super::{say, CliError};
use crate::bootclient::{storm, Assign, ClientOptions, ListSource, PxeSteps, Summary};
use crate::demo::DemoOptions;
use crate::formats::alt_list::AltEntry;

pub const CLIENT_USAGE: &str = "\
Usage: bootherd client --central HOST[:PORT] [options]
       bootherd client --alternates ID=HOST[:PORT],... [--assign RULE] [options]

Runs simulated boot clients in one process: each fetches the alternate list from the central's
TFTP service, tries the alternates in order (falling back when one does not answer), fetches
its config file and every boot file, and checks them. Prints per-alternate shares, completion
times and the reason for each distinct failure; exit 1 if any client failed.

Options:
  --central HOST[:PORT]  the central's TFTP service [port: 69]
  --alternates LIST      no central: these alternates (ID=HOST[:PORT], comma-separated), each
                         client starting at the one --assign gives it and falling back
                         through the others in list order (baselines for load experiments)
  --assign RULE          round-robin, or weights:W1,W2,... (one per alternate; clients split
                         in proportion, interleaved) [default: round-robin]
  --clients N            how many clients [default: 1]
  --spread-ms T          spread their arrivals over T ms [default: 0, all at once]
  --blksize N            block size to ask for, 8..65464 [default: 1468]
  --windowsize N         window size to ask for, at least 1 [default: 16]
  --arch N               architecture (PXE option 93) [default: 7]
  --pxe HOST[:PORT]      start with the PXE steps against this proxyDHCP socket [port: 67],
                         then fetch the NBP the answer names from the central; the clients
                         send from the address their route to it takes
  --discovery HOST[:PORT]  the boot-server discovery socket [default: the --pxe host, 4011]
  --backup-central HOST[:PORT]
                         a central to ask for the list when the first gives none, or none of
                         its alternates can serve (repeatable; after those the PXE answer names)
  --http                 fetch the config and boot files over HTTP from alternates whose
                         list entry offers it (as iPXE does), falling back to their TFTP
  --http-port PORT       with --alternates and --http: each alternate's HTTP port [80]
  --json                 print the summary and one record per client as JSON
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
    let central: Option<String> = args.value(&["--central"])?;
    let alternates: Option<String> = args.value(&["--alternates"])?;
    let assign: Option<String> = args.value(&["--assign"])?;
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
    let proxy: Option<String> = args.value(&["--pxe"])?;
    let discovery: Option<String> = args.value(&["--discovery"])?;
    let backup_centrals: Vec<String> = args.values(&["--backup-central"])?;
    let http = args.flag(&["--http"]);
    let http_port: Option<u16> = args.value(&["--http-port"])?;
    let verbose = args.flag(&["-v", "--verbose"]);
    let json = args.flag(&["--json"]);
    args.finish()?;

    let usage = |why: String| CliError::Usage(UsageError(why));
    if !(8..=65464).contains(&options.blksize) {
        return Err(usage("--blksize must be 8..65464".into()));
    }
    if options.windowsize == 0 {
        return Err(usage("--windowsize must be at least 1".into()));
    }
    if clients == 0 {
        return Err(usage("--clients must be at least 1".into()));
    }
    let resolve = |option: &str, text: &str, port: u16| {
        resolve(text, port).map_err(|e| usage(format!("{option} {text:?}: {e}")))
    };
    let source = match (central, alternates) {
        (Some(central), None) => {
            if assign.is_some() {
                return Err(usage("--assign goes with --alternates".into()));
            }
            ListSource::Central(resolve("--central", &central, 69)?)
        }
        (None, Some(list)) => {
            if proxy.is_some() {
                return Err(usage(
                    "--pxe needs --central (the NBP comes from the central)".into(),
                ));
            }
            let http_port = match (http, http_port) {
                (_, None) => http.then_some(80),
                (true, port) => port,
                (false, Some(_)) => return Err(usage("--http-port goes with --http".into())),
            };
            let alternates = parse_alternates(&list, http_port).map_err(usage)?;
            let assign =
                Assign::parse(assign.as_deref().unwrap_or("round-robin"), alternates.len())
                    .map_err(|e| usage(format!("--assign {e}")))?;
            ListSource::Assigned { alternates, assign }
        }
        (Some(_), Some(_)) => return Err(usage("give --central or --alternates, not both".into())),
        (None, None) => return Err(usage("--central or --alternates is required".into())),
    };
    let pxe = match proxy {
        Some(proxy) => {
            let proxy = resolve("--pxe", &proxy, 67)?;
            let discovery = match discovery {
                Some(d) => resolve("--discovery", &d, 4011)?,
                None => SocketAddr::new(proxy.ip(), 4011),
            };
            Some(PxeSteps { proxy, discovery })
        }
        None if discovery.is_some() => return Err(usage("--discovery goes with --pxe".into())),
        None => None,
    };
    let backup_centrals = backup_centrals
        .iter()
        .map(|b| resolve("--backup-central", b, 69))
        .collect::<Result<_, _>>()?;
    let options = ClientOptions {
        pxe,
        backup_centrals,
        http,
        ..options
    };
    let records = storm(&source, clients, spread, &options);
    let summary = Summary::of(&records);
    if json {
        say!(
            "{{\"summary\":{},\n\"clients\":[",
            summary.to_json(records.len())
        );
        for (n, r) in records.iter().enumerate() {
            let comma = if n + 1 < records.len() { "," } else { "" };
            say!("{}{comma}", r.to_json());
        }
        say!("]}}");
    } else {
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
        say!("{} clients: {}", records.len(), summary.line());
        if !verbose {
            for (reason, count) in summary.failure_reasons.iter().take(MAX_REASONS) {
                say!("  {count} failed: {reason}");
            }
            if let Some(more) = summary.failure_reasons.len().checked_sub(MAX_REASONS) {
                if more > 0 {
                    say!("  ... and {more} other reasons (-v shows every client)");
                }
            }
        }
    }
    match summary.failures {
        0 => Ok(()),
        n => Err(CliError::Failed(format!("{n} clients failed to boot"))),
    }
}

/// Distinct failure reasons printed without `-v`.
const MAX_REASONS: usize = 10;

/// `ID=HOST[:PORT],...` (port 69 by default) into list entries, with the host's HTTP address
/// at `http_port` if given.
fn parse_alternates(list: &str, http_port: Option<u16>) -> Result<Vec<AltEntry>, String> {
    let mut entries: Vec<AltEntry> = Vec::new();
    for item in list.split(',') {
        let (id, host) = item
            .split_once('=')
            .filter(|(id, host)| !id.is_empty() && !host.is_empty())
            .ok_or_else(|| format!("--alternates: {item:?} is not ID=HOST[:PORT]"))?;
        if entries.iter().any(|e| e.id == id) {
            return Err(format!("--alternates: {id} is listed twice"));
        }
        let address = resolve(host, 69).map_err(|e| format!("--alternates {item:?}: {e}"))?;
        entries.push(AltEntry {
            id: id.to_string(),
            addresses: vec![address],
            http: http_port
                .map(|port| SocketAddr::new(address.ip(), port))
                .into_iter()
                .collect(),
        });
    }
    Ok(entries)
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
    if options.clients == 0 {
        return Err(UsageError("--clients must be at least 1".into()).into());
    }
    // Hundreds of transfers: only problems on stderr, unless asked otherwise.
    if std::env::var_os("BOOTHERD_LOG").is_none() {
        crate::log::set_level(crate::log::Level::Warn);
    }
    crate::demo::run(&options).map_err(CliError::Failed)
}
