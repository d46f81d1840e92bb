//! The PXE front door of the central: proxyDHCP (UDP 67) and boot-server discovery (UDP 4011).
//!
//! [`responder`] is the sans-IO core (request bytes in, reply bytes and destination out);
//! [`vendor`] builds and reads the PXE option 43 sub-options; [`server`] is the smol shell.

pub mod client;
pub mod responder;
pub mod server;
/// PXE option 43, shared with the NBP through the protocol crate.
pub use bootherd_proto::pxe as vendor;
