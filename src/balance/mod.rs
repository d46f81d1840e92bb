//! The central's table of alternates and its ordering policy, sans-IO: reports and time in,
//! ordered lists and lifecycle events out.
//!
//! # Score
//! The score of an alternate is the estimated time for one more client to finish its boot
//! there, in microseconds:
//!
//! ```text
//! boot     = bytes of one boot, as the alternates report it (else `typical_boot_bytes`)
//! work     = pending_bytes + (promised + 1) × boot
//! base     = work × 1_000_000 / capacity
//! score    = base × memory/100 × (100 + subnet_cost)/100 × path_penalty/100
//!   memory = 100 + (mem‰ − 950)⁺ × 4       (+0 % up to 95 % memory, +200 % at 100 %)
//! ```
//!
//! `capacity` is what the alternate learned its link delivers while backlogged (a prior, the
//! network interface's speed, until it has measured): the same figure for an idle alternate and
//! a busy one, so a report that arrives as a storm begins cannot make an alternate look slow or
//! fast. `pending_bytes` counts the boots in progress there, with the files their clients have
//! not asked for yet. `promised` counts the clients this central sent there that its reports do
//! not show yet (its `boots_started` counter settles them; unclaimed ones expire): without it
//! every client asking between two reports would get the same first entry. So simultaneous
//! arrivals split in proportion to capacity. Host-wide CPU use is not in the score: a busy CPU
//! that limits the alternate shows in the capacity it measures, and one that does not limit it
//! must not reorder it.
//!
//! # Promises
//! A client that is sent a list counts, against the first alternate of it, as *tentative*
//! until it acknowledges the list ([`Table::confirm`]); a tentative promise lapses after
//! [`TENTATIVE_TTL`], a confirmed one after the policy's promise TTL. One client address holds
//! at most [`MAX_PROMISES_PER_CLIENT`]. Promises raise scores, and an alternate whose active
//! transfers and promises reach its transfer limit goes after every one with room (it would
//! refuse the client as busy); they never exclude an alternate, so requests nobody
//! acknowledges cannot empty the list.
//!
//! # Exclusions
//! No report for 3 intervals; draining or leaving; a boot-file digest other than the expected
//! one; at capacity (as many transfers active as it allows); a network path marked down.
//! Ties are broken by alternate id, so the order is deterministic.
//!
//! # Restarts and replays
//! Reports carry a boot id (random per start), a sequence number and a boot count (starts so
//! far). A report of the current boot id must have a higher sequence. A boot id seen before is
//! refused. A boot id never seen is a restart only with a higher boot count, or once the current
//! one has gone quiet: so a replayed datagram of an earlier boot never displaces a live
//! alternate, whatever the central remembers.
//!
//! # Lifecycle
//! [`Table::poll_event`] says when an alternate joins, changes state (serving, draining,
//! leaving, stale) and departs: one that left is removed after [`DEPART_AFTER_LEAVING`], a
//! silent one after [`DEPART_AFTER_SILENCE`]; the boot ids of departed alternates are kept a
//! while longer so that their old reports cannot bring them back.

mod endpoint;
mod repeat;

pub use endpoint::{Handled, ReportEndpoint};
pub use repeat::RecentLists;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::report::wire::{AltState, LoadReport, NetworkMark, PathState, StatusRow};

/// How lists are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// By score (the point of bootherd).
    Load,
    /// By alternate id, ignoring load: what a plain setup would do (for comparison).
    Static,
}

/// A per-subnet cost: clients in `net/prefix` see `alternate`'s score raised by `percent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetCost {
    /// The subnet's network address (host bits zero).
    pub net: Ipv4Addr,
    /// How many leading bits of `net` a client's address must share.
    pub prefix: u8,
    /// The alternate it applies to.
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
    pub order: ListOrder,
    /// Bytes of one boot, until the alternates report what their configs name.
    pub typical_boot_bytes: u64,
    /// Alternates whose digest differs are excluded, when set.
    pub expected_digest: Option<[u8; 32]>,
    /// Only these alternates are accepted, when set.
    pub allow: Option<Vec<String>>,
    /// Per-subnet costs.
    pub subnet_costs: Vec<SubnetCost>,
    /// How long a client that acknowledged its list may take to show up in the alternate's
    /// reports.
    pub promise_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            order: ListOrder::Load,
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
pub enum DropReason {
    /// Wrong key or tampered.
    BadTag = 0,
    /// An old sequence number for the same boot id, an old boot id, an old mark, or a status
    /// request seen before.
    Replayed = 1,
    /// Not on the allow-list.
    Unknown = 2,
    /// Does not decode.
    Malformed = 3,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::BadTag => "failed authentication (wrong key?)",
            DropReason::Replayed => "replayed or out of date",
            DropReason::Unknown => "not on the allow-list",
            DropReason::Malformed => "malformed",
        })
    }
}

/// Where an alternate stands, as the central sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reporting and taking clients.
    Serving,
    /// Reporting, finishing its transfers, taking no new clients.
    Draining,
    /// Said it is shutting down.
    Leaving,
    /// No report for 3 intervals.
    Stale,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Leaving => "leaving",
            Phase::Stale => "stale (no report for 3 intervals)",
        })
    }
}

/// A change in the table worth telling the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An alternate reported for the first time (or again after it departed).
    Joined {
        /// Its id.
        id: String,
        /// Where it stands.
        phase: Phase,
    },
    /// An alternate changed state.
    Changed {
        /// Its id.
        id: String,
        /// The phase it was in until now.
        from: Phase,
        /// The phase it is in from now on.
        to: Phase,
    },
    /// An alternate that left or went silent was removed from the table.
    Departed {
        /// Its id.
        id: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Joined { id, phase } => write!(f, "alternate {id} joined, {phase}"),
            Event::Changed { id, from, to } => write!(f, "alternate {id}: {from}, now {to}"),
            Event::Departed { id } => write!(f, "alternate {id} departed"),
        }
    }
}

/// One alternate in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// The id the alternate reports under.
    pub id: String,
    /// Addresses for clients, best first.
    pub addresses: Vec<SocketAddr>,
    /// HTTP addresses for clients, best first (empty: no HTTP).
    pub http_addresses: Vec<SocketAddr>,
    /// Estimated time for one more boot there, microseconds.
    pub score_us: u64,
    /// Every transfer slot it allows is in use or promised: listed after those with room.
    pub full: bool,
}

/// Boot ids remembered per alternate, so that an old boot's reports cannot be replayed.
const PAST_BOOT_IDS: usize = 8;
/// Most outstanding promises per alternate.
const MAX_PROMISES: usize = 4096;
/// Most outstanding promises for one client address (many clients behind one NAT, or one
/// host simulating many, still count; one host cannot inflate every alternate).
pub const MAX_PROMISES_PER_CLIENT: usize = 64;
/// A list not acknowledged within this long counts no more.
pub const TENTATIVE_TTL: Duration = Duration::from_secs(3);
/// Reports older than this many intervals are stale.
const STALE_INTERVALS: u32 = 3;
/// A current boot silent this long may be replaced by any boot id not seen before, even with
/// a lower boot count: the alternate lost its state file.
const LOST_STATE_AFTER: Duration = Duration::from_secs(60);
/// An alternate that said it is leaving is removed this long after.
pub const DEPART_AFTER_LEAVING: Duration = Duration::from_secs(60);
/// A silent alternate is removed this long after its last report.
pub const DEPART_AFTER_SILENCE: Duration = Duration::from_secs(600);
/// Departed alternates whose boot ids are remembered, and for how long.
const MAX_DEPARTED: usize = 256;
const REMEMBER_DEPARTED: Duration = Duration::from_secs(3600);
/// A mark or status request more than this far from the central's clock is dropped.
const CLOCK_SKEW_MS: u64 = 60_000;

/// Whether a message stamped `sent_unix_ms` by its sender's clock is close enough to the
/// central's `now_unix_ms` to be taken: the replay window of marks and status requests.
fn within_clock_skew(now_unix_ms: u64, sent_unix_ms: u64) -> bool {
    now_unix_ms.abs_diff(sent_unix_ms) <= CLOCK_SKEW_MS
}

/// A client sent to an alternate that its reports do not show yet.
#[derive(Debug, Clone, Copy)]
struct Promise {
    at: Instant,
    client: SocketAddr,
    confirmed: bool,
}

#[derive(Debug)]
struct Entry {
    report: LoadReport,
    received: Instant,
    promises: VecDeque<Promise>,
    past_boot_ids: VecDeque<u64>,
    /// The phase last told in an event.
    phase: Phase,
}

impl Entry {
    fn stale_after(&self) -> Duration {
        Duration::from_millis(u64::from(self.report.interval_ms)) * STALE_INTERVALS
    }

    fn silence(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.received)
    }

    fn phase(&self, now: Instant) -> Phase {
        if self.silence(now) > self.stale_after() {
            return Phase::Stale;
        }
        match self.report.state {
            AltState::Serving => Phase::Serving,
            AltState::Draining => Phase::Draining,
            AltState::Leaving => Phase::Leaving,
        }
    }

    fn remember_boot_id(&mut self, boot_id: u64) {
        if self.past_boot_ids.len() == PAST_BOOT_IDS {
            self.past_boot_ids.pop_front();
        }
        self.past_boot_ids.push_back(boot_id);
    }
}

/// What the table keeps of a departed alternate.
#[derive(Debug)]
struct Departed {
    boot_ids: VecDeque<u64>,
    at: Instant,
}

/// The central's table of alternates.
#[derive(Debug)]
pub struct Table {
    policy: Policy,
    entries: BTreeMap<String, Entry>,
    departed: BTreeMap<String, Departed>,
    marks: BTreeMap<String, (PathState, u64)>,
    dropped: [u64; 4],
    /// Lists handed out by [`Table::assign`] since start.
    lists: u64,
    events: VecDeque<Event>,
}

impl Table {
    /// An empty table.
    pub fn new(policy: Policy) -> Self {
        Table {
            policy,
            entries: BTreeMap::new(),
            departed: BTreeMap::new(),
            marks: BTreeMap::new(),
            dropped: [0; 4],
            lists: 0,
            events: VecDeque::new(),
        }
    }

    /// Replaces the policy (a config reload); the alternates, promises and marks stay.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Counts a dropped message.
    pub fn count_drop(&mut self, why: DropReason) {
        self.dropped[why as usize] += 1;
    }

    /// Drop counters by [`DropReason`].
    pub fn dropped(&self) -> [u64; 4] {
        self.dropped
    }

    /// Lists handed out since start (each [`Table::assign`], empty ones too).
    pub fn lists_handed_out(&self) -> u64 {
        self.lists
    }

    /// Where alternate `id` stands at `now`, if it is in the table.
    pub fn phase(&self, now: Instant, id: &str) -> Option<Phase> {
        self.entries.get(id).map(|e| e.phase(now))
    }

    /// The next lifecycle event, if any (see [`Table::tick`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Applies an authenticated report, or drops (and counts) it.
    pub fn handle_report(&mut self, now: Instant, report: LoadReport) -> Result<(), DropReason> {
        let result = self.apply_report(now, report);
        if let Err(why) = result {
            self.count_drop(why);
        }
        result
    }

    fn apply_report(&mut self, now: Instant, report: LoadReport) -> Result<(), DropReason> {
        if let Some(allow) = &self.policy.allow {
            if !allow.contains(&report.alternate) {
                return Err(DropReason::Unknown);
            }
        }
        let Some(entry) = self.entries.get_mut(&report.alternate) else {
            let past_boot_ids = match self.departed.remove(&report.alternate) {
                Some(d) if d.boot_ids.contains(&report.boot_id) => {
                    self.departed.insert(report.alternate.clone(), d);
                    return Err(DropReason::Replayed);
                }
                Some(d) => d.boot_ids,
                None => VecDeque::new(),
            };
            let mut entry = Entry {
                report,
                received: now,
                promises: VecDeque::new(),
                past_boot_ids,
                phase: Phase::Serving,
            };
            entry.phase = entry.phase(now);
            self.events.push_back(Event::Joined {
                id: entry.report.alternate.clone(),
                phase: entry.phase,
            });
            self.entries.insert(entry.report.alternate.clone(), entry);
            return Ok(());
        };
        let old = &entry.report;
        if report.boot_id == old.boot_id {
            if report.sequence <= old.sequence {
                return Err(DropReason::Replayed);
            }
            // Clients that started booting there since the last report settle promises, the
            // confirmed (oldest) ones first.
            let started = report.boots_started.saturating_sub(old.boots_started);
            for _ in 0..started {
                let settled = entry
                    .promises
                    .iter()
                    .position(|p| p.confirmed)
                    .or((!entry.promises.is_empty()).then_some(0));
                match settled {
                    Some(i) => entry.promises.remove(i),
                    None => break,
                };
            }
        } else {
            let silence = entry.silence(now);
            let restarted = report.boot_count > old.boot_count
                || (silence > entry.stale_after() && report.boot_count == old.boot_count)
                || silence > LOST_STATE_AFTER;
            if entry.past_boot_ids.contains(&report.boot_id) || !restarted {
                return Err(DropReason::Replayed);
            }
            let old_boot_id = old.boot_id;
            entry.remember_boot_id(old_boot_id);
        }
        entry.report = report;
        entry.received = now;
        Self::tell_phase(&mut self.events, entry, now);
        Ok(())
    }

    fn tell_phase(events: &mut VecDeque<Event>, entry: &mut Entry, now: Instant) {
        let phase = entry.phase(now);
        if phase != entry.phase {
            events.push_back(Event::Changed {
                id: entry.report.alternate.clone(),
                from: entry.phase,
                to: phase,
            });
            entry.phase = phase;
        }
    }

    /// Notices alternates that went quiet and removes departed ones; call it every second or
    /// so, then read [`Table::poll_event`].
    pub fn tick(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (id, entry) in &mut self.entries {
            Self::tell_phase(&mut self.events, entry, now);
            let silence = entry.silence(now);
            if silence > DEPART_AFTER_SILENCE
                || (entry.report.state == AltState::Leaving && silence > DEPART_AFTER_LEAVING)
            {
                gone.push(id.clone());
            }
        }
        for id in gone {
            let Some(mut entry) = self.entries.remove(&id) else {
                continue;
            };
            entry.remember_boot_id(entry.report.boot_id);
            if self.departed.len() == MAX_DEPARTED {
                let oldest = self
                    .departed
                    .iter()
                    .min_by_key(|(_, d)| d.at)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    self.departed.remove(&oldest);
                }
            }
            self.departed.insert(
                id.clone(),
                Departed {
                    boot_ids: entry.past_boot_ids,
                    at: now,
                },
            );
            self.events.push_back(Event::Departed { id });
        }
        self.departed
            .retain(|_, d| now.saturating_duration_since(d.at) < REMEMBER_DEPARTED);
    }

    /// Applies a network mark sent at `mark.unix_ms`, judged against the central's `now_unix_ms`.
    pub fn handle_mark(&mut self, now_unix_ms: u64, mark: NetworkMark) -> Result<(), DropReason> {
        let fresh = within_clock_skew(now_unix_ms, mark.unix_ms);
        let newer = self
            .marks
            .get(&mark.alternate)
            .is_none_or(|&(_, at)| mark.unix_ms > at);
        if !(fresh && newer) {
            self.count_drop(DropReason::Replayed);
            return Err(DropReason::Replayed);
        }
        self.marks
            .insert(mark.alternate, (mark.state, mark.unix_ms));
        Ok(())
    }

    /// The current order for a client at `client` (best first), without promising anything.
    pub fn order(&mut self, now: Instant, client: Option<IpAddr>) -> Vec<Ranked> {
        self.expire_promises(now);
        let boot = self.boot_bytes(now);
        let mut ranked: Vec<Ranked> = self
            .entries
            .iter()
            .filter_map(|(id, e)| {
                self.judge(now, id, e, client, boot)
                    .ok()
                    .map(|(score_us, full)| Ranked {
                        id: id.clone(),
                        addresses: e.report.addresses.clone(),
                        http_addresses: e.report.http_addresses.clone(),
                        score_us,
                        full,
                    })
            })
            .collect();
        match self.policy.order {
            ListOrder::Load => {
                ranked.sort_by(|a, b| (a.full, a.score_us, &a.id).cmp(&(b.full, b.score_us, &b.id)))
            }
            ListOrder::Static => ranked.sort_by(|a, b| a.id.cmp(&b.id)),
        }
        ranked
    }

    /// The order for `client`, which is about to fetch it: counts one boot against the first
    /// alternate, tentatively until [`Table::confirm`].
    pub fn assign(&mut self, now: Instant, client: SocketAddr) -> Vec<Ranked> {
        self.lists += 1;
        let ranked = self.order(now, Some(client.ip()));
        let Some(first) = ranked.first() else {
            return ranked;
        };
        // One address cannot hold more than its share: its oldest promise makes room.
        let held: Vec<(String, Instant)> = self
            .entries
            .iter()
            .flat_map(|(id, e)| {
                e.promises
                    .iter()
                    .filter(|p| p.client.ip() == client.ip())
                    .map(move |p| (id.clone(), p.at))
            })
            .collect();
        if held.len() >= MAX_PROMISES_PER_CLIENT {
            if let Some((id, at)) = held.into_iter().min_by_key(|&(_, at)| at) {
                if let Some(e) = self.entries.get_mut(&id) {
                    if let Some(i) = e
                        .promises
                        .iter()
                        .position(|p| p.at == at && p.client.ip() == client.ip())
                    {
                        e.promises.remove(i);
                    }
                }
            }
        }
        if let Some(e) = self.entries.get_mut(&first.id) {
            if e.promises.len() == MAX_PROMISES {
                e.promises.pop_front();
            }
            e.promises.push_back(Promise {
                at: now,
                client,
                confirmed: false,
            });
        }
        ranked
    }

    /// `client` acknowledged the list it was given: its promise now lasts the promise TTL.
    pub fn confirm(&mut self, now: Instant, client: SocketAddr) {
        for e in self.entries.values_mut() {
            if let Some(p) = e
                .promises
                .iter_mut()
                .rev()
                .find(|p| p.client == client && !p.confirmed)
            {
                p.confirmed = true;
                p.at = now;
                return;
            }
        }
    }

    /// Every alternate with its score or the reason it is excluded: included ones in list
    /// order first.
    pub fn status(&mut self, now: Instant) -> Vec<StatusRow> {
        let order = self.order(now, None);
        let boot = self.boot_bytes(now);
        let mut rows: Vec<StatusRow> = order
            .iter()
            .map(|r| self.row(now, &r.id, Some(r.score_us), None))
            .collect();
        for (id, e) in &self.entries {
            if let Err(why) = self.judge(now, id, e, None, boot) {
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
            age_ms: e.silence(now).as_millis() as u64,
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
            e.promises.retain(|p| {
                let age = now.saturating_duration_since(p.at);
                age <= if p.confirmed { ttl } else { TENTATIVE_TTL }
            });
        }
    }

    /// Bytes of one boot: the most any fresh alternate reports (they serve the same files),
    /// else the policy's typical figure.
    fn boot_bytes(&self, now: Instant) -> u64 {
        self.entries
            .values()
            .filter(|e| e.phase(now) != Phase::Stale)
            .map(|e| e.report.boot_bytes)
            .max()
            .filter(|&b| b > 0)
            .unwrap_or(self.policy.typical_boot_bytes)
    }

    /// The score of `e` and whether its transfer slots are all taken or promised, or why it
    /// is excluded.
    fn judge(
        &self,
        now: Instant,
        id: &str,
        e: &Entry,
        client: Option<IpAddr>,
        boot: u64,
    ) -> Result<(u64, bool), &'static str> {
        let r = &e.report;
        match e.phase(now) {
            Phase::Serving => {}
            Phase::Draining => return Err("draining"),
            Phase::Leaving => return Err("leaving"),
            Phase::Stale => return Err("stale: no report for 3 intervals"),
        }
        if self.policy.expected_digest.is_some_and(|d| d != r.digest) {
            return Err("boot files differ from the expected digest");
        }
        if r.active_transfers >= r.max_transfers {
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
        let promised = e.promises.len() as u128;
        // Clients sent there that its reports do not show yet will take slots too: without
        // them a storm fills the fastest alternate past its limit between two reports, and
        // the clients it then refuses start again elsewhere.
        let full = u128::from(r.active_transfers) + promised >= u128::from(r.max_transfers);
        let work =
            u128::from(r.pending_bytes.max(r.bytes_remaining)) + (promised + 1) * u128::from(boot);
        let base = work * 1_000_000 / u128::from(r.link_bytes_per_sec.max(1));
        let memory = 100 + u128::from(r.mem_permille.saturating_sub(950)) * 4;
        let score =
            base * memory / 100 * (100 + u128::from(subnet_cost)) / 100 * path_penalty / 100;
        Ok((score.min(u128::from(u64::MAX)) as u64, full))
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
            pending_bytes: 0,
            boot_bytes: 0,
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

    /// Client number `n`, each from its own address.
    fn client(n: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0A00_0000 + n), 2000))
    }

    #[test]
    fn idle_alternates_rank_by_capacity_with_id_tie_break() {
        let (mut t, now) = table(Policy::default());
        for (id, link) in [("c", 10_000_000), ("b", 40_000_000), ("a", 40_000_000)] {
            t.handle_report(now, idle(id, link)).unwrap();
        }
        assert_eq!(ids(&t.order(now, None)), ["a", "b", "c"]);
        // 64 MiB (the typical boot, as no alternate has said what its boots take) at 40 MB/s.
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
        for n in 0..70 {
            let list = t.assign(now, client(n));
            *share.entry(list[0].id.clone()).or_insert(0) += 1;
        }
        assert_eq!(share["fast"], 40);
        assert_eq!(share["mid"], 20);
        assert_eq!(share["slow"], 10);
    }

    /// The warm storm that went wrong: 60 clients at once on alternates that learned 25, 12.5
    /// and 6.25 MB/s. In the middle of it two of them report their first transfers (tiny
    /// achieved rates, the boots they started) and one does not yet; the split is the same as
    /// without those reports, in proportion to capacity (each client going where it finishes
    /// first: 35/17/8 ends at 8.75 boot-times of alt3's, 34/17/9 at 9).
    #[test]
    fn a_warm_storm_splits_by_learned_capacity_when_reports_arrive_mid_storm() {
        let boot = 9_437_184;
        let caps = [
            ("alt1", 25_000_000),
            ("alt2", 12_500_000),
            ("alt3", 6_250_000),
        ];
        let storm = |reports_mid_storm: bool| {
            let (mut t, now) = table(Policy::default());
            for (id, cap) in caps {
                let r = LoadReport {
                    boot_bytes: boot,
                    ..idle(id, cap)
                };
                t.handle_report(now, r).unwrap();
            }
            let mut share = BTreeMap::new();
            for n in 0..60 {
                if n == 20 && reports_mid_storm {
                    for (id, cap) in &caps[..2] {
                        let started = t
                            .status(now)
                            .iter()
                            .find(|r| r.report.alternate == *id)
                            .map_or(0, |r| r.promised);
                        let r = LoadReport {
                            sequence: 2,
                            active_transfers: started,
                            boots_started: u64::from(started),
                            bytes_remaining: u64::from(started) * (8 << 20),
                            pending_bytes: u64::from(started) * boot,
                            bytes_per_sec: 30_000,
                            boot_bytes: boot,
                            ..idle(id, *cap)
                        };
                        t.handle_report(now, r).unwrap();
                    }
                }
                let list = t.assign(now, client(n));
                t.confirm(now, client(n));
                *share.entry(list[0].id.clone()).or_insert(0) += 1;
            }
            (share["alt1"], share["alt2"], share["alt3"])
        };
        assert_eq!(storm(false), (35, 17, 8));
        assert_eq!(storm(true), (35, 17, 8));
    }

    #[test]
    fn promises_settle_with_reported_boots_and_expire() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(now, idle("a", 40_000_000)).unwrap();
        t.handle_report(now, idle("b", 40_000_000)).unwrap();
        assert_eq!(ids(&t.assign(now, client(1))), ["a", "b"]);
        t.confirm(now, client(1));
        assert_eq!(
            ids(&t.order(now, None)),
            ["b", "a"],
            "a has a promised boot"
        );
        // a reports that the boot started: the promise is settled by its own numbers.
        t.handle_report(
            now,
            LoadReport {
                sequence: 2,
                boots_started: 1,
                active_transfers: 1,
                bytes_remaining: 64 << 20,
                ..idle("a", 40_000_000)
            },
        )
        .unwrap();
        assert_eq!(t.status(now)[1].promised, 0);
        assert_eq!(ids(&t.order(now, None)), ["b", "a"]);
        // A confirmed promise for a client that never arrives expires after the TTL.
        t.assign(now, client(2)); // to b
        t.confirm(now, client(2));
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
    fn unacknowledged_lists_lapse_and_one_address_holds_few_promises() {
        let (mut t, now) = table(Policy::default());
        t.handle_report(
            now,
            LoadReport {
                max_transfers: 4,
                ..idle("a", 40_000_000)
            },
        )
        .unwrap();
        t.handle_report(now, idle("b", 20_000_000)).unwrap();
        // Hundreds of list requests from one host that never acknowledges any.
        let attacker = |port: u16| SocketAddr::from(([10, 9, 9, 9], port));
        for port in 0..500 {
            assert_eq!(
                t.assign(now, attacker(port)).len(),
                2,
                "never an empty list"
            );
        }
        let promised: u32 = t.status(now).iter().map(|r| r.promised).sum();
        assert_eq!(promised as usize, MAX_PROMISES_PER_CLIENT);
        // A real client gets a list with both, still in capacity order.
        assert_eq!(ids(&t.assign(now, client(1))), ["a", "b"]);
        assert_eq!(
            t.lists_handed_out(),
            501,
            "every list counts, promise or not"
        );
        // Unacknowledged, they lapse within seconds; the acknowledged one stays.
        t.confirm(now, client(1));
        let later = now + TENTATIVE_TTL + Duration::from_millis(1);
        t.handle_report(
            later,
            LoadReport {
                sequence: 2,
                ..idle("b", 20_000_000)
            },
        )
        .unwrap();
        t.handle_report(
            later,
            LoadReport {
                sequence: 2,
                max_transfers: 4,
                ..idle("a", 40_000_000)
            },
        )
        .unwrap();
        let promised: Vec<u32> = t.status(later).iter().map(|r| r.promised).collect();
        assert_eq!(promised, [1, 0]);
    }

    #[test]
    fn capacity_scores_busy_alternates_and_cpu_does_not_count() {
        let (mut t, now) = table(Policy::default());
        let busy = |id: &str, seq, cpu_permille, mem_permille| LoadReport {
            sequence: seq,
            active_transfers: 5,
            bytes_remaining: 10_000_000,
            pending_bytes: 20_000_000,
            boot_bytes: 10_000_000,
            bytes_per_sec: 1_000, // a tiny achieved rate as the first transfers start
            cpu_permille,
            mem_permille,
            ..idle(id, 10_000_000)
        };
        t.handle_report(now, busy("a", 1, 100, 100)).unwrap();
        // (20 MB pending + 10 MB for one more) at 10 MB/s: 3 s.
        assert_eq!(t.order(now, None)[0].score_us, 3_000_000);
        t.handle_report(now, busy("a", 2, 1000, 950)).unwrap();
        assert_eq!(
            t.order(now, None)[0].score_us,
            3_000_000,
            "a host-wide CPU at 100 % is not a reason"
        );
        t.handle_report(now, busy("a", 3, 100, 1000)).unwrap();
        assert_eq!(
            t.order(now, None)[0].score_us,
            9_000_000,
            "memory at 100 % is"
        );
    }

    #[test]
    fn an_alternate_filled_by_promises_goes_after_those_with_room() {
        let (mut t, now) = table(Policy::default());
        let small = LoadReport {
            active_transfers: 1,
            max_transfers: 3,
            ..idle("fast", 100_000_000)
        };
        t.handle_report(now, small).unwrap();
        t.handle_report(now, idle("slow", 1_000_000)).unwrap();
        // One slot in use, two promised: the third client goes to the slow one, which has room.
        assert_eq!(ids(&t.assign(now, client(1)))[0], "fast");
        assert_eq!(ids(&t.assign(now, client(2)))[0], "fast");
        let third = t.assign(now, client(3));
        assert_eq!(ids(&third), ["slow", "fast"], "full, but still listed");
        assert!(third[1].full && !third[0].full);
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
    fn replays_and_unknown_alternates_are_dropped_and_counted() {
        let policy = Policy {
            allow: Some(vec!["a".into()]),
            ..Policy::default()
        };
        let (mut t, now) = table(policy);
        assert_eq!(
            t.handle_report(now, idle("intruder", u64::MAX)),
            Err(DropReason::Unknown)
        );
        assert!(
            t.order(now, None).is_empty(),
            "a spoofed id attracts nobody"
        );
        let a = |boot_id, boot_count, sequence| LoadReport {
            boot_id,
            boot_count,
            sequence,
            ..idle("a", 1)
        };
        t.handle_report(now, a(1, 1, 5)).unwrap();
        assert_eq!(t.handle_report(now, a(1, 1, 5)), Err(DropReason::Replayed));
        assert_eq!(t.handle_report(now, a(1, 1, 4)), Err(DropReason::Replayed));
        // A restart (higher boot count): sequence starts again; the old boot id is refused.
        t.handle_report(now, a(2, 2, 1)).unwrap();
        assert_eq!(t.handle_report(now, a(1, 1, 99)), Err(DropReason::Replayed));
        // A boot id never seen, without a higher count, while the current one is live.
        assert_eq!(t.handle_report(now, a(3, 2, 1)), Err(DropReason::Replayed));
        assert_eq!(t.dropped(), [0, 4, 1, 0]);
        // Without a state file (count 0 both times), a restart is taken once the old boot has
        // gone quiet.
        let (mut t, now) = table(Policy::default());
        t.handle_report(now, a(1, 0, 9)).unwrap();
        let quiet = now + Duration::from_millis(3001);
        assert_eq!(t.handle_report(now, a(2, 0, 1)), Err(DropReason::Replayed));
        t.handle_report(quiet, a(2, 0, 1)).unwrap();
        // And one that lost its state file (a lower count) after a minute of silence.
        let lost = quiet + LOST_STATE_AFTER + Duration::from_millis(1);
        t.handle_report(lost, a(3, 0, 1)).unwrap();
    }

    /// Issue: record a report, restart the alternate, restart the central, replay the old
    /// datagram once: the central took the old boot id and then refused every genuine report.
    /// Whatever earlier datagram is replayed, whenever, to a central that remembers anything or
    /// nothing, the live alternate stays listed and its next genuine report is accepted.
    #[test]
    fn a_replay_of_any_earlier_datagram_never_removes_a_live_alternate() {
        let genuine = |boot_id, boot_count, sequence| LoadReport {
            boot_id,
            boot_count,
            sequence,
            ..idle("alt1", 10_000_000)
        };
        // Three boots of alt1, five reports each; the live one is the last.
        let history: Vec<LoadReport> = (1..=3)
            .flat_map(|boot| (1..=5).map(move |seq| genuine(100 + boot, boot, seq)))
            .collect();
        let live = &history[10..];
        for n in 1..live.len() {
            // Any datagram sent before the n-th genuine report of the live boot arrives again,
            // at a central that saw the older boots or (restarted) did not.
            for replayed in &history[..10 + n] {
                for seen_before in [0, 10] {
                    let (mut t, now) = table(Policy::default());
                    for r in history[10 - seen_before..10].iter().chain(&live[..n]) {
                        t.handle_report(now, r.clone()).unwrap();
                    }
                    let _ = t.handle_report(now, replayed.clone());
                    assert_eq!(ids(&t.order(now, None)), ["alt1"]);
                    assert_eq!(
                        t.handle_report(now, live[n].clone()),
                        Ok(()),
                        "genuine report {} refused after a replay of boot {} seq {}",
                        n + 1,
                        replayed.boot_count,
                        replayed.sequence
                    );
                    assert_eq!(t.status(now)[0].report.boot_id, live[n].boot_id);
                }
            }
        }
        // An old datagram arrives first at a central that has just started.
        for replayed in &history[..10] {
            let (mut t, now) = table(Policy::default());
            t.handle_report(now, replayed.clone()).unwrap();
            for r in live {
                t.handle_report(now, r.clone()).unwrap();
            }
            assert_eq!(t.status(now)[0].report.boot_id, 103);
            assert_eq!(
                t.handle_report(now, replayed.clone()),
                Err(DropReason::Replayed)
            );
        }
    }

    #[test]
    fn lifecycle_events_and_departures() {
        let (mut t, now) = table(Policy::default());
        let at = |ms| now + Duration::from_millis(ms);
        t.handle_report(now, idle("a", 1)).unwrap();
        assert_eq!(
            t.poll_event(),
            Some(Event::Joined {
                id: "a".into(),
                phase: Phase::Serving
            })
        );
        assert_eq!(t.poll_event(), None);
        t.handle_report(
            at(100),
            LoadReport {
                sequence: 2,
                state: AltState::Draining,
                ..idle("a", 1)
            },
        )
        .unwrap();
        let changed = t.poll_event().unwrap();
        assert_eq!(changed.to_string(), "alternate a: serving, now draining");
        t.tick(at(3101));
        assert_eq!(
            t.poll_event(),
            Some(Event::Changed {
                id: "a".into(),
                from: Phase::Draining,
                to: Phase::Stale
            })
        );
        t.handle_report(
            at(3200),
            LoadReport {
                sequence: 3,
                ..idle("a", 1)
            },
        )
        .unwrap();
        assert_eq!(
            t.poll_event(),
            Some(Event::Changed {
                id: "a".into(),
                from: Phase::Stale,
                to: Phase::Serving
            }),
            "back"
        );
        // It leaves: gone from the table a minute later, and its reports cannot bring it back.
        let leaving = LoadReport {
            sequence: 4,
            state: AltState::Leaving,
            ..idle("a", 1)
        };
        t.handle_report(at(4000), leaving.clone()).unwrap();
        t.poll_event();
        t.tick(at(4000) + DEPART_AFTER_LEAVING + Duration::from_millis(1));
        let events: Vec<Event> = std::iter::from_fn(|| t.poll_event()).collect();
        assert_eq!(events.last(), Some(&Event::Departed { id: "a".into() }));
        assert!(t.status(at(70_000)).is_empty());
        let replayed = LoadReport {
            sequence: 5,
            ..idle("a", 1)
        };
        assert_eq!(
            t.handle_report(at(70_000), replayed),
            Err(DropReason::Replayed)
        );
        // A silent one departs after ten minutes; a new start of it joins again.
        t.handle_report(at(70_000), idle("b", 1)).unwrap();
        t.tick(at(70_000) + DEPART_AFTER_SILENCE + Duration::from_millis(1));
        assert!(t.status(at(70_000) + DEPART_AFTER_SILENCE).is_empty());
        t.handle_report(
            at(70_000) + DEPART_AFTER_SILENCE,
            LoadReport {
                boot_id: 77,
                boot_count: 9,
                ..idle("b", 1)
            },
        )
        .unwrap();
        assert_eq!(t.order(at(70_000) + DEPART_AFTER_SILENCE, None).len(), 1);
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
            Err(DropReason::Replayed),
            "older"
        );
        assert_eq!(
            t.handle_mark(clock, mark(PathState::Clear, clock - 61_000)),
            Err(DropReason::Replayed)
        );
        t.handle_mark(clock, mark(PathState::Clear, clock + 2))
            .unwrap();
        assert_eq!(ids(&t.order(now, None)), ["a", "b"]);
    }

    #[test]
    fn static_ordering_ignores_load() {
        let policy = Policy {
            order: ListOrder::Static,
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
