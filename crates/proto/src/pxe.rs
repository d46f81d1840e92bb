//! PXE 2.1 vendor options (DHCP option 43 sub-options): built by the server's responder, read
//! by the NBP (boot servers) and the responder (boot item).
//!
//! Sub-options used: 6 discovery control, 8 boot servers, 9 boot menu, 10 menu prompt,
//! 71 boot item, 255 end.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::dhcp::Options;

/// Discovery control: bit 3: a boot file name in the offer is to be used at once, without
/// discovery or a menu (what iPXE and legacy PXE ROMs do with a plain proxy offer).
pub const USE_BOOT_FILE: u8 = 0x08;
/// Discovery control: bits 0 and 1: no broadcast or multicast discovery; unicast to the boot
/// servers of sub-option 8 instead.
pub const UNICAST_ONLY: u8 = 0x03;
/// The PXE boot server type bootherd announces its centrals as (0x8000 and up are vendor
/// types).
pub const BOOT_SERVER_TYPE: u16 = 0x8000;
/// Most addresses in one boot server entry: a sub-option holds 255 bytes (3 + 4 per address).
pub const MAX_BOOT_SERVERS: usize = 63;

/// A boot item: server type and layer (sub-option 71).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootItem {
    /// Boot server type.
    pub server_type: u16,
    /// Layer.
    pub layer: u16,
}

/// Builds an option 43 payload, sub-option by sub-option, ended by 255.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VendorOptions {
    bytes: Vec<u8>,
}

impl VendorOptions {
    fn push(mut self, code: u8, value: &[u8]) -> Self {
        // Callers keep values short (text is cut to 64 bytes), well under 255.
        let len = value.len().min(255);
        self.bytes.push(code);
        self.bytes.push(len as u8);
        self.bytes.extend_from_slice(&value[..len]);
        self
    }

    /// Sub-option 6.
    pub fn discovery_control(self, bits: u8) -> Self {
        self.push(6, &[bits])
    }

    /// Sub-option 8: one boot server type with its addresses, in the order to try (at most
    /// [`MAX_BOOT_SERVERS`]; more are left out).
    pub fn boot_servers(self, server_type: u16, addresses: &[Ipv4Addr]) -> Self {
        let addresses = &addresses[..addresses.len().min(MAX_BOOT_SERVERS)];
        let mut v = server_type.to_be_bytes().to_vec();
        v.push(addresses.len() as u8);
        for a in addresses {
            v.extend_from_slice(&a.octets());
        }
        self.push(8, &v)
    }

    /// Sub-option 9: one menu item.
    pub fn menu_item(self, server_type: u16, description: &str) -> Self {
        let text = &description.as_bytes()[..description.len().min(64)];
        let mut v = server_type.to_be_bytes().to_vec();
        v.push(text.len() as u8);
        v.extend_from_slice(text);
        self.push(9, &v)
    }

    /// Sub-option 10: the prompt, shown for `timeout` seconds (0: boot the first item now).
    pub fn prompt(self, timeout: u8, text: &str) -> Self {
        let mut v = vec![timeout];
        v.extend_from_slice(&text.as_bytes()[..text.len().min(64)]);
        self.push(10, &v)
    }

    /// Sub-option 71.
    pub fn boot_item(self, item: BootItem) -> Self {
        let mut v = item.server_type.to_be_bytes().to_vec();
        v.extend_from_slice(&item.layer.to_be_bytes());
        self.push(71, &v)
    }

    /// The payload, with the end marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.push(255);
        self.bytes
    }
}

/// The boot item (sub-option 71) of a request's option 43, if it has a well-formed one.
pub fn find_boot_item(option43: &[u8]) -> Option<BootItem> {
    match Options::new(option43).get(71)? {
        [t0, t1, l0, l1, ..] => Some(BootItem {
            server_type: u16::from_be_bytes([*t0, *t1]),
            layer: u16::from_be_bytes([*l0, *l1]),
        }),
        _ => None,
    }
}

/// The boot servers of type `server_type` in an option 43 payload (sub-option 8: type, count,
/// IPv4 addresses; several types may follow each other), in order. Malformed entries end the
/// list.
pub fn boot_servers(option43: &[u8], server_type: u16) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut rest = Options::new(option43).get(8).unwrap_or_default();
    while let [t0, t1, count, tail @ ..] = rest {
        let Some(addresses) = tail.get(..usize::from(*count) * 4) else {
            break;
        };
        if u16::from_be_bytes([*t0, *t1]) == server_type {
            out.extend(
                addresses
                    .chunks_exact(4)
                    .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            );
        }
        rest = &tail[addresses.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_pxe_roms_expect() {
        // The same bytes dnsmasq sends for a one-item menu (see the captures), with our names.
        let menu = VendorOptions::default()
            .discovery_control(UNICAST_ONLY)
            .prompt(0, "PXE")
            .boot_servers(BOOT_SERVER_TYPE, &[Ipv4Addr::new(10, 77, 0, 1)])
            .menu_item(BOOT_SERVER_TYPE, "Lab")
            .finish();
        assert_eq!(
            menu,
            [
                6, 1, 3, 10, 4, 0, b'P', b'X', b'E', 8, 7, 0x80, 0, 1, 10, 77, 0, 1, 9, 6, 0x80, 0,
                3, b'L', b'a', b'b', 255
            ]
        );
    }

    #[test]
    fn boot_servers_round_trip_and_are_capped() {
        let many: Vec<Ipv4Addr> = (0..70).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let payload = VendorOptions::default()
            .boot_servers(BOOT_SERVER_TYPE, &many)
            .finish();
        let read = boot_servers(&payload, BOOT_SERVER_TYPE);
        assert_eq!(read.len(), MAX_BOOT_SERVERS);
        assert_eq!(read[62], Ipv4Addr::new(10, 0, 0, 62));
        assert_eq!(payload.len(), 2 + 3 + 4 * MAX_BOOT_SERVERS + 1);
    }

    #[test]
    fn finds_boot_items_and_survives_garbage() {
        // From the iPXE BIOS menu capture: item 0x8000 layer 0.
        assert_eq!(
            find_boot_item(&[0x47, 0x04, 0x80, 0, 0, 0, 0xff]),
            Some(BootItem {
                server_type: 0x8000,
                layer: 0
            })
        );
        assert_eq!(
            find_boot_item(&[0, 6, 1, 8, 71, 4, 0x80, 1, 0, 0, 255]),
            Some(BootItem {
                server_type: 0x8001,
                layer: 0
            })
        );
        for junk in [
            &[][..],
            &[71],
            &[71, 9, 1],
            &[71, 2, 1, 2],
            &[6, 200],
            &[255, 71, 4, 1, 2, 3, 4],
        ] {
            assert_eq!(find_boot_item(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn boot_servers_by_type_in_order() {
        // Discovery control, then two server types in one sub-option 8.
        let option43 = [
            6, 1, 3, 8, 18, 0x80, 0, 2, 10, 0, 0, 1, 10, 0, 0, 2, 0x12, 0x34, 1, 10, 0, 0, 9, 255,
        ];
        let ip = |last| Ipv4Addr::new(10, 0, 0, last);
        assert_eq!(boot_servers(&option43, 0x8000), [ip(1), ip(2)]);
        assert_eq!(boot_servers(&option43, 0x1234), [ip(9)]);
        let none: [Ipv4Addr; 0] = [];
        assert_eq!(boot_servers(&option43, 1), none);
        // A count past the end stops the list; no sub-option 8 is an empty list.
        assert_eq!(boot_servers(&[8, 7, 0x80, 0, 2, 10, 0, 0, 1], 0x8000), none);
        assert_eq!(boot_servers(&[6, 1, 8, 255], 0x8000), none);
    }
}
