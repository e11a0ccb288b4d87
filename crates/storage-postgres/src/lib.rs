//! Roster's PostgreSQL store: the production store and the path to scale.
//! Many stateless Roster replicas share one database.
//!
//! Writes run in READ COMMITTED transactions that lock the user's row with
//! `SELECT … FOR UPDATE` before reading its identifiers, so concurrent
//! mutations of one user apply one after the other, on any replica.
//! Uniqueness races end in the database's unique indexes, whose constraint
//! names map to the API field they protect. This crate opens connections
//! and transactions, binds values, decodes rows and maps errors
//! ([`SqlDatabase`], [`SqlConn`]); the `UserStore` itself, and its SQL, are
//! `roster_storage`'s, shared with the SQLite store.
//! Migrations take PostgreSQL's advisory lock, so replicas starting
//! together migrate once.

use std::ops::DerefMut;
use std::time::Duration;

use async_trait::async_trait;
use roster_storage::StorageError;
use roster_storage::exec::{SqlConn, SqlDatabase, SqlTransaction};
use roster_storage::group_commit::GroupCommit;
use roster_storage::rows::{StoredUser, UserRow};
use roster_storage::sessions::{ColumnType, Value};
use roster_storage::sql::{Bind, Dialect, Statement};
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
// Every statement is built by `roster_storage::sql` from fixed fragments;
// values always travel as bind parameters.
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

/// How long a pooled connection may sit idle before it is tested on
/// acquisition.
const PING_IDLE_AFTER: Duration = Duration::from_mins(1);

mod reads;

pub use reads::{ReadConn, ReadPool};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The setting by which the store's connections tell the database that
/// they keep users' identifier arrays themselves (`kept`).
pub const IDENTIFIER_ROWS_SETTING: &str = "roster.identifier_rows";

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    /// Connections for write transactions.
    pool: PgPool,
    /// Connections for single statements outside a transaction: reads,
    /// and inserts of new users that need none (see [`reads`]).
    reads: std::sync::Arc<ReadPool>,
    /// Connections for searches through the index of search keys, which
    /// keep one plan per statement (see [`search_connections`]).
    searches: std::sync::Arc<ReadPool>,
    acquire_times: std::sync::Arc<roster_storage::AcquireTimes>,
    search_stats: std::sync::Arc<roster_storage::search::SearchStats>,
    /// The connection of the search index's background merge.
    merges: PgPool,
    /// Where inserts of new users wait to go to the database together.
    group_commit: std::sync::Arc<GroupCommit>,
    /// Held by every clone: the background merge of the search index
    /// ([`merge_pending_in_background`]) ends when the last one is dropped.
    _open: std::sync::Arc<()>,
}

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Most connections this replica opens for reads and writes: half for
    /// write transactions, the rest for single statements ([`ReadPool`]),
    /// at least one each; searches open half as many again
    /// ([`search_connections`]).
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with
    /// UNAVAILABLE instead of hanging.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

fn map_error(error: sqlx::Error) -> StorageError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let field = match db.constraint() {
                Some("email_addresses_unique") => "email_address",
                Some("phone_numbers_unique") => "phone_number",
                Some("users_username_unique") => "username",
                Some("users_external_id_unique") => "external_id",
                _ => return StorageError::internal(error),
            };
            StorageError::Conflict {
                field: field.to_owned(),
            }
        }
        // 40001 is "serialization failure", 40P01 "deadlock detected".
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40001" || c == "40P01") => {
            StorageError::Aborted(Box::new(error))
        }
        // Class 08 is "connection exception", 57P0x "operator intervention"
        // (shutdown), 53300 "too many connections": worth retrying.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0") || c == "53300") =>
        {
            StorageError::Unavailable(Box::new(error))
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StorageError::Unavailable(Box::new(error)),
        _ => StorageError::internal(error),
    }
}

fn arguments(binds: Vec<Bind>) -> PgArguments {
    use sqlx::Arguments as _;
    let mut args = PgArguments::default();
    for bind in binds {
        // Adding a value of a supported type cannot fail.
        let _ = match bind {
            Bind::Text(v) | Bind::Json(v) => args.add(v),
            Bind::Int(v) => args.add(v),
            Bind::Bool(v) => args.add(v),
            Bind::NullText => args.add(None::<String>),
            Bind::NullInt => args.add(None::<i64>),
            Bind::Ints(v) => args.add(v),
        };
    }
    args
}

fn values(row: &PgRow, types: &[ColumnType]) -> Result<Vec<Value>, sqlx::Error> {
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

fn user_row(row: &PgRow) -> Result<UserRow, sqlx::Error> {
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

/// A PostgreSQL connection or transaction, as [`SqlConn`].
struct Conn<C>(C);

/// What holds a connection, told when a statement on it fails.
trait Held: DerefMut<Target = PgConnection> + Send {
    fn failed(&mut self, _error: &sqlx::Error) {}
}

/// sqlx's pool tests a connection given back to it.
impl Held for sqlx::pool::PoolConnection<sqlx::Postgres> {}

/// A transaction's connection goes back to sqlx's pool.
impl Held for sqlx::Transaction<'static, sqlx::Postgres> {}

impl Held for ReadConn<'_> {
    fn failed(&mut self, error: &sqlx::Error) {
        ReadConn::failed(self, error);
    }
}

impl<C: Held> Conn<C> {
    /// `error`, noted on the connection, as a [`StorageError`].
    fn failed(&mut self, error: sqlx::Error) -> StorageError {
        self.0.failed(&error);
        map_error(error)
    }

    async fn fetch<T>(
        &mut self,
        statement: Statement,
        decode: impl Fn(&PgRow) -> Result<T, sqlx::Error> + Send,
    ) -> Result<Vec<T>, StorageError> {
        let rows = sqlx::query_with(AssertSqlSafe(statement.sql), arguments(statement.binds))
            .fetch_all(&mut *self.0)
            .await;
        let rows = rows.map_err(|e| self.failed(e))?;
        rows.iter()
            .map(decode)
            .collect::<Result<_, _>>()
            .map_err(StorageError::internal)
    }
}

#[async_trait]
impl<C: Held> SqlConn for Conn<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&mut self, statement: Statement) -> Result<u64, StorageError> {
        let result = sqlx::query_with(AssertSqlSafe(statement.sql), arguments(statement.binds))
            .execute(&mut *self.0)
            .await;
        Ok(result.map_err(|e| self.failed(e))?.rows_affected())
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
        let counts = self
            .fetch(statement, |row| row.try_get::<i64, _>(0))
            .await?;
        counts
            .first()
            .copied()
            .ok_or_else(|| StorageError::internal("count returned no row"))
    }
}

#[async_trait]
impl SqlTransaction for Conn<sqlx::Transaction<'static, sqlx::Postgres>> {
    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        self.0.commit().await.map_err(map_error)
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…`).
    pub async fn connect(url: &str, config: PoolConfig) -> Result<Self, StorageError> {
        let pool_options = |connections| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(config.acquire_timeout)
                // A connection in use within the last minute is handed out
                // without a round trip to test it; one idle for longer is
                // pinged first, so connections the server dropped meanwhile
                // are replaced instead of failing a call.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for > PING_IDLE_AFTER {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
        };
        // Every write of this store keeps a user's identifier arrays in
        // step itself: the triggers that drop them after an earlier
        // version's writes (`migrations/postgres/0010`) skip its own.
        let options = url
            .parse::<PgConnectOptions>()
            .map_err(map_error)?
            .options([(IDENTIFIER_ROWS_SETTING, "kept")]);
        let pool = pool_options(write_connections(config.max_connections))
            .connect_with(options.clone())
            .await
            .map_err(map_error)?;
        let reads = ReadPool::new(
            config
                .max_connections
                .saturating_sub(write_connections(config.max_connections))
                .max(1),
            options.clone(),
            config.acquire_timeout,
        );
        let searches = ReadPool::new(
            search_connections(config.max_connections),
            options
                .clone()
                .options([("plan_cache_mode", "force_generic_plan")]),
            config.acquire_timeout,
        );
        // A merge takes as long as the pending list takes to merge, which
        // under steady writes is seconds: not a slow statement to warn of.
        let merge_options =
            options.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let merges = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(merge_options);
        let open = std::sync::Arc::new(());
        merge_pending_in_background(merges.clone(), std::sync::Arc::downgrade(&open));
        Ok(Self {
            pool,
            reads: std::sync::Arc::new(reads),
            searches: std::sync::Arc::new(searches),
            merges,
            group_commit: std::sync::Arc::new(GroupCommit::new(INSERT_TURNS)),
            acquire_times: std::sync::Arc::default(),
            search_stats: std::sync::Arc::default(),
            _open: open,
        })
    }

    /// Applies pending migrations under an advisory lock.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(StorageError::internal)
    }

    /// Gives the users stored without search keys their keys
    /// ([`roster_storage::exec::backfill_search_keys`]); returns how many.
    /// Searches find those users meanwhile, more slowly, so this may run
    /// while the store serves: a million users took about ten minutes on
    /// two cores.
    pub async fn fill_search_keys(&self) -> Result<u64, StorageError> {
        let mut conn = self.connection().await?;
        roster_storage::exec::backfill_search_keys(conn.as_mut()).await
    }

    /// Keeps on their rows the email addresses and phone numbers of the
    /// users whose rows do not hold them
    /// ([`roster_storage::exec::fill_identifier_rows`]); returns how many.
    /// Reads gather those users' identifiers from their tables meanwhile,
    /// so this may run while the store serves.
    pub async fn fill_identifier_rows(&self) -> Result<u64, StorageError> {
        roster_storage::exec::fill_identifier_rows(self).await
    }

    /// A connection of `pool`, timed as every acquisition is.
    async fn read_connection<'a>(
        pool: &'a ReadPool,
        times: &roster_storage::AcquireTimes,
    ) -> Result<Box<dyn SqlConn + 'a>, StorageError> {
        Ok(Box::new(Conn(
            times.time(pool.acquire()).await.map_err(map_error)?,
        )))
    }

    /// Closes the pools, waiting for connections in use.
    pub async fn close(&self) {
        self.merges.close().await;
        self.searches.close().await;
        self.reads.close().await;
        self.pool.close().await;
    }
}

/// Of `max_connections`, those for write transactions (the rest are for
/// single statements, [`ReadPool`]).
fn write_connections(max_connections: u32) -> u32 {
    (max_connections / 2).max(1)
}

/// The connections a store opens for searches through the index of
/// search keys, beside `max_connections` for everything else: half as
/// many, at least one. Held as reads are ([`ReadPool`]).
///
/// PostgreSQL plans a prepared statement again on every run when the
/// plan it would keep looks costlier than the ones made for the bound
/// values, as a search's does: the planner cannot tell how many users
/// hold keys it does not know. These connections set `plan_cache_mode =
/// force_generic_plan`, so a search statement is planned once per
/// connection, and every run uses the index of search keys and sorts the
/// few users it finds. With pgbench at a million users, 16 clients: 3 770
/// searches/s as two statements planned on every run (the ids, then the
/// users), 3 320 as one, 7 752 as one planned once. The setting stays off
/// the other connections: there, a page of users without a query, its
/// `LIMIT` bound, was planned as a sort of the whole table.
fn search_connections(max_connections: u32) -> u32 {
    (max_connections / 2).max(1)
}

/// Groups of new users' inserts one store sends to the database at once
/// (see [`roster_storage::group_commit`]); the inserts that arrive
/// meanwhile wait for the next free turn, and go together.
///
/// Each group is one statement, whatever its size: with the load
/// generator, Roster and PostgreSQL on two cores, 32 callers creating
/// users, `roster-bench suite` measured 0.33 and 0.37 of the insert
/// baseline with each insert alone; 0.60 and 0.48 with one turn (about
/// 16 inserts a statement); 0.56, 0.56 and 0.57 with two (about 6); 0.50
/// with four. Two also keeps inserts moving while one statement waits
/// for a lock.
const INSERT_TURNS: usize = 2;

/// How often the search index's pending entries are merged into it.
const MERGE_PENDING_EVERY: Duration = Duration::from_millis(250);

/// Merges the entries that writes added to the search index's pending
/// list into the index proper, every [`MERGE_PENDING_EVERY`], until the
/// store is closed or dropped (`open` gone), on a connection of its own.
///
/// A GIN index takes new entries into an unsorted pending list, which
/// every lookup reads whole, and merges the list into the index once it
/// passes `gin_pending_list_limit` (4 MB): in the write that happens to
/// pass it, which waits for the merge, and not while another merge runs.
/// Under concurrent user creation the list grew to 7 MB, and searches at
/// a million users fell from 1 800 to 450 per second. Merged here, no
/// write waits for a merge: create_user's worst case fell from 4.8 s to
/// about 0.1 s, and searches after it ran at 2 000 per second. Under
/// steady writes one merge can take seconds, and the list grows again
/// meanwhile. Nothing happens before the index exists (before
/// migrations), nor when the list is empty. Merging takes the role that
/// owns the index (the one migrations ran as); under another role it
/// fails, says so once, and the writes merge the list themselves, as
/// PostgreSQL does by default.
fn merge_pending_in_background(pool: PgPool, open: std::sync::Weak<()>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(MERGE_PENDING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            if open.strong_count() == 0 || pool.is_closed() {
                break;
            }
            let merged = sqlx::query(
                "SELECT gin_clean_pending_list(i) FROM to_regclass('users_search_terms') AS i \
                 WHERE i IS NOT NULL",
            )
            .execute(&pool)
            .await;
            match merged {
                Ok(_) => failing = false,
                // Once per run of failures: the next success resets it.
                Err(error) if !failing && !pool.is_closed() => {
                    failing = true;
                    tracing::warn!(%error, "merging the search index's pending entries failed");
                }
                Err(_) => {}
            }
        }
    });
}

#[async_trait]
impl SqlDatabase for PostgresStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError> {
        Self::read_connection(&self.reads, &self.acquire_times).await
    }

    async fn search_connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError> {
        Self::read_connection(&self.searches, &self.acquire_times).await
    }

    async fn begin_write(&self) -> Result<Box<dyn SqlTransaction + '_>, StorageError> {
        Ok(Box::new(Conn(
            self.acquire_times
                .time(self.pool.begin())
                .await
                .map_err(map_error)?,
        )))
    }

    fn search_stats(&self) -> &roster_storage::search::SearchStats {
        &self.search_stats
    }

    fn group_commit(&self) -> Option<&GroupCommit> {
        Some(&self.group_commit)
    }

    fn pool_stats(&self) -> roster_storage::PoolStats {
        let (reads, idle_reads) = self.reads.sizes();
        let (searches, idle_searches) = self.searches.sizes();
        self.acquire_times.stats(
            self.pool.size() + reads + searches,
            self.pool.num_idle() + idle_reads + idle_searches,
            self.pool.options().get_max_connections() + self.reads.most() + self.searches.most(),
        )
    }
}
