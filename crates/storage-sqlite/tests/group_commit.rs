//! Inserts that wait for SQLite's writer share one transaction, in one
//! call when nothing stands in their way, and each still succeeds or
//! fails on its own; the log is checkpointed beside the writer.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use roster_domain::UserRecord;
use roster_storage::contract::{new_record, until, waiting_groups_succeed_and_fail_alone};
use roster_storage::exec::SqlDatabase;
use roster_storage::sql::Statement;
use roster_storage::{StorageError, UserFilter, UserStore};
use roster_storage_sqlite::SqliteStore;

fn user(email: &str, username: &str, offset: i64) -> UserRecord {
    new_record(email, true, username, offset)
}

/// Inserts `records`, all waiting for the writer together, in order;
/// returns each one's outcome as the field of its conflict, `None` when
/// it was inserted.
///
/// Another writer first holds SQLite's write lock: an insert named after
/// `tag` takes the turn and waits for the lock, and `records` queue
/// behind it, one at a time. Then the writer lets go, and the next turn
/// takes every record waiting.
async fn behind_the_writer(
    store: &Arc<SqliteStore>,
    tag: &str,
    records: &[UserRecord],
) -> Vec<Option<String>> {
    let group = || store.group_commit().unwrap();
    let spawn = |record: UserRecord| {
        let store = store.clone();
        tokio::spawn(async move { store.insert_user(&record).await })
    };
    let writer = store.begin_write().await.unwrap();
    let before = group().stats().transactions;
    let name = format!("{tag}first");
    let first = spawn(user(&format!("{name}@example.com"), &name, 0));
    until("the first insert takes the turn", || {
        group().stats().transactions == before + 1
    })
    .await;
    let mut queued = Vec::new();
    for (i, record) in records.iter().enumerate() {
        queued.push(spawn(record.clone()));
        until("the insert waits", || group().waiting() == i + 1).await;
    }
    drop(writer);
    first.await.unwrap().unwrap();
    let mut fields = Vec::new();
    for insert in queued {
        fields.push(match insert.await.unwrap() {
            Ok(()) => None,
            Err(StorageError::Conflict { field }) => Some(field),
            Err(other) => panic!("unexpected {other:?}"),
        });
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_inserts_commit_together_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
    store.migrate().await.unwrap();
    waiting_groups_succeed_and_fail_alone(store.as_ref(), 1, async |tag, records| {
        behind_the_writer(&store, tag, records).await
    })
    .await;
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
    let users = store.count_users(&UserFilter::default()).await.unwrap();
    let indexed = conn
        .fetch_count(Statement::unbound(
            "SELECT count(*) FROM users_search_terms",
        ))
        .await
        .unwrap();
    assert_eq!((strays, indexed), (0, i64::try_from(users).unwrap()));
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
