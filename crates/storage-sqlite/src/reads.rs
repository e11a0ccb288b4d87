//! Reads by key, run on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own: a statement
//! is a message to that thread, its rows a message back, and giving the
//! connection back to the pool one more round (sqlx tests every
//! connection given back to it). A read of one user by id takes SQLite
//! tens of microseconds; the four thread wake-ups around it cost more.
//! A `perf` profile of get_user put over half of sqlx's connection
//! threads' time in switching to and from them.
//!
//! So reads that look rows up by key ([`SqlDatabase::connection`]) run
//! here, on read-only connections the store holds, on the thread that
//! asks, where a read of one user blocks it no longer than it would wait
//! for the hand-off. Reads that may visit many rows (pages of users,
//! counts, searches: [`SqlDatabase::scan_connection`]) and every statement
//! that writes keep sqlx's connections and their threads, so that neither
//! a long scan nor a wait for the write lock holds an async worker.
//!
//! [`SqlDatabase::connection`]: roster_storage::exec::SqlDatabase::connection
//! [`SqlDatabase::scan_connection`]: roster_storage::exec::SqlDatabase::scan_connection

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use roster_storage::StorageError;
use roster_storage::rows::{StoredUser, UserRow};
use roster_storage::sessions::{ColumnType, Value};
use roster_storage::sql::{Bind, Statement};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, Row};

/// Idle connections kept. Each is in use only for the length of one
/// statement on one thread, so as many are open as threads read at once:
/// the async workers, and the odd blocking thread.
const MOST_IDLE: usize = 8;

/// Prepared statements each connection keeps: the reads by key are a few
/// fixed texts.
const STATEMENT_CACHE: usize = 64;

/// Read-only connections to one database file, opened as threads ask.
/// Public for the benchmark's baselines, which read as Roster does.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the database file at `path`; `None` for a database
    /// that is not a file of its own (an in-memory one, which only
    /// sqlx's connections share), whose reads stay on sqlx's pool.
    pub fn of(path: &Path, busy_timeout: Duration) -> Option<Self> {
        path.is_file().then(|| Self {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::default(),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // Only pushed to and popped from: a panic elsewhere cannot leave
        // it half changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // Read-only: a write handed here by mistake fails at once instead
        // of waiting for the write lock on an async worker.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Runs `statement` on an idle connection (or a new one) and decodes
    /// each row with `decode`.
    pub fn fetch<T>(
        &self,
        statement: Statement,
        decode: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StorageError> {
        let popped = self.idle().pop();
        let conn = match popped {
            Some(conn) => conn,
            None => self.open().map_err(map_error)?,
        };
        let rows = fetch_on(&conn, statement, decode);
        let mut idle = self.idle();
        if idle.len() < MOST_IDLE {
            idle.push(conn);
        }
        rows.map_err(map_error)
    }

    /// Connections open and idle.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// Closes the idle connections; connections in use are kept when
    /// given back. The store closes its readers after its pools.
    pub fn close(&self) {
        self.idle().clear();
    }
}

fn fetch_on<T>(
    conn: &Connection,
    statement: Statement,
    decode: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut prepared = conn.prepare_cached(&statement.sql)?;
    let binds = statement.binds.into_iter().map(value);
    let mut rows = prepared.query(rusqlite::params_from_iter(binds))?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// A bound value as SQLite stores it: booleans as integers, JSON as text.
fn value(bind: Bind) -> SqlValue {
    match bind {
        Bind::Text(v) | Bind::Json(v) => SqlValue::Text(v),
        Bind::Int(v) => SqlValue::Integer(v),
        Bind::Bool(v) => SqlValue::Integer(i64::from(v)),
        Bind::NullText | Bind::NullInt => SqlValue::Null,
        Bind::Ints(v) => SqlValue::Text(crate::array_text(&v)),
    }
}

fn map_error(error: rusqlite::Error) -> StorageError {
    match error.sqlite_error_code() {
        // Held past the busy timeout: retrying may succeed.
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StorageError::Unavailable(Box::new(error))
        }
        _ => StorageError::internal(error),
    }
}

/// A row of [`roster_storage::sql::user_columns`].
pub(crate) fn stored_user(row: &Row<'_>) -> rusqlite::Result<StoredUser> {
    Ok(StoredUser {
        row: UserRow {
            id: row.get(0)?,
            external_id: row.get(1)?,
            first_name: row.get(2)?,
            last_name: row.get(3)?,
            username: row.get(4)?,
            locale: row.get(5)?,
            primary_email_address_id: row.get(6)?,
            primary_phone_number_id: row.get(7)?,
            password_hash: row.get(8)?,
            public_metadata: row.get(9)?,
            private_metadata: row.get(10)?,
            unsafe_metadata: row.get(11)?,
            banned: row.get(12)?,
            locked: row.get(13)?,
            image: row.get(14)?,
            created_at: row.get(15)?,
            updated_at: row.get(16)?,
            last_sign_in_at: row.get(17)?,
            code_window_start: row.get(18)?,
            code_window_sends: row.get(19)?,
            failed_sign_ins: row.get(20)?,
            locked_until: row.get(21)?,
        },
        emails: row.get(22)?,
        phones: row.get(23)?,
    })
}

/// A row of columns of the given types.
pub(crate) fn values(row: &Row<'_>, types: &[ColumnType]) -> rusqlite::Result<Vec<Value>> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(match t {
                ColumnType::Text => Value::Text(row.get(i)?),
                ColumnType::Int => Value::Int(row.get(i)?),
                ColumnType::Bool => Value::Bool(row.get(i)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]

    use super::{ColumnType, Readers, Statement, Value};
    use roster_storage::StorageError;
    use roster_storage::sql::Bind;
    use std::time::{Duration, Instant};

    fn database() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (a TEXT, b INTEGER, c INTEGER);
             INSERT INTO t VALUES ('x', 7, 1), (NULL, NULL, NULL);",
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn reads_bind_and_decode_every_kind_of_value_on_kept_connections() {
        let (_dir, path) = database();
        let readers = Readers::of(&path, Duration::from_secs(1)).unwrap();
        let types = [ColumnType::Text, ColumnType::Int, ColumnType::Bool];
        let statement = Statement {
            sql: "SELECT a, b, c FROM t WHERE a = ? OR b = ? OR c = ? OR a IS ? ORDER BY a".into(),
            binds: vec![
                Bind::Json("y".into()),
                Bind::Int(7),
                Bind::Bool(true),
                Bind::NullText,
            ],
        };
        let rows = readers
            .fetch(statement, |row| super::values(row, &types))
            .unwrap();
        assert_eq!(
            rows,
            [
                vec![Value::Text(None), Value::Int(None), Value::Bool(None)],
                vec![
                    Value::Text(Some("x".into())),
                    Value::Int(Some(7)),
                    Value::Bool(Some(true))
                ],
            ]
        );
        assert_eq!(readers.idle_count(), 1, "the connection is kept");
        readers.close();
        assert_eq!(readers.idle_count(), 0);
    }

    #[test]
    fn a_write_fails_at_once_while_another_connection_holds_the_lock() {
        let (_dir, path) = database();
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        let readers = Readers::of(&path, Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let result = readers.fetch(
            Statement::unbound("INSERT INTO t VALUES ('z', 1, 0) RETURNING a"),
            |row| row.get::<_, String>(0),
        );
        assert!(
            matches!(result, Err(StorageError::Internal(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "no wait for the lock"
        );
        // Reads go on beside the writer.
        let count = readers
            .fetch(Statement::unbound("SELECT count(*) FROM t"), |row| {
                row.get::<_, i64>(0)
            })
            .unwrap();
        assert_eq!(count, [2]);
    }

    #[test]
    fn a_database_that_is_no_file_has_no_readers() {
        assert!(
            Readers::of(
                std::path::Path::new("file:sqlx-in-memory-1"),
                Duration::ZERO
            )
            .is_none()
        );
    }
}
