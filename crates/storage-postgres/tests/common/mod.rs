//! Checks shared by PostgreSQL's store tests.

use roster_storage::exec::SqlDatabase;
use roster_storage::search::index_keys;
use roster_storage::sessions::{ColumnType, Value};
use roster_storage::sql::Statement;
use roster_storage_postgres::PostgresStore;

/// Users without keys, and users whose keys are not those of their text.
pub async fn unkeyed_and_wrong(store: &PostgresStore) -> (usize, usize) {
    let mut conn = store.connection().await.unwrap();
    let rows = conn
        .fetch_values(
            Statement::unbound("SELECT search_text, search_terms::text FROM users"),
            &[ColumnType::Text, ColumnType::Text],
        )
        .await
        .unwrap();
    let (mut unkeyed, mut wrong) = (0, 0);
    for row in rows {
        match &row[..] {
            [Value::Text(Some(text)), Value::Text(Some(keys))] => {
                let expected: Vec<String> = index_keys(text).iter().map(i32::to_string).collect();
                if *keys != format!("{{{}}}", expected.join(",")) {
                    wrong += 1;
                }
            }
            [Value::Text(Some(_)), Value::Text(None)] => unkeyed += 1,
            other => panic!("unexpected row {other:?}"),
        }
    }
    (unkeyed, wrong)
}
