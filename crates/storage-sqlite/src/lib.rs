//! Roster's SQLite store: the embedded default, one database file in WAL
//! mode, so `roster serve` runs with no setup.
//!
//! SQLite has one writer at a time. Writes start with `BEGIN IMMEDIATE` so
//! a transaction takes the write lock before it reads: two mutations of one
//! user then apply one after the other instead of failing to upgrade a read
//! lock. This crate opens connections and transactions, binds values,
//! decodes rows and maps errors ([`SqlDatabase`], [`SqlConn`]); the
//! `UserStore` itself, and its SQL, are `roster_storage`'s, shared with the
//! PostgreSQL store. Reads by key run on the calling thread, on read-only
//! connections of [`reads`]; the rest goes through sqlx.

use std::ops::DerefMut;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use roster_storage::StorageError;
use roster_storage::exec::{SqlConn, SqlDatabase, SqlTransaction};
use roster_storage::group_commit::GroupCommit;
use roster_storage::rows::{StoredUser, UserRow};
use roster_storage::sessions::{ColumnType, Value};
use roster_storage::sql::{Bind, Dialect, Statement};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
// Every statement is built by `roster_storage::sql` from fixed fragments;
// values always travel as bind parameters.
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};

mod reads;

pub use reads::Readers;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Connections for reads that may visit many rows, and for writes
    /// outside a transaction.
    pool: SqlitePool,
    /// Reads by key, run on the calling thread (see [`reads`]); `None`
    /// for an in-memory database, whose reads all go to `pool`.
    readers: Option<std::sync::Arc<Readers>>,
    /// The connection that copies the write-ahead log back into the
    /// database file (see [`checkpoint_in_background`]).
    checkpoints: SqlitePool,
    /// Dropped with the last clone of the store, which stops the
    /// checkpoints and the merges of the search index.
    _open: std::sync::Arc<()>,
    /// The one connection write transactions use. Its page cache stays
    /// valid from one write to the next (a connection drops its cache when
    /// another one wrote since its last transaction), so a write finds the
    /// index pages it changes in memory.
    writes: SqlitePool,
    /// SQLite allows one writer at a time: write transactions of this
    /// process queue for it here.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Write transactions asked for so far: the search index is merged
    /// only while this stands still (see [`merge_index_in_background`]).
    writes_begun: std::sync::Arc<AtomicU64>,
    /// New users inserted while another insert's transaction runs share
    /// the next write transaction: fewer commits, each of which costs
    /// the full-text index a new segment.
    group_commit: std::sync::Arc<GroupCommit>,
    acquire_times: std::sync::Arc<roster_storage::AcquireTimes>,
    search_stats: std::sync::Arc<roster_storage::search::SearchStats>,
}

fn map_error(error: sqlx::Error) -> StorageError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // SQLite names the column: "UNIQUE constraint failed: users.username_normalized".
            let message = db.message();
            let field = if message.contains("email_addresses.") {
                "email_address"
            } else if message.contains("phone_numbers.") {
                "phone_number"
            } else if message.contains("users.username") {
                "username"
            } else if message.contains("users.external_id") {
                "external_id"
            } else {
                return StorageError::internal(error);
            };
            StorageError::Conflict {
                field: field.to_owned(),
            }
        }
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6): another writer held the
        // database past the busy timeout; retrying may succeed.
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6")) => {
            StorageError::Unavailable(Box::new(error))
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StorageError::Unavailable(Box::new(error))
        }
        _ => StorageError::internal(error),
    }
}

fn arguments(binds: Vec<Bind>) -> SqliteArguments {
    use sqlx::Arguments as _;
    let mut args = SqliteArguments::default();
    for bind in binds {
        // Adding a value of a supported type cannot fail.
        let _ = match bind {
            Bind::Text(v) | Bind::Json(v) => args.add(v),
            Bind::Int(v) => args.add(v),
            Bind::Bool(v) => args.add(v),
            Bind::NullText => args.add(None::<String>),
            Bind::NullInt => args.add(None::<i64>),
            Bind::Ints(v) => args.add(array_text(&v)),
        };
    }
    args
}

/// No SQLite column is an array; one bound all the same is written as
/// PostgreSQL's text form of it.
fn array_text(values: &[i32]) -> String {
    format!(
        "{{{}}}",
        values
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn values(row: &SqliteRow, types: &[ColumnType]) -> Result<Vec<Value>, sqlx::Error> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(match t {
                ColumnType::Text => Value::Text(row.try_get(i)?),
                ColumnType::Int => Value::Int(row.try_get(i)?),
                ColumnType::Bool => Value::Bool(row.try_get(i)?),
            })
        })
        .collect()
}

fn user_row(row: &SqliteRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: row.try_get(0)?,
        external_id: row.try_get(1)?,
        first_name: row.try_get(2)?,
        last_name: row.try_get(3)?,
        username: row.try_get(4)?,
        locale: row.try_get(5)?,
        primary_email_address_id: row.try_get(6)?,
        primary_phone_number_id: row.try_get(7)?,
        password_hash: row.try_get(8)?,
        public_metadata: row.try_get(9)?,
        private_metadata: row.try_get(10)?,
        unsafe_metadata: row.try_get(11)?,
        banned: row.try_get(12)?,
        locked: row.try_get(13)?,
        image: row.try_get(14)?,
        created_at: row.try_get(15)?,
        updated_at: row.try_get(16)?,
        last_sign_in_at: row.try_get(17)?,
        code_window_start: row.try_get(18)?,
        code_window_sends: row.try_get(19)?,
        failed_sign_ins: row.try_get(20)?,
        locked_until: row.try_get(21)?,
    })
}

/// A SQLite connection or transaction, as [`SqlConn`].
/// A connection, and for a write transaction the writer's turn (see
/// [`SqliteStore`]'s `writer`), released after the transaction ends.
struct Conn<C>(C, Option<tokio::sync::OwnedMutexGuard<()>>);

impl<C: DerefMut<Target = SqliteConnection> + Send> Conn<C> {
    async fn fetch<T>(
        &mut self,
        statement: Statement,
        decode: impl Fn(&SqliteRow) -> Result<T, sqlx::Error> + Send,
    ) -> Result<Vec<T>, StorageError> {
        let rows = sqlx::query_with(AssertSqlSafe(statement.sql), arguments(statement.binds))
            .fetch_all(&mut *self.0)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(decode)
            .collect::<Result<_, _>>()
            .map_err(StorageError::internal)
    }
}

#[async_trait]
impl<C: DerefMut<Target = SqliteConnection> + Send> SqlConn for Conn<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, statement: Statement) -> Result<u64, StorageError> {
        let result = sqlx::query_with(AssertSqlSafe(statement.sql), arguments(statement.binds))
            .execute(&mut *self.0)
            .await
            .map_err(map_error)?;
        Ok(result.rows_affected())
    }

    async fn fetch_users(&mut self, statement: Statement) -> Result<Vec<StoredUser>, StorageError> {
        self.fetch(statement, |row| {
            Ok(StoredUser {
                row: user_row(row)?,
                emails: row.try_get(22)?,
                phones: row.try_get(23)?,
            })
        })
        .await
    }

    async fn fetch_texts(&mut self, statement: Statement) -> Result<Vec<String>, StorageError> {
        self.fetch(statement, |row| row.try_get(0)).await
    }

    async fn fetch_values(
        &mut self,
        statement: Statement,
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, StorageError> {
        self.fetch(statement, |row| values(row, types)).await
    }

    async fn fetch_count(&mut self, statement: Statement) -> Result<i64, StorageError> {
        first_count(
            &self
                .fetch(statement, |row| row.try_get::<i64, _>(0))
                .await?,
        )
    }
}

/// The one row of a `SELECT count(*)`.
fn first_count(counts: &[i64]) -> Result<i64, StorageError> {
    counts
        .first()
        .copied()
        .ok_or_else(|| StorageError::internal("count returned no row"))
}

/// Reads by key on the calling thread ([`reads`]); a statement given to
/// `execute`, which may write, goes to a connection of sqlx's pool.
struct KeyReads<'a> {
    store: &'a SqliteStore,
    readers: &'a Readers,
}

#[async_trait]
impl SqlConn for KeyReads<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, statement: Statement) -> Result<u64, StorageError> {
        self.store.pooled().await?.execute(statement).await
    }

    async fn fetch_users(&mut self, statement: Statement) -> Result<Vec<StoredUser>, StorageError> {
        self.readers.fetch(statement, reads::stored_user)
    }

    async fn fetch_texts(&mut self, statement: Statement) -> Result<Vec<String>, StorageError> {
        self.readers.fetch(statement, |row| row.get(0))
    }

    async fn fetch_values(
        &mut self,
        statement: Statement,
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, StorageError> {
        self.readers
            .fetch(statement, |row| reads::values(row, types))
    }

    async fn fetch_count(&mut self, statement: Statement) -> Result<i64, StorageError> {
        first_count(&self.readers.fetch(statement, |row| row.get(0))?)
    }
}

#[async_trait]
impl SqlTransaction for Conn<sqlx::Transaction<'static, sqlx::Sqlite>> {
    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let Conn(transaction, _turn) = *self;
        transaction.commit().await.map_err(map_error)
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`
    /// (`sqlite://path/to/file.db` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StorageError::internal)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL survives application crashes and keeps
            // commits from waiting on fsync.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool_options = |connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(10))
                // A connection to a local file does not go stale; testing
                // it would cost a hop to its thread on every acquisition.
                .test_before_acquire(false)
        };
        let pool = pool_options(8)
            .connect_with(options.clone().pragma("cache_size", SCAN_CACHE))
            .await
            .map_err(map_error)?;
        // The file exists now: the first connection created it.
        let readers = Readers::of(options.get_filename(), BUSY_TIMEOUT).map(std::sync::Arc::new);
        let checkpoints = pool_options(1)
            .connect_with(options.clone())
            .await
            .map_err(map_error)?;
        let writes = pool_options(1)
            .connect_with(
                options
                    // A savepoint's journal, which each insert sharing a
                    // transaction writes (see `roster_storage::group_commit`),
                    // is kept in memory.
                    .pragma("temp_store", "memory")
                    // Commits leave checkpoints, and their fsyncs, to
                    // `checkpoint_in_background`.
                    .pragma("wal_autocheckpoint", "0")
                    // Once a checkpoint has copied all of it back, the
                    // write-ahead log is cut to this size when it starts over.
                    .pragma("journal_size_limit", WAL_SIZE_LIMIT),
            )
            .await
            .map_err(map_error)?;
        let open = std::sync::Arc::new(());
        let turns = std::sync::Arc::default();
        let writes_begun = std::sync::Arc::default();
        checkpoint_in_background(
            checkpoints.clone(),
            std::sync::Arc::clone(&turns),
            std::sync::Arc::downgrade(&open),
        );
        merge_index_in_background(
            IndexMerges {
                reads: pool.clone(),
                writes: writes.clone(),
                writer: std::sync::Arc::clone(&turns),
                writes_begun: std::sync::Arc::clone(&writes_begun),
            },
            std::sync::Arc::downgrade(&open),
        );
        Ok(Self {
            pool,
            readers,
            writes,
            checkpoints,
            _open: open,
            writer: turns,
            writes_begun,
            group_commit: std::sync::Arc::default(),
            acquire_times: std::sync::Arc::default(),
            search_stats: std::sync::Arc::default(),
        })
    }

    /// Applies pending migrations, then fills the index of search terms
    /// from the stored users if a migration created it empty
    /// ([`roster_storage::exec::backfill_search_terms`]).
    pub async fn migrate(&self) -> Result<(), StorageError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(StorageError::internal)?;
        let mut tx = self.begin_write().await?;
        let indexed = roster_storage::exec::backfill_search_terms(tx.as_mut()).await?;
        tx.commit().await?;
        if indexed > 0 {
            tracing::info!(users = indexed, "search index filled from the stored users");
        }
        Ok(())
    }

    /// Segments the search index is held in: each lookup searches every
    /// one (see [`merge_index_in_background`]). Zero before the index is
    /// created.
    pub async fn search_index_segments(&self) -> Result<usize, StorageError> {
        Ok(segment_pages(&self.pool).await.map_err(map_error)?.len())
    }

    /// Merges the search index into one segment, as after loading many
    /// users at once: FTS5's `optimize`, in one write transaction.
    pub async fn optimize_search_index(&self) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        tx.execute(Statement::unbound(
            "INSERT INTO users_search_terms (users_search_terms) VALUES ('optimize')",
        ))
        .await?;
        tx.commit().await
    }

    /// Closes the pools, waiting for connections in use, and the idle
    /// readers.
    pub async fn close(&self) {
        self.checkpoints.close().await;
        self.writes.close().await;
        self.pool.close().await;
        if let Some(readers) = &self.readers {
            readers.close();
        }
    }

    /// A connection of sqlx's pool, on its own thread.
    async fn pooled(&self) -> Result<Conn<sqlx::pool::PoolConnection<sqlx::Sqlite>>, StorageError> {
        Ok(Conn(
            self.acquire_times
                .time(self.pool.acquire())
                .await
                .map_err(map_error)?,
            None,
        ))
    }
}

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Pages in the write-ahead log past which a checkpoint makes sure the
/// log starts over (SQLite's own default for checkpoints in commits).
const CHECKPOINT_PAGES: i64 = 1000;

/// Where the write-ahead log is cut back to, in bytes, when it starts over.
const WAL_SIZE_LIMIT: &str = "67108864";

/// The page cache of each connection that runs scans and searches, in KiB
/// (negative, as `PRAGMA cache_size` takes it): twice SQLite's default, so
/// the index of search terms of 10 000 users and the pages around it stay
/// in one connection's cache. Each connection keeps a cache of its own
/// (see `.cargo/config.toml`); the read-only connections that read by
/// key keep the default: SQLite empties a connection's cache whenever
/// another connection has committed since its last read, and those never
/// write.
const SCAN_CACHE: &str = "-4096";

/// Copies the write-ahead log back into the database file every
/// [`CHECKPOINT_EVERY`], on a connection of its own, until the store is
/// closed or dropped (`open` gone).
///
/// By default the commit that grows the log past 1 000 pages does this
/// itself, and every write waits while the writer copies the log and
/// waits for two fsyncs. Here a passive checkpoint first copies what it can
/// beside the writer and readers. The log starts over only when a write
/// transaction begins after a checkpoint copied all of it; under steady
/// writes the first pass runs while a transaction is open, whose commit
/// adds pages it did not copy, and the log would grow without bound. So a
/// log past [`CHECKPOINT_PAGES`] gets a second pass in the writer's turn,
/// which copies the pages committed meanwhile, and the next write
/// transaction starts the log over.
/// Durability is the same: in WAL mode with `synchronous = NORMAL`, a
/// commit is in the log, not yet synced, either way.
fn checkpoint_in_background(
    checkpoints: SqlitePool,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    open: std::sync::Weak<()>,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if open.strong_count() == 0 || checkpoints.is_closed() {
                break;
            }
            let result = match checkpoint(&checkpoints).await {
                Ok(pages) if pages >= CHECKPOINT_PAGES => {
                    let _turn = writer.lock().await;
                    checkpoint(&checkpoints).await.map(drop)
                }
                other => other.map(drop),
            };
            if let Err(error) = result
                && !checkpoints.is_closed()
            {
                tracing::warn!(%error, "write-ahead log checkpoint failed");
            }
        }
        checkpoints.close().await;
    });
}

/// A passive checkpoint: copies the write-ahead log into the database
/// file as far as no reader still needs it, without waiting for anyone.
/// Returns the pages in the log.
async fn checkpoint(checkpoints: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(checkpoints)
        .await?
        .try_get(1)
}

/// How often the background merge looks at the search index.
const MERGE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Segments of the search index beyond which it is merged into one once
/// writes are quiet (see [`merge_index_in_background`]).
pub const MAX_INDEX_SEGMENTS: usize = 8;

/// The largest segment's pages over the others' past which a merge
/// waits for more: a merge then rewrites at most this many pages, and
/// one, for each page written since the last one. Until then, lookups
/// search the small segments too, as many as FTS5's own merges leave.
const MERGE_RATIO: i64 = 8;

/// Pages of the index (FTS5's, about 4 kB each) written by one step of a
/// merge: one write transaction, which a write arriving meanwhile waits
/// for.
const MERGE_STEP_PAGES: i64 = 64;

/// What [`merge_index_in_background`] works with, shared with the store.
struct IndexMerges {
    reads: SqlitePool,
    writes: SqlitePool,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    writes_begun: std::sync::Arc<AtomicU64>,
}

/// Merges the segments of the search index into one while no write is
/// asked for, until the store is closed or dropped (`open` gone).
///
/// FTS5 writes a new segment at each commit and merges them only as
/// enough pages are written: nine commits of one user each left nine
/// segments. A lookup searches every segment: at a million users, an
/// index in nine segments answered 2 300 searches/s, merged into one
/// 3 200. The index is merged when it holds more than
/// [`MAX_INDEX_SEGMENTS`] and no write transaction was asked for during
/// the last [`MERGE_CHECK_EVERY`]. A merge rewrites the whole index, so it
/// also waits until the segments besides the largest hold at least one
/// [`MERGE_RATIO`]th of its pages: a million users' index is not
/// rewritten for a few new ones. It runs in steps of
/// [`MERGE_STEP_PAGES`] pages, each in the writer's turn, stops as soon as
/// a write is asked for, and goes on at the next quiet check; FTS5 keeps
/// a merge left part way, and goes on with it too.
fn merge_index_in_background(merges: IndexMerges, open: std::sync::Weak<()>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + MERGE_CHECK_EVERY,
            MERGE_CHECK_EVERY,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = merges.writes_begun.load(Ordering::Relaxed);
        loop {
            ticks.tick().await;
            if open.strong_count() == 0 || merges.writes.is_closed() {
                break;
            }
            let begun = merges.writes_begun.load(Ordering::Relaxed);
            let quiet = begun == seen;
            seen = begun;
            if !quiet {
                continue;
            }
            if let Err(error) = merge_while_quiet(&merges, begun).await
                && !merges.writes.is_closed()
            {
                tracing::warn!(%error, "merging the search index failed");
            }
        }
    });
}

/// Whether an index whose segments hold `pages` pages each is worth
/// merging into one (see [`merge_index_in_background`]).
fn worth_merging(pages: &[i64]) -> bool {
    let largest = pages.iter().copied().max().unwrap_or(0);
    let rest = pages.iter().sum::<i64>() - largest;
    pages.len() > MAX_INDEX_SEGMENTS && rest * MERGE_RATIO >= largest
}

/// Merges the search index in steps while no write transaction is asked
/// for (`writes_begun` stays at `begun`), if it is [`worth_merging`].
async fn merge_while_quiet(merges: &IndexMerges, begun: u64) -> Result<(), sqlx::Error> {
    let pages = segment_pages(&merges.reads).await?;
    if !worth_merging(&pages) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut steps = 0_u32;
    let finished = loop {
        let worked = {
            let _turn = merges.writer.lock().await;
            merge_step(&merges.writes).await?
        };
        if !worked {
            break true;
        }
        steps += 1;
        if merges.writes_begun.load(Ordering::Relaxed) != begun {
            break false;
        }
    };
    tracing::debug!(
        segments = pages.len(),
        pages = pages.iter().sum::<i64>(),
        steps,
        finished,
        elapsed_ms = started.elapsed().as_millis(),
        "search index merge"
    );
    Ok(())
}

/// One step of FTS5's `merge`: writes about [`MERGE_STEP_PAGES`] pages
/// of merged segments, every segment taken as one level (a negative
/// count). Returns whether there was anything to merge, which FTS5 tells
/// by the changes the command made: two or more when it did work.
async fn merge_step(writes: &SqlitePool) -> Result<bool, sqlx::Error> {
    let mut tx = writes.begin_with("BEGIN IMMEDIATE").await?;
    let before: i64 = sqlx::query_scalar("SELECT total_changes()")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO users_search_terms (users_search_terms, rank) VALUES ('merge', ?)")
        .bind(-MERGE_STEP_PAGES)
        .execute(&mut *tx)
        .await?;
    let after: i64 = sqlx::query_scalar("SELECT total_changes()")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(after - before >= 2)
}

/// The leaf pages of each segment of the search index, from FTS5's
/// `_idx` table, which holds a row for the first term of each leaf page of
/// each segment, keyed by segment and term, with the page number shifted
/// left by one: the segments found by skipping from one id to the next,
/// and each one's last page by its last term. Empty before migrations
/// create the index.
async fn segment_pages(reads: &SqlitePool) -> Result<Vec<i64>, sqlx::Error> {
    let mut conn = reads.acquire().await?;
    let created: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'users_search_terms_idx')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !created {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "WITH RECURSIVE s (id) AS ( \
           SELECT min(segid) FROM users_search_terms_idx \
           UNION ALL \
           SELECT (SELECT min(segid) FROM users_search_terms_idx WHERE segid > s.id) \
           FROM s WHERE s.id IS NOT NULL \
         ) \
         SELECT (SELECT pgno >> 1 FROM users_search_terms_idx \
                 WHERE segid = s.id ORDER BY term DESC LIMIT 1) \
         FROM s WHERE s.id IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
}

#[async_trait]
impl SqlDatabase for SqliteStore {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError> {
        Ok(match &self.readers {
            Some(readers) => Box::new(KeyReads {
                store: self,
                readers,
            }),
            None => Box::new(self.pooled().await?),
        })
    }

    async fn scan_connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError> {
        Ok(Box::new(self.pooled().await?))
    }

    async fn begin_write(&self) -> Result<Box<dyn SqlTransaction + '_>, StorageError> {
        // Writers take turns here, in arrival order, instead of in SQLite's
        // busy handler, which sleeps and retries and leaves the database
        // idle between a commit and the next writer's wake-up.
        self.writes_begun.fetch_add(1, Ordering::Relaxed);
        let turn = self.writer.clone().lock_owned().await;
        let transaction = self
            .acquire_times
            .time(self.writes.begin_with("BEGIN IMMEDIATE"))
            .await
            .map_err(map_error)?;
        Ok(Box::new(Conn(transaction, Some(turn))))
    }

    fn search_stats(&self) -> &roster_storage::search::SearchStats {
        &self.search_stats
    }

    fn group_commit(&self) -> Option<&GroupCommit> {
        Some(&self.group_commit)
    }

    fn pool_stats(&self) -> roster_storage::PoolStats {
        let readers = self
            .readers
            .as_ref()
            .map_or(0, |r| u32::try_from(r.idle_count()).unwrap_or(u32::MAX));
        self.acquire_times.stats(
            self.pool.size() + self.writes.size() + readers,
            self.pool.num_idle() + self.writes.num_idle() + readers as usize,
            self.pool.options().get_max_connections() + self.writes.options().get_max_connections(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_INDEX_SEGMENTS, MERGE_RATIO, worth_merging};

    #[test]
    fn an_index_is_merged_when_many_segments_hold_enough_pages() {
        let even = vec![1; MAX_INDEX_SEGMENTS];
        assert!(!worth_merging(&even), "not more than the most segments");
        assert!(worth_merging(&[even.as_slice(), &[1]].concat()));
        // A large index and a few new users' segments: a merge would
        // rewrite the large one for little.
        let mut pages = vec![57_000];
        pages.extend([2; 20]);
        assert!(!worth_merging(&pages));
        // Once the rest hold an eighth of the largest, it is merged.
        pages.extend([57_000 / MERGE_RATIO - 40]);
        assert!(worth_merging(&pages));
        assert!(!worth_merging(&[]));
    }

    #[tokio::test]
    async fn scans_keep_a_larger_page_cache_than_reads_by_key() {
        use roster_storage::exec::{SqlConn, SqlDatabase as _};
        async fn cache_size(mut conn: Box<dyn SqlConn + '_>) -> i64 {
            conn.fetch_count(roster_storage::sql::Statement::unbound(
                "SELECT cache_size FROM pragma_cache_size",
            ))
            .await
            .unwrap()
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = super::SqliteStore::connect(&url).await.unwrap();
        let scans = cache_size(store.scan_connection().await.unwrap()).await;
        assert_eq!(scans.to_string(), super::SCAN_CACHE);
        let by_key = cache_size(store.connection().await.unwrap()).await;
        assert_eq!(by_key, -2000, "SQLite's default");
    }

    /// `.cargo/config.toml` sets the bundled SQLite's build options:
    /// without them every page a read touches would take a process-wide
    /// mutex, and every allocation another.
    #[test]
    fn the_bundled_sqlite_gives_each_connection_its_own_page_cache() {
        let options: Vec<String> = {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            let mut statement = conn.prepare("PRAGMA compile_options").unwrap();
            statement
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert!(options.iter().any(|o| o == "ENABLE_FTS5"), "{options:?}");
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }
}
