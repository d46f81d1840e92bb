//! The central boot server role: the report listener and ordering daemon, and TFTP for the NBP
//! files and the alternate list generated on every request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;

use crate::balance::{Drop, Ranked, Table};
use crate::config::CentralConfig;
use crate::formats::alt_list::{self, AltEntry, IPXE_LIST_PATH, LIST_PATH};
use crate::lifecycle::{serve_until_stopped, Control, Request};
use crate::log;
use crate::pxe::responder::{PxeConfig, Service};
use crate::pxe::server::PxeServer;
use crate::report::wire::{
    decode, encode, DecodeError, Key, Message, StatusAnswer, MAX_DATAGRAM_LEN,
};
use crate::sys::unix_ms;
use crate::tftp::path::SafePath;
use crate::tftp::server::{Server, Tuning};
use crate::tftp::source::{Content, DirSource, FileSource, OpenError, Overlay};

/// A status request more than this far from the central's clock is dropped.
const STATUS_CLOCK_SKEW_MS: u64 = 60_000;

type SharedTable = Arc<Mutex<Table>>;

fn lock(table: &SharedTable) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client that asks for the list again from the same address and port within this window (it
/// resent its request before our answer reached it) gets the same list, and no second boot is
/// counted against its first alternate. Keyed by port too: many simulated clients, or clients
/// behind one NAT, share an address.
const REPEAT_WINDOW: Duration = Duration::from_secs(3);

/// Serves the alternate list, generated from the table for each client.
struct ListSource {
    table: SharedTable,
    /// The last list handed to each client address and port, while within [`REPEAT_WINDOW`].
    recent: Mutex<HashMap<SocketAddr, (Instant, Vec<Ranked>)>>,
}

impl ListSource {
    fn new(table: SharedTable) -> Self {
        ListSource {
            table,
            recent: Mutex::default(),
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
        let ranked = lock(&self.table).assign(now, Some(client.ip()));
        log::info!("central: {client}: list {}", describe(&ranked));
        recent.insert(client, (now, ranked.clone()));
        ranked
    }
}

impl FileSource for ListSource {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let ipxe = match path.as_str() {
            LIST_PATH => false,
            IPXE_LIST_PATH => true,
            _ => return Err(OpenError::NotFound),
        };
        let ranked = self.list_for(client, Instant::now());
        let entries: Vec<AltEntry> = ranked
            .into_iter()
            .map(|r| AltEntry {
                id: r.id,
                addresses: r.addresses.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let text = if ipxe {
            alt_list::render_ipxe(&entries)
        } else {
            alt_list::render(&entries)
        };
        Ok(Content::Bytes(text.into_bytes().into()))
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

/// Answers nothing: a central without an NBP directory.
struct Nothing;

impl FileSource for Nothing {
    fn open(&self, _: &SafePath, _: SocketAddr) -> Result<Content, OpenError> {
        Err(OpenError::NotFound)
    }
}

/// A bound central, ready to run.
pub struct Central {
    key: Key,
    table: SharedTable,
    reports: std::net::UdpSocket,
    server: Server,
    pxe: Option<PxeServer>,
    shutdown_grace: Duration,
}

impl Central {
    /// Binds every socket, synchronously (see [`crate::tftp::server::Server`]).
    pub fn bind(config: CentralConfig) -> Result<Central, String> {
        let table = Arc::new(Mutex::new(Table::new(config.policy.clone())));
        let list = ListSource::new(table.clone());
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
            Some(settings) => Some(PxeServer::bind(settings)?),
            None => None,
        };
        Ok(Central {
            key: config.key,
            table,
            reports,
            server,
            pxe,
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
            key,
            table,
            reports,
            server,
            pxe,
            shutdown_grace,
        } = self;
        let live = Live {
            key: RefCell::new(key),
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
        let serve = async {
            server
                .run()
                .await
                .map_err(|e| format!("TFTP server stopped: {e}"))
        };
        let listen = async {
            let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
            loop {
                let (n, from) = reports
                    .recv_from(&mut buf)
                    .await
                    .map_err(|e| format!("report socket: {e}"))?;
                let reply = handle_datagram(&live.key.borrow(), &table, from, &buf[..n]);
                if let Some(reply) = reply {
                    if let Err(e) = reports.send_to(&reply, from).await {
                        log::warning!("central: status answer to {from}: {e}");
                    }
                }
            }
        };
        let Control {
            requests,
            mut reload,
        } = control;
        serve_until_stopped(
            serve.or(listen).or(pxe),
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
    key: RefCell<Key>,
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
        *self.key.borrow_mut() = new.key;
        self.shutdown_grace.set(new.tftp.shutdown_grace);
        log::info!("central: config reloaded (key, ordering policy, TFTP limits, PXE boot files)");
    }
}

/// Handles one datagram on the report port; returns the answer to send back, if any.
fn handle_datagram(
    key: &Key,
    table: &SharedTable,
    from: SocketAddr,
    datagram: &[u8],
) -> Option<Vec<u8>> {
    let message = match decode(datagram, key) {
        Ok(m) => m,
        Err(e) => {
            let why = match e {
                DecodeError::BadTag => Drop::BadTag,
                _ => Drop::Malformed,
            };
            lock(table).count_drop(why);
            log::debug!("central: {from}: dropped datagram: {e}");
            return None;
        }
    };
    let mut table = lock(table);
    match message {
        Message::Report(report) => {
            let (id, seq) = (report.alternate.clone(), report.sequence);
            if let Err(why) = table.handle_report(Instant::now(), report) {
                log::warning!("central: {from}: report from {id} (seq {seq}) dropped: {why:?}");
            }
            None
        }
        Message::Mark(mark) => {
            let what = format!("{} {:?}", mark.alternate, mark.state);
            match table.handle_mark(unix_ms(), mark) {
                Ok(()) => log::info!("central: {from}: network path of {what}"),
                Err(why) => log::warning!("central: {from}: mark {what} dropped: {why:?}"),
            }
            None
        }
        Message::StatusRequest(request) => {
            if unix_ms().abs_diff(request.unix_ms) > STATUS_CLOCK_SKEW_MS {
                table.count_drop(Drop::Replayed);
                log::warning!("central: {from}: stale status request dropped");
                return None;
            }
            let answer = StatusAnswer {
                nonce: request.nonce,
                rows: table.status(Instant::now()),
                dropped: table.dropped(),
            };
            encode(&Message::StatusAnswer(answer), key)
                .map_err(|e| log::warning!("central: status answer: {e}"))
                .ok()
        }
        Message::StatusAnswer(_) => None,
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
    use crate::report::wire::tests::{key, report};
    use crate::report::wire::StatusRequest;

    #[test]
    fn datagrams_update_the_table_and_status_answers() {
        let table = Arc::new(Mutex::new(Table::new(Policy::default())));
        let from: SocketAddr = "127.0.0.11:5000".parse().unwrap();
        let signed = encode(&Message::Report(report("alt1", 1)), &key()).unwrap();
        assert!(handle_datagram(&key(), &table, from, &signed).is_none());
        // A replay and a forgery change nothing but the counters.
        assert!(handle_datagram(&key(), &table, from, &signed).is_none());
        let mut forged = encode(&Message::Report(report("evil", 2)), &key()).unwrap();
        forged[5] ^= 1;
        assert!(handle_datagram(&key(), &table, from, &forged).is_none());
        assert!(handle_datagram(&key(), &table, from, b"junk").is_none());
        let ask = |unix_ms| {
            let req = Message::StatusRequest(StatusRequest { nonce: 42, unix_ms });
            handle_datagram(&key(), &table, from, &encode(&req, &key()).unwrap())
        };
        let Message::StatusAnswer(answer) = decode(&ask(unix_ms()).unwrap(), &key()).unwrap()
        else {
            panic!("no answer")
        };
        assert_eq!(answer.nonce, 42);
        assert_eq!(answer.rows.len(), 1);
        assert_eq!(answer.rows[0].report.alternate, "alt1");
        assert_eq!(answer.dropped, [1, 1, 0, 1]);
        assert!(
            ask(unix_ms() - 120_000).is_none(),
            "old requests are not answered"
        );
    }

    #[test]
    fn list_source_renders_and_promises() {
        let table = Arc::new(Mutex::new(Table::new(Policy::default())));
        lock(&table)
            .handle_report(Instant::now(), report("alt1", 1))
            .unwrap();
        let src = ListSource::new(table.clone());
        let client: SocketAddr = "127.0.0.1:999".parse().unwrap();
        let Ok(Content::Bytes(text)) =
            src.open(&crate::tftp::path::sanitize(LIST_PATH).unwrap(), client)
        else {
            panic!()
        };
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "# bootherd alternate list v1, best first\nalt1 127.0.0.11:6901\n"
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
        let later = now + REPEAT_WINDOW;
        lock(&table)
            .handle_report(later, report("alt1", 2))
            .unwrap();
        src.list_for(client, later);
        assert_eq!(
            lock(&table).status(now)[0].promised,
            3,
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
}
