//! The alternate boot server role: TFTP for the boot files and per-client config files, plus
//! the load monitor that reports to every configured central.
//!
//! Signals: SIGTERM or SIGINT send a "leaving" report to every central and stop; SIGUSR1
//! toggles draining (no new clients are sent here, transfers in progress finish).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;
use smol::stream::StreamExt;
use smol::Timer;
use sysinfo::System;

use crate::config::AlternateConfig;
use crate::formats::boot_config::{lookup_order, CONFIG_DIR, IPXE_CONFIG_DIR};
use crate::log;
use crate::report::monitor::{digest_dir, Identity, Monitor, SystemSample};
use crate::report::wire::{encode, hex, AltState, Key, Message};
use crate::tftp::path::SafePath;
use crate::tftp::progress::Progress;
use crate::tftp::server::Server;
use crate::tftp::source::{Content, DirSource, FileSource, OpenError, Overlay};

/// How often the monitor looks at the counters for edges (first transfer, last transfer).
const EDGE_CHECK: Duration = Duration::from_millis(20);

/// Serves per-client config files: `bootherd.cfg/UUID/MAC/ARCH` answers with the first of
/// `configs/uuid-UUID`, `configs/mac-MAC`, `configs/arch-ARCH`, `configs/default`, with
/// `${alternate}` replaced by this alternate's id; `bootherd.ipxe/...` renders it as an iPXE
/// script. Each one served counts as a boot started.
pub struct ConfigSource {
    configs: PathBuf,
    id: String,
    base_url: String,
    boots_started: Arc<AtomicU64>,
}

impl ConfigSource {
    /// Configs under `root/configs`, for alternate `id` reachable at `address`.
    pub fn new(root: &std::path::Path, id: &str, address: SocketAddr) -> Self {
        ConfigSource {
            configs: root.join("configs"),
            id: id.to_string(),
            base_url: format!("tftp://{address}"),
            boots_started: Arc::default(),
        }
    }

    /// The counter of config files served.
    pub fn boots_started(&self) -> Arc<AtomicU64> {
        self.boots_started.clone()
    }
}

impl FileSource for ConfigSource {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let mut parts = path.as_str().split('/');
        let ipxe = match parts.next() {
            Some(CONFIG_DIR) => false,
            Some(IPXE_CONFIG_DIR) => true,
            _ => return Err(OpenError::NotFound),
        };
        let (uuid, mac, arch) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(u), Some(m), Some(a), None) => (u, m, a),
            _ => return Err(OpenError::NotFound),
        };
        for name in lookup_order(uuid, mac, arch) {
            let text = match std::fs::read_to_string(self.configs.join(&name)) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(OpenError::Io(e)),
            };
            let text = text.replace("${alternate}", &self.id);
            let body = if ipxe {
                crate::formats::boot_config::parse(&text)
                    .map_err(|e| {
                        log::warning!("alternate: configs/{name}: {e}");
                        OpenError::Denied("broken config file")
                    })?
                    .render_ipxe(&self.base_url)
            } else {
                text
            };
            self.boots_started.fetch_add(1, Ordering::Relaxed);
            log::info!("alternate: {client}: boot config configs/{name} (uuid {uuid}, mac {mac}, arch {arch})");
            return Ok(Content::Bytes(body.into_bytes().into()));
        }
        Err(OpenError::NotFound)
    }
}

/// Runs an alternate until SIGTERM/SIGINT: binds, drops to `user` if asked, then serves.
pub fn run(config: AlternateConfig, user: Option<&str>) -> Result<(), String> {
    let alternate = Alternate::bind(config)?;
    if let Some(user) = user {
        crate::privileges::drop_to(user)?;
    }
    smol::block_on(async {
        let signals = async_signal::Signals::new([
            async_signal::Signal::Term,
            async_signal::Signal::Int,
            async_signal::Signal::Usr1,
        ])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        alternate.run(signals).await
    })
}

/// A bound alternate, ready to run.
pub struct Alternate {
    config: AlternateConfig,
    server: Server,
    progress: Arc<Progress>,
    boots_started: Arc<AtomicU64>,
    monitor: Monitor,
    socket: std::net::UdpSocket,
}

impl Alternate {
    /// Binds the TFTP socket and the report socket (synchronously, see
    /// [`crate::tftp::server::Server`]), and hashes the boot files.
    pub fn bind(config: AlternateConfig) -> Result<Alternate, String> {
        let dir = DirSource::new(&config.root)
            .map_err(|e| format!("root {}: {e}", config.root.display()))?;
        let digest = digest_dir(&config.root)
            .map_err(|e| format!("cannot hash {}: {e}", config.root.display()))?;
        let mut server_config = config.tftp.server(config.tftp_listen);
        server_config.rate_limit = config.rate_limit.then_some(config.link_bytes_per_sec);
        // Bind first: with port 0 the advertised address is only known afterwards.
        let placeholder: Arc<dyn FileSource> = Arc::new(dir.clone());
        let server = Server::bind(server_config.clone(), placeholder)
            .map_err(|e| format!("cannot listen on {}: {e}", config.tftp_listen))?;
        let bound = server.local_addr().map_err(|e| e.to_string())?;
        let addresses = if config.advertise.is_empty() {
            vec![bound]
        } else {
            config.advertise.clone()
        };
        let configs = ConfigSource::new(&config.root, &config.id, addresses[0]);
        let boots_started = configs.boots_started();
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
        let monitor = Monitor::new(Identity {
            alternate: config.id.clone(),
            addresses,
            boot_id: random_u64(),
            interval: config.interval,
            link_bytes_per_sec: config.link_bytes_per_sec,
            max_transfers: config.tftp.max_transfers.min(u32::MAX as usize) as u32,
            digest,
        });
        log::info!(
            "alternate {}: boot files digest {}, reporting every {} ms to {:?}",
            config.id,
            hex(&digest),
            config.interval.as_millis(),
            config.centrals
        );
        Ok(Alternate {
            config,
            server,
            progress,
            boots_started,
            monitor,
            socket,
        })
    }

    /// The TFTP address bound.
    pub fn tftp_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves and reports until a stop signal arrives (`signals` yields SIGTERM, SIGINT or
    /// SIGUSR1).
    pub async fn run(
        self,
        mut signals: impl smol::stream::Stream<Item = io::Result<async_signal::Signal>> + Unpin,
    ) -> Result<(), String> {
        let Alternate {
            config,
            server,
            progress,
            boots_started,
            mut monitor,
            socket,
        } = self;
        let reporter = Reporter {
            key: config.key.clone(),
            centrals: config.centrals.clone(),
            socket: UdpSocket::try_from(socket).map_err(|e| e.to_string())?,
        };
        let serve = async {
            server
                .run()
                .await
                .map_err(|e| format!("TFTP server stopped: {e}"))
        };
        let monitor_loop = async {
            let mut system = SystemSampler::new();
            loop {
                let now = Instant::now();
                if let Some(report) = monitor.poll(
                    now,
                    progress.totals(),
                    boots_started.load(Ordering::Relaxed),
                    || system.sample(),
                ) {
                    reporter.send(&Message::Report(report)).await;
                }
                let signal = async { signals.next().await }
                    .or(async {
                        Timer::after(EDGE_CHECK).await;
                        None
                    })
                    .await;
                match signal {
                    Some(Ok(async_signal::Signal::Usr1)) => {
                        let next = match monitor.state() {
                            AltState::Draining => AltState::Serving,
                            _ => AltState::Draining,
                        };
                        log::info!("alternate {}: now {next:?}", config.id);
                        monitor.set_state(next);
                    }
                    Some(Ok(_)) => break,
                    Some(Err(e)) => log::warning!("alternate: signal stream: {e}"),
                    None => {}
                }
            }
            monitor.set_state(AltState::Leaving);
            if let Some(report) = monitor.poll(
                Instant::now(),
                progress.totals(),
                boots_started.load(Ordering::Relaxed),
                || system.sample(),
            ) {
                reporter.send(&Message::Report(report)).await;
            }
            log::info!("alternate {}: leaving", config.id);
            Ok(())
        };
        serve.or(monitor_loop).await
    }
}

/// Sends signed messages to every central.
struct Reporter {
    key: Key,
    centrals: Vec<SocketAddr>,
    socket: UdpSocket,
}

impl Reporter {
    async fn send(&self, message: &Message) {
        let bytes = match encode(message, &self.key) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::warning!("report: cannot encode: {e}");
                return;
            }
        };
        for central in &self.centrals {
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

/// 64 random bits from the kernel (a boot id, a nonce); the clock if that fails.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
    {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use crate::tftp::path::sanitize;

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
        assert_eq!(src.boots_started().load(Ordering::Relaxed), 4);
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
