//! The plain-HTTP port: what clients that do not speak gRPC need. Today
//! that is the JWKS at `/.well-known/jwks.json`, so any JWT library can
//! verify session tokens.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::AppState;

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let body = serde_json::json!({ "keys": state.tokens.jwks() });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Verifiers may cache keys briefly; new keys appear within a
            // minute.
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        body.to_string(),
    )
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// Serves the HTTP port until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "serving HTTP");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
