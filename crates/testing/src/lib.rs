//! Test support shared by the storage and end-to-end tests.
//!
//! [`postgres_database`] hands each test a fresh, empty PostgreSQL
//! database. With `ROSTER_TEST_POSTGRES_URL` set (the README's test command
//! sets it) databases are created on that server. Without it, the first
//! call starts a throwaway cluster for this process from the PostgreSQL
//! binaries on the machine (as the `postgres` user when running as root),
//! which stops and is removed when the process exits. If PostgreSQL is not
//! installed the test fails with a message saying so: it never skips.

#![allow(clippy::missing_panics_doc, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// Environment variable naming an admin URL of a PostgreSQL server to
/// create test databases on, for example
/// `postgres://postgres@127.0.0.1:55432/postgres`.
pub const POSTGRES_URL_ENV: &str = "ROSTER_TEST_POSTGRES_URL";

struct Cluster {
    admin_url: String,
    // Closing stdin (at process exit) stops and removes the cluster.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static CLUSTER: OnceLock<String> = OnceLock::new();
static OWNED: OnceLock<Cluster> = OnceLock::new();

fn find_bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("ROSTER_TEST_POSTGRES_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop().or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).find(|p| p.join("initdb").exists()))
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `script` with `sh`, as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn shell(script: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }
}

/// Random lowercase hex, for unique names.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random source");
    buf.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start_cluster() -> Cluster {
    let bindir = find_bindir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH. \
             Install it (apt-get install postgresql) or set {POSTGRES_URL_ENV} to a server's admin URL"
        )
    });
    let dir: PathBuf = std::env::temp_dir().join(format!("roster-pg-{}", random_hex(6)));
    std::fs::create_dir_all(&dir).expect("create cluster directory");
    if running_as_root() {
        let status = Command::new("chown")
            .args(["postgres:postgres", &dir.display().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "chown of the cluster directory to postgres failed"
        );
    }
    let d = dir.display();
    let b = bindir.display();
    let init = shell(&format!("{b}/initdb -D {d}/data -U postgres --auth=trust -N -E UTF8 --no-locale >{d}/initdb.log 2>&1"))
        .status()
        .expect("run initdb");
    assert!(init.success(), "initdb failed; see {d}/initdb.log");
    let port = free_port();
    // The cluster lives until this process's end closes the pipe.
    let script = format!(
        "{b}/postgres -D {d}/data -p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 >{d}/postgres.log 2>&1 & \
         pid=$!; read _ignored; kill -INT $pid; wait $pid; rm -rf {d}"
    );
    let mut child = shell(&script)
        .stdin(Stdio::piped())
        // The server logs to its own file; the test's output stays the test's.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgres");
    let stdin = child.stdin.take().expect("piped stdin");
    wait_for_port(port, &dir);
    Cluster {
        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

fn wait_for_port(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "postgres did not start; see {}/postgres.log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The admin URL of the server tests use, starting a cluster if needed.
pub fn postgres_admin_url() -> String {
    CLUSTER
        .get_or_init(|| match std::env::var(POSTGRES_URL_ENV) {
            Ok(url) if !url.is_empty() => url,
            _ => OWNED.get_or_init(start_cluster).admin_url.clone(),
        })
        .clone()
}

/// A fresh, empty database; returns its URL.
pub async fn postgres_database() -> String {
    let admin = postgres_admin_url();
    let name = format!("roster_test_{}", random_hex(8));
    // The server may still be finishing its start-up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match sqlx::PgConnection::connect(&admin).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to PostgreSQL at {admin}: {e}"),
        }
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let (base, _) = admin
        .rsplit_once('/')
        .expect("admin URL ends in a database name");
    format!("{base}/{name}")
}
