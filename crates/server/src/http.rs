//! The plain-HTTP port: what clients that do not speak gRPC need.
//!
//! - `/.well-known/jwks.json`: the keys session tokens are signed with, so
//!   any JWT library can verify them.
//! - `/images/img_….{jpg,png,gif,webp}`: uploaded profile images. An id
//!   names one image's bytes for good, so responses carry a strong `ETag`
//!   and may be cached for a year; a removed image is 404.
//! - `/avatars/user_….svg?initials=AB`: the default avatar of a user without
//!   an image.
//! - `/metrics`: Prometheus metrics (OpenMetrics text).
//! - `/healthz`: liveness, 200 while the process serves at all.
//! - `/readyz`: readiness, 200 when the database answers and the server is
//!   not shutting down, else 503; what gRPC health reports too.

use std::future::Future;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use roster_domain::{ProfileImage, UserId};
use tokio::net::TcpListener;

use crate::AppState;
use crate::images::avatar_svg;

/// Images and avatars never change under one URL.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

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

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| matches!(tag.trim(), "*") || tag.trim() == etag)
}

/// A cacheable response: 304 when the client has it, else `body`.
fn cached(
    headers: &HeaderMap,
    etag: &str,
    media_type: &'static str,
    body: impl IntoResponse,
) -> Response {
    let mut response = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Images are data, never documents: nothing in them may run or load.
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, value);
    }
    response
}

async fn image(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(image) = ProfileImage::parse_file_name(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match state.images.get(&image).await {
        Ok(Some(bytes)) => cached(
            &headers,
            &format!("\"{}\"", image.id),
            image.format.media_type(),
            bytes,
        ),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, image = %image.id, "reading a profile image failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct AvatarQuery {
    #[serde(default)]
    initials: String,
}

async fn avatar(
    Path(file): Path<String>,
    Query(query): Query<AvatarQuery>,
    headers: HeaderMap,
) -> Response {
    let user_id = file
        .strip_suffix(".svg")
        .and_then(|id| UserId::parse(id).ok());
    let Some(user_id) = user_id else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let initials = query.initials;
    if initials.chars().count() > 2 || !initials.chars().all(char::is_alphanumeric) {
        return (
            StatusCode::BAD_REQUEST,
            "initials: at most two letters or digits",
        )
            .into_response();
    }
    let svg = avatar_svg(user_id.as_str(), &initials);
    let etag = {
        use sha2::Digest as _;
        format!(
            "\"{}\"",
            hex::encode(&sha2::Sha256::digest(svg.as_bytes())[..16])
        )
    };
    cached(&headers, &etag, "image/svg+xml", svg)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_ready() {
        "ready\n".into_response()
    } else if state.readiness.database_up() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
    }
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/images/{file}", get(image))
        .route("/avatars/{file}", get(avatar))
        .with_state(state)
}

/// Serves the HTTP port until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "serving HTTP");
    // No Nagle delay on the last segment of a response.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
