//! Readiness: whether this process should receive calls. It is not ready
//! while the database does not answer (checked every few seconds, so it
//! recovers by itself when the database returns) or once it has begun
//! shutting down. gRPC health (`grpc.health.v1.Health`) and the HTTP
//! `/readyz` both report it; `/healthz` (liveness) only says the process
//! runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use roster_storage::UserStore;
use tokio::sync::watch;

/// Whether the database answers and whether the server is draining.
#[derive(Debug)]
pub struct Readiness {
    database_up: AtomicBool,
    draining: AtomicBool,
    ready: watch::Sender<bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            database_up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            ready: watch::Sender::new(true),
        }
    }
}

impl Readiness {
    /// Whether calls should be routed here.
    pub fn is_ready(&self) -> bool {
        self.database_up() && !self.draining.load(Ordering::SeqCst)
    }

    /// Whether the last database check succeeded.
    pub fn database_up(&self) -> bool {
        self.database_up.load(Ordering::SeqCst)
    }

    /// Records a database check.
    pub fn set_database_up(&self, up: bool) {
        if self.database_up.swap(up, Ordering::SeqCst) != up {
            if up {
                tracing::info!("database reachable again: ready");
            } else {
                tracing::warn!("database unreachable: not ready, calls fail fast with UNAVAILABLE");
            }
            self.publish();
        }
    }

    /// Marks the server as shutting down; it is never ready again.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.publish();
    }

    fn publish(&self) {
        self.ready.send_replace(self.is_ready());
    }

    /// Changes of [`Self::is_ready`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }
}

/// Pings the database every `interval` (each ping may take as long) and
/// records the answers, until the task is aborted.
pub async fn watch_database(
    readiness: Arc<Readiness>,
    store: Arc<dyn UserStore>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let up = matches!(
            tokio::time::timeout(interval, store.ping()).await,
            Ok(Ok(()))
        );
        readiness.set_database_up(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_database_until_draining() {
        let r = Readiness::default();
        let mut changes = r.subscribe();
        assert!(r.is_ready());
        r.set_database_up(false);
        assert!(!r.is_ready() && changes.has_changed().unwrap());
        assert!(!*changes.borrow_and_update());
        r.set_database_up(true);
        assert!(*changes.borrow_and_update());
        r.drain();
        assert!(!r.is_ready());
        r.set_database_up(true);
        assert!(!r.is_ready());
    }
}
