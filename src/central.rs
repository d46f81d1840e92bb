//! The central boot server role: the report listener and ordering daemon, and TFTP for the NBP
//! files and the alternate list generated on every request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;

use crate::balance::{DropReason, Handled, Ranked, ReportEndpoint, Table};
use crate::config::CentralConfig;
use crate::formats::alt_list::{self, AltEntry, IPXE_LIST_PATH, LIST_PATH};
use crate::formats::uboot;
use crate::lifecycle::{serve_until_stopped, Control, Request};
use crate::log;
use crate::metrics::server::MetricsServer;
use crate::metrics::{render, CentralSample};
use crate::net::Deadline;
use crate::pxe::responder::{PxeConfig, Service};
use crate::pxe::server::PxeServer;
use crate::report::wire::MAX_DATAGRAM_LEN;
use crate::sys::unix_ms;
use crate::tftp::path::SafePath;
use crate::tftp::server::{Server, Tuning};
use crate::tftp::source::{Content, DirSource, FileSource, OpenError, Overlay};

/// How often the table is checked for alternates that went quiet or departed.
const TICK: Duration = Duration::from_secs(1);
/// Dropped report-port datagrams are summed up in one log line at most this often: a flood
/// must not turn into a flood of log lines.
const DROP_SUMMARY_EVERY: Duration = Duration::from_secs(10);

type SharedTable = Arc<Mutex<Table>>;

fn lock(table: &SharedTable) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client that asks for the list again from the same address and port within this window (it
/// resent its request before our answer reached it) gets the same list, and no second boot is
/// counted against its first alternate. Keyed by port too: many simulated clients, or clients
/// behind one NAT, share an address.
const REPEAT_WINDOW: Duration = Duration::from_secs(3);

/// Serves the alternate list, generated from the table for each client: as text, as an iPXE
/// script and as a U-Boot script image.
struct ListSource {
    table: SharedTable,
    /// The last list handed to each client address and port, while within [`REPEAT_WINDOW`].
    recent: Mutex<HashMap<SocketAddr, (Instant, Vec<Ranked>)>>,
    /// Backup centrals (`HOST:PORT`) that the iPXE list asks when no alternate serves.
    backups: Vec<String>,
}

impl ListSource {
    fn new(table: SharedTable, backups: Vec<String>) -> Self {
        ListSource {
            table,
            recent: Mutex::default(),
            backups,
        }
    }

    /// The list for `client`: the one it got moments ago, or a new assignment.
    fn list_for(&self, client: SocketAddr, now: Instant) -> Vec<Ranked> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|_, (at, _)| now.saturating_duration_since(*at) < REPEAT_WINDOW);
        if let Some((_, ranked)) = recent.get(&client) {
            log::debug!("central: {client}: list again (same as moments ago)");
            return ranked.clone();
        }
        let ranked = lock(&self.table).assign(now, client);
        log::info!("central: {client}: list {}", describe(&ranked));
        recent.insert(client, (now, ranked.clone()));
        ranked
    }
}

impl FileSource for ListSource {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let path = path.as_str();
        if ![LIST_PATH, IPXE_LIST_PATH, uboot::LIST_PATH].contains(&path) {
            return Err(OpenError::NotFound);
        }
        let ranked = self.list_for(client, Instant::now());
        let entries: Vec<AltEntry> = ranked
            .into_iter()
            .map(|r| AltEntry {
                id: r.id,
                addresses: r.addresses,
                http: r.http_addresses,
            })
            .collect();
        let bytes = match path {
            IPXE_LIST_PATH => alt_list::render_ipxe(&entries, &self.backups).into_bytes(),
            uboot::LIST_PATH => uboot::script_image(
                "bootherd alternate list",
                &uboot::render_list(&entries, &self.backups),
            ),
            _ => alt_list::render(&entries).into_bytes(),
        };
        Ok(Content::Bytes(bytes.into()))
    }

    fn delivered(&self, path: &str, client: SocketAddr) {
        if [LIST_PATH, IPXE_LIST_PATH, uboot::LIST_PATH].contains(&path) {
            lock(&self.table).confirm(Instant::now(), client);
        }
    }
}

fn describe(ranked: &[Ranked]) -> String {
    if ranked.is_empty() {
        return "empty (no alternate available)".into();
    }
    ranked
        .iter()
        .map(|r| format!("{} ({:.2} s)", r.id, r.score_us as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ")
}

/// URLs for UEFI HTTP boot clients: the path on the first alternate of the client's order that
/// serves HTTP. Nothing is promised: the file is a network bootstrap program, and the list it
/// fetches next counts the boot.
fn http_boot_locator(table: SharedTable) -> crate::pxe::server::HttpLocator {
    Arc::new(move |path, client| {
        let ranked = lock(&table).order(Instant::now(), Some(client.ip()));
        let best = ranked.iter().find_map(|r| r.http_addresses.first())?;
        Some(format!("http://{best}/{path}"))
    })
}

/// Answers nothing: a central without an NBP directory.
struct Nothing;

impl FileSource for Nothing {
    fn open(&self, _: &SafePath, _: SocketAddr) -> Result<Content, OpenError> {
        Err(OpenError::NotFound)
    }
}

/// A bound central, ready to run.
pub struct Central {
    endpoint: ReportEndpoint,
    table: SharedTable,
    reports: std::net::UdpSocket,
    server: Server,
    pxe: Option<PxeServer>,
    metrics: Option<MetricsServer>,
    shutdown_grace: Duration,
}

impl Central {
    /// Binds every socket, synchronously (see [`crate::tftp::server::Server`]).
    pub fn bind(config: CentralConfig) -> Result<Central, String> {
        let table = Arc::new(Mutex::new(Table::new(config.policy.clone())));
        // Backups serve TFTP on this central's port, as PXE clients expect.
        let backups = config.pxe.iter().flat_map(|p| &p.responder.backup_centrals);
        let backups = backups
            .map(|ip| SocketAddr::new((*ip).into(), config.tftp_listen.port()).to_string())
            .collect();
        let list = ListSource::new(table.clone(), backups);
        let source: Arc<dyn FileSource> = match &config.tftp_root {
            Some(root) => Arc::new(Overlay {
                first: list,
                second: DirSource::new(root)
                    .map_err(|e| format!("tftp_root {}: {e}", root.display()))?,
            }),
            None => Arc::new(Overlay {
                first: list,
                second: Nothing,
            }),
        };
        let server = Server::bind(config.tftp.server(config.tftp_listen), source)
            .map_err(|e| format!("cannot listen for TFTP on {}: {e}", config.tftp_listen))?;
        let reports = std::net::UdpSocket::bind(config.report_listen)
            .map_err(|e| format!("cannot listen for reports on {}: {e}", config.report_listen))?;
        crate::net::grow_recv_buffer(&reports);
        let pxe = match &config.pxe {
            Some(settings) => {
                Some(PxeServer::bind(settings)?.with_http_boot(http_boot_locator(table.clone())))
            }
            None => None,
        };
        let metrics = MetricsServer::bind_configured(config.metrics_listen)?;
        Ok(Central {
            endpoint: ReportEndpoint::new(config.key),
            table,
            reports,
            server,
            pxe,
            metrics,
            shutdown_grace: config.tftp.shutdown_grace,
        })
    }

    /// The report listener's address.
    pub fn report_addr(&self) -> std::io::Result<SocketAddr> {
        self.reports.local_addr()
    }

    /// The TFTP address.
    pub fn tftp_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// The PXE sockets, if any.
    pub fn pxe_addrs(&self) -> Vec<(Service, SocketAddr)> {
        self.pxe
            .as_ref()
            .map(PxeServer::local_addrs)
            .unwrap_or_default()
    }

    /// Runs until a socket fails, or until a stop request's shutdown is over; `control`'s
    /// reload requests re-read the config.
    pub async fn run(self, control: Control<CentralConfig>) -> Result<(), String> {
        for (service, addr) in self.pxe_addrs() {
            log::info!("central: PXE {service:?} on {addr}");
        }
        log::info!(
            "central: reports on {}, TFTP on {}",
            self.report_addr().map_err(|e| e.to_string())?,
            self.tftp_addr().map_err(|e| e.to_string())?
        );
        let Central {
            endpoint,
            table,
            reports,
            server,
            pxe,
            metrics,
            shutdown_grace,
        } = self;
        let live = Live {
            endpoint: RefCell::new(endpoint),
            table: table.clone(),
            tuning: server.tuning(),
            pxe: pxe.as_ref().map(PxeServer::responder),
            shutdown_grace: Cell::new(shutdown_grace),
        };
        let shutdown = server.shutdown();
        let reports = UdpSocket::try_from(reports).map_err(|e| e.to_string())?;
        let pxe = async {
            match pxe {
                Some(pxe) => pxe.run().await,
                None => smol::future::pending().await,
            }
        };
        let progress = server.progress();
        let metrics = MetricsServer::run_configured(metrics, || {
            let central = CentralSample::take(&mut lock(&table), Instant::now());
            render(Some(&central), &progress.totals())
        });
        let serve = async {
            server
                .run()
                .await
                .map_err(|e| format!("TFTP server stopped: {e}"))
        };
        let listen = async {
            let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
            let mut deadline = Deadline::default();
            let mut next_tick = Instant::now() + TICK;
            let mut drops = DropLog::new(Instant::now());
            loop {
                let received = deadline
                    .race(Some(next_tick), reports.recv_from(&mut buf))
                    .await
                    .map_err(|e| format!("report socket: {e}"))?;
                let now = Instant::now();
                if let Some((n, from)) = received {
                    let (handled, reply) = {
                        let mut table = lock(&table);
                        let mut endpoint = live.endpoint.borrow_mut();
                        endpoint.handle(&mut table, now, unix_ms(), from, &buf[..n])
                    };
                    log_handled(from, &handled);
                    if let Some(reply) = reply {
                        if let Err(e) = reports.send_to(&reply, from).await {
                            log::debug!("central: status answer to {from}: {e}");
                        }
                    }
                }
                if now >= next_tick {
                    next_tick = now + TICK;
                    let mut table = lock(&table);
                    table.tick(now);
                    while let Some(event) = table.poll_event() {
                        log::info!("central: {event}");
                    }
                    let bad_tag_from = live.endpoint.borrow().bad_tag_from();
                    drops.maybe_log(now, table.dropped(), bad_tag_from);
                }
            }
        };
        let Control {
            requests,
            mut reload,
        } = control;
        serve_until_stopped(
            serve.or(listen).or(pxe).or(metrics),
            &shutdown,
            || live.shutdown_grace.get(),
            requests,
            |request| live.handle(request, &mut reload),
        )
        .await
    }
}

/// What a running central can change without rebinding, for a reload.
struct Live {
    endpoint: RefCell<ReportEndpoint>,
    table: SharedTable,
    tuning: Tuning,
    pxe: Option<Arc<Mutex<PxeConfig>>>,
    shutdown_grace: Cell<Duration>,
}

impl Live {
    fn handle(&self, request: Request, reload: &mut dyn FnMut() -> Result<CentralConfig, String>) {
        match request {
            Request::Reload => match reload() {
                Ok(new) => self.apply(new),
                Err(e) => log::warning!("central: reload refused, the running config stays: {e}"),
            },
            Request::ToggleDrain => {
                log::info!("central: SIGUSR1 ignored (draining is for alternates)")
            }
            // Handled by serve_until_stopped.
            Request::Stop => {}
        }
    }

    /// Takes the key, policy, TFTP limits and PXE boot files and menu of `new`; its addresses
    /// and directories wait for a restart (the reload's caller says which changed).
    fn apply(&self, new: CentralConfig) {
        self.tuning.apply(&new.tftp.server(new.tftp_listen));
        if let (Some(responder), Some(pxe)) = (&self.pxe, new.pxe) {
            *responder.lock().unwrap_or_else(PoisonError::into_inner) = pxe.responder;
        }
        lock(&self.table).set_policy(new.policy);
        self.endpoint.borrow_mut().set_key(new.key);
        self.shutdown_grace.set(new.tftp.shutdown_grace);
        log::info!("central: config reloaded (key, ordering policy, TFTP limits, PXE boot files)");
    }
}

/// Logs one handled datagram: applied marks at info; everything per datagram else at debug
/// only (dropped ones are summed up by [`DropLog`]).
fn log_handled(from: SocketAddr, handled: &Handled) {
    match handled {
        Handled::Marked { alternate, state } => {
            log::info!("central: {from}: network path of {alternate} marked {state}")
        }
        Handled::Dropped { why, what } => log::debug!("central: {from}: {what} dropped: {why}"),
        Handled::Report { .. } | Handled::Answered | Handled::Ignored => {}
    }
}

/// Sums up dropped report-port datagrams in one warning per [`DROP_SUMMARY_EVERY`] at most.
struct DropLog {
    last: [u64; 4],
    at: Instant,
}

impl DropLog {
    fn new(now: Instant) -> Self {
        DropLog {
            last: [0; 4],
            at: now,
        }
    }

    fn maybe_log(&mut self, now: Instant, dropped: [u64; 4], bad_tag_from: Option<SocketAddr>) {
        if now.saturating_duration_since(self.at) < DROP_SUMMARY_EVERY || dropped == self.last {
            return;
        }
        let reasons = [
            DropReason::BadTag,
            DropReason::Replayed,
            DropReason::Unknown,
            DropReason::Malformed,
        ];
        let parts: Vec<String> = reasons
            .iter()
            .filter_map(|&why| {
                let n = dropped[why as usize] - self.last[why as usize];
                (n > 0).then(|| match (why, bad_tag_from) {
                    (DropReason::BadTag, Some(from)) => {
                        format!("{n} {why} (last from {from})")
                    }
                    _ => format!("{n} {why}"),
                })
            })
            .collect();
        log::warning!(
            "central: report port dropped in the last {} s: {}",
            now.saturating_duration_since(self.at).as_secs(),
            parts.join(", ")
        );
        self.last = dropped;
        self.at = now;
    }
}

/// Runs a central until it fails or stops: binds, drops to `user` if asked, then serves.
pub fn run(
    config: CentralConfig,
    user: Option<&str>,
    reload: impl FnMut() -> Result<CentralConfig, String> + 'static,
) -> Result<(), String> {
    let central = Central::bind(config)?;
    if let Some(user) = user {
        crate::privileges::drop_to(user)?;
    }
    // After the drop: that needs the process to have one thread, and signals start another.
    let control = Control::from_signals(reload)?;
    smol::block_on(central.run(control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Policy;
    use crate::report::wire::tests::report;

    #[test]
    fn list_source_renders_promises_and_confirms_on_delivery() {
        let table = Arc::new(Mutex::new(Table::new(Policy::default())));
        lock(&table)
            .handle_report(Instant::now(), report("alt1", 1))
            .unwrap();
        let src = ListSource::new(table.clone(), Vec::new());
        let client: SocketAddr = "127.0.0.1:999".parse().unwrap();
        let Ok(Content::Bytes(text)) =
            src.open(&crate::tftp::path::sanitize(LIST_PATH).unwrap(), client)
        else {
            panic!()
        };
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "# bootherd alternate list v1, best first\nalt1 127.0.0.11:6901 # http 127.0.0.11:8080\n"
        );
        assert_eq!(lock(&table).status(Instant::now())[0].promised, 1);
        // The same client again at once (a resent request): same list, no second promise;
        // another client counts, even from the same address.
        let now = Instant::now();
        assert_eq!(src.list_for(client, now)[0].id, "alt1");
        assert_eq!(lock(&table).status(now)[0].promised, 1);
        let other: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        src.list_for(other, now);
        assert_eq!(lock(&table).status(now)[0].promised, 2);
        // Only the client that acknowledged its list still counts after a few seconds.
        src.delivered(LIST_PATH, client);
        let later = now + crate::balance::TENTATIVE_TTL + Duration::from_millis(1);
        lock(&table)
            .handle_report(later, report("alt1", 2))
            .unwrap();
        assert_eq!(lock(&table).status(later)[0].promised, 1);
        src.list_for(client, later);
        assert_eq!(
            lock(&table).status(later)[0].promised,
            2,
            "a new boot after the window"
        );
        let Ok(Content::Bytes(script)) = src.open(
            &crate::tftp::path::sanitize(IPXE_LIST_PATH).unwrap(),
            client,
        ) else {
            panic!()
        };
        assert!(script.starts_with(b"#!ipxe\n"));
    }

    #[test]
    fn u_boot_script_is_a_list_request() {
        let table = Arc::new(Mutex::new(Table::new(Policy::default())));
        lock(&table)
            .handle_report(Instant::now(), report("alt1", 1))
            .unwrap();
        let src = ListSource::new(table.clone(), vec!["10.0.0.2:69".into()]);
        let client: SocketAddr = "127.0.0.1:999".parse().unwrap();
        let path = crate::tftp::path::sanitize(uboot::LIST_PATH).unwrap();
        let Ok(Content::Bytes(image)) = src.open(&path, client) else {
            panic!()
        };
        let script = uboot::render_list(
            &[AltEntry {
                id: "alt1".into(),
                addresses: vec!["127.0.0.11:6901".parse().unwrap()],
                http: Vec::new(),
            }],
            &["10.0.0.2:69".into()],
        );
        assert_eq!(
            image[..],
            uboot::script_image("bootherd alternate list", &script)[..]
        );
        assert_eq!(lock(&table).status(Instant::now())[0].promised, 1);
        src.delivered(uboot::LIST_PATH, client);
        assert_eq!(lock(&table).status(Instant::now())[0].promised, 1);
    }
}
