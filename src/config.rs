//! The config file of both roles: a TOML subset read with nanoserde.
//!
//! Supported: `key = value` lines with strings (`"..."`, no escapes), integers, booleans and
//! arrays of strings; `[section]` headers. Not supported (nanoserde mishandles them, so they
//! are refused or never needed): arrays of tables, inline tables, escapes in strings.
//! Errors name the line and the key. `--set section.key=value` on the command line overrides a
//! key of the file.
//!
//! ```toml
//! key_file = "/etc/bootherd/report.key"   # pre-shared report key, at least 16 bytes
//! user = "nobody"                         # drop root after binding (optional)
//!
//! [tftp]                                  # both roles
//! max_blksize = 1468
//! max_windowsize = 64
//! max_transfers = 512
//! timeout_ms = 1000
//! retries = 5
//! single_port = false
//!
//! [central]
//! tftp_listen = "0.0.0.0:69"
//! tftp_root = "/srv/bootherd/central"     # NBP files
//! report_listen = "0.0.0.0:7411"
//! ordering = "load"                       # or "static"
//! typical_boot_bytes = 67108864
//! promise_ttl_ms = 10000
//! expected_digest = "…64 hex digits…"     # optional
//! allow = ["alt1", "alt2"]                # optional allow-list
//! subnet_costs = ["10.0.1.0/24 alt1 0", "10.0.1.0/24 alt2 200"]
//!
//! [pxe]                                   # central: proxyDHCP (67) and discovery (4011)
//! interfaces = ["eth0 10.0.0.1"]          # "INTERFACE ADDRESS"; * = any, - = the address only
//! proxy = true                            # false: 4011 only (DHCP server on the same host)
//! menu = "Boot through bootherd"          # optional PXE menu (full discovery)
//! backup_centrals = ["10.0.0.2"]          # announced to clients for when this one dies
//! boot_efi_x64 = "bootherd-x64.efi"       # also boot_bios, boot_efi_ia32, boot_efi_arm32,
//!                                         # boot_efi_arm64, boot_ipxe
//!
//! [alternate]
//! id = "alt1"
//! tftp_listen = "0.0.0.0:69"
//! advertise = ["10.0.0.11:69"]            # what clients should use [default: tftp_listen]
//! root = "/srv/bootherd/boot"
//! link_bytes_per_sec = 125000000         # optional cap on the capacity it learns
//! rate_limit = false                      # cap sending at link_bytes_per_sec
//! state_file = "/var/lib/bootherd/alternate.state"  # boot count, learned capacity
//! centrals = ["10.0.0.1:7411", "10.0.0.2:7411"]
//! interval_ms = 1000
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoserde::{Toml, TomlParser};

use crate::balance::{ListOrder, Policy, SubnetCost};
use crate::pxe::responder::{BootFiles, PxeConfig};
use crate::pxe::server::{Binding, Interface, PxeSettings};
use crate::report::wire::{from_hex, Key};
use crate::tftp::options::{Limits, BLKSIZE_RANGE};
use crate::tftp::server::ServerConfig;
use crate::tftp::transfer::Retransmit;

/// Default UDP port of the report listener.
pub const DEFAULT_REPORT_PORT: u16 = 7411;

/// Every key the file may have, with what it holds.
const SCHEMA: &[(&str, Kind)] = &[
    ("key_file", Kind::Str),
    ("user", Kind::Str),
    ("tftp.max_blksize", Kind::Int),
    ("tftp.max_windowsize", Kind::Int),
    ("tftp.max_transfers", Kind::Int),
    ("tftp.timeout_ms", Kind::Int),
    ("tftp.retries", Kind::Int),
    ("tftp.single_port", Kind::Bool),
    ("central.tftp_listen", Kind::Str),
    ("central.tftp_root", Kind::Str),
    ("central.report_listen", Kind::Str),
    ("central.ordering", Kind::Str),
    ("central.typical_boot_bytes", Kind::Int),
    ("central.promise_ttl_ms", Kind::Int),
    ("central.expected_digest", Kind::Str),
    ("central.allow", Kind::StrList),
    ("central.subnet_costs", Kind::StrList),
    ("pxe.interfaces", Kind::StrList),
    ("pxe.proxy", Kind::Bool),
    ("pxe.proxy_port", Kind::Int),
    ("pxe.discovery_port", Kind::Int),
    ("pxe.menu", Kind::Str),
    ("pxe.boot_bios", Kind::Str),
    ("pxe.boot_efi_ia32", Kind::Str),
    ("pxe.boot_efi_x64", Kind::Str),
    ("pxe.boot_efi_arm32", Kind::Str),
    ("pxe.boot_efi_arm64", Kind::Str),
    ("pxe.boot_ipxe", Kind::Str),
    ("pxe.backup_centrals", Kind::StrList),
    ("alternate.id", Kind::Str),
    ("alternate.tftp_listen", Kind::Str),
    ("alternate.advertise", Kind::StrList),
    ("alternate.root", Kind::Str),
    ("alternate.link_bytes_per_sec", Kind::Int),
    ("alternate.rate_limit", Kind::Bool),
    ("alternate.state_file", Kind::Str),
    ("alternate.centrals", Kind::StrList),
    ("alternate.interval_ms", Kind::Int),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    StrList,
}

/// A config problem, ready to print: `config line 12: key \`x\`: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parsed file plus overrides, with typed, located access.
#[derive(Debug)]
pub struct Config {
    text: String,
    values: BTreeMap<String, Toml>,
    base_dir: PathBuf,
}

/// TFTP settings shared by both roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpSettings {
    /// Block and window limits.
    pub limits: Limits,
    /// Transfer limit.
    pub max_transfers: usize,
    /// Retransmission.
    pub retransmit: Retransmit,
    /// Single-port mode.
    pub single_port: bool,
}

impl TftpSettings {
    /// A server config listening on `listen`.
    pub fn server(&self, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            limits: self.limits,
            retransmit: self.retransmit,
            max_transfers: self.max_transfers,
            single_port: self.single_port,
            rate_limit: None,
        }
    }
}

/// The central's settings.
#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// Report key.
    pub key: Key,
    /// TFTP service.
    pub tftp: TftpSettings,
    /// TFTP address.
    pub tftp_listen: SocketAddr,
    /// Directory with the NBP files, if any.
    pub tftp_root: Option<PathBuf>,
    /// Report listener address.
    pub report_listen: SocketAddr,
    /// Ordering policy.
    pub policy: Policy,
    /// proxyDHCP and boot-server discovery, when `[pxe]` lists interfaces.
    pub pxe: Option<PxeSettings>,
}

/// An alternate's settings.
#[derive(Debug, Clone)]
pub struct AlternateConfig {
    /// Report key.
    pub key: Key,
    /// TFTP service.
    pub tftp: TftpSettings,
    /// Id.
    pub id: String,
    /// TFTP address.
    pub tftp_listen: SocketAddr,
    /// Addresses for clients (empty: `tftp_listen`).
    pub advertise: Vec<SocketAddr>,
    /// Boot files and `configs/`.
    pub root: PathBuf,
    /// A cap on the capacity it learns and reports, bytes/s (none: what it measures).
    pub link_bytes_per_sec: Option<u64>,
    /// Cap sending at `link_bytes_per_sec`.
    pub rate_limit: bool,
    /// Where it keeps its boot count and learned capacity between runs (none: nowhere).
    pub state_file: Option<PathBuf>,
    /// Centrals to report to.
    pub centrals: Vec<SocketAddr>,
    /// Report interval.
    pub interval: Duration,
}

impl Config {
    /// Reads a file; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::parse(&text, &base_dir)
    }

    /// Parses config text.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let values = TomlParser::parse(text)
            .map_err(|e| ConfigError(format!("config line {}: {}", e.line + 1, e.msg)))?;
        let config = Config {
            text: text.to_string(),
            values,
            base_dir: base_dir.to_path_buf(),
        };
        for (key, value) in &config.values {
            let Some(&(_, kind)) = SCHEMA.iter().find(|(k, _)| k == key) else {
                let hint = SCHEMA
                    .iter()
                    .map(|(k, _)| *k)
                    .find(|k| similar(k, key))
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                return Err(config.error(key, &format!("unknown key{hint}")));
            };
            config.check_kind(key, value, kind)?;
        }
        Ok(config)
    }

    /// Applies `section.key=value` overrides (numbers and booleans are recognised).
    pub fn set(&mut self, assignments: &[String]) -> Result<(), ConfigError> {
        for a in assignments {
            let (key, raw) = a
                .split_once('=')
                .ok_or_else(|| ConfigError(format!("--set {a:?}: want section.key=value")))?;
            let Some(&(_, kind)) = SCHEMA.iter().find(|(k, _)| *k == key) else {
                return Err(ConfigError(format!("--set {key}: unknown key")));
            };
            let value =
                match kind {
                    Kind::Int => Toml::Num(raw.parse::<f64>().map_err(|_| {
                        ConfigError(format!("--set {key}: {raw:?} is not a number"))
                    })?),
                    Kind::Bool => Toml::Bool(raw.parse().map_err(|_| {
                        ConfigError(format!("--set {key}: {raw:?} is not true or false"))
                    })?),
                    Kind::Str => Toml::Str(raw.to_string()),
                    Kind::StrList => Toml::SimpleArray(
                        raw.split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| Toml::Str(s.trim().to_string()))
                            .collect(),
                    ),
                };
            self.values.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// The central's settings.
    pub fn central(&self) -> Result<CentralConfig, ConfigError> {
        let defaults = Policy::default();
        let order = match self.str("central.ordering")?.as_deref() {
            None | Some("load") => ListOrder::Load,
            Some("static") => ListOrder::Static,
            Some(other) => {
                return Err(self.error(
                    "central.ordering",
                    &format!("{other:?}: want \"load\" or \"static\""),
                ))
            }
        };
        let expected_digest = match self.str("central.expected_digest")? {
            None => None,
            Some(hex) => Some(
                from_hex(&hex)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| self.error("central.expected_digest", "want 64 hex digits"))?,
            ),
        };
        let subnet_costs = self
            .list("central.subnet_costs")?
            .unwrap_or_default()
            .iter()
            .map(|s| parse_subnet_cost(s).map_err(|why| self.error("central.subnet_costs", &why)))
            .collect::<Result<_, _>>()?;
        Ok(CentralConfig {
            key: self.key()?,
            tftp: self.tftp()?,
            tftp_listen: self
                .addr("central.tftp_listen")?
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 69))),
            tftp_root: self.path("central.tftp_root")?,
            report_listen: self
                .addr("central.report_listen")?
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_REPORT_PORT))),
            policy: Policy {
                order,
                typical_boot_bytes: self
                    .int("central.typical_boot_bytes", 1, u64::MAX)?
                    .unwrap_or(defaults.typical_boot_bytes),
                expected_digest,
                allow: self.list("central.allow")?,
                subnet_costs,
                promise_ttl: self
                    .int("central.promise_ttl_ms", 1, 3_600_000)?
                    .map_or(defaults.promise_ttl, Duration::from_millis),
            },
            pxe: self.pxe()?,
        })
    }

    fn pxe(&self) -> Result<Option<PxeSettings>, ConfigError> {
        let Some(entries) = self.list("pxe.interfaces")? else {
            return Ok(None);
        };
        let interfaces = entries
            .iter()
            .map(|entry| {
                let bad = || {
                    self.error(
                        "pxe.interfaces",
                        &format!("{entry:?}: want \"INTERFACE ADDRESS\" (INTERFACE may be * or -)"),
                    )
                };
                let (name, address) = entry.split_once(' ').ok_or_else(bad)?;
                let address: Ipv4Addr = address.trim().parse().map_err(|_| bad())?;
                let binding = match name {
                    "*" => Binding::Any,
                    "-" => Binding::Address,
                    name => Binding::Device(name.to_string()),
                };
                Ok(Interface { binding, address })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let defaults = BootFiles::default();
        let file = |key: &str, default: &String| -> Result<String, ConfigError> {
            Ok(self.str(key)?.unwrap_or_else(|| default.clone()))
        };
        let boot_files = BootFiles {
            bios: file("pxe.boot_bios", &defaults.bios)?,
            efi_ia32: file("pxe.boot_efi_ia32", &defaults.efi_ia32)?,
            efi_x64: file("pxe.boot_efi_x64", &defaults.efi_x64)?,
            efi_arm32: file("pxe.boot_efi_arm32", &defaults.efi_arm32)?,
            efi_arm64: file("pxe.boot_efi_arm64", &defaults.efi_arm64)?,
            ipxe: file("pxe.boot_ipxe", &defaults.ipxe)?,
        };
        if let Err(why) = boot_files.validate() {
            let key = format!("pxe.{}", why.split(':').next().unwrap_or_default());
            return Err(self.error(&key, &why));
        }
        let port = |key: &str, default: u16| -> Result<u16, ConfigError> {
            // 0 lets the kernel pick (tests).
            Ok(self.int(key, 0, 65535)?.map_or(default, |p| p as u16))
        };
        let backup_centrals = self
            .list("pxe.backup_centrals")?
            .unwrap_or_default()
            .iter()
            .map(|s| {
                s.parse::<Ipv4Addr>().map_err(|_| {
                    self.error(
                        "pxe.backup_centrals",
                        &format!("{s:?} is not an IPv4 address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if backup_centrals.len() >= crate::pxe::vendor::MAX_BOOT_SERVERS {
            return Err(self.error("pxe.backup_centrals", "too many (at most 62)"));
        }
        Ok(Some(PxeSettings {
            responder: PxeConfig {
                boot_files,
                menu: self.str("pxe.menu")?,
                backup_centrals,
            },
            proxy: self.bool("pxe.proxy")?.unwrap_or(true),
            interfaces,
            proxy_port: port("pxe.proxy_port", 67)?,
            discovery_port: port("pxe.discovery_port", 4011)?,
        }))
    }

    /// An alternate's settings.
    pub fn alternate(&self) -> Result<AlternateConfig, ConfigError> {
        let id = self.required_str("alternate.id")?;
        if id.is_empty()
            || id.len() > crate::report::wire::MAX_ID_LEN
            || id.contains(char::is_whitespace)
        {
            return Err(self.error("alternate.id", "1 to 64 bytes, no spaces"));
        }
        let addrs = |key: &str| -> Result<Vec<SocketAddr>, ConfigError> {
            self.list(key)?
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|e| self.error(key, &format!("{s:?} is not ADDRESS:PORT: {e}")))
                })
                .collect()
        };
        let centrals = addrs("alternate.centrals")?;
        if centrals.is_empty() {
            return Err(self.error("alternate.centrals", "at least one central is needed"));
        }
        let link_bytes_per_sec = self.int("alternate.link_bytes_per_sec", 1, u64::MAX)?;
        let rate_limit = self.bool("alternate.rate_limit")?.unwrap_or(false);
        if rate_limit && link_bytes_per_sec.is_none() {
            return Err(self.error(
                "alternate.rate_limit",
                "needs alternate.link_bytes_per_sec, the rate to cap at",
            ));
        }
        let advertise = addrs("alternate.advertise")?;
        if advertise.len() > crate::report::wire::MAX_ADDRESSES {
            return Err(self.error("alternate.advertise", "at most 4 addresses"));
        }
        Ok(AlternateConfig {
            key: self.key()?,
            tftp: self.tftp()?,
            id,
            tftp_listen: self
                .addr("alternate.tftp_listen")?
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 69))),
            advertise,
            root: self
                .path("alternate.root")?
                .ok_or_else(|| self.error("alternate.root", "missing"))?,
            link_bytes_per_sec,
            rate_limit,
            state_file: self.path("alternate.state_file")?,
            centrals,
            interval: Duration::from_millis(
                self.int("alternate.interval_ms", 10, 3_600_000)?
                    .unwrap_or(1000),
            ),
        })
    }

    fn tftp(&self) -> Result<TftpSettings, ConfigError> {
        let d = ServerConfig::default();
        let (min_blk, max_blk) = BLKSIZE_RANGE;
        Ok(TftpSettings {
            limits: Limits {
                max_blksize: self
                    .int("tftp.max_blksize", u64::from(min_blk), u64::from(max_blk))?
                    .map_or(d.limits.max_blksize, |v| v as u16),
                max_windowsize: self
                    .int("tftp.max_windowsize", 1, 65535)?
                    .map_or(d.limits.max_windowsize, |v| v as u16),
            },
            max_transfers: self
                .int("tftp.max_transfers", 1, 1 << 20)?
                .map_or(d.max_transfers, |v| v as usize),
            retransmit: Retransmit {
                timeout: self
                    .int("tftp.timeout_ms", 1, 255_000)?
                    .map_or(d.retransmit.timeout, Duration::from_millis),
                retries: self
                    .int("tftp.retries", 0, 1000)?
                    .map_or(d.retransmit.retries, |v| v as u32),
            },
            single_port: self.bool("tftp.single_port")?.unwrap_or(false),
        })
    }

    /// The account to drop to after binding, if any.
    pub fn user(&self) -> Result<Option<String>, ConfigError> {
        self.str("user")
    }

    /// The report key from `key_file` (hex if the file is only hex digits, else its bytes).
    pub fn key(&self) -> Result<Key, ConfigError> {
        let path = self
            .path("key_file")?
            .ok_or_else(|| self.error("key_file", "missing (the pre-shared report key)"))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| self.error("key_file", &format!("cannot read {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let key = from_hex(&text).unwrap_or(bytes);
        Key::new(&key).map_err(|e| self.error("key_file", &e))
    }

    fn error(&self, key: &str, why: &str) -> ConfigError {
        match self.line_of(key) {
            Some(line) => ConfigError(format!("config line {line}: key `{key}`: {why}")),
            None => ConfigError(format!("config: key `{key}`: {why}")),
        }
    }

    /// The line that sets `section.key`, found by scanning the text as the parser does.
    fn line_of(&self, full_key: &str) -> Option<usize> {
        let (section, key) = full_key.rsplit_once('.').unwrap_or(("", full_key));
        let mut current = "";
        for (n, line) in self.text.lines().enumerate() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = name.trim();
            } else if current == section
                && line
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
            {
                return Some(n + 1);
            }
        }
        None
    }

    fn check_kind(&self, key: &str, value: &Toml, kind: Kind) -> Result<(), ConfigError> {
        let ok = match (kind, value) {
            (Kind::Str, Toml::Str(_)) | (Kind::Bool, Toml::Bool(_)) => true,
            (Kind::Int, Toml::Num(n)) => n.fract() == 0.0 && *n >= 0.0,
            (Kind::StrList, Toml::SimpleArray(items)) => {
                items.iter().all(|i| matches!(i, Toml::Str(_)))
            }
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let want = match kind {
            Kind::Str => "a string in double quotes",
            Kind::Int => "a whole number",
            Kind::Bool => "true or false",
            Kind::StrList => "an array of strings",
        };
        Err(self.error(key, &format!("want {want}")))
    }

    fn str(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(match self.values.get(key) {
            Some(Toml::Str(s)) => Some(s.clone()),
            _ => None,
        })
    }

    fn required_str(&self, key: &str) -> Result<String, ConfigError> {
        self.str(key)?.ok_or_else(|| self.error(key, "missing"))
    }

    fn int(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.values.get(key) {
            Some(Toml::Num(n)) => {
                let v = *n as u64;
                if (v as f64) != *n || v < min || v > max {
                    return Err(self.error(key, &format!("{n} is out of range {min}..={max}")));
                }
                Ok(Some(v))
            }
            _ => Ok(None),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        Ok(match self.values.get(key) {
            Some(Toml::Bool(b)) => Some(*b),
            _ => None,
        })
    }

    fn list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(match self.values.get(key) {
            Some(Toml::SimpleArray(items)) => Some(
                items
                    .iter()
                    .filter_map(|i| match i {
                        Toml::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
    }

    fn addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.str(key)?
            .map(|s| {
                s.parse()
                    .map_err(|e| self.error(key, &format!("{s:?} is not ADDRESS:PORT: {e}")))
            })
            .transpose()
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.str(key)?.map(|s| self.base_dir.join(s)))
    }
}

/// `"10.0.1.0/24 alt1 50"`: clients in the subnet see alt1's score raised by 50 %.
fn parse_subnet_cost(s: &str) -> Result<SubnetCost, String> {
    let bad = || format!("{s:?}: want \"NET/PREFIX ALTERNATE PERCENT\"");
    let mut words = s.split_whitespace();
    let (net, alternate, percent) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some(n), Some(a), Some(p), None) => (n, a, p),
        _ => return Err(bad()),
    };
    let (ip, prefix) = net.split_once('/').ok_or_else(bad)?;
    let net: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
    Ok(SubnetCost {
        net,
        prefix,
        alternate: alternate.to_string(),
        percent: percent.parse().map_err(|_| bad())?,
    })
}

/// Whether two keys differ by a small edit or only by word order (for "did you mean").
fn similar(a: &str, b: &str) -> bool {
    let words = |s: &str| {
        let mut w: Vec<String> = s.split(['.', '_']).map(str::to_string).collect();
        w.sort();
        w
    };
    if words(a) == words(b) {
        return true;
    }
    // Levenshtein distance of at most 2.
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn with_key(text: &str) -> (TempDir, Result<Config, ConfigError>) {
        let dir = TempDir::new("config");
        std::fs::write(
            dir.path().join("report.key"),
            "00112233445566778899aabbccddeeff\n",
        )
        .unwrap();
        let parsed = Config::parse(text, dir.path());
        (dir, parsed)
    }

    const ALTERNATE: &str = r#"key_file = "report.key"

[tftp]
max_blksize = 8192

[alternate]
id = "alt1"
tftp_listen = "127.0.0.11:6901"
root = "boot"
link_bytes_per_sec = 40000000
rate_limit = true
centrals = ["127.0.0.1:7411", "127.0.0.2:7411"]
interval_ms = 200
"#;

    #[test]
    fn reads_an_alternate() {
        let (dir, c) = with_key(ALTERNATE);
        let a = c.unwrap().alternate().unwrap();
        assert_eq!(a.id, "alt1");
        assert_eq!(a.root, dir.path().join("boot"));
        assert_eq!(a.centrals.len(), 2);
        assert_eq!(a.interval, Duration::from_millis(200));
        assert_eq!(a.tftp.limits.max_blksize, 8192);
        assert_eq!(a.tftp.limits.max_windowsize, 64);
        assert!(a.rate_limit);
        assert_eq!(a.link_bytes_per_sec, Some(40_000_000));
        assert_eq!(a.state_file, None);
    }

    #[test]
    fn the_link_capacity_is_an_optional_cap_and_the_state_file_is_relative() {
        let text = ALTERNATE
            .replace("link_bytes_per_sec = 40000000\nrate_limit = true\n", "")
            .replace(
                "[alternate]\n",
                "[alternate]\nstate_file = \"alt1.state\"\n",
            );
        let (dir, c) = with_key(&text);
        let a = c.unwrap().alternate().unwrap();
        assert_eq!((a.link_bytes_per_sec, a.rate_limit), (None, false));
        assert_eq!(a.state_file, Some(dir.path().join("alt1.state")));
        let text = ALTERNATE.replace("link_bytes_per_sec = 40000000\n", "");
        let err = with_key(&text).1.unwrap().alternate().unwrap_err();
        assert!(err.to_string().contains("alternate.rate_limit"), "{err}");
    }

    #[test]
    fn reads_a_central_with_policy() {
        let text = r#"key_file = "report.key"
[central]
report_listen = "127.0.0.1:7411"
ordering = "static"
allow = ["alt1", "alt2"]
subnet_costs = ["10.0.1.0/24 alt1 0", "10.0.2.0/24 alt1 200"]
expected_digest = "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"
"#;
        let (_dir, c) = with_key(text);
        let c = c.unwrap().central().unwrap();
        assert_eq!(c.policy.order, ListOrder::Static);
        assert_eq!(c.policy.allow.as_deref().unwrap(), ["alt1", "alt2"]);
        assert_eq!(c.policy.subnet_costs[1].percent, 200);
        assert_eq!(c.policy.expected_digest, Some([0xAB; 32]));
        assert_eq!(c.report_listen, "127.0.0.1:7411".parse().unwrap());
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            ("key_file = \"report.key\"\n[tftp]\nblksize_max = 5\n", "config line 3: key `tftp.blksize_max`: unknown key; did you mean `tftp.max_blksize`?"),
            ("key_file = \"report.key\"\n[alternate]\nid = \"a\"\ncentrals = [\"nonsense\"]\nroot = \"r\"\n", "config line 4: key `alternate.centrals`: \"nonsense\" is not"),
            ("[tftp]\nmax_blksize = \"big\"\n", "config line 2: key `tftp.max_blksize`: want a whole number"),
            ("key_file = \"report.key\"\n[tftp]\nmax_blksize = 4\n[alternate]\nid = \"a\"\ncentrals = [\"1.2.3.4:5\"]\nroot = \"r\"\n", "config line 3: key `tftp.max_blksize`: 4 is out of range 8..=65464"),
        ];
        for (text, want) in cases {
            let (_dir, c) = with_key(text);
            let err = c.and_then(|c| c.alternate().map(|_| ())).unwrap_err();
            assert!(err.0.starts_with(want), "{err}\nwant: {want}");
        }
    }

    #[test]
    fn missing_key_file_is_named() {
        let (_dir, c) = with_key("key_file = \"nope.key\"\n[central]\n");
        let err = c.unwrap().central().unwrap_err();
        assert!(
            err.0
                .starts_with("config line 1: key `key_file`: cannot read"),
            "{err}"
        );
        let (_dir, c) = with_key("[central]\nordering = \"load\"\n");
        let err = c.unwrap().central().unwrap_err();
        assert_eq!(
            err.0,
            "config: key `key_file`: missing (the pre-shared report key)"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (_dir, c) = with_key("key_file = \"report.key\"\nx = = 1\n");
        assert!(c.unwrap_err().0.starts_with("config line 2: "));
        // Arrays of tables are not part of the subset: refused by name.
        let (_dir, c) = with_key("[[alternates]]\nid = \"a\"\n");
        assert!(c.unwrap_err().0.contains("key `alternates`: unknown key"));
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let (_dir, c) = with_key(ALTERNATE);
        let mut c = c.unwrap();
        c.set(&[
            "alternate.id=alt9".into(),
            "alternate.interval_ms=50".into(),
            "alternate.centrals=127.0.0.9:1,127.0.0.9:2".into(),
        ])
        .unwrap();
        let a = c.alternate().unwrap();
        assert_eq!((a.id.as_str(), a.interval.as_millis()), ("alt9", 50));
        assert_eq!(a.centrals[1], "127.0.0.9:2".parse().unwrap());
        assert!(c.set(&["alternate.nope=1".into()]).is_err());
        assert!(c.set(&["alternate.interval_ms=soon".into()]).is_err());
    }

    #[test]
    fn subnet_cost_syntax() {
        assert!(parse_subnet_cost("10.0.0.0/8 a 5").is_ok());
        for bad in [
            "10.0.0.0 a 5",
            "10.0.0.0/33 a 5",
            "10.0.0.0/8 a",
            "10.0.0.0/8 a x",
            "x/8 a 1",
        ] {
            assert!(parse_subnet_cost(bad).is_err(), "{bad}");
        }
    }
}
