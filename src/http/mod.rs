//! HTTP/1.1 for boot files: what an alternate serves to clients that would rather fetch over
//! HTTP (iPXE, UEFI HTTP boot, U-Boot's wget) beside TFTP, from the same files and generated
//! configs, counted in the same load figures.
//!
//! Sans-IO cores: [`wire`] (request heads, ranges, response heads), [`exchange`] (what to
//! answer, a connection's deadlines). Thin smol shells: [`server`] (sockets, `sendfile`) and
//! [`client`] (the simulated boot clients' fetches).

pub mod client;
pub mod exchange;
pub mod server;
pub mod wire;
