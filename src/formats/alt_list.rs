//! The alternate list, served by the central at [`LIST_PATH`] (text) and [`IPXE_LIST_PATH`]
//! (an iPXE script of the same order).
//!
//! Text format v1: one alternate per line, best first: its id, then one or more TFTP addresses
//! (`HOST:PORT`) to try in order. `#` starts a comment; blank lines are ignored.
//!
//! ```text
//! # bootherd alternate list v1, best first
//! alt2 127.0.0.12:6902
//! alt1 127.0.0.11:6901 10.0.0.11:69
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Where the central serves the text list.
pub const LIST_PATH: &str = "bootherd/alternates.txt";
/// Where the central serves the iPXE rendering.
pub const IPXE_LIST_PATH: &str = "bootherd/alternates.ipxe";

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltEntry {
    /// Alternate id.
    pub id: String,
    /// TFTP addresses, `HOST:PORT`, in the order to try.
    pub addresses: Vec<String>,
}

/// Renders the text list.
pub fn render(entries: &[AltEntry]) -> String {
    let mut out = String::from("# bootherd alternate list v1, best first\n");
    for e in entries {
        out.push_str(&e.id);
        for a in &e.addresses {
            out.push(' ');
            out.push_str(a);
        }
        out.push('\n');
    }
    out
}

/// Parses the text list. Lines without an address are errors, with their number.
pub fn parse(text: &str) -> Result<Vec<AltEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let id = words.next().unwrap_or_default();
        let addresses: Vec<String> = words.map(String::from).collect();
        if addresses.is_empty() {
            return Err(alloc::format!(
                "line {}: alternate {id} has no address",
                n + 1
            ));
        }
        out.push(AltEntry {
            id: String::from(id),
            addresses,
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
/// order, falling through (`||`) to the next when one fails or stays silent for
/// [`IPXE_TIMEOUT_MS`]. When none can serve, the same list script of each of `backups` (other
/// centrals, `HOST:PORT`) is tried, once: a fresh list from a central that may know better.
pub fn render_ipxe(entries: &[AltEntry], backups: &[String]) -> String {
    let mut out = String::from("#!ipxe\n# bootherd alternate list v1, best first\n");
    // Writing to a String cannot fail.
    for e in entries {
        for a in &e.addresses {
            let _ = writeln!(
                out,
                "echo bootherd: trying {id} at {a}\n\
                 chain --autofree --timeout {IPXE_TIMEOUT_MS} tftp://{a}/{path}/${{uuid}}/${{mac:hexhyp}}/${{platform}}-${{buildarch}} || \
                 echo bootherd: {id} at {a} did not answer",
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

    fn entries() -> Vec<AltEntry> {
        vec![
            AltEntry {
                id: "alt2".into(),
                addresses: vec!["127.0.0.12:6902".into()],
            },
            AltEntry {
                id: "alt1".into(),
                addresses: vec!["127.0.0.11:6901".into(), "10.0.0.11:69".into()],
            },
        ]
    }

    #[test]
    fn text_round_trip() {
        let text = render(&entries());
        assert_eq!(
            text,
            "# bootherd alternate list v1, best first\nalt2 127.0.0.12:6902\nalt1 127.0.0.11:6901 10.0.0.11:69\n"
        );
        assert_eq!(parse(&text).unwrap(), entries());
        assert_eq!(parse("").unwrap(), []);
    }

    #[test]
    fn comments_blank_lines_and_errors() {
        let list = parse("\n  # c\nalt1 1.2.3.4:69  # trailing\n\n").unwrap();
        assert_eq!(list[0].addresses, ["1.2.3.4:69"]);
        assert_eq!(
            parse("ok 1.2.3.4:69\nlonely\n").unwrap_err(),
            "line 2: alternate lonely has no address"
        );
    }

    #[test]
    fn ipxe_rendering_tries_every_address_in_order() {
        let script = render_ipxe(&entries(), &[]);
        assert!(script.starts_with("#!ipxe\n"));
        let chains: Vec<&str> = script.lines().filter(|l| l.starts_with("chain")).collect();
        assert_eq!(chains.len(), 3);
        assert!(chains[0].starts_with("chain --autofree --timeout 1000 tftp://127.0.0.12:6902/bootherd.ipxe/${uuid}/${mac:hexhyp}/${platform}-${buildarch} || "));
        assert!(chains[2].contains("tftp://10.0.0.11:69/"));
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
