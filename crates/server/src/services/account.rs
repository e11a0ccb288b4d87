//! `roster.v1.AccountService` (Frontend API): the signed-in user's own
//! account. Every handler starts from [`frontend::caller`]: the acting
//! user is the session's, never a field of the request.

use roster_domain::{
    Channel, DomainError, Email, IdentificationId, Lockout, MetadataKind, Password, Phone,
    SessionStatus, SignOut, User, UserId, reason,
};
use roster_proto::convert;
use roster_proto::v1::account_service_server::AccountService;
use roster_proto::v1::account_service_set_profile_image_request::Part;
use roster_proto::v1::{
    self, Account, AccountServiceAttemptEmailAddressVerificationRequest,
    AccountServiceAttemptEmailAddressVerificationResponse,
    AccountServiceAttemptPhoneNumberVerificationRequest,
    AccountServiceAttemptPhoneNumberVerificationResponse, AccountServiceCreateEmailAddressRequest,
    AccountServiceCreateEmailAddressResponse, AccountServiceCreatePhoneNumberRequest,
    AccountServiceCreatePhoneNumberResponse, AccountServiceDeleteEmailAddressRequest,
    AccountServiceDeleteEmailAddressResponse, AccountServiceDeletePhoneNumberRequest,
    AccountServiceDeletePhoneNumberResponse, AccountServiceDeleteProfileImageRequest,
    AccountServiceDeleteProfileImageResponse, AccountServiceListSessionsRequest,
    AccountServiceListSessionsResponse, AccountServicePrepareEmailAddressVerificationRequest,
    AccountServicePrepareEmailAddressVerificationResponse,
    AccountServicePreparePhoneNumberVerificationRequest,
    AccountServicePreparePhoneNumberVerificationResponse, AccountServiceRevokeSessionRequest,
    AccountServiceRevokeSessionResponse, AccountServiceSetProfileImageRequest,
    AccountServiceSetProfileImageResponse, ChangePasswordRequest, ChangePasswordResponse,
    DeleteAccountRequest, DeleteAccountResponse, GetAccountRequest, GetAccountResponse,
    GetTokenRequest, GetTokenResponse, SignOutRequest, SignOutResponse, UpdateAccountRequest,
    UpdateAccountResponse, UpdateUnsafeMetadataRequest, UpdateUnsafeMetadataResponse,
};
use roster_storage::SessionQuery;
use tonic::{Request, Response, Status, Streaming};

use super::respond;
use super::sessions::mint;
use super::users::MAX_CANDIDATE_BYTES;
use super::verification;
use crate::AppState;
use crate::error::ApiError;
use crate::frontend::caller;
use crate::images;

/// The AccountService implementation.
#[derive(Clone, Debug)]
pub struct Accounts {
    state: AppState,
}

impl Accounts {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn user(&self, id: &UserId) -> Result<User, ApiError> {
        Ok(self
            .state
            .users
            .get_user(id)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id.as_str()))?)
    }

    async fn get(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<GetAccountResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        Ok(GetAccountResponse {
            account: Some(convert::account(
                self.user(&session.user_id).await?,
                self.state.images.public_url(),
            )),
        })
    }

    async fn update(
        &self,
        request: Request<UpdateAccountRequest>,
    ) -> Result<UpdateAccountResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let update = convert::update_account(request.into_inner())?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(
                &session.user_id,
                Box::new(move |r| r.user.apply_update(update, now)),
            )
            .await?;
        Ok(UpdateAccountResponse {
            account: Some(convert::account(user, self.state.images.public_url())),
        })
    }

    async fn update_unsafe(
        &self,
        request: Request<UpdateUnsafeMetadataRequest>,
    ) -> Result<UpdateUnsafeMetadataResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let patch = convert::update_unsafe_metadata(request.into_inner())?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(
                &session.user_id,
                Box::new(move |r| {
                    r.user
                        .merge_metadata(vec![(MetadataKind::Unsafe, patch)], now)
                }),
            )
            .await?;
        Ok(UpdateUnsafeMetadataResponse {
            account: Some(convert::account(user, self.state.images.public_url())),
        })
    }

    async fn list_sessions(
        &self,
        request: Request<AccountServiceListSessionsRequest>,
    ) -> Result<AccountServiceListSessionsResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let now = self.state.clock.now();
        let query = SessionQuery {
            user_id: session.user_id,
            status: Some(SessionStatus::Active),
            now,
            before: None,
            limit: roster_storage::query::MAX_PAGE_SIZE,
        };
        let sessions = self.state.sessions.list_sessions(&query).await?;
        Ok(AccountServiceListSessionsResponse {
            sessions: sessions.iter().map(|s| convert::session(s, now)).collect(),
        })
    }

    async fn revoke_session(
        &self,
        request: Request<AccountServiceRevokeSessionRequest>,
    ) -> Result<AccountServiceRevokeSessionResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let id = convert::session_id("id", &request.get_ref().id)?;
        let owner = session.user_id.clone();
        let now = self.state.clock.now();
        // Another user's session is not found, exactly like a missing one.
        let target = id.clone();
        let revoked = self
            .state
            .sessions
            .update_session(
                &id,
                Box::new(move |s| {
                    if s.user_id != owner {
                        return Err(DomainError::not_found("session", target.as_str()));
                    }
                    s.revoke(now)
                }),
            )
            .await?;
        tracing::info!(session_id = %id, user_id = %revoked.user_id, "session revoked by its user");
        Ok(AccountServiceRevokeSessionResponse {
            session: Some(convert::session(&revoked, now)),
        })
    }

    /// `id`, if it is one of `owner`'s email addresses or phone numbers;
    /// anyone else's is not found, as if it did not exist.
    async fn own(
        &self,
        owner: &UserId,
        field: &str,
        id: &str,
        channel: Channel,
    ) -> Result<IdentificationId, ApiError> {
        let id = convert::identification_id(field, id)?;
        let holder = self.state.users.find_identification_owner(&id).await?;
        if holder.as_ref() != Some(owner) {
            return Err(DomainError::not_found(channel.what(), id.as_str()).into());
        }
        Ok(id)
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<ChangePasswordResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let req = request.into_inner();
        let new = Password::parse(&req.new_password)
            .map_err(|v| DomainError::from(v.nested("new_password")))?;
        let now = self.state.clock.now();
        let record = self
            .state
            .users
            .get_record(&session.user_id)
            .await?
            .ok_or_else(|| DomainError::not_found("user", session.user_id.as_str()))?;
        let current = record.password_hash().cloned();
        if let Some(hash) = current.clone() {
            // Admitted and counted as failed before it is checked, as a
            // sign-in attempt is: the lockout bounds guesses here too.
            let policy = self.state.lockout;
            self.state
                .users
                .update_user(
                    &session.user_id,
                    Box::new(move |r| r.admit_attempt(&policy, now)),
                )
                .await?;
            let candidate = req.current_password.clone();
            let right = !candidate.is_empty()
                && candidate.len() <= MAX_CANDIDATE_BYTES
                && self.state.hasher.verify(hash, candidate).await?;
            if !right {
                return Err(DomainError::invalid(
                    "current_password",
                    reason::FORM_PASSWORD_INCORRECT,
                    "the current password is incorrect",
                )
                .into());
            }
        }
        let new_hash = self.state.hasher.hash(new).await?;
        let (keep, own_session) = (req.keep_other_sessions, session.id.clone());
        let user = self
            .state
            .users
            .update_user(
                &session.user_id,
                Box::new(move |r| {
                    // The password checked must still be the one stored.
                    if r.password_hash() != current.as_ref() {
                        return Err(DomainError::precondition(
                            reason::PASSWORD_CHANGED,
                            "the password changed meanwhile; try again",
                        ));
                    }
                    r.set_password(Some(new_hash), now);
                    r.lockout = Lockout::default();
                    if !keep {
                        r.sign_out = Some(SignOut {
                            except: Some(own_session),
                        });
                    }
                    Ok(())
                }),
            )
            .await?;
        tracing::info!(user_id = %user.id, kept_sessions = keep, "password changed by its user");
        Ok(ChangePasswordResponse {
            account: Some(convert::account(user, self.state.images.public_url())),
        })
    }

    async fn create_email(
        &self,
        request: Request<AccountServiceCreateEmailAddressRequest>,
    ) -> Result<AccountServiceCreateEmailAddressResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let email = Email::parse(&request.get_ref().email_address)
            .map_err(|v| DomainError::from(v.nested("email_address")))?;
        let now = self.state.clock.now();
        let mut created = None;
        let user = self
            .state
            .users
            .update_user(
                &session.user_id,
                Box::new(|r| {
                    created = Some(r.user.add_email(email, false, false, now)?);
                    Ok(())
                }),
            )
            .await?;
        let id = created.ok_or(ApiError::Internal("created email address has no id"))?;
        let email = user
            .email(&id)
            .ok_or(ApiError::Internal("created email address vanished"))?;
        Ok(AccountServiceCreateEmailAddressResponse {
            email_address: Some(convert::email_address(&user, email)),
        })
    }

    async fn create_phone(
        &self,
        request: Request<AccountServiceCreatePhoneNumberRequest>,
    ) -> Result<AccountServiceCreatePhoneNumberResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let phone = Phone::parse(&request.get_ref().phone_number)
            .map_err(|v| DomainError::from(v.nested("phone_number")))?;
        let now = self.state.clock.now();
        let mut created = None;
        let user = self
            .state
            .users
            .update_user(
                &session.user_id,
                Box::new(|r| {
                    created = Some(r.user.add_phone(phone, false, false, false, now)?);
                    Ok(())
                }),
            )
            .await?;
        let id = created.ok_or(ApiError::Internal("created phone number has no id"))?;
        let phone = user
            .phone(&id)
            .ok_or(ApiError::Internal("created phone number vanished"))?;
        Ok(AccountServiceCreatePhoneNumberResponse {
            phone_number: Some(convert::phone_number(&user, phone)),
        })
    }

    /// Deletes one of the caller's email addresses or phone numbers.
    async fn delete_identifier<T>(
        &self,
        request: &Request<T>,
        id: &str,
        channel: Channel,
    ) -> Result<Account, ApiError> {
        let session = caller(&self.state, request, false).await?;
        let id = self.own(&session.user_id, "id", id, channel).await?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(
                &session.user_id,
                Box::new(move |r| match channel {
                    Channel::Email => r.user.remove_email(&id, now),
                    Channel::Phone => r.user.remove_phone(&id, now),
                }),
            )
            .await?;
        Ok(convert::account(user, self.state.images.public_url()))
    }

    /// Sends a code to one of the caller's identifiers; returns its user.
    async fn prepare<T>(
        &self,
        request: &Request<T>,
        id: &str,
        channel: Channel,
    ) -> Result<(User, IdentificationId), ApiError> {
        let session = caller(&self.state, request, false).await?;
        let id = self.own(&session.user_id, "id", id, channel).await?;
        // Frontend callers never get the code back: it must be delivered.
        let (user, _) = verification::prepare(&self.state, &id, channel, false).await?;
        Ok((user, id))
    }

    /// Checks a code sent to one of the caller's identifiers.
    async fn attempt<T>(
        &self,
        request: &Request<T>,
        id: &str,
        code: &str,
        channel: Channel,
    ) -> Result<(User, IdentificationId), ApiError> {
        let session = caller(&self.state, request, false).await?;
        let id = self.own(&session.user_id, "id", id, channel).await?;
        let user = verification::attempt(&self.state, &id, code, channel).await?;
        Ok((user, id))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<DeleteAccountResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        if !self.state.self_delete {
            return Err(DomainError::PermissionDenied {
                reason: reason::SELF_DELETE_DISABLED,
                message: "this server does not let users delete their own accounts".to_owned(),
            }
            .into());
        }
        let deleted = self.state.users.delete_user(&session.user_id).await?;
        if let Some(image) = deleted.as_ref().and_then(|u| u.image.as_ref()) {
            self.state.images.remove(image).await;
        }
        tracing::info!(user_id = %session.user_id, "user deleted their account");
        Ok(DeleteAccountResponse {})
    }

    async fn set_profile_image(
        &self,
        request: Request<Streaming<AccountServiceSetProfileImageRequest>>,
    ) -> Result<AccountServiceSetProfileImageResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let upload = images::receive(&self.state.images, request.into_inner(), |m| {
            Ok(match m.part {
                Some(Part::Upload(upload)) => images::Part::Upload {
                    file_name: upload.file_name,
                },
                Some(Part::Chunk(chunk)) => images::Part::Chunk(chunk),
                None => images::Part::Empty,
            })
        })
        .await?;
        let user = self
            .state
            .images
            .set(&self.state, &session.user_id, upload)
            .await?;
        Ok(AccountServiceSetProfileImageResponse {
            account: Some(convert::account(user, self.state.images.public_url())),
        })
    }

    async fn delete_profile_image(
        &self,
        request: Request<AccountServiceDeleteProfileImageRequest>,
    ) -> Result<AccountServiceDeleteProfileImageResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let user = self
            .state
            .images
            .delete(&self.state, &session.user_id)
            .await?;
        Ok(AccountServiceDeleteProfileImageResponse {
            account: Some(convert::account(user, self.state.images.public_url())),
        })
    }

    async fn sign_out(
        &self,
        request: Request<SignOutRequest>,
    ) -> Result<SignOutResponse, ApiError> {
        let session = caller(&self.state, &request, false).await?;
        let now = self.state.clock.now();
        let ended = self
            .state
            .sessions
            .update_session(&session.id, Box::new(move |s| s.end(now)))
            .await?;
        tracing::info!(session_id = %ended.id, user_id = %ended.user_id, "signed out");
        Ok(SignOutResponse {
            session: Some(convert::session(&ended, now)),
        })
    }

    async fn token(&self, request: Request<GetTokenRequest>) -> Result<GetTokenResponse, ApiError> {
        let session = caller(&self.state, &request, true).await?;
        let origin = crate::activity::origin(request.metadata());
        let jwt = mint(
            &self.state,
            &session.id,
            None,
            &request.get_ref().template,
            origin.as_deref(),
        )
        .await?;
        Ok(GetTokenResponse { jwt })
    }
}

#[tonic::async_trait]
impl AccountService for Accounts {
    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        respond(self.get(request).await)
    }

    async fn update_account(
        &self,
        request: Request<UpdateAccountRequest>,
    ) -> Result<Response<UpdateAccountResponse>, Status> {
        respond(self.update(request).await)
    }

    async fn update_unsafe_metadata(
        &self,
        request: Request<UpdateUnsafeMetadataRequest>,
    ) -> Result<Response<UpdateUnsafeMetadataResponse>, Status> {
        respond(self.update_unsafe(request).await)
    }

    async fn list_sessions(
        &self,
        request: Request<AccountServiceListSessionsRequest>,
    ) -> Result<Response<AccountServiceListSessionsResponse>, Status> {
        respond(Accounts::list_sessions(self, request).await)
    }

    async fn revoke_session(
        &self,
        request: Request<AccountServiceRevokeSessionRequest>,
    ) -> Result<Response<AccountServiceRevokeSessionResponse>, Status> {
        respond(Accounts::revoke_session(self, request).await)
    }

    async fn get_token(
        &self,
        request: Request<GetTokenRequest>,
    ) -> Result<Response<GetTokenResponse>, Status> {
        respond(self.token(request).await)
    }

    async fn sign_out(
        &self,
        request: Request<SignOutRequest>,
    ) -> Result<Response<SignOutResponse>, Status> {
        respond(Accounts::sign_out(self, request).await)
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        respond(Accounts::change_password(self, request).await)
    }

    async fn create_email_address(
        &self,
        request: Request<AccountServiceCreateEmailAddressRequest>,
    ) -> Result<Response<AccountServiceCreateEmailAddressResponse>, Status> {
        respond(self.create_email(request).await)
    }

    async fn delete_email_address(
        &self,
        request: Request<AccountServiceDeleteEmailAddressRequest>,
    ) -> Result<Response<AccountServiceDeleteEmailAddressResponse>, Status> {
        let id = request.get_ref().id.clone();
        let account = self.delete_identifier(&request, &id, Channel::Email).await;
        respond(account.map(|a| AccountServiceDeleteEmailAddressResponse { account: Some(a) }))
    }

    async fn prepare_email_address_verification(
        &self,
        request: Request<AccountServicePrepareEmailAddressVerificationRequest>,
    ) -> Result<Response<AccountServicePrepareEmailAddressVerificationResponse>, Status> {
        let id = request.get_ref().id.clone();
        let result = self.prepare(&request, &id, Channel::Email).await;
        respond(result.and_then(|(user, id)| {
            Ok(AccountServicePrepareEmailAddressVerificationResponse {
                email_address: Some(email_view(&user, &id)?),
            })
        }))
    }

    async fn attempt_email_address_verification(
        &self,
        request: Request<AccountServiceAttemptEmailAddressVerificationRequest>,
    ) -> Result<Response<AccountServiceAttemptEmailAddressVerificationResponse>, Status> {
        let (id, code) = (request.get_ref().id.clone(), request.get_ref().code.clone());
        let result = self.attempt(&request, &id, &code, Channel::Email).await;
        respond(result.and_then(|(user, id)| {
            Ok(AccountServiceAttemptEmailAddressVerificationResponse {
                email_address: Some(email_view(&user, &id)?),
            })
        }))
    }

    async fn create_phone_number(
        &self,
        request: Request<AccountServiceCreatePhoneNumberRequest>,
    ) -> Result<Response<AccountServiceCreatePhoneNumberResponse>, Status> {
        respond(self.create_phone(request).await)
    }

    async fn delete_phone_number(
        &self,
        request: Request<AccountServiceDeletePhoneNumberRequest>,
    ) -> Result<Response<AccountServiceDeletePhoneNumberResponse>, Status> {
        let id = request.get_ref().id.clone();
        let account = self.delete_identifier(&request, &id, Channel::Phone).await;
        respond(account.map(|a| AccountServiceDeletePhoneNumberResponse { account: Some(a) }))
    }

    async fn prepare_phone_number_verification(
        &self,
        request: Request<AccountServicePreparePhoneNumberVerificationRequest>,
    ) -> Result<Response<AccountServicePreparePhoneNumberVerificationResponse>, Status> {
        let id = request.get_ref().id.clone();
        let result = self.prepare(&request, &id, Channel::Phone).await;
        respond(result.and_then(|(user, id)| {
            Ok(AccountServicePreparePhoneNumberVerificationResponse {
                phone_number: Some(phone_view(&user, &id)?),
            })
        }))
    }

    async fn attempt_phone_number_verification(
        &self,
        request: Request<AccountServiceAttemptPhoneNumberVerificationRequest>,
    ) -> Result<Response<AccountServiceAttemptPhoneNumberVerificationResponse>, Status> {
        let (id, code) = (request.get_ref().id.clone(), request.get_ref().code.clone());
        let result = self.attempt(&request, &id, &code, Channel::Phone).await;
        respond(result.and_then(|(user, id)| {
            Ok(AccountServiceAttemptPhoneNumberVerificationResponse {
                phone_number: Some(phone_view(&user, &id)?),
            })
        }))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        respond(Accounts::delete_account(self, request).await)
    }

    async fn set_profile_image(
        &self,
        request: Request<Streaming<AccountServiceSetProfileImageRequest>>,
    ) -> Result<Response<AccountServiceSetProfileImageResponse>, Status> {
        respond(Accounts::set_profile_image(self, request).await)
    }

    async fn delete_profile_image(
        &self,
        request: Request<AccountServiceDeleteProfileImageRequest>,
    ) -> Result<Response<AccountServiceDeleteProfileImageResponse>, Status> {
        respond(Accounts::delete_profile_image(self, request).await)
    }
}

fn email_view(user: &User, id: &IdentificationId) -> Result<v1::EmailAddress, ApiError> {
    let email = user
        .email(id)
        .ok_or_else(|| DomainError::not_found("email address", id.as_str()))?;
    Ok(convert::email_address(user, email))
}

fn phone_view(user: &User, id: &IdentificationId) -> Result<v1::PhoneNumber, ApiError> {
    let phone = user
        .phone(id)
        .ok_or_else(|| DomainError::not_found("phone number", id.as_str()))?;
    Ok(convert::phone_number(user, phone))
}
