//! Inserts that wait for SQLite's writer share one transaction, and each
//! still succeeds or fails on its own.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use roster_domain::UserRecord;
use roster_storage::contract::{new_record, until};
use roster_storage::exec::SqlDatabase;
use roster_storage::group_commit::GroupCommitStats;
use roster_storage::sql::Statement;
use roster_storage::{StorageError, UserFilter, UserStore};
use roster_storage_sqlite::SqliteStore;

fn user(email: &str, username: &str, offset: i64) -> UserRecord {
    new_record(email, true, username, offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_inserts_commit_together_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
    store.migrate().await.unwrap();
    let group = || store.group_commit().unwrap();
    store
        .insert_user(&user("taken@example.com", "taken", 0))
        .await
        .unwrap();
    assert_eq!(
        group().stats(),
        GroupCommitStats {
            transactions: 1,
            inserts: 1,
            alone: 0
        }
    );

    // Another writer holds SQLite's write lock: the next insert's
    // transaction cannot begin, and the inserts after it queue.
    let writer = store.begin_write().await.unwrap();
    let spawn = |record: UserRecord| {
        let store = store.clone();
        tokio::spawn(async move { store.insert_user(&record).await })
    };
    let first = spawn(user("first@example.com", "first", 1));
    until("the first insert's transaction is begun", || {
        group().stats().transactions == 2
    })
    .await;
    let queued = [
        user("a@example.com", "alice", 2),
        user("b@example.com", "taken", 3), // the store's username
        user("c@example.com", "carol", 4),
        user("first@example.com", "dave", 5), // the first insert's email
        user("e@example.com", "erin", 6),
        user("f@example.com", "erin", 7), // an earlier one in the queue's
        user("g@example.com", "grace", 8),
        new_record("shared@example.com", false, "heidi", 9),
        // Verified, it takes the address from heidi, unverified.
        user("shared@example.com", "ivan", 10),
    ];
    // One at a time, so that they queue in this order.
    let mut tasks = Vec::new();
    for (i, record) in queued.iter().enumerate() {
        tasks.push(spawn(record.clone()));
        until("the insert waits", || group().waiting() == i + 1).await;
    }
    drop(writer);

    first.await.unwrap().unwrap();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let fields: Vec<Option<String>> = results
        .into_iter()
        .map(|r| match r {
            Ok(()) => None,
            Err(StorageError::Conflict { field }) => Some(field),
            Err(other) => panic!("unexpected {other:?}"),
        })
        .collect();
    let conflict = |f: &str| Some(f.to_owned());
    assert_eq!(
        fields,
        [
            None,
            conflict("username"),
            None,
            conflict("email_address"),
            None,
            conflict("username"),
            None,
            None,
            None,
        ]
    );
    // One transaction took all waiting inserts.
    assert_eq!(
        group().stats(),
        GroupCommitStats {
            transactions: 3,
            inserts: 2 + queued.len() as u64,
            alone: 0
        }
    );

    // The refused inserts left nothing behind: no user, no identifier, no
    // search entry; the accepted ones are whole.
    let heidi = &queued[7].user;
    for (record, field) in queued.iter().zip(&fields) {
        let stored = store.get_user(&record.user.id).await.unwrap();
        if field.is_some() {
            assert!(stored.is_none(), "{field:?}");
        } else if record.user.id == heidi.id {
            assert!(stored.unwrap().email_addresses.is_empty());
        } else {
            assert_eq!(stored.as_ref(), Some(&record.user));
        }
    }
    assert_eq!(store.count_users(&UserFilter::default()).await.unwrap(), 8);
    let matching = |query: &str| UserFilter {
        query: Some(query.to_owned()),
        ..UserFilter::default()
    };
    assert_eq!(store.count_users(&matching("erin")).await.unwrap(), 1);
    assert_eq!(store.count_users(&matching("f@example")).await.unwrap(), 0);
    assert_eq!(store.count_users(&matching("taken")).await.unwrap(), 1);
    assert_eq!(store.count_users(&matching("shared@")).await.unwrap(), 1);
    assert_eq!(store.count_users(&matching("heidi")).await.unwrap(), 1);
    // The index of search terms is sound and holds the users table's
    // rows, no more.
    let mut conn = store.connection().await.unwrap();
    conn.execute(Statement::unbound(
        "INSERT INTO users_search_terms (users_search_terms) VALUES ('integrity-check')",
    ))
    .await
    .unwrap();
    let strays = conn
        .fetch_count(Statement::unbound(
            "SELECT count(*) FROM users_search_terms t \
             WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.rowid = t.rowid)",
        ))
        .await
        .unwrap();
    let indexed = conn
        .fetch_count(Statement::unbound(
            "SELECT count(*) FROM users_search_terms",
        ))
        .await
        .unwrap();
    assert_eq!((strays, indexed), (0, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roster.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    let users: Vec<UserRecord> = (0..500)
        .map(|i| user(&format!("u{i}@example.com"), &format!("user{i}"), i))
        .collect();
    // Commits leave the users in the log; only a checkpoint puts them in
    // the file.
    store.insert_users(&users).await.unwrap();
    until("a checkpoint copies the log into the file", || {
        size() > before
    })
    .await;
    assert_eq!(
        store.count_users(&UserFilter::default()).await.unwrap(),
        500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_starts_over_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roster.db");
    let store = Arc::new(
        SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();
    // Enough writers that some always wait: a write transaction is open
    // whenever a checkpoint runs, and the next one begins as it ends.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..32)
        .map(|writer| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("w{writer}n{i}");
                    let record = user(&format!("{name}@example.com"), &name, i);
                    store.insert_user(&record).await.unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    // The pages in the log, read from the WAL index's header
    // (https://sqlite.org/walformat.html: `mxFrame`, a native-endian u32
    // at byte 16 of the -shm file) without touching the database.
    let shm = dir.path().join("roster.db-shm");
    let pages = || {
        let header = std::fs::read(&shm).unwrap();
        u32::from_ne_bytes(header[16..20].try_into().unwrap())
    };
    let mut most = 0;
    let mut started_over = false;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = pages();
        if most >= 1000 && now < most {
            started_over = true;
            break;
        }
        most = most.max(now);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        started_over,
        "the log grew to {most} pages and never started over"
    );
}
