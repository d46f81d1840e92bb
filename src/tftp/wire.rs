//! TFTP packets on the wire (RFC 1350, RFC 2347): parse from bytes, emit into a buffer.
//!
//! Parsing borrows from the datagram and never panics; emitting checks the buffer length first.
//! DATA packets on the hot path skip [`Packet::emit`]: the sender writes the 4-byte header with
//! [`emit_data_header`] and reads the file straight into the rest of the same buffer.

use core::fmt;

/// Length of the DATA header (opcode + block number).
pub const DATA_HEADER_LEN: usize = 4;

/// Largest option list we emit (names and decimal values); requests with more are truncated.
pub const MAX_OPTIONS_LEN: usize = 128;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Why a datagram is not a valid TFTP packet, or why a packet does not fit a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its fixed header.
    Truncated,
    /// The opcode is not one of RFC 1350/2347's six.
    UnknownOpcode(u16),
    /// A string field is missing its terminating NUL byte.
    Unterminated,
    /// A string field is not UTF-8 (TFTP strings are netascii, a subset).
    NotText,
    /// The transfer mode is neither `octet` nor `netascii` (`mail` is obsolete).
    UnsupportedMode,
    /// The output buffer is too small for the packet.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated packet"),
            WireError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            WireError::Unterminated => f.write_str("string field without NUL terminator"),
            WireError::NotText => f.write_str("string field is not text"),
            WireError::UnsupportedMode => f.write_str("unsupported transfer mode"),
            WireError::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

impl std::error::Error for WireError {}

/// TFTP error codes (RFC 1350 section 5, RFC 2347 code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: see the message.
    NotDefined,
    /// 1
    FileNotFound,
    /// 2
    AccessViolation,
    /// 3
    DiskFull,
    /// 4
    IllegalOperation,
    /// 5
    UnknownTid,
    /// 6
    FileExists,
    /// 7
    NoSuchUser,
    /// 8: option negotiation refused.
    OptionRefused,
    /// Any other value a peer sent.
    Other(u16),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(n) => n,
        }
    }

    fn from_code(n: u16) -> Self {
        match n {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            n => ErrorCode::Other(n),
        }
    }
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raw bytes.
    Octet,
    /// Text with CR LF line ends and CR NUL for a bare CR.
    Netascii,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        }
    }
}

/// The option list of a request or OACK: NUL-terminated name/value pairs, validated at parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options<'a> {
    raw: &'a [u8],
}

impl<'a> Options<'a> {
    /// Pairs in the order sent. Names keep their case; compare with `eq_ignore_ascii_case`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut fields = self.raw.split(|&b| b == 0);
        core::iter::from_fn(move || {
            let name = fields.next().filter(|n| !n.is_empty())?;
            let value = fields.next()?;
            // Validated as UTF-8 by `parse_options`.
            Some((
                core::str::from_utf8(name).ok()?,
                core::str::from_utf8(value).ok()?,
            ))
        })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The raw bytes (pairs of NUL-terminated strings).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// Builds an option list to send: a fixed-capacity buffer, no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionsBuf {
    bytes: heapless::Vec<u8, MAX_OPTIONS_LEN>,
}

impl OptionsBuf {
    /// Appends `name` = decimal `value`; returns false (and appends nothing) when full.
    pub fn push(&mut self, name: &str, value: u64) -> bool {
        let mut digits = [0u8; 20];
        let digits = format_decimal(value, &mut digits);
        let need = name.len() + 1 + digits.len() + 1;
        if self.bytes.len() + need > self.bytes.capacity() {
            return false;
        }
        for part in [name.as_bytes(), b"\0", digits, b"\0"] {
            // Capacity checked above.
            let _ = self.bytes.extend_from_slice(part);
        }
        true
    }

    /// The list as a parsed view.
    pub fn as_options(&self) -> Options<'_> {
        Options { raw: &self.bytes }
    }
}

fn format_decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[start..];
        }
    }
}

/// A read or write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as sent (not yet checked against any root).
    pub filename: &'a str,
    /// Transfer mode.
    pub mode: Mode,
    /// RFC 2347 options.
    pub options: Options<'a>,
}

/// One TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ.
    Read(Request<'a>),
    /// WRQ.
    Write(Request<'a>),
    /// DATA: block number and payload.
    Data {
        /// Block number (wraps after 65535).
        block: u16,
        /// Payload, at most the negotiated block size.
        data: &'a [u8],
    },
    /// ACK of a block (0 acknowledges an OACK).
    Ack {
        /// Block number acknowledged.
        block: u16,
    },
    /// ERROR: ends the transfer.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Human-readable message.
        message: &'a str,
    },
    /// OACK: the options the server accepted.
    OptionAck(Options<'a>),
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() < 2 {
            return Err(WireError::Truncated);
        }
        let opcode = u16::from_be_bytes([bytes[0], bytes[1]]);
        let body = &bytes[2..];
        match opcode {
            OP_RRQ => parse_request(body).map(Packet::Read),
            OP_WRQ => parse_request(body).map(Packet::Write),
            OP_DATA => {
                let block = read_u16(body)?;
                Ok(Packet::Data {
                    block,
                    data: &body[2..],
                })
            }
            OP_ACK => Ok(Packet::Ack {
                block: read_u16(body)?,
            }),
            OP_ERROR => {
                let code = ErrorCode::from_code(read_u16(body)?);
                // Some peers omit the final NUL; accept the message as it is.
                let text = &body[2..];
                let text = text.split(|&b| b == 0).next().unwrap_or_default();
                let message = core::str::from_utf8(text).map_err(|_| WireError::NotText)?;
                Ok(Packet::Error { code, message })
            }
            OP_OACK => parse_options(body).map(Packet::OptionAck),
            other => Err(WireError::UnknownOpcode(other)),
        }
    }

    /// Bytes [`Packet::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        2 + match self {
            Packet::Read(r) | Packet::Write(r) => {
                r.filename.len() + 1 + r.mode.as_str().len() + 1 + r.options.raw.len()
            }
            Packet::Data { data, .. } => 2 + data.len(),
            Packet::Ack { .. } => 2,
            Packet::Error { message, .. } => 2 + message.len() + 1,
            Packet::OptionAck(options) => options.raw.len(),
        }
    }

    /// Writes the packet at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let mut w = Writer { buf: out, at: 0 };
        match self {
            Packet::Read(r) | Packet::Write(r) => {
                w.put(&self.opcode().to_be_bytes());
                w.put_str(r.filename);
                w.put_str(r.mode.as_str());
                w.put(r.options.raw);
            }
            Packet::Data { block, data } => {
                w.put(&OP_DATA.to_be_bytes());
                w.put(&block.to_be_bytes());
                w.put(data);
            }
            Packet::Ack { block } => {
                w.put(&OP_ACK.to_be_bytes());
                w.put(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                w.put(&OP_ERROR.to_be_bytes());
                w.put(&code.code().to_be_bytes());
                w.put_str(message);
            }
            Packet::OptionAck(options) => {
                w.put(&OP_OACK.to_be_bytes());
                w.put(options.raw);
            }
        }
        Ok(len)
    }

    fn opcode(&self) -> u16 {
        match self {
            Packet::Read(_) => OP_RRQ,
            Packet::Write(_) => OP_WRQ,
            Packet::Data { .. } => OP_DATA,
            Packet::Ack { .. } => OP_ACK,
            Packet::Error { .. } => OP_ERROR,
            Packet::OptionAck(_) => OP_OACK,
        }
    }
}

/// Writes a DATA header for `block` into `buf[..4]`; the payload goes in `buf[4..]`.
pub fn emit_data_header(buf: &mut [u8], block: u16) -> Result<(), WireError> {
    let header = buf
        .get_mut(..DATA_HEADER_LEN)
        .ok_or(WireError::BufferTooSmall)?;
    header[..2].copy_from_slice(&OP_DATA.to_be_bytes());
    header[2..].copy_from_slice(&block.to_be_bytes());
    Ok(())
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    // Callers size `buf` with `buffer_len` first, so these slices are in range.
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn put_str(&mut self, s: &str) {
        self.put(s.as_bytes());
        self.put(&[0]);
    }
}

fn read_u16(body: &[u8]) -> Result<u16, WireError> {
    match body {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(WireError::Truncated),
    }
}

/// Splits off one NUL-terminated UTF-8 string.
fn take_str(bytes: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::Unterminated)?;
    let s = core::str::from_utf8(&bytes[..end]).map_err(|_| WireError::NotText)?;
    Ok((s, &bytes[end + 1..]))
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, WireError> {
    let (filename, rest) = take_str(body)?;
    let (mode, rest) = take_str(rest)?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(WireError::UnsupportedMode);
    };
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest)?,
    })
}

/// Checks that `raw` is whole name/value pairs of text. Trailing padding NULs (sent by some old
/// clients) are dropped.
fn parse_options(raw: &[u8]) -> Result<Options<'_>, WireError> {
    let mut rest = raw;
    while !rest.iter().all(|&b| b == 0) {
        let (name, after_name) = take_str(rest)?;
        if name.is_empty() {
            return Err(WireError::Unterminated);
        }
        let (_value, after_value) = take_str(after_name)?;
        rest = after_value;
    }
    Ok(Options {
        raw: &raw[..raw.len() - rest.len()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // An RRQ as the atftp client sends it with blksize and windowsize.
    const RRQ_BYTES: &[u8] =
        b"\x00\x01kernel\x00octet\x00blksize\x001468\x00windowsize\x0016\x00tsize\x000\x00";

    #[test]
    fn parses_and_re_emits_a_read_request() {
        let packet = Packet::parse(RRQ_BYTES).unwrap();
        let Packet::Read(req) = packet else {
            panic!("not a read request: {packet:?}")
        };
        assert_eq!(req.filename, "kernel");
        assert_eq!(req.mode, Mode::Octet);
        let opts: Vec<_> = req.options.iter().collect();
        assert_eq!(
            opts,
            [("blksize", "1468"), ("windowsize", "16"), ("tsize", "0")]
        );
        let mut buf = [0u8; 128];
        let n = packet.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], RRQ_BYTES);
        assert_eq!(n, packet.buffer_len());
    }

    #[test]
    fn mode_is_case_insensitive_and_mail_is_refused() {
        let p = Packet::parse(b"\x00\x01f\x00NetASCII\x00").unwrap();
        assert!(matches!(p, Packet::Read(r) if r.mode == Mode::Netascii));
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00mail\x00"),
            Err(WireError::UnsupportedMode)
        );
    }

    #[test]
    fn rejects_malformed_datagrams_without_panicking() {
        let cases: &[(&[u8], WireError)] = &[
            (b"", WireError::Truncated),
            (b"\x00", WireError::Truncated),
            (b"\x00\x03\x00", WireError::Truncated),
            (b"\x00\x04", WireError::Truncated),
            (b"\x00\x09\x00\x01", WireError::UnknownOpcode(9)),
            (b"\x00\x01file", WireError::Unterminated),
            (b"\x00\x01file\x00octet", WireError::Unterminated),
            (
                b"\x00\x01file\x00octet\x00blksize\x00",
                WireError::Unterminated,
            ),
            (b"\x00\x01file\x00octet\x00blksize", WireError::Unterminated),
            (b"\x00\x01\xff\xfe\x00octet\x00", WireError::NotText),
            (b"\x00\x06a\x00", WireError::Unterminated),
        ];
        for (bytes, want) in cases {
            assert_eq!(Packet::parse(bytes), Err(*want), "{bytes:?}");
        }
        // Every prefix of a valid packet parses or errors; none panics.
        for n in 0..RRQ_BYTES.len() {
            let _ = Packet::parse(&RRQ_BYTES[..n]);
        }
    }

    #[test]
    fn tolerates_padding_after_options_and_error_without_nul() {
        let p = Packet::parse(b"\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00").unwrap();
        let Packet::Read(req) = p else { panic!() };
        assert_eq!(req.options.iter().collect::<Vec<_>>(), [("tsize", "0")]);
        let p = Packet::parse(b"\x00\x05\x00\x01no such file").unwrap();
        assert_eq!(
            p,
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "no such file"
            }
        );
    }

    #[test]
    fn data_ack_error_oack_round_trip() {
        let mut opts = OptionsBuf::default();
        assert!(opts.push("blksize", 1468));
        assert!(opts.push("tsize", 0));
        let packets = [
            Packet::Data {
                block: 65535,
                data: b"hello",
            },
            Packet::Ack { block: 0 },
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "blksize too small",
            },
            Packet::OptionAck(opts.as_options()),
        ];
        for p in packets {
            let mut buf = [0u8; 64];
            let n = p.emit(&mut buf).unwrap();
            assert_eq!(Packet::parse(&buf[..n]).unwrap(), p);
            assert_eq!(p.emit(&mut buf[..n - 1]), Err(WireError::BufferTooSmall));
        }
    }

    #[test]
    fn options_buffer_refuses_overflow() {
        let mut opts = OptionsBuf::default();
        let mut pushed = 0;
        while opts.push("windowsize", u64::MAX) {
            pushed += 1;
        }
        assert!(pushed > 0);
        assert_eq!(opts.as_options().iter().count(), pushed);
        assert!(opts
            .as_options()
            .iter()
            .all(|(_, v)| v == "18446744073709551615"));
    }

    #[test]
    fn data_header_is_written_in_place() {
        let mut buf = [0xAAu8; 6];
        emit_data_header(&mut buf, 0x1234).unwrap();
        assert_eq!(buf, [0, 3, 0x12, 0x34, 0xAA, 0xAA]);
        assert_eq!(
            emit_data_header(&mut buf[..3], 1),
            Err(WireError::BufferTooSmall)
        );
    }
}
