//! Small socket helpers shared by the shells.

mod batch;
mod busy_poll;
mod icmp;

pub use batch::{
    enable_receive_offload, recv_batch, BatchSender, Received, MAX_BATCH_BYTES, MAX_BATCH_DATAGRAMS,
};
pub use busy_poll::BusyPoll;
pub use icmp::{is_unreachable, report_icmp_errors, take_icmp_errors};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::net::UdpSocket;
use smol::{Async, Timer};

/// Receive buffer asked for on sockets that take bursts: a client's window of DATA, a storm of
/// requests on a server's port (500 at once: about 1 MB of kernel memory), every client's ACKs
/// in single-port mode.
const BURST_RECV_BUFFER: usize = 4 << 20;

/// Asks the kernel for a larger receive buffer: beyond `net.core.rmem_max` (212 KB by default)
/// where the process may (`CAP_NET_ADMIN`, as a server still root while it binds), else up to
/// it. A refusal only costs datagrams in a burst.
pub fn grow_recv_buffer(socket: impl std::os::fd::AsFd) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(&socket, BURST_RECV_BUFFER).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(&socket, BURST_RECV_BUFFER);
    }
}

/// A receive deadline that re-arms its timer only when the deadline moves earlier.
///
/// Moving an async-io timer wakes the reactor (an eventfd write, a timerfd update and an extra
/// epoll round), and a transfer's deadline moves later on every packet. So the timer stays
/// armed at the earliest deadline asked for; when it fires before the current deadline, the
/// caller sees a timeout that its sans-IO core ignores (`handle_timeout` checks the time), and
/// the next call arms the timer again. One timer update per timeout period instead of one per
/// packet.
pub struct Deadline {
    timer: Timer,
    armed: Option<Instant>,
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline {
            timer: Timer::never(),
            armed: None,
        }
    }
}

impl Deadline {
    /// Runs `op` (a receive), or gives `None` when the timer fires (at `deadline` at the
    /// latest, possibly before: callers re-check the time). `None` as deadline: no new one.
    pub async fn race<T>(
        &mut self,
        deadline: Option<Instant>,
        op: impl Future<Output = io::Result<T>>,
    ) -> io::Result<Option<T>> {
        if let Some(at) = deadline {
            if self.armed.is_none_or(|armed| at < armed) {
                self.timer.set_at(at);
                self.armed = Some(at);
            }
        }
        let timer = &mut self.timer;
        let received = async { op.await.map(Some) }
            .or(async {
                timer.await;
                Ok(None)
            })
            .await;
        if matches!(received, Ok(None)) {
            self.armed = None;
        }
        received
    }
}

/// Receives a datagram by polling `socket` without sleeping, for up to [`BusyPoll::BUDGET`]
/// and while `worth_it()` holds; `None` if nothing came, and the caller sleeps as usual. Other
/// tasks of the thread run between two polls.
pub async fn busy_recv(
    socket: &Async<std::net::UdpSocket>,
    buf: &mut [u8],
    policy: &mut BusyPoll,
    worth_it: impl Fn() -> bool,
) -> Option<(usize, SocketAddr)> {
    if !worth_it() || !policy.should_poll() {
        return None;
    }
    let until = Instant::now() + BusyPoll::BUDGET;
    loop {
        match socket.get_ref().recv_from(buf) {
            Ok(received) => {
                policy.hit();
                return Some(received);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The sleeping receive that follows reports it.
            Err(_) => return None,
        }
        if !worth_it() {
            return None;
        }
        if Instant::now() >= until {
            policy.miss();
            return None;
        }
        smol::future::yield_now().await;
    }
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
    for _ in 0..tries {
        socket.send_to(request, to).await?;
        let until = Some(Instant::now() + wait);
        let mut deadline = Deadline::default();
        while let Some((n, from)) = deadline.race(until, socket.recv_from(&mut buf)).await? {
            if let Some(answer) = accept(&buf[..n], from) {
                return Ok(Some(answer));
            }
        }
    }
    Ok(None)
}
