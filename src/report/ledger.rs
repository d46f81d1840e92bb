//! The boots in progress on an alternate and the bytes they still need, sans-IO.
//!
//! A client that has its config is committed to every file the config names, but only the file
//! it is fetching shows in the TFTP counters: one that has its kernel still needs its initrd.
//! The ledger counts each boot's bytes when its config is served and drains the bytes the
//! clients acknowledge, oldest boot first: all boots share the link, so the total is what
//! matters to the central, not which boot a byte belonged to. A boot left behind by a client
//! that went elsewhere cannot stay counted for ever: the ledger empties once the alternate has
//! been idle for [`IDLE_RESET`], and forgets a boot after [`BOOT_TTL`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An alternate idle this long has no boot in progress.
pub const IDLE_RESET: Duration = Duration::from_secs(2);
/// A boot still counted after this long is forgotten.
pub const BOOT_TTL: Duration = Duration::from_secs(600);
/// Boots remembered at most (a flood of config requests cannot grow it).
const MAX_BOOTS: usize = 8192;

/// Boots in progress and the bytes they still need.
#[derive(Debug, Default)]
pub struct BootLedger {
    /// When boots began and the bytes they still need, oldest first.
    boots: VecDeque<(Instant, u64)>,
    /// Bytes booked so far (the cumulative count of boot bytes of the configs served).
    booked_to: u64,
    /// Acknowledged bytes already drained from the boots (the server's cumulative count).
    drained_to: u64,
    idle_since: Option<Instant>,
}

impl BootLedger {
    /// Takes the counters at `now`: `booked` boot bytes of the configs served and `delivered`
    /// bytes acknowledged, both cumulative since start, and `active` transfers in progress.
    /// Boots booked since the last update count as one that began now.
    pub fn update(&mut self, now: Instant, booked: u64, delivered: u64, active: usize) {
        let new = booked.saturating_sub(self.booked_to);
        self.booked_to = self.booked_to.max(booked);
        if new > 0 {
            if self.boots.len() == MAX_BOOTS {
                self.boots.pop_front();
            }
            self.boots.push_back((now, new));
        }
        let mut fresh = delivered.saturating_sub(self.drained_to);
        self.drained_to = self.drained_to.max(delivered);
        while let Some((_, left)) = self.boots.front_mut() {
            if *left > fresh {
                *left -= fresh;
                break;
            }
            fresh -= *left;
            self.boots.pop_front();
        }
        while self
            .boots
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > BOOT_TTL)
        {
            self.boots.pop_front();
        }
        if active > 0 {
            self.idle_since = None;
        } else if now.saturating_duration_since(*self.idle_since.get_or_insert(now)) >= IDLE_RESET {
            self.boots.clear();
        }
    }

    /// Bytes the boots in progress still need.
    pub fn pending(&self) -> u64 {
        self.boots.iter().map(|&(_, left)| left).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_drain_oldest_first_and_count_files_not_asked_for_yet() {
        let t0 = Instant::now();
        let mut l = BootLedger::default();
        l.update(t0, 18_000, 0, 0);
        assert_eq!(l.pending(), 18_000, "two configs of 9 kB served");
        l.update(t0, 18_000, 4_000, 2);
        assert_eq!(l.pending(), 14_000);
        l.update(t0, 18_000, 12_000, 2);
        assert_eq!(l.pending(), 6_000);
        // Counters only grow; a repeated reading changes nothing.
        l.update(t0, 18_000, 12_000, 1);
        assert_eq!(l.pending(), 6_000);
        l.update(t0, 18_000, 20_000, 1);
        assert_eq!(
            l.pending(),
            0,
            "more delivered than booked: nothing pending"
        );
        l.update(t0, 23_000, 20_000, 1);
        assert_eq!(
            l.pending(),
            5_000,
            "earlier excess is not credited to a new boot"
        );
    }

    #[test]
    fn an_idle_alternate_has_nothing_pending_and_old_boots_are_forgotten() {
        let t0 = Instant::now();
        let mut l = BootLedger::default();
        l.update(t0, 9_000, 0, 0); // its client went elsewhere
        l.update(t0 + Duration::from_millis(1500), 9_000, 0, 0);
        assert_eq!(
            l.pending(),
            9_000,
            "a pause between two files is not idleness"
        );
        l.update(t0 + IDLE_RESET, 9_000, 0, 0);
        assert_eq!(l.pending(), 0);
        let t1 = t0 + IDLE_RESET;
        l.update(t1, 18_000, 0, 3);
        l.update(t1 + BOOT_TTL, 18_000, 0, 3);
        assert_eq!(l.pending(), 9_000);
        l.update(t1 + BOOT_TTL + Duration::from_millis(1), 18_000, 0, 3);
        assert_eq!(l.pending(), 0);
    }
}
