//! Connections for reads are kept for the next read without a round trip
//! to test them, and one that failed is closed, not kept.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use roster_storage::StorageError;
use roster_storage::exec::SqlDatabase;
use roster_storage::sql::{Bind, Statement};
use roster_storage_postgres::{PoolConfig, PostgresStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_connection_is_kept_until_it_fails() {
    let url = roster_testing::postgres_database().await;
    // One connection for writes, one for reads.
    let config = PoolConfig {
        max_connections: 2,
        ..PoolConfig::default()
    };
    let store = PostgresStore::connect(&url, config).await.unwrap();
    let backend = || async {
        store
            .connection()
            .await?
            .fetch_count(Statement::unbound("SELECT pg_backend_pid()::bigint"))
            .await
    };
    let first = backend().await.unwrap();
    assert_eq!(backend().await.unwrap(), first, "the connection is kept");

    // The server ends the session of the idle read connection.
    let mut writes = store.begin_write().await.unwrap();
    writes.execute(terminate(first)).await.unwrap();
    writes.commit().await.unwrap();
    // The next read on it fails: the store cannot tell before using it.
    let failed = backend().await;
    assert!(
        matches!(failed, Err(StorageError::Unavailable(_))),
        "{failed:?}"
    );
    // It was closed, not kept: the next read opens another.
    let second = backend().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(backend().await.unwrap(), second);
}

/// Ends the session of the backend `pid`, waiting until it is gone.
fn terminate(pid: i64) -> Statement {
    Statement {
        sql: "SELECT pg_terminate_backend(CAST($1 AS integer), 5000)".into(),
        binds: vec![Bind::Int(pid)],
    }
}
