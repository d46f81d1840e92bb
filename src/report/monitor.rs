//! The alternate's load monitor, sans-IO: counters and a system sample in, reports out.
//!
//! It reports every interval, and at once on a large change: the first transfer starts, the
//! last one ends, or the serving state changes. The shell ([`crate::alternate`]) samples the
//! TFTP progress counters and sysinfo and sends what [`Monitor::poll`] returns to every central.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::wire::{sha256, AltState, LoadReport};
use crate::tftp::progress::Totals;

/// A sample of the machine's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemSample {
    /// CPU use, per mille.
    pub cpu_permille: u16,
    /// Memory use, per mille.
    pub mem_permille: u16,
    /// One-minute load average × 100.
    pub load_avg_centi: u32,
}

/// What does not change between reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Alternate id.
    pub alternate: String,
    /// Addresses for clients.
    pub addresses: Vec<SocketAddr>,
    /// Random per start.
    pub boot_id: u64,
    /// Report interval.
    pub interval: Duration,
    /// Link capacity, bytes/s.
    pub link_bytes_per_sec: u64,
    /// Transfer limit.
    pub max_transfers: u32,
    /// Boot-file digest.
    pub digest: [u8; 32],
}

/// Decides when to report and fills in the reports.
#[derive(Debug)]
pub struct Monitor {
    identity: Identity,
    state: AltState,
    sequence: u64,
    next_due: Option<Instant>,
    /// Bytes sent at the previous full-interval report, for the rate.
    previous_sent: Option<u64>,
    /// Time with at least one transfer active since then: the rate is what the alternate
    /// achieves while serving, not diluted by idle time.
    busy: Duration,
    last_poll: Option<Instant>,
    was_active: bool,
    state_changed: bool,
}

impl Monitor {
    /// A monitor that reports at once, then every interval.
    pub fn new(identity: Identity) -> Self {
        Monitor {
            identity,
            state: AltState::Serving,
            sequence: 0,
            next_due: None,
            previous_sent: None,
            busy: Duration::ZERO,
            last_poll: None,
            was_active: false,
            state_changed: false,
        }
    }

    /// Changes the serving state; the next poll reports it.
    pub fn set_state(&mut self, state: AltState) {
        if state != self.state {
            self.state = state;
            self.state_changed = true;
        }
    }

    /// The current state.
    pub fn state(&self) -> AltState {
        self.state
    }

    /// A report to send now, if one is due. `system` is sampled only then: reading the
    /// machine's load costs more than checking the counters.
    pub fn poll(
        &mut self,
        now: Instant,
        totals: Totals,
        boots_started: u64,
        system: impl FnOnce() -> SystemSample,
    ) -> Option<LoadReport> {
        if let (Some(last), true) = (self.last_poll, self.was_active) {
            self.busy += now.saturating_duration_since(last);
        }
        self.last_poll = Some(now);
        let active = totals.active > 0;
        let edge = active != self.was_active;
        self.was_active = active;
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
            link_bytes_per_sec: id.link_bytes_per_sec,
            max_transfers: id.max_transfers,
            active_transfers: totals.active as u32,
            bytes_remaining: totals.remaining,
            bytes_per_sec,
            boots_started,
            cpu_permille: system.cpu_permille,
            mem_permille: system.mem_permille,
            load_avg_centi: system.load_avg_centi,
            digest: id.digest,
            state: self.state,
        })
    }

    /// When the next regular report is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_due
    }
}

/// SHA-256 over the boot-file set below `root`: every regular file, in path order, as
/// `path NUL size NUL sha256(content)`. Two alternates with the same files have the same digest.
pub fn digest_dir(root: &Path) -> std::io::Result<[u8; 32]> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
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
    let mut manifest = Vec::new();
    for path in files {
        let content = std::fs::read(&path)?;
        let relative = path.strip_prefix(root).unwrap_or(&path);
        manifest.extend_from_slice(relative.to_string_lossy().as_bytes());
        manifest.push(0);
        manifest.extend_from_slice(content.len().to_string().as_bytes());
        manifest.push(0);
        manifest.extend_from_slice(&sha256(&content));
    }
    Ok(sha256(&manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn monitor() -> Monitor {
        Monitor::new(Identity {
            alternate: "alt1".into(),
            addresses: vec!["127.0.0.11:6901".parse().unwrap()],
            boot_id: 7,
            interval: Duration::from_secs(1),
            link_bytes_per_sec: 1_000_000,
            max_transfers: 10,
            digest: [1; 32],
        })
    }

    fn totals(active: usize, sent: u64) -> Totals {
        Totals {
            active,
            remaining: 1000 * active as u64,
            sent,
            completed: 0,
            ..Totals::default()
        }
    }

    #[test]
    fn reports_at_start_every_interval_and_on_edges() {
        let mut m = monitor();
        let t0 = Instant::now();
        let s = SystemSample::default;
        let first = m.poll(t0, totals(0, 0), 0, s).unwrap();
        assert_eq!((first.sequence, first.active_transfers), (1, 0));
        assert!(m
            .poll(t0 + Duration::from_millis(500), totals(0, 0), 0, s)
            .is_none());
        // First transfer starts: report at once.
        let started = m
            .poll(t0 + Duration::from_millis(600), totals(1, 0), 1, s)
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
            .poll(t0 + Duration::from_millis(700), totals(2, 100), 1, s)
            .is_none());
        // Regular report one interval after the last one; the rate counts only the busy time
        // (600 ms to 1600 ms), not the idle start.
        let regular = m
            .poll(t0 + Duration::from_millis(1600), totals(2, 500_000), 1, s)
            .unwrap();
        assert_eq!(regular.bytes_per_sec, 500_000);
        // Last transfer ends: report at once.
        let idle = m
            .poll(t0 + Duration::from_millis(1700), totals(0, 600_000), 1, s)
            .unwrap();
        assert_eq!(idle.active_transfers, 0);
        assert_eq!(idle.sequence, 4);
    }

    #[test]
    fn state_changes_report_at_once() {
        let mut m = monitor();
        let t0 = Instant::now();
        let s = SystemSample::default;
        m.poll(t0, totals(0, 0), 0, s).unwrap();
        m.set_state(AltState::Leaving);
        let r = m
            .poll(t0 + Duration::from_millis(1), totals(0, 0), 0, s)
            .unwrap();
        assert_eq!(r.state, AltState::Leaving);
        m.set_state(AltState::Leaving);
        assert!(m
            .poll(t0 + Duration::from_millis(2), totals(0, 0), 0, s)
            .is_none());
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
}
