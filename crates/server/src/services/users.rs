//! `roster.v1.UserService`.

use roster_domain::{DomainError, User, UserRecord, reason};
use roster_proto::convert;
use roster_proto::v1::set_profile_image_request::Part;
use roster_proto::v1::user_service_server::UserService;
use roster_proto::v1::{
    BanUserRequest, BanUserResponse, CountUsersRequest, CountUsersResponse, CreateUserRequest,
    CreateUserResponse, DeleteProfileImageRequest, DeleteProfileImageResponse, DeleteUserRequest,
    DeleteUserResponse, GetUserRequest, GetUserResponse, ListUsersRequest, ListUsersResponse,
    LockUserRequest, LockUserResponse, SetProfileImageRequest, SetProfileImageResponse,
    UnbanUserRequest, UnbanUserResponse, UnlockUserRequest, UnlockUserResponse,
    UpdateUserMetadataRequest, UpdateUserMetadataResponse, UpdateUserRequest, UpdateUserResponse,
    VerifyPasswordRequest, VerifyPasswordResponse,
};
use roster_storage::{ListQuery, list_page};
use tonic::{Request, Response, Status, Streaming};

use super::respond;
use crate::AppState;
use crate::error::ApiError;
use crate::images;

/// Longest candidate VerifyPassword hashes; longer ones cannot match any
/// password Roster accepts, and bounding them bounds hashing work.
pub(crate) const MAX_CANDIDATE_BYTES: usize = 1024;

/// The UserService implementation.
#[derive(Clone, Debug)]
pub struct Users {
    state: AppState,
}

impl Users {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn create(&self, req: CreateUserRequest) -> Result<CreateUserResponse, ApiError> {
        let (new, password) = convert::create_user(req)?;
        let user = User::create(new, self.state.clock.now())?;
        let hash = match password {
            Some(p) => Some(self.state.hasher.hash(p).await?),
            None => None,
        };
        let record = UserRecord::new(user, hash);
        self.state.users.insert_user(&record).await?;
        tracing::info!(user_id = %record.user.id, "user created");
        Ok(CreateUserResponse {
            user: Some(convert::user(record.user, self.state.images.public_url())),
        })
    }

    async fn get(&self, req: GetUserRequest) -> Result<GetUserResponse, ApiError> {
        let id = convert::user_id("id", &req.id)?;
        let user = self
            .state
            .users
            .get_user(&id)
            .await?
            .ok_or_else(|| DomainError::not_found("user", req.id))?;
        Ok(GetUserResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }

    async fn list(&self, req: ListUsersRequest) -> Result<ListUsersResponse, ApiError> {
        let filter = convert::user_filter(req.filter)?;
        let order = convert::order_by(&req.order_by)?;
        let query = ListQuery::new(filter, order, req.page_size, &req.page_token)
            .map_err(DomainError::from)?;
        let page = list_page(self.state.users.as_ref(), query).await?;
        Ok(ListUsersResponse {
            users: page
                .users
                .into_iter()
                .map(|u| convert::user(u, self.state.images.public_url()))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    async fn count(&self, req: CountUsersRequest) -> Result<CountUsersResponse, ApiError> {
        let filter = convert::user_filter(req.filter)?;
        let count = self.state.users.count_users(&filter).await?;
        Ok(CountUsersResponse {
            total_count: i64::try_from(count).unwrap_or(i64::MAX),
        })
    }

    async fn update(&self, req: UpdateUserRequest) -> Result<UpdateUserResponse, ApiError> {
        let keep_sessions = req.keep_sessions;
        let (id, update, password) = convert::update_user(req)?;
        let hash = match password {
            Some(Some(p)) => Some(Some(self.state.hasher.hash(p).await?)),
            Some(None) => Some(None),
            None => None,
        };
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(
                &id,
                Box::new(move |record| {
                    record.user.apply_update(update, now)?;
                    if let Some(hash) = hash {
                        record.set_password(hash, now);
                        if !keep_sessions {
                            record.sign_out = Some(roster_domain::SignOut::default());
                        }
                    }
                    Ok(())
                }),
            )
            .await?;
        Ok(UpdateUserResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }

    async fn delete(&self, req: DeleteUserRequest) -> Result<DeleteUserResponse, ApiError> {
        let id = convert::user_id("id", &req.id)?;
        let user = self
            .state
            .users
            .delete_user(&id)
            .await?
            .ok_or_else(|| DomainError::not_found("user", req.id))?;
        if let Some(image) = &user.image {
            self.state.images.remove(image).await;
        }
        tracing::info!(user_id = %user.id, "user deleted");
        Ok(DeleteUserResponse {
            id: user.id.to_string(),
            external_id: user.external_id.map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    async fn update_metadata(
        &self,
        req: UpdateUserMetadataRequest,
    ) -> Result<UpdateUserMetadataResponse, ApiError> {
        let (id, patches) = convert::update_user_metadata(req)?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(&id, Box::new(move |r| r.user.merge_metadata(patches, now)))
            .await?;
        Ok(UpdateUserMetadataResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }

    /// Applies a flag change (ban, lock) and returns the user.
    async fn set_flag(
        &self,
        user_id: &str,
        change: fn(&mut roster_domain::UserRecord, roster_domain::Timestamp),
    ) -> Result<roster_proto::v1::User, ApiError> {
        let id = convert::user_id("user_id", user_id)?;
        let now = self.state.clock.now();
        let user = self
            .state
            .users
            .update_user(
                &id,
                Box::new(move |r| {
                    change(r, now);
                    Ok(())
                }),
            )
            .await?;
        Ok(convert::user(user, self.state.images.public_url()))
    }

    async fn verify_password(
        &self,
        req: VerifyPasswordRequest,
    ) -> Result<VerifyPasswordResponse, ApiError> {
        let id = convert::user_id("user_id", &req.user_id)?;
        if req.password.is_empty() {
            return Err(DomainError::invalid(
                "password",
                reason::FORM_PARAM_MISSING,
                "password is required",
            )
            .into());
        }
        if req.password.len() > MAX_CANDIDATE_BYTES {
            return Err(DomainError::invalid(
                "password",
                reason::FORM_PASSWORD_LENGTH_TOO_LONG,
                format!("password is longer than {MAX_CANDIDATE_BYTES} bytes"),
            )
            .into());
        }
        let record = self
            .state
            .users
            .get_record(&id)
            .await?
            .ok_or_else(|| DomainError::not_found("user", req.user_id))?;
        let hash = record.password_hash().cloned().ok_or_else(|| {
            DomainError::precondition(reason::PASSWORD_NOT_SET, "the user has no password")
        })?;
        let verified = self.state.hasher.verify(hash, req.password).await?;
        Ok(VerifyPasswordResponse { verified })
    }

    async fn set_profile_image(
        &self,
        stream: Streaming<SetProfileImageRequest>,
    ) -> Result<SetProfileImageResponse, ApiError> {
        let mut user_id = None;
        let upload = images::receive(&self.state.images, stream, |m| {
            Ok(match m.part {
                Some(Part::Upload(upload)) => {
                    user_id = Some(convert::user_id("upload.user_id", &upload.user_id)?);
                    images::Part::Upload {
                        file_name: upload.file_name,
                    }
                }
                Some(Part::Chunk(chunk)) => images::Part::Chunk(chunk),
                None => images::Part::Empty,
            })
        })
        .await?;
        let id = user_id.ok_or(ApiError::Internal("an upload without its header"))?;
        let user = self.state.images.set(&self.state, &id, upload).await?;
        Ok(SetProfileImageResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }

    async fn delete_profile_image(
        &self,
        req: DeleteProfileImageRequest,
    ) -> Result<DeleteProfileImageResponse, ApiError> {
        let id = convert::user_id("user_id", &req.user_id)?;
        let user = self.state.images.delete(&self.state, &id).await?;
        Ok(DeleteProfileImageResponse {
            user: Some(convert::user(user, self.state.images.public_url())),
        })
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        respond(self.create(request.into_inner()).await)
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        respond(self.get(request.into_inner()).await)
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        respond(self.list(request.into_inner()).await)
    }

    async fn count_users(
        &self,
        request: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        respond(self.count(request.into_inner()).await)
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        respond(self.update(request.into_inner()).await)
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        respond(self.delete(request.into_inner()).await)
    }

    async fn update_user_metadata(
        &self,
        request: Request<UpdateUserMetadataRequest>,
    ) -> Result<Response<UpdateUserMetadataResponse>, Status> {
        respond(self.update_metadata(request.into_inner()).await)
    }

    async fn ban_user(
        &self,
        request: Request<BanUserRequest>,
    ) -> Result<Response<BanUserResponse>, Status> {
        let user = self
            .set_flag(&request.into_inner().user_id, |r, now| {
                r.user.set_banned(true, now);
            })
            .await;
        respond(user.map(|u| BanUserResponse { user: Some(u) }))
    }

    async fn unban_user(
        &self,
        request: Request<UnbanUserRequest>,
    ) -> Result<Response<UnbanUserResponse>, Status> {
        let user = self
            .set_flag(&request.into_inner().user_id, |r, now| {
                r.user.set_banned(false, now);
            })
            .await;
        respond(user.map(|u| UnbanUserResponse { user: Some(u) }))
    }

    async fn lock_user(
        &self,
        request: Request<LockUserRequest>,
    ) -> Result<Response<LockUserResponse>, Status> {
        let user = self
            .set_flag(&request.into_inner().user_id, |r, now| {
                r.user.set_locked(true, now);
                // A locked user is signed out everywhere, like a banned one.
                r.sign_out = Some(roster_domain::SignOut::default());
            })
            .await;
        respond(user.map(|u| LockUserResponse { user: Some(u) }))
    }

    async fn unlock_user(
        &self,
        request: Request<UnlockUserRequest>,
    ) -> Result<Response<UnlockUserResponse>, Status> {
        let user = self
            .set_flag(&request.into_inner().user_id, |r, now| {
                // Also ends a lockout from failed sign-ins.
                r.unlock(now);
            })
            .await;
        respond(user.map(|u| UnlockUserResponse { user: Some(u) }))
    }

    async fn set_profile_image(
        &self,
        request: Request<Streaming<SetProfileImageRequest>>,
    ) -> Result<Response<SetProfileImageResponse>, Status> {
        respond(Users::set_profile_image(self, request.into_inner()).await)
    }

    async fn delete_profile_image(
        &self,
        request: Request<DeleteProfileImageRequest>,
    ) -> Result<Response<DeleteProfileImageResponse>, Status> {
        respond(Users::delete_profile_image(self, request.into_inner()).await)
    }

    async fn verify_password(
        &self,
        request: Request<VerifyPasswordRequest>,
    ) -> Result<Response<VerifyPasswordResponse>, Status> {
        respond(self.verify_password(request.into_inner()).await)
    }
}
