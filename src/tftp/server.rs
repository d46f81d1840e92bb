//! The TFTP server shell: sockets, timers and files around the sans-IO [`Transfer`] core.
//!
//! Standard mode answers each read request from a new ephemeral socket (the transfer ID of
//! RFC 1350) with its own task. Single-port mode serves every transfer from the listening
//! socket, telling clients apart by address, for networks whose NAT or firewall passes only
//! the well-known port.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smol::net::UdpSocket;
use smol::{LocalExecutor, Timer};

use super::options::{negotiate, Limits};
use super::path::sanitize;
use super::progress::{Progress, TransferGuard};
use super::ratelimit::TokenBucket;
use super::source::{Content, FileSource, OpenError};
use super::transfer::{Outcome, Retransmit, Transfer};
use super::wire::{ErrorCode, Mode, Packet, Request};
use crate::log;
use crate::net::Deadline;

/// Largest file served in netascii mode (converted in memory).
const MAX_NETASCII_LEN: u64 = 4 << 20;
/// Largest request datagram we read; longer ones are truncated and fail to parse.
const REQUEST_BUF_LEN: usize = 2048;
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

/// A bound TFTP server, ready to [`run`](Server::run). Binding is synchronous and touches no
/// runtime, so a role can bind its privileged ports, drop root, and only then start smol.
pub struct Server {
    config: ServerConfig,
    socket: std::net::UdpSocket,
    source: Arc<dyn FileSource>,
    progress: Arc<Progress>,
    limiter: Option<Limiter>,
}

/// The shared rate cap; all transfers of a server run on one thread, so the lock is never
/// contended.
type Limiter = Arc<Mutex<TokenBucket>>;

/// A transfer being served: the core, its bytes and its place in the progress table.
struct Job {
    transfer: Transfer,
    limiter: Option<Limiter>,
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
        let socket = std::net::UdpSocket::bind(config.listen)?;
        if config.single_port {
            // Every client's ACKs arrive here: give the kernel room to queue bursts.
            crate::net::grow_recv_buffer(&socket);
        }
        let limiter = config
            .rate_limit
            .map(|rate| Arc::new(Mutex::new(TokenBucket::new(rate, Instant::now()))));
        Ok(Server {
            config,
            socket,
            source,
            progress: Progress::new(),
            limiter,
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

    /// Serves until the socket fails.
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
        let socket = UdpSocket::try_from(self.socket.try_clone()?)?;
        if self.config.single_port {
            self.run_single_port(&socket).await
        } else {
            // Transfer tasks run on the calling thread: a lock-step transfer is one wake-up
            // per block, and a wake-up across threads would cost more than the block itself.
            let tasks = LocalExecutor::new();
            tasks.run(self.run_standard(&socket, &tasks)).await
        }
    }

    async fn run_standard(&self, socket: &UdpSocket, tasks: &LocalExecutor<'_>) -> io::Result<()> {
        let mut buf = [0u8; REQUEST_BUF_LEN];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await?;
            match self.admit(from, &buf[..n]) {
                Admission::Start(job) => {
                    let bind_to = SocketAddr::new(self.config.listen.ip(), 0);
                    match UdpSocket::bind(bind_to).await {
                        Ok(socket) => tasks.spawn(serve_alone(socket, *job)).detach(),
                        Err(e) => {
                            log::warning!("tftp: {from}: no socket for the transfer: {e}");
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

    async fn run_single_port(&self, socket: &UdpSocket) -> io::Result<()> {
        let mut jobs: HashMap<SocketAddr, Box<Job>> = HashMap::new();
        let blksize_buf = usize::from(self.config.limits.max_blksize) + 4;
        let mut buf = vec![0u8; blksize_buf.max(REQUEST_BUF_LEN)];
        let mut next_tick = Instant::now() + SINGLE_PORT_TICK;
        let mut deadline = Deadline::default();
        loop {
            let received = deadline.recv(socket, &mut buf, Some(next_tick)).await?;
            if let Some((n, from)) = received {
                if let Some(job) = jobs.get_mut(&from) {
                    job.transfer.handle_datagram(from, &buf[..n]);
                    if flush(socket, job, &mut buf).await {
                        jobs.remove(&from);
                    }
                } else {
                    match self.admit(from, &buf[..n]) {
                        Admission::Start(mut job) => {
                            if !flush(socket, &mut job, &mut buf).await {
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
                    if flush(socket, job, &mut buf).await {
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
                log::warning!(
                    "tftp: {from}: write request for {:?} refused (read-only server)",
                    request.filename
                );
                return Admission::Refuse(ErrorCode::AccessViolation, "read-only server");
            }
            // ERRORs are never answered (RFC 1350); a stray ACK or DATA has no transfer here.
            Ok(Packet::Error { .. }) => return Admission::Ignore,
            Ok(_) => return Admission::Refuse(ErrorCode::UnknownTid, "no such transfer"),
            Err(e) => {
                log::warning!("tftp: {from}: malformed request dropped: {e}");
                return Admission::Refuse(ErrorCode::IllegalOperation, "malformed request");
            }
        };
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
        let path = sanitize(name).map_err(|e| {
            log::warning!("tftp: {from}: refused {name:?}: {e}");
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
            log::warning!("tftp: {from}: {path}: {e}");
            match e {
                OpenError::NotFound => (ErrorCode::FileNotFound, "file not found"),
                OpenError::Denied(why) => (ErrorCode::AccessViolation, why),
                OpenError::Io(_) => (ErrorCode::NotDefined, "read error"),
            }
        })?;
        let negotiated =
            negotiate(request.options, self.config.limits, content.len()).map_err(|refused| {
                log::warning!("tftp: {from}: {path}: {refused}");
                (ErrorCode::OptionRefused, "option refused")
            })?;
        let now = Instant::now();
        let guard = self
            .progress
            .try_begin(
                self.config.max_transfers,
                from,
                path.as_str(),
                content.len(),
                now,
            )
            .ok_or_else(|| {
                log::warning!(
                    "tftp: {from}: {path}: busy ({} transfers), refused",
                    self.config.max_transfers
                );
                (ErrorCode::NotDefined, "server busy, try another server")
            })?;
        log::debug!(
            "tftp: {from}: sending {path} ({} bytes, blksize {}, windowsize {})",
            content.len(),
            negotiated.blksize,
            negotiated.windowsize
        );
        let transfer = Transfer::new(from, negotiated, self.config.retransmit, content.len());
        Ok(Box::new(Job {
            transfer,
            limiter: self.limiter.clone(),
            content,
            guard,
            path: path.to_string(),
            started: now,
        }))
    }
}

/// Answers a request with an ERROR.
async fn refuse(socket: &UdpSocket, to: SocketAddr, code: ErrorCode, message: &str) {
    let mut buf = [0u8; 128];
    if let Ok(len) = (Packet::Error { code, message }).emit(&mut buf) {
        // Best effort: a client that cannot be told will time out.
        let _ = socket.send_to(&buf[..len], to).await;
    }
}

/// Serves one transfer from its own socket until it ends.
async fn serve_alone(socket: UdpSocket, mut job: Job) {
    let mut buf = vec![0u8; job.transfer.buffer_len()];
    let mut deadline = Deadline::default();
    loop {
        if flush(&socket, &mut job, &mut buf).await {
            return;
        }
        match deadline
            .recv(&socket, &mut buf, job.transfer.poll_timeout())
            .await
        {
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

/// Sends everything the transfer has to send; returns true (and logs) once it has ended.
async fn flush(socket: &UdpSocket, job: &mut Job, buf: &mut [u8]) -> bool {
    let now = Instant::now();
    while let Some(tx) = job.transfer.poll_transmit(now, buf, &job.content) {
        let ready_at = job.limiter.as_ref().and_then(|l| {
            let mut bucket = l.lock().unwrap_or_else(PoisonError::into_inner);
            bucket.take(Instant::now(), tx.len)
        });
        if let Some(at) = ready_at {
            Timer::at(at).await;
        }
        if let Err(e) = socket.send_to(&buf[..tx.len], tx.to).await {
            // Like a lost datagram: the retransmission timer covers it.
            log::debug!("tftp: {}: send failed: {e}", tx.to);
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
        Outcome::ClientError { code, message } => log::info!(
            "tftp: {peer}: {} ended by the client: error {} {message:?}",
            job.path,
            code.code()
        ),
        Outcome::TimedOut => log::warning!(
            "tftp: {peer}: {} timed out after {} of {} bytes",
            job.path,
            job.transfer.bytes_acked(),
            job.transfer.size()
        ),
        Outcome::ReadFailed(why) => log::warning!("tftp: {peer}: {}: read failed: {why}", job.path),
    }
    true
}
