//! What an alternate keeps between runs, as a small text file it rewrites whole: how many times
//! it has started (so that centrals can tell its restart from a replayed old report) and the
//! capacity it learned (so that the first storm after a power failure is already balanced).
//!
//! ```text
//! # bootherd alternate state (written by the alternate; safe to delete)
//! boot_count 12
//! capacity_bytes_per_sec 25000000
//! capacity_evidence_s 340
//! saved_unix_ms 1764555555000
//! ```

use std::time::Duration;

use super::capacity::{Learned, SavedCapacity};

/// The state file is rewritten when the learned capacity moved this much (per mille) since it
/// was saved, not on every small change: appliances keep it on flash.
const SAVE_CHANGE_PERMILLE: u64 = 50;

/// The contents of the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlternateState {
    /// Starts so far, this one included.
    pub boot_count: u64,
    /// The learned capacity and when it was saved.
    pub capacity: SavedCapacity,
}

impl AlternateState {
    /// Whether `learned` differs enough from the saved capacity to be written now: something
    /// learned for the first time, or a move of more than 5 %.
    pub fn capacity_moved(&self, learned: Option<Learned>) -> bool {
        let saved = self.capacity.learned.map(|l| l.bytes_per_sec);
        match (saved, learned) {
            (None, Some(_)) => true,
            (Some(old), Some(new)) => {
                old.abs_diff(new.bytes_per_sec) * 1000 > old * SAVE_CHANGE_PERMILLE
            }
            _ => false,
        }
    }

    /// Parses the file's text. Unknown keys are skipped (a newer version may add some).
    pub fn parse(text: &str) -> Result<AlternateState, String> {
        let mut state = AlternateState::default();
        let (mut bytes_per_sec, mut evidence_s) = (None, 0);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let number = || {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("line {}: {key}: {value:?} is not a number", n + 1))
            };
            match key {
                "boot_count" => state.boot_count = number()?,
                "capacity_bytes_per_sec" => bytes_per_sec = Some(number()?),
                "capacity_evidence_s" => evidence_s = number()?,
                "saved_unix_ms" => state.capacity.saved_unix_ms = number()?,
                _ => {}
            }
        }
        state.capacity.learned = bytes_per_sec.filter(|&b| b > 0).map(|b| Learned {
            bytes_per_sec: b,
            evidence: Duration::from_secs(evidence_s),
        });
        Ok(state)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = format!(
            "# bootherd alternate state (written by the alternate; safe to delete)\n\
             boot_count {}\n",
            self.boot_count
        );
        if let Some(l) = self.capacity.learned {
            text.push_str(&format!(
                "capacity_bytes_per_sec {}\ncapacity_evidence_s {}\n",
                l.bytes_per_sec,
                l.evidence.as_secs()
            ));
        }
        text.push_str(&format!("saved_unix_ms {}\n", self.capacity.saved_unix_ms));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tolerance() {
        let state = AlternateState {
            boot_count: 12,
            capacity: SavedCapacity {
                learned: Some(Learned {
                    bytes_per_sec: 25_000_000,
                    evidence: Duration::from_secs(340),
                }),
                saved_unix_ms: 1_764_555_555_000,
            },
        };
        assert_eq!(AlternateState::parse(&state.render()), Ok(state));
        let fresh = AlternateState::parse("boot_count 1\nfuture_key whatever\n").unwrap();
        assert_eq!((fresh.boot_count, fresh.capacity.learned), (1, None));
        assert_eq!(
            AlternateState::parse("boot_count many\n"),
            Err("line 1: boot_count: \"many\" is not a number".into())
        );
    }

    #[test]
    fn only_a_first_or_large_capacity_change_is_worth_a_write() {
        let at = |bytes_per_sec| Learned {
            bytes_per_sec,
            evidence: Duration::from_secs(60),
        };
        let mut state = AlternateState::default();
        assert!(!state.capacity_moved(None));
        assert!(state.capacity_moved(Some(at(1_000_000))));
        state.capacity.learned = Some(at(1_000_000));
        assert!(
            !state.capacity_moved(Some(at(1_050_000))),
            "5 % is not enough"
        );
        assert!(state.capacity_moved(Some(at(1_050_001))));
        assert!(state.capacity_moved(Some(at(940_000))));
        assert!(!state.capacity_moved(None));
    }
}
