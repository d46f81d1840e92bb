//! `bootherd demo`: the whole system on loopback from a built-in default.
//!
//! Two centrals (one ordering by load, one with a static order for comparison) and three
//! alternates with different link capacities (rate-capped in the alternates themselves), all
//! reporting to both centrals; then a storm of clients boots through each central in turn.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::alternate::Alternate;
use crate::balance::{ListOrder, Policy};
use crate::bootclient::{storm, ClientOptions, ListSource, Summary};
use crate::central::Central;
use crate::config::{AlternateConfig, CentralConfig, TftpSettings};
use crate::report::wire::{hex, sha256, Key};
use crate::tftp::options::Limits;
use crate::tftp::transfer::Retransmit;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Clients per storm.
    pub clients: u32,
    /// Arrivals spread over this long.
    pub spread: Duration,
    /// Link capacities of the alternates, bytes/s.
    pub capacities: Vec<u64>,
    /// Kernel and initrd size, bytes each.
    pub file_size: usize,
    /// Report interval.
    pub interval: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            clients: 100,
            spread: Duration::ZERO,
            capacities: vec![40_000_000, 20_000_000, 10_000_000],
            file_size: 2 << 20,
            interval: Duration::from_millis(250),
        }
    }
}

fn tftp_settings() -> TftpSettings {
    TftpSettings {
        limits: Limits::default(),
        max_transfers: 512,
        retransmit: Retransmit::default(),
        single_port: false,
        shutdown_grace: Duration::ZERO,
    }
}

/// Writes the boot set: a kernel, an initrd and a default config with their SHA-256 sums.
fn write_boot_set(root: &Path, size: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("boot"))?;
    std::fs::create_dir_all(root.join("configs"))?;
    let mut config = String::from("# bootherd demo boot set\n");
    for (n, (directive, name)) in [("kernel", "boot/vmlinuz"), ("initrd", "boot/initrd.img")]
        .into_iter()
        .enumerate()
    {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ n as u64;
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(root.join(name), &bytes)?;
        config.push_str(&format!(
            "{directive} {name} sha256={}\n",
            hex(&sha256(&bytes))
        ));
    }
    config.push_str("cmdline console=ttyS0 bootherd.alt=${alternate}\n");
    std::fs::write(root.join("configs/default"), config)
}

/// Starts a central on its own thread; returns its report and TFTP addresses.
fn start_central(config: CentralConfig) -> Result<(SocketAddr, SocketAddr), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        smol::block_on(async {
            let central = match Central::bind(config) {
                Ok(c) => c,
                Err(e) => return tx.send(Err(e)).unwrap_or(()),
            };
            let addrs = central
                .report_addr()
                .and_then(|r| Ok((r, central.tftp_addr()?)));
            let _ = tx.send(addrs.map_err(|e| e.to_string()));
            if let Err(e) = central.run(crate::lifecycle::Control::none()).await {
                crate::log::warning!("demo: central stopped: {e}");
            }
        })
    });
    rx.recv().map_err(|e| e.to_string())?
}

/// Starts an alternate on its own thread.
fn start_alternate(config: AlternateConfig) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        smol::block_on(async {
            let alternate = match Alternate::bind(config) {
                Ok(a) => a,
                Err(e) => return tx.send(Err(e)).unwrap_or(()),
            };
            let _ = tx.send(Ok(()));
            if let Err(e) = alternate.run(crate::lifecycle::Control::none()).await {
                crate::log::warning!("demo: alternate stopped: {e}");
            }
        })
    });
    rx.recv().map_err(|e| e.to_string())?
}

/// Runs the demo and prints its figures.
pub fn run(options: &DemoOptions) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("bootherd-demo-{}", std::process::id()));
    let result = run_in(&dir, options);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, o: &DemoOptions) -> Result<(), String> {
    let root: PathBuf = dir.join("boot-files");
    write_boot_set(&root, o.file_size).map_err(|e| format!("writing the boot set: {e}"))?;
    let mut key = [0u8; 32];
    crate::sys::fill_random(&mut key).map_err(|e| e.to_string())?;
    let key = Key::new(&key)?;
    let typical = 2 * o.file_size as u64;
    let mut centrals = Vec::new();
    for (n, order) in [ListOrder::Load, ListOrder::Static].into_iter().enumerate() {
        let host = format!("127.0.0.{}", n + 1);
        centrals.push(start_central(CentralConfig {
            key: key.clone(),
            tftp: tftp_settings(),
            tftp_listen: format!("{host}:0").parse().expect("literal address"),
            tftp_root: None,
            report_listen: format!("{host}:0").parse().expect("literal address"),
            policy: Policy {
                order,
                typical_boot_bytes: typical,
                ..Policy::default()
            },
            pxe: None,
            metrics_listen: None,
        })?);
    }
    for (n, &capacity) in o.capacities.iter().enumerate() {
        start_alternate(AlternateConfig {
            key: key.clone(),
            tftp: tftp_settings(),
            id: format!("alt{}", n + 1),
            tftp_listen: format!("127.0.0.{}:0", 11 + n)
                .parse()
                .expect("literal address"),
            advertise: Vec::new(),
            root: root.clone(),
            link_bytes_per_sec: Some(capacity),
            rate_limit: true,
            state_file: None,
            centrals: centrals.iter().map(|(reports, _)| *reports).collect(),
            interval: o.interval,
            http: None,
            http_advertise: Vec::new(),
            metrics_listen: None,
        })?;
    }
    // Both centrals must know every alternate before the storms start.
    smol::block_on(async {
        for _ in 0..100 {
            let mut known = 0;
            for (reports, _) in &centrals {
                let answer =
                    crate::report::client::status(*reports, &key, Duration::from_millis(200))
                        .await?;
                known += answer.rows.iter().filter(|r| r.score_us.is_some()).count();
            }
            if known == 2 * o.capacities.len() {
                return Ok(());
            }
            smol::Timer::after(o.interval).await;
        }
        Err("the alternates did not report to the centrals".to_string())
    })?;
    let total_capacity: u64 = o.capacities.iter().sum();
    let total_bytes = typical * u64::from(o.clients);
    let ideal = total_bytes as f64 / total_capacity as f64;
    println!(
        "bootherd demo: {} clients booting {} MiB each from 3 alternates capped at {} MB/s",
        o.clients,
        typical >> 20,
        o.capacities
            .iter()
            .map(|c| (c / 1_000_000).to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
    println!("ideal makespan (total bytes / total capacity): {ideal:.2} s");
    let mut results = Vec::new();
    for ((_, tftp), name) in centrals.iter().zip(["load-ordered", "static order"]) {
        let summary = Summary::of(&storm(
            &ListSource::Central(*tftp),
            o.clients,
            o.spread,
            &ClientOptions::default(),
        ));
        println!(
            "{name:>13}: {}; makespan {:.2}x ideal",
            summary.line(),
            summary.max.as_secs_f64() / ideal
        );
        results.push(summary);
        // Let the alternates report themselves idle before the next storm.
        std::thread::sleep(o.interval * 3);
    }
    let (load, fixed) = (&results[0], &results[1]);
    println!(
        "load ordering vs static order: makespan {:.2} s vs {:.2} s ({:.2}x faster), p99 {:.2} s vs {:.2} s",
        load.max.as_secs_f64(),
        fixed.max.as_secs_f64(),
        fixed.max.as_secs_f64() / load.max.as_secs_f64().max(1e-9),
        load.p99.as_secs_f64(),
        fixed.p99.as_secs_f64()
    );
    if load.failures + fixed.failures > 0 {
        return Err(format!("{} boots failed", load.failures + fixed.failures));
    }
    Ok(())
}
