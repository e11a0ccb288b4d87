//! Inserts of new users that wait for a turn go to PostgreSQL together,
//! in one statement, and each still succeeds or fails on its own: a group
//! that another user's identifiers, a refused row or a shared identifier
//! stops runs again one insert at a time.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;

use roster_domain::UserRecord;
use roster_storage::contract::{new_record, until, waiting_groups_succeed_and_fail_alone};
use roster_storage::exec::SqlDatabase;
use roster_storage::group_commit::GroupCommit;
use roster_storage::sql::Statement;
use roster_storage::{StorageError, UserStore};
use roster_storage_postgres::{PoolConfig, PostgresStore};

use common::unkeyed_and_wrong;

fn user(email: &str, username: &str, offset: i64) -> UserRecord {
    new_record(email, true, username, offset)
}

fn group(store: &PostgresStore) -> &GroupCommit {
    store.group_commit().unwrap()
}

/// Inserts `records`, all waiting for a turn together, in order; returns
/// each one's outcome as the field of its conflict, `None` when it was
/// inserted.
///
/// Every turn is first taken by an insert whose username another
/// transaction holds, uncommitted: each waits in PostgreSQL's unique
/// index until that transaction rolls back. `records` queue behind them,
/// one at a time; then the transaction rolls back, the blocked inserts
/// succeed, and the next turn takes every record waiting.
async fn behind_busy_turns(
    store: &Arc<PostgresStore>,
    tag: &str,
    records: &[UserRecord],
) -> Vec<Option<String>> {
    let spawn = |record: UserRecord| {
        let store = store.clone();
        tokio::spawn(async move { store.insert_user(&record).await })
    };
    let mut holder = store.begin_write().await.unwrap();
    let mut blocked = Vec::new();
    for turn in 0..2 {
        let name = format!("{tag}held{turn}");
        holder
            .execute(Statement::unbound(&format!(
                "INSERT INTO users (id, username, username_normalized, created_at, updated_at) \
                 VALUES ('user_{tag}{turn}', '{name}', '{name}', 0, 0)"
            )))
            .await
            .unwrap();
        let before = group(store).stats().transactions;
        blocked.push(spawn(user(&format!("{name}@example.com"), &name, 0)));
        until("the blocked insert takes a turn", || {
            group(store).stats().transactions == before + 1
        })
        .await;
    }
    let mut queued = Vec::new();
    for (i, record) in records.iter().enumerate() {
        queued.push(spawn(record.clone()));
        until("the insert waits", || group(store).waiting() == i + 1).await;
    }
    drop(holder);
    for insert in blocked {
        insert.await.unwrap().unwrap();
    }
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
async fn waiting_inserts_go_in_one_statement_and_fail_alone() {
    let url = roster_testing::postgres_database().await;
    let store = Arc::new(
        PostgresStore::connect(&url, PoolConfig::default())
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();
    waiting_groups_succeed_and_fail_alone(store.as_ref(), 2, async |tag, records| {
        behind_busy_turns(&store, tag, records).await
    })
    .await;
    assert_eq!(unkeyed_and_wrong(&store).await, (0, 0));
}
