//! The client side of one read transfer, sans-IO: the engine of `bootherd fetch` and of the
//! simulated boot clients.
//!
//! Loss handling: the client ACKs the last block of each window, and as soon as a block arrives
//! out of order it ACKs the last block it has in sequence (once per gap, RFC 7440 section 4), so
//! the server resends from there without waiting for its timer. When nothing arrives for a
//! timeout it re-sends its last ACK (or the request).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::options::{BLKSIZE_RANGE, DEFAULT_BLKSIZE};
use super::wire::{ErrorCode, Mode, Options, OptionsBuf, Packet, Request};
use super::Transmit;

/// What to ask the server for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// File name on the server.
    pub path: String,
    /// Block size to ask for (RFC 2348); `None` for RFC 1350's 512.
    pub blksize: Option<u16>,
    /// Window size to ask for (RFC 7440); `None` for lock-step.
    pub windowsize: Option<u16>,
    /// Ask for the file size (RFC 2349) and check the received length against it.
    pub tsize: bool,
}

/// Client retransmission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRetransmit {
    /// Silence after which the last request or ACK is re-sent.
    pub timeout: Duration,
    /// Re-sends without progress before giving up.
    pub retries: u32,
}

impl Default for ClientRetransmit {
    fn default() -> Self {
        ClientRetransmit {
            timeout: Duration::from_millis(500),
            retries: 10,
        }
    }
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadError {
    /// The server sent an ERROR.
    Server {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No answer after all retries.
    TimedOut,
    /// The server broke the protocol (an OACK we cannot accept, a size mismatch).
    Protocol(String),
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::Server { code, message } => {
                write!(f, "server error {}: {message}", code.code())
            }
            DownloadError::TimedOut => f.write_str("timed out"),
            DownloadError::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for DownloadError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Request,
    Ack(u16),
    OptionRefused,
}

/// One download from one server.
#[derive(Debug)]
pub struct Download {
    server: SocketAddr,
    /// The server's transfer port, learned from its first reply.
    tid: Option<SocketAddr>,
    spec: RequestSpec,
    options: OptionsBuf,
    retransmit: ClientRetransmit,
    blksize: u16,
    windowsize: u16,
    tsize: Option<u64>,
    /// Next block index expected (1-based, not wrapped).
    expected: u64,
    /// Last block index acknowledged.
    acked: u64,
    received: u64,
    /// Whether the current gap has been reported already.
    gap_reported: bool,
    started: bool,
    pending: Option<Pending>,
    stranger: Option<SocketAddr>,
    deadline: Option<Instant>,
    retries_left: u32,
    result: Option<Result<(), DownloadError>>,
}

impl Download {
    /// Prepares a download of `spec` from `server` at `now`; the first transmit is the request.
    pub fn new(
        now: Instant,
        server: SocketAddr,
        spec: RequestSpec,
        retransmit: ClientRetransmit,
    ) -> Self {
        let mut options = OptionsBuf::default();
        if let Some(b) = spec.blksize {
            options.push("blksize", u64::from(b));
        }
        if let Some(w) = spec.windowsize {
            options.push("windowsize", u64::from(w));
        }
        if spec.tsize {
            options.push("tsize", 0);
        }
        Download {
            server,
            tid: None,
            spec,
            options,
            retransmit,
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            tsize: None,
            expected: 1,
            acked: 0,
            received: 0,
            gap_reported: false,
            started: false,
            pending: Some(Pending::Request),
            stranger: None,
            deadline: Some(now + retransmit.timeout),
            retries_left: retransmit.retries,
            result: None,
        }
    }

    /// File size announced by the server, if it answered `tsize`.
    pub fn tsize(&self) -> Option<u64> {
        self.tsize
    }

    /// Negotiated block and window size.
    pub fn blksize_windowsize(&self) -> (u16, u16) {
        (self.blksize, self.windowsize)
    }

    /// Payload bytes received in order so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The result, once finished and with nothing left to send.
    pub fn result(&self) -> Option<&Result<(), DownloadError>> {
        match self.pending {
            None => self.result.as_ref(),
            Some(_) => None,
        }
    }

    /// Handles a datagram from `from`; returns the payload to append to the file, if any.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Option<&'a [u8]> {
        if self.result.is_some() {
            return None;
        }
        match self.tid {
            Some(tid) if tid != from => {
                self.stranger = Some(from);
                return None;
            }
            None if from.ip() != self.server.ip() => return None,
            _ => {}
        }
        let packet = Packet::parse(datagram).ok()?;
        if self.tid.is_none() {
            if !matches!(
                packet,
                Packet::OptionAck(_) | Packet::Data { .. } | Packet::Error { .. }
            ) {
                return None;
            }
            self.tid = Some(from);
        }
        match packet {
            Packet::OptionAck(options) if !self.started => {
                self.started = true;
                match self.accept_oack(options) {
                    Ok(()) => self.send(now, Pending::Ack(0)),
                    Err(why) => {
                        self.pending = Some(Pending::OptionRefused);
                        self.result = Some(Err(DownloadError::Protocol(why)));
                    }
                }
                None
            }
            Packet::Data { block, data } => self.handle_data(now, block, data),
            Packet::Error { code, message } => {
                self.pending = None;
                self.result = Some(Err(DownloadError::Server {
                    code,
                    message: message.to_string(),
                }));
                None
            }
            _ => None,
        }
    }

    fn handle_data<'a>(&mut self, now: Instant, block: u16, data: &'a [u8]) -> Option<&'a [u8]> {
        // A server that ignores every option answers the request with DATA 1 directly.
        self.started = true;
        if block != self.expected as u16 || data.len() > usize::from(self.blksize) {
            if !self.gap_reported {
                self.gap_reported = true;
                self.acked = self.expected - 1;
                self.send(now, Pending::Ack(self.acked as u16));
            }
            return None;
        }
        self.gap_reported = false;
        self.retries_left = self.retransmit.retries;
        self.deadline = Some(now + self.retransmit.timeout);
        self.expected += 1;
        self.received += data.len() as u64;
        let last = data.len() < usize::from(self.blksize);
        if last {
            self.result = Some(match self.tsize {
                Some(size) if size != self.received => Err(DownloadError::Protocol(format!(
                    "received {} bytes, server announced {size}",
                    self.received
                ))),
                _ => Ok(()),
            });
            self.deadline = None;
        }
        if last || self.expected - 1 - self.acked >= u64::from(self.windowsize) {
            self.acked = self.expected - 1;
            self.send(now, Pending::Ack(block));
        }
        Some(data)
    }

    fn accept_oack(&mut self, options: Options<'_>) -> Result<(), String> {
        for (name, value) in options.iter() {
            let n: u64 = value
                .parse()
                .map_err(|_| format!("OACK {name} = {value:?} is not a number"))?;
            let asked = |v: Option<u16>| v.map(u64::from);
            if name.eq_ignore_ascii_case("blksize") {
                match asked(self.spec.blksize) {
                    Some(max) if (u64::from(BLKSIZE_RANGE.0)..=max).contains(&n) => {
                        self.blksize = n as u16
                    }
                    _ => return Err(format!("OACK blksize {n} not acceptable")),
                }
            } else if name.eq_ignore_ascii_case("windowsize") {
                match asked(self.spec.windowsize) {
                    Some(max) if (1..=max).contains(&n) => self.windowsize = n as u16,
                    _ => return Err(format!("OACK windowsize {n} not acceptable")),
                }
            } else if name.eq_ignore_ascii_case("tsize") && self.spec.tsize {
                self.tsize = Some(n);
            } else {
                return Err(format!("OACK has option {name} we did not ask for"));
            }
        }
        Ok(())
    }

    fn send(&mut self, now: Instant, what: Pending) {
        self.pending = Some(what);
        if self.result.is_none() {
            self.deadline = Some(now + self.retransmit.timeout);
        }
    }

    /// Handles the passing of time: re-sends the last request or ACK, or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        if self.retries_left == 0 {
            self.deadline = None;
            self.result = Some(Err(DownloadError::TimedOut));
            return;
        }
        self.retries_left -= 1;
        let again = if self.started {
            self.acked = self.expected - 1;
            Pending::Ack(self.acked as u16)
        } else {
            Pending::Request
        };
        self.send(now, again);
    }

    /// When [`Download::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Writes the next datagram to send into `buf` (at least 512 bytes).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(to) = self.stranger.take() {
            let error = Packet::Error {
                code: ErrorCode::UnknownTid,
                message: "unknown transfer ID",
            };
            return Some(Transmit::single(to, error.emit(buf).ok()?));
        }
        let packet = match self.pending.take()? {
            Pending::Request => Packet::Read(Request {
                filename: &self.spec.path,
                mode: Mode::Octet,
                options: self.options.as_options(),
            }),
            Pending::Ack(block) => Packet::Ack { block },
            Pending::OptionRefused => Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "option not acceptable",
            },
        };
        let to = match packet {
            Packet::Read(_) => self.server,
            _ => self.tid.unwrap_or(self.server),
        };
        Some(Transmit::single(to, packet.emit(buf).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::options::{negotiate, Limits, Negotiated};
    use crate::tftp::transfer::{Outcome, Retransmit, Transfer};
    use std::collections::VecDeque;

    const SERVER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        69,
    ));
    const SERVER_TID: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        50000,
    ));
    const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        40000,
    ));

    /// A lossy network between one [`Download`] and one [`Transfer`], on a fake clock.
    /// `fate(n)` decides what happens to the n-th datagram: delivered, dropped, duplicated or
    /// held back behind the next one (reordered).
    struct Sim {
        now: Instant,
        client: Download,
        server: Option<Transfer>,
        file: Vec<u8>,
        got: Vec<u8>,
        limits: Limits,
        to_server: VecDeque<Vec<u8>>,
        to_client: VecDeque<Vec<u8>>,
        sent: usize,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Fate {
        Deliver,
        Drop,
        Duplicate,
        Reorder,
    }

    impl Sim {
        fn new(size: usize, spec: RequestSpec) -> Self {
            Sim {
                now: Instant::now(),
                client: Download::new(Instant::now(), SERVER, spec, ClientRetransmit::default()),
                server: None,
                file: (0..size).map(|i| (i % 253) as u8).collect(),
                got: Vec::new(),
                limits: Limits {
                    max_blksize: 65464,
                    max_windowsize: 64,
                },
                to_server: VecDeque::new(),
                to_client: VecDeque::new(),
                sent: 0,
            }
        }

        fn spec(blksize: Option<u16>, windowsize: Option<u16>) -> RequestSpec {
            RequestSpec {
                path: "f".into(),
                blksize,
                windowsize,
                tsize: true,
            }
        }

        fn post(queue: &mut VecDeque<Vec<u8>>, bytes: &[u8], fate: Fate) {
            match fate {
                Fate::Deliver => queue.push_back(bytes.to_vec()),
                Fate::Drop => {}
                Fate::Duplicate => {
                    queue.push_back(bytes.to_vec());
                    queue.push_back(bytes.to_vec());
                }
                Fate::Reorder => {
                    let at = queue.len().saturating_sub(1);
                    queue.insert(at, bytes.to_vec());
                }
            }
        }

        /// Runs to completion; returns the client result and the server outcome.
        fn run(
            &mut self,
            fate: impl Fn(usize) -> Fate,
        ) -> (Result<(), DownloadError>, Option<Outcome>) {
            let mut buf = vec![0u8; 65536];
            for _ in 0..10_000_000 {
                while let Some(tx) = self.client.poll_transmit(&mut buf) {
                    self.sent += 1;
                    Self::post(&mut self.to_server, &buf[..tx.len], fate(self.sent));
                }
                if let Some(server) = &mut self.server {
                    // Batches of up to 8, as the server shell sends them.
                    while let Some(tx) = server.poll_transmit(self.now, 8, &mut buf, &self.file[..])
                    {
                        for datagram in tx.datagrams(&buf) {
                            self.sent += 1;
                            Self::post(&mut self.to_client, datagram, fate(self.sent));
                        }
                    }
                }
                let quiet = self.to_server.is_empty() && self.to_client.is_empty();
                if let Some(result) = self.client.result().filter(|_| quiet) {
                    let outcome = self.server.as_ref().and_then(|s| s.outcome().cloned());
                    return (result.clone(), outcome);
                }
                if let Some(d) = self.to_server.pop_front() {
                    match (&mut self.server, Packet::parse(&d)) {
                        (None, Ok(Packet::Read(req))) => {
                            let n = negotiate(req.options, self.limits, self.file.len() as u64)
                                .unwrap_or_else(|_| Negotiated::plain());
                            self.server = Some(Transfer::new(
                                CLIENT,
                                n,
                                Retransmit::default(),
                                self.file.len() as u64,
                            ));
                        }
                        (Some(s), _) => s.handle_datagram(CLIENT, &d),
                        _ => {}
                    }
                } else if let Some(d) = self.to_client.pop_front() {
                    let from = if self.server.is_some() {
                        SERVER_TID
                    } else {
                        SERVER
                    };
                    if let Some(payload) = self.client.handle_datagram(self.now, from, &d) {
                        self.got.extend_from_slice(payload);
                    }
                } else {
                    // Nothing in flight: jump the clock to the next timer.
                    let next = [
                        self.client.poll_timeout(),
                        self.server.as_ref().and_then(|s| s.poll_timeout()),
                    ]
                    .into_iter()
                    .flatten()
                    .min()
                    .expect("deadlock: nothing in flight and no timer");
                    self.now = self.now.max(next);
                    self.client.handle_timeout(self.now);
                    if let Some(s) = &mut self.server {
                        s.handle_timeout(self.now);
                    }
                }
            }
            panic!("simulation did not finish");
        }
    }

    #[test]
    fn clean_transfer_with_options() {
        let mut sim = Sim::new(100_000, Sim::spec(Some(1468), Some(16)));
        let (result, outcome) = sim.run(|_| Fate::Deliver);
        assert_eq!(result, Ok(()));
        assert_eq!(outcome, Some(Outcome::Complete));
        assert_eq!(sim.got, sim.file);
        assert_eq!(sim.client.tsize(), Some(100_000));
        assert_eq!(sim.client.blksize_windowsize(), (1468, 16));
    }

    #[test]
    fn survives_loss_duplication_and_reordering() {
        type Pattern = (&'static str, fn(usize) -> Fate);
        let patterns: [Pattern; 4] = [
            ("every 7th dropped", |n| {
                if n % 7 == 0 {
                    Fate::Drop
                } else {
                    Fate::Deliver
                }
            }),
            ("every 5th duplicated", |n| {
                if n % 5 == 0 {
                    Fate::Duplicate
                } else {
                    Fate::Deliver
                }
            }),
            ("every 4th reordered", |n| {
                if n % 4 == 0 {
                    Fate::Reorder
                } else {
                    Fate::Deliver
                }
            }),
            ("mixed", |n| match n % 11 {
                3 => Fate::Drop,
                5 => Fate::Duplicate,
                8 => Fate::Reorder,
                _ => Fate::Deliver,
            }),
        ];
        for (name, fate) in patterns {
            for (blksize, windowsize) in [(None, None), (Some(1468), Some(16)), (Some(8), Some(64))]
            {
                let mut sim = Sim::new(30_000, Sim::spec(blksize, windowsize));
                let (result, _) = sim.run(fate);
                assert_eq!(result, Ok(()), "{name} {blksize:?}/{windowsize:?}");
                assert!(
                    sim.got == sim.file,
                    "{name} {blksize:?}/{windowsize:?}: bytes differ"
                );
            }
        }
    }

    #[test]
    fn rolls_over_block_numbers() {
        let mut sim = Sim::new(70_000 * 8 + 5, Sim::spec(Some(8), Some(32)));
        let (result, outcome) = sim.run(|n| {
            if n % 997 == 0 {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        assert_eq!(result, Ok(()));
        assert_eq!(outcome, Some(Outcome::Complete));
        assert!(sim.got == sim.file);
    }

    #[test]
    fn server_ignoring_options_falls_back_to_rfc1350() {
        let mut sim = Sim::new(2000, Sim::spec(Some(1468), Some(16)));
        sim.limits = Limits::default();
        // A server that grants nothing: negotiate an empty option list instead.
        let mut buf = vec![0u8; 1024];
        let tx = sim.client.poll_transmit(&mut buf).unwrap();
        assert_eq!(tx.to, SERVER);
        let mut server = Transfer::new(CLIENT, Negotiated::plain(), Retransmit::default(), 2000);
        let mut now = sim.now;
        loop {
            while let Some(tx) = server.poll_transmit(now, 1, &mut buf, &sim.file[..]) {
                let d = buf[..tx.len].to_vec();
                if let Some(p) = sim.client.handle_datagram(now, SERVER_TID, &d) {
                    sim.got.extend_from_slice(p);
                }
            }
            while let Some(tx) = sim.client.poll_transmit(&mut buf) {
                assert_eq!(tx.to, SERVER_TID);
                let d = buf[..tx.len].to_vec();
                server.handle_datagram(CLIENT, &d);
            }
            if sim.client.result().is_some() {
                break;
            }
            now += Duration::from_millis(1);
        }
        assert_eq!(sim.client.result(), Some(&Ok(())));
        assert_eq!(sim.client.blksize_windowsize(), (512, 1));
        assert_eq!(sim.got, sim.file);
    }

    /// A download that has sent its request.
    fn requested(spec: RequestSpec) -> (Download, [u8; 600], Instant) {
        let now = Instant::now();
        let mut c = Download::new(now, SERVER, spec, ClientRetransmit::default());
        let mut buf = [0u8; 600];
        c.poll_transmit(&mut buf).unwrap();
        (c, buf, now)
    }

    #[test]
    fn server_error_is_reported() {
        let (mut c, _, now) = requested(Sim::spec(None, None));
        assert!(c
            .handle_datagram(now, SERVER_TID, b"\x00\x05\x00\x01not here\x00")
            .is_none());
        assert_eq!(
            c.result(),
            Some(&Err(DownloadError::Server {
                code: ErrorCode::FileNotFound,
                message: "not here".into()
            }))
        );
    }

    #[test]
    fn refuses_an_oack_beyond_what_was_asked() {
        let (mut c, mut buf, now) = requested(Sim::spec(Some(512), None));
        c.handle_datagram(now, SERVER_TID, b"\x00\x06blksize\x001468\x00");
        let tx = c.poll_transmit(&mut buf).unwrap();
        assert_eq!(tx.to, SERVER_TID);
        assert!(matches!(
            Packet::parse(&buf[..tx.len]),
            Ok(Packet::Error {
                code: ErrorCode::OptionRefused,
                ..
            })
        ));
        assert!(matches!(c.result(), Some(Err(DownloadError::Protocol(_)))));
    }

    #[test]
    fn strangers_get_error_5_and_replies_from_other_hosts_are_ignored() {
        let (mut c, mut buf, now) = requested(Sim::spec(None, None));
        let other_host: SocketAddr = "127.0.0.2:50000".parse().unwrap();
        assert!(c
            .handle_datagram(now, other_host, b"\x00\x03\x00\x01x")
            .is_none());
        assert!(c.poll_transmit(&mut buf).is_none());
        let block1 = [&b"\x00\x03\x00\x01"[..], &[7u8; 512]].concat();
        assert_eq!(
            c.handle_datagram(now, SERVER_TID, &block1),
            Some(&[7u8; 512][..])
        );
        let ack = c.poll_transmit(&mut buf).unwrap();
        assert_eq!(
            (ack.to, &buf[..ack.len]),
            (SERVER_TID, &b"\x00\x04\x00\x01"[..])
        );
        let stranger: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert!(c
            .handle_datagram(now, stranger, b"\x00\x03\x00\x02x")
            .is_none());
        let tx = c.poll_transmit(&mut buf).unwrap();
        assert_eq!(tx.to, stranger);
        assert_eq!(&buf[..4], b"\x00\x05\x00\x05");
        assert_eq!(
            c.handle_datagram(now, SERVER_TID, b"\x00\x03\x00\x02abc"),
            Some(&b"abc"[..])
        );
        assert!(c.poll_transmit(&mut buf).is_some());
        assert_eq!(c.result(), Some(&Ok(())));
        assert_eq!(c.received(), 515);
    }

    #[test]
    fn gives_up_after_retries_when_nobody_answers() {
        let mut c = Download::new(
            Instant::now(),
            SERVER,
            Sim::spec(None, None),
            ClientRetransmit::default(),
        );
        let mut buf = [0u8; 600];
        let mut now = Instant::now();
        let mut requests = 0;
        while c.result().is_none() {
            while c.poll_transmit(&mut buf).is_some() {
                requests += 1;
            }
            if let Some(t) = c.poll_timeout() {
                now = t;
            }
            c.handle_timeout(now);
        }
        assert_eq!(requests, 11);
        assert_eq!(c.result(), Some(&Err(DownloadError::TimedOut)));
    }
}
