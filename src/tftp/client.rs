//! The TFTP client shell: one socket and a timer around the sans-IO [`Download`] core.
//!
//! Busy is not dead. A server that answers anything at all (OACK, DATA, ERROR), however late,
//! is alive, and the transfer then gets the full retransmission patience. A dead one is found
//! fast: a closed port or an unreachable host comes back as an ICMP error, reported at once as
//! [`FetchError::Unreachable`]; silence for [`Patience::first_answer`] is
//! [`FetchError::NoAnswer`].

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use smol::Async;

use super::download::{ClientRetransmit, Download, DownloadError, RequestSpec};
use crate::net::{
    enable_receive_offload, is_unreachable, recv_batch, report_icmp_errors, take_icmp_errors,
    Deadline,
};

/// How long a fetch waits for a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Retransmission, and the limit of re-sends without progress.
    pub retransmit: ClientRetransmit,
    /// A server that sends nothing at all this long after the request is dead
    /// ([`FetchError::NoAnswer`]); `None`: only the retransmission limit applies.
    pub first_answer: Option<Duration>,
}

impl From<ClientRetransmit> for Patience {
    fn from(retransmit: ClientRetransmit) -> Self {
        Patience {
            retransmit,
            first_answer: None,
        }
    }
}

/// What a finished download looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStats {
    /// Bytes received.
    pub bytes: u64,
    /// From the request to the last block.
    pub elapsed: Duration,
    /// Negotiated block size.
    pub blksize: u16,
    /// Negotiated window size.
    pub windowsize: u16,
    /// Size the server announced, if asked.
    pub tsize: Option<u64>,
}

impl FetchStats {
    /// Throughput in MB/s (10^6 bytes).
    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The socket or the output failed.
    Io(io::Error),
    /// The transfer failed.
    Download(DownloadError),
    /// An ICMP error said that nothing listens at the server's port, or that its host or
    /// network is unreachable.
    Unreachable(io::Error),
    /// Nothing at all came from the server within [`Patience::first_answer`].
    NoAnswer(Duration),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Io(e) => write!(f, "{e}"),
            FetchError::Download(e) => write!(f, "{e}"),
            FetchError::Unreachable(e) => write!(f, "unreachable: {e}"),
            FetchError::NoAnswer(after) => write!(f, "no answer in {} ms", after.as_millis()),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<io::Error> for FetchError {
    fn from(e: io::Error) -> Self {
        FetchError::Io(e)
    }
}

/// Downloads `spec` from `server`, appending the bytes to `out` as they arrive in order.
/// `patience` is a [`ClientRetransmit`], or a [`Patience`] that also gives up on silence.
pub async fn fetch(
    server: SocketAddr,
    spec: RequestSpec,
    patience: impl Into<Patience>,
    out: &mut impl Write,
) -> Result<FetchStats, FetchError> {
    fetch_with_progress(server, spec, patience, out, &mut |_, _| {}).await
}

/// [`fetch`], telling `progress` the bytes received so far and the size the server announced
/// (with `tsize`) after every batch of datagrams.
pub async fn fetch_with_progress(
    server: SocketAddr,
    spec: RequestSpec,
    patience: impl Into<Patience>,
    out: &mut impl Write,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<FetchStats, FetchError> {
    let patience = patience.into();
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = Async::<UdpSocket>::bind(local)?;
    crate::net::grow_recv_buffer(&socket);
    // A window sent as one segmented batch then arrives as one buffer.
    enable_receive_offload(&socket);
    report_icmp_errors(&socket, server.is_ipv6());
    let started = Instant::now();
    let mut download = Download::new(started, server, spec, patience.retransmit);
    // Where the server answered from (its transfer port), once it has.
    let mut answered_from: Option<SocketAddr> = None;
    let mut send_buf = [0u8; 1024];
    let mut recv_buf = vec![0u8; 65536];
    let mut deadline = Deadline::default();
    loop {
        while let Some(tx) = download.poll_transmit(&mut send_buf) {
            if let Err(e) = socket.send_to(&send_buf[..tx.len], tx.to).await {
                // An ICMP error about an earlier datagram may surface here.
                check_unreachable(&socket, [Some(server), answered_from], e)?;
            }
        }
        if let Some(result) = download.result() {
            result.clone().map_err(FetchError::Download)?;
            let (blksize, windowsize) = download.blksize_windowsize();
            return Ok(FetchStats {
                bytes: download.received(),
                elapsed: started.elapsed(),
                blksize,
                windowsize,
                tsize: download.tsize(),
            });
        }
        // Until the server has sent anything, the time it has left to do so.
        let dead_at = match (answered_from, patience.first_answer) {
            (None, Some(limit)) => Some(started + limit),
            _ => None,
        };
        let wake = match (download.poll_timeout(), dead_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let received = match deadline
            .race(wake, recv_batch(&socket, &mut recv_buf))
            .await
        {
            Ok(received) => received,
            Err(e) => {
                check_unreachable(&socket, [Some(server), answered_from], e)?;
                continue;
            }
        };
        let now = Instant::now();
        if let Some(received) = received {
            if answered_from.is_none() && received.from.ip() == server.ip() {
                answered_from = Some(received.from);
            }
            for datagram in received.datagrams(&recv_buf) {
                if let Some(payload) = download.handle_datagram(now, received.from, datagram) {
                    out.write_all(payload)?;
                }
            }
            progress(download.received(), download.tsize());
        }
        if let (Some(at), Some(limit)) = (dead_at, patience.first_answer) {
            if now >= at {
                return Err(FetchError::NoAnswer(limit));
            }
        }
        download.handle_timeout(now);
    }
}

/// Turns a socket error into the fetch's result: an ICMP error about one of the `server`'s
/// addresses (where the request went, where the answers come from) ends the fetch, one about
/// another address (a stranger we sent an error packet) is dropped, anything else is an I/O
/// failure.
fn check_unreachable(
    socket: &Async<UdpSocket>,
    server: [Option<SocketAddr>; 2],
    error: io::Error,
) -> Result<(), FetchError> {
    if !is_unreachable(&error) {
        return Err(FetchError::Io(error));
    }
    match take_icmp_errors(socket)
        .into_iter()
        .find(|(to, _)| server.contains(&Some(*to)))
    {
        Some((_, e)) => Err(FetchError::Unreachable(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::wire::Packet;

    const PATIENCE: Patience = Patience {
        retransmit: ClientRetransmit {
            timeout: Duration::from_millis(400),
            retries: 10,
        },
        first_answer: Some(Duration::from_secs(1)),
    };

    fn spec() -> RequestSpec {
        RequestSpec {
            path: "f".into(),
            blksize: Some(1468),
            windowsize: Some(4),
            tsize: true,
        }
    }

    fn timed_fetch(server: SocketAddr) -> (Result<Vec<u8>, FetchError>, Duration) {
        let started = Instant::now();
        let mut out = Vec::new();
        let result = smol::block_on(fetch(server, spec(), PATIENCE, &mut out)).map(|_| out);
        (result, started.elapsed())
    }

    /// A server that answers the first request `delay` after it arrives, ignoring the options
    /// (DATA 1 at once, from its own port).
    fn slow_server(delay: Duration, file: &'static [u8]) -> SocketAddr {
        let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = listen.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (_, client) = listen.recv_from(&mut buf).unwrap();
            std::thread::sleep(delay);
            let transfer = UdpSocket::bind("127.0.0.1:0").unwrap();
            let data = Packet::Data {
                block: 1,
                data: file,
            };
            let n = data.emit(&mut buf).unwrap();
            transfer.send_to(&buf[..n], client).unwrap();
            transfer
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let _ack = transfer.recv_from(&mut buf);
        });
        addr
    }

    #[test]
    fn a_closed_port_fails_at_once_as_unreachable() {
        let dead = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (result, took) = timed_fetch(dead);
        assert!(
            matches!(result, Err(FetchError::Unreachable(ref e)) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{result:?}"
        );
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[test]
    fn a_silent_server_is_dead_after_the_first_answer_limit() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (result, took) = timed_fetch(silent.local_addr().unwrap());
        assert!(
            matches!(result, Err(FetchError::NoAnswer(d)) if d == Duration::from_secs(1)),
            "{result:?}"
        );
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // The request was re-sent within that second, so one lost datagram is not death.
        silent.set_nonblocking(true).unwrap();
        let mut requests = 0;
        while silent.recv_from(&mut [0u8; 600]).is_ok() {
            requests += 1;
        }
        assert!(
            requests >= 2,
            "sent at 0, 400 and 800 ms: {requests} arrived"
        );
    }

    #[test]
    fn a_slow_server_is_alive_and_the_transfer_completes() {
        let server = slow_server(Duration::from_millis(600), b"slow but alive");
        let (result, took) = timed_fetch(server);
        assert_eq!(result.unwrap(), b"slow but alive");
        assert!(took >= Duration::from_millis(600), "{took:?}");
    }

    #[test]
    fn a_late_first_answer_past_the_limit_is_too_late() {
        let server = slow_server(Duration::from_millis(1500), b"too late");
        let (result, _) = timed_fetch(server);
        assert!(matches!(result, Err(FetchError::NoAnswer(_))), "{result:?}");
    }

    #[test]
    fn without_a_first_answer_limit_only_retransmission_gives_up() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let retransmit = ClientRetransmit {
            timeout: Duration::from_millis(100),
            retries: 3,
        };
        let mut out = Vec::new();
        let result = smol::block_on(fetch(
            silent.local_addr().unwrap(),
            spec(),
            retransmit,
            &mut out,
        ));
        assert!(
            matches!(result, Err(FetchError::Download(DownloadError::TimedOut))),
            "{result:?}"
        );
    }
}
