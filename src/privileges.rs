//! Dropping root after the privileged ports are bound, as dnsmasq does.
//!
//! The user is looked up in `/etc/passwd` (no libc, no NSS: a router's local accounts). The
//! raw `setresuid` family changes only the calling thread, so the drop happens before any
//! other thread exists (the roles bind synchronously and start smol afterwards) and is refused
//! otherwise rather than leaving a half-privileged process.

use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid, Gid, Uid};

/// A local account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Finds `user` (a name or a numeric uid) in `/etc/passwd` text.
pub fn lookup(user: &str, passwd: &str) -> Result<Account, String> {
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if let [name, _, uid, gid, ..] = fields[..] {
            if name == user || uid == user {
                let parse = |s: &str| {
                    s.parse::<u32>()
                        .map_err(|_| format!("/etc/passwd: bad id in {line:?}"))
                };
                return Ok(Account {
                    uid: parse(uid)?,
                    gid: parse(gid)?,
                });
            }
        }
    }
    Err(format!("no user {user:?} in /etc/passwd"))
}

/// Threads in this process, from `/proc/self/status`.
fn thread_count() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "no thread count in /proc/self/status".to_string())
}

/// Becomes `user` for good (real, effective and saved ids; supplementary groups reset).
pub fn drop_to(user: &str) -> Result<(), String> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(format!(
            "cannot drop to {user}: {threads} threads already run"
        ));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    let account = lookup(user, &passwd)?;
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    let fail = |what: &str, e: rustix::io::Errno| format!("cannot drop to {user}: {what}: {e}");
    set_thread_groups(&[gid]).map_err(|e| fail("setgroups", e))?;
    set_thread_res_gid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    set_thread_res_uid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    crate::log::info!(
        "running as {user} (uid {}, gid {})",
        account.uid,
        account.gid
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbroken:x:abc:1::/:/bin/false\n";

    #[test]
    fn finds_users_by_name_or_uid() {
        assert_eq!(
            lookup("nobody", PASSWD),
            Ok(Account {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(lookup("0", PASSWD), Ok(Account { uid: 0, gid: 0 }));
        assert!(lookup("ghost", PASSWD)
            .unwrap_err()
            .contains("no user \"ghost\""));
        assert!(lookup("broken", PASSWD).unwrap_err().contains("bad id"));
    }

    #[test]
    fn refuses_to_drop_with_threads_running() {
        // The test harness runs tests on threads: a drop here must be refused, never partial.
        let err = drop_to("nobody").unwrap_err();
        assert!(err.contains("threads already run"), "{err}");
    }
}
