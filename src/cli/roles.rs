//! `bootherd central` and `bootherd alternate`: the two server roles, from one config file.

use std::path::PathBuf;

use super::args::Args;
use super::CliError;
use crate::config::{Config, ConfigError};

pub const CENTRAL_USAGE: &str = "\
Usage: bootherd central --config FILE [--set SECTION.KEY=VALUE]...

Runs the central boot server: the report listener and ordering daemon, and TFTP for the NBP
files and the alternate list (bootherd/alternates.txt, bootherd/alternates.ipxe), generated
for every request from the alternates' live load. The config format is in the README.

Options:
  --config FILE          config file (the [central] section and key_file)
  --set KEY=VALUE        override a key of the file, e.g. --set central.ordering=static
  -h, --help             this help
  -V, --version          print the version
";

pub const ALTERNATE_USAGE: &str = "\
Usage: bootherd alternate --config FILE [--set SECTION.KEY=VALUE]...

Runs an alternate boot server: TFTP for the boot files and per-client config files
(bootherd.cfg/UUID/MAC/ARCH), and the load monitor that reports to every configured central.
SIGTERM or SIGINT: send a \"leaving\" report and stop. SIGUSR1: toggle draining.

Options:
  --config FILE          config file (the [alternate] section and key_file)
  --set KEY=VALUE        override a key of the file, e.g. --set alternate.id=alt2
  -h, --help             this help
  -V, --version          print the version
";

fn load(args: &mut Args) -> Result<Config, CliError> {
    let path: PathBuf = args.required(&["--config"])?;
    let overrides = args.values(&["--set"])?;
    let mut config = Config::load(&path).map_err(config_error)?;
    config.set(&overrides).map_err(config_error)?;
    Ok(config)
}

/// Config problems are usage errors (exit 2), printed as they are.
fn config_error(e: ConfigError) -> CliError {
    CliError::Usage(super::args::UsageError(e.0))
}

pub fn central(mut args: Args) -> Result<(), CliError> {
    let config = load(&mut args)?;
    args.finish()?;
    let central = config.central().map_err(config_error)?;
    let user = config.user().map_err(config_error)?;
    crate::central::run(central, user.as_deref()).map_err(CliError::Failed)
}

pub fn alternate(mut args: Args) -> Result<(), CliError> {
    let config = load(&mut args)?;
    args.finish()?;
    let alternate = config.alternate().map_err(config_error)?;
    let user = config.user().map_err(config_error)?;
    crate::alternate::run(alternate, user.as_deref()).map_err(CliError::Failed)
}
