//! The TFTP server shell: sockets, timers and files around the sans-IO [`Transfer`] core.
//!
//! Standard mode answers each read request from a new ephemeral socket (the transfer ID of
//! RFC 1350) with its own task. Single-port mode serves every transfer from the listening
//! socket, telling clients apart by address, for networks whose NAT or firewall passes only
//! the well-known port.
//!
//! Sending: a transfer's window goes out in batches of up to 64 DATA packets, each batch one
//! file read and one system call ([`BatchSender`]: UDP segmentation offload, else
//! `sendmmsg`), built in a scratch buffer that all transfers of the server share. Waiting: a
//! transfer alone on the server polls for its ACK briefly before sleeping ([`BusyPoll`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Timer};

use super::options::{negotiate, Limits};
use super::path::sanitize;
use super::progress::{Progress, TransferGuard};
use super::ratelimit::TokenBucket;
use super::source::{Content, FileSource, OpenError};
use super::transfer::{Outcome, Retransmit, Transfer};
use super::wire::{ErrorCode, Mode, Packet, Request};
use crate::lifecycle::{earliest, Shutdown};
use crate::log;
use crate::net::{
    busy_recv, BatchSender, BusyPoll, Deadline, MAX_BATCH_BYTES, MAX_BATCH_DATAGRAMS,
};

/// Largest file served in netascii mode (converted in memory).
const MAX_NETASCII_LEN: u64 = 4 << 20;
/// Largest datagram we read from a client (requests, ACKs, ERRORs); longer ones are truncated
/// and fail to parse.
const RECEIVE_BUF_LEN: usize = 2048;
/// How often single-port mode checks its transfers' retransmission timers.
const SINGLE_PORT_TICK: Duration = Duration::from_millis(20);

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest block and window sizes granted.
    pub limits: Limits,
    /// Retransmission timer and retry limit.
    pub retransmit: Retransmit,
    /// Transfers served at once; more requests are refused at once so that the client can
    /// try another server.
    pub max_transfers: usize,
    /// Serve every transfer from the listening port.
    pub single_port: bool,
    /// Cap on the bytes per second sent across all transfers.
    pub rate_limit: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            limits: Limits::default(),
            retransmit: Retransmit::default(),
            max_transfers: 512,
            single_port: false,
            rate_limit: None,
        }
    }
}

/// The settings a running server takes without rebinding (a reload): limits, retransmission,
/// the transfer limit and the rate of an existing rate cap. Transfers started before a change
/// keep what they negotiated.
#[derive(Debug, Clone)]
pub struct Tuning {
    settings: Arc<Mutex<ServerConfig>>,
    limiter: Option<Limiter>,
}

impl Tuning {
    fn get(&self) -> ServerConfig {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes what `new` changes that a running server can: limits, retransmission, the
    /// transfer limit, and the rate of a rate cap it has (switching the cap on or off, the
    /// address and single-port mode need a new server).
    pub fn apply(&self, new: &ServerConfig) {
        let mut settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(limiter), Some(rate)) = (&self.limiter, new.rate_limit) {
            if settings.rate_limit != Some(rate) {
                *limiter.lock().unwrap_or_else(PoisonError::into_inner) =
                    TokenBucket::new(rate, Instant::now());
                settings.rate_limit = Some(rate);
            }
        }
        settings.limits = new.limits;
        settings.retransmit = new.retransmit;
        settings.max_transfers = new.max_transfers;
    }
}

/// A bound TFTP server, ready to [`run`](Server::run). Binding is synchronous and touches no
/// runtime, so a role can bind its privileged ports, drop root, and only then start smol.
pub struct Server {
    config: ServerConfig,
    socket: UdpSocket,
    source: Arc<dyn FileSource>,
    progress: Arc<Progress>,
    limiter: Option<Limiter>,
    tuning: Tuning,
    shutdown: Shutdown,
}

/// The shared rate cap; all transfers of a server run on one thread, so the lock is never
/// contended.
type Limiter = Arc<Mutex<TokenBucket>>;

/// The buffer every transfer of a server fills its DATA batches in, in turn: all of them run
/// on one thread and never hold it across an `await`, so one buffer serves any number of
/// transfers, and memory does not grow with their windows.
type Scratch = Rc<RefCell<Vec<u8>>>;

/// Where a transfer's datagrams go out: its socket, how to batch on it, the shared buffer.
struct Sink<'a> {
    socket: &'a Async<UdpSocket>,
    batches: BatchSender,
    scratch: &'a Scratch,
}

/// A transfer being served: the core, its bytes and its place in the progress table.
struct Job {
    transfer: Transfer,
    /// Told when the client has the whole file.
    source: Arc<dyn FileSource>,
    limiter: Option<Limiter>,
    /// Bytes already taken from the rate limiter for datagrams not sent yet.
    prepaid: usize,
    content: Content,
    guard: TransferGuard,
    path: String,
    started: Instant,
}

/// What to do with a datagram that arrived on the listening port.
enum Admission {
    Start(Box<Job>),
    /// Refuse with an ERROR to the sender.
    Refuse(ErrorCode, &'static str),
    Ignore,
}

impl Server {
    /// Binds the listening socket.
    pub fn bind(config: ServerConfig, source: Arc<dyn FileSource>) -> io::Result<Self> {
        let socket = UdpSocket::bind(config.listen)?;
        if config.single_port {
            // Every client's ACKs arrive here: give the kernel room to queue bursts.
            crate::net::grow_recv_buffer(&socket);
        }
        let limiter = config
            .rate_limit
            .map(|rate| Arc::new(Mutex::new(TokenBucket::new(rate, Instant::now()))));
        let tuning = Tuning {
            settings: Arc::new(Mutex::new(config.clone())),
            limiter: limiter.clone(),
        };
        Ok(Server {
            config,
            socket,
            source,
            progress: Progress::new(),
            limiter,
            tuning,
            shutdown: Shutdown::default(),
        })
    }

    /// Replaces the file source (for a role that learns what to serve only after binding).
    pub fn with_source(self, source: Arc<dyn FileSource>) -> Self {
        Server { source, ..self }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The live transfer counters, for the load monitor.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The settings that can change while it runs.
    pub fn tuning(&self) -> Tuning {
        self.tuning.clone()
    }

    /// Its graceful stop: once begun, requests are refused ("server shutting down"), transfers
    /// in progress go on until the deadline and are then ended with an ERROR, and
    /// [`Server::run`] returns when none is left.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until the socket fails, or until its [`Server::shutdown`] is over.
    pub async fn run(self) -> io::Result<()> {
        log::info!(
            "tftp: serving on {} ({} mode, max blksize {}, max windowsize {}, max {} transfers)",
            self.local_addr()?,
            if self.config.single_port {
                "single-port"
            } else {
                "standard"
            },
            self.config.limits.max_blksize,
            self.config.limits.max_windowsize,
            self.config.max_transfers
        );
        let socket = Async::new(self.socket.try_clone()?)?;
        let scratch = Rc::new(RefCell::new(vec![0u8; MAX_BATCH_BYTES]));
        if self.config.single_port {
            self.run_single_port(&socket, &scratch).await
        } else {
            // Transfer tasks run on the calling thread: a lock-step transfer is one wake-up
            // per block, and a wake-up across threads would cost more than the block itself.
            let tasks = LocalExecutor::new();
            tasks.run(self.run_standard(&socket, &tasks, scratch)).await
        }
    }

    async fn run_standard(
        &self,
        socket: &Async<UdpSocket>,
        tasks: &LocalExecutor<'_>,
        scratch: Scratch,
    ) -> io::Result<()> {
        let mut buf = [0u8; RECEIVE_BUF_LEN];
        loop {
            let received = async { socket.recv_from(&mut buf).await.map(Some) }
                .or(async {
                    self.shutdown.idle(|| tasks.is_empty()).await;
                    Ok(None)
                })
                .await?;
            let Some((n, from)) = received else {
                return Ok(());
            };
            match self.admit(from, &buf[..n]) {
                Admission::Start(job) => {
                    let bind_to = SocketAddr::new(self.config.listen.ip(), 0);
                    match Async::<UdpSocket>::bind(bind_to) {
                        Ok(socket) => {
                            let stop = self.shutdown.clone();
                            tasks
                                .spawn(serve_alone(socket, *job, scratch.clone(), stop))
                                .detach()
                        }
                        Err(e) => {
                            log::warning_limited!("tftp: {from}: no socket for the transfer: {e}");
                            refuse(socket, from, ErrorCode::NotDefined, "server out of sockets")
                                .await;
                        }
                    }
                }
                Admission::Refuse(code, message) => refuse(socket, from, code, message).await,
                Admission::Ignore => {}
            }
        }
    }

    async fn run_single_port(
        &self,
        socket: &Async<UdpSocket>,
        scratch: &Scratch,
    ) -> io::Result<()> {
        let sink = Sink {
            socket,
            batches: BatchSender::default(),
            scratch,
        };
        let mut jobs: HashMap<SocketAddr, Box<Job>> = HashMap::new();
        let mut buf = [0u8; RECEIVE_BUF_LEN];
        let mut next_tick = Instant::now() + SINGLE_PORT_TICK;
        let mut deadline = Deadline::default();
        loop {
            if self.shutdown.is_over() || (self.shutdown.is_begun() && jobs.is_empty()) {
                for (peer, job) in jobs.drain() {
                    end_for_shutdown(socket, peer, &job).await;
                }
                return Ok(());
            }
            let received = deadline
                .race(Some(next_tick), socket.recv_from(&mut buf))
                .await?;
            if let Some((n, from)) = received {
                if let Some(job) = jobs.get_mut(&from) {
                    job.transfer.handle_datagram(from, &buf[..n]);
                    if flush(&sink, job).await {
                        jobs.remove(&from);
                    }
                } else {
                    match self.admit(from, &buf[..n]) {
                        Admission::Start(mut job) => {
                            if !flush(&sink, &mut job).await {
                                jobs.insert(from, job);
                            }
                        }
                        Admission::Refuse(code, message) => {
                            refuse(socket, from, code, message).await
                        }
                        Admission::Ignore => {}
                    }
                }
            }
            // Checked after every event, not only when the timer wins the race, so that a
            // busy socket cannot starve the retransmission timers.
            let now = Instant::now();
            if now >= next_tick {
                let mut finished = Vec::new();
                for (peer, job) in jobs.iter_mut() {
                    job.transfer.handle_timeout(now);
                    if flush(&sink, job).await {
                        finished.push(*peer);
                    }
                }
                for peer in finished {
                    jobs.remove(&peer);
                }
                next_tick = now + SINGLE_PORT_TICK;
            }
        }
    }

    /// Decides what to do with a datagram on the listening port.
    fn admit(&self, from: SocketAddr, datagram: &[u8]) -> Admission {
        let request = match Packet::parse(datagram) {
            Ok(Packet::Read(request)) => request,
            Ok(Packet::Write(request)) => {
                log::warning_limited!(
                    "tftp: {from}: write request for {:?} refused (read-only server)",
                    request.filename
                );
                return Admission::Refuse(ErrorCode::AccessViolation, "read-only server");
            }
            // ERRORs are never answered (RFC 1350); a stray ACK or DATA has no transfer here.
            Ok(Packet::Error { .. }) => return Admission::Ignore,
            Ok(_) => return Admission::Refuse(ErrorCode::UnknownTid, "no such transfer"),
            Err(e) => {
                log::warning_limited!("tftp: {from}: malformed request dropped: {e}");
                return Admission::Refuse(ErrorCode::IllegalOperation, "malformed request");
            }
        };
        if self.shutdown.is_begun() {
            return Admission::Refuse(
                ErrorCode::NotDefined,
                "server shutting down, try another server",
            );
        }
        match self.open(from, request) {
            Ok(job) => Admission::Start(job),
            Err((code, message)) => Admission::Refuse(code, message),
        }
    }

    fn open(
        &self,
        from: SocketAddr,
        request: Request<'_>,
    ) -> Result<Box<Job>, (ErrorCode, &'static str)> {
        let name = request.filename;
        let tuned = self.tuning.get();
        let path = sanitize(name).map_err(|e| {
            log::warning_limited!("tftp: {from}: refused {name:?}: {e}");
            (ErrorCode::AccessViolation, "file name refused")
        })?;
        let opened = self
            .source
            .open(&path, from)
            .and_then(|c| match request.mode {
                Mode::Octet => Ok(c),
                Mode::Netascii => c.into_netascii(MAX_NETASCII_LEN),
            });
        let content = opened.map_err(|e| {
            log::warning_limited!("tftp: {from}: {path}: {e}");
            match e {
                OpenError::NotFound => (ErrorCode::FileNotFound, "file not found"),
                OpenError::Denied(why) => (ErrorCode::AccessViolation, why),
                OpenError::Io(_) => (ErrorCode::NotDefined, "read error"),
            }
        })?;
        let negotiated =
            negotiate(request.options, tuned.limits, content.len()).map_err(|refused| {
                log::warning_limited!("tftp: {from}: {path}: {refused}");
                (ErrorCode::OptionRefused, "option refused")
            })?;
        let now = Instant::now();
        let guard = self
            .progress
            .try_begin(tuned.max_transfers, from, path.as_str(), content.len(), now)
            .ok_or_else(|| {
                log::warning_limited!(
                    "tftp: {from}: {path}: busy ({} transfers), refused",
                    tuned.max_transfers
                );
                (ErrorCode::NotDefined, "server busy, try another server")
            })?;
        log::debug!(
            "tftp: {from}: sending {path} ({} bytes, blksize {}, windowsize {})",
            content.len(),
            negotiated.blksize,
            negotiated.windowsize
        );
        let transfer = Transfer::new(from, negotiated, tuned.retransmit, content.len());
        Ok(Box::new(Job {
            transfer,
            source: self.source.clone(),
            limiter: self.limiter.clone(),
            prepaid: 0,
            content,
            guard,
            path: path.to_string(),
            started: now,
        }))
    }
}

/// Answers a request with an ERROR.
async fn refuse(socket: &Async<UdpSocket>, to: SocketAddr, code: ErrorCode, message: &str) {
    let mut buf = [0u8; 128];
    if let Ok(len) = (Packet::Error { code, message }).emit(&mut buf) {
        // Best effort: a client that cannot be told will time out.
        let _ = socket.send_to(&buf[..len], to).await;
    }
}

/// Ends a transfer that a shutdown cut short, with an ERROR so that the client moves on at once.
async fn end_for_shutdown(socket: &Async<UdpSocket>, peer: SocketAddr, job: &Job) {
    refuse(socket, peer, ErrorCode::NotDefined, "server shutting down").await;
    log::info!(
        "tftp: {peer}: {} ended by the shutdown after {} of {} bytes",
        job.path,
        job.transfer.bytes_acked(),
        job.transfer.size()
    );
}

/// Serves one transfer from its own socket until it ends (or `stop` is over).
async fn serve_alone(socket: Async<UdpSocket>, mut job: Job, scratch: Scratch, stop: Shutdown) {
    let sink = Sink {
        socket: &socket,
        batches: BatchSender::default(),
        scratch: &scratch,
    };
    let mut buf = [0u8; RECEIVE_BUF_LEN];
    let mut deadline = Deadline::default();
    let mut busy_poll = BusyPoll::default();
    loop {
        if flush(&sink, &mut job).await {
            return;
        }
        if stop.is_over() {
            end_for_shutdown(&socket, job.transfer.peer(), &job).await;
            return;
        }
        // Alone on the thread, a transfer polls for its ACK before sleeping (see BusyPoll).
        let polled = busy_recv(&socket, &mut buf, &mut busy_poll, || job.guard.alone()).await;
        let received = match polled {
            Some(datagram) => Ok(Some(datagram)),
            None => {
                let wake = earliest(job.transfer.poll_timeout(), stop.deadline());
                deadline.race(wake, socket.recv_from(&mut buf)).await
            }
        };
        match received {
            Ok(Some((n, from))) => job.transfer.handle_datagram(from, &buf[..n]),
            Ok(None) => {}
            Err(e) => {
                log::warning!("tftp: {}: receive failed: {e}", job.transfer.peer());
                return;
            }
        }
        // After every event: a stream of stray datagrams must not starve the timer.
        job.transfer.handle_timeout(Instant::now());
    }
}

/// What stopped [`send_pending`].
enum Stall {
    /// Everything the transfer has to send is sent.
    Nothing,
    /// The socket's send buffer is full.
    SocketFull,
    /// The rate limit allows the next batch at this instant.
    RateLimited(Instant),
}

/// Sends everything the transfer has to send; returns true (and logs) once it has ended.
async fn flush(sink: &Sink<'_>, job: &mut Job) -> bool {
    loop {
        match send_pending(sink, job) {
            Stall::Nothing => break,
            Stall::SocketFull => {
                if sink.socket.writable().await.is_err() {
                    break;
                }
            }
            Stall::RateLimited(at) => {
                Timer::at(at).await;
            }
        }
    }
    job.guard.set_acked(job.transfer.bytes_acked());
    let Some(outcome) = job.transfer.outcome() else {
        return false;
    };
    let peer = job.transfer.peer();
    let elapsed = job.started.elapsed();
    match outcome {
        Outcome::Complete => {
            job.guard.complete();
            job.source.delivered(&job.path, peer);
            let size = job.transfer.size();
            log::info!(
                "tftp: {peer}: sent {} ({size} bytes) in {} ms, {:.1} MB/s",
                job.path,
                elapsed.as_millis(),
                size as f64 / elapsed.as_secs_f64().max(1e-6) / 1e6
            );
        }
        // UEFI PXE asks for the size first and ends that transfer after the OACK with error 8:
        // routine, so only at debug level.
        Outcome::ClientError {
            code: ErrorCode::OptionRefused,
            message,
        } => log::debug!(
            "tftp: {peer}: {} size probe ended by the client: {message:?}",
            job.path
        ),
        Outcome::ClientError { code, message } => log::info_limited!(
            "tftp: {peer}: {} ended by the client: error {} {message:?}",
            job.path,
            code.code()
        ),
        Outcome::TimedOut => log::warning_limited!(
            "tftp: {peer}: {} timed out after {} of {} bytes",
            job.path,
            job.transfer.bytes_acked(),
            job.transfer.size()
        ),
        Outcome::ReadFailed(why) => log::warning!("tftp: {peer}: {}: read failed: {why}", job.path),
    }
    true
}

/// Sends the transfer's datagrams, a batch per system call, until it has nothing to send or
/// must wait. The scratch buffer is borrowed only here, never across an `await`.
fn send_pending(sink: &Sink<'_>, job: &mut Job) -> Stall {
    let mut scratch = sink.scratch.borrow_mut();
    let len = job
        .transfer
        .batch_buffer_len(MAX_BATCH_DATAGRAMS)
        .min(scratch.len());
    let buf = &mut scratch[..len];
    let now = Instant::now();
    while let Some(tx) = job
        .transfer
        .poll_transmit(now, MAX_BATCH_DATAGRAMS, buf, &job.content)
    {
        if let Some(limiter) = &job.limiter {
            let owed = tx.len.saturating_sub(job.prepaid);
            let ready_at = (owed > 0)
                .then(|| {
                    job.prepaid += owed;
                    let mut bucket = limiter.lock().unwrap_or_else(PoisonError::into_inner);
                    bucket.take(now, owed)
                })
                .flatten();
            // Control packets are never held back: only DATA can be taken back and resent.
            if let Some(at) = ready_at.filter(|_| job.transfer.requeue_unsent(0)) {
                return Stall::RateLimited(at);
            }
        }
        let sent = match sink
            .batches
            .send(sink.socket, &buf[..tx.len], tx.segment_len, tx.to)
        {
            Ok(sent) => sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                // Like a lost datagram: the retransmission timer covers it.
                log::debug!("tftp: {}: send failed: {e}", tx.to);
                tx.count()
            }
        };
        job.prepaid = job
            .prepaid
            .saturating_sub((sent * tx.segment_len).min(tx.len));
        if sent < tx.count() {
            job.transfer.requeue_unsent(sent);
            return Stall::SocketFull;
        }
    }
    Stall::Nothing
}
