//! PostgreSQL's search keys follow inserts and changes; users left
//! without keys (stored before the keys existed, or written by an earlier
//! version of the store during a rolling upgrade) are still found, and
//! get their keys the next time the store fills them in (at start-up).
//! Pages of a search come from connections that keep one plan per
//! statement.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use roster_domain::query::{OrderBy, UserFilter};
use roster_domain::{UserRecord, Username};
use roster_storage::UserStore;
use roster_storage::contract::{matching, new_user};
use roster_storage::exec::SqlDatabase;
use roster_storage::query::ListQuery;
use roster_storage::sql::Statement;
use roster_storage_postgres::{PoolConfig, PostgresStore};

use common::unkeyed_and_wrong;

fn record(username: &str, offset: i64) -> UserRecord {
    let email = format!("{username}@example.com");
    UserRecord::new(new_user(&[&email], &[], Some(username), offset), None)
}

async fn found(store: &PostgresStore, query: &str) -> u64 {
    matching(store, query).await
}

/// The usernames of the users matching `query`, newest first, read in
/// pages of `size`.
async fn listed(store: &PostgresStore, query: &str, size: i32) -> Vec<String> {
    let filter = UserFilter {
        query: Some(query.into()),
        ..UserFilter::default()
    };
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = ListQuery::new(filter.clone(), OrderBy::default(), size, &token).unwrap();
        let users = store.list_users(&page).await.unwrap();
        names.extend(
            users
                .iter()
                .map(|u| u.username.clone().unwrap().to_string()),
        );
        match users.last() {
            Some(last) if users.len() == page.limit => token = page.next_token(last),
            _ => return names,
        }
    }
}

/// `bulk{i}` for each `i` of `range`, newest first.
fn bulk_names(range: std::ops::Range<usize>) -> Vec<String> {
    range.rev().map(|i| format!("bulk{i:04}")).collect()
}

async fn execute(store: &PostgresStore, sql: &str) -> u64 {
    let mut conn = store.connection().await.unwrap();
    conn.execute(Statement::unbound(sql)).await.unwrap()
}

#[tokio::test]
async fn keys_follow_writes_and_users_without_keys_are_found_and_keyed() {
    let url = roster_testing::postgres_database().await;
    let store = PostgresStore::connect(&url, PoolConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let alone = record("seed0001234", 0);
    store.insert_user(&alone).await.unwrap();
    let bulk: Vec<UserRecord> = (0..50).map(|i| record(&format!("bulk{i:04}"), i)).collect();
    store.insert_users(&bulk).await.unwrap();
    store
        .update_user(
            &alone.user.id,
            Box::new(|r| {
                r.user.username = Some(Username::parse("renamed777").unwrap());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(unkeyed_and_wrong(&store).await, (0, 0));
    for (query, users) in [
        ("renamed777", 1),
        ("seed0001234@", 1),
        ("bulk0042", 1),
        ("bulk004", 10),
        ("@example.com", 51),
    ] {
        assert_eq!(found(&store, query).await, users, "{query}");
    }
    assert_eq!(listed(&store, "bulk004", 3).await, bulk_names(40..50));

    // Users stored before the keys existed.
    assert_eq!(
        execute(
            &store,
            "UPDATE users SET search_terms = NULL WHERE username LIKE 'bulk000%'"
        )
        .await,
        10
    );
    // An earlier version renaming a user changes its text, not its keys:
    // the database drops them.
    let renamed = format!(
        "UPDATE users SET username = 'oldwriter99', username_normalized = 'oldwriter99', \
         search_text = replace(search_text, 'bulk0042', 'oldwriter99') \
         WHERE id = '{}'",
        bulk[42].user.id
    );
    assert_eq!(execute(&store, &renamed).await, 1);
    assert_eq!(unkeyed_and_wrong(&store).await, (11, 0));
    assert_eq!(found(&store, "oldwriter99").await, 1);
    assert_eq!(found(&store, "bulk0042").await, 0);
    assert_eq!(found(&store, "bulk000").await, 10);
    assert_eq!(found(&store, "bulk0007@example").await, 1);
    assert_eq!(listed(&store, "bulk000", 3).await, bulk_names(0..10));

    // The next start gives them keys.
    store.close().await;
    let store = PostgresStore::connect(&url, PoolConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(unkeyed_and_wrong(&store).await, (11, 0), "migrating alone");
    assert_eq!(store.fill_search_keys().await.unwrap(), 11);
    assert_eq!(unkeyed_and_wrong(&store).await, (0, 0));
    assert_eq!(store.fill_search_keys().await.unwrap(), 0);
    assert_eq!(found(&store, "oldwriter99").await, 1);
    assert_eq!(found(&store, "bulk000").await, 10);
    assert_eq!(found(&store, "@example.com").await, 51);
    assert_eq!(listed(&store, "bulk000", 3).await, bulk_names(0..10));
    let mut renamed_away = bulk_names(40..50);
    renamed_away.retain(|name| name != "bulk0042");
    assert_eq!(listed(&store, "bulk004", 4).await, renamed_away);
}

/// A search's page is read on a connection that keeps one plan for each
/// statement; the other connections let PostgreSQL plan as it chooses.
#[tokio::test]
async fn searches_keep_one_plan_and_other_reads_do_not() {
    let url = roster_testing::postgres_database().await;
    let store = PostgresStore::connect(&url, PoolConfig::default())
        .await
        .unwrap();
    let show = Statement::unbound("SHOW plan_cache_mode");
    let mut conn = store.search_connection().await.unwrap();
    assert_eq!(
        conn.fetch_texts(show.clone()).await.unwrap(),
        ["force_generic_plan"]
    );
    let mut conn = store.connection().await.unwrap();
    assert_eq!(conn.fetch_texts(show).await.unwrap(), ["auto"]);
}
