//! The TFTP client shell: one socket and a timer around the sans-IO [`Download`] core.

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use smol::Async;

use super::download::{ClientRetransmit, Download, DownloadError, RequestSpec};
use crate::net::{enable_receive_offload, recv_batch, Deadline};

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
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Io(e) => write!(f, "{e}"),
            FetchError::Download(e) => write!(f, "{e}"),
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
pub async fn fetch(
    server: SocketAddr,
    spec: RequestSpec,
    retransmit: ClientRetransmit,
    out: &mut impl Write,
) -> Result<FetchStats, FetchError> {
    fetch_with_progress(server, spec, retransmit, out, &mut |_, _| {}).await
}

/// [`fetch`], telling `progress` the bytes received so far and the size the server announced
/// (with `tsize`) after every batch of datagrams.
pub async fn fetch_with_progress(
    server: SocketAddr,
    spec: RequestSpec,
    retransmit: ClientRetransmit,
    out: &mut impl Write,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<FetchStats, FetchError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = Async::<UdpSocket>::bind(local)?;
    crate::net::grow_recv_buffer(&socket);
    // A window sent as one segmented batch then arrives as one buffer.
    enable_receive_offload(&socket);
    let started = Instant::now();
    let mut download = Download::new(started, server, spec, retransmit);
    let mut send_buf = [0u8; 1024];
    let mut recv_buf = vec![0u8; 65536];
    let mut deadline = Deadline::default();
    loop {
        while let Some(tx) = download.poll_transmit(&mut send_buf) {
            socket.send_to(&send_buf[..tx.len], tx.to).await?;
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
        let received = deadline
            .race(download.poll_timeout(), recv_batch(&socket, &mut recv_buf))
            .await?;
        let now = Instant::now();
        if let Some(received) = received {
            for datagram in received.datagrams(&recv_buf) {
                if let Some(payload) = download.handle_datagram(now, received.from, datagram) {
                    out.write_all(payload)?;
                }
            }
            progress(download.received(), download.tsize());
        }
        download.handle_timeout(now);
    }
}
