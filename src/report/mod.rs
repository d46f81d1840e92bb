//! Load reports: the wire format ([`wire`]), the alternate's monitor ([`monitor`]) and the
//! report tool's sending and asking ([`client`]).

pub mod client;
pub mod monitor;
pub mod wire;
