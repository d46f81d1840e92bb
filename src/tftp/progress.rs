//! Live transfer counters: what the load monitor reports (active transfers, bytes still to send,
//! bytes sent, and the signs of a backlogged link: loss and pacing) and what an operator sees
//! per transfer. Updating is a few atomic adds per batch; the lock is taken only when a transfer
//! starts or ends, and by readers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::ratelimit::Pacer;
use super::transfer::TransferStats;

/// The counters of one server (shared by all its transfers).
#[derive(Debug, Default)]
pub struct Progress {
    active: AtomicUsize,
    remaining: AtomicU64,
    sent: AtomicU64,
    completed: AtomicU64,
    timed_out: AtomicU64,
    timeouts: AtomicU64,
    data_sent: AtomicU64,
    data_retransmitted: AtomicU64,
    loss_events: AtomicU64,
    rtt_samples: AtomicU64,
    rtt_sum_us: AtomicU64,
    /// 0 until the first sample.
    rtt_min_us: AtomicU64,
    next_id: AtomicU64,
    transfers: Mutex<BTreeMap<u64, Arc<Entry>>>,
    pacer: Option<Arc<Pacer>>,
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

/// Totals at one moment. The counters are cumulative since the server started: take
/// differences between two samples for an interval.
///
/// An interval with loss events or pacer hold-backs is one in which the server sent as fast as
/// the network (or the pacer) let it: its transfers were backlogged, and the bytes acknowledged
/// meanwhile measure what the path delivers. Without either, the clients or the disk were the
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Transfers in progress.
    pub active: usize,
    /// Bytes they still have to send.
    pub remaining: u64,
    /// Bytes acknowledged since the server started (take differences for a rate).
    pub sent: u64,
    /// Transfers started since the server started.
    pub started: u64,
    /// Transfers completed since the server started.
    pub completed: u64,
    /// Transfers given up since the server started: the client went silent.
    pub timed_out: u64,
    /// Retransmission timeouts since the server started: the timer expired and the OACK or
    /// window went again.
    pub timeouts: u64,
    /// DATA datagrams the socket took: first sends and resends (not OACKs or ERRORs).
    pub data_sent: u64,
    /// Of those, the ones that carried a block sent before: after a timeout, after a gap the
    /// client reported, and the probe of single-port mode's first window (see
    /// [`TransferStats`]). `data_retransmitted / data_sent` is the share of the link spent on
    /// resends.
    pub data_retransmitted: u64,
    /// Times a transfer cut its congestion window: for a gap the client reported (a repeated
    /// ACK), or for the first timeout after progress (the timeouts of one silence count once;
    /// so do the losses of one window, and timeouts before the client ever answered do not
    /// count at all).
    pub loss_events: u64,
    /// Nanoseconds in which the pacer held sends back: wall-clock time during which at least
    /// one transfer waited for its turn (0 while unpaced). Counted when the wait is decided, so
    /// a sample can include up to one wait (a millisecond or so) ahead of it.
    pub pacer_held_ns: u64,
    /// Round trips measured from ACKs of DATA by all transfers, their sum in microseconds,
    /// and the shortest since the server started (0: none yet; see [`TransferStats`]).
    pub rtt_samples: u64,
    /// Their sum, in microseconds.
    pub rtt_sum_us: u64,
    /// The shortest, in microseconds (0: none yet).
    pub rtt_min_us: u64,
}

impl Progress {
    /// A new, shared set of counters.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Counters that also report the hold-backs of `pacer`.
    pub fn with_pacer(pacer: Arc<Pacer>) -> Arc<Self> {
        Arc::new(Progress {
            pacer: Some(pacer),
            ..Progress::default()
        })
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
            recorded: TransferStats::default(),
        })
    }

    /// Current totals.
    pub fn totals(&self) -> Totals {
        Totals {
            active: self.active.load(Ordering::Acquire),
            remaining: self.remaining.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            started: self.next_id.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            data_sent: self.data_sent.load(Ordering::Relaxed),
            data_retransmitted: self.data_retransmitted.load(Ordering::Relaxed),
            loss_events: self.loss_events.load(Ordering::Relaxed),
            rtt_samples: self.rtt_samples.load(Ordering::Relaxed),
            rtt_sum_us: self.rtt_sum_us.load(Ordering::Relaxed),
            rtt_min_us: self.rtt_min_us.load(Ordering::Relaxed),
            pacer_held_ns: self
                .pacer
                .as_ref()
                .map_or(0, |p| p.held().as_nanos().min(u128::from(u64::MAX)) as u64),
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
    /// What [`TransferGuard::record`] has added to the totals so far.
    recorded: TransferStats,
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

    /// Records what the transfer has sent in all (its counters only grow).
    pub fn record(&mut self, stats: TransferStats) {
        let p = &self.progress;
        let add = |counter: &AtomicU64, now: u64, before: u64| {
            if now > before {
                counter.fetch_add(now - before, Ordering::Relaxed);
            }
        };
        add(&p.data_sent, stats.data_sent, self.recorded.data_sent);
        add(
            &p.data_retransmitted,
            stats.data_retransmitted,
            self.recorded.data_retransmitted,
        );
        add(&p.loss_events, stats.loss_events, self.recorded.loss_events);
        add(&p.timeouts, stats.timeouts, self.recorded.timeouts);
        add(&p.rtt_samples, stats.rtt_samples, self.recorded.rtt_samples);
        add(&p.rtt_sum_us, stats.rtt_sum_us, self.recorded.rtt_sum_us);
        if stats.rtt_min_us != 0 {
            let _ = p
                .rtt_min_us
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    (old == 0 || stats.rtt_min_us < old).then_some(stats.rtt_min_us)
                });
        }
        self.recorded = stats;
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

    /// Marks the transfer as given up because the client went silent.
    pub fn timed_out(&self) {
        self.progress.timed_out.fetch_add(1, Ordering::Relaxed);
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
                started: 2,
                completed: 0,
                ..Totals::default()
            }
        );
        let list = p.transfers(now + Duration::from_secs(2));
        assert_eq!(list[0].remaining(), 600);
        assert_eq!(list[0].rate(), 200);
        b.complete();
        drop(b);
        a.timed_out();
        drop(a); // given up: its remaining bytes leave the total
        assert_eq!(
            p.totals(),
            Totals {
                active: 0,
                remaining: 0,
                sent: 900,
                started: 2,
                completed: 1,
                timed_out: 1,
                ..Totals::default()
            }
        );
        assert!(p.transfers(now).is_empty());
        assert!(p.try_begin(2, peer, "again", 1, now).is_some());
    }

    #[test]
    fn adds_what_each_transfer_sent_and_reports_the_pacer() {
        let pacer = Arc::new(Pacer::new(Some(1_000_000)));
        let p = Progress::with_pacer(pacer.clone());
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut a = p.try_begin(2, peer, "kernel", 1000, now).unwrap();
        let mut b = p.try_begin(2, peer, "initrd", 1000, now).unwrap();
        let stats = |data_sent, data_retransmitted, loss_events, rtt_min_us| TransferStats {
            data_sent,
            data_retransmitted,
            loss_events,
            rtt_samples: data_sent / 10,
            rtt_sum_us: data_sent * 100,
            rtt_min_us,
            timeouts: loss_events * 2,
        };
        a.record(stats(10, 0, 0, 900));
        a.record(stats(30, 4, 1, 700));
        b.record(stats(5, 1, 1, 800));
        drop(a);
        // 1 MB more than the burst allowance waits a second.
        pacer.reserve(now, 65_536);
        pacer.reserve(now, 1_000_000);
        let t = p.totals();
        assert_eq!(
            (t.data_sent, t.data_retransmitted, t.loss_events, t.timeouts),
            (35, 5, 2, 4),
            "counted once each, and kept after a transfer ends"
        );
        assert_eq!(t.pacer_held_ns, 1_000_000_000);
        assert_eq!(
            (t.rtt_samples, t.rtt_sum_us, t.rtt_min_us),
            (3, 3500, 700),
            "round trips summed, and the shortest of all"
        );
    }
}
