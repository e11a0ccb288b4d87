//! The `roster` binary: `roster serve` and `roster migrate`.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use roster_domain::{Clock as _, CodeKey, CodePolicy, SystemClock};
use roster_server::activity::ClientIp;
use roster_server::config::{Cli, Command, DatabaseArgs, ServeArgs};
use roster_server::database::Database;
use roster_server::images::Images;
use roster_server::jwt_templates::JwtTemplates;
use roster_server::tokens::TokenIssuer;
use roster_server::{
    AppState, CodeSettings, DEFAULT_SESSION_LIFETIME_MS, Hasher, SecretKeys, ServeOptions,
};

/// What [`Database::fill_identifier_rows`] did, when it did anything.
const IDENTIFIERS_KEPT: &str = "identifiers kept on the stored users' rows";
/// What [`Database::fill_search_keys`] did, when it did anything.
const SEARCH_KEYS_COMPUTED: &str = "search keys computed for the stored users";

/// Logs how many users a step migrations leave to the store updated.
fn log_filled(users: u64, done: &str) {
    if users > 0 {
        tracing::info!(users, "{done}");
    }
}

async fn open(args: &DatabaseArgs) -> anyhow::Result<Database> {
    let url = args.url().context("creating the data directory")?;
    let db = Database::open_with(&url, args.database_max_connections)
        .await
        .context("opening the database")?;
    db.migrate().await.context("migrating the database")?;
    Ok(db)
}

/// Completes once `stopped` turns true.
async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let keys = args
        .all_secret_keys()
        .context("reading the secret keys file")?;
    if keys.is_empty() {
        if !args.grpc_addr.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without a secret key: the Backend API would be open to the network; \
                 set --secret-key or ROSTER_SECRET_KEYS",
                args.grpc_addr
            );
        }
        tracing::warn!(
            addr = %args.grpc_addr,
            "no secret key configured: the Backend API is OPEN to anyone who can reach this loopback address"
        );
    }
    let code_key = if let Some(secret) = &args.code_hash_key {
        CodeKey::new(secret.as_bytes()).context("ROSTER_CODE_HASH_KEY must be at least 16 bytes")?
    } else {
        tracing::warn!(
            "no code hash key configured: verification codes are checked only by this process and are lost on \
             restart; set ROSTER_CODE_HASH_KEY (shared by all replicas)"
        );
        CodeKey::generate()
    };
    let delivery = args
        .delivery
        .deliveries()
        .map_err(|e| anyhow::anyhow!("code delivery: {e}"))?;
    let jwt_templates = match &args.sessions.jwt_templates {
        Some(path) => JwtTemplates::load(path)?,
        None => JwtTemplates::default(),
    };
    let db = open(&args.database).await?;
    // Reads gather the identifiers of users whose rows do not hold them,
    // and searches find users without search keys, meanwhile, more
    // slowly; a failure is retried at the next start.
    let filling = db.clone();
    tokio::spawn(async move {
        match filling.fill_identifier_rows().await {
            Ok(users) => log_filled(users, IDENTIFIERS_KEPT),
            Err(error) => tracing::warn!(
                %error,
                "keeping identifiers on users' rows failed; retried at the next start"
            ),
        }
        match filling.fill_search_keys().await {
            Ok(users) => log_filled(users, SEARCH_KEYS_COMPUTED),
            Err(error) => {
                tracing::warn!(%error, "computing search keys failed; retried at the next start");
            }
        }
    });
    let clock = Arc::new(SystemClock);
    let tokens = TokenIssuer::start(
        db.sessions().as_ref(),
        args.sessions.token_settings(),
        clock.now(),
    )
    .await
    .context("loading the token signing keys")?;
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {}", args.grpc_addr))?;
    let http_listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let public_url = match &args.public_url {
        Some(url) => url.clone(),
        None => format!("http://{}", http_listener.local_addr()?),
    };
    let image_store = match &args.image_store {
        Some(location) => location.clone(),
        None => args.database.data_dir.join("images").display().to_string(),
    };
    let images = Images::open(&image_store, &public_url).context("opening the image store")?;
    let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let state = AppState {
        users: db.users(),
        sessions: db.sessions(),
        tokens: Arc::new(tokens),
        session_lifetime_ms: i64::try_from(args.sessions.session_lifetime.as_millis())
            .unwrap_or(DEFAULT_SESSION_LIFETIME_MS),
        client_ip: ClientIp {
            trusted_header: args.sessions.client_ip_header.clone(),
        },
        lockout: args.sessions.lockout(),
        self_delete: args.sessions.self_delete,
        sign_ups: db.sign_ups(),
        sign_up: args.sessions.sign_up(),
        jwt_templates: Arc::new(jwt_templates),
        images,
        readiness: Arc::default(),
        metrics: Arc::default(),
        clock,
        hasher: Hasher::new(parallelism),
        codes: CodeSettings {
            key: code_key,
            policy: CodePolicy::default(),
        },
        delivery,
    };
    // The signal starts the gRPC server's shutdown; the HTTP port (metrics,
    // `/readyz` answering 503) stays up until the gRPC calls have drained.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (http_stop, http_stopped) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(roster_server::http::serve(
        http_listener,
        state.clone(),
        wait_for(http_stopped),
    ));
    let options = ServeOptions {
        secret_keys: SecretKeys::new(&keys),
        request_timeout: args.request_timeout,
        max_in_flight: args.max_in_flight,
        shutdown_grace: args.shutdown_grace,
        ..ServeOptions::default()
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    roster_server::run(listener, state, options, wait_for(stopped)).await?;
    let _ = http_stop.send(true);
    http.await?.context("serving HTTP")?;
    db.close().await;
    tracing::info!("database pool closed; exiting");
    Ok(())
}

/// mimalloc returns freed memory to the system promptly; with glibc's
/// allocator each 19 MiB argon2 buffer stayed resident in its thread's
/// arena, and a burst of password hashes grew the process by hundreds of
/// megabytes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = roster_server::telemetry::init(cli.log_format)?;
    let result = run(cli.command).await;
    telemetry.shutdown();
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::RotateSigningKey(args) => {
            let db = open(&args.database).await?;
            let kid = TokenIssuer::rotate(
                db.sessions().as_ref(),
                args.token_algorithm,
                SystemClock.now(),
            )
            .await
            .context("creating a signing key")?;
            db.close().await;
            tracing::info!(kid = %kid, "added a signing key; restart the servers to sign with it");
            Ok(())
        }
        Command::Migrate(args) => {
            let db = open(&args).await?;
            let users = db.fill_identifier_rows().await;
            log_filled(
                users.context("keeping identifiers on users' rows")?,
                IDENTIFIERS_KEPT,
            );
            let users = db.fill_search_keys().await;
            log_filled(
                users.context("computing search keys")?,
                SEARCH_KEYS_COMPUTED,
            );
            db.close().await;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
