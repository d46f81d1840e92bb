//! The metrics endpoints of a central and an alternate on loopback, scraped with `curl`: the
//! central's table (state, score, capacity, promises), lists handed out and report drops by
//! reason, each server's transfer counters after a boot, 404 and HEAD, and the alternate's
//! state as it leaves.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{bootherd, site_config as config, small_site, Daemon};

const KERNEL: usize = 300_000;

fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (installed by .ci/install-deps)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every sample of a scrape: `name{labels}` to its value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let out = curl(&["-f", &format!("http://{addr}/metrics")]);
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Scrapes until `ready` holds (up to 10 s), then returns that scrape.
fn scrape_until(
    addr: SocketAddr,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(addr);
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "never ready: {samples:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[test]
fn central_and_alternate_metrics_scraped_with_curl() {
    let dir = small_site("metrics", KERNEL);
    let central_config = config(
        &dir,
        "central.toml",
        "[central]\ntftp_listen = \"127.0.0.1:0\"\nreport_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n",
    );
    let central = Daemon::spawn(&["central", "--config", &central_config]);
    let reports = central.addr_after("reports on ");
    let tftp = central.addr_after("TFTP on ");
    let central_metrics = central.addr_after("metrics: listening on ");
    let alternate_config = config(
        &dir,
        "alt1.toml",
        &format!(
            "[alternate]\nid = \"alt1\"\ntftp_listen = \"127.0.0.11:0\"\nroot = \"boot\"\ncentrals = [\"{reports}\"]\ninterval_ms = 200\nlink_bytes_per_sec = 50000000\nmetrics_listen = \"127.0.0.11:0\"\n"
        ),
    );
    let alternate = Daemon::spawn(&["alternate", "--config", &alternate_config]);
    let alternate_metrics = alternate.addr_after("metrics: listening on ");

    let samples = scrape_until(central_metrics, |s| {
        s.get("bootherd_alternate_included{alternate=\"alt1\"}") == Some(&1.0)
    });
    let serving = "bootherd_alternate_state{alternate=\"alt1\",state=\"serving\"}";
    assert_eq!(value(&samples, serving), 1.0);
    for state in ["draining", "leaving", "stale"] {
        let series = format!("bootherd_alternate_state{{alternate=\"alt1\",state=\"{state}\"}}");
        assert_eq!(value(&samples, &series), 0.0, "{state}");
    }
    assert!(
        value(
            &samples,
            "bootherd_alternate_score_seconds{alternate=\"alt1\"}"
        ) > 0.0
    );
    assert_eq!(
        value(
            &samples,
            "bootherd_alternate_capacity_bytes_per_second{alternate=\"alt1\"}"
        ),
        50e6,
        "the configured cap on what it learns"
    );
    assert_eq!(value(&samples, "bootherd_central_alternates"), 1.0);
    assert_eq!(value(&samples, "bootherd_central_lists_total"), 0.0);

    // Two boots through the central, and a datagram that is no report.
    let out = Command::new(bootherd())
        .args(["client", "--central", &tftp.to_string(), "--clients", "2"])
        .env("BOOTHERD_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"not a report", reports).unwrap();

    let samples = scrape_until(central_metrics, |s| {
        s.get("bootherd_central_report_drops_total{reason=\"malformed\"}") == Some(&1.0)
    });
    assert_eq!(value(&samples, "bootherd_central_lists_total"), 2.0);
    assert_eq!(
        value(
            &samples,
            "bootherd_central_report_drops_total{reason=\"bad_tag\"}"
        ),
        0.0
    );
    // The central served the two lists over TFTP.
    assert_eq!(value(&samples, "bootherd_transfers_completed_total"), 2.0);
    assert_eq!(value(&samples, "bootherd_transfers_active"), 0.0);

    // The alternate served two configs and two kernels.
    let samples = scrape(alternate_metrics);
    assert!(!samples.keys().any(|k| k.starts_with("bootherd_alternate_")));
    assert_eq!(value(&samples, "bootherd_transfers_started_total"), 4.0);
    assert_eq!(value(&samples, "bootherd_transfers_completed_total"), 4.0);
    assert!(value(&samples, "bootherd_transfer_sent_bytes_total") >= 2.0 * KERNEL as f64);
    assert!(value(&samples, "bootherd_tftp_data_sent_total") > 0.0);
    assert_eq!(value(&samples, "bootherd_transfers_timed_out_total"), 0.0);

    // The media type, HEAD, and nothing but /metrics.
    let url = format!("http://{central_metrics}/metrics");
    let out = curl(&["-o", "/dev/null", "-w", "%{content_type}", &url]);
    assert_eq!(out.stdout, b"text/plain; version=0.0.4; charset=utf-8");
    let out = curl(&["-I", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(out.stdout, b"200");
    let other = format!("http://{central_metrics}/");
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &other]);
    assert_eq!(out.stdout, b"404");

    // The alternate leaves: the central's state says so.
    alternate.signal("TERM");
    let leaving = "bootherd_alternate_state{alternate=\"alt1\",state=\"leaving\"}";
    let samples = scrape_until(central_metrics, |s| s.get(leaving) == Some(&1.0));
    assert_eq!(value(&samples, serving), 0.0);
    assert_eq!(
        value(&samples, "bootherd_alternate_included{alternate=\"alt1\"}"),
        0.0
    );
    assert!(!samples.contains_key("bootherd_alternate_score_seconds{alternate=\"alt1\"}"));
}
