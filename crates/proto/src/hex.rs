//! Lower-case hex: report digests and keys, config file checksums, DHCP UUIDs and hardware
//! addresses are all written this way.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Bytes as two lower-case hex digits each, optionally with a separator between bytes, written
/// straight into a formatter (no intermediate string).
///
/// ```
/// use bootherd_proto::hex::Hex;
/// let mac = [0x52, 0x54, 0, 0x77, 0, 0x10];
/// assert_eq!(Hex::new(&mac).to_string(), "525400770010");
/// assert_eq!(Hex::separated(&mac, ':').to_string(), "52:54:00:77:00:10");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a> {
    bytes: &'a [u8],
    separator: Option<char>,
}

impl<'a> Hex<'a> {
    /// The digits of `bytes`, back to back.
    pub fn new(bytes: &'a [u8]) -> Self {
        Hex {
            bytes,
            separator: None,
        }
    }

    /// The digits of `bytes` with `separator` between bytes, as MAC addresses are written.
    pub fn separated(bytes: &'a [u8], separator: char) -> Self {
        Hex {
            bytes,
            separator: Some(separator),
        }
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.bytes.iter().enumerate() {
            if let (Some(separator), 1..) = (self.separator, i) {
                fmt::Write::write_char(f, separator)?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// `bytes` as one string of lower-case hex digits.
pub fn encode(bytes: &[u8]) -> String {
    Hex::new(bytes).to_string()
}

/// The bytes of hex digits (either case); `None` for an odd number of digits or anything else.
pub fn decode(digits: &str) -> Option<Vec<u8>> {
    let digits = digits.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        out.push((digit(pair[0])? * 16 + digit(pair[1])?) as u8);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trip() {
        assert_eq!(encode(&[0, 0xAB, 0x10]), "00ab10");
        assert_eq!(decode("00AB10"), Some(vec![0, 0xAB, 0x10]));
        assert_eq!(decode(""), Some(vec![]));
        for bad in ["0", "zz", "+a", " 01", "é0"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(Hex::separated(&[1], '-').to_string(), "01");
        assert_eq!(Hex::separated(&[], '-').to_string(), "");
    }
}
