//! The baselines Roster is measured against, each serving
//! `roster.v1.UserService` on the same transport as Roster
//! ([`roster_server::transport`]):
//!
//! - `noop`: answers GetUser and CreateUser without doing anything, the
//!   transport's ceiling;
//! - `select`: answers GetUser with one primary-key `SELECT` of a narrow
//!   row, the storage ceiling for reads;
//! - `insert`: answers CreateUser with one single-row `INSERT`, the storage
//!   ceiling for writes;
//! - `select_pool`: `select` through one of sqlx's pools as it comes,
//!   which tests each connection given back with a round trip (a hop to
//!   the connection's thread on SQLite): what a minimal tonic and sqlx
//!   server costs, besides the ceiling.
//!
//! They use the same database settings as Roster's stores and read as
//! Roster reads by key: SQLite in WAL with `synchronous=NORMAL`, its
//! SELECT on the calling thread as Roster's
//! ([`roster_storage_sqlite::Readers`]), its INSERT on one of eight sqlx
//! connections, not tested before they are handed out; PostgreSQL with
//! sixteen connections, held as Roster holds those of its reads
//! ([`roster_storage_postgres::ReadPool`]), not tested when handed out or
//! given back.
//! Every other RPC is UNIMPLEMENTED.

use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use roster_proto::v1::user_service_server::{UserService, UserServiceServer};
use roster_proto::v1::{self, User};
use roster_storage::sql::{Bind, Statement};
use roster_storage_postgres::ReadPool;
use roster_storage_sqlite::Readers;
use tonic::{Request, Response, Status, Streaming};

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Noop,
    Select,
    Insert,
    SelectPool,
}

#[derive(Clone, Debug)]
enum Pool {
    None,
    Sqlite(sqlx::SqlitePool, Option<std::sync::Arc<Readers>>),
    Postgres(std::sync::Arc<ReadPool>),
    /// sqlx's own pool, for `select_pool` on PostgreSQL.
    PostgresSqlx(sqlx::PgPool),
}

/// Rows of the SELECT baseline's table are `b0`, `b1`, ….
pub fn row_id(i: usize) -> String {
    format!("b{i}")
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bench_users (\
     id TEXT PRIMARY KEY, first_name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL)";

async fn open(url: &str, kind: Kind) -> anyhow::Result<Pool> {
    if url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        let readers = Readers::of(options.get_filename(), Duration::from_secs(10))
            .filter(|_| kind != Kind::SelectPool);
        Ok(Pool::Sqlite(pool, readers.map(std::sync::Arc::new)))
    } else if kind == Kind::SelectPool {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .connect(url)
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(Pool::PostgresSqlx(pool))
    } else {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
        let pool = ReadPool::new(16, options, Duration::from_secs(5));
        sqlx::query(SCHEMA)
            .execute(&mut *pool.acquire().await?)
            .await?;
        Ok(Pool::Postgres(std::sync::Arc::new(pool)))
    }
}

/// Fills the SELECT baseline's table with `rows` rows, in large batches.
async fn fill(pool: &Pool, rows: usize) -> anyhow::Result<()> {
    const BATCH: usize = 500;
    for start in (0..rows).step_by(BATCH) {
        let end = (start + BATCH).min(rows);
        let values: Vec<String> = (start..end)
            .map(|i| format!("('{}', 'Ada', 'b{i}@bench.example', {i})", row_id(i)))
            .collect();
        let sql = format!(
            "INSERT INTO bench_users (id, first_name, email, created_at) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        match pool {
            Pool::Sqlite(p, _) => {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await?;
            }
            Pool::Postgres(p) => {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *p.acquire().await?)
                    .await?;
            }
            Pool::PostgresSqlx(p) => {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await?;
            }
            Pool::None => {}
        }
    }
    // Settled as `roster-bench seed` settles Roster's dataset, so that
    // autovacuum does not wake for the new rows while Roster's turns run.
    let settle = "VACUUM (ANALYZE) bench_users";
    match pool {
        Pool::Postgres(p) => {
            sqlx::query(settle)
                .execute(&mut *p.acquire().await?)
                .await?;
        }
        Pool::PostgresSqlx(p) => {
            sqlx::query(settle).execute(p).await?;
        }
        Pool::Sqlite(..) | Pool::None => {}
    }
    Ok(())
}

#[derive(Debug)]
struct Baseline {
    kind: Kind,
    pool: Pool,
    next: AtomicU64,
}

type Answer<T> = Result<Response<T>, Status>;

fn not_baseline() -> Status {
    Status::unimplemented("not part of the baseline")
}

fn unavailable(e: &sqlx::Error) -> Status {
    Status::unavailable(e.to_string())
}

/// A row of the SELECT baseline's table.
type Row = (String, String, String, i64);

impl Baseline {
    async fn select(&self, id: &str) -> Result<Option<Row>, Status> {
        let sql = "SELECT id, first_name, email, created_at FROM bench_users WHERE id = $1";
        match &self.pool {
            Pool::Sqlite(_, Some(readers)) => {
                let statement = Statement {
                    sql: sql.into(),
                    binds: vec![Bind::Text(id.to_owned())],
                };
                let rows = readers
                    .fetch(statement, |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                Ok(rows.into_iter().next())
            }
            Pool::Sqlite(p, None) => sqlx::query_as(sql)
                .bind(id)
                .fetch_optional(p)
                .await
                .map_err(|e| unavailable(&e)),
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await.map_err(|e| unavailable(&e))?;
                let row = sqlx::query_as(sql)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await;
                if let Err(e) = &row {
                    conn.failed(e);
                }
                row.map_err(|e| unavailable(&e))
            }
            Pool::PostgresSqlx(p) => sqlx::query_as(sql)
                .bind(id)
                .fetch_optional(p)
                .await
                .map_err(|e| unavailable(&e)),
            Pool::None => Ok(None),
        }
    }

    async fn insert(&self, id: &str, email: &str) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO bench_users (id, first_name, email, created_at) VALUES ($1, 'Bench', $2, $3)";
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(0);
        match &self.pool {
            Pool::Sqlite(p, _) => sqlx::query(sql)
                .bind(id)
                .bind(email)
                .bind(now)
                .execute(p)
                .await
                .map(drop),
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await?;
                let done = sqlx::query(sql)
                    .bind(id)
                    .bind(email)
                    .bind(now)
                    .execute(&mut *conn)
                    .await;
                if let Err(e) = &done {
                    conn.failed(e);
                }
                done.map(drop)
            }
            Pool::PostgresSqlx(_) | Pool::None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl UserService for Baseline {
    async fn get_user(&self, request: Request<v1::GetUserRequest>) -> Answer<v1::GetUserResponse> {
        let id = request.into_inner().id;
        let user = match self.kind {
            Kind::Noop => User {
                id,
                ..User::default()
            },
            Kind::Select | Kind::SelectPool => {
                let (id, first_name, _email, _created) = self
                    .select(&id)
                    .await?
                    .ok_or_else(|| Status::not_found("no such row"))?;
                User {
                    id,
                    first_name,
                    ..User::default()
                }
            }
            Kind::Insert => return Err(Status::unimplemented("the insert baseline only creates")),
        };
        Ok(Response::new(v1::GetUserResponse { user: Some(user) }))
    }

    async fn create_user(
        &self,
        request: Request<v1::CreateUserRequest>,
    ) -> Answer<v1::CreateUserResponse> {
        let request = request.into_inner();
        let id = format!("n{}", self.next.fetch_add(1, Ordering::Relaxed));
        if self.kind == Kind::Insert {
            let email = request.email_addresses.first().cloned().unwrap_or_default();
            // Unique per run even when the table outlives one.
            let email = format!("{id}.{email}");
            self.insert(&format!("{id}-{}", std::process::id()), &email)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(Response::new(v1::CreateUserResponse {
            user: Some(User {
                id,
                first_name: request.first_name,
                ..User::default()
            }),
        }))
    }

    async fn set_profile_image(
        &self,
        _request: Request<Streaming<v1::SetProfileImageRequest>>,
    ) -> Answer<v1::SetProfileImageResponse> {
        Err(not_baseline())
    }

    async fn list_users(&self, _: Request<v1::ListUsersRequest>) -> Answer<v1::ListUsersResponse> {
        Err(not_baseline())
    }

    async fn count_users(
        &self,
        _: Request<v1::CountUsersRequest>,
    ) -> Answer<v1::CountUsersResponse> {
        Err(not_baseline())
    }

    async fn update_user(
        &self,
        _: Request<v1::UpdateUserRequest>,
    ) -> Answer<v1::UpdateUserResponse> {
        Err(not_baseline())
    }

    async fn delete_user(
        &self,
        _: Request<v1::DeleteUserRequest>,
    ) -> Answer<v1::DeleteUserResponse> {
        Err(not_baseline())
    }

    async fn update_user_metadata(
        &self,
        _: Request<v1::UpdateUserMetadataRequest>,
    ) -> Answer<v1::UpdateUserMetadataResponse> {
        Err(not_baseline())
    }

    async fn ban_user(&self, _: Request<v1::BanUserRequest>) -> Answer<v1::BanUserResponse> {
        Err(not_baseline())
    }

    async fn unban_user(&self, _: Request<v1::UnbanUserRequest>) -> Answer<v1::UnbanUserResponse> {
        Err(not_baseline())
    }

    async fn lock_user(&self, _: Request<v1::LockUserRequest>) -> Answer<v1::LockUserResponse> {
        Err(not_baseline())
    }

    async fn unlock_user(
        &self,
        _: Request<v1::UnlockUserRequest>,
    ) -> Answer<v1::UnlockUserResponse> {
        Err(not_baseline())
    }

    async fn verify_password(
        &self,
        _: Request<v1::VerifyPasswordRequest>,
    ) -> Answer<v1::VerifyPasswordResponse> {
        Err(not_baseline())
    }

    async fn delete_profile_image(
        &self,
        _: Request<v1::DeleteProfileImageRequest>,
    ) -> Answer<v1::DeleteProfileImageResponse> {
        Err(not_baseline())
    }
}

/// Serves baseline `kind` on `addr` until killed; `select` first fills its
/// table with `rows` rows.
pub async fn serve(
    kind: Kind,
    addr: std::net::SocketAddr,
    database_url: Option<&str>,
    rows: usize,
) -> anyhow::Result<()> {
    let pool = match (kind, database_url) {
        (Kind::Noop, _) => Pool::None,
        (_, Some(url)) => open(url, kind).await?,
        (_, None) => anyhow::bail!("the {kind:?} baseline needs --database-url"),
    };
    if matches!(kind, Kind::Select | Kind::SelectPool) {
        fill(&pool, rows).await?;
    }
    let service = Baseline {
        kind,
        pool,
        next: AtomicU64::new(0),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("baseline {kind:?} serving on {}", listener.local_addr()?);
    roster_server::transport(&roster_server::ServeOptions::default())
        .add_service(UserServiceServer::new(service))
        .serve_with_incoming(roster_server::incoming(listener))
        .await?;
    Ok(())
}
