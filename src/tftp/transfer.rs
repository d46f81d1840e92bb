//! The server side of one read transfer, sans-IO (quinn-proto style).
//!
//! Drive it with [`Transfer::handle_datagram`] and [`Transfer::handle_timeout`], take datagrams
//! out with [`Transfer::poll_transmit`] until it returns `None`, and sleep until
//! [`Transfer::poll_timeout`]. Time is always passed in; the bytes come through [`ReadAt`].
//! Given a large buffer, a poll writes a batch of consecutive DATA packets for one system
//! call; what the socket did not take goes back with [`Transfer::requeue_unsent`].
//!
//! Windows (RFC 7440): an RFC 7440 client ACKs the last block of every `windowsize` blocks it
//! has in sequence since its previous ACK, and the last block of the file. So the server's
//! window always ends `windowsize` blocks after the last ACK it received, and:
//! - an ACK of the window's last block opens the next window;
//! - an ACK of an earlier block that was sent (a client saw a gap, or a duplicated or late
//!   block: the two look the same) *slides* the window: the client will now ACK `windowsize`
//!   blocks after it, so the new blocks up to there are sent, and what is in flight is not sent
//!   again yet, and new blocks wait a round trip: a client that drops blocks arriving out of
//!   order (atftp) reports a swapped pair with ACKs of the blocks before and after the first,
//!   and that pair sends the window back at once. A client that really lost a block repeats
//!   its ACK or stays silent; the timer covers both;
//! - a repeated ACK of the block last acknowledged, while later blocks are out, reports a gap
//!   there: the window goes back to it at once. Only outside a recovery: a repeated ACK of a
//!   block at or below the highest block sent when the window last went back may be the
//!   client's answer to our own resends, and acting on it would resend every window twice
//!   (the Sorcerer's Apprentice bug of RFC 1123 4.2.3.1, in window form). In lock-step a
//!   repeated ACK never resends anything (RFC 1123).
//!
//! Congestion: a congestion window of `cwnd` blocks (at most `windowsize`) starts small, grows
//! by the blocks acknowledged while below its threshold and by one block per window's worth of
//! blocks above it, is halved on a reported gap and restarts small on a timeout (AIMD, as TCP).
//! The client still ACKs only every `windowsize` blocks, so a congestion window smaller than that
//! is not a shorter window but a slower one: blocks go out at `cwnd` per smoothed round trip, in
//! bursts of at most 16. With the full window it is one burst per ACK, as before.
//!
//! Timers: the round trip is measured from the first send of a block to its ACK (and from the
//! OACK to ACK 0), never from a block sent twice (Karn); the retransmission
//! timeout is `srtt + 4·rttvar` (RFC 6298) within [`MIN_RTO`] and [`MAX_RTO`], doubled for every
//! timeout in a row. The transfer gives up after `timeout × (2^retries − 1)` without progress
//! (31 s with the defaults, as tftpd-hpa's 1, 3, 7, 15, 31 s), and after [`FIRST_ACK_LIMIT`] when
//! the client never answered at all, whatever its `timeout` option says.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::options::Negotiated;
use super::source::ReadAt;
use super::wire::{emit_data_header, ErrorCode, Packet, DATA_HEADER_LEN, MAX_OPTIONS_LEN};
use super::Transmit;

/// Room for the longest OACK or ERROR this side sends.
const CONTROL_PACKET_LEN: usize = 4 + MAX_OPTIONS_LEN + 64;

/// Smallest retransmission timeout, as Linux TCP's: on a fast LAN the round trip is tens of
/// microseconds, far below a busy host's scheduling hiccups, and a queue shared by many
/// transfers makes it jump by more than its variance predicts. With 20 ms, 20 transfers on
/// one 50 Mbit/s link timed out while their windows were still queued, resent them into the
/// full queue and spent half the link on resends (the storm lab's cold storm: 83 s instead of
/// 31 s); a gap the client reports is still resent at once.
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// Largest retransmission timeout computed from the round trip (before back-off).
pub const MAX_RTO: Duration = Duration::from_secs(10);
/// How long a transfer waits for the client's first ACK at most, whatever its `timeout` option
/// asks: a spoofed request must not hold a transfer slot for minutes.
pub const FIRST_ACK_LIMIT: Duration = Duration::from_secs(5);
/// Congestion window of a new transfer, in blocks.
const INITIAL_CWND: u32 = 4;
/// Smallest congestion window after a loss.
const MIN_CWND: u32 = 2;
/// Most blocks in one burst of a paced window: bursts of a large congestion window are split
/// (and spaced closer), so that a window never arrives at a bottleneck queue all at once.
const MAX_BURST: u32 = 8;
/// Batches whose first send is remembered for round-trip samples.
const FIRST_SENDS: usize = 64;
/// Round trip assumed for pacing until one is measured.
const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// Times the first window is resent before a client that never proved its address is given up.
const UNPROVEN_RETRIES: u32 = 2;
/// The block sent ahead of the first window until the client proves its address.
const PROBE_BLOCK: u64 = 3;

/// Retransmission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Retransmission timeout until the round trip is measured (a client's `timeout` option
    /// overrides it, up to [`FIRST_ACK_LIMIT`]), and the unit of the back-off limits.
    pub timeout: Duration,
    /// Back-off steps without progress before giving up: the transfer gives up after
    /// `timeout × (2^retries − 1)` of silence, and no resend waits longer than
    /// `timeout × 2^(retries − 1)`.
    pub retries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit {
            timeout: Duration::from_secs(1),
            retries: 5,
        }
    }
}

impl Retransmit {
    /// Silence after which a transfer gives up.
    pub fn silence_limit(&self) -> Duration {
        self.timeout
            .saturating_mul((1u32 << self.retries.min(16)) - 1)
    }

    /// Longest wait between two resends.
    fn max_interval(&self) -> Duration {
        self.timeout
            .saturating_mul(1u32 << self.retries.saturating_sub(1).min(16))
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR.
    ClientError {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No progress within the limits of [`Retransmit`] (or no first ACK within
    /// [`FIRST_ACK_LIMIT`]).
    TimedOut,
    /// Reading the file failed; the client was sent an ERROR.
    ReadFailed(String),
}

/// What a transfer has sent, for the load monitor. Datagrams count once the socket took them
/// (see [`Transfer::requeue_unsent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// DATA datagrams sent: first sends and resends.
    pub data_sent: u64,
    /// DATA datagrams that carried a block sent before: after a timeout or a reported gap,
    /// and the block sent ahead of the first window in single-port mode.
    pub data_retransmitted: u64,
    /// Times the congestion window was cut: a gap the client reported (a repeated ACK), or the
    /// first timeout after progress. Several losses in one window count once.
    pub loss_events: u64,
    /// Round trips measured from ACKs of DATA (blocks sent once), their sum in microseconds
    /// and the shortest (0: none yet): a round trip well above the shortest is time spent in a
    /// queue, which says the link is full even before it drops anything.
    pub rtt_samples: u64,
    /// Their sum, in microseconds.
    pub rtt_sum_us: u64,
    /// The shortest, in microseconds (0: none yet).
    pub rtt_min_us: u64,
    /// Times the retransmission timer expired and the OACK or window went again.
    pub timeouts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// OACK sent (or to send), waiting for ACK 0.
    Negotiating,
    /// Sending windows of DATA.
    Sending,
    /// Finished; the final ERROR (if any) may still be queued.
    Done(Outcome),
}

/// Round-trip estimate (RFC 6298).
#[derive(Debug, Clone, Copy, Default)]
struct RoundTrip {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Whether a window's ACK gave a sample (not only the OACK's).
    from_data: bool,
}

impl RoundTrip {
    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                self.rttvar = (self.rttvar * 3 + srtt.abs_diff(r)) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
    }

    /// The retransmission timeout; `initial` until a round trip has been measured.
    fn rto(&self, initial: Duration) -> Duration {
        match self.srtt {
            Some(srtt) => (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO),
            None => initial,
        }
    }

    /// The round trip that paces a congestion window smaller than the transfer's window: with
    /// the queueing delay in it, so that a growing queue slows the sending (`cwnd` blocks in
    /// flight, as TCP). A window's ACK cannot come later than the timeout, or the window would
    /// have been resent and given no sample; the OACK's can, when ACK 0 is lost and the one
    /// that arrives is the client's resend on its own timer (half a second or more): alone, it
    /// paces at most one burst per [`MIN_RTO`].
    fn pacing_interval(&self) -> Duration {
        let srtt = self.srtt.unwrap_or(DEFAULT_RTT);
        if self.from_data {
            srtt
        } else {
            srtt.min(MIN_RTO)
        }
    }
}

/// The congestion window, in blocks.
#[derive(Debug, Clone, Copy)]
struct Congestion {
    cwnd: u32,
    ssthresh: u32,
    /// Blocks acknowledged towards the next one-block increase above the threshold.
    avoidance: u32,
    /// The negotiated window: the ceiling.
    window: u32,
}

impl Congestion {
    fn new(window: u16) -> Self {
        let window = u32::from(window);
        Congestion {
            cwnd: INITIAL_CWND.min(window),
            ssthresh: window,
            avoidance: 0,
            window,
        }
    }

    fn on_ack(&mut self, blocks: u64) {
        let blocks = blocks.min(u64::from(self.window)) as u32;
        if self.cwnd < self.ssthresh {
            // Slow start: double per window acknowledged. (A paced window spans several round
            // trips, so TCP's "one more per block acknowledged" would jump to the full window
            // after one, however deep the queue ahead.)
            self.cwnd = (self.cwnd + blocks.min(self.cwnd)).min(self.ssthresh);
        } else if self.cwnd < self.window {
            self.avoidance += blocks;
            while self.avoidance >= self.cwnd && self.cwnd < self.window {
                self.avoidance -= self.cwnd;
                self.cwnd += 1;
            }
        }
    }

    fn on_loss(&mut self, timeout: bool) {
        self.ssthresh = (self.cwnd / 2).max(MIN_CWND).min(self.window);
        self.cwnd = if timeout {
            INITIAL_CWND.min(self.ssthresh)
        } else {
            self.ssthresh
        };
        self.avoidance = 0;
    }

    /// Blocks per burst, or `None` when the whole window goes out at once.
    fn burst(&self) -> Option<u32> {
        (self.cwnd < self.window).then_some(self.cwnd.min(MAX_BURST))
    }

    /// Time between two bursts: `cwnd` blocks per round trip.
    fn burst_interval(&self, round_trip: Duration) -> Duration {
        let burst = self.burst().unwrap_or(self.cwnd);
        round_trip * burst / self.cwnd.max(1)
    }
}

/// What sending has done so far: copied whole before a batch so that
/// [`Transfer::requeue_unsent`] can take back what the socket did not take.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Next block to send.
    next: u64,
    /// Highest block sent so far.
    max: u64,
    /// Blocks the current burst may still send (when the congestion window paces).
    burst_left: u32,
    /// When the next burst may start.
    burst_at: Option<Instant>,
    /// Retransmission timer, armed once the window is all sent.
    timer: Option<Instant>,
    /// Whether this try's probe went out (single-port, before the address is proven).
    probed: bool,
    /// A block the client reported missing, to resend alone before anything else.
    repair: Option<u64>,
    stats: TransferStats,
}

/// The DATA of the last transmit, for [`Transfer::requeue_unsent`].
#[derive(Debug, Clone, Copy)]
struct Batch {
    before: Sent,
    first: u64,
    count: u64,
    at: Instant,
    probe: bool,
}

/// One read transfer to one client.
#[derive(Debug)]
pub struct Transfer {
    peer: SocketAddr,
    options: Negotiated,
    retransmit: Retransmit,
    /// Retransmission timeout before a round trip is measured.
    initial_rto: Duration,
    size: u64,
    /// Blocks in the file: the last one is shorter than blksize, possibly empty.
    last_block: u64,
    state: State,
    /// Whether the OACK still has to be (re)sent.
    oack_pending: bool,
    /// When the OACK was sent, while it has been sent once only (a round-trip sample).
    oack_sent: Option<Instant>,
    /// An ERROR to send: to the peer when failing, or to a stranger (wrong TID).
    error_pending: Option<(SocketAddr, ErrorCode, &'static str)>,
    /// Highest block the client acknowledged (0 before any).
    acked: u64,
    /// Last block of the current window: where the client will ACK next.
    window_end: u64,
    /// Highest block sent when the window last went back: a repeated ACK of it may answer our
    /// own resends.
    recover: Option<u64>,
    /// The block acknowledged when the window last went back on a repeated ACK.
    went_back_at: Option<u64>,
    /// The block resent alone for a reported gap, until the ACK that answers it says whether
    /// the client kept the blocks after it.
    repairing: Option<u64>,
    /// The last ACK inside the window, and until when the window waits to see whether the
    /// client reports the next block missing too (see [`Transfer::handle_ack`]).
    settling: Option<(u64, Instant)>,
    sent: Sent,
    /// First sends of blocks, a batch at a time (first block, last block, when): an ACK of a
    /// block sent once is a round-trip sample.
    first_sends: VecDeque<(u64, u64, Instant)>,
    last_batch: Option<Batch>,
    congestion: Congestion,
    round_trip: RoundTrip,
    /// Timeouts in a row without progress.
    backoff: u32,
    /// When the transfer first sent anything.
    started: Option<Instant>,
    /// When the client last made progress (or the transfer started).
    progress_at: Option<Instant>,
    /// Whether the client answered at all.
    answered: bool,
    /// Whether the client acknowledged DATA (or never needed to: see
    /// [`Transfer::limit_until_proven`]).
    proven: bool,
    /// Tries of the first window before the address was proven.
    unproven_tries: u32,
}

impl Transfer {
    /// Starts a transfer of `size` bytes to `peer` with negotiated `options`.
    pub fn new(peer: SocketAddr, options: Negotiated, retransmit: Retransmit, size: u64) -> Self {
        let initial_rto = options
            .timeout
            .unwrap_or(retransmit.timeout)
            .min(FIRST_ACK_LIMIT);
        let oack = !options.oack.as_options().is_empty();
        let congestion = Congestion::new(options.windowsize);
        let mut t = Transfer {
            peer,
            last_block: size / u64::from(options.blksize) + 1,
            options,
            retransmit,
            initial_rto,
            size,
            state: if oack {
                State::Negotiating
            } else {
                State::Sending
            },
            oack_pending: oack,
            oack_sent: None,
            error_pending: None,
            acked: 0,
            window_end: 0,
            recover: None,
            went_back_at: None,
            repairing: None,
            settling: None,
            sent: Sent {
                next: 1,
                max: 0,
                burst_left: congestion.burst().unwrap_or(u32::MAX),
                burst_at: None,
                timer: None,
                probed: false,
                repair: None,
                stats: TransferStats::default(),
            },
            first_sends: VecDeque::new(),
            last_batch: None,
            congestion,
            round_trip: RoundTrip::default(),
            backoff: 0,
            started: None,
            progress_at: None,
            answered: false,
            proven: true,
            unproven_tries: 0,
        };
        t.window_end = t.window_after(0);
        t
    }

    /// Sends a first window of one block (and block 3 ahead of it, which makes an RFC 7440
    /// client report the gap, so ACK 1 at once) until the client acknowledges DATA, and gives
    /// up after two resends of it. For single-port mode, where a
    /// request and ACK 0 sent blind with a forged source would otherwise draw a whole window
    /// and its resends onto the forged address.
    pub fn limit_until_proven(mut self) -> Self {
        self.proven = false;
        self
    }

    /// The client's address and port (its transfer ID).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What the transfer has sent so far.
    pub fn stats(&self) -> TransferStats {
        self.sent.stats
    }

    /// Length of a buffer that takes `datagrams` DATA packets of the negotiated block size at
    /// once, and the OACK or an ERROR, whichever is longer.
    pub fn batch_buffer_len(&self, datagrams: usize) -> usize {
        (self.segment_len() * datagrams.max(1)).max(CONTROL_PACKET_LEN)
    }

    /// Length of one full DATA packet.
    pub fn segment_len(&self) -> usize {
        usize::from(self.options.blksize) + DATA_HEADER_LEN
    }

    /// Bytes the client has acknowledged so far.
    pub fn bytes_acked(&self) -> u64 {
        (self.acked * u64::from(self.options.blksize)).min(self.size)
    }

    /// The outcome, once finished and with nothing left to send.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Done(outcome) if self.error_pending.is_none() => Some(outcome),
            _ => None,
        }
    }

    /// Handles a datagram that arrived from `from` at `now`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.last_batch = None;
        if from != self.peer {
            // RFC 1350: a packet with the wrong source TID gets ERROR 5 and the transfer goes
            // on undisturbed. One queued reply at most, so strangers cannot make us flood.
            if self.error_pending.is_none() {
                self.error_pending = Some((from, ErrorCode::UnknownTid, "unknown transfer ID"));
            }
            return;
        }
        if matches!(self.state, State::Done(_)) {
            return;
        }
        match Packet::parse(datagram) {
            Ok(Packet::Ack { block }) => self.handle_ack(now, block),
            Ok(Packet::Error { code, message }) => {
                self.finish(Outcome::ClientError {
                    code,
                    message: message.to_string(),
                });
            }
            // A repeated request (the client resent it before our first reply arrived), stray
            // DATA or garbage: not an ACK, so nothing to act on.
            Ok(_) | Err(_) => {}
        }
    }

    fn handle_ack(&mut self, now: Instant, block: u16) {
        match self.state {
            State::Negotiating if block == 0 => {
                if let Some(at) = self.oack_sent {
                    self.round_trip.sample(now - at);
                }
                self.oack_pending = false;
                self.state = State::Sending;
                self.backoff = 0; // DATA starts afresh
                self.progress(now);
                self.sent.timer = None;
            }
            State::Sending => {
                // Blocks wrap at 65536; map the 16-bit number onto what was sent so far.
                let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                if ahead == 0 {
                    self.answered = true;
                    return self.repeated_ack(now);
                }
                if ahead > self.sent.max - self.acked {
                    return; // older than what is acknowledged, or never sent: ignored
                }
                let block = self.acked + ahead;
                let sent_once = self.recover.is_none_or(|r| block > r);
                self.sample_round_trip(now, block, sent_once);
                // The answer to a repair ends a loss recovery: no growth from it (as TCP).
                let repaired = self.repairing.take();
                if sent_once && repaired.is_none() {
                    self.congestion.on_ack(ahead);
                }
                self.acked = block;
                self.proven = true;
                self.progress(now);
                // Karn: the backed-off timeout holds until a block sent once is acknowledged.
                // An ACK of resent blocks may answer the first send, late behind a queue: had
                // it reset the back-off, the timeout, still short of that queue's delay, would
                // fire again and again, each time resending a window into the same queue.
                if sent_once {
                    self.backoff = 0;
                }
                if block == self.last_block {
                    self.finish(Outcome::Complete);
                    return;
                }
                if repaired == Some(block) && block < self.sent.max {
                    // The repaired block and nothing after it: this client drops what
                    // arrives past a gap (atftp, UEFI), so everything after it goes again.
                    self.window_end = self.window_after(block);
                    self.go_back();
                    return;
                }
                // The client ACKs next a window after this block, wherever this block was in
                // the window: send on from what was sent, never again what is in flight.
                let inside = block < self.window_end;
                self.window_end = self.window_after(block);
                self.sent.next = self.sent.next.max(block + 1);
                self.new_burst();
                if inside {
                    self.settle(now, block);
                } else {
                    self.settling = None;
                }
                // The timer starts once the window is all sent, which it may be already.
                self.sent.timer =
                    (self.sent.next > self.send_limit()).then(|| self.retransmit_deadline(now));
            }
            _ => {}
        }
    }

    /// Takes the time since `block` was first sent as a round trip (Karn: only if it was sent
    /// once). An ACK of a window's last block comes at once; one inside the window comes when a
    /// later block arrives, a little later. A sample longer than the timeout is not the path's
    /// (the window would have been resent): the client's own timer made that ACK.
    fn sample_round_trip(&mut self, now: Instant, block: u64, sent_once: bool) {
        let at = self
            .first_sends
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&block))
            .map(|(_, _, at)| *at);
        while self
            .first_sends
            .front()
            .is_some_and(|(_, last, _)| *last <= block)
        {
            self.first_sends.pop_front();
        }
        let sample = match at {
            Some(at) if sent_once => now.saturating_duration_since(at),
            _ => return,
        };
        // Taken however long it is: a queue that grew past the timeout must raise the timeout
        // (had the timer fired, the block would have been resent and given no sample).
        self.round_trip.sample(sample);
        self.round_trip.from_data = true;
        let us = (sample.as_micros().min(u128::from(u64::MAX)) as u64).max(1);
        self.sent.stats.rtt_samples += 1;
        self.sent.stats.rtt_sum_us += us;
        if self.sent.stats.rtt_min_us == 0 || us < self.sent.stats.rtt_min_us {
            self.sent.stats.rtt_min_us = us;
        }
    }

    /// An ACK of `block` inside the window: a duplicated or late block, or a gap. New blocks
    /// wait a round trip: a client that drops what arrives out of order (atftp) answers two
    /// blocks swapped by the network with ACKs of the block before them and of the first one,
    /// having dropped the second; that pair sends the window back at once, before blocks it
    /// would drop go out.
    fn settle(&mut self, now: Instant, block: u64) {
        if let Some((before, until)) = self.settling.take() {
            if block == before + 1 && now < until {
                return self.gap_reported(now);
            }
        }
        let until = now + self.round_trip.pacing_interval();
        self.settling = Some((block, until));
        self.sent.burst_at = Some(until);
    }

    /// A repeated ACK of the block last acknowledged: a gap after it, unless it may be the
    /// client's answer to our resends (it has all we resent).
    fn repeated_ack(&mut self, now: Instant) {
        let outstanding = self.sent.max > self.acked;
        let echo = self.recover == Some(self.acked);
        if self.options.windowsize > 1 && outstanding && !echo {
            self.gap_reported(now);
        }
    }

    /// The client misses the block after the one it acknowledged: that block goes again at
    /// once, alone, and sending goes on from where it was; the client's answer to it says
    /// whether it kept what followed (then nothing is sent twice) or not (then the rest of the
    /// window goes again, see [`Transfer::handle_ack`]); new blocks wait for that answer, a
    /// round trip at most. Resending the whole window at once cost a window per loss with a
    /// client that keeps blocks past a gap, and on a lossy link with a deep queue those
    /// resends filled the queue and made more losses (NewReno's partial ACK, in window form).
    /// Once per block.
    fn gap_reported(&mut self, now: Instant) {
        if self.went_back_at == Some(self.acked) {
            return;
        }
        self.went_back_at = Some(self.acked);
        self.settling = None;
        self.sent.stats.loss_events += 1;
        self.congestion.on_loss(false);
        // Only the repaired block is sent twice: ACKs of later blocks still time the path.
        self.recover = Some(self.acked + 1);
        self.repairing = Some(self.acked + 1);
        self.sent.repair = Some(self.acked + 1);
        self.sent.timer = None;
        self.new_burst();
        self.sent.burst_at = Some(now + self.round_trip.pacing_interval());
    }

    /// Client progress at `now`: the silence count starts again. The back-off ends only where a
    /// fresh round trip is known (ACK 0, or an ACK of a block sent once: Karn).
    fn progress(&mut self, now: Instant) {
        self.answered = true;
        self.progress_at = Some(now);
    }

    fn window_after(&self, block: u64) -> u64 {
        (block + u64::from(self.options.windowsize)).min(self.last_block)
    }

    /// Sends the window again from the first block not acknowledged.
    fn go_back(&mut self) {
        self.recover = Some(self.sent.max);
        self.repairing = None;
        self.sent.repair = None;
        self.sent.next = self.acked + 1;
        self.first_sends.clear();
        self.sent.timer = None;
        self.sent.probed = false;
        self.new_burst();
        if !self.proven {
            self.unproven_tries += 1;
        }
    }

    fn new_burst(&mut self) {
        self.sent.burst_left = self.congestion.burst().unwrap_or(u32::MAX);
        self.sent.burst_at = None;
    }

    fn finish(&mut self, outcome: Outcome) {
        self.state = State::Done(outcome);
        self.sent.timer = None;
    }

    /// When the retransmission timer armed at `now` expires: the back-off, the silence limit
    /// and the first-ACK limit in one instant.
    fn retransmit_deadline(&self, now: Instant) -> Instant {
        let rto = self.round_trip.rto(self.initial_rto);
        let interval = rto
            .saturating_mul(1u32 << self.backoff.min(16))
            .min(self.retransmit.max_interval());
        let mut at = now + interval;
        if let Some(since) = self.progress_at {
            at = at.min(since + self.retransmit.silence_limit());
        }
        if let (false, Some(started)) = (self.answered, self.started) {
            at = at.min(started + FIRST_ACK_LIMIT);
        }
        at
    }

    /// Handles the passing of time: resends the OACK or the current window when its timer has
    /// expired, and gives up at the limits.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_batch = None;
        match self.sent.timer {
            Some(at) if now >= at => {}
            _ => return,
        }
        self.sent.timer = None;
        let silent_too_long = self
            .progress_at
            .is_some_and(|since| now >= since + self.retransmit.silence_limit());
        let never_answered = !self.answered
            && self
                .started
                .is_some_and(|started| now >= started + FIRST_ACK_LIMIT);
        let unproven_too_long = !self.proven && self.unproven_tries >= UNPROVEN_RETRIES;
        if silent_too_long || never_answered || unproven_too_long {
            self.finish(Outcome::TimedOut);
            return;
        }
        self.backoff += 1;
        self.sent.stats.timeouts += 1;
        match self.state {
            State::Negotiating => {
                self.oack_pending = true;
                self.oack_sent = None;
            }
            State::Sending => {
                if self.answered && self.backoff == 1 {
                    self.sent.stats.loss_events += 1;
                    self.congestion.on_loss(true);
                }
                self.go_back();
            }
            State::Done(_) => {}
        }
    }

    /// When [`Transfer::handle_timeout`] next has work to do, or when the next burst of a paced
    /// window may go.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let burst = self.sent.burst_at.filter(|_| self.has_data_to_send());
        match (self.sent.timer, burst) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The last block that may be sent now.
    fn send_limit(&self) -> u64 {
        match self.probe_block() {
            Some(_) if !self.proven => 1,
            _ => self.window_end,
        }
    }

    /// The block sent ahead of the first window while the address is unproven, if the file and
    /// the window are large enough for one (otherwise the whole first window is at most three
    /// blocks anyway).
    fn probe_block(&self) -> Option<u64> {
        (u64::from(self.options.windowsize) >= PROBE_BLOCK && self.last_block > PROBE_BLOCK)
            .then_some(PROBE_BLOCK)
    }

    fn probe_due(&self) -> bool {
        !self.proven && !self.sent.probed && self.sent.next > 1 && self.probe_block().is_some()
    }

    fn has_data_to_send(&self) -> bool {
        self.state == State::Sending
            && (self.sent.next <= self.send_limit()
                || self.probe_due()
                || self.sent.repair.is_some())
    }

    /// Writes the next datagram to send into `buf`, or up to `max_datagrams` DATA packets of
    /// the window, as many as fit (quinn-proto's batching). [`Transfer::batch_buffer_len`]
    /// sizes the buffer; `batch_buffer_len(1)` is the least that always works.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
        data: &(impl ReadAt + ?Sized),
    ) -> Option<Transmit> {
        self.last_batch = None;
        if let Some((to, code, message)) = self.error_pending.take() {
            let len = Packet::Error { code, message }.emit(buf).ok()?;
            return Some(Transmit::single(to, len));
        }
        match self.state {
            State::Negotiating if self.oack_pending => {
                self.oack_pending = false;
                self.start(now);
                if self.backoff == 0 {
                    self.oack_sent = Some(now);
                }
                self.sent.timer = Some(self.retransmit_deadline(now));
                let len = Packet::OptionAck(self.options.oack.as_options())
                    .emit(buf)
                    .ok()?;
                Some(Transmit::single(self.peer, len))
            }
            State::Sending if self.has_data_to_send() => {
                if let Some(block) = self.sent.repair {
                    // Not paced: one block, in place of one the network lost.
                    self.start(now);
                    let next = self.sent.next;
                    let tx = self.send_blocks(now, block, 1, false, buf, data);
                    self.sent.repair = None;
                    self.sent.next = next;
                    if next > self.send_limit() {
                        self.sent.timer = Some(self.retransmit_deadline(now));
                    }
                    return tx;
                }
                if let Some(at) = self.sent.burst_at {
                    if now < at {
                        return None;
                    }
                    self.new_burst();
                }
                self.start(now);
                if self.sent.next <= self.send_limit() {
                    let count = (self.send_limit() + 1 - self.sent.next)
                        .min(max_datagrams.max(1) as u64)
                        .min(u64::from(self.sent.burst_left));
                    self.send_blocks(now, self.sent.next, count, false, buf, data)
                } else {
                    self.send_blocks(now, PROBE_BLOCK, 1, true, buf, data)
                }
            }
            _ => None,
        }
    }

    fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        self.progress_at.get_or_insert(now);
    }

    /// Writes DATA packets for up to `count` blocks from `first`, as many as fit in `buf`, back
    /// to back, and records them as sent.
    ///
    /// The payloads of consecutive blocks are consecutive in the file, so they are read with one
    /// `read_at` into the buffer just past the room their headers need, then moved down into
    /// place (each to a lower address, in block order, so none overwrites one still unmoved)
    /// with the headers written into the gaps. One read per batch instead of one per block.
    fn send_blocks(
        &mut self,
        now: Instant,
        first: u64,
        count: u64,
        probe: bool,
        buf: &mut [u8],
        data: &(impl ReadAt + ?Sized),
    ) -> Option<Transmit> {
        let blksize = usize::from(self.options.blksize);
        let segment = self.segment_len();
        let fit = buf.len() / segment;
        if fit == 0 {
            return self.fail_read(buf, "send buffer smaller than blksize".into());
        }
        let count = count.min(fit as u64);
        let offset = (first - 1) * blksize as u64;
        let payload = (count * blksize as u64).min(self.size - offset) as usize;
        let headers = count as usize * DATA_HEADER_LEN;
        match data.read_at(&mut buf[headers..headers + payload], offset) {
            Ok(n) if n == payload => {}
            Ok(_) => return self.fail_read(buf, "file shrank while being served".into()),
            Err(e) => return self.fail_read(buf, e.to_string()),
        }
        for i in 0..count as usize {
            let from = headers + i * blksize;
            let len = blksize.min(payload - i * blksize);
            let at = i * segment;
            buf.copy_within(from..from + len, at + DATA_HEADER_LEN);
            emit_data_header(&mut buf[at..], (first + i as u64) as u16).ok()?;
        }
        self.last_batch = Some(Batch {
            before: self.sent,
            first,
            count,
            at: now,
            probe,
        });
        self.record_sent(now, first, count, probe);
        Some(Transmit {
            to: self.peer,
            len: headers + payload,
            segment_len: segment,
        })
    }

    /// Books `count` blocks from `first` as sent at `now`.
    fn record_sent(&mut self, now: Instant, first: u64, count: u64, probe: bool) {
        let last = first + count - 1;
        let stats = &mut self.sent.stats;
        stats.data_sent += count;
        if probe {
            self.sent.probed = true;
            stats.data_retransmitted += count;
            return;
        }
        stats.data_retransmitted += (self.sent.max.min(last) + 1).saturating_sub(first);
        if last > self.sent.max {
            if self.first_sends.len() == FIRST_SENDS {
                self.first_sends.pop_front();
            }
            self.first_sends.push_back((self.sent.max + 1, last, now));
            self.sent.max = last;
        }
        self.sent.next = last + 1;
        if self.sent.burst_left != u32::MAX {
            self.sent.burst_left = self.sent.burst_left.saturating_sub(count as u32);
        }
        if self.sent.next > self.send_limit() {
            self.sent.timer.get_or_insert(self.retransmit_deadline(now));
        } else if self.sent.burst_left == 0 {
            let interval = self
                .congestion
                .burst_interval(self.round_trip.pacing_interval());
            self.sent.burst_at = Some(now + interval);
        }
    }

    /// Takes back the DATA packets of the last transmit past its first `sent`: the socket
    /// would block, or the pacer holds them, so they are sent again by the next polls instead of
    /// waiting for the retransmission timer. Only right after that transmit: once anything else
    /// has been polled or handled, it does nothing.
    /// Returns whether it did (false for control packets, which the timer resends).
    pub fn requeue_unsent(&mut self, sent: usize) -> bool {
        let Some(batch) = self.last_batch.take() else {
            return false;
        };
        let sent = (sent as u64).min(batch.count);
        if sent < batch.count && self.state == State::Sending {
            if !batch.probe && batch.first + batch.count - 1 > batch.before.max {
                self.first_sends.pop_back();
            }
            self.sent = batch.before;
            if sent > 0 {
                self.record_sent(batch.at, batch.first, sent, batch.probe);
            }
        }
        true
    }

    fn fail_read(&mut self, buf: &mut [u8], why: String) -> Option<Transmit> {
        self.finish(Outcome::ReadFailed(why));
        let len = Packet::Error {
            code: ErrorCode::NotDefined,
            message: "read error",
        }
        .emit(buf)
        .ok()?;
        Some(Transmit::single(self.peer, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::options::{negotiate, Limits};
    use crate::tftp::wire::Options;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        40000,
    ));
    const STRANGER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        40001,
    ));

    /// A transfer plus a fake clock and the file it serves.
    struct Harness {
        t: Transfer,
        now: Instant,
        data: Vec<u8>,
        /// DATA packets the send buffer has room for.
        batch: usize,
    }

    #[derive(Debug, PartialEq)]
    enum Sent {
        Oack(Vec<(String, String)>),
        Data(u16, usize),
        Error(SocketAddr, u16),
    }

    impl Harness {
        fn new(size: usize, blksize: u16, windowsize: u16, oack: bool) -> Self {
            let mut opts = crate::tftp::wire::OptionsBuf::default();
            if oack {
                opts.push("blksize", u64::from(blksize));
                opts.push("windowsize", u64::from(windowsize));
            }
            let negotiated = if oack {
                negotiate(
                    opts.as_options(),
                    Limits {
                        max_blksize: 65464,
                        max_windowsize: 65535,
                    },
                    size as u64,
                )
                .unwrap()
            } else {
                negotiate(Options::default(), Limits::default(), size as u64).unwrap()
            };
            let data = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let now = Instant::now();
            Harness {
                t: Transfer::new(PEER, negotiated, Retransmit::default(), size as u64),
                now,
                data,
                batch: 1,
            }
        }

        fn batched(mut self, datagrams: usize) -> Self {
            self.batch = datagrams;
            self
        }

        /// Sends the OACK and answers it `rtt` later: the first round-trip sample.
        fn negotiate(&mut self, rtt: Duration) {
            assert!(matches!(&self.drain()[..], [Sent::Oack(_)]));
            self.now += rtt;
            self.ack(0);
        }

        /// Blocks sent now, and after each pacing wait, until the window is all sent.
        fn drain_window(&mut self) -> Vec<u16> {
            let mut blocks = Harness::blocks(&self.drain());
            while let Some(at) = self.t.sent.burst_at.filter(|_| self.t.has_data_to_send()) {
                self.now = self.now.max(at);
                blocks.extend(Harness::blocks(&self.drain()));
            }
            blocks
        }

        /// Everything the transfer wants to send now, checking DATA payloads against the file.
        fn drain(&mut self) -> Vec<Sent> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; self.t.batch_buffer_len(self.batch)];
            while let Some(tx) =
                self.t
                    .poll_transmit(self.now, self.batch, &mut buf, self.data.as_slice())
            {
                assert!(tx.count() <= self.batch);
                for datagram in tx.datagrams(&buf) {
                    out.push(self.parse(tx.to, datagram));
                }
            }
            out
        }

        fn parse(&self, to: SocketAddr, datagram: &[u8]) -> Sent {
            match Packet::parse(datagram).unwrap() {
                Packet::OptionAck(o) => Sent::Oack(
                    o.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                Packet::Data { block, data } => {
                    assert_eq!(to, PEER);
                    let blksize = usize::from(self.t.options.blksize);
                    // Blocks wrap, so find the index from the bytes acknowledged so far.
                    let base = self.t.acked as usize * blksize;
                    let index = (0..)
                        .map(|k| (self.t.acked as usize + k, base + k * blksize))
                        .find(|(i, _)| (i + 1) as u16 == block)
                        .map(|(_, at)| at)
                        .unwrap();
                    assert_eq!(data, &self.data[index..index + data.len()], "block {block}");
                    Sent::Data(block, data.len())
                }
                Packet::Error { code, .. } => Sent::Error(to, code.code()),
                other => panic!("unexpected {other:?}"),
            }
        }

        fn ack(&mut self, block: u16) {
            self.t
                .handle_datagram(self.now, PEER, &[0, 4, (block >> 8) as u8, block as u8]);
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.t.handle_timeout(self.now);
        }

        fn blocks(sent: &[Sent]) -> Vec<u16> {
            sent.iter()
                .map(|s| match s {
                    Sent::Data(b, _) => *b,
                    other => panic!("not data: {other:?}"),
                })
                .collect()
        }
    }

    #[test]
    fn lockstep_without_options_ends_with_a_short_block() {
        let mut h = Harness::new(1024, 512, 1, false);
        assert_eq!(h.drain(), [Sent::Data(1, 512)]);
        h.ack(1);
        assert_eq!(h.drain(), [Sent::Data(2, 512)]);
        h.ack(2);
        // 1024 is a multiple of 512: an empty block marks the end.
        assert_eq!(h.drain(), [Sent::Data(3, 0)]);
        assert_eq!(h.t.outcome(), None);
        h.ack(3);
        assert_eq!(h.t.outcome(), Some(&Outcome::Complete));
        assert_eq!(h.t.bytes_acked(), 1024);
    }

    #[test]
    fn oack_then_windows() {
        let mut h = Harness::new(10_000, 1000, 4, true);
        let first = h.drain();
        assert!(matches!(&first[..], [Sent::Oack(o)] if o.len() == 2));
        assert!(h.drain().is_empty(), "nothing more before ACK 0");
        h.ack(0);
        assert_eq!(Harness::blocks(&h.drain()), [1, 2, 3, 4]);
        h.ack(4);
        assert_eq!(Harness::blocks(&h.drain()), [5, 6, 7, 8]);
        h.ack(8);
        let last = h.drain();
        assert_eq!(
            last,
            [Sent::Data(9, 1000), Sent::Data(10, 1000), Sent::Data(11, 0)]
        );
        h.ack(11);
        assert_eq!(h.t.outcome(), Some(&Outcome::Complete));
    }

    /// Runs a whole transfer, ACKing every window's last block; returns the blocks per poll.
    fn run_to_completion(h: &mut Harness) -> Vec<Sent> {
        let mut all = h.drain();
        if matches!(all.first(), Some(Sent::Oack(_))) {
            h.ack(0);
        }
        loop {
            let sent = h.drain();
            let Some(Sent::Data(last, _)) = sent.last() else {
                break;
            };
            h.ack(*last);
            all.extend(sent);
        }
        assert_eq!(h.t.outcome(), Some(&Outcome::Complete));
        all
    }

    #[test]
    fn batches_carry_the_same_datagrams_as_single_sends() {
        // Sizes around block and window boundaries, with and without an empty last block.
        for (size, blksize, windowsize) in [
            (0, 512, 16),
            (512, 512, 1),
            (10_000, 1000, 4),
            (10_240, 512, 16),
            (100_003, 1468, 64),
            (1_000_000, 8192, 64),
            (70_000 * 8, 8, 64),
        ] {
            let single = run_to_completion(&mut Harness::new(size, blksize, windowsize, true));
            for batch in [2, 7, 16, 64] {
                let mut h = Harness::new(size, blksize, windowsize, true).batched(batch);
                assert_eq!(
                    run_to_completion(&mut h),
                    single,
                    "{size} bytes, blksize {blksize}, windowsize {windowsize}, batch {batch}"
                );
            }
        }
    }

    #[test]
    fn a_batch_stops_at_the_window_end_and_arms_the_timer() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.ack(0);
        let mut buf = vec![0u8; h.t.batch_buffer_len(4)];
        let tx =
            h.t.poll_transmit(h.now, 3, &mut buf, h.data.as_slice())
                .unwrap();
        assert_eq!((tx.count(), tx.segment_len, tx.len), (3, 1004, 3012));
        assert_eq!(h.t.poll_timeout(), None, "window not finished yet");
        let tx =
            h.t.poll_transmit(h.now, 3, &mut buf, h.data.as_slice())
                .unwrap();
        assert_eq!(tx.count(), 1, "block 4 ends the window");
        // The round trip (OACK to ACK 0) took no time: the floor.
        assert_eq!(h.t.poll_timeout(), Some(h.now + MIN_RTO));
        assert!(h
            .t
            .poll_transmit(h.now, 3, &mut buf, h.data.as_slice())
            .is_none());
    }

    #[test]
    fn unsent_datagrams_are_sent_again_by_the_next_poll() {
        let mut h = Harness::new(100_000, 1000, 8, true).batched(8);
        h.drain();
        h.ack(0);
        // One whole window first: the congestion window grows to the full 8.
        assert_eq!(h.drain_window(), (1..=8).collect::<Vec<_>>());
        h.ack(8);
        let mut buf = vec![0u8; h.t.batch_buffer_len(8)];
        let tx =
            h.t.poll_transmit(h.now, 8, &mut buf, h.data.as_slice())
                .unwrap();
        assert_eq!(tx.count(), 8);
        assert!(h.t.poll_timeout().is_some());
        assert_eq!(h.t.stats().data_sent, 16);
        // The socket took three datagrams, then would block.
        h.t.requeue_unsent(3);
        assert_eq!(h.t.poll_timeout(), None, "the window is not all sent");
        assert_eq!(
            h.t.stats().data_sent,
            11,
            "only what the socket took counts"
        );
        assert_eq!(Harness::blocks(&h.drain()), [12, 13, 14, 15, 16]);
        assert!(h.t.poll_timeout().is_some());
        let stats = h.t.stats();
        assert_eq!(
            (stats.data_sent, stats.data_retransmitted, stats.loss_events),
            (16, 0, 0)
        );
        // A second requeue without a new transmit changes nothing.
        h.t.requeue_unsent(0);
        assert!(h.drain().is_empty());
    }

    #[test]
    fn requeue_after_other_packets_or_progress_does_nothing() {
        let mut h = Harness::new(100_000, 1000, 4, true).batched(4);
        h.drain();
        h.ack(0);
        assert_eq!(Harness::blocks(&h.drain()), [1, 2, 3, 4]);
        // The last transmit was the ERROR to a stranger, not the window.
        h.t.handle_datagram(h.now, STRANGER, &[0, 4, 0, 1]);
        assert_eq!(h.drain(), [Sent::Error(STRANGER, 5)]);
        h.t.requeue_unsent(0);
        assert!(h.drain().is_empty());
        // An ACK arrived between the transmit and the requeue: the window already moved on.
        h.ack(4);
        let mut buf = vec![0u8; h.t.batch_buffer_len(4)];
        h.t.poll_transmit(h.now, 4, &mut buf, h.data.as_slice())
            .unwrap();
        h.ack(8);
        h.t.requeue_unsent(0);
        assert_eq!(Harness::blocks(&h.drain()), [9, 10, 11, 12]);
    }

    /// A window of 8 sent, and an ACK of block 3 inside it.
    fn acked_inside_the_window() -> Harness {
        let mut h = Harness::new(100_000, 1000, 8, true);
        h.drain();
        h.ack(0);
        assert_eq!(h.drain_window(), (1..=8).collect::<Vec<_>>());
        h.ack(3);
        // The client ACKs next at 3 + 8: only the new blocks 9..=11 go out.
        assert_eq!(h.drain_window(), [9, 10, 11]);
        h
    }

    #[test]
    fn an_ack_inside_the_window_slides_it_without_resending_what_is_in_flight() {
        // Issue 11, defect 1: a duplicated or late block makes a client ACK the block it has
        // (atftp does), which looks just like a gap. Restarting the window there sent every
        // block in flight twice, and the client's answer to those restarted it again.
        let mut h = acked_inside_the_window();
        h.ack(11);
        assert_eq!(h.drain_window(), (12..=19).collect::<Vec<_>>());
        assert_eq!(h.t.stats().data_retransmitted, 0);
        assert_eq!(h.t.stats().loss_events, 0);
    }

    #[test]
    fn a_client_dropping_a_swapped_block_gets_the_window_back_at_once() {
        // atftp receives 1, 2, 4, 3: it ACKs 2 at block 4 (dropping it), takes 3, then ACKs 3
        // at block 5 (dropping it and all that follow, until 4 comes again).
        let rtt = Duration::from_millis(1);
        let mut h = Harness::new(100_000, 1000, 8, true).batched(8);
        h.negotiate(rtt);
        assert_eq!(h.drain_window(), (1..=8).collect::<Vec<_>>());
        h.now += rtt;
        h.ack(2);
        assert!(h.drain().is_empty(), "new blocks wait a round trip");
        h.ack(3);
        assert_eq!(Harness::blocks(&h.drain()), [4], "the missing block, alone");
        assert_eq!(h.t.stats().loss_events, 1);
        // The client answers with ACK 4 alone: it dropped 5..=8, which go again at once.
        h.now += rtt;
        h.ack(4);
        assert_eq!(h.drain_window(), (5..=12).collect::<Vec<_>>());
        // An ACK inside the window alone (a duplicate): the new blocks go a round trip later.
        h.now += rtt;
        h.ack(11);
        h.drain_window();
        h.now += rtt;
        h.ack(13);
        assert!(h.drain().is_empty());
        h.now += rtt;
        assert_eq!(h.drain_window(), (20..=21).collect::<Vec<_>>());
        assert_eq!(h.t.stats().loss_events, 1);
    }

    #[test]
    fn a_repeated_ack_reports_a_gap_and_resends_the_missing_block_once() {
        let mut h = acked_inside_the_window();
        // The client repeats ACK 3: block 4 is missing. It goes again alone.
        h.ack(3);
        assert_eq!(Harness::blocks(&h.drain()), [4]);
        assert_eq!(h.t.stats().loss_events, 1);
        assert_eq!(h.t.stats().data_retransmitted, 1);
        // More ACKs of 3 (sent before the client had block 4): never a second resend.
        h.ack(3);
        h.ack(3);
        assert!(h.drain_window().is_empty());
        // The client kept 5..=11: its answer acknowledges them all, and the window goes on
        // without anything sent twice but block 4.
        h.ack(11);
        assert_eq!(h.drain_window(), (12..=19).collect::<Vec<_>>());
        assert_eq!(h.t.stats().data_retransmitted, 1);
        // Past the recovery, a repeated ACK is a gap again.
        h.ack(11);
        assert_eq!(Harness::blocks(&h.drain()), [12]);
        assert_eq!(h.t.stats().loss_events, 2);
    }

    #[test]
    fn duplicate_acks_resend_a_block_at_most_once() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.ack(0);
        h.drain();
        h.ack(4);
        assert_eq!(Harness::blocks(&h.drain()), [5, 6, 7, 8]);
        h.ack(4); // duplicated ACK (network duplication or a client's re-ACK): a gap at 5?
        assert_eq!(Harness::blocks(&h.drain()), [5]);
        for _ in 0..5 {
            h.ack(4);
            h.ack(0); // stale ACK from long ago
            h.ack(200); // ACK of something never sent
            assert!(h.drain().is_empty());
        }
        h.ack(8);
        assert_eq!(Harness::blocks(&h.drain()), [9, 10, 11, 12]);
    }

    #[test]
    fn lock_step_never_resends_on_a_repeated_ack() {
        // RFC 1123 4.2.3.1: the Sorcerer's Apprentice.
        let mut h = Harness::new(100_000, 1000, 1, true);
        h.drain();
        h.ack(0);
        assert_eq!(Harness::blocks(&h.drain()), [1]);
        h.ack(1);
        assert_eq!(Harness::blocks(&h.drain()), [2]);
        for _ in 0..3 {
            h.ack(1);
            assert!(h.drain().is_empty());
        }
    }

    #[test]
    fn reordered_acks_only_move_forward() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.ack(0);
        h.drain();
        h.ack(4);
        h.drain();
        h.ack(8);
        assert_eq!(Harness::blocks(&h.drain()), [9, 10, 11, 12]);
        h.ack(6); // the late one: behind what is acknowledged, ignored
        assert!(h.drain().is_empty());
    }

    #[test]
    fn timeouts_back_off_and_give_up_after_the_silence_limit() {
        // Issue 11, defect 6: a fixed 1 s timer and five tries gave up after 6 s, before a
        // client whose ACK was lost had even timed out itself.
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.advance(Duration::from_millis(999));
        assert!(h.drain().is_empty());
        h.advance(Duration::from_millis(1));
        assert!(matches!(&h.drain()[..], [Sent::Oack(_)]), "OACK resent");
        // ACK 0 of a resent OACK is no round-trip sample (Karn): the timeout stays 1 s.
        h.ack(0);
        let sent_at = h.now;
        assert_eq!(Harness::blocks(&h.drain()), [1, 2, 3, 4]);
        let mut resends = Vec::new();
        while h.t.outcome().is_none() {
            let at = h.t.poll_timeout().unwrap();
            h.now = at;
            h.t.handle_timeout(at);
            let blocks = h.drain_window();
            if !blocks.is_empty() {
                assert_eq!(blocks, [1, 2, 3, 4]);
                resends.push((at - sent_at).as_secs());
            }
        }
        // tftpd-hpa's schedule: 1, 3, 7, 15 s, and no progress for 31 s ends it.
        assert_eq!(resends, [1, 3, 7, 15]);
        assert_eq!(h.now - sent_at, Duration::from_secs(31));
        assert_eq!(h.t.outcome(), Some(&Outcome::TimedOut));
        assert_eq!(
            h.t.stats().loss_events,
            1,
            "one loss, however long the silence"
        );
        assert_eq!(
            h.t.stats().timeouts,
            5,
            "the OACK once, the window four times"
        );
    }

    #[test]
    fn the_timeout_follows_the_measured_round_trip() {
        let mut h = Harness::new(10_000_000, 1000, 4, true);
        h.negotiate(Duration::from_millis(300));
        for _ in 0..30 {
            let blocks = h.drain_window();
            assert_eq!(blocks.len(), 4);
            h.now += Duration::from_millis(300);
            h.ack(*blocks.last().unwrap());
        }
        h.drain_window();
        // A steady 300 ms: srtt 300 ms and a variance that has decayed to almost nothing.
        let rto = h.t.poll_timeout().unwrap() - h.now;
        assert!(
            (Duration::from_millis(300)..Duration::from_millis(330)).contains(&rto),
            "{rto:?}"
        );
        // Back-off: each timeout in a row doubles it (from when the window is all sent again).
        for k in 1..=3u32 {
            h.advance(h.t.poll_timeout().unwrap() - h.now);
            assert_eq!(h.drain_window().len(), 4);
            assert_eq!(h.t.poll_timeout(), Some(h.now + rto * (1 << k)), "step {k}");
        }
    }

    #[test]
    fn a_round_trip_longer_than_the_timeout_raises_it() {
        // A queue that fills after the handshake: the round trip jumps from 1 ms past the
        // timeout's floor. The ACKs, arriving before the timer is handled, are samples.
        let mut h = Harness::new(10_000_000, 1000, 4, true);
        h.negotiate(Duration::from_millis(1));
        for _ in 0..4 {
            let blocks = h.drain_window();
            h.now += MIN_RTO + Duration::from_millis(300);
            h.ack(*blocks.last().unwrap());
        }
        h.drain_window();
        let rto = h.t.poll_timeout().unwrap() - h.now;
        assert!(rto > MIN_RTO + Duration::from_millis(300), "{rto:?}");
        assert_eq!(h.t.stats().rtt_samples, 4, "one per ACK");
    }

    #[test]
    fn a_resent_window_gives_no_round_trip_sample() {
        let mut h = Harness::new(1_000_000, 1000, 4, true);
        h.negotiate(Duration::from_millis(1));
        h.drain_window();
        // The ACK is lost; the window goes again after the timeout (the floor), and the ACK
        // of the first send arrives 180 ms after it: Karn's rule keeps it out of the estimate.
        h.advance(MIN_RTO);
        assert_eq!(h.drain_window(), [1, 2, 3, 4]);
        h.now += Duration::from_millis(180);
        h.ack(4);
        assert_eq!(h.drain_window(), [5, 6, 7, 8]);
        // Nor does it end the back-off (Karn): the next window waits twice the timeout...
        assert_eq!(h.t.poll_timeout(), Some(h.now + 2 * MIN_RTO));
        // ...until a block sent once is acknowledged.
        h.now += Duration::from_millis(1);
        h.ack(8);
        h.drain_window();
        assert_eq!(h.t.poll_timeout(), Some(h.now + MIN_RTO));
    }

    #[test]
    fn an_ack_inside_the_window_measures_the_round_trip_too() {
        // Under heavy reordering atftp may never ACK the last block of a window sent once:
        // timing only those left the timeout at its initial second for a whole transfer.
        let mut h = Harness::new(1_000_000, 1000, 8, true);
        h.drain();
        h.advance(Duration::from_secs(1));
        h.drain();
        h.ack(0); // answers a resent OACK: no sample
        let start = h.now;
        assert_eq!(h.drain_window(), (1..=8).collect::<Vec<_>>());
        h.now += Duration::from_millis(5);
        h.ack(3); // block 3 went at `start`
        assert_eq!(h.now - start, Duration::from_millis(15));
        assert_eq!(h.drain_window(), [9, 10, 11]);
        // srtt 15 ms and rttvar 7.5 ms: 45 ms, raised to the floor (without a sample: the
        // initial second).
        assert_eq!(h.t.poll_timeout(), Some(h.now + MIN_RTO));
    }

    #[test]
    fn the_congestion_window_starts_small_and_doubles_to_the_full_window() {
        let rtt = Duration::from_millis(10);
        let mut h = Harness::new(10_000_000, 1000, 64, true).batched(64);
        h.negotiate(rtt);
        // 4 blocks per round trip: the first window takes 16 of them.
        let start = h.now;
        assert_eq!(h.drain().len(), 4);
        assert_eq!(h.drain_window().len(), 60);
        assert_eq!(h.now - start, rtt * 15);
        let mut acked = 64;
        for cwnd in [8, 16, 32] {
            h.now += rtt;
            h.ack(acked);
            assert_eq!(h.t.congestion.cwnd, cwnd);
            // Bursts of at most 8, `cwnd` blocks per round trip.
            assert_eq!(h.drain().len(), 8);
            let start = h.now;
            assert_eq!(h.drain_window().len(), 56);
            assert_eq!(h.now - start, rtt * 7 * 8 / cwnd);
            acked += 64;
        }
        // Acknowledged without loss: the full window at once.
        h.now += rtt;
        h.ack(acked);
        assert_eq!(h.drain().len(), 64);
    }

    /// Runs windows until the congestion window is the full window.
    fn warm_up(h: &mut Harness, rtt: Duration) -> u16 {
        let mut acked = 0;
        while h.t.congestion.cwnd < u32::from(h.t.options.windowsize) {
            acked = *h.drain_window().last().unwrap();
            h.now += rtt;
            h.ack(acked);
        }
        acked
    }

    #[test]
    fn a_gap_halves_the_congestion_window_and_a_timeout_restarts_it_small() {
        let rtt = Duration::from_millis(10);
        let mut h = Harness::new(10_000_000, 1000, 64, true).batched(64);
        h.negotiate(rtt);
        let acked = warm_up(&mut h, rtt);
        assert_eq!(h.drain().len(), 64);
        // The block after `acked` lost: the client reports the gap (the same ACK again) a
        // round trip later.
        h.now += rtt;
        h.ack(acked);
        assert_eq!(h.t.congestion.cwnd, 32);
        assert_eq!(
            Harness::blocks(&h.drain()),
            [acked + 1],
            "the missing block, alone"
        );
        h.now += rtt;
        h.ack(acked + 64);
        assert_eq!(
            h.t.congestion.cwnd, 32,
            "no growth from what the recovery resent"
        );
        h.drain_window();
        h.now += rtt;
        h.ack(acked + 128);
        assert_eq!(
            h.t.congestion.cwnd, 33,
            "one more block per window above the threshold"
        );
        h.drain_window();
        // The whole window unanswered: the timer (a round trip and its variance) restarts it.
        let at = h.t.poll_timeout().unwrap();
        h.now = at;
        h.t.handle_timeout(at);
        assert_eq!(h.t.congestion.cwnd, 4);
        assert_eq!(h.drain().len(), 4);
        assert_eq!(h.t.stats().loss_events, 2);
    }

    /// A transfer of 10 bytes to a client that asked for `timeout` = `secs`.
    fn asking_timeout(secs: u64) -> Transfer {
        let mut opts = crate::tftp::wire::OptionsBuf::default();
        opts.push("timeout", secs);
        let n = negotiate(opts.as_options(), Limits::default(), 10).unwrap();
        Transfer::new(PEER, n, Retransmit::default(), 10)
    }

    #[test]
    fn client_timeout_option_overrides_ours() {
        let mut t = asking_timeout(3);
        let now = Instant::now();
        let mut buf = [0u8; 600];
        t.poll_transmit(now, 1, &mut buf, &b"0123456789"[..])
            .unwrap();
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn the_first_ack_is_awaited_five_seconds_whatever_the_timeout_option() {
        // Issue 11, defect 5: `timeout=255` in a spoofed request held a transfer slot for
        // 25 minutes (six times 255 s).
        let mut t = asking_timeout(255);
        let start = Instant::now();
        let mut buf = [0u8; 600];
        let mut now = start;
        while t.outcome().is_none() {
            while t
                .poll_transmit(now, 1, &mut buf, &b"0123456789"[..])
                .is_some()
            {}
            now = t.poll_timeout().expect("a timer while waiting");
            t.handle_timeout(now);
        }
        assert_eq!(t.outcome(), Some(&Outcome::TimedOut));
        assert_eq!(now - start, FIRST_ACK_LIMIT);
    }

    /// A harness whose transfer is limited until the client proves its address.
    fn unproven() -> Harness {
        let mut h = Harness::new(1_000_000, 1468, 64, true).batched(64);
        let placeholder = Transfer::new(PEER, Negotiated::plain(), Retransmit::default(), 0);
        h.t = std::mem::replace(&mut h.t, placeholder).limit_until_proven();
        h
    }

    #[test]
    fn an_unproven_client_gets_one_block_and_a_probe_until_it_acks() {
        // Issue 11, defect 7: in single-port mode a request and ACK 0 sent blind drew a whole
        // window and five resends of it (385 datagrams) onto the forged address.
        let mut h = unproven();
        h.negotiate(Duration::from_millis(1));
        // Block 1, and block 3 ahead of it: a client that has block 1 reports the gap at once.
        assert_eq!(h.drain(), [Sent::Data(1, 1468), Sent::Data(3, 1468)]);
        let mut datagrams = 2;
        while h.t.outcome().is_none() {
            h.advance(h.t.poll_timeout().unwrap() - h.now);
            let sent = h.drain();
            assert!(sent.is_empty() || sent == [Sent::Data(1, 1468), Sent::Data(3, 1468)]);
            datagrams += sent.len();
        }
        assert_eq!(h.t.outcome(), Some(&Outcome::TimedOut));
        assert_eq!(datagrams, 6, "three tries of two blocks");
        // Given up after the floor's back-off: 200, 400 and 800 ms (and the OACK's 1 ms).
        assert!(h.now - h.t.started.unwrap() < MIN_RTO * 8);
    }

    #[test]
    fn a_proven_client_gets_the_whole_window() {
        let mut h = unproven();
        h.negotiate(Duration::ZERO);
        assert_eq!(Harness::blocks(&h.drain()), [1, 3]);
        // ACK 1: the address is proven; the window runs from there, 2..=65.
        h.ack(1);
        assert_eq!(h.drain_window(), (2..=65).collect::<Vec<_>>());
        h.ack(65);
        assert_eq!(h.drain_window(), (66..=129).collect::<Vec<_>>());
        assert_eq!(h.t.stats().data_retransmitted, 1, "the probe");
    }

    #[test]
    fn block_numbers_roll_over_past_65535() {
        // 70000 blocks of 8 bytes: block numbers wrap to 0 after 65535.
        let blocks = 70_000u64;
        let mut h = Harness::new((blocks * 8) as usize - 3, 8, 64, true);
        assert!(
            matches!(&h.drain()[..], [Sent::Oack(_)]),
            "OACK fits any blksize"
        );
        h.ack(0);
        let mut expected_index = 1u64;
        let mut total = 0usize;
        loop {
            let sent = h.drain();
            if sent.is_empty() {
                break;
            }
            for s in &sent {
                let Sent::Data(block, len) = s else { panic!() };
                assert_eq!(*block, expected_index as u16);
                expected_index += 1;
                total += len;
            }
            let Sent::Data(last, _) = sent.last().unwrap() else {
                panic!()
            };
            h.ack(*last);
        }
        assert_eq!(total, h.data.len());
        assert_eq!(expected_index - 1, blocks);
        assert_eq!(h.t.outcome(), Some(&Outcome::Complete));
    }

    #[test]
    fn client_error_ends_the_transfer_at_once() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.ack(0);
        h.drain();
        let mut buf = [0u8; 64];
        let n = Packet::Error {
            code: ErrorCode::DiskFull,
            message: "disk full",
        }
        .emit(&mut buf)
        .unwrap();
        h.t.handle_datagram(h.now, PEER, &buf[..n]);
        assert!(h.drain().is_empty());
        assert_eq!(h.t.poll_timeout(), None);
        assert!(matches!(
            h.t.outcome(),
            Some(Outcome::ClientError { code: ErrorCode::DiskFull, message }) if message == "disk full"
        ));
    }

    #[test]
    fn option_refusal_after_oack_ends_the_transfer() {
        // OVMF asks for tsize, reads the OACK and aborts with ERROR 8 before fetching.
        let mut h = Harness::new(5000, 1468, 4, true);
        h.drain();
        h.t.handle_datagram(h.now, PEER, b"\x00\x05\x00\x08\x00");
        assert!(matches!(
            h.t.outcome(),
            Some(Outcome::ClientError {
                code: ErrorCode::OptionRefused,
                ..
            })
        ));
    }

    #[test]
    fn wrong_tid_gets_error_5_and_the_transfer_goes_on() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.ack(0);
        assert_eq!(Harness::blocks(&h.drain()), [1, 2, 3, 4]);
        // A stranger sends an ACK that would otherwise complete the window, twice.
        h.t.handle_datagram(h.now, STRANGER, &[0, 4, 0, 4]);
        h.t.handle_datagram(h.now, STRANGER, &[0, 4, 0, 4]);
        assert_eq!(h.drain(), [Sent::Error(STRANGER, 5)], "one reply, no flood");
        h.ack(4);
        assert_eq!(Harness::blocks(&h.drain()), [5, 6, 7, 8]);
    }

    #[test]
    fn garbage_from_the_peer_is_ignored() {
        let mut h = Harness::new(3000, 1000, 2, true);
        h.drain();
        h.ack(0);
        h.drain();
        for junk in [
            &b""[..],
            b"\x00",
            b"\x00\x04\x00",
            b"\x00\x03\x00\x01xx",
            b"\xff\xff",
        ] {
            h.t.handle_datagram(h.now, PEER, junk);
        }
        assert!(h.drain().is_empty());
        h.ack(2);
        assert_eq!(Harness::blocks(&h.drain()), [3, 4]);
    }

    #[test]
    fn a_failing_read_sends_an_error_and_ends() {
        struct Broken;
        impl ReadAt for Broken {
            fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut t = Transfer::new(PEER, Negotiated::plain(), Retransmit::default(), 100);
        let mut buf = [0u8; 516];
        let now = Instant::now();
        let tx = t.poll_transmit(now, 1, &mut buf, &Broken).unwrap();
        assert!(matches!(
            Packet::parse(&buf[..tx.len]),
            Ok(Packet::Error {
                code: ErrorCode::NotDefined,
                ..
            })
        ));
        assert!(t.poll_transmit(now, 1, &mut buf, &Broken).is_none());
        assert!(matches!(t.outcome(), Some(Outcome::ReadFailed(m)) if m.contains("fire")));
    }
}
