//! The files a central serves: the alternate list, generated from the table for each client,
//! and the URL a UEFI HTTP boot client is sent to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::{lock, SharedTable};
use crate::balance::{Ranked, RecentLists};
use crate::formats::alt_list::{self, AltEntry, IPXE_LIST_PATH, LIST_PATH};
use crate::formats::uboot;
use crate::log;
use crate::tftp::path::SafePath;
use crate::tftp::source::{Content, FileSource, OpenError};

/// Serves the alternate list, generated from the table for each client: as text, as an iPXE
/// script and as a U-Boot script image.
pub(super) struct ListSource {
    table: SharedTable,
    /// The last list handed to each client, for clients that ask again at once.
    recent: Mutex<RecentLists>,
    /// Backup centrals (`HOST:PORT`) that the iPXE list asks when no alternate serves.
    backups: Vec<String>,
}

impl ListSource {
    pub(super) fn new(table: SharedTable, backups: Vec<String>) -> Self {
        ListSource {
            table,
            recent: Mutex::default(),
            backups,
        }
    }

    /// The list for `client`: the one it got moments ago, or a new assignment.
    fn list_for(&self, client: SocketAddr, now: Instant) -> Vec<Ranked> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let (ranked, repeated) = recent.list_for(&mut lock(&self.table), now, client);
        if repeated {
            log::debug!("central: {client}: list again (same as moments ago)");
        } else {
            log::info!("central: {client}: list {}", describe(&ranked));
        }
        ranked
    }
}

impl FileSource for ListSource {
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        let path = path.as_str();
        if ![LIST_PATH, IPXE_LIST_PATH, uboot::LIST_PATH].contains(&path) {
            return Err(OpenError::NotFound);
        }
        let ranked = self.list_for(client, Instant::now());
        let entries: Vec<AltEntry> = ranked
            .into_iter()
            .map(|r| AltEntry {
                id: r.id,
                addresses: r.addresses,
                http: r.http_addresses,
            })
            .collect();
        let bytes = match path {
            IPXE_LIST_PATH => alt_list::render_ipxe(&entries, &self.backups).into_bytes(),
            uboot::LIST_PATH => uboot::script_image(
                "bootherd alternate list",
                &uboot::render_list(&entries, &self.backups),
            ),
            _ => alt_list::render(&entries).into_bytes(),
        };
        Ok(Content::Bytes(bytes.into()))
    }

    fn delivered(&self, path: &str, client: SocketAddr) {
        if [LIST_PATH, IPXE_LIST_PATH, uboot::LIST_PATH].contains(&path) {
            lock(&self.table).confirm(Instant::now(), client);
        }
    }
}

fn describe(ranked: &[Ranked]) -> String {
    if ranked.is_empty() {
        return "empty (no alternate available)".into();
    }
    ranked
        .iter()
        .map(|r| format!("{} ({:.2} s)", r.id, r.score_us as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ")
}

/// URLs for UEFI HTTP boot clients: the path on the first alternate of the client's order that
/// serves HTTP. Nothing is promised: the file is a network bootstrap program, and the list it
/// fetches next counts the boot.
pub(super) fn http_boot_locator(table: SharedTable) -> crate::pxe::server::HttpLocator {
    Arc::new(move |path, client| {
        let ranked = lock(&table).order(Instant::now(), Some(client.ip()));
        let best = ranked.iter().find_map(|r| r.http_addresses.first())?;
        Some(format!("http://{best}/{path}"))
    })
}

/// Answers nothing: a central without an NBP directory.
pub(super) struct Nothing;

impl FileSource for Nothing {
    fn open(&self, _: &SafePath, _: SocketAddr) -> Result<Content, OpenError> {
        Err(OpenError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Policy, Table};
    use crate::report::wire::tests::report;
    use std::time::Duration;

    #[test]
    fn list_source_renders_promises_and_confirms_on_delivery() {
        let table = Arc::new(Mutex::new(Table::new(Policy::default())));
        lock(&table)
            .handle_report(Instant::now(), report("alt1", 1))
            .unwrap();
        let src = ListSource::new(table.clone(), Vec::new());
        let client: SocketAddr = "127.0.0.1:999".parse().unwrap();
        let Ok(Content::Bytes(text)) =
            src.open(&crate::tftp::path::sanitize(LIST_PATH).unwrap(), client)
        else {
            panic!()
        };
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "# bootherd alternate list v1, best first\nalt1 127.0.0.11:6901 # http 127.0.0.11:8080\n"
        );
        assert_eq!(lock(&table).status(Instant::now())[0].promised, 1);
        // The same client again at once (a resent request): same list, no second promise;
        // another client counts, even from the same address.
        let now = Instant::now();
        assert_eq!(src.list_for(client, now)[0].id, "alt1");
        assert_eq!(lock(&table).status(now)[0].promised, 1);
        let other: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        src.list_for(other, now);
        assert_eq!(lock(&table).status(now)[0].promised, 2);
        // Only the client that acknowledged its list still counts after a few seconds.
        src.delivered(LIST_PATH, client);
        let later = now + crate::balance::TENTATIVE_TTL + Duration::from_millis(1);
        lock(&table)
            .handle_report(later, report("alt1", 2))
            .unwrap();
        assert_eq!(lock(&table).status(later)[0].promised, 1);
        src.list_for(client, later);
        assert_eq!(
            lock(&table).status(later)[0].promised,
            2,
            "a new boot after the window"
        );
        let Ok(Content::Bytes(script)) = src.open(
            &crate::tftp::path::sanitize(IPXE_LIST_PATH).unwrap(),
            client,
        ) else {
            panic!()
        };
        assert!(script.starts_with(b"#!ipxe\n"));
    }

    #[test]
    fn u_boot_script_is_a_list_request() {
        let table = Arc::new(Mutex::new(Table::new(Policy::default())));
        lock(&table)
            .handle_report(Instant::now(), report("alt1", 1))
            .unwrap();
        let src = ListSource::new(table.clone(), vec!["10.0.0.2:69".into()]);
        let client: SocketAddr = "127.0.0.1:999".parse().unwrap();
        let path = crate::tftp::path::sanitize(uboot::LIST_PATH).unwrap();
        let Ok(Content::Bytes(image)) = src.open(&path, client) else {
            panic!()
        };
        let script = uboot::render_list(
            &[AltEntry {
                id: "alt1".into(),
                addresses: vec!["127.0.0.11:6901".parse().unwrap()],
                http: Vec::new(),
            }],
            &["10.0.0.2:69".into()],
        );
        assert_eq!(
            image[..],
            uboot::script_image("bootherd alternate list", &script)[..]
        );
        assert_eq!(lock(&table).status(Instant::now())[0].promised, 1);
        src.delivered(uboot::LIST_PATH, client);
        assert_eq!(lock(&table).status(Instant::now())[0].promised, 1);
    }
}
