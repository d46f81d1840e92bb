//! What each fuzz target does with its input, one function per target: the targets in
//! `fuzz_targets/` call these, and `tests/fuzz_corpus.rs` in the main crate replays the
//! checked-in corpus through the same functions (it includes this file by path), so a crash
//! once found stays a failing test.
//!
//! Beyond "no panic", each checks what must hold: packets and lists survive a round trip, a
//! transfer never acknowledges more than the file, a download hands out exactly what it counts,
//! a signed report decodes to what re-encodes to it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bootherd::formats::{alt_list, boot_config};
use bootherd::http::exchange::{answer, route, Found};
use bootherd::http::wire::{parse_range, parse_request, parse_response, RangeAsk, MAX_HEAD_LEN};
use bootherd::pxe::client::PxeClient;
use bootherd::pxe::responder::{respond, Decision, PxeConfig, Service};
use bootherd::report::wire::{decode, encode, Key};
use bootherd::tftp::download::{ClientRetransmit, Download, RequestSpec};
use bootherd::tftp::options::{negotiate, Limits};
use bootherd::tftp::transfer::{Outcome, Retransmit, Transfer};
use bootherd::tftp::wire::{OptionsBuf, Packet};
use bootherd_proto::dhcp::{self, Options};
use bootherd_proto::pxe::{boot_servers, BOOT_SERVER_TYPE};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("tftp_packet", tftp_packet),
    ("tftp_transfer", tftp_transfer),
    ("tftp_download", tftp_download),
    ("pxe_responder", pxe_responder),
    ("report_decode", report_decode),
    ("config", config),
    ("alt_list", alt_list),
    ("boot_config", boot_config),
    ("dhcp_options", dhcp_options),
    ("http_request", http_request),
];

/// Reads the fuzzer's bytes as a stream of small decisions; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 69);
const SERVER_TID: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
const STRANGER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 50000);

/// One datagram: parsed, re-emitted, parsed again to the same packet; requests' options
/// negotiated and file names checked.
pub fn tftp_packet(data: &[u8]) {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let mut buf = vec![0u8; packet.buffer_len()];
    let len = packet.emit(&mut buf).expect("a parsed packet emits");
    assert_eq!(len, buf.len());
    assert_eq!(
        Packet::parse(&buf).expect("an emitted packet parses"),
        packet
    );
    if let Packet::Read(request) = packet {
        let _ = negotiate(request.options, Limits::default(), data.len() as u64 * 1000);
        let _ = bootherd::tftp::path::sanitize(request.filename);
    }
}

/// The server side of a transfer fed ACKs (of what it sent, or any block), garbage, strangers'
/// datagrams, the passing of time and blocked sends.
pub fn tftp_transfer(data: &[u8]) {
    let mut input = Input(data);
    let size = u64::from(input.u16());
    let mut options = OptionsBuf::default();
    let which = input.byte();
    if which & 1 != 0 {
        options.push("blksize", u64::from(input.u16()));
    }
    if which & 2 != 0 {
        options.push("windowsize", u64::from(input.byte()));
    }
    if which & 4 != 0 {
        options.push("timeout", u64::from(input.byte()));
    }
    if which & 8 != 0 {
        options.push("tsize", 0);
    }
    let Ok(negotiated) = negotiate(options.as_options(), Limits::default(), size) else {
        return;
    };
    let file: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut transfer = Transfer::new(CLIENT, negotiated, Retransmit::default(), size);
    let mut buf = vec![0u8; transfer.batch_buffer_len(64)];
    let mut now = Instant::now();
    let mut highest_sent = 0u16;
    let mut packet = [0u8; 600];
    loop {
        while let Some(tx) = transfer.poll_transmit(now, 64, &mut buf, &file[..]) {
            assert!(tx.len <= buf.len());
            for datagram in tx.datagrams(&buf) {
                match Packet::parse(datagram).expect("the server sends valid packets") {
                    Packet::Data { block, .. } => highest_sent = block,
                    Packet::OptionAck(_) | Packet::Error { .. } => {}
                    other => panic!("server sent {other:?}"),
                }
            }
        }
        if input.is_empty() {
            break;
        }
        match input.byte() % 6 {
            0 => {
                let n = Packet::Ack {
                    block: highest_sent,
                }
                .emit(&mut packet)
                .unwrap();
                transfer.handle_datagram(now, CLIENT, &packet[..n]);
            }
            1 => {
                let n = Packet::Ack { block: input.u16() }
                    .emit(&mut packet)
                    .unwrap();
                transfer.handle_datagram(now, CLIENT, &packet[..n]);
            }
            2 => {
                let len = usize::from(input.byte());
                transfer.handle_datagram(now, CLIENT, input.take(len));
            }
            3 => {
                let len = usize::from(input.byte());
                transfer.handle_datagram(now, STRANGER, input.take(len));
            }
            4 => {
                now += Duration::from_millis(u64::from(input.byte()) * 50);
                transfer.handle_timeout(now);
            }
            _ => {
                transfer.requeue_unsent(usize::from(input.byte()));
            }
        }
        assert!(transfer.bytes_acked() <= transfer.size());
    }
    if transfer.outcome() == Some(&Outcome::Complete) {
        assert_eq!(transfer.bytes_acked(), size);
    }
}

/// The client side of a download fed OACKs, DATA, ERRORs and garbage from the server, its
/// transfer port and a stranger, and the passing of time.
pub fn tftp_download(data: &[u8]) {
    let mut input = Input(data);
    let ask = input.byte();
    let spec = RequestSpec {
        path: "boot/vmlinuz".into(),
        blksize: (ask & 1 != 0).then(|| input.u16()),
        windowsize: (ask & 2 != 0).then(|| u16::from(input.byte())),
        tsize: ask & 4 != 0,
    };
    let mut now = Instant::now();
    let mut download = Download::new(now, SERVER, spec, ClientRetransmit::default());
    let mut out = [0u8; 1024];
    let mut packet = vec![0u8; 2048];
    let mut delivered = 0u64;
    loop {
        while let Some(tx) = download.poll_transmit(&mut out) {
            Packet::parse(&out[..tx.len]).expect("the client sends valid packets");
        }
        if input.is_empty() || download.result().is_some() {
            break;
        }
        let from = match input.byte() % 3 {
            0 => SERVER_TID,
            1 => SERVER,
            _ => STRANGER,
        };
        let datagram: &[u8] = match input.byte() % 5 {
            0 => {
                let mut options = OptionsBuf::default();
                for name in ["blksize", "windowsize", "tsize"] {
                    if input.byte() & 1 != 0 {
                        options.push(name, u64::from(input.u16()));
                    }
                }
                let n = Packet::OptionAck(options.as_options())
                    .emit(&mut packet)
                    .unwrap();
                &packet[..n]
            }
            1 => {
                let block = input.u16();
                let len = usize::from(input.u16()) % 1500;
                let payload = vec![0x5a; len];
                let n = Packet::Data {
                    block,
                    data: &payload,
                }
                .emit(&mut packet)
                .unwrap();
                &packet[..n]
            }
            2 => {
                let len = usize::from(input.byte());
                input.take(len)
            }
            3 => {
                now += Duration::from_millis(u64::from(input.byte()) * 50);
                download.handle_timeout(now);
                continue;
            }
            _ => {
                let n = Packet::Error {
                    code: bootherd::tftp::wire::ErrorCode::NotDefined,
                    message: "server busy",
                }
                .emit(&mut packet)
                .unwrap();
                &packet[..n]
            }
        };
        if let Some(payload) = download.handle_datagram(now, from, datagram) {
            delivered += payload.len() as u64;
        }
        assert_eq!(delivered, download.received());
    }
}

/// The PXE responder on both services, with and without a menu and backup centrals; a reply
/// is at least 300 bytes and readable by the client that asked. The simulated client reads the
/// input as an answer too.
pub fn pxe_responder(data: &[u8]) {
    let Some((&how, request)) = data.split_first() else {
        return;
    };
    let config = PxeConfig {
        menu: (how & 2 != 0).then(|| "bootherd".to_string()),
        backup_centrals: if how & 4 != 0 {
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        } else {
            Vec::new()
        },
        ..PxeConfig::default()
    };
    let service = if how & 1 != 0 {
        Service::Discovery
    } else {
        Service::Proxy
    };
    let from = SocketAddr::from(([10, 0, 0, 50], 68));
    let decision = respond(&config, service, request, from, Ipv4Addr::new(10, 0, 0, 1));
    if let Decision::Reply { payload, .. } = &decision {
        assert!(payload.len() >= 300);
        // The client that sent the request (transaction id, 6-byte hardware address) can
        // read the answer.
        if request[2] == 6 {
            let client = PxeClient {
                xid: u32::from_be_bytes([request[4], request[5], request[6], request[7]]),
                mac: request[28..34].try_into().unwrap(),
                uuid: [0; 16],
                arch: 0,
                address: Ipv4Addr::UNSPECIFIED,
            };
            assert!(client.read_answer(payload).is_some(), "{decision:?}");
        }
    }
    let client = PxeClient {
        xid: 0,
        mac: [0; 6],
        uuid: [0; 16],
        arch: 0,
        address: Ipv4Addr::UNSPECIFIED,
    };
    let _ = client.read_answer(request);
}

const REPORT_KEY: &[u8] = b"fuzzing key, 32 bytes long......";

fn report_key() -> Key {
    Key::new(REPORT_KEY).unwrap()
}

/// A datagram on the report port, as it came (the tag almost never matches) and signed with
/// the key (the body parser is reached); what decodes re-encodes to what decodes the same.
pub fn report_decode(data: &[u8]) {
    use hmac::{KeyInit, Mac};
    let key = report_key();
    let _ = decode(data, &key);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(REPORT_KEY).unwrap();
    mac.update(data);
    let mut signed = data.to_vec();
    signed.extend_from_slice(&mac.finalize().into_bytes());
    if let Ok(message) = decode(&signed, &key) {
        if let Ok(again) = encode(&message, &key) {
            assert_eq!(
                decode(&again, &key).expect("what we encode decodes"),
                message
            );
        }
    }
}

/// The config file parser and both roles' settings (a key file is present, so the settings
/// beyond the key are read too).
pub fn config(data: &[u8]) {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // One directory for every run (the same key each time), not one per process.
        let dir = std::env::temp_dir().join("bootherd-fuzz-config");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("report.key"), "00112233445566778899aabbccddeeff").unwrap();
        dir
    });
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = bootherd::config::Config::parse(&text, dir) {
        let _ = config.central();
        let _ = config.alternate();
    }
}

/// The alternate list: what parses renders back to the same list, and as an iPXE script.
pub fn alt_list(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(entries) = alt_list::parse(&text) else {
        return;
    };
    assert_eq!(
        alt_list::parse(&alt_list::render(&entries)).unwrap(),
        entries
    );
    let _ = alt_list::render_ipxe(&entries, &["10.0.0.2:69".into()]);
}

/// A per-client config: parsed, rendered for iPXE; the lookup order of any path.
pub fn boot_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = boot_config::parse(&text) {
        let script = config.render_ipxe("tftp://10.0.0.1:69");
        assert!(script.starts_with("#!ipxe\n"));
        assert!(config.all_files().count() > 0);
    }
    let mut parts = text.splitn(3, '/');
    let (uuid, mac, arch) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    assert_eq!(
        boot_config::lookup_order(uuid, mac, arch).last().unwrap(),
        "default"
    );
}

/// Raw DHCP packets as the NBP reads them from the firmware's cached packets: every option
/// the walk yields lies inside the input, and a found option is the first of its code.
pub fn dhcp_options(data: &[u8]) {
    if let Some((&code, options)) = data.split_first() {
        let walked: Vec<_> = Options::new(options).map_while(Result::ok).collect();
        assert!(walked.iter().all(|o| o.value.len() < options.len()));
        assert_eq!(
            Options::new(options).get(code),
            walked.iter().find(|o| o.code == code).map(|o| o.value)
        );
        if let Ok(packet) = dhcp::Packet::new_checked(options) {
            let _ = (packet.option(code), packet.siaddr(), packet.chaddr());
        }
    }
    let _ = dhcp::uuid_from_option_97(data);
    let _ = boot_servers(data, BOOT_SERVER_TYPE);
}

/// HTTP request heads as a client sends them, whole and cut at every length the input picks:
/// a parsed head is never longer than the input nor the limit, a cut head is incomplete or
/// refused (never a different request), a routed path is relative without `..`, answers for a
/// file of any length send only bytes of it, and a response head renders and parses back.
pub fn http_request(data: &[u8]) {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let parsed = parse_request(data);
    if let Ok(Some((request, len))) = &parsed {
        assert!(*len <= data.len() && *len <= MAX_HEAD_LEN);
        // The same head with a byte less is not yet a request.
        if let Ok(Some((shorter, _))) = parse_request(&data[..len - 1]) {
            panic!("a head cut short parsed as {shorter:?}");
        }
        if let Ok(path) = route(request) {
            let path = path.as_str();
            assert!(!path.starts_with('/') && !path.split('/').any(|p| p == ".." || p.is_empty()));
        }
        let file_len = u64::from(cut) * 997;
        let found = Found {
            len: file_len,
            etag: Some("ab".into()),
            generated: cut % 2 == 1,
            content_type: "application/octet-stream",
        };
        let reply = answer(request, &found);
        if let Some((offset, n)) = reply.body {
            assert!(n > 0 && offset + n <= file_len);
            assert_eq!(n, reply.head.content_length);
        }
        let mut text = String::new();
        reply.head.render(u64::from(cut) << 24, &mut text);
        let (info, n) = parse_response(text.as_bytes()).unwrap().unwrap();
        assert_eq!((info.code, n), (reply.head.status.code(), text.len()));
        if let Some(range) = request.range {
            if let RangeAsk::Part { start, len } = parse_range(range, file_len) {
                assert!(len > 0 && start + len <= file_len);
            }
        }
    }
    let cut = usize::from(cut).min(data.len());
    if let Ok(Some((_, len))) = parse_request(&data[..cut]) {
        assert!(len <= cut);
    }
    let _ = parse_response(data);
}
