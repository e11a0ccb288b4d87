//! `roster-bench`: Roster's benchmark.
//!
//! - `roster-bench suite`: seeds a dataset, runs every scenario against
//!   Roster on SQLite and PostgreSQL, runs the baselines under the same
//!   load, and prints a table of throughput, latency, CPU and memory with
//!   each Roster figure as a ratio to its baseline (`--json` writes all of
//!   it). `scripts/bench` runs it with a PostgreSQL of its own.
//! - `roster-bench seed`: loads the dataset into a database, or creates
//!   it through a running Roster.
//! - `roster-bench load`: runs one scenario against a Roster already
//!   running, e.g. on a database `seed` filled once, to measure a change
//!   without seeding again.
//! - `roster-bench baseline`: serves one baseline (the suite starts these).

mod answers;
mod baseline;
mod load;
mod procfs;
mod seed;
mod suite;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "roster-bench", version, about = "Roster's benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole benchmark.
    Suite {
        #[command(flatten)]
        settings: suite::Settings,
        /// Writes the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Creates `--users` users: written straight into `--database-url`
    /// in bulk, or else through a running Roster at `--target`.
    Seed {
        /// Roster's database (`sqlite:…` or `postgres://…`), migrated
        /// first if need be.
        #[arg(long, conflicts_with = "target")]
        database_url: Option<String>,
        /// Roster's gRPC address, e.g. `http://127.0.0.1:50051`.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        target: String,
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Runs one scenario against a running Roster, seeded with `--users`
    /// users by `seed`, and prints its report as JSON.
    Load {
        /// Roster's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        target: String,
        #[arg(long, value_enum)]
        scenario: load::Scenario,
        /// Users `seed` created: the search terms, and up to 100 000 of
        /// the users called by id, are drawn from all of them.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 2)]
        warmup_seconds: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Total calls per second; as fast as the server answers if unset.
        #[arg(long)]
        rate: Option<f64>,
        /// The server's process id, for its CPU time and memory.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Serves one baseline until killed.
    Baseline {
        #[arg(long, value_enum)]
        kind: baseline::Kind,
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        database_url: Option<String>,
        /// Rows the `select` baseline's table starts with.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Suite { settings, json } => {
            let results = suite::run(settings).await?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
                eprintln!("results written to {}", path.display());
            }
            print!("{}", suite::markdown(&results));
            Ok(())
        }
        Command::Seed {
            database_url: Some(url),
            users,
            ..
        } => {
            seed::load(&url, users).await?;
            Ok(())
        }
        Command::Seed {
            database_url: None,
            target,
            users,
            concurrency,
        } => {
            let endpoint = tonic::transport::Endpoint::from_shared(target)?;
            let mut channels = Vec::new();
            for _ in 0..4 {
                channels.push(endpoint.connect().await?);
            }
            seed::seed(&channels, users, concurrency).await?;
            Ok(())
        }
        Command::Load {
            target,
            scenario,
            users,
            concurrency,
            connections,
            warmup_seconds,
            seconds,
            rate,
            server_pid,
        } => {
            let load = load::Load {
                concurrency,
                warmup: std::time::Duration::from_secs(warmup_seconds),
                duration: std::time::Duration::from_secs(seconds),
                requests: None,
                rate,
                server_pid,
            };
            let report = suite::load_running(&target, connections, users, scenario, &load).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Baseline {
            kind,
            addr,
            database_url,
            rows,
        } => baseline::serve(kind, addr, database_url.as_deref(), rows).await,
    }
}
