//! The metrics endpoint's shell: a listening socket, one short task per scrape on the calling
//! thread, the HTTP parser of [`crate::http::wire`] and the answer of [`super::answer`]. One
//! request per connection (the answer closes it), under the HTTP service's default time
//! limits, a few connections at once: a scraper is one client, not hundreds.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor, Timer};

use crate::http::exchange::Timeouts;
use crate::http::server::is_transient;
use crate::http::wire::{parse_request, ResponseHead, Status, MAX_HEAD_LEN};
use crate::log;
use crate::net::Deadline;

/// Connections at once; more are closed at once.
const MAX_CONNECTIONS: usize = 8;
/// How much of a request a read asks for at once.
const READ_CHUNK: usize = 1024;

/// A bound metrics endpoint, ready to [`run`](MetricsServer::run). Binding is synchronous, so
/// a role binds it with its other sockets, before it drops root.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds the listening socket.
    pub fn bind(listen: SocketAddr) -> io::Result<Self> {
        Ok(MetricsServer {
            listener: TcpListener::bind(listen)?,
        })
    }

    /// Binds `listen`, if the config names one: a role's error message when that fails.
    pub fn bind_configured(listen: Option<SocketAddr>) -> Result<Option<Self>, String> {
        listen
            .map(|listen| {
                MetricsServer::bind(listen)
                    .map_err(|e| format!("cannot listen for metrics on {listen}: {e}"))
            })
            .transpose()
    }

    /// Runs `server` if there is one (see [`MetricsServer::run`]); never ends otherwise.
    pub async fn run_configured(
        server: Option<Self>,
        render: impl Fn() -> String,
    ) -> Result<(), String> {
        match server {
            Some(server) => server
                .run(render)
                .await
                .map_err(|e| format!("metrics endpoint stopped: {e}")),
            None => smol::future::pending().await,
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes with what `render` gives at the time, until the socket fails.
    pub async fn run(self, render: impl Fn() -> String) -> io::Result<()> {
        let listener = Async::new(self.listener)?;
        log::info!(
            "metrics: listening on {} (GET /metrics)",
            listener.get_ref().local_addr()?
        );
        let render: &dyn Fn() -> String = &render;
        let open = Cell::new(0usize);
        let tasks = LocalExecutor::new();
        let accept_loop = async {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) if is_transient(&e) => {
                        log::warning_limited!("metrics: accept: {e}");
                        Timer::after(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if open.get() >= MAX_CONNECTIONS {
                    log::warning_limited!("metrics: {peer}: closed ({MAX_CONNECTIONS} open)");
                    continue;
                }
                open.set(open.get() + 1);
                let open = &open;
                tasks
                    .spawn(async move {
                        if let Err(e) = serve(stream, render).await {
                            log::debug!("metrics: {peer}: {e}");
                        }
                        open.set(open.get() - 1);
                    })
                    .detach();
            }
        };
        tasks.run(accept_loop).await
    }
}

/// Reads one request head, answers it and closes.
async fn serve(stream: Async<TcpStream>, render: &dyn Fn() -> String) -> io::Result<()> {
    let timeouts = Timeouts::default();
    let until = Instant::now() + timeouts.request;
    let mut deadline = Deadline::default();
    let mut buf = Vec::new();
    let (head, body) = loop {
        match parse_request(&buf) {
            Ok(Some((request, _))) => break super::answer(&request, render),
            Err(refusal) => break (ResponseHead::bare(refusal.status, true), String::new()),
            Ok(None) if Instant::now() >= until => {
                break (
                    ResponseHead::bare(Status::RequestTimeout, true),
                    String::new(),
                )
            }
            Ok(None) => {
                let len = buf.len();
                buf.resize(
                    len + READ_CHUNK.min(MAX_HEAD_LEN + 1 - len.min(MAX_HEAD_LEN)),
                    0,
                );
                let mut reader = &stream;
                let got = deadline
                    .race(Some(until), reader.read(&mut buf[len..]))
                    .await?;
                match got {
                    Some(0) => return Ok(()),
                    got => buf.truncate(len + got.unwrap_or(0)),
                }
            }
        }
    };
    let mut text = String::new();
    head.render(crate::sys::unix_ms() / 1000, &mut text);
    text.push_str(&body);
    let mut writer = &stream;
    let sent = Deadline::default()
        .race(
            Some(Instant::now() + timeouts.send),
            writer.write_all(text.as_bytes()),
        )
        .await?;
    if sent.is_none() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.get_ref().shutdown(std::net::Shutdown::Write)
}
