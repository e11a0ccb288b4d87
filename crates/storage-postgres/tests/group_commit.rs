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
use roster_storage::contract::{matching, new_record, until};
use roster_storage::exec::SqlDatabase;
use roster_storage::group_commit::{GroupCommit, GroupCommitStats};
use roster_storage::sql::Statement;
use roster_storage::{StorageError, UserFilter, UserStore};
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
    store
        .insert_user(&user("taken@example.com", "taken", 0))
        .await
        .unwrap();
    let loose = new_record("loose@example.com", false, "loose", 1);
    store.insert_user(&loose).await.unwrap();
    assert_eq!(
        group(&store).stats(),
        GroupCommitStats {
            transactions: 2,
            inserts: 2,
            alone: 0
        }
    );
    let stats = |transactions, inserts, alone| GroupCommitStats {
        transactions,
        inserts,
        alone,
    };
    let conflict = |f: &str| Some(f.to_owned());

    // Nothing stands in the way: one statement inserts them all.
    let clean: Vec<UserRecord> = (0..5)
        .map(|i| {
            user(
                &format!("clean{i}@example.com"),
                &format!("clean{i}"),
                10 + i,
            )
        })
        .collect();
    assert_eq!(behind_busy_turns(&store, "a", &clean).await, vec![None; 5]);
    assert_eq!(group(&store).stats(), stats(5, 9, 0));

    // A username the store holds, and one an earlier insert of the group
    // takes: the statement is refused, and each insert runs alone.
    let refused = [
        user("alice@example.com", "alice", 20),
        user("bob@example.com", "taken", 21),
        user("erin@example.com", "erin", 22),
        user("frank@example.com", "erin", 23),
    ];
    assert_eq!(
        behind_busy_turns(&store, "b", &refused).await,
        [None, conflict("username"), None, conflict("username")]
    );
    assert_eq!(group(&store).stats(), stats(8, 15, 4));

    // Other users hold the addresses: an unverified copy of a verified
    // one, and a verified one. The statement inserts nothing and says
    // who; alone, one insert takes the address from its holder, the other
    // is refused.
    let held = [
        user("judy@example.com", "judy", 30),
        user("loose@example.com", "karl", 31),
        user("taken@example.com", "grace", 32),
    ];
    assert_eq!(
        behind_busy_turns(&store, "c", &held).await,
        [None, None, conflict("email_address")]
    );
    assert_eq!(group(&store).stats(), stats(11, 20, 7));
    let loose_now = store.get_user(&loose.user.id).await.unwrap().unwrap();
    assert!(loose_now.email_addresses.is_empty());

    // Two inserts of one group name the same address: they settle it
    // between them one after the other, the verified one keeping it.
    let shared = [
        new_record("shared@example.com", false, "heidi", 40),
        user("shared@example.com", "ivan", 41),
        user("mallory@example.com", "mallory", 42),
    ];
    assert_eq!(
        behind_busy_turns(&store, "d", &shared).await,
        [None, None, None]
    );
    assert_eq!(group(&store).stats(), stats(14, 25, 10));
    let heidi = store.get_user(&shared[0].user.id).await.unwrap().unwrap();
    assert!(heidi.email_addresses.is_empty());

    // What was inserted is whole; what was refused left nothing behind.
    let outcomes = clean
        .iter()
        .map(|r| (r, true))
        .chain(refused.iter().zip([true, false, true, false]))
        .chain(held.iter().zip([true, true, false]))
        .chain(shared[1..].iter().map(|r| (r, true)));
    for (record, kept) in outcomes {
        let stored = store.get_user(&record.user.id).await.unwrap();
        if kept {
            assert_eq!(stored.as_ref(), Some(&record.user));
        } else {
            assert!(stored.is_none(), "{:?}", record.user.username);
        }
    }
    // 2 + 5 + 2 + 2 + 3 from the groups, 8 blocked inserts.
    assert_eq!(store.count_users(&UserFilter::default()).await.unwrap(), 22);
    assert_eq!(unkeyed_and_wrong(&store).await, (0, 0));
    for (query, users) in [
        ("clean3@example", 1),
        ("clean", 5),
        ("erin", 1),
        ("frank", 0),
        ("shared@", 1),
        ("heidi", 1),
    ] {
        assert_eq!(matching(store.as_ref(), query).await, users, "{query}");
    }
}
