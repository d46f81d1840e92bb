//! bootherd: a network-boot service that spreads PXE clients across boot servers by their
//! live load.
//!
//! Layout: protocol cores are sans-IO (bytes and time in, bytes and decisions out) and never
//! touch sockets or clocks; thin smol shells beside them own sockets, timers and files.
//! - [`tftp`]: the TFTP engine (server and client) that the central and alternates embed;
//!   [`http`]: HTTP/1.1 for the same files on alternates.
//! - [`net`]: socket helpers for the shells (batched sends and receives, busy polling).
//! - [`pxe`], [`report`], [`balance`], [`formats`]: proxyDHCP, load reports, list ordering,
//!   the list and config formats.
//! - [`central`], [`alternate`]: the two server roles; [`bootclient`], [`demo`]: simulated
//!   boot clients.
//! - [`cli`]: the multi-call command line; [`config`]: the config file.
//! - [`lifecycle`]: signals (stop, reload, drain) and the graceful stop; [`sys`]: the wall
//!   clock and the kernel's randomness; [`log`]: log lines, journal priorities, rate limits.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod alternate;
pub mod balance;
pub mod bootclient;
pub mod central;
pub mod cli;
pub mod config;
pub mod demo;
pub mod formats;
pub mod http;
mod json;
pub mod lifecycle;
pub mod log;
pub mod metrics;
pub mod net;
pub mod privileges;
pub mod pxe;
pub mod report;
pub mod sys;
pub mod tftp;

// The integration tests include the same file by path (tests/common), so the helpers never
// ship in the library.
#[cfg(test)]
mod testutil;
