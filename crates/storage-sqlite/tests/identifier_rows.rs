//! A user's email addresses and phone numbers are kept on its row as well
//! as in their tables: the store writes them with every change and reads
//! users from the row alone, and the migration that added them gathers
//! them for the users stored before, in a form the store reads back as
//! the same users.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use roster_domain::query::{OrderBy, UserFilter};
use roster_domain::{User, UserRecord};
use roster_storage::UserStore;
use roster_storage::contract::{new_user, with_email_added};
use roster_storage::exec::SqlDatabase;
use roster_storage::query::ListQuery;
use roster_storage::sql::Statement;
use roster_storage_sqlite::SqliteStore;

/// The migration that added the copies; its `UPDATE` gathers them.
const MIGRATION: &str = include_str!("../../../migrations/sqlite/0011_identifier_rows.sql");

async fn execute(store: &SqliteStore, sql: &str) -> u64 {
    let mut conn = store.connection().await.unwrap();
    conn.execute(Statement::unbound(sql)).await.unwrap()
}

async fn without_rows(store: &SqliteStore) -> i64 {
    let mut conn = store.connection().await.unwrap();
    conn.fetch_count(Statement::unbound(
        "SELECT count(*) FROM users WHERE email_rows IS NULL OR phone_rows IS NULL",
    ))
    .await
    .unwrap()
}

async fn read(store: &SqliteStore, user: &User) -> User {
    store.get_user(&user.id).await.unwrap().unwrap()
}

#[tokio::test]
async fn identifiers_on_the_row_follow_writes_and_are_gathered_for_older_users() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();

    let alone = UserRecord::new(
        new_user(
            &["alone@example.com", "other@example.com"],
            &["+4915100000001", "+4915100000002"],
            None,
            0,
        ),
        None,
    );
    store.insert_user(&alone).await.unwrap();
    let bulk: Vec<UserRecord> = (0..3)
        .map(|i| {
            let email = format!("bulk{i}@example.com");
            UserRecord::new(new_user(&[&email], &[], None, i + 1), None)
        })
        .collect();
    store.insert_users(&bulk).await.unwrap();
    let changed = with_email_added(&store, &alone.user.id, "third@example.com").await;
    assert_eq!(changed.email_addresses.len(), 3);
    assert_eq!(without_rows(&store).await, 0);
    assert_eq!(read(&store, &alone.user).await, changed);
    assert_eq!(read(&store, &bulk[2].user).await, bulk[2].user);

    // Without the copies, reads gather from the tables.
    assert_eq!(
        execute(
            &store,
            "UPDATE users SET email_rows = NULL, phone_rows = NULL"
        )
        .await,
        4
    );
    assert_eq!(read(&store, &alone.user).await, changed);
    assert_eq!(read(&store, &bulk[2].user).await, bulk[2].user);

    // The migration gathers them as the store reads them.
    let gather = &MIGRATION[MIGRATION.find("UPDATE users").unwrap()..];
    assert_eq!(execute(&store, gather).await, 4);
    assert_eq!(without_rows(&store).await, 0);
    assert_eq!(read(&store, &alone.user).await, changed);
    assert_eq!(read(&store, &bulk[0].user).await, bulk[0].user);
    assert_eq!(read(&store, &bulk[2].user).await, bulk[2].user);

    // A read takes the copy on the row, not the tables.
    let emptied = format!(
        "UPDATE users SET email_rows = '[]' WHERE id = '{}'",
        bulk[1].user.id
    );
    assert_eq!(execute(&store, &emptied).await, 1);
    assert!(read(&store, &bulk[1].user).await.email_addresses.is_empty());

    // Pages read them too.
    let query = ListQuery::new(UserFilter::default(), OrderBy::default(), 10, "").unwrap();
    let page = store.list_users(&query).await.unwrap();
    assert_eq!(page.len(), 4);
    assert!(page.contains(&changed));
    assert!(page.contains(&bulk[2].user));
}
