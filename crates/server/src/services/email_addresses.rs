//! `roster.v1.EmailAddressService`.

use roster_domain::{DomainError, User};
use roster_proto::convert;
use roster_proto::v1::email_address_service_server::EmailAddressService;
use roster_proto::v1::{
    AttemptEmailAddressVerificationRequest, AttemptEmailAddressVerificationResponse,
    CreateEmailAddressRequest, CreateEmailAddressResponse, DeleteEmailAddressRequest,
    DeleteEmailAddressResponse, EmailAddress, GetEmailAddressRequest, GetEmailAddressResponse,
    PrepareEmailAddressVerificationRequest, PrepareEmailAddressVerificationResponse,
    UpdateEmailAddressRequest, UpdateEmailAddressResponse,
};
use tonic::{Request, Response, Status};

use super::verification::{self, Channel};
use super::{owner_id, owner_of, respond};
use crate::AppState;
use crate::error::ApiError;

const WHAT: &str = "email address";

/// The EmailAddressService implementation.
#[derive(Clone, Debug)]
pub struct EmailAddresses {
    state: AppState,
}

fn shown(user: &User, id: &roster_domain::IdentificationId) -> Result<EmailAddress, ApiError> {
    let email = user
        .email(id)
        .ok_or_else(|| DomainError::not_found(WHAT, id.as_str()))?;
    Ok(convert::email_address(user, email))
}

impl EmailAddresses {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn create(
        &self,
        req: CreateEmailAddressRequest,
    ) -> Result<CreateEmailAddressResponse, ApiError> {
        let (user_id, email) = convert::create_email_address(&req)?;
        let now = self.state.clock.now();
        let mut created = None;
        let user = self
            .state
            .users
            .update_user(
                &user_id,
                Box::new(|r| {
                    created = Some(r.user.add_email(email, req.verified, req.primary, now)?);
                    Ok(())
                }),
            )
            .await?;
        let id = created.ok_or(ApiError::Internal("created email address has no id"))?;
        Ok(CreateEmailAddressResponse {
            email_address: Some(shown(&user, &id)?),
        })
    }

    async fn get(&self, req: GetEmailAddressRequest) -> Result<GetEmailAddressResponse, ApiError> {
        let id = convert::identification_id("id", &req.id)?;
        let user = owner_of(&self.state, &id, WHAT).await?;
        Ok(GetEmailAddressResponse {
            email_address: Some(shown(&user, &id)?),
        })
    }

    async fn update(
        &self,
        req: UpdateEmailAddressRequest,
    ) -> Result<UpdateEmailAddressResponse, ApiError> {
        let (id, paths) = convert::identifier_update(
            &req.id,
            req.update_mask.as_ref(),
            &["verified", "primary"],
        )?;
        let owner = owner_id(&self.state, &id, WHAT).await?;
        let now = self.state.clock.now();
        let target = id.clone();
        let user = self
            .state
            .users
            .update_user(
                &owner,
                Box::new(move |r| {
                    // Verification first, so one call can verify and promote.
                    if paths.iter().any(|p| p == "verified") {
                        r.user.set_email_verified(&target, req.verified, now)?;
                    }
                    if paths.iter().any(|p| p == "primary") {
                        r.user.set_email_primary_flag(&target, req.primary, now)?;
                    }
                    Ok(())
                }),
            )
            .await?;
        Ok(UpdateEmailAddressResponse {
            email_address: Some(shown(&user, &id)?),
        })
    }

    async fn prepare(
        &self,
        req: PrepareEmailAddressVerificationRequest,
    ) -> Result<PrepareEmailAddressVerificationResponse, ApiError> {
        let id = verification::target(&req.id)?;
        let (user, code) =
            verification::prepare(&self.state, &id, Channel::Email, req.return_code).await?;
        Ok(PrepareEmailAddressVerificationResponse {
            email_address: Some(shown(&user, &id)?),
            code: code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        })
    }

    async fn attempt(
        &self,
        req: AttemptEmailAddressVerificationRequest,
    ) -> Result<AttemptEmailAddressVerificationResponse, ApiError> {
        let id = verification::target(&req.id)?;
        let user = verification::attempt(&self.state, &id, &req.code, Channel::Email).await?;
        Ok(AttemptEmailAddressVerificationResponse {
            email_address: Some(shown(&user, &id)?),
        })
    }

    async fn delete(
        &self,
        req: DeleteEmailAddressRequest,
    ) -> Result<DeleteEmailAddressResponse, ApiError> {
        let id = convert::identification_id("id", &req.id)?;
        let owner = owner_id(&self.state, &id, WHAT).await?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(&owner, Box::new(move |r| r.user.remove_email(&id, now)))
            .await?;
        Ok(DeleteEmailAddressResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }
}

#[tonic::async_trait]
impl EmailAddressService for EmailAddresses {
    async fn create_email_address(
        &self,
        request: Request<CreateEmailAddressRequest>,
    ) -> Result<Response<CreateEmailAddressResponse>, Status> {
        respond(self.create(request.into_inner()).await)
    }

    async fn get_email_address(
        &self,
        request: Request<GetEmailAddressRequest>,
    ) -> Result<Response<GetEmailAddressResponse>, Status> {
        respond(self.get(request.into_inner()).await)
    }

    async fn update_email_address(
        &self,
        request: Request<UpdateEmailAddressRequest>,
    ) -> Result<Response<UpdateEmailAddressResponse>, Status> {
        respond(self.update(request.into_inner()).await)
    }

    async fn delete_email_address(
        &self,
        request: Request<DeleteEmailAddressRequest>,
    ) -> Result<Response<DeleteEmailAddressResponse>, Status> {
        respond(self.delete(request.into_inner()).await)
    }

    async fn prepare_email_address_verification(
        &self,
        request: Request<PrepareEmailAddressVerificationRequest>,
    ) -> Result<Response<PrepareEmailAddressVerificationResponse>, Status> {
        respond(self.prepare(request.into_inner()).await)
    }

    async fn attempt_email_address_verification(
        &self,
        request: Request<AttemptEmailAddressVerificationRequest>,
    ) -> Result<Response<AttemptEmailAddressVerificationResponse>, Status> {
        respond(self.attempt(request.into_inner()).await)
    }
}
