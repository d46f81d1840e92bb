//! The alternate boot server role: TFTP for the boot files and per-client config files, plus
//! the load monitor that reports to every configured central.
//!
//! Signals: SIGTERM or SIGINT send a "leaving" report to every central, then the transfers in
//! progress get `tftp.shutdown_grace_ms` to finish (the rest end with an ERROR); SIGHUP re-reads
//! the config (see [`Alternate::run`]); SIGUSR1 toggles draining (no new clients are sent here,
//! transfers in progress finish).

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;
use smol::Timer;
use sysinfo::System;

use crate::config::AlternateConfig;
use crate::formats::boot_config::{lookup_order, CONFIG_DIR, IPXE_CONFIG_DIR};
use crate::formats::uboot;
use crate::http::server::{Etags, HttpServer};
use crate::lifecycle::{Control, Request, Requests, Shutdown};
use crate::log;
use crate::metrics::render;
use crate::metrics::server::MetricsServer;
use crate::report::capacity::{CapacityEstimator, Learned};
use crate::report::monitor::{
    digest_of, hash_dir, HashedFile, Identity, Monitor, Observed, SystemSample,
};
use crate::report::state::AlternateState;
use crate::report::wire::{encode, hex, AltState, Key, Message};
use crate::tftp::path::SafePath;
use crate::tftp::progress::Progress;
use crate::tftp::server::{Server, Tuning};
use crate::tftp::source::{Content, DirSource, FileSource, OpenError, Overlay};

/// How often the monitor looks at the counters for edges (first transfer, last transfer).
const EDGE_CHECK: Duration = Duration::from_millis(20);
/// The capacity assumed before anything is measured, when the network interface does not say
/// its speed: 1 Gbit/s.
const DEFAULT_PRIOR: u64 = 125_000_000;
/// The state file is rewritten when the learned capacity moved this much (per mille) or this
/// long after the last write, not every report: appliances keep it on flash.
const SAVE_CHANGE_PERMILLE: u64 = 50;
const SAVE_EVERY: Duration = Duration::from_secs(600);

/// Serves per-client config files: `bootherd.cfg/UUID/MAC/ARCH` answers with the first of
/// `configs/uuid-UUID`, `configs/mac-MAC`, `configs/arch-ARCH`, `configs/default`, with
/// `${alternate}` replaced by this alternate's id; `bootherd.ipxe/...` renders it as an iPXE
/// script, `bootherd.uboot/...` as a U-Boot script image. Each one served counts as a boot started, of the bytes of the files it names.
pub struct ConfigSource {
    root: PathBuf,
    id: String,
    base_url: String,
    boots: Arc<BootCounters>,
}

/// What the config files served say about the boots that started here.
#[derive(Debug, Default)]
pub struct BootCounters {
    /// Configs served.
    pub started: AtomicU64,
    /// Bytes of the boot files they name, summed.
    pub booked_bytes: AtomicU64,
    /// Bytes of the boot files the last one names.
    pub last_boot_bytes: AtomicU64,
}

impl ConfigSource {
    /// Configs under `root/configs`, for alternate `id` reachable at `address`.
    pub fn new(root: &std::path::Path, id: &str, address: SocketAddr) -> Self {
        ConfigSource {
            root: root.to_path_buf(),
            id: id.to_string(),
            base_url: format!("tftp://{address}"),
            boots: Arc::default(),
        }
    }

    /// The counters of config files served.
    pub fn boots(&self) -> Arc<BootCounters> {
        self.boots.clone()
    }

    /// The same configs for clients that fetch over HTTP from `address` (their iPXE scripts
    /// name `http://` URLs), counted in the same boots.
    pub fn over_http(&self, address: SocketAddr) -> Self {
        ConfigSource {
            root: self.root.clone(),
            id: self.id.clone(),
            base_url: format!("http://{address}"),
            boots: self.boots.clone(),
        }
    }

    /// Bytes of the files `config` names, as they are on disk now (missing ones count 0: the
    /// client will fail on them, not wait for them).
    fn boot_bytes(&self, config: &crate::formats::boot_config::BootConfig) -> u64 {
        config
            .all_files()
            .map(|f| std::fs::metadata(self.root.join(&f.path)).map_or(0, |m| m.len()))
            .sum()
    }
}

impl FileSource for ConfigSource {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let mut parts = path.as_str().split('/');
        let dir = match parts.next() {
            Some(dir @ (CONFIG_DIR | IPXE_CONFIG_DIR | uboot::CONFIG_DIR)) => dir,
            _ => return Err(OpenError::NotFound),
        };
        let (uuid, mac, arch) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(u), Some(m), Some(a), None) => (u, m, a),
            _ => return Err(OpenError::NotFound),
        };
        for name in lookup_order(uuid, mac, arch) {
            let text = match std::fs::read_to_string(self.root.join("configs").join(&name)) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(OpenError::Io(e)),
            };
            let text = text.replace("${alternate}", &self.id);
            let config = crate::formats::boot_config::parse(&text).map_err(|e| {
                log::warning!("alternate: configs/{name}: {e}");
                OpenError::Denied("broken config file")
            })?;
            let bytes = self.boot_bytes(&config);
            let body = match dir {
                IPXE_CONFIG_DIR => config.render_ipxe(&self.base_url).into_bytes(),
                uboot::CONFIG_DIR => match uboot::render_config(&config) {
                    Ok(script) => uboot::script_image("bootherd config", &script),
                    Err(e) => {
                        log::warning!("alternate: configs/{name}: for U-Boot: {e}");
                        return Err(OpenError::Denied("config not bootable by U-Boot"));
                    }
                },
                _ => text.into_bytes(),
            };
            self.boots.started.fetch_add(1, Ordering::Relaxed);
            self.boots.booked_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.boots.last_boot_bytes.store(bytes, Ordering::Relaxed);
            log::info!("alternate: {client}: boot config configs/{name} (uuid {uuid}, mac {mac}, arch {arch})");
            return Ok(Content::Bytes(body.into()));
        }
        Err(OpenError::NotFound)
    }
}

/// Runs an alternate until it stops: binds, drops to `user` if asked, then serves; `reload`
/// re-reads the config on SIGHUP.
pub fn run(
    config: AlternateConfig,
    user: Option<&str>,
    reload: impl FnMut() -> Result<AlternateConfig, String> + 'static,
) -> Result<(), String> {
    let alternate = Alternate::bind(config)?;
    if let Some(user) = user {
        crate::privileges::drop_to(user)?;
    }
    // After the drop: that needs the process to have one thread, and signals start another.
    let control = Control::from_signals(reload)?;
    smol::block_on(alternate.run(control))
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
            Identity {
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
                // The pacer sends a little above the capacity learned so far (so that a faster
                // link shows itself, see report::capacity), never above the configured cap;
                // unpaced while neither is known.
                let learned = monitor.capacity().pacing_rate();
                let rate = running.rate_cap.into_iter().chain(learned).min();
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
                        let next = match monitor.state() {
                            AltState::Draining => AltState::Serving,
                            _ => AltState::Draining,
                        };
                        log::info!("alternate {}: now {next}", config.id);
                        monitor.set_state(next);
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

fn mb_per_sec(bytes_per_sec: u64) -> String {
    format!("{:.1} MB/s", bytes_per_sec as f64 / 1e6)
}

/// The state file: read and counted at start, rewritten when what was learned moves.
struct StateKeeper {
    path: Option<PathBuf>,
    state: AlternateState,
    /// When it was last written.
    written: Instant,
}

impl StateKeeper {
    /// Reads the state file (a missing or broken one starts afresh), counts this start and
    /// writes it back at once: the boot count must be on disk before the first report.
    fn start(path: Option<PathBuf>) -> StateKeeper {
        let mut state = AlternateState::default();
        if let Some(path) = &path {
            match std::fs::read_to_string(path) {
                Ok(text) => match AlternateState::parse(&text) {
                    Ok(read) => state = read,
                    Err(e) => log::warning!("alternate: {}: {e}; starting afresh", path.display()),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warning!("alternate: cannot read {}: {e}", path.display()),
            }
        }
        state.boot_count += 1;
        let mut keeper = StateKeeper {
            path,
            state,
            written: Instant::now(),
        };
        keeper.write();
        keeper
    }

    /// Writes the state if the learned capacity moved enough, or long enough ago.
    fn keep(&mut self, now: Instant, id: &str, learned: Option<Learned>) {
        let saved = self.state.capacity.learned.map(|l| l.bytes_per_sec);
        let moved = match (saved, learned) {
            (None, Some(_)) => true,
            (Some(old), Some(new)) => {
                old.abs_diff(new.bytes_per_sec) * 1000 > old * SAVE_CHANGE_PERMILLE
            }
            _ => false,
        };
        if moved {
            if let Some(l) = learned {
                log::info!(
                    "alternate {id}: link capacity now {} ({} s of backlogged measurement)",
                    mb_per_sec(l.bytes_per_sec),
                    l.evidence.as_secs()
                );
            }
        }
        if moved || (learned.is_some() && now.duration_since(self.written) >= SAVE_EVERY) {
            self.save(learned);
        }
    }

    /// Writes what was learned (or keeps what was read, if nothing was learned since).
    fn save(&mut self, learned: Option<Learned>) {
        self.state.capacity.learned = learned.or(self.state.capacity.learned);
        self.state.capacity.saved_unix_ms = crate::sys::unix_ms();
        self.write();
    }

    /// Writes the file whole (a new file renamed over the old one, so a power cut leaves
    /// one or the other).
    fn write(&mut self) {
        self.written = Instant::now();
        let Some(path) = &self.path else { return };
        let new = path.with_extension("new");
        let result =
            std::fs::write(&new, self.state.render()).and_then(|()| std::fs::rename(&new, path));
        if let Err(e) = result {
            log::warning!("alternate: cannot write {}: {e}", path.display());
        }
    }
}

/// The speed of the network interface that `ip` is on, bytes/s, where the kernel knows it (not
/// for loopback, nor for most wireless links). Read from /proc and /sys rather than asked over
/// netlink, which the packaged units do not allow.
fn link_speed(ip: IpAddr) -> Option<u64> {
    let name = match ip {
        IpAddr::V4(v4) => {
            let routes = std::fs::read_to_string("/proc/net/route").ok()?;
            interface_of_v4(&routes, v4)?
        }
        IpAddr::V6(v6) => {
            let addresses = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            addresses
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|f| f.first() == Some(&hex.as_str()))?
                .get(5)?
                .to_string()
        }
    };
    let mbit: u64 = std::fs::read_to_string(format!("/sys/class/net/{name}/speed"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (mbit > 0).then_some(mbit * 125_000)
}

/// The interface of the most specific route in `/proc/net/route` (addresses in hex, in the
/// kernel's byte order) whose network holds `ip`.
fn interface_of_v4(routes: &str, ip: Ipv4Addr) -> Option<String> {
    let ip = u32::from_le_bytes(ip.octets());
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| u32::from_str_radix(f.get(i)?, 16).ok();
            let (destination, mask) = (field(1)?, field(7)?);
            (ip & mask == destination).then(|| (mask.count_ones(), f[0].to_string()))
        })
        .max_by_key(|(bits, _)| *bits)
        .map(|(_, name)| name)
}

/// CPU time the process has used.
fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
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

/// Sends signed messages to every central (key and centrals change with a reload).
struct Reporter {
    key: RefCell<Key>,
    centrals: RefCell<Vec<SocketAddr>>,
    socket: UdpSocket,
}

impl Reporter {
    async fn send(&self, message: &Message) {
        let bytes = match encode(message, &self.key.borrow()) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::warning!("report: cannot encode: {e}");
                return;
            }
        };
        // A copy: a reload may change the list while a send waits.
        let centrals = self.centrals.borrow().clone();
        for central in &centrals {
            if let Err(e) = self.socket.send_to(&bytes, central).await {
                log::debug!("report: to {central}: {e}");
            }
        }
    }
}

/// CPU, memory and load average from sysinfo; zeros where the platform gives nothing (the
/// report then shows no pressure rather than failing).
struct SystemSampler {
    system: Option<System>,
}

impl SystemSampler {
    fn new() -> Self {
        let system = System::new()
            .map_err(|e| log::warning!("alternate: no CPU/memory figures: {e}"))
            .ok();
        SystemSampler { system }
    }

    fn sample(&mut self) -> SystemSample {
        let load_avg_centi = System::load_average().map_or(0, |l| {
            (l.one * 100.0).clamp(0.0, f64::from(u32::MAX)) as u32
        });
        let Some(system) = &mut self.system else {
            return SystemSample {
                load_avg_centi,
                ..SystemSample::default()
            };
        };
        system.refresh_cpu_usage();
        system.refresh_memory();
        let total = system.total_memory().max(1);
        SystemSample {
            cpu_permille: (system.global_cpu_usage() * 10.0).clamp(0.0, 1000.0) as u16,
            mem_permille: (system.used_memory() * 1000 / total).min(1000) as u16,
            load_avg_centi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use crate::tftp::path::sanitize;

    #[test]
    fn the_interface_of_an_address_is_its_most_specific_route() {
        let routes =
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let of = |ip: [u8; 4]| interface_of_v4(routes, Ipv4Addr::from(ip));
        assert_eq!(of([10, 0, 0, 11]).as_deref(), Some("eth0"));
        assert_eq!(of([192, 168, 0, 5]).as_deref(), Some("eth1"));
        assert_eq!(
            of([172, 16, 0, 1]).as_deref(),
            Some("eth0"),
            "the default route"
        );
    }

    #[test]
    fn config_lookup_order_and_substitution() {
        let root = TempDir::new("alt-configs");
        let configs = root.path().join("configs");
        std::fs::create_dir_all(&configs).unwrap();
        std::fs::write(
            configs.join("default"),
            "kernel k\ncmdline alt=${alternate}\n",
        )
        .unwrap();
        std::fs::write(configs.join("mac-52-54-00-00-00-01"), "kernel mac-kernel\n").unwrap();
        std::fs::write(configs.join("arch-11"), "kernel arm64\n").unwrap();
        let src = ConfigSource::new(root.path(), "alt7", "127.0.0.17:69".parse().unwrap());
        let client: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let read = |p: &str| match src.open(&sanitize(p).unwrap(), client) {
            Ok(Content::Bytes(b)) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            read("bootherd.cfg/-/52-54-00-00-00-01/11"),
            "kernel mac-kernel\n"
        );
        assert_eq!(read("bootherd.cfg/-/-/11"), "kernel arm64\n");
        assert_eq!(
            read("bootherd.cfg/some-uuid/52-54-00-00-00-02/7"),
            "kernel k\ncmdline alt=alt7\n"
        );
        assert_eq!(
            read("bootherd.ipxe/-/-/7"),
            "#!ipxe\nkernel tftp://127.0.0.17:69/k alt=alt7\nboot\n"
        );
        let uboot = |p: &str| match src.open(&sanitize(p).unwrap(), client) {
            Ok(Content::Bytes(b)) => b,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            uboot("bootherd.uboot/-/52:54:00:00:00:01/uboot-arm-armv8")[..],
            uboot::script_image(
                "bootherd config",
                &uboot::render_config(
                    &crate::formats::boot_config::parse("kernel mac-kernel\n").unwrap()
                )
                .unwrap()
            )[..]
        );
        std::fs::write(configs.join("arch-22"), "kernel a;b\n").unwrap();
        assert!(matches!(
            src.open(
                &sanitize("bootherd.uboot/-/-/uboot-arm-armv8").unwrap(),
                client
            ),
            Err(OpenError::Denied(_))
        ));
        assert_eq!(src.boots().started.load(Ordering::Relaxed), 5);
        // A boot is booked with the bytes of the files its config names, as they are on disk.
        std::fs::write(root.path().join("k"), vec![0u8; 1000]).unwrap();
        read("bootherd.cfg/-/-/7");
        let boots = src.boots();
        assert_eq!(boots.last_boot_bytes.load(Ordering::Relaxed), 1000);
        assert_eq!(boots.booked_bytes.load(Ordering::Relaxed), 1000);
        assert!(matches!(
            src.open(&sanitize("bootherd.cfg/x").unwrap(), client),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            src.open(&sanitize("kernel").unwrap(), client),
            Err(OpenError::NotFound)
        ));
    }
}
