//! Connections for reads, kept outside sqlx's pool.
//!
//! sqlx's pool tests every connection given back to it with a round trip
//! to PostgreSQL (a `Sync`, answered by `ReadyForQuery`), so each read
//! through it cost two round trips: the statement and the test. A read
//! holds no transaction and no lock, so a connection given back here is
//! idle at once, and sqlx waits for anything a cancelled read left unread
//! before its next statement on that connection. A connection that failed
//! (an I/O or protocol error) is closed instead of kept, one idle for
//! over [`PING_IDLE_AFTER`] is tested before it is handed out, as the
//! pool's are, and one open for [`MAX_LIFETIME`] is closed when given
//! back, as sqlx's pool does by default, so that a server-side session
//! does not grow for ever.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::PING_IDLE_AFTER;

/// How long a connection is kept: sqlx's pool's default.
pub const MAX_LIFETIME: Duration = Duration::from_mins(30);

/// An idle connection: since when it is idle, and when it was opened.
type Idle = (PgConnection, Instant, Instant);

/// Up to a number of connections, opened as needed, handed out one
/// caller at a time, in the order callers asked. Public for the
/// benchmark's baselines, which read and write as Roster does.
#[derive(Debug)]
pub struct ReadPool {
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    most: u32,
    options: PgConnectOptions,
    acquire_timeout: Duration,
}

/// A connection of a [`ReadPool`], given back when dropped.
pub struct ReadConn<'a> {
    conn: Option<PgConnection>,
    opened: Instant,
    pool: &'a ReadPool,
    /// Set when a statement on it failed in a way that may have left it
    /// unusable: it is closed, not given back.
    failed: bool,
    _permit: SemaphorePermit<'a>,
}

impl ReadPool {
    /// Up to `most` connections made with `options`, opened as callers
    /// ask; a caller waits up to `acquire_timeout` for one.
    pub fn new(most: u32, options: PgConnectOptions, acquire_timeout: Duration) -> Self {
        Self {
            idle: Mutex::default(),
            permits: Semaphore::new(most as usize),
            most,
            options,
            acquire_timeout,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Only pushed to and popped from: a panic elsewhere cannot leave
        // it half changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection: an idle one (tested first if it was idle long), or a
    /// new one. Waits for a free one up to the acquire timeout.
    pub async fn acquire(&self) -> Result<ReadConn<'_>, sqlx::Error> {
        tokio::time::timeout(self.acquire_timeout, async {
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
            loop {
                let popped = self.idle().pop();
                let (conn, opened) = match popped {
                    Some((mut conn, since, opened)) => {
                        if since.elapsed() > PING_IDLE_AFTER && conn.ping().await.is_err() {
                            continue;
                        }
                        (conn, opened)
                    }
                    None => (self.options.connect().await?, Instant::now()),
                };
                return Ok(ReadConn {
                    conn: Some(conn),
                    opened,
                    pool: self,
                    failed: false,
                    _permit: permit,
                });
            }
        })
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Connections open, and those idle.
    pub fn sizes(&self) -> (u32, usize) {
        let idle = self.idle().len();
        let busy = self.most - u32::try_from(self.permits.available_permits()).unwrap_or(0);
        (u32::try_from(idle).unwrap_or(u32::MAX) + busy, idle)
    }

    /// Most connections it opens.
    pub fn most(&self) -> u32 {
        self.most
    }

    /// Closes the idle connections and hands out no more; those in use
    /// are closed when given back.
    pub async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle());
        for (conn, ..) in idle {
            let _ = conn.close().await;
        }
    }
}

impl ReadConn<'_> {
    /// Notes a statement's failure: one that may have left the
    /// connection unusable closes it when it is given back.
    pub fn failed(&mut self, error: &sqlx::Error) {
        let usable = match error {
            // Class 08 is "connection exception"; 57P01 to 57P05 end the
            // session (an administrator's command, a shutdown, a timeout).
            sqlx::Error::Database(db) => !db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::Encode(_)
            | sqlx::Error::Decode(_) => true,
            _ => false,
        };
        self.failed |= !usable;
    }
}

#[allow(
    clippy::expect_used,
    reason = "the connection is taken only when the holder is dropped"
)]
impl Deref for ReadConn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        // Taken only in `drop`.
        self.conn.as_ref().expect("a held connection")
    }
}

#[allow(
    clippy::expect_used,
    reason = "the connection is taken only when the holder is dropped"
)]
impl DerefMut for ReadConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a held connection")
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.failed
            && self.opened.elapsed() < MAX_LIFETIME
            && !self.pool.permits.is_closed()
        {
            self.pool.idle().push((conn, Instant::now(), self.opened));
        }
    }
}
