//! Sending a batch of datagrams to one peer in one system call.
//!
//! A TFTP window is up to 64 DATA packets of one size to one client. With UDP segmentation
//! offload (`UDP_SEGMENT`, Linux 4.18) the whole batch is one `sendmsg`: it is routed, charged
//! to the socket and passed down the stack once, and cut into datagrams only at the device (or
//! by the NIC). Where the kernel or the route refuses that (a device without checksum offload,
//! a segment longer than the path MTU, an older kernel), the sender falls back for good to
//! `sendmmsg`: still one system call, but one pass down the stack per datagram.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use crate::log;

/// Most datagrams in one batch: Linux's `UDP_MAX_SEGMENTS` up to 6.x.
pub const MAX_BATCH_DATAGRAMS: usize = 64;

/// Most bytes in one batch: what one IPv4 UDP datagram can carry, the limit for a segmented
/// send.
pub const MAX_BATCH_BYTES: usize = 65_507;

/// Sends batches on one socket, remembering whether the kernel takes them segmented.
#[derive(Debug)]
pub struct BatchSender {
    segmentation: Cell<bool>,
}

impl Default for BatchSender {
    fn default() -> Self {
        BatchSender {
            segmentation: Cell::new(true),
        }
    }
}

impl BatchSender {
    /// Sends `buf` to `to` as datagrams of `segment_len` bytes (the last may be shorter; at
    /// most [`MAX_BATCH_DATAGRAMS`] of them and [`MAX_BATCH_BYTES`] in all) on a non-blocking
    /// socket. Returns how many datagrams went out, in order; an error only if none did.
    pub fn send(
        &self,
        socket: impl AsFd,
        buf: &[u8],
        segment_len: usize,
        to: SocketAddr,
    ) -> io::Result<usize> {
        let count = buf.len().div_ceil(segment_len.max(1));
        if count <= 1 {
            rustix::net::sendto(socket, buf, SendFlags::empty(), &to)?;
            return Ok(1);
        }
        if self.segmentation.get() && buf.len() <= MAX_BATCH_BYTES {
            match send_segmented(&socket, buf, segment_len, to) {
                Ok(()) => return Ok(count),
                // No room in the socket's send buffer: the caller waits and sends again.
                Err(Errno::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(
                    e @ (Errno::EIO
                    | Errno::EINVAL
                    | Errno::EMSGSIZE
                    | Errno::ENOPROTOOPT
                    | Errno::EOPNOTSUPP),
                ) => {
                    log::debug!(
                        "udp: segmented send to {to} refused ({e}); sending datagrams one by one"
                    );
                    self.segmentation.set(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        send_each(&socket, buf, segment_len, to)
    }
}

/// One `sendmsg` with a `UDP_SEGMENT` control message.
fn send_segmented(
    socket: &impl AsFd,
    buf: &[u8],
    segment_len: usize,
    to: SocketAddr,
) -> Result<(), Errno> {
    let segment = u16::try_from(segment_len).map_err(|_| Errno::EMSGSIZE)?;
    let addr = SockaddrStorage::from(to);
    sendmsg(
        socket.as_fd().as_raw_fd(),
        &[IoSlice::new(buf)],
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .map(drop)
}

/// One `sendmmsg` with a message per datagram.
fn send_each(
    socket: &impl AsFd,
    buf: &[u8],
    segment_len: usize,
    to: SocketAddr,
) -> io::Result<usize> {
    let addr = SocketAddrAny::from(to);
    let slices: heapless::Vec<[IoSlice<'_>; 1], MAX_BATCH_DATAGRAMS> = buf
        .chunks(segment_len.max(1))
        .take(MAX_BATCH_DATAGRAMS)
        .map(|datagram| [IoSlice::new(datagram)])
        .collect();
    let mut controls: heapless::Vec<SendAncillaryBuffer<'_, '_, '_>, MAX_BATCH_DATAGRAMS> = slices
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut messages: heapless::Vec<MMsgHdr<'_>, MAX_BATCH_DATAGRAMS> = slices
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, control)| MMsgHdr::new_with_addr(&addr, iov, control))
        .collect();
    Ok(sendmmsg(socket, &mut messages, SendFlags::empty())?)
}
