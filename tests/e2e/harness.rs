//! Starting servers for tests: a fresh database per test, a listener bound
//! to port 0 before serving (no sleeps), shutdown through the same future
//! `main` uses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use roster_client::{Client, ClientError};
use roster_domain::{Clock, CodeKey, CodePolicy, Timestamp};
use roster_server::database::Database;
use roster_server::delivery::Deliveries;
use roster_server::delivery::webhook::{WebhookDelivery, WebhookSecret};
use roster_server::tokens::{SigningAlgorithm, TokenIssuer, TokenSettings};
use roster_server::{AppState, CodeSettings, Hasher, SecretKeys, ServeOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which store a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database URL of the backend; the directory lives as long as the
/// returned guard.
pub async fn database_url(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                format!("sqlite://{}", dir.path().join("roster.db").display()),
                Some(dir),
            )
        }
        Backend::Postgres => (roster_testing::postgres_database().await, None),
    }
}

/// A clock tests move by hand; starts at the real time.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// How a test server differs from the default one.
pub struct Setup {
    pub keys: Vec<String>,
    pub delivery: Deliveries,
    pub self_delete: bool,
    /// Calls allowed in flight at once.
    pub max_in_flight: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            delivery: Deliveries::default(),
            self_delete: true,
            max_in_flight: ServeOptions::default().max_in_flight,
        }
    }
}

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The plain-HTTP port (JWKS).
    pub http_addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    stop_http: Option<oneshot::Sender<()>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    _images: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with_keys(backend, &[]).await
    }

    pub async fn start_with_keys(backend: Backend, keys: &[&str]) -> Self {
        Self::start_with(
            backend,
            Setup {
                keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                ..Setup::default()
            },
        )
        .await
    }

    pub async fn start_with_delivery(backend: Backend, delivery: Deliveries) -> Self {
        Self::start_with(
            backend,
            Setup {
                delivery,
                ..Setup::default()
            },
        )
        .await
    }

    pub async fn start_with(backend: Backend, setup: Setup) -> Self {
        let Setup {
            keys,
            delivery,
            self_delete,
            max_in_flight,
        } = setup;
        let (url, dir) = database_url(backend).await;
        let db = Database::open(&url).await.unwrap();
        db.migrate().await.unwrap();
        let clock = Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(
            roster_domain::SystemClock.now().as_millis(),
        )));
        let tokens = TokenIssuer::start(
            db.sessions().as_ref(),
            TokenSettings {
                // Ed25519 keys are made in microseconds; RS256 (the
                // default) is covered by the binary and Python tests.
                algorithm: SigningAlgorithm::Eddsa,
                issuer: "https://roster.test".to_owned(),
                ..TokenSettings::default()
            },
            clock.now(),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap();
        let images_dir = tempfile::tempdir().unwrap();
        let images = roster_server::images::Images::open(
            &images_dir.path().display().to_string(),
            &format!("http://{http_addr}"),
        )
        .unwrap();
        let state = AppState {
            images,
            readiness: Arc::default(),
            metrics: Arc::default(),
            users: db.users(),
            sessions: db.sessions(),
            tokens: Arc::new(tokens),
            session_lifetime_ms: roster_server::DEFAULT_SESSION_LIFETIME_MS,
            client_ip: roster_server::activity::ClientIp::default(),
            lockout: roster_domain::LockoutPolicy::default(),
            self_delete,
            sign_ups: db.sign_ups(),
            sign_up: roster_domain::SignUpRequirements::default(),
            jwt_templates: Arc::new(roster_server::jwt_templates::JwtTemplates::default()),
            clock: clock.clone(),
            hasher: Hasher::new(2),
            codes: CodeSettings {
                key: CodeKey::generate(),
                policy: CodePolicy::default(),
            },
            delivery,
        };
        let (stop_http, http_stopped) = oneshot::channel::<()>();
        tokio::spawn(roster_server::http::serve(
            http_listener,
            state.clone(),
            async {
                let _ = http_stopped.await;
            },
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServeOptions {
            secret_keys: SecretKeys::new(&keys),
            max_in_flight,
            ..ServeOptions::default()
        };
        let task = tokio::spawn(async move {
            roster_server::run(listener, state, options, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
            db.close().await;
        });
        Self {
            addr,
            http_addr,
            clock,
            stop_http: Some(stop_http),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            _images: images_dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client sending `key` (or none).
    pub async fn client_with(&self, key: Option<&str>) -> Client {
        Client::connect(self.endpoint(), key.map(str::to_owned))
            .await
            .unwrap()
    }

    pub async fn client(&self) -> Client {
        self.client_with(None).await
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The `ErrorInfo.reason` and code of a failed call.
pub fn failure<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (tonic::Code, String) {
    let err = result.expect_err("the call should have failed");
    (
        err.code().expect("a status error"),
        err.reason().unwrap_or_default(),
    )
}

/// Field names of a failed call's `BadRequest` violations.
pub fn violated_fields<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Vec<String> {
    use tonic_types::StatusExt as _;
    match result.expect_err("the call should have failed") {
        ClientError::Status(status) => status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default(),
        other => panic!("expected a status, got {other}"),
    }
}

/// Instantiates async test functions `fn(Backend)` once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// A webhook receiver on loopback (a real HTTP server): the messages it
/// got, and the delivery that sends to it.
pub async fn webhook_receiver() -> (Arc<Mutex<Vec<serde_json::Value>>>, Deliveries) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/codes",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                store
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/codes", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let webhook: Arc<dyn roster_server::delivery::Deliver> =
        Arc::new(WebhookDelivery::new(&url, secret, std::time::Duration::from_secs(5)).unwrap());
    let delivery = Deliveries {
        email: Some(webhook.clone()),
        sms: Some(webhook),
    };
    (received, delivery)
}

/// The code of the last message delivered to `to`.
pub fn code_sent_to(received: &Mutex<Vec<serde_json::Value>>, to: &str) -> String {
    let messages = received.lock().unwrap();
    let message = messages
        .iter()
        .rev()
        .find(|m| m["to"] == to)
        .unwrap_or_else(|| panic!("nothing sent to {to}: {messages:?}"));
    message["code"].as_str().unwrap().to_owned()
}
