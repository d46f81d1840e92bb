//! `bootherd central` and `bootherd alternate`: the two server roles, from one config file.

use std::path::PathBuf;

use super::args::{Args, UsageError};
use super::{say, CliError};
use crate::config::{Config, ConfigError};
use crate::log::{self, Level};
use crate::report::wire::{hex, Key};

pub const CENTRAL_USAGE: &str = "\
Usage: bootherd central --config FILE [--set SECTION.KEY=VALUE]... [--check]

Runs the central boot server: the report listener and ordering daemon, and TFTP for the NBP
files and the alternate list (bootherd/alternates.txt, bootherd/alternates.ipxe), generated
for every request from the alternates' live load. The config format is in the README.

Signals: SIGTERM or SIGINT stop (new requests are refused, transfers in progress get
tftp.shutdown_grace_ms, a second signal ends them at once); SIGHUP re-reads the config (key,
policy, TFTP limits, PXE boot files; addresses and directories need a restart); SIGUSR1 is
ignored.

Options:
  --config FILE          config file (the [central] section and key_file)
  --set KEY=VALUE        override a key of the file, e.g. --set central.ordering=static
  --check                check the config (files, key, addresses) and exit: 0 if it is good
  -h, --help             this help
  -V, --version          print the version
";

pub const ALTERNATE_USAGE: &str = "\
Usage: bootherd alternate --config FILE [--set SECTION.KEY=VALUE]... [--check]

Runs an alternate boot server: TFTP for the boot files and per-client config files
(bootherd.cfg/UUID/MAC/ARCH), and the load monitor that reports to every configured central.

Signals: SIGTERM or SIGINT send a \"leaving\" report, then transfers in progress get
tftp.shutdown_grace_ms to finish (a second signal ends them at once); SIGHUP re-reads the
config (key, centrals, interval, link capacity, TFTP limits, and hashes the boot files again;
id, addresses and root need a restart); SIGUSR1 toggles draining.

Options:
  --config FILE          config file (the [alternate] section and key_file)
  --set KEY=VALUE        override a key of the file, e.g. --set alternate.id=alt2
  --check                check the config (files, key, addresses, boot files) and exit: 0 if
                         it is good
  -h, --help             this help
  -V, --version          print the version
";

/// Where a role's config comes from, so that a reload reads it the same way.
struct Source {
    path: PathBuf,
    overrides: Vec<String>,
}

impl Source {
    fn from_args(args: &mut Args) -> Result<Source, CliError> {
        Ok(Source {
            path: args.required(&["--config"])?,
            overrides: args.values(&["--set"])?,
        })
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path)?;
        config.set(&self.overrides)?;
        Ok(config)
    }
}

/// Config problems are usage errors (exit 2), printed as they are.
fn config_error(e: ConfigError) -> CliError {
    CliError::Usage(UsageError(e.0))
}

/// Reads the config for a start: the role's settings, the account to drop to, the log level,
/// and the config itself (what a reload compares with).
fn start<C>(
    source: &Source,
    role: fn(&Config) -> Result<C, ConfigError>,
) -> Result<(C, Option<String>, Config), CliError> {
    let config = source.load().map_err(config_error)?;
    if let Some(level) = config.log_level().map_err(config_error)? {
        log::set_default_level(level);
    }
    let settings = role(&config).map_err(config_error)?;
    let user = config.user().map_err(config_error)?;
    Ok((settings, user, config))
}

/// What re-reads the config for a reload, and says which of [`crate::config::RESTART_KEYS`]
/// changed since the start (the role keeps their old values). A process that dropped root
/// keeps the key it read at the start when it cannot read the key file any more (a key file
/// only root may read).
fn reloader<C>(
    source: Source,
    started: Config,
    role: fn(&Config) -> Result<C, ConfigError>,
    key_of: fn(&C) -> &Key,
    mut key: Key,
) -> impl FnMut() -> Result<C, String> {
    move || {
        let mut config = source.load().map_err(|e| e.0)?;
        if let (Err(e), Some(user)) = (config.key(), started.user().ok().flatten()) {
            log::warning!("{e}; running as {user}, the key read at the start stays");
            config.set_key(key.clone());
        }
        let level = config.log_level().map_err(|e| e.0)?;
        config.user().map_err(|e| e.0)?;
        let settings = role(&config).map_err(|e| e.0)?;
        log::set_default_level(level.unwrap_or(Level::Info));
        let restart = started.needs_restart(&config);
        if !restart.is_empty() {
            log::warning!(
                "{} changed but need a restart; running with the old values",
                restart.join(", ")
            );
        }
        key = key_of(&settings).clone();
        Ok(settings)
    }
}

/// Items as "a, b, c".
fn joined<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn central(mut args: Args) -> Result<(), CliError> {
    let source = Source::from_args(&mut args)?;
    let check = args.flag(&["--check"]);
    args.finish()?;
    let (central, user, started) = start(&source, Config::central)?;
    if check {
        say!(
            "{}: OK: central, TFTP on {} (NBP files: {}), reports on {}, PXE on {}",
            source.path.display(),
            central.tftp_listen,
            central
                .tftp_root
                .as_ref()
                .map_or("none".into(), |r| r.display().to_string()),
            central.report_listen,
            central.pxe.as_ref().map_or("no interface".into(), |p| {
                joined(
                    p.interfaces
                        .iter()
                        .map(|i| format!("{} {}", i.binding, i.address)),
                )
            }),
        );
        return Ok(());
    }
    let key = central.key.clone();
    let reload = reloader(source, started, Config::central, |c| &c.key, key);
    crate::central::run(central, user.as_deref(), reload).map_err(CliError::Failed)
}

pub fn alternate(mut args: Args) -> Result<(), CliError> {
    let source = Source::from_args(&mut args)?;
    let check = args.flag(&["--check"]);
    args.finish()?;
    let (alternate, user, started) = start(&source, Config::alternate)?;
    if check {
        let advertise = match alternate.advertise.is_empty() {
            true => {
                crate::alternate::default_advertise(alternate.tftp_listen, alternate.centrals[0])
                    .map_err(CliError::Failed)?
                    .to_string()
            }
            false => joined(&alternate.advertise),
        };
        let digest = crate::report::monitor::digest_dir(&alternate.root).map_err(|e| {
            CliError::Failed(format!("cannot hash {}: {e}", alternate.root.display()))
        })?;
        say!(
            "{}: OK: alternate {}, TFTP on {}, clients told to use {advertise}, boot files digest {}, reporting to {}",
            source.path.display(),
            alternate.id,
            alternate.tftp_listen,
            hex(&digest),
            joined(&alternate.centrals)
        );
        return Ok(());
    }
    let key = alternate.key.clone();
    let reload = reloader(source, started, Config::alternate, |c| &c.key, key);
    crate::alternate::run(alternate, user.as_deref(), reload).map_err(CliError::Failed)
}
