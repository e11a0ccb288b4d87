//! The shared storage contract, run against PostgreSQL (a throwaway
//! cluster, or the server named by `ROSTER_TEST_POSTGRES_URL`).

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use roster_storage::contract::Fixture;
use roster_storage_postgres::{PoolConfig, PostgresStore};

async fn fresh() -> Fixture {
    let url = roster_testing::postgres_database().await;
    let store = PostgresStore::connect(&url, PoolConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Fixture {
        store: Arc::new(store),
        keep: Box::new(()),
    }
}

roster_storage::contract_suite!(fresh);
