//! SQLite's index of search terms follows inserts, changes and deletes,
//! a database whose index was left empty by a migration is filled the
//! next time the store opens, and an index in many segments is merged
//! while writes are quiet.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use roster_domain::{UserRecord, Username};
use roster_storage::UserStore;
use roster_storage::contract::{matching, new_user};
use roster_storage::exec::SqlDatabase;
use roster_storage::search::{match_terms, trigrams};
use roster_storage::sql::Statement;
use roster_storage_sqlite::{MAX_INDEX_SEGMENTS, SqliteStore};

fn record(username: &str, offset: i64) -> UserRecord {
    let email = format!("{username}@example.com");
    UserRecord::new(new_user(&[&email], &[], Some(username), offset), None)
}

/// Rows of the index holding every term `query` is looked up by: what the
/// index itself says, before `LIKE` over the users' texts. Every trigram
/// counts as picked. Terms are hashes, so a user holding none of the
/// query may share one of its terms; the queries below are looked up by
/// several terms, or held by everyone. A query shorter than a window of
/// runs is looked up by its trigrams, which users' random ids can hold: `1234@` would also find `bulk0034@…`
/// whose id holds `123` and `234`. Ids hold neither `l` nor `o`, which
/// every trigram of the short query below holds.
async fn indexed(store: &SqliteStore, query: &str) -> i64 {
    let terms = match_terms(query, &trigrams(query));
    assert!(!terms.is_empty());
    let sql = format!(
        "SELECT count(*) FROM users_search_terms WHERE users_search_terms MATCH '{}'",
        terms.join(" AND ")
    );
    let mut conn = store.connection().await.unwrap();
    conn.fetch_count(Statement::unbound(&sql)).await.unwrap()
}

/// Users whose search texts hold every trigram of `query`.
fn holding_every_trigram(users: &[&UserRecord], query: &str) -> i64 {
    let grams = trigrams(query);
    let holding = users
        .iter()
        .filter(|r| {
            let text = r.user.search_text();
            grams.iter().all(|g| text.contains(g.as_str()))
        })
        .count();
    i64::try_from(holding).unwrap()
}

async fn found(store: &SqliteStore, query: &str) -> u64 {
    matching(store, query).await
}

async fn execute(store: &SqliteStore, sql: &str) {
    let mut conn = store.connection().await.unwrap();
    conn.execute(Statement::unbound(sql)).await.unwrap();
}

#[tokio::test]
async fn the_index_follows_each_write_and_is_filled_when_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let alone = record("solo0001234", 0);
    store.insert_user(&alone).await.unwrap();
    let bulk: Vec<UserRecord> = (0..50).map(|i| record(&format!("bulk{i:04}"), i)).collect();
    store.insert_users(&bulk).await.unwrap();
    // Shorter than a window of runs (`RUN_QUERY`): by trigrams, all of
    // which `bulk0004` holds too; `LIKE` drops it. So may a user whose
    // random id holds `004`, the one trigram of the query made of
    // characters ids are made of: the index gives every user whose search
    // text holds each trigram, at least those eleven.
    let everyone: Vec<&UserRecord> = std::iter::once(&alone).chain(&bulk).collect();
    let holding_bulk004 = holding_every_trigram(&everyone, "bulk004");
    assert!(holding_bulk004 >= 11, "{holding_bulk004}");
    // (query, users the index gives, users found)
    for (query, indexed_users, users) in [
        ("solo0001234", 1, 1),
        ("0001234@example", 1, 1),
        ("solo0", 1, 1),
        ("bulk0042", 1, 1),
        ("bulk004", holding_bulk004, 10),
        ("@example.com", 51, 51),
    ] {
        assert_eq!(indexed(&store, query).await, indexed_users, "{query}");
        assert_eq!(found(&store, query).await, users, "{query}");
    }

    // A changed search text replaces the user's terms.
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
    assert_eq!(indexed(&store, "renamed777").await, 1);
    assert_eq!(
        indexed(&store, "solo0001234@").await,
        1,
        "the address stays"
    );
    assert_eq!(indexed(&store, "solo0001234").await, 1, "in the address");
    assert_eq!(found(&store, "renamed777").await, 1);

    // A deleted user's terms go with it.
    store.delete_user(&bulk[42].user.id).await.unwrap();
    assert_eq!(indexed(&store, "bulk0042").await, 0);
    assert_eq!(indexed(&store, "@example.com").await, 50);

    // An index a migration left empty is filled when the store opens.
    execute(
        &store,
        "INSERT INTO users_search_terms (users_search_terms) VALUES ('delete-all')",
    )
    .await;
    execute(
        &store,
        "INSERT INTO search_terms_backfill (pending) VALUES (1)",
    )
    .await;
    assert_eq!(indexed(&store, "@example.com").await, 0);
    store.close().await;
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(indexed(&store, "@example.com").await, 50);
    assert_eq!(indexed(&store, "renamed777").await, 1);
    assert_eq!(found(&store, "bulk0007").await, 1);
    let mut conn = store.connection().await.unwrap();
    let pending = conn
        .fetch_count(Statement::unbound(
            "SELECT count(*) FROM search_terms_backfill",
        ))
        .await
        .unwrap();
    assert_eq!(pending, 0);
}

/// An index that many commits left in more than `MAX_INDEX_SEGMENTS`
/// segments is merged into one once writes stop, and a write arriving
/// during the merge is neither refused nor lost.
#[tokio::test]
async fn a_quiet_index_in_many_segments_is_merged_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.search_index_segments().await.unwrap(), 0);
    let mut users = Vec::new();
    // Each insert alone is a commit of its own, and a segment.
    while store.search_index_segments().await.unwrap() <= MAX_INDEX_SEGMENTS {
        assert!(users.len() < 1_000, "segments did not pile up");
        let user = record(&format!("quiet{:04}", users.len()), 0);
        store.insert_user(&user).await.unwrap();
        users.push(user);
    }
    let piled = users.len();

    // The merge starts after a second without writes; one more user
    // while it runs.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let late = record("latecomer", 0);
    store.insert_user(&late).await.unwrap();
    users.push(late);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let segments = store.search_index_segments().await.unwrap();
        if segments == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still {segments} segments");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found(&store, "quiet").await, piled as u64);
    assert_eq!(found(&store, "latecomer").await, 1);
    for user in &users {
        let username = user.user.username.as_ref().unwrap().as_str();
        // Found through the index: a user missing from it is not.
        assert_eq!(found(&store, username).await, 1, "{username}");
    }
}
