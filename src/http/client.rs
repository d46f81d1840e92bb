//! A small HTTP/1.1 client for the simulated boot clients: GET over one kept-alive connection
//! per server, the body streamed into a writer, with the boot clients' rule for busy and dead
//! (see [`crate::bootclient`]): no connection within the first-answer limit, or a refused one,
//! is a dead server; a 503 is a busy one; an answer, however slow, gets the full patience.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

use super::wire::{parse_response, ResponseInfo};

/// How a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Nothing answered (no connection within the limit, refused, unreachable).
    Dead(String),
    /// The server answered 503: busy, try another.
    Busy,
    /// Any other failure once the server had answered.
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Dead(why) => write!(f, "no answer: {why}"),
            FetchError::Busy => f.write_str("server busy (503)"),
            FetchError::Failed(why) => f.write_str(why),
        }
    }
}

/// One server's connection, opened on first use and kept while the server keeps it.
pub struct HttpClient {
    server: SocketAddr,
    stream: Option<Async<TcpStream>>,
    buf: Vec<u8>,
    /// No connection within this long: dead.
    pub first_answer: Duration,
    /// No bytes for this long once connected: give up.
    pub patience: Duration,
}

/// `path` as a request target: `/`, then every byte outside the unreserved set and `/`
/// percent-encoded.
pub fn encode_target(path: &str) -> String {
    let mut out = String::from("/");
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    f.or(async {
        Timer::after(limit).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what}: nothing for {} ms", limit.as_millis()),
        ))
    })
    .await
    .map_err(|e| e.to_string())
}

impl HttpClient {
    /// A client of `server`.
    pub fn new(server: SocketAddr, first_answer: Duration, patience: Duration) -> Self {
        HttpClient {
            server,
            stream: None,
            buf: Vec::new(),
            first_answer,
            patience,
        }
    }

    /// GETs `path` into `out`; returns the body's length.
    pub async fn get(&mut self, path: &str, out: &mut impl Write) -> Result<u64, FetchError> {
        // A kept connection the server has since closed fails at once: open a new one then.
        if self.stream.is_some() {
            match self.try_get(path, out).await {
                Err(FetchError::Dead(_)) => {}
                other => return other,
            }
        }
        self.stream = None;
        self.try_get(path, out).await
    }

    async fn try_get(&mut self, path: &str, out: &mut impl Write) -> Result<u64, FetchError> {
        let fresh = self.stream.is_none();
        if fresh {
            let stream = within(
                self.first_answer,
                "connect",
                Async::<TcpStream>::connect(self.server),
            )
            .await
            .map_err(FetchError::Dead)?;
            let _ = stream.get_ref().set_nodelay(true);
            self.stream = Some(stream);
            self.buf.clear();
        }
        let (info, mut body) = match self.request(path).await {
            Ok(answer) => answer,
            // A kept connection that fails before any answer was closed by the server.
            Err(e) if !fresh => return Err(FetchError::Dead(e)),
            Err(e) => return Err(FetchError::Failed(e)),
        };
        let fail = |e: String| FetchError::Failed(format!("{path}: {e}"));
        match info.code {
            200 => {}
            503 => {
                self.stream = None;
                return Err(FetchError::Busy);
            }
            code => {
                self.stream = None;
                return Err(fail(format!("HTTP {code}")));
            }
        }
        let len = info
            .content_length
            .ok_or_else(|| fail("no Content-Length".into()))?;
        let mut left = len;
        let take = body.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        out.write_all(&body[..take])
            .map_err(|e| fail(e.to_string()))?;
        left -= take as u64;
        body.drain(..take);
        let mut chunk = vec![0u8; 64 << 10];
        let Some(stream) = self.stream.as_ref() else {
            return Err(fail("no connection".into()));
        };
        while left > 0 {
            let mut reader = stream;
            let n = within(self.patience, "body", reader.read(&mut chunk))
                .await
                .map_err(&fail)?;
            if n == 0 {
                self.stream = None;
                return Err(fail(format!("connection closed {left} bytes early")));
            }
            let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            out.write_all(&chunk[..n])
                .map_err(|e| fail(e.to_string()))?;
            left -= n as u64;
        }
        self.buf = body;
        if info.close {
            self.stream = None;
        }
        Ok(len)
    }

    /// Sends the request and reads the answer's head; returns it and the bytes read past it.
    async fn request(&mut self, path: &str) -> Result<(ResponseInfo, Vec<u8>), String> {
        let stream = self.stream.as_ref().ok_or("no connection")?;
        let text = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bootherd-client\r\n\r\n",
            encode_target(path),
            self.server
        );
        let mut writer = stream;
        within(self.patience, "request", writer.write_all(text.as_bytes())).await?;
        let mut buf = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((info, n)) = parse_response(&buf)? {
                buf.drain(..n);
                return Ok((info, buf));
            }
            let mut reader = stream;
            let n = within(self.patience, "answer", reader.read(&mut chunk)).await?;
            if n == 0 {
                return Err("connection closed before an answer".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_percent_encoded() {
        assert_eq!(encode_target("boot/vmlinuz"), "/boot/vmlinuz");
        assert_eq!(encode_target("a b%c"), "/a%20b%25c");
        assert_eq!(
            encode_target("bootherd.cfg/-/52-54-00-00-00-01/7"),
            "/bootherd.cfg/-/52-54-00-00-00-01/7"
        );
    }
}
