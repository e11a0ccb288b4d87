//! The shared storage contract, run against SQLite.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use roster_storage::contract::Fixture;
use roster_storage_sqlite::SqliteStore;

async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    Fixture {
        store: Arc::new(store),
        keep: Box::new(dir),
    }
}

roster_storage::contract_suite!(fresh);
