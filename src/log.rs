//! One line per event on stderr: `2026-11-26T22:10:00.123Z INFO tftp: ...`; or, when stderr is
//! the systemd journal (`JOURNAL_STREAM` names it), `<6>tftp: ...`: the journal stamps the time
//! itself and takes the priority from the prefix, so `journalctl -p warning` finds warnings.
//!
//! The level is global: `BOOTHERD_LOG=off|warn|info|debug` when set, else the config's `log`
//! key, else `info`.
//!
//! Events that a sender can repeat at will (one per junk datagram, per forged report) go
//! through the `*_limited!` macros: each call site writes at most [`LIMIT_BURST`] lines per
//! [`LIMIT_INTERVAL`] and counts the rest; the next line it writes says how many were left out
//! ("(1234 more like this were not logged)"). A suppressed event costs a clock read and two
//! atomic operations, no formatting and no write.
//!
//! ```text
//! log::warning_limited!("tftp: {from}: malformed request dropped: {e}");
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Nothing.
    Off = 0,
    /// Problems: refused requests, timeouts, dropped packets.
    Warn = 1,
    /// Plus completed transfers and decisions.
    Info = 2,
    /// Plus every transfer start and other detail.
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// Whether `BOOTHERD_LOG` chose the level (then a config's `log` key does not change it).
static LEVEL_FROM_ENV: AtomicBool = AtomicBool::new(false);
/// Whether lines go to the journal (priority prefixes, no timestamps).
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Sets the global level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Sets the level unless `BOOTHERD_LOG` chose one (a config's `log` key, a command's default).
pub fn set_default_level(level: Level) {
    if !LEVEL_FROM_ENV.load(Ordering::Relaxed) {
        set_level(level);
    }
}

/// Parses `off`, `warn`, `info` or `debug`.
pub fn parse_level(s: &str) -> Option<Level> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Some(Level::Off),
        "warn" => Some(Level::Warn),
        "info" => Some(Level::Info),
        "debug" => Some(Level::Debug),
        _ => None,
    }
}

/// Reads `BOOTHERD_LOG` (unset or empty: the default) and `JOURNAL_STREAM`; an unknown level is
/// an error.
pub fn init_from_env() -> Result<(), String> {
    let journal = std::env::var("JOURNAL_STREAM").is_ok_and(|v| stderr_is(&v));
    JOURNAL.store(journal, Ordering::Relaxed);
    match std::env::var("BOOTHERD_LOG") {
        Ok(v) if !v.is_empty() => {
            let level = parse_level(&v)
                .ok_or_else(|| format!("BOOTHERD_LOG={v:?}: want off, warn, info or debug"))?;
            set_level(level);
            LEVEL_FROM_ENV.store(true, Ordering::Relaxed);
        }
        _ => {}
    }
    Ok(())
}

/// Whether stderr is the stream `JOURNAL_STREAM` ("DEVICE:INODE") names; systemd sets it for
/// the service, and children that write elsewhere (a redirect, a terminal) must not use it.
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // The field types differ between targets.
    #[allow(clippy::useless_conversion)]
    rustix::fs::fstat(std::io::stderr())
        .is_ok_and(|st| u64::from(st.st_dev) == dev && u64::from(st.st_ino) == ino)
}

/// Whether `level` is logged.
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

/// Writes one line (used by the macros).
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    write_noted(level, args, "");
}

/// Writes one line with `note` after the message.
fn write_noted(level: Level, args: std::fmt::Arguments<'_>, note: &str) {
    if JOURNAL.load(Ordering::Relaxed) {
        let priority = match level {
            Level::Warn => 4,
            Level::Info => 6,
            _ => 7,
        };
        eprintln!("<{priority}>{args}{note}");
    } else {
        let name = match level {
            Level::Warn => "WARN",
            Level::Info => "INFO",
            _ => "DEBUG",
        };
        eprintln!("{} {name} {args}{note}", utc_now());
    }
}

/// A command's final error line (`bootherd central: ...`): priority "error" in the journal,
/// no timestamp on a terminal.
pub fn write_error(line: &str) {
    write_plain(3, line);
}

/// A line that helps with the error before it (where `--help` is): priority "info".
pub fn write_hint(line: &str) {
    write_plain(6, line);
}

fn write_plain(priority: u8, line: &str) {
    if JOURNAL.load(Ordering::Relaxed) {
        eprintln!("<{priority}>{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Lines a rate-limited call site writes per [`LIMIT_INTERVAL`] before it only counts.
pub const LIMIT_BURST: u32 = 5;
/// The window of [`LIMIT_BURST`].
pub const LIMIT_INTERVAL: Duration = Duration::from_secs(10);

/// The line budget of one call site (a `static` inside each `*_limited!` macro use).
#[derive(Debug)]
pub struct Limiter {
    /// When the current window started, in ms since [`monotonic_ms`]'s origin, plus one (0:
    /// no window yet).
    window: AtomicU64,
    written: AtomicU32,
    suppressed: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// What a [`Limiter`] allows for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines were left out since the last one written; `last` if it
    /// is the last line of the window's budget.
    Write {
        /// Lines left out before this one.
        suppressed: u64,
        /// The budget is now spent.
        last: bool,
    },
    /// Count it only.
    Suppress,
}

impl Limiter {
    /// A fresh budget.
    pub const fn new() -> Self {
        Limiter {
            window: AtomicU64::new(0),
            written: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Decides one event at `now_ms` (see [`monotonic_ms`]). Races between threads can let a
    /// line more or less through at a window's edge, never more.
    pub fn check(&self, now_ms: u64) -> Verdict {
        let stamp = now_ms + 1;
        let start = self.window.load(Ordering::Relaxed);
        let interval = LIMIT_INTERVAL.as_millis() as u64;
        if (start == 0 || stamp.saturating_sub(start) >= interval)
            && self
                .window
                .compare_exchange(start, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.written.store(0, Ordering::Relaxed);
        }
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        if n < LIMIT_BURST {
            Verdict::Write {
                suppressed: self.suppressed.swap(0, Ordering::Relaxed),
                last: n + 1 == LIMIT_BURST,
            }
        } else {
            // Saturates instead of wrapping in a flood that lasts for ever.
            self.written.store(LIMIT_BURST, Ordering::Relaxed);
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            Verdict::Suppress
        }
    }
}

/// Milliseconds on a monotonic clock (the rate limiter's time).
pub fn monotonic_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Writes one line of a rate-limited call site (used by the macros).
pub fn write_limited(limiter: &Limiter, level: Level, args: std::fmt::Arguments<'_>) {
    match limiter.check(monotonic_ms()) {
        Verdict::Suppress => {}
        Verdict::Write { suppressed, last } => {
            let mut note = String::new();
            if suppressed > 0 {
                note = format!(" ({suppressed} more like this were not logged)");
            }
            if last {
                note.push_str(&format!(
                    " (more like this in the next {} s are counted, not logged)",
                    LIMIT_INTERVAL.as_secs()
                ));
            }
            write_noted(level, args, &note);
        }
    }
}

/// Current UTC time as RFC 3339 with milliseconds.
fn utc_now() -> String {
    let since = crate::sys::unix_time();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

macro_rules! warning {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*))
        }
    };
}

macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::write($crate::log::Level::Info, format_args!($($arg)*))
        }
    };
}

macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*))
        }
    };
}

/// A rate-limited line at `$level` (a [`Level`] variant): one budget per call site.
macro_rules! limited {
    ($level:ident, $($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            static LIMITER: $crate::log::Limiter = $crate::log::Limiter::new();
            $crate::log::write_limited(
                &LIMITER,
                $crate::log::Level::$level,
                format_args!($($arg)*),
            )
        }
    };
}

/// [`warning!`], at most [`LIMIT_BURST`] lines per [`LIMIT_INTERVAL`] from this call site.
macro_rules! warning_limited {
    ($($arg:tt)*) => { $crate::log::limited!(Warn, $($arg)*) };
}

/// [`info!`], at most [`LIMIT_BURST`] lines per [`LIMIT_INTERVAL`] from this call site.
macro_rules! info_limited {
    ($($arg:tt)*) => { $crate::log::limited!(Info, $($arg)*) };
}

pub(crate) use {debug, info, info_limited, limited, warning, warning_limited};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("DEBUG"), Some(Level::Debug));
        assert_eq!(parse_level("loud"), None);
        assert!(Level::Debug > Level::Info && Level::Warn > Level::Off);
    }

    #[test]
    fn limiter_writes_a_burst_per_window_and_counts_the_rest() {
        let limiter = Limiter::new();
        let window = LIMIT_INTERVAL.as_millis() as u64;
        let mut written = Vec::new();
        for i in 0..1000u64 {
            // 1000 events over the first window, then one in the next.
            if let Verdict::Write { suppressed, last } = limiter.check(i * (window / 1000)) {
                written.push((i, suppressed, last));
            }
        }
        let burst = u64::from(LIMIT_BURST);
        assert_eq!(written.len() as u64, burst);
        assert!(written.iter().take(4).all(|&(_, s, last)| s == 0 && !last));
        assert!(written[4].2, "the last line of the budget says so");
        assert_eq!(
            limiter.check(window + 5),
            Verdict::Write {
                suppressed: 1000 - burst,
                last: false
            }
        );
        assert_eq!(
            limiter.check(window + 6),
            Verdict::Write {
                suppressed: 0,
                last: false
            }
        );
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is("garbage"));
        assert!(!stderr_is("1:"));
        let st = rustix::fs::fstat(std::io::stderr()).unwrap();
        assert!(stderr_is(&format!("{}:{}", st.st_dev, st.st_ino)));
        assert!(!stderr_is(&format!("{}:{}", st.st_dev, st.st_ino + 1)));
    }
}
