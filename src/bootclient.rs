//! Simulated boot clients: the boot flow of the network bootstrap program, many at once in one
//! process, for tests, the demo and load experiments.
//!
//! One boot: optionally the PXE steps (proxy offer, boot-server discovery) and the NBP they
//! name; then fetch the alternate list from the central (or, for baselines that bypass the
//! central, take a fixed list ordered by an [`Assign`] rule); for each alternate in order, fetch
//! the per-client config, then every boot file it names, checking lengths and SHA-256 sums; on
//! any failure move on to the next alternate.
//!
//! Busy is not dead: a central or alternate that sends nothing at all within
//! [`ClientOptions::first_answer`] of a list or config request, or whose port or host is
//! unreachable (ICMP), is dead and costs at most that; one that answers, however slowly, keeps
//! the client with the transfer's full patience. A "server busy" error moves on at once.
//!
//! Backup centrals: when the central gives no list (dead, or an error), or none of the
//! alternates on its list can serve the boot, the client asks the next central: those the PXE
//! answer names after the central (option 43 boot servers), then
//! [`ClientOptions::backup_centrals`]. Alternates already tried are not tried again.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bootherd_proto::hex::Hex;
use sha2::{Digest, Sha256};
use smol::LocalExecutor;

use crate::formats::alt_list::{self, AltEntry, LIST_PATH};
use crate::formats::boot_config::{self, CONFIG_DIR};
use crate::http::client::HttpClient;
use crate::json;
use crate::net::ask;
use crate::pxe::client::{PxeAnswer, PxeClient};
use crate::tftp::client::{fetch, Patience};
use crate::tftp::download::{ClientRetransmit, RequestSpec};

/// How the simulated clients fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Block size asked for.
    pub blksize: u16,
    /// Window size asked for.
    pub windowsize: u16,
    /// Architecture sent in the config path (PXE option 93 number).
    pub arch: String,
    /// A central or alternate that sends nothing at all this long after a request for the list
    /// or a config is dead: the client moves on.
    pub first_answer: Duration,
    /// Retransmission for every transfer, once the server has answered.
    pub transfer: ClientRetransmit,
    /// Start with the PXE steps (proxy offer, and boot-server discovery when the offer has no
    /// option 43), then fetch the NBP they name.
    pub pxe: Option<PxeSteps>,
    /// Centrals to ask for a list after the first one (and after those the PXE answer names).
    pub backup_centrals: Vec<SocketAddr>,
    /// Fetch the config and boot files over HTTP from alternates that offer it (as iPXE
    /// does), falling back to their TFTP.
    pub http: bool,
}

/// Where the simulated clients do their DHCP steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PxeSteps {
    /// The central's proxyDHCP socket.
    pub proxy: SocketAddr,
    /// Its boot-server discovery socket.
    pub discovery: SocketAddr,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            blksize: 1468,
            windowsize: 16,
            arch: "7".into(),
            // Twice the request's re-send interval: one lost request or answer is not death.
            first_answer: Duration::from_secs(1),
            transfer: ClientRetransmit::default(),
            pxe: None,
            backup_centrals: Vec::new(),
            http: false,
        }
    }
}

/// A client's identity: MAC address and SMBIOS UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Client number.
    pub number: u32,
    /// `52-54-00-..`.
    pub mac: String,
    /// Lower-case UUID.
    pub uuid: String,
}

impl Identity {
    /// Client number `n` of a storm: MAC 52:54:00 + n, a UUID derived from it.
    pub fn numbered(n: u32) -> Self {
        let b = n.to_be_bytes();
        Identity {
            number: n,
            mac: format!("52-54-00-{}", Hex::separated(&b[1..], '-')),
            uuid: format!("b0071e7d-0000-4000-8000-5254{n:08x}"),
        }
    }
}

/// What one boot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecord {
    /// Its number in the storm, from 0; its MAC and UUID derive from it.
    pub index: u32,
    /// When it started, from the start of the storm.
    pub started: Duration,
    /// From start to the last byte of the last boot file.
    pub duration: Duration,
    /// The alternate it booted from.
    pub alternate: Option<String>,
    /// Alternates it tried and left, with why.
    pub fell_back: Vec<String>,
    /// Boot-file bytes received.
    pub bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl BootRecord {
    /// Why it failed, worded alike for every client that failed the same way: the error and,
    /// when it had left alternates, which and why; the client's own UUID and MAC (in config
    /// paths) read `UUID` and `MAC`.
    pub fn failure_reason(&self) -> Option<String> {
        let error = self.error.as_ref()?;
        let reason = if self.fell_back.is_empty() {
            error.clone()
        } else {
            format!("{error} ({})", self.fell_back.join("; "))
        };
        let who = Identity::numbered(self.index);
        Some(reason.replace(&who.uuid, "UUID").replace(&who.mac, "MAC"))
    }

    /// One JSON object, as `bootherd client --json` prints per client: `index`, `start_s`,
    /// `duration_s`, `alternate` (or `null`), `fell_back`, `bytes` and `error` (or `null`).
    pub fn to_json(&self) -> String {
        let fell_back: Vec<String> = self.fell_back.iter().map(|f| json::string(f)).collect();
        format!(
            "{{\"index\":{},\"start_s\":{},\"duration_s\":{},\"alternate\":{},\"fell_back\":[{}],\"bytes\":{},\"error\":{}}}",
            self.index,
            seconds(self.started),
            seconds(self.duration),
            json::string_or_null(self.alternate.as_deref()),
            fell_back.join(","),
            self.bytes,
            json::string_or_null(self.error.as_deref())
        )
    }
}

/// Seconds with millisecond precision, as the JSON output gives times.
fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Counts and hashes what is written, keeping nothing.
#[derive(Default)]
struct HashSink {
    hasher: Sha256,
    len: u64,
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn get(
    server: SocketAddr,
    path: &str,
    o: &ClientOptions,
    patience: impl Into<Patience>,
    out: &mut impl Write,
) -> Result<(), String> {
    let spec = RequestSpec {
        path: path.to_string(),
        blksize: Some(o.blksize),
        windowsize: Some(o.windowsize),
        tsize: true,
    };
    fetch(server, spec, patience, out)
        .await
        .map(|_| ())
        .map_err(|e| format!("{path}: {e}"))
}

/// Sends `request` to `to` and waits for an answer `read` accepts: three tries, 1 s each, as
/// PXE firmware does.
async fn exchange<T>(
    socket: &smol::net::UdpSocket,
    to: SocketAddr,
    request: &[u8],
    read: impl Fn(&[u8]) -> Option<T>,
) -> Result<T, String> {
    ask(socket, to, request, Duration::from_secs(1), 3, |d, _| {
        read(d)
    })
    .await
    .map_err(|e| e.to_string())?
    .ok_or_else(|| format!("no answer from {to}"))
}

/// A socket for the DHCP steps, bound to the address this host sends from towards `to` (the
/// proxy answers a client that has an address at that address and port, as PXE firmware that
/// already has its lease is answered; a socket on 127.0.0.1 cannot reach a central elsewhere).
async fn dhcp_socket(
    to: SocketAddr,
) -> std::io::Result<(smol::net::UdpSocket, std::net::Ipv4Addr)> {
    let route = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    route.connect(to)?;
    let std::net::IpAddr::V4(address) = route.local_addr()?.ip() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "PXE needs an IPv4 proxyDHCP address",
        ));
    };
    Ok((smol::net::UdpSocket::bind((address, 0)).await?, address))
}

/// The DHCP steps of PXE firmware: returns the answer that names the NBP.
async fn pxe_steps(
    steps: &PxeSteps,
    who: &Identity,
    o: &ClientOptions,
) -> Result<PxeAnswer, String> {
    let (socket, address) = dhcp_socket(steps.proxy)
        .await
        .map_err(|e| format!("proxyDHCP {}: {e}", steps.proxy))?;
    let b = who.number.to_be_bytes();
    let mut uuid = [0u8; 16];
    uuid[12..].copy_from_slice(&b);
    let client = PxeClient {
        xid: 0xB007_0000 ^ who.number,
        mac: [0x52, 0x54, 0, b[1], b[2], b[3]],
        uuid,
        arch: o
            .arch
            .parse()
            .map_err(|_| format!("architecture {:?} is not a number", o.arch))?,
        address,
    };
    let offer = exchange(&socket, steps.proxy, &client.discover()?, |d| {
        client.read_answer(d)
    })
    .await
    .map_err(|e| format!("proxyDHCP: {e}"))?;
    // UEFI firmware goes on to boot-server discovery when the offer has no option 43.
    let answer = if offer.vendor_options {
        offer
    } else {
        exchange(
            &socket,
            steps.discovery,
            &client.discovery_request()?,
            |d| client.read_answer(d),
        )
        .await
        .map_err(|e| format!("boot-server discovery: {e}"))?
    };
    match answer.file {
        Some(_) => Ok(answer),
        None => Err("no boot file named".into()),
    }
}

/// Boots once, with the alternates `source` gives: returns the alternate used, the bytes and
/// the fallbacks.
pub async fn boot(
    source: &ListSource,
    who: &Identity,
    o: &ClientOptions,
) -> (Result<(String, u64), String>, Vec<String>) {
    let mut fell_back = Vec::new();
    let probe = Patience {
        retransmit: o.transfer,
        first_answer: Some(o.first_answer),
    };
    let config_path = format!("{CONFIG_DIR}/{}/{}/{}", who.uuid, who.mac, o.arch);
    let mut tried = HashSet::new();
    let central = match source {
        ListSource::Central(central) => *central,
        ListSource::Assigned { alternates, assign } => {
            let order = assign.order(alternates, who.number);
            let booted =
                boot_from_list(&order, &config_path, o, probe, &mut tried, &mut fell_back).await;
            return match booted {
                Some(ok) => (Ok(ok), fell_back),
                None => (Err("no alternate could serve the boot".into()), fell_back),
            };
        }
    };
    let mut centrals = vec![central];
    if let Some(steps) = &o.pxe {
        let answer = match pxe_steps(steps, who, o).await {
            Ok(answer) => answer,
            Err(e) => return (Err(e), fell_back),
        };
        let nbp = answer.file.as_deref().unwrap_or_default();
        if let Err(e) = get(central, nbp, o, o.transfer, &mut HashSink::default()).await {
            return (Err(format!("NBP: {e}")), fell_back);
        }
        // PXE names servers by address: their TFTP is on the central's port.
        let named = answer.boot_servers.iter();
        centrals.extend(named.map(|&ip| SocketAddr::new(ip.into(), central.port())));
    }
    centrals.extend(&o.backup_centrals);
    let mut seen = HashSet::new();
    centrals.retain(|c| seen.insert(*c));
    let mut lists = 0;
    for central in centrals {
        let entries = match list_from(central, o, probe).await {
            Ok(entries) => entries,
            Err(e) => {
                fell_back.push(format!("central {central}: {e}"));
                continue;
            }
        };
        lists += 1;
        let booted =
            boot_from_list(&entries, &config_path, o, probe, &mut tried, &mut fell_back).await;
        if let Some(ok) = booted {
            return (Ok(ok), fell_back);
        }
    }
    let why = match lists {
        0 => "no central gave a list",
        _ => "no alternate could serve the boot",
    };
    (Err(why.into()), fell_back)
}

/// Tries the alternates of `entries` in order, each address once per boot (`tried`): the
/// alternate booted from and the bytes, or `None` with every failure in `fell_back`.
async fn boot_from_list(
    entries: &[AltEntry],
    config_path: &str,
    o: &ClientOptions,
    probe: Patience,
    tried: &mut HashSet<String>,
    fell_back: &mut Vec<String>,
) -> Option<(String, u64)> {
    for entry in entries {
        let http = entry.http.iter().filter(|_| o.http).map(|a| (true, a));
        for (http, address) in http.chain(entry.addresses.iter().map(|a| (false, a))) {
            let key = if http {
                format!("http://{address}")
            } else {
                address.to_string()
            };
            if !tried.insert(key.clone()) {
                continue;
            }
            let booted = if http {
                boot_over_http(*address, config_path, o).await
            } else {
                boot_from(*address, config_path, o, probe).await
            };
            match booted {
                Ok(bytes) => return Some((entry.id.clone(), bytes)),
                Err(e) => fell_back.push(format!("{} at {key}: {e}", entry.id)),
            }
        }
    }
    None
}

/// Fetches the config and the boot files it names over one HTTP connection (the server may
/// close it between them; a new one is opened then), checking their SHA-256.
async fn boot_over_http(
    server: SocketAddr,
    config_path: &str,
    o: &ClientOptions,
) -> Result<u64, String> {
    // The same patience as a TFTP transfer's: that many re-send periods without a byte.
    let patience = o.transfer.timeout * (o.transfer.retries + 1);
    let mut client = HttpClient::new(server, o.first_answer, patience);
    let mut text = Vec::new();
    client
        .get(config_path, &mut text)
        .await
        .map_err(|e| format!("{config_path}: {e}"))?;
    let config =
        boot_config::parse(&String::from_utf8_lossy(&text)).map_err(|e| format!("config: {e}"))?;
    let mut bytes = 0;
    for file in config.all_files() {
        let mut sink = HashSink::default();
        client
            .get(&file.path, &mut sink)
            .await
            .map_err(|e| format!("{}: {e}", file.path))?;
        check_sum(file, sink.hasher)?;
        bytes += sink.len;
    }
    Ok(bytes)
}

/// Checks a fetched file against the SHA-256 its config gives, if any.
fn check_sum(file: &boot_config::BootFile, hasher: Sha256) -> Result<(), String> {
    match file.sha256 {
        Some(want) if <[u8; 32]>::from(hasher.finalize()) != want => {
            Err(format!("{}: SHA-256 mismatch", file.path))
        }
        _ => Ok(()),
    }
}

/// The alternate list from one central; an empty list is an error.
async fn list_from(
    central: SocketAddr,
    o: &ClientOptions,
    probe: Patience,
) -> Result<Vec<alt_list::AltEntry>, String> {
    let mut list = Vec::new();
    get(central, LIST_PATH, o, probe, &mut list).await?;
    match alt_list::parse(&String::from_utf8_lossy(&list)) {
        Ok(entries) if !entries.is_empty() => Ok(entries),
        Ok(_) => Err("the alternate list is empty".into()),
        Err(e) => Err(format!("alternate list: {e}")),
    }
}

async fn boot_from(
    server: SocketAddr,
    config_path: &str,
    o: &ClientOptions,
    probe: Patience,
) -> Result<u64, String> {
    let mut text = Vec::new();
    get(server, config_path, o, probe, &mut text).await?;
    let config =
        boot_config::parse(&String::from_utf8_lossy(&text)).map_err(|e| format!("config: {e}"))?;
    let mut bytes = 0;
    for file in config.all_files() {
        let mut sink = HashSink::default();
        get(server, &file.path, o, o.transfer, &mut sink).await?;
        check_sum(file, sink.hasher)?;
        bytes += sink.len;
    }
    Ok(bytes)
}

/// Where a client gets its ordered alternates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSource {
    /// The central's alternate list, fetched from its TFTP service.
    Central(SocketAddr),
    /// A fixed list, without a central: each client starts at the alternate `assign` gives it
    /// and falls back through the others in list order (the baselines of the storm bench).
    Assigned {
        /// The alternates.
        alternates: Vec<AltEntry>,
        /// Which one each client starts at.
        assign: Assign,
    },
}

/// Which alternate a client starts at when the clients assign themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assign {
    /// Client n starts at alternate n mod the number of alternates.
    RoundRobin,
    /// In proportion to the weights (one per alternate), interleaved so that every run of
    /// consecutive clients is split as evenly as it can be (smooth weighted round robin): with
    /// arrivals spread over time, the split holds at every moment, not only at the end.
    Weights(Vec<u32>),
}

impl Assign {
    /// Parses `round-robin` or `weights:W1,W2,...` for `alternates` alternates.
    pub fn parse(text: &str, alternates: usize) -> Result<Assign, String> {
        if text == "round-robin" {
            return Ok(Assign::RoundRobin);
        }
        let Some(list) = text.strip_prefix("weights:") else {
            return Err(format!(
                "{text:?}: want round-robin or weights:W1,W2,... (one per alternate)"
            ));
        };
        let weights = list
            .split(',')
            .map(|w| w.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{text:?}: {e}"))?;
        if weights.len() != alternates {
            return Err(format!(
                "{text:?}: {} weights for {alternates} alternates",
                weights.len()
            ));
        }
        // The cycle is as long as the reduced weights add up to.
        let divisor = weights.iter().fold(0, |a, &w| gcd(a, w));
        let weights: Vec<u32> = weights.iter().map(|&w| w / divisor.max(1)).collect();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if !(1..=MAX_WEIGHT_CYCLE).contains(&total) {
            return Err(format!(
                "{text:?}: the weights, divided by their common factor, must add up to 1..={MAX_WEIGHT_CYCLE}"
            ));
        }
        Ok(Assign::Weights(weights))
    }

    /// The alternate (an index below `alternates`) client `n` starts at.
    pub fn first(&self, n: u32, alternates: usize) -> usize {
        match self {
            Assign::RoundRobin => n as usize % alternates.max(1),
            Assign::Weights(weights) => smooth_weighted_pick(weights, n),
        }
    }

    /// The order client `n` tries `alternates` in: the one it starts at, then the others in
    /// list order.
    pub fn order(&self, alternates: &[AltEntry], n: u32) -> Vec<AltEntry> {
        let mut order = alternates.to_vec();
        if !order.is_empty() {
            let chosen = order.remove(self.first(n, alternates.len()));
            order.insert(0, chosen);
        }
        order
    }
}

/// Longest weight cycle accepted (it is replayed for every client).
const MAX_WEIGHT_CYCLE: u64 = 10_000;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Smooth weighted round robin: at each step every alternate gains its weight and the one with
/// the most credit (the first on a tie) is picked and pays the total. The picks repeat with a
/// period of the total; alternate i is picked weights\[i\] times in each period. Returns the
/// pick of step `n`.
fn smooth_weighted_pick(weights: &[u32], n: u32) -> usize {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut credit = vec![0i64; weights.len()];
    let mut pick = 0;
    for _ in 0..=(i64::from(n) % total.max(1)) {
        for (c, &w) in credit.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        pick = (0..credit.len())
            .max_by_key(|&i| (credit[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        credit[pick] -= total;
    }
    pick
}

/// Boots `count` clients, the n-th starting at `n × spread / count`, all in this thread.
pub fn storm(
    source: &ListSource,
    count: u32,
    spread: Duration,
    o: &ClientOptions,
) -> Vec<BootRecord> {
    let ex = LocalExecutor::new();
    let start = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|index| {
            let offset = spread * index / count.max(1);
            ex.spawn(async move {
                smol::Timer::at(start + offset).await;
                let began = Instant::now();
                let (result, fell_back) = boot(source, &Identity::numbered(index), o).await;
                let (alternate, bytes, error) = match result {
                    Ok((alt, bytes)) => (Some(alt), bytes, None),
                    Err(e) => (None, 0, Some(e)),
                };
                BootRecord {
                    index,
                    started: began - start,
                    duration: began.elapsed(),
                    alternate,
                    fell_back,
                    bytes,
                    error,
                }
            })
        })
        .collect();
    smol::block_on(ex.run(async {
        let mut records = Vec::with_capacity(tasks.len());
        for task in tasks {
            records.push(task.await);
        }
        records
    }))
}

/// Figures of a storm.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Clients per alternate.
    pub share: BTreeMap<String, u32>,
    /// Failed boots.
    pub failures: u32,
    /// Boots that fell back at least once.
    pub fell_back: u32,
    /// Median completion time (start of the storm to the end of a boot), of the boots that
    /// succeeded.
    pub p50: Duration,
    /// 99th-percentile completion time, counted the same way.
    pub p99: Duration,
    /// The last boot's end: the makespan.
    pub max: Duration,
    /// Boot-file bytes received in all.
    pub bytes: u64,
    /// Each distinct reason for a failed boot, with how many clients it stopped; most first.
    pub failure_reasons: Vec<(String, u32)>,
}

impl Summary {
    /// Summarises storm records.
    pub fn of(records: &[BootRecord]) -> Summary {
        let mut share = BTreeMap::new();
        let mut done: Vec<Duration> = Vec::new();
        for r in records {
            if let Some(alt) = &r.alternate {
                *share.entry(alt.clone()).or_insert(0) += 1;
                done.push(r.started + r.duration);
            }
        }
        done.sort();
        let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
        for reason in records.iter().filter_map(BootRecord::failure_reason) {
            *reasons.entry(reason).or_insert(0) += 1;
        }
        let mut failure_reasons: Vec<(String, u32)> = reasons.into_iter().collect();
        failure_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let pick = |q: f64| {
            done.get(((done.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Summary {
            share,
            failures: records.iter().filter(|r| r.error.is_some()).count() as u32,
            fell_back: records.iter().filter(|r| !r.fell_back.is_empty()).count() as u32,
            p50: pick(0.5),
            p99: pick(0.99),
            max: done.last().copied().unwrap_or_default(),
            bytes: records.iter().map(|r| r.bytes).sum(),
            failure_reasons,
        }
    }

    /// One JSON object, as `bootherd client --json` prints it for a storm of `clients`:
    /// counts, `makespan_s`, `p50_s`, `p99_s`, `bytes`, `share` (clients per alternate) and
    /// `failures` (each distinct reason with its count).
    pub fn to_json(&self, clients: usize) -> String {
        let share: Vec<String> = self
            .share
            .iter()
            .map(|(alt, n)| format!("{}:{n}", json::string(alt)))
            .collect();
        let reasons: Vec<String> = self
            .failure_reasons
            .iter()
            .map(|(reason, n)| format!("{{\"reason\":{},\"count\":{n}}}", json::string(reason)))
            .collect();
        format!(
            "{{\"clients\":{},\"booted\":{},\"failed\":{},\"fell_back\":{},\"makespan_s\":{},\"p50_s\":{},\"p99_s\":{},\"bytes\":{},\"share\":{{{}}},\"failures\":[{}]}}",
            clients,
            clients as u32 - self.failures,
            self.failures,
            self.fell_back,
            seconds(self.max),
            seconds(self.p50),
            seconds(self.p99),
            self.bytes,
            share.join(","),
            reasons.join(",")
        )
    }

    /// One line: `share alt1 60, alt2 30, alt3 10; p50 … p99 … max …; 0 failed`.
    pub fn line(&self) -> String {
        let share: Vec<String> = self.share.iter().map(|(a, n)| format!("{a} {n}")).collect();
        format!(
            "share {}; completion p50 {:.2} s, p99 {:.2} s, max {:.2} s; {} fell back, {} failed",
            share.join(", "),
            self.p50.as_secs_f64(),
            self.p99.as_secs_f64(),
            self.max.as_secs_f64(),
            self.fell_back,
            self.failures
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u32, alt: Option<&str>, end_ms: u64) -> BootRecord {
        BootRecord {
            index,
            started: Duration::ZERO,
            duration: Duration::from_millis(end_ms),
            alternate: alt.map(String::from),
            fell_back: if index == 0 { vec!["x".into()] } else { vec![] },
            bytes: if alt.is_some() { 10 } else { 0 },
            error: alt.is_none().then(|| "boom".to_string()),
        }
    }

    #[test]
    fn summary_percentiles_and_shares() {
        let mut records: Vec<BootRecord> = (1..=100)
            .map(|i| {
                record(
                    i,
                    Some(if i % 4 == 0 { "b" } else { "a" }),
                    u64::from(i) * 10,
                )
            })
            .collect();
        records.push(record(0, None, 5));
        let s = Summary::of(&records);
        assert_eq!(s.share["a"], 75);
        assert_eq!(s.share["b"], 25);
        assert_eq!((s.failures, s.fell_back), (1, 1));
        assert_eq!(s.p50, Duration::from_millis(500));
        assert_eq!(s.p99, Duration::from_millis(990));
        assert_eq!(s.max, Duration::from_millis(1000));
        assert_eq!(s.bytes, 1000);
        assert_eq!(s.failure_reasons, [("boom (x)".to_string(), 1)]);
    }

    #[test]
    fn json_shape() {
        let records = [record(0, None, 5), record(1, Some("alt \"1\""), 1250)];
        assert_eq!(
            records[0].to_json(),
            "{\"index\":0,\"start_s\":0.000,\"duration_s\":0.005,\"alternate\":null,\"fell_back\":[\"x\"],\"bytes\":0,\"error\":\"boom\"}"
        );
        assert_eq!(
            records[1].to_json(),
            "{\"index\":1,\"start_s\":0.000,\"duration_s\":1.250,\"alternate\":\"alt \\\"1\\\"\",\"fell_back\":[],\"bytes\":10,\"error\":null}"
        );
        assert_eq!(
            Summary::of(&records).to_json(records.len()),
            "{\"clients\":2,\"booted\":1,\"failed\":1,\"fell_back\":1,\"makespan_s\":1.250,\"p50_s\":1.250,\"p99_s\":1.250,\"bytes\":10,\"share\":{\"alt \\\"1\\\"\":1},\"failures\":[{\"reason\":\"boom (x)\",\"count\":1}]}"
        );
    }

    #[test]
    fn failures_are_grouped_by_reason_without_the_clients_identity() {
        let failed = |index: u32, why: &str| {
            let who = Identity::numbered(index);
            BootRecord {
                error: Some("no alternate could serve the boot".into()),
                fell_back: vec![format!(
                    "alt1 at 10.0.0.1:69: bootherd.cfg/{}/{}/7: {why}",
                    who.uuid, who.mac
                )],
                ..record(index, None, 5)
            }
        };
        let records = [
            failed(1, "timed out"),
            failed(2, "timed out"),
            failed(3, "server error 0: server busy"),
            record(4, Some("alt1"), 10),
        ];
        let s = Summary::of(&records);
        assert_eq!(
            s.failure_reasons,
            [
                (
                    "no alternate could serve the boot (alt1 at 10.0.0.1:69: bootherd.cfg/UUID/MAC/7: timed out)".to_string(),
                    2
                ),
                (
                    "no alternate could serve the boot (alt1 at 10.0.0.1:69: bootherd.cfg/UUID/MAC/7: server error 0: server busy)".to_string(),
                    1
                ),
            ]
        );
    }

    #[test]
    fn round_robin_and_weights_assign_first_alternates() {
        let rr = Assign::parse("round-robin", 3).unwrap();
        let firsts: Vec<usize> = (0..7).map(|n| rr.first(n, 3)).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2, 0]);
        // 200/100/50 Mbit/s: 4:2:1, and every run of clients from the first is split as
        // closely as it can be.
        let w = Assign::parse("weights:200,100,50", 3).unwrap();
        assert_eq!(w, Assign::Weights(vec![4, 2, 1]));
        let mut counts = [0u32; 3];
        for n in 0..700 {
            counts[w.first(n, 3)] += 1;
            for (i, share) in [4.0, 2.0, 1.0].iter().enumerate() {
                let fair = f64::from(n + 1) * share / 7.0;
                assert!(
                    (f64::from(counts[i]) - fair).abs() < 1.0,
                    "client {n}: {counts:?}"
                );
            }
        }
        assert_eq!(counts, [400, 200, 100]);
        for bad in [
            "weights:1,2",
            "weights:0,0,0",
            "weights:1,x,2",
            "random",
            "weights:9999,9999,9998",
        ] {
            assert!(Assign::parse(bad, 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn assigned_clients_start_at_their_alternate_and_fall_back_in_list_order() {
        let entry = |id: &str| AltEntry {
            id: id.into(),
            addresses: vec![SocketAddr::from(([10, 0, 0, id.as_bytes()[0]], 69))],
            http: Vec::new(),
        };
        let alternates = [entry("a"), entry("b"), entry("c")];
        let order = |n: u32| -> Vec<String> {
            Assign::RoundRobin
                .order(&alternates, n)
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(order(0), ["a", "b", "c"]);
        assert_eq!(order(1), ["b", "a", "c"]);
        assert_eq!(order(5), ["c", "a", "b"]);
    }

    #[test]
    fn identities_are_distinct_and_well_formed() {
        let a = Identity::numbered(1);
        let b = Identity::numbered(256);
        assert_eq!(a.mac, "52-54-00-00-00-01");
        assert_eq!(b.mac, "52-54-00-00-01-00");
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(a.uuid.len(), 36);
    }
}
