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
//! - `bootherd-proto` (`crates/proto`, `no_std`): the list and config formats, the DHCP packet
//!   view, PXE option 43 and hex, shared with the NBP (`nbp/`).
//!
//! How a boot flows through the modules (cores in brackets, shells outside them):
//!
//! ```text
//!  PXE client                central                                  alternate
//!  ----------                -------                                  ---------
//!  DHCPDISCOVER :67/4011 --> pxe::server --> [pxe::responder] --> proxy offer: NBP name
//!  TFTP RRQ NBP, list  ----> tftp::server --> [tftp::endpoint, tftp::transfer]
//!                            central::list <- [balance::Table::assign] <- report port
//!                                 ^                                          |
//!                                 |      [report::wire] signed UDP report    |
//!                                 +---- central (balance::endpoint) <------- alternate::reporter
//!                                                                             ^ [report::monitor,
//!                                                                             |  report::capacity]
//!  TFTP/HTTP config, kernel, initrd ----------------------------------------> tftp::server,
//!                                                                             http::server,
//!                                                                             alternate::configs
//! ```

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
