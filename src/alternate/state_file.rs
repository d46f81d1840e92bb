//! The alternate's state file on disk: read and counted at start, rewritten when the learned
//! capacity moves (what the file holds is [`crate::report::state`]).

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::mb_per_sec;
use crate::log;
use crate::report::capacity::Learned;
use crate::report::state::AlternateState;

/// The state file is rewritten this long after the last write at the latest (while something
/// is learned), not every report: appliances keep it on flash.
const SAVE_EVERY: Duration = Duration::from_secs(600);

/// The state file: read and counted at start, rewritten when what was learned moves.
pub(super) struct StateKeeper {
    path: Option<PathBuf>,
    /// What the file holds (or will, at the next write).
    pub(super) state: AlternateState,
    /// When it was last written.
    written: Instant,
}

impl StateKeeper {
    /// Reads the state file (a missing or broken one starts afresh), counts this start and
    /// writes it back at once: the boot count must be on disk before the first report.
    pub(super) fn start(path: Option<PathBuf>) -> StateKeeper {
        let mut state = AlternateState::default();
        if let Some(path) = &path {
            match std::fs::read_to_string(path) {
                Ok(text) => match AlternateState::parse(&text) {
                    Ok(read) => state = read,
                    Err(e) => log::warning!("alternate: {}: {e}; starting afresh", path.display()),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warning!("alternate: cannot read {}: {e}", path.display()),
            }
        }
        state.boot_count += 1;
        let mut keeper = StateKeeper {
            path,
            state,
            written: Instant::now(),
        };
        keeper.write();
        keeper
    }

    /// Writes the state if the learned capacity moved enough, or long enough ago.
    pub(super) fn keep(&mut self, now: Instant, id: &str, learned: Option<Learned>) {
        let moved = self.state.capacity_moved(learned);
        if moved {
            if let Some(l) = learned {
                log::info!(
                    "alternate {id}: link capacity now {} ({} s of backlogged measurement)",
                    mb_per_sec(l.bytes_per_sec),
                    l.evidence.as_secs()
                );
            }
        }
        if moved || (learned.is_some() && now.duration_since(self.written) >= SAVE_EVERY) {
            self.save(learned);
        }
    }

    /// Writes what was learned (or keeps what was read, if nothing was learned since).
    pub(super) fn save(&mut self, learned: Option<Learned>) {
        self.state.capacity.learned = learned.or(self.state.capacity.learned);
        self.state.capacity.saved_unix_ms = crate::sys::unix_ms();
        self.write();
    }

    /// Writes the file whole (a new file renamed over the old one, so a power cut leaves
    /// one or the other).
    fn write(&mut self) {
        self.written = Instant::now();
        let Some(path) = &self.path else { return };
        let new = path.with_extension("new");
        let result =
            std::fs::write(&new, self.state.render()).and_then(|()| std::fs::rename(&new, path));
        if let Err(e) = result {
            log::warning!("alternate: cannot write {}: {e}", path.display());
        }
    }
}
