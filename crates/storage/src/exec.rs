//! The [`UserStore`] of every SQL backend, written once.
//!
//! A backend implements [`SqlConn`] for its connections (binding
//! [`crate::sql::Bind`] values and decoding rows) and [`SqlDatabase`]
//! (opening connections and write transactions); the blanket
//! `impl UserStore for D: SqlDatabase` here does the rest: loading records
//! without N+1 queries, inserting users, applying mutations inside one
//! locked transaction and writing back only what changed.

use async_trait::async_trait;
use roster_domain::{
    Channel, DomainError, EmailAddress, IdentificationId, PhoneNumber, User, UserId, UserRecord,
};

use crate::query::ListQuery;
use crate::rows::{self, EMAIL_COLUMNS, EmailRow, PHONE_COLUMNS, PhoneRow, UserRow};
use crate::sessions::{ColumnType, Value};
use crate::sql::{
    self, Bind, Dialect, EMAIL_WRITE_COLUMNS, Identified, PHONE_WRITE_COLUMNS, Statement,
    USER_WRITE_COLUMNS,
};
use crate::{Mutation, StorageError, UserFilter, UserStore};

/// A database connection (or open transaction) of one backend.
#[async_trait]
pub trait SqlConn: Send {
    /// The placeholder syntax this connection understands.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the number of rows affected.
    async fn execute(&mut self, statement: Statement) -> Result<u64, StorageError>;
    /// Runs a `SELECT` of [`crate::sql::USER_COLUMNS`].
    async fn fetch_users(&mut self, statement: Statement) -> Result<Vec<UserRow>, StorageError>;
    /// Runs a `SELECT` of [`EMAIL_COLUMNS`].
    async fn fetch_emails(&mut self, statement: Statement) -> Result<Vec<EmailRow>, StorageError>;
    /// Runs a `SELECT` of [`PHONE_COLUMNS`].
    async fn fetch_phones(&mut self, statement: Statement) -> Result<Vec<PhoneRow>, StorageError>;
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
    /// A pooled connection, for reads.
    async fn connection(&self) -> Result<Box<dyn SqlConn + '_>, StorageError>;
    /// A write transaction. Reads of a user inside it with `lock` set keep
    /// other writers of that user out until it ends.
    async fn begin_write(&self) -> Result<Box<dyn SqlTransaction + '_>, StorageError>;
    /// The connection pool's state, for metrics.
    fn pool_stats(&self) -> crate::PoolStats;
}

/// Loads full records for user rows: two more queries however many users.
async fn load_records(
    conn: &mut dyn SqlConn,
    user_rows: Vec<UserRow>,
) -> Result<Vec<UserRecord>, StorageError> {
    if user_rows.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = conn.dialect();
    let ids: Vec<&str> = user_rows.iter().map(|u| u.id.as_str()).collect();
    let emails = conn
        .fetch_emails(sql::identifiers_of(
            "email_addresses",
            EMAIL_COLUMNS,
            &ids,
            dialect,
        ))
        .await?;
    let phones = conn
        .fetch_phones(sql::identifiers_of(
            "phone_numbers",
            PHONE_COLUMNS,
            &ids,
            dialect,
        ))
        .await?;
    rows::assemble(user_rows, emails, phones)
}

/// Loads one record; `lock` takes a row lock where the dialect has them.
async fn load_record(
    conn: &mut dyn SqlConn,
    id: &UserId,
    lock: bool,
) -> Result<Option<UserRecord>, StorageError> {
    let users = conn
        .fetch_users(sql::user_by_id(id.as_str(), lock, conn.dialect()))
        .await?;
    Ok(load_records(conn, users).await?.pop())
}

/// Loads a page of users.
async fn list_users(conn: &mut dyn SqlConn, query: &ListQuery) -> Result<Vec<User>, StorageError> {
    let users = conn
        .fetch_users(sql::list_users(query, conn.dialect()))
        .await?;
    Ok(load_records(conn, users)
        .await?
        .into_iter()
        .map(|r| r.user)
        .collect())
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
    for row in diff.added {
        conn.execute(sql::insert(table, columns, binds(row), dialect))
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
    for change in user.identifier_changes(before) {
        let (table, column, field) = match change.channel {
            Channel::Email => ("email_addresses", "email_normalized", "email_address"),
            Channel::Phone => ("phone_numbers", "phone_number", "phone_number"),
        };
        let holders = conn
            .fetch_texts(sql::identifier_holders(
                table,
                column,
                &change.normalized,
                user.id.as_str(),
                !change.verified,
                conn.dialect(),
            ))
            .await?;
        if !change.verified {
            if !holders.is_empty() {
                return Err(StorageError::Conflict {
                    field: field.to_owned(),
                });
            }
            continue;
        }
        for holder in holders {
            let holder = stored_user_id(&holder)?;
            // A holder verifying the same identifier right now waits for
            // this user's lock while this waits for its: PostgreSQL breaks
            // the deadlock by aborting one, and that one lost the race.
            let loaded = load_record(conn, &holder, true)
                .await
                .map_err(|e| match e {
                    StorageError::Aborted(_) => StorageError::Conflict {
                        field: field.to_owned(),
                    },
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

/// Inserts a user row and its identifiers.
pub(crate) async fn insert_user(
    conn: &mut dyn SqlConn,
    record: &UserRecord,
) -> Result<(), StorageError> {
    let user = &record.user;
    settle_uniqueness(conn, user, None).await?;
    let binds = UserRow::from_record(record).binds(user);
    conn.execute(sql::insert(
        "users",
        &USER_WRITE_COLUMNS,
        binds,
        conn.dialect(),
    ))
    .await?;
    sync_identifiers(conn, user, &[], &[]).await
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
    let binds = UserRow::from_record(new).binds(user);
    conn.execute(sql::update_by_id(
        "users",
        &USER_WRITE_COLUMNS,
        binds,
        conn.dialect(),
    ))
    .await?;
    Ok(())
}

/// Deletes a user; identifiers go with it (`ON DELETE CASCADE`).
async fn delete_user(conn: &mut dyn SqlConn, id: &UserId) -> Result<(), StorageError> {
    conn.execute(sql::delete_user(id.as_str(), conn.dialect()))
        .await?;
    Ok(())
}

#[async_trait]
impl<D: SqlDatabase> UserStore for D {
    #[tracing::instrument(name = "store.insert_user", skip_all)]
    async fn insert_user(&self, record: &UserRecord) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        insert_user(tx.as_mut(), record).await?;
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
        list_users(self.connection().await?.as_mut(), query).await
    }

    #[tracing::instrument(name = "store.count_users", skip_all)]
    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StorageError> {
        let mut conn = self.connection().await?;
        let count = conn
            .fetch_count(sql::count_users(filter, conn.dialect()))
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn pool_stats(&self) -> Option<crate::PoolStats> {
        Some(SqlDatabase::pool_stats(self))
    }

    #[tracing::instrument(name = "store.ping", skip_all)]
    async fn ping(&self) -> Result<(), StorageError> {
        let probe = Statement {
            sql: "SELECT 1".to_owned(),
            binds: Vec::new(),
        };
        self.connection().await?.execute(probe).await?;
        Ok(())
    }
}
