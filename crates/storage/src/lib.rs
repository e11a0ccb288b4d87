//! Roster's storage contract: the traits the server talks to, the error
//! every backend reports in, the query planning both SQL backends share, and
//! the contract test suite every backend must pass.
//!
//! Layout:
//! - [`UserStore`]: the user aggregate's store (users with their email
//!   addresses and phone numbers).
//! - [`StorageError`]: conflicts, domain refusals, unavailability.
//! - [`query`]: list filters, orderings, keyset cursors and page tokens.
//! - [`exec`]: the `UserStore` of every SQL backend, over two small traits
//!   a backend implements (connections and transactions).
//! - [`group_commit`]: inserts of new users that wait while the store is
//!   busy, then go to the database together.
//! - [`rows`]: rows as the SQL schemas store them, and their mapping to
//!   and from the domain.
//! - [`search`]: which trigrams a `query` filter looks up.
//! - [`sessions`]: sessions, sign-ins and token signing keys.
//! - [`sign_ups`]: sign-ups in progress.
//! - [`sql`]: SQL text for listing and counting, shared by the PostgreSQL
//!   and SQLite backends (same schema, different placeholders).
//! - [`contract`]: the shared test suite, instantiated per backend with
//!   [`contract_suite!`].

pub mod contract;
pub mod exec;
pub mod group_commit;
pub mod query;
pub mod rows;
pub mod search;
pub mod sessions;
pub mod sign_ups;
pub mod sql;

use async_trait::async_trait;
use roster_domain::{DomainError, IdentificationId, User, UserId, UserRecord};

pub use query::{ListQuery, Page};
pub use roster_domain::query::{OrderBy, OrderField, SortValue, UserFilter};
pub use sessions::{SessionQuery, SessionStore, SignIn, SignInCode, StoredKey, session_page};
pub use sign_ups::SignUpStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique identifier (named by `field`) belongs to another user.
    #[error("{field} already exists")]
    Conflict { field: String },
    /// A domain rule refused the change; nothing was written.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The database gave up the transaction to settle a conflict with a
    /// concurrent one (a deadlock or serialization failure); nothing was
    /// written and retrying may succeed.
    #[error("transaction aborted by a concurrent one")]
    Aborted(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database cannot be reached; retrying later may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a bug or corrupt data. Logged, never shown to clients.
    #[error("storage failure")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }
}

/// A connection pool's state, read for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Most connections the pool opens.
    pub max: u32,
    /// Connections handed out since start.
    pub acquires: u64,
    /// Time callers spent waiting for those connections, in seconds.
    pub acquire_wait_seconds: f64,
}

/// Counts connection acquisitions and the time spent waiting for them.
#[derive(Debug, Default)]
pub struct AcquireTimes {
    acquires: std::sync::atomic::AtomicU64,
    wait_micros: std::sync::atomic::AtomicU64,
}

impl AcquireTimes {
    /// Awaits `acquire`, counting it and the time it took.
    pub async fn time<T>(&self, acquire: impl std::future::Future<Output = T>) -> T {
        use std::sync::atomic::Ordering::Relaxed;
        let start = std::time::Instant::now();
        let out = acquire.await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.acquires.fetch_add(1, Relaxed);
        self.wait_micros.fetch_add(micros, Relaxed);
        out
    }

    /// A pool's state: its `size`, `idle` and `max` connections, and the
    /// acquisitions counted here.
    pub fn stats(&self, size: u32, idle: usize, max: u32) -> PoolStats {
        use std::sync::atomic::Ordering::Relaxed;
        #[allow(clippy::cast_precision_loss, reason = "metrics tolerate rounding")]
        let acquire_wait_seconds = self.wait_micros.load(Relaxed) as f64 / 1e6;
        PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
            acquires: self.acquires.load(Relaxed),
            acquire_wait_seconds,
        }
    }
}

/// Everything a backend stores.
pub trait Store: UserStore + SessionStore + SignUpStore {}

impl<T: UserStore + SessionStore + SignUpStore> Store for T {}

/// A change to one user, applied inside the store's transaction to the
/// freshly loaded, locked record. Returning an error rolls back.
pub type Mutation<'a> = Box<dyn FnOnce(&mut UserRecord) -> Result<(), DomainError> + Send + 'a>;

/// The store of users and their identifiers.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Inserts a new user with its identifiers in one transaction.
    async fn insert_user(&self, record: &UserRecord) -> Result<(), StorageError>;

    /// Inserts many new users in one transaction, many rows per statement:
    /// for imports and test datasets. The batch is refused whole, with
    /// `Conflict`, wherever inserting its users one at a time would
    /// conflict or would take an unverified identifier from another user:
    /// an identifier verified by anyone else, in the store or the batch,
    /// or a verified one that anyone else holds at all.
    async fn insert_users(&self, records: &[UserRecord]) -> Result<(), StorageError>;

    /// Reads one user with its identifiers.
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StorageError>;

    /// Reads one user with its credentials, for password checks.
    async fn get_record(&self, id: &UserId) -> Result<Option<UserRecord>, StorageError>;

    /// Loads and locks the user, applies `mutation`, writes what changed and
    /// commits, all in one transaction; concurrent mutations of one user
    /// apply one after the other. `Rejected(NotFound)` when the user does
    /// not exist.
    async fn update_user(&self, id: &UserId, mutation: Mutation<'_>) -> Result<User, StorageError>;

    /// Deletes the user and everything it owns in one transaction; returns
    /// the user as it was, or `None` if it did not exist.
    async fn delete_user(&self, id: &UserId) -> Result<Option<User>, StorageError>;

    /// The owner of an email address or phone number.
    async fn find_identification_owner(
        &self,
        id: &IdentificationId,
    ) -> Result<Option<UserId>, StorageError>;

    /// Up to `query.limit` users matching the query, in its order, after its
    /// cursor.
    async fn list_users(&self, query: &ListQuery) -> Result<Vec<User>, StorageError>;

    /// Number of users matching the filter.
    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StorageError>;

    /// Checks that the database answers, for readiness probes.
    async fn ping(&self) -> Result<(), StorageError>;

    /// The connection pool's state, for backends that have one.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// What inserts of new users going to the database together have
    /// done, for backends where they do (see [`group_commit`]).
    fn group_commit_stats(&self) -> Option<group_commit::GroupCommitStats> {
        None
    }
}

/// Reads one page of users: asks the store for one more than the page size
/// to learn whether another page follows, and makes its token.
pub async fn list_page(store: &dyn UserStore, mut query: ListQuery) -> Result<Page, StorageError> {
    let page_size = query.limit;
    query.limit = page_size + 1;
    let mut users = store.list_users(&query).await?;
    let next_page_token = if users.len() > page_size {
        users.truncate(page_size);
        users.last().map(|last| query.next_token(last))
    } else {
        None
    };
    Ok(Page {
        users,
        next_page_token,
    })
}
