//! HTTP/1.1 messages on the wire, sans-IO: a strict parser of request heads, the `Range` and
//! target rules, and the response head a server writes (RFC 9110, RFC 9112).
//!
//! Strict on purpose: a boot server has no proxy in front of it to normalise requests, and
//! anything two parsers could read differently (request smuggling) is refused, not guessed:
//! bare LF or CR, folded header lines, white space before a colon, control characters, a
//! `Transfer-Encoding`, a `Content-Length` other than one plain `0`, a second `Host`.

use core::fmt::Write;

/// Longest request head accepted (request line and headers); longer ones get 431.
pub const MAX_HEAD_LEN: usize = 8192;
/// Most header lines accepted in one request; more get 431.
pub const MAX_HEADERS: usize = 64;

/// A status code this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 206.
    PartialContent,
    /// 304.
    NotModified,
    /// 400.
    BadRequest,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408.
    RequestTimeout,
    /// 413: the request has a body.
    ContentTooLarge,
    /// 414.
    UriTooLong,
    /// 416.
    RangeNotSatisfiable,
    /// 431.
    HeaderFieldsTooLarge,
    /// 500.
    InternalServerError,
    /// 501: a transfer coding we do not take.
    NotImplemented,
    /// 503: at the connection cap, or shutting down.
    ServiceUnavailable,
    /// 505.
    VersionNotSupported,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::RangeNotSatisfiable => 416,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::ServiceUnavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::PartialContent => "Partial Content",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::ContentTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::RangeNotSatisfiable => "Range Not Satisfiable",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// The request methods served; any other is answered 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: the head of the GET answer, no body.
    Head,
    /// Anything else (a valid token).
    Other,
}

/// A parsed request head. Header values are kept only for the fields the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin form `/path?query`, or absolute form).
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection stays open after the answer (1.1 unless `close`; 1.0 only with
    /// `keep-alive`).
    pub keep_alive: bool,
    /// `Range`, if sent.
    pub range: Option<&'a str>,
    /// `If-Range`, if sent.
    pub if_range: Option<&'a str>,
    /// `If-None-Match`, if sent.
    pub if_none_match: Option<&'a str>,
}

/// Why a request head was refused; the connection is answered with the status and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// What to answer.
    pub status: Status,
    /// Why, for the log.
    pub why: &'static str,
}

fn refuse<T>(status: Status, why: &'static str) -> Result<T, Refusal> {
    Err(Refusal { status, why })
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is incomplete,
/// `Ok(Some((request, head_len)))` once the empty line has arrived. Bytes after `head_len`
/// belong to the next request (pipelining); a request may not have a body.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, Refusal> {
    // Empty lines before a request line are allowed (RFC 9112 section 2.2).
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let Some(end) = find_head_end(&buf[start..]) else {
        if buf.len() > MAX_HEAD_LEN {
            return refuse(Status::HeaderFieldsTooLarge, "request head too long");
        }
        // A bare LF already present would make any completion a refusal: refuse early.
        check_line_endings(&buf[start..])?;
        return Ok(None);
    };
    let head_len = start + end + 4;
    if head_len > MAX_HEAD_LEN {
        return refuse(Status::HeaderFieldsTooLarge, "request head too long");
    }
    let head = &buf[start..start + end];
    check_line_endings(head)?;
    let Ok(head) = core::str::from_utf8(head) else {
        return refuse(Status::BadRequest, "request head is not UTF-8");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let (method, target, minor_version) = parse_request_line(request_line)?;
    let mut request = Request {
        method,
        target,
        minor_version,
        keep_alive: minor_version == 1,
        range: None,
        if_range: None,
        if_none_match: None,
    };
    let mut host = 0;
    let mut content_length: Option<&str> = None;
    for (n, line) in lines.enumerate() {
        if n >= MAX_HEADERS {
            return refuse(Status::HeaderFieldsTooLarge, "too many header lines");
        }
        if line.starts_with([' ', '\t']) {
            return refuse(Status::BadRequest, "folded header line");
        }
        let Some((name, value)) = line.split_once(':') else {
            return refuse(Status::BadRequest, "header line without a colon");
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return refuse(Status::BadRequest, "bad header name");
        }
        if value.bytes().any(|b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
            return refuse(Status::BadRequest, "control character in a header value");
        }
        let value = value.trim_matches([' ', '\t']);
        let is = |field: &str| name.eq_ignore_ascii_case(field);
        if is("host") {
            host += 1;
        } else if is("content-length") {
            if content_length.is_some() {
                return refuse(Status::BadRequest, "Content-Length given twice");
            }
            content_length = Some(value);
        } else if is("transfer-encoding") {
            return refuse(Status::NotImplemented, "Transfer-Encoding in a request");
        } else if is("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    request.keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    request.keep_alive = true;
                }
            }
        } else if is("range") {
            request.range = Some(value);
        } else if is("if-range") {
            request.if_range = Some(value);
        } else if is("if-none-match") {
            request.if_none_match = Some(value);
        }
    }
    if host > 1 || (host == 0 && minor_version == 1) {
        return refuse(Status::BadRequest, "HTTP/1.1 needs exactly one Host");
    }
    match content_length {
        None => {}
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) => {
            return refuse(Status::BadRequest, "bad Content-Length")
        }
        Some(v) if v.bytes().any(|b| b != b'0') => {
            return refuse(Status::ContentTooLarge, "a request with a body")
        }
        Some(_) => {}
    }
    // A connection that closes after this answer must not let a pipelined rest through
    // unread either; the caller stops reading when `keep_alive` is false.
    if request.method == Method::Other {
        request.keep_alive = false;
    }
    Ok(Some((request, head_len)))
}

/// Where the first `\r\n\r\n` starts.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Every LF must follow a CR and every CR precede an LF (except a CR as the last byte so far).
fn check_line_endings(head: &[u8]) -> Result<(), Refusal> {
    for (i, &b) in head.iter().enumerate() {
        let bad = match b {
            b'\n' => i == 0 || head[i - 1] != b'\r',
            b'\r' => head.get(i + 1).is_some_and(|&next| next != b'\n'),
            _ => false,
        };
        if bad {
            return refuse(Status::BadRequest, "bare CR or LF");
        }
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_request_line(line: &str) -> Result<(Method, &str, u8), Refusal> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refuse(Status::BadRequest, "malformed request line");
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return refuse(Status::BadRequest, "bad method");
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        v if v.starts_with("HTTP/") && v.len() == 8 => {
            return refuse(Status::VersionNotSupported, "HTTP version not supported")
        }
        _ => return refuse(Status::BadRequest, "malformed request line"),
    };
    if target.is_empty() || target.bytes().any(|b| b <= 0x20 || b >= 0x7f) {
        return refuse(Status::BadRequest, "bad request target");
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    Ok((method, target, minor_version))
}

/// The path a request target names, percent-decoded, without the leading `/`, the query or an
/// absolute form's scheme and authority; `None` for a target that is not a path (`*`, a
/// fragment, a bad escape, a decoded NUL or control character, not UTF-8).
pub fn target_path(target: &str) -> Option<String> {
    let path = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("HTTP://"))
    {
        &rest[rest.find('/')?..]
    } else {
        target
    };
    let path = path.strip_prefix('/')?;
    let path = path.split('?').next().unwrap_or_default();
    if path.contains('#') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = core::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = String::from_utf8(out).ok()?;
    (!path.chars().any(char::is_control)).then_some(path)
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// Serve it whole: no range, a unit other than bytes, several ranges, or a malformed one
    /// (a server may ignore a `Range` it does not take, RFC 9110 section 14.2).
    Whole,
    /// Bytes `start` to `start + len - 1`.
    Part {
        /// First byte.
        start: u64,
        /// How many.
        len: u64,
    },
    /// A well-formed range that starts at or past the end: 416.
    Unsatisfiable,
}

/// Reads one `bytes=` range against a representation of `len` bytes.
pub fn parse_range(header: &str, len: u64) -> RangeAsk {
    let Some(spec) = header
        .trim()
        .strip_prefix("bytes=")
        .or_else(|| header.trim().strip_prefix("BYTES="))
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            Some(n) if n > 0 && len > 0 => {
                let n = n.min(len);
                RangeAsk::Part {
                    start: len - n,
                    len: n,
                }
            }
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return RangeAsk::Whole;
            };
            let end = match last {
                "" => None,
                last => match number(last) {
                    Some(end) if end >= start => Some(end),
                    _ => return RangeAsk::Whole,
                },
            };
            if start >= len {
                return RangeAsk::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            RangeAsk::Part {
                start,
                len: end - start + 1,
            }
        }
    }
}

/// A response head to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status.
    pub status: Status,
    /// `Content-Length` (for HEAD: what the GET would send).
    pub content_length: u64,
    /// `Content-Type`, if any.
    pub content_type: Option<&'static str>,
    /// `Content-Range` for 206 (`start`, `len`, total) and 416 (`len` 0).
    pub content_range: Option<(u64, u64, u64)>,
    /// The strong entity tag, without quotes.
    pub etag: Option<String>,
    /// `Accept-Ranges: bytes`.
    pub accept_ranges: bool,
    /// `Cache-Control: no-store` (generated per client).
    pub no_store: bool,
    /// `Allow: GET, HEAD` (405).
    pub allow: bool,
    /// Close the connection after this answer.
    pub close: bool,
}

impl ResponseHead {
    /// A bodiless answer: an error's head, or 304.
    pub fn bare(status: Status, close: bool) -> ResponseHead {
        ResponseHead {
            status,
            content_length: 0,
            content_type: None,
            content_range: None,
            etag: None,
            accept_ranges: false,
            no_store: false,
            allow: status == Status::MethodNotAllowed,
            close,
        }
    }

    /// Writes the head, `Date` from `unix_secs`, into `out`.
    pub fn render(&self, unix_secs: u64, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: bootherd\r\n",
            self.status.code(),
            self.status.reason(),
            http_date(unix_secs)
        );
        if self.status != Status::NotModified {
            let _ = write!(out, "Content-Length: {}\r\n", self.content_length);
        }
        if let Some(t) = self.content_type {
            let _ = write!(out, "Content-Type: {t}\r\n");
        }
        match self.content_range {
            Some((_, 0, total)) => {
                let _ = write!(out, "Content-Range: bytes */{total}\r\n");
            }
            Some((start, len, total)) => {
                let _ = write!(
                    out,
                    "Content-Range: bytes {start}-{}/{total}\r\n",
                    start + len - 1
                );
            }
            None => {}
        }
        if let Some(tag) = &self.etag {
            let _ = write!(out, "ETag: \"{tag}\"\r\n");
        }
        if self.accept_ranges {
            out.push_str("Accept-Ranges: bytes\r\n");
        }
        if self.no_store {
            out.push_str("Cache-Control: no-store\r\n");
        }
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str(if self.close {
            "Connection: close\r\n\r\n"
        } else {
            "Connection: keep-alive\r\n\r\n"
        });
    }
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of a Unix time.
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A parsed response head (the simulated clients' side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    /// Status code.
    pub code: u16,
    /// `Content-Length`, if sent.
    pub content_length: Option<u64>,
    /// Whether the server closes the connection after the body.
    pub close: bool,
}

/// Parses a response head from the start of `buf`: `Ok(None)` while incomplete, else the head
/// and its length. Chunked bodies are not taken (this server never sends them).
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseInfo, usize)>, &'static str> {
    let Some(end) = find_head_end(buf) else {
        return if buf.len() > MAX_HEAD_LEN {
            Err("response head too long")
        } else {
            Ok(None)
        };
    };
    let head = core::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let code: u16 = words
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or("malformed status line")?;
    if !version.starts_with("HTTP/1.") {
        return Err("not an HTTP/1 response");
    }
    let mut info = ResponseInfo {
        code,
        content_length: None,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("malformed header line")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            info.content_length = Some(value.parse().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not taken");
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            info.close = true;
        }
    }
    Ok(Some((info, end + 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Request<'_> {
        parse_request(bytes).unwrap().unwrap().0
    }

    fn refused(bytes: &[u8]) -> Status {
        match parse_request(bytes) {
            Err(r) => r.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn parses_what_ipxe_and_uefi_send() {
        let ipxe = b"GET /bootherd.ipxe/-/52-54-00-77-00-10/pcbios-i386 HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: iPXE/1.21.1+\r\nHost: 10.77.0.12:8080\r\n\r\n";
        let (r, n) = parse_request(ipxe).unwrap().unwrap();
        assert_eq!(n, ipxe.len());
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/bootherd.ipxe/-/52-54-00-77-00-10/pcbios-i386");
        assert!(r.keep_alive);
        let uefi = b"HEAD /ipxe.efi HTTP/1.1\r\nHost: 10.77.0.12:8080\r\nAccept: */*\r\nUser-Agent: UefiHttpBoot/1.0\r\n\r\n";
        assert_eq!(parsed(uefi).method, Method::Head);
        let ranged =
            b"GET /k HTTP/1.1\r\nhost: x\r\nRange: bytes=0-99\r\nIf-Range: \"abc\"\r\n\r\n";
        let r = parsed(ranged);
        assert_eq!((r.range, r.if_range), (Some("bytes=0-99"), Some("\"abc\"")));
    }

    #[test]
    fn incomplete_heads_wait_and_pipelined_requests_stay() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..28 {
            assert_eq!(parse_request(&two[..cut]).unwrap(), None, "{cut}");
        }
        let (a, n) = parse_request(two).unwrap().unwrap();
        assert_eq!((a.target, n), ("/a", 28));
        assert_eq!(parsed(&two[n..]).target, "/b");
        assert_eq!(parsed(b"\r\n\r\nGET /c HTTP/1.0\r\n\r\n").target, "/c");
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!parsed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!parsed(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parsed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!parsed(b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
    }

    /// The malformed-request and smuggling table of the core: each gets its status, and the
    /// shell closes the connection after it.
    #[test]
    fn malformed_and_smuggling_requests_get_their_status() {
        use Status::*;
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        let many = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS)
        );
        let huge_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "b".repeat(9000));
        let table: Vec<(&[u8], Status)> = vec![
            (b"GET\r\n\r\n", BadRequest),
            (b"GET /\r\n\r\n", BadRequest),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", BadRequest),
            (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", VersionNotSupported),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", VersionNotSupported),
            (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", BadRequest),
            (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", ContentTooLarge),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\n", BadRequest),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", NotImplemented),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", NotImplemented),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", NotImplemented),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: \xff\r\n\r\n", BadRequest),
            (long_target.as_bytes(), HeaderFieldsTooLarge),
            (many.as_bytes(), HeaderFieldsTooLarge),
            (huge_header.as_bytes(), HeaderFieldsTooLarge),
        ];
        for (bytes, want) in table {
            assert_eq!(refused(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
        // A head that never ends is refused once it is too long, before its end arrives.
        assert_eq!(refused(&[b'a'; MAX_HEAD_LEN + 1]), HeaderFieldsTooLarge);
        assert_eq!(
            refused(b"GET / HTTP/1.1\nHo"),
            BadRequest,
            "bare LF seen early"
        );
        assert_eq!(
            parsed(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").target,
            "/"
        );
    }

    #[test]
    fn targets_decode_to_paths_or_nothing() {
        for (target, want) in [
            ("/vmlinuz", Some("vmlinuz")),
            ("/boot/x86%5f64/k?x=1", Some("boot/x86_64/k")),
            ("http://10.0.0.1:8080/k", Some("k")),
            ("/%2e%2e/%2e%2e/etc/passwd", Some("../../etc/passwd")),
            ("/..%2f..%2fetc", Some("../../etc")),
            ("/", Some("")),
            ("*", None),
            ("k", None),
            ("/a%00b", None),
            ("/a%0ab", None),
            ("/a%zz", None),
            ("/a%4", None),
            ("/a%ff", None),
            ("/a#frag", None),
            ("http://host", None),
        ] {
            assert_eq!(target_path(target).as_deref(), want, "{target}");
        }
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let part = |start, len| Part { start, len };
        for (header, want) in [
            ("bytes=0-99", part(0, 100)),
            ("bytes=100-", part(100, 900)),
            ("bytes=-100", part(900, 100)),
            ("bytes=-5000", part(0, 1000)),
            ("bytes=990-5000", part(990, 10)),
            ("bytes=1000-", Unsatisfiable),
            ("bytes=5000-6000", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=500-100", Whole),
            ("bytes=0-1,5-6", Whole),
            ("bytes=a-b", Whole),
            ("bytes=99999999999999999999-", Whole),
            ("bytes=--1", Whole),
            ("bytes=", Whole),
            ("items=0-1", Whole),
            ("bytes 0-1", Whole),
        ] {
            assert_eq!(parse_range(header, 1000), want, "{header}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn response_head_and_date() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        let head = ResponseHead {
            status: Status::PartialContent,
            content_length: 100,
            content_type: Some("application/efi"),
            content_range: Some((0, 100, 1000)),
            etag: Some("ab".into()),
            accept_ranges: true,
            no_store: false,
            allow: false,
            close: false,
        };
        let mut out = String::new();
        head.render(0, &mut out);
        assert_eq!(
            out,
            "HTTP/1.1 206 Partial Content\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: bootherd\r\n\
             Content-Length: 100\r\nContent-Type: application/efi\r\nContent-Range: bytes 0-99/1000\r\n\
             ETag: \"ab\"\r\nAccept-Ranges: bytes\r\nConnection: keep-alive\r\n\r\n"
        );
        let (info, n) = parse_response(out.as_bytes()).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert_eq!(
            info,
            ResponseInfo {
                code: 206,
                content_length: Some(100),
                close: false
            }
        );
    }
}
