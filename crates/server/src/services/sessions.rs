//! `roster.v1.SessionService` (Backend API) and `roster.v1.JwksService`
//! (public).

use roster_domain::DomainError;
use roster_proto::convert;
use roster_proto::v1::jwks_service_server::JwksService;
use roster_proto::v1::session_service_server::SessionService;
use roster_proto::v1::{
    CreateSessionTokenRequest, CreateSessionTokenResponse, GetJwksRequest, GetJwksResponse,
    GetSessionRequest, GetSessionResponse, JsonWebKey, ListSessionsRequest, ListSessionsResponse,
    RevokeSessionRequest, RevokeSessionResponse,
};
use roster_storage::{SessionQuery, session_page};
use tonic::{Request, Response, Status};

use super::respond;
use crate::AppState;
use crate::error::ApiError;
use crate::tokens::Jwk;

/// Shortest and longest token lifetimes a backend caller may ask for, in
/// seconds (Clerk's bounds).
const TOKEN_LIFETIME_S: std::ops::RangeInclusive<i64> = 30..=315_360_000;

/// The SessionService implementation.
#[derive(Clone, Debug)]
pub struct Sessions {
    state: AppState,
}

impl Sessions {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn list(&self, req: ListSessionsRequest) -> Result<ListSessionsResponse, ApiError> {
        let user_id = convert::user_id("user_id", &req.user_id)?;
        let status = convert::session_status_filter("status", req.status)?;
        let now = self.state.clock.now();
        let query = SessionQuery::new(user_id, status, now, req.page_size, &req.page_token)
            .map_err(DomainError::from)?;
        let (sessions, next) = session_page(self.state.sessions.as_ref(), query).await?;
        Ok(ListSessionsResponse {
            sessions: sessions.iter().map(|s| convert::session(s, now)).collect(),
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn get(&self, req: GetSessionRequest) -> Result<GetSessionResponse, ApiError> {
        let id = convert::session_id("id", &req.id)?;
        let session = self
            .state
            .sessions
            .get_session(&id)
            .await?
            .ok_or_else(|| DomainError::not_found("session", id.as_str()))?;
        Ok(GetSessionResponse {
            session: Some(convert::session(&session, self.state.clock.now())),
        })
    }

    async fn revoke(&self, req: RevokeSessionRequest) -> Result<RevokeSessionResponse, ApiError> {
        let id = convert::session_id("id", &req.id)?;
        let now = self.state.clock.now();
        let session = self
            .state
            .sessions
            .update_session(&id, Box::new(move |s| s.revoke(now)))
            .await?;
        tracing::info!(session_id = %id, user_id = %session.user_id, "session revoked");
        Ok(RevokeSessionResponse {
            session: Some(convert::session(&session, now)),
        })
    }

    async fn create_token(
        &self,
        req: CreateSessionTokenRequest,
    ) -> Result<CreateSessionTokenResponse, ApiError> {
        let id = convert::session_id("session_id", &req.session_id)?;
        let lifetime = match req.expires_in_seconds {
            0 => None,
            s if TOKEN_LIFETIME_S.contains(&s) => Some(s),
            _ => {
                return Err(DomainError::invalid(
                    "expires_in_seconds",
                    roster_domain::reason::FORM_PARAM_VALUE_INVALID,
                    "expires_in_seconds must be between 30 and 315360000",
                )
                .into());
            }
        };
        let jwt = mint(&self.state, &id, lifetime, &req.template, None).await?;
        Ok(CreateSessionTokenResponse { jwt })
    }
}

/// Mints a token for an active session, recording the activity. With a
/// template, its claims are added and its lifetime is the default.
pub(crate) async fn mint(
    state: &AppState,
    id: &roster_domain::SessionId,
    lifetime_s: Option<i64>,
    template: &str,
    azp: Option<&str>,
) -> Result<String, ApiError> {
    let template = if template.is_empty() {
        None
    } else {
        Some(
            state
                .jwt_templates
                .get(template)
                .ok_or_else(|| DomainError::not_found("JWT template", template))?,
        )
    };
    let now = state.clock.now();
    let session = state
        .sessions
        .update_session(id, Box::new(move |s| s.touch(now)))
        .await?;
    let lifetime = lifetime_s
        .or(template.map(|t| t.lifetime_s))
        .unwrap_or(state.tokens.lifetime_s);
    let extra = match template {
        None => serde_json::Map::new(),
        Some(template) => {
            let user = state
                .users
                .get_user(&session.user_id)
                .await?
                .ok_or_else(|| DomainError::not_found("user", session.user_id.as_str()))?;
            template.render(&user, &session.id)
        }
    };
    state
        .tokens
        .sign_with(&session.user_id, &session.id, now, lifetime, extra, azp)
        .map_err(ApiError::Internal)
}

#[tonic::async_trait]
impl SessionService for Sessions {
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        respond(self.list(request.into_inner()).await)
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<GetSessionResponse>, Status> {
        respond(self.get(request.into_inner()).await)
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        respond(self.revoke(request.into_inner()).await)
    }

    async fn create_session_token(
        &self,
        request: Request<CreateSessionTokenRequest>,
    ) -> Result<Response<CreateSessionTokenResponse>, Status> {
        respond(self.create_token(request.into_inner()).await)
    }
}

/// The JwksService implementation.
#[derive(Clone, Debug)]
pub struct Jwks {
    state: AppState,
}

impl Jwks {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn json_web_key(k: Jwk) -> JsonWebKey {
    JsonWebKey {
        kid: k.kid,
        kty: k.kty.to_owned(),
        alg: k.alg.to_owned(),
        r#use: k.use_.to_owned(),
        n: k.n,
        e: k.e,
        crv: k.crv,
        x: k.x,
    }
}

#[tonic::async_trait]
impl JwksService for Jwks {
    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse {
            keys: self
                .state
                .tokens
                .jwks()
                .into_iter()
                .map(json_web_key)
                .collect(),
        }))
    }
}
