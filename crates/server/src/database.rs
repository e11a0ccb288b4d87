//! Opening the store a database URL names.

use std::sync::Arc;

use roster_storage::{SessionStore, StorageError, UserStore};
use roster_storage_postgres::{PoolConfig, PostgresStore};
use roster_storage_sqlite::SqliteStore;

/// An open store of either backend.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Database {
    /// Opens `postgres://…`/`postgresql://…` with PostgreSQL and
    /// `sqlite:…` with SQLite.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, PoolConfig::default().max_connections).await
    }

    /// [`Database::open`], with up to `max_connections` connections on
    /// PostgreSQL (see [`PoolConfig::max_connections`]).
    pub async fn open_with(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let config = PoolConfig {
                max_connections,
                ..PoolConfig::default()
            };
            Ok(Self::Postgres(PostgresStore::connect(url, config).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url).await?))
        } else {
            Err(StorageError::internal(
                "the database URL must start with postgres://, postgresql:// or sqlite:",
            ))
        }
    }

    /// Applies pending migrations (safe with several replicas starting at
    /// once: PostgreSQL takes an advisory lock, SQLite a write lock).
    pub async fn migrate(&self) -> Result<(), StorageError> {
        match self {
            Self::Sqlite(s) => s.migrate().await,
            Self::Postgres(s) => s.migrate().await,
        }
    }

    /// Completes what migrations leave to the store, returning how many
    /// users it updated: on PostgreSQL, the search keys of users stored
    /// without them (`migrations/postgres/0008`), which may take minutes
    /// on a large table and may run while the store serves. SQLite's
    /// migration does its part itself.
    pub async fn fill_search_keys(&self) -> Result<u64, StorageError> {
        match self {
            Self::Sqlite(_) => Ok(0),
            Self::Postgres(s) => s.fill_search_keys().await,
        }
    }

    /// Completes what `migrations/postgres/0009` leaves to the store:
    /// keeping on their rows the email addresses and phone numbers of the
    /// users stored without them, which may take minutes on a large table
    /// and may run while the store serves. Returns how many users it
    /// updated. SQLite's migration does this itself.
    pub async fn fill_identifier_rows(&self) -> Result<u64, StorageError> {
        match self {
            Self::Sqlite(_) => Ok(0),
            Self::Postgres(s) => s.fill_identifier_rows().await,
        }
    }

    /// What each database's manual advises after a bulk load. PostgreSQL:
    /// `VACUUM (ANALYZE)` of the user tables, which sets their visibility
    /// maps and statistics (autovacuum would otherwise do it while the
    /// first requests are served). SQLite: the search index merged into
    /// one segment (FTS5's `optimize`; the store would otherwise merge it
    /// once writes are quiet, while the first requests are served).
    pub async fn settle_after_load(&self) -> Result<(), StorageError> {
        use roster_storage::exec::SqlDatabase as _;
        match self {
            Self::Sqlite(s) => s.optimize_search_index().await,
            Self::Postgres(s) => {
                let mut conn = s.connection().await?;
                conn.execute(roster_storage::sql::Statement::unbound(
                    "VACUUM (ANALYZE) users, email_addresses, phone_numbers",
                ))
                .await?;
                Ok(())
            }
        }
    }

    /// The store, for the services.
    pub fn users(&self) -> Arc<dyn UserStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// The session store, for the services.
    pub fn sessions(&self) -> Arc<dyn SessionStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// The sign-up store, for the services.
    pub fn sign_ups(&self) -> Arc<dyn roster_storage::SignUpStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}
