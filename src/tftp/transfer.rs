//! The server side of one read transfer, sans-IO (quinn-proto style).
//!
//! Drive it with [`Transfer::handle_datagram`] and [`Transfer::handle_timeout`], take datagrams
//! out with [`Transfer::poll_transmit`] until it returns `None`, and sleep until
//! [`Transfer::poll_timeout`]. Time is always passed in; the bytes come through [`ReadAt`].
//! Given a large buffer, a poll writes a batch of consecutive DATA packets for one system
//! call; what the socket did not take goes back with [`Transfer::requeue_unsent`].
//!
//! Windowing (RFC 7440): the server sends up to `windowsize` blocks, then waits for an ACK. An ACK
//! of the window's last block opens the next window; an ACK of an earlier block (the client lost
//! something) restarts the window just after it. A repeated ACK of the same block is ignored,
//! so duplicated ACKs never cause duplicated windows (the Sorcerer's Apprentice bug); only the
//! retransmission timer resends.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::options::Negotiated;
use super::source::ReadAt;
use super::wire::{emit_data_header, ErrorCode, Packet, DATA_HEADER_LEN, MAX_OPTIONS_LEN};
use super::Transmit;

/// Room for the longest OACK or ERROR this side sends.
const CONTROL_PACKET_LEN: usize = 4 + MAX_OPTIONS_LEN + 64;

/// Retransmission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Wait this long for an ACK before resending (a client's `timeout` option overrides it).
    pub timeout: Duration,
    /// Give up after this many resends of the same window without progress.
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
    /// No progress after all retries.
    TimedOut,
    /// Reading the file failed; the client was sent an ERROR.
    ReadFailed(String),
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

/// One read transfer to one client.
#[derive(Debug)]
pub struct Transfer {
    peer: SocketAddr,
    options: Negotiated,
    retransmit: Retransmit,
    size: u64,
    /// Blocks in the file: the last one is shorter than blksize, possibly empty.
    last_block: u64,
    state: State,
    /// Highest block the client acknowledged (0 before any).
    acked: u64,
    /// Next block to send in the current window.
    next: u64,
    /// Last block of the current window.
    window_end: u64,
    /// Whether the OACK still has to be (re)sent.
    oack_pending: bool,
    /// An ERROR to send: to the peer when failing, or to a stranger (wrong TID).
    error_pending: Option<(SocketAddr, ErrorCode, &'static str)>,
    /// First block and count of the last DATA transmit, for [`Transfer::requeue_unsent`].
    last_batch: Option<(u64, u64)>,
    deadline: Option<Instant>,
    retries_left: u32,
}

impl Transfer {
    /// Starts a transfer of `size` bytes to `peer` with negotiated `options`.
    pub fn new(peer: SocketAddr, options: Negotiated, retransmit: Retransmit, size: u64) -> Self {
        let retransmit = Retransmit {
            timeout: options.timeout.unwrap_or(retransmit.timeout),
            ..retransmit
        };
        let oack = !options.oack.as_options().is_empty();
        let mut t = Transfer {
            peer,
            last_block: size / u64::from(options.blksize) + 1,
            options,
            retransmit,
            size,
            state: State::Negotiating,
            acked: 0,
            next: 1,
            window_end: 0,
            oack_pending: oack,
            error_pending: None,
            last_batch: None,
            deadline: None,
            retries_left: retransmit.retries,
        };
        if !oack {
            t.open_window();
        }
        t
    }

    /// The client's address and port (its transfer ID).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Length of a buffer that takes `datagrams` DATA packets of the negotiated block size at
    /// once, and the OACK or an ERROR, whichever is longer.
    pub fn batch_buffer_len(&self, datagrams: usize) -> usize {
        ((usize::from(self.options.blksize) + DATA_HEADER_LEN) * datagrams.max(1))
            .max(CONTROL_PACKET_LEN)
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

    /// Handles a datagram that arrived from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
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
            Ok(Packet::Ack { block }) => self.handle_ack(block),
            Ok(Packet::Error { code, message }) => {
                self.state = State::Done(Outcome::ClientError {
                    code,
                    message: message.to_string(),
                });
                self.deadline = None;
            }
            // A repeated request (the client resent it before our first reply arrived), stray
            // DATA or garbage: not an ACK, so nothing to act on.
            Ok(_) | Err(_) => {}
        }
    }

    fn handle_ack(&mut self, block: u16) {
        match self.state {
            State::Negotiating if block == 0 => {
                self.oack_pending = false;
                self.state = State::Sending;
                self.open_window();
            }
            State::Sending => {
                // Blocks wrap at 65536; map the 16-bit number onto what we have sent so far.
                let sent = self.next - 1 - self.acked;
                let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                if ahead == 0 || ahead > sent {
                    return; // duplicate or stray ACK: ignored, the timer will resend
                }
                self.acked += ahead;
                if self.acked == self.last_block {
                    self.state = State::Done(Outcome::Complete);
                    self.deadline = None;
                } else {
                    self.next = self.acked + 1;
                    self.open_window();
                }
            }
            _ => {}
        }
    }

    fn open_window(&mut self) {
        self.state = State::Sending;
        self.window_end = (self.acked + u64::from(self.options.windowsize)).min(self.last_block);
        self.deadline = None;
        self.retries_left = self.retransmit.retries;
    }

    /// Handles the passing of time: resends the OACK or the current window when its timer has
    /// expired, and gives up after the retry limit.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_batch = None;
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        if self.retries_left == 0 {
            self.state = State::Done(Outcome::TimedOut);
            return;
        }
        self.retries_left -= 1;
        match self.state {
            State::Negotiating => self.oack_pending = true,
            State::Sending => self.next = self.acked + 1,
            State::Done(_) => {}
        }
    }

    /// When [`Transfer::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
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
                self.deadline = Some(now + self.retransmit.timeout);
                let len = Packet::OptionAck(self.options.oack.as_options())
                    .emit(buf)
                    .ok()?;
                Some(self.to_peer(len))
            }
            State::Sending if self.next <= self.window_end => {
                self.fill_window(now, max_datagrams, buf, data)
            }
            _ => None,
        }
    }

    /// Writes as many DATA packets of the current window as fit in `buf`, back to back.
    ///
    /// The payloads of consecutive blocks are consecutive in the file, so they are read with one
    /// `read_at` into the buffer just past the room their headers need, then moved down into
    /// place (each to a lower address, in block order, so none overwrites one still unmoved)
    /// with the headers written into the gaps. One read per batch instead of one per block.
    fn fill_window(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
        data: &(impl ReadAt + ?Sized),
    ) -> Option<Transmit> {
        let blksize = usize::from(self.options.blksize);
        let segment = DATA_HEADER_LEN + blksize;
        let fit = (buf.len() / segment).min(max_datagrams);
        if fit == 0 {
            return self.fail_read(buf, "send buffer smaller than blksize".into());
        }
        let first = self.next;
        let count = (self.window_end + 1 - first).min(fit as u64);
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
        self.next += count;
        self.last_batch = Some((first, count));
        if self.next > self.window_end {
            self.deadline = Some(now + self.retransmit.timeout);
        }
        Some(Transmit {
            to: self.peer,
            len: headers + payload,
            segment_len: segment,
        })
    }

    /// Takes back the DATA packets of the last transmit past its first `sent`: the socket
    /// would block, so they are sent again by the next polls instead of waiting for the
    /// retransmission timer. Only right after that transmit: once anything else has been
    /// polled or handled, it does nothing.
    /// Returns whether it did (false for control packets, which the timer resends).
    pub fn requeue_unsent(&mut self, sent: usize) -> bool {
        let Some((first, count)) = self.last_batch.take() else {
            return false;
        };
        let resume = first + (sent as u64).min(count);
        if self.state == State::Sending && resume < self.next {
            self.next = resume;
            self.deadline = None;
        }
        true
    }

    fn fail_read(&mut self, buf: &mut [u8], why: String) -> Option<Transmit> {
        self.state = State::Done(Outcome::ReadFailed(why));
        self.deadline = None;
        let len = Packet::Error {
            code: ErrorCode::NotDefined,
            message: "read error",
        }
        .emit(buf)
        .ok()?;
        Some(self.to_peer(len))
    }

    fn to_peer(&self, len: usize) -> Transmit {
        Transmit::single(self.peer, len)
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
                .handle_datagram(PEER, &[0, 4, (block >> 8) as u8, block as u8]);
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
        let mut h = Harness::new(100_000, 1000, 6, true);
        h.drain();
        h.ack(0);
        let mut buf = vec![0u8; h.t.batch_buffer_len(4)];
        let tx =
            h.t.poll_transmit(h.now, 4, &mut buf, h.data.as_slice())
                .unwrap();
        assert_eq!((tx.count(), tx.segment_len, tx.len), (4, 1004, 4016));
        assert_eq!(h.t.poll_timeout(), None, "window not finished yet");
        let tx =
            h.t.poll_transmit(h.now, 4, &mut buf, h.data.as_slice())
                .unwrap();
        assert_eq!(tx.count(), 2, "blocks 5 and 6 end the window");
        assert_eq!(h.t.poll_timeout(), Some(h.now + Duration::from_secs(1)));
        assert!(h
            .t
            .poll_transmit(h.now, 4, &mut buf, h.data.as_slice())
            .is_none());
    }

    #[test]
    fn unsent_datagrams_are_sent_again_by_the_next_poll() {
        let mut h = Harness::new(100_000, 1000, 8, true).batched(8);
        h.drain();
        h.ack(0);
        let mut buf = vec![0u8; h.t.batch_buffer_len(8)];
        let tx =
            h.t.poll_transmit(h.now, 8, &mut buf, h.data.as_slice())
                .unwrap();
        assert_eq!(tx.count(), 8);
        assert!(h.t.poll_timeout().is_some());
        // The socket took three datagrams, then would block.
        h.t.requeue_unsent(3);
        assert_eq!(h.t.poll_timeout(), None, "the window is not all sent");
        assert_eq!(Harness::blocks(&h.drain()), [4, 5, 6, 7, 8]);
        assert!(h.t.poll_timeout().is_some());
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
        h.t.handle_datagram(STRANGER, &[0, 4, 0, 1]);
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

    #[test]
    fn partial_ack_restarts_the_window_after_the_acked_block() {
        let mut h = Harness::new(100_000, 1000, 8, true);
        h.drain();
        h.ack(0);
        assert_eq!(Harness::blocks(&h.drain()), (1..=8).collect::<Vec<_>>());
        // Client lost block 4: it acknowledges 3.
        h.ack(3);
        assert_eq!(Harness::blocks(&h.drain()), (4..=11).collect::<Vec<_>>());
    }

    #[test]
    fn duplicate_acks_never_resend_a_window() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.ack(0);
        h.drain();
        h.ack(4);
        assert_eq!(Harness::blocks(&h.drain()), [5, 6, 7, 8]);
        for _ in 0..5 {
            h.ack(4); // duplicated ACK (network duplication or a client's re-ACK)
            h.ack(0); // stale ACK from long ago
            h.ack(200); // ACK of something never sent
            assert!(h.drain().is_empty());
        }
        h.ack(8);
        assert_eq!(Harness::blocks(&h.drain()), [9, 10, 11, 12]);
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
    fn timeout_resends_window_then_gives_up() {
        let mut h = Harness::new(100_000, 1000, 4, true);
        h.drain();
        h.advance(Duration::from_millis(999));
        assert!(h.drain().is_empty());
        h.advance(Duration::from_millis(1));
        assert!(matches!(&h.drain()[..], [Sent::Oack(_)]), "OACK resent");
        h.ack(0);
        assert_eq!(Harness::blocks(&h.drain()), [1, 2, 3, 4]);
        for _ in 0..5 {
            h.advance(Duration::from_secs(1));
            assert_eq!(Harness::blocks(&h.drain()), [1, 2, 3, 4]);
        }
        h.advance(Duration::from_secs(1));
        assert!(h.drain().is_empty());
        assert_eq!(h.t.outcome(), Some(&Outcome::TimedOut));
    }

    #[test]
    fn progress_resets_the_retry_budget() {
        let mut h = Harness::new(100_000, 1000, 1, true);
        h.drain();
        h.ack(0);
        for block in 1..=20u16 {
            h.drain();
            // Every block needs 4 retransmissions, yet the transfer never gives up.
            for _ in 0..4 {
                h.advance(Duration::from_secs(1));
                assert_eq!(Harness::blocks(&h.drain()), [block]);
            }
            h.ack(block);
        }
        assert_eq!(h.t.outcome(), None);
    }

    #[test]
    fn client_timeout_option_overrides_ours() {
        let opts = {
            let mut o = crate::tftp::wire::OptionsBuf::default();
            o.push("timeout", 3);
            o
        };
        let n = negotiate(opts.as_options(), Limits::default(), 10).unwrap();
        let mut t = Transfer::new(PEER, n, Retransmit::default(), 10);
        let now = Instant::now();
        let mut buf = [0u8; 600];
        t.poll_transmit(now, 1, &mut buf, &b"0123456789"[..])
            .unwrap();
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(3)));
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
        h.t.handle_datagram(PEER, &buf[..n]);
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
        h.t.handle_datagram(PEER, b"\x00\x05\x00\x08\x00");
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
        h.t.handle_datagram(STRANGER, &[0, 4, 0, 4]);
        h.t.handle_datagram(STRANGER, &[0, 4, 0, 4]);
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
            h.t.handle_datagram(PEER, junk);
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
