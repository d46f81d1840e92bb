//! Load reports: the wire format ([`wire`]), the alternate's monitor ([`monitor`]) with what it
//! learns between reports ([`capacity`], [`ledger`]) and keeps across restarts ([`state`]), the
//! report tool's sending and asking ([`client`]) and how it shows a central's answer
//! ([`status`]).

pub mod capacity;
pub mod client;
pub mod ledger;
pub mod monitor;
pub mod state;
pub mod status;
pub mod wire;
