//! The alternate list, served by the central at [`LIST_PATH`] (text) and [`IPXE_LIST_PATH`]
//! (an iPXE script of the same order).
//!
//! Text format v1: one alternate per line, best first: its id, then one or more TFTP addresses
//! (`HOST:PORT`) to try in order. `#` starts a comment; blank lines are ignored. An alternate
//! that serves HTTP too has its HTTP addresses in a comment on its line, `# http` and the
//! addresses: readers that know no HTTP skip the comment as every comment, so the format stays
//! v1 for them.
//!
//! ```text
//! # bootherd alternate list v1, best first
//! alt2 127.0.0.12:6902 # http 127.0.0.12:8080
//! alt1 127.0.0.11:6901 10.0.0.11:69
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::SocketAddr;

/// Where the central serves the text list.
pub const LIST_PATH: &str = "bootherd/alternates.txt";
/// Where the central serves the iPXE rendering.
pub const IPXE_LIST_PATH: &str = "bootherd/alternates.ipxe";

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltEntry {
    /// Alternate id.
    pub id: String,
    /// TFTP addresses, in the order to try.
    pub addresses: Vec<SocketAddr>,
    /// HTTP addresses, tried before the TFTP ones by clients that speak HTTP.
    pub http: Vec<SocketAddr>,
}

/// The comment word that marks a line's HTTP addresses.
const HTTP_MARK: &str = "http";

/// Renders the text list.
pub fn render(entries: &[AltEntry]) -> String {
    let mut out = String::from("# bootherd alternate list v1, best first\n");
    for e in entries {
        out.push_str(&e.id);
        // Writing to a String cannot fail.
        for a in &e.addresses {
            let _ = write!(out, " {a}");
        }
        if !e.http.is_empty() {
            out.push_str(" # ");
            out.push_str(HTTP_MARK);
            for a in &e.http {
                let _ = write!(out, " {a}");
            }
        }
        out.push('\n');
    }
    out
}

/// Parses the text list. Lines without an address, or with one that is not `IP:PORT`
/// (`[IPv6]:PORT`), are errors, with their number.
pub fn parse(text: &str) -> Result<Vec<AltEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let (line, comment) = line.split_once('#').unwrap_or((line, ""));
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let id = words.next().unwrap_or_default();
        let addresses = |words: core::str::SplitWhitespace| {
            words
                .map(|a| {
                    a.parse().map_err(|_| {
                        alloc::format!("line {}: alternate {id}: {a} is not IP:PORT", n + 1)
                    })
                })
                .collect::<Result<Vec<SocketAddr>, String>>()
        };
        let mut comment = comment.split_whitespace();
        let http = match comment.next() {
            Some(HTTP_MARK) => addresses(comment)?,
            _ => Vec::new(),
        };
        let addresses = addresses(words)?;
        if addresses.is_empty() {
            return Err(alloc::format!(
                "line {}: alternate {id} has no address",
                n + 1
            ));
        }
        out.push(AltEntry {
            id: String::from(id),
            addresses,
            http,
        });
    }
    Ok(out)
}

/// How long iPXE waits for the first bytes of an alternate's per-client script (a progress
/// timeout: reset by every byte received), like the other clients' first-answer limit. iPXE
/// sees no ICMP errors, so a dead alternate costs this, and it counts bytes of data, not the
/// OACK: an alternate must send its first DATA within it.
pub const IPXE_TIMEOUT_MS: u32 = 1000;

/// Renders the list as an iPXE script: chain to each alternate's per-client boot script in
/// order, over HTTP first where the alternate has it, then over TFTP, falling through (`||`)
/// to the next when one fails or stays silent for [`IPXE_TIMEOUT_MS`]. When none can serve,
/// the same list script of each of `backups` (other centrals, `IP:PORT`) is tried, once: a
/// fresh list from a central that may know better.
pub fn render_ipxe(entries: &[AltEntry], backups: &[String]) -> String {
    let mut out = String::from("#!ipxe\n# bootherd alternate list v1, best first\n");
    // Writing to a String cannot fail.
    for e in entries {
        let http = e.http.iter().map(|a| ("http", a));
        for (scheme, a) in http.chain(e.addresses.iter().map(|a| ("tftp", a))) {
            let _ = writeln!(
                out,
                "echo bootherd: trying {id} at {scheme}://{a}\n\
                 chain --autofree --timeout {IPXE_TIMEOUT_MS} {scheme}://{a}/{path}/${{uuid}}/${{mac:hexhyp}}/${{platform}}-${{buildarch}} || \
                 echo bootherd: {id} at {scheme}://{a} did not answer",
                id = e.id,
                path = super::boot_config::IPXE_CONFIG_DIR,
            );
        }
    }
    if !backups.is_empty() {
        // A backup's script lists this central among its backups: ask each only once.
        out.push_str("isset ${bootherd-backup} && goto bootherd_none ||\nset bootherd-backup 1\n");
        for b in backups {
            let _ = writeln!(
                out,
                "echo bootherd: asking central {b}\n\
                 chain --autofree --timeout {IPXE_TIMEOUT_MS} tftp://{b}/{IPXE_LIST_PATH} || \
                 echo bootherd: no boot through central {b}"
            );
        }
        out.push_str(":bootherd_none\n");
    }
    out.push_str("echo bootherd: no alternate answered\nexit 1\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn at(address: &str) -> SocketAddr {
        address.parse().unwrap()
    }

    fn entries() -> Vec<AltEntry> {
        vec![
            AltEntry {
                id: "alt2".into(),
                addresses: vec![at("127.0.0.12:6902")],
                http: vec![at("127.0.0.12:8080")],
            },
            AltEntry {
                id: "alt1".into(),
                addresses: vec![at("127.0.0.11:6901"), at("10.0.0.11:69")],
                http: Vec::new(),
            },
        ]
    }

    #[test]
    fn text_round_trip() {
        let text = render(&entries());
        assert_eq!(
            text,
            "# bootherd alternate list v1, best first\nalt2 127.0.0.12:6902 # http 127.0.0.12:8080\nalt1 127.0.0.11:6901 10.0.0.11:69\n"
        );
        assert_eq!(parse(&text).unwrap(), entries());
        assert_eq!(parse("").unwrap(), []);
    }

    /// A reader of the list before HTTP: `#` ends the line for it, as it does here.
    fn old_parse(text: &str) -> Vec<(String, Vec<String>)> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut w = l.split_whitespace().map(String::from);
                (w.next().unwrap(), w.collect())
            })
            .collect()
    }

    #[test]
    fn readers_without_http_see_the_tftp_list_only() {
        let old = old_parse(&render(&entries()));
        assert_eq!(
            old,
            [
                ("alt2".to_string(), vec!["127.0.0.12:6902".to_string()]),
                (
                    "alt1".to_string(),
                    vec!["127.0.0.11:6901".to_string(), "10.0.0.11:69".to_string()]
                ),
            ]
        );
        // Other comments are not HTTP addresses.
        assert_eq!(
            parse("a 1.2.3.4:69 # note 5.6.7.8:80\n").unwrap()[0].http,
            []
        );
    }

    #[test]
    fn comments_blank_lines_and_errors() {
        let list = parse("\n  # c\nalt1 1.2.3.4:69  # trailing\n\n").unwrap();
        assert_eq!(list[0].addresses, [at("1.2.3.4:69")]);
        assert_eq!(
            parse("ok 1.2.3.4:69\nlonely\n").unwrap_err(),
            "line 2: alternate lonely has no address"
        );
        assert_eq!(
            parse("v6 [fd00::1]:69\n").unwrap()[0].addresses,
            [at("[fd00::1]:69")]
        );
        for (text, want) in [
            ("a host:69\n", "line 1: alternate a: host:69 is not IP:PORT"),
            ("a 1.2.3.4\n", "line 1: alternate a: 1.2.3.4 is not IP:PORT"),
            (
                "\na 1.2.3.4:69 # http 1.2.3.4\n",
                "line 2: alternate a: 1.2.3.4 is not IP:PORT",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn ipxe_rendering_tries_http_then_tftp_then_the_next_alternate() {
        let script = render_ipxe(&entries(), &[]);
        assert!(script.starts_with("#!ipxe\n"));
        let chains: Vec<&str> = script.lines().filter(|l| l.starts_with("chain")).collect();
        assert_eq!(chains.len(), 4);
        assert!(chains[0].starts_with("chain --autofree --timeout 1000 http://127.0.0.12:8080/bootherd.ipxe/${uuid}/${mac:hexhyp}/${platform}-${buildarch} || "));
        assert!(chains[1].starts_with("chain --autofree --timeout 1000 tftp://127.0.0.12:6902/bootherd.ipxe/${uuid}/${mac:hexhyp}/${platform}-${buildarch} || "));
        assert!(chains[3].contains("tftp://10.0.0.11:69/"));
        assert!(
            !script.contains("bootherd-backup"),
            "no backups, no section"
        );
        assert!(script.ends_with("echo bootherd: no alternate answered\nexit 1\n"));
    }

    #[test]
    fn ipxe_rendering_asks_backup_centrals_once_after_the_alternates() {
        let script = render_ipxe(&entries(), &["10.0.0.2:69".into(), "10.0.0.3:69".into()]);
        let lines: Vec<&str> = script.lines().collect();
        let last_alternate = lines
            .iter()
            .rposition(|l| l.contains("bootherd.ipxe/"))
            .unwrap();
        assert_eq!(
            &lines[last_alternate + 1..],
            [
                "isset ${bootherd-backup} && goto bootherd_none ||",
                "set bootherd-backup 1",
                "echo bootherd: asking central 10.0.0.2:69",
                "chain --autofree --timeout 1000 tftp://10.0.0.2:69/bootherd/alternates.ipxe || echo bootherd: no boot through central 10.0.0.2:69",
                "echo bootherd: asking central 10.0.0.3:69",
                "chain --autofree --timeout 1000 tftp://10.0.0.3:69/bootherd/alternates.ipxe || echo bootherd: no boot through central 10.0.0.3:69",
                ":bootherd_none",
                "echo bootherd: no alternate answered",
                "exit 1",
            ]
        );
    }
}
