//! `roster.v1.SignInService` (Frontend API): sign in with an identifier
//! and a first factor, and get a session.
//!
//! Nothing here tells whether an identifier belongs to anyone. A sign-in is
//! created for an unknown identifier just like for a known one, with the
//! same first factors (decided by the kind of identifier alone); and a
//! password attempt for it checks a stand-in hash, so it fails with the
//! same error in the same time as a wrong password. Whether a user is
//! banned is told only to a caller who knows the password.
//!
//! Wrong passwords count towards a lockout (10 in a row lock the user out
//! for an hour by default), each in the user's transaction so concurrent
//! guesses are all counted; while locked out no password is checked.

use roster_domain::query::{OrderBy, UserFilter};
use roster_domain::{
    DomainError, Email, Phone, Session, SignInId, Timestamp, User, UserId, Username, reason,
};
use roster_proto::convert;
use roster_proto::v1::sign_in_service_server::SignInService;
use roster_proto::v1::{
    self, AttemptFirstFactorRequest, AttemptFirstFactorResponse, CreateSignInRequest,
    CreateSignInResponse, GetSignInRequest, GetSignInResponse, SignInStatus, SignInStrategy,
};
use roster_storage::{ListQuery, SignIn};
use tonic::{Request, Response, Status};

use super::respond;
use super::users::MAX_CANDIDATE_BYTES;
use crate::AppState;
use crate::activity;
use crate::error::ApiError;

/// How long a sign-in may take before it is abandoned.
const SIGN_IN_TTL_MS: i64 = 60 * 60 * 1000;

const NEEDS_FIRST_FACTOR: &str = "needs_first_factor";
const COMPLETE: &str = "complete";

/// The SignInService implementation.
#[derive(Clone, Debug)]
pub struct SignIns {
    state: AppState,
}

/// What an identifier is.
enum Identifier {
    Email(Email),
    Phone(Phone),
    Username(Username),
}

impl Identifier {
    fn parse(text: &str) -> Result<Self, DomainError> {
        let text = text.trim();
        let parsed = if text.is_empty() {
            return Err(DomainError::invalid(
                "identifier",
                reason::FORM_PARAM_MISSING,
                "an email address, phone number or username is required",
            ));
        } else if text.contains('@') {
            Email::parse(text).map(Self::Email)
        } else if text.starts_with('+') {
            Phone::parse(text).map(Self::Phone)
        } else {
            Username::parse(text).map(Self::Username)
        };
        parsed.map_err(|v| v.nested("identifier").into())
    }

    fn filter(&self) -> UserFilter {
        match self {
            Self::Email(e) => UserFilter {
                email_addresses: vec![e.normalized()],
                ..UserFilter::default()
            },
            Self::Phone(p) => UserFilter {
                phone_numbers: vec![p.clone()],
                ..UserFilter::default()
            },
            Self::Username(u) => UserFilter {
                usernames: vec![u.normalized()],
                ..UserFilter::default()
            },
        }
    }

    /// Whether `user` holds this identifier in a form it may sign in with:
    /// emails and phones only once verified.
    fn signs_in(&self, user: &User) -> bool {
        match self {
            Self::Email(e) => user
                .email_addresses
                .iter()
                .any(|a| a.verification.is_verified() && a.email.normalized() == e.normalized()),
            Self::Phone(p) => user
                .phone_numbers
                .iter()
                .any(|n| n.verification.is_verified() && &n.phone == p),
            Self::Username(u) => user
                .username
                .as_ref()
                .is_some_and(|name| name.normalized() == u.normalized()),
        }
    }
}

/// The first factors of every sign-in. Only the kind of identifier could
/// change them, so they reveal nothing about the account.
fn first_factors() -> Vec<i32> {
    vec![SignInStrategy::Password.into()]
}

fn shown(sign_in: &SignIn, now: Timestamp) -> v1::SignIn {
    let status = match sign_in.status.as_str() {
        COMPLETE => SignInStatus::Complete,
        _ if now >= sign_in.expire_at => SignInStatus::Abandoned,
        _ => SignInStatus::NeedsFirstFactor,
    };
    v1::SignIn {
        id: sign_in.id.to_string(),
        status: status.into(),
        identifier: sign_in.identifier.clone(),
        supported_first_factors: first_factors(),
        created_session_id: sign_in
            .session_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        created_at: Some(convert::timestamp(sign_in.created_at)),
        expire_at: Some(convert::timestamp(sign_in.expire_at)),
    }
}

fn password_incorrect() -> ApiError {
    DomainError::invalid(
        "password",
        reason::FORM_PASSWORD_INCORRECT,
        "the password is incorrect, or no account has this identifier",
    )
    .into()
}

impl SignIns {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The user an identifier signs in, if any.
    async fn find(&self, identifier: &Identifier) -> Result<Option<UserId>, ApiError> {
        let query = ListQuery {
            filter: identifier.filter(),
            order: OrderBy::default(),
            after: None,
            // Unverified copies of an address may sit on several users;
            // only the one that verified it signs in.
            limit: 50,
        };
        let users = self.state.users.list_users(&query).await?;
        Ok(users
            .into_iter()
            .find(|u| identifier.signs_in(u))
            .map(|u| u.id))
    }

    async fn create(&self, req: CreateSignInRequest) -> Result<CreateSignInResponse, ApiError> {
        let identifier = Identifier::parse(&req.identifier)?;
        let user_id = self.find(&identifier).await?;
        let now = self.state.clock.now();
        let sign_in = SignIn {
            id: SignInId::generate(now),
            identifier: req.identifier.trim().to_owned(),
            user_id,
            status: NEEDS_FIRST_FACTOR.to_owned(),
            created_at: now,
            expire_at: now.plus_millis(SIGN_IN_TTL_MS),
            session_id: None,
        };
        self.state.sessions.insert_sign_in(&sign_in).await?;
        Ok(CreateSignInResponse {
            sign_in: Some(shown(&sign_in, now)),
        })
    }

    async fn load(&self, field: &str, id: &str) -> Result<SignIn, ApiError> {
        let id = convert::sign_in_id(field, id)?;
        Ok(self
            .state
            .sessions
            .get_sign_in(&id)
            .await?
            .ok_or_else(|| DomainError::not_found("sign-in", id.as_str()))?)
    }

    async fn attempt(
        &self,
        req: AttemptFirstFactorRequest,
        activity: roster_domain::SessionActivity,
    ) -> Result<AttemptFirstFactorResponse, ApiError> {
        let sign_in = self.load("sign_in_id", &req.sign_in_id).await?;
        let now = self.state.clock.now();
        if sign_in.status == COMPLETE {
            return Err(DomainError::precondition(
                reason::SIGN_IN_COMPLETE,
                "this sign-in is complete; start a new one",
            )
            .into());
        }
        if now >= sign_in.expire_at {
            return Err(DomainError::precondition(
                reason::SIGN_IN_EXPIRED,
                "this sign-in was abandoned; start a new one",
            )
            .into());
        }
        if req.strategy != i32::from(SignInStrategy::Password) {
            return Err(DomainError::invalid(
                "strategy",
                reason::STRATEGY_NOT_ALLOWED,
                "the strategy is not a supported first factor of this sign-in",
            )
            .into());
        }
        if req.password.is_empty() || req.password.len() > MAX_CANDIDATE_BYTES {
            return Err(password_incorrect());
        }
        let record = match &sign_in.user_id {
            Some(id) => self.state.users.get_record(id).await?,
            None => None,
        };
        // While locked out, the password is not even checked: no guess
        // teaches anything.
        if let Some(record) = &record {
            record.ensure_not_locked_out(now)?;
        }
        let hash = record.as_ref().and_then(|r| r.password_hash().cloned());
        let correct = self
            .state
            .hasher
            .verify_maybe(hash, req.password.clone())
            .await?;
        let policy = self.state.lockout;
        let Some(record) = record else {
            tracing::info!(sign_in_id = %sign_in.id, "sign-in refused: password incorrect");
            return Err(password_incorrect());
        };
        let user_id = record.user.id.clone();
        if !correct {
            // Counted in the user's transaction, so concurrent guesses are
            // each counted.
            self.state
                .users
                .update_user(
                    &user_id,
                    Box::new(move |r| {
                        r.record_failed_attempt(&policy, now);
                        Ok(())
                    }),
                )
                .await?;
            tracing::info!(sign_in_id = %sign_in.id, user_id = %user_id, "sign-in refused: password incorrect");
            return Err(password_incorrect());
        }
        // The user is read again under its lock: a ban or lockout that
        // lands while the password was checked still stops the sign-in.
        let user = self
            .state
            .users
            .update_user(
                &user_id,
                Box::new(move |r| {
                    r.ensure_not_locked_out(now)?;
                    r.user.ensure_can_sign_in()?;
                    r.record_successful_sign_in(now);
                    Ok(())
                }),
            )
            .await?;
        let (session, secret) = Session::start(
            user.id.clone(),
            activity,
            self.state.session_lifetime_ms,
            now,
        );
        if !self
            .state
            .sessions
            .complete_sign_in(&sign_in.id, &session)
            .await?
        {
            return Err(DomainError::precondition(
                reason::SIGN_IN_COMPLETE,
                "this sign-in is complete; start a new one",
            )
            .into());
        }
        let token = self
            .state
            .tokens
            .sign(&user.id, &session.id, now, self.state.tokens.lifetime_s)
            .map_err(ApiError::Internal)?;
        tracing::info!(sign_in_id = %sign_in.id, user_id = %user.id, session_id = %session.id, "signed in");
        let completed = SignIn {
            status: COMPLETE.to_owned(),
            session_id: Some(session.id.clone()),
            ..sign_in
        };
        Ok(AttemptFirstFactorResponse {
            sign_in: Some(shown(&completed, now)),
            session: Some(convert::session(&session, now)),
            session_secret: secret.as_str().to_owned(),
            session_token: token,
        })
    }
}

#[tonic::async_trait]
impl SignInService for SignIns {
    async fn create_sign_in(
        &self,
        request: Request<CreateSignInRequest>,
    ) -> Result<Response<CreateSignInResponse>, Status> {
        respond(self.create(request.into_inner()).await)
    }

    async fn get_sign_in(
        &self,
        request: Request<GetSignInRequest>,
    ) -> Result<Response<GetSignInResponse>, Status> {
        let id = request.into_inner().id;
        respond(
            async {
                let sign_in = self.load("id", &id).await?;
                Ok(GetSignInResponse {
                    sign_in: Some(shown(&sign_in, self.state.clock.now())),
                })
            }
            .await,
        )
    }

    async fn attempt_first_factor(
        &self,
        request: Request<AttemptFirstFactorRequest>,
    ) -> Result<Response<AttemptFirstFactorResponse>, Status> {
        let activity = activity::of_request(
            &self.state.client_ip,
            request.metadata(),
            request.remote_addr(),
        );
        respond(self.attempt(request.into_inner(), activity).await)
    }
}
