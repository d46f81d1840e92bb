//! How a running server is told to stop or to reload: the signals its packaging sends, and a
//! [`Shutdown`] that its TFTP server and other tasks share.
//!
//! Signals, for every role: SIGTERM and SIGINT stop gracefully (new requests are refused,
//! transfers in progress get a grace period, then end with an ERROR; a second one ends them at
//! once); SIGHUP re-reads the config; SIGUSR1 toggles draining on an alternate and is ignored
//! (with a log line) elsewhere. Nothing else is caught, so SIGKILL and SIGQUIT work as usual.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use smol::stream::{Stream, StreamExt};
use smol::Timer;

/// What a role is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: stop gracefully.
    Stop,
    /// SIGHUP: re-read the config.
    Reload,
    /// SIGUSR1: toggle draining (alternates).
    ToggleDrain,
}

/// A role's requests: from the process's signals, or none at all (the demo's in-process roles).
pub struct Requests {
    stream: Pin<Box<dyn Stream<Item = io::Result<Signal>> + Send>>,
}

impl Requests {
    /// The process's SIGTERM, SIGINT, SIGHUP and SIGUSR1, from now on.
    pub fn from_signals() -> Result<Requests, String> {
        let signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup, Signal::Usr1])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        Ok(Requests {
            stream: Box::pin(signals),
        })
    }

    /// SIGTERM and SIGINT only (a command in a terminal: SIGHUP still ends it).
    pub fn stop_signals() -> Result<Requests, String> {
        let signals = Signals::new([Signal::Term, Signal::Int])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        Ok(Requests {
            stream: Box::pin(signals),
        })
    }

    /// No requests ever.
    pub fn none() -> Requests {
        Requests {
            stream: Box::pin(smol::stream::pending()),
        }
    }

    /// The next request (waits for ever if there is none).
    pub async fn next(&mut self) -> Request {
        loop {
            match self.stream.next().await {
                Some(Ok(Signal::Hup)) => return Request::Reload,
                Some(Ok(Signal::Usr1)) => return Request::ToggleDrain,
                Some(Ok(_)) => return Request::Stop,
                Some(Err(e)) => crate::log::warning!("signals: {e}"),
                None => smol::future::pending::<()>().await,
            }
        }
    }
}

/// What a running role is told: its requests, and how to read its config again.
pub struct Control<C> {
    /// Stop, reload, drain.
    pub requests: Requests,
    /// Reads the config again (for [`Request::Reload`]).
    pub reload: Box<dyn FnMut() -> Result<C, String>>,
}

impl<C> Control<C> {
    /// Requests from the process's signals; `reload` re-reads the config.
    pub fn from_signals(
        reload: impl FnMut() -> Result<C, String> + 'static,
    ) -> Result<Self, String> {
        Ok(Control {
            requests: Requests::from_signals()?,
            reload: Box::new(reload),
        })
    }

    /// No requests (a role inside another program, such as the demo).
    pub fn none() -> Self {
        Control {
            requests: Requests::none(),
            reload: Box::new(|| Err("no config to reload".into())),
        }
    }
}

/// Runs a bound server as a daemon until it stops: drops to `user` if asked, then `serve`s it
/// with the process's signals. The drop comes first: it needs the process to have one thread,
/// and the signals start another.
pub fn run_daemon<S, C, F>(
    bound: S,
    user: Option<&str>,
    reload: impl FnMut() -> Result<C, String> + 'static,
    serve: impl FnOnce(S, Control<C>) -> F,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    if let Some(user) = user {
        crate::privileges::drop_to(user)?;
    }
    let control = Control::from_signals(reload)?;
    smol::block_on(serve(bound, control))
}

/// A graceful stop shared by a server's tasks: once begun, new work is refused and work in
/// progress may go on until the deadline. Cheap to check (one atomic load).
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Nanoseconds after `origin` plus one; 0: not begun.
    deadline: AtomicU64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                deadline: AtomicU64::new(0),
            }),
        }
    }
}

/// How often waiters look again while a shutdown is under way.
const POLL: Duration = Duration::from_millis(20);

impl Shutdown {
    /// Begins the stop: work in progress may go on for `grace` (an earlier deadline from a
    /// previous call stays).
    pub fn begin(&self, grace: Duration) {
        let at = Instant::now() + grace;
        let stamp = at.saturating_duration_since(self.inner.origin).as_nanos() as u64 + 1;
        let _ = self
            .inner
            .deadline
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (old == 0 || stamp < old).then_some(stamp)
            });
    }

    /// Whether the stop has begun (refuse new work).
    pub fn is_begun(&self) -> bool {
        self.inner.deadline.load(Ordering::Acquire) != 0
    }

    /// Until when work in progress may go on, once begun.
    pub fn deadline(&self) -> Option<Instant> {
        match self.inner.deadline.load(Ordering::Acquire) {
            0 => None,
            stamp => Some(self.inner.origin + Duration::from_nanos(stamp - 1)),
        }
    }

    /// Whether work in progress must end now.
    pub fn is_over(&self) -> bool {
        self.deadline().is_some_and(|at| Instant::now() >= at)
    }

    /// Resolves once the stop has begun and `idle()` holds (checked every 20 ms meanwhile).
    pub async fn idle(&self, idle: impl Fn() -> bool) {
        while !(self.is_begun() && idle()) {
            Timer::after(POLL).await;
        }
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs `work` until it ends; on [`Request::Stop`] begins `shutdown` with `grace` (a second
/// stop ends the grace at once) and lets `work` finish; other requests go to `on_request`.
pub async fn serve_until_stopped<W, F>(
    work: W,
    shutdown: &Shutdown,
    grace: impl Fn() -> Duration,
    mut requests: Requests,
    mut on_request: F,
) -> Result<(), String>
where
    W: Future<Output = Result<(), String>>,
    F: FnMut(Request),
{
    let control = async {
        loop {
            match requests.next().await {
                Request::Stop if shutdown.is_begun() => {
                    crate::log::info!("stop again: ending transfers now");
                    shutdown.begin(Duration::ZERO);
                }
                Request::Stop => {
                    let grace = grace();
                    crate::log::info!(
                        "stopping: no new transfers; those in progress get {} ms",
                        grace.as_millis()
                    );
                    shutdown.begin(grace);
                }
                other => on_request(other),
            }
        }
    };
    smol::future::or(work, control).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_begins_once_and_keeps_the_earliest_deadline() {
        let s = Shutdown::default();
        assert!(!s.is_begun() && s.deadline().is_none() && !s.is_over());
        s.begin(Duration::from_secs(60));
        let first = s.deadline().unwrap();
        assert!(s.is_begun() && !s.is_over());
        s.begin(Duration::from_secs(120));
        assert_eq!(
            s.deadline(),
            Some(first),
            "a later deadline does not extend it"
        );
        s.clone().begin(Duration::ZERO);
        assert!(s.is_over(), "clones share the stop");
    }

    #[test]
    fn earliest_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, Some(now)), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}
