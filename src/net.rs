//! Small socket helpers shared by the shells.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;
use smol::Timer;

/// Receive buffer asked for on sockets that take bursts (a client's window of DATA, every
/// client's ACKs in single-port mode). The kernel caps it at `net.core.rmem_max`.
const BURST_RECV_BUFFER: usize = 4 << 20;

/// Asks the kernel for a larger receive buffer; a refusal only costs throughput.
pub fn grow_recv_buffer(socket: impl std::os::fd::AsFd) {
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(socket, BURST_RECV_BUFFER);
}

/// Receives one datagram, or `None` once `deadline` passes (`None`: no deadline). The timer
/// is the caller's so that a loop reuses one instead of registering a new one each time.
pub async fn recv_before(
    socket: &UdpSocket,
    buf: &mut [u8],
    timer: &mut Timer,
    deadline: Option<Instant>,
) -> io::Result<Option<(usize, SocketAddr)>> {
    match deadline {
        Some(at) => timer.set_at(at),
        None => *timer = Timer::never(),
    }
    async { socket.recv_from(buf).await.map(Some) }
        .or(async {
            (&mut *timer).await;
            Ok(None)
        })
        .await
}

/// Sends `request` to `to` up to `tries` times, each time waiting `wait` for a datagram that
/// `accept` turns into an answer (others are skipped); `None` if none came.
pub async fn ask<T>(
    socket: &UdpSocket,
    to: SocketAddr,
    request: &[u8],
    wait: Duration,
    tries: u32,
    mut accept: impl FnMut(&[u8], SocketAddr) -> Option<T>,
) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; 65_536];
    let mut timer = Timer::never();
    for _ in 0..tries {
        socket.send_to(request, to).await?;
        let deadline = Instant::now() + wait;
        while let Some((n, from)) =
            recv_before(socket, &mut buf, &mut timer, Some(deadline)).await?
        {
            if let Some(answer) = accept(&buf[..n], from) {
                return Ok(Some(answer));
            }
        }
    }
    Ok(None)
}
