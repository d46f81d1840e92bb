//! U-Boot boot scripts: the alternate list as the script that U-Boot's network boot runs
//! (`dhcp ${scriptaddr} boot.scr.uimg; source ${scriptaddr}`), served by the central at
//! [`LIST_PATH`], and a per-client config as the script each alternate serves at
//! `bootherd.uboot/UUID/MAC/ARCH` ([`CONFIG_DIR`]). Both go out as legacy images
//! ([`script_image`]), the only wrapping U-Boot's `source` reads without FIT support.
//!
//! The list script tries each alternate address in order: it sets `serverip` (and `tftpdstp`,
//! which U-Boot builds with `CONFIG_TFTP_PORT` use for the port) and fetches the per-client
//! script with one re-send after 1 s (U-Boot's shortest TFTP timeout), so a silent alternate
//! costs 2 s; the per-client script then gets the full patience (10 timeouts) for the kernel,
//! initrds and device tree, checks each against its `sha256=` where U-Boot has the `hash`
//! command, and boots with `booti`, else `bootz` (or `bootefi` for a `.efi` kernel). Any
//! failure leaves the per-client script with a failing status, and the list moves on.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::{SocketAddr, SocketAddrV4};

use super::alt_list::AltEntry;
use super::boot_config::{BootConfig, BootFile};

/// Where the central serves the list script: the name U-Boot's distro boot asks for
/// (`boot_script_dhcp`).
pub const LIST_PATH: &str = "boot.scr.uimg";
/// Directory part of the per-client U-Boot script path on an alternate.
pub const CONFIG_DIR: &str = "bootherd.uboot";

/// Legacy image header fields (U-Boot `include/image.h`).
const IH_MAGIC: u32 = 0x2705_1956;
const IH_OS_LINUX: u8 = 5;
const IH_ARCH_ARM: u8 = 2;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;
const IH_NMLEN: usize = 32;
/// Bytes of the header before the data.
pub const HEADER_LEN: usize = 64;

/// Wraps `script` as `mkimage -A arm -O linux -T script -C none -n NAME` does, with time,
/// load and entry 0: a 64-byte big-endian header (magic, header CRC-32, time, data size,
/// load, entry, data CRC-32, OS, architecture, type, compression, 32-byte name), then the data:
/// the script's length, a 0 that ends the length list, and the script. `source` checks the
/// header CRC, the data CRC (unless `verify` is `no`) and the type, and ignores the
/// architecture. `name` is cut to 32 bytes.
pub fn script_image(name: &str, script: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script.as_bytes());
    let mut image = Vec::with_capacity(HEADER_LEN + data.len());
    image.extend_from_slice(&IH_MAGIC.to_be_bytes());
    image.extend_from_slice(&[0; 4]); // header CRC, computed over the header with this 0
    image.extend_from_slice(&[0; 4]); // time
    image.extend_from_slice(&(data.len() as u32).to_be_bytes());
    image.extend_from_slice(&[0; 8]); // load, entry
    image.extend_from_slice(&crc32(&data).to_be_bytes());
    image.extend_from_slice(&[IH_OS_LINUX, IH_ARCH_ARM, IH_TYPE_SCRIPT, IH_COMP_NONE]);
    let name = &name.as_bytes()[..name.len().min(IH_NMLEN)];
    image.extend_from_slice(name);
    image.resize(HEADER_LEN, 0);
    let header_crc = crc32(&image);
    image[4..8].copy_from_slice(&header_crc.to_be_bytes());
    image.extend_from_slice(&data);
    image
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32` and U-Boot's): bitwise, as scripts are a
/// few KiB.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// `text` with every byte that U-Boot's shell would read as syntax (`;`, `$`, quotes, ...)
/// replaced by `_`: for ids in `echo` lines, which reports fill in.
fn echo_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | ':' | '/' => c,
            _ => '_',
        })
        .collect()
}

/// The lines that fetch the per-client script from the server set just before into
/// `${scriptaddr}` and run it. `source` copies a script before running it, so the list script
/// that is running from the same address is not overwritten.
const FETCH_AND_SOURCE: &str =
    "if tftpboot ${scriptaddr} ${bootherd_config}; then source ${scriptaddr}; fi\n";

/// Renders the list as a U-Boot script: each alternate address in order (IPv4 only: U-Boot's
/// TFTP has no IPv6 server variable), then, once, each of `backups` (other centrals,
/// `HOST:PORT`): their own list script, a fresh order from a central that may know better.
pub fn render_list(entries: &[AltEntry], backups: &[String]) -> String {
    let mut out = String::from(
        "# bootherd alternate list v1 for U-Boot, best first\n\
         setenv netretry no\n\
         setenv tftptimeout 1000\n\
         test -n \"${tftpwindowsize}\" || setenv tftpwindowsize 16\n\
         setenv bootherd_uuid -\n\
         test -n \"${pxeuuid}\" && setenv bootherd_uuid ${pxeuuid}\n\
         setenv bootherd_mac -\n\
         test -n \"${ethaddr}\" && setenv bootherd_mac ${ethaddr}\n",
    );
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "setenv bootherd_config {CONFIG_DIR}/${{bootherd_uuid}}/${{bootherd_mac}}/uboot-${{arch}}-${{cpu}}"
    );
    for e in entries {
        let id = echo_safe(&e.id);
        for a in &e.addresses {
            let SocketAddr::V4(a) = a else {
                let _ = writeln!(out, "# {id} at {}: not IPv4", echo_safe(&a.to_string()));
                continue;
            };
            let _ = write!(
                out,
                "echo bootherd: trying {id} at {a}\n\
                 setenv serverip {ip}\n\
                 setenv tftpdstp {port}\n\
                 setenv tftptimeoutcountmax 1\n\
                 {FETCH_AND_SOURCE}\
                 echo bootherd: {id} at {a} did not boot\n",
                ip = a.ip(),
                port = a.port(),
            );
        }
    }
    let backups: Vec<SocketAddrV4> = backups.iter().filter_map(|b| b.parse().ok()).collect();
    if !backups.is_empty() {
        // A backup's script lists this central among its backups: ask each only once.
        out.push_str("if test -z \"${bootherd_backup}\"; then\nsetenv bootherd_backup 1\n");
        for b in backups {
            let _ = write!(
                out,
                "echo bootherd: asking central {b}\n\
                 setenv serverip {ip}\n\
                 setenv tftpdstp {port}\n\
                 setenv tftptimeoutcountmax 1\n\
                 if tftpboot ${{scriptaddr}} {LIST_PATH}; then source ${{scriptaddr}}; fi\n\
                 echo bootherd: no boot through central {b}\n",
                ip = b.ip(),
                port = b.port(),
            );
        }
        out.push_str("fi\n");
    }
    out.push_str("echo bootherd: no alternate answered\nfalse\n");
    out
}

/// Whether `word` is safe as one word of a U-Boot script: nothing the shell expands or splits.
fn plain_word(word: &str) -> bool {
    !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '-' | '_' | '/' | '+' | ',' | '=' | ':' | '@' | '~')
        })
}

/// Renders a per-client config as a U-Boot script (see the module documentation). Errors
/// name what U-Boot cannot do with the config: file names or a command line its shell would
/// misread, an EFI kernel with initrds (`bootefi` takes none), no kernel.
pub fn render_config(config: &BootConfig) -> Result<String, String> {
    let kernel = config.kernel.as_ref().ok_or("no kernel to boot")?;
    let efi = kernel.path.to_ascii_lowercase().ends_with(".efi");
    if efi && !config.initrds.is_empty() {
        return Err(String::from(
            "U-Boot's bootefi takes no initrd: an .efi kernel cannot have initrd lines",
        ));
    }
    let files = core::iter::once(kernel)
        .chain(&config.initrds)
        .chain(&config.fdt);
    if let Some(bad) = files.map(|f| f.path.as_str()).find(|p| !plain_word(p)) {
        return Err(alloc::format!(
            "{bad}: U-Boot's shell would misread this name (letters, digits and ._-/+,=:@~ only)"
        ));
    }
    if config.cmdline.contains(['\'', '\n', '\r']) {
        return Err(String::from(
            "cmdline: U-Boot takes it in single quotes: no ' in it",
        ));
    }
    let mut out = String::from(
        "# bootherd boot config for U-Boot\n\
         setenv tftptimeoutcountmax 10\n\
         setenv bootherd_failed\n",
    );
    // Where each part goes: the config's address, else U-Boot's variable for it (checked).
    let at = |out: &mut String, file: &BootFile, variable: &str, directive: &str| match file.addr {
        Some(addr) => alloc::format!("0x{addr:x}"),
        None => {
            let _ = writeln!(
                    out,
                    "test -n \"${{{variable}}}\" || setenv bootherd_failed \"{variable} not set: add addr= to the {directive} line\""
                );
            alloc::format!("${{{variable}}}")
        }
    };
    let kernel_at = at(&mut out, kernel, "kernel_addr_r", "kernel");
    let initrd_at =
        (config.initrds.first()).map(|first| at(&mut out, first, "ramdisk_addr_r", "first initrd"));
    let fdt_at = match &config.fdt {
        Some(fdt) => at(&mut out, fdt, "fdt_addr_r", "fdt"),
        // U-Boot's own device tree, as its distro boot passes it.
        None => String::from("${fdtcontroladdr}"),
    };
    if config.all_files().any(|f| f.sha256.is_some()) {
        // A build without `hash` (or without SHA-256 in it) fails this once: no checks then.
        out.push_str(
            "setenv bootherd_hash\n\
             if hash sha256 ${fdtcontroladdr} 0 bootherd_sum; then setenv bootherd_hash 1; else echo bootherd: no hash command, SHA-256 not checked; fi\n",
        );
    }
    fetch(&mut out, kernel, &kernel_at);
    if let Some(start) = &initrd_at {
        // Initrds one after another: concatenated cpio archives are one initrd to Linux.
        let _ = writeln!(out, "setenv bootherd_rd_end {start}");
        for initrd in &config.initrds {
            fetch(&mut out, initrd, "${bootherd_rd_end}");
            out.push_str(
                "test -z \"${bootherd_failed}\" && setexpr bootherd_rd_end ${fileaddr} + ${filesize}\n",
            );
        }
        let _ = writeln!(
            out,
            "test -z \"${{bootherd_failed}}\" && setexpr bootherd_rd_size ${{bootherd_rd_end}} - {start}"
        );
    }
    if let Some(fdt) = &config.fdt {
        fetch(&mut out, fdt, &fdt_at);
    }
    let initrd_arg = match initrd_at {
        Some(start) => alloc::format!("{start}:${{bootherd_rd_size}}"),
        None => String::from("-"),
    };
    let _ = write!(
        out,
        "if test -z \"${{bootherd_failed}}\"; then\n\
         setenv bootargs '{cmdline}'\n\
         echo bootherd: starting {kernel}\n",
        cmdline = config.cmdline,
        kernel = kernel.path,
    );
    if efi {
        let _ = writeln!(out, "bootefi {kernel_at} {fdt_at}");
    } else {
        // booti refuses anything but an arm64 Image, bootz anything but a zImage, each at once.
        let _ = writeln!(
            out,
            "booti {kernel_at} {initrd_arg} {fdt_at}\nbootz {kernel_at} {initrd_arg} {fdt_at}"
        );
    }
    let _ = write!(
        out,
        "setenv bootherd_failed \"{kernel}: not started\"\n\
         fi\n\
         echo bootherd: ${{bootherd_failed}}, trying the next\n\
         test -z \"${{bootherd_failed}}\"\n",
        kernel = kernel.path,
    );
    Ok(out)
}

/// The lines that fetch `file` to `at` unless something failed before, and check its SHA-256
/// where the config gives one and U-Boot can.
fn fetch(out: &mut String, file: &BootFile, at: &str) {
    let path = &file.path;
    let _ = write!(
        out,
        "if test -z \"${{bootherd_failed}}\"; then\n\
         tftpboot {at} {path} || setenv bootherd_failed \"{path}: download failed\"\n\
         fi\n"
    );
    if let Some(sum) = file.sha256 {
        let hex = bootherd_proto::hex::Hex::new(&sum);
        let _ = write!(
            out,
            "if test -z \"${{bootherd_failed}}\" && test -n \"${{bootherd_hash}}\"; then\n\
             hash sha256 ${{fileaddr}} ${{filesize}} bootherd_sum\n\
             test \"${{bootherd_sum}}\" = {hex} || setenv bootherd_failed \"{path}: SHA-256 mismatch\"\n\
             fi\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::boot_config::parse;

    fn order() -> Vec<AltEntry> {
        vec![
            AltEntry {
                id: "alt2".into(),
                addresses: vec!["10.0.0.12:69".parse().unwrap()],
                http: Vec::new(),
            },
            AltEntry {
                id: "alt1".into(),
                addresses: vec![
                    "10.0.0.11:69".parse().unwrap(),
                    "[fd00::11]:69".parse().unwrap(),
                    "192.168.5.11:6901".parse().unwrap(),
                ],
                http: Vec::new(),
            },
        ]
    }

    /// The list script for [`order`] with backup central 10.0.0.2:69.
    const LIST_SCRIPT: &str = r#"# bootherd alternate list v1 for U-Boot, best first
setenv netretry no
setenv tftptimeout 1000
test -n "${tftpwindowsize}" || setenv tftpwindowsize 16
setenv bootherd_uuid -
test -n "${pxeuuid}" && setenv bootherd_uuid ${pxeuuid}
setenv bootherd_mac -
test -n "${ethaddr}" && setenv bootherd_mac ${ethaddr}
setenv bootherd_config bootherd.uboot/${bootherd_uuid}/${bootherd_mac}/uboot-${arch}-${cpu}
echo bootherd: trying alt2 at 10.0.0.12:69
setenv serverip 10.0.0.12
setenv tftpdstp 69
setenv tftptimeoutcountmax 1
if tftpboot ${scriptaddr} ${bootherd_config}; then source ${scriptaddr}; fi
echo bootherd: alt2 at 10.0.0.12:69 did not boot
echo bootherd: trying alt1 at 10.0.0.11:69
setenv serverip 10.0.0.11
setenv tftpdstp 69
setenv tftptimeoutcountmax 1
if tftpboot ${scriptaddr} ${bootherd_config}; then source ${scriptaddr}; fi
echo bootherd: alt1 at 10.0.0.11:69 did not boot
# alt1 at _fd00::11_:69: not IPv4
echo bootherd: trying alt1 at 192.168.5.11:6901
setenv serverip 192.168.5.11
setenv tftpdstp 6901
setenv tftptimeoutcountmax 1
if tftpboot ${scriptaddr} ${bootherd_config}; then source ${scriptaddr}; fi
echo bootherd: alt1 at 192.168.5.11:6901 did not boot
if test -z "${bootherd_backup}"; then
setenv bootherd_backup 1
echo bootherd: asking central 10.0.0.2:69
setenv serverip 10.0.0.2
setenv tftpdstp 69
setenv tftptimeoutcountmax 1
if tftpboot ${scriptaddr} boot.scr.uimg; then source ${scriptaddr}; fi
echo bootherd: no boot through central 10.0.0.2:69
fi
echo bootherd: no alternate answered
false
"#;

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// The whole image for a given order, byte for byte: the CRCs are those `mkimage -A arm
    /// -O linux -T script -C none -a 0 -e 0 -n "bootherd alternate list"` wrote for the same
    /// script with `SOURCE_DATE_EPOCH=0` (its output was identical to this one).
    #[test]
    fn list_image_byte_for_byte() {
        let script = render_list(&order(), &["10.0.0.2:69".into()]);
        assert_eq!(script, LIST_SCRIPT);
        let image = script_image("bootherd alternate list", &script);
        let mut want = vec![
            0x27, 0x05, 0x19, 0x56, // magic
            0x68, 0x00, 0x85, 0x53, // header CRC
            0, 0, 0, 0, // time
            0x00, 0x00, 0x05, 0xf8, // data size: 8 + 1520
            0, 0, 0, 0, 0, 0, 0, 0, // load, entry
            0xef, 0xba, 0x98, 0xa1, // data CRC
            5, 2, 6, 0, // Linux, ARM, script, uncompressed
        ];
        want.extend_from_slice(b"bootherd alternate list\0\0\0\0\0\0\0\0\0");
        assert_eq!(want.len(), HEADER_LEN);
        want.extend_from_slice(&[0x00, 0x00, 0x05, 0xf0, 0, 0, 0, 0]); // 1520 bytes, end of list
        want.extend_from_slice(LIST_SCRIPT.as_bytes());
        assert_eq!(image, want);
    }

    #[test]
    fn long_names_are_cut_and_hostile_ids_cannot_inject_commands() {
        let image = script_image(&"n".repeat(40), "x");
        assert_eq!(&image[32..64], "n".repeat(32).as_bytes());
        let hostile = [AltEntry {
            id: "a;reset;${x}\"".into(),
            addresses: vec![
                "10.0.0.1:69".parse().unwrap(),
                "[fd00::1]:69".parse().unwrap(),
            ],
            http: Vec::new(),
        }];
        let script = render_list(&hostile, &["not an address".into()]);
        assert!(script.contains("echo bootherd: trying a_reset___x__ at 10.0.0.1:69\n"));
        assert!(script.contains("# a_reset___x__ at _fd00::1_:69: not IPv4\n"));
        assert!(!script.contains(";reset"), "{script}");
        assert!(
            !script.contains("bootherd_backup"),
            "no usable backup, no section"
        );
    }

    #[test]
    fn config_script_with_default_addresses() {
        let config =
            parse("kernel boot/Image\ninitrd boot/initrd.img\ncmdline console=ttyAMA0 quiet\n")
                .unwrap();
        let want = r#"# bootherd boot config for U-Boot
setenv tftptimeoutcountmax 10
setenv bootherd_failed
test -n "${kernel_addr_r}" || setenv bootherd_failed "kernel_addr_r not set: add addr= to the kernel line"
test -n "${ramdisk_addr_r}" || setenv bootherd_failed "ramdisk_addr_r not set: add addr= to the first initrd line"
if test -z "${bootherd_failed}"; then
tftpboot ${kernel_addr_r} boot/Image || setenv bootherd_failed "boot/Image: download failed"
fi
setenv bootherd_rd_end ${ramdisk_addr_r}
if test -z "${bootherd_failed}"; then
tftpboot ${bootherd_rd_end} boot/initrd.img || setenv bootherd_failed "boot/initrd.img: download failed"
fi
test -z "${bootherd_failed}" && setexpr bootherd_rd_end ${fileaddr} + ${filesize}
test -z "${bootherd_failed}" && setexpr bootherd_rd_size ${bootherd_rd_end} - ${ramdisk_addr_r}
if test -z "${bootherd_failed}"; then
setenv bootargs 'console=ttyAMA0 quiet'
echo bootherd: starting boot/Image
booti ${kernel_addr_r} ${ramdisk_addr_r}:${bootherd_rd_size} ${fdtcontroladdr}
bootz ${kernel_addr_r} ${ramdisk_addr_r}:${bootherd_rd_size} ${fdtcontroladdr}
setenv bootherd_failed "boot/Image: not started"
fi
echo bootherd: ${bootherd_failed}, trying the next
test -z "${bootherd_failed}"
"#;
        assert_eq!(render_config(&config).unwrap(), want);
    }

    #[test]
    fn config_script_with_addresses_device_tree_and_sums() {
        let sum = "ab".repeat(32);
        let config = parse(&alloc::format!(
            "kernel k addr=0x40400000 sha256={sum}\ninitrd a.img addr=0x44000000\ninitrd b.img\n\
             fdt board.dtb addr=0x48000000\nfile extra.bin\ncmdline x=1\n"
        ))
        .unwrap();
        let script = render_config(&config).unwrap();
        assert!(!script.contains("_addr_r"), "every address given: {script}");
        assert!(script.contains(
            "setenv bootherd_hash\nif hash sha256 ${fdtcontroladdr} 0 bootherd_sum; then setenv bootherd_hash 1; else echo bootherd: no hash command, SHA-256 not checked; fi\n"
        ));
        assert!(script.contains(&alloc::format!(
            "tftpboot 0x40400000 k || setenv bootherd_failed \"k: download failed\"\nfi\n\
             if test -z \"${{bootherd_failed}}\" && test -n \"${{bootherd_hash}}\"; then\n\
             hash sha256 ${{fileaddr}} ${{filesize}} bootherd_sum\n\
             test \"${{bootherd_sum}}\" = {sum} || setenv bootherd_failed \"k: SHA-256 mismatch\"\nfi\n"
        )));
        // The second initrd goes right after the first.
        assert!(script.contains("setenv bootherd_rd_end 0x44000000\n"));
        assert!(script.contains("tftpboot ${bootherd_rd_end} b.img || "));
        assert!(script.contains("setexpr bootherd_rd_size ${bootherd_rd_end} - 0x44000000\n"));
        assert!(script.contains("tftpboot 0x48000000 board.dtb || "));
        assert!(script.contains("booti 0x40400000 0x44000000:${bootherd_rd_size} 0x48000000\n"));
        assert!(!script.contains("extra.bin"), "U-Boot loads no other files");
        assert_eq!(
            script.matches("bootherd_sum}\" =").count(),
            1,
            "only the kernel has a sum"
        );
    }

    #[test]
    fn efi_kernels_start_with_bootefi() {
        let config = parse("kernel EFI/grubaa64.efi\ncmdline\n").unwrap();
        let script = render_config(&config).unwrap();
        assert!(script.contains("bootefi ${kernel_addr_r} ${fdtcontroladdr}\n"));
        assert!(!script.contains("booti") && !script.contains("ramdisk"));
        let config = parse("kernel vmlinuz\ncmdline\n").unwrap();
        assert!(render_config(&config)
            .unwrap()
            .contains("booti ${kernel_addr_r} - ${fdtcontroladdr}\n"));
    }

    #[test]
    fn configs_u_boot_cannot_run_are_refused_with_the_reason() {
        for (text, why) in [
            ("file only.bin\n", "no kernel to boot"),
            (
                "kernel a.efi\ninitrd i\n",
                "U-Boot's bootefi takes no initrd",
            ),
            (
                "kernel k;reset\n",
                "k;reset: U-Boot's shell would misread this name",
            ),
            ("kernel k\ninitrd $x\n", "$x: U-Boot's shell would misread"),
            (
                "kernel k\ncmdline it's\n",
                "cmdline: U-Boot takes it in single quotes",
            ),
        ] {
            let err = render_config(&parse(text).unwrap()).unwrap_err();
            assert!(err.starts_with(why), "{text:?}: {err}");
        }
    }
}
