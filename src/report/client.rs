//! The report tool's side of the report port: send a signed message, or ask a central for its
//! table and wait for the answer.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use smol::net::UdpSocket;

use super::wire::{decode, encode, Key, Message, StatusAnswer, StatusRequest};
use crate::net::ask;

async fn socket_for(to: SocketAddr) -> Result<UdpSocket, String> {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(local).await.map_err(|e| e.to_string())
}

/// Sends one signed message to `to`.
pub async fn send(to: SocketAddr, key: &Key, message: &Message) -> Result<(), String> {
    let bytes = encode(message, key)?;
    let socket = socket_for(to).await?;
    socket
        .send_to(&bytes, to)
        .await
        .map(|_| ())
        .map_err(|e| format!("send to {to}: {e}"))
}

/// Asks `central` for its table; tries three times, `wait` each.
pub async fn status(
    central: SocketAddr,
    key: &Key,
    wait: Duration,
) -> Result<StatusAnswer, String> {
    let socket = socket_for(central).await?;
    let nonce = crate::sys::random_u64().map_err(|e| e.to_string())?;
    let request = encode(
        &Message::StatusRequest(StatusRequest {
            nonce,
            unix_ms: crate::sys::unix_ms(),
        }),
        key,
    )?;
    let answer = ask(&socket, central, &request, wait, 3, |datagram, from| {
        match decode(datagram, key) {
            Ok(Message::StatusAnswer(a)) if from == central && a.nonce == nonce => Some(a),
            // Not ours, forged or stale: keep waiting.
            _ => None,
        }
    })
    .await
    .map_err(|e| format!("asking {central}: {e}"))?;
    answer.ok_or_else(|| format!("no answer from {central} (is the key right?)"))
}
