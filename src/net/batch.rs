//! Batches of datagrams through one system call.
//!
//! A TFTP window is up to 64 DATA packets of one size to one client. With UDP segmentation
//! offload (`UDP_SEGMENT`, Linux 4.18) the whole batch is one `sendmsg`: it is routed, charged
//! to the socket and passed down the stack once, and cut into datagrams only at the device (or
//! by the NIC). Where the kernel or the route refuses that (a device without checksum offload,
//! a segment longer than the path MTU, an older kernel), the sender falls back for good to
//! `sendmmsg`: still one system call, but one pass down the stack per datagram.
//!
//! The receiving side is UDP receive offload (`UDP_GRO`, Linux 5.0): the kernel hands over
//! consecutive datagrams of one size from one sender as one buffer, with the size in a control
//! message. A segmented batch on loopback arrives whole; a NIC with GRO merges what it can.

use std::cell::Cell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use smol::Async;

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

/// Datagrams received at once: `len` bytes from `from`, each `segment_len` long but the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes in the buffer, all datagrams together.
    pub len: usize,
    /// Sender.
    pub from: SocketAddr,
    /// Length of each datagram but the last; equal to `len` for a single datagram.
    pub segment_len: usize,
}

impl Received {
    /// The datagrams, as slices of the buffer received into.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        buf[..self.len].chunks(self.segment_len.max(1))
    }
}

/// Asks the kernel to merge consecutive datagrams of one sender (`UDP_GRO`); without it (an
/// older kernel) every datagram simply arrives alone.
pub fn enable_receive_offload(socket: impl AsFd) {
    let _ = setsockopt(&socket, sockopt::UdpGroSegment, &true);
}

/// Receives one datagram, or several merged by receive offload, into `buf` (64 KiB holds any).
pub async fn recv_batch(socket: &Async<UdpSocket>, buf: &mut [u8]) -> io::Result<Received> {
    socket
        .read_with(|s| {
            // Room for the one control message asked for: the merged datagrams' size.
            let mut control = [0u8; 64];
            let mut iov = [IoSliceMut::new(&mut *buf)];
            let msg = recvmsg::<SockaddrStorage>(
                s.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::empty(),
            )?;
            let len = msg.bytes;
            let segment_len = msg
                .cmsgs()?
                .find_map(|c| match c {
                    ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                    _ => None,
                })
                .filter(|&size| size > 0)
                .unwrap_or(len);
            let from = msg
                .address
                .as_ref()
                .and_then(socket_addr)
                .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
            Ok(Received {
                len,
                from,
                segment_len,
            })
        })
        .await
}

/// The IP address and port of a received datagram's address, if it has one.
pub(super) fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(offload: bool) -> Async<UdpSocket> {
        let socket = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        if offload {
            enable_receive_offload(&socket);
        }
        socket
    }

    fn sender() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    /// Five 100-byte datagrams and a 37-byte one, each starting with its index.
    fn batch() -> Vec<u8> {
        (0..537).map(|i| (i / 100 * 41 + i % 100) as u8).collect()
    }

    async fn receive_all(socket: &Async<UdpSocket>, want: usize) -> Vec<(Received, Vec<u8>)> {
        let mut buf = vec![0u8; 65_536];
        let mut got = Vec::new();
        let mut bytes = 0;
        while bytes < want {
            let r = recv_batch(socket, &mut buf).await.unwrap();
            bytes += r.len;
            got.push((r, buf[..r.len].to_vec()));
        }
        got
    }

    #[test]
    fn a_segmented_batch_arrives_whole_with_receive_offload() {
        smol::block_on(async {
            let rx = receiver(true);
            let to = rx.get_ref().local_addr().unwrap();
            let tx = sender();
            let sent = BatchSender::default().send(&tx, &batch(), 100, to).unwrap();
            assert_eq!(sent, 6);
            let got = receive_all(&rx, 537).await;
            assert_eq!(got.len(), 1, "one buffer: {got:?}");
            let (r, bytes) = &got[0];
            assert_eq!((r.len, r.segment_len), (537, 100));
            assert_eq!(r.from, tx.local_addr().unwrap());
            let datagrams: Vec<&[u8]> = r.datagrams(bytes).collect();
            assert_eq!(datagrams, batch().chunks(100).collect::<Vec<_>>());
        });
    }

    #[test]
    fn without_receive_offload_every_datagram_arrives_alone() {
        smol::block_on(async {
            let rx = receiver(false);
            let to = rx.get_ref().local_addr().unwrap();
            let tx = sender();
            assert_eq!(
                BatchSender::default().send(&tx, &batch(), 100, to).unwrap(),
                6
            );
            let got = receive_all(&rx, 537).await;
            let expected = batch();
            let datagrams: Vec<&[u8]> = got.iter().map(|(_, b)| b.as_slice()).collect();
            assert_eq!(datagrams, expected.chunks(100).collect::<Vec<_>>());
            assert!(got.iter().all(|(r, _)| r.segment_len == r.len));
        });
    }

    #[test]
    fn the_fallback_sends_one_datagram_per_segment_in_one_call() {
        smol::block_on(async {
            let rx = receiver(true);
            let to = rx.get_ref().local_addr().unwrap();
            let tx = sender();
            assert_eq!(send_each(&tx, &batch(), 100, to).unwrap(), 6);
            // Separate sends: nothing for receive offload to merge on loopback.
            let got = receive_all(&rx, 537).await;
            let expected = batch();
            let datagrams: Vec<&[u8]> = got.iter().flat_map(|(r, b)| r.datagrams(b)).collect();
            assert_eq!(datagrams, expected.chunks(100).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_single_datagram_is_a_plain_send() {
        smol::block_on(async {
            let rx = receiver(true);
            let to = rx.get_ref().local_addr().unwrap();
            let tx = sender();
            assert_eq!(
                BatchSender::default().send(&tx, b"ack", 100, to).unwrap(),
                1
            );
            let got = receive_all(&rx, 3).await;
            assert_eq!(got[0].1, b"ack");
            assert_eq!(got[0].0.segment_len, 3);
        });
    }
}
