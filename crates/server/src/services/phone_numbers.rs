//! `roster.v1.PhoneNumberService`.

use roster_domain::{DomainError, User};
use roster_proto::convert;
use roster_proto::v1::phone_number_service_server::PhoneNumberService;
use roster_proto::v1::{
    AttemptPhoneNumberVerificationRequest, AttemptPhoneNumberVerificationResponse,
    CreatePhoneNumberRequest, CreatePhoneNumberResponse, DeletePhoneNumberRequest,
    DeletePhoneNumberResponse, GetPhoneNumberRequest, GetPhoneNumberResponse, PhoneNumber,
    PreparePhoneNumberVerificationRequest, PreparePhoneNumberVerificationResponse,
    UpdatePhoneNumberRequest, UpdatePhoneNumberResponse,
};
use tonic::{Request, Response, Status};

use super::verification::{self, Channel};
use super::{owner_id, owner_of, respond};
use crate::AppState;
use crate::error::ApiError;

const WHAT: &str = "phone number";

/// The PhoneNumberService implementation.
#[derive(Clone, Debug)]
pub struct PhoneNumbers {
    state: AppState,
}

fn shown(user: &User, id: &roster_domain::IdentificationId) -> Result<PhoneNumber, ApiError> {
    let phone = user
        .phone(id)
        .ok_or_else(|| DomainError::not_found(WHAT, id.as_str()))?;
    Ok(convert::phone_number(user, phone))
}

impl PhoneNumbers {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn create(
        &self,
        req: CreatePhoneNumberRequest,
    ) -> Result<CreatePhoneNumberResponse, ApiError> {
        let (user_id, phone) = convert::create_phone_number(&req)?;
        let now = self.state.clock.now();
        let mut created = None;
        let user = self
            .state
            .users
            .update_user(
                &user_id,
                Box::new(|r| {
                    created = Some(r.user.add_phone(
                        phone,
                        req.verified,
                        req.primary,
                        req.reserved_for_second_factor,
                        now,
                    )?);
                    Ok(())
                }),
            )
            .await?;
        let id = created.ok_or(ApiError::Internal("created phone number has no id"))?;
        Ok(CreatePhoneNumberResponse {
            phone_number: Some(shown(&user, &id)?),
        })
    }

    async fn get(&self, req: GetPhoneNumberRequest) -> Result<GetPhoneNumberResponse, ApiError> {
        let id = convert::identification_id("id", &req.id)?;
        let user = owner_of(&self.state, &id, WHAT).await?;
        Ok(GetPhoneNumberResponse {
            phone_number: Some(shown(&user, &id)?),
        })
    }

    async fn update(
        &self,
        req: UpdatePhoneNumberRequest,
    ) -> Result<UpdatePhoneNumberResponse, ApiError> {
        let (id, paths) = convert::identifier_update(
            &req.id,
            req.update_mask.as_ref(),
            &["verified", "primary", "reserved_for_second_factor"],
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
                    let has = |p: &str| paths.iter().any(|x| x == p);
                    // Verification first, so one call can verify and then
                    // promote or reserve; releasing comes before unverifying.
                    if has("verified") && req.verified {
                        r.user.set_phone_verified(&target, true, now)?;
                    }
                    if has("reserved_for_second_factor") {
                        r.user
                            .set_phone_reserved(&target, req.reserved_for_second_factor, now)?;
                    }
                    if has("primary") {
                        r.user.set_phone_primary_flag(&target, req.primary, now)?;
                    }
                    if has("verified") && !req.verified {
                        r.user.set_phone_verified(&target, false, now)?;
                    }
                    Ok(())
                }),
            )
            .await?;
        Ok(UpdatePhoneNumberResponse {
            phone_number: Some(shown(&user, &id)?),
        })
    }

    async fn prepare(
        &self,
        req: PreparePhoneNumberVerificationRequest,
    ) -> Result<PreparePhoneNumberVerificationResponse, ApiError> {
        let id = verification::target(&req.id)?;
        let (user, code) =
            verification::prepare(&self.state, &id, Channel::Phone, req.return_code).await?;
        Ok(PreparePhoneNumberVerificationResponse {
            phone_number: Some(shown(&user, &id)?),
            code: code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        })
    }

    async fn attempt(
        &self,
        req: AttemptPhoneNumberVerificationRequest,
    ) -> Result<AttemptPhoneNumberVerificationResponse, ApiError> {
        let id = verification::target(&req.id)?;
        let user = verification::attempt(&self.state, &id, &req.code, Channel::Phone).await?;
        Ok(AttemptPhoneNumberVerificationResponse {
            phone_number: Some(shown(&user, &id)?),
        })
    }

    async fn delete(
        &self,
        req: DeletePhoneNumberRequest,
    ) -> Result<DeletePhoneNumberResponse, ApiError> {
        let id = convert::identification_id("id", &req.id)?;
        let owner = owner_id(&self.state, &id, WHAT).await?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(&owner, Box::new(move |r| r.user.remove_phone(&id, now)))
            .await?;
        Ok(DeletePhoneNumberResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }
}

#[tonic::async_trait]
impl PhoneNumberService for PhoneNumbers {
    async fn create_phone_number(
        &self,
        request: Request<CreatePhoneNumberRequest>,
    ) -> Result<Response<CreatePhoneNumberResponse>, Status> {
        respond(self.create(request.into_inner()).await)
    }

    async fn get_phone_number(
        &self,
        request: Request<GetPhoneNumberRequest>,
    ) -> Result<Response<GetPhoneNumberResponse>, Status> {
        respond(self.get(request.into_inner()).await)
    }

    async fn update_phone_number(
        &self,
        request: Request<UpdatePhoneNumberRequest>,
    ) -> Result<Response<UpdatePhoneNumberResponse>, Status> {
        respond(self.update(request.into_inner()).await)
    }

    async fn delete_phone_number(
        &self,
        request: Request<DeletePhoneNumberRequest>,
    ) -> Result<Response<DeletePhoneNumberResponse>, Status> {
        respond(self.delete(request.into_inner()).await)
    }

    async fn prepare_phone_number_verification(
        &self,
        request: Request<PreparePhoneNumberVerificationRequest>,
    ) -> Result<Response<PreparePhoneNumberVerificationResponse>, Status> {
        respond(self.prepare(request.into_inner()).await)
    }

    async fn attempt_phone_number_verification(
        &self,
        request: Request<AttemptPhoneNumberVerificationRequest>,
    ) -> Result<Response<AttemptPhoneNumberVerificationResponse>, Status> {
        respond(self.attempt(request.into_inner()).await)
    }
}
