//! The [`UserStore`] of every SQL backend, written once.
//!
//! A backend implements [`SqlConn`] for its connections (binding
//! [`crate::sql::Bind`] values and decoding rows) and [`SqlDatabase`]
//! (opening connections and write transactions); the blanket
//! `impl UserStore for D: SqlDatabase` here does the rest: loading whole
//! users in one query, inserting users, applying mutations inside one
//! locked transaction and writing back only what changed.

use std::collections::HashMap;

use async_trait::async_trait;
use roster_domain::{
    Channel, DomainError, EmailAddress, IdentificationId, IdentifierChange, PhoneNumber, User,
    UserId, UserRecord,
};

use crate::group_commit::GroupCommit;
use crate::query::ListQuery;
use crate::rows::{EmailRow, PhoneRow, StoredUser, UserRow};
use crate::search::{self, SearchStats, TrigramSample};
use crate::sessions::{ColumnType, Value};
use crate::sql::{
    self, Bind, Dialect, EMAIL_WRITE_COLUMNS, Identified, PHONE_WRITE_COLUMNS, Statement, TableRows,
};
use crate::{Mutation, StorageError, UserFilter, UserStore};

/// A database connection (or open transaction) of one backend.
#[async_trait]
pub trait SqlConn: Send {
    /// The placeholder syntax this connection understands.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the number of rows affected.
    async fn execute(&mut self, statement: Statement) -> Result<u64, StorageError>;
    /// Runs a `SELECT` of [`crate::sql::user_columns`].
    async fn fetch_users(&mut self, statement: Statement) -> Result<Vec<StoredUser>, StorageError>;
    /// Runs a `SELECT` of one text column.
    async fn fetch_texts(&mut self, statement: Statement) -> Result<Vec<String>, StorageError>;
    /// Runs a `SELECT count(*)`.
    async fn fetch_count(&mut self, statement: Statement) -> Result<i64, StorageError>;
    /// Runs a `SELECT` of columns of the given types.
    async fn fetch_values(
        &mut self,
        statement: Statement,
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, StorageError>;
}

/// An open write transaction; dropping it without committing rolls back.
#[async_trait]
pub trait SqlTransaction: SqlConn {
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
}

/// A database of one SQL backend.
#[async_trait]
pub trait SqlDatabase: Send + Sync + std::fmt::Debug {
    /// The placeholder syntax, and SQL, of this database.
    fn dialect(&self) -> Dialect;
    /// A pooled connection, for reads by key (a user, a session, the
    /// owner of an identifier) and single statements outside a
    /// transaction. On SQLite its reads run on the calling thread.
    async fn connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError>;
    /// A pooled connection for reads that may visit many rows: pages of
    /// users, counts, the sample of search texts. On SQLite, one of sqlx's,
    /// on a thread of its own, so a long scan does not hold up an async
    /// worker.
    async fn scan_connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError> {
        self.connection().await
    }
    /// A pooled connection for a search through the index of search keys
    /// (a `query` filter the window did not answer): on PostgreSQL, one
    /// that keeps a single plan for each statement instead of planning it
    /// again on every run with the values bound.
    async fn search_connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError> {
        self.scan_connection().await
    }
    /// A write transaction. Reads of a user inside it with `lock` set keep
    /// other writers of that user out until it ends.
    async fn begin_write(&self) -> Result<Box<dyn SqlTransaction + '_>, StorageError>;
    /// The connection pool's state, for metrics.
    fn pool_stats(&self) -> crate::PoolStats;
    /// What the store knows of its search texts' trigrams.
    fn search_stats(&self) -> &SearchStats;
    /// Where inserts of new users wait to go to the database together
    /// (see [`crate::group_commit`]); `None` where each insert goes alone.
    fn group_commit(&self) -> Option<&GroupCommit> {
        None
    }
}

/// Turns users read with [`sql::user_columns`] into records.
fn into_records(users: Vec<StoredUser>) -> Result<Vec<UserRecord>, StorageError> {
    users.into_iter().map(StoredUser::into_record).collect()
}

/// Loads one record; `lock` takes a row lock where the dialect has them.
/// The lock comes first, in a statement of its own: a statement that waited
/// for a lock still reads what its snapshot, taken before the wait, shows
/// (PostgreSQL re-reads only the locked row), so the identifiers must be
/// read by a statement that starts once the lock is held.
async fn load_record(
    conn: &mut dyn SqlConn,
    id: &UserId,
    lock: bool,
) -> Result<Option<UserRecord>, StorageError> {
    let dialect = conn.dialect();
    if lock
        && let Some(statement) = sql::lock_user(id.as_str(), dialect)
        && conn.fetch_texts(statement).await?.is_empty()
    {
        return Ok(None);
    }
    let users = conn
        .fetch_users(sql::user_by_id(id.as_str(), dialect))
        .await?;
    Ok(into_records(users)?.pop())
}

/// Users looked at before a `query` filter's trigram index: at least
/// this many, and ten per user the page asks for, so a page is found
/// among them when one user in ten matches.
const QUERY_WINDOW: usize = 250;

/// Loads a page of users. A `query` filter is tried on the first users in
/// order first (see [`QUERY_WINDOW`]; a page found there is the page),
/// unless the trigram sample says they cannot hold a page of matches; then
/// it is answered from the trigram index, on PostgreSQL on a connection
/// that keeps one plan (see [`SqlDatabase::search_connection`]).
async fn list_users<D: SqlDatabase + ?Sized>(
    db: &D,
    query: &ListQuery,
) -> Result<Vec<User>, StorageError> {
    let dialect = db.dialect();
    let mut trigrams = Vec::new();
    if let Some(text) = &query.filter.query {
        let sample = match db.search_stats().fresh() {
            Some(sample) => sample,
            None => search_sample(db.scan_connection().await?.as_mut(), db.search_stats()).await?,
        };
        let window = QUERY_WINDOW.max(query.limit.saturating_mul(10));
        if sample.may_hold(text, query.limit, window) {
            let users = db
                .scan_connection()
                .await?
                .fetch_users(sql::list_users_in_window(query, window, dialect))
                .await?;
            if users.len() >= query.limit {
                return Ok(into_records(users)?.into_iter().map(|r| r.user).collect());
            }
        }
        trigrams = sample.rarest(text);
    }
    let mut conn = if trigrams.is_empty() {
        db.scan_connection().await?
    } else {
        db.search_connection().await?
    };
    let users = conn
        .fetch_users(sql::list_users(query, &trigrams, dialect))
        .await?;
    Ok(into_records(users)?.into_iter().map(|r| r.user).collect())
}

/// The trigrams the index looks up for the `query` filter: the rarest of
/// the query's (see [`crate::search`]).
async fn search_trigrams(
    conn: &mut dyn SqlConn,
    stats: &SearchStats,
    filter: &UserFilter,
) -> Result<Vec<String>, StorageError> {
    let Some(query) = &filter.query else {
        return Ok(Vec::new());
    };
    Ok(search_sample(conn, stats).await?.rarest(query))
}

/// The store's sample of search texts' trigrams, taken now and then.
async fn search_sample(
    conn: &mut dyn SqlConn,
    stats: &SearchStats,
) -> Result<std::sync::Arc<TrigramSample>, StorageError> {
    Ok(match stats.fresh() {
        Some(sample) => sample,
        None => stats.store(take_sample(conn).await?),
    })
}

/// Search texts of users spread over the creation-time range: the users
/// created at or after each of [`search::SAMPLE_POINTS`] evenly spaced
/// times, [`search::SAMPLE_USERS_PER_POINT`] from each.
async fn take_sample(conn: &mut dyn SqlConn) -> Result<TrigramSample, StorageError> {
    let dialect = conn.dialect();
    let bounds = conn
        .fetch_values(sql::creation_range(), &[ColumnType::Int; 2])
        .await?;
    let Some([Value::Int(Some(first)), Value::Int(Some(last))]) = bounds
        .into_iter()
        .next()
        .and_then(|r| <[Value; 2]>::try_from(r).ok())
    else {
        return Ok(TrigramSample::default());
    };
    let mut texts = Vec::new();
    let points = i64::try_from(search::SAMPLE_POINTS).unwrap_or(1);
    for k in 0..points {
        let at = first + (last - first) / points * k;
        texts.extend(
            conn.fetch_texts(sql::search_texts_from(
                at,
                search::SAMPLE_USERS_PER_POINT,
                dialect,
            ))
            .await?,
        );
    }
    Ok(TrigramSample::new(texts.iter().map(String::as_str)))
}

/// Makes one identifier table hold `new` where it held `old`: deletes,
/// then updates, then inserts, so an identifier removed and re-added never
/// collides with itself on a unique index.
async fn sync_rows<T: Identified + Sync>(
    conn: &mut dyn SqlConn,
    table: &str,
    columns: &[&str],
    old: &[T],
    new: &[T],
    binds: impl Fn(&T) -> Vec<Bind> + Send + Sync,
) -> Result<(), StorageError> {
    let dialect = conn.dialect();
    let diff = sql::diff(old, new);
    if !diff.removed.is_empty() {
        conn.execute(sql::delete_by_ids(table, &diff.removed, dialect))
            .await?;
    }
    for row in diff.changed {
        conn.execute(sql::update_by_id(table, columns, binds(row), dialect))
            .await?;
    }
    if !diff.added.is_empty() {
        let rows = diff.added.into_iter().map(binds);
        conn.execute(sql::insert_rows(table, columns, rows, dialect))
            .await?;
    }
    Ok(())
}

/// Brings both identifier tables from `old` to `user`'s identifiers.
async fn sync_identifiers(
    conn: &mut dyn SqlConn,
    user: &User,
    old_emails: &[EmailAddress],
    old_phones: &[PhoneNumber],
) -> Result<(), StorageError> {
    let email_binds = |e: &EmailAddress| EmailRow::from_domain(&user.id, e).binds();
    let phone_binds = |p: &PhoneNumber| PhoneRow::from_domain(&user.id, p).binds();
    sync_rows(
        conn,
        "email_addresses",
        &EMAIL_WRITE_COLUMNS,
        old_emails,
        &user.email_addresses,
        email_binds,
    )
    .await?;
    sync_rows(
        conn,
        "phone_numbers",
        &PHONE_WRITE_COLUMNS,
        old_phones,
        &user.phone_numbers,
        phone_binds,
    )
    .await
}

/// Parses a user id read back from the database.
fn stored_user_id(text: &str) -> Result<UserId, StorageError> {
    UserId::parse(text)
        .map_err(|_| StorageError::internal(format!("stored user id is invalid: {text:?}")))
}

/// A user holding an email address or phone number.
pub(crate) struct Holder {
    channel: Channel,
    normalized: String,
    user_id: String,
    verified: bool,
}

/// The users other than `user_id` holding any of `changes`' identifiers;
/// each change's holders in user id order.
async fn identifier_holders(
    conn: &mut dyn SqlConn,
    changes: &[IdentifierChange],
    user_id: &str,
) -> Result<Vec<Holder>, StorageError> {
    let mut holders = Vec::new();
    for chunk in changes.chunks(MAX_BINDS / 2) {
        let Some(statement) = sql::identifier_holders(chunk, user_id, conn.dialect()) else {
            continue;
        };
        holders.extend(read_holders(conn, statement).await?);
    }
    Ok(holders)
}

/// Runs a statement ending in [`sql::identifier_holders`]' `SELECT`.
async fn read_holders(
    conn: &mut dyn SqlConn,
    statement: Statement,
) -> Result<Vec<Holder>, StorageError> {
    let rows = conn.fetch_values(statement, &[ColumnType::Text; 4]).await?;
    rows.into_iter()
        .map(|row| {
            let holder = match <[Value; 4]>::try_from(row) {
                Ok(
                    [
                        Value::Text(Some(name)),
                        Value::Text(Some(normalized)),
                        Value::Text(Some(user_id)),
                        Value::Text(Some(status)),
                    ],
                ) => [Channel::Email, Channel::Phone]
                    .into_iter()
                    .find(|c| sql::channel_name(*c) == name)
                    .map(|channel| Holder {
                        channel,
                        normalized,
                        user_id,
                        verified: status == "verified",
                    }),
                _ => None,
            };
            holder.ok_or_else(|| StorageError::internal("identifier holder row is malformed"))
        })
        .collect()
}

/// The refusal of an identifier another user holds.
fn conflict(channel: Channel) -> StorageError {
    let field = match channel {
        Channel::Email => "email_address",
        Channel::Phone => "phone_number",
    };
    StorageError::Conflict {
        field: field.to_owned(),
    }
}

/// Applies uniqueness across users to the identifiers `user` added or
/// verified since `before`: only verified identifiers are unique. An
/// identifier verified here removes the unverified copies other users hold
/// (each through the domain, so their primaries and search text stay
/// right); one added unverified is refused if another user verified it.
/// Of two users verifying one identifier at once, one wins; the other finds
/// its copy removed, or is refused as a conflict (by the partial unique
/// index, or when the database breaks their lock wait).
async fn settle_uniqueness(
    conn: &mut dyn SqlConn,
    user: &User,
    before: Option<&User>,
) -> Result<(), StorageError> {
    let changes = user.identifier_changes(before);
    let holders = identifier_holders(conn, &changes, user.id.as_str()).await?;
    settle_with_holders(conn, user, changes, &holders).await
}

/// [`settle_uniqueness`] once the holders of `changes` are known.
pub(crate) async fn settle_with_holders(
    conn: &mut dyn SqlConn,
    user: &User,
    changes: Vec<IdentifierChange>,
    holders: &[Holder],
) -> Result<(), StorageError> {
    for change in changes {
        // Holders of the other verification state than the change's:
        // verified ones refuse an unverified change; unverified ones give
        // way to a verified change.
        let opposite = holders.iter().filter(|h| {
            h.channel == change.channel
                && h.normalized == change.normalized
                && h.verified != change.verified
        });
        if !change.verified {
            if opposite.clone().next().is_some() {
                return Err(conflict(change.channel));
            }
            continue;
        }
        let mut released: Vec<&str> = Vec::new();
        for Holder { user_id, .. } in opposite {
            if released.contains(&user_id.as_str()) {
                continue;
            }
            released.push(user_id);
            let holder = stored_user_id(user_id)?;
            // A holder verifying the same identifier right now waits for
            // this user's lock while this waits for its: PostgreSQL breaks
            // the deadlock by aborting one, and that one lost the race.
            let loaded = load_record(conn, &holder, true)
                .await
                .map_err(|e| match e {
                    StorageError::Aborted(_) => conflict(change.channel),
                    other => other,
                })?;
            let Some(mut record) = loaded else {
                continue;
            };
            let old = record.user.clone();
            if record
                .user
                .release_unverified(change.channel, &change.normalized, user.updated_at)
            {
                write_record(conn, &old, &record).await?;
            }
        }
    }
    Ok(())
}

/// Inserts a user row and its identifiers, and reads who else holds
/// them, in one call to the database; then settles uniqueness (see
/// [`settle_uniqueness`]), which in the common case of identifiers no one
/// else holds has nothing left to do. Releasing another user's unverified
/// copy after the insert is as good as before it: only verified
/// identifiers are unique.
pub(crate) async fn insert_user(
    conn: &mut dyn SqlConn,
    record: &UserRecord,
) -> Result<(), StorageError> {
    let user = &record.user;
    let (changes, holders) = insert_unindexed(conn, record, "").await?;
    settle_with_holders(conn, user, changes, &holders).await?;
    if conn.dialect() == Dialect::Sqlite {
        index_new_users(conn, &[unindexed(user)]).await?;
    }
    Ok(())
}

/// Inserts a user's rows, not yet in the search index (see
/// [`index_new_users`]), and returns its identifiers with who else holds
/// them: what [`settle_with_holders`] takes. `before` is SQL without
/// parameters to run first, in the same call: SQLite only, which runs
/// several statements in one call; empty elsewhere.
pub(crate) async fn insert_unindexed(
    conn: &mut dyn SqlConn,
    record: &UserRecord,
    before: &str,
) -> Result<(Vec<IdentifierChange>, Vec<Holder>), StorageError> {
    let user = &record.user;
    let changes = user.identifier_changes(None);
    let mut statement = sql::insert_then_holders(
        new_user_rows(record, conn.dialect()),
        &changes,
        user.id.as_str(),
        conn.dialect(),
    );
    debug_assert!(before.is_empty() || conn.dialect() == Dialect::Sqlite);
    statement.sql.to_mut().insert_str(0, before);
    let holders = read_holders(conn, statement).await?;
    Ok((changes, holders))
}

/// A new user as the search index takes it: id and search text.
pub(crate) fn unindexed(user: &User) -> (UserId, String) {
    (user.id.clone(), user.search_text())
}

/// Adds new users, given by [`unindexed`], to the search index where the
/// store keeps it (see [`sql::index_new_users`]).
pub(crate) async fn index_new_users(
    conn: &mut dyn SqlConn,
    users: &[(UserId, String)],
) -> Result<(), StorageError> {
    let users: Vec<(&str, &str)> = users
        .iter()
        .map(|(id, text)| (id.as_str(), text.as_str()))
        .collect();
    for chunk in users.chunks(MAX_BINDS / 2) {
        if let Some(statement) = sql::index_new_users(chunk, conn.dialect()) {
            conn.execute(statement).await?;
        }
    }
    Ok(())
}

/// Users read per statement while [`backfill_search_terms`] fills the
/// index.
const BACKFILL_CHUNK: usize = 5_000;

/// Fills SQLite's index of search terms from the users already stored,
/// if a migration left it to be filled (`migrations/sqlite/0010`), merges
/// it into one segment, and marks it filled: run in one write
/// transaction, so that it is done whole or not at all. Returns how many
/// users it indexed. A million users took about three minutes and a
/// half on two cores, the merge 12 seconds of it.
pub async fn backfill_search_terms(conn: &mut dyn SqlConn) -> Result<usize, StorageError> {
    let pending = conn
        .fetch_count(Statement::unbound(
            "SELECT count(*) FROM search_terms_backfill",
        ))
        .await?;
    if pending == 0 {
        return Ok(0);
    }
    let mut after = i64::MIN;
    let mut indexed = 0;
    loop {
        let rows = conn
            .fetch_values(
                sql::search_texts_after(after, BACKFILL_CHUNK),
                &[ColumnType::Int, ColumnType::Text],
            )
            .await?;
        let rows = rows
            .into_iter()
            .map(|row| match <[Value; 2]>::try_from(row) {
                Ok([Value::Int(Some(rowid)), Value::Text(Some(text))]) => Ok((rowid, text)),
                _ => Err(StorageError::internal(
                    "a user row without rowid or search text",
                )),
            })
            .collect::<Result<Vec<(i64, String)>, _>>()?;
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        let texts: Vec<(i64, &str)> = rows.iter().map(|(r, t)| (*r, t.as_str())).collect();
        for chunk in texts.chunks(MAX_BINDS / 2) {
            conn.execute(sql::index_rows(chunk)).await?;
        }
        indexed += rows.len();
        after = last;
    }
    // Written in one pass, the index is left in several segments, each of
    // which every lookup searches; merged into one, a lookup reads one.
    conn.execute(Statement::unbound(
        "INSERT INTO users_search_terms (users_search_terms) VALUES ('optimize')",
    ))
    .await?;
    conn.execute(Statement::unbound("DELETE FROM search_terms_backfill"))
        .await?;
    Ok(indexed)
}

/// Users given keys per statement by [`backfill_search_keys`].
const KEYS_CHUNK: usize = 1_000;

/// Gives each user PostgreSQL holds without search keys its keys
/// (`migrations/postgres/0008`): the users stored before that migration,
/// and any that a replica of an earlier version wrote while this one
/// rolled out. Each statement commits on its own, so a start-up
/// interrupted part way goes on from where it stopped; until then a
/// search reads the users without keys too, by their own index. Returns
/// how many users it gave keys to.
pub async fn backfill_search_keys(conn: &mut dyn SqlConn) -> Result<u64, StorageError> {
    let mut after = String::new();
    let mut keyed = 0;
    loop {
        let rows = conn
            .fetch_values(
                sql::unkeyed_users_after(&after, KEYS_CHUNK),
                &[ColumnType::Text, ColumnType::Text],
            )
            .await?;
        let rows = rows
            .into_iter()
            .map(|row| match <[Value; 2]>::try_from(row) {
                Ok([Value::Text(Some(id)), Value::Text(Some(text))]) => Ok((id, text)),
                _ => Err(StorageError::internal(
                    "a user row without id or search text",
                )),
            })
            .collect::<Result<Vec<(String, String)>, _>>()?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        let users: Vec<(&str, &str)> = rows.iter().map(|(i, t)| (i.as_str(), t.as_str())).collect();
        keyed += conn.execute(sql::set_search_keys(&users)).await?;
        after.clone_from(last);
    }
    if keyed > 0 {
        // The planner's estimate of how many users hold a key comes from
        // the column's statistics, which had none.
        conn.execute(Statement::unbound("ANALYZE users")).await?;
    }
    Ok(keyed)
}

/// Users whose identifier rows [`fill_identifier_rows`] keeps per
/// transaction.
const ROWS_CHUNK: usize = 500;

/// Keeps on their rows the email addresses and phone numbers of the users
/// whose rows do not hold them (PostgreSQL: users stored before the rows
/// held them, or written by an earlier version of the store during a
/// rolling upgrade), in id order, a few hundred per transaction. Reads
/// gather those users' identifiers from their tables meanwhile, so this
/// may run while the store serves. Returns how many users it updated.
pub async fn fill_identifier_rows<D: SqlDatabase + ?Sized>(db: &D) -> Result<u64, StorageError> {
    let mut after = String::new();
    let mut filled = 0;
    loop {
        let mut tx = db.begin_write().await?;
        // The users are locked first, in a statement of their own, so the
        // identifiers are gathered by a statement that starts once no other
        // writer of these users is left (see `load_record`).
        let ids = tx
            .fetch_texts(sql::users_without_identifier_rows(&after, ROWS_CHUNK))
            .await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        filled += tx.execute(sql::fill_identifier_rows(&ids)).await?;
        tx.commit().await?;
        after = last;
    }
    Ok(filled)
}

/// The rows of a new user in each table.
fn new_user_rows(record: &UserRecord, dialect: Dialect) -> Vec<TableRows<'static>> {
    let user = &record.user;
    vec![
        TableRows {
            table: "users",
            columns: sql::user_write_columns(dialect),
            rows: vec![UserRow::from_record(record).binds(user, dialect)],
        },
        TableRows {
            table: "email_addresses",
            columns: &EMAIL_WRITE_COLUMNS,
            rows: user
                .email_addresses
                .iter()
                .map(|e| EmailRow::from_domain(&user.id, e).binds())
                .collect(),
        },
        TableRows {
            table: "phone_numbers",
            columns: &PHONE_WRITE_COLUMNS,
            rows: user
                .phone_numbers
                .iter()
                .map(|p| PhoneRow::from_domain(&user.id, p).binds())
                .collect(),
        },
    ]
}

/// Inserts a user: through the backend's [`GroupCommit`], where it has
/// one, with the inserts waiting beside it; else alone
/// ([`insert_alone`]).
async fn insert_new_user<D: SqlDatabase + Clone + 'static>(
    db: &D,
    record: &UserRecord,
) -> Result<(), StorageError> {
    match db.group_commit() {
        Some(group) => group.insert(db, record).await,
        None => insert_alone(db, record).await,
    }
}

/// Inserts one user without a transaction where one statement can do it
/// (see [`sql::insert_unless_held`]): when no other user holds any of its
/// identifiers, the common case, there is nothing to settle. Otherwise
/// [`insert_user`] in a write transaction of its own.
pub(crate) async fn insert_alone<D: SqlDatabase + ?Sized>(
    db: &D,
    record: &UserRecord,
) -> Result<(), StorageError> {
    if insert_all_unless_held(db, &[record]).await? {
        return Ok(());
    }
    let mut tx = db.begin_write().await?;
    insert_user(tx.as_mut(), record).await?;
    tx.commit().await
}

/// Inserts new users, none of whom shares an email address or phone
/// number with another, in one statement (see
/// [`sql::insert_unless_held`]), unless another user holds one of their
/// identifiers: then nothing is inserted, and `false` says so. `false`
/// too on SQLite, which has no such statement, and for more values than
/// one statement binds. Fails whole when the database refuses any of the
/// rows (a username taken).
pub(crate) async fn insert_all_unless_held<D: SqlDatabase + ?Sized>(
    db: &D,
    records: &[&UserRecord],
) -> Result<bool, StorageError> {
    let dialect = db.dialect();
    let Some((tables, changes)) = group_rows(records, dialect, 0) else {
        return Ok(false);
    };
    // New users' ids are in none of the tables yet: no holder is one of
    // them, so none needs leaving out.
    let Some(statement) = sql::insert_unless_held(tables, &changes, "", dialect) else {
        return Ok(false);
    };
    let mut conn = db.connection().await?;
    Ok(read_holders(conn.as_mut(), statement).await?.is_empty())
}

/// On SQLite, inside a write transaction: reads who else holds the
/// identifiers of new users, none of whom shares an email address or
/// phone number with another, inserts them and enters them in the search
/// index, all in one call to the connection (the statements in sequence
/// in one string, in a savepoint named `savepoint`). `true` when nobody
/// else holds one: the users are in, to be committed. Otherwise, and
/// when the database refuses any row (a username taken) or the values
/// are more than one call binds, nothing of it remains and `false` says
/// so. `Err` when the transaction itself can go no further.
pub(crate) async fn insert_and_index_unless_held(
    conn: &mut dyn SqlConn,
    records: &[&UserRecord],
    savepoint: &str,
) -> Result<bool, StorageError> {
    let dialect = conn.dialect();
    debug_assert_eq!(dialect, Dialect::Sqlite);
    // The search index binds two values per user.
    let Some((tables, changes)) = group_rows(records, dialect, 2 * records.len()) else {
        return Ok(false);
    };
    let texts: Vec<(&str, String)> = records
        .iter()
        .map(|r| (r.user.id.as_str(), r.user.search_text()))
        .collect();
    let texts: Vec<(&str, &str)> = texts.iter().map(|(id, t)| (*id, t.as_str())).collect();
    // The holders are read before the inserts: none is one of the new
    // users, and the common answer is no row at all (each row returned is
    // one more hand-off between the connection's thread and this task).
    let statement = [
        Some(Statement::unbound(&format!("SAVEPOINT {savepoint}"))),
        sql::identifier_holders(&changes, "", dialect),
        Some(sql::insert_then_holders(tables, &[], "", dialect)),
        sql::index_new_users(&texts, dialect),
    ]
    .into_iter()
    .flatten()
    .reduce(sql::then)
    .unwrap_or_else(|| Statement::unbound(""));
    match read_holders(conn, statement).await {
        Ok(holders) if holders.is_empty() => return Ok(true),
        // Held by another user, or refused: each insert settles its own.
        Ok(_) | Err(_) => {}
    }
    conn.execute(Statement::unbound(&format!(
        "ROLLBACK TO {savepoint}; RELEASE {savepoint}"
    )))
    .await?;
    Ok(false)
}

/// The rows of new users, each table's rows of all of them together, and
/// their identifiers; `None` when they and `more` values would bind more
/// than one statement can.
fn group_rows(
    records: &[&UserRecord],
    dialect: Dialect,
    more: usize,
) -> Option<(Vec<TableRows<'static>>, Vec<IdentifierChange>)> {
    let mut tables: Vec<TableRows<'_>> = Vec::new();
    let mut changes = Vec::new();
    for record in records {
        changes.extend(record.user.identifier_changes(None));
        for (i, rows) in new_user_rows(record, dialect).into_iter().enumerate() {
            match tables.get_mut(i) {
                Some(all) => all.rows.extend(rows.rows),
                None => tables.push(rows),
            }
        }
    }
    let binds: usize = more
        + changes.len()
        + tables
            .iter()
            .flat_map(|t| &t.rows)
            .map(Vec::len)
            .sum::<usize>();
    (binds <= MAX_BINDS).then_some((tables, changes))
}

/// Most values bound in one statement: under SQLite's limit (32 766) and
/// PostgreSQL's (65 535).
const MAX_BINDS: usize = 30_000;

/// `INSERT`s of `rows`, as few statements as the bind limit allows.
async fn insert_chunked(
    conn: &mut dyn SqlConn,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Bind>>,
) -> Result<(), StorageError> {
    let dialect = conn.dialect();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(MAX_BINDS / columns.len()).collect();
        conn.execute(sql::insert_rows(table, columns, chunk, dialect))
            .await?;
    }
    Ok(())
}

/// Inserts new users in bulk (see [`UserStore::insert_users`]).
async fn insert_users(conn: &mut dyn SqlConn, records: &[UserRecord]) -> Result<(), StorageError> {
    // Within the batch: an identifier verified once and held by no other.
    let mut claims: HashMap<(Channel, &str), (&UserId, bool)> = HashMap::new();
    let changes: Vec<(&UserId, IdentifierChange)> = records
        .iter()
        .flat_map(|r| {
            r.user
                .identifier_changes(None)
                .into_iter()
                .map(|c| (&r.user.id, c))
        })
        .collect();
    for (owner, change) in &changes {
        let key = (change.channel, change.normalized.as_str());
        if let Some((other, verified)) = claims.insert(key, (owner, change.verified))
            && other != *owner
            && (verified || change.verified)
        {
            return Err(conflict(change.channel));
        }
    }
    // Against the store: any holder of a verified identifier of the batch,
    // and verified holders of its unverified ones.
    let all: Vec<IdentifierChange> = changes.iter().map(|(_, c)| c.clone()).collect();
    for holder in identifier_holders(conn, &all, "").await? {
        let ours = claims.get(&(holder.channel, holder.normalized.as_str()));
        if holder.verified || ours.is_some_and(|(_, v)| *v) {
            return Err(conflict(holder.channel));
        }
    }
    let dialect = conn.dialect();
    let users = records
        .iter()
        .map(|r| UserRow::from_record(r).binds(&r.user, dialect))
        .collect();
    insert_chunked(conn, "users", sql::user_write_columns(dialect), users).await?;
    let emails = records
        .iter()
        .flat_map(|r| {
            r.user
                .email_addresses
                .iter()
                .map(|e| EmailRow::from_domain(&r.user.id, e).binds())
        })
        .collect();
    insert_chunked(conn, "email_addresses", &EMAIL_WRITE_COLUMNS, emails).await?;
    let phones = records
        .iter()
        .flat_map(|r| {
            r.user
                .phone_numbers
                .iter()
                .map(|p| PhoneRow::from_domain(&r.user.id, p).binds())
        })
        .collect();
    insert_chunked(conn, "phone_numbers", &PHONE_WRITE_COLUMNS, phones).await?;
    if conn.dialect() == Dialect::Sqlite {
        let users: Vec<_> = records.iter().map(|r| unindexed(&r.user)).collect();
        index_new_users(conn, &users).await?;
    }
    Ok(())
}

/// Writes the difference between the stored user and the mutated record,
/// after settling uniqueness with other users.
async fn write_changes(
    conn: &mut dyn SqlConn,
    old: &User,
    new: &UserRecord,
) -> Result<(), StorageError> {
    settle_uniqueness(conn, &new.user, Some(old)).await?;
    let now = new.user.updated_at;
    if new.user.banned && !old.banned {
        // A banned user is signed out everywhere, atomically with the ban.
        crate::sessions::revoke_user_sessions(conn, &new.user.id, now, None).await?;
    } else if let Some(sign_out) = &new.sign_out {
        crate::sessions::revoke_user_sessions(conn, &new.user.id, now, sign_out.except.as_ref())
            .await?;
    }
    write_record(conn, old, new).await?;
    if let Some(session) = &new.start_session {
        let dialect = conn.dialect();
        conn.execute(crate::sessions::insert_session_statement(session, dialect))
            .await?;
    }
    Ok(())
}

/// Writes the difference between the stored user and `new`.
async fn write_record(
    conn: &mut dyn SqlConn,
    old: &User,
    new: &UserRecord,
) -> Result<(), StorageError> {
    let user = &new.user;
    sync_identifiers(conn, user, &old.email_addresses, &old.phone_numbers).await?;
    let text = user.search_text();
    let reindex = text != old.search_text();
    if reindex && let Some(statement) = sql::unindex_user(user.id.as_str(), conn.dialect()) {
        conn.execute(statement).await?;
    }
    let dialect = conn.dialect();
    let binds = UserRow::from_record(new).binds(user, dialect);
    conn.execute(sql::update_by_id(
        "users",
        sql::user_write_columns(dialect),
        binds,
        dialect,
    ))
    .await?;
    if reindex {
        index_new_users(conn, &[(user.id.clone(), text)]).await?;
    }
    Ok(())
}

/// Deletes a user; identifiers go with it (`ON DELETE CASCADE`).
async fn delete_user(conn: &mut dyn SqlConn, id: &UserId) -> Result<(), StorageError> {
    conn.execute(sql::delete_user(id.as_str(), conn.dialect()))
        .await?;
    Ok(())
}

#[async_trait]
impl<D: SqlDatabase + Clone + 'static> UserStore for D {
    #[tracing::instrument(name = "store.insert_user", skip_all)]
    async fn insert_user(&self, record: &UserRecord) -> Result<(), StorageError> {
        insert_new_user(self, record).await
    }

    #[tracing::instrument(name = "store.insert_users", skip_all, fields(count = records.len()))]
    async fn insert_users(&self, records: &[UserRecord]) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        insert_users(tx.as_mut(), records).await?;
        tx.commit().await
    }

    #[tracing::instrument(name = "store.get_user", skip_all)]
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        Ok(self.get_record(id).await?.map(|r| r.user))
    }

    #[tracing::instrument(name = "store.get_record", skip_all)]
    async fn get_record(&self, id: &UserId) -> Result<Option<UserRecord>, StorageError> {
        load_record(self.connection().await?.as_mut(), id, false).await
    }

    #[tracing::instrument(name = "store.update_user", skip_all)]
    async fn update_user(&self, id: &UserId, mutation: Mutation<'_>) -> Result<User, StorageError> {
        let mut tx = self.begin_write().await?;
        let mut record = load_record(tx.as_mut(), id, true)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id.as_str()))?;
        let old = record.user.clone();
        mutation(&mut record)?;
        write_changes(tx.as_mut(), &old, &record).await?;
        tx.commit().await?;
        Ok(record.user)
    }

    #[tracing::instrument(name = "store.delete_user", skip_all)]
    async fn delete_user(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        let mut tx = self.begin_write().await?;
        let Some(record) = load_record(tx.as_mut(), id, true).await? else {
            return Ok(None);
        };
        delete_user(tx.as_mut(), id).await?;
        tx.commit().await?;
        Ok(Some(record.user))
    }

    #[tracing::instrument(name = "store.find_identification_owner", skip_all)]
    async fn find_identification_owner(
        &self,
        id: &IdentificationId,
    ) -> Result<Option<UserId>, StorageError> {
        let mut conn = self.connection().await?;
        let owners = conn
            .fetch_texts(sql::identification_owner(id.as_str(), conn.dialect()))
            .await?;
        owners.first().map(|o| stored_user_id(o)).transpose()
    }

    #[tracing::instrument(name = "store.list_users", skip_all)]
    async fn list_users(&self, query: &ListQuery) -> Result<Vec<User>, StorageError> {
        list_users(self, query).await
    }

    #[tracing::instrument(name = "store.count_users", skip_all)]
    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StorageError> {
        let mut conn = self.scan_connection().await?;
        let trigrams = search_trigrams(conn.as_mut(), self.search_stats(), filter).await?;
        let count = conn
            .fetch_count(sql::count_users(filter, &trigrams, conn.dialect()))
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn pool_stats(&self) -> Option<crate::PoolStats> {
        Some(SqlDatabase::pool_stats(self))
    }

    fn group_commit_stats(&self) -> Option<crate::group_commit::GroupCommitStats> {
        self.group_commit().map(GroupCommit::stats)
    }

    #[tracing::instrument(name = "store.ping", skip_all)]
    async fn ping(&self) -> Result<(), StorageError> {
        let probe = Statement::unbound("SELECT 1");
        self.connection().await?.execute(probe).await?;
        Ok(())
    }
}
