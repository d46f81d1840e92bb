//! The alternate's load monitor, sans-IO: counters and a system sample in, reports out.
//!
//! It reports every interval, and at once on a large change: the first transfer starts, the
//! last one ends, the transfers near the limit the alternate allows or fall well below it, or
//! the serving state changes. Between reports it learns the link's capacity
//! ([`CapacityEstimator`]) and keeps the boots in progress ([`BootLedger`]) from the same
//! counters. The shell ([`crate::alternate`]) samples the TFTP server's counters, the config
//! files served and the process's CPU time, polls every few milliseconds and sends what
//! [`Monitor::poll`] returns to every central.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::capacity::{CapacityEstimator, Counters};
use super::ledger::BootLedger;
use super::wire::{sha256, AltState, LoadReport};
use crate::tftp::progress::Totals;

/// A sample of the machine's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemSample {
    /// CPU use of the whole machine, per mille.
    pub cpu_permille: u16,
    /// Memory use, per mille.
    pub mem_permille: u16,
    /// One-minute load average × 100.
    pub load_avg_centi: u32,
}

/// How the alternate presents itself in every report: the fields that do not change between
/// reports (a reload or a rehash replaces them whole, see [`Monitor::set_identity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternateIdentity {
    /// The id centrals know this alternate by (unique per site).
    pub alternate: String,
    /// The TFTP addresses clients are told to use, best first.
    pub addresses: Vec<SocketAddr>,
    /// HTTP addresses for clients (empty: no HTTP).
    pub http_addresses: Vec<SocketAddr>,
    /// Random per start: centrals restart the sequence numbers with it.
    pub boot_id: u64,
    /// Starts so far, from the state file (0 without one).
    pub boot_count: u64,
    /// Time between reports (centrals expire the alternate after three missed ones).
    pub interval: Duration,
    /// The configured limit of concurrent transfers.
    pub max_transfers: u32,
    /// SHA-256 over the boot-file set served, so centrals can tell alternates that differ.
    pub digest: [u8; 32],
}

/// The alternate's counters at one moment, all cumulative since it started except
/// `totals.active` and `totals.remaining`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// The TFTP server's transfer counters.
    pub totals: Totals,
    /// Config files served (each one a boot that started here).
    pub boots_started: u64,
    /// Bytes of the boot files those configs name, summed.
    pub booked_bytes: u64,
    /// Bytes of the boot files of the last config served.
    pub boot_bytes: u64,
    /// CPU time the process has used.
    pub cpu: Duration,
}

/// Decides when to report and fills in the reports.
#[derive(Debug)]
pub struct Monitor {
    identity: AlternateIdentity,
    state: AltState,
    sequence: u64,
    next_due: Option<Instant>,
    /// Bytes sent at the previous full-interval report, for the rate.
    previous_sent: Option<u64>,
    /// Time with at least one transfer active since then: the rate is what the alternate
    /// achieves while serving, not diluted by idle time.
    busy: Duration,
    /// When and at what CPU time the previous full-interval report was made.
    cpu_mark: Option<(Instant, Duration)>,
    process_cpu_permille: u16,
    last_poll: Option<Instant>,
    was_active: bool,
    /// Whether the transfers were near the limit at the last poll (see [`near_full`]).
    was_near_full: bool,
    state_changed: bool,
    capacity: CapacityEstimator,
    ledger: BootLedger,
}

impl Monitor {
    /// A monitor that reports at once, then every interval, with the capacity `capacity`
    /// learns.
    pub fn new(identity: AlternateIdentity, capacity: CapacityEstimator) -> Self {
        Monitor {
            identity,
            state: AltState::Serving,
            sequence: 0,
            next_due: None,
            previous_sent: None,
            busy: Duration::ZERO,
            cpu_mark: None,
            process_cpu_permille: 0,
            last_poll: None,
            was_active: false,
            was_near_full: false,
            state_changed: false,
            capacity,
            ledger: BootLedger::default(),
        }
    }

    /// The operator's drain toggle: serving becomes draining, draining serving again (leaving
    /// becomes draining). Returns the new state; the next poll reports it.
    pub fn toggle_drain(&mut self) -> AltState {
        let next = match self.state {
            AltState::Draining => AltState::Serving,
            _ => AltState::Draining,
        };
        self.set_state(next);
        next
    }

    /// The rate to pace all transfers at: a little above the capacity learned so far (so that
    /// a faster link shows itself, see [`CapacityEstimator::pacing_rate`]), never above the
    /// configured `cap`; `None` (unpaced) while neither is known.
    pub fn pacing_rate(&self, cap: Option<u64>) -> Option<u64> {
        cap.into_iter().chain(self.capacity.pacing_rate()).min()
    }

    /// Changes the serving state; the next poll reports it.
    pub fn set_state(&mut self, state: AltState) {
        if state != self.state {
            self.state = state;
            self.state_changed = true;
        }
    }

    /// What it reports about itself.
    pub fn identity(&self) -> &AlternateIdentity {
        &self.identity
    }

    /// Changes what it reports about itself (a config reload); the next poll reports it.
    pub fn set_identity(&mut self, identity: AlternateIdentity) {
        if identity != self.identity {
            self.identity = identity;
            self.state_changed = true;
        }
    }

    /// The link capacity learned so far.
    pub fn capacity(&self) -> &CapacityEstimator {
        &self.capacity
    }

    /// Changes the cap on the capacity (a config reload).
    pub fn set_capacity_cap(&mut self, cap: Option<u64>) {
        self.capacity.set_cap(cap);
    }

    /// Takes the counters at `now`; returns a report to send, if one is due. `system` is
    /// sampled only then: reading the machine's load costs more than checking the counters.
    pub fn poll(
        &mut self,
        now: Instant,
        observed: &Observed,
        system: impl FnOnce() -> SystemSample,
    ) -> Option<LoadReport> {
        let totals = observed.totals;
        self.capacity.observe(
            now,
            Counters {
                active: totals.active,
                delivered: totals.sent,
                loss_events: totals.loss_events,
                paced_ns: totals.pacer_held_ns,
                rtt_samples: totals.rtt_samples,
                rtt_sum_us: totals.rtt_sum_us,
                rtt_min_us: totals.rtt_min_us,
                cpu: observed.cpu,
            },
        );
        self.ledger
            .update(now, observed.booked_bytes, totals.sent, totals.active);
        if let (Some(last), true) = (self.last_poll, self.was_active) {
            self.busy += now.saturating_duration_since(last);
        }
        self.last_poll = Some(now);
        let active = totals.active > 0;
        let near_full = near_full(
            totals.active,
            self.identity.max_transfers,
            self.was_near_full,
        );
        let edge = active != self.was_active || near_full != self.was_near_full;
        self.was_active = active;
        self.was_near_full = near_full;
        let due = self.next_due.is_none_or(|t| now >= t);
        if !(due || edge || self.state_changed) {
            return None;
        }
        self.state_changed = false;
        self.next_due = Some(now + self.identity.interval);
        let sent = totals
            .sent
            .saturating_sub(self.previous_sent.unwrap_or(totals.sent));
        let bytes_per_sec = match self.busy.as_micros() {
            0 => 0,
            micros => (u128::from(sent) * 1_000_000 / micros) as u64,
        };
        // A report forced by an edge keeps measuring over the interval; a regular one starts
        // a new measurement.
        if due || self.previous_sent.is_none() {
            self.previous_sent = Some(totals.sent);
            self.busy = Duration::ZERO;
            if let Some((at, cpu)) = self.cpu_mark {
                let wall = now.saturating_duration_since(at).as_micros().max(1);
                let used = observed.cpu.saturating_sub(cpu).as_micros();
                self.process_cpu_permille = (used * 1000 / wall).min(u128::from(u16::MAX)) as u16;
            }
            self.cpu_mark = Some((now, observed.cpu));
        }
        self.sequence += 1;
        let system = system();
        let id = &self.identity;
        Some(LoadReport {
            alternate: id.alternate.clone(),
            addresses: id.addresses.clone(),
            boot_id: id.boot_id,
            sequence: self.sequence,
            interval_ms: id.interval.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
            link_bytes_per_sec: self.capacity.capacity(),
            max_transfers: id.max_transfers,
            active_transfers: totals.active as u32,
            bytes_remaining: totals.remaining,
            bytes_per_sec,
            boots_started: observed.boots_started,
            cpu_permille: system.cpu_permille,
            mem_permille: system.mem_permille,
            load_avg_centi: system.load_avg_centi,
            digest: id.digest,
            state: self.state,
            boot_count: id.boot_count,
            capacity_evidence_s: self.capacity.evidence().as_secs().min(u64::from(u32::MAX)) as u32,
            pending_bytes: self.ledger.pending().max(totals.remaining),
            boot_bytes: observed.boot_bytes,
            datagrams_sent: totals.data_sent,
            datagrams_resent: totals.data_retransmitted,
            process_cpu_permille: self.process_cpu_permille,
            http_addresses: id.http_addresses.clone(),
        })
    }

    /// When the next regular report is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_due
    }
}

/// Whether `active` transfers are near the limit `max`: from 7/8 of it, until below 3/4 (so a
/// count hovering at the mark reports once). The central counts the clients it sends between
/// reports against the slots left; a storm can fill the last eighth between two regular
/// reports, and the clients refused then have to start again elsewhere.
fn near_full(active: usize, max: u32, was: bool) -> bool {
    let (active, max) = (active as u64, u64::from(max));
    if was {
        active * 4 >= max * 3
    } else {
        active * 8 >= max * 7
    }
}

/// SHA-256 over the boot-file set below `root`: every regular file, in path order, as
/// `path NUL size NUL sha256(content)`. Two alternates with the same files have the same digest.
///
/// A file or directory below `root` that cannot be read is left out, with a warning that names
/// it: the alternate could not serve it either, so its digest differs from one that can (and a
/// central that expects a digest excludes it), but one stray file does not stop it starting.
pub fn digest_dir(root: &Path) -> std::io::Result<[u8; 32]> {
    hash_dir(root).map(|files| digest_of(&files))
}

/// One file of the boot-file set as it was hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedFile {
    /// Relative to the root, `/`-separated.
    pub path: String,
    /// Its size when hashed, in bytes.
    pub len: u64,
    /// Modification time before hashing (a file changed since has another).
    pub modified: Option<std::time::SystemTime>,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

/// The boot-file digest of files hashed by [`hash_dir`].
pub fn digest_of(files: &[HashedFile]) -> [u8; 32] {
    let mut manifest = Vec::new();
    for f in files {
        manifest.extend_from_slice(f.path.as_bytes());
        manifest.push(0);
        manifest.extend_from_slice(f.len.to_string().as_bytes());
        manifest.push(0);
        manifest.extend_from_slice(&f.sha256);
    }
    sha256(&manifest)
}

/// Every regular file below `root`, hashed, in path order (see [`digest_dir`]).
pub fn hash_dir(root: &Path) -> std::io::Result<Vec<HashedFile>> {
    let left_out = |path: &Path, e: std::io::Error| {
        crate::log::warning!(
            "{}: cannot be read, left out of the boot-file digest (and cannot be served): {e}",
            path.display()
        )
    };
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir != root => {
                left_out(&dir, e);
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    let mut hashed = Vec::with_capacity(files.len());
    // One buffer for every file: a router's memory must not have to hold its largest file.
    let mut buf = vec![0u8; 64 << 10];
    for path in files {
        let (len, modified, sha256) = match hash_file(&path, &mut buf) {
            Ok(hashed) => hashed,
            Err(e) => {
                left_out(&path, e);
                continue;
            }
        };
        let relative = path.strip_prefix(root).unwrap_or(&path);
        hashed.push(HashedFile {
            path: relative.to_string_lossy().into_owned(),
            len,
            modified,
            sha256,
        });
    }
    Ok(hashed)
}

/// The length, modification time and SHA-256 of the file at `path`, read through `buf`.
fn hash_file(
    path: &Path,
    buf: &mut [u8],
) -> std::io::Result<(u64, Option<std::time::SystemTime>, [u8; 32])> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let modified = file.metadata()?.modified().ok();
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) => return Ok((len, modified, hasher.finalize().into())),
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn monitor() -> Monitor {
        Monitor::new(
            AlternateIdentity {
                alternate: "alt1".into(),
                addresses: vec!["127.0.0.11:6901".parse().unwrap()],
                http_addresses: Vec::new(),
                boot_id: 7,
                boot_count: 4,
                interval: Duration::from_secs(1),
                max_transfers: 10,
                digest: [1; 32],
            },
            CapacityEstimator::new(1_000_000, None, None),
        )
    }

    fn totals(active: usize, sent: u64, boots: u64) -> Observed {
        Observed {
            totals: Totals {
                active,
                remaining: 1000 * active as u64,
                sent,
                completed: 0,
                ..Totals::default()
            },
            boots_started: boots,
            ..Observed::default()
        }
    }

    #[test]
    fn reports_at_start_every_interval_and_on_edges() {
        let mut m = monitor();
        let t0 = Instant::now();
        let s = SystemSample::default;
        let first = m.poll(t0, &totals(0, 0, 0), s).unwrap();
        assert_eq!((first.sequence, first.active_transfers), (1, 0));
        assert!(m
            .poll(t0 + Duration::from_millis(500), &totals(0, 0, 0), s)
            .is_none());
        // First transfer starts: report at once.
        let started = m
            .poll(t0 + Duration::from_millis(600), &totals(1, 0, 1), s)
            .unwrap();
        assert_eq!(
            (
                started.sequence,
                started.active_transfers,
                started.boots_started
            ),
            (2, 1, 1)
        );
        assert!(m
            .poll(t0 + Duration::from_millis(700), &totals(2, 100, 1), s)
            .is_none());
        // Regular report one interval after the last one; the rate counts only the busy time
        // (600 ms to 1600 ms), not the idle start.
        let regular = m
            .poll(t0 + Duration::from_millis(1600), &totals(2, 500_000, 1), s)
            .unwrap();
        assert_eq!(regular.bytes_per_sec, 500_000);
        // Last transfer ends: report at once.
        let idle = m
            .poll(t0 + Duration::from_millis(1700), &totals(0, 600_000, 1), s)
            .unwrap();
        assert_eq!(idle.active_transfers, 0);
        assert_eq!(idle.sequence, 4);
    }

    #[test]
    fn nearing_the_transfer_limit_and_leaving_it_report_at_once() {
        let mut m = monitor(); // 10 transfers at most
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let s = SystemSample::default;
        m.poll(t0, &totals(1, 0, 1), s).unwrap();
        assert!(
            m.poll(ms(10), &totals(8, 0, 8), s).is_none(),
            "8 of 10: not yet"
        );
        let near = m.poll(ms(20), &totals(9, 0, 9), s).unwrap();
        assert_eq!(near.active_transfers, 9);
        assert!(m.poll(ms(30), &totals(10, 0, 10), s).is_none());
        assert!(
            m.poll(ms(40), &totals(8, 0, 10), s).is_none(),
            "still 3/4 or more"
        );
        let room = m.poll(ms(50), &totals(7, 0, 10), s).unwrap();
        assert_eq!(room.active_transfers, 7);
        assert!(m.poll(ms(60), &totals(8, 0, 10), s).is_none());
    }

    #[test]
    fn state_changes_report_at_once() {
        let mut m = monitor();
        let t0 = Instant::now();
        let s = SystemSample::default;
        m.poll(t0, &totals(0, 0, 0), s).unwrap();
        m.set_state(AltState::Leaving);
        let r = m
            .poll(t0 + Duration::from_millis(1), &totals(0, 0, 0), s)
            .unwrap();
        assert_eq!(r.state, AltState::Leaving);
        m.set_state(AltState::Leaving);
        assert!(m
            .poll(t0 + Duration::from_millis(2), &totals(0, 0, 0), s)
            .is_none());
    }

    #[test]
    fn reports_carry_learned_capacity_pending_boots_and_process_cpu() {
        let mut m = monitor();
        let t0 = Instant::now();
        let s = SystemSample::default;
        let at = |ms| t0 + Duration::from_millis(ms);
        let first = m.poll(t0, &totals(0, 0, 0), s).unwrap();
        assert_eq!(
            (first.link_bytes_per_sec, first.capacity_evidence_s),
            (1_000_000, 0),
            "the prior"
        );
        assert_eq!(first.boot_count, 4);
        // Two boots of 9 MB begin; a second of backlogged sending (a loss event) at 600 kB/s,
        // with the process using a quarter of a core.
        let busy = |sent, loss_events, cpu_ms| {
            let mut o = Observed {
                booked_bytes: 18_000_000,
                boot_bytes: 9_000_000,
                cpu: Duration::from_millis(cpu_ms),
                ..totals(2, sent, 2)
            };
            o.totals.loss_events = loss_events;
            o
        };
        let started = m.poll(at(10), &busy(0, 0, 0), s).unwrap();
        assert_eq!(started.pending_bytes, 18_000_000);
        assert_eq!(started.boot_bytes, 9_000_000);
        let regular = m.poll(at(1010), &busy(600_000, 1, 250), s).unwrap();
        assert_eq!(
            (regular.link_bytes_per_sec, regular.capacity_evidence_s),
            (600_000, 1),
            "learned from the backlogged second"
        );
        assert_eq!(regular.pending_bytes, 17_400_000);
        assert_eq!(regular.process_cpu_permille, 247, "250 ms of 1010");
        assert_eq!(
            m.capacity().pacing_rate(),
            None,
            "one second is not enough to pace at"
        );
    }

    #[test]
    fn digest_changes_with_content_names_and_sizes() {
        let a = TempDir::new("digest-a");
        let b = TempDir::new("digest-b");
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir.path().join("boot")).unwrap();
            std::fs::write(dir.path().join("boot/kernel"), b"KERNEL").unwrap();
            std::fs::write(dir.path().join("initrd"), b"INITRD").unwrap();
        }
        let same = digest_dir(a.path()).unwrap();
        assert_eq!(same, digest_dir(b.path()).unwrap());
        std::fs::write(b.path().join("initrd"), b"INITRX").unwrap();
        assert_ne!(same, digest_dir(b.path()).unwrap());
        std::fs::write(b.path().join("initrd"), b"INITRD").unwrap();
        std::fs::rename(b.path().join("initrd"), b.path().join("initrd2")).unwrap();
        assert_ne!(same, digest_dir(b.path()).unwrap());
    }

    #[test]
    fn drain_toggles_and_pacing_stays_under_the_cap() {
        let mut m = monitor();
        assert_eq!(m.toggle_drain(), AltState::Draining);
        assert_eq!(m.toggle_drain(), AltState::Serving);
        m.set_state(AltState::Leaving);
        assert_eq!(m.toggle_drain(), AltState::Draining);
        // Nothing learned yet: only the cap paces.
        assert_eq!(m.pacing_rate(None), None);
        assert_eq!(m.pacing_rate(Some(5_000_000)), Some(5_000_000));
    }
}
