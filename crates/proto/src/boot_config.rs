//! Per-client boot config files, served by the alternates.
//!
//! A client asks one path, `bootherd.cfg/UUID/MAC/ARCH` (or `bootherd.ipxe/...` for an iPXE
//! script); the alternate answers with the first of these files under its `configs/` directory
//! that exists, the lookup order of pxelinux: `uuid-UUID`, `mac-MAC` (lower case, `-`
//! separated), `arch-ARCH` (the PXE option 93 number; iPXE's `${platform}-${buildarch}` is
//! mapped to it), `default`. Unknown parts may be sent as `-`.
//!
//! Format: one directive per line; `#` comments; `${alternate}` is replaced by the serving
//! alternate's id.
//!
//! ```text
//! kernel boot/vmlinuz sha256=9f86d0...   # the kernel (optional sha256 is checked by clients)
//! initrd boot/initrd.img                  # any number of initrds, in order
//! file boot/extra.bin                     # other files to fetch
//! fdt boot/board.dtb addr=0x48000000      # U-Boot: a device tree (UEFI clients fetch, not use)
//! cmdline console=ttyS0 bootherd.alt=${alternate}
//! ```
//!
//! `addr=0xHEX` on the kernel, the first initrd or the fdt is where U-Boot loads it (by default
//! its `kernel_addr_r`, `ramdisk_addr_r`, `fdt_addr_r`); other clients ignore it.

use alloc::string::String;
use alloc::vec::Vec;

use crate::hex::{self, Hex};

/// Directory part of the text config path.
pub const CONFIG_DIR: &str = "bootherd.cfg";
/// Directory part of the iPXE config path.
pub const IPXE_CONFIG_DIR: &str = "bootherd.ipxe";

/// One boot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// Path on the alternate.
    pub path: String,
    /// Expected SHA-256, when given.
    pub sha256: Option<[u8; 32]>,
    /// Load address for U-Boot, when given (`addr=0x...`).
    pub addr: Option<u64>,
}

/// A parsed config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootConfig {
    /// The kernel.
    pub kernel: Option<BootFile>,
    /// Initrds, in order.
    pub initrds: Vec<BootFile>,
    /// Other files.
    pub files: Vec<BootFile>,
    /// A device tree for U-Boot boards (UEFI firmware brings its own).
    pub fdt: Option<BootFile>,
    /// Kernel command line.
    pub cmdline: String,
}

impl BootConfig {
    /// Every file to fetch: kernel, initrds, others, device tree.
    pub fn all_files(&self) -> impl Iterator<Item = &BootFile> {
        self.kernel
            .iter()
            .chain(&self.initrds)
            .chain(&self.files)
            .chain(&self.fdt)
    }

    /// Renders as an iPXE script that boots the kernel. Each initrd is also named on the
    /// command line (`initrd=NAME`): iPXE's EFI builds hand initrds to the kernel only that way.
    ///
    /// A file with a `sha256=` is checked after its download where iPXE can (`sha256sum
    /// --set`: iPXE 2.0 and later, not in BIOS builds); a mismatch frees what was fetched and
    /// fails the script, so the list script moves on to the next alternate. Where the command
    /// is missing the check is skipped and the file is booted unchecked.
    pub fn render_ipxe(&self, base_url: &str) -> String {
        let mut out = String::from("#!ipxe\n");
        let mut cmdline = self.cmdline.clone();
        let mut fetched = Vec::new();
        let name = |f: &BootFile| String::from(f.path.rsplit('/').next().unwrap_or(&f.path));
        for f in &self.initrds {
            out.push_str(&alloc::format!("initrd {base_url}/{}\n", f.path));
            cmdline.push_str(&alloc::format!(" initrd={}", name(f)));
            check_ipxe(&mut out, f, &name(f), fetched.len());
            fetched.push(name(f));
        }
        if let Some(k) = &self.kernel {
            out.push_str(&alloc::format!(
                "kernel {base_url}/{} {}\n",
                k.path,
                cmdline.trim_start()
            ));
            check_ipxe(&mut out, k, &name(k), fetched.len());
            fetched.push(name(k));
            out.push_str("boot\n");
        }
        if self.all_files().any(|f| f.sha256.is_some()) {
            out.push_str(":bootherd_mismatch\necho bootherd: ${bootherd-file}: SHA-256 mismatch\n");
            for name in &fetched {
                out.push_str(&alloc::format!("imgfree {name} ||\n"));
            }
            out.push_str("exit 1\n");
        }
        out
    }
}

/// The iPXE lines that check image `name` against `file`'s SHA-256, if it has one; `n` makes
/// the label unique.
fn check_ipxe(out: &mut String, file: &BootFile, name: &str, n: usize) {
    let Some(sum) = file.sha256 else { return };
    let hex = Hex::new(&sum);
    out.push_str(&alloc::format!(
        "set bootherd-file {name}\n\
         sha256sum --set bootherd-sum {name} || goto bootherd_unchecked_{n}\n\
         iseq ${{bootherd-sum}} {hex} || goto bootherd_mismatch\n\
         :bootherd_unchecked_{n}\n"
    ));
}

/// The candidate file names for a client, in lookup order.
pub fn lookup_order(uuid: &str, mac: &str, arch: &str) -> Vec<String> {
    let mut out = Vec::new();
    let known = |s: &str| !s.is_empty() && s != "-";
    if known(uuid) {
        out.push(alloc::format!("uuid-{}", uuid.to_ascii_lowercase()));
    }
    if known(mac) {
        out.push(alloc::format!(
            "mac-{}",
            mac.to_ascii_lowercase().replace(':', "-")
        ));
    }
    if known(arch) {
        out.push(alloc::format!(
            "arch-{}",
            pxe_arch(&arch.to_ascii_lowercase())
        ));
    }
    out.push(String::from("default"));
    out
}

/// The PXE architecture number (option 93) for what a client calls itself: a number already
/// (the NBP), or iPXE's `${platform}-${buildarch}` (`pcbios-i386`, `efi-x86_64`, `efi-arm64`),
/// so that one `arch-7` file serves both the NBP and iPXE on UEFI x64; U-Boot's
/// `uboot-${arch}-${cpu}` reads `arch-22` (arm64) or `arch-21` (32-bit ARM).
fn pxe_arch(arch: &str) -> &str {
    match arch {
        a if a.starts_with("pcbios-") => "0",
        "efi-i386" => "6",
        "efi-x86_64" => "7",
        "efi-arm32" => "10",
        "efi-arm64" => "11",
        // The U-Boot list script's `uboot-${arch}-${cpu}`: U-Boot's own option 93 numbers.
        "uboot-arm-armv8" => "22",
        a if a.starts_with("uboot-arm-") => "21",
        other => other,
    }
}

/// Parses a config; errors name the line.
pub fn parse(text: &str) -> Result<BootConfig, String> {
    let mut config = BootConfig::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |why: &str| alloc::format!("line {}: {why}", n + 1);
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "cmdline" => config.cmdline = String::from(rest),
            "kernel" | "initrd" | "file" | "fdt" => {
                let mut parts = rest.split_whitespace();
                let path = parts.next().ok_or_else(|| err("missing path"))?;
                let mut file = BootFile {
                    path: String::from(path),
                    sha256: None,
                    addr: None,
                };
                for extra in parts {
                    if let Some(sum) = extra.strip_prefix("sha256=") {
                        file.sha256 = Some(
                            parse_sha256(sum).ok_or_else(|| err("sha256 needs 64 hex digits"))?,
                        );
                    } else if let Some(addr) = extra.strip_prefix("addr=") {
                        file.addr = Some(parse_addr(addr).ok_or_else(|| {
                            err("addr needs 0x and up to 16 hex digits (addr=0x48000000)")
                        })?);
                    } else {
                        return Err(err("unknown attribute (want sha256=HEX or addr=0xHEX)"));
                    }
                }
                // Initrds are loaded one after another, files are not loaded by U-Boot.
                if file.addr.is_some()
                    && (word == "file" || (word == "initrd" && !config.initrds.is_empty()))
                {
                    return Err(err(
                        "addr= only on the kernel, the first initrd and the fdt",
                    ));
                }
                match word {
                    "kernel" if config.kernel.is_some() => return Err(err("second kernel")),
                    "kernel" => config.kernel = Some(file),
                    "fdt" if config.fdt.is_some() => return Err(err("second fdt")),
                    "fdt" => config.fdt = Some(file),
                    "initrd" => config.initrds.push(file),
                    _ => config.files.push(file),
                }
            }
            other => return Err(err(&alloc::format!("unknown directive {other:?}"))),
        }
    }
    if config.kernel.is_none() && config.files.is_empty() {
        return Err(String::from("no kernel and no file"));
    }
    Ok(config)
}

/// `0x` and 1 to 16 hex digits.
fn parse_addr(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Exactly 64 hex digits.
fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    hex::decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# demo\nkernel boot/vmlinuz sha256=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\ninitrd boot/a.img\ninitrd boot/b.img  # second\nfile extra.bin\ncmdline console=ttyS0 quiet\n";

    #[test]
    fn parses_every_directive() {
        let c = parse(SAMPLE).unwrap();
        let k = c.kernel.as_ref().unwrap();
        assert_eq!(k.path, "boot/vmlinuz");
        assert_eq!(k.sha256.unwrap()[31], 0x1f);
        assert_eq!(c.initrds.len(), 2);
        assert_eq!(c.cmdline, "console=ttyS0 quiet");
        let all: Vec<&str> = c.all_files().map(|f| f.path.as_str()).collect();
        assert_eq!(
            all,
            ["boot/vmlinuz", "boot/a.img", "boot/b.img", "extra.bin"]
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            ("kernel\n", "line 1: missing path"),
            ("kernel a\nkernel b\n", "line 2: second kernel"),
            ("\nboot now\n", "line 2: unknown directive \"boot\""),
            ("kernel a sha256=12\n", "line 1: sha256 needs 64 hex digits"),
            (
                "kernel a md5=12\n",
                "line 1: unknown attribute (want sha256=HEX or addr=0xHEX)",
            ),
            ("cmdline x\n", "no kernel and no file"),
        ] {
            assert_eq!(parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn device_tree_and_load_addresses_for_u_boot() {
        let c = parse(
            "kernel k addr=0x40400000\ninitrd a addr=0x44000000\ninitrd b\nfdt d.dtb addr=0xffffffffffffffff\n",
        )
        .unwrap();
        assert_eq!(c.kernel.as_ref().unwrap().addr, Some(0x4040_0000));
        assert_eq!(c.initrds[0].addr, Some(0x4400_0000));
        assert_eq!(c.initrds[1].addr, None);
        let fdt = c.fdt.as_ref().unwrap();
        assert_eq!((fdt.path.as_str(), fdt.addr), ("d.dtb", Some(u64::MAX)));
        let all: Vec<&str> = c.all_files().map(|f| f.path.as_str()).collect();
        assert_eq!(all, ["k", "a", "b", "d.dtb"]);
        // Configs without them read as before.
        assert_eq!(parse(SAMPLE).unwrap().fdt, None);
        for (text, want) in [
            ("kernel k\nfdt a\nfdt b\n", "line 3: second fdt"),
            (
                "kernel k\ninitrd a\ninitrd b addr=0x1\n",
                "line 3: addr= only on the kernel, the first initrd and the fdt",
            ),
            (
                "file f addr=0x1\n",
                "line 1: addr= only on the kernel, the first initrd and the fdt",
            ),
            (
                "kernel k addr=40400000\n",
                "line 1: addr needs 0x and up to 16 hex digits (addr=0x48000000)",
            ),
            (
                "kernel k addr=0x+1\n",
                "line 1: addr needs 0x and up to 16 hex digits (addr=0x48000000)",
            ),
            (
                "kernel k addr=0x10000000000000000\n",
                "line 1: addr needs 0x and up to 16 hex digits (addr=0x48000000)",
            ),
            ("fdt\n", "line 1: missing path"),
        ] {
            assert_eq!(parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn lookup_order_is_uuid_mac_arch_default() {
        assert_eq!(
            lookup_order(
                "77777777-7777-4777-8777-525400770010",
                "52:54:00:77:00:10",
                "7"
            ),
            [
                "uuid-77777777-7777-4777-8777-525400770010",
                "mac-52-54-00-77-00-10",
                "arch-7",
                "default"
            ]
        );
        assert_eq!(lookup_order("-", "", "-"), ["default"]);
        for (ipxe, number) in [
            ("pcbios-i386", "0"),
            ("efi-x86_64", "7"),
            ("EFI-ARM64", "11"),
            ("uboot-arm-armv8", "22"),
            ("uboot-arm-armv7", "21"),
            ("uboot-riscv-generic", "uboot-riscv-generic"),
        ] {
            assert_eq!(
                lookup_order("-", "-", ipxe)[0],
                alloc::format!("arch-{number}")
            );
        }
    }

    #[test]
    fn ipxe_rendering() {
        let c = parse("kernel k\ninitrd i\ncmdline a=b\n").unwrap();
        assert_eq!(
            c.render_ipxe("tftp://10.0.0.1:69"),
            "#!ipxe\ninitrd tftp://10.0.0.1:69/i\nkernel tftp://10.0.0.1:69/k a=b initrd=i\nboot\n"
        );
    }

    #[test]
    fn ipxe_rendering_checks_sums_where_given() {
        let sum = "00".repeat(31) + "1f";
        let c = parse(&alloc::format!(
            "kernel boot/k sha256={sum}\ninitrd boot/i\ncmdline a=b\n"
        ))
        .unwrap();
        let script = c.render_ipxe("tftp://10.0.0.1:69");
        let want = alloc::format!(
            "#!ipxe
initrd tftp://10.0.0.1:69/boot/i
kernel tftp://10.0.0.1:69/boot/k a=b initrd=i
set bootherd-file k
sha256sum --set bootherd-sum k || goto bootherd_unchecked_1
iseq ${{bootherd-sum}} {sum} || goto bootherd_mismatch
:bootherd_unchecked_1
boot
:bootherd_mismatch
echo bootherd: ${{bootherd-file}}: SHA-256 mismatch
imgfree i ||
imgfree k ||
exit 1
"
        );
        assert_eq!(script, want);
    }
}
