//! The alternate boot server role: TFTP for the boot files and per-client config files, plus
//! the load monitor that reports to every configured central.
//!
//! Signals: SIGTERM or SIGINT send a "leaving" report to every central, then the transfers in
//! progress get `tftp.shutdown_grace_ms` to finish (the rest end with an ERROR); SIGHUP re-reads
//! the config (see [`Alternate::run`]); SIGUSR1 toggles draining (no new clients are sent here,
//! transfers in progress finish).
//!
//! This module binds and runs; the config files served are in `configs`, the host figures in
//! `sampler`, the sending of reports in `reporter`, the state file in `state_file`.

mod configs;
mod reporter;
mod sampler;
mod state_file;

pub use configs::{BootCounters, ConfigSource};
use reporter::Reporter;
use sampler::{link_speed, process_cpu_time, SystemSampler};
use state_file::StateKeeper;

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;
use smol::Timer;

use crate::config::AlternateConfig;
use crate::http::server::{Etags, HttpServer};
use crate::lifecycle::{Control, Request, Requests, Shutdown};
use crate::log;
use crate::metrics::render;
use crate::metrics::server::MetricsServer;
use crate::report::capacity::CapacityEstimator;
use crate::report::monitor::{
    digest_of, hash_dir, AlternateIdentity, HashedFile, Monitor, Observed,
};
use crate::report::wire::{hex, AltState, Message};
use crate::tftp::progress::Progress;
use crate::tftp::server::{Server, Tuning};
use crate::tftp::source::{DirSource, FileSource, Overlay};

/// How often the monitor looks at the counters for edges (first transfer, last transfer).
const EDGE_CHECK: Duration = Duration::from_millis(20);
/// The capacity assumed before anything is measured, when the network interface does not say
/// its speed: 1 Gbit/s.
const DEFAULT_PRIOR: u64 = 125_000_000;

/// Runs an alternate until it stops: binds, drops to `user` if asked, then serves; `reload`
/// re-reads the config on SIGHUP.
pub fn run(
    config: AlternateConfig,
    user: Option<&str>,
    reload: impl FnMut() -> Result<AlternateConfig, String> + 'static,
) -> Result<(), String> {
    crate::lifecycle::run_daemon(Alternate::bind(config)?, user, reload, Alternate::run)
}

/// The address clients should use when the config names none: the TFTP address when it is a
/// specific one, else this host's address on its route to `central` (what a UDP socket
/// connected there is bound to), with the TFTP port. Never another host's address.
pub fn default_advertise(bound: SocketAddr, central: SocketAddr) -> Result<SocketAddr, String> {
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let any = match central {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    std::net::UdpSocket::bind(any)
        .and_then(|probe| {
            probe.connect(central)?;
            probe.local_addr()
        })
        .map(|local| SocketAddr::new(local.ip(), bound.port()))
        .map_err(|e| {
            format!(
                "alternate.advertise is not set and this host has no route to central {central} \
                 to take its address from ({e}): set alternate.advertise"
            )
        })
}

/// The alternate's bound HTTP server and the addresses it tells clients.
struct BoundHttp {
    server: HttpServer,
    advertised: Vec<SocketAddr>,
}

/// Binds HTTP when the config asks for it: the same boot files, and the configs `configs`
/// makes for an address, counted in the TFTP server's `progress`. Clients are told
/// `http_advertise`, or the first TFTP address's host with the bound HTTP port.
fn bind_http(
    config: &AlternateConfig,
    addresses: &[SocketAddr],
    progress: Arc<Progress>,
    configs: impl FnOnce(SocketAddr) -> ConfigSource,
    dir: &DirSource,
) -> Result<Option<BoundHttp>, String> {
    let Some(settings) = config.http else {
        return Ok(None);
    };
    let listen_error = |e: io::Error| format!("cannot listen for HTTP on {}: {e}", settings.listen);
    let placeholder: Arc<dyn FileSource> = Arc::new(dir.clone());
    let server = HttpServer::bind(settings, placeholder, progress).map_err(listen_error)?;
    let bound = server.local_addr().map_err(listen_error)?;
    let advertised = if config.http_advertise.is_empty() {
        let ip = if bound.ip().is_unspecified() {
            addresses[0].ip()
        } else {
            bound.ip()
        };
        vec![SocketAddr::new(ip, bound.port())]
    } else {
        config.http_advertise.clone()
    };
    let source = Overlay {
        first: configs(advertised[0]),
        second: dir.clone(),
    };
    Ok(Some(BoundHttp {
        server: server.with_source(Arc::new(source)),
        advertised,
    }))
}

/// A bound alternate, ready to run.
pub struct Alternate {
    config: AlternateConfig,
    server: Server,
    progress: Arc<Progress>,
    boots: Arc<BootCounters>,
    monitor: Monitor,
    state: StateKeeper,
    socket: std::net::UdpSocket,
    http: Option<HttpServer>,
    metrics: Option<MetricsServer>,
}

impl Alternate {
    /// Binds the TFTP socket and the report socket (synchronously, see
    /// [`crate::tftp::server::Server`]), hashes the boot files and counts this start in the
    /// state file.
    pub fn bind(config: AlternateConfig) -> Result<Alternate, String> {
        let dir = DirSource::new(&config.root)
            .map_err(|e| format!("root {}: {e}", config.root.display()))?;
        let hashed = hash_dir(&config.root)
            .map_err(|e| format!("cannot hash {}: {e}", config.root.display()))?;
        let digest = digest_of(&hashed);
        let mut server_config = config.tftp.server(config.tftp_listen);
        server_config.rate_limit = rate_cap(&config);
        // Bind first: with port 0 the advertised address is only known afterwards.
        let placeholder: Arc<dyn FileSource> = Arc::new(dir.clone());
        let server = Server::bind(server_config.clone(), placeholder)
            .map_err(|e| format!("cannot listen on {}: {e}", config.tftp_listen))?;
        let bound = server.local_addr().map_err(|e| e.to_string())?;
        let addresses = if config.advertise.is_empty() {
            vec![default_advertise(bound, config.centrals[0])?]
        } else {
            config.advertise.clone()
        };
        let configs = ConfigSource::new(&config.root, &config.id, addresses[0]);
        let boots = configs.boots();
        let http_configs = |address| configs.over_http(address);
        let http = bind_http(&config, &addresses, server.progress(), http_configs, &dir)?;
        if let Some(http) = &http {
            *http
                .server
                .etags()
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Etags::new(&hashed);
        }
        let server = server.with_source(Arc::new(Overlay {
            first: configs,
            second: dir,
        }));
        let progress = server.progress();
        let local = match config.centrals[0].ip() {
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = std::net::UdpSocket::bind(local).map_err(|e| e.to_string())?;
        let metrics = MetricsServer::bind_configured(config.metrics_listen)?;
        let state = StateKeeper::start(config.state_file.clone());
        let prior = link_speed(addresses[0].ip()).unwrap_or(DEFAULT_PRIOR);
        let saved = state.state.capacity.aged(crate::sys::unix_ms());
        let capacity = CapacityEstimator::new(prior, config.link_bytes_per_sec, saved);
        log::info!(
            "alternate {}: start {} of this alternate; link capacity {} ({})",
            config.id,
            state.state.boot_count,
            mb_per_sec(capacity.capacity()),
            match saved {
                Some(l) => format!("learned before, {} s of evidence", l.evidence.as_secs()),
                None => format!("nothing learned yet, prior {}", mb_per_sec(prior)),
            }
        );
        let monitor = Monitor::new(
            AlternateIdentity {
                alternate: config.id.clone(),
                addresses,
                http_addresses: match &http {
                    Some(http) => http.advertised.clone(),
                    None => Vec::new(),
                },
                boot_id: crate::sys::random_u64()
                    .map_err(|e| format!("cannot pick a boot id: {e}"))?,
                boot_count: state.state.boot_count,
                interval: config.interval,
                max_transfers: config.tftp.max_transfers.min(u32::MAX as usize) as u32,
                digest,
            },
            capacity,
        );
        log::info!(
            "alternate {}: boot files digest {}, clients told to use {}, reporting every {} ms to {}",
            config.id,
            hex(&digest),
            list(&monitor.identity().addresses),
            config.interval.as_millis(),
            list(&config.centrals)
        );
        Ok(Alternate {
            config,
            server,
            progress,
            boots,
            monitor,
            state,
            socket,
            http: http.map(|h| h.server),
            metrics,
        })
    }

    /// The TFTP address bound.
    pub fn tftp_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves and reports until it has stopped. A stop request sends a "leaving" report, then
    /// gives the transfers in progress the config's grace period; a second one ends them at
    /// once. A reload takes what can change without rebinding (key, centrals, interval, link
    /// capacity and rate cap, TFTP limits, the boot files' digest, computed anew) and logs what
    /// cannot (id, addresses, root, single-port mode).
    pub async fn run(self, control: Control<AlternateConfig>) -> Result<(), String> {
        let Alternate {
            config,
            server,
            progress,
            boots,
            mut monitor,
            mut state,
            socket,
            http,
            metrics,
        } = self;
        let Control {
            mut requests,
            mut reload,
        } = control;
        let shutdown = server.shutdown();
        let tuning = server.tuning();
        let pacer = server.pacer();
        let reporter = Reporter {
            key: RefCell::new(config.key.clone()),
            centrals: RefCell::new(config.centrals.clone()),
            socket: UdpSocket::try_from(socket).map_err(|e| e.to_string())?,
        };
        let held = http.as_ref().map(HttpServer::held);
        let etags = http.as_ref().map(HttpServer::etags);
        let serve_http = async {
            match http {
                Some(http) => http
                    .run(shutdown.clone())
                    .await
                    .map_err(|e| format!("HTTP server stopped: {e}")),
                None => Ok(()),
            }
        };
        let serve_tftp = async {
            server
                .run()
                .await
                .map_err(|e| format!("TFTP server stopped: {e}"))
        };
        let serve_metrics =
            MetricsServer::run_configured(metrics, || render(None, &progress.totals()));
        let serve = async {
            smol::future::try_zip(serve_tftp, serve_http)
                .await
                .map(|_| ())
        }
        .or(serve_metrics);
        let observe = || {
            let mut totals = progress.totals();
            // HTTP transfers waiting for their sockets count as held back: the link, not the
            // clients, limits them.
            if let Some(held) = &held {
                totals.pacer_held_ns += held.total(Instant::now()).as_nanos() as u64;
            }
            Observed {
                totals,
                boots_started: boots.started.load(Ordering::Relaxed),
                booked_bytes: boots.booked_bytes.load(Ordering::Relaxed),
                boot_bytes: boots.last_boot_bytes.load(Ordering::Relaxed),
                cpu: process_cpu_time(),
            }
        };
        let monitor_loop = async {
            let mut system = SystemSampler::new();
            let mut running = Running {
                root: config.root.clone(),
                shutdown_grace: config.tftp.shutdown_grace,
                rate_cap: rate_cap(&config),
                rehash: None,
                etags,
            };
            loop {
                let now = Instant::now();
                if let Some(report) = monitor.poll(now, &observe(), || system.sample()) {
                    reporter.send(&Message::Report(report)).await;
                    state.keep(now, &config.id, monitor.capacity().learned());
                }
                running.finish_rehash(&config.id, &mut monitor);
                let rate = monitor.pacing_rate(running.rate_cap);
                if pacer.rate() != rate {
                    pacer.set_rate(rate);
                }
                let signal = async { Some(requests.next().await) }
                    .or(async {
                        Timer::after(EDGE_CHECK).await;
                        None
                    })
                    .await;
                match signal {
                    Some(Request::ToggleDrain) => {
                        let next = monitor.toggle_drain();
                        log::info!("alternate {}: now {next}", config.id);
                    }
                    Some(Request::Reload) => match reload() {
                        Ok(new) => running.apply(&config.id, new, &mut monitor, &reporter, &tuning),
                        Err(e) => log::warning!(
                            "alternate: reload refused, the running config stays: {e}"
                        ),
                    },
                    Some(Request::Stop) => break,
                    None => {}
                }
            }
            monitor.set_state(AltState::Leaving);
            if let Some(report) = monitor.poll(Instant::now(), &observe(), || system.sample()) {
                reporter.send(&Message::Report(report)).await;
            }
            state.save(monitor.capacity().learned());
            log::info!("alternate {}: leaving", config.id);
            running
                .finish_transfers(&shutdown, &mut requests, progress.totals().active)
                .await
        };
        serve.or(monitor_loop).await
    }
}

/// A rate for the log, in MB/s.
fn mb_per_sec(bytes_per_sec: u64) -> String {
    format!("{:.1} MB/s", bytes_per_sec as f64 / 1e6)
}

/// What an alternate runs with, for reloads and the stop.
struct Running {
    /// The root it serves (a new one needs a restart).
    root: PathBuf,
    shutdown_grace: Duration,
    /// The configured sending cap (`alternate.rate_limit`), if any.
    rate_cap: Option<u64>,
    /// A digest being computed for a reload, on a thread of its own (hashing reads every file).
    rehash: Option<std::thread::JoinHandle<io::Result<Vec<HashedFile>>>>,
    /// The HTTP server's entity tags, taken from each new hashing.
    etags: Option<Arc<RwLock<Etags>>>,
}

/// The configured cap on the alternate's sending rate: `link_bytes_per_sec` when `rate_limit`
/// is on.
fn rate_cap(config: &AlternateConfig) -> Option<u64> {
    config.link_bytes_per_sec.filter(|_| config.rate_limit)
}

impl Running {
    /// After the "leaving" report: no new transfers, and those in progress get the grace
    /// period (a second stop request ends them at once). Never returns: the TFTP server, which
    /// runs beside this, ends the alternate once it has stopped.
    async fn finish_transfers(
        &self,
        shutdown: &Shutdown,
        requests: &mut Requests,
        active: usize,
    ) -> Result<(), String> {
        log::info!(
            "alternate: {active} transfers in progress get {} ms",
            self.shutdown_grace.as_millis()
        );
        shutdown.begin(self.shutdown_grace);
        loop {
            if requests.next().await == Request::Stop {
                log::info!("alternate: stop again: ending transfers now");
                shutdown.begin(Duration::ZERO);
            }
        }
    }

    /// Takes a re-read config: see [`Alternate::run`]. Its id, addresses, root and rate cap
    /// switch wait for a restart (the reload's caller says which changed).
    fn apply(
        &mut self,
        id: &str,
        new: AlternateConfig,
        monitor: &mut Monitor,
        reporter: &Reporter,
        tuning: &Tuning,
    ) {
        let mut server = new.tftp.server(new.tftp_listen);
        self.rate_cap = rate_cap(&new);
        server.rate_limit = self.rate_cap;
        tuning.apply(&server);
        monitor.set_capacity_cap(new.link_bytes_per_sec);
        *reporter.key.borrow_mut() = new.key;
        *reporter.centrals.borrow_mut() = new.centrals;
        let mut identity = monitor.identity().clone();
        identity.interval = new.interval;
        identity.max_transfers = new.tftp.max_transfers.min(u32::MAX as usize) as u32;
        monitor.set_identity(identity);
        self.shutdown_grace = new.tftp.shutdown_grace;
        let root = self.root.clone();
        self.rehash = Some(std::thread::spawn(move || hash_dir(&root)));
        log::info!(
            "alternate {id}: config reloaded (key, centrals, interval, capacity cap, TFTP limits; boot-file digest being computed)"
        );
    }

    /// Takes the digest of a reload once it is computed (never waits for it).
    fn finish_rehash(&mut self, id: &str, monitor: &mut Monitor) {
        if !self
            .rehash
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            return;
        }
        let Some(hashing) = self.rehash.take() else {
            return;
        };
        match hashing.join() {
            Ok(Ok(files)) => {
                if let Some(etags) = &self.etags {
                    *etags.write().unwrap_or_else(PoisonError::into_inner) = Etags::new(&files);
                }
                let digest = digest_of(&files);
                if digest != monitor.identity().digest {
                    log::info!("alternate {id}: boot files digest now {}", hex(&digest));
                }
                let mut identity = monitor.identity().clone();
                identity.digest = digest;
                monitor.set_identity(identity);
            }
            Ok(Err(e)) => log::warning!(
                "alternate {id}: cannot hash {}: {e}; the digest stays",
                self.root.display()
            ),
            // The hashing thread panicked: a bug, and the process aborts before this.
            Err(_) => {}
        }
    }
}

/// Addresses as "a, b".
fn list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
