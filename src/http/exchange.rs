//! What to answer, and when to give up on a connection, sans-IO: a parsed request and what the
//! file source found in, a response head and the byte range to send out; a connection's
//! deadlines from the times it is told of.

use std::time::{Duration, Instant};

use super::wire::{parse_range, target_path, Method, RangeAsk, Request, ResponseHead, Status};
use crate::tftp::path::{sanitize, SafePath};

/// Where a request goes, or the error to answer at once.
pub fn route(request: &Request<'_>) -> Result<SafePath, Status> {
    if request.method == Method::Other {
        return Err(Status::MethodNotAllowed);
    }
    let path = target_path(request.target).ok_or(Status::BadRequest)?;
    // The same names as TFTP: no absolute paths, no `..`, no control characters (after
    // percent-decoding, so `%2e%2e` is `..` here too).
    sanitize(&path).map_err(|e| match e {
        crate::tftp::path::PathError::Empty => Status::NotFound,
        _ => Status::Forbidden,
    })
}

/// What the file source found for a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Bytes.
    pub len: u64,
    /// The strong entity tag (the file's SHA-256 from the boot-file digest), if known to
    /// match the file opened.
    pub etag: Option<String>,
    /// Generated for this client (per-client configs and scripts): never cached.
    pub generated: bool,
    /// From the name.
    pub content_type: &'static str,
}

/// An answer: its head, and the bytes of the file to send after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The head.
    pub head: ResponseHead,
    /// `(offset, len)` of the body; `None` for HEAD and bodiless statuses.
    pub body: Option<(u64, u64)>,
}

/// The answer to `request` for `found`: 200, 206, 304 or 416, with keep-alive as asked.
pub fn answer(request: &Request<'_>, found: &Found) -> Answer {
    let close = !request.keep_alive;
    let etag_matches = |header: &str| {
        found.etag.as_deref().is_some_and(|tag| {
            header.trim() == "*"
                || header
                    .split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == format!("\"{tag}\""))
        })
    };
    if request.if_none_match.is_some_and(etag_matches) {
        let mut head = ResponseHead::bare(Status::NotModified, close);
        head.etag = found.etag.clone();
        return Answer { head, body: None };
    }
    // A range only applies to the representation the client has: If-Range must name our
    // strong tag exactly (a date, a weak tag or another tag gets the whole file).
    let if_range_holds = request.if_range.is_none_or(|v| {
        found
            .etag
            .as_deref()
            .is_some_and(|tag| v.trim() == format!("\"{tag}\""))
    });
    let ask = match request.range {
        Some(range) if if_range_holds && !found.generated => parse_range(range, found.len),
        _ => RangeAsk::Whole,
    };
    let mut head = ResponseHead {
        status: Status::Ok,
        content_length: found.len,
        content_type: Some(found.content_type),
        content_range: None,
        etag: found.etag.clone(),
        accept_ranges: !found.generated,
        no_store: found.generated,
        allow: false,
        close,
    };
    let (offset, len) = match ask {
        RangeAsk::Whole => (0, found.len),
        RangeAsk::Part { start, len } => {
            head.status = Status::PartialContent;
            head.content_length = len;
            head.content_range = Some((start, len, found.len));
            (start, len)
        }
        RangeAsk::Unsatisfiable => {
            head.status = Status::RangeNotSatisfiable;
            head.content_length = 0;
            head.content_type = None;
            head.content_range = Some((0, 0, found.len));
            return Answer { head, body: None };
        }
    };
    let body = (request.method == Method::Get && len > 0).then_some((offset, len));
    Answer { head, body }
}

/// The media type of a served name: what UEFI HTTP boot looks at to start an image.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("efi") => "application/efi",
        Some("iso") => "application/vnd.efi-iso",
        Some("img") => "application/vnd.efi-img",
        Some("ipxe" | "txt" | "cfg") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A connection's time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Between requests on a kept-alive connection (and before the first byte).
    pub idle: Duration,
    /// From a request's first byte to its last: a client that trickles a head (slowloris)
    /// is cut off here, however steadily it sends.
    pub request: Duration,
    /// Sending an answer without any progress (the client stopped reading).
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            idle: Duration::from_secs(15),
            request: Duration::from_secs(10),
            send: Duration::from_secs(30),
        }
    }
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Idle between requests: close quietly.
    Idle,
    /// A request head took too long: answer 408 and close.
    Request,
    /// The client took nothing for too long while an answer was going out: close.
    Send,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle { since: Instant },
    Reading { first_byte: Instant },
    Sending { progress: Instant },
}

/// A connection's deadline, from what the shell tells it (sans-IO: time is an argument).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionClock {
    timeouts: Timeouts,
    phase: Phase,
}

impl ConnectionClock {
    /// A connection accepted at `now`, waiting for its first request.
    pub fn new(timeouts: Timeouts, now: Instant) -> Self {
        ConnectionClock {
            timeouts,
            phase: Phase::Idle { since: now },
        }
    }

    /// Bytes of a request arrived (or are waiting in the buffer) at `now`.
    pub fn request_bytes(&mut self, now: Instant) {
        if let Phase::Idle { .. } = self.phase {
            self.phase = Phase::Reading { first_byte: now };
        }
    }

    /// An answer starts going out at `now`, or made progress then.
    pub fn sending(&mut self, now: Instant) {
        self.phase = Phase::Sending { progress: now };
    }

    /// The answer is out at `now`: idle until the next request.
    pub fn answered(&mut self, now: Instant) {
        self.phase = Phase::Idle { since: now };
    }

    /// When the current phase runs out.
    pub fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Idle { since } => since + self.timeouts.idle,
            Phase::Reading { first_byte } => first_byte + self.timeouts.request,
            Phase::Sending { progress } => progress + self.timeouts.send,
        }
    }

    /// Whether the deadline has passed at `now`, and what that means.
    pub fn expired(&self, now: Instant) -> Option<Expiry> {
        (now >= self.deadline()).then_some(match self.phase {
            Phase::Idle { .. } => Expiry::Idle,
            Phase::Reading { .. } => Expiry::Request,
            Phase::Sending { .. } => Expiry::Send,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::parse_request;

    fn request(bytes: &[u8]) -> Request<'_> {
        parse_request(bytes).unwrap().unwrap().0
    }

    fn file(len: u64) -> Found {
        Found {
            len,
            etag: Some("abc".into()),
            generated: false,
            content_type: "application/octet-stream",
        }
    }

    #[test]
    fn routes_with_the_tftp_path_rules_after_decoding() {
        let route_of = |target: &str| {
            let text = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            route(&request(text.as_bytes())).map(|p| p.to_string())
        };
        assert_eq!(route_of("/boot//vmlinuz").unwrap(), "boot/vmlinuz");
        assert_eq!(route_of("/a%5cb").unwrap(), "a/b", "backslash as in TFTP");
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/..%2fsecret",
            "/a/%2E%2E/%2E%2E/x",
            "//etc/passwd",
            "/%2fetc/passwd",
        ] {
            assert_eq!(route_of(bad), Err(Status::Forbidden), "{bad}");
        }
        assert_eq!(route_of("/"), Err(Status::NotFound));
        assert_eq!(route_of("/a%00"), Err(Status::BadRequest));
        assert_eq!(
            route(&request(b"POST /k HTTP/1.1\r\nHost: x\r\n\r\n")),
            Err(Status::MethodNotAllowed)
        );
    }

    #[test]
    fn whole_ranged_head_and_conditional_answers() {
        let get = request(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n");
        let a = answer(&get, &file(1000));
        assert_eq!((a.head.status, a.body), (Status::Ok, Some((0, 1000))));
        assert!(a.head.accept_ranges && !a.head.close);
        let head = request(b"HEAD /k HTTP/1.1\r\nHost: x\r\n\r\n");
        let a = answer(&head, &file(1000));
        assert_eq!((a.head.content_length, a.body), (1000, None));
        let ranged = request(b"GET /k HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n");
        let a = answer(&ranged, &file(1000));
        assert_eq!(a.head.status, Status::PartialContent);
        assert_eq!(a.head.content_range, Some((100, 100, 1000)));
        assert_eq!(a.body, Some((100, 100)));
        let beyond = request(b"GET /k HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n");
        let a = answer(&beyond, &file(1000));
        assert_eq!(a.head.status, Status::RangeNotSatisfiable);
        assert_eq!((a.head.content_length, a.body), (0, None));
        // If-Range with our tag: the range; with another: the whole file.
        let same =
            request(b"GET /k HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: \"abc\"\r\n\r\n");
        assert_eq!(
            answer(&same, &file(1000)).head.status,
            Status::PartialContent
        );
        let other =
            request(b"GET /k HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: \"old\"\r\n\r\n");
        assert_eq!(answer(&other, &file(1000)).body, Some((0, 1000)));
        let untagged = Found {
            etag: None,
            ..file(1000)
        };
        assert_eq!(answer(&same, &untagged).body, Some((0, 1000)));
        let cached =
            request(b"GET /k HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\", \"abc\"\r\n\r\n");
        let a = answer(&cached, &file(1000));
        assert_eq!((a.head.status, a.body), (Status::NotModified, None));
        // Generated files are never ranged or cached.
        let generated = Found {
            generated: true,
            etag: None,
            ..file(50)
        };
        let a = answer(&ranged, &generated);
        assert_eq!((a.head.status, a.body), (Status::Ok, Some((0, 50))));
        assert!(a.head.no_store && !a.head.accept_ranges);
        let empty = answer(&get, &file(0));
        assert_eq!((empty.head.status, empty.body), (Status::Ok, None));
        let closing = request(b"GET /k HTTP/1.0\r\n\r\n");
        assert!(answer(&closing, &file(1)).head.close);
    }

    #[test]
    fn content_types_for_uefi_http_boot() {
        assert_eq!(content_type("ipxe.efi"), "application/efi");
        assert_eq!(content_type("boot/BOOTX64.EFI"), "application/efi");
        assert_eq!(content_type("installer.iso"), "application/vnd.efi-iso");
        assert_eq!(content_type("vmlinuz"), "application/octet-stream");
    }

    #[test]
    fn deadlines_idle_slow_request_and_stalled_send() {
        let t = Timeouts {
            idle: Duration::from_secs(15),
            request: Duration::from_secs(10),
            send: Duration::from_secs(30),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut clock = ConnectionClock::new(t, t0);
        assert_eq!(clock.expired(at(14)), None);
        assert_eq!(clock.expired(at(15)), Some(Expiry::Idle));
        // A request trickling in from second 5: cut off at 15 however many bytes came since.
        clock.request_bytes(at(5));
        clock.request_bytes(at(14));
        assert_eq!(clock.deadline(), at(15));
        assert_eq!(clock.expired(at(15)), Some(Expiry::Request));
        // Sending: each bit of progress moves the deadline.
        clock.sending(at(12));
        clock.sending(at(40));
        assert_eq!(clock.expired(at(69)), None);
        assert_eq!(clock.expired(at(70)), Some(Expiry::Send));
        clock.answered(at(70));
        assert_eq!(clock.deadline(), at(85));
    }
}
