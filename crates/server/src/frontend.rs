//! Frontend API authentication: `authorization: Bearer <session token>`.
//!
//! The interceptor checks what needs no database: the token's signature,
//! algorithm (pinned by its `kid`), issuer and time. Each handler then
//! loads the session and requires it to be active and to belong to the
//! token's subject, so a revoked session's tokens stop working at once.
//! The acting user is always the token's `sub`. `Session <secret>` (the
//! long-lived session secret) is accepted only where a handler allows it:
//! for minting a fresh token.

use std::sync::Arc;

use roster_domain::{Clock, Session, SessionId, SessionSecret, UserId};
use tonic::{Request, Status};

use crate::AppState;
use crate::error::ApiError;
use crate::tokens::{TokenError, TokenIssuer};

/// What the caller presented.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A verified session token.
    Token {
        user_id: UserId,
        session_id: SessionId,
    },
    /// A session secret, not yet looked up.
    Secret(String),
}

fn unauthenticated(reason: &'static str, message: &str) -> ApiError {
    ApiError::Unauthenticated {
        reason,
        message: message.to_owned(),
    }
}

/// Checks Frontend API credentials before a call reaches its handler.
#[derive(Clone)]
pub struct SessionAuth {
    tokens: Arc<TokenIssuer>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SessionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionAuth")
    }
}

impl SessionAuth {
    pub fn new(state: &AppState) -> Self {
        Self {
            tokens: state.tokens.clone(),
            clock: state.clock.clone(),
        }
    }

    fn credential<T>(&self, request: &Request<T>) -> Result<Credential, ApiError> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                unauthenticated(
                    "AUTHORIZATION_MISSING",
                    "missing authorization header: send 'authorization: Bearer <session token>'",
                )
            })?
            .to_str()
            .map_err(|_| {
                unauthenticated(
                    "SESSION_TOKEN_INVALID",
                    "the authorization header is not text",
                )
            })?;
        if let Some(secret) = header.strip_prefix("Session ") {
            return Ok(Credential::Secret(secret.trim().to_owned()));
        }
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                unauthenticated(
                    "SESSION_TOKEN_INVALID",
                    "send 'authorization: Bearer <session token>'",
                )
            })?;
        let claims = self.tokens.verify(token, self.clock.now()).map_err(|e| {
            tracing::debug!(error = %e, "session token refused");
            match e {
                TokenError::Rejected(e)
                    if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature =>
                {
                    unauthenticated(
                        "SESSION_TOKEN_EXPIRED",
                        "the session token expired; get a new one",
                    )
                }
                _ => unauthenticated("SESSION_TOKEN_INVALID", "the session token is not valid"),
            }
        })?;
        let invalid = || unauthenticated("SESSION_TOKEN_INVALID", "the session token is not valid");
        Ok(Credential::Token {
            user_id: UserId::parse(&claims.sub).map_err(|_| invalid())?,
            session_id: SessionId::parse(&claims.sid).map_err(|_| invalid())?,
        })
    }
}

impl tonic::service::Interceptor for SessionAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let credential = self.credential(&request).map_err(Status::from)?;
        request.extensions_mut().insert(credential);
        Ok(request)
    }
}

/// The caller's active session: from a verified token, or (where
/// `allow_secret`) from a session secret.
pub(crate) async fn caller<T>(
    state: &AppState,
    request: &Request<T>,
    allow_secret: bool,
) -> Result<Session, ApiError> {
    let credential = request
        .extensions()
        .get::<Credential>()
        .ok_or(ApiError::Internal(
            "frontend call without a checked credential",
        ))?;
    let session = match credential {
        Credential::Token {
            user_id,
            session_id,
        } => state
            .sessions
            .get_session(session_id)
            .await?
            .filter(|s| &s.user_id == user_id),
        Credential::Secret(secret) if allow_secret => {
            let hash = SessionSecret::from_client(secret).hash();
            state.sessions.find_session_by_secret(&hash).await?
        }
        Credential::Secret(_) => {
            return Err(unauthenticated(
                "SESSION_TOKEN_INVALID",
                "this call needs 'authorization: Bearer <session token>'",
            ));
        }
    };
    let session = session.ok_or_else(|| {
        unauthenticated("SESSION_TOKEN_INVALID", "the session token is not valid")
    })?;
    if session.ensure_active(state.clock.now()).is_err() {
        return Err(unauthenticated(
            "SESSION_NOT_ACTIVE",
            "the session was revoked, ended or expired; sign in again",
        ));
    }
    Ok(session)
}
