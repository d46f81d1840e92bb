//! When to poll a socket without sleeping because a reply is due within microseconds.
//!
//! Sleeping in `epoll_wait` costs a context switch each way and, on a virtual machine, an
//! interrupt to wake the vCPU: tens of microseconds, as long as a whole TFTP window takes on
//! loopback or a fast LAN. So a server transfer that has sent its window and has its thread
//! to itself polls for the ACK for up to [`BusyPoll::BUDGET`] before it sleeps (the idea of
//! Linux's `SO_BUSY_POLL`). When a poll comes up empty the peer is farther away than that:
//! the next polls are skipped for a number of waits that doubles with every miss in a row, so
//! a slow link or client costs little more than sleeping. Sans-IO: the shell polls, this
//! decides.

use std::time::Duration;

/// Most waits skipped after misses in a row.
const MAX_SKIP: u32 = 64;

/// The busy-polling decision for one socket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BusyPoll {
    /// Waits still to sleep through without polling.
    skip: u32,
    /// Misses in a row.
    misses: u32,
}

impl BusyPoll {
    /// How long one busy poll lasts at most.
    pub const BUDGET: Duration = Duration::from_micros(50);

    /// Whether to busy-poll for this wait.
    pub fn should_poll(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// The reply came while polling.
    pub fn hit(&mut self) {
        self.misses = 0;
    }

    /// The budget ran out first.
    pub fn miss(&mut self) {
        self.misses = self.misses.saturating_add(1);
        self.skip = 1u32
            .checked_shl(self.misses - 1)
            .unwrap_or(MAX_SKIP)
            .min(MAX_SKIP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `waits` waits poll, when every poll misses.
    fn polls_when_always_missing(waits: usize) -> usize {
        let mut b = BusyPoll::default();
        (0..waits)
            .filter(|_| {
                let poll = b.should_poll();
                if poll {
                    b.miss();
                }
                poll
            })
            .count()
    }

    #[test]
    fn polls_every_wait_while_replies_come_in_time() {
        let mut b = BusyPoll::default();
        for _ in 0..1000 {
            assert!(b.should_poll());
            b.hit();
        }
    }

    #[test]
    fn misses_back_off_exponentially_up_to_a_cap() {
        let mut b = BusyPoll::default();
        let pattern: Vec<bool> = (0..16)
            .map(|_| {
                let poll = b.should_poll();
                if poll {
                    b.miss();
                }
                poll
            })
            .collect();
        // Poll, skip 1, poll, skip 2, poll, skip 4, poll, skip 8...
        let expected = [
            true, false, true, false, false, true, false, false, false, false, true, false, false,
            false, false, false,
        ];
        assert_eq!(pattern, expected);
        // On a slow link, one wait in 65 polls once the cap is reached.
        let polls = polls_when_always_missing(65_000);
        assert!((1000..1010).contains(&polls), "{polls}");
    }

    #[test]
    fn a_hit_restores_polling_at_once_after_the_skips() {
        let mut b = BusyPoll::default();
        for _ in 0..5 {
            while !b.should_poll() {}
            b.miss();
        }
        while !b.should_poll() {}
        b.hit();
        assert!(b.should_poll());
        b.miss();
        assert!(!b.should_poll(), "one miss after a hit skips one wait");
        assert!(b.should_poll());
    }
}
