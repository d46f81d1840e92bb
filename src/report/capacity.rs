//! What an alternate's link really delivers, learned from its own transfers, sans-IO.
//!
//! Nobody knows an alternate's capacity: the bottleneck may be a switch port, a shared uplink
//! or an SD card. So the alternate measures it. Time is cut into one-second epochs; an epoch in
//! which transfers were active for at least half of it gives a sample, the bytes the clients
//! acknowledged per second of activity. A sample is *backlogged* when the alternate had more to
//! send than got through: a transfer cut its window for loss, round trips grew well above the
//! shortest seen (a standing queue ahead of the link), the pacer held sends back, or the
//! process used a whole core with two or more transfers running. Only then does the sample say
//! what the bottleneck delivers; otherwise the clients asked for less than it can carry.
//!
//! - Any sample above the estimate raises it at once: bytes acknowledged over a second were
//!   carried by the link, so it can carry at least that much.
//! - Backlogged samples below it lower it only when [`LOWER_AFTER`] come in a row, to the
//!   highest of them: one short or noisy second never outweighs a long history, and a link that
//!   really slowed down is followed within seconds.
//! - Before any backlogged sample the estimate is a prior: the network interface's speed, or a
//!   default. The configured link capacity, when there is one, is only a cap.
//! - Once [`PACE_AFTER`] of evidence is behind the estimate, the alternate paces all its
//!   transfers at a quarter above it ([`CapacityEstimator::pacing_rate`]): its queue stays short,
//!   and a link faster than learned still shows.
//! - What was learned is kept across restarts ([`SavedCapacity`]); the seconds of evidence
//!   behind it halve every [`EVIDENCE_HALF_LIFE`] of wall-clock time while it rests.

use std::time::{Duration, Instant};

/// Length of one measurement epoch.
pub const EPOCH: Duration = Duration::from_secs(1);
/// Backlogged samples below the estimate, in a row, that lower it.
pub const LOWER_AFTER: usize = 3;
/// A backlogged sample within this fraction (per mille) below the estimate confirms it.
const CONFIRM_PERMILLE: u64 = 900;
/// Evidence stops growing here: an hour of measurement is as good as a day's.
const MAX_EVIDENCE: Duration = Duration::from_secs(3600);
/// Saved evidence halves over this much time at rest.
pub const EVIDENCE_HALF_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Queueing delay, beyond twice the base round trip, that marks an epoch as backlogged: a few
/// milliseconds of a busy link, more than a LAN's round trip or a client's scheduling delay.
const QUEUE_DELAY: Duration = Duration::from_millis(3);
/// Round trips an epoch needs before its average says anything.
const MIN_RTT_SAMPLES: u64 = 8;
/// Pacing runs this much (per mille) above the estimate, so that a link faster than learned
/// shows it: samples above the estimate raise it.
const PACING_GAIN_PERMILLE: u64 = 1250;
/// Evidence an estimate needs before it paces the transfers. The first seconds of a storm
/// measure windows still opening: pacing at that figure held a cold alternate at half its link
/// for ten seconds in the storm lab, while a long history is the link's.
pub const PACE_AFTER: Duration = Duration::from_secs(30);

/// Cumulative counters of the alternate's TFTP server and process, sampled by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Transfers in progress now.
    pub active: usize,
    /// Bytes the clients acknowledged since the server started.
    pub delivered: u64,
    /// Times a transfer cut its window for a gap or a timeout, since start.
    pub loss_events: u64,
    /// Nanoseconds during which the pacer held sends back, since start.
    pub paced_ns: u64,
    /// CPU time used by the process since start.
    pub cpu: Duration,
    /// Round trips measured since start, their sum in microseconds, and the shortest.
    pub rtt_samples: u64,
    /// Their sum, in microseconds.
    pub rtt_sum_us: u64,
    /// The shortest, in microseconds (0: none yet).
    pub rtt_min_us: u64,
}

/// A capacity learned from backlogged samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Seconds of backlogged measurement behind it.
    pub evidence: Duration,
}

/// One epoch's measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Bytes acknowledged per second of activity.
    pub bytes_per_sec: u64,
    /// Whether the alternate had more to send than got through.
    pub backlogged: bool,
    /// Time with transfers active in the epoch.
    pub busy: Duration,
}

/// The epoch being measured.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    start: Instant,
    at_start: Counters,
    busy: Duration,
}

/// Learns the capacity of an alternate's link from its transfers.
#[derive(Debug)]
pub struct CapacityEstimator {
    prior: u64,
    cap: Option<u64>,
    learned: Option<Learned>,
    /// Consecutive backlogged samples below the estimate.
    lower_run: Vec<Sample>,
    epoch: Option<Epoch>,
    last: Option<(Instant, Counters)>,
}

impl CapacityEstimator {
    /// Starts from `saved` if there is one, else from `prior` (bytes/s); never reports more
    /// than `cap`.
    pub fn new(prior: u64, cap: Option<u64>, saved: Option<Learned>) -> Self {
        CapacityEstimator {
            prior: prior.max(1),
            cap,
            learned: saved.filter(|l| l.bytes_per_sec > 0),
            lower_run: Vec::new(),
            epoch: None,
            last: None,
        }
    }

    /// Changes the cap (a config reload).
    pub fn set_cap(&mut self, cap: Option<u64>) {
        self.cap = cap;
    }

    /// The capacity to report, bytes per second.
    pub fn capacity(&self) -> u64 {
        let estimate = self.learned.map_or(self.prior, |l| l.bytes_per_sec);
        self.cap.map_or(estimate, |cap| estimate.min(cap)).max(1)
    }

    /// Seconds of backlogged measurement behind [`CapacityEstimator::capacity`] (zero while it
    /// is the prior).
    pub fn evidence(&self) -> Duration {
        self.learned.map_or(Duration::ZERO, |l| l.evidence)
    }

    /// What has been learned, to keep across restarts.
    pub fn learned(&self) -> Option<Learned> {
        self.learned
    }

    /// The rate to pace all transfers at: a little above the learned capacity, so that a
    /// faster link shows; `None` (unpaced) until [`PACE_AFTER`] of evidence is behind it.
    pub fn pacing_rate(&self) -> Option<u64> {
        if self.learned?.evidence < PACE_AFTER {
            return None;
        }
        Some(
            (u128::from(self.capacity()) * u128::from(PACING_GAIN_PERMILLE) / 1000)
                .min(u128::from(u64::MAX)) as u64,
        )
    }

    /// Takes the counters at `now`; returns the sample of an epoch that ended, after learning
    /// from it.
    pub fn observe(&mut self, now: Instant, counters: Counters) -> Option<Sample> {
        let (last_at, last) = self
            .last
            .replace((now, counters))
            .unwrap_or((now, counters));
        let epoch = self.epoch.get_or_insert(Epoch {
            start: last_at,
            at_start: last,
            busy: Duration::ZERO,
        });
        if last.active > 0 {
            epoch.busy += now.saturating_duration_since(last_at);
        }
        let wall = now.saturating_duration_since(epoch.start);
        if wall < EPOCH {
            return None;
        }
        let epoch = self.epoch.take()?;
        self.epoch = Some(Epoch {
            start: now,
            at_start: counters,
            busy: Duration::ZERO,
        });
        if epoch.busy < EPOCH / 2 {
            return None;
        }
        let delivered = counters.delivered.saturating_sub(epoch.at_start.delivered);
        let loss = counters.loss_events > epoch.at_start.loss_events;
        let paced = Duration::from_nanos(counters.paced_ns.saturating_sub(epoch.at_start.paced_ns));
        let cpu = counters.cpu.saturating_sub(epoch.at_start.cpu);
        let cpu_bound = cpu * 10 >= wall * 9 && counters.active.min(last.active) >= 2;
        let queued = queueing(&epoch.at_start, &counters);
        let sample = Sample {
            bytes_per_sec: (u128::from(delivered) * 1_000_000 / epoch.busy.as_micros().max(1))
                .min(u128::from(u64::MAX)) as u64,
            backlogged: loss || paced * 10 >= epoch.busy || cpu_bound || queued,
            busy: epoch.busy,
        };
        self.learn(sample);
        Some(sample)
    }

    /// Learns from one sample (see the module documentation).
    pub fn learn(&mut self, sample: Sample) {
        let add = |l: Learned, busy: Duration| Learned {
            evidence: (l.evidence + busy).min(MAX_EVIDENCE),
            ..l
        };
        let Some(learned) = self.learned else {
            // The first measurement that says anything about the link replaces the prior.
            if sample.backlogged || sample.bytes_per_sec > self.prior {
                self.learned = Some(Learned {
                    bytes_per_sec: sample.bytes_per_sec.max(1),
                    evidence: if sample.backlogged {
                        sample.busy
                    } else {
                        Duration::ZERO
                    },
                });
            }
            return;
        };
        if sample.bytes_per_sec > learned.bytes_per_sec {
            self.lower_run.clear();
            let raised = Learned {
                bytes_per_sec: sample.bytes_per_sec,
                ..learned
            };
            self.learned = Some(if sample.backlogged {
                add(raised, sample.busy)
            } else {
                raised
            });
            return;
        }
        if !sample.backlogged {
            return;
        }
        let floor = u128::from(learned.bytes_per_sec) * u128::from(CONFIRM_PERMILLE) / 1000;
        if u128::from(sample.bytes_per_sec) >= floor {
            self.lower_run.clear();
            self.learned = Some(add(learned, sample.busy));
            return;
        }
        self.lower_run.push(sample);
        if self.lower_run.len() >= LOWER_AFTER {
            let run = std::mem::take(&mut self.lower_run);
            self.learned = Some(Learned {
                bytes_per_sec: run
                    .iter()
                    .map(|s| s.bytes_per_sec)
                    .max()
                    .unwrap_or(1)
                    .max(1),
                evidence: run.iter().map(|s| s.busy).sum(),
            });
        }
    }
}

/// Whether the round trips measured between two samples of the counters show a standing
/// queue: on average more than twice the shortest round trip ever seen plus [`QUEUE_DELAY`].
/// A queue builds only where data arrives faster than the link ahead carries it, so the
/// alternate was sending as fast as its path allowed even if nothing was dropped yet (a deep
/// switch buffer, or windows that all fit in it).
fn queueing(before: &Counters, now: &Counters) -> bool {
    let samples = now.rtt_samples.saturating_sub(before.rtt_samples);
    if samples < MIN_RTT_SAMPLES || now.rtt_min_us == 0 {
        return false;
    }
    let average = now.rtt_sum_us.saturating_sub(before.rtt_sum_us) / samples;
    average >= 2 * now.rtt_min_us + QUEUE_DELAY.as_micros() as u64
}

/// The capacity as kept in the alternate's state file between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SavedCapacity {
    /// What was learned, if anything.
    pub learned: Option<Learned>,
    /// Wall clock when saved, Unix milliseconds.
    pub saved_unix_ms: u64,
}

impl SavedCapacity {
    /// The learned capacity as it stands `now_unix_ms`: its evidence halved for every
    /// [`EVIDENCE_HALF_LIFE`] it has rested (a clock that went backwards counts as no rest).
    pub fn aged(&self, now_unix_ms: u64) -> Option<Learned> {
        let learned = self.learned?;
        let rest = now_unix_ms.saturating_sub(self.saved_unix_ms) as f64;
        let half_lives = rest / EVIDENCE_HALF_LIFE.as_millis() as f64;
        Some(Learned {
            evidence: learned.evidence.mul_f64(0.5f64.powf(half_lives)),
            ..learned
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn backlogged(bytes_per_sec: u64) -> Sample {
        Sample {
            bytes_per_sec,
            backlogged: true,
            busy: EPOCH,
        }
    }

    fn light(bytes_per_sec: u64) -> Sample {
        Sample {
            backlogged: false,
            ..backlogged(bytes_per_sec)
        }
    }

    #[test]
    fn the_prior_holds_until_a_backlogged_sample_and_a_cap_always_holds() {
        let mut e = CapacityEstimator::new(1250 * MB, None, None);
        assert_eq!((e.capacity(), e.evidence()), (1250 * MB, Duration::ZERO));
        assert_eq!(e.pacing_rate(), None, "nothing learned: unpaced");
        // A client that asks for little says nothing about the link.
        e.learn(light(3 * MB));
        assert_eq!(e.capacity(), 1250 * MB);
        e.learn(backlogged(25 * MB));
        assert_eq!((e.capacity(), e.evidence()), (25 * MB, EPOCH));
        assert_eq!(e.pacing_rate(), None, "a second is not enough to pace at");
        for _ in 1..PACE_AFTER.as_secs() {
            e.learn(backlogged(25 * MB));
        }
        assert_eq!(e.pacing_rate(), Some(31_250_000));
        let mut capped = CapacityEstimator::new(1250 * MB, Some(10 * MB), None);
        assert_eq!(capped.capacity(), 10 * MB);
        capped.learn(backlogged(25 * MB));
        assert_eq!(capped.capacity(), 10 * MB);
    }

    #[test]
    fn any_higher_sample_raises_at_once() {
        let mut e = CapacityEstimator::new(1250 * MB, None, None);
        e.learn(backlogged(10 * MB));
        e.learn(light(12 * MB));
        assert_eq!(e.capacity(), 12 * MB, "delivered, so the link carries it");
        assert_eq!(e.evidence(), EPOCH, "a light sample adds no evidence");
        e.learn(backlogged(20 * MB));
        assert_eq!((e.capacity(), e.evidence()), (20 * MB, 2 * EPOCH));
    }

    #[test]
    fn a_noisy_sample_never_outweighs_the_history() {
        let mut e = CapacityEstimator::new(1250 * MB, None, None);
        for _ in 0..600 {
            e.learn(backlogged(25 * MB));
        }
        // Dips, each followed by a normal second, and light seconds: nothing moves.
        for dip in [MB, 5 * MB, 12 * MB] {
            e.learn(backlogged(dip));
            e.learn(backlogged(dip));
            e.learn(backlogged(24 * MB));
            e.learn(light(dip));
        }
        assert_eq!(e.capacity(), 25 * MB);
        // Within 10 % it confirms rather than lowers.
        e.learn(backlogged(23 * MB));
        assert_eq!(e.capacity(), 25 * MB);
        assert_eq!(e.evidence(), Duration::from_secs(600 + 1 + 3));
    }

    #[test]
    fn a_link_that_slowed_down_is_followed_after_three_backlogged_seconds() {
        let mut e = CapacityEstimator::new(1250 * MB, None, None);
        for _ in 0..100 {
            e.learn(backlogged(25 * MB));
        }
        e.learn(backlogged(6 * MB));
        e.learn(light(2 * MB)); // neutral: the run goes on
        e.learn(backlogged(6_500_000));
        assert_eq!(e.capacity(), 25 * MB);
        e.learn(backlogged(6_200_000));
        assert_eq!(e.capacity(), 6_500_000, "the best of the run");
        assert_eq!(e.evidence(), 3 * EPOCH, "the old history no longer applies");
        e.learn(backlogged(25 * MB));
        assert_eq!(e.capacity(), 25 * MB, "and back up when it recovers");
    }

    #[test]
    fn a_standing_queue_marks_an_epoch_backlogged_before_any_loss() {
        let t0 = Instant::now();
        let mut e = CapacityEstimator::new(1250 * MB, None, None);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Cumulative round trips: `samples` more of `average_us` each, shortest ever 200 µs.
        let c = |delivered, samples: u64, sum_us: u64| Counters {
            active: 20,
            delivered,
            rtt_samples: samples,
            rtt_sum_us: sum_us,
            rtt_min_us: 200,
            ..Counters::default()
        };
        e.observe(ms(0), c(0, 0, 0));
        // Round trips of 1 ms on average (200 µs + a little queue): not backlogged.
        let s = e.observe(ms(1000), c(5 * MB, 100, 100_000)).unwrap();
        assert!(!s.backlogged);
        assert_eq!(
            e.capacity(),
            1250 * MB,
            "nothing learned from a light second"
        );
        // 40 ms on average: a full queue ahead of the link, backlogged at 6 MB/s.
        let s = e.observe(ms(2000), c(11 * MB, 200, 4_100_000)).unwrap();
        assert!(s.backlogged);
        assert_eq!(e.capacity(), 6 * MB);
        // Too few round trips to judge: not backlogged.
        let s = e.observe(ms(3000), c(17 * MB, 203, 4_220_000)).unwrap();
        assert!(!s.backlogged);
    }

    #[test]
    fn epochs_measure_busy_time_and_tell_backlog_from_light_load() {
        let t0 = Instant::now();
        let mut e = CapacityEstimator::new(1250 * MB, None, None);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let c = |active, delivered, loss_events, paced_ns, cpu_ms| Counters {
            active,
            delivered,
            loss_events,
            paced_ns,
            cpu: Duration::from_millis(cpu_ms),
            ..Counters::default()
        };
        assert_eq!(e.observe(ms(0), c(0, 0, 0, 0, 0)), None);
        // Idle for 400 ms, then 5 MB in 600 ms of activity without loss: light, 8.33 MB/s.
        assert_eq!(e.observe(ms(400), c(4, 0, 0, 0, 10)), None);
        let s = e.observe(ms(1000), c(4, 5 * MB, 0, 0, 100)).unwrap();
        assert_eq!(
            s,
            Sample {
                bytes_per_sec: 8_333_333,
                backlogged: false,
                busy: Duration::from_millis(600)
            }
        );
        assert_eq!(e.capacity(), 1250 * MB);
        // A second with a loss event: backlogged at 6 MB/s.
        let s = e.observe(ms(2000), c(4, 11 * MB, 1, 0, 200)).unwrap();
        assert!(s.backlogged);
        assert_eq!(e.capacity(), 6 * MB);
        // Held back by the pacer for 20 % of it: backlogged too; a higher rate raises.
        let s = e
            .observe(ms(3000), c(4, 18 * MB, 1, 200_000_000, 300))
            .unwrap();
        assert!(s.backlogged);
        assert_eq!(e.capacity(), 7 * MB);
        // A whole core busy with several transfers: the process is the bottleneck.
        let s = e
            .observe(ms(4000), c(4, 25 * MB, 1, 200_000_000, 1250))
            .unwrap();
        assert!(s.backlogged);
        // Mostly idle epoch (busy 100 ms of it): no sample.
        assert_eq!(
            e.observe(ms(4100), c(0, 25 * MB, 1, 200_000_000, 1250)),
            None
        );
        assert_eq!(
            e.observe(ms(5000), c(0, 25 * MB, 1, 200_000_000, 1250)),
            None
        );
        assert_eq!(e.capacity(), 7 * MB);
    }

    #[test]
    fn saved_evidence_halves_per_day_at_rest() {
        let saved = SavedCapacity {
            learned: Some(Learned {
                bytes_per_sec: 25 * MB,
                evidence: Duration::from_secs(800),
            }),
            saved_unix_ms: 1_000_000,
        };
        let day = EVIDENCE_HALF_LIFE.as_millis() as u64;
        let aged = |rest| saved.aged(1_000_000 + rest).unwrap();
        assert_eq!(aged(0).evidence, Duration::from_secs(800));
        assert_eq!(aged(day).evidence, Duration::from_secs(400));
        assert_eq!(aged(2 * day).bytes_per_sec, 25 * MB, "the value stays");
        assert_eq!(saved.aged(0).unwrap().evidence, Duration::from_secs(800));
        // Restarted with it: the learned value is used at once and still needs three
        // backlogged seconds to be lowered.
        let mut e = CapacityEstimator::new(1250 * MB, None, Some(aged(day)));
        assert_eq!(e.capacity(), 25 * MB);
        e.learn(backlogged(MB));
        assert_eq!(e.capacity(), 25 * MB);
    }
}
