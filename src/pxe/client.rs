//! The client side of PXE, sans-IO: what the simulated boot clients send (a PXE DHCPDISCOVER
//! and a boot-server discovery DHCPREQUEST, shaped like OVMF's) and how they read the answers.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use bootherd_proto::pxe::{boot_servers, BOOT_SERVER_TYPE};

use super::responder::sanitize;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeClient {
    /// Transaction id.
    pub xid: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// SMBIOS UUID bytes (as option 97 carries them, after the type byte).
    pub uuid: [u8; 16],
    /// Option 93 architecture.
    pub arch: u16,
    /// The client's own address (the simulated clients already have one: the answer comes
    /// back to where they sent from).
    pub address: Ipv4Addr,
}

/// A proxy offer or discovery answer, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeAnswer {
    /// OFFER or ACK.
    pub kind: MessageType,
    /// The boot server (siaddr).
    pub server: Ipv4Addr,
    /// The boot file, if named.
    pub file: Option<String>,
    /// Whether option 43 came with it (UEFI clients go on to discovery when it did not).
    pub vendor_options: bool,
    /// bootherd's boot servers in option 43 (sub-option 8), in order: the central, then its
    /// backups.
    pub boot_servers: Vec<Ipv4Addr>,
}

impl PxeClient {
    fn message(&self, kind: MessageType) -> Result<Vec<u8>, String> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_xid(self.xid)
            .set_flags(Flags::default())
            .set_ciaddr(self.address)
            .set_chaddr(&self.mac);
        let class = format!("PXEClient:Arch:{:05}:UNDI:003000", self.arch);
        let mut uuid = vec![0];
        uuid.extend_from_slice(&self.uuid);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ClassIdentifier(class.into_bytes()));
        opts.insert(DhcpOption::ClientSystemArchitecture(self.arch.into()));
        opts.insert(DhcpOption::ClientNetworkInterface(1, 3, 0));
        opts.insert(DhcpOption::ClientMachineIdentifier(uuid));
        m.to_vec().map_err(|e| e.to_string())
    }

    /// The DHCPDISCOVER for the proxy.
    pub fn discover(&self) -> Result<Vec<u8>, String> {
        self.message(MessageType::Discover)
    }

    /// The DHCPREQUEST for boot-server discovery (UDP 4011).
    pub fn discovery_request(&self) -> Result<Vec<u8>, String> {
        self.message(MessageType::Request)
    }

    /// Reads an answer; `None` if it is not an answer to this client.
    pub fn read_answer(&self, datagram: &[u8]) -> Option<PxeAnswer> {
        let clean = sanitize(datagram).ok()?;
        let m = Message::decode(&mut Decoder::new(&clean)).ok()?;
        if m.opcode() != Opcode::BootReply
            || m.xid() != self.xid
            || m.chaddr().get(..6)? != self.mac
        {
            return None;
        }
        let kind = match m.opts().get(OptionCode::MessageType) {
            Some(DhcpOption::MessageType(t)) => *t,
            _ => return None,
        };
        let file = m
            .fname()
            .map(|f| {
                String::from_utf8_lossy(f)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .filter(|f| !f.is_empty());
        let vendor = match m.opts().get(OptionCode::VendorExtensions) {
            Some(DhcpOption::VendorExtensions(v)) => Some(v),
            _ => None,
        };
        Some(PxeAnswer {
            kind,
            server: m.siaddr(),
            file,
            vendor_options: vendor.is_some(),
            boot_servers: vendor
                .map(|v| boot_servers(v, BOOT_SERVER_TYPE))
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pxe::responder::{respond, Decision, PxeConfig, Service};
    use std::net::SocketAddr;

    fn client(xid: u32, arch: u16) -> PxeClient {
        PxeClient {
            xid,
            mac: [0x52, 0x54, 0, 1, 2, xid as u8],
            uuid: [7; 16],
            arch,
            address: Ipv4Addr::LOCALHOST,
        }
    }

    #[test]
    fn simulated_client_and_responder_agree() {
        let client = client(0x1234_5678, 7);
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
        let server = Ipv4Addr::new(127, 0, 0, 1);
        let Decision::Reply { payload, to, .. } = respond(
            &PxeConfig::default(),
            Service::Proxy,
            &client.discover().unwrap(),
            from,
            server,
        ) else {
            panic!("no offer")
        };
        assert_eq!(
            SocketAddr::V4(to),
            from,
            "a client with an address gets the answer where it asked from"
        );
        let offer = client.read_answer(&payload).unwrap();
        assert_eq!(
            (offer.kind, offer.server, offer.vendor_options),
            (MessageType::Offer, server, false)
        );
        assert_eq!(offer.file.as_deref(), Some("bootherd-x64.efi"));
        let Decision::Reply { payload, .. } = respond(
            &PxeConfig::default(),
            Service::Discovery,
            &client.discovery_request().unwrap(),
            from,
            server,
        ) else {
            panic!("no ack")
        };
        let ack = client.read_answer(&payload).unwrap();
        assert_eq!((ack.kind, ack.vendor_options), (MessageType::Ack, true));
        assert!(
            ack.boot_servers.is_empty(),
            "no backups configured, no list"
        );
        let other = PxeClient { xid: 1, ..client };
        assert_eq!(other.read_answer(&payload), None, "another transaction");
    }

    #[test]
    fn answers_name_the_backup_centrals_after_this_one() {
        let backup = Ipv4Addr::new(127, 0, 0, 2);
        let server = Ipv4Addr::LOCALHOST;
        let config = PxeConfig {
            backup_centrals: vec![server, backup],
            ..PxeConfig::default()
        };
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
        for (arch, service) in [(7, Service::Discovery), (0, Service::Proxy)] {
            let client = client(7, arch);
            let request = match service {
                Service::Proxy => client.discover(),
                Service::Discovery => client.discovery_request(),
            };
            let Decision::Reply { payload, .. } =
                respond(&config, service, &request.unwrap(), from, server)
            else {
                panic!("no answer")
            };
            let answer = client.read_answer(&payload).unwrap();
            assert_eq!(answer.boot_servers, [server, backup], "arch {arch}");
        }
        // A UEFI proxy offer has no option 43 at all (the firmware must go on to 4011).
        let uefi = client(8, 7);
        let Decision::Reply { payload, .. } = respond(
            &config,
            Service::Proxy,
            &uefi.discover().unwrap(),
            from,
            server,
        ) else {
            panic!("no offer")
        };
        assert!(!uefi.read_answer(&payload).unwrap().vendor_options);
    }
}
