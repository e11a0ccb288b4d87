//! The real `roster` binary: start-up, configuration, migrations, and
//! graceful shutdown on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use roster_client::{Client, v1};

const BIN: &str = env!("CARGO_BIN_EXE_roster");

/// A running `roster serve`, with its log lines.
struct Running {
    child: Child,
    port: u16,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

fn command(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("ROSTER_LOG_FORMAT", "json")
        .env("ROSTER_DATA_DIR", dir.path())
        .env("ROSTER_HTTP_ADDR", "127.0.0.1:0")
        .env("ROSTER_SHUTDOWN_GRACE", "0s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Running {
    /// Starts `roster serve` on an ephemeral port and waits for its
    /// "serving" log line (which carries the bound address).
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = command(&dir);
        cmd.args(["serve", "--grpc-addr"])
            .arg(extra.first().copied().unwrap_or("127.0.0.1:0"))
            .args(extra.iter().skip(1));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            port: 0,
            logs,
            seen: Vec::new(),
            _dir: dir,
        };
        let line = running.wait_for("serving gRPC");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr: std::net::SocketAddr = json["addr"].as_str().unwrap().parse().unwrap();
        running.port = addr.port();
        running
    }

    /// Waits (bounded) for a log line whose message is `message`.
    fn wait_for(&mut self, message: &str) -> String {
        loop {
            let line = self
                .logs
                .recv_timeout(Duration::from_mins(1))
                .unwrap_or_else(|_| panic!("no {message:?} log line; saw: {:#?}", self.seen));
            self.seen.push(line.clone());
            if serde_json::from_str::<serde_json::Value>(&line)
                .is_ok_and(|j| j["message"] == message)
            {
                return line;
            }
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let mut server = Running::start(&[], &[]);
    let client = Client::connect(server.endpoint(), None).await.unwrap();
    // Password hashing makes each call take a while; the pool runs one per
    // core, so most of these are in flight when SIGTERM arrives.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.create_user(v1::CreateUserRequest {
                    username: format!("drain_{i}"),
                    password: "a long enough password".into(),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    let mut calls = calls.into_iter();
    calls.next().unwrap().await.unwrap().unwrap();
    server.terminate();
    for call in calls {
        call.await
            .unwrap()
            .expect("in-flight calls complete during the drain");
    }
    server.wait_for("shutting down: draining in-flight calls");
    server.wait_for("drained; server stopped");
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn refuses_an_open_backend_api_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(&dir)
        .args(["serve", "--grpc-addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without a secret key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_file_allow_listening_beyond_loopback() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "# rotated 2026-11\nsk_from_file\n\n").unwrap();
    let server = Running::start(
        &["0.0.0.0:0"],
        &[("ROSTER_SECRET_KEYS_FILE", keys.path().to_str().unwrap())],
    );
    let mut anonymous = Client::connect(server.endpoint(), None).await.unwrap();
    assert_eq!(
        anonymous.count_users(None).await.unwrap_err().code(),
        Some(tonic::Code::Unauthenticated)
    );
    let mut client = Client::connect(server.endpoint(), Some("sk_from_file".into()))
        .await
        .unwrap();
    assert_eq!(client.count_users(None).await.unwrap(), 0);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_on_postgres() {
    let url = roster_testing::postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let status = command(&dir)
            .args(["migrate", "--database-url", &url])
            .status()
            .unwrap();
        assert!(status.success(), "migrate is repeatable");
    }
    let mut server = Running::start(&["127.0.0.1:0", "--database-url", &url], &[]);
    let mut client = Client::connect(server.endpoint(), None).await.unwrap();
    let user = client
        .create_user(v1::CreateUserRequest {
            username: "pg_user".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(client.get_user(&user.id).await.unwrap(), user);
    server.terminate();
    server.wait_for("drained; server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_signing_key_adds_a_key() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let output = command(&dir)
            .args(["rotate-signing-key", "--token-algorithm", "eddsa"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(logs.contains("added a signing key"), "{logs}");
        assert!(!logs.contains("PRIVATE KEY"), "{logs}");
    }
    // Both keys are in the database the servers publish from.
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let db = roster_server::database::Database::open(&url).await.unwrap();
    let keys = db.sessions().signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.algorithm == "EdDSA"));
    db.close().await;
}

#[test]
fn serve_help_documents_every_flag_and_variable() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for text in [
        "--grpc-addr",
        "ROSTER_GRPC_ADDR",
        "--database-url",
        "ROSTER_DATABASE_URL",
        "--data-dir",
        "ROSTER_DATA_DIR",
        "--secret-key",
        "ROSTER_SECRET_KEYS",
        "--secret-keys-file",
        "ROSTER_SECRET_KEYS_FILE",
        "--code-hash-key",
        "ROSTER_CODE_HASH_KEY",
        "--request-timeout",
        "ROSTER_REQUEST_TIMEOUT",
        "--log-format",
        "ROSTER_LOG_FORMAT",
        "--http-addr",
        "ROSTER_HTTP_ADDR",
        "--email-delivery",
        "ROSTER_EMAIL_DELIVERY",
        "--sms-delivery",
        "--smtp-host",
        "--webhook-secret",
        "ROSTER_WEBHOOK_SECRET",
        "--token-algorithm",
        "ROSTER_TOKEN_ALGORITHM",
        "--token-issuer",
        "--session-lifetime",
        "--client-ip-header",
    ] {
        assert!(help.contains(text), "serve --help lacks {text}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_and_passwords_never_reach_the_logs() {
    let mut server = Running::start(&[], &[("ROSTER_LOG", "debug")]);
    let mut client = Client::connect(server.endpoint(), None).await.unwrap();
    let password = "unmistakable-password-4471";
    let user = client
        .create_user(v1::CreateUserRequest {
            email_addresses: vec!["logs@example.com".into()],
            unverified_identifiers: true,
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let email = user.email_addresses[0].id.clone();
    let (_, code) = client
        .prepare_email_address_verification(&email, true)
        .await
        .unwrap();
    let code = code.unwrap();
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let _ = client
        .attempt_email_address_verification(&email, &wrong)
        .await;
    client
        .attempt_email_address_verification(&email, &code)
        .await
        .unwrap();
    assert!(client.verify_password(&user.id, password).await.unwrap());
    server.terminate();
    server.wait_for("drained; server stopped");
    // Timestamps are dropped first: their microseconds could match a code by
    // chance.
    let logs: Vec<String> = server
        .seen
        .iter()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(mut fields)) => {
                    fields.remove("timestamp");
                    serde_json::Value::Object(fields).to_string()
                }
                _ => line.clone(),
            },
        )
        .collect();
    let logs = logs.join("\n");
    assert!(
        logs.contains("verification code prepared") && logs.contains("identifier verified"),
        "{logs}"
    );
    for secret in [code.as_str(), wrong.as_str(), password] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}
