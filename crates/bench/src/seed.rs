//! The dataset loader: users with one to three email addresses, one or two
//! phone numbers, names and public metadata. [`load`] writes them straight
//! into a database in bulk, through the same request conversion and domain
//! rules as CreateUser and the store's bulk insert; [`seed`] creates them
//! through a running Roster's API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use roster_domain::{Clock, SystemClock, Timestamp, User, UserRecord};
use roster_proto::convert;
use roster_proto::v1::CreateUserRequest;
use roster_proto::v1::user_service_client::UserServiceClient;
use roster_server::database::Database;
use tonic::transport::Channel;

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const PLANS: [&str; 3] = ["free", "pro", "team"];

/// The username of seeded user `i`: also a search term matching only it.
pub fn username(i: usize) -> String {
    format!("seed{i:07}")
}

fn request(i: usize) -> CreateUserRequest {
    let emails = 1 + i % 3;
    let phones = 1 + i % 2;
    let plan = PLANS[i % PLANS.len()];
    CreateUserRequest {
        username: username(i),
        first_name: FIRST[i % FIRST.len()].to_owned(),
        last_name: LAST[(i / FIRST.len()) % LAST.len()].to_owned(),
        email_addresses: (0..emails)
            .map(|k| format!("{}.{k}@example{k}.com", username(i)))
            .collect(),
        // German mobile numbers: eight free digits, two per user.
        phone_numbers: (0..phones)
            .map(|k| format!("+49151{:08}", i * 2 + k))
            .collect(),
        public_metadata: Some(prost_types::Struct {
            fields: [
                (
                    "plan".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(plan.to_owned())),
                    },
                ),
                (
                    "seat".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(f64::from(
                            u32::try_from(i % 1000).unwrap_or(0),
                        ))),
                    },
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

/// Users the loader writes per transaction.
const BATCH: usize = 2_000;

/// The record CreateUser would store for `request(i)`, created `at`.
fn record(i: usize, at: Timestamp) -> anyhow::Result<UserRecord> {
    let (new, _) =
        convert::create_user(request(i)).map_err(|e| anyhow::anyhow!("user {i}: {e}"))?;
    let user = User::create(new, at).map_err(|e| anyhow::anyhow!("user {i}: {e}"))?;
    Ok(UserRecord::new(user, None))
}

/// Writes users `0..count` into the database at `url` (migrating it first)
/// and returns their ids. Records are built on a thread of their own while
/// the previous batch is written; user `i` is created `count - i`
/// milliseconds ago, so creation order is load order.
pub async fn load(url: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let database = Database::open(url).await?;
    database.migrate().await?;
    let store = database.users();
    let started = Instant::now();
    let first = SystemClock.now().plus_millis(-i64::try_from(count)?);
    let (batches, mut incoming) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<UserRecord>>>(2);
    let builder = std::thread::spawn(move || {
        for start in (0..count).step_by(BATCH) {
            let batch = (start..count.min(start + BATCH))
                .map(|i| record(i, first.plus_millis(i64::try_from(i)?)))
                .collect();
            if batches.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    let mut ids = Vec::with_capacity(count);
    while let Some(batch) = incoming.recv().await {
        let batch = batch?;
        store.insert_users(&batch).await?;
        ids.extend(batch.iter().map(|r| r.user.id.to_string()));
        if ids.len() % 100_000 < BATCH {
            eprintln!(
                "  loaded {}/{count} users in {:.0}s",
                ids.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    builder
        .join()
        .map_err(|_| anyhow::anyhow!("the record builder panicked"))?;
    eprintln!(
        "  loaded {count} users in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let settling = Instant::now();
    database.settle_after_load().await?;
    eprintln!(
        "  {} in {:.1}s",
        match &database {
            Database::Postgres(_) => "VACUUM (ANALYZE)",
            Database::Sqlite(_) => "search index merged into one segment",
        },
        settling.elapsed().as_secs_f64()
    );
    database.close().await;
    Ok(ids)
}

/// Creates users `0..count` and returns their ids.
pub async fn seed(
    channels: &[Channel],
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let mut client = UserServiceClient::new(channels[w % channels.len()].clone());
        let (next, done) = (next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let user = client
                    .create_user(request(i))
                    .await
                    .map_err(|e| anyhow::anyhow!("seeding user {i}: {e}"))?
                    .into_inner()
                    .user
                    .ok_or_else(|| anyhow::anyhow!("seeding user {i}: no user returned"))?;
                ids.push((i, user.id));
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished % 50_000 == 0 {
                    eprintln!(
                        "  seeded {finished}/{count} users in {:.0}s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            anyhow::Ok(ids)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    eprintln!(
        "  seeded {count} users in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(all.into_iter().map(|(_, id)| id).collect())
}
