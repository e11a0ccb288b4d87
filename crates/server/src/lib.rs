//! Roster's gRPC server: the Backend API services, authentication, the
//! tower stack, health and reflection, and the `roster` binary's commands.
//!
//! Layout:
//! - [`run`]: serves on a bound listener until a shutdown future completes;
//!   `main` and every end-to-end test call it.
//! - [`services`]: `UserService`, `EmailAddressService`,
//!   `PhoneNumberService`, `SessionService`, `JwksService`, `SignInService`,
//!   `AccountService`, `SignUpService`.
//! - [`frontend`]: the Frontend API's session-token authentication.
//! - [`rpc`]: the layer every call passes: span, metrics, load shedding.
//! - [`health`]: readiness (database up, not draining).
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: logs and OpenTelemetry traces.
//! - [`http`]: the plain-HTTP port (JWKS, metrics, health, profile images,
//!   avatars).
//! - [`activity`]: a session's client address and user agent.
//! - [`auth`]: the Backend API's secret keys.
//! - [`error`]: the one mapping from domain and storage errors to statuses.
//! - [`hashing`]: the bounded password-hashing pool.
//! - [`delivery`]: sending verification codes by SMTP or webhook.
//! - [`images`]: profile image uploads, their store and default avatars.
//! - [`tokens`]: signing keys, session tokens (JWT) and the JWKS.
//! - [`jwt_templates`]: named claim sets for session tokens.
//! - [`database`]: opening SQLite or PostgreSQL from a URL.
//! - [`config`]: command-line flags and `ROSTER_*` variables.

pub mod activity;
pub mod auth;
pub mod config;
pub mod database;
pub mod delivery;
pub mod error;
pub mod frontend;
pub mod hashing;
pub mod health;
pub mod http;
pub mod images;
pub mod jwt_templates;
pub mod metrics;
pub mod rpc;
pub mod services;
pub mod telemetry;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use roster_domain::Clock;
use roster_proto::v1::email_address_service_server::EmailAddressServiceServer;
use roster_proto::v1::phone_number_service_server::PhoneNumberServiceServer;
use roster_proto::v1::user_service_server::UserServiceServer;
use roster_storage::{SessionStore, UserStore};
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;

pub use auth::SecretKeys;
pub use hashing::Hasher;
pub use services::verification::CodeSettings;

use roster_proto::v1::account_service_server::AccountServiceServer;
use roster_proto::v1::jwks_service_server::JwksServiceServer;
use roster_proto::v1::session_service_server::SessionServiceServer;
use roster_proto::v1::sign_in_service_server::SignInServiceServer;
use roster_proto::v1::sign_up_service_server::SignUpServiceServer;
use services::account::Accounts;
use services::email_addresses::EmailAddresses;
use services::phone_numbers::PhoneNumbers;
use services::sessions::{Jwks, Sessions};
use services::sign_in::SignIns;
use services::sign_up::SignUps;
use services::users::Users;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub users: Arc<dyn UserStore>,
    pub clock: Arc<dyn Clock>,
    pub hasher: Hasher,
    pub codes: CodeSettings,
    /// How codes reach users, per channel.
    pub delivery: delivery::Deliveries,
    /// Sessions, sign-ins and signing keys.
    pub sessions: Arc<dyn SessionStore>,
    /// Signs and verifies session tokens.
    pub tokens: Arc<tokens::TokenIssuer>,
    /// How long a new session lasts, in milliseconds.
    pub session_lifetime_ms: i64,
    /// How a client's address is found.
    pub client_ip: activity::ClientIp,
    /// How many failed sign-ins lock a user out, and for how long.
    pub lockout: roster_domain::LockoutPolicy,
    /// Whether users may delete their own accounts.
    pub self_delete: bool,
    /// Sign-ups in progress.
    pub sign_ups: Arc<dyn roster_storage::SignUpStore>,
    /// What a sign-up must gather.
    pub sign_up: roster_domain::SignUpRequirements,
    /// Named claim sets for session tokens.
    pub jwt_templates: Arc<jwt_templates::JwtTemplates>,
    /// Profile images, and the public URL they are linked from.
    pub images: images::Images,
    /// Whether the server should receive calls.
    pub readiness: Arc<health::Readiness>,
    /// What `/metrics` reports.
    pub metrics: Arc<metrics::Metrics>,
}

/// Seven days: Clerk's default session lifetime.
pub const DEFAULT_SESSION_LIFETIME_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// How the server behaves, beyond what it serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Keys accepted on the Backend API; none means open (loopback only).
    pub secret_keys: SecretKeys,
    /// Longest a call may run before it is cancelled with a deadline error.
    pub request_timeout: Duration,
    /// Most calls served at once on one HTTP/2 connection; more wait.
    pub concurrency_per_connection: usize,
    /// Most calls in flight on the whole server; more are refused at once
    /// with UNAVAILABLE (`SERVER_OVERLOADED`).
    pub max_in_flight: usize,
    /// After a shutdown signal, how long health reports NOT_SERVING while
    /// new calls are still served, so load balancers stop routing here
    /// before the listener closes.
    pub shutdown_grace: Duration,
    /// How often the database is checked for readiness.
    pub readiness_interval: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            secret_keys: SecretKeys::new::<&str>(&[]),
            request_timeout: Duration::from_secs(30),
            concurrency_per_connection: 256,
            max_in_flight: 1024,
            shutdown_grace: Duration::ZERO,
            readiness_interval: Duration::from_secs(2),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection descriptors are invalid")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// How often token signing keys are reloaded from the store.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_mins(1);

/// Largest request message accepted, so one call cannot exhaust memory.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The health "service" that reports liveness rather than readiness.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Names of the services health is reported for (besides the whole
/// server, `""`).
pub const SERVICE_NAMES: [&str; 8] = [
    <UserServiceServer<Users> as NamedService>::NAME,
    <EmailAddressServiceServer<EmailAddresses> as NamedService>::NAME,
    <PhoneNumberServiceServer<PhoneNumbers> as NamedService>::NAME,
    <SessionServiceServer<Sessions> as NamedService>::NAME,
    <JwksServiceServer<Jwks> as NamedService>::NAME,
    <SignInServiceServer<SignIns> as NamedService>::NAME,
    <AccountServiceServer<Accounts> as NamedService>::NAME,
    <SignUpServiceServer<SignUps> as NamedService>::NAME,
];

/// The transport Roster serves on: the outer layers of its tower stack,
/// outermost first. Benchmark baselines serve on the same.
pub fn transport(options: &ServeOptions) -> Server {
    Server::builder()
        // A per-call deadline, so a stuck database cannot hold a call (and
        // its connection slot) forever; clients may ask for a shorter one.
        .timeout(options.request_timeout)
        // Bounds the calls one connection can have in flight, so one
        // client cannot take every worker.
        .concurrency_limit_per_connection(options.concurrency_per_connection)
        // HTTP/2 pings find dead peers behind NATs and load balancers
        // that drop idle connections silently.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// Connections accepted on `listener`, set up as Roster serves them:
/// TCP_NODELAY, so a response's last segment is not held back waiting for
/// an acknowledgement (Nagle's algorithm against delayed ACKs costs 40 ms a
/// call), and TCP keepalive, so dead peers are noticed.
pub fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<Connection>> + Send + 'static {
    use futures::TryStreamExt as _;
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_mins(1)))
        .map_ok(Connection)
}

/// An accepted TCP connection that takes one buffer per write.
///
/// HTTP/2 (h2) copies a DATA frame's payload into its write buffer up to a
/// threshold and chains a larger one to it; once a payload is chained, it
/// writes before it buffers another frame. The threshold is 256 bytes on a
/// connection that takes vectored writes, 1 024 on one that does not. An
/// answer with one user is 300 to 1 000 bytes: chained, it would go out in
/// two writes, the headers and message and then the trailers. Copied, a
/// whole answer goes out in one write, together with any others ready. A
/// payload over 1 024 bytes (a page of users) is written as the buffer and
/// then the payload, two writes where a vectored one would do.
#[derive(Debug)]
pub struct Connection(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

/// Serves the gRPC API on `listener` until `shutdown` completes, then
/// reports NOT_SERVING on health and drains in-flight calls before
/// returning.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // `liveness` answers SERVING as long as the process serves at all, for
    // liveness probes that must not restart a pod whose database is down
    // or which is draining.
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    // gRPC health mirrors readiness: the whole server (`""`) and each
    // service.
    let mut ready = state.readiness.subscribe();
    let mirror = tokio::spawn(async move {
        loop {
            let status = if *ready.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            for name in SERVICE_NAMES {
                health.set_service_status(name, status).await;
            }
            if ready.changed().await.is_err() {
                break;
            }
        }
    });
    let watcher = tokio::spawn(health::watch_database(
        state.readiness.clone(),
        state.users.clone(),
        options.readiness_interval,
    ));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(roster_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    // grpcurl 1.8 and many other tools still speak only v1alpha.
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let keys = options.secret_keys.clone();
    let (state_tokens, state_sessions) = (state.tokens.clone(), state.sessions.clone());
    let users = UserServiceServer::new(Users::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let emails = EmailAddressServiceServer::new(EmailAddresses::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let phones = PhoneNumberServiceServer::new(PhoneNumbers::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let sessions = SessionServiceServer::new(Sessions::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let jwks = JwksServiceServer::new(Jwks::new(state.clone()));
    let sign_ins = SignInServiceServer::new(SignIns::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let sign_ups = SignUpServiceServer::new(SignUps::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let session_auth = frontend::SessionAuth::new(&state);
    let accounts = AccountServiceServer::new(Accounts::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let readiness = state.readiness.clone();
    let grace = options.shutdown_grace;
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let drain = async move {
        shutdown.await;
        // Health flips first, and new calls are still served for the grace
        // period, so load balancers stop routing here before the listener
        // closes; then the calls in flight finish.
        readiness.drain();
        tracing::info!(grace = ?grace, "shutting down: NOT_SERVING, waiting out the grace period");
        tokio::time::sleep(grace).await;
        tracing::info!("shutting down: draining in-flight calls");
        let _ = draining.send(());
    };
    // Calls are bounded by the request timeout, but streams that never end
    // (a health Watch) would hold the drain open: past the timeout and a
    // margin, whatever is left is cut off.
    let drain_limit = options.request_timeout + Duration::from_secs(5);
    let deadline = async move {
        if drain_started.await.is_ok() {
            tokio::time::sleep(drain_limit).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let layer = rpc::RpcLayer::new(
        state.metrics.clone(),
        state.readiness.clone(),
        options.max_in_flight,
        SERVICE_NAMES
            .iter()
            .copied()
            .chain([
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ])
            .collect(),
    );

    // Keys other replicas make, or a rotation adds, are published and
    // accepted within a minute, without a restart.
    let (tokens, store) = (state_tokens, state_sessions);
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_REFRESH_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = tokens.refresh(store.as_ref()).await {
                tracing::warn!(error = %e, "reloading token signing keys failed");
            }
        }
    });

    tracing::info!(addr = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "serving gRPC");
    let server = transport(&options)
        // Per call: its span (continuing the caller's traceparent), its
        // metrics, and the refusals (database down, too many in flight)
        // that answer at once instead of queueing.
        .layer(layer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(users, keys.clone()))
        .add_service(InterceptedService::new(emails, keys.clone()))
        .add_service(InterceptedService::new(phones, keys.clone()))
        .add_service(InterceptedService::new(sessions, keys))
        // Public: JWKS, and the Frontend API's sign-in (its callers have no
        // credentials yet).
        .add_service(jwks)
        .add_service(sign_ins)
        .add_service(sign_ups)
        // The Frontend API's signed-in calls: a session token.
        .add_service(InterceptedService::new(accounts, session_auth))
        .serve_with_incoming_shutdown(incoming(listener), drain);
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!(limit = ?drain_limit, "drain deadline passed; closing the calls still open"),
    }
    refresher.abort();
    watcher.abort();
    mirror.abort();
    tracing::info!("drained; server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]

    use futures::StreamExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tonic::transport::server::Connected as _;

    #[tokio::test]
    async fn accepted_connections_write_whole_buffers_and_know_both_ends() {
        let listener = super::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = std::pin::pin!(super::incoming(listener));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut conn = accepted.next().await.unwrap().unwrap();

        // h2 copies payloads of up to 1 024 bytes into its buffer only
        // when the connection does not take vectored writes.
        assert!(!tokio::io::AsyncWrite::is_write_vectored(&conn));
        assert!(conn.0.nodelay().unwrap());
        let info = conn.connect_info();
        assert_eq!(info.local_addr(), Some(addr));
        assert_eq!(info.remote_addr(), Some(client.local_addr().unwrap()));

        conn.write_all(b"answer").await.unwrap();
        conn.flush().await.unwrap();
        let mut read = [0; 6];
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"answer");
        client.write_all(b"call").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"call");
        conn.shutdown().await.unwrap();
    }
}
