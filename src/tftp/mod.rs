//! TFTP (RFC 1350 with the option extensions of RFC 2347, 2348, 2349 and 7440).
//!
//! Sans-IO cores: [`wire`] (packets), [`options`] (negotiation), [`endpoint`] (admission of
//! requests), [`transfer`] (server side of a transfer), [`download`] (client side), [`path`] (file
//! name checks). Thin smol shells own the sockets, timers and files: [`server`] and [`client`].
//! [`source`] is where served bytes come from; [`progress`] is what the load monitor reads.

pub mod client;
pub mod download;
pub mod endpoint;
pub mod options;
pub mod path;
pub mod progress;
pub mod ratelimit;
pub mod server;
pub mod source;
pub mod transfer;
pub mod wire;

use std::net::SocketAddr;

/// Datagrams a core wants sent: `len` bytes at the start of the caller's buffer, to `to`.
///
/// Usually one datagram. A server transfer with room in the buffer writes several DATA packets
/// back to back, each `segment_len` bytes except the last, which may be shorter: the layout
/// that UDP segmentation offload (`UDP_SEGMENT`) sends with one system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes in the buffer, all datagrams together.
    pub len: usize,
    /// Length of each datagram but the last; equal to `len` for a single datagram.
    pub segment_len: usize,
}

impl Transmit {
    /// One datagram of `len` bytes.
    pub fn single(to: SocketAddr, len: usize) -> Self {
        Transmit {
            to,
            len,
            segment_len: len,
        }
    }

    /// How many datagrams the buffer holds.
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.segment_len.max(1))
    }

    /// The datagrams, as slices of the buffer the core wrote into.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        buf[..self.len].chunks(self.segment_len.max(1))
    }
}
