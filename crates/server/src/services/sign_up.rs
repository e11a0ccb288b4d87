//! `roster.v1.SignUpService` (Frontend API): new users sign themselves
//! up, prove their email address or phone number with a code, and get a
//! user and a session once everything required is there.

use roster_domain::query::{OrderBy, UserFilter};
use roster_domain::{
    AttemptOutcome, DomainError, Password, PasswordHash, Session, SessionActivity, SignUp,
    VerificationCode,
};
use roster_proto::convert;
use roster_proto::v1::sign_up_service_server::SignUpService;
use roster_proto::v1::{
    self, AttemptSignUpVerificationRequest, AttemptSignUpVerificationResponse, CreateSignUpRequest,
    CreateSignUpResponse, GetSignUpRequest, GetSignUpResponse, PrepareSignUpVerificationRequest,
    PrepareSignUpVerificationResponse, SignUpCompletion, UpdateSignUpRequest, UpdateSignUpResponse,
};
use roster_storage::{ListQuery, StorageError};
use tonic::{Request, Response, Status};

use super::respond;
use super::verification::deliver_or_withdraw;
use crate::AppState;
use crate::activity;
use crate::delivery::CodeMessage;
use crate::error::ApiError;

/// The SignUpService implementation.
#[derive(Clone, Debug)]
pub struct SignUps {
    state: AppState,
}

impl SignUps {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn shown(&self, sign_up: &SignUp) -> v1::SignUp {
        convert::sign_up(sign_up, &self.state.sign_up, self.state.clock.now())
    }

    async fn hash(&self, password: Option<Password>) -> Result<Option<PasswordHash>, ApiError> {
        match password {
            Some(p) => Ok(Some(self.state.hasher.hash(p).await?)),
            None => Ok(None),
        }
    }

    /// Refuses an identifier another user has verified, before any code
    /// is sent for it (completion checks again, atomically).
    async fn ensure_available(&self, input: &convert::SignUpInput) -> Result<(), ApiError> {
        let checks = [
            input.fields.email.as_ref().map(|e| {
                (
                    "email_address",
                    UserFilter {
                        email_addresses: vec![e.normalized()],
                        ..UserFilter::default()
                    },
                )
            }),
            input.fields.phone.as_ref().map(|p| {
                (
                    "phone_number",
                    UserFilter {
                        phone_numbers: vec![p.clone()],
                        ..UserFilter::default()
                    },
                )
            }),
        ];
        for (field, filter) in checks.into_iter().flatten() {
            let query = ListQuery {
                filter,
                order: OrderBy::default(),
                after: None,
                limit: 50,
            };
            let holders = self.state.users.list_users(&query).await?;
            let taken = holders.iter().any(|u| match field {
                "email_address" => u.email_addresses.iter().any(|e| {
                    e.verification.is_verified()
                        && input
                            .fields
                            .email
                            .as_ref()
                            .is_some_and(|x| x.normalized() == e.email.normalized())
                }),
                _ => u.phone_numbers.iter().any(|p| {
                    p.verification.is_verified() && input.fields.phone.as_ref() == Some(&p.phone)
                }),
            });
            if taken {
                return Err(StorageError::Conflict {
                    field: field.to_owned(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Completes the sign-up if everything required is there: creates the
    /// user and a session in one transaction, and mints a first token.
    async fn finish(
        &self,
        sign_up: SignUp,
        activity: SessionActivity,
    ) -> Result<(v1::SignUp, Option<SignUpCompletion>), ApiError> {
        let now = self.state.clock.now();
        if !sign_up.is_ready(&self.state.sign_up) {
            return Ok((self.shown(&sign_up), None));
        }
        let record = sign_up.to_user(now)?;
        let (session, secret) = Session::start(
            record.user.id.clone(),
            activity,
            self.state.session_lifetime_ms,
            now,
        );
        let done = self
            .state
            .sign_ups
            .complete_sign_up(&sign_up.id, &record, &session, now)
            .await?;
        let token = self
            .state
            .tokens
            .sign(
                &record.user.id,
                &session.id,
                now,
                self.state.tokens.lifetime_s,
            )
            .map_err(ApiError::Internal)?;
        tracing::info!(sign_up_id = %done.id, user_id = %record.user.id, session_id = %session.id, "signed up");
        Ok((
            self.shown(&done),
            Some(SignUpCompletion {
                session: Some(convert::session(&session, now)),
                session_secret: secret.as_str().to_owned(),
                session_token: token,
            }),
        ))
    }

    async fn create(
        &self,
        req: CreateSignUpRequest,
        activity: SessionActivity,
    ) -> Result<CreateSignUpResponse, ApiError> {
        let input = convert::sign_up_input(
            &req.email_address,
            &req.phone_number,
            &req.username,
            &req.password,
            &req.first_name,
            &req.last_name,
            req.unsafe_metadata,
        )?;
        self.ensure_available(&input).await?;
        let mut fields = input.fields;
        fields.password_hash = self.hash(input.password).await?;
        let sign_up = SignUp::start(fields, self.state.clock.now());
        self.state.sign_ups.insert_sign_up(&sign_up).await?;
        let (sign_up, completion) = self.finish(sign_up, activity).await?;
        Ok(CreateSignUpResponse {
            sign_up: Some(sign_up),
            completion,
        })
    }

    async fn update(
        &self,
        req: UpdateSignUpRequest,
        activity: SessionActivity,
    ) -> Result<UpdateSignUpResponse, ApiError> {
        let id = convert::sign_up_id("id", &req.id)?;
        let input = convert::sign_up_input(
            &req.email_address,
            &req.phone_number,
            &req.username,
            &req.password,
            &req.first_name,
            &req.last_name,
            req.unsafe_metadata,
        )?;
        self.ensure_available(&input).await?;
        let mut fields = input.fields;
        fields.password_hash = self.hash(input.password).await?;
        let now = self.state.clock.now();
        let sign_up = self
            .state
            .sign_ups
            .update_sign_up(&id, Box::new(move |s| s.update(fields, now)))
            .await?;
        let (sign_up, completion) = self.finish(sign_up, activity).await?;
        Ok(UpdateSignUpResponse {
            sign_up: Some(sign_up),
            completion,
        })
    }

    async fn prepare(
        &self,
        req: PrepareSignUpVerificationRequest,
    ) -> Result<PrepareSignUpVerificationResponse, ApiError> {
        let id = convert::sign_up_id("id", &req.id)?;
        let channel = convert::code_channel("strategy", req.strategy)?;
        let delivery = self
            .state
            .delivery
            .for_channel(channel)
            .cloned()
            .ok_or_else(|| {
                DomainError::precondition(
                    roster_domain::reason::DELIVERY_NOT_CONFIGURED,
                    format!(
                        "this server has no delivery configured for {}s",
                        channel.what()
                    ),
                )
            })?;
        let code = VerificationCode::generate();
        let (key, policy, now) = (
            self.state.codes.key.clone(),
            self.state.codes.policy,
            self.state.clock.now(),
        );
        // However many sign-ups name an address or number, it gets no more
        // codes than the per-identifier limit.
        let current = self
            .state
            .sign_ups
            .get_sign_up(&id)
            .await?
            .ok_or_else(|| DomainError::not_found("sign-up", id.as_str()))?;
        current.ensure_open(now)?;
        if let Some(target) = current.normalized_target(channel) {
            self.state
                .sign_ups
                .admit_code_send(
                    &target,
                    policy.identifier_send_limit,
                    policy.send_window_ms,
                    now,
                )
                .await?;
        }
        let sent_code = code.clone();
        let mut hashed = None;
        let sign_up = self
            .state
            .sign_ups
            .update_sign_up(
                &id,
                Box::new(|s| {
                    let (target, _) = s.code_target(channel).ok_or_else(|| {
                        DomainError::precondition(
                            roster_domain::reason::VERIFICATION_NOT_PREPARED,
                            format!("this sign-up has no {} to verify", channel.what()),
                        )
                    })?;
                    let hash = key.hash(&target, &sent_code);
                    hashed = Some(hash.clone());
                    s.prepare_verification(channel, hash, &policy, now)
                }),
            )
            .await?;
        let hash = hashed.ok_or(ApiError::Internal("a prepared code has no hash"))?;
        let (target, to) = sign_up
            .code_target(channel)
            .ok_or(ApiError::Internal("a prepared sign-up lost its identifier"))?;
        let message = CodeMessage {
            channel,
            to,
            code,
            locale: None,
            user_id: None,
            identification_id: target,
            expire_at: now.plus_millis(policy.ttl_ms),
            valid_minutes: policy.ttl_ms / 60_000,
        };
        let (sign_ups, clock, sign_up_id) = (
            self.state.sign_ups.clone(),
            self.state.clock.clone(),
            sign_up.id.clone(),
        );
        deliver_or_withdraw(delivery, message, async move {
            sign_ups
                .update_sign_up(
                    &sign_up_id,
                    Box::new(move |s| {
                        s.withdraw_verification(channel, &hash, clock.now());
                        Ok(())
                    }),
                )
                .await
                .map(|_| ())
        })
        .await?;
        tracing::info!(sign_up_id = %sign_up.id, "sign-up code delivered");
        Ok(PrepareSignUpVerificationResponse {
            sign_up: Some(self.shown(&sign_up)),
        })
    }

    async fn attempt(
        &self,
        req: AttemptSignUpVerificationRequest,
        activity: SessionActivity,
    ) -> Result<AttemptSignUpVerificationResponse, ApiError> {
        let id = convert::sign_up_id("id", &req.id)?;
        let channel = convert::code_channel("strategy", req.strategy)?;
        let code =
            VerificationCode::parse(&req.code).map_err(|v| DomainError::from(v.nested("code")))?;
        let (key, policy, now) = (
            self.state.codes.key.clone(),
            self.state.codes.policy,
            self.state.clock.now(),
        );
        let mut outcome = AttemptOutcome::NotPrepared;
        let sign_up = self
            .state
            .sign_ups
            .update_sign_up(
                &id,
                Box::new(|s| {
                    outcome = s.attempt_verification(channel, &code, &key, &policy, now)?;
                    Ok(())
                }),
            )
            .await?;
        outcome.into_result()?;
        let (sign_up, completion) = self.finish(sign_up, activity).await?;
        Ok(AttemptSignUpVerificationResponse {
            sign_up: Some(sign_up),
            completion,
        })
    }
}

#[tonic::async_trait]
impl SignUpService for SignUps {
    async fn create_sign_up(
        &self,
        request: Request<CreateSignUpRequest>,
    ) -> Result<Response<CreateSignUpResponse>, Status> {
        let activity = activity::of(&self.state.client_ip, &request);
        respond(self.create(request.into_inner(), activity).await)
    }

    async fn get_sign_up(
        &self,
        request: Request<GetSignUpRequest>,
    ) -> Result<Response<GetSignUpResponse>, Status> {
        let id = request.into_inner().id;
        respond(
            async {
                let id = convert::sign_up_id("id", &id)?;
                let sign_up = self
                    .state
                    .sign_ups
                    .get_sign_up(&id)
                    .await?
                    .ok_or_else(|| DomainError::not_found("sign-up", id.as_str()))?;
                Ok(GetSignUpResponse {
                    sign_up: Some(self.shown(&sign_up)),
                })
            }
            .await,
        )
    }

    async fn update_sign_up(
        &self,
        request: Request<UpdateSignUpRequest>,
    ) -> Result<Response<UpdateSignUpResponse>, Status> {
        let activity = activity::of(&self.state.client_ip, &request);
        respond(self.update(request.into_inner(), activity).await)
    }

    async fn prepare_sign_up_verification(
        &self,
        request: Request<PrepareSignUpVerificationRequest>,
    ) -> Result<Response<PrepareSignUpVerificationResponse>, Status> {
        respond(self.prepare(request.into_inner()).await)
    }

    async fn attempt_sign_up_verification(
        &self,
        request: Request<AttemptSignUpVerificationRequest>,
    ) -> Result<Response<AttemptSignUpVerificationResponse>, Status> {
        let activity = activity::of(&self.state.client_ip, &request);
        respond(self.attempt(request.into_inner(), activity).await)
    }
}
