//! bootherd's network bootstrap program (NBP) for UEFI firmware.
//!
//! The central hands this program to UEFI PXE clients. It finds the central's address in the
//! PXE Base Code's cached packets (PXE reply, proxy offer or DHCP ACK), reads the alternate
//! list from it over TFTP, tries the alternates in order, reads this client's config file
//! (`bootherd.cfg/UUID/MAC/ARCH`) and the boot files it names from the first that answers, and
//! starts the kernel with the config's command line (initrd through the Linux EFI stub's
//! LoadFile2 protocol). Every step is printed on the console. If no alternate can serve the
//! boot it returns an error, so that the firmware moves on to its next boot option.
//!
//! The list and config parsers are the server's own code (`src/formats/`, `core` + `alloc`).
//! PXE Base Code TFTP always uses port 69: alternates listed on other ports are skipped.

#![no_std]
#![no_main]

extern crate alloc;

mod initrd;

/// The server's text formats, shared by path (the rendering half is the server's only).
#[path = "../../src/formats/mod.rs"]
#[allow(dead_code)]
mod formats;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};

use formats::alt_list::{self, LIST_PATH};
use formats::boot_config::{self, BootConfig, CONFIG_DIR};
use formats::dhcp::{packet_option, uuid_from_option_97};
use uefi::boot::{self, LoadImageSource, OpenProtocolAttributes, OpenProtocolParams};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::network::pxe::BaseCode;
use uefi::{println, CStr8, CString16, Status};

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

/// Files up to this size (the list, a config) are read in one request. Asking their size first
/// would open them twice, and the central counts every list it hands out (and an alternate
/// every config) as a client starting to boot.
const SMALL_FILE: usize = 64 * 1024;

/// Reads a whole file over TFTP (port 69): small files in one request, larger ones after
/// asking their size.
fn fetch(pxe: &mut BaseCode, server: &IpAddr, path: &str) -> Result<Vec<u8>, String> {
    let mut name = Vec::from(path.as_bytes());
    name.push(0);
    let name = CStr8::from_bytes_with_nul(&name).map_err(|_| format!("bad file name {path:?}"))?;
    let mut buf = alloc::vec![0u8; SMALL_FILE];
    let size = match pxe.tftp_read_file(server, name, Some(&mut buf)) {
        Ok(got) => {
            buf.truncate(usize::try_from(got).unwrap_or(buf.len()));
            return Ok(buf);
        }
        Err(e) if e.status() == Status::BUFFER_TOO_SMALL => pxe
            .tftp_get_file_size(server, name)
            .map_err(|e| format!("{path}: {:?}", e.status()))?,
        Err(e) => return Err(format!("{path}: {:?}", e.status())),
    };
    buf = alloc::vec![0u8; usize::try_from(size).map_err(|_| "file too large")?];
    let got = pxe
        .tftp_read_file(server, name, Some(&mut buf))
        .map_err(|e| format!("{path}: {:?}", e.status()))?;
    buf.truncate(usize::try_from(got).unwrap_or(buf.len()));
    Ok(buf)
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
    let answer: &[u8; 1472] = if mode.pxe_reply_received() {
        mode.pxe_reply().as_ref()
    } else if mode.proxy_offer_received() {
        mode.proxy_offer().as_ref()
    } else {
        mode.dhcp_ack().as_ref()
    };
    let central = [answer[20], answer[21], answer[22], answer[23]];
    if central == [0; 4] {
        return Err("the PXE answers name no boot server".into());
    }
    let discover: &[u8; 1472] = mode.dhcp_discover().as_ref();
    let mac: Vec<String> = discover[28..34]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mac = mac.join("-");
    let uuid = packet_option(discover, 97)
        .and_then(uuid_from_option_97)
        .unwrap_or_else(|| "-".to_string());
    let central_ip = IpAddr::V4(Ipv4Addr::from(central));
    println!(
        "bootherd: client {mac} uuid {uuid} arch {ARCH}; central {}.{}.{}.{}",
        central[0], central[1], central[2], central[3]
    );

    let started = now_ms();
    let list = fetch(&mut pxe, &central_ip, LIST_PATH)?;
    let list = alt_list::parse(&String::from_utf8_lossy(&list))?;
    println!(
        "bootherd: alternate list ({} ms): {}",
        now_ms().saturating_sub(started),
        list.iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let config_path = format!("{CONFIG_DIR}/{uuid}/{mac}/{ARCH}");
    for entry in &list {
        for address in &entry.addresses {
            let (host, port) = address.rsplit_once(':').unwrap_or((address.as_str(), "69"));
            let Some(ip) = host.parse::<Ipv4Addr>().ok().filter(|_| port == "69") else {
                println!("bootherd: {} at {address}: skipped (PXE TFTP needs an IPv4 address on port 69)", entry.id);
                continue;
            };
            match boot_from(&mut pxe, &entry.id, &IpAddr::V4(ip), &config_path) {
                Ok((kernel, config)) => {
                    drop(pxe);
                    return start(&kernel, config);
                }
                Err(e) => println!("bootherd: {} at {address}: {e}; trying the next", entry.id),
            }
        }
    }
    Err("no alternate could serve the boot".into())
}

/// Reads the config and the boot files from one alternate; installs the initrd.
fn boot_from(
    pxe: &mut BaseCode,
    id: &str,
    server: &IpAddr,
    config_path: &str,
) -> Result<(Vec<u8>, BootConfig), String> {
    let started = now_ms();
    let text = fetch(pxe, server, config_path)?;
    let config = boot_config::parse(&String::from_utf8_lossy(&text))?;
    println!(
        "bootherd: {id}: config {config_path} ({} ms)",
        now_ms().saturating_sub(started)
    );
    let kernel_file = config.kernel.as_ref().ok_or("the config names no kernel")?;
    let mut files = Vec::new();
    for file in config.all_files() {
        let t = now_ms();
        let bytes = fetch(pxe, server, &file.path)?;
        println!(
            "bootherd: {id}: {} ({} bytes, {} ms)",
            file.path,
            bytes.len(),
            now_ms().saturating_sub(t)
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
