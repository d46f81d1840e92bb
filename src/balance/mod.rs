//! The central's table of alternates and its ordering policy, sans-IO: reports and time in,
//! ordered lists out.
//!
//! # Score
//! The score of an alternate is the estimated time for one more client to finish its boot
//! there, in microseconds:
//!
//! ```text
//! bytes      = bytes_remaining + promised × typical_boot + typical_boot
//! throughput = link_bytes_per_sec                          if no transfer is active
//!            = bytes_per_sec clamped to [link/16, link]    otherwise
//! base       = bytes × 1_000_000 / throughput
//! pressure   = 100 + cpu_penalty + mem_penalty             (percent)
//!     cpu_penalty = (cpu‰ − 700)⁺ × 2 / 3    (+0 % at 70 % CPU, +200 % at 100 %)
//!     mem_penalty = (mem‰ − 800)⁺            (+0 % at 80 % memory, +200 % at 100 %)
//! score      = base × pressure/100 × (100 + subnet_cost)/100 × path_penalty/100
//! ```
//!
//! `promised` counts the clients this central sent there that the alternate's reports do not
//! show yet (its `boots_started` counter settles them; unclaimed ones expire after the promise
//! TTL). Without it every client asking between two reports would get the same first entry.
//! The lesser of capacity and achieved rate is used so that an alternate that cannot reach its
//! nominal link speed is not trusted with it; an idle one is taken at its capacity.
//!
//! # Exclusions
//! No report for 3 intervals; draining or leaving; a boot-file digest other than the expected
//! one; at capacity (active + promised ≥ max transfers); a network path marked down.
//!
//! Ties are broken by alternate id, so the order is deterministic.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::report::wire::{AltState, LoadReport, NetworkMark, PathState, StatusRow};

/// How lists are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// By score (the point of bootherd).
    Load,
    /// By alternate id, ignoring load: what a plain setup would do (for comparison).
    Static,
}

/// A per-subnet cost: clients in `net/prefix` see `alternate`'s score raised by `percent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetCost {
    /// Network address.
    pub net: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Alternate id.
    pub alternate: String,
    /// Added percent (0 = near, 100 = counts as twice as slow).
    pub percent: u32,
}

impl SubnetCost {
    fn contains(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else { return false };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.net) & mask
    }
}

/// The central's policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Load or static order.
    pub ordering: Ordering,
    /// Bytes of one typical boot (kernel + initrd + config).
    pub typical_boot_bytes: u64,
    /// Alternates whose digest differs are excluded, when set.
    pub expected_digest: Option<[u8; 32]>,
    /// Only these alternates are accepted, when set.
    pub allow: Option<Vec<String>>,
    /// Per-subnet costs.
    pub subnet_costs: Vec<SubnetCost>,
    /// How long a promised client may take to show up in the alternate's reports.
    pub promise_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ordering: Ordering::Load,
            typical_boot_bytes: 64 << 20,
            expected_digest: None,
            allow: None,
            subnet_costs: Vec::new(),
            promise_ttl: Duration::from_secs(10),
        }
    }
}

/// Why a message was dropped (indexes the `dropped` counters of a status answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Wrong key or tampered.
    BadTag = 0,
    /// An old sequence number for the same boot id, an old boot id, or an old mark.
    Replayed = 1,
    /// Not on the allow-list.
    Unknown = 2,
    /// Does not decode.
    Malformed = 3,
}

/// One alternate in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// Alternate id.
    pub id: String,
    /// Addresses for clients.
    pub addresses: Vec<SocketAddr>,
    /// Score, microseconds.
    pub score_us: u64,
}

/// Boot ids remembered per alternate, so that an old boot's reports cannot be replayed.
const PAST_BOOT_IDS: usize = 8;
/// Most outstanding promises per alternate.
const MAX_PROMISES: usize = 4096;
/// Reports older than this many intervals are stale.
const STALE_INTERVALS: u32 = 3;
/// A mark more than this far from the central's clock is dropped.
const MARK_CLOCK_SKEW_MS: u64 = 60_000;

#[derive(Debug)]
struct Entry {
    report: LoadReport,
    received: Instant,
    promises: VecDeque<Instant>,
    past_boot_ids: VecDeque<u64>,
}

/// The central's table of alternates.
#[derive(Debug)]
pub struct Table {
    policy: Policy,
    entries: BTreeMap<String, Entry>,
    marks: BTreeMap<String, (PathState, u64)>,
    dropped: [u64; 4],
}

impl Table {
    /// An empty table.
    pub fn new(policy: Policy) -> Self {
        Table {
            policy,
            entries: BTreeMap::new(),
            marks: BTreeMap::new(),
            dropped: [0; 4],
        }
    }

    /// Replaces the policy (a config reload); the alternates, promises and marks stay.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Counts a dropped message.
    pub fn count_drop(&mut self, why: Drop) {
        self.dropped[why as usize] += 1;
    }

    /// Drop counters by [`Drop`] reason.
    pub fn dropped(&self) -> [u64; 4] {
        self.dropped
    }

    /// Applies an authenticated report, or drops (and counts) it.
    pub fn handle_report(&mut self, now: Instant, report: LoadReport) -> Result<(), Drop> {
        let result = self.apply_report(now, report);
        if let Err(why) = result {
            self.count_drop(why);
        }
        result
    }

    fn apply_report(&mut self, now: Instant, report: LoadReport) -> Result<(), Drop> {
        if let Some(allow) = &self.policy.allow {
            if !allow.contains(&report.alternate) {
                return Err(Drop::Unknown);
            }
        }
        let Some(entry) = self.entries.get_mut(&report.alternate) else {
            self.entries.insert(
                report.alternate.clone(),
                Entry {
                    report,
                    received: now,
                    promises: VecDeque::new(),
                    past_boot_ids: VecDeque::new(),
                },
            );
            return Ok(());
        };
        let old = &entry.report;
        if report.boot_id == old.boot_id {
            if report.sequence <= old.sequence {
                return Err(Drop::Replayed);
            }
            // Clients that started booting there since the last report settle promises.
            let started = report.boots_started.saturating_sub(old.boots_started);
            let settle = entry.promises.len().min(started as usize);
            entry.promises.drain(..settle);
        } else {
            if entry.past_boot_ids.contains(&report.boot_id) {
                return Err(Drop::Replayed);
            }
            if entry.past_boot_ids.len() == PAST_BOOT_IDS {
                entry.past_boot_ids.pop_front();
            }
            entry.past_boot_ids.push_back(old.boot_id);
        }
        entry.report = report;
        entry.received = now;
        Ok(())
    }

    /// Applies a network mark sent at `mark.unix_ms`, judged against the central's `now_unix_ms`.
    pub fn handle_mark(&mut self, now_unix_ms: u64, mark: NetworkMark) -> Result<(), Drop> {
        let fresh = now_unix_ms.abs_diff(mark.unix_ms) <= MARK_CLOCK_SKEW_MS;
        let newer = self
            .marks
            .get(&mark.alternate)
            .is_none_or(|&(_, at)| mark.unix_ms > at);
        if !(fresh && newer) {
            self.count_drop(Drop::Replayed);
            return Err(Drop::Replayed);
        }
        self.marks
            .insert(mark.alternate, (mark.state, mark.unix_ms));
        Ok(())
    }

    /// The current order for a client at `client` (best first), without promising anything.
    pub fn order(&mut self, now: Instant, client: Option<IpAddr>) -> Vec<Ranked> {
        self.expire_promises(now);
        let mut ranked: Vec<Ranked> = self
            .entries
            .iter()
            .filter_map(|(id, e)| {
                self.judge(now, id, e, client).ok().map(|score_us| Ranked {
                    id: id.clone(),
                    addresses: e.report.addresses.clone(),
                    score_us,
                })
            })
            .collect();
        match self.policy.ordering {
            Ordering::Load => ranked.sort_by(|a, b| (a.score_us, &a.id).cmp(&(b.score_us, &b.id))),
            Ordering::Static => ranked.sort_by(|a, b| a.id.cmp(&b.id)),
        }
        ranked
    }

    /// The order for a client that is about to use it: counts one boot against the first
    /// alternate until its reports show it.
    pub fn assign(&mut self, now: Instant, client: Option<IpAddr>) -> Vec<Ranked> {
        let ranked = self.order(now, client);
        if let Some(first) = ranked.first() {
            if let Some(e) = self.entries.get_mut(&first.id) {
                if e.promises.len() == MAX_PROMISES {
                    e.promises.pop_front();
                }
                e.promises.push_back(now);
            }
        }
        ranked
    }

    /// Every alternate with its score or the reason it is excluded: included ones in list
    /// order first.
    pub fn status(&mut self, now: Instant) -> Vec<StatusRow> {
        let order = self.order(now, None);
        let mut rows: Vec<StatusRow> = order
            .iter()
            .map(|r| self.row(now, &r.id, Some(r.score_us), None))
            .collect();
        for (id, e) in &self.entries {
            if let Err(why) = self.judge(now, id, e, None) {
                rows.push(self.row(now, id, None, Some(why.to_string())));
            }
        }
        rows
    }

    fn row(
        &self,
        now: Instant,
        id: &str,
        score_us: Option<u64>,
        excluded: Option<String>,
    ) -> StatusRow {
        let e = &self.entries[id];
        StatusRow {
            report: e.report.clone(),
            age_ms: now.saturating_duration_since(e.received).as_millis() as u64,
            score_us,
            excluded,
            promised: e.promises.len() as u32,
            path: self.path_state(id),
        }
    }

    fn path_state(&self, id: &str) -> PathState {
        self.marks.get(id).map_or(PathState::Clear, |&(s, _)| s)
    }

    fn expire_promises(&mut self, now: Instant) {
        let ttl = self.policy.promise_ttl;
        for e in self.entries.values_mut() {
            while e
                .promises
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) > ttl)
            {
                e.promises.pop_front();
            }
        }
    }

    /// The score of `e`, or why it is excluded.
    fn judge(
        &self,
        now: Instant,
        id: &str,
        e: &Entry,
        client: Option<IpAddr>,
    ) -> Result<u64, &'static str> {
        let r = &e.report;
        let stale = Duration::from_millis(u64::from(r.interval_ms)) * STALE_INTERVALS;
        if now.saturating_duration_since(e.received) > stale {
            return Err("stale: no report for 3 intervals");
        }
        match r.state {
            AltState::Serving => {}
            AltState::Draining => return Err("draining"),
            AltState::Leaving => return Err("leaving"),
        }
        if self.policy.expected_digest.is_some_and(|d| d != r.digest) {
            return Err("boot files differ from the expected digest");
        }
        let promised = e.promises.len() as u64;
        if u64::from(r.active_transfers) + promised >= u64::from(r.max_transfers) {
            return Err("at capacity");
        }
        let path_penalty = match self.path_state(id) {
            PathState::Clear => 100,
            PathState::Congested { penalty_percent } => u128::from(penalty_percent.max(100)),
            PathState::Down => return Err("network path marked down"),
        };
        let subnet_cost = client.map_or(0, |ip| {
            self.policy
                .subnet_costs
                .iter()
                .filter(|c| c.alternate == *id && c.contains(ip))
                .map(|c| c.percent)
                .max()
                .unwrap_or(0)
        });
        let typical = self.policy.typical_boot_bytes;
        let bytes = u128::from(r.bytes_remaining) + u128::from(promised + 1) * u128::from(typical);
        let link = r.link_bytes_per_sec.max(1);
        let throughput = if r.active_transfers == 0 {
            link
        } else {
            r.bytes_per_sec.clamp((link / 16).max(1), link)
        };
        let base = bytes * 1_000_000 / u128::from(throughput);
        let cpu_penalty = u128::from(r.cpu_permille.saturating_sub(700)) * 2 / 3;
        let mem_penalty = u128::from(r.mem_permille.saturating_sub(800));
        let score =
            base * (100 + cpu_penalty + mem_penalty) / 100 * (100 + u128::from(subnet_cost)) / 100
                * path_penalty
                / 100;
        Ok(score.min(u128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::wire::tests::report;

    fn idle(id: &str, link: u64) -> LoadReport {
        LoadReport {
            active_transfers: 0,
            bytes_remaining: 0,
            bytes_per_sec: 0,
            boots_started: 0,
            cpu_permille: 100,
            mem_permille: 100,
            link_bytes_per_sec: link,
            ..report(id, 1)
        }
    }

    fn ids(list: &[Ranked]) -> Vec<&str> {
        list.iter().map(|r| r.id.as_str()).collect()
    }

    fn table(policy: Policy) -> (Table, Instant) {
        (Table::new(policy), Instant::now())
    }

    #[test]
    fn idle_alternates_rank_by_capacity_with_id_tie_break() {
        let (mut t, now) = table(Policy::default());
        for (id, link) in [("c", 10_000_000), ("b", 40_000_000), ("a", 40_000_000)] {
            t.handle_report(now, idle(id, link)).unwrap();
        }
        assert_eq!(ids(&t.order(now, None)), ["a", "b", "c"]);
        // 64 MiB at 40 MB/s is 1.68 s.
        assert_eq!(
            t.order(now, None)[0].score_us,
            (64u64 << 20) * 1_000_000 / 40_000_000
        );
    }

    #[test]
    fn storm_spreads_in_proportion_to_capacity() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(now, idle("fast", 80_000_000)).unwrap();
        t.handle_report(now, idle("mid", 40_000_000)).unwrap();
        t.handle_report(now, idle("slow", 20_000_000)).unwrap();
        let mut share = BTreeMap::new();
        for _ in 0..70 {
            let list = t.assign(now, None);
            *share.entry(list[0].id.clone()).or_insert(0) += 1;
        }
        assert_eq!(share["fast"], 40);
        assert_eq!(share["mid"], 20);
        assert_eq!(share["slow"], 10);
    }

    #[test]
    fn promises_settle_with_reported_boots_and_expire() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(now, idle("a", 40_000_000)).unwrap();
        t.handle_report(now, idle("b", 40_000_000)).unwrap();
        assert_eq!(ids(&t.assign(now, None)), ["a", "b"]);
        assert_eq!(
            ids(&t.order(now, None)),
            ["b", "a"],
            "a has a promised boot"
        );
        // a reports that the boot started: the promise is settled by its own numbers.
        let mut r = idle("a", 40_000_000);
        r.sequence = 2;
        r.boots_started = 1;
        r.active_transfers = 1;
        r.bytes_remaining = 64 << 20;
        r.bytes_per_sec = 40_000_000;
        t.handle_report(now, r).unwrap();
        assert_eq!(t.status(now)[1].promised, 0);
        assert_eq!(ids(&t.order(now, None)), ["b", "a"]);
        // A promise for a client that never arrives expires.
        t.assign(now, None); // to b
        assert_eq!(ids(&t.order(now, None))[0], "a");
        let later = now + Duration::from_secs(11);
        t.handle_report(
            later,
            LoadReport {
                sequence: 3,
                ..idle("a", 40_000_000)
            },
        )
        .unwrap();
        t.handle_report(
            later,
            LoadReport {
                sequence: 2,
                ..idle("b", 40_000_000)
            },
        )
        .unwrap();
        assert_eq!(ids(&t.order(later, None)), ["a", "b"]);
    }

    #[test]
    fn loaded_alternate_drops_behind() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(now, idle("a", 40_000_000)).unwrap();
        t.handle_report(now, idle("b", 20_000_000)).unwrap();
        assert_eq!(ids(&t.order(now, None)), ["a", "b"]);
        let busy = LoadReport {
            sequence: 2,
            active_transfers: 20,
            bytes_remaining: 500 << 20,
            bytes_per_sec: 35_000_000,
            ..idle("a", 40_000_000)
        };
        t.handle_report(now, busy).unwrap();
        assert_eq!(ids(&t.order(now, None)), ["b", "a"]);
    }

    #[test]
    fn slow_achieved_rate_counts_and_pressure_penalises() {
        let (mut t, now) = table(Policy::default());
        let base = LoadReport {
            active_transfers: 1,
            bytes_remaining: 0,
            ..idle("a", 100_000_000)
        };
        t.handle_report(
            now,
            LoadReport {
                bytes_per_sec: 50_000_000,
                ..base.clone()
            },
        )
        .unwrap();
        let at_half = t.order(now, None)[0].score_us;
        t.handle_report(
            now,
            LoadReport {
                sequence: 2,
                bytes_per_sec: 1,
                ..base.clone()
            },
        )
        .unwrap();
        let floor = t.order(now, None)[0].score_us;
        assert_eq!(at_half, (64u64 << 20) * 1_000_000 / 50_000_000);
        assert_eq!(
            floor,
            (64u64 << 20) * 1_000_000 / 6_250_000,
            "achieved rate floored at link/16"
        );
        t.handle_report(
            now,
            LoadReport {
                sequence: 3,
                bytes_per_sec: 50_000_000,
                cpu_permille: 1000,
                ..base.clone()
            },
        )
        .unwrap();
        assert_eq!(t.order(now, None)[0].score_us, at_half * 3);
        t.handle_report(
            now,
            LoadReport {
                sequence: 4,
                bytes_per_sec: 50_000_000,
                mem_permille: 900,
                ..base
            },
        )
        .unwrap();
        assert_eq!(t.order(now, None)[0].score_us, at_half * 2);
    }

    #[test]
    fn exclusions_stale_draining_leaving_digest_capacity() {
        let policy = Policy {
            expected_digest: Some([0xAB; 32]),
            ..Policy::default()
        };
        let (mut t, now) = table(policy);
        t.handle_report(now, idle("ok", 1_000_000)).unwrap();
        t.handle_report(
            now,
            LoadReport {
                state: AltState::Draining,
                ..idle("draining", 1_000_000)
            },
        )
        .unwrap();
        t.handle_report(
            now,
            LoadReport {
                state: AltState::Leaving,
                ..idle("leaving", 1_000_000)
            },
        )
        .unwrap();
        t.handle_report(
            now,
            LoadReport {
                digest: [0; 32],
                ..idle("stale-files", 1_000_000)
            },
        )
        .unwrap();
        t.handle_report(
            now,
            LoadReport {
                max_transfers: 2,
                active_transfers: 2,
                ..idle("full", 1_000_000)
            },
        )
        .unwrap();
        t.handle_report(now - Duration::from_millis(3001), idle("silent", 1_000_000))
            .unwrap();
        assert_eq!(ids(&t.order(now, None)), ["ok"]);
        let reasons: BTreeMap<String, String> = t
            .status(now)
            .into_iter()
            .filter_map(|r| Some((r.report.alternate, r.excluded?)))
            .collect();
        assert_eq!(reasons["draining"], "draining");
        assert_eq!(reasons["leaving"], "leaving");
        assert_eq!(
            reasons["stale-files"],
            "boot files differ from the expected digest"
        );
        assert_eq!(reasons["full"], "at capacity");
        assert_eq!(reasons["silent"], "stale: no report for 3 intervals");
        // Exactly 3 intervals old is still fresh.
        let (mut t, now) = table(Policy::default());
        t.handle_report(now - Duration::from_millis(3000), idle("edge", 1_000_000))
            .unwrap();
        assert_eq!(t.order(now, None).len(), 1);
    }

    #[test]
    fn promises_count_against_capacity() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(
            now,
            LoadReport {
                max_transfers: 2,
                ..idle("small", 100_000_000)
            },
        )
        .unwrap();
        t.handle_report(now, idle("big", 1_000_000)).unwrap();
        assert_eq!(t.assign(now, None)[0].id, "small");
        assert_eq!(t.assign(now, None)[0].id, "small");
        assert_eq!(
            ids(&t.assign(now, None)),
            ["big"],
            "small is full of promised clients"
        );
    }

    #[test]
    fn replays_and_unknown_alternates_are_dropped_and_counted() {
        let policy = Policy {
            allow: Some(vec!["a".into()]),
            ..Policy::default()
        };
        let (mut t, now) = table(policy);
        assert_eq!(
            t.handle_report(now, idle("intruder", u64::MAX)),
            Err(Drop::Unknown)
        );
        assert!(
            t.order(now, None).is_empty(),
            "a spoofed id attracts nobody"
        );
        t.handle_report(
            now,
            LoadReport {
                sequence: 5,
                ..idle("a", 1)
            },
        )
        .unwrap();
        assert_eq!(
            t.handle_report(
                now,
                LoadReport {
                    sequence: 5,
                    ..idle("a", 1)
                }
            ),
            Err(Drop::Replayed)
        );
        assert_eq!(
            t.handle_report(
                now,
                LoadReport {
                    sequence: 4,
                    ..idle("a", 1)
                }
            ),
            Err(Drop::Replayed)
        );
        // Restart with a new boot id: sequence starts again; the old boot id is now refused.
        t.handle_report(
            now,
            LoadReport {
                boot_id: 2,
                sequence: 1,
                ..idle("a", 1)
            },
        )
        .unwrap();
        assert_eq!(
            t.handle_report(
                now,
                LoadReport {
                    sequence: 99,
                    ..idle("a", 1)
                }
            ),
            Err(Drop::Replayed)
        );
        assert_eq!(t.dropped(), [0, 3, 1, 0]);
    }

    #[test]
    fn subnet_costs_steer_clients_to_nearby_alternates() {
        let policy = Policy {
            subnet_costs: vec![
                SubnetCost {
                    net: Ipv4Addr::new(10, 0, 1, 0),
                    prefix: 24,
                    alternate: "a".into(),
                    percent: 0,
                },
                SubnetCost {
                    net: Ipv4Addr::new(10, 0, 1, 0),
                    prefix: 24,
                    alternate: "b".into(),
                    percent: 200,
                },
                SubnetCost {
                    net: Ipv4Addr::new(10, 0, 2, 0),
                    prefix: 24,
                    alternate: "a".into(),
                    percent: 200,
                },
            ],
            ..Policy::default()
        };
        let (mut t, now) = table(policy);
        t.handle_report(now, idle("a", 40_000_000)).unwrap();
        t.handle_report(now, idle("b", 40_000_000)).unwrap();
        let near_a = Some(IpAddr::from([10, 0, 1, 7]));
        let near_b = Some(IpAddr::from([10, 0, 2, 7]));
        assert_eq!(ids(&t.order(now, near_a)), ["a", "b"]);
        assert_eq!(ids(&t.order(now, near_b)), ["b", "a"]);
        assert_eq!(
            t.order(now, near_b)[1].score_us,
            t.order(now, None)[0].score_us * 3
        );
    }

    #[test]
    fn network_marks_penalise_or_remove_until_cleared() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(now, idle("a", 40_000_000)).unwrap();
        t.handle_report(now, idle("b", 30_000_000)).unwrap();
        let mark = |state, unix_ms| NetworkMark {
            alternate: "a".into(),
            state,
            unix_ms,
        };
        let clock = 1_700_000_000_000;
        t.handle_mark(
            clock,
            mark(
                PathState::Congested {
                    penalty_percent: 200,
                },
                clock,
            ),
        )
        .unwrap();
        assert_eq!(ids(&t.order(now, None)), ["b", "a"]);
        t.handle_mark(clock, mark(PathState::Down, clock + 1))
            .unwrap();
        assert_eq!(ids(&t.order(now, None)), ["b"]);
        assert_eq!(
            t.handle_mark(clock, mark(PathState::Clear, clock)),
            Err(Drop::Replayed),
            "older"
        );
        assert_eq!(
            t.handle_mark(clock, mark(PathState::Clear, clock - 61_000)),
            Err(Drop::Replayed)
        );
        t.handle_mark(clock, mark(PathState::Clear, clock + 2))
            .unwrap();
        assert_eq!(ids(&t.order(now, None)), ["a", "b"]);
    }

    #[test]
    fn static_ordering_ignores_load() {
        let policy = Policy {
            ordering: Ordering::Static,
            ..Policy::default()
        };
        let (mut t, now) = table(policy);
        t.handle_report(
            now,
            LoadReport {
                bytes_remaining: 1 << 40,
                active_transfers: 9,
                ..idle("a", 1)
            },
        )
        .unwrap();
        t.handle_report(now, idle("b", 1 << 40)).unwrap();
        assert_eq!(ids(&t.order(now, None)), ["a", "b"]);
    }
}
