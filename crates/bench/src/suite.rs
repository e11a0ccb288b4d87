//! The whole benchmark in one run: on each backend, Roster (seeded with a
//! dataset) under every scenario, a fresh process per scenario, and the
//! baselines under the same load, on the same machine, taking the load in
//! turns with the scenario they are compared with; every Roster figure is
//! also given as a ratio to its baseline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::baseline::{self, Kind};
use crate::load::{self, Load, Report, Scenario, Target};
use crate::seed;

/// A store Roster and the baselines run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The suite's settings.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct Settings {
    /// The `roster` binary to measure (build it with `--release`).
    #[arg(long, default_value = "target/release/roster")]
    pub roster_bin: PathBuf,
    /// An admin URL of a PostgreSQL server; a database is created per
    /// server. Required for the postgres backend.
    #[arg(long, env = "ROSTER_TEST_POSTGRES_URL")]
    #[serde(skip)]
    pub postgres_url: Option<String>,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<Backend>,
    /// Scenarios to run.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Users the dataset loader creates first.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Seconds of calls before measuring starts.
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,
    /// Seconds each scenario is measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Turns in which a scenario and the baselines it is compared with
    /// take the load in rotation, each turn a share of `--seconds`, so
    /// that the machine's speed, which drifts from second to second on a
    /// shared host, is the same for all of them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub turns: u32,
    /// Calls each scenario is measured for, instead of for `--seconds`
    /// (or `--mixed-seconds`), which then bound it.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds the mixed workload is measured (memory growth shows over
    /// minutes).
    #[arg(long, default_value_t = 60)]
    pub mixed_seconds: u64,
}

/// One measured run.
#[derive(Debug, Serialize)]
pub struct Row {
    pub backend: Option<Backend>,
    /// `roster`, or the baseline: `noop`, `select`, `select_pool`, `insert`.
    pub server: &'static str,
    /// What the row measured, beyond the scenario (`half_peak`).
    pub variant: Option<&'static str>,
    #[serde(flatten)]
    pub report: Report,
    /// Throughput relative to the storage baseline of the same backend
    /// (`select` for reads, `insert` for writes).
    pub ratio_to_storage_baseline: Option<f64>,
    /// Throughput relative to the no-op transport baseline.
    pub ratio_to_transport_baseline: Option<f64>,
}

/// The suite's result.
#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub rows: Vec<Row>,
}

/// Where it ran.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?)
}

/// A server process of the suite.
struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl Server {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `count` connections, once the server accepts them.
    async fn channels(&mut self, count: usize) -> anyhow::Result<Vec<Channel>> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))?.tcp_nodelay(true);
        let deadline = tokio::time::Instant::now() + Duration::from_mins(2);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the server exited before serving: {status}");
            }
            match endpoint.connect().await {
                Ok(first) => {
                    let mut channels = vec![first];
                    for _ in 1..count {
                        channels.push(endpoint.connect().await?);
                    }
                    return Ok(channels);
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// SIGTERM, then waits.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        tokio::time::timeout(Duration::from_mins(1), self.child.wait()).await??;
        Ok(())
    }
}

fn spawn_roster(
    settings: &Settings,
    database_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let child = tokio::process::Command::new(&settings.roster_bin)
        .args([
            "serve",
            "--grpc-addr",
            &addr.to_string(),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("ROSTER_DATABASE_URL", database_url)
        .env("ROSTER_DATA_DIR", dir)
        .env("ROSTER_LOG", "warn")
        .env("ROSTER_SHUTDOWN_GRACE", "0s")
        // The benchmark measures throughput, not shedding.
        .env("ROSTER_MAX_IN_FLIGHT", "100000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok(Server { child, addr })
}

/// How `roster-bench baseline --kind` names `kind`.
fn kind_arg(kind: Kind) -> String {
    use clap::ValueEnum as _;
    kind.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

fn spawn_baseline(kind: Kind, database_url: Option<&str>, rows: usize) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args([
            "baseline",
            "--addr",
            &addr.to_string(),
            "--rows",
            &rows.to_string(),
        ])
        .arg("--kind")
        .arg(kind_arg(kind))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    Ok(Server {
        child: command.spawn()?,
        addr,
    })
}

/// The PostgreSQL server databases are created on.
fn postgres_admin_url(settings: &Settings) -> anyhow::Result<&str> {
    settings.postgres_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!("the postgres backend needs --postgres-url (or ROSTER_TEST_POSTGRES_URL)")
    })
}

/// A new empty database on `backend`, inside `dir` for SQLite.
async fn new_database(
    settings: &Settings,
    backend: Backend,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<String> {
    match backend {
        Backend::Sqlite => Ok(format!(
            "sqlite://{}",
            dir.join(format!("{name}.db")).display()
        )),
        Backend::Postgres => {
            let admin = postgres_admin_url(settings)?;
            let database = format!("roster_bench_{name}_{}", std::process::id());
            let pool = sqlx::PgPool::connect(admin).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database}"
            )))
            .execute(&pool)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                .execute(&pool)
                .await?;
            pool.close().await;
            Ok(format!(
                "{}/{database}",
                admin.rsplit_once('/').map_or(admin, |(base, _)| base)
            ))
        }
    }
}

/// Drops a database [`new_database`] made on PostgreSQL (SQLite files go
/// with the suite's directory).
async fn drop_database(settings: &Settings, url: &str) -> anyhow::Result<()> {
    if let (Some(admin), Some((_, name))) = (settings.postgres_url.as_deref(), url.rsplit_once('/'))
        && url.starts_with("postgres")
    {
        let pool = sqlx::PgPool::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&pool)
        .await?;
        pool.close().await;
    }
    Ok(())
}

fn print_report(label: &str, report: &Report) {
    let errors: u64 = report.errors.values().sum();
    eprintln!(
        "  {label:<44} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  errors {errors}  rss {:>6.1} MB",
        report.requests_per_second,
        report.p50_ms,
        report.p99_ms,
        report.max_ms,
        report.server_rss_peak_mb.unwrap_or(0.0),
    );
}

impl Settings {
    fn load(&self, scenario: Scenario, pid: Option<u32>, rate: Option<f64>) -> Load {
        Load {
            concurrency: self.concurrency,
            warmup: Duration::from_secs(self.warmup_seconds),
            duration: Duration::from_secs(if scenario == Scenario::Mixed {
                self.mixed_seconds
            } else {
                self.seconds
            }),
            requests: self.requests,
            rate,
            server_pid: pid,
        }
    }

    /// Turn `turn` of `turns` of `scenario`: a share of its seconds (or
    /// calls), warmed up before the first only.
    fn turn(&self, scenario: Scenario, pid: Option<u32>, turn: u32, turns: u32) -> Load {
        let whole = self.load(scenario, pid, None);
        Load {
            warmup: if turn == 0 {
                whole.warmup
            } else {
                Duration::ZERO
            },
            duration: whole.duration / turns,
            requests: whole.requests.map(|n| n.div_ceil(u64::from(turns))),
            ..whole
        }
    }

    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenarios.clone()
        }
    }
}

/// What a server's callers pick from: [`Target`] without the channels.
#[derive(Clone)]
struct Picks {
    ids: Arc<Vec<String>>,
    queries: Arc<Vec<String>>,
    run: u64,
}

/// A server of the suite with the scenario it is measured under.
struct Contender {
    server: Server,
    name: &'static str,
    scenario: Scenario,
    picks: Picks,
    /// Its database, dropped after it (a baseline's).
    database: Option<String>,
}

/// Measures the contenders, in rotation when there are several (see
/// [`Settings::turns`]), then stops them.
async fn measure(
    settings: &Settings,
    mut contenders: Vec<Contender>,
    backend: Option<Backend>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    for c in &mut contenders {
        targets.push(Target {
            channels: c.server.channels(settings.connections).await?,
            ids: c.picks.ids.clone(),
            queries: c.picks.queries.clone(),
            run: c.picks.run,
            turn: 0,
        });
    }
    let turns = if contenders.len() > 1 {
        settings.turns
    } else {
        1
    };
    let mut taken: Vec<Vec<load::Turn>> = contenders.iter().map(|_| Vec::new()).collect();
    for turn in 0..turns {
        for ((c, target), taken) in contenders.iter().zip(&mut targets).zip(&mut taken) {
            target.turn = turn;
            let load = settings.turn(c.scenario, c.server.pid(), turn, turns);
            let measured = load::run_turn(target, c.scenario, &load).await;
            if turns > 1 {
                eprintln!(
                    "    {} {} turn {}: {:.0} req/s",
                    c.name,
                    c.scenario.name(),
                    turn + 1,
                    measured.requests_per_second()
                );
            }
            taken.push(measured);
        }
    }
    for ((c, target), taken) in contenders.iter().zip(&targets).zip(taken) {
        let Some(report) = load::Turn::merge(taken).map(load::Turn::report) else {
            continue;
        };
        let (name, scenario) = (c.name, c.scenario);
        print_report(&format!("{name} {}", scenario.name()), &report);
        let half = (name == "roster"
            && matches!(scenario, Scenario::GetUser | Scenario::ListUsersQuery))
        .then_some(report.requests_per_second / 2.0);
        rows.push(Row {
            backend,
            server: name,
            variant: None,
            report,
            ratio_to_storage_baseline: None,
            ratio_to_transport_baseline: None,
        });
        // Latency at half the peak rate, where a service should run.
        if let Some(rate) = half {
            let report = load::run(
                target,
                scenario,
                &settings.load(scenario, c.server.pid(), Some(rate)),
            )
            .await;
            print_report(&format!("{name} {} at half peak", scenario.name()), &report);
            rows.push(Row {
                backend,
                server: name,
                variant: Some("half_peak"),
                report,
                ratio_to_storage_baseline: None,
                ratio_to_transport_baseline: None,
            });
        }
    }
    for c in contenders {
        c.server.stop().await?;
        if let Some(url) = c.database {
            drop_database(settings, &url).await?;
        }
    }
    Ok(())
}

/// Search terms for a dataset of `users`: enough to spread over it.
fn search_terms(users: usize) -> Arc<Vec<String>> {
    Arc::new(
        (0..users)
            .step_by((users / 1000).max(1))
            .map(seed::username)
            .collect(),
    )
}

/// At most this many users are called by id by the `load` command.
const LOAD_IDS: usize = 100_000;

/// Usernames per ListUsers call when `load` looks seeded users up.
const LOOKUP_BATCH: usize = 100;

/// Users `load` calls by id on a dataset `seed` did not make: the newest.
const NEWEST_IDS: usize = 1000;

/// Runs `scenario` against the Roster at `target`, whose dataset `seed`
/// made with `users` users.
pub async fn load_running(
    target: &str,
    connections: usize,
    users: usize,
    scenario: Scenario,
    load: &Load,
) -> anyhow::Result<Report> {
    let endpoint = Endpoint::from_shared(target.to_owned())?.tcp_nodelay(true);
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(endpoint.connect().await?);
    }
    let client = roster_proto::v1::user_service_client::UserServiceClient::new(channels[0].clone());
    let ids = load_ids(client, users).await?;
    anyhow::ensure!(!ids.is_empty(), "the server at {target} has no users");
    let target = Target {
        channels,
        ids: Arc::new(ids),
        queries: search_terms(users),
        run: run_id(),
        turn: 0,
    };
    let report = load::run(&target, scenario, load).await;
    print_report(scenario.name(), &report);
    Ok(report)
}

/// Ids for `load` to call: seeded users spread evenly over all `users`
/// (looked up by username), as the suite draws from every seeded user, so
/// a run over a large dataset reads cold rows as the suite's does. When
/// the server holds fewer of them than asked for (a dataset `seed` did not
/// make), the newest users instead.
async fn load_ids(
    mut client: roster_proto::v1::user_service_client::UserServiceClient<Channel>,
    users: usize,
) -> anyhow::Result<Vec<String>> {
    let usernames = load_usernames(users);
    let mut ids = Vec::with_capacity(usernames.len());
    for chunk in usernames.chunks(LOOKUP_BATCH) {
        let page = client
            .list_users(roster_proto::v1::ListUsersRequest {
                filter: Some(roster_proto::v1::UserFilter {
                    usernames: chunk.to_vec(),
                    ..Default::default()
                }),
                page_size: i32::try_from(LOOKUP_BATCH)?,
                ..Default::default()
            })
            .await?
            .into_inner();
        if page.users.len() < chunk.len() {
            eprintln!(
                "  {} of {} seeded usernames not found: calling the newest users instead",
                chunk.len() - page.users.len(),
                chunk.len()
            );
            return newest_ids(client, NEWEST_IDS).await;
        }
        ids.extend(page.users.into_iter().map(|u| u.id));
    }
    Ok(ids)
}

/// The usernames of at most [`LOAD_IDS`] seeded users, spread evenly over
/// all `users`.
fn load_usernames(users: usize) -> Vec<String> {
    let wanted = users.min(LOAD_IDS);
    (0..wanted)
        .map(|k| seed::username(k * users / wanted))
        .collect()
}

/// The ids of the newest `count` users.
async fn newest_ids(
    mut client: roster_proto::v1::user_service_client::UserServiceClient<Channel>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    while ids.len() < count {
        let page = client
            .list_users(roster_proto::v1::ListUsersRequest {
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(ids)
}

fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The storage baselines: each server's kind, its name in the results,
/// and the scenario it is measured with. Reads are compared with `select`,
/// writes with `insert`.
const BASELINES: [(Kind, &str, Scenario); 3] = [
    (Kind::Select, "select", Scenario::GetUser),
    (Kind::SelectPool, "select_pool", Scenario::GetUser),
    (Kind::Insert, "insert", Scenario::CreateUser),
];

/// Whether the baseline measured with `measured` takes turns with Roster's
/// `scenario`, of the selected `scenarios`: with `measured` itself when
/// it is selected, else with the last selected scenario compared with it
/// (a read with a read baseline, a write with a write one), and never
/// when none is.
fn baseline_takes_turns_with(
    measured: Scenario,
    scenario: Scenario,
    scenarios: &[Scenario],
) -> bool {
    if scenarios.contains(&measured) {
        return scenario == measured;
    }
    scenarios
        .iter()
        .rev()
        .find(|s| s.writes() == measured.writes())
        == Some(&scenario)
}

/// Runs the suite.
pub async fn run(settings: Settings) -> anyhow::Result<Results> {
    // Refused before anything is measured, not after the other backend's
    // runs.
    if settings.backends.contains(&Backend::Postgres) {
        postgres_admin_url(&settings)?;
    }
    let dir = std::env::temp_dir().join(format!("roster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scenarios = settings.scenarios();
    let mut rows = Vec::new();
    let run = run_id();
    let queries = search_terms(settings.users);

    eprintln!("baseline noop (transport)");
    let baseline_ids = Arc::new(
        (0..settings.users)
            .map(baseline::row_id)
            .collect::<Vec<_>>(),
    );
    for scenario in [Scenario::GetUser, Scenario::CreateUser] {
        let noop = Contender {
            server: spawn_baseline(Kind::Noop, None, 0)?,
            name: "noop",
            scenario,
            picks: Picks {
                ids: baseline_ids.clone(),
                queries: queries.clone(),
                run,
            },
            database: None,
        };
        measure(&settings, vec![noop], None, &mut rows).await?;
    }

    for &backend in &settings.backends {
        let backend_dir = dir.join(format!("{backend:?}").to_lowercase());
        std::fs::create_dir_all(&backend_dir)?;

        eprintln!("{backend:?}: roster, seeding {} users", settings.users);
        let url = new_database(&settings, backend, &backend_dir, "roster").await?;
        let picks = Picks {
            ids: Arc::new(seed::load(&url, settings.users).await?),
            queries: queries.clone(),
            run,
        };
        // Each scenario gets a Roster process of its own, over the same
        // database, so that its memory figures are its own: memory one
        // scenario's peak left with the allocator (a burst of password
        // hashing, say) would otherwise show in the next one's. The
        // baselines a scenario is compared with take the load in turns
        // with it (`--turns`), so that the machine's speed, which drifts,
        // is the same for all of them.
        for &scenario in &scenarios {
            let mut contenders = vec![Contender {
                server: spawn_roster(&settings, &url, &backend_dir)?,
                name: "roster",
                scenario,
                picks: picks.clone(),
                database: None,
            }];
            for (kind, name, measured) in BASELINES {
                if !baseline_takes_turns_with(measured, scenario, &scenarios) {
                    continue;
                }
                eprintln!("{backend:?}: baseline {name}, in turns with roster");
                let url = new_database(&settings, backend, &backend_dir, name).await?;
                contenders.push(Contender {
                    server: spawn_baseline(kind, Some(&url), settings.users)?,
                    name,
                    scenario: measured,
                    picks: Picks {
                        ids: baseline_ids.clone(),
                        queries: queries.clone(),
                        run,
                    },
                    database: Some(url),
                });
            }
            measure(&settings, contenders, Some(backend), &mut rows).await?;
        }
        drop_database(&settings, &url).await?;
    }
    std::fs::remove_dir_all(&dir).ok();
    add_ratios(&mut rows);
    Ok(Results {
        machine: machine(),
        settings,
        rows,
    })
}

fn add_ratios(rows: &mut [Row]) {
    let rate = |rows: &[Row], backend: Option<Backend>, server: &str, scenario: Scenario| {
        rows.iter()
            .find(|r| {
                r.backend == backend
                    && r.server == server
                    && r.report.scenario == scenario
                    && r.variant.is_none()
            })
            .map(|r| r.report.requests_per_second)
    };
    let ratios: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .map(|row| {
            if row.server != "roster" || row.variant.is_some() {
                return (None, None);
            }
            let (baseline, noop_scenario) = if row.report.scenario.writes() {
                ("insert", Scenario::CreateUser)
            } else {
                ("select", Scenario::GetUser)
            };
            let storage = rate(rows, row.backend, baseline, noop_scenario);
            let transport = rate(rows, None, "noop", noop_scenario);
            let of = |base: Option<f64>| {
                base.filter(|b| *b > 0.0)
                    .map(|b| row.report.requests_per_second / b)
            };
            (of(storage), of(transport))
        })
        .collect();
    for (row, (storage, transport)) in rows.iter_mut().zip(ratios) {
        row.ratio_to_storage_baseline = storage;
        row.ratio_to_transport_baseline = transport;
    }
}

/// The results as a Markdown table.
pub fn markdown(results: &Results) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| backend | server | scenario | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | server CPU µs/call | load generator CPU µs/call | peak RSS MB | × storage baseline | × transport baseline |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let ratio = |r: Option<f64>| r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
    for row in &results.rows {
        let per_call = |seconds: Option<f64>| {
            #[allow(clippy::cast_precision_loss, reason = "a figure for a table")]
            let calls = row.report.requests as f64;
            seconds
                .filter(|_| calls > 0.0)
                .map_or_else(|| "–".to_owned(), |s| format!("{:.1}", s * 1e6 / calls))
        };
        let r = &row.report;
        let scenario = match row.variant {
            Some(v) => format!("{} ({v})", r.scenario.name()),
            None => r.scenario.name().to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.1} | {} | {} |",
            row.backend
                .map_or("–".to_owned(), |b| format!("{b:?}").to_lowercase()),
            row.server,
            scenario,
            r.requests_per_second,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.max_ms,
            r.errors.values().sum::<u64>(),
            per_call(r.server_cpu_seconds),
            per_call(r.load_generator_cpu_seconds),
            r.server_rss_peak_mb.unwrap_or(0.0),
            ratio(row.ratio_to_storage_baseline),
            ratio(row.ratio_to_transport_baseline),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        BASELINES, Kind, LOAD_IDS, Scenario, baseline_takes_turns_with, kind_arg, load_usernames,
    };
    use crate::seed;
    use clap::ValueEnum as _;

    #[test]
    fn each_baseline_takes_turns_with_one_scenario_it_is_compared_with() {
        use Scenario::{CreateUser, GetUser, ListUsersQuery, Mixed, UpdateUserMetadata};
        let after = |scenarios: &[Scenario]| {
            BASELINES
                .iter()
                .map(|&(_, name, measured)| {
                    let followed: Vec<Scenario> = scenarios
                        .iter()
                        .copied()
                        .filter(|&s| baseline_takes_turns_with(measured, s, scenarios))
                        .collect();
                    (name, followed)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            after(&Scenario::ALL),
            [
                ("select", vec![GetUser]),
                ("select_pool", vec![GetUser]),
                ("insert", vec![CreateUser]),
            ]
        );
        // The million-user invocation: get_user last.
        assert_eq!(
            after(&[ListUsersQuery, GetUser]),
            [
                ("select", vec![GetUser]),
                ("select_pool", vec![GetUser]),
                ("insert", vec![]),
            ]
        );
        // Without their own scenarios: after the last read, the last write.
        assert_eq!(
            after(&[UpdateUserMetadata, Mixed, ListUsersQuery]),
            [
                ("select", vec![ListUsersQuery]),
                ("select_pool", vec![ListUsersQuery]),
                ("insert", vec![UpdateUserMetadata]),
            ]
        );
    }

    #[test]
    fn load_calls_users_spread_over_the_whole_dataset() {
        let million = load_usernames(1_000_000);
        assert_eq!(million.len(), LOAD_IDS);
        assert_eq!(million[0], seed::username(0));
        assert_eq!(million[LOAD_IDS - 1], seed::username(999_990));
        let uneven = load_usernames(150_000);
        assert_eq!(uneven[LOAD_IDS - 1], seed::username(149_998));
        let few = load_usernames(50);
        assert_eq!(few, (0..50).map(seed::username).collect::<Vec<_>>());
        assert_eq!(load_usernames(0), Vec::<String>::new());
    }

    #[test]
    fn every_baseline_is_named_as_its_command_line_takes_it() {
        for kind in Kind::value_variants() {
            assert_eq!(Kind::from_str(&kind_arg(*kind), false), Ok(*kind));
        }
        assert_eq!(kind_arg(Kind::SelectPool), "select-pool");
    }
}
