//! The central boot server role: the report listener and ordering daemon, and TFTP for the NBP
//! files and the alternate list generated on every request.
//!
//! This module binds the sockets and runs the loops; what a datagram or a list request means
//! is decided in [`crate::balance`], the files served are in `list`, the report-port log lines
//! in `report_log`.

mod list;
mod report_log;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;

use crate::balance::{ReportEndpoint, Table};
use crate::config::CentralConfig;
use crate::lifecycle::{serve_until_stopped, Control, Request};
use crate::log;
use crate::metrics::server::MetricsServer;
use crate::metrics::{render, CentralSample};
use crate::net::Deadline;
use crate::pxe::responder::{PxeConfig, Service};
use crate::pxe::server::PxeServer;
use crate::report::wire::MAX_DATAGRAM_LEN;
use crate::sys::unix_ms;
use crate::tftp::server::{Server, Tuning};
use crate::tftp::source::{DirSource, FileSource, Overlay};
use list::{http_boot_locator, ListSource, Nothing};
use report_log::{log_handled, DropLog};

/// How often the table is checked for alternates that went quiet or departed.
const TICK: Duration = Duration::from_secs(1);

type SharedTable = Arc<Mutex<Table>>;

fn lock(table: &SharedTable) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Runs a central until it fails or stops: binds, drops to `user` if asked, then serves.
pub fn run(
    config: CentralConfig,
    user: Option<&str>,
    reload: impl FnMut() -> Result<CentralConfig, String> + 'static,
) -> Result<(), String> {
    crate::lifecycle::run_daemon(Central::bind(config)?, user, reload, Central::run)
}
