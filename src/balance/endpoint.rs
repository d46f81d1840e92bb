//! The central's report port, sans-IO: a datagram, its sender and the time in; what happened
//! and the answer to send back out. The shell ([`crate::central`]) owns the socket and the log.
//!
//! Status requests are signed and carry a nonce and the sender's clock. A request more than a
//! minute off the central's clock is dropped; within the minute each nonce is answered only to
//! the address that first sent it (a retry after a lost answer is answered again, a copy sent
//! from elsewhere is not), so a captured request cannot be reflected at anyone.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::{within_clock_skew, DropReason, Table, CLOCK_SKEW_MS};
use crate::report::wire::{decode, encode, DecodeError, Key, Message, PathState, StatusAnswer};

/// Status requests remembered at most; beyond that, new ones are dropped until old ones age
/// out (a flood of signed requests needs the key, and still gets no more than this).
const MAX_ANSWERED: usize = 4096;
/// Answers to one nonce at most (the report tool tries three times).
const MAX_ANSWERS_PER_NONCE: u8 = 3;

/// What one datagram did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// A load report was applied.
    Report {
        /// The alternate it came from.
        alternate: String,
    },
    /// A network mark was applied.
    Marked {
        /// The alternate marked.
        alternate: String,
        /// Its path now.
        state: PathState,
    },
    /// A status request was answered.
    Answered,
    /// Dropped and counted.
    Dropped {
        /// The reason it is counted under.
        why: DropReason,
        /// What it was, in words ("report from alt1 (sequence 7)").
        what: String,
    },
    /// Nothing to do (a status answer sent to the central).
    Ignored,
}

/// The central's report port.
#[derive(Debug)]
pub struct ReportEndpoint {
    key: Key,
    /// Status requests answered, by nonce: where from, how often, when (central's clock).
    answered: HashMap<u64, (SocketAddr, u8)>,
    answered_order: VecDeque<(u64, u64)>,
    /// The last sender whose datagram failed authentication, and when.
    bad_tag: Option<(SocketAddr, Instant)>,
}

impl ReportEndpoint {
    /// An endpoint that authenticates with `key`.
    pub fn new(key: Key) -> Self {
        ReportEndpoint {
            key,
            answered: HashMap::new(),
            answered_order: VecDeque::new(),
            bad_tag: None,
        }
    }

    /// Replaces the key (a reloaded configuration).
    pub fn set_key(&mut self, key: Key) {
        self.key = key;
    }

    /// The last sender whose datagram failed authentication.
    pub fn bad_tag_from(&self) -> Option<SocketAddr> {
        self.bad_tag.map(|(from, _)| from)
    }

    /// Handles one datagram from `from` at `now` (`now_unix_ms` on the wall clock); returns
    /// what it did and the answer to send back to `from`, if any.
    pub fn handle(
        &mut self,
        table: &mut Table,
        now: Instant,
        now_unix_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
    ) -> (Handled, Option<Vec<u8>>) {
        let message = match decode(datagram, &self.key) {
            Ok(m) => m,
            Err(e) => {
                let why = match e {
                    DecodeError::BadTag => {
                        self.bad_tag = Some((from, now));
                        DropReason::BadTag
                    }
                    _ => DropReason::Malformed,
                };
                table.count_drop(why);
                let what = format!("datagram of {} bytes ({e})", datagram.len());
                return (Handled::Dropped { why, what }, None);
            }
        };
        match message {
            Message::Report(report) => {
                let what = format!(
                    "report from {} (sequence {})",
                    report.alternate, report.sequence
                );
                let alternate = report.alternate.clone();
                match table.handle_report(now, report) {
                    Ok(()) => (Handled::Report { alternate }, None),
                    Err(why) => (Handled::Dropped { why, what }, None),
                }
            }
            Message::Mark(mark) => {
                let (alternate, state) = (mark.alternate.clone(), mark.state);
                match table.handle_mark(now_unix_ms, mark) {
                    Ok(()) => (Handled::Marked { alternate, state }, None),
                    Err(why) => {
                        let what = format!("mark of {alternate} as {state}");
                        (Handled::Dropped { why, what }, None)
                    }
                }
            }
            Message::StatusRequest(request) => {
                let fresh = within_clock_skew(now_unix_ms, request.unix_ms);
                if !fresh || !self.may_answer(now_unix_ms, request.nonce, from) {
                    table.count_drop(DropReason::Replayed);
                    let what = "status request".to_string();
                    let why = DropReason::Replayed;
                    return (Handled::Dropped { why, what }, None);
                }
                let answer = StatusAnswer {
                    nonce: request.nonce,
                    rows: table.status(now),
                    dropped: table.dropped(),
                    bad_tag_from: self.bad_tag.map(|(a, _)| a),
                    bad_tag_age_ms: self.bad_tag.map_or(0, |(_, at)| {
                        now.saturating_duration_since(at).as_millis() as u64
                    }),
                };
                match encode(&Message::StatusAnswer(answer), &self.key) {
                    Ok(bytes) => (Handled::Answered, Some(bytes)),
                    Err(e) => (
                        Handled::Dropped {
                            why: DropReason::Malformed,
                            what: format!("status answer that cannot be encoded ({e})"),
                        },
                        None,
                    ),
                }
            }
            Message::StatusAnswer(_) => (Handled::Ignored, None),
        }
    }

    /// Whether a status request with `nonce` from `from` may be answered, remembering it.
    fn may_answer(&mut self, now_unix_ms: u64, nonce: u64, from: SocketAddr) -> bool {
        while let Some(&(at, old)) = self.answered_order.front() {
            if now_unix_ms.saturating_sub(at) <= 2 * CLOCK_SKEW_MS {
                break;
            }
            self.answered_order.pop_front();
            self.answered.remove(&old);
        }
        let full = self.answered.len() >= MAX_ANSWERED;
        match self.answered.get_mut(&nonce) {
            Some((first, count)) if *first == from && *count < MAX_ANSWERS_PER_NONCE => {
                *count += 1;
                true
            }
            Some(_) => false,
            None if full => false,
            None => {
                self.answered.insert(nonce, (from, 1));
                self.answered_order.push_back((now_unix_ms, nonce));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Policy;
    use crate::report::wire::tests::{key, report};
    use crate::report::wire::StatusRequest;

    const CLOCK: u64 = 1_764_500_000_000;

    fn endpoint() -> (ReportEndpoint, Table, Instant) {
        (
            ReportEndpoint::new(key()),
            Table::new(Policy::default()),
            Instant::now(),
        )
    }

    fn ask(nonce: u64, unix_ms: u64) -> Vec<u8> {
        encode(
            &Message::StatusRequest(StatusRequest { nonce, unix_ms }),
            &key(),
        )
        .unwrap()
    }

    #[test]
    fn datagrams_update_the_table_and_status_answers() {
        let (mut ep, mut table, now) = endpoint();
        let from: SocketAddr = "127.0.0.11:5000".parse().unwrap();
        let intruder: SocketAddr = "10.0.0.66:4000".parse().unwrap();
        let signed = encode(&Message::Report(report("alt1", 1)), &key()).unwrap();
        let mut handle = |from, d: &[u8]| ep.handle(&mut table, now, CLOCK, from, d);
        assert_eq!(
            handle(from, &signed),
            (
                Handled::Report {
                    alternate: "alt1".into()
                },
                None
            )
        );
        // A replay and a forgery change nothing but the counters.
        assert!(matches!(
            handle(from, &signed),
            (
                Handled::Dropped {
                    why: DropReason::Replayed,
                    ..
                },
                None
            )
        ));
        let mut forged = encode(&Message::Report(report("evil", 2)), &key()).unwrap();
        forged[5] ^= 1;
        assert!(matches!(
            handle(intruder, &forged),
            (
                Handled::Dropped {
                    why: DropReason::BadTag,
                    ..
                },
                None
            )
        ));
        assert!(matches!(
            handle(from, b"junk"),
            (
                Handled::Dropped {
                    why: DropReason::Malformed,
                    ..
                },
                None
            )
        ));
        let (what, reply) = handle(from, &ask(42, CLOCK));
        assert_eq!(what, Handled::Answered);
        let Message::StatusAnswer(answer) = decode(&reply.unwrap(), &key()).unwrap() else {
            panic!("not an answer")
        };
        assert_eq!(answer.nonce, 42);
        assert_eq!(answer.rows.len(), 1);
        assert_eq!(answer.rows[0].report.alternate, "alt1");
        assert_eq!(answer.dropped, [1, 1, 0, 1]);
        assert_eq!(
            answer.bad_tag_from,
            Some(intruder),
            "who sends with a wrong key"
        );
        let (what, reply) = handle(from, &ask(43, CLOCK - 120_000));
        assert!(reply.is_none(), "old requests are not answered: {what:?}");
    }

    #[test]
    fn a_status_request_is_answered_only_to_its_first_sender_a_few_times() {
        let (mut ep, mut table, now) = endpoint();
        let asker: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let victim: SocketAddr = "10.0.0.99:53".parse().unwrap();
        let request = ask(7, CLOCK);
        let mut answers = |from, at| ep.handle(&mut table, now, at, from, &request).1.is_some();
        assert!(answers(asker, CLOCK));
        assert!(
            !answers(victim, CLOCK + 10),
            "a copy from elsewhere is not reflected"
        );
        assert!(answers(asker, CLOCK + 500), "a retry after a lost answer");
        assert!(answers(asker, CLOCK + 1000));
        assert!(!answers(asker, CLOCK + 1500), "but not a flood");
        assert!(!answers(asker, CLOCK + 59_000));
        assert!(!answers(victim, CLOCK + 61_000), "and never once it is old");
        assert_eq!(table.dropped()[DropReason::Replayed as usize], 4);
    }
}
