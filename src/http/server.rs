//! The HTTP server shell: a listening socket, one task per connection on the calling thread,
//! around the sans-IO [`wire`](super::wire) parser and [`exchange`](super::exchange) rules.
//!
//! Files go out with `sendfile(2)` (rustix's safe wrapper) straight from the page cache to the
//! socket: no copy of a file in this process, whatever the number of clients. Per connection
//! the server holds a request buffer that grows to the head limit only while a head is that
//! long. Sockets get `TCP_NOTSENT_LOWAT`, so the kernel queues little that is not yet on the
//! wire: the bytes counted as delivered run ahead of the client's acknowledgements by at most
//! that plus what is in flight.
//!
//! Load accounting: every answer with a body is a transfer in the [`Progress`] the TFTP server
//! counts in (so the alternate's report shows both protocols alike), and the time during which
//! some transfer waited for its socket to take more ([`Held`]) tells the capacity estimator
//! that the link, not the clients, was the limit.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor, Timer};

use super::exchange::{answer, content_type, route, ConnectionClock, Expiry, Found, Timeouts};
use super::wire::{parse_request, Request, ResponseHead, Status, MAX_HEAD_LEN};
use crate::lifecycle::{earliest, Shutdown};
use crate::log;
use crate::net::Deadline;
use crate::report::monitor::HashedFile;
use crate::tftp::path::SafePath;
use crate::tftp::progress::{Progress, TransferGuard};
use crate::tftp::source::{Content, FileSource, OpenError};

/// Unsent bytes the kernel may queue per connection (`TCP_NOTSENT_LOWAT`).
const NOTSENT_LOWAT: u32 = 128 << 10;
/// Most bytes one `sendfile` call is asked for; the task yields between calls, so one fast
/// client cannot keep the others waiting.
const SENDFILE_CHUNK: usize = 1 << 20;
/// How much of a request a read asks for at once.
const READ_CHUNK: usize = 2048;
/// A refused connection is drained this long after its 503 (so that closing it does not
/// reset the answer away); at most this many are drained at once, the rest just closed.
const REFUSAL_DRAIN: Duration = Duration::from_secs(1);
const MAX_REFUSALS_DRAINING: usize = 64;
/// How often the accept loop looks whether a stop has begun.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Connections at once; one more is answered 503 and closed at once.
    pub max_connections: usize,
    /// Transfers at once in the shared counters (TFTP's and HTTP's together); a request for a
    /// body past it is answered 503.
    pub max_transfers: usize,
    /// Idle, request and send time limits.
    pub timeouts: Timeouts,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            max_connections: 256,
            max_transfers: 512,
            timeouts: Timeouts::default(),
        }
    }
}

/// Strong entity tags of the boot files: each file's SHA-256 from the boot-file digest, used
/// only while the file opened has the size and modification time that were hashed.
#[derive(Debug, Default)]
pub struct Etags {
    files: HashMap<String, (u64, Option<SystemTime>, [u8; 32])>,
}

impl Etags {
    /// The tags of the files the digest hashed.
    pub fn new(files: &[HashedFile]) -> Etags {
        Etags {
            files: files
                .iter()
                .map(|f| (f.path.clone(), (f.len, f.modified, f.sha256)))
                .collect(),
        }
    }

    fn tag(&self, path: &SafePath, content: &Content) -> Option<String> {
        let Content::File { file, len } = content else {
            return None;
        };
        let &(hashed_len, modified, sha) = self.files.get(path.as_str())?;
        let now = file.metadata().ok()?;
        (hashed_len == *len && modified.is_some() && now.modified().ok() == modified)
            .then(|| crate::report::wire::hex(&sha))
    }
}

/// Time during which at least one transfer waited for its socket to take more bytes.
#[derive(Debug, Default)]
pub struct Held {
    inner: Mutex<HeldInner>,
}

#[derive(Debug, Default)]
struct HeldInner {
    waiting: usize,
    since: Option<Instant>,
    total: Duration,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, now: Instant) {
        let mut held = self.lock();
        if held.waiting == 0 {
            held.since = Some(now);
        }
        held.waiting += 1;
    }

    fn end(&self, now: Instant) {
        let mut held = self.lock();
        held.waiting = held.waiting.saturating_sub(1);
        if held.waiting == 0 {
            if let Some(since) = held.since.take() {
                held.total += now.saturating_duration_since(since);
            }
        }
    }

    /// Total held time up to `now`, counting a wait still under way.
    pub fn total(&self, now: Instant) -> Duration {
        let held = self.lock();
        held.total
            + held
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// A bound HTTP server, ready to [`run`](HttpServer::run). Binding is synchronous, so a role
/// binds its privileged ports before it drops root.
pub struct HttpServer {
    listener: TcpListener,
    settings: Arc<Mutex<HttpSettings>>,
    source: Arc<dyn FileSource>,
    progress: Arc<Progress>,
    etags: Arc<RwLock<Etags>>,
    held: Arc<Held>,
}

/// What every connection task of a server shares.
struct Shared {
    settings: Arc<Mutex<HttpSettings>>,
    source: Arc<dyn FileSource>,
    progress: Arc<Progress>,
    etags: Arc<RwLock<Etags>>,
    held: Arc<Held>,
    shutdown: Shutdown,
    stop: smol::channel::Receiver<()>,
}

impl Shared {
    fn settings(&self) -> HttpSettings {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HttpServer {
    /// Binds the listening socket. Transfers are counted in `progress` (the TFTP server's, on
    /// an alternate).
    pub fn bind(
        settings: HttpSettings,
        source: Arc<dyn FileSource>,
        progress: Arc<Progress>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(settings.listen)?;
        Ok(HttpServer {
            listener,
            settings: Arc::new(Mutex::new(settings)),
            source,
            progress,
            etags: Arc::default(),
            held: Arc::default(),
        })
    }

    /// Replaces the file source (for a role that learns what to serve only after binding).
    pub fn with_source(self, source: Arc<dyn FileSource>) -> Self {
        HttpServer { source, ..self }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The entity tags, replaced when the boot files are hashed again.
    pub fn etags(&self) -> Arc<RwLock<Etags>> {
        self.etags.clone()
    }

    /// Time transfers waited for their sockets, for the capacity estimator.
    pub fn held(&self) -> Arc<Held> {
        self.held.clone()
    }

    /// Changes the limits (a reload); the address stays.
    pub fn tuning(&self) -> impl Fn(HttpSettings) + 'static {
        let settings = self.settings.clone();
        move |new: HttpSettings| {
            let mut s = settings.lock().unwrap_or_else(PoisonError::into_inner);
            *s = HttpSettings {
                listen: s.listen,
                ..new
            };
        }
    }

    /// Serves until the socket fails or `shutdown` is over: once it has begun, new connections
    /// get 503, idle ones are closed, and answers under way may finish until its deadline.
    pub async fn run(self, shutdown: Shutdown) -> io::Result<()> {
        let listener = Async::new(self.listener)?;
        let settings = *self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        log::info!(
            "http: serving on {} (max {} connections, idle {} s, request {} s, send {} s)",
            listener.get_ref().local_addr()?,
            settings.max_connections,
            settings.timeouts.idle.as_secs(),
            settings.timeouts.request.as_secs(),
            settings.timeouts.send.as_secs()
        );
        let (stop_tx, stop) = smol::channel::bounded::<()>(1);
        let shared = Rc::new(Shared {
            settings: self.settings,
            source: self.source,
            progress: self.progress,
            etags: self.etags,
            held: self.held,
            shutdown: shutdown.clone(),
            stop,
        });
        let tasks = LocalExecutor::new();
        let connections = Rc::new(Cell::new(0usize));
        let refusals = Rc::new(Cell::new(0usize));
        let accept_loop = async {
            loop {
                let accepted = async { listener.accept().await.map(Some) }
                    .or(async {
                        while !shutdown.is_begun() {
                            Timer::after(STOP_POLL).await;
                        }
                        stop_tx.close();
                        shutdown.idle(|| connections.get() == 0).await;
                        Ok(None)
                    })
                    .await;
                let (stream, peer) = match accepted {
                    Ok(Some(accepted)) => accepted,
                    Ok(None) => return Ok(()),
                    // Out of descriptors, or the client reset before accept: not fatal.
                    Err(e) if is_transient(&e) => {
                        log::warning_limited!("http: accept: {e}");
                        Timer::after(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let cap = shared.settings().max_connections;
                if shutdown.is_begun() || connections.get() >= cap {
                    log::warning_limited!(
                        "http: {peer}: refused with 503 ({})",
                        if shutdown.is_begun() {
                            "shutting down".to_string()
                        } else {
                            format!("{cap} connections open")
                        }
                    );
                    refuse(&tasks, stream, &refusals);
                    continue;
                }
                connections.set(connections.get() + 1);
                let shared = shared.clone();
                let count = connections.clone();
                tasks
                    .spawn(async move {
                        serve_connection(stream, peer, &shared).await;
                        count.set(count.get() - 1);
                    })
                    .detach();
            }
        };
        let over = async {
            loop {
                if shutdown.is_over() {
                    return Ok(());
                }
                Timer::after(STOP_POLL).await;
            }
        };
        tasks.run(accept_loop.or(over)).await
    }
}

/// Whether an accept error passes (out of descriptors, a client that reset before accept).
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(24)
        || e.raw_os_error() == Some(23)
}

/// The immediate 503 past the connection cap: written at once, the connection's sending half
/// closed, its request drained for a moment so that the close does not reset the answer away.
fn refuse(tasks: &LocalExecutor<'_>, stream: Async<TcpStream>, draining: &Rc<Cell<usize>>) {
    let mut head = String::new();
    ResponseHead::bare(Status::ServiceUnavailable, true)
        .render(crate::sys::unix_ms() / 1000, &mut head);
    // Best effort: a new connection's send buffer takes a head at once.
    let _ = stream.get_ref().write(head.as_bytes());
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
    if draining.get() >= MAX_REFUSALS_DRAINING {
        return;
    }
    draining.set(draining.get() + 1);
    let draining = draining.clone();
    tasks
        .spawn(async move {
            let mut sink = [0u8; 512];
            let drain =
                async { while matches!((&stream).read(&mut sink).await, Ok(n) if n > 0) {} };
            drain
                .or(async {
                    Timer::after(REFUSAL_DRAIN).await;
                })
                .await;
            draining.set(draining.get() - 1);
        })
        .detach();
}

/// What a read gave.
enum Read {
    Bytes(usize),
    /// The server is stopping and this connection is between requests.
    Stop,
    /// The connection's deadline passed.
    Timeout,
}

/// Serves one connection's requests until it closes, fails, times out or the server stops.
async fn serve_connection(stream: Async<TcpStream>, peer: SocketAddr, shared: &Shared) {
    // Heads and small generated answers go out at once, not after the client's delayed ACK.
    let _ = stream.get_ref().set_nodelay(true);
    let _ = socket2::SockRef::from(stream.get_ref()).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    let timeouts = shared.settings().timeouts;
    let mut clock = ConnectionClock::new(timeouts, Instant::now());
    let mut deadline = Deadline::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let parsed = parse_request(&buf);
        let (request, head_len) = match parsed {
            Ok(Some(parsed)) => parsed,
            Err(refusal) => {
                log::warning_limited!("http: {peer}: {} ({})", refusal.status.code(), refusal.why);
                let head = ResponseHead::bare(refusal.status, true);
                let _ = write_head(&stream, &head, &mut clock, &mut deadline).await;
                return;
            }
            Ok(None) => {
                if !buf.is_empty() {
                    clock.request_bytes(Instant::now());
                }
                match read_more(&stream, &mut buf, &clock, &mut deadline, shared).await {
                    Ok(Read::Bytes(0)) | Ok(Read::Stop) | Err(_) => return,
                    Ok(Read::Bytes(_)) => continue,
                    Ok(Read::Timeout) => match clock.expired(Instant::now()) {
                        Some(Expiry::Request) => {
                            log::warning_limited!("http: {peer}: 408 (request head too slow)");
                            let head = ResponseHead::bare(Status::RequestTimeout, true);
                            let _ = write_head(&stream, &head, &mut clock, &mut deadline).await;
                            return;
                        }
                        Some(_) => return,
                        None => continue,
                    },
                }
            }
        };
        let keep = request.keep_alive && !shared.shutdown.is_begun();
        match serve_request(
            &stream,
            peer,
            &request,
            keep,
            shared,
            &mut clock,
            &mut deadline,
        )
        .await
        {
            Ok(true) if keep => {}
            _ => return,
        }
        buf.drain(..head_len);
        if buf.capacity() > 2 * READ_CHUNK && buf.len() <= READ_CHUNK {
            buf.shrink_to(READ_CHUNK);
        }
        clock.answered(Instant::now());
    }
}

/// Reads more of a request into `buf` (never past the head limit), racing the connection's
/// deadline and, between requests, the server's stop.
async fn read_more(
    stream: &Async<TcpStream>,
    buf: &mut Vec<u8>,
    clock: &ConnectionClock,
    deadline: &mut Deadline,
    shared: &Shared,
) -> io::Result<Read> {
    let len = buf.len();
    let want = READ_CHUNK.min(MAX_HEAD_LEN + 1 - len.min(MAX_HEAD_LEN));
    buf.resize(len + want, 0);
    let stop = async {
        if len > 0 {
            // A request half received is finished even while stopping.
            smol::future::pending::<()>().await;
        }
        let _ = shared.stop.recv().await;
        Ok(Read::Stop)
    };
    let read = async {
        let mut reader = stream;
        reader.read(&mut buf[len..]).await.map(Read::Bytes)
    }
    .or(stop);
    let result = deadline.race(Some(clock.deadline()), read).await;
    let got = match &result {
        Ok(Some(Read::Bytes(n))) => *n,
        _ => 0,
    };
    buf.truncate(len + got);
    Ok(result?.unwrap_or(Read::Timeout))
}

/// Writes a response head (a small write: the deadline is the send timeout).
async fn write_head(
    stream: &Async<TcpStream>,
    head: &ResponseHead,
    clock: &mut ConnectionClock,
    deadline: &mut Deadline,
) -> io::Result<()> {
    let mut text = String::new();
    head.render(crate::sys::unix_ms() / 1000, &mut text);
    write_all(stream, text.as_bytes(), clock, deadline, None).await
}

/// Writes `bytes`, each bit of progress moving the send deadline; counts them in `guard`.
async fn write_all(
    stream: &Async<TcpStream>,
    mut bytes: &[u8],
    clock: &mut ConnectionClock,
    deadline: &mut Deadline,
    guard: Option<&TransferGuard>,
) -> io::Result<()> {
    let total = bytes.len() as u64;
    clock.sending(Instant::now());
    while !bytes.is_empty() {
        let mut writer = stream;
        let written = deadline
            .race(Some(clock.deadline()), writer.write(bytes))
            .await?;
        match written {
            Some(0) => return Err(io::ErrorKind::WriteZero.into()),
            Some(n) => {
                bytes = &bytes[n..];
                clock.sending(Instant::now());
                if let Some(guard) = guard {
                    guard.set_acked(total - bytes.len() as u64);
                }
            }
            None if clock.expired(Instant::now()).is_some() => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            None => {}
        }
    }
    Ok(())
}

/// Answers one request; `Ok(true)` when the connection may serve another.
#[allow(clippy::too_many_arguments)]
async fn serve_request(
    stream: &Async<TcpStream>,
    peer: SocketAddr,
    request: &Request<'_>,
    keep: bool,
    shared: &Shared,
    clock: &mut ConnectionClock,
    deadline: &mut Deadline,
) -> io::Result<bool> {
    let fail = |status: Status, why: &dyn std::fmt::Display| {
        log::warning_limited!("http: {peer}: {} {}: {why}", status.code(), request.target);
        ResponseHead::bare(status, !keep || status == Status::BadRequest)
    };
    let path = match route(request) {
        Ok(path) => path,
        Err(status) => {
            let head = fail(status, &"refused");
            write_head(stream, &head, clock, deadline).await?;
            return Ok(!head.close);
        }
    };
    let content = match shared.source.open(&path, peer) {
        Ok(content) => content,
        Err(e) => {
            let status = match e {
                OpenError::NotFound => Status::NotFound,
                OpenError::Denied(_) => Status::Forbidden,
                OpenError::Io(_) => Status::InternalServerError,
            };
            let head = fail(status, &e);
            write_head(stream, &head, clock, deadline).await?;
            return Ok(!head.close);
        }
    };
    let found = Found {
        len: content.len(),
        etag: shared
            .etags
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .tag(&path, &content),
        generated: matches!(content, Content::Bytes(_)),
        content_type: content_type(path.as_str()),
    };
    let mut reply = answer(request, &found);
    reply.head.close = reply.head.close || !keep;
    let Some((offset, len)) = reply.body else {
        write_head(stream, &reply.head, clock, deadline).await?;
        return Ok(!reply.head.close);
    };
    let max = shared.settings().max_transfers;
    let started = Instant::now();
    let Some(guard) = shared
        .progress
        .try_begin(max, peer, path.as_str(), len, started)
    else {
        let head = fail(
            Status::ServiceUnavailable,
            &format_args!("busy ({max} transfers)"),
        );
        write_head(stream, &head, clock, deadline).await?;
        return Ok(false);
    };
    write_head(stream, &reply.head, clock, deadline).await?;
    let sent = match &content {
        Content::Bytes(bytes) => {
            let body = &bytes[offset as usize..(offset + len) as usize];
            write_all(stream, body, clock, deadline, Some(&guard)).await
        }
        Content::File { file, .. } => {
            send_file(stream, file, offset, len, clock, deadline, shared, &guard).await
        }
    };
    if let Err(e) = sent {
        log::info_limited!("http: {peer}: {path} ({len} bytes) ended early: {e}");
        return Err(e);
    }
    guard.complete();
    shared.source.delivered(path.as_str(), peer);
    let elapsed = started.elapsed();
    let part = match reply.head.content_range {
        Some((start, n, total)) => format!(" bytes {start}-{} of {total}", start + n - 1),
        None => String::new(),
    };
    log::info!(
        "http: {peer}: sent {path} ({len} bytes{part}) in {} ms, {:.1} MB/s",
        elapsed.as_millis(),
        len as f64 / elapsed.as_secs_f64().max(1e-6) / 1e6
    );
    Ok(!reply.head.close)
}

/// Sends `len` bytes of `file` from `offset` with `sendfile`, waiting for the socket when it
/// is full (the time counted in [`Held`]) and yielding between calls.
#[allow(clippy::too_many_arguments)]
async fn send_file(
    stream: &Async<TcpStream>,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    clock: &mut ConnectionClock,
    deadline: &mut Deadline,
    shared: &Shared,
    guard: &TransferGuard,
) -> io::Result<()> {
    let mut at = offset;
    let end = offset + len;
    clock.sending(Instant::now());
    while at < end {
        if shared.shutdown.is_over() {
            return Err(io::Error::other("server shutting down"));
        }
        let want = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        match rustix::fs::sendfile(stream.get_ref(), file, Some(&mut at), want) {
            // The file shrank since it was opened: the length promised cannot be kept.
            Ok(0) => return Err(io::Error::other("file shorter than when opened")),
            Ok(_) => {
                guard.set_acked(at - offset);
                clock.sending(Instant::now());
                smol::future::yield_now().await;
            }
            Err(e) if e == rustix::io::Errno::AGAIN => {
                shared.held.begin(Instant::now());
                let wake = earliest(Some(clock.deadline()), shared.shutdown.deadline());
                let ready = deadline.race(wake, stream.writable()).await;
                shared.held.end(Instant::now());
                if ready?.is_none() && clock.expired(Instant::now()).is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client took nothing",
                    ));
                }
            }
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
