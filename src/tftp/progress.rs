//! Live transfer counters: what the load monitor reports (active transfers, bytes still to send,
//! bytes sent) and what an operator sees per transfer. Updating is a few atomic adds per ACK;
//! the lock is taken only when a transfer starts or ends, and by readers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The counters of one server (shared by all its transfers).
#[derive(Debug, Default)]
pub struct Progress {
    active: AtomicUsize,
    remaining: AtomicU64,
    sent: AtomicU64,
    completed: AtomicU64,
    next_id: AtomicU64,
    transfers: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    peer: SocketAddr,
    path: String,
    size: u64,
    acked: AtomicU64,
    started: Instant,
}

/// One transfer as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// File served.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Bytes acknowledged.
    pub sent: u64,
    /// Time since the transfer started.
    pub elapsed: Duration,
}

impl TransferInfo {
    /// Bytes not yet acknowledged.
    pub fn remaining(&self) -> u64 {
        self.size - self.sent
    }

    /// Average rate so far, bytes per second.
    pub fn rate(&self) -> u64 {
        let micros = self.elapsed.as_micros().max(1);
        (u128::from(self.sent) * 1_000_000 / micros) as u64
    }
}

/// Totals at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Transfers in progress.
    pub active: usize,
    /// Bytes they still have to send.
    pub remaining: u64,
    /// Bytes acknowledged since the server started (take differences for a rate).
    pub sent: u64,
    /// Transfers completed since the server started.
    pub completed: u64,
}

impl Progress {
    /// A new, shared set of counters.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers a transfer unless `max` are already active (the caller then refuses the
    /// client). The transfer is counted until the returned guard is dropped.
    pub fn try_begin(
        self: &Arc<Self>,
        max: usize,
        peer: SocketAddr,
        path: &str,
        size: u64,
        now: Instant,
    ) -> Option<TransferGuard> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.remaining.fetch_add(size, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            peer,
            path: path.to_string(),
            size,
            acked: AtomicU64::new(0),
            started: now,
        });
        self.lock().insert(id, entry.clone());
        Some(TransferGuard {
            progress: self.clone(),
            entry,
            id,
        })
    }

    /// Current totals.
    pub fn totals(&self) -> Totals {
        Totals {
            active: self.active.load(Ordering::Acquire),
            remaining: self.remaining.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
        }
    }

    /// Every transfer in progress, oldest first.
    pub fn transfers(&self, now: Instant) -> Vec<TransferInfo> {
        self.lock()
            .values()
            .map(|e| TransferInfo {
                peer: e.peer,
                path: e.path.clone(),
                size: e.size,
                sent: e.acked.load(Ordering::Relaxed),
                elapsed: now.saturating_duration_since(e.started),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Entry>>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.transfers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps one transfer registered; dropping it unregisters.
#[derive(Debug)]
pub struct TransferGuard {
    progress: Arc<Progress>,
    entry: Arc<Entry>,
    id: u64,
}

impl TransferGuard {
    /// Records that the client has acknowledged `acked` bytes in all.
    pub fn set_acked(&self, acked: u64) {
        let acked = acked.min(self.entry.size);
        let before = self.entry.acked.fetch_max(acked, Ordering::Relaxed);
        if acked > before {
            let delta = acked - before;
            self.progress.sent.fetch_add(delta, Ordering::Relaxed);
            self.progress.remaining.fetch_sub(delta, Ordering::Relaxed);
        }
    }

    /// Whether this is the only transfer in progress.
    pub fn alone(&self) -> bool {
        self.progress.active.load(Ordering::Acquire) == 1
    }

    /// Marks the transfer as completed (counted once it is dropped).
    pub fn complete(&self) {
        self.set_acked(self.entry.size);
        self.progress.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        let left = self.entry.size - self.entry.acked.load(Ordering::Relaxed);
        self.progress.remaining.fetch_sub(left, Ordering::Relaxed);
        self.progress.lock().remove(&self.id);
        self.progress.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_transfers_bytes_and_enforces_the_limit() {
        let p = Progress::new();
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let a = p.try_begin(2, peer, "kernel", 1000, now).unwrap();
        let b = p.try_begin(2, peer, "initrd", 500, now).unwrap();
        assert!(
            p.try_begin(2, peer, "third", 1, now).is_none(),
            "limit of 2"
        );
        a.set_acked(400);
        a.set_acked(300); // never goes backwards
        assert_eq!(
            p.totals(),
            Totals {
                active: 2,
                remaining: 1100,
                sent: 400,
                completed: 0
            }
        );
        let list = p.transfers(now + Duration::from_secs(2));
        assert_eq!(list[0].remaining(), 600);
        assert_eq!(list[0].rate(), 200);
        b.complete();
        drop(b);
        drop(a); // aborted: its remaining bytes leave the total
        assert_eq!(
            p.totals(),
            Totals {
                active: 0,
                remaining: 0,
                sent: 900,
                completed: 1
            }
        );
        assert!(p.transfers(now).is_empty());
        assert!(p.try_begin(2, peer, "again", 1, now).is_some());
    }
}
