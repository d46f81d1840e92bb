//! What a central logs about its report port: applied marks, and dropped datagrams summed up
//! rather than one line each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::balance::{DropReason, Handled};
use crate::log;

/// Dropped report-port datagrams are summed up in one log line at most this often: a flood
/// must not turn into a flood of log lines.
const DROP_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Logs one handled datagram: applied marks at info; everything per datagram else at debug
/// only (dropped ones are summed up by [`DropLog`]).
pub(super) fn log_handled(from: SocketAddr, handled: &Handled) {
    match handled {
        Handled::Marked { alternate, state } => {
            log::info!("central: {from}: network path of {alternate} marked {state}")
        }
        Handled::Dropped { why, what } => log::debug!("central: {from}: {what} dropped: {why}"),
        Handled::Report { .. } | Handled::Answered | Handled::Ignored => {}
    }
}

/// Sums up dropped report-port datagrams in one warning per [`DROP_SUMMARY_EVERY`] at most.
pub(super) struct DropLog {
    last: [u64; 4],
    at: Instant,
}

impl DropLog {
    pub(super) fn new(now: Instant) -> Self {
        DropLog {
            last: [0; 4],
            at: now,
        }
    }

    pub(super) fn maybe_log(
        &mut self,
        now: Instant,
        dropped: [u64; 4],
        bad_tag_from: Option<SocketAddr>,
    ) {
        if now.saturating_duration_since(self.at) < DROP_SUMMARY_EVERY || dropped == self.last {
            return;
        }
        let reasons = [
            DropReason::BadTag,
            DropReason::Replayed,
            DropReason::Unknown,
            DropReason::Malformed,
        ];
        let parts: Vec<String> = reasons
            .iter()
            .filter_map(|&why| {
                let n = dropped[why as usize] - self.last[why as usize];
                (n > 0).then(|| match (why, bad_tag_from) {
                    (DropReason::BadTag, Some(from)) => {
                        format!("{n} {why} (last from {from})")
                    }
                    _ => format!("{n} {why}"),
                })
            })
            .collect();
        log::warning!(
            "central: report port dropped in the last {} s: {}",
            now.saturating_duration_since(self.at).as_secs(),
            parts.join(", ")
        );
        self.last = dropped;
        self.at = now;
    }
}
