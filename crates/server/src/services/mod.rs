//! The Backend API services. Each handler parses its request once
//! (`roster_proto::convert`), applies domain rules through the store's
//! transactional mutation, and converts the result back.

pub mod account;
pub mod email_addresses;
pub mod phone_numbers;
pub mod sessions;
pub mod sign_in;
pub mod sign_up;
pub mod users;
pub mod verification;

use roster_domain::{DomainError, IdentificationId, User, UserId};
use tonic::{Response, Status};

use crate::AppState;
use crate::error::ApiError;

/// Turns a handler's result into a gRPC response.
pub(crate) fn respond<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

/// The id of the user owning an email address or phone number.
pub(crate) async fn owner_id(
    state: &AppState,
    id: &IdentificationId,
    what: &'static str,
) -> Result<UserId, ApiError> {
    let owner = state.users.find_identification_owner(id).await?;
    owner.ok_or_else(|| DomainError::not_found(what, id.as_str()).into())
}

/// The user owning an email address or phone number, read fresh.
pub(crate) async fn owner_of(
    state: &AppState,
    id: &IdentificationId,
    what: &'static str,
) -> Result<User, ApiError> {
    let owner = owner_id(state, id, what).await?;
    let user = state.users.get_user(&owner).await?;
    user.ok_or_else(|| DomainError::not_found(what, id.as_str()).into())
}
