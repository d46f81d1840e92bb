//! The multi-call command line: `bootherd SUBCOMMAND ...`, or a link named `bootherd-SUBCOMMAND`.
//!
//! Exit codes: 0 success, 1 the work failed (network, remote error, I/O), 2 usage or
//! configuration error.

pub mod args;
mod client;
mod fetch;
mod report;
mod roles;
mod tftp;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use args::{Args, UsageError};

/// How a subcommand failed.
#[derive(Debug)]
pub enum CliError {
    /// Wrong arguments (exit 2).
    Usage(UsageError),
    /// The work failed (exit 1).
    Failed(String),
    /// Whoever read stdout stopped (`head`, `grep -q`): stop quietly, as ripgrep does (exit 0).
    StdoutClosed,
}

/// `println!` that ends the command with [`CliError::StdoutClosed`] instead of panicking when
/// stdout is closed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            return Err($crate::cli::CliError::StdoutClosed);
        }
    }};
}
pub(crate) use say;

impl From<UsageError> for CliError {
    fn from(e: UsageError) -> Self {
        CliError::Usage(e)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(e) => write!(f, "{e}"),
            CliError::Failed(e) => f.write_str(e),
            CliError::StdoutClosed => f.write_str("stdout closed"),
        }
    }
}

struct Command {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    run: fn(Args) -> Result<(), CliError>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "demo",
        summary: "the whole system on loopback: centrals, alternates, a boot storm",
        usage: client::DEMO_USAGE,
        run: client::demo,
    },
    Command {
        name: "central",
        summary: "central boot server: ordering daemon, reports, TFTP with the alternate list",
        usage: roles::CENTRAL_USAGE,
        run: roles::central,
    },
    Command {
        name: "alternate",
        summary: "alternate boot server: TFTP for boot files plus the load monitor",
        usage: roles::ALTERNATE_USAGE,
        run: roles::alternate,
    },
    Command {
        name: "report",
        summary: "send, watch or mark load reports; boot-file digest; key generation",
        usage: report::REPORT_USAGE,
        run: report::report,
    },
    Command {
        name: "status",
        summary: "a central's live table and current order",
        usage: report::STATUS_USAGE,
        run: report::status,
    },
    Command {
        name: "client",
        summary: "simulated boot clients (one, or a storm)",
        usage: client::CLIENT_USAGE,
        run: client::client,
    },
    Command {
        name: "tftp",
        summary: "read-only TFTP server",
        usage: tftp::USAGE,
        run: tftp::run,
    },
    Command {
        name: "fetch",
        summary: "download a file over TFTP",
        usage: fetch::USAGE,
        run: fetch::run,
    },
];

const VERSION: &str = concat!("bootherd ", env!("CARGO_PKG_VERSION"));

fn overview() -> String {
    let mut s = format!(
        "{VERSION}: spreads network-booting machines across boot servers by their live load.\n\n\
         Usage: bootherd <command> [options]   (bootherd <command> --help for each)\n\nCommands:\n"
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<10} {}\n", c.name, c.summary));
    }
    s.push_str(
        "\nExit codes: 0 success, 1 failure, 2 usage or configuration error.\n\
         Logging: BOOTHERD_LOG=off|warn|info|debug (default info), on stderr (with journal\n\
         priorities and no timestamps when stderr is the systemd journal).\n",
    );
    s
}

/// Runs the command line; returns the process exit code.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    if let Err(e) = crate::log::init_from_env() {
        crate::log::write_error(&format!("bootherd: {e}"));
        return ExitCode::from(2);
    }
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_default();
    // Multi-call: a link named `bootherd-fetch` runs `bootherd fetch`.
    let linked = std::path::Path::new(&program)
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("bootherd-"))
        // Only a known command: `bootherd-aarch64` is just a renamed binary.
        .filter(|n| COMMANDS.iter().any(|c| c.name == *n))
        .map(OsString::from);
    let mut rest: Vec<OsString> = argv.collect();
    let name = match linked {
        Some(name) => name,
        None if rest.is_empty() => {
            eprint!("{}", overview());
            return ExitCode::from(2);
        }
        None => rest.remove(0),
    };
    let name = name.to_string_lossy();
    match name.as_ref() {
        "-h" | "--help" | "help" => {
            write_out(&overview());
            return ExitCode::SUCCESS;
        }
        "-V" | "--version" => {
            write_out(&format!("{VERSION}\n"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        eprintln!("bootherd: unknown command {name:?}\n");
        eprint!("{}", overview());
        return ExitCode::from(2);
    };
    let args = match Args::new(rest) {
        Ok(args) => args,
        Err(e) => return usage_error(command, &e),
    };
    if args.has(&["-h", "--help"]) {
        write_out(command.usage);
        return ExitCode::SUCCESS;
    }
    if args.has(&["-V", "--version"]) {
        write_out(&format!("{VERSION}\n"));
        return ExitCode::SUCCESS;
    }
    match (command.run)(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(e)) => usage_error(command, &e),
        Err(CliError::Failed(e)) => {
            crate::log::write_error(&format!("bootherd {}: {e}", command.name));
            ExitCode::from(1)
        }
        Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
    }
}

/// Help and version text; a closed stdout is not an error worth a panic.
fn write_out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// A usage or configuration mistake: the mistake, and where the usage is (not the whole of it,
/// which would push the mistake off the screen).
fn usage_error(command: &Command, e: &UsageError) -> ExitCode {
    crate::log::write_error(&format!("bootherd {}: {e}", command.name));
    crate::log::write_hint(&format!("Try 'bootherd {} --help'.", command.name));
    ExitCode::from(2)
}
