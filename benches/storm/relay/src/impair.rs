//! One direction of an impaired link, sans-IO: frames and the time (nanoseconds on any
//! monotonic clock) in, frames out when they are due. Loss, duplication and reordering draw
//! from a seeded generator, so a run with the same seed and the same frames decides alike.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a direction does to the frames that cross it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// One-way delay, nanoseconds.
    pub delay_ns: u64,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame is held back by `reorder_ns` more, so that later frames
    /// overtake it.
    pub reorder: f64,
    /// The extra delay of a reordered frame, nanoseconds.
    pub reorder_ns: u64,
    /// Most frames held at once; more are dropped and counted as overflow (a relay that cannot
    /// keep up shows it instead of growing without bound).
    pub limit: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay_ns: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ns: 1_000_000,
            limit: 100_000,
        }
    }
}

/// What a direction did, for the run's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames that arrived.
    pub received: u64,
    /// Frames dropped by the loss probability.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames held back to be overtaken.
    pub reordered: u64,
    /// Frames dropped because `limit` frames were held.
    pub overflow: u64,
    /// Frames handed out.
    pub delivered: u64,
}

/// xorshift64*: small, fast and good enough to decide drops.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Any seed, even 0, gives a non-zero state.
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: u64,
    seq: u64,
    frame: Vec<u8>,
}

/// One direction of a link: frames wait here until they are due.
#[derive(Debug)]
pub struct Direction {
    impairment: Impairment,
    rng: Rng,
    held: BinaryHeap<Reverse<Held>>,
    seq: u64,
    counters: Counters,
}

impl Direction {
    /// A direction with these impairments and this seed.
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Direction {
            impairment,
            rng: Rng::new(seed),
            held: BinaryHeap::new(),
            seq: 0,
            counters: Counters::default(),
        }
    }

    /// A frame arrived at `now`.
    pub fn push(&mut self, now: u64, frame: &[u8]) {
        self.counters.received += 1;
        let imp = self.impairment;
        if self.rng.chance(imp.loss) {
            self.counters.lost += 1;
            return;
        }
        let copies = if self.rng.chance(imp.duplicate) {
            self.counters.duplicated += 1;
            2
        } else {
            1
        };
        let mut due = now + imp.delay_ns;
        if self.rng.chance(imp.reorder) {
            self.counters.reordered += 1;
            due += imp.reorder_ns;
        }
        for _ in 0..copies {
            if self.held.len() >= imp.limit {
                self.counters.overflow += 1;
                continue;
            }
            self.seq += 1;
            self.held.push(Reverse(Held {
                due,
                seq: self.seq,
                frame: frame.to_vec(),
            }));
        }
    }

    /// The next frame due at or before `now`, in order of due time, then arrival.
    pub fn pop_due(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.held.peek()?.0.due > now {
            return None;
        }
        self.counters.delivered += 1;
        self.held.pop().map(|Reverse(h)| h.frame)
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<u64> {
        self.held.peek().map(|Reverse(h)| h.due)
    }

    /// What it did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn frame(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn drain(d: &mut Direction, now: u64) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| d.pop_due(now)).collect()
    }

    #[test]
    fn frames_wait_for_the_delay_and_keep_their_order() {
        let mut d = Direction::new(
            Impairment {
                delay_ns: 5 * MS,
                ..Impairment::default()
            },
            1,
        );
        for n in 0..10 {
            d.push(u64::from(n) * 100_000, &frame(n));
        }
        assert_eq!(d.next_due(), Some(5 * MS));
        assert!(d.pop_due(5 * MS - 1).is_none());
        let out = drain(&mut d, 5 * MS + 450_000);
        assert_eq!(out, (0..5).map(frame).collect::<Vec<_>>());
        let out = drain(&mut d, 10 * MS);
        assert_eq!(out, (5..10).map(frame).collect::<Vec<_>>());
        assert_eq!(d.next_due(), None);
        let c = d.counters();
        assert_eq!((c.received, c.delivered, c.lost), (10, 10, 0));
    }

    #[test]
    fn loss_and_duplication_follow_their_probabilities_and_the_seed() {
        let imp = Impairment {
            loss: 0.005,
            duplicate: 0.01,
            ..Impairment::default()
        };
        let run = |seed| {
            let mut d = Direction::new(imp, seed);
            let mut out = 0;
            for n in 0..200_000 {
                d.push(0, &frame(n));
                out += drain(&mut d, 0).len();
            }
            (d.counters(), out)
        };
        let (c, out) = run(7);
        assert_eq!(c.received, 200_000);
        // 1000 expected lost and 2000 duplicated; 5 standard deviations either way.
        assert!((840..=1160).contains(&c.lost), "{c:?}");
        assert!((1780..=2220).contains(&c.duplicated), "{c:?}");
        assert_eq!(out as u64, c.received - c.lost + c.duplicated);
        assert_eq!(c.delivered, out as u64);
        assert_eq!(run(7).0, c, "the same seed decides alike");
        assert_ne!(run(8).0, c, "another seed decides otherwise");
    }

    #[test]
    fn reordered_frames_are_overtaken() {
        let mut d = Direction::new(
            Impairment {
                delay_ns: MS,
                reorder: 0.1,
                reorder_ns: 250_000,
                ..Impairment::default()
            },
            3,
        );
        // One frame every 100 µs: a frame held back 250 µs is overtaken by the next two.
        for n in 0..1000 {
            d.push(u64::from(n) * 100_000, &frame(n));
        }
        let mut out = drain(&mut d, 1000 * MS);
        let reordered = d.counters().reordered as usize;
        let inversions = out.windows(2).filter(|w| w[0] > w[1]).count();
        assert!((50..=150).contains(&reordered), "{reordered}");
        assert!(
            inversions > reordered / 2 && inversions <= reordered,
            "{inversions} of {reordered}"
        );
        out.sort();
        assert_eq!(out, (0..1000).map(frame).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_relay_drops_and_counts() {
        let mut d = Direction::new(
            Impairment {
                delay_ns: MS,
                limit: 3,
                ..Impairment::default()
            },
            1,
        );
        for n in 0..5 {
            d.push(0, &frame(n));
        }
        assert_eq!(d.counters().overflow, 2);
        assert_eq!(drain(&mut d, MS).len(), 3);
    }
}
