//! A central's status answer as people and programs read it: the table `bootherd status`
//! prints, and the JSON of `bootherd status --json`, whose field names are a stable interface
//! for scripts and tests.

use std::net::SocketAddr;

use super::wire::{hex, StatusAnswer, StatusRow};
use crate::json;

impl StatusAnswer {
    /// One JSON object on one line: `central` (the address asked), `alternates` (the rows in
    /// list order, each with its report's figures, `score_us` and `excluded`, one of them
    /// `null`), `dropped` (counts by reason) and the last failed authentication.
    pub fn to_json(&self, central: SocketAddr) -> String {
        let [bad_tag, replayed, unknown, malformed] = self.dropped;
        let rows: Vec<String> = self.rows.iter().map(row_json).collect();
        format!(
            "{{\"central\":\"{central}\",\"alternates\":[{}],\"dropped\":{{\"bad_tag\":{bad_tag},\"replayed\":{replayed},\"unknown\":{unknown},\"malformed\":{malformed}}},\"bad_tag_from\":{},\"bad_tag_age_ms\":{}}}",
            rows.join(","),
            json::string_or_null(self.bad_tag_from.map(|a| a.to_string()).as_deref()),
            self.bad_tag_age_ms
        )
    }

    /// The table's lines: a header, one row per alternate (included ones ranked, excluded ones
    /// with the reason), the dropped-message counts, and where the last datagram failing
    /// authentication came from, if one did.
    pub fn table(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<3} {:<12} {:>9} {:>7} {:>11} {:>11} {:>17} {:>6} {:>8} {:>7} {:>13}  addresses / why excluded",
            "#",
            "alternate",
            "score",
            "active",
            "pending",
            "rate",
            "capacity",
            "mem",
            "promised",
            "age",
            "path",
        )];
        for (n, row) in self.rows.iter().enumerate() {
            let r = &row.report;
            let (rank, score, tail) = match (&row.score_us, &row.excluded) {
                (Some(s), _) => (
                    (n + 1).to_string(),
                    format!("{:.3} s", *s as f64 / 1e6),
                    r.addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                (None, why) => (
                    "-".into(),
                    "-".into(),
                    format!("excluded: {}", why.as_deref().unwrap_or("?")),
                ),
            };
            lines.push(format!(
                "{rank:<3} {:<12} {score:>9} {:>7} {:>8.1} MB {:>6.1} MB/s {:>17} {:>5.1}% {:>8} {:>5} ms {:>13}  {tail}",
                r.alternate,
                format!("{}/{}", r.active_transfers, r.max_transfers),
                r.pending_bytes.max(r.bytes_remaining) as f64 / 1e6,
                r.bytes_per_sec as f64 / 1e6,
                format!(
                    "{:.1} MB/s {}",
                    r.link_bytes_per_sec as f64 / 1e6,
                    match r.capacity_evidence_s {
                        0 => "prior".to_string(),
                        s => format!("{s} s"),
                    }
                ),
                f64::from(r.mem_permille) / 10.0,
                row.promised,
                row.age_ms,
                row.path.to_string(),
            ));
        }
        let [bad_tag, replayed, unknown, malformed] = self.dropped;
        lines.push(format!("dropped messages: bad tag {bad_tag}, replayed {replayed}, unknown alternate {unknown}, malformed {malformed}"));
        if let Some(from) = self.bad_tag_from {
            lines.push(format!(
                "last datagram failing authentication (wrong key?) from {from}, {:.1} s ago",
                self.bad_tag_age_ms as f64 / 1000.0
            ));
        }
        lines
    }
}

fn row_json(row: &StatusRow) -> String {
    let r = &row.report;
    let addresses: Vec<String> = r
        .addresses
        .iter()
        .map(|a| json::string(&a.to_string()))
        .collect();
    format!(
        "{{\"id\":{},\"addresses\":[{}],\"score_us\":{},\"excluded\":{},\"state\":\"{}\",\"active\":{},\"max_transfers\":{},\"bytes_remaining\":{},\"pending_bytes\":{},\"boot_bytes\":{},\"bytes_per_sec\":{},\"link_bytes_per_sec\":{},\"capacity_evidence_s\":{},\"boot_count\":{},\"datagrams_sent\":{},\"datagrams_resent\":{},\"process_cpu_permille\":{},\"cpu_permille\":{},\"mem_permille\":{},\"load_avg_centi\":{},\"boots_started\":{},\"promised\":{},\"age_ms\":{},\"path\":{},\"sequence\":{},\"digest\":\"{}\"}}",
        json::string(&r.alternate),
        addresses.join(","),
        row.score_us.map_or("null".into(), |s| s.to_string()),
        json::string_or_null(row.excluded.as_deref()),
        r.state,
        r.active_transfers,
        r.max_transfers,
        r.bytes_remaining,
        r.pending_bytes,
        r.boot_bytes,
        r.bytes_per_sec,
        r.link_bytes_per_sec,
        r.capacity_evidence_s,
        r.boot_count,
        r.datagrams_sent,
        r.datagrams_resent,
        r.process_cpu_permille,
        r.cpu_permille,
        r.mem_permille,
        r.load_avg_centi,
        r.boots_started,
        row.promised,
        row.age_ms,
        json::string(&row.path.to_string()),
        r.sequence,
        hex(&r.digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::wire::tests::report;
    use crate::report::wire::PathState;

    fn answer() -> StatusAnswer {
        let mut excluded = report("alt \"2\"", 8);
        excluded.addresses.push("127.0.0.12:69".parse().unwrap());
        excluded.capacity_evidence_s = 0;
        StatusAnswer {
            nonce: 1,
            rows: vec![
                StatusRow {
                    report: report("alt1", 7),
                    age_ms: 250,
                    score_us: Some(1_500_000),
                    excluded: None,
                    promised: 2,
                    path: PathState::Congested {
                        penalty_percent: 300,
                    },
                },
                StatusRow {
                    report: excluded,
                    age_ms: 4000,
                    score_us: None,
                    excluded: Some("stale".into()),
                    promised: 0,
                    path: PathState::Clear,
                },
            ],
            dropped: [1, 2, 3, 4],
            bad_tag_from: Some("10.0.0.9:4000".parse().unwrap()),
            bad_tag_age_ms: 1500,
        }
    }

    #[test]
    fn json_shape() {
        let digest = "ab".repeat(32);
        let row = |id: &str, addresses: &str, score: &str, excluded: &str, rest: &str| {
            format!(
                "{{\"id\":{id},\"addresses\":[{addresses}],\"score_us\":{score},\"excluded\":{excluded},\"state\":\"serving\",\"active\":3,\"max_transfers\":512,\"bytes_remaining\":30000000,\"pending_bytes\":40000000,\"boot_bytes\":9437184,\"bytes_per_sec\":90000000,\"link_bytes_per_sec\":125000000,{rest},\"digest\":\"{digest}\"}}"
            )
        };
        let alt1 = row(
            "\"alt1\"",
            "\"127.0.0.11:6901\"",
            "1500000",
            "null",
            "\"capacity_evidence_s\":120,\"boot_count\":3,\"datagrams_sent\":1000,\"datagrams_resent\":10,\"process_cpu_permille\":150,\"cpu_permille\":250,\"mem_permille\":400,\"load_avg_centi\":75,\"boots_started\":7,\"promised\":2,\"age_ms\":250,\"path\":\"congested=300\",\"sequence\":7",
        );
        let alt2 = row(
            "\"alt \\\"2\\\"\"",
            "\"127.0.0.11:6901\",\"127.0.0.12:69\"",
            "null",
            "\"stale\"",
            "\"capacity_evidence_s\":0,\"boot_count\":3,\"datagrams_sent\":1000,\"datagrams_resent\":10,\"process_cpu_permille\":150,\"cpu_permille\":250,\"mem_permille\":400,\"load_avg_centi\":75,\"boots_started\":7,\"promised\":0,\"age_ms\":4000,\"path\":\"clear\",\"sequence\":8",
        );
        assert_eq!(
            answer().to_json("127.0.0.1:7411".parse().unwrap()),
            format!("{{\"central\":\"127.0.0.1:7411\",\"alternates\":[{alt1},{alt2}],\"dropped\":{{\"bad_tag\":1,\"replayed\":2,\"unknown\":3,\"malformed\":4}},\"bad_tag_from\":\"10.0.0.9:4000\",\"bad_tag_age_ms\":1500}}")
        );
        let empty = StatusAnswer {
            nonce: 1,
            rows: Vec::new(),
            dropped: [0; 4],
            bad_tag_from: None,
            bad_tag_age_ms: 0,
        };
        assert_eq!(
            empty.to_json("[::1]:7411".parse().unwrap()),
            "{\"central\":\"[::1]:7411\",\"alternates\":[],\"dropped\":{\"bad_tag\":0,\"replayed\":0,\"unknown\":0,\"malformed\":0},\"bad_tag_from\":null,\"bad_tag_age_ms\":0}"
        );
    }

    #[test]
    fn table_ranks_included_rows_and_gives_reasons() {
        let lines = answer().table();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("#   alternate"), "{}", lines[0]);
        assert_eq!(
            lines[1],
            "1   alt1           1.500 s   3/512     40.0 MB   90.0 MB/s  125.0 MB/s 120 s  40.0%        2   250 ms congested=300  127.0.0.11:6901"
        );
        assert!(
            lines[2].starts_with("-   alt \"2\"") && lines[2].contains("125.0 MB/s prior"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("clear  excluded: stale"), "{}", lines[2]);
        assert_eq!(
            lines[3],
            "dropped messages: bad tag 1, replayed 2, unknown alternate 3, malformed 4"
        );
        assert_eq!(
            lines[4],
            "last datagram failing authentication (wrong key?) from 10.0.0.9:4000, 1.5 s ago"
        );
    }
}
