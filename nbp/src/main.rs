//! bootherd's network bootstrap program (NBP) for UEFI firmware.
//!
//! The central hands this program to UEFI PXE clients. It finds the central's address in the
//! PXE Base Code's cached packets (PXE reply, proxy offer or DHCP ACK), and the backup centrals
//! the central announced there (option 43 boot servers), reads the alternate list from the
//! first central that gives one, tries the alternates in order, reads this client's config file
//! (`bootherd.cfg/UUID/MAC/ARCH`) and the boot files it names from the first that answers,
//! checks each file's `sha256=`, and starts the kernel with the config's command line (initrd
//! through the Linux EFI stub's LoadFile2 protocol). A dead server costs at most a second, a
//! busy one is waited for ([`tftp`]); a failure or a checksum mismatch moves on to the next
//! alternate, and when no alternate of a list can serve, to the next central's list. Every step
//! is printed on the console. If nothing can serve the boot it returns an error, so that the
//! firmware moves on to its next boot option.
//!
//! The list and config parsers and the DHCP view are the server's own code (`bootherd-proto`).
//! The firmware's TFTP always uses port 69: alternates listed on other ports are skipped.

#![no_std]
#![no_main]

extern crate alloc;

mod initrd;
mod tftp;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use bootherd_proto::alt_list::{self, AltEntry, LIST_PATH};
use bootherd_proto::boot_config::{self, BootConfig, CONFIG_DIR};
use bootherd_proto::dhcp::{uuid_from_option_97, Packet};
use bootherd_proto::hex::Hex;
use bootherd_proto::pxe::{boot_servers, BOOT_SERVER_TYPE};
use sha2::{Digest, Sha256};
use uefi::boot::{self, LoadImageSource, OpenProtocolAttributes, OpenProtocolParams};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::network::pxe::BaseCode;
use uefi::{println, CString16, Status};

/// PXE architecture number of this build (option 93), used in the config path.
const ARCH: &str = if cfg!(target_arch = "aarch64") {
    "11"
} else {
    "7"
};

#[uefi::entry]
fn main() -> Status {
    if uefi::helpers::init().is_err() {
        return Status::ABORTED;
    }
    match run() {
        Ok(status) => status,
        Err(e) => {
            println!("bootherd: {e}; back to the firmware's next boot option");
            Status::NOT_FOUND
        }
    }
}

/// Milliseconds since midnight by the firmware clock (for step timings).
fn now_ms() -> u64 {
    uefi::runtime::get_time().map_or(0, |t| {
        (u64::from(t.hour()) * 3600 + u64::from(t.minute()) * 60 + u64::from(t.second())) * 1000
            + u64::from(t.nanosecond()) / 1_000_000
    })
}

fn ipv4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

/// A DHCP packet the PXE Base Code cached (1472 bytes: always a whole header).
fn cached(packet: &uefi::proto::network::pxe::Packet) -> Result<Packet<&[u8; 1472]>, String> {
    Packet::new_checked(packet.as_ref()).map_err(|_| "a cached DHCP packet is short".into())
}

fn run() -> Result<Status, String> {
    let image = boot::image_handle();
    let device = boot::open_protocol_exclusive::<LoadedImage>(image)
        .map_err(|e| format!("no loaded image: {:?}", e.status()))?
        .device()
        .ok_or("booted from no device")?;
    // SAFETY: GetProtocol only borrows the interface the PXE driver installed; this program
    // uses it while the driver keeps running it.
    let mut pxe = unsafe {
        boot::open_protocol::<BaseCode>(
            OpenProtocolParams {
                handle: device,
                agent: image,
                controller: None,
            },
            OpenProtocolAttributes::GetProtocol,
        )
    }
    .map_err(|e| format!("no PXE Base Code on the boot device: {:?}", e.status()))?;
    let mode = pxe.mode();
    let answer = cached(if mode.pxe_reply_received() {
        mode.pxe_reply()
    } else if mode.proxy_offer_received() {
        mode.proxy_offer()
    } else {
        mode.dhcp_ack()
    })?;
    let central = answer.siaddr();
    if central.is_unspecified() {
        return Err("the PXE answers name no boot server".into());
    }
    // The central first, then the backups it announced.
    let mut centrals = alloc::vec![central];
    for backup in answer
        .option(43)
        .map_or_else(Vec::new, |o| boot_servers(o, BOOT_SERVER_TYPE))
    {
        if !centrals.contains(&backup) {
            centrals.push(backup);
        }
    }
    let discover = cached(mode.dhcp_discover())?;
    let mac = Hex::separated(&discover.chaddr()[..6], '-').to_string();
    let uuid = discover
        .option(97)
        .and_then(uuid_from_option_97)
        .unwrap_or_else(|| "-".to_string());
    let gateway = cached(mode.dhcp_ack())?
        .option(3)
        .and_then(|r| r.first_chunk::<4>().copied())
        .unwrap_or_default();
    let (station, mask) = (ipv4(mode.station_ip()), ipv4(mode.subnet_mask()));
    // Everything needed is copied out: stop the PXE Base Code, whose catch-all UDP receiver
    // would otherwise take the ICMP errors (port unreachable) meant for our TFTP child.
    if let Err(e) = pxe.stop() {
        println!(
            "bootherd: the PXE Base Code did not stop ({:?}); ICMP errors may go unseen",
            e.status()
        );
    }
    drop(pxe);
    let mut tftp = tftp::Client::new(device, station, mask, gateway)?;
    println!(
        "bootherd: client {mac} uuid {uuid} arch {ARCH}; centrals {}",
        centrals
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let config_path = format!("{CONFIG_DIR}/{uuid}/{mac}/{ARCH}");
    let mut tried: Vec<[u8; 4]> = Vec::new();
    for central in centrals {
        let started = now_ms();
        let list = match list_from(&mut tftp, central) {
            Ok(list) => list,
            Err(e) => {
                println!("bootherd: central {central}: {e}; trying the next");
                continue;
            }
        };
        println!(
            "bootherd: alternate list ({} ms, central {central}): {}",
            now_ms().saturating_sub(started),
            list.iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for entry in &list {
            for address in &entry.addresses {
                // Addresses are printed by their parts: formatting socket addresses (IPv6
                // above all) would add some 3.5 KiB to the program.
                let SocketAddr::V4(v4) = address else {
                    println!("bootherd: {}: an IPv6 address skipped (the firmware's TFTP needs IPv4 on port 69)", entry.id);
                    continue;
                };
                if v4.port() != 69 {
                    println!("bootherd: {} at {}:{}: skipped (the firmware's TFTP needs an IPv4 address on port 69)", entry.id, v4.ip(), v4.port());
                    continue;
                }
                let ip = *v4.ip();
                if tried.contains(&ip.octets()) {
                    continue;
                }
                tried.push(ip.octets());
                match boot_from(&mut tftp, &entry.id, ip.octets(), &config_path) {
                    Ok((kernel, config)) => {
                        drop(tftp);
                        return start(&kernel, config);
                    }
                    Err(e) => println!("bootherd: {} at {ip}:69: {e}; trying the next", entry.id),
                }
            }
        }
    }
    Err("no alternate could serve the boot".into())
}

/// The alternate list from one central; an empty list is an error.
fn list_from(tftp: &mut tftp::Client, central: Ipv4Addr) -> Result<Vec<AltEntry>, String> {
    let text = tftp
        .read(central.octets(), LIST_PATH)
        .map_err(|e| format!("{LIST_PATH}: {e}"))?;
    match alt_list::parse(&String::from_utf8_lossy(&text))? {
        list if list.is_empty() => Err("the alternate list is empty".into()),
        list => Ok(list),
    }
}

/// Reads the config and the boot files from one alternate, checks their SHA-256 where the
/// config gives one, and installs the initrd.
fn boot_from(
    tftp: &mut tftp::Client,
    id: &str,
    server: [u8; 4],
    config_path: &str,
) -> Result<(Vec<u8>, BootConfig), String> {
    let started = now_ms();
    let text = tftp
        .read(server, config_path)
        .map_err(|e| format!("{config_path}: {e}"))?;
    let config = boot_config::parse(&String::from_utf8_lossy(&text))?;
    println!(
        "bootherd: {id}: config {config_path} ({} ms)",
        now_ms().saturating_sub(started)
    );
    let kernel_file = config.kernel.as_ref().ok_or("the config names no kernel")?;
    let mut files = Vec::new();
    for file in config.all_files() {
        let t = now_ms();
        let bytes = tftp
            .read(server, &file.path)
            .map_err(|e| format!("{}: {e}", file.path))?;
        let fetched = now_ms().saturating_sub(t);
        let checked = match file.sha256 {
            Some(want) => {
                if <[u8; 32]>::from(Sha256::digest(&bytes)) != want {
                    return Err(format!("{}: SHA-256 mismatch", file.path));
                }
                "SHA-256 ok"
            }
            None => "no SHA-256 given",
        };
        println!(
            "bootherd: {id}: {} ({} bytes, {fetched} ms; {checked})",
            file.path,
            bytes.len(),
        );
        files.push((file.path.clone(), bytes));
    }
    let mut kernel = Vec::new();
    let mut initrd = Vec::new();
    for (path, bytes) in files {
        if path == kernel_file.path {
            kernel = bytes;
        } else if config.initrds.iter().any(|f| f.path == path) {
            // Concatenated cpio archives are one initrd to Linux.
            initrd.extend_from_slice(&bytes);
        }
    }
    if !initrd.is_empty() {
        initrd::install(initrd)
            .map_err(|e| format!("cannot publish the initrd: {:?}", e.status()))?;
    }
    println!(
        "bootherd: {id}: all files in {} ms",
        now_ms().saturating_sub(started)
    );
    Ok((kernel, config))
}

/// Loads and starts the kernel with the config's command line.
fn start(kernel: &[u8], config: BootConfig) -> Result<Status, String> {
    let image = boot::load_image(
        boot::image_handle(),
        LoadImageSource::FromBuffer {
            buffer: kernel,
            file_path: None,
        },
    )
    .map_err(|e| format!("the firmware refused the kernel image: {:?}", e.status()))?;
    let cmdline = CString16::try_from(config.cmdline.as_str())
        .map_err(|_| "the command line is not UCS-2")?;
    // Kept alive for the kernel, which reads it after this program is gone.
    let cmdline: &'static CString16 = alloc::boxed::Box::leak(alloc::boxed::Box::new(cmdline));
    {
        let mut loaded = boot::open_protocol_exclusive::<LoadedImage>(image)
            .map_err(|e| format!("kernel image: {:?}", e.status()))?;
        let bytes = (cmdline.num_bytes()) as u32;
        // SAFETY: the options point to a leaked, NUL-terminated UCS-2 string of `bytes` bytes.
        unsafe { loaded.set_load_options(cmdline.as_ptr().cast::<u8>(), bytes) };
    }
    println!("bootherd: starting the kernel: {}", config.cmdline);
    boot::start_image(image).map_err(|e| format!("the kernel returned: {:?}", e.status()))?;
    Ok(Status::SUCCESS)
}
