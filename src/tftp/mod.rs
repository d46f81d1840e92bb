//! TFTP (RFC 1350 with the option extensions of RFC 2347, 2348, 2349 and 7440).
//!
//! Sans-IO cores: [`wire`] (packets), [`options`] (negotiation), [`transfer`] (server side of a
//! transfer), [`download`] (client side), [`path`] (file name checks). Thin smol shells own the
//! sockets and timers: [`server`] and [`client`]. [`source`] is where served bytes come from;
//! [`progress`] is what the load monitor reads.

pub mod client;
pub mod download;
pub mod options;
pub mod path;
pub mod progress;
pub mod ratelimit;
pub mod server;
pub mod source;
pub mod transfer;
pub mod wire;

use std::net::SocketAddr;

/// A datagram a core wants sent: `len` bytes at the start of the caller's buffer, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Length of the datagram in the buffer.
    pub len: usize,
}
