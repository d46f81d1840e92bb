//! Reading DHCP packets without an allocator-heavy parser: the NBP looks into the firmware's
//! cached packets with these, and the server's responder shares the UUID formatting.

use alloc::string::String;
use alloc::vec::Vec;

/// The value of option `code` in a run of DHCP-style options (code, length, value; 0 pads, 255
/// ends), if present and whole. PXE's option 43 sub-options have the same shape.
pub fn find_option(options: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = options;
    while let [c, tail @ ..] = rest {
        match c {
            0 => rest = tail,
            255 => return None,
            _ => {
                let (&len, tail) = tail.split_first()?;
                let value = tail.get(..usize::from(len))?;
                if *c == code {
                    return Some(value);
                }
                rest = &tail[usize::from(len)..];
            }
        }
    }
    None
}

/// The value of option `code` in a whole DHCP packet (options start at byte 240).
pub fn packet_option(packet: &[u8], code: u8) -> Option<&[u8]> {
    find_option(packet.get(240..)?, code)
}

/// The PXE boot server type bootherd announces its centrals as (0x8000 and up are vendor
/// types).
pub const BOOT_SERVER_TYPE: u16 = 0x8000;

/// The boot servers of type `server_type` in a PXE option 43 payload (sub-option 8: type,
/// count, IPv4 addresses; several types may follow each other), in order. Malformed entries
/// end the list.
pub fn boot_servers(option43: &[u8], server_type: u16) -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    let mut rest = find_option(option43, 8).unwrap_or_default();
    while let [t0, t1, count, tail @ ..] = rest {
        let Some(addresses) = tail.get(..usize::from(*count) * 4) else {
            break;
        };
        if u16::from_be_bytes([*t0, *t1]) == server_type {
            out.extend(addresses.chunks(4).map(|a| [a[0], a[1], a[2], a[3]]));
        }
        rest = &tail[addresses.len()..];
    }
    out
}

/// DHCP option 97 (type 0 + 16 bytes) as the UUID string of the config path. PXE clients send
/// the SMBIOS byte order: the first three fields little-endian.
pub fn uuid_from_option_97(option: &[u8]) -> Option<String> {
    let b = match option {
        [0, rest @ ..] if rest.len() == 16 => rest,
        _ => return None,
    };
    let mut out = String::with_capacity(36);
    for (n, i) in [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
        .into_iter()
        .enumerate()
    {
        if matches!(n, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&alloc::format!("{:02x}", b[i]));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn boot_servers_by_type_in_order() {
        // Discovery control, then two server types in one sub-option 8.
        let option43 = [
            6, 1, 3, 8, 18, 0x80, 0, 2, 10, 0, 0, 1, 10, 0, 0, 2, 0x12, 0x34, 1, 10, 0, 0, 9, 255,
        ];
        assert_eq!(
            boot_servers(&option43, 0x8000),
            [[10, 0, 0, 1], [10, 0, 0, 2]]
        );
        assert_eq!(boot_servers(&option43, 0x1234), [[10, 0, 0, 9]]);
        assert_eq!(boot_servers(&option43, 1), Vec::<[u8; 4]>::new());
        // A count past the end stops the list; no sub-option 8 is an empty list.
        assert_eq!(
            boot_servers(&[8, 7, 0x80, 0, 2, 10, 0, 0, 1], 0x8000),
            Vec::<[u8; 4]>::new()
        );
        assert_eq!(boot_servers(&[6, 1, 8, 255], 0x8000), Vec::<[u8; 4]>::new());
    }

    #[test]
    fn dhcp_options_from_raw_packets() {
        let mut packet = alloc::vec![0u8; 240];
        packet.extend_from_slice(&[0, 53, 1, 1, 97, 3, 0, 1, 2, 255, 60, 1, 9]);
        assert_eq!(packet_option(&packet, 53), Some(&[1][..]));
        assert_eq!(packet_option(&packet, 97), Some(&[0, 1, 2][..]));
        assert_eq!(packet_option(&packet, 60), None, "after the end marker");
        packet.truncate(247);
        assert_eq!(packet_option(&packet, 97), None, "truncated");
        assert_eq!(packet_option(&packet[..10], 53), None);
    }
}
