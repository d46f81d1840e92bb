//! A checked, zero-copy view of DHCP packets (RFC 2131), in the style of smoltcp's `wire`:
//! [`Packet::new_checked`] validates the length once, then the field accessors cannot panic,
//! and [`Options`] walks the options (or PXE's option 43 sub-options, which have the same
//! shape) without copying. The server's responder checks requests with it before decoding
//! them; the NBP reads the firmware's cached packets with it.
//!
//! ```
//! use bootherd_proto::dhcp::Packet;
//! let mut bytes = [0u8; 250];
//! bytes[20..24].copy_from_slice(&[10, 0, 0, 1]); // siaddr
//! bytes[240..245].copy_from_slice(&[0, 53, 1, 2, 255]); // a pad, option 53, the end
//! let packet = Packet::new_checked(&bytes[..]).unwrap();
//! assert_eq!(packet.siaddr(), core::net::Ipv4Addr::new(10, 0, 0, 1));
//! assert_eq!(packet.option(53), Some(&[2][..]));
//! assert!(Packet::new_checked(&bytes[..239]).is_err());
//! ```

use alloc::string::String;
use core::fmt;
use core::net::Ipv4Addr;

use crate::hex::Hex;

/// Where each field starts (RFC 2131 figure 1).
mod field {
    pub const HLEN: usize = 2;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    pub const CHADDR: usize = 28;
    pub const FILE: usize = 108;
    pub const MAGIC_COOKIE: usize = 236;
    pub const OPTIONS: usize = 240;
}

/// Bytes before the options: the BOOTP header and the magic cookie.
pub const HEADER_LEN: usize = field::OPTIONS;
/// The cookie that marks the options as DHCP's.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// What is wrong with a packet's bytes; the caller decides whether that is logged or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than [`HEADER_LEN`] (the length is given).
    Truncated(usize),
    /// An option code is the last byte: its length is missing.
    OptionWithoutLength(u8),
    /// An option's length goes past the end of the bytes.
    OptionPastEnd(u8),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated(len) => write!(f, "{len} bytes is shorter than a DHCP header"),
            Error::OptionWithoutLength(code) => write!(f, "option {code} has no length"),
            Error::OptionPastEnd(code) => write!(f, "option {code} runs past the end"),
        }
    }
}

/// A DHCP packet over some bytes at least [`HEADER_LEN`] long.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The view, if `buffer` holds the whole header. The magic cookie is not checked: firmware
    /// caches are read as they are, and the responder checks it with [`Packet::has_magic_cookie`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        match buffer.as_ref().len() {
            len if len < HEADER_LEN => Err(Error::Truncated(len)),
            _ => Ok(Packet { buffer }),
        }
    }

    fn header(&self) -> &[u8; HEADER_LEN] {
        // `new_checked` made sure of the length.
        self.buffer.as_ref()[..HEADER_LEN]
            .try_into()
            .unwrap_or(&[0; HEADER_LEN])
    }

    fn ipv4(&self, at: usize) -> Ipv4Addr {
        let h = self.header();
        Ipv4Addr::new(h[at], h[at + 1], h[at + 2], h[at + 3])
    }

    /// Hardware address length as sent (it may claim more than the 16 bytes of `chaddr`).
    pub fn hlen(&self) -> u8 {
        self.header()[field::HLEN]
    }

    /// The client's own address (`ciaddr`).
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.ipv4(field::CIADDR)
    }

    /// The address offered to the client (`yiaddr`).
    pub fn yiaddr(&self) -> Ipv4Addr {
        self.ipv4(field::YIADDR)
    }

    /// The next server, the boot server for PXE (`siaddr`).
    pub fn siaddr(&self) -> Ipv4Addr {
        self.ipv4(field::SIADDR)
    }

    /// The relay agent (`giaddr`).
    pub fn giaddr(&self) -> Ipv4Addr {
        self.ipv4(field::GIADDR)
    }

    /// The whole 16-byte `chaddr` field, whatever [`Packet::hlen`] says.
    pub fn chaddr(&self) -> &[u8; 16] {
        self.header()[field::CHADDR..field::CHADDR + 16]
            .try_into()
            .unwrap_or(&[0; 16])
    }

    /// The 128-byte boot file name field (`file`), NUL padded.
    pub fn file(&self) -> &[u8] {
        &self.header()[field::FILE..field::MAGIC_COOKIE]
    }

    /// Whether the options are marked as DHCP's.
    pub fn has_magic_cookie(&self) -> bool {
        self.header()[field::MAGIC_COOKIE..] == MAGIC_COOKIE
    }

    /// The options, in the order they appear.
    pub fn options(&self) -> Options<'_> {
        Options::new(&self.buffer.as_ref()[HEADER_LEN..])
    }

    /// The value of the first option `code`, if present and whole.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options().get(code)
    }
}

/// One option: its code and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Option code (1 to 254).
    pub code: u8,
    /// The value, 0 to 255 bytes.
    pub value: &'a [u8],
}

/// A walk over a run of options (code, length, value; 0 pads, 255 ends): a DHCP packet's, or
/// PXE's option 43 sub-options. A malformed option is yielded as an error and ends the walk.
///
/// ```
/// use bootherd_proto::dhcp::{Options, RawOption};
/// let mut walk = Options::new(&[0, 6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255, 9]);
/// assert_eq!(walk.next(), Some(Ok(RawOption { code: 6, value: &[8] })));
/// assert_eq!(walk.next().unwrap().unwrap().code, 71);
/// assert_eq!(walk.next(), None, "255 ends the options");
/// ```
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    /// Walks the options in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Options { rest: bytes }
    }

    /// The value of the first option `code`, if present and whole (a malformed option before
    /// it ends the search).
    pub fn get(self, code: u8) -> Option<&'a [u8]> {
        self.map_while(Result::ok)
            .find(|o| o.code == code)
            .map(|o| o.value)
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<RawOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, tail) = self.rest.split_first()?;
            match code {
                0 => self.rest = tail,
                255 => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    self.rest = &[];
                    let Some((&len, tail)) = tail.split_first() else {
                        return Some(Err(Error::OptionWithoutLength(code)));
                    };
                    let len = usize::from(len);
                    let (Some(value), Some(rest)) = (tail.get(..len), tail.get(len..)) else {
                        return Some(Err(Error::OptionPastEnd(code)));
                    };
                    self.rest = rest;
                    return Some(Ok(RawOption { code, value }));
                }
            }
        }
    }
}

/// DHCP option 97 (type 0 + 16 bytes) as the UUID string of the config path. PXE clients send
/// the SMBIOS byte order: the first three fields little-endian.
pub fn uuid_from_option_97(option: &[u8]) -> Option<String> {
    let b = match option {
        [0, rest @ ..] if rest.len() == 16 => rest,
        _ => return None,
    };
    let mut uuid = [0u8; 16];
    for (to, from) in [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
        .into_iter()
        .enumerate()
    {
        uuid[to] = b[from];
    }
    let (a, rest) = uuid.split_at(4);
    let (b, rest) = rest.split_at(2);
    let (c, rest) = rest.split_at(2);
    let (d, e) = rest.split_at(2);
    Some(alloc::format!(
        "{}-{}-{}-{}-{}",
        Hex::new(a),
        Hex::new(b),
        Hex::new(c),
        Hex::new(d),
        Hex::new(e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn uuid_from_the_dhcp_option() {
        let option = [
            0, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x47, 0x87, 0x77, 0x52, 0x54, 0x00, 0x77,
            0x00, 0x10,
        ];
        assert_eq!(
            uuid_from_option_97(&option).as_deref(),
            Some("77777777-7777-4777-8777-525400770010")
        );
        assert_eq!(uuid_from_option_97(&option[1..]), None);
        let counting: Vec<u8> = (1..18).collect();
        assert_eq!(
            uuid_from_option_97(&counting).as_deref(),
            None,
            "type 0 only"
        );
        let mut typed = counting.clone();
        typed[0] = 0;
        assert_eq!(
            uuid_from_option_97(&typed).as_deref(),
            Some("05040302-0706-0908-0a0b-0c0d0e0f1011")
        );
    }

    #[test]
    fn options_from_raw_packets() {
        let mut bytes = alloc::vec![0u8; 240];
        bytes.extend_from_slice(&[0, 53, 1, 1, 97, 3, 0, 1, 2, 255, 60, 1, 9]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.option(53), Some(&[1][..]));
        assert_eq!(packet.option(97), Some(&[0, 1, 2][..]));
        assert_eq!(packet.option(60), None, "after the end marker");
        let truncated = Packet::new_checked(&bytes[..247]).unwrap();
        assert_eq!(truncated.option(97), None, "truncated");
        assert_eq!(
            truncated.options().collect::<Vec<_>>(),
            [
                Ok(RawOption {
                    code: 53,
                    value: &[1]
                }),
                Err(Error::OptionPastEnd(97))
            ]
        );
        assert_eq!(
            Packet::new_checked(&bytes[..10]).unwrap_err(),
            Error::Truncated(10)
        );
        assert_eq!(
            Options::new(&[53]).collect::<Vec<_>>(),
            [Err(Error::OptionWithoutLength(53))]
        );
    }

    #[test]
    fn header_fields() {
        let mut bytes = alloc::vec![0u8; 240];
        bytes[2] = 6;
        for (at, first) in [(12, 1), (16, 2), (20, 3), (24, 4)] {
            bytes[at] = first;
        }
        bytes[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x77, 0, 0x10]);
        bytes[108..111].copy_from_slice(b"nbp");
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.hlen(), 6);
        assert_eq!(
            [
                packet.ciaddr(),
                packet.yiaddr(),
                packet.siaddr(),
                packet.giaddr()
            ],
            [1, 2, 3, 4].map(|a| Ipv4Addr::new(a, 0, 0, 0))
        );
        assert_eq!(packet.chaddr()[..7], [0x52, 0x54, 0, 0x77, 0, 0x10, 0]);
        assert_eq!(&packet.file()[..4], b"nbp\0");
        assert_eq!(packet.file().len(), 128);
        assert!(!packet.has_magic_cookie());
        bytes[236..240].copy_from_slice(&MAGIC_COOKIE);
        assert!(Packet::new_checked(&bytes[..]).unwrap().has_magic_cookie());
    }
}
