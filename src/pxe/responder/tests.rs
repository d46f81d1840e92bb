//! The responder against the packets real PXE firmware sent (captured in a QEMU lab, see
//! `../fixtures/CAPTURES.md`): every field and option of the replies, byte by byte where it
//! matters.

use super::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 145);
const UUID_OPTION: [u8; 17] = [
    0, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x47, 0x87, 0x77, 0x52, 0x54, 0x00, 0x77, 0x00,
    0x10,
];

const IPXE_BIOS_DISCOVER: &[u8] = include_bytes!("../fixtures/ipxe-bios-e1000-1-discover-to67.bin");
const IPXE_BIOS_REQUEST_67: &[u8] =
    include_bytes!("../fixtures/ipxe-bios-e1000-2-request-to67.bin");
const IPXE_MENU_REQUEST_4011: &[u8] =
    include_bytes!("../fixtures/ipxe-bios-menu-e1000-3-request-to4011.bin");
const OVMF_DISCOVER: &[u8] = include_bytes!("../fixtures/ovmf-x64-virtio-1-discover-to67.bin");
const OVMF_REQUEST_67: &[u8] = include_bytes!("../fixtures/ovmf-x64-virtio-2-request-to67.bin");
const OVMF_REQUEST_4011: &[u8] = include_bytes!("../fixtures/ovmf-x64-virtio-3-request-to4011.bin");
const IPXE_EFI_DISCOVER: &[u8] = include_bytes!("../fixtures/ovmf-x64-virtio-5-discover-to67.bin");
const OVMF_MENU_REQUEST_4011: &[u8] =
    include_bytes!("../fixtures/ovmf-x64-menu2-virtio-3-request-to4011.bin");
const OVMF_MENU_ITEM_4011: &[u8] =
    include_bytes!("../fixtures/ovmf-x64-menu2-virtio-5-request-to4011.bin");
const AAVMF_DISCOVER: &[u8] = include_bytes!("../fixtures/aavmf-arm64-virtio-1-discover-to67.bin");
const AAVMF_REQUEST_4011: &[u8] =
    include_bytes!("../fixtures/aavmf-arm64-virtio-3-request-to4011.bin");
const UBOOT_DISCOVER: &[u8] = include_bytes!("../fixtures/uboot-arm64-virtio-1-discover-to67.bin");
const UBOOT_REQUEST_67: &[u8] = include_bytes!("../fixtures/uboot-arm64-virtio-2-request-to67.bin");
const UBOOT_PXE_DISCOVER: &[u8] =
    include_bytes!("../fixtures/uboot-arm64-virtio-3-discover-to67.bin");
const UBOOT_PXE_REQUEST_67: &[u8] =
    include_bytes!("../fixtures/uboot-arm64-virtio-4-request-to67.bin");

fn broadcast_client() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 68))
}

/// A reply, decoded by hand (not by dhcproto, so that the test checks the bytes).
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    to: SocketAddrV4,
    file: Option<String>,
    client: Client,
}

impl Reply {
    fn packet(&self) -> Packet<&[u8]> {
        Packet::new_checked(&self.bytes[..]).unwrap()
    }

    fn option(&self, code: u8) -> Option<Vec<u8>> {
        self.packet().option(code).map(<[u8]>::to_vec)
    }

    /// Option codes in the order they appear; every option well-formed.
    fn codes(&self) -> Vec<u8> {
        self.packet().options().map(|o| o.unwrap().code).collect()
    }

    fn bootp_file(&self) -> String {
        let packet = self.packet();
        let name = packet.file().iter().take_while(|&&b| b != 0).copied();
        String::from_utf8(name.collect()).unwrap()
    }
}

fn reply(config: &PxeConfig, service: Service, request: &[u8], from: SocketAddr) -> Reply {
    match respond(config, service, request, from, SERVER) {
        Decision::Reply {
            payload,
            to,
            client,
            file,
        } => Reply {
            bytes: payload,
            to,
            file,
            client,
        },
        Decision::Ignore(why) => panic!("ignored: {why}"),
    }
}

fn ignored(config: &PxeConfig, service: Service, request: &[u8]) -> String {
    match respond(config, service, request, broadcast_client(), SERVER) {
        Decision::Ignore(why) => why,
        other => panic!("answered: {other:?}"),
    }
}

/// Header fields every reply shares with its request.
fn check_common(r: &Reply, request: &[u8], message_type: u8) {
    assert!(
        r.bytes.len() >= MIN_REPLY_LEN,
        "padded to 300: {}",
        r.bytes.len()
    );
    assert_eq!(r.bytes[0], 2, "BOOTREPLY");
    assert_eq!(r.bytes[1..3], request[1..3], "htype, hlen");
    assert_eq!(r.bytes[4..8], request[4..8], "xid");
    assert_eq!(r.bytes[10..12], request[10..12], "flags");
    assert_eq!(
        r.packet().yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "yiaddr: a proxy hands out no address"
    );
    assert_eq!(r.packet().siaddr(), SERVER, "siaddr");
    assert_eq!(r.bytes[28..34], request[28..34], "chaddr");
    assert_eq!(r.bytes[236..240], [99, 130, 83, 99], "magic cookie");
    let codes = r.codes();
    assert_eq!(
        codes[..4],
        [53, 54, 60, 97],
        "53 first, then 54, 60, 97: {codes:?}"
    );
    assert_eq!(r.option(53).unwrap(), [message_type]);
    assert_eq!(r.option(54).unwrap(), SERVER.octets());
    assert_eq!(r.option(60).unwrap(), b"PXEClient");
    assert_eq!(r.option(97).unwrap(), UUID_OPTION, "option 97 echoed");
    assert_eq!(
        r.client.uuid.as_deref(),
        Some("77777777-7777-4777-8777-525400770010")
    );
    assert_eq!(r.client.mac, "52:54:00:77:00:10");
}

#[test]
fn ipxe_bios_gets_the_file_in_the_offer_with_discovery_control_8() {
    let r = reply(
        &PxeConfig::default(),
        Service::Proxy,
        IPXE_BIOS_DISCOVER,
        broadcast_client(),
    );
    check_common(&r, IPXE_BIOS_DISCOVER, 2);
    assert_eq!(r.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(r.bootp_file(), "bootherd/alternates.ipxe");
    assert_eq!(r.file.as_deref(), Some("bootherd/alternates.ipxe"));
    assert!(r.client.ipxe && r.client.arch == 0);
    let mut vendor = vec![6, 1, 8, 10, 9, 0];
    vendor.extend_from_slice(b"bootherd");
    vendor.push(255);
    assert_eq!(r.option(43).unwrap(), vendor);
}

#[test]
fn requests_to_port_67_for_the_dhcp_server_are_left_alone() {
    for request in [IPXE_BIOS_REQUEST_67, OVMF_REQUEST_67] {
        assert_eq!(
            ignored(&PxeConfig::default(), Service::Proxy, request),
            "DHCPREQUEST for another server"
        );
    }
}

#[test]
fn ovmf_gets_an_offer_without_option_43_then_its_file_on_4011() {
    let offer = reply(
        &PxeConfig::default(),
        Service::Proxy,
        OVMF_DISCOVER,
        broadcast_client(),
    );
    check_common(&offer, OVMF_DISCOVER, 2);
    assert_eq!(offer.codes(), [53, 54, 60, 97]);
    assert_eq!(offer.bootp_file(), "bootherd-x64.efi");
    assert_eq!(offer.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    // After its DHCP ACK, OVMF asks 4011 from its new address; the answer goes back there.
    let from = SocketAddr::from((CLIENT_IP, 4011));
    let ack = reply(
        &PxeConfig::default(),
        Service::Discovery,
        OVMF_REQUEST_4011,
        from,
    );
    check_common(&ack, OVMF_REQUEST_4011, 5);
    assert_eq!(ack.to, SocketAddrV4::new(CLIENT_IP, 4011));
    assert_eq!(ack.packet().ciaddr(), CLIENT_IP, "ciaddr kept");
    assert_eq!(ack.bootp_file(), "bootherd-x64.efi");
    assert_eq!(ack.option(43).unwrap(), [6, 1, 8, 255]);
}

#[test]
fn aavmf_gets_the_arm64_program() {
    let offer = reply(
        &PxeConfig::default(),
        Service::Proxy,
        AAVMF_DISCOVER,
        broadcast_client(),
    );
    assert_eq!(offer.bootp_file(), "bootherd-aa64.efi");
    assert_eq!(offer.client.arch, 11);
    let ack = reply(
        &PxeConfig::default(),
        Service::Discovery,
        AAVMF_REQUEST_4011,
        SocketAddr::from((CLIENT_IP, 4011)),
    );
    assert_eq!(ack.bootp_file(), "bootherd-aa64.efi");
}

#[test]
fn u_boot_is_left_to_the_site_dhcp_server() {
    let menu = PxeConfig {
        menu: Some("m".into()),
        ..PxeConfig::default()
    };
    for config in [PxeConfig::default(), menu] {
        // Its own DHCP (option 60 U-Boot.armv8, option 93 22), then distro boot's EFI round
        // (option 60 PXEClient:Arch:00011, option 93 11): neither is answered.
        for request in [UBOOT_DISCOVER, UBOOT_REQUEST_67] {
            assert_eq!(
                ignored(&config, Service::Proxy, request),
                "no option 60 PXEClient: not a PXE client"
            );
        }
        assert_eq!(
            ignored(&config, Service::Proxy, UBOOT_PXE_DISCOVER),
            U_BOOT_NOT_ANSWERED
        );
        assert_eq!(
            ignored(&config, Service::Proxy, UBOOT_PXE_REQUEST_67),
            "DHCPREQUEST for another server"
        );
    }
    // The same request with a PXE ROM's option 94 is a UEFI client's, and gets the NBP.
    let as_firmware = edit_option(UBOOT_PXE_DISCOVER, 94, Some(&[1, 3, 0]));
    let offer = reply(
        &PxeConfig::default(),
        Service::Proxy,
        &as_firmware,
        broadcast_client(),
    );
    assert_eq!(offer.bootp_file(), "bootherd-aa64.efi");
    assert_eq!(offer.client.arch, 11);
}

#[test]
fn ipxe_efi_gets_its_file_and_never_a_menu() {
    let menu = PxeConfig {
        menu: Some("Boot through bootherd".into()),
        ..PxeConfig::default()
    };
    for config in [PxeConfig::default(), menu] {
        let r = reply(
            &config,
            Service::Proxy,
            IPXE_EFI_DISCOVER,
            broadcast_client(),
        );
        check_common(&r, IPXE_EFI_DISCOVER, 2);
        assert!(r.client.ipxe && r.client.arch == 7);
        assert_eq!(r.bootp_file(), "bootherd/alternates.ipxe");
        assert_eq!(r.option(43).unwrap()[..3], [6, 1, 8]);
    }
}

#[test]
fn menu_offer_then_discovery_with_boot_item() {
    let config = PxeConfig {
        menu: Some("bootherd".into()),
        ..PxeConfig::default()
    };
    for discover in [IPXE_BIOS_DISCOVER, OVMF_DISCOVER] {
        let offer = reply(&config, Service::Proxy, discover, broadcast_client());
        check_common(&offer, discover, 2);
        assert_eq!(offer.bootp_file(), "", "a menu offer names no file");
        assert_eq!(offer.file, None);
        let vendor = offer.option(43).unwrap();
        assert_eq!(vendor[..3], [6, 1, 3], "unicast discovery");
        let servers = [8, 7, 0x80, 0, 1, 10, 77, 0, 1];
        assert!(
            vendor.windows(servers.len()).any(|w| w == servers),
            "{vendor:?}"
        );
        assert!(
            vendor.windows(5).any(|w| w == [9, 11, 0x80, 0, 8]),
            "menu item 0x8000"
        );
    }
    // iPXE BIOS asks for item 0x8000 from port 68; the answer echoes it to port 68.
    let from = SocketAddr::from((CLIENT_IP, 68));
    let ack = reply(&config, Service::Discovery, IPXE_MENU_REQUEST_4011, from);
    check_common(&ack, IPXE_MENU_REQUEST_4011, 5);
    assert_eq!(ack.to, SocketAddrV4::new(CLIENT_IP, 68));
    assert_eq!(ack.option(43).unwrap(), [71, 4, 0x80, 0, 0, 0, 255]);
    assert_eq!(ack.bootp_file(), "bootherd/alternates.ipxe");
    // OVMF first asks without an item, then with item 0x8001 (dnsmasq's second menu entry).
    let from = SocketAddr::from((CLIENT_IP, 4011));
    let first = reply(&config, Service::Discovery, OVMF_MENU_REQUEST_4011, from);
    assert_eq!(first.option(43).unwrap(), [6, 1, 8, 255]);
    let second = reply(&config, Service::Discovery, OVMF_MENU_ITEM_4011, from);
    assert_eq!(second.option(43).unwrap(), [71, 4, 0x80, 1, 0, 0, 255]);
    assert_eq!(second.bootp_file(), "bootherd-x64.efi");
}

/// A copy of `request` with option `code` removed or its value replaced.
fn edit_option(request: &[u8], code: u8, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = request[..HEADER_LEN].to_vec();
    for option in Packet::new_checked(request).unwrap().options() {
        let option = option.unwrap();
        let kept = if option.code == code {
            value
        } else {
            Some(option.value)
        };
        if let Some(v) = kept {
            out.push(option.code);
            out.push(v.len() as u8);
            out.extend_from_slice(v);
        }
    }
    out.push(255);
    out
}

#[test]
fn plain_dhcp_is_never_answered() {
    let plain = edit_option(OVMF_DISCOVER, 60, None);
    assert_eq!(
        ignored(&PxeConfig::default(), Service::Proxy, &plain),
        "no option 60 PXEClient: not a PXE client"
    );
    let other = edit_option(OVMF_DISCOVER, 60, Some(b"MSFT 5.0"));
    assert!(ignored(&PxeConfig::default(), Service::Proxy, &other).contains("not a PXE client"));
    let mut reply_packet = OVMF_DISCOVER.to_vec();
    reply_packet[0] = 2;
    assert_eq!(
        ignored(&PxeConfig::default(), Service::Proxy, &reply_packet),
        "not a BOOTREQUEST"
    );
}

#[test]
fn relayed_requests_go_back_to_the_relay() {
    let mut relayed = OVMF_DISCOVER.to_vec();
    relayed[24..28].copy_from_slice(&[10, 78, 0, 1]);
    let r = reply(
        &PxeConfig::default(),
        Service::Proxy,
        &relayed,
        SocketAddr::from(([10, 78, 0, 1], 67)),
    );
    assert_eq!(r.to, SocketAddrV4::new(Ipv4Addr::new(10, 78, 0, 1), 67));
    assert_eq!(
        r.packet().giaddr(),
        Ipv4Addr::new(10, 78, 0, 1),
        "giaddr kept"
    );
}

#[test]
fn architecture_comes_from_option_93_or_the_class() {
    let no93 = edit_option(OVMF_DISCOVER, 93, None);
    assert_eq!(
        reply(
            &PxeConfig::default(),
            Service::Proxy,
            &no93,
            broadcast_client()
        )
        .client
        .arch,
        7
    );
    let odd = edit_option(OVMF_DISCOVER, 93, Some(&[0, 99]));
    let why = ignored(&PxeConfig::default(), Service::Proxy, &odd);
    assert_eq!(
        why,
        "client 52:54:00:77:00:10 has architecture 99, which has no boot file"
    );
}

#[test]
fn hostile_packets_are_dropped_without_panicking() {
    let bad94 = edit_option(OVMF_DISCOVER, 94, Some(&[1, 2]));
    assert!(
        ignored(&PxeConfig::default(), Service::Proxy, &bad94).contains("option 94 has length 2")
    );
    let bad53 = edit_option(OVMF_DISCOVER, 53, Some(&[1, 1]));
    assert!(ignored(&PxeConfig::default(), Service::Proxy, &bad53).contains("option 53"));
    let mut long_hlen = OVMF_DISCOVER.to_vec();
    long_hlen[2] = 127;
    assert!(ignored(&PxeConfig::default(), Service::Proxy, &long_hlen)
        .contains("hardware address length 127"));
    // Options the responder does not read cannot trip the decoder either (121 with a prefix
    // over 32 panics dhcproto; 80 with a value debug-asserts).
    let mut exotic = edit_option(OVMF_DISCOVER, 121, None);
    exotic.pop();
    exotic.extend_from_slice(&[121, 5, 40, 10, 0, 0, 1, 80, 1, 7, 255]);
    assert_eq!(
        reply(
            &PxeConfig::default(),
            Service::Proxy,
            &exotic,
            broadcast_client()
        )
        .client
        .arch,
        7
    );
    // Found by the pxe_responder fuzz target: two option 94s of valid length, apart in the
    // request, are one of 6 bytes to dhcproto once the option between them is left out.
    let mut twice94 = edit_option(OVMF_DISCOVER, 94, None);
    twice94.pop();
    twice94.extend_from_slice(&[94, 3, 1, 3, 0, 12, 1, b'x', 94, 3, 1, 3, 0, 255]);
    assert!(
        ignored(&PxeConfig::default(), Service::Proxy, &twice94).contains("option 94 has length 6")
    );
    // An empty option between two others stays: it keeps them apart (found the same way).
    let mut apart94 = edit_option(OVMF_DISCOVER, 94, None);
    apart94.pop();
    apart94.extend_from_slice(&[94, 3, 1, 3, 0, 60, 0, 94, 3, 1, 3, 0, 255]);
    let _ = respond(
        &PxeConfig::default(),
        Service::Proxy,
        &apart94,
        broadcast_client(),
        SERVER,
    );
    // A long option split in two chunks is still one option (RFC 3396).
    let mut split60 = edit_option(OVMF_DISCOVER, 60, None);
    split60.pop();
    split60.extend_from_slice(&[60, 9]);
    split60.extend_from_slice(b"PXEClient");
    split60.extend_from_slice(&[60, 21]);
    split60.extend_from_slice(b":Arch:00007:UNDI:0030");
    split60.push(255);
    assert_eq!(
        reply(
            &PxeConfig::default(),
            Service::Proxy,
            &split60,
            broadcast_client()
        )
        .client
        .arch,
        7
    );
    let mut overrun = OVMF_DISCOVER[..HEADER_LEN].to_vec();
    overrun.extend_from_slice(&[60, 200, b'P']);
    assert!(ignored(&PxeConfig::default(), Service::Proxy, &overrun).contains("runs past the end"));
    // Every prefix and many single-byte corruptions of every capture: answered or ignored.
    let config = PxeConfig {
        menu: Some("m".into()),
        ..PxeConfig::default()
    };
    for request in [
        IPXE_BIOS_DISCOVER,
        OVMF_DISCOVER,
        IPXE_MENU_REQUEST_4011,
        OVMF_MENU_ITEM_4011,
        AAVMF_DISCOVER,
        UBOOT_PXE_DISCOVER,
    ] {
        for n in 0..request.len() {
            for service in [Service::Proxy, Service::Discovery] {
                let _ = respond(&config, service, &request[..n], broadcast_client(), SERVER);
            }
        }
        for i in 0..request.len() {
            for value in [0u8, 1, 2, 3, 0x7f, 0xff] {
                let mut corrupt = request.to_vec();
                corrupt[i] = value;
                let _ = respond(
                    &config,
                    Service::Discovery,
                    &corrupt,
                    broadcast_client(),
                    SERVER,
                );
            }
        }
    }
}

#[test]
fn boot_file_names_are_checked_against_the_bootp_field() {
    assert!(BootFiles::default().validate().is_ok());
    let long = BootFiles {
        efi_x64: "x".repeat(128),
        ..BootFiles::default()
    };
    assert_eq!(
        long.validate().unwrap_err(),
        "boot_efi_x64: 1 to 127 bytes, no NUL"
    );
    assert!(BootFiles {
        bios: String::new(),
        ..BootFiles::default()
    }
    .validate()
    .is_err());
}

#[test]
fn uefi_http_boot_gets_the_url_of_its_file_on_the_best_alternate() {
    // OVMF's HTTP boot discover: option 60 "HTTPClient:Arch:00016:...", option 93 = 16.
    let class = b"HTTPClient:Arch:00016:UNDI:003001";
    let request = edit_option(
        &edit_option(OVMF_DISCOVER, 60, Some(class)),
        93,
        Some(&[0, 16]),
    );
    let ask = |config: &PxeConfig, url: Option<&str>| {
        let mut asked = Vec::new();
        let decision = respond_with(
            config,
            Service::Proxy,
            &request,
            broadcast_client(),
            SERVER,
            &mut |path| {
                asked.push(path.to_string());
                url.map(|u| format!("{u}/{path}"))
            },
        );
        (decision, asked)
    };
    // Not configured: not answered, and nothing is asked of the table.
    let (decision, asked) = ask(&PxeConfig::default(), Some("http://10.77.0.12:8080"));
    assert!(matches!(decision, Decision::Ignore(_)) && asked.is_empty());
    let mut config = PxeConfig::default();
    config.boot_files.http_x64 = Some("ipxe.efi".into());
    // No alternate serves HTTP: not answered (the firmware goes on to its next boot option).
    assert!(matches!(ask(&config, None).0, Decision::Ignore(_)));
    let (Decision::Reply { payload, file, .. }, asked) =
        ask(&config, Some("http://10.77.0.12:8080"))
    else {
        panic!("not answered")
    };
    assert_eq!(asked, ["ipxe.efi"]);
    let url = "http://10.77.0.12:8080/ipxe.efi";
    assert_eq!(file.as_deref(), Some(url));
    let r = Reply {
        bytes: payload,
        to: SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        file,
        client: reply(
            &PxeConfig::default(),
            Service::Proxy,
            OVMF_DISCOVER,
            broadcast_client(),
        )
        .client,
    };
    // What EDK2's HttpBootDxe takes as a proxy offer with an IP URI: no yiaddr, option 60
    // starting with "HTTPClient", the URL in the file field.
    assert_eq!(r.packet().yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.option(60).as_deref(), Some(&b"HTTPClient"[..]));
    assert_eq!(r.option(53).as_deref(), Some(&[2u8][..]), "an offer");
    assert_eq!(r.option(43), None);
    assert_eq!(r.bootp_file(), url);
    // An architecture without an HTTP boot file is not answered.
    let arm = edit_option(&request, 93, Some(&[0, 19]));
    assert!(matches!(
        respond_with(
            &config,
            Service::Proxy,
            &arm,
            broadcast_client(),
            SERVER,
            &mut |_| Some("http://x/y".into())
        ),
        Decision::Ignore(_)
    ));
}
