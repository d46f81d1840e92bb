//! The alternate's side of the report port: signed messages out to every central.

use std::cell::RefCell;
use std::net::SocketAddr;

use smol::net::UdpSocket;

use crate::log;
use crate::report::wire::{encode, Key, Message};

/// Sends signed messages to every central (key and centrals change with a reload).
pub(super) struct Reporter {
    pub(super) key: RefCell<Key>,
    pub(super) centrals: RefCell<Vec<SocketAddr>>,
    pub(super) socket: UdpSocket,
}

impl Reporter {
    pub(super) async fn send(&self, message: &Message) {
        let bytes = match encode(message, &self.key.borrow()) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::warning!("report: cannot encode: {e}");
                return;
            }
        };
        // A copy: a reload may change the list while a send waits.
        let centrals = self.centrals.borrow().clone();
        for central in &centrals {
            if let Err(e) = self.socket.send_to(&bytes, central).await {
                log::debug!("report: to {central}: {e}");
            }
        }
    }
}
