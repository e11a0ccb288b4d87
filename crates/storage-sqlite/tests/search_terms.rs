//! SQLite's index of search terms follows inserts, changes and deletes,
//! a database whose index was left empty by a migration is filled the
//! next time the store opens, and an index in many segments is merged
//! while writes are quiet.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use roster_domain::{UserRecord, Username};
use roster_storage::UserStore;
use roster_storage::contract::{matching, new_user};
use roster_storage::exec::SqlDatabase;
use roster_storage::search::{index_terms, match_terms, trigrams};
use roster_storage::sql::Statement;
use roster_storage_sqlite::{MAX_INDEX_SEGMENTS, SqliteStore};

fn record(username: &str, offset: i64) -> UserRecord {
    let email = format!("{username}@example.com");
    UserRecord::new(new_user(&[&email], &[], Some(username), offset), None)
}

/// Rows of the index holding every term `query` is looked up by: what the
/// index itself says, before `LIKE` over the users' texts. Every trigram
/// counts as picked.
async fn indexed(store: &SqliteStore, query: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM users_search_terms WHERE users_search_terms MATCH '{}'",
        lookup_terms(query).join(" AND ")
    );
    let mut conn = store.connection().await.unwrap();
    conn.fetch_count(Statement::unbound(&sql)).await.unwrap()
}

fn lookup_terms(query: &str) -> Vec<String> {
    let terms = match_terms(query, &trigrams(query));
    assert!(!terms.is_empty());
    terms
}

/// [`indexed`], asserted to be the number of users whose current search
/// texts give each of those terms. Which users those are is computed, not
/// written down: terms are hashes of runs, which users' random ids can
/// hold too (`bulk004` is looked up by its trigrams, and an id can hold
/// `004`), and two runs can hash alike.
async fn assert_indexed(store: &SqliteStore, query: &str) -> i64 {
    let terms = lookup_terms(query);
    let mut conn = store.connection().await.unwrap();
    let texts = conn
        .fetch_texts(Statement::unbound("SELECT search_text FROM users"))
        .await
        .unwrap();
    drop(conn);
    let holding = texts
        .iter()
        .filter(|text| {
            let held = index_terms(text);
            let held: HashSet<&str> = held.split(' ').collect();
            terms.iter().all(|t| held.contains(t.as_str()))
        })
        .count();
    let indexed = indexed(store, query).await;
    assert_eq!(indexed, i64::try_from(holding).unwrap(), "{query}");
    indexed
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
    // (query, users the index gives at least, users found). `bulk004` is
    // shorter than a window of runs (`RUN_QUERY`): it is looked up by
    // trigrams, all of which `bulk0004` holds too; `LIKE` drops it.
    for (query, indexed_users, users) in [
        ("solo0001234", 1, 1),
        ("0001234@example", 1, 1),
        ("solo0", 1, 1),
        ("bulk0042", 1, 1),
        ("bulk004", 11, 10),
        ("@example.com", 51, 51),
    ] {
        assert!(
            assert_indexed(&store, query).await >= indexed_users,
            "{query}"
        );
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
    assert!(assert_indexed(&store, "renamed777").await >= 1);
    assert!(
        assert_indexed(&store, "solo0001234@").await >= 1,
        "the address stays"
    );
    assert!(
        assert_indexed(&store, "solo0001234").await >= 1,
        "in the address"
    );
    assert_eq!(found(&store, "renamed777").await, 1);

    // A deleted user's terms go with it.
    store.delete_user(&bulk[42].user.id).await.unwrap();
    assert_indexed(&store, "bulk0042").await;
    assert_eq!(found(&store, "bulk0042").await, 0);
    assert_eq!(assert_indexed(&store, "@example.com").await, 50);

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
    assert_eq!(assert_indexed(&store, "@example.com").await, 50);
    assert!(assert_indexed(&store, "renamed777").await >= 1);
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
/// about then is neither refused nor lost.
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

    // The merge starts at the first check (one a second) that saw no
    // write since the one before: one to two seconds after the last
    // insert. One more user about then: before the merge, which takes it
    // in; while it runs, which stops it until the next quiet check; or
    // after it, a segment of its own beside the merged one.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let late = record("latecomer", 0);
    store.insert_user(&late).await.unwrap();
    users.push(late);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let segments = store.search_index_segments().await.unwrap();
        if segments <= 2 {
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
