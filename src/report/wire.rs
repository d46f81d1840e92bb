//! The messages on the report port (wire format v1), sans-IO.
//!
//! Every datagram is `[version = 1][kind][postcard body][HMAC-SHA256 tag, 32 bytes]`; the tag
//! covers everything before it and is keyed with the site's pre-shared key. Bodies are postcard
//! structs whose fields are only ever appended: postcard ignores bytes after the fields it
//! knows, so an old central reads a newer alternate's report; and a newer reader decodes an
//! older body as if zero bytes followed it, so every appended field is of a type whose all-zero
//! encoding means "not known" (a number 0, `None`, `false`, an empty list). Numbers are
//! fixed-point integers.
//!
//! Kinds: 1 load report (alternate to central), 2 status request and 3 status answer (report tool
//! and central), 4 network mark (operator or another service to central).

use core::fmt;
use core::str::FromStr;
use std::net::SocketAddr;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Wire format version (first byte).
pub const VERSION: u8 = 1;
/// Length of the authentication tag at the end of every datagram.
pub const TAG_LEN: usize = 32;
/// Largest load report we emit or accept.
pub const MAX_REPORT_LEN: usize = 512;
/// Largest datagram of any kind (a status answer lists the whole table).
pub const MAX_DATAGRAM_LEN: usize = 65_000;
/// Zero bytes a reader appends to a body before decoding it: room for every field appended
/// since the oldest writer (see the module documentation).
const APPENDED_FIELDS_PAD: usize = 64;
/// Longest alternate id.
pub const MAX_ID_LEN: usize = 64;
/// Most client-facing addresses in one report.
pub const MAX_ADDRESSES: usize = 4;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The pre-shared key that authenticates every message.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// Wraps key bytes; at least 16 are required.
    pub fn new(bytes: &[u8]) -> Result<Key, String> {
        if bytes.len() < 16 {
            return Err(format!(
                "key has {} bytes, at least 16 are needed",
                bytes.len()
            ));
        }
        Ok(Key(bytes.to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Serving state of an alternate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AltState {
    /// Takes new clients.
    Serving,
    /// Finishes its transfers, takes no new clients.
    Draining,
    /// Shutting down: centrals stop listing it at once.
    Leaving,
}

/// An alternate's load, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Alternate id (unique per site).
    pub alternate: String,
    /// TFTP addresses clients should use, best first.
    pub addresses: Vec<SocketAddr>,
    /// Random per start: sequence numbers restart with it.
    pub boot_id: u64,
    /// Increases with every report of this boot id.
    pub sequence: u64,
    /// Report interval, milliseconds (the central expires the entry after 3).
    pub interval_ms: u32,
    /// Capacity to score with, bytes per second: what the alternate's link delivered while its
    /// transfers were backlogged, or before any such measurement a prior (the network
    /// interface's speed, or the configured cap); see `capacity_evidence_s`.
    pub link_bytes_per_sec: u64,
    /// Configured transfer limit.
    pub max_transfers: u32,
    /// Transfers in progress.
    pub active_transfers: u32,
    /// Bytes those transfers still have to send.
    pub bytes_remaining: u64,
    /// Bytes per second sent over the last interval.
    pub bytes_per_sec: u64,
    /// Boots started since this boot id began (config files served): lets the central settle
    /// the clients it sent here.
    pub boots_started: u64,
    /// CPU use, per mille.
    pub cpu_permille: u16,
    /// Memory use, per mille.
    pub mem_permille: u16,
    /// One-minute load average times 100.
    pub load_avg_centi: u32,
    /// SHA-256 over the boot-file set served.
    pub digest: [u8; 32],
    /// Whether it takes new clients, finishes its transfers first, or is shutting down.
    pub state: AltState,
    // Appended fields (see the module documentation: zero means "not known").
    /// How many times this alternate has started, kept in its state file (0: it keeps none).
    /// A report of a boot id the central has not seen is taken as a restart only with a higher
    /// count, so a replayed old report cannot displace a live alternate.
    pub boot_count: u64,
    /// Seconds of backlogged measurement behind `link_bytes_per_sec` (0: it is only a prior).
    pub capacity_evidence_s: u32,
    /// Bytes still to send for the boots in progress here, counting the files their clients
    /// have not asked for yet (at least `bytes_remaining`).
    pub pending_bytes: u64,
    /// Bytes of one boot here: the boot files named by the configs served lately.
    pub boot_bytes: u64,
    /// DATA datagrams sent since this boot id began, first sends and resends.
    pub datagrams_sent: u64,
    /// Of those, resends.
    pub datagrams_resent: u64,
    /// The alternate process's own CPU use, per mille of one core.
    pub process_cpu_permille: u16,
    /// HTTP addresses clients may fetch the same files from, best first (empty: no HTTP).
    pub http_addresses: Vec<SocketAddr>,
}

/// A network path mark set by an operator or another service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathState {
    /// No penalty: the score stands as measured.
    Clear,
    /// Congested: the score is multiplied by `penalty_percent / 100`.
    Congested {
        /// For example 300 to make the alternate look three times slower.
        penalty_percent: u32,
    },
    /// Unreachable: excluded from lists.
    Down,
}

impl fmt::Display for PathState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathState::Clear => f.write_str("clear"),
            PathState::Congested { penalty_percent } => write!(f, "congested={penalty_percent}"),
            PathState::Down => f.write_str("down"),
        }
    }
}

impl fmt::Display for AltState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AltState::Serving => "serving",
            AltState::Draining => "draining",
            AltState::Leaving => "leaving",
        })
    }
}

/// The words [`AltState`]'s `Display` writes: `serving`, `draining`, `leaving`.
impl FromStr for AltState {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "serving" => Ok(AltState::Serving),
            "draining" => Ok(AltState::Draining),
            "leaving" => Ok(AltState::Leaving),
            _ => Err("want serving, draining or leaving"),
        }
    }
}

/// What [`PathState`]'s `Display` writes (`clear`, `congested=PERCENT`, `down`), and a bare
/// `congested`, which means a penalty of 300 percent.
impl FromStr for PathState {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "clear" => Ok(PathState::Clear),
            "down" => Ok(PathState::Down),
            "congested" => Ok(PathState::Congested {
                penalty_percent: 300,
            }),
            _ => match s.split_once('=') {
                Some(("congested", percent)) => Ok(PathState::Congested {
                    penalty_percent: percent.parse().map_err(|_| "want congested=PERCENT")?,
                }),
                _ => Err("want clear, congested[=PERCENT] or down"),
            },
        }
    }
}

/// Kind 4: mark an alternate's network path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMark {
    /// The alternate whose path is marked (its report's id).
    pub alternate: String,
    /// The mark to apply, replacing the last one.
    pub state: PathState,
    /// Sender's wall clock, Unix milliseconds: marks older than the last one applied, or more
    /// than a minute away from the central's clock, are dropped (replay protection).
    pub unix_ms: u64,
}

/// Kind 2: ask a central for its table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Random per request, echoed in the answer so that the tool takes only its own.
    pub nonce: u64,
    /// Sender's wall clock, Unix milliseconds (requests more than a minute off are dropped, so
    /// a captured request cannot be replayed at someone else later).
    pub unix_ms: u64,
}

/// One row of a status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    /// The alternate's latest report.
    pub report: LoadReport,
    /// Milliseconds since that report arrived.
    pub age_ms: u64,
    /// Estimated seconds for one more boot, in microseconds; `None` when excluded.
    pub score_us: Option<u64>,
    /// Why it is excluded, if it is.
    pub excluded: Option<String>,
    /// Clients sent there and not yet seen in its reports.
    pub promised: u32,
    /// The last network path mark applied to it (`Clear` if none).
    pub path: PathState,
}

/// Kind 3: a central's table, in list order (included ones best first, then excluded ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// The request's nonce, echoed.
    pub nonce: u64,
    /// One per alternate in the table, in list order.
    pub rows: Vec<StatusRow>,
    /// Reports dropped since start, by reason: bad tag, replayed, unknown alternate, malformed.
    pub dropped: [u64; 4],
    // Appended fields.
    /// The last address that sent a datagram failing authentication (a wrong key), if any.
    pub bad_tag_from: Option<SocketAddr>,
    /// How long ago, milliseconds.
    pub bad_tag_age_ms: u64,
}

/// Any message on the report port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Kind 1: an alternate's load, to every central it reports to.
    Report(LoadReport),
    /// Kind 2: the report tool asks a central for its table.
    StatusRequest(StatusRequest),
    /// Kind 3: the central's answer to kind 2.
    StatusAnswer(StatusAnswer),
    /// Kind 4: an operator or another service marks an alternate's network path.
    Mark(NetworkMark),
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Report(_) => 1,
            Message::StatusRequest(_) => 2,
            Message::StatusAnswer(_) => 3,
            Message::Mark(_) => 4,
        }
    }
}

/// Why a datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than header plus tag.
    Truncated,
    /// Longer than any message may be.
    Oversized,
    /// A version this build does not know.
    UnknownVersion(u8),
    /// A kind this build does not know.
    UnknownKind(u8),
    /// The tag does not match: wrong key, or tampered with.
    BadTag,
    /// The body does not decode, or breaks a limit.
    Malformed(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::Oversized => f.write_str("oversized"),
            DecodeError::UnknownVersion(v) => write!(f, "unknown version {v}"),
            DecodeError::UnknownKind(k) => write!(f, "unknown kind {k}"),
            DecodeError::BadTag => f.write_str("bad authentication tag"),
            DecodeError::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes and signs a message.
pub fn encode(message: &Message, key: &Key) -> Result<Vec<u8>, String> {
    let mut out = vec![VERSION, message.kind()];
    let body = match message {
        Message::Report(r) => {
            check_report(r).map_err(|e| e.to_string())?;
            postcard::to_allocvec(r)
        }
        Message::StatusRequest(r) => postcard::to_allocvec(r),
        Message::StatusAnswer(a) => postcard::to_allocvec(a),
        Message::Mark(m) => postcard::to_allocvec(m),
    }
    .map_err(|e| e.to_string())?;
    out.extend_from_slice(&body);
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    let limit = match message {
        Message::Report(_) => MAX_REPORT_LEN,
        _ => MAX_DATAGRAM_LEN,
    };
    if out.len() > limit {
        return Err(format!("message of {} bytes is over {limit}", out.len()));
    }
    Ok(out)
}

/// Verifies and decodes a datagram. The tag is checked before the body is even parsed.
pub fn decode(datagram: &[u8], key: &Key) -> Result<Message, DecodeError> {
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(DecodeError::Oversized);
    }
    if datagram.len() < 2 + TAG_LEN {
        return Err(DecodeError::Truncated);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| DecodeError::BadTag)?;
    if signed[0] != VERSION {
        return Err(DecodeError::UnknownVersion(signed[0]));
    }
    let mut body = Vec::with_capacity(signed.len() + APPENDED_FIELDS_PAD);
    body.extend_from_slice(&signed[2..]);
    body.resize(body.len() + APPENDED_FIELDS_PAD, 0);
    let body = &body[..];
    let malformed = |e: postcard::Error| DecodeError::Malformed(e.to_string());
    let message = match signed[1] {
        1 => {
            if datagram.len() > MAX_REPORT_LEN {
                return Err(DecodeError::Oversized);
            }
            let report: LoadReport = postcard::from_bytes(body).map_err(malformed)?;
            check_report(&report)?;
            Message::Report(report)
        }
        2 => Message::StatusRequest(postcard::from_bytes(body).map_err(malformed)?),
        3 => Message::StatusAnswer(postcard::from_bytes(body).map_err(malformed)?),
        4 => Message::Mark(postcard::from_bytes(body).map_err(malformed)?),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(message)
}

fn check_report(r: &LoadReport) -> Result<(), DecodeError> {
    let bad = |why: &str| Err(DecodeError::Malformed(why.to_string()));
    if r.alternate.is_empty() || r.alternate.len() > MAX_ID_LEN {
        return bad("alternate id must be 1 to 64 bytes");
    }
    if r.addresses.is_empty() || r.addresses.len() > MAX_ADDRESSES {
        return bad("1 to 4 addresses");
    }
    if r.http_addresses.len() > MAX_ADDRESSES {
        return bad("at most 4 HTTP addresses");
    }
    if r.interval_ms == 0 {
        return bad("interval 0");
    }
    Ok(())
}

/// SHA-256 of `bytes` (the boot-file digest is built from these).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(bytes).into()
}

/// Keys and digests are written as lower-case hex (the protocol crate's, shared with the NBP).
pub use bootherd_proto::hex::encode as hex;

/// Parses hex (any case, surrounding white space ignored) into bytes.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    bootherd_proto::hex::decode(s.trim())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn key() -> Key {
        Key::new(b"0123456789abcdef-test-key").unwrap()
    }

    pub fn report(id: &str, sequence: u64) -> LoadReport {
        LoadReport {
            alternate: id.into(),
            addresses: vec!["127.0.0.11:6901".parse().unwrap()],
            boot_id: 0xB007,
            sequence,
            interval_ms: 1000,
            link_bytes_per_sec: 125_000_000,
            max_transfers: 512,
            active_transfers: 3,
            bytes_remaining: 30_000_000,
            bytes_per_sec: 90_000_000,
            boots_started: 7,
            cpu_permille: 250,
            mem_permille: 400,
            load_avg_centi: 75,
            digest: [0xAB; 32],
            state: AltState::Serving,
            boot_count: 3,
            capacity_evidence_s: 120,
            pending_bytes: 40_000_000,
            boot_bytes: 9_437_184,
            datagrams_sent: 1000,
            datagrams_resent: 10,
            process_cpu_permille: 150,
            http_addresses: vec!["127.0.0.11:8080".parse().unwrap()],
        }
    }

    #[test]
    fn report_round_trip_fits_well_under_512_bytes() {
        let m = Message::Report(report("alt1", 42));
        let bytes = encode(&m, &key()).unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode(&bytes, &key()).unwrap(), m);
    }

    #[test]
    fn every_kind_round_trips() {
        let msgs = [
            Message::StatusRequest(StatusRequest {
                nonce: 9,
                unix_ms: 1,
            }),
            Message::Mark(NetworkMark {
                alternate: "alt2".into(),
                state: PathState::Congested {
                    penalty_percent: 300,
                },
                unix_ms: 5,
            }),
            Message::StatusAnswer(StatusAnswer {
                nonce: 9,
                rows: vec![StatusRow {
                    report: report("alt1", 1),
                    age_ms: 10,
                    score_us: Some(123),
                    excluded: None,
                    promised: 2,
                    path: PathState::Down,
                }],
                dropped: [1, 2, 3, 4],
                bad_tag_from: Some("10.0.0.9:4000".parse().unwrap()),
                bad_tag_age_ms: 1500,
            }),
        ];
        for m in msgs {
            let bytes = encode(&m, &key()).unwrap();
            assert_eq!(decode(&bytes, &key()).unwrap(), m);
        }
    }

    #[test]
    fn old_readers_accept_newer_reports_with_appended_fields() {
        // A future v1 report: the same fields plus one more at the end, signed as usual.
        #[derive(Serialize)]
        struct Newer {
            base: LoadReport,
            disk_permille: u16,
        }
        let newer = Newer {
            base: report("alt1", 5),
            disk_permille: 123,
        };
        let mut bytes = vec![VERSION, 1];
        bytes.extend(postcard::to_allocvec(&newer).unwrap());
        let mut mac = key().mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(
            decode(&bytes, &key()).unwrap(),
            Message::Report(report("alt1", 5))
        );
    }

    #[test]
    fn newer_readers_accept_older_reports_without_the_appended_fields() {
        // The report as version 0.1 wrote it: every field up to `state`, nothing after.
        #[derive(Serialize)]
        struct Older {
            alternate: String,
            addresses: Vec<SocketAddr>,
            boot_id: u64,
            sequence: u64,
            interval_ms: u32,
            link_bytes_per_sec: u64,
            max_transfers: u32,
            active_transfers: u32,
            bytes_remaining: u64,
            bytes_per_sec: u64,
            boots_started: u64,
            cpu_permille: u16,
            mem_permille: u16,
            load_avg_centi: u32,
            digest: [u8; 32],
            state: AltState,
        }
        let r = report("alt1", 5);
        let older = Older {
            alternate: r.alternate.clone(),
            addresses: r.addresses.clone(),
            boot_id: r.boot_id,
            sequence: r.sequence,
            interval_ms: r.interval_ms,
            link_bytes_per_sec: r.link_bytes_per_sec,
            max_transfers: r.max_transfers,
            active_transfers: r.active_transfers,
            bytes_remaining: r.bytes_remaining,
            bytes_per_sec: r.bytes_per_sec,
            boots_started: r.boots_started,
            cpu_permille: r.cpu_permille,
            mem_permille: r.mem_permille,
            load_avg_centi: r.load_avg_centi,
            digest: r.digest,
            state: AltState::Draining,
        };
        let mut bytes = vec![VERSION, 1];
        bytes.extend(postcard::to_allocvec(&older).unwrap());
        let mut mac = key().mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        let Message::Report(decoded) = decode(&bytes, &key()).unwrap() else {
            panic!("not a report")
        };
        assert_eq!(
            decoded,
            LoadReport {
                state: AltState::Draining,
                boot_count: 0,
                capacity_evidence_s: 0,
                pending_bytes: 0,
                boot_bytes: 0,
                datagrams_sent: 0,
                datagrams_resent: 0,
                process_cpu_permille: 0,
                http_addresses: Vec::new(),
                ..r
            }
        );
    }

    #[test]
    fn tampering_wrong_key_and_truncation_are_rejected() {
        let bytes = encode(&Message::Report(report("alt1", 1)), &key()).unwrap();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert_eq!(decode(&t, &key()), Err(DecodeError::BadTag), "byte {i}");
        }
        let other = Key::new(b"another key of 16+ bytes").unwrap();
        assert_eq!(decode(&bytes, &other), Err(DecodeError::BadTag));
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], &key()).is_err());
        }
        assert_eq!(
            decode(&vec![0u8; MAX_DATAGRAM_LEN + 1], &key()),
            Err(DecodeError::Oversized)
        );
        assert!(Key::new(b"short").is_err());
    }

    #[test]
    fn signed_garbage_and_limits_are_malformed_not_panics() {
        let sign = |kind: u8, body: &[u8]| {
            let mut b = vec![VERSION, kind];
            b.extend_from_slice(body);
            let mut mac = key().mac();
            mac.update(&b);
            b.extend_from_slice(&mac.finalize().into_bytes());
            b
        };
        assert!(matches!(
            decode(&sign(1, b"\xff\xff\xff"), &key()),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode(&sign(9, b""), &key()),
            Err(DecodeError::UnknownKind(9))
        );
        let mut long_id = report("x", 1);
        long_id.alternate = "a".repeat(65);
        assert!(encode(&Message::Report(long_id.clone()), &key()).is_err());
        let body = postcard::to_allocvec(&long_id).unwrap();
        assert!(matches!(
            decode(&sign(1, &body), &key()),
            Err(DecodeError::Malformed(_))
        ));
        let mut big = vec![0u8; 600];
        big[0] = VERSION;
        big[1] = 1;
        let n = big.len();
        let mut mac = key().mac();
        mac.update(&big[..n - TAG_LEN]);
        let tag = mac.finalize().into_bytes();
        big[n - TAG_LEN..].copy_from_slice(&tag);
        assert_eq!(decode(&big, &key()), Err(DecodeError::Oversized));
    }

    #[test]
    fn states_parse_what_they_display() {
        for state in [AltState::Serving, AltState::Draining, AltState::Leaving] {
            assert_eq!(state.to_string().parse(), Ok(state));
        }
        for path in [
            PathState::Clear,
            PathState::Down,
            PathState::Congested {
                penalty_percent: 150,
            },
        ] {
            assert_eq!(path.to_string().parse(), Ok(path));
        }
        assert_eq!(
            "congested".parse(),
            Ok(PathState::Congested {
                penalty_percent: 300
            })
        );
    }

    #[test]
    fn unknown_states_say_what_is_wanted() {
        let want_alt = Err("want serving, draining or leaving");
        for bad in ["", "Serving", "drain", "serving "] {
            assert_eq!(bad.parse::<AltState>(), want_alt, "{bad:?}");
        }
        let want_path = Err("want clear, congested[=PERCENT] or down");
        for bad in ["", "up", "clear=1", "down=0", "congested:5"] {
            assert_eq!(bad.parse::<PathState>(), want_path, "{bad:?}");
        }
        for bad in ["congested=", "congested=lots", "congested=-1"] {
            assert_eq!(
                bad.parse::<PathState>(),
                Err("want congested=PERCENT"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hex_keys_may_have_white_space_around() {
        assert_eq!(from_hex(" 00AB10\n"), Some(vec![0, 0xAB, 0x10]));
        assert_eq!(from_hex("0 0"), None);
    }
}
