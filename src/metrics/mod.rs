//! Metrics for Prometheus, sans-IO: the central's table and a server's transfer counters in,
//! the text exposition format (version 0.0.4) out, and the answer to a scrape's request.
//! [`server`] is the thin shell that listens (off unless the config names an address).
//!
//! Names and labels:
//! - per alternate in a central's table (`alternate="ID"`): `bootherd_alternate_score_seconds`
//!   (only while it gets clients), `bootherd_alternate_included`, `bootherd_alternate_state`
//!   (one sample per state, `state="serving|draining|leaving|stale"`, 1 for the current one),
//!   `bootherd_alternate_active_transfers`, `bootherd_alternate_max_transfers`,
//!   `bootherd_alternate_bytes_remaining`, `bootherd_alternate_capacity_bytes_per_second`,
//!   `bootherd_alternate_capacity_evidence_seconds`, `bootherd_alternate_promises`,
//!   `bootherd_alternate_report_age_seconds`;
//! - per central: `bootherd_central_alternates`, `bootherd_central_lists_total`,
//!   `bootherd_central_promises`, `bootherd_central_report_drops_total`
//!   (`reason="bad_tag|replayed|unknown|malformed"`);
//! - per server (both roles): `bootherd_transfers_active`, `bootherd_transfers_started_total`,
//!   `bootherd_transfers_completed_total`, `bootherd_transfers_timed_out_total`,
//!   `bootherd_transfer_sent_bytes_total` (an alternate's HTTP transfers included), and the
//!   TFTP-only `bootherd_tftp_data_sent_total`, `bootherd_tftp_data_retransmitted_total`,
//!   `bootherd_tftp_timeouts_total`.

pub mod server;

use core::fmt::{self, Write};
use std::time::Instant;

use crate::balance::{DropReason, Phase, Table};
use crate::http::wire::{target_path, Method, Request, ResponseHead, Status};
use crate::report::wire::StatusRow;
use crate::tftp::progress::Totals;

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The one path served.
pub const PATH: &str = "metrics";

/// One alternate of a central's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternateSample {
    /// Its row, as `bootherd report status` shows it.
    pub row: StatusRow,
    /// Where it stands.
    pub phase: Phase,
}

/// A central's table at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralSample {
    /// Every alternate, in list order (included ones first).
    pub alternates: Vec<AlternateSample>,
    /// Lists handed out since start.
    pub lists: u64,
    /// Report-port datagrams dropped since start, indexed by [`DropReason`].
    pub dropped: [u64; 4],
}

impl CentralSample {
    /// The table's figures at `now`: the rows a status request gets, with each phase.
    pub fn take(table: &mut Table, now: Instant) -> Self {
        let alternates = table
            .status(now)
            .into_iter()
            .filter_map(|row| {
                let phase = table.phase(now, &row.report.alternate)?;
                Some(AlternateSample { row, phase })
            })
            .collect();
        CentralSample {
            alternates,
            lists: table.lists_handed_out(),
            dropped: table.dropped(),
        }
    }
}

/// A sample's value: a count, or microseconds written as seconds (exactly, no float).
#[derive(Debug, Clone, Copy)]
enum Value {
    Count(u64),
    Micros(u64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Micros(us) => write!(f, "{}.{:06}", us / 1_000_000, us % 1_000_000),
        }
    }
}

/// Exposition text being written: families, each with its `# HELP` and `# TYPE` lines first.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.0.push_str(name);
        for (n, (label, text)) in labels.iter().enumerate() {
            self.0.push(if n == 0 { '{' } else { ',' });
            let _ = write!(self.0, "{label}=\"");
            for c in text.chars() {
                match c {
                    '\\' => self.0.push_str("\\\\"),
                    '"' => self.0.push_str("\\\""),
                    '\n' => self.0.push_str("\\n"),
                    c => self.0.push(c),
                }
            }
            self.0.push('"');
        }
        if !labels.is_empty() {
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

type PerAlternate = (
    &'static str,
    &'static str,
    fn(&AlternateSample) -> Option<Value>,
);

/// The per-alternate gauges (the state has its own label and is written apart).
const PER_ALTERNATE: &[PerAlternate] = &[
    (
        "bootherd_alternate_score_seconds",
        "Estimated time for one more boot on the alternate (only while it gets clients).",
        |a| a.row.score_us.map(Value::Micros),
    ),
    (
        "bootherd_alternate_included",
        "1 if the alternate is in the lists handed out, 0 if excluded.",
        |a| Some(Value::Count(a.row.score_us.is_some().into())),
    ),
    (
        "bootherd_alternate_active_transfers",
        "Transfers in progress on the alternate, as it last reported.",
        |a| Some(Value::Count(a.row.report.active_transfers.into())),
    ),
    (
        "bootherd_alternate_max_transfers",
        "The alternate's transfer limit.",
        |a| Some(Value::Count(a.row.report.max_transfers.into())),
    ),
    (
        "bootherd_alternate_bytes_remaining",
        "Bytes the alternate's transfers in progress still have to send.",
        |a| Some(Value::Count(a.row.report.bytes_remaining)),
    ),
    (
        "bootherd_alternate_capacity_bytes_per_second",
        "The alternate's learned capacity (a prior while its evidence is 0).",
        |a| Some(Value::Count(a.row.report.link_bytes_per_sec)),
    ),
    (
        "bootherd_alternate_capacity_evidence_seconds",
        "Seconds of backlogged measurement behind the capacity.",
        |a| Some(Value::Count(a.row.report.capacity_evidence_s.into())),
    ),
    (
        "bootherd_alternate_promises",
        "Clients sent to the alternate and not yet seen in its reports.",
        |a| Some(Value::Count(a.row.promised.into())),
    ),
    (
        "bootherd_alternate_report_age_seconds",
        "Time since the alternate's last report arrived.",
        |a| Some(Value::Micros(a.row.age_ms.saturating_mul(1000))),
    ),
];

const PHASES: [(Phase, &str); 4] = [
    (Phase::Serving, "serving"),
    (Phase::Draining, "draining"),
    (Phase::Leaving, "leaving"),
    (Phase::Stale, "stale"),
];

const DROP_REASONS: [(DropReason, &str); 4] = [
    (DropReason::BadTag, "bad_tag"),
    (DropReason::Replayed, "replayed"),
    (DropReason::Unknown, "unknown"),
    (DropReason::Malformed, "malformed"),
];

type PerServer = (&'static str, &'static str, &'static str, fn(&Totals) -> u64);

/// A server's transfer counters.
const PER_SERVER: &[PerServer] = &[
    (
        "bootherd_transfers_active",
        "gauge",
        "Transfers in progress.",
        |t| t.active as u64,
    ),
    (
        "bootherd_transfers_started_total",
        "counter",
        "Transfers started.",
        |t| t.started,
    ),
    (
        "bootherd_transfers_completed_total",
        "counter",
        "Transfers completed.",
        |t| t.completed,
    ),
    (
        "bootherd_transfers_timed_out_total",
        "counter",
        "TFTP transfers given up because the client went silent.",
        |t| t.timed_out,
    ),
    (
        "bootherd_transfer_sent_bytes_total",
        "counter",
        "Bytes the clients acknowledged (or the socket took, over HTTP).",
        |t| t.sent,
    ),
    (
        "bootherd_tftp_data_sent_total",
        "counter",
        "TFTP DATA datagrams sent, first sends and resends.",
        |t| t.data_sent,
    ),
    (
        "bootherd_tftp_data_retransmitted_total",
        "counter",
        "TFTP DATA datagrams that carried a block sent before.",
        |t| t.data_retransmitted,
    ),
    (
        "bootherd_tftp_timeouts_total",
        "counter",
        "TFTP retransmission timeouts (the OACK or a window went again).",
        |t| t.timeouts,
    ),
];

/// The exposition text: a central's table (for a central) and a server's transfer counters.
pub fn render(central: Option<&CentralSample>, transfers: &Totals) -> String {
    let mut text = Text(String::new());
    if let Some(c) = central {
        for &(name, help, value) in PER_ALTERNATE {
            text.family(name, "gauge", help);
            for a in &c.alternates {
                if let Some(v) = value(a) {
                    text.sample(name, &[("alternate", &a.row.report.alternate)], v);
                }
            }
        }
        let name = "bootherd_alternate_state";
        text.family(name, "gauge", "1 for the state the alternate is in.");
        for a in &c.alternates {
            for (phase, label) in PHASES {
                let labels = [
                    ("alternate", a.row.report.alternate.as_str()),
                    ("state", label),
                ];
                text.sample(name, &labels, Value::Count((a.phase == phase).into()));
            }
        }
        let name = "bootherd_central_alternates";
        text.family(name, "gauge", "Alternates in the table.");
        text.sample(name, &[], Value::Count(c.alternates.len() as u64));
        let name = "bootherd_central_lists_total";
        text.family(name, "counter", "Alternate lists handed out to clients.");
        text.sample(name, &[], Value::Count(c.lists));
        let name = "bootherd_central_promises";
        text.family(
            name,
            "gauge",
            "Clients sent to alternates and not yet seen there.",
        );
        let promises = c.alternates.iter().map(|a| u64::from(a.row.promised));
        text.sample(name, &[], Value::Count(promises.sum()));
        let name = "bootherd_central_report_drops_total";
        text.family(name, "counter", "Report-port datagrams dropped, by reason.");
        for (why, label) in DROP_REASONS {
            let count = Value::Count(c.dropped[why as usize]);
            text.sample(name, &[("reason", label)], count);
        }
    }
    for &(name, kind, help, value) in PER_SERVER {
        text.family(name, kind, help);
        text.sample(name, &[], Value::Count(value(transfers)));
    }
    text.0
}

/// The answer to a scrape: the head, and the body for a GET of `/metrics` (`render` is called
/// for GET and HEAD only). 405 for other methods, 404 for other paths; the connection closes.
pub fn answer(request: &Request<'_>, render: impl FnOnce() -> String) -> (ResponseHead, String) {
    if request.method == Method::Other {
        return (
            ResponseHead::bare(Status::MethodNotAllowed, true),
            String::new(),
        );
    }
    if target_path(request.target).as_deref() != Some(PATH) {
        return (ResponseHead::bare(Status::NotFound, true), String::new());
    }
    let mut body = render();
    let mut head = ResponseHead::bare(Status::Ok, true);
    head.content_length = body.len() as u64;
    head.content_type = Some(CONTENT_TYPE);
    head.no_store = true;
    if request.method == Method::Head {
        body.clear();
    }
    (head, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::parse_request;
    use crate::report::wire::tests::report;
    use crate::report::wire::{AltState, PathState};

    fn sample() -> CentralSample {
        let row = |id: &str, score_us, promised| StatusRow {
            report: report(id, 1),
            age_ms: 1500,
            score_us,
            excluded: score_us.is_none().then(|| "draining".into()),
            promised,
            path: PathState::Clear,
        };
        let mut draining = row("alt\"2", None, 0);
        draining.report.state = AltState::Draining;
        draining.report.active_transfers = 0;
        CentralSample {
            alternates: vec![
                AlternateSample {
                    row: row("alt1", Some(1_234_567), 2),
                    phase: Phase::Serving,
                },
                AlternateSample {
                    row: draining,
                    phase: Phase::Draining,
                },
            ],
            lists: 9,
            dropped: [3, 1, 0, 2],
        }
    }

    fn totals() -> Totals {
        Totals {
            active: 2,
            started: 11,
            completed: 8,
            timed_out: 1,
            sent: 123_456_789,
            data_sent: 90_000,
            data_retransmitted: 120,
            timeouts: 7,
            ..Totals::default()
        }
    }

    #[test]
    fn renders_the_table_and_the_counters_byte_for_byte() {
        let text = render(Some(&sample()), &totals());
        let expected = r#"# HELP bootherd_alternate_score_seconds Estimated time for one more boot on the alternate (only while it gets clients).
# TYPE bootherd_alternate_score_seconds gauge
bootherd_alternate_score_seconds{alternate="alt1"} 1.234567
# HELP bootherd_alternate_included 1 if the alternate is in the lists handed out, 0 if excluded.
# TYPE bootherd_alternate_included gauge
bootherd_alternate_included{alternate="alt1"} 1
bootherd_alternate_included{alternate="alt\"2"} 0
# HELP bootherd_alternate_active_transfers Transfers in progress on the alternate, as it last reported.
# TYPE bootherd_alternate_active_transfers gauge
bootherd_alternate_active_transfers{alternate="alt1"} 3
bootherd_alternate_active_transfers{alternate="alt\"2"} 0
# HELP bootherd_alternate_max_transfers The alternate's transfer limit.
# TYPE bootherd_alternate_max_transfers gauge
bootherd_alternate_max_transfers{alternate="alt1"} 512
bootherd_alternate_max_transfers{alternate="alt\"2"} 512
# HELP bootherd_alternate_bytes_remaining Bytes the alternate's transfers in progress still have to send.
# TYPE bootherd_alternate_bytes_remaining gauge
bootherd_alternate_bytes_remaining{alternate="alt1"} 30000000
bootherd_alternate_bytes_remaining{alternate="alt\"2"} 30000000
# HELP bootherd_alternate_capacity_bytes_per_second The alternate's learned capacity (a prior while its evidence is 0).
# TYPE bootherd_alternate_capacity_bytes_per_second gauge
bootherd_alternate_capacity_bytes_per_second{alternate="alt1"} 125000000
bootherd_alternate_capacity_bytes_per_second{alternate="alt\"2"} 125000000
# HELP bootherd_alternate_capacity_evidence_seconds Seconds of backlogged measurement behind the capacity.
# TYPE bootherd_alternate_capacity_evidence_seconds gauge
bootherd_alternate_capacity_evidence_seconds{alternate="alt1"} 120
bootherd_alternate_capacity_evidence_seconds{alternate="alt\"2"} 120
# HELP bootherd_alternate_promises Clients sent to the alternate and not yet seen in its reports.
# TYPE bootherd_alternate_promises gauge
bootherd_alternate_promises{alternate="alt1"} 2
bootherd_alternate_promises{alternate="alt\"2"} 0
# HELP bootherd_alternate_report_age_seconds Time since the alternate's last report arrived.
# TYPE bootherd_alternate_report_age_seconds gauge
bootherd_alternate_report_age_seconds{alternate="alt1"} 1.500000
bootherd_alternate_report_age_seconds{alternate="alt\"2"} 1.500000
# HELP bootherd_alternate_state 1 for the state the alternate is in.
# TYPE bootherd_alternate_state gauge
bootherd_alternate_state{alternate="alt1",state="serving"} 1
bootherd_alternate_state{alternate="alt1",state="draining"} 0
bootherd_alternate_state{alternate="alt1",state="leaving"} 0
bootherd_alternate_state{alternate="alt1",state="stale"} 0
bootherd_alternate_state{alternate="alt\"2",state="serving"} 0
bootherd_alternate_state{alternate="alt\"2",state="draining"} 1
bootherd_alternate_state{alternate="alt\"2",state="leaving"} 0
bootherd_alternate_state{alternate="alt\"2",state="stale"} 0
# HELP bootherd_central_alternates Alternates in the table.
# TYPE bootherd_central_alternates gauge
bootherd_central_alternates 2
# HELP bootherd_central_lists_total Alternate lists handed out to clients.
# TYPE bootherd_central_lists_total counter
bootherd_central_lists_total 9
# HELP bootherd_central_promises Clients sent to alternates and not yet seen there.
# TYPE bootherd_central_promises gauge
bootherd_central_promises 2
# HELP bootherd_central_report_drops_total Report-port datagrams dropped, by reason.
# TYPE bootherd_central_report_drops_total counter
bootherd_central_report_drops_total{reason="bad_tag"} 3
bootherd_central_report_drops_total{reason="replayed"} 1
bootherd_central_report_drops_total{reason="unknown"} 0
bootherd_central_report_drops_total{reason="malformed"} 2
"#;
        assert_eq!(&text[..expected.len()], expected);
        assert_eq!(&text[expected.len()..], render(None, &totals()));
    }

    #[test]
    fn renders_a_servers_counters_byte_for_byte() {
        assert_eq!(
            render(None, &totals()),
            "# HELP bootherd_transfers_active Transfers in progress.
# TYPE bootherd_transfers_active gauge
bootherd_transfers_active 2
# HELP bootherd_transfers_started_total Transfers started.
# TYPE bootherd_transfers_started_total counter
bootherd_transfers_started_total 11
# HELP bootherd_transfers_completed_total Transfers completed.
# TYPE bootherd_transfers_completed_total counter
bootherd_transfers_completed_total 8
# HELP bootherd_transfers_timed_out_total TFTP transfers given up because the client went silent.
# TYPE bootherd_transfers_timed_out_total counter
bootherd_transfers_timed_out_total 1
# HELP bootherd_transfer_sent_bytes_total Bytes the clients acknowledged (or the socket took, over HTTP).
# TYPE bootherd_transfer_sent_bytes_total counter
bootherd_transfer_sent_bytes_total 123456789
# HELP bootherd_tftp_data_sent_total TFTP DATA datagrams sent, first sends and resends.
# TYPE bootherd_tftp_data_sent_total counter
bootherd_tftp_data_sent_total 90000
# HELP bootherd_tftp_data_retransmitted_total TFTP DATA datagrams that carried a block sent before.
# TYPE bootherd_tftp_data_retransmitted_total counter
bootherd_tftp_data_retransmitted_total 120
# HELP bootherd_tftp_timeouts_total TFTP retransmission timeouts (the OACK or a window went again).
# TYPE bootherd_tftp_timeouts_total counter
bootherd_tftp_timeouts_total 7
"
        );
    }

    #[test]
    fn takes_rows_phases_lists_and_drops_from_the_table() {
        let mut table = Table::new(crate::balance::Policy::default());
        let now = Instant::now();
        table.handle_report(now, report("alt1", 1)).unwrap();
        table.assign(now, "127.0.0.1:999".parse().unwrap());
        table.count_drop(DropReason::Malformed);
        let later = now + std::time::Duration::from_secs(4);
        let s = CentralSample::take(&mut table, later);
        assert_eq!(s.alternates.len(), 1);
        assert_eq!(
            s.alternates[0].phase,
            Phase::Stale,
            "3 intervals of silence"
        );
        assert_eq!(s.alternates[0].row.score_us, None);
        assert_eq!((s.lists, s.dropped), (1, [0, 0, 0, 1]));
    }

    #[test]
    fn answers_get_and_head_of_metrics_only() {
        let ask = |text: &str| {
            let (request, _) = parse_request(text.as_bytes()).unwrap().unwrap();
            answer(&request, || "x 1\n".to_string())
        };
        let (head, body) = ask("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((head.status, body.as_str()), (Status::Ok, "x 1\n"));
        assert_eq!(head.content_type, Some(CONTENT_TYPE));
        assert!(head.close && head.content_length == 4);
        let (head, body) = ask("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!((head.status, head.content_length), (Status::Ok, 4));
        assert!(body.is_empty());
        for (text, status) in [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Status::NotFound),
            (
                "GET /metrics/x HTTP/1.1\r\nHost: a\r\n\r\n",
                Status::NotFound,
            ),
            (
                "POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
                Status::MethodNotAllowed,
            ),
        ] {
            let (head, body) = ask(text);
            assert_eq!((head.status, head.content_length), (status, 0), "{text}");
            assert!(body.is_empty());
        }
    }
}
