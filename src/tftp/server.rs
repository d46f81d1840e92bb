//! The TFTP server shell: sockets, timers and files around the sans-IO [`Transfer`] core.
//!
//! Standard mode answers each read request from a new ephemeral socket (the transfer ID of
//! RFC 1350) with its own task. Single-port mode serves every transfer from the listening
//! socket, telling clients apart by address, for networks whose NAT or firewall passes only
//! the well-known port.
//!
//! Sending: a transfer's window goes out in batches of up to 64 DATA packets, each batch one
//! file read and one system call ([`BatchSender`]: UDP segmentation offload, else
//! `sendmmsg`), built in a scratch buffer that all transfers of the server share. Batches go
//! through the server's [`Pacer`], whose rate can change while the server runs. Waiting: a
//! transfer alone on the server polls for its ACK briefly before sleeping ([`BusyPoll`]).
//!
//! Files are opened on a thread of the blocking pool, never on the executor, so a slow or
//! hung file system delays only the request that touches it.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;

use smol::future::FutureExt;
use smol::{Async, LocalExecutor, Task};

use super::endpoint::{DatagramEvent, Endpoint, Incoming, Reason, Refusal};
use super::options::Limits;
use super::path::SafePath;
use super::progress::{Progress, TransferGuard};
use super::ratelimit::Pacer;
use super::source::{Content, FileSource, OpenError};
use super::transfer::{Outcome, Retransmit, Transfer};
use super::wire::{ErrorCode, Mode, Packet};
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
    /// Initial rate of the pacer, in bytes per second across all transfers (`None`:
    /// unpaced); [`Server::pacer`] changes it while the server runs.
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
/// the transfer limit and the pacer's rate cap. Transfers started before a change keep what
/// they negotiated.
#[derive(Debug, Clone)]
pub struct Tuning {
    settings: Arc<Mutex<ServerConfig>>,
    pacer: Arc<Pacer>,
}

impl Tuning {
    fn get(&self) -> ServerConfig {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes what `new` changes that a running server can: everything but the address and
    /// single-port mode, which need a new server.
    pub fn apply(&self, new: &ServerConfig) {
        let mut settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        if settings.rate_limit != new.rate_limit {
            self.pacer.set_rate(new.rate_limit);
            settings.rate_limit = new.rate_limit;
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
    pacer: Arc<Pacer>,
    tuning: Tuning,
    shutdown: Shutdown,
}

/// The buffer every transfer of a server fills its DATA batches in, in turn: all of them run
/// on one thread and never hold it across an `await`, so one buffer serves any number of
/// transfers, and memory does not grow with their windows.
type Scratch = Rc<RefCell<BatchBuffer>>;

/// [`MAX_BATCH_BYTES`] that start half a page past a page boundary. The kernel copies a file's
/// bytes out of page-aligned page-cache pages; with a block size that is a multiple of the page
/// size, a block's payload (4 bytes into the buffer, after its header) lands a few bytes past
/// the page offset it comes from, and such a copy runs 3 to 4 times slower on x86 (4K
/// aliasing: 5.4 µs instead of 1.4 µs per 8 KiB here). Where the heap happened to put the
/// buffer decided it; now the buffer's placement does.
struct BatchBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl BatchBuffer {
    const PAGE: usize = 4096;

    fn new() -> Self {
        let bytes = vec![0u8; MAX_BATCH_BYTES + Self::PAGE];
        let start =
            (Self::PAGE / 2 + Self::PAGE - bytes.as_ptr() as usize % Self::PAGE) % Self::PAGE;
        BatchBuffer { bytes, start }
    }

    fn get(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + MAX_BATCH_BYTES]
    }
}

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
    pacer: Arc<Pacer>,
    /// Bytes already reserved with the pacer for datagrams not sent yet.
    prepaid: usize,
    content: Content,
    guard: TransferGuard,
    path: SafePath,
    started: Instant,
}

/// Where [`flush`] left a transfer.
enum Flushed {
    /// It has ended (and was logged).
    Ended,
    /// It waits for the client or its timer, and for the pacer until this instant, if set.
    Waiting(Option<Instant>),
}

impl Server {
    /// Binds the listening socket.
    pub fn bind(config: ServerConfig, source: Arc<dyn FileSource>) -> io::Result<Self> {
        let socket = UdpSocket::bind(config.listen)?;
        // A storm of requests (and, in single-port mode, every client's ACKs) arrives here
        // faster than one thread answers it: give the kernel room to queue it.
        crate::net::grow_recv_buffer(&socket);
        let pacer = Arc::new(Pacer::new(config.rate_limit));
        let tuning = Tuning {
            settings: Arc::new(Mutex::new(config.clone())),
            pacer: pacer.clone(),
        };
        Ok(Server {
            config,
            socket,
            source,
            progress: Progress::with_pacer(pacer.clone()),
            pacer,
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

    /// The pacer all transfers send through: [`Pacer::set_rate`] changes the server's sending
    /// rate while it runs.
    pub fn pacer(&self) -> Arc<Pacer> {
        self.pacer.clone()
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
        let scratch = Rc::new(RefCell::new(BatchBuffer::new()));
        if self.config.single_port {
            self.run_single_port(&socket, &scratch).await
        } else {
            // Transfer tasks run on the calling thread: a lock-step transfer is one wake-up
            // per block, and a wake-up across threads would cost more than the block itself.
            let tasks = LocalExecutor::new();
            tasks.run(self.run_standard(&socket, &tasks, scratch)).await
        }
    }

    async fn run_standard<'a>(
        &'a self,
        socket: &'a Async<UdpSocket>,
        tasks: &LocalExecutor<'a>,
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
            match self.endpoint().handle(from, &buf[..n]) {
                DatagramEvent::Incoming(incoming) => tasks
                    .spawn(self.serve_request(socket, incoming, scratch.clone()))
                    .detach(),
                DatagramEvent::Refuse(refusal) => send_refusal(socket, refusal).await,
                DatagramEvent::Ignore => {}
            }
        }
    }

    /// Standard mode: opens the file, then serves it from a new socket.
    async fn serve_request(
        &self,
        listener: &Async<UdpSocket>,
        incoming: Incoming,
        scratch: Scratch,
    ) {
        let from = incoming.from;
        let opened = self.open_file(&incoming).await;
        let job = match self.start(incoming, opened) {
            Ok(job) => job,
            Err(refusal) => return send_refusal(listener, refusal).await,
        };
        let bind_to = SocketAddr::new(self.config.listen.ip(), 0);
        match Async::<UdpSocket>::bind(bind_to) {
            Ok(socket) => serve_alone(socket, *job, scratch, self.shutdown.clone()).await,
            Err(e) => {
                log::warning_limited!("tftp: {from}: no socket for the transfer: {e}");
                refuse(
                    listener,
                    from,
                    ErrorCode::NotDefined,
                    "server out of sockets",
                )
                .await;
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
        // Requests whose files are being opened (off the executor), with the task doing it.
        let mut opening: Vec<(Incoming, Task<Opened>)> = Vec::new();
        let mut wakeups = Wakeups::default();
        let mut buf = [0u8; RECEIVE_BUF_LEN];
        let mut deadline = Deadline::default();
        loop {
            let stop = &self.shutdown;
            if stop.is_over() || (stop.is_begun() && jobs.is_empty() && opening.is_empty()) {
                for (peer, job) in jobs.drain() {
                    end_for_shutdown(socket, peer, &job).await;
                }
                return Ok(());
            }
            let begun = stop.is_begun();
            let received = async { socket.recv_from(&mut buf).await.map(Event::Datagram) };
            let opened = async { Ok(Event::Opened(first_done(&mut opening).await)) };
            // Wakes the loop when a stop begins, to look at the condition above.
            let stopping = async {
                if begun {
                    smol::future::pending::<()>().await;
                }
                stop.idle(|| true).await;
                Ok(Event::Stopping)
            };
            let wake = earliest(wakeups.next(), stop.deadline());
            let event = deadline
                .race(wake, received.or(opened).or(stopping))
                .await?;
            match event {
                Some(Event::Datagram((n, from))) => {
                    if let Some(job) = jobs.get_mut(&from) {
                        job.transfer
                            .handle_datagram(Instant::now(), from, &buf[..n]);
                        wakeups.after_flush(&sink, &mut jobs, from).await;
                    } else if opening.iter().all(|(incoming, _)| incoming.from != from) {
                        match self.endpoint().handle(from, &buf[..n]) {
                            DatagramEvent::Incoming(incoming) => {
                                let task = self.open_file(&incoming);
                                opening.push((incoming, task));
                            }
                            DatagramEvent::Refuse(refusal) => send_refusal(socket, refusal).await,
                            DatagramEvent::Ignore => {}
                        }
                    }
                }
                Some(Event::Opened((incoming, opened))) => {
                    let from = incoming.from;
                    match self.start(incoming, opened) {
                        Ok(job) => {
                            jobs.insert(from, job);
                            wakeups.after_flush(&sink, &mut jobs, from).await;
                        }
                        Err(refusal) => send_refusal(socket, refusal).await,
                    }
                }
                Some(Event::Stopping) | None => {}
            }
            // Checked after every event, not only when the timer wins the race, so that a
            // busy socket cannot starve the retransmission timers.
            let now = Instant::now();
            while let Some(peer) = wakeups.due(now, &jobs) {
                if let Some(job) = jobs.get_mut(&peer) {
                    job.transfer.handle_timeout(now);
                }
                wakeups.after_flush(&sink, &mut jobs, peer).await;
            }
        }
    }

    /// The admission rules as they stand: the latest tuning, and whether a stop has begun.
    fn endpoint(&self) -> Endpoint {
        let tuned = self.tuning.get();
        Endpoint {
            limits: tuned.limits,
            retransmit: tuned.retransmit,
            max_transfers: tuned.max_transfers,
            single_port: self.config.single_port,
            closing: self.shutdown.is_begun(),
        }
    }

    /// Opens the file of `incoming` on a thread of the blocking pool.
    fn open_file(&self, incoming: &Incoming) -> Task<Opened> {
        let source = self.source.clone();
        let (from, path, mode) = (incoming.from, incoming.path.clone(), incoming.mode);
        smol::unblock(move || open_content(&*source, &path, from, mode))
    }

    /// Starts the transfer of `incoming`, whose file opening gave `opened`, if the endpoint
    /// admits it.
    fn start(&self, incoming: Incoming, opened: Opened) -> Result<Box<Job>, Refusal> {
        let from = incoming.from;
        let now = Instant::now();
        let new = self
            .endpoint()
            .accept(incoming, opened, &self.progress, now)?;
        log::debug!(
            "tftp: {from}: sending {} ({} bytes, blksize {}, windowsize {})",
            new.path,
            new.content.len(),
            new.blksize,
            new.windowsize
        );
        Ok(Box::new(Job {
            transfer: new.transfer,
            source: self.source.clone(),
            pacer: self.pacer.clone(),
            prepaid: 0,
            content: new.content,
            guard: new.guard,
            path: new.path,
            started: now,
        }))
    }
}

/// A file opened for a request, or why not.
type Opened = Result<Content, OpenError>;

/// Opens `path` for `client` from `source`, converted for `mode`: blocking file system work,
/// for a thread of the blocking pool.
fn open_content(
    source: &dyn FileSource,
    path: &SafePath,
    client: SocketAddr,
    mode: Mode,
) -> Result<Content, OpenError> {
    let content = source.open(path, client)?;
    match mode {
        Mode::Octet => Ok(content),
        Mode::Netascii => content.into_netascii(MAX_NETASCII_LEN),
    }
}

/// What woke the single-port loop.
enum Event {
    Datagram((usize, SocketAddr)),
    Opened((Incoming, Opened)),
    /// A stop has begun.
    Stopping,
}

/// The first of the tasks that has finished, taken out of the list with what it was for;
/// pending while none has (forever, if there are none).
async fn first_done<K, T>(tasks: &mut Vec<(K, Task<T>)>) -> (K, T) {
    std::future::poll_fn(|cx| {
        for i in 0..tasks.len() {
            if let Poll::Ready(value) = Pin::new(&mut tasks[i].1).poll(cx) {
                let (key, _) = tasks.swap_remove(i);
                return Poll::Ready((key, value));
            }
        }
        Poll::Pending
    })
    .await
}

/// Single-port mode's timers: when each transfer wants to be woken (its retransmission timer,
/// the next burst of a paced window, or its turn at the pacer). A heap, with entries made stale
/// by an earlier one skipped when they come up.
#[derive(Default)]
struct Wakeups {
    heap: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// The earliest entry in the heap for each transfer.
    scheduled: HashMap<SocketAddr, Instant>,
}

impl Wakeups {
    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A transfer due at `now`, taken off the schedule.
    fn due(&mut self, now: Instant, jobs: &HashMap<SocketAddr, Box<Job>>) -> Option<SocketAddr> {
        while let Some(&Reverse((at, peer))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.scheduled.get(&peer) == Some(&at) {
                self.scheduled.remove(&peer);
                if jobs.contains_key(&peer) {
                    return Some(peer);
                }
            }
        }
        None
    }

    /// Sends what `peer`'s transfer has to send, then schedules its next wake-up, or removes it
    /// once it has ended.
    async fn after_flush(
        &mut self,
        sink: &Sink<'_>,
        jobs: &mut HashMap<SocketAddr, Box<Job>>,
        peer: SocketAddr,
    ) {
        let Some(job) = jobs.get_mut(&peer) else {
            return;
        };
        let paced = match flush(sink, job).await {
            Flushed::Ended => {
                jobs.remove(&peer);
                self.scheduled.remove(&peer);
                return;
            }
            Flushed::Waiting(paced) => paced,
        };
        let want = earliest(job.transfer.poll_timeout(), paced);
        if let Some(at) = want {
            if self.scheduled.get(&peer).is_none_or(|&s| at < s) {
                self.scheduled.insert(peer, at);
                self.heap.push(Reverse((at, peer)));
            }
        }
    }
}

/// Logs why the endpoint refused a request (each reason from its own line, so that a flood of
/// one kind does not use up the log budget of another), then answers it with the ERROR.
async fn send_refusal(socket: &Async<UdpSocket>, refusal: Refusal) {
    let from = refusal.to;
    match refusal.reason.as_deref() {
        None => {}
        Some(Reason::WriteRequest { filename }) => log::warning_limited!(
            "tftp: {from}: write request for {filename:?} refused (read-only server)"
        ),
        Some(Reason::Malformed(e)) => {
            log::warning_limited!("tftp: {from}: malformed request dropped: {e}")
        }
        Some(Reason::Name { name, error }) => {
            log::warning_limited!("tftp: {from}: refused {name:?}: {error}")
        }
        Some(Reason::Option { path, refused }) => {
            log::warning_limited!("tftp: {from}: {path}: {refused}")
        }
        Some(Reason::Open { path, error }) => {
            log::warning_limited!("tftp: {from}: {path}: {error}")
        }
        Some(Reason::Busy { path, max }) => {
            log::warning_limited!("tftp: {from}: {path}: busy ({max} transfers), refused")
        }
    }
    refuse(socket, from, refusal.code, refusal.message).await;
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
        let paced = match flush(&sink, &mut job).await {
            Flushed::Ended => return,
            Flushed::Waiting(paced) => paced,
        };
        if stop.is_over() {
            end_for_shutdown(&socket, job.transfer.peer(), &job).await;
            return;
        }
        // Alone on the thread, a transfer polls for its ACK before sleeping (see BusyPoll);
        // not while it waits for the pacer.
        let polled = match paced {
            None => busy_recv(&socket, &mut buf, &mut busy_poll, || job.guard.alone()).await,
            Some(_) => None,
        };
        let received = match polled {
            Some(datagram) => Ok(Some(datagram)),
            None => {
                let wake = earliest(job.transfer.poll_timeout(), paced);
                let wake = earliest(wake, stop.deadline());
                deadline.race(wake, socket.recv_from(&mut buf)).await
            }
        };
        match received {
            Ok(Some((n, from))) => job
                .transfer
                .handle_datagram(Instant::now(), from, &buf[..n]),
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
    /// The pacer allows the next batch at this instant.
    Paced(Instant),
}

/// Sends everything the transfer has to send now (awaiting room in the socket, not the pacer);
/// once it has ended, logs how and says so.
async fn flush(sink: &Sink<'_>, job: &mut Job) -> Flushed {
    let paced = loop {
        match send_pending(sink, job) {
            Stall::Nothing => break None,
            Stall::SocketFull => {
                if sink.socket.writable().await.is_err() {
                    break None;
                }
            }
            Stall::Paced(at) => break Some(at),
        }
    };
    job.guard.set_acked(job.transfer.bytes_acked());
    job.guard.record(job.transfer.stats());
    match job.transfer.outcome() {
        Some(outcome) => {
            log_outcome(job, outcome);
            Flushed::Ended
        }
        None => Flushed::Waiting(paced),
    }
}

fn log_outcome(job: &Job, outcome: &Outcome) {
    let peer = job.transfer.peer();
    let elapsed = job.started.elapsed();
    let stats = job.transfer.stats();
    log::debug!(
        "tftp: {peer}: {}: {} DATA datagrams sent, {} of them resent, {} loss events ({} timeouts); round trip {} ms on average, {} ms at least",
        job.path,
        stats.data_sent,
        stats.data_retransmitted,
        stats.loss_events,
        stats.timeouts,
        stats.rtt_sum_us / stats.rtt_samples.max(1) / 1000,
        stats.rtt_min_us / 1000
    );
    match outcome {
        Outcome::Complete => {
            job.guard.complete();
            job.source.delivered(job.path.as_str(), peer);
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
        Outcome::TimedOut => {
            job.guard.timed_out();
            log::warning_limited!(
                "tftp: {peer}: {} timed out after {} of {} bytes",
                job.path,
                job.transfer.bytes_acked(),
                job.transfer.size()
            )
        }
        Outcome::ReadFailed(why) => log::warning!("tftp: {peer}: {}: read failed: {why}", job.path),
    }
}

/// Sends the transfer's datagrams, a batch per system call, until it has nothing to send or
/// must wait. The scratch buffer is borrowed only here, never across an `await`.
fn send_pending(sink: &Sink<'_>, job: &mut Job) -> Stall {
    let mut scratch = sink.scratch.borrow_mut();
    let scratch = scratch.get();
    // Paced, batches are a quantum: transfers waiting for the pacer take turns in slices.
    let datagrams = job.pacer.quantum().map_or(MAX_BATCH_DATAGRAMS, |quantum| {
        (quantum / job.transfer.segment_len()).clamp(1, MAX_BATCH_DATAGRAMS)
    });
    let len = job.transfer.batch_buffer_len(datagrams).min(scratch.len());
    let buf = &mut scratch[..len];
    let now = Instant::now();
    while let Some(tx) = job
        .transfer
        .poll_transmit(now, datagrams, buf, &job.content)
    {
        let owed = tx.len.saturating_sub(job.prepaid);
        if owed > 0 {
            job.prepaid += owed;
            // Control packets are never held back: only DATA can be taken back and resent.
            if let Some(at) = job.pacer.reserve(now, owed) {
                if job.transfer.requeue_unsent(0) {
                    return Stall::Paced(at);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::client::fetch;
    use crate::tftp::download::{ClientRetransmit, RequestSpec};
    use std::time::Duration;

    /// Files whose opening takes `delay` when their name starts with "slow".
    struct SlowDisk {
        delay: Duration,
    }

    impl FileSource for SlowDisk {
        fn open(&self, path: &SafePath, _: SocketAddr) -> Result<Content, OpenError> {
            if path.as_str().starts_with("slow") {
                std::thread::sleep(self.delay);
            }
            Ok(Content::Bytes(Arc::from(&[7u8; 100_000][..])))
        }
    }

    #[test]
    fn a_slow_file_system_stalls_only_the_request_that_touches_it() {
        // Issue 11, defect 8: opening a file on the executor stopped every transfer while the
        // open waited (a FIFO swapped in for a served file waited forever).
        for single_port in [false, true] {
            let config = ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                single_port,
                ..ServerConfig::default()
            };
            let disk = Arc::new(SlowDisk {
                delay: Duration::from_secs(2),
            });
            let server = Server::bind(config, disk).unwrap();
            let addr = server.local_addr().unwrap();
            let spec = |path: &str| RequestSpec {
                path: path.into(),
                blksize: Some(1468),
                windowsize: Some(16),
                tsize: true,
            };
            let took = smol::block_on(
                async {
                    server.run().await.unwrap();
                    unreachable!("the server stopped")
                }
                .or(async {
                    let slow = async {
                        fetch(
                            addr,
                            spec("slow"),
                            ClientRetransmit::default(),
                            &mut Vec::new(),
                        )
                        .await
                        .unwrap();
                        unreachable!("the slow file came first")
                    };
                    let fast = async {
                        smol::Timer::after(Duration::from_millis(100)).await;
                        let started = Instant::now();
                        let mut got = Vec::new();
                        fetch(addr, spec("fast"), ClientRetransmit::default(), &mut got)
                            .await
                            .unwrap();
                        assert_eq!(got.len(), 100_000);
                        started.elapsed()
                    };
                    slow.or(fast).await
                }),
            );
            assert!(
                took < Duration::from_secs(1),
                "single-port {single_port}: {took:?}"
            );
        }
    }
}
