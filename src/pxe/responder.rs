//! The proxyDHCP and boot-server discovery responder, sans-IO: a request datagram and the
//! address it arrived on in, a reply datagram and where to send it out (or why not).
//!
//! How real firmware proceeds (see `fixtures/CAPTURES.md`), and what we answer:
//! - iPXE (option 77 "iPXE" or option 175) and legacy BIOS PXE ROMs take `siaddr` and the
//!   file name from the proxy offer when option 43 says so (discovery control bit 3): that is
//!   what they get, so they boot at once. iPXE's EFI build never gets a menu.
//! - UEFI PXE (OVMF, AAVMF) ignores a proxy offer's file without its own discovery: the offer
//!   has no option 43, and after its DHCP ACK the firmware sends a DHCPREQUEST to UDP 4011,
//!   which is answered with the boot file.
//! - With a menu configured, non-iPXE clients get a PXE 2.1 one-item menu and do full
//!   discovery to 4011 with boot item 71, which is echoed with the boot file.
//!
//! - UEFI HTTP boot (option 60 "HTTPClient", OVMF's HttpBootDxe) takes a proxy offer that
//!   echoes "HTTPClient" and has a URL with an IP address in the file field (EDK2's "proxy
//!   offer with IP URI"), next to the DHCP server's offer: it gets the URL of
//!   `boot_http_x64`/`boot_http_arm64` on the best alternate that serves HTTP.
//! - U-Boot (option 94 UNDI 0.0) is not answered: it takes no offer without an address and
//!   cannot run the NBP ([`U_BOOT_NOT_ANSWERED`]); it boots the central's `boot.scr.uimg`.
//!
//! Requests without option 60 "PXEClient" or "HTTPClient" are never answered: the site's DHCP
//! service is untouched. Replies carry no address (`yiaddr` 0), option 53 first, then 54, 60, 97, 43,
//! and are padded to 300 bytes for old ROMs.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use bootherd_proto::dhcp::{uuid_from_option_97, Packet, RawOption, HEADER_LEN};
use bootherd_proto::hex::Hex;
use bootherd_proto::pxe::{
    find_boot_item, VendorOptions, BOOT_SERVER_TYPE, UNICAST_ONLY, USE_BOOT_FILE,
};

/// BOOTP's `file` field: 128 bytes with the terminating NUL.
pub const MAX_BOOT_FILE_LEN: usize = 127;
/// Replies are at least this long (some PXE ROMs drop shorter BOOTP packets).
pub const MIN_REPLY_LEN: usize = 300;
/// Longest HTTP boot path: the URL is `http://` and an address and port (at most 22 bytes),
/// a `/` and the path, and must fit the file field.
pub const MAX_HTTP_PATH_LEN: usize = MAX_BOOT_FILE_LEN - 30;
const PROMPT: &str = "bootherd";

/// Which service a datagram arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// proxyDHCP, UDP 67.
    Proxy,
    /// Boot-server discovery, UDP 4011.
    Discovery,
}

/// The boot file (NBP) for each kind of client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// Legacy BIOS without iPXE (option 93 = 0): a chainloader such as `undionly.kpxe`.
    pub bios: String,
    /// UEFI x86 32-bit (6).
    pub efi_ia32: String,
    /// UEFI x86-64 (7, 9).
    pub efi_x64: String,
    /// UEFI ARM 32-bit (10).
    pub efi_arm32: String,
    /// UEFI ARM64 (11).
    pub efi_arm64: String,
    /// Any client already running iPXE.
    pub ipxe: String,
    /// UEFI HTTP boot, x86-64 (16): a path on the alternates, sent as a URL on the best one
    /// (none: HTTP boot clients are not answered).
    pub http_x64: Option<String>,
    /// UEFI HTTP boot, ARM64 (19).
    pub http_arm64: Option<String>,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe".into(),
            efi_ia32: "bootherd-ia32.efi".into(),
            efi_x64: "bootherd-x64.efi".into(),
            efi_arm32: "bootherd-arm.efi".into(),
            efi_arm64: "bootherd-aa64.efi".into(),
            ipxe: crate::formats::alt_list::IPXE_LIST_PATH.into(),
            http_x64: None,
            http_arm64: None,
        }
    }
}

impl BootFiles {
    /// Checks every name against the BOOTP field limit (dhcproto panics past it).
    pub fn validate(&self) -> Result<(), String> {
        for (key, name) in [
            ("boot_bios", &self.bios),
            ("boot_efi_ia32", &self.efi_ia32),
            ("boot_efi_x64", &self.efi_x64),
            ("boot_efi_arm32", &self.efi_arm32),
            ("boot_efi_arm64", &self.efi_arm64),
            ("boot_ipxe", &self.ipxe),
        ] {
            if name.is_empty() || name.len() > MAX_BOOT_FILE_LEN || name.contains('\0') {
                return Err(format!("{key}: 1 to {MAX_BOOT_FILE_LEN} bytes, no NUL"));
            }
        }
        for (key, name) in [
            ("boot_http_x64", &self.http_x64),
            ("boot_http_arm64", &self.http_arm64),
        ] {
            let Some(name) = name else { continue };
            // The URL must fit the field with `http://ADDRESS:PORT/` in front.
            if name.is_empty()
                || name.len() > MAX_HTTP_PATH_LEN
                || !name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "{key}: 1 to {MAX_HTTP_PATH_LEN} printable bytes, no spaces"
                ));
            }
        }
        Ok(())
    }
}

/// Responder settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PxeConfig {
    /// Boot files by client kind.
    pub boot_files: BootFiles,
    /// Offer a PXE menu with this one item (full discovery) instead of a plain offer.
    pub menu: Option<String>,
    /// Other centrals, announced after this one in the boot server list (option 43
    /// sub-option 8) of every answer with option 43: clients fetch their list from them when
    /// this central dies after answering.
    pub backup_centrals: Vec<Ipv4Addr>,
}

/// What the request told us about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Hardware address, `52:54:00:..`.
    pub mac: String,
    /// Option 93 architecture.
    pub arch: u16,
    /// Runs iPXE already.
    pub ipxe: bool,
    /// Option 97 UUID, if sent.
    pub uuid: Option<String>,
}

/// What to do with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not for us, or not answerable; the reason is logged at debug level (plain DHCP traffic
    /// is the normal case).
    Ignore(String),
    /// Send `payload` to `to`.
    Reply {
        /// The DHCP reply.
        payload: Vec<u8>,
        /// Destination (255.255.255.255:68 for a client without an address).
        to: SocketAddrV4,
        /// The client.
        client: Client,
        /// Boot file named, if any (none in a menu offer).
        file: Option<String>,
    },
}

fn ignore(why: impl Into<String>) -> Decision {
    Decision::Ignore(why.into())
}

/// Answers one datagram that arrived at `service` from `from`, on an interface whose address
/// is `server_ip`.
pub fn respond(
    config: &PxeConfig,
    service: Service,
    datagram: &[u8],
    from: SocketAddr,
    server_ip: Ipv4Addr,
) -> Decision {
    respond_with(config, service, datagram, from, server_ip, &mut |_| None)
}

/// [`respond`], with `http_url` giving the URL of a path on the best alternate that serves
/// HTTP (for UEFI HTTP boot clients), if there is one.
pub fn respond_with(
    config: &PxeConfig,
    service: Service,
    datagram: &[u8],
    from: SocketAddr,
    server_ip: Ipv4Addr,
    http_url: &mut dyn FnMut(&str) -> Option<String>,
) -> Decision {
    let SocketAddr::V4(from) = from else {
        return ignore("DHCP over IPv6 is not served");
    };
    let clean = match sanitize(datagram) {
        Ok(clean) => clean,
        Err(why) => return ignore(format!("malformed DHCP request: {why}")),
    };
    let request = match Message::decode(&mut Decoder::new(&clean)) {
        Ok(m) => m,
        Err(e) => return ignore(format!("not a DHCP message: {e}")),
    };
    if request.opcode() != Opcode::BootRequest {
        return ignore("not a BOOTREQUEST");
    }
    let opts = request.opts();
    let class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c))
            if c.starts_with(b"PXEClient") || c.starts_with(HTTP_CLIENT) =>
        {
            c.clone()
        }
        _ => return ignore("no option 60 PXEClient: not a PXE client"),
    };
    let kind = match opts.get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => *t,
        _ => return ignore("no message type"),
    };
    let reply_type = match (service, kind) {
        (Service::Proxy, MessageType::Discover) => MessageType::Offer,
        // A REQUEST on 67 is for the DHCP server the client chose, unless that is us.
        (Service::Proxy, MessageType::Request) => match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(id)) if *id == server_ip => MessageType::Ack,
            _ => return ignore("DHCPREQUEST for another server"),
        },
        (Service::Discovery, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (_, other) => return ignore(format!("{other:?} is not answered")),
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => u16::from(*a),
        _ => arch_from_class(&class).unwrap_or(0),
    };
    let ipxe = matches!(opts.get(OptionCode::UserClass), Some(DhcpOption::UserClass(u)) if u.windows(4).any(|w| w == b"iPXE"))
        || opts.get(OptionCode::Unknown(175)).is_some();
    if !ipxe && is_u_boot(opts) {
        return ignore(U_BOOT_NOT_ANSWERED);
    }
    let uuid_option = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(id)) => Some(id.clone()),
        _ => None,
    };
    let client = Client {
        mac: Hex::separated(request.chaddr(), ':').to_string(),
        arch,
        ipxe,
        uuid: uuid_option.as_deref().and_then(uuid_from_option_97),
    };
    if class.starts_with(HTTP_CLIENT) {
        return http_boot(
            config, service, &request, reply_type, server_ip, from, client, http_url,
        );
    }
    let file = if ipxe {
        &config.boot_files.ipxe
    } else {
        match arch {
            0 => &config.boot_files.bios,
            6 => &config.boot_files.efi_ia32,
            7 | 9 => &config.boot_files.efi_x64,
            10 => &config.boot_files.efi_arm32,
            11 => &config.boot_files.efi_arm64,
            other => {
                return ignore(format!(
                    "client {} has architecture {other}, which has no boot file",
                    client.mac
                ))
            }
        }
    };
    let efi = arch != 0;
    let requested_item = match opts.get(OptionCode::VendorExtensions) {
        Some(DhcpOption::VendorExtensions(v)) => find_boot_item(v),
        _ => None,
    };
    // This central, then its backups: where discovery goes, and where a client whose central
    // died after this answer asks for its list instead.
    let mut servers = vec![server_ip];
    servers.extend(config.backup_centrals.iter().filter(|&&b| b != server_ip));
    let with_backups = |vendor: VendorOptions| match servers.len() {
        1 => vendor,
        _ => vendor.boot_servers(BOOT_SERVER_TYPE, &servers),
    };
    let (vendor, file) = match service {
        Service::Proxy => match &config.menu {
            // iPXE's EFI build cannot use a menu: it always gets the file.
            Some(menu) if !(ipxe && efi) => (
                Some(
                    VendorOptions::default()
                        .discovery_control(UNICAST_ONLY)
                        .prompt(0, PROMPT)
                        .boot_servers(BOOT_SERVER_TYPE, &servers)
                        .menu_item(BOOT_SERVER_TYPE, menu)
                        .finish(),
                ),
                None,
            ),
            // UEFI PXE goes to 4011 when the offer has no option 43.
            _ if efi && !ipxe => (None, Some(file)),
            _ => (
                Some(
                    with_backups(
                        VendorOptions::default()
                            .discovery_control(USE_BOOT_FILE)
                            .prompt(0, PROMPT),
                    )
                    .finish(),
                ),
                Some(file),
            ),
        },
        Service::Discovery => {
            let vendor = match requested_item {
                Some(item) => VendorOptions::default().boot_item(item),
                None => VendorOptions::default().discovery_control(USE_BOOT_FILE),
            };
            (Some(with_backups(vendor).finish()), Some(file))
        }
    };
    let payload = match build_reply(
        &request,
        reply_type,
        server_ip,
        file.map(String::as_str),
        uuid_option.as_deref(),
        vendor.as_deref(),
        PXE_CLIENT,
    ) {
        Ok(p) => p,
        Err(e) => return ignore(format!("cannot encode the reply: {e}")),
    };
    let to = destination(service, &request, from);
    Decision::Reply {
        payload,
        to,
        client,
        file: file.cloned(),
    }
}

/// Where the reply goes: the sender's address and port for discovery (dnsmasq 2.92 broke
/// clients by broadcasting it) and for a client that already has the address it sends from;
/// the relay for relayed requests; otherwise broadcast to port 68, since the client has no
/// address yet.
fn destination(service: Service, request: &Message, from: SocketAddrV4) -> SocketAddrV4 {
    match service {
        Service::Discovery => from,
        Service::Proxy if !request.giaddr().is_unspecified() => {
            SocketAddrV4::new(request.giaddr(), 67)
        }
        Service::Proxy
            if !from.ip().is_unspecified()
                && request.ciaddr() == *from.ip()
                && !request.flags().broadcast() =>
        {
            from
        }
        Service::Proxy => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
    }
}

/// Option 60 of PXE answers.
const PXE_CLIENT: &[u8] = b"PXEClient";
/// Option 60 of UEFI HTTP boot requests, echoed in answers to them.
const HTTP_CLIENT: &[u8] = b"HTTPClient";

/// Answers a UEFI HTTP boot client (architecture 16 x86-64, 19 ARM64) with the URL of its
/// boot file on the best alternate that serves HTTP: an offer with option 60 "HTTPClient" and
/// the URL in the file field, no option 43.
#[allow(clippy::too_many_arguments)]
fn http_boot(
    config: &PxeConfig,
    service: Service,
    request: &Message,
    reply_type: MessageType,
    server_ip: Ipv4Addr,
    from: SocketAddrV4,
    client: Client,
    http_url: &mut dyn FnMut(&str) -> Option<String>,
) -> Decision {
    let path = match client.arch {
        16 => &config.boot_files.http_x64,
        19 => &config.boot_files.http_arm64,
        _ => &None,
    };
    let Some(path) = path else {
        return ignore(format!(
            "HTTP boot client {} has architecture {}, which has no HTTP boot file",
            client.mac, client.arch
        ));
    };
    let Some(url) = http_url(path) else {
        return ignore(format!(
            "HTTP boot client {}: no alternate serves HTTP now",
            client.mac
        ));
    };
    let payload = match build_reply(
        request,
        reply_type,
        server_ip,
        Some(&url),
        None,
        None,
        HTTP_CLIENT,
    ) {
        Ok(p) => p,
        Err(e) => return ignore(format!("cannot encode the reply: {e}")),
    };
    Decision::Reply {
        payload,
        to: destination(service, request, from),
        client,
        file: Some(url),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_reply(
    request: &Message,
    kind: MessageType,
    server_ip: Ipv4Addr,
    file: Option<&str>,
    uuid: Option<&[u8]>,
    vendor: Option<&[u8]>,
    class: &[u8],
) -> Result<Vec<u8>, String> {
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(request.htype())
        .set_xid(request.xid())
        .set_flags(request.flags())
        .set_ciaddr(request.ciaddr())
        .set_yiaddr(Ipv4Addr::UNSPECIFIED)
        .set_siaddr(server_ip)
        .set_giaddr(request.giaddr())
        .set_chaddr(&request.chaddr()[..usize::from(request.hlen().min(16))]);
    if let Some(file) = file {
        // Lengths are checked when the config is loaded; this guards the panic anyway.
        if file.len() > MAX_BOOT_FILE_LEN {
            return Err(format!("boot file name of {} bytes", file.len()));
        }
        reply.set_fname_str(file);
    }
    // No options in the message itself: dhcproto writes them in code order, but PXE ROMs want
    // option 53 first, so they are appended here in that order.
    let mut out = reply.to_vec().map_err(|e| e.to_string())?;
    let mut options = vec![
        DhcpOption::MessageType(kind),
        DhcpOption::ServerIdentifier(server_ip),
        DhcpOption::ClassIdentifier(class.to_vec()),
    ];
    if let Some(uuid) = uuid {
        options.push(DhcpOption::ClientMachineIdentifier(uuid.to_vec()));
    }
    if let Some(vendor) = vendor {
        options.push(DhcpOption::VendorExtensions(vendor.to_vec()));
    }
    for option in options {
        out.extend(option.to_vec().map_err(|e| e.to_string())?);
    }
    out.push(255);
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, 0);
    }
    Ok(out)
}

/// Why U-Boot's `PXEClient` request (distro boot's second DHCP round, `bootefi` of the boot
/// file) gets no answer: U-Boot drops every offer without an address (builds with
/// `CONFIG_SERVERIP_FROM_PROXYDHCP` take only `siaddr` and the file from it), and its UEFI has no
/// TFTP for the NBP (no MTFTPv4, Base Code `Mtftp()` unsupported), so an answer could only
/// replace the site's boot file with one that fails.
pub const U_BOOT_NOT_ANSWERED: &str = "U-Boot (option 94 UNDI 0.0): its UEFI cannot run the NBP; \
     it boots through boot.scr.uimg when the site's DHCP server names this central (README, U-Boot)";

/// U-Boot, whatever its option 60 says: its option 94 is always UNDI 0.0 (it has no UNDI),
/// where PXE firmware says 2.1 or 3.x.
fn is_u_boot(opts: &dhcproto::v4::DhcpOptions) -> bool {
    matches!(
        opts.get(OptionCode::ClientNetworkInterface),
        Some(DhcpOption::ClientNetworkInterface(1, 0, 0))
    )
}

/// `PXEClient:Arch:00007:UNDI:003000` → 7.
fn arch_from_class(class: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(class).ok()?;
    let rest = text.split("Arch:").nth(1)?;
    rest.get(..5)?.parse().ok()
}

/// Options the responder reads; every other option is left out before dhcproto decodes the
/// request (its decoders assert or panic on several malformed options: 80, 81, 94, 121, ...).
const WANTED: [u8; 10] = [43, 53, 54, 60, 77, 93, 94, 97, 175, 55];

/// A copy of the request that dhcproto can decode without panicking: the header (with a sane
/// hardware address length) and the wanted options with valid lengths.
///
/// dhcproto joins consecutive options of one code into one value (RFC 3396 long options), also
/// where options left out here stood between them, so lengths are checked on the joined value:
/// two option 94s of 3 bytes each are one of 6 to the decoder, which asserts on it.
pub(crate) fn sanitize(datagram: &[u8]) -> Result<Vec<u8>, String> {
    let packet = Packet::new_checked(datagram).map_err(|e| e.to_string())?;
    // dhcproto slices chaddr by hlen and panics past its 16 bytes.
    if packet.hlen() > 16 {
        return Err(format!("hardware address length {}", packet.hlen()));
    }
    if !packet.has_magic_cookie() {
        return Err("no DHCP magic cookie".into());
    }
    // The wanted options as the decoder will see them: consecutive ones of a code joined.
    let mut joined: Vec<(u8, Vec<u8>)> = Vec::new();
    for option in packet.options() {
        let RawOption { code, value } = option.map_err(|e| e.to_string())?;
        if WANTED.contains(&code) {
            match joined.last_mut() {
                Some((last, joined_value)) if *last == code => {
                    joined_value.extend_from_slice(value)
                }
                _ => joined.push((code, value.to_vec())),
            }
        }
    }
    let mut out = datagram[..HEADER_LEN].to_vec();
    for (code, value) in joined {
        let len = value.len();
        let valid = match code {
            53 => len == 1,
            54 => len == 4,
            94 => len == 3,
            93 => len >= 2 && len % 2 == 0,
            _ => true,
        };
        if !valid {
            return Err(format!("option {code} has length {len}"));
        }
        // Long values go out as consecutive chunks again, which the decoder joins; an empty
        // one as itself (left out, it would join its neighbours).
        out.extend_from_slice(&[code, value.len().min(255) as u8]);
        out.extend_from_slice(&value[..value.len().min(255)]);
        for chunk in value.get(255..).unwrap_or_default().chunks(255) {
            out.extend_from_slice(&[code, chunk.len() as u8]);
            out.extend_from_slice(chunk);
        }
    }
    out.push(255);
    Ok(out)
}

#[cfg(test)]
mod tests;
