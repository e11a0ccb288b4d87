//! A user's email addresses and phone numbers are kept on its row as well
//! as in their tables. The store keeps the two in step through every
//! write; changes an earlier version of the store makes to the tables
//! alone (during a rolling upgrade) drop the copies on the row, so reads
//! fall back to the tables and never show a stale identifier; and the
//! store fills the copies in again at its next start.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use roster_domain::{IdentificationId, Timestamp, User, UserRecord};
use roster_storage::UserStore;
use roster_storage::contract::{new_user, with_email_added};
use roster_storage::exec::SqlDatabase;
use roster_storage::sql::Statement;
use roster_storage_postgres::{IDENTIFIER_ROWS_SETTING, PoolConfig, PostgresStore};
use sqlx::Connection as _;

async fn execute(store: &PostgresStore, sql: &str) -> u64 {
    let mut conn = store.connection().await.unwrap();
    conn.execute(Statement::unbound(sql)).await.unwrap()
}

/// Runs `sql` as an earlier version of the store would: on a connection
/// of its own, which does not say that it keeps the identifier arrays.
async fn as_earlier_version(url: &str, sql: &str) -> u64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    done.rows_affected()
}

/// Users whose rows do not hold their email addresses, and those whose
/// rows do not hold their phone numbers.
async fn without_rows(store: &PostgresStore) -> (String, String) {
    let mut conn = store.connection().await.unwrap();
    let count = |column: &str| {
        Statement::unbound(&format!(
            "SELECT count(*)::text FROM users WHERE {column} IS NULL"
        ))
    };
    let emails = conn.fetch_texts(count("email_rows")).await.unwrap();
    let phones = conn.fetch_texts(count("phone_rows")).await.unwrap();
    (emails[0].clone(), phones[0].clone())
}

async fn read(store: &PostgresStore, user: &User) -> User {
    store.get_user(&user.id).await.unwrap().unwrap()
}

#[tokio::test]
async fn identifiers_on_the_row_follow_every_write_and_stale_ones_are_dropped() {
    let url = roster_testing::postgres_database().await;
    let store = PostgresStore::connect(&url, PoolConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let none = || ("0".to_owned(), "0".to_owned());

    // Written by this store: alone, in a group, and changed.
    let alone = UserRecord::new(
        new_user(&["alone@example.com"], &["+4915100000001"], None, 0),
        None,
    );
    store.insert_user(&alone).await.unwrap();
    let bulk: Vec<UserRecord> = (0..3)
        .map(|i| {
            let email = format!("bulk{i}@example.com");
            let phone = format!("+491510000010{i}");
            UserRecord::new(new_user(&[&email], &[&phone], None, i + 1), None)
        })
        .collect();
    store.insert_users(&bulk).await.unwrap();
    let changed = with_email_added(&store, &alone.user.id, "second@example.com").await;
    assert_eq!(changed.email_addresses.len(), 2);
    assert_eq!(without_rows(&store).await, none(), "the store keeps them");

    // The store's connections say they keep the arrays, so the triggers
    // leave its changes to the identifier tables alone.
    let mut conn = store.connection().await.unwrap();
    let setting = Statement::unbound(&format!(
        "SELECT current_setting('{IDENTIFIER_ROWS_SETTING}')"
    ));
    assert_eq!(conn.fetch_texts(setting).await.unwrap(), ["kept"]);
    drop(conn);
    let touched = format!(
        "UPDATE email_addresses SET updated_at = updated_at WHERE user_id = '{}'",
        alone.user.id
    );
    assert_eq!(execute(&store, &touched).await, 2);
    assert_eq!(without_rows(&store).await, none(), "kept by the store");
    assert_eq!(read(&store, &alone.user).await, changed);
    assert_eq!(read(&store, &bulk[1].user).await, bulk[1].user);

    // An earlier version verifies an address, adds one and removes a
    // number, in the tables only.
    let second = &changed.email_addresses[1];
    let verified = format!(
        "UPDATE email_addresses SET verification_status = 'verified' WHERE id = '{}'",
        second.id
    );
    assert_eq!(as_earlier_version(&url, &verified).await, 1);
    let added = IdentificationId::generate(Timestamp::from_millis(10_000));
    let insert = format!(
        "INSERT INTO email_addresses (id, user_id, email_address, email_normalized, \
         verification_status, created_at, updated_at) \
         VALUES ('{added}', '{}', 'old@example.com', 'old@example.com', 'unverified', 10000, 10000)",
        bulk[0].user.id
    );
    assert_eq!(as_earlier_version(&url, &insert).await, 1);
    let removed = format!(
        "DELETE FROM phone_numbers WHERE id = '{}'",
        bulk[2].user.phone_numbers[0].id
    );
    assert_eq!(as_earlier_version(&url, &removed).await, 1);
    assert_eq!(
        without_rows(&store).await,
        ("2".to_owned(), "1".to_owned()),
        "the copies that no longer hold are dropped, and only those"
    );

    // Reads show what the tables hold.
    let now_alone = read(&store, &alone.user).await;
    assert!(now_alone.email_addresses[1].verification.is_verified());
    let now_first = read(&store, &bulk[0].user).await;
    assert_eq!(now_first.email_addresses.len(), 2);
    assert!(now_first.email_addresses.iter().any(|e| e.id == added));
    let now_third = read(&store, &bulk[2].user).await;
    assert!(now_third.phone_numbers.is_empty());
    assert_eq!(read(&store, &bulk[1].user).await, bulk[1].user);

    // The store fills the copies in again, and reads do not change.
    assert_eq!(store.fill_identifier_rows().await.unwrap(), 3);
    assert_eq!(without_rows(&store).await, none());
    assert_eq!(store.fill_identifier_rows().await.unwrap(), 0);
    assert_eq!(read(&store, &alone.user).await, now_alone);
    assert_eq!(read(&store, &bulk[0].user).await, now_first);
    assert_eq!(read(&store, &bulk[2].user).await, now_third);

    // A user an earlier version inserted has no copies at all.
    execute(
        &store,
        &format!(
            "UPDATE users SET email_rows = NULL, phone_rows = NULL WHERE id = '{}'",
            bulk[1].user.id
        ),
    )
    .await;
    assert_eq!(read(&store, &bulk[1].user).await, bulk[1].user);
    assert_eq!(store.fill_identifier_rows().await.unwrap(), 1);
    assert_eq!(read(&store, &bulk[1].user).await, bulk[1].user);

    // Removing a user removes its identifiers with it.
    store.delete_user(&alone.user.id).await.unwrap();
    assert!(store.get_user(&alone.user.id).await.unwrap().is_none());
    assert_eq!(without_rows(&store).await, none());
}
