//! Option negotiation on the server side (RFC 2347 OACK, RFC 2348 blksize, RFC 2349 tsize and
//! timeout, RFC 7440 windowsize).
//!
//! Rules (each one tested below):
//! - names are case-insensitive; the first occurrence of a name wins; unknown names are ignored;
//! - `blksize` below 8 or not a number is refused (ERROR 8); above our limit it is lowered;
//! - `windowsize` 0 or not a number is refused; above our limit it is lowered;
//! - `timeout` outside 1..=255 seconds is ignored (left out of the OACK), as RFC 2349 allows;
//! - `tsize` is answered with the size of the file;
//! - no accepted option means no OACK: the transfer starts with DATA 1, as in RFC 1350.

use core::fmt;
use core::time::Duration;

use super::wire::{Options, OptionsBuf};

/// Smallest and largest block size RFC 2348 allows.
pub const BLKSIZE_RANGE: (u16, u16) = (8, 65464);
/// RFC 1350's block size, used when none is negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// What this server is willing to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted (default 1468: one DATA packet fills a 1500-byte MTU).
    pub max_blksize: u16,
    /// Largest window granted (default 64).
    pub max_windowsize: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: 1468,
            max_windowsize: 64,
        }
    }
}

/// The parameters of one transfer after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA packet.
    pub blksize: u16,
    /// DATA packets sent per ACK.
    pub windowsize: u16,
    /// The client's `timeout` option, if any: the retransmission timeout until a round trip is
    /// measured.
    pub timeout: Option<Duration>,
    /// The OACK to send, empty when no option was accepted.
    pub oack: OptionsBuf,
}

impl Negotiated {
    /// RFC 1350 defaults: 512-byte blocks, lock-step, no OACK.
    pub fn plain() -> Self {
        Negotiated {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            timeout: None,
            oack: OptionsBuf::default(),
        }
    }
}

/// An option value the server must refuse with ERROR 8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Option name as the client spelled it.
    pub name: String,
    /// Value as sent.
    pub value: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "option {} = {:?} refused", self.name, self.value)
    }
}

/// An option this server knows, as asked for in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Blksize(u64),
    Windowsize(u64),
    Timeout(u64),
    Tsize,
}

/// The options of a read request, checked but not granted yet: everything [`negotiate`] decides
/// before it knows the size of the file. Owned, so that the file can be opened elsewhere (off the
/// executor) between the two halves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    /// In request order (the OACK keeps it), each name once.
    asked: heapless::Vec<Asked, 4>,
}

impl Requested {
    /// Checks a request's options: the rules of the module documentation, but for `tsize`.
    pub fn parse(options: Options<'_>) -> Result<Requested, Refused> {
        let mut out = Requested::default();
        let mut seen = [false; 4];
        for (name, value) in options.iter() {
            let Some(which) = ["blksize", "windowsize", "timeout", "tsize"]
                .iter()
                .position(|known| name.eq_ignore_ascii_case(known))
            else {
                continue;
            };
            if std::mem::replace(&mut seen[which], true) {
                continue;
            }
            let refuse = || Refused {
                name: name.to_string(),
                value: value.to_string(),
            };
            let number = value.parse::<u64>().ok();
            let asked = match which {
                0 => Asked::Blksize(
                    number
                        .filter(|&n| n >= u64::from(BLKSIZE_RANGE.0))
                        .ok_or_else(refuse)?,
                ),
                1 => Asked::Windowsize(number.filter(|&n| n >= 1).ok_or_else(refuse)?),
                2 => match number.filter(|n| (1..=255).contains(n)) {
                    Some(secs) => Asked::Timeout(secs),
                    None => continue,
                },
                _ => Asked::Tsize,
            };
            // At most one of each of the four: always fits.
            let _ = out.asked.push(asked);
        }
        Ok(out)
    }

    /// Grants the options for a file of `size` bytes within `limits`.
    pub fn grant(&self, limits: Limits, size: u64) -> Negotiated {
        let mut out = Negotiated::plain();
        for asked in &self.asked {
            match *asked {
                Asked::Blksize(n) => {
                    out.blksize = n.min(u64::from(limits.max_blksize)) as u16;
                    out.oack.push("blksize", u64::from(out.blksize));
                }
                Asked::Windowsize(n) => {
                    out.windowsize = n.min(u64::from(limits.max_windowsize)) as u16;
                    out.oack.push("windowsize", u64::from(out.windowsize));
                }
                Asked::Timeout(secs) => {
                    out.timeout = Some(Duration::from_secs(secs));
                    out.oack.push("timeout", secs);
                }
                Asked::Tsize => {
                    out.oack.push("tsize", size);
                }
            }
        }
        out
    }
}

/// Negotiates the options of a read request for a file of `size` bytes.
pub fn negotiate(options: Options<'_>, limits: Limits, size: u64) -> Result<Negotiated, Refused> {
    Ok(Requested::parse(options)?.grant(limits, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::wire::{Packet, Request};

    fn request_options(raw: &[u8]) -> Options<'_> {
        match Packet::parse(raw).unwrap() {
            Packet::Read(Request { options, .. }) => options,
            other => panic!("{other:?}"),
        }
    }

    fn oack(n: &Negotiated) -> Vec<(String, String)> {
        n.oack
            .as_options()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_options_means_rfc1350_and_no_oack() {
        let n = negotiate(Options::default(), Limits::default(), 10).unwrap();
        assert_eq!(n, Negotiated::plain());
        assert!(n.oack.as_options().is_empty());
    }

    #[test]
    fn grants_within_limits_and_answers_tsize() {
        let opts = request_options(
            b"\x00\x01f\x00octet\x00BLKSIZE\x001432\x00tsize\x000\x00windowsize\x004\x00timeout\x003\x00",
        );
        let n = negotiate(opts, Limits::default(), 123_456).unwrap();
        assert_eq!((n.blksize, n.windowsize), (1432, 4));
        assert_eq!(n.timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            oack(&n),
            pairs(&[
                ("blksize", "1432"),
                ("tsize", "123456"),
                ("windowsize", "4"),
                ("timeout", "3")
            ])
        );
    }

    #[test]
    fn lowers_values_above_the_limits() {
        let opts =
            request_options(b"\x00\x01f\x00octet\x00blksize\x0065464\x00windowsize\x0065535\x00");
        let limits = Limits {
            max_blksize: 8192,
            max_windowsize: 16,
        };
        let n = negotiate(opts, limits, 0).unwrap();
        assert_eq!((n.blksize, n.windowsize), (8192, 16));
        // Values beyond RFC 2348's range are lowered the same way, never wrapped.
        let opts = request_options(b"\x00\x01f\x00octet\x00blksize\x00999999999999\x00");
        assert_eq!(negotiate(opts, limits, 0).unwrap().blksize, 8192);
    }

    #[test]
    fn refuses_invalid_blksize_and_windowsize() {
        for raw in [
            &b"\x00\x01f\x00octet\x00blksize\x007\x00"[..],
            b"\x00\x01f\x00octet\x00blksize\x00big\x00",
            b"\x00\x01f\x00octet\x00blksize\x00-1\x00",
            b"\x00\x01f\x00octet\x00windowsize\x000\x00",
            b"\x00\x01f\x00octet\x00windowsize\x00\x00",
        ] {
            let err = negotiate(request_options(raw), Limits::default(), 0).unwrap_err();
            assert!(err.to_string().contains("refused"), "{err}");
        }
    }

    #[test]
    fn ignores_unknown_out_of_range_timeout_and_repeated_names() {
        let opts = request_options(
            b"\x00\x01f\x00octet\x00multicast\x00\x00timeout\x00256\x00blksize\x00512\x00blksize\x001024\x00",
        );
        let n = negotiate(opts, Limits::default(), 0).unwrap();
        assert_eq!(n.blksize, 512);
        assert_eq!(n.timeout, None);
        assert_eq!(oack(&n), pairs(&[("blksize", "512")]));
    }
}
