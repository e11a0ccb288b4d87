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
    AttemptOutcome, Channel, DomainError, Email, IdentificationId, PasswordHash, Phone, Session,
    SignInId, Timestamp, User, UserId, Username, Verification, VerificationCode,
    VerificationStrategy, reason,
};
use roster_proto::convert;
use roster_proto::v1::sign_in_service_server::SignInService;
use roster_proto::v1::{
    self, AttemptFirstFactorRequest, AttemptFirstFactorResponse, CreateSignInRequest,
    CreateSignInResponse, GetSignInRequest, GetSignInResponse, PrepareFirstFactorRequest,
    PrepareFirstFactorResponse, SignInStatus, SignInStrategy,
};
use roster_storage::{ListQuery, SignIn, SignInCode};
use tonic::{Request, Response, Status};

use super::respond;
use super::users::MAX_CANDIDATE_BYTES;
use crate::AppState;
use crate::activity;
use crate::delivery::CodeMessage;
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

impl Identifier {
    /// The first factors of a sign-in with this identifier. Only the kind
    /// of identifier decides them, so they reveal nothing about the
    /// account.
    fn first_factors(&self) -> Vec<SignInStrategy> {
        match self {
            Self::Email(_) => vec![SignInStrategy::Password, SignInStrategy::EmailCode],
            Self::Phone(_) => vec![SignInStrategy::Password, SignInStrategy::PhoneCode],
            Self::Username(_) => vec![SignInStrategy::Password],
        }
    }

    /// The normalized form, for counting attempts on identifiers that name
    /// no user.
    fn key(&self) -> String {
        match self {
            Self::Email(e) => format!("email:{}", e.normalized()),
            Self::Phone(p) => format!("phone:{p}"),
            Self::Username(u) => format!("username:{}", u.normalized()),
        }
    }

    /// The user's verified identifier this names: its id, and where a code
    /// for it goes.
    fn of_user(&self, user: &User) -> Option<(IdentificationId, String)> {
        match self {
            Self::Email(e) => user
                .email_addresses
                .iter()
                .find(|a| a.verification.is_verified() && a.email.normalized() == e.normalized())
                .map(|a| (a.id.clone(), a.email.to_string())),
            Self::Phone(p) => user
                .phone_numbers
                .iter()
                .find(|n| n.verification.is_verified() && &n.phone == p)
                .map(|n| (n.id.clone(), n.phone.to_string())),
            Self::Username(_) => None,
        }
    }
}

/// The verification strategy of a code first factor.
fn code_strategy(strategy: SignInStrategy) -> VerificationStrategy {
    match strategy {
        SignInStrategy::PhoneCode => VerificationStrategy::PhoneCode,
        _ => VerificationStrategy::EmailCode,
    }
}

/// Delivers a sign-in code, after counting it against the user's send
/// limit. A code over the limit, or one that cannot be delivered, stays
/// pending undelivered (nobody knows it): attempts then answer exactly as
/// for an identifier that names no one. Failures are only logged: the
/// caller was answered already.
async fn send_sign_in_code(
    state: AppState,
    delivery: std::sync::Arc<dyn crate::delivery::Deliver>,
    message: CodeMessage,
) {
    let Some(user_id) = message.user_id.clone() else {
        return;
    };
    let (policy, now) = (state.codes.policy, state.clock.now());
    let admitted = state
        .users
        .update_user(
            &user_id,
            Box::new(move |r| {
                r.code_sends.admit(
                    policy.user_send_limit,
                    policy.send_window_ms,
                    now,
                    "this user",
                )
            }),
        )
        .await;
    if let Err(e) = admitted {
        tracing::warn!(user_id = %user_id, error = %e, "sign-in code not sent");
        return;
    }
    match delivery.deliver(&message).await {
        Ok(()) => tracing::info!(user_id = %user_id, "sign-in code delivered"),
        Err(e) => tracing::warn!(user_id = %user_id, error = %e, "sign-in code not delivered"),
    }
}

/// The first factors of a stored sign-in.
fn first_factors(sign_in: &SignIn) -> Vec<SignInStrategy> {
    Identifier::parse(&sign_in.identifier)
        .map_or_else(|_| vec![SignInStrategy::Password], |i| i.first_factors())
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
        supported_first_factors: first_factors(sign_in).into_iter().map(i32::from).collect(),
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
            code: None,
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

    /// Refuses a sign-in that is complete or abandoned, or a strategy it
    /// does not support.
    fn ensure_open(
        sign_in: &SignIn,
        strategy: i32,
        now: Timestamp,
    ) -> Result<SignInStrategy, ApiError> {
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
        SignInStrategy::try_from(strategy)
            .ok()
            .filter(|s| first_factors(sign_in).contains(s))
            .ok_or_else(|| {
                DomainError::invalid(
                    "strategy",
                    reason::STRATEGY_NOT_ALLOWED,
                    "the strategy is not a supported first factor of this sign-in",
                )
                .into()
            })
    }

    /// Admits one attempt for the user: refused while locked out, and
    /// counted as failed (until it succeeds) in the user's transaction, so
    /// no burst of concurrent guesses gets more evaluated than the lockout
    /// allows.
    async fn admit(&self, user_id: &UserId, now: Timestamp) -> Result<(), ApiError> {
        let policy = self.state.lockout;
        self.state
            .users
            .update_user(user_id, Box::new(move |r| r.admit_attempt(&policy, now)))
            .await?;
        Ok(())
    }

    /// Admits an attempt on a sign-in that names no user, under the same
    /// lockout rules (kept per identifier), so a lockout tells nothing.
    async fn admit_unknown(&self, sign_in: &SignIn, now: Timestamp) -> Result<(), ApiError> {
        let key = Identifier::parse(&sign_in.identifier)?.key();
        self.state
            .sign_ups
            .admit_unknown_attempt(&key, &self.state.lockout, now)
            .await?;
        Ok(())
    }

    /// Checks a password; the user it proves and the hash it matched.
    async fn check_password(
        &self,
        sign_in: &SignIn,
        password: &str,
        now: Timestamp,
    ) -> Result<(UserId, Option<PasswordHash>), ApiError> {
        if password.is_empty() || password.len() > MAX_CANDIDATE_BYTES {
            return Err(password_incorrect());
        }
        let record = match &sign_in.user_id {
            Some(id) => self.state.users.get_record(id).await?,
            None => None,
        };
        // While locked out, the password is not even checked: no guess
        // teaches anything.
        match &record {
            Some(record) => self.admit(&record.user.id, now).await?,
            None => self.admit_unknown(sign_in, now).await?,
        }
        let hash = record.as_ref().and_then(|r| r.password_hash().cloned());
        let correct = self
            .state
            .hasher
            .verify_maybe(hash.clone(), password.to_owned())
            .await?;
        match record {
            Some(record) if correct => Ok((record.user.id, hash)),
            _ => {
                tracing::info!(sign_in_id = %sign_in.id, "sign-in refused: password incorrect");
                Err(password_incorrect())
            }
        }
    }

    /// Checks a code sent for the sign-in; the user it proves.
    async fn check_code(
        &self,
        sign_in: &SignIn,
        strategy: SignInStrategy,
        code: &str,
        now: Timestamp,
    ) -> Result<UserId, ApiError> {
        let code =
            VerificationCode::parse(code).map_err(|v| DomainError::from(v.nested("code")))?;
        match &sign_in.user_id {
            Some(id) => self.admit(id, now).await?,
            None => self.admit_unknown(sign_in, now).await?,
        }
        let expected = code_strategy(strategy);
        let (key, policy) = (self.state.codes.key.clone(), self.state.codes.policy);
        let mut outcome = AttemptOutcome::NotPrepared;
        self.state
            .sessions
            .update_sign_in(
                &sign_in.id,
                Box::new(|s| {
                    if let Some(c) = s.code.as_mut()
                        && c.verification.strategy == Some(expected)
                    {
                        outcome = c.verification.attempt(&c.target, &code, &key, &policy, now);
                    }
                    Ok(())
                }),
            )
            .await?;
        match (outcome, &sign_in.user_id) {
            (AttemptOutcome::Verified, Some(user_id)) => Ok(user_id.clone()),
            // A sign-in that names no one never sent its code; even a lucky
            // guess proves nothing.
            (AttemptOutcome::Verified, None) => {
                Err(DomainError::CodeIncorrect { attempts_left: 0 }.into())
            }
            _ => {
                outcome.into_result()?;
                Err(ApiError::Internal("an unverified code was accepted"))
            }
        }
    }

    async fn prepare(
        &self,
        req: PrepareFirstFactorRequest,
    ) -> Result<PrepareFirstFactorResponse, ApiError> {
        let sign_in = self.load("sign_in_id", &req.sign_in_id).await?;
        let now = self.state.clock.now();
        let strategy = Self::ensure_open(&sign_in, req.strategy, now)?;
        let channel = match strategy {
            SignInStrategy::EmailCode => Channel::Email,
            SignInStrategy::PhoneCode => Channel::Phone,
            _ => {
                return Err(DomainError::invalid(
                    "strategy",
                    reason::STRATEGY_NOT_ALLOWED,
                    "only code strategies are prepared",
                )
                .into());
            }
        };
        let delivery = self
            .state
            .delivery
            .for_channel(channel)
            .cloned()
            .ok_or_else(|| {
                DomainError::precondition(
                    reason::DELIVERY_NOT_CONFIGURED,
                    format!(
                        "this server has no delivery configured for {}s",
                        channel.what()
                    ),
                )
            })?;
        // Where the code goes: the user's verified identifier, or nowhere
        // (a stand-in id, so the stored state looks the same).
        let user = match &sign_in.user_id {
            Some(id) => self.state.users.get_user(id).await?,
            None => None,
        };
        let identifier = Identifier::parse(&sign_in.identifier)?;
        let found = user.as_ref().and_then(|u| identifier.of_user(u));
        // Without a user, the stand-in id stays the same across resends, so
        // cooldowns and limits apply exactly as for a real identifier.
        let target = match (&found, &sign_in.code) {
            (Some((id, _)), _) => id.clone(),
            (None, Some(code)) => code.target.clone(),
            (None, None) => IdentificationId::generate(now),
        };
        let code = VerificationCode::generate();
        let hash = self.state.codes.key.hash(&target, &code);
        let (policy, expected, stored) = (
            self.state.codes.policy,
            code_strategy(strategy),
            hash.clone(),
        );
        let updated = self
            .state
            .sessions
            .update_sign_in(
                &sign_in.id,
                Box::new(move |s| {
                    let mut verification = match s.code.take() {
                        Some(c) if c.target == target => c.verification,
                        _ => Verification::unverified(),
                    };
                    verification.prepare(expected, stored, &policy, now)?;
                    s.code = Some(SignInCode {
                        target,
                        verification,
                    });
                    Ok(())
                }),
            )
            .await?;
        if let (Some((target, to)), Some(user)) = (found, user) {
            let message = CodeMessage {
                channel,
                to,
                code,
                locale: user.locale.as_ref().map(ToString::to_string),
                user_id: Some(user.id.clone()),
                identification_id: target,
                expire_at: now.plus_millis(policy.ttl_ms),
                valid_minutes: policy.ttl_ms / 60_000,
            };
            // Sent in the background, so the answer takes the same time
            // whether or not anyone receives a code.
            let state = self.state.clone();
            tokio::spawn(send_sign_in_code(state, delivery, message));
        }
        Ok(PrepareFirstFactorResponse {
            sign_in: Some(shown(&updated, now)),
        })
    }

    async fn attempt(
        &self,
        req: AttemptFirstFactorRequest,
        activity: roster_domain::SessionActivity,
    ) -> Result<AttemptFirstFactorResponse, ApiError> {
        let sign_in = self.load("sign_in_id", &req.sign_in_id).await?;
        let now = self.state.clock.now();
        let strategy = Self::ensure_open(&sign_in, req.strategy, now)?;
        let (user_id, checked_hash) = match strategy {
            SignInStrategy::Password => self.check_password(&sign_in, &req.password, now).await?,
            _ => (
                self.check_code(&sign_in, strategy, &req.code, now).await?,
                None,
            ),
        };
        let (session, secret) = Session::start(
            user_id.clone(),
            activity,
            self.state.session_lifetime_ms,
            now,
        );
        if !self
            .state
            .sessions
            .complete_sign_in(&sign_in.id, &session.id)
            .await?
        {
            return Err(DomainError::precondition(
                reason::SIGN_IN_COMPLETE,
                "this sign-in is complete; start a new one",
            )
            .into());
        }
        // The session begins in the user's transaction, with the user read
        // again under its lock: a ban, or a password change, that landed
        // while the factor was checked still stops the sign-in.
        let begun = session.clone();
        let user = self
            .state
            .users
            .update_user(
                &user_id,
                Box::new(move |r| {
                    r.user.ensure_can_sign_in()?;
                    if checked_hash.is_some() && r.password_hash() != checked_hash.as_ref() {
                        return Err(DomainError::invalid(
                            "password",
                            reason::FORM_PASSWORD_INCORRECT,
                            "the password is incorrect, or no account has this identifier",
                        ));
                    }
                    r.record_successful_sign_in(now);
                    r.start_session = Some(begun);
                    Ok(())
                }),
            )
            .await?;
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

    async fn prepare_first_factor(
        &self,
        request: Request<PrepareFirstFactorRequest>,
    ) -> Result<Response<PrepareFirstFactorResponse>, Status> {
        respond(self.prepare(request.into_inner()).await)
    }

    async fn attempt_first_factor(
        &self,
        request: Request<AttemptFirstFactorRequest>,
    ) -> Result<Response<AttemptFirstFactorResponse>, Status> {
        let activity = activity::of(&self.state.client_ip, &request);
        respond(self.attempt(request.into_inner(), activity).await)
    }
}
