//! Load reports: the wire format ([`wire`]) and the alternate's monitor ([`monitor`]).

pub mod monitor;
pub mod wire;
