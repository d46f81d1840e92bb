//! Per-client config files, served over TFTP and HTTP: the request path names the client
//! (`DIR/UUID/MAC/ARCH`), the first matching file under `configs/` answers, rendered for the
//! loader that asked.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::formats::boot_config::{lookup_order, CONFIG_DIR, IPXE_CONFIG_DIR};
use crate::formats::uboot;
use crate::log;
use crate::tftp::path::SafePath;
use crate::tftp::source::{Content, FileSource, OpenError};

/// Serves per-client config files: `bootherd.cfg/UUID/MAC/ARCH` answers with the first of
/// `configs/uuid-UUID`, `configs/mac-MAC`, `configs/arch-ARCH`, `configs/default`, with
/// `${alternate}` replaced by this alternate's id; `bootherd.ipxe/...` renders it as an iPXE
/// script, `bootherd.uboot/...` as a U-Boot script image. Each one served counts as a boot started, of the bytes of the files it names.
pub struct ConfigSource {
    root: PathBuf,
    id: String,
    base_url: String,
    boots: Arc<BootCounters>,
}

/// What the config files served say about the boots that started here.
#[derive(Debug, Default)]
pub struct BootCounters {
    /// Config files served, each one a boot that started here.
    pub started: AtomicU64,
    /// Bytes of the boot files they name, summed.
    pub booked_bytes: AtomicU64,
    /// Bytes of the boot files the last one names.
    pub last_boot_bytes: AtomicU64,
}

impl ConfigSource {
    /// Configs under `root/configs`, for alternate `id` reachable at `address`.
    pub fn new(root: &std::path::Path, id: &str, address: SocketAddr) -> Self {
        ConfigSource {
            root: root.to_path_buf(),
            id: id.to_string(),
            base_url: format!("tftp://{address}"),
            boots: Arc::default(),
        }
    }

    /// The counters of config files served.
    pub fn boots(&self) -> Arc<BootCounters> {
        self.boots.clone()
    }

    /// The same configs for clients that fetch over HTTP from `address` (their iPXE scripts
    /// name `http://` URLs), counted in the same boots.
    pub fn over_http(&self, address: SocketAddr) -> Self {
        ConfigSource {
            root: self.root.clone(),
            id: self.id.clone(),
            base_url: format!("http://{address}"),
            boots: self.boots.clone(),
        }
    }

    /// Bytes of the files `config` names, as they are on disk now (missing ones count 0: the
    /// client will fail on them, not wait for them).
    fn boot_bytes(&self, config: &crate::formats::boot_config::BootConfig) -> u64 {
        config
            .all_files()
            .map(|f| std::fs::metadata(self.root.join(&f.path)).map_or(0, |m| m.len()))
            .sum()
    }
}

impl FileSource for ConfigSource {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let mut parts = path.as_str().split('/');
        let dir = match parts.next() {
            Some(dir @ (CONFIG_DIR | IPXE_CONFIG_DIR | uboot::CONFIG_DIR)) => dir,
            _ => return Err(OpenError::NotFound),
        };
        let (uuid, mac, arch) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(u), Some(m), Some(a), None) => (u, m, a),
            _ => return Err(OpenError::NotFound),
        };
        for name in lookup_order(uuid, mac, arch) {
            let text = match std::fs::read_to_string(self.root.join("configs").join(&name)) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(OpenError::Io(e)),
            };
            let text = text.replace("${alternate}", &self.id);
            let config = crate::formats::boot_config::parse(&text).map_err(|e| {
                log::warning!("alternate: configs/{name}: {e}");
                OpenError::Denied("broken config file")
            })?;
            let bytes = self.boot_bytes(&config);
            let body = match dir {
                IPXE_CONFIG_DIR => config.render_ipxe(&self.base_url).into_bytes(),
                uboot::CONFIG_DIR => match uboot::render_config(&config) {
                    Ok(script) => uboot::script_image("bootherd config", &script),
                    Err(e) => {
                        log::warning!("alternate: configs/{name}: for U-Boot: {e}");
                        return Err(OpenError::Denied("config not bootable by U-Boot"));
                    }
                },
                _ => text.into_bytes(),
            };
            self.boots.started.fetch_add(1, Ordering::Relaxed);
            self.boots.booked_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.boots.last_boot_bytes.store(bytes, Ordering::Relaxed);
            log::info!("alternate: {client}: boot config configs/{name} (uuid {uuid}, mac {mac}, arch {arch})");
            return Ok(Content::Bytes(body.into()));
        }
        Err(OpenError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use crate::tftp::path::sanitize;

    #[test]
    fn config_lookup_order_and_substitution() {
        let root = TempDir::new("alt-configs");
        let configs = root.path().join("configs");
        std::fs::create_dir_all(&configs).unwrap();
        std::fs::write(
            configs.join("default"),
            "kernel k\ncmdline alt=${alternate}\n",
        )
        .unwrap();
        std::fs::write(configs.join("mac-52-54-00-00-00-01"), "kernel mac-kernel\n").unwrap();
        std::fs::write(configs.join("arch-11"), "kernel arm64\n").unwrap();
        let src = ConfigSource::new(root.path(), "alt7", "127.0.0.17:69".parse().unwrap());
        let client: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let read = |p: &str| match src.open(&sanitize(p).unwrap(), client) {
            Ok(Content::Bytes(b)) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            read("bootherd.cfg/-/52-54-00-00-00-01/11"),
            "kernel mac-kernel\n"
        );
        assert_eq!(read("bootherd.cfg/-/-/11"), "kernel arm64\n");
        assert_eq!(
            read("bootherd.cfg/some-uuid/52-54-00-00-00-02/7"),
            "kernel k\ncmdline alt=alt7\n"
        );
        assert_eq!(
            read("bootherd.ipxe/-/-/7"),
            "#!ipxe\nkernel tftp://127.0.0.17:69/k alt=alt7\nboot\n"
        );
        let uboot = |p: &str| match src.open(&sanitize(p).unwrap(), client) {
            Ok(Content::Bytes(b)) => b,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            uboot("bootherd.uboot/-/52:54:00:00:00:01/uboot-arm-armv8")[..],
            uboot::script_image(
                "bootherd config",
                &uboot::render_config(
                    &crate::formats::boot_config::parse("kernel mac-kernel\n").unwrap()
                )
                .unwrap()
            )[..]
        );
        std::fs::write(configs.join("arch-22"), "kernel a;b\n").unwrap();
        assert!(matches!(
            src.open(
                &sanitize("bootherd.uboot/-/-/uboot-arm-armv8").unwrap(),
                client
            ),
            Err(OpenError::Denied(_))
        ));
        assert_eq!(src.boots().started.load(Ordering::Relaxed), 5);
        // A boot is booked with the bytes of the files its config names, as they are on disk.
        std::fs::write(root.path().join("k"), vec![0u8; 1000]).unwrap();
        read("bootherd.cfg/-/-/7");
        let boots = src.boots();
        assert_eq!(boots.last_boot_bytes.load(Ordering::Relaxed), 1000);
        assert_eq!(boots.booked_bytes.load(Ordering::Relaxed), 1000);
        assert!(matches!(
            src.open(&sanitize("bootherd.cfg/x").unwrap(), client),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            src.open(&sanitize("kernel").unwrap(), client),
            Err(OpenError::NotFound)
        ));
    }
}
