//! The list each client got moments ago, sans-IO: a client that resends its list request before
//! the answer reached it must get the same list, not a second promise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Ranked, Table};

/// A client that asks for the list again from the same address and port within this window (it
/// resent its request before our answer reached it) gets the same list, and no second boot is
/// counted against its first alternate. Keyed by port too: many simulated clients, or clients
/// behind one NAT, share an address.
const REPEAT_WINDOW: Duration = Duration::from_secs(3);

/// The last list handed to each client address and port, while within the repeat window.
#[derive(Debug, Default)]
pub struct RecentLists {
    recent: HashMap<SocketAddr, (Instant, Vec<Ranked>)>,
}

impl RecentLists {
    /// The list for `client` at `now`: the one it got moments ago (then `true`), or a new
    /// assignment from `table` (then `false`).
    pub fn list_for(
        &mut self,
        table: &mut Table,
        now: Instant,
        client: SocketAddr,
    ) -> (Vec<Ranked>, bool) {
        self.recent
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < REPEAT_WINDOW);
        if let Some((_, ranked)) = self.recent.get(&client) {
            return (ranked.clone(), true);
        }
        let ranked = table.assign(now, client);
        self.recent.insert(client, (now, ranked.clone()));
        (ranked, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Policy;
    use crate::report::wire::tests::report;

    #[test]
    fn a_repeated_request_gets_the_same_list_and_no_second_promise() {
        let mut table = Table::new(Policy::default());
        let now = Instant::now();
        table.handle_report(now, report("alt1", 1)).unwrap();
        let mut recent = RecentLists::default();
        let client: SocketAddr = "127.0.0.1:999".parse().unwrap();
        let (first, repeated) = recent.list_for(&mut table, now, client);
        assert!(!repeated);
        assert_eq!(first[0].id, "alt1");
        let (again, repeated) = recent.list_for(&mut table, now + Duration::from_secs(1), client);
        assert!(repeated);
        assert_eq!(again, first);
        assert_eq!(table.status(now)[0].promised, 1);
        // Another port of the same address is another client.
        let other: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        assert!(!recent.list_for(&mut table, now, other).1);
        assert_eq!(table.status(now)[0].promised, 2);
        // After the window, the same client is a new boot.
        let (_, repeated) = recent.list_for(&mut table, now + REPEAT_WINDOW, client);
        assert!(!repeated);
    }
}
