//! bootherd: a network-boot service that spreads PXE clients across boot servers by their
//! live load.
//!
//! Layout: protocol cores are sans-IO (bytes and time in, bytes and decisions out) and never
//! touch sockets or clocks; thin smol shells beside them own sockets, timers and files.
//! - [`tftp`]: the TFTP engine (server and client) that the central and alternates embed.
//! - [`cli`]: the multi-call command line.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
mod log;
mod net;
pub mod tftp;

#[cfg(test)]
mod testutil;
