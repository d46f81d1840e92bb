//! The config file of both roles: a TOML subset read with nanoserde.
//!
//! Accepted, one item per line: `[section]` headers; `key = value` with a bare key (letters,
//! digits, `_`, `-`) and a value that is a string in double quotes (no escapes), a whole
//! decimal number (`_` between digits allowed), `true`/`false`, or an array of such strings
//! (it may span lines, a trailing comma is fine); `#` comments; a UTF-8 byte order mark at the
//! start is ignored. Everything else of TOML is refused with a message that names it (single
//! quotes, escapes, hex, octal, binary and floating-point numbers, dates, inline tables,
//! dotted or quoted keys, `[[arrays of tables]]`), and so are a section or a key given twice.
//! Every error names where the value came from: `FILE line 12: key \`x\`: ...`, or
//! `--set x: ...` for a command-line override.
//!
//! ```toml
//! key_file = "/etc/bootherd/report.key"   # pre-shared report key, at least 16 bytes
//! key_credential = "report.key"           # or: a systemd credential (LoadCredential=)
//! user = "nobody"                         # drop root after binding (optional)
//! log = "info"                            # off, warn, info, debug (BOOTHERD_LOG wins)
//!
//! [tftp]                                  # both roles
//! max_blksize = 1468
//! max_windowsize = 64
//! max_transfers = 512
//! timeout_ms = 1000
//! retries = 5
//! single_port = false
//! shutdown_grace_ms = 10000               # SIGTERM: transfers get this long to finish
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
//! metrics_listen = "127.0.0.1:9669"       # optional: Prometheus metrics at GET /metrics
//!
//! [pxe]                                   # central: proxyDHCP (67) and discovery (4011)
//! interfaces = ["eth0 10.0.0.1"]          # "INTERFACE ADDRESS"; * = any, - = the address only
//! proxy = true                            # false: 4011 only (DHCP server on the same host)
//! menu = "Boot through bootherd"          # optional PXE menu (full discovery)
//! backup_centrals = ["10.0.0.2"]          # announced to clients for when this one dies
//! boot_efi_x64 = "bootherd-x64.efi"       # also boot_bios, boot_efi_ia32, boot_efi_arm32,
//!                                         # boot_efi_arm64, boot_ipxe
//! boot_http_x64 = "ipxe.efi"              # UEFI HTTP boot: this file on the best alternate
//!                                         # with HTTP (also boot_http_arm64; unset: not served)
//!
//! [alternate]
//! id = "alt1"
//! tftp_listen = "0.0.0.0:69"
//! advertise = ["10.0.0.11:69"]            # what clients should use [default: this host's
//!                                         # address towards the first central]
//! root = "/srv/bootherd/boot"
//! link_bytes_per_sec = 125000000         # optional cap on the capacity it learns
//! rate_limit = false                      # cap sending at link_bytes_per_sec
//! state_file = "/var/lib/bootherd/alternate.state"  # boot count, learned capacity
//! centrals = ["10.0.0.1:7411", "10.0.0.2:7411"]
//! interval_ms = 1000
//! http_listen = "0.0.0.0:8080"            # optional: boot files over HTTP too
//! http_advertise = ["10.0.0.11:8080"]     # [default: the first advertised address's host,
//!                                         # with the HTTP port]
//! metrics_listen = "127.0.0.1:9670"       # optional: Prometheus metrics at GET /metrics
//!
//! [http]                                  # alternates with http_listen
//! max_connections = 256                   # one more gets 503 at once
//! idle_timeout_ms = 15000                 # between requests
//! request_timeout_ms = 10000              # a whole request head (slowloris)
//! send_timeout_ms = 30000                 # an answer without progress
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoserde::{Toml, TomlParser};

use crate::balance::{ListOrder, Policy, SubnetCost};
use crate::http::exchange::Timeouts;
use crate::http::server::HttpSettings;
use crate::log::{self, Level};
use crate::pxe::responder::{BootFiles, PxeConfig};
use crate::pxe::server::{Binding, Interface, PxeSettings};
use crate::report::wire::{from_hex, Key};
use crate::tftp::options::{Limits, BLKSIZE_RANGE};
use crate::tftp::server::ServerConfig;
use crate::tftp::transfer::Retransmit;

/// Default UDP port of the report listener.
pub const DEFAULT_REPORT_PORT: u16 = 7411;
/// Default time transfers in progress get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The environment variable systemd sets to the directory of the service's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Every key the file may have, with what it holds.
const SCHEMA: &[(&str, Kind)] = &[
    ("key_file", Kind::Str),
    ("key_credential", Kind::Str),
    ("user", Kind::Str),
    ("log", Kind::Str),
    ("tftp.max_blksize", Kind::Int),
    ("tftp.max_windowsize", Kind::Int),
    ("tftp.max_transfers", Kind::Int),
    ("tftp.timeout_ms", Kind::Int),
    ("tftp.retries", Kind::Int),
    ("tftp.single_port", Kind::Bool),
    ("tftp.shutdown_grace_ms", Kind::Int),
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
    ("alternate.http_listen", Kind::Str),
    ("alternate.http_advertise", Kind::StrList),
    ("http.max_connections", Kind::Int),
    ("http.idle_timeout_ms", Kind::Int),
    ("http.request_timeout_ms", Kind::Int),
    ("http.send_timeout_ms", Kind::Int),
    ("pxe.boot_http_x64", Kind::Str),
    ("pxe.boot_http_arm64", Kind::Str),
    ("central.metrics_listen", Kind::Str),
    ("alternate.metrics_listen", Kind::Str),
];

/// Keys that a running role cannot change without binding sockets again or reopening its
/// directories: a reload keeps their running values (and says which changed).
pub const RESTART_KEYS: &[&str] = &[
    "user",
    "tftp.single_port",
    "central.tftp_listen",
    "central.tftp_root",
    "central.report_listen",
    "pxe.interfaces",
    "pxe.proxy",
    "pxe.proxy_port",
    "pxe.discovery_port",
    "alternate.id",
    "alternate.tftp_listen",
    "alternate.advertise",
    "alternate.root",
    "alternate.rate_limit",
    "alternate.state_file",
    "alternate.http_listen",
    "alternate.http_advertise",
    "central.metrics_listen",
    "alternate.metrics_listen",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    StrList,
}

/// A config problem, ready to print: `central.toml line 12: key \`x\`: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// A line of the file (from 1).
    Line(usize),
    /// A `--set` on the command line.
    Set,
}

/// The parsed file plus overrides, with typed, located access.
#[derive(Debug)]
pub struct Config {
    /// How errors name the file: its path, or "config" for text without one.
    name: String,
    values: BTreeMap<String, Toml>,
    /// Where each key's value came from, latest first (a few dozen keys: a list will do).
    origins: Vec<(String, Origin)>,
    base_dir: PathBuf,
    /// A key to use instead of reading one (see [`Config::set_key`]).
    key: Option<Key>,
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
    /// How long transfers in progress may go on after SIGTERM.
    pub shutdown_grace: Duration,
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
    /// Where to serve metrics (none: no metrics endpoint).
    pub metrics_listen: Option<SocketAddr>,
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
    /// Addresses for clients (empty: this host's address towards the first central, with the
    /// TFTP port; see [`crate::alternate::default_advertise`]).
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
    /// HTTP service, when `http_listen` is set.
    pub http: Option<HttpSettings>,
    /// HTTP addresses for clients (empty: the first TFTP address's host with the HTTP port).
    pub http_advertise: Vec<SocketAddr>,
    /// Where to serve metrics (none: no metrics endpoint).
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// Reads a file; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::parse_named(&path.display().to_string(), &text, &base_dir)
    }

    /// Parses config text (errors call it "config").
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::parse_named("config", text, base_dir)
    }

    fn parse_named(name: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let at_line = |line: usize, why: &str| ConfigError(format!("{name} line {line}: {why}"));
        let origins = scan(text).map_err(|(line, why)| at_line(line, &why))?;
        // The scan has checked the subset; nanoserde turns it into values.
        let values = TomlParser::parse(text).map_err(|e| at_line(e.line + 1, e.msg.trim()))?;
        let config = Config {
            name: name.to_string(),
            values,
            origins,
            base_dir: base_dir.to_path_buf(),
            key: None,
        };
        for (key, value) in &config.values {
            let Some(&(_, kind)) = SCHEMA.iter().find(|(k, _)| k == key) else {
                return Err(config.error(key, &format!("unknown key{}", did_you_mean(key))));
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
                return Err(ConfigError(format!(
                    "--set {key}: unknown key{}",
                    did_you_mean(key)
                )));
            };
            let bad = |want: &str| ConfigError(format!("--set {key}: {raw:?} is not {want}"));
            let value = match kind {
                Kind::Int => Toml::Num(
                    raw.replace('_', "")
                        .parse::<u64>()
                        .map_err(|_| bad("a whole number"))? as f64,
                ),
                Kind::Bool => Toml::Bool(raw.parse().map_err(|_| bad("true or false"))?),
                Kind::Str => Toml::Str(raw.to_string()),
                Kind::StrList => Toml::SimpleArray(
                    raw.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| Toml::Str(s.trim().to_string()))
                        .collect(),
                ),
            };
            self.values.insert(key.to_string(), value);
            self.origins.insert(0, (key.to_string(), Origin::Set));
        }
        Ok(())
    }

    /// The keys of [`RESTART_KEYS`] that `newer` sets differently.
    pub fn needs_restart(&self, newer: &Config) -> Vec<&'static str> {
        RESTART_KEYS
            .iter()
            .copied()
            .filter(|key| self.values.get(*key) != newer.values.get(*key))
            .collect()
    }

    /// The central's settings, with its directories, key and addresses checked.
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
        let tftp_root = self.dir("central.tftp_root")?;
        let pxe = self.pxe()?;
        if let (Some(root), Some(pxe)) = (&tftp_root, &pxe) {
            self.warn_missing_boot_files(root, &pxe.responder.boot_files);
        }
        Ok(CentralConfig {
            key: self.key()?,
            tftp: self.tftp()?,
            tftp_listen: self
                .listen_addr("central.tftp_listen")?
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 69))),
            tftp_root,
            report_listen: self
                .listen_addr("central.report_listen")?
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
            pxe,
            metrics_listen: self.listen_addr("central.metrics_listen")?,
        })
    }

    /// Boot files named in `[pxe]` that the central cannot serve: a warning, not an error (a
    /// site may start the central before copying them, or boot only some kinds of client).
    fn warn_missing_boot_files(&self, root: &Path, files: &BootFiles) {
        for (key, name) in [
            ("pxe.boot_bios", &files.bios),
            ("pxe.boot_efi_ia32", &files.efi_ia32),
            ("pxe.boot_efi_x64", &files.efi_x64),
            ("pxe.boot_efi_arm32", &files.efi_arm32),
            ("pxe.boot_efi_arm64", &files.efi_arm64),
        ] {
            if self.values.contains_key(key) && !root.join(name).is_file() {
                log::warning!(
                    "{}: {name:?} is not in tftp_root {}: clients that get it will fail",
                    self.locate(key),
                    root.display()
                );
            }
        }
    }

    fn pxe(&self) -> Result<Option<PxeSettings>, ConfigError> {
        let Some(entries) = self.list("pxe.interfaces")? else {
            return Ok(None);
        };
        let interfaces = entries
            .iter()
            .map(|entry| self.pxe_interface(entry))
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
            http_x64: self.str("pxe.boot_http_x64")?,
            http_arm64: self.str("pxe.boot_http_arm64")?,
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

    /// `"INTERFACE ADDRESS"`: the interface must exist and the address must be this host's.
    fn pxe_interface(&self, entry: &str) -> Result<Interface, ConfigError> {
        let key = "pxe.interfaces";
        let bad = || {
            self.error(
                key,
                &format!("{entry:?}: want \"INTERFACE ADDRESS\" (INTERFACE may be * or -)"),
            )
        };
        let (name, address) = entry.split_once(' ').ok_or_else(bad)?;
        let address: Ipv4Addr = address.trim().parse().map_err(|_| bad())?;
        let binding = match name {
            "*" => Binding::Any,
            "-" => Binding::Address,
            name => {
                if Path::new("/sys/class/net").is_dir()
                    && !Path::new("/sys/class/net").join(name).exists()
                {
                    return Err(self.error(key, &format!("{entry:?}: no interface {name}")));
                }
                Binding::Device(name.to_string())
            }
        };
        self.check_local(key, IpAddr::V4(address))?;
        Ok(Interface { binding, address })
    }

    /// An alternate's settings, with its root, key and addresses checked.
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
        let advertised = |key: &str| -> Result<Vec<SocketAddr>, ConfigError> {
            let list = addrs(key)?;
            if list.len() > crate::report::wire::MAX_ADDRESSES {
                return Err(self.error(key, "at most 4 addresses"));
            }
            if let Some(a) = list
                .iter()
                .find(|a| a.ip().is_unspecified() || a.port() == 0)
            {
                return Err(self.error(key, &format!("{a}: clients need a real address and port")));
            }
            Ok(list)
        };
        let advertise = advertised("alternate.advertise")?;
        let http_advertise = advertised("alternate.http_advertise")?;
        Ok(AlternateConfig {
            key: self.key()?,
            tftp: self.tftp()?,
            id,
            tftp_listen: self
                .listen_addr("alternate.tftp_listen")?
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 69))),
            advertise,
            root: self
                .dir("alternate.root")?
                .ok_or_else(|| self.error("alternate.root", "missing"))?,
            link_bytes_per_sec,
            rate_limit,
            state_file: self.path("alternate.state_file")?,
            centrals,
            interval: Duration::from_millis(
                self.int("alternate.interval_ms", 10, 3_600_000)?
                    .unwrap_or(1000),
            ),
            http: self.http()?,
            http_advertise,
            metrics_listen: self.listen_addr("alternate.metrics_listen")?,
        })
    }

    /// The alternate's HTTP settings, if `alternate.http_listen` is set.
    fn http(&self) -> Result<Option<HttpSettings>, ConfigError> {
        let Some(listen) = self.listen_addr("alternate.http_listen")? else {
            return Ok(None);
        };
        let d = HttpSettings::default();
        let ms = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(self
                .int(key, 1, 3_600_000)?
                .map_or(default, Duration::from_millis))
        };
        Ok(Some(HttpSettings {
            listen,
            max_connections: self
                .int("http.max_connections", 1, 1 << 20)?
                .map_or(d.max_connections, |v| v as usize),
            max_transfers: self.tftp()?.max_transfers,
            timeouts: Timeouts {
                idle: ms("http.idle_timeout_ms", d.timeouts.idle)?,
                request: ms("http.request_timeout_ms", d.timeouts.request)?,
                send: ms("http.send_timeout_ms", d.timeouts.send)?,
            },
        }))
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
            shutdown_grace: self
                .int("tftp.shutdown_grace_ms", 0, 3_600_000)?
                .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis),
        })
    }

    /// The account to drop to after binding, if any; it must exist.
    pub fn user(&self) -> Result<Option<String>, ConfigError> {
        let Some(user) = self.str("user")? else {
            return Ok(None);
        };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        crate::privileges::lookup(&user, &passwd).map_err(|e| self.error("user", &e))?;
        Ok(Some(user))
    }

    /// The log level the file asks for (`log`), if any.
    pub fn log_level(&self) -> Result<Option<Level>, ConfigError> {
        self.str("log")?
            .map(|s| {
                log::parse_level(&s).ok_or_else(|| {
                    self.error("log", &format!("{s:?}: want off, warn, info or debug"))
                })
            })
            .transpose()
    }

    /// Uses `key` instead of reading `key_file` or `key_credential` (a reload by a process
    /// that may no longer read them).
    pub fn set_key(&mut self, key: Key) {
        self.key = Some(key);
    }

    /// The report key: from the systemd credential `key_credential` when the service runs with
    /// credentials (`$CREDENTIALS_DIRECTORY`), else from `key_file`.
    pub fn key(&self) -> Result<Key, ConfigError> {
        self.key_with(std::env::var_os(CREDENTIALS_DIRECTORY).as_deref())
    }

    /// [`Config::key`] with the credentials directory given.
    fn key_with(&self, credentials: Option<&std::ffi::OsStr>) -> Result<Key, ConfigError> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        let credentials = credentials.filter(|d| !d.is_empty());
        let (key, path) = match (self.str("key_credential")?, credentials) {
            (Some(name), Some(dir)) => {
                if name.is_empty() || name.contains('/') {
                    return Err(self.error("key_credential", "a credential name, without /"));
                }
                ("key_credential", Path::new(&dir).join(name))
            }
            (credential, _) => match self.path("key_file")? {
                Some(path) => ("key_file", path),
                None if credential.is_some() => {
                    return Err(self.error(
                        "key_credential",
                        "needs $CREDENTIALS_DIRECTORY (systemd's LoadCredential=); \
                         outside systemd, set key_file too",
                    ))
                }
                None => return Err(self.error("key_file", "missing (the pre-shared report key)")),
            },
        };
        read_key(&path).map_err(|why| self.error(key, &why))
    }

    /// "FILE line N: key `k`" or "--set k": where a key's value came from.
    fn locate(&self, key: &str) -> String {
        match self.origins.iter().find(|(k, _)| k == key).map(|(_, o)| o) {
            Some(Origin::Line(line)) => format!("{} line {line}: key `{key}`", self.name),
            Some(Origin::Set) => format!("--set {key}"),
            None => format!("{}: key `{key}`", self.name),
        }
    }

    /// An error about `key`, saying where its value came from.
    pub fn error(&self, key: &str, why: &str) -> ConfigError {
        ConfigError(format!("{}: {why}", self.locate(key)))
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

    /// An address to listen on: it must be one of this host's (or unspecified).
    fn listen_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        let addr: SocketAddr = s
            .parse()
            .map_err(|e| self.error(key, &format!("{s:?} is not ADDRESS:PORT: {e}")))?;
        self.check_local(key, addr.ip())?;
        Ok(Some(addr))
    }

    /// Whether `ip` is an address of this host: binding it (port 0: no privilege needed) is
    /// refused otherwise.
    fn check_local(&self, key: &str, ip: IpAddr) -> Result<(), ConfigError> {
        match std::net::UdpSocket::bind((ip, 0)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                Err(self.error(key, &format!("{ip} is not an address of this host")))
            }
            _ => Ok(()),
        }
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.str(key)?.map(|s| self.base_dir.join(s)))
    }

    /// A path that must be an existing directory.
    fn dir(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = self.path(key)? else {
            return Ok(None);
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Some(path)),
            Ok(_) => Err(self.error(key, &format!("{} is not a directory", path.display()))),
            Err(e) => Err(self.error(key, &format!("{}: {e}", path.display()))),
        }
    }
}

/// Reads a key file: hex if it is only hex digits (and white space), else its bytes. A file
/// that others may read is used, with a warning: the key signs every report of the site.
pub fn read_key(path: &Path) -> Result<Key, String> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            log::warning!(
                "key {} can be read by other users (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let key = from_hex(&text).unwrap_or(bytes);
    Key::new(&key).map_err(|e| format!("{}: {e}", path.display()))
}

/// "; did you mean `x`?" for a key close to a known one.
fn did_you_mean(key: &str) -> String {
    SCHEMA
        .iter()
        .map(|(k, _)| *k)
        .find(|k| similar(k, key))
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// Checks that `text` keeps to the subset the module documents; returns the line of every key
/// (`section.key`), or the first mistake as (line, message).
fn scan(text: &str) -> Result<Vec<(String, Origin)>, (usize, String)> {
    let mut keys: Vec<(String, Origin)> = Vec::new();
    let mut sections: Vec<(&str, usize)> = Vec::new();
    let mut section = String::new();
    let mut lines = text.lines().enumerate().map(|(n, l)| (n + 1, l));
    while let Some((n, raw)) = lines.next() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if header.starts_with('[') {
                let name = header.trim_matches(|c| c == '[' || c == ']').trim();
                return Err((n, format!("[[{name}]]: arrays of tables are not supported")));
            }
            let name = header
                .strip_suffix(']')
                .ok_or((n, format!("{line}: a section header ends with ]")))?
                .trim();
            check_bare(name).map_err(|why| (n, format!("section [{name}]: {why}")))?;
            if let Some((_, first)) = sections.iter().find(|(s, _)| *s == name) {
                return Err((
                    n,
                    format!(
                        "section [{name}] again (first at line {first}): give each section once"
                    ),
                ));
            }
            sections.push((name, n));
            section = name.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((n, format!("{line:?}: want `key = value` or `[section]`")));
        };
        let key = key.trim();
        check_bare(key).map_err(|why| (n, format!("key {key}: {why}")))?;
        let full = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        let mut value = value.trim().to_string();
        // An array may go on over the next lines until its `]`.
        if value.starts_with('[') {
            while !array_closed(&value) {
                let Some((_, more)) = lines.next() else {
                    return Err((n, format!("key `{full}`: the array has no closing ]")));
                };
                value.push(' ');
                value.push_str(strip_comment(more).trim());
            }
        }
        check_value(&value).map_err(|why| (n, format!("key `{full}`: {why}")))?;
        if let Some((_, Origin::Line(first))) = keys.iter().find(|(k, _)| *k == full) {
            return Err((
                n,
                format!("key `{full}` is set again (first at line {first})"),
            ));
        }
        keys.push((full, Origin::Line(n)));
    }
    Ok(keys)
}

/// The line without its `#` comment (a `#` inside a string is part of the string).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A section or key name: bare, as this subset has them.
fn check_bare(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.starts_with(['"', '\'']) {
        return Err("quoted names are not supported");
    }
    if name.contains('.') {
        return Err("dotted names are not supported: use a [section] and plain keys");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("names are letters, digits, _ and -");
    }
    Ok(())
}

/// Whether an array value (starting with `[`) has its closing `]` outside strings.
fn array_closed(value: &str) -> bool {
    let mut quoted = false;
    value.chars().any(|c| {
        if c == '"' {
            quoted = !quoted;
        }
        c == ']' && !quoted
    })
}

/// Checks one value (an array already joined onto one line).
fn check_value(value: &str) -> Result<(), String> {
    let (first, rest) = match value.strip_prefix('[') {
        Some(items) => return check_array(items),
        None => (value.chars().next().unwrap_or(' '), value),
    };
    match first {
        '"' => check_string(rest).and_then(|tail| match tail.trim() {
            "" => Ok(()),
            extra => Err(format!("unexpected {extra:?} after the string")),
        }),
        '\'' => Err("single-quoted strings are not supported: use double quotes".into()),
        '{' => Err("inline tables are not supported".into()),
        ' ' => Err("no value after =".into()),
        _ if value == "true" || value == "false" => Ok(()),
        _ => check_number(value),
    }
}

/// Checks a string that starts at `s`'s opening quote; returns what follows it.
fn check_string(s: &str) -> Result<&str, String> {
    if s.starts_with("\"\"\"") {
        return Err("multi-line strings are not supported".into());
    }
    let body = &s[1..];
    let end = body
        .find('"')
        .ok_or_else(|| "the string has no closing \"".to_string())?;
    if body[..end].contains('\\') {
        return Err("escapes (\\) are not supported in strings".into());
    }
    Ok(&body[end + 1..])
}

/// Checks the items of an array (after its `[`): strings in double quotes, commas between.
fn check_array(mut items: &str) -> Result<(), String> {
    loop {
        items = items.trim_start();
        if let Some(tail) = items.strip_prefix(']') {
            return match tail.trim() {
                "" => Ok(()),
                extra => Err(format!("unexpected {extra:?} after the array")),
            };
        }
        if !items.starts_with('"') {
            return Err("arrays hold only strings in double quotes".into());
        }
        items = check_string(items)?.trim_start();
        if let Some(tail) = items.strip_prefix(',') {
            items = tail;
        } else if !items.starts_with(']') {
            return Err("want , or ] after an array item".into());
        }
    }
}

/// Checks a number: whole and decimal.
fn check_number(value: &str) -> Result<(), String> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    let lower = digits.to_ascii_lowercase();
    if ["0x", "0o", "0b"].iter().any(|p| lower.starts_with(p)) {
        return Err(format!(
            "{value}: hex, octal and binary numbers are not supported: write it in decimal"
        ));
    }
    if lower == "inf" || lower == "nan" {
        return Err(format!("{value}: want a whole number"));
    }
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{value}: not a value (strings go in double quotes: \"{value}\")"
        ));
    }
    if digits.contains(':') || digits[1..].contains('-') {
        return Err(format!("{value}: dates are not supported"));
    }
    if digits.contains(['.', 'e', 'E']) {
        return Err(format!(
            "{value}: fractions are not supported: want a whole number"
        ));
    }
    let separated_digits = digits.split('_').all(|g| !g.is_empty())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !separated_digits {
        return Err(format!("{value}: not a number"));
    }
    Ok(())
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

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff\n";

    /// A directory with `report.key` and `boot/`, and `text` parsed there.
    fn with_key(text: &str) -> (TempDir, Result<Config, ConfigError>) {
        let dir = TempDir::new("config");
        std::fs::write(dir.path().join("report.key"), KEY_HEX).unwrap();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        let parsed = Config::parse(text, dir.path());
        (dir, parsed)
    }

    fn parse_error(text: &str) -> String {
        with_key(text).1.unwrap_err().0
    }

    const ALTERNATE: &str = r#"key_file = "report.key"

[tftp]
max_blksize = 8192

[alternate]
id = "alt1"
tftp_listen = "127.0.0.11:6901"
root = "boot"
link_bytes_per_sec = 40_000_000
rate_limit = true
centrals = [
    "127.0.0.1:7411",   # primary
    "127.0.0.2:7411",
]
interval_ms = 200
"#;

    #[test]
    fn reads_an_alternate() {
        let (dir, c) = with_key(ALTERNATE);
        let a = c.unwrap().alternate().unwrap();
        assert_eq!(a.id, "alt1");
        assert_eq!(a.root, dir.path().join("boot"));
        assert_eq!(a.centrals.len(), 2);
        assert_eq!(a.link_bytes_per_sec, Some(40_000_000));
        assert_eq!(a.interval, Duration::from_millis(200));
        assert_eq!(a.tftp.limits.max_blksize, 8192);
        assert_eq!(a.tftp.limits.max_windowsize, 64);
        assert_eq!(a.tftp.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert!(a.rate_limit);
        assert_eq!(a.link_bytes_per_sec, Some(40_000_000));
        assert_eq!(a.state_file, None);
    }

    #[test]
    fn the_link_capacity_is_an_optional_cap_and_the_state_file_is_relative() {
        let text = ALTERNATE
            .replace("link_bytes_per_sec = 40_000_000\nrate_limit = true\n", "")
            .replace(
                "[alternate]\n",
                "[alternate]\nstate_file = \"alt1.state\"\n",
            );
        let (dir, c) = with_key(&text);
        let a = c.unwrap().alternate().unwrap();
        assert_eq!((a.link_bytes_per_sec, a.rate_limit), (None, false));
        assert_eq!(a.state_file, Some(dir.path().join("alt1.state")));
        let text = ALTERNATE.replace("link_bytes_per_sec = 40_000_000\n", "");
        let err = with_key(&text).1.unwrap().alternate().unwrap_err();
        assert!(err.to_string().contains("alternate.rate_limit"), "{err}");
    }

    #[test]
    fn reads_a_central_with_policy() {
        let text = r#"key_file = "report.key"
log = "debug"
[central]
report_listen = "127.0.0.1:7411"
ordering = "static"
allow = ["alt1", "alt2"]
subnet_costs = ["10.0.1.0/24 alt1 0", "10.0.2.0/24 alt1 200"]
expected_digest = "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"
"#;
        let (_dir, c) = with_key(text);
        let config = c.unwrap();
        assert_eq!(config.log_level().unwrap(), Some(Level::Debug));
        let c = config.central().unwrap();
        assert_eq!(c.policy.order, ListOrder::Static);
        assert_eq!(c.policy.allow.as_deref().unwrap(), ["alt1", "alt2"]);
        assert_eq!(c.policy.subnet_costs[1].percent, 200);
        assert_eq!(c.policy.expected_digest, Some([0xAB; 32]));
        assert_eq!(c.report_listen, "127.0.0.1:7411".parse().unwrap());
        assert_eq!(c.metrics_listen, None, "off unless asked for");
        let mut config = config;
        config
            .set(&["central.metrics_listen=127.0.0.1:9669".into()])
            .unwrap();
        let c = config.central().unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9669".parse().unwrap()));
        config
            .set(&["central.metrics_listen=192.0.2.1:9669".into()])
            .unwrap();
        let err = config.central().unwrap_err().to_string();
        assert!(err.contains("central.metrics_listen"), "{err}");
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            ("key_file = \"report.key\"\n[tftp]\nblksize_max = 5\n", "config line 3: key `tftp.blksize_max`: unknown key; did you mean `tftp.max_blksize`?"),
            ("key_file = \"report.key\"\n[alternate]\nid = \"a\"\ncentrals = [\"nonsense\"]\nroot = \"boot\"\n", "config line 4: key `alternate.centrals`: \"nonsense\" is not"),
            ("[tftp]\nmax_blksize = \"big\"\n", "config line 2: key `tftp.max_blksize`: want a whole number"),
            ("key_file = \"report.key\"\n[tftp]\nmax_blksize = 4\n[alternate]\nid = \"a\"\ncentrals = [\"1.2.3.4:5\"]\nroot = \"boot\"\n", "config line 3: key `tftp.max_blksize`: 4 is out of range 8..=65464"),
            ("key_file = \"report.key\"\n[alternate]\nid = \"a\"\ncentrals = [\"1.2.3.4:5\"]\nroot = \"nowhere\"\n", "config line 5: key `alternate.root`: "),
            ("key_file = \"report.key\"\n[alternate]\nid = \"a\"\ncentrals = [\"1.2.3.4:5\"]\nroot = \"report.key\"\n", "config line 5: key `alternate.root`: "),
            ("key_file = \"report.key\"\n[alternate]\nid = \"a\"\ncentrals = [\"1.2.3.4:5\"]\nroot = \"boot\"\ntftp_listen = \"192.0.2.1:69\"\n", "config line 6: key `alternate.tftp_listen`: 192.0.2.1 is not an address of this host"),
            ("key_file = \"report.key\"\n[alternate]\nid = \"a\"\ncentrals = [\"1.2.3.4:5\"]\nroot = \"boot\"\nadvertise = [\"0.0.0.0:69\"]\n", "config line 6: key `alternate.advertise`: 0.0.0.0:69: clients need"),
        ];
        for (text, want) in cases {
            let (_dir, c) = with_key(text);
            let err = c.and_then(|c| c.alternate().map(|_| ())).unwrap_err();
            assert!(err.0.starts_with(want), "{err}\nwant: {want}");
        }
        let (_dir, c) = with_key("key_file = \"report.key\"\n[central]\ntftp_root = \"nbp\"\n");
        let err = c.unwrap().central().unwrap_err();
        assert!(
            err.0
                .starts_with("config line 3: key `central.tftp_root`: "),
            "{err}"
        );
        let (_dir, c) = with_key("key_file = \"report.key\"\nlog = \"loud\"\n");
        assert_eq!(
            c.unwrap().log_level().unwrap_err().0,
            "config line 2: key `log`: \"loud\": want off, warn, info or debug"
        );
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
    fn key_files_are_read_whatever_their_path() {
        use crate::report::wire::{decode, encode, Message, StatusRequest};
        // A quote or backslash in a path must not matter (the key is never put into config
        // text), and the key is the file's hex, or its bytes when it is not hex.
        let dir = TempDir::new("key path");
        let odd = dir.path().join("a \"quoted\" \\ dir");
        std::fs::create_dir_all(&odd).unwrap();
        let raw = b"sixteen raw bytes, not hex";
        for (name, contents, bytes) in [
            (
                "hex.key",
                KEY_HEX.as_bytes(),
                &from_hex(KEY_HEX).unwrap()[..],
            ),
            ("raw.key", &raw[..], &raw[..]),
        ] {
            let path = odd.join(name);
            std::fs::write(&path, contents).unwrap();
            let read = read_key(&path).unwrap();
            let signed = encode(
                &Message::StatusRequest(StatusRequest {
                    nonce: 1,
                    unix_ms: 2,
                }),
                &read,
            )
            .unwrap();
            assert!(decode(&signed, &Key::new(bytes).unwrap()).is_ok(), "{name}");
        }
        let missing = odd.join("missing.key");
        let err = read_key(&missing).err().unwrap();
        assert!(
            err.starts_with(&format!("cannot read {}", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn key_from_a_systemd_credential() {
        let (dir, c) = with_key("key_credential = \"site.key\"\nkey_file = \"report.key\"\n");
        let c = c.unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        // Outside systemd: key_file.
        assert!(c.key_with(None).is_ok());
        // Under systemd: the credential, and only it.
        let err = c.key_with(Some(creds.as_os_str())).unwrap_err();
        assert!(
            err.0
                .starts_with("config line 1: key `key_credential`: cannot read"),
            "{err}"
        );
        std::fs::write(creds.join("site.key"), KEY_HEX).unwrap();
        assert!(c.key_with(Some(creds.as_os_str())).is_ok());
        let (_dir, c) = with_key("key_credential = \"site.key\"\n");
        let err = c.unwrap().key_with(None).unwrap_err();
        assert!(err.0.contains("needs $CREDENTIALS_DIRECTORY"), "{err}");
    }

    #[test]
    fn duplicates_are_errors() {
        assert_eq!(
            parse_error("[tftp]\nretries = 1\n\nretries = 2\n"),
            "config line 4: key `tftp.retries` is set again (first at line 2)"
        );
        assert_eq!(
            parse_error("[tftp]\nretries = 1\n[central]\n[tftp]\n"),
            "config line 4: section [tftp] again (first at line 1): give each section once"
        );
        // The same key name in two sections is two keys.
        let (_dir, c) = with_key("[central]\ntftp_listen = \"127.0.0.1:69\"\n[alternate]\ntftp_listen = \"127.0.0.1:70\"\n");
        assert!(c.is_ok());
    }

    #[test]
    fn unsupported_toml_is_named_with_line_and_key() {
        for (text, want) in [
            ("log = 'info'\n", "config line 1: key `log`: single-quoted strings are not supported"),
            ("[tftp]\nretries = 0x10\n", "config line 2: key `tftp.retries`: 0x10: hex, octal and binary"),
            ("[tftp]\n\nretries = 1.5\n", "config line 3: key `tftp.retries`: 1.5: fractions are not supported"),
            ("[tftp]\nretries = 1e3\n", "config line 2: key `tftp.retries`: 1e3: fractions"),
            ("[tftp]\nretries = 1979-05-27\n", "config line 2: key `tftp.retries`: 1979-05-27: dates"),
            ("[pxe]\nmenu = \"a\\tb\"\n", "config line 2: key `pxe.menu`: escapes"),
            ("[pxe]\nmenu = \"\"\"x\"\"\"\n", "config line 2: key `pxe.menu`: multi-line strings"),
            ("[pxe]\nmenu = {a = 1}\n", "config line 2: key `pxe.menu`: inline tables"),
            ("[central]\nordering = load\n", "config line 2: key `central.ordering`: load: not a value (strings go in double quotes: \"load\")"),
            ("[central]\nallow = [\"a\", 1]\n", "config line 2: key `central.allow`: arrays hold only strings"),
            ("[central]\nallow = [\"a\"\n", "config line 2: key `central.allow`: the array has no closing ]"),
            ("[central]\nallow = \"a\" \"b\"\n", "config line 2: key `central.allow`: unexpected \"\\\"b\\\"\" after the string"),
            ("\n[[central]]\n", "config line 2: [[central]]: arrays of tables are not supported"),
            ("[central.pxe]\n", "config line 1: section [central.pxe]: dotted names"),
            ("tftp.retries = 1\n", "config line 1: key tftp.retries: dotted names"),
            ("\"log\" = \"info\"\n", "config line 1: key \"log\": quoted names"),
            ("log\n", "config line 1: \"log\": want `key = value` or `[section]`"),
            ("log =\n", "config line 1: key `log`: no value after ="),
        ] {
            let err = parse_error(text);
            assert!(err.starts_with(want), "{text:?}: {err}\nwant: {want}");
        }
    }

    #[test]
    fn byte_order_mark_and_comments_are_fine() {
        let (_dir, c) = with_key("\u{feff}key_file = \"report.key\" # the key\n[pxe] # PXE\nmenu = \"# not a comment\"\n");
        let c = c.unwrap();
        assert!(c.key().is_ok());
        assert_eq!(
            c.str("pxe.menu").unwrap().as_deref(),
            Some("# not a comment")
        );
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
        assert_eq!(
            c.set(&["alternate.nope=1".into()]).unwrap_err().0,
            "--set alternate.nope: unknown key"
        );
        assert_eq!(
            c.set(&["alternate.interval_ms=soon".into()]).unwrap_err().0,
            "--set alternate.interval_ms: \"soon\" is not a whole number"
        );
        // A bad value given with --set is blamed on --set, not on the file's line.
        c.set(&["tftp.max_blksize=4".into()]).unwrap();
        assert_eq!(
            c.alternate().unwrap_err().0,
            "--set tftp.max_blksize: 4 is out of range 8..=65464"
        );
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
