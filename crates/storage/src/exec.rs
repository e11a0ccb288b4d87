//! What an SQL backend runs inside its transactions, written once over
//! [`SqlConn`]: loading records without N+1 queries, inserting a user, and
//! writing back the difference a mutation made.
//!
//! A backend implements [`SqlConn`] for its connection type (binding
//! [`Bind`] values and decoding rows) and owns the transaction boundaries.

use async_trait::async_trait;
use roster_domain::{User, UserId, UserRecord};

use crate::StorageError;
use crate::rows::{self, EMAIL_COLUMNS, EmailRow, PHONE_COLUMNS, PhoneRow, UserRow};
use crate::sql::{
    self, Dialect, EMAIL_WRITE_COLUMNS, PHONE_WRITE_COLUMNS, Statement, USER_WRITE_COLUMNS,
};

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
}

/// Loads full records for user rows: two more queries however many users.
pub async fn load_records(
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
pub async fn load_record(
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
pub async fn list_users(
    conn: &mut dyn SqlConn,
    query: &crate::ListQuery,
) -> Result<Vec<User>, StorageError> {
    let users = conn
        .fetch_users(sql::list_users(query, conn.dialect()))
        .await?;
    Ok(load_records(conn, users)
        .await?
        .into_iter()
        .map(|r| r.user)
        .collect())
}

/// Inserts a user row and its identifiers.
pub async fn insert_user(conn: &mut dyn SqlConn, record: &UserRecord) -> Result<(), StorageError> {
    let dialect = conn.dialect();
    let user = &record.user;
    let row = UserRow::from_record(record);
    conn.execute(sql::insert(
        "users",
        &USER_WRITE_COLUMNS,
        row.binds(user),
        dialect,
    ))
    .await?;
    for e in &user.email_addresses {
        let binds = EmailRow::from_domain(&user.id, e).binds();
        conn.execute(sql::insert(
            "email_addresses",
            &EMAIL_WRITE_COLUMNS,
            binds,
            dialect,
        ))
        .await?;
    }
    for p in &user.phone_numbers {
        let binds = PhoneRow::from_domain(&user.id, p).binds();
        conn.execute(sql::insert(
            "phone_numbers",
            &PHONE_WRITE_COLUMNS,
            binds,
            dialect,
        ))
        .await?;
    }
    Ok(())
}

/// Writes the difference between the stored user and the mutated record.
pub async fn write_changes(
    conn: &mut dyn SqlConn,
    old: &User,
    new: &UserRecord,
) -> Result<(), StorageError> {
    let dialect = conn.dialect();
    let user = &new.user;
    let emails = sql::diff(&old.email_addresses, &user.email_addresses);
    let phones = sql::diff(&old.phone_numbers, &user.phone_numbers);
    // Removals first, so an identifier removed and re-added never collides
    // with itself on a unique index.
    if !emails.removed.is_empty() {
        conn.execute(sql::delete_by_ids(
            "email_addresses",
            &emails.removed,
            dialect,
        ))
        .await?;
    }
    if !phones.removed.is_empty() {
        conn.execute(sql::delete_by_ids(
            "phone_numbers",
            &phones.removed,
            dialect,
        ))
        .await?;
    }
    for e in emails.changed {
        let binds = EmailRow::from_domain(&user.id, e).binds();
        conn.execute(sql::update_by_id(
            "email_addresses",
            &EMAIL_WRITE_COLUMNS,
            binds,
            dialect,
        ))
        .await?;
    }
    for p in phones.changed {
        let binds = PhoneRow::from_domain(&user.id, p).binds();
        conn.execute(sql::update_by_id(
            "phone_numbers",
            &PHONE_WRITE_COLUMNS,
            binds,
            dialect,
        ))
        .await?;
    }
    for e in emails.added {
        let binds = EmailRow::from_domain(&user.id, e).binds();
        conn.execute(sql::insert(
            "email_addresses",
            &EMAIL_WRITE_COLUMNS,
            binds,
            dialect,
        ))
        .await?;
    }
    for p in phones.added {
        let binds = PhoneRow::from_domain(&user.id, p).binds();
        conn.execute(sql::insert(
            "phone_numbers",
            &PHONE_WRITE_COLUMNS,
            binds,
            dialect,
        ))
        .await?;
    }
    let row = UserRow::from_record(new);
    conn.execute(sql::update_by_id(
        "users",
        &USER_WRITE_COLUMNS,
        row.binds(user),
        dialect,
    ))
    .await?;
    Ok(())
}

/// Deletes a user; identifiers go with it (`ON DELETE CASCADE`).
pub async fn delete_user(conn: &mut dyn SqlConn, id: &UserId) -> Result<(), StorageError> {
    conn.execute(sql::delete_user(id.as_str(), conn.dialect()))
        .await?;
    Ok(())
}
